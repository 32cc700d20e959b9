// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: virtio-net's transmit and (merged) receive paths over hostile rings. */
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/virtio_ring.h>

#include "fuzz_virtio.h"
#include "virtio/mmio.h"

/*
 * Input: an 8-byte header, then bytes copied into guest RAM from gpa 0.
 *   [0]    rx queue size: 1 << (b % 9), or the raw value b & 0x7f when bit 7 is set
 *   [1]    tx queue size, the same way
 *   [2]    bits 0-1: notifies - 1; bit 2: clamp descriptor addresses and lengths into RAM;
 *          bit 3: the backend echoes every transmitted frame back at once
 *   [3..5] avail->idx increments of both queues before the 2nd, 3rd and 4th notify
 *   [6..7] frames the "host" delivers before each notify, and their size in 64-byte units
 * Guest RAM: rx rings at 0x0000 (descriptors), 0x1000 (avail), 0x2000 (used); tx rings at
 * 0x3000, 0x4000, 0x5000; buffers wherever the descriptors point.
 */
#define HDR_BYTES 8

static struct fuzz_vm vm;
static struct virtio_dev *dev;
static bool echo;
static uint8_t frame[4096];

static void be_send(void *ctx, const uint8_t *f, size_t len)
{
    (void)ctx;
    if (echo)
        virtio_net_receive(dev, f, len); /* inside the hook: lock held */
}

static uint32_t qsize(uint8_t b)
{
    return (b & 0x80) ? (b & 0x7fu) : 1u << (b % 9);
}

static void clamp(unsigned base)
{
    struct vring_desc *desc = (struct vring_desc *)(vm.ram + base);
    for (unsigned i = 0; i < 256; i++) {
        desc[i].addr &= FUZZ_RAM_SIZE - 1;
        desc[i].len &= 0x3fff;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HDR_BYTES)
        return 0;
    fuzz_vm_reset(&vm);
    size_t n = size - HDR_BYTES < FUZZ_RAM_SIZE ? size - HDR_BYTES : FUZZ_RAM_SIZE;
    memcpy(vm.ram, data + HDR_BYTES, n);
    if (data[2] & 4) {
        clamp(0x0000);
        clamp(0x3000);
    }
    echo = data[2] & 8;
    const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
    struct net_backend be = {.send = be_send};
    char err[256];
    if (virtio_net_create(&dev, &vm.host, mac, 65520, &be, 0xd0000000, 5, err, sizeof(err)) != 0)
        abort();
    fuzz_negotiate(dev);
    fuzz_queue_setup(dev, 0, qsize(data[0]), 0x0000, 0x1000, 0x2000);
    fuzz_queue_setup(dev, 1, qsize(data[1]), 0x3000, 0x4000, 0x5000);
    fuzz_driver_ok(dev);
    struct vring_avail *rx = (struct vring_avail *)(vm.ram + 0x1000);
    struct vring_avail *tx = (struct vring_avail *)(vm.ram + 0x4000);
    unsigned notifies = 1 + (data[2] & 3);
    size_t flen = 14 + 64u * (data[7] % 64);
    for (size_t i = 0; i < flen && i < sizeof(frame); i++)
        frame[i] = (uint8_t)(i * 13 + data[7]);
    for (unsigned i = 0; i < notifies; i++) {
        if (i > 0) {
            rx->idx = (uint16_t)(rx->idx + data[2 + i]);
            tx->idx = (uint16_t)(tx->idx + data[2 + i]);
        }
        pthread_mutex_lock(&dev->lock);
        for (unsigned k = 0; k < (data[6] & 15u); k++)
            virtio_net_receive(dev, frame, flen);
        pthread_mutex_unlock(&dev->lock);
        fuzz_write32(dev, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        fuzz_write32(dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        fuzz_loop(&vm);
    }
    (void)fuzz_read32(dev, VIRTIO_MMIO_INTERRUPT_STATUS);
    struct virtio_net_stats st;
    virtio_net_stats(dev, &st);
    virtio_dev_destroy(dev);
    dev = NULL;
    return 0;
}
