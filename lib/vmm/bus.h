/* SPDX-License-Identifier: Apache-2.0 */
/* Dispatch of guest port I/O and MMIO exits to the device that owns the address. */
#ifndef SBX_BUS_H
#define SBX_BUS_H

#include <stdbool.h>
#include <stdint.h>

/* data is little-endian guest data of len bytes (1, 2, 4 or 8); fill it on reads. */
typedef void (*bus_fn)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

#define BUS_MAX_RANGES 32

struct bus_range {
    uint64_t base, len;
    bus_fn fn;
    void *opaque;
};

/* A fixed table filled while the VM is built and read-only once vCPUs run: no locking. */
struct bus {
    struct bus_range r[BUS_MAX_RANGES];
    unsigned n;
};

/* Adds [base, base+len). Returns 0, or -1 if the table is full or the range overlaps. */
int bus_add(struct bus *b, uint64_t base, uint64_t len, bus_fn fn, void *opaque);

/* Routes an access; returns false (and fills reads with 0xff) if no device owns the address. */
bool bus_access(const struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
