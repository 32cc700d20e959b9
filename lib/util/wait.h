/* SPDX-License-Identifier: Apache-2.0 */
/* Deadlines and interruptible waits: every blocking call of the library goes through these. */
#ifndef SBX_WAIT_H
#define SBX_WAIT_H

#include <stddef.h>
#include <stdint.h>

/* A blocking operation's limits: a CLOCK_MONOTONIC deadline, an fd that becomes readable when
   the caller interrupts (-> SBX_EINTR), and one that becomes readable when the VM has ended
   (-> SBX_EGUEST). Either fd may be -1. */
struct waitctx {
    uint64_t deadline_ns;
    int intr_fd;
    int dead_fd;
};

/* CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds. */
uint64_t now_ns(void);
uint64_t realtime_ns(void);

/* Deadline `ms` milliseconds from now. */
uint64_t deadline_after_ms(unsigned ms);

/* Waits until fd is ready for `events` (POLLIN / POLLOUT). Returns 0, SBX_ETIMEDOUT, SBX_EINTR
   or SBX_EGUEST (VM ended). Retries on EINTR from signals. */
int wait_fd(const struct waitctx *w, int fd, short events);

/* Sleeps until min(deadline, now + ms) while honouring intr_fd / dead_fd like wait_fd. Returns
   0 when the sleep ran out (even if the deadline is reached: check it separately). */
int wait_sleep(const struct waitctx *w, unsigned ms);

/* Reads / writes exactly len bytes on a non-blocking fd within the wait context. Returns 0,
   a wait_fd error, SBX_EIO on an I/O error, or SBX_EPROTO when the peer closed early (EOF
   or ECONNRESET). */
int read_full(const struct waitctx *w, int fd, void *buf, size_t len);
int write_full(const struct waitctx *w, int fd, const void *buf, size_t len);

#endif
