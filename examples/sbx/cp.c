// SPDX-License-Identifier: Apache-2.0
/* sbx cp, and the copies of sbx run: cp-like destinations, a progress line, a summary. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sbx.h"

/* --- progress ------------------------------------------------------------------------------ */

/* The line appears only on a terminal, and only once a copy has taken a second: short copies
   stay quiet. */
struct progress {
    int tty;
    double t0, last;
    int shown;
    uint64_t total_bytes, total_files; /* 0: unknown */
    uint64_t bytes, files;
};

static void progress_line(struct progress *p)
{
    char b1[32], b2[32];
    if (p->total_bytes || p->total_files)
        fprintf(stderr, "\r\033[Ksbx: copying: %s of %s, %llu of %llu files",
                human_bytes(p->bytes, b1), human_bytes(p->total_bytes, b2),
                (unsigned long long)p->files, (unsigned long long)p->total_files);
    else
        fprintf(stderr, "\r\033[Ksbx: copying: %s, %llu files", human_bytes(p->bytes, b1),
                (unsigned long long)p->files);
    fflush(stderr);
}

static int on_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    struct progress *p = ctx;
    p->bytes = bytes;
    p->files = files;
    if (!p->tty)
        return 0;
    double t = now_s();
    if (t - p->t0 < 1.0 || t - p->last < 0.1)
        return 0;
    p->last = t;
    p->shown = 1;
    progress_line(p);
    return 0;
}

static void progress_end(struct progress *p)
{
    if (p->shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/* Totals of a host tree, for the progress line (counted like the library: regular files and
   symlinks are files). */
static uint64_t scan_bytes, scan_files;

static int scan_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (type == FTW_F && S_ISREG(st->st_mode)) {
        scan_bytes += (uint64_t)st->st_size;
        scan_files++;
    } else if (type == FTW_SL || type == FTW_SLN) {
        scan_files++;
    }
    return 0;
}

/* --- paths --------------------------------------------------------------------------------- */

static char *xasprintf(const char *fmt, const char *a, const char *b)
{
    char *s;
    if (asprintf(&s, fmt, a, b) < 0) {
        msg("out of memory");
        exit(EXIT_SBX);
    }
    return s;
}

/* The last component of a path ("" for "/", "." and ".."), malloc'd. */
static char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/')
        start--;
    char *b = strndup(path + start, n - start);
    if (!b) {
        msg("out of memory");
        exit(EXIT_SBX);
    }
    if (strcmp(b, ".") == 0 || strcmp(b, "..") == 0 || strcmp(b, "/") == 0)
        b[0] = '\0';
    return b;
}

static int ends_with_slash(const char *p)
{
    size_t n = strlen(p);
    return n > 0 && p[n - 1] == '/';
}

/* Is the guest path a directory (or a symlink to one)? */
static int guest_is_dir(sbx *sb, const char *path)
{
    sbx_entry e;
    if (sbx_stat(sb, path, &e) != 0)
        return 0;
    int type = e.type;
    sbx_entry_clear(&e);
    if (type == SBX_TYPE_SYMLINK) {
        char *dot = xasprintf("%s%s", path, ends_with_slash(path) ? "." : "/.");
        if (sbx_stat(sb, dot, &e) == 0) {
            type = e.type;
            sbx_entry_clear(&e);
        }
        free(dot);
    }
    return type == SBX_TYPE_DIR;
}

/* cp's rule: into an existing directory (or one named with a trailing '/') under the source's
   own name; a source named "." (or "/") merges into the directory itself. */
static char *destination(const char *dst, int dst_is_dir, const char *src)
{
    if (!dst_is_dir && !ends_with_slash(dst))
        return xasprintf("%s%s", dst, "");
    char *b = base_name(src);
    char *r = b[0] ? xasprintf(ends_with_slash(dst) ? "%s%s" : "%s/%s", dst, b)
                   : xasprintf("%s%s", dst, "");
    free(b);
    return r;
}

static int copy_failed(const sbx *sb, int rc, const char *what)
{
    if (rc == SBX_EINTR && signals_pending()) {
        msg("interrupted: stopped the copy and the sandbox");
        return 128 + signals_pending();
    }
    return lib_error(sb, rc, what);
}

static void summary(const char *from, const char *to, const struct progress *p)
{
    char b[32];
    msg("copied %s to %s (%llu file%s, %s)", from, to, (unsigned long long)p->files,
        p->files == 1 ? "" : "s", human_bytes(p->bytes, b));
}

/* A source that is itself a symlink is followed, like cp -H (what one names on the command
   line is what one means: /etc/os-release is a symlink on Debian); symlinks inside a tree
   are copied as symlinks. Returns the path to copy (malloc'd), or NULL after saying why. */
static char *host_follow(const char *src)
{
    struct stat st;
    if (lstat(src, &st) != 0 || (S_ISLNK(st.st_mode) && stat(src, &st) != 0)) {
        msg("cannot copy %s: %s", src, strerror(errno));
        return NULL;
    }
    char *r = S_ISLNK(st.st_mode) ? realpath(src, NULL) : strdup(src);
    if (!r)
        msg("cannot copy %s: %s", src, strerror(errno));
    return r;
}

static char *guest_follow(sbx *sb, const char *src, int *rc)
{
    char *path = xasprintf("%s%s", src, "");
    for (int hops = 0; hops < 40; hops++) {
        sbx_entry e;
        if ((*rc = sbx_stat(sb, path, &e)) != 0)
            return path; /* the copy reports it */
        if (e.type != SBX_TYPE_SYMLINK || !e.symlink_target || !e.symlink_target[0]) {
            sbx_entry_clear(&e);
            return path;
        }
        char *next;
        if (e.symlink_target[0] == '/') {
            next = xasprintf("%s%s", e.symlink_target, "");
        } else {
            /* Relative to the link's directory (e.path is absolute). */
            char *slash = strrchr(e.path, '/');
            if (slash)
                slash[1] = '\0';
            next = xasprintf("%s%s", slash ? e.path : "", e.symlink_target);
        }
        sbx_entry_clear(&e);
        free(path);
        path = next;
    }
    return path; /* a loop: let the copy fail on it */
}

int copy_to_guest(sbx *sb, const char *host_src, const char *guest_dst, int say)
{
    char *real = host_follow(host_src);
    if (!real)
        return EXIT_SBX;
    struct stat st;
    if (lstat(real, &st) != 0) {
        msg("cannot copy %s: %s", host_src, strerror(errno));
        free(real);
        return EXIT_SBX;
    }
    struct progress p = {.tty = isatty(2), .t0 = now_s()};
    if (p.tty && S_ISDIR(st.st_mode)) {
        scan_bytes = scan_files = 0;
        if (nftw(real, scan_one, 32, FTW_PHYS) == 0) {
            p.total_bytes = scan_bytes;
            p.total_files = scan_files;
        }
    }
    char *dst = destination(guest_dst, guest_is_dir(sb, guest_dst), host_src);
    int rc = sbx_copy_in(sb, real, dst, on_progress, &p);
    free(real);
    progress_end(&p);
    int status = 0;
    if (rc < 0) {
        char *what = xasprintf("cannot copy %s into the sandbox as %s", host_src, dst);
        status = copy_failed(sb, rc, what);
        free(what);
    } else if (say) {
        char *to = xasprintf("guest:%s%s", dst, "");
        summary(host_src, to, &p);
        free(to);
    }
    free(dst);
    return status;
}

/* A guest file to our stdout. */
static int cat_out(sbx *sb, const char *guest_src)
{
    sbx_file *f;
    int rc = sbx_file_open(sb, guest_src, 0, 0, &f, NULL);
    if (rc < 0) {
        char *what = xasprintf("cannot read guest:%s%s", guest_src, "");
        int s = copy_failed(sb, rc, what);
        free(what);
        return s;
    }
    static char buf[1 << 16];
    int status = 0;
    for (;;) {
        rc = sbx_file_read(f, buf, sizeof(buf));
        if (rc == 0)
            break;
        if (rc < 0) {
            char *what = xasprintf("cannot read guest:%s%s", guest_src, "");
            status = copy_failed(sb, rc, what);
            free(what);
            break;
        }
        if (write_all(1, buf, (size_t)rc) != 0) {
            if (errno != EPIPE)
                msg("cannot write to stdout: %s", strerror(errno));
            status = errno == EPIPE ? 128 + 13 : EXIT_SBX;
            break;
        }
    }
    sbx_file_close(f);
    return status;
}

int copy_from_guest(sbx *sb, const char *guest_src, const char *host_dst, int say)
{
    if (strcmp(host_dst, "-") == 0)
        return cat_out(sb, guest_src);
    struct stat st;
    int is_dir = stat(host_dst, &st) == 0 && S_ISDIR(st.st_mode);
    char *dst = destination(host_dst, is_dir, guest_src);
    struct progress p = {.tty = isatty(2), .t0 = now_s()};
    int rc;
    char *real = guest_follow(sb, guest_src, &rc);
    rc = sbx_copy_out(sb, real, dst, on_progress, &p);
    free(real);
    progress_end(&p);
    int status = 0;
    if (rc < 0) {
        char *what = xasprintf("cannot copy guest:%s out to %s", guest_src, dst);
        status = copy_failed(sb, rc, what);
        free(what);
    } else if (say) {
        char *from = xasprintf("guest:%s%s", guest_src, "");
        summary(from, dst, &p);
        free(from);
    }
    free(dst);
    return status;
}

/* --- sbx cp -------------------------------------------------------------------------------- */

/* "guest:PATH" or ":PATH" -> PATH (the home directory when empty); NULL for a host path. */
static const char *guest_path(const char *arg)
{
    const char *p = NULL;
    if (strncmp(arg, "guest:", 6) == 0)
        p = arg + 6;
    else if (arg[0] == ':')
        p = arg + 1;
    if (p && !*p)
        p = ".";
    return p;
}

int cmd_cp(struct cli *a)
{
    if (a->nwords != 2)
        return usage_error(a, "%s: sbx cp SRC DST, one of them guest:PATH",
                           a->nwords < 2 ? "missing paths" : "too many paths");
    const char *src = a->words[0], *dst = a->words[1];
    const char *gsrc = guest_path(src), *gdst = guest_path(dst);
    if (gsrc && gdst)
        return usage_error(a, "both paths are in the sandbox: one of SRC and DST must be a path "
                              "on this machine");
    if (!gsrc && !gdst)
        return usage_error(a, "neither path is in the sandbox: write the sandbox's side as "
                              "guest:PATH (or :PATH)");
    if (strcmp(src, "-") == 0)
        return usage_error(a, "SRC '-' (stdin) is not supported: to give a command its input, "
                              "pipe into sbx run");
    struct stat st;
    if (!gsrc && lstat(src, &st) != 0) {
        msg("cannot copy %s: %s", src, strerror(errno));
        return EXIT_SBX;
    }

    sbx *sb;
    int rc = sandbox_open(a, &sb);
    if (rc)
        return rc;
    signals_set_sandbox(sb);
    int status;
    if (gsrc) {
        status = copy_from_guest(sb, gsrc, dst, strcmp(dst, "-") != 0);
    } else {
        status = copy_to_guest(sb, src, gdst, 1);
        if (status == 0) {
            /* Honest about what that achieved (see `sbx cp --help`). */
            msg("note: this sandbox is destroyed now, with the copy: to use files in a "
                "sandbox, copy them in as part of a run: sbx run --copy-in %s:%s -- CMD",
                src, gdst);
        }
    }
    signals_set_sandbox(NULL);
    sbx_destroy(sb);
    return status;
}
