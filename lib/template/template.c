// SPDX-License-Identifier: Apache-2.0
/* Templates seen from sbx_create() and sbx_snapshot(): names resolved in the template store. */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "snap/snap.h"
#include "template/store.h"
#include "template/template.h"

static char *join(const char *a, const char *b)
{
    char *p = NULL;
    return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}

int template_snapshot_dir(const char *ref, const char *store_dir, char **dir, char *err,
                          size_t errlen)
{
    *dir = NULL;
    if (!*ref) {
        snprintf(err, errlen, "options.template_name is empty");
        return SBX_EINVAL;
    }
    if (strchr(ref, '/')) {
        *dir = strdup(ref);
        return *dir ? 0 : SBX_ENOMEM;
    }
    char *sdir = store_dir ? strdup(store_dir) : store_default_dir();
    if (!sdir) {
        snprintf(err, errlen,
                 "no template store: set options.template_dir, $SBX_TEMPLATE_DIR or $HOME");
        return SBX_EINVAL;
    }
    struct store_manifest *m = NULL;
    char msg[1024];
    int r = store_load(sdir, ref, &m, msg, sizeof(msg));
    if (r == -2)
        snprintf(err, errlen, "no template \"%s\" in %s (see `sbx template ls`): %s", ref, sdir,
                 msg);
    else if (r < 0)
        snprintf(err, errlen, "template \"%s\": %s", ref, msg);
    char *tdir = r == 0 ? store_template_dir(sdir, m->name) : NULL;
    if (r == 0 && !(tdir && (*dir = join(tdir, "snapshot"))))
        r = -3;
    free(tdir);
    store_manifest_free(m);
    free(sdir);
    return r == 0 ? 0 : r == -2 ? SBX_ENOENT : r == -3 ? SBX_ENOMEM : SBX_EIMAGE;
}

int template_snapshot_target(const char *name_or_path, char **dir, char *err, size_t errlen)
{
    *dir = NULL;
    if (strchr(name_or_path, '/')) {
        *dir = strdup(name_or_path);
        return *dir ? 0 : SBX_ENOMEM;
    }
    if (!store_valid_name(name_or_path)) {
        snprintf(err, errlen,
                 "\"%s\" is neither a path (with '/') nor a template name ([a-z0-9][a-z0-9._-], "
                 "at most 63)",
                 name_or_path);
        return SBX_EINVAL;
    }
    char *sdir = store_default_dir();
    if (!sdir) {
        snprintf(err, errlen, "no template store: set $SBX_TEMPLATE_DIR or $HOME");
        return SBX_EINVAL;
    }
    char *staging = NULL;
    if (store_open(sdir, err, errlen) == 0)
        staging = store_staging_dir(sdir, name_or_path, err, errlen);
    free(sdir);
    if (!staging)
        return SBX_EIO;
    *dir = join(staging, "snapshot");
    free(staging);
    return *dir ? 0 : SBX_ENOMEM;
}

static uint64_t allocated(const char *dir, const char *name)
{
    char *p = join(dir, name);
    struct stat st;
    uint64_t n = p && stat(p, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
    free(p);
    return n;
}

int template_register_snapshot(struct sbx *sb, const char *name_or_path, const char *dir, char *err,
                               size_t errlen)
{
    if (strchr(name_or_path, '/'))
        return 0;
    char *sdir = store_default_dir();
    char *staging = strdup(dir);
    if (!sdir || !staging) {
        free(sdir);
        free(staging);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *slash = strrchr(staging, '/');
    *slash = 0;
    struct store_manifest m = {.format = STORE_FORMAT, .kind = STORE_SNAPSHOT};
    m.name = (char *)name_or_path;
    m.rootfs = realpath(sb->rootfs_path, NULL);
    m.parent = m.rootfs;
    m.kernel = sb->kernel_path ? realpath(sb->kernel_path, NULL) : NULL;
    m.vcpus = sb->vcpus;
    m.memory_mib = sb->memory_mib;
    m.disk_mib = sb->root_size >> 20;
    m.envs = sb->envs;
    m.user = sb->default_user;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    m.memory_bytes = allocated(dir, SNAP_MEMORY_FILE);
    m.disk_bytes = allocated(dir, SNAP_DISK_FILE);
    /* The store layers the snapshot keeps by path: named in the manifest, so that the store's
       garbage collection leaves them. */
    m.steps = calloc(sb->root_durable + 1, sizeof(*m.steps));
    char **texts = calloc(sb->root_durable + 1, sizeof(char *));
    int r = m.rootfs && m.kernel && m.steps && texts ? 0 : -1;
    if (r < 0)
        snprintf(err, errlen, "resolving the snapshot's files: %s",
                 strerror(errno ? errno : ENOMEM));
    for (unsigned i = 0; r == 0 && i < sb->root_durable; i++) {
        char *base = strrchr(sb->root_layers[i], '/');
        base = base ? base + 1 : sb->root_layers[i];
        struct store_step *st = &m.steps[i];
        if (!store_valid_layer_name(base) || asprintf(&texts[i], "layer %s", base) < 0) {
            snprintf(err, errlen, "disk layer %s is not a template store layer",
                     sb->root_layers[i]);
            r = -1;
            break;
        }
        st->text = texts[i];
        memcpy(st->hash, base, 64);
        st->hash[64] = 0;
        st->layer = base;
        m.nsteps = i + 1;
    }
    int lock = r == 0 ? store_lock(sdir, err, errlen) : -1;
    if (r == 0 && lock < 0)
        r = -1;
    if (r == 0)
        r = store_publish(sdir, &m, staging, err, errlen);
    store_unlock(lock);
    if (r < 0) {
        snap_remove(dir);
        rmdir(staging);
    }
    for (unsigned i = 0; texts && i < sb->root_durable; i++)
        free(texts[i]);
    free(texts);
    free(m.steps);
    free(m.rootfs);
    free(m.kernel);
    free(staging);
    free(sdir);
    return r < 0 ? -1 : 0;
}
