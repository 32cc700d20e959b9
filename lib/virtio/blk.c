// SPDX-License-Identifier: Apache-2.0
/* virtio-blk: a disk backed by a file, read-write, read-only or with a discarded overlay. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <linux/fs.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ids.h>

#include "sandbox.h"
#include "virtio/mmio.h"

#define SECTOR       512
#define SEG_MAX      126          /* data segments per request (+ header + status <= 128) */
#define SIZE_MAX_SEG (64u * 1024) /* bytes per data segment */
#define REQ_CAP      (SEG_MAX * SIZE_MAX_SEG + 4096) /* whole chain, with header and status */
#define OVL_BLOCK    4096u                           /* overlay granularity */

/* A diff layer file (virtio_blk_save_diff): the disk's blocks that differ from the layers
   below, at their own offsets in a sparse data area of the disk's size, then a bitmap of the
   blocks present, then a checked trailer. */
#define DIFF_MAGIC   "SBXDIFF1"
#define DIFF_VERSION 1
struct diff_trailer {
    char magic[8];
    uint32_t version, block;
    uint64_t disk_size;
    uint32_t map_crc, crc; /* crc: of the trailer's bytes before it */
};

struct layer {
    int fd;
    uint8_t *map; /* bit per OVL_BLOCK block present */
};

struct blk {
    enum blk_mode mode;
    struct layer *layers; /* BLK_EPHEMERAL: diff layers over the base file, bottom first */
    unsigned nlayers;
    int fd;               /* the backing file (O_RDONLY unless BLK_RW) */
    int ovl_fd;           /* BLK_EPHEMERAL: unlinked sparse overlay, else -1 */
    uint8_t *ovl_written; /* BLK_EPHEMERAL: bit per OVL_BLOCK block present in the overlay */
    uint8_t *dirty;       /* BLK_EPHEMERAL: overlay blocks written since virtio_blk_save_dirty */
    uint64_t size;        /* bytes */
    uint64_t capacity;    /* sectors */
    char serial[VIRTIO_BLK_ID_BYTES];
    struct queue_chain chain; /* the request being processed (too big for the stack) */
    struct iovec iov[QUEUE_MAX_SIZE];
};

/* pread/pwrite of one contiguous range, retried until done. Reads past EOF yield zeros. */
static int io_full(int fd, uint8_t *buf, size_t len, uint64_t off, bool write)
{
    while (len) {
        ssize_t n = write ? pwrite(fd, buf, len, (off_t)off) : pread(fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            if (write)
                return -1;
            memset(buf, 0, len);
            return 0;
        }
        buf += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static bool bit_test(const uint8_t *map, uint64_t blk)
{
    return map[blk / 8] & (1u << (blk % 8));
}

static bool ovl_test(const struct blk *b, uint64_t blk)
{
    return bit_test(b->ovl_written, blk);
}

/* The file holding block `blk` below the private overlay: the topmost layer that has it,
   else the base file (which reads zeros past its end). */
static int lower_fd(const struct blk *b, uint64_t blk)
{
    for (unsigned i = b->nlayers; i-- > 0;)
        if (bit_test(b->layers[i].map, blk))
            return b->layers[i].fd;
    return b->fd;
}

/* Reads or writes [off, off + len) of the disk as the guest sees it. */
static int disk_io(struct blk *b, uint8_t *buf, size_t len, uint64_t off, bool write)
{
    if (b->ovl_fd < 0)
        return io_full(b->fd, buf, len, off, write);

    /* Overlay: split at block boundaries; a block is either all in the overlay or all in the
       base, so a partial write first copies the base block up. */
    while (len) {
        uint64_t blk = off / OVL_BLOCK, in = off % OVL_BLOCK;
        size_t chunk = OVL_BLOCK - in < len ? OVL_BLOCK - in : len;

        if (!write) {
            if (io_full(ovl_test(b, blk) ? b->ovl_fd : lower_fd(b, blk), buf, chunk, off, false) <
                0)
                return -1;
        } else {
            if (!ovl_test(b, blk) && chunk != OVL_BLOCK) {
                uint8_t copy[OVL_BLOCK];
                if (io_full(lower_fd(b, blk), copy, OVL_BLOCK, blk * OVL_BLOCK, false) < 0 ||
                    io_full(b->ovl_fd, copy, OVL_BLOCK, blk * OVL_BLOCK, true) < 0)
                    return -1;
            }
            if (io_full(b->ovl_fd, buf, chunk, off, true) < 0)
                return -1;
            b->ovl_written[blk / 8] |= (uint8_t)(1u << (blk % 8));
            b->dirty[blk / 8] |= (uint8_t)(1u << (blk % 8));
        }
        buf += chunk;
        len -= chunk;
        off += chunk;
    }
    return 0;
}

/* Transfers `len` bytes at disk byte `off` to/from the chain's data segments. */
static uint8_t do_rw(struct blk *b, const struct queue_chain *c, bool write, uint64_t sector,
                     uint64_t data_off, uint64_t len)
{
    uint64_t got, pos = sector * SECTOR;
    int n;

    if (write && b->mode == BLK_RO)
        return VIRTIO_BLK_S_IOERR;
    if (len % SECTOR || sector > b->capacity || len / SECTOR > b->capacity - sector)
        return VIRTIO_BLK_S_IOERR;
    n = queue_chain_iov(c, write ? false : true, data_off, len, b->iov, QUEUE_MAX_SIZE, &got);
    for (int i = 0; i < n; i++) {
        if (disk_io(b, b->iov[i].iov_base, b->iov[i].iov_len, pos, write) < 0)
            return VIRTIO_BLK_S_IOERR;
        pos += b->iov[i].iov_len;
    }
    return VIRTIO_BLK_S_OK;
}

/* Handles one request chain. Returns the number of bytes written into the chain, or -1 if
   the chain cannot be a request at all (reported). */
static int64_t handle(struct virtio_dev *d, struct blk *b, const struct queue_chain *c)
{
    struct virtio_blk_outhdr hdr;
    uint64_t data_in, data_out;
    uint8_t status;
    uint32_t written = 0;

    if (c->rlen < sizeof(hdr) || c->wlen < 1) {
        virtio_mmio_fail(d,
                         "queue requests (0): request at head %u has %llu readable and %llu "
                         "writable bytes, no room for header and status",
                         c->head, (unsigned long long)c->rlen, (unsigned long long)c->wlen);
        return -1;
    }
    queue_chain_read(c, 0, &hdr, sizeof(hdr));
    data_out = c->rlen - sizeof(hdr); /* bytes the driver gives us after the header */
    data_in = c->wlen - 1;            /* room before the status byte */

    switch (hdr.type) {
    case VIRTIO_BLK_T_IN:
        status = do_rw(b, c, false, hdr.sector, 0, data_in);
        written = (uint32_t)data_in;
        break;
    case VIRTIO_BLK_T_OUT:
        status = do_rw(b, c, true, hdr.sector, sizeof(hdr), data_out);
        break;
    case VIRTIO_BLK_T_FLUSH:
        status = VIRTIO_BLK_S_OK;
        /* The ephemeral overlay is discarded anyway, and a read-only file has nothing dirty. */
        if (b->mode == BLK_RW && fdatasync(b->fd) < 0)
            status = VIRTIO_BLK_S_IOERR;
        break;
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = data_in < VIRTIO_BLK_ID_BYTES ? data_in : VIRTIO_BLK_ID_BYTES;
        written = (uint32_t)queue_chain_write(c, 0, b->serial, n);
        status = VIRTIO_BLK_S_OK;
        break;
    }
    default:
        status = VIRTIO_BLK_S_UNSUPP;
        break;
    }
    queue_chain_write(c, data_in, &status, 1);
    return (int64_t)written + 1;
}

static void blk_notify(struct virtio_dev *d, unsigned qi)
{
    struct blk *b = d->priv;
    struct virtqueue *q = &d->vq[qi];
    unsigned done = 0;
    int rc;

    while ((rc = queue_pop(d, q, &b->chain, REQ_CAP)) > 0) {
        int64_t written = handle(d, b, &b->chain);
        if (written < 0)
            return;
        queue_push(q, b->chain.head, (uint32_t)written);
        /* Let other devices on the thread run if the guest keeps the queue full. */
        if (++done >= QUEUE_MAX_SIZE && virtio_mmio_defer(d, qi))
            break;
    }
    if (rc >= 0)
        virtio_mmio_signal_used(d);
}

static void blk_config_read(struct virtio_dev *d, uint64_t off, uint8_t *data, uint32_t len)
{
    struct blk *b = d->priv;
    struct virtio_blk_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.capacity = b->capacity;
    cfg.size_max = SIZE_MAX_SEG;
    cfg.seg_max = SEG_MAX;
    cfg.blk_size = SECTOR;
    for (uint32_t i = 0; i < len; i++)
        data[i] = off + i < sizeof(cfg) ? ((uint8_t *)&cfg)[off + i] : 0;
}

static void blk_free(struct blk *b)
{
    if (b->fd >= 0)
        close(b->fd);
    if (b->ovl_fd >= 0)
        close(b->ovl_fd);
    for (unsigned i = 0; i < b->nlayers; i++) {
        if (b->layers[i].fd >= 0)
            close(b->layers[i].fd);
        free(b->layers[i].map);
    }
    free(b->layers);
    free(b->ovl_written);
    free(b->dirty);
    free(b);
}

static void blk_destroy(struct virtio_dev *d)
{
    blk_free(d->priv);
}

static const struct virtio_devops blk_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .features = (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
                (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH),
    .nqueues = 1,
    .config_read = blk_config_read,
    .queue_notify = blk_notify,
    .destroy = blk_destroy,
};

static const struct virtio_devops blk_ro_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .features = (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |
                (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_FLUSH) |
                (1ULL << VIRTIO_BLK_F_RO),
    .nqueues = 1,
    .config_read = blk_config_read,
    .queue_notify = blk_notify,
    .destroy = blk_destroy,
};

/* An unlinked temporary file next to other temporary files: $TMPDIR, else /var/tmp. */
static int open_overlay(char *err, size_t errlen)
{
    const char *dirs[] = {getenv("TMPDIR"), "/var/tmp", "/tmp"};
    int last = 0;

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char path[4096];
        int fd;

        if (!dirs[i] || !dirs[i][0])
            continue;
        fd = open(dirs[i], O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        last = errno;
        /* Some filesystems lack O_TMPFILE: create and unlink at once instead. */
        if (snprintf(path, sizeof(path), "%s/sbx-overlay-XXXXXX", dirs[i]) >= (int)sizeof(path))
            continue;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0) {
            unlink(path);
            return fd;
        }
        last = errno;
    }
    snprintf(err, errlen, "virtio-blk: cannot create the ephemeral overlay file: %s",
             strerror(last));
    return -1;
}

static uint64_t map_bytes(uint64_t disk_size)
{
    return (disk_size + OVL_BLOCK - 1) / OVL_BLOCK / 8 + 1;
}

/* Opens and checks diff layer `path` of a disk of `size` bytes. */
static int open_layer(struct layer *l, const char *path, uint64_t size, char *err, size_t errlen)
{
    struct diff_trailer t;
    struct stat st;
    uint64_t mlen = map_bytes(size);

    l->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (l->fd < 0) {
        snprintf(err, errlen, "virtio-blk: disk layer %s: %s", path, strerror(errno));
        return SBX_EIMAGE;
    }
    if (fstat(l->fd, &st) < 0 || (uint64_t)st.st_size != size + mlen + sizeof(t) ||
        io_full(l->fd, (uint8_t *)&t, sizeof(t), size + mlen, false) < 0 ||
        memcmp(t.magic, DIFF_MAGIC, 8) || t.version != DIFF_VERSION || t.block != OVL_BLOCK ||
        t.disk_size != size ||
        t.crc != (uint32_t)crc32(0, (const Bytef *)&t, offsetof(struct diff_trailer, crc))) {
        snprintf(err, errlen,
                 "virtio-blk: disk layer %s is not a diff layer of a %llu-byte disk (truncated, "
                 "corrupted or from another image)",
                 path, (unsigned long long)size);
        return SBX_EIMAGE;
    }
    l->map = malloc(mlen);
    if (!l->map) {
        snprintf(err, errlen, "virtio-blk: out of memory");
        return SBX_ENOMEM;
    }
    if (io_full(l->fd, l->map, mlen, size, false) < 0 ||
        t.map_crc != (uint32_t)crc32(0, l->map, (uInt)mlen)) {
        snprintf(err, errlen, "virtio-blk: disk layer %s: corrupted block map", path);
        return SBX_EIMAGE;
    }
    return 0;
}

int virtio_blk_create(struct virtio_dev **out, const struct devhost *host,
                      const struct blk_config *cfg, uint64_t mmio_base, uint32_t gsi, char *err,
                      size_t errlen)
{
    struct blk *b;
    struct stat st;
    int rc;

    *out = NULL;
    if (!cfg || !cfg->path || (cfg->serial && strlen(cfg->serial) > VIRTIO_BLK_ID_BYTES) ||
        (cfg->mode != BLK_RW && cfg->mode != BLK_RO && cfg->mode != BLK_EPHEMERAL)) {
        snprintf(err, errlen, "virtio-blk: invalid disk configuration");
        return SBX_EINVAL;
    }
    b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "virtio-blk: out of memory");
        return SBX_ENOMEM;
    }
    b->mode = cfg->mode;
    b->ovl_fd = -1;
    if (cfg->serial)
        memcpy(b->serial, cfg->serial, strlen(cfg->serial));
    b->fd = open(cfg->path, (cfg->mode == BLK_RW ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (b->fd < 0) {
        snprintf(err, errlen, "virtio-blk: open %s: %s", cfg->path, strerror(errno));
        rc = SBX_EIMAGE;
        goto fail;
    }
    if (fstat(b->fd, &st) < 0) {
        snprintf(err, errlen, "virtio-blk: stat %s: %s", cfg->path, strerror(errno));
        rc = SBX_EIO;
        goto fail;
    }
    if (S_ISBLK(st.st_mode)) {
        if (ioctl(b->fd, BLKGETSIZE64, &b->size) < 0) {
            snprintf(err, errlen, "virtio-blk: BLKGETSIZE64 %s: %s", cfg->path, strerror(errno));
            rc = SBX_EIO;
            goto fail;
        }
    } else if (S_ISREG(st.st_mode)) {
        b->size = (uint64_t)st.st_size;
    } else {
        snprintf(err, errlen, "virtio-blk: %s is neither a regular file nor a block device",
                 cfg->path);
        rc = SBX_EIMAGE;
        goto fail;
    }
    if ((cfg->nlayers || cfg->size) && cfg->mode != BLK_EPHEMERAL) {
        snprintf(err, errlen, "virtio-blk: layers and a size need an ephemeral disk");
        rc = SBX_EINVAL;
        goto fail;
    }
    if (cfg->size) {
        if (cfg->size < b->size || cfg->size % OVL_BLOCK) {
            snprintf(err, errlen,
                     "virtio-blk: disk size %llu is smaller than the image (%llu) or not a "
                     "multiple of %u",
                     (unsigned long long)cfg->size, (unsigned long long)b->size, OVL_BLOCK);
            rc = SBX_EINVAL;
            goto fail;
        }
        b->size = cfg->size;
    }
    b->capacity = b->size / SECTOR;
    if (cfg->nlayers) {
        b->layers = calloc(cfg->nlayers, sizeof(*b->layers));
        if (!b->layers) {
            snprintf(err, errlen, "virtio-blk: out of memory");
            rc = SBX_ENOMEM;
            goto fail;
        }
        for (unsigned i = 0; i < cfg->nlayers; i++) {
            b->nlayers = i + 1;
            if ((rc = open_layer(&b->layers[i], cfg->layers[i], b->size, err, errlen)) < 0)
                goto fail;
        }
    }

    if (cfg->mode == BLK_EPHEMERAL) {
        b->ovl_fd = open_overlay(err, errlen);
        if (b->ovl_fd < 0) {
            rc = SBX_EIO;
            goto fail;
        }
        if (ftruncate(b->ovl_fd, (off_t)b->size) < 0) {
            snprintf(err, errlen, "virtio-blk: sizing the overlay: %s", strerror(errno));
            rc = SBX_EIO;
            goto fail;
        }
        b->ovl_written = calloc(map_bytes(b->size), 1);
        b->dirty = calloc(map_bytes(b->size), 1);
        if (!b->ovl_written || !b->dirty) {
            snprintf(err, errlen, "virtio-blk: out of memory");
            rc = SBX_ENOMEM;
            goto fail;
        }
    }

    rc = virtio_mmio_create(out, host, cfg->mode == BLK_RO ? &blk_ro_ops : &blk_ops, mmio_base, gsi,
                            err, errlen);
    if (rc < 0)
        goto fail;
    (*out)->priv = b;
    (*out)->vq[0].name = "requests";
    return 0;

fail:
    blk_free(b);
    return rc;
}

uint64_t virtio_blk_size(struct virtio_dev *d)
{
    return ((struct blk *)d->priv)->size;
}

/* Copies [off, off + len) from fd `from` to the same offsets of `to`. */
static int copy_range(int from, int to, uint64_t off, uint64_t len, uint8_t *buf, size_t cap)
{
    while (len) {
        size_t n = len < cap ? (size_t)len : cap;
        if (io_full(from, buf, n, off, false) < 0 || io_full(to, buf, n, off, true) < 0)
            return -1;
        off += n;
        len -= n;
    }
    return 0;
}

/* The file holding block `blk` for a diff: the overlay if it has it, else the topmost layer
   at or above `keep` that has it; -1 when the block is not part of the diff. dirty_only: only
   overlay blocks written since the last such diff. */
static int diff_source(const struct blk *b, uint64_t blk, unsigned keep, bool dirty_only)
{
    if (dirty_only)
        return bit_test(b->dirty, blk) ? b->ovl_fd : -1;
    if (ovl_test(b, blk))
        return b->ovl_fd;
    for (unsigned i = b->nlayers; i-- > keep;)
        if (bit_test(b->layers[i].map, blk))
            return b->layers[i].fd;
    return -1;
}

static int save_diff(struct virtio_dev *d, int fd, unsigned keep, bool dirty_only, uint64_t *bytes,
                     char *err, size_t errlen)
{
    struct blk *b = d->priv;
    enum { CHUNK = 1u << 20 };
    int rc = 0;

    if (b->mode != BLK_EPHEMERAL || keep > b->nlayers) {
        snprintf(err, errlen, "virtio-blk: only an ephemeral disk has a diff to save");
        return SBX_EINVAL;
    }
    uint64_t mlen = map_bytes(b->size), nblocks = (b->size + OVL_BLOCK - 1) / OVL_BLOCK;
    uint8_t *map = calloc(mlen, 1), *buf = malloc(CHUNK);
    if (!map || !buf) {
        free(map);
        free(buf);
        snprintf(err, errlen, "virtio-blk: out of memory");
        return SBX_ENOMEM;
    }
    pthread_mutex_lock(&d->lock);
    *bytes = 0;
    if (ftruncate(fd, (off_t)b->size) < 0)
        rc = -1;
    /* Runs of blocks that come from the same file are copied in one go. */
    uint64_t run_start = 0, run_len = 0;
    int run_fd = -1;
    for (uint64_t blk = 0; rc == 0 && blk <= nblocks; blk++) {
        int src = blk < nblocks ? diff_source(b, blk, keep, dirty_only) : -1;
        if (run_len && (src != run_fd || run_len >= CHUNK / OVL_BLOCK)) {
            uint64_t off = run_start * OVL_BLOCK, len = run_len * OVL_BLOCK;
            if (off + len > b->size)
                len = b->size - off;
            if (copy_range(run_fd, fd, off, len, buf, CHUNK) < 0)
                rc = -1;
            *bytes += len;
            run_len = 0;
        }
        if (src >= 0) {
            map[blk / 8] |= (uint8_t)(1u << (blk % 8));
            if (!run_len) {
                run_start = blk;
                run_fd = src;
            }
            run_len++;
        }
    }
    if (rc == 0 && dirty_only)
        memset(b->dirty, 0, mlen);
    pthread_mutex_unlock(&d->lock);
    struct diff_trailer t = {.version = DIFF_VERSION, .block = OVL_BLOCK, .disk_size = b->size};
    memcpy(t.magic, DIFF_MAGIC, 8);
    t.map_crc = (uint32_t)crc32(0, map, (uInt)mlen);
    t.crc = (uint32_t)crc32(0, (const Bytef *)&t, offsetof(struct diff_trailer, crc));
    if (rc == 0 && (io_full(fd, map, mlen, b->size, true) < 0 ||
                    io_full(fd, (uint8_t *)&t, sizeof(t), b->size + mlen, true) < 0))
        rc = -1;
    if (rc < 0) {
        snprintf(err, errlen, "virtio-blk: writing the disk diff: %s", strerror(errno));
        rc = SBX_EIO;
    }
    free(map);
    free(buf);
    return rc;
}

int virtio_blk_save_diff(struct virtio_dev *d, int fd, unsigned keep, uint64_t *bytes, char *err,
                         size_t errlen)
{
    return save_diff(d, fd, keep, false, bytes, err, errlen);
}

int virtio_blk_save_dirty(struct virtio_dev *d, int fd, uint64_t *bytes, char *err, size_t errlen)
{
    return save_diff(d, fd, 0, true, bytes, err, errlen);
}
