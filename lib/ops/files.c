// SPDX-License-Identifier: Apache-2.0
/* Files in the guest: streamed writes and reads, stat, list, mkdir, remove, rename. */

/*
 * Every call is one envd operation on a pooled connection (lib/agent/conn.h). Streams
 * (sbx_file) own their connection until they end; it goes back to the pool only when envd is
 * known to be done with the operation (FileWritten / Error / the last FileData), otherwise it
 * is closed, which makes envd drop the operation (and remove an unfinished temporary file).
 *
 * Everything from the guest is checked: frame ids and bodies, sizes against what was asked,
 * counts against caps, strings copied with their lengths bounded by the frame size.
 */
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/conn.h"
#include "internal.h"
#include "ops/files.h"

#define CHUNK          (64u << 10)  /* FileData payload, both directions */
#define READ_FILE_MAX  (1ull << 30) /* sbx_read_file default cap */
#define LIST_MAX_HOST  1000000u     /* entries accepted from one ListDir */
#define LIST_DEPTH_MAX 4096u        /* deeper than any path can be */

/* --- helpers ------------------------------------------------------------------------------- */

int files_check_path(sbx *sb, const char *path, const char *what)
{
    if (!path)
        return sbx_seterr(sb, SBX_EINVAL, "%s: the path is NULL", what);
    if (!path[0])
        return sbx_seterr(sb, SBX_EINVAL, "%s: the path is empty", what);
    if (strlen(path) > FILES_PATH_MAX)
        return sbx_seterr(sb, SBX_EINVAL, "%s: the path is longer than %u bytes", what,
                          FILES_PATH_MAX);
    return 0;
}

/* The call's error for an envd Error frame: "<what>: <envd's message>". */
static int guest_error(struct call *c, const Sbx__Agent__Error *e, const char *what)
{
    char msg[512];
    agent_error_message(e, msg, sizeof(msg));
    return call_fail(c, agent_error_code(e), "%s: %s", what, msg);
}

/* Each answer gets the full answer time, however long the whole transfer takes. */
static void refresh_deadline(struct call *c)
{
    c->w.deadline_ns = deadline_after_ms(FILES_ANSWER_MS);
}

/* --- streams (sbx_file) -------------------------------------------------------------------- */

struct sbx_file {
    struct sbx *sb;
    struct agent_conn *conn; /* NULL once given back or closed */
    uint32_t id;
    bool writing;
    int err; /* sticky error of a failed stream (its message is repeated) */
    char errmsg[512];
    /* Reading: the current FileData and how much of it was consumed. */
    Sbx__Agent__Frame *cur;
    size_t cur_off;
    bool eof;
    uint64_t limit; /* bytes envd may send at most (length, or UINT64_MAX) */
    uint64_t got;
    char path[128]; /* for messages (truncated) */
};

static void file_release(struct sbx_file *f, bool reusable)
{
    agent_conn_put(f->sb, f->conn, reusable);
    f->conn = NULL;
}

/* Remembers a stream's failure (the current thread's message) and gives up the connection. */
static int file_fail(struct sbx_file *f, int code, bool reusable)
{
    f->err = code;
    snprintf(f->errmsg, sizeof(f->errmsg), "%s", sbx_errmsg(f->sb));
    file_release(f, reusable);
    return code;
}

static int file_sticky(struct sbx_file *f)
{
    return sbx_seterr(f->sb, f->err, "%s", f->errmsg);
}

/* The handle's memory, and its hold on the sandbox (lib/sandbox.c, sbx_ref()). */
static void file_free(struct sbx_file *f)
{
    sbx_unref(f->sb);
    free(f);
}

static struct sbx_file *file_new(sbx *sb, const char *path, bool writing)
{
    struct sbx_file *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->sb = sbx_ref(sb);
    f->writing = writing;
    snprintf(f->path, sizeof(f->path), "%s", path);
    return f;
}

int sbx_file_create(sbx *sb, const char *path, const sbx_file_options *o, sbx_file **out)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_file_create: out is NULL");
    *out = NULL;
    int r = files_check_path(sb, path, "sbx_file_create");
    if (r)
        return r;
    if (o && o->version < 1)
        return sbx_seterr(sb, SBX_EINVAL,
                          "sbx_file_create: options.version is 0 (use "
                          "SBX_FILE_OPTIONS_INIT)");
    if (o && (o->mode & ~07777u))
        return sbx_seterr(sb, SBX_EINVAL, "sbx_file_create: mode %#o has bits beyond 07777",
                          o->mode);
    struct sbx_file *f = file_new(sb, path, true);
    if (!f)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    struct call c;
    if ((r = call_begin(sb, &c, FILES_ANSWER_MS)) < 0) {
        file_free(f);
        return r;
    }
    r = agent_conn_get(&c, &f->conn);
    if (r == 0) {
        Sbx__Agent__FileWrite fw = SBX__AGENT__FILE_WRITE__INIT;
        fw.path = (char *)path;
        fw.mode = o ? o->mode : 0;
        fw.user = (char *)(o && o->user ? o->user : "");
        fw.append = o ? o->append != 0 : false;
        Sbx__Agent__Frame fr = SBX__AGENT__FRAME__INIT;
        fr.id = f->id = agent_conn_id(f->conn);
        fr.body_case = SBX__AGENT__FRAME__BODY_FILE_WRITE;
        fr.file_write = &fw;
        /* No answer comes until the end: errors show up in a later write or the commit. */
        r = agent_conn_send(&c, f->conn, &fr);
    }
    call_end(&c);
    if (r < 0) {
        file_release(f, false);
        file_free(f);
        return r;
    }
    *out = f;
    return 0;
}

/* During a write envd answers only when something failed. Looks (without waiting) whether
   it did. Returns 0 when nothing came, or the failure (the stream is then over). */
static int write_check(struct call *c, struct sbx_file *f)
{
    if (!agent_conn_buffered(f->conn)) {
        struct pollfd p = {.fd = f->conn->fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            return 0;
    }
    Sbx__Agent__Frame *fr;
    int r = agent_conn_recv(c, f->conn, &fr);
    if (r < 0)
        return file_fail(f, r, false);
    if (fr->body_case == SBX__AGENT__FRAME__BODY_ERROR && fr->id == f->id) {
        r = guest_error(c, fr->error, "sbx_file_write");
        frame_free(fr);
        /* envd swallows the rest of the request up to eof: end it, and the connection is
           in step again. */
        Sbx__Agent__FileData d = SBX__AGENT__FILE_DATA__INIT;
        d.eof = true;
        Sbx__Agent__Frame e = SBX__AGENT__FRAME__INIT;
        e.id = f->id;
        e.body_case = SBX__AGENT__FRAME__BODY_FILE_DATA;
        e.file_data = &d;
        char keep[SBX_ERRMSG_MAX];
        snprintf(keep, sizeof(keep), "%s", sbx_errmsg(f->sb));
        bool sent = agent_conn_send(c, f->conn, &e) == 0;
        sbx_seterr(f->sb, r, "%s", keep);
        return file_fail(f, r, sent && r != SBX_EPROTO);
    }
    r = call_fail(c, SBX_EPROTO, "write %s: the guest agent sent %s (id %u) during the write",
                  f->path, frame_body_name(fr->body_case), fr->id);
    frame_free(fr);
    return file_fail(f, r, false);
}

static int write_data(struct call *c, struct sbx_file *f, const uint8_t *p, size_t len, bool eof)
{
    Sbx__Agent__FileData d = SBX__AGENT__FILE_DATA__INIT;
    d.data.data = (uint8_t *)p;
    d.data.len = len;
    d.eof = eof;
    Sbx__Agent__Frame fr = SBX__AGENT__FRAME__INIT;
    fr.id = f->id;
    fr.body_case = SBX__AGENT__FRAME__BODY_FILE_DATA;
    fr.file_data = &d;
    refresh_deadline(c);
    int r = agent_conn_send(c, f->conn, &fr);
    return r < 0 ? file_fail(f, r, false) : 0;
}

int sbx_file_write(sbx_file *f, const void *data, size_t len)
{
    if (!f)
        return SBX_EINVAL;
    if (!f->writing)
        return sbx_seterr(f->sb, SBX_EINVAL, "sbx_file_write: %s was opened for reading", f->path);
    if (!data && len)
        return sbx_seterr(f->sb, SBX_EINVAL, "sbx_file_write: data is NULL");
    if (f->err)
        return file_sticky(f);
    if (!f->conn)
        return sbx_seterr(f->sb, SBX_EINVAL, "sbx_file_write: the write has ended");
    struct call c;
    int r = call_begin(f->sb, &c, FILES_ANSWER_MS);
    if (r < 0)
        return r;
    const uint8_t *p = data;
    while (r == 0 && len > 0) {
        /* An early Error (ENOSPC, say) stops the transfer at once instead of after
           sending everything. */
        if ((r = write_check(&c, f)) < 0)
            break;
        size_t n = len < CHUNK ? len : CHUNK;
        r = write_data(&c, f, p, n, false);
        p += n;
        len -= n;
    }
    call_end(&c);
    return r;
}

int sbx_file_commit(sbx_file *f)
{
    if (!f)
        return SBX_EINVAL;
    struct sbx *sb = f->sb;
    int r;
    if (!f->writing) {
        r = sbx_seterr(sb, SBX_EINVAL, "sbx_file_commit: %s was opened for reading", f->path);
        sbx_file_close(f);
        return r;
    }
    if (f->err || !f->conn) {
        r = f->err ? file_sticky(f) : sbx_seterr(sb, SBX_EINVAL, "sbx_file_commit: ended");
        sbx_file_close(f);
        return r;
    }
    struct call c;
    if ((r = call_begin(sb, &c, FILES_ANSWER_MS)) < 0) {
        sbx_file_close(f);
        return r;
    }
    if ((r = write_check(&c, f)) == 0 && (r = write_data(&c, f, NULL, 0, true)) == 0) {
        /* fsync and rename of a big file may take a while: one full answer time. */
        refresh_deadline(&c);
        Sbx__Agent__Frame *fr;
        r = agent_conn_recv(&c, f->conn, &fr);
        if (r < 0) {
            file_fail(f, r, false);
        } else if (fr->id == f->id && fr->body_case == SBX__AGENT__FRAME__BODY_FILE_WRITTEN) {
            file_release(f, true);
        } else if (fr->id == f->id && fr->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            r = guest_error(&c, fr->error, "sbx_file_commit");
            file_release(f, r != SBX_EPROTO);
        } else {
            r = call_fail(&c, SBX_EPROTO, "write %s: the guest agent answered %s (id %u)", f->path,
                          frame_body_name(fr->body_case), fr->id);
            file_release(f, false);
        }
        frame_free(fr);
    }
    call_end(&c);
    sbx_file_close(f);
    return r;
}

int sbx_file_open(sbx *sb, const char *path, uint64_t offset, uint64_t length, sbx_file **out,
                  uint64_t *size)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_file_open: out is NULL");
    *out = NULL;
    if (size)
        *size = 0;
    int r = files_check_path(sb, path, "sbx_file_open");
    if (r)
        return r;
    if (offset > INT64_MAX)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_file_open: offset out of range");
    struct sbx_file *f = file_new(sb, path, false);
    if (!f)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    f->limit = length ? length : UINT64_MAX;
    struct call c;
    if ((r = call_begin(sb, &c, FILES_ANSWER_MS)) < 0) {
        file_free(f);
        return r;
    }
    Sbx__Agent__Frame *fr = NULL;
    r = agent_conn_get(&c, &f->conn);
    if (r == 0) {
        Sbx__Agent__FileRead rq = SBX__AGENT__FILE_READ__INIT;
        rq.path = (char *)path;
        rq.offset = offset;
        rq.length = length;
        Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
        req.id = f->id = agent_conn_id(f->conn);
        req.body_case = SBX__AGENT__FRAME__BODY_FILE_READ;
        req.file_read = &rq;
        r = agent_conn_send(&c, f->conn, &req);
    }
    if (r == 0)
        r = agent_conn_recv(&c, f->conn, &fr);
    if (r == 0) {
        if (fr->id == f->id && fr->body_case == SBX__AGENT__FRAME__BODY_FILE_READ_START) {
            if (size)
                *size = fr->file_read_start->size;
        } else if (fr->id == f->id && fr->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            r = guest_error(&c, fr->error, "sbx_file_open");
            file_release(f, r != SBX_EPROTO); /* envd is done with the request */
        } else {
            r = call_fail(&c, SBX_EPROTO, "read %s: the guest agent answered %s (id %u)", f->path,
                          frame_body_name(fr->body_case), fr->id);
        }
    }
    frame_free(fr);
    call_end(&c);
    if (r < 0) {
        file_release(f, false);
        file_free(f);
        return r;
    }
    *out = f;
    return 0;
}

int sbx_file_read(sbx_file *f, void *buf, size_t cap)
{
    if (!f)
        return SBX_EINVAL;
    if (f->writing)
        return sbx_seterr(f->sb, SBX_EINVAL, "sbx_file_read: %s was opened for writing", f->path);
    if (!buf && cap)
        return sbx_seterr(f->sb, SBX_EINVAL, "sbx_file_read: buf is NULL");
    if (f->err)
        return file_sticky(f);
    if (cap > (1u << 30))
        cap = 1u << 30; /* the count must fit the int result */
    struct call c;
    bool begun = false;
    int r = 0;
    while (!f->cur || f->cur_off == f->cur->file_data->data.len) {
        frame_free(f->cur);
        f->cur = NULL;
        if (f->eof || cap == 0)
            break;
        if (!begun) {
            if ((r = call_begin(f->sb, &c, FILES_ANSWER_MS)) < 0)
                return r;
            begun = true;
        }
        Sbx__Agent__Frame *fr;
        if ((r = agent_conn_recv(&c, f->conn, &fr)) < 0) {
            file_fail(f, r, false);
            break;
        }
        if (fr->id == f->id && fr->body_case == SBX__AGENT__FRAME__BODY_FILE_DATA) {
            const Sbx__Agent__FileData *d = fr->file_data;
            if (d->data.len > f->limit - f->got) {
                frame_free(fr);
                r = file_fail(f,
                              call_fail(&c, SBX_EPROTO,
                                        "read %s: the guest agent sent more than was asked for",
                                        f->path),
                              false);
                break;
            }
            f->got += d->data.len;
            f->cur = fr;
            f->cur_off = 0;
            if (d->eof) {
                f->eof = true;
                file_release(f, true);
            }
        } else if (fr->id == f->id && fr->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            r = guest_error(&c, fr->error, "sbx_file_read");
            frame_free(fr);
            file_fail(f, r, r != SBX_EPROTO);
            break;
        } else {
            r = call_fail(&c, SBX_EPROTO, "read %s: the guest agent sent %s (id %u)", f->path,
                          frame_body_name(fr->body_case), fr->id);
            frame_free(fr);
            file_fail(f, r, false);
            break;
        }
    }
    if (begun)
        call_end(&c);
    if (r < 0)
        return r;
    if (!f->cur)
        return 0;
    const ProtobufCBinaryData *d = &f->cur->file_data->data;
    size_t n = d->len - f->cur_off;
    if (n > cap)
        n = cap;
    memcpy(buf, d->data + f->cur_off, n);
    f->cur_off += n;
    return (int)n;
}

void sbx_file_close(sbx_file *f)
{
    if (!f)
        return;
    /* An unfinished stream: closing the connection makes envd drop it (and the temporary
       file of a write). */
    file_release(f, false);
    frame_free(f->cur);
    file_free(f);
}

int sbx_write_file(sbx *sb, const char *path, const void *data, size_t len, unsigned mode)
{
    if (!sb)
        return SBX_EINVAL;
    int r = files_check_path(sb, path, "sbx_write_file");
    if (r)
        return r;
    if (!data && len)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_write_file: data is NULL");
    sbx_file_options o = SBX_FILE_OPTIONS_INIT;
    o.mode = mode;
    sbx_file *f;
    if ((r = sbx_file_create(sb, path, &o, &f)) < 0)
        return r;
    if ((r = sbx_file_write(f, data, len)) < 0) {
        sbx_file_close(f);
        return r;
    }
    return sbx_file_commit(f);
}

int sbx_read_file(sbx *sb, const char *path, void **data, size_t *len, size_t max)
{
    if (!sb)
        return SBX_EINVAL;
    if (!data || !len)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_read_file: data or len is NULL");
    *data = NULL;
    *len = 0;
    if (max == 0)
        max = READ_FILE_MAX;
    if (max > SIZE_MAX / 2)
        max = SIZE_MAX / 2; /* max + 1 must not wrap */
    sbx_file *f;
    uint64_t size;
    int r = sbx_file_open(sb, path, 0, 0, &f, &size);
    if (r < 0)
        return r;
    if (size > max) {
        sbx_file_close(f);
        return sbx_seterr(sb, SBX_ENOMEM, "read %s: too large (%llu bytes; the limit is %zu)", path,
                          (unsigned long long)size, max);
    }
    /* The size is the guest's word: start from it (bounded) and grow as data really comes. */
    size_t cap = (size < (16u << 20) ? (size_t)size : (16u << 20)) + 1;
    char *buf = malloc(cap);
    size_t n = 0;
    while (buf) {
        if (n == cap - 1) {
            if (n >= max) {
                /* At the limit: fine if this was all (the file grew since it was opened
                   otherwise). */
                char probe;
                r = sbx_file_read(f, &probe, 1);
                if (r > 0) {
                    free(buf);
                    sbx_file_close(f);
                    return sbx_seterr(sb, SBX_ENOMEM, "read %s: too large (more than %zu bytes)",
                                      path, max);
                }
                break;
            }
            size_t ncap = cap - 1 < CHUNK ? CHUNK + 1 : cap - 1 > max / 2 ? max + 1 : cap * 2;
            if (ncap > max + 1)
                ncap = max + 1;
            char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        r = sbx_file_read(f, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    if (!buf) {
        sbx_file_close(f);
        return sbx_seterr(sb, SBX_ENOMEM, "read %s: out of memory", path);
    }
    sbx_file_close(f);
    if (r < 0) {
        free(buf);
        return r;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* --- entries ------------------------------------------------------------------------------- */

void sbx_entry_clear(sbx_entry *e)
{
    if (!e)
        return;
    free(e->name);
    free(e->path);
    free(e->owner);
    free(e->group);
    free(e->symlink_target);
    memset(e, 0, sizeof(*e));
}

void sbx_entries_free(sbx_entry *entries, size_t n)
{
    if (!entries)
        return;
    for (size_t i = 0; i < n; i++)
        sbx_entry_clear(&entries[i]);
    free(entries);
}

/* Copies a guest EntryInfo. Returns 0 or SBX_ENOMEM. */
static int entry_copy(sbx_entry *e, const Sbx__Agent__EntryInfo *g)
{
    memset(e, 0, sizeof(*e));
    switch (g->type) {
    case SBX__AGENT__FILE_TYPE__FILE_TYPE_FILE:
        e->type = SBX_TYPE_FILE;
        break;
    case SBX__AGENT__FILE_TYPE__FILE_TYPE_DIR:
        e->type = SBX_TYPE_DIR;
        break;
    case SBX__AGENT__FILE_TYPE__FILE_TYPE_SYMLINK:
        e->type = SBX_TYPE_SYMLINK;
        break;
    default:
        e->type = SBX_TYPE_OTHER;
        break;
    }
    e->size = g->size;
    e->mode = g->mode & 07777;
    e->uid = g->uid;
    e->gid = g->gid;
    e->mtime_ns = g->mtime_ns;
    e->name = strdup(g->name);
    e->path = strdup(g->path);
    e->owner = strdup(g->owner);
    e->group = strdup(g->group);
    if (e->type == SBX_TYPE_SYMLINK)
        e->symlink_target = strdup(g->symlink_target);
    if (!e->name || !e->path || !e->owner || !e->group ||
        (e->type == SBX_TYPE_SYMLINK && !e->symlink_target)) {
        sbx_entry_clear(e);
        return SBX_ENOMEM;
    }
    return 0;
}

int sbx_stat(sbx *sb, const char *path, sbx_entry *e)
{
    if (e) /* cleared first: a caller may release it after any failure */
        memset(e, 0, sizeof(*e));
    if (!sb)
        return SBX_EINVAL;
    if (!e)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_stat: e is NULL");
    int r = files_check_path(sb, path, "sbx_stat");
    if (r)
        return r;
    Sbx__Agent__Stat st = SBX__AGENT__STAT__INIT;
    st.path = (char *)path;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT, *reply;
    f.body_case = SBX__AGENT__FRAME__BODY_STAT;
    f.stat = &st;
    r = agent_request(sb, FILES_ANSWER_MS, &f, SBX__AGENT__FRAME__BODY_STAT_REPLY, &reply,
                      "sbx_stat");
    if (r == 0) {
        if (!reply->stat_reply->entry)
            r = sbx_seterr(sb, SBX_EPROTO, "stat %s: the guest agent sent no entry", path);
        else if (entry_copy(e, reply->stat_reply->entry) < 0)
            r = sbx_seterr(sb, SBX_ENOMEM, "stat %s: out of memory", path);
    }
    frame_free(reply);
    return r;
}

int sbx_exists(sbx *sb, const char *path)
{
    sbx_entry e;
    int r = sbx_stat(sb, path, &e);
    sbx_entry_clear(&e);
    if (r == 0)
        return 1;
    /* A file in the middle of the path: nothing can exist below it. */
    return r == SBX_ENOENT || r == SBX_ENOTDIR ? 0 : r;
}

int sbx_list(sbx *sb, const char *path, unsigned depth, sbx_entry **entries, size_t *n)
{
    if (!sb)
        return SBX_EINVAL;
    if (!entries || !n)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_list: entries or n is NULL");
    *entries = NULL;
    *n = 0;
    int r = files_check_path(sb, path, "sbx_list");
    if (r)
        return r;
    struct call c;
    if ((r = call_begin(sb, &c, FILES_ANSWER_MS)) < 0)
        return r;
    struct agent_conn *conn = NULL;
    sbx_entry *list = NULL;
    size_t count = 0, cap = 0;
    bool reusable = false;
    if ((r = agent_conn_get(&c, &conn)) < 0)
        goto out;
    Sbx__Agent__ListDir ld = SBX__AGENT__LIST_DIR__INIT;
    ld.path = (char *)path;
    ld.depth = depth == 0 ? 1 : depth > LIST_DEPTH_MAX ? LIST_DEPTH_MAX : depth;
    Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
    req.id = agent_conn_id(conn);
    req.body_case = SBX__AGENT__FRAME__BODY_LIST_DIR;
    req.list_dir = &ld;
    if ((r = agent_conn_send(&c, conn, &req)) < 0)
        goto out;
    for (;;) {
        refresh_deadline(&c);
        Sbx__Agent__Frame *fr;
        if ((r = agent_conn_recv(&c, conn, &fr)) < 0)
            goto out;
        if (fr->id == req.id && fr->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            r = guest_error(&c, fr->error, "sbx_list");
            reusable = r != SBX_EPROTO;
            frame_free(fr);
            goto out;
        }
        if (fr->id != req.id || fr->body_case != SBX__AGENT__FRAME__BODY_LIST_REPLY) {
            r = call_fail(&c, SBX_EPROTO, "list %s: the guest agent sent %s (id %u)", path,
                          frame_body_name(fr->body_case), fr->id);
            frame_free(fr);
            goto out;
        }
        const Sbx__Agent__ListReply *lr = fr->list_reply;
        if (lr->n_entries > LIST_MAX_HOST - count) {
            r = call_fail(&c, SBX_EPROTO, "list %s: more than %u entries from the guest agent",
                          path, LIST_MAX_HOST);
            frame_free(fr);
            goto out;
        }
        if (count + lr->n_entries > cap) {
            size_t ncap = cap ? cap : 64;
            while (ncap < count + lr->n_entries)
                ncap *= 2;
            sbx_entry *nl = realloc(list, ncap * sizeof(*nl));
            if (!nl) {
                r = call_fail(&c, SBX_ENOMEM, "list %s: out of memory", path);
                frame_free(fr);
                goto out;
            }
            list = nl;
            cap = ncap;
        }
        for (size_t i = 0; i < lr->n_entries; i++) {
            if (entry_copy(&list[count], lr->entries[i]) < 0) {
                r = call_fail(&c, SBX_ENOMEM, "list %s: out of memory", path);
                frame_free(fr);
                goto out;
            }
            count++;
        }
        bool done = lr->done;
        frame_free(fr);
        if (done) {
            reusable = true;
            break;
        }
    }
out:
    agent_conn_put(sb, conn, reusable);
    call_end(&c);
    if (r < 0) {
        sbx_entries_free(list, count);
        return r;
    }
    *entries = list;
    *n = count;
    return 0;
}

/* --- single calls -------------------------------------------------------------------------- */

int sbx_mkdir(sbx *sb, const char *path, unsigned mode)
{
    if (!sb)
        return SBX_EINVAL;
    int r = files_check_path(sb, path, "sbx_mkdir");
    if (r)
        return r;
    if (mode & ~07777u)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_mkdir: mode %#o has bits beyond 07777", mode);
    Sbx__Agent__MakeDir md = SBX__AGENT__MAKE_DIR__INIT;
    md.path = (char *)path;
    md.mode = mode;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT, *reply;
    f.body_case = SBX__AGENT__FRAME__BODY_MAKE_DIR;
    f.make_dir = &md;
    r = agent_request(sb, FILES_ANSWER_MS, &f, SBX__AGENT__FRAME__BODY_MAKE_DIR_REPLY, &reply,
                      "sbx_mkdir");
    if (r == 0)
        r = reply->make_dir_reply->existed ? 1 : 0;
    frame_free(reply);
    return r;
}

int sbx_remove(sbx *sb, const char *path, int recursive)
{
    if (!sb)
        return SBX_EINVAL;
    int r = files_check_path(sb, path, "sbx_remove");
    if (r)
        return r;
    Sbx__Agent__Remove rm = SBX__AGENT__REMOVE__INIT;
    rm.path = (char *)path;
    rm.recursive = recursive != 0;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_REMOVE;
    f.remove = &rm;
    return agent_request(sb, FILES_ANSWER_MS, &f, SBX__AGENT__FRAME__BODY_OK, NULL, "sbx_remove");
}

int sbx_rename(sbx *sb, const char *from, const char *to)
{
    if (!sb)
        return SBX_EINVAL;
    int r = files_check_path(sb, from, "sbx_rename (from)");
    if (r == 0)
        r = files_check_path(sb, to, "sbx_rename (to)");
    if (r)
        return r;
    Sbx__Agent__Rename rn = SBX__AGENT__RENAME__INIT;
    rn.from = (char *)from;
    rn.to = (char *)to;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_RENAME;
    f.rename = &rn;
    return agent_request(sb, FILES_ANSWER_MS, &f, SBX__AGENT__FRAME__BODY_OK, NULL, "sbx_rename");
}

int files_symlink(sbx *sb, const char *target, const char *path)
{
    int r = files_check_path(sb, path, "symlink");
    if (r)
        return r;
    if (!target || !target[0] || strlen(target) > FILES_PATH_MAX)
        return sbx_seterr(sb, SBX_EINVAL, "symlink %s: empty or too long target", path);
    Sbx__Agent__FileWrite fw = SBX__AGENT__FILE_WRITE__INIT;
    fw.path = (char *)path;
    fw.symlink_target = (char *)target;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_FILE_WRITE;
    f.file_write = &fw;
    return agent_request(sb, FILES_ANSWER_MS, &f, SBX__AGENT__FRAME__BODY_FILE_WRITTEN, NULL,
                         "symlink");
}
