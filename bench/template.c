// SPDX-License-Identifier: Apache-2.0
/* Templates and snapshots: create-from-template against a cold boot of the same image (to the
   first exec result), density of idle sandboxes, pause/resume per GiB, and fork. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "harness.h"
#include "sandbox.h"
#include "util/wait.h"

static const char *prog = "bench_template";
static char store[256];

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

/* Prints median and 99th percentile (the largest value below 100 samples). */
static void report(const char *what, double *v, int n, const char *unit)
{
    double med = median(v, n); /* sorts */
    int i99 = (int)((n - 1) * 0.99 + 0.5);
    printf("%-34s median %9.1f %s   p99 %9.1f   min %9.1f   (n=%d)\n", what, med, unit, v[i99],
           v[0], n);
}

static void sh(sbx *sb, const char *cmd)
{
    sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
    e.cmd = cmd;
    e.user = "root";
    sbx_exec_result res;
    int r = sbx_exec(sb, &e, &res);
    if (r || res.exit_code)
        bench_die(prog, sb, cmd, r ? r : SBX_EGUEST);
    sbx_exec_result_free(&res);
}

static sbx *from_template(const char *name)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.template_name = name;
    o.template_dir = store;
    o.boot_timeout_ms = 120000;
    sbx *sb = NULL;
    int r = sbx_create(&sb, &o);
    if (r)
        bench_die(prog, sb, "sbx_create from the template", r);
    return sb;
}

/* Private memory of this process (USS) in KiB: Private_Clean + Private_Dirty. */
static double uss_kib(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "re");
    char line[256];
    double sum = 0, v;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Private_Clean: %lf", &v) == 1 ||
            sscanf(line, "Private_Dirty: %lf", &v) == 1)
            sum += v;
    if (f)
        fclose(f);
    return sum;
}

static void rm_rf(const char *p)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p);
    if (system(cmd) != 0)
        fprintf(stderr, "%s: cannot remove %s\n", prog, p);
}

int main(int argc, char **argv)
{
    int cold_n = argc > 1 ? atoi(argv[1]) : 5;
    int warm_n = argc > 2 ? atoi(argv[2]) : 30;
    int dense_n = argc > 3 ? atoi(argv[3]) : 100;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((rlim_t)dense_n * 40 > rl.rlim_cur)
            dense_n = (int)(rl.rlim_cur / 40);
    }
    snprintf(store, sizeof(store), "/var/tmp/sbx-bench-XXXXXX");
    if (!mkdtemp(store)) {
        perror("mkdtemp");
        return 1;
    }
    printf("libsandbox %s: templates and snapshots (cold boots %d, creates %d, idle %d)\n",
           sbx_version(), cold_n, warm_n, dense_n);

    /* The template: the base image plus one step, ready when envd is. */
    char err[4096];
    sbx_template_build_options bo = SBX_TEMPLATE_BUILD_OPTIONS_INIT;
    bo.name = "bench";
    bo.dockerfile_text = "FROM base\nRUN echo ok > /ok\n";
    bo.template_dir = store;
    sbx_template_info info;
    uint64_t t0 = now_ns();
    int r = sbx_template_build(&bo, &info, err, sizeof(err));
    if (r) {
        fprintf(stderr, "%s: template build: %s: %s\n", prog, sbx_strerror(r), err);
        return 1;
    }
    printf("%-34s %9.1f ms (memory file %.1f MiB, disk diff %.1f MiB allocated)\n",
           "template build", ms_since(t0), info.memory_bytes / 1048576.0,
           info.disk_bytes / 1048576.0);

    /* Cold boot of the same image to the first exec result (the peer of this benchmark). */
    double *cold = calloc((size_t)cold_n, sizeof(double));
    for (int i = 0; i < cold_n; i++) {
        sbx_options o = SBX_OPTIONS_INIT;
        o.boot_timeout_ms = 120000;
        sbx *sb = NULL;
        t0 = now_ns();
        if ((r = sbx_create(&sb, &o)))
            bench_die(prog, sb, "cold sbx_create", r);
        bench_exec_true(prog, sb);
        cold[i] = ms_since(t0);
        sbx_destroy(sb);
    }
    report("cold boot -> first exec", cold, cold_n, "ms");

    /* From the template, to the first exec result; and the destroy that follows. */
    double *warm = calloc((size_t)warm_n, sizeof(double)),
           *create = calloc((size_t)warm_n, sizeof(double)),
           *destroy = calloc((size_t)warm_n, sizeof(double));
    for (int i = 0; i < warm_n; i++) {
        t0 = now_ns();
        sbx *sb = from_template("bench");
        create[i] = ms_since(t0);
        bench_exec_true(prog, sb);
        warm[i] = ms_since(t0);
        t0 = now_ns();
        sbx_destroy(sb);
        destroy[i] = ms_since(t0);
    }
    double cold_med = median(cold, cold_n), warm_med = median(warm, warm_n);
    report("template -> sbx_create returns", create, warm_n, "ms");
    report("template -> first exec", warm, warm_n, "ms");
    report("sbx_destroy", destroy, warm_n, "ms");
    printf("%-34s %9.1f x faster than the cold boot\n", "template speedup (median)",
           cold_med / warm_med);

    /* Density: idle sandboxes from the template, private memory of the process per sandbox. */
    double base_uss = uss_kib();
    sbx **all = calloc((size_t)dense_n, sizeof(*all));
    t0 = now_ns();
    for (int i = 0; i < dense_n; i++)
        all[i] = from_template("bench");
    double dense_ms = ms_since(t0);
    usleep(2000000);
    double uss = uss_kib() - base_uss;
    printf("%-34s %9.1f MiB private per sandbox, %.0f MiB for %d (created in %.0f ms)\n",
           "idle sandboxes from the template", uss / 1024 / dense_n, uss / 1024, dense_n, dense_ms);
    for (int i = 0; i < dense_n; i++)
        sbx_destroy(all[i]);
    free(all);

    /* Pause and resume with 192 MiB of written guest memory (a tmpfs file of random bytes). */
    sbx *sb = from_template("bench");
    sh(sb, "head -c 201326592 /dev/urandom > /dev/shm/fill");
    char snap[300];
    snprintf(snap, sizeof(snap), "%s/pause", store);
    t0 = now_ns();
    if ((r = sbx_pause(sb, snap)))
        bench_die(prog, sb, "sbx_pause", r);
    double pause_ms = ms_since(t0);
    char mem[320];
    snprintf(mem, sizeof(mem), "%s/memory", snap);
    struct stat st;
    double gib = stat(mem, &st) == 0 ? (double)st.st_blocks * 512 / (1 << 30) : 0;
    sbx_destroy(sb);
    t0 = now_ns();
    if ((r = sbx_resume(&sb, snap, NULL)))
        bench_die(prog, sb, "sbx_resume", r);
    bench_exec_true(prog, sb);
    double resume_ms = ms_since(t0);
    printf("%-34s %9.1f ms (%.2f GiB written: %.0f ms per GiB)\n", "pause", pause_ms, gib,
           gib > 0 ? pause_ms / gib : 0);
    printf("%-34s %9.1f ms to the first exec\n", "resume", resume_ms);

    /* Fork of 10 from the resumed sandbox. */
    sbx *kids[10];
    t0 = now_ns();
    if ((r = sbx_fork(sb, 10, NULL, kids)))
        bench_die(prog, sb, "sbx_fork", r);
    double fork_ms = ms_since(t0);
    for (int i = 0; i < 10; i++)
        bench_exec_true(prog, kids[i]);
    printf("%-34s %9.1f ms for 10 copies (%.1f ms per copy)\n", "fork", fork_ms, fork_ms / 10);
    for (int i = 0; i < 10; i++)
        sbx_destroy(kids[i]);
    sbx_destroy(sb);
    rm_rf(store);
    free(cold);
    free(warm);
    free(create);
    free(destroy);
    return 0;
}
