// SPDX-License-Identifier: Apache-2.0
/* A bounded buffer relaying a byte stream between two non-blocking sockets. */
#include "util/relaybuf.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

bool relaybuf_read(struct relaybuf *b, int fd)
{
    if (b->eof)
        return true;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len == RELAYBUF_SIZE)
        return true;
    ssize_t n = recv(fd, b->data + b->len, RELAYBUF_SIZE - b->len, MSG_DONTWAIT);
    if (n > 0)
        b->len += (size_t)n;
    else if (n == 0)
        b->eof = true;
    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return false;
    return true;
}

int relaybuf_write(struct relaybuf *b, int fd)
{
    while (b->off < b->len) {
        ssize_t n = send(fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            b->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return n < 0 ? -errno : -EIO;
    }
    b->off = b->len = 0;
    if (b->eof && !b->shut) {
        shutdown(fd, SHUT_WR);
        b->shut = true;
    }
    return 0;
}
