// SPDX-License-Identifier: Apache-2.0
/* The public sbx_* entry points: argument checks, handle state, errors, the boot handshake. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "agent/agent.h"
#include "internal.h"
#include "util/wait.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"

#define DEFAULT_VCPUS        1
#define DEFAULT_MEMORY_MIB   512
#define MIN_MEMORY_MIB       64
#define MAX_MEMORY_MIB       65536
#define DEFAULT_BOOT_MS      30000
#define DEFAULT_CALL_MS      10000
#define MAX_SERIAL_LEN       20 /* VIRTIO_BLK_ID_BYTES */
#define CONSOLE_LINES_IN_ERR 15

const char *sbx_strerror(int code)
{
    switch (code) {
    case SBX_OK:
        return "success";
    case SBX_EINVAL:
        return "invalid argument";
    case SBX_ENOMEM:
        return "out of memory";
    case SBX_ENOKVM:
        return "no usable KVM";
    case SBX_EKVM:
        return "KVM call failed";
    case SBX_EIMAGE:
        return "bad kernel or root filesystem image";
    case SBX_ETIMEDOUT:
        return "timed out";
    case SBX_EGUEST:
        return "guest stopped or failed";
    case SBX_EPROTO:
        return "guest agent protocol error";
    case SBX_EINTR:
        return "interrupted";
    case SBX_ESTATE:
        return "sandbox not running";
    case SBX_EIO:
        return "host I/O error";
    case SBX_ENOTSUP:
        return "not supported";
    default:
        return "unknown error";
    }
}

const char *sbx_version(void)
{
    return SBX_VERSION_STRING;
}

int sbx_seterr(struct sbx *sb, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sb->errmsg, sizeof(sb->errmsg), fmt, ap);
    va_end(ap);
    return code;
}

/* Appends text to the error message (truncating). */
static void errmsg_append(struct sbx *sb, const char *text)
{
    size_t n = strlen(sb->errmsg);
    snprintf(sb->errmsg + n, sizeof(sb->errmsg) - n, "%s", text);
}

void sbx_stop(struct sbx *sb, int state, const char *fmt, ...)
{
    /* The lock is held while kicking, so a second stopper (sbx_destroy) waits until the
       first one is done with the vCPU threads before it joins them. */
    pthread_mutex_lock(&sb->stop_lock);
    if (!atomic_load(&sb->stopping)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sb->stop_msg, sizeof(sb->stop_msg), fmt, ap);
        va_end(ap);
        atomic_store(&sb->state, state);
        atomic_store(&sb->stopping, true);
        uint64_t one = 1;
        ssize_t n = write(sb->dead_fd, &one, sizeof(one));
        (void)n;
        for (unsigned i = 0; i < sb->nvcpu_created; i++)
            vcpu_kick(&sb->vcpu[i]);
    }
    pthread_mutex_unlock(&sb->stop_lock);
}

void sbx_guest_reset(struct sbx *sb, const char *how)
{
    if (serial_contains(&sb->serial, "Kernel panic"))
        sbx_stop(sb, SBX_STATE_FAILED, "the guest kernel panicked (%s)", how);
    else if (sb->shutdown_requested)
        sbx_stop(sb, SBX_STATE_STOPPED, "the guest shut down");
    else
        sbx_stop(sb, SBX_STATE_STOPPED, "the guest rebooted or halted (%s)", how);
}

static struct sbx *alloc_handle(void)
{
    struct sbx *sb = calloc(1, sizeof(*sb));
    if (!sb)
        return NULL;
    sb->kvm_fd = sb->vm_fd = sb->io_stop_fd = sb->ctl_fd = -1;
    sb->intr_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sb->dead_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&sb->stop_lock, NULL);
    serial_init(&sb->serial, -1, NULL, NULL);
    atomic_store(&sb->state, SBX_STATE_BOOTING);

    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t rnd[16];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0, sizeof(rnd));
    snprintf(sb->id, sizeof(sb->id), "sbx");
    for (size_t i = 0; i < sizeof(rnd); i++)
        sb->id[3 + i] = alphabet[rnd[i] % 36];
    sb->id[3 + sizeof(rnd)] = 0;
    if (sb->intr_fd < 0 || sb->dead_fd < 0) {
        sbx_destroy(sb);
        return NULL;
    }
    return sb;
}

/* The directory holding vmlinux and <name>.ext4 images. Returns malloc'ed path or NULL. */
static char *image_dir(const char *opt)
{
    char *d = NULL;
    const char *e;
    if (opt)
        d = strdup(opt);
    else if ((e = getenv("SBX_CACHE_DIR")) && *e)
        d = strdup(e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e)
        d = asprintf(&d, "%s/libsandbox", e) < 0 ? NULL : d;
    else if ((e = getenv("HOME")) && *e)
        d = asprintf(&d, "%s/.cache/libsandbox", e) < 0 ? NULL : d;
    return d;
}

static bool valid_name(const char *s)
{
    if (!*s || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

/* Resolves the kernel and root filesystem paths and checks they are readable. */
static int resolve_images(struct sbx *sb, const sbx_options *o)
{
    char *dir = image_dir(o->image_dir);
    const char *k = o->kernel;
    const char *env_k = getenv("SBX_KERNEL");
    if (!k && env_k && *env_k)
        k = env_k;
    if (k)
        sb->kernel_path = strdup(k);
    else if (dir && asprintf(&sb->kernel_path, "%s/vmlinux", dir) < 0)
        sb->kernel_path = NULL;

    const char *rf = o->rootfs ? o->rootfs : "base";
    int r = 0;
    if (strchr(rf, '/'))
        sb->rootfs_path = strdup(rf);
    else if (!valid_name(rf))
        r = sbx_seterr(sb, SBX_EINVAL,
                       "rootfs name '%s' is not a valid image name "
                       "(letters, digits, '-', '_', '.')",
                       rf);
    else if (dir && asprintf(&sb->rootfs_path, "%s/%s.ext4", dir, rf) < 0)
        sb->rootfs_path = NULL;
    free(dir);
    if (r < 0)
        return r;
    if (!sb->kernel_path || !sb->rootfs_path)
        return sbx_seterr(sb, SBX_EIMAGE,
                          "no image directory: set options.image_dir, "
                          "$SBX_CACHE_DIR or $HOME");
    if (access(sb->kernel_path, R_OK) < 0)
        return sbx_seterr(sb, SBX_EIMAGE,
                          "guest kernel %s: %s (build it with `make images`, or set "
                          "options.kernel / $SBX_KERNEL)",
                          sb->kernel_path, strerror(errno));
    if (access(sb->rootfs_path, R_OK) < 0)
        return sbx_seterr(sb, SBX_EIMAGE,
                          "root filesystem %s: %s (build it with `make images`, or set "
                          "options.rootfs)",
                          sb->rootfs_path, strerror(errno));
    for (unsigned i = 0; i < sb->ndisks; i++) {
        bool rw = !sb->disks[i].read_only && !sb->disks[i].ephemeral;
        if (access(sb->disks[i].path, rw ? R_OK | W_OK : R_OK) < 0)
            return sbx_seterr(sb, SBX_EIMAGE, "disk %u (%s): %s", i, sb->disks[i].path,
                              strerror(errno));
    }
    return 0;
}

static int copy_options(struct sbx *sb, const sbx_options *o)
{
    static const sbx_options defaults = SBX_OPTIONS_INIT;
    if (!o)
        o = &defaults;
    if (o->version < 1 || o->version > SBX_OPTIONS_VERSION)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.version is %u; this library knows versions 1..%d (use "
                          "SBX_OPTIONS_INIT)",
                          o->version, SBX_OPTIONS_VERSION);
    sb->vcpus = o->vcpus ? o->vcpus : DEFAULT_VCPUS;
    if (sb->vcpus > SBX_MAX_VCPUS)
        return sbx_seterr(sb, SBX_EINVAL, "options.vcpus is %u; the maximum is %d", o->vcpus,
                          SBX_MAX_VCPUS);
    sb->memory_mib = o->memory_mib ? o->memory_mib : DEFAULT_MEMORY_MIB;
    if (sb->memory_mib < MIN_MEMORY_MIB || sb->memory_mib > MAX_MEMORY_MIB)
        return sbx_seterr(sb, SBX_EINVAL, "options.memory_mib is %u; it must be %d..%d",
                          o->memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB);
    sb->boot_timeout_ms = o->boot_timeout_ms ? o->boot_timeout_ms : DEFAULT_BOOT_MS;
    if (o->console_fd < 0)
        return sbx_seterr(sb, SBX_EINVAL, "options.console_fd is %d; use 0 for none",
                          o->console_fd);
    sb->console_fd = o->console_fd;
    sb->serial.sink_fd = o->console_fd;
    if (o->ndisks > SBX_MAX_DISKS || (o->ndisks && !o->disks))
        return sbx_seterr(sb, SBX_EINVAL, "options.ndisks is %u; at most %d, with disks set",
                          o->ndisks, SBX_MAX_DISKS);
    for (unsigned i = 0; i < o->ndisks; i++) {
        const sbx_disk *d = &o->disks[i];
        if (!d->path || !*d->path)
            return sbx_seterr(sb, SBX_EINVAL, "options.disks[%u].path is empty", i);
        if (d->serial && strlen(d->serial) > MAX_SERIAL_LEN)
            return sbx_seterr(sb, SBX_EINVAL, "options.disks[%u].serial is longer than %d bytes", i,
                              MAX_SERIAL_LEN);
        sb->disks[i].path = strdup(d->path);
        sb->disks[i].serial = d->serial ? strdup(d->serial) : NULL;
        sb->disks[i].read_only = d->read_only;
        sb->disks[i].ephemeral = d->ephemeral;
        sb->ndisks = i + 1;
        if (!sb->disks[i].path || (d->serial && !sb->disks[i].serial))
            return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    }
    if (o->cmdline_extra && !(sb->cmdline_extra = strdup(o->cmdline_extra)))
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    return resolve_images(sb, o); /* after the disks: it checks them too */
}

/* Starts a blocking call: forgets interrupts that arrived before it. */
static struct waitctx begin_call(struct sbx *sb, unsigned timeout_ms)
{
    uint64_t v;
    while (read(sb->intr_fd, &v, sizeof(v)) > 0)
        ;
    return (struct waitctx){deadline_after_ms(timeout_ms), sb->intr_fd, sb->dead_fd};
}

/* Adds why the VM ended and its last console lines to the handle's message. */
static void explain_guest(struct sbx *sb)
{
    char tail[2048];
    if (atomic_load(&sb->stopping)) {
        pthread_mutex_lock(&sb->stop_lock);
        errmsg_append(sb, ": ");
        errmsg_append(sb, sb->stop_msg);
        pthread_mutex_unlock(&sb->stop_lock);
    }
    if (serial_tail_lines(&sb->serial, tail, sizeof(tail), CONSOLE_LINES_IN_ERR) > 0) {
        errmsg_append(sb, "\n--- last console lines ---\n");
        errmsg_append(sb, tail);
    }
}

/* Opens the control connection to envd and exchanges Hello, retrying while the guest boots
   (until envd listens, connections are refused). */
static int connect_agent(struct sbx *sb, const struct waitctx *w)
{
    char err[512] = "no answer";
    unsigned backoff_ms = 2;
    for (;;) {
        int fd = -1;
        int r = vm_vsock_connect(sb, SBX_ENVD_PORT, &fd);
        if (r < 0)
            return sbx_seterr(sb, r, "cannot connect to the guest agent: %s", sbx_strerror(r));
        struct agent_hello h;
        r = agent_hello(fd, w, &h, err, sizeof(err));
        if (r == 0) {
            sb->ctl_fd = fd;
            snprintf(sb->info.kernel_release, sizeof(sb->info.kernel_release), "%s",
                     h.kernel_release);
            snprintf(sb->info.envd_version, sizeof(sb->info.envd_version), "%s", h.envd_version);
            sb->info.protocol_version = h.protocol_version;
            sb->info.guest_cpus = h.cpus;
            sb->info.guest_mem_kib = h.mem_total_kib;
            snprintf(sb->info.os_name, sizeof(sb->info.os_name), "%s", h.os_name);
            return 0;
        }
        close(fd);
        if (r != SBX_EPROTO || now_ns() >= w->deadline_ns) {
            if (r == SBX_EPROTO || r == SBX_ETIMEDOUT)
                return sbx_seterr(sb, SBX_ETIMEDOUT, "the guest agent did not answer (%s)", err);
            return sbx_seterr(sb, r, "waiting for the guest agent: %s", sbx_strerror(r));
        }
        /* Refused or reset: envd is not listening yet. */
        r = wait_sleep(w, backoff_ms);
        if (r < 0)
            return sbx_seterr(sb, r, "waiting for the guest agent: %s", sbx_strerror(r));
        if (backoff_ms < 20)
            backoff_ms *= 2;
    }
}

int sbx_create(sbx **out, const sbx_options *opts)
{
    if (!out)
        return SBX_EINVAL;
    uint64_t t0 = now_ns();
    struct sbx *sb = *out = alloc_handle();
    if (!sb)
        return SBX_ENOMEM;
    int r = copy_options(sb, opts);
    if (r == 0)
        r = vm_build(sb);
    if (r == 0) {
        /* Not begin_call(): an interrupt that arrived while the VM was built is for this
           call (the handle is new, so nothing older can be pending). */
        struct waitctx w = {t0 + (uint64_t)sb->boot_timeout_ms * 1000000ull, sb->intr_fd,
                            sb->dead_fd};
        r = connect_agent(sb, &w);
        if (r == SBX_ETIMEDOUT)
            snprintf(sb->errmsg + strlen(sb->errmsg), sizeof(sb->errmsg) - strlen(sb->errmsg),
                     " within the boot timeout of %u ms", sb->boot_timeout_ms);
        if (r < 0) {
            if (r == SBX_EGUEST || r == SBX_ETIMEDOUT)
                explain_guest(sb);
            vm_teardown(sb);
        }
    }
    if (r < 0) {
        atomic_store(&sb->state, SBX_STATE_FAILED);
        return r;
    }
    snprintf(sb->info.id, sizeof(sb->info.id), "%s", sb->id);
    sb->info.vcpus = sb->vcpus;
    sb->info.memory_mib = sb->memory_mib;
    sb->info.boot_ns = now_ns() - t0;
    atomic_store(&sb->state, SBX_STATE_RUNNING);
    sb->errmsg[0] = 0;
    return 0;
}

void sbx_destroy(sbx *sb)
{
    if (!sb)
        return;
    vm_teardown(sb);
    if (sb->ctl_fd >= 0)
        close(sb->ctl_fd);
    if (sb->intr_fd >= 0)
        close(sb->intr_fd);
    if (sb->dead_fd >= 0)
        close(sb->dead_fd);
    serial_destroy(&sb->serial);
    pthread_mutex_destroy(&sb->stop_lock);
    free(sb->kernel_path);
    free(sb->rootfs_path);
    free(sb->cmdline_extra);
    for (unsigned i = 0; i < sb->ndisks; i++) {
        free(sb->disks[i].path);
        free(sb->disks[i].serial);
    }
    free(sb);
}

const char *sbx_errmsg(const sbx *sb)
{
    return sb ? sb->errmsg : "no sandbox handle (NULL)";
}

int sbx_state(const sbx *sb)
{
    return sb ? atomic_load(&((struct sbx *)sb)->state) : SBX_STATE_FAILED;
}

int sbx_get_info(sbx *sb, sbx_info *info)
{
    if (!sb || !info)
        return SBX_EINVAL;
    *info = sb->info;
    return 0;
}

/* Common checks of calls that talk to the agent. */
static int require_running(struct sbx *sb)
{
    int st = atomic_load(&sb->state);
    if (st == SBX_STATE_RUNNING)
        return 0;
    sbx_seterr(sb, SBX_ESTATE, "the sandbox is not running (state %d)", st);
    explain_guest(sb);
    return SBX_ESTATE;
}

/* After a failed agent call the control connection may hold a late reply: drop it. */
static int agent_failed(struct sbx *sb, int r, const char *what, const char *err)
{
    if (sb->ctl_fd >= 0)
        close(sb->ctl_fd);
    sb->ctl_fd = -1;
    sbx_seterr(sb, r, "%s: %s", what, err);
    if (r == SBX_EGUEST)
        explain_guest(sb);
    return r;
}

static int control_fd(struct sbx *sb, const struct waitctx *w)
{
    return sb->ctl_fd >= 0 ? 0 : connect_agent(sb, w);
}

int sbx_ping(sbx *sb, unsigned timeout_ms)
{
    if (!sb)
        return SBX_EINVAL;
    int r = require_running(sb);
    if (r < 0)
        return r;
    struct waitctx w = begin_call(sb, timeout_ms ? timeout_ms : DEFAULT_CALL_MS);
    if ((r = control_fd(sb, &w)) < 0)
        return r;
    char err[512] = "";
    r = agent_ping(sb->ctl_fd, &w, err, sizeof(err));
    return r < 0 ? agent_failed(sb, r, "ping", err) : 0;
}

int sbx_shutdown(sbx *sb, unsigned timeout_ms)
{
    if (!sb)
        return SBX_EINVAL;
    int r = require_running(sb);
    if (r < 0)
        return r;
    struct waitctx w = begin_call(sb, timeout_ms ? timeout_ms : DEFAULT_CALL_MS);
    sb->shutdown_requested = true;
    char err[512] = "";
    if ((r = control_fd(sb, &w)) == 0)
        r = agent_shutdown(sb->ctl_fd, &w, err, sizeof(err));
    /* envd finishes the shutdown once this connection closes. */
    if (sb->ctl_fd >= 0)
        close(sb->ctl_fd);
    sb->ctl_fd = -1;
    /* The VM may end before envd's reply arrives: only the end of the VM counts. */
    if (r == 0 || r == SBX_EPROTO || r == SBX_EGUEST) {
        struct waitctx wd = {w.deadline_ns, w.intr_fd, -1};
        r = wait_fd(&wd, sb->dead_fd, POLLIN);
    }
    if (r == SBX_EINTR)
        return sbx_seterr(sb, r, "shutdown interrupted");
    if (r < 0) {
        sbx_stop(sb, SBX_STATE_STOPPED, "the guest did not shut down in time; stopped forcibly");
        return sbx_seterr(sb, SBX_ETIMEDOUT,
                          "the guest did not shut down within %u ms; the VM "
                          "was stopped",
                          timeout_ms ? timeout_ms : DEFAULT_CALL_MS);
    }
    return 0;
}

size_t sbx_console(const sbx *sb, char *buf, size_t cap)
{
    if (!sb || !buf)
        return 0;
    return serial_tail(&((struct sbx *)sb)->serial, buf, cap);
}

void sbx_interrupt(sbx *sb)
{
    if (!sb)
        return;
    uint64_t one = 1;
    ssize_t n = write(sb->intr_fd, &one, sizeof(one));
    (void)n;
}
