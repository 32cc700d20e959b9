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
 * - Threading: separate sandboxes are fully independent. On one sandbox, every call except
 *   sbx_create() and sbx_destroy() may be made from several threads at once: each operation
 *   uses its own connection to the guest agent. A sub-handle (sbx_proc, sbx_file, sbx_watch)
 *   is used by one thread at a time. sbx_interrupt() may be called from any thread at any
 *   time. Blocking calls take a timeout and never block longer.
 * - Errors of calls on a sandbox or its sub-handles are reported per thread: sbx_errmsg(sb)
 *   returns the message of the calling thread's last failed call on that sandbox.
 * - Strings lists ("KEY=VALUE" environments, argv) are NULL-terminated arrays of pointers,
 *   like environ.
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
    /* The guest's answers to operations (files, processes): */
    SBX_ENOENT = -13,    /* no such file, directory, user or process */
    SBX_EACCES = -14,    /* permission denied in the guest */
    SBX_ENOTDIR = -15,   /* a path component is not a directory */
    SBX_EISDIR = -16,    /* is a directory */
    SBX_ENOSPC = -17,    /* no space left on the guest's disk (or out of guest memory) */
    SBX_EEXIST = -18,    /* already exists */
    SBX_ENOTEMPTY = -19, /* directory not empty */
    SBX_EBUSY = -20,     /* a limit was reached (processes, connections, watches) */
    SBX_EDEAD = -21,     /* the guest died (kernel panic, envd killed, out of memory) or the
                            sandbox's lifetime ran out: nothing more can be done with it */
    SBX_EAGAIN = -22,    /* nothing available yet (non-blocking calls with timeout 0) */
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

/* Guest networking modes (docs/networking.md). */
enum sbx_network_mode {
    SBX_NET_NAT = 0,  /* default: eth0 behind a user-mode NAT in the library (libslirp): no root,
                         no host configuration; the egress policy applies */
    SBX_NET_NONE = 1, /* no network device: only loopback */
    SBX_NET_TAP = 2,  /* eth0 on an existing TAP device (tap_name), for deployments that bridge
                         or route sandboxes onto a real network; addresses from tap_address,
                         tap_gateway, tap_dns; the egress policy applies */
};

/*
 * What the guest may reach (E2B's semantics). Entries of allow_out and deny_out are IPv4
 * addresses ("10.1.2.3"), CIDR blocks ("10.0.0.0/8"; "0.0.0.0/0" is everything) or domain
 * names ("example.com", "*.example.com" for its subdomains), each optionally followed by
 * ":PORT" or ":LOW-HIGH". A destination matched by an allow entry is reachable even if a deny
 * entry matches it too; otherwise a matching deny entry blocks it; otherwise it is reachable.
 * Domain entries match the addresses the guest learned from DNS answers for those names.
 * Blocked TCP connections are refused (RST), blocked UDP and ICMP get "administratively
 * prohibited". Lists are NULL-terminated; at most 1024 entries each.
 */
typedef struct sbx_net_policy {
    int block_internet;           /* non-zero: like deny_out "0.0.0.0/0" (E2B's
                                     allowInternetAccess = false) */
    const char *const *allow_out; /* or NULL */
    const char *const *deny_out;  /* or NULL */
} sbx_net_policy;

#define SBX_OPTIONS_VERSION 5

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
    /* Environment of every process in the sandbox ("KEY=VALUE", NULL-terminated), under the
       per-call environments. NULL: none beyond the guest's defaults (PATH, HOME, ...). */
    const char *const *envs;
    /* Who runs commands and owns new files when a call names no user: a user name or a
       decimal uid, resolved in the guest. NULL: "user" if the guest has one, else "root". */
    const char *default_user;
    /* Free-form labels ("key=value", NULL-terminated; keys unique, at most 64 entries of at
       most 1 KiB each). Readable with sbx_metadata(); listed by `sbx ls`. */
    const char *const *metadata;
    /* Lifetime in milliseconds: the sandbox stops on its own this long after sbx_create()
       returns (later calls fail with SBX_EDEAD "lifetime expired"); see sbx_set_timeout().
       0 means no limit. */
    uint64_t lifetime_ms;

    /* Since version 2: networking (docs/networking.md). */
    int network;               /* enum sbx_network_mode; 0 = SBX_NET_NAT */
    sbx_net_policy net_policy; /* the initial egress policy; see sbx_network_update() */
    /* Names the sandbox's DNS answers itself, "NAME=IPV4" (NULL-terminated, at most 256), like
       /etc/hosts entries but visible to domain rules. NULL: none. */
    const char *const *hosts;
    /* Non-zero: the gateway address (10.0.2.2) reaches the host's own loopback (127.0.0.1),
       so the guest can use services of the host machine that listen only there. Default 0:
       the host's loopback is unreachable from the guest. */
    int host_loopback;
    /* SBX_NET_TAP: the TAP device's name (created beforehand, e.g. `ip tuntap add NAME mode
       tap user USER`, and bridged or routed by the host), the guest's "IPV4/PREFIX" on that
       network, its gateway, and its DNS server (NULL: the gateway). The guest's MTU is the
       device's. */
    const char *tap_name;
    const char *tap_address;
    const char *tap_gateway;
    const char *tap_dns;

    /* Since version 3: templates and snapshots (docs/templates.md). */
    /* Make the sandbox from a template instead of booting: a template name ("name" or
       "name:tag") in the template store, a name given to sbx_snapshot(), or the path of a
       snapshot directory (contains '/'). Its memory is mapped copy-on-write and its disk
       layered, so creation takes milliseconds and the template's processes are running. The
       template fixes vCPUs, memory, kernel and root filesystem: leave those options 0/NULL.
       Its ENV settings and user apply under envs and default_user. NULL: boot. */
    const char *template_name;
    /* The template store. NULL: $SBX_TEMPLATE_DIR, else $XDG_DATA_HOME/libsandbox/templates,
       else $HOME/.local/share/libsandbox/templates. */
    const char *template_dir;

    /* Since version 4: hardening (docs/SECURITY.md). */
    /* Non-zero: the sandbox's vCPU threads and device thread run without their seccomp
       filters. Default 0: each of them, before it handles anything of the guest, installs a
       filter allowing only the system calls (and, for ioctl, the KVM requests) its role needs;
       a forbidden call fails with EPERM. The application's own threads are never filtered.
       Turn the filters off only for tools they stop, such as valgrind. */
    int no_seccomp;
    /* Non-zero: the isolated mode. The sandbox's VMM runs in a child process (the program
       sbx-vmm: $SBX_VMM_PATH, else LIBEXECDIR/sbx-vmm) started in new mount, PID, IPC and UTS
       namespaces (and a new network namespace when network is SBX_NET_NONE), which jails
       itself once the sandbox runs: an empty read-only root (pivot_root), no capabilities,
       rlimits, seccomp on every thread. The API is the same, snapshots, pause, resume and
       fork included (sbx_resume() and templates need this option again to stay isolated;
       sbx_fork() copies are isolated like their parent). Without CAP_SYS_ADMIN the child
       gets a new user namespace too (the caller's user is root only in there), so it needs
       either that capability or user namespaces (not available to chrooted callers). Needs
       the seccomp filters (no_seccomp must be 0). Costs one process start per sandbox
       (docs/PERFORMANCE.md). */
    int isolated;
    /* Isolated mode only: a cgroup v2 directory (its path, e.g. "/sys/fs/cgroup/sandboxes")
       the VMM process joins before it starts, so that the caller's cpu.max, memory.max and
       pids.max there bound it. NULL: the caller's cgroup. */
    const char *cgroup;
    /* At most this many tasks (processes and threads) at once for everything the sandbox runs
       through the API (commands, PTYs, the code interpreter), together: a pids cgroup in the
       guest. A fork bomb then fails to fork instead of exhausting the guest; envd stays
       outside the cgroup, so file calls, signals and kills keep working while new commands
       (which join the cgroup) may fail to fork until the bomb is killed. 0 (the default): no
       limit. */
    unsigned max_processes;

    /* Since version 5. */
    /* Host memory, in MiB, the VMM may hold at once for data the guest sent to connections
       whose host side has not read it yet (command output, file reads, port relays): every
       connection gets a 256 KiB window, and a connection that would take the total beyond
       this cap is reset (its call fails) instead. 0 means 64. Other host buffers have fixed
       caps (docs/SECURITY.md). */
    unsigned max_buffer_mib;
} sbx_options;

#define SBX_OPTIONS_INIT                                                                           \
    {                                                                                              \
        SBX_OPTIONS_VERSION, NULL, NULL, 0, 0, 0, 0, NULL, NULL, 0, NULL, NULL, NULL, NULL, 0,     \
            SBX_NET_NAT, {0, NULL, NULL}, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, NULL, \
            0, 0                                                                                   \
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
 * descriptors, guest memory, disk overlays. NULL is accepted. Calls blocked in other threads
 * on this sandbox when it begins (an exec, a file transfer, a wait) return at once with
 * SBX_EDEAD ("the sandbox was destroyed"), and sbx_destroy() waits until they have left
 * before it frees the handle. No call on the handle may begin once sbx_destroy() has begun.
 * Sub-handles (sbx_proc, sbx_file, sbx_watch) still open outlive it: their calls fail with
 * SBX_EDEAD, and closing the last of them frees what remains of the sandbox.
 */
SBX_API void sbx_destroy(sbx *sb);

/* The message of the last failed call on this handle ("" if none). Valid until the next call
   on the handle. NULL handle: a static message. */
SBX_API const char *sbx_errmsg(const sbx *sb);

/* Sandbox states. */
enum sbx_state {
    SBX_STATE_BOOTING = 0, /* inside sbx_create() */
    SBX_STATE_RUNNING = 1, /* guest up, agent answered */
    SBX_STATE_STOPPED = 2, /* the guest shut down or rebooted (sbx_shutdown, reboot, halt),
                              or the lifetime expired */
    SBX_STATE_FAILED = 3,  /* the guest crashed or violated the device contract; see errmsg */
    SBX_STATE_PAUSED = 4,  /* written to disk by sbx_pause(); only sbx_destroy() remains */
};

/* The current state (enum sbx_state); SBX_STATE_FAILED for NULL. Never blocks. */
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
    int state;              /* enum sbx_state */
    uint64_t created_ns;    /* CLOCK_REALTIME when sbx_create() was called, ns since epoch */
    uint64_t ends_ns;       /* CLOCK_REALTIME when the lifetime runs out; 0 = no limit */
    uint64_t uptime_ns;     /* since sbx_create() returned (0 while booting) */
} sbx_info;

/* Fills *info. Returns 0, or SBX_EINVAL. Never blocks. */
SBX_API int sbx_get_info(sbx *sb, sbx_info *info);

/*
 * Health check: a round trip to the guest agent (Ping / Pong). Returns 0, SBX_ETIMEDOUT,
 * SBX_EDEAD (the guest died or the lifetime ran out), SBX_ESTATE (shut down), SBX_EPROTO or
 * SBX_EINTR. timeout_ms 0 means 10000.
 */
SBX_API int sbx_ping(sbx *sb, unsigned timeout_ms);

/*
 * Asks the guest to shut down cleanly (envd syncs and unmounts the disks, then the kernel
 * reboots, which ends the VM) and waits until the VM has stopped. Afterwards the state is
 * SBX_STATE_STOPPED and calls fail with SBX_ESTATE. Returns 0, SBX_ETIMEDOUT (the VM was
 * then stopped forcibly), SBX_EDEAD, SBX_ESTATE or SBX_EINTR. timeout_ms 0 means 10000.
 */
SBX_API int sbx_shutdown(sbx *sb, unsigned timeout_ms);

/*
 * Copies the most recent console output (the ring keeps the last 64 KiB) into buf, NUL-
 * terminated, and returns the number of bytes copied without the NUL. Safe to call in any
 * state, including after a failed sbx_create().
 */
SBX_API size_t sbx_console(const sbx *sb, char *buf, size_t cap);

/*
 * Makes every blocking call currently running on this sandbox or its sub-handles (in any
 * thread) return SBX_EINTR as soon as possible. Callable from any thread and from a signal
 * handler (async-signal-safe). Has no effect on calls that start after it returns.
 */
SBX_API void sbx_interrupt(sbx *sb);

/* ======================================================================================= */
/* Lifecycle                                                                                */
/* ======================================================================================= */

/* The value of metadata `key` given at creation, or NULL. Valid while the sandbox lives. */
SBX_API const char *sbx_metadata(const sbx *sb, const char *key);

/* The i-th metadata entry (in creation order): 0 with *key and *value set, or SBX_ENOENT past
   the end. */
SBX_API int sbx_metadata_at(const sbx *sb, size_t i, const char **key, const char **value);

/* A sandbox running on this machine, from any process of this user (`sbx ls`). Each sandbox
   registers itself in a directory ($XDG_RUNTIME_DIR/libsandbox, else /tmp/libsandbox-UID)
   while it runs; entries of processes that died are ignored and cleaned up. */
typedef struct sbx_listing {
    char id[32];
    int pid;                      /* the process that owns it */
    uint64_t created_ns, ends_ns; /* CLOCK_REALTIME; ends_ns 0 = no lifetime */
    unsigned vcpus, memory_mib;
    char rootfs[256]; /* root filesystem image (or template) it was created from */
    char **metadata;  /* "key=value", NULL-terminated */
} sbx_listing;

/* Lists the running sandboxes. Release with sbx_listing_free(). */
SBX_API int sbx_list_running(sbx_listing **out, size_t *n);
SBX_API void sbx_listing_free(sbx_listing *list, size_t n);

/* Sets the lifetime to end `ms` milliseconds from now (extends or shortens it); 0 removes the
   limit. Returns 0, SBX_EINVAL, or SBX_EDEAD / SBX_ESTATE when the sandbox no longer runs. */
SBX_API int sbx_set_timeout(sbx *sb, uint64_t ms);

/* Guest resource use. CPU usage between two samples: (busy2-busy1)/(total2-total1). */
typedef struct sbx_metrics {
    uint64_t uptime_ms;    /* guest kernel uptime */
    unsigned cpus;         /* online CPUs */
    uint64_t cpu_busy_ms;  /* cumulative over all CPUs */
    uint64_t cpu_total_ms; /* cumulative over all CPUs, busy + idle */
    uint64_t mem_total_kib, mem_available_kib;
    uint64_t disk_total_bytes, disk_used_bytes; /* root filesystem */
    unsigned processes;                         /* processes in the guest */
} sbx_metrics;

/* Asks the guest for its resource use. timeout_ms 0 means 10000. */
SBX_API int sbx_get_metrics(sbx *sb, sbx_metrics *m, unsigned timeout_ms);

/* ======================================================================================= */
/* Networking                                                                               */
/* ======================================================================================= */

/*
 * Replaces the egress policy of a running sandbox (see sbx_net_policy); it applies to every
 * packet from then on, including those of connections already open. The new policy is
 * validated completely first: on SBX_EINVAL (the message names the bad entry) the old one
 * stays. Returns 0, SBX_EINVAL, SBX_ENOTSUP (the sandbox has no network: SBX_NET_NONE), or
 * SBX_ESTATE / SBX_EDEAD when it no longer runs. Never blocks on the guest.
 */
SBX_API int sbx_network_update(sbx *sb, const sbx_net_policy *policy);

/* Counters of the sandbox's network. */
typedef struct sbx_net_stats {
    uint64_t tx_frames, tx_bytes; /* sent by the guest */
    uint64_t rx_frames, rx_bytes; /* delivered to the guest */
    uint64_t blocked;             /* guest packets refused by the egress policy */
    uint64_t dropped;             /* frames dropped (queues full, malformed, unsupported) */
} sbx_net_stats;

/* Fills *st. Returns 0, SBX_EINVAL, or SBX_ENOTSUP when the sandbox has no network. */
SBX_API int sbx_network_stats(sbx *sb, sbx_net_stats *st);

/* ======================================================================================= */
/* Commands and processes                                                                  */
/* ======================================================================================= */

/* A timeout value meaning "no limit" where a call says so. */
#define SBX_NO_TIMEOUT 0xffffffffu

enum sbx_stream {
    SBX_STDOUT = 1, /* also a PTY's output */
    SBX_STDERR = 2,
};

/* Output callback: `len` bytes of `stream` (in the order the process wrote them per stream).
   Called on the thread that made the call. Return 0 to go on, non-zero to stop the call
   (it then kills the process and returns SBX_EINTR). */
typedef int (*sbx_output_fn)(void *ctx, int stream, const void *data, size_t len);

#define SBX_EXEC_OPTIONS_VERSION 1

typedef struct sbx_exec_options {
    unsigned version; /* SBX_EXEC_OPTIONS_VERSION */
    /* What to run: argv (argv[0] searched in the guest's PATH), or cmd, a shell command line
       run with `/bin/bash -l -c` when the guest has bash, else `/bin/sh -c`. Exactly one. A
       program that cannot be found exits with 127, one that cannot be executed with 126. */
    const char *const *argv;
    const char *cmd;
    const char *const *envs; /* "KEY=VALUE" on top of the sandbox's envs; last one wins */
    const char *cwd;         /* NULL: the user's home directory */
    const char *user;        /* user name or decimal uid; NULL: the sandbox's default user */
    const void *stdin_data;  /* written to the process's stdin first (may be NULL) */
    size_t stdin_len;
    /* sbx_exec: closes stdin after stdin_data (EOF). sbx_proc_start: keep_stdin non-zero
       leaves it open for sbx_proc_write(); zero closes it after stdin_data. */
    int keep_stdin;
    /* The process and everything in its process group is killed (SIGKILL) this long after
       it started. sbx_exec: 0 means 60000. sbx_proc_start and sbx_pty_open: 0 means none.
       SBX_NO_TIMEOUT always means none. Enforced by the guest agent, so it also applies to
       detached background processes. */
    unsigned timeout_ms;
    /* sbx_exec: streams output to this callback instead of capturing it. */
    sbx_output_fn on_output;
    void *ctx;
    /* sbx_exec and sbx_proc_wait: bytes captured per stream; beyond it output is read and
       dropped and the result says `truncated`. 0 means 16 MiB. */
    size_t output_cap;
    const char *tag; /* free text shown by sbx_proc_list(), or NULL */
    /* sbx_proc_start: run on a pseudo-terminal of this size (both non-zero; see
       sbx_pty_open()). stdout then carries the terminal's output; there is no stderr. */
    unsigned pty_rows, pty_cols;
} sbx_exec_options;

#define SBX_EXEC_OPTIONS_INIT                                                                      \
    {                                                                                              \
        .version = SBX_EXEC_OPTIONS_VERSION                                                        \
    }

typedef struct sbx_exec_result {
    int exit_code; /* the exit status, or -1 when a signal killed the process */
    int signal;    /* that signal, or 0 */
    int timed_out; /* non-zero: killed because timeout_ms ran out */
    int truncated; /* non-zero: output beyond output_cap was dropped */
    uint32_t pid;  /* in the guest */
    uint64_t duration_ms;
    /* Captured output (NUL-terminated for convenience; may contain NULs: use the lengths).
       NULL when nothing was captured. Release with sbx_exec_result_free(). */
    char *out, *err;
    size_t out_len, err_len;
} sbx_exec_result;

/* Releases the buffers of a result (not the struct). NULL is fine. */
SBX_API void sbx_exec_result_free(sbx_exec_result *res);

/*
 * Runs a command to completion. Output goes to o->on_output as it arrives, or is captured
 * into res. stdin_data is written while output is read, so large input and large output
 * together cannot deadlock; a process that exits or closes stdin before reading all of it is
 * not an error. Returns 0 when the command ran (whatever its exit status: see res), or
 * SBX_EINVAL, SBX_ENOENT (no such user or cwd), SBX_EACCES (cannot switch to the user or
 * enter cwd), SBX_ENOTDIR (cwd), SBX_EBUSY (256 processes are running), SBX_EDEAD,
 * SBX_EINTR, SBX_EPROTO, SBX_ETIMEDOUT (the guest did not end the process 5 s after its
 * timeout). A timeout is not an error: res->timed_out is set and res->signal is SIGKILL.
 * When the call fails or is interrupted (sbx_interrupt(), the callback), the process group is
 * killed: nothing started by sbx_exec outlives it. Fills res in every case (zeroed on error);
 * release it with sbx_exec_result_free().
 */
SBX_API int sbx_exec(sbx *sb, const sbx_exec_options *o, sbx_exec_result *res);

/* A process running in the sandbox, with a connection attached to it. Opaque. */
typedef struct sbx_proc sbx_proc;

/*
 * Starts a process and returns without waiting for it. o->stdin_data is written first; with
 * o->keep_stdin stdin stays open. o->on_output is not used: read output with sbx_proc_read()
 * or collect it with sbx_proc_wait(). Returns 0, or an error like sbx_exec(). Release the
 * handle with sbx_proc_close() (the process goes on running) or after sbx_proc_wait().
 * Waits at most 60 s for the guest.
 */
SBX_API int sbx_proc_start(sbx *sb, const sbx_exec_options *o, sbx_proc **out);

/*
 * Attaches a new handle to a process started earlier (by sbx_proc_start or sbx_pty_open,
 * from any handle). Output no handle has handed out yet is delivered first, in the order it
 * was written: what the process wrote while no handle was attached, and what a closed handle
 * had received but not returned from sbx_proc_read() or sbx_proc_wait(). About the newest
 * 1 MiB is kept; *dropped, if not NULL, receives the bytes lost beyond that. Also works for
 * a process that finished recently (the last 64 are remembered): reads then give its
 * remaining output and the wait its status. Attaching takes the process away from a handle
 * still attached elsewhere (that one can still read what it has received, then its reads
 * fail with SBX_EBUSY; the new handle gets the output after that). Returns 0, SBX_ENOENT,
 * SBX_EDEAD, ...
 */
SBX_API int sbx_proc_attach(sbx *sb, uint32_t pid, sbx_proc **out, uint64_t *dropped);

/* The process's pid in the guest. */
SBX_API uint32_t sbx_proc_pid(const sbx_proc *p);

/* A file descriptor for event loops (level-triggered): it polls readable while
   sbx_proc_read() would return without waiting (output, including output the handle has
   already received, the exit, or an error). Do not read it or close it. */
SBX_API int sbx_proc_fd(const sbx_proc *p);

/*
 * Reads output: up to cap bytes of one stream (*stream receives SBX_STDOUT/SBX_STDERR).
 * Returns the number of bytes (> 0); 0 when the process has exited and all output has been
 * read (then sbx_proc_wait() returns at once); SBX_ETIMEDOUT when nothing came within
 * timeout_ms (0 = do not wait: returns SBX_EAGAIN instead); or an error.
 */
SBX_API int sbx_proc_read(sbx_proc *p, void *buf, size_t cap, int *stream, unsigned timeout_ms);

/* Writes to the process's stdin (or its terminal) and returns once the guest has written all
   of it into the pipe (like a blocking pipe write: it waits while the process does not read).
   Output arriving meanwhile is kept for sbx_proc_read(), up to 16 MiB (then SBX_EBUSY: read
   first). Returns 0, SBX_EINVAL (stdin was not kept open or has been closed), SBX_EIO (the
   process closed its stdin or exited), SBX_ETIMEDOUT (no progress for 60 s), ... After an
   error part of the data may have been written. */
SBX_API int sbx_proc_write(sbx_proc *p, const void *data, size_t len);

/* Closes the process's stdin (EOF) once what was written before has reached the process.
   SBX_EINVAL on a terminal (which has no EOF: write ^D, "\x04"). */
SBX_API int sbx_proc_close_stdin(sbx_proc *p);

/* Sends a signal (SIGTERM, SIGKILL, SIGINT, ... Linux numbers 1..64; 0 checks existence) to
   the process, or with group to its whole process group (every process runs in a session
   of its own, so that is the process and its children unless they left it). SBX_ENOENT once
   the process has exited. */
SBX_API int sbx_proc_signal(sbx_proc *p, int signal, int group);

/* Resizes a PTY process's terminal (the process gets SIGWINCH). SBX_EINVAL if it has none. */
SBX_API int sbx_proc_resize(sbx_proc *p, unsigned rows, unsigned cols);

/*
 * Waits for the process to exit, collecting output not yet read into res (up to the
 * output_cap given at start; 16 MiB when attached). Returns 0 with res filled, SBX_ETIMEDOUT
 * (the process goes on; call again: output collected so far is kept for that call, not
 * returned by sbx_proc_read()), SBX_EINTR, SBX_EDEAD, SBX_EBUSY (another handle attached to
 * the process), ... timeout_ms: SBX_NO_TIMEOUT waits as long as it takes; 0 polls once.
 * After the exit it can be called again and returns the same status (without output).
 */
SBX_API int sbx_proc_wait(sbx_proc *p, unsigned timeout_ms, sbx_exec_result *res);

/* Releases the handle. A process still running goes on (detached; sbx_proc_attach() finds it
   again) unless it was started by sbx_exec. No output is lost: what the handle received but
   did not return from sbx_proc_read() or sbx_proc_wait() is delivered again to the next
   sbx_proc_attach() (within the 1 MiB kept per process). Does not wait for the guest. NULL
   is fine. */
SBX_API void sbx_proc_close(sbx_proc *p);

/* Sends a signal to any process in the sandbox by pid (group: its process group). Returns 0,
   SBX_EINVAL, SBX_ENOENT (no such process, or one started through the library that has
   exited), SBX_EACCES (the guest agent itself, PID 1, is refused), ... */
SBX_API int sbx_kill(sbx *sb, uint32_t pid, int signal, int group);

typedef struct sbx_proc_info {
    uint32_t pid;
    char **argv; /* NULL-terminated */
    char *cwd;
    char *tag;   /* "" when none */
    int running; /* 0: finished (exit_code / signal valid) */
    int exit_code, signal;
    int pty;      /* non-zero: runs on a PTY */
    int attached; /* non-zero: a handle is attached */
} sbx_proc_info;

/* Lists the processes started through the library (running ones and the last 64 finished),
   in start order. argv of a shell command (cmd) is the shell's: {"/bin/bash", "-l", "-c",
   cmd}. Release with sbx_proc_list_free(). */
SBX_API int sbx_proc_list(sbx *sb, sbx_proc_info **list, size_t *n);
SBX_API void sbx_proc_list_free(sbx_proc_info *list, size_t n);

/*
 * Opens an interactive terminal: a process on a new pseudo-terminal of rows x cols with
 * TERM=xterm-256color. o may be NULL (or have neither argv nor cmd): then the user's login
 * shell runs (`bash -l`, else `sh -l`). Use the sbx_proc_* calls on the handle: read output
 * (SBX_STDOUT), write keys, resize, signal, wait. o->timeout_ms 0 here means none. Like
 * sbx_proc_start(), the process goes on when the handle is closed (sbx_proc_attach()).
 */
SBX_API int sbx_pty_open(sbx *sb, unsigned rows, unsigned cols, const sbx_exec_options *o,
                         sbx_proc **out);

/* ======================================================================================= */
/* Port exposure                                                                           */
/* ======================================================================================= */
/* A TCP service listening in the guest, reached from this machine through a host port the
   library listens on. Each connection accepted there becomes a new connection made by the
   guest agent inside the guest to 127.0.0.1:GUEST_PORT (or ::1 when nothing listens on
   127.0.0.1), so services bound only to the guest's loopback are reachable, and it works
   without guest networking (SBX_NET_NONE). Bytes are relayed both ways, with end of stream
   (shutdown) passed on, until both sides have closed. Exposing needs nothing to listen in
   the guest yet: a connection made while nothing listens there is reset (the host side sees
   ECONNRESET or EOF), later ones reach the service once it is up. Limits per sandbox: 64
   exposed ports (host listeners) and 256 open connections (more are reset); a guest that does
   not answer within 10 s gets the connection reset too. Everything is closed by
   sbx_unexpose() or sbx_destroy(). The listeners and relays run on a thread of the sandbox
   (started on first use) and never block a caller. */

/*
 * Exposes guest TCP port guest_port (1..65535) on host_addr:host_port. host_addr: an IPv4
 * or IPv6 address literal of this machine, or NULL for 127.0.0.1 (use "0.0.0.0" to accept
 * connections from other machines: there is no authentication). host_port 0 picks a free
 * port; *bound_port (if not NULL) receives the port listened on. Exposing a guest port again
 * on the same address with host_port 0 (or the port it already has) returns the existing
 * mapping; another host port adds a second mapping. Returns 0, SBX_EINVAL (a port out of
 * range, a bad address), SBX_EBUSY (the host port is in use, or 64 ports are exposed),
 * SBX_EACCES (a privileged host port), SBX_ENOTSUP (the guest agent is too old to forward
 * ports), SBX_ESTATE / SBX_EDEAD. Never blocks on the guest.
 */
SBX_API int sbx_expose(sbx *sb, unsigned guest_port, const char *host_addr, unsigned host_port,
                       unsigned *bound_port);

/* Writes "HOST:PORT" where guest_port is reachable from this machine into buf (e.g.
   "127.0.0.1:40123"; "[::1]:PORT" for IPv6; 127.0.0.1 when the mapping listens on 0.0.0.0),
   exposing the port on 127.0.0.1 and a free host port first when it is not exposed yet
   (E2B's getHost). Returns 0, SBX_EINVAL (also: buf too small; 48 bytes always suffice), or
   an error of sbx_expose(). */
SBX_API int sbx_get_host(sbx *sb, unsigned guest_port, char *buf, size_t buflen);

/* Stops exposing guest_port: closes its host listeners and the connections made through
   them. Returns 0, SBX_EINVAL, or SBX_ENOENT when the port is not exposed. Works in any
   state of the sandbox. */
SBX_API int sbx_unexpose(sbx *sb, unsigned guest_port);

/* ======================================================================================= */
/* Files                                                                                   */
/* ======================================================================================= */
/* Guest paths are absolute, or relative to the default user's home directory. They go to the
   guest as bytes (any but NUL, up to 4095; not necessarily UTF-8) and the guest's kernel
   resolves them: `..` and symlinks work as in any path (the whole guest is the sandbox, so
   there is nothing for them to escape from). Guest errors
   map to SBX_ENOENT, SBX_EACCES, SBX_ENOTDIR, SBX_EISDIR, SBX_ENOSPC, SBX_EEXIST,
   SBX_ENOTEMPTY. File calls wait at most 60 s for each answer of the guest. */

/* Writes a whole file (mode 0 means 0644), creating missing parent directories, replacing an
   existing file atomically (temporary file + rename). Owned by the default user. */
SBX_API int sbx_write_file(sbx *sb, const char *path, const void *data, size_t len, unsigned mode);

/* Reads a whole file into a malloc'd buffer (*data, NUL-terminated for convenience, release
   with free()); *len receives its size. Fails with SBX_ENOMEM "too large" beyond max bytes
   (0 means 1 GiB). */
SBX_API int sbx_read_file(sbx *sb, const char *path, void **data, size_t *len, size_t max);

/* A file being streamed to or from the guest, in bounded memory. Opaque. */
typedef struct sbx_file sbx_file;

#define SBX_FILE_OPTIONS_VERSION 1
typedef struct sbx_file_options {
    unsigned version; /* SBX_FILE_OPTIONS_VERSION */
    unsigned mode;    /* permission bits of a new file; 0 means 0644 */
    const char *user; /* owner; NULL: the default user */
    int append;       /* non-zero: append to the file instead of replacing it */
} sbx_file_options;
#define SBX_FILE_OPTIONS_INIT                                                                      \
    {                                                                                              \
        .version = SBX_FILE_OPTIONS_VERSION                                                        \
    }

/* Opens a guest file for writing; data goes in with sbx_file_write() and becomes visible at
   sbx_file_commit() (atomically unless append). */
SBX_API int sbx_file_create(sbx *sb, const char *path, const sbx_file_options *o, sbx_file **out);
SBX_API int sbx_file_write(sbx_file *f, const void *data, size_t len);
/* Finishes a write and releases the handle (also on error). The target is untouched when
   any step failed. */
SBX_API int sbx_file_commit(sbx_file *f);

/* Opens a guest file for reading from `offset`, at most `length` bytes (0: to the end);
 *size (if not NULL) receives the file's size. */
SBX_API int sbx_file_open(sbx *sb, const char *path, uint64_t offset, uint64_t length,
                          sbx_file **out, uint64_t *size);
/* Reads up to cap bytes; returns the count, 0 at the end, or an error. */
SBX_API int sbx_file_read(sbx_file *f, void *buf, size_t cap);

/* Releases a handle without finishing it (an unfinished write is abandoned and the target
   left untouched). NULL is fine. */
SBX_API void sbx_file_close(sbx_file *f);

enum sbx_entry_type {
    SBX_TYPE_FILE = 1,
    SBX_TYPE_DIR = 2,
    SBX_TYPE_SYMLINK = 3,
    SBX_TYPE_OTHER = 4
};

typedef struct sbx_entry {
    char *name; /* last path component */
    char *path; /* absolute path */
    int type;   /* enum sbx_entry_type, of the entry itself (not following symlinks) */
    uint64_t size;
    unsigned mode; /* permission bits (07777) */
    uint32_t uid, gid;
    char *owner, *group;  /* names, or the ids in decimal */
    int64_t mtime_ns;     /* since the epoch */
    char *symlink_target; /* for symlinks, else NULL */
} sbx_entry;

/* Describes one path (without following a final symlink). Release with sbx_entry_clear(). */
SBX_API int sbx_stat(sbx *sb, const char *path, sbx_entry *e);
SBX_API void sbx_entry_clear(sbx_entry *e);

/* 1 if the path exists, 0 if not, or a negative error. */
SBX_API int sbx_exists(sbx *sb, const char *path);

/* Lists a directory `depth` levels deep (0 or 1: its entries only), parents before their
   children. Release with sbx_entries_free(). */
SBX_API int sbx_list(sbx *sb, const char *path, unsigned depth, sbx_entry **entries, size_t *n);
SBX_API void sbx_entries_free(sbx_entry *entries, size_t n);

/* mkdir -p (mode 0 means 0755, owned by the default user). Returns 0 when created, 1 when
   the directory already existed, or an error (SBX_EEXIST: exists but is not a directory). */
SBX_API int sbx_mkdir(sbx *sb, const char *path, unsigned mode);

/* Removes a file, symlink or empty directory; with recursive, a whole tree. */
SBX_API int sbx_remove(sbx *sb, const char *path, int recursive);

/* Renames (moves) within the guest, replacing an existing target file. */
SBX_API int sbx_rename(sbx *sb, const char *from, const char *to);

/* Progress of a copy: bytes and files done so far. Return non-zero to cancel (SBX_EINTR). */
typedef int (*sbx_progress_fn)(void *ctx, uint64_t bytes, uint64_t files);

/* Copies a host file or directory tree into the guest (dst is the new path), or a guest file
   or tree out to the host. Regular files, directories and symlinks; modes are kept (copying
   out drops set-user/group-ID bits); other file types are skipped. An existing directory at
   dst is merged into, existing files are replaced. progress (may be NULL) is called after
   every file and every MiB. */
SBX_API int sbx_copy_in(sbx *sb, const char *host_src, const char *guest_dst,
                        sbx_progress_fn progress, void *ctx);
SBX_API int sbx_copy_out(sbx *sb, const char *guest_src, const char *host_dst,
                         sbx_progress_fn progress, void *ctx);

/* ======================================================================================= */
/* Watching directories                                                                    */
/* ======================================================================================= */

enum sbx_watch_op {
    SBX_WATCH_CREATE = 1,
    SBX_WATCH_WRITE = 2,
    SBX_WATCH_REMOVE = 3,
    SBX_WATCH_RENAME = 4, /* renamed away; a CREATE follows for the new name */
    SBX_WATCH_CHMOD = 5,
    SBX_WATCH_OVERFLOW = 6, /* the guest dropped events */
};

typedef struct sbx_watch_event {
    int op;          /* enum sbx_watch_op */
    char name[4096]; /* relative to the watched directory */
} sbx_watch_event;

typedef struct sbx_watch sbx_watch;

/* Starts watching a guest directory (recursive: and every directory below it). */
SBX_API int sbx_watch_open(sbx *sb, const char *path, int recursive, sbx_watch **out);
/* Readable when sbx_watch_next() may have an event. */
SBX_API int sbx_watch_fd(const sbx_watch *w);
/* Next event: 0 with *ev, SBX_ETIMEDOUT (timeout_ms 0: SBX_EAGAIN), or an error. */
SBX_API int sbx_watch_next(sbx_watch *w, sbx_watch_event *ev, unsigned timeout_ms);
SBX_API void sbx_watch_close(sbx_watch *w);

/* ======================================================================================= */
/* Snapshots: pause, resume, fork (docs/templates.md)                                       */
/* ======================================================================================= */

/*
 * Saves the running sandbox as a snapshot: vCPU, device and memory state, and the root disk's
 * changes, with its processes running. `name_or_path` is a template name (stored in the
 * default template store, listed by `sbx template ls`, replacing an older one of that name)
 * or a directory path (contains '/'; must not exist). sbx_create() accepts it like a template
 * (options.template_name). The sandbox stands still while memory is written, then goes on.
 * Sandboxes with extra disks or a TAP network cannot be snapshotted (SBX_ENOTSUP). Returns 0,
 * SBX_EEXIST, SBX_ESTATE, SBX_EIO, ...
 */
SBX_API int sbx_snapshot(sbx *sb, const char *name_or_path);

/*
 * Writes the sandbox to the directory `path` (must not exist) like sbx_snapshot() and stops
 * it: its memory and VM are released and its state becomes SBX_STATE_PAUSED (only
 * sbx_destroy() remains). sbx_resume() brings it back, in this process or another one.
 */
SBX_API int sbx_pause(sbx *sb, const char *path);

/*
 * Brings back a sandbox paused to `path`: same id, processes, files, envs and metadata (leave
 * those options unset; lifetime, console_fd, boot_timeout_ms and the network policy apply).
 * On success the directory is removed (the new sandbox holds its files open), so a pause is
 * resumed at most once. The guest's clock is set to the current time. On failure *out is
 * set as by sbx_create() and the directory is left as it was.
 */
SBX_API int sbx_resume(sbx **out, const char *path, const sbx_options *opts);

/*
 * Makes n (1..1024) running copies of the sandbox from one checkpoint, each independent: its
 * own id, memory (copy-on-write) and disk; processes, files, envs and metadata as the parent
 * had them. opts (NULL: defaults) gives the copies' lifetime, console and network policy
 * (they do not inherit the parent's policy). The parent goes on. Returns 0 with out[0..n)
 * set, or an error with every out[i] NULL (copies already made are destroyed).
 */
SBX_API int sbx_fork(sbx *sb, unsigned n, const sbx_options *opts, sbx **out);

/* ======================================================================================= */
/* Templates (docs/templates.md)                                                            */
/* ======================================================================================= */

/* Progress of a template build, for sbx_template_build_options.on_progress. */
typedef struct sbx_template_progress {
    unsigned step;       /* 1-based index of the current instruction; 0 before the first */
    unsigned nsteps;     /* instructions after FROM; the final boot and snapshot come after */
    const char *text;    /* the instruction ("RUN apt-get install -y curl"), or a phase such as
                            "boot", "start", "ready", "snapshot" */
    int cached;          /* non-zero: the step's result came from the layer cache */
    int done;            /* 0 when the step starts, 1 when it ended */
    uint64_t elapsed_ms; /* since the build started */
} sbx_template_progress;

#define SBX_TEMPLATE_OPTIONS_VERSION 1
typedef struct sbx_template_build_options {
    unsigned version; /* SBX_TEMPLATE_OPTIONS_VERSION */
    const char *name; /* the template's name: [a-z0-9][a-z0-9._-]{0,62}; replaces an older
                         build of the same name once the new one is complete */
    /* The definition: a Dockerfile subset (FROM, RUN, COPY, ADD, ENV, WORKDIR, USER, ARG,
       LABEL, CMD; docs/templates.md), as a file path or as text (exactly one). FROM names
       "base" (or another image of the image directory), a template of the store, or an
       ext4 image path. */
    const char *dockerfile;
    const char *dockerfile_text;
    const char *context; /* directory COPY and ADD read from; NULL: the file's directory (or
                            the current directory with dockerfile_text) */
    const char *const *build_args; /* "NAME=VALUE" for ARG, NULL-terminated, or NULL */
    const char *const *tags;       /* labels of this build, NULL-terminated, or NULL */
    unsigned vcpus;                /* of the template's sandboxes; 0: 1 (or FROM template's) */
    unsigned memory_mib;           /* 0: 512 (or FROM template's) */
    uint64_t disk_mib;             /* root disk size; the filesystem grows to it. 0: the image's */
    /* Started after the last step and left running in the snapshot (overrides LABEL sbx.start
       and CMD); NULL: none. */
    const char *start_cmd;
    /* When the template is ready to be snapshotted (overrides LABEL sbx.ready):
       "cmd:COMMAND" (exits 0), "port:N" (a TCP port listens), "file:PATH" (exists),
       "delay:MS". NULL: at once (after start_cmd was started). */
    const char *ready;
    unsigned ready_timeout_ms; /* 0: 120000 */
    unsigned step_timeout_ms;  /* per RUN step; 0: 1800000 (30 minutes) */
    int no_cache;              /* non-zero: run every step even if its layer is cached */
    const char *template_dir;  /* the store (NULL: as sbx_options.template_dir) */
    const char *kernel;        /* as sbx_options.kernel */
    const char *image_dir;     /* as sbx_options.image_dir */
    int host_loopback;         /* as sbx_options.host_loopback, for RUN steps */
    /* Live output of RUN steps and the start command (stream 1 stdout, 2 stderr), and
       progress, called on the building thread. Either may be NULL. */
    sbx_output_fn on_output;
    void (*on_progress)(void *ctx, const sbx_template_progress *p);
    void *ctx;
} sbx_template_build_options;

#define SBX_TEMPLATE_BUILD_OPTIONS_INIT                                                            \
    {                                                                                              \
        .version = SBX_TEMPLATE_OPTIONS_VERSION                                                    \
    }

/* A template of the store. */
typedef struct sbx_template_info {
    char name[64];
    int is_snapshot;  /* saved by sbx_snapshot() rather than built from a file */
    char parent[256]; /* FROM (or the root image of a snapshot) */
    unsigned vcpus, memory_mib;
    uint64_t disk_mib; /* 0: the image's size */
    unsigned nsteps;   /* instructions; cached ones in the last build: ncached */
    unsigned ncached;
    uint64_t created_ns;               /* CLOCK_REALTIME */
    uint64_t memory_bytes, disk_bytes; /* allocated on the host by its snapshot */
    uint64_t build_ms;                 /* sbx_template_build() only: its duration */
    char tags[256];                    /* comma-separated */
    char error[256]; /* sbx_template_list(): why this entry cannot be used, else "" */
} sbx_template_info;

/*
 * Builds a template: every RUN executes in a builder sandbox started from the previous
 * steps' disk layers, which are cached by the step and its inputs (an unchanged prefix is not
 * run again; an unchanged file does no work at all). Then a sandbox of the template's size
 * boots from the final layers, runs the start command, waits for the ready check, and is
 * snapshotted with its processes running. Blocks until done. Returns 0 with *info filled (if
 * not NULL), or an SBX_E* code with a message in err (if not NULL; a failed RUN step says
 * which, with its exit code and last output lines).
 */
SBX_API int sbx_template_build(const sbx_template_build_options *o, sbx_template_info *info,
                               char *err, size_t errlen);

/* Lists the templates of a store (NULL: the default), sorted by name. Release with
   sbx_template_list_free(). A store that does not exist lists as empty. */
SBX_API int sbx_template_list(const char *template_dir, sbx_template_info **list, size_t *n,
                              char *err, size_t errlen);
SBX_API void sbx_template_list_free(sbx_template_info *list, size_t n);

/* Removes a template and the cached layers nothing else uses. Sandboxes made from it keep
   working. Returns 0, SBX_ENOENT, or SBX_EIO with a message in err. */
SBX_API int sbx_template_remove(const char *template_dir, const char *name, char *err,
                                size_t errlen);

/* ======================================================================================= */
/* Code interpreter (docs/code-interpreter.md)                                              */
/* ======================================================================================= */

/*
 * Stateful code execution, like a notebook: served inside the guest by the interpreter
 * service of the `code-interpreter` template (guest/interpreter; it listens on the guest's
 * 127.0.0.1:SBX_CODE_PORT and is reached through envd, so no network is involved). A sandbox
 * made from another image or template gets SBX_ENOTSUP from these calls until something
 * serves that port.
 *
 * Languages: "python" (the default), "javascript" (Node.js) and "bash". Each language has a
 * default context whose id is the language's name; sbx_code_context_create() makes more.
 * Variables, imports and the working directory persist between calls in one context and
 * are separate between contexts. One execution runs at a time per context (others wait
 * their turn); different contexts run concurrently.
 */
#define SBX_CODE_PORT 49999

/* One result of an execution: a value in one or more formats (MIME types). Python's last
   expression value is the main result; display() calls and matplotlib figures give others. */
typedef struct sbx_code_result {
    int is_main_result; /* non-zero: the value of the cell's last expression */
    unsigned nformats;
    /* MIME types ("text/plain", "text/html", "text/markdown", "image/svg+xml", "image/png",
       "image/jpeg", "application/json", "text/latex", "application/javascript",
       "application/pdf") and their data, NUL-terminated: text as is, binary formats (png,
       jpeg, pdf) in base64, application/json as JSON text. */
    char **mime;
    char **data;
} sbx_code_result;

/* The data of `mime` in a result, or NULL when it has no such format. */
SBX_API const char *sbx_code_result_get(const sbx_code_result *r, const char *mime);

/* An error the code raised: Python's exception (name "ZeroDivisionError", value "division by
   zero", the formatted traceback), JavaScript's thrown error (name, message, stack). */
typedef struct sbx_code_error {
    char *name, *value, *traceback;
} sbx_code_error;

typedef struct sbx_execution {
    sbx_code_result *results; /* in the order they were produced */
    size_t nresults;
    char *out, *err; /* captured stdout and stderr (NUL-terminated; NULL when empty) */
    size_t out_len, err_len;
    sbx_code_error *error;    /* NULL when the code raised nothing */
    unsigned execution_count; /* of this execution in its context: 1, 2, ... */
    int interrupted;          /* stopped by sbx_code_interrupt() */
    int timed_out;            /* stopped because timeout_ms ran out */
    int restarted;            /* the code did not stop when asked (or killed its interpreter): the
                                 context was restarted and its state is lost */
    int exit_code;            /* bash: the exit status of the cell's last command; else -1 */
    char context[64];         /* the id of the context it ran in */
} sbx_execution;

/* Releases what an execution holds (not the struct). NULL is fine. */
SBX_API void sbx_execution_free(sbx_execution *e);

#define SBX_RUN_CODE_OPTIONS_VERSION 1
typedef struct sbx_run_code_options {
    unsigned version; /* SBX_RUN_CODE_OPTIONS_VERSION */
    const char *code;
    /* Where to run: a context id, or a language (its default context); both NULL: the
       default python context. With both, the context must be of that language. */
    const char *context;
    const char *language;
    /* "KEY=VALUE" set for this execution only, or NULL; on top of the sandbox's envs
       (options.envs and SBX_SANDBOX_ID), which every execution gets. */
    const char *const *envs;
    /* The code is interrupted (as by sbx_code_interrupt) after this long, and its context
       restarted if it does not stop within 2 s; the call returns 0 with timed_out set.
       0 means 300000 (5 minutes); SBX_NO_TIMEOUT means none. */
    unsigned timeout_ms;
    /* Streamed as they happen, on the calling thread (each may be NULL): output text (stream
       SBX_STDOUT or SBX_STDERR) and each result. Output is also captured in the execution.
       Return non-zero to stop: the code is interrupted and the call returns SBX_EINTR. */
    sbx_output_fn on_output;
    int (*on_result)(void *ctx, const sbx_code_result *r);
    void *ctx;
} sbx_run_code_options;

#define SBX_RUN_CODE_OPTIONS_INIT                                                                  \
    {                                                                                              \
        .version = SBX_RUN_CODE_OPTIONS_VERSION                                                    \
    }

/*
 * Runs code in a context and waits for it to finish. Returns 0 when it ran, whatever it
 * did (an exception is ex->error, not a failure), with *ex filled; or SBX_EINVAL,
 * SBX_ENOENT (no such context), SBX_ENOTSUP (no interpreter service in the sandbox),
 * SBX_EBUSY, SBX_EPROTO (the service sent something malformed or too large), SBX_EDEAD,
 * SBX_EINTR (sbx_interrupt() or a callback: the code is interrupted), SBX_ETIMEDOUT (the
 * service did not answer 10 s after timeout_ms). Captures at most 16 MiB per stream and
 * 1024 results (the rest is dropped; the callbacks still see all). Release *ex with
 * sbx_execution_free() in every case.
 */
SBX_API int sbx_run_code(sbx *sb, const sbx_run_code_options *o, sbx_execution *ex);

/* Interrupts what runs in a context (KeyboardInterrupt in Python, SIGINT in bash); the
   context keeps its state. Nothing running is not an error. Returns 0, SBX_ENOENT, ... */
SBX_API int sbx_code_interrupt(sbx *sb, const char *context);

typedef struct sbx_code_context {
    char id[64];
    char language[16]; /* "python", "javascript" or "bash" */
    char cwd[256];
} sbx_code_context;

/* Creates a context: language NULL means python, cwd NULL the user's home (/home/user).
   Fills *out (if not NULL). Returns 0, SBX_EINVAL, SBX_ENOENT (cwd), SBX_EBUSY (64
   contexts exist), SBX_ENOTSUP, ... */
SBX_API int sbx_code_context_create(sbx *sb, const char *language, const char *cwd,
                                    sbx_code_context *out);

/* Lists the contexts, default ones included. Release *list with free(). */
SBX_API int sbx_code_context_list(sbx *sb, sbx_code_context **list, size_t *n);

/* Restarts a context: its interpreter starts afresh, its state and execution count are
   reset; an execution running in it ends with `restarted`. Returns 0, SBX_ENOENT, ... */
SBX_API int sbx_code_context_restart(sbx *sb, const char *context);

/* Removes a context (a running execution ends with `restarted`). Removing a default
   context clears it: it is started afresh when next used. Returns 0, SBX_ENOENT, ... */
SBX_API int sbx_code_context_remove(sbx *sb, const char *context);

#ifdef __cplusplus
}
#endif
#endif
