// SPDX-License-Identifier: Apache-2.0
/* envd: processes and PTYs (ProcStart, ProcAttach, ProcDetach, ProcInput, ProcSignal, ProcResize,
   ProcList). */

/*
 * Process model
 * -------------
 * Every process envd starts has a record here from ProcStart until it is forgotten (64
 * finished records are kept). A record is "live" until the process was reaped and its output
 * pipes are closed, then "finished" (its exit status is known and stays available).
 *
 * Output: the process's stdout/stderr pipes (or PTY master) are non-blocking watchers. What
 * is read goes into the record's retained output: one chunk per read, tagged with its stream
 * and its offset within that stream, in the order read (so both streams keep their
 * interleaving). sent[] is, per stream, how far it went out in ProcOutput frames on the
 * attached connection; sending does not free anything. The host may not have handed what it
 * received to its user when it closes the connection, so it tells with ProcDetach how much
 * was consumed and sent[] moves back there: the next attach gets the rest again. Without
 * ProcDetach (the host died) the next attach resumes after what was sent.
 *  - Attached: the pipes are polled only while the connection is writable and less than
 *    64 KiB are unsent; otherwise the watchers pause and the op's drain callback resumes them
 *    once the host has read. A slow host therefore slows the process (it blocks on a full
 *    pipe) instead of growing envd.
 *  - Detached: the pipes are always read.
 * Either way a process keeps about its newest 1 MiB (each chunk costs its bytes plus
 * CHUNK_COST, so many tiny reads cannot cost more memory than the cap) and all processes
 * together 32 MiB; beyond, the oldest chunks go (never unsent ones of an attached process).
 * Bytes dropped before anybody consumed them count into ProcStarted.dropped_bytes. Once no
 * connection can ask for a replay any more (detached), what lies before sent[] is freed.
 * Exit: ProcExit is sent after the unsent output, once the process was reaped and both pipes
 * reached EOF. A background grandchild that inherited the pipes would keep them open forever,
 * so 100 ms after the reap whatever is readable is taken and the pipes are closed. The
 * connection then serves requests again, but a ProcDetach as its next frame still applies (the
 * host may close its handle before it has read the exit): until then the record "lingers" on
 * the connection with a small op that passes any other frame on.
 * Input: ProcInput data is written to stdin (or the PTY master) at once as far as the pipe
 * takes it; the rest waits in a per-process queue of at most 1 MiB (beyond that: BUSY) and is
 * written when the fd polls writable. ProcInput.ack asks for an Ok once the frame's data is
 * written, which the host uses as a window so the queue never fills.
 * Children: fork, then in the child a new session (setsid, so kill(-pid) reaches the whole
 * process group), the PTY as controlling terminal, the user's groups/gid/uid, the cwd, the
 * signal mask and dispositions envd changed restored, and exec. Failures before exec travel
 * back through a close-on-exec status pipe (ProcStart answers Error); a failed exec prints a
 * shell-like message on the child's stderr and exits 127 (not found) or 126 (not executable).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "envd.h"

#define MAX_LIVE        256          /* running processes (ProcStart beyond: BUSY) */
#define MAX_FINISHED    64           /* finished processes remembered */
#define MAX_ARGS        4096         /* argv entries */
#define MAX_ENVS        4096         /* per-request environment entries */
#define MAX_STR         (128u << 10) /* one argv / env string (the kernel's MAX_ARG_STRLEN) */
#define MAX_ARG_TOTAL   (1u << 20)   /* argv + envs of one request, bytes */
#define MAX_TAG         1024
#define MAX_PATH        4096
#define MAX_PTY_SIZE    1000
#define LIST_ARGV_MAX   4096        /* bytes of argv kept for ProcList (bounds the reply's size) */
#define CHUNK_MAX       (64u << 10) /* one ProcOutput */
#define ATTACHED_QUEUE  (64u << 10) /* read output while attached only below this unsent */
#define RETAIN_MAX      (1u << 20)  /* output kept per process (chunk costs) */
#define RETAINED_MAX    (32u << 20) /* output kept for all processes together */
#define CHUNK_COST      64          /* bookkeeping charged per chunk (header, allocator) */
#define STDIN_QUEUE_MAX (1u << 20)  /* input not yet written, per process */
#define STDIN_DATA_MAX  (64u << 10) /* one ProcInput */
#define EXIT_GRACE_MS   100         /* after the reap, wait this long for the pipes' EOF */
#define GRACE_READ_MAX  (4u << 20)  /* taken from the pipes when the grace ends */
#define BASE_PATH       "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef Sbx__Agent__Frame Frame;

/* A piece of output: bytes [pos, pos + len) of stream `stream` (0 stdout, 1 stderr). */
struct chunk {
    struct chunk *next;
    uint64_t pos;
    uint32_t len;
    uint8_t stream;
    uint8_t data[];
};

struct proc;

/* A ProcInput with ack, answered once in_written reaches end. */
struct ack {
    struct ack *next;
    struct proc *p;
    struct conn *c;
    uint32_t id;
    uint64_t end;
    bool eof;    /* answered when stdin is closed */
    bool own_op; /* c is a request connection kept busy by this ack (ack_op) */
};

struct proc {
    struct proc *next;
    pid_t pid;
    bool pty;
    bool reaped;   /* the wait status is known */
    bool finished; /* reaped and output pipes closed: ProcExit can be sent */
    bool deadline_killed, kill_on_detach;
    int status;
    uint64_t start_ms, end_ms, deadline_ms, grace_ms, finish_seq;
    char **argv; /* NULL-terminated */
    char *cwd, *tag;
    /* Output (per stream: [0] stdout, [1] stderr) */
    struct watcher out_w, err_w; /* fd -1 once closed */
    struct chunk *qh, *qt;       /* retained output, oldest first */
    struct chunk *cur;           /* no chunk before it has unsent bytes (NULL: none has) */
    size_t cost;                 /* of the retained chunks (their bytes + CHUNK_COST each) */
    uint64_t total[2];           /* bytes read from the process */
    uint64_t start[2];           /* the oldest retained byte (all before are freed) */
    uint64_t sent[2];            /* sent on the attached connection / where an attach resumes */
    uint64_t base[2];            /* sent[] when the current (or lingering) attachment began */
    uint64_t unsent;             /* sum of total - sent */
    uint64_t dropped;            /* lost before anybody consumed it, for the next attacher */
    /* After ProcExit: the connection that received it, until its next frame (ProcDetach). */
    struct conn *linger;
    uint32_t linger_id;
    /* Input: stdin pipe or a dup of the PTY master; fd -1 when none or closed. */
    struct watcher in_w;
    bool has_stdin; /* stdin was kept open at start (or a PTY) */
    uint8_t *inq;
    size_t in_off, in_len, in_cap;
    bool in_eof; /* close once the queue is written */
    uint64_t in_accepted, in_written;
    struct ack *acks;
    /* The attached connection (NULL: detached) and its ProcStart / ProcAttach id. */
    struct conn *conn;
    uint32_t op_id;
};

/* envd is single-threaded; these are its one process table. */
static struct proc *procs; /* oldest first */
static unsigned nlive, nfinished;
static size_t retained_total; /* cost of the retained output of all processes */
static uint64_t finish_counter;
static struct rlimit nofile_orig;
static bool nofile_done;

static void attached_frame(struct server *s, struct conn *c, const Frame *f, void *arg);
static bool attached_drain(struct server *s, struct conn *c, void *arg);
static void attached_closed(struct server *s, struct conn *c, void *arg);
static const struct conn_op attached_op = {attached_frame, attached_drain, attached_closed};

static void linger_frame(struct server *s, struct conn *c, const Frame *f, void *arg);
static void linger_closed(struct server *s, struct conn *c, void *arg);
static const struct conn_op linger_op = {linger_frame, NULL, linger_closed};
static void end_linger(struct proc *p);

static void ack_frame(struct server *s, struct conn *c, const Frame *f, void *arg);
static void ack_closed(struct server *s, struct conn *c, void *arg);
static const struct conn_op ack_op = {ack_frame, NULL, ack_closed};

static void invalid(struct conn *c, uint32_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void invalid(struct conn *c, uint32_t id, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT, 0, "%s", msg);
}

/* --- the table --------------------------------------------------------------------------- */

static struct proc *find_proc(uint32_t pid)
{
    if (pid == 0 || pid > INT32_MAX)
        return NULL;
    /* A pid may be reused: a live record wins over a finished one, the newest finished over
       older ones. */
    struct proc *fin = NULL;
    for (struct proc *p = procs; p; p = p->next) {
        if (p->pid != (pid_t)pid)
            continue;
        if (!p->finished)
            return p;
        fin = p;
    }
    return fin;
}

static bool is_attached_elsewhere(const struct proc *p)
{
    return p->conn != NULL;
}

static void chunk_free(struct proc *p, struct chunk *ch)
{
    size_t cost = ch->len + CHUNK_COST;
    p->cost -= cost;
    retained_total -= cost;
    uint64_t end = ch->pos + ch->len;
    if (p->start[ch->stream] < end)
        p->start[ch->stream] = end;
    if (p->cur == ch)
        p->cur = ch->next;
    free(ch);
}

static void queue_free(struct proc *p)
{
    while (p->qh) {
        struct chunk *ch = p->qh;
        p->qh = ch->next;
        chunk_free(p, ch);
    }
    p->qt = p->cur = NULL;
}

static void proc_free(struct server *s, struct proc *p)
{
    end_linger(p);
    server_unwatch(s, &p->out_w);
    server_unwatch(s, &p->err_w);
    server_unwatch(s, &p->in_w);
    if (p->out_w.fd >= 0)
        close(p->out_w.fd);
    if (p->err_w.fd >= 0)
        close(p->err_w.fd);
    if (p->in_w.fd >= 0)
        close(p->in_w.fd);
    queue_free(p);
    free(p->inq);
    for (size_t i = 0; p->argv && p->argv[i]; i++)
        free(p->argv[i]);
    free(p->argv);
    free(p->cwd);
    free(p->tag);
    free(p);
}

static void unlink_proc(struct proc *p)
{
    for (struct proc **pp = &procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            return;
        }
}

/* Forgets the oldest finished records beyond MAX_FINISHED (never one a connection streams). */
static void evict(struct server *s)
{
    while (nfinished > MAX_FINISHED) {
        struct proc *old = NULL;
        for (struct proc *p = procs; p; p = p->next)
            if (p->finished && !p->conn && (!old || p->finish_seq < old->finish_seq))
                old = p;
        if (!old)
            return;
        unlink_proc(old);
        nfinished--;
        proc_free(s, old);
    }
}

/* --- retained output --------------------------------------------------------------------- */

/* Bytes of ch not sent yet. */
static uint64_t chunk_unsent(const struct proc *p, const struct chunk *ch)
{
    uint64_t end = ch->pos + ch->len, s = p->sent[ch->stream];
    if (end <= s)
        return 0;
    return end - (s > ch->pos ? s : ch->pos);
}

/* Frees the oldest chunk. Its unsent bytes are lost: counted, and skipped by sending. */
static void drop_head(struct proc *p)
{
    struct chunk *ch = p->qh;
    uint64_t lost = chunk_unsent(p, ch);
    if (lost) {
        /* The oldest chunk of its stream: nothing of that stream before it is unsent. */
        p->dropped += lost;
        p->unsent -= lost;
        p->sent[ch->stream] = ch->pos + ch->len;
    }
    p->qh = ch->next;
    if (!p->qh)
        p->qt = NULL;
    chunk_free(p, ch);
}

/* True when p's oldest chunk may go: any of a detached process, only a sent one while a
   connection is attached (backpressure promises it everything). */
static bool head_droppable(const struct proc *p)
{
    return p->qh && (!p->conn || chunk_unsent(p, p->qh) == 0);
}

/* Frees what lies before sent[]: once no connection can ask for it again with ProcDetach
   (the process is detached, or a new attachment begins there), nobody will get it. */
static void compact(struct proc *p)
{
    struct chunk **pp = &p->qh, *last = NULL;
    while (*pp) {
        struct chunk *ch = *pp;
        if (ch->pos + ch->len <= p->sent[ch->stream]) {
            *pp = ch->next;
            chunk_free(p, ch);
        } else {
            last = ch;
            pp = &ch->next;
        }
    }
    p->qt = last;
    p->cur = p->qh;
}

/* Keeps p within its own cap and everything within the global one. */
static void retain_trim(struct proc *p)
{
    while (p->cost > RETAIN_MAX && head_droppable(p))
        drop_head(p);
    if (retained_total <= RETAINED_MAX)
        return;
    /* Over the global cap: the output of the longest-finished processes goes first (nobody
       attached to them), then this one's oldest, then the oldest of whichever holds most. */
    while (retained_total > RETAINED_MAX) {
        struct proc *old = NULL;
        for (struct proc *q = procs; q; q = q->next)
            if (q != p && q->finished && !q->conn && q->qh &&
                (!old || q->finish_seq < old->finish_seq))
                old = q;
        if (!old)
            break;
        while (retained_total > RETAINED_MAX && old->qh)
            drop_head(old);
    }
    while (retained_total > RETAINED_MAX && head_droppable(p))
        drop_head(p);
    while (retained_total > RETAINED_MAX) {
        struct proc *big = NULL;
        for (struct proc *q = procs; q; q = q->next)
            if (head_droppable(q) && (!big || q->cost > big->cost))
                big = q;
        if (!big)
            break; /* only unsent output of attached processes: bounded by backpressure */
        drop_head(big);
    }
}

/* Appends what was read (n <= CHUNK_MAX). One allocation of exactly n bytes per read. */
static bool queue_append(struct proc *p, int stream, const uint8_t *data, size_t n)
{
    if (n == 0)
        return true;
    struct chunk *ch = malloc(sizeof(*ch) + n);
    if (!ch)
        return false;
    *ch = (struct chunk){.pos = p->total[stream], .len = (uint32_t)n, .stream = (uint8_t)stream};
    memcpy(ch->data, data, n);
    if (p->qt)
        p->qt->next = ch;
    else
        p->qh = ch;
    p->qt = ch;
    if (!p->cur)
        p->cur = ch;
    p->total[stream] += n;
    p->unsent += n;
    p->cost += n + CHUNK_COST;
    retained_total += n + CHUNK_COST;
    return true;
}

/* --- watchers ---------------------------------------------------------------------------- */

static void update_watch(struct proc *p)
{
    bool want = !p->conn || (conn_writable(p->conn) && p->unsent < ATTACHED_QUEUE);
    p->out_w.events = p->out_w.fd >= 0 && want ? POLLIN : 0;
    p->err_w.events = p->err_w.fd >= 0 && want ? POLLIN : 0;
    p->in_w.events = p->in_w.fd >= 0 && p->in_len > p->in_off ? POLLOUT : 0;
}

static void send_exit(struct proc *p)
{
    Sbx__Agent__ProcExit e = SBX__AGENT__PROC_EXIT__INIT;
    if (WIFEXITED(p->status)) {
        e.exit_code = WEXITSTATUS(p->status);
    } else {
        e.exit_code = -1;
        e.signal = WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0;
    }
    e.timed_out = p->deadline_killed && WIFSIGNALED(p->status);
    e.duration_ms = p->end_ms - p->start_ms;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = p->op_id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_EXIT;
    f.proc_exit = &e;
    conn_send(p->conn, &f);
}

/* Sends the next unsent bytes: consecutive ones of one stream together, up to CHUNK_MAX (many
   small reads become one frame). Returns false when there were none. */
static bool send_next(struct proc *p)
{
    static uint8_t buf[CHUNK_MAX];
    if (!p->cur)
        p->cur = p->qh;
    while (p->cur && chunk_unsent(p, p->cur) == 0)
        p->cur = p->cur->next;
    if (!p->cur) {
        p->unsent = 0; /* cannot be otherwise; keeps a slip from spinning */
        return false;
    }
    int stream = p->cur->stream;
    size_t n = 0;
    for (struct chunk *ch = p->cur; ch; ch = ch->next) {
        uint64_t u = chunk_unsent(p, ch);
        if (u == 0)
            continue; /* sent already (after a replay position moved back) */
        if (ch->stream != stream || n + u > sizeof(buf))
            break;
        memcpy(buf + n, ch->data + (ch->len - u), u);
        n += u;
        p->sent[stream] += u;
    }
    p->unsent -= n;
    Sbx__Agent__ProcOutput o = SBX__AGENT__PROC_OUTPUT__INIT;
    o.stream = stream ? SBX__AGENT__STREAM__STREAM_STDERR : SBX__AGENT__STREAM__STREAM_STDOUT;
    o.data.data = buf;
    o.data.len = n;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = p->op_id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_OUTPUT;
    f.proc_output = &o;
    conn_send(p->conn, &f);
    return true;
}

/* Moves unsent output to the attached connection while it is writable; after the last of
   it, ProcExit ends the attachment. May detach p (never frees it). */
static void proc_flush(struct proc *p)
{
    struct conn *c = p->conn;
    if (!c)
        return;
    while (p->unsent && conn_writable(c) && send_next(p))
        ;
    if (!p->unsent && p->finished && conn_writable(c)) {
        send_exit(p);
        conn_set_op(c, NULL, NULL);
        p->conn = NULL;
        if (p->kill_on_detach) {
            /* sbx_exec's: its host never detaches, nothing is asked for again. */
            compact(p);
        } else {
            p->linger = c;
            p->linger_id = p->op_id;
            conn_set_op(c, &linger_op, p);
        }
        p->kill_on_detach = false;
    }
    update_watch(p);
}

static void close_watch(struct server *s, struct watcher *w)
{
    server_unwatch(s, w);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    w->events = 0;
}

/* --- input ------------------------------------------------------------------------------- */

static void ack_answer(struct ack *a, int err)
{
    if (err)
        conn_errno(a->c, a->id, err, "stdin of process %d", (int)a->p->pid);
    else
        conn_ok(a->c, a->id);
    if (a->own_op)
        conn_set_op(a->c, NULL, NULL);
    free(a);
}

/* Answers the acks that are due: written up to their end (eof ones: stdin closed). With
   fail_err, all remaining ones fail with it. */
static void acks_settle(struct proc *p, bool in_closed, int fail_err)
{
    struct ack **pp = &p->acks;
    while (*pp) {
        struct ack *a = *pp;
        bool done = p->in_written >= a->end && (!a->eof || in_closed);
        if (done || fail_err) {
            *pp = a->next;
            ack_answer(a, done ? 0 : fail_err);
        } else {
            pp = &a->next;
        }
    }
}

/* Drops the acks of a connection that is going away or detached (err 0: it is being freed,
   nothing can be sent on it). */
static void acks_forget_conn(struct proc *p, struct conn *c, int err)
{
    struct ack **pp = &p->acks;
    while (*pp) {
        struct ack *a = *pp;
        if (a->c == c && !a->own_op) {
            *pp = a->next;
            if (err)
                ack_answer(a, err);
            else
                free(a);
        } else {
            pp = &a->next;
        }
    }
}

static void close_in(struct server *s, struct proc *p, int err)
{
    close_watch(s, &p->in_w);
    free(p->inq);
    p->inq = NULL;
    p->in_off = p->in_len = p->in_cap = 0;
    acks_settle(p, err == 0, err ? err : EPIPE);
}

static void try_write(struct server *s, struct proc *p)
{
    if (p->in_w.fd < 0)
        return;
    size_t budget = 256u << 10; /* per wakeup, like output */
    while (p->in_len > p->in_off && budget > 0) {
        size_t n = p->in_len - p->in_off;
        if (n > budget)
            n = budget;
        ssize_t w = write(p->in_w.fd, p->inq + p->in_off, n);
        if (w > 0) {
            p->in_off += (size_t)w;
            p->in_written += (uint64_t)w;
            budget -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            /* EPIPE: the process closed its stdin (or exited); EIO: the PTY is gone. */
            close_in(s, p, w < 0 ? errno : EIO);
            return;
        }
    }
    if (p->in_off == p->in_len) {
        p->in_off = p->in_len = 0;
        if (p->in_eof && !p->pty) {
            close_in(s, p, 0);
            return;
        }
    }
    acks_settle(p, false, 0);
    update_watch(p);
}

static void on_input_ready(struct server *s, struct watcher *w, short revents)
{
    struct proc *p = w->arg;
    if (revents & (POLLERR | POLLNVAL)) {
        close_in(s, p, EPIPE);
        update_watch(p);
        return;
    }
    try_write(s, p);
}

/* ProcInput for p from connection c (in_op: c is attached to a process, else it is a
   request connection). */
static void proc_input(struct server *s, struct conn *c, uint32_t id, struct proc *p,
                       const Sbx__Agent__ProcInput *in, bool in_op)
{
    if (in->data.len > STDIN_DATA_MAX) {
        invalid(c, id, "ProcInput carries %zu bytes; at most %u", in->data.len, STDIN_DATA_MAX);
        return;
    }
    if (!p->has_stdin) {
        invalid(c, id, "process %d was started without stdin", (int)p->pid);
        return;
    }
    if (p->in_w.fd < 0 || (p->in_eof && !p->pty)) {
        conn_errno(c, id, EPIPE, "stdin of process %d is closed", (int)p->pid);
        return;
    }
    if (in->ack && in_op && p->conn != c) {
        invalid(c, id,
                "acknowledged input for process %d on a connection attached to another "
                "process",
                (int)p->pid);
        return;
    }
    size_t queued = p->in_len - p->in_off;
    if (queued + in->data.len > STDIN_QUEUE_MAX) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "stdin queue of process %d is full (%zu bytes not read by the process)",
                   (int)p->pid, queued);
        return;
    }
    if (in->data.len > 0) {
        if (p->in_cap - p->in_len < in->data.len) {
            if (p->in_off > 0) {
                memmove(p->inq, p->inq + p->in_off, queued);
                p->in_len = queued;
                p->in_off = 0;
            }
            if (p->in_cap - p->in_len < in->data.len) {
                size_t cap = p->in_len + in->data.len;
                uint8_t *b = realloc(p->inq, cap);
                if (!b) {
                    conn_errno(c, id, ENOMEM, "stdin queue");
                    return;
                }
                p->inq = b;
                p->in_cap = cap;
            }
        }
        memcpy(p->inq + p->in_len, in->data.data, in->data.len);
        p->in_len += in->data.len;
        p->in_accepted += in->data.len;
    }
    if (in->eof && !p->pty)
        p->in_eof = true;
    if (in->ack) {
        struct ack *a = calloc(1, sizeof(*a));
        if (!a) {
            conn_errno(c, id, ENOMEM, "stdin");
            return;
        }
        *a = (struct ack){.p = p,
                          .c = c,
                          .id = id,
                          .end = p->in_accepted,
                          .eof = in->eof && !p->pty,
                          .own_op = !in_op};
        /* Appended: acks are answered in order. */
        struct ack **pp = &p->acks;
        while (*pp)
            pp = &(*pp)->next;
        *pp = a;
        if (!in_op)
            conn_set_op(c, &ack_op, a);
    }
    try_write(s, p);
}

static void ack_frame(struct server *s, struct conn *c, const Frame *f, void *arg)
{
    conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
              "%s while a ProcInput waits for its acknowledgement", frame_body_name(f->body_case));
}

static void ack_closed(struct server *s, struct conn *c, void *arg)
{
    struct ack *a = arg;
    for (struct ack **pp = &a->p->acks; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    free(a);
}

/* --- output ------------------------------------------------------------------------------ */

static void finish(struct server *s, struct proc *p)
{
    p->finished = true;
    p->finish_seq = ++finish_counter;
    nlive--;
    nfinished++;
    close_in(s, p, EPIPE);
    if (p->conn)
        proc_flush(p);
}

static void check_finish(struct server *s, struct proc *p)
{
    if (p->reaped && !p->finished && p->out_w.fd < 0 && p->err_w.fd < 0)
        finish(s, p);
}

static void got_output(struct proc *p, int stream, const uint8_t *data, size_t n)
{
    if (!queue_append(p, stream, data, n)) {
        log_msg("out of memory for the output of process %d; dropped %zu bytes", (int)p->pid, n);
        p->dropped += n;
        return;
    }
    if (p->conn)
        proc_flush(p);
    retain_trim(p);
}

static void on_output(struct server *s, struct watcher *w, short revents)
{
    static uint8_t buf[CHUNK_MAX];
    struct proc *p = w->arg;
    int stream = w == &p->err_w; /* 0 stdout, 1 stderr */
    ssize_t n = read(w->fd, buf, sizeof(buf));
    if (n > 0) {
        got_output(p, stream, buf, (size_t)n);
    } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        /* EOF; a PTY master reads EIO once no process has the terminal open any more. */
        close_watch(s, w);
        check_finish(s, p);
    }
    update_watch(p);
}

/* The grace after the reap ran out: take what the pipes hold and close them. */
static void grace_over(struct server *s, struct proc *p)
{
    static uint8_t buf[CHUNK_MAX];
    struct watcher *ws[2] = {&p->out_w, &p->err_w};
    for (int i = 0; i < 2; i++) {
        struct watcher *w = ws[i];
        int stream = i;
        size_t total = 0;
        while (w->fd >= 0 && total < GRACE_READ_MAX) {
            ssize_t n = read(w->fd, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            total += (size_t)n;
            if (!queue_append(p, stream, buf, (size_t)n)) {
                p->dropped += (size_t)n;
                break;
            }
            retain_trim(p);
        }
        close_watch(s, w);
    }
    check_finish(s, p);
}

/* --- attached connections ---------------------------------------------------------------- */

static void attach(struct proc *p, struct conn *c, uint32_t id)
{
    /* Nobody can ask for what lies before sent[] any more: the lingering connection of the
       last ProcExit loses its say. */
    end_linger(p);
    compact(p);
    p->conn = c;
    p->op_id = id;
    p->base[0] = p->sent[0];
    p->base[1] = p->sent[1];
    conn_set_op(c, &attached_op, p);
    Sbx__Agent__ProcStarted st = SBX__AGENT__PROC_STARTED__INIT;
    st.pid = (uint32_t)p->pid;
    st.dropped_bytes = p->dropped;
    p->dropped = 0;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_STARTED;
    f.proc_started = &st;
    conn_send(c, &f);
    proc_flush(p);
}

enum detach_why {
    DETACH_CLOSED, /* the connection is being freed */
    DETACH_TAKEN,  /* another connection attached */
    DETACH_ASKED,  /* ProcDetach */
};

/* p loses its connection. */
static void detach(struct proc *p, enum detach_why why)
{
    struct conn *c = p->conn;
    acks_forget_conn(p, c, why == DETACH_TAKEN ? EBUSY : 0);
    p->conn = NULL;
    /* ProcDetach announces the close: kill_on_detach applies as on the close itself. */
    if (why != DETACH_TAKEN && p->kill_on_detach && !p->reaped) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
    }
    compact(p);
    retain_trim(p);
    update_watch(p);
}

/* Checks a ProcDetach against what the attachment that began at base[] sent, and moves the
   resume position to what the host consumed. False (and the connection failed) when it
   claims more than was sent. */
static bool apply_detach(struct conn *c, uint32_t id, struct proc *p,
                         const Sbx__Agent__ProcDetach *d)
{
    uint64_t got[2] = {d->stdout_consumed, d->stderr_consumed};
    for (int i = 0; i < 2; i++)
        if (got[i] > p->sent[i] - p->base[i]) {
            conn_fail(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                      "ProcDetach: %llu bytes of %s consumed, but %llu were sent",
                      (unsigned long long)got[i], i ? "stderr" : "stdout",
                      (unsigned long long)(p->sent[i] - p->base[i]));
            return false;
        }
    p->unsent = 0;
    for (int i = 0; i < 2; i++) {
        uint64_t at = p->base[i] + got[i];
        if (at < p->start[i]) {
            /* Delivered, not consumed, and no longer kept. */
            p->dropped += p->start[i] - at;
            at = p->start[i];
        }
        p->sent[i] = at;
        p->unsent += p->total[i] - at;
    }
    p->cur = p->qh;
    return true;
}

/* ProcDetach on the attached connection. */
static void proc_detach(struct conn *c, uint32_t id, struct proc *p,
                        const Sbx__Agent__ProcDetach *d)
{
    if (id != p->op_id) {
        conn_fail(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                  "ProcDetach with id %u on a connection attached to process %d with id %u", id,
                  (int)p->pid, p->op_id);
        return;
    }
    if (!apply_detach(c, id, p, d))
        return; /* the connection closes: attached_closed detaches */
    conn_set_op(c, NULL, NULL);
    detach(p, DETACH_ASKED);
}

static bool attached_drain(struct server *s, struct conn *c, void *arg)
{
    proc_flush(arg);
    return false;
}

static void attached_closed(struct server *s, struct conn *c, void *arg)
{
    detach(arg, DETACH_CLOSED);
}

/* The lingering connection of p's ProcExit may no longer detach (forgets it; c stays). */
static void end_linger(struct proc *p)
{
    if (!p->linger)
        return;
    conn_set_op(p->linger, NULL, NULL);
    p->linger = NULL;
}

/* The first frame after ProcExit: a ProcDetach for that attachment, or anything else, which
   is served as usual. */
static void linger_frame(struct server *s, struct conn *c, const Frame *f, void *arg)
{
    struct proc *p = arg;
    bool ours = f->body_case == SBX__AGENT__FRAME__BODY_PROC_DETACH && f->id == p->linger_id;
    end_linger(p);
    if (ours)
        apply_detach(c, f->id, p, f->proc_detach);
    compact(p);
    if (!ours)
        conn_dispatch(s, c, f);
}

static void linger_closed(struct server *s, struct conn *c, void *arg)
{
    struct proc *p = arg;
    p->linger = NULL;
    compact(p);
}

/* --- requests ---------------------------------------------------------------------------- */

static void proc_signal(struct server *s, struct conn *c, uint32_t id, struct proc *cur,
                        const Sbx__Agent__ProcSignal *sg)
{
    if (sg->signal < 0 || sg->signal > 64) {
        invalid(c, id, "signal %d is out of range", sg->signal);
        return;
    }
    if (sg->pid > INT32_MAX) {
        invalid(c, id, "pid %u is out of range", sg->pid);
        return;
    }
    struct proc *p = sg->pid ? find_proc(sg->pid) : cur;
    if (!sg->pid && !p) {
        invalid(c, id, "ProcSignal with pid 0 on a connection not attached to a process");
        return;
    }
    pid_t pid = p ? p->pid : (pid_t)sg->pid;
    if (pid == 1 || pid == getpid()) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PERMISSION, EPERM,
                   "refusing to signal envd");
        return;
    }
    if (p && p->reaped) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                   "process %d has exited", (int)pid);
        return;
    }
    pid_t target = pid;
    if (!p) {
        /* Not one of ours. In test mode envd is an ordinary process on a developer's machine:
           only what it started may be signalled. */
        if (server_config(s)->test_mode) {
            conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                       "process %d was not started by envd", (int)pid);
            return;
        }
        if (sg->group) {
            pid_t pg = getpgid(pid);
            if (pg < 0) {
                conn_errno(c, id, errno, "process %d", (int)pid);
                return;
            }
            if (pg <= 1 || pg == getpgrp()) {
                conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PERMISSION, EPERM,
                           "refusing to signal envd's process group");
                return;
            }
            target = pg;
        }
    }
    if (kill(sg->group ? -target : target, sg->signal) < 0) {
        conn_errno(c, id, errno, "signal %d to %s %d", sg->signal,
                   sg->group ? "process group" : "process", (int)target);
        return;
    }
    conn_ok(c, id);
}

static bool valid_size(const Sbx__Agent__PtySize *sz)
{
    return sz && sz->rows >= 1 && sz->rows <= MAX_PTY_SIZE && sz->cols >= 1 &&
           sz->cols <= MAX_PTY_SIZE;
}

static void proc_resize(struct server *s, struct conn *c, uint32_t id, struct proc *cur,
                        const Sbx__Agent__ProcResize *rz)
{
    struct proc *p = rz->pid ? find_proc(rz->pid) : cur;
    if (!p) {
        if (rz->pid)
            conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                       "no process %u started by envd", rz->pid);
        else
            invalid(c, id, "ProcResize with pid 0 on a connection not attached to a process");
        return;
    }
    if (!p->pty) {
        invalid(c, id, "process %d has no terminal", (int)p->pid);
        return;
    }
    if (!valid_size(rz->size)) {
        invalid(c, id, "terminal size must be 1..%d rows and columns", MAX_PTY_SIZE);
        return;
    }
    /* The master: the output watcher's fd, else the input dup (both close at the end). */
    int fd = p->out_w.fd >= 0 ? p->out_w.fd : p->in_w.fd;
    if (p->finished || fd < 0) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                   "process %d has exited", (int)p->pid);
        return;
    }
    struct winsize ws = {.ws_row = (unsigned short)rz->size->rows,
                         .ws_col = (unsigned short)rz->size->cols};
    if (ioctl(fd, TIOCSWINSZ, &ws) < 0) {
        conn_errno(c, id, errno, "resizing the terminal");
        return;
    }
    conn_ok(c, id);
}

static void proc_list(struct conn *c, uint32_t id)
{
    size_t n = 0;
    for (struct proc *p = procs; p; p = p->next)
        n++;
    Sbx__Agent__ProcInfo *infos = calloc(n ? n : 1, sizeof(*infos));
    Sbx__Agent__ProcInfo **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    Sbx__Agent__ProcExit *exits = calloc(n ? n : 1, sizeof(*exits));
    if (!infos || !ptrs || !exits) {
        free(infos);
        free(ptrs);
        free(exits);
        conn_errno(c, id, ENOMEM, "listing processes");
        return;
    }
    size_t i = 0;
    for (struct proc *p = procs; p; p = p->next, i++) {
        Sbx__Agent__ProcInfo *in = &infos[i];
        sbx__agent__proc_info__init(in);
        in->pid = (uint32_t)p->pid;
        size_t argc = 0;
        while (p->argv[argc])
            argc++;
        in->n_argv = argc;
        in->argv = p->argv;
        in->cwd = p->cwd;
        in->tag = p->tag;
        in->running = !p->reaped;
        in->pty = p->pty;
        in->attached = p->conn != NULL;
        if (p->reaped) {
            Sbx__Agent__ProcExit *e = &exits[i];
            sbx__agent__proc_exit__init(e);
            if (WIFEXITED(p->status)) {
                e->exit_code = WEXITSTATUS(p->status);
            } else {
                e->exit_code = -1;
                e->signal = WIFSIGNALED(p->status) ? WTERMSIG(p->status) : 0;
            }
            e->timed_out = p->deadline_killed && WIFSIGNALED(p->status);
            e->duration_ms = p->end_ms - p->start_ms;
            in->exit = e;
        }
        ptrs[i] = in;
    }
    Sbx__Agent__ProcList l = SBX__AGENT__PROC_LIST__INIT;
    l.n_procs = n;
    l.procs = ptrs;
    Frame f = SBX__AGENT__FRAME__INIT;
    f.id = id;
    f.body_case = SBX__AGENT__FRAME__BODY_PROC_LIST;
    f.proc_list = &l;
    conn_send(c, &f);
    free(infos);
    free(ptrs);
    free(exits);
}

static void proc_attach(struct server *s, struct conn *c, uint32_t id,
                        const Sbx__Agent__ProcAttach *a)
{
    struct proc *p = find_proc(a->pid);
    if (!p) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                   "no process %u started by envd (or it finished too long ago)", a->pid);
        return;
    }
    if (is_attached_elsewhere(p)) {
        struct conn *old = p->conn;
        uint32_t old_id = p->op_id;
        detach(p, DETACH_TAKEN);
        conn_error(old, old_id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "process %d was attached by another connection", (int)p->pid);
        conn_set_op(old, NULL, NULL);
        /* kill_on_detach belongs to the starting connection. */
        p->kill_on_detach = false;
    }
    attach(p, c, id);
}

/* --- starting processes ------------------------------------------------------------------ */

static void free_strv(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* A growing NULL-terminated "KEY=VALUE" list where a later entry replaces an earlier one
   with the same key. */
struct envlist {
    char **v;
    size_t n, cap;
};

static bool env_set(struct envlist *e, const char *kv)
{
    size_t klen = strcspn(kv, "=");
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->v[i], kv, klen) == 0 && e->v[i][klen] == '=') {
            char *d = strdup(kv);
            if (!d)
                return false;
            free(e->v[i]);
            e->v[i] = d;
            return true;
        }
    if (e->n + 2 > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 32;
        char **v = realloc(e->v, cap * sizeof(*v));
        if (!v)
            return false;
        e->v = v;
        e->cap = cap;
    }
    if (!(e->v[e->n] = strdup(kv)))
        return false;
    e->v[++e->n] = NULL;
    return true;
}

static bool env_setf(struct envlist *e, const char *key, const char *val)
{
    size_t n = strlen(key) + strlen(val) + 2;
    char *kv = malloc(n);
    if (!kv)
        return false;
    snprintf(kv, n, "%s=%s", key, val);
    bool ok = env_set(e, kv);
    free(kv);
    return ok;
}

static bool valid_env(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq && eq != kv && strlen(kv) <= MAX_STR;
}

/* Why a child failed before exec, sent through the status pipe. */
struct child_err {
    int stage; /* 1 terminal/session, 2 user, 3 cwd, 4 fds */
    int err;
};

static void child_fail(int fd, int stage)
{
    struct child_err ce = {stage, errno};
    ssize_t w = write(fd, &ce, sizeof(ce));
    (void)w;
    _exit(125);
}

static void child_say(const char *a, const char *b)
{
    char msg[600];
    int n = snprintf(msg, sizeof(msg), "%.256s: %.256s\n", a, b);
    if (n > 0) {
        ssize_t w = write(2, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
        (void)w;
    }
}

/* Moves fd to >= 3 so dup2 onto 0..2 cannot clobber another source fd. */
static int high_fd(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    return fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

struct spawn {
    char **argv, **envp;
    const char *cwd;
    const struct envd_user *u;
    gid_t groups[64];
    int ngroups;
    bool switch_user;
    int in_fd, out_fd, err_fd; /* child's ends (for a PTY: the slave in all three) */
    bool pty;
    int status_fd;
};

static void child(const struct spawn *sp) __attribute__((noreturn));
static void child(const struct spawn *sp)
{
    int st = sp->status_fd;
    if (setsid() < 0)
        child_fail(st, 1);
    int cg = users_cgroup_fd();
    if (cg >= 0 && write(cg, "0", 1) != 1)
        child_fail(st, 5);
    int in = high_fd(sp->in_fd), out = high_fd(sp->out_fd), err = high_fd(sp->err_fd);
    if (in < 0 || out < 0 || err < 0)
        child_fail(st, 4);
    if (sp->pty && ioctl(in, TIOCSCTTY, 0) < 0)
        child_fail(st, 1);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        child_fail(st, 4);
        /* Nothing else of envd's may leak into the process: mark every other fd close-on-exec
           (the status pipe already is, and must stay open until exec). */
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) != 0)
#endif
    {
        for (int fd = 3; fd < 65536; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    /* envd blocks SIGCHLD (for its signalfd) and ignores SIGPIPE; both survive exec. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    if (nofile_done)
        setrlimit(RLIMIT_NOFILE, &nofile_orig);
    if (sp->switch_user) {
        if (setgroups((size_t)sp->ngroups, sp->groups) < 0 || setgid(sp->u->gid) < 0 ||
            setuid(sp->u->uid) < 0)
            child_fail(st, 2);
    }
    if (chdir(sp->cwd) < 0)
        child_fail(st, 3);
    extern char **environ;
    environ = sp->envp;
    execvp(sp->argv[0], sp->argv);
    int e = errno;
    bool notfound = e == ENOENT || e == ENOTDIR;
    if (notfound && !strchr(sp->argv[0], '/'))
        child_say(sp->argv[0], "command not found");
    else
        child_say(sp->argv[0], strerror(e));
    _exit(notfound ? 127 : 126);
}

/* After the exec, argv is only shown by ProcList: keep its first LIST_ARGV_MAX bytes, so a
   list of every process fits a frame. */
static void shorten_argv(struct proc *p)
{
    size_t budget = LIST_ARGV_MAX;
    for (size_t i = 0; p->argv[i]; i++) {
        size_t l = strlen(p->argv[i]);
        if (budget == 0) {
            for (size_t j = i; p->argv[j]; j++)
                free(p->argv[j]);
            p->argv[i] = NULL;
            return;
        }
        /* Each entry costs its bytes plus one (a protobuf length byte, at least). */
        if (l + 1 > budget)
            p->argv[i][budget - 1] = '\0'; /* the allocation stays; only the string shrinks */
        budget -= l + 1 > budget ? budget : l + 1;
    }
}

static void raise_nofile(void)
{
    if (nofile_done)
        return;
    nofile_done = true;
    if (getrlimit(RLIMIT_NOFILE, &nofile_orig) < 0) {
        nofile_done = false;
        return;
    }
    /* Up to ~4 fds per process, plus connections and watches. */
    struct rlimit r = nofile_orig;
    if (r.rlim_cur < 8192) {
        r.rlim_cur = r.rlim_max == RLIM_INFINITY || r.rlim_max > 8192 ? 8192 : r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void proc_start(struct server *s, struct conn *c, uint32_t id,
                       const Sbx__Agent__ProcStart *ps)
{
    bool has_argv = ps->n_argv > 0, has_shell = ps->shell[0] != '\0';
    bool pty = ps->pty != NULL;
    if (has_argv && has_shell) {
        invalid(c, id, "ProcStart has both argv and shell");
        return;
    }
    if (!has_argv && !has_shell && !pty) {
        invalid(c, id, "ProcStart has neither argv nor shell");
        return;
    }
    if (pty && !valid_size(ps->pty)) {
        invalid(c, id, "terminal size %ux%u: rows and columns must be 1..%d", ps->pty->rows,
                ps->pty->cols, MAX_PTY_SIZE);
        return;
    }
    if (ps->n_argv > MAX_ARGS || ps->n_envs > MAX_ENVS) {
        invalid(c, id, "%zu arguments and %zu environment entries; at most %d and %d", ps->n_argv,
                ps->n_envs, MAX_ARGS, MAX_ENVS);
        return;
    }
    size_t total = strlen(ps->shell);
    for (size_t i = 0; i < ps->n_argv; i++) {
        size_t l = strlen(ps->argv[i]);
        if (l > MAX_STR) {
            invalid(c, id, "argument %zu is longer than %u bytes", i, MAX_STR);
            return;
        }
        total += l + 1;
    }
    if (has_argv && !ps->argv[0][0]) {
        invalid(c, id, "argv[0] is empty");
        return;
    }
    for (size_t i = 0; i < ps->n_envs; i++) {
        if (!valid_env(ps->envs[i])) {
            invalid(c, id, "environment entry %zu is not KEY=VALUE (or too long)", i);
            return;
        }
        total += strlen(ps->envs[i]) + 1;
    }
    if (total > MAX_ARG_TOTAL || strlen(ps->shell) > MAX_STR) {
        invalid(c, id, "arguments and environment take more than %u bytes", MAX_ARG_TOTAL);
        return;
    }
    if (strlen(ps->tag) > MAX_TAG || strlen(ps->cwd) >= MAX_PATH) {
        invalid(c, id, "tag or cwd too long");
        return;
    }
    if (nlive >= MAX_LIVE) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "%d processes are running; that is the limit", MAX_LIVE);
        return;
    }
    raise_nofile();

    struct envd_user u;
    int err = user_lookup(ps->user, &u);
    if (err) {
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, err,
                   "user %.64s: no such user in the guest", ps->user[0] ? ps->user : "(default)");
        return;
    }
    char cwd[MAX_PATH];
    struct stat st;
    /* The request's cwd, else the sandbox's default (a template's WORKDIR), else home. */
    const char *want = ps->cwd[0] ? ps->cwd : users_default_cwd();
    if (want[0]) {
        if ((err = resolve_path(want, &u, cwd, sizeof(cwd))) != 0) {
            conn_errno(c, id, err, "cwd %.256s", want);
            return;
        }
        if (stat(cwd, &st) < 0) {
            conn_errno(c, id, errno, "cwd %.256s", cwd);
            return;
        }
        if (!S_ISDIR(st.st_mode)) {
            conn_errno(c, id, ENOTDIR, "cwd %.256s", cwd);
            return;
        }
    } else {
        /* The home directory, or / when the user has none. */
        snprintf(cwd, sizeof(cwd), "%s",
                 stat(u.home, &st) == 0 && S_ISDIR(st.st_mode) ? u.home : "/");
    }

    /* argv */
    char **argv = NULL;
    size_t argc = has_argv ? ps->n_argv : has_shell ? 4 : 2;
    argv = calloc(argc + 1, sizeof(*argv));
    bool oom = !argv;
    if (!oom && has_argv) {
        for (size_t i = 0; i < ps->n_argv && !oom; i++)
            oom = !(argv[i] = strdup(ps->argv[i]));
    } else if (!oom && has_shell) {
        bool bash = access("/bin/bash", X_OK) == 0;
        const char *v[] = {bash ? "/bin/bash" : "/bin/sh", bash ? "-l" : "-c",
                           bash ? "-c" : ps->shell, bash ? ps->shell : NULL};
        for (size_t i = 0; i < 4 && v[i] && !oom; i++)
            oom = !(argv[i] = strdup(v[i]));
    } else if (!oom) {
        /* A PTY without a command: the user's login shell. */
        const char *sh = access(u.shell, X_OK) == 0 ? u.shell : "/bin/sh";
        oom = !(argv[0] = strdup(sh)) || !(argv[1] = strdup("-l"));
    }

    /* Environment: the basics, then the sandbox's, then the request's; last one wins. */
    struct envlist env = {0};
    oom = oom || !env_set(&env, BASE_PATH) || !env_setf(&env, "HOME", u.home) ||
          !env_setf(&env, "USER", u.name) || !env_setf(&env, "LOGNAME", u.name) ||
          !env_setf(&env, "SHELL", u.shell) || (pty && !env_set(&env, "TERM=xterm-256color"));
    for (char *const *e = users_env(); !oom && *e; e++)
        oom = !env_set(&env, *e);
    for (size_t i = 0; !oom && i < ps->n_envs; i++)
        oom = !env_set(&env, ps->envs[i]);

    struct proc *p = oom ? NULL : calloc(1, sizeof(*p));
    if (p) {
        p->out_w.fd = p->err_w.fd = p->in_w.fd = -1;
        p->argv = argv;
        argv = NULL;
        p->cwd = strdup(cwd);
        p->tag = strdup(ps->tag);
        oom = !p->cwd || !p->tag;
    }
    if (oom || !p) {
        free_strv(argv);
        free_strv(env.v);
        if (p)
            proc_free(s, p);
        conn_errno(c, id, ENOMEM, "starting a process");
        return;
    }

    /* fds: [0] envd's end, [1] the child's end. */
    int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1}, stp[2] = {-1, -1};
    int master = -1, slave = -1;
    const char *what = "pipe";
    bool ok = pipe2(stp, O_CLOEXEC) == 0;
    if (ok && pty) {
        what = "opening a terminal";
        char name[128];
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        ok = master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0 &&
             ptsname_r(master, name, sizeof(name)) == 0 &&
             (slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) >= 0;
        if (ok) {
            struct winsize ws = {.ws_row = (unsigned short)ps->pty->rows,
                                 .ws_col = (unsigned short)ps->pty->cols};
            ioctl(master, TIOCSWINSZ, &ws);
            /* The terminal belongs to the user, as after a login. */
            if (getuid() == 0 && u.uid != 0 && fchown(slave, u.uid, (gid_t)-1) < 0)
                log_msg("chown of a terminal: %s", strerror(errno));
            p->out_w.fd = master;
            p->in_w.fd = fcntl(master, F_DUPFD_CLOEXEC, 3);
            ok = p->in_w.fd >= 0;
            master = -1;
        }
    } else if (ok) {
        ok = pipe2(out, O_CLOEXEC) == 0 && pipe2(errp, O_CLOEXEC) == 0;
        if (ok && ps->stdin) {
            ok = pipe2(in, O_CLOEXEC) == 0;
            /* in[0] is the child's read end; swap so [0] is envd's. */
            int t = in[0];
            in[0] = in[1];
            in[1] = t;
        } else if (ok) {
            in[1] = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (in[1] < 0) {
                /* No /dev/null: an empty pipe reads EOF just as well. */
                int pp[2];
                ok = pipe2(pp, O_CLOEXEC) == 0;
                if (ok) {
                    close(pp[1]);
                    in[1] = pp[0];
                }
            }
        }
        if (ok) {
            p->out_w.fd = out[0];
            p->err_w.fd = errp[0];
            p->in_w.fd = in[0];
            out[0] = errp[0] = in[0] = -1;
        }
    }
    if (!ok) {
        err = errno;
        close_fd(&master);
        close_fd(&slave);
        for (int i = 0; i < 2; i++) {
            close_fd(&in[i]);
            close_fd(&out[i]);
            close_fd(&errp[i]);
            close_fd(&stp[i]);
        }
        free_strv(env.v);
        proc_free(s, p);
        conn_errno(c, id, err ? err : EIO, "%s", what);
        return;
    }
    p->pty = pty;
    p->has_stdin = pty || ps->stdin;

    struct spawn sp = {
        .argv = p->argv,
        .envp = env.v,
        .cwd = cwd,
        .u = &u,
        .pty = pty,
        .in_fd = pty ? slave : in[1],
        .out_fd = pty ? slave : out[1],
        .err_fd = pty ? slave : errp[1],
        .status_fd = stp[1],
    };
    /* Test mode runs as an ordinary user: no switching (it could not anyway). */
    sp.switch_user = u.uid != getuid() || u.gid != getgid();
    if (sp.switch_user) {
        uint32_t g[64];
        sp.ngroups = user_groups(&u, g, 64);
        for (int i = 0; i < sp.ngroups; i++)
            sp.groups[i] = g[i];
    }
    /* cfg->no_spawn (fuzzing): the fork fails, after everything else was checked and set up. */
    pid_t pid = -1;
    errno = EPERM;
    if (!server_config(s)->no_spawn)
        pid = fork();
    if (pid == 0)
        child(&sp);
    err = errno;
    close_fd(&slave);
    close_fd(&in[1]);
    close_fd(&out[1]);
    close_fd(&errp[1]);
    close_fd(&stp[1]);
    free_strv(env.v);
    if (pid < 0) {
        close_fd(&stp[0]);
        proc_free(s, p);
        conn_errno(c, id, err, "fork");
        return;
    }
    /* Blocks only until the child has exec'd (or failed before): a few ms. */
    struct child_err ce;
    ssize_t n;
    while ((n = read(stp[0], &ce, sizeof(ce))) < 0 && errno == EINTR)
        ;
    close_fd(&stp[0]);
    if (n == (ssize_t)sizeof(ce)) {
        /* It exits at once; reap it here (the loop ignores pids it does not know). */
        waitpid(pid, NULL, 0);
        proc_free(s, p);
        static const char *stages[] = {"",    "starting a session", "switching to user",
                                       "cwd", "setting up stdio",   "joining the workload cgroup"};
        int stage = ce.stage >= 1 && ce.stage <= 5 ? ce.stage : 4;
        if (stage == 2)
            conn_errno(c, id, ce.err, "switching to user %.64s", u.name);
        else if (stage == 3)
            conn_errno(c, id, ce.err, "cwd %.256s", cwd);
        else
            conn_errno(c, id, ce.err, "%s", stages[stage]);
        return;
    }

    p->pid = pid;
    shorten_argv(p);
    p->start_ms = mono_ms();
    p->deadline_ms = ps->timeout_ms ? p->start_ms + ps->timeout_ms : 0;
    p->kill_on_detach = ps->kill_on_detach;
    /* A finished record with this pid would be ambiguous now. */
    for (struct proc *q = procs; q; q = q->next)
        if (q->finished && q->pid == pid && !q->conn) {
            unlink_proc(q);
            nfinished--;
            proc_free(s, q);
            break;
        }
    struct watcher *ws[3] = {&p->out_w, &p->err_w, &p->in_w};
    bool watched = true;
    for (int i = 0; i < 3; i++) {
        struct watcher *w = ws[i];
        if (w->fd < 0)
            continue;
        fcntl(w->fd, F_SETFL, fcntl(w->fd, F_GETFL) | O_NONBLOCK);
        w->cb = i == 2 ? on_input_ready : on_output;
        w->arg = p;
        w->events = 0;
        watched = watched && server_watch(s, w);
    }
    if (!watched) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        proc_free(s, p);
        conn_error(c, id, SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY, 0,
                   "envd cannot watch more file descriptors");
        return;
    }
    /* Appended: the table stays in start order. */
    struct proc **pp = &procs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    nlive++;
    if (p->deadline_ms)
        server_wake_at(s, p->deadline_ms);
    attach(p, c, id);
}

/* --- entry points ------------------------------------------------------------------------ */

static void attached_frame(struct server *s, struct conn *c, const Frame *f, void *arg)
{
    struct proc *cur = arg;
    switch (f->body_case) {
    case SBX__AGENT__FRAME__BODY_PROC_INPUT: {
        const Sbx__Agent__ProcInput *in = f->proc_input;
        struct proc *p = in->pid ? find_proc(in->pid) : cur;
        if (!p)
            conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                       "no process %u started by envd", in->pid);
        else
            proc_input(s, c, f->id, p, in, true);
        return;
    }
    case SBX__AGENT__FRAME__BODY_PROC_SIGNAL:
        proc_signal(s, c, f->id, cur, f->proc_signal);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_RESIZE:
        proc_resize(s, c, f->id, cur, f->proc_resize);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_LIST_REQUEST:
        proc_list(c, f->id);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_DETACH:
        proc_detach(c, f->id, cur, f->proc_detach);
        return;
    case SBX__AGENT__FRAME__BODY_PING: {
        Sbx__Agent__Pong pong = SBX__AGENT__PONG__INIT;
        pong.nonce = f->ping->nonce;
        Frame r = SBX__AGENT__FRAME__INIT;
        r.id = f->id;
        r.body_case = SBX__AGENT__FRAME__BODY_PONG;
        r.pong = &pong;
        conn_send(c, &r);
        return;
    }
    default:
        conn_fail(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_PROTOCOL,
                  "%s is not allowed on a connection attached to a process",
                  frame_body_name(f->body_case));
        return;
    }
}

void proc_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *f)
{
    switch (f->body_case) {
    case SBX__AGENT__FRAME__BODY_PROC_START:
        proc_start(s, c, f->id, f->proc_start);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_ATTACH:
        proc_attach(s, c, f->id, f->proc_attach);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_INPUT: {
        const Sbx__Agent__ProcInput *in = f->proc_input;
        struct proc *p = find_proc(in->pid);
        if (!in->pid)
            invalid(c, f->id, "ProcInput with pid 0 on a connection not attached to a process");
        else if (!p)
            conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND, ESRCH,
                       "no process %u started by envd", in->pid);
        else
            proc_input(s, c, f->id, p, in, false);
        return;
    }
    case SBX__AGENT__FRAME__BODY_PROC_SIGNAL:
        proc_signal(s, c, f->id, NULL, f->proc_signal);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_RESIZE:
        proc_resize(s, c, f->id, NULL, f->proc_resize);
        return;
    case SBX__AGENT__FRAME__BODY_PROC_LIST_REQUEST:
        proc_list(c, f->id);
        return;
    default:
        conn_error(c, f->id, SBX__AGENT__ERROR_CODE__ERROR_CODE_UNSUPPORTED, 0,
                   "%s is not a process request", frame_body_name(f->body_case));
        return;
    }
}

void proc_reaped(struct server *s, int pid, int status)
{
    for (struct proc *p = procs; p; p = p->next) {
        if (p->pid != pid || p->reaped)
            continue;
        p->reaped = true;
        p->status = status;
        p->end_ms = mono_ms();
        p->grace_ms = p->end_ms + EXIT_GRACE_MS;
        server_wake_at(s, p->grace_ms);
        check_finish(s, p);
        return;
    }
    /* Not ours: an orphan re-parented to PID 1, or another module's helper. */
}

void proc_tick(struct server *s)
{
    uint64_t now = mono_ms();
    for (struct proc *p = procs; p; p = p->next) {
        if (p->finished)
            continue;
        if (!p->reaped && p->deadline_ms && !p->deadline_killed) {
            if (now >= p->deadline_ms) {
                /* The whole group: a shell's children die with it. */
                kill(-p->pid, SIGKILL);
                kill(p->pid, SIGKILL);
                p->deadline_killed = true;
            } else {
                server_wake_at(s, p->deadline_ms);
            }
        }
        if (p->reaped) {
            if (now >= p->grace_ms)
                grace_over(s, p);
            else
                server_wake_at(s, p->grace_ms);
        }
    }
    evict(s);
}
