/* SPDX-License-Identifier: Apache-2.0 */
/* x86-64 vCPU setup: CPUID, MSRs, LAPIC, and the register state of the 64-bit boot protocol. */
#ifndef SBX_X86_CPU_H
#define SBX_X86_CPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/guestmem.h"

struct kvm_cpuid2;

/* The host's KVM_GET_SUPPORTED_CPUID, malloc'ed (free()). NULL with errno on failure. */
struct kvm_cpuid2 *cpu_supported_cpuid(int kvm_fd);

/* Gives vCPU `id` of `n` its CPUID (APIC id, topology, hypervisor bit, the TSC-deadline timer
   when KVM has it). Returns 0 or -errno. */
int cpu_set_cpuid(int vcpu_fd, const struct kvm_cpuid2 *supported, unsigned id, unsigned n,
                  bool tsc_deadline);

/* Boot MSRs and LAPIC LINT0/LINT1 wiring, for every vCPU. Returns 0 or -errno; *what names the
   ioctl that failed. */
int cpu_init(int vcpu_fd, const char **what);

/* The bootstrap processor's state at the kernel's 64-bit entry (Documentation/x86/boot.rst):
   long mode, identity-mapped paging, boot GDT, %rsi = zero page. Returns 0 or -errno. */
int cpu_set_boot_regs(int vcpu_fd, uint64_t entry, uint64_t zero_page, const char **what);

/* Writes the boot GDT and the identity page tables (first 4 GiB, 2 MiB pages) to guest RAM. */
int cpu_write_boot_tables(const struct guestmem *gm);

#endif
