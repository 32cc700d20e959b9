/* SPDX-License-Identifier: Apache-2.0 */
/* libsandbox public API: hardware-isolated Linux sandboxes (KVM microVMs) inside your process. */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SBX_BUILDING)
#define SBX_API __attribute__((visibility("default")))
#else
#define SBX_API
#endif

/*
 * Conventions
 * -----------
 * - Every fallible call returns 0 or a negative SBX_E* code. The handle keeps a message with
 *   context (which ioctl, which path, the last console lines when a guest died): sbx_errmsg().
 * - Options structs start with a `version` field and only grow at the end. Initialise them
 *   with their *_INIT macro; a NULL options pointer means "all defaults".
 * - Threading: separate handles are fully independent and may be used from different threads
 *   at once. One handle is used by one thread at a time, except sbx_interrupt(), which any
 *   thread may call at any time. Blocking calls take a timeout and never block longer.
 * - The library never calls exit(), never writes to stdout/stderr (only to sinks you give it)
 *   and keeps no process-global mutable state. It installs exactly one signal handler, a
 *   no-op for SBX_KICK_SIGNAL (SIGRTMIN + 6), used to kick vCPU threads out of KVM_RUN; it is
 *   installed only if that signal still has its default disposition, and the signal is
 *   blocked on every other thread the library creates.
 */

/* Error codes (negative return values). */
enum sbx_error {
    SBX_OK = 0,
    SBX_EINVAL = -1,    /* bad argument or option */
    SBX_ENOMEM = -2,    /* out of host memory */
    SBX_ENOKVM = -3,    /* /dev/kvm missing, inaccessible, or unable to boot a standard guest */
    SBX_EKVM = -4,      /* a KVM ioctl failed */
    SBX_EIMAGE = -5,    /* kernel or root filesystem missing, unreadable or malformed */
    SBX_ETIMEDOUT = -6, /* the operation did not finish within its timeout */
    SBX_EGUEST = -7,    /* the guest stopped, crashed, or violated the device contract */
    SBX_EPROTO = -8,    /* the guest agent sent something malformed */
    SBX_EINTR = -9,     /* interrupted by sbx_interrupt() */
    SBX_ESTATE = -10,   /* the sandbox is not running */
    SBX_EIO = -11,      /* host I/O error */
    SBX_ENOTSUP = -12,  /* not supported by this host or guest */
};

/* Returns a static, human-readable name for an SBX_E* code (never NULL). */
SBX_API const char *sbx_strerror(int code);

/* The library version, "MAJOR.MINOR.PATCH" (static string). */
SBX_API const char *sbx_version(void);

/* One sandbox: a microVM with its guest agent. Opaque. */
typedef struct sbx sbx;

/* An additional block device for the guest (/dev/vdb, /dev/vdc, ... in order). */
typedef struct sbx_disk {
    const char *path;   /* host file or block device */
    int read_only;      /* non-zero: the guest cannot write (VIRTIO_BLK_F_RO) */
    int ephemeral;      /* non-zero: guest writes go to a private overlay, discarded at
                           destroy; the file itself is opened read-only */
    const char *serial; /* VIRTIO_BLK_ID serial (<= 20 bytes), NULL for none */
} sbx_disk;

#define SBX_OPTIONS_VERSION 1

typedef struct sbx_options {
    unsigned version; /* SBX_OPTIONS_VERSION */
    /* Guest kernel: path to an uncompressed ELF vmlinux or a bzImage. NULL: $SBX_KERNEL, else
       "vmlinux" in the image directory (see below). */
    const char *kernel;
    /* Root filesystem (an ext4 image): a path (contains '/'), or a name looked up as
       "<name>.ext4" in the image directory. NULL: "base". The image is never modified:
       guest writes go to a private copy-on-write overlay discarded at sbx_destroy(). */
    const char *rootfs;
    unsigned vcpus;           /* 1..64; 0 means 1 */
    unsigned memory_mib;      /* 64..65536; 0 means 512 */
    unsigned boot_timeout_ms; /* sbx_create() fails after this long; 0 means 30000 */
    /* A file descriptor that receives a copy of everything the guest writes to its serial
       console, written from a vCPU thread. 0 (the default) means none. The library does not
       close it. Console output is always kept in a per-sandbox ring (sbx_console()). */
    int console_fd;
    const char *cmdline_extra; /* appended to the guest kernel command line, or NULL */
    const sbx_disk *disks;     /* extra disks, or NULL */
    unsigned ndisks;           /* number of entries in disks (at most 16) */
    /* Image directory for names above. NULL: $SBX_CACHE_DIR, else $XDG_CACHE_HOME/libsandbox,
       else $HOME/.cache/libsandbox (where `make images` puts kernel and root filesystems). */
    const char *image_dir;
} sbx_options;

#define SBX_OPTIONS_INIT                                                                           \
    {                                                                                              \
        SBX_OPTIONS_VERSION, NULL, NULL, 0, 0, 0, 0, NULL, NULL, 0, NULL                           \
    }

/*
 * Creates a sandbox: builds a microVM in this process, boots the guest kernel with the guest
 * agent (envd) as PID 1, and returns once envd has answered Hello over virtio-vsock.
 *
 * out:  receives the handle. On failure it still receives a handle in the failed state
 *       (unless it was impossible to allocate one: then NULL), so that sbx_errmsg() can tell
 *       what went wrong (with the last console lines if the guest died). In every case the
 *       caller releases a non-NULL *out with sbx_destroy().
 * opts: options, or NULL for defaults. Copied; need not outlive the call.
 * Returns 0, SBX_EINVAL, SBX_ENOMEM, SBX_ENOKVM (no usable KVM: for example a PVM /dev/kvm,
 * which cannot run a standard guest kernel), SBX_EKVM, SBX_EIMAGE, SBX_ETIMEDOUT, SBX_EGUEST,
 * SBX_EPROTO or SBX_EINTR. Blocks for at most opts->boot_timeout_ms.
 */
SBX_API int sbx_create(sbx **out, const sbx_options *opts);

/*
 * Stops the guest (if it still runs) and frees everything the sandbox holds: threads, file
 * descriptors, guest memory, disk overlays. NULL is accepted. Must not race with other calls
 * on the same handle, except sbx_interrupt() until sbx_destroy() begins.
 */
SBX_API void sbx_destroy(sbx *sb);

/* The message of the last failed call on this handle ("" if none). Valid until the next call
   on the handle. NULL handle: a static message. */
SBX_API const char *sbx_errmsg(const sbx *sb);

/* Sandbox states. */
enum sbx_state {
    SBX_STATE_BOOTING = 0, /* inside sbx_create() */
    SBX_STATE_RUNNING = 1, /* guest up, agent answered */
    SBX_STATE_STOPPED = 2, /* the guest shut down or rebooted (sbx_shutdown, reboot, halt) */
    SBX_STATE_FAILED = 3,  /* the guest crashed or violated the device contract; see errmsg */
};

/* The current state (enum sbx_state). Never blocks. */
SBX_API int sbx_state(const sbx *sb);

/* What the guest reported when its agent said Hello, and the sandbox's resources. */
typedef struct sbx_info {
    char id[32];               /* sandbox id: lowercase alphanumeric, unique per process */
    char kernel_release[65];   /* the guest's uname -r */
    char envd_version[32];     /* version of the guest agent */
    uint32_t protocol_version; /* agent protocol version negotiated */
    unsigned vcpus;            /* vCPUs of the VM */
    unsigned memory_mib;       /* guest RAM */
    uint64_t boot_ns;          /* sbx_create() duration until Hello, in nanoseconds */
    /* As the guest reports them (it may be lying: use for display, not for decisions). */
    unsigned guest_cpus;    /* online CPUs */
    uint64_t guest_mem_kib; /* MemTotal (RAM minus what the kernel reserved) */
    char os_name[128];      /* PRETTY_NAME of the root filesystem's os-release, or "" */
} sbx_info;

/* Fills *info. Returns 0, or SBX_EINVAL. Never blocks. */
SBX_API int sbx_get_info(sbx *sb, sbx_info *info);

/*
 * Round trip to the guest agent (a Ping on a fresh vsock connection). Returns 0,
 * SBX_ETIMEDOUT, SBX_ESTATE (sandbox not running), SBX_EGUEST, SBX_EPROTO or SBX_EINTR.
 * timeout_ms 0 means 10000.
 */
SBX_API int sbx_ping(sbx *sb, unsigned timeout_ms);

/*
 * Asks the guest to shut down cleanly (envd syncs and unmounts the disks, then the kernel
 * reboots, which ends the VM) and waits until the VM has stopped. Afterwards the state is
 * SBX_STATE_STOPPED. Returns 0, SBX_ETIMEDOUT (the VM was then stopped forcibly), SBX_ESTATE
 * or SBX_EINTR. timeout_ms 0 means 10000.
 */
SBX_API int sbx_shutdown(sbx *sb, unsigned timeout_ms);

/*
 * Copies the most recent console output (the ring keeps the last 64 KiB) into buf, NUL-
 * terminated, and returns the number of bytes copied without the NUL. Safe to call in any
 * state, including after a failed sbx_create().
 */
SBX_API size_t sbx_console(const sbx *sb, char *buf, size_t cap);

/*
 * Makes the blocking call currently running on this handle (sbx_create, sbx_ping,
 * sbx_shutdown, ...) return SBX_EINTR as soon as possible. Callable from any thread and from
 * a signal handler (async-signal-safe: it writes to an eventfd). Has no effect on calls that
 * start after it returns.
 */
SBX_API void sbx_interrupt(sbx *sb);

#ifdef __cplusplus
}
#endif
#endif
