// SPDX-License-Identifier: Apache-2.0
/* envd: port forwarding (PortConnect): a TCP connection inside the guest relayed over vsock. */

/*
 * Life of a forward:
 *  1. Connecting. The request's connection belongs to the forward (conn_set_op) while a
 *     non-blocking connect to the service runs, with a deadline checked by forward_tick().
 *     The host sends nothing meanwhile; a frame from it is a protocol error.
 *  2. Relaying. Once connected, envd answers Ok and takes the connection's socket out of the
 *     loop's table (conn_take): from then on it carries raw bytes, moved by two watchers
 *     through one bounded buffer per direction. A side is read only while the buffer towards
 *     the other side has room, so a slow reader slows the writer down (through the kernel's
 *     socket buffers and vsock's credit) instead of growing envd's memory.
 *  3. Ending. End of stream from one side (a read returned 0) is passed on as
 *     shutdown(SHUT_WR) to the other once its buffer is drained; the forward ends when both
 *     directions have ended, or at once on any error (a reset, a write to a closed peer).
 * A forward that ended is only unhooked (watchers removed, fds closed) inside callbacks, and
 * freed by forward_tick() on the next loop round: the loop may still hold pointers to its
 * watchers for the current round.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "envd.h"
#include "util/relaybuf.h"

#define MAX_FORWARDS       256 /* live forwards (connecting or relaying); beyond: BUSY */
#define CONNECT_DEFAULT_MS 5000
#define CONNECT_MAX_MS     60000
#define SEND_RETRY_MS      10 /* after the guest kernel refused a vsock send for lack of memory */

struct fwd {
    struct server *s;
    struct conn *c; /* the request's connection while connecting, else NULL */
    uint32_t id;
    bool relaying;
    bool done;             /* unhooked; freed by forward_tick */
    struct watcher tw, vw; /* the service's socket, the host's stream (relaying only) */
    uint64_t deadline_ms;  /* connecting: give up then */
    /* Where to connect: the request's address, or 127.0.0.1 then ::1. */
    struct sockaddr_storage addr[2];
    socklen_t addrlen[2];
    int naddr, cur;
    int first_err; /* errno of the first attempt that failed */
    uint16_t port;
    struct relaybuf up;   /* host -> service */
    struct relaybuf down; /* service -> host */
    uint64_t retry_at_ms; /* the host stream's POLLOUT waits until then (0: no wait) */
    struct fwd *next;
};

static struct fwd *fwds; /* envd is single-threaded: the live forwards */
static unsigned nfwds;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Ends a forward: no more callbacks, fds closed; freed later by forward_tick. */
static void fwd_end(struct fwd *f)
{
    if (f->done)
        return;
    f->done = true;
    server_unwatch(f->s, &f->tw);
    server_unwatch(f->s, &f->vw);
    close_fd(&f->tw.fd);
    close_fd(&f->vw.fd);
    if (f->c) {
        conn_set_op(f->c, NULL, NULL);
        f->c = NULL;
    }
    nfwds--;
}

static void fwd_free(struct fwd *f)
{
    free(f->up.data);
    free(f->down.data);
    free(f);
}

static void describe(const struct fwd *f, char *out, size_t cap)
{
    const struct sockaddr_storage *a = &f->addr[f->cur < f->naddr ? f->cur : 0];
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)a)->sin6_addr, ip, sizeof(ip));
    snprintf(out, cap, a->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, f->port);
}

/* --- relaying ------------------------------------------------------------------------------ */

/* Moves pending bytes of b to fd. Returns false on a fatal error (the forward must end). */
static bool relay_write(struct fwd *f, struct relaybuf *b, int fd, bool to_host)
{
    if (to_host && f->retry_at_ms)
        return true;
    int r = relaybuf_write(b, fd);
    if (to_host && (r == -ENOMEM || r == -ENOBUFS)) {
        /* vsock allocates a kernel buffer per packet: transient under memory pressure
           (see serve.c's flush). Wait a little instead of dropping the connection. */
        f->retry_at_ms = mono_ms() + SEND_RETRY_MS;
        server_wake_at(f->s, f->retry_at_ms);
        return true;
    }
    return r == 0; /* EPIPE, ECONNRESET, ...: the peer is gone */
}

/* Writes what can be written, passes ends of stream on, ends a finished forward and sets
   what each side waits for. */
static void pump(struct fwd *f)
{
    if (f->done)
        return;
    if (!relay_write(f, &f->up, f->tw.fd, false) || !relay_write(f, &f->down, f->vw.fd, true)) {
        fwd_end(f);
        return;
    }
    if (f->up.shut && f->down.shut) {
        fwd_end(f);
        return;
    }
    short te = 0, ve = 0;
    if (!f->up.eof && f->up.len - f->up.off < RELAYBUF_SIZE)
        ve |= POLLIN;
    if (f->up.off < f->up.len)
        te |= POLLOUT;
    if (!f->down.eof && f->down.len - f->down.off < RELAYBUF_SIZE)
        te |= POLLIN;
    if (f->down.off < f->down.len && !f->retry_at_ms)
        ve |= POLLOUT;
    f->tw.events = te;
    f->vw.events = ve;
}

static void on_service(struct server *s, struct watcher *w, short revents);

static void on_host(struct server *s, struct watcher *w, short revents)
{
    struct fwd *f = w->arg;
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!relaybuf_read(&f->up, f->vw.fd)) {
            fwd_end(f);
            return;
        }
    }
    pump(f);
}

static void start_relay(struct fwd *f)
{
    struct conn *c = f->c;
    conn_set_op(c, NULL, NULL);
    f->c = NULL;
    f->up.data = malloc(RELAYBUF_SIZE);
    f->down.data = malloc(RELAYBUF_SIZE);
    if (!f->up.data || !f->down.data) {
        conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NO_SPACE, ENOMEM,
                   "out of memory for a forwarded connection");
        fwd_end(f);
        return;
    }
    conn_ok(c, f->id);
    /* The Ok may still sit in the connection's output: it goes out first, as relayed bytes. */
    int fd = conn_take(c, f->down.data, RELAYBUF_SIZE, &f->down.len);
    if (fd < 0) {
        fwd_end(f); /* the host went away meanwhile */
        return;
    }
    f->vw.fd = fd;
    f->relaying = true;
    f->tw.cb = on_service;
    f->vw.cb = on_host;
    int one = 1;
    setsockopt(f->tw.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pump(f);
}

/* --- connecting ---------------------------------------------------------------------------- */

static void connect_next(struct fwd *f);

/* The current attempt failed with err: try the next address, or answer the error. */
static void connect_failed(struct fwd *f, int err)
{
    if (!f->first_err)
        f->first_err = err;
    close_fd(&f->tw.fd);
    f->tw.events = 0;
    /* The fallback to ::1 only makes sense when 127.0.0.1 refused. */
    if (f->cur + 1 < f->naddr && err == ECONNREFUSED) {
        f->cur++;
        connect_next(f);
        return;
    }
    /* A refusal says more than "no IPv6 here" from the fallback. */
    int shown = f->first_err == ECONNREFUSED ? ECONNREFUSED : err;
    if (shown != err)
        f->cur = 0;
    char where[80];
    describe(f, where, sizeof(where));
    struct conn *c = f->c;
    uint32_t id = f->id;
    fwd_end(f);
    if (shown == ECONNREFUSED)
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, shown,
                   "connection to %s refused: nothing listens there in the guest", where);
    else
        conn_errno(c, id, shown, "connect to %s in the guest", where);
}

static void on_service(struct server *s, struct watcher *w, short revents)
{
    struct fwd *f = w->arg;
    if (!f->relaying) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == 0 && (revents & (POLLERR | POLLHUP)))
            err = ECONNREFUSED;
        if (err)
            connect_failed(f, err);
        else
            start_relay(f);
        return;
    }
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        if (!relaybuf_read(&f->down, f->tw.fd)) {
            fwd_end(f);
            return;
        }
    }
    pump(f);
}

static void connect_next(struct fwd *f)
{
    int fam = f->addr[f->cur].ss_family;
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(f, errno);
        return;
    }
    f->tw.fd = fd;
    if (connect(fd, (struct sockaddr *)&f->addr[f->cur], f->addrlen[f->cur]) == 0) {
        start_relay(f);
        return;
    }
    if (errno != EINPROGRESS && errno != EINTR) {
        connect_failed(f, errno);
        return;
    }
    f->tw.events = POLLOUT;
}

/* Any frame from the host before the answer breaks the protocol (see PortConnect). */
static void on_frame_connecting(struct server *s, struct conn *c, const Sbx__Agent__Frame *fr,
                                void *arg)
{
    struct fwd *f = arg;
    fwd_end(f);
    conn_fail(c, fr->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
              "%s while PortConnect is connecting", frame_body_name(fr->body_case));
}

static void on_closed_connecting(struct server *s, struct conn *c, void *arg)
{
    struct fwd *f = arg;
    f->c = NULL; /* the op was cleared already */
    fwd_end(f);
}

static const struct conn_op connecting_op = {
    .frame = on_frame_connecting,
    .drain = NULL,
    .closed = on_closed_connecting,
};

/* Parses the request's address into f->addr (127.0.0.1 and ::1 for ""). */
static bool parse_address(struct fwd *f, const char *a, uint16_t port)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    f->naddr = 0;
    if (!a[0]) {
        v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v6.sin6_addr = in6addr_loopback;
        memcpy(&f->addr[0], &v4, sizeof(v4));
        f->addrlen[0] = sizeof(v4);
        memcpy(&f->addr[1], &v6, sizeof(v6));
        f->addrlen[1] = sizeof(v6);
        f->naddr = 2;
    } else if (strlen(a) < INET6_ADDRSTRLEN && inet_pton(AF_INET, a, &v4.sin_addr) == 1) {
        memcpy(&f->addr[0], &v4, sizeof(v4));
        f->addrlen[0] = sizeof(v4);
        f->naddr = 1;
    } else if (strlen(a) < INET6_ADDRSTRLEN && inet_pton(AF_INET6, a, &v6.sin6_addr) == 1) {
        memcpy(&f->addr[0], &v6, sizeof(v6));
        f->addrlen[0] = sizeof(v6);
        f->naddr = 1;
    }
    return f->naddr > 0;
}

void forward_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *req)
{
    const Sbx__Agent__PortConnect *pc = req->port_connect;
    if (pc->port == 0 || pc->port > 65535) {
        conn_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "port %u is not a TCP port (1..65535)", pc->port);
        return;
    }
    if (nfwds >= MAX_FORWARDS) {
        conn_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "busy: %u forwarded connections are open", MAX_FORWARDS);
        return;
    }
    struct fwd *f = calloc(1, sizeof(*f));
    if (!f) {
        conn_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NO_SPACE, ENOMEM,
                   "out of memory");
        return;
    }
    if (!parse_address(f, pc->address, (uint16_t)pc->port)) {
        free(f);
        conn_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "'%.64s' is not an IPv4 or IPv6 address", pc->address);
        return;
    }
    f->s = s;
    f->c = c;
    f->id = req->id;
    f->port = (uint16_t)pc->port;
    uint32_t ms = pc->timeout_ms ? pc->timeout_ms : CONNECT_DEFAULT_MS;
    f->deadline_ms = mono_ms() + (ms > CONNECT_MAX_MS ? CONNECT_MAX_MS : ms);
    /* Both watchers are registered now (the host stream's with no fd yet), so that a full
       watcher table is a clear BUSY here rather than a dropped stream after the Ok. */
    f->tw = (struct watcher){.fd = -1, .cb = on_service, .arg = f};
    f->vw = (struct watcher){.fd = -1, .cb = on_host, .arg = f};
    if (!server_watch(s, &f->tw) || !server_watch(s, &f->vw)) {
        server_unwatch(s, &f->tw);
        free(f);
        conn_error(c, req->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "envd cannot watch more file descriptors");
        return;
    }
    nfwds++;
    f->next = fwds;
    fwds = f;
    conn_set_op(c, &connecting_op, f);
    server_wake_at(s, f->deadline_ms);
    connect_next(f);
}

void forward_tick(struct server *s)
{
    uint64_t now = mono_ms();
    struct fwd **pp = &fwds;
    while (*pp) {
        struct fwd *f = *pp;
        if (!f->done && !f->relaying && now >= f->deadline_ms) {
            f->cur = f->cur < f->naddr ? f->cur : 0;
            char where[80];
            describe(f, where, sizeof(where));
            struct conn *c = f->c;
            uint32_t id = f->id;
            fwd_end(f);
            if (c)
                conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INTERNAL, ETIMEDOUT,
                           "connect to %s in the guest: timed out", where);
        } else if (!f->done && !f->relaying) {
            server_wake_at(s, f->deadline_ms);
        }
        if (!f->done && f->retry_at_ms) {
            if (now >= f->retry_at_ms) {
                f->retry_at_ms = 0;
                pump(f);
            } else {
                server_wake_at(s, f->retry_at_ms);
            }
        }
        if (f->done) {
            *pp = f->next;
            fwd_free(f);
            continue;
        }
        pp = &f->next;
    }
}
