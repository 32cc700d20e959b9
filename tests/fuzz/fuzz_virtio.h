// SPDX-License-Identifier: Apache-2.0
/* Fuzz-target helpers: a small fake guest RAM, a devhost that records failures, and a driver. */
#ifndef SBX_FUZZ_VIRTIO_H
#define SBX_FUZZ_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include "virtio/virtio.h"

#define FUZZ_RAM_SIZE (64u * 1024)

struct fuzz_vm {
    uint8_t *ram;
    struct guestmem mem;
    struct devhost host;
    struct event_base *base;
    int fails;
};

static inline void fuzz_on_fail(void *ctx, const char *msg)
{
    struct fuzz_vm *vm = ctx;

    (void)msg;
    vm->fails++;
    if (vm->fails > 1)
        abort(); /* the contract: fail() is called at most once per device */
}

static inline void fuzz_on_irq(void *ctx, uint32_t gsi)
{
    (void)ctx;
    (void)gsi;
}

/* RAM and the event base are allocated once; every input starts from zeroed RAM. */
static inline void fuzz_vm_reset(struct fuzz_vm *vm)
{
    if (!vm->ram) {
        vm->ram = malloc(FUZZ_RAM_SIZE);
        vm->base = event_base_new();
        if (!vm->ram || !vm->base)
            abort();
        vm->mem.lo = vm->ram;
        vm->mem.lo_size = FUZZ_RAM_SIZE;
        vm->host.mem = &vm->mem;
        vm->host.evbase = vm->base;
        vm->host.vm_fd = -1;
        vm->host.irq_raise = fuzz_on_irq;
        vm->host.fail = fuzz_on_fail;
        vm->host.ctx = vm;
    }
    memset(vm->ram, 0, FUZZ_RAM_SIZE);
    vm->fails = 0;
}

static inline uint32_t fuzz_read32(struct virtio_dev *d, uint64_t off)
{
    uint32_t v = 0;

    virtio_mmio_access(d, off, (uint8_t *)&v, 4, false);
    return v;
}

static inline void fuzz_write32(struct virtio_dev *d, uint64_t off, uint32_t val)
{
    virtio_mmio_access(d, off, (uint8_t *)&val, 4, true);
}

/* Negotiates every offered feature and sets FEATURES_OK. */
static inline void fuzz_negotiate(struct virtio_dev *d)
{
    uint32_t s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

    fuzz_write32(d, VIRTIO_MMIO_STATUS, 0);
    fuzz_write32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    fuzz_write32(d, VIRTIO_MMIO_STATUS, s);
    for (uint32_t sel = 0; sel < 2; sel++) {
        fuzz_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        uint32_t f = fuzz_read32(d, VIRTIO_MMIO_DEVICE_FEATURES);
        fuzz_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        fuzz_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, f);
    }
    fuzz_write32(d, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_FEATURES_OK);
}

static inline void fuzz_queue_setup(struct virtio_dev *d, unsigned q, uint32_t num, uint64_t desc,
                                    uint64_t avail, uint64_t used)
{
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_SEL, q);
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_NUM, num);
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
    fuzz_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
}

static inline void fuzz_driver_ok(struct virtio_dev *d)
{
    fuzz_write32(d, VIRTIO_MMIO_STATUS,
                 VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                     VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

static inline void fuzz_loop(struct fuzz_vm *vm)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(vm->base, EVLOOP_NONBLOCK);
}

/* The driver side of one split virtqueue in the fake RAM (well-formed; for targets that fuzz
   what goes through a queue rather than the rings themselves). */
struct fuzz_queue {
    uint16_t num;
    uint64_t desc, avail, used;
    uint16_t avail_idx, used_seen, next_desc;
};

static inline void fuzz_fq_setup(struct virtio_dev *d, struct fuzz_queue *fq, unsigned q,
                                 uint16_t num, uint64_t base)
{
    memset(fq, 0, sizeof(*fq));
    fq->num = num;
    fq->desc = base;
    fq->avail = base + 16u * num;
    fq->used = (fq->avail + 6u + 2u * num + 3) & ~3ull;
    fuzz_queue_setup(d, q, num, fq->desc, fq->avail, fq->used);
}

/* Publishes a chain of n descriptors (gpa, len, write) without notifying. */
static inline void fuzz_fq_add(struct fuzz_vm *vm, struct fuzz_queue *fq, const uint64_t *gpa,
                               const uint32_t *len, const bool *write, unsigned n)
{
    struct vring_desc *desc = (struct vring_desc *)(vm->ram + fq->desc);
    struct vring_avail *avail = (struct vring_avail *)(vm->ram + fq->avail);
    uint16_t head = fq->next_desc % fq->num;

    for (unsigned i = 0; i < n; i++) {
        uint16_t idx = (uint16_t)((head + i) % fq->num);
        desc[idx].addr = gpa[i];
        desc[idx].len = len[i];
        desc[idx].flags =
            (uint16_t)((write[i] ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
        desc[idx].next = (uint16_t)((idx + 1) % fq->num);
    }
    fq->next_desc = (uint16_t)((head + n) % fq->num);
    avail->ring[fq->avail_idx % fq->num] = head;
    fq->avail_idx++;
    __atomic_store_n(&avail->idx, fq->avail_idx, __ATOMIC_RELEASE);
}

/* Pops the next used entry, if any. */
static inline bool fuzz_fq_used(struct fuzz_vm *vm, struct fuzz_queue *fq, uint32_t *id,
                                uint32_t *len)
{
    struct vring_used *used = (struct vring_used *)(vm->ram + fq->used);

    if (__atomic_load_n(&used->idx, __ATOMIC_ACQUIRE) == fq->used_seen)
        return false;
    *id = used->ring[fq->used_seen % fq->num].id;
    *len = used->ring[fq->used_seen % fq->num].len;
    fq->used_seen++;
    return true;
}

#endif
