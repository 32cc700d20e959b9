// SPDX-License-Identifier: Apache-2.0
/* A bounded buffer relaying a byte stream between two non-blocking sockets (shared by envd's
   port forwarding and the library's port exposure). */
#ifndef SBX_UTIL_RELAYBUF_H
#define SBX_UTIL_RELAYBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RELAYBUF_SIZE (64u << 10)

/* Bytes on their way from a source socket to a sink socket. */
struct relaybuf {
    uint8_t *data; /* RELAYBUF_SIZE bytes; pending are data[off..len) */
    size_t off, len;
    bool eof;  /* the source ended (recv returned 0) */
    bool shut; /* ... and that was passed on: shutdown(sink, SHUT_WR) */
};

/* Reads from fd into the free space (none: nothing is read, so a full buffer stops the
   source: backpressure). Returns false on a fatal error. */
bool relaybuf_read(struct relaybuf *b, int fd);

/* Sends the pending bytes to fd until it would block; once all are sent and the source
   ended, shuts fd's sending direction. Returns 0, or -errno of a failed send (EPIPE,
   ECONNRESET, ENOMEM...: the caller decides what is fatal). */
int relaybuf_write(struct relaybuf *b, int fd);

#endif
