/* SPDX-License-Identifier: Apache-2.0 */
/* Host side of the envd protocol: requests and replies on one connected vsock stream. */
#ifndef SBX_AGENT_H
#define SBX_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "agent/frame.h"
#include "util/wait.h"

/* Optional capabilities envd announced in its Hello (Hello.features), as bits. */
#define AGENT_FEATURE_CLOCK        (1u << 0) /* "clock": steps the guest clock to Hello.realtime_ns */
#define AGENT_FEATURE_HOSTNAME     (1u << 1) /* "hostname": applies Hello.hostname */
#define AGENT_FEATURE_EXEC         (1u << 2) /* "exec": ProcStart and friends */
#define AGENT_FEATURE_PTY          (1u << 3) /* "pty": ProcStart.pty */
#define AGENT_FEATURE_FILES        (1u << 4) /* "files": FileWrite ... Rename */
#define AGENT_FEATURE_WATCH        (1u << 5) /* "watch": WatchStart */
#define AGENT_FEATURE_METRICS      (1u << 6) /* "metrics": MetricsRequest */
#define AGENT_FEATURE_PORT_FORWARD (1u << 7) /* "port-forward": PortConnect */

/* What envd said in its Hello. */
struct agent_hello {
    uint32_t protocol_version;
    char kernel_release[65]; /* guest uname -r (truncated to fit) */
    char envd_version[32];   /* (truncated to fit) */
    uint32_t features;       /* AGENT_FEATURE_* bits; names this host does not know are ignored */
    uint32_t cpus;           /* online CPUs the guest sees */
    uint64_t mem_total_kib;  /* the guest's MemTotal */
    char os_name[128];       /* PRETTY_NAME of the guest's root filesystem, or "" */
};

/*
 * Every call works on a connected, non-blocking stream fd to envd and blocks at most until
 * the wait context's deadline, interrupt or VM death. Each returns 0 or a negative SBX_E*
 * code with a message in err (NUL-terminated when errlen > 0):
 *   SBX_EPROTO    envd sent something malformed or unexpected, or closed the connection early
 *   agent_error_code()  envd answered with an Error
 *   SBX_ETIMEDOUT, SBX_EINTR, SBX_EGUEST  from the wait context
 *   SBX_EIO       the socket failed; SBX_ENOMEM
 * After any error the connection is out of sync: close it.
 * One request is in flight per connection at a time (these calls send one and wait for its
 * reply), so the frame ids only have to match the reply to the request.
 */

/* The SBX_E* code for an envd Error (NOT_FOUND -> SBX_ENOENT, UNSUPPORTED -> SBX_ENOTSUP,
   PROTOCOL/VERSION/unknown -> SBX_EPROTO, ...). */
int agent_error_code(const Sbx__Agent__Error *e);

/* envd's message made printable and bounded ("no message" when empty). */
void agent_error_message(const Sbx__Agent__Error *e, char *buf, size_t cap);

/* Formats envd's Error for request `req` into err ("envd refused <req>: <message> (code N,
   <errno text>)", the message made printable) and returns agent_error_code(e). */
int agent_guest_error(const Sbx__Agent__Error *e, const char *req, char *err, size_t errlen);

/* Sends one frame. */
int agent_send(int fd, const struct waitctx *w, const Sbx__Agent__Frame *f, char *err,
               size_t errlen);

/* Receives one frame (validated by frame_unpack); release *out with frame_free(). */
int agent_recv(int fd, const struct waitctx *w, Sbx__Agent__Frame **out, char *err, size_t errlen);

/* Sends req (which must carry a non-zero id) and receives its reply, which must carry the
   same id and the body `want`; an Error body becomes SBX_EPROTO / SBX_ENOTSUP with envd's
   message. Release *reply with frame_free(). */
int agent_call(int fd, const struct waitctx *w, const Sbx__Agent__Frame *req,
               Sbx__Agent__Frame__BodyCase want, Sbx__Agent__Frame **reply, char *err,
               size_t errlen);

/* Opens the conversation: sends the host Hello (with the host's CLOCK_REALTIME, which envd
   sets as the guest clock), receives envd's Hello and checks it (protocol version, printable
   bounded strings). Must be the first call on a connection. out may be NULL. */
int agent_hello(int fd, const struct waitctx *w, struct agent_hello *out, char *err, size_t errlen);

/* Round trip: Ping with a fresh nonce, expects a Pong echoing it. After agent_hello. */
int agent_ping(int fd, const struct waitctx *w, char *err, size_t errlen);

/* Asks envd to shut the guest down and waits for its Ok. After agent_hello. envd then waits
   (up to 1 s) for the host to close this connection before it stops everything and reboots
   (which ends the VM), so close the fd promptly and then wait for the VM to stop. */
int agent_shutdown(int fd, const struct waitctx *w, char *err, size_t errlen);

#endif
