/* SPDX-License-Identifier: Apache-2.0 */
/* Building a VM from a sandbox's options, stage by stage, and tearing it down in reverse. */
#ifndef SBX_VM_H
#define SBX_VM_H

struct sbx;

/* Runs every build stage; on failure unwinds what was built and returns the stage's SBX_E*
   code with the handle's message set. On success the vCPUs and the device thread run. */
int vm_build(struct sbx *sb);

/* Stops the VM (if running) and undoes every completed stage. Idempotent. */
void vm_teardown(struct sbx *sb);

/* vm_teardown, with the release of the VM, its vCPUs and guest memory (slow in the kernel)
   left to a detached thread. For sbx_destroy(). */
void vm_teardown_async(struct sbx *sb);

/* Closes fd / unmaps [addr, addr + len) now, or later during vm_teardown_async. */
void vm_release_fd(struct sbx *sb, int fd);
void vm_release_map(struct sbx *sb, void *addr, size_t len);

/* Parks the device thread (its loop keeps every event) and lets it go on: while it stands
   still, no device touches guest memory or its own state. */
void vm_io_pause(struct sbx *sb);
void vm_io_resume(struct sbx *sb);

/* Host-side connection to the guest's vsock port (see virtio_vsock_connect). */
int vm_vsock_connect(struct sbx *sb, unsigned port, int *fd);

#endif
