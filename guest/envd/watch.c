// SPDX-License-Identifier: Apache-2.0
/* envd: directory watches (WatchStart): inotify events streamed as WatchEvent frames. */

/*
 * Each watch has its own inotify instance, polled by the loop as a watcher, and owns its
 * connection until the host closes it. Events map to WatchOp as follows:
 *   IN_CREATE, IN_MOVED_TO -> CREATE      IN_DELETE     -> REMOVE
 *   IN_MODIFY              -> WRITE       IN_MOVED_FROM -> RENAME (renamed away)
 *   IN_ATTRIB              -> CHMOD       IN_Q_OVERFLOW -> overflow
 * WRITE is IN_MODIFY, not IN_CLOSE_WRITE, like E2B (fsnotify): a process that keeps a file
 * open (a log) is seen writing, not only when it closes. Identical consecutive WRITE events
 * within one read are reported once (the kernel coalesces the same way while they queue).
 *
 * Recursive watches add a watch for every directory below the root, and for directories that
 * appear later (created or moved in); since entries may be created in a new directory before
 * its watch exists, the new directory is scanned once and a CREATE reported for everything
 * found (which may repeat a CREATE that also arrived as an event). Symlinks are not followed.
 *
 * Backpressure: the inotify fd is read only while the connection is writable; otherwise the
 * watcher is paused and events queue in the kernel (up to max_queued_events, then one
 * overflow event), instead of in envd's memory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envd.h"

#define MAX_WATCHES 64    /* watch streams at once (inotify instances are limited too) */
#define MAX_DIRS    10000 /* directories per recursive watch */
#define READ_BUF    (16u << 10)

#define EVENT_MASK                                                                                 \
    (IN_CREATE | IN_MOVED_TO | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_ATTRIB | IN_ONLYDIR |    \
     IN_EXCL_UNLINK)

struct wdir {
    int wd;
    char *rel; /* path relative to the root; "" for the root */
};

struct watch {
    uint32_t id;
    struct server *s;
    struct conn *c;
    struct watcher w;
    bool recursive;
    bool overflowed; /* the directory limit was hit: reported once */
    int root_wd;
    char root[PATH_MAX];
    struct wdir *dirs;
    size_t ndirs, cap;
    /* The last event sent in the current read, for coalescing WRITEs. */
    int last_op;
    char last_name[PATH_MAX];
};

static unsigned nwatches; /* envd is single-threaded: the count of live watches */

static void send_event(struct watch *wt, int op, const char *name, bool overflow)
{
    if (op == SBX__AGENT__WATCH_OP__WATCH_OP_WRITE && wt->last_op == op &&
        strcmp(wt->last_name, name) == 0)
        return;
    wt->last_op = op;
    snprintf(wt->last_name, sizeof(wt->last_name), "%s", name);
    Sbx__Agent__WatchEvent e = SBX__AGENT__WATCH_EVENT__INIT;
    e.op = op;
    e.name = (char *)name;
    e.overflow = overflow;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = wt->id;
    f.body_case = SBX__AGENT__FRAME__BODY_WATCH_EVENT;
    f.watch_event = &e;
    conn_send(wt->c, &f);
}

static void send_overflow(struct watch *wt)
{
    wt->last_op = 0;
    send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_UNSPECIFIED, "", true);
}

static struct wdir *find_wd(struct watch *wt, int wd)
{
    for (size_t i = 0; i < wt->ndirs; i++)
        if (wt->dirs[i].wd == wd)
            return &wt->dirs[i];
    return NULL;
}

static void drop_dir(struct watch *wt, size_t i)
{
    free(wt->dirs[i].rel);
    wt->dirs[i] = wt->dirs[--wt->ndirs];
}

/* Joins root-relative rel and name into out ("" + name = name). */
static bool join(char *out, size_t cap, const char *a, const char *b)
{
    int n =
        a[0] && b[0] ? snprintf(out, cap, "%s/%s", a, b) : snprintf(out, cap, "%s", a[0] ? a : b);
    return n >= 0 && (size_t)n < cap;
}

/* The absolute path of root-relative rel (root is "" for "/"). */
static bool full_path(const struct watch *wt, const char *rel, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", wt->root, rel);
    if (n < 0 || (size_t)n >= cap)
        return false;
    if (n > 1 && out[n - 1] == '/')
        out[n - 1] = '\0'; /* rel "" */
    return true;
}

/* Watches directory rel (root-relative). Returns 0 or an errno (ENOSPC: too many). */
static int add_dir(struct watch *wt, const char *rel, bool is_root)
{
    char full[PATH_MAX];
    if (!full_path(wt, rel, full, sizeof(full)))
        return ENAMETOOLONG;
    if (wt->ndirs >= MAX_DIRS)
        return ENOSPC;
    if (wt->ndirs == wt->cap) {
        size_t cap = wt->cap ? wt->cap * 2 : 16;
        struct wdir *d = realloc(wt->dirs, cap * sizeof(*d));
        if (!d)
            return ENOMEM;
        wt->dirs = d;
        wt->cap = cap;
    }
    /* The root may be reached through a symlink; nothing below it is. */
    int wd = inotify_add_watch(wt->w.fd, full, EVENT_MASK | (is_root ? 0 : IN_DONT_FOLLOW));
    if (wd < 0)
        return errno;
    struct wdir *old = find_wd(wt, wd); /* the same directory again (a rename within the tree) */
    char *r = strdup(rel);
    if (!r)
        return ENOMEM;
    if (old) {
        free(old->rel);
        old->rel = r;
        return 0;
    }
    wt->dirs[wt->ndirs++] = (struct wdir){.wd = wd, .rel = r};
    return 0;
}

/* Adds watches for every directory below rel (not rel itself); with report, sends a CREATE
   for every entry found (a directory that was just created or moved in). Returns 0 or the
   first errno that stops it (ENOSPC: too many directories). */
static int add_tree(struct watch *wt, const char *rel, bool report)
{
    char full[PATH_MAX];
    if (!full_path(wt, rel, full, sizeof(full)))
        return ENAMETOOLONG;
    DIR *d = opendir(full);
    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? 0 : errno; /* gone again meanwhile */
    /* Collect the subdirectories first, so only one directory is open at a time. */
    char **subs = NULL;
    size_t nsubs = 0, cap = 0;
    int err = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char child[PATH_MAX];
        if (!join(child, sizeof(child), rel, de->d_name))
            continue;
        if (report)
            send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_CREATE, child, false);
        bool dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            dir =
                fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
        }
        if (!dir)
            continue;
        if (nsubs == cap) {
            cap = cap ? cap * 2 : 16;
            char **n = realloc(subs, cap * sizeof(*n));
            if (!n) {
                err = ENOMEM;
                break;
            }
            subs = n;
        }
        if (!(subs[nsubs] = strdup(child))) {
            err = ENOMEM;
            break;
        }
        nsubs++;
    }
    closedir(d);
    for (size_t i = 0; i < nsubs; i++) {
        if (!err) {
            int e = add_dir(wt, subs[i], false);
            if (e == 0)
                e = add_tree(wt, subs[i], report);
            else if (e == ENOENT || e == ENOTDIR)
                e = 0; /* removed meanwhile */
            err = e;
        }
        free(subs[i]);
    }
    free(subs);
    return err;
}

/* Forgets the watches of directory rel and everything below it (it was moved away). */
static void drop_tree(struct watch *wt, const char *rel)
{
    size_t n = strlen(rel);
    for (size_t i = 0; i < wt->ndirs;) {
        const char *r = wt->dirs[i].rel;
        if (wt->dirs[i].wd != wt->root_wd && strncmp(r, rel, n) == 0 &&
            (r[n] == '\0' || r[n] == '/')) {
            inotify_rm_watch(wt->w.fd, wt->dirs[i].wd);
            drop_dir(wt, i);
        } else {
            i++;
        }
    }
}

static void watch_free(struct watch *wt)
{
    server_unwatch(wt->s, &wt->w);
    if (wt->w.fd >= 0)
        close(wt->w.fd);
    for (size_t i = 0; i < wt->ndirs; i++)
        free(wt->dirs[i].rel);
    free(wt->dirs);
    free(wt);
    nwatches--;
}

static void watch_end(struct watch *wt)
{
    conn_set_op(wt->c, NULL, NULL);
    watch_free(wt);
}

/* A subdirectory appeared: watch it and what is in it. Past the limit, say events were lost. */
static void grow(struct watch *wt, const char *rel)
{
    int e = add_dir(wt, rel, false);
    if (e == 0)
        e = add_tree(wt, rel, true);
    if (e && e != ENOENT && e != ENOTDIR && !wt->overflowed) {
        log_msg("watch %s: cannot watch %s: %s", wt->root, rel, strerror(e));
        wt->overflowed = true;
        send_overflow(wt);
    }
}

/* Handles one inotify event. Returns false when the watch has ended. */
static bool on_event(struct watch *wt, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW) {
        send_overflow(wt);
        return true;
    }
    struct wdir *d = find_wd(wt, ev->wd);
    if (!d)
        return true; /* a watch dropped meanwhile */
    if (ev->mask & IN_IGNORED) {
        if (ev->wd == wt->root_wd) {
            /* The watched directory is gone (removed, or its file system unmounted). */
            conn_error(wt->c, wt->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ENOENT,
                       "the watched directory %.300s was removed", wt->root);
            watch_end(wt);
            return false;
        }
        drop_dir(wt, (size_t)(d - wt->dirs));
        return true;
    }
    if (ev->len == 0 || !ev->name[0])
        return true; /* about the directory itself: its parent reports it by name */
    char name[PATH_MAX];
    if (!join(name, sizeof(name), d->rel, ev->name))
        return true;
    bool isdir = ev->mask & IN_ISDIR;
    if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
        send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_CREATE, name, false);
        if (wt->recursive && isdir)
            grow(wt, name);
    }
    if (ev->mask & IN_MODIFY)
        send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_WRITE, name, false);
    if (ev->mask & IN_ATTRIB)
        send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_CHMOD, name, false);
    if (ev->mask & IN_MOVED_FROM) {
        send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_RENAME, name, false);
        if (wt->recursive && isdir)
            drop_tree(wt, name);
    }
    if (ev->mask & IN_DELETE)
        send_event(wt, SBX__AGENT__WATCH_OP__WATCH_OP_REMOVE, name, false);
    return true;
}

static void on_readable(struct server *s, struct watcher *w, short revents)
{
    struct watch *wt = w->arg;
    if (!conn_writable(wt->c)) {
        w->events = 0; /* resumed by the drain callback */
        return;
    }
    /* One buffer per wakeup; more is read on the next round if the host keeps up. */
    static char buf[READ_BUF] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n = read(w->fd, buf, sizeof(buf));
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_errno(wt->c, wt->id, n < 0 ? errno : EIO, "watch %.300s", wt->root);
        watch_end(wt);
        return;
    }
    wt->last_op = 0;
    for (ssize_t off = 0; off + (ssize_t)sizeof(struct inotify_event) <= n;) {
        const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
        off += (ssize_t)(sizeof(*ev) + ev->len);
        if (off > n)
            break;
        if (!on_event(wt, ev))
            return;
    }
    if (!conn_writable(wt->c))
        w->events = 0;
}

static void watch_frame(struct server *s, struct conn *c, const Sbx__Agent__Frame *f, void *arg)
{
    struct watch *wt = arg;
    conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL, "%s during WatchStart %u",
              frame_body_name(f->body_case), wt->id);
    watch_end(wt);
}

/* The connection has room again: resume reading events. */
static bool watch_drain(struct server *s, struct conn *c, void *arg)
{
    struct watch *wt = arg;
    wt->w.events = POLLIN;
    return false;
}

static void watch_closed(struct server *s, struct conn *c, void *arg)
{
    watch_free(arg);
}

static const struct conn_op watch_op = {
    .frame = watch_frame, .drain = watch_drain, .closed = watch_closed};

void watch_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f)
{
    const Sbx__Agent__WatchStart *req = f->watch_start;
    if (f->body_case != SBX__AGENT__FRAME__BODY_WATCH_START) {
        conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL, "unexpected %s",
                  frame_body_name(f->body_case));
        return;
    }
    struct envd_user u;
    if (user_lookup("", &u) != 0) {
        conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ENOENT,
                   "the default user does not exist in the guest");
        return;
    }
    if (nwatches >= MAX_WATCHES) {
        conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "%d watches are active; close one first", MAX_WATCHES);
        return;
    }
    struct watch *wt = calloc(1, sizeof(*wt));
    if (!wt) {
        conn_errno(c, f->id, ENOMEM, "watch");
        return;
    }
    nwatches++;
    wt->id = f->id;
    wt->s = s;
    wt->c = c;
    wt->recursive = req->recursive;
    wt->w = (struct watcher){.fd = -1, .events = POLLIN, .cb = on_readable, .arg = wt};
    int e = resolve_path(req->path, &u, wt->root, sizeof(wt->root));
    if (e) {
        conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, e,
                   e == EINVAL ? "empty path" : "path too long");
        watch_free(wt);
        return;
    }
    size_t n = strlen(wt->root);
    while (n > 1 && wt->root[n - 1] == '/')
        wt->root[--n] = '\0';
    struct stat st;
    if (stat(wt->root, &st) != 0) {
        conn_errno(c, f->id, errno, "watch %.300s", wt->root);
        watch_free(wt);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        conn_errno(c, f->id, ENOTDIR, "watch %.300s", wt->root);
        watch_free(wt);
        return;
    }
    wt->w.fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (wt->w.fd < 0) {
        conn_errno(c, f->id, errno, "watch %.300s: inotify", wt->root);
        watch_free(wt);
        return;
    }
    /* The root's rel is "" and paths are joined onto root: "/" would give "//x". */
    if (strcmp(wt->root, "/") == 0)
        wt->root[0] = '\0';
    e = add_dir(wt, "", true);
    if (e == 0) {
        wt->root_wd = wt->dirs[0].wd;
        if (wt->recursive)
            e = add_tree(wt, "", false);
    }
    if (e) {
        if (e == ENOSPC)
            conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, e,
                       "watch %.300s: more than %d directories (or the guest's inotify limit)",
                       wt->root[0] ? wt->root : "/", MAX_DIRS);
        else
            conn_errno(c, f->id, e, "watch %.300s", wt->root[0] ? wt->root : "/");
        watch_free(wt);
        return;
    }
    if (!server_watch(s, &wt->w)) {
        conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "too many open watches and processes in the guest");
        watch_free(wt);
        return;
    }
    conn_ok(c, f->id);
    conn_set_op(c, &watch_op, wt);
}
