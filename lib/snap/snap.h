/* SPDX-License-Identifier: Apache-2.0 */
/* Snapshots: writing a running VM to a directory and building a VM from one. */
#ifndef SBX_SNAP_H
#define SBX_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "snapshot.pb-c.h"

struct sbx;
struct vcpu;

/* Files of a snapshot directory. */
#define SNAP_STATE_FILE  "state"
#define SNAP_MEMORY_FILE "memory"
#define SNAP_DISK_FILE   "disk.diff"

/* A snapshot being written: the state file has this name until it is complete. */
#define SNAP_STATE_PARTIAL "state.partial"

/*
 * Writes the running sandbox to `dir` (created; must not exist): vCPU, VM and device state,
 * guest memory, and the root disk's changes as a diff layer over the layers it keeps by path.
 * The vCPUs and the device thread stand still meanwhile and go on afterwards, unless
 * `stay_parked` (a pause: the VM is torn down next, nothing it did after the capture may
 * happen). The state file is named last: its presence marks a complete snapshot. Returns 0
 * or an SBX_E* code with the handle's message set (and `dir` removed).
 */
int snap_capture(struct sbx *sb, const char *dir, bool stay_parked);

/* snap_capture() in steps, for a VMM that may not open files (the isolated mode's child):
   snap_files_create() makes `dir` and its empty files (state under SNAP_STATE_PARTIAL);
   snap_capture_fds() writes the snapshot into them, needing no path (snap_pin() made the ones
   it records absolute); snap_files_commit() names the state file. Errors of the first and
   last are SBX_E* codes with the message in err. */
enum { SNAP_FD_STATE, SNAP_FD_MEMORY, SNAP_FD_DISK, SNAP_NFDS };
int snap_files_create(const char *dir, int fds[SNAP_NFDS], char *err, size_t errlen);
int snap_capture_fds(struct sbx *sb, const int fds[SNAP_NFDS], bool stay_parked);
int snap_files_commit(const char *dir, char *err, size_t errlen);
void snap_files_close(int fds[SNAP_NFDS]);

/* Lets a VM parked by snap_capture_fds(.., stay_parked) go on. */
void snap_unpark(struct sbx *sb);

/* Records what a snapshot names by path while the files are reachable: the root image's
   identity (size and head checksum) and the kept layers' absolute paths. Called by the first
   snapshot, or before the isolated mode's child gives up its file system. */
int snap_pin(struct sbx *sb);

/* Reads and checks the snapshot in `dir` for sbx_create(): the state file's header, checksum
   and every value, the memory file's size, the disk layers. Sets sb->restore, the resources
   (vCPUs, memory) and the root disk (rootfs_path, root_layers, root_size). The snapshot's
   envs and default user always apply (under the options'); with SNAP_KEEP_SETTINGS (resume,
   fork) its metadata too and the options must not set any; with SNAP_KEEP_ID (resume) the
   sandbox keeps its id. */
#define SNAP_KEEP_SETTINGS 1
#define SNAP_KEEP_ID       2
int snap_open(struct sbx *sb, const char *dir, int keep);

/* A state file is a header of SNAP_HEADER_SIZE bytes (magic, format, payload length and
   checksum, header checksum), then the protobuf payload (Sbx__Snap__State). */
#define SNAP_HEADER_SIZE 32

/* Fills the header in file[0, SNAP_HEADER_SIZE) for the len payload bytes that follow it. */
void snap_header_write(uint8_t *file, size_t len);

/* Parses and checks a state file's bytes (header, checksum, protobuf, every value) for a host
   whose vCPUs have XSAVE areas of xsave_size bytes. Returns NULL with *out (free with
   sbx__snap__state__free_unpacked), or what is wrong. No I/O, no KVM: fuzzed. */
const char *snap_parse(const uint8_t *file, size_t len, size_t xsave_size, Sbx__Snap__State **out);

/* Frees sb->restore. */
void snap_close(struct sbx *sb);

/* Build stages when restoring (lib/vmm/vm.c): guest memory mapped copy-on-write from the
   memory file; VM-wide and device state once the devices exist; a vCPU's state. */
int snap_map_memory(struct sbx *sb, uint8_t **mem, size_t size);
int snap_restore_devices(struct sbx *sb);
int snap_restore_vcpu(struct sbx *sb, struct vcpu *v);

/* Once vCPUs and device thread run: pending queue work, interrupts and the vsock transport
   reset (the guest's connections belong to the snapshotted host). */
void snap_resumed(struct sbx *sb);

/* Removes a snapshot directory (its known files, then the directory). */
int snap_remove(const char *dir);

#endif
