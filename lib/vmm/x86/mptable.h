/* SPDX-License-Identifier: Apache-2.0 */
/* The Intel MultiProcessor table that tells the guest its CPUs, IOAPIC and interrupt wiring. */
#ifndef SBX_X86_MPTABLE_H
#define SBX_X86_MPTABLE_H

#include "vmm/guestmem.h"

/* Writes the MP floating pointer and configuration table at LAYOUT_MPTABLE for `ncpus` CPUs
   (APIC ids 0..ncpus-1) and one IOAPIC (id ncpus). Returns 0 or -1 if it does not fit. */
int mptable_write(const struct guestmem *gm, unsigned ncpus);

#endif
