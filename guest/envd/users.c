// SPDX-License-Identifier: Apache-2.0
/* envd: users and groups from /etc/passwd and /etc/group, and the Configure settings. */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "envd.h"

/* Limits on what a host may configure. */
#define MAX_ENTROPY 512
#define MAX_ENVS    1024
#define MAX_ENV_LEN (64u << 10)

/* The sandbox-wide settings (envd is single-threaded; this is its one copy). */
static char **cfg_envs;        /* NULL-terminated */
static char cfg_user[64];      /* "" = automatic */
static char cfg_cwd[4096];     /* "" = the user's home */
static int cfg_cgroup_fd = -1; /* the workload cgroup's cgroup.procs, once it exists */

#define WORKLOAD_CGROUP "/sys/fs/cgroup/sbx-workload"
#define MAX_TASKS       4194304 /* the kernel's PID_MAX_LIMIT */
static char *const no_envs[] = {NULL};

/* Parses a decimal id; false if s is not one. */
static bool parse_id(const char *s, uint32_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > 0xfffffffeu)
            return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* Splits a colon-separated line in place into at most max fields; returns the count. */
static int split(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\n")] = '\0';
    while (n < max) {
        f[n++] = line;
        char *c = strchr(line, ':');
        if (!c)
            break;
        *c = '\0';
        line = c + 1;
    }
    return n;
}

/* Finds a passwd entry by name (name != NULL) or by uid. */
static bool passwd_find(const char *name, uint32_t uid, struct envd_user *out)
{
    FILE *fp = fopen("/etc/passwd", "re");
    if (!fp)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof(line), fp)) {
        char *f[7];
        uint32_t u, g;
        if (split(line, f, 7) != 7 || !parse_id(f[2], &u) || !parse_id(f[3], &g))
            continue;
        if (name ? strcmp(f[0], name) != 0 : u != uid)
            continue;
        out->uid = u;
        out->gid = g;
        snprintf(out->name, sizeof(out->name), "%s", f[0]);
        snprintf(out->home, sizeof(out->home), "%s", f[5][0] ? f[5] : "/");
        snprintf(out->shell, sizeof(out->shell), "%s", f[6][0] ? f[6] : "/bin/sh");
        found = true;
    }
    fclose(fp);
    return found;
}

int user_lookup(const char *spec, struct envd_user *out)
{
    memset(out, 0, sizeof(*out));
    if (!spec || !*spec) {
        if (cfg_user[0])
            return user_lookup(cfg_user, out);
        /* Automatic: "user" when the image has one (E2B's default), else root. In test mode
           (an ordinary host process) whoever runs envd. */
        if (getuid() != 0) {
            char self[16];
            snprintf(self, sizeof(self), "%u", (unsigned)getuid());
            return user_lookup(self, out);
        }
        if (passwd_find("user", 0, out))
            return 0;
        return user_lookup("0", out);
    }
    if (strlen(spec) >= sizeof(out->name))
        return ENOENT;
    uint32_t id;
    if (parse_id(spec, &id)) {
        if (passwd_find(NULL, id, out))
            return 0;
        out->uid = out->gid = id;
        snprintf(out->name, sizeof(out->name), "%u", id);
        snprintf(out->home, sizeof(out->home), "/");
        snprintf(out->shell, sizeof(out->shell), "/bin/sh");
        return 0;
    }
    return passwd_find(spec, 0, out) ? 0 : ENOENT;
}

int user_groups(const struct envd_user *u, uint32_t *groups, int max)
{
    int n = 0;
    if (max > 0)
        groups[n++] = u->gid;
    FILE *fp = fopen("/etc/group", "re");
    if (!fp)
        return n;
    char line[4096];
    while (n < max && fgets(line, sizeof(line), fp)) {
        char *f[4];
        uint32_t g;
        if (split(line, f, 4) != 4 || !parse_id(f[2], &g) || g == u->gid)
            continue;
        for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
            if (strcmp(m, u->name) == 0) {
                groups[n++] = g;
                break;
            }
    }
    fclose(fp);
    return n;
}

/* Name for an id from a colon file (field 0 = name, field 2 = id). */
static void id_name(const char *file, uint32_t id, char *buf, size_t cap)
{
    snprintf(buf, cap, "%u", id);
    FILE *fp = fopen(file, "re");
    if (!fp)
        return;
    char line[4096];
    while (fgets(line, sizeof(line), fp)) {
        char *f[3];
        uint32_t v;
        if (split(line, f, 3) == 3 && parse_id(f[2], &v) && v == id) {
            snprintf(buf, cap, "%s", f[0]);
            break;
        }
    }
    fclose(fp);
}

void user_name(uint32_t uid, char *buf, size_t cap)
{
    id_name("/etc/passwd", uid, buf, cap);
}

void group_name(uint32_t gid, char *buf, size_t cap)
{
    id_name("/etc/group", gid, buf, cap);
}

static void free_envs(char **envs)
{
    for (size_t i = 0; envs && envs[i]; i++)
        free(envs[i]);
    free(envs);
}

/* A restored snapshot wakes with the clock and the random state of the moment it was taken:
   set the host's time, and make the kernel's CRNG use fresh host randomness at once. */
static void refresh_clone(const Sbx__Agent__Configure *cfg)
{
    if (cfg->clock_ns) {
        struct timespec ts = {(time_t)(cfg->clock_ns / 1000000000ull),
                              (long)(cfg->clock_ns % 1000000000ull)};
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            log_msg("clock_settime: %s", strerror(errno));
    }
    if (cfg->entropy.len == 0 || cfg->entropy.len > MAX_ENTROPY)
        return;
    struct {
        struct rand_pool_info info;
        uint8_t buf[MAX_ENTROPY];
    } p;
    p.info.entropy_count = (int)cfg->entropy.len * 8;
    p.info.buf_size = (int)cfg->entropy.len;
    memcpy(p.buf, cfg->entropy.data, cfg->entropy.len);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, RNDADDENTROPY, &p) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0)
        log_msg("reseeding the kernel RNG: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
}

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = n == (ssize_t)strlen(text) ? 0 : n < 0 ? errno : EIO;
    close(fd);
    return e;
}

/* Configure.max_processes: the pids cgroup every process envd starts joins (envd itself
   stays outside, so it can always start one more: joining is not limited, forking is). */
static int set_process_limit(uint32_t max, char *msg, size_t cap)
{
    if (max == 0 && cfg_cgroup_fd < 0)
        return 0;
    int e = 0;
    if (mkdir(WORKLOAD_CGROUP, 0755) < 0 && errno != EEXIST)
        e = errno;
    if (!e)
        e = write_text("/sys/fs/cgroup/cgroup.subtree_control", "+pids");
    char v[16] = "max";
    if (max)
        snprintf(v, sizeof(v), "%u", max);
    if (!e)
        e = write_text(WORKLOAD_CGROUP "/pids.max", v);
    if (!e && cfg_cgroup_fd < 0 &&
        (cfg_cgroup_fd = open(WORKLOAD_CGROUP "/cgroup.procs", O_WRONLY | O_CLOEXEC)) < 0)
        e = errno;
    if (e)
        snprintf(msg, cap, "max_processes: cannot set up the pids cgroup %s", WORKLOAD_CGROUP);
    return e;
}

int users_cgroup_fd(void)
{
    return cfg_cgroup_fd;
}

const char *users_default_cwd(void)
{
    return cfg_cwd;
}

void users_configure(struct conn *c, uint32_t id, const Sbx__Agent__Configure *cfg)
{
    refresh_clone(cfg);
    if (strlen(cfg->default_cwd) >= sizeof(cfg_cwd) ||
        (cfg->default_cwd[0] && cfg->default_cwd[0] != '/')) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "default cwd must be an absolute path shorter than %zu bytes", sizeof(cfg_cwd));
        return;
    }
    if (cfg->n_envs > MAX_ENVS) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "%zu environment variables; at most %d", cfg->n_envs, MAX_ENVS);
        return;
    }
    for (size_t i = 0; i < cfg->n_envs; i++) {
        const char *e = cfg->envs[i];
        if (!strchr(e, '=') || e[0] == '=' || strlen(e) > MAX_ENV_LEN) {
            conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                       "environment entry %zu is not KEY=VALUE (or too long)", i);
            return;
        }
    }
    struct envd_user u;
    if (cfg->default_user[0] && user_lookup(cfg->default_user, &u) != 0) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ENOENT,
                   "default user %.64s: no such user in the guest", cfg->default_user);
        return;
    }
    if (cfg->max_processes > MAX_TASKS) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "max_processes %u exceeds %d", cfg->max_processes, MAX_TASKS);
        return;
    }
    if (cfg->net) {
        char msg[256];
        int e = net_configure(cfg->net, msg, sizeof(msg));
        if (e) {
            conn_errno(c, id, e, "%s", msg);
            return;
        }
    }
    char msg[256];
    int e = set_process_limit(cfg->max_processes, msg, sizeof(msg));
    if (e) {
        conn_errno(c, id, e, "%s", msg);
        return;
    }
    char **envs = calloc(cfg->n_envs + 1, sizeof(*envs));
    for (size_t i = 0; envs && i < cfg->n_envs; i++)
        if (!(envs[i] = strdup(cfg->envs[i]))) {
            free_envs(envs);
            envs = NULL;
        }
    if (!envs) {
        conn_errno(c, id, ENOMEM, "configure");
        return;
    }
    free_envs(cfg_envs);
    cfg_envs = envs;
    snprintf(cfg_user, sizeof(cfg_user), "%s", cfg->default_user);
    snprintf(cfg_cwd, sizeof(cfg_cwd), "%s", cfg->default_cwd);
    conn_ok(c, id);
}

char *const *users_env(void)
{
    return cfg_envs ? cfg_envs : no_envs;
}

int resolve_path(const char *path, const struct envd_user *u, char *out, size_t cap)
{
    if (!path[0])
        return EINVAL;
    int n = path[0] == '/' ? snprintf(out, cap, "%s", path)
                           : snprintf(out, cap, "%s/%s", strcmp(u->home, "/") ? u->home : "", path);
    return n < 0 || (size_t)n >= cap ? ENAMETOOLONG : 0;
}
