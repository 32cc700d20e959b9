// SPDX-License-Identifier: Apache-2.0
/* What the benchmarks share: medians, failing loudly, and reading a guest file for its rate. */
#ifndef SBX_BENCH_H
#define SBX_BENCH_H

#include <stdio.h>
#include <stdlib.h>

#include "sandbox.h"
#include "util/wait.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v and returns its median (the mean of the middle two for an even n). */
static inline double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Prints "PROG: WHAT: error: message" and exits 1. */
static inline void bench_die(const char *prog, sbx *sb, const char *what, int r)
{
    fprintf(stderr, "%s: %s: %s: %s\n", prog, what, sbx_strerror(r), sb ? sbx_errmsg(sb) : "");
    exit(1);
}

/* Runs `true` in the guest (the cheapest round trip through a process); dies on failure. */
static inline void bench_exec_true(const char *prog, sbx *sb)
{
    const char *argv[] = {"true", NULL};
    sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
    e.argv = argv;
    sbx_exec_result res;
    int r = sbx_exec(sb, &e, &res);
    if (r || res.exit_code)
        bench_die(prog, sb, "exec true", r ? r : SBX_EGUEST);
    sbx_exec_result_free(&res);
}

/* Reads the guest file `path` of `bytes` bytes through sbx_file_open / read; MiB/s. */
static inline double bench_read_rate(const char *prog, sbx *sb, const char *path, size_t bytes)
{
    static char chunk[1 << 20];
    sbx_file *f;
    uint64_t t0 = now_ns(), size;
    int r = sbx_file_open(sb, path, 0, 0, &f, &size);
    if (r)
        bench_die(prog, sb, "sbx_file_open", r);
    size_t got = 0;
    while ((r = sbx_file_read(f, chunk, sizeof(chunk))) > 0)
        got += (size_t)r;
    sbx_file_close(f);
    if (r < 0)
        bench_die(prog, sb, "sbx_file_read", r);
    if (got != bytes) {
        fprintf(stderr, "%s: read %zu bytes of %zu\n", prog, got, bytes);
        exit(1);
    }
    return (double)bytes / (1 << 20) / ((double)(now_ns() - t0) / 1e9);
}

#endif
