// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: the snapshot state file loader (snap_parse) on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "snap/snap.h"

/*
 * Input: the first byte chooses the mode. Odd: the rest is a protobuf payload, framed with a
 * valid header and checksums, so that the decoder and every value check are reached. Even:
 * the rest is a whole state file as read from disk (header checks). The second byte picks the
 * host's XSAVE size from the sizes real hosts have.
 *
 * On success the state is packed and framed again; the result must parse as well (what a
 * snapshot of a restored sandbox relies on).
 */
static const size_t xsave_sizes[] = {4096, 2696, 832, 1088, 2440, 11008};

static void check(int ok)
{
    if (!ok)
        abort();
}

static void parse(const uint8_t *file, size_t len, size_t xsave, int again)
{
    Sbx__Snap__State *st = (Sbx__Snap__State *)1;
    const char *why = snap_parse(file, len, xsave, &st);
    if (why) {
        check(st == NULL && *why);
        return;
    }
    check(st != NULL);
    if (again) {
        size_t n = sbx__snap__state__get_packed_size(st);
        uint8_t *buf = malloc(SNAP_HEADER_SIZE + n);
        check(buf != NULL);
        sbx__snap__state__pack(st, buf + SNAP_HEADER_SIZE);
        snap_header_write(buf, n);
        Sbx__Snap__State *st2 = NULL;
        check(snap_parse(buf, SNAP_HEADER_SIZE + n, xsave, &st2) == NULL && st2);
        sbx__snap__state__free_unpacked(st2, NULL);
        free(buf);
    }
    sbx__snap__state__free_unpacked(st, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int framed = data[0] & 1;
    size_t xsave = xsave_sizes[data[1] % (sizeof(xsave_sizes) / sizeof(xsave_sizes[0]))];
    data += 2, size -= 2;
    /* A buffer of the exact size, so that any read past the file is caught. */
    size_t len = framed ? SNAP_HEADER_SIZE + size : size;
    uint8_t *file = malloc(len ? len : 1);
    check(file != NULL);
    memcpy(file + (framed ? SNAP_HEADER_SIZE : 0), data, size);
    if (framed)
        snap_header_write(file, size);
    parse(file, len, xsave, 1);
    free(file);
    return 0;
}
