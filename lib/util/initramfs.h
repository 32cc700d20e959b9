/* SPDX-License-Identifier: Apache-2.0 */
/* initramfs writer: a newc cpio archive in memory, optionally gzip-compressed. */
#ifndef SBX_INITRAMFS_H
#define SBX_INITRAMFS_H

#include <stddef.h>
#include <stdint.h>

/* Hard limits: archive bytes before compression, and path length. */
#define INITRAMFS_MAX      (256u << 20)
#define INITRAMFS_PATH_MAX 1024u

/* initramfs_finish() level meaning "no gzip": the kernel unpacks a plain cpio archive too. */
#define INITRAMFS_UNCOMPRESSED 0

/* An archive being written. The first failing add is remembered and makes every later add
   and initramfs_finish() fail with the same code, so callers may check only at the end. */
struct initramfs {
    uint8_t *buf;
    size_t len, cap;
    size_t max; /* cap on len, at most INITRAMFS_MAX */
    uint32_t ino;
    int err;
};

/* Starts an empty archive of at most max bytes (0: INITRAMFS_MAX). */
void initramfs_init(struct initramfs *c, size_t max);

/*
 * Entries. path is relative to the archive root; a leading '/' is dropped. Parents must be
 * added before their children (the kernel creates entries in archive order). mode holds the
 * permission bits (07777); the entry type is set by the function. Owner root, mtime 0.
 * Return 0, SBX_EINVAL (bad path or mode, or the archive would exceed its cap) or SBX_ENOMEM.
 */
int initramfs_add_dir(struct initramfs *c, const char *path, uint32_t mode);
int initramfs_add_file(struct initramfs *c, const char *path, uint32_t mode, const void *data,
                       size_t len);
int initramfs_add_chardev(struct initramfs *c, const char *path, uint32_t mode, uint32_t major,
                          uint32_t minor);
int initramfs_add_symlink(struct initramfs *c, const char *path, const char *target);

/* Appends the TRAILER!!! entry and returns the archive in a malloc'd buffer (*out, release
   with free()): gzip-compressed at level 1..9, or plain with INITRAMFS_UNCOMPRESSED. Frees
   the writer's own buffer in every case. Returns 0, the remembered add error, SBX_EINVAL
   (bad level) or SBX_ENOMEM. */
int initramfs_finish(struct initramfs *c, int level, uint8_t **out, size_t *len);

/* Releases an unfinished archive. */
void initramfs_free(struct initramfs *c);

/* The standard sandbox initramfs: /dev /proc /sys /newroot /tmp, /dev/console, /dev/null and
   /init = the embedded envd binary. Release *out with free(). Returns 0 or SBX_ENOMEM. */
int initramfs_build_envd(uint8_t **out, size_t *len);

#endif
