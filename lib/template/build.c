// SPDX-License-Identifier: Apache-2.0
/* Building templates from a Dockerfile subset: layered steps, a layer cache, the final snapshot. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "snap/snap.h"
#include "template/dockerfile.h"
#include "template/store.h"
#include "util/sha256.h"
#include "virtio/virtio.h"

#define KEY_SALT         "libsandbox template v1"
#define MAX_DOCKERFILE   (1u << 20)
#define DEFAULT_READY_MS 120000u
#define DEFAULT_STEP_MS  1800000u
#define TAIL_BYTES       2048
#define COPY_CHUNK       (1u << 20)
#define DEFAULT_MEMORY   512
#define BOOT_TIMEOUT_MS  120000

struct builder {
    const sbx_template_build_options *o;
    char *err;
    size_t errlen;
    uint64_t t0;
    char *store;
    struct dockerfile *df;
    char *context;
    char *from_desc; /* FROM as the manifest records it */
    char *rootfs, *kernel;
    struct store_manifest *parent; /* FROM a template */
    unsigned vcpus, memory_mib;
    uint64_t disk_mib;
    /* The steps so far (the parent's first) and their layer files. */
    struct store_step *steps;
    size_t nsteps;
    char **layers;
    unsigned nlayers;
    char hash[65]; /* the chain: hash of everything up to the current step */
    const char *user, *workdir;
    sbx *sb;               /* the builder sandbox, booted at the first step that must run */
    char tail[TAIL_BYTES]; /* the last output of the running step, for error messages */
    size_t tail_len;
};

static int fail(struct builder *b, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct builder *b, int code, const char *fmt, ...)
{
    if (b->err && b->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void progress(struct builder *b, unsigned step, const char *text, int cached, int done)
{
    if (!b->o->on_progress)
        return;
    sbx_template_progress p = {.step = step,
                               .nsteps = (unsigned)b->df->nsteps,
                               .text = text,
                               .cached = cached,
                               .done = done,
                               .elapsed_ms = mono_ms() - b->t0};
    b->o->on_progress(b->o->ctx, &p);
}

/* ---- hashing ------------------------------------------------------------------------- */

static void hash_str(struct sha256 *h, const char *tag, const char *s)
{
    sha256_update(h, tag, strlen(tag));
    sha256_update(h, "=", 1);
    if (s)
        sha256_update(h, s, strlen(s) + 1);
    else
        sha256_update(h, "\xff", 1);
}

static void hash_u64(struct sha256 *h, const char *tag, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    hash_str(h, tag, buf);
}

/* A file's identity for the cache: path, size and modification time (hashing a multi-GiB
   image on every build would cost more than the build). */
static void hash_file_id(struct sha256 *h, const char *tag, const char *path)
{
    struct stat st;
    hash_str(h, tag, path);
    if (path && stat(path, &st) == 0) {
        hash_u64(h, "size", (uint64_t)st.st_size);
        hash_u64(h, "mtime",
                 (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec);
    }
}

/* The contents of a COPY source (recursively: names, modes, data). */
static int hash_tree(struct sha256 *h, const char *path, const char *rel)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return -errno;
    hash_str(h, "entry", rel);
    hash_u64(h, "mode", st.st_mode);
    if (S_ISREG(st.st_mode)) {
        char sum[65];
        int r = sha256_file(path, sum);
        if (r < 0)
            return r;
        hash_str(h, "data", sum);
        return 0;
    }
    if (S_ISLNK(st.st_mode)) {
        char t[PATH_MAX];
        ssize_t n = readlink(path, t, sizeof(t) - 1);
        if (n < 0)
            return -errno;
        t[n] = 0;
        hash_str(h, "link", t);
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return -EINVAL;
    struct dirent **names = NULL;
    int n = scandir(path, &names, NULL, alphasort);
    if (n < 0)
        return -errno;
    int r = 0;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (r == 0 && strcmp(nm, ".") && strcmp(nm, "..")) {
            char *p = NULL, *q = NULL;
            if (asprintf(&p, "%s/%s", path, nm) < 0 || asprintf(&q, "%s/%s", rel, nm) < 0)
                r = -ENOMEM;
            else
                r = hash_tree(h, p, q);
            free(p);
            free(q);
        }
        free(names[i]);
    }
    free(names);
    return r;
}

static char *ctx_path(struct builder *b, const char *rel)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", b->context, rel) < 0 ? NULL : p;
}

/* The step's cache key: the chain so far, the instruction, and what else it depends on. */
static int step_hash(struct builder *b, size_t i, char out[65])
{
    const struct df_step *s = &b->df->steps[i];
    struct sha256 h;
    if (sha256_init(&h) < 0)
        return fail(b, SBX_ENOMEM, "out of memory");
    hash_str(&h, "prev", b->hash);
    hash_str(&h, "step", s->text);
    int r = 0;
    if (s->op == DF_RUN || s->op == DF_COPY || s->op == DF_ADD || s->op == DF_WORKDIR) {
        hash_str(&h, "user", b->user);
        hash_str(&h, "workdir", b->workdir);
        char **env = dockerfile_step_env(b->df, i);
        for (size_t k = 0; env && env[k]; k++)
            hash_str(&h, "env", env[k]);
        dockerfile_free_list(env);
    }
    for (size_t k = 0; r == 0 && (s->op == DF_COPY || s->op == DF_ADD) && k < s->nsrcs; k++) {
        char *p = ctx_path(b, s->srcs[k]);
        r = p ? hash_tree(&h, p, s->srcs[k]) : -ENOMEM;
        if (r < 0)
            r = fail(b, SBX_EINVAL, "line %u: COPY source %s: %s", s->line, p ? p : s->srcs[k],
                     strerror(-r));
        free(p);
    }
    sha256_hex(&h, out);
    return r;
}

/* ---- the builder sandbox ------------------------------------------------------------- */

static int run_output(void *ctx, int stream, const void *data, size_t len)
{
    struct builder *b = ctx;
    /* Keep the last TAIL_BYTES for the error message of a failing step. */
    const char *d = data;
    if (len >= TAIL_BYTES) {
        d += len - TAIL_BYTES;
        len = TAIL_BYTES;
    }
    if (b->tail_len + len > TAIL_BYTES) {
        size_t drop = b->tail_len + len - TAIL_BYTES;
        memmove(b->tail, b->tail + drop, b->tail_len - drop);
        b->tail_len -= drop;
    }
    memcpy(b->tail + b->tail_len, d, len);
    b->tail_len += len;
    return b->o->on_output ? b->o->on_output(b->o->ctx, stream, data, len) : 0;
}

/* Runs a command as part of the build (argv or a shell command), streaming its output. */
static int exec_step(struct builder *b, sbx *sb, const char *cmd, const char *const *argv,
                     const char *const *env, const char *user, const char *cwd, unsigned timeout_ms,
                     int *exit_code)
{
    sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
    e.cmd = argv ? NULL : cmd;
    e.argv = argv;
    e.envs = env;
    e.user = user ? user : "root";
    e.cwd = cwd ? cwd : "/";
    e.timeout_ms = timeout_ms;
    e.on_output = run_output;
    e.ctx = b;
    b->tail_len = 0;
    sbx_exec_result res;
    int r = sbx_exec(sb, &e, &res);
    if (r < 0)
        return fail(b, r, "%s: %s", cmd ? cmd : argv[0], sbx_errmsg(sb));
    *exit_code = res.timed_out ? -2 : res.exit_code;
    sbx_exec_result_free(&res);
    return 0;
}

/* A quiet command that must succeed (mkdir, chown, sync...). */
static int must(struct builder *b, sbx *sb, const char *what, const char *cmd)
{
    int code = 0;
    sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
    e.cmd = cmd;
    e.user = "root";
    sbx_exec_result res;
    int r = sbx_exec(sb, &e, &res);
    if (r < 0)
        return fail(b, r, "%s: %s", what, sbx_errmsg(sb));
    code = res.exit_code;
    if (code != 0)
        r = fail(b, SBX_EGUEST, "%s failed (exit %d): %.*s", what, code, (int)res.err_len,
                 res.err ? res.err : "");
    sbx_exec_result_free(&res);
    return r;
}

static void base_options(struct builder *b, sbx_options *so)
{
    static const sbx_options init = SBX_OPTIONS_INIT;
    *so = init;
    so->kernel = b->kernel;
    so->rootfs = b->rootfs;
    so->vcpus = b->vcpus;
    so->memory_mib = b->memory_mib;
    so->boot_timeout_ms = BOOT_TIMEOUT_MS;
    so->image_dir = b->o->image_dir;
}

/* Boots a sandbox from the layers so far; grows the filesystem to the disk size. */
static int boot(struct builder *b, sbx **out, const sbx_options *so, const char *cwd)
{
    int r = sbx_create_layered(out, so, b->layers, b->nlayers, b->disk_mib << 20, cwd);
    if (r < 0)
        return fail(b, r, "booting the builder: %s", sbx_errmsg(*out));
    if (b->disk_mib)
        r = must(b, *out, "growing the root filesystem", "resize2fs /dev/vda >/dev/null 2>&1");
    return r;
}

static int builder_sandbox(struct builder *b)
{
    if (b->sb)
        return 0;
    sbx_options so;
    base_options(b, &so);
    so.vcpus = b->vcpus > 2 ? b->vcpus : 2; /* builds compile and unpack */
    so.memory_mib = b->memory_mib > 1024 ? b->memory_mib : 1024;
    so.host_loopback = b->o->host_loopback;
    so.default_user = "root";
    progress(b, 0, "boot", 0, 0);
    int r = boot(b, &b->sb, &so, NULL);
    progress(b, 0, "boot", 0, 1);
    return r;
}

/* Writes the builder's disk changes since the previous step as the layer `hash`. */
static int save_layer(struct builder *b, const char *hash, uint64_t *bytes)
{
    int r = must(b, b->sb, "flushing the guest's writes", "sync");
    if (r < 0)
        return r;
    char *path = store_layer_path(b->store, hash), *tmp = NULL;
    if (!path || asprintf(&tmp, "%s/layers/.tmp-%s", b->store, hash) < 0) {
        free(path);
        return fail(b, SBX_ENOMEM, "out of memory");
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    char err[512] = "";
    if (fd < 0)
        r = fail(b, SBX_EIO, "creating %s: %s", tmp, strerror(errno));
    else if ((r = virtio_blk_save_dirty(((struct sbx *)b->sb)->root_disk, fd, bytes, err,
                                        sizeof(err))) < 0)
        r = fail(b, r, "%s", err);
    else if (fsync(fd) < 0 || rename(tmp, path) < 0)
        r = fail(b, SBX_EIO, "writing layer %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (r < 0)
        unlink(tmp);
    free(tmp);
    free(path);
    return r;
}

/* ---- COPY / ADD ---------------------------------------------------------------------- */

static int copy_file(struct builder *b, const char *src, const char *dst, unsigned mode)
{
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(b, SBX_EIO, "COPY: %s: %s", src, strerror(errno));
    sbx_file_options fo = SBX_FILE_OPTIONS_INIT;
    fo.mode = mode;
    fo.user = "root";
    sbx_file *f = NULL;
    int r = sbx_file_create(b->sb, dst, &fo, &f);
    char *buf = r == 0 ? malloc(COPY_CHUNK) : NULL;
    if (r == 0 && !buf)
        r = SBX_ENOMEM;
    while (r == 0) {
        ssize_t n = read(fd, buf, COPY_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = SBX_EIO;
            break;
        }
        if (n == 0)
            break;
        r = sbx_file_write(f, buf, (size_t)n);
    }
    free(buf);
    close(fd);
    if (f) {
        int c = r == 0 ? sbx_file_commit(f) : (sbx_file_close(f), r);
        if (r == 0)
            r = c;
    }
    if (r < 0)
        return fail(b, r, "COPY %s to %s: %s", src, dst, sbx_errmsg(b->sb));
    return 0;
}

static char *shell_quote(const char *s)
{
    size_t n = 3;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *q = malloc(n), *o = q;
    if (!q)
        return NULL;
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else
            *o++ = *p;
    }
    *o++ = '\'';
    *o = 0;
    return q;
}

/* Copies host `src` (a file, symlink or directory tree) to guest `dst`. */
static int copy_tree(struct builder *b, const char *src, const char *dst, unsigned chmod_mode)
{
    struct stat st;
    if (lstat(src, &st) < 0)
        return fail(b, SBX_EIO, "COPY: %s: %s", src, strerror(errno));
    if (S_ISREG(st.st_mode))
        return copy_file(b, src, dst, chmod_mode ? chmod_mode : st.st_mode & 07777);
    if (S_ISLNK(st.st_mode)) {
        char t[PATH_MAX];
        ssize_t n = readlink(src, t, sizeof(t) - 1);
        if (n < 0)
            return fail(b, SBX_EIO, "COPY: %s: %s", src, strerror(errno));
        t[n] = 0;
        char *qt = shell_quote(t), *qd = shell_quote(dst), *cmd = NULL;
        int r = qt && qd && asprintf(&cmd, "ln -sfn %s %s", qt, qd) >= 0
                    ? must(b, b->sb, "COPY (symlink)", cmd)
                    : fail(b, SBX_ENOMEM, "out of memory");
        free(qt);
        free(qd);
        free(cmd);
        return r;
    }
    if (!S_ISDIR(st.st_mode))
        return fail(b, SBX_EINVAL, "COPY: %s is not a file, directory or symlink", src);
    int r = sbx_mkdir(b->sb, dst, chmod_mode ? chmod_mode : st.st_mode & 07777);
    if (r < 0)
        return fail(b, r, "COPY: mkdir %s: %s", dst, sbx_errmsg(b->sb));
    DIR *d = opendir(src);
    if (!d)
        return fail(b, SBX_EIO, "COPY: %s: %s", src, strerror(errno));
    struct dirent *e;
    r = 0;
    while (r == 0 && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *s = NULL, *t = NULL;
        if (asprintf(&s, "%s/%s", src, e->d_name) < 0 ||
            asprintf(&t, "%s/%s", strcmp(dst, "/") ? dst : "", e->d_name) < 0)
            r = fail(b, SBX_ENOMEM, "out of memory");
        else
            r = copy_tree(b, s, t, chmod_mode);
        free(s);
        free(t);
    }
    closedir(d);
    return r;
}

static bool is_archive(const char *p)
{
    static const char *const ext[] = {".tar", ".tar.gz",  ".tgz",  ".tar.xz",
                                      ".txz", ".tar.bz2", ".tbz2", ".tar.zst"};
    size_t n = strlen(p);
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        size_t k = strlen(ext[i]);
        if (n > k && !strcmp(p + n - k, ext[i]))
            return true;
    }
    return false;
}

static int copy_step(struct builder *b, const struct df_step *s)
{
    bool to_dir = s->dst[strlen(s->dst) - 1] == '/';
    int r = 0;
    for (size_t i = 0; r == 0 && i < s->nsrcs; i++) {
        char *src = ctx_path(b, s->srcs[i]);
        if (!src)
            return fail(b, SBX_ENOMEM, "out of memory");
        struct stat st;
        if (stat(src, &st) < 0) {
            r = fail(b, SBX_EINVAL, "line %u: %s: %s", s->line, src, strerror(errno));
            free(src);
            break;
        }
        const char *base = strrchr(s->srcs[i], '/');
        base = base ? base + 1 : s->srcs[i];
        char *dst = NULL;
        if (s->op == DF_ADD && S_ISREG(st.st_mode) && is_archive(src)) {
            /* ADD unpacks a local archive into the destination directory. */
            char *qd = shell_quote(s->dst), *cmd = NULL;
            r = sbx_mkdir(b->sb, s->dst, 0755) < 0 ? fail(b, SBX_EIO, "ADD: mkdir %s", s->dst) : 0;
            if (r == 0)
                r = copy_file(b, src, "/tmp/.sbx-add-archive", 0600);
            if (r == 0 && qd &&
                asprintf(&cmd, "tar -xf /tmp/.sbx-add-archive -C %s && rm -f /tmp/.sbx-add-archive",
                         qd) >= 0)
                r = must(b, b->sb, "ADD (unpacking the archive)", cmd);
            free(qd);
            free(cmd);
        } else if (S_ISDIR(st.st_mode)) {
            r = copy_tree(b, src, s->dst, s->mode);
        } else if (asprintf(&dst, "%s%s", s->dst, to_dir ? base : "") < 0) {
            r = fail(b, SBX_ENOMEM, "out of memory");
        } else {
            r = copy_tree(b, src, dst, s->mode);
        }
        free(dst);
        free(src);
    }
    if (r == 0 && s->chown) {
        char *qu = shell_quote(s->chown), *qd = shell_quote(s->dst), *cmd = NULL;
        r = qu && qd && asprintf(&cmd, "chown -R %s %s", qu, qd) >= 0
                ? must(b, b->sb, "COPY --chown", cmd)
                : fail(b, SBX_ENOMEM, "out of memory");
        free(qu);
        free(qd);
        free(cmd);
    }
    return r;
}

/* ---- steps ---------------------------------------------------------------------------- */

static int run_step(struct builder *b, size_t i)
{
    const struct df_step *s = &b->df->steps[i];
    int r = builder_sandbox(b);
    if (r < 0)
        return r;
    if (s->op == DF_COPY || s->op == DF_ADD)
        return copy_step(b, s);
    char **env = dockerfile_step_env(b->df, i);
    char *mk = NULL;
    const char *cmd = s->cmd;
    if (s->op == DF_WORKDIR) {
        char *q = shell_quote(s->path);
        if (q && asprintf(&mk, "mkdir -p %s", q) < 0)
            mk = NULL;
        free(q);
        if (!mk) {
            dockerfile_free_list(env);
            return fail(b, SBX_ENOMEM, "out of memory");
        }
        cmd = mk;
    }
    int code = 0;
    unsigned tmo = b->o->step_timeout_ms ? b->o->step_timeout_ms : DEFAULT_STEP_MS;
    r = exec_step(b, b->sb, cmd, s->op == DF_RUN ? (const char *const *)s->argv : NULL,
                  (const char *const *)env, s->op == DF_WORKDIR ? "root" : b->user,
                  s->op == DF_WORKDIR ? "/" : b->workdir, tmo, &code);
    dockerfile_free_list(env);
    free(mk);
    if (r == 0 && code != 0) {
        /* The last lines of output say why. */
        const char *t = b->tail;
        size_t n = b->tail_len;
        for (int lines = 0; n > 0 && lines < 12; n--)
            if (t[n - 1] == '\n' && n != b->tail_len)
                lines++;
        r = fail(b, SBX_EGUEST, "line %u: `%s` %s %d%s%.*s", s->line, s->text,
                 code == -2 ? "timed out after" : "exited with code",
                 code == -2 ? (int)(tmo / 1000) : code, b->tail_len ? "; its last output:\n" : "",
                 (int)(b->tail_len - n), t + n);
    }
    return r;
}

static int add_step(struct builder *b, const char *text, const char *hash, const char *layer,
                    uint64_t bytes, uint64_t ms, bool cached)
{
    struct store_step *n = realloc(b->steps, (b->nsteps + 1) * sizeof(*n));
    if (!n)
        return fail(b, SBX_ENOMEM, "out of memory");
    b->steps = n;
    struct store_step *s = &n[b->nsteps];
    memset(s, 0, sizeof(*s));
    s->text = strdup(text);
    snprintf(s->hash, sizeof(s->hash), "%s", hash);
    s->layer = layer ? strdup(layer) : NULL;
    s->layer_bytes = bytes;
    s->build_ms = ms;
    s->cached = cached;
    b->nsteps++;
    if (!s->text || (layer && !s->layer))
        return fail(b, SBX_ENOMEM, "out of memory");
    if (layer) {
        char **l = realloc(b->layers, (b->nlayers + 1) * sizeof(*l));
        if (!l)
            return fail(b, SBX_ENOMEM, "out of memory");
        b->layers = l;
        char *hashpart = strndup(layer, 64);
        b->layers[b->nlayers] = hashpart ? store_layer_path(b->store, hashpart) : NULL;
        free(hashpart);
        if (!b->layers[b->nlayers])
            return fail(b, SBX_ENOMEM, "out of memory");
        b->nlayers++;
    }
    return 0;
}

static int do_steps(struct builder *b)
{
    for (size_t i = 0; i < b->df->nsteps; i++) {
        const struct df_step *s = &b->df->steps[i];
        char hash[65];
        int r = step_hash(b, i, hash);
        if (r < 0)
            return r;
        memcpy(b->hash, hash, sizeof(hash));
        bool layered =
            s->op == DF_RUN || s->op == DF_COPY || s->op == DF_ADD || s->op == DF_WORKDIR;
        if (s->op == DF_USER)
            b->user = s->user;
        if (s->op == DF_WORKDIR)
            b->workdir = s->path;
        if (!layered) {
            if ((r = add_step(b, s->text, hash, NULL, 0, 0, false)) < 0)
                return r;
            continue;
        }
        char layer[80];
        snprintf(layer, sizeof(layer), "%s.layer", hash);
        char *path = store_layer_path(b->store, hash);
        bool cached = path && !b->o->no_cache && access(path, R_OK) == 0;
        free(path);
        uint64_t t = mono_ms(), bytes = 0;
        progress(b, (unsigned)i + 1, s->text, cached, 0);
        if (!cached) {
            if ((r = run_step(b, i)) < 0 || (r = save_layer(b, hash, &bytes)) < 0)
                return r;
        }
        progress(b, (unsigned)i + 1, s->text, cached, 1);
        if ((r = add_step(b, s->text, hash, layer, bytes, mono_ms() - t, cached)) < 0)
            return r;
    }
    return 0;
}

/* ---- start, ready, snapshot ----------------------------------------------------------- */

/* Whether a TCP port listens in the guest (from /proc/net/tcp and tcp6). */
static int port_listens(struct builder *b, sbx *sb, unsigned port, bool *yes)
{
    void *data = NULL;
    size_t len = 0;
    *yes = false;
    const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    for (int f = 0; f < 2 && !*yes; f++) {
        int r = sbx_read_file(sb, files[f], &data, &len, 1 << 20);
        if (r == SBX_ENOENT)
            continue;
        if (r < 0)
            return fail(b, r, "ready check: reading %s: %s", files[f], sbx_errmsg(sb));
        char want[8];
        snprintf(want, sizeof(want), ":%04X", port);
        /* Lines are "sl local_address rem_address st ...": state 0A is LISTEN. */
        for (char *line = data; line && *line && !*yes;) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = 0;
            char local[64], st[8];
            if (sscanf(line, "%*s %63s %*s %7s", local, st) == 2) {
                size_t ll = strlen(local);
                *yes = ll > 5 && !strcmp(local + ll - 5, want) && !strcmp(st, "0A");
            }
            line = nl ? nl + 1 : NULL;
        }
        free(data);
        data = NULL;
    }
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The ready check: parsed from the options' text or the file's label. */
struct ready {
    enum df_ready kind;
    const char *arg;
    unsigned port, ms;
};

static int parse_ready(struct builder *b, struct ready *rd)
{
    const char *s = b->o->ready;
    *rd = (struct ready){b->df->ready, b->df->ready_arg, b->df->ready_port, b->df->ready_ms};
    if (!s)
        return 0;
    char *end = NULL;
    if (!strncmp(s, "cmd:", 4) && s[4]) {
        *rd = (struct ready){.kind = DF_READY_CMD, .arg = s + 4};
    } else if (!strncmp(s, "file:", 5) && s[5] == '/') {
        *rd = (struct ready){.kind = DF_READY_FILE, .arg = s + 5};
    } else if (!strncmp(s, "port:", 5)) {
        unsigned long p = strtoul(s + 5, &end, 10);
        if (!end || *end || p < 1 || p > 65535)
            return fail(b, SBX_EINVAL, "ready \"%s\": the port must be 1..65535", s);
        *rd = (struct ready){.kind = DF_READY_PORT, .port = (unsigned)p};
    } else if (!strncmp(s, "delay:", 6)) {
        unsigned long ms = strtoul(s + 6, &end, 10);
        if (!end || *end || ms > 3600000)
            return fail(b, SBX_EINVAL, "ready \"%s\": the delay is 0..3600000 ms", s);
        *rd = (struct ready){.kind = DF_READY_DELAY, .ms = (unsigned)ms};
    } else {
        return fail(b, SBX_EINVAL,
                    "ready \"%s\" is not cmd:COMMAND, port:N, file:/PATH or delay:MS", s);
    }
    return 0;
}

static int wait_ready(struct builder *b, sbx *sb, const struct ready *rd)
{
    unsigned limit = b->o->ready_timeout_ms ? b->o->ready_timeout_ms : DEFAULT_READY_MS;
    uint64_t end = mono_ms() + limit;
    if (rd->kind == DF_READY_NONE)
        return 0;
    if (rd->kind == DF_READY_DELAY) {
        sleep_ms(rd->ms);
        return 0;
    }
    for (;;) {
        bool ok = false;
        int r = 0;
        if (rd->kind == DF_READY_PORT) {
            r = port_listens(b, sb, rd->port, &ok);
        } else if (rd->kind == DF_READY_FILE) {
            int e = sbx_exists(sb, rd->arg);
            r = e < 0 ? fail(b, e, "ready check: %s", sbx_errmsg(sb)) : 0;
            ok = e == 1;
        } else {
            int code = 0;
            r = exec_step(b, sb, rd->arg, NULL, NULL, b->df->user ? b->df->user : "root",
                          b->df->workdir, 30000, &code);
            ok = code == 0;
        }
        if (r < 0)
            return r;
        if (ok)
            return 0;
        if (mono_ms() >= end) {
            char con[1024];
            size_t n = sbx_console(sb, con, sizeof(con));
            return fail(b, SBX_ETIMEDOUT, "the ready check did not pass within %u ms%s%.*s", limit,
                        n ? "; last console output:\n" : "", (int)n, con);
        }
        sleep_ms(100);
    }
}

/* The key of the finished template: the step chain plus what the final boot uses. */
static void template_key(struct builder *b, const char *start, const struct ready *rd, char out[65])
{
    struct sha256 h;
    sha256_init(&h);
    hash_str(&h, "chain", b->hash);
    hash_str(&h, "start", start);
    hash_u64(&h, "ready", (uint64_t)rd->kind);
    hash_str(&h, "ready-arg", rd->arg);
    hash_u64(&h, "ready-port", rd->port);
    hash_u64(&h, "ready-ms", rd->ms);
    hash_u64(&h, "vcpus", b->vcpus);
    hash_u64(&h, "memory", b->memory_mib);
    hash_file_id(&h, "kernel", b->kernel);
    for (size_t i = 0; b->df->envs && b->df->envs[i]; i++)
        hash_str(&h, "env", b->df->envs[i]);
    hash_str(&h, "user", b->df->user);
    hash_str(&h, "workdir", b->df->workdir);
    sha256_hex(&h, out);
}

static char *ready_text(const struct ready *rd)
{
    char *s = NULL;
    switch (rd->kind) {
    case DF_READY_CMD:
        return asprintf(&s, "cmd:%s", rd->arg) < 0 ? NULL : s;
    case DF_READY_FILE:
        return asprintf(&s, "file:%s", rd->arg) < 0 ? NULL : s;
    case DF_READY_PORT:
        return asprintf(&s, "port:%u", rd->port) < 0 ? NULL : s;
    case DF_READY_DELAY:
        return asprintf(&s, "delay:%u", rd->ms) < 0 ? NULL : s;
    default:
        return NULL;
    }
}

static void fill_info(sbx_template_info *info, const struct store_manifest *m)
{
    if (!info)
        return;
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", m->name);
    info->is_snapshot = m->kind == STORE_SNAPSHOT;
    snprintf(info->parent, sizeof(info->parent), "%s", m->parent ? m->parent : "");
    info->vcpus = m->vcpus;
    info->memory_mib = m->memory_mib;
    info->disk_mib = m->disk_mib;
    info->nsteps = (unsigned)m->nsteps;
    for (size_t i = 0; i < m->nsteps; i++)
        info->ncached += m->steps[i].cached;
    info->created_ns = m->created_ns;
    info->memory_bytes = m->memory_bytes;
    info->disk_bytes = m->disk_bytes;
    size_t off = 0;
    for (size_t i = 0; m->tags && m->tags[i] && off < sizeof(info->tags); i++)
        off += (size_t)snprintf(info->tags + off, sizeof(info->tags) - off, "%s%s", i ? "," : "",
                                m->tags[i]);
}

static uint64_t allocated(const char *dir, const char *name)
{
    char *p = NULL;
    struct stat st;
    uint64_t n = 0;
    if (asprintf(&p, "%s/%s", dir, name) >= 0 && stat(p, &st) == 0)
        n = (uint64_t)st.st_blocks * 512;
    free(p);
    return n;
}

static int finish(struct builder *b, const char *key, const char *start, const struct ready *rd,
                  sbx_template_info *info)
{
    sbx_options so;
    base_options(b, &so);
    so.envs = (const char *const *)b->df->envs;
    so.default_user = b->df->user;
    progress(b, (unsigned)b->df->nsteps, "boot", 0, 0);
    sbx *sb = NULL;
    int r = boot(b, &sb, &so, b->df->workdir);
    if (r == 0 && start) {
        progress(b, (unsigned)b->df->nsteps, "start", 0, 0);
        sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
        e.cmd = start;
        e.cwd = b->df->workdir;
        e.tag = "template start command";
        sbx_proc *p = NULL;
        r = sbx_proc_start(sb, &e, &p);
        if (r < 0)
            r = fail(b, r, "the start command: %s", sbx_errmsg(sb));
        sbx_proc_close(p); /* it goes on running, into the snapshot */
    }
    if (r == 0) {
        progress(b, (unsigned)b->df->nsteps, "ready", 0, 0);
        r = wait_ready(b, sb, rd);
    }
    char *staging = NULL, *snapdir = NULL;
    if (r == 0) {
        staging = store_staging_dir(b->store, b->o->name, b->err, b->errlen);
        if (!staging || asprintf(&snapdir, "%s/snapshot", staging) < 0)
            r = staging ? fail(b, SBX_ENOMEM, "out of memory") : SBX_EIO;
    }
    if (r == 0) {
        progress(b, (unsigned)b->df->nsteps, "snapshot", 0, 0);
        if ((r = snap_capture((struct sbx *)sb, snapdir, true)) < 0)
            r = fail(b, r, "taking the snapshot: %s", sbx_errmsg(sb));
    }
    sbx_destroy(sb);
    struct store_manifest m = {.format = STORE_FORMAT, .kind = STORE_TEMPLATE};
    char *rt = ready_text(rd);
    if (r == 0) {
        m.name = (char *)b->o->name;
        m.tags = (char **)b->o->tags;
        m.parent = b->from_desc;
        m.rootfs = b->rootfs;
        m.steps = b->steps;
        m.nsteps = b->nsteps;
        m.kernel = b->kernel;
        m.vcpus = b->vcpus;
        m.memory_mib = b->memory_mib;
        m.disk_mib = b->disk_mib;
        m.envs = b->df->envs;
        m.workdir = b->df->workdir;
        m.user = b->df->user;
        m.start_cmd = (char *)start;
        m.ready = rt;
        snprintf(m.key, sizeof(m.key), "%s", key);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        m.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        m.memory_bytes = allocated(snapdir, SNAP_MEMORY_FILE);
        m.disk_bytes = allocated(snapdir, SNAP_DISK_FILE);
        if (store_publish(b->store, &m, staging, b->err, b->errlen) < 0)
            r = SBX_EIO;
        else
            fill_info(info, &m);
    }
    if (r < 0 && snapdir) {
        snap_remove(snapdir);
        rmdir(staging);
    }
    free(rt);
    free(snapdir);
    free(staging);
    return r;
}

/* ---- setup ---------------------------------------------------------------------------- */

static char *read_text(struct builder *b, const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fail(b, SBX_EINVAL, "dockerfile %s: %s", path, fd < 0 ? strerror(errno) : "not a file");
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > MAX_DOCKERFILE) {
        close(fd);
        fail(b, SBX_EINVAL, "dockerfile %s is larger than 1 MiB", path);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *t = malloc(size + 1);
    ssize_t n = t ? read(fd, t, size) : -1;
    close(fd);
    if (n < 0 || (size_t)n != size) {
        free(t);
        fail(b, SBX_EIO, "reading %s", path);
        return NULL;
    }
    t[size] = 0;
    *len = size;
    return t;
}

static char *image_dir(const char *opt)
{
    char *d = NULL;
    const char *e;
    if (opt)
        return strdup(opt);
    if ((e = getenv("SBX_CACHE_DIR")) && *e)
        return strdup(e);
    if ((e = getenv("XDG_CACHE_HOME")) && *e)
        return asprintf(&d, "%s/libsandbox", e) < 0 ? NULL : d;
    if ((e = getenv("HOME")) && *e)
        return asprintf(&d, "%s/.cache/libsandbox", e) < 0 ? NULL : d;
    return NULL;
}

static bool template_exists(struct builder *b, const char *name)
{
    char *d = store_valid_name(name) ? store_template_dir(b->store, name) : NULL;
    bool yes = d && access(d, F_OK) == 0;
    free(d);
    return yes;
}

/* FROM: an image path, a template of the store, or an image name of the image directory. */
static int resolve_from(struct builder *b)
{
    const char *from = b->df->from;
    char *dir = image_dir(b->o->image_dir);
    int r = 0;
    if (strchr(from, '/')) {
        b->rootfs = realpath(from, NULL);
        if (!b->rootfs)
            r = fail(b, SBX_EIMAGE, "FROM %s: %s", from, strerror(errno));
    } else {
        char msg[1024];
        int l = store_load(b->store, from, &b->parent, msg, sizeof(msg));
        if (l == 0) {
            b->rootfs = strdup(b->parent->rootfs);
            for (size_t i = 0; r == 0 && i < b->parent->nsteps; i++) {
                const struct store_step *s = &b->parent->steps[i];
                r = add_step(b, s->text, s->hash, s->layer, s->layer_bytes, s->build_ms, true);
            }
            /* The chain continues from the parent's last step (or its own base). */
            if (b->parent->nsteps)
                memcpy(b->hash, b->parent->steps[b->parent->nsteps - 1].hash, 65);
        } else if (l == -1 && template_exists(b, from)) {
            r = fail(b, SBX_EIMAGE, "FROM %s: %s", from, msg);
        } else {
            char *p = NULL;
            if (!dir || asprintf(&p, "%s/%s.ext4", dir, from) < 0 || access(p, R_OK) < 0)
                r = fail(b, SBX_EIMAGE,
                         "FROM %s: neither a template of %s nor an image %s (build images with "
                         "`make images`)",
                         from, b->store, p ? p : from);
            else
                b->rootfs = realpath(p, NULL);
            free(p);
        }
    }
    const char *k = b->o->kernel;
    const char *ek = getenv("SBX_KERNEL");
    char *kp = NULL;
    if (!k && b->parent && b->parent->kernel)
        k = b->parent->kernel;
    if (!k && ek && *ek)
        k = ek;
    if (!k && dir && asprintf(&kp, "%s/vmlinux", dir) >= 0)
        k = kp;
    if (r == 0 && (!k || !(b->kernel = realpath(k, NULL))))
        r = fail(b, SBX_EIMAGE, "guest kernel %s: %s", k ? k : "(none)", strerror(errno));
    free(kp);
    free(dir);
    if (r == 0 && !b->rootfs)
        r = fail(b, SBX_EIMAGE, "FROM %s: cannot resolve the image", from);
    if (r == 0 && !(b->from_desc = strdup(from)))
        r = fail(b, SBX_ENOMEM, "out of memory");
    return r;
}

static int setup(struct builder *b)
{
    const sbx_template_build_options *o = b->o;
    if (o->version != SBX_TEMPLATE_OPTIONS_VERSION)
        return fail(b, SBX_EINVAL, "options.version is %u; use SBX_TEMPLATE_BUILD_OPTIONS_INIT",
                    o->version);
    if (!o->name || !store_valid_name(o->name))
        return fail(b, SBX_EINVAL,
                    "options.name must be a template name: [a-z0-9][a-z0-9._-], at most 63");
    if (!o->dockerfile == !o->dockerfile_text)
        return fail(b, SBX_EINVAL, "give exactly one of options.dockerfile and dockerfile_text");
    if (o->vcpus > SBX_MAX_VCPUS ||
        (o->memory_mib && (o->memory_mib < 64 || o->memory_mib > 65536)) ||
        o->disk_mib > (1ull << 24))
        return fail(b, SBX_EINVAL,
                    "vcpus (1..64), memory_mib (64..65536) or disk_mib out of range");
    b->store = o->template_dir ? strdup(o->template_dir) : store_default_dir();
    if (!b->store)
        return fail(b, SBX_EINVAL,
                    "no template store: set template_dir, $SBX_TEMPLATE_DIR or $HOME");
    if (store_open(b->store, b->err, b->errlen) < 0)
        return SBX_EIO;
    size_t len = 0;
    char *text = o->dockerfile ? read_text(b, o->dockerfile, &len) : strdup(o->dockerfile_text);
    if (!text)
        return o->dockerfile ? SBX_EINVAL : fail(b, SBX_ENOMEM, "out of memory");
    if (!o->dockerfile)
        len = strlen(text);
    char msg[1024];
    int r = dockerfile_parse(text, len, o->build_args, &b->df, msg, sizeof(msg));
    free(text);
    if (r < 0)
        return fail(b, SBX_EINVAL, "%s: %s", o->dockerfile ? o->dockerfile : "dockerfile", msg);
    /* The context: where COPY reads. */
    char *ctx = NULL;
    if (o->context)
        ctx = strdup(o->context);
    else if (o->dockerfile) {
        char *copy = strdup(o->dockerfile), *slash = copy ? strrchr(copy, '/') : NULL;
        if (slash)
            *slash = 0;
        ctx = copy && slash ? strdup(copy[0] ? copy : "/") : strdup(".");
        free(copy);
    } else
        ctx = strdup(".");
    b->context = ctx ? realpath(ctx, NULL) : NULL;
    if (!b->context)
        r = fail(b, SBX_EINVAL, "build context %s: %s", ctx ? ctx : "?", strerror(errno));
    free(ctx);
    if (r < 0)
        return r;
    /* The chain starts with the image and the disk size. */
    if ((r = resolve_from(b)) < 0)
        return r;
    b->vcpus = o->vcpus ? o->vcpus : b->parent ? b->parent->vcpus : 1;
    b->memory_mib = o->memory_mib ? o->memory_mib
                    : b->parent   ? b->parent->memory_mib
                                  : DEFAULT_MEMORY;
    b->disk_mib = o->disk_mib ? o->disk_mib : b->parent ? b->parent->disk_mib : 0;
    if (b->disk_mib) {
        struct stat st;
        if (stat(b->rootfs, &st) == 0 && (uint64_t)st.st_size > (b->disk_mib << 20))
            return fail(b, SBX_EINVAL, "disk_mib %llu is smaller than the image (%llu MiB)",
                        (unsigned long long)b->disk_mib, (unsigned long long)(st.st_size >> 20));
    }
    if (!b->parent) {
        struct sha256 h;
        sha256_init(&h);
        hash_str(&h, "salt", KEY_SALT);
        hash_file_id(&h, "rootfs", b->rootfs);
        hash_file_id(&h, "kernel", b->kernel);
        hash_u64(&h, "disk", b->disk_mib);
        sha256_hex(&h, b->hash);
    } else if (b->disk_mib != b->parent->disk_mib) {
        struct sha256 h;
        sha256_init(&h);
        hash_str(&h, "prev", b->hash);
        hash_u64(&h, "disk", b->disk_mib);
        sha256_hex(&h, b->hash);
    }
    b->user = b->parent ? b->parent->user : NULL;
    b->workdir = b->parent ? b->parent->workdir : NULL;
    return 0;
}

static void cleanup(struct builder *b)
{
    sbx_destroy(b->sb);
    for (size_t i = 0; i < b->nsteps; i++) {
        free(b->steps[i].text);
        free(b->steps[i].layer);
    }
    free(b->steps);
    for (unsigned i = 0; i < b->nlayers; i++)
        free(b->layers[i]);
    free(b->layers);
    dockerfile_free(b->df);
    store_manifest_free(b->parent);
    free(b->store);
    free(b->context);
    free(b->from_desc);
    free(b->rootfs);
    free(b->kernel);
}

int sbx_template_build(const sbx_template_build_options *o, sbx_template_info *info, char *err,
                       size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (!o)
        return SBX_EINVAL;
    struct builder b = {.o = o, .err = err, .errlen = errlen, .t0 = mono_ms()};
    int lock = -1;
    int r = setup(&b);
    if (r == 0 && (lock = store_lock(b.store, err, errlen)) < 0)
        r = SBX_EIO;
    if (r == 0)
        r = do_steps(&b);
    sbx_destroy(b.sb); /* before the final boot: one builder VM at a time */
    b.sb = NULL;
    struct ready rd;
    const char *start = o->start_cmd ? o->start_cmd : b.df ? b.df->start_cmd : NULL;
    if (r == 0)
        r = parse_ready(&b, &rd);
    char key[65] = "";
    if (r == 0)
        template_key(&b, start, &rd, key);
    /* An unchanged definition whose template exists does no work at all. */
    struct store_manifest *old = NULL;
    char msg[256];
    bool same = r == 0 && !o->no_cache &&
                store_load(b.store, o->name, &old, msg, sizeof(msg)) == 0 && !strcmp(old->key, key);
    if (same) {
        fill_info(info, old);
        if (info)
            info->ncached = info->nsteps; /* nothing ran */
        progress(&b, (unsigned)b.df->nsteps, "unchanged", 1, 1);
    } else if (r == 0) {
        r = finish(&b, key, start, &rd, info);
    }
    store_manifest_free(old);
    store_unlock(lock);
    if (r == 0 && info)
        info->build_ms = mono_ms() - b.t0;
    cleanup(&b);
    return r;
}

static void manifest_to_info(const struct store_manifest *m, sbx_template_info *info)
{
    fill_info(info, m);
    if (m->load_error)
        snprintf(info->error, sizeof(info->error), "%s", m->load_error);
}

int sbx_template_list(const char *template_dir, sbx_template_info **list, size_t *n, char *err,
                      size_t errlen)
{
    if (!list || !n)
        return SBX_EINVAL;
    *list = NULL;
    *n = 0;
    char *dir = template_dir ? strdup(template_dir) : store_default_dir();
    if (!dir) {
        if (err && errlen)
            snprintf(err, errlen, "no template store: set $SBX_TEMPLATE_DIR or $HOME");
        return SBX_EINVAL;
    }
    struct store_manifest **ms = NULL;
    size_t count = 0;
    char msg[1024] = "";
    int r = store_list(dir, &ms, &count, msg, sizeof(msg));
    free(dir);
    if (r < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s", msg);
        return SBX_EIO;
    }
    sbx_template_info *l = calloc(count ? count : 1, sizeof(*l));
    if (!l) {
        store_list_free(ms, count);
        return SBX_ENOMEM;
    }
    for (size_t i = 0; i < count; i++)
        manifest_to_info(ms[i], &l[i]);
    store_list_free(ms, count);
    *list = l;
    *n = count;
    return 0;
}

void sbx_template_list_free(sbx_template_info *list, size_t n)
{
    (void)n;
    free(list);
}

int sbx_template_remove(const char *template_dir, const char *name, char *err, size_t errlen)
{
    char msg[1024] = "";
    if (!name)
        return SBX_EINVAL;
    char *dir = template_dir ? strdup(template_dir) : store_default_dir();
    if (!dir)
        return SBX_EINVAL;
    int r = store_remove(dir, name, msg, sizeof(msg));
    free(dir);
    if (r < 0 && err && errlen)
        snprintf(err, errlen, "%s", msg);
    return r == -2 ? SBX_ENOENT : r < 0 ? SBX_EIO : 0;
}
