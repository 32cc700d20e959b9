// SPDX-License-Identifier: Apache-2.0
/* Copies between host paths and guest paths: files and trees, with modes and symlinks. */

/*
 * Built on the file calls: a file is one streamed write or read, a directory one mkdir (in)
 * or one recursive list (out). Regular files, directories and symlinks are copied; other
 * kinds (FIFOs, sockets, devices) are skipped. Hard links become separate files.
 *
 * Copying out, the guest is not trusted: every name it lists is checked (one component, not
 * "." or ".."), and the host tree is built with openat() from the destination directory,
 * never following a symlink (O_NOFOLLOW on every component), so a guest cannot make the copy
 * write outside the destination, for example through a symlink it listed before a file
 * "below" it. Set-user/group-ID bits from the guest are dropped.
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

#include "internal.h"
#include "ops/files.h"

#define COPY_CHUNK (1u << 20) /* host file I/O per step */
#define LIST_DEPTH 4096u      /* "all of it": deeper than any guest path */

struct copy {
    sbx *sb;
    sbx_progress_fn progress;
    void *ctx;
    uint64_t bytes, files;
    uint64_t reported; /* bytes at the last report */
    uint8_t *buf;      /* COPY_CHUNK */
};

/* Reports progress; non-zero from the callback cancels with SBX_EINTR. */
static int report(struct copy *cp)
{
    cp->reported = cp->bytes;
    if (cp->progress && cp->progress(cp->ctx, cp->bytes, cp->files) != 0)
        return sbx_seterr(cp->sb, SBX_EINTR, "copy cancelled by the progress callback");
    return 0;
}

static int host_error(struct copy *cp, int err, const char *what, const char *path)
{
    return sbx_seterr(cp->sb,
                      err == ENOENT                    ? SBX_ENOENT
                      : err == EACCES || err == EPERM  ? SBX_EACCES
                      : err == ENOTDIR                 ? SBX_ENOTDIR
                      : err == EISDIR                  ? SBX_EISDIR
                      : err == ENOSPC || err == EDQUOT ? SBX_ENOSPC
                      : err == EEXIST                  ? SBX_EEXIST
                      : err == ENOMEM                  ? SBX_ENOMEM
                                                       : SBX_EIO,
                      "host %s %s: %s", what, path, strerror(err));
}

/* Reports within a file: every COPY_CHUNK bytes. */
static int report_bytes(struct copy *cp)
{
    return cp->bytes - cp->reported >= COPY_CHUNK ? report(cp) : 0;
}

/* --- in: host -> guest --------------------------------------------------------------------- */

static int in_file(struct copy *cp, const char *src, const char *dst, unsigned mode)
{
    int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return host_error(cp, errno, "open", src);
    sbx_file_options o = SBX_FILE_OPTIONS_INIT;
    o.mode = mode & 07777;
    sbx_file *f;
    int r = sbx_file_create(cp->sb, dst, &o, &f);
    while (r == 0) {
        ssize_t n = read(fd, cp->buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = host_error(cp, errno, "read", src);
            break;
        }
        if (n == 0)
            break;
        if ((r = sbx_file_write(f, cp->buf, (size_t)n)) < 0)
            break;
        cp->bytes += (uint64_t)n;
        r = report_bytes(cp);
    }
    close(fd);
    if (r < 0) {
        sbx_file_close(f);
        return r;
    }
    if ((r = sbx_file_commit(f)) < 0)
        return r;
    cp->files++;
    return report(cp);
}

static int in_tree(struct copy *cp, const char *src, const char *dst, int depth)
{
    struct stat st;
    if (lstat(src, &st) != 0)
        return host_error(cp, errno, "stat", src);
    if (S_ISREG(st.st_mode))
        return in_file(cp, src, dst, st.st_mode);
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(src, target, sizeof(target) - 1);
        if (n < 0)
            return host_error(cp, errno, "readlink", src);
        target[n] = '\0';
        int r = files_symlink(cp->sb, target, dst);
        if (r == 0) {
            cp->files++;
            r = report(cp);
        }
        return r;
    }
    if (!S_ISDIR(st.st_mode))
        return 0; /* FIFOs, sockets, devices: not copied */
    if (depth > 1000)
        return sbx_seterr(cp->sb, SBX_EINVAL, "copy %s: the tree is too deep", src);
    int r = sbx_mkdir(cp->sb, dst, st.st_mode & 07777);
    if (r < 0)
        return r;
    DIR *d = opendir(src);
    if (!d)
        return host_error(cp, errno, "opendir", src);
    /* Names first, so only one host directory is open at a time however deep the tree. */
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    r = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            char **nn = realloc(names, cap * sizeof(*nn));
            if (!nn) {
                r = sbx_seterr(cp->sb, SBX_ENOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) {
            r = sbx_seterr(cp->sb, SBX_ENOMEM, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        if (r == 0) {
            char *s = NULL, *g = NULL;
            if (asprintf(&s, "%s/%s", src, names[i]) < 0)
                s = NULL;
            if (asprintf(&g, "%s/%s", dst, names[i]) < 0)
                g = NULL;
            r = s && g ? in_tree(cp, s, g, depth + 1)
                       : sbx_seterr(cp->sb, SBX_ENOMEM, "out of memory");
            free(s);
            free(g);
        }
        free(names[i]);
    }
    free(names);
    return r;
}

int sbx_copy_in(sbx *sb, const char *host_src, const char *guest_dst, sbx_progress_fn progress,
                void *ctx)
{
    if (!sb)
        return SBX_EINVAL;
    if (!host_src || !host_src[0])
        return sbx_seterr(sb, SBX_EINVAL, "sbx_copy_in: the host path is NULL or empty");
    int r = files_check_path(sb, guest_dst, "sbx_copy_in");
    if (r)
        return r;
    struct copy cp = {.sb = sb, .progress = progress, .ctx = ctx, .buf = malloc(COPY_CHUNK)};
    if (!cp.buf)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    /* Trailing slashes would only double up in the joined names. */
    char *dst = strdup(guest_dst);
    if (dst) {
        size_t n = strlen(dst);
        while (n > 1 && dst[n - 1] == '/')
            dst[--n] = '\0';
        r = in_tree(&cp, host_src, dst, 0);
    } else {
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    }
    free(dst);
    free(cp.buf);
    return r;
}

/* --- out: guest -> host -------------------------------------------------------------------- */

/* Host modes for what the guest says: permission and sticky bits, never set-ID. */
static mode_t safe_mode(unsigned mode)
{
    return mode & 01777;
}

/* Writes guest file src into name under dirfd (replacing a file or symlink there, never
   following one). */
static int out_file(struct copy *cp, const char *src, int dirfd, const char *name,
                    const char *shown, unsigned mode)
{
    sbx_file *f;
    int r = sbx_file_open(cp->sb, src, 0, 0, &f, NULL);
    if (r < 0)
        return r;
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ELOOP && unlinkat(dirfd, name, 0) == 0)
        fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = host_error(cp, errno, "open", shown);
        sbx_file_close(f);
        return r;
    }
    for (;;) {
        r = sbx_file_read(f, cp->buf, COPY_CHUNK);
        if (r <= 0)
            break;
        size_t n = (size_t)r, off = 0;
        while (off < n) {
            ssize_t w = write(fd, cp->buf + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                r = host_error(cp, errno, "write", shown);
                break;
            }
            off += (size_t)w;
        }
        if (r < 0)
            break;
        cp->bytes += n;
        if ((r = report_bytes(cp)) < 0)
            break;
    }
    sbx_file_close(f);
    if (r == 0 && fchmod(fd, safe_mode(mode)) != 0)
        r = host_error(cp, errno, "chmod", shown);
    if (close(fd) != 0 && r == 0)
        r = host_error(cp, errno, "close", shown);
    if (r < 0)
        return r;
    cp->files++;
    return report(cp);
}

static int out_symlink(struct copy *cp, const char *target, int dirfd, const char *name,
                       const char *shown)
{
    int e = symlinkat(target, dirfd, name) == 0 ? 0 : errno;
    if (e == EEXIST) {
        /* Replace a file or symlink in the way, not a directory. */
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            e = errno;
        else if (!S_ISDIR(st.st_mode))
            e = unlinkat(dirfd, name, 0) != 0 || symlinkat(target, dirfd, name) != 0 ? errno : 0;
    }
    if (e)
        return host_error(cp, e, "symlink", shown);
    cp->files++;
    return report(cp);
}

/* Creates directory name under dirfd (or accepts an existing real directory) and opens it.
   Owner-writable while the copy runs; the guest's mode is applied at the end. */
static int out_dir(struct copy *cp, int dirfd, const char *name, const char *shown, int *out)
{
    if (mkdirat(dirfd, name, 0700) != 0 && errno != EEXIST)
        return host_error(cp, errno, "mkdir", shown);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return host_error(cp, errno == ELOOP ? ENOTDIR : errno, "open directory", shown);
    *out = fd;
    return 0;
}

/* Checks that rel ("a/b/c", from the guest) has only proper components. */
static bool rel_ok(const char *rel)
{
    if (!rel[0])
        return false;
    for (const char *p = rel;;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!e)
            return true;
        p = e + 1;
    }
}

/* Opens the directory holding rel under rootfd (every component a real directory, created by
   this copy or already there). *leaf receives the last component. Returns an fd or an error
   (negative SBX_E*). */
static int open_parent(struct copy *cp, int rootfd, char *rel, const char **leaf, const char *shown)
{
    int fd = dup(rootfd);
    if (fd < 0)
        return host_error(cp, errno, "dup", shown);
    char *p = rel;
    for (char *s; (s = strchr(p, '/'));) {
        *s = '\0';
        int nfd = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        *s = '/';
        close(fd);
        if (nfd < 0)
            return host_error(cp, e == ELOOP ? ENOTDIR : e, "open directory", shown);
        fd = nfd;
        p = s + 1;
    }
    *leaf = p;
    return fd;
}

struct dirmode {
    char *rel;
    unsigned mode;
};

static int out_tree(struct copy *cp, const sbx_entry *root, const char *host_dst)
{
    int r;
    /* The destination itself: created if missing, then everything goes relative to it. */
    if (mkdir(host_dst, 0700) != 0 && errno != EEXIST)
        return host_error(cp, errno, "mkdir", host_dst);
    int rootfd = open(host_dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return host_error(cp, errno, "open directory", host_dst);
    sbx_entry *list = NULL;
    size_t n = 0;
    if ((r = sbx_list(cp->sb, root->path, LIST_DEPTH, &list, &n)) < 0) {
        close(rootfd);
        return r;
    }
    struct dirmode *dirs = calloc(n + 1, sizeof(*dirs));
    size_t ndirs = 0;
    size_t plen = strlen(root->path);
    bool slash_root = strcmp(root->path, "/") == 0;
    if (!dirs)
        r = sbx_seterr(cp->sb, SBX_ENOMEM, "out of memory");
    for (size_t i = 0; r == 0 && i < n; i++) {
        const sbx_entry *e = &list[i];
        /* "<root>/<rel>" with proper components only; anything else is a lying guest. */
        const char *rel = slash_root ? e->path + 1 : e->path + plen + 1;
        if ((!slash_root && (strncmp(e->path, root->path, plen) != 0 || e->path[plen] != '/')) ||
            (slash_root && e->path[0] != '/') || !rel_ok(rel)) {
            r = sbx_seterr(cp->sb, SBX_EPROTO, "copy out: the guest listed %.200s outside %.200s",
                           e->path, root->path);
            break;
        }
        char *relc = strdup(rel), *shown = NULL;
        if (!relc || asprintf(&shown, "%s/%s", host_dst, rel) < 0) {
            free(relc);
            r = sbx_seterr(cp->sb, SBX_ENOMEM, "out of memory");
            break;
        }
        const char *leaf = NULL;
        int pfd = open_parent(cp, rootfd, relc, &leaf, shown);
        if (pfd < 0) {
            r = pfd;
        } else if (e->type == SBX_TYPE_DIR) {
            int dfd = -1;
            if ((r = out_dir(cp, pfd, leaf, shown, &dfd)) == 0) {
                close(dfd);
                dirs[ndirs].rel = strdup(rel);
                dirs[ndirs].mode = e->mode;
                if (dirs[ndirs].rel)
                    ndirs++;
            }
        } else if (e->type == SBX_TYPE_FILE) {
            r = out_file(cp, e->path, pfd, leaf, shown, e->mode);
        } else if (e->type == SBX_TYPE_SYMLINK && e->symlink_target && e->symlink_target[0]) {
            r = out_symlink(cp, e->symlink_target, pfd, leaf, shown);
        }
        if (pfd >= 0)
            close(pfd);
        free(relc);
        free(shown);
    }
    /* Modes last, deepest first, so a read-only directory did not stop its own filling. */
    for (size_t i = ndirs; i-- > 0;) {
        if (r == 0) {
            int fd = openat(rootfd, dirs[i].rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0 || fchmod(fd, safe_mode(dirs[i].mode)) != 0)
                r = host_error(cp, errno, "chmod", dirs[i].rel);
            if (fd >= 0)
                close(fd);
        }
        free(dirs[i].rel);
    }
    free(dirs);
    sbx_entries_free(list, n);
    if (r == 0 && fchmod(rootfd, safe_mode(root->mode)) != 0)
        r = host_error(cp, errno, "chmod", host_dst);
    close(rootfd);
    return r;
}

int sbx_copy_out(sbx *sb, const char *guest_src, const char *host_dst, sbx_progress_fn progress,
                 void *ctx)
{
    if (!sb)
        return SBX_EINVAL;
    if (!host_dst || !host_dst[0])
        return sbx_seterr(sb, SBX_EINVAL, "sbx_copy_out: the host path is NULL or empty");
    int r = files_check_path(sb, guest_src, "sbx_copy_out");
    if (r)
        return r;
    struct copy cp = {.sb = sb, .progress = progress, .ctx = ctx, .buf = malloc(COPY_CHUNK)};
    if (!cp.buf)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    sbx_entry root;
    if ((r = sbx_stat(sb, guest_src, &root)) < 0) {
        free(cp.buf);
        return r;
    }
    if (root.type == SBX_TYPE_DIR) {
        r = out_tree(&cp, &root, host_dst);
    } else if (root.type == SBX_TYPE_FILE || root.type == SBX_TYPE_SYMLINK) {
        /* The destination path is the caller's: its directory is used as it is. */
        char *copy = strdup(host_dst);
        char *slash = copy ? strrchr(copy, '/') : NULL;
        const char *dir = ".", *leaf = copy;
        if (slash && slash == copy) {
            dir = "/";
            leaf = slash + 1;
        } else if (slash) {
            *slash = '\0';
            dir = copy;
            leaf = slash + 1;
        }
        int dfd = copy ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (!copy)
            r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        else if (!leaf[0])
            r = sbx_seterr(sb, SBX_EINVAL, "sbx_copy_out: %s names a directory, not a file",
                           host_dst);
        else if (dfd < 0)
            r = host_error(&cp, errno, "open directory", dir);
        else if (root.type == SBX_TYPE_FILE)
            r = out_file(&cp, root.path, dfd, leaf, host_dst, root.mode);
        else
            r = out_symlink(&cp, root.symlink_target ? root.symlink_target : "", dfd, leaf,
                            host_dst);
        if (dfd >= 0)
            close(dfd);
        free(copy);
    } else {
        r = sbx_seterr(sb, SBX_EINVAL, "copy out: %s is not a file, directory or symlink",
                       root.path);
    }
    sbx_entry_clear(&root);
    free(cp.buf);
    return r;
}
