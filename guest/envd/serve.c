// SPDX-License-Identifier: Apache-2.0
/* envd's event loop: accepts vsock connections, decodes frames, answers requests, reaps. */
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

#define MAX_CONNS 64
/* Stop reading requests from a connection whose replies pile up (a host that does not read);
   bounds envd's memory per connection together with SBX_FRAME_MAX. */
#define OUT_HIGH (8u << 20)
/* After answering Shutdown, how long to wait for the host to close the connection: the Ok
   must leave the guest before the reboot resets the vsock device. */
#define SHUTDOWN_LINGER_MS 1000

struct conn {
    int fd;
    struct frame_reader rd;
    uint8_t *out; /* encoded frames not yet written */
    size_t out_off, out_len, out_cap;
    bool hello_done;
    bool closing;  /* an Error was queued: close once it is written */
    bool shutdown; /* Ok to Shutdown queued: power off once written and the host closed */
    bool dead;
    uint64_t shutdown_at_ms;
};

struct server {
    const struct envd_config *cfg;
    int listen_fd, sig_fd;
    struct conn *conns[MAX_CONNS];
    size_t nconns;
    uint64_t accept_pause_until_ms;
    struct utsname uts;
    char os_name[128]; /* PRETTY_NAME of the root filesystem */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* --- output -------------------------------------------------------------------------------- */

static void flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            c->dead = true; /* the host went away: nothing left to tell it */
            return;
        }
    }
    c->out_off = c->out_len = 0;
}

static void queue(struct conn *c, const Sbx__Agent__Frame *f)
{
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

/* Answers with Error and ends the connection once that is written. */
static void reply_error(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void reply_error(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, const char *fmt,
                        ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    Sbx__Agent__Error e = SBX__AGENT__ERROR__INIT;
    e.code = code;
    e.message = msg;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_ERROR;
    f.error = &e;
    queue(c, &f);
    c->closing = true;
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
        reply_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_VERSION,
                    "envd speaks agent protocol %u, not %u",
                    (unsigned)SBX__AGENT__CONSTANTS__PROTOCOL_VERSION, h->protocol_version);
        return;
    }
    if (h->hostname[0] && !valid_hostname(h->hostname)) {
        reply_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT,
                    "invalid hostname");
        return;
    }
    init_set_clock(s->cfg, h->realtime_ns);
    if (h->hostname[0])
        init_set_hostname(s->cfg, h->hostname);
    c->hello_done = true;

    static char *features[] = {"clock", "hostname"};
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
    queue(c, &f);
}

static void on_frame(struct server *s, struct conn *c, const Sbx__Agent__Frame *req)
{
    if (!c->hello_done && req->body_case != SBX__AGENT__FRAME__BODY_HELLO) {
        reply_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                    "expected Hello first, got %s", frame_body_name(req->body_case));
        return;
    }
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = req->id;
    switch (req->body_case) {
    case SBX__AGENT__FRAME__BODY_HELLO:
        if (c->hello_done) {
            reply_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
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
        queue(c, &f);
        return;
    }
    case SBX__AGENT__FRAME__BODY_SHUTDOWN: {
        Sbx__Agent__Ok ok = SBX__AGENT__OK__INIT;
        f.body_case = SBX__AGENT__FRAME__BODY_OK;
        f.ok = &ok;
        queue(c, &f);
        c->shutdown = true;
        c->shutdown_at_ms = mono_ms() + SHUTDOWN_LINGER_MS;
        return;
    }
    default:
        /* Replies and errors only ever flow from envd to the host. */
        reply_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
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

static void conn_free(struct conn *c)
{
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
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            c->dead = true;
        return;
    }
    if (n == 0) {
        /* The host closed its side: after a Shutdown, the signal to go on. */
        c->dead = true;
        return;
    }
    /* After an Error or a Shutdown nothing more is served on this connection. */
    size_t off = 0;
    while (off < (size_t)n && !c->closing && !c->shutdown && !c->dead) {
        size_t used;
        Sbx__Agent__Frame *f;
        char err[160];
        int r = frame_reader_feed(&c->rd, buf + off, (size_t)n - off, &used, &f, err, sizeof(err));
        off += used;
        if (r < 0) {
            reply_error(c, 0,
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
        struct sockaddr_vm sa;
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
        /* Only the host may drive envd, not a process inside the guest. */
        if (sa.svm_family != AF_VSOCK || sa.svm_cid != VMADDR_CID_HOST) {
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
    while (waitpid(-1, &status, WNOHANG) > 0)
        ;
}

/* --- the loop ------------------------------------------------------------------------------ */

void serve_loop(const struct envd_config *cfg, int listen_fd, int first_fd)
{
    struct server s = {.cfg = cfg, .listen_fd = listen_fd, .sig_fd = -1};
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

    struct pollfd pfd[2 + MAX_CONNS];
    for (;;) {
        if (cfg->test_mode && s.listen_fd < 0 && s.nconns == 0)
            return;
        uint64_t now = mono_ms();
        int timeout = -1;
        nfds_t n = 0;
        pfd[n++] = (struct pollfd){.fd = s.sig_fd, .events = POLLIN};
        int lslot = -1;
        if (s.listen_fd >= 0 && s.nconns < MAX_CONNS) {
            if (now >= s.accept_pause_until_ms) {
                lslot = (int)n;
                pfd[n++] = (struct pollfd){.fd = s.listen_fd, .events = POLLIN};
            } else {
                timeout = (int)(s.accept_pause_until_ms - now);
            }
        }
        nfds_t first = n;
        for (size_t i = 0; i < s.nconns; i++) {
            struct conn *c = s.conns[i];
            short ev = 0;
            bool pending = c->out_off < c->out_len;
            if (pending)
                ev |= POLLOUT;
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
        for (nfds_t i = first; r > 0 && i < n; i++) {
            struct conn *c = s.conns[i - first];
            short re = pfd[i].revents;
            if (re & POLLOUT)
                flush(c);
            if (re & (POLLIN | POLLHUP | POLLERR))
                conn_read(&s, c);
        }
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
            if (c->dead || (c->closing && flushed)) {
                conn_free(c);
                continue;
            }
            s.conns[keep++] = c;
        }
        s.nconns = keep;
    }
}
