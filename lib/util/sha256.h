// SPDX-License-Identifier: Apache-2.0
/* SHA-256 over buffers and files (OpenSSL's libcrypto), as lowercase hex: the template store's
   content keys (step hashes, layer names, kernel and image identities). */
#ifndef SBX_UTIL_SHA256_H
#define SBX_UTIL_SHA256_H

#include <stddef.h>

/* One running digest. Not shareable between threads; any number may exist at once. */
struct sha256 {
    void *evp;  /* EVP_MD_CTX *, NULL after sha256_hex or a failed init */
    int failed; /* an update failed: sha256_hex yields "" */
};

/* Starts a digest: 0, or -ENOMEM (h->evp is then NULL, and sha256_update / sha256_hex are
   still safe to call: sha256_hex yields ""). */
int sha256_init(struct sha256 *h);
void sha256_update(struct sha256 *h, const void *p, size_t n);
/* Finishes the digest, writes 64 hex digits and a NUL (or "" after a failure) and frees it. */
void sha256_hex(struct sha256 *h, char out[65]);

/* The digest of one buffer: 0 or -ENOMEM (out is then ""). */
int sha256_buf(const void *p, size_t n, char out[65]);

/* The digest of a regular file's contents: 0 or -errno (-EISDIR for a directory, -EINVAL for
   anything else that is not a regular file, so that a FIFO or device cannot block or stream
   forever). out is "" on error. */
int sha256_file(const char *path, char out[65]);

/* 1 if s is exactly 64 lowercase hex digits, else 0. */
int sha256_valid_hex(const char *s);

#endif
