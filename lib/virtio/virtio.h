/* SPDX-License-Identifier: Apache-2.0 */
/* What the VMM and the virtio devices (virtio-mmio transport, blk, vsock) know of each other. */
#ifndef SBX_VIRTIO_H
#define SBX_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/guestmem.h"

struct event_base;

/*
 * What the VMM lends every device. All queue processing runs on the device thread (the
 * libevent loop `evbase`); MMIO register accesses arrive on vCPU threads through
 * virtio_mmio_access(). Devices lock their own state.
 */
struct devhost {
    const struct guestmem *mem;
    struct event_base *evbase; /* the sandbox's device/IO thread loop */
    /* KVM VM fd for KVM_IOEVENTFD (QueueNotify) and KVM_IRQFD (interrupt). -1 in unit tests:
       then notifications are delivered by virtio_mmio_access() writes and interrupts by
       calling irq_raise. */
    int vm_fd;
    void (*irq_raise)(void *ctx, uint32_t gsi); /* used only when vm_fd < 0 */
    /* The guest violated the device contract (a descriptor outside RAM, a loop, an absurd
       index...). The VMM marks the sandbox failed with `msg` and stops it; the device must
       stop processing (it is called at most once per device and may be called on any thread).
     */
    void (*fail)(void *ctx, const char *msg);
    void *ctx;
};

struct virtio_dev; /* one virtio-mmio device: transport + device model */

/* Sizes of every virtio-mmio device window. */
#define VIRTIO_MMIO_WINDOW 0x1000

/* Handles a guest access to the device's MMIO window (offset relative to its base). For
   reads, fills data[0..len). Called from vCPU threads, any number at once. */
void virtio_mmio_access(struct virtio_dev *d, uint64_t offset, uint8_t *data, uint32_t len,
                        bool is_write);

/* Frees a device. The device thread must no longer run (or be stopped) when this is called. */
void virtio_dev_destroy(struct virtio_dev *d);

/* ---- snapshots: the transport state of a device ---- */
#define VIRTIO_STATE_QUEUES 3
struct virtio_queue_state {
    uint32_t num;
    bool ready;
    uint64_t desc, avail, used;
    uint16_t last_avail, used_idx;
};
struct virtio_state {
    uint32_t device_id;
    uint64_t mmio_base;
    uint32_t gsi;
    uint32_t status, dev_features_sel, drv_features_sel, queue_sel, int_status, config_gen;
    uint64_t drv_features;
    unsigned nqueues;
    struct virtio_queue_state q[VIRTIO_STATE_QUEUES];
};

/* Copies the transport state (register file, queue configuration and indices). The device
   thread must not run. Fails (-1) if the device has failed. */
int virtio_save(struct virtio_dev *d, struct virtio_state *s);

/* Loads a saved transport state into a new device of the same kind at the same address:
   every value is checked (status bits, features, queue sizes and ring addresses inside guest
   RAM) before use. Returns 0 or SBX_EIMAGE with a message. */
int virtio_restore(struct virtio_dev *d, const struct virtio_state *s, char *err, size_t errlen);

/* After a restore, once the device thread runs: processes every live queue once (a
   notification may have been pending when the snapshot was taken) and raises the interrupt
   again if one was pending. */
void virtio_resume(struct virtio_dev *d);

/* ---- virtio-blk ---- */
enum blk_mode {
    BLK_RW,        /* guest writes go to the file */
    BLK_RO,        /* read-only: VIRTIO_BLK_F_RO, writes refused */
    BLK_EPHEMERAL, /* file opened read-only; writes go to a private sparse overlay, discarded */
};

struct blk_config {
    const char *path;
    enum blk_mode mode;
    const char *serial; /* VIRTIO_BLK_T_GET_ID, <= 20 bytes, or NULL */
    /* BLK_EPHEMERAL only: diff layers over `path` (files written by virtio_blk_save_diff for a
       disk of this size), bottom first, and the disk's size (0: the file's; larger: the disk
       grows, the new tail reads as zeros). */
    const char *const *layers;
    unsigned nlayers;
    uint64_t size;
};

/* Opens the backing file and creates the device at guest-physical `mmio_base` raising `gsi`.
   On failure returns a negative SBX_E* code and writes a message to err. */
int virtio_blk_create(struct virtio_dev **out, const struct devhost *host,
                      const struct blk_config *cfg, uint64_t mmio_base, uint32_t gsi, char *err,
                      size_t errlen);

/* The disk's size in bytes. */
uint64_t virtio_blk_size(struct virtio_dev *d);

/* Writes a diff layer to `fd` (an empty file): every block that differs from the base file
   and the bottom `keep` layers, i.e. the private overlay merged with the layers above `keep`.
   The device thread must not run. *bytes receives the data bytes copied. Returns 0 or an
   SBX_E* code with a message. */
int virtio_blk_save_diff(struct virtio_dev *d, int fd, unsigned keep, uint64_t *bytes, char *err,
                         size_t errlen);

/* Writes a diff layer of the blocks the guest wrote since the previous call (or since the
   device was created): one build step's changes, to stack on the layers below. Callable while
   the device thread runs (the device lock is held meanwhile). */
int virtio_blk_save_dirty(struct virtio_dev *d, int fd, uint64_t *bytes, char *err, size_t errlen);

/* ---- virtio-vsock (userspace device; there is no vhost-vsock) ---- */
#define VSOCK_HOST_CID 2

int virtio_vsock_create(struct virtio_dev **out, const struct devhost *host, uint64_t guest_cid,
                        uint64_t mmio_base, uint32_t gsi, char *err, size_t errlen);

/*
 * Opens a stream connection from the host to the guest's vsock `port`. Returns 0 and stores in
 * *fd one end of a SOCK_STREAM socketpair (non-blocking, close-on-exec, owned by the caller):
 * bytes written to it reach the guest, bytes the guest sends can be read from it. If the guest
 * refuses the connection (RST, nobody listening) or resets it later, the device closes its end,
 * so the caller reads EOF. Callable from any thread.
 */
int virtio_vsock_connect(struct virtio_dev *d, uint32_t port, int *fd);

/* Drops every connection the guest knows of (their callers read EOF) and tells the guest
   driver with VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (after a snapshot restore, the guest's
   sockets refer to host state that no longer exists). Call on the device thread, or while it
   does not run. */
void virtio_vsock_transport_reset(struct virtio_dev *d);

/* Caps the memory all connections together may hold for guest data their host side has not
   read yet (64 MiB by default); a connection that would need more is reset. Any thread. */
void virtio_vsock_set_buffer_cap(struct virtio_dev *d, size_t bytes);

/* Overrides how long a REQUEST may stay unanswered and how long after our SHUTDOWN the guest
   has to send RST (both 10 s by default). For tests. Callable from any thread. */
void virtio_vsock_set_timeouts(struct virtio_dev *d, unsigned connect_ms, unsigned close_ms);

/* ---- virtio-net (no offloads, a large MTU; frames go to and come from a backend) ---- */
struct net_backend {
    /* A frame the guest sent (Ethernet header first, no virtio header), on the device thread
       with the device lock held. The backend copies what it keeps; it may answer at once
       with virtio_net_receive(). */
    void (*send)(void *ctx, const uint8_t *frame, size_t len);
    /* Optional: the end of a batch of send() calls (same thread, lock held). */
    void (*flush)(void *ctx);
    void *ctx;
};

struct virtio_net_stats {
    uint64_t tx_frames, tx_bytes, tx_dropped, rx_frames, rx_bytes, rx_dropped;
};

/* mtu: announced to the guest (VIRTIO_NET_F_MTU), 576..65535. */
int virtio_net_create(struct virtio_dev **out, const struct devhost *host, const uint8_t mac[6],
                      unsigned mtu, const struct net_backend *be, uint64_t mmio_base, uint32_t gsi,
                      char *err, size_t errlen);

/* Delivers a frame to the guest (copied). Frames wait, boundedly, while the driver has posted
   no receive buffers; beyond that, or while the driver is not ready, they are dropped (the
   guest's TCP retransmits). Call with the device lock held (the backend holds it in its
   own callbacks, and net_backend.send runs with it). */
void virtio_net_receive(struct virtio_dev *d, const uint8_t *frame, size_t len);

/* The device's counters. Callable from any thread. */
void virtio_net_stats(struct virtio_dev *d, struct virtio_net_stats *out);

#endif
