// SPDX-License-Identifier: Apache-2.0
/* Cold boot benchmark: sbx_create() to envd's Hello, against QEMU -M microvm to the same point. */
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "bench.h"
#include "harness.h"
#include "sandbox.h"
#include "util/initramfs.h"
#include "util/wait.h"

#define QEMU_CID_BASE 7 /* each run its own CID: vhost may release the last one late */

static double ms_since(uint64_t t0)
{
    return (double)(now_ns() - t0) / 1e6;
}

static void report(const char *what, double *v, int n, const char *unit)
{
    double med = median(v, n);
    printf("%-28s median %8.1f %s   min %8.1f   max %8.1f   (n=%d)\n", what, med, unit, v[0],
           v[n - 1], n);
}

/* RssAnon of a process in KiB (private memory: guest RAM it touched plus the VMM's own). */
static double rss_anon_kib(const char *pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%s/status", pid);
    FILE *f = fopen(path, "re");
    double v = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "RssAnon: %lf", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static int bench_sbx(const char *kernel, const char *rootfs, unsigned mem, double *out,
                     double *anon_mib)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.kernel = kernel;
    o.rootfs = rootfs;
    o.memory_mib = mem;
    o.boot_timeout_ms = 120000;
    sbx *sb = NULL;
    double before = rss_anon_kib("self");
    uint64_t t0 = now_ns();
    int r = sbx_create(&sb, &o);
    *out = ms_since(t0);
    *anon_mib = (rss_anon_kib("self") - before) / 1024;
    if (r != 0)
        fprintf(stderr, "sbx_create: %s\n", sbx_errmsg(sb));
    sbx_destroy(sb);
    return r;
}

/* Boots QEMU with the same kernel, root filesystem, initramfs (envd) and command line, and
   times until envd answers Hello over vhost-vsock. */
static int verbose;

static int bench_qemu(const char *qemu, const char *kernel, const char *rootfs, const char *initrd,
                      unsigned mem, unsigned cid_n, double *out, double *anon_mib)
{
    char memarg[32], drive[1024];
    snprintf(memarg, sizeof(memarg), "%u", mem);
    snprintf(drive, sizeof(drive), "id=root,file=%s,format=raw,if=none,snapshot=on", rootfs);
    char cid[64];
    snprintf(cid, sizeof(cid), "vhost-vsock-device,guest-cid=%u", QEMU_CID_BASE + cid_n);
    const char *cmdline = "console=ttyS0 reboot=k panic=-1 quiet nomodule pci=off "
                          "tsc=reliable no_timer_check random.trust_cpu=on "
                          "sbx.root=/dev/vda sbx.rootfstype=ext4 sbx.port=49983";
    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        if (!verbose)
            dup2(devnull, 1);
        execlp(qemu, qemu, "-M", "microvm,acpi=off,rtc=off", "-global",
               "virtio-mmio.force-legacy=false", "-accel", "kvm", "-cpu", "host", "-m", memarg,
               "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial",
               "null", "-kernel", kernel, "-initrd", initrd, "-append", cmdline, "-drive", drive,
               "-device", "virtio-blk-device,drive=root", "-device", cid, (char *)NULL);
        _exit(127);
    }
    int r = -1;
    struct waitctx w = {deadline_after_ms(120000), -1, -1};
    char err[256];
    while (now_ns() < w.deadline_ns) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_vm a = {
            .svm_family = AF_VSOCK, .svm_cid = QEMU_CID_BASE + cid_n, .svm_port = 49983};
        struct timeval ct = {0, 200000}; /* the default is 2 s: too coarse to time a boot */
        if (fd >= 0)
            setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &ct, sizeof(ct));
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            fcntl(fd, F_SETFL, O_NONBLOCK);
            struct agent_hello h;
            if (agent_hello(fd, &w, &h, err, sizeof(err)) == 0) {
                *out = ms_since(t0);
                char p[32];
                snprintf(p, sizeof(p), "%d", (int)pid);
                *anon_mib = rss_anon_kib(p) / 1024;
                r = 0;
            }
        }
        if (fd >= 0)
            close(fd);
        if (r == 0)
            break;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "qemu exited early (status 0x%x)\n", st);
            return -1;
        }
        usleep(2000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return r;
}

int main(int argc, char **argv)
{
    int runs = 10;
    unsigned mem = 256;
    const char *rootfs = "base";
    const char *qemu = "qemu-system-x86_64";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rootfs") && i + 1 < argc)
            rootfs = argv[++i];
        else if (!strcmp(argv[i], "--no-qemu"))
            qemu = NULL;
        else if (!strcmp(argv[i], "--verbose"))
            verbose = 1;
        else {
            fprintf(stderr, "usage: %s [--runs N] [--rootfs NAME] [--no-qemu] [--verbose]\n",
                    argv[0]);
            return 2;
        }
    }
    if (runs < 1 || runs > 1000)
        runs = 10;
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The image directory, resolved the way the library does it. */
    char kernel[1024], rootpath[1024], name[256];
    snprintf(kernel, sizeof(kernel), "%s", itest_image("vmlinux"));
    snprintf(name, sizeof(name), "%s.ext4", rootfs);
    snprintf(rootpath, sizeof(rootpath), "%s", itest_image(name));

    printf("boot benchmark: %d runs, %u MiB, 1 vCPU, kernel %s, rootfs %s\n", runs, mem, kernel,
           rootpath);
    double *a = calloc((size_t)runs, sizeof(double));
    double *b = calloc((size_t)runs, sizeof(double));
    double *am = calloc((size_t)runs, sizeof(double)), *bm = calloc((size_t)runs, sizeof(double));
    double warm, warm_mib;
    if (bench_sbx(kernel, rootpath, mem, &warm, &warm_mib) != 0) /* warm the page cache */
        return 1;
    for (int i = 0; i < runs; i++) {
        if (bench_sbx(kernel, rootpath, mem, &a[i], &am[i]) != 0)
            return 1;
        fprintf(stderr, "libsandbox run %d: %.1f ms, %.1f MiB private\n", i + 1, a[i], am[i]);
    }
    report("libsandbox create->Hello", a, runs, "ms");
    report("libsandbox private memory", am, runs, "MiB");
    if (!qemu)
        return 0;

    uint8_t *initrd;
    size_t len;
    if (initramfs_build_envd(&initrd, &len) != 0)
        return 1;
    char ipath[] = "/tmp/sbx-bench-initrd-XXXXXX";
    int fd = mkstemp(ipath);
    if (fd < 0 || write(fd, initrd, len) != (ssize_t)len)
        return 1;
    close(fd);
    free(initrd);
    int ok = bench_qemu(qemu, kernel, rootpath, ipath, mem, 0, &warm, &warm_mib) == 0;
    for (int i = 0; ok && i < runs; i++) {
        ok = bench_qemu(qemu, kernel, rootpath, ipath, mem, (unsigned)i + 1, &b[i], &bm[i]) == 0;
        fprintf(stderr, "qemu run %d: %.1f ms, %.1f MiB private\n", i + 1, b[i], bm[i]);
    }
    unlink(ipath);
    if (!ok) {
        fprintf(stderr, "qemu microvm run failed (needs /dev/vhost-vsock)\n");
        return 1;
    }
    report("qemu -M microvm ->Hello", b, runs, "ms");
    report("qemu private memory", bm, runs, "MiB");
    double ma = median(a, runs), mb = median(b, runs);
    printf("ratio libsandbox/qemu: %.2f (goal <= 0.50)\n", ma / mb);
    printf("private memory ratio libsandbox/qemu: %.2f\n", median(am, runs) / median(bm, runs));
    free(a);
    free(am);
    free(bm);
    free(b);
    return 0;
}
