/* SPDX-License-Identifier: Apache-2.0 */
/* Per-thread seccomp filters for the threads a sandbox runs on its own (docs/SECURITY.md). */
#ifndef SBX_SECCOMP_H
#define SBX_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>

enum thread_role {
    THREAD_VCPU,   /* the KVM_RUN loop and the exits it handles */
    THREAD_DEVICE, /* the device/IO thread: virtqueues, disks, NAT, timers */
    THREAD_SERVER, /* the isolated VMM process's main thread: dials for its parent */
};

struct thread_filter;

/* Builds the filter for a thread of this role: only the system calls that role makes are
   allowed (ioctl only with the KVM requests it uses), anything else fails with EPERM.
   With `drop_caps`, the thread also gives up every capability before it enters the filter
   (capabilities are per thread: the isolated mode's VMM threads). Returns NULL with `err`
   set on failure. */
struct thread_filter *thread_filter_new(enum thread_role role, bool drop_caps, char *err,
                                        size_t errlen);

/* Installs the filter on the calling thread (for good: it cannot be lifted) and frees it.
   Returns 0 or -errno. */
int thread_filter_enter(struct thread_filter *f);

/* Gives up every capability of the calling thread, for good. Returns 0 or -errno. */
int thread_drop_caps(void);

/* Frees a filter that was not entered. */
void thread_filter_free(struct thread_filter *f);

#endif
