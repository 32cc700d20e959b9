/* SPDX-License-Identifier: Apache-2.0 */
/* Saving and restoring the KVM state of x86 vCPUs and of the VM (irqchip, PIT, clock). */
#ifndef SBX_X86_STATE_H
#define SBX_X86_STATE_H

#include <stddef.h>

#include "snapshot.pb-c.h"

/* Bytes of a vCPU's XSAVE area on this host (KVM_CAP_XSAVE2, else struct kvm_xsave). */
size_t xstate_xsave_size(int kvm_fd);

/* The vCPU's TSC frequency in kHz, or 0 if KVM cannot tell. */
unsigned xstate_tsc_khz(int vcpu_fd);

/*
 * Reads every piece of a vCPU's state into *out (fields malloc'ed; release with
 * xstate_vcpu_free). The vCPU must be outside KVM_RUN with its pending I/O completed. Returns 0
 * or -errno with *what naming the ioctl.
 */
int xstate_vcpu_save(int kvm_fd, int vcpu_fd, size_t xsave_size, Sbx__Snap__Vcpu *out,
                     const char **what);
void xstate_vcpu_free(Sbx__Snap__Vcpu *v);

/* Checks the lengths of a loaded vCPU record. Returns NULL or what is wrong. */
const char *xstate_vcpu_check(const Sbx__Snap__Vcpu *v, size_t xsave_size);

/* Writes a checked vCPU record to a new vCPU, in the order KVM needs (CPUID first, LAPIC after
   SREGS, MSRs after the LAPIC, events last). Returns 0 or -errno with *what set. */
int xstate_vcpu_restore(int vcpu_fd, const Sbx__Snap__Vcpu *v, const char **what);

/* The VM-wide devices of the in-kernel irqchip and the kvmclock. */
int xstate_vm_save(int vm_fd, Sbx__Snap__Vm *out, const char **what);
void xstate_vm_free(Sbx__Snap__Vm *v);
const char *xstate_vm_check(const Sbx__Snap__Vm *v);
int xstate_vm_restore(int vm_fd, const Sbx__Snap__Vm *v, const char **what);

#endif
