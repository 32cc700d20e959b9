/* SPDX-License-Identifier: Apache-2.0 */
/* Agent protocol framing (u32 big-endian length + one packed Frame), shared by host and envd. */
#ifndef SBX_FRAME_H
#define SBX_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envd.pb-c.h"

/* Largest payload (the length prefix value) either side sends or accepts. Bulk data travels
   in chunks of at most 64 KiB, so this only bounds what a confused or hostile peer can make
   the other side allocate. */
#define SBX_FRAME_MAX (4u << 20)
/* Bytes of the big-endian length prefix. */
#define SBX_FRAME_HDR 4u

/* All functions below return 0 (or 1 where stated) on success, or a negative SBX_E* code
   (include/sandbox.h) with a reason in err (which may be NULL; always NUL-terminated when
   errlen > 0):
     SBX_EPROTO   malformed: length 0 or > SBX_FRAME_MAX, unpackable protobuf, no body
     SBX_ENOTSUP  well-framed, but the body is a message this build does not know
     SBX_ENOMEM   out of memory
     SBX_EINVAL   the caller's buffer is too small (frame_encode) */

/* Checks what unpacking cannot: that the frame has a body, and a known one. */
int frame_validate(const Sbx__Agent__Frame *f, char *err, size_t errlen);

/* Name of a body case for messages ("Hello", "Ping", ..., "none", "unknown"). */
const char *frame_body_name(Sbx__Agent__Frame__BodyCase c);

/* Bytes frame_encode() writes for f: header + packed size. */
size_t frame_size(const Sbx__Agent__Frame *f);

/* Validates f and writes header + packed frame into buf; *len receives the bytes written. */
int frame_encode(const Sbx__Agent__Frame *f, uint8_t *buf, size_t cap, size_t *len, char *err,
                 size_t errlen);

/* Like frame_encode into a malloc'd buffer (*out, released with free()). */
int frame_encode_alloc(const Sbx__Agent__Frame *f, uint8_t **out, size_t *len, char *err,
                       size_t errlen);

/* Parses a length prefix; *len receives the payload size (1..SBX_FRAME_MAX). */
int frame_parse_header(const uint8_t hdr[SBX_FRAME_HDR], uint32_t *len, char *err, size_t errlen);

/* Unpacks and validates one payload (without its header). *out is released with
   frame_free(). */
int frame_unpack(const uint8_t *payload, size_t len, Sbx__Agent__Frame **out, char *err,
                 size_t errlen);

/* Decodes the frame at the start of buf[0..len). Returns 1 with *out and *used (header +
   payload bytes) when a whole frame is there, 0 when more bytes are needed (*out = NULL,
   *used = 0), or an error. */
int frame_decode(const uint8_t *buf, size_t len, Sbx__Agent__Frame **out, size_t *used, char *err,
                 size_t errlen);

/* Releases a frame from frame_unpack / frame_decode / frame_reader_feed (NULL is fine). */
void frame_free(Sbx__Agent__Frame *f);

/* Incremental decoder for a poll loop: bytes go in as they arrive, whole frames come out.
   Holds at most one partial frame, allocated at its announced size once the header is in. */
struct frame_reader {
    uint8_t hdr[SBX_FRAME_HDR];
    size_t hdr_have;
    uint8_t *payload; /* NULL until the header is complete */
    uint32_t want;    /* payload size from the header */
    size_t have;      /* payload bytes received */
    bool failed;      /* an error was returned: the stream cannot be resynchronised */
};

void frame_reader_init(struct frame_reader *r);

/* Consumes bytes from data[0..len) up to the end of the current frame; *used receives how
   many. Returns 1 with *out when that completed a frame (call again with the rest), 0 when
   all bytes were consumed without completing one, or an error (after which every call fails:
   close the connection). */
int frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len, size_t *used,
                      Sbx__Agent__Frame **out, char *err, size_t errlen);

/* True between frames, where an EOF from the peer is a clean close, not a truncation. */
bool frame_reader_idle(const struct frame_reader *r);

/* Releases a partial frame; the reader can then be initialised again. */
void frame_reader_free(struct frame_reader *r);

#endif
