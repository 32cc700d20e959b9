// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the file, copy and watch calls through the public API against the real envd
   running locally (same file system: the test checks results with ordinary syscalls). */
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
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "local_envd.h"
#include "sandbox.h"
#include "../common/testdata.h"

/* --- fixture: a local envd and a temporary directory ----------------------------------------- */

struct fx {
    sbx *sb;
    char dir[64];
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/sbx-files.XXXXXX");
    if (!mkdtemp(fx->dir) || local_envd_start(NULL, &fx->sb) != 0) {
        fprintf(stderr, "setup failed: %s\n", fx->sb ? sbx_errmsg(fx->sb) : "mkdtemp");
        return -1;
    }
    *state = fx;
    return 0;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    if (flag == FTW_DP || flag == FTW_D)
        chmod(p, 0700);
    return remove(p) == 0 ? 0 : 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    local_envd_stop(fx->sb);
    /* Make everything removable first (tests leave read-only directories behind). */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "chmod -R u+rwx %s 2>/dev/null; rm -rf %s", fx->dir, fx->dir);
    if (system(cmd) != 0)
        nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* fx->dir + "/" + rel in a static rotating buffer (several per expression). */
static const char *P(struct fx *fx, const char *rel)
{
    static char bufs[8][512];
    static int n;
    char *b = bufs[n++ % 8];
    snprintf(b, 512, "%s/%s", fx->dir, rel);
    return b;
}

static void host_write(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

static size_t host_read(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    size_t n = fread(buf, 1, cap, fp);
    fclose(fp);
    return n;
}

/* Peak resident memory (VmHWM, KiB) of a process. */
static long vm_hwm_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -1;
    long v = -1;
    while (fgets(line, sizeof(line), fp))
        if (sscanf(line, "VmHWM: %ld", &v) == 1)
            break;
    fclose(fp);
    return v;
}

/* The local envd: our child process (the only one). */
static pid_t envd_pid(void)
{
    DIR *d = opendir("/proc");
    pid_t found = -1;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *fp = fopen(path, "r");
        if (!fp)
            continue;
        if (fgets(buf, sizeof(buf), fp)) {
            char *rp = strrchr(buf, ')');
            int ppid;
            if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == getpid())
                found = atoi(de->d_name);
        }
        fclose(fp);
    }
    if (d)
        closedir(d);
    return found;
}

/* --- tests ------------------------------------------------------------------------------------ */

static void test_round_trip(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    /* Binary data with NULs and invalid UTF-8. */
    uint8_t bin[3000];
    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (uint8_t)(i * 7 + (i >> 8));
    bin[0] = 0;
    bin[1] = 0xff;
    assert_int_equal(sbx_write_file(sb, P(fx, "bin"), bin, sizeof(bin), 0), 0);
    void *data;
    size_t len;
    assert_int_equal(sbx_read_file(sb, P(fx, "bin"), &data, &len, 0), 0);
    assert_int_equal(len, sizeof(bin));
    assert_memory_equal(data, bin, sizeof(bin));
    assert_int_equal(((char *)data)[len], 0);
    free(data);
    char hb[4000];
    assert_int_equal(host_read(P(fx, "bin"), hb, sizeof(hb)), sizeof(bin));
    assert_memory_equal(hb, bin, sizeof(bin));
    struct stat st;
    assert_int_equal(stat(P(fx, "bin"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);

    /* Empty file. */
    assert_int_equal(sbx_write_file(sb, P(fx, "empty"), "", 0, 0600), 0);
    assert_int_equal(sbx_read_file(sb, P(fx, "empty"), &data, &len, 0), 0);
    assert_int_equal(len, 0);
    assert_non_null(data);
    free(data);
    assert_int_equal(stat(P(fx, "empty"), &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* Parents created, exact mode (not masked by the umask). */
    assert_int_equal(sbx_write_file(sb, P(fx, "a/b/c/file.sh"), "#!/bin/sh\n", 10, 0775), 0);
    assert_int_equal(stat(P(fx, "a/b/c/file.sh"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0775);
    assert_int_equal(stat(P(fx, "a/b"), &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* Replace keeps no temporary files behind. */
    assert_int_equal(sbx_write_file(sb, P(fx, "bin"), "new", 3, 0), 0);
    assert_int_equal(host_read(P(fx, "bin"), hb, sizeof(hb)), 3);
    DIR *d = opendir(fx->dir);
    struct dirent *de;
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, ".sbx-"));
    closedir(d);

    /* Reading a range; the size is the whole file's. */
    assert_int_equal(sbx_write_file(sb, P(fx, "abc"), "0123456789", 10, 0), 0);
    sbx_file *f;
    uint64_t size;
    assert_int_equal(sbx_file_open(sb, P(fx, "abc"), 3, 4, &f, &size), 0);
    assert_int_equal(size, 10);
    char buf[16];
    int n = sbx_file_read(f, buf, sizeof(buf));
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "3456", 4);
    assert_int_equal(sbx_file_read(f, buf, sizeof(buf)), 0);
    sbx_file_close(f);
    assert_int_equal(sbx_file_open(sb, P(fx, "abc"), 8, 0, &f, NULL), 0);
    assert_int_equal(sbx_file_read(f, buf, 1), 1);
    assert_int_equal(buf[0], '8');
    assert_int_equal(sbx_file_read(f, buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], '9');
    assert_int_equal(sbx_file_read(f, buf, sizeof(buf)), 0);
    sbx_file_close(f);

    /* Append in place. */
    sbx_file_options o = SBX_FILE_OPTIONS_INIT;
    o.append = 1;
    assert_int_equal(sbx_file_create(sb, P(fx, "abc"), &o, &f), 0);
    assert_int_equal(sbx_file_write(f, "ab", 2), 0);
    assert_int_equal(sbx_file_commit(f), 0);
    assert_int_equal(host_read(P(fx, "abc"), hb, sizeof(hb)), 12);
    assert_memory_equal(hb, "0123456789ab", 12);
    assert_int_equal(sbx_file_create(sb, P(fx, "new-append"), &o, &f), 0);
    assert_int_equal(sbx_file_write(f, "x", 1), 0);
    assert_int_equal(sbx_file_commit(f), 0);
    assert_int_equal(host_read(P(fx, "new-append"), hb, sizeof(hb)), 1);

    /* Relative paths are taken from the default user's home; a bad user is ENOENT. */
    o = (sbx_file_options)SBX_FILE_OPTIONS_INIT;
    o.user = "no-such-user-xyz";
    assert_int_equal(sbx_file_create(sb, P(fx, "u"), &o, &f), 0);
    int r = sbx_file_write(f, "x", 1);
    if (r == 0)
        r = sbx_file_commit(f);
    else
        sbx_file_close(f);
    assert_int_equal(r, SBX_ENOENT);
    assert_non_null(strstr(sbx_errmsg(sb), "no-such-user-xyz"));
    assert_int_equal(access(P(fx, "u"), F_OK), -1);
}

static void test_atomic_replace(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    host_write(P(fx, "t"), "old contents", 12);
    sbx_file *f;
    assert_int_equal(sbx_file_create(sb, P(fx, "t"), NULL, &f), 0);
    static uint8_t big[1 << 20];
    memset(big, 'N', sizeof(big));
    for (int i = 0; i < 4; i++)
        assert_int_equal(sbx_file_write(f, big, sizeof(big)), 0);
    /* Mid-write the target is still the old file, whole. */
    assert_int_equal(sbx_ping(sb, 5000), 0);
    char hb[64];
    assert_int_equal(host_read(P(fx, "t"), hb, sizeof(hb)), 12);
    assert_memory_equal(hb, "old contents", 12);
    assert_int_equal(sbx_file_commit(f), 0);
    struct stat st;
    assert_int_equal(stat(P(fx, "t"), &st), 0);
    assert_int_equal(st.st_size, 4 << 20);

    /* An abandoned write leaves the target and no temporary file. */
    assert_int_equal(sbx_file_create(sb, P(fx, "t"), NULL, &f), 0);
    assert_int_equal(sbx_file_write(f, "partial", 7), 0);
    sbx_file_close(f);
    assert_int_equal(sbx_ping(sb, 5000), 0);
    for (int i = 0; i < 100; i++) { /* envd notices the close asynchronously */
        bool tmp_left = false;
        DIR *d = opendir(fx->dir);
        struct dirent *de;
        while ((de = readdir(d)))
            tmp_left |= strstr(de->d_name, ".sbx-") != NULL;
        closedir(d);
        if (!tmp_left)
            break;
        assert_true(i < 99);
        usleep(20000);
    }
    assert_int_equal(stat(P(fx, "t"), &st), 0);
    assert_int_equal(st.st_size, 4 << 20);
}

static void test_stat_list(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    host_write(P(fx, "f"), "12345", 5);
    chmod(P(fx, "f"), 0640);
    struct timespec ts[2] = {{1600000000, 123456789}, {1600000000, 123456789}};
    assert_int_equal(utimensat(AT_FDCWD, P(fx, "f"), ts, 0), 0);
    assert_int_equal(symlink("f", P(fx, "link")), 0);
    assert_int_equal(mkdir(P(fx, "d"), 0750), 0);
    assert_int_equal(mkdir(P(fx, "d/e"), 0755), 0);
    host_write(P(fx, "d/e/deep"), "x", 1);
    host_write(P(fx, "d/g"), "yy", 2);
    assert_int_equal(symlink(fx->dir, P(fx, "d/loop")), 0); /* a symlink to a directory */

    sbx_entry e;
    assert_int_equal(sbx_stat(sb, P(fx, "f"), &e), 0);
    assert_string_equal(e.name, "f");
    assert_string_equal(e.path, P(fx, "f"));
    assert_int_equal(e.type, SBX_TYPE_FILE);
    assert_int_equal(e.size, 5);
    assert_int_equal(e.mode, 0640);
    assert_int_equal(e.uid, getuid());
    assert_true(e.mtime_ns == 1600000000123456789ll);
    assert_non_null(e.owner);
    assert_true(e.owner[0] != '\0');
    assert_null(e.symlink_target);
    sbx_entry_clear(&e);
    assert_null(e.name);

    assert_int_equal(sbx_stat(sb, P(fx, "link"), &e), 0);
    assert_int_equal(e.type, SBX_TYPE_SYMLINK);
    assert_string_equal(e.symlink_target, "f");
    sbx_entry_clear(&e);
    /* Trailing slashes are ignored. */
    char withslash[600];
    snprintf(withslash, sizeof(withslash), "%s/d//", fx->dir);
    assert_int_equal(sbx_stat(sb, withslash, &e), 0);
    assert_int_equal(e.type, SBX_TYPE_DIR);
    assert_int_equal(e.mode, 0750);
    assert_string_equal(e.name, "d");
    sbx_entry_clear(&e);

    assert_int_equal(sbx_exists(sb, P(fx, "f")), 1);
    assert_int_equal(sbx_exists(sb, P(fx, "nope")), 0);
    assert_int_equal(sbx_exists(sb, P(fx, "f/below")), 0);

    /* depth 1: entries only, sorted. */
    sbx_entry *list;
    size_t n;
    assert_int_equal(sbx_list(sb, fx->dir, 0, &list, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(list[0].name, "d");
    assert_string_equal(list[1].name, "f");
    assert_string_equal(list[2].name, "link");
    assert_int_equal(list[2].type, SBX_TYPE_SYMLINK);
    assert_string_equal(list[2].symlink_target, "f");
    sbx_entries_free(list, n);
    /* depth 2 and 3: parents before children; the symlinked directory is not entered. */
    assert_int_equal(sbx_list(sb, fx->dir, 2, &list, &n), 0);
    assert_int_equal(n, 6);
    assert_string_equal(list[0].path, P(fx, "d"));
    assert_string_equal(list[1].path, P(fx, "d/e"));
    assert_string_equal(list[2].path, P(fx, "d/g"));
    assert_string_equal(list[3].path, P(fx, "d/loop"));
    assert_int_equal(list[3].type, SBX_TYPE_SYMLINK);
    assert_string_equal(list[4].path, P(fx, "f"));
    sbx_entries_free(list, n);
    assert_int_equal(sbx_list(sb, fx->dir, 10, &list, &n), 0);
    assert_int_equal(n, 7);
    assert_string_equal(list[2].path, P(fx, "d/e/deep"));
    sbx_entries_free(list, n);

    /* Many entries: several ListReply batches. */
    assert_int_equal(mkdir(P(fx, "many"), 0755), 0);
    for (int i = 0; i < 2500; i++) {
        char rel[64];
        snprintf(rel, sizeof(rel), "many/f%05d", i);
        host_write(P(fx, rel), "", 0);
    }
    assert_int_equal(sbx_list(sb, P(fx, "many"), 1, &list, &n), 0);
    assert_int_equal(n, 2500);
    assert_string_equal(list[0].name, "f00000");
    assert_string_equal(list[2499].name, "f02499");
    sbx_entries_free(list, n);
    /* The connection is still in step after a multi-frame stream. */
    assert_int_equal(sbx_exists(sb, P(fx, "many/f00001")), 1);
}

static void test_mkdir_remove_rename(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    assert_int_equal(sbx_mkdir(sb, P(fx, "x/y/z"), 0700), 0);
    struct stat st;
    assert_int_equal(stat(P(fx, "x/y/z"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(P(fx, "x/y"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    assert_int_equal(sbx_mkdir(sb, P(fx, "x/y/z"), 0), 1);
    assert_int_equal(sbx_mkdir(sb, P(fx, "x/y"), 0), 1);

    host_write(P(fx, "x/y/z/f1"), "1", 1);
    host_write(P(fx, "x/y/f2"), "2", 1);
    assert_int_equal(symlink("/", P(fx, "x/root-link")), 0);
    assert_int_equal(mkdir(P(fx, "keep"), 0755), 0);
    host_write(P(fx, "keep/precious"), "p", 1);
    assert_int_equal(symlink(P(fx, "keep"), P(fx, "x/y/keep-link")), 0);

    /* Rename (creating the target's parents), replacing a file. */
    host_write(P(fx, "victim"), "v", 1);
    assert_int_equal(sbx_rename(sb, P(fx, "x/y/f2"), P(fx, "victim")), 0);
    char hb[8];
    assert_int_equal(host_read(P(fx, "victim"), hb, sizeof(hb)), 1);
    assert_int_equal(hb[0], '2');
    assert_int_equal(sbx_rename(sb, P(fx, "victim"), P(fx, "new/parent/moved")), 0);
    assert_int_equal(access(P(fx, "new/parent/moved"), F_OK), 0);

    /* Remove: a file, an empty directory, then a tree (never through its symlinks). */
    assert_int_equal(sbx_remove(sb, P(fx, "new/parent/moved"), 0), 0);
    assert_int_equal(sbx_remove(sb, P(fx, "new/parent"), 0), 0);
    assert_int_equal(access(P(fx, "new/parent"), F_OK), -1);
    assert_int_equal(sbx_remove(sb, P(fx, "x"), 0), SBX_ENOTEMPTY);
    assert_int_equal(sbx_remove(sb, P(fx, "x"), 1), 0);
    assert_int_equal(access(P(fx, "x"), F_OK), -1);
    assert_int_equal(access(P(fx, "keep/precious"), F_OK), 0);
    assert_int_equal(access("/", F_OK), 0);
    assert_int_equal(sbx_remove(sb, "/", 1), SBX_EINVAL);
}

static void test_errors(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    host_write(P(fx, "file"), "x", 1);
    assert_int_equal(mkdir(P(fx, "dir"), 0755), 0);
    host_write(P(fx, "dir/inside"), "x", 1);
    void *data;
    size_t len;
    sbx_entry e;
    sbx_entry *list;
    size_t n;
    sbx_file *f;

    /* ENOENT */
    assert_int_equal(sbx_read_file(sb, P(fx, "missing"), &data, &len, 0), SBX_ENOENT);
    assert_non_null(strstr(sbx_errmsg(sb), "missing"));
    assert_int_equal(sbx_stat(sb, P(fx, "missing"), &e), SBX_ENOENT);
    assert_int_equal(sbx_list(sb, P(fx, "missing"), 1, &list, &n), SBX_ENOENT);
    assert_int_equal(sbx_remove(sb, P(fx, "missing"), 1), SBX_ENOENT);
    assert_int_equal(sbx_rename(sb, P(fx, "missing"), P(fx, "other")), SBX_ENOENT);
    assert_int_equal(access(P(fx, "other"), F_OK), -1);
    /* ENOTDIR */
    assert_int_equal(sbx_write_file(sb, P(fx, "file/sub"), "x", 1, 0), SBX_ENOTDIR);
    assert_int_equal(sbx_write_file(sb, P(fx, "file/sub/deeper"), "x", 1, 0), SBX_ENOTDIR);
    assert_int_equal(sbx_list(sb, P(fx, "file"), 1, &list, &n), SBX_ENOTDIR);
    assert_int_equal(sbx_mkdir(sb, P(fx, "file/sub"), 0), SBX_ENOTDIR);
    assert_int_equal(sbx_stat(sb, P(fx, "file/sub"), &e), SBX_ENOTDIR);
    /* EISDIR */
    assert_int_equal(sbx_read_file(sb, P(fx, "dir"), &data, &len, 0), SBX_EISDIR);
    assert_int_equal(sbx_write_file(sb, P(fx, "dir"), "x", 1, 0), SBX_EISDIR);
    assert_int_equal(sbx_rename(sb, P(fx, "file"), P(fx, "dir")), SBX_EISDIR);
    /* EEXIST */
    assert_int_equal(sbx_mkdir(sb, P(fx, "file"), 0), SBX_EEXIST);
    /* ENOTEMPTY */
    assert_int_equal(sbx_remove(sb, P(fx, "dir"), 0), SBX_ENOTEMPTY);
    /* EACCES: as an ordinary user a directory without permissions; as root (which ignores
       them) what even root may not do. */
    if (geteuid() != 0) {
        assert_int_equal(mkdir(P(fx, "closed"), 0000), 0);
        assert_int_equal(sbx_write_file(sb, P(fx, "closed/x"), "x", 1, 0), SBX_EACCES);
        assert_int_equal(sbx_list(sb, P(fx, "closed"), 1, &list, &n), SBX_EACCES);
    } else {
        assert_int_equal(sbx_remove(sb, "/proc/version", 0), SBX_EACCES);
        assert_int_equal(sbx_write_file(sb, "/sys/kernel/sbx-test", "x", 1, 0), SBX_EACCES);
    }
    assert_non_null(strstr(sbx_errmsg(sb), "ermission"));
    /* Not a regular file. */
    assert_int_equal(sbx_read_file(sb, "/dev/null", &data, &len, 0), SBX_EINVAL);
    /* Too large for the cap. */
    assert_int_equal(sbx_read_file(sb, P(fx, "file"), &data, &len, 1), 0);
    free(data);
    host_write(P(fx, "ten"), "0123456789", 10);
    assert_int_equal(sbx_read_file(sb, P(fx, "ten"), &data, &len, 9), SBX_ENOMEM);
    assert_non_null(strstr(sbx_errmsg(sb), "too large"));
    assert_null(data);
    assert_int_equal(sbx_read_file(sb, P(fx, "ten"), &data, &len, 10), 0);
    assert_int_equal(len, 10);
    free(data);

    /* Caller mistakes. */
    assert_int_equal(sbx_write_file(sb, NULL, "x", 1, 0), SBX_EINVAL);
    assert_int_equal(sbx_write_file(sb, "", "x", 1, 0), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "empty"));
    assert_int_equal(sbx_write_file(sb, P(fx, "m"), "x", 1, 010000), SBX_EINVAL);
    assert_int_equal(sbx_write_file(sb, P(fx, "m"), NULL, 1, 0), SBX_EINVAL);
    assert_int_equal(sbx_write_file(NULL, "/x", "x", 1, 0), SBX_EINVAL);
    assert_int_equal(sbx_read_file(sb, P(fx, "file"), NULL, &len, 0), SBX_EINVAL);
    assert_int_equal(sbx_stat(sb, "", &e), SBX_EINVAL);
    assert_int_equal(sbx_list(sb, NULL, 1, &list, &n), SBX_EINVAL);
    assert_int_equal(sbx_mkdir(sb, "", 0), SBX_EINVAL);
    assert_int_equal(sbx_remove(sb, NULL, 0), SBX_EINVAL);
    assert_int_equal(sbx_rename(sb, "/a", ""), SBX_EINVAL);
    assert_int_equal(sbx_exists(sb, ""), SBX_EINVAL);
    assert_int_equal(sbx_file_open(sb, "", 0, 0, &f, NULL), SBX_EINVAL);
    assert_int_equal(sbx_file_create(sb, P(fx, "x"), NULL, NULL), SBX_EINVAL);
    char longp[5000];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = 0;
    assert_int_equal(sbx_stat(sb, longp, &e), SBX_EINVAL);
    sbx_file_close(NULL);
    sbx_entry_clear(NULL);
    sbx_entries_free(NULL, 0);
    /* A read handle cannot write and the other way round. */
    assert_int_equal(sbx_file_open(sb, P(fx, "file"), 0, 0, &f, NULL), 0);
    assert_int_equal(sbx_file_write(f, "x", 1), SBX_EINVAL);
    sbx_file_close(f);
    /* After all that the sandbox still works. */
    assert_int_equal(sbx_exists(sb, P(fx, "file")), 1);
}

/* Streams `total` bytes of a pseudo-random stream in odd-sized pieces; returns the hash. */
static uint64_t stream_write(sbx *sb, const char *path, uint64_t total, uint64_t seed)
{
    sbx_file *f;
    assert_int_equal(sbx_file_create(sb, path, NULL, &f), 0);
    static uint8_t buf[1 << 20];
    struct prng p = {seed};
    uint64_t h = FNV_INIT;
    for (uint64_t done = 0; done < total;) {
        size_t n = (size_t)(total - done < 777777 ? total - done : 777777);
        prng_fill(&p, buf, n);
        h = fnv(h, buf, n);
        int r = sbx_file_write(f, buf, n);
        if (r)
            fail_msg("write: %s", sbx_errmsg(sb));
        done += n;
    }
    int r = sbx_file_commit(f);
    if (r)
        fail_msg("commit: %s", sbx_errmsg(sb));
    return h;
}

static void test_large_stream(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    /* SBX_TEST_STREAM_MIB makes it smaller (for valgrind runs). */
    const char *mib = getenv("SBX_TEST_STREAM_MIB");
    const uint64_t total = (mib ? strtoull(mib, NULL, 10) : 300ull) << 20;
    pid_t envd = envd_pid();
    assert_true(envd > 0);
    long self0 = vm_hwm_kib(getpid());
    uint64_t hw = stream_write(sb, P(fx, "big"), total, 42);
    struct stat st;
    assert_int_equal(stat(P(fx, "big"), &st), 0);
    assert_int_equal(st.st_size, total);

    /* Read it back in a small buffer; read the host file independently too. */
    sbx_file *f;
    uint64_t size;
    assert_int_equal(sbx_file_open(sb, P(fx, "big"), 0, 0, &f, &size), 0);
    assert_int_equal(size, total);
    static uint8_t buf[100000];
    uint64_t hr = FNV_INIT, got = 0;
    int n;
    while ((n = sbx_file_read(f, buf, sizeof(buf))) > 0) {
        hr = fnv(hr, buf, (size_t)n);
        got += (uint64_t)n;
    }
    assert_int_equal(n, 0);
    sbx_file_close(f);
    assert_int_equal(got, total);
    assert_true(hr == hw);
    int fd = open(P(fx, "big"), O_RDONLY);
    uint64_t hh = FNV_INIT;
    ssize_t k;
    while ((k = read(fd, buf, sizeof(buf))) > 0)
        hh = fnv(hh, buf, (size_t)k);
    close(fd);
    assert_true(hh == hw);

    /* Bounded memory: neither side grew by anything near the file's size. */
    long self1 = vm_hwm_kib(getpid()), env = vm_hwm_kib(envd);
    printf("peak memory: envd %ld KiB, test process grew by %ld KiB\n", env, self1 - self0);
    assert_true(env > 0 && env < 32 * 1024);
    assert_true(self1 - self0 < 32 * 1024);
}

/* A guest-side write failure (here the file size limit, EFBIG -> no space) stops the stream
   promptly and leaves the connection usable. */
static void test_no_space(void **state)
{
    struct fx *fx = *state;
    /* A second envd that inherits a 4 MiB file size limit (and ignores SIGXFSZ). */
    struct rlimit old, lim = {4 << 20, 4 << 20};
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim.rlim_max = old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    sbx *sb;
    int r = local_envd_start(NULL, &sb);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, oldsig);
    assert_int_equal(r, 0);

    sbx_file *f;
    assert_int_equal(sbx_file_create(sb, P(fx, "full"), NULL, &f), 0);
    static uint8_t buf[1 << 20];
    memset(buf, 'z', sizeof(buf));
    int i;
    for (i = 0; i < 200; i++)
        if ((r = sbx_file_write(f, buf, sizeof(buf))) != 0)
            break;
    assert_int_equal(r, SBX_ENOSPC);
    assert_true(i < 40); /* noticed long before all 200 MiB were sent */
    assert_int_equal(sbx_file_commit(f), SBX_ENOSPC);
    assert_non_null(strstr(sbx_errmsg(sb), "write"));
    /* Nothing left behind; the sandbox (and its pooled connections) still work. */
    assert_int_equal(access(P(fx, "full"), F_OK), -1);
    for (int k = 0; k < 10; k++) {
        assert_int_equal(sbx_write_file(sb, P(fx, "small"), "ok", 2, 0), 0);
        assert_int_equal(sbx_exists(sb, P(fx, "small")), 1);
    }
    /* sbx_write_file reports it too. */
    static uint8_t big[8 << 20];
    assert_int_equal(sbx_write_file(sb, P(fx, "full2"), big, sizeof(big), 0), SBX_ENOSPC);
    assert_int_equal(access(P(fx, "full2"), F_OK), -1);
    DIR *d = opendir(fx->dir);
    struct dirent *de;
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, ".sbx-"));
    closedir(d);
    local_envd_stop(sb);
}

struct prog {
    uint64_t bytes, files;
    int calls;
    int cancel_after;
};

static int on_progress(void *ctx, uint64_t bytes, uint64_t files)
{
    struct prog *p = ctx;
    assert_true(bytes >= p->bytes);
    assert_true(files >= p->files);
    p->bytes = bytes;
    p->files = files;
    p->calls++;
    return p->cancel_after && p->calls >= p->cancel_after;
}

static void test_copy(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    /* Host tree: files with modes, an empty dir, nested dirs, symlinks, a 3 MiB file. */
    assert_int_equal(mkdir(P(fx, "src"), 0750), 0);
    assert_int_equal(mkdir(P(fx, "src/sub"), 0700), 0);
    assert_int_equal(mkdir(P(fx, "src/sub/deeper"), 0755), 0);
    assert_int_equal(mkdir(P(fx, "src/empty"), 0711), 0);
    host_write(P(fx, "src/run.sh"), "#!/bin/sh\necho hi\n", 18);
    chmod(P(fx, "src/run.sh"), 0755);
    host_write(P(fx, "src/sub/secret"), "s", 1);
    chmod(P(fx, "src/sub/secret"), 0600);
    host_write(P(fx, "src/sub/deeper/z"), "", 0);
    static uint8_t big[3 << 20];
    struct prng pr = {7};
    prng_fill(&pr, big, sizeof(big));
    host_write(P(fx, "src/big.bin"), big, sizeof(big));
    assert_int_equal(symlink("run.sh", P(fx, "src/link")), 0);
    assert_int_equal(symlink("/nonexistent/target", P(fx, "src/sub/dangling")), 0);

    struct prog p = {0};
    assert_int_equal(sbx_copy_in(sb, P(fx, "src"), P(fx, "guest/copy"), on_progress, &p), 0);
    assert_int_equal(p.files, 6); /* 4 files, 2 symlinks */
    assert_int_equal(p.bytes, 18 + 1 + sizeof(big));
    assert_true(p.calls >= 6);
    /* Out again, into a new host directory; compare. */
    struct prog q = {0};
    assert_int_equal(sbx_copy_out(sb, P(fx, "guest/copy"), P(fx, "back"), on_progress, &q), 0);
    assert_int_equal(q.files, 6);
    assert_int_equal(q.bytes, p.bytes);
    const char *rels[] = {"",        "/sub",        "/sub/deeper",   "/empty",
                          "/run.sh", "/sub/secret", "/sub/deeper/z", "/big.bin"};
    for (size_t i = 0; i < sizeof(rels) / sizeof(rels[0]); i++) {
        char a[600], b[600], c[600];
        snprintf(a, sizeof(a), "%s/src%s", fx->dir, rels[i]);
        snprintf(b, sizeof(b), "%s/guest/copy%s", fx->dir, rels[i]);
        snprintf(c, sizeof(c), "%s/back%s", fx->dir, rels[i]);
        struct stat sa, sb2, sc;
        assert_int_equal(lstat(a, &sa), 0);
        assert_int_equal(lstat(b, &sb2), 0);
        assert_int_equal(lstat(c, &sc), 0);
        assert_int_equal(sa.st_mode, sb2.st_mode);
        assert_int_equal(sa.st_mode, sc.st_mode);
        assert_int_equal(sa.st_size == sb2.st_size || S_ISDIR(sa.st_mode), 1);
        assert_int_equal(sa.st_size == sc.st_size || S_ISDIR(sa.st_mode), 1);
    }
    static char hb[4 << 20];
    assert_int_equal(host_read(P(fx, "back/big.bin"), hb, sizeof(hb)), sizeof(big));
    assert_memory_equal(hb, big, sizeof(big));
    char t[64];
    ssize_t k = readlink(P(fx, "back/link"), t, sizeof(t));
    assert_int_equal(k, 6);
    assert_memory_equal(t, "run.sh", 6);
    k = readlink(P(fx, "guest/copy/sub/dangling"), t, sizeof(t));
    assert_int_equal(k, 19);
    k = readlink(P(fx, "back/sub/dangling"), t, sizeof(t));
    assert_int_equal(k, 19);
    assert_memory_equal(t, "/nonexistent/target", 19);

    /* Single files and symlinks, both ways; copying out over an existing file replaces it. */
    assert_int_equal(sbx_copy_in(sb, P(fx, "src/run.sh"), P(fx, "one.sh"), NULL, NULL), 0);
    struct stat st;
    assert_int_equal(stat(P(fx, "one.sh"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0755);
    host_write(P(fx, "out.sh"), "old stuff that is longer", 24);
    assert_int_equal(sbx_copy_out(sb, P(fx, "one.sh"), P(fx, "out.sh"), NULL, NULL), 0);
    assert_int_equal(host_read(P(fx, "out.sh"), hb, sizeof(hb)), 18);
    assert_int_equal(sbx_copy_out(sb, P(fx, "src/link"), P(fx, "out-link"), NULL, NULL), 0);
    k = readlink(P(fx, "out-link"), t, sizeof(t));
    assert_int_equal(k, 6);

    /* Cancelling from the progress callback. */
    struct prog c = {.cancel_after = 2};
    assert_int_equal(sbx_copy_in(sb, P(fx, "src"), P(fx, "guest/cancelled"), on_progress, &c),
                     SBX_EINTR);
    assert_non_null(strstr(sbx_errmsg(sb), "cancel"));
    /* Errors: missing sources on either side. */
    assert_int_equal(sbx_copy_in(sb, P(fx, "nope"), P(fx, "x"), NULL, NULL), SBX_ENOENT);
    assert_int_equal(sbx_copy_out(sb, P(fx, "nope"), P(fx, "x"), NULL, NULL), SBX_ENOENT);
    assert_int_equal(sbx_copy_in(sb, NULL, P(fx, "x"), NULL, NULL), SBX_EINVAL);
    assert_int_equal(sbx_copy_out(sb, P(fx, "src"), "", NULL, NULL), SBX_EINVAL);
}

/* Waits for an event (op, name), skipping others; fails after a few seconds. */
static void expect_event(sbx *sb, sbx_watch *w, int op, const char *name)
{
    for (int i = 0; i < 10000; i++) {
        sbx_watch_event ev;
        int r = sbx_watch_next(w, &ev, 5000);
        if (r)
            fail_msg("waiting for event %d %s: %d %s", op, name, r, sbx_errmsg(sb));
        if (ev.op == op && strcmp(ev.name, name) == 0)
            return;
    }
    fail_msg("event %d %s never came", op, name);
}

static void test_watch(void **state)
{
    struct fx *fx = *state;
    sbx *sb = fx->sb;
    assert_int_equal(mkdir(P(fx, "w"), 0755), 0);
    assert_int_equal(mkdir(P(fx, "w/old"), 0755), 0);
    sbx_watch *w;
    assert_int_equal(sbx_watch_open(sb, P(fx, "w"), 0, &w), 0);
    sbx_watch_event ev;
    assert_int_equal(sbx_watch_next(w, &ev, 0), SBX_EAGAIN);
    assert_int_equal(sbx_watch_next(w, &ev, 50), SBX_ETIMEDOUT);

    host_write(P(fx, "w/a"), "hello", 5);
    /* The fd polls readable once an event is there. */
    struct pollfd pfd = {.fd = sbx_watch_fd(w), .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    expect_event(sb, w, SBX_WATCH_CREATE, "a");
    expect_event(sb, w, SBX_WATCH_WRITE, "a");
    chmod(P(fx, "w/a"), 0600);
    expect_event(sb, w, SBX_WATCH_CHMOD, "a");
    rename(P(fx, "w/a"), P(fx, "w/b"));
    expect_event(sb, w, SBX_WATCH_RENAME, "a");
    expect_event(sb, w, SBX_WATCH_CREATE, "b");
    unlink(P(fx, "w/b"));
    expect_event(sb, w, SBX_WATCH_REMOVE, "b");
    /* Through the API too; not recursive: nothing from below. */
    host_write(P(fx, "w/old/inner"), "x", 1);
    assert_int_equal(sbx_write_file(sb, P(fx, "w/api"), "x", 1, 0), 0);
    expect_event(sb, w, SBX_WATCH_CREATE, "api");
    while (sbx_watch_next(w, &ev, 300) == 0)
        assert_null(strstr(ev.name, "inner"));
    /* Many events queued while nobody reads are all delivered. */
    for (int i = 0; i < 300; i++) {
        char rel[64];
        snprintf(rel, sizeof(rel), "w/n%03d", i);
        host_write(P(fx, rel), "", 0);
    }
    expect_event(sb, w, SBX_WATCH_CREATE, "n000");
    expect_event(sb, w, SBX_WATCH_CREATE, "n299");
    sbx_watch_close(w);

    /* Recursive: existing and new subdirectories. */
    assert_int_equal(sbx_watch_open(sb, P(fx, "w"), 1, &w), 0);
    host_write(P(fx, "w/old/f"), "1", 1);
    expect_event(sb, w, SBX_WATCH_CREATE, "old/f");
    assert_int_equal(mkdir(P(fx, "w/new"), 0755), 0);
    expect_event(sb, w, SBX_WATCH_CREATE, "new");
    assert_int_equal(mkdir(P(fx, "w/new/sub"), 0755), 0);
    expect_event(sb, w, SBX_WATCH_CREATE, "new/sub");
    host_write(P(fx, "w/new/sub/g"), "2", 1);
    expect_event(sb, w, SBX_WATCH_CREATE, "new/sub/g");
    expect_event(sb, w, SBX_WATCH_WRITE, "new/sub/g");
    /* A directory moved in is watched under its new name; moved out, it is forgotten. */
    assert_int_equal(mkdir(P(fx, "outside"), 0755), 0);
    assert_int_equal(rename(P(fx, "outside"), P(fx, "w/movedin")), 0);
    expect_event(sb, w, SBX_WATCH_CREATE, "movedin");
    host_write(P(fx, "w/movedin/h"), "3", 1);
    expect_event(sb, w, SBX_WATCH_CREATE, "movedin/h");
    assert_int_equal(rename(P(fx, "w/new"), P(fx, "w/renamed")), 0);
    expect_event(sb, w, SBX_WATCH_RENAME, "new");
    expect_event(sb, w, SBX_WATCH_CREATE, "renamed");
    host_write(P(fx, "w/renamed/sub/i"), "4", 1);
    expect_event(sb, w, SBX_WATCH_CREATE, "renamed/sub/i");
    assert_int_equal(sbx_remove(sb, P(fx, "w/renamed"), 1), 0);
    expect_event(sb, w, SBX_WATCH_REMOVE, "renamed");
    sbx_watch_close(w);

    /* The watched directory itself going away ends the watch. */
    assert_int_equal(sbx_watch_open(sb, P(fx, "w/old"), 0, &w), 0);
    assert_int_equal(sbx_remove(sb, P(fx, "w/old"), 1), 0);
    int r;
    while ((r = sbx_watch_next(w, &ev, 5000)) == 0)
        ;
    assert_int_equal(r, SBX_ENOENT);
    assert_int_equal(sbx_watch_next(w, &ev, 0), SBX_ENOENT);
    sbx_watch_close(w);

    /* Errors. */
    assert_int_equal(sbx_watch_open(sb, P(fx, "missing"), 0, &w), SBX_ENOENT);
    host_write(P(fx, "plain"), "", 0);
    assert_int_equal(sbx_watch_open(sb, P(fx, "plain"), 0, &w), SBX_ENOTDIR);
    assert_int_equal(sbx_watch_open(sb, "", 0, &w), SBX_EINVAL);
    sbx_watch_close(NULL);
    assert_int_equal(sbx_watch_fd(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stat_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdir_remove_rename, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_space, setup, teardown),
        cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
