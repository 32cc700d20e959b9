/* SPDX-License-Identifier: Apache-2.0 */
/* Building the guest kernel command line, including virtio-mmio device announcements. */
#ifndef SBX_CMDLINE_H
#define SBX_CMDLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMDLINE_MAX 2048 /* x86 COMMAND_LINE_SIZE, including the NUL */

struct cmdline {
    char buf[CMDLINE_MAX];
    size_t len;
    bool overflow; /* something did not fit: the line must not be used */
};

void cmdline_init(struct cmdline *c);

/* Appends one space-separated argument (printf-style). */
void cmdline_add(struct cmdline *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends "virtio_mmio.device=<size>@<base>:<irq>" (Documentation/admin-guide/kernel-parameters,
   virtio_mmio.device with VIRTIO_MMIO_CMDLINE_DEVICES). */
void cmdline_add_virtio(struct cmdline *c, uint64_t base, uint64_t size, uint32_t irq);

/* Appends user-supplied text verbatim (already space-separated arguments). Refuses control
   characters (returns false) since they would end up inside the guest's /proc/cmdline. */
bool cmdline_append_raw(struct cmdline *c, const char *text);

#endif
