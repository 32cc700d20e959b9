// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: the agent frame decoder and the incremental frame reader on hostile bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "agent/frame.h"

/* Input byte 0 picks the chunk sizes fed to the incremental reader; the rest is the stream. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[128];

    if (size < 1)
        return 0;
    unsigned chunk_seed = data[0];
    data++;
    size--;

    /* Whole-buffer decoding: every frame in turn until an error or a partial frame. */
    size_t off = 0;
    for (;;) {
        Sbx__Agent__Frame *f = NULL;
        size_t used = 0;
        int rc = frame_decode(data + off, size - off, &f, &used, err, sizeof(err));
        if (rc != 1) {
            if (f)
                abort(); /* no frame may leak out of a failed or incomplete decode */
            break;
        }
        if (used == 0 || used > size - off)
            abort();
        (void)frame_body_name(f->body_case);
        /* A decoded frame re-encodes (it was validated). */
        uint8_t *enc = NULL;
        size_t enc_len = 0;
        if (frame_encode_alloc(f, &enc, &enc_len, err, sizeof(err)) == 0)
            free(enc);
        frame_free(f);
        off += used;
    }

    /* The incremental reader, fed in chunks of 1..16 bytes (or everything at once). */
    struct frame_reader r;
    frame_reader_init(&r);
    off = 0;
    while (off < size) {
        size_t chunk = chunk_seed == 0 ? size - off : 1 + (chunk_seed + off) % 16;
        if (chunk > size - off)
            chunk = size - off;
        while (chunk > 0) {
            Sbx__Agent__Frame *f = NULL;
            size_t used = 0;
            int rc = frame_reader_feed(&r, data + off, chunk, &used, &f, err, sizeof(err));
            if (rc < 0) {
                if (f)
                    abort();
                goto done;
            }
            if (used > chunk || (rc == 1 && used == 0))
                abort();
            frame_free(f);
            off += used;
            chunk -= used;
            if (rc == 0 && chunk != 0)
                abort(); /* 0 means every byte was consumed */
        }
    }
    (void)frame_reader_idle(&r);
done:
    frame_reader_free(&r);
    return 0;
}
