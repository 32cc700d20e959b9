// SPDX-License-Identifier: Apache-2.0
/* The per-user registry of running sandboxes (one small file each), for sbx_list_running(). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "registry.h"

#define MAX_ENTRIES 4096

/* The registry directory: $XDG_RUNTIME_DIR/libsandbox, else /tmp/libsandbox-UID; created
   0700 and accepted only if it is a real directory owned by this user (not a planted link). */
static int registry_dir(char *out, size_t cap, bool create)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n = xdg && *xdg ? snprintf(out, cap, "%s/libsandbox", xdg)
                        : snprintf(out, cap, "/tmp/libsandbox-%u", (unsigned)getuid());
    if (n < 0 || (size_t)n >= cap)
        return -1;
    if (create && mkdir(out, 0700) != 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (lstat(out, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
        return -1;
    return 0;
}

static int entry_path(const struct sbx *sb, char *out, size_t cap)
{
    char dir[256];
    if (registry_dir(dir, sizeof(dir), true) < 0)
        return -1;
    int n = snprintf(out, cap, "%s/%s", dir, sb->id);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

void registry_add(struct sbx *sb)
{
    if (sb->local_sock || sb->unlisted)
        return;
    char path[320], tmp[340];
    if (entry_path(sb, path, sizeof(path)) < 0)
        return; /* best effort: listing is a convenience, never a reason to fail */
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *fp = fopen(tmp, "we");
    if (!fp)
        return;
    fprintf(fp, "id=%s\npid=%d\ncreated_ns=%llu\nends_ns=%llu\nvcpus=%u\nmemory_mib=%u\n", sb->id,
            (int)getpid(), (unsigned long long)sb->created_ns,
            (unsigned long long)atomic_load(&sb->ends_ns), sb->vcpus, sb->memory_mib);
    fprintf(fp, "rootfs=%s\n", sb->rootfs_path ? sb->rootfs_path : "");
    for (size_t i = 0; i < sb->nmeta; i++)
        fprintf(fp, "meta=%s=%s\n", sb->meta[i], strchr(sb->meta[i], '\0') + 1);
    if (fclose(fp) != 0 || rename(tmp, path) != 0)
        unlink(tmp);
}

void registry_remove(struct sbx *sb)
{
    char path[320];
    if (!sb->local_sock && !sb->unlisted && entry_path(sb, path, sizeof(path)) == 0)
        unlink(path);
}

static void listing_clear(sbx_listing *l)
{
    for (size_t i = 0; l->metadata && l->metadata[i]; i++)
        free(l->metadata[i]);
    free(l->metadata);
}

/* Parses one entry; false when it is malformed. Values with newlines cannot occur: the
   writer's strings come from checked options (metadata has no newline check, so a value is
   cut at its first newline, which only affects display). */
static bool parse_entry(FILE *fp, sbx_listing *l)
{
    memset(l, 0, sizeof(*l));
    char line[2048];
    size_t nmeta = 0;
    while (fgets(line, sizeof(line), fp)) {
        line[strcspn(line, "\n")] = '\0';
        char *v = strchr(line, '=');
        if (!v)
            continue;
        *v++ = '\0';
        if (strcmp(line, "id") == 0)
            snprintf(l->id, sizeof(l->id), "%s", v);
        else if (strcmp(line, "pid") == 0)
            l->pid = atoi(v);
        else if (strcmp(line, "created_ns") == 0)
            l->created_ns = strtoull(v, NULL, 10);
        else if (strcmp(line, "ends_ns") == 0)
            l->ends_ns = strtoull(v, NULL, 10);
        else if (strcmp(line, "vcpus") == 0)
            l->vcpus = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(line, "memory_mib") == 0)
            l->memory_mib = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(line, "rootfs") == 0)
            snprintf(l->rootfs, sizeof(l->rootfs), "%s", v);
        else if (strcmp(line, "meta") == 0 && nmeta < 64) {
            char **m = realloc(l->metadata, (nmeta + 2) * sizeof(*m));
            if (!m)
                return false;
            l->metadata = m;
            if (!(m[nmeta] = strdup(v)))
                return false;
            m[++nmeta] = NULL;
        }
    }
    return l->id[0] && l->pid > 0;
}

int sbx_list_running(sbx_listing **out, size_t *n)
{
    if (!out || !n)
        return SBX_EINVAL;
    *out = NULL;
    *n = 0;
    char dir[256];
    if (registry_dir(dir, sizeof(dir), false) < 0)
        return 0; /* no registry yet: nothing runs */
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    sbx_listing *list = NULL;
    size_t count = 0, cap = 0;
    int r = 0;
    struct dirent *e;
    while ((e = readdir(d)) && count < MAX_ENTRIES) {
        if (e->d_name[0] == '.' || strchr(e->d_name, '.'))
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        FILE *fp = fd >= 0 ? fdopen(fd, "re") : NULL;
        if (!fp) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        sbx_listing l;
        bool ok = parse_entry(fp, &l);
        fclose(fp);
        /* The owner died without sbx_destroy(): its sandbox died with it. */
        if (ok && kill(l.pid, 0) != 0 && errno == ESRCH) {
            unlinkat(dirfd(d), e->d_name, 0);
            ok = false;
        }
        if (!ok) {
            listing_clear(&l);
            continue;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            sbx_listing *nl = realloc(list, cap * sizeof(*nl));
            if (!nl) {
                listing_clear(&l);
                r = SBX_ENOMEM;
                break;
            }
            list = nl;
        }
        list[count++] = l;
    }
    closedir(d);
    if (r < 0) {
        sbx_listing_free(list, count);
        return r;
    }
    *out = list;
    *n = count;
    return 0;
}

void sbx_listing_free(sbx_listing *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        listing_clear(&list[i]);
    free(list);
}
