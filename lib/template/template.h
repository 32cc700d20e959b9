/* SPDX-License-Identifier: Apache-2.0 */
/* Templates seen from sbx_create() and sbx_snapshot(): names resolved in the template store. */
#ifndef SBX_TEMPLATE_H
#define SBX_TEMPLATE_H

#include <stddef.h>

struct sbx;

/* The snapshot directory of `ref`: a path (contains '/') as is, else the template "name" or
   "name:tag" in the store `store_dir` (NULL: the default store). Returns 0 with *dir
   (malloc'ed) or an SBX_E* code with a message in err (SBX_ENOENT: no such template). */
int template_snapshot_dir(const char *ref, const char *store_dir, char **dir, char *err,
                          size_t errlen);

/* Where sbx_snapshot() writes: a path as is; a name gets a staging directory in the default
   store (published by template_register_snapshot). */
int template_snapshot_target(const char *name_or_path, char **dir, char *err, size_t errlen);

/* After sbx_snapshot() wrote `dir` for a name: writes its manifest and publishes it. A path
   needs nothing. On failure the staging directory is removed. */
int template_register_snapshot(struct sbx *sb, const char *name_or_path, const char *dir, char *err,
                               size_t errlen);

#endif
