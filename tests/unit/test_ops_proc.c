// SPDX-License-Identifier: Apache-2.0
/* Unit tests of commands, background processes and PTYs through the public API against the
   real envd running locally (processes run on this machine as the calling user). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/conn.h"
#include "local_envd.h"
#include "../common/pty_wait.h"
#include "sandbox.h"

static const char *const sandbox_envs[] = {"SBX_A=sandbox", "SBX_B=sandbox", NULL};

static int setup(void **state)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.envs = sandbox_envs;
    sbx *sb = NULL;
    if (local_envd_start(&o, &sb) != 0) {
        fprintf(stderr, "setup failed: %s\n", sb ? sbx_errmsg(sb) : "no handle");
        return -1;
    }
    *state = sb;
    return 0;
}

static int teardown(void **state)
{
    local_envd_stop(*state);
    return 0;
}

static double ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs argv; asserts that the call itself worked. */
static sbx_exec_result run_argv(sbx *sb, const char *const *argv)
{
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.argv = argv;
    sbx_exec_result res;
    int r = sbx_exec(sb, &o, &res);
    if (r)
        fail_msg("sbx_exec %s: %d %s", argv[0], r, sbx_errmsg(sb));
    return res;
}

static sbx_exec_result run_sh(sbx *sb, const char *script)
{
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    return run_argv(sb, argv);
}

/* A process is gone when it does not exist or is a zombie waiting for its (new) parent. */
static bool pid_gone(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

static bool wait_gone(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (pid_gone(pid))
            return true;
        sleep_ms(10);
    }
    return pid_gone(pid);
}

/* --- sbx_exec ------------------------------------------------------------------------------ */

static void test_exit_codes(void **state)
{
    sbx *sb = *state;
    sbx_exec_result res = run_sh(sb, "exit 3");
    assert_int_equal(res.exit_code, 3);
    assert_int_equal(res.signal, 0);
    assert_true(res.pid > 0);
    sbx_exec_result_free(&res);

    const char *t[] = {"true", NULL};
    res = run_argv(sb, t);
    assert_int_equal(res.exit_code, 0);
    assert_null(res.out);
    assert_null(res.err);
    sbx_exec_result_free(&res);

    /* Killed by a signal. */
    res = run_sh(sb, "kill -TERM $$");
    assert_int_equal(res.exit_code, -1);
    assert_int_equal(res.signal, SIGTERM);
    assert_false(res.timed_out);
    sbx_exec_result_free(&res);

    /* Not found: 127 with a message, like a shell. */
    const char *nf[] = {"sbx-no-such-command", "x", NULL};
    res = run_argv(sb, nf);
    assert_int_equal(res.exit_code, 127);
    assert_non_null(res.err);
    assert_non_null(strstr(res.err, "sbx-no-such-command: command not found"));
    sbx_exec_result_free(&res);
    const char *nf2[] = {"/nonexistent/prog", NULL};
    res = run_argv(sb, nf2);
    assert_int_equal(res.exit_code, 127);
    sbx_exec_result_free(&res);

    /* Not executable: 126. */
    char path[] = "/tmp/sbx-proc-noexec.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/bin/sh\necho hi\n", 18), 18);
    close(fd);
    chmod(path, 0644);
    const char *ne[] = {path, NULL};
    res = run_argv(sb, ne);
    assert_int_equal(res.exit_code, 126);
    assert_non_null(res.err);
    assert_non_null(strstr(res.err, "Permission denied"));
    sbx_exec_result_free(&res);
    unlink(path);

    /* A shell string. */
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "echo \"$((6 * 7))\"; echo oops >&2; exit 5";
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 5);
    assert_string_equal(res.out, "42\n");
    assert_int_equal(res.out_len, 3);
    assert_string_equal(res.err, "oops\n");
    assert_true(res.duration_ms < 10000);
    sbx_exec_result_free(&res);
}

static void test_env_cwd_user(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"/bin/sh", "-c",
                          "echo \"$SBX_A|$SBX_B|$SBX_C|$PATH|$TERM\"; pwd; echo \"$HOME|$USER\"",
                          NULL};
    const char *envs[] = {"SBX_B=call", "SBX_C=1", "SBX_C=2", NULL};
    o.argv = argv;
    o.envs = envs;
    sbx_exec_result res;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    struct passwd *pw = getpwuid(getuid());
    assert_non_null(pw);
    char want[1024];
    struct stat st;
    const char *home = stat(pw->pw_dir, &st) == 0 && S_ISDIR(st.st_mode) ? pw->pw_dir : "/";
    snprintf(want, sizeof(want),
             "sandbox|call|2|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|\n"
             "%s\n%s|%s\n",
             home, pw->pw_dir, pw->pw_name);
    assert_string_equal(res.out, want);
    sbx_exec_result_free(&res);

    /* A per-call PATH wins too. */
    const char *penv[] = {"PATH=/sbx-nowhere", NULL};
    const char *pargv[] = {"true", NULL};
    o.argv = pargv;
    o.envs = penv;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 127);
    sbx_exec_result_free(&res);
    o.envs = NULL;

    /* cwd */
    const char *pwd[] = {"pwd", NULL};
    o.argv = pwd;
    o.cwd = "/tmp";
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_string_equal(res.out, "/tmp\n");
    sbx_exec_result_free(&res);
    o.cwd = "/sbx-no-such-dir";
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_ENOENT);
    assert_non_null(strstr(sbx_errmsg(sb), "/sbx-no-such-dir"));
    assert_null(res.out);
    o.cwd = "/etc/passwd";
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_ENOTDIR);
    o.cwd = NULL;

    /* Users: itself by name and uid; others cannot be switched to without root. */
    const char *id[] = {"id", "-u", NULL};
    o.argv = id;
    char uid[32];
    snprintf(uid, sizeof(uid), "%u", (unsigned)getuid());
    o.user = uid;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    char wantuid[40];
    snprintf(wantuid, sizeof(wantuid), "%s\n", uid);
    assert_string_equal(res.out, wantuid);
    sbx_exec_result_free(&res);
    o.user = pw->pw_name;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_string_equal(res.out, wantuid);
    sbx_exec_result_free(&res);
    o.user = "sbx-no-such-user";
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_ENOENT);
    assert_non_null(strstr(sbx_errmsg(sb), "sbx-no-such-user"));
    if (getuid() != 0) {
        o.user = "0";
        assert_int_equal(sbx_exec(sb, &o, &res), SBX_EACCES);
    } else if (getpwnam("nobody")) {
        /* As root envd really switches: uid, gid and groups of the target user. */
        o.user = "nobody";
        const char *ids[] = {"sh", "-c", "id -u; id -G", NULL};
        o.argv = ids;
        assert_int_equal(sbx_exec(sb, &o, &res), 0);
        char w[64];
        snprintf(w, sizeof(w), "%u\n%u\n", (unsigned)getpwnam("nobody")->pw_uid,
                 (unsigned)getpwnam("nobody")->pw_gid);
        assert_string_equal(res.out, w);
        sbx_exec_result_free(&res);
        /* A cwd the user may not enter. */
        char dir[] = "/tmp/sbx-proc-priv.XXXXXX";
        assert_non_null(mkdtemp(dir));
        chmod(dir, 0700);
        o.cwd = dir;
        assert_int_equal(sbx_exec(sb, &o, &res), SBX_EACCES);
        rmdir(dir);
    }
}

static void test_invalid(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    sbx_exec_result res;
    sbx_proc *p = NULL;
    const char *argv[] = {"true", NULL};
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "neither"));
    o.argv = argv;
    o.cmd = "true";
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "both"));
    o.cmd = NULL;
    assert_int_equal(sbx_exec(sb, &o, NULL), SBX_EINVAL);
    assert_int_equal(sbx_exec(sb, NULL, &res), SBX_EINVAL);
    const char *empty[] = {NULL};
    o.argv = empty;
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_EINVAL);
    o.argv = argv;
    const char *badenv[] = {"NOEQUALS", NULL};
    o.envs = badenv;
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "KEY=VALUE"));
    o.envs = NULL;
    o.stdin_len = 5;
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_EINVAL);
    o.stdin_len = 0;
    o.pty_rows = 10;
    assert_int_equal(sbx_proc_start(sb, &o, &p), SBX_EINVAL);
    o.pty_rows = 0;
    sbx_exec_options v0 = {0};
    v0.argv = argv;
    assert_int_equal(sbx_exec(sb, &v0, &res), SBX_EINVAL);
    assert_int_equal(sbx_pty_open(sb, 0, 80, NULL, &p), SBX_EINVAL);
    assert_int_equal(sbx_pty_open(sb, 24, 1001, NULL, &p), SBX_EINVAL);
    assert_int_equal(sbx_pty_open(sb, 24, 80, NULL, NULL), SBX_EINVAL);
    assert_int_equal(sbx_proc_attach(sb, 0, &p, NULL), SBX_EINVAL);
    assert_int_equal(sbx_kill(sb, 1, 99, 0), SBX_EINVAL);
    assert_null(p);
    /* Unknown pids; envd itself is refused. */
    assert_int_equal(sbx_proc_attach(sb, 3000000000u, &p, NULL), SBX_EINVAL);
    assert_int_equal(sbx_proc_attach(sb, 4000000, &p, NULL), SBX_ENOENT);
    assert_int_equal(sbx_kill(sb, 4000000, SIGTERM, 0), SBX_ENOENT);
    assert_int_equal(sbx_kill(sb, 1, SIGTERM, 0), SBX_EACCES);
    /* The sandbox still works. */
    o.argv = argv;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 0);
}

static void test_stdin(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *cat[] = {"cat", NULL};
    o.argv = cat;
    o.stdin_data = "hello\n";
    o.stdin_len = 6;
    sbx_exec_result res;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_string_equal(res.out, "hello\n");
    sbx_exec_result_free(&res);

    /* Without stdin_data stdin is empty (EOF at once). */
    o.stdin_data = NULL;
    o.stdin_len = 0;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_null(res.out);

    /* Large input and large output at once: no deadlock, nothing lost. */
    size_t n = 8u << 20;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (unsigned char)(i * 7 + (i >> 13));
    o.stdin_data = big;
    o.stdin_len = n;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.out_len, n);
    assert_memory_equal(res.out, big, n);
    sbx_exec_result_free(&res);

    /* A process that stops reading early is not an error. */
    const char *head[] = {"head", "-c", "10", NULL};
    o.argv = head;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.out_len, 10);
    assert_memory_equal(res.out, big, 10);
    sbx_exec_result_free(&res);
    free(big);
}

static void test_binary_and_cap(void **state)
{
    sbx *sb = *state;
    sbx_exec_result res = run_sh(sb, "printf 'a\\000b\\377\\376c'; printf '\\000\\200' >&2");
    assert_int_equal(res.out_len, 6);
    assert_memory_equal(res.out,
                        "a\0b\xff\xfe"
                        "c",
                        6);
    assert_int_equal(res.err_len, 2);
    assert_memory_equal(res.err, "\0\x80", 2);
    assert_false(res.truncated);
    sbx_exec_result_free(&res);

    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"head", "-c", "5000", "/dev/zero", NULL};
    o.argv = argv;
    o.output_cap = 1000;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_true(res.truncated);
    assert_int_equal(res.out_len, 1000);
    sbx_exec_result_free(&res);
}

struct counter {
    uint64_t bytes[3];
    uint64_t calls;
};

static int count_cb(void *ctx, int stream, const void *data, size_t len)
{
    struct counter *c = ctx;
    if (stream == SBX_STDOUT || stream == SBX_STDERR)
        c->bytes[stream] += len;
    c->calls++;
    return 0;
}

static long maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_large_output(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"head", "-c", "104857600", "/dev/zero", NULL};
    o.argv = argv;
    struct counter cnt = {0};
    o.on_output = count_cb;
    o.ctx = &cnt;
    long before = maxrss_kib();
    double t0 = ms_now();
    sbx_exec_result res;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    double t = ms_now() - t0;
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(cnt.bytes[SBX_STDOUT], 104857600);
    assert_int_equal(cnt.bytes[SBX_STDERR], 0);
    assert_null(res.out);
    assert_false(res.truncated);
    /* Streamed, not accumulated (the peak grows by far less than the 100 MiB). */
    assert_true(maxrss_kib() - before < 32 * 1024);
    fprintf(stderr, "100 MiB streamed in %.0f ms (%llu callbacks)\n", t,
            (unsigned long long)cnt.calls);
}

struct lines {
    char *buf[3];
    size_t len[3];
};

static int collect_cb(void *ctx, int stream, const void *data, size_t len)
{
    struct lines *l = ctx;
    l->buf[stream] = realloc(l->buf[stream], l->len[stream] + len + 1);
    memcpy(l->buf[stream] + l->len[stream], data, len);
    l->len[stream] += len;
    l->buf[stream][l->len[stream]] = '\0';
    return 0;
}

static void test_interleaving(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "i=1; while [ $i -le 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    struct lines l = {0};
    o.on_output = collect_cb;
    o.ctx = &l;
    sbx_exec_result res;
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    assert_int_equal(res.exit_code, 0);
    const char *names[3] = {"", "out", "err"};
    for (int s = 1; s <= 2; s++) {
        assert_non_null(l.buf[s]);
        char *save = NULL, *line = strtok_r(l.buf[s], "\n", &save);
        for (int i = 1; i <= 2000; i++) {
            char want[32];
            snprintf(want, sizeof(want), "%s%d", names[s], i);
            assert_non_null(line);
            assert_string_equal(line, want);
            line = strtok_r(NULL, "\n", &save);
        }
        assert_null(line);
        free(l.buf[s]);
    }
}

static void test_timeout_kills_group(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    /* The shell and its child both ignore SIGTERM; the child's pid is printed first. */
    o.cmd = "trap '' TERM; sh -c 'trap \"\" TERM; sleep 60' & echo $!; sleep 60";
    /* Generous: `bash -l` reads the host user's profile, which may be slow under load. */
    o.timeout_ms = 2000;
    sbx_exec_result res;
    double t0 = ms_now();
    assert_int_equal(sbx_exec(sb, &o, &res), 0);
    double t = ms_now() - t0;
    assert_true(res.timed_out);
    assert_int_equal(res.signal, SIGKILL);
    assert_int_equal(res.exit_code, -1);
    assert_true(t >= 1950 && t < 8000);
    assert_non_null(res.out);
    pid_t child = (pid_t)atoi(res.out);
    assert_true(child > 0);
    assert_true(wait_gone(child, 3000));
    sbx_exec_result_free(&res);
}

static void test_background_grandchild(void **state)
{
    /* A background child keeping stdout open must not hold up the exit for long. */
    sbx *sb = *state;
    double t0 = ms_now();
    sbx_exec_result res = run_sh(sb, "sleep 3 & echo started");
    double t = ms_now() - t0;
    assert_int_equal(res.exit_code, 0);
    assert_string_equal(res.out, "started\n");
    assert_true(t < 2000);
    sbx_exec_result_free(&res);
}

struct stopper {
    pid_t pid;
};

static int stop_cb(void *ctx, int stream, const void *data, size_t len)
{
    struct stopper *s = ctx;
    char buf[32];
    size_t n = len < sizeof(buf) - 1 ? len : sizeof(buf) - 1;
    memcpy(buf, data, n);
    buf[n] = '\0';
    s->pid = (pid_t)atoi(buf);
    return 1;
}

static void test_callback_stop_kills(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"sh", "-c", "echo $$; exec sleep 60", NULL};
    o.argv = argv;
    struct stopper st = {0};
    o.on_output = stop_cb;
    o.ctx = &st;
    sbx_exec_result res;
    assert_int_equal(sbx_exec(sb, &o, &res), SBX_EINTR);
    assert_true(st.pid > 0);
    assert_true(wait_gone(st.pid, 3000));

    /* sbx_interrupt from another thread would do the same; here: the sandbox still works. */
    res = run_sh(sb, "echo fine");
    assert_string_equal(res.out, "fine\n");
    sbx_exec_result_free(&res);
}

/* --- background processes ------------------------------------------------------------------ */

/* Reads everything until EOF (0) into a malloc'd buffer. */
static char *read_all(sbx *sb, sbx_proc *p, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (cap - n < 4096) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        int stream;
        int r = sbx_proc_read(p, buf + n, cap - n, &stream, 10000);
        if (r == 0)
            break;
        if (r < 0)
            fail_msg("sbx_proc_read: %d %s", r, sbx_errmsg(sb));
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void test_background(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *cat[] = {"cat", NULL};
    o.argv = cat;
    o.keep_stdin = 1;
    o.stdin_data = "first ";
    o.stdin_len = 6;
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    assert_true(sbx_proc_pid(p) > 0);
    assert_true(sbx_proc_fd(p) >= 0);
    assert_int_equal(sbx_proc_write(p, "second", 6), 0);
    char buf[64];
    size_t got = 0;
    while (got < 12) {
        int stream = 0;
        int r = sbx_proc_read(p, buf + got, sizeof(buf) - got, &stream, 5000);
        assert_true(r > 0);
        assert_int_equal(stream, SBX_STDOUT);
        got += (size_t)r;
    }
    assert_memory_equal(buf, "first second", 12);
    /* Nothing more yet. */
    int stream;
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 0), SBX_EAGAIN);
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 50), SBX_ETIMEDOUT);
    assert_int_equal(sbx_proc_close_stdin(p), 0);
    assert_int_equal(sbx_proc_write(p, "x", 1), SBX_EINVAL);
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 5000), 0);
    sbx_exec_result res;
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_null(res.out);
    sbx_proc_close(p);

    /* Signals; wait with timeouts; output collected by wait. */
    const char *sl[] = {"sh", "-c", "echo ready; exec sleep 60", NULL};
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.argv = sl;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    assert_int_equal(sbx_proc_wait(p, 0, &res), SBX_ETIMEDOUT);
    assert_int_equal(sbx_proc_wait(p, 100, &res), SBX_ETIMEDOUT);
    assert_int_equal(sbx_proc_write(p, "x", 1), SBX_EINVAL); /* no stdin kept */
    assert_int_equal(sbx_proc_signal(p, SIGTERM, 0), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.signal, SIGTERM);
    assert_int_equal(res.exit_code, -1);
    assert_string_equal(res.out, "ready\n");
    sbx_exec_result_free(&res);
    /* Exited: signals now fail, reads say EOF, wait repeats the status. */
    assert_int_equal(sbx_proc_signal(p, SIGTERM, 0), SBX_ENOENT);
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 0), 0);
    assert_int_equal(sbx_proc_wait(p, 0, &res), 0);
    assert_int_equal(res.signal, SIGTERM);
    sbx_proc_close(p);

    /* A large write to a process that answers with as much output. */
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.argv = cat;
    o.keep_stdin = 1;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    size_t n = 3u << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    assert_int_equal(sbx_proc_write(p, big, n), 0);
    assert_int_equal(sbx_proc_close_stdin(p), 0);
    size_t len;
    char *all = read_all(sb, p, &len);
    assert_int_equal(len, n);
    assert_memory_equal(all, big, n);
    free(all);
    free(big);
    sbx_proc_close(p);
}

static void test_poll_fd(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "for i in 1 2 3; do echo line$i; sleep 0.05; done";
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    char all[256];
    size_t n = 0;
    bool eof = false;
    while (!eof) {
        struct pollfd pfd = {.fd = sbx_proc_fd(p), .events = POLLIN};
        assert_true(poll(&pfd, 1, 5000) == 1);
        /* Drain until EAGAIN: frames may already be buffered in the handle. */
        for (;;) {
            int stream;
            int r = sbx_proc_read(p, all + n, sizeof(all) - 1 - n, &stream, 0);
            if (r == SBX_EAGAIN)
                break;
            if (r == 0) {
                eof = true;
                break;
            }
            assert_true(r > 0);
            n += (size_t)r;
        }
    }
    all[n] = '\0';
    assert_string_equal(all, "line1\nline2\nline3\n");
    sbx_proc_close(p);

    /* Output already taken from the socket still makes the fd readable. */
    const char *argv[] = {"head", "-c", "300000", "/dev/zero", NULL};
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.argv = argv;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    struct pollfd pfd = {.fd = sbx_proc_fd(p), .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    int stream;
    size_t total = 0;
    for (;;) {
        assert_int_equal(sbx_proc_read(p, all, 10, &stream, 5000), 10);
        total += 10;
        /* Without waiting: the rest of that frame is buffered in the handle. */
        assert_int_equal(poll(&pfd, 1, 0), 1);
        if (total >= 100)
            break;
    }
    int r;
    while ((r = sbx_proc_read(p, all, sizeof(all), &stream, 5000)) > 0)
        total += (size_t)r;
    assert_int_equal(r, 0);
    assert_int_equal(total, 300000);
    /* Exited: readable, and reads say so at once. */
    assert_int_equal(poll(&pfd, 1, 0), 1);
    sbx_proc_close(p);
}

static bool list_find(sbx *sb, uint32_t pid, sbx_proc_info *out_copy, char *tag, size_t tagcap)
{
    sbx_proc_info *l;
    size_t n;
    assert_int_equal(sbx_proc_list(sb, &l, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (l[i].pid == pid) {
            *out_copy = l[i];
            snprintf(tag, tagcap, "%s|%s|%s", l[i].tag, l[i].argv[0] ? l[i].argv[0] : "", l[i].cwd);
            found = true;
        }
    sbx_proc_list_free(l, n);
    return found;
}

static void test_attach_and_list(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; exit 7", NULL};
    o.argv = argv;
    o.tag = "mytag";
    o.cwd = "/tmp";
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    uint32_t pid = sbx_proc_pid(p);
    sbx_proc_close(p); /* detached: goes on running */

    sbx_proc_info info;
    char desc[256];
    assert_true(list_find(sb, pid, &info, desc, sizeof(desc)));
    assert_true(info.running);
    assert_false(info.attached);
    assert_string_equal(desc, "mytag|sh|/tmp");

    sleep_ms(400);
    uint64_t dropped = 99;
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(sbx_proc_pid(p), pid);
    assert_true(list_find(sb, pid, &info, desc, sizeof(desc)));
    assert_true(info.attached);
    /* Takeover: a second handle takes the process from the first. */
    sbx_proc *p2;
    assert_int_equal(sbx_proc_attach(sb, pid, &p2, NULL), 0);
    char buf[64];
    int stream;
    int r;
    while ((r = sbx_proc_read(p, buf, sizeof(buf), &stream, 5000)) > 0)
        ;
    assert_int_equal(r, SBX_EBUSY);
    sbx_proc_close(p);
    /* The buffered output was delivered to the first attach already ("one"); the rest
       arrives at the second. */
    sbx_exec_result res;
    assert_int_equal(sbx_proc_wait(p2, 5000, &res), 0);
    assert_int_equal(res.exit_code, 7);
    sbx_proc_close(p2);
    sbx_exec_result_free(&res);

    /* Finished: still listed with its status, and attachable for the status. */
    assert_true(list_find(sb, pid, &info, desc, sizeof(desc)));
    assert_false(info.running);
    assert_int_equal(info.exit_code, 7);
    assert_int_equal(sbx_proc_attach(sb, pid, &p, NULL), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.exit_code, 7);
    sbx_proc_close(p);

    /* A late attach gets output written while detached, after the process ended. */
    const char *late[] = {"sh", "-c", "echo hello; echo world >&2", NULL};
    o.argv = late;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    pid = sbx_proc_pid(p);
    sbx_proc_close(p);
    sleep_ms(300);
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_string_equal(res.out, "hello\n");
    assert_string_equal(res.err, "world\n");
    sbx_exec_result_free(&res);
    sbx_proc_close(p);

    /* Detached output beyond 1 MiB: the oldest is dropped and counted. */
    const char *lots[] = {"head", "-c", "3000000", "/dev/zero", NULL};
    o.argv = lots;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    pid = sbx_proc_pid(p);
    sbx_proc_close(p);
    sleep_ms(500);
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    size_t len;
    char *all = read_all(sb, p, &len);
    free(all);
    /* About the newest 1 MiB is kept (whole reads; each costs 64 bytes of bookkeeping too);
       the first handle consumed nothing, so every other byte counts as dropped, including
       what envd had sent to it. */
    assert_true(len <= 1u << 20);
    assert_true(len >= (1u << 20) - (128u << 10));
    assert_int_equal(len + dropped, 3000000);
    sbx_proc_close(p);

    /* sbx_kill by pid, group. */
    const char *sl[] = {"sleep", "60", NULL};
    o.argv = sl;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    assert_int_equal(sbx_kill(sb, sbx_proc_pid(p), SIGKILL, 1), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.signal, SIGKILL);
    sbx_proc_close(p);
}

/* --- detaching without losing output ---------------------------------------------------- */

/* Reads until out and err hold want_out / want_err (or fails); records the order of streams
   as "O"/"E" per change of stream into seq. */
static void read_until(sbx *sb, sbx_proc *p, const char *want_out, const char *want_err, char *seq,
                       size_t seqcap)
{
    char out[256] = "", err[256] = "";
    size_t no = 0, ne = 0, ns = 0;
    int last = 0;
    while (strcmp(out, want_out) != 0 || strcmp(err, want_err) != 0) {
        char buf[64];
        int stream;
        int r = sbx_proc_read(p, buf, sizeof(buf), &stream, 5000);
        if (r <= 0)
            fail_msg("sbx_proc_read: %d %s (so far out \"%s\" err \"%s\")", r, sbx_errmsg(sb), out,
                     err);
        char *acc = stream == SBX_STDERR ? err : out;
        size_t *n = stream == SBX_STDERR ? &ne : &no;
        assert_true(*n + (size_t)r < 256);
        memcpy(acc + *n, buf, (size_t)r);
        *n += (size_t)r;
        acc[*n] = '\0';
        if (stream != last && ns + 1 < seqcap) {
            seq[ns++] = stream == SBX_STDERR ? 'E' : 'O';
            seq[ns] = '\0';
        }
        last = stream;
    }
}

static bool fd_readable(sbx_proc *p, int ms)
{
    struct pollfd pfd = {.fd = sbx_proc_fd(p), .events = POLLIN};
    return poll(&pfd, 1, ms) == 1;
}

/* A handle closed with output it had received but not handed out: the next attach gets
   exactly that output again, both streams, in order, nothing twice. */
static void test_detach_keeps_unread(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "printf o1; sleep 0.1; printf e1 >&2; sleep 0.1; printf o2; read x; "
            "printf e2 >&2; sleep 0.1; printf o3; read y; printf e3 >&2; exit 3";
    o.keep_stdin = 1;
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    uint32_t pid = sbx_proc_pid(p);
    char buf[64];
    int stream;
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 5000), 2);
    assert_memory_equal(buf, "o1", 2);
    assert_int_equal(stream, SBX_STDOUT);
    /* e1 and o2 reach the handle while the write waits for its acknowledgement, and e2 and
       o3 follow; none of it is read. */
    sleep_ms(400);
    assert_int_equal(sbx_proc_write(p, "x\n", 2), 0);
    sleep_ms(300);
    assert_true(fd_readable(p, 0));
    sbx_proc_close(p);

    uint64_t dropped = 99;
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    assert_int_equal(dropped, 0);
    char seq[16];
    read_until(sb, p, "o2o3", "e1e2", seq, sizeof(seq));
    assert_string_equal(seq, "EOEO");
    /* Close again having read part of it: nothing was pending, nothing comes twice. */
    sbx_proc_close(p);
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(sbx_proc_write(p, "y\n", 2), 0);
    sbx_exec_result res;
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.exit_code, 3);
    assert_null(res.out);
    assert_non_null(res.err);
    assert_string_equal(res.err, "e3");
    sbx_exec_result_free(&res);
    sbx_proc_close(p);

    /* Partly read: the rest of a frame the handle had split comes again, not the part read. */
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.cmd = "printf abcdef; printf XYZ >&2; sleep 5";
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    pid = sbx_proc_pid(p);
    assert_int_equal(sbx_proc_read(p, buf, 2, &stream, 5000), 2);
    assert_memory_equal(buf, "ab", 2);
    sleep_ms(200);
    sbx_proc_close(p);
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    read_until(sb, p, "cdef", "XYZ", seq, sizeof(seq));
    assert_int_equal(sbx_proc_signal(p, SIGKILL, 1), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_null(res.out);
    assert_null(res.err);
    sbx_proc_close(p);

    /* Finished before the handle saw the exit: envd had ended the attachment already and
       still takes the handle's ProcDetach. */
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.cmd = "printf hello; sleep 0.1; printf world >&2";
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    pid = sbx_proc_pid(p);
    assert_int_equal(sbx_proc_read(p, buf, 1, &stream, 5000), 1);
    assert_int_equal(buf[0], 'h');
    sbx_proc_info info;
    char desc[256];
    for (int i = 0; i < 500 && list_find(sb, pid, &info, desc, sizeof(desc)) && info.running; i++)
        sleep_ms(10);
    assert_false(info.running);
    sleep_ms(300);
    sbx_proc_close(p);
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    assert_int_equal(dropped, 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_non_null(res.out);
    assert_non_null(res.err);
    assert_string_equal(res.out, "ello");
    assert_string_equal(res.err, "world");
    sbx_exec_result_free(&res);
    sbx_proc_close(p);
    /* Read to the end and closed: a later attach has nothing more. */
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_null(res.out);
    assert_null(res.err);
    assert_int_equal(res.exit_code, 0);
    sbx_proc_close(p);
}

/* `seq 1 n` as text. */
static char *seq_text(unsigned n, size_t *len)
{
    size_t cap = (size_t)n * 8 + 16, off = 0;
    char *t = malloc(cap);
    for (unsigned i = 1; i <= n; i++)
        off += (size_t)snprintf(t + off, cap - off, "%u\n", i);
    *len = off;
    return t;
}

/* More than 1 MiB while detached: the newest is kept, every other byte not consumed is
   counted, and what is delivered is exactly the end of the output. */
static void test_detach_dropped(void **state)
{
    sbx *sb = *state;
    size_t tlen;
    char *text = seq_text(400000, &tlen); /* 2.7 MB */
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "seq 1 400000; sleep 0.3; printf tail >&2";
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    uint32_t pid = sbx_proc_pid(p);
    /* Consume a little, let more arrive unread, close. */
    char buf[1000];
    int stream;
    size_t consumed = 0;
    while (consumed < 1000) {
        int r = sbx_proc_read(p, buf, sizeof(buf) - consumed, &stream, 5000);
        assert_true(r > 0);
        assert_memory_equal(buf, text + consumed, (size_t)r);
        consumed += (size_t)r;
    }
    assert_true(fd_readable(p, 5000));
    sbx_proc_close(p);
    sleep_ms(800);
    uint64_t dropped = 0;
    assert_int_equal(sbx_proc_attach(sb, pid, &p, &dropped), 0);
    sbx_exec_result res;
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_true(res.out_len <= 1u << 20);
    assert_true(res.out_len >= (1u << 20) - (128u << 10));
    assert_int_equal(consumed + dropped + res.out_len, tlen);
    assert_memory_equal(res.out, text + tlen - res.out_len, res.out_len);
    assert_non_null(res.err);
    assert_string_equal(res.err, "tail");
    sbx_exec_result_free(&res);
    sbx_proc_close(p);
    free(text);
}

/* Raw frames on a connection of the sandbox's own pool (the library never sends these). */
static void raw_send(struct call *c, struct agent_conn *conn, Sbx__Agent__Frame *f)
{
    assert_int_equal(agent_conn_send(c, conn, f), 0);
}

static Sbx__Agent__Frame *raw_recv(struct call *c, struct agent_conn *conn)
{
    Sbx__Agent__Frame *f = NULL;
    int r = agent_conn_recv(c, conn, &f);
    if (r)
        fail_msg("agent_conn_recv: %d", r);
    return f;
}

static void raw_attach(struct call *c, struct agent_conn *conn, uint32_t id, uint32_t pid)
{
    Sbx__Agent__ProcAttach pa = SBX__AGENT__PROC_ATTACH__INIT;
    pa.pid = pid;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_ATTACH;
    f.proc_attach = &pa;
    raw_send(c, conn, &f);
    Sbx__Agent__Frame *r = raw_recv(c, conn);
    assert_int_equal(r->body_case, SBX__AGENT__FRAME__BODY_PROC_STARTED);
    frame_free(r);
}

static void raw_detach(struct call *c, struct agent_conn *conn, uint32_t id, uint64_t out,
                       uint64_t err)
{
    Sbx__Agent__ProcDetach d = SBX__AGENT__PROC_DETACH__INIT;
    d.stdout_consumed = out;
    d.stderr_consumed = err;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_DETACH;
    f.proc_detach = &d;
    raw_send(c, conn, &f);
}

/* The next frame is Error PROTOCOL and then the connection ends. */
static void expect_protocol_error(struct call *c, struct agent_conn *conn, const char *what)
{
    Sbx__Agent__Frame *r = raw_recv(c, conn);
    assert_int_equal(r->body_case, SBX__AGENT__FRAME__BODY_ERROR);
    assert_int_equal(r->error->code, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL);
    assert_non_null(strstr(r->error->message, what));
    frame_free(r);
    Sbx__Agent__Frame *f = NULL;
    assert_int_not_equal(agent_conn_recv(c, conn, &f), 0);
}

/* Reads one ProcOutput (with the given id) and checks its stream and bytes. */
static void raw_output(struct call *c, struct agent_conn *conn, uint32_t id, const char *want)
{
    Sbx__Agent__Frame *r = raw_recv(c, conn);
    assert_int_equal(r->id, id);
    assert_int_equal(r->body_case, SBX__AGENT__FRAME__BODY_PROC_OUTPUT);
    assert_int_equal(r->proc_output->data.len, strlen(want));
    assert_memory_equal(r->proc_output->data.data, want, strlen(want));
    frame_free(r);
}

/* envd checks ProcDetach: no more than it sent, only the attached process, only on an
   attached connection; a valid one moves where the next attach resumes. */
static void test_detach_protocol(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "printf abc; sleep 30";
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    uint32_t pid = sbx_proc_pid(p);
    char buf[8];
    int stream;
    assert_int_equal(sbx_proc_read(p, buf, sizeof(buf), &stream, 5000), 3);
    sbx_proc_close(p); /* consumed all: the next attach has nothing yet */

    struct call c;
    assert_int_equal(call_begin(sb, &c, 10000), 0);
    struct agent_conn *conn;

    /* Not attached. */
    assert_int_equal(agent_conn_get(&c, &conn), 0);
    raw_detach(&c, conn, 7, 0, 0);
    expect_protocol_error(&c, conn, "ProcDetach");
    agent_conn_put(sb, conn, false);

    /* Another id than the attachment's. */
    assert_int_equal(agent_conn_get(&c, &conn), 0);
    raw_attach(&c, conn, 5, pid);
    raw_detach(&c, conn, 6, 0, 0);
    expect_protocol_error(&c, conn, "ProcDetach");
    agent_conn_put(sb, conn, false);

    /* A start of another process elsewhere: output "xyz" to play with. */
    o.cmd = "printf xyz; printf 12 >&2; sleep 30";
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    uint32_t pid2 = sbx_proc_pid(p);
    sbx_proc_close(p); /* nothing consumed */
    sleep_ms(200);

    /* More than was sent. */
    assert_int_equal(agent_conn_get(&c, &conn), 0);
    raw_attach(&c, conn, 5, pid2);
    raw_output(&c, conn, 5, "xyz");
    raw_output(&c, conn, 5, "12");
    raw_detach(&c, conn, 5, 4, 0);
    expect_protocol_error(&c, conn, "consumed");
    agent_conn_put(sb, conn, false);
    /* That connection ended without a valid ProcDetach: resumed after what was sent. */
    assert_int_equal(agent_conn_get(&c, &conn), 0);
    raw_attach(&c, conn, 9, pid2);
    raw_detach(&c, conn, 9, 0, 1); /* nothing was sent on this one */
    expect_protocol_error(&c, conn, "consumed");
    agent_conn_put(sb, conn, false);
    call_end(&c);

    /* A valid one: 1 of 3 stdout bytes and none of stderr consumed. */
    o.cmd = "printf xyz; sleep 0.1; printf 12 >&2; sleep 30";
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    uint32_t pid3 = sbx_proc_pid(p);
    sbx_proc_close(p);
    sleep_ms(300);
    assert_int_equal(call_begin(sb, &c, 10000), 0);
    assert_int_equal(agent_conn_get(&c, &conn), 0);
    raw_attach(&c, conn, 3, pid3);
    raw_output(&c, conn, 3, "xyz");
    raw_output(&c, conn, 3, "12");
    raw_detach(&c, conn, 3, 1, 0);
    agent_conn_put(sb, conn, false);
    call_end(&c);
    uint64_t dropped = 9;
    assert_int_equal(sbx_proc_attach(sb, pid3, &p, &dropped), 0);
    assert_int_equal(dropped, 0);
    char seq[8];
    read_until(sb, p, "yz", "12", seq, sizeof(seq));
    assert_string_equal(seq, "OE");
    sbx_proc_close(p);

    assert_int_equal(sbx_kill(sb, pid, SIGKILL, 1), 0);
    assert_int_equal(sbx_kill(sb, pid2, SIGKILL, 1), 0);
    assert_int_equal(sbx_kill(sb, pid3, SIGKILL, 1), 0);
}

static void test_background_timeout(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *sl[] = {"sleep", "60", NULL};
    o.argv = sl;
    o.timeout_ms = 300;
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    sbx_exec_result res;
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_true(res.timed_out);
    assert_int_equal(res.signal, SIGKILL);
    sbx_proc_close(p);
}

static void test_limits(void **state)
{
    sbx *sb = *state;
    /* A long argv is kept whole for the process but shortened in the list. */
    size_t big = 100000;
    char *arg = malloc(big + 1);
    memset(arg, 'x', big);
    arg[big] = '\0';
    const char *argv[] = {"sh", "-c", "echo ${#1}; exec sleep 30", "sh", arg, NULL};
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.argv = argv;
    sbx_proc *p;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    char buf[64];
    int stream;
    int r = sbx_proc_read(p, buf, sizeof(buf) - 1, &stream, 5000);
    assert_true(r > 0);
    buf[r] = '\0';
    assert_string_equal(buf, "100000\n");
    sbx_proc_info *l;
    size_t n;
    assert_int_equal(sbx_proc_list(sb, &l, &n), 0);
    assert_int_equal(n, 1);
    size_t total = 0;
    for (size_t i = 0; l[0].argv[i]; i++)
        total += strlen(l[0].argv[i]) + 1;
    assert_true(total <= 4096 && total > 4000);
    assert_string_equal(l[0].argv[2], "echo ${#1}; exec sleep 30");
    sbx_proc_list_free(l, n);
    assert_int_equal(sbx_proc_signal(p, SIGKILL, 0), 0);
    sbx_proc_close(p);
    free(arg);

    /* At most 256 running processes. */
    const char *sl[] = {"sleep", "30", NULL};
    o.argv = sl;
    uint32_t pids[256];
    for (int i = 0; i < 256; i++) {
        r = sbx_proc_start(sb, &o, &p);
        if (r)
            fail_msg("start %d: %s", i, sbx_errmsg(sb));
        pids[i] = sbx_proc_pid(p);
        sbx_proc_close(p);
    }
    assert_int_equal(sbx_proc_start(sb, &o, &p), SBX_EBUSY);
    assert_non_null(strstr(sbx_errmsg(sb), "256"));
    for (int i = 0; i < 256; i++)
        assert_int_equal(sbx_kill(sb, pids[i], SIGKILL, 1), 0);
    /* Room again once they are reaped. */
    double end = ms_now() + 5000;
    while ((r = sbx_proc_start(sb, &o, &p)) == SBX_EBUSY && ms_now() < end)
        sleep_ms(20);
    assert_int_equal(r, 0);
    assert_int_equal(sbx_proc_signal(p, SIGKILL, 1), 0);
    sbx_proc_close(p);
}

/* --- PTYs ---------------------------------------------------------------------------------- */

/* Output of the current terminal (term.n = 0 for a new one). */
static struct pty_text term;

/* Reads terminal output until it contains want (fails after 5 s). */
static void pty_expect(sbx *sb, sbx_proc *p, const char *want)
{
    if (!pty_wait(p, &term, want, 5000))
        fail_msg("pty: \"%s\" did not appear (read: %d, %s) in: %s", want, term.last,
                 sbx_errmsg(sb), term.acc);
}

static void test_pty(void **state)
{
    sbx *sb = *state;
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"/bin/sh", NULL};
    o.argv = argv;
    sbx_proc *p;
    assert_int_equal(sbx_pty_open(sb, 24, 80, &o, &p), 0);
    term.n = 0;
    assert_int_equal(sbx_proc_write(p, "stty size; echo T=$TERM; tty\n", 30), 0);
    pty_expect(sb, p, "24 80");
    pty_expect(sb, p, "T=xterm-256color");
    pty_expect(sb, p, "/dev/pts/");
    assert_int_equal(sbx_proc_resize(p, 40, 100), 0);
    assert_int_equal(sbx_proc_write(p, "stty size\n", 10), 0);
    pty_expect(sb, p, "40 100");
    /* The terminal echoes input; the shell's output follows. */
    assert_int_equal(sbx_proc_write(p, "echo hel''lo\n", 13), 0);
    pty_expect(sb, p, "echo hel''lo");
    pty_expect(sb, p, "hello");
    assert_int_equal(sbx_proc_close_stdin(p), SBX_EINVAL);
    assert_int_equal(sbx_proc_resize(p, 0, 10), SBX_EINVAL);
    assert_int_equal(sbx_proc_write(p, "exit 3\n", 7), 0);
    sbx_exec_result res;
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.exit_code, 3);
    sbx_exec_result_free(&res);
    assert_int_equal(sbx_proc_resize(p, 10, 10), SBX_ENOENT);
    sbx_proc_close(p);

    /* Resize on a process without a terminal. */
    const char *sl[] = {"sleep", "60", NULL};
    o.argv = sl;
    assert_int_equal(sbx_proc_start(sb, &o, &p), 0);
    assert_int_equal(sbx_proc_resize(p, 10, 10), SBX_EINVAL);
    assert_int_equal(sbx_proc_signal(p, SIGKILL, 1), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    sbx_proc_close(p);

    /* ^C reaches the foreground process through the terminal. */
    const char *cat[] = {"cat", NULL};
    o.argv = cat;
    assert_int_equal(sbx_pty_open(sb, 24, 80, &o, &p), 0);
    term.n = 0;
    assert_int_equal(sbx_proc_write(p, "abc\n", 4), 0);
    pty_expect(sb, p, "abc\r\nabc\r\n");
    assert_int_equal(sbx_proc_write(p, "\x03", 1), 0);
    assert_int_equal(sbx_proc_wait(p, 5000, &res), 0);
    assert_int_equal(res.signal, SIGINT);
    sbx_exec_result_free(&res);
    sbx_proc_close(p);
}

int main(void)
{
    /* A test that fails midway must not leave the suite blocked on a dead pipe. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_cwd_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stdin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_and_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interleaving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_grandchild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_stop_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_fd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attach_and_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_keeps_unread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_protocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_background_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pty, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
