// SPDX-License-Identifier: Apache-2.0
/*
 * The local template store: a directory of templates (snapshots of booted, ready guests, built
 * from a Dockerfile subset or saved from a running sandbox) and of the disk layers their build
 * steps produced, each template described by a versioned JSON manifest.
 *
 * Layout of a store <dir>:
 *   <dir>/.lock                           flock'ed by builds and removals (store_lock)
 *   <dir>/layers/<sha256>.layer           content-addressed disk layers, shared by templates
 *   <dir>/layers/.tmp-*                   a layer being written (renamed into place when done)
 *   <dir>/templates/<name>/manifest.json  the manifest (written last, atomically)
 *   <dir>/templates/<name>/snapshot/      the snapshot files (written by lib/snap)
 *   <dir>/templates/.staging-<name>-*     a template being built (store_staging_dir)
 *   <dir>/templates/.rm-<name>-*          a template being removed
 * Hidden entries (a leading '.') are never templates: list and load ignore them, gc cleans
 * them up.
 *
 * A template is self-contained: its steps list every layer from its rootfs up, those of the
 * template it was built FROM included, so removing a parent never breaks a child (the shared
 * layers stay alive as long as any manifest names them).
 *
 * Concurrency: readers (load, list) take no lock; a template appears, is replaced and
 * disappears with one rename, so a reader sees a complete template or none. Writers that add
 * layers or remove files (builds, store_remove, store_gc) hold the store lock. No global state:
 * any number of stores and threads.
 *
 * Manifest JSON (pretty-printed, UTF-8, keys in this order):
 *   {"format": 1, "kind": "template"|"snapshot", "name", "tags": [...], "parent", "rootfs",
 *    "steps": [{"text", "hash", "layer" (or null), "layer_bytes", "build_ms", "cached"}],
 *    "kernel", "kernel_hash", "vcpus", "memory_mib", "disk_mib", "envs": [...], "workdir",
 *    "user", "start_cmd", "ready", "key", "created_ns", "created", "memory_bytes",
 *    "disk_bytes"}
 * Every key above is required except "created" (an ISO-8601 UTC rendering of created_ns for
 * people, ignored when read); the nullable ones (layer, workdir, user, start_cmd, ready) are
 * written as null. Integers are JSON integers (no fractions, no negatives).
 * Forward compatibility: unknown keys are ignored, so a later libsandbox may add optional keys
 * without changing "format"; any change an older reader would misunderstand bumps "format",
 * and a reader rejects a format it does not know with a message saying so.
 */
#ifndef SBX_TEMPLATE_STORE_H
#define SBX_TEMPLATE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_FORMAT       1
#define STORE_NAME_MAX     63        /* template names and tags */
#define STORE_MANIFEST_MAX (1 << 20) /* bytes of manifest.json, read or written */
#define STORE_PATH_MAX     4096      /* rootfs, kernel, parent, workdir */
#define STORE_TEXT_MAX     65536     /* a step's text, an env entry, start_cmd */
#define STORE_MAX_STEPS    4096
#define STORE_MAX_TAGS     64
#define STORE_MAX_ENVS     4096

/* Default store directory: $SBX_TEMPLATE_DIR, else $XDG_DATA_HOME/libsandbox/templates, else
   $HOME/.local/share/libsandbox/templates (empty variables and a relative XDG_DATA_HOME are
   ignored, as the XDG spec says). Returns a malloc'ed path, or NULL without HOME (or when the
   process is setuid: the variables are read with secure_getenv). */
char *store_default_dir(void);

struct store_step {
    char *text;    /* the instruction as written, e.g. "RUN pip install numpy" */
    char hash[65]; /* the step's cache key (64 hex digits) */
    char *layer;   /* "<64 hex>.layer", a file name in layers/, or NULL (no disk change) */
    uint64_t layer_bytes;
    uint64_t build_ms;
    bool cached; /* the last build reused the layer instead of running the step */
};

enum store_kind { STORE_TEMPLATE, STORE_SNAPSHOT };

/* Field rules (checked by store_save before writing and by store_load after reading):
   name: store_valid_name. tags: each store_valid_name, distinct, at most STORE_MAX_TAGS.
   parent: non-empty, no control characters, < STORE_PATH_MAX. rootfs, kernel and workdir:
   absolute paths of that kind. steps: at most STORE_MAX_STEPS, text non-empty (< STORE_TEXT_MAX),
   hash 64 lowercase hex digits, layer NULL or store_valid_layer_name. kernel_hash and key:
   64 lowercase hex digits, or "" when unknown. vcpus 1..64, memory_mib 64..65536 (the ranges of
   sbx_options), disk_mib at most 2^24 (16 TiB; 0: the image's own size). envs: at most
   STORE_MAX_ENVS "KEY=VALUE" entries with a non-empty KEY. user: NULL or non-empty, at most 256
   bytes, no control characters. start_cmd: NULL or non-empty (< STORE_TEXT_MAX). ready: NULL
   or non-empty, no control characters (its syntax is the builder's business). */
struct store_manifest {
    unsigned format;      /* STORE_FORMAT */
    enum store_kind kind; /* built from a file, or saved from a running sandbox */
    char *name;
    char **tags;  /* NULL-terminated, or NULL */
    char *parent; /* FROM: "base", another template's name, or an image path */
    char *rootfs; /* the base image path the layers apply to */
    struct store_step *steps;
    size_t nsteps;
    char *kernel;
    char kernel_hash[65];
    unsigned vcpus, memory_mib;
    uint64_t disk_mib;
    char **envs; /* NULL-terminated, or NULL */
    char *workdir, *user;
    char *start_cmd;
    char *ready;                       /* e.g. "port:8000", or NULL */
    char key[65];                      /* hash of everything that determines the content */
    uint64_t created_ns;               /* CLOCK_REALTIME */
    uint64_t memory_bytes, disk_bytes; /* sizes on disk of the memory file and the disk diff */
    /* Set only in store_list's entries for a template that could not be loaded: why (the
       entry then has only `name`, the directory's name, and this). NULL otherwise. */
    char *load_error;
};

/* Creates dir (and its parents, mode 0700: templates hold memory images), layers/ and
   templates/ if needed. 0, or -1 with err. */
int store_open(const char *dir, char *err, size_t errlen);

/* [a-z0-9][a-z0-9._-]{0,62} and no "..": 1 or 0. Used for template names and tags. */
int store_valid_name(const char *name);
/* "<64 lowercase hex digits>.layer": 1 or 0. */
int store_valid_layer_name(const char *name);

/* A reference is "name" or "name:tag". Splits and validates it: 0, or -1 with err. tag is ""
   for a plain name. */
int store_parse_ref(const char *ref, char name[STORE_NAME_MAX + 1], char tag[STORE_NAME_MAX + 1],
                    char *err, size_t errlen);

char *store_template_dir(const char *dir, const char *name); /* malloc'ed, NULL on ENOMEM */
char *store_layer_path(const char *dir, const char *hash);   /* <dir>/layers/<hash>.layer */

/* Loads the manifest of `ref` ("name" or "name:tag"; a tag resolves to the template `name` only
   if that template carries the tag: tags label the current build of a name, so "app:v2" fails
   rather than silently giving another build). Returns 0 with *out (free with
   store_manifest_free); -2 with err when there is no such template or the template lacks the
   tag; -1 with err for everything else: an invalid reference, an unreadable, oversized or
   non-JSON manifest, an unknown format version, a missing or mistyped key, an invalid value, a
   manifest whose name is not its directory's. Messages start with the manifest's path. */
int store_load(const char *dir, const char *ref, struct store_manifest **out, char *err,
               size_t errlen);

/* Validates m and writes <dir>/templates/<m->name>/manifest.json (creating the directory):
   written to manifest.json.tmp, fsync'ed, renamed over, directory fsync'ed. 0 or -1 with err.
   Does not lock: the caller holds the store lock when the manifest names new layers. */
int store_save(const char *dir, const struct store_manifest *m, char *err, size_t errlen);

/* A fresh, empty, hidden directory in templates/ in which to build the template `name`
   (write the snapshot into <staging>/snapshot/), then store_publish it. Malloc'ed path, or
   NULL with err. */
char *store_staging_dir(const char *dir, const char *name, char *err, size_t errlen);
/* Writes m's manifest into `staging` (from store_staging_dir for m->name) and atomically
   puts the directory in place of templates/<m->name>, replacing (then deleting) the previous
   build if any: a reader sees the old template or the new one, never a mix. Sandboxes running
   from the old build keep working (their files stay open). 0, or -1 with err (the staging
   directory is then left for the caller to delete or for store_gc). */
int store_publish(const char *dir, const struct store_manifest *m, const char *staging, char *err,
                  size_t errlen);

/* Every template in the store, sorted by name: *out is an array of *n manifests (free with
   store_list_free). A template that cannot be loaded is listed too, with load_error set. A
   store that does not exist yet lists as empty. 0, or -1 with err (templates/ unreadable). */
int store_list(const char *dir, struct store_manifest ***out, size_t *n, char *err, size_t errlen);
void store_list_free(struct store_manifest **list, size_t n);

/* Takes the store lock, removes templates/<name> (renamed out of sight first, so that a crash
   halfway leaves no half template), collects the layers no manifest names any more, and
   unlocks. 0; 1 when the template was removed but something could not be cleaned up (err
   says what; store_gc retries); -2 with err for no such template; -1 with err otherwise. */
int store_remove(const char *dir, const char *name, char *err, size_t errlen);
int store_remove_locked(const char *dir, const char *name, char *err, size_t errlen);

/* Takes the store lock and deletes: layers no manifest names, layers/.tmp-* files,
   templates/.rm-* directories and templates/.staging-* directories untouched for 24 hours.
   A layer counts as named when any JSON string in any manifest.json under templates/ (hidden
   staging directories included) is its file name, whatever the manifest's format version, so
   that a manifest of a newer libsandbox keeps its layers. If a manifest cannot be read or is
   not JSON, no layer is deleted (it might name some): -1 with err saying which. Otherwise 0,
   with the bytes freed (allocated blocks) added to *freed_bytes if not NULL.
   The _locked variant is for a caller that holds the lock: it must not have layers in
   progress (their .tmp-* files would go) or written but not yet named by a manifest. */
int store_gc(const char *dir, uint64_t *freed_bytes, char *err, size_t errlen);
int store_gc_locked(const char *dir, uint64_t *freed_bytes, char *err, size_t errlen);

/* Exclusive flock on <dir>/.lock (created if needed), waiting for the holder to release it.
   Returns the fd, or -1 with err. Each call opens its own fd, so a second store_lock of the same
   store in the same process waits too: never nest them. A child forked meanwhile
   shares the lock until it closes its copy of the fd (O_CLOEXEC: an exec drops it).
   store_unlock(-1) does nothing. */
int store_lock(const char *dir, char *err, size_t errlen);
void store_unlock(int fd);

void store_manifest_free(struct store_manifest *m);

#endif
