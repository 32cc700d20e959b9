// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the userspace virtio-vsock device: connections, credit, resets, hostile input. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_vsock.h>

#include "sandbox.h"

#include "fake_virtio.c"

#define QN        64
#define RXBUF     (sizeof(struct virtio_vsock_hdr) + 4096)
#define GUEST_CID 3
#define GPORT     5000
#define HDR       sizeof(struct virtio_vsock_hdr)

struct fixture {
    struct fake_vm vm;
    struct virtio_dev *d;
    struct fake_queue q[3];
    uint64_t rxbase, txbuf, evbuf;
    uint32_t host_port; /* of the connection under test */
    bool rx_posted;
    int fd;
};

static void post_rx(struct fixture *f, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        uint16_t slot = f->q[0].next_desc;
        struct fake_buf b = {f->rxbase + slot * RXBUF, RXBUF, true};
        fake_queue_add(&f->vm, &f->q[0], &b, 1);
    }
    fake_notify(f->d, 0);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];

    fake_vm_init(&f->vm);
    assert_int_equal(
        virtio_vsock_create(&f->d, &f->vm.host, GUEST_CID, 0xd0001000, 6, err, sizeof(err)), 0);
    fake_device_up(&f->vm, f->d, f->q, 3, QN);
    f->rxbase = fake_alloc(&f->vm, QN * RXBUF, 8);
    f->txbuf = fake_alloc(&f->vm, HDR + 128 * 1024, 8);
    f->evbuf = fake_alloc(&f->vm, 8, 8);
    f->fd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    virtio_dev_destroy(f->d);
    if (f->fd >= 0)
        close(f->fd);
    fake_vm_free(&f->vm);
    free(f);
    return 0;
}

/* Next packet the device put on the rx queue (false if none). Payload copied to `data`. */
static bool rx_next(struct fixture *f, struct virtio_vsock_hdr *h, void *data, size_t max)
{
    uint32_t id = 0, len = 0;
    uint8_t *p;

    if (!fake_queue_used(&f->vm, &f->q[0], &id, &len))
        return false;
    assert_true(len >= HDR && len <= RXBUF);
    p = fake_ptr(&f->vm, f->rxbase + id * RXBUF);
    memcpy(h, p, HDR);
    assert_int_equal(len, HDR + h->len);
    if (data)
        memcpy(data, p + HDR, h->len < max ? h->len : max);
    /* The guest recycles the buffer straight away, like Linux does. */
    post_rx(f, 1);
    return true;
}

/* Sends one packet from the guest: header descriptor + payload descriptor of `avail` bytes. */
static void guest_send_raw(struct fixture *f, uint32_t src_port, uint32_t dst_port, uint16_t op,
                           uint32_t flags, uint32_t buf_alloc, uint32_t fwd_cnt, const void *data,
                           uint32_t len, uint32_t avail, uint64_t src_cid)
{
    struct virtio_vsock_hdr *h = fake_ptr(&f->vm, f->txbuf);
    struct fake_buf b[2] = {{f->txbuf, HDR, false}, {f->txbuf + HDR, avail, false}};
    uint32_t id = 0, ulen = 0;

    memset(h, 0, HDR);
    h->src_cid = src_cid;
    h->dst_cid = VSOCK_HOST_CID;
    h->src_port = src_port;
    h->dst_port = dst_port;
    h->len = len;
    h->type = VIRTIO_VSOCK_TYPE_STREAM;
    h->op = op;
    h->flags = flags;
    h->buf_alloc = buf_alloc;
    h->fwd_cnt = fwd_cnt;
    if (data)
        memcpy(fake_ptr(&f->vm, f->txbuf + HDR), data, avail);
    fake_queue_add(&f->vm, &f->q[1], b, avail ? 2 : 1);
    fake_notify(f->d, 1);
    assert_true(fake_queue_used(&f->vm, &f->q[1], &id, &ulen));
}

static void guest_send(struct fixture *f, uint16_t op, uint32_t flags, uint32_t buf_alloc,
                       uint32_t fwd_cnt, const void *data, uint32_t len)
{
    guest_send_raw(f, GPORT, f->host_port, op, flags, buf_alloc, fwd_cnt, data, len, len,
                   GUEST_CID);
}

/* connect() and check the REQUEST the guest receives. */
static void do_connect(struct fixture *f)
{
    struct virtio_vsock_hdr h;

    if (!f->rx_posted)
        post_rx(f, QN);
    f->rx_posted = true;
    assert_int_equal(virtio_vsock_connect(f->d, GPORT, &f->fd), 0);
    assert_true(f->fd >= 0);
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_REQUEST);
    assert_int_equal(h.src_cid, VSOCK_HOST_CID);
    assert_int_equal(h.dst_cid, GUEST_CID);
    assert_int_equal(h.dst_port, GPORT);
    assert_int_equal(h.type, VIRTIO_VSOCK_TYPE_STREAM);
    assert_true(h.src_port >= 1024);
    assert_int_equal(h.buf_alloc, 256 * 1024);
    f->host_port = h.src_port;
}

static void establish(struct fixture *f, uint32_t guest_buf_alloc)
{
    do_connect(f);
    guest_send(f, VIRTIO_VSOCK_OP_RESPONSE, 0, guest_buf_alloc, 0, NULL, 0);
    fake_loop(&f->vm);
}

/* Reads what is available on the caller's fd (non-blocking). */
static ssize_t fd_read(struct fixture *f, void *buf, size_t len)
{
    ssize_t n;

    do {
        n = read(f->fd, buf, len);
    } while (n < 0 && errno == EINTR);
    return n;
}

static void expect_eof(struct fixture *f)
{
    char tmp[256 * 1024];
    ssize_t n;

    fake_loop(&f->vm);
    /* Whatever was delivered may come first; then EOF, not EAGAIN. */
    while ((n = fd_read(f, tmp, sizeof(tmp))) > 0)
        ;
    assert_int_equal(n, 0);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void test_config_space(void **state)
{
    struct fixture *f = *state;
    uint64_t cid = 0;

    virtio_mmio_access(f->d, VIRTIO_MMIO_CONFIG, (uint8_t *)&cid, 8, false);
    assert_int_equal(cid, GUEST_CID);
    assert_int_equal(fake_read32(f->d, VIRTIO_MMIO_DEVICE_ID), 19);
}

static void test_connect_request(void **state)
{
    struct fixture *f = *state;
    int fd2;
    struct virtio_vsock_hdr h;

    do_connect(f);
    assert_true(f->vm.irqs >= 1);
    /* A second connection gets another host port. */
    assert_int_equal(virtio_vsock_connect(f->d, GPORT, &fd2), 0);
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_REQUEST);
    assert_int_not_equal(h.src_port, f->host_port);
    close(fd2);
    assert_int_equal(f->vm.fails, 0);
}

static void test_rx_starved_then_resumed(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;

    /* No rx buffers yet: the REQUEST waits. */
    assert_int_equal(virtio_vsock_connect(f->d, GPORT, &f->fd), 0);
    fake_loop(&f->vm);
    assert_false(rx_next(f, &h, NULL, 0));
    post_rx(f, 4);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_REQUEST);
}

static void test_data_both_ways(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;
    char data[64];

    establish(f, 64 * 1024);
    assert_int_equal(write(f->fd, "hello", 5), 5);
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, data, sizeof(data)));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
    assert_int_equal(h.len, 5);
    assert_int_equal(h.dst_port, GPORT);
    assert_int_equal(h.src_port, f->host_port);
    assert_memory_equal(data, "hello", 5);

    guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 64 * 1024, 5, "world!", 6);
    fake_loop(&f->vm);
    assert_int_equal(fd_read(f, data, sizeof(data)), 6);
    assert_memory_equal(data, "world!", 6);
    /* Nothing else was sent (no spurious credit update for 6 bytes). */
    assert_false(rx_next(f, &h, NULL, 0));
    assert_int_equal(f->vm.fails, 0);
}

static void test_large_transfer_to_host(void **state)
{
    struct fixture *f = *state;
    static uint8_t chunk[64 * 1024], got[64 * 1024];
    struct virtio_vsock_hdr h;
    uint32_t sent = 0, received = 0, fwd_cnt = 0, credit_updates = 0;

    establish(f, 64 * 1024);
    for (size_t i = 0; i < sizeof(chunk); i++)
        chunk[i] = (uint8_t)i;
    /* 2 MiB through a 256 KiB window: only possible if the device reports forwarded bytes. */
    while (received < 2u << 20) {
        while (sent - fwd_cnt + sizeof(chunk) <= 256 * 1024 && sent < 2u << 20) {
            guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 64 * 1024, 0, chunk, sizeof(chunk));
            sent += sizeof(chunk);
        }
        fake_loop(&f->vm);
        ssize_t n;
        while ((n = fd_read(f, got, sizeof(got))) > 0)
            received += (uint32_t)n;
        fake_loop(&f->vm);
        while (rx_next(f, &h, NULL, 0)) {
            assert_int_equal(h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
            assert_int_equal(h.buf_alloc, 256 * 1024);
            fwd_cnt = h.fwd_cnt;
            credit_updates++;
        }
        assert_true(credit_updates < 100);
    }
    assert_int_equal(received, 2u << 20);
    assert_int_equal(f->vm.fails, 0);
}

static void test_credit_respected(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;
    char big[1000];
    uint32_t total = 0;

    establish(f, 100); /* the guest can only take 100 bytes */
    memset(big, 'x', sizeof(big));
    assert_int_equal(write(f->fd, big, sizeof(big)), (ssize_t)sizeof(big));
    fake_loop(&f->vm);
    while (rx_next(f, &h, NULL, 0)) {
        assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
        total += h.len;
    }
    assert_int_equal(total, 100);
    fake_loop(&f->vm);
    assert_false(rx_next(f, &h, NULL, 0));

    /* The guest consumed 60: 60 more may come. */
    guest_send(f, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, 100, 60, NULL, 0);
    fake_loop(&f->vm);
    total = 0;
    while (rx_next(f, &h, NULL, 0))
        total += h.len;
    assert_int_equal(total, 60);

    /* A hostile fwd_cnt beyond what was sent gives no credit at all. */
    guest_send(f, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 0, 100, 0x80000000u, NULL, 0);
    fake_loop(&f->vm);
    assert_false(rx_next(f, &h, NULL, 0));

    /* CREDIT_REQUEST is answered with our window. */
    guest_send(f, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0, 100, 160, NULL, 0);
    fake_loop(&f->vm);
    bool saw_update = false;
    while (rx_next(f, &h, NULL, 0)) {
        if (h.op == VIRTIO_VSOCK_OP_CREDIT_UPDATE) {
            saw_update = true;
            assert_int_equal(h.buf_alloc, 256 * 1024);
        } else {
            assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
        }
    }
    assert_true(saw_update);
    assert_int_equal(f->vm.fails, 0);
}

static void test_guest_rst_closes(void **state)
{
    struct fixture *f = *state;

    establish(f, 4096);
    guest_send(f, VIRTIO_VSOCK_OP_RST, 0, 4096, 0, NULL, 0);
    expect_eof(f);
}

static void test_guest_refuses(void **state)
{
    struct fixture *f = *state;

    do_connect(f);
    guest_send(f, VIRTIO_VSOCK_OP_RST, 0, 0, 0, NULL, 0);
    expect_eof(f);
}

static void test_connect_timeout(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;

    virtio_vsock_set_timeouts(f->d, 30, 30);
    do_connect(f);
    sleep_ms(60);
    expect_eof(f);
    /* And the guest is told to forget it. */
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
}

static void test_guest_shutdown(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;
    char buf[16];

    establish(f, 4096);
    guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, "bye", 3);
    guest_send(f, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND,
               4096, 0, NULL, 0);
    fake_loop(&f->vm);
    assert_int_equal(fd_read(f, buf, sizeof(buf)), 3);
    assert_int_equal(fd_read(f, buf, sizeof(buf)), 0);
    /* The clean shutdown ends with our RST. */
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
}

static void test_host_close(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;

    virtio_vsock_set_timeouts(f->d, 1000, 30);
    establish(f, 4096);
    assert_int_equal(write(f->fd, "last", 4), 4);
    close(f->fd);
    f->fd = -1;
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_SHUTDOWN);
    assert_int_equal(h.flags, VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
    /* The guest never answers with RST: after the close timeout the host resets. */
    sleep_ms(60);
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    /* Later packets for it are unknown: RST again, no failure. */
    guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, "x", 1);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(f->vm.fails, 0);
}

static void test_host_half_close(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;
    char buf[16];

    establish(f, 4096);
    shutdown(f->fd, SHUT_WR);
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_SHUTDOWN);
    assert_int_equal(h.flags, VIRTIO_VSOCK_SHUTDOWN_SEND);
    /* The guest can still answer. */
    guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, "reply", 5);
    fake_loop(&f->vm);
    assert_int_equal(fd_read(f, buf, sizeof(buf)), 5);
    /* Guest finishes too: RST completes it and the caller sees EOF. */
    guest_send(f, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_SEND, 4096, 0, NULL, 0);
    fake_loop(&f->vm);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    expect_eof(f);
}

static void test_len_larger_than_buffer(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;

    establish(f, 4096);
    /* Claims 5000 bytes, carries 10. */
    guest_send_raw(f, GPORT, f->host_port, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, "0123456789", 5000, 10,
                   GUEST_CID);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    expect_eof(f);
    assert_int_equal(f->vm.fails, 0);
}

static void test_len_over_cap(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;

    establish(f, 4096);
    guest_send_raw(f, GPORT, f->host_port, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, NULL, 100000, 100000,
                   GUEST_CID);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    expect_eof(f);
    /* A tx buffer smaller than a header is ignored. */
    struct fake_buf b = {f->txbuf, 10, false};
    uint32_t id = 0, len = 0;
    fake_queue_add(&f->vm, &f->q[1], &b, 1);
    fake_notify(f->d, 1);
    assert_true(fake_queue_used(&f->vm, &f->q[1], &id, &len));
    assert_int_equal(f->vm.fails, 0);
}

static void test_guest_ignores_credit(void **state)
{
    struct fixture *f = *state;
    static uint8_t chunk[64 * 1024];
    struct virtio_vsock_hdr h;
    bool reset = false;

    establish(f, 4096);
    /* The caller never reads; the guest sends far beyond our 256 KiB window. */
    for (int i = 0; i < 64 && !reset; i++) {
        guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, chunk, sizeof(chunk));
        while (rx_next(f, &h, NULL, 0))
            if (h.op == VIRTIO_VSOCK_OP_RST)
                reset = true;
    }
    assert_true(reset);
    expect_eof(f);
    assert_int_equal(f->vm.fails, 0);
}

/* A guest that keeps within its credit while the caller does not read: the device holds
   what the socket does not take, up to the sandbox's buffer cap; beyond it the connection
   is reset instead of growing host memory. */
static unsigned send_window_unread(struct fixture *f)
{
    static uint8_t chunk[64 * 1024];
    struct virtio_vsock_hdr h;
    unsigned resets = 0;

    establish(f, 4096);
    for (int i = 0; i < 4; i++) { /* 256 KiB: exactly the window the device offers */
        guest_send(f, VIRTIO_VSOCK_OP_RW, 0, 4096, 0, chunk, sizeof(chunk));
        fake_loop(&f->vm);
        while (rx_next(f, &h, NULL, 0))
            resets += h.op == VIRTIO_VSOCK_OP_RST;
    }
    return resets;
}

static void test_buffer_within_cap(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(send_window_unread(f), 0);
    assert_int_equal(f->vm.fails, 0);
}

static void test_buffer_cap(void **state)
{
    struct fixture *f = *state;

    virtio_vsock_set_buffer_cap(f->d, 8192);
    assert_int_equal(send_window_unread(f), 1);
    expect_eof(f);
    assert_int_equal(f->vm.fails, 0);
}

static void test_unknown_and_unsupported(void **state)
{
    struct fixture *f = *state;
    struct virtio_vsock_hdr h;

    post_rx(f, QN);
    f->rx_posted = true;
    /* Data for a connection that does not exist. */
    guest_send_raw(f, 7000, 4444, VIRTIO_VSOCK_OP_RW, 0, 0, 0, "abc", 3, 3, GUEST_CID);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(h.dst_port, 7000);
    assert_int_equal(h.src_port, 4444);
    /* A guest-initiated connection: no host listener, refused. */
    guest_send_raw(f, 7001, 80, VIRTIO_VSOCK_OP_REQUEST, 0, 4096, 0, NULL, 0, 0, GUEST_CID);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    assert_int_equal(h.dst_port, 7001);
    /* An RST for nothing is not answered. */
    guest_send_raw(f, 7002, 80, VIRTIO_VSOCK_OP_RST, 0, 0, 0, NULL, 0, 0, GUEST_CID);
    assert_false(rx_next(f, &h, NULL, 0));
    /* A spoofed source CID is dropped silently. */
    guest_send_raw(f, 7003, 80, VIRTIO_VSOCK_OP_REQUEST, 0, 0, 0, NULL, 0, 0, 99);
    assert_false(rx_next(f, &h, NULL, 0));
    /* An unknown op on a live connection resets just that connection. */
    establish(f, 4096);
    guest_send(f, 42, 0, 4096, 0, NULL, 0);
    assert_true(rx_next(f, &h, NULL, 0));
    assert_int_equal(h.op, VIRTIO_VSOCK_OP_RST);
    expect_eof(f);
    assert_int_equal(f->vm.fails, 0);
}

static void test_connection_flood(void **state)
{
    struct fixture *f = *state;
    static int fds[1100];
    int n = 0, rc, extra;
    struct virtio_vsock_hdr h;

    for (;;) {
        rc = virtio_vsock_connect(f->d, GPORT, &fds[n]);
        if (rc < 0)
            break;
        n++;
        assert_true(n < 1100);
    }
    assert_int_equal(rc, SBX_ENOMEM);
    assert_int_equal(n, 1024);
    fake_loop(&f->vm);
    /* Freeing one makes room again. */
    post_rx(f, QN);
    f->rx_posted = true;
    guest_send_raw(f, GPORT, 1024, VIRTIO_VSOCK_OP_RST, 0, 0, 0, NULL, 0, 0, GUEST_CID);
    assert_int_equal(virtio_vsock_connect(f->d, GPORT, &extra), 0);
    close(extra);
    for (int i = 0; i < n; i++)
        close(fds[i]);

    /* A REQUEST flood from the guest costs bounded memory and rx buffers. */
    for (int i = 0; i < 5000; i++)
        guest_send_raw(f, 10000 + (uint32_t)i, 80, VIRTIO_VSOCK_OP_REQUEST, 0, 0, 0, NULL, 0, 0,
                       GUEST_CID);
    while (rx_next(f, &h, NULL, 0))
        ;
    assert_int_equal(f->vm.fails, 0);
}

static void test_transport_reset(void **state)
{
    struct fixture *f = *state;
    struct fake_buf b;
    uint32_t id = 0, len = 0;

    b = (struct fake_buf){f->evbuf, 8, true};
    fake_queue_add(&f->vm, &f->q[2], &b, 1);
    fake_notify(f->d, 2);
    establish(f, 4096);
    virtio_vsock_transport_reset(f->d);
    expect_eof(f);
    assert_true(fake_queue_used(&f->vm, &f->q[2], &id, &len));
    assert_int_equal(len, 4);
    assert_int_equal(*(uint32_t *)fake_ptr(&f->vm, f->evbuf), VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
}

static void test_device_reset(void **state)
{
    struct fixture *f = *state;

    establish(f, 4096);
    fake_write32(f->d, VIRTIO_MMIO_STATUS, 0);
    expect_eof(f);
    assert_int_equal(f->vm.fails, 0);
}

static void test_rx_buffer_too_small(void **state)
{
    struct fixture *f = *state;
    struct fake_buf b = {f->rxbase, 20, true};

    fake_queue_add(&f->vm, &f->q[0], &b, 1);
    assert_int_equal(virtio_vsock_connect(f->d, GPORT, &f->fd), 0);
    fake_loop(&f->vm); /* the REQUEST needs an rx buffer: this one cannot hold it */
    assert_int_equal(f->vm.fails, 1);
    fake_notify(f->d, 0);
    assert_int_equal(f->vm.fails, 1);
    assert_non_null(strstr(f->vm.last_fail, "virtio-vsock: queue rx"));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_config_space),
        T(test_connect_request),
        T(test_rx_starved_then_resumed),
        T(test_data_both_ways),
        T(test_large_transfer_to_host),
        T(test_credit_respected),
        T(test_guest_rst_closes),
        T(test_guest_refuses),
        T(test_connect_timeout),
        T(test_guest_shutdown),
        T(test_host_close),
        T(test_host_half_close),
        T(test_len_larger_than_buffer),
        T(test_len_over_cap),
        T(test_guest_ignores_credit),
        T(test_buffer_within_cap),
        T(test_buffer_cap),
        T(test_unknown_and_unsupported),
        T(test_connection_flood),
        T(test_transport_reset),
        T(test_device_reset),
        T(test_rx_buffer_too_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
