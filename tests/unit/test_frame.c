// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the agent framing: encode/decode, limits, malformed input, incremental reader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sandbox.h"
#include "agent/frame.h"

static char *features[] = {"clock", "hostname", "x-future"};

static void make_hello(Sbx__Agent__Frame *f, Sbx__Agent__Hello *h, uint32_t id)
{
    sbx__agent__hello__init(h);
    h->protocol_version = SBX__AGENT__CONSTANTS__PROTOCOL_VERSION;
    h->software = "envd";
    h->version = "0.1.0";
    h->kernel_release = "6.1.0-test";
    h->n_features = 3;
    h->features = features;
    h->realtime_ns = 1700000000123456789ull;
    sbx__agent__frame__init(f);
    f->id = id;
    f->body_case = SBX__AGENT__FRAME__BODY_HELLO;
    f->hello = h;
}

static void make_ping(Sbx__Agent__Frame *f, Sbx__Agent__Ping *p, uint32_t id, uint64_t nonce)
{
    sbx__agent__ping__init(p);
    p->nonce = nonce;
    sbx__agent__frame__init(f);
    f->id = id;
    f->body_case = SBX__AGENT__FRAME__BODY_PING;
    f->ping = p;
}

/* Header + payload for an arbitrary payload. */
static size_t raw_frame(uint8_t *buf, const void *payload, uint32_t len)
{
    buf[0] = (uint8_t)(len >> 24);
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    memcpy(buf + 4, payload, len);
    return 4 + len;
}

static void test_roundtrip(void **state)
{
    (void)state;
    Sbx__Agent__Frame f;
    Sbx__Agent__Hello h;
    make_hello(&f, &h, 7);
    uint8_t buf[512];
    size_t len = 0;
    char err[128];
    assert_int_equal(frame_encode(&f, buf, sizeof(buf), &len, err, sizeof(err)), 0);
    assert_int_equal(len, frame_size(&f));
    uint32_t plen = (uint32_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3];
    assert_int_equal(plen + 4, len);

    Sbx__Agent__Frame *g;
    size_t used;
    assert_int_equal(frame_decode(buf, len, &g, &used, err, sizeof(err)), 1);
    assert_int_equal(used, len);
    assert_int_equal(g->id, 7);
    assert_int_equal(g->body_case, SBX__AGENT__FRAME__BODY_HELLO);
    assert_int_equal(g->hello->protocol_version, 1);
    assert_string_equal(g->hello->software, "envd");
    assert_string_equal(g->hello->version, "0.1.0");
    assert_string_equal(g->hello->kernel_release, "6.1.0-test");
    assert_int_equal(g->hello->n_features, 3);
    assert_string_equal(g->hello->features[2], "x-future");
    assert_true(g->hello->realtime_ns == 1700000000123456789ull);
    frame_free(g);

    /* The allocating encoder produces the same bytes. */
    uint8_t *a;
    size_t alen;
    assert_int_equal(frame_encode_alloc(&f, &a, &alen, err, sizeof(err)), 0);
    assert_int_equal(alen, len);
    assert_memory_equal(a, buf, len);
    free(a);

    /* Empty messages still make a non-empty frame (the body tag). */
    Sbx__Agent__Ok ok = SBX__AGENT__OK__INIT;
    Sbx__Agent__Frame o = SBX__AGENT__FRAME__INIT;
    o.body_case = SBX__AGENT__FRAME__BODY_OK;
    o.ok = &ok;
    assert_int_equal(frame_encode(&o, buf, sizeof(buf), &len, err, sizeof(err)), 0);
    assert_int_equal(frame_decode(buf, len, &g, &used, err, sizeof(err)), 1);
    assert_int_equal(g->body_case, SBX__AGENT__FRAME__BODY_OK);
    assert_int_equal(g->id, 0);
    frame_free(g);
}

static void test_encode_errors(void **state)
{
    (void)state;
    char err[128];
    uint8_t buf[64];
    size_t len;
    /* No body. */
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = 1;
    assert_int_equal(frame_encode(&f, buf, sizeof(buf), &len, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "without a body"));
    /* Buffer too small. */
    Sbx__Agent__Hello h;
    make_hello(&f, &h, 1);
    assert_int_equal(frame_encode(&f, buf, 8, &len, err, sizeof(err)), SBX_EINVAL);
    /* Bigger than the cap. */
    size_t big = SBX_FRAME_MAX + 1;
    char *msg = malloc(big + 1);
    assert_non_null(msg);
    memset(msg, 'x', big);
    msg[big] = '\0';
    Sbx__Agent__Error e = SBX__AGENT__ERROR__INIT;
    e.message = msg;
    f.body_case = SBX__AGENT__FRAME__BODY_ERROR;
    f.error = &e;
    uint8_t *out = (uint8_t *)"unchanged";
    assert_int_equal(frame_encode_alloc(&f, &out, &len, err, sizeof(err)), SBX_EPROTO);
    assert_null(out);
    assert_non_null(strstr(err, "exceeds"));
    /* Just under the cap is fine. */
    msg[SBX_FRAME_MAX - 16] = '\0';
    assert_int_equal(frame_encode_alloc(&f, &out, &len, err, sizeof(err)), 0);
    assert_true(len <= SBX_FRAME_MAX + 4);
    Sbx__Agent__Frame *g;
    size_t used;
    assert_int_equal(frame_decode(out, len, &g, &used, err, sizeof(err)), 1);
    assert_int_equal(strlen(g->error->message), SBX_FRAME_MAX - 16);
    frame_free(g);
    free(out);
    free(msg);
    /* err may be NULL. */
    Sbx__Agent__Frame none = SBX__AGENT__FRAME__INIT;
    assert_int_equal(frame_encode(&none, buf, sizeof(buf), &len, NULL, 0), SBX_EPROTO);
}

static void test_header_limits(void **state)
{
    (void)state;
    char err[128];
    uint32_t len;
    uint8_t zero[4] = {0, 0, 0, 0};
    assert_int_equal(frame_parse_header(zero, &len, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "length 0"));
    uint8_t max[4] = {0x00, 0x40, 0x00, 0x00}; /* exactly 4 MiB */
    assert_int_equal(frame_parse_header(max, &len, err, sizeof(err)), 0);
    assert_int_equal(len, SBX_FRAME_MAX);
    uint8_t over[4] = {0x00, 0x40, 0x00, 0x01};
    assert_int_equal(frame_parse_header(over, &len, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "exceeds"));
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(frame_parse_header(huge, &len, err, sizeof(err)), SBX_EPROTO);

    /* frame_decode rejects them as soon as the header is there, without waiting for data. */
    Sbx__Agent__Frame *g;
    size_t used;
    assert_int_equal(frame_decode(over, 4, &g, &used, err, sizeof(err)), SBX_EPROTO);
    assert_int_equal(frame_decode(zero, 4, &g, &used, err, sizeof(err)), SBX_EPROTO);
}

static void test_truncated(void **state)
{
    (void)state;
    Sbx__Agent__Frame f;
    Sbx__Agent__Hello h;
    make_hello(&f, &h, 3);
    uint8_t buf[512];
    size_t len;
    char err[128];
    assert_int_equal(frame_encode(&f, buf, sizeof(buf), &len, err, sizeof(err)), 0);
    for (size_t k = 0; k < len; k++) {
        Sbx__Agent__Frame *g = (Sbx__Agent__Frame *)buf;
        size_t used = 99;
        assert_int_equal(frame_decode(buf, k, &g, &used, err, sizeof(err)), 0);
        assert_null(g);
        assert_int_equal(used, 0);
    }
    /* A frame whose payload is cut short but whose header claims less: the protobuf inside
       is truncated, which unpacking must catch. */
    uint8_t cut[512];
    size_t n = raw_frame(cut, buf + 4, (uint32_t)(len - 4 - 3));
    Sbx__Agent__Frame *g;
    size_t used;
    assert_int_equal(frame_decode(cut, n, &g, &used, err, sizeof(err)), SBX_EPROTO);
    assert_null(g);
}

static void test_garbage(void **state)
{
    (void)state;
    char err[128];
    Sbx__Agent__Frame *g;
    uint8_t buf[64];
    size_t used;
    /* Not protobuf at all. */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    size_t n = raw_frame(buf, junk, sizeof(junk));
    assert_int_equal(frame_decode(buf, n, &g, &used, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "malformed"));
    /* Wrong wire type for the id field (field 1 as length-delimited, overrunning). */
    static const uint8_t wt[] = {0x0a, 0x7f, 0x01};
    n = raw_frame(buf, wt, sizeof(wt));
    assert_int_equal(frame_decode(buf, n, &g, &used, err, sizeof(err)), SBX_EPROTO);
    /* Valid protobuf, but only an id: no body. */
    static const uint8_t idonly[] = {0x08, 0x05};
    n = raw_frame(buf, idonly, sizeof(idonly));
    assert_int_equal(frame_decode(buf, n, &g, &used, err, sizeof(err)), SBX_EPROTO);
    assert_non_null(strstr(err, "without a body"));
    /* A body this build does not know (field 200, an empty message): unsupported, not
       garbage, so the receiver can say so. */
    static const uint8_t future[] = {0x08, 0x05, 0xc2, 0x0c, 0x00};
    n = raw_frame(buf, future, sizeof(future));
    assert_int_equal(frame_decode(buf, n, &g, &used, err, sizeof(err)), SBX_ENOTSUP);
    assert_non_null(strstr(err, "field 200"));
    /* A known body whose submessage is garbage. */
    static const uint8_t badsub[] = {0x2a, 0x03, 0xff, 0xff, 0xff};
    n = raw_frame(buf, badsub, sizeof(badsub));
    assert_int_equal(frame_decode(buf, n, &g, &used, err, sizeof(err)), SBX_EPROTO);
    /* frame_unpack directly with impossible lengths. */
    assert_int_equal(frame_unpack(buf, 0, &g, err, sizeof(err)), SBX_EPROTO);
    /* An unknown extra envelope field next to a known body is ignored (forward compat). */
    static const uint8_t extra[] = {0x08, 0x05, 0x2a, 0x00, 0xf8, 0x06, 0x01};
    n = raw_frame(buf, extra, sizeof(extra));
    assert_int_equal(frame_decode(buf, n, &g, &used, err, sizeof(err)), 1);
    assert_int_equal(g->body_case, SBX__AGENT__FRAME__BODY_PING);
    assert_int_equal(g->id, 5);
    frame_free(g);
}

/* A stream of three frames of different sizes. */
static size_t make_stream(uint8_t *buf, size_t cap)
{
    char err[128];
    size_t off = 0, len;
    Sbx__Agent__Frame f;
    Sbx__Agent__Hello h;
    Sbx__Agent__Ping p;
    make_hello(&f, &h, 1);
    assert_int_equal(frame_encode(&f, buf + off, cap - off, &len, err, sizeof(err)), 0);
    off += len;
    make_ping(&f, &p, 2, 0x1122334455667788ull);
    assert_int_equal(frame_encode(&f, buf + off, cap - off, &len, err, sizeof(err)), 0);
    off += len;
    Sbx__Agent__Shutdown s = SBX__AGENT__SHUTDOWN__INIT;
    sbx__agent__frame__init(&f);
    f.id = 3;
    f.body_case = SBX__AGENT__FRAME__BODY_SHUTDOWN;
    f.shutdown = &s;
    assert_int_equal(frame_encode(&f, buf + off, cap - off, &len, err, sizeof(err)), 0);
    return off + len;
}

static void check_stream_frames(Sbx__Agent__Frame **got, size_t n)
{
    assert_int_equal(n, 3);
    assert_int_equal(got[0]->body_case, SBX__AGENT__FRAME__BODY_HELLO);
    assert_string_equal(got[0]->hello->kernel_release, "6.1.0-test");
    assert_int_equal(got[1]->body_case, SBX__AGENT__FRAME__BODY_PING);
    assert_true(got[1]->ping->nonce == 0x1122334455667788ull);
    assert_int_equal(got[2]->body_case, SBX__AGENT__FRAME__BODY_SHUTDOWN);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(got[i]->id, i + 1);
        frame_free(got[i]);
    }
}

/* Feeds data into r, collecting frames. */
static void feed_all(struct frame_reader *r, const uint8_t *data, size_t len,
                     Sbx__Agent__Frame **got, size_t *ngot)
{
    char err[128];
    while (len > 0) {
        size_t used;
        Sbx__Agent__Frame *f;
        int rc = frame_reader_feed(r, data, len, &used, &f, err, sizeof(err));
        assert_true(rc == 0 || rc == 1);
        assert_true(used <= len);
        if (rc == 1) {
            assert_true(*ngot < 3);
            got[(*ngot)++] = f;
        } else {
            assert_int_equal(used, len); /* 0 means everything was consumed */
        }
        data += used;
        len -= used;
    }
}

static void test_reader_split_everywhere(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t len = make_stream(buf, sizeof(buf));
    for (size_t k = 0; k <= len; k++) {
        struct frame_reader r;
        frame_reader_init(&r);
        Sbx__Agent__Frame *got[3];
        size_t ngot = 0;
        feed_all(&r, buf, k, got, &ngot);
        feed_all(&r, buf + k, len - k, got, &ngot);
        assert_true(frame_reader_idle(&r));
        check_stream_frames(got, ngot);
        frame_reader_free(&r);
    }
    /* And one byte at a time, checking idle only between frames. */
    struct frame_reader r;
    frame_reader_init(&r);
    Sbx__Agent__Frame *got[3];
    size_t ngot = 0;
    for (size_t i = 0; i < len; i++) {
        feed_all(&r, buf + i, 1, got, &ngot);
        (void)frame_reader_idle(&r);
    }
    assert_true(frame_reader_idle(&r));
    check_stream_frames(got, ngot);
    frame_reader_free(&r);
}

static void test_reader_errors(void **state)
{
    (void)state;
    char err[128];
    struct frame_reader r;
    size_t used;
    Sbx__Agent__Frame *f;

    /* Oversize length: fails as soon as the 4th header byte arrives, before any payload. */
    frame_reader_init(&r);
    uint8_t over[8] = {0x00, 0x40, 0x00, 0x01, 1, 2, 3, 4};
    assert_int_equal(frame_reader_feed(&r, over, 3, &used, &f, err, sizeof(err)), 0);
    assert_int_equal(used, 3);
    assert_false(frame_reader_idle(&r));
    assert_int_equal(frame_reader_feed(&r, over + 3, 5, &used, &f, err, sizeof(err)), SBX_EPROTO);
    assert_int_equal(used, 1);
    assert_null(f);
    /* Sticky: the stream cannot be resynchronised. */
    uint8_t ok[16];
    static const uint8_t ping[] = {0x2a, 0x00};
    size_t n = raw_frame(ok, ping, sizeof(ping));
    assert_int_equal(frame_reader_feed(&r, ok, n, &used, &f, err, sizeof(err)), SBX_EPROTO);
    assert_false(frame_reader_idle(&r));
    frame_reader_free(&r);

    /* Zero length. */
    frame_reader_init(&r);
    uint8_t zero[4] = {0};
    assert_int_equal(frame_reader_feed(&r, zero, 4, &used, &f, err, sizeof(err)), SBX_EPROTO);
    frame_reader_free(&r);

    /* Garbage payload. */
    frame_reader_init(&r);
    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    n = raw_frame(ok, junk, sizeof(junk));
    assert_int_equal(frame_reader_feed(&r, ok, n, &used, &f, err, sizeof(err)), SBX_EPROTO);
    assert_int_equal(used, n);
    frame_reader_free(&r);

    /* Truncated: a partial frame is not idle (an EOF here is a truncation), and freeing the
       reader releases the partial payload. */
    frame_reader_init(&r);
    uint8_t part[8] = {0, 0, 0, 100, 0x08, 0x01};
    assert_int_equal(frame_reader_feed(&r, part, 6, &used, &f, err, sizeof(err)), 0);
    assert_false(frame_reader_idle(&r));
    frame_reader_free(&r);

    /* Unknown body: ENOTSUP, also sticky. */
    frame_reader_init(&r);
    static const uint8_t future[] = {0xc2, 0x0c, 0x00};
    n = raw_frame(ok, future, sizeof(future));
    assert_int_equal(frame_reader_feed(&r, ok, n, &used, &f, err, sizeof(err)), SBX_ENOTSUP);
    frame_reader_free(&r);
}

static void test_body_names(void **state)
{
    (void)state;
    assert_string_equal(frame_body_name(SBX__AGENT__FRAME__BODY_HELLO), "Hello");
    assert_string_equal(frame_body_name(SBX__AGENT__FRAME__BODY_SHUTDOWN), "Shutdown");
    assert_string_equal(frame_body_name(SBX__AGENT__FRAME__BODY__NOT_SET), "none");
    assert_string_equal(frame_body_name((Sbx__Agent__Frame__BodyCase)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_header_limits), cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),       cmocka_unit_test(test_reader_split_everywhere),
        cmocka_unit_test(test_reader_errors), cmocka_unit_test(test_body_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
