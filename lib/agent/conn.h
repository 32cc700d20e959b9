/* SPDX-License-Identifier: Apache-2.0 */
/* Host side of operations: calls (deadline, interrupt, errors) and pooled envd connections. */
#ifndef SBX_AGENT_CONN_H
#define SBX_AGENT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
#include "agent/frame.h"
#include "util/wait.h"

struct sbx;

/*
 * One blocking API call on a sandbox (or a sub-handle of it). call_begin() claims one of the
 * sandbox's interrupt slots (sbx_interrupt() wakes every claimed slot) and builds the wait
 * context: deadline, interrupt fd, VM-death fd. Every API entry point that may block does
 *     struct call c; int r = call_begin(sb, &c, timeout_ms); if (r) return r;
 *     ... r = ...; ...
 *     call_end(&c); return r;
 */
struct call {
    struct sbx *sb;
    struct waitctx w;
    int slot;
};

/* Starts a call. Fails (with the thread's error message set) with SBX_EDEAD when the guest
   died or the lifetime ran out, SBX_ESTATE when the sandbox is not running for another
   reason (shut down, still booting), SBX_EBUSY when 64 calls are already blocked on it.
   timeout_ms: SBX_NO_TIMEOUT (or any value above a day) means a day. */
int call_begin(struct sbx *sb, struct call *c, unsigned timeout_ms);
void call_end(struct call *c);

/* SBX_ENOTSUP (with a message naming `what`) unless envd announced the AGENT_FEATURE_* bit
   `feature` in its Hello. */
int call_require(struct call *c, uint32_t feature, const char *what);

/* Sets the calling thread's error message for the sandbox and returns code, except that
   SBX_EGUEST from a wait (the VM ended) becomes SBX_EDEAD, with why the VM ended and the last
   console lines appended. */
int call_fail(struct call *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A connection to envd on which Hello has been exchanged. */
struct agent_conn {
    int fd; /* non-blocking stream */
    struct frame_reader rd;
    uint8_t *buf; /* bytes received but not yet decoded: buf[off..len) */
    size_t off, len;
    uint32_t next_id;        /* request ids: 1, 2, ... */
    struct agent_conn *next; /* pool link */
};

/*
 * Takes an idle connection from the sandbox's pool or opens a new one. Errors are reported
 * through call_fail (SBX_EDEAD, SBX_ETIMEDOUT, SBX_EINTR, SBX_EPROTO, SBX_EBUSY...).
 */
int agent_conn_get(struct call *c, struct agent_conn **out);

/* Gives a connection back: with reusable (no operation in flight, everything of the last
   one read) it goes to the pool (at most 8 idle are kept), else it is closed. NULL is fine. */
void agent_conn_put(struct sbx *sb, struct agent_conn *conn, bool reusable);

/* Puts a connection with Hello done (fd, non-blocking) into the pool. */
void agent_conn_adopt(struct sbx *sb, int fd);

/* Closes the idle connections (sbx_destroy). */
void agent_pool_free(struct sbx *sb);

/* A fresh request id for this connection. */
uint32_t agent_conn_id(struct agent_conn *conn);

/* Sends a frame; waits for room in the socket within the call's limits. Errors through
   call_fail: SBX_EDEAD, SBX_ETIMEDOUT, SBX_EINTR, SBX_EIO/SBX_EPROTO (connection lost). */
int agent_conn_send(struct call *c, struct agent_conn *conn, const Sbx__Agent__Frame *f);

/* Receives the next frame (release with frame_free()). A partial frame survives a timeout,
   so this can be called again. Errors through call_fail, plus SBX_EPROTO for a malformed
   frame or a closed connection. With the call's deadline already passed it does not wait:
   SBX_ETIMEDOUT when no whole frame is buffered. */
int agent_conn_recv(struct call *c, struct agent_conn *conn, Sbx__Agent__Frame **out);

/* True when a whole frame or more bytes may be available without waiting (data buffered). */
bool agent_conn_buffered(const struct agent_conn *conn);

/*
 * Request / reply on a pooled connection: gets a connection, sends req (its id is set here),
 * receives the reply, and checks that it has the same id and body `want` (an Error body is
 * turned into its SBX_E* code with envd's message, prefixed by `what`). Returns the
 * connection to the pool when in sync. Release *reply with frame_free().
 */
int agent_rpc(struct call *c, Sbx__Agent__Frame *req, Sbx__Agent__Frame__BodyCase want,
              Sbx__Agent__Frame **reply, const char *what);

/* A whole unary call: call_begin(sb, timeout_ms), agent_rpc, call_end. With reply NULL the
   answer is only checked, else release *reply with frame_free(). */
int agent_request(struct sbx *sb, unsigned timeout_ms, Sbx__Agent__Frame *req,
                  Sbx__Agent__Frame__BodyCase want, Sbx__Agent__Frame **reply, const char *what);

#endif
