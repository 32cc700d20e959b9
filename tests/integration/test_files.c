// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of files, copies and watches: round trips, ownership, a 1 GiB file,
   ENOSPC on a small disk, watches and tree copies, all through the public API. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "../common/testdata.h"

static sbx *boot(const char *rootfs)
{
    sbx_options o = itest_options(rootfs);
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    return sb;
}

SBX_TEST(round_trip_stat_list_errors)
{
    sbx *sb = boot("base");
    /* Binary data with NULs and invalid UTF-8, parents created. */
    uint8_t bin[70000]; /* more than one FileData frame */
    struct prng p = {1};
    prng_fill(&p, bin, sizeof(bin));
    bin[0] = 0;
    bin[1] = 0xff;
    CHECK_OK(sb, sbx_write_file(sb, "/srv/a/b/data.bin", bin, sizeof(bin), 0600));
    void *data;
    size_t len;
    CHECK_OK(sb, sbx_read_file(sb, "/srv/a/b/data.bin", &data, &len, 0));
    CHECK(len == sizeof(bin) && memcmp(data, bin, len) == 0);
    free(data);
    /* Empty file; the guest's own files are readable. */
    CHECK_OK(sb, sbx_write_file(sb, "/srv/empty", "", 0, 0));
    CHECK_OK(sb, sbx_read_file(sb, "/srv/empty", &data, &len, 0));
    CHECK(len == 0);
    free(data);
    CHECK_OK(sb, sbx_read_file(sb, "/etc/os-release", &data, &len, 0));
    CHECK(strstr(data, "Debian") != NULL);
    free(data);
    /* /proc files report size 0 but have content. */
    CHECK_OK(sb, sbx_read_file(sb, "/proc/self/status", &data, &len, 0));
    CHECK(len > 100 && strstr(data, "Name:") != NULL);
    free(data);

    sbx_entry e;
    CHECK_OK(sb, sbx_stat(sb, "/srv/a/b/data.bin", &e));
    CHECK(e.type == SBX_TYPE_FILE && e.size == sizeof(bin) && e.mode == 0600);
    CHECK(strcmp(e.name, "data.bin") == 0 && strcmp(e.path, "/srv/a/b/data.bin") == 0);
    CHECK(e.mtime_ns > 1600000000ll * 1000000000ll);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_stat(sb, "/bin", &e)); /* a symlink in Debian bookworm */
    CHECK(e.type == SBX_TYPE_SYMLINK && strcmp(e.symlink_target, "usr/bin") == 0);
    sbx_entry_clear(&e);

    sbx_entry *list;
    size_t n;
    CHECK_OK(sb, sbx_list(sb, "/srv", 3, &list, &n));
    CHECK(n == 4);
    CHECK(strcmp(list[0].path, "/srv/a") == 0 && list[0].type == SBX_TYPE_DIR);
    CHECK(strcmp(list[1].path, "/srv/a/b") == 0);
    CHECK(strcmp(list[2].path, "/srv/a/b/data.bin") == 0);
    CHECK(strcmp(list[3].path, "/srv/empty") == 0);
    sbx_entries_free(list, n);
    CHECK_OK(sb, sbx_list(sb, "/usr/bin", 1, &list, &n)); /* hundreds of entries */
    CHECK(n > 100);
    sbx_entries_free(list, n);

    CHECK_RC(sb, sbx_mkdir(sb, "/srv/a/b", 0), 1);
    CHECK_RC(sb, sbx_mkdir(sb, "/srv/new/dir", 0), 0);
    CHECK_RC(sb, sbx_exists(sb, "/srv/new/dir"), 1);
    CHECK_OK(sb, sbx_rename(sb, "/srv/empty", "/srv/moved/here"));
    CHECK_RC(sb, sbx_exists(sb, "/srv/empty"), 0);
    CHECK_RC(sb, sbx_exists(sb, "/srv/moved/here"), 1);

    /* Each guest error has its code. */
    CHECK_RC(sb, sbx_read_file(sb, "/srv/nope", &data, &len, 0), SBX_ENOENT);
    CHECK_RC(sb, sbx_write_file(sb, "/srv/moved/here/x", "x", 1, 0), SBX_ENOTDIR);
    CHECK_RC(sb, sbx_read_file(sb, "/srv/a", &data, &len, 0), SBX_EISDIR);
    CHECK_RC(sb, sbx_mkdir(sb, "/srv/moved/here", 0), SBX_EEXIST);
    CHECK_RC(sb, sbx_remove(sb, "/srv/a", 0), SBX_ENOTEMPTY);
    CHECK_RC(sb, sbx_remove(sb, "/proc/version", 0), SBX_EACCES); /* even for root */
    CHECK_RC(sb, sbx_read_file(sb, "/srv/a/b/data.bin", &data, &len, 100), SBX_ENOMEM);
    CHECK(strstr(sbx_errmsg(sb), "too large") != NULL);
    CHECK_OK(sb, sbx_remove(sb, "/srv/a", 1));
    CHECK_RC(sb, sbx_exists(sb, "/srv/a"), 0);
    sbx_destroy(sb);
}

SBX_TEST(ownership)
{
    sbx *sb = boot("base");
    /* The default user `user` owns what the calls create, and relative paths are in its
       home. */
    CHECK_OK(sb, sbx_write_file(sb, "notes/today.txt", "hello", 5, 0));
    sbx_entry e;
    CHECK_OK(sb, sbx_stat(sb, "/home/user/notes/today.txt", &e));
    CHECK(e.uid == 1000 && e.gid == 1000 && strcmp(e.owner, "user") == 0 &&
          strcmp(e.group, "user") == 0 && e.mode == 0644);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_stat(sb, "/home/user/notes", &e)); /* a created parent */
    CHECK(e.uid == 1000 && e.type == SBX_TYPE_DIR);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_mkdir(sb, "/opt/tool/bin", 0750));
    CHECK_OK(sb, sbx_stat(sb, "/opt/tool/bin", &e));
    CHECK(e.uid == 1000 && e.mode == 0750);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_stat(sb, "/opt", &e)); /* existing: untouched */
    CHECK(e.uid == 0);
    sbx_entry_clear(&e);
    /* Another owner by name; replacing a root-owned file keeps it atomic and re-owned. */
    sbx_file_options o = SBX_FILE_OPTIONS_INIT;
    o.user = "root";
    o.mode = 0600;
    sbx_file *f;
    CHECK_OK(sb, sbx_file_create(sb, "/etc/sbx-test.conf", &o, &f));
    CHECK_OK(sb, sbx_file_write(f, "a=1\n", 4));
    CHECK_OK(sb, sbx_file_commit(f));
    CHECK_OK(sb, sbx_stat(sb, "/etc/sbx-test.conf", &e));
    CHECK(e.uid == 0 && strcmp(e.owner, "root") == 0 && e.mode == 0600);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_write_file(sb, "/etc/sbx-test.conf", "a=2\n", 4, 0));
    CHECK_OK(sb, sbx_stat(sb, "/etc/sbx-test.conf", &e));
    CHECK(e.uid == 1000);
    sbx_entry_clear(&e);
    o.user = "nobody-here";
    CHECK_OK(sb, sbx_file_create(sb, "/tmp/x", &o, &f));
    int r = sbx_file_write(f, "x", 1);
    CHECK_RC(sb, r == 0 ? sbx_file_commit(f) : (sbx_file_close(f), r), SBX_ENOENT);
    /* Even root may not write where the kernel refuses. */
    CHECK_RC(sb, sbx_write_file(sb, "/sys/kernel/sbx", "x", 1, 0), SBX_EACCES);
    sbx_destroy(sb);
}

SBX_TEST(one_gib_round_trip)
{
    /* The root filesystem (a copy-on-write overlay of the 2 GiB base image) has the room. */
    sbx *sb = boot("base");
    /* 1 GiB; SBX_TEST_BIG_FILE_MIB overrides (docs/testing.md). */
    const char *mib = getenv("SBX_TEST_BIG_FILE_MIB");
    const uint64_t total = (mib && atoi(mib) > 0 ? (uint64_t)atoi(mib) : 1024) << 20;
    fprintf(stderr, "round trip of %llu MiB\n", (unsigned long long)(total >> 20));
    static uint8_t buf[1 << 20];
    struct prng p = {12345};
    uint64_t hw = FNV_INIT;
    sbx_file *f;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_file_create(sb, "/home/user/big.bin", NULL, &f));
    for (uint64_t done = 0; done < total; done += sizeof(buf)) {
        prng_fill(&p, buf, sizeof(buf));
        hw = fnv(hw, buf, sizeof(buf));
        CHECK_OK(sb, sbx_file_write(f, buf, sizeof(buf)));
    }
    CHECK_OK(sb, sbx_file_commit(f));
    double t1 = itest_ms();
    sbx_entry e;
    CHECK_OK(sb, sbx_stat(sb, "/home/user/big.bin", &e));
    CHECK(e.size == total);
    sbx_entry_clear(&e);
    uint64_t size, got = 0, hr = FNV_INIT;
    CHECK_OK(sb, sbx_file_open(sb, "/home/user/big.bin", 0, 0, &f, &size));
    CHECK(size == total);
    int n;
    while ((n = sbx_file_read(f, buf, sizeof(buf))) > 0) {
        hr = fnv(hr, buf, (size_t)n);
        got += (uint64_t)n;
    }
    CHECK_RC(sb, n, 0);
    sbx_file_close(f);
    double t2 = itest_ms();
    CHECK(got == total && hr == hw);
    fprintf(stderr, "write %.1f MiB/s, read %.1f MiB/s\n",
            (double)(total >> 20) / ((t1 - t0) / 1e3), (double)(total >> 20) / ((t2 - t1) / 1e3));
    /* A range from the middle. */
    CHECK_OK(sb, sbx_file_open(sb, "/home/user/big.bin", total / 2, 10, &f, NULL));
    uint8_t mid[16];
    CHECK_RC(sb, sbx_file_read(f, mid, sizeof(mid)), 10);
    CHECK_RC(sb, sbx_file_read(f, mid, sizeof(mid)), 0);
    sbx_file_close(f);
    sbx_destroy(sb);
}

SBX_TEST(no_space_on_small_disk)
{
    /* The test image is a 64 MiB ext4 disk with about 50 MiB free. */
    sbx *sb = boot("test");
    sbx_file *f;
    CHECK_OK(sb, sbx_file_create(sb, "/root/fill", NULL, &f));
    static uint8_t buf[1 << 20];
    memset(buf, 0xab, sizeof(buf));
    int r = 0, i;
    for (i = 0; i < 200 && r == 0; i++)
        r = sbx_file_write(f, buf, sizeof(buf));
    fprintf(stderr, "write failed after %d MiB: %s\n", i, sbx_errmsg(sb));
    CHECK_RC(sb, r, SBX_ENOSPC);
    CHECK(i < 100); /* reported promptly, not after all 200 MiB */
    CHECK_RC(sb, sbx_file_commit(f), SBX_ENOSPC);
    /* The partial temporary file is gone, so the space is back and the target untouched. */
    CHECK_RC(sb, sbx_exists(sb, "/root/fill"), 0);
    sbx_entry *list;
    size_t n;
    CHECK_OK(sb, sbx_list(sb, "/root", 1, &list, &n));
    for (size_t k = 0; k < n; k++)
        CHECK(strstr(list[k].name, ".sbx-") == NULL);
    sbx_entries_free(list, n);
    static uint8_t ten[10 << 20];
    CHECK_OK(sb, sbx_write_file(sb, "/root/ten", ten, sizeof(ten), 0));
    /* One call, one error. */
    static uint8_t big[80 << 20];
    CHECK_RC(sb, sbx_write_file(sb, "/root/big", big, sizeof(big), 0), SBX_ENOSPC);
    CHECK(strstr(sbx_errmsg(sb), "No space") != NULL);
    CHECK_OK(sb, sbx_ping(sb, 0));
    sbx_destroy(sb);
}

/* Waits for event (op, name), skipping others. */
static void expect_event(sbx *sb, sbx_watch *w, int op, const char *prefix)
{
    for (int i = 0; i < 1000; i++) {
        sbx_watch_event ev;
        int r = sbx_watch_next(w, &ev, 20000);
        if (r)
            itest_fail(__FILE__, __LINE__, "waiting for %d %s: %s", op, prefix, sbx_errmsg(sb));
        if (ev.op == op && strncmp(ev.name, prefix, strlen(prefix)) == 0)
            return;
    }
    itest_fail(__FILE__, __LINE__, "event %d %s never came", op, prefix);
}

SBX_TEST(watch)
{
    sbx *sb = boot("base");
    CHECK_OK(sb, sbx_mkdir(sb, "/home/user/w/sub", 0));
    sbx_watch *w;
    CHECK_OK(sb, sbx_watch_open(sb, "w", 1, &w)); /* relative: in the user's home */
    sbx_watch_event ev;
    CHECK_RC(sb, sbx_watch_next(w, &ev, 0), SBX_EAGAIN);
    /* A write: a temporary file, written, chmod'ed and renamed into place. */
    CHECK_OK(sb, sbx_write_file(sb, "/home/user/w/a.txt", "1", 1, 0));
    struct pollfd pfd = {.fd = sbx_watch_fd(w), .events = POLLIN};
    CHECK(poll(&pfd, 1, 20000) == 1);
    expect_event(sb, w, SBX_WATCH_CREATE, ".a.txt.sbx-");
    expect_event(sb, w, SBX_WATCH_WRITE, ".a.txt.sbx-");
    expect_event(sb, w, SBX_WATCH_CHMOD, ".a.txt.sbx-");
    expect_event(sb, w, SBX_WATCH_RENAME, ".a.txt.sbx-");
    expect_event(sb, w, SBX_WATCH_CREATE, "a.txt");
    /* Appending writes in place. */
    sbx_file_options o = SBX_FILE_OPTIONS_INIT;
    o.append = 1;
    sbx_file *f;
    CHECK_OK(sb, sbx_file_create(sb, "/home/user/w/a.txt", &o, &f));
    CHECK_OK(sb, sbx_file_write(f, "2", 1));
    CHECK_OK(sb, sbx_file_commit(f));
    expect_event(sb, w, SBX_WATCH_WRITE, "a.txt");
    CHECK_OK(sb, sbx_rename(sb, "/home/user/w/a.txt", "/home/user/w/b.txt"));
    expect_event(sb, w, SBX_WATCH_RENAME, "a.txt");
    expect_event(sb, w, SBX_WATCH_CREATE, "b.txt");
    CHECK_OK(sb, sbx_remove(sb, "/home/user/w/b.txt", 0));
    expect_event(sb, w, SBX_WATCH_REMOVE, "b.txt");
    /* Recursive: an existing subdirectory and a new one. */
    CHECK_OK(sb, sbx_write_file(sb, "/home/user/w/sub/c", "3", 1, 0));
    expect_event(sb, w, SBX_WATCH_CREATE, "sub/c");
    CHECK_OK(sb, sbx_mkdir(sb, "/home/user/w/new", 0));
    expect_event(sb, w, SBX_WATCH_CREATE, "new");
    CHECK_OK(sb, sbx_write_file(sb, "/home/user/w/new/d", "4", 1, 0));
    expect_event(sb, w, SBX_WATCH_CREATE, "new/d");
    sbx_watch_close(w);
    /* Watching a missing directory fails; a removed one ends the watch. */
    CHECK_RC(sb, sbx_watch_open(sb, "/nonexistent", 0, &w), SBX_ENOENT);
    CHECK_OK(sb, sbx_watch_open(sb, "/home/user/w/new", 0, &w));
    CHECK_OK(sb, sbx_remove(sb, "/home/user/w/new", 1));
    int r;
    while ((r = sbx_watch_next(w, &ev, 20000)) == 0)
        ;
    CHECK_RC(sb, r, SBX_ENOENT);
    sbx_watch_close(w);
    sbx_destroy(sb);
}

static int count_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    *(uint64_t *)ctx = files;
    return 0;
}

SBX_TEST(copy_tree)
{
    sbx *sb = boot("base");
    /* A host tree in a temporary directory. */
    const char *anchor = itest_tmpfile("anchor", "", 0);
    char root[256], path[512];
    snprintf(root, sizeof(root), "%.*s", (int)(strrchr(anchor, '/') - anchor), anchor);
    snprintf(path, sizeof(path), "%s/src", root);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/src/bin", root);
    CHECK(mkdir(path, 0700) == 0);
    const char *names[] = {"src/readme", "src/bin/tool", "src/bin/data"};
    const unsigned modes[] = {0644, 0755, 0600};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/%s", root, names[i]);
        FILE *fp = fopen(path, "w");
        CHECK(fp != NULL);
        for (int k = 0; k < 1000 * (i + 1); k++)
            fprintf(fp, "%s line %d\n", names[i], k);
        fclose(fp);
        chmod(path, modes[i]);
    }
    snprintf(path, sizeof(path), "%s/src/link", root);
    CHECK(symlink("bin/tool", path) == 0);

    uint64_t files = 0;
    snprintf(path, sizeof(path), "%s/src", root);
    CHECK_OK(sb, sbx_copy_in(sb, path, "/home/user/project", count_progress, &files));
    CHECK(files == 4);
    sbx_entry e;
    CHECK_OK(sb, sbx_stat(sb, "/home/user/project/bin/tool", &e));
    CHECK(e.mode == 0755 && e.uid == 1000);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_stat(sb, "/home/user/project/bin", &e));
    CHECK(e.mode == 0700 && e.type == SBX_TYPE_DIR);
    sbx_entry_clear(&e);
    CHECK_OK(sb, sbx_stat(sb, "/home/user/project/link", &e));
    CHECK(e.type == SBX_TYPE_SYMLINK && strcmp(e.symlink_target, "bin/tool") == 0);
    sbx_entry_clear(&e);

    /* And back out, next to the original: identical contents and modes. */
    snprintf(path, sizeof(path), "%s/back", root);
    CHECK_OK(sb, sbx_copy_out(sb, "/home/user/project", path, NULL, NULL));
    for (int i = 0; i < 3; i++) {
        char a[512], b[512];
        snprintf(a, sizeof(a), "%s/%s", root, names[i]);
        snprintf(b, sizeof(b), "%s/back/%s", root, names[i] + 4);
        char cmd[1100];
        snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", a, b);
        CHECK(system(cmd) == 0);
        struct stat sa, sb2;
        CHECK(stat(a, &sa) == 0 && stat(b, &sb2) == 0 && sa.st_mode == sb2.st_mode);
    }
    char t[64];
    snprintf(path, sizeof(path), "%s/back/link", root);
    ssize_t k = readlink(path, t, sizeof(t));
    CHECK(k == 8 && memcmp(t, "bin/tool", 8) == 0);
    /* A guest directory of the system, out to the host. */
    snprintf(path, sizeof(path), "%s/apt", root);
    CHECK_OK(sb, sbx_copy_out(sb, "/etc/apt", path, NULL, NULL));
    snprintf(path, sizeof(path), "%s/apt/sources.list.d", root);
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    sbx_destroy(sb);
}

ITEST_MAIN(ITEST(round_trip_stat_list_errors), ITEST(ownership), ITEST(one_gib_round_trip),
           ITEST(no_space_on_small_disk), ITEST(watch), ITEST(copy_tree))
