// SPDX-License-Identifier: Apache-2.0
/* Unit-test helpers: fake guest RAM, a devhost recording failures, and a tiny virtio driver. */
#ifndef SBX_TEST_FAKE_VIRTIO_H
#define SBX_TEST_FAKE_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtio.h"

#define FAKE_RAM_SIZE (4u << 20)

struct fake_vm {
    uint8_t *ram;
    struct guestmem mem;
    struct devhost host;
    struct event_base *base;
    uint64_t next_gpa; /* bump allocator for rings and buffers */
    int fails;
    char last_fail[512];
    int irqs;
};

/* The driver side of one split virtqueue, kept in the fake guest RAM. */
struct fake_queue {
    unsigned index;
    uint16_t num;
    uint64_t desc, avail, used;
    uint16_t avail_idx; /* next avail idx the driver publishes */
    uint16_t used_seen; /* used entries consumed by the test */
    uint16_t next_desc; /* next free descriptor (round robin) */
};

struct fake_buf {
    uint64_t gpa;
    uint32_t len;
    bool write; /* device-writable */
};

void fake_vm_init(struct fake_vm *vm);
void fake_vm_free(struct fake_vm *vm);
uint64_t fake_alloc(struct fake_vm *vm, uint64_t size, uint64_t align);
void *fake_ptr(struct fake_vm *vm, uint64_t gpa);

uint32_t fake_read32(struct virtio_dev *d, uint64_t off);
void fake_write32(struct virtio_dev *d, uint64_t off, uint32_t val);

/* ACKNOWLEDGE, DRIVER, features, FEATURES_OK. Returns the status read back. */
uint32_t fake_negotiate(struct virtio_dev *d, uint64_t features);
/* Allocates rings of `num` entries and programs queue `q` (QueueReady = 1). */
void fake_queue_setup(struct fake_vm *vm, struct virtio_dev *d, struct fake_queue *fq, unsigned q,
                      uint16_t num);
void fake_driver_ok(struct virtio_dev *d);
/* Full init of a device with `nq` queues of size num (features = device features). */
void fake_device_up(struct fake_vm *vm, struct virtio_dev *d, struct fake_queue *fq, unsigned nq,
                    uint16_t num);

/* Writes a chain of descriptors and publishes it (without notifying). Returns the head. */
uint16_t fake_queue_add(struct fake_vm *vm, struct fake_queue *fq, const struct fake_buf *b,
                        unsigned n);
void fake_notify(struct virtio_dev *d, unsigned q);
/* Pops the next used entry, if any. */
bool fake_queue_used(struct fake_vm *vm, struct fake_queue *fq, uint32_t *id, uint32_t *len);

/* A temporary file of `size` bytes where byte i is (uint8_t)(i * 7 + i / 4096). Caller
   unlinks and frees the returned path. */
char *fake_tempfile(size_t size);
/* Tears down a disk-backed device fixture: the device, its temp file (unlinked, path freed)
   and the fake VM. */
void fake_disk_release(struct fake_vm *vm, struct virtio_dev *d, char *path);
uint8_t fake_pattern(uint64_t i);

/* Runs the libevent loop until nothing is immediately ready (bounded number of passes). */
void fake_loop(struct fake_vm *vm);

#endif
