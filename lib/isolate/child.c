// SPDX-License-Identifier: Apache-2.0
/*
 * The isolated mode, child side: sbx-vmm creates the sandbox its parent described, jails
 * itself, and serves dials until its parent closes the control socket (lib/isolate/isolate.h).
 * It runs already inside its namespaces (the parent started it with clone flags).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "isolate.pb-c.h"
#include "isolate/isolate.h"
#include "registry.h"
#include "snap/snap.h"
#include "vmm/seccomp.h"
#include "vmm/vm.h"

#define MAX_OPTIONS_BYTES (8 << 20)
#define MAX_OPEN_FILES    4096 /* vsock connections (at most 1024) and the VM's own */

/* sbx_options pointing into the unpacked message (which must outlive it). */
struct unpacked {
    sbx_options o;
    sbx_disk disks[SBX_MAX_DISKS];
    char **envs, **meta, **allow, **deny, **hosts; /* NULL-terminated copies of the lists */
};

static char **list(bool given, size_t n, char **items)
{
    if (!given)
        return NULL;
    char **l = calloc(n + 1, sizeof(char *));
    if (l && n)
        memcpy(l, items, n * sizeof(char *));
    return l;
}

static int unpack_options(const Sbx__Isolate__Options *m, struct unpacked *u)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.kernel = m->kernel;
    o.rootfs = m->rootfs;
    o.vcpus = m->vcpus;
    o.memory_mib = m->memory_mib;
    o.boot_timeout_ms = m->boot_timeout_ms;
    o.console_fd = ISO_FD_CONSOLE;
    o.cmdline_extra = m->cmdline_extra;
    if (m->n_disks > SBX_MAX_DISKS)
        return -1;
    for (size_t i = 0; i < m->n_disks; i++)
        u->disks[i] = (sbx_disk){m->disks[i]->path, m->disks[i]->read_only, m->disks[i]->ephemeral,
                                 m->disks[i]->serial};
    o.disks = m->n_disks ? u->disks : NULL;
    o.ndisks = (unsigned)m->n_disks;
    o.image_dir = m->image_dir;
    u->envs = list(m->envs_given, m->n_envs, m->envs);
    u->meta = list(m->metadata_given, m->n_metadata, m->metadata);
    u->allow = list(m->allow_out_given, m->n_allow_out, m->allow_out);
    u->deny = list(m->deny_out_given, m->n_deny_out, m->deny_out);
    u->hosts = list(m->hosts_given, m->n_hosts, m->hosts);
    if ((m->envs_given && !u->envs) || (m->metadata_given && !u->meta) ||
        (m->allow_out_given && !u->allow) || (m->deny_out_given && !u->deny) ||
        (m->hosts_given && !u->hosts))
        return -1;
    o.envs = (const char *const *)u->envs;
    o.default_user = m->default_user;
    o.metadata = (const char *const *)u->meta;
    o.lifetime_ms = m->lifetime_ms;
    o.network = m->network;
    o.net_policy.block_internet = m->block_internet;
    o.net_policy.allow_out = (const char *const *)u->allow;
    o.net_policy.deny_out = (const char *const *)u->deny;
    o.hosts = (const char *const *)u->hosts;
    o.host_loopback = m->host_loopback;
    o.tap_name = m->tap_name;
    o.tap_address = m->tap_address;
    o.tap_gateway = m->tap_gateway;
    o.tap_dns = m->tap_dns;
    o.template_name = m->template_name;
    o.template_dir = m->template_dir;
    o.no_seccomp = m->no_seccomp;
    o.max_processes = m->max_processes;
    o.max_buffer_mib = m->max_buffer_mib;
    u->o = o;
    return 0;
}

static Sbx__Isolate__Options *read_options(void)
{
    size_t len = 0;
    uint8_t *buf = iso_memfd_read(ISO_FD_OPTIONS, MAX_OPTIONS_BYTES, &len);
    close(ISO_FD_OPTIONS);
    Sbx__Isolate__Options *m = buf ? sbx__isolate__options__unpack(NULL, len, buf) : NULL;
    free(buf);
    return m;
}

static void send_event(const struct iso_event *ev)
{
    (void)!send(ISO_FD_CTL, ev, sizeof(*ev), MSG_NOSIGNAL);
}

static int fail(struct iso_event *ev, int code, const char *what)
{
    ev->type = ISO_FAILED;
    ev->code = code;
    snprintf(ev->msg, sizeof(ev->msg), "isolated mode: %s: %s", what, strerror(errno));
    send_event(ev);
    return 1;
}

/* An empty, read-only root: the VMM has every file it needs open already. libslirp reads
   the host's DNS server from /etc/resolv.conf, so a copy of that goes along. */
static int jail(void)
{
    char resolv[8192];
    ssize_t rn = -1;
    int fd = open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        rn = read(fd, resolv, sizeof(resolv));
        close(fd);
    }
    if (mount("sbx-vmm", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755") <
            0 ||
        mkdir("/tmp/etc", 0755) < 0 || mkdir("/tmp/old", 0700) < 0)
        return -1;
    if (rn > 0) {
        fd = open("/tmp/etc/resolv.conf", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, resolv, (size_t)rn) != rn)
            return -1;
        close(fd);
    }
    if (syscall(SYS_pivot_root, "/tmp", "/tmp/old") < 0 || chdir("/") < 0 ||
        umount2("/old", MNT_DETACH) < 0 || rmdir("/old") < 0)
        return -1;
    return mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

/* No capabilities (the open /dev/kvm needs none), no way to regain any, bounded resources. */
static int drop_privileges(void)
{
    struct rlimit files = {MAX_OPEN_FILES, MAX_OPEN_FILES}, none = {0, 0};
    if (setrlimit(RLIMIT_NOFILE, &files) < 0 || setrlimit(RLIMIT_CORE, &none) < 0 ||
        setrlimit(RLIMIT_MEMLOCK, &none) < 0)
        return -1;
    int r = thread_drop_caps(); /* the VMM's threads dropped theirs when they started */
    if (r < 0) {
        errno = -r;
        return -1;
    }
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

static int network_update(struct sbx *sb, int fd)
{
    size_t len = 0;
    uint8_t *buf = iso_memfd_read(fd, MAX_OPTIONS_BYTES, &len);
    Sbx__Isolate__NetPolicy *m = buf ? sbx__isolate__net_policy__unpack(NULL, len, buf) : NULL;
    free(buf);
    if (!m)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_network_update: the policy did not arrive");
    char **allow = list(m->allow_out_given, m->n_allow_out, m->allow_out);
    char **deny = list(m->deny_out_given, m->n_deny_out, m->deny_out);
    int r;
    if ((m->allow_out_given && !allow) || (m->deny_out_given && !deny)) {
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    } else {
        sbx_net_policy p = {m->block_internet, (const char *const *)allow,
                            (const char *const *)deny};
        r = sbx_network_update(sb, &p);
    }
    free(allow);
    free(deny);
    sbx__isolate__net_policy__free_unpacked(m, NULL);
    return r;
}

/* The files a request of `type` comes with, after the reply socket. */
static unsigned files_of(uint32_t type)
{
    return type == ISO_NET_UPDATE ? 1 : type == ISO_SNAPSHOT || type == ISO_PAUSE ? SNAP_NFDS : 0;
}

/* Carries out one request; the reply goes to the socket that came first with it. */
static void serve(struct sbx *sb, const struct iso_request *rq, const int *fds, unsigned nfds)
{
    struct iso_reply rep;
    memset(&rep, 0, sizeof(rep));
    int fd = -1;
    if (nfds != 1 + files_of(rq->type))
        rep.rc = sbx_seterr(sb, SBX_EINVAL, "isolated mode: request %u with %u files", rq->type,
                            nfds - 1);
    else if (rq->type == ISO_DIAL) {
        if ((rep.rc = vm_vsock_connect(sb, rq->port, &fd)) < 0)
            sbx_seterr(sb, rep.rc, "cannot connect to guest port %u", rq->port);
    } else if (rq->type == ISO_SET_TIMEOUT)
        rep.rc = sbx_set_timeout(sb, rq->ms);
    else if (rq->type == ISO_NET_STATS)
        rep.rc = sbx_network_stats(sb, &rep.stats);
    else if (rq->type == ISO_NET_UPDATE)
        rep.rc = network_update(sb, fds[1]);
    else if (rq->type == ISO_SNAPSHOT || rq->type == ISO_PAUSE)
        rep.rc = snap_capture_fds(sb, fds + 1, rq->type == ISO_PAUSE);
    else
        rep.rc = sbx_seterr(sb, SBX_EINVAL, "isolated mode: unknown request %u", rq->type);
    if (rep.rc < 0)
        snprintf(rep.msg, sizeof(rep.msg), "%s", sbx_errmsg(sb));
    (void)iso_send(fds[0], &rep, sizeof(rep), &fd, fd >= 0 ? 1 : 0);
    if (fd >= 0)
        close(fd);
}

int iso_child_main(void)
{
    struct iso_event ev;
    memset(&ev, 0, sizeof(ev));
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* Mounts made here stay here. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return fail(&ev, SBX_EIO, "making the mounts private");
    Sbx__Isolate__Options *m = read_options();
    struct unpacked u;
    memset(&u, 0, sizeof(u));
    if (!m || unpack_options(m, &u) < 0)
        return fail(&ev, SBX_EINVAL, "unreadable options");

    sbx *sb = NULL;
    int r = m->origin
                ? sbx_create_origin(&sb, &u.o, m->snapshot_dir, m->origin, SBX_CREATE_DROP_CAPS)
                : sbx_create_flags(&sb, &u.o, SBX_CREATE_DROP_CAPS);
    if (r < 0) {
        ev.type = ISO_FAILED;
        ev.code = r;
        snprintf(ev.msg, sizeof(ev.msg), "%s", sb ? sbx_errmsg(sb) : "out of memory");
        send_event(&ev);
        return 1;
    }
    registry_remove(sb); /* the parent lists it */
    sb->unlisted = true;
    if (sb->root_disk && !sb->ndisks)
        (void)snap_pin(sb); /* for snapshots; a failure shows again when one is asked for */
    if (jail() < 0)
        return fail(&ev, SBX_EIO, "cannot set up the empty root");
    if (drop_privileges() < 0)
        return fail(&ev, SBX_EIO, "cannot drop privileges");
    char err[256] = "seccomp";
    struct thread_filter *f = NULL;
    if (sb->seccomp && (!(f = thread_filter_new(THREAD_SERVER, false, err, sizeof(err))) ||
                        thread_filter_enter(f) < 0))
        return fail(&ev, SBX_EIO, err);

    ev.type = ISO_READY;
    sbx_get_info(sb, &ev.info);
    ev.features = sb->features;
    send_event(&ev);

    bool reported = false;
    for (;;) {
        struct pollfd p[2] = {{ISO_FD_CTL, POLLIN, 0}, {sb->dead_fd, POLLIN, 0}};
        if (poll(p, reported ? 1 : 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (!reported && p[1].revents) {
            memset(&ev, 0, sizeof(ev));
            ev.type = ISO_STOPPED;
            ev.state = sbx_state(sb);
            pthread_mutex_lock(&sb->stop_lock);
            snprintf(ev.msg, sizeof(ev.msg), "%s", sb->stop_msg);
            pthread_mutex_unlock(&sb->stop_lock);
            send_event(&ev);
            reported = true;
        }
        if (p[0].revents & POLLIN) {
            struct iso_request rq;
            int fds[ISO_MAX_FDS];
            unsigned nfds = 0;
            ssize_t n = iso_recv(ISO_FD_CTL, &rq, sizeof(rq), fds, &nfds, 0);
            if (n <= 0)
                break; /* the parent is done with this sandbox */
            if (n == sizeof(rq) && nfds >= 1)
                serve(sb, &rq, fds, nfds);
            for (unsigned i = 0; i < nfds; i++)
                close(fds[i]);
        } else if (p[0].revents & (POLLHUP | POLLERR)) {
            break;
        }
    }
    /* The kernel takes the VM, its memory and the overlays away with the process. */
    return 0;
}
