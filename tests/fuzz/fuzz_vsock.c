// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: hostile guest tx packets through the userspace virtio-vsock device. */
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include <linux/virtio_vsock.h>

#include "fuzz_virtio.h"

/*
 * Input: byte 0 = setup flags, then packets.
 *   flags bit 0: the host connects to GPORT first (the guest sees a REQUEST), so packets can
 *                address a live connection; bit 1: the host closes its end at the end.
 *   packet: ctl, plen, then a virtio_vsock_hdr (44 bytes) and plen * 4 payload bytes.
 *     ctl bit 0: address the host connection (ports and CIDs patched in, type STREAM);
 *     bit 1: header and payload in one descriptor (else two); bit 2: header descriptor
 *     device-writable (a contract violation); bit 3: the host writes 64 bytes to its end;
 *     bits 4-5: the rx buffers posted (none / 1 / 4 / all recycled); bit 6: truncate the
 *     chain to the header only.
 * The rx queue is a well-behaved driver that recycles buffers as Linux does.
 */
#define QN        16
#define HDR       sizeof(struct virtio_vsock_hdr)
#define RXBUF     (HDR + 1024)
#define RX_GPA    0x1000u
#define TX_GPA    0x8000u
#define EV_GPA    0xa000u
#define GUEST_CID 3
#define GPORT     5000

static struct fuzz_vm vm;

struct state {
    struct virtio_dev *d;
    struct fuzz_queue q[3];
    uint16_t rx_free[QN]; /* rx buffer slots the driver may post */
    unsigned nfree;
    uint32_t host_port;
    int fd;
};

static void post_rx(struct state *s, unsigned n)
{
    while (n-- > 0 && s->nfree > 0) {
        uint16_t slot = s->rx_free[--s->nfree];
        uint64_t gpa = RX_GPA + slot * RXBUF;
        uint32_t len = RXBUF;
        bool w = true;
        /* The slot travels in the descriptor index: one-descriptor chains, round robin. */
        s->q[0].next_desc = slot;
        fuzz_fq_add(&vm, &s->q[0], &gpa, &len, &w, 1);
    }
    fuzz_write32(s->d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

/* Consumes what the device put on rx (recording the host port of a REQUEST). */
static void drain_rx(struct state *s)
{
    uint32_t id, len;

    while (fuzz_fq_used(&vm, &s->q[0], &id, &len)) {
        if (id >= QN)
            abort(); /* the device returned a head it was never given */
        struct virtio_vsock_hdr h;
        memcpy(&h, vm.ram + RX_GPA + id * RXBUF, HDR);
        if (h.op == VIRTIO_VSOCK_OP_REQUEST && !s->host_port)
            s->host_port = h.src_port;
        if (s->nfree < QN)
            s->rx_free[s->nfree++] = (uint16_t)id;
    }
    uint32_t ev_id, ev_len;
    while (fuzz_fq_used(&vm, &s->q[2], &ev_id, &ev_len))
        ;
}

static void drain_fd(struct state *s)
{
    char buf[4096];

    if (s->fd >= 0)
        while (read(s->fd, buf, sizeof(buf)) > 0)
            ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct state s = {.fd = -1};
    char err[256];

    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;

    fuzz_vm_reset(&vm);
    if (virtio_vsock_create(&s.d, &vm.host, GUEST_CID, 0xd0001000, 6, err, sizeof(err)) != 0)
        abort();
    fuzz_negotiate(s.d);
    fuzz_fq_setup(s.d, &s.q[0], 0, QN, 0x0000);
    fuzz_fq_setup(s.d, &s.q[1], 1, QN, 0x0400);
    fuzz_fq_setup(s.d, &s.q[2], 2, QN, 0x0800);
    fuzz_driver_ok(s.d);
    for (unsigned i = 0; i < QN; i++)
        s.rx_free[s.nfree++] = (uint16_t)(QN - 1 - i);
    post_rx(&s, QN);
    {
        uint64_t gpa = EV_GPA;
        uint32_t len = 8;
        bool w = true;
        fuzz_fq_add(&vm, &s.q[2], &gpa, &len, &w, 1);
        fuzz_write32(s.d, VIRTIO_MMIO_QUEUE_NOTIFY, 2);
    }

    if (flags & 1) {
        if (virtio_vsock_connect(s.d, GPORT, &s.fd) != 0)
            abort();
        fuzz_loop(&vm);
        drain_rx(&s);
    }

    while (size >= 2 && vm.fails == 0) {
        uint8_t ctl = data[0];
        uint32_t plen = data[1] * 4u;
        data += 2;
        size -= 2;
        struct virtio_vsock_hdr h = {0};
        size_t hn = size < HDR ? size : HDR;
        memcpy(&h, data, hn);
        data += hn;
        size -= hn;
        if (ctl & 1) {
            h.src_cid = GUEST_CID;
            h.dst_cid = VSOCK_HOST_CID;
            h.src_port = GPORT;
            h.dst_port = s.host_port;
            h.type = VIRTIO_VSOCK_TYPE_STREAM;
        }
        if (plen > size)
            plen = (uint32_t)size;
        memcpy(vm.ram + TX_GPA, &h, HDR);
        memcpy(vm.ram + TX_GPA + HDR, data, plen);
        data += plen;
        size -= plen;

        uint64_t gpa[2] = {TX_GPA, TX_GPA + HDR};
        uint32_t len[2] = {HDR, plen};
        bool w[2] = {(ctl & 4) != 0, false};
        unsigned n = 2;
        if (ctl & 2) {
            len[0] = HDR + plen;
            n = 1;
        } else if ((ctl & 0x40) || plen == 0) {
            n = 1;
        }
        fuzz_fq_add(&vm, &s.q[1], gpa, len, w, n);
        fuzz_write32(s.d, VIRTIO_MMIO_QUEUE_NOTIFY, 1);

        if ((ctl & 8) && s.fd >= 0) {
            static const char msg[64] = "host to guest";
            (void)!send(s.fd, msg, sizeof(msg), MSG_NOSIGNAL);
        }
        fuzz_loop(&vm);
        drain_rx(&s);
        drain_fd(&s);
        unsigned post[4] = {0, 1, 4, QN};
        post_rx(&s, post[(ctl >> 4) & 3]);
        fuzz_loop(&vm);
        drain_rx(&s);
        uint32_t id, ulen;
        while (fuzz_fq_used(&vm, &s.q[1], &id, &ulen))
            ;
    }

    if (s.fd >= 0 && (flags & 2)) {
        close(s.fd);
        s.fd = -1;
        fuzz_loop(&vm);
        drain_rx(&s);
    }
    virtio_dev_destroy(s.d);
    if (s.fd >= 0)
        close(s.fd);
    fuzz_loop(&vm);
    return 0;
}
