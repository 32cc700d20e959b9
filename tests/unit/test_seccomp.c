// SPDX-License-Identifier: Apache-2.0
/*
 * The per-thread seccomp filters (lib/vmm/seccomp.c): in a thread that entered the filter of a
 * role, the calls that role makes still work, and forbidden ones (other ioctls, opening files
 * for writing, other sockets, exec, fork, signals to anyone) fail with EPERM. Other threads of
 * the process are not affected.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "vmm/seccomp.h"
#include "vmm/vcpu.h"

/* What a filtered thread saw; checked by the main thread. */
struct probe {
    enum thread_role role;
    int entered;
    int write_ok, mmap_ok, clock_ok;
    /* KVM requests on a pipe: ENOTTY if the filter let them through, else EPERM */
    int kvm_run_errno, irq_line_errno, create_vm_errno;
    int other_ioctl_errno; /* FIONREAD: stopped */
    int open_ro_errno, open_wr_errno, open_creat_errno;
    int inet_socket_errno, unix_socket_errno, netlink_socket_errno;
    int exec_errno, fork_errno, kill_errno, tgkill_other_errno, ptrace_errno, kick_errno;
};

static int err_of(long r)
{
    return r < 0 ? errno : 0;
}

static void *probe_thread(void *arg)
{
    struct probe *p = arg;
    char err[256];
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return NULL;
    struct thread_filter *f = thread_filter_new(p->role, false, err, sizeof(err));
    if (!f) {
        print_error("%s\n", err);
        return NULL;
    }
    p->entered = thread_filter_enter(f) == 0;

    p->write_ok = write(pfd[1], "x", 1) == 1;
    void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    p->mmap_ok = m != MAP_FAILED && munmap(m, 1 << 20) == 0;
    struct timespec ts;
    p->clock_ok = syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) == 0;
    p->kvm_run_errno = err_of(ioctl(pfd[0], KVM_RUN, 0));
    p->irq_line_errno = err_of(ioctl(pfd[0], KVM_IRQ_LINE, NULL));
    p->create_vm_errno = err_of(ioctl(pfd[0], KVM_CREATE_VM, 0));
    int avail;
    p->other_ioctl_errno = err_of(ioctl(pfd[0], FIONREAD, &avail));
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    p->open_ro_errno = err_of(fd);
    if (fd >= 0)
        close(fd);
    p->open_wr_errno = err_of(open("/dev/null", O_WRONLY | O_CLOEXEC));
    p->open_creat_errno = err_of(open("/tmp/sbx-seccomp-probe", O_RDONLY | O_CREAT, 0600));
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    p->inet_socket_errno = err_of(fd);
    if (fd >= 0)
        close(fd);
    p->unix_socket_errno = err_of(socket(AF_UNIX, SOCK_STREAM, 0));
    p->netlink_socket_errno = err_of(socket(AF_NETLINK, SOCK_RAW, 0));
    char *argv[] = {"/bin/true", NULL};
    p->exec_errno = err_of(syscall(SYS_execve, "/bin/true", argv, argv + 1));
    long pid = syscall(SYS_fork);
    if (pid == 0)
        _exit(0); /* only if the filter failed; the parent then reports fork_errno 0 */
    p->fork_errno = err_of(pid);
    p->kill_errno = err_of(kill(getpid(), 0));
    p->tgkill_other_errno = err_of(syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2));
    p->ptrace_errno = err_of(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
    /* Allowed: the kick signal to this process's threads (here itself, with it blocked). */
    p->kick_errno = err_of(syscall(SYS_tgkill, getpid(), gettid(), vcpu_kick_signal()));
    return NULL;
}

static struct probe run_probe(enum thread_role role)
{
    struct probe p = {.role = role};
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2); /* in case the filter let tgkill through */
    sigaddset(&block, vcpu_kick_signal());
    pthread_sigmask(SIG_BLOCK, &block, &old);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, probe_thread, &p), 0);
    pthread_join(t, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    assert_true(p.entered);
    return p;
}

static void common_checks(const struct probe *p)
{
    assert_true(p->write_ok);
    assert_true(p->mmap_ok);
    assert_true(p->clock_ok);
    assert_int_equal(p->irq_line_errno, ENOTTY); /* allowed request, wrong fd */
    assert_int_equal(p->create_vm_errno, EPERM);
    assert_int_equal(p->other_ioctl_errno, EPERM);
    assert_int_equal(p->open_wr_errno, EPERM);
    assert_int_equal(p->open_creat_errno, EPERM);
    assert_int_equal(p->unix_socket_errno, EPERM);
    assert_int_equal(p->netlink_socket_errno, EPERM);
    assert_int_equal(p->exec_errno, EPERM);
    assert_int_equal(p->fork_errno, EPERM);
    assert_int_equal(p->kill_errno, EPERM);
    assert_int_equal(p->tgkill_other_errno, EPERM);
    assert_int_equal(p->ptrace_errno, EPERM);
    assert_int_equal(p->kick_errno, 0);
}

static void test_vcpu_filter(void **state)
{
    (void)state;
    struct probe p = run_probe(THREAD_VCPU);
    common_checks(&p);
    assert_int_equal(p.kvm_run_errno, ENOTTY);
    /* A vCPU thread opens nothing and makes no sockets. */
    assert_int_equal(p.open_ro_errno, EPERM);
    assert_int_equal(p.inet_socket_errno, EPERM);
}

static void test_device_filter(void **state)
{
    (void)state;
    struct probe p = run_probe(THREAD_DEVICE);
    common_checks(&p);
    assert_int_equal(p.kvm_run_errno, EPERM);
    /* The NAT's sockets and libslirp's read of /etc/resolv.conf. */
    assert_int_equal(p.open_ro_errno, 0);
    assert_int_equal(p.inet_socket_errno, 0);
}

/* The filter is the thread's own: the thread that started it is not restricted. */
static void test_other_threads_unaffected(void **state)
{
    (void)state;
    run_probe(THREAD_VCPU);
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    close(fd);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    close(fd);
}

/* A filter that is built but not entered is freed without effect. */
static void test_free_unentered(void **state)
{
    (void)state;
    char err[256];
    struct thread_filter *f = thread_filter_new(THREAD_DEVICE, false, err, sizeof(err));
    assert_non_null(f);
    thread_filter_free(f);
    thread_filter_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vcpu_filter),
        cmocka_unit_test(test_device_filter),
        cmocka_unit_test(test_other_threads_unaffected),
        cmocka_unit_test(test_free_unentered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
