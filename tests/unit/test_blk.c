// SPDX-License-Identifier: Apache-2.0
/* Unit tests of virtio-blk: I/O round trips, read-only disks, the ephemeral overlay, diff
   layers and grown disks. */
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_mmio.h>

#include "sandbox.h"

#include "fake_virtio.c"

#define DISK_SIZE (256 * 1024)

struct fixture {
    struct fake_vm vm;
    char *path;
    struct virtio_dev *d;
    struct fake_queue q;
    uint64_t hdr, buf, status;
};

static struct fixture *make(enum blk_mode mode)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct blk_config cfg = {.mode = mode, .serial = "serial-0123456789abc"};
    char err[256];

    fake_vm_init(&f->vm);
    f->path = fake_tempfile(DISK_SIZE);
    cfg.path = f->path;
    assert_int_equal(virtio_blk_create(&f->d, &f->vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     0);
    fake_device_up(&f->vm, f->d, &f->q, 1, 64);
    f->hdr = fake_alloc(&f->vm, 16, 16);
    f->buf = fake_alloc(&f->vm, 64 * 1024, 4096);
    f->status = fake_alloc(&f->vm, 1, 1);
    return f;
}

static int setup_rw(void **state)
{
    *state = make(BLK_RW);
    return 0;
}

static int setup_ro(void **state)
{
    *state = make(BLK_RO);
    return 0;
}

static int setup_eph(void **state)
{
    *state = make(BLK_EPHEMERAL);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    fake_disk_release(&f->vm, f->d, f->path);
    free(f);
    return 0;
}

/* One request with the data split into `nseg` equal segments of f->buf. Returns the status;
 *used gets the used length. */
static int request(struct fixture *f, uint32_t type, uint64_t sector, uint32_t len, unsigned nseg,
                   uint32_t *used)
{
    struct virtio_blk_outhdr *h = fake_ptr(&f->vm, f->hdr);
    struct fake_buf b[8];
    bool write = type != VIRTIO_BLK_T_OUT;
    unsigned n = 0;
    uint32_t id = 0, ulen = 0;

    h->type = type;
    h->ioprio = 0;
    h->sector = sector;
    b[n++] = (struct fake_buf){f->hdr, 16, false};
    for (unsigned i = 0; i < nseg; i++)
        b[n++] = (struct fake_buf){f->buf + i * (len / nseg), len / nseg, write};
    b[n++] = (struct fake_buf){f->status, 1, true};
    *(uint8_t *)fake_ptr(&f->vm, f->status) = 0xee;
    fake_queue_add(&f->vm, &f->q, b, n);
    fake_notify(f->d, 0);
    assert_true(fake_queue_used(&f->vm, &f->q, &id, &ulen));
    if (used)
        *used = ulen;
    assert_int_equal(f->vm.fails, 0);
    return *(uint8_t *)fake_ptr(&f->vm, f->status);
}

static uint8_t *buf(struct fixture *f)
{
    return fake_ptr(&f->vm, f->buf);
}

static void check_file(struct fixture *f, uint64_t off, const uint8_t *want, size_t len)
{
    uint8_t got[8192];
    int fd = open(f->path, O_RDONLY);

    assert_true(len <= sizeof(got));
    assert_int_equal(pread(fd, got, len, (off_t)off), (ssize_t)len);
    close(fd);
    assert_memory_equal(got, want, len);
}

static void check_pattern(const uint8_t *p, uint64_t disk_off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != fake_pattern(disk_off + i))
            fail_msg("byte %zu (disk offset %llu) is 0x%x", i, (unsigned long long)(disk_off + i),
                     p[i]);
}

static void test_config(void **state)
{
    struct fixture *f = *state;
    struct virtio_blk_config cfg;

    for (size_t i = 0; i < sizeof(cfg); i += 4)
        virtio_mmio_access(f->d, VIRTIO_MMIO_CONFIG + i, (uint8_t *)&cfg + i,
                           sizeof(cfg) - i < 4 ? (uint32_t)(sizeof(cfg) - i) : 4, false);
    assert_int_equal(cfg.capacity, DISK_SIZE / 512);
    assert_int_equal(cfg.blk_size, 512);
    assert_true(cfg.seg_max >= 1 && cfg.seg_max <= 254);
    assert_true(cfg.size_max >= 4096);
}

static void test_read(void **state)
{
    struct fixture *f = *state;
    uint32_t used;

    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 0, 4096, 1, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 4097);
    check_pattern(buf(f), 0, 4096);
    /* Odd offset, several segments. */
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 77, 6 * 512, 3, NULL), VIRTIO_BLK_S_OK);
    check_pattern(buf(f), 77 * 512, 6 * 512);
    /* The last sector. */
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, 512, 1, NULL),
                     VIRTIO_BLK_S_OK);
    check_pattern(buf(f), DISK_SIZE - 512, 512);
}

static void test_write_read_flush(void **state)
{
    struct fixture *f = *state;
    uint8_t want[3 * 512];
    uint32_t used;

    for (size_t i = 0; i < sizeof(want); i++)
        want[i] = (uint8_t)(0xa5 ^ i);
    memcpy(buf(f), want, sizeof(want));
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 9, sizeof(want), 3, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 1);
    check_file(f, 9 * 512, want, sizeof(want));
    memset(buf(f), 0, sizeof(want));
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 9, sizeof(want), 1, NULL), VIRTIO_BLK_S_OK);
    assert_memory_equal(buf(f), want, sizeof(want));
    assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0, &used), VIRTIO_BLK_S_OK);
    assert_int_equal(used, 1);
}

static void test_get_id(void **state)
{
    struct fixture *f = *state;
    uint32_t used;

    memset(buf(f), 0xff, 64);
    assert_int_equal(request(f, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, 1, &used),
                     VIRTIO_BLK_S_OK);
    assert_int_equal(used, VIRTIO_BLK_ID_BYTES + 1);
    assert_memory_equal(buf(f), "serial-0123456789abc", VIRTIO_BLK_ID_BYTES);
}

static void test_out_of_range(void **state)
{
    struct fixture *f = *state;
    uint64_t cap = DISK_SIZE / 512;

    assert_int_equal(request(f, VIRTIO_BLK_T_IN, cap, 512, 1, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, cap - 1, 1024, 1, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, ~0ULL, 512, 1, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 1ULL << 55, 512, 1, NULL), VIRTIO_BLK_S_IOERR);
    /* Not a whole number of sectors. */
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 0, 100, 1, NULL), VIRTIO_BLK_S_IOERR);
    assert_int_equal(request(f, 0x1234, 0, 512, 1, NULL), VIRTIO_BLK_S_UNSUPP);
    assert_int_equal(f->vm.fails, 0);
}

static void test_read_only(void **state)
{
    struct fixture *f = *state;
    uint8_t orig[512];

    fake_write32(f->d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    assert_true(fake_read32(f->d, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << VIRTIO_BLK_F_RO));
    for (size_t i = 0; i < 512; i++)
        orig[i] = fake_pattern(512 + i);
    memset(buf(f), 0x5a, 512);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 1, 512, 1, NULL), VIRTIO_BLK_S_IOERR);
    check_file(f, 512, orig, 512);
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 1, 512, 1, NULL), VIRTIO_BLK_S_OK);
    assert_memory_equal(buf(f), orig, 512);
    assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
}

static void test_ephemeral(void **state)
{
    struct fixture *f = *state;
    uint8_t base[8192], w1[512], w2[4096];

    for (size_t i = 0; i < sizeof(base); i++)
        base[i] = fake_pattern(i);
    memset(w1, 0x11, sizeof(w1));
    memset(w2, 0x22, sizeof(w2));

    /* Partial block: sector 3 lies in the middle of 4 KiB block 0. */
    memcpy(buf(f), w1, sizeof(w1));
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 3, 512, 1, NULL), VIRTIO_BLK_S_OK);
    /* Whole block 1. */
    memcpy(buf(f), w2, sizeof(w2));
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 8, 4096, 2, NULL), VIRTIO_BLK_S_OK);

    /* The base file never changes. */
    check_file(f, 0, base, sizeof(base));

    /* The guest sees its writes, and the base around them. */
    memset(buf(f), 0, 16384);
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 0, 16384, 4, NULL), VIRTIO_BLK_S_OK);
    assert_memory_equal(buf(f), base, 1536);
    assert_memory_equal(buf(f) + 1536, w1, 512);
    assert_memory_equal(buf(f) + 2048, base + 2048, 2048);
    assert_memory_equal(buf(f) + 4096, w2, 4096);
    check_pattern(buf(f) + 8192, 8192, 8192);

    /* A write straddling two blocks, one of them already in the overlay. */
    memset(buf(f), 0x33, 1024);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 15, 1024, 1, NULL), VIRTIO_BLK_S_OK);
    assert_int_equal(request(f, VIRTIO_BLK_T_IN, 8, 8192, 1, NULL), VIRTIO_BLK_S_OK);
    assert_memory_equal(buf(f), w2, 3584);
    for (int i = 0; i < 1024; i++)
        assert_int_equal(buf(f)[3584 + i], 0x33);
    check_pattern(buf(f) + 4608, 8192 + 512, 8192 - 4608);
    check_file(f, 0, base, sizeof(base));
    assert_int_equal(request(f, VIRTIO_BLK_T_FLUSH, 0, 0, 0, NULL), VIRTIO_BLK_S_OK);
}

static void test_ephemeral_private(void **state)
{
    struct fixture *f = *state;
    struct fixture f2 = {.path = f->path};
    struct blk_config cfg = {.path = f->path, .mode = BLK_EPHEMERAL};
    char err[256];

    memset(buf(f), 0x44, 512);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 0, 512, 1, NULL), VIRTIO_BLK_S_OK);
    /* A second sandbox on the same base sees the base, not the first one's overlay. */
    fake_vm_init(&f2.vm);
    assert_int_equal(virtio_blk_create(&f2.d, &f2.vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     0);
    fake_device_up(&f2.vm, f2.d, &f2.q, 1, 8);
    f2.hdr = fake_alloc(&f2.vm, 16, 16);
    f2.buf = fake_alloc(&f2.vm, 4096, 4096);
    f2.status = fake_alloc(&f2.vm, 1, 1);
    assert_int_equal(request(&f2, VIRTIO_BLK_T_IN, 0, 512, 1, NULL), VIRTIO_BLK_S_OK);
    check_pattern(fake_ptr(&f2.vm, f2.buf), 0, 512);
    virtio_dev_destroy(f2.d);
    fake_vm_free(&f2.vm);
}

/* A second device over the fixture's base file with `layers` and `size`; NULL with err set
   when creation fails. */
static struct fixture *reopen(struct fixture *f, const char *const *layers, unsigned n,
                              uint64_t size, int *rc, char *err, size_t errlen)
{
    struct fixture *g = calloc(1, sizeof(*g));
    struct blk_config cfg = {
        .path = f->path, .mode = BLK_EPHEMERAL, .layers = layers, .nlayers = n, .size = size};

    fake_vm_init(&g->vm);
    *rc = virtio_blk_create(&g->d, &g->vm.host, &cfg, 0xd0000000, 5, err, errlen);
    if (*rc) {
        fake_vm_free(&g->vm);
        free(g);
        return NULL;
    }
    fake_device_up(&g->vm, g->d, &g->q, 1, 64);
    g->hdr = fake_alloc(&g->vm, 16, 16);
    g->buf = fake_alloc(&g->vm, 64 * 1024, 4096);
    g->status = fake_alloc(&g->vm, 1, 1);
    return g;
}

static void drop(struct fixture *g)
{
    virtio_dev_destroy(g->d);
    fake_vm_free(&g->vm);
    free(g);
}

/* A layer file in /tmp (its path in `path`, 64 bytes), written by `save`. */
static int layer_file(char *path)
{
    snprintf(path, 64, "/tmp/sbx-test-layer-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    return fd;
}

/* Reads 4 KiB blocks 0, 2 and 5 and the rest of block 0 of `g`: 0x44 in sector 0, 0x55 in
   block 2, 0x66 in block 5 (when `with5`), the base pattern elsewhere. */
static void check_layered(struct fixture *g, bool with5)
{
    assert_int_equal(request(g, VIRTIO_BLK_T_IN, 0, 8192, 1, NULL), VIRTIO_BLK_S_OK);
    for (int i = 0; i < 512; i++)
        assert_int_equal(buf(g)[i], 0x44);
    check_pattern(buf(g) + 512, 512, 8192 - 512);
    assert_int_equal(request(g, VIRTIO_BLK_T_IN, 16, 4096, 1, NULL), VIRTIO_BLK_S_OK);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(buf(g)[i], 0x55);
    assert_int_equal(request(g, VIRTIO_BLK_T_IN, 40, 4096, 1, NULL), VIRTIO_BLK_S_OK);
    if (with5)
        for (int i = 0; i < 4096; i++)
            assert_int_equal(buf(g)[i], 0x66);
    else
        check_pattern(buf(g), 5 * 4096, 4096);
}

/* Build steps' layers (save_dirty), a snapshot's merged diff (save_diff), stacking them under
   new devices, a grown disk, and damaged layers. */
static void test_layers(void **state)
{
    struct fixture *f = *state;
    char l1[64], l2[64], diff[64], err[256];
    uint64_t bytes = 0;
    int rc;

    memset(buf(f), 0x44, 512);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 0, 512, 1, NULL), VIRTIO_BLK_S_OK);
    memset(buf(f), 0x55, 4096);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 16, 4096, 1, NULL), VIRTIO_BLK_S_OK);
    int fd = layer_file(l1);
    assert_int_equal(virtio_blk_save_dirty(f->d, fd, &bytes, err, sizeof(err)), 0);
    close(fd);
    assert_int_equal(bytes, 2 * 4096); /* whole blocks */

    memset(buf(f), 0x66, 4096);
    assert_int_equal(request(f, VIRTIO_BLK_T_OUT, 40, 4096, 1, NULL), VIRTIO_BLK_S_OK);
    fd = layer_file(l2);
    assert_int_equal(virtio_blk_save_dirty(f->d, fd, &bytes, err, sizeof(err)), 0);
    close(fd);
    assert_int_equal(bytes, 4096); /* only what changed since the first */

    fd = layer_file(diff);
    assert_int_equal(virtio_blk_save_diff(f->d, fd, 0, &bytes, err, sizeof(err)), 0);
    close(fd);
    assert_int_equal(bytes, 3 * 4096);

    /* Stacked step layers, the merged diff, and the first step alone. */
    const char *steps[] = {l1, l2};
    struct fixture *g = reopen(f, steps, 2, 0, &rc, err, sizeof(err));
    assert_non_null(g);
    check_layered(g, true);
    drop(g);
    const char *merged[] = {diff};
    g = reopen(f, merged, 1, 0, &rc, err, sizeof(err));
    assert_non_null(g);
    check_layered(g, true);
    /* Writes over layers stay private to the device. */
    memset(buf(g), 0x77, 512);
    assert_int_equal(request(g, VIRTIO_BLK_T_OUT, 0, 512, 1, NULL), VIRTIO_BLK_S_OK);
    drop(g);
    g = reopen(f, steps, 1, 0, &rc, err, sizeof(err));
    assert_non_null(g);
    check_layered(g, false);
    drop(g);

    /* A grown disk: the base, then zeros up to the new size. */
    g = reopen(f, NULL, 0, 2 * DISK_SIZE, &rc, err, sizeof(err));
    assert_non_null(g);
    assert_int_equal(virtio_blk_size(g->d), 2 * DISK_SIZE);
    assert_int_equal(request(g, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 8, 8192, 1, NULL),
                     VIRTIO_BLK_S_OK);
    check_pattern(buf(g), DISK_SIZE - 4096, 4096);
    for (int i = 4096; i < 8192; i++)
        assert_int_equal(buf(g)[i], 0);
    drop(g);
    /* Smaller than the image, or not whole blocks. */
    assert_null(reopen(f, NULL, 0, DISK_SIZE / 2, &rc, err, sizeof(err)));
    assert_int_equal(rc, SBX_EINVAL);
    assert_null(reopen(f, NULL, 0, DISK_SIZE + 100, &rc, err, sizeof(err)));
    assert_int_equal(rc, SBX_EINVAL);

    /* A layer of another disk size, a truncated one, a flipped map bit, a missing one. */
    assert_null(reopen(f, merged, 1, 2 * DISK_SIZE, &rc, err, sizeof(err)));
    assert_int_equal(rc, SBX_EIMAGE);
    assert_non_null(strstr(err, "not a diff layer"));
    assert_int_equal(truncate(l2, DISK_SIZE), 0);
    assert_null(reopen(f, steps, 2, 0, &rc, err, sizeof(err)));
    assert_int_equal(rc, SBX_EIMAGE);
    assert_non_null(strstr(err, l2));
    fd = open(diff, O_RDWR);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, DISK_SIZE), 1);
    b ^= 0x80;
    assert_int_equal(pwrite(fd, &b, 1, DISK_SIZE), 1);
    close(fd);
    assert_null(reopen(f, merged, 1, 0, &rc, err, sizeof(err)));
    assert_int_equal(rc, SBX_EIMAGE);
    assert_non_null(strstr(err, "corrupted block map"));
    unlink(l1);
    assert_null(reopen(f, steps, 1, 0, &rc, err, sizeof(err)));
    assert_int_equal(rc, SBX_EIMAGE);
    unlink(l2);
    unlink(diff);
}

static void test_create_errors(void **state)
{
    struct fake_vm vm;
    struct virtio_dev *d = (struct virtio_dev *)1;
    struct blk_config cfg = {.path = "/nonexistent/disk.img", .mode = BLK_RW};
    char err[256] = "";

    fake_vm_init(&vm);
    assert_int_equal(virtio_blk_create(&d, &vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     SBX_EIMAGE);
    assert_null(d);
    assert_non_null(strstr(err, "/nonexistent/disk.img"));
    cfg.path = "/tmp";
    cfg.serial = "this serial is longer than twenty bytes";
    assert_int_equal(virtio_blk_create(&d, &vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     SBX_EINVAL);
    cfg.serial = NULL;
    assert_int_equal(virtio_blk_create(&d, &vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     SBX_EIMAGE); /* a directory */
    fake_vm_free(&vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup_rw, teardown),
        cmocka_unit_test_setup_teardown(test_read, setup_rw, teardown),
        cmocka_unit_test_setup_teardown(test_write_read_flush, setup_rw, teardown),
        cmocka_unit_test_setup_teardown(test_get_id, setup_rw, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_range, setup_rw, teardown),
        cmocka_unit_test_setup_teardown(test_read_only, setup_ro, teardown),
        cmocka_unit_test_setup_teardown(test_ephemeral, setup_eph, teardown),
        cmocka_unit_test_setup_teardown(test_ephemeral_private, setup_eph, teardown),
        cmocka_unit_test_setup_teardown(test_layers, setup_eph, teardown),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
