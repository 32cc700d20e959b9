// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the virtio-mmio transport: identification, features, status, reset, queues. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "fake_virtio.c"

struct fixture {
    struct fake_vm vm;
    char *path;
    struct virtio_dev *d;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct blk_config cfg = {.mode = BLK_RW, .serial = "disk0"};
    char err[256];

    fake_vm_init(&f->vm);
    f->path = fake_tempfile(64 * 1024);
    cfg.path = f->path;
    assert_int_equal(virtio_blk_create(&f->d, &f->vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    fake_disk_release(&f->vm, f->d, f->path);
    free(f);
    return 0;
}

static void test_identification(void **state)
{
    struct fixture *f = *state;
    uint8_t cap[8] = {0};
    uint64_t capacity;

    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_VERSION), 2);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_DEVICE_ID), 2);
    assert_int_not_equal(fake_read32(f->d, VIRTIO_MMIO_VENDOR_ID), 0);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_SEL, 1); /* blk has one queue */
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    /* Config space: byte-wise access works like a 64-bit one. */
    for (int i = 0; i < 8; i++)
        virtio_mmio_access(f->d, VIRTIO_MMIO_CONFIG + i, &cap[i], 1, false);
    memcpy(&capacity, cap, 8);
    assert_int_equal(capacity, 64 * 1024 / 512);
    /* Unaligned or odd-width register accesses read as zero and are otherwise ignored. */
    uint16_t half = 0xffff;
    virtio_mmio_access(f->d, VIRTIO_MMIO_MAGIC_VALUE, (uint8_t *)&half, 2, false);
    assert_int_equal(half, 0);
    uint32_t v = 0xffffffff;
    virtio_mmio_access(f->d, 0x2000, (uint8_t *)&v, 4, false);
    assert_int_equal(v, 0);
}

static void test_feature_negotiation(void **state)
{
    struct fixture *f = *state;
    uint32_t lo, hi;

    fake_write32(f->d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    lo = fake_read32(f->d, VIRTIO_MMIO_DEVICE_FEATURES);
    fake_write32(f->d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    hi = fake_read32(f->d, VIRTIO_MMIO_DEVICE_FEATURES);
    assert_true(hi & (1u << (VIRTIO_F_VERSION_1 - 32)));
    assert_true(lo & (1u << VIRTIO_BLK_F_FLUSH));
    assert_false(lo & (1u << VIRTIO_BLK_F_RO));
    fake_write32(f->d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_DEVICE_FEATURES), 0);

    /* Legacy driver (no VERSION_1): FEATURES_OK refused. */
    assert_false(fake_negotiate(f->d, lo) & VIRTIO_CONFIG_S_FEATURES_OK);
    /* Features the device did not offer: refused. */
    assert_false(fake_negotiate(f->d, ((uint64_t)hi << 32) | lo | (1u << 28)) &
                 VIRTIO_CONFIG_S_FEATURES_OK);
    /* DRIVER_OK without FEATURES_OK does not stick. */
    fake_driver_ok(f->d);
    assert_false(fake_read32(f->d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK);
    /* Subset with VERSION_1: accepted. */
    assert_true(fake_negotiate(f->d, ((uint64_t)hi << 32) | (1u << VIRTIO_BLK_F_FLUSH)) &
                VIRTIO_CONFIG_S_FEATURES_OK);
    /* Feature writes after FEATURES_OK are ignored (cannot sneak in VERSION_1-less set). */
    fake_write32(f->d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    fake_write32(f->d, VIRTIO_MMIO_DRIVER_FEATURES, 0);
    assert_true(fake_read32(f->d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK);
    /* Clearing status bits (other than by reset) is ignored. */
    fake_write32(f->d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    assert_true(fake_read32(f->d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK);
    assert_int_equal(f->vm.fails, 0);
}

static void test_reset(void **state)
{
    struct fixture *f = *state;
    struct fake_queue q;

    fake_device_up(&f->vm, f->d, &q, 1, 16);
    assert_true(fake_read32(f->d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_DRIVER_OK);
    fake_write32(f->d, VIRTIO_MMIO_STATUS, 0);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_STATUS), 0);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_QUEUE_DESC_LOW), 0);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    /* A notify after reset touches nothing. */
    fake_notify(f->d, 0);
    /* And the device comes up again. */
    fake_device_up(&f->vm, f->d, &q, 1, 32);
    assert_int_equal(f->vm.fails, 0);
}

static void test_queue_config_before_features_ok(void **state)
{
    struct fixture *f = *state;
    struct fake_queue q;

    fake_write32(f->d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    fake_queue_setup(&f->vm, f->d, &q, 0, 16);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_int_equal(f->vm.fails, 0);
}

/* Programs queue 0 with raw values and sets QueueReady. */
static void raw_queue(struct fixture *f, uint32_t num, uint64_t desc, uint64_t avail, uint64_t used)
{
    assert_true(fake_negotiate(f->d, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_CONFIG_S_FEATURES_OK);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_SEL, 0);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_NUM, num);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
    fake_write32(f->d, VIRTIO_MMIO_QUEUE_READY, 1);
}

static void expect_fail(struct fixture *f, const char *needle)
{
    assert_int_equal(f->vm.fails, 1);
    assert_non_null(strstr(f->vm.last_fail, "virtio-blk: "));
    if (!strstr(f->vm.last_fail, needle))
        fail_msg("message '%s' lacks '%s'", f->vm.last_fail, needle);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_true(fake_read32(f->d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET);
}

static void test_queue_not_power_of_two(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 100, 0x10000, 0x20000, 0x30000);
    expect_fail(f, "power of two");
}

static void test_queue_too_big(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 512, 0x10000, 0x20000, 0x30000);
    expect_fail(f, "power of two");
}

static void test_queue_zero(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 0, 0x10000, 0x20000, 0x30000);
    expect_fail(f, "size 0");
}

static void test_queue_misaligned_desc(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 16, 0x10008, 0x20000, 0x30000);
    expect_fail(f, "descriptor ring at gpa 0x10008 is not 16-byte aligned");
}

static void test_queue_misaligned_used(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 16, 0x10000, 0x20000, 0x30002);
    expect_fail(f, "used ring at gpa 0x30002 is not 4-byte aligned");
}

static void test_queue_misaligned_avail(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 16, 0x10000, 0x20001, 0x30000);
    expect_fail(f, "available ring");
}

static void test_queue_outside_ram(void **state)
{
    struct fixture *f = *state;

    /* The used ring straddles the end of RAM. */
    raw_queue(f, 256, 0x10000, 0x20000, FAKE_RAM_SIZE - 64);
    expect_fail(f, "outside guest RAM");
}

static void test_queue_high_address(void **state)
{
    struct fixture *f = *state;

    raw_queue(f, 16, 0xfffffffffffffff0ULL, 0x20000, 0x30000);
    expect_fail(f, "outside guest RAM");
}

static void test_interrupt_status_ack(void **state)
{
    struct fixture *f = *state;
    struct fake_queue q;
    uint64_t hdr = fake_alloc(&f->vm, 16, 8), st = fake_alloc(&f->vm, 1, 1);
    struct fake_buf b[] = {{hdr, 16, false}, {st, 1, true}};
    uint32_t id = 0, len = 0;

    fake_device_up(&f->vm, f->d, &q, 1, 16);
    *(uint32_t *)fake_ptr(&f->vm, hdr) = VIRTIO_BLK_T_FLUSH;
    fake_queue_add(&f->vm, &q, b, 2);
    fake_queue_add(&f->vm, &q, b, 2);
    fake_notify(f->d, 0);
    /* Two requests in one batch: one interrupt. */
    assert_int_equal(f->vm.irqs, 1);
    assert_true(fake_queue_used(&f->vm, &q, &id, &len));
    assert_true(fake_queue_used(&f->vm, &q, &id, &len));
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    fake_write32(f->d, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    /* A notify with nothing new raises nothing. */
    fake_notify(f->d, 0);
    assert_int_equal(f->vm.irqs, 1);
    /* Notify for a queue that does not exist: ignored. */
    fake_notify(f->d, 7);
    assert_int_equal(f->vm.fails, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_identification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feature_negotiation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_config_before_features_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_not_power_of_two, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_too_big, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_misaligned_desc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_misaligned_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_misaligned_avail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_outside_ram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_high_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupt_status_ack, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
