// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the template store (manifests, listing, removal, layer garbage collection,
   staging, the lock) and of the SHA-256 helpers, in scratch directories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "template/store.h"
#include "util/sha256.h"

/* Distinct 64-hex-digit hashes. */
#define HA "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HB "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HC "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define HD "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
#define HE "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

struct fx {
    char dir[64]; /* the store */
    char err[1024];
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/sbx-store-XXXXXX");
    if (!f || !mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static char *path2(const char *a, const char *b)
{
    char *p;
    assert_true(asprintf(&p, "%s/%s", a, b) > 0);
    return p;
}

static void write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char *buf = malloc(2 << 20);
    size_t n = fread(buf, 1, (2 << 20) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Makes layers/<hash>.layer with some bytes, returns its path (to free). */
static char *make_layer(struct fx *f, const char *hash)
{
    char *p = store_layer_path(f->dir, hash);
    assert_non_null(p);
    char data[8192];
    memset(data, 'L', sizeof(data));
    write_file(p, data, sizeof(data));
    return p;
}

/* ---- a full manifest, built independently of the code under test ---- */

static char *xs(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char **xv(const char *const *v)
{
    size_t n = 0;
    while (v[n])
        n++;
    char **r = calloc(n + 1, sizeof(*r));
    for (size_t i = 0; i < n; i++)
        r[i] = strdup(v[i]);
    return r;
}

static struct store_manifest *full_manifest(const char *name, const char *layer1,
                                            const char *layer2)
{
    static const char *const tags[] = {"latest", "v1.2", NULL};
    static const char *const envs[] = {"PATH=/usr/bin:/bin", "GREETING=hello \"world\"\n",
                                       "EMPTY=", NULL};
    struct store_manifest *m = calloc(1, sizeof(*m));
    m->format = STORE_FORMAT;
    m->kind = STORE_TEMPLATE;
    m->name = xs(name);
    m->tags = xv(tags);
    m->parent = xs("base");
    m->rootfs = xs("/var/lib/images/base.ext4");
    m->nsteps = 3;
    m->steps = calloc(3, sizeof(*m->steps));
    m->steps[0].text = xs("RUN apt-get install -y python3 && echo 'ünïcode ✓'");
    strcpy(m->steps[0].hash, HA);
    m->steps[0].layer = layer1 ? xs(layer1) : NULL;
    m->steps[0].layer_bytes = 123456789012ull;
    m->steps[0].build_ms = 4321;
    m->steps[0].cached = true;
    m->steps[1].text = xs("ENV A=1");
    strcpy(m->steps[1].hash, HB);
    m->steps[1].layer = NULL;
    m->steps[2].text = xs("COPY app/ /srv/app/\nRUN make");
    strcpy(m->steps[2].hash, HC);
    m->steps[2].layer = layer2 ? xs(layer2) : NULL;
    m->steps[2].layer_bytes = UINT64_MAX; /* above INT64_MAX: must survive JSON */
    m->steps[2].build_ms = 1;
    m->kernel = xs("/home/u/.cache/libsandbox/vmlinux");
    strcpy(m->kernel_hash, HD);
    m->vcpus = 2;
    m->memory_mib = 1024;
    m->disk_mib = 4096;
    m->envs = xv(envs);
    m->workdir = xs("/srv/app");
    m->user = xs("user");
    m->start_cmd = xs("python3 -m http.server 8000");
    m->ready = xs("port:8000");
    strcpy(m->key, HE);
    m->created_ns = 1700000000123456789ull;
    m->memory_bytes = 1ull << 30;
    m->disk_bytes = 5ull << 20;
    return m;
}

static struct store_manifest *small_manifest(const char *name)
{
    struct store_manifest *m = calloc(1, sizeof(*m));
    m->format = STORE_FORMAT;
    m->kind = STORE_SNAPSHOT;
    m->name = xs(name);
    m->parent = xs("base");
    m->rootfs = xs("/img/base.ext4");
    m->kernel = xs("/img/vmlinux");
    m->vcpus = 1;
    m->memory_mib = 512;
    return m;
}

static void assert_streq_or_null(const char *a, const char *b)
{
    if (!a || !b)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_strv_equal(char **a, char **b)
{
    size_t i = 0;
    for (; a && a[i]; i++) {
        assert_non_null(b);
        assert_non_null(b[i]);
        assert_string_equal(a[i], b[i]);
    }
    assert_true(!b || !b[i]);
    assert_true((a && a[0]) == (b && b[0]));
}

static void assert_manifest_equal(const struct store_manifest *a, const struct store_manifest *b)
{
    assert_int_equal(a->format, b->format);
    assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->name, b->name);
    assert_strv_equal(a->tags, b->tags);
    assert_streq_or_null(a->parent, b->parent);
    assert_streq_or_null(a->rootfs, b->rootfs);
    assert_int_equal(a->nsteps, b->nsteps);
    for (size_t i = 0; i < a->nsteps; i++) {
        assert_string_equal(a->steps[i].text, b->steps[i].text);
        assert_string_equal(a->steps[i].hash, b->steps[i].hash);
        assert_streq_or_null(a->steps[i].layer, b->steps[i].layer);
        assert_true(a->steps[i].layer_bytes == b->steps[i].layer_bytes);
        assert_true(a->steps[i].build_ms == b->steps[i].build_ms);
        assert_int_equal(a->steps[i].cached, b->steps[i].cached);
    }
    assert_streq_or_null(a->kernel, b->kernel);
    assert_string_equal(a->kernel_hash, b->kernel_hash);
    assert_int_equal(a->vcpus, b->vcpus);
    assert_int_equal(a->memory_mib, b->memory_mib);
    assert_true(a->disk_mib == b->disk_mib);
    assert_strv_equal(a->envs, b->envs);
    assert_streq_or_null(a->workdir, b->workdir);
    assert_streq_or_null(a->user, b->user);
    assert_streq_or_null(a->start_cmd, b->start_cmd);
    assert_streq_or_null(a->ready, b->ready);
    assert_string_equal(a->key, b->key);
    assert_true(a->created_ns == b->created_ns);
    assert_true(a->memory_bytes == b->memory_bytes);
    assert_true(a->disk_bytes == b->disk_bytes);
    assert_null(b->load_error);
}

static void save_ok(struct fx *f, const struct store_manifest *m)
{
    int rc = store_save(f->dir, m, f->err, sizeof(f->err));
    if (rc)
        fail_msg("store_save: %s", f->err);
}

static char *manifest_path(struct fx *f, const char *name)
{
    char *t = store_template_dir(f->dir, name);
    char *p = path2(t, "manifest.json");
    free(t);
    return p;
}

/* Replaces the first occurrence of `from` in a template's manifest.json (which must exist). */
static void patch_manifest(struct fx *f, const char *name, const char *from, const char *to)
{
    char *p = manifest_path(f, name);
    char *s = read_file(p);
    char *at = strstr(s, from);
    if (!at)
        fail_msg("\"%s\" not in manifest:\n%s", from, s);
    char *out;
    assert_true(asprintf(&out, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from)) > 0);
    write_file(p, out, strlen(out));
    free(out);
    free(s);
    free(p);
}

/* Loads `ref` and checks the return code and that the message contains `want`. */
static void load_fails(struct fx *f, const char *ref, int want_rc, const char *want)
{
    struct store_manifest *m = (void *)1;
    f->err[0] = '\0';
    int rc = store_load(f->dir, ref, &m, f->err, sizeof(f->err));
    if (rc != want_rc || !strstr(f->err, want))
        fail_msg("load %s: rc %d (want %d), err \"%s\" (want \"%s\")", ref, rc, want_rc, f->err,
                 want);
    assert_null(m);
}

/* ---- SHA-256 ---- */

static void test_sha256_vectors(void **state)
{
    (void)state;
    char out[65];
    assert_int_equal(sha256_buf("abc", 3, out), 0);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(sha256_buf("", 0, out), 0);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* Incremental updates give the one-shot digest (FIPS 180-2's two-block vector). */
    const char *msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    struct sha256 h;
    assert_int_equal(sha256_init(&h), 0);
    for (size_t i = 0; i < strlen(msg); i += 5)
        sha256_update(&h, msg + i, strlen(msg) - i < 5 ? strlen(msg) - i : 5);
    sha256_hex(&h, out);
    assert_string_equal(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_null(h.evp);
    assert_true(sha256_valid_hex(out));
    assert_false(sha256_valid_hex("abc"));
    out[10] = 'A';
    assert_false(sha256_valid_hex(out));
}

static void test_sha256_file(void **state)
{
    struct fx *f = *state;
    char out[65];
    char *p = path2(f->dir, "abc");
    write_file(p, "abc", 3);
    assert_int_equal(sha256_file(p, out), 0);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(p);

    /* A million 'a's: several read chunks. */
    p = path2(f->dir, "million");
    char *big = malloc(1000000);
    memset(big, 'a', 1000000);
    write_file(p, big, 1000000);
    free(big);
    assert_int_equal(sha256_file(p, out), 0);
    assert_string_equal(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(p);

    p = path2(f->dir, "missing");
    assert_int_equal(sha256_file(p, out), -ENOENT);
    assert_string_equal(out, "");
    free(p);
    assert_int_equal(sha256_file(f->dir, out), -EISDIR);
    p = path2(f->dir, "fifo");
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(sha256_file(p, out), -EINVAL); /* must not block on a FIFO */
    free(p);
}

/* ---- names, references, directories ---- */

static void test_names(void **state)
{
    (void)state;
    static const char *const good[] = {"a", "0", "python3.11", "my-app_v2", "a.b.c", NULL};
    static const char *const bad[] = {"",    "../x",    "..",  "a..b",   "Upper",
                                      "-a",  ".hidden", "_a",  "a/b",    "a b",
                                      "a:b", "é",       "a\n", "x\x01y", NULL};
    for (size_t i = 0; good[i]; i++)
        if (!store_valid_name(good[i]))
            fail_msg("\"%s\" rejected", good[i]);
    for (size_t i = 0; bad[i]; i++)
        if (store_valid_name(bad[i]))
            fail_msg("\"%s\" accepted", bad[i]);
    assert_false(store_valid_name(NULL));
    char n[80];
    memset(n, 'a', sizeof(n));
    n[63] = '\0';
    assert_true(store_valid_name(n)); /* 63 characters */
    n[63] = 'a';
    n[64] = '\0';
    assert_false(store_valid_name(n)); /* 64 */

    assert_true(store_valid_layer_name(HA ".layer"));
    assert_false(store_valid_layer_name(HA));
    assert_false(store_valid_layer_name(HA ".layerx"));
    assert_false(store_valid_layer_name("../" HA ".layer"));
    assert_false(store_valid_layer_name(NULL));
}

static void test_parse_ref(void **state)
{
    struct fx *f = *state;
    char name[STORE_NAME_MAX + 1], tag[STORE_NAME_MAX + 1];
    assert_int_equal(store_parse_ref("app", name, tag, f->err, sizeof(f->err)), 0);
    assert_string_equal(name, "app");
    assert_string_equal(tag, "");
    assert_int_equal(store_parse_ref("app:v1.2", name, tag, f->err, sizeof(f->err)), 0);
    assert_string_equal(name, "app");
    assert_string_equal(tag, "v1.2");
    assert_int_equal(store_parse_ref("app:", name, tag, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "invalid tag"));
    assert_int_equal(store_parse_ref("app:a:b", name, tag, f->err, sizeof(f->err)), -1);
    assert_int_equal(store_parse_ref(":v1", name, tag, f->err, sizeof(f->err)), -1);
    assert_int_equal(store_parse_ref("../etc", name, tag, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "invalid template name"));
    assert_int_equal(store_parse_ref("", name, tag, f->err, sizeof(f->err)), -1);
}

static void test_default_dir(void **state)
{
    (void)state;
    char *saved[3];
    const char *vars[] = {"SBX_TEMPLATE_DIR", "XDG_DATA_HOME", "HOME"};
    for (int i = 0; i < 3; i++)
        saved[i] = getenv(vars[i]) ? strdup(getenv(vars[i])) : NULL;

    setenv("SBX_TEMPLATE_DIR", "/srv/tpl", 1);
    setenv("XDG_DATA_HOME", "/xdg", 1);
    setenv("HOME", "/home/u", 1);
    char *d = store_default_dir();
    assert_string_equal(d, "/srv/tpl");
    free(d);
    setenv("SBX_TEMPLATE_DIR", "", 1); /* empty: ignored */
    d = store_default_dir();
    assert_string_equal(d, "/xdg/libsandbox/templates");
    free(d);
    setenv("XDG_DATA_HOME", "relative", 1); /* relative: ignored, as the XDG spec says */
    d = store_default_dir();
    assert_string_equal(d, "/home/u/.local/share/libsandbox/templates");
    free(d);
    unsetenv("XDG_DATA_HOME");
    unsetenv("HOME");
    assert_null(store_default_dir());

    for (int i = 0; i < 3; i++) {
        if (saved[i])
            setenv(vars[i], saved[i], 1);
        else
            unsetenv(vars[i]);
        free(saved[i]);
    }
}

static void test_open(void **state)
{
    struct fx *f = *state;
    char *d = path2(f->dir, "a/b/store");
    assert_int_equal(store_open(d, f->err, sizeof(f->err)), 0);
    char *l = path2(d, "layers"), *t = path2(d, "templates");
    struct stat st;
    assert_int_equal(stat(l, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(t, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(store_open(d, f->err, sizeof(f->err)), 0); /* again: fine */
    free(l);
    free(t);

    /* A file in the way. */
    char *file = path2(f->dir, "file");
    write_file(file, "x", 1);
    assert_int_equal(store_open(file, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "Not a directory"));
    free(file);

    char *tdir = store_template_dir(d, "app");
    char *want = path2(d, "templates/app");
    assert_string_equal(tdir, want);
    free(tdir);
    free(want);
    char *lp = store_layer_path(d, HA);
    want = path2(d, "layers/" HA ".layer");
    assert_string_equal(lp, want);
    free(lp);
    free(want);
    free(d);
}

/* ---- save and load ---- */

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    struct store_manifest *m = full_manifest("python-app", HA ".layer", HC ".layer");
    save_ok(f, m);

    struct store_manifest *got = NULL;
    assert_int_equal(store_load(f->dir, "python-app", &got, f->err, sizeof(f->err)), 0);
    assert_manifest_equal(m, got);
    store_manifest_free(got);

    /* A tag resolves to the same template; an absent tag is "no such template". */
    got = NULL;
    assert_int_equal(store_load(f->dir, "python-app:v1.2", &got, f->err, sizeof(f->err)), 0);
    assert_string_equal(got->name, "python-app");
    store_manifest_free(got);
    load_fails(f, "python-app:v9", -2, "has tags: latest, v1.2");

    /* Human-readable: pretty-printed, format first, a "created" date, no temporary file. */
    char *p = manifest_path(f, "python-app");
    char *s = read_file(p);
    assert_non_null(strstr(s, "{\n  \"format\": 1,\n  \"kind\": \"template\",\n"));
    assert_non_null(strstr(s, "\"created\": \"2023-11-14T22:13:20Z\""));
    assert_non_null(strstr(s, "\"rootfs\": \"/var/lib/images/base.ext4\""));
    assert_non_null(strstr(s, "\"layer\": null"));
    assert_int_equal(s[strlen(s) - 1], '\n');
    char *tmp;
    assert_true(asprintf(&tmp, "%s.tmp", p) > 0);
    assert_false(exists(tmp));
    free(tmp);
    free(s);
    free(p);

    /* Saving again replaces; empty lists and NULLs round-trip as NULL. */
    struct store_manifest *small = small_manifest("python-app");
    save_ok(f, small);
    assert_int_equal(store_load(f->dir, "python-app", &got, f->err, sizeof(f->err)), 0);
    assert_manifest_equal(small, got);
    assert_null(got->tags);
    assert_null(got->envs);
    assert_int_equal(got->nsteps, 0);
    assert_null(got->steps);
    assert_int_equal(got->kind, STORE_SNAPSHOT);
    store_manifest_free(got);
    store_manifest_free(small);
    store_manifest_free(m);
}

static void test_save_rejects(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    struct store_manifest *m = full_manifest("ok", NULL, NULL);

    /* Each spoilt field is rejected with a message naming it, and nothing is written. */
#define REJECT(stmt, restore, want)                                                                \
    do {                                                                                           \
        stmt;                                                                                      \
        f->err[0] = '\0';                                                                          \
        assert_int_equal(store_save(f->dir, m, f->err, sizeof(f->err)), -1);                       \
        if (!strstr(f->err, want))                                                                 \
            fail_msg("err \"%s\", want \"%s\"", f->err, want);                                     \
        restore;                                                                                   \
    } while (0)
    char *keep;
    REJECT(keep = m->rootfs; m->rootfs = "relative/path", m->rootfs = keep, "\"rootfs\"");
    REJECT(keep = m->kernel; m->kernel = NULL, m->kernel = keep, "\"kernel\" is missing");
    REJECT(keep = m->parent; m->parent = "", m->parent = keep, "\"parent\" is empty");
    REJECT(m->steps[1].hash[3] = 'G', m->steps[1].hash[3] = 'b', "steps[1].hash");
    REJECT(keep = m->steps[0].layer;
           m->steps[0].layer = "../../etc/passwd", m->steps[0].layer = keep, "steps[0].layer");
    REJECT(m->vcpus = 0, m->vcpus = 2, "\"vcpus\" is 0");
    REJECT(m->memory_mib = 1 << 20, m->memory_mib = 1024, "memory_mib");
    REJECT(m->key[0] = 'x', m->key[0] = 'e', "\"key\"");
    REJECT(keep = m->tags[1]; m->tags[1] = "latest", m->tags[1] = keep, "listed twice");
    REJECT(keep = m->tags[0]; m->tags[0] = "Latest", m->tags[0] = keep, "tags");
    REJECT(keep = m->envs[0]; m->envs[0] = "=x", m->envs[0] = keep, "envs");
    REJECT(keep = m->workdir; m->workdir = "srv", m->workdir = keep, "workdir");
    REJECT(keep = m->user; m->user = "", m->user = keep, "\"user\"");
    REJECT(keep = m->ready; m->ready = "port:\n80", m->ready = keep, "\"ready\"");
    REJECT(m->format = 2, m->format = STORE_FORMAT, "format 2");
    REJECT(keep = m->name; m->name = "Bad", m->name = keep, "not a valid template name");
    char *tdir = store_template_dir(f->dir, "ok");
    assert_false(exists(tdir));
    free(tdir);
    save_ok(f, m); /* everything restored */
    store_manifest_free(m);
}

static void test_missing(void **state)
{
    struct fx *f = *state;
    /* No store at all, then an empty store. */
    char *nowhere = path2(f->dir, "nowhere");
    struct store_manifest *m = (void *)1;
    assert_int_equal(store_load(nowhere, "app", &m, f->err, sizeof(f->err)), -2);
    assert_null(m);
    assert_non_null(strstr(f->err, "no such template: \"app\""));
    assert_int_equal(store_remove(nowhere, "app", f->err, sizeof(f->err)), -2);
    struct store_manifest **list;
    size_t n = 99;
    assert_int_equal(store_list(nowhere, &list, &n, f->err, sizeof(f->err)), 0);
    assert_int_equal(n, 0);
    free(nowhere);

    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    load_fails(f, "app", -2, "no such template");
    load_fails(f, "app:v1", -2, "no such template");
    /* Invalid references are -1, not "missing". */
    load_fails(f, "../layers", -1, "invalid template name");
    load_fails(f, "", -1, "empty");
    char longname[100];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    load_fails(f, longname, -1, "longer than 63");
    load_fails(f, "UPPER", -1, "invalid template name");

    /* A directory without a manifest is a broken template, not a missing one. */
    char *t = store_template_dir(f->dir, "half");
    assert_int_equal(mkdir(t, 0700), 0);
    free(t);
    load_fails(f, "half", -1, "incomplete");
}

static void test_corrupted(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    struct store_manifest *m = full_manifest("app", HA ".layer", NULL);
    char *p = manifest_path(f, "app");
    struct {
        const char *from, *to, *want;
    } patches[] = {
        {"\"vcpus\": 2", "\"vcpus\": \"2\"", "\"vcpus\" must be an integer, not a string"},
        {"\"vcpus\": 2", "\"vcpus\": 2.5", "\"vcpus\" must be an integer, not a fractional"},
        {"\"vcpus\": 2", "\"vcpus\": 65", "\"vcpus\" is 65, more than 64"},
        {"\"vcpus\": 2", "\"vcpus\": 0", "\"vcpus\" is 0, not 1..64"},
        {"\"disk_mib\": 4096", "\"disk_mib\": -1", "\"disk_mib\" is negative"},
        {"\"format\": 1", "\"format\": 2", "format 2 is not supported"},
        {"\"format\": 1", "\"format\": \"1\"", "\"format\" must be an integer"},
        {"\"format\": 1,", "", "no \"format\" key"},
        {"\"kind\": \"template\"", "\"kind\": \"vm\"", "\"kind\" must be"},
        {"\"name\": \"app\"", "\"name\": \"other\"", "not the directory's name"},
        {"\"name\": \"app\"", "\"name\": \"../app\"", "\"name\" is not a valid"},
        {"\"name\": \"app\"", "\"name\": \"ap\\u0000p\"", "NUL character"},
        {"\"tags\": [", "\"tags\": [ 7, ", "\"tags[0]\" must be a string, not an integer"},
        {"\"tags\": [", "\"tags\": { }, \"x\": [", "\"tags\" must be an array"},
        {"\"rootfs\": ", "\"rootfs\": null, \"x\": ", "\"rootfs\" must be a string, not null"},
        {"\"rootfs\": \"/var", "\"rootfs\": \"var", "\"rootfs\" is not an absolute path"},
        {"\"rootfs\"", "\"root_fs\"", "\"rootfs\" is missing"},
        {"\"cached\": true", "\"cached\": 1", "\"steps[0].cached\" must be true or false"},
        {"\"hash\": \"aaaa", "\"hash\": \"Aaaa", "\"steps[0].hash\" is not 64 lowercase hex"},
        {"\"layer\": \"aaaa", "\"layer\": \"../aaaa", "\"steps[0].layer\" is not a layer file"},
        {"\"text\": \"RUN", "\"txt\": \"RUN", "\"steps[0].text\" is missing"},
        {"\"steps\": [", "\"steps\": [ 1, ", "\"steps[0]\" must be an object"},
        {"\"kernel_hash\": \"dddd", "\"kernel_hash\": \"dd", "\"kernel_hash\" is not 64"},
        {"\"envs\": [", "\"envs\": [ \"NOEQUALS\", ", "\"envs\"[0] is not KEY=VALUE"},
        {"\"workdir\": \"/srv/app\"", "\"workdir\": 5", "\"workdir\" must be a string or null"},
        {"\"vcpus\": 2", "\"vcpus\": 1e1", "\"vcpus\" must be an integer, not a fractional"},
        {"\"disk_mib\": 4096", "\"disk_mib\": 99999999999999999999999", "\"disk_mib\""},
        {"\"created_ns\": ", "\"created_ns\": -", "\"created_ns\" is negative"},
        {"{", "[", "not valid JSON"},
        {"\"user\": \"user\"", "\"user\": \"us\\xff\"", "not valid JSON"}, /* not UTF-8 */
        {"\"user\": \"user\"", "\"user\": 'user'", "not valid JSON"},      /* strict JSON */
    };
    for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
        save_ok(f, m);
        patch_manifest(f, "app", patches[i].from, patches[i].to);
        load_fails(f, "app", -1, patches[i].want);
        assert_non_null(strstr(f->err, p)); /* the message names the file */
    }

    /* Unknown keys are ignored (forward compatibility), and so is "created". */
    save_ok(f, m);
    patch_manifest(f, "app", "\"vcpus\": 2,", "\"vcpus\": 2, \"future\": {\"x\": [1, 2]},");
    patch_manifest(f, "app", "\"created\": \"", "\"created\": \"not a date ");
    struct store_manifest *got;
    assert_int_equal(store_load(f->dir, "app", &got, f->err, sizeof(f->err)), 0);
    assert_manifest_equal(m, got);
    store_manifest_free(got);

    /* Truncated (a crash mid-write on a file system that lost the rename's ordering). */
    save_ok(f, m);
    char *s = read_file(p);
    write_file(p, s, strlen(s) / 2);
    load_fails(f, "app", -1, "truncated");
    write_file(p, "", 0);
    load_fails(f, "app", -1, "empty file");
    write_file(p, "{\"format\": 1}\0garbage", 21);
    load_fails(f, "app", -1, "NUL bytes");
    write_file(p, s, strlen(s) - 1);
    s[strlen(s) - 1] = ' ';
    strcat(s, "{}");
    write_file(p, s, strlen(s));
    load_fails(f, "app", -1, "extra data");
    write_file(p, "[1, 2]", 6);
    load_fails(f, "app", -1, "not a template manifest");
    free(s);

    /* Deep nesting is refused by the parser, not by the stack. */
    char deep[4096];
    size_t k = 0;
    k += (size_t)sprintf(deep, "{\"format\": 1, \"x\": ");
    for (int i = 0; i < 1000; i++)
        deep[k++] = '[';
    deep[k] = '\0';
    write_file(p, deep, k);
    load_fails(f, "app", -1, "not valid JSON");

    /* Huge: over 1 MiB, even if it is valid JSON. */
    size_t huge = STORE_MANIFEST_MAX + 1;
    char *h = malloc(huge);
    memset(h, ' ', huge);
    h[0] = '{';
    h[huge - 1] = '}';
    write_file(p, h, huge);
    load_fails(f, "app", -1, "more than the 1048576 bytes");
    free(h);

    /* Not a regular file. */
    unlink(p);
    assert_int_equal(mkdir(p, 0700), 0);
    load_fails(f, "app", -1, "not a regular file");
    rmdir(p);
    free(p);
    store_manifest_free(m);
}

static void test_save_too_big(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    struct store_manifest *m = small_manifest("big");
    /* 40 steps of 60 KiB: every field valid, the whole over 1 MiB. */
    m->nsteps = 40;
    m->steps = calloc(m->nsteps, sizeof(*m->steps));
    for (size_t i = 0; i < m->nsteps; i++) {
        m->steps[i].text = malloc(60000);
        memset(m->steps[i].text, 'x', 59999);
        m->steps[i].text[59999] = '\0';
        strcpy(m->steps[i].hash, HA);
    }
    assert_int_equal(store_save(f->dir, m, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "more than the 1048576"));
    store_manifest_free(m);
}

/* ---- list ---- */

static void test_list(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    static const char *const names[] = {"zeta", "alpha", "mid-1", "mid", "0first", NULL};
    for (size_t i = 0; names[i]; i++) {
        struct store_manifest *m = small_manifest(names[i]);
        m->created_ns = i;
        save_ok(f, m);
        store_manifest_free(m);
    }
    /* A broken one, one without a manifest, a bad directory name, and hidden entries. */
    struct store_manifest *m = small_manifest("broken");
    save_ok(f, m);
    store_manifest_free(m);
    patch_manifest(f, "broken", "\"vcpus\": 1", "\"vcpus\": true");
    char *t = store_template_dir(f->dir, "incomplete");
    assert_int_equal(mkdir(t, 0700), 0);
    free(t);
    t = store_template_dir(f->dir, "Bad Name");
    assert_int_equal(mkdir(t, 0700), 0);
    free(t);
    t = store_template_dir(f->dir, ".staging-x-123");
    assert_int_equal(mkdir(t, 0700), 0);
    free(t);

    struct store_manifest **list;
    size_t n;
    assert_int_equal(store_list(f->dir, &list, &n, f->err, sizeof(f->err)), 0);
    static const char *const want[] = {"0first", "Bad Name", "alpha", "broken", "incomplete",
                                       "mid",    "mid-1",    "zeta",  NULL};
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(list[i]->name, want[i]);
        bool bad = !strcmp(want[i], "broken") || !strcmp(want[i], "incomplete") ||
                   !strcmp(want[i], "Bad Name");
        if (bad) {
            assert_non_null(list[i]->load_error);
            assert_null(list[i]->rootfs);
        } else {
            assert_null(list[i]->load_error);
            assert_string_equal(list[i]->rootfs, "/img/base.ext4");
        }
    }
    assert_non_null(strstr(list[3]->load_error, "\"vcpus\" must be an integer, not a boolean"));
    assert_non_null(strstr(list[4]->load_error, "incomplete"));
    assert_non_null(strstr(list[1]->load_error, "not a valid template name"));
    assert_true(list[0]->created_ns == 4);
    store_list_free(list, n);
}

/* ---- remove and garbage collection ---- */

static void test_remove_gc(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    /* t1 names A and B, t2 names A and D; C is an orphan; a stale temporary layer. */
    char *la = make_layer(f, HA), *lb = make_layer(f, HB), *lc = make_layer(f, HC),
         *ld = make_layer(f, HD);
    char *ltmp = path2(f->dir, "layers/.tmp-123");
    write_file(ltmp, "partial", 7);
    char *other = path2(f->dir, "layers/README");
    write_file(other, "not a layer", 11);
    struct store_manifest *t1 = full_manifest("t1", HA ".layer", HB ".layer");
    struct store_manifest *t2 = full_manifest("t2", HD ".layer", HA ".layer");
    save_ok(f, t1);
    save_ok(f, t2);
    /* Snapshot files inside a template go with it. */
    char *t1dir = store_template_dir(f->dir, "t1");
    char *snap = path2(t1dir, "snapshot");
    assert_int_equal(mkdir(snap, 0700), 0);
    char *mem = path2(snap, "memory");
    write_file(mem, "mem", 3);

    assert_int_equal(store_remove(f->dir, "t1", f->err, sizeof(f->err)), 0);
    assert_false(exists(t1dir));
    assert_true(exists(la)); /* still named by t2 */
    assert_false(exists(lb));
    assert_false(exists(lc)); /* orphan */
    assert_true(exists(ld));
    assert_false(exists(ltmp));
    assert_true(exists(other)); /* not a layer name: not ours to delete */
    /* No leftovers in templates/. */
    char *tdirs = path2(f->dir, "templates");
    struct store_manifest **list;
    size_t n;
    assert_int_equal(store_list(f->dir, &list, &n, f->err, sizeof(f->err)), 0);
    assert_int_equal(n, 1);
    assert_string_equal(list[0]->name, "t2");
    store_list_free(list, n);

    /* Again: no such template. Invalid names: -1. */
    assert_int_equal(store_remove(f->dir, "t1", f->err, sizeof(f->err)), -2);
    assert_non_null(strstr(f->err, "no such template"));
    assert_int_equal(store_remove(f->dir, "../layers", f->err, sizeof(f->err)), -1);
    assert_int_equal(store_remove(f->dir, "", f->err, sizeof(f->err)), -1);
    assert_true(exists(la));

    /* gc alone reports what it freed. */
    char *le = make_layer(f, HE);
    uint64_t freed = 0;
    assert_int_equal(store_gc(f->dir, &freed, f->err, sizeof(f->err)), 0);
    assert_false(exists(le));
    assert_true(freed >= 8192);
    assert_true(exists(la));
    assert_true(exists(ld));

    assert_int_equal(store_remove(f->dir, "t2", f->err, sizeof(f->err)), 0);
    assert_false(exists(la));
    assert_false(exists(ld));

    store_manifest_free(t1);
    store_manifest_free(t2);
    free(la), free(lb), free(lc), free(ld), free(le), free(ltmp), free(other);
    free(t1dir), free(snap), free(mem), free(tdirs);
}

/* gc never deletes a layer a manifest might name: newer formats keep theirs, and a manifest
   that is not JSON stops the collection. */
static void test_gc_conservative(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    char *la = make_layer(f, HA), *lb = make_layer(f, HB), *lc = make_layer(f, HC);

    /* A format-2 manifest that names A somewhere unexpected. */
    char *t = store_template_dir(f->dir, "future");
    assert_int_equal(mkdir(t, 0700), 0);
    char *p = path2(t, "manifest.json");
    const char *doc =
        "{\"format\": 2, \"name\": \"future\", \"layers\": {\"base\": [\"" HA ".layer\"]}}";
    write_file(p, doc, strlen(doc));
    free(p);
    free(t);
    /* A staging directory being built names B. */
    char *staging = store_staging_dir(f->dir, "next", f->err, sizeof(f->err));
    assert_non_null(staging);
    struct store_manifest *m = full_manifest("next", HB ".layer", NULL);
    p = path2(staging, "manifest.json");
    save_ok(f, m); /* then move its manifest into the staging directory */
    char *saved = manifest_path(f, "next");
    assert_int_equal(rename(saved, p), 0);
    char *nt = store_template_dir(f->dir, "next");
    assert_int_equal(rmdir(nt), 0);
    free(nt);
    free(saved);
    free(p);

    uint64_t freed = 0;
    assert_int_equal(store_gc(f->dir, &freed, f->err, sizeof(f->err)), 0);
    assert_true(exists(la));
    assert_true(exists(lb));
    assert_false(exists(lc));
    assert_true(exists(staging)); /* fresh: not collected */

    /* A broken manifest: nothing is deleted, and the message says which file. */
    char *ld = make_layer(f, HD);
    t = store_template_dir(f->dir, "broken");
    assert_int_equal(mkdir(t, 0700), 0);
    p = path2(t, "manifest.json");
    write_file(p, "{\"format\": 1, \"steps\": [", 24);
    assert_int_equal(store_gc(f->dir, NULL, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, p));
    assert_non_null(strstr(f->err, "no layer was deleted"));
    assert_true(exists(ld));
    /* store_remove of another template still removes it, and says the layers stayed. */
    struct store_manifest *s = small_manifest("other");
    save_ok(f, s);
    store_manifest_free(s);
    assert_int_equal(store_remove(f->dir, "other", f->err, sizeof(f->err)), 1);
    assert_non_null(strstr(f->err, "removed, but its layers were not collected"));
    assert_true(exists(ld));
    /* Removing the broken template itself works, and collects. */
    assert_int_equal(store_remove(f->dir, "broken", f->err, sizeof(f->err)), 0);
    assert_false(exists(ld));
    assert_false(exists(t));
    free(p);
    free(t);

    /* An old staging directory is collected, and so are leftovers of removals. */
    struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    assert_int_equal(utimensat(AT_FDCWD, staging, old, 0), 0);
    char *rm = path2(f->dir, "templates/.rm-x-1-2");
    assert_int_equal(mkdir(rm, 0700), 0);
    char *rmf = path2(rm, "file");
    write_file(rmf, "x", 1);
    assert_int_equal(store_gc(f->dir, NULL, f->err, sizeof(f->err)), 0);
    assert_false(exists(staging));
    assert_false(exists(rm));
    assert_false(exists(lb)); /* was named only by the staging manifest */
    assert_true(exists(la));

    free(rm), free(rmf), free(staging), free(la), free(lb), free(lc), free(ld);
    store_manifest_free(m);
}

/* ---- staging and publishing ---- */

static void test_publish(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    struct store_manifest *m = full_manifest("app", NULL, NULL);

    /* First build. */
    char *st = store_staging_dir(f->dir, "app", f->err, sizeof(f->err));
    assert_non_null(st);
    char *snap = path2(st, "snapshot");
    assert_int_equal(mkdir(snap, 0700), 0);
    char *mem = path2(snap, "memory");
    write_file(mem, "build1", 6);
    free(mem);
    free(snap);
    /* Not visible while staged. */
    struct store_manifest **list;
    size_t n;
    assert_int_equal(store_list(f->dir, &list, &n, f->err, sizeof(f->err)), 0);
    assert_int_equal(n, 0);
    free(list);
    assert_int_equal(store_publish(f->dir, m, st, f->err, sizeof(f->err)), 0);
    assert_false(exists(st));
    free(st);
    char *tdir = store_template_dir(f->dir, "app");
    char *memf = path2(tdir, "snapshot/memory");
    char *s = read_file(memf);
    assert_string_equal(s, "build1");
    free(s);

    /* A rebuild replaces it whole. */
    st = store_staging_dir(f->dir, "app", f->err, sizeof(f->err));
    snap = path2(st, "snapshot");
    assert_int_equal(mkdir(snap, 0700), 0);
    mem = path2(snap, "memory");
    write_file(mem, "build2", 6);
    char *extra = path2(tdir, "snapshot/only-in-build1");
    write_file(extra, "x", 1);
    m->vcpus = 4;
    assert_int_equal(store_publish(f->dir, m, st, f->err, sizeof(f->err)), 0);
    s = read_file(memf);
    assert_string_equal(s, "build2");
    free(s);
    assert_false(exists(extra));
    assert_false(exists(st));
    struct store_manifest *got;
    assert_int_equal(store_load(f->dir, "app", &got, f->err, sizeof(f->err)), 0);
    assert_int_equal(got->vcpus, 4);
    store_manifest_free(got);
    /* No hidden leftovers. */
    char *tdirs = path2(f->dir, "templates");
    DIR *d = opendir(tdirs);
    struct dirent *e;
    int entries = 0;
    while ((e = readdir(d)))
        entries += e->d_name[0] != '.';
    closedir(d);
    assert_int_equal(entries, 1);
    free(tdirs);

    /* Only a staging directory of the same name is accepted; an invalid manifest is refused
       before anything moves. */
    char *st2 = store_staging_dir(f->dir, "other", f->err, sizeof(f->err));
    assert_int_equal(store_publish(f->dir, m, st2, f->err, sizeof(f->err)), -1);
    assert_non_null(strstr(f->err, "not a staging directory"));
    assert_int_equal(store_publish(f->dir, m, "/tmp", f->err, sizeof(f->err)), -1);
    char *st3 = store_staging_dir(f->dir, "app", f->err, sizeof(f->err));
    m->vcpus = 0;
    assert_int_equal(store_publish(f->dir, m, st3, f->err, sizeof(f->err)), -1);
    assert_true(exists(st3));
    assert_null(store_staging_dir(f->dir, "../x", f->err, sizeof(f->err)));

    free(st), free(st2), free(st3), free(snap), free(mem), free(extra), free(tdir), free(memf);
    store_manifest_free(m);
}

/* ---- the lock ---- */

static void test_lock(void **state)
{
    struct fx *f = *state;
    assert_int_equal(store_open(f->dir, f->err, sizeof(f->err)), 0);
    int fd = store_lock(f->dir, f->err, sizeof(f->err));
    assert_true(fd >= 0);
    char *lp = path2(f->dir, ".lock");
    /* Another open file description (as another process would have) cannot take it. */
    int other = open(lp, O_RDWR);
    assert_true(other >= 0);
    assert_int_equal(flock(other, LOCK_EX | LOCK_NB), -1);
    assert_int_equal(errno, EWOULDBLOCK);
    /* A removal in a child process waits for the lock. */
    struct store_manifest *m = small_manifest("app");
    save_ok(f, m);
    store_manifest_free(m);
    pid_t pid = fork();
    if (pid == 0) {
        /* The inherited fd shares the parent's lock: a forked child must drop it. */
        close(fd);
        char err[256];
        _exit(store_remove(f->dir, "app", err, sizeof(err)) == 0 ? 0 : 1);
    }
    usleep(200 * 1000);
    char *t = store_template_dir(f->dir, "app");
    assert_true(exists(t)); /* still waiting */
    store_unlock(fd);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_false(exists(t));
    assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
    close(other);
    store_unlock(-1);
    free(t);
    free(lp);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_sha256_vectors), T(test_sha256_file),     T(test_names),
        T(test_parse_ref),      T(test_default_dir),     T(test_open),
        T(test_round_trip),     T(test_save_rejects),    T(test_missing),
        T(test_corrupted),      T(test_save_too_big),    T(test_list),
        T(test_remove_gc),      T(test_gc_conservative), T(test_publish),
        T(test_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
