// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the snapshot state file loader (snap_parse): every damaged form of the file is
   refused with its own reason, without KVM or I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "snap/snap.h"

#define XSAVE 4096

/* A framed file around `payload`: SNAP_HEADER_SIZE + len bytes (malloc'd). */
static uint8_t *framed(const void *payload, size_t len)
{
    uint8_t *f = malloc(SNAP_HEADER_SIZE + len + 1);
    assert_non_null(f);
    memcpy(f + SNAP_HEADER_SIZE, payload, len);
    snap_header_write(f, len);
    return f;
}

/* Parses and returns the reason it gives (NULL: accepted, *st freed). */
static const char *parse(const uint8_t *f, size_t len)
{
    Sbx__Snap__State *st = (Sbx__Snap__State *)1;
    const char *why = snap_parse(f, len, XSAVE, &st);
    if (why)
        assert_null(st);
    else
        sbx__snap__state__free_unpacked(st, NULL);
    return why;
}

static void assert_reason(const char *why, const char *expect)
{
    assert_non_null(why);
    if (!strstr(why, expect))
        fail_msg("reason '%s' does not say '%s'", why, expect);
}

static void test_header_damage(void **state)
{
    (void)state;
    const uint8_t payload[] = {0x08, 0x01};
    uint8_t *f = framed(payload, sizeof(payload));
    size_t len = SNAP_HEADER_SIZE + sizeof(payload);

    assert_reason(parse(f, 10), "truncated");
    assert_reason(parse(f, SNAP_HEADER_SIZE - 1), "truncated");
    assert_reason(parse(f, len - 1), "wrong size");
    f[len] = 0;
    assert_reason(parse(f, len + 1), "wrong size");

    f[0] ^= 1; /* magic */
    assert_reason(parse(f, len), "not a snapshot state file");
    f[0] ^= 1;
    f[20] ^= 0x80; /* the payload checksum, covered by the header checksum */
    assert_reason(parse(f, len), "header checksum");
    f[20] ^= 0x80;

    /* Another format, with a consistent header checksum: "rebuild it". */
    f[8] = 99;
    uint32_t hc = (uint32_t)crc32(0, f, SNAP_HEADER_SIZE - 4);
    memcpy(f + SNAP_HEADER_SIZE - 4, &hc, 4);
    assert_reason(parse(f, len), "format");
    free(f);
}

static void test_payload_damage(void **state)
{
    (void)state;
    /* Flipped payload byte: the checksum catches it before the decoder. */
    const uint8_t payload[] = {0x08, 0x01, 0x10, 0x02};
    uint8_t *f = framed(payload, sizeof(payload));
    f[SNAP_HEADER_SIZE + 1] ^= 0xff;
    assert_reason(parse(f, SNAP_HEADER_SIZE + sizeof(payload)), "checksum mismatch");
    free(f);

    /* A valid frame around bytes that are no protobuf. */
    const char *why;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    f = framed(junk, sizeof(junk));
    assert_reason(parse(f, SNAP_HEADER_SIZE + sizeof(junk)), "does not decode");
    free(f);

    /* Fields the schema does not know, at the top and inside a message (Machine, field 4),
       among them field 0 through an over-long tag (0x82 0x00: what fuzz_snapshot found,
       accepted by the decoder but refused once packed again). */
    const uint8_t top_unknown[] = {0x08, 0x01, 0xf8, 0x06, 0x01}; /* field 111 = 1 */
    const uint8_t inner_zero[] = {0x22, 0x03, 0x82, 0x00, 0x00};  /* machine { field 0: "" } */
    f = framed(top_unknown, sizeof(top_unknown));
    assert_reason(parse(f, SNAP_HEADER_SIZE + sizeof(top_unknown)), "does not know");
    free(f);
    f = framed(inner_zero, sizeof(inner_zero));
    why = parse(f, SNAP_HEADER_SIZE + sizeof(inner_zero));
    assert_non_null(why); /* "does not know", or the decoder refuses field 0 itself */
    free(f);

    /* A decodable but empty state: the value checks refuse it. */
    f = framed("", 0);
    why = parse(f, SNAP_HEADER_SIZE);
    assert_non_null(why);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_damage),
        cmocka_unit_test(test_payload_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
