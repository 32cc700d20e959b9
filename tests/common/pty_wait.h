/* SPDX-License-Identifier: Apache-2.0 */
/* Waiting for text on a terminal (sbx_pty_open), shared by unit and guest-booting tests. */
#ifndef SBX_PTY_WAIT_H
#define SBX_PTY_WAIT_H

#include <string.h>
#include <time.h>

#include "sandbox.h"

/* Terminal output read but not yet matched: what follows a match stays for the next wait. */
struct pty_text {
    char acc[1 << 16];
    size_t n;
    int last; /* the last sbx_proc_read result when a wait failed */
};

static inline double pty_wait_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Reads the terminal until its output contains want and consumes it up to there: 1. On a
   read error (t->last holds it) or after timeout_ms without want: 0, with t->acc holding what
   was read. Only stdout may come from a terminal: anything else is an error too. */
static inline int pty_wait(sbx_proc *p, struct pty_text *t, const char *want, unsigned timeout_ms)
{
    double end = pty_wait_now_ms() + timeout_ms;
    t->acc[t->n] = '\0';
    for (;;) {
        char *m = strstr(t->acc, want);
        if (m) {
            size_t used = (size_t)(m - t->acc) + strlen(want);
            memmove(t->acc, t->acc + used, t->n - used + 1);
            t->n -= used;
            return 1;
        }
        if (pty_wait_now_ms() >= end) {
            t->last = SBX_ETIMEDOUT;
            return 0;
        }
        int stream;
        int r = sbx_proc_read(p, t->acc + t->n, sizeof(t->acc) - 1 - t->n, &stream, 200);
        if (r == SBX_ETIMEDOUT)
            continue;
        if (r <= 0 || stream != SBX_STDOUT) {
            t->last = r <= 0 ? r : SBX_EPROTO;
            return 0;
        }
        t->n += (size_t)r;
        t->acc[t->n] = '\0';
        if (t->n > sizeof(t->acc) / 2) { /* keep the newer half */
            memmove(t->acc, t->acc + t->n / 2, t->n - t->n / 2 + 1);
            t->n -= t->n / 2;
        }
    }
}

#endif
