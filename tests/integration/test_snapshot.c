// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of snapshots: create from a snapshot, unique clones, pause and resume,
   fork, and damaged snapshot files. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static char *run(sbx *sb, const char *cmd)
{
    return itest_run(sb, "root", cmd);
}

static void expect(sbx *sb, const char *cmd, const char *want)
{
    itest_expect(sb, "root", cmd, want);
}

static long counter(sbx *sb)
{
    char *out = run(sb, "cat /tmp/count");
    long n = strtol(out, NULL, 10);
    free(out);
    return n;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A fresh directory path (not created) for a snapshot. */
static const char *snap_path(const char *name)
{
    static char buf[8][256];
    static unsigned n;
    char *p = buf[n++ % 8];
    const char *t = itest_tmpfile(name, "", 0);
    snprintf(p, 256, "%s.d", t);
    return p;
}

static sbx *boot_base(void)
{
    sbx_options o = itest_options("base");
    o.memory_mib = 256;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    /* A file, and a process that keeps counting: both must survive every restore. */
    /* The count is renamed into place, so a reader never sees the file truncated and empty. */
    run(sb, "echo hello > /root/kept && (i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; "
            "mv /tmp/count.new /tmp/count; sleep 0.1; done) >/dev/null 2>&1 & sleep 0.3");
    return sb;
}

/* Options for a sandbox made from the snapshot in `dir`. */
static sbx_options snap_options(const char *dir)
{
    sbx_options o = itest_options("base");
    o.rootfs = NULL;
    o.kernel = NULL;
    o.memory_mib = 0;
    o.vcpus = 0;
    o.template_name = dir;
    return o;
}

static sbx *from_snapshot(const char *dir)
{
    sbx_options o = snap_options(dir);
    sbx *sb = NULL;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_create(&sb, &o));
    fprintf(stderr, "created from %s in %.1f ms\n", dir, itest_ms() - t0);
    return sb;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

SBX_TEST(create_from_snapshot_and_unique_clones)
{
    sbx *sb = boot_base();
    const char *dir = snap_path("snap");
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_snapshot(sb, dir));
    fprintf(stderr, "snapshot written in %.0f ms\n", itest_ms() - t0);
    /* The original goes on. */
    CHECK_OK(sb, sbx_ping(sb, 5000));
    long before = counter(sb);
    sleep_ms(500);
    CHECK(counter(sb) > before);

    sleep_ms(2000); /* the clones' clocks must be corrected past the snapshot's time */
    sbx *a = from_snapshot(dir), *b = from_snapshot(dir);
    sbx *all[] = {a, b};
    char *uuid[2], *rnd[2];
    for (int i = 0; i < 2; i++) {
        expect(all[i], "cat /root/kept", "hello\n");
        long c = counter(all[i]);
        sleep_ms(500);
        CHECK(counter(all[i]) > c); /* the counter process runs in the clone */
        char *date = run(all[i], "date +%s");
        int64_t d = strtoll(date, NULL, 10);
        free(date);
        CHECK(d >= now_s() - 2 && d <= now_s() + 2);
        uuid[i] = run(all[i], "cat /proc/sys/kernel/random/uuid");
        rnd[i] = run(all[i], "python3 -c 'import random; print(random.getrandbits(64))'");
    }
    fprintf(stderr, "uuids %s %s", uuid[0], uuid[1]);
    CHECK(strcmp(uuid[0], uuid[1]) != 0);
    CHECK(strcmp(rnd[0], rnd[1]) != 0);
    /* Independent disks. */
    run(a, "echo a > /root/mine");
    expect(b, "cat /root/mine 2>/dev/null || echo none", "none\n");
    expect(sb, "cat /root/mine 2>/dev/null || echo none", "none\n");
    /* A named snapshot goes to the template store and is listed there. */
    char store[300];
    snprintf(store, sizeof(store), "%s.store", snap_path("named"));
    setenv("SBX_TEMPLATE_DIR", store, 1);
    run(a, "echo named > /root/named");
    CHECK_OK(a, sbx_snapshot(a, "named-snap"));
    sbx_template_info *list = NULL;
    size_t n = 0;
    char err[1024];
    CHECK(sbx_template_list(NULL, &list, &n, err, sizeof(err)) == 0);
    CHECK(n == 1 && list[0].is_snapshot && strcmp(list[0].name, "named-snap") == 0);
    sbx_template_list_free(list, n);
    sbx *c = from_snapshot("named-snap");
    expect(c, "cat /root/named /root/kept", "named\nhello\n");
    sbx_destroy(c);
    CHECK_RC(a, sbx_snapshot(a, "Bad Name"), SBX_EINVAL);
    /* Distinct ids, in the guest too. */
    sbx_info ia, ib;
    sbx_get_info(a, &ia);
    sbx_get_info(b, &ib);
    CHECK(strcmp(ia.id, ib.id) != 0);
    char *gid = run(a, "echo $SBX_SANDBOX_ID");
    CHECK(strncmp(gid, ia.id, strlen(ia.id)) == 0);
    free(gid);
    for (int i = 0; i < 2; i++) {
        free(uuid[i]);
        free(rnd[i]);
        sbx_destroy(all[i]);
    }
    sbx_destroy(sb);
}

SBX_TEST(pause_resume_cycles)
{
    sbx *sb = boot_base();
    sbx_info info;
    sbx_get_info(sb, &info);
    char id[32];
    snprintf(id, sizeof(id), "%s", info.id);
    long last = 0;
    unsigned cycles =
        getenv("SBX_TEST_PAUSE_CYCLES") ? (unsigned)atoi(getenv("SBX_TEST_PAUSE_CYCLES")) : 20;
    for (unsigned i = 0; i < cycles; i++) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "echo %u > /root/cycle-%u", i, i);
        run(sb, cmd);
        const char *dir = snap_path("pause");
        double t0 = itest_ms();
        CHECK_OK(sb, sbx_pause(sb, dir));
        double t1 = itest_ms();
        CHECK(sbx_state(sb) == SBX_STATE_PAUSED);
        CHECK_RC(sb, sbx_ping(sb, 1000), SBX_ESTATE);
        sbx_destroy(sb);
        sb = NULL;
        CHECK_OK(sb, sbx_resume(&sb, dir, NULL));
        fprintf(stderr, "cycle %u: pause %.0f ms, resume %.0f ms\n", i, t1 - t0, itest_ms() - t1);
        struct stat st;
        CHECK(stat(dir, &st) < 0); /* consumed */
        sbx_get_info(sb, &info);
        CHECK(strcmp(info.id, id) == 0);
        long c = counter(sb);
        CHECK(c >= last);
        last = c;
    }
    /* Every file written between cycles is there; the counter still counts. */
    for (unsigned i = 0; i < cycles; i++) {
        char cmd[64], want[16];
        snprintf(cmd, sizeof(cmd), "cat /root/cycle-%u", i);
        snprintf(want, sizeof(want), "%u\n", i);
        expect(sb, cmd, want);
    }
    expect(sb, "cat /root/kept", "hello\n");
    sleep_ms(500);
    CHECK(counter(sb) > last);
    sbx_destroy(sb);
}

SBX_TEST(fork_copies)
{
    sbx *sb = boot_base();
    run(sb, "echo parent > /root/who");
    sbx *kids[3];
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_fork(sb, 3, NULL, kids));
    fprintf(stderr, "fork of 3 in %.0f ms\n", itest_ms() - t0);
    for (int i = 0; i < 3; i++) {
        expect(kids[i], "cat /root/who", "parent\n");
        char cmd[64], want[16];
        snprintf(cmd, sizeof(cmd), "echo kid%d > /root/who", i);
        run(kids[i], cmd);
        snprintf(want, sizeof(want), "kid%d\n", i);
        expect(kids[i], "cat /root/who", want);
        long c = counter(kids[i]);
        sleep_ms(300);
        CHECK(counter(kids[i]) > c);
    }
    expect(sb, "cat /root/who", "parent\n");
    for (int i = 0; i < 3; i++)
        sbx_destroy(kids[i]);
    /* Bad arguments. */
    CHECK_RC(sb, sbx_fork(sb, 0, NULL, kids), SBX_EINVAL);
    sbx_destroy(sb);
}

/* Copies a snapshot directory's files to a new directory. */
static void copy_snapshot(const char *from, const char *to)
{
    CHECK(mkdir(to, 0700) == 0);
    const char *files[] = {"state", "memory", "disk.diff"};
    for (int i = 0; i < 3; i++) {
        char a[512], b[512];
        snprintf(a, sizeof(a), "%s/%s", from, files[i]);
        snprintf(b, sizeof(b), "%s/%s", to, files[i]);
        char cmd[1200];
        snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", a, b);
        CHECK(system(cmd) == 0);
    }
}

static void expect_bad(const char *dir, int code, const char *needle)
{
    sbx_options o = snap_options(dir);
    sbx *sb = NULL;
    int r = sbx_create(&sb, &o);
    fprintf(stderr, "%s: %d %s\n", dir, r, sbx_errmsg(sb));
    CHECK(r == code);
    CHECK(strstr(sbx_errmsg(sb), needle) != NULL);
    sbx_destroy(sb);
}

static void patch(const char *dir, const char *file, long off, int whence, const void *b, size_t n)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    int fd = open(p, O_RDWR);
    CHECK(fd >= 0);
    off_t at = lseek(fd, off, whence);
    CHECK(at >= 0);
    CHECK(pwrite(fd, b, n, at) == (ssize_t)n);
    close(fd);
}

static void cut(const char *dir, const char *file, long by)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    struct stat st;
    CHECK(stat(p, &st) == 0);
    CHECK(truncate(p, st.st_size - by) == 0);
}

SBX_TEST(damaged_snapshots_are_refused)
{
    sbx *sb = boot_base();
    const char *good = snap_path("good");
    CHECK_OK(sb, sbx_snapshot(sb, good));
    sbx_destroy(sb);

    const char *d = snap_path("flip");
    copy_snapshot(good, d);
    uint8_t x = 0x5a;
    patch(d, "state", 200, SEEK_SET, &x, 1);
    expect_bad(d, SBX_EIMAGE, "checksum");

    d = snap_path("magic");
    copy_snapshot(good, d);
    patch(d, "state", 0, SEEK_SET, "XXXX", 4);
    expect_bad(d, SBX_EIMAGE, "not a snapshot");

    d = snap_path("short");
    copy_snapshot(good, d);
    cut(d, "state", 100);
    expect_bad(d, SBX_EIMAGE, "truncated");

    d = snap_path("memcut");
    copy_snapshot(good, d);
    cut(d, "memory", 4096);
    expect_bad(d, SBX_EIMAGE, "memory file");

    d = snap_path("diskcut");
    copy_snapshot(good, d);
    cut(d, "disk.diff", 1);
    expect_bad(d, SBX_EIMAGE, "disk layer");

    d = snap_path("diskflip");
    copy_snapshot(good, d);
    patch(d, "disk.diff", -8, SEEK_END, "XXXXXXXX", 8);
    expect_bad(d, SBX_EIMAGE, "disk layer");

    d = snap_path("missing");
    expect_bad(d, SBX_ENOENT, "state file");

    /* The intact copy still works. */
    sbx *ok = from_snapshot(good);
    expect(ok, "cat /root/kept", "hello\n");
    sbx_destroy(ok);
}

ITEST_MAIN(ITEST(create_from_snapshot_and_unique_clones), ITEST(pause_resume_cycles),
           ITEST(fork_copies), ITEST(damaged_snapshots_are_refused))
