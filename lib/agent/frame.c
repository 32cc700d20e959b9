// SPDX-License-Identifier: Apache-2.0
/* Agent protocol framing: pure encode/decode, compiled into both the library and envd. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"
#include "agent/frame.h"

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* The body field for a case, or NULL when this build does not know it. */
static const ProtobufCFieldDescriptor *body_field(Sbx__Agent__Frame__BodyCase c)
{
    if (c == SBX__AGENT__FRAME__BODY__NOT_SET || (unsigned)c == 1) /* 1 is the id */
        return NULL;
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&sbx__agent__frame__descriptor, (unsigned)c);
    return fd && fd->type == PROTOBUF_C_TYPE_MESSAGE ? fd : NULL;
}

static bool body_known(Sbx__Agent__Frame__BodyCase c)
{
    return body_field(c) != NULL;
}

const char *frame_body_name(Sbx__Agent__Frame__BodyCase c)
{
    if (c == SBX__AGENT__FRAME__BODY__NOT_SET)
        return "none";
    const ProtobufCFieldDescriptor *fd = body_field(c);
    if (!fd)
        return "unknown";
    return ((const ProtobufCMessageDescriptor *)fd->descriptor)->short_name;
}

int frame_validate(const Sbx__Agent__Frame *f, char *err, size_t errlen)
{
    if (!f)
        return fail(SBX_EPROTO, err, errlen, "no frame");
    if (f->body_case == SBX__AGENT__FRAME__BODY__NOT_SET) {
        /* A body from a newer peer unpacks as an unknown field: that is "unsupported", which
           the receiver can answer, not garbage. */
        if (f->base.n_unknown_fields > 0)
            return fail(SBX_ENOTSUP, err, errlen, "frame with an unsupported body (field %u)",
                        (unsigned)f->base.unknown_fields[0].tag);
        return fail(SBX_EPROTO, err, errlen, "frame without a body");
    }
    if (!body_known(f->body_case))
        return fail(SBX_ENOTSUP, err, errlen, "frame with an unsupported body (field %u)",
                    (unsigned)f->body_case);
    /* Every known body is a message; the union member is the pointer for whichever is set. */
    if (!f->hello)
        return fail(SBX_EPROTO, err, errlen, "frame with an empty %s body",
                    frame_body_name(f->body_case));
    return 0;
}

size_t frame_size(const Sbx__Agent__Frame *f)
{
    return SBX_FRAME_HDR + sbx__agent__frame__get_packed_size(f);
}

int frame_encode(const Sbx__Agent__Frame *f, uint8_t *buf, size_t cap, size_t *len, char *err,
                 size_t errlen)
{
    int r = frame_validate(f, err, errlen);
    if (r)
        return r;
    size_t n = sbx__agent__frame__get_packed_size(f);
    if (n == 0 || n > SBX_FRAME_MAX)
        return fail(SBX_EPROTO, err, errlen, "%s frame of %zu bytes exceeds the %u byte limit",
                    frame_body_name(f->body_case), n, SBX_FRAME_MAX);
    if (cap < SBX_FRAME_HDR + n)
        return fail(SBX_EINVAL, err, errlen, "buffer of %zu bytes too small for a %zu byte frame",
                    cap, SBX_FRAME_HDR + n);
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    size_t packed = sbx__agent__frame__pack(f, buf + SBX_FRAME_HDR);
    if (packed != n)
        return fail(SBX_EPROTO, err, errlen, "frame packed to %zu bytes, expected %zu", packed, n);
    *len = SBX_FRAME_HDR + n;
    return 0;
}

int frame_encode_alloc(const Sbx__Agent__Frame *f, uint8_t **out, size_t *len, char *err,
                       size_t errlen)
{
    *out = NULL;
    int r = frame_validate(f, err, errlen);
    if (r)
        return r;
    size_t n = sbx__agent__frame__get_packed_size(f);
    if (n == 0 || n > SBX_FRAME_MAX)
        return fail(SBX_EPROTO, err, errlen, "%s frame of %zu bytes exceeds the %u byte limit",
                    frame_body_name(f->body_case), n, SBX_FRAME_MAX);
    uint8_t *buf = malloc(SBX_FRAME_HDR + n);
    if (!buf)
        return fail(SBX_ENOMEM, err, errlen, "out of memory for a %zu byte frame", n);
    r = frame_encode(f, buf, SBX_FRAME_HDR + n, len, err, errlen);
    if (r) {
        free(buf);
        return r;
    }
    *out = buf;
    return 0;
}

int frame_parse_header(const uint8_t hdr[SBX_FRAME_HDR], uint32_t *len, char *err, size_t errlen)
{
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (n == 0)
        return fail(SBX_EPROTO, err, errlen, "frame with length 0");
    if (n > SBX_FRAME_MAX)
        return fail(SBX_EPROTO, err, errlen, "frame length %u exceeds the %u byte limit", n,
                    SBX_FRAME_MAX);
    *len = n;
    return 0;
}

int frame_unpack(const uint8_t *payload, size_t len, Sbx__Agent__Frame **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    if (len == 0 || len > SBX_FRAME_MAX)
        return fail(SBX_EPROTO, err, errlen, "frame length %zu outside 1..%u", len, SBX_FRAME_MAX);
    /* protobuf-c cannot tell garbage from allocation failure; garbage is the likely one. */
    Sbx__Agent__Frame *f = sbx__agent__frame__unpack(NULL, len, payload);
    if (!f)
        return fail(SBX_EPROTO, err, errlen, "malformed frame (%zu bytes do not unpack)", len);
    int r = frame_validate(f, err, errlen);
    if (r) {
        sbx__agent__frame__free_unpacked(f, NULL);
        return r;
    }
    *out = f;
    return 0;
}

int frame_decode(const uint8_t *buf, size_t len, Sbx__Agent__Frame **out, size_t *used, char *err,
                 size_t errlen)
{
    *out = NULL;
    *used = 0;
    if (len < SBX_FRAME_HDR)
        return 0;
    uint32_t n = 0;
    int r = frame_parse_header(buf, &n, err, errlen);
    if (r)
        return r;
    if (len - SBX_FRAME_HDR < n)
        return 0;
    r = frame_unpack(buf + SBX_FRAME_HDR, n, out, err, errlen);
    if (r)
        return r;
    *used = SBX_FRAME_HDR + n;
    return 1;
}

void frame_free(Sbx__Agent__Frame *f)
{
    if (f)
        sbx__agent__frame__free_unpacked(f, NULL);
}

void frame_reader_init(struct frame_reader *r)
{
    memset(r, 0, sizeof(*r));
}

int frame_reader_feed(struct frame_reader *r, const uint8_t *data, size_t len, size_t *used,
                      Sbx__Agent__Frame **out, char *err, size_t errlen)
{
    *out = NULL;
    *used = 0;
    if (r->failed)
        return fail(SBX_EPROTO, err, errlen, "stream already failed");
    size_t off = 0;
    if (!r->payload) {
        size_t take = SBX_FRAME_HDR - r->hdr_have;
        if (take > len)
            take = len;
        memcpy(r->hdr + r->hdr_have, data, take);
        r->hdr_have += take;
        off += take;
        if (r->hdr_have < SBX_FRAME_HDR) {
            *used = off;
            return 0;
        }
        int e = frame_parse_header(r->hdr, &r->want, err, errlen);
        if (e) {
            r->failed = true;
            *used = off;
            return e;
        }
        r->payload = malloc(r->want);
        if (!r->payload) {
            r->failed = true;
            *used = off;
            return fail(SBX_ENOMEM, err, errlen, "out of memory for a %u byte frame", r->want);
        }
        r->have = 0;
    }
    size_t take = r->want - r->have;
    if (take > len - off)
        take = len - off;
    memcpy(r->payload + r->have, data + off, take);
    r->have += take;
    off += take;
    *used = off;
    if (r->have < r->want)
        return 0;
    int e = frame_unpack(r->payload, r->want, out, err, errlen);
    free(r->payload);
    r->payload = NULL;
    r->hdr_have = 0;
    r->have = 0;
    r->want = 0;
    if (e) {
        r->failed = true;
        return e;
    }
    return 1;
}

bool frame_reader_idle(const struct frame_reader *r)
{
    return !r->failed && r->hdr_have == 0 && !r->payload;
}

void frame_reader_free(struct frame_reader *r)
{
    free(r->payload);
    r->payload = NULL;
}
