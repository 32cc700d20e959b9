// SPDX-License-Identifier: Apache-2.0
/* Split virtqueues: ring validation and bounded descriptor chain walks over hostile memory. */
#include <string.h>

#include "virtio/mmio.h"
#include "virtio/queue.h"

/*
 * The driver writes the rings concurrently from vCPUs. Every guest field is read exactly once
 * into a local (relaxed atomic load, so the compiler cannot re-read it after validation), and
 * the ordering follows the spec: read avail->idx, then an acquire fence before the ring entries
 * and descriptors it covers; used entries are written before a release fence and used->idx.
 */
#define LOAD(p)     __atomic_load_n(&(p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELAXED)

void queue_reset(struct virtqueue *q)
{
    q->num = QUEUE_MAX_SIZE;
    q->ready = false;
    q->desc_gpa = q->avail_gpa = q->used_gpa = 0;
    q->desc = NULL;
    q->avail = NULL;
    q->used = NULL;
    q->last_avail = q->used_idx = 0;
    q->pushed = false;
}

/* Resolves one ring, checking alignment and that all of it is guest RAM. */
static void *ring_ptr(struct virtio_dev *d, struct virtqueue *q, const char *what, uint64_t gpa,
                      uint64_t size, uint64_t align)
{
    void *p;

    if (gpa & (align - 1)) {
        virtio_mmio_fail(d, "queue %s (%u): %s ring at gpa 0x%llx is not %llu-byte aligned",
                         q->name, q->index, what, (unsigned long long)gpa,
                         (unsigned long long)align);
        return NULL;
    }
    p = guestmem_ptr(d->host.mem, gpa, size);
    if (!p)
        virtio_mmio_fail(d, "queue %s (%u): %s ring (gpa 0x%llx, %llu bytes) is outside guest RAM",
                         q->name, q->index, what, (unsigned long long)gpa,
                         (unsigned long long)size);
    return p;
}

int queue_setup(struct virtio_dev *d, struct virtqueue *q)
{
    uint64_t n = q->num;

    if (n == 0 || n > QUEUE_MAX_SIZE || (n & (n - 1))) {
        virtio_mmio_fail(d, "queue %s (%u): size %llu is not a power of two in [1, %u]", q->name,
                         q->index, (unsigned long long)n, QUEUE_MAX_SIZE);
        return -1;
    }
    /* Without VIRTIO_RING_F_EVENT_IDX (not offered) the rings have no used_event /
       avail_event tails, so they are not part of the checked ranges. */
    q->desc = ring_ptr(d, q, "descriptor", q->desc_gpa, 16 * n, VRING_DESC_ALIGN_SIZE);
    if (!q->desc)
        return -1;
    q->avail = ring_ptr(d, q, "available", q->avail_gpa, 4 + 2 * n, VRING_AVAIL_ALIGN_SIZE);
    if (!q->avail)
        return -1;
    q->used = ring_ptr(d, q, "used", q->used_gpa, 4 + 8 * n, VRING_USED_ALIGN_SIZE);
    if (!q->used)
        return -1;
    q->last_avail = 0;
    q->used_idx = 0;
    STORE(q->used->flags, 0);
    STORE(q->used->idx, 0);
    return 0;
}

void queue_set_indices(struct virtqueue *q, uint16_t last_avail, uint16_t used_idx)
{
    q->last_avail = last_avail;
    q->used_idx = used_idx;
    STORE(q->used->idx, used_idx); /* queue_setup zeroed it */
}

bool queue_has_avail(const struct virtqueue *q)
{
    return q->avail && LOAD(q->avail->idx) != q->last_avail;
}

int queue_pop(struct virtio_dev *d, struct virtqueue *q, struct queue_chain *c, uint32_t max_bytes)
{
    uint16_t avail_idx = LOAD(q->avail->idx);
    uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
    uint16_t head, i;
    unsigned count = 0;
    bool seen_write = false;

    if (pending == 0)
        return 0;
    if (pending > q->num) {
        virtio_mmio_fail(d,
                         "queue %s (%u): available index jumped from %u to %u, more than the "
                         "queue size %u",
                         q->name, q->index, q->last_avail, avail_idx, q->num);
        return -1;
    }
    __atomic_thread_fence(__ATOMIC_ACQUIRE);

    head = LOAD(q->avail->ring[q->last_avail & (q->num - 1)]);
    if (head >= q->num) {
        virtio_mmio_fail(d, "queue %s (%u): chain head %u is not below the queue size %u", q->name,
                         q->index, head, q->num);
        return -1;
    }
    c->head = head;
    c->nr = c->nw = 0;
    c->rlen = c->wlen = 0;

    /* A chain can use each descriptor at most once, so more than `num` links is a loop. */
    for (i = head;; count++) {
        const struct vring_desc *vd = &q->desc[i];
        uint64_t addr = LOAD(vd->addr);
        uint32_t len = LOAD(vd->len);
        uint16_t flags = LOAD(vd->flags);
        uint16_t next = LOAD(vd->next);
        uint8_t *p;

        if (count >= q->num) {
            virtio_mmio_fail(d,
                             "queue %s (%u): descriptor chain from head %u is longer than the "
                             "queue size %u (a loop?)",
                             q->name, q->index, head, q->num);
            return -1;
        }
        if (flags & VRING_DESC_F_INDIRECT) {
            /* Never offered (VIRTIO_RING_F_INDIRECT_DESC), so never valid. */
            virtio_mmio_fail(d, "queue %s (%u): descriptor %u is indirect, not negotiated", q->name,
                             q->index, i);
            return -1;
        }
        p = guestmem_ptr(d->host.mem, addr, len);
        if (!p) {
            virtio_mmio_fail(d,
                             "queue %s (%u): descriptor %u points outside guest RAM (gpa 0x%llx, "
                             "len %u)",
                             q->name, q->index, i, (unsigned long long)addr, len);
            return -1;
        }
        if (c->rlen + c->wlen + len > max_bytes) {
            virtio_mmio_fail(d,
                             "queue %s (%u): descriptor chain from head %u exceeds the %u-byte "
                             "request cap",
                             q->name, q->index, head, max_bytes);
            return -1;
        }
        if (flags & VRING_DESC_F_WRITE) {
            seen_write = true;
            c->wlen += len;
        } else {
            if (seen_write) {
                virtio_mmio_fail(d,
                                 "queue %s (%u): descriptor %u is device-readable after a "
                                 "device-writable one",
                                 q->name, q->index, i);
                return -1;
            }
            c->rlen += len;
        }
        if (len) {
            c->seg[c->nr + c->nw].ptr = p;
            c->seg[c->nr + c->nw].len = len;
            if (flags & VRING_DESC_F_WRITE)
                c->nw++;
            else
                c->nr++;
        }
        if (!(flags & VRING_DESC_F_NEXT))
            break;
        if (next >= q->num) {
            virtio_mmio_fail(d,
                             "queue %s (%u): descriptor %u links to %u, not below the queue size "
                             "%u",
                             q->name, q->index, i, next, q->num);
            return -1;
        }
        i = next;
    }
    q->last_avail++;
    return 1;
}

void queue_unpop(struct virtqueue *q)
{
    q->last_avail--;
}

void queue_push(struct virtqueue *q, uint16_t head, uint32_t len)
{
    struct vring_used_elem *e = &q->used->ring[q->used_idx & (q->num - 1)];

    STORE(e->id, head);
    STORE(e->len, len);
    q->used_idx++;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    STORE(q->used->idx, q->used_idx);
    q->pushed = true;
}

bool queue_should_signal(struct virtqueue *q)
{
    bool was = q->pushed;

    q->pushed = false;
    if (!was)
        return false;
    /* Order the used->idx store before reading the driver's suppression flag, or an interrupt
       the driver re-enabled in between could be lost. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return !(LOAD(q->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
}

/* Walks segments [first, first + n) from byte `off`, copying `len` bytes in or out. */
static size_t chain_copy(const struct queue_chain *c, unsigned first, unsigned n, uint64_t off,
                         uint8_t *buf, size_t len, bool to_guest)
{
    size_t done = 0;

    for (unsigned s = first; s < first + n && done < len; s++) {
        const struct queue_seg *sg = &c->seg[s];
        size_t chunk;

        if (off >= sg->len) {
            off -= sg->len;
            continue;
        }
        chunk = sg->len - off;
        if (chunk > len - done)
            chunk = len - done;
        if (to_guest)
            memcpy(sg->ptr + off, buf + done, chunk);
        else
            memcpy(buf + done, sg->ptr + off, chunk);
        done += chunk;
        off = 0;
    }
    return done;
}

size_t queue_chain_read(const struct queue_chain *c, uint64_t off, void *dst, size_t len)
{
    return chain_copy(c, 0, c->nr, off, dst, len, false);
}

size_t queue_chain_write(const struct queue_chain *c, uint64_t off, const void *src, size_t len)
{
    return chain_copy(c, c->nr, c->nw, off, (uint8_t *)src, len, true);
}

int queue_chain_iov(const struct queue_chain *c, bool writable, uint64_t off, uint64_t len,
                    struct iovec *iov, int max, uint64_t *got)
{
    unsigned first = writable ? c->nr : 0, n = writable ? c->nw : c->nr;
    int cnt = 0;

    *got = 0;
    for (unsigned s = first; s < first + n && *got < len && cnt < max; s++) {
        const struct queue_seg *sg = &c->seg[s];
        uint64_t chunk;

        if (off >= sg->len) {
            off -= sg->len;
            continue;
        }
        chunk = sg->len - off;
        if (chunk > len - *got)
            chunk = len - *got;
        iov[cnt].iov_base = sg->ptr + off;
        iov[cnt].iov_len = chunk;
        cnt++;
        *got += chunk;
        off = 0;
    }
    return cnt;
}
