// SPDX-License-Identifier: Apache-2.0
/* virtio-vsock connections: the table, host port allocation, credit and pending host writes. */
#ifndef SBX_VIRTIO_VSOCK_CONN_H
#define SBX_VIRTIO_VSOCK_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "virtio/queue.h"

#define VSOCK_BUF_ALLOC          (256u * 1024) /* our receive window per connection */
#define VSOCK_MAX_PAYLOAD        (64u * 1024)  /* largest payload of one packet, either way */
#define VSOCK_MAX_CONNS          1024          /* live connections per device */
#define VSOCK_PEND_BUDGET        (64u << 20)   /* pending guest bytes, all connections */
#define VSOCK_PORT_FIRST         1024          /* host ports are allocated from here up */
#define VSOCK_BUCKETS            256
#define VSOCK_CONNECT_TIMEOUT_MS 10000 /* guest never answered our REQUEST */
#define VSOCK_CLOSE_TIMEOUT_MS   10000 /* guest never sent RST after our SHUTDOWN */

struct event;
struct vsock;

enum vsock_conn_state {
    CONN_NEW,         /* created by virtio_vsock_connect(), not yet seen by the device thread */
    CONN_CONNECTING,  /* REQUEST queued or sent; waiting for RESPONSE */
    CONN_ESTABLISHED, /* data flows */
    CONN_CLOSING,     /* we sent SHUTDOWN for both directions; waiting for RST */
};

/* Control packets owed to the guest (sent in this priority order when rx buffers exist). */
#define CTRL_REQUEST    (1u << 0)
#define CTRL_SHUTDOWN   (1u << 1)
#define CTRL_CREDIT     (1u << 2)
#define CTRL_CREDIT_REQ (1u << 3) /* ask the guest for its window (it looks stuck at zero) */

struct vsock_conn {
    struct vsock *vs;
    struct vsock_conns *table;
    struct vsock_conn *hnext;           /* hash bucket chain */
    TAILQ_ENTRY(vsock_conn) ready_link; /* on vs->ready: owes a packet or has host data */
    TAILQ_ENTRY(vsock_conn) new_link;   /* on vs->incoming while CONN_NEW */
    bool on_ready;

    uint32_t local_port, peer_port; /* host port, guest port */
    int fd;                         /* the device end of the socketpair */
    struct event *ev_read, *ev_write, *timer;
    enum vsock_conn_state state;

    unsigned ctrl;           /* CTRL_* owed to the guest */
    uint32_t shutdown_flags; /* VIRTIO_VSOCK_SHUTDOWN_* of the owed SHUTDOWN */
    bool readable;           /* fd had data last time we looked (read watch disarmed) */
    bool host_eof;           /* the caller shut its write side: nothing more to send */
    bool host_gone;          /* the caller closed completely: guest data is dropped */
    bool host_deaf;          /* writing to the caller failed: guest data is dropped */
    uint32_t peer_shut;      /* VIRTIO_VSOCK_SHUTDOWN_* received from the guest */

    /* Guest receive window (host -> guest): never exceed it. */
    uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
    /* Our receive window (guest -> host): fwd_cnt counts bytes written to fd. */
    uint32_t fwd_cnt, fwd_cnt_sent;

    /* Guest bytes the fd did not accept yet; at most VSOCK_BUF_ALLOC by the credit rules, and
       with every other connection's at most the table's pend_budget. */
    uint8_t *pend;
    size_t pend_off, pend_len, pend_cap;
};

struct vsock_conns {
    struct vsock_conn *bucket[VSOCK_BUCKETS];
    unsigned count;
    uint32_t next_port;
    size_t pend_total;  /* bytes allocated for pending guest data, all connections */
    size_t pend_budget; /* their cap (VSOCK_PEND_BUDGET unless set) */
};

void vsock_conn_table_init(struct vsock_conns *t);

/* The connection with this (host port, guest port), or NULL. */
struct vsock_conn *vsock_conn_lookup(const struct vsock_conns *t, uint32_t local_port,
                                     uint32_t peer_port);

/* Picks a host port no live connection uses. Returns 0, or -1 if the table is full. */
int vsock_conn_alloc_port(struct vsock_conns *t, uint32_t *port);

/* Inserts a new connection (state CONN_NEW, no events yet). NULL if out of memory or full. */
struct vsock_conn *vsock_conn_new(struct vsock_conns *t, struct vsock *vs, uint32_t local_port,
                                  uint32_t peer_port, int fd);

/* Unlinks and frees a connection: its events, fd and buffers. The caller removes it from any
   vs list first. */
void vsock_conn_free(struct vsock_conns *t, struct vsock_conn *c);

/* Calls fn for every connection (fn may free the one it gets). */
void vsock_conn_foreach(struct vsock_conns *t, void (*fn)(struct vsock_conn *c, void *arg),
                        void *arg);

/* Bytes we may still send to the guest on this connection. Hostile counters clamp to 0. */
uint32_t vsock_conn_peer_credit(const struct vsock_conn *c);

/* Appends chain bytes [off, off + len) to the pending buffer. The caller checked that
   pend_len + len <= VSOCK_BUF_ALLOC. Returns 0 or -1 (out of memory, or the table's budget
   would be exceeded). */
int vsock_conn_pend_append(struct vsock_conn *c, const struct queue_chain *ch, uint64_t off,
                           size_t len);

/* Frees the pending buffer (its bytes are dropped). */
void vsock_conn_pend_drop(struct vsock_conn *c);

/* Writes pending bytes to fd until it would block. Returns 0, or -1 if the caller closed its
   end (EPIPE and friends). Advances fwd_cnt. */
int vsock_conn_pend_flush(struct vsock_conn *c);

/* Whether the guest's view of our window is low enough that it may stall without an update. */
bool vsock_conn_want_credit_update(const struct vsock_conn *c);

#endif
