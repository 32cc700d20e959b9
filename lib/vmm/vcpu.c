// SPDX-License-Identifier: Apache-2.0
/* vCPU threads: the KVM_RUN loop and the dispatch of its exits. */
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "snap/snap.h"
#include "vmm/seccomp.h"
#include "vmm/vcpu.h"
#include "vmm/vm.h"
#include "vmm/x86/cpu.h"

int vcpu_kick_signal(void)
{
    return SIGRTMIN + 6;
}

static void kick_handler(int sig)
{
    (void)sig; /* only there so that the signal interrupts KVM_RUN instead of killing */
}

static pthread_once_t signal_once = PTHREAD_ONCE_INIT;
static int signal_err;

static void install_handler(void)
{
    struct sigaction old, sa;
    if (sigaction(vcpu_kick_signal(), NULL, &old) < 0) {
        signal_err = -errno;
        return;
    }
    if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO))
        return; /* the application installed its own handler: leave it */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(vcpu_kick_signal(), &sa, NULL) < 0)
        signal_err = -errno;
}

int vcpu_signal_setup(void)
{
    pthread_once(&signal_once, install_handler);
    return signal_err;
}

int vcpu_create(struct vcpu *v, struct sbx *sb, unsigned id, const struct kvm_cpuid2 *cpuid,
                uint64_t entry, uint64_t zero_page)
{
    memset(v, 0, sizeof(*v));
    v->sb = sb;
    v->id = id;
    v->fd = ioctl(sb->vm_fd, KVM_CREATE_VCPU, (unsigned long)id); /* api.rst 4.7 */
    if (v->fd < 0)
        return sbx_seterr(sb, SBX_EKVM, "KVM_CREATE_VCPU %u: %s", id, strerror(errno));
    v->run = mmap(NULL, (size_t)sb->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        v->run = NULL;
        return sbx_seterr(sb, SBX_EKVM, "mmap of kvm_run for vCPU %u: %s", id, strerror(errno));
    }
    if (sb->restore)
        return snap_restore_vcpu(sb, v);
    int r = cpu_set_cpuid(v->fd, cpuid, id, sb->vcpus, sb->tsc_deadline);
    if (r < 0)
        return sbx_seterr(sb, SBX_EKVM, "KVM_SET_CPUID2 on vCPU %u: %s", id, strerror(-r));
    const char *what = "";
    r = cpu_init(v->fd, &what);
    if (r == 0 && id == 0)
        r = cpu_set_boot_regs(v->fd, entry, zero_page, &what);
    if (r < 0)
        return sbx_seterr(sb, SBX_EKVM, "%s on vCPU %u: %s", what, id, strerror(-r));
    return 0;
}

static void handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    struct sbx *sb = v->sb;
    uint64_t bytes = (uint64_t)run->io.size * run->io.count;
    /* The data area is inside the kvm_run mapping; KVM sets it, but check anyway. */
    if (run->io.size == 0 || run->io.size > 4 || run->io.data_offset > (uint64_t)sb->run_size ||
        bytes > (uint64_t)sb->run_size - run->io.data_offset) {
        sbx_stop(sb, SBX_STATE_FAILED, "vCPU %u: malformed port I/O exit (port 0x%x)", v->id,
                 run->io.port);
        return;
    }
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool is_write = run->io.direction == KVM_EXIT_IO_OUT;
    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
        bus_access(&sb->pio, run->io.port, data, run->io.size, is_write);
}

static void handle_internal_error(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION)
        sbx_stop(v->sb, SBX_STATE_FAILED,
                 "vCPU %u: KVM could not emulate a guest instruction (internal error, emulation "
                 "failure). This host's /dev/kvm cannot run this guest kernel; software KVM such "
                 "as PVM needs a PVM-enlightened guest. Use a host with hardware virtualization "
                 "(vmx/svm) or run inside tests/vmhost/run",
                 v->id);
    else
        sbx_stop(v->sb, SBX_STATE_FAILED, "vCPU %u: KVM internal error, suberror %u", v->id,
                 run->internal.suberror);
}

/* A triple fault is how a CPU gives up (or, rarely, how a kernel reboots when asked): unless
   a shutdown was requested it is a crash, reported with the vCPU's state for diagnosis. */
static void triple_fault(struct vcpu *v)
{
    struct sbx *sb = v->sb;
    struct kvm_regs r;
    struct kvm_sregs sr;
    if (sb->shutdown_requested || serial_contains(&sb->serial, "Kernel panic")) {
        sbx_guest_reset(sb, "triple fault");
        return;
    }
    if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sr) < 0) {
        sbx_stop(sb, SBX_STATE_FAILED, "the guest triple-faulted on vCPU %u", v->id);
        return;
    }
    sbx_stop(sb, SBX_STATE_FAILED,
             "the guest triple-faulted on vCPU %u (rip %#llx rsp %#llx cr0 %#llx cr2 %#llx cr3 "
             "%#llx cr4 %#llx efer %#llx)",
             v->id, (unsigned long long)r.rip, (unsigned long long)r.rsp,
             (unsigned long long)sr.cr0, (unsigned long long)sr.cr2, (unsigned long long)sr.cr3,
             (unsigned long long)sr.cr4, (unsigned long long)sr.efer);
}

static void eat_kicks(void)
{
    sigset_t k;
    sigemptyset(&k);
    sigaddset(&k, vcpu_kick_signal());
    struct timespec zero = {0, 0};
    while (sigtimedwait(&k, NULL, &zero) > 0)
        ;
}

/* Waits while a snapshot is taken (vcpu_park_all): the vCPU is outside KVM_RUN, and its last
   exit's I/O was completed by the KVM_RUN that returned EINTR. */
static void park(struct sbx *sb)
{
    pthread_mutex_lock(&sb->park_lock);
    sb->parked++;
    pthread_cond_broadcast(&sb->park_cond);
    while (atomic_load(&sb->park_req) && !atomic_load(&sb->stopping))
        pthread_cond_wait(&sb->park_cond, &sb->park_lock);
    sb->parked--;
    pthread_mutex_unlock(&sb->park_lock);
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    struct sbx *sb = v->sb;
    struct kvm_run *run = v->run;
    char name[16];
    snprintf(name, sizeof(name), "sbx-vcpu%u", v->id);
    pthread_setname_np(pthread_self(), name); /* /proc/PID/task/TID/comm */
    if (v->filter) {
        struct thread_filter *f = v->filter;
        v->filter = NULL;
        int r = thread_filter_enter(f);
        if (r < 0) {
            sbx_stop(sb, SBX_STATE_FAILED, "vCPU %u: cannot install its seccomp filter: %s", v->id,
                     strerror(-r));
            return NULL;
        }
    }
    while (!atomic_load(&sb->stopping)) {
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                /* Order matters: a kicker sets its flag, then immediate_exit, then signals.
                   Clearing immediate_exit and eating a pending kick before looking at the
                   flags loses no kick. The kick signal must be eaten: it is blocked outside
                   KVM_RUN, so a pending one would make every later KVM_RUN return EINTR. */
                run->immediate_exit = 0;
                eat_kicks();
                if (atomic_load(&sb->park_req))
                    park(sb);
                continue;
            }
            sbx_stop(sb, SBX_STATE_FAILED, "KVM_RUN on vCPU %u: %s", v->id, strerror(errno));
            break;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            handle_io(v);
            break;
        case KVM_EXIT_MMIO:
            if (run->mmio.len == 0 || run->mmio.len > sizeof(run->mmio.data)) {
                sbx_stop(sb, SBX_STATE_FAILED, "vCPU %u: malformed MMIO exit", v->id);
                break;
            }
            bus_access(&sb->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
                       run->mmio.is_write);
            break;
        case KVM_EXIT_SHUTDOWN:
            triple_fault(v);
            break;
        case KVM_EXIT_SYSTEM_EVENT:
            if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH)
                sbx_stop(sb, SBX_STATE_FAILED, "the guest reported a crash");
            else
                sbx_guest_reset(sb, "system event");
            break;
        case KVM_EXIT_HLT:
            /* Only without an in-kernel LAPIC; treat a halted machine as powered off. */
            sbx_guest_reset(sb, "halt");
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            handle_internal_error(v);
            break;
        case KVM_EXIT_FAIL_ENTRY:
            sbx_stop(sb, SBX_STATE_FAILED, "vCPU %u: VM entry failed (hardware reason 0x%llx)",
                     v->id, (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
            break;
        case KVM_EXIT_INTR:
            break;
        default:
            sbx_stop(sb, SBX_STATE_FAILED, "vCPU %u: unexpected KVM exit reason %u", v->id,
                     run->exit_reason);
            break;
        }
    }
    return NULL;
}

int vcpu_start(struct vcpu *v, struct thread_filter *filter)
{
    v->filter = filter;
    /* The kick signal stays blocked in user space and is unblocked only inside KVM_RUN
       (api.rst 4.38 KVM_SET_SIGNAL_MASK): a kick that lands between two KVM_RUNs stays
       pending and makes the next one return EINTR at once, so no kick is ever lost. */
    sigset_t all, run_mask;
    sigfillset(&all);
    sigemptyset(&run_mask);
    struct {
        struct kvm_signal_mask hdr;
        uint8_t set[8];
    } km;
    km.hdr.len = 8;
    memcpy(km.set, &run_mask, 8);
    if (ioctl(v->fd, KVM_SET_SIGNAL_MASK, &km) < 0) {
        int e = errno;
        thread_filter_free(filter);
        v->filter = NULL;
        return -e;
    }
    sigset_t old;
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits "everything blocked" */
    int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r) {
        thread_filter_free(filter);
        v->filter = NULL;
        return -r;
    }
    v->started = true;
    return 0;
}

void vcpu_kick(struct vcpu *v)
{
    if (v->run)
        v->run->immediate_exit = 1;
    if (v->started)
        pthread_kill(v->thread, vcpu_kick_signal());
}

int vcpu_park_all(struct sbx *sb, unsigned timeout_ms)
{
    pthread_mutex_lock(&sb->park_lock);
    atomic_store(&sb->park_req, true);
    pthread_mutex_unlock(&sb->park_lock);
    for (unsigned i = 0; i < sb->nvcpu_created; i++)
        vcpu_kick(&sb->vcpu[i]);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int r = 0;
    pthread_mutex_lock(&sb->park_lock);
    while (r == 0 && sb->parked < sb->nvcpu_created && !atomic_load(&sb->stopping))
        if (pthread_cond_timedwait(&sb->park_cond, &sb->park_lock, &dl) == ETIMEDOUT)
            r = -ETIMEDOUT;
    if (r == 0 && atomic_load(&sb->stopping))
        r = -ESHUTDOWN;
    pthread_mutex_unlock(&sb->park_lock);
    if (r < 0)
        vcpu_unpark_all(sb);
    return r;
}

void vcpu_unpark_all(struct sbx *sb)
{
    pthread_mutex_lock(&sb->park_lock);
    atomic_store(&sb->park_req, false);
    pthread_cond_broadcast(&sb->park_cond);
    pthread_mutex_unlock(&sb->park_lock);
}

void vcpu_join(struct vcpu *v)
{
    if (v->started) {
        pthread_join(v->thread, NULL);
        v->started = false;
    }
}

void vcpu_destroy(struct vcpu *v)
{
    vcpu_join(v);
    vm_release_map(v->sb, v->run, (size_t)v->sb->run_size);
    vm_release_fd(v->sb, v->fd);
    v->run = NULL;
    v->fd = -1;
}
