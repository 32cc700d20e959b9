/* SPDX-License-Identifier: Apache-2.0 */
/* Port exposure (lib/ops/expose.c): the sandbox's teardown hook. */
#ifndef SBX_OPS_EXPOSE_H
#define SBX_OPS_EXPOSE_H

struct sbx;

/* Stops the exposure thread and closes every listener and relayed connection of the sandbox.
   Called first thing by sbx_destroy(), while the vsock device still exists (the thread dials
   envd through it). No-op when nothing was ever exposed. */
void expose_destroy(struct sbx *sb);

#endif
