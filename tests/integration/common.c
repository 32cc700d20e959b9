// SPDX-License-Identifier: Apache-2.0
/* The guest-booting test harness: runs one named test (or all), reports, skips with reasons. */
#include <stdarg.h>
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
