// SPDX-License-Identifier: Apache-2.0
/* The code interpreter: from the code-interpreter template to the first run_code("1+1")
   result, against a cold boot of the same image that starts the same service; and the
   latency of a trivial cell per language, next to `exec true`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "harness.h"
#include "sandbox.h"
#include "util/wait.h"

static const char *prog = "bench_code";
static char store[256];

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

static void report(const char *what, double *v, int n)
{
    double med = median(v, n);
    int i99 = (int)((n - 1) * 0.99 + 0.5);
    printf("%-36s median %9.1f ms   p99 %9.1f   min %9.1f   (n=%d)\n", what, med, v[i99], v[0], n);
}

/* Runs a cell; with `retry`, SBX_ENOTSUP (the service does not listen yet) is retried. */
static void cell(sbx *sb, const char *lang, const char *code, const char *want, int retry)
{
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = code;
    o.language = lang;
    sbx_execution ex;
    int r;
    while ((r = sbx_run_code(sb, &o, &ex)) == SBX_ENOTSUP && retry) {
        sbx_execution_free(&ex);
        usleep(20000);
    }
    if (r)
        bench_die(prog, sb, "sbx_run_code", r);
    const char *got = ex.nresults ? sbx_code_result_get(&ex.results[0], "text/plain") : ex.out;
    if (want && (!got || strcmp(got, want) != 0)) {
        fprintf(stderr, "%s: %s cell %s gave %s\n", prog, lang, code, got ? got : "nothing");
        exit(1);
    }
    sbx_execution_free(&ex);
}

/* Copies a file of the repository into the guest. */
static void put(sbx *sb, const char *src, const char *dst)
{
    FILE *f = fopen(src, "rb");
    static char buf[1 << 20];
    size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f)
        fclose(f);
    int r = n ? sbx_write_file(sb, dst, buf, n, 0644) : SBX_EIO;
    if (r)
        bench_die(prog, sb, src, r);
}

int main(int argc, char **argv)
{
    int cold_n = argc > 1 ? atoi(argv[1]) : 3;
    int warm_n = argc > 2 ? atoi(argv[2]) : 20;
    int call_n = argc > 3 ? atoi(argv[3]) : 50;
    snprintf(store, sizeof(store), "/var/tmp/sbx-bench-code-XXXXXX");
    if (!mkdtemp(store)) {
        perror("mkdtemp");
        return 1;
    }
    printf("libsandbox %s: code interpreter (cold boots %d, creates %d, calls %d)\n", sbx_version(),
           cold_n, warm_n, call_n);

    char err[4096];
    sbx_template_build_options bo = SBX_TEMPLATE_BUILD_OPTIONS_INIT;
    bo.name = "code-interpreter";
    bo.dockerfile = SBX_SOURCE_DIR "/guest/interpreter/Dockerfile";
    bo.template_dir = store;
    bo.ready_timeout_ms = 600000;
    sbx_template_info info;
    uint64_t t0 = now_ns();
    int r = sbx_template_build(&bo, &info, err, sizeof(err));
    if (r) {
        fprintf(stderr, "%s: template build: %s: %s\n", prog, sbx_strerror(r), err);
        return 1;
    }
    printf("%-36s %9.1f ms (memory file %.1f MiB, disk diff %.1f MiB allocated)\n",
           "template build", ms_since(t0), info.memory_bytes / 1048576.0,
           info.disk_bytes / 1048576.0);

    /* The peer: a cold boot of the code image, the service copied in and started, to the
       first result. */
    static const char *files[] = {"server.py", "py_worker.py", "js_worker.js"};
    double *cold = calloc((size_t)cold_n, sizeof(double));
    for (int i = 0; i < cold_n; i++) {
        sbx_options o = SBX_OPTIONS_INIT;
        o.rootfs = itest_image("code.ext4");
        o.boot_timeout_ms = 120000;
        const char *envs[] = {"MPLBACKEND=Agg", NULL};
        o.envs = envs;
        sbx *sb = NULL;
        t0 = now_ns();
        if ((r = sbx_create(&sb, &o)))
            bench_die(prog, sb, "cold sbx_create", r);
        for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
            char src[512], dst[256];
            snprintf(src, sizeof(src), "%s/guest/interpreter/%s", SBX_SOURCE_DIR, files[k]);
            snprintf(dst, sizeof(dst), "/tmp/interp/%s", files[k]);
            put(sb, src, dst);
        }
        sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
        e.cmd = "python3 /tmp/interp/server.py --port 49999";
        sbx_proc *p;
        if ((r = sbx_proc_start(sb, &e, &p)))
            bench_die(prog, sb, "start the service", r);
        sbx_proc_close(p);
        cell(sb, "python", "1+1", "2", 1);
        cold[i] = ms_since(t0);
        sbx_destroy(sb);
    }
    report("cold boot -> first run_code(1+1)", cold, cold_n);

    double *warm = calloc((size_t)warm_n, sizeof(double));
    for (int i = 0; i < warm_n; i++) {
        sbx_options o = SBX_OPTIONS_INIT;
        o.template_name = "code-interpreter";
        o.template_dir = store;
        sbx *sb = NULL;
        t0 = now_ns();
        if ((r = sbx_create(&sb, &o)))
            bench_die(prog, sb, "sbx_create from the template", r);
        cell(sb, "python", "1+1", "2", 0);
        warm[i] = ms_since(t0);
        sbx_destroy(sb);
    }
    report("template -> first run_code(1+1)", warm, warm_n);
    printf("%-36s %9.1f x faster than the cold boot\n", "template speedup (median)",
           median(cold, cold_n) / median(warm, warm_n));

    /* Per call, in one sandbox: the first cell of each language, then trivial cells. */
    sbx_options o = SBX_OPTIONS_INIT;
    o.template_name = "code-interpreter";
    o.template_dir = store;
    sbx *sb = NULL;
    if ((r = sbx_create(&sb, &o)))
        bench_die(prog, sb, "sbx_create from the template", r);
    static const char *langs[][3] = {
        {"python", "1+1", "2"}, {"javascript", "1+1", "2"}, {"bash", "echo 2", "2\n"}};
    double *v = calloc((size_t)call_n, sizeof(double));
    for (size_t l = 0; l < 3; l++) {
        t0 = now_ns();
        cell(sb, langs[l][0], langs[l][1], langs[l][2], 0);
        printf("%-36s %9.1f ms\n",
               l == 0   ? "first python cell"
               : l == 1 ? "first javascript cell"
                        : "first bash cell",
               ms_since(t0));
        for (int i = 0; i < call_n; i++) {
            t0 = now_ns();
            cell(sb, langs[l][0], langs[l][1], langs[l][2], 0);
            v[i] = ms_since(t0);
        }
        char what[64];
        snprintf(what, sizeof(what), "trivial %s cell", langs[l][0]);
        report(what, v, call_n);
    }
    for (int i = 0; i < call_n; i++) {
        t0 = now_ns();
        bench_exec_true(prog, sb);
        v[i] = ms_since(t0);
    }
    report("exec true (for comparison)", v, call_n);
    sbx_destroy(sb);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store);
    if (system(cmd) != 0)
        fprintf(stderr, "%s: cannot remove %s\n", prog, store);
    free(v);
    free(cold);
    free(warm);
    return 0;
}
