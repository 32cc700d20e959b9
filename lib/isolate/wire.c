// SPDX-License-Identifier: Apache-2.0
/* The isolated mode's messages (lib/isolate/isolate.h), the same for both sides. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "isolate/isolate.h"

ssize_t iso_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds)
{
    char cbuf[CMSG_SPACE(sizeof(int) * ISO_MAX_FDS)];
    memset(cbuf, 0, sizeof(cbuf));
    struct iovec iov = {(void *)msg, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > ISO_MAX_FDS)
        return -1;
    if (nfds) {
        mh.msg_control = cbuf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

ssize_t iso_recv(int sock, void *buf, size_t cap, int fds[ISO_MAX_FDS], unsigned *nfds, int flags)
{
    char cbuf[CMSG_SPACE(sizeof(int) * (ISO_MAX_FDS + 4))];
    struct iovec iov = {buf, cap};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
    *nfds = 0;
    ssize_t n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*nfds < ISO_MAX_FDS)
                fds[(*nfds)++] = fd;
            else
                close(fd); /* more than any message has: the sender is broken */
        }
    }
    return n;
}

int iso_memfd(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    int fd = buf ? memfd_create("sbx-vmm", MFD_CLOEXEC | MFD_ALLOW_SEALING) : -1;
    if (fd >= 0) {
        protobuf_c_message_pack(m, buf);
        if (write(fd, buf, len) != (ssize_t)len ||
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
            close(fd);
            fd = -1;
        }
    }
    free(buf);
    return fd;
}

uint8_t *iso_memfd_read(int fd, size_t max, size_t *len)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0 || (uint64_t)st.st_size > max)
        return NULL;
    uint8_t *buf = malloc((size_t)st.st_size);
    if (buf && pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
        free(buf);
        buf = NULL;
    }
    *len = (size_t)st.st_size;
    return buf;
}
