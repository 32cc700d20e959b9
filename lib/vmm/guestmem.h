/* SPDX-License-Identifier: Apache-2.0 */
/* Guest physical memory and the one checked accessor every device goes through. */
#ifndef SBX_GUESTMEM_H
#define SBX_GUESTMEM_H

#include <stddef.h>
#include <stdint.h>

/* Guest RAM is at most two regions: [0, lo_size) and [4 GiB, 4 GiB + hi_size), leaving the
   hole below 4 GiB for MMIO devices. */
struct guestmem {
    uint8_t *lo;
    uint64_t lo_size;
    uint8_t *hi; /* NULL when hi_size == 0 */
    uint64_t hi_size;
};

#define GUESTMEM_HI_BASE 0x100000000ULL

/* Host pointer to [gpa, gpa + len) if that range lies entirely inside one RAM region, else
   NULL. Overflow-safe; len 0 is valid inside RAM. The only way devices may touch guest RAM. */
static inline void *guestmem_ptr(const struct guestmem *gm, uint64_t gpa, uint64_t len)
{
    if (gpa < gm->lo_size && len <= gm->lo_size - gpa)
        return gm->lo + gpa;
    if (gm->hi && gpa >= GUESTMEM_HI_BASE) {
        uint64_t off = gpa - GUESTMEM_HI_BASE;
        if (off < gm->hi_size && len <= gm->hi_size - off)
            return gm->hi + off;
    }
    return NULL;
}

#endif
