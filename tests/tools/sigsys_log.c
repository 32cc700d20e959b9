// SPDX-License-Identifier: Apache-2.0
/*
 * A debugging aid for the seccomp filters (docs/SECURITY.md): preloaded into a program that
 * uses libsandbox with SBX_SECCOMP_TRAP=1, it logs every call a filter forbade (the thread's
 * id and the system call number) to the file $SBX_SIGSYS_LOG (default stderr) and lets the
 * call fail with EPERM, as it would without the trap:
 *
 *   SBX_SECCOMP_TRAP=1 LD_PRELOAD=build/tests/libsbx_sigsys_log.so SBX_SIGSYS_LOG=/tmp/f PROGRAM
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static int log_fd = 2;

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    char line[96];
    int n = snprintf(line, sizeof(line), "seccomp: thread %d: system call %d forbidden\n",
                     (int)gettid(), si->si_syscall);
    if (n > 0)
        (void)!write(log_fd, line, (size_t)n);
    ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RAX] = -EPERM;
}

__attribute__((constructor)) static void install(void)
{
    const char *path = getenv("SBX_SIGSYS_LOG");
    if (path && *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0)
            log_fd = fd;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSYS, &sa, NULL);
}
