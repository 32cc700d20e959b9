/* SPDX-License-Identifier: Apache-2.0 */
/* Every guest-physical address the VMM uses on x86-64, in one place. */
#ifndef SBX_X86_LAYOUT_H
#define SBX_X86_LAYOUT_H

/* Low memory: boot structures the kernel reads before it owns the machine. */
#define LAYOUT_GDT         0x500ULL /* 4 entries: null, null, code64 (0x10), data (0x18) */
#define LAYOUT_IDT         0x520ULL /* empty IDT: any exception before the kernel's own = shutdown */
#define LAYOUT_ZERO_PAGE   0x7000ULL /* struct boot_params; %rsi at the 64-bit entry */
#define LAYOUT_PML4        0x9000ULL /* identity page tables: PML4, PDPT, 4 PDs of 2 MiB pages */
#define LAYOUT_PDPT        0xa000ULL
#define LAYOUT_PD          0xb000ULL  /* 4 pages: 0xb000..0xefff map 0..4 GiB */
#define LAYOUT_CMDLINE     0x20000ULL /* kernel command line */
#define LAYOUT_CMDLINE_MAX 0x10000ULL /* 64 KiB; the kernel reads at most its COMMAND_LINE_SIZE */
#define LAYOUT_EBDA        0x9fc00ULL /* e820 marks [EBDA, 1 MiB) reserved */
#define LAYOUT_MPTABLE                                                                             \
    0xf0000ULL /* MP floating pointer + table: in the BIOS area the kernel scans */
#define LAYOUT_MPTABLE_MAX 0x10000ULL
#define LAYOUT_LOWMEM_END  0xa0000ULL  /* 640 KiB: start of the legacy VGA/BIOS hole */
#define LAYOUT_HIMEM       0x100000ULL /* 1 MiB: first usable RAM above the hole */
#define LAYOUT_BZIMAGE     0x100000ULL /* protected-mode part of a bzImage is loaded here */

/* The 32-bit MMIO hole: RAM stops here, devices live above, RAM resumes at 4 GiB. */
#define LAYOUT_MMIO_START   0xc0000000ULL
#define LAYOUT_VIRTIO_BASE  0xd0000000ULL /* virtio-mmio windows, VIRTIO_MMIO_WINDOW apart */
#define LAYOUT_IOAPIC       0xfec00000ULL
#define LAYOUT_LAPIC        0xfee00000ULL
#define LAYOUT_IDENTITY_MAP 0xfeffc000ULL /* KVM_SET_IDENTITY_MAP_ADDR (one page) */
#define LAYOUT_TSS          0xfeffd000ULL /* KVM_SET_TSS_ADDR (three pages) */

/* Interrupt lines: 4 is COM1; virtio devices take 5, 6, ... up to the IOAPIC's 24 pins. */
#define LAYOUT_IRQ_COM1    4
#define LAYOUT_IRQ_VIRTIO  5
#define LAYOUT_IOAPIC_PINS 24
#define LAYOUT_MAX_VIRTIO  (LAYOUT_IOAPIC_PINS - LAYOUT_IRQ_VIRTIO)

/* Boot GDT selectors (Documentation/x86/boot.rst, 64-bit boot protocol). */
#define LAYOUT_BOOT_CS 0x10
#define LAYOUT_BOOT_DS 0x18

#endif
