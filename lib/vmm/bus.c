// SPDX-License-Identifier: Apache-2.0
/* Dispatch of guest port I/O and MMIO exits to the device that owns the address. */
#include <string.h>

#include "vmm/bus.h"

int bus_add(struct bus *b, uint64_t base, uint64_t len, bus_fn fn, void *opaque)
{
    if (b->n == BUS_MAX_RANGES || len == 0 || base + len < base)
        return -1;
    for (unsigned i = 0; i < b->n; i++)
        if (base < b->r[i].base + b->r[i].len && b->r[i].base < base + len)
            return -1;
    b->r[b->n++] = (struct bus_range){base, len, fn, opaque};
    return 0;
}

bool bus_access(const struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
    for (unsigned i = 0; i < b->n; i++) {
        const struct bus_range *r = &b->r[i];
        /* The whole access must fit: a guest straddling two windows gets nothing. */
        if (addr >= r->base && addr - r->base < r->len && len <= r->len - (addr - r->base)) {
            r->fn(r->opaque, addr - r->base, data, len, is_write);
            return true;
        }
    }
    if (!is_write)
        memset(data, 0xff, len);
    return false;
}
