/* SPDX-License-Identifier: Apache-2.0 */
/* envd internals shared between its files: configuration, logging, system setup, serving. */
#ifndef ENVD_H
#define ENVD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/frame.h"

#define ENVD_DEFAULT_PORT 49983u

struct envd_config {
    char root[256];      /* sbx.root=, block device of the root filesystem */
    char rootfstype[32]; /* sbx.rootfstype= */
    char rootflags[256]; /* sbx.rootflags=, mount options ("ro,noatime,...") */
    uint32_t port;       /* sbx.port=, vsock port to listen on */
    /* Hidden --test-serve-fd / --test-listen mode (a normal process, not PID 1): change nothing in
       the system (no mounts, clock, hostname, reboot) and exit instead of powering off. */
    bool test_mode;
    /* Test-only, for the fuzz target (tests/fuzz/fuzz_envd.c): ProcStart does everything but
       the fork, which fails as if with EPERM, so hostile requests never start a process. */
    bool no_spawn;
};

/* log.c: lines "envd: ..." on /dev/console (console false: on stderr); silently dropped
   when neither is open. */
void log_open(bool console);
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* init.c: PID 1 duties. */
/* Mounts /dev, /proc, /sys, reads the kernel command line into cfg, mounts the root disk and
   switches to it, mounts the usual API filesystems and sets the hostname. On a fatal error
   (root cannot be mounted) logs why and reboots, which ends the VM. */
void init_system(struct envd_config *cfg);
/* Stops every process, syncs, unmounts (or remounts read-only) and reboots. Never returns. */
void init_poweroff(const struct envd_config *cfg) __attribute__((noreturn));
/* Logs, syncs and reboots. Never returns. */
void init_fatal(const struct envd_config *cfg, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
/* Steps CLOCK_REALTIME to the host's clock when they differ noticeably. */
void init_set_clock(const struct envd_config *cfg, uint64_t realtime_ns);
void init_set_hostname(const struct envd_config *cfg, const char *name);

/* net.c: network interfaces. Brings loopback up (at boot, always). */
void net_loopback_up(void);
/* Configures the interface with nc->mac: address, netmask, link up, default route, and
   /etc/resolv.conf. Returns 0, or an errno with a message in err. */
int net_configure(const Sbx__Agent__NetConfig *nc, char *err, size_t cap);

/* PRETTY_NAME from /etc/os-release (or /usr/lib/os-release), unquoted and truncated to fit;
   "" when there is none. */
void init_os_name(char *out, size_t cap);

/* serve.c: the event loop. listen_fd accepts vsock connections (or, in test mode, unix
   stream connections; -1 for none); first_fd is an already connected stream (or -1; test
   mode). Returns only in test mode, once no listener and no connection is left; it may then
   be called again (the fuzz target serves one connection per call this way). */
void serve_loop(const struct envd_config *cfg, int listen_fd, int first_fd);

/* --- the module interface of the event loop (serve.c) --------------------------------------
 * Modules (proc.c, files.c, watch.c, ...) serve requests that serve.c dispatches to them.
 * Everything runs on the one thread; never block for long (see main.c). */

struct server;
struct conn;

/* Queues a frame for the host (never blocks; the loop writes it out). */
void conn_send(struct conn *c, const Sbx__Agent__Frame *f);
/* Answers request `id` with Ok. */
void conn_ok(struct conn *c, uint32_t id);
/* Answers request `id` with Error; the connection stays usable. */
void conn_error(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, int os_errno,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* conn_error with the code for an errno (ENOENT -> NOT_FOUND, ...) and message
   "<fmt>: <strerror(err)>". */
void conn_errno(struct conn *c, uint32_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A protocol violation: answers Error and closes the connection once that is written. */
void conn_fail(struct conn *c, uint32_t id, Sbx__Agent__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The ErrorCode for an errno. */
Sbx__Agent__ErrorCode errno_code(int err);
/* True while the connection's unsent output is below the low-water mark (256 KiB): a
   streaming producer may queue more. Producers stop when it is false and continue from their
   op's drain callback. */
bool conn_writable(const struct conn *c);
/* True once the connection is going away (host closed, write error, protocol error). */
bool conn_gone(const struct conn *c);

/* A streaming operation that owns a connection until it ends (FileWrite, ProcStart, ...).
   While one is set, every frame from the host goes to its frame callback instead of being
   dispatched as a request. */
struct conn_op {
    void (*frame)(struct server *s, struct conn *c, const Sbx__Agent__Frame *f, void *arg);
    /* Called on every loop round while the connection is writable; returns true when it
       wants to be called again at once (it has more to send), false when it waits for
       something else (an fd, the host). May be NULL. */
    bool (*drain)(struct server *s, struct conn *c, void *arg);
    /* The connection is being freed (the op must forget it; sending is no longer possible).
       The op is cleared before this is called. May be NULL. */
    void (*closed)(struct server *s, struct conn *c, void *arg);
};
/* Installs op on c (replacing none: it is an error to set one while another is set), or with
   op NULL ends the current op without calling closed. */
void conn_set_op(struct conn *c, const struct conn_op *op, void *arg);
/* Takes the connection's socket away from the loop (which then forgets the connection) for
   a module that speaks raw bytes on it from now on. Output still queued (a final reply) is
   copied into pending (cap bytes; *len receives the count) and must be written first.
   Returns the fd, or -1 (nothing taken) when the connection is going away, has an op set,
   holds part of a frame from the host, or more than cap bytes are queued. */
int conn_take(struct conn *c, void *pending, size_t cap, size_t *len);
/* Serves f as a request on c as if no op were set (for an op that only watches for one
   particular frame and passes everything else on; it must have cleared itself first). */
void conn_dispatch(struct server *s, struct conn *c, const Sbx__Agent__Frame *f);

/* An fd the loop polls for a module. `events` may be changed at any time (0 pauses it). */
struct watcher {
    int fd;
    short events;
    void (*cb)(struct server *s, struct watcher *w, short revents);
    void *arg;
    bool active; /* managed by server_watch / server_unwatch */
};
/* Adds w to the poll set (false when the limit of 1536 watchers is reached). */
bool server_watch(struct server *s, struct watcher *w);
/* Removes w (safe from within callbacks, also w's own). */
void server_unwatch(struct server *s, struct watcher *w);
/* Makes the loop wake up no later than this CLOCK_MONOTONIC time (ms) to call the tick
   functions. */
void server_wake_at(struct server *s, uint64_t mono_ms);
uint64_t mono_ms(void);
const struct envd_config *server_config(const struct server *s);

/* --- modules ---------------------------------------------------------------------------- */

/* users.c: users and the sandbox-wide settings of Configure. */
struct envd_user {
    uint32_t uid, gid;
    char name[64];
    char home[256];
    char shell[256];
};
/* Looks a user up by name or decimal uid in /etc/passwd. A uid without an entry resolves to
   itself with gid = uid, home "/", shell /bin/sh. "" means the default user. Returns 0 or
   an errno (ENOENT: no such user). */
int user_lookup(const char *name_or_uid, struct envd_user *out);
/* Supplementary groups of a user from /etc/group (including its primary gid). Returns the
   count (at most max). */
int user_groups(const struct envd_user *u, uint32_t *groups, int max);
/* Name of a uid / gid, or the number in decimal. */
void user_name(uint32_t uid, char *buf, size_t cap);
void group_name(uint32_t gid, char *buf, size_t cap);
/* Applies a Configure request (answers it). */
/* The sandbox-wide default working directory ("" = none: the user's home). */
const char *users_default_cwd(void);
void users_configure(struct conn *c, uint32_t id, const Sbx__Agent__Configure *cfg);
/* The sandbox-wide environment ("K=V", NULL-terminated). */
char *const *users_env(void);
/* cgroup.procs of the workload's pids cgroup (Configure.max_processes), or -1: a new process
   writes "0" to it to join. */
int users_cgroup_fd(void);
/* Resolves a path from a request: absolute stays, relative is taken from the user's home.
   Returns 0 or an errno (EINVAL: empty or too long). */
int resolve_path(const char *path, const struct envd_user *u, char *out, size_t cap);

/* proc.c: processes and PTYs. */
void proc_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f);
/* A child was reaped by the loop (it reaps every child, including orphans). */
void proc_reaped(struct server *s, int pid, int status);
/* Called on every loop round: timeouts and the like. */
void proc_tick(struct server *s);

/* files.c: file requests (FileWrite, FileRead, Stat, ListDir, MakeDir, Remove, Rename). */
void files_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f);

/* watch.c: WatchStart. */
void watch_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f);

/* metrics.c: MetricsRequest. */
void metrics_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f);

/* forward.c: PortConnect (port forwarding). */
void forward_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f);
/* Called on every loop round: connect deadlines, send retries, freeing ended forwards. */
void forward_tick(struct server *s);

#endif
