// SPDX-License-Identifier: Apache-2.0
/* envd: file requests: streamed write and read, stat, list, mkdir -p, remove, rename. */

/*
 * Paths come from the host and are resolved against the user's home (resolve_path). envd
 * runs as root in the guest, so it creates files itself and then hands them to the user
 * (chown); in test mode (an ordinary process) nothing is chowned.
 *
 * Single calls (Stat, MakeDir, Remove, Rename) do their disk work directly in the loop: each
 * is a handful of syscalls (a recursive Remove is the exception the protocol accepts).
 * Streams are operations on the connection (conn_set_op) that do a bounded amount of work per
 * wakeup: FileWrite writes one FileData (<= 64 KiB) per frame as it arrives; FileRead and
 * ListDir produce one frame per drain callback and only while the connection is writable, so
 * a multi-GiB file or a huge tree costs bounded memory however slowly the host reads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envd.h"

#define CHUNK          (64u << 10) /* largest FileData, both directions */
#define LIST_BATCH     1000        /* entries per ListReply */
#define LIST_BATCH_MAX (1u << 20)  /* and about this many bytes at most (frames are <= 4 MiB) */
#define LIST_MAX       100000      /* entries per ListDir in total */

/* --- helpers ------------------------------------------------------------------------------- */

/* Resolves a request path for the default user into out (trailing slashes removed, "/"
   kept). Answers the request with Error and returns false when it cannot. */
static bool req_path(struct conn *c, uint32_t id, const char *path, const struct envd_user *u,
                     char *out, size_t cap)
{
    int e = resolve_path(path, u, out, cap);
    if (e) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, e,
                   e == EINVAL ? "empty path" : "path too long");
        return false;
    }
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return true;
}

/* Looks up the request's user; answers Error and returns false when there is no such user. */
static bool req_user(struct conn *c, uint32_t id, const char *name, struct envd_user *u)
{
    int e = user_lookup(name, u);
    if (e) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, e,
                   "user %.64s: no such user in the guest", name[0] ? name : "(default)");
        return false;
    }
    return true;
}

/* Gives a new file or directory to the user. Only root can; as an ordinary process (test
   mode) everything envd creates is already the caller's. */
static int give_to(const char *path, int fd, const struct envd_user *u)
{
    if (geteuid() != 0)
        return 0;
    int r = fd >= 0 ? fchown(fd, u->uid, u->gid) : lchown(path, u->uid, u->gid);
    return r == 0 ? 0 : errno;
}

/* Splits an absolute normalised path into its directory (in dir) and last component. */
static const char *split_path(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n == 0)
        n = 1; /* "/x" -> "/" */
    snprintf(dir, cap, "%.*s", (int)n, path);
    return slash ? slash + 1 : path;
}

/* mkdir -p path (absolute, normalised): missing directories are created with mode (the last
   one) or 0755 (the ones above it), exactly those bits, and given to u. *existed tells
   whether the last one was already a directory. Returns 0 or an errno: EEXIST when the last
   component exists but is not a directory, ENOTDIR when one above it is not. */
static int mkdir_p(char *path, mode_t mode, const struct envd_user *u, bool *existed)
{
    struct stat st;
    if (existed)
        *existed = false;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return EEXIST;
        if (existed)
            *existed = true;
        return 0;
    }
    if (errno != ENOENT)
        return errno;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        bool last = saved == '\0';
        *p = '\0';
        int e = 0;
        mode_t m = last ? mode : 0755;
        if (mkdir(path, m) == 0) {
            /* mkdir applies the umask; the caller asked for these bits. */
            if (chmod(path, m) != 0 || (e = give_to(path, -1, u)) != 0)
                e = e ? e : errno;
        } else if (errno == EEXIST) {
            if (stat(path, &st) != 0)
                e = errno;
            else if (!S_ISDIR(st.st_mode))
                e = last ? EEXIST : ENOTDIR;
            else if (last && existed)
                *existed = true; /* created by someone else meanwhile */
        } else {
            e = errno;
        }
        *p = saved;
        if (e || last)
            return e;
    }
}

/* Creates the parent directories of path when missing. Returns 0 or an errno (ENOTDIR when
   a non-directory is in the way). */
static int make_parents(const char *path, const struct envd_user *u)
{
    char dir[PATH_MAX];
    split_path(path, dir, sizeof(dir));
    int e = mkdir_p(dir, 0755, u, NULL);
    return e == EEXIST ? ENOTDIR : e;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* --- FileWrite ----------------------------------------------------------------------------- */

struct fwrite {
    uint32_t id;
    int fd;      /* the temporary file (or the target when appending); -1 when none */
    bool failed; /* Error sent: FileData is swallowed up to eof */
    bool append;
    mode_t mode;
    struct envd_user user;
    uint64_t size;
    char tmp[PATH_MAX]; /* "" when there is no temporary file (append, or gone) */
    char target[PATH_MAX];
};

/* Closes and (unless committed) removes the temporary file. */
static void fw_discard(struct fwrite *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->tmp[0])
        unlink(w->tmp);
    w->tmp[0] = '\0';
}

/* Answers Error for an errno and swallows the rest of the request. */
static void fw_fail(struct conn *c, struct fwrite *w, int err, const char *what)
{
    fw_discard(w);
    if (!w->failed)
        conn_errno(c, w->id, err, "%s %.300s", what, w->target);
    w->failed = true;
}

static void fw_end(struct conn *c, struct fwrite *w)
{
    fw_discard(w);
    conn_set_op(c, NULL, NULL);
    free(w);
}

/* eof: make the data durable, give the file its mode and owner, then put it in place. */
static void fw_finish(struct conn *c, struct fwrite *w)
{
    if (fsync(w->fd) != 0) {
        fw_fail(c, w, errno, "fsync");
        return;
    }
    if (!w->append) {
        int e = 0;
        if (fchmod(w->fd, w->mode) != 0)
            e = errno;
        else
            e = give_to(NULL, w->fd, &w->user);
        if (e) {
            fw_fail(c, w, e, "chmod/chown");
            return;
        }
        if (rename(w->tmp, w->target) != 0) {
            fw_fail(c, w, errno, "rename into place");
            return;
        }
        w->tmp[0] = '\0'; /* it is the target now */
    }
    if (close(w->fd) != 0) {
        w->fd = -1;
        fw_fail(c, w, errno, "close");
        return;
    }
    w->fd = -1;
    Sbx__Agent__FileWritten r = SBX__AGENT__FILE_WRITTEN__INIT;
    r.size = w->size;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = w->id;
    f.body_case = SBX__AGENT__FRAME__BODY_FILE_WRITTEN;
    f.file_written = &r;
    conn_send(c, &f);
}

static void fw_frame(struct server *s, struct conn *c, const Sbx__Agent__Frame *f, void *arg)
{
    struct fwrite *w = arg;
    if (f->body_case != SBX__AGENT__FRAME__BODY_FILE_DATA || f->id != w->id) {
        conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                  "expected FileData for request %u, got %s (id %u)", w->id,
                  frame_body_name(f->body_case), f->id);
        fw_end(c, w);
        return;
    }
    const Sbx__Agent__FileData *d = f->file_data;
    if (d->data.len > CHUNK) {
        conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                  "FileData of %zu bytes; at most %u", d->data.len, CHUNK);
        fw_end(c, w);
        return;
    }
    if (!w->failed && d->data.len > 0) {
        int e = write_all(w->fd, d->data.data, d->data.len);
        if (e)
            fw_fail(c, w, e, "write");
        else
            w->size += d->data.len;
    }
    if (!d->eof)
        return;
    if (!w->failed)
        fw_finish(c, w);
    fw_end(c, w);
}

static void fw_closed(struct server *s, struct conn *c, void *arg)
{
    struct fwrite *w = arg;
    fw_discard(w);
    free(w);
}

static const struct conn_op fw_op = {.frame = fw_frame, .closed = fw_closed};

/* A symlink in place of the target: made under a temporary name, then renamed over it. */
static int make_symlink(const char *target, const char *path, const struct envd_user *u)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    const char *name = split_path(path, dir, sizeof(dir));
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned rnd =
            (unsigned)mono_ms() * 2654435761u + (unsigned)attempt * 40503u + (unsigned)getpid();
        int n = snprintf(tmp, sizeof(tmp), "%s/.%.200s.sbx-%08x", strcmp(dir, "/") ? dir : "", name,
                         rnd);
        if (n < 0 || (size_t)n >= sizeof(tmp))
            return ENAMETOOLONG;
        if (symlink(target, tmp) == 0) {
            int e = give_to(tmp, -1, u);
            if (!e && rename(tmp, path) != 0)
                e = errno;
            if (e)
                unlink(tmp);
            return e;
        }
        if (errno != EEXIST)
            return errno;
    }
    return EEXIST;
}

static void file_write(struct conn *c, uint32_t id, const Sbx__Agent__FileWrite *req)
{
    struct fwrite *w = calloc(1, sizeof(*w));
    if (!w) {
        /* Without state the request's FileData cannot be told apart: give up the connection. */
        conn_fail(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NO_SPACE, "out of memory");
        return;
    }
    w->id = id;
    w->fd = -1;
    w->append = req->append;
    w->mode = req->mode ? req->mode : 0644;
    bool symlink_only = req->symlink_target[0] != '\0';
    /* Whatever goes wrong from here, the op is installed so that the FileData behind the
       request is swallowed up to eof (unless it is a symlink, which has no FileData). */
    if (!symlink_only)
        conn_set_op(c, &fw_op, w);

    struct stat st;
    int e = 0;
    if (!req_user(c, id, req->user, &w->user) ||
        !req_path(c, id, req->path, &w->user, w->target, sizeof(w->target))) {
        w->failed = true;
    } else if (req->mode & ~07777u) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "mode %#o has bits beyond 07777", req->mode);
        w->failed = true;
    } else if (strcmp(w->target, "/") == 0 || (lstat(w->target, &st) == 0 && S_ISDIR(st.st_mode))) {
        fw_fail(c, w, EISDIR, "write");
    } else if ((e = make_parents(w->target, &w->user)) != 0) {
        fw_fail(c, w, e, "create the parent directories of");
    }
    if (symlink_only) {
        if (!w->failed) {
            if ((e = make_symlink(req->symlink_target, w->target, &w->user)) != 0) {
                fw_fail(c, w, e, "symlink");
            } else {
                Sbx__Agent__FileWritten r = SBX__AGENT__FILE_WRITTEN__INIT;
                Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
                f.id = id;
                f.body_case = SBX__AGENT__FRAME__BODY_FILE_WRITTEN;
                f.file_written = &r;
                conn_send(c, &f);
            }
        }
        free(w);
        return;
    }
    if (w->failed)
        return;

    if (w->append) {
        /* In place: O_APPEND onto the existing file, or a new one owned by the user. */
        w->fd = open(w->target, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (w->fd < 0 && errno == ENOENT) {
            w->fd = open(w->target, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, w->mode);
            if (w->fd >= 0) {
                e = fchmod(w->fd, w->mode) == 0 ? give_to(NULL, w->fd, &w->user) : errno;
                if (e) {
                    fw_fail(c, w, e, "chmod/chown");
                    return;
                }
            }
        }
        if (w->fd < 0) {
            fw_fail(c, w, errno, "open");
            return;
        }
        /* Only regular files: a FIFO or device would block the loop. */
        if (fstat(w->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            fw_fail(c, w, EINVAL, "append to (not a regular file)");
            return;
        }
        return;
    }
    /* Atomic replace: a temporary file next to the target, renamed over it at eof. The name
       starts with a dot and ends in a marker, so it is recognisable if the guest crashes. */
    char dir[PATH_MAX];
    const char *name = split_path(w->target, dir, sizeof(dir));
    int n = snprintf(w->tmp, sizeof(w->tmp), "%s/.%.200s.sbx-XXXXXX", strcmp(dir, "/") ? dir : "",
                     name);
    if (n < 0 || (size_t)n >= sizeof(w->tmp)) {
        w->tmp[0] = '\0';
        fw_fail(c, w, ENAMETOOLONG, "write");
        return;
    }
    w->fd = mkostemp(w->tmp, O_CLOEXEC);
    if (w->fd < 0) {
        w->tmp[0] = '\0';
        fw_fail(c, w, errno, "create a temporary file for");
        return;
    }
}

/* --- FileRead ------------------------------------------------------------------------------ */

struct fread {
    uint32_t id;
    int fd;
    uint64_t pos;
    uint64_t left; /* UINT64_MAX: to the end */
};

static void fr_end(struct conn *c, struct fread *r)
{
    close(r->fd);
    conn_set_op(c, NULL, NULL);
    free(r);
}

static void fr_frame(struct server *s, struct conn *c, const Sbx__Agent__Frame *f, void *arg)
{
    struct fread *r = arg;
    conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL, "%s during FileRead %u",
              frame_body_name(f->body_case), r->id);
    fr_end(c, r);
}

/* One chunk per call, so one reader cannot starve the other connections. */
static bool fr_drain(struct server *s, struct conn *c, void *arg)
{
    static uint8_t buf[CHUNK]; /* single-threaded: used only within this call */
    struct fread *r = arg;
    size_t want = r->left < CHUNK ? (size_t)r->left : CHUNK;
    ssize_t n = 0;
    if (want > 0) {
        do
            n = pread(r->fd, buf, want, (off_t)r->pos);
        while (n < 0 && errno == EINTR);
    }
    if (n < 0) {
        conn_errno(c, r->id, errno, "read");
        fr_end(c, r);
        return false;
    }
    r->pos += (uint64_t)n;
    if (r->left != UINT64_MAX)
        r->left -= (uint64_t)n;
    Sbx__Agent__FileData d = SBX__AGENT__FILE_DATA__INIT;
    d.data.data = buf;
    d.data.len = (size_t)n;
    d.eof = n == 0 || r->left == 0;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = r->id;
    f.body_case = SBX__AGENT__FRAME__BODY_FILE_DATA;
    f.file_data = &d;
    conn_send(c, &f);
    if (d.eof) {
        fr_end(c, r);
        return false;
    }
    return true;
}

static void fr_closed(struct server *s, struct conn *c, void *arg)
{
    struct fread *r = arg;
    close(r->fd);
    free(r);
}

static const struct conn_op fr_op = {.frame = fr_frame, .drain = fr_drain, .closed = fr_closed};

static void file_read(struct conn *c, uint32_t id, const Sbx__Agent__FileRead *req)
{
    struct envd_user u;
    char path[PATH_MAX];
    if (!req_user(c, id, "", &u) || !req_path(c, id, req->path, &u, path, sizeof(path)))
        return;
    if (req->offset > INT64_MAX) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "offset %llu out of range", (unsigned long long)req->offset);
        return;
    }
    /* O_NONBLOCK: opening a FIFO must not block the loop (it is refused below anyway). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0) {
        conn_errno(c, id, errno, "open %.300s", path);
        return;
    }
    int e = fstat(fd, &st) != 0   ? errno
            : S_ISDIR(st.st_mode) ? EISDIR
            : S_ISREG(st.st_mode) ? 0
                                  : EINVAL;
    if (e) {
        close(fd);
        if (e == EINVAL)
            conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                       "read %.300s: not a regular file", path);
        else
            conn_errno(c, id, e, "read %.300s", path);
        return;
    }
    struct fread *r = calloc(1, sizeof(*r));
    if (!r) {
        close(fd);
        conn_errno(c, id, ENOMEM, "read");
        return;
    }
    r->id = id;
    r->fd = fd;
    r->pos = req->offset;
    r->left = req->length ? req->length : UINT64_MAX;
    Sbx__Agent__FileReadStart rs = SBX__AGENT__FILE_READ_START__INIT;
    rs.size = (uint64_t)st.st_size;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_FILE_READ_START;
    f.file_read_start = &rs;
    conn_send(c, &f);
    conn_set_op(c, &fr_op, r);
}

/* --- entries (Stat, ListDir) --------------------------------------------------------------- */

/* Recently seen owner and group names: /etc/passwd is read once per new id, not per entry. */
#define IDCACHE 16
struct idcache {
    struct {
        bool used;
        uint32_t id;
        char name[64];
    } u[IDCACHE], g[IDCACHE];
    unsigned unext, gnext;
};

static const char *cached_name(struct idcache *ic, bool group, uint32_t id)
{
    __typeof__(ic->u[0]) *tab = group ? ic->g : ic->u;
    for (int i = 0; i < IDCACHE; i++)
        if (tab[i].used && tab[i].id == id)
            return tab[i].name;
    unsigned *next = group ? &ic->gnext : &ic->unext;
    __typeof__(ic->u[0]) *slot = &tab[*next % IDCACHE];
    (*next)++;
    slot->used = true;
    slot->id = id;
    if (group)
        group_name(id, slot->name, sizeof(slot->name));
    else
        user_name(id, slot->name, sizeof(slot->name));
    return slot->name;
}

static void entry_free(Sbx__Agent__EntryInfo *e)
{
    free(e->name);
    free(e->path);
    free(e->owner);
    free(e->group);
    if (e->symlink_target != protobuf_c_empty_string)
        free(e->symlink_target);
}

/* Fills e for path (lstat). Strings are malloc'd (entry_free). Returns 0 or an errno. */
static int entry_fill(Sbx__Agent__EntryInfo *e, const char *path, struct idcache *ic)
{
    sbx__agent__entry_info__init(e);
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno;
    if (S_ISREG(st.st_mode))
        e->type = SBX__AGENT__FILE_TYPE__FILE_TYPE_FILE;
    else if (S_ISDIR(st.st_mode))
        e->type = SBX__AGENT__FILE_TYPE__FILE_TYPE_DIR;
    else if (S_ISLNK(st.st_mode))
        e->type = SBX__AGENT__FILE_TYPE__FILE_TYPE_SYMLINK;
    else
        e->type = SBX__AGENT__FILE_TYPE__FILE_TYPE_OTHER;
    e->size = (uint64_t)st.st_size;
    e->mode = st.st_mode & 07777;
    e->uid = st.st_uid;
    e->gid = st.st_gid;
    e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    const char *slash = strrchr(path, '/');
    e->name = strdup(slash && slash[1] ? slash + 1 : path);
    e->path = strdup(path);
    e->owner = strdup(cached_name(ic, false, st.st_uid));
    e->group = strdup(cached_name(ic, true, st.st_gid));
    int err = 0;
    if (S_ISLNK(st.st_mode)) {
        char t[PATH_MAX];
        ssize_t n = readlink(path, t, sizeof(t) - 1);
        if (n >= 0) {
            t[n] = '\0';
            if (!(e->symlink_target = strdup(t)))
                err = ENOMEM;
        }
    }
    if (!e->name || !e->path || !e->owner || !e->group)
        err = ENOMEM;
    if (err) {
        entry_free(e);
        sbx__agent__entry_info__init(e);
    }
    return err;
}

static void stat_request(struct conn *c, uint32_t id, const Sbx__Agent__Stat *req)
{
    struct envd_user u;
    char path[PATH_MAX];
    if (!req_user(c, id, "", &u) || !req_path(c, id, req->path, &u, path, sizeof(path)))
        return;
    struct idcache *ic = calloc(1, sizeof(*ic));
    Sbx__Agent__EntryInfo e;
    int err = ic ? entry_fill(&e, path, ic) : ENOMEM;
    free(ic);
    if (err) {
        conn_errno(c, id, err, "stat %.300s", path);
        return;
    }
    Sbx__Agent__StatReply r = SBX__AGENT__STAT_REPLY__INIT;
    r.entry = &e;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_STAT_REPLY;
    f.stat_reply = &r;
    conn_send(c, &f);
    entry_free(&e);
}

/* --- ListDir ------------------------------------------------------------------------------- */

/* One directory being listed: its entry names (sorted) and how far the listing got. */
struct level {
    char **names;
    size_t n, i;
    size_t pathlen; /* length of lister.path for this directory */
};

struct lister {
    uint32_t id;
    uint32_t depth;
    size_t total;        /* entries sent */
    size_t pending;      /* names read but not yet sent, in all levels */
    char path[PATH_MAX]; /* the directory of the top level ("" for "/") */
    struct level *lv;
    size_t nlv, cap;
    struct idcache ids;
};

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void level_free(struct level *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

/* Reads the names in directory path (lister->path) and pushes them as a new level. Returns 0
   or an errno (E2BIG: more entries than the listing may still have). */
static int lister_push(struct lister *ls)
{
    if (ls->nlv == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 8;
        struct level *lv = realloc(ls->lv, cap * sizeof(*lv));
        if (!lv)
            return ENOMEM;
        ls->lv = lv;
        ls->cap = cap;
    }
    DIR *d = opendir(ls->path[0] ? ls->path : "/");
    if (!d)
        return errno;
    struct level l = {.pathlen = strlen(ls->path)};
    size_t cap = 0;
    int err = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        /* Everything read will be sent: stop reading once that is beyond the limit. */
        if (ls->total + ls->pending + l.n + 1 > LIST_MAX) {
            err = E2BIG;
            break;
        }
        if (l.n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(l.names, cap * sizeof(*nn));
            if (!nn) {
                err = ENOMEM;
                break;
            }
            l.names = nn;
        }
        if (!(l.names[l.n] = strdup(de->d_name))) {
            err = ENOMEM;
            break;
        }
        l.n++;
    }
    if (!err && errno)
        err = errno;
    closedir(d);
    if (err) {
        level_free(&l);
        return err;
    }
    if (l.n > 1)
        qsort(l.names, l.n, sizeof(*l.names), cmp_name);
    ls->lv[ls->nlv++] = l;
    ls->pending += l.n;
    return 0;
}

static void lister_free(struct lister *ls)
{
    for (size_t i = 0; i < ls->nlv; i++)
        level_free(&ls->lv[i]);
    free(ls->lv);
    free(ls);
}

static void ls_end(struct conn *c, struct lister *ls)
{
    conn_set_op(c, NULL, NULL);
    lister_free(ls);
}

static void ls_frame(struct server *s, struct conn *c, const Sbx__Agent__Frame *f, void *arg)
{
    struct lister *ls = arg;
    conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL, "%s during ListDir %u",
              frame_body_name(f->body_case), ls->id);
    ls_end(c, ls);
}

static void ls_error(struct conn *c, struct lister *ls, int err)
{
    if (err == E2BIG)
        conn_error(c, ls->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "more than %d entries; list fewer levels at a time", LIST_MAX);
    else
        conn_errno(c, ls->id, err, "list %.300s", ls->path[0] ? ls->path : "/");
    ls_end(c, ls);
}

/* One ListReply per call: walks the tree depth first, parents before their children. */
static bool ls_drain(struct server *s, struct conn *c, void *arg)
{
    struct lister *ls = arg;
    static Sbx__Agent__EntryInfo entries[LIST_BATCH];
    static Sbx__Agent__EntryInfo *ptrs[LIST_BATCH];
    size_t n = 0, bytes = 0;
    int err = 0;
    while (n < LIST_BATCH && bytes < LIST_BATCH_MAX && ls->nlv > 0) {
        struct level *l = &ls->lv[ls->nlv - 1];
        if (l->i == l->n) {
            level_free(l);
            ls->nlv--;
            if (ls->nlv > 0)
                ls->path[ls->lv[ls->nlv - 1].pathlen] = '\0';
            continue;
        }
        const char *name = l->names[l->i++];
        ls->pending--;
        ls->path[l->pathlen] = '\0';
        size_t len = l->pathlen + 1 + strlen(name);
        if (len >= sizeof(ls->path)) {
            err = ENAMETOOLONG;
            break;
        }
        ls->path[l->pathlen] = '/';
        strcpy(ls->path + l->pathlen + 1, name);
        Sbx__Agent__EntryInfo *e = &entries[n];
        int fe = entry_fill(e, ls->path, &ls->ids);
        if (fe == ENOENT) /* removed since the directory was read */
            continue;
        if (fe) {
            err = fe;
            break;
        }
        ptrs[n++] = e;
        bytes += 64 + 2 * len + strlen(e->owner) + strlen(e->group) +
                 (e->symlink_target ? strlen(e->symlink_target) : 0);
        if (++ls->total > LIST_MAX) {
            err = E2BIG;
            break;
        }
        /* Into subdirectories (not through symlinks) while depth allows. A directory that
           cannot be read is still listed itself; its contents are left out. */
        if (e->type == SBX__AGENT__FILE_TYPE__FILE_TYPE_DIR && ls->nlv < ls->depth) {
            int pe = lister_push(ls);
            if (pe == E2BIG || pe == ENOMEM) {
                err = pe;
                break;
            }
        }
        if (ls->nlv > 0)
            ls->path[ls->lv[ls->nlv - 1].pathlen] = '\0';
    }
    bool done = false;
    if (!err) {
        done = ls->nlv == 0;
        Sbx__Agent__ListReply r = SBX__AGENT__LIST_REPLY__INIT;
        r.entries = ptrs;
        r.n_entries = n;
        r.done = done;
        Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
        f.id = ls->id;
        f.body_case = SBX__AGENT__FRAME__BODY_LIST_REPLY;
        f.list_reply = &r;
        conn_send(c, &f);
    }
    for (size_t i = 0; i < n; i++)
        entry_free(&entries[i]);
    if (err) {
        ls_error(c, ls, err);
        return false;
    }
    if (done) {
        ls_end(c, ls);
        return false;
    }
    return true;
}

static void ls_closed(struct server *s, struct conn *c, void *arg)
{
    lister_free(arg);
}

static const struct conn_op ls_op = {.frame = ls_frame, .drain = ls_drain, .closed = ls_closed};

static void list_request(struct conn *c, uint32_t id, const Sbx__Agent__ListDir *req)
{
    struct envd_user u;
    struct lister *ls = calloc(1, sizeof(*ls));
    if (!ls) {
        conn_errno(c, id, ENOMEM, "list");
        return;
    }
    if (!req_user(c, id, "", &u) || !req_path(c, id, req->path, &u, ls->path, sizeof(ls->path))) {
        free(ls);
        return;
    }
    ls->id = id;
    ls->depth = req->depth ? req->depth : 1;
    if (strcmp(ls->path, "/") == 0)
        ls->path[0] = '\0';
    /* The root is followed if it is a symlink (like `ls link/`); nothing below it is. */
    int err = lister_push(ls);
    if (err) {
        if (err == E2BIG)
            conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                       "more than %d entries in %.300s", LIST_MAX, ls->path);
        else
            conn_errno(c, id, err, "list %.300s", ls->path[0] ? ls->path : "/");
        lister_free(ls);
        return;
    }
    conn_set_op(c, &ls_op, ls);
}

/* --- MakeDir, Remove, Rename --------------------------------------------------------------- */

static void mkdir_request(struct conn *c, uint32_t id, const Sbx__Agent__MakeDir *req)
{
    struct envd_user u;
    char path[PATH_MAX];
    if (!req_user(c, id, req->user, &u) || !req_path(c, id, req->path, &u, path, sizeof(path)))
        return;
    if (req->mode & ~07777u) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "mode %#o has bits beyond 07777", req->mode);
        return;
    }
    bool existed = false;
    int e = mkdir_p(path, req->mode ? req->mode : 0755, &u, &existed);
    if (e) {
        conn_errno(c, id, e, "mkdir %.300s", path);
        return;
    }
    Sbx__Agent__MakeDirReply r = SBX__AGENT__MAKE_DIR_REPLY__INIT;
    r.existed = existed;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_MAKE_DIR_REPLY;
    f.make_dir_reply = &r;
    conn_send(c, &f);
}

/* Removes name (relative to dfd) and, for a directory, everything below it, never following
   symlinks. Keeps going past failures (like rm -rf) and returns the first errno, or 0. */
static int remove_tree(int dfd, const char *name)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? 0 : errno;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(dfd, name, 0) == 0 || errno == ENOENT ? 0 : errno;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return e;
    }
    int err = 0;
    /* Entries may be skipped when the directory changes while it is read: go over it again
       while rmdir says it is not empty yet (a bounded number of times). */
    for (int pass = 0; pass < 4 && !err; pass++) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            int e = remove_tree(fd, de->d_name);
            if (e && !err)
                err = e;
        }
        if (err)
            break;
        if (unlinkat(dfd, name, AT_REMOVEDIR) == 0) {
            closedir(d);
            return 0;
        }
        if (errno != ENOTEMPTY && errno != EEXIST)
            err = errno;
        rewinddir(d);
    }
    closedir(d);
    return err ? err : ENOTEMPTY;
}

static void remove_request(struct conn *c, uint32_t id, const Sbx__Agent__Remove *req)
{
    struct envd_user u;
    char path[PATH_MAX];
    if (!req_user(c, id, "", &u) || !req_path(c, id, req->path, &u, path, sizeof(path)))
        return;
    if (strcmp(path, "/") == 0) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0,
                   "refusing to remove /");
        return;
    }
    struct stat st;
    int e = 0;
    if (lstat(path, &st) != 0)
        e = errno;
    else if (!S_ISDIR(st.st_mode))
        e = unlink(path) == 0 ? 0 : errno;
    else if (!req->recursive)
        e = rmdir(path) == 0 ? 0 : errno;
    else
        e = remove_tree(AT_FDCWD, path);
    if (e == EEXIST) /* some file systems say EEXIST for a non-empty directory */
        e = ENOTEMPTY;
    if (e)
        conn_errno(c, id, e, "remove %.300s", path);
    else
        conn_ok(c, id);
}

static void rename_request(struct conn *c, uint32_t id, const Sbx__Agent__Rename *req)
{
    struct envd_user u;
    char from[PATH_MAX], to[PATH_MAX];
    if (!req_user(c, id, "", &u) || !req_path(c, id, req->from, &u, from, sizeof(from)) ||
        !req_path(c, id, req->to, &u, to, sizeof(to)))
        return;
    struct stat st;
    int e = 0;
    /* Check the source first, so a failing rename leaves no new directories behind. */
    if (lstat(from, &st) != 0)
        e = errno;
    else if (strcmp(to, "/") == 0)
        e = EBUSY;
    else if ((e = make_parents(to, &u)) == 0 && rename(from, to) != 0)
        e = errno;
    if (e)
        conn_errno(c, id, e, "rename %.200s to %.200s", from, to);
    else
        conn_ok(c, id);
}

/* --- dispatch ------------------------------------------------------------------------------ */

void files_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f)
{
    switch (f->body_case) {
    case SBX__AGENT__FRAME__BODY_FILE_WRITE:
        file_write(c, f->id, f->file_write);
        return;
    case SBX__AGENT__FRAME__BODY_FILE_READ:
        file_read(c, f->id, f->file_read);
        return;
    case SBX__AGENT__FRAME__BODY_STAT:
        stat_request(c, f->id, f->stat);
        return;
    case SBX__AGENT__FRAME__BODY_LIST_DIR:
        list_request(c, f->id, f->list_dir);
        return;
    case SBX__AGENT__FRAME__BODY_MAKE_DIR:
        mkdir_request(c, f->id, f->make_dir);
        return;
    case SBX__AGENT__FRAME__BODY_REMOVE:
        remove_request(c, f->id, f->remove);
        return;
    case SBX__AGENT__FRAME__BODY_RENAME:
        rename_request(c, f->id, f->rename);
        return;
    default:
        conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL, "unexpected %s",
                  frame_body_name(f->body_case));
        return;
    }
}
