// SPDX-License-Identifier: Apache-2.0
/* envd's PID 1 duties: early mounts, kernel command line, switch to the root disk, power off. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "envd.h"

#define RAMFS_MAGIC 0x858458f6
#define TMPFS_MAGIC 0x01021994

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* mkdir that is quiet about existing directories (also on a read-only root). */
static void ensure_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST)
        log_msg("mkdir %s: %s", path, strerror(errno));
}

/* Mounts that are part of a working guest but whose failure does not stop envd. */
static void mount_soft(const char *src, const char *dst, const char *type, unsigned long flags,
                       const char *data)
{
    ensure_dir(dst, 0755);
    if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY)
        log_msg("mount %s on %s: %s", type, dst, strerror(errno));
}

void init_fatal(const struct envd_config *cfg, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_msg("fatal: %s", msg);
    if (cfg->test_mode || getpid() != 1)
        exit(1);
    sync();
    /* With reboot=k the VMM sees the reset and ends the VM; the line above is the last thing
       on the console, so it shows up in the host's error message. */
    reboot(RB_AUTOBOOT);
    for (;;)
        pause(); /* PID 1 must never exit: that would panic the kernel */
}

/* --- kernel command line ------------------------------------------------------------------- */

static void set_param(struct envd_config *cfg, const char *key, const char *val)
{
    if (strcmp(key, "sbx.root") == 0) {
        snprintf(cfg->root, sizeof(cfg->root), "%s", val);
    } else if (strcmp(key, "sbx.rootfstype") == 0) {
        snprintf(cfg->rootfstype, sizeof(cfg->rootfstype), "%s", val);
    } else if (strcmp(key, "sbx.rootflags") == 0) {
        snprintf(cfg->rootflags, sizeof(cfg->rootflags), "%s", val);
    } else if (strcmp(key, "sbx.port") == 0) {
        char *end;
        errno = 0;
        unsigned long p = strtoul(val, &end, 10);
        /* VMADDR_PORT_ANY (-1U) cannot be listened on. */
        if (errno || *end || end == val || p == 0 || p >= 0xffffffffUL)
            log_msg("ignoring bad sbx.port=%s, using %u", val, cfg->port);
        else
            cfg->port = (uint32_t)p;
    }
}

/* Splits the command line like the kernel does (spaces separate, double quotes group) and
   picks out sbx.* parameters; everything after "--" belongs to init's argv, not to us. */
static void parse_cmdline(struct envd_config *cfg, char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            return;
        char *tok = s, *o = s;
        bool quoted = false;
        for (; *s && (quoted || (*s != ' ' && *s != '\t' && *s != '\n')); s++) {
            if (*s == '"')
                quoted = !quoted;
            else
                *o++ = *s;
        }
        bool more = *s != '\0';
        *o = '\0';
        if (more)
            s++;
        if (strcmp(tok, "--") == 0)
            return;
        char *eq = strchr(tok, '=');
        if (eq && strncmp(tok, "sbx.", 4) == 0) {
            *eq = '\0';
            set_param(cfg, tok, eq + 1);
        }
        if (!more)
            return;
    }
}

static void read_cmdline(struct envd_config *cfg)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_msg("open /proc/cmdline: %s (using defaults)", strerror(errno));
        return;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        log_msg("read /proc/cmdline: %s (using defaults)", strerror(errno));
        return;
    }
    buf[n] = '\0';
    parse_cmdline(cfg, buf);
}

/* --- root filesystem ----------------------------------------------------------------------- */

/* Splits mount(8)-style options into MS_* flags and the filesystem's own data string. */
static unsigned long parse_rootflags(const char *opts, char *data, size_t cap)
{
    static const struct {
        const char *name;
        unsigned long set, clear;
    } known[] = {
        {"ro", MS_RDONLY, 0},
        {"rw", 0, MS_RDONLY},
        {"nosuid", MS_NOSUID, 0},
        {"suid", 0, MS_NOSUID},
        {"nodev", MS_NODEV, 0},
        {"dev", 0, MS_NODEV},
        {"noexec", MS_NOEXEC, 0},
        {"exec", 0, MS_NOEXEC},
        {"sync", MS_SYNCHRONOUS, 0},
        {"async", 0, MS_SYNCHRONOUS},
        {"dirsync", MS_DIRSYNC, 0},
        {"noatime", MS_NOATIME, 0},
        {"nodiratime", MS_NODIRATIME, 0},
        {"relatime", MS_RELATIME, 0},
        {"strictatime", MS_STRICTATIME, 0},
        {"lazytime", MS_LAZYTIME, 0},
    };
    unsigned long flags = 0;
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", opts);
    data[0] = '\0';
    size_t dl = 0;
    char *save = NULL;
    for (char *o = strtok_r(tmp, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strcmp(o, known[i].name) == 0)
                break;
        if (i < sizeof(known) / sizeof(known[0])) {
            flags = (flags | known[i].set) & ~known[i].clear;
            continue;
        }
        int w = snprintf(data + dl, cap - dl, "%s%s", dl ? "," : "", o);
        if (w > 0 && (size_t)w < cap - dl)
            dl += (size_t)w;
    }
    return flags;
}

static void mount_root(const struct envd_config *cfg)
{
    char data[256];
    unsigned long flags = parse_rootflags(cfg->rootflags, data, sizeof(data));
    ensure_dir("/newroot", 0755);
    /* devtmpfs creates the node when the disk driver probes, which may still be running.
       Wait for the node first: every failed mount attempt also costs a kernel log line. */
    uint64_t give_up = mono_ms() + 2000;
    while (strncmp(cfg->root, "/dev/", 5) == 0 && access(cfg->root, F_OK) < 0 &&
           mono_ms() < give_up)
        sleep_ms(5);
    for (;;) {
        if (mount(cfg->root, "/newroot", cfg->rootfstype, flags, data[0] ? data : NULL) == 0)
            return;
        int e = errno;
        if ((e == EACCES || e == EROFS) && !(flags & MS_RDONLY)) {
            /* A read-only disk: like the kernel's own root mount, fall back to read-only. */
            flags |= MS_RDONLY;
            log_msg("root %s is read-only, mounting it read-only", cfg->root);
            continue;
        }
        if (e == ENXIO && mono_ms() < give_up) {
            sleep_ms(10);
            continue;
        }
        init_fatal(cfg, "cannot mount root filesystem %s (%s%s%s) on /newroot: %s", cfg->root,
                   cfg->rootfstype, cfg->rootflags[0] ? ", " : "", cfg->rootflags, strerror(e));
    }
}

/* Deletes the initramfs contents (it stays mounted as the hidden rootfs; its files would pin
   memory forever). Stays on its filesystem: mount points below are left alone. */
static void remove_tree(int dirfd, dev_t dev)
{
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                remove_tree(sub, dev);
            unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, e->d_name, 0);
        }
    }
    closedir(d);
}

/* switch_root(8) while staying PID 1: the initramfs is the rootfs, which cannot be
   pivot_root'ed away, so move the new root over it and chroot into it. */
static void switch_root(const struct envd_config *cfg)
{
    static const char *const moves[] = {"/dev", "/proc", "/sys"};
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
        char dst[64];
        snprintf(dst, sizeof(dst), "/newroot%s", moves[i]);
        ensure_dir(dst, 0755);
        if (mount(moves[i], dst, NULL, MS_MOVE, NULL) < 0) {
            log_msg("move %s to the new root: %s", moves[i], strerror(errno));
            umount2(moves[i], MNT_DETACH);
        }
    }
    if (chdir("/newroot") < 0)
        init_fatal(cfg, "chdir /newroot: %s", strerror(errno));
    int oldroot = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mount("/newroot", "/", NULL, MS_MOVE, NULL) < 0)
        init_fatal(cfg, "move /newroot to /: %s", strerror(errno));
    if (chroot(".") < 0 || chdir("/") < 0)
        init_fatal(cfg, "chroot to the new root: %s", strerror(errno));
    if (oldroot < 0)
        return;
    /* Only ever delete from a RAM filesystem, never from a disk. */
    struct statfs sfs;
    struct stat st;
    if (fstatfs(oldroot, &sfs) == 0 && fstat(oldroot, &st) == 0 &&
        ((unsigned long)sfs.f_type == RAMFS_MAGIC || (unsigned long)sfs.f_type == TMPFS_MAGIC))
        remove_tree(oldroot, st.st_dev);
    else
        close(oldroot);
}

static void mount_api_filesystems(void)
{
    const unsigned long common = MS_NOSUID | MS_NOEXEC;
    mount_soft("devpts", "/dev/pts", "devpts", common, "ptmxmode=0666,gid=5,mode=0620");
    mount_soft("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    /* /tmp stays on the root disk, as in a container image: what a template's RUN step leaves
       there is part of its layer, and of the template. */
    if (mkdir("/tmp", 01777) == 0 || errno == EEXIST)
        (void)!chmod("/tmp", 01777);
    mount_soft("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mount_soft("cgroup2", "/sys/fs/cgroup", "cgroup2", common | MS_NODEV, NULL);
    /* What udev or systemd would normally create; bash process substitution needs /dev/fd. */
    static const char *const links[][2] = {
        {"/proc/self/fd", "/dev/fd"},
        {"/proc/self/fd/0", "/dev/stdin"},
        {"/proc/self/fd/1", "/dev/stdout"},
        {"/proc/self/fd/2", "/dev/stderr"},
    };
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
        if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
            log_msg("symlink %s: %s", links[i][1], strerror(errno));
}

void init_set_hostname(const struct envd_config *cfg, const char *name)
{
    if (cfg->test_mode || !name[0])
        return;
    if (sethostname(name, strlen(name)) < 0)
        log_msg("sethostname %s: %s", name, strerror(errno));
}

void init_os_name(char *out, size_t cap)
{
    static const char *const paths[] = {"/etc/os-release", "/usr/lib/os-release"};
    out[0] = 0;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        FILE *f = fopen(paths[i], "re");
        if (!f)
            continue;
        char line[512];
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "PRETTY_NAME=", 12) != 0)
                continue;
            char *v = line + 12;
            v[strcspn(v, "\n")] = 0;
            size_t n = strlen(v);
            if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
                v[n - 1] = 0;
                v++;
            }
            snprintf(out, cap, "%s", v);
            break;
        }
        fclose(f);
        return;
    }
}

void init_set_clock(const struct envd_config *cfg, uint64_t realtime_ns)
{
    if (cfg->test_mode || realtime_ns == 0)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t diff =
        (int64_t)(realtime_ns - ((uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec));
    /* Hello takes a moment to arrive; stepping for small differences would only make the
       clock jitter back and forth across connections. After a snapshot restore it is off
       by minutes or more. */
    if (diff > -10000000 && diff < 10000000)
        return;
    struct timespec ts = {.tv_sec = (time_t)(realtime_ns / 1000000000ull),
                          .tv_nsec = (long)(realtime_ns % 1000000000ull)};
    if (clock_settime(CLOCK_REALTIME, &ts) < 0)
        log_msg("clock_settime: %s", strerror(errno));
}

void init_system(struct envd_config *cfg)
{
    /* Before anything can fail: the log goes to /dev/console, which devtmpfs provides (the
       initramfs's own node works too if devtmpfs does not mount). */
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY) {
        log_open(true);
        log_msg("mount devtmpfs on /dev: %s", strerror(errno));
    }
    log_open(true);
    log_msg("envd %s starting", ENVD_VERSION);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        log_msg("mount proc on /proc: %s", strerror(errno));
    if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        log_msg("mount sysfs on /sys: %s", strerror(errno));
    read_cmdline(cfg);
    mount_root(cfg);
    switch_root(cfg);
    mount_api_filesystems();
    init_set_hostname(cfg, "sbx");
    net_loopback_up();
}

/* --- power off ----------------------------------------------------------------------------- */

/* Reaps children until none is left or ms ran out. */
static void reap_for(unsigned ms)
{
    uint64_t until = mono_ms() + ms;
    for (;;) {
        pid_t p;
        while ((p = waitpid(-1, NULL, WNOHANG)) > 0)
            ;
        if (p < 0 && errno == ECHILD)
            return;
        if (mono_ms() >= until)
            return;
        sleep_ms(5);
    }
}

/* Undoes the octal escapes (\040 for space, ...) of /proc/self/mounts in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Unmounts disk filesystems, newest first, so their journals are clean; RAM and kernel
   filesystems do not matter and /proc is needed to read the list. */
static void unmount_disks(void)
{
    FILE *f = fopen("/proc/self/mounts", "re");
    if (!f)
        return;
    char *points[64];
    size_t n = 0;
    char line[1024];
    while (n < sizeof(points) / sizeof(points[0]) && fgets(line, sizeof(line), f)) {
        char src[256], dst[512], type[64];
        if (sscanf(line, "%255s %511s %63s", src, dst, type) != 3)
            continue;
        if (strncmp(src, "/dev/", 5) != 0 || strcmp(dst, "/") == 0)
            continue;
        unescape(dst);
        points[n] = strdup(dst);
        if (points[n])
            n++;
    }
    fclose(f);
    while (n > 0) {
        char *p = points[--n];
        if (umount2(p, 0) < 0 && mount(NULL, p, NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
            log_msg("unmount %s: %s", p, strerror(errno));
        free(p);
    }
}

void init_poweroff(const struct envd_config *cfg)
{
    /* Outside a guest (test mode) kill(-1) and reboot would hit the host. */
    if (cfg->test_mode || getpid() != 1)
        exit(0);
    /* Processes with files open for writing would keep the root from going read-only. */
    kill(-1, SIGTERM);
    reap_for(1000);
    kill(-1, SIGKILL);
    reap_for(1000);
    sync();
    unmount_disks();
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0)
        log_msg("remount / read-only: %s", strerror(errno));
    sync();
    reboot(RB_AUTOBOOT);
    log_msg("reboot: %s", strerror(errno));
    for (;;)
        pause();
}
