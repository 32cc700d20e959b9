// SPDX-License-Identifier: Apache-2.0
/* Port exposure: host TCP listeners whose connections are relayed to guest ports through envd. */

/*
 * Design
 * ------
 * Each sandbox that exposes a port gets one thread of its own (started by the first
 * sbx_expose) running a poll loop over: an eventfd that API calls use to wake it, the
 * sandbox's dead_fd, the listening sockets, and two sockets per relayed connection. It never
 * blocks on anything but poll, so a guest that stalls cannot hold up the device thread, the
 * API callers or the other connections.
 *
 * A connection accepted on a host port dials a new stream to envd (vsock, or the local test
 * socket) and sends Hello and PortConnect in one go (the protocol allows a request right
 * behind the Hello). envd answers Hello, then Ok once it has connected to the service inside
 * the guest (or Error); from then on the stream carries raw bytes. Bytes envd sent after the
 * Ok frame may arrive in the same read: they stay in the guest->client buffer and are relayed
 * first. The whole handshake has a deadline; a failed one resets the client connection
 * (SO_LINGER 0), the TCP way of saying "refused".
 *
 * Relaying uses one bounded buffer per direction. A side is read only while the buffer
 * towards the other side has room, so a slow reader slows the writer down through the
 * kernel's socket buffers (and vsock's credit) instead of growing memory. End of stream is
 * passed on as shutdown(SHUT_WR) once the buffer has drained; the connection is closed when
 * both directions have ended, or at once on an error.
 *
 * Ownership: the port table is shared with API threads under `lock`; listening sockets are
 * created by sbx_expose (so that errors such as a port in use are reported to the caller)
 * and closed by the loop only (sbx_unexpose marks the entry and waits until the loop has
 * closed it together with its connections). Connections belong to the loop alone.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/conn.h"
#include "internal.h"
#include "ops/expose.h"
#include "util/relaybuf.h"
#include "util/wait.h"

#define MAX_PORTS        64    /* host listeners per sandbox */
#define MAX_CONNS        256   /* relayed connections per sandbox (envd's limit too) */
#define HANDSHAKE_MS     10000 /* dial + Hello + envd's connect to the service */
#define GUEST_CONNECT_MS 5000  /* envd's own deadline for the connect (PortConnect) */
#define ACCEPT_BATCH     16    /* connections accepted per listener and loop round */
#define ACCEPT_PAUSE_MS  100   /* after running out of fds */
#define ID_HELLO         1
#define ID_CONNECT       2

enum port_state {
    PORT_FREE = 0,
    PORT_ACTIVE,
    PORT_REMOVING, /* sbx_unexpose waits for the loop to close it */
};

struct xport {
    int state;
    unsigned guest_port, host_port;
    int lfd;
    int family;
    char addr[INET6_ADDRSTRLEN]; /* numeric, as bound */
};

struct xconn {
    int port; /* index into the port table */
    int cfd;  /* the accepted client */
    int afd;  /* the stream to envd */
    bool relaying;
    bool ended;
    bool reset;           /* close the client with RST */
    uint64_t deadline_ns; /* handshake */
    int answers;          /* handshake frames received from envd */
    struct relaybuf up;   /* client -> guest; during the handshake: our frames */
    struct relaybuf down; /* guest -> client; during the handshake: envd's frames */
    struct xconn *next;
};

struct expose_state {
    struct sbx *sb;
    pthread_mutex_t lock; /* guards ports and stop */
    pthread_cond_t done;  /* a removal finished */
    struct xport ports[MAX_PORTS];
    bool stop;
    int wake_fd;
    pthread_t thread;

    /* Owned by the loop thread. */
    struct xconn *conns;
    unsigned nconns;
    bool dead; /* the VM ended: no more relaying */
    uint64_t accept_pause_until_ns;
    struct pollfd pfd[2 + MAX_PORTS + 2 * MAX_CONNS];
    void *who[2 + MAX_PORTS + 2 * MAX_CONNS];
};

/* --- connections (loop thread) ------------------------------------------------------------ */

static void close_reset(int fd)
{
    /* Linger 0: close sends RST, which a client reports as "connection reset" rather than a
       clean but empty answer. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void conn_end(struct expose_state *st, struct xconn *c, bool reset)
{
    if (c->ended)
        return;
    c->ended = true;
    if (c->cfd >= 0) {
        if (reset || c->reset)
            close_reset(c->cfd);
        else
            close(c->cfd);
    }
    if (c->afd >= 0)
        close(c->afd);
    c->cfd = c->afd = -1;
}

static void conn_free(struct xconn *c)
{
    free(c->up.data);
    free(c->down.data);
    free(c);
}

/* Removes ended connections from the list. */
static void sweep(struct expose_state *st)
{
    struct xconn **pp = &st->conns;
    while (*pp) {
        struct xconn *c = *pp;
        if (c->ended) {
            *pp = c->next;
            conn_free(c);
            st->nconns--;
        } else {
            pp = &c->next;
        }
    }
}

/* Appends an encoded frame to b. */
static bool put_frame(struct relaybuf *b, const Sbx__Agent__Frame *f)
{
    size_t n;
    if (frame_encode(f, b->data + b->len, RELAYBUF_SIZE - b->len, &n, NULL, 0) != 0)
        return false;
    b->len += n;
    return true;
}

/* Decodes envd's handshake frames from c->down. Returns false when the connection must end
   (a refusal, a malformed or unexpected frame); sets c->relaying after the Ok. */
static bool handshake_frames(struct xconn *c)
{
    while (!c->relaying) {
        size_t avail = c->down.len - c->down.off;
        const uint8_t *p = c->down.data + c->down.off;
        if (avail < SBX_FRAME_HDR)
            return !c->down.eof;
        uint32_t plen;
        if (frame_parse_header(p, &plen, NULL, 0) != 0 || plen > RELAYBUF_SIZE - SBX_FRAME_HDR)
            return false;
        Sbx__Agent__Frame *f = NULL;
        size_t used = 0;
        int r = frame_decode(p, avail, &f, &used, NULL, 0);
        if (r < 0)
            return false;
        if (r == 0)
            return !c->down.eof;
        c->down.off += used;
        bool ok;
        if (c->answers == 0)
            ok = f->id == ID_HELLO && f->body_case == SBX__AGENT__FRAME__BODY_HELLO &&
                 f->hello->protocol_version == SBX__AGENT__CONSTANTS__PROTOCOL_VERSION;
        else
            ok = f->id == ID_CONNECT && f->body_case == SBX__AGENT__FRAME__BODY_OK;
        /* An Error (nothing listens, envd busy) ends the connection like any surprise. */
        frame_free(f);
        if (!ok)
            return false;
        if (++c->answers == 2) {
            c->relaying = true;
            c->reset = false;
        }
    }
    return true;
}

/* Moves what can be moved, passes ends of stream on and ends finished connections. */
static void pump(struct expose_state *st, struct xconn *c)
{
    if (c->ended)
        return;
    if (relaybuf_write(&c->up, c->afd) != 0) {
        conn_end(st, c, true);
        return;
    }
    if (!c->relaying)
        return;
    if (relaybuf_write(&c->down, c->cfd) != 0) {
        conn_end(st, c, true);
        return;
    }
    if (c->up.shut && c->down.shut)
        conn_end(st, c, false);
}

static void conn_events(const struct xconn *c, short *cev, short *aev)
{
    *cev = *aev = 0;
    if (!c->relaying) {
        /* The client waits (its bytes stay in the kernel) until the guest side is ready. */
        *aev = POLLIN | (c->up.off < c->up.len ? POLLOUT : 0);
        return;
    }
    if (!c->up.eof && c->up.len - c->up.off < RELAYBUF_SIZE)
        *cev |= POLLIN;
    if (c->down.off < c->down.len)
        *cev |= POLLOUT;
    if (!c->down.eof && c->down.len - c->down.off < RELAYBUF_SIZE)
        *aev |= POLLIN;
    if (c->up.off < c->up.len)
        *aev |= POLLOUT;
}

static void on_agent(struct expose_state *st, struct xconn *c, short re)
{
    if (re & (POLLIN | POLLHUP | POLLERR)) {
        if (!relaybuf_read(&c->down, c->afd) || (!c->relaying && !handshake_frames(c))) {
            conn_end(st, c, true);
            return;
        }
    }
    pump(st, c);
}

static void on_client(struct expose_state *st, struct xconn *c, short re)
{
    if (re & (POLLIN | POLLHUP | POLLERR)) {
        if (!relaybuf_read(&c->up, c->cfd)) {
            conn_end(st, c, true);
            return;
        }
    }
    pump(st, c);
}

/* A connection accepted on port `pi`: dial envd and start the handshake. */
static void conn_start(struct expose_state *st, int pi, int cfd)
{
    struct sbx *sb = st->sb;
    if (st->dead || st->nconns >= MAX_CONNS || atomic_load(&sb->state) != SBX_STATE_RUNNING) {
        close_reset(cfd);
        return;
    }
    struct xconn *c = calloc(1, sizeof(*c));
    if (c) {
        c->up.data = malloc(RELAYBUF_SIZE);
        c->down.data = malloc(RELAYBUF_SIZE);
    }
    if (!c || !c->up.data || !c->down.data) {
        if (c)
            conn_free(c);
        close_reset(cfd);
        return;
    }
    c->port = pi;
    c->cfd = cfd;
    c->afd = -1;
    c->reset = true; /* until envd said Ok */
    c->deadline_ns = now_ns() + (uint64_t)HANDSHAKE_MS * 1000000u;
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    Sbx__Agent__Hello hello = SBX__AGENT__HELLO__INIT;
    hello.protocol_version = SBX__AGENT__CONSTANTS__PROTOCOL_VERSION;
    hello.software = "libsandbox";
    hello.version = SBX_VERSION_STRING;
    Sbx__Agent__PortConnect pc = SBX__AGENT__PORT_CONNECT__INIT;
    pc.port = st->ports[pi].guest_port; /* fixed while the port is active */
    pc.timeout_ms = GUEST_CONNECT_MS;
    Sbx__Agent__Frame fh = SBX__AGENT__FRAME__INIT, fc = SBX__AGENT__FRAME__INIT;
    fh.id = ID_HELLO;
    fh.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    fh.hello = &hello;
    fc.id = ID_CONNECT;
    fc.body_case = SBX__AGENT__FRAME__BODY_PORT_CONNECT;
    fc.port_connect = &pc;
    if (!put_frame(&c->up, &fh) || !put_frame(&c->up, &fc) || sbx_agent_dial(sb, &c->afd) < 0) {
        conn_end(st, c, true);
        conn_free(c);
        return;
    }
    c->next = st->conns;
    st->conns = c;
    st->nconns++;
    pump(st, c);
}

static void accept_on(struct expose_state *st, int pi, int lfd)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                st->accept_pause_until_ns = now_ns() + (uint64_t)ACCEPT_PAUSE_MS * 1000000u;
            return;
        }
        conn_start(st, pi, fd);
    }
}

/* Under st->lock: closes the ports being removed with their connections. */
static bool reap_ports(struct expose_state *st)
{
    bool any = false;
    for (int i = 0; i < MAX_PORTS; i++) {
        struct xport *p = &st->ports[i];
        if (p->state != PORT_REMOVING)
            continue;
        for (struct xconn *c = st->conns; c; c = c->next)
            if (c->port == i)
                conn_end(st, c, true);
        close(p->lfd);
        p->lfd = -1;
        p->state = PORT_FREE;
        any = true;
    }
    return any;
}

enum { W_WAKE, W_DEAD, W_LISTEN, W_CLIENT, W_AGENT };

static void *loop(void *arg)
{
    struct expose_state *st = arg;
    int lidx[MAX_PORTS];
    for (;;) {
        pthread_mutex_lock(&st->lock);
        if (st->stop) {
            pthread_mutex_unlock(&st->lock);
            break;
        }
        bool removed = reap_ports(st);
        sweep(st);
        nfds_t n = 0;
        st->pfd[n] = (struct pollfd){.fd = st->wake_fd, .events = POLLIN};
        st->who[n++] = NULL;
        int dslot = -1;
        if (!st->dead) {
            dslot = (int)n;
            st->pfd[n] = (struct pollfd){.fd = st->sb->dead_fd, .events = POLLIN};
            st->who[n++] = NULL;
        }
        uint64_t now = now_ns();
        bool accepting = now >= st->accept_pause_until_ns;
        nfds_t lfirst = n;
        int nl = 0;
        for (int i = 0; i < MAX_PORTS; i++) {
            if (st->ports[i].state != PORT_ACTIVE)
                continue;
            lidx[nl++] = i;
            st->pfd[n] = (struct pollfd){.fd = st->ports[i].lfd, .events = accepting ? POLLIN : 0};
            st->who[n++] = NULL;
        }
        pthread_mutex_unlock(&st->lock);
        if (removed)
            pthread_cond_broadcast(&st->done);

        int timeout = -1;
        if (!accepting)
            timeout = (int)((st->accept_pause_until_ns - now) / 1000000u) + 1;
        nfds_t cfirst = n;
        for (struct xconn *c = st->conns; c; c = c->next) {
            short cev, aev;
            conn_events(c, &cev, &aev);
            st->pfd[n] = (struct pollfd){.fd = cev ? c->cfd : -1, .events = cev};
            st->who[n++] = c;
            st->pfd[n] = (struct pollfd){.fd = aev ? c->afd : -1, .events = aev};
            st->who[n++] = c;
            if (!c->relaying) {
                int left = c->deadline_ns > now ? (int)((c->deadline_ns - now) / 1000000u) + 1 : 0;
                if (timeout < 0 || left < timeout)
                    timeout = left;
            }
        }
        int r = poll(st->pfd, n, timeout);
        if (r < 0 && errno != EINTR) {
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL); /* cannot happen with valid arguments; do not spin if it does */
            continue;
        }
        if (r > 0 && (st->pfd[0].revents & POLLIN)) {
            uint64_t v;
            while (read(st->wake_fd, &v, sizeof(v)) > 0)
                ;
        }
        if (r > 0 && dslot >= 0 && st->pfd[dslot].revents) {
            /* The VM ended: its streams go nowhere any more. */
            st->dead = true;
            for (struct xconn *c = st->conns; c; c = c->next)
                conn_end(st, c, true);
        }
        for (nfds_t i = cfirst; r > 0 && i < n; i += 2) {
            struct xconn *c = st->who[i];
            if (!c->ended && st->pfd[i].revents)
                on_client(st, c, st->pfd[i].revents);
            if (!c->ended && st->pfd[i + 1].revents)
                on_agent(st, c, st->pfd[i + 1].revents);
        }
        now = now_ns();
        for (struct xconn *c = st->conns; c; c = c->next)
            if (!c->ended && !c->relaying && now >= c->deadline_ns)
                conn_end(st, c, true); /* the guest did not answer in time */
        /* Connections accepted now are not in this round's poll set: after the loop above. */
        for (int k = 0; r > 0 && k < nl; k++)
            if (st->pfd[lfirst + (nfds_t)k].revents)
                accept_on(st, lidx[k], st->pfd[lfirst + (nfds_t)k].fd);
    }
    for (struct xconn *c = st->conns; c; c = c->next)
        conn_end(st, c, true);
    sweep(st);
    return NULL;
}

/* --- API ---------------------------------------------------------------------------------- */

static void wake(struct expose_state *st)
{
    uint64_t one = 1;
    (void)!write(st->wake_fd, &one, sizeof(one));
}

static void state_free(struct expose_state *st)
{
    for (int i = 0; i < MAX_PORTS; i++)
        if (st->ports[i].state != PORT_FREE && st->ports[i].lfd >= 0)
            close(st->ports[i].lfd);
    if (st->wake_fd >= 0)
        close(st->wake_fd);
    pthread_mutex_destroy(&st->lock);
    pthread_cond_destroy(&st->done);
    free(st);
}

/* The sandbox's exposure state, created (with its thread) on first use. */
static int get_state(struct sbx *sb, struct expose_state **out)
{
    struct expose_state *st = atomic_load(&sb->expose);
    if (st) {
        *out = st;
        return 0;
    }
    st = calloc(1, sizeof(*st));
    if (!st)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    st->sb = sb;
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->done, NULL);
    for (int i = 0; i < MAX_PORTS; i++)
        st->ports[i].lfd = -1;
    st->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (st->wake_fd < 0) {
        int e = errno;
        state_free(st);
        return sbx_seterr(sb, SBX_EIO, "port exposure: eventfd: %s", strerror(e));
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the relay thread takes no signals */
    int r = pthread_create(&st->thread, NULL, loop, st);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        state_free(st);
        return sbx_seterr(sb, SBX_ENOMEM, "cannot start the port exposure thread: %s", strerror(r));
    }
    struct expose_state *expect = NULL;
    if (!atomic_compare_exchange_strong(&sb->expose, &expect, st)) {
        /* Another thread was first: use its state. */
        pthread_mutex_lock(&st->lock);
        st->stop = true;
        pthread_mutex_unlock(&st->lock);
        wake(st);
        pthread_join(st->thread, NULL);
        state_free(st);
        st = expect;
    }
    *out = st;
    return 0;
}

void expose_destroy(struct sbx *sb)
{
    struct expose_state *st = atomic_exchange(&sb->expose, NULL);
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    st->stop = true;
    pthread_mutex_unlock(&st->lock);
    wake(st);
    pthread_join(st->thread, NULL);
    state_free(st);
}

static int check_port(struct sbx *sb, unsigned port, const char *what)
{
    if (port == 0 || port > 65535)
        return sbx_seterr(sb, SBX_EINVAL, "%s: guest port %u is not a TCP port (1..65535)", what,
                          port);
    return 0;
}

/* Parses host_addr into a socket address; canon receives its numeric form. */
static int parse_host_addr(struct sbx *sb, const char *a, unsigned port,
                           struct sockaddr_storage *ss, socklen_t *len, char *canon)
{
    memset(ss, 0, sizeof(*ss));
    if (!a || strcmp(a, "localhost") == 0)
        a = "127.0.0.1";
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (strlen(a) < INET6_ADDRSTRLEN && inet_pton(AF_INET, a, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
        inet_ntop(AF_INET, &v4->sin_addr, canon, INET6_ADDRSTRLEN);
        return 0;
    }
    if (strlen(a) < INET6_ADDRSTRLEN && inet_pton(AF_INET6, a, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
        inet_ntop(AF_INET6, &v6->sin6_addr, canon, INET6_ADDRSTRLEN);
        return 0;
    }
    return sbx_seterr(sb, SBX_EINVAL,
                      "sbx_expose: host address '%.80s' is not an IPv4 or IPv6 address", a);
}

/* Creates the listening socket. Returns the fd or an SBX_E* code with the message set. */
static int listen_on(struct sbx *sb, const struct sockaddr_storage *ss, socklen_t len,
                     const char *canon, unsigned host_port)
{
    const char *fmt = ss->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u";
    char where[INET6_ADDRSTRLEN + 16];
    snprintf(where, sizeof(where), fmt, canon, host_port);
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return sbx_seterr(sb, errno == EMFILE || errno == ENFILE ? SBX_EBUSY : SBX_EIO,
                          "sbx_expose: socket: %s", strerror(errno));
    int one = 1;
    /* Re-binding a port whose earlier connections linger in TIME_WAIT must work; two
       listeners on one port still cannot. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) != 0) {
        int e = errno;
        close(fd);
        switch (e) {
        case EADDRINUSE:
            return sbx_seterr(sb, SBX_EBUSY, "sbx_expose: host port %s is already in use", where);
        case EACCES:
            return sbx_seterr(sb, SBX_EACCES,
                              "sbx_expose: cannot listen on %s: permission denied (ports "
                              "below 1024 need privileges)",
                              where);
        case EADDRNOTAVAIL:
            return sbx_seterr(sb, SBX_EINVAL,
                              "sbx_expose: cannot listen on %s: not an address of this machine",
                              where);
        default:
            return sbx_seterr(sb, SBX_EIO, "sbx_expose: bind %s: %s", where, strerror(e));
        }
    }
    if (listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return sbx_seterr(sb, SBX_EIO, "sbx_expose: listen on %s: %s", where, strerror(e));
    }
    return fd;
}

int sbx_expose(sbx *sb, unsigned guest_port, const char *host_addr, unsigned host_port,
               unsigned *bound_port)
{
    if (!sb)
        return SBX_EINVAL;
    if (bound_port)
        *bound_port = 0;
    int r = check_port(sb, guest_port, "sbx_expose");
    if (r)
        return r;
    if (host_port > 65535)
        return sbx_seterr(sb, SBX_EINVAL,
                          "sbx_expose: host port %u is not a TCP port (0 for any, or 1..65535)",
                          host_port);
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    char canon[INET6_ADDRSTRLEN];
    if ((r = parse_host_addr(sb, host_addr, host_port, &ss, &sslen, canon)))
        return r;
    /* The state check and the feature check, with the usual messages. */
    struct call c;
    if ((r = call_begin(sb, &c, 1000)))
        return r;
    r = call_require(&c, AGENT_FEATURE_PORT_FORWARD, "port forwarding (sbx_expose)");
    call_end(&c);
    if (r)
        return r;
    struct expose_state *st = NULL;
    if ((r = get_state(sb, &st)))
        return r;

    pthread_mutex_lock(&st->lock);
    int slot = -1;
    for (int i = 0; i < MAX_PORTS; i++) {
        struct xport *p = &st->ports[i];
        if (p->state == PORT_FREE) {
            if (slot < 0)
                slot = i;
            continue;
        }
        if (p->state != PORT_ACTIVE || p->family != ss.ss_family || strcmp(p->addr, canon) != 0)
            continue;
        if (p->guest_port == guest_port && (host_port == 0 || host_port == p->host_port)) {
            if (bound_port)
                *bound_port = p->host_port;
            pthread_mutex_unlock(&st->lock);
            return 0;
        }
        if (host_port == p->host_port) {
            r = sbx_seterr(sb, SBX_EBUSY,
                           "sbx_expose: host port %u is already in use (it exposes guest "
                           "port %u)",
                           host_port, p->guest_port);
            pthread_mutex_unlock(&st->lock);
            return r;
        }
    }
    if (slot < 0) {
        pthread_mutex_unlock(&st->lock);
        return sbx_seterr(sb, SBX_EBUSY, "sbx_expose: %d ports are already exposed (the limit)",
                          MAX_PORTS);
    }
    int fd = listen_on(sb, &ss, sslen, canon, host_port);
    if (fd < 0) {
        pthread_mutex_unlock(&st->lock);
        return fd;
    }
    struct sockaddr_storage got;
    socklen_t glen = sizeof(got);
    unsigned port = host_port;
    if (getsockname(fd, (struct sockaddr *)&got, &glen) == 0)
        port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                               : ((struct sockaddr_in *)&got)->sin_port);
    struct xport *p = &st->ports[slot];
    p->guest_port = guest_port;
    p->host_port = port;
    p->lfd = fd;
    p->family = ss.ss_family;
    snprintf(p->addr, sizeof(p->addr), "%s", canon);
    p->state = PORT_ACTIVE;
    pthread_mutex_unlock(&st->lock);
    wake(st);
    if (bound_port)
        *bound_port = port;
    return 0;
}

int sbx_get_host(sbx *sb, unsigned guest_port, char *buf, size_t buflen)
{
    if (!sb)
        return SBX_EINVAL;
    if (!buf || buflen == 0)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_get_host: no buffer");
    buf[0] = '\0';
    int r = check_port(sb, guest_port, "sbx_get_host");
    if (r)
        return r;
    char addr[INET6_ADDRSTRLEN] = "";
    int family = AF_INET;
    unsigned port = 0;
    struct expose_state *st = atomic_load(&sb->expose);
    if (st) {
        pthread_mutex_lock(&st->lock);
        for (int i = 0; i < MAX_PORTS; i++) {
            struct xport *p = &st->ports[i];
            if (p->state == PORT_ACTIVE && p->guest_port == guest_port) {
                snprintf(addr, sizeof(addr), "%s", p->addr);
                family = p->family;
                port = p->host_port;
                break;
            }
        }
        pthread_mutex_unlock(&st->lock);
    }
    if (!port) {
        if ((r = sbx_expose(sb, guest_port, NULL, 0, &port)))
            return r;
        snprintf(addr, sizeof(addr), "127.0.0.1");
    }
    /* A wildcard listener is reached through the loopback address of its family. */
    if (strcmp(addr, "0.0.0.0") == 0)
        snprintf(addr, sizeof(addr), "127.0.0.1");
    else if (strcmp(addr, "::") == 0)
        snprintf(addr, sizeof(addr), "::1");
    int n = snprintf(buf, buflen, family == AF_INET6 ? "[%s]:%u" : "%s:%u", addr, port);
    if (n < 0 || (size_t)n >= buflen) {
        buf[0] = '\0';
        return sbx_seterr(sb, SBX_EINVAL,
                          "sbx_get_host: a buffer of %zu bytes is too small for the address "
                          "(%d bytes with the NUL)",
                          buflen, n + 1);
    }
    return 0;
}

int sbx_unexpose(sbx *sb, unsigned guest_port)
{
    if (!sb)
        return SBX_EINVAL;
    int r = check_port(sb, guest_port, "sbx_unexpose");
    if (r)
        return r;
    struct expose_state *st = atomic_load(&sb->expose);
    if (!st)
        return sbx_seterr(sb, SBX_ENOENT, "sbx_unexpose: guest port %u is not exposed", guest_port);
    pthread_mutex_lock(&st->lock);
    bool mine[MAX_PORTS] = {false};
    int n = 0;
    for (int i = 0; i < MAX_PORTS; i++)
        if (st->ports[i].state == PORT_ACTIVE && st->ports[i].guest_port == guest_port) {
            st->ports[i].state = PORT_REMOVING;
            mine[i] = true;
            n++;
        }
    if (n == 0) {
        pthread_mutex_unlock(&st->lock);
        return sbx_seterr(sb, SBX_ENOENT, "sbx_unexpose: guest port %u is not exposed", guest_port);
    }
    wake(st);
    /* The loop closes the listeners and their connections at its next round (it never
       blocks for long), so the host ports are free again when this returns. A slot of ours
       that was freed and taken again by a concurrent sbx_expose is no longer REMOVING. */
    for (;;) {
        bool pending = false;
        for (int i = 0; i < MAX_PORTS; i++)
            pending |= mine[i] && st->ports[i].state == PORT_REMOVING;
        if (!pending)
            break;
        pthread_cond_wait(&st->done, &st->lock);
    }
    pthread_mutex_unlock(&st->lock);
    return 0;
}
