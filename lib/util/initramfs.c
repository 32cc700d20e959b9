// SPDX-License-Identifier: Apache-2.0
/* initramfs writer: newc cpio entries in a growing buffer, gzip via zlib, the envd image. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "sandbox.h"
#include "util/initramfs.h"

/* The guest agent, linked in by envd_blob.S. */
extern const unsigned char sbx_envd_blob[], sbx_envd_blob_end[];

/* "070701" + 13 fields of 8 hex digits (see the kernel's Documentation/driver-api/
   early-userspace/buffer-format.rst). */
#define NEWC_HDR 110u

/* Plain, measured (envd 0.83 MiB): building the plain archive takes ~0.5 ms; gzip -1 adds
   ~16 ms on the host and a decompression pass in the guest (~4 ms natively; under QEMU TCG the
   kernel's "Unpacking initramfs" took 88 ms instead of 10 ms), to save 0.45 MiB of copying
   into guest RAM, which costs well under a millisecond. Plain also works without RD_GZIP. */
#define ENVD_LEVEL INITRAMFS_UNCOMPRESSED

void initramfs_init(struct initramfs *c, size_t max)
{
    memset(c, 0, sizeof(*c));
    c->max = (max == 0 || max > INITRAMFS_MAX) ? INITRAMFS_MAX : max;
    /* Inode numbers only need to be distinct: the kernel links entries with equal ino and
       nlink >= 2 as hard links. */
    c->ino = 1;
}

void initramfs_free(struct initramfs *c)
{
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

static int set_error(struct initramfs *c, int code)
{
    if (!c->err)
        c->err = code;
    return c->err;
}

static size_t pad4(size_t n)
{
    return (4 - (n & 3)) & 3;
}

/* Makes room for n more bytes within the cap. */
static int reserve(struct initramfs *c, size_t n)
{
    if (n > c->max || c->len > c->max - n)
        return set_error(c, SBX_EINVAL);
    if (c->len + n <= c->cap)
        return 0;
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + n)
        cap = cap > c->max / 2 ? c->max : cap * 2;
    uint8_t *b = realloc(c->buf, cap);
    if (!b)
        return set_error(c, SBX_ENOMEM);
    c->buf = b;
    c->cap = cap;
    return 0;
}

/* Archive name for path: no leading '/', no empty, "." or ".." components. */
static const char *check_path(const char *path)
{
    if (!path)
        return NULL;
    while (*path == '/')
        path++;
    size_t n = strlen(path);
    if (n == 0 || n >= INITRAMFS_PATH_MAX)
        return NULL;
    const char *p = path;
    while (*p) {
        const char *e = strchrnul(p, '/');
        size_t cl = (size_t)(e - p);
        if (cl == 0 || (cl == 1 && p[0] == '.') || (cl == 2 && p[0] == '.' && p[1] == '.'))
            return NULL;
        p = *e ? e + 1 : e;
        if (*e && !*p)
            return NULL; /* trailing '/' */
    }
    return path;
}

/* Appends one entry: header, name, padding, data, padding. */
static int add_entry(struct initramfs *c, const char *name, uint32_t mode, uint32_t nlink,
                     uint32_t rmaj, uint32_t rmin, const void *data, size_t dlen)
{
    size_t nlen = strlen(name) + 1;
    size_t head = NEWC_HDR + nlen;
    if (dlen > UINT32_MAX)
        return set_error(c, SBX_EINVAL);
    size_t total = head + pad4(head) + dlen + pad4(dlen);
    int r = reserve(c, total);
    if (r)
        return r;
    uint8_t *p = c->buf + c->len;
    /* ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize
       check; snprintf writes a NUL after the 110 bytes, which the name overwrites. */
    snprintf((char *)p, NEWC_HDR + 1, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
             c->ino, mode, 0u, 0u, nlink, 0u, (uint32_t)dlen, 0u, 0u, rmaj, rmin, (uint32_t)nlen,
             0u);
    memcpy(p + NEWC_HDR, name, nlen);
    memset(p + head, 0, pad4(head));
    p += head + pad4(head);
    if (dlen)
        memcpy(p, data, dlen);
    memset(p + dlen, 0, pad4(dlen));
    c->len += total;
    c->ino++;
    return 0;
}

/* Common checks of the public add functions. */
static const char *begin(struct initramfs *c, const char *path, uint32_t mode)
{
    if (c->err)
        return NULL;
    const char *name = check_path(path);
    if (!name || (mode & ~07777u)) {
        set_error(c, SBX_EINVAL);
        return NULL;
    }
    return name;
}

int initramfs_add_dir(struct initramfs *c, const char *path, uint32_t mode)
{
    const char *name = begin(c, path, mode);
    if (!name)
        return c->err;
    return add_entry(c, name, S_IFDIR | mode, 2, 0, 0, NULL, 0);
}

int initramfs_add_file(struct initramfs *c, const char *path, uint32_t mode, const void *data,
                       size_t len)
{
    const char *name = begin(c, path, mode);
    if (!name)
        return c->err;
    if (len && !data)
        return set_error(c, SBX_EINVAL);
    return add_entry(c, name, S_IFREG | mode, 1, 0, 0, data, len);
}

int initramfs_add_chardev(struct initramfs *c, const char *path, uint32_t mode, uint32_t major,
                          uint32_t minor)
{
    const char *name = begin(c, path, mode);
    if (!name)
        return c->err;
    /* Linux device numbers: 12-bit major, 20-bit minor. */
    if (major >= (1u << 12) || minor >= (1u << 20))
        return set_error(c, SBX_EINVAL);
    return add_entry(c, name, S_IFCHR | mode, 1, major, minor, NULL, 0);
}

int initramfs_add_symlink(struct initramfs *c, const char *path, const char *target)
{
    const char *name = begin(c, path, 0777);
    if (!name)
        return c->err;
    size_t tlen = target ? strlen(target) : 0;
    if (tlen == 0 || tlen >= INITRAMFS_PATH_MAX)
        return set_error(c, SBX_EINVAL);
    /* The link target is the entry's data, without a NUL. */
    return add_entry(c, name, S_IFLNK | 0777, 1, 0, 0, target, tlen);
}

static int gzip(const uint8_t *in, size_t len, int level, uint8_t **out, size_t *outlen)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    /* windowBits 15 + 16: a gzip wrapper, which is what the kernel's RD_GZIP expects. */
    if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return SBX_ENOMEM;
    uLong bound = deflateBound(&z, (uLong)len);
    uint8_t *buf = malloc(bound);
    if (!buf) {
        deflateEnd(&z);
        return SBX_ENOMEM;
    }
    /* len is capped at INITRAMFS_MAX, so it fits zlib's 32-bit counters in one call. */
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)bound;
    int zr = deflate(&z, Z_FINISH);
    size_t n = bound - z.avail_out;
    deflateEnd(&z);
    if (zr != Z_STREAM_END) {
        free(buf);
        return SBX_ENOMEM;
    }
    *out = buf;
    *outlen = n;
    return 0;
}

int initramfs_finish(struct initramfs *c, int level, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (level < INITRAMFS_UNCOMPRESSED || level > 9)
        set_error(c, SBX_EINVAL);
    if (!c->err)
        add_entry(c, "TRAILER!!!", 0, 1, 0, 0, NULL, 0);
    int r = c->err;
    if (!r && level == INITRAMFS_UNCOMPRESSED) {
        *out = c->buf; /* hand over the buffer itself: no copy */
        *len = c->len;
        c->buf = NULL;
    } else if (!r) {
        r = gzip(c->buf, c->len, level, out, len);
    }
    initramfs_free(c);
    return r;
}

int initramfs_build_envd(uint8_t **out, size_t *len)
{
    size_t blob = (size_t)(sbx_envd_blob_end - sbx_envd_blob);
    struct initramfs c;
    initramfs_init(&c, 0);
    /* envd mounts devtmpfs, proc and sysfs over these and the root disk on /newroot; the
       console node lets the kernel give PID 1 its stdio before devtmpfs is mounted. */
    initramfs_add_dir(&c, "dev", 0755);
    initramfs_add_chardev(&c, "dev/console", 0600, 5, 1);
    initramfs_add_chardev(&c, "dev/null", 0666, 1, 3);
    initramfs_add_dir(&c, "proc", 0555);
    initramfs_add_dir(&c, "sys", 0555);
    initramfs_add_dir(&c, "newroot", 0755);
    initramfs_add_dir(&c, "tmp", 01777);
    initramfs_add_file(&c, "init", 0755, sbx_envd_blob, blob);
    int r = initramfs_finish(&c, ENVD_LEVEL, out, len);
    /* Only allocation can fail here: every entry above is valid and far below the cap. */
    return r ? SBX_ENOMEM : 0;
}
