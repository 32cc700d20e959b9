/* SPDX-License-Identifier: Apache-2.0 */
/* Loading a Linux kernel (ELF vmlinux or bzImage) and the 64-bit boot protocol's zero page. */
#ifndef SBX_BOOT_H
#define SBX_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "vmm/guestmem.h"

struct boot_kernel {
    uint64_t entry;      /* guest-physical 64-bit entry point */
    uint64_t end;        /* first byte after the loaded image (initrd must go above) */
    uint32_t initrd_max; /* highest address the initrd may end at */
    int is_bzimage;
    uint8_t setup_header[0x80]; /* bzImage: its setup header (boot.rst), copied to the zero page */
    size_t setup_header_len;
};

/* Loads the kernel at `path` into guest RAM. Returns 0 or SBX_EIMAGE with a message in err. */
int boot_load_kernel(const struct guestmem *gm, const char *path, struct boot_kernel *k, char *err,
                     size_t errlen);

/* Places the initrd (as high as allowed), the command line, the e820 map and the zero page.
   Returns 0 or SBX_EINVAL / SBX_EIMAGE with a message in err. */
int boot_setup(const struct guestmem *gm, const struct boot_kernel *k, const char *cmdline,
               const uint8_t *initrd, size_t initrd_len, char *err, size_t errlen);

#endif
