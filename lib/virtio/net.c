// SPDX-License-Identifier: Apache-2.0
/* virtio-net: one Ethernet interface whose frames go to and come from a host backend. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/virtio_ids.h>
#include <linux/virtio_net.h>

#include "sandbox.h"
#include "virtio/mmio.h"

#define RXQ 0
#define TXQ 1

/* No offloads are offered (no checksum offload, no GSO): a frame is at most the MTU plus the
   Ethernet header. The link is virtual, so the MTU is large instead (NET_MTU, announced with
   VIRTIO_NET_F_MTU, which the guest cannot exceed): one frame carries ~64 KiB of TCP, and the
   per-frame cost (exits, interrupts, NAT work) is paid 40 times less often than at 1500. The
   driver's receive buffers are merged (VIRTIO_NET_F_MRG_RXBUF) so it need not post 64 KiB
   buffers. */
#define HDR_LEN      ((uint32_t)sizeof(struct virtio_net_hdr_v1))
#define FRAME_MAX    (65535u + 14u)
#define RX_CHAIN_MAX (256u << 10) /* a receive chain (without mergeable buffers: big packets) */

/* Frames for the guest wait here while it has posted no receive buffers. */
#define PEND_MAX_FRAMES 256
#define PEND_MAX_BYTES  (2u << 20)

struct pend {
    struct pend *next;
    size_t len;
    uint8_t data[];
};

struct net {
    uint8_t mac[6];
    uint16_t mtu;
    struct net_backend be;
    struct pend *head, *tail;
    unsigned npend;
    size_t pend_bytes;
    struct virtio_net_stats st;
    struct queue_chain first, chain; /* too big for the stack */
    uint16_t heads[QUEUE_MAX_SIZE];  /* the chains one received frame fills */
    uint32_t lens[QUEUE_MAX_SIZE];
    uint8_t frame[HDR_LEN + FRAME_MAX];
};

static void pend_clear(struct net *n)
{
    while (n->head) {
        struct pend *p = n->head;
        n->head = p->next;
        free(p);
    }
    n->tail = NULL;
    n->npend = 0;
    n->pend_bytes = 0;
}

static void pend_pop(struct net *n)
{
    struct pend *p = n->head;
    n->head = p->next;
    if (!n->head)
        n->tail = NULL;
    n->npend--;
    n->pend_bytes -= p->len;
    free(p);
}

/* Places the oldest waiting frame into receive buffers: one chain, or with mergeable buffers
   as many as it takes (the header's num_buffers says how many). Returns 1 when the frame was
   delivered, 0 when it has to wait for more buffers (nothing consumed), -1 when the device
   failed or the frame can never fit (dropped). */
static int rx_one(struct virtio_dev *d, struct net *n, const struct pend *p)
{
    struct virtqueue *q = &d->vq[RXQ];
    bool mrg = d->drv_features & (1ULL << VIRTIO_NET_F_MRG_RXBUF);
    uint64_t need = HDR_LEN + p->len, done = 0;
    unsigned k = 0;
    while (done < need) {
        struct queue_chain *c = k ? &n->chain : &n->first;
        int rc = queue_pop(d, q, c, RX_CHAIN_MAX);
        if (rc < 0)
            return -1;
        if (rc == 0 && k == 0)
            return 0; /* no buffer at all yet */
        if (rc == 0 || (k && !mrg)) {
            if (rc)
                k++;
            q->last_avail -= (uint16_t)k; /* give them all back: the frame waits */
            /* A frame larger than every buffer the ring can hold will never fit. */
            if (!mrg || k >= q->num) {
                n->st.rx_dropped++;
                return -1;
            }
            return 0;
        }
        if (c->nr) {
            virtio_mmio_fail(d, "receive chain with %u device-readable segments", c->nr);
            return -1;
        }
        if (k == 0 && c->wlen < HDR_LEN) {
            virtio_mmio_fail(d, "receive chain of %llu bytes: no room for the header",
                             (unsigned long long)c->wlen);
            return -1;
        }
        uint64_t take = c->wlen < need - done ? c->wlen : need - done;
        if (k == 0)
            queue_chain_write(c, HDR_LEN, p->data, take - HDR_LEN);
        else
            queue_chain_write(c, 0, p->data + done - HDR_LEN, take);
        n->heads[k] = c->head;
        n->lens[k] = (uint32_t)take;
        k++;
        done += take;
    }
    struct virtio_net_hdr_v1 h = {.gso_type = VIRTIO_NET_HDR_GSO_NONE, .num_buffers = k};
    queue_chain_write(&n->first, 0, &h, HDR_LEN);
    for (unsigned i = 0; i < k; i++)
        queue_push(q, n->heads[i], n->lens[i]);
    n->st.rx_frames++;
    n->st.rx_bytes += p->len;
    return 1;
}

/* Copies waiting frames into the receive buffers the driver posted, oldest first. */
static void rx_flush(struct virtio_dev *d, struct net *n)
{
    bool pushed = false;
    while (n->head && virtio_mmio_queue_live(d, RXQ)) {
        int r = rx_one(d, n, n->head);
        if (r == 0 || d->failed)
            break;
        pushed |= r > 0;
        pend_pop(n);
    }
    if (pushed)
        virtio_mmio_signal_used(d);
}

static void deliver(struct virtio_dev *d, struct net *n, const uint8_t *frame, size_t len)
{
    if (len < 14 || len > FRAME_MAX || n->npend >= PEND_MAX_FRAMES ||
        n->pend_bytes + len > PEND_MAX_BYTES || !(d->status & VIRTIO_CONFIG_S_DRIVER_OK) ||
        d->failed) {
        n->st.rx_dropped++;
        return;
    }
    struct pend *p = malloc(sizeof(*p) + len);
    if (!p) {
        n->st.rx_dropped++;
        return;
    }
    p->next = NULL;
    p->len = len;
    memcpy(p->data, frame, len);
    if (n->tail)
        n->tail->next = p;
    else
        n->head = p;
    n->tail = p;
    n->npend++;
    n->pend_bytes += len;
    rx_flush(d, n);
}

void virtio_net_receive(struct virtio_dev *d, const uint8_t *frame, size_t len)
{
    deliver(d, d->priv, frame, len);
}

static void tx_process(struct virtio_dev *d, struct net *n)
{
    struct virtqueue *q = &d->vq[TXQ];
    unsigned done = 0;
    int rc;
    while ((rc = queue_pop(d, q, &n->chain, HDR_LEN + FRAME_MAX)) > 0) {
        if (n->chain.nw || n->chain.rlen < HDR_LEN) {
            virtio_mmio_fail(d, "transmit chain of %u writable segments and %llu bytes",
                             n->chain.nw, (unsigned long long)n->chain.rlen);
            return;
        }
        size_t len = queue_chain_read(&n->chain, HDR_LEN, n->frame, FRAME_MAX);
        queue_push(q, n->chain.head, 0);
        if (len < 14) {
            n->st.tx_dropped++;
        } else {
            n->st.tx_frames++;
            n->st.tx_bytes += len;
            n->be.send(n->be.ctx, n->frame, len);
        }
        if (d->failed)
            return;
        if (++done >= QUEUE_MAX_SIZE && virtio_mmio_defer(d, TXQ))
            break;
    }
    if (n->be.flush)
        n->be.flush(n->be.ctx);
    if (rc >= 0)
        virtio_mmio_signal_used(d);
}

static void net_notify(struct virtio_dev *d, unsigned qi)
{
    struct net *n = d->priv;
    if (qi == TXQ)
        tx_process(d, n);
    else
        rx_flush(d, n); /* new receive buffers */
}

static void net_reset(struct virtio_dev *d)
{
    pend_clear(d->priv);
}

static void net_config_read(struct virtio_dev *d, uint64_t off, uint8_t *data, uint32_t len)
{
    struct net *n = d->priv;
    struct virtio_net_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    memcpy(cfg.mac, n->mac, 6);
    cfg.status = VIRTIO_NET_S_LINK_UP;
    cfg.mtu = n->mtu;
    for (uint32_t i = 0; i < len; i++)
        data[i] = off + i < sizeof(cfg) ? ((uint8_t *)&cfg)[off + i] : 0;
}

static void net_destroy(struct virtio_dev *d)
{
    struct net *n = d->priv;
    if (n)
        pend_clear(n);
    free(n);
}

static const struct virtio_devops net_ops = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .features = (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS) |
                (1ULL << VIRTIO_NET_F_MTU) | (1ULL << VIRTIO_NET_F_MRG_RXBUF),
    .nqueues = 2,
    .config_read = net_config_read,
    .queue_notify = net_notify,
    .reset = net_reset,
    .destroy = net_destroy,
};

int virtio_net_create(struct virtio_dev **out, const struct devhost *host, const uint8_t mac[6],
                      unsigned mtu, const struct net_backend *be, uint64_t mmio_base, uint32_t gsi,
                      char *err, size_t errlen)
{
    *out = NULL;
    if (!be || !be->send || mtu < 576 || mtu > FRAME_MAX - 14) {
        snprintf(err, errlen, "virtio-net: no backend, or an MTU of %u", mtu);
        return SBX_EINVAL;
    }
    struct net *n = calloc(1, sizeof(*n));
    if (!n) {
        snprintf(err, errlen, "virtio-net: out of memory");
        return SBX_ENOMEM;
    }
    memcpy(n->mac, mac, 6);
    n->mtu = (uint16_t)mtu;
    n->be = *be;
    int rc = virtio_mmio_create(out, host, &net_ops, mmio_base, gsi, err, errlen);
    if (rc < 0) {
        free(n);
        return rc;
    }
    (*out)->priv = n;
    (*out)->vq[RXQ].name = "rx";
    (*out)->vq[TXQ].name = "tx";
    return 0;
}

void virtio_net_stats(struct virtio_dev *d, struct virtio_net_stats *out)
{
    pthread_mutex_lock(&d->lock);
    *out = ((struct net *)d->priv)->st;
    pthread_mutex_unlock(&d->lock);
}
