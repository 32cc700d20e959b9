// SPDX-License-Identifier: Apache-2.0
/* The public sbx_* entry points: argument checks, handle state, errors, the boot handshake. */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/random.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/conn.h"
#include "internal.h"
#include "ops/expose.h"
#include "isolate/isolate.h"
#include "registry.h"
#include "session.h"
#include "util/wait.h"
#include "vmm/vcpu.h"
#include "snap/snap.h"
#include "template/template.h"
#include "vmm/vm.h"

#define DESTROY_WAIT_MS      30000   /* sbx_destroy() waits this long for calls to leave */
#define MAX_PROCESSES        4194304 /* the guest kernel's PID_MAX_LIMIT */
#define DEFAULT_BUFFER_MIB   64
#define MAX_BUFFER_MIB       65536
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
    case SBX_ENOENT:
        return "no such file, directory, user or process";
    case SBX_EACCES:
        return "permission denied";
    case SBX_ENOTDIR:
        return "not a directory";
    case SBX_EISDIR:
        return "is a directory";
    case SBX_ENOSPC:
        return "no space left in the guest";
    case SBX_EEXIST:
        return "already exists";
    case SBX_ENOTEMPTY:
        return "directory not empty";
    case SBX_EBUSY:
        return "limit reached";
    case SBX_EDEAD:
        return "the sandbox is dead";
    case SBX_EAGAIN:
        return "nothing available yet";
    default:
        return "unknown error";
    }
}

const char *sbx_version(void)
{
    return SBX_VERSION_STRING;
}

/* The calling thread's slot; with create, claims one (recycling the least recently used). */
static struct errslot *errslot(struct sbx *sb, bool create)
{
    pthread_t self = pthread_self();
    struct errslot *found = NULL, *lru = NULL;
    for (size_t i = 0; i < SBX_ERR_SLOTS; i++) {
        struct errslot *e = &sb->errs[i];
        if (e->used && pthread_equal(e->tid, self)) {
            found = e;
            break;
        }
        if (!lru || !e->used || (lru->used && e->stamp < lru->stamp))
            lru = e;
    }
    if (!found && create) {
        found = lru;
        found->used = true;
        found->tid = self;
        found->msg[0] = 0;
    }
    if (found)
        found->stamp = ++sb->err_stamp;
    return found;
}

char *sbx_errbuf(struct sbx *sb)
{
    pthread_mutex_lock(&sb->err_lock);
    char *m = errslot(sb, true)->msg;
    pthread_mutex_unlock(&sb->err_lock);
    return m;
}

int sbx_seterr(struct sbx *sb, int code, const char *fmt, ...)
{
    char *m = sbx_errbuf(sb);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, SBX_ERRMSG_MAX, fmt, ap);
    va_end(ap);
    return code;
}

/* Appends text to the error message (truncating). */
static void errmsg_append(struct sbx *sb, const char *text)
{
    char *m = sbx_errbuf(sb);
    size_t n = strlen(m);
    snprintf(m + n, SBX_ERRMSG_MAX - n, "%s", text);
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
        if (sb->isolated)
            iso_kill(sb);                   /* its VM ends with it */
        pthread_mutex_lock(&sb->park_lock); /* parked vCPU threads end too */
        pthread_cond_broadcast(&sb->park_cond);
        pthread_mutex_unlock(&sb->park_lock);
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
    atomic_init(&sb->refs, 1);
    sb->kvm_fd = sb->vm_fd = sb->io_stop_fd = sb->ctl_fd = -1;
    sb->iso_pidfd = sb->iso_ctl = sb->iso_console = -1;
    sb->intr_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sb->dead_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    sb->life_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    for (size_t i = 0; i < SBX_CALL_SLOTS; i++)
        atomic_init(&sb->calls[i].fd, -1);
    pthread_mutex_init(&sb->stop_lock, NULL);
    pthread_mutex_init(&sb->err_lock, NULL);
    pthread_mutex_init(&sb->pool_lock, NULL);
    pthread_mutex_init(&sb->park_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sb->park_cond, &ca);
    pthread_condattr_destroy(&ca);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    sb->created_ns = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;
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
    if (sb->intr_fd < 0 || sb->dead_fd < 0 || sb->life_fd < 0) {
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

static int copy_options(struct sbx *sb, const sbx_options *o, bool boot)
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
    sb->seccomp = !(o->version >= 4 && o->no_seccomp);
    sb->isolated = o->version >= 4 && o->isolated;
    sb->max_processes = o->version >= 4 ? o->max_processes : 0;
    if (sb->max_processes > MAX_PROCESSES)
        return sbx_seterr(sb, SBX_EINVAL, "options.max_processes is %u; at most %d",
                          o->max_processes, MAX_PROCESSES);
    sb->buffer_mib = o->version >= 5 && o->max_buffer_mib ? o->max_buffer_mib : DEFAULT_BUFFER_MIB;
    if (sb->buffer_mib > MAX_BUFFER_MIB)
        return sbx_seterr(sb, SBX_EINVAL, "options.max_buffer_mib is %u; at most %d",
                          o->max_buffer_mib, MAX_BUFFER_MIB);
    if (sb->isolated && !sb->seccomp)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.isolated needs the seccomp filters: leave "
                          "options.no_seccomp 0");
    if (o->version >= 4 && o->cgroup && !sb->isolated)
        return sbx_seterr(sb, SBX_EINVAL, "options.cgroup is for the isolated mode only");
    if (o->version >= 4 && o->cgroup && !(sb->iso_cgroup = strdup(o->cgroup)))
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
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
    int r = session_options(sb, o);
    if (r == 0)
        r = network_options(sb, o);
    if (r < 0)
        return r;
    if (boot)
        return resolve_images(sb, o); /* after the disks: it checks them too */
    /* From a snapshot: the VM's shape and images are the snapshot's. */
    if (o->vcpus || o->memory_mib || o->kernel || o->rootfs || o->cmdline_extra || o->ndisks)
        return sbx_seterr(sb, SBX_EINVAL,
                          "a sandbox made from a template or snapshot has its vCPUs, memory, "
                          "kernel, root filesystem and disks: leave those options unset");
    return 0;
}

/* Adds why the VM ended and its last console lines to the handle's message. */
void sbx_explain_guest(struct sbx *sb)
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

int sbx_agent_dial(struct sbx *sb, int *fd)
{
    if (sb->isolated)
        return iso_dial(sb, SBX_ENVD_PORT, fd);
    if (!sb->local_sock)
        return vm_vsock_connect(sb, SBX_ENVD_PORT, fd);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sb->local_sock);
    *fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (*fd < 0)
        return SBX_EIO;
    /* A local unix socket connects at once or not at all. */
    if (connect(*fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(*fd);
        *fd = -1;
        return SBX_EIO;
    }
    return 0;
}

/* Opens the control connection to envd and exchanges Hello, retrying while the guest boots
   (until envd listens, connections are refused). */
static int connect_agent(struct sbx *sb, const struct waitctx *w)
{
    char err[512] = "no answer";
    unsigned backoff_ms = 2;
    for (;;) {
        int fd = -1;
        int r = sbx_agent_dial(sb, &fd);
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
            sb->features = h.features;
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

/* How a sandbox comes to be: a boot, or a snapshot restored as a new sandbox (a template), as
   the same sandbox (resume), or as a copy (fork: new id, the parent's settings). */
enum origin { BOOT, FROM_TEMPLATE, RESUME, FORK };

/* Connects to envd and configures it. A restored guest first learns (vsock transport reset)
   that its old connections are gone; if that reaches it after our first connection, the
   connection is reset and the handshake is made again. */
static int handshake(struct sbx *sb, const struct waitctx *w)
{
    int r = SBX_EPROTO;
    for (int attempt = 0; attempt < (sb->restore ? 3 : 1) && r == SBX_EPROTO; attempt++) {
        if (sb->ctl_fd >= 0) {
            close(sb->ctl_fd);
            sb->ctl_fd = -1;
        }
        r = connect_agent(sb, w);
        if (r == SBX_ETIMEDOUT)
            errmsg_append(sb, sb->restore ? " after the restore" : " within the boot timeout");
        if (r == 0)
            r = session_configure(sb, sb->ctl_fd, w);
    }
    return r;
}

/* The root disk's layers of a booted sandbox (the template builder's). */
struct root_layers {
    char *const *paths;
    unsigned n;
    uint64_t size;
    const char *cwd; /* the default working directory, or NULL */
};

static int set_root_layers(struct sbx *sb, const struct root_layers *rl)
{
    sb->root_layers = calloc(rl->n ? rl->n : 1, sizeof(char *));
    if (!sb->root_layers)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (unsigned i = 0; i < rl->n; i++) {
        if (!(sb->root_layers[i] = strdup(rl->paths[i])))
            return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        sb->nroot_layers = i + 1;
    }
    sb->root_durable = rl->n;
    sb->root_size = rl->size;
    if (rl->cwd && !(sb->default_cwd = strdup(rl->cwd)))
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    return 0;
}

static int running(struct sbx *sb, uint64_t t0);

static int create_isolated(struct sbx *sb, const sbx_options *opts, const char *snapdir,
                           enum origin how, const struct root_layers *rl, uint64_t t0, int r);

static int create(sbx **out, const sbx_options *opts, const char *snapdir, enum origin how,
                  const struct root_layers *rl, unsigned flags)
{
    if (!out)
        return SBX_EINVAL;
    uint64_t t0 = now_ns();
    struct sbx *sb = *out = alloc_handle();
    if (!sb)
        return SBX_ENOMEM;
    sb->drop_caps = flags & SBX_CREATE_DROP_CAPS;
    int r = copy_options(sb, opts, how == BOOT);
    if (r == 0 && rl)
        r = set_root_layers(sb, rl);
    if (sb->isolated)
        return create_isolated(sb, opts, snapdir, how, rl, t0, r);
    if (r == 0 && how != BOOT) {
        r = snap_open(sb, snapdir,
                      how == RESUME ? SNAP_KEEP_SETTINGS | SNAP_KEEP_ID
                      : how == FORK ? SNAP_KEEP_SETTINGS
                                    : 0);
    }
    if (r == 0)
        r = vm_build(sb);
    if (r == 0) {
        if (sb->restore)
            snap_resumed(sb);
        /* Not a call slot: an interrupt that arrived while the VM was built is for this
           call (the handle is new, so nothing older can be pending). */
        struct waitctx w = {t0 + (uint64_t)sb->boot_timeout_ms * 1000000ull, sb->intr_fd,
                            sb->dead_fd};
        r = handshake(sb, &w);
        if (r < 0) {
            if (r == SBX_EGUEST || r == SBX_ETIMEDOUT)
                sbx_explain_guest(sb);
            vm_teardown(sb);
        }
    }
    snap_close(sb);
    if (r == 0)
        r = session_start_lifetime(sb);
    if (r < 0) {
        atomic_store(&sb->state, SBX_STATE_FAILED);
        return r;
    }
    /* The control connection becomes the first pooled one. */
    agent_conn_adopt(sb, sb->ctl_fd);
    sb->ctl_fd = -1;
    snprintf(sb->info.id, sizeof(sb->info.id), "%s", sb->id);
    sb->info.vcpus = sb->vcpus;
    sb->info.memory_mib = sb->memory_mib;
    return running(sb, t0);
}

/* A created sandbox becomes visible. */
static int running(struct sbx *sb, uint64_t t0)
{
    sb->info.boot_ns = now_ns() - t0;
    sb->running_mono_ns = now_ns();
    atomic_store(&sb->state, SBX_STATE_RUNNING);
    registry_add(sb);
    sbx_errbuf(sb)[0] = 0;
    return 0;
}

/* The isolated mode: the child process makes the sandbox (lib/isolate/). */
static int create_isolated(struct sbx *sb, const sbx_options *opts, const char *snapdir,
                           enum origin how, const struct root_layers *rl, uint64_t t0, int r)
{
    if (r == 0 && rl)
        r = sbx_seterr(sb, SBX_ENOTSUP, "the isolated mode does not build templates");
    if (r == 0)
        r = iso_start(sb, opts, snapdir, how == RESUME || how == FORK ? how : 0);
    if (r < 0) {
        if (r == SBX_EGUEST || r == SBX_ETIMEDOUT)
            sbx_explain_guest(sb);
        atomic_store(&sb->state, SBX_STATE_FAILED);
        return r;
    }
    return running(sb, t0);
}

int sbx_create(sbx **out, const sbx_options *opts)
{
    return sbx_create_flags(out, opts, 0);
}

int sbx_create_flags(sbx **out, const sbx_options *opts, unsigned flags)
{
    const char *tpl = opts && opts->version >= 3 ? opts->template_name : NULL;
    /* The isolated mode's child resolves the template itself. */
    bool isolated = opts && opts->version >= 4 && opts->isolated;
    if (!tpl || isolated)
        return create(out, opts, NULL, tpl ? FROM_TEMPLATE : BOOT, NULL, flags);
    char *dir = NULL;
    char err[SBX_ERRMSG_MAX];
    int r = template_snapshot_dir(tpl, opts->template_dir, &dir, err, sizeof(err));
    if (r < 0) {
        /* A handle that carries the message, as for every failed sbx_create(). */
        struct sbx *sb = *out = out ? alloc_handle() : NULL;
        if (sb) {
            sbx_seterr(sb, r, "%s", err);
            atomic_store(&sb->state, SBX_STATE_FAILED);
        }
        return r;
    }
    r = create(out, opts, dir, FROM_TEMPLATE, NULL, flags);
    free(dir);
    return r;
}

int sbx_create_origin(sbx **out, const sbx_options *opts, const char *snapdir, unsigned how,
                      unsigned flags)
{
    if (!snapdir || (how != RESUME && how != FORK))
        return SBX_EINVAL;
    return create(out, opts, snapdir, (enum origin)how, NULL, flags);
}

int sbx_create_layered(sbx **out, const sbx_options *opts, char *const *layers, unsigned n,
                       uint64_t size, const char *cwd)
{
    struct root_layers rl = {layers, n, size, cwd};
    return create(out, opts, NULL, BOOT, &rl, 0);
}

int sbx_resume(sbx **out, const char *path, const sbx_options *opts)
{
    if (!out || !path)
        return SBX_EINVAL;
    int r = create(out, opts, path, RESUME, NULL, 0);
    /* The files stay open and mapped: the directory is no longer needed, and a second resume
       of the same pause would make a second sandbox with the same id. */
    if (r == 0)
        snap_remove(path);
    return r;
}

static int check_running(struct sbx *sb, const char *call)
{
    int st = atomic_load(&sb->state);
    if (st != SBX_STATE_RUNNING)
        return sbx_seterr(sb, st == SBX_STATE_FAILED ? SBX_EDEAD : SBX_ESTATE,
                          "%s: the sandbox is not running", call);
    return 0;
}

/* The bytes of an sbx_options of `version` (older callers pass smaller structures). */
static size_t options_size(unsigned version)
{
    return version == 1   ? offsetof(sbx_options, network)
           : version == 2 ? offsetof(sbx_options, template_name)
           : version == 3 ? offsetof(sbx_options, no_seccomp)
           : version == 4 ? offsetof(sbx_options, max_buffer_mib)
                          : sizeof(sbx_options);
}

/* A snapshot of the running VM into `dir`, written by the isolated mode's child if it has it. */
static int capture(struct sbx *sb, const char *dir, bool pause)
{
    return sb->isolated ? iso_snapshot(sb, dir, pause) : snap_capture(sb, dir, pause);
}

int sbx_snapshot(sbx *sb, const char *path)
{
    if (!sb)
        return SBX_EINVAL;
    if (!path || !*path)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_snapshot: path is empty");
    int r = check_running(sb, "sbx_snapshot");
    if (r == 0) {
        char *dir = NULL;
        char err[SBX_ERRMSG_MAX];
        r = template_snapshot_target(path, &dir, err, sizeof(err));
        if (r < 0)
            return sbx_seterr(sb, r, "sbx_snapshot: %s", err);
        r = capture(sb, dir, false);
        if (r == 0 && template_register_snapshot(sb, path, dir, err, sizeof(err)) < 0)
            r = sbx_seterr(sb, SBX_EIO, "sbx_snapshot: %s", err);
        free(dir);
    }
    return r;
}

int sbx_pause(sbx *sb, const char *path)
{
    if (!sb)
        return SBX_EINVAL;
    if (!path || !*path)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_pause: path is empty");
    int r = check_running(sb, "sbx_pause");
    if (r == 0)
        r = capture(sb, path, true);
    if (r < 0)
        return r;
    /* The VM stays parked from the capture on: nothing it does after it is lost. */
    if (sb->info.id[0])
        registry_remove(sb);
    expose_destroy(sb);
    sbx_stop(sb, SBX_STATE_PAUSED, "the sandbox was paused to %s", path);
    vm_teardown_async(sb);
    agent_pool_free(sb);
    return 0;
}

int sbx_fork(sbx *sb, unsigned n, const sbx_options *opts, sbx **out)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out || n == 0 || n > 1024)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_fork: n must be 1..1024, with out set");
    int r = check_running(sb, "sbx_fork");
    if (r < 0)
        return r;
    for (unsigned i = 0; i < n; i++)
        out[i] = NULL;
    const char *td = getenv("TMPDIR");
    char *base = NULL;
    if (asprintf(&base, "%s/sbx-fork-XXXXXX", td && *td ? td : "/var/tmp") < 0 || !mkdtemp(base)) {
        free(base);
        return sbx_seterr(sb, SBX_EIO, "sbx_fork: cannot create a temporary directory: %s",
                          strerror(errno));
    }
    char *dir = NULL;
    if (asprintf(&dir, "%s/snapshot", base) < 0)
        dir = NULL;
    r = dir ? capture(sb, dir, false) : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    /* Copies of an isolated sandbox are isolated too (in its cgroup unless opts name one). */
    sbx_options iso = SBX_OPTIONS_INIT;
    if (r == 0 && sb->isolated) {
        if (opts && opts->version >= 1 && opts->version <= SBX_OPTIONS_VERSION)
            memcpy(&iso, opts, options_size(opts->version));
        iso.version = SBX_OPTIONS_VERSION;
        iso.isolated = 1;
        if (!iso.cgroup)
            iso.cgroup = sb->iso_cgroup;
        if (opts && (opts->version < 1 || opts->version > SBX_OPTIONS_VERSION))
            iso.version = opts->version; /* refused below with the usual message */
        opts = &iso;
    }
    for (unsigned i = 0; r == 0 && i < n; i++) {
        r = create(&out[i], opts, dir, FORK, NULL, 0);
        if (r < 0) {
            sbx_seterr(sb, r, "sbx_fork: copy %u: %s", i, sbx_errmsg(out[i]));
            for (unsigned j = 0; j <= i; j++) {
                sbx_destroy(out[j]);
                out[j] = NULL;
            }
        }
    }
    if (dir)
        snap_remove(dir);
    rmdir(base);
    free(dir);
    free(base);
    return r;
}

int sbx_local_attach(const char *sock, const sbx_options *opts, sbx **out)
{
    static const sbx_options defaults = SBX_OPTIONS_INIT;
    struct sbx *sb = *out = alloc_handle();
    if (!sb)
        return SBX_ENOMEM;
    sb->local_sock = strdup(sock);
    int r = sb->local_sock ? session_options(sb, opts ? opts : &defaults)
                           : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r == 0) {
        struct waitctx w = {deadline_after_ms(10000), sb->intr_fd, sb->dead_fd};
        r = connect_agent(sb, &w);
        if (r == 0)
            r = session_configure(sb, sb->ctl_fd, &w);
    }
    if (r < 0) {
        atomic_store(&sb->state, SBX_STATE_FAILED);
        return r;
    }
    agent_conn_adopt(sb, sb->ctl_fd);
    sb->ctl_fd = -1;
    snprintf(sb->info.id, sizeof(sb->info.id), "%s", sb->id);
    sb->running_mono_ns = now_ns();
    atomic_store(&sb->state, SBX_STATE_RUNNING);
    return 0;
}

/* Waits until calls running in other threads when sbx_destroy() began have left (the VM's
   stop woke them: they return SBX_EDEAD). False if one is still inside after DESTROY_WAIT_MS:
   then the handle's memory is kept (leaked) rather than freed under it. */
static bool calls_left(struct sbx *sb)
{
    for (unsigned ms = 0; ms < DESTROY_WAIT_MS; ms++) {
        bool busy = false;
        for (size_t i = 0; i < SBX_CALL_SLOTS; i++)
            busy |= atomic_load(&sb->calls[i].used) != 0;
        if (!busy)
            return true;
        usleep(1000);
    }
    return false;
}

void sbx_destroy(sbx *sb)
{
    if (!sb)
        return;
    sbx_stop(sb, SBX_STATE_STOPPED, "the sandbox was destroyed"); /* wakes blocked calls */
    if (sb->info.id[0])
        registry_remove(sb);
    expose_destroy(sb); /* before the VM: its thread dials envd through the vsock device */
    if (sb->isolated)
        iso_stop(sb);
    vm_teardown_async(sb);
    if (!calls_left(sb))
        return;
    agent_pool_free(sb);
    sbx_unref(sb);
}

struct sbx *sbx_ref(struct sbx *sb)
{
    atomic_fetch_add(&sb->refs, 1);
    return sb;
}

/* The last hold went: nothing uses the handle any more. */
void sbx_unref(struct sbx *sb)
{
    if (atomic_fetch_sub(&sb->refs, 1) != 1)
        return;
    if (sb->ctl_fd >= 0)
        close(sb->ctl_fd);
    if (sb->intr_fd >= 0)
        close(sb->intr_fd);
    if (sb->dead_fd >= 0)
        close(sb->dead_fd);
    if (sb->life_fd >= 0)
        close(sb->life_fd);
    for (size_t i = 0; i < SBX_CALL_SLOTS; i++)
        if (atomic_load(&sb->calls[i].fd) >= 0)
            close(atomic_load(&sb->calls[i].fd));
    serial_destroy(&sb->serial);
    session_free(sb);
    network_free(sb);
    free(sb->local_sock);
    free(sb->iso_cgroup);
    pthread_mutex_destroy(&sb->stop_lock);
    pthread_mutex_destroy(&sb->err_lock);
    pthread_mutex_destroy(&sb->pool_lock);
    pthread_mutex_destroy(&sb->park_lock);
    pthread_cond_destroy(&sb->park_cond);
    free(sb->kernel_path);
    free(sb->rootfs_path);
    for (unsigned i = 0; i < sb->nroot_layers; i++)
        free(sb->root_layers[i]);
    free(sb->root_layers);
    snap_close(sb);
    free(sb->cmdline_extra);
    for (unsigned i = 0; i < sb->ndisks; i++) {
        free(sb->disks[i].path);
        free(sb->disks[i].serial);
    }
    free(sb);
}

const char *sbx_errmsg(const sbx *sb)
{
    if (!sb)
        return "no sandbox handle (NULL)";
    struct sbx *m = (struct sbx *)sb; /* the slot table is bookkeeping, not the sandbox */
    pthread_mutex_lock(&m->err_lock);
    struct errslot *e = errslot(m, false);
    pthread_mutex_unlock(&m->err_lock);
    return e ? e->msg : "";
}

int sbx_state(const sbx *sb)
{
    return sb ? atomic_load(&((struct sbx *)sb)->state) : SBX_STATE_FAILED;
}

int sbx_get_info(sbx *sb, sbx_info *info)
{
    if (!sb)
        return SBX_EINVAL;
    if (!info)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_get_info: info is NULL");
    *info = sb->info;
    info->state = atomic_load(&sb->state);
    info->created_ns = sb->created_ns;
    info->ends_ns = atomic_load(&sb->ends_ns);
    info->uptime_ns = sb->running_mono_ns ? now_ns() - sb->running_mono_ns : 0;
    return 0;
}

int sbx_ping(sbx *sb, unsigned timeout_ms)
{
    if (!sb)
        return SBX_EINVAL;
    struct call c;
    int r = call_begin(sb, &c, timeout_ms ? timeout_ms : DEFAULT_CALL_MS);
    if (r < 0)
        return r;
    struct agent_conn *conn;
    if ((r = agent_conn_get(&c, &conn)) == 0) {
        char err[512] = "";
        r = agent_ping(conn->fd, &c.w, err, sizeof(err));
        agent_conn_put(sb, conn, r == 0);
        if (r < 0)
            r = call_fail(&c, r, "ping: %s", err);
    }
    call_end(&c);
    return r;
}

int sbx_shutdown(sbx *sb, unsigned timeout_ms)
{
    if (!sb)
        return SBX_EINVAL;
    unsigned ms = timeout_ms ? timeout_ms : DEFAULT_CALL_MS;
    struct call c;
    int r = call_begin(sb, &c, ms);
    if (r < 0)
        return r;
    sb->shutdown_requested = true;
    struct agent_conn *conn;
    if ((r = agent_conn_get(&c, &conn)) == 0) {
        char err[512] = "";
        r = agent_shutdown(conn->fd, &c.w, err, sizeof(err));
        /* envd finishes the shutdown once this connection closes. */
        agent_conn_put(sb, conn, false);
    }
    /* The VM may end before envd's reply arrives: only the end of the VM counts. */
    if (r == 0 || r == SBX_EPROTO || r == SBX_EGUEST || r == SBX_EDEAD) {
        struct waitctx wd = {c.w.deadline_ns, c.w.intr_fd, -1};
        r = wait_fd(&wd, sb->dead_fd, POLLIN);
    }
    if (r == SBX_EINTR) {
        r = call_fail(&c, r, "shutdown interrupted");
    } else if (r < 0) {
        sbx_stop(sb, SBX_STATE_STOPPED, "the guest did not shut down in time; stopped forcibly");
        r = call_fail(&c, SBX_ETIMEDOUT,
                      "the guest did not shut down within %u ms; the VM was stopped", ms);
    }
    call_end(&c);
    return r;
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
    for (size_t i = 0; i < SBX_CALL_SLOTS; i++)
        if (atomic_load(&sb->calls[i].used)) {
            int fd = atomic_load(&sb->calls[i].fd);
            if (fd >= 0)
                n = write(fd, &one, sizeof(one));
        }
    (void)n;
}
