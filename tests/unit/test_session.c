// SPDX-License-Identifier: Apache-2.0
/* Unit tests of sandbox-wide calls (metadata, metrics, errors per thread, interrupts, the
   connection pool) through the public API against the real envd running locally. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "local_envd.h"
#include "sandbox.h"

static void test_ping_metrics_metadata(void **state)
{
    const char *meta[] = {"owner=alice", "purpose=test", NULL};
    sbx_options o = SBX_OPTIONS_INIT;
    o.metadata = meta;
    sbx *sb;
    assert_int_equal(local_envd_start(&o, &sb), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(sbx_ping(sb, 5000), 0);
    assert_string_equal(sbx_metadata(sb, "owner"), "alice");
    assert_string_equal(sbx_metadata(sb, "purpose"), "test");
    assert_null(sbx_metadata(sb, "nope"));
    const char *k, *v;
    assert_int_equal(sbx_metadata_at(sb, 1, &k, &v), 0);
    assert_string_equal(k, "purpose");
    assert_string_equal(v, "test");
    assert_int_equal(sbx_metadata_at(sb, 2, &k, &v), SBX_ENOENT);
    sbx_metrics m;
    assert_int_equal(sbx_get_metrics(sb, &m, 5000), 0);
    assert_true(m.cpus >= 1);
    assert_true(m.mem_total_kib > 1024);
    assert_true(m.mem_available_kib <= m.mem_total_kib);
    assert_true(m.cpu_total_ms >= m.cpu_busy_ms);
    assert_true(m.disk_total_bytes > 0);
    assert_true(m.processes >= 1);
    sbx_info info;
    assert_int_equal(sbx_get_info(sb, &info), 0);
    assert_int_equal(info.state, SBX_STATE_RUNNING);
    assert_true(info.created_ns > 1600000000ull * 1000000000ull);
    assert_int_equal(info.ends_ns, 0);
    local_envd_stop(sb);
}

static void test_bad_options(void **state)
{
    const char *dup[] = {"a=1", "a=2", NULL};
    const char *noeq[] = {"novalue", NULL};
    sbx_options o = SBX_OPTIONS_INIT;
    sbx *sb;
    o.metadata = dup;
    assert_int_equal(local_envd_start(&o, &sb), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "given twice"));
    local_envd_stop(sb);
    o.metadata = NULL;
    o.envs = noeq;
    assert_int_equal(local_envd_start(&o, &sb), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "options.envs[0]"));
    local_envd_stop(sb);
    o.envs = NULL;
    o.default_user = "no-such-user-here";
    assert_int_equal(local_envd_start(&o, &sb), SBX_ENOENT);
    assert_non_null(strstr(sbx_errmsg(sb), "no such user"));
    local_envd_stop(sb);
}

struct pinger {
    sbx *sb;
    int fails;
};

static void *ping_many(void *arg)
{
    struct pinger *p = arg;
    for (int i = 0; i < 200; i++)
        if (sbx_ping(p->sb, 5000) != 0)
            p->fails++;
    return NULL;
}

static void test_threads(void **state)
{
    sbx *sb;
    assert_int_equal(local_envd_start(NULL, &sb), 0);
    pthread_t t[6];
    struct pinger p[6];
    for (int i = 0; i < 6; i++) {
        p[i] = (struct pinger){sb, 0};
        assert_int_equal(pthread_create(&t[i], NULL, ping_many, &p[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(p[i].fails, 0);
    }
    local_envd_stop(sb);
}

/* Errors are per thread: a failure in one thread does not overwrite another's message. */
static void *fail_in_thread(void *arg)
{
    sbx *sb = arg;
    sbx_metrics *null = NULL;
    sbx_get_metrics(sb, null, 1000);
    return strstr(sbx_errmsg(sb), "NULL output") ? sb : NULL;
}

static void test_errmsg_per_thread(void **state)
{
    sbx *sb;
    assert_int_equal(local_envd_start(NULL, &sb), 0);
    assert_int_equal(sbx_set_timeout(sb, 1000), SBX_ENOTSUP); /* no VM: no lifetime timer */
    const char *mine = sbx_errmsg(sb);
    assert_non_null(strstr(mine, "lifetime timer"));
    pthread_t t;
    void *ok;
    pthread_create(&t, NULL, fail_in_thread, sb);
    pthread_join(t, &ok);
    assert_ptr_equal(ok, sb);
    assert_non_null(strstr(sbx_errmsg(sb), "lifetime timer"));
    local_envd_stop(sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ping_metrics_metadata),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_errmsg_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
