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
#include "net/net.h"
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
/* Error messages are per calling thread (several threads may use one sandbox); the least
   recently used slot is recycled when more threads than slots have failed calls. */
#define SBX_ERR_SLOTS 16
struct errslot {
    pthread_t tid;
    bool used;
    uint64_t stamp;
    char msg[SBX_ERRMSG_MAX];
};

/* Interrupt slots: each blocking call claims one (lib/agent/conn.c); sbx_interrupt() writes
   to every claimed slot's eventfd, without locks (async-signal-safe). */
#define SBX_CALL_SLOTS 64
struct callslot {
    atomic_int used;
    atomic_int fd; /* eventfd created on first use, -1 before */
};

struct agent_conn;
struct reap;
struct snap_restore;
struct expose_state;
struct netfilter;
struct net;

enum io_ctl { IO_RUN, IO_PARK, IO_QUIT };

struct sbx {
    char id[32];
    atomic_int state;         /* enum sbx_state */
    atomic_uint refs;         /* the application's (until sbx_destroy) + open sub-handles */
    pthread_mutex_t err_lock; /* guards errs */
    struct errslot errs[SBX_ERR_SLOTS];
    uint64_t err_stamp;
    struct callslot calls[SBX_CALL_SLOTS];

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
    struct virtio_dev *vdev[SBX_MAX_DISKS + 3]; /* root, extra disks, vsock, net */
    unsigned nvdev;
    struct virtio_dev *vsock;
    struct virtio_dev *root_disk;
    /* The root disk's diff layers (bottom first) over rootfs_path and its size: set when the
       sandbox comes from a snapshot or a template build (lib/snap). The bottom root_durable
       ones are template store layers, referenced by path by the next snapshot; the others
       are merged into that snapshot's own diff. */
    char **root_layers;
    unsigned nroot_layers, root_durable;
    uint64_t root_size;
    bool base_pinned; /* snap_pin(): rootfs_path's identity below, root_layers absolute */
    uint64_t base_size;
    uint32_t base_crc;
    struct snap_restore *restore; /* the snapshot being restored (inside sbx_create) */
    struct reap *reap;            /* vm_teardown_async: what to release later */
    /* Network (lib/ops/network.c): the mode, the filter made from the options (handed to the
       device when it is created), and the device's NAT. */
    int network;          /* enum sbx_network_mode */
    struct net_link link; /* addresses and backend (tap_name points to tap_name below) */
    char *tap_name;
    struct netfilter *nf;
    struct net *net;

    /* Device/IO thread */
    struct event_base *evbase;
    pthread_t io_thread;
    bool io_running;
    int io_ctl;     /* enum io_ctl, under park_lock: what the device thread does after a break */
    bool io_parked; /* under park_lock: it stands still (vm_io_pause) */
    struct thread_filter *io_filter; /* entered by the device thread first, or NULL */
    bool seccomp;                    /* vCPU and device threads enter seccomp filters */
    bool drop_caps;                  /* ... and give up their capabilities (SBX_CREATE_DROP_CAPS) */
    /* The isolated mode (lib/isolate/): the child running the VMM, its control socket, its
       console pipe, and the thread that reads both. */
    bool isolated;
    bool unlisted;    /* not in the registry: the isolated mode's child (its parent lists it) */
    char *iso_cgroup; /* options.cgroup, or NULL */
    pid_t iso_pid;
    int iso_pidfd, iso_ctl, iso_console;
    pthread_t iso_monitor;
    bool iso_monitor_running;
    atomic_bool iso_stopping;
    int io_stop_fd;
    struct event *io_stop_ev;
    struct event *life_ev;

    /* Lifecycle: intr_fd is written by sbx_interrupt(); dead_fd when the VM ends. */
    int intr_fd, dead_fd;
    atomic_bool stopping;
    atomic_bool shutdown_requested; /* set by the caller, read by vCPU threads */
    /* Parking (lib/snap): while park_req is set, vCPU threads leave KVM_RUN (with their
       pending I/O completed) and wait on park_cond; `parked` counts them. */
    pthread_mutex_t park_lock;
    pthread_cond_t park_cond;
    atomic_bool park_req;
    unsigned parked;
    pthread_mutex_t stop_lock; /* guards stop_msg */
    char stop_msg[512];

    int ctl_fd;        /* agent control connection (Hello done) */
    uint32_t features; /* AGENT_FEATURE_* envd announced */
    sbx_info info;

    /* Operations (lib/agent/conn.c): idle envd connections, and a unix socket path instead
       of vsock when the agent is a local test process (lib/local.c). */
    pthread_mutex_t pool_lock;
    struct agent_conn *pool;
    unsigned npool;
    char *local_sock;
    /* Port exposure (lib/ops/expose.c): listeners and relays, created on first use. */
    _Atomic(struct expose_state *) expose;
    /* The guest port of the code interpreter service (lib/ops/code.c): SBX_CODE_PORT; unit
       tests point it elsewhere. */
    unsigned code_port;

    /* Settings sent to envd (Configure) and metadata. */
    char **envs, *default_user; /* envs NULL-terminated */
    char *default_cwd;          /* a template's WORKDIR, or NULL */
    char **meta;                /* "key=value", NULL-terminated */
    unsigned max_processes;     /* the guest workload's pids limit, 0 = none */
    unsigned buffer_mib;        /* cap on pending guest data of host connections (vsock) */
    size_t nmeta;

    /* Lifetime: a timerfd watched by the device thread; expired once it fired. */
    int life_fd;
    uint64_t lifetime_ms; /* from the options, armed once running */
    atomic_bool expired;
    _Atomic uint64_t ends_ns; /* CLOCK_REALTIME end, 0 = none */
    uint64_t created_ns;      /* CLOCK_REALTIME at sbx_create() */
    uint64_t running_mono_ns; /* CLOCK_MONOTONIC when it became RUNNING */
};

/* Sub-handles (sbx_proc, sbx_file, sbx_watch) hold the sandbox: its memory is freed when
   sbx_destroy() has run and the last of them is closed. sbx_ref() returns sb. */
struct sbx *sbx_ref(struct sbx *sb);
void sbx_unref(struct sbx *sb);

/* The calling thread's error buffer for this sandbox (for appending to a message). */
char *sbx_errbuf(struct sbx *sb);

/* Appends why the VM ended and its last console lines to the calling thread's message. */
void sbx_explain_guest(struct sbx *sb);

/* For unit tests: a handle without a VM whose agent is a local envd listening on the unix
   socket `sock` (envd --test-listen=PATH). Operations work as on a real sandbox. */
int sbx_local_attach(const char *sock, const sbx_options *opts, sbx **out);

/* sbx_create() with flags: SBX_CREATE_DROP_CAPS makes the VMM's threads give up their
   capabilities (the isolated mode's child, lib/isolate/child.c). */
#define SBX_CREATE_DROP_CAPS 1u
int sbx_create_flags(sbx **out, const sbx_options *opts, unsigned flags);

/* ... from the snapshot in `snapdir` as a resume (2) or a fork (3) (the isolated mode's child
   for its parent's sbx_resume() and sbx_fork()). */
int sbx_create_origin(sbx **out, const sbx_options *opts, const char *snapdir, unsigned how,
                      unsigned flags);

/* For the template builder: boots a sandbox whose root disk is options.rootfs with `layers`
   (template store layers, bottom first) over it, `size` bytes large (0: the image's), whose
   processes start in `cwd` by default (NULL: the user's home). */
int sbx_create_layered(sbx **out, const sbx_options *opts, char *const *layers, unsigned n,
                       uint64_t size, const char *cwd);

/* Opens a new stream to envd (vsock, or the local test socket); fd is non-blocking. */
int sbx_agent_dial(struct sbx *sb, int *fd);

/* lib/ops/network.c: checks and keeps the network options (a version 2 options struct). */
int network_options(struct sbx *sb, const sbx_options *o);
void network_free(struct sbx *sb);

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
