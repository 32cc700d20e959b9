// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of the sandbox lifecycle: lifetime, metadata, metrics, the registry,
   sandbox-wide settings, and a guest that dies under pending calls. */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

double itest_ms(void);

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

SBX_TEST(lifetime)
{
    /* Expires on its own; the end time is reported; later calls fail with SBX_EDEAD. */
    sbx_options o = itest_options("test");
    o.lifetime_ms = 2000;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    sbx_info info;
    CHECK_OK(sb, sbx_get_info(sb, &info));
    CHECK(info.ends_ns > info.created_ns);
    /* Extended: still alive after the original end. */
    CHECK_OK(sb, sbx_set_timeout(sb, 60000));
    sleep_ms(3000);
    CHECK_OK(sb, sbx_ping(sb, 0));
    /* Shortened: gone soon after. */
    CHECK_OK(sb, sbx_set_timeout(sb, 300));
    double t0 = itest_ms();
    while (sbx_state(sb) == SBX_STATE_RUNNING && itest_ms() - t0 < 10000)
        sleep_ms(50);
    fprintf(stderr, "stopped %.0f ms after a 300 ms timeout\n", itest_ms() - t0);
    CHECK(sbx_state(sb) == SBX_STATE_STOPPED);
    CHECK_RC(sb, sbx_ping(sb, 1000), SBX_EDEAD);
    CHECK(strstr(sbx_errmsg(sb), "lifetime expired") != NULL);
    CHECK_RC(sb, sbx_set_timeout(sb, 1000), SBX_EDEAD);
    /* No limit: ends_ns 0. */
    sbx_destroy(sb);
    o.lifetime_ms = 0;
    CHECK_OK(sb, sbx_create(&sb, &o));
    CHECK_OK(sb, sbx_get_info(sb, &info));
    CHECK(info.ends_ns == 0);
    sbx_destroy(sb);
}

SBX_TEST(info_metadata_metrics_registry)
{
    const char *meta[] = {"user=alice", "job=42", NULL};
    sbx_options o = itest_options("test");
    o.metadata = meta;
    o.memory_mib = 256;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    sbx_info info;
    CHECK_OK(sb, sbx_get_info(sb, &info));
    CHECK(info.state == SBX_STATE_RUNNING);
    for (const char *p = info.id; *p; p++)
        CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'));
    CHECK(strcmp(sbx_metadata(sb, "job"), "42") == 0);
    sbx_metrics m, m2;
    CHECK_OK(sb, sbx_get_metrics(sb, &m, 0));
    fprintf(stderr,
            "uptime %llu ms, cpu %llu/%llu ms, mem %llu/%llu KiB, disk %llu/%llu, %u procs\n",
            (unsigned long long)m.uptime_ms, (unsigned long long)m.cpu_busy_ms,
            (unsigned long long)m.cpu_total_ms, (unsigned long long)m.mem_available_kib,
            (unsigned long long)m.mem_total_kib, (unsigned long long)m.disk_used_bytes,
            (unsigned long long)m.disk_total_bytes, m.processes);
    CHECK(m.cpus == 1);
    CHECK(m.mem_total_kib > 150 * 1024 && m.mem_total_kib <= 256 * 1024);
    CHECK(m.mem_available_kib > 0 && m.mem_available_kib < m.mem_total_kib);
    CHECK(m.disk_total_bytes > m.disk_used_bytes && m.disk_used_bytes > 0);
    CHECK(m.processes >= 1 && m.uptime_ms > 0);
    sleep_ms(200);
    CHECK_OK(sb, sbx_get_metrics(sb, &m2, 0));
    CHECK(m2.uptime_ms > m.uptime_ms && m2.cpu_total_ms >= m.cpu_total_ms);
    /* Listed in the registry with our pid and metadata, and gone after destroy. */
    sbx_listing *l;
    size_t n, found = 0;
    CHECK(sbx_list_running(&l, &n) == 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i].id, info.id) == 0) {
            found++;
            CHECK(l[i].pid == (int)getpid());
            CHECK(l[i].memory_mib == 256);
            CHECK(l[i].metadata && strcmp(l[i].metadata[0], "user=alice") == 0);
            CHECK(strstr(l[i].rootfs, "test.ext4") != NULL);
        }
    sbx_listing_free(l, n);
    CHECK(found == 1);
    sbx_destroy(sb);
    CHECK(sbx_list_running(&l, &n) == 0);
    for (size_t i = 0; i < n; i++)
        CHECK(strcmp(l[i].id, info.id) != 0);
    sbx_listing_free(l, n);
}

SBX_TEST(envs_and_default_user)
{
    const char *envs[] = {"FOO=sandbox", "BAR=sandbox", NULL};
    sbx_options o = itest_options("base");
    o.envs = envs;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    const char *per_call[] = {"BAR=call", NULL};
    sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
    x.cmd = "echo $FOO $BAR $(id -un) $HOME $PWD";
    x.envs = per_call;
    sbx_exec_result res;
    CHECK_OK(sb, sbx_exec(sb, &x, &res));
    fprintf(stderr, "out: %s", res.out);
    CHECK(res.exit_code == 0);
    CHECK(strcmp(res.out, "sandbox call user /home/user /home/user\n") == 0);
    sbx_exec_result_free(&res);
    sbx_destroy(sb);
    /* Another default user; an unknown one fails creation clearly. */
    o.default_user = "root";
    CHECK_OK(sb, sbx_create(&sb, &o));
    x.cmd = "id -u";
    x.envs = NULL;
    CHECK_OK(sb, sbx_exec(sb, &x, &res));
    CHECK(strcmp(res.out, "0\n") == 0);
    sbx_exec_result_free(&res);
    sbx_destroy(sb);
    o.default_user = "nobody-like-this";
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_ENOENT);
    CHECK(strstr(sbx_errmsg(sb), "nobody-like-this") != NULL);
    sbx_destroy(sb);
}

SBX_TEST(dead_guest_fails_pending_calls)
{
    /* The guest kernel panics while a call waits for a command: that call and every later
       one fail quickly with SBX_EDEAD, the reason and the console lines. */
    sbx_options o = itest_options("test");
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    struct itest_pending p;
    itest_pending_exec(&p, sb);
    sleep_ms(1000);
    sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
    /* Out of memory with panic_on_oom: a kernel panic from inside, no special kernel option
       needed. tmpfs pages cannot be reclaimed, so filling an unbounded tmpfs exhausts RAM. */
    x.cmd = "echo 1 > /proc/sys/vm/panic_on_oom && mkdir -p /fill && "
            "mount -t tmpfs -o size=4G fill /fill && cat /dev/zero > /fill/zeros";
    x.user = "0";
    sbx_exec_result res;
    double t0 = itest_ms();
    int r = sbx_exec(sb, &x, &res);
    fprintf(stderr, "crash call: %d after %.0f ms: %s\n", r, itest_ms() - t0, sbx_errmsg(sb));
    if (r == 0)
        fprintf(stderr, "the command ended instead: exit %d, stderr: %s\n", res.exit_code,
                res.err ? res.err : "");
    sbx_exec_result_free(&res);
    CHECK_RC(sb, r, SBX_EDEAD);
    itest_pending_join(&p);
    fprintf(stderr, "pending call: %d after %.0f ms\n", p.rc, p.returned_ms - t0);
    CHECK(p.rc == SBX_EDEAD);
    CHECK(strstr(sbx_errmsg(sb), "panic") != NULL);
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    t0 = itest_ms();
    CHECK_RC(sb, sbx_ping(sb, 5000), SBX_EDEAD);
    CHECK(itest_ms() - t0 < 100);
    sbx_destroy(sb);
}

ITEST_MAIN(ITEST(lifetime), ITEST(info_metadata_metrics_registry), ITEST(envs_and_default_user),
           ITEST(dead_guest_fails_pending_calls))
