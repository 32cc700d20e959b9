/* SPDX-License-Identifier: Apache-2.0 */
/* vCPU threads: the KVM_RUN loop and the dispatch of its exits. */
#ifndef SBX_VCPU_H
#define SBX_VCPU_H

#include <pthread.h>
#include <stdbool.h>

struct sbx;
struct kvm_run;
struct kvm_cpuid2;
struct thread_filter;

struct vcpu {
    struct sbx *sb;
    unsigned id;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    struct thread_filter *filter; /* entered by the thread first, or NULL */
};

/* The real-time signal that kicks a vCPU thread out of KVM_RUN (documented in sandbox.h). */
int vcpu_kick_signal(void);

/* Installs the no-op handler for the kick signal once per process, if it has the default
   disposition. Returns 0 or -errno. */
int vcpu_signal_setup(void);

/* KVM_CREATE_VCPU + mmap of kvm_run + CPUID/MSRs/LAPIC; the BSP (id 0) also gets the boot
   registers. Returns 0 or an SBX_E* code with the handle's message set. */
int vcpu_create(struct vcpu *v, struct sbx *sb, unsigned id, const struct kvm_cpuid2 *cpuid,
                uint64_t entry, uint64_t zero_page);

/* Starts the vCPU thread, which first enters `filter` (NULL: none; owned by the call, freed on
   failure). Returns 0 or -errno. */
int vcpu_start(struct vcpu *v, struct thread_filter *filter);

/* Makes the vCPU leave KVM_RUN soon (any thread). */
void vcpu_kick(struct vcpu *v);

/* Makes every vCPU thread leave KVM_RUN and wait (their pending I/O completed), for a
   snapshot. Returns 0, -ETIMEDOUT or -ESHUTDOWN (the VM stopped meanwhile); on failure the
   vCPUs run on. */
int vcpu_park_all(struct sbx *sb, unsigned timeout_ms);

/* Lets parked vCPU threads run again. */
void vcpu_unpark_all(struct sbx *sb);

/* Waits for the vCPU thread to end (after sbx_stop). Idempotent. */
void vcpu_join(struct vcpu *v);

/* Joins the thread (after sbx_stop) and releases fd and kvm_run. */
void vcpu_destroy(struct vcpu *v);

#endif
