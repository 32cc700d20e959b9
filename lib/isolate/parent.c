// SPDX-License-Identifier: Apache-2.0
/*
 * The isolated mode, parent side (lib/isolate/isolate.h): starts sbx-vmm in new namespaces,
 * hands it the options, waits for its sandbox, then proxies dials to it. A monitor thread per
 * sandbox reads the child's events and its console pipe (feeding the handle's console ring and
 * the caller's sink) and reaps it. Everything the child says is checked: it runs the VMM a
 * hostile guest talks to, so it may be compromised.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "isolate.pb-c.h"
#include "isolate/isolate.h"
#include "snap/snap.h"
#include "util/wait.h"
#include "vmm/serial.h"

#ifndef SBX_VMM_DEFAULT_PATH
#define SBX_VMM_DEFAULT_PATH "/usr/local/libexec/sbx-vmm"
#endif
#define DIAL_MS      10000  /* the child answers a dial at once; this is for a stuck child */
#define SNAPSHOT_MS  600000 /* writing the guest's memory and disk */
#define EXIT_WAIT_MS 5000   /* after the control socket closes, before SIGKILL */

extern char **environ;

/* ---- options ------------------------------------------------------------------------ */

/* A NULL-terminated list as a repeated field (pointing into the caller's list). */
static char **repeated(const char *const *l, size_t *n)
{
    *n = 0;
    if (!l)
        return NULL;
    while (l[*n])
        (*n)++;
    return (char **)l;
}

/* The options (and the snapshot to start from) as one packed message in a sealed memfd; -1
   on failure. */
static int pack_options(const sbx_options *o, const char *snapdir, unsigned how)
{
    static const sbx_options defaults = SBX_OPTIONS_INIT;
    if (!o)
        o = &defaults;
    Sbx__Isolate__Options m = SBX__ISOLATE__OPTIONS__INIT;
    Sbx__Isolate__Disk disks[SBX_MAX_DISKS], *dp[SBX_MAX_DISKS];
    m.kernel = (char *)o->kernel;
    m.rootfs = (char *)o->rootfs;
    m.has_vcpus = m.has_memory_mib = m.has_boot_timeout_ms = true;
    m.vcpus = o->vcpus;
    m.memory_mib = o->memory_mib;
    m.boot_timeout_ms = o->boot_timeout_ms;
    m.cmdline_extra = (char *)o->cmdline_extra;
    for (unsigned i = 0; i < o->ndisks && i < SBX_MAX_DISKS; i++) {
        sbx__isolate__disk__init(&disks[i]);
        disks[i].path = (char *)o->disks[i].path;
        disks[i].has_read_only = disks[i].has_ephemeral = true;
        disks[i].read_only = o->disks[i].read_only != 0;
        disks[i].ephemeral = o->disks[i].ephemeral != 0;
        disks[i].serial = (char *)o->disks[i].serial;
        dp[i] = &disks[i];
    }
    m.n_disks = o->ndisks;
    m.disks = dp;
    m.image_dir = (char *)o->image_dir;
    m.envs = repeated(o->envs, &m.n_envs);
    m.has_envs_given = m.envs_given = o->envs != NULL;
    m.default_user = (char *)o->default_user;
    m.metadata = repeated(o->metadata, &m.n_metadata);
    m.has_metadata_given = m.metadata_given = o->metadata != NULL;
    m.has_lifetime_ms = true;
    m.lifetime_ms = o->lifetime_ms;
    if (o->version >= 2) {
        m.has_network = m.has_block_internet = m.has_host_loopback = true;
        m.network = o->network;
        m.block_internet = o->net_policy.block_internet != 0;
        m.allow_out = repeated(o->net_policy.allow_out, &m.n_allow_out);
        m.has_allow_out_given = m.allow_out_given = o->net_policy.allow_out != NULL;
        m.deny_out = repeated(o->net_policy.deny_out, &m.n_deny_out);
        m.has_deny_out_given = m.deny_out_given = o->net_policy.deny_out != NULL;
        m.hosts = repeated(o->hosts, &m.n_hosts);
        m.has_hosts_given = m.hosts_given = o->hosts != NULL;
        m.host_loopback = o->host_loopback != 0;
        m.tap_name = (char *)o->tap_name;
        m.tap_address = (char *)o->tap_address;
        m.tap_gateway = (char *)o->tap_gateway;
        m.tap_dns = (char *)o->tap_dns;
    }
    if (o->version >= 3) {
        m.template_name = (char *)o->template_name;
        m.template_dir = (char *)o->template_dir;
    }
    m.has_no_seccomp = true;
    m.no_seccomp = o->version >= 4 && o->no_seccomp;
    m.has_max_processes = m.has_max_buffer_mib = true;
    m.max_processes = o->version >= 4 ? o->max_processes : 0;
    m.max_buffer_mib = o->version >= 5 ? o->max_buffer_mib : 0;

    m.snapshot_dir = (char *)snapdir;
    m.has_origin = how != 0;
    m.origin = how;

    return iso_memfd(&m.base);
}

/* ---- the child ---------------------------------------------------------------------- */

/* In the new child, before exec: only async-signal-safe calls. */
static void child_exec(const char *path, int opts_fd, int ctl_fd, int con_fd, int cg_fd,
                       int sync_fd)
{
    char go;
    if (sync_fd >= 0 && read(sync_fd, &go, 1) != 1) /* its user namespace's maps are written */
        _exit(124);
    int a = fcntl(opts_fd, F_DUPFD, 10), b = fcntl(ctl_fd, F_DUPFD, 10),
        c = fcntl(con_fd, F_DUPFD, 10);
    if (a < 0 || b < 0 || c < 0 || dup2(a, ISO_FD_OPTIONS) < 0 || dup2(b, ISO_FD_CTL) < 0 ||
        dup2(c, ISO_FD_CONSOLE) < 0)
        _exit(126);
    if (cg_fd >= 0 && write(cg_fd, "0", 1) != 1) /* joins the cgroup: "0" is the writer */
        _exit(125);
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
        _exit(126); /* the application's stdio is not the child's */
    syscall(SYS_close_range, ISO_FD_CONSOLE + 1, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    char *argv[] = {"sbx-vmm", NULL};
    execve(path, argv, environ);
    _exit(127);
}

static int write_file(pid_t pid, const char *name, const char *text)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? write(fd, text, strlen(text)) : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    errno = e;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Without CAP_SYS_ADMIN: the child in a new user namespace too, where the caller's user and
   group are root (and it has the capabilities the jail needs, over its own namespaces only).
   It waits until the maps are written. Returns its pid, or -1 with errno set. */
static pid_t start_in_userns(const char *path, unsigned long flags, int opts_fd, int ctl_fd,
                             int con_fd, int cg_fd)
{
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0)
        return -1;
    uid_t uid = geteuid();
    gid_t gid = getegid();
    pid_t pid = (pid_t)syscall(SYS_clone, flags | CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0);
    if (pid == 0)
        child_exec(path, opts_fd, ctl_fd, con_fd, cg_fd, sync[0]);
    int e = errno;
    close(sync[0]);
    if (pid > 0) {
        char map[64];
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)uid);
        bool ok = write_file(pid, "uid_map", map) == 0 && write_file(pid, "setgroups", "deny") == 0;
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)gid);
        if (ok && write_file(pid, "gid_map", map) == 0 && write(sync[1], "g", 1) == 1) {
            close(sync[1]);
            return pid;
        }
        e = errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
    }
    close(sync[1]);
    errno = e;
    return pid;
}

static void describe_exit(int status, char *buf, size_t cap)
{
    if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
}

/* Reads console output the child wrote; false at its end. */
static bool drain_console(struct sbx *sb)
{
    char buf[4096];
    for (;;) {
        ssize_t n = read(sb->iso_console, buf, sizeof(buf));
        if (n > 0) {
            serial_feed(&sb->serial, buf, (size_t)n);
            if (sb->console_fd > 0)
                (void)!write(sb->console_fd, buf, (size_t)n);
            continue;
        }
        return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
}

/* One event from the child, checked; false if there is none (end or garbage). */
static bool read_event(struct sbx *sb, struct iso_event *ev)
{
    ssize_t n = recv(sb->iso_ctl, ev, sizeof(*ev), MSG_DONTWAIT);
    if (n != (ssize_t)sizeof(*ev))
        return false;
    ev->msg[sizeof(ev->msg) - 1] = 0;
    ev->info.id[sizeof(ev->info.id) - 1] = 0;
    ev->info.kernel_release[sizeof(ev->info.kernel_release) - 1] = 0;
    ev->info.envd_version[sizeof(ev->info.envd_version) - 1] = 0;
    ev->info.os_name[sizeof(ev->info.os_name) - 1] = 0;
    return true;
}

static void *monitor(void *arg)
{
    struct sbx *sb = arg;
    bool console_open = true;
    for (;;) {
        struct pollfd p[2] = {{sb->iso_ctl, POLLIN, 0}, {sb->iso_console, POLLIN, 0}};
        if (poll(p, console_open ? 2 : 1, -1) < 0 && errno != EINTR)
            break;
        if (console_open && p[1].revents)
            console_open = drain_console(sb);
        if (p[0].revents & POLLIN) {
            struct iso_event ev;
            if (!read_event(sb, &ev))
                break;
            if (ev.type == ISO_STOPPED)
                sbx_stop(sb, ev.state == SBX_STATE_STOPPED ? SBX_STATE_STOPPED : SBX_STATE_FAILED,
                         "%s", ev.msg);
        } else if (p[0].revents & (POLLHUP | POLLERR)) {
            break;
        }
    }
    /* The child closed its end, died, or said something that makes no sense: it goes. */
    iso_kill(sb);
    if (console_open)
        drain_console(sb);
    int status = 0;
    while (waitpid(sb->iso_pid, &status, 0) < 0 && errno == EINTR)
        ;
    char how[128];
    describe_exit(status, how, sizeof(how));
    if (!atomic_load(&sb->iso_stopping))
        sbx_stop(sb, SBX_STATE_FAILED, "the isolated VMM process (pid %d) %s", (int)sb->iso_pid,
                 how);
    return NULL;
}

/* Waits for the child's first event: ready or failed. */
static int await_ready(struct sbx *sb, uint64_t deadline_ns)
{
    for (;;) {
        int64_t left = (int64_t)(deadline_ns - now_ns()) / 1000000;
        if (left <= 0)
            return sbx_seterr(sb, SBX_ETIMEDOUT,
                              "isolated mode: the VMM process did not start "
                              "the sandbox in time");
        struct pollfd p[3] = {
            {sb->iso_ctl, POLLIN, 0}, {sb->iso_console, POLLIN, 0}, {sb->intr_fd, POLLIN, 0}};
        if (poll(p, 3, (int)(left > 1000 ? 1000 : left)) < 0 && errno != EINTR)
            return sbx_seterr(sb, SBX_EIO, "poll: %s", strerror(errno));
        if (p[1].revents)
            drain_console(sb);
        if (p[2].revents)
            return sbx_seterr(sb, SBX_EINTR, "sbx_create interrupted");
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        struct iso_event ev;
        if (!read_event(sb, &ev)) {
            int status = 0;
            char how[128];
            kill(sb->iso_pid, SIGKILL);
            waitpid(sb->iso_pid, &status, 0);
            sb->iso_pid = 0;
            describe_exit(status, how, sizeof(how));
            return sbx_seterr(sb, SBX_EIO,
                              "isolated mode: the VMM process %s before the sandbox "
                              "ran",
                              how);
        }
        if (ev.type == ISO_READY) {
            size_t idlen = strlen(ev.info.id);
            if (idlen == 0 || strspn(ev.info.id, "abcdefghijklmnopqrstuvwxyz0123456789") != idlen)
                return sbx_seterr(sb, SBX_EPROTO, "isolated mode: the VMM process sent a bad id");
            sb->info = ev.info;
            atomic_store(&sb->ends_ns, ev.info.ends_ns); /* shown only; the child enforces it */
            sb->features = ev.features;
            snprintf(sb->id, sizeof(sb->id), "%s", ev.info.id);
            return 0;
        }
        bool known = ev.type == ISO_FAILED && ev.code < 0 && ev.code >= SBX_EAGAIN;
        return sbx_seterr(sb, known ? ev.code : SBX_EPROTO, "%s", ev.msg);
    }
}

int iso_start(struct sbx *sb, const sbx_options *o, const char *snapdir, unsigned how)
{
    const char *path = getenv("SBX_VMM_PATH");
    if (!path || !*path)
        path = SBX_VMM_DEFAULT_PATH;
    if (access(path, X_OK) < 0)
        return sbx_seterr(sb, SBX_ENOTSUP,
                          "isolated mode: the VMM program %s: %s (SBX_VMM_PATH names another)",
                          path, strerror(errno));
    int cg_fd = -1;
    if (sb->iso_cgroup) {
        char procs[4096];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", sb->iso_cgroup);
        if ((cg_fd = open(procs, O_WRONLY | O_CLOEXEC)) < 0)
            return sbx_seterr(sb, SBX_EINVAL, "options.cgroup: %s: %s", procs, strerror(errno));
    }
    int opts_fd = pack_options(o, snapdir, how), sv[2] = {-1, -1}, cp[2] = {-1, -1};
    int r = 0;
    if (opts_fd < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe2(cp, O_CLOEXEC | O_NONBLOCK) < 0)
        r = sbx_seterr(sb, SBX_EIO, "isolated mode: %s", strerror(errno));
    unsigned long flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;
    if (sb->network == SBX_NET_NONE)
        flags |= CLONE_NEWNET;
    pid_t pid = -1;
    if (r == 0) {
        pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
        if (pid == 0)
            child_exec(path, opts_fd, sv[1], cp[1], cg_fd, -1);
        if (pid < 0 && errno == EPERM)
            pid = start_in_userns(path, flags, opts_fd, sv[1], cp[1], cg_fd);
        if (pid < 0)
            r = sbx_seterr(sb, errno == EPERM ? SBX_ENOTSUP : SBX_EIO,
                           "isolated mode: cannot start the VMM process in new namespaces: %s%s",
                           strerror(errno),
                           errno == EPERM ? " (it needs CAP_SYS_ADMIN or user namespaces)" : "");
    }
    if (opts_fd >= 0)
        close(opts_fd);
    if (cg_fd >= 0)
        close(cg_fd);
    if (sv[1] >= 0)
        close(sv[1]);
    if (cp[1] >= 0)
        close(cp[1]);
    sb->iso_ctl = sv[0];
    sb->iso_console = cp[0];
    if (r < 0)
        return r;
    sb->iso_pid = pid;
    sb->iso_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    r = await_ready(sb, now_ns() + (uint64_t)(sb->boot_timeout_ms + EXIT_WAIT_MS) * 1000000ull);
    if (r < 0)
        return r;
    if ((r = pthread_create(&sb->iso_monitor, NULL, monitor, sb)) != 0)
        return sbx_seterr(sb, SBX_ENOMEM, "isolated mode: cannot start the monitor thread: %s",
                          strerror(r));
    sb->iso_monitor_running = true;
    return 0;
}

/* Sends a request with `nfds` descriptors attached and waits up to `ms` for the reply (the
   child's message becomes the handle's). With `fd`, the reply must carry a socket, which goes
   there. Returns 0 or an SBX_E* code. */
static int call(struct sbx *sb, const struct iso_request *rq, const int *fds, unsigned nfds,
                struct iso_reply *rep, int *fd, int ms)
{
    if (fd)
        *fd = -1;
    int sv[2], att[ISO_MAX_FDS];
    if (nfds >= ISO_MAX_FDS || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return sbx_seterr(sb, SBX_EIO, "isolated mode: socketpair: %s", strerror(errno));
    att[0] = sv[1];
    memcpy(att + 1, fds, nfds * sizeof(int));
    ssize_t sent = iso_send(sb->iso_ctl, rq, sizeof(*rq), att, nfds + 1);
    close(sv[1]);
    int r = SBX_EDEAD;
    const char *why = "the isolated VMM process is gone";
    if (sent == (ssize_t)sizeof(*rq)) {
        struct pollfd p = {sv[0], POLLIN, 0};
        int got[ISO_MAX_FDS], pr;
        unsigned ngot = 0;
        while ((pr = poll(&p, 1, ms)) < 0 && errno == EINTR)
            ;
        ssize_t n = pr == 1 ? iso_recv(sv[0], rep, sizeof(*rep), got, &ngot, 0) : -1;
        struct stat st;
        rep->msg[sizeof(rep->msg) - 1] = 0;
        if (pr == 0) {
            r = SBX_ETIMEDOUT;
            why = "the isolated VMM process did not answer in time";
        } else if (n <= 0) {
            /* closed without a word: the child is gone */
        } else if (n != (ssize_t)sizeof(*rep) || rep->rc > 0 || rep->rc < SBX_EAGAIN ||
                   (rep->rc == 0 && fd && ngot != 1) || (rep->rc < 0 && !rep->msg[0])) {
            r = SBX_EPROTO;
            why = "the isolated VMM process sent a reply that makes no sense";
        } else if (rep->rc < 0) {
            r = rep->rc;
            why = rep->msg;
        } else if (!fd) {
            r = 0;
        } else if (fstat(got[0], &st) == 0 && S_ISSOCK(st.st_mode) &&
                   fcntl(got[0], F_SETFL, O_NONBLOCK) == 0) {
            *fd = got[0];
            got[0] = -1;
            r = 0;
        } else {
            r = SBX_EPROTO;
            why = "the isolated VMM process sent something that is not a socket";
        }
        for (unsigned i = 0; i < ngot; i++)
            if (got[i] >= 0)
                close(got[i]);
    }
    close(sv[0]);
    return r == 0 ? 0 : sbx_seterr(sb, r, "%s", why);
}

int iso_dial(struct sbx *sb, unsigned port, int *fd)
{
    struct iso_request rq = {.type = ISO_DIAL, .port = port};
    struct iso_reply rep;
    return call(sb, &rq, NULL, 0, &rep, fd, DIAL_MS);
}

int iso_set_timeout(struct sbx *sb, uint64_t ms)
{
    struct iso_request rq = {.type = ISO_SET_TIMEOUT, .ms = ms};
    struct iso_reply rep;
    return call(sb, &rq, NULL, 0, &rep, NULL, DIAL_MS);
}

int iso_network_update(struct sbx *sb, const sbx_net_policy *policy)
{
    Sbx__Isolate__NetPolicy m = SBX__ISOLATE__NET_POLICY__INIT;
    m.has_block_internet = true;
    m.block_internet = policy->block_internet != 0;
    m.allow_out = repeated(policy->allow_out, &m.n_allow_out);
    m.has_allow_out_given = m.allow_out_given = policy->allow_out != NULL;
    m.deny_out = repeated(policy->deny_out, &m.n_deny_out);
    m.has_deny_out_given = m.deny_out_given = policy->deny_out != NULL;
    int mfd = iso_memfd(&m.base);
    if (mfd < 0)
        return sbx_seterr(sb, SBX_ENOMEM, "sbx_network_update: cannot pass the policy: %s",
                          strerror(errno));
    struct iso_request rq = {.type = ISO_NET_UPDATE};
    struct iso_reply rep;
    int r = call(sb, &rq, &mfd, 1, &rep, NULL, DIAL_MS);
    close(mfd);
    return r;
}

int iso_network_stats(struct sbx *sb, sbx_net_stats *st)
{
    struct iso_request rq = {.type = ISO_NET_STATS};
    struct iso_reply rep;
    int r = call(sb, &rq, NULL, 0, &rep, NULL, DIAL_MS);
    if (r == 0)
        *st = rep.stats;
    return r;
}

int iso_snapshot(struct sbx *sb, const char *dir, bool pause)
{
    int fds[SNAP_NFDS];
    char err[SBX_ERRMSG_MAX];
    int r = snap_files_create(dir, fds, err, sizeof(err));
    if (r < 0)
        return sbx_seterr(sb, r, "%s", err);
    struct iso_request rq = {.type = pause ? ISO_PAUSE : ISO_SNAPSHOT};
    struct iso_reply rep;
    r = call(sb, &rq, fds, SNAP_NFDS, &rep, NULL, SNAPSHOT_MS);
    snap_files_close(fds);
    if (r == 0 && (r = snap_files_commit(dir, err, sizeof(err))) < 0)
        sbx_seterr(sb, r, "%s", err);
    if (r < 0)
        snap_remove(dir);
    return r;
}

void iso_stop(struct sbx *sb)
{
    atomic_store(&sb->iso_stopping, true);
    if (sb->iso_ctl >= 0)
        shutdown(sb->iso_ctl, SHUT_RDWR); /* the child's end of service: it exits */
    if (sb->iso_monitor_running) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += EXIT_WAIT_MS / 1000;
        if (pthread_timedjoin_np(sb->iso_monitor, NULL, &ts) != 0) {
            syscall(SYS_pidfd_send_signal, sb->iso_pidfd, SIGKILL, NULL, 0);
            pthread_join(sb->iso_monitor, NULL);
        }
        sb->iso_monitor_running = false;
    } else if (sb->iso_pid > 0) {
        kill(sb->iso_pid, SIGKILL);
        waitpid(sb->iso_pid, NULL, 0);
    }
    sb->iso_pid = 0;
    if (sb->iso_pidfd >= 0)
        close(sb->iso_pidfd);
    if (sb->iso_ctl >= 0)
        close(sb->iso_ctl);
    if (sb->iso_console >= 0)
        close(sb->iso_console);
    sb->iso_pidfd = sb->iso_ctl = sb->iso_console = -1;
}

void iso_kill(struct sbx *sb)
{
    if (sb->iso_pidfd >= 0)
        syscall(SYS_pidfd_send_signal, sb->iso_pidfd, SIGKILL, NULL, 0);
}
