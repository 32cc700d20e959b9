// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the initramfs writer: parse our own newc output, gunzip it, extract with cpio. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "sandbox.h"
#include "util/initramfs.h"

extern const unsigned char sbx_envd_blob[], sbx_envd_blob_end[];

struct entry {
    char name[INITRAMFS_PATH_MAX];
    uint32_t ino, mode, uid, gid, nlink, mtime, size, rmaj, rmin;
    const uint8_t *data;
};

static uint32_t hex8(const uint8_t *p)
{
    char s[9];
    memcpy(s, p, 8);
    s[8] = '\0';
    for (int i = 0; i < 8; i++)
        assert_true((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F'));
    return (uint32_t)strtoul(s, NULL, 16);
}

/* Parses a whole newc archive independently of the writer, checking the format rules the
   kernel relies on. Returns the number of entries before the trailer. */
static size_t parse_newc(const uint8_t *buf, size_t len, struct entry *out, size_t max)
{
    size_t off = 0, n = 0;
    assert_int_equal(len % 4, 0);
    for (;;) {
        assert_int_equal(off % 4, 0);
        assert_true(off + 110 <= len);
        assert_memory_equal(buf + off, "070701", 6);
        uint32_t f[13];
        for (int i = 0; i < 13; i++)
            f[i] = hex8(buf + off + 6 + 8 * i);
        uint32_t namesize = f[11];
        assert_int_equal(f[12], 0); /* check field: 0 for newc */
        assert_true(namesize >= 2 && namesize <= INITRAMFS_PATH_MAX);
        assert_true(off + 110 + namesize <= len);
        const char *name = (const char *)buf + off + 110;
        assert_int_equal(name[namesize - 1], '\0');
        assert_int_equal(strlen(name), namesize - 1);
        size_t data = off + 110 + namesize;
        while (data % 4) {
            assert_int_equal(buf[data], 0);
            data++;
        }
        uint32_t size = f[6];
        assert_true(data + size <= len);
        size_t next = data + size;
        while (next % 4) {
            assert_true(next < len);
            assert_int_equal(buf[next], 0);
            next++;
        }
        if (strcmp(name, "TRAILER!!!") == 0) {
            assert_int_equal(size, 0);
            assert_int_equal(next, len); /* nothing after the trailer */
            return n;
        }
        assert_true(n < max);
        struct entry *e = &out[n++];
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->ino = f[0];
        e->mode = f[1];
        e->uid = f[2];
        e->gid = f[3];
        e->nlink = f[4];
        e->mtime = f[5];
        e->size = size;
        e->rmaj = f[9];
        e->rmin = f[10];
        e->data = buf + data;
        /* Distinct inodes, so the kernel never hard-links entries. */
        for (size_t i = 0; i + 1 < n; i++)
            assert_int_not_equal(out[i].ino, e->ino);
        off = next;
    }
}

static const struct entry *find(const struct entry *es, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(es[i].name, name) == 0)
            return &es[i];
    fail_msg("entry %s missing", name);
    return NULL;
}

static uint8_t *gunzip(const uint8_t *in, size_t len, size_t *outlen)
{
    assert_true(len >= 2 && in[0] == 0x1f && in[1] == 0x8b); /* gzip magic */
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    size_t cap = 1 << 20, n = 0;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    int r;
    do {
        if (n == cap) {
            cap *= 2;
            out = realloc(out, cap);
        }
        z.next_out = out + n;
        z.avail_out = (uInt)(cap - n);
        r = inflate(&z, Z_NO_FLUSH);
        assert_true(r == Z_OK || r == Z_STREAM_END);
        n = cap - z.avail_out;
    } while (r != Z_STREAM_END);
    assert_int_equal(z.avail_in, 0);
    inflateEnd(&z);
    *outlen = n;
    return out;
}

static const char file_data[] = "hello initramfs\n";

static void build_sample(struct initramfs *c)
{
    initramfs_init(c, 0);
    assert_int_equal(initramfs_add_dir(c, "/etc", 0755), 0);
    assert_int_equal(initramfs_add_file(c, "etc/motd", 0644, file_data, strlen(file_data)), 0);
    assert_int_equal(initramfs_add_file(c, "etc/empty", 0600, NULL, 0), 0);
    /* sizes 1..3 exercise every data padding */
    assert_int_equal(initramfs_add_file(c, "etc/a", 0644, "1", 1), 0);
    assert_int_equal(initramfs_add_file(c, "etc/ab", 0644, "12", 2), 0);
    assert_int_equal(initramfs_add_file(c, "etc/abc", 04755, "123", 3), 0);
    assert_int_equal(initramfs_add_symlink(c, "etc/link", "motd"), 0);
    assert_int_equal(initramfs_add_dir(c, "dev", 0755), 0);
    assert_int_equal(initramfs_add_chardev(c, "dev/console", 0600, 5, 1), 0);
    assert_int_equal(initramfs_add_dir(c, "tmp", 01777), 0);
}

static void check_sample(const uint8_t *buf, size_t len)
{
    struct entry es[16];
    size_t n = parse_newc(buf, len, es, 16);
    assert_int_equal(n, 10);
    assert_string_equal(es[0].name, "etc"); /* order kept; leading '/' dropped */
    assert_int_equal(es[0].mode, S_IFDIR | 0755);
    assert_int_equal(es[0].nlink, 2);
    const struct entry *e = find(es, n, "etc/motd");
    assert_int_equal(e->mode, S_IFREG | 0644);
    assert_int_equal(e->size, strlen(file_data));
    assert_memory_equal(e->data, file_data, strlen(file_data));
    assert_int_equal(e->uid, 0);
    assert_int_equal(e->nlink, 1);
    assert_int_equal(find(es, n, "etc/empty")->size, 0);
    assert_memory_equal(find(es, n, "etc/ab")->data, "12", 2);
    assert_int_equal(find(es, n, "etc/abc")->mode, S_IFREG | 04755);
    e = find(es, n, "etc/link");
    assert_int_equal(e->mode, S_IFLNK | 0777);
    assert_int_equal(e->size, 4);
    assert_memory_equal(e->data, "motd", 4);
    e = find(es, n, "dev/console");
    assert_int_equal(e->mode, S_IFCHR | 0600);
    assert_int_equal(e->rmaj, 5);
    assert_int_equal(e->rmin, 1);
    assert_int_equal(e->size, 0);
    assert_int_equal(find(es, n, "tmp")->mode, S_IFDIR | 01777);
}

static void test_plain(void **state)
{
    (void)state;
    struct initramfs c;
    build_sample(&c);
    uint8_t *out;
    size_t len;
    assert_int_equal(initramfs_finish(&c, INITRAMFS_UNCOMPRESSED, &out, &len), 0);
    assert_null(c.buf);
    check_sample(out, len);
    free(out);
}

static void test_gzip(void **state)
{
    (void)state;
    for (int level = 1; level <= 9; level += 8) {
        struct initramfs c;
        build_sample(&c);
        uint8_t *out;
        size_t len;
        assert_int_equal(initramfs_finish(&c, level, &out, &len), 0);
        size_t plen;
        uint8_t *plain = gunzip(out, len, &plen);
        check_sample(plain, plen);
        free(plain);
        free(out);
    }
}

static void test_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {"",  "/",    "//", "a/../b", "..",
                                      ".", "a//b", "a/", "./a",    "a/."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct initramfs c;
        initramfs_init(&c, 0);
        assert_int_equal(initramfs_add_dir(&c, bad[i], 0755), SBX_EINVAL);
        initramfs_free(&c);
    }
    struct initramfs c;
    initramfs_init(&c, 0);
    assert_int_equal(initramfs_add_dir(&c, "ok", 0755), 0);
    assert_int_equal(initramfs_add_dir(&c, "x", 0100755), SBX_EINVAL); /* type bits */
    /* The first error sticks: later valid adds and finish report it. */
    assert_int_equal(initramfs_add_dir(&c, "fine", 0755), SBX_EINVAL);
    uint8_t *out = (uint8_t *)"x";
    size_t len = 1;
    assert_int_equal(initramfs_finish(&c, 1, &out, &len), SBX_EINVAL);
    assert_null(out);
    assert_int_equal(len, 0);

    initramfs_init(&c, 0);
    assert_int_equal(initramfs_add_chardev(&c, "d", 0600, 4096, 0), SBX_EINVAL);
    initramfs_free(&c);
    initramfs_init(&c, 0);
    assert_int_equal(initramfs_add_symlink(&c, "l", ""), SBX_EINVAL);
    initramfs_free(&c);
    initramfs_init(&c, 0);
    assert_int_equal(initramfs_add_file(&c, "f", 0644, NULL, 5), SBX_EINVAL);
    initramfs_free(&c);
    char longname[INITRAMFS_PATH_MAX + 1];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    initramfs_init(&c, 0);
    assert_int_equal(initramfs_add_dir(&c, longname, 0755), SBX_EINVAL);
    initramfs_free(&c);
    /* Bad level. */
    initramfs_init(&c, 0);
    assert_int_equal(initramfs_finish(&c, 10, &out, &len), SBX_EINVAL);
    initramfs_init(&c, 0);
    assert_int_equal(initramfs_finish(&c, -1, &out, &len), SBX_EINVAL);
}

static void test_cap(void **state)
{
    (void)state;
    struct initramfs c;
    initramfs_init(&c, 1024);
    static uint8_t big[2048];
    assert_int_equal(initramfs_add_file(&c, "small", 0644, big, 100), 0);
    assert_int_equal(initramfs_add_file(&c, "big", 0644, big, 1000), SBX_EINVAL);
    initramfs_free(&c);
    /* Room for entries but not the trailer. */
    initramfs_init(&c, 240);
    assert_int_equal(initramfs_add_file(&c, "f", 0644, big, 120 - 112 + 8), 0);
    uint8_t *out;
    size_t len;
    assert_int_equal(initramfs_finish(&c, INITRAMFS_UNCOMPRESSED, &out, &len), SBX_EINVAL);
    assert_null(out);
}

static void test_envd_image(void **state)
{
    (void)state;
    size_t blob = (size_t)(sbx_envd_blob_end - sbx_envd_blob);
    assert_true(blob > 1000);
    assert_memory_equal(sbx_envd_blob, "\177ELF", 4);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint8_t *out;
    size_t len;
    assert_int_equal(initramfs_build_envd(&out, &len), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;

    /* Plain or gzip, whichever initramfs_build_envd chose. */
    size_t plen = len;
    uint8_t *plain = out;
    if (len >= 2 && out[0] == 0x1f && out[1] == 0x8b)
        plain = gunzip(out, len, &plen);
    struct entry es[16];
    size_t n = parse_newc(plain, plen, es, 16);
    assert_int_equal(n, 8);
    const struct entry *e = find(es, n, "init");
    assert_int_equal(e->mode, S_IFREG | 0755);
    assert_int_equal(e->size, blob);
    assert_memory_equal(e->data, sbx_envd_blob, blob);
    e = find(es, n, "dev/console");
    assert_int_equal(e->mode, S_IFCHR | 0600);
    assert_int_equal(e->rmaj, 5);
    assert_int_equal(e->rmin, 1);
    e = find(es, n, "dev/null");
    assert_int_equal(e->mode, S_IFCHR | 0666);
    assert_int_equal(e->rmaj, 1);
    assert_int_equal(e->rmin, 3);
    static const char *const dirs[] = {"dev", "proc", "sys", "newroot", "tmp"};
    for (size_t i = 0; i < 5; i++)
        assert_true(S_ISDIR(find(es, n, dirs[i])->mode));
    /* dev precedes the nodes in it */
    assert_true(find(es, n, "dev") < find(es, n, "dev/console"));
    print_message("envd initramfs: %zu bytes (%s, envd %zu bytes), built in %.2f ms\n", len,
                  plain == out ? "plain cpio" : "gzip", blob, ms);

    /* What the alternatives would cost, for the record. */
    for (int level = 1; level <= 6; level += 5) {
        struct initramfs c;
        initramfs_init(&c, 0);
        initramfs_add_file(&c, "init", 0755, sbx_envd_blob, blob);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        uint8_t *gz;
        size_t gzlen;
        assert_int_equal(initramfs_finish(&c, level, &gz, &gzlen), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        size_t ulen;
        uint8_t *u = gunzip(gz, gzlen, &ulen);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ums =
            (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        print_message("  gzip -%d: %zu bytes, compress %.2f ms, decompress %.2f ms\n", level, gzlen,
                      ms, ums);
        free(u);
        free(gz);
    }
    if (plain != out)
        free(plain);
    free(out);
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The format as an independent reader sees it: GNU cpio extracts and lists our archives. */
static void test_cpio_tool(void **state)
{
    (void)state;
    if (run("command -v cpio >/dev/null 2>&1") != 0) {
        print_message("cpio not installed (scripts/install-deps): skipping\n");
        skip();
    }
    char dir[] = "/tmp/sbx-initramfs-XXXXXX";
    assert_non_null(mkdtemp(dir));
    /* Device nodes need privileges the test may not have: extract an archive without. */
    struct initramfs c;
    initramfs_init(&c, 0);
    initramfs_add_dir(&c, "etc", 0750);
    initramfs_add_file(&c, "etc/motd", 0640, file_data, strlen(file_data));
    initramfs_add_file(&c, "etc/abc", 0755, "123", 3);
    initramfs_add_symlink(&c, "etc/link", "motd");
    uint8_t *out;
    size_t len;
    assert_int_equal(initramfs_finish(&c, INITRAMFS_UNCOMPRESSED, &out, &len), 0);
    char path[256], cmd[512];
    snprintf(path, sizeof(path), "%s/a.cpio", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(out, 1, len, f), len);
    fclose(f);
    free(out);
    snprintf(cmd, sizeof(cmd), "cd %s && mkdir x && cd x && cpio -idm --quiet < ../a.cpio", dir);
    assert_int_equal(run(cmd), 0);

    struct stat st;
    snprintf(path, sizeof(path), "%s/x/etc", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0750);
    snprintf(path, sizeof(path), "%s/x/etc/motd", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
    assert_int_equal(st.st_size, strlen(file_data));
    char got[64] = {0};
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fread(got, 1, sizeof(got), f), strlen(file_data));
    fclose(f);
    assert_string_equal(got, file_data);
    snprintf(path, sizeof(path), "%s/x/etc/link", dir);
    char target[64] = {0};
    assert_int_equal(readlink(path, target, sizeof(target) - 1), 4);
    assert_string_equal(target, "motd");

    /* The real image, listed (-t) with its device nodes. */
    assert_int_equal(initramfs_build_envd(&out, &len), 0);
    assert_false(len >= 2 && out[0] == 0x1f && out[1] == 0x8b);
    snprintf(path, sizeof(path), "%s/envd.cpio", dir);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(out, 1, len, f), len);
    fclose(f);
    free(out);
    snprintf(cmd, sizeof(cmd),
             "cd %s && cpio -itv --quiet < envd.cpio > list && "
             "grep -q '^crw------- .* 5, *1 .* dev/console$' list && "
             "grep -q '^crw-rw-rw- .* 1, *3 .* dev/null$' list && "
             "grep -q '^-rwxr-xr-x .* init$' list && grep -q '^drwxrwxrwt .* tmp$' list && "
             "test $(wc -l < list) -eq 8",
             dir);
    int r = run(cmd);
    if (r != 0) {
        snprintf(cmd, sizeof(cmd), "cat %s/list", dir);
        run(cmd);
    }
    assert_int_equal(r, 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    run(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),      cmocka_unit_test(test_gzip),
        cmocka_unit_test(test_bad_input),  cmocka_unit_test(test_cap),
        cmocka_unit_test(test_envd_image), cmocka_unit_test(test_cpio_tool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
