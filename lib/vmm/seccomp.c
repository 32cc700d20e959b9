// SPDX-License-Identifier: Apache-2.0
/*
 * Per-thread seccomp filters (libseccomp). A sandbox's own threads are the ones a hostile guest
 * talks to: the vCPU threads handle its port I/O and MMIO exits, the device thread walks its
 * virtqueues and runs its NAT. Each installs, before it touches the guest, a filter that allows
 * only the system calls its role makes; ioctl only with the KVM requests that role issues.
 * A forbidden call fails with EPERM (it does not kill: the threads live in the application's
 * process). The application's own threads are never filtered (no TSYNC). The lists and why
 * each entry is there: docs/SECURITY.md, "seccomp".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <linux/capability.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm/seccomp.h"
#include "vmm/vcpu.h"

struct thread_filter {
    scmp_filter_ctx ctx;
    bool trap;      /* SIGSYS instead of EPERM */
    bool drop_caps; /* capset to nothing first */
};

/* Every thread: memory, locks, signals (the kick), time, its own exit. */
static const int common_calls[] = {
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(close),
    SCMP_SYS(futex),
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mremap),
    SCMP_SYS(mprotect),
    SCMP_SYS(madvise),
    SCMP_SYS(brk),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_getres),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(nanosleep),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(sched_yield),
    SCMP_SYS(rseq),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(exit),
    SCMP_SYS(getrandom),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(rt_sigtimedwait), /* eating a pending kick */
};

/* The device thread: disk I/O, its event loop, the NAT's sockets. */
static const int device_calls[] = {
    SCMP_SYS(pread64),     SCMP_SYS(pwrite64),        SCMP_SYS(preadv),
    SCMP_SYS(pwritev),     SCMP_SYS(preadv2),         SCMP_SYS(pwritev2),
    SCMP_SYS(fsync),       SCMP_SYS(fdatasync),       SCMP_SYS(fallocate),
    SCMP_SYS(lseek),       SCMP_SYS(fstat),           SCMP_SYS(newfstatat),
    SCMP_SYS(statx),       SCMP_SYS(epoll_wait),      SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_ctl),   SCMP_SYS(fcntl),           SCMP_SYS(connect),
    SCMP_SYS(sendto),      SCMP_SYS(recvfrom),        SCMP_SYS(sendmsg),
    SCMP_SYS(recvmsg),     SCMP_SYS(setsockopt),      SCMP_SYS(getsockopt),
    SCMP_SYS(getsockname), SCMP_SYS(getpeername),     SCMP_SYS(shutdown),
    SCMP_SYS(bind),        SCMP_SYS(timerfd_settime), SCMP_SYS(timerfd_gettime),
};

/* KVM requests per role. */
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN,                     /* the loop */
    KVM_GET_REGS,                /* diagnostics of a triple fault or an internal error */
    KVM_GET_SREGS, KVM_IRQ_LINE, /* the serial port's and the keyboard controller's interrupts */
};
static const unsigned long device_ioctls[] = {
    KVM_IRQ_LINE, /* legacy interrupts raised by device work */
};
/* The isolated mode's main thread: reading the VM's state for a snapshot (lib/vmm/x86/state.c,
   lib/snap/snapshot.c). Nothing that changes the VM. */
static const unsigned long server_ioctls[] = {
    KVM_CHECK_EXTENSION, KVM_GET_TSC_KHZ,     KVM_GET_MP_STATE,       KVM_GET_REGS,
    KVM_GET_SREGS,       KVM_GET_XSAVE,       KVM_GET_XSAVE2,         KVM_GET_XCRS,
    KVM_GET_DEBUGREGS,   KVM_GET_LAPIC,       KVM_GET_MSR_INDEX_LIST, KVM_GET_MSRS,
    KVM_GET_CPUID2,      KVM_GET_VCPU_EVENTS, KVM_GET_IRQCHIP,        KVM_GET_PIT2,
    KVM_GET_CLOCK,       KVM_KVMCLOCK_CTRL,
};

static int add_calls(scmp_filter_ctx ctx, const int *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);
        if (r < 0)
            return r;
    }
    return 0;
}

static int add_ioctls(scmp_filter_ctx ctx, const unsigned long *req, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                 SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, req[i]));
        if (r < 0)
            return r;
    }
    return 0;
}

static int build(scmp_filter_ctx ctx, enum thread_role role)
{
    int r;
#define N(a) (sizeof(a) / sizeof((a)[0]))
    if ((r = add_calls(ctx, common_calls, N(common_calls))) < 0)
        return r;
    /* Signals only as kicks of this process's vCPU threads. */
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 2,
                         SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()),
                         SCMP_A2(SCMP_CMP_EQ, (scmp_datum_t)vcpu_kick_signal()));
    if (r < 0)
        return r;
    if (role == THREAD_VCPU)
        return add_ioctls(ctx, vcpu_ioctls, N(vcpu_ioctls));
    if (role == THREAD_SERVER) {
        /* Requests and replies with descriptors attached; a connection is a socketpair; the
           files of a snapshot (opened by the parent) and a policy's memfd; the lifetime's
           timer. */
        static const int server_calls[] = {
            SCMP_SYS(recvmsg),    SCMP_SYS(sendmsg),         SCMP_SYS(sendto),    SCMP_SYS(fcntl),
            SCMP_SYS(exit_group), SCMP_SYS(pread64),         SCMP_SYS(pwrite64),  SCMP_SYS(lseek),
            SCMP_SYS(ftruncate),  SCMP_SYS(fsync),           SCMP_SYS(fdatasync), SCMP_SYS(fstat),
            SCMP_SYS(newfstatat), SCMP_SYS(timerfd_settime), SCMP_SYS(eventfd2)};
        if ((r = add_calls(ctx, server_calls, N(server_calls))) < 0 ||
            (r = add_ioctls(ctx, server_ioctls, N(server_ioctls))) < 0)
            return r;
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1,
                                SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)AF_UNIX));
    }

    if ((r = add_calls(ctx, device_calls, N(device_calls))) < 0 ||
        (r = add_ioctls(ctx, device_ioctls, N(device_ioctls))) < 0)
        return r;
    /* The NAT's outgoing connections: IPv4 and IPv6 sockets only. */
    static const int domains[] = {AF_INET, AF_INET6};
    for (size_t i = 0; i < N(domains); i++)
        if ((r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                  SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)domains[i]))) < 0)
            return r;
    /* libslirp reads /etc/resolv.conf to learn the host's DNS server: opens for reading only
       (no creating, truncating or writing; the isolated mode's minimal root narrows what can
       be read). */
    const scmp_datum_t wflags =
        O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | (O_TMPFILE & ~O_DIRECTORY);
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                         SCMP_A2(SCMP_CMP_MASKED_EQ, wflags, O_RDONLY));
    return r;
#undef N
}

struct thread_filter *thread_filter_new(enum thread_role role, bool drop_caps, char *err,
                                        size_t errlen)
{
    struct thread_filter *f = calloc(1, sizeof(*f));
    if (!f) {
        snprintf(err, errlen, "seccomp: out of memory");
        return NULL;
    }
    /* SBX_SECCOMP_TRAP=1 (debugging): a forbidden call raises SIGSYS instead, so a handler
       or a debugger can tell which call it was (docs/SECURITY.md). */
    const char *trap = getenv("SBX_SECCOMP_TRAP");
    f->trap = trap && strcmp(trap, "1") == 0;
    f->drop_caps = drop_caps;
    f->ctx = seccomp_init(f->trap ? SCMP_ACT_TRAP : SCMP_ACT_ERRNO(EPERM));
    int r = f->ctx ? build(f->ctx, role) : -ENOMEM;
    if (r < 0) {
        snprintf(err, errlen, "seccomp: cannot build the %s thread's filter: %s",
                 role == THREAD_VCPU     ? "vCPU"
                 : role == THREAD_DEVICE ? "device"
                                         : "server",
                 strerror(-r));
        thread_filter_free(f);
        return NULL;
    }
    return f;
}

/* Capabilities are per thread: this one's go, for good (the bounding set with them). */
int thread_drop_caps(void)
{
    for (int cap = 0; cap <= 63; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL && errno != EPERM)
            return -errno; /* EPERM: no CAP_SETPCAP, so nothing to regain from anyway */
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

int thread_filter_enter(struct thread_filter *f)
{
    if (f->drop_caps) {
        int r = thread_drop_caps();
        if (r < 0) {
            thread_filter_free(f);
            return r;
        }
    }
    int r = seccomp_load(f->ctx); /* sets no_new_privs on this thread; no TSYNC */
    if (r == 0 && f->trap) {
        /* A blocked SIGSYS would be forced to its default action: the process dies. */
        sigset_t sys;
        sigemptyset(&sys);
        sigaddset(&sys, SIGSYS);
        pthread_sigmask(SIG_UNBLOCK, &sys, NULL);
    }
    thread_filter_free(f);
    return r < 0 ? r : 0;
}

void thread_filter_free(struct thread_filter *f)
{
    if (!f)
        return;
    if (f->ctx)
        seccomp_release(f->ctx);
    free(f);
}
