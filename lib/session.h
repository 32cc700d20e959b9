/* SPDX-License-Identifier: Apache-2.0 */
/* Sandbox-wide settings: copied from the options, sent to envd, and the lifetime timer. */
#ifndef SBX_SESSION_H
#define SBX_SESSION_H

#include "internal.h"
#include "util/wait.h"

/* Checks and copies envs, default_user, metadata and lifetime_ms from the options. */
int session_options(struct sbx *sb, const sbx_options *o);
void session_free(struct sbx *sb);

/* Settings of a sandbox made from a snapshot: the snapshot's envs come before the options'
   (which win), its default user applies unless the options name one. With `identity` (a
   resumed sandbox) the metadata is the snapshot's too, and options must not set any of them. */
int session_restore(struct sbx *sb, char *const *envs, size_t nenvs, const char *user,
                    char *const *meta, size_t nmeta, bool identity);

/* The metadata as "key=value" strings (NULL-terminated); free with session_list_free(). */
char **session_meta_joined(const struct sbx *sb);
void session_list_free(char **l);
/* Sends Configure (envs, default user) on a connection with Hello done. */
int session_configure(struct sbx *sb, int fd, const struct waitctx *w);
/* Arms the lifetime timer (sbx_create, once running). */
int session_start_lifetime(struct sbx *sb);
/* The lifetime timer fired (device thread): stop the VM for good. */
void session_lifetime_expired(struct sbx *sb);

#endif
