// SPDX-License-Identifier: Apache-2.0
/*
 * Soak test (not part of `make test`; `make soak` or tests/soak/run): many sandboxes in one
 * process, each driven by its own threads doing execs, file round trips and PTY sessions
 * concurrently for a bounded time. Reports the operations done, the failures (the goal is
 * none), median and p99 latencies per kind, and the process's memory before, during and
 * after. Exits 1 on any failure or when the host process's memory grew by more than
 * --max-growth MiB between the first and the last round of work.
 *
 * Usage: soak [--sandboxes N] [--seconds S] [--rootfs NAME|PATH] [--max-growth MIB]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pty_wait.h"
#include "sandbox.h"

enum kind { K_EXEC, K_FILE, K_PTY, K_KINDS };
static const char *const kind_name[K_KINDS] = {"exec", "file round trip", "pty session"};

#define MAX_SAMPLES 200000

struct stats {
    pthread_mutex_t lock;
    double *ms[K_KINDS];
    size_t n[K_KINDS];
    atomic_ulong failures;
};

static struct stats st = {.lock = PTHREAD_MUTEX_INITIALIZER};
static double end_ms;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void record(enum kind k, double ms)
{
    pthread_mutex_lock(&st.lock);
    if (st.n[k] < MAX_SAMPLES)
        st.ms[k][st.n[k]++] = ms;
    pthread_mutex_unlock(&st.lock);
}

static void failed(sbx *sb, const char *what, int r)
{
    atomic_fetch_add(&st.failures, 1);
    fprintf(stderr, "soak: %s failed: %s: %s\n", what, sbx_strerror(r), sbx_errmsg(sb));
}

/* Resident memory of this process in MiB (VmRSS). */
static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    double kib = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %lf", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib / 1024;
}

struct worker {
    sbx *sb;
    enum kind kind;
    unsigned id;
};

static void one_exec(struct worker *w)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "echo soak-%u", w->id);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = cmd;
    o.timeout_ms = 30000;
    sbx_exec_result res;
    double t0 = now_ms();
    int r = sbx_exec(w->sb, &o, &res);
    char want[64];
    snprintf(want, sizeof(want), "soak-%u\n", w->id);
    if (r || res.exit_code || !res.out || strcmp(res.out, want) != 0)
        failed(w->sb, "exec", r ? r : SBX_EPROTO);
    else
        record(K_EXEC, now_ms() - t0);
    sbx_exec_result_free(&res);
}

static void one_file(struct worker *w, unsigned i)
{
    char path[64], data[4096];
    snprintf(path, sizeof(path), "/tmp/soak-%u", w->id);
    for (size_t k = 0; k < sizeof(data); k++)
        data[k] = (char)('a' + (k + i) % 26);
    double t0 = now_ms();
    int r = sbx_write_file(w->sb, path, data, sizeof(data), 0644);
    void *back = NULL;
    size_t len = 0;
    if (r == 0)
        r = sbx_read_file(w->sb, path, &back, &len, 1 << 20);
    if (r || len != sizeof(data) || memcmp(back, data, len) != 0)
        failed(w->sb, "file round trip", r ? r : SBX_EPROTO);
    else
        record(K_FILE, now_ms() - t0);
    free(back);
}

static void one_pty(struct worker *w)
{
    static const char *const sh[] = {"/bin/sh", NULL};
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.argv = sh;
    sbx_proc *p = NULL;
    double t0 = now_ms();
    int r = sbx_pty_open(w->sb, 24, 80, &o, &p);
    struct pty_text *t = calloc(1, sizeof(*t));
    if (r == 0)
        r = sbx_proc_write(p, "echo pty-$((6*7))\n", 18);
    if (r == 0 && !pty_wait(p, t, "pty-42", 30000))
        r = t->last ? t->last : SBX_ETIMEDOUT;
    if (r == 0)
        r = sbx_proc_write(p, "exit\n", 5);
    sbx_exec_result res;
    if (r == 0 && (r = sbx_proc_wait(p, 30000, &res)) == 0)
        sbx_exec_result_free(&res);
    if (r)
        failed(w->sb, "pty session", r);
    else
        record(K_PTY, now_ms() - t0);
    sbx_proc_close(p);
    free(t);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    for (unsigned i = 0; now_ms() < end_ms; i++) {
        if (w->kind == K_EXEC)
            one_exec(w);
        else if (w->kind == K_FILE)
            one_file(w, i);
        else
            one_pty(w);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One phase of work: every sandbox runs one thread per kind for `secs` seconds. */
static void phase(sbx **sbs, unsigned n, double secs)
{
    struct worker *w = calloc((size_t)n * K_KINDS, sizeof(*w));
    pthread_t *t = calloc((size_t)n * K_KINDS, sizeof(*t));
    end_ms = now_ms() + secs * 1e3;
    for (unsigned i = 0; i < n * K_KINDS; i++) {
        w[i] = (struct worker){.sb = sbs[i / K_KINDS], .kind = (enum kind)(i % K_KINDS), .id = i};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    for (unsigned i = 0; i < n * K_KINDS; i++)
        pthread_join(t[i], NULL);
    free(w);
    free(t);
}

int main(int argc, char **argv)
{
    unsigned n = 8;
    double secs = 120, max_growth = 64;
    const char *rootfs = "base";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--sandboxes") == 0)
            n = (unsigned)atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0)
            secs = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--rootfs") == 0)
            rootfs = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--max-growth") == 0)
            max_growth = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: soak [--sandboxes N] [--seconds S] [--rootfs NAME|PATH] "
                            "[--max-growth MIB]\n");
            return 2;
        }
    }
    if (n < 1 || n > 256 || secs <= 0) {
        fprintf(stderr, "soak: 1..256 sandboxes and a positive duration\n");
        return 2;
    }
    for (int k = 0; k < K_KINDS; k++)
        st.ms[k] = calloc(MAX_SAMPLES, sizeof(double));
    double rss0 = rss_mib();
    sbx **sbs = calloc(n, sizeof(*sbs));
    for (unsigned i = 0; i < n; i++) {
        sbx_options o = SBX_OPTIONS_INIT;
        o.rootfs = rootfs;
        o.boot_timeout_ms = 120000;
        int r = sbx_create(&sbs[i], &o);
        if (r) {
            fprintf(stderr, "soak: sbx_create %u: %s: %s\n", i, sbx_strerror(r),
                    sbs[i] ? sbx_errmsg(sbs[i]) : "");
            return 1;
        }
    }
    printf("soak: %u sandboxes (%s), %u threads, %.0f s; host RSS %.1f MiB before, %.1f MiB "
           "with the sandboxes\n",
           n, rootfs, n * K_KINDS, secs, rss0, rss_mib());
    fflush(stdout);
    /* A short first round warms every path up (pools, buffers); growth is measured from its
       end to the end of the long round. */
    phase(sbs, n, secs / 10 < 5 ? 5 : secs / 10);
    double rss1 = rss_mib();
    phase(sbs, n, secs);
    double rss2 = rss_mib();
    for (unsigned i = 0; i < n; i++)
        sbx_destroy(sbs[i]);
    free(sbs);
    sleep(1); /* VM teardown finishes on a detached thread */
    double rss3 = rss_mib();

    unsigned long total = 0;
    for (int k = 0; k < K_KINDS; k++) {
        size_t m = st.n[k];
        total += m;
        if (m == 0) {
            printf("soak: %-16s none done\n", kind_name[k]);
            continue;
        }
        qsort(st.ms[k], m, sizeof(double), cmp);
        printf("soak: %-16s %8zu done   median %8.1f ms   p99 %8.1f ms   max %8.1f ms\n",
               kind_name[k], m, st.ms[k][m / 2], st.ms[k][(size_t)((double)(m - 1) * 0.99)],
               st.ms[k][m - 1]);
    }
    unsigned long fails = atomic_load(&st.failures);
    double growth = rss2 - rss1;
    printf("soak: %lu operations, %lu failed; host RSS %.1f MiB after warm-up, %.1f MiB at the "
           "end (growth %.1f MiB, limit %.0f), %.1f MiB after destroying all\n",
           total, fails, rss1, rss2, growth, max_growth, rss3);
    for (int k = 0; k < K_KINDS; k++)
        free(st.ms[k]);
    if (fails || growth > max_growth || total == 0) {
        printf("soak: FAILED\n");
        return 1;
    }
    printf("soak: passed\n");
    return 0;
}
