// SPDX-License-Identifier: Apache-2.0
/* Host side of the envd protocol: Hello, Ping, Shutdown and the send/receive building blocks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sandbox.h"
#include "agent/agent.h"

/* One request in flight per connection: fixed ids are enough to pair replies with requests,
   and distinct ones make a reply to the wrong request visible. */
enum {
    ID_HELLO = 1,
    ID_PING = 2,
    ID_SHUTDOWN = 3,
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Message for an error of read_full / write_full / wait_fd; what says what the host was doing
   ("waiting for a reply", "sending Ping"). */
static int io_err(int r, const char *what, char *err, size_t errlen)
{
    switch (r) {
    case SBX_ETIMEDOUT:
        set_err(err, errlen, "timed out talking to envd (%s)", what);
        break;
    case SBX_EINTR:
        set_err(err, errlen, "interrupted talking to envd (%s)", what);
        break;
    case SBX_EGUEST:
        set_err(err, errlen, "the guest stopped while talking to envd (%s)", what);
        break;
    case SBX_EPROTO:
        set_err(err, errlen, "envd closed the connection (%s)", what);
        break;
    case SBX_EIO:
        set_err(err, errlen, "I/O error talking to envd (%s): %s", what, strerror(errno));
        break;
    default:
        set_err(err, errlen, "error %d talking to envd (%s)", r, what);
        break;
    }
    return r;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* Copies a guest-supplied string into a fixed array, truncating. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Guest text in host error messages: bounded, and control bytes cannot reach a terminal. */
static void sanitize(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c > 0x7e) ? '?' : (char)c;
    }
    dst[i] = '\0';
}

int agent_send(int fd, const struct waitctx *w, const Sbx__Agent__Frame *f, char *err,
               size_t errlen)
{
    uint8_t *buf;
    size_t len;
    int r = frame_encode_alloc(f, &buf, &len, err, errlen);
    if (r)
        return r;
    r = write_full(w, fd, buf, len);
    free(buf);
    if (r) {
        char what[64];
        snprintf(what, sizeof(what), "sending %s", frame_body_name(f->body_case));
        return io_err(r, what, err, errlen);
    }
    return 0;
}

int agent_recv(int fd, const struct waitctx *w, Sbx__Agent__Frame **out, char *err, size_t errlen)
{
    *out = NULL;
    uint8_t hdr[SBX_FRAME_HDR];
    int r = read_full(w, fd, hdr, sizeof(hdr));
    if (r)
        return io_err(r, "waiting for a reply", err, errlen);
    uint32_t len = 0;
    char why[128];
    r = frame_parse_header(hdr, &len, why, sizeof(why));
    if (r) {
        set_err(err, errlen, "envd sent a bad frame: %s", why);
        return r;
    }
    uint8_t *payload = malloc(len);
    if (!payload) {
        set_err(err, errlen, "out of memory for a %u byte frame from envd", len);
        return SBX_ENOMEM;
    }
    r = read_full(w, fd, payload, len);
    if (r) {
        free(payload);
        if (r == SBX_EPROTO) {
            set_err(err, errlen, "truncated frame: envd closed the connection in a %u-byte frame",
                    len);
            return r;
        }
        return io_err(r, "waiting for a reply", err, errlen);
    }
    r = frame_unpack(payload, len, out, why, sizeof(why));
    free(payload);
    if (r) {
        set_err(err, errlen, "envd sent a bad frame: %s", why);
        /* envd only sends what the host asked for: a body unknown here is a violation. */
        return r == SBX_ENOTSUP ? SBX_EPROTO : r;
    }
    return 0;
}

/* Turns an Error reply into a return code and a message. */
int agent_error_code(const Sbx__Agent__Error *e)
{
    switch (e->code) {
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_UNSUPPORTED:
        return SBX_ENOTSUP;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_INVALID_ARGUMENT:
        return SBX_EINVAL;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_FOUND:
        return SBX_ENOENT;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_PERMISSION:
        return SBX_EACCES;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_NO_SPACE:
        return SBX_ENOSPC;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_A_DIRECTORY:
        return SBX_ENOTDIR;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_IS_A_DIRECTORY:
        return SBX_EISDIR;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_EXISTS:
        return SBX_EEXIST;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_NOT_EMPTY:
        return SBX_ENOTEMPTY;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_BUSY:
        return SBX_EBUSY;
    case SBX__AGENT__ERROR_CODE__ERROR_CODE_INTERNAL:
        return SBX_EIO;
    default: /* PROTOCOL, VERSION, and codes from a newer envd */
        return SBX_EPROTO;
    }
}

void agent_error_message(const Sbx__Agent__Error *e, char *buf, size_t cap)
{
    sanitize(buf, cap, e->message);
    if (!buf[0])
        snprintf(buf, cap, "%s", "no message");
}

int agent_guest_error(const Sbx__Agent__Error *e, const char *req, char *err, size_t errlen)
{
    char msg[512];
    sanitize(msg, sizeof(msg), e->message);
    set_err(err, errlen, "envd refused %s: %s (code %d%s%s)", req, msg[0] ? msg : "no message",
            (int)e->code, e->os_errno ? ", " : "", e->os_errno ? strerror(e->os_errno) : "");
    return agent_error_code(e);
}

int agent_call(int fd, const struct waitctx *w, const Sbx__Agent__Frame *req,
               Sbx__Agent__Frame__BodyCase want, Sbx__Agent__Frame **reply, char *err,
               size_t errlen)
{
    *reply = NULL;
    const char *name = frame_body_name(req->body_case);
    int r = agent_send(fd, w, req, err, errlen);
    if (r)
        return r;
    Sbx__Agent__Frame *f;
    r = agent_recv(fd, w, &f, err, errlen);
    if (r)
        return r;
    /* An Error with id 0 answers a frame envd could not parse, which was this request. */
    if (f->body_case == SBX__AGENT__FRAME__BODY_ERROR && want != f->body_case &&
        (f->id == req->id || f->id == 0)) {
        r = agent_guest_error(f->error, name, err, errlen);
        frame_free(f);
        return r;
    }
    if (f->id != req->id) {
        set_err(err, errlen, "envd answered %s with a %s for request %u instead of %u", name,
                frame_body_name(f->body_case), f->id, req->id);
        frame_free(f);
        return SBX_EPROTO;
    }
    if (f->body_case != want) {
        set_err(err, errlen, "envd answered %s with %s instead of %s", name,
                frame_body_name(f->body_case), frame_body_name(want));
        frame_free(f);
        return SBX_EPROTO;
    }
    *reply = f;
    return 0;
}

static uint32_t feature_bit(const char *name)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } known[] = {
        {"clock", AGENT_FEATURE_CLOCK},     {"hostname", AGENT_FEATURE_HOSTNAME},
        {"exec", AGENT_FEATURE_EXEC},       {"pty", AGENT_FEATURE_PTY},
        {"files", AGENT_FEATURE_FILES},     {"watch", AGENT_FEATURE_WATCH},
        {"metrics", AGENT_FEATURE_METRICS}, {"port-forward", AGENT_FEATURE_PORT_FORWARD},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strcmp(name, known[i].name) == 0)
            return known[i].bit;
    return 0;
}

static int check_hello(const Sbx__Agent__Hello *h, struct agent_hello *out, char *err,
                       size_t errlen)
{
    if (h->protocol_version != SBX__AGENT__CONSTANTS__PROTOCOL_VERSION) {
        set_err(err, errlen, "envd speaks agent protocol %u, this library speaks %u",
                h->protocol_version, (unsigned)SBX__AGENT__CONSTANTS__PROTOCOL_VERSION);
        return SBX_EPROTO;
    }
    const struct {
        const char *name, *value;
        bool required;
    } strs[] = {
        {"software", h->software, true},
        {"version", h->version, true},
        {"kernel release", h->kernel_release, true},
        {"OS name", h->os_name, false},
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if (!strs[i].value[0] && strs[i].required) {
            set_err(err, errlen, "envd's Hello has no %s", strs[i].name);
            return SBX_EPROTO;
        }
        if (!printable(strs[i].value)) {
            set_err(err, errlen, "envd's Hello has a non-printable %s", strs[i].name);
            return SBX_EPROTO;
        }
    }
    uint32_t features = 0;
    for (size_t i = 0; i < h->n_features; i++)
        features |= feature_bit(h->features[i]);
    if (out) {
        memset(out, 0, sizeof(*out));
        out->protocol_version = h->protocol_version;
        copy_str(out->kernel_release, sizeof(out->kernel_release), h->kernel_release);
        copy_str(out->envd_version, sizeof(out->envd_version), h->version);
        out->features = features;
        out->cpus = h->cpus;
        out->mem_total_kib = h->mem_total_kib;
        copy_str(out->os_name, sizeof(out->os_name), h->os_name);
    }
    return 0;
}

int agent_hello(int fd, const struct waitctx *w, struct agent_hello *out, char *err, size_t errlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    Sbx__Agent__Hello hello = SBX__AGENT__HELLO__INIT;
    hello.protocol_version = SBX__AGENT__CONSTANTS__PROTOCOL_VERSION;
    hello.software = "libsandbox";
    hello.version = SBX_VERSION_STRING;
    hello.realtime_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
    req.id = ID_HELLO;
    req.body_case = SBX__AGENT__FRAME__BODY_HELLO;
    req.hello = &hello;

    Sbx__Agent__Frame *f;
    int r = agent_call(fd, w, &req, SBX__AGENT__FRAME__BODY_HELLO, &f, err, errlen);
    if (r)
        return r;
    r = check_hello(f->hello, out, err, errlen);
    frame_free(f);
    return r;
}

int agent_ping(int fd, const struct waitctx *w, char *err, size_t errlen)
{
    /* The nonce only has to differ between pings so a stale Pong cannot pass. */
    Sbx__Agent__Ping ping = SBX__AGENT__PING__INIT;
    ping.nonce = now_ns();
    Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
    req.id = ID_PING;
    req.body_case = SBX__AGENT__FRAME__BODY_PING;
    req.ping = &ping;

    Sbx__Agent__Frame *f;
    int r = agent_call(fd, w, &req, SBX__AGENT__FRAME__BODY_PONG, &f, err, errlen);
    if (r)
        return r;
    if (f->pong->nonce != ping.nonce) {
        set_err(err, errlen, "envd's Pong carries nonce %llu instead of %llu",
                (unsigned long long)f->pong->nonce, (unsigned long long)ping.nonce);
        r = SBX_EPROTO;
    }
    frame_free(f);
    return r;
}

int agent_shutdown(int fd, const struct waitctx *w, char *err, size_t errlen)
{
    Sbx__Agent__Shutdown sd = SBX__AGENT__SHUTDOWN__INIT;
    Sbx__Agent__Frame req = SBX__AGENT__FRAME__INIT;
    req.id = ID_SHUTDOWN;
    req.body_case = SBX__AGENT__FRAME__BODY_SHUTDOWN;
    req.shutdown = &sd;

    Sbx__Agent__Frame *f;
    int r = agent_call(fd, w, &req, SBX__AGENT__FRAME__BODY_OK, &f, err, errlen);
    frame_free(f);
    return r;
}
