// SPDX-License-Identifier: Apache-2.0
/* Watching guest directories: a WatchStart stream per handle, events read one at a time. */

/*
 * The handle owns its envd connection for its whole life (envd streams WatchEvent frames on
 * it until it is closed). Frames are read from the socket in chunks, so events can sit in the
 * connection's buffer while the socket itself is not readable; the pollable fd is therefore an
 * epoll set of the socket and an eventfd that is kept readable while buffered bytes remain.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "agent/conn.h"
#include "internal.h"
#include "ops/files.h"

struct sbx_watch {
    struct sbx *sb;
    struct agent_conn *conn; /* NULL once the stream ended */
    uint32_t id;
    int epfd, evfd;
    int err; /* sticky: the stream ended with this error */
    char errmsg[512];
    char path[128]; /* for messages (truncated) */
};

/* Keeps the eventfd readable exactly while decoded-but-unread bytes are buffered. */
static void sync_ready(struct sbx_watch *w)
{
    uint64_t v = 1;
    if (w->conn && agent_conn_buffered(w->conn)) {
        if (write(w->evfd, &v, sizeof(v)) < 0) {
            /* Cannot fail for a counter this small; nothing to do if it did. */
        }
    } else {
        while (read(w->evfd, &v, sizeof(v)) > 0)
            ;
    }
}

static int watch_fail(struct sbx_watch *w, int code, bool reusable)
{
    w->err = code;
    snprintf(w->errmsg, sizeof(w->errmsg), "%s", sbx_errmsg(w->sb));
    agent_conn_put(w->sb, w->conn, reusable);
    w->conn = NULL;
    sync_ready(w);
    return code;
}

int sbx_watch_open(sbx *sb, const char *path, int recursive, sbx_watch **out)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_watch_open: out is NULL");
    *out = NULL;
    int r = files_check_path(sb, path, "sbx_watch_open");
    if (r)
        return r;
    struct sbx_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    w->sb = sbx_ref(sb);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    snprintf(w->path, sizeof(w->path), "%s", path);
    if (w->epfd < 0 || w->evfd < 0) {
        r = sbx_seterr(sb, SBX_EIO, "watch: epoll/eventfd: %s", strerror(errno));
        sbx_watch_close(w);
        return r;
    }
    struct call c;
    if ((r = call_begin(sb, &c, FILES_ANSWER_MS)) < 0) {
        sbx_watch_close(w);
        return r;
    }
    bool reusable = false;
    Sbx__Agent__Frame *fr = NULL;
    r = agent_conn_get(&c, &w->conn);
    if (r == 0) {
        Sbx__Agent__WatchStart ws = SBX__AGENT__WATCH_START__INIT;
        ws.path = (char *)path;
        ws.recursive = recursive != 0;
        Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
        req.id = w->id = agent_conn_id(w->conn);
        req.body_case = SBX__AGENT__FRAME__BODY_WATCH_START;
        req.watch_start = &ws;
        r = agent_conn_send(&c, w->conn, &req);
    }
    if (r == 0)
        r = agent_conn_recv(&c, w->conn, &fr);
    if (r == 0 && !(fr->id == w->id && fr->body_case == SBX__AGENT__FRAME__BODY_OK)) {
        if (fr->id == w->id && fr->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            char msg[512];
            agent_error_message(fr->error, msg, sizeof(msg));
            r = call_fail(&c, agent_error_code(fr->error), "sbx_watch_open: %s", msg);
            reusable = r != SBX_EPROTO;
        } else {
            r = call_fail(&c, SBX_EPROTO, "watch %s: the guest agent answered %s (id %u)", path,
                          frame_body_name(fr->body_case), fr->id);
        }
    }
    frame_free(fr);
    if (r == 0) {
        struct epoll_event ev = {.events = EPOLLIN};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->conn->fd, &ev) != 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) != 0)
            r = call_fail(&c, SBX_EIO, "watch: epoll_ctl: %s", strerror(errno));
    }
    call_end(&c);
    if (r < 0) {
        agent_conn_put(sb, w->conn, reusable);
        w->conn = NULL;
        sbx_watch_close(w);
        return r;
    }
    sync_ready(w);
    *out = w;
    return 0;
}

int sbx_watch_fd(const sbx_watch *w)
{
    return w ? w->epfd : -1;
}

int sbx_watch_next(sbx_watch *w, sbx_watch_event *ev, unsigned timeout_ms)
{
    if (!w)
        return SBX_EINVAL;
    if (!ev)
        return sbx_seterr(w->sb, SBX_EINVAL, "sbx_watch_next: ev is NULL");
    if (w->err)
        return sbx_seterr(w->sb, w->err, "%s", w->errmsg);
    if (!w->conn)
        return sbx_seterr(w->sb, SBX_EINVAL, "sbx_watch_next: the watch has ended");
    bool poll_only = timeout_ms == 0;
    if (poll_only && !agent_conn_buffered(w->conn)) {
        struct pollfd p = {.fd = w->conn->fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            return sbx_seterr(w->sb, SBX_EAGAIN, "watch %s: no event yet", w->path);
    }
    struct call c;
    /* With timeout 0 something is there: a short wait covers the rest of a partial frame. */
    int r = call_begin(w->sb, &c, poll_only ? 100 : timeout_ms);
    if (r < 0)
        return r;
    for (;;) {
        Sbx__Agent__Frame *fr;
        r = agent_conn_recv(&c, w->conn, &fr);
        if (r == SBX_ETIMEDOUT) {
            if (poll_only)
                r = call_fail(&c, SBX_EAGAIN, "watch %s: no event yet", w->path);
            break; /* a partial frame stays buffered for the next call */
        }
        if (r < 0) {
            watch_fail(w, r, false);
            break;
        }
        if (fr->id == w->id && fr->body_case == SBX__AGENT__FRAME__BODY_WATCH_EVENT) {
            const Sbx__Agent__WatchEvent *e = fr->watch_event;
            int op = e->overflow ? SBX_WATCH_OVERFLOW : (int)e->op;
            if (op < SBX_WATCH_CREATE || op > SBX_WATCH_OVERFLOW) {
                frame_free(fr); /* an event kind from a newer envd: skip it */
                continue;
            }
            memset(ev, 0, sizeof(*ev));
            ev->op = op;
            size_t n = strlen(e->name);
            if (n >= sizeof(ev->name)) {
                frame_free(fr);
                r = call_fail(&c, SBX_EPROTO, "watch %s: the guest agent sent a name of %zu bytes",
                              w->path, n);
                watch_fail(w, r, false);
                break;
            }
            memcpy(ev->name, e->name, n);
            frame_free(fr);
            r = 0;
            break;
        }
        if (fr->id == w->id && fr->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            char msg[512];
            agent_error_message(fr->error, msg, sizeof(msg));
            r = call_fail(&c, agent_error_code(fr->error), "sbx_watch_next: %s", msg);
            frame_free(fr);
            watch_fail(w, r, r != SBX_EPROTO); /* envd has ended the watch */
            break;
        }
        r = call_fail(&c, SBX_EPROTO, "watch %s: the guest agent sent %s (id %u)", w->path,
                      frame_body_name(fr->body_case), fr->id);
        frame_free(fr);
        watch_fail(w, r, false);
        break;
    }
    call_end(&c);
    sync_ready(w);
    return r;
}

void sbx_watch_close(sbx_watch *w)
{
    if (!w)
        return;
    /* envd streams until the connection closes: it cannot go back to the pool. */
    agent_conn_put(w->sb, w->conn, false);
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->evfd >= 0)
        close(w->evfd);
    sbx_unref(w->sb);
    free(w);
}
