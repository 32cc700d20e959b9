// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the host agent client against fake (and hostile) envd peers and the real envd. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "sandbox.h"
#include "agent/agent.h"

extern const unsigned char sbx_envd_blob[], sbx_envd_blob_end[];
extern char **environ;

/* --- a scripted fake envd on the other end of a socketpair ---------------------------------- */

enum script {
    GOOD,          /* a correct envd */
    OVERSIZE,      /* length prefix above the cap */
    ZERO_LEN,      /* length prefix 0 */
    TRUNCATED,     /* announces 100 bytes, sends 10, closes */
    GARBAGE,       /* a well-sized frame of junk */
    WRONG_BODY,    /* answers Hello with Pong */
    WRONG_ID,      /* answers with another request's id */
    UNKNOWN_BODY,  /* answers with a body from the future */
    SILENT,        /* reads the request, never answers */
    CLOSE,         /* reads the request, closes */
    BAD_VERSION,   /* Hello with protocol 2 */
    NONPRINTABLE,  /* escape sequence in kernel_release */
    EMPTY_RELEASE, /* no kernel_release */
    LONG_STRINGS,  /* strings longer than the host's arrays */
    ERROR_REPLY,   /* Error UNSUPPORTED with a hostile message */
    ERROR_ID0,     /* Error PROTOCOL with id 0, like envd after a malformed frame */
    WRONG_NONCE,   /* Pong with the wrong nonce */
    HUGE_OK,       /* a valid frame of exactly SBX_FRAME_MAX bytes */
};

struct fake {
    int fd; /* blocking, server side */
    enum script script;
    pthread_t thread;
    /* what the host sent in its Hello */
    uint32_t hello_id, hello_version;
    uint64_t hello_realtime_ns;
    char hello_software[32];
};

static int read_exact(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void write_exact(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

static Sbx__Agent__Frame *fake_read(int fd)
{
    uint8_t hdr[4];
    if (read_exact(fd, hdr, 4))
        return NULL;
    uint32_t len;
    if (frame_parse_header(hdr, &len, NULL, 0))
        return NULL;
    uint8_t *p = malloc(len);
    Sbx__Agent__Frame *f = NULL;
    if (p && read_exact(fd, p, len) == 0)
        frame_unpack(p, len, &f, NULL, 0);
    free(p);
    return f;
}

static void fake_send(int fd, const Sbx__Agent__Frame *f)
{
    uint8_t *buf;
    size_t len;
    if (frame_encode_alloc(f, &buf, &len, NULL, 0) == 0) {
        write_exact(fd, buf, len);
        free(buf);
    }
}

static void fake_raw(int fd, const uint8_t *hdr, const void *payload, size_t len)
{
    write_exact(fd, hdr, 4);
    if (len)
        write_exact(fd, payload, len);
}

static char *guest_features[] = {"clock", "hostname", "x-not-yet"};

static void send_hello(struct fake *fk, uint32_t id)
{
    char longrel[201], longver[101];
    memset(longrel, 'k', 200);
    longrel[200] = '\0';
    memset(longver, 'v', 100);
    longver[100] = '\0';
    Sbx__Agent__Hello h = SBX__AGENT__HELLO__INIT;
    h.protocol_version = fk->script == BAD_VERSION ? 2 : 1;
    h.software = "envd";
    h.version = fk->script == LONG_STRINGS ? longver : "9.8.7";
    h.kernel_release = fk->script == NONPRINTABLE    ? "6.1\033[31m"
                       : fk->script == EMPTY_RELEASE ? ""
                       : fk->script == LONG_STRINGS  ? longrel
                                                     : "6.1.0-fake";
    h.n_features = 3;
    h.features = guest_features;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    f.hello = &h;
    fake_send(fk->fd, &f);
}

static void *fake_main(void *arg)
{
    struct fake *fk = arg;
    for (;;) {
        Sbx__Agent__Frame *req = fake_read(fk->fd);
        if (!req)
            break;
        if (req->body_case == SBX__AGENT__FRAME__BODY_HELLO) {
            fk->hello_id = req->id;
            fk->hello_version = req->hello->protocol_version;
            fk->hello_realtime_ns = req->hello->realtime_ns;
            snprintf(fk->hello_software, sizeof(fk->hello_software), "%s", req->hello->software);
        }
        uint32_t id = req->id;
        Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
        f.id = id;
        uint8_t hdr[4];
        switch (fk->script) {
        case OVERSIZE:
            fake_raw(fk->fd, (const uint8_t[]){0x00, 0x40, 0x00, 0x01}, NULL, 0);
            break;
        case ZERO_LEN:
            fake_raw(fk->fd, (const uint8_t[]){0, 0, 0, 0}, NULL, 0);
            break;
        case TRUNCATED:
            fake_raw(fk->fd, (const uint8_t[]){0, 0, 0, 100},
                     "\x08\x01\x08\x01\x08\x01\x08\x01\x08\x01", 10);
            shutdown(fk->fd, SHUT_WR);
            break;
        case GARBAGE:
            fake_raw(fk->fd, (const uint8_t[]){0, 0, 0, 8}, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
            break;
        case WRONG_BODY: {
            Sbx__Agent__Pong p = SBX__AGENT__PONG__INIT;
            f.body_case = SBX__AGENT__FRAME__BODY_PONG;
            f.pong = &p;
            fake_send(fk->fd, &f);
            break;
        }
        case UNKNOWN_BODY:
            hdr[0] = hdr[1] = hdr[2] = 0;
            hdr[3] = 5;
            fake_raw(fk->fd, hdr, "\x08\x01\xc2\x0c\x00", 5);
            break;
        case SILENT:
            break;
        case CLOSE:
            frame_free(req);
            goto out;
        case ERROR_REPLY:
        case ERROR_ID0: {
            Sbx__Agent__Error e = SBX__AGENT__ERROR__INIT;
            e.code = fk->script == ERROR_REPLY ? SBX__AGENT__ERROR_CODE__ERROR_CODE_UNSUPPORTED
                                               : SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL;
            e.message = "nope\n\033[2J";
            f.id = fk->script == ERROR_ID0 ? 0 : id;
            f.body_case = SBX__AGENT__FRAME__BODY_ERROR;
            f.error = &e;
            fake_send(fk->fd, &f);
            break;
        }
        case WRONG_ID:
            if (req->body_case == SBX__AGENT__FRAME__BODY_HELLO) {
                send_hello(fk, id + 1);
                break;
            }
            /* fall through */
        default:
            switch (req->body_case) {
            case SBX__AGENT__FRAME__BODY_HELLO:
                send_hello(fk, id);
                break;
            case SBX__AGENT__FRAME__BODY_PING: {
                if (fk->script == HUGE_OK) {
                    /* An Error whose message fills the frame to exactly the cap. */
                    size_t msglen = SBX_FRAME_MAX - 1 - 4 - 1 - 4 - 2;
                    char *m = malloc(msglen + 1);
                    memset(m, 'm', msglen);
                    m[msglen] = '\0';
                    Sbx__Agent__Error e = SBX__AGENT__ERROR__INIT;
                    e.message = m;
                    f.body_case = SBX__AGENT__FRAME__BODY_ERROR;
                    f.error = &e;
                    if (sbx__agent__frame__get_packed_size(&f) != SBX_FRAME_MAX)
                        abort(); /* cmocka asserts must not run on this thread */
                    fake_send(fk->fd, &f);
                    free(m);
                    break;
                }
                Sbx__Agent__Pong p = SBX__AGENT__PONG__INIT;
                p.nonce = req->ping->nonce + (fk->script == WRONG_NONCE);
                f.body_case = SBX__AGENT__FRAME__BODY_PONG;
                f.pong = &p;
                fake_send(fk->fd, &f);
                break;
            }
            case SBX__AGENT__FRAME__BODY_SHUTDOWN: {
                Sbx__Agent__Ok ok = SBX__AGENT__OK__INIT;
                f.body_case = SBX__AGENT__FRAME__BODY_OK;
                f.ok = &ok;
                fake_send(fk->fd, &f);
                break;
            }
            default:
                break;
            }
        }
        frame_free(req);
    }
out:
    close(fk->fd);
    return NULL;
}

/* Starts a fake envd; returns the host's non-blocking end. */
static int fake_start(struct fake *fk, enum script s)
{
    memset(fk, 0, sizeof(*fk));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    fk->fd = sv[1];
    fk->script = s;
    assert_int_equal(pthread_create(&fk->thread, NULL, fake_main, fk), 0);
    return sv[0];
}

static void fake_stop(struct fake *fk, int hostfd)
{
    close(hostfd); /* ends the fake's read loop */
    pthread_join(fk->thread, NULL);
}

static struct waitctx wait_ms(unsigned ms)
{
    return (struct waitctx){.deadline_ns = deadline_after_ms(ms), .intr_fd = -1, .dead_fd = -1};
}

/* Runs agent_hello against a script; returns its code and message. */
static int hello_with(enum script s, struct agent_hello *out, char *err, size_t errlen)
{
    struct fake fk;
    int fd = fake_start(&fk, s);
    struct waitctx w = wait_ms(2000);
    int r = agent_hello(fd, &w, out, err, errlen);
    fake_stop(&fk, fd);
    return r;
}

static void test_hello_good(void **state)
{
    (void)state;
    struct fake fk;
    int fd = fake_start(&fk, GOOD);
    struct waitctx w = wait_ms(2000);
    struct agent_hello h;
    char err[256] = "";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    assert_int_equal(agent_hello(fd, &w, &h, err, sizeof(err)), 0);
    assert_int_equal(h.protocol_version, 1);
    assert_string_equal(h.kernel_release, "6.1.0-fake");
    assert_string_equal(h.envd_version, "9.8.7");
    assert_int_equal(h.features, AGENT_FEATURE_CLOCK | AGENT_FEATURE_HOSTNAME);
    for (int i = 0; i < 3; i++)
        assert_int_equal(agent_ping(fd, &w, err, sizeof(err)), 0);
    assert_int_equal(agent_shutdown(fd, &w, err, sizeof(err)), 0);
    fake_stop(&fk, fd);
    /* What the host said. */
    assert_int_not_equal(fk.hello_id, 0);
    assert_int_equal(fk.hello_version, 1);
    assert_string_equal(fk.hello_software, "libsandbox");
    assert_true(fk.hello_realtime_ns >= before);
    assert_true(fk.hello_realtime_ns < before + 5000000000ull);
    /* out may be NULL */
    char e2[64];
    assert_int_equal(hello_with(GOOD, NULL, e2, sizeof(e2)), 0);
}

static void expect_hello(enum script s, int code, const char *needle)
{
    char err[256] = "";
    struct agent_hello h;
    int r = hello_with(s, &h, err, sizeof(err));
    print_message("script %d: %d \"%s\"\n", (int)s, r, err);
    assert_int_equal(r, code);
    if (needle)
        assert_non_null(strstr(err, needle));
    for (const char *p = err; *p; p++)
        assert_true((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f);
}

static void test_hello_hostile(void **state)
{
    (void)state;
    expect_hello(OVERSIZE, SBX_EPROTO, "exceeds");
    expect_hello(ZERO_LEN, SBX_EPROTO, "length 0");
    expect_hello(TRUNCATED, SBX_EPROTO, "truncated");
    expect_hello(GARBAGE, SBX_EPROTO, "malformed");
    expect_hello(WRONG_BODY, SBX_EPROTO, "Pong instead of Hello");
    expect_hello(WRONG_ID, SBX_EPROTO, "request 2 instead of 1");
    expect_hello(UNKNOWN_BODY, SBX_EPROTO, "unsupported");
    expect_hello(CLOSE, SBX_EPROTO, "closed");
    expect_hello(BAD_VERSION, SBX_EPROTO, "protocol 2");
    expect_hello(NONPRINTABLE, SBX_EPROTO, "non-printable kernel release");
    expect_hello(EMPTY_RELEASE, SBX_EPROTO, "no kernel release");
    expect_hello(ERROR_REPLY, SBX_ENOTSUP, "nope??[2J");
    expect_hello(ERROR_ID0, SBX_EPROTO, "envd refused Hello");
}

static void test_hello_truncates(void **state)
{
    (void)state;
    char err[256] = "";
    struct agent_hello h;
    assert_int_equal(hello_with(LONG_STRINGS, &h, err, sizeof(err)), 0);
    assert_int_equal(strlen(h.kernel_release), sizeof(h.kernel_release) - 1);
    assert_int_equal(strlen(h.envd_version), sizeof(h.envd_version) - 1);
    assert_int_equal(h.kernel_release[0], 'k');
}

static void test_ping_hostile(void **state)
{
    (void)state;
    struct fake fk;
    char err[256];
    int fd = fake_start(&fk, WRONG_NONCE);
    struct waitctx w = wait_ms(2000);
    assert_int_equal(agent_hello(fd, &w, NULL, err, sizeof(err)), 0);
    assert_int_equal(agent_ping(fd, &w, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "nonce"));
    fake_stop(&fk, fd);

    /* A frame of exactly the cap is accepted (and then refused as the wrong answer). */
    fd = fake_start(&fk, HUGE_OK);
    w = wait_ms(5000);
    assert_int_equal(agent_hello(fd, &w, NULL, err, sizeof(err)), 0);
    assert_int_equal(agent_ping(fd, &w, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "envd refused Ping: mmmm"));
    fake_stop(&fk, fd);
}

static void test_timeout(void **state)
{
    (void)state;
    struct fake fk;
    char err[256];
    int fd = fake_start(&fk, SILENT);
    struct waitctx w = wait_ms(150);
    uint64_t t0 = now_ns();
    assert_int_equal(agent_hello(fd, &w, NULL, err, sizeof(err)), SBX_ETIMEDOUT);
    uint64_t took = now_ns() - t0;
    assert_true(took >= 140000000ull && took < 2000000000ull);
    assert_non_null(strstr(err, "timed out"));
    fake_stop(&fk, fd);
}

struct kick {
    int fd;
    unsigned ms;
};

static void *kick_main(void *arg)
{
    struct kick *k = arg;
    struct timespec ts = {0, (long)k->ms * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t one = 1;
    ssize_t n = write(k->fd, &one, sizeof(one));
    (void)n;
    return NULL;
}

static void test_interrupt(void **state)
{
    (void)state;
    struct fake fk;
    char err[256];
    int fd = fake_start(&fk, SILENT);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct waitctx w = {.deadline_ns = deadline_after_ms(10000), .intr_fd = efd, .dead_fd = -1};
    struct kick k = {efd, 50};
    pthread_t t;
    pthread_create(&t, NULL, kick_main, &k);
    uint64_t t0 = now_ns();
    assert_int_equal(agent_hello(fd, &w, NULL, err, sizeof(err)), SBX_EINTR);
    assert_true(now_ns() - t0 < 5000000000ull);
    assert_non_null(strstr(err, "interrupted"));
    pthread_join(t, NULL);
    fake_stop(&fk, fd);
    close(efd);

    /* The VM dying while we wait. */
    fd = fake_start(&fk, SILENT);
    int dfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w = (struct waitctx){.deadline_ns = deadline_after_ms(10000), .intr_fd = -1, .dead_fd = dfd};
    k = (struct kick){dfd, 30};
    pthread_create(&t, NULL, kick_main, &k);
    assert_int_equal(agent_hello(fd, &w, NULL, err, sizeof(err)), SBX_EGUEST);
    assert_non_null(strstr(err, "guest stopped"));
    pthread_join(t, NULL);
    fake_stop(&fk, fd);
    close(dfd);
}

static void test_send_recv(void **state)
{
    (void)state;
    char err[256];
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    struct waitctx w = wait_ms(1000);
    /* A frame without a body is refused before anything is written. */
    Sbx__Agent__Frame bad = SBX__AGENT__FRAME__INIT;
    assert_int_equal(agent_send(sv[0], &w, &bad, err, sizeof(err)), SBX_EPROTO);
    Sbx__Agent__Ping p = SBX__AGENT__PING__INIT;
    p.nonce = 42;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = 9;
    f.body_case = SBX__AGENT__FRAME__BODY_PING;
    f.ping = &p;
    assert_int_equal(agent_send(sv[0], &w, &f, err, sizeof(err)), 0);
    Sbx__Agent__Frame *g;
    assert_int_equal(agent_recv(sv[1], &w, &g, err, sizeof(err)), 0);
    assert_int_equal(g->id, 9);
    assert_true(g->ping->nonce == 42);
    frame_free(g);
    /* Peer gone: sending reports it rather than raising SIGPIPE. */
    close(sv[1]);
    assert_int_equal(agent_send(sv[0], &w, &f, err, sizeof(err)), SBX_EPROTO);
    assert_int_equal(agent_recv(sv[0], &w, &g, err, sizeof(err)), SBX_EPROTO);
    assert_null(g);
    close(sv[0]);
}

/* --- the real envd, in its hidden test mode ------------------------------------------------ */

/* Runs the embedded envd binary as a child serving one socketpair end. */
static pid_t envd_start(int *hostfd)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int mfd = memfd_create("envd", MFD_CLOEXEC);
    assert_true(mfd >= 0);
    size_t len = (size_t)(sbx_envd_blob_end - sbx_envd_blob);
    assert_int_equal(write(mfd, sbx_envd_blob, len), (ssize_t)len);
    /* Everything the child needs is prepared before fork: it only execs. */
    int cfd = fcntl(sv[1], F_DUPFD, 10); /* without FD_CLOEXEC: envd inherits it */
    assert_true(cfd >= 0);
    char arg[32], path[32];
    snprintf(arg, sizeof(arg), "--test-serve-fd=%d", cfd);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
    char *argv[] = {"envd", arg, NULL};
    /* SBX_TEST_ENVD runs another envd build instead (one with sanitizers, say). */
    const char *other = getenv("SBX_TEST_ENVD");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (other)
            execve(other, argv, environ);
        fexecve(mfd, argv, environ);
        execve(path, argv, environ); /* tools like valgrind lack execveat */
        _exit(127);
    }
    close(cfd);
    close(mfd);
    close(sv[1]);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    *hostfd = sv[0];
    return pid;
}

static int envd_wait(pid_t pid)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Expects an Error of `code` and then the connection's end. */
static void expect_error_and_close(int fd, Sbx__Agent__ErrorCode code)
{
    struct waitctx w = wait_ms(5000);
    char err[256];
    Sbx__Agent__Frame *f;
    assert_int_equal(agent_recv(fd, &w, &f, err, sizeof(err)), 0);
    assert_int_equal(f->body_case, SBX__AGENT__FRAME__BODY_ERROR);
    print_message("envd: Error %d \"%s\"\n", (int)f->error->code, f->error->message);
    assert_int_equal(f->error->code, code);
    frame_free(f);
    assert_int_equal(agent_recv(fd, &w, &f, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "closed"));
}

static void test_real_envd(void **state)
{
    (void)state;
    int fd;
    pid_t pid = envd_start(&fd);
    struct waitctx w = wait_ms(5000);
    struct agent_hello h;
    char err[256] = "";
    int r = agent_hello(fd, &w, &h, err, sizeof(err));
    if (r)
        print_message("agent_hello: %s\n", err);
    assert_int_equal(r, 0);
    struct utsname u;
    uname(&u);
    assert_string_equal(h.kernel_release, u.release);
    assert_string_equal(h.envd_version, SBX_VERSION_STRING);
    assert_int_equal(h.features, AGENT_FEATURE_CLOCK | AGENT_FEATURE_HOSTNAME | AGENT_FEATURE_EXEC |
                                     AGENT_FEATURE_PTY | AGENT_FEATURE_FILES | AGENT_FEATURE_WATCH |
                                     AGENT_FEATURE_METRICS | AGENT_FEATURE_PORT_FORWARD);
    for (int i = 0; i < 100; i++)
        assert_int_equal(agent_ping(fd, &w, err, sizeof(err)), 0);
    assert_int_equal(agent_shutdown(fd, &w, err, sizeof(err)), 0);
    close(fd);
    assert_int_equal(envd_wait(pid), 0);
}

static void test_real_envd_pipelined_and_split(void **state)
{
    (void)state;
    int fd;
    pid_t pid = envd_start(&fd);
    /* Hello and three Pings in one write, then the same again one byte at a time on a second
       envd: both exercise envd's incremental reader. */
    uint8_t buf[1024];
    size_t off = 0, len;
    Sbx__Agent__Hello hello = SBX__AGENT__HELLO__INIT;
    hello.protocol_version = 1;
    hello.software = "test";
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = 1;
    f.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    f.hello = &hello;
    assert_int_equal(frame_encode(&f, buf, sizeof(buf), &len, NULL, 0), 0);
    off += len;
    Sbx__Agent__Ping ping = SBX__AGENT__PING__INIT;
    for (uint32_t i = 0; i < 3; i++) {
        ping.nonce = 1000 + i;
        f.id = 10 + i;
        f.body_case = SBX__AGENT__FRAME__BODY_PING;
        f.ping = &ping;
        assert_int_equal(frame_encode(&f, buf + off, sizeof(buf) - off, &len, NULL, 0), 0);
        off += len;
    }
    for (int round = 0; round < 2; round++) {
        struct waitctx w = wait_ms(5000);
        if (round == 0) {
            assert_int_equal(write(fd, buf, off), (ssize_t)off);
        } else {
            for (size_t i = 0; i < off; i++) {
                assert_int_equal(write(fd, buf + i, 1), 1);
                if (i % 7 == 0)
                    usleep(200);
            }
        }
        Sbx__Agent__Frame *g;
        char err[256];
        assert_int_equal(agent_recv(fd, &w, &g, err, sizeof(err)), 0);
        assert_int_equal(g->body_case, SBX__AGENT__FRAME__BODY_HELLO);
        assert_int_equal(g->id, 1);
        frame_free(g);
        for (uint32_t i = 0; i < 3; i++) {
            assert_int_equal(agent_recv(fd, &w, &g, err, sizeof(err)), 0);
            assert_int_equal(g->body_case, SBX__AGENT__FRAME__BODY_PONG);
            assert_int_equal(g->id, 10 + i);
            assert_true(g->pong->nonce == 1000 + i);
            frame_free(g);
        }
        close(fd);
        assert_int_equal(envd_wait(pid), 0);
        if (round == 0)
            pid = envd_start(&fd);
    }
}

static void test_real_envd_hostile(void **state)
{
    (void)state;
    char err[256];
    int fd;
    struct waitctx w;

    /* Ping before Hello. */
    pid_t pid = envd_start(&fd);
    w = wait_ms(5000);
    assert_int_equal(agent_ping(fd, &w, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "expected Hello first"));
    close(fd);
    assert_int_equal(envd_wait(pid), 0);

    /* Hello from the future. */
    pid = envd_start(&fd);
    Sbx__Agent__Hello hello = SBX__AGENT__HELLO__INIT;
    hello.protocol_version = 2;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = 5;
    f.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    f.hello = &hello;
    w = wait_ms(5000);
    assert_int_equal(agent_send(fd, &w, &f, err, sizeof(err)), 0);
    expect_error_and_close(fd, SBX__AGENT__ERROR_CODE__ERROR_CODE_VERSION);
    close(fd);
    assert_int_equal(envd_wait(pid), 0);

    /* Raw junk on the wire: garbage payload, oversize length, zero length, unknown body,
       a reply type the host must not send. */
    static const struct {
        uint8_t bytes[16];
        size_t len;
        Sbx__Agent__ErrorCode code;
    } junk[] = {
        {{0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff}, 8, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL},
        {{0x00, 0x40, 0x00, 0x01}, 4, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL},
        {{0xff, 0xff, 0xff, 0xff, 1, 2, 3}, 7, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL},
        {{0, 0, 0, 0}, 4, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL},
        {{0, 0, 0, 2, 0x08, 0x01}, 6, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL},
        {{0, 0, 0, 3, 0xc2, 0x0c, 0x00}, 7, SBX__AGENT__ERROR_CODE__ERROR_CODE_UNSUPPORTED},
        {{0, 0, 0, 4, 0x08, 0x01, 0x32, 0x00}, 8, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL},
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        pid = envd_start(&fd);
        assert_int_equal(write(fd, junk[i].bytes, junk[i].len), (ssize_t)junk[i].len);
        expect_error_and_close(fd, junk[i].code);
        close(fd);
        assert_int_equal(envd_wait(pid), 0);
    }

    /* A host that vanishes mid-frame, and one that never sends anything. */
    pid = envd_start(&fd);
    assert_int_equal(write(fd, "\0\0\1\0\x08", 5), 5);
    close(fd);
    assert_int_equal(envd_wait(pid), 0);
    pid = envd_start(&fd);
    close(fd);
    assert_int_equal(envd_wait(pid), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_good),
        cmocka_unit_test(test_hello_hostile),
        cmocka_unit_test(test_hello_truncates),
        cmocka_unit_test(test_ping_hostile),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_interrupt),
        cmocka_unit_test(test_send_recv),
        cmocka_unit_test(test_real_envd),
        cmocka_unit_test(test_real_envd_pipelined_and_split),
        cmocka_unit_test(test_real_envd_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
