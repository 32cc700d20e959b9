/* SPDX-License-Identifier: Apache-2.0 */
/* The per-user registry of running sandboxes (sbx_list_running, `sbx ls`). */
#ifndef SBX_REGISTRY_H
#define SBX_REGISTRY_H

struct sbx;

/* Writes (or rewrites) the sandbox's entry; best effort, failures are ignored. */
void registry_add(struct sbx *sb);
/* Removes it. */
void registry_remove(struct sbx *sb);

#endif
