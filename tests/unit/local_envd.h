/* SPDX-License-Identifier: Apache-2.0 */
/* Unit-test helper: the real envd as a local process (no VM) behind a real sandbox handle. */
#ifndef SBX_LOCAL_ENVD_H
#define SBX_LOCAL_ENVD_H

#include "sandbox.h"

/* Starts the embedded envd binary with --test-listen on a fresh unix socket and returns a
   handle whose operations (exec, files, ...) go to it; opts (envs, default_user, metadata)
   may be NULL. envd runs as the calling user and changes nothing in the system. Returns 0 or
   an SBX_E* code (then *out may be a failed handle with a message, or NULL). */
int local_envd_start(const sbx_options *opts, sbx **out);

/* Destroys the handle and stops that envd. */
void local_envd_stop(sbx *sb);

#endif
