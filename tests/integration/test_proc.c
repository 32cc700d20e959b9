// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of commands, background processes and PTYs (envd's process model). */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "../common/pty_wait.h"

static sbx *boot(const char *rootfs, const char *const *envs)
{
    sbx_options o = itest_options(rootfs);
    o.envs = envs;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    return sb;
}

/* Runs a shell command line (bash -l on base, sh on busybox) and returns the result. */
static sbx_exec_result sh(sbx *sb, const char *cmd, const char *user)
{
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = cmd;
    o.user = user;
    sbx_exec_result res;
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    return res;
}

static void expect_out(sbx *sb, const char *cmd, const char *user, const char *want)
{
    sbx_exec_result res = sh(sb, cmd, user);
    if (res.exit_code != 0 || !res.out || strcmp(res.out, want) != 0)
        itest_fail(__FILE__, __LINE__, "%s: exit %d, out \"%s\", err \"%s\", wanted \"%s\"", cmd,
                   res.exit_code, res.out ? res.out : "", res.err ? res.err : "", want);
    sbx_exec_result_free(&res);
}

SBX_TEST(exec_basics)
{
    sbx *sb = boot("base", NULL);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    sbx_exec_result res;

    const char *t[] = {"true", NULL};
    o.argv = t;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    fprintf(stderr, "exec true: %.1f ms\n", itest_ms() - t0);
    CHECK(res.exit_code == 0 && res.signal == 0 && !res.out && !res.err && res.pid > 1);
    sbx_exec_result_free(&res);

    /* Not found (127, with a message) and not executable (126), like a shell. */
    const char *nf[] = {"no-such-program", NULL};
    o.argv = nf;
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    CHECK(res.exit_code == 127);
    CHECK(res.err && strstr(res.err, "no-such-program: command not found"));
    sbx_exec_result_free(&res);
    const char *ne[] = {"/etc/passwd", NULL};
    o.argv = ne;
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    CHECK(res.exit_code == 126);
    sbx_exec_result_free(&res);

    /* A shell string runs in a bash login shell. */
    expect_out(sb, "shopt -q login_shell && echo \"login $BASH_VERSION\" | cut -c1-7", NULL,
               "login 5\n");
    res = sh(sb, "echo out; echo err >&2; exit 42", NULL);
    CHECK(res.exit_code == 42 && strcmp(res.out, "out\n") == 0 && strcmp(res.err, "err\n") == 0);
    sbx_exec_result_free(&res);
    res = sh(sb, "kill -9 $$", NULL);
    CHECK(res.exit_code == -1 && res.signal == SIGKILL && !res.timed_out);
    sbx_exec_result_free(&res);

    /* Binary output: NUL bytes and invalid UTF-8 arrive unchanged. */
    res = sh(sb, "printf 'a\\000b\\377\\376c'", NULL);
    CHECK(res.out_len == 6 && memcmp(res.out,
                                     "a\0b\xff\xfe"
                                     "c",
                                     6) == 0);
    sbx_exec_result_free(&res);

    /* stdin: 4 MiB through cat and back while output flows. */
    size_t n = 4u << 20;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (unsigned char)(i * 131 + (i >> 11));
    const char *cat[] = {"cat", NULL};
    o.argv = cat;
    o.stdin_data = big;
    o.stdin_len = n;
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    CHECK(res.exit_code == 0 && res.out_len == n && memcmp(res.out, big, n) == 0);
    sbx_exec_result_free(&res);
    free(big);
    o.stdin_data = NULL;
    o.stdin_len = 0;

    /* Order within each stream. */
    res = sh(sb, "for i in $(seq 1 500); do echo o$i; echo e$i >&2; done", NULL);
    char *so = NULL, *se = NULL, *lo = strtok_r(res.out, "\n", &so),
         *le = strtok_r(res.err, "\n", &se);
    for (int i = 1; i <= 500; i++) {
        char w[16];
        snprintf(w, sizeof(w), "o%d", i);
        CHECK(lo && strcmp(lo, w) == 0);
        snprintf(w, sizeof(w), "e%d", i);
        CHECK(le && strcmp(le, w) == 0);
        lo = strtok_r(NULL, "\n", &so);
        le = strtok_r(NULL, "\n", &se);
    }
    CHECK(!lo && !le);
    sbx_exec_result_free(&res);

    /* A background child holding stdout does not hold up the exit. */
    t0 = itest_ms();
    expect_out(sb, "sleep 30 & echo started", NULL, "started\n");
    CHECK(itest_ms() - t0 < 10000);
    sbx_destroy(sb);
}

SBX_TEST(busybox_shell)
{
    /* No bash: shell strings run with /bin/sh -c. */
    sbx *sb = boot("test", NULL);
    expect_out(sb, "echo \"$0\"; id -u", NULL, "/bin/sh\n1000\n");
    expect_out(sb, "id -u", "root", "0\n");
    sbx_exec_result res = sh(sb, "nonexistent-cmd", NULL);
    CHECK(res.exit_code == 127);
    sbx_exec_result_free(&res);
    sbx_destroy(sb);
}

SBX_TEST(users_env_cwd)
{
    static const char *const envs[] = {"SBX_A=sandbox", "SBX_B=sandbox", NULL};
    sbx *sb = boot("base", envs);
    /* The default user of the base image is "user" (uid 1000). */
    expect_out(sb, "id -u; id -un; echo $HOME; pwd", NULL, "1000\nuser\n/home/user\n/home/user\n");
    expect_out(sb, "id -u; echo $HOME; pwd", "root", "0\n/root\n/root\n");
    expect_out(sb, "id -un", "1000", "user\n");
    expect_out(sb, "id -u", "0", "0\n");
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    sbx_exec_result res;
    o.cmd = "true";
    o.user = "nobody-here";
    CHECK_RC(sb, sbx_exec(sb, &o, &res), SBX_ENOENT);
    o.user = NULL;
    o.cwd = "/no/such/dir";
    CHECK_RC(sb, sbx_exec(sb, &o, &res), SBX_ENOENT);
    o.cwd = "/root"; /* user may not enter it */
    CHECK_RC(sb, sbx_exec(sb, &o, &res), SBX_EACCES);
    o.cwd = "/tmp";
    o.cmd = "pwd";
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    CHECK(res.out && strcmp(res.out, "/tmp\n") == 0);
    sbx_exec_result_free(&res);

    /* Sandbox envs, then per-call envs: last one wins. */
    const char *pe[] = {"printenv", "SBX_A", "SBX_B", "SBX_C", "PATH", NULL};
    const char *ce[] = {"SBX_B=call", "SBX_C=1", "SBX_C=2", NULL};
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.argv = pe;
    o.envs = ce;
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    CHECK(res.out &&
          strcmp(res.out, "sandbox\ncall\n2\n"
                          "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n") == 0);
    sbx_exec_result_free(&res);
    sbx_destroy(sb);
}

/* Whether a pid exists in the guest. */
static bool guest_pid_alive(sbx *sb, long pid)
{
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "kill -0 %ld 2>/dev/null", pid);
    sbx_exec_result res = sh(sb, cmd, "root");
    bool alive = res.exit_code == 0;
    sbx_exec_result_free(&res);
    return alive;
}

SBX_TEST(timeout_kills_group)
{
    sbx *sb = boot("base", NULL);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    /* Both the shell and its child ignore SIGTERM; the child's pid comes first. */
    o.cmd = "trap '' TERM; bash -c 'trap \"\" TERM; sleep 600' & echo $!; sleep 600";
    o.timeout_ms = 3000;
    sbx_exec_result res;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    double t = itest_ms() - t0;
    fprintf(stderr, "killed after %.0f ms\n", t);
    CHECK(res.timed_out && res.signal == SIGKILL && res.exit_code == -1);
    CHECK(t >= 2900 && t < 20000);
    CHECK(res.out);
    long child = atol(res.out);
    CHECK(child > 1);
    sbx_exec_result_free(&res);
    bool gone = false;
    for (int i = 0; i < 50 && !gone; i++)
        gone = !guest_pid_alive(sb, child);
    CHECK(gone);
    sbx_destroy(sb);
}

static bool listed(sbx *sb, uint32_t pid, sbx_proc_info *out)
{
    sbx_proc_info *l;
    size_t n;
    CHECK_OK(sb, sbx_proc_list(sb, &l, &n));
    bool found = false;
    for (size_t i = 0; i < n; i++)
        if (l[i].pid == pid) {
            found = true;
            *out = l[i];
            CHECK(strcmp(l[i].tag, "job-1") == 0);
            CHECK(l[i].argv[0] && strcmp(l[i].argv[0], "/bin/bash") == 0);
            out->argv = NULL;
            out->cwd = out->tag = NULL;
        }
    sbx_proc_list_free(l, n);
    return found;
}

SBX_TEST(background_attach_list)
{
    sbx *sb = boot("base", NULL);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "echo first; read line; echo \"got $line\"; sleep 2; echo last >&2; exit 4";
    o.tag = "job-1";
    o.keep_stdin = 1;
    sbx_proc *p;
    CHECK_OK(sb, sbx_proc_start(sb, &o, &p));
    uint32_t pid = sbx_proc_pid(p);
    char buf[256];
    int stream;
    int r = sbx_proc_read(p, buf, sizeof(buf) - 1, &stream, 30000);
    CHECK(r == 6 && memcmp(buf, "first\n", 6) == 0 && stream == SBX_STDOUT);
    CHECK_OK(sb, sbx_proc_write(p, "hello\n", 6));
    sbx_proc_close(p); /* detached: it goes on */

    sbx_proc_info info;
    CHECK(listed(sb, pid, &info));
    CHECK(info.running && !info.attached && !info.pty);

    /* Attach again: output written while detached arrives first. */
    uint64_t dropped = 1;
    CHECK_OK(sb, sbx_proc_attach(sb, pid, &p, &dropped));
    CHECK(dropped == 0);
    sbx_exec_result res;
    CHECK_OK(sb, sbx_proc_wait(p, 30000, &res));
    CHECK(res.exit_code == 4);
    CHECK(res.out && strcmp(res.out, "got hello\n") == 0);
    CHECK(res.err && strcmp(res.err, "last\n") == 0);
    sbx_exec_result_free(&res);
    sbx_proc_close(p);
    CHECK(listed(sb, pid, &info));
    CHECK(!info.running && info.exit_code == 4);

    /* Signals by pid to a detached process; the exit status stays available. */
    const char *sl[] = {"sleep", "600", NULL};
    o = (sbx_exec_options)SBX_EXEC_OPTIONS_INIT;
    o.argv = sl;
    o.timeout_ms = SBX_NO_TIMEOUT;
    CHECK_OK(sb, sbx_proc_start(sb, &o, &p));
    pid = sbx_proc_pid(p);
    sbx_proc_close(p);
    CHECK_OK(sb, sbx_kill(sb, pid, SIGTERM, 1));
    CHECK_OK(sb, sbx_proc_attach(sb, pid, &p, NULL));
    CHECK_OK(sb, sbx_proc_wait(p, 30000, &res));
    CHECK(res.signal == SIGTERM && res.exit_code == -1);
    sbx_proc_close(p);
    CHECK_RC(sb, sbx_kill(sb, pid, SIGTERM, 0), SBX_ENOENT);
    sbx_destroy(sb);
}

/* Output of the current terminal (term.n = 0 for a new one). */
static struct pty_text term;

/* Reads terminal output until it contains `want` (fails after 60 s). */
static void pty_expect(sbx *sb, sbx_proc *p, const char *want)
{
    if (!pty_wait(p, &term, want, 60000))
        itest_fail(__FILE__, __LINE__, "\"%s\" did not appear on the terminal (read: %d, %s): %s",
                   want, term.last, sbx_errmsg(sb), term.acc);
}

static void pty_send(sbx *sb, sbx_proc *p, const char *s)
{
    CHECK_OK(sb, sbx_proc_write(p, s, strlen(s)));
}

SBX_TEST(pty)
{
    sbx *sb = boot("base", NULL);
    sbx_proc *p;
    /* The default: the user's login shell. */
    CHECK_OK(sb, sbx_pty_open(sb, 24, 80, NULL, &p));
    term.n = 0;
    pty_send(sb, p, "stty size; echo \"u=$(id -un) t=$TERM\"; tty\n");
    pty_expect(sb, p, "24 80");
    pty_expect(sb, p, "u=user t=xterm-256color");
    pty_expect(sb, p, "/dev/pts/");
    CHECK_OK(sb, sbx_proc_resize(p, 50, 132));
    pty_send(sb, p, "stty size\n");
    pty_expect(sb, p, "50 132");
    /* A full-screen program: top draws with escape sequences for xterm-256color. */
    /* Keys typed while top runs would go to top: wait for the shell to be back. */
    pty_send(sb, p, "top -n 1; echo TOP-$((40 + 2))\n");
    pty_expect(sb, p, "\x1b[");
    pty_expect(sb, p, "PID");
    pty_expect(sb, p, "TOP-42");
    pty_send(sb, p, "exit 7\n");
    sbx_exec_result res;
    CHECK_OK(sb, sbx_proc_wait(p, 30000, &res));
    CHECK(res.exit_code == 7);
    sbx_exec_result_free(&res);
    sbx_proc_close(p);

    /* A program given directly, and ^C through the line discipline. */
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *top[] = {"top", "-b", "-n", "1", NULL};
    o.argv = top;
    CHECK_OK(sb, sbx_pty_open(sb, 30, 100, &o, &p));
    term.n = 0;
    pty_expect(sb, p, "load average");
    CHECK_OK(sb, sbx_proc_wait(p, 30000, &res));
    CHECK(res.exit_code == 0);
    sbx_exec_result_free(&res);
    sbx_proc_close(p);
    const char *cat[] = {"cat", NULL};
    o.argv = cat;
    CHECK_OK(sb, sbx_pty_open(sb, 30, 100, &o, &p));
    term.n = 0;
    pty_send(sb, p, "ping\n");
    pty_expect(sb, p, "ping\r\nping\r\n");
    pty_send(sb, p, "\x03");
    CHECK_OK(sb, sbx_proc_wait(p, 30000, &res));
    CHECK(res.signal == SIGINT);
    sbx_proc_close(p);
    sbx_destroy(sb);
}

static int count_cb(void *ctx, int stream, const void *data, size_t len)
{
    uint64_t *c = ctx;
    c[stream == SBX_STDERR] += len;
    return 0;
}

SBX_TEST(large_output)
{
    sbx *sb = boot("base", NULL);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    const char *argv[] = {"head", "-c", "104857600", "/dev/urandom", NULL};
    o.argv = argv;
    o.timeout_ms = 300000;
    uint64_t count[2] = {0, 0};
    o.on_output = count_cb;
    o.ctx = count;
    sbx_exec_result res;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_exec(sb, &o, &res));
    double t = itest_ms() - t0;
    fprintf(stderr, "100 MiB of output in %.0f ms (%.1f MiB/s)\n", t, 100 / (t / 1000));
    CHECK(res.exit_code == 0 && !res.out && !res.truncated);
    CHECK(count[0] == 104857600 && count[1] == 0);
    sbx_destroy(sb);
}

struct worker {
    sbx *sb;
    int id;
    int ok;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 6; i++) {
        char tagged[32], want[64];
        snprintf(tagged, sizeof(tagged), "w%d-%d", w->id, i);
        const char *argv[] = {"sh", "-c",   "echo $1; head -c 200000 /dev/zero | wc -c",
                              "sh", tagged, NULL};
        sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
        o.argv = argv;
        sbx_exec_result res;
        if (sbx_exec(w->sb, &o, &res) != 0) {
            fprintf(stderr, "worker %d: %s\n", w->id, sbx_errmsg(w->sb));
            return NULL;
        }
        snprintf(want, sizeof(want), "%s\n200000\n", tagged);
        bool good = res.exit_code == 0 && res.out && strcmp(res.out, want) == 0;
        sbx_exec_result_free(&res);
        if (!good)
            return NULL;
    }
    w->ok = 1;
    return NULL;
}

SBX_TEST(concurrent_exec)
{
    sbx *sb = boot("base", NULL);
    struct worker w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){sb, i, 0};
        CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(w[i].ok);
    }
    sbx_destroy(sb);
}

ITEST_MAIN(ITEST(exec_basics), ITEST(busybox_shell), ITEST(users_env_cwd),
           ITEST(timeout_kills_group), ITEST(background_attach_list), ITEST(pty),
           ITEST(large_output), ITEST(concurrent_exec))
