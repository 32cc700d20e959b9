// SPDX-License-Identifier: Apache-2.0
/* The guest-booting test harness: runs one named test (or all), reports, skips with reasons. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

void itest_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

double itest_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

sbx_options itest_options(const char *rootfs)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.rootfs = rootfs;
    o.memory_mib = 256;
    o.boot_timeout_ms = 120000; /* generous: inside the emulated host everything is slow */
    const char *c = getenv("SBX_TEST_CONSOLE");
    if (c && *c == '1')
        o.console_fd = 2;
    return o;
}

const char *itest_image(const char *file)
{
    static char path[1024];
    const char *d = getenv("SBX_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (d && *d)
        snprintf(path, sizeof(path), "%s/%s", d, file);
    else if (x && *x)
        snprintf(path, sizeof(path), "%s/libsandbox/%s", x, file);
    else
        snprintf(path, sizeof(path), "%s/.cache/libsandbox/%s", h ? h : "/root", file);
    return path;
}

static char tmpdir[64];

static void rm_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

const char *itest_tmpfile(const char *name, const void *data, size_t len)
{
    static char path[256];
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/sbx-itest-XXXXXX");
        if (!mkdtemp(tmpdir))
            itest_fail(__FILE__, __LINE__, "mkdtemp failed");
        atexit(rm_tmpdir);
    }
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        itest_fail(__FILE__, __LINE__, "cannot write %s", path);
    return path;
}

int itest_main(const struct itest *t, size_t n, int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", t[i].name);
        return 0;
    }
    int ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc >= 2 && strcmp(argv[1], t[i].name) != 0)
            continue;
        double t0 = itest_ms();
        fprintf(stderr, "RUN  %s\n", t[i].name);
        t[i].fn();
        fprintf(stderr, "OK   %s (%.0f ms)\n", t[i].name, itest_ms() - t0);
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no test named %s\n", argc >= 2 ? argv[1] : "(none)");
        return 1;
    }
    return 0;
}

static char apt_dir[64];

static void host_or_skip(const char *cmd, const char *why)
{
    if (system(cmd) != 0) {
        fprintf(stderr, "skip: %s (%s failed)\n", why, cmd);
        exit(ITEST_SKIP);
    }
}

/* The repository's server and files go also when a CHECK fails (it exits). */
static void apt_cleanup(void)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "kill $(cat %s/http.pid 2>/dev/null) 2>/dev/null; rm -rf %s",
             apt_dir, apt_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleaning up %s failed\n", apt_dir);
}

unsigned itest_apt_repo(void)
{
    char *dir = apt_dir, cmd[1024];
    snprintf(apt_dir, sizeof(apt_dir), "/tmp/sbx-apt-XXXXXX");
    CHECK(mkdtemp(apt_dir) != NULL);
    atexit(apt_cleanup);
    snprintf(cmd, sizeof(cmd),
             "set -e; cd %s; mkdir -p pkg/DEBIAN pkg/usr/bin repo;"
             "printf 'Package: sbx-hello\\nVersion: 1.0\\nArchitecture: all\\n"
             "Maintainer: libsandbox tests <tests@example.invalid>\\n"
             "Description: a package for the apt test\\n' > pkg/DEBIAN/control;"
             "printf '#!/bin/sh\\necho hello from a package\\n' > pkg/usr/bin/sbx-hello;"
             "chmod 755 pkg/usr/bin/sbx-hello;"
             "dpkg-deb --root-owner-group --build pkg repo/sbx-hello_1.0_all.deb >/dev/null;"
             "cd repo && dpkg-scanpackages . /dev/null > Packages 2>/dev/null",
             dir);
    host_or_skip(cmd, "building a package repository needs dpkg-deb and dpkg-scanpackages");
    snprintf(cmd, sizeof(cmd),
             "cd %s && { /usr/bin/python3 -u -m http.server 0 --bind 127.0.0.1 --directory repo "
             "> http.log 2>&1 & echo $! > http.pid; }",
             dir);
    host_or_skip(cmd, "serving the repository needs /usr/bin/python3");
    unsigned port = 0;
    for (int i = 0; i < 100 && !port; i++) {
        char path[256], line[256] = "";
        snprintf(path, sizeof(path), "%s/http.log", dir);
        FILE *f = fopen(path, "r");
        if (f && fgets(line, sizeof(line), f))
            sscanf(line, "Serving HTTP on %*s port %u", &port);
        if (f)
            fclose(f);
        usleep(100000);
    }
    CHECK(port != 0);
    return port;
}

char *itest_run(sbx *sb, const char *user, const char *cmd)
{
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = cmd;
    o.user = user;
    sbx_exec_result res;
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    if (res.exit_code != 0)
        itest_fail(__FILE__, __LINE__, "%s: exit %d, err \"%s\"", cmd, res.exit_code,
                   res.err ? res.err : "");
    char *out = strdup(res.out ? res.out : "");
    sbx_exec_result_free(&res);
    return out;
}

void itest_expect(sbx *sb, const char *user, const char *cmd, const char *want)
{
    char *out = itest_run(sb, user, cmd);
    if (strcmp(out, want) != 0)
        itest_fail(__FILE__, __LINE__, "%s: got \"%s\", wanted \"%s\"", cmd, out, want);
    free(out);
}

long itest_status(const char *path, const char *field)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0)
            v = atol(line + n);
    fclose(f);
    return v;
}

static void *pending_exec(void *arg)
{
    struct itest_pending *p = arg;
    sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
    x.cmd = "sleep 600";
    x.timeout_ms = SBX_NO_TIMEOUT;
    sbx_exec_result res;
    p->rc = sbx_exec(p->sb, &x, &res);
    p->returned_ms = itest_ms();
    if (p->rc == 0)
        sbx_exec_result_free(&res);
    return NULL;
}

void itest_pending_exec(struct itest_pending *p, sbx *sb)
{
    p->sb = sb;
    p->rc = 1;
    p->returned_ms = 0;
    if (pthread_create(&p->thread, NULL, pending_exec, p) != 0)
        itest_fail(__FILE__, __LINE__, "pthread_create failed");
}

int itest_pending_join(struct itest_pending *p)
{
    pthread_join(p->thread, NULL);
    return p->rc;
}
