// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: hostile host -> envd frame streams through envd's own request handling. */

/*
 * envd's sources (all but main.c) are linked in (tests/fuzz/CMakeLists.txt). Each input is
 * one connection: a socketpair whose one end envd serves with serve_loop() in test mode, as
 * with --test-serve-fd (no mounts, clock, hostname or reboot), until envd closes it; a "host"
 * thread writes the stream into the other end, shuts it down and drains what envd answers.
 *
 * Input: byte 0 = options, then the stream (frames: u32 big-endian length + packed Frame).
 *   bit 0: the host vanishes: it writes what fits into the socket and closes its end before
 *          envd runs (every send of envd fails; its write_failed path).
 *
 * envd has no confinement of its own, and the fuzzer often runs as root. So the harness reads
 * the stream frame by frame with the decoder envd uses (lib/agent/frame.c) and changes what
 * would reach outside:
 *  - paths of FileWrite (and its symlink_target), FileRead, Stat, ListDir, MakeDir, Remove,
 *    Rename and WatchStart move below a per-process scratch directory (ROOT below: absolute
 *    and relative ones alike, ".." components become "__"; "" stays, for envd's check). It
 *    lies in a 0700 directory (/tmp/fuzz-envd.XXXXXX) that is emptied before every input;
 *  - Configure: clock_ns and entropy are cleared (they would set the clock and credit the
 *    kernel's RNG), a 6-byte NetConfig MAC is cleared (envd then rejects the NetConfig before
 *    it touches an interface);
 *  - PortConnect: a valid port becomes 1 and an IP address loopback, timeout <= 1 s (the
 *    connect is refused at once: nothing is ever relayed);
 *  - Shutdown is dropped (in test mode envd exits instead of powering off).
 * Such frames are re-encoded; all others (Hello, Ping, Proc*, FileData, replies the host must
 * not send, ...) and whatever does not decode reach envd byte for byte. ProcStart goes through
 * all of envd's checks and setup (pipes, PTY) but never forks: cfg.no_spawn.
 * Not fuzzed therefore: real processes and their I/O, relayed port forwards, NetConfig
 * application, Shutdown's power-off.
 * Configure leaves state in envd (default user, cwd, environment): after an input with one, an
 * empty Configure on a second connection resets it, so inputs stay independent.
 * Checked besides the sanitizers: envd leaks no file descriptor (the lowest free fd stays put).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/frame.h"
#include "envd.h"

static struct envd_config cfg = {.test_mode = true, .no_spawn = true};
static char outer[64];        /* 0700, emptied before every input */
static char scratch[80];      /* outer/root: where request paths lead */
static bool configured;       /* a Configure reached envd: reset it before the next input */
static uint8_t *reset_stream; /* Hello, Configure{} */
static size_t reset_len;
static int fd_baseline = -1;
static bool dump; /* SBX_FUZZ_ENVD_DUMP: print what envd answers (checking seeds) */

struct buf {
    uint8_t *p;
    size_t len, cap;
};

static void put(struct buf *b, const void *p, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        if (!(b->p = realloc(b->p, cap)))
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* --- the scratch directory ------------------------------------------------------------------ */

/* Removes name (relative to dfd) and everything below it, whatever its modes. */
static void rm_tree(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlinkat(dfd, name, 0);
        return;
    }
    fchmodat(dfd, name, 0700, 0);
    for (int pass = 0; pass < 2; pass++) {
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            break;
        DIR *d = fdopendir(fd);
        if (!d) {
            close(fd);
            break;
        }
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                rm_tree(fd, e->d_name);
        closedir(d);
        if (unlinkat(dfd, name, AT_REMOVEDIR) == 0)
            return;
    }
}

/* Empties outer and creates an empty scratch directory in it. */
static void reset_scratch(void)
{
    int fd = open(outer, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        abort();
    DIR *d = fdopendir(fd);
    if (!d)
        abort();
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            rm_tree(fd, e->d_name);
    closedir(d);
    if (mkdir(scratch, 0755) != 0) {
        fprintf(stderr, "fuzz_envd: mkdir %s: %s\n", scratch, strerror(errno));
        abort();
    }
}

static void cleanup(void)
{
    rm_tree(AT_FDCWD, outer);
}

/* --- what reaches envd ---------------------------------------------------------------------- */

/* Strings of a decoded frame replaced for re-encoding; put back before frame_free. */
struct swaps {
    char **slot[4];
    char *old[4];
    int n;
};

static void swap_str(struct swaps *sw, char **slot, char *val)
{
    sw->slot[sw->n] = slot;
    sw->old[sw->n] = *slot;
    sw->n++;
    *slot = val;
}

static void unswap(struct swaps *sw)
{
    while (sw->n > 0) {
        sw->n--;
        free(*sw->slot[sw->n]);
        *sw->slot[sw->n] = sw->old[sw->n];
    }
}

/* p below the scratch directory, ".." components replaced with "__". "" stays "". With
   keep_relative (a symlink target), a relative p stays relative. */
static char *map_path(const char *p, bool keep_relative)
{
    size_t n = strlen(p), o = 0;
    char *out = malloc(strlen(scratch) + n + 2);
    if (!out)
        abort();
    if (n > 0 && (p[0] == '/' || !keep_relative)) {
        o = strlen(scratch);
        memcpy(out, scratch, o);
        if (p[0] != '/')
            out[o++] = '/';
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        if (j - i == 2 && p[i] == '.' && p[i + 1] == '.') {
            out[o++] = '_';
            out[o++] = '_';
        } else {
            memcpy(out + o, p + i, j - i);
            o += j - i;
        }
        if (j < n)
            out[o++] = '/';
        i = j + 1;
    }
    out[o] = '\0';
    return out;
}

static void confine(struct swaps *sw, char **path)
{
    swap_str(sw, path, map_path(*path, false));
}

/* Returns 0: f goes as it came; 1: f was changed (re-encode it); -1: drop it. */
static int police(Sbx__Agent__Frame *f, struct swaps *sw)
{
    switch (f->body_case) {
    case SBX__AGENT__FRAME__BODY_SHUTDOWN:
        return -1;
    case SBX__AGENT__FRAME__BODY_CONFIGURE: {
        Sbx__Agent__Configure *c = f->configure;
        configured = true;
        bool mac = c->net && c->net->mac.len == 6;
        if (!c->clock_ns && !c->entropy.len && !mac)
            return 0;
        c->clock_ns = 0;
        c->entropy.len = 0;
        if (mac)
            c->net->mac.len = 0;
        return 1;
    }
    case SBX__AGENT__FRAME__BODY_PORT_CONNECT: {
        Sbx__Agent__PortConnect *pc = f->port_connect;
        int r = 0;
        if (pc->port > 1 && pc->port <= 65535) {
            pc->port = 1;
            r = 1;
        }
        if (pc->timeout_ms == 0 || pc->timeout_ms > 1000) {
            pc->timeout_ms = 1000;
            r = 1;
        }
        /* The test envd applies to the address (forward.c parse_address). */
        uint8_t ip[16];
        const char *a = pc->address;
        if (a[0] && strlen(a) < INET6_ADDRSTRLEN) {
            if (inet_pton(AF_INET, a, ip) == 1) {
                swap_str(sw, &pc->address, strdup("127.0.0.1"));
                r = 1;
            } else if (inet_pton(AF_INET6, a, ip) == 1) {
                swap_str(sw, &pc->address, strdup("::1"));
                r = 1;
            }
        }
        return r;
    }
    case SBX__AGENT__FRAME__BODY_FILE_WRITE:
        confine(sw, &f->file_write->path);
        if (f->file_write->symlink_target[0])
            swap_str(sw, &f->file_write->symlink_target,
                     map_path(f->file_write->symlink_target, true));
        return 1;
    case SBX__AGENT__FRAME__BODY_FILE_READ:
        confine(sw, &f->file_read->path);
        return 1;
    case SBX__AGENT__FRAME__BODY_STAT:
        confine(sw, &f->stat->path);
        return 1;
    case SBX__AGENT__FRAME__BODY_LIST_DIR:
        confine(sw, &f->list_dir->path);
        return 1;
    case SBX__AGENT__FRAME__BODY_MAKE_DIR:
        confine(sw, &f->make_dir->path);
        return 1;
    case SBX__AGENT__FRAME__BODY_REMOVE:
        confine(sw, &f->remove->path);
        return 1;
    case SBX__AGENT__FRAME__BODY_RENAME:
        confine(sw, &f->rename->from);
        confine(sw, &f->rename->to);
        return 1;
    case SBX__AGENT__FRAME__BODY_WATCH_START:
        confine(sw, &f->watch_start->path);
        return 1;
    default:
        return 0;
    }
}

/* The stream envd gets: data with every whole frame policed; from the first frame that does
   not decode (or is incomplete), the rest as it is (envd's reader stops at the same byte). */
static void police_stream(const uint8_t *data, size_t size, struct buf *out)
{
    struct frame_reader r;
    frame_reader_init(&r);
    size_t off = 0, start = 0;
    while (off < size) {
        size_t used = 0;
        Sbx__Agent__Frame *f = NULL;
        int rc = frame_reader_feed(&r, data + off, size - off, &used, &f, NULL, 0);
        off += used;
        if (rc != 1)
            break;
        struct swaps sw = {.n = 0};
        int act = police(f, &sw);
        if (act == 0) {
            put(out, data + start, off - start);
        } else if (act == 1) {
            uint8_t *enc;
            size_t n;
            if (frame_encode_alloc(f, &enc, &n, NULL, 0) == 0) {
                put(out, enc, n);
                free(enc);
            }
        }
        unswap(&sw);
        frame_free(f);
        start = off;
    }
    put(out, data + start, size - start);
    frame_reader_free(&r);
}

/* --- one connection ------------------------------------------------------------------------- */

struct host {
    int fd;
    const uint8_t *p;
    size_t len;
};

/* Prints the frames in p[0..n) (with dump). */
static void dump_replies(struct frame_reader *r, const uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t used = 0;
        Sbx__Agent__Frame *f = NULL;
        char err[160];
        int rc = frame_reader_feed(r, p, n, &used, &f, err, sizeof(err));
        if (rc < 0) {
            fprintf(stderr, "  envd sent garbage: %s\n", err);
            return;
        }
        p += used;
        n -= used;
        if (rc == 1) {
            fprintf(stderr, "  <- %u %s%s%s\n", f->id, frame_body_name(f->body_case),
                    f->body_case == SBX__AGENT__FRAME__BODY_ERROR ? ": " : "",
                    f->body_case == SBX__AGENT__FRAME__BODY_ERROR ? f->error->message : "");
            frame_free(f);
        }
    }
}

/* Writes the stream, shuts the sending side, reads and discards until envd closes. */
static void *host_main(void *arg)
{
    struct host *h = arg;
    static uint8_t sink[64 << 10];
    struct frame_reader r;
    frame_reader_init(&r);
    size_t off = 0;
    bool writing = true;
    if (h->len == 0) {
        shutdown(h->fd, SHUT_WR);
        writing = false;
    }
    for (;;) {
        struct pollfd p = {.fd = h->fd, .events = POLLIN | (writing ? POLLOUT : 0)};
        if (poll(&p, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            abort();
        }
        if (writing && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t n = send(h->fd, h->p + off, h->len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                off = h->len; /* envd closed already */
            if (off == h->len) {
                shutdown(h->fd, SHUT_WR);
                writing = false;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(h->fd, sink, sizeof(sink), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break;
            if (dump && n > 0)
                dump_replies(&r, sink, (size_t)n);
        }
    }
    frame_reader_free(&r);
    return NULL;
}

static void serve(const uint8_t *stream, size_t len, bool vanish)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    /* envd's end as accept4 gives it (non-blocking); serve_loop closes it. */
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    if (vanish) {
        size_t off = 0;
        while (off < len) {
            ssize_t n = send(sv[1], stream + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n <= 0)
                break;
            off += (size_t)n;
        }
        close(sv[1]);
        serve_loop(&cfg, -1, sv[0]);
        return;
    }
    struct host h = {.fd = sv[1], .p = stream, .len = len};
    pthread_t t;
    if (pthread_create(&t, NULL, host_main, &h) != 0)
        abort();
    serve_loop(&cfg, -1, sv[0]);
    pthread_join(t, NULL);
    close(sv[1]);
}

/* --- libFuzzer ------------------------------------------------------------------------------ */

static void add_frame(struct buf *b, Sbx__Agent__Frame *f)
{
    uint8_t *enc;
    size_t n;
    if (frame_encode_alloc(f, &enc, &n, NULL, 0) != 0)
        abort();
    put(b, enc, n);
    free(enc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(outer, sizeof(outer), "/tmp/fuzz-envd.XXXXXX");
    if (!mkdtemp(outer)) {
        perror("fuzz_envd: mkdtemp");
        abort();
    }
    snprintf(scratch, sizeof(scratch), "%s/root", outer);
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN); /* as envd's main() */
    if (getenv("SBX_FUZZ_ENVD_LOG"))
        log_open(false); /* envd's log lines on stderr (silent otherwise) */
    dump = getenv("SBX_FUZZ_ENVD_DUMP") != NULL;

    /* The reset connection: Hello, then a Configure with nothing set. */
    struct buf b = {0};
    Sbx__Agent__Hello hello = SBX__AGENT__HELLO__INIT;
    hello.protocol_version = SBX__AGENT__CONSTANTS__PROTOCOL_VERSION;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = 1;
    f.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    f.hello = &hello;
    add_frame(&b, &f);
    Sbx__Agent__Configure conf = SBX__AGENT__CONFIGURE__INIT;
    f = (Sbx__Agent__Frame)SBX__AGENT__FRAME__INIT;
    f.id = 2;
    f.body_case = SBX__AGENT__FRAME__BODY_CONFIGURE;
    f.configure = &conf;
    add_frame(&b, &f);
    reset_stream = b.p;
    reset_len = b.len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t opts = data[0];
    data++;
    size--;

    if (configured) {
        configured = false;
        serve(reset_stream, reset_len, false);
    }
    reset_scratch();

    struct buf stream = {0};
    police_stream(data, size, &stream);
    if (dump)
        fprintf(stderr, "fuzz_envd: %zu bytes in, %zu to envd%s\n", size, stream.len,
                opts & 1 ? " (the host vanishes)" : "");
    serve(stream.p, stream.len, opts & 1);
    free(stream.p);

    /* envd must not leak descriptors: the lowest free one stays where it was. */
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (probe < 0)
        abort();
    close(probe);
    if (fd_baseline < 0)
        fd_baseline = probe;
    else if (probe > fd_baseline + 32) {
        fprintf(stderr, "fuzz_envd: file descriptors leak (lowest free %d, was %d)\n", probe,
                fd_baseline);
        abort();
    }
    return 0;
}
