// SPDX-License-Identifier: Apache-2.0
/* Unit tests of virtio-net: transmit, receive, waiting frames and their caps, hostile chains. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_net.h>

#include "sandbox.h"

#include "fake_virtio.c"
#include "virtio/mmio.h"

#define HDR 12

struct fixture {
    struct fake_vm vm;
    struct virtio_dev *d;
    struct fake_queue q[2]; /* rx, tx */
    bool echo;              /* the backend answers every frame at once */
    unsigned nsent;
    uint8_t sent[4][2048];
    size_t sent_len[4];
};

static void be_send(void *ctx, const uint8_t *frame, size_t len)
{
    struct fixture *f = ctx;
    if (f->nsent < 4) {
        memcpy(f->sent[f->nsent], frame, len < 2048 ? len : 2048);
        f->sent_len[f->nsent] = len;
    }
    f->nsent++;
    if (f->echo)
        virtio_net_receive(f->d, frame, len); /* inside the hook: lock held */
}

/* What a backend does from its own events: deliver with the device lock held. */
static void receive(struct fixture *f, const uint8_t *frame, size_t len)
{
    pthread_mutex_lock(&f->d->lock);
    virtio_net_receive(f->d, frame, len);
    pthread_mutex_unlock(&f->d->lock);
}

static const uint8_t mac[6] = {0x52, 0x54, 0, 1, 2, 3};

static void make(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];
    fake_vm_init(&f->vm);
    struct net_backend be = {.send = be_send, .ctx = f};
    assert_int_equal(
        virtio_net_create(&f->d, &f->vm.host, mac, 65520, &be, 0xd0000000, 5, err, sizeof(err)), 0);
    *state = f;
}

static int setup(void **state)
{
    make(state);
    struct fixture *f = *state;
    fake_device_up(&f->vm, f->d, f->q, 2, 64);
    return 0;
}

/* A driver that does not take mergeable receive buffers (each frame needs one buffer). */
static int setup_no_mrg(void **state)
{
    make(state);
    struct fixture *f = *state;
    uint64_t features = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_NET_F_MAC);
    assert_true(fake_negotiate(f->d, features) & VIRTIO_CONFIG_S_FEATURES_OK);
    for (unsigned q = 0; q < 2; q++)
        fake_queue_setup(&f->vm, f->d, &f->q[q], q, 64);
    fake_driver_ok(f->d);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    virtio_dev_destroy(f->d);
    fake_vm_free(&f->vm);
    free(f);
    return 0;
}

static void frame_of(uint8_t *p, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(seed + i * 3);
}

/* The guest sends `len` bytes of frame (after a zero header) in two descriptors. */
static void guest_send(struct fixture *f, size_t len, uint8_t seed)
{
    uint64_t h = fake_alloc(&f->vm, HDR, 8), b = fake_alloc(&f->vm, len, 8);
    memset(fake_ptr(&f->vm, h), 0, HDR);
    frame_of(fake_ptr(&f->vm, b), len, seed);
    struct fake_buf bufs[2] = {{h, HDR, false}, {b, (uint32_t)len, false}};
    fake_queue_add(&f->vm, &f->q[1], bufs, 2);
    fake_notify(f->d, 1);
}

/* Posts one receive buffer of `len` bytes; returns its address. */
static uint64_t guest_post(struct fixture *f, uint32_t len, bool notify)
{
    uint64_t b = fake_alloc(&f->vm, len, 8);
    struct fake_buf buf = {b, len, true};
    fake_queue_add(&f->vm, &f->q[0], &buf, 1);
    if (notify)
        fake_notify(f->d, 0);
    return b;
}

static void test_config(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
    uint32_t w0 = fake_read32(f->d, VIRTIO_MMIO_CONFIG);
    uint32_t w1 = fake_read32(f->d, VIRTIO_MMIO_CONFIG + 4);
    uint8_t cfg[8];
    memcpy(cfg, &w0, 4);
    memcpy(cfg + 4, &w1, 4);
    assert_memory_equal(cfg, mac, 6);
    assert_int_equal(cfg[6] | cfg[7] << 8, VIRTIO_NET_S_LINK_UP);
    /* mtu: bytes 10..11 of the config space. */
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_CONFIG + 8) >> 16, 65520);
}

static void test_transmit(void **state)
{
    struct fixture *f = *state;
    guest_send(f, 60, 1);
    guest_send(f, 1514, 2);
    assert_int_equal(f->nsent, 2);
    uint8_t want[1514];
    frame_of(want, 60, 1);
    assert_int_equal(f->sent_len[0], 60);
    assert_memory_equal(f->sent[0], want, 60);
    frame_of(want, 1514, 2);
    assert_int_equal(f->sent_len[1], 1514);
    assert_memory_equal(f->sent[1], want, 1514);
    uint32_t id, len;
    assert_true(fake_queue_used(&f->vm, &f->q[1], &id, &len));
    assert_true(fake_queue_used(&f->vm, &f->q[1], &id, &len));
    struct virtio_net_stats st;
    virtio_net_stats(f->d, &st);
    assert_int_equal(st.tx_frames, 2);
    assert_int_equal(st.tx_bytes, 1574);
    /* A runt (shorter than an Ethernet header) is dropped, not passed on. */
    guest_send(f, 10, 3);
    assert_int_equal(f->nsent, 2);
    virtio_net_stats(f->d, &st);
    assert_int_equal(st.tx_dropped, 1);
}

static void test_receive_waits_for_buffers(void **state)
{
    struct fixture *f = *state;
    uint8_t a[100], b[200];
    frame_of(a, sizeof(a), 7);
    frame_of(b, sizeof(b), 9);
    receive(f, a, sizeof(a));
    receive(f, b, sizeof(b));
    uint32_t id, len;
    assert_false(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    /* Buffers arrive: both frames, in order, each behind a header with num_buffers = 1. */
    uint64_t b1 = guest_post(f, 1526, false), b2 = guest_post(f, 1526, true);
    assert_true(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    assert_int_equal(len, HDR + sizeof(a));
    struct virtio_net_hdr_v1 *h = fake_ptr(&f->vm, b1);
    assert_int_equal(h->num_buffers, 1);
    assert_int_equal(h->gso_type, VIRTIO_NET_HDR_GSO_NONE);
    assert_memory_equal((uint8_t *)fake_ptr(&f->vm, b1) + HDR, a, sizeof(a));
    assert_true(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    assert_int_equal(len, HDR + sizeof(b));
    assert_memory_equal((uint8_t *)fake_ptr(&f->vm, b2) + HDR, b, sizeof(b));
    assert_true(f->vm.irqs > 0);
}

static void test_receive_caps(void **state)
{
    struct fixture *f = *state;
    uint8_t fr[1000];
    frame_of(fr, sizeof(fr), 1);
    /* Without buffers at most 256 frames wait; the rest is dropped and counted. */
    for (int i = 0; i < 300; i++)
        receive(f, fr, sizeof(fr));
    struct virtio_net_stats st;
    virtio_net_stats(f->d, &st);
    assert_int_equal(st.rx_dropped, 44);
    /* 64 buffers take the oldest 64 waiting frames at once. */
    for (int i = 0; i < 64; i++)
        guest_post(f, 1526, false);
    fake_notify(f->d, 0);
    virtio_net_stats(f->d, &st);
    assert_int_equal(st.rx_frames, 64);
    /* Frames longer than 64 KiB plus a header, or shorter than a header, never wait. */
    static uint8_t huge[70000];
    receive(f, huge, sizeof(huge));
    receive(f, huge, 5);
    struct virtio_net_stats st2;
    virtio_net_stats(f->d, &st2);
    assert_int_equal(st2.rx_dropped, st.rx_dropped + 2);
}

static void test_small_buffer_drops_frame(void **state)
{
    /* Without mergeable buffers a frame must fit one buffer: a bigger one is dropped and the
       buffer kept for the next frame that fits. */
    struct fixture *f = *state;
    guest_post(f, 100, true);
    uint8_t fr[500];
    frame_of(fr, sizeof(fr), 4);
    receive(f, fr, sizeof(fr));
    uint32_t id, len;
    assert_false(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    struct virtio_net_stats st;
    virtio_net_stats(f->d, &st);
    assert_int_equal(st.rx_dropped, 1);
    receive(f, fr, 60);
    assert_true(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    assert_int_equal(len, HDR + 60);
}

static void test_mergeable_buffers(void **state)
{
    /* A frame larger than one buffer spreads over several; it waits until enough are posted
       (nothing is consumed before), and the header counts them. */
    struct fixture *f = *state;
    static uint8_t fr[60000];
    frame_of(fr, sizeof(fr), 6);
    uint64_t b[40];
    for (int i = 0; i < 10; i++)
        b[i] = guest_post(f, 4096, false);
    fake_notify(f->d, 0);
    receive(f, fr, sizeof(fr));
    uint32_t id, len;
    assert_false(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    for (int i = 10; i < 20; i++)
        b[i] = guest_post(f, 4096, false);
    fake_notify(f->d, 0);
    static uint8_t all[HDR + sizeof(fr)];
    size_t want = HDR + sizeof(fr), got = 0;
    unsigned nbuf = 0;
    while (fake_queue_used(&f->vm, &f->q[0], &id, &len)) {
        assert_true(got + len <= want);
        memcpy(all + got, fake_ptr(&f->vm, b[nbuf]), len);
        got += len;
        nbuf++;
    }
    assert_memory_equal(all + HDR, fr, sizeof(fr));
    assert_int_equal(got, want);
    assert_int_equal(nbuf, (want + 4095) / 4096);
    struct virtio_net_hdr_v1 *h = fake_ptr(&f->vm, b[0]);
    assert_int_equal(h->num_buffers, nbuf);
    /* The buffers left over take the next frame. */
    receive(f, fr, 100);
    assert_true(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    assert_int_equal(len, HDR + 100);
}

static void test_backend_answers_inside_send(void **state)
{
    /* The NAT answers some frames synchronously (ARP, ICMP echo, refused connections): the
       answer is delivered from within the transmit hook without deadlocking. */
    struct fixture *f = *state;
    f->echo = true;
    uint64_t b = guest_post(f, 1526, true);
    guest_send(f, 80, 5);
    uint32_t id, len;
    assert_true(fake_queue_used(&f->vm, &f->q[0], &id, &len));
    assert_int_equal(len, HDR + 80);
    uint8_t want[80];
    frame_of(want, sizeof(want), 5);
    assert_memory_equal((uint8_t *)fake_ptr(&f->vm, b) + HDR, want, sizeof(want));
}

static void test_writable_transmit_chain_fails(void **state)
{
    struct fixture *f = *state;
    uint64_t b = fake_alloc(&f->vm, 64, 8);
    struct fake_buf bufs[2] = {{b, HDR, false}, {b + HDR, 52, true}};
    fake_queue_add(&f->vm, &f->q[1], bufs, 2);
    fake_notify(f->d, 1);
    assert_int_equal(f->vm.fails, 1);
    assert_non_null(strstr(f->vm.last_fail, "virtio-net"));
    assert_int_equal(f->nsent, 0);
    /* A failed device delivers nothing more. */
    uint8_t fr[60] = {0};
    guest_post(f, 1526, true);
    receive(f, fr, sizeof(fr));
    uint32_t id, len;
    assert_false(fake_queue_used(&f->vm, &f->q[0], &id, &len));
}

static void test_reset_drops_waiting_frames(void **state)
{
    struct fixture *f = *state;
    uint8_t fr[60] = {1};
    receive(f, fr, sizeof(fr));
    fake_write32(f->d, VIRTIO_MMIO_STATUS, 0);
    /* Not ready: frames are dropped instead of waiting. */
    receive(f, fr, sizeof(fr));
    struct virtio_net_stats st;
    virtio_net_stats(f->d, &st);
    assert_int_equal(st.rx_dropped, 1);
    fake_device_up(&f->vm, f->d, f->q, 2, 64);
    guest_post(f, 1526, true);
    uint32_t id, len;
    assert_false(fake_queue_used(&f->vm, &f->q[0], &id, &len)); /* the old frame is gone */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transmit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_waits_for_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_buffer_drops_frame, setup_no_mrg, teardown),
        cmocka_unit_test_setup_teardown(test_mergeable_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_answers_inside_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writable_transmit_chain_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_drops_waiting_frames, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
