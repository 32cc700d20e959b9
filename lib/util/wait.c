// SPDX-License-Identifier: Apache-2.0
/* Deadlines and interruptible waits on non-blocking fds. */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <stddef.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"
#include "util/wait.h"

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t deadline_after_ms(unsigned ms)
{
    return now_ns() + (uint64_t)ms * 1000000ull;
}

/* Polls fd (or nothing when fd < 0) until `until`; 1 = fd ready, 0 = time ran out. */
static int poll_until(const struct waitctx *w, int fd, short events, uint64_t until)
{
    for (;;) {
        struct pollfd p[3];
        int n = 0, ifd = -1, dfd = -1;
        if (w->intr_fd >= 0) {
            ifd = n;
            p[n++] = (struct pollfd){.fd = w->intr_fd, .events = POLLIN};
        }
        if (w->dead_fd >= 0) {
            dfd = n;
            p[n++] = (struct pollfd){.fd = w->dead_fd, .events = POLLIN};
        }
        int target = n;
        if (fd >= 0)
            p[n++] = (struct pollfd){.fd = fd, .events = events};
        uint64_t now = now_ns();
        if (now >= until)
            return 0;
        uint64_t left_ms = (until - now + 999999) / 1000000;
        int r = poll(p, (nfds_t)n, left_ms > 60000 ? 60000 : (int)left_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return SBX_EIO;
        }
        if (ifd >= 0 && p[ifd].revents)
            return SBX_EINTR;
        if (fd >= 0 && p[target].revents)
            return 1;
        if (dfd >= 0 && p[dfd].revents)
            return SBX_EGUEST;
    }
}

int wait_fd(const struct waitctx *w, int fd, short events)
{
    int r = poll_until(w, fd, events, w->deadline_ns);
    return r == 1 ? 0 : r == 0 ? SBX_ETIMEDOUT : r;
}

int wait_sleep(const struct waitctx *w, unsigned ms)
{
    uint64_t until = now_ns() + (uint64_t)ms * 1000000ull;
    if (until > w->deadline_ns)
        until = w->deadline_ns;
    int r = poll_until(w, -1, 0, until);
    return r < 0 ? r : 0;
}

int read_full(const struct waitctx *w, int fd, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n == 0) {
            return SBX_EPROTO;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int r = wait_fd(w, fd, POLLIN);
            if (r)
                return r;
        } else if (errno == ECONNRESET) {
            return SBX_EPROTO;
        } else if (errno != EINTR) {
            return SBX_EIO;
        }
    }
    return 0;
}

int write_full(const struct waitctx *w, int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n >= 0) {
            p += n;
            len -= (size_t)n;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int r = wait_fd(w, fd, POLLOUT);
            if (r)
                return r;
        } else if (errno == EPIPE || errno == ECONNRESET) {
            return SBX_EPROTO;
        } else if (errno != EINTR) {
            return SBX_EIO;
        }
    }
    return 0;
}
