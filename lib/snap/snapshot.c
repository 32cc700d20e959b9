// SPDX-License-Identifier: Apache-2.0
/* Snapshots: writing a running VM to a directory and building a VM from one. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <linux/virtio_ids.h>

#include "internal.h"
#include "session.h"
#include "util/wait.h"
#include "snap/snap.h"
#include "snapshot.pb-c.h"
#include "virtio/virtio.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"
#include "vmm/x86/cpu.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/state.h"

#define SNAP_MAGIC     "SBXSNAP"
#define SNAP_FORMAT    1
#define SNAP_STATE_MAX (64u << 20) /* bytes of the state payload */
#define PARK_MS        5000
#define HEAD_CRC_BYTES 65536
#define MAX_LAYERS     64
#define MAX_STRINGS    1024
#define PAGE           4096u

struct snap_header { /* SNAP_HEADER_SIZE bytes */
    char magic[8];
    uint32_t format;
    uint32_t reserved;
    uint64_t length;
    uint32_t crc;        /* of the payload */
    uint32_t header_crc; /* of the bytes before it */
};
_Static_assert(sizeof(struct snap_header) == SNAP_HEADER_SIZE, "snapshot header layout");

struct snap_restore {
    Sbx__Snap__State *st;
    int mem_fd;
    uint64_t mem_size;
};

/* ---- helpers -------------------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n, uint64_t off)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = pread(fd, b, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* CRC-32 of the first 64 KiB of a file and its size: identifies a base image cheaply. */
static int file_identity(const char *path, uint64_t *size, uint32_t *crc)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    uint8_t *buf = malloc(HEAD_CRC_BYTES);
    int r = -1;
    if (buf && fstat(fd, &st) == 0) {
        size_t n = (uint64_t)st.st_size < HEAD_CRC_BYTES ? (size_t)st.st_size : HEAD_CRC_BYTES;
        if (read_all(fd, buf, n, 0) == 0) {
            *size = (uint64_t)st.st_size;
            *crc = (uint32_t)crc32(0, buf, (uInt)n);
            r = 0;
        }
    }
    free(buf);
    close(fd);
    return r;
}

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        if (w[i])
            return false;
    return true;
}

/* Writes guest RAM (lo then hi) to fd as a sparse file: zero pages stay holes. */
static int write_memory(struct sbx *sb, int fd, uint64_t *bytes)
{
    uint64_t total = sb->mem.lo_size + sb->mem.hi_size;
    if (ftruncate(fd, (off_t)total) < 0)
        return -1;
    const uint8_t *base = sb->mem.lo; /* lo and hi are one mapping (create_memory) */
    uint64_t run = 0, start = 0;
    *bytes = 0;
    for (uint64_t off = 0; off <= total; off += PAGE) {
        bool data = off < total && !page_is_zero(base + off);
        if (data && !run)
            start = off;
        if (data) {
            run += PAGE;
            if (run < (64u << 20))
                continue;
        }
        if (run) {
            if (write_all(fd, base + start, run, start) < 0)
                return -1;
            *bytes += run;
            if (data) { /* the run was cut at its size cap: this page starts the next */
                run = 0;
                off -= PAGE;
                continue;
            }
            run = 0;
        }
    }
    return 0;
}

static char *path_join(const char *dir, const char *name)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

static int bytes_dup(ProtobufCBinaryData *b, const void *p, size_t n)
{
    b->data = malloc(n ? n : 1);
    if (!b->data)
        return -1;
    memcpy(b->data, p, n);
    b->len = n;
    return 0;
}

/* ---- capture ------------------------------------------------------------------------- */

/* Everything a capture allocates, freed together. */
struct capture {
    Sbx__Snap__State st;
    Sbx__Snap__Machine machine;
    Sbx__Snap__Vcpu *vcpus, **vcpu_ptrs;
    Sbx__Snap__Vm vm;
    Sbx__Snap__Device dev[SBX_MAX_DISKS + 3], *dev_ptrs[SBX_MAX_DISKS + 3];
    Sbx__Snap__Queue q[SBX_MAX_DISKS + 3][VIRTIO_STATE_QUEUES],
        *q_ptrs[SBX_MAX_DISKS + 3][VIRTIO_STATE_QUEUES];
    Sbx__Snap__Serial serial;
    Sbx__Snap__Disk disk;
    Sbx__Snap__Layer base, layers[MAX_LAYERS + 1], *layer_ptrs[MAX_LAYERS + 1];
    Sbx__Snap__Session session;
    char *layer_paths[MAX_LAYERS + 1];
    char **meta;
};

static void capture_free(struct capture *c, unsigned nvcpus)
{
    for (unsigned i = 0; c->vcpus && i < nvcpus; i++)
        xstate_vcpu_free(&c->vcpus[i]);
    free(c->vcpus);
    free(c->vcpu_ptrs);
    xstate_vm_free(&c->vm);
    free(c->serial.regs.data);
    free(c->serial.console.data);
    for (unsigned i = 0; i <= MAX_LAYERS; i++)
        free(c->layer_paths[i]);
    if (c->meta)
        session_list_free(c->meta);
}

static void save_serial(struct serial *s, Sbx__Snap__Serial *out)
{
    sbx__snap__serial__init(out);
    pthread_mutex_lock(&s->lock);
    uint8_t regs[8] = {s->ier, s->lcr, s->mcr, s->scr, s->fcr, s->dll, s->dlm, s->thri_pending};
    pthread_mutex_unlock(&s->lock);
    bytes_dup(&out->regs, regs, sizeof(regs));
    char *tail = malloc(SERIAL_RING_SIZE);
    if (tail) {
        size_t n = serial_tail(s, tail, SERIAL_RING_SIZE);
        bytes_dup(&out->console, tail, n);
        free(tail);
    }
}

/* Fills the state of a parked VM. Returns 0 or an SBX_E* code (message set). */
static int save_state(struct sbx *sb, struct capture *c)
{
    sbx__snap__state__init(&c->st);
    c->st.format = SNAP_FORMAT;
    c->st.library = (char *)sbx_version();
    c->st.created_ns = realtime_ns();

    Sbx__Snap__Machine *m = &c->machine;
    sbx__snap__machine__init(m);
    m->vcpus = sb->vcpus;
    m->memory_mib = sb->memory_mib;
    m->lo_size = sb->mem.lo_size;
    m->hi_size = sb->mem.hi_size;
    m->kernel_release = sb->info.kernel_release;
    m->tsc_khz = xstate_tsc_khz(sb->vcpu[0].fd);
    m->xsave_size = (uint32_t)xstate_xsave_size(sb->kvm_fd);
    m->network = sb->network;
    m->protocol_version = sb->info.protocol_version;
    m->features = sb->features;
    m->envd_version = sb->info.envd_version;
    m->os_name = sb->info.os_name;
    m->guest_cpus = sb->info.guest_cpus;
    m->guest_mem_kib = sb->info.guest_mem_kib;
    m->kernel = sb->kernel_path ? sb->kernel_path : "";
    c->st.machine = m;

    c->vcpus = calloc(sb->vcpus, sizeof(*c->vcpus));
    c->vcpu_ptrs = calloc(sb->vcpus, sizeof(*c->vcpu_ptrs));
    if (!c->vcpus || !c->vcpu_ptrs)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (unsigned i = 0; i < sb->vcpus; i++) {
        const char *what = "";
        int r = xstate_vcpu_save(sb->kvm_fd, sb->vcpu[i].fd, m->xsave_size, &c->vcpus[i], &what);
        if (r < 0)
            return sbx_seterr(sb, SBX_EKVM, "saving vCPU %u: %s: %s", i, what, strerror(-r));
        /* Tells the guest's kvmclock that it was stopped, so it does not report soft lockups
           (api.rst 4.85; harmless when the guest does not use kvmclock). */
        ioctl(sb->vcpu[i].fd, KVM_KVMCLOCK_CTRL, 0);
        c->vcpu_ptrs[i] = &c->vcpus[i];
    }
    c->st.n_vcpus = sb->vcpus;
    c->st.vcpus = c->vcpu_ptrs;

    const char *what = "";
    int r = xstate_vm_save(sb->vm_fd, &c->vm, &what);
    if (r < 0)
        return sbx_seterr(sb, SBX_EKVM, "saving the VM: %s: %s", what, strerror(-r));
    c->st.vm = &c->vm;

    for (unsigned i = 0; i < sb->nvdev; i++) {
        struct virtio_state vs;
        if (virtio_save(sb->vdev[i], &vs) < 0)
            return sbx_seterr(sb, SBX_EGUEST, "device %u has failed: nothing to snapshot", i);
        Sbx__Snap__Device *d = &c->dev[i];
        sbx__snap__device__init(d);
        d->device_id = vs.device_id;
        d->mmio_base = vs.mmio_base;
        d->gsi = vs.gsi;
        d->status = vs.status;
        d->dev_features_sel = vs.dev_features_sel;
        d->drv_features_sel = vs.drv_features_sel;
        d->drv_features = vs.drv_features;
        d->queue_sel = vs.queue_sel;
        d->int_status = vs.int_status;
        d->config_gen = vs.config_gen;
        for (unsigned q = 0; q < vs.nqueues; q++) {
            Sbx__Snap__Queue *sq = &c->q[i][q];
            sbx__snap__queue__init(sq);
            sq->num = vs.q[q].num;
            sq->ready = vs.q[q].ready;
            sq->desc = vs.q[q].desc;
            sq->avail = vs.q[q].avail;
            sq->used = vs.q[q].used;
            sq->last_avail = vs.q[q].last_avail;
            sq->used_idx = vs.q[q].used_idx;
            c->q_ptrs[i][q] = sq;
        }
        d->n_queues = vs.nqueues;
        d->queues = c->q_ptrs[i];
        c->dev_ptrs[i] = d;
    }
    c->st.n_devices = sb->nvdev;
    c->st.devices = c->dev_ptrs;

    save_serial(&sb->serial, &c->serial);
    c->st.serial = &c->serial;

    /* The root disk: the base and the layers this sandbox keeps by path, then its own diff. */
    unsigned keep = sb->root_durable;
    sbx__snap__disk__init(&c->disk);
    sbx__snap__layer__init(&c->base);
    c->disk.size = virtio_blk_size(sb->root_disk);
    c->base.path = sb->rootfs_path;
    if ((r = snap_pin(sb)) < 0)
        return r;
    c->base.size = sb->base_size;
    c->base.head_crc = sb->base_crc;
    c->disk.image = &c->base;
    for (unsigned i = 0; i <= keep; i++) {
        Sbx__Snap__Layer *l = &c->layers[i];
        sbx__snap__layer__init(l);
        if (i < keep) {
            l->durable = true;
            l->path = c->layer_paths[i] = strdup(sb->root_layers[i]); /* absolute: snap_pin */
            if (!l->path)
                return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        } else {
            l->path = c->layer_paths[i] = strdup(SNAP_DISK_FILE); /* relative to the snapshot */
            if (!l->path)
                return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        }
        c->layer_ptrs[i] = l;
    }
    c->disk.n_layers = keep + 1;
    c->disk.layers = c->layer_ptrs;
    c->st.root = &c->disk;

    sbx__snap__session__init(&c->session);
    c->session.sandbox_id = sb->id;
    for (c->session.n_envs = 0; sb->envs && sb->envs[c->session.n_envs];)
        c->session.n_envs++;
    c->session.envs = sb->envs;
    c->session.default_user = sb->default_user ? sb->default_user : "";
    c->session.default_cwd = sb->default_cwd ? sb->default_cwd : "";
    c->meta = session_meta_joined(sb);
    if (!c->meta)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    c->session.n_metadata = sb->nmeta;
    c->session.metadata = c->meta;
    c->st.session = &c->session;
    return 0;
}

/* Writes the header and the packed state to the state file. */
static int write_state_file(struct sbx *sb, const Sbx__Snap__State *st, int fd)
{
    size_t len = sbx__snap__state__get_packed_size(st);
    uint8_t *buf = malloc(SNAP_HEADER_SIZE + len);
    if (!buf)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    sbx__snap__state__pack(st, buf + SNAP_HEADER_SIZE);
    snap_header_write(buf, len);
    int r = 0;
    if (write_all(fd, buf, SNAP_HEADER_SIZE + len, 0) < 0 || fsync(fd) < 0)
        r = sbx_seterr(sb, SBX_EIO, "writing the snapshot's state: %s", strerror(errno));
    free(buf);
    return r;
}

static int write_file(struct sbx *sb, int fd, const char *what,
                      int (*fn)(struct sbx *, int, void *), void *arg)
{
    int r = fn(sb, fd, arg);
    if (r == 0 && fsync(fd) < 0)
        r = sbx_seterr(sb, SBX_EIO, "writing the snapshot's %s: %s", what, strerror(errno));
    return r;
}

static int memory_fn(struct sbx *sb, int fd, void *arg)
{
    if (write_memory(sb, fd, arg) < 0)
        return sbx_seterr(sb, SBX_EIO, "writing guest memory: %s", strerror(errno));
    return 0;
}

static int disk_fn(struct sbx *sb, int fd, void *arg)
{
    char err[512];
    unsigned keep = sb->root_durable;
    int r = virtio_blk_save_diff(sb->root_disk, fd, keep, arg, err, sizeof(err));
    return r < 0 ? sbx_seterr(sb, r, "%s", err) : 0;
}

int snap_pin(struct sbx *sb)
{
    if (sb->base_pinned)
        return 0;
    if (!sb->rootfs_path || file_identity(sb->rootfs_path, &sb->base_size, &sb->base_crc) < 0)
        return sbx_seterr(sb, SBX_EIO, "reading the root image %s: %s",
                          sb->rootfs_path ? sb->rootfs_path : "(none)", strerror(errno));
    for (unsigned i = 0; i < sb->root_durable; i++) {
        char *abs = realpath(sb->root_layers[i], NULL);
        if (!abs)
            return sbx_seterr(sb, SBX_EIO, "disk layer %s: %s", sb->root_layers[i],
                              strerror(errno));
        free(sb->root_layers[i]);
        sb->root_layers[i] = abs;
    }
    sb->base_pinned = true;
    return 0;
}

int snap_files_create(const char *dir, int fds[SNAP_NFDS], char *err, size_t errlen)
{
    static const char *const names[SNAP_NFDS] = {SNAP_STATE_PARTIAL, SNAP_MEMORY_FILE,
                                                 SNAP_DISK_FILE};
    for (int i = 0; i < SNAP_NFDS; i++)
        fds[i] = -1;
    if (mkdir(dir, 0700) < 0) {
        int e = errno;
        snprintf(err, errlen, "creating %s: %s", dir, strerror(e));
        return e == EEXIST ? SBX_EEXIST : SBX_EIO;
    }
    for (int i = 0; i < SNAP_NFDS; i++) {
        char *path = path_join(dir, names[i]);
        fds[i] = path ? open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
        if (fds[i] < 0) {
            snprintf(err, errlen, "creating %s: %s", path ? path : dir, strerror(errno));
            free(path);
            snap_files_close(fds);
            snap_remove(dir);
            return SBX_EIO;
        }
        free(path);
    }
    return 0;
}

void snap_files_close(int fds[SNAP_NFDS])
{
    for (int i = 0; i < SNAP_NFDS; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

int snap_files_commit(const char *dir, char *err, size_t errlen)
{
    char *from = path_join(dir, SNAP_STATE_PARTIAL), *to = path_join(dir, SNAP_STATE_FILE);
    int r = 0;
    if (!from || !to || rename(from, to) < 0) {
        snprintf(err, errlen, "completing the snapshot %s: %s", dir, strerror(errno));
        r = SBX_EIO;
    }
    free(from);
    free(to);
    return r;
}

int snap_capture_fds(struct sbx *sb, const int fds[SNAP_NFDS], bool stay_parked)
{
    if (sb->ndisks)
        return sbx_seterr(sb, SBX_ENOTSUP,
                          "snapshots of sandboxes with extra disks are not "
                          "supported: their contents live outside the sandbox");
    if (sb->network == SBX_NET_TAP)
        return sbx_seterr(sb, SBX_ENOTSUP,
                          "snapshots of sandboxes on a TAP device are not "
                          "supported");
    if (!sb->root_disk || !sb->vcpu)
        return sbx_seterr(sb, SBX_ESTATE, "the sandbox has no VM to snapshot");
    int r = vcpu_park_all(sb, PARK_MS);
    if (r < 0) {
        if (r == -ETIMEDOUT)
            return sbx_seterr(sb, SBX_ETIMEDOUT, "the vCPUs did not stop within %d ms", PARK_MS);
        return sbx_seterr(sb, SBX_EDEAD, "the sandbox stopped");
    }
    vm_io_pause(sb);
    struct capture *c = calloc(1, sizeof(*c));
    uint64_t mem_bytes = 0, disk_bytes = 0;
    r = c ? save_state(sb, c) : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r == 0)
        r = write_file(sb, fds[SNAP_FD_MEMORY], "memory", memory_fn, &mem_bytes);
    if (r == 0)
        r = write_file(sb, fds[SNAP_FD_DISK], "disk", disk_fn, &disk_bytes);
    if (r == 0)
        r = write_state_file(sb, &c->st, fds[SNAP_FD_STATE]);
    if (c) {
        capture_free(c, sb->vcpus);
        free(c);
    }
    if (r < 0 || !stay_parked)
        snap_unpark(sb);
    return r;
}

void snap_unpark(struct sbx *sb)
{
    vm_io_resume(sb);
    vcpu_unpark_all(sb);
}

int snap_capture(struct sbx *sb, const char *dir, bool stay_parked)
{
    int fds[SNAP_NFDS];
    char err[SBX_ERRMSG_MAX];
    int r = snap_files_create(dir, fds, err, sizeof(err));
    if (r < 0)
        return sbx_seterr(sb, r, "%s", err);
    r = snap_capture_fds(sb, fds, stay_parked);
    snap_files_close(fds);
    if (r == 0 && (r = snap_files_commit(dir, err, sizeof(err))) < 0) {
        sbx_seterr(sb, r, "%s", err);
        if (stay_parked)
            snap_unpark(sb);
    }
    if (r < 0)
        snap_remove(dir);
    return r;
}

int snap_remove(const char *dir)
{
    static const char *const files[] = {SNAP_STATE_FILE, SNAP_STATE_PARTIAL, SNAP_MEMORY_FILE,
                                        SNAP_DISK_FILE};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char *p = path_join(dir, files[i]);
        if (p)
            unlink(p);
        free(p);
    }
    return rmdir(dir) < 0 && errno != ENOENT ? -errno : 0;
}

/* ---- load ---------------------------------------------------------------------------- */

static int bad(struct sbx *sb, const char *dir, const char *what)
{
    return sbx_seterr(sb, SBX_EIMAGE, "snapshot %s is invalid: %s", dir, what);
}

static bool str_ok(const char *s, size_t max)
{
    return s && strnlen(s, max + 1) <= max;
}

static bool list_ok(char **l, size_t n, size_t maxn, size_t maxlen)
{
    if (n > maxn)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!str_ok(l[i], maxlen))
            return false;
    return true;
}

/* The CPU feature words a guest may have started to use: each saved bit must be offered by
   this host's KVM, or the restored guest would fault on an instruction it detected. */
static const char *cpuid_mismatch(int kvm_fd, const Sbx__Snap__Vcpu *v)
{
    struct kvm_cpuid2 *host = cpu_supported_cpuid(kvm_fd);
    if (!host)
        return "KVM_GET_SUPPORTED_CPUID failed";
    size_t n = v->cpuid.len / sizeof(struct kvm_cpuid_entry2);
    const char *why = NULL;
    for (size_t i = 0; i < n && !why; i++) {
        struct kvm_cpuid_entry2 e;
        memcpy(&e, v->cpuid.data + i * sizeof(e), sizeof(e));
        bool leaf7 = e.function == 7 && e.index == 0;
        if (e.function != 1 && !leaf7 && e.function != 0x80000001)
            continue;
        for (unsigned j = 0; j < host->nent; j++) {
            const struct kvm_cpuid_entry2 *h = &host->entries[j];
            if (h->function != e.function || h->index != e.index)
                continue;
            /* Leaf 1 ECX bit 31 (hypervisor) and bit 24 (TSC deadline) are set by the VMM. */
            uint32_t ecx_own = e.function == 1 ? (1u << 31) | (1u << 24) : 0;
            if ((e.ebx & ~h->ebx && e.function != 1) || (e.ecx & ~h->ecx & ~ecx_own) ||
                (e.edx & ~h->edx & ~(e.function == 1 ? 1u << 28 : 0)))
                why = "the snapshot's guest uses CPU features this host's KVM does not offer "
                      "(taken on another CPU model?)";
        }
    }
    free(host);
    return why;
}

/* Checks everything in the state that is used before the guest runs. Returns NULL or what
   is wrong. */
static const char *check_state(const Sbx__Snap__State *st, size_t xsave_size)
{
    if (st->format != SNAP_FORMAT)
        return "unknown format version";
    const Sbx__Snap__Machine *m = st->machine;
    if (!m || !st->vm || !st->serial || !st->root || !st->session || !st->root->image)
        return "a section is missing";
    if (m->vcpus < 1 || m->vcpus > SBX_MAX_VCPUS || st->n_vcpus != m->vcpus)
        return "vCPU count";
    if (m->memory_mib < 64 || m->memory_mib > 65536)
        return "memory size";
    uint64_t total = (uint64_t)m->memory_mib << 20;
    uint64_t lo = total < LAYOUT_MMIO_START ? total : LAYOUT_MMIO_START;
    if (m->lo_size != lo || m->hi_size != total - lo)
        return "memory layout";
    if (m->xsave_size != xsave_size)
        return "it was taken on a host with another CPU (XSAVE area size)";
    if (m->network != SBX_NET_NAT && m->network != SBX_NET_NONE)
        return "network mode";
    if (!str_ok(m->kernel, PATH_MAX - 1) || !str_ok(m->kernel_release, 64) ||
        !str_ok(m->envd_version, 31) || !str_ok(m->os_name, 127))
        return "guest description";
    for (size_t i = 0; i < st->n_vcpus; i++) {
        const char *w = xstate_vcpu_check(st->vcpus[i], m->xsave_size);
        if (w)
            return w;
    }
    const char *w = xstate_vm_check(st->vm);
    if (w)
        return w;
    unsigned ndev = 2 + (m->network == SBX_NET_NAT);
    if (st->n_devices != ndev)
        return "device count";
    for (size_t i = 0; i < st->n_devices; i++)
        if (st->devices[i]->n_queues > VIRTIO_STATE_QUEUES)
            return "queue count";
    if (st->serial->regs.len != 8 || st->serial->console.len > SERIAL_RING_SIZE)
        return "serial port";
    const Sbx__Snap__Disk *d = st->root;
    if (d->size == 0 || d->size % PAGE || d->n_layers < 1 || d->n_layers > MAX_LAYERS ||
        !str_ok(d->image->path, PATH_MAX - 1) || !d->image->path[0])
        return "root disk";
    bool durable = true;
    for (size_t i = 0; i < d->n_layers; i++) {
        if (!str_ok(d->layers[i]->path, PATH_MAX - 1) || !d->layers[i]->path[0])
            return "root disk layer";
        if (d->layers[i]->durable && !durable)
            return "a durable disk layer above a snapshot's own";
        durable = d->layers[i]->durable;
    }
    const Sbx__Snap__Session *s = st->session;
    if (!str_ok(s->sandbox_id, 31) || !str_ok(s->default_user, 255) ||
        !str_ok(s->default_cwd, 4095) || !list_ok(s->envs, s->n_envs, MAX_STRINGS, 65536) ||
        !list_ok(s->metadata, s->n_metadata, 64, 2048))
        return "session";
    for (size_t i = 0; i < s->n_metadata; i++)
        if (!strchr(s->metadata[i], '='))
            return "session metadata";
    return NULL;
}

void snap_header_write(uint8_t *file, size_t len)
{
    struct snap_header h = {.format = SNAP_FORMAT, .length = len};
    memcpy(h.magic, SNAP_MAGIC, sizeof(h.magic));
    h.crc = (uint32_t)crc32(0, file + sizeof(h), (uInt)len);
    h.header_crc = (uint32_t)crc32(0, (const Bytef *)&h, offsetof(struct snap_header, header_crc));
    memcpy(file, &h, sizeof(h));
}

/* True if `m` or a message inside it carries fields its schema does not know. protobuf-c
   keeps those, and one of them (field number 0, reachable through an over-long tag) is
   refused when the state is packed and read back: a state file has none. */
static bool unknown_fields(const ProtobufCMessage *m)
{
    if (!m)
        return false;
    if (m->n_unknown_fields)
        return true;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *at = (const char *)m + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)at;
            for (size_t k = 0; k < n; k++)
                if (unknown_fields(items[k]))
                    return true;
        } else if (unknown_fields(*(ProtobufCMessage *const *)at)) {
            return true;
        }
    }
    return false;
}

const char *snap_parse(const uint8_t *file, size_t len, size_t xsave_size, Sbx__Snap__State **out)
{
    struct snap_header h;
    *out = NULL;
    if (len < sizeof(h))
        return "state file truncated";
    memcpy(&h, file, sizeof(h));
    if (memcmp(h.magic, SNAP_MAGIC, sizeof(h.magic)) ||
        h.header_crc !=
            (uint32_t)crc32(0, (const Bytef *)&h, offsetof(struct snap_header, header_crc)))
        return "not a snapshot state file (bad magic or header checksum)";
    if (h.format != SNAP_FORMAT)
        return "its format is not the one this library reads (rebuild it)";
    if (h.length > SNAP_STATE_MAX || len != sizeof(h) + h.length)
        return "state file truncated or of the wrong size";
    if ((uint32_t)crc32(0, file + sizeof(h), (uInt)h.length) != h.crc)
        return "state checksum mismatch (corrupted)";
    Sbx__Snap__State *st = sbx__snap__state__unpack(NULL, h.length, file + sizeof(h));
    if (!st)
        return "state does not decode";
    const char *w = unknown_fields(&st->base) ? "state has fields this library does not know"
                                              : check_state(st, xsave_size);
    if (w) {
        sbx__snap__state__free_unpacked(st, NULL);
        return w;
    }
    *out = st;
    return NULL;
}

/* Reads and checks dir/state. */
static int read_state_file(struct sbx *sb, const char *dir, Sbx__Snap__State **out)
{
    char *path = path_join(dir, SNAP_STATE_FILE);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    free(path);
    if (fd < 0)
        return sbx_seterr(sb, errno == ENOENT ? SBX_ENOENT : SBX_EIO,
                          "snapshot %s: cannot open its state file: %s", dir, strerror(errno));
    struct stat st;
    uint8_t *buf = NULL;
    int r = 0;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size > SNAP_STATE_MAX + sizeof(struct snap_header))
        r = bad(sb, dir, "state file unreadable or too large");
    else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1)))
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    else if (read_all(fd, buf, (size_t)st.st_size, 0) < 0)
        r = bad(sb, dir, "state file unreadable");
    close(fd);
    const char *w =
        r == 0 ? snap_parse(buf, (size_t)st.st_size, xstate_xsave_size(sb->kvm_fd), out) : NULL;
    if (w)
        r = bad(sb, dir, w);
    free(buf);
    return r;
}

/* A layer path as stored: absolute, or relative to the snapshot directory. */
static char *layer_path(const char *dir, const char *p)
{
    return p[0] == '/' ? strdup(p) : path_join(dir, p);
}

static int check_layer_file(struct sbx *sb, const char *dir, const char *path,
                            const Sbx__Snap__Layer *l, bool head)
{
    uint64_t size;
    uint32_t crc = 0;
    struct stat st;
    if (head ? file_identity(path, &size, &crc) < 0 : stat(path, &st) < 0)
        return sbx_seterr(sb, SBX_EIMAGE, "snapshot %s: disk file %s: %s", dir, path,
                          strerror(errno));
    if (!head)
        size = (uint64_t)st.st_size;
    if ((l->size && size != l->size) || (head && crc != l->head_crc))
        return sbx_seterr(sb, SBX_EIMAGE,
                          "snapshot %s: disk file %s changed since the snapshot was taken", dir,
                          path);
    return 0;
}

int snap_open(struct sbx *sb, const char *dir, int keep)
{
    /* /dev/kvm first: the checks compare with what this host offers. */
    sb->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (sb->kvm_fd < 0)
        return sbx_seterr(sb, SBX_ENOKVM, "cannot open /dev/kvm: %s", strerror(errno));
    Sbx__Snap__State *st = NULL;
    int r = read_state_file(sb, dir, &st);
    const char *w = r == 0 ? cpuid_mismatch(sb->kvm_fd, st->vcpus[0]) : NULL;
    if (w)
        r = sbx_seterr(sb, SBX_EIMAGE, "snapshot %s: %s", dir, w);
    struct snap_restore *rs = calloc(1, sizeof(*rs));
    if (r == 0 && !rs)
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r < 0) {
        if (st)
            sbx__snap__state__free_unpacked(st, NULL);
        free(rs);
        return r;
    }
    rs->st = st;
    rs->mem_fd = -1;
    sb->restore = rs;

    const Sbx__Snap__Machine *m = st->machine;
    free(sb->kernel_path);
    sb->kernel_path = m->kernel[0] ? strdup(m->kernel) : NULL;
    sb->vcpus = m->vcpus;
    sb->memory_mib = m->memory_mib;
    rs->mem_size = m->lo_size + m->hi_size;
    char *mpath = path_join(dir, SNAP_MEMORY_FILE);
    rs->mem_fd = mpath ? open(mpath, O_RDONLY | O_CLOEXEC) : -1;
    struct stat mst;
    if (rs->mem_fd < 0 || fstat(rs->mem_fd, &mst) < 0)
        r = sbx_seterr(sb, SBX_EIMAGE, "snapshot %s: memory file: %s", dir, strerror(errno));
    else if ((uint64_t)mst.st_size != rs->mem_size)
        r = bad(sb, dir, "memory file truncated or of the wrong size");
    free(mpath);

    /* The root disk. */
    const Sbx__Snap__Disk *d = st->root;
    free(sb->rootfs_path);
    sb->rootfs_path = strdup(d->image->path);
    sb->root_layers = calloc(d->n_layers, sizeof(char *));
    if (r == 0 && (!sb->rootfs_path || !sb->root_layers))
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r == 0)
        r = check_layer_file(sb, dir, sb->rootfs_path, d->image, true);
    for (size_t i = 0; r == 0 && i < d->n_layers; i++) {
        sb->root_layers[i] = layer_path(dir, d->layers[i]->path);
        sb->nroot_layers = (unsigned)i + 1;
        if (!sb->root_layers[i])
            r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        else
            r = check_layer_file(sb, dir, sb->root_layers[i], d->layers[i], false);
    }
    sb->root_size = d->size;
    sb->root_durable = 0;
    while (sb->root_durable < d->n_layers && d->layers[sb->root_durable]->durable)
        sb->root_durable++;
    if (r == 0 && m->network != sb->network)
        r = sbx_seterr(sb, SBX_EINVAL,
                       "snapshot %s was taken with networking %s; a sandbox made from it must "
                       "use the same (restrict it with a policy instead)",
                       dir, m->network == SBX_NET_NAT ? "on (NAT)" : "off");
    if (r == 0 && st->session->default_cwd[0] &&
        !(sb->default_cwd = strdup(st->session->default_cwd)))
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r == 0 && (keep & SNAP_KEEP_ID) && st->session->sandbox_id[0])
        snprintf(sb->id, sizeof(sb->id), "%s", st->session->sandbox_id);
    if (r == 0) {
        const Sbx__Snap__Session *s = st->session;
        r = session_restore(sb, s->envs, s->n_envs, s->default_user, s->metadata, s->n_metadata,
                            (keep & SNAP_KEEP_SETTINGS) != 0);
    }
    return r;
}

void snap_close(struct sbx *sb)
{
    struct snap_restore *rs = sb->restore;
    if (!rs)
        return;
    if (rs->mem_fd >= 0)
        close(rs->mem_fd);
    sbx__snap__state__free_unpacked(rs->st, NULL);
    free(rs);
    sb->restore = NULL;
}

/* ---- restore stages ------------------------------------------------------------------- */

int snap_map_memory(struct sbx *sb, uint8_t **mem, size_t size)
{
    struct snap_restore *rs = sb->restore;
    if (size != rs->mem_size)
        return sbx_seterr(sb, SBX_EIMAGE, "snapshot memory size mismatch");
    /* Private: pages come from the page cache, shared by every sandbox of this snapshot, and
       are copied when the guest writes them. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, rs->mem_fd, 0);
    if (p == MAP_FAILED)
        return sbx_seterr(sb, SBX_ENOMEM, "cannot map the snapshot's memory: %s", strerror(errno));
    *mem = p;
    return 0;
}

static void restore_serial(struct serial *s, const Sbx__Snap__Serial *in)
{
    const uint8_t *r = in->regs.data;
    pthread_mutex_lock(&s->lock);
    s->ier = r[0];
    s->lcr = r[1];
    s->mcr = r[2];
    s->scr = r[3];
    s->fcr = r[4];
    s->dll = r[5];
    s->dlm = r[6];
    s->thri_pending = r[7] != 0;
    size_t n = in->console.len;
    memcpy(s->ring, in->console.data, n);
    s->written = n;
    pthread_mutex_unlock(&s->lock);
}

int snap_restore_devices(struct sbx *sb)
{
    const Sbx__Snap__State *st = sb->restore->st;
    const char *what = "";
    int r = xstate_vm_restore(sb->vm_fd, st->vm, &what);
    if (r < 0)
        return sbx_seterr(sb, SBX_EKVM, "restoring the VM: %s: %s", what, strerror(-r));
    if (st->n_devices != sb->nvdev)
        return sbx_seterr(sb, SBX_EIMAGE, "the snapshot has %zu devices, the VM %u", st->n_devices,
                          sb->nvdev);
    for (unsigned i = 0; i < sb->nvdev; i++) {
        const Sbx__Snap__Device *d = st->devices[i];
        struct virtio_state vs = {.device_id = d->device_id,
                                  .mmio_base = d->mmio_base,
                                  .gsi = d->gsi,
                                  .status = d->status,
                                  .dev_features_sel = d->dev_features_sel,
                                  .drv_features_sel = d->drv_features_sel,
                                  .queue_sel = d->queue_sel,
                                  .int_status = d->int_status,
                                  .config_gen = d->config_gen,
                                  .drv_features = d->drv_features,
                                  .nqueues = (unsigned)d->n_queues};
        for (size_t q = 0; q < d->n_queues; q++) {
            const Sbx__Snap__Queue *sq = d->queues[q];
            if (sq->last_avail > UINT16_MAX || sq->used_idx > UINT16_MAX)
                return sbx_seterr(sb, SBX_EIMAGE, "snapshot: device %u queue %zu index", i, q);
            vs.q[q] = (struct virtio_queue_state){.num = sq->num,
                                                  .ready = sq->ready,
                                                  .desc = sq->desc,
                                                  .avail = sq->avail,
                                                  .used = sq->used,
                                                  .last_avail = (uint16_t)sq->last_avail,
                                                  .used_idx = (uint16_t)sq->used_idx};
        }
        char err[256];
        if ((r = virtio_restore(sb->vdev[i], &vs, err, sizeof(err))) < 0)
            return sbx_seterr(sb, r, "snapshot: %s", err);
    }
    restore_serial(&sb->serial, st->serial);
    const Sbx__Snap__Machine *m = st->machine;
    snprintf(sb->info.kernel_release, sizeof(sb->info.kernel_release), "%s", m->kernel_release);
    return 0;
}

int snap_restore_vcpu(struct sbx *sb, struct vcpu *v)
{
    const Sbx__Snap__State *st = sb->restore->st;
    const char *what = "";
    unsigned khz = st->machine->tsc_khz, here = xstate_tsc_khz(v->fd);
    /* A guest calibrated its clocks to the TSC's rate: it must stay the same. (A failed set
       may change what KVM_GET_TSC_KHZ reports, so the rate is read first.) */
    if (khz && here != khz && ioctl(v->fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0) /* 4.55 */
        return sbx_seterr(sb, SBX_EIMAGE,
                          "the snapshot's TSC runs at %u kHz; this host's at %u kHz and KVM "
                          "cannot scale it",
                          khz, here);
    int r = xstate_vcpu_restore(v->fd, st->vcpus[v->id], &what);
    if (r < 0)
        return sbx_seterr(sb, SBX_EKVM, "restoring vCPU %u: %s: %s", v->id, what, strerror(-r));
    return 0;
}

void snap_resumed(struct sbx *sb)
{
    for (unsigned i = 0; i < sb->nvdev; i++)
        virtio_resume(sb->vdev[i]);
    virtio_vsock_transport_reset(sb->vsock);
}
