// SPDX-License-Identifier: Apache-2.0
/* The isolated mode's cost: sbx_create, create to the first exec result, sbx_snapshot, a
   sandbox from that snapshot (to its first exec result) and sbx_destroy of a booted sandbox
   whose VMM runs in a jailed child process, against the same sandbox in-process, alternating
   in one run. Usage: bench_isolated [ROUNDS] (default 5). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench.h"
#include "harness.h"
#include "sandbox.h"
#include "util/wait.h"

static const char *prog = "bench_isolated";

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > 100)
        rounds = 5;
    if (!getenv("SBX_VMM_PATH"))
        setenv("SBX_VMM_PATH", SBX_BINARY_DIR "/sbx-vmm", 1);
    double create[2][100], first[2][100], destroy[2][100], snap[2][100], tpl[2][100];
    char dir[] = "/var/tmp/sbx-bench-iso-XXXXXX", path[64], cmd[96];
    if (!mkdtemp(dir))
        bench_die(prog, NULL, "mkdtemp", -1);
    snprintf(path, sizeof(path), "%s/snap", dir);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    for (int i = 0; i < rounds; i++)
        for (int iso = 0; iso < 2; iso++) {
            sbx_options o = itest_options(NULL);
            o.isolated = iso;
            sbx *sb = NULL;
            uint64_t t0 = now_ns();
            int r = sbx_create(&sb, &o);
            if (r)
                bench_die(prog, sb, "sbx_create", r);
            create[iso][i] = ms_since(t0);
            bench_exec_true(prog, sb);
            first[iso][i] = ms_since(t0);
            t0 = now_ns();
            if ((r = sbx_snapshot(sb, path)) != 0)
                bench_die(prog, sb, "sbx_snapshot", r);
            snap[iso][i] = ms_since(t0);
            t0 = now_ns();
            sbx_destroy(sb);
            destroy[iso][i] = ms_since(t0);
            sbx_options t = itest_options(NULL);
            t.memory_mib = 0;
            t.template_name = path;
            t.isolated = iso;
            t0 = now_ns();
            if ((r = sbx_create(&sb, &t)) != 0)
                bench_die(prog, sb, "sbx_create from the snapshot", r);
            bench_exec_true(prog, sb);
            tpl[iso][i] = ms_since(t0);
            sbx_destroy(sb);
            if (system(cmd) != 0)
                bench_die(prog, NULL, "rm", -1);
        }
    rmdir(dir);
    static const char *const what[2] = {"in-process", "isolated"};
    for (int iso = 0; iso < 2; iso++)
        printf("%-10s  sbx_create median %8.1f ms   to first exec %8.1f ms   sbx_snapshot %7.1f "
               "ms   from the snapshot to first exec %7.1f ms   sbx_destroy %6.1f ms   (n=%d)\n",
               what[iso], median(create[iso], rounds), median(first[iso], rounds),
               median(snap[iso], rounds), median(tpl[iso], rounds), median(destroy[iso], rounds),
               rounds);
    printf("isolated mode costs %+.1f ms at sbx_create (median), %+.1f ms from a snapshot\n",
           median(create[1], rounds) - median(create[0], rounds),
           median(tpl[1], rounds) - median(tpl[0], rounds));
    return 0;
}
