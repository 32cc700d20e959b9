// SPDX-License-Identifier: Apache-2.0
/* envd's event loop: accepts connections, decodes frames, dispatches requests, reaps. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "sandbox.h"
#include "agent/frame.h"
#include "envd.h"

#define MAX_CONNS 256
/* Processes take up to 3 watchers each (256 of them), forwarded ports 2 each (256). */
#define MAX_WATCHERS 1536
/* Stop reading requests from a connection whose replies pile up (a host that does not read);
   bounds envd's memory per connection together with SBX_FRAME_MAX. */
#define OUT_HIGH (8u << 20)
/* Streaming producers (file reads, process output) stop queueing above this. */
#define OUT_LOW (256u << 10)
/* After answering Shutdown, how long to wait for the host to close the connection: the Ok
   must leave the guest before the reboot resets the vsock device. */
#define SHUTDOWN_LINGER_MS 1000
/* After the guest kernel ran out of memory for a vsock packet: wait, then send at most this
   much per call (a small, likely allocation). */
#define SEND_RETRY_MS  10
#define SMALL_SEND     (4u << 10)
#define SMALL_SENDS_MS 200 /* then full-size packets again: small ones cost throughput */

struct conn {
    int fd;
    struct frame_reader rd;
    uint8_t *out; /* encoded frames not yet written */
    size_t out_off, out_len, out_cap;
    bool hello_done;
    bool closing;  /* an Error was queued: close once it is written */
    bool shutdown; /* Ok to Shutdown queued: power off once written and the host closed */
    bool dead;
    /* Writing failed (the host closed or reset): output is dropped, but what the host sent
       before closing is still read and served (a ProcDetach right before the close) until
       the read side ends too. */
    bool write_failed;
    /* The guest kernel refused a send for lack of memory: retry then, in small sends for a
       while. */
    uint64_t send_retry_at_ms;
    uint64_t small_sends_until_ms;
    uint64_t shutdown_at_ms;
    const struct conn_op *op; /* the streaming operation owning the connection, or NULL */
    void *op_arg;
};

struct server {
    const struct envd_config *cfg;
    int listen_fd, sig_fd;
    struct conn *conns[MAX_CONNS];
    size_t nconns;
    struct watcher *watchers[MAX_WATCHERS];
    size_t nwatchers;
    uint64_t accept_pause_until_ms;
    uint64_t wake_at_ms; /* 0 = none */
    struct utsname uts;
    char os_name[128]; /* PRETTY_NAME of the root filesystem */
};

uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

const struct envd_config *server_config(const struct server *s)
{
    return s->cfg;
}

void server_wake_at(struct server *s, uint64_t at)
{
    if (s->wake_at_ms == 0 || at < s->wake_at_ms)
        s->wake_at_ms = at;
}

bool server_watch(struct server *s, struct watcher *w)
{
    if (w->active)
        return true;
    if (s->nwatchers == MAX_WATCHERS)
        return false;
    s->watchers[s->nwatchers++] = w;
    w->active = true;
    return true;
}

void server_unwatch(struct server *s, struct watcher *w)
{
    if (!w->active)
        return;
    /* A hole, not a compaction: the loop may be iterating; holes are swept after it. */
    for (size_t i = 0; i < s->nwatchers; i++)
        if (s->watchers[i] == w)
            s->watchers[i] = NULL;
    w->active = false;
}

/* --- output -------------------------------------------------------------------------------- */

static void flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        size_t len = c->out_len - c->out_off;
        if (c->small_sends_until_ms && len > SMALL_SEND && mono_ms() < c->small_sends_until_ms)
            len = SMALL_SEND;
        ssize_t n = send(c->fd, c->out + c->out_off, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else if (n < 0 && (errno == ENOMEM || errno == ENOBUFS)) {
            /* vsock allocates a kernel buffer per packet, up to 64 KiB contiguous: with the
               page cache full of file data that can fail for a while. Transient, so back
               off and go on with small packets rather than dropping the connection. */
            c->send_retry_at_ms = mono_ms() + SEND_RETRY_MS;
            c->small_sends_until_ms = c->send_retry_at_ms + SMALL_SENDS_MS;
            return;
        } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) &&
                   !c->shutdown) {
            /* The host closed: nothing left to tell it, but its last frames may still be
               waiting to be read (the read side then ends with EOF). */
            c->write_failed = true;
            break;
        } else {
            /* The host went away (EPIPE, ECONNRESET): nothing left to tell it. Anything else
               is worth a line on the console. */
            if (n < 0 && errno != EPIPE && errno != ECONNRESET && errno != ENOTCONN)
                log_msg("dropping a connection: send: %s", strerror(errno));
            c->dead = true;
            return;
        }
    }
    c->out_off = c->out_len = 0;
}

bool conn_writable(const struct conn *c)
{
    return !c->dead && !c->closing && !c->write_failed && c->out_len - c->out_off < OUT_LOW;
}

bool conn_gone(const struct conn *c)
{
    return c->dead || c->closing || c->write_failed;
}

void conn_send(struct conn *c, const Sbx__Agent__Frame *f)
{
    if (c->dead || c->write_failed)
        return;
    size_t need = frame_size(f);
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len < need) {
        /* Compact first; grow only if that is not enough. */
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out_cap - c->out_len < need) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap - c->out_len < need)
                cap *= 2;
            uint8_t *b = realloc(c->out, cap);
            if (!b) {
                log_msg("out of memory for a reply; dropping the connection");
                c->dead = true;
                return;
            }
            c->out = b;
            c->out_cap = cap;
        }
    }
    size_t len;
    char err[128];
    if (frame_encode(f, c->out + c->out_len, c->out_cap - c->out_len, &len, err, sizeof(err))) {
        log_msg("cannot encode a reply: %s", err);
        c->dead = true;
        return;
    }
    c->out_len += len;
    flush(c);
}

void conn_ok(struct conn *c, uint32_t id)
{
    Sbx__Agent__Ok ok = SBX__AGENT__OK__INIT;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_OK;
    f.ok = &ok;
    conn_send(c, &f);
}

static void send_error(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, int os_errno,
                       const char *msg)
{
    Sbx__Agent__Error e = SBX__AGENT__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    e.os_errno = os_errno;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_ERROR;
    f.error = &e;
    conn_send(c, &f);
}

void conn_error(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, int os_errno,
                const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_error(c, id, code, os_errno, msg);
}

Sbx__Agent__ErrorCode errno_code(int err)
{
    switch (err) {
    case ENOENT:
    case ESRCH:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND;
    case EACCES:
    case EPERM:
    case EROFS:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_PERMISSION;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EFBIG:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_NO_SPACE;
    case ENOTDIR:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_A_DIRECTORY;
    case EISDIR:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_IS_A_DIRECTORY;
    case EEXIST:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_EXISTS;
    case ENOTEMPTY:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_EMPTY;
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT;
    case EMFILE:
    case ENFILE:
    case EAGAIN:
    case EBUSY:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY;
    default:
        return SBX__AGENT__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

void conn_errno(struct conn *c, uint32_t id, int err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof(msg))
        snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", strerror(err));
    send_error(c, id, errno_code(err), err, msg);
}

void conn_fail(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    send_error(c, id, code, 0, msg);
    c->closing = true;
}

int conn_take(struct conn *c, void *pending, size_t cap, size_t *len)
{
    *len = 0;
    size_t n = c->out_len - c->out_off;
    /* A partial frame from the host means it did not wait for the answer. */
    if (c->dead || c->closing || c->write_failed || c->op || !frame_reader_idle(&c->rd) || n > cap)
        return -1;
    memcpy(pending, c->out + c->out_off, n);
    *len = n;
    c->out_off = c->out_len = 0;
    int fd = c->fd;
    c->fd = -1;
    c->dead = true; /* freed by the loop without touching the socket */
    return fd;
}

void conn_set_op(struct conn *c, const struct conn_op *op, void *arg)
{
    if (op && c->op)
        log_msg("bug: a second operation on one connection");
    c->op = op;
    c->op_arg = op ? arg : NULL;
}

/* --- requests ------------------------------------------------------------------------------ */

static bool valid_hostname(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '.'))
            return false;
    return true;
}

static void on_hello(struct server *s, struct conn *c, const Sbx__Agent__Frame *req)
{
    const Sbx__Agent__Hello *h = req->hello;
    if (h->protocol_version != SBX__AGENT__CONSTANTS__PROTOCOL_VERSION) {
        conn_fail(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_VERSION,
                  "envd speaks agent protocol %u, not %u",
                  (unsigned)SBX__AGENT__CONSTANTS__PROTOCOL_VERSION, h->protocol_version);
        return;
    }
    if (h->hostname[0] && !valid_hostname(h->hostname)) {
        conn_fail(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                  "invalid hostname");
        return;
    }
    init_set_clock(s->cfg, h->realtime_ns);
    if (h->hostname[0])
        init_set_hostname(s->cfg, h->hostname);
    c->hello_done = true;

    static char *features[] = {"clock", "hostname", "exec",    "pty",
                               "files", "watch",    "metrics", "port-forward"};
    Sbx__Agent__Hello r = SBX__AGENT__HELLO__INIT;
    r.protocol_version = SBX__AGENT__CONSTANTS__PROTOCOL_VERSION;
    r.software = "envd";
    r.version = ENVD_VERSION;
    r.kernel_release = s->uts.release;
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        r.mem_total_kib = (uint64_t)si.totalram * si.mem_unit / 1024;
    r.cpus = (uint32_t)get_nprocs();
    r.os_name = s->os_name;
    r.n_features = sizeof(features) / sizeof(features[0]);
    r.features = features;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = req->id;
    f.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    f.hello = &r;
    conn_send(c, &f);
}

static void on_frame(struct server *s, struct conn *c, const Sbx__Agent__Frame *req)
{
    if (c->op) {
        c->op->frame(s, c, req, c->op_arg);
        return;
    }
    conn_dispatch(s, c, req);
}

void conn_dispatch(struct server *s, struct conn *c, const Sbx__Agent__Frame *req)
{
    if (!c->hello_done && req->body_case != SBX__AGENT__FRAME__BODY_HELLO) {
        conn_fail(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                  "expected Hello first, got %s", frame_body_name(req->body_case));
        return;
    }
    if (req->id == 0 && req->body_case != SBX__AGENT__FRAME__BODY_HELLO) {
        conn_fail(c, 0, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL, "request %s without an id",
                  frame_body_name(req->body_case));
        return;
    }
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = req->id;
    switch (req->body_case) {
    case SBX__AGENT__FRAME__BODY_HELLO:
        if (c->hello_done) {
            conn_fail(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                      "second Hello on a connection");
            return;
        }
        on_hello(s, c, req);
        return;
    case SBX__AGENT__FRAME__BODY_PING: {
        Sbx__Agent__Pong pong = SBX__AGENT__PONG__INIT;
        pong.nonce = req->ping->nonce;
        f.body_case = SBX__AGENT__FRAME__BODY_PONG;
        f.pong = &pong;
        conn_send(c, &f);
        return;
    }
    case SBX__AGENT__FRAME__BODY_SHUTDOWN:
        conn_ok(c, req->id);
        c->shutdown = true;
        c->closing = true;
        c->shutdown_at_ms = mono_ms() + SHUTDOWN_LINGER_MS;
        return;
    case SBX__AGENT__FRAME__BODY_CONFIGURE:
        users_configure(c, req->id, req->configure);
        return;
    case SBX__AGENT__FRAME__BODY_METRICS_REQUEST:
        metrics_request(s, c, req);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_START:
    case SBX__AGENT__FRAME__BODY_PROC_INPUT:
    case SBX__AGENT__FRAME__BODY_PROC_SIGNAL:
    case SBX__AGENT__FRAME__BODY_PROC_LIST_REQUEST:
    case SBX__AGENT__FRAME__BODY_PROC_ATTACH:
    case SBX__AGENT__FRAME__BODY_PROC_RESIZE:
        proc_request(s, c, req);
        return;
    case SBX__AGENT__FRAME__BODY_FILE_WRITE:
    case SBX__AGENT__FRAME__BODY_FILE_READ:
    case SBX__AGENT__FRAME__BODY_STAT:
    case SBX__AGENT__FRAME__BODY_LIST_DIR:
    case SBX__AGENT__FRAME__BODY_MAKE_DIR:
    case SBX__AGENT__FRAME__BODY_REMOVE:
    case SBX__AGENT__FRAME__BODY_RENAME:
        files_request(s, c, req);
        return;
    case SBX__AGENT__FRAME__BODY_WATCH_START:
        watch_request(s, c, req);
        return;
    case SBX__AGENT__FRAME__BODY_PORT_CONNECT:
        forward_request(s, c, req);
        return;
    default:
        /* Replies, events and errors only ever flow from envd to the host. */
        conn_fail(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                  "unexpected %s from the host", frame_body_name(req->body_case));
        return;
    }
}

/* --- connections --------------------------------------------------------------------------- */

static void conn_add(struct server *s, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c || s->nconns == MAX_CONNS) {
        free(c);
        close(fd);
        return;
    }
    c->fd = fd;
    frame_reader_init(&c->rd);
    s->conns[s->nconns++] = c;
}

static void conn_free(struct server *s, struct conn *c)
{
    if (c->op) {
        const struct conn_op *op = c->op;
        void *arg = c->op_arg;
        c->op = NULL;
        c->op_arg = NULL;
        if (op->closed)
            op->closed(s, c, arg);
    }
    if (c->fd >= 0) /* -1 once a module took it (conn_take) */
        close(c->fd);
    frame_reader_free(&c->rd);
    free(c->out);
    free(c);
}

static void conn_read(struct server *s, struct conn *c)
{
    static uint8_t buf[64 * 1024]; /* single-threaded: one buffer serves every connection */
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            if (errno != ECONNRESET && errno != ENOTCONN)
                log_msg("dropping a connection: recv: %s", strerror(errno));
            c->dead = true;
        }
        return;
    }
    if (n == 0) {
        /* The host closed its side: after a Shutdown, the signal to go on. */
        c->dead = true;
        return;
    }
    /* After an Error or a Shutdown nothing more is served on this connection. */
    size_t off = 0;
    while (off < (size_t)n && !c->closing && !c->dead) {
        size_t used;
        Sbx__Agent__Frame *f;
        char err[160];
        int r = frame_reader_feed(&c->rd, buf + off, (size_t)n - off, &used, &f, err, sizeof(err));
        off += used;
        if (r < 0) {
            conn_fail(c, 0,
                      r == SBX_ENOTSUP ? SBX__AGENT__ERROR_CODE__ERROR_CODE_UNSUPPORTED
                                       : SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                      "%s", err);
            return;
        }
        if (r == 1) {
            on_frame(s, c, f);
            frame_free(f);
        }
    }
}

static void accept_all(struct server *s)
{
    while (s->nconns < MAX_CONNS) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(s->listen_fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* Out of fds or memory: back off instead of spinning on a readable listener. */
            log_msg("accept: %s", strerror(errno));
            s->accept_pause_until_ms = mono_ms() + 100;
            return;
        }
        /* Only the host may drive envd, not a process inside the guest. (Test mode listens
           on a unix socket of the test instead.) */
        const struct sockaddr_vm *vm = (const struct sockaddr_vm *)&sa;
        if (!s->cfg->test_mode && (vm->svm_family != AF_VSOCK || vm->svm_cid != VMADDR_CID_HOST)) {
            close(fd);
            continue;
        }
        conn_add(s, fd);
    }
}

/* --- processes ----------------------------------------------------------------------------- */

static void reap(struct server *s)
{
    struct signalfd_siginfo si;
    while (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    /* SIGCHLD coalesces, and orphans anywhere in the guest are re-parented to PID 1: reap
       everything that has exited, not just the child the signal named. */
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        proc_reaped(s, pid, status);
}

/* --- the loop ------------------------------------------------------------------------------ */

void serve_loop(const struct envd_config *cfg, int listen_fd, int first_fd)
{
    static struct server s; /* large (the tables), and there is one */
    s.cfg = cfg;
    s.listen_fd = listen_fd;
    s.sig_fd = -1;
    uname(&s.uts);
    init_os_name(s.os_name, sizeof(s.os_name));
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s.sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sig_fd < 0)
        log_msg("signalfd: %s (zombies are reaped on each wakeup instead)", strerror(errno));
    if (first_fd >= 0)
        conn_add(&s, first_fd);

    static struct pollfd pfd[2 + MAX_CONNS + MAX_WATCHERS];
    static struct watcher *polled[MAX_WATCHERS];
    for (;;) {
        if (cfg->test_mode && s.listen_fd < 0 && s.nconns == 0) {
            /* Closed for a caller that serves again (the fuzz target). */
            if (s.sig_fd >= 0)
                close(s.sig_fd);
            s.sig_fd = -1;
            return;
        }
        proc_tick(&s);
        forward_tick(&s);
        /* Producers with room to send go first; one that has more asks for another round. */
        bool again = false;
        for (size_t i = 0; i < s.nconns; i++) {
            struct conn *c = s.conns[i];
            if (c->op && c->op->drain && conn_writable(c))
                again |= c->op->drain(&s, c, c->op_arg);
        }
        uint64_t now = mono_ms();
        int timeout = again ? 0 : -1;
        if (s.wake_at_ms) {
            int left = s.wake_at_ms > now ? (int)(s.wake_at_ms - now) : 0;
            if (timeout < 0 || left < timeout)
                timeout = left;
            s.wake_at_ms = 0;
        }
        nfds_t n = 0;
        pfd[n++] = (struct pollfd){.fd = s.sig_fd, .events = POLLIN};
        int lslot = -1;
        if (s.listen_fd >= 0 && s.nconns < MAX_CONNS) {
            if (now >= s.accept_pause_until_ms) {
                lslot = (int)n;
                pfd[n++] = (struct pollfd){.fd = s.listen_fd, .events = POLLIN};
            } else {
                int left = (int)(s.accept_pause_until_ms - now);
                if (timeout < 0 || left < timeout)
                    timeout = left;
            }
        }
        nfds_t first = n;
        for (size_t i = 0; i < s.nconns; i++) {
            struct conn *c = s.conns[i];
            short ev = 0;
            if (c->out_off < c->out_len) {
                if (now >= c->send_retry_at_ms) {
                    ev |= POLLOUT;
                } else {
                    int left = (int)(c->send_retry_at_ms - now);
                    if (timeout < 0 || left < timeout)
                        timeout = left;
                }
            }
            /* Once Shutdown is answered, reading only watches for the host's close. */
            if ((!c->closing || c->shutdown) && c->out_len - c->out_off < OUT_HIGH)
                ev |= POLLIN;
            if (c->shutdown) {
                int left = c->shutdown_at_ms > now ? (int)(c->shutdown_at_ms - now) : 0;
                if (timeout < 0 || left < timeout)
                    timeout = left;
            }
            pfd[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        nfds_t wfirst = n;
        size_t npolled = 0;
        for (size_t i = 0; i < s.nwatchers; i++) {
            struct watcher *w = s.watchers[i];
            if (!w)
                continue;
            polled[npolled++] = w;
            pfd[n++] = (struct pollfd){.fd = w->events ? w->fd : -1, .events = w->events};
        }
        int r = poll(pfd, n, timeout);
        if (r < 0 && errno != EINTR) {
            log_msg("poll: %s", strerror(errno));
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (s.sig_fd < 0 || (r > 0 && pfd[0].revents))
            reap(&s);
        if (r > 0 && lslot >= 0 && pfd[lslot].revents)
            accept_all(&s);
        /* Connections accepted just now are past the polled range and wait for the next
           round; only the polled ones are looked at here. */
        for (nfds_t i = first; r > 0 && i < wfirst; i++) {
            struct conn *c = s.conns[i - first];
            short re = pfd[i].revents;
            if (re & POLLOUT)
                flush(c);
            if (re & (POLLIN | POLLHUP | POLLERR))
                conn_read(&s, c);
        }
        for (size_t i = 0; r > 0 && i < npolled; i++) {
            struct watcher *w = polled[i];
            short re = pfd[wfirst + i].revents;
            /* A callback may have removed a watcher polled later in this round. */
            if (re && w->active)
                w->cb(&s, w, re);
        }
        size_t wkeep = 0;
        for (size_t i = 0; i < s.nwatchers; i++)
            if (s.watchers[i])
                s.watchers[wkeep++] = s.watchers[i];
        s.nwatchers = wkeep;

        now = mono_ms();
        size_t keep = 0;
        for (size_t i = 0; i < s.nconns; i++) {
            struct conn *c = s.conns[i];
            bool flushed = c->out_off == c->out_len;
            /* A host that neither reads the Ok nor closes only delays the shutdown. */
            if (c->shutdown && (c->dead || now >= c->shutdown_at_ms)) {
                log_msg("shutting down");
                init_poweroff(cfg);
            }
            if (c->dead || (c->closing && flushed && !c->shutdown)) {
                conn_free(&s, c);
                continue;
            }
            s.conns[keep++] = c;
        }
        s.nconns = keep;
    }
}
