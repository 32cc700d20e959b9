/* SPDX-License-Identifier: Apache-2.0 */
/* The sandbox handle and the internal calls shared by the API layer and the VMM. */
#ifndef SBX_INTERNAL_H
#define SBX_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sandbox.h"
#include "virtio/virtio.h"
#include "vmm/bus.h"
#include "vmm/guestmem.h"
#include "vmm/serial.h"

struct vcpu;
struct virtio_dev;
struct event_base;
struct event;

#define SBX_MAX_DISKS  16
#define SBX_MAX_VCPUS  64
#define SBX_ERRMSG_MAX 4096
#define SBX_ENVD_PORT  49983 /* the guest agent's vsock port (E2B's envd port, for familiarity) */
#define SBX_GUEST_CID  3

/* The sandbox handle. Everything a sandbox owns hangs off it: no process-wide state. */
struct sbx {
    char id[32];
    atomic_int state; /* enum sbx_state */
    char errmsg[SBX_ERRMSG_MAX];

    /* Options, with strings owned by the handle. */
    char *kernel_path;
    char *rootfs_path;
    char *cmdline_extra;
    unsigned vcpus, memory_mib, boot_timeout_ms;
    int console_fd;
    unsigned ndisks;
    struct {
        char *path, *serial;
        int read_only, ephemeral;
    } disks[SBX_MAX_DISKS];

    /* VM */
    int kvm_fd, vm_fd;
    int run_size;      /* KVM_GET_VCPU_MMAP_SIZE */
    bool tsc_deadline; /* KVM_CAP_TSC_DEADLINE_TIMER */
    struct guestmem mem;
    size_t mem_map_size; /* bytes mmap'ed for mem.lo (+ hi) */
    struct vcpu *vcpu;   /* array of sb->vcpus entries */
    unsigned nvcpu_created;
    uint64_t entry; /* kernel entry point */
    unsigned built; /* number of build stages completed (for unwinding) */

    /* Devices */
    struct bus pio, mmio;
    struct serial serial; /* lives as long as the handle: the console stays readable */
    struct devhost devhost;
    struct virtio_dev *vdev[SBX_MAX_DISKS + 2];
    unsigned nvdev;
    struct virtio_dev *vsock;

    /* Device/IO thread */
    struct event_base *evbase;
    pthread_t io_thread;
    bool io_running;
    int io_stop_fd;
    struct event *io_stop_ev;

    /* Lifecycle: intr_fd is written by sbx_interrupt(); dead_fd when the VM ends. */
    int intr_fd, dead_fd;
    atomic_bool stopping;
    atomic_bool shutdown_requested; /* set by the caller, read by vCPU threads */
    pthread_mutex_t stop_lock;      /* guards stop_msg */
    char stop_msg[512];

    int ctl_fd; /* agent control connection (Hello done) */
    sbx_info info;
};

/* Sets the handle's error message (printf-style) and returns `code`. */
int sbx_seterr(struct sbx *sb, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Ends the VM: records `state` (SBX_STATE_STOPPED or SBX_STATE_FAILED) and the reason if it is
 * the first stop, wakes every waiter (dead_fd) and kicks the vCPUs out of KVM_RUN. Callable from
 * any library thread, any number of times.
 */
void sbx_stop(struct sbx *sb, int state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The guest reset its machine (keyboard controller, triple fault, system event): decide
   whether that was a requested shutdown, a reboot, or a kernel panic, and stop the VM. */
void sbx_guest_reset(struct sbx *sb, const char *how);

#endif
