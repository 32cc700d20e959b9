// SPDX-License-Identifier: Apache-2.0
/* Calls (deadline, interrupt slot, errors) and the pool of envd connections of a sandbox. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/conn.h"
#include "internal.h"

#define MAX_IDLE   8
#define RECV_CHUNK (64u << 10)
#define DAY_MS     (24u * 3600 * 1000)

/* --- calls --------------------------------------------------------------------------------- */

int call_begin(struct sbx *sb, struct call *c, unsigned timeout_ms)
{
    c->sb = sb;
    c->slot = -1;
    c->w = (struct waitctx){0, -1, sb->dead_fd};
    int st = atomic_load(&sb->state);
    if (st != SBX_STATE_RUNNING) {
        /* Ended by the caller (sbx_shutdown) is a state; anything else is a death. */
        if (st == SBX_STATE_STOPPED && sb->shutdown_requested && !atomic_load(&sb->expired))
            return sbx_seterr(sb, SBX_ESTATE, "the sandbox was shut down");
        if (st == SBX_STATE_BOOTING)
            return sbx_seterr(sb, SBX_ESTATE, "the sandbox is not running yet");
        if (st == SBX_STATE_PAUSED)
            return sbx_seterr(sb, SBX_ESTATE, "the sandbox is paused (sbx_resume() it)");
        sbx_seterr(sb, SBX_EDEAD, "the sandbox is no longer running");
        sbx_explain_guest(sb);
        return SBX_EDEAD;
    }
    for (int i = 0; i < SBX_CALL_SLOTS; i++) {
        int expect = 0;
        if (!atomic_compare_exchange_strong(&sb->calls[i].used, &expect, 1))
            continue;
        int fd = atomic_load(&sb->calls[i].fd);
        if (fd < 0) {
            fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (fd < 0) {
                atomic_store(&sb->calls[i].used, 0);
                return sbx_seterr(sb, SBX_EIO, "eventfd: %s", strerror(errno));
            }
            atomic_store(&sb->calls[i].fd, fd);
        }
        /* Forget interrupts meant for an earlier call in this slot. */
        uint64_t v;
        while (read(fd, &v, sizeof(v)) > 0)
            ;
        c->slot = i;
        c->w.intr_fd = fd;
        c->w.deadline_ns = deadline_after_ms(timeout_ms > DAY_MS ? DAY_MS : timeout_ms);
        return 0;
    }
    return sbx_seterr(sb, SBX_EBUSY, "%d calls are already blocked on this sandbox",
                      SBX_CALL_SLOTS);
}

void call_end(struct call *c)
{
    if (c->slot >= 0)
        atomic_store(&c->sb->calls[c->slot].used, 0);
    c->slot = -1;
}

int call_fail(struct call *c, int code, const char *fmt, ...)
{
    char *m = sbx_errbuf(c->sb);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, SBX_ERRMSG_MAX, fmt, ap);
    va_end(ap);
    if (code == SBX_EGUEST) {
        code = SBX_EDEAD;
        sbx_explain_guest(c->sb);
    }
    return code;
}

int call_require(struct call *c, uint32_t feature, const char *what)
{
    if (c->sb->features & feature)
        return 0;
    return call_fail(c, SBX_ENOTSUP, "the guest agent (envd %s) does not support %s",
                     c->sb->info.envd_version, what);
}

/* Turns a wait_fd / read / write failure into the call's error. */
static int wait_error(struct call *c, int r, const char *what)
{
    switch (r) {
    case SBX_ETIMEDOUT:
        return call_fail(c, r, "%s: timed out", what);
    case SBX_EINTR:
        return call_fail(c, r, "%s: interrupted", what);
    case SBX_EGUEST:
        return call_fail(c, r, "%s: the guest died", what);
    default:
        return call_fail(c, r, "%s: %s", what, sbx_strerror(r));
    }
}

/* --- connections --------------------------------------------------------------------------- */

static void conn_free(struct agent_conn *conn)
{
    if (!conn)
        return;
    if (conn->fd >= 0)
        close(conn->fd);
    frame_reader_free(&conn->rd);
    free(conn->buf);
    free(conn);
}

/* An idle pooled connection must have nothing to read: data or EOF means envd closed it or
   the guest restarted, so it cannot be used. */
static bool idle_ok(const struct agent_conn *conn)
{
    struct pollfd p = {.fd = conn->fd, .events = POLLIN};
    return poll(&p, 1, 0) == 0;
}

static int conn_open(struct call *c, struct agent_conn **out)
{
    struct sbx *sb = c->sb;
    struct agent_conn *conn = calloc(1, sizeof(*conn));
    if (!conn || !(conn->buf = malloc(RECV_CHUNK))) {
        free(conn);
        return call_fail(c, SBX_ENOMEM, "out of memory");
    }
    conn->fd = -1;
    frame_reader_init(&conn->rd);
    int r = sbx_agent_dial(sb, &conn->fd);
    if (r < 0) {
        conn_free(conn);
        return call_fail(c, r, "cannot connect to the guest agent: %s", sbx_strerror(r));
    }
    char err[512] = "";
    r = agent_hello(conn->fd, &c->w, NULL, err, sizeof(err));
    if (r < 0) {
        conn_free(conn);
        if (r == SBX_ETIMEDOUT || r == SBX_EINTR || r == SBX_EGUEST)
            return wait_error(c, r, "connecting to the guest agent");
        return call_fail(c, r, "connecting to the guest agent: %s", err);
    }
    conn->next_id = 1;
    *out = conn;
    return 0;
}

int agent_conn_get(struct call *c, struct agent_conn **out)
{
    struct sbx *sb = c->sb;
    *out = NULL;
    for (;;) {
        pthread_mutex_lock(&sb->pool_lock);
        struct agent_conn *conn = sb->pool;
        if (conn) {
            sb->pool = conn->next;
            sb->npool--;
        }
        pthread_mutex_unlock(&sb->pool_lock);
        if (!conn)
            break;
        conn->next = NULL;
        if (idle_ok(conn)) {
            *out = conn;
            return 0;
        }
        conn_free(conn);
    }
    return conn_open(c, out);
}

void agent_conn_put(struct sbx *sb, struct agent_conn *conn, bool reusable)
{
    if (!conn)
        return;
    if (reusable && conn->off == conn->len && frame_reader_idle(&conn->rd) &&
        atomic_load(&sb->state) == SBX_STATE_RUNNING) {
        pthread_mutex_lock(&sb->pool_lock);
        if (sb->npool < MAX_IDLE) {
            conn->next = sb->pool;
            sb->pool = conn;
            sb->npool++;
            conn = NULL;
        }
        pthread_mutex_unlock(&sb->pool_lock);
    }
    conn_free(conn);
}

void agent_pool_free(struct sbx *sb)
{
    while (sb->pool) {
        struct agent_conn *conn = sb->pool;
        sb->pool = conn->next;
        conn_free(conn);
    }
    sb->npool = 0;
}

uint32_t agent_conn_id(struct agent_conn *conn)
{
    uint32_t id = conn->next_id++;
    if (conn->next_id == 0)
        conn->next_id = 1;
    return id;
}

int agent_conn_send(struct call *c, struct agent_conn *conn, const Sbx__Agent__Frame *f)
{
    uint8_t stackbuf[1024], *buf = stackbuf, *heap = NULL;
    size_t len;
    char err[256];
    int r;
    if (frame_size(f) <= sizeof(stackbuf))
        r = frame_encode(f, stackbuf, sizeof(stackbuf), &len, err, sizeof(err));
    else if ((r = frame_encode_alloc(f, &heap, &len, err, sizeof(err))) == 0)
        buf = heap;
    if (r < 0) {
        free(heap);
        return call_fail(c, r, "cannot encode %s: %s", frame_body_name(f->body_case), err);
    }
    r = write_full(&c->w, conn->fd, buf, len);
    free(heap);
    if (r == SBX_EPROTO || r == SBX_EIO)
        return call_fail(c, SBX_EPROTO, "the guest agent closed the connection");
    return r < 0 ? wait_error(c, r, "sending to the guest agent") : 0;
}

bool agent_conn_buffered(const struct agent_conn *conn)
{
    return conn->off < conn->len;
}

int agent_conn_recv(struct call *c, struct agent_conn *conn, Sbx__Agent__Frame **out)
{
    *out = NULL;
    for (;;) {
        while (conn->off < conn->len) {
            size_t used = 0;
            char err[256];
            int r = frame_reader_feed(&conn->rd, conn->buf + conn->off, conn->len - conn->off,
                                      &used, out, err, sizeof(err));
            conn->off += used;
            if (r < 0)
                return call_fail(c, r == SBX_ENOMEM ? r : SBX_EPROTO,
                                 "the guest agent sent a bad frame: %s", err);
            if (r == 1)
                return 0;
        }
        conn->off = conn->len = 0;
        ssize_t n = recv(conn->fd, conn->buf, RECV_CHUNK, MSG_DONTWAIT);
        if (n > 0) {
            conn->len = (size_t)n;
            continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            /* A guest that died closes every connection: say so rather than "closed". */
            if (atomic_load(&c->sb->state) != SBX_STATE_RUNNING)
                return wait_error(c, SBX_EGUEST, "receiving from the guest agent");
            return call_fail(c, SBX_EPROTO, "the guest agent closed the connection%s",
                             frame_reader_idle(&conn->rd) ? "" : " in the middle of a frame");
        }
        if (n < 0 && errno == EINTR)
            continue;
        int r = wait_fd(&c->w, conn->fd, POLLIN);
        if (r < 0)
            return wait_error(c, r, "waiting for the guest agent");
    }
}

int agent_rpc(struct call *c, Sbx__Agent__Frame *req, Sbx__Agent__Frame__BodyCase want,
              Sbx__Agent__Frame **reply, const char *what)
{
    *reply = NULL;
    struct agent_conn *conn;
    int r = agent_conn_get(c, &conn);
    if (r < 0)
        return r;
    req->id = agent_conn_id(conn);
    r = agent_conn_send(c, conn, req);
    Sbx__Agent__Frame *f = NULL;
    if (r == 0)
        r = agent_conn_recv(c, conn, &f);
    if (r < 0) {
        agent_conn_put(c->sb, conn, false);
        return r;
    }
    bool sync = f->id == req->id;
    if (f->body_case == SBX__AGENT__FRAME__BODY_ERROR && want != f->body_case && sync) {
        char msg[512];
        r = agent_error_code(f->error);
        agent_error_message(f->error, msg, sizeof(msg));
        frame_free(f);
        agent_conn_put(c->sb, conn, r != SBX_EPROTO);
        return call_fail(c, r, "%s: %s", what, msg);
    }
    if (!sync || f->body_case != want) {
        r = call_fail(c, SBX_EPROTO, "%s: the guest agent answered with %s (id %u) instead of %s",
                      what, frame_body_name(f->body_case), f->id, frame_body_name(want));
        frame_free(f);
        agent_conn_put(c->sb, conn, false);
        return r;
    }
    agent_conn_put(c->sb, conn, true);
    *reply = f;
    return 0;
}

int agent_request(struct sbx *sb, unsigned timeout_ms, Sbx__Agent__Frame *req,
                  Sbx__Agent__Frame__BodyCase want, Sbx__Agent__Frame **reply, const char *what)
{
    if (reply)
        *reply = NULL;
    struct call c;
    int r = call_begin(sb, &c, timeout_ms);
    if (r < 0)
        return r;
    Sbx__Agent__Frame *f;
    r = agent_rpc(&c, req, want, &f, what);
    call_end(&c);
    if (r == 0 && reply)
        *reply = f;
    else
        frame_free(f);
    return r;
}

void agent_conn_adopt(struct sbx *sb, int fd)
{
    struct agent_conn *conn = calloc(1, sizeof(*conn));
    if (!conn || !(conn->buf = malloc(RECV_CHUNK))) {
        free(conn);
        close(fd);
        return;
    }
    conn->fd = fd;
    conn->next_id = 100; /* ids below were used by the handshake */
    frame_reader_init(&conn->rd);
    agent_conn_put(sb, conn, true);
}
