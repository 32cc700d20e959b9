// SPDX-License-Identifier: Apache-2.0
/* Network benchmark: guest-to-host TCP through the NAT (connection latency, round trips,
   throughput) side by side with the vsock path (agent round trips, a file read) and the
   host's own loopback TCP, all in the same run. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

static void die(sbx *sb, const char *what, int r)
{
    bench_die("bench_net", sb, what, r);
}

/* --- host servers on 127.0.0.1: an echo server and a sink that answers with a byte count -- */

struct server {
    int fd;
    unsigned port;
    int sink; /* 0: echo, 1: sink */
};

static void *serve_conn(void *arg)
{
    struct server *s = (struct server *)((void **)arg)[0];
    int c = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    static __thread char buf[1 << 16];
    ssize_t n;
    uint64_t total = 0;
    while ((n = read(c, buf, sizeof(buf))) > 0) {
        total += (uint64_t)n;
        if (!s->sink && write(c, buf, (size_t)n) != n)
            break;
    }
    if (s->sink) {
        char msg[32];
        int m = snprintf(msg, sizeof(msg), "%llu\n", (unsigned long long)total);
        if (write(c, msg, (size_t)m) != m)
            perror("sink");
    }
    close(c);
    return NULL;
}

static void *serve(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL;
        void **a = malloc(2 * sizeof(void *));
        a[0] = s;
        a[1] = (void *)(intptr_t)c;
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, a);
        pthread_detach(t);
    }
}

static void server_start(struct server *s, int sink)
{
    s->sink = sink;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) || listen(s->fd, 64) ||
        getsockname(s->fd, (struct sockaddr *)&a, &len)) {
        perror("bench_net: server");
        exit(1);
    }
    s->port = ntohs(a.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, serve, s);
    pthread_detach(t);
}

/* --- guest side: python3 measures in the guest and prints numbers ------------------------ */

static const char guest_prog[] =
    "import socket, sys, time\n"
    "host, echo, sink, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "
    "int(sys.argv[4]), int(sys.argv[5])\n"
    "def conn(p):\n"
    "    s = socket.create_connection((host, p)); "
    "s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); return s\n"
    "lat = []\n"
    "for i in range(n):\n"
    "    t = time.perf_counter(); s = conn(echo); s.sendall(b'x'); s.recv(1); s.close()\n"
    "    lat.append(time.perf_counter() - t)\n"
    "print('connect', *lat)\n"
    "s = conn(echo); rt = []\n"
    "for i in range(n):\n"
    "    t = time.perf_counter(); s.sendall(b'x'); s.recv(1); rt.append(time.perf_counter() - t)\n"
    "s.close(); print('rtt', *rt)\n"
    "buf = b'\\0' * (1 << 20)\n"
    "s = conn(sink); t = time.perf_counter()\n"
    "for i in range(mib): s.sendall(buf)\n"
    "s.shutdown(socket.SHUT_WR); got = int(s.makefile().readline()); dt = time.perf_counter() - t\n"
    "assert got == mib << 20, got\n"
    "print('rate', mib / dt)\n";

/* Median of the numbers after `key` on its line of out (seconds -> ms unless rate). */
static double field_median(const char *out, const char *key, int *count)
{
    const char *p = strstr(out, key);
    double v[4096];
    int n = 0;
    if (p) {
        p += strlen(key);
        char *end;
        for (;;) {
            double d = strtod(p, &end);
            if (end == p || n == 4096)
                break;
            v[n++] = d;
            p = end;
            if (*p == '\n')
                break;
        }
    }
    *count = n;
    return n ? median(v, n) : -1;
}

static double loopback_rate(unsigned port, size_t mib)
{
    static char buf[1 << 20];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        die(NULL, "loopback connect", SBX_EIO);
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < mib; i++)
        for (size_t off = 0; off < sizeof(buf);) {
            ssize_t w = write(fd, buf + off, sizeof(buf) - off);
            if (w <= 0)
                die(NULL, "loopback write", SBX_EIO);
            off += (size_t)w;
        }
    shutdown(fd, SHUT_WR);
    char reply[32];
    if (read(fd, reply, sizeof(reply)) <= 0)
        die(NULL, "loopback read", SBX_EIO);
    close(fd);
    return (double)mib / ((double)(now_ns() - t0) / 1e9);
}

int main(int argc, char **argv)
{
    int iters = 100, rounds = 3, mib = 64;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc)
            mib = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_net [--iterations N] [--rounds N] [--mib N]\n");
            return 2;
        }
    }
    if (iters < 2 || iters > 4000 || rounds < 1 || mib < 1)
        return 2;
    struct server echo, sink;
    server_start(&echo, 0);
    server_start(&sink, 1);

    sbx_options o = itest_options("base");
    o.memory_mib = 512;
    o.host_loopback = 1;
    sbx *sb = NULL;
    int r = sbx_create(&sb, &o);
    if (r)
        die(sb, "create", r);
    if ((r = sbx_write_file(sb, "/tmp/net.py", guest_prog, sizeof(guest_prog) - 1, 0644)))
        die(sb, "write /tmp/net.py", r);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of=/tmp/blob bs=1M count=%d status=none", mib);
    sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
    x.cmd = cmd;
    sbx_exec_result res;
    if ((r = sbx_exec(sb, &x, &res)) || res.exit_code)
        die(sb, "dd", r);
    sbx_exec_result_free(&res);
    printf("libsandbox %s, base, %d iterations, %d MiB, %d rounds\n", sbx_version(), iters, mib,
           rounds);

    double *nat_conn = calloc((size_t)rounds, sizeof(double)),
           *nat_rtt = calloc((size_t)rounds, sizeof(double)),
           *nat_rate = calloc((size_t)rounds, sizeof(double)),
           *vs_rtt = calloc((size_t)rounds, sizeof(double)),
           *vs_rate = calloc((size_t)rounds, sizeof(double)),
           *lo_rate = calloc((size_t)rounds, sizeof(double));
    double *lat = calloc((size_t)iters, sizeof(double));
    for (int k = 0; k < rounds; k++) {
        snprintf(cmd, sizeof(cmd), "python3 /tmp/net.py 10.0.2.2 %u %u %d %d", echo.port, sink.port,
                 iters, mib);
        x.cmd = cmd;
        x.timeout_ms = 600000;
        if ((r = sbx_exec(sb, &x, &res)) || res.exit_code) {
            fprintf(stderr, "%s%s", res.out ? res.out : "", res.err ? res.err : "");
            die(sb, "guest measurement", r);
        }
        int n1, n2, n3;
        nat_conn[k] = field_median(res.out, "connect", &n1) * 1e3;
        nat_rtt[k] = field_median(res.out, "rtt", &n2) * 1e3;
        nat_rate[k] = field_median(res.out, "rate", &n3);
        sbx_exec_result_free(&res);
        if (n1 != iters || n2 != iters || n3 != 1)
            die(sb, "parsing the guest's numbers", SBX_EPROTO);
        for (int i = 0; i < iters; i++) {
            uint64_t t0 = now_ns();
            if ((r = sbx_ping(sb, 0)))
                die(sb, "ping", r);
            lat[i] = (double)(now_ns() - t0) / 1e6;
        }
        vs_rtt[k] = median(lat, iters);
        vs_rate[k] = bench_read_rate("bench_net", sb, "/tmp/blob", (size_t)mib << 20);
        lo_rate[k] = loopback_rate(sink.port, (size_t)mib);
    }
    printf("%-44s median %9.3f ms\n", "NAT: connect + 1-byte echo (guest-measured)",
           median(nat_conn, rounds));
    printf("%-44s median %9.3f ms\n", "NAT: 1-byte echo on an open connection",
           median(nat_rtt, rounds));
    printf("%-44s median %9.3f ms\n", "vsock: agent ping on an open connection",
           median(vs_rtt, rounds));
    printf("%-44s median %9.1f MiB/s\n", "NAT: guest->host TCP", median(nat_rate, rounds));
    printf("%-44s median %9.1f MiB/s\n", "vsock: guest->host file read", median(vs_rate, rounds));
    printf("%-44s median %9.1f MiB/s\n", "  host loopback TCP (reference)",
           median(lo_rate, rounds));
    sbx_net_stats st;
    if (sbx_network_stats(sb, &st) == 0)
        printf("network counters: tx %llu frames, rx %llu frames, dropped %llu\n",
               (unsigned long long)st.tx_frames, (unsigned long long)st.rx_frames,
               (unsigned long long)st.dropped);
    sbx_destroy(sb);
    return 0;
}
