// SPDX-License-Identifier: Apache-2.0
/* virtio-vsock connections: the table, host port allocation, credit and pending host writes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "virtio/vsock_conn.h"

static unsigned bucket_of(uint32_t local_port)
{
    return (local_port * 2654435761u) >> 24; /* Fibonacci hashing into 256 buckets */
}

void vsock_conn_table_init(struct vsock_conns *t)
{
    memset(t, 0, sizeof(*t));
    t->next_port = VSOCK_PORT_FIRST;
    t->pend_budget = VSOCK_PEND_BUDGET;
}

struct vsock_conn *vsock_conn_lookup(const struct vsock_conns *t, uint32_t local_port,
                                     uint32_t peer_port)
{
    for (struct vsock_conn *c = t->bucket[bucket_of(local_port)]; c; c = c->hnext)
        if (c->local_port == local_port && c->peer_port == peer_port)
            return c;
    return NULL;
}

static bool port_used(const struct vsock_conns *t, uint32_t port)
{
    for (struct vsock_conn *c = t->bucket[bucket_of(port)]; c; c = c->hnext)
        if (c->local_port == port)
            return true;
    return false;
}

int vsock_conn_alloc_port(struct vsock_conns *t, uint32_t *port)
{
    if (t->count >= VSOCK_MAX_CONNS)
        return -1;
    /* At most count + 1 candidates can be taken, so this ends quickly. */
    for (unsigned tries = 0; tries <= VSOCK_MAX_CONNS; tries++) {
        uint32_t p = t->next_port++;
        /* 0xffffffff is VMADDR_PORT_ANY; wrap back to the first ephemeral port. */
        if (t->next_port == 0xffffffffu)
            t->next_port = VSOCK_PORT_FIRST;
        if (!port_used(t, p)) {
            *port = p;
            return 0;
        }
    }
    return -1;
}

struct vsock_conn *vsock_conn_new(struct vsock_conns *t, struct vsock *vs, uint32_t local_port,
                                  uint32_t peer_port, int fd)
{
    struct vsock_conn *c;
    unsigned b = bucket_of(local_port);

    if (t->count >= VSOCK_MAX_CONNS)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->vs = vs;
    c->table = t;
    c->local_port = local_port;
    c->peer_port = peer_port;
    c->fd = fd;
    c->state = CONN_NEW;
    c->hnext = t->bucket[b];
    t->bucket[b] = c;
    t->count++;
    return c;
}

void vsock_conn_free(struct vsock_conns *t, struct vsock_conn *c)
{
    struct vsock_conn **pp = &t->bucket[bucket_of(c->local_port)];

    while (*pp && *pp != c)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = c->hnext;
        t->count--;
    }
    if (c->ev_read)
        event_free(c->ev_read);
    if (c->ev_write)
        event_free(c->ev_write);
    if (c->timer)
        event_free(c->timer);
    if (c->fd >= 0)
        close(c->fd);
    vsock_conn_pend_drop(c);
    free(c);
}

void vsock_conn_foreach(struct vsock_conns *t, void (*fn)(struct vsock_conn *c, void *arg),
                        void *arg)
{
    for (unsigned b = 0; b < VSOCK_BUCKETS; b++) {
        struct vsock_conn *c = t->bucket[b], *next;
        for (; c; c = next) {
            next = c->hnext;
            fn(c, arg);
        }
    }
}

uint32_t vsock_conn_peer_credit(const struct vsock_conn *c)
{
    /* Unsigned wrap-around is how the spec defines these counters; a guest that reports more
       forwarded than we sent just gets no credit. */
    uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

    if (in_flight > c->peer_buf_alloc)
        return 0;
    return c->peer_buf_alloc - in_flight;
}

int vsock_conn_pend_append(struct vsock_conn *c, const struct queue_chain *ch, uint64_t off,
                           size_t len)
{
    size_t need = c->pend_len + len;

    if (c->pend_off + need > c->pend_cap) {
        if (c->pend_off) {
            memmove(c->pend, c->pend + c->pend_off, c->pend_len);
            c->pend_off = 0;
        }
        if (need > c->pend_cap) {
            size_t cap = c->pend_cap ? c->pend_cap : 16384;
            uint8_t *p;
            while (cap < need)
                cap *= 2;
            if (cap > VSOCK_BUF_ALLOC)
                cap = VSOCK_BUF_ALLOC;
            if (cap < need || c->table->pend_total - c->pend_cap + cap > c->table->pend_budget)
                return -1;
            p = realloc(c->pend, cap);
            if (!p)
                return -1;
            c->pend = p;
            c->table->pend_total += cap - c->pend_cap;
            c->pend_cap = cap;
        }
    }
    queue_chain_read(ch, off, c->pend + c->pend_off + c->pend_len, len);
    c->pend_len += len;
    return 0;
}

int vsock_conn_pend_flush(struct vsock_conn *c)
{
    while (c->pend_len) {
        /* MSG_NOSIGNAL: a caller that closed its end must not SIGPIPE the host process. */
        ssize_t n = send(c->fd, c->pend + c->pend_off, c->pend_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        c->pend_off += (size_t)n;
        c->pend_len -= (size_t)n;
        c->fwd_cnt += (uint32_t)n;
    }
    /* Drained: give the memory back, idle connections should cost nothing. */
    vsock_conn_pend_drop(c);
    return 0;
}

void vsock_conn_pend_drop(struct vsock_conn *c)
{
    c->table->pend_total -= c->pend_cap;
    free(c->pend);
    c->pend = NULL;
    c->pend_off = c->pend_len = c->pend_cap = 0;
}

bool vsock_conn_want_credit_update(const struct vsock_conn *c)
{
    /* As Linux does: update once the window the guest believes in drops below one maximal
       packet. Every packet we send carries fwd_cnt too, so this is only the idle case. */
    uint32_t unadvertised = c->fwd_cnt - c->fwd_cnt_sent;

    return unadvertised && VSOCK_BUF_ALLOC - unadvertised < VSOCK_MAX_PAYLOAD;
}
