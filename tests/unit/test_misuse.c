// SPDX-License-Identifier: Apache-2.0
/*
 * API misuse: every public call given a NULL handle, NULL pointers, huge sizes, unterminated
 * lists or nonsense values returns a clear error code (and, with a handle, a message) instead
 * of crashing or hanging. Calls that need a guest run against the real envd as a local
 * process (tests/unit/local_envd.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "local_envd.h"
#include "sandbox.h"

static int mismatches;

/* A call on `sb` must fail with `want` and leave a message; every mismatch is printed and the
   test fails at its end (so one run shows them all). */
#define EXPECT_ERR(sb, call, want)                                                                 \
    do {                                                                                           \
        int r_ = (call);                                                                           \
        if (r_ != (want)) {                                                                        \
            print_error("line %d: %s returned %d (%s), want %d\n", __LINE__, #call, r_,            \
                        sbx_strerror(r_), (want));                                                 \
            mismatches++;                                                                          \
        } else if ((sb) && sbx_errmsg(sb)[0] == '\0') {                                            \
            print_error("line %d: %s left no message\n", __LINE__, #call);                         \
            mismatches++;                                                                          \
        }                                                                                          \
    } while (0)

static void test_null_handles(void **state)
{
    (void)state;
    char buf[64];
    sbx_info info;
    sbx_metrics m;
    sbx_net_stats ns;
    sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
    eo.cmd = "true";
    sbx_exec_result er;
    sbx_proc *p = NULL;
    sbx_file *f = NULL;
    sbx_entry e;
    sbx_entry *es = NULL;
    size_t n = 0;
    sbx_watch *w = NULL;
    sbx_proc_info *pl = NULL;
    void *data = NULL;

    /* Handle-less accessors answer sensibly. */
    assert_non_null(sbx_errmsg(NULL));
    assert_int_equal(sbx_state(NULL), SBX_STATE_FAILED);
    assert_int_equal(sbx_console(NULL, buf, sizeof(buf)), 0);
    assert_null(sbx_metadata(NULL, "k"));
    assert_non_null(sbx_strerror(12345));
    assert_non_null(sbx_strerror(-12345));
    sbx_interrupt(NULL);
    sbx_destroy(NULL);

    EXPECT_ERR(NULL, sbx_create(NULL, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_get_info(NULL, &info), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_ping(NULL, 100), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_shutdown(NULL, 100), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_set_timeout(NULL, 1000), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_get_metrics(NULL, &m, 100), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_network_update(NULL, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_network_stats(NULL, &ns), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_exec(NULL, &eo, &er), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_start(NULL, &eo, &p), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_attach(NULL, 1, &p, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_kill(NULL, 1, 9, 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_list(NULL, &pl, &n), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_pty_open(NULL, 24, 80, NULL, &p), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_expose(NULL, 80, NULL, 0, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_get_host(NULL, 80, buf, sizeof(buf)), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_unexpose(NULL, 80), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_write_file(NULL, "/x", "a", 1, 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_read_file(NULL, "/x", &data, &n, 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_file_create(NULL, "/x", NULL, &f), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_file_open(NULL, "/x", 0, 0, &f, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_stat(NULL, "/x", &e), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_exists(NULL, "/x"), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_list(NULL, "/", 1, &es, &n), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_mkdir(NULL, "/x", 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_remove(NULL, "/x", 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_rename(NULL, "/x", "/y"), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_copy_in(NULL, "/tmp", "/x", NULL, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_copy_out(NULL, "/x", "/tmp/x", NULL, NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_watch_open(NULL, "/x", 0, &w), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_snapshot(NULL, "/tmp/x"), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_pause(NULL, "/tmp/x"), SBX_EINVAL);
    sbx *kids[1];
    EXPECT_ERR(NULL, sbx_fork(NULL, 1, NULL, kids), SBX_EINVAL);

    /* Sub-handles: NULL is refused or ignored. */
    int stream;
    EXPECT_ERR(NULL, sbx_proc_read(NULL, buf, sizeof(buf), &stream, 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_write(NULL, "a", 1), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_close_stdin(NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_signal(NULL, 9, 0), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_resize(NULL, 24, 80), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_wait(NULL, 0, &er), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_proc_fd(NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_file_write(NULL, "a", 1), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_file_commit(NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_file_read(NULL, buf, sizeof(buf)), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_watch_fd(NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_watch_next(NULL, NULL, 0), SBX_EINVAL);
    sbx_proc_close(NULL);
    sbx_file_close(NULL);
    sbx_watch_close(NULL);
    sbx_exec_result_free(NULL);
    sbx_entry_clear(NULL);
    sbx_entries_free(NULL, 3);
    sbx_proc_list_free(NULL, 3);
    sbx_listing_free(NULL, 3);
    sbx_template_list_free(NULL, 3);

    /* Handle-less calls with bad arguments. */
    EXPECT_ERR(NULL, sbx_resume(NULL, "/tmp/x", NULL), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_list_running(NULL, NULL), SBX_EINVAL);
    char err[128];
    EXPECT_ERR(NULL, sbx_template_build(NULL, NULL, err, sizeof(err)), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_template_remove(NULL, NULL, err, sizeof(err)), SBX_EINVAL);
    EXPECT_ERR(NULL, sbx_template_list(NULL, NULL, NULL, err, sizeof(err)), SBX_EINVAL);
}

static int setup(void **state)
{
    sbx *sb = NULL;
    if (local_envd_start(NULL, &sb) != 0)
        return -1;
    *state = sb;
    return 0;
}

static int teardown(void **state)
{
    local_envd_stop(*state);
    return 0;
}

static void test_bad_arguments(void **state)
{
    sbx *sb = *state;
    sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
    sbx_exec_result er;
    sbx_proc *p = NULL;
    size_t n;

    /* NULL out-parameters and options. */
    EXPECT_ERR(sb, sbx_get_info(sb, NULL), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_exec(sb, NULL, &er), SBX_EINVAL);
    eo.cmd = "true";
    EXPECT_ERR(sb, sbx_exec(sb, &eo, NULL), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_proc_start(sb, &eo, NULL), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_proc_list(sb, NULL, &n), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_read_file(sb, "/x", NULL, &n, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_stat(sb, "/", NULL), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_list(sb, "/", 1, NULL, &n), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_get_metrics(sb, NULL, 1000), SBX_EINVAL);

    /* NULL, empty and over-long paths; NUL-free but absurd names. */
    EXPECT_ERR(sb, sbx_write_file(sb, NULL, "a", 1, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_write_file(sb, "", "a", 1, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_write_file(sb, "/tmp/x", NULL, 1, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_mkdir(sb, NULL, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_remove(sb, "", 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_rename(sb, "/tmp/a", NULL), SBX_EINVAL);
    char *huge = malloc(1 << 20);
    memset(huge, 'a', (1 << 20) - 1);
    huge[0] = '/';
    huge[(1 << 20) - 1] = '\0';
    EXPECT_ERR(sb, sbx_stat(sb, huge, &(sbx_entry){0}), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_exists(sb, huge), SBX_EINVAL);
    free(huge);

    /* Exec options: neither or both of argv and cmd, a wrong version, an empty argv. */
    sbx_exec_options none = SBX_EXEC_OPTIONS_INIT;
    EXPECT_ERR(sb, sbx_exec(sb, &none, &er), SBX_EINVAL);
    const char *argv[] = {"true", NULL}, *empty[] = {NULL};
    sbx_exec_options both = SBX_EXEC_OPTIONS_INIT;
    both.argv = argv;
    both.cmd = "true";
    EXPECT_ERR(sb, sbx_exec(sb, &both, &er), SBX_EINVAL);
    sbx_exec_options noargs = SBX_EXEC_OPTIONS_INIT;
    noargs.argv = empty;
    EXPECT_ERR(sb, sbx_exec(sb, &noargs, &er), SBX_EINVAL);
    sbx_exec_options v0 = SBX_EXEC_OPTIONS_INIT;
    v0.version = 0;
    v0.cmd = "true";
    EXPECT_ERR(sb, sbx_exec(sb, &v0, &er), SBX_EINVAL);
    sbx_exec_options badenv = SBX_EXEC_OPTIONS_INIT;
    const char *envs[] = {"=nokey", NULL};
    badenv.cmd = "true";
    badenv.envs = envs;
    EXPECT_ERR(sb, sbx_exec(sb, &badenv, &er), SBX_EINVAL);
    sbx_exec_options pty0 = SBX_EXEC_OPTIONS_INIT;
    pty0.cmd = "true";
    EXPECT_ERR(sb, sbx_pty_open(sb, 0, 80, &pty0, &p), SBX_EINVAL);

    /* Nonsense values: pids, signals, ports, sizes. */
    EXPECT_ERR(sb, sbx_kill(sb, 0, 9, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_kill(sb, 1234567, 999, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_expose(sb, 0, NULL, 0, NULL), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_expose(sb, 70000, NULL, 0, NULL), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_expose(sb, 80, "not an address", 0, NULL), SBX_EINVAL);
    char small[2];
    EXPECT_ERR(sb, sbx_get_host(sb, 80, small, 0), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_get_host(sb, 0, small, sizeof(small)), SBX_EINVAL);
    EXPECT_ERR(sb, sbx_proc_attach(sb, 0, &p, NULL), SBX_EINVAL);

    /* The handle keeps working after all of that. */
    eo.cmd = "echo still-here";
    assert_int_equal(sbx_exec(sb, &eo, &er), 0);
    assert_string_equal(er.out, "still-here\n");
    sbx_exec_result_free(&er);
    assert_int_equal(mismatches, 0);
}

/* Paths are bytes resolved by the guest's kernel: `..` works as in any path (there is nothing
   to escape from: the whole guest is the sandbox), and names need not be UTF-8. */
static void test_path_semantics(void **state)
{
    sbx *sb = *state;
    char dir[64], path[128], *back = NULL;
    size_t len = 0;
    snprintf(dir, sizeof(dir), "/tmp/sbx-misuse-%d", (int)getpid());
    snprintf(path, sizeof(path), "%s/sub/../dotdot", dir);
    assert_int_equal(sbx_write_file(sb, path, "1", 1, 0), 0);
    snprintf(path, sizeof(path), "%s/dotdot", dir);
    assert_int_equal(sbx_exists(sb, path), 1);
    snprintf(path, sizeof(path), "%s/bytes-\xff\xfe", dir);
    assert_int_equal(sbx_write_file(sb, path, "22", 2, 0), 0);
    assert_int_equal(sbx_read_file(sb, path, (void **)&back, &len, 0), 0);
    assert_int_equal(len, 2);
    assert_memory_equal(back, "22", 2);
    free(back);
    sbx_entry *es = NULL;
    size_t n = 0;
    assert_int_equal(sbx_list(sb, dir, 1, &es, &n), 0);
    assert_int_equal(n, 3); /* sub, dotdot and the one with bytes */
    sbx_entries_free(es, n);
    assert_int_equal(sbx_remove(sb, dir, 1), 0);
    assert_int_equal(sbx_exists(sb, dir), 0);
}

/* Sub-handles still open when the sandbox is destroyed: their calls fail with SBX_EDEAD,
   closing them works, and the last close frees the sandbox (valgrind: nothing leaks). */
static void test_subhandles_outlive_destroy(void **state)
{
    (void)state;
    sbx *sb = NULL;
    assert_int_equal(local_envd_start(NULL, &sb), 0);
    sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
    eo.cmd = "sleep 30";
    sbx_proc *p = NULL;
    sbx_file *f = NULL;
    sbx_watch *w = NULL;
    assert_int_equal(sbx_proc_start(sb, &eo, &p), 0);
    char path[64];
    snprintf(path, sizeof(path), "/tmp/sbx-misuse-outlive-%d", (int)getpid());
    assert_int_equal(sbx_file_create(sb, path, NULL, &f), 0);
    assert_int_equal(sbx_watch_open(sb, "/tmp", 0, &w), 0);
    local_envd_stop(sb);
    char buf[16];
    int stream = 0;
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 1000), SBX_EDEAD);
    assert_int_equal(sbx_file_write(f, "x", 1), SBX_EDEAD);
    sbx_watch_event ev;
    assert_int_equal(sbx_watch_next(w, &ev, 1000), SBX_EDEAD);
    sbx_proc_close(p);
    sbx_watch_close(w);
    sbx_file_close(f); /* the last one: frees the sandbox too */
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_handles),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_semantics, setup, teardown),
        cmocka_unit_test(test_subhandles_outlive_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
