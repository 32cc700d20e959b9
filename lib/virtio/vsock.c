// SPDX-License-Identifier: Apache-2.0
/* virtio-vsock: a userspace device bridging guest stream sockets to host socketpairs. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_vsock.h>

#include "sandbox.h"
#include "virtio/mmio.h"
#include "virtio/vsock_conn.h"

#define Q_RX    0
#define Q_TX    1
#define Q_EVENT 2

#define HDR_LEN         sizeof(struct virtio_vsock_hdr)
#define CHAIN_CAP       (1024u * 1024) /* per-chain cap on every vsock queue */
#define RST_RING        64             /* RSTs owed to guest ports we keep no state for */
#define HUP_POLL_MS     1000           /* half-closed connections: how often to look for close */
#define CREDIT_STALL_MS 200            /* window closed this long with data waiting: ask again */
#define SHUTDOWN_BOTH   (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)

struct rst_entry {
    uint32_t host_port, guest_port;
    uint16_t type;
};

struct vsock {
    struct virtio_dev *dev;
    uint64_t guest_cid;
    struct event_base *base;
    struct vsock_conns conns;
    TAILQ_HEAD(, vsock_conn) ready;    /* connections with something for the rx queue */
    TAILQ_HEAD(, vsock_conn) incoming; /* from virtio_vsock_connect(), other threads */
    int wake_fd;                       /* eventfd: incoming is not empty */
    struct event *wake_ev;
    struct rst_entry rst[RST_RING];
    unsigned rst_head, rst_count;
    unsigned connect_timeout_ms, close_timeout_ms;
    bool reset_pending; /* the driver reset the device; connections die on the device thread */
    struct queue_chain chain;
    struct iovec iov[QUEUE_MAX_SIZE];
};

static void rx_pump(struct vsock *vs);

/* ---- connection lifecycle ---- */

static void mark_ready(struct vsock_conn *c)
{
    if (!c->on_ready) {
        TAILQ_INSERT_TAIL(&c->vs->ready, c, ready_link);
        c->on_ready = true;
    }
}

static void unmark_ready(struct vsock_conn *c)
{
    if (c->on_ready) {
        TAILQ_REMOVE(&c->vs->ready, c, ready_link);
        c->on_ready = false;
    }
}

/* Queues an RST for a guest port without keeping connection state (bounded: under a flood
   the oldest survive and the rest are dropped; the guest times out those). */
static void queue_rst(struct vsock *vs, uint32_t host_port, uint32_t guest_port, uint16_t type)
{
    struct rst_entry *e;

    if (vs->rst_count == RST_RING)
        return;
    e = &vs->rst[(vs->rst_head + vs->rst_count) % RST_RING];
    e->host_port = host_port;
    e->guest_port = guest_port;
    e->type = type;
    vs->rst_count++;
}

/* Forgets a connection; the caller's end reads EOF once it drained what we wrote. */
static void conn_close(struct vsock_conn *c, bool send_rst)
{
    struct vsock *vs = c->vs;

    if (send_rst && c->state != CONN_NEW)
        queue_rst(vs, c->local_port, c->peer_port, VIRTIO_VSOCK_TYPE_STREAM);
    unmark_ready(c);
    if (c->state == CONN_NEW)
        TAILQ_REMOVE(&vs->incoming, c, new_link);
    vsock_conn_free(&vs->conns, c);
}

static void close_announced(struct vsock_conn *c, void *arg)
{
    /* CONN_NEW ones were never shown to the guest: they survive a reset and say REQUEST to the
       next driver instance. */
    if (c->state != CONN_NEW)
        conn_close(c, false);
}

/* Applies a driver reset seen on a vCPU thread: only the device thread may free events. Every
   device-thread entry point calls this first, under the lock. */
static void settle(struct vsock *vs)
{
    if (!vs->reset_pending)
        return;
    vs->reset_pending = false;
    vsock_conn_foreach(&vs->conns, close_announced, NULL);
    vs->rst_head = vs->rst_count = 0;
}

static void arm_timer(struct vsock_conn *c, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    evtimer_add(c->timer, &tv);
}

/* Both directions are finished once the guest sent its last byte and we delivered it, and
   nothing more will go to the guest: then RST completes the clean shutdown. */
static bool maybe_finish(struct vsock_conn *c)
{
    bool guest_done = (c->peer_shut & VIRTIO_VSOCK_SHUTDOWN_SEND) && !c->pend_len;
    bool host_done = c->host_eof || (c->peer_shut & VIRTIO_VSOCK_SHUTDOWN_RCV);

    if (c->state != CONN_ESTABLISHED || !guest_done || !host_done)
        return false;
    conn_close(c, true);
    return true;
}

/* The caller closed its end completely: tell the guest, wait for its RST (or the timeout). */
static void host_gone(struct vsock_conn *c)
{
    c->host_gone = c->host_eof = true;
    c->readable = false;
    vsock_conn_pend_drop(c);
    event_del(c->ev_read);
    event_del(c->ev_write);
    if (c->state != CONN_ESTABLISHED) {
        conn_close(c, true);
        return;
    }
    c->state = CONN_CLOSING;
    c->ctrl |= CTRL_SHUTDOWN;
    c->shutdown_flags = SHUTDOWN_BOTH;
    mark_ready(c);
    arm_timer(c, c->vs->close_timeout_ms);
}

/* Writing to the caller failed (it closed its end): drop guest data from now on, but keep
   forwarding what the caller wrote before closing (a last request, such as envd's
   ProcDetach) until its EOF, which then ends the connection as usual. */
static void host_deaf(struct vsock_conn *c)
{
    c->host_deaf = true;
    c->fwd_cnt += (uint32_t)c->pend_len;
    vsock_conn_pend_drop(c);
    if (!c->readable && !c->host_eof)
        event_add(c->ev_read, NULL);
}

/* read() returned EOF: either a full close or shutdown(SHUT_WR) by the caller. */
static void host_eof(struct vsock_conn *c)
{
    struct pollfd p = {.fd = c->fd, .events = 0};

    /* An AF_UNIX socket reports POLLHUP only once the peer shut both directions. */
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP)) {
        host_gone(c);
        return;
    }
    c->host_eof = true;
    c->readable = false;
    c->ctrl |= CTRL_SHUTDOWN;
    c->shutdown_flags = VIRTIO_VSOCK_SHUTDOWN_SEND;
    mark_ready(c);
    /* Half-closed: nothing tells us about the final close except polling for it. */
    arm_timer(c, HUP_POLL_MS);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct vsock_conn *c = arg;
    struct virtio_dev *d = c->vs->dev;
    struct vsock *vs = c->vs;

    pthread_mutex_lock(&d->lock);
    if (vs->reset_pending) {
        settle(vs); /* frees c */
        pthread_mutex_unlock(&d->lock);
        return;
    }
    if (c->state == CONN_ESTABLISHED && !c->host_eof) {
        /* The guest's window has been closed for a while with host data waiting. A Linux
           guest announces a reopened window with a CREDIT_UPDATE that it may fail to
           allocate under memory pressure and never retries: ask for it instead, again and
           again while the stall lasts, so such a loss costs a delay, not a hang. */
        if (c->readable && !vsock_conn_peer_credit(c)) {
            c->ctrl |= CTRL_CREDIT_REQ;
            mark_ready(c);
            arm_timer(c, CREDIT_STALL_MS);
        }
    } else if (c->state == CONN_ESTABLISHED && c->host_eof && !c->host_gone) {
        struct pollfd p = {.fd = c->fd, .events = 0};
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
            host_gone(c);
        else
            arm_timer(c, HUP_POLL_MS);
    } else {
        /* REQUEST never answered, or SHUTDOWN never followed by RST. */
        conn_close(c, true);
    }
    rx_pump(vs);
    pthread_mutex_unlock(&d->lock);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct vsock_conn *c = arg;
    struct virtio_dev *d = c->vs->dev;

    pthread_mutex_lock(&d->lock);
    if (c->vs->reset_pending) {
        settle(c->vs);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    /* Disarm until this connection's data went out: the socket buffer holds it meanwhile. */
    event_del(c->ev_read);
    c->readable = true;
    mark_ready(c);
    rx_pump(c->vs);
    pthread_mutex_unlock(&d->lock);
}

static void after_forward(struct vsock_conn *c)
{
    if (vsock_conn_want_credit_update(c)) {
        c->ctrl |= CTRL_CREDIT;
        mark_ready(c);
    }
    if (!c->pend_len && (c->peer_shut & VIRTIO_VSOCK_SHUTDOWN_SEND))
        shutdown(c->fd, SHUT_WR); /* the caller reads EOF after the last guest byte */
    maybe_finish(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct vsock_conn *c = arg;
    struct virtio_dev *d = c->vs->dev;
    struct vsock *vs = c->vs;

    pthread_mutex_lock(&d->lock);
    if (vs->reset_pending) {
        settle(vs);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    if (vsock_conn_pend_flush(c) < 0) {
        host_deaf(c);
        event_del(c->ev_write);
    } else {
        if (!c->pend_len)
            event_del(c->ev_write);
        after_forward(c);
    }
    rx_pump(vs);
    pthread_mutex_unlock(&d->lock);
}

/* Device thread: give connections from virtio_vsock_connect() their events and send REQUEST. */
static void activate(struct vsock_conn *c)
{
    struct vsock *vs = c->vs;

    TAILQ_REMOVE(&vs->incoming, c, new_link);
    c->state = CONN_CONNECTING;
    c->ev_read = event_new(vs->base, c->fd, EV_READ | EV_PERSIST, on_readable, c);
    c->ev_write = event_new(vs->base, c->fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->timer = evtimer_new(vs->base, on_timer, c);
    if (!c->ev_read || !c->ev_write || !c->timer) {
        vsock_conn_free(&vs->conns, c);
        return;
    }
    c->ctrl |= CTRL_REQUEST;
    mark_ready(c);
    arm_timer(c, vs->connect_timeout_ms);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct vsock *vs = arg;
    struct virtio_dev *d = vs->dev;
    uint64_t cnt;

    (void)!read(fd, &cnt, sizeof(cnt));
    pthread_mutex_lock(&d->lock);
    settle(vs);
    while (!TAILQ_EMPTY(&vs->incoming))
        activate(TAILQ_FIRST(&vs->incoming));
    rx_pump(vs);
    pthread_mutex_unlock(&d->lock);
}

/* ---- host -> guest (rx queue) ---- */

static void fill_hdr(struct virtio_vsock_hdr *h, const struct vsock *vs, uint32_t src_port,
                     uint32_t dst_port, uint16_t type, uint16_t op)
{
    memset(h, 0, sizeof(*h));
    h->src_cid = VSOCK_HOST_CID;
    h->dst_cid = vs->guest_cid;
    h->src_port = src_port;
    h->dst_port = dst_port;
    h->type = type;
    h->op = op;
}

static void conn_hdr(struct virtio_vsock_hdr *h, struct vsock_conn *c, uint16_t op)
{
    fill_hdr(h, c->vs, c->local_port, c->peer_port, VIRTIO_VSOCK_TYPE_STREAM, op);
    h->buf_alloc = VSOCK_BUF_ALLOC;
    h->fwd_cnt = c->fwd_cnt;
    /* The packet carries our window: an owed CREDIT_UPDATE is now redundant. */
    c->fwd_cnt_sent = c->fwd_cnt;
    c->ctrl &= ~CTRL_CREDIT;
}

/* Takes an rx buffer. Returns 1, 0 (none: wait for the guest's rx notification), -1 failed. */
static int rx_pop(struct vsock *vs)
{
    struct virtio_dev *d = vs->dev;
    int rc = queue_pop(d, &d->vq[Q_RX], &vs->chain, CHAIN_CAP);

    if (rc > 0 && vs->chain.wlen < HDR_LEN + 1) {
        /* Drivers post buffers with room for a header and payload; anything else is broken. */
        virtio_mmio_fail(d, "queue rx (0): buffer at head %u has only %llu writable bytes",
                         vs->chain.head, (unsigned long long)vs->chain.wlen);
        return -1;
    }
    return rc;
}

static void rx_send(struct vsock *vs, const struct virtio_vsock_hdr *h)
{
    queue_chain_write(&vs->chain, 0, h, HDR_LEN);
    queue_push(&vs->dev->vq[Q_RX], vs->chain.head, (uint32_t)(HDR_LEN + h->len));
}

/* Sends one owed control packet of c, the chain is already popped. */
static void send_ctrl(struct vsock *vs, struct vsock_conn *c)
{
    struct virtio_vsock_hdr h;

    if (c->ctrl & CTRL_REQUEST) {
        c->ctrl &= ~CTRL_REQUEST;
        conn_hdr(&h, c, VIRTIO_VSOCK_OP_REQUEST);
    } else if (c->ctrl & CTRL_SHUTDOWN) {
        c->ctrl &= ~CTRL_SHUTDOWN;
        conn_hdr(&h, c, VIRTIO_VSOCK_OP_SHUTDOWN);
        h.flags = c->shutdown_flags;
    } else if (c->ctrl & CTRL_CREDIT_REQ) {
        c->ctrl &= ~CTRL_CREDIT_REQ;
        conn_hdr(&h, c, VIRTIO_VSOCK_OP_CREDIT_REQUEST);
    } else {
        conn_hdr(&h, c, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
    }
    rx_send(vs, &h);
}

/* Moves host bytes of c into the popped chain. Returns true if the chain was used. */
static bool send_data(struct vsock *vs, struct vsock_conn *c, uint32_t credit)
{
    struct virtio_vsock_hdr h;
    uint64_t room = vs->chain.wlen - HDR_LEN, got;
    ssize_t n;
    int cnt;

    if (room > credit)
        room = credit;
    if (room > VSOCK_MAX_PAYLOAD)
        room = VSOCK_MAX_PAYLOAD;
    cnt = queue_chain_iov(&vs->chain, true, HDR_LEN, room, vs->iov, QUEUE_MAX_SIZE, &got);
    do {
        n = readv(c->fd, vs->iov, cnt);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        conn_hdr(&h, c, VIRTIO_VSOCK_OP_RW);
        h.len = (uint32_t)n;
        c->tx_cnt += (uint32_t)n;
        rx_send(vs, &h);
        return true;
    }
    c->readable = false;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        event_add(c->ev_read, NULL);
    else if (n == 0)
        host_eof(c);
    else
        host_gone(c); /* ECONNRESET and friends */
    return false;
}

/* Fills rx buffers with whatever is owed to the guest, fairly across connections. */
static void rx_pump(struct vsock *vs)
{
    struct virtio_dev *d = vs->dev;

    if (!virtio_mmio_queue_live(d, Q_RX))
        return;
    for (;;) {
        struct vsock_conn *c = TAILQ_FIRST(&vs->ready);
        int rc;

        if (!vs->rst_count && !c)
            break;
        if (!vs->rst_count && !c->ctrl) {
            uint32_t credit = vsock_conn_peer_credit(c);
            if (!c->readable || c->state != CONN_ESTABLISHED || c->host_eof ||
                (c->peer_shut & VIRTIO_VSOCK_SHUTDOWN_RCV) || !credit) {
                /* Nothing to send now; a credit update or a readable event re-queues it. */
                if (!credit && c->readable && c->state == CONN_ESTABLISHED && !c->host_eof &&
                    !evtimer_pending(c->timer, NULL))
                    arm_timer(c, CREDIT_STALL_MS);
                unmark_ready(c);
                continue;
            }
            rc = rx_pop(vs);
            if (rc <= 0)
                break;
            if (!send_data(vs, c, credit))
                queue_unpop(&d->vq[Q_RX]);
            /* Round robin: one packet per connection per turn. */
            if (c->on_ready) {
                unmark_ready(c);
                if (c->readable || c->ctrl)
                    mark_ready(c);
            }
            continue;
        }
        rc = rx_pop(vs);
        if (rc <= 0)
            break;
        if (vs->rst_count) {
            struct rst_entry *e = &vs->rst[vs->rst_head];
            struct virtio_vsock_hdr h;
            fill_hdr(&h, vs, e->host_port, e->guest_port, e->type, VIRTIO_VSOCK_OP_RST);
            rx_send(vs, &h);
            vs->rst_head = (vs->rst_head + 1) % RST_RING;
            vs->rst_count--;
            continue;
        }
        send_ctrl(vs, c);
        if (!c->ctrl && !c->readable)
            unmark_ready(c);
    }
    virtio_mmio_signal_used(d);
}

/* ---- guest -> host (tx queue) ---- */

/* A guest-initiated connection. No host listeners exist yet: refuse. This is where a listener
   table lookup (creating a connection and owing a RESPONSE) would go. */
static void guest_request(struct vsock *vs, const struct virtio_vsock_hdr *h)
{
    queue_rst(vs, h->dst_port, h->src_port, h->type);
}

static void guest_shutdown(struct vsock_conn *c, uint32_t flags)
{
    c->peer_shut |= flags & SHUTDOWN_BOTH;
    if (c->peer_shut & VIRTIO_VSOCK_SHUTDOWN_RCV) {
        /* The guest reads no more: make the caller's writes fail instead of piling up. */
        shutdown(c->fd, SHUT_RD);
        c->readable = false;
        event_del(c->ev_read);
    }
    after_forward(c);
}

static void guest_data(struct vsock *vs, struct vsock_conn *c, uint32_t len)
{
    uint64_t got;
    ssize_t n = 0;
    int cnt;

    if (c->peer_shut & VIRTIO_VSOCK_SHUTDOWN_SEND) {
        conn_close(c, true); /* data after the guest's own SHUTDOWN */
        return;
    }
    if (c->host_gone || c->host_deaf) {
        c->fwd_cnt += len; /* nobody reads: drop, but keep the guest's window moving */
        return;
    }
    /* The guest may only send within the window we advertised; pending never exceeds it. */
    if ((uint64_t)c->pend_len + len > VSOCK_BUF_ALLOC) {
        conn_close(c, true);
        return;
    }
    if (!c->pend_len) {
        struct msghdr msg = {0};
        cnt = queue_chain_iov(&vs->chain, false, HDR_LEN, len, vs->iov, QUEUE_MAX_SIZE, &got);
        msg.msg_iov = vs->iov;
        msg.msg_iovlen = (size_t)cnt;
        do {
            n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            host_deaf(c);
            c->fwd_cnt += len;
            return;
        }
        if (n < 0)
            n = 0;
        c->fwd_cnt += (uint32_t)n;
    }
    if ((uint32_t)n < len) {
        if (vsock_conn_pend_append(c, &vs->chain, HDR_LEN + (uint64_t)n, len - (size_t)n) < 0) {
            conn_close(c, true);
            return;
        }
        event_add(c->ev_write, NULL);
    }
    after_forward(c);
}

static void tx_packet(struct vsock *vs)
{
    const struct queue_chain *ch = &vs->chain;
    struct virtio_vsock_hdr h;
    struct vsock_conn *c;
    uint32_t credit_before;

    if (ch->rlen < HDR_LEN)
        return; /* not even a header: nothing to answer to */
    queue_chain_read(ch, 0, &h, HDR_LEN);
    /* Packets must come from the guest's own address to the host; drop anything spoofed. */
    if (h.src_cid != vs->guest_cid || h.dst_cid != VSOCK_HOST_CID)
        return;
    c = vsock_conn_lookup(&vs->conns, h.dst_port, h.src_port);
    if (c && c->state == CONN_NEW)
        c = NULL; /* not announced to the guest yet: it cannot know this port */

    if (h.len > VSOCK_MAX_PAYLOAD || h.len > ch->rlen - HDR_LEN ||
        h.type != VIRTIO_VSOCK_TYPE_STREAM) {
        if (c)
            conn_close(c, true);
        else if (h.op != VIRTIO_VSOCK_OP_RST)
            queue_rst(vs, h.dst_port, h.src_port, h.type);
        return;
    }
    if (!c) {
        if (h.op == VIRTIO_VSOCK_OP_REQUEST)
            guest_request(vs, &h);
        else if (h.op != VIRTIO_VSOCK_OP_RST)
            queue_rst(vs, h.dst_port, h.src_port, h.type);
        return;
    }

    credit_before = vsock_conn_peer_credit(c);
    c->peer_buf_alloc = h.buf_alloc;
    c->peer_fwd_cnt = h.fwd_cnt;
    if (!credit_before && vsock_conn_peer_credit(c) && c->readable)
        mark_ready(c);

    switch (h.op) {
    case VIRTIO_VSOCK_OP_RESPONSE:
        if (c->state != CONN_CONNECTING) {
            conn_close(c, true);
            break;
        }
        c->state = CONN_ESTABLISHED;
        evtimer_del(c->timer);
        event_add(c->ev_read, NULL);
        break;
    case VIRTIO_VSOCK_OP_RST:
        conn_close(c, false);
        break;
    case VIRTIO_VSOCK_OP_SHUTDOWN:
        if (c->state == CONN_CONNECTING)
            conn_close(c, true);
        else if (c->state == CONN_ESTABLISHED)
            guest_shutdown(c, h.flags);
        break;
    case VIRTIO_VSOCK_OP_RW:
        if (c->state == CONN_ESTABLISHED)
            guest_data(vs, c, h.len);
        else if (c->state == CONN_CONNECTING)
            conn_close(c, true);
        break;
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        break; /* the header fields above were the point */
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        c->ctrl |= CTRL_CREDIT;
        mark_ready(c);
        break;
    default: /* REQUEST on a live connection, or an unknown op */
        conn_close(c, true);
        break;
    }
}

static void vsock_notify(struct virtio_dev *d, unsigned qi)
{
    struct vsock *vs = d->priv;

    settle(vs);
    if (qi == Q_TX) {
        struct virtqueue *q = &d->vq[Q_TX];
        unsigned done = 0;
        int rc;
        while ((rc = queue_pop(d, q, &vs->chain, CHAIN_CAP)) > 0) {
            tx_packet(vs);
            queue_push(q, vs->chain.head, 0);
            if (++done >= QUEUE_MAX_SIZE && virtio_mmio_defer(d, qi))
                break;
        }
        if (rc < 0)
            return;
    }
    /* rx: the guest added buffers. event: buffers are only used by transport resets. Either
       way, and after tx, whatever is owed can go out now (also signals tx completions). */
    rx_pump(vs);
}

/* ---- device ---- */

static void close_one(struct vsock_conn *c, void *arg)
{
    conn_close(c, false);
}

static void close_all(struct vsock *vs)
{
    vsock_conn_foreach(&vs->conns, close_one, NULL);
    vs->rst_head = vs->rst_count = 0;
}

static void vsock_reset(struct virtio_dev *d)
{
    struct vsock *vs = d->priv;
    uint64_t one = 1;

    /* Usually a vCPU thread: defer to the device thread, which owns the libevent events. */
    vs->reset_pending = true;
    (void)!write(vs->wake_fd, &one, sizeof(one));
}

static void vsock_config_read(struct virtio_dev *d, uint64_t off, uint8_t *data, uint32_t len)
{
    struct vsock *vs = d->priv;
    struct virtio_vsock_config cfg = {.guest_cid = vs->guest_cid};

    for (uint32_t i = 0; i < len; i++)
        data[i] = off + i < sizeof(cfg) ? ((uint8_t *)&cfg)[off + i] : 0;
}

static void vsock_free(struct vsock *vs)
{
    close_all(vs);
    if (vs->wake_ev)
        event_free(vs->wake_ev);
    if (vs->wake_fd >= 0)
        close(vs->wake_fd);
    free(vs);
}

static void vsock_destroy(struct virtio_dev *d)
{
    vsock_free(d->priv);
}

static const struct virtio_devops vsock_ops = {
    .name = "virtio-vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .features = 0, /* stream only: no VIRTIO_VSOCK_F_SEQPACKET */
    .nqueues = 3,
    .config_read = vsock_config_read,
    .queue_notify = vsock_notify,
    .reset = vsock_reset,
    .destroy = vsock_destroy,
};

int virtio_vsock_create(struct virtio_dev **out, const struct devhost *host, uint64_t guest_cid,
                        uint64_t mmio_base, uint32_t gsi, char *err, size_t errlen)
{
    struct vsock *vs;
    int rc;

    *out = NULL;
    /* CIDs 0-2 are reserved (hypervisor, local, host) and ~0 is VMADDR_CID_ANY. */
    if (guest_cid <= VSOCK_HOST_CID || guest_cid >= 0xffffffffULL || !host->evbase) {
        snprintf(err, errlen, "virtio-vsock: invalid guest CID %llu or no event loop",
                 (unsigned long long)guest_cid);
        return SBX_EINVAL;
    }
    vs = calloc(1, sizeof(*vs));
    if (!vs) {
        snprintf(err, errlen, "virtio-vsock: out of memory");
        return SBX_ENOMEM;
    }
    vs->guest_cid = guest_cid;
    vs->base = host->evbase;
    vs->connect_timeout_ms = VSOCK_CONNECT_TIMEOUT_MS;
    vs->close_timeout_ms = VSOCK_CLOSE_TIMEOUT_MS;
    vsock_conn_table_init(&vs->conns);
    TAILQ_INIT(&vs->ready);
    TAILQ_INIT(&vs->incoming);
    vs->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (vs->wake_fd < 0) {
        snprintf(err, errlen, "virtio-vsock: eventfd: %s", strerror(errno));
        vsock_free(vs);
        return SBX_EIO;
    }
    vs->wake_ev = event_new(vs->base, vs->wake_fd, EV_READ | EV_PERSIST, on_wake, vs);
    if (!vs->wake_ev || event_add(vs->wake_ev, NULL) < 0) {
        snprintf(err, errlen, "virtio-vsock: cannot watch the wake-up eventfd");
        vsock_free(vs);
        return SBX_ENOMEM;
    }
    rc = virtio_mmio_create(out, host, &vsock_ops, mmio_base, gsi, err, errlen);
    if (rc < 0) {
        vsock_free(vs);
        return rc;
    }
    vs->dev = *out;
    (*out)->priv = vs;
    (*out)->vq[Q_RX].name = "rx";
    (*out)->vq[Q_TX].name = "tx";
    (*out)->vq[Q_EVENT].name = "event";
    return 0;
}

int virtio_vsock_connect(struct virtio_dev *d, uint32_t port, int *fd)
{
    struct vsock *vs = d->priv;
    struct vsock_conn *c;
    uint32_t local;
    int sv[2], rc = 0;
    uint64_t one = 1;

    *fd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? SBX_ENOMEM : SBX_EIO;
    pthread_mutex_lock(&d->lock);
    if (d->failed)
        rc = SBX_EGUEST;
    else if (vsock_conn_alloc_port(&vs->conns, &local) < 0 ||
             !(c = vsock_conn_new(&vs->conns, vs, local, port, sv[1])))
        rc = SBX_ENOMEM; /* VSOCK_MAX_CONNS live connections, or out of memory */
    else
        TAILQ_INSERT_TAIL(&vs->incoming, c, new_link);
    pthread_mutex_unlock(&d->lock);
    if (rc < 0) {
        close(sv[0]);
        close(sv[1]);
        return rc;
    }
    /* libevent is not thread-safe here: the device thread picks the connection up. */
    (void)!write(vs->wake_fd, &one, sizeof(one));
    *fd = sv[0];
    return 0;
}

void virtio_vsock_transport_reset(struct virtio_dev *d)
{
    struct vsock *vs = d->priv;
    struct virtio_vsock_event ev = {.id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET};
    int rc;

    pthread_mutex_lock(&d->lock);
    vs->reset_pending = true;
    settle(vs);
    if (virtio_mmio_queue_live(d, Q_EVENT)) {
        rc = queue_pop(d, &d->vq[Q_EVENT], &vs->chain, CHAIN_CAP);
        if (rc > 0) {
            uint32_t n = (uint32_t)queue_chain_write(&vs->chain, 0, &ev, sizeof(ev));
            queue_push(&d->vq[Q_EVENT], vs->chain.head, n);
            virtio_mmio_signal_used(d);
        }
    }
    pthread_mutex_unlock(&d->lock);
}

void virtio_vsock_set_buffer_cap(struct virtio_dev *d, size_t bytes)
{
    struct vsock *vs = d->priv;

    pthread_mutex_lock(&d->lock);
    vs->conns.pend_budget = bytes;
    pthread_mutex_unlock(&d->lock);
}

void virtio_vsock_set_timeouts(struct virtio_dev *d, unsigned connect_ms, unsigned close_ms)
{
    struct vsock *vs = d->priv;

    pthread_mutex_lock(&d->lock);
    vs->connect_timeout_ms = connect_ms;
    vs->close_timeout_ms = close_ms;
    pthread_mutex_unlock(&d->lock);
}
