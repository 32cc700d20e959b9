// SPDX-License-Identifier: Apache-2.0
/* The local template store: manifests (JSON via json-c), atomic writes, listing, removal, the
   store lock and garbage collection of shared layers. store.h describes the layout and rules. */
#include "template/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "util/wait.h"

#define RM_PREFIX         ".rm-"
#define STAGING_PREFIX    ".staging-"
#define LAYER_TMP         ".tmp-"
#define STAGING_MAX_AGE_S (24 * 3600)
#define JSON_MAX_DEPTH    16 /* a manifest nests 3 deep; anything deeper is not ours */

/* ---- small helpers ---- */

static int errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static char *joinpath(const char *a, const char *b, const char *c)
{
    char *p;
    if (asprintf(&p, "%s/%s%s%s", a, b, c ? "/" : "", c ? c : "") < 0)
        return NULL;
    return p;
}

/* A name for a hidden sibling that no other process or thread picks at the same time. */
static char *unique_hidden(const char *parent, const char *prefix, const char *name)
{
    char *p;
    if (asprintf(&p, "%s/%s%s-%ld-%llu", parent, prefix, name, (long)getpid(),
                 (unsigned long long)realtime_ns()) < 0)
        return NULL;
    return p;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return -e;
        }
        *s = c;
        if (!c)
            break;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Deletes `name` in dfd, recursively, without following symlinks. */
static int rm_tree_at(int dfd, const char *name, int depth)
{
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    if (depth > 32)
        return -ELOOP;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        int r = rm_tree_at(dirfd(d), e->d_name, depth + 1);
        if (r && !rc)
            rc = r;
    }
    closedir(d);
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && !rc)
        rc = -errno;
    return rc;
}

static int rm_tree(const char *path)
{
    return rm_tree_at(AT_FDCWD, path, 0);
}

/* ---- names and paths ---- */

int store_valid_name(const char *name)
{
    if (!name || !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9')))
        return 0;
    size_t i;
    for (i = 1; name[i]; i++) {
        char c = name[i];
        if (i >= STORE_NAME_MAX)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return strstr(name, "..") == NULL;
}

static int is_hex64(const char *s)
{
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

int store_valid_layer_name(const char *name)
{
    return name && strlen(name) == 70 && is_hex64(name) && !strcmp(name + 64, ".layer");
}

int store_parse_ref(const char *ref, char name[STORE_NAME_MAX + 1], char tag[STORE_NAME_MAX + 1],
                    char *err, size_t errlen)
{
    name[0] = tag[0] = '\0';
    if (!ref || !*ref)
        return errf(err, errlen, "empty template name");
    const char *colon = strchr(ref, ':');
    size_t nlen = colon ? (size_t)(colon - ref) : strlen(ref);
    if (nlen > STORE_NAME_MAX)
        return errf(err, errlen, "invalid template name \"%.80s\": longer than %d characters", ref,
                    STORE_NAME_MAX);
    memcpy(name, ref, nlen);
    name[nlen] = '\0';
    if (!store_valid_name(name))
        return errf(err, errlen,
                    "invalid template name \"%.80s\": use [a-z0-9][a-z0-9._-]*, at most %d "
                    "characters, no \"..\"",
                    name, STORE_NAME_MAX);
    if (colon) {
        if (strlen(colon + 1) > STORE_NAME_MAX || !store_valid_name(colon + 1))
            return errf(err, errlen,
                        "invalid tag in \"%.80s\": use [a-z0-9][a-z0-9._-]*, at most %d "
                        "characters, no \"..\"",
                        ref, STORE_NAME_MAX);
        strcpy(tag, colon + 1);
    }
    return 0;
}

char *store_default_dir(void)
{
    const char *d = secure_getenv("SBX_TEMPLATE_DIR");
    char *p;
    if (d && *d)
        return strdup(d);
    d = secure_getenv("XDG_DATA_HOME");
    if (d && d[0] == '/')
        return asprintf(&p, "%s/libsandbox/templates", d) < 0 ? NULL : p;
    d = secure_getenv("HOME");
    if (d && *d)
        return asprintf(&p, "%s/.local/share/libsandbox/templates", d) < 0 ? NULL : p;
    return NULL;
}

char *store_template_dir(const char *dir, const char *name)
{
    return joinpath(dir, "templates", name);
}

char *store_layer_path(const char *dir, const char *hash)
{
    char *p;
    if (asprintf(&p, "%s/layers/%s.layer", dir, hash) < 0)
        return NULL;
    return p;
}

int store_open(const char *dir, char *err, size_t errlen)
{
    static const char *const subs[] = {"layers", "templates"};
    if (!dir || !*dir)
        return errf(err, errlen, "template store: no directory given");
    int rc = mkdir_p(dir, 0700);
    if (rc)
        return errf(err, errlen, "template store %s: %s", dir, strerror(-rc));
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        char *p = joinpath(dir, subs[i], NULL);
        if (!p)
            return errf(err, errlen, "out of memory");
        rc = mkdir_p(p, 0700);
        if (rc) {
            errf(err, errlen, "template store: %s: %s", p, strerror(-rc));
            free(p);
            return -1;
        }
        free(p);
    }
    return 0;
}

/* ---- the lock ---- */

int store_lock(const char *dir, char *err, size_t errlen)
{
    char *p = joinpath(dir, ".lock", NULL);
    if (!p)
        return errf(err, errlen, "out of memory");
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        errf(err, errlen, "template store lock %s: %s", p, strerror(errno));
        free(p);
        return -1;
    }
    while (flock(fd, LOCK_EX) < 0) {
        if (errno == EINTR)
            continue;
        errf(err, errlen, "template store lock %s: %s", p, strerror(errno));
        close(fd);
        free(p);
        return -1;
    }
    free(p);
    return fd;
}

void store_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock */
}

/* ---- manifest memory ---- */

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

void store_manifest_free(struct store_manifest *m)
{
    if (!m)
        return;
    free(m->name);
    free_strv(m->tags);
    free(m->parent);
    free(m->rootfs);
    for (size_t i = 0; i < m->nsteps && m->steps; i++) {
        free(m->steps[i].text);
        free(m->steps[i].layer);
    }
    free(m->steps);
    free(m->kernel);
    free_strv(m->envs);
    free(m->workdir);
    free(m->user);
    free(m->start_cmd);
    free(m->ready);
    free(m->load_error);
    free(m);
}

void store_list_free(struct store_manifest **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        store_manifest_free(list[i]);
    free(list);
}

/* ---- validation of values (shared by save and load) ---- */

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static size_t strv_len(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* `pre` starts every message: the manifest's path when loading, "manifest" when saving. */
static int check_path(const char *pre, const char *key, const char *s, bool nullable, bool absolute,
                      char *err, size_t errlen)
{
    if (!s)
        return nullable ? 0 : errf(err, errlen, "%s: \"%s\" is missing", pre, key);
    if (!*s)
        return errf(err, errlen, "%s: \"%s\" is empty", pre, key);
    if (strlen(s) >= STORE_PATH_MAX)
        return errf(err, errlen, "%s: \"%s\" is longer than %d bytes", pre, key,
                    STORE_PATH_MAX - 1);
    if (has_ctl(s))
        return errf(err, errlen, "%s: \"%s\" contains control characters", pre, key);
    if (absolute && s[0] != '/')
        return errf(err, errlen, "%s: \"%s\" is not an absolute path: \"%.200s\"", pre, key, s);
    return 0;
}

static int check_text(const char *pre, const char *key, const char *s, bool nullable, char *err,
                      size_t errlen)
{
    if (!s)
        return nullable ? 0 : errf(err, errlen, "%s: \"%s\" is missing", pre, key);
    if (!*s)
        return errf(err, errlen, "%s: \"%s\" is empty", pre, key);
    if (strlen(s) >= STORE_TEXT_MAX)
        return errf(err, errlen, "%s: \"%s\" is longer than %d bytes", pre, key,
                    STORE_TEXT_MAX - 1);
    return 0;
}

static int check_hash(const char *pre, const char *key, const char *h, bool empty_ok, char *err,
                      size_t errlen)
{
    if (empty_ok && !h[0])
        return 0;
    if (strnlen(h, 65) != 64 || !is_hex64(h))
        return errf(err, errlen, "%s: \"%s\" is not 64 lowercase hex digits%s", pre, key,
                    empty_ok ? " (nor empty)" : "");
    return 0;
}

static int manifest_check(const char *pre, const struct store_manifest *m, char *err, size_t errlen)
{
    char key[64];
    if (m->format != STORE_FORMAT)
        return errf(err, errlen, "%s: format %u is not %d", pre, m->format, STORE_FORMAT);
    if (m->kind != STORE_TEMPLATE && m->kind != STORE_SNAPSHOT)
        return errf(err, errlen, "%s: \"kind\" is invalid", pre);
    if (!m->name || !store_valid_name(m->name))
        return errf(err, errlen,
                    "%s: \"name\" is not a valid template name ([a-z0-9][a-z0-9._-]*, at most "
                    "%d characters, no \"..\")",
                    pre, STORE_NAME_MAX);
    size_t ntags = strv_len(m->tags);
    if (ntags > STORE_MAX_TAGS)
        return errf(err, errlen, "%s: more than %d tags", pre, STORE_MAX_TAGS);
    for (size_t i = 0; i < ntags; i++) {
        if (!store_valid_name(m->tags[i]))
            return errf(err, errlen, "%s: \"tags\"[%zu] is not a valid tag: \"%.80s\"", pre, i,
                        m->tags[i]);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m->tags[i], m->tags[j]))
                return errf(err, errlen, "%s: tag \"%s\" is listed twice", pre, m->tags[i]);
    }
    if (check_path(pre, "parent", m->parent, false, false, err, errlen) ||
        check_path(pre, "rootfs", m->rootfs, false, true, err, errlen) ||
        check_path(pre, "kernel", m->kernel, false, true, err, errlen) ||
        check_path(pre, "workdir", m->workdir, true, true, err, errlen) ||
        check_hash(pre, "kernel_hash", m->kernel_hash, true, err, errlen) ||
        check_hash(pre, "key", m->key, true, err, errlen) ||
        check_text(pre, "start_cmd", m->start_cmd, true, err, errlen))
        return -1;
    if (m->nsteps > STORE_MAX_STEPS)
        return errf(err, errlen, "%s: more than %d steps", pre, STORE_MAX_STEPS);
    if (m->nsteps && !m->steps)
        return errf(err, errlen, "%s: %zu steps but no step array", pre, m->nsteps);
    for (size_t i = 0; i < m->nsteps; i++) {
        const struct store_step *s = &m->steps[i];
        snprintf(key, sizeof(key), "steps[%zu].text", i);
        if (check_text(pre, key, s->text, false, err, errlen))
            return -1;
        snprintf(key, sizeof(key), "steps[%zu].hash", i);
        if (check_hash(pre, key, s->hash, false, err, errlen))
            return -1;
        if (s->layer && !store_valid_layer_name(s->layer))
            return errf(err, errlen,
                        "%s: \"steps[%zu].layer\" is not a layer file name (64 lowercase hex "
                        "digits and \".layer\"): \"%.100s\"",
                        pre, i, s->layer);
    }
    if (m->vcpus < 1 || m->vcpus > 64)
        return errf(err, errlen, "%s: \"vcpus\" is %u, not 1..64", pre, m->vcpus);
    if (m->memory_mib < 64 || m->memory_mib > 65536)
        return errf(err, errlen, "%s: \"memory_mib\" is %u, not 64..65536", pre, m->memory_mib);
    if (m->disk_mib > (UINT64_C(1) << 24))
        return errf(err, errlen, "%s: \"disk_mib\" is %llu, more than 16 TiB", pre,
                    (unsigned long long)m->disk_mib);
    size_t nenvs = strv_len(m->envs);
    if (nenvs > STORE_MAX_ENVS)
        return errf(err, errlen, "%s: more than %d envs", pre, STORE_MAX_ENVS);
    for (size_t i = 0; i < nenvs; i++) {
        const char *eq = strchr(m->envs[i], '=');
        if (!eq || eq == m->envs[i] || strlen(m->envs[i]) >= STORE_TEXT_MAX)
            return errf(err, errlen,
                        "%s: \"envs\"[%zu] is not KEY=VALUE with a non-empty KEY (at most %d "
                        "bytes): \"%.80s\"",
                        pre, i, STORE_TEXT_MAX - 1, m->envs[i]);
    }
    if (m->user && (!*m->user || strlen(m->user) > 256 || has_ctl(m->user)))
        return errf(err, errlen,
                    "%s: \"user\" must be non-empty, at most 256 bytes, without control "
                    "characters",
                    pre);
    if (m->ready && (!*m->ready || strlen(m->ready) >= STORE_PATH_MAX || has_ctl(m->ready)))
        return errf(err, errlen,
                    "%s: \"ready\" must be non-empty, shorter than %d bytes, without control "
                    "characters",
                    pre, STORE_PATH_MAX);
    return 0;
}

/* ---- JSON -> manifest ---- */

struct rd {
    const char *pre; /* the manifest's path */
    char *err;
    size_t errlen;
};

static const char *jtype(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        return "null";
    case json_type_boolean:
        return "a boolean";
    case json_type_double:
        return "a fractional number";
    case json_type_int:
        return "an integer";
    case json_type_object:
        return "an object";
    case json_type_array:
        return "an array";
    case json_type_string:
        return "a string";
    }
    return "something else";
}

/* Looks up key: 0 with *v (NULL for a JSON null), or -1 "missing". */
static int member(struct rd *r, json_object *obj, const char *key, const char *label,
                  json_object **v)
{
    if (!json_object_object_get_ex(obj, key, v))
        return errf(r->err, r->errlen, "%s: \"%s\" is missing", r->pre, label);
    return 0;
}

static int wrong(struct rd *r, const char *label, const char *want, json_object *v)
{
    return errf(r->err, r->errlen, "%s: \"%s\" must be %s, not %s", r->pre, label, want, jtype(v));
}

/* A string value (or null if nullable) copied to *out; max caps the length in bytes. */
static int as_str(struct rd *r, json_object *v, const char *label, bool nullable, size_t max,
                  char **out)
{
    *out = NULL;
    if (!v && nullable)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return wrong(r, label, nullable ? "a string or null" : "a string", v);
    size_t len = (size_t)json_object_get_string_len(v);
    const char *s = json_object_get_string(v);
    if (len >= max)
        return errf(r->err, r->errlen, "%s: \"%s\" is longer than %zu bytes", r->pre, label,
                    max - 1);
    if (memchr(s, '\0', len))
        return errf(r->err, r->errlen, "%s: \"%s\" contains a NUL character", r->pre, label);
    *out = strdup(s);
    if (!*out)
        return errf(r->err, r->errlen, "out of memory");
    return 0;
}

static int get_str(struct rd *r, json_object *obj, const char *key, bool nullable, size_t max,
                   char **out)
{
    json_object *v;
    *out = NULL;
    return member(r, obj, key, key, &v) ? -1 : as_str(r, v, key, nullable, max, out);
}

/* A 64-hex-digit (or, if empty_ok, empty) string into a fixed buffer. */
static int get_hash(struct rd *r, json_object *obj, const char *key, const char *label,
                    bool empty_ok, char out[65])
{
    json_object *v;
    out[0] = '\0';
    if (member(r, obj, key, label, &v))
        return -1;
    if (!json_object_is_type(v, json_type_string))
        return wrong(r, label, "a string", v);
    const char *s = json_object_get_string(v);
    if ((size_t)json_object_get_string_len(v) != strlen(s))
        return errf(r->err, r->errlen, "%s: \"%s\" contains a NUL character", r->pre, label);
    if (check_hash(r->pre, label, s, empty_ok, r->err, r->errlen))
        return -1;
    memcpy(out, s, strlen(s) + 1);
    return 0;
}

static int get_u64(struct rd *r, json_object *obj, const char *key, const char *label, uint64_t max,
                   uint64_t *out)
{
    json_object *v;
    *out = 0;
    if (member(r, obj, key, label, &v))
        return -1;
    if (!json_object_is_type(v, json_type_int))
        return wrong(r, label, "an integer", v);
    if (json_object_get_int64(v) < 0)
        return errf(r->err, r->errlen, "%s: \"%s\" is negative", r->pre, label);
    uint64_t x = json_object_get_uint64(v);
    if (x > max)
        return errf(r->err, r->errlen, "%s: \"%s\" is %llu, more than %llu", r->pre, label,
                    (unsigned long long)x, (unsigned long long)max);
    *out = x;
    return 0;
}

/* An array of strings (at most max), as a NULL-terminated vector (never NULL on success). */
static int get_strv(struct rd *r, json_object *obj, const char *key, size_t max, size_t maxlen,
                    char ***out)
{
    json_object *v;
    char label[64];
    *out = NULL;
    if (member(r, obj, key, key, &v))
        return -1;
    if (!json_object_is_type(v, json_type_array))
        return wrong(r, key, "an array of strings", v);
    size_t n = json_object_array_length(v);
    if (n > max)
        return errf(r->err, r->errlen, "%s: \"%s\" has more than %zu entries", r->pre, key, max);
    char **a = calloc(n + 1, sizeof(*a));
    if (!a)
        return errf(r->err, r->errlen, "out of memory");
    for (size_t i = 0; i < n; i++) {
        snprintf(label, sizeof(label), "%s[%zu]", key, i);
        if (as_str(r, json_object_array_get_idx(v, i), label, false, maxlen, &a[i])) {
            free_strv(a);
            return -1;
        }
    }
    *out = a;
    return 0;
}

static int get_steps(struct rd *r, json_object *obj, struct store_manifest *m)
{
    json_object *v, *sv, *f;
    char label[64];
    if (member(r, obj, "steps", "steps", &v))
        return -1;
    if (!json_object_is_type(v, json_type_array))
        return wrong(r, "steps", "an array of objects", v);
    size_t n = json_object_array_length(v);
    if (n > STORE_MAX_STEPS)
        return errf(r->err, r->errlen, "%s: more than %d steps", r->pre, STORE_MAX_STEPS);
    if (n == 0)
        return 0;
    m->steps = calloc(n, sizeof(*m->steps));
    if (!m->steps)
        return errf(r->err, r->errlen, "out of memory");
    m->nsteps = n;
    for (size_t i = 0; i < n; i++) {
        struct store_step *s = &m->steps[i];
        sv = json_object_array_get_idx(v, i);
        if (!json_object_is_type(sv, json_type_object)) {
            snprintf(label, sizeof(label), "steps[%zu]", i);
            return wrong(r, label, "an object", sv);
        }
        snprintf(label, sizeof(label), "steps[%zu].text", i);
        if (member(r, sv, "text", label, &f) ||
            as_str(r, f, label, false, STORE_TEXT_MAX, &s->text))
            return -1;
        snprintf(label, sizeof(label), "steps[%zu].hash", i);
        if (get_hash(r, sv, "hash", label, false, s->hash))
            return -1;
        snprintf(label, sizeof(label), "steps[%zu].layer", i);
        if (member(r, sv, "layer", label, &f) || as_str(r, f, label, true, 128, &s->layer))
            return -1;
        snprintf(label, sizeof(label), "steps[%zu].layer_bytes", i);
        if (get_u64(r, sv, "layer_bytes", label, UINT64_MAX, &s->layer_bytes))
            return -1;
        snprintf(label, sizeof(label), "steps[%zu].build_ms", i);
        if (get_u64(r, sv, "build_ms", label, UINT64_MAX, &s->build_ms))
            return -1;
        snprintf(label, sizeof(label), "steps[%zu].cached", i);
        if (member(r, sv, "cached", label, &f))
            return -1;
        if (!json_object_is_type(f, json_type_boolean))
            return wrong(r, label, "true or false", f);
        s->cached = json_object_get_boolean(f);
    }
    return 0;
}

static int from_json(struct rd *r, json_object *root, struct store_manifest *m)
{
    json_object *v;
    uint64_t x;
    if (!json_object_is_type(root, json_type_object))
        return errf(r->err, r->errlen,
                    "%s: not a template manifest (the JSON is %s, not an "
                    "object)",
                    r->pre, jtype(root));
    /* The format first: a manifest of another version may differ in everything else. */
    if (!json_object_object_get_ex(root, "format", &v))
        return errf(r->err, r->errlen, "%s: not a template manifest (no \"format\" key)", r->pre);
    if (!json_object_is_type(v, json_type_int))
        return wrong(r, "format", "an integer", v);
    int64_t fmt = json_object_get_int64(v);
    if (fmt != STORE_FORMAT)
        return errf(r->err, r->errlen,
                    "%s: manifest format %lld is not supported (this libsandbox reads format "
                    "%d): rebuild the template with this version, or use the libsandbox that "
                    "built it",
                    r->pre, (long long)fmt, STORE_FORMAT);
    m->format = STORE_FORMAT;

    char *kind = NULL;
    if (get_str(r, root, "kind", false, 32, &kind))
        return -1;
    if (!strcmp(kind, "template"))
        m->kind = STORE_TEMPLATE;
    else if (!strcmp(kind, "snapshot"))
        m->kind = STORE_SNAPSHOT;
    else {
        errf(r->err, r->errlen, "%s: \"kind\" must be \"template\" or \"snapshot\", not \"%s\"",
             r->pre, kind);
        free(kind);
        return -1;
    }
    free(kind);

    if (get_str(r, root, "name", false, STORE_NAME_MAX + 1, &m->name) ||
        get_strv(r, root, "tags", STORE_MAX_TAGS, STORE_NAME_MAX + 1, &m->tags) ||
        get_str(r, root, "parent", false, STORE_PATH_MAX, &m->parent) ||
        get_str(r, root, "rootfs", false, STORE_PATH_MAX, &m->rootfs) || get_steps(r, root, m) ||
        get_str(r, root, "kernel", false, STORE_PATH_MAX, &m->kernel) ||
        get_hash(r, root, "kernel_hash", "kernel_hash", true, m->kernel_hash))
        return -1;
    if (get_u64(r, root, "vcpus", "vcpus", 64, &x))
        return -1;
    m->vcpus = (unsigned)x;
    if (get_u64(r, root, "memory_mib", "memory_mib", 65536, &x))
        return -1;
    m->memory_mib = (unsigned)x;
    if (get_u64(r, root, "disk_mib", "disk_mib", UINT64_C(1) << 24, &m->disk_mib) ||
        get_strv(r, root, "envs", STORE_MAX_ENVS, STORE_TEXT_MAX, &m->envs) ||
        get_str(r, root, "workdir", true, STORE_PATH_MAX, &m->workdir) ||
        get_str(r, root, "user", true, 257, &m->user) ||
        get_str(r, root, "start_cmd", true, STORE_TEXT_MAX, &m->start_cmd) ||
        get_str(r, root, "ready", true, STORE_PATH_MAX, &m->ready) ||
        get_hash(r, root, "key", "key", true, m->key) ||
        get_u64(r, root, "created_ns", "created_ns", UINT64_MAX, &m->created_ns) ||
        get_u64(r, root, "memory_bytes", "memory_bytes", UINT64_MAX, &m->memory_bytes) ||
        get_u64(r, root, "disk_bytes", "disk_bytes", UINT64_MAX, &m->disk_bytes))
        return -1;
    /* An empty list is stored as NULL, as the struct documents. */
    if (m->tags && !m->tags[0]) {
        free(m->tags);
        m->tags = NULL;
    }
    if (m->envs && !m->envs[0]) {
        free(m->envs);
        m->envs = NULL;
    }
    return manifest_check(r->pre, m, r->err, r->errlen);
}

/* ---- reading files ---- */

/* Reads a regular file of at most `cap` bytes: 0 with a NUL-terminated *buf, -2 for ENOENT
   (and ENOTDIR), -1 with err otherwise. */
static int read_capped(const char *path, size_t cap, char **buf, size_t *len, char *err,
                       size_t errlen)
{
    struct stat st;
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        errf(err, errlen, "%s: %s", path, strerror(e));
        return e == ENOENT || e == ENOTDIR ? -2 : -1;
    }
    if (fstat(fd, &st) < 0) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        errf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > cap) {
        errf(err, errlen, "%s: %llu bytes, more than the %zu bytes a manifest may have", path,
             (unsigned long long)st.st_size, cap);
        close(fd);
        return -1;
    }
    /* One byte more than allowed, to notice a file that grew since fstat. */
    char *b = malloc(cap + 2);
    if (!b) {
        close(fd);
        return errf(err, errlen, "out of memory");
    }
    size_t n = 0;
    while (n < cap + 1) {
        ssize_t k = read(fd, b + n, cap + 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            errf(err, errlen, "%s: %s", path, strerror(errno));
            free(b);
            close(fd);
            return -1;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    if (n > cap) {
        free(b);
        return errf(err, errlen, "%s: more than the %zu bytes a manifest may have", path, cap);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

/* Parses a whole buffer as one strict JSON value (UTF-8 checked, no trailing data). */
static json_object *parse_json(const char *path, const char *buf, size_t len, char *err,
                               size_t errlen)
{
    if (len == 0) {
        errf(err, errlen, "%s: empty file, not JSON", path);
        return NULL;
    }
    if (memchr(buf, '\0', len)) {
        errf(err, errlen, "%s: contains NUL bytes, not JSON", path);
        return NULL;
    }
    json_tokener *tok = json_tokener_new_ex(JSON_MAX_DEPTH);
    if (!tok) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    /* Trailing data is allowed here only to be reported below in plainer words. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 |
                                    JSON_TOKENER_ALLOW_TRAILING_CHARS);
    json_object *root = json_tokener_parse_ex(tok, buf, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (!root || je != json_tokener_success) {
        if (je == json_tokener_continue)
            errf(err, errlen, "%s: not valid JSON: truncated (the file ends inside a value)", path);
        else
            errf(err, errlen, "%s: not valid JSON: %s at byte %zu", path,
                 json_tokener_error_desc(je), end);
        json_object_put(root);
        json_tokener_free(tok);
        return NULL;
    }
    json_tokener_free(tok);
    while (end < len &&
           (buf[end] == ' ' || buf[end] == '\n' || buf[end] == '\t' || buf[end] == '\r'))
        end++;
    if (end < len) {
        errf(err, errlen, "%s: not valid JSON: extra data after the manifest at byte %zu", path,
             end);
        json_object_put(root);
        return NULL;
    }
    return root;
}

/* Loads templates/<name>/manifest.json (name already valid). */
static int load_name(const char *dir, const char *name, struct store_manifest **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    char *tdir = store_template_dir(dir, name);
    char *path = tdir ? joinpath(tdir, "manifest.json", NULL) : NULL;
    if (!path) {
        free(tdir);
        return errf(err, errlen, "out of memory");
    }
    struct stat st;
    if (stat(tdir, &st) < 0 && (errno == ENOENT || errno == ENOTDIR)) {
        errf(err, errlen, "no such template: \"%s\" (in %s)", name, dir);
        free(tdir);
        free(path);
        return -2;
    }
    free(tdir);

    char *buf;
    size_t len;
    int rc = read_capped(path, STORE_MANIFEST_MAX, &buf, &len, err, errlen);
    if (rc == -2) /* the directory exists: an incomplete or damaged template, not a missing one */
        rc = errf(err, errlen, "%s: missing: the template \"%s\" is incomplete; remove it", path,
                  name);
    if (rc) {
        free(path);
        return -1;
    }
    json_object *root = parse_json(path, buf, len, err, errlen);
    free(buf);
    if (!root) {
        free(path);
        return -1;
    }
    struct store_manifest *m = calloc(1, sizeof(*m));
    if (!m) {
        json_object_put(root);
        free(path);
        return errf(err, errlen, "out of memory");
    }
    struct rd r = {.pre = path, .err = err, .errlen = errlen};
    rc = from_json(&r, root, m);
    json_object_put(root);
    if (!rc && strcmp(m->name, name))
        rc = errf(err, errlen, "%s: \"name\" is \"%s\", not the directory's name \"%s\"", path,
                  m->name, name);
    free(path);
    if (rc) {
        store_manifest_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int store_load(const char *dir, const char *ref, struct store_manifest **out, char *err,
               size_t errlen)
{
    char name[STORE_NAME_MAX + 1], tag[STORE_NAME_MAX + 1];
    *out = NULL;
    if (store_parse_ref(ref, name, tag, err, errlen))
        return -1;
    struct store_manifest *m;
    int rc = load_name(dir, name, &m, err, errlen);
    if (rc)
        return rc;
    if (tag[0]) {
        bool found = false;
        for (char **t = m->tags; t && *t && !found; t++)
            found = !strcmp(*t, tag);
        if (!found) {
            char have[256] = "none";
            size_t off = 0;
            for (char **t = m->tags; t && *t && off < sizeof(have); t++)
                off +=
                    (size_t)snprintf(have + off, sizeof(have) - off, "%s%s", off ? ", " : "", *t);
            errf(err, errlen, "no such template: \"%s:%s\" (template \"%s\" has tags: %s)", name,
                 tag, name, have);
            store_manifest_free(m);
            return -2;
        }
    }
    *out = m;
    return 0;
}

/* ---- manifest -> JSON ---- */

static json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static json_object *jstrv(char *const *v)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; a && v && v[i]; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

/* Builds the document. json-c's constructors only fail on ENOMEM, which the serialisation
   below then reports (a NULL member serialises as null, caught by re-validation on load). */
static json_object *to_json(const struct store_manifest *m)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    char created[40] = "";
    time_t secs = (time_t)(m->created_ns / 1000000000u);
    struct tm tm;
    if (gmtime_r(&secs, &tm))
        strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);

    json_object_object_add(o, "format", json_object_new_int(STORE_FORMAT));
    json_object_object_add(
        o, "kind", json_object_new_string(m->kind == STORE_SNAPSHOT ? "snapshot" : "template"));
    json_object_object_add(o, "name", jstr(m->name));
    json_object_object_add(o, "tags", jstrv(m->tags));
    json_object_object_add(o, "parent", jstr(m->parent));
    json_object_object_add(o, "rootfs", jstr(m->rootfs));
    json_object *steps = json_object_new_array();
    for (size_t i = 0; steps && i < m->nsteps; i++) {
        const struct store_step *s = &m->steps[i];
        json_object *so = json_object_new_object();
        if (!so)
            break;
        json_object_object_add(so, "text", jstr(s->text));
        json_object_object_add(so, "hash", jstr(s->hash));
        json_object_object_add(so, "layer", jstr(s->layer));
        json_object_object_add(so, "layer_bytes", json_object_new_uint64(s->layer_bytes));
        json_object_object_add(so, "build_ms", json_object_new_uint64(s->build_ms));
        json_object_object_add(so, "cached", json_object_new_boolean(s->cached));
        json_object_array_add(steps, so);
    }
    json_object_object_add(o, "steps", steps);
    json_object_object_add(o, "kernel", jstr(m->kernel));
    json_object_object_add(o, "kernel_hash", jstr(m->kernel_hash));
    json_object_object_add(o, "vcpus", json_object_new_uint64(m->vcpus));
    json_object_object_add(o, "memory_mib", json_object_new_uint64(m->memory_mib));
    json_object_object_add(o, "disk_mib", json_object_new_uint64(m->disk_mib));
    json_object_object_add(o, "envs", jstrv(m->envs));
    json_object_object_add(o, "workdir", jstr(m->workdir));
    json_object_object_add(o, "user", jstr(m->user));
    json_object_object_add(o, "start_cmd", jstr(m->start_cmd));
    json_object_object_add(o, "ready", jstr(m->ready));
    json_object_object_add(o, "key", jstr(m->key));
    json_object_object_add(o, "created_ns", json_object_new_uint64(m->created_ns));
    json_object_object_add(o, "created", json_object_new_string(created));
    json_object_object_add(o, "memory_bytes", json_object_new_uint64(m->memory_bytes));
    json_object_object_add(o, "disk_bytes", json_object_new_uint64(m->disk_bytes));
    return o;
}

/* Writes data to <dirpath>/<name> through <name>.tmp: write, fsync, rename, fsync the dir. */
static int write_atomic(const char *dirpath, const char *name, const char *data, size_t len,
                        char *err, size_t errlen)
{
    char *path = joinpath(dirpath, name, NULL), *tmp = NULL;
    if (!path || asprintf(&tmp, "%s.tmp", path) < 0) {
        free(path);
        return errf(err, errlen, "out of memory");
    }
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        errf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    for (size_t off = 0; off < len;) {
        ssize_t k = write(fd, data + off, len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            errf(err, errlen, "%s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            goto out;
        }
        off += (size_t)k;
    }
    if (fsync(fd) < 0) {
        errf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        errf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    int e = fsync_dir(dirpath);
    if (e) {
        errf(err, errlen, "%s: fsync: %s", dirpath, strerror(-e));
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    free(path);
    return rc;
}

static int write_manifest(const char *tdir, const struct store_manifest *m, char *err,
                          size_t errlen)
{
    if (manifest_check("invalid manifest", m, err, errlen))
        return -1;
    json_object *o = to_json(m);
    if (!o)
        return errf(err, errlen, "out of memory");
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE,
        &len);
    int rc;
    char *doc = NULL;
    if (!s)
        rc = errf(err, errlen, "out of memory");
    else if (len + 1 > STORE_MANIFEST_MAX)
        rc = errf(
            err, errlen,
            "manifest of \"%s\" would be %zu bytes, more than the %d bytes a manifest may have",
            m->name, len + 1, STORE_MANIFEST_MAX);
    else if (asprintf(&doc, "%s\n", s) < 0)
        rc = errf(err, errlen, "out of memory");
    else
        rc = write_atomic(tdir, "manifest.json", doc, len + 1, err, errlen);
    free(doc);
    json_object_put(o);
    return rc;
}

int store_save(const char *dir, const struct store_manifest *m, char *err, size_t errlen)
{
    if (!m || !m->name || !store_valid_name(m->name))
        return errf(err, errlen, "invalid manifest: \"name\" is not a valid template name");
    if (manifest_check("invalid manifest", m, err, errlen))
        return -1; /* before creating the directory */
    char *tdir = store_template_dir(dir, m->name);
    if (!tdir)
        return errf(err, errlen, "out of memory");
    int rc = mkdir_p(tdir, 0700);
    if (rc) {
        errf(err, errlen, "%s: %s", tdir, strerror(-rc));
        free(tdir);
        return -1;
    }
    rc = write_manifest(tdir, m, err, errlen);
    free(tdir);
    return rc;
}

/* ---- staging and publishing ---- */

char *store_staging_dir(const char *dir, const char *name, char *err, size_t errlen)
{
    if (!store_valid_name(name)) {
        errf(err, errlen, "invalid template name \"%.80s\"", name ? name : "");
        return NULL;
    }
    char *tpl;
    if (asprintf(&tpl, "%s/templates/" STAGING_PREFIX "%s-XXXXXX", dir, name) < 0) {
        errf(err, errlen, "out of memory");
        return NULL;
    }
    if (!mkdtemp(tpl)) {
        errf(err, errlen, "%s: %s", tpl, strerror(errno));
        free(tpl);
        return NULL;
    }
    return tpl;
}

int store_publish(const char *dir, const struct store_manifest *m, const char *staging, char *err,
                  size_t errlen)
{
    if (!m || !m->name || !store_valid_name(m->name))
        return errf(err, errlen, "invalid manifest: \"name\" is not a valid template name");
    /* Only a staging directory of this store and this name: never rename arbitrary paths. */
    char *want = NULL, *target = store_template_dir(dir, m->name),
         *tdirs = joinpath(dir, "templates", NULL);
    if (!target || !tdirs ||
        asprintf(&want, "%s/templates/" STAGING_PREFIX "%s-", dir, m->name) < 0) {
        free(target);
        free(tdirs);
        return errf(err, errlen, "out of memory");
    }
    int rc = -1;
    if (!staging || strncmp(staging, want, strlen(want)) || strchr(staging + strlen(want), '/')) {
        errf(err, errlen, "%s is not a staging directory of template \"%s\"",
             staging ? staging : "(null)", m->name);
        goto out;
    }
    if (write_manifest(staging, m, err, errlen))
        goto out;
    /* Swap atomically with the previous build, if any; the old one ends up at `staging`. */
    if (renameat2(AT_FDCWD, staging, AT_FDCWD, target, RENAME_EXCHANGE) == 0) {
        int e = rm_tree(staging);
        (void)e; /* left for store_gc (a .staging-* directory) if it fails */
    } else if (errno == ENOENT) {
        if (rename(staging, target) < 0) {
            errf(err, errlen, "%s: %s", target, strerror(errno));
            goto out;
        }
    } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
        /* A file system without RENAME_EXCHANGE: move the old build aside first. */
        char *old = unique_hidden(tdirs, RM_PREFIX, m->name);
        if (!old) {
            errf(err, errlen, "out of memory");
            goto out;
        }
        if (rename(target, old) < 0 && errno != ENOENT) {
            errf(err, errlen, "%s: %s", target, strerror(errno));
            free(old);
            goto out;
        }
        if (rename(staging, target) < 0) {
            errf(err, errlen, "%s: %s", target, strerror(errno));
            rename(old, target); /* put the old build back */
            free(old);
            goto out;
        }
        rm_tree(old);
        free(old);
    } else {
        errf(err, errlen, "%s: %s", target, strerror(errno));
        goto out;
    }
    int e = fsync_dir(tdirs);
    if (e) {
        errf(err, errlen, "%s: fsync: %s", tdirs, strerror(-e));
        goto out;
    }
    rc = 0;
out:
    free(want);
    free(target);
    free(tdirs);
    return rc;
}

/* ---- listing ---- */

static int cmp_manifest(const void *a, const void *b)
{
    const struct store_manifest *x = *(struct store_manifest *const *)a;
    const struct store_manifest *y = *(struct store_manifest *const *)b;
    return strcmp(x->name, y->name);
}

int store_list(const char *dir, struct store_manifest ***out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    char *tdirs = joinpath(dir, "templates", NULL);
    if (!tdirs)
        return errf(err, errlen, "out of memory");
    DIR *d = opendir(tdirs);
    if (!d) {
        int e = errno;
        if (e == ENOENT) {
            free(tdirs);
            return 0;
        }
        errf(err, errlen, "%s: %s", tdirs, strerror(e));
        free(tdirs);
        return -1;
    }
    struct store_manifest **list = NULL;
    size_t cnt = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    char lerr[1024];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* ".", "..", staging and removal directories */
        struct store_manifest *m = NULL;
        int r = -1;
        if (!store_valid_name(e->d_name))
            snprintf(lerr, sizeof(lerr),
                     "%s/%s: not a valid template name; move or delete this entry", tdirs,
                     e->d_name);
        else
            r = load_name(dir, e->d_name, &m, lerr, sizeof(lerr));
        if (r == -2)
            continue; /* removed since readdir */
        if (r) {
            m = calloc(1, sizeof(*m));
            if (m) {
                m->name = strdup(e->d_name);
                m->load_error = strdup(lerr);
            }
            if (!m || !m->name || !m->load_error) {
                store_manifest_free(m);
                rc = errf(err, errlen, "out of memory");
                break;
            }
        }
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct store_manifest **nl = realloc(list, ncap * sizeof(*nl));
            if (!nl) {
                store_manifest_free(m);
                rc = errf(err, errlen, "out of memory");
                break;
            }
            list = nl;
            cap = ncap;
        }
        list[cnt++] = m;
    }
    closedir(d);
    free(tdirs);
    if (rc) {
        store_list_free(list, cnt);
        return rc;
    }
    if (cnt)
        qsort(list, cnt, sizeof(*list), cmp_manifest);
    *out = list;
    *n = cnt;
    return 0;
}

/* ---- garbage collection ---- */

struct nameset {
    char (*v)[71];
    size_t n, cap;
};

static int nameset_add(struct nameset *s, const char *name)
{
    if (s->n == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        char(*nv)[71] = realloc(s->v, ncap * sizeof(*nv));
        if (!nv)
            return -1;
        s->v = nv;
        s->cap = ncap;
    }
    memcpy(s->v[s->n++], name, 71);
    return 0;
}

static int cmp71(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* Every string anywhere in the document that is a layer file name. */
static int collect_layers(json_object *o, struct nameset *s, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return 0;
    switch (json_object_get_type(o)) {
    case json_type_string: {
        const char *str = json_object_get_string(o);
        if (store_valid_layer_name(str))
            return nameset_add(s, str);
        return 0;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++)
            if (collect_layers(json_object_array_get_idx(o, i), s, depth + 1))
                return -1;
        return 0;
    case json_type_object: {
        json_object_object_foreach(o, k, v)
        {
            (void)k;
            if (collect_layers(v, s, depth + 1))
                return -1;
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int has_prefix(const char *s, const char *p)
{
    return !strncmp(s, p, strlen(p));
}

/* Removes leftovers in templates/ and gathers the layers the remaining manifests name. */
static int gc_scan_templates(const char *tdirs, struct nameset *refs, char *err, size_t errlen)
{
    DIR *d = opendir(tdirs);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return errf(err, errlen, "%s: %s", tdirs, strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    time_t now = time(NULL);
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *sub = joinpath(tdirs, e->d_name, NULL);
        if (!sub) {
            rc = errf(err, errlen, "out of memory");
            break;
        }
        if (has_prefix(e->d_name, RM_PREFIX)) {
            rm_tree(sub); /* best effort: retried next time */
            free(sub);
            continue;
        }
        struct stat st;
        if (has_prefix(e->d_name, STAGING_PREFIX) && lstat(sub, &st) == 0 &&
            now - st.st_mtime > STAGING_MAX_AGE_S) {
            rm_tree(sub);
            free(sub);
            continue;
        }
        char *mpath = joinpath(sub, "manifest.json", NULL);
        free(sub);
        if (!mpath) {
            rc = errf(err, errlen, "out of memory");
            break;
        }
        char *buf;
        size_t len;
        int r = read_capped(mpath, STORE_MANIFEST_MAX, &buf, &len, err, errlen);
        if (r == 0) {
            json_object *root = parse_json(mpath, buf, len, err, errlen);
            free(buf);
            if (!root)
                r = -1;
            else if (collect_layers(root, refs, 0))
                r = errf(err, errlen, "out of memory");
            json_object_put(root);
        }
        if (r == -1) {
            size_t l = err ? strlen(err) : 0;
            if (err && l < errlen)
                snprintf(err + l, errlen - l,
                         "; no layer was deleted (it might name some): fix or remove that "
                         "template");
            rc = -1;
        }
        /* r == -2: no manifest (a staging directory being written, or an incomplete
           template): it names nothing. */
        free(mpath);
    }
    closedir(d);
    return rc;
}

int store_gc_locked(const char *dir, uint64_t *freed_bytes, char *err, size_t errlen)
{
    struct nameset refs = {0};
    char *tdirs = joinpath(dir, "templates", NULL), *ldir = joinpath(dir, "layers", NULL);
    int rc = -1;
    if (!tdirs || !ldir) {
        errf(err, errlen, "out of memory");
        goto out;
    }
    if (gc_scan_templates(tdirs, &refs, err, errlen))
        goto out;
    if (refs.n)
        qsort(refs.v, refs.n, sizeof(*refs.v), cmp71);

    DIR *d = opendir(ldir);
    if (!d) {
        if (errno == ENOENT)
            rc = 0;
        else
            errf(err, errlen, "%s: %s", ldir, strerror(errno));
        goto out;
    }
    rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        bool tmp = has_prefix(e->d_name, LAYER_TMP);
        if (!tmp && (!store_valid_layer_name(e->d_name) ||
                     (refs.n && bsearch(e->d_name, refs.v, refs.n, sizeof(*refs.v), cmp71))))
            continue; /* named by a manifest, or not ours to delete */
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) < 0) {
            if (errno != ENOENT && !rc)
                rc = errf(err, errlen, "%s/%s: %s", ldir, e->d_name, strerror(errno));
            continue;
        }
        if (freed_bytes)
            *freed_bytes += (uint64_t)st.st_blocks * 512;
    }
    closedir(d);
out:
    free(refs.v);
    free(tdirs);
    free(ldir);
    return rc;
}

int store_gc(const char *dir, uint64_t *freed_bytes, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) < 0 && errno == ENOENT)
        return 0; /* nothing to collect */
    int fd = store_lock(dir, err, errlen);
    if (fd < 0)
        return -1;
    int rc = store_gc_locked(dir, freed_bytes, err, errlen);
    store_unlock(fd);
    return rc;
}

/* ---- removal ---- */

int store_remove_locked(const char *dir, const char *name, char *err, size_t errlen)
{
    if (!store_valid_name(name))
        return errf(err, errlen,
                    "invalid template name \"%.80s\": use [a-z0-9][a-z0-9._-]*, at most %d "
                    "characters, no \"..\"",
                    name ? name : "", STORE_NAME_MAX);
    char *tdirs = joinpath(dir, "templates", NULL);
    char *path = store_template_dir(dir, name);
    char *aside = tdirs ? unique_hidden(tdirs, RM_PREFIX, name) : NULL;
    int rc;
    if (!tdirs || !path || !aside) {
        rc = errf(err, errlen, "out of memory");
        goto out;
    }
    /* Out of sight first: a crash from here on leaves a hidden directory for gc, not a
       template that lists but does not load. */
    if (rename(path, aside) < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            errf(err, errlen, "no such template: \"%s\" (in %s)", name, dir);
            rc = -2;
        } else
            rc = errf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    fsync_dir(tdirs);
    rc = 0;
    int e = rm_tree(aside);
    if (e) {
        rc = 1;
        errf(err, errlen, "template \"%s\" removed, but deleting %s failed: %s", name, aside,
             strerror(-e));
    }
    char gerr[1024];
    if (store_gc_locked(dir, NULL, gerr, sizeof(gerr)) && !rc) {
        rc = 1;
        errf(err, errlen, "template \"%s\" removed, but its layers were not collected: %s", name,
             gerr);
    }
out:
    free(tdirs);
    free(path);
    free(aside);
    return rc;
}

int store_remove(const char *dir, const char *name, char *err, size_t errlen)
{
    if (!store_valid_name(name))
        return store_remove_locked(dir, name, err, errlen); /* the message, no lock needed */
    /* A store that does not exist has no such template (and no place for a lock file). */
    struct stat st;
    if (stat(dir, &st) < 0 && errno == ENOENT) {
        errf(err, errlen, "no such template: \"%s\" (in %s)", name, dir);
        return -2;
    }
    int fd = store_lock(dir, err, errlen);
    if (fd < 0)
        return -1;
    int rc = store_remove_locked(dir, name, err, errlen);
    store_unlock(fd);
    return rc;
}
