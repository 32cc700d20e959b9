// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: split-virtqueue walks and virtio-blk request parsing over hostile rings. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/virtio_ring.h>

#include "fuzz_virtio.h"

/*
 * Input: a 5-byte header, then bytes copied into guest RAM from gpa 0.
 *   [0]    queue size: 1 << (b % 9), or the raw value b & 0x7f when bit 7 is set
 *   [1]    bit 0: read-only disk (else ephemeral overlay); bits 1-2: notifies - 1;
 *          bit 3: clamp descriptor addresses into RAM (reaches request parsing more often)
 *   [2..4] avail->idx increments applied before the 2nd, 3rd and 4th notify
 * Guest RAM: descriptor table at 0x0000, avail ring at 0x1000, used ring at 0x2000, and
 * request headers / data / status bytes wherever the descriptors point.
 */
#define HDR_BYTES 5
#define DESC_GPA  0x0000u
#define AVAIL_GPA 0x1000u
#define USED_GPA  0x2000u
#define DISK_SIZE (64u * 1024)

static struct fuzz_vm vm;
static char disk_path[] = "/tmp/sbx-fuzz-disk-XXXXXX";

static void remove_disk(void)
{
    unlink(disk_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static uint8_t buf[DISK_SIZE];
    int fd = mkstemp(disk_path);

    (void)argc;
    (void)argv;
    if (fd < 0)
        abort();
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + i / 4096);
    if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
        abort();
    close(fd);
    atexit(remove_disk);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct blk_config cfg = {.path = disk_path, .serial = "fuzz-serial"};
    struct virtio_dev *d = NULL;
    char err[256];
    uint32_t num;
    unsigned notifies;

    if (size < HDR_BYTES)
        return 0;
    num = (data[0] & 0x80) ? (data[0] & 0x7fu) : 1u << (data[0] % 9);
    cfg.mode = (data[1] & 1) ? BLK_RO : BLK_EPHEMERAL;
    notifies = 1 + ((data[1] >> 1) & 3);

    fuzz_vm_reset(&vm);
    size_t n = size - HDR_BYTES < FUZZ_RAM_SIZE ? size - HDR_BYTES : FUZZ_RAM_SIZE;
    memcpy(vm.ram, data + HDR_BYTES, n);
    if (data[1] & 8) {
        struct vring_desc *desc = (struct vring_desc *)(vm.ram + DESC_GPA);
        for (unsigned i = 0; i < 256; i++) {
            desc[i].addr &= FUZZ_RAM_SIZE - 1;
            desc[i].len &= 0x3fff;
        }
    }

    if (virtio_blk_create(&d, &vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)) != 0)
        abort();
    fuzz_negotiate(d);
    fuzz_queue_setup(d, 0, num, DESC_GPA, AVAIL_GPA, USED_GPA);
    fuzz_driver_ok(d);
    /* queue_setup zeroes the used ring header only; the avail ring stays as the input left it. */
    struct vring_avail *avail = (struct vring_avail *)(vm.ram + AVAIL_GPA);
    for (unsigned i = 0; i < notifies; i++) {
        if (i > 0)
            avail->idx = (uint16_t)(avail->idx + data[1 + i]);
        fuzz_write32(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        fuzz_loop(&vm);
    }
    (void)fuzz_read32(d, VIRTIO_MMIO_INTERRUPT_STATUS);
    if (getenv("SBX_FUZZ_DEBUG")) { /* to check what a corpus file reaches */
        struct vring_used *used = (struct vring_used *)(vm.ram + USED_GPA);
        fprintf(stderr, "fuzz_virtqueue: num %u, used idx %u, fails %d\n", num, used->idx,
                vm.fails);
    }
    virtio_dev_destroy(d);
    return 0;
}
