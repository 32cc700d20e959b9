/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal harness for guest-booting tests: each test is its own ctest case (see CMake). */
#ifndef SBX_TEST_HARNESS_H
#define SBX_TEST_HARNESS_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

struct itest {
    const char *name;
    void (*fn)(void);
};

/* Exit code ctest treats as "skipped" (SKIP_RETURN_CODE). Always print the reason first. */
#define ITEST_SKIP 77

#define SBX_TEST(name) static void name(void)
#define ITEST(name)                                                                                \
    {                                                                                              \
#name, name                                                                                \
    }
#define ITEST_MAIN(...)                                                                            \
    static const struct itest itests_[] = {__VA_ARGS__};                                           \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return itest_main(itests_, sizeof(itests_) / sizeof(itests_[0]), argc, argv);              \
    }

int itest_main(const struct itest *t, size_t n, int argc, char **argv);

void itest_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            itest_fail(__FILE__, __LINE__, "check failed: %s", #cond);                             \
    } while (0)

/* Checks that an sbx_* call returned `want`, printing the handle's message otherwise. */
#define CHECK_RC(sb, call, want)                                                                   \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != (want))                                                                         \
            itest_fail(__FILE__, __LINE__, "%s returned %d (%s), expected %d: %s", #call, rc_,     \
                       sbx_strerror(rc_), (want), sbx_errmsg(sb));                                 \
    } while (0)

#define CHECK_OK(sb, call) CHECK_RC(sb, call, 0)

/* Options every test starts from: small guest, the test or base root filesystem, console
   copied to stderr when SBX_TEST_CONSOLE=1. */
sbx_options itest_options(const char *rootfs);

/* Path of a file in the image directory, resolved like the library does (static buffer). */
const char *itest_image(const char *file);

/* Milliseconds since an arbitrary point. */
double itest_ms(void);

/* A value of a /proc status file ("VmRSS:", "Seccomp:"...): the number after the field
   name, or -1 if the file or field is missing. */
long itest_status(const char *path, const char *field);

/* A call left waiting in another thread: `sleep 600` without a timeout, on sb. */
struct itest_pending {
    sbx *sb;
    pthread_t thread;
    int rc;             /* what sbx_exec() returned */
    double returned_ms; /* itest_ms() when it returned */
};
void itest_pending_exec(struct itest_pending *p, sbx *sb);
/* Waits for the thread; returns p->rc. */
int itest_pending_join(struct itest_pending *p);

/* A file in a fresh temporary directory (removed at exit); returns its path (static). */
const char *itest_tmpfile(const char *name, const void *data, size_t len);

/* Runs a shell command as `user` (NULL: the default user) and returns its stdout (malloc'ed);
   fails the test when the call fails or the command exits non-zero. */
char *itest_run(sbx *sb, const char *user, const char *cmd);

/* itest_run, and fails the test unless stdout is exactly `want`. */
void itest_expect(sbx *sb, const char *user, const char *cmd, const char *want);

/* Builds a one-package Debian repository (package sbx-hello, whose program prints "hello from
   a package") and serves it over HTTP on the host's 127.0.0.1; returns the port. Skips the
   test (with the reason) when dpkg-deb, dpkg-scanpackages or python3 are missing. The server
   stops and the files go when the test process exits. A guest with host_loopback reaches it
   at 10.0.2.2:PORT; ITEST_APT_INSTALL (a printf format taking the port as a string)
   installs the package from there. */
unsigned itest_apt_repo(void);
#define ITEST_APT_INSTALL                                                                          \
    "echo 'deb [trusted=yes] http://10.0.2.2:%s ./' > /etc/apt/sources.list.d/local.list "         \
    "&& A='-o Dir::Etc::sourcelist=/etc/apt/sources.list.d/local.list "                            \
    "-o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 -q' "                                  \
    "&& apt-get $A update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get $A install "        \
    "-y --no-install-recommends sbx-hello >/dev/null"

#endif
