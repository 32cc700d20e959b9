// SPDX-License-Identifier: Apache-2.0
/* What the virtio-mmio transport (mmio.c) and the device models (blk.c, vsock.c) share. */
#ifndef SBX_VIRTIO_MMIO_H
#define SBX_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "virtio/queue.h"
#include "virtio/virtio.h"

#define VIRTIO_MAX_QUEUES 3

struct event;

/*
 * A device model plugged into the transport. Every hook runs with the device lock held, either
 * on the device thread (ioeventfd / libevent callbacks) or, when host->vm_fd < 0, on the thread
 * that wrote QueueNotify through virtio_mmio_access().
 */
struct virtio_devops {
    const char *name; /* "virtio-blk": prefix of every failure message */
    uint32_t device_id;
    uint64_t features; /* offered on top of VIRTIO_F_VERSION_1 */
    unsigned nqueues;
    /* Reads `len` bytes of the device config space at `off` (any offset: zeros past the end). */
    void (*config_read)(struct virtio_dev *d, uint64_t off, uint8_t *data, uint32_t len);
    /* The guest notified queue `q` (ready, DRIVER_OK set, device not failed). */
    void (*queue_notify)(struct virtio_dev *d, unsigned q);
    /* The driver reset the device (status 0): drop in-flight device state. */
    void (*reset)(struct virtio_dev *d);
    /* Frees the device model's state (priv). */
    void (*destroy)(struct virtio_dev *d);
};

struct virtio_dev {
    pthread_mutex_t lock; /* register accesses (vCPU threads) vs queue processing */
    struct devhost host;
    const struct virtio_devops *ops;
    void *priv; /* the device model */
    uint64_t mmio_base;
    uint32_t gsi;

    /* Transport registers, as the driver last wrote them. */
    uint32_t status;
    uint32_t dev_features_sel, drv_features_sel;
    uint64_t drv_features;
    uint32_t queue_sel;
    uint32_t int_status;
    uint32_t config_gen;
    bool failed; /* fail() was called: nothing is processed any more */

    struct virtqueue vq[VIRTIO_MAX_QUEUES];

    /* KVM notification plumbing (vm_fd >= 0 only). */
    int irqfd;
    int ioeventfd[VIRTIO_MAX_QUEUES];
    struct event *notify_ev[VIRTIO_MAX_QUEUES];
    bool irqfd_assigned, ioeventfd_assigned[VIRTIO_MAX_QUEUES];
};

/* Allocates the transport for `ops`, registers ioeventfds / the irqfd when host->vm_fd >= 0.
   The caller sets d->priv afterwards. Returns 0 or a negative SBX_E* code with a message. */
int virtio_mmio_create(struct virtio_dev **out, const struct devhost *host,
                       const struct virtio_devops *ops, uint64_t mmio_base, uint32_t gsi, char *err,
                       size_t errlen);

/* The guest broke the device contract: reports "<device>: <message>" through host->fail once,
   marks the device failed (DEVICE_NEEDS_RESET) and stops processing. Lock held. */
void virtio_mmio_fail(struct virtio_dev *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* True when the driver finished setup (DRIVER_OK), the device has not failed and queue q is
   ready: the only state in which queue q may be touched. Lock held. */
bool virtio_mmio_queue_live(const struct virtio_dev *d, unsigned q);

/* Asks for queue q to be processed again on a later device-thread iteration (so one busy
   queue cannot starve the others). Returns false when that is impossible (vm_fd < 0): the
   caller then keeps processing. Lock held. */
bool virtio_mmio_defer(struct virtio_dev *d, unsigned q);

/* Raises one interrupt if any queue published used buffers since the last call (and the driver
   did not suppress it). Call once at the end of a batch. Lock held. */
void virtio_mmio_signal_used(struct virtio_dev *d);

#endif
