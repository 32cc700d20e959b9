/* SPDX-License-Identifier: Apache-2.0 */
/* Internal file operations shared by lib/ops/files.c and lib/ops/copy.c. */
#ifndef SBX_OPS_FILES_H
#define SBX_OPS_FILES_H

#include "sandbox.h"

/* Guest calls wait at most this long for each answer (include/sandbox.h: "60 s"). */
#define FILES_ANSWER_MS 60000u
/* Longest guest path accepted from the caller (PATH_MAX in the guest, with its NUL). */
#define FILES_PATH_MAX 4095u

/* Creates (or atomically replaces) a symlink `path` -> `target` in the guest, owned by the
   default user. Returns 0 or an SBX_E* code with the message set. */
int files_symlink(sbx *sb, const char *target, const char *path);

/* Checks a guest path argument: non-NULL, non-empty, not too long. Returns 0 or SBX_EINVAL
   with a message naming `what`. */
int files_check_path(sbx *sb, const char *path, const char *what);

#endif
