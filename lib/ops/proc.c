// SPDX-License-Identifier: Apache-2.0
/* Commands, background processes and PTYs in the guest (sbx_exec, sbx_proc_*, sbx_pty_open). */

/*
 * Every sbx_proc handle owns one envd connection (lib/agent/conn.h) attached to its process:
 * envd streams ProcOutput frames and finally ProcExit with the ProcStart's (or ProcAttach's)
 * id. Requests the handle sends on that connection (ProcInput with ack, ProcSignal,
 * ProcResize) get fresh ids and are answered with them, so one receive loop (pump) sorts
 * whatever arrives: output goes to the current sink (a callback, a capture buffer, or the
 * handle's queue for sbx_proc_read), acks move the stdin window, replies end a request.
 *
 * Stdin flow control: each ProcInput carries at most 64 KiB and asks for an ack (envd answers
 * once the data is in the process's pipe); at most 512 KiB are unacknowledged, well under
 * envd's 1 MiB queue. While waiting for room the handle keeps reading output, so a process
 * that only reads its input after writing output (or the other way round) cannot deadlock.
 *
 * The connection goes back to the pool only when envd is done with the operation (ProcExit
 * or an Error received, every ack answered); otherwise it is closed, which detaches the
 * process in envd (and kills it when it was started with kill_on_detach, as sbx_exec does:
 * an interrupted or failed sbx_exec leaves nothing running).
 *
 * No output is lost by closing a handle: envd keeps recent output after sending it, and right
 * before closing the handle tells it with ProcDetach how many bytes of each stream its user
 * actually got (sbx_proc_read, sbx_proc_wait's result). Output still queued in the handle,
 * buffered in the connection or on its way is then delivered again to the next
 * sbx_proc_attach. The frame is sent without waiting; if it does not fit into the socket,
 * envd resumes after what it had sent, as when the host dies.
 *
 * Everything from the guest is checked: ids, bodies, streams, exit values, list sizes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/conn.h"
#include "internal.h"

#define EXEC_TIMEOUT_MS 60000u       /* sbx_exec timeout_ms 0 */
#define EXEC_SLACK_MS   5000u        /* the host waits this much longer than envd's timeout */
#define ANSWER_MS       60000u       /* waiting for an answer or stdin progress */
#define OUTPUT_CAP      (16u << 20)  /* captured bytes per stream by default */
#define CHUNK           (64u << 10)  /* ProcInput payload */
#define WINDOW          (512u << 10) /* stdin bytes sent but not acknowledged */
#define MAX_ACKS        64
#define HOST_QUEUE_MAX  (16u << 20) /* output buffered by a handle while it writes */
#define MAX_ARGS        4096
#define MAX_STR         (128u << 10)
#define MAX_TOTAL       (1u << 20)
#define MAX_TAG         1024
#define MAX_PATH        4095
#define MAX_USER        63
#define MAX_PTY         1000
#define LIST_MAX        4096

typedef Sbx__Agent__Frame Frame;

struct hchunk {
    struct hchunk *next;
    int stream;
    size_t off, len;
    uint8_t data[];
};

struct capture {
    char *buf;
    size_t len, alloc;
};

struct sbx_proc {
    sbx *sb;
    struct agent_conn *conn;
    /* sbx_proc_fd: an epoll set of the connection and an eventfd kept readable while
       sbx_proc_read() has something without reading the socket (queued output, frames
       buffered in the connection, the exit). -1 for sbx_exec's internal handle. */
    int epfd, evfd;
    uint32_t op_id, pid;
    bool pty;
    bool attached; /* envd still streams this process on conn */
    bool exited;   /* ProcExit received */
    bool stdin_open;
    int fatal;     /* the connection is unusable (protocol error, lost): sticky code */
    int op_err;    /* envd ended the attachment with an Error (e.g. SBX_EBUSY: taken over) */
    char msg[512]; /* message for fatal / op_err */
    /* Exit */
    int exit_code, signal, timed_out;
    uint64_t duration_ms;
    /* Stdin window: acks expected, in order. */
    uint32_t ack_id[MAX_ACKS];
    uint64_t ack_end[MAX_ACKS];
    unsigned ack_head, nacks;
    uint64_t in_sent, in_acked;
    int in_err; /* envd failed an input (the process closed stdin or exited) */
    char in_msg[512];
    /* A request on the attached connection waiting for its reply; stale_id: one given up
       on (interrupted), whose late reply is dropped. */
    uint32_t req_id, stale_id;
    Frame *req_reply;
    /* Output sink: callback (sbx_exec), capture (sbx_exec, sbx_proc_wait) or the queue. */
    sbx_output_fn fn;
    void *ctx;
    bool fn_stopped;
    bool capturing;
    struct capture cap[2];
    int truncated;
    size_t output_cap;
    struct hchunk *qh, *qt;
    size_t qbytes;
    /* Bytes of each stream (SBX_STDOUT, SBX_STDERR) handed to the user on this attachment:
       returned by sbx_proc_read, given to the callback or the capture buffers. */
    uint64_t consumed[2];
    bool kill_on_detach; /* sbx_exec's: closing kills it, nothing to hand over */
};

/* --- option checks ------------------------------------------------------------------------ */

static int check_strv(sbx *sb, const char *const *v, const char *what, const char *name, bool env,
                      size_t *total)
{
    size_t n = 0;
    for (; v && v[n]; n++) {
        if (n >= MAX_ARGS)
            return sbx_seterr(sb, SBX_EINVAL, "%s: more than %d %s entries", what, MAX_ARGS, name);
        size_t l = strlen(v[n]);
        if (l > MAX_STR)
            return sbx_seterr(sb, SBX_EINVAL, "%s: %s[%zu] is longer than %u bytes", what, name, n,
                              MAX_STR);
        if (env && (!strchr(v[n], '=') || v[n][0] == '='))
            return sbx_seterr(sb, SBX_EINVAL, "%s: %s[%zu] \"%.64s\" is not KEY=VALUE", what, name,
                              n, v[n]);
        *total += l + 1;
    }
    return 0;
}

/* Checks what every start shares; pty: the call runs on a terminal (argv/cmd optional). */
static int check_opts(sbx *sb, const sbx_exec_options *o, const char *what, bool pty)
{
    if (!o)
        return sbx_seterr(sb, SBX_EINVAL, "%s: options are NULL", what);
    if (o->version < 1)
        return sbx_seterr(sb, SBX_EINVAL, "%s: options.version is 0 (use SBX_EXEC_OPTIONS_INIT)",
                          what);
    if (o->argv && o->cmd)
        return sbx_seterr(sb, SBX_EINVAL, "%s: both argv and cmd are set; give exactly one", what);
    if (!pty && !o->argv && !o->cmd)
        return sbx_seterr(sb, SBX_EINVAL, "%s: neither argv nor cmd is set", what);
    if (o->argv && !o->argv[0])
        return sbx_seterr(sb, SBX_EINVAL, "%s: argv is empty", what);
    if (o->argv && !o->argv[0][0])
        return sbx_seterr(sb, SBX_EINVAL, "%s: argv[0] is an empty string", what);
    if (o->cmd && !o->cmd[0])
        return sbx_seterr(sb, SBX_EINVAL, "%s: cmd is an empty string", what);
    if (o->cmd && strlen(o->cmd) > MAX_STR)
        return sbx_seterr(sb, SBX_EINVAL, "%s: cmd is longer than %u bytes", what, MAX_STR);
    size_t total = o->cmd ? strlen(o->cmd) : 0;
    int r = check_strv(sb, o->argv, what, "argv", false, &total);
    if (!r)
        r = check_strv(sb, o->envs, what, "envs", true, &total);
    if (r)
        return r;
    if (total > MAX_TOTAL)
        return sbx_seterr(sb, SBX_EINVAL, "%s: argv and envs take more than %u bytes", what,
                          MAX_TOTAL);
    if (o->stdin_len && !o->stdin_data)
        return sbx_seterr(sb, SBX_EINVAL, "%s: stdin_len is %zu but stdin_data is NULL", what,
                          o->stdin_len);
    if (o->cwd && (!o->cwd[0] || strlen(o->cwd) > MAX_PATH))
        return sbx_seterr(sb, SBX_EINVAL, "%s: cwd is empty or longer than %d bytes", what,
                          MAX_PATH);
    if (o->user && (!o->user[0] || strlen(o->user) > MAX_USER))
        return sbx_seterr(sb, SBX_EINVAL, "%s: user is empty or longer than %d bytes", what,
                          MAX_USER);
    if (o->tag && strlen(o->tag) > MAX_TAG)
        return sbx_seterr(sb, SBX_EINVAL, "%s: tag is longer than %d bytes", what, MAX_TAG);
    if ((o->pty_rows || o->pty_cols) &&
        (o->pty_rows < 1 || o->pty_rows > MAX_PTY || o->pty_cols < 1 || o->pty_cols > MAX_PTY))
        return sbx_seterr(sb, SBX_EINVAL,
                          "%s: terminal size %ux%u: rows and columns must both be 1..%d", what,
                          o->pty_rows, o->pty_cols, MAX_PTY);
    return 0;
}

/* --- the handle --------------------------------------------------------------------------- */

static struct sbx_proc *proc_new(sbx *sb)
{
    struct sbx_proc *p = calloc(1, sizeof(*p));
    if (p) {
        p->sb = sbx_ref(sb);
        p->output_cap = OUTPUT_CAP;
        p->epfd = p->evfd = -1;
    }
    return p;
}

/* The handle's memory, and its hold on the sandbox (lib/sandbox.c, sbx_ref()). */
static void proc_free(struct sbx_proc *p)
{
    sbx_unref(p->sb);
    free(p);
}

/* Creates the pollable fd of a handle given to the caller. */
static int proc_pollable(struct sbx_proc *p)
{
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN};
    if (p->epfd < 0 || p->evfd < 0 || epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->conn->fd, &ev) != 0 ||
        epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) != 0)
        return sbx_seterr(p->sb, SBX_EIO, "process handle: epoll/eventfd: %s", strerror(errno));
    return 0;
}

/* Keeps the eventfd readable exactly while a read would not have to wait for the socket. */
static void sync_ready(struct sbx_proc *p)
{
    if (p->evfd < 0)
        return;
    bool ready =
        p->qh || p->exited || p->fatal || p->op_err || (p->conn && agent_conn_buffered(p->conn));
    uint64_t v = 1;
    if (ready) {
        if (write(p->evfd, &v, sizeof(v)) < 0) {
            /* Already at its maximum: readable anyway. */
        }
    } else {
        while (read(p->evfd, &v, sizeof(v)) > 0)
            ;
    }
}

static void queue_clear(struct sbx_proc *p)
{
    while (p->qh) {
        struct hchunk *h = p->qh;
        p->qh = h->next;
        free(h);
    }
    p->qt = NULL;
    p->qbytes = 0;
}

static void capture_clear(struct sbx_proc *p)
{
    for (int i = 0; i < 2; i++) {
        free(p->cap[i].buf);
        p->cap[i] = (struct capture){0};
    }
    p->truncated = 0;
}

/* Marks the connection unusable; the thread's current message explains why. */
static int proc_fatal(struct sbx_proc *p, int code)
{
    if (!p->fatal) {
        p->fatal = code;
        snprintf(p->msg, sizeof(p->msg), "%s", sbx_errmsg(p->sb));
    }
    return code;
}

/* The send or receive failed. Interrupts and timeouts leave the receive side in sync (a
   partial frame survives), but a half-sent frame does not: sends are always fatal. */
static int proc_io_error(struct sbx_proc *p, int r, bool sending)
{
    if (sending || (r != SBX_ETIMEDOUT && r != SBX_EINTR))
        proc_fatal(p, r);
    return r;
}

static bool capture_add(struct sbx_proc *p, int stream, const void *data, size_t len)
{
    struct capture *c = &p->cap[stream == SBX_STDERR];
    size_t room = p->output_cap - c->len;
    if (len > room) {
        len = room;
        p->truncated = 1;
    }
    if (!len)
        return true;
    if (c->alloc < c->len + len + 1) {
        size_t a = c->alloc ? c->alloc : 4096;
        while (a < c->len + len + 1)
            a *= 2;
        if (a > p->output_cap + 1)
            a = p->output_cap + 1;
        char *b = realloc(c->buf, a);
        if (!b)
            return false;
        c->buf = b;
        c->alloc = a;
    }
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    c->buf[c->len] = '\0';
    return true;
}

static bool queue_add(struct sbx_proc *p, int stream, const void *data, size_t len)
{
    struct hchunk *h = malloc(sizeof(*h) + len);
    if (!h)
        return false;
    *h = (struct hchunk){.stream = stream, .len = len};
    memcpy(h->data, data, len);
    if (p->qt)
        p->qt->next = h;
    else
        p->qh = h;
    p->qt = h;
    p->qbytes += len;
    return true;
}

static int deliver(struct sbx_proc *p, struct call *c, int stream, const void *data, size_t len)
{
    if (p->fn) {
        if (!p->fn_stopped && p->fn(p->ctx, stream, data, len) != 0)
            p->fn_stopped = true;
        p->consumed[stream == SBX_STDERR] += len;
        return 0;
    }
    bool ok = p->capturing ? capture_add(p, stream, data, len) : queue_add(p, stream, data, len);
    if (!ok)
        return call_fail(c, SBX_ENOMEM, "out of memory for the output of process %u", p->pid);
    if (p->capturing)
        p->consumed[stream == SBX_STDERR] += len;
    return 0;
}

/* Moves the queued output into the capture buffers (sbx_proc_wait). */
static int queue_to_capture(struct sbx_proc *p, struct call *c)
{
    while (p->qh) {
        struct hchunk *h = p->qh;
        if (!capture_add(p, h->stream, h->data + h->off, h->len - h->off))
            return call_fail(c, SBX_ENOMEM, "out of memory for the output of process %u", p->pid);
        p->consumed[h->stream == SBX_STDERR] += h->len - h->off;
        p->qh = h->next;
        p->qbytes -= h->len - h->off;
        free(h);
    }
    p->qt = NULL;
    return 0;
}

static int guest_error(struct call *c, const Sbx__Agent__Error *e, const char *fmt, uint32_t pid)
{
    char msg[512], what[64];
    agent_error_message(e, msg, sizeof(msg));
    snprintf(what, sizeof(what), fmt, pid);
    return call_fail(c, agent_error_code(e), "%s: %s", what, msg);
}

/* Handles one frame from envd. Returns 0, or an error (fatal for the connection). Takes
   ownership of f. */
static int handle_frame(struct sbx_proc *p, struct call *c, Frame *f)
{
    int r = 0;
    if (p->nacks && f->id == p->ack_id[p->ack_head]) {
        uint64_t end = p->ack_end[p->ack_head];
        p->ack_head = (p->ack_head + 1) % MAX_ACKS;
        p->nacks--;
        if (f->body_case == SBX__AGENT__FRAME__BODY_OK) {
            p->in_acked = end;
        } else if (f->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            if (!p->in_err) {
                char msg[400];
                agent_error_message(f->error, msg, sizeof(msg));
                p->in_err = agent_error_code(f->error);
                snprintf(p->in_msg, sizeof(p->in_msg), "writing to process %u: %s", p->pid, msg);
            }
            p->stdin_open = false;
        } else {
            r = call_fail(c, SBX_EPROTO, "the guest agent answered input with %s",
                          frame_body_name(f->body_case));
        }
        frame_free(f);
        return r;
    }
    if (p->stale_id && f->id == p->stale_id) {
        p->stale_id = 0;
        frame_free(f);
        return 0;
    }
    if (p->req_id && f->id == p->req_id) {
        p->req_reply = f;
        p->req_id = 0;
        return 0;
    }
    if (!p->attached || f->id != p->op_id) {
        r = call_fail(c, SBX_EPROTO, "the guest agent sent an unexpected %s (id %u)",
                      frame_body_name(f->body_case), f->id);
        frame_free(f);
        return r;
    }
    switch (f->body_case) {
    case SBX__AGENT__FRAME__BODY_PROC_OUTPUT: {
        const Sbx__Agent__ProcOutput *o = f->proc_output;
        if (o->stream != SBX__AGENT__STREAM__STREAM_STDOUT &&
            o->stream != SBX__AGENT__STREAM__STREAM_STDERR) {
            r = call_fail(c, SBX_EPROTO, "the guest agent sent output of stream %d", o->stream);
            break;
        }
        if (o->data.len)
            r = deliver(p, c,
                        o->stream == SBX__AGENT__STREAM__STREAM_STDERR ? SBX_STDERR : SBX_STDOUT,
                        o->data.data, o->data.len);
        break;
    }
    case SBX__AGENT__FRAME__BODY_PROC_EXIT: {
        const Sbx__Agent__ProcExit *e = f->proc_exit;
        if (e->exit_code < -1 || e->exit_code > 255 || e->signal < 0 || e->signal > 64 ||
            (e->exit_code == -1) != (e->signal != 0)) {
            r = call_fail(c, SBX_EPROTO, "the guest agent sent an impossible exit (%d, signal %d)",
                          e->exit_code, e->signal);
            break;
        }
        p->exited = true;
        p->attached = false;
        p->exit_code = e->exit_code;
        p->signal = e->signal;
        p->timed_out = e->timed_out;
        p->duration_ms = e->duration_ms;
        break;
    }
    case SBX__AGENT__FRAME__BODY_ERROR:
        /* envd ended the attachment (another handle attached, ...); the connection is back
           to serving requests. */
        p->attached = false;
        p->op_err = guest_error(c, f->error, "process %u", p->pid);
        snprintf(p->msg, sizeof(p->msg), "%s", sbx_errmsg(p->sb));
        break;
    default:
        r = call_fail(c, SBX_EPROTO, "the guest agent sent %s for a running process",
                      frame_body_name(f->body_case));
        break;
    }
    frame_free(f);
    return r;
}

/* Receives and handles one frame within the call's limits. */
static int pump(struct sbx_proc *p, struct call *c)
{
    Frame *f;
    int r = agent_conn_recv(c, p->conn, &f);
    if (r < 0)
        return proc_io_error(p, r, false);
    r = handle_frame(p, c, f);
    return r < 0 ? proc_fatal(p, r) : 0;
}

static int send_frame(struct sbx_proc *p, struct call *c, Frame *f)
{
    int r = agent_conn_send(c, p->conn, f);
    return r < 0 ? proc_io_error(p, r, true) : 0;
}

/* Sends the next piece of data[*off..len) (with eof after the last when eof), if the window
   has room. Returns 1 when a frame went out, 0 when there is no room, or an error. */
static int input_step(struct sbx_proc *p, struct call *c, const uint8_t *data, size_t len,
                      size_t *off, bool eof)
{
    size_t n = len - *off;
    if (n > CHUNK)
        n = CHUNK;
    if (p->nacks == MAX_ACKS || p->in_sent - p->in_acked + n > WINDOW)
        return 0;
    Sbx__Agent__ProcInput in = SBX__AGENT__PROC_INPUT__INIT;
    in.pid = p->pid;
    in.data.data = (uint8_t *)(data ? data + *off : NULL);
    in.data.len = n;
    in.eof = eof && *off + n == len;
    in.ack = true;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = agent_conn_id(p->conn);
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_INPUT;
    f.proc_input = &in;
    int r = send_frame(p, c, &f);
    if (r < 0)
        return r;
    unsigned slot = (p->ack_head + p->nacks) % MAX_ACKS;
    p->ack_id[slot] = f.id;
    p->ack_end[slot] = p->in_sent + n;
    p->nacks++;
    p->in_sent += n;
    *off += n;
    if (in.eof)
        p->stdin_open = false;
    return 1;
}

static int sticky(struct sbx_proc *p)
{
    if (p->fatal)
        return sbx_seterr(p->sb, p->fatal, "%s", p->msg);
    return sbx_seterr(p->sb, p->op_err, "%s", p->msg);
}

/* Writes data (then eof, if asked) to stdin and waits until envd has written it all to the
   process. Output arriving meanwhile goes to the sink. */
static int write_all(struct sbx_proc *p, struct call *c, const void *data, size_t len, bool eof)
{
    size_t off = 0;
    bool want_eof = eof;
    while (off < len || want_eof || p->nacks) {
        if (p->in_err)
            return sbx_seterr(p->sb, p->in_err, "%s", p->in_msg);
        if (p->fatal)
            return sticky(p);
        if (off < len || want_eof) {
            int r = input_step(p, c, data, len, &off, want_eof);
            if (r < 0)
                return r;
            if (r == 1) {
                if (off == len)
                    want_eof = false;
                continue;
            }
        }
        if (!p->fn && !p->capturing && p->qbytes > HOST_QUEUE_MAX)
            return call_fail(c, SBX_EBUSY,
                             "process %u: %u MiB of output are waiting to be read; read them "
                             "(sbx_proc_read) before writing more",
                             p->pid, HOST_QUEUE_MAX >> 20);
        uint64_t acked = p->in_acked;
        int r = pump(p, c);
        if (r < 0)
            return r;
        if (p->fn_stopped)
            return call_fail(c, SBX_EINTR, "stopped by the output callback");
        /* Each bit of progress earns a fresh answer time. */
        if (p->in_acked != acked)
            c->w.deadline_ns = deadline_after_ms(ANSWER_MS);
    }
    if (p->in_err)
        return sbx_seterr(p->sb, p->in_err, "%s", p->in_msg);
    return 0;
}

/* Sends a request on the attached connection and waits for its reply (output arriving
   meanwhile is queued). */
static int attached_request(struct sbx_proc *p, struct call *c, Frame *req,
                            Sbx__Agent__Frame__BodyCase want, const char *what)
{
    req->id = agent_conn_id(p->conn);
    int r = send_frame(p, c, req);
    if (r < 0)
        return r;
    p->req_id = req->id;
    while (!p->req_reply) {
        if ((r = pump(p, c)) < 0) {
            /* The answer may still come: it will be dropped then. */
            p->stale_id = p->req_id;
            p->req_id = 0;
            return r;
        }
    }
    Frame *f = p->req_reply;
    p->req_reply = NULL;
    if (f->body_case == SBX__AGENT__FRAME__BODY_ERROR)
        r = guest_error(c, f->error, what, p->pid);
    else if (f->body_case != want)
        r = proc_fatal(p,
                       call_fail(c, SBX_EPROTO, "the guest agent answered %s with %s",
                                 frame_body_name(req->body_case), frame_body_name(f->body_case)));
    frame_free(f);
    return r;
}

/* Builds and sends ProcStart on a fresh connection and waits for ProcStarted. */
static int start(sbx *sb, struct call *c, const sbx_exec_options *o, bool exec, unsigned rows,
                 unsigned cols, unsigned envd_timeout, struct sbx_proc **out)
{
    *out = NULL;
    int r = call_require(c, AGENT_FEATURE_EXEC, "running processes");
    if (!r && rows)
        r = call_require(c, AGENT_FEATURE_PTY, "terminals");
    if (r)
        return r;
    struct sbx_proc *p = proc_new(sb);
    if (!p)
        return call_fail(c, SBX_ENOMEM, "out of memory");
    Sbx__Agent__ProcStart ps = SBX__AGENT__PROC_START__INIT;
    Sbx__Agent__PtySize sz = SBX__AGENT__PTY_SIZE__INIT;
    size_t argc = 0, envc = 0;
    while (o && o->argv && o->argv[argc])
        argc++;
    while (o && o->envs && o->envs[envc])
        envc++;
    ps.n_argv = argc;
    ps.argv = argc ? (char **)o->argv : NULL;
    ps.shell = o && o->cmd ? (char *)o->cmd : "";
    ps.n_envs = envc;
    ps.envs = envc ? (char **)o->envs : NULL;
    ps.cwd = o && o->cwd ? (char *)o->cwd : "";
    ps.user = o && o->user ? (char *)o->user : "";
    ps.tag = o && o->tag ? (char *)o->tag : "";
    ps.stdin = rows || (o && (o->stdin_data || o->keep_stdin));
    ps.timeout_ms = envd_timeout;
    ps.kill_on_detach = exec;
    if (rows) {
        sz.rows = rows;
        sz.cols = cols;
        ps.pty = &sz;
    }
    Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_START;
    f.proc_start = &ps;
    if ((r = agent_conn_get(c, &p->conn)) < 0) {
        proc_free(p);
        return r;
    }
    f.id = p->op_id = agent_conn_id(p->conn);
    Frame *rep = NULL;
    if ((r = agent_conn_send(c, p->conn, &f)) == 0)
        r = agent_conn_recv(c, p->conn, &rep);
    if (r < 0) {
        agent_conn_put(sb, p->conn, false);
        proc_free(p);
        return r;
    }
    bool reusable = false;
    if (rep->id != p->op_id) {
        r = call_fail(c, SBX_EPROTO, "the guest agent answered ProcStart with id %u", rep->id);
    } else if (rep->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
        char msg[512];
        agent_error_message(rep->error, msg, sizeof(msg));
        r = call_fail(c, agent_error_code(rep->error), "starting %s: %s",
                      o && o->argv  ? o->argv[0]
                      : o && o->cmd ? "a shell command"
                                    : "a shell",
                      msg);
        reusable = r != SBX_EPROTO;
    } else if (rep->body_case != SBX__AGENT__FRAME__BODY_PROC_STARTED ||
               rep->proc_started->pid == 0 || rep->proc_started->pid > INT32_MAX) {
        r = call_fail(c, SBX_EPROTO, "the guest agent answered ProcStart with %s",
                      frame_body_name(rep->body_case));
    } else {
        p->pid = rep->proc_started->pid;
    }
    frame_free(rep);
    if (r < 0) {
        agent_conn_put(sb, p->conn, reusable);
        proc_free(p);
        return r;
    }
    p->attached = true;
    p->pty = rows != 0;
    p->stdin_open = ps.stdin;
    p->kill_on_detach = exec;
    if (o && o->output_cap)
        p->output_cap = o->output_cap;
    *out = p;
    return 0;
}

/* --- sbx_exec ----------------------------------------------------------------------------- */

void sbx_exec_result_free(sbx_exec_result *res)
{
    if (!res)
        return;
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
    res->out_len = res->err_len = 0;
}

/* Fills res from an exited handle, handing over the capture buffers. */
static void fill_result(struct sbx_proc *p, sbx_exec_result *res)
{
    res->exit_code = p->exit_code;
    res->signal = p->signal;
    res->timed_out = p->timed_out;
    res->truncated = p->truncated;
    res->pid = p->pid;
    res->duration_ms = p->duration_ms;
    res->out = p->cap[0].buf;
    res->out_len = p->cap[0].len;
    res->err = p->cap[1].buf;
    res->err_len = p->cap[1].len;
    p->cap[0] = p->cap[1] = (struct capture){0};
    p->truncated = 0;
}

/* Gives the handle's connection back (to the pool when envd is done with it). */
static void release_conn(struct sbx_proc *p)
{
    bool reusable = !p->attached && !p->nacks && !p->req_id && !p->stale_id && !p->fatal;
    agent_conn_put(p->sb, p->conn, reusable);
    p->conn = NULL;
}

/* True when closing must tell envd what was consumed: it still streams the process, or it
   has finished but not everything received was handed out. Not after a takeover (another
   handle has the process now) or a broken connection (nothing more can be sent on it). */
static bool wants_detach(const struct sbx_proc *p)
{
    if (p->kill_on_detach || p->fatal || p->op_err)
        return false;
    return p->attached || (p->exited && p->qh);
}

/* Sends ProcDetach without waiting (best effort: the handle is closing, whatever happens). */
static void send_detach(struct sbx_proc *p)
{
    Sbx__Agent__ProcDetach d = SBX__AGENT__PROC_DETACH__INIT;
    d.stdout_consumed = p->consumed[0];
    d.stderr_consumed = p->consumed[1];
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = p->op_id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_DETACH;
    f.proc_detach = &d;
    uint8_t buf[64];
    size_t len;
    if (frame_encode(&f, buf, sizeof(buf), &len, NULL, 0) != 0)
        return;
    ssize_t n;
    do
        n = send(p->conn->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    /* A partial frame (or none) reads as a close without ProcDetach on envd's side. */
}

int sbx_exec(sbx *sb, const sbx_exec_options *o, sbx_exec_result *res)
{
    if (!sb)
        return SBX_EINVAL;
    if (res)
        memset(res, 0, sizeof(*res));
    if (!res)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_exec: res is NULL");
    int r = check_opts(sb, o, "sbx_exec", false);
    if (r)
        return r;
    unsigned envd_timeout = o->timeout_ms == 0                ? EXEC_TIMEOUT_MS
                            : o->timeout_ms == SBX_NO_TIMEOUT ? 0
                                                              : o->timeout_ms;
    /* envd enforces the timeout; the host only guards against a guest that does not. */
    unsigned host_timeout = envd_timeout == 0 || envd_timeout > UINT32_MAX - EXEC_SLACK_MS
                                ? SBX_NO_TIMEOUT
                                : envd_timeout + EXEC_SLACK_MS;
    struct call c;
    if ((r = call_begin(sb, &c, host_timeout)) < 0)
        return r;
    struct sbx_proc *p;
    r = start(sb, &c, o, true, o->pty_rows, o->pty_cols, envd_timeout, &p);
    if (r < 0) {
        call_end(&c);
        return r;
    }
    p->fn = o->on_output;
    p->ctx = o->ctx;
    p->capturing = !o->on_output;
    /* Stdin and output interleaved: send while the window has room, otherwise receive. */
    const uint8_t *in = o->stdin_data;
    size_t off = 0;
    bool want_eof = o->stdin_data != NULL;
    while (r == 0 && (p->attached || p->nacks)) {
        if ((off < o->stdin_len || want_eof) && !p->in_err && p->attached) {
            int s = input_step(p, &c, in, o->stdin_len, &off, true);
            if (s < 0) {
                r = s;
                break;
            }
            if (s == 1) {
                if (off == o->stdin_len)
                    want_eof = false;
                continue;
            }
        }
        r = pump(p, &c);
        if (r == 0 && p->fn_stopped)
            r = call_fail(&c, SBX_EINTR, "sbx_exec: stopped by the output callback");
        if (r == 0 && p->op_err)
            r = sbx_seterr(sb, p->op_err, "%s", p->msg);
    }
    /* A process that stopped reading its stdin early (head, a failed grep) is normal: its
       stdin error does not fail the call. */
    if (r == 0 && !p->exited)
        r = sbx_seterr(sb, SBX_EPROTO, "sbx_exec: the process ended without an exit status");
    if (r == 0)
        fill_result(p, res);
    else
        memset(res, 0, sizeof(*res));
    /* On failure the connection closes and envd kills the process group (kill_on_detach). */
    sbx_proc_close(p);
    call_end(&c);
    return r;
}

/* --- background processes ----------------------------------------------------------------- */

/* sbx_proc_start and sbx_pty_open once the options are checked: starts the process (a
   terminal with rows > 0), gives it its stdin and makes the handle pollable. */
static int start_background(sbx *sb, const sbx_exec_options *o, unsigned rows, unsigned cols,
                            sbx_proc **out)
{
    /* Background processes are mostly servers: no limit unless one is asked for. */
    unsigned envd_timeout = o->timeout_ms == SBX_NO_TIMEOUT ? 0 : o->timeout_ms;
    struct call c;
    int r = call_begin(sb, &c, ANSWER_MS);
    if (r < 0)
        return r;
    struct sbx_proc *p = NULL;
    r = start(sb, &c, o, false, rows, cols, envd_timeout, &p);
    if (r == 0 && !p->pty && (o->stdin_data || !o->keep_stdin) && p->stdin_open)
        r = write_all(p, &c, o->stdin_data, o->stdin_len, !o->keep_stdin);
    else if (r == 0 && p->pty && o->stdin_len)
        r = write_all(p, &c, o->stdin_data, o->stdin_len, false);
    call_end(&c);
    if (r == 0)
        r = proc_pollable(p);
    if (r < 0 && p) {
        /* Started, but its stdin could not be given: it stays (detached) unless it already
           ended; report the error. */
        sbx_proc_close(p);
        return r;
    }
    if (r == 0) {
        sync_ready(p);
        *out = p;
    }
    return r;
}

int sbx_proc_start(sbx *sb, const sbx_exec_options *o, sbx_proc **out)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_proc_start: out is NULL");
    *out = NULL;
    int r = check_opts(sb, o, "sbx_proc_start", false);
    return r ? r : start_background(sb, o, o->pty_rows, o->pty_cols, out);
}

int sbx_pty_open(sbx *sb, unsigned rows, unsigned cols, const sbx_exec_options *o, sbx_proc **out)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_pty_open: out is NULL");
    *out = NULL;
    if (rows < 1 || rows > MAX_PTY || cols < 1 || cols > MAX_PTY)
        return sbx_seterr(sb, SBX_EINVAL,
                          "sbx_pty_open: terminal size %ux%u: rows and columns must be 1..%d", rows,
                          cols, MAX_PTY);
    sbx_exec_options def = SBX_EXEC_OPTIONS_INIT;
    if (!o)
        o = &def;
    int r = check_opts(sb, o, "sbx_pty_open", true);
    if (r)
        return r;
    return start_background(sb, o, rows, cols, out);
}

int sbx_proc_attach(sbx *sb, uint32_t pid, sbx_proc **out, uint64_t *dropped)
{
    if (!sb)
        return SBX_EINVAL;
    if (!out)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_proc_attach: out is NULL");
    *out = NULL;
    if (dropped)
        *dropped = 0;
    if (pid == 0 || pid > INT32_MAX)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_proc_attach: pid %u is not a valid pid", pid);
    struct call c;
    int r = call_begin(sb, &c, ANSWER_MS);
    if (r < 0)
        return r;
    if ((r = call_require(&c, AGENT_FEATURE_EXEC, "processes")) < 0) {
        call_end(&c);
        return r;
    }
    struct sbx_proc *p = proc_new(sb);
    if (!p) {
        call_end(&c);
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    }
    if ((r = agent_conn_get(&c, &p->conn)) < 0) {
        proc_free(p);
        call_end(&c);
        return r;
    }
    Sbx__Agent__ProcAttach pa = SBX__AGENT__PROC_ATTACH__INIT;
    pa.pid = pid;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = p->op_id = agent_conn_id(p->conn);
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_ATTACH;
    f.proc_attach = &pa;
    Frame *rep = NULL;
    if ((r = agent_conn_send(&c, p->conn, &f)) == 0)
        r = agent_conn_recv(&c, p->conn, &rep);
    bool reusable = false;
    if (r == 0) {
        if (rep->id != p->op_id) {
            r = call_fail(&c, SBX_EPROTO, "the guest agent answered ProcAttach with id %u",
                          rep->id);
        } else if (rep->body_case == SBX__AGENT__FRAME__BODY_ERROR) {
            r = guest_error(&c, rep->error, "attaching to process %u", pid);
            reusable = r != SBX_EPROTO;
        } else if (rep->body_case != SBX__AGENT__FRAME__BODY_PROC_STARTED ||
                   rep->proc_started->pid != pid) {
            r = call_fail(&c, SBX_EPROTO, "the guest agent answered ProcAttach with %s",
                          frame_body_name(rep->body_case));
        } else if (dropped) {
            *dropped = rep->proc_started->dropped_bytes;
        }
    }
    frame_free(rep);
    call_end(&c);
    if (r < 0) {
        agent_conn_put(sb, p->conn, reusable);
        proc_free(p);
        return r;
    }
    p->pid = pid;
    p->attached = true;
    /* Unknown here whether it has stdin or a terminal: envd says so when it matters. */
    p->stdin_open = true;
    if ((r = proc_pollable(p)) < 0) {
        sbx_proc_close(p);
        return r;
    }
    sync_ready(p);
    *out = p;
    return 0;
}

uint32_t sbx_proc_pid(const sbx_proc *p)
{
    return p ? p->pid : 0;
}

int sbx_proc_fd(const sbx_proc *p)
{
    return p ? p->epfd : -1;
}

/* Takes up to cap bytes of the queue's first chunk. */
static int queue_pop(struct sbx_proc *p, void *buf, size_t cap, int *stream)
{
    struct hchunk *h = p->qh;
    size_t n = h->len - h->off;
    if (n > cap)
        n = cap;
    memcpy(buf, h->data + h->off, n);
    if (stream)
        *stream = h->stream;
    h->off += n;
    p->qbytes -= n;
    p->consumed[h->stream == SBX_STDERR] += n;
    if (h->off == h->len) {
        p->qh = h->next;
        if (!p->qh)
            p->qt = NULL;
        free(h);
    }
    return (int)n;
}

static int proc_read_impl(sbx_proc *p, void *buf, size_t cap, int *stream, unsigned timeout_ms)
{
    if (!p)
        return SBX_EINVAL;
    if (!buf || cap == 0)
        return sbx_seterr(p->sb, SBX_EINVAL, "sbx_proc_read: %s", buf ? "cap is 0" : "buf is NULL");
    if (cap > INT32_MAX)
        cap = INT32_MAX;
    if (p->qh)
        return queue_pop(p, buf, cap, stream);
    if (p->exited)
        return 0;
    if (p->fatal || p->op_err)
        return sticky(p);
    struct call c;
    int r = call_begin(p->sb, &c, timeout_ms);
    if (r < 0)
        return r;
    while (r == 0 && !p->qh && !p->exited && !p->op_err)
        r = pump(p, &c);
    call_end(&c);
    if (p->qh)
        return queue_pop(p, buf, cap, stream);
    if (p->exited)
        return 0;
    if (r == 0 && p->op_err)
        return sticky(p);
    if (r == SBX_ETIMEDOUT && timeout_ms == 0)
        return sbx_seterr(p->sb, SBX_EAGAIN, "no output of process %u yet", p->pid);
    return r;
}

/* Checks that the handle can still talk to envd. */
static int usable(struct sbx_proc *p, const char *what)
{
    if (p->fatal)
        return sticky(p);
    if (!p->conn)
        return sbx_seterr(p->sb, SBX_EINVAL, "%s: the handle has no connection", what);
    return 0;
}

static int proc_write_impl(sbx_proc *p, const void *data, size_t len)
{
    if (!p)
        return SBX_EINVAL;
    if (!data && len)
        return sbx_seterr(p->sb, SBX_EINVAL, "sbx_proc_write: data is NULL");
    int r = usable(p, "sbx_proc_write");
    if (r)
        return r;
    if (p->in_err)
        return sbx_seterr(p->sb, p->in_err, "%s", p->in_msg);
    if (!p->stdin_open)
        return sbx_seterr(p->sb, SBX_EINVAL, "sbx_proc_write: stdin of process %u is %s", p->pid,
                          p->in_sent || p->nacks ? "closed" : "not open (set keep_stdin)");
    if (!len)
        return 0;
    struct call c;
    if ((r = call_begin(p->sb, &c, ANSWER_MS)) < 0)
        return r;
    r = write_all(p, &c, data, len, false);
    call_end(&c);
    return r;
}

static int proc_close_stdin_impl(sbx_proc *p)
{
    if (!p)
        return SBX_EINVAL;
    int r = usable(p, "sbx_proc_close_stdin");
    if (r)
        return r;
    if (p->pty)
        return sbx_seterr(p->sb, SBX_EINVAL,
                          "sbx_proc_close_stdin: a terminal has no end of input; write ^D (\\x04)");
    if (!p->stdin_open)
        return p->in_err ? sbx_seterr(p->sb, p->in_err, "%s", p->in_msg) : 0;
    struct call c;
    if ((r = call_begin(p->sb, &c, ANSWER_MS)) < 0)
        return r;
    r = write_all(p, &c, NULL, 0, true);
    p->stdin_open = false;
    call_end(&c);
    return r;
}

static int proc_signal_impl(sbx_proc *p, int signal, int group)
{
    if (!p)
        return SBX_EINVAL;
    if (signal < 0 || signal > 64)
        return sbx_seterr(p->sb, SBX_EINVAL, "sbx_proc_signal: signal %d is out of range", signal);
    /* Not streaming any more: any connection will do. */
    if (!p->attached || p->fatal)
        return sbx_kill(p->sb, p->pid, signal, group);
    struct call c;
    int r = call_begin(p->sb, &c, ANSWER_MS);
    if (r < 0)
        return r;
    Sbx__Agent__ProcSignal sg = SBX__AGENT__PROC_SIGNAL__INIT;
    sg.pid = p->pid;
    sg.signal = signal;
    sg.group = group != 0;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_SIGNAL;
    f.proc_signal = &sg;
    r = attached_request(p, &c, &f, SBX__AGENT__FRAME__BODY_OK, "signalling process %u");
    call_end(&c);
    return r;
}

static int proc_resize_impl(sbx_proc *p, unsigned rows, unsigned cols)
{
    if (!p)
        return SBX_EINVAL;
    if (rows < 1 || rows > MAX_PTY || cols < 1 || cols > MAX_PTY)
        return sbx_seterr(p->sb, SBX_EINVAL,
                          "sbx_proc_resize: size %ux%u: rows and columns must be 1..%d", rows, cols,
                          MAX_PTY);
    Sbx__Agent__PtySize sz = SBX__AGENT__PTY_SIZE__INIT;
    sz.rows = rows;
    sz.cols = cols;
    Sbx__Agent__ProcResize rz = SBX__AGENT__PROC_RESIZE__INIT;
    rz.pid = p->pid;
    rz.size = &sz;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_RESIZE;
    f.proc_resize = &rz;
    struct call c;
    int r = call_begin(p->sb, &c, ANSWER_MS);
    if (r < 0)
        return r;
    if (p->attached && !p->fatal) {
        r = attached_request(p, &c, &f, SBX__AGENT__FRAME__BODY_OK, "resizing process %u");
    } else {
        Frame *rep = NULL;
        r = agent_rpc(&c, &f, SBX__AGENT__FRAME__BODY_OK, &rep, "sbx_proc_resize");
        frame_free(rep);
    }
    call_end(&c);
    return r;
}

static int proc_wait_impl(sbx_proc *p, unsigned timeout_ms, sbx_exec_result *res)
{
    if (!p)
        return SBX_EINVAL;
    if (res)
        memset(res, 0, sizeof(*res));
    if (!res)
        return sbx_seterr(p->sb, SBX_EINVAL, "sbx_proc_wait: res is NULL");
    struct call c = {.sb = p->sb, .slot = -1};
    int r = 0;
    bool begun = false;
    if (!p->exited) {
        if (p->fatal || p->op_err)
            return sticky(p);
        if ((r = call_begin(p->sb, &c, timeout_ms)) < 0)
            return r;
        begun = true;
    }
    /* Output not read yet belongs to the result, in front of what comes next. Kept in the
       handle across timed-out waits. */
    p->capturing = true;
    if (p->qh)
        r = queue_to_capture(p, &c);
    while (r == 0 && !p->exited && !p->op_err)
        r = pump(p, &c);
    p->capturing = false;
    if (begun)
        call_end(&c);
    if (r == 0 && p->op_err && !p->exited)
        r = sticky(p);
    if (r < 0)
        return r;
    fill_result(p, res);
    return 0;
}

/* The public calls on a handle keep its pollable fd in step. */
int sbx_proc_read(sbx_proc *p, void *buf, size_t cap, int *stream, unsigned timeout_ms)
{
    int r = proc_read_impl(p, buf, cap, stream, timeout_ms);
    if (p)
        sync_ready(p);
    return r;
}

int sbx_proc_write(sbx_proc *p, const void *data, size_t len)
{
    int r = proc_write_impl(p, data, len);
    if (p)
        sync_ready(p);
    return r;
}

int sbx_proc_close_stdin(sbx_proc *p)
{
    int r = proc_close_stdin_impl(p);
    if (p)
        sync_ready(p);
    return r;
}

int sbx_proc_signal(sbx_proc *p, int signal, int group)
{
    int r = proc_signal_impl(p, signal, group);
    if (p)
        sync_ready(p);
    return r;
}

int sbx_proc_resize(sbx_proc *p, unsigned rows, unsigned cols)
{
    int r = proc_resize_impl(p, rows, cols);
    if (p)
        sync_ready(p);
    return r;
}

int sbx_proc_wait(sbx_proc *p, unsigned timeout_ms, sbx_exec_result *res)
{
    int r = proc_wait_impl(p, timeout_ms, res);
    if (p)
        sync_ready(p);
    return r;
}

void sbx_proc_close(sbx_proc *p)
{
    if (!p)
        return;
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->evfd >= 0)
        close(p->evfd);
    if (p->conn) {
        if (wants_detach(p)) {
            send_detach(p);
            agent_conn_put(p->sb, p->conn, false);
            p->conn = NULL;
        } else {
            release_conn(p);
        }
    }
    frame_free(p->req_reply);
    queue_clear(p);
    capture_clear(p);
    proc_free(p);
}

/* --- sandbox-wide ------------------------------------------------------------------------- */

int sbx_kill(sbx *sb, uint32_t pid, int signal, int group)
{
    if (!sb)
        return SBX_EINVAL;
    if (pid == 0 || pid > INT32_MAX)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_kill: pid %u is not a valid pid", pid);
    if (signal < 0 || signal > 64)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_kill: signal %d is out of range", signal);
    struct call c;
    int r = call_begin(sb, &c, ANSWER_MS);
    if (r < 0)
        return r;
    Sbx__Agent__ProcSignal sg = SBX__AGENT__PROC_SIGNAL__INIT;
    sg.pid = pid;
    sg.signal = signal;
    sg.group = group != 0;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_SIGNAL;
    f.proc_signal = &sg;
    Frame *rep = NULL;
    if (!(r = call_require(&c, AGENT_FEATURE_EXEC, "processes")))
        r = agent_rpc(&c, &f, SBX__AGENT__FRAME__BODY_OK, &rep, "sbx_kill");
    frame_free(rep);
    call_end(&c);
    return r;
}

void sbx_proc_list_free(sbx_proc_info *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; list[i].argv && list[i].argv[j]; j++)
            free(list[i].argv[j]);
        free(list[i].argv);
        free(list[i].cwd);
        free(list[i].tag);
    }
    free(list);
}

int sbx_proc_list(sbx *sb, sbx_proc_info **list, size_t *n)
{
    if (!sb)
        return SBX_EINVAL;
    if (!list || !n)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_proc_list: list or n is NULL");
    *list = NULL;
    *n = 0;
    struct call c;
    int r = call_begin(sb, &c, ANSWER_MS);
    if (r < 0)
        return r;
    Sbx__Agent__ProcListRequest lr = SBX__AGENT__PROC_LIST_REQUEST__INIT;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_LIST_REQUEST;
    f.proc_list_request = &lr;
    Frame *rep = NULL;
    if (!(r = call_require(&c, AGENT_FEATURE_EXEC, "processes")))
        r = agent_rpc(&c, &f, SBX__AGENT__FRAME__BODY_PROC_LIST, &rep, "sbx_proc_list");
    if (r < 0) {
        call_end(&c);
        return r;
    }
    const Sbx__Agent__ProcList *pl = rep->proc_list;
    size_t count = pl->n_procs;
    if (count > LIST_MAX) {
        r = call_fail(&c, SBX_EPROTO, "the guest agent listed %zu processes", pl->n_procs);
        frame_free(rep);
        call_end(&c);
        return r;
    }
    sbx_proc_info *l = calloc(pl->n_procs ? pl->n_procs : 1, sizeof(*l));
    bool oom = !l;
    for (size_t i = 0; !oom && i < pl->n_procs; i++) {
        const Sbx__Agent__ProcInfo *in = pl->procs[i];
        if (in->n_argv > MAX_ARGS) {
            r = call_fail(&c, SBX_EPROTO, "the guest agent listed a process with %zu arguments",
                          in->n_argv);
            break;
        }
        sbx_proc_info *o = &l[i];
        o->pid = in->pid;
        o->running = in->running;
        o->pty = in->pty;
        o->attached = in->attached;
        if (in->exit) {
            o->exit_code = in->exit->exit_code;
            o->signal = in->exit->signal;
        }
        o->argv = calloc(in->n_argv + 1, sizeof(char *));
        o->cwd = strdup(in->cwd);
        o->tag = strdup(in->tag);
        oom = !o->argv || !o->cwd || !o->tag;
        for (size_t j = 0; !oom && j < in->n_argv; j++)
            oom = !(o->argv[j] = strdup(in->argv[j]));
    }
    if (oom && r == 0)
        r = call_fail(&c, SBX_ENOMEM, "out of memory");
    frame_free(rep);
    call_end(&c);
    if (r < 0) {
        sbx_proc_list_free(l, count);
        return r;
    }
    *list = l;
    *n = count;
    return 0;
}
