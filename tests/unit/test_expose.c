// SPDX-License-Identifier: Apache-2.0
/* Unit tests of port exposure (sbx_expose / sbx_get_host / sbx_unexpose) against the real envd
   running locally: its "guest" services are TCP servers this test starts on 127.0.0.1. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/conn.h"
#include "internal.h"
#include "local_envd.h"
#include "sandbox.h"

static double ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* --- a "guest" service: a poll-based echo server on 127.0.0.1 ------------------------------ */

/* Modes: echo everything and, at the client's EOF, send "BYE" and close; or first send a
   banner and shut down the sending side, then collect what the client sends until EOF. */
enum srv_mode { SRV_ECHO, SRV_BANNER };

#define SRV_MAX 300

struct srv {
    int lfd;
    unsigned port;
    enum srv_mode mode;
    pthread_t thread;
    int stop_pipe[2];
    pthread_mutex_t lock;
    unsigned accepted;
    char received[256]; /* SRV_BANNER: what the last client sent */
    size_t received_len;
    bool received_eof;
};

struct sconn {
    int fd;
    uint8_t buf[65536];
    size_t off, len;
    bool eof;
};

static void *srv_loop(void *arg)
{
    struct srv *s = arg;
    struct sconn *cs[SRV_MAX] = {0};
    int n = 0;
    for (;;) {
        struct pollfd p[2 + SRV_MAX];
        p[0] = (struct pollfd){.fd = s->stop_pipe[0], .events = POLLIN};
        p[1] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (int i = 0; i < n; i++) {
            short ev = 0;
            if (cs[i]->off < cs[i]->len)
                ev |= POLLOUT;
            else if (!cs[i]->eof)
                ev |= POLLIN;
            p[2 + i] = (struct pollfd){.fd = cs[i]->fd, .events = ev};
        }
        if (poll(p, (nfds_t)(2 + n), -1) < 0)
            continue;
        if (p[0].revents)
            break;
        int polled = n; /* connections accepted below wait for the next round */
        if ((p[1].revents & POLLIN) && n < SRV_MAX) {
            int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                struct sconn *c = calloc(1, sizeof(*c));
                c->fd = fd;
                pthread_mutex_lock(&s->lock);
                s->accepted++;
                if (s->mode == SRV_BANNER) {
                    s->received_len = 0;
                    s->received_eof = false;
                }
                pthread_mutex_unlock(&s->lock);
                if (s->mode == SRV_BANNER) {
                    /* Right at connect: these bytes follow envd's Ok on the same stream. */
                    if (send(fd, "banner\n", 7, MSG_NOSIGNAL) == 7)
                        shutdown(fd, SHUT_WR);
                }
                cs[n++] = c;
            }
        }
        for (int i = 0; i < polled; i++) {
            struct sconn *c = cs[i];
            short re = p[2 + i].revents;
            if (!re)
                continue;
            if (c->off < c->len) {
                ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
                if (w > 0)
                    c->off += (size_t)w;
                else if (w < 0 && errno != EAGAIN)
                    c->eof = true, c->off = c->len = 0;
                if (c->off == c->len)
                    c->off = c->len = 0;
            } else {
                ssize_t r = recv(c->fd, c->buf, sizeof(c->buf), 0);
                if (r > 0 && s->mode == SRV_ECHO) {
                    c->len = (size_t)r;
                } else if (r > 0) {
                    pthread_mutex_lock(&s->lock);
                    size_t room = sizeof(s->received) - 1 - s->received_len;
                    size_t k = (size_t)r < room ? (size_t)r : room;
                    memcpy(s->received + s->received_len, c->buf, k);
                    s->received_len += k;
                    pthread_mutex_unlock(&s->lock);
                } else if (r == 0 || errno != EAGAIN) {
                    c->eof = true;
                    if (s->mode == SRV_BANNER) {
                        pthread_mutex_lock(&s->lock);
                        s->received_eof = r == 0;
                        pthread_mutex_unlock(&s->lock);
                    } else if (r == 0) {
                        (void)!send(c->fd, "BYE", 3, MSG_NOSIGNAL);
                    }
                }
            }
            if (c->eof && c->off == c->len) {
                close(c->fd);
                free(c);
                /* Keep the polled ones in place: move a polled one into the hole (and the
                   last unpolled one into its place), so p[] still matches. */
                cs[i] = cs[polled - 1];
                p[2 + i] = p[2 + polled - 1];
                cs[polled - 1] = cs[n - 1];
                n--;
                polled--;
                i--;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        close(cs[i]->fd);
        free(cs[i]);
    }
    return NULL;
}

/* Starts a server on 127.0.0.1:port (0: any free port). */
static struct srv *srv_start(enum srv_mode mode, unsigned port)
{
    struct srv *s = calloc(1, sizeof(*s));
    s->mode = mode;
    pthread_mutex_init(&s->lock, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 512), 0);
    socklen_t len = sizeof(a);
    getsockname(s->lfd, (struct sockaddr *)&a, &len);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pipe2(s->stop_pipe, O_CLOEXEC), 0);
    pthread_create(&s->thread, NULL, srv_loop, s);
    return s;
}

static void srv_stop(struct srv *s)
{
    (void)!write(s->stop_pipe[1], "x", 1);
    pthread_join(s->thread, NULL);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    close(s->lfd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* A port on 127.0.0.1 where nothing listens (bound once, then released). */
static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* --- client helpers ----------------------------------------------------------------------- */

/* Connects to "127.0.0.1:PORT" (blocking socket with a receive timeout). */
static int dial(const char *hostport)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    assert_non_null(colon);
    snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    assert_int_equal(inet_pton(AF_INET, host, &a.sin_addr), 1);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void send_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w;
        len -= (size_t)w;
    }
}

/* Reads exactly len bytes (fails the test on EOF, error or timeout). */
static void recv_all(int fd, void *data, size_t len)
{
    uint8_t *p = data;
    while (len) {
        ssize_t r = recv(fd, p, len, 0);
        if (r <= 0)
            fail_msg("recv: %zd (%s) with %zu bytes missing", r, r < 0 ? strerror(errno) : "EOF",
                     len);
        p += r;
        len -= (size_t)r;
    }
}

/* Waits for the connection to end: 0 for EOF, -errno for an error (ECONNRESET). */
static int recv_end(int fd)
{
    char b[256];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof(b), 0);
        if (r == 0)
            return 0;
        if (r < 0)
            return -errno;
    }
}

/* Round trip of a short message through an echo service. */
static void echo_check(int fd, const char *m)
{
    char got[128];
    size_t n = strlen(m);
    send_all(fd, m, n);
    recv_all(fd, got, n);
    assert_memory_equal(got, m, n);
}

/* --- fixtures ----------------------------------------------------------------------------- */

static int setup(void **state)
{
    sbx *sb = NULL;
    if (local_envd_start(NULL, &sb) != 0) {
        fprintf(stderr, "setup failed: %s\n", sb ? sbx_errmsg(sb) : "no handle");
        return -1;
    }
    *state = sb;
    return 0;
}

static int teardown(void **state)
{
    local_envd_stop(*state);
    return 0;
}

/* --- tests -------------------------------------------------------------------------------- */

static void test_roundtrip(void **state)
{
    sbx *sb = *state;
    struct srv *s = srv_start(SRV_ECHO, 0);
    char addr[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr, sizeof(addr)), 0);
    assert_true(strncmp(addr, "127.0.0.1:", 10) == 0);
    assert_int_not_equal(atoi(addr + 10), 0);
    /* Idempotent: the same mapping again, also through sbx_expose. */
    char again[64];
    assert_int_equal(sbx_get_host(sb, s->port, again, sizeof(again)), 0);
    assert_string_equal(addr, again);
    unsigned bound = 0;
    assert_int_equal(sbx_expose(sb, s->port, NULL, 0, &bound), 0);
    assert_int_equal(bound, (unsigned)atoi(addr + 10));

    int fd = dial(addr);
    assert_true(fd >= 0);
    echo_check(fd, "hello through the sandbox");
    echo_check(fd, "and once more");
    /* Client's end of stream reaches the service, whose answer and close come back. */
    shutdown(fd, SHUT_WR);
    char bye[3];
    recv_all(fd, bye, 3);
    assert_memory_equal(bye, "BYE", 3);
    assert_int_equal(recv_end(fd), 0);
    close(fd);

    /* Several connections at once are independent. */
    int fds[8];
    for (int i = 0; i < 8; i++)
        assert_true((fds[i] = dial(addr)) >= 0);
    for (int i = 7; i >= 0; i--) {
        char m[32];
        snprintf(m, sizeof(m), "connection %d", i);
        echo_check(fds[i], m);
        close(fds[i]);
    }
    srv_stop(s);
}

struct writer {
    int fd;
    const uint8_t *data;
    size_t len;
};

static void *writer_thread(void *arg)
{
    struct writer *w = arg;
    send_all(w->fd, w->data, w->len);
    shutdown(w->fd, SHUT_WR);
    return NULL;
}

/* 4 MiB each way at once (more than every buffer on the path), then the half-close. */
static void test_bulk(void **state)
{
    sbx *sb = *state;
    struct srv *s = srv_start(SRV_ECHO, 0);
    char addr[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr, sizeof(addr)), 0);
    size_t len = 4u << 20;
    uint8_t *data = malloc(len), *got = malloc(len + 3);
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (uint8_t)(x >> 16);
    }
    int fd = dial(addr);
    assert_true(fd >= 0);
    struct writer w = {fd, data, len};
    pthread_t t;
    double t0 = ms_now();
    pthread_create(&t, NULL, writer_thread, &w);
    recv_all(fd, got, len + 3);
    pthread_join(t, NULL);
    assert_memory_equal(got, data, len);
    assert_memory_equal(got + len, "BYE", 3);
    assert_int_equal(recv_end(fd), 0);
    fprintf(stderr, "  4 MiB echoed in %.0f ms\n", ms_now() - t0);
    close(fd);
    free(data);
    free(got);
    srv_stop(s);
}

/* The service speaks first and ends its side first; the client still sends afterwards. */
static void test_service_first(void **state)
{
    sbx *sb = *state;
    struct srv *s = srv_start(SRV_BANNER, 0);
    char addr[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr, sizeof(addr)), 0);
    int fd = dial(addr);
    assert_true(fd >= 0);
    char b[7];
    recv_all(fd, b, 7);
    assert_memory_equal(b, "banner\n", 7);
    /* The service's SHUT_WR arrives as EOF, and the other direction stays open. */
    char c;
    assert_int_equal(recv(fd, &c, 1, 0), 0);
    send_all(fd, "late reply", 10);
    shutdown(fd, SHUT_WR);
    bool done = false;
    for (int i = 0; i < 500 && !done; i++) {
        pthread_mutex_lock(&s->lock);
        done = s->received_eof;
        pthread_mutex_unlock(&s->lock);
        if (!done)
            sleep_ms(10);
    }
    assert_true(done);
    assert_int_equal(s->received_len, 10);
    assert_memory_equal(s->received, "late reply", 10);
    close(fd);
    srv_stop(s);
}

/* Nothing listens yet: the connection is reset; once the service is up, it works. */
static void test_refused_then_up(void **state)
{
    sbx *sb = *state;
    unsigned port = free_port();
    char addr[64];
    assert_int_equal(sbx_get_host(sb, port, addr, sizeof(addr)), 0);
    int fd = dial(addr);
    assert_true(fd >= 0);
    double t0 = ms_now();
    int end = recv_end(fd);
    assert_true(end == -ECONNRESET || end == 0);
    assert_true(ms_now() - t0 < 5000);
    close(fd);

    struct srv *s = srv_start(SRV_ECHO, port);
    fd = dial(addr);
    assert_true(fd >= 0);
    echo_check(fd, "now it listens");
    close(fd);
    srv_stop(s);
}

static void test_errors(void **state)
{
    sbx *sb = *state;
    char buf[64];
    unsigned bound;
    assert_int_equal(sbx_expose(NULL, 80, NULL, 0, NULL), SBX_EINVAL);
    assert_int_equal(sbx_expose(sb, 0, NULL, 0, NULL), SBX_EINVAL);
    assert_int_equal(sbx_expose(sb, 65536, NULL, 0, NULL), SBX_EINVAL);
    assert_int_equal(sbx_expose(sb, 80, NULL, 65536, NULL), SBX_EINVAL);
    assert_int_equal(sbx_expose(sb, 80, "not-an-address", 0, NULL), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "not-an-address"));
    assert_int_equal(sbx_expose(sb, 80, "192.0.2.1", 0, NULL), SBX_EINVAL); /* not ours */
    assert_int_equal(sbx_get_host(sb, 0, buf, sizeof(buf)), SBX_EINVAL);
    assert_int_equal(sbx_get_host(sb, 80, NULL, 10), SBX_EINVAL);
    assert_int_equal(sbx_unexpose(sb, 81), SBX_ENOENT);
    assert_int_equal(sbx_unexpose(sb, 0), SBX_EINVAL);

    /* Buffer too small: an error, and nothing half-written. */
    char small[8];
    assert_int_equal(sbx_get_host(sb, 80, small, sizeof(small)), SBX_EINVAL);
    assert_string_equal(small, "");
    assert_non_null(strstr(sbx_errmsg(sb), "too small"));

    /* A host port in use (by something else, and by another mapping). */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(busy, (struct sockaddr *)&a, sizeof(a));
    listen(busy, 1);
    socklen_t len = sizeof(a);
    getsockname(busy, (struct sockaddr *)&a, &len);
    unsigned busy_port = ntohs(a.sin_port);
    assert_int_equal(sbx_expose(sb, 90, NULL, busy_port, NULL), SBX_EBUSY);
    char want[32];
    snprintf(want, sizeof(want), ":%u", busy_port);
    assert_non_null(strstr(sbx_errmsg(sb), want));
    close(busy);
    /* Now free: taken explicitly, found again by sbx_get_host, not takeable by another. */
    assert_int_equal(sbx_expose(sb, 90, NULL, busy_port, &bound), 0);
    assert_int_equal(bound, busy_port);
    assert_int_equal(sbx_get_host(sb, 90, buf, sizeof(buf)), 0);
    snprintf(want, sizeof(want), "127.0.0.1:%u", busy_port);
    assert_string_equal(buf, want);
    assert_int_equal(sbx_expose(sb, 91, "127.0.0.1", busy_port, NULL), SBX_EBUSY);
    assert_non_null(strstr(sbx_errmsg(sb), "guest port 90"));
    /* A second mapping of the same guest port on another host port. */
    unsigned second;
    assert_int_equal(sbx_expose(sb, 90, "127.0.0.1", 0, &second), 0);
    assert_int_equal(second, busy_port); /* host_port 0: the existing one */
    assert_int_equal(sbx_unexpose(sb, 90), 0);
    assert_int_equal(sbx_unexpose(sb, 90), SBX_ENOENT);

    /* IPv6 loopback formatting (skipped where the host has no IPv6). */
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have_v6 = v6 >= 0 && bind(v6, (struct sockaddr *)&a6, sizeof(a6)) == 0;
    if (v6 >= 0)
        close(v6);
    if (have_v6) {
        assert_int_equal(sbx_expose(sb, 92, "::1", 0, &bound), 0);
        assert_int_equal(sbx_get_host(sb, 92, buf, sizeof(buf)), 0);
        snprintf(want, sizeof(want), "[::1]:%u", bound);
        assert_string_equal(buf, want);
        assert_int_equal(sbx_unexpose(sb, 92), 0);
    }

    /* A guest agent without the feature. */
    sb->features &= ~AGENT_FEATURE_PORT_FORWARD;
    assert_int_equal(sbx_expose(sb, 93, NULL, 0, NULL), SBX_ENOTSUP);
    assert_non_null(strstr(sbx_errmsg(sb), "port forwarding"));
    assert_int_equal(sbx_get_host(sb, 93, buf, sizeof(buf)), SBX_ENOTSUP);
    sb->features |= AGENT_FEATURE_PORT_FORWARD;
}

static void test_port_limit(void **state)
{
    sbx *sb = *state;
    for (unsigned i = 0; i < 64; i++) {
        int r = sbx_expose(sb, 1000 + i, NULL, 0, NULL);
        if (r)
            fail_msg("expose #%u: %d %s", i, r, sbx_errmsg(sb));
    }
    assert_int_equal(sbx_expose(sb, 2000, NULL, 0, NULL), SBX_EBUSY);
    assert_non_null(strstr(sbx_errmsg(sb), "64"));
    /* Still idempotent at the limit, and a slot comes back after an unexpose. */
    assert_int_equal(sbx_expose(sb, 1000, NULL, 0, NULL), 0);
    assert_int_equal(sbx_unexpose(sb, 1005), 0);
    assert_int_equal(sbx_expose(sb, 2000, NULL, 0, NULL), 0);
}

/* At most 256 relayed connections; beyond that, new ones are reset and old ones go on. */
static void test_conn_limit(void **state)
{
    sbx *sb = *state;
    struct srv *s = srv_start(SRV_ECHO, 0);
    char addr[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr, sizeof(addr)), 0);
    enum { N = 256 };
    int fds[N + 1];
    for (int i = 0; i < N; i++) {
        fds[i] = dial(addr);
        assert_true(fds[i] >= 0);
        echo_check(fds[i], "x"); /* established end to end */
    }
    fds[N] = dial(addr);
    assert_true(fds[N] >= 0);
    int end = recv_end(fds[N]);
    assert_true(end == -ECONNRESET || end == 0);
    echo_check(fds[0], "the first still works");
    echo_check(fds[N - 1], "the last too");
    for (int i = 0; i <= N; i++)
        close(fds[i]);
    /* Once they are gone, connections are accepted again. */
    int fd = -1;
    bool ok = false;
    for (int i = 0; i < 100 && !ok; i++) {
        fd = dial(addr);
        char got[2];
        ok = send(fd, "ok", 2, MSG_NOSIGNAL) == 2 && recv(fd, got, 2, MSG_WAITALL) == 2;
        close(fd);
        if (!ok)
            sleep_ms(20);
    }
    assert_true(ok);
    srv_stop(s);
}

static void test_unexpose_live(void **state)
{
    sbx *sb = *state;
    struct srv *s = srv_start(SRV_ECHO, 0);
    char addr[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr, sizeof(addr)), 0);
    int fd = dial(addr);
    assert_true(fd >= 0);
    echo_check(fd, "before");
    assert_int_equal(sbx_unexpose(sb, s->port), 0);
    int end = recv_end(fd);
    assert_true(end == -ECONNRESET || end == 0);
    close(fd);
    /* The host port is closed when sbx_unexpose returns. */
    assert_int_equal(dial(addr), -1);
    assert_int_equal(errno, ECONNREFUSED);
    /* Exposing again works (a new host port, or the same). */
    char addr2[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr2, sizeof(addr2)), 0);
    fd = dial(addr2);
    assert_true(fd >= 0);
    echo_check(fd, "after");
    close(fd);
    srv_stop(s);
}

/* The relay keeps the rest of the sandbox responsive while envd is stopped; a handshake
   envd never answers ends after its deadline. */
static void test_guest_silent(void **state)
{
    sbx *sb = *state;
    struct srv *s = srv_start(SRV_ECHO, 0);
    char addr[64];
    assert_int_equal(sbx_get_host(sb, s->port, addr, sizeof(addr)), 0);
    int live = dial(addr);
    assert_true(live >= 0);
    echo_check(live, "up");
    /* Find the local envd: our child named envd. */
    pid_t envd = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d)) && !envd) {
        char path[300], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *fp = fopen(path, "re");
        if (!fp)
            continue;
        int pid, ppid;
        char st;
        if (fscanf(fp, "%d (%63[^)]) %c %d", &pid, comm, &st, &ppid) == 4 && ppid == getpid() &&
            strcmp(comm, "envd") == 0)
            envd = pid;
        fclose(fp);
    }
    if (d)
        closedir(d);
    assert_true(envd > 0);
    kill(envd, SIGSTOP);
    int fd = dial(addr);
    assert_true(fd >= 0);
    double t0 = ms_now();
    /* Meanwhile the API answers at once. */
    unsigned other;
    assert_int_equal(sbx_expose(sb, 4242, NULL, 0, &other), 0);
    assert_int_equal(sbx_unexpose(sb, 4242), 0);
    assert_true(ms_now() - t0 < 1000);
    int end = recv_end(fd);
    double waited = ms_now() - t0;
    kill(envd, SIGCONT);
    assert_true(end == -ECONNRESET || end == 0);
    assert_true(waited > 8000 && waited < 15000);
    close(fd);
    echo_check(live, "still up");
    close(live);
    srv_stop(s);
}

/* The raw protocol: envd's answers to PortConnect requests that fail. */
static void test_protocol_errors(void **state)
{
    sbx *sb = *state;
    Sbx__Agent__PortConnect pc = SBX__AGENT__PORT_CONNECT__INIT;
    Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
    req.body_case = SBX__AGENT__FRAME__BODY_PORT_CONNECT;
    req.port_connect = &pc;
    pc.port = 0;
    assert_int_equal(agent_request(sb, 5000, &req, SBX__AGENT__FRAME__BODY_OK, NULL, "pc"),
                     SBX_EINVAL);
    pc.port = 70000;
    assert_int_equal(agent_request(sb, 5000, &req, SBX__AGENT__FRAME__BODY_OK, NULL, "pc"),
                     SBX_EINVAL);
    pc.port = 80;
    pc.address = "no.such.address";
    assert_int_equal(agent_request(sb, 5000, &req, SBX__AGENT__FRAME__BODY_OK, NULL, "pc"),
                     SBX_EINVAL);
    pc.port = free_port();
    pc.address = "127.0.0.1";
    assert_int_equal(agent_request(sb, 5000, &req, SBX__AGENT__FRAME__BODY_OK, NULL, "pc"),
                     SBX_ENOENT);
    assert_non_null(strstr(sbx_errmsg(sb), "refused"));
    /* The connection that got the Error serves requests again. */
    assert_int_equal(sbx_ping(sb, 5000), 0);
}

/* Two sandboxes in one process; destroying one with live connections closes them (no fd or
   thread left behind) and leaves the other working. */
static void test_destroy_live(void **state)
{
    (void)state;
    struct srv *s = srv_start(SRV_ECHO, 0);
    int fds0 = count_dir("/proc/self/fd"), threads0 = count_dir("/proc/self/task");
    sbx *a = NULL, *b = NULL;
    assert_int_equal(local_envd_start(NULL, &a), 0);
    assert_int_equal(local_envd_start(NULL, &b), 0);
    char aa[64], ba[64];
    assert_int_equal(sbx_get_host(a, s->port, aa, sizeof(aa)), 0);
    assert_int_equal(sbx_get_host(b, s->port, ba, sizeof(ba)), 0);
    assert_string_not_equal(aa, ba);
    int fa[3], fb = dial(ba);
    assert_true(fb >= 0);
    for (int i = 0; i < 3; i++) {
        fa[i] = dial(aa);
        assert_true(fa[i] >= 0);
        echo_check(fa[i], "a");
    }
    echo_check(fb, "b");
    local_envd_stop(a);
    for (int i = 0; i < 3; i++) {
        int end = recv_end(fa[i]);
        assert_true(end == -ECONNRESET || end == 0);
        close(fa[i]);
    }
    assert_int_equal(dial(aa), -1);
    echo_check(fb, "b still works");
    close(fb);
    local_envd_stop(b);
    assert_int_equal(count_dir("/proc/self/fd"), fds0);
    assert_int_equal(count_dir("/proc/self/task"), threads0);
    srv_stop(s);
}

int main(void)
{
    /* 256 relayed connections take about 1000 fds in this process (and 512 in envd). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_service_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_then_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conn_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unexpose_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protocol_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guest_silent, setup, teardown),
        cmocka_unit_test(test_destroy_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
