// SPDX-License-Identifier: Apache-2.0
/* SHA-256 through OpenSSL's EVP interface (hardware-accelerated where the CPU allows). */
#include "util/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

int sha256_init(struct sha256 *h)
{
    h->failed = 0;
    h->evp = EVP_MD_CTX_new();
    if (!h->evp) {
        h->failed = 1;
        return -ENOMEM;
    }
    if (EVP_DigestInit_ex(h->evp, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->evp);
        h->evp = NULL;
        h->failed = 1;
        return -ENOMEM;
    }
    return 0;
}

void sha256_update(struct sha256 *h, const void *p, size_t n)
{
    if (!h->evp || h->failed || n == 0)
        return;
    if (EVP_DigestUpdate(h->evp, p, n) != 1)
        h->failed = 1;
}

void sha256_hex(struct sha256 *h, char out[65])
{
    static const char hexd[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    out[0] = '\0';
    if (!h->evp)
        return;
    if (!h->failed && EVP_DigestFinal_ex(h->evp, md, &len) == 1 && len == 32) {
        for (unsigned i = 0; i < 32; i++) {
            out[2 * i] = hexd[md[i] >> 4];
            out[2 * i + 1] = hexd[md[i] & 15];
        }
        out[64] = '\0';
    }
    EVP_MD_CTX_free(h->evp);
    h->evp = NULL;
}

int sha256_buf(const void *p, size_t n, char out[65])
{
    struct sha256 h;
    int rc = sha256_init(&h);
    sha256_update(&h, p, n);
    sha256_hex(&h, out);
    return rc ? rc : (out[0] ? 0 : -ENOMEM);
}

int sha256_file(const char *path, char out[65])
{
    enum { CHUNK = 256 * 1024 };
    struct sha256 h;
    struct stat st;
    unsigned char *buf = NULL;
    int fd, rc = 0;

    out[0] = '\0';
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    buf = malloc(CHUNK);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    rc = sha256_init(&h);
    if (rc)
        goto out;
    for (;;) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        sha256_update(&h, buf, (size_t)n);
    }
    sha256_hex(&h, out);
    if (rc)
        out[0] = '\0';
    else if (!out[0])
        rc = -ENOMEM;
out:
    free(buf);
    close(fd);
    return rc;
}

int sha256_valid_hex(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[64] == '\0';
}
