// SPDX-License-Identifier: Apache-2.0
/* Operations benchmark: exec and RPC round trips, file throughput host <-> guest, against the
   host's own pipe and loopback TCP throughput measured in the same run. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "harness.h"
#include "internal.h"
#include "sandbox.h"
#include "util/wait.h"

/* Sorts v; prints p50 and p99. */
static void report_latency(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double p50 = v[n / 2], p99 = v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
    printf("%-34s p50 %9.3f ms   p99 %9.3f ms   min %9.3f   (n=%d)\n", what, p50, p99, v[0], n);
}

static void report_rate(const char *what, double *mibs, int n)
{
    printf("%-34s median %9.1f MiB/s   (n=%d)\n", what, median(mibs, n), n);
}

static void die(sbx *sb, const char *what, int r)
{
    bench_die("bench_ops", sb, what, r);
}

/* --- host reference: the same bytes through a pipe and through loopback TCP ------------- */

struct sink {
    int fd;
    size_t total;
};

static void *drain(void *arg)
{
    struct sink *s = arg;
    static __thread char buf[1 << 16];
    ssize_t n;
    while ((n = read(s->fd, buf, sizeof(buf))) > 0)
        s->total += (size_t)n;
    return NULL;
}

/* MiB/s moving `bytes` from this thread to a reader thread through the pair wfd -> rfd. */
static double pump(int wfd, int rfd, size_t bytes)
{
    static char buf[1 << 16];
    struct sink s = {rfd, 0};
    pthread_t t;
    pthread_create(&t, NULL, drain, &s);
    uint64_t t0 = now_ns();
    for (size_t left = bytes; left;) {
        size_t n = left < sizeof(buf) ? left : sizeof(buf);
        ssize_t w = write(wfd, buf, n);
        if (w <= 0)
            break;
        left -= (size_t)w;
    }
    close(wfd);
    pthread_join(t, NULL);
    close(rfd);
    return (double)bytes / (1 << 20) / ((double)(now_ns() - t0) / 1e9);
}

static double pipe_rate(size_t bytes)
{
    int p[2];
    if (pipe(p))
        return 0;
    return pump(p[1], p[0], bytes);
}

static double tcp_rate(size_t bytes)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &al))
        return 0;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof(a)))
        return 0;
    int s = accept(l, NULL, NULL);
    close(l);
    return pump(c, s, bytes);
}

/* --- libsandbox ------------------------------------------------------------------------ */

static double write_rate(sbx *sb, const char *path, size_t bytes)
{
    static char chunk[1 << 20];
    sbx_file *f;
    uint64_t t0 = now_ns();
    int r = sbx_file_create(sb, path, NULL, &f);
    if (r)
        die(sb, "sbx_file_create", r);
    for (size_t left = bytes; left;) {
        size_t n = left < sizeof(chunk) ? left : sizeof(chunk);
        if ((r = sbx_file_write(f, chunk, n)))
            die(sb, "sbx_file_write", r);
        left -= n;
    }
    if ((r = sbx_file_commit(f)))
        die(sb, "sbx_file_commit", r);
    return (double)bytes / (1 << 20) / ((double)(now_ns() - t0) / 1e9);
}

static double read_rate(sbx *sb, const char *path, size_t bytes)
{
    return bench_read_rate("bench_ops", sb, path, bytes);
}

int main(int argc, char **argv)
{
    int iters = 200, rounds = 5;
    const char *rootfs = "test", *local = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rootfs") == 0 && i + 1 < argc)
            rootfs = argv[++i];
        else if (strcmp(argv[i], "--local") == 0 && i + 1 < argc)
            local = argv[++i]; /* envd --test-listen=PATH: the agent path without a VM */
        else {
            fprintf(stderr, "usage: bench_ops [--iterations N] [--rounds N] [--rootfs NAME] "
                            "[--local SOCKET]\n");
            return 2;
        }
    }
    if (iters < 2 || rounds < 1)
        return 2;
    sbx *sb = NULL;
    int r;
    if (local) {
        r = sbx_local_attach(local, NULL, &sb);
    } else {
        sbx_options o = itest_options(rootfs);
        o.memory_mib = 1024; /* /tmp is a tmpfs of half the RAM: room for 256 MiB */
        r = sbx_create(&sb, &o);
    }
    if (r)
        die(sb, "create", r);
    printf("libsandbox %s, %s, %d iterations\n", sbx_version(),
           local ? "local envd (no VM)" : rootfs, iters);

    double *lat = calloc((size_t)iters, sizeof(double));
    const char *true_argv[] = {"true", NULL};
    sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
    x.argv = true_argv;
    for (int i = -10; i < iters; i++) { /* 10 warm-up runs */
        sbx_exec_result res;
        uint64_t t0 = now_ns();
        if ((r = sbx_exec(sb, &x, &res)) || res.exit_code != 0)
            die(sb, "sbx_exec true", r);
        sbx_exec_result_free(&res);
        if (i >= 0)
            lat[i] = (double)(now_ns() - t0) / 1e6;
    }
    report_latency("exec `true` round trip", lat, iters);
    for (int i = -10; i < iters; i++) {
        sbx_entry e;
        uint64_t t0 = now_ns();
        if ((r = sbx_stat(sb, "/", &e)))
            die(sb, "sbx_stat", r);
        sbx_entry_clear(&e);
        if (i >= 0)
            lat[i] = (double)(now_ns() - t0) / 1e6;
    }
    report_latency("stat RPC round trip", lat, iters);
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        if ((r = sbx_ping(sb, 0)))
            die(sb, "sbx_ping", r);
        lat[i] = (double)(now_ns() - t0) / 1e6;
    }
    report_latency("ping round trip", lat, iters);
    free(lat);

    char path[256];
    snprintf(path, sizeof(path), local ? "/tmp/sbx-bench-%d.dat" : "/tmp/bench.dat", (int)getpid());
    static const size_t sizes[] = {1u << 20, 256u << 20};
    double *w = calloc((size_t)rounds, sizeof(double)),
           *rd = calloc((size_t)rounds, sizeof(double));
    double *pp = calloc((size_t)rounds, sizeof(double)),
           *tc = calloc((size_t)rounds, sizeof(double));
    for (size_t s = 0; s < 2; s++) {
        for (int i = 0; i < rounds; i++) {
            sbx_remove(sb, path, 0); /* the old copy would double the space needed */
            w[i] = write_rate(sb, path, sizes[s]);
            rd[i] = read_rate(sb, path, sizes[s]);
            pp[i] = pipe_rate(sizes[s]);
            tc[i] = tcp_rate(sizes[s]);
        }
        char what[64];
        snprintf(what, sizeof(what), "write host->guest %zu MiB", sizes[s] >> 20);
        report_rate(what, w, rounds);
        snprintf(what, sizeof(what), "read guest->host %zu MiB", sizes[s] >> 20);
        report_rate(what, rd, rounds);
        snprintf(what, sizeof(what), "  host pipe %zu MiB (reference)", sizes[s] >> 20);
        report_rate(what, pp, rounds);
        snprintf(what, sizeof(what), "  host loopback TCP %zu MiB (ref.)", sizes[s] >> 20);
        report_rate(what, tc, rounds);
    }
    sbx_remove(sb, path, 0);
    free(w);
    free(rd);
    free(pp);
    free(tc);
    sbx_destroy(sb);
    return 0;
}
