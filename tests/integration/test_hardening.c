// SPDX-License-Identifier: Apache-2.0
/* Defence in depth with real guests (docs/SECURITY.md): the seccomp filters of a sandbox's own
   threads are in place while the guest works, and the option that turns them off does; the
   isolated mode runs the VMM in a jailed child process behind the same API. */
#include <dirent.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Counts this process's threads whose name starts with `prefix`, and how many of them run
   under a seccomp filter ("Seccomp: 2" in their status). */
static void count_threads(const char *prefix, unsigned *all, unsigned *filtered)
{
    *all = *filtered = 0;
    DIR *d = opendir("/proc/self/task");
    CHECK(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue; /* the thread ended meanwhile */
        bool match = fgets(line, sizeof(line), f) && strncmp(line, prefix, strlen(prefix)) == 0;
        fclose(f);
        if (!match)
            continue;
        (*all)++;
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        if (!(f = fopen(path, "re")))
            continue;
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, "Seccomp:", 8) == 0 && atoi(line + 8) == 2)
                (*filtered)++;
        fclose(f);
    }
    closedir(d);
}

/* With the default options every vCPU thread and the device thread are filtered, and the guest
   still boots, runs processes, moves files and reaches the network through them. */
SBX_TEST(seccomp_filters_sandbox_threads)
{
    sbx_options o = itest_options(NULL);
    o.vcpus = 2;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    unsigned all, filtered;
    count_threads("sbx-vcpu", &all, &filtered);
    CHECK(all == 2 && filtered == 2);
    count_threads("sbx-device", &all, &filtered);
    CHECK(all == 1 && filtered == 1);
    /* The calling thread is not filtered. */
    CHECK(itest_status("/proc/thread-self/status", "Seccomp:") == 0);

    itest_expect(sb, NULL, "echo hi; nproc", "hi\n2\n");
    static const char data[] = "through the device thread";
    CHECK_OK(sb, sbx_write_file(sb, "/tmp/f", data, sizeof(data) - 1, 0644));
    itest_expect(sb, NULL, "cat /tmp/f", data);
    /* The disk: written and flushed. */
    itest_expect(sb, NULL,
                 "dd if=/dev/urandom of=/home/user/big bs=1M count=8 conv=fsync status=none && "
                 "wc -c < /home/user/big",
                 "8388608\n");
    sbx_destroy(sb);
}

/* no_seccomp leaves the threads unfiltered (for tools such as valgrind). */
SBX_TEST(no_seccomp_option)
{
    sbx_options o = itest_options(NULL);
    o.no_seccomp = 1;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    unsigned all, filtered;
    count_threads("sbx-vcpu", &all, &filtered);
    CHECK(all == 1 && filtered == 0);
    count_threads("sbx-device", &all, &filtered);
    CHECK(all == 1 && filtered == 0);
    itest_expect(sb, NULL, "echo hi", "hi\n");
    sbx_destroy(sb);
}

/* The child process running the VMM of an isolated sandbox: this process's child named
   sbx-vmm (there is one at a time in these tests). */
static pid_t vmm_child(void)
{
    DIR *d = opendir("/proc");
    CHECK(d != NULL);
    struct dirent *e;
    pid_t found = 0;
    while (!found && (e = readdir(d))) {
        char path[300], line[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        int pid = 0, ppid = 0;
        char comm[64] = "";
        if (fgets(line, sizeof(line), f) &&
            sscanf(line, "%d (%63[^)]) %*c %d", &pid, comm, &ppid) == 3 && ppid == getpid() &&
            strcmp(comm, "sbx-vmm") == 0)
            found = pid;
        fclose(f);
    }
    closedir(d);
    return found;
}

static bool same_ns(pid_t pid, const char *ns)
{
    char a[300], b[300], la[128] = "", lb[128] = "";
    snprintf(a, sizeof(a), "/proc/%d/ns/%s", (int)pid, ns);
    snprintf(b, sizeof(b), "/proc/self/ns/%s", ns);
    CHECK(readlink(a, la, sizeof(la) - 1) > 0 && readlink(b, lb, sizeof(lb) - 1) > 0);
    return strcmp(la, lb) == 0;
}

/* A status field of every thread of `pid` must be `want` (e.g. "Seccomp:" "2"). */
static void every_thread(pid_t pid, const char *field, const char *want)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    unsigned n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], line[256];
        snprintf(path, sizeof(path), "/proc/%d/task/%.20s/status", (int)pid, e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f))
            if (strncmp(line, field, strlen(field)) == 0) {
                const char *v = line + strlen(field);
                while (*v == ' ' || *v == '\t')
                    v++;
                if (strncmp(v, want, strlen(want)) != 0)
                    itest_fail(__FILE__, __LINE__, "thread %s of pid %d: %s %s", e->d_name,
                               (int)pid, field, v);
            }
        fclose(f);
        n++;
    }
    closedir(d);
    CHECK(n >= 3); /* the server thread, a vCPU, the device thread */
}

static sbx_options isolated_options(void)
{
    sbx_options o = itest_options(NULL);
    o.isolated = 1;
    if (!getenv("SBX_VMM_PATH"))
        setenv("SBX_VMM_PATH", SBX_BINARY_DIR "/sbx-vmm", 1);
    return o;
}

/* The isolated mode: the VMM is a jailed child, and the sandbox works as any other. */
SBX_TEST(isolated_mode)
{
    /* The creation cost against an ordinary sandbox, for docs/PERFORMANCE.md. */
    sbx_options plain = itest_options(NULL);
    sbx *p = NULL;
    double t0 = itest_ms();
    CHECK_OK(p, sbx_create(&p, &plain));
    double plain_ms = itest_ms() - t0;
    sbx_destroy(p);

    sbx_options o = isolated_options();
    static const char *const hosts[] = {"sbx-test.example=10.9.8.7", NULL};
    o.hosts = hosts; /* answered by the child's device thread */
    sbx *sb = NULL;
    t0 = itest_ms();
    CHECK_OK(sb, sbx_create(&sb, &o));
    printf("sbx_create: %.0f ms isolated, %.0f ms in-process\n", itest_ms() - t0, plain_ms);

    /* Not in this process: no vCPU thread here, a child named sbx-vmm instead. */
    unsigned all, filtered;
    count_threads("sbx-vcpu", &all, &filtered);
    CHECK(all == 0);
    pid_t child = vmm_child();
    CHECK(child > 0);
    CHECK(!same_ns(child, "mnt") && !same_ns(child, "pid") && !same_ns(child, "ipc") &&
          !same_ns(child, "uts"));
    CHECK(same_ns(child, "net")); /* the NAT's sockets reach out from the host's network */
    every_thread(child, "Seccomp:", "2");
    every_thread(child, "CapEff:", "0000000000000000");
    every_thread(child, "CapBnd:", "0000000000000000");
    every_thread(child, "NoNewPrivs:", "1");
    /* Its root is an empty directory but for the DNS settings. */
    char root[64];
    snprintf(root, sizeof(root), "/proc/%d/root", (int)child);
    DIR *d = opendir(root);
    CHECK(d != NULL);
    struct dirent *e;
    unsigned entries = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            CHECK(strcmp(e->d_name, "etc") == 0);
            entries++;
        }
    closedir(d);
    CHECK(entries <= 1);

    /* The same API. */
    sbx_info info;
    CHECK_OK(sb, sbx_get_info(sb, &info));
    CHECK(info.vcpus == 1 && info.id[0] != 0 && info.kernel_release[0] != 0);
    itest_expect(sb, NULL, "echo hi; id -un", "hi\nuser\n");
    static const char data[] = "through the child's vsock device";
    CHECK_OK(sb, sbx_write_file(sb, "/tmp/f", data, sizeof(data) - 1, 0644));
    void *back = NULL;
    size_t len = 0;
    CHECK_OK(sb, sbx_read_file(sb, "/tmp/f", &back, &len, 0));
    CHECK(len == sizeof(data) - 1 && memcmp(back, data, len) == 0);
    free(back);
    itest_expect(sb, NULL, "getent hosts sbx-test.example | cut -d' ' -f1", "10.9.8.7\n");
    char console[4096];
    CHECK(sbx_console(sb, console, sizeof(console)) > 0); /* forwarded by the child */

    sbx_destroy(sb);
    CHECK(kill(child, 0) < 0 && errno == ESRCH); /* reaped */
}

/* The VMM processes this process started. */
static unsigned vmm_children(void)
{
    DIR *d = opendir("/proc");
    CHECK(d != NULL);
    struct dirent *e;
    unsigned n = 0;
    while ((e = readdir(d))) {
        char path[300], line[512], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "re");
        int pid = 0, ppid = 0;
        if (f && fgets(line, sizeof(line), f) &&
            sscanf(line, "%d (%63[^)]) %*c %d", &pid, comm, &ppid) == 3 && ppid == getpid() &&
            strcmp(comm, "sbx-vmm") == 0)
            n++;
        if (f)
            fclose(f);
    }
    closedir(d);
    return n;
}

static void expect_mark(sbx *sb)
{
    itest_expect(sb, NULL, "cat /home/user/mark", "written before\n");
}

/* The whole API in the isolated mode: the lifetime, the egress policy and its counters,
   snapshots (and sandboxes from them), fork, pause and resume; the copies are isolated too,
   their snapshots written by the jailed child into files it was handed. */
SBX_TEST(isolated_snapshots_policy_lifetime)
{
    char dir[] = "/tmp/sbx-iso-XXXXXX", snap[64], paused[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(snap, sizeof(snap), "%s/snap", dir);
    snprintf(paused, sizeof(paused), "%s/paused", dir);
    sbx_options o = isolated_options();
    static const char *const hosts[] = {"sbx-test.example=10.9.8.7", NULL};
    o.hosts = hosts;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    itest_expect(sb, NULL, "echo written before > /home/user/mark && sync", "");

    /* Lifetime. */
    CHECK_OK(sb, sbx_set_timeout(sb, 600000));
    sbx_info info;
    CHECK_OK(sb, sbx_get_info(sb, &info));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t now_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    CHECK(info.ends_ns > now_ns + 590000000000ull && info.ends_ns < now_ns + 610000000000ull);

    /* Egress policy and counters, kept by the child's device. */
    sbx_net_stats st0, st1;
    CHECK_OK(sb, sbx_network_stats(sb, &st0));
    itest_expect(sb, NULL, "getent hosts sbx-test.example | cut -d' ' -f1", "10.9.8.7\n");
    static const char *const bad[] = {"not a rule!", NULL};
    sbx_net_policy p = {0, NULL, bad};
    CHECK_RC(sb, sbx_network_update(sb, &p), SBX_EINVAL);
    printf("a bad rule: %s\n", sbx_errmsg(sb));
    CHECK(strstr(sbx_errmsg(sb), "not a rule!") != NULL);
    sbx_net_policy block = {1, NULL, NULL};
    CHECK_OK(sb, sbx_network_update(sb, &block));
    itest_expect(sb, NULL,
                 "for i in 1 2 3; do bash -c 'echo x > /dev/udp/192.0.2.1/9'; done; echo sent",
                 "sent\n");
    CHECK_OK(sb, sbx_network_stats(sb, &st1));
    printf("tx %llu -> %llu frames, blocked %llu -> %llu\n", (unsigned long long)st0.tx_frames,
           (unsigned long long)st1.tx_frames, (unsigned long long)st0.blocked,
           (unsigned long long)st1.blocked);
    CHECK(st1.tx_frames > st0.tx_frames && st1.blocked >= st0.blocked + 3);

    /* A snapshot, and a sandbox from it. */
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_snapshot(sb, snap));
    printf("snapshot: %.0f ms\n", itest_ms() - t0);
    itest_expect(sb, NULL, "echo still running", "still running\n");
    sbx_options t = isolated_options();
    t.memory_mib = 0; /* the snapshot's */
    t.template_name = snap;
    sbx *from = NULL;
    CHECK_OK(from, sbx_create(&from, &t));
    expect_mark(from);

    /* A fork: isolated like its parent. */
    sbx *copy[1] = {NULL};
    CHECK_OK(sb, sbx_fork(sb, 1, NULL, copy));
    expect_mark(copy[0]);
    unsigned all, filtered;
    count_threads("sbx-vcpu", &all, &filtered);
    CHECK(vmm_children() == 3 && all == 0);

    /* Pause and resume: the same sandbox, in a new child. */
    CHECK_OK(sb, sbx_get_info(sb, &info));
    char id[32];
    snprintf(id, sizeof(id), "%s", info.id);
    CHECK_OK(sb, sbx_pause(sb, paused));
    CHECK(sbx_state(sb) == SBX_STATE_PAUSED);
    sbx_destroy(sb);
    sbx_options r = isolated_options();
    r.memory_mib = 0;
    sbx *back = NULL;
    t0 = itest_ms();
    CHECK_OK(back, sbx_resume(&back, paused, &r));
    printf("resume: %.0f ms\n", itest_ms() - t0);
    CHECK_OK(back, sbx_get_info(back, &info));
    CHECK(strcmp(info.id, id) == 0);
    expect_mark(back);
    CHECK(vmm_children() == 3);

    sbx_destroy(back);
    sbx_destroy(copy[0]);
    sbx_destroy(from);
    CHECK(vmm_children() == 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* Without CAP_SYS_ADMIN the VMM process gets a user namespace too (in which the caller is
   root), and everything else stays the same. */
SBX_TEST(isolated_without_cap_sys_admin)
{
    pid_t pid = fork(); /* before any sandbox exists in this process */
    CHECK(pid >= 0);
    if (pid == 0) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2];
        if (syscall(SYS_capget, &h, d) < 0)
            _exit(2);
        for (int i = 0; i < 2; i++) {
            d[i].effective &= ~(i == CAP_SYS_ADMIN / 32 ? 1u << (CAP_SYS_ADMIN % 32) : 0);
            d[i].permitted &= ~(i == CAP_SYS_ADMIN / 32 ? 1u << (CAP_SYS_ADMIN % 32) : 0);
        }
        if (syscall(SYS_capset, &h, d) < 0 || unshare(CLONE_NEWNS) == 0)
            _exit(3); /* the capability must really be gone */
        sbx_options o = isolated_options();
        sbx *sb = NULL;
        if (sbx_create(&sb, &o) != 0) {
            fprintf(stderr, "%s\n", sbx_errmsg(sb));
            _exit(4);
        }
        pid_t child = vmm_child();
        if (child <= 0 || same_ns(child, "user") || same_ns(child, "mnt"))
            _exit(5);
        every_thread(child, "Seccomp:", "2");
        every_thread(child, "CapEff:", "0000000000000000");
        itest_expect(sb, NULL, "echo hi; id -un", "hi\nuser\n");
        sbx_destroy(sb);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    printf("the child without CAP_SYS_ADMIN: status %d\n",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The VMM process dies: the sandbox fails saying so, no call hangs. */
SBX_TEST(isolated_vmm_killed)
{
    sbx_options o = isolated_options();
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    pid_t child = vmm_child();
    CHECK(child > 0);
    CHECK(kill(child, SIGKILL) == 0);
    double end = itest_ms() + 10000;
    while (sbx_state(sb) == SBX_STATE_RUNNING && itest_ms() < end)
        usleep(20 * 1000);
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
    eo.cmd = "true";
    sbx_exec_result res;
    CHECK_RC(sb, sbx_exec(sb, &eo, &res), SBX_EDEAD);
    CHECK(strstr(sbx_errmsg(sb), "killed by signal 9") != NULL);
    printf("%s\n", sbx_errmsg(sb));
    sbx_destroy(sb);
}

/* Without network, the VMM gets its own (empty) network namespace too. */
SBX_TEST(isolated_without_network)
{
    sbx_options o = isolated_options();
    o.network = SBX_NET_NONE;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    pid_t child = vmm_child();
    CHECK(child > 0 && !same_ns(child, "net"));
    itest_expect(sb, NULL, "echo ok", "ok\n");
    sbx_destroy(sb);
}

/* options.cgroup: the VMM process joins the caller's cgroup v2 directory. */
SBX_TEST(isolated_in_a_cgroup)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "/sys/fs/cgroup/sbx-test-%d", (int)getpid());
    if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) < 0 || mkdir(dir, 0755) < 0) {
        printf("SKIP: no writable cgroup v2 hierarchy at /sys/fs/cgroup (%s)\n", strerror(errno));
        exit(ITEST_SKIP);
    }
    sbx_options o = isolated_options();
    o.cgroup = dir;
    sbx *sb = NULL;
    int rc = sbx_create(&sb, &o);
    pid_t child = rc == 0 ? vmm_child() : 0;
    char path[64], line[512] = "";
    snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)child);
    FILE *f = child > 0 ? fopen(path, "re") : NULL;
    if (f) {
        if (!fgets(line, sizeof(line), f))
            line[0] = 0;
        fclose(f);
    }
    sbx_destroy(sb);
    rmdir(dir);
    CHECK(rc == 0);
    printf("the VMM's cgroup: %s", line);
    CHECK(strstr(line, dir + strlen("/sys/fs/cgroup")) != NULL);
}

/* ---- faults ---------------------------------------------------------------------------- */

static sbx *volatile alarm_target;

static void on_alarm(int sig)
{
    (void)sig;
    sbx_interrupt(alarm_target); /* async-signal-safe: eventfd writes only */
}

/* sbx_interrupt() from a signal handler ends a blocked exec with SBX_EINTR; the sandbox goes
   on working. */
SBX_TEST(interrupt_from_a_signal_handler)
{
    sbx_options o = itest_options(NULL);
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    alarm_target = sb;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm; /* no SA_RESTART: the wait sees EINTR too */
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
    struct itimerval it = {{0, 0}, {1, 500000}};
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
    sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
    eo.cmd = "sleep 30";
    sbx_exec_result res;
    double t0 = itest_ms();
    int rc = sbx_exec(sb, &eo, &res);
    double took = itest_ms() - t0;
    printf("sbx_exec returned %d (%s) after %.0f ms\n", rc, sbx_strerror(rc), took);
    CHECK_RC(sb, rc, SBX_EINTR);
    CHECK(took < 10000);
    itest_expect(sb, NULL, "echo still fine", "still fine\n");
    sbx_destroy(sb);
}

static void *long_write(void *arg)
{
    struct itest_pending *p = arg;
    size_t len = 256u << 20;
    char *big = calloc(1, len);
    p->rc = big ? sbx_write_file(p->sb, "/home/user/big", big, len, 0644) : SBX_ENOMEM;
    free(big);
    p->returned_ms = itest_ms();
    return NULL;
}

/* sbx_destroy() while other threads are inside an exec and a file transfer: both calls
   return an error at once, sbx_destroy() waits for them to leave before it frees the handle
   (valgrind runs this too), and nothing hangs. */
SBX_TEST(destroy_during_calls)
{
    sbx_options o = itest_options(NULL);
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    struct itest_pending a, b = {sb, 0, 1, 0};
    itest_pending_exec(&a, sb);
    CHECK(pthread_create(&b.thread, NULL, long_write, &b) == 0);
    usleep(1500 * 1000);
    double t0 = itest_ms();
    sbx_destroy(sb);
    double done = itest_ms();
    itest_pending_join(&a);
    pthread_join(b.thread, NULL);
    printf("sbx_destroy took %.0f ms; the exec returned %d (%s) after %.0f ms, the write %d "
           "(%s) after %.0f ms\n",
           done - t0, a.rc, sbx_strerror(a.rc), a.returned_ms - t0, b.rc, sbx_strerror(b.rc),
           b.returned_ms - t0);
    CHECK(a.rc < 0 && b.rc < 0);
    CHECK(a.returned_ms <= done && b.returned_ms <= done); /* they left before the free */
    CHECK(done - t0 < 10000);
}

/* A fork bomb under options.max_processes: it runs into the limit (the count of its cgroup
   stays at it, forks are refused), envd, outside the cgroup, still answers file requests
   while it rages, and killing its process group ends it; then commands run again. */
SBX_TEST(fork_bomb_contained)
{
    sbx_options o = itest_options(NULL);
    o.max_processes = 200;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    itest_expect(sb, NULL, "cat /sys/fs/cgroup/sbx-workload/pids.max", "200\n");
    sbx_proc *bomb = NULL;
    sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
    eo.cmd = "bomb() { bomb | bomb & }; bomb; sleep 600";
    eo.timeout_ms = 120000;
    CHECK_OK(sb, sbx_proc_start(sb, &eo, &bomb));
    /* envd reads the files itself: no process to start in the full cgroup. Until the bomb
       reached the limit (it grows slowly in an emulated machine). */
    void *cur = NULL, *ev = NULL;
    size_t len;
    double t0, limit = itest_ms() + 60000;
    do {
        free(cur);
        free(ev);
        sleep(1);
        t0 = itest_ms();
        CHECK_OK(sb, sbx_read_file(sb, "/sys/fs/cgroup/sbx-workload/pids.current", &cur, &len, 0));
        CHECK_OK(sb, sbx_read_file(sb, "/sys/fs/cgroup/sbx-workload/pids.events", &ev, &len, 0));
    } while (atol((char *)ev + 4) == 0 && itest_ms() < limit);
    printf("during the bomb, in %.0f ms: pids.current %s pids.events %s", itest_ms() - t0,
           (char *)cur, (char *)ev);
    long tasks = atol(cur);
    CHECK(tasks >= 100 && tasks <= 200);                            /* raging, at the limit */
    CHECK(strncmp(ev, "max ", 4) == 0 && atol((char *)ev + 4) > 0); /* forks were refused */
    free(cur);
    free(ev);
    CHECK_OK(sb, sbx_proc_signal(bomb, 9, 1));
    sbx_exec_result res;
    int rc = sbx_proc_wait(bomb, 60000, &res);
    if (rc == 0)
        sbx_exec_result_free(&res);
    sbx_proc_close(bomb);
    double end = itest_ms() + 30000;
    long left = 1000;
    while (itest_ms() < end) {
        char *n = itest_run(sb, "root", "cat /sys/fs/cgroup/sbx-workload/pids.current");
        left = atol(n);
        free(n);
        if (left <= 2)
            break;
        usleep(500 * 1000);
    }
    printf("tasks left after killing the group: %ld\n", left);
    CHECK(left <= 2);
    itest_expect(sb, NULL, "echo alive", "alive\n");
    sbx_destroy(sb);
}

/* The process that pauses a sandbox is killed in the middle: resuming the directory either
   works (the pause had finished) or fails with SBX_EIMAGE saying what is missing; never a
   crash or a silently broken guest. Kill points: early, middle, late, after the end. */
SBX_TEST(killed_while_pausing)
{
    static const unsigned delays_ms[] = {30, 400, 1500, 20000};
    for (size_t i = 0; i < sizeof(delays_ms) / sizeof(delays_ms[0]); i++) {
        char dir[128];
        snprintf(dir, sizeof(dir), "/var/tmp/sbx-killpause-%d-%zu", (int)getpid(), i);
        int ready[2];
        CHECK(pipe(ready) == 0);
        pid_t child = fork(); /* before any sandbox exists in this process */
        CHECK(child >= 0);
        if (child == 0) {
            sbx_options o = itest_options(NULL);
            sbx *sb = NULL;
            if (sbx_create(&sb, &o) != 0)
                _exit(3);
            sbx_exec_options eo = SBX_EXEC_OPTIONS_INIT;
            eo.cmd = "echo before-pause > /home/user/marker";
            sbx_exec_result res;
            if (sbx_exec(sb, &eo, &res) != 0 || res.exit_code != 0)
                _exit(4);
            (void)!write(ready[1], "p", 1);
            int r = sbx_pause(sb, dir);
            _exit(r == 0 ? 0 : 5);
        }
        close(ready[1]);
        char c;
        CHECK(read(ready[0], &c, 1) == 1);
        close(ready[0]);
        usleep(delays_ms[i] * 1000);
        kill(child, SIGKILL);
        int status;
        waitpid(child, &status, 0);
        bool finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;

        sbx *sb = NULL;
        int rc = sbx_resume(&sb, dir, NULL);
        printf("killed %u ms into the pause (%s): resume returned %d: %s\n", delays_ms[i],
               finished ? "it had finished" : "unfinished", rc, rc ? sbx_errmsg(sb) : "ok");
        if (rc == 0) {
            itest_expect(sb, NULL, "cat /home/user/marker", "before-pause\n");
        } else {
            CHECK(!finished);
            CHECK(rc == SBX_EIMAGE || rc == SBX_ENOENT || rc == SBX_EIO);
            CHECK(sbx_errmsg(sb)[0] != 0);
        }
        sbx_destroy(sb);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        CHECK(system(cmd) == 0);
    }
}

ITEST_MAIN(ITEST(seccomp_filters_sandbox_threads), ITEST(no_seccomp_option), ITEST(isolated_mode),
           ITEST(isolated_snapshots_policy_lifetime), ITEST(isolated_vmm_killed),
           ITEST(isolated_without_network), ITEST(isolated_in_a_cgroup),
           ITEST(isolated_without_cap_sys_admin), ITEST(interrupt_from_a_signal_handler),
           ITEST(killed_while_pausing), ITEST(destroy_during_calls), ITEST(fork_bomb_contained))
