// SPDX-License-Identifier: Apache-2.0
/* Unit-test helpers: fake guest RAM, a devhost recording failures, and a tiny virtio driver. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include "fake_virtio.h"

static void on_fail(void *ctx, const char *msg)
{
    struct fake_vm *vm = ctx;

    vm->fails++;
    snprintf(vm->last_fail, sizeof(vm->last_fail), "%s", msg);
}

static void on_irq(void *ctx, uint32_t gsi)
{
    struct fake_vm *vm = ctx;

    vm->irqs++;
}

void fake_vm_init(struct fake_vm *vm)
{
    memset(vm, 0, sizeof(*vm));
    vm->ram = calloc(1, FAKE_RAM_SIZE);
    assert_non_null(vm->ram);
    vm->mem.lo = vm->ram;
    vm->mem.lo_size = FAKE_RAM_SIZE;
    vm->base = event_base_new();
    assert_non_null(vm->base);
    vm->host.mem = &vm->mem;
    vm->host.evbase = vm->base;
    vm->host.vm_fd = -1;
    vm->host.irq_raise = on_irq;
    vm->host.fail = on_fail;
    vm->host.ctx = vm;
    vm->next_gpa = 0x1000;
}

void fake_vm_free(struct fake_vm *vm)
{
    event_base_free(vm->base);
    free(vm->ram);
}

uint64_t fake_alloc(struct fake_vm *vm, uint64_t size, uint64_t align)
{
    uint64_t gpa = (vm->next_gpa + align - 1) & ~(align - 1);

    assert_true(gpa + size <= FAKE_RAM_SIZE);
    vm->next_gpa = gpa + size;
    return gpa;
}

void *fake_ptr(struct fake_vm *vm, uint64_t gpa)
{
    return vm->ram + gpa;
}

uint32_t fake_read32(struct virtio_dev *d, uint64_t off)
{
    uint32_t v;

    virtio_mmio_access(d, off, (uint8_t *)&v, 4, false);
    return v;
}

void fake_write32(struct virtio_dev *d, uint64_t off, uint32_t val)
{
    virtio_mmio_access(d, off, (uint8_t *)&val, 4, true);
}

uint32_t fake_negotiate(struct virtio_dev *d, uint64_t features)
{
    fake_write32(d, VIRTIO_MMIO_STATUS, 0);
    fake_write32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    fake_write32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    fake_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    fake_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
    fake_write32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    fake_write32(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
    fake_write32(d, VIRTIO_MMIO_STATUS,
                 VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                     VIRTIO_CONFIG_S_FEATURES_OK);
    return fake_read32(d, VIRTIO_MMIO_STATUS);
}

void fake_queue_setup(struct fake_vm *vm, struct virtio_dev *d, struct fake_queue *fq, unsigned q,
                      uint16_t num)
{
    memset(fq, 0, sizeof(*fq));
    fq->index = q;
    fq->num = num;
    fq->desc = fake_alloc(vm, 16u * num, 16);
    fq->avail = fake_alloc(vm, 6u + 2u * num, 2);
    fq->used = fake_alloc(vm, 6u + 8u * num, 4);
    fake_write32(d, VIRTIO_MMIO_QUEUE_SEL, q);
    fake_write32(d, VIRTIO_MMIO_QUEUE_NUM, num);
    fake_write32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)fq->desc);
    fake_write32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(fq->desc >> 32));
    fake_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)fq->avail);
    fake_write32(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(fq->avail >> 32));
    fake_write32(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)fq->used);
    fake_write32(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(fq->used >> 32));
    fake_write32(d, VIRTIO_MMIO_QUEUE_READY, 1);
}

void fake_driver_ok(struct virtio_dev *d)
{
    fake_write32(d, VIRTIO_MMIO_STATUS,
                 VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                     VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
}

void fake_device_up(struct fake_vm *vm, struct virtio_dev *d, struct fake_queue *fq, unsigned nq,
                    uint16_t num)
{
    uint64_t features;

    fake_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    features = fake_read32(d, VIRTIO_MMIO_DEVICE_FEATURES);
    fake_write32(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    features |= (uint64_t)fake_read32(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    assert_true(fake_negotiate(d, features) & VIRTIO_CONFIG_S_FEATURES_OK);
    for (unsigned q = 0; q < nq; q++) {
        fake_queue_setup(vm, d, &fq[q], q, num);
        assert_int_equal(fake_read32(d, VIRTIO_MMIO_QUEUE_READY), 1);
    }
    fake_driver_ok(d);
    assert_int_equal(vm->fails, 0);
}

uint16_t fake_queue_add(struct fake_vm *vm, struct fake_queue *fq, const struct fake_buf *b,
                        unsigned n)
{
    struct vring_desc *desc = fake_ptr(vm, fq->desc);
    struct vring_avail *avail = fake_ptr(vm, fq->avail);
    uint16_t head = fq->next_desc % fq->num;

    for (unsigned i = 0; i < n; i++) {
        uint16_t idx = (uint16_t)((head + i) % fq->num);
        desc[idx].addr = b[i].gpa;
        desc[idx].len = b[i].len;
        desc[idx].flags =
            (uint16_t)((b[i].write ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
        desc[idx].next = (uint16_t)((idx + 1) % fq->num);
    }
    fq->next_desc = (uint16_t)((head + n) % fq->num);
    avail->ring[fq->avail_idx % fq->num] = head;
    fq->avail_idx++;
    __atomic_store_n(&avail->idx, fq->avail_idx, __ATOMIC_RELEASE);
    return head;
}

void fake_notify(struct virtio_dev *d, unsigned q)
{
    fake_write32(d, VIRTIO_MMIO_QUEUE_NOTIFY, q);
}

bool fake_queue_used(struct fake_vm *vm, struct fake_queue *fq, uint32_t *id, uint32_t *len)
{
    struct vring_used *used = fake_ptr(vm, fq->used);

    if (__atomic_load_n(&used->idx, __ATOMIC_ACQUIRE) == fq->used_seen)
        return false;
    *id = used->ring[fq->used_seen % fq->num].id;
    *len = used->ring[fq->used_seen % fq->num].len;
    fq->used_seen++;
    return true;
}

void fake_loop(struct fake_vm *vm)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(vm->base, EVLOOP_NONBLOCK);
}

uint8_t fake_pattern(uint64_t i)
{
    return (uint8_t)(i * 7 + i / 4096);
}

char *fake_tempfile(size_t size)
{
    char *path = strdup("/tmp/sbx-test-disk-XXXXXX");
    uint8_t *buf = malloc(size);
    int fd;

    assert_non_null(path);
    assert_non_null(buf);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    for (size_t i = 0; i < size; i++)
        buf[i] = fake_pattern(i);
    assert_int_equal(write(fd, buf, size), (ssize_t)size);
    close(fd);
    free(buf);
    return path;
}

void fake_disk_release(struct fake_vm *vm, struct virtio_dev *d, char *path)
{
    virtio_dev_destroy(d);
    unlink(path);
    free(path);
    fake_vm_free(vm);
}
