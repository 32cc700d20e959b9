// SPDX-License-Identifier: Apache-2.0
/* Unit tests of split virtqueue walks against hostile drivers (through virtio-blk). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

#include "fake_virtio.c"

#define QSIZE 16

struct fixture {
    struct fake_vm vm;
    char *path;
    struct virtio_dev *d;
    struct fake_queue q;
    uint64_t hdr, data, status;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct blk_config cfg = {.mode = BLK_RW};
    char err[256];

    fake_vm_init(&f->vm);
    f->path = fake_tempfile(64 * 1024);
    cfg.path = f->path;
    assert_int_equal(virtio_blk_create(&f->d, &f->vm.host, &cfg, 0xd0000000, 5, err, sizeof(err)),
                     0);
    fake_device_up(&f->vm, f->d, &f->q, 1, QSIZE);
    f->hdr = fake_alloc(&f->vm, 16, 16);
    f->data = fake_alloc(&f->vm, 4096, 4096);
    f->status = fake_alloc(&f->vm, 1, 1);
    struct virtio_blk_outhdr *h = fake_ptr(&f->vm, f->hdr);
    h->type = VIRTIO_BLK_T_IN;
    h->sector = 0;
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

static struct vring_desc *desc(struct fixture *f)
{
    return fake_ptr(&f->vm, f->q.desc);
}

/* Publishes `head` in the avail ring and notifies. */
static void publish(struct fixture *f, uint16_t head)
{
    struct vring_avail *a = fake_ptr(&f->vm, f->q.avail);

    a->ring[f->q.avail_idx % QSIZE] = head;
    a->idx = ++f->q.avail_idx;
    fake_notify(f->d, 0);
}

static void set_desc(struct fixture *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    desc(f)[i] = (struct vring_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

/* The violation was reported once, nothing was completed, and the device stays dead. */
static void expect_fail(struct fixture *f, const char *needle)
{
    uint32_t id = 0, len = 0;

    assert_int_equal(f->vm.fails, 1);
    if (!strstr(f->vm.last_fail, needle) || !strstr(f->vm.last_fail, "virtio-blk: queue"))
        fail_msg("message '%s' lacks '%s'", f->vm.last_fail, needle);
    assert_false(fake_queue_used(&f->vm, &f->q, &id, &len));
    /* More work after the failure is ignored, and fail() is not called again. */
    struct fake_buf b[] = {{f->hdr, 16, false}, {f->status, 1, true}};
    fake_queue_add(&f->vm, &f->q, b, 2);
    fake_notify(f->d, 0);
    assert_int_equal(f->vm.fails, 1);
    assert_false(fake_queue_used(&f->vm, &f->q, &id, &len));
}

static void test_sane_request_first(void **state)
{
    struct fixture *f = *state;
    uint32_t id = 0, len = 0;

    set_desc(f, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    set_desc(f, 1, f->data, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
    set_desc(f, 2, f->status, 1, VRING_DESC_F_WRITE, 0);
    publish(f, 0);
    assert_true(fake_queue_used(&f->vm, &f->q, &id, &len));
    assert_int_equal(id, 0);
    assert_int_equal(len, 513);
    assert_int_equal(*(uint8_t *)fake_ptr(&f->vm, f->status), VIRTIO_BLK_S_OK);
    assert_int_equal(f->vm.fails, 0);
}

static void test_loop(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    set_desc(f, 1, f->data, 16, VRING_DESC_F_NEXT, 0); /* back to the head */
    publish(f, 0);
    expect_fail(f, "longer than the queue size");
}

static void test_self_loop(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 3, f->hdr, 16, VRING_DESC_F_NEXT, 3);
    publish(f, 3);
    expect_fail(f, "longer than the queue size");
}

static void test_next_out_of_range(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->hdr, 16, VRING_DESC_F_NEXT, QSIZE);
    publish(f, 0);
    expect_fail(f, "descriptor 0 links to 16");
}

static void test_head_out_of_range(void **state)
{
    struct fixture *f = *state;

    publish(f, 0xffff);
    expect_fail(f, "chain head 65535");
}

static void test_desc_outside_ram(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    set_desc(f, 1, FAKE_RAM_SIZE - 8, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
    set_desc(f, 2, f->status, 1, VRING_DESC_F_WRITE, 0);
    publish(f, 0);
    expect_fail(f, "descriptor 1 points outside guest RAM (gpa 0x3ffff8, len 512)");
}

static void test_desc_addr_wraps(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, 0xfffffffffffff000ULL, 0x2000, 0, 0);
    publish(f, 0);
    expect_fail(f, "outside guest RAM");
}

static void test_huge_len(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->hdr, 0xffffffff, 0, 0);
    publish(f, 0);
    expect_fail(f, "len 4294967295");
}

static void test_chain_over_cap(void **state)
{
    struct fixture *f = *state;

    /* Each descriptor is valid RAM, but together they exceed the per-request cap. */
    set_desc(f, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    for (unsigned i = 1; i < 4; i++)
        set_desc(f, i, 0, 3u << 20, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, (uint16_t)(i + 1));
    set_desc(f, 4, f->status, 1, VRING_DESC_F_WRITE, 0);
    publish(f, 0);
    expect_fail(f, "request cap");
}

static void test_avail_idx_jump(void **state)
{
    struct fixture *f = *state;
    struct vring_avail *a = fake_ptr(&f->vm, f->q.avail);

    a->idx = QSIZE + 1;
    fake_notify(f->d, 0);
    expect_fail(f, "available index jumped from 0 to 17");
}

static void test_indirect(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->data, 64, VRING_DESC_F_INDIRECT, 0);
    publish(f, 0);
    expect_fail(f, "indirect");
}

static void test_read_after_write(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->hdr, 16, VRING_DESC_F_NEXT, 1);
    set_desc(f, 1, f->status, 1, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
    set_desc(f, 2, f->data, 512, 0, 0);
    publish(f, 0);
    expect_fail(f, "device-readable after a device-writable");
}

static void test_no_status_byte(void **state)
{
    struct fixture *f = *state;

    set_desc(f, 0, f->hdr, 16, 0, 0);
    publish(f, 0);
    expect_fail(f, "no room for header and status");
}

static void test_wraparound_many_requests(void **state)
{
    struct fixture *f = *state;
    struct fake_buf b[] = {{f->hdr, 16, false}, {f->data, 512, true}, {f->status, 1, true}};
    uint32_t id = 0, len = 0;

    /* Cross the 16-bit index wrap: 70000 requests through a 16-entry queue. */
    for (unsigned i = 0; i < 70000; i++) {
        fake_queue_add(&f->vm, &f->q, b, 3);
        fake_notify(f->d, 0);
        assert_true(fake_queue_used(&f->vm, &f->q, &id, &len));
    }
    assert_int_equal(f->vm.fails, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_sane_request_first), T(test_loop),
        T(test_self_loop),          T(test_next_out_of_range),
        T(test_head_out_of_range),  T(test_desc_outside_ram),
        T(test_desc_addr_wraps),    T(test_huge_len),
        T(test_chain_over_cap),     T(test_avail_idx_jump),
        T(test_indirect),           T(test_read_after_write),
        T(test_no_status_byte),     T(test_wraparound_many_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
