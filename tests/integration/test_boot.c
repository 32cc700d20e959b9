// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of the first API slice: boot, Hello, ping, shutdown, many sandboxes. */
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "harness.h"

static void boot_and_check(const char *rootfs, const char *os_name)
{
    sbx_options o = itest_options(rootfs);
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    CHECK(sbx_state(sb) == SBX_STATE_RUNNING);
    sbx_info info;
    CHECK_OK(sb, sbx_get_info(sb, &info));
    /* Only the guest knows these: its kernel release and the agent's version. */
    fprintf(stderr, "guest: kernel %s, envd %s, protocol %u, boot %.1f ms, id %s\n",
            info.kernel_release, info.envd_version, info.protocol_version, info.boot_ns / 1e6,
            info.id);
    CHECK(strncmp(info.kernel_release, "6.1.", 4) == 0);
    CHECK(strcmp(info.envd_version, sbx_version()) == 0);
    CHECK(info.protocol_version >= 1);
    CHECK(strncmp(info.id, "sbx", 3) == 0 && strlen(info.id) > 8);
    /* Read by envd from the root disk: proves the guest runs on that disk. */
    fprintf(stderr, "guest OS: %s\n", info.os_name);
    CHECK(strcmp(info.os_name, os_name) == 0);
    CHECK(info.guest_cpus == 1);
    for (int i = 0; i < 3; i++)
        CHECK_OK(sb, sbx_ping(sb, 0));
    char con[4096];
    CHECK(sbx_console(sb, con, sizeof(con)) > 0);
    CHECK(strstr(con, "envd") != NULL);
    sbx_destroy(sb);
}

SBX_TEST(boot_test_rootfs)
{
    boot_and_check("test", "sbx test rootfs (busybox)");
}

SBX_TEST(boot_base_rootfs)
{
    boot_and_check("base", "Debian GNU/Linux 12 (bookworm)");
}

SBX_TEST(clean_shutdown)
{
    sbx_options o = itest_options("test");
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    CHECK_OK(sb, sbx_shutdown(sb, 30000));
    CHECK(sbx_state(sb) == SBX_STATE_STOPPED);
    CHECK_RC(sb, sbx_ping(sb, 1000), SBX_ESTATE);
    CHECK(strstr(sbx_errmsg(sb), "shut down") != NULL);
    sbx_destroy(sb);
}

SBX_TEST(smp_and_memory)
{
    sbx_options o = itest_options("test");
    o.vcpus = 2;
    o.memory_mib = 384;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    sbx_info info;
    CHECK_OK(sb, sbx_get_info(sb, &info));
    CHECK(info.vcpus == 2 && info.memory_mib == 384);
    fprintf(stderr, "guest sees %u CPUs and %llu KiB\n", info.guest_cpus,
            (unsigned long long)info.guest_mem_kib);
    CHECK(info.guest_cpus == 2);
    /* MemTotal is RAM minus what the kernel keeps for itself: within 85% of 384 MiB. */
    CHECK(info.guest_mem_kib <= 384 * 1024 && info.guest_mem_kib > 384 * 1024 * 85 / 100);
    CHECK_OK(sb, sbx_ping(sb, 0));
    sbx_destroy(sb);
}

static void many(unsigned n)
{
    sbx *sb[10] = {0};
    for (unsigned i = 0; i < n; i++) {
        sbx_options o = itest_options("test");
        o.memory_mib = 128;
        CHECK_OK(sb[i], sbx_create(&sb[i], &o));
    }
    for (unsigned i = 0; i < n; i++) {
        CHECK_OK(sb[i], sbx_ping(sb[i], 0));
        sbx_info a, b;
        sbx_get_info(sb[i], &a);
        sbx_get_info(sb[(i + 1) % n], &b);
        CHECK(strcmp(a.id, b.id) != 0);
    }
    /* Ending one sandbox leaves the others running. */
    sbx_destroy(sb[0]);
    for (unsigned i = 1; i < n; i++)
        CHECK_OK(sb[i], sbx_ping(sb[i], 0));
    for (unsigned i = 1; i < n; i++)
        sbx_destroy(sb[i]);
}

SBX_TEST(two_sandboxes)
{
    many(2);
}

SBX_TEST(ten_sandboxes)
{
    many(10);
}

static void *create_ping_destroy(void *arg)
{
    int *rc = arg;
    sbx_options o = itest_options("test");
    o.memory_mib = 128;
    sbx *sb = NULL;
    *rc = sbx_create(&sb, &o);
    if (*rc == 0)
        *rc = sbx_ping(sb, 0);
    if (*rc != 0)
        fprintf(stderr, "thread: %s: %s\n", sbx_strerror(*rc), sbx_errmsg(sb));
    sbx_destroy(sb);
    return NULL;
}

SBX_TEST(parallel_threads)
{
    /* Handles are independent: four threads create, use and destroy sandboxes at once. */
    enum { N = 4 };
    pthread_t t[N];
    int rc[N];
    for (int i = 0; i < N; i++)
        CHECK(pthread_create(&t[i], NULL, create_ping_destroy, &rc[i]) == 0);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK(rc[i] == 0);
    }
}

static sbx *volatile booting; /* set by sbx_create() before it blocks */

static void *interrupt_soon(void *arg)
{
    while (!booting)
        usleep(100);
    usleep(20000); /* well inside the boot, even on fast hardware */
    sbx_interrupt(booting);
    return NULL;
}

SBX_TEST(interrupt_during_boot)
{
    sbx_options o = itest_options("test");
    pthread_t t;
    pthread_create(&t, NULL, interrupt_soon, NULL);
    double t0 = itest_ms();
    int r = sbx_create((sbx **)&booting, &o);
    double took = itest_ms() - t0;
    pthread_join(t, NULL);
    sbx *sb = booting;
    fprintf(stderr, "sbx_create returned %d after %.0f ms: %s\n", r, took, sbx_errmsg(sb));
    CHECK_RC(sb, r, SBX_EINTR);
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    CHECK(took < 10000);
    double t1 = itest_ms();
    sbx_destroy(sb);
    fprintf(stderr, "sbx_destroy took %.0f ms\n", itest_ms() - t1);
}

SBX_TEST(missing_kernel)
{
    sbx_options o = itest_options("test");
    o.kernel = "/nonexistent/vmlinux";
    sbx *sb = NULL;
    double t0 = itest_ms();
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EIMAGE);
    CHECK(strstr(sbx_errmsg(sb), "/nonexistent/vmlinux") != NULL);
    CHECK(itest_ms() - t0 < 1000);
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    sbx_destroy(sb);
}

SBX_TEST(corrupt_kernel)
{
    unsigned char junk[65536];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (unsigned char)(i * 7 + 13);
    sbx_options o = itest_options("test");
    o.kernel = itest_tmpfile("vmlinux", junk, sizeof(junk));
    sbx *sb = NULL;
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EIMAGE);
    fprintf(stderr, "message: %s\n", sbx_errmsg(sb));
    CHECK(strstr(sbx_errmsg(sb), "kernel") != NULL);
    sbx_destroy(sb);
    /* A truncated ELF: the real kernel's first 4 KiB. */
    char buf[4096];
    int fd = open(itest_image("vmlinux"), O_RDONLY);
    CHECK(fd >= 0);
    CHECK(read(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
    close(fd);
    o.kernel = itest_tmpfile("vmlinux-trunc", buf, sizeof(buf));
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EIMAGE);
    fprintf(stderr, "message: %s\n", sbx_errmsg(sb));
    sbx_destroy(sb);
}

SBX_TEST(rootfs_not_ext4)
{
    static unsigned char zeros[1 << 20];
    sbx_options o = itest_options(itest_tmpfile("zeros.img", zeros, sizeof(zeros)));
    o.boot_timeout_ms = 60000;
    sbx *sb = NULL;
    double t0 = itest_ms();
    int r = sbx_create(&sb, &o);
    fprintf(stderr, "rc %d after %.0f ms: %s\n", r, itest_ms() - t0, sbx_errmsg(sb));
    CHECK_RC(sb, r, SBX_EGUEST);
    CHECK(strstr(sbx_errmsg(sb), "mount") != NULL);
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    sbx_destroy(sb);
}

SBX_TEST(guest_kernel_panic)
{
    /* No init at all: the kernel panics ("No working init found"), panic=-1 resets through
       the keyboard controller, and the sandbox fails saying so. */
    sbx_options o = itest_options("test");
    o.cmdline_extra = "rdinit=/nonexistent init=/nonexistent";
    sbx *sb = NULL;
    double t0 = itest_ms();
    int r = sbx_create(&sb, &o);
    fprintf(stderr, "rc %d after %.0f ms: %s\n", r, itest_ms() - t0, sbx_errmsg(sb));
    CHECK_RC(sb, r, SBX_EGUEST);
    CHECK(strstr(sbx_errmsg(sb), "panicked") != NULL);
    CHECK(strstr(sbx_errmsg(sb), "Kernel panic") != NULL); /* the console lines */
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    sbx_destroy(sb);
}

SBX_TEST(agent_never_answers)
{
    sbx_options o = itest_options("test");
    o.cmdline_extra = "sbx.port=1234"; /* envd listens elsewhere: nobody answers on 49983 */
    o.boot_timeout_ms = 15000;
    sbx *sb = NULL;
    double t0 = itest_ms();
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_ETIMEDOUT);
    double took = itest_ms() - t0;
    fprintf(stderr, "timed out after %.0f ms: %s\n", took, sbx_errmsg(sb));
    CHECK(took >= 15000 && took < 20000);
    CHECK(strstr(sbx_errmsg(sb), "console") != NULL);
    sbx_destroy(sb);
}

SBX_TEST(console_sink)
{
    int p[2];
    CHECK(pipe2(p, O_NONBLOCK) == 0);
    sbx_options o = itest_options("test");
    o.console_fd = p[1];
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    char buf[65536];
    ssize_t n = read(p[0], buf, sizeof(buf) - 1);
    CHECK(n > 0);
    buf[n] = 0;
    CHECK(strstr(buf, "envd") != NULL);
    sbx_destroy(sb);
    close(p[0]);
    close(p[1]);
}

SBX_TEST(boot_bzimage)
{
    sbx_options o = itest_options("test");
    o.kernel = itest_image("bzImage");
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    sbx_info info;
    sbx_get_info(sb, &info);
    CHECK(strncmp(info.kernel_release, "6.1.", 4) == 0);
    CHECK_OK(sb, sbx_ping(sb, 0));
    sbx_destroy(sb);
}

SBX_TEST(extra_disks)
{
    /* The test image again as /dev/vdb (read-only) and /dev/vdc (ephemeral): the guest boots
       with three virtio-blk devices, and the image files stay untouched. */
    sbx_disk disks[2] = {
        {.path = itest_image("test.ext4"), .read_only = 1, .serial = "data-ro"},
        {.path = itest_image("test.ext4"), .ephemeral = 1, .serial = "scratch"},
    };
    sbx_options o = itest_options("test");
    o.disks = disks;
    o.ndisks = 2;
    o.cmdline_extra = "loglevel=6"; /* so that the console names the disks */
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    static char con[65536];
    sbx_console(sb, con, sizeof(con));
    CHECK(strstr(con, "[vdb]") != NULL && strstr(con, "[vdc]") != NULL);
    CHECK(strstr(con, "virtio_blk virtio1: [vdb] 131072 512-byte logical blocks") != NULL);
    CHECK_OK(sb, sbx_ping(sb, 0));
    sbx_destroy(sb);

    disks[1].path = "/nonexistent/disk.img";
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EIMAGE);
    CHECK(strstr(sbx_errmsg(sb), "/nonexistent/disk.img") != NULL);
    sbx_destroy(sb);
}

ITEST_MAIN(ITEST(boot_test_rootfs), ITEST(boot_base_rootfs), ITEST(clean_shutdown),
           ITEST(smp_and_memory), ITEST(two_sandboxes), ITEST(ten_sandboxes),
           ITEST(interrupt_during_boot), ITEST(missing_kernel), ITEST(corrupt_kernel),
           ITEST(rootfs_not_ext4), ITEST(agent_never_answers), ITEST(console_sink),
           ITEST(boot_bzimage), ITEST(extra_disks), ITEST(parallel_threads),
           ITEST(guest_kernel_panic))
