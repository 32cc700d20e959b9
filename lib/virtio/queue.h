// SPDX-License-Identifier: Apache-2.0
/* Split virtqueues: ring validation and bounded descriptor chain walks over hostile memory. */
#ifndef SBX_VIRTIO_QUEUE_H
#define SBX_VIRTIO_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <linux/virtio_ring.h>

#include "vmm/guestmem.h"

struct virtio_dev;

#define QUEUE_MAX_SIZE 256 /* QueueNumMax of every queue; also bounds every chain */

/* One split virtqueue. The ring pointers are only valid while `ready`. */
struct virtqueue {
    unsigned index;
    const char *name; /* "requests", "rx"...: used in failure messages */

    /* Driver-written configuration. */
    uint32_t num;
    bool ready;
    uint64_t desc_gpa, avail_gpa, used_gpa;

    /* Resolved when the driver sets QueueReady, after validation. */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;

    uint16_t last_avail; /* next avail ring slot the device consumes */
    uint16_t used_idx;   /* next used ring slot the device fills */
    bool pushed;         /* used entries published since the last interrupt */
};

/* A guest buffer segment: host pointer (through guestmem_ptr) and length. */
struct queue_seg {
    uint8_t *ptr;
    uint32_t len;
};

/* One popped descriptor chain: nr device-readable segments, then nw device-writable ones. */
struct queue_chain {
    uint16_t head;
    unsigned nr, nw;
    uint64_t rlen, wlen; /* total bytes readable / writable */
    struct queue_seg seg[QUEUE_MAX_SIZE];
};

/* Forgets ring addresses and indices (device reset, or QueueReady cleared). */
void queue_reset(struct virtqueue *q);

/* Validates the configured size and ring addresses (power of two <= QUEUE_MAX_SIZE, aligned,
   inside guest RAM) and resolves the ring pointers. Returns 0, or -1 after reporting the
   violation through virtio_mmio_fail(). */
int queue_setup(struct virtio_dev *d, struct virtqueue *q);

/*
 * Takes the next available chain. Returns 1 with *c filled, 0 if the driver has not made
 * anything available, or -1 if the driver violated the contract (reported via
 * virtio_mmio_fail(); the caller must stop processing). `max_bytes` caps the chain's total
 * length.
 */
int queue_pop(struct virtio_dev *d, struct virtqueue *q, struct queue_chain *c, uint32_t max_bytes);

/* After queue_setup, for a restored device: continues at the saved indices (and puts the
   used index back into the used ring, which queue_setup reset). */
void queue_set_indices(struct virtqueue *q, uint16_t last_avail, uint16_t used_idx);

/* Gives back the chain just popped (nothing was written to it), so a later pop returns it
   again. Only valid directly after a successful queue_pop() on q. */
void queue_unpop(struct virtqueue *q);

/* True if the driver made a chain available that has not been popped yet (no validation). */
bool queue_has_avail(const struct virtqueue *q);

/* Publishes chain `head` as used with `len` bytes written by the device. */
void queue_push(struct virtqueue *q, uint16_t head, uint32_t len);

/* Whether the driver wants an interrupt for the entries pushed so far (VRING_AVAIL_F_NO_
   INTERRUPT); clears q->pushed. */
bool queue_should_signal(struct virtqueue *q);

/* Copies up to len bytes from the chain's readable segments starting at byte `off`. Returns
   the number of bytes copied. */
size_t queue_chain_read(const struct queue_chain *c, uint64_t off, void *dst, size_t len);

/* Copies up to len bytes into the chain's writable segments starting at byte `off`. */
size_t queue_chain_write(const struct queue_chain *c, uint64_t off, const void *src, size_t len);

/* Describes [off, off + len) of the readable (writable = false) or writable segments as at
   most `max` iovecs. Returns the iovec count; *got receives the bytes covered. */
int queue_chain_iov(const struct queue_chain *c, bool writable, uint64_t off, uint64_t len,
                    struct iovec *iov, int max, uint64_t *got);

#endif
