// SPDX-License-Identifier: Apache-2.0
/* Building a VM from a sandbox's options, stage by stage, and tearing it down in reverse. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "session.h"
#include "net/net.h"
#include "util/cmdline.h"
#include "util/initramfs.h"
#include "snap/snap.h"
#include "virtio/virtio.h"
#include "vmm/boot.h"
#include "vmm/seccomp.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"
#include "vmm/x86/cpu.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"

#define I8042_DATA    0x60
#define I8042_COMMAND 0x64
#define I8042_RESET   0xfe

/* ---- releasing kernel objects off the caller's path ---------------------------------- */

/* Closing a VM makes the kernel tear down its memory slots and page tables, and unmapping
   guest memory frees every page it touched: milliseconds that sbx_destroy() hands to a
   detached thread (vm_teardown_async). */
struct reap {
    unsigned n;
    struct {
        int fd;
        void *addr;
        size_t len;
    } item[2 * SBX_MAX_VCPUS + 4];
};

static void release(struct reap *r)
{
    /* In the order collected: vCPUs, guest memory, the VM, /dev/kvm. */
    for (unsigned i = 0; i < r->n; i++) {
        if (r->item[i].addr)
            munmap(r->item[i].addr, r->item[i].len);
        else
            close(r->item[i].fd);
    }
    free(r);
}

static void *reaper(void *arg)
{
    release(arg);
    return NULL;
}

void vm_release_fd(struct sbx *sb, int fd)
{
    if (fd < 0)
        return;
    if (sb->reap && sb->reap->n < sizeof(sb->reap->item) / sizeof(sb->reap->item[0]))
        sb->reap->item[sb->reap->n++].fd = fd;
    else
        close(fd);
}

void vm_release_map(struct sbx *sb, void *addr, size_t len)
{
    if (!addr)
        return;
    if (sb->reap && sb->reap->n < sizeof(sb->reap->item) / sizeof(sb->reap->item[0])) {
        sb->reap->item[sb->reap->n].addr = addr;
        sb->reap->item[sb->reap->n++].len = len;
    } else {
        munmap(addr, len);
    }
}

void vm_teardown_async(struct sbx *sb)
{
    sb->reap = calloc(1, sizeof(*sb->reap));
    vm_teardown(sb);
    struct reap *r = sb->reap;
    sb->reap = NULL;
    if (!r || !r->n) {
        free(r);
        return;
    }
    pthread_attr_t a;
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the reaper takes no signals */
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, reaper, r) != 0)
        release(r);
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- stage: /dev/kvm ---------------------------------------------------------------- */

static bool cpu_has_hw_virt(void)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (!f)
        return true; /* cannot tell: let the boot itself decide */
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f))
        if (strncmp(line, "flags", 5) == 0)
            found = strstr(line, " vmx") || strstr(line, " svm");
    fclose(f);
    return found;
}

/* Returns 0 if the opened /dev/kvm can boot a standard guest, else SBX_ENOKVM saying why. */
static int check_kvm(struct sbx *sb)
{
    /* PVM runs guests in hardware CPL3 and emulates guest kernel mode instruction by
       instruction: a standard kernel crawls and then dies on an emulation failure. */
    if (access("/sys/module/kvm_pvm", F_OK) == 0 && !cpu_has_hw_virt())
        return sbx_seterr(sb, SBX_ENOKVM,
                          "/dev/kvm is provided by PVM (kvm_pvm is loaded and the CPU has no "
                          "vmx/svm): it cannot boot a standard Linux guest kernel. Run on a host "
                          "with hardware virtualization (bare metal or a VM with nested "
                          "virtualization), or inside the emulated KVM host: tests/vmhost/run -- "
                          "<command>");
    return 0;
}

static int open_kvm(struct sbx *sb)
{
    if (sb->kvm_fd < 0) /* a snapshot being restored opened it already */
        sb->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (sb->kvm_fd < 0)
        return sbx_seterr(sb, SBX_ENOKVM,
                          "cannot open /dev/kvm: %s (KVM needs hardware virtualization and "
                          "read/write access to /dev/kvm, usually membership in group kvm)",
                          strerror(errno));
    int v = ioctl(sb->kvm_fd, KVM_GET_API_VERSION, 0); /* api.rst 4.1 */
    if (v != KVM_API_VERSION)
        return sbx_seterr(sb, SBX_ENOKVM, "/dev/kvm has API version %d, expected %d", v,
                          KVM_API_VERSION);
    static const struct {
        int cap;
        const char *name;
    } caps[] = {
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
        {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
        {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
        {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
        {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    };
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
        if (ioctl(sb->kvm_fd, KVM_CHECK_EXTENSION, caps[i].cap) <= 0)
            return sbx_seterr(sb, SBX_ENOKVM, "/dev/kvm lacks %s", caps[i].name);
    sb->tsc_deadline = ioctl(sb->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    sb->run_size = ioctl(sb->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (sb->run_size < (int)sizeof(struct kvm_run))
        return sbx_seterr(sb, SBX_EKVM, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
    return check_kvm(sb);
}

static void close_kvm(struct sbx *sb)
{
    vm_release_fd(sb, sb->kvm_fd);
    sb->kvm_fd = -1;
}

/* ---- stage: VM ---------------------------------------------------------------------- */

static int create_vm(struct sbx *sb)
{
    sb->vm_fd = ioctl(sb->kvm_fd, KVM_CREATE_VM, 0); /* api.rst 4.2 */
    if (sb->vm_fd < 0)
        return sbx_seterr(sb, SBX_EKVM, "KVM_CREATE_VM: %s", strerror(errno));
    fcntl(sb->vm_fd, F_SETFD, FD_CLOEXEC);
    /* Intel VMX needs three pages for a real-mode TSS and one for an identity page table
       somewhere the guest never uses (api.rst 4.48, 4.65). */
    if (ioctl(sb->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_TSS) < 0)
        return sbx_seterr(sb, SBX_EKVM, "KVM_SET_TSS_ADDR: %s", strerror(errno));
    uint64_t idmap = LAYOUT_IDENTITY_MAP;
    if (ioctl(sb->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        return sbx_seterr(sb, SBX_EKVM, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
    if (ioctl(sb->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) /* api.rst 4.24: PIC + IOAPIC + LAPICs */
        return sbx_seterr(sb, SBX_EKVM, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(sb->vm_fd, KVM_CREATE_PIT2, &pit) < 0) /* api.rst 4.54 */
        return sbx_seterr(sb, SBX_EKVM, "KVM_CREATE_PIT2: %s", strerror(errno));
    return 0;
}

static void destroy_vm(struct sbx *sb)
{
    vm_release_fd(sb, sb->vm_fd);
    sb->vm_fd = -1;
}

/* ---- stage: guest memory ------------------------------------------------------------ */

static int map_region(struct sbx *sb, uint32_t slot, uint64_t gpa, uint8_t *host, uint64_t size)
{
    struct kvm_userspace_memory_region r = {.slot = slot,
                                            .guest_phys_addr = gpa,
                                            .memory_size = size,
                                            .userspace_addr = (uintptr_t)host};
    if (ioctl(sb->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) /* api.rst 4.35 */
        return sbx_seterr(sb, SBX_EKVM, "KVM_SET_USER_MEMORY_REGION (slot %u, %llu MiB): %s", slot,
                          (unsigned long long)(size >> 20), strerror(errno));
    return 0;
}

static int create_memory(struct sbx *sb)
{
    uint64_t total = (uint64_t)sb->memory_mib << 20;
    uint64_t lo = total < LAYOUT_MMIO_START ? total : LAYOUT_MMIO_START;
    /* One reservation for both regions; pages are only allocated when the guest touches
       them (MAP_NORESERVE), so a large sandbox costs what it uses. */
    uint8_t *p = NULL;
    if (sb->restore) {
        int r = snap_map_memory(sb, &p, total);
        if (r < 0)
            return r;
    } else {
        p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
        if (p == MAP_FAILED)
            return sbx_seterr(sb, SBX_ENOMEM, "cannot map %u MiB of guest memory: %s",
                              sb->memory_mib, strerror(errno));
    }
    sb->mem_map_size = total;
    sb->mem.lo = p;
    sb->mem.lo_size = lo;
    sb->mem.hi = total > lo ? p + lo : NULL;
    sb->mem.hi_size = total - lo;
    int r = map_region(sb, 0, 0, p, lo);
    if (r == 0 && sb->mem.hi_size)
        r = map_region(sb, 1, GUESTMEM_HI_BASE, sb->mem.hi, sb->mem.hi_size);
    return r;
}

static void destroy_memory(struct sbx *sb)
{
    vm_release_map(sb, sb->mem.lo, sb->mem_map_size);
    memset(&sb->mem, 0, sizeof(sb->mem));
}

/* ---- stage: device thread loop ------------------------------------------------------ */

static void io_stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sbx *sb = arg;
    uint64_t n;
    (void)!read(fd, &n, sizeof(n)); /* the loop may be started again (vm_io_resume) */
    event_base_loopbreak(sb->evbase);
}

static void lifetime_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof(n)) == (ssize_t)sizeof(n))
        session_lifetime_expired(arg);
}

static int create_evbase(struct sbx *sb)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return sbx_seterr(sb, SBX_ENOMEM, "event_config_new failed");
    /* Each sandbox has its own loop used by one thread: no libevent locking needed. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    sb->evbase = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!sb->evbase)
        return sbx_seterr(sb, SBX_ENOMEM, "event_base_new failed");
    sb->io_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sb->io_stop_fd < 0)
        return sbx_seterr(sb, SBX_EIO, "eventfd: %s", strerror(errno));
    struct event *ev = event_new(sb->evbase, sb->io_stop_fd, EV_READ | EV_PERSIST, io_stop_cb, sb);
    if (!ev || event_add(ev, NULL) < 0)
        return sbx_seterr(sb, SBX_ENOMEM, "cannot watch the device thread's stop eventfd");
    sb->io_stop_ev = ev;
    ev = event_new(sb->evbase, sb->life_fd, EV_READ | EV_PERSIST, lifetime_cb, sb);
    if (!ev || event_add(ev, NULL) < 0) {
        if (ev)
            event_free(ev);
        return sbx_seterr(sb, SBX_ENOMEM, "cannot watch the lifetime timer");
    }
    sb->life_ev = ev;
    return 0;
}

static void destroy_evbase(struct sbx *sb)
{
    if (sb->io_stop_ev)
        event_free(sb->io_stop_ev);
    sb->io_stop_ev = NULL;
    if (sb->life_ev)
        event_free(sb->life_ev);
    sb->life_ev = NULL;
    if (sb->evbase)
        event_base_free(sb->evbase);
    sb->evbase = NULL;
    if (sb->io_stop_fd >= 0)
        close(sb->io_stop_fd);
    sb->io_stop_fd = -1;
}

/* ---- stage: devices ----------------------------------------------------------------- */

static void serial_irq(void *ctx)
{
    struct sbx *sb = ctx;
    /* An edge on the ISA line (api.rst 4.25 KVM_IRQ_LINE). */
    struct kvm_irq_level l = {.irq = LAYOUT_IRQ_COM1, .level = 1};
    ioctl(sb->vm_fd, KVM_IRQ_LINE, &l);
    l.level = 0;
    ioctl(sb->vm_fd, KVM_IRQ_LINE, &l);
}

static void i8042_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct sbx *sb = opaque;
    if (!is_write) {
        memset(data, 0, len); /* status 0: input buffer empty, nothing to read */
        return;
    }
    /* Linux with reboot=k resets the machine through the keyboard controller. */
    if (offset == 0 && data[0] == I8042_RESET) {
        sbx_guest_reset(sb, "keyboard controller reset");
    }
}

static void dev_fail(void *ctx, const char *msg)
{
    sbx_stop(ctx, SBX_STATE_FAILED, "%s", msg);
}

/* Device n's MMIO window and interrupt line: the command line announces the same ones. */
static uint64_t virtio_base(unsigned n)
{
    return LAYOUT_VIRTIO_BASE + (uint64_t)n * VIRTIO_MMIO_WINDOW;
}

static uint32_t virtio_irq(unsigned n)
{
    return LAYOUT_IRQ_VIRTIO + n;
}

static int add_virtio(struct sbx *sb, struct virtio_dev *d, uint64_t base)
{
    sb->vdev[sb->nvdev++] = d;
    if (bus_add(&sb->mmio, base, VIRTIO_MMIO_WINDOW, (bus_fn)virtio_mmio_access, d) < 0)
        return sbx_seterr(sb, SBX_EINVAL, "too many devices");
    return 0;
}

static int create_devices(struct sbx *sb)
{
    sb->serial.irq = serial_irq;
    sb->serial.ctx = sb;
    if (bus_add(&sb->pio, SERIAL_PORT, SERIAL_NPORTS, serial_io, &sb->serial) < 0 ||
        bus_add(&sb->pio, I8042_DATA, 1, i8042_io, sb) < 0 ||
        bus_add(&sb->pio, I8042_COMMAND, 1, i8042_io, sb) < 0)
        return sbx_seterr(sb, SBX_EINVAL, "cannot register legacy devices");

    sb->devhost = (struct devhost){
        .mem = &sb->mem, .evbase = sb->evbase, .vm_fd = sb->vm_fd, .fail = dev_fail, .ctx = sb};
    char err[512];
    /* Disks first, so that the root disk is /dev/vda and extra disks follow in order. */
    for (unsigned i = 0; i <= sb->ndisks; i++) {
        struct blk_config cfg;
        if (i == 0) {
            cfg = (struct blk_config){.path = sb->rootfs_path,
                                      .mode = BLK_EPHEMERAL,
                                      .serial = "sbx-root",
                                      .layers = (const char *const *)sb->root_layers,
                                      .nlayers = sb->nroot_layers,
                                      .size = sb->root_size};
        } else {
            cfg = (struct blk_config){.path = sb->disks[i - 1].path,
                                      .mode = sb->disks[i - 1].ephemeral   ? BLK_EPHEMERAL
                                              : sb->disks[i - 1].read_only ? BLK_RO
                                                                           : BLK_RW,
                                      .serial = sb->disks[i - 1].serial};
        }
        uint64_t base = virtio_base(sb->nvdev);
        struct virtio_dev *d = NULL;
        int r = virtio_blk_create(&d, &sb->devhost, &cfg, base, virtio_irq(sb->nvdev), err,
                                  sizeof(err));
        if (r < 0)
            return sbx_seterr(sb, r == SBX_EINVAL ? SBX_EIMAGE : r, "%s disk %s: %s",
                              i == 0 ? "root" : "extra", cfg.path, err);
        if ((r = add_virtio(sb, d, base)) < 0)
            return r;
        if (i == 0)
            sb->root_disk = d;
    }
    uint64_t base = virtio_base(sb->nvdev);
    int r = virtio_vsock_create(&sb->vsock, &sb->devhost, SBX_GUEST_CID, base,
                                virtio_irq(sb->nvdev), err, sizeof(err));
    if (r < 0)
        return sbx_seterr(sb, r, "vsock device: %s", err);
    virtio_vsock_set_buffer_cap(sb->vsock, (size_t)sb->buffer_mib << 20);
    if ((r = add_virtio(sb, sb->vsock, base)) < 0 || !sb->nf)
        return r;
    struct virtio_dev *d;
    base = virtio_base(sb->nvdev);
    r = net_create(&sb->net, &d, &sb->devhost, sb->nf, &sb->link, base, virtio_irq(sb->nvdev), err,
                   sizeof(err));
    sb->nf = NULL; /* the network took it */
    if (r < 0)
        return sbx_seterr(sb, r, "network device: %s", err);
    return add_virtio(sb, d, base);
}

static void destroy_devices(struct sbx *sb)
{
    net_destroy(sb->net); /* before its device */
    sb->net = NULL;
    for (unsigned i = 0; i < sb->nvdev; i++)
        virtio_dev_destroy(sb->vdev[i]);
    sb->nvdev = 0;
    sb->vsock = sb->root_disk = NULL;
    sb->pio.n = sb->mmio.n = 0;
    sb->serial.irq = NULL;
}

/* ---- stage: kernel, initramfs, boot structures -------------------------------------- */

static int build_cmdline(struct sbx *sb, struct cmdline *c)
{
    cmdline_init(c);
    /* reboot=k: reset through the keyboard controller, which ends the VM; panic=-1: a panic
       reboots at once instead of hanging; quiet: every console byte is a VM exit. */
    cmdline_add(c, "console=ttyS0 reboot=k panic=-1 quiet nomodule pci=off");
    cmdline_add(c, "i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable no_timer_check");
    cmdline_add(c, "random.trust_cpu=on printk.devkmsg=on");
    for (unsigned i = 0; i < sb->nvdev; i++)
        cmdline_add_virtio(c, virtio_base(i), VIRTIO_MMIO_WINDOW, virtio_irq(i));
    cmdline_add(c, "sbx.root=/dev/vda sbx.rootfstype=ext4 sbx.port=%u", SBX_ENVD_PORT);
    if (sb->cmdline_extra && !cmdline_append_raw(c, sb->cmdline_extra))
        return sbx_seterr(sb, SBX_EINVAL, "cmdline_extra contains control characters");
    if (c->overflow)
        return sbx_seterr(sb, SBX_EINVAL, "kernel command line longer than %d bytes",
                          CMDLINE_MAX - 1);
    return 0;
}

/* A restored VM takes its irqchip, PIT, clock and device registers from the snapshot. */
static int restore_state(struct sbx *sb)
{
    return sb->restore ? snap_restore_devices(sb) : 0;
}

static int load_guest(struct sbx *sb)
{
    if (sb->restore)
        return 0; /* the guest is in the snapshot's memory */
    char err[512];
    struct boot_kernel k;
    int r = boot_load_kernel(&sb->mem, sb->kernel_path, &k, err, sizeof(err));
    if (r < 0)
        return sbx_seterr(sb, r, "%s", err);
    struct cmdline c;
    if ((r = build_cmdline(sb, &c)) < 0)
        return r;
    uint8_t *initrd = NULL;
    size_t initrd_len = 0;
    if (initramfs_build_envd(&initrd, &initrd_len) < 0)
        return sbx_seterr(sb, SBX_ENOMEM, "cannot build the initramfs");
    r = boot_setup(&sb->mem, &k, c.buf, initrd, initrd_len, err, sizeof(err));
    free(initrd);
    if (r < 0)
        return sbx_seterr(sb, r, "%s", err);
    if (mptable_write(&sb->mem, sb->vcpus) < 0 || cpu_write_boot_tables(&sb->mem) < 0)
        return sbx_seterr(sb, SBX_EINVAL, "guest RAM too small for the boot tables");
    sb->entry = k.entry;
    return 0;
}

/* ---- stage: vCPUs ------------------------------------------------------------------- */

static int create_vcpus(struct sbx *sb)
{
    struct kvm_cpuid2 *cpuid = cpu_supported_cpuid(sb->kvm_fd);
    if (!cpuid)
        return sbx_seterr(sb, SBX_EKVM, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
    sb->vcpu = calloc(sb->vcpus, sizeof(*sb->vcpu));
    int r = sb->vcpu ? 0 : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (unsigned i = 0; r == 0 && i < sb->vcpus; i++) {
        r = vcpu_create(&sb->vcpu[i], sb, i, cpuid, sb->entry, LAYOUT_ZERO_PAGE);
        sb->nvcpu_created = i + 1; /* vcpu_create leaves a destroyable vcpu even on error */
    }
    free(cpuid);
    return r;
}

static void destroy_vcpus(struct sbx *sb)
{
    for (unsigned i = 0; i < sb->nvcpu_created; i++)
        vcpu_destroy(&sb->vcpu[i]);
    sb->nvcpu_created = 0;
    free(sb->vcpu);
    sb->vcpu = NULL;
}

/* ---- stage: threads ----------------------------------------------------------------- */

static void *io_thread(void *arg)
{
    struct sbx *sb = arg;
    pthread_setname_np(pthread_self(), "sbx-device");
    if (sb->io_filter) {
        struct thread_filter *f = sb->io_filter;
        sb->io_filter = NULL;
        int r = thread_filter_enter(f);
        if (r < 0) {
            sbx_stop(sb, SBX_STATE_FAILED,
                     "the device thread cannot install its seccomp filter: %s", strerror(-r));
            pthread_mutex_lock(&sb->park_lock);
            sb->io_parked = true; /* for good: a pause need not wait for it */
            pthread_cond_broadcast(&sb->park_cond);
            pthread_mutex_unlock(&sb->park_lock);
            return NULL;
        }
    }
    for (;;) {
        event_base_loop(sb->evbase, EVLOOP_NO_EXIT_ON_EMPTY);
        /* The loop was broken: to park (a snapshot) or to end. */
        pthread_mutex_lock(&sb->park_lock);
        while (sb->io_ctl == IO_PARK) {
            sb->io_parked = true;
            pthread_cond_broadcast(&sb->park_cond);
            pthread_cond_wait(&sb->park_cond, &sb->park_lock);
        }
        sb->io_parked = false;
        bool quit = sb->io_ctl == IO_QUIT;
        pthread_mutex_unlock(&sb->park_lock);
        if (quit)
            return NULL;
    }
}

/* The seccomp filter a new thread of this role enters first, or NULL if the sandbox has none;
   false with the handle's message set if it cannot be built. */
static bool role_filter(struct sbx *sb, enum thread_role role, struct thread_filter **out)
{
    char err[256];
    *out = NULL;
    if (!sb->seccomp)
        return true;
    if ((*out = thread_filter_new(role, sb->drop_caps, err, sizeof(err))))
        return true;
    sbx_seterr(sb, SBX_EIO, "%s", err);
    return false;
}

static int start_io(struct sbx *sb)
{
    if (!role_filter(sb, THREAD_DEVICE, &sb->io_filter))
        return SBX_EIO;
    sb->io_ctl = IO_RUN;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the device thread takes no signals */
    int r = pthread_create(&sb->io_thread, NULL, io_thread, sb);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        thread_filter_free(sb->io_filter);
        sb->io_filter = NULL;
        return sbx_seterr(sb, SBX_ENOMEM, "cannot start the device thread: %s", strerror(r));
    }
    sb->io_running = true;
    return 0;
}

/* Tells the device thread what to do next and breaks its loop. */
static void io_control(struct sbx *sb, int ctl)
{
    pthread_mutex_lock(&sb->park_lock);
    sb->io_ctl = ctl;
    pthread_cond_broadcast(&sb->park_cond);
    pthread_mutex_unlock(&sb->park_lock);
    uint64_t one = 1;
    if (ctl != IO_RUN)
        (void)!write(sb->io_stop_fd, &one, sizeof(one));
}

static void stop_io(struct sbx *sb)
{
    if (!sb->io_running)
        return;
    io_control(sb, IO_QUIT);
    pthread_join(sb->io_thread, NULL);
    sb->io_running = false;
}

/* The device thread stands still (no thread is started or ended: the isolated mode's child
   snapshots under a seccomp filter that allows no clone). */
void vm_io_pause(struct sbx *sb)
{
    if (!sb->io_running)
        return;
    io_control(sb, IO_PARK);
    pthread_mutex_lock(&sb->park_lock);
    while (!sb->io_parked && sb->io_ctl == IO_PARK)
        pthread_cond_wait(&sb->park_cond, &sb->park_lock);
    pthread_mutex_unlock(&sb->park_lock);
}

void vm_io_resume(struct sbx *sb)
{
    if (sb->io_running)
        io_control(sb, IO_RUN);
}

static int start_vcpus(struct sbx *sb)
{
    int r = vcpu_signal_setup();
    if (r < 0)
        return sbx_seterr(sb, SBX_EIO, "cannot install the vCPU kick signal handler: %s",
                          strerror(-r));
    for (unsigned i = 0; i < sb->vcpus; i++) {
        struct thread_filter *f;
        if (!role_filter(sb, THREAD_VCPU, &f))
            return SBX_EIO;
        if ((r = vcpu_start(&sb->vcpu[i], f)) < 0)
            return sbx_seterr(sb, SBX_EKVM, "cannot start vCPU %u: %s", i, strerror(-r));
    }
    return 0;
}

static void stop_vcpus(struct sbx *sb)
{
    sbx_stop(sb, SBX_STATE_STOPPED, "the sandbox was destroyed");
    for (unsigned i = 0; i < sb->nvcpu_created; i++)
        vcpu_join(&sb->vcpu[i]); /* fds and kvm_run go with the vCPU stage */
}

/* ---- the table ---------------------------------------------------------------------- */

static const struct {
    int (*build)(struct sbx *);
    void (*teardown)(struct sbx *);
} stages[] = {
    {open_kvm, close_kvm},
    {create_vm, destroy_vm},
    {create_memory, destroy_memory},
    {create_evbase, destroy_evbase},
    {create_devices, destroy_devices},
    {restore_state, NULL},
    {load_guest, NULL},
    {create_vcpus, destroy_vcpus},
    {start_io, stop_io},
    {start_vcpus, stop_vcpus},
};

enum { NSTAGES = sizeof(stages) / sizeof(stages[0]) };

int vm_build(struct sbx *sb)
{
    for (; sb->built < NSTAGES; sb->built++) {
        int r = stages[sb->built].build(sb);
        if (r < 0) {
            sb->built++; /* a failed stage may hold parts: its teardown releases them */
            vm_teardown(sb);
            return r;
        }
    }
    return 0;
}

void vm_teardown(struct sbx *sb)
{
    while (sb->built > 0) {
        sb->built--;
        if (stages[sb->built].teardown)
            stages[sb->built].teardown(sb);
    }
}

int vm_vsock_connect(struct sbx *sb, unsigned port, int *fd)
{
    if (!sb->vsock)
        return SBX_ESTATE;
    return virtio_vsock_connect(sb->vsock, port, fd);
}
