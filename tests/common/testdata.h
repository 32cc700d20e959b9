/* SPDX-License-Identifier: Apache-2.0 */
/* Test data shared by unit and guest-booting tests: a reproducible byte stream and a checksum. */
#ifndef SBX_TESTDATA_H
#define SBX_TESTDATA_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of a deterministic pseudo-random stream (xorshift), for large data. */
struct prng {
    uint64_t s;
};

static inline void prng_fill(struct prng *p, uint8_t *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p->s ^= p->s << 13;
        p->s ^= p->s >> 7;
        p->s ^= p->s << 17;
        buf[i] = (uint8_t)(p->s >> 24);
    }
}

/* FNV-1a, incremental: h = fnv(h, ...) starting from FNV_INIT. */
#define FNV_INIT 14695981039346656037ull

static inline uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

#endif
