// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: arbitrary virtio-mmio register sequences (any offset, width, value, order)
   against the block, vsock and net devices, with fuzzed guest RAM behind their queues. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_virtio.h"

/*
 * Input: [0] the device (% 3: block, vsock, net), [1] the number of register accesses N, then
 * N records of 7 bytes, then bytes copied into guest RAM from gpa 0 (rings and buffers for
 * whatever queue addresses the accesses set).
 *   record: [0] bit 0 write (else read), bits 1-2 width 1/2/4/8, bit 3 run the device loop
 *           after it; [1..2] offset (little endian) % 0x1100 (the window and beyond);
 *           [3..6] value (little endian; widened for 8-byte accesses).
 */
#define RECORD    7
#define DISK_SIZE (16u * 1024)

static struct fuzz_vm vm;
static char disk_path[] = "/tmp/sbx-fuzz-mmio-XXXXXX";

static void remove_disk(void)
{
    unlink(disk_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static uint8_t buf[DISK_SIZE];
    (void)argc;
    (void)argv;
    int fd = mkstemp(disk_path);
    if (fd < 0 || write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
        abort();
    close(fd);
    atexit(remove_disk);
    return 0;
}

static void net_send(void *ctx, const uint8_t *frame, size_t len)
{
    (void)ctx;
    (void)frame;
    (void)len;
}

static struct virtio_dev *make(unsigned kind)
{
    struct virtio_dev *d = NULL;
    char err[256];
    int r;
    if (kind == 0) {
        struct blk_config cfg = {.path = disk_path, .mode = BLK_EPHEMERAL, .serial = "fuzz"};
        r = virtio_blk_create(&d, &vm.host, &cfg, 0xd0000000, 5, err, sizeof(err));
    } else if (kind == 1) {
        r = virtio_vsock_create(&d, &vm.host, 3, 0xd0000000, 5, err, sizeof(err));
    } else {
        static const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
        static struct net_backend be = {.send = net_send};
        r = virtio_net_create(&d, &vm.host, mac, 1500, &be, 0xd0000000, 5, err, sizeof(err));
    }
    if (r != 0)
        abort();
    return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t n = data[1];
    if (size < 2 + n * RECORD)
        n = (size - 2) / RECORD;
    fuzz_vm_reset(&vm);
    const uint8_t *ram = data + 2 + n * RECORD;
    size_t ram_len = size - 2 - n * RECORD;
    memcpy(vm.ram, ram, ram_len < FUZZ_RAM_SIZE ? ram_len : FUZZ_RAM_SIZE);

    struct virtio_dev *d = make(data[0] % 3);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *r = data + 2 + i * RECORD;
        unsigned width = 1u << ((r[0] >> 1) & 3);
        uint64_t off = (uint64_t)(r[1] | r[2] << 8) % 0x1100;
        uint8_t val[8];
        memcpy(val, r + 3, 4);
        memcpy(val + 4, r + 3, 4);
        virtio_mmio_access(d, off, val, width, r[0] & 1);
        if (r[0] & 8)
            fuzz_loop(&vm);
    }
    fuzz_loop(&vm);
    virtio_dev_destroy(d);
    return 0;
}
