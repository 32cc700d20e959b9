// SPDX-License-Identifier: Apache-2.0
/* The virtio-mmio version 2 transport: registers, feature negotiation, status, notifications. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <event2/event.h>
#include <linux/kvm.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>

#include "sandbox.h"
#include "virtio/mmio.h"

#define MMIO_MAGIC   0x74726976 /* "virt" */
#define MMIO_VERSION 2          /* modern (virtio 1.x) register layout */
#define MMIO_VENDOR  0x00584253 /* "SBX" */

/* Status bits the driver may set, in the order the spec's initialisation sequence sets them. */
#define STATUS_DRIVER_BITS                                                                         \
    (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |          \
     VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED)

static uint64_t offered_features(const struct virtio_dev *d)
{
    return d->ops->features | (1ULL << VIRTIO_F_VERSION_1);
}

void virtio_mmio_fail(struct virtio_dev *d, const char *fmt, ...)
{
    char msg[512];
    int n;
    va_list ap;

    if (d->failed)
        return;
    d->failed = true;
    d->status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    n = snprintf(msg, sizeof(msg), "%s: ", d->ops->name);
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    if (d->host.fail)
        d->host.fail(d->host.ctx, msg);
}

bool virtio_mmio_queue_live(const struct virtio_dev *d, unsigned q)
{
    return !d->failed && (d->status & VIRTIO_CONFIG_S_DRIVER_OK) && q < d->ops->nqueues &&
           d->vq[q].ready;
}

static void raise_irq(struct virtio_dev *d, uint32_t bits)
{
    d->int_status |= bits;
    if (d->irqfd >= 0) {
        uint64_t one = 1;
        /* Only fails if the counter would overflow, which means an interrupt is pending. */
        (void)!write(d->irqfd, &one, sizeof(one));
    } else if (d->host.irq_raise) {
        d->host.irq_raise(d->host.ctx, d->gsi);
    }
}

void virtio_mmio_signal_used(struct virtio_dev *d)
{
    bool any = false;

    for (unsigned i = 0; i < d->ops->nqueues; i++)
        if (d->vq[i].ready && queue_should_signal(&d->vq[i]))
            any = true;
    if (any && !d->failed)
        raise_irq(d, VIRTIO_MMIO_INT_VRING);
}

static void reset_device(struct virtio_dev *d)
{
    d->status = 0;
    d->dev_features_sel = d->drv_features_sel = 0;
    d->drv_features = 0;
    d->queue_sel = 0;
    d->int_status = 0;
    for (unsigned i = 0; i < VIRTIO_MAX_QUEUES; i++)
        queue_reset(&d->vq[i]);
    if (d->ops->reset)
        d->ops->reset(d);
}

static void write_status(struct virtio_dev *d, uint32_t val)
{
    uint32_t added;

    if (val == 0) {
        reset_device(d);
        return;
    }
    /* The driver only ever adds bits until the next reset; anything else is ignored. */
    if ((d->status & STATUS_DRIVER_BITS) & ~val)
        return;
    val &= STATUS_DRIVER_BITS;
    added = val & ~d->status;
    if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
        bool subset = !(d->drv_features & ~offered_features(d));
        bool modern = d->drv_features & (1ULL << VIRTIO_F_VERSION_1);
        /* Leaving FEATURES_OK clear is how the device refuses; the driver re-reads status. */
        if (!subset || !modern)
            val &= ~VIRTIO_CONFIG_S_FEATURES_OK;
    }
    if ((added & VIRTIO_CONFIG_S_DRIVER_OK) && !(val & VIRTIO_CONFIG_S_FEATURES_OK))
        val &= ~VIRTIO_CONFIG_S_DRIVER_OK;
    d->status = (d->status & VIRTIO_CONFIG_S_NEEDS_RESET) | val;
}

static void notify(struct virtio_dev *d, uint32_t q)
{
    if (q >= d->ops->nqueues)
        return;
    if (d->host.vm_fd >= 0) {
        /* KVM normally completes this write through the ioeventfd; if it reaches us anyway,
           hand it to the device thread the same way. */
        uint64_t one = 1;
        if (d->ioeventfd[q] >= 0)
            (void)!write(d->ioeventfd[q], &one, sizeof(one));
        return;
    }
    /* No KVM (unit tests): process synchronously on the writing thread, under the lock. */
    if (virtio_mmio_queue_live(d, q))
        d->ops->queue_notify(d, q);
}

bool virtio_mmio_defer(struct virtio_dev *d, unsigned q)
{
    uint64_t one = 1;

    if (q >= d->ops->nqueues || d->ioeventfd[q] < 0)
        return false;
    return write(d->ioeventfd[q], &one, sizeof(one)) == sizeof(one);
}

static uint32_t read_reg(struct virtio_dev *d, uint64_t off)
{
    struct virtqueue *q = d->queue_sel < d->ops->nqueues ? &d->vq[d->queue_sel] : NULL;

    switch (off) {
    case VIRTIO_MMIO_MAGIC_VALUE:
        return MMIO_MAGIC;
    case VIRTIO_MMIO_VERSION:
        return MMIO_VERSION;
    case VIRTIO_MMIO_DEVICE_ID:
        return d->ops->device_id;
    case VIRTIO_MMIO_VENDOR_ID:
        return MMIO_VENDOR;
    case VIRTIO_MMIO_DEVICE_FEATURES:
        if (d->dev_features_sel > 1)
            return 0;
        return (uint32_t)(offered_features(d) >> (32 * d->dev_features_sel));
    case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return q ? QUEUE_MAX_SIZE : 0;
    case VIRTIO_MMIO_QUEUE_NUM:
        return q ? q->num : 0;
    case VIRTIO_MMIO_QUEUE_READY:
        return q ? q->ready : 0;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
        return q ? (uint32_t)q->desc_gpa : 0;
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        return q ? (uint32_t)(q->desc_gpa >> 32) : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        return q ? (uint32_t)q->avail_gpa : 0;
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        return q ? (uint32_t)(q->avail_gpa >> 32) : 0;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
        return q ? (uint32_t)q->used_gpa : 0;
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        return q ? (uint32_t)(q->used_gpa >> 32) : 0;
    case VIRTIO_MMIO_INTERRUPT_STATUS:
        return d->int_status;
    case VIRTIO_MMIO_STATUS:
        return d->status;
    case VIRTIO_MMIO_SHM_LEN_LOW:
    case VIRTIO_MMIO_SHM_LEN_HIGH:
        return 0xffffffff; /* no shared memory regions */
    case VIRTIO_MMIO_CONFIG_GENERATION:
        return d->config_gen;
    default:
        return 0;
    }
}

/* Replaces the low or high half of a 64-bit ring address. */
static void set_half(uint64_t *v, uint32_t val, bool high)
{
    if (high)
        *v = (*v & 0xffffffffULL) | ((uint64_t)val << 32);
    else
        *v = (*v & ~0xffffffffULL) | val;
}

static void write_reg(struct virtio_dev *d, uint64_t off, uint32_t val)
{
    struct virtqueue *q = d->queue_sel < d->ops->nqueues ? &d->vq[d->queue_sel] : NULL;
    /* Queue layout may only change while the queue is disabled. */
    bool q_writable = q && !q->ready;

    switch (off) {
    case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        d->dev_features_sel = val;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        d->drv_features_sel = val;
        break;
    case VIRTIO_MMIO_DRIVER_FEATURES:
        if (d->drv_features_sel > 1 || (d->status & VIRTIO_CONFIG_S_FEATURES_OK))
            break;
        if (d->drv_features_sel)
            d->drv_features = (d->drv_features & 0xffffffffULL) | ((uint64_t)val << 32);
        else
            d->drv_features = (d->drv_features & ~0xffffffffULL) | val;
        break;
    case VIRTIO_MMIO_QUEUE_SEL:
        d->queue_sel = val;
        break;
    case VIRTIO_MMIO_QUEUE_NUM:
        if (q_writable)
            q->num = val;
        break;
    case VIRTIO_MMIO_QUEUE_DESC_LOW:
    case VIRTIO_MMIO_QUEUE_DESC_HIGH:
        if (q_writable)
            set_half(&q->desc_gpa, val, off == VIRTIO_MMIO_QUEUE_DESC_HIGH);
        break;
    case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
    case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        if (q_writable)
            set_half(&q->avail_gpa, val, off == VIRTIO_MMIO_QUEUE_AVAIL_HIGH);
        break;
    case VIRTIO_MMIO_QUEUE_USED_LOW:
    case VIRTIO_MMIO_QUEUE_USED_HIGH:
        if (q_writable)
            set_half(&q->used_gpa, val, off == VIRTIO_MMIO_QUEUE_USED_HIGH);
        break;
    case VIRTIO_MMIO_QUEUE_READY:
        if (!q)
            break;
        if (val == 1 && !q->ready) {
            if (!(d->status & VIRTIO_CONFIG_S_FEATURES_OK) || d->failed)
                break;
            if (queue_setup(d, q) == 0)
                q->ready = true;
        } else if (val == 0 && q->ready) {
            q->ready = false;
            q->desc = NULL;
            q->avail = NULL;
            q->used = NULL;
        }
        break;
    case VIRTIO_MMIO_QUEUE_NOTIFY:
        notify(d, val);
        break;
    case VIRTIO_MMIO_INTERRUPT_ACK:
        d->int_status &= ~val;
        break;
    case VIRTIO_MMIO_STATUS:
        write_status(d, val);
        break;
    default:
        break; /* read-only or unknown: ignored, like real hardware */
    }
}

void virtio_mmio_access(struct virtio_dev *d, uint64_t offset, uint8_t *data, uint32_t len,
                        bool is_write)
{
    if (!is_write)
        memset(data, 0, len);
    if (offset >= VIRTIO_MMIO_WINDOW || len > VIRTIO_MMIO_WINDOW - offset)
        return;

    pthread_mutex_lock(&d->lock);
    if (offset >= VIRTIO_MMIO_CONFIG) {
        /* Config space: any width; no device has writable config fields. */
        if (!is_write && d->ops->config_read)
            d->ops->config_read(d, offset - VIRTIO_MMIO_CONFIG, data, len);
    } else if (len == 4 && !(offset & 3)) {
        if (is_write) {
            uint32_t val;
            memcpy(&val, data, 4);
            if (!d->failed)
                write_reg(d, offset, val);
        } else {
            uint32_t val = read_reg(d, offset);
            memcpy(data, &val, 4);
        }
    }
    /* Other widths on the register block are undefined by the spec: ignored. */
    pthread_mutex_unlock(&d->lock);
}

/* ioeventfd fired on the device thread: the guest wrote QueueNotify for one queue. */
static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    struct virtio_dev *d = arg;
    uint64_t cnt;
    unsigned q;

    (void)!read(fd, &cnt, sizeof(cnt));
    pthread_mutex_lock(&d->lock);
    for (q = 0; q < d->ops->nqueues; q++)
        if (d->ioeventfd[q] == fd)
            break;
    if (virtio_mmio_queue_live(d, q))
        d->ops->queue_notify(d, q);
    pthread_mutex_unlock(&d->lock);
}

/* KVM API (Documentation/virt/kvm/api.rst), "KVM_IOEVENTFD": a 4-byte write of `q` to
   QueueNotify signals the eventfd instead of exiting to userspace. */
static int ioeventfd_ioctl(struct virtio_dev *d, unsigned q, bool assign)
{
    struct kvm_ioeventfd io = {
        .datamatch = q,
        .addr = d->mmio_base + VIRTIO_MMIO_QUEUE_NOTIFY,
        .len = 4,
        .fd = d->ioeventfd[q],
        .flags = KVM_IOEVENTFD_FLAG_DATAMATCH | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
    };
    return ioctl(d->host.vm_fd, KVM_IOEVENTFD, &io);
}

/* KVM API, "KVM_IRQFD": writing the eventfd injects an interrupt on `gsi`. */
static int irqfd_ioctl(struct virtio_dev *d, bool assign)
{
    struct kvm_irqfd irq = {
        .fd = (uint32_t)d->irqfd,
        .gsi = d->gsi,
        .flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN,
    };
    return ioctl(d->host.vm_fd, KVM_IRQFD, &irq);
}

static int setup_kvm(struct virtio_dev *d, char *err, size_t errlen)
{
    d->irqfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->irqfd < 0) {
        snprintf(err, errlen, "%s: eventfd: %s", d->ops->name, strerror(errno));
        return SBX_EIO;
    }
    if (irqfd_ioctl(d, true) < 0) {
        snprintf(err, errlen, "%s: KVM_IRQFD (gsi %u): %s", d->ops->name, d->gsi, strerror(errno));
        return SBX_EKVM;
    }
    d->irqfd_assigned = true;
    for (unsigned q = 0; q < d->ops->nqueues; q++) {
        d->ioeventfd[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (d->ioeventfd[q] < 0) {
            snprintf(err, errlen, "%s: eventfd: %s", d->ops->name, strerror(errno));
            return SBX_EIO;
        }
        if (ioeventfd_ioctl(d, q, true) < 0) {
            snprintf(err, errlen, "%s: KVM_IOEVENTFD (0x%llx, queue %u): %s", d->ops->name,
                     (unsigned long long)(d->mmio_base + VIRTIO_MMIO_QUEUE_NOTIFY), q,
                     strerror(errno));
            return SBX_EKVM;
        }
        d->ioeventfd_assigned[q] = true;
        d->notify_ev[q] =
            event_new(d->host.evbase, d->ioeventfd[q], EV_READ | EV_PERSIST, on_notify, d);
        if (!d->notify_ev[q] || event_add(d->notify_ev[q], NULL) < 0) {
            snprintf(err, errlen, "%s: cannot watch the notify eventfd", d->ops->name);
            return SBX_ENOMEM;
        }
    }
    return 0;
}

/* Undoes setup_kvm() as far as it got. */
static void teardown_kvm(struct virtio_dev *d)
{
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        if (d->notify_ev[q])
            event_free(d->notify_ev[q]);
        d->notify_ev[q] = NULL;
        if (d->ioeventfd_assigned[q])
            ioeventfd_ioctl(d, q, false);
        d->ioeventfd_assigned[q] = false;
        if (d->ioeventfd[q] >= 0)
            close(d->ioeventfd[q]);
        d->ioeventfd[q] = -1;
    }
    if (d->irqfd_assigned)
        irqfd_ioctl(d, false);
    d->irqfd_assigned = false;
    if (d->irqfd >= 0)
        close(d->irqfd);
    d->irqfd = -1;
}

int virtio_mmio_create(struct virtio_dev **out, const struct devhost *host,
                       const struct virtio_devops *ops, uint64_t mmio_base, uint32_t gsi, char *err,
                       size_t errlen)
{
    struct virtio_dev *d;
    int rc;

    *out = NULL;
    if (ops->nqueues > VIRTIO_MAX_QUEUES || !host->mem || (host->vm_fd >= 0 && !host->evbase)) {
        snprintf(err, errlen, "%s: invalid device host", ops->name);
        return SBX_EINVAL;
    }
    d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, errlen, "%s: out of memory", ops->name);
        return SBX_ENOMEM;
    }
    pthread_mutex_init(&d->lock, NULL);
    d->host = *host;
    d->ops = ops;
    d->mmio_base = mmio_base;
    d->gsi = gsi;
    d->irqfd = -1;
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        d->ioeventfd[q] = -1;
        d->vq[q].index = q;
        d->vq[q].name = "?";
        queue_reset(&d->vq[q]);
    }
    if (host->vm_fd >= 0) {
        rc = setup_kvm(d, err, errlen);
        if (rc < 0) {
            teardown_kvm(d);
            pthread_mutex_destroy(&d->lock);
            free(d);
            return rc;
        }
    }
    *out = d;
    return 0;
}

void virtio_dev_destroy(struct virtio_dev *d)
{
    if (!d)
        return;
    teardown_kvm(d);
    if (d->ops->destroy)
        d->ops->destroy(d);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

int virtio_save(struct virtio_dev *d, struct virtio_state *s)
{
    pthread_mutex_lock(&d->lock);
    int r = d->failed ? -1 : 0;
    memset(s, 0, sizeof(*s));
    s->device_id = d->ops->device_id;
    s->mmio_base = d->mmio_base;
    s->gsi = d->gsi;
    s->status = d->status;
    s->dev_features_sel = d->dev_features_sel;
    s->drv_features_sel = d->drv_features_sel;
    s->drv_features = d->drv_features;
    s->queue_sel = d->queue_sel;
    s->int_status = d->int_status;
    s->config_gen = d->config_gen;
    s->nqueues = d->ops->nqueues;
    for (unsigned i = 0; i < d->ops->nqueues; i++) {
        const struct virtqueue *q = &d->vq[i];
        s->q[i] = (struct virtio_queue_state){.num = q->num,
                                              .ready = q->ready,
                                              .desc = q->desc_gpa,
                                              .avail = q->avail_gpa,
                                              .used = q->used_gpa,
                                              .last_avail = q->last_avail,
                                              .used_idx = q->used_idx};
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

int virtio_restore(struct virtio_dev *d, const struct virtio_state *s, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (s->device_id != d->ops->device_id || s->mmio_base != d->mmio_base || s->gsi != d->gsi ||
        s->nqueues != d->ops->nqueues)
        bad = "another device at its address";
    else if (s->status & ~STATUS_DRIVER_BITS)
        bad = "status";
    else if (s->drv_features & ~offered_features(d))
        bad = "driver features";
    else if (s->int_status & ~3u)
        bad = "interrupt status";
    if (bad) {
        snprintf(err, errlen, "%s: invalid saved state (%s)", d->ops->name, bad);
        return SBX_EIMAGE;
    }
    pthread_mutex_lock(&d->lock);
    d->status = s->status;
    d->dev_features_sel = s->dev_features_sel;
    d->drv_features_sel = s->drv_features_sel;
    d->drv_features = s->drv_features;
    d->queue_sel = s->queue_sel;
    d->int_status = s->int_status;
    d->config_gen = s->config_gen;
    int r = 0;
    for (unsigned i = 0; r == 0 && i < d->ops->nqueues; i++) {
        struct virtqueue *q = &d->vq[i];
        queue_reset(q);
        q->num = s->q[i].num;
        q->desc_gpa = s->q[i].desc;
        q->avail_gpa = s->q[i].avail;
        q->used_gpa = s->q[i].used;
        if (!s->q[i].ready)
            continue;
        /* queue_setup checks size and ring addresses like a QueueReady write would. */
        if (!(s->status & VIRTIO_CONFIG_S_FEATURES_OK) || queue_setup(d, q) < 0) {
            snprintf(err, errlen, "%s: invalid saved state (queue %u)", d->ops->name, i);
            r = SBX_EIMAGE;
            break;
        }
        q->ready = true;
        queue_set_indices(q, s->q[i].last_avail, s->q[i].used_idx);
    }
    pthread_mutex_unlock(&d->lock);
    return r;
}

void virtio_resume(struct virtio_dev *d)
{
    pthread_mutex_lock(&d->lock);
    for (unsigned q = 0; q < d->ops->nqueues; q++)
        if (virtio_mmio_queue_live(d, q))
            virtio_mmio_defer(d, q);
    if (d->int_status && !d->failed)
        raise_irq(d, 0);
    pthread_mutex_unlock(&d->lock);
}
