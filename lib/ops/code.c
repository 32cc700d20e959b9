// SPDX-License-Identifier: Apache-2.0
/*
 * The code interpreter API (docs/code-interpreter.md): each call is one connection, through
 * envd's PortConnect, to the interpreter service on the guest's loopback, carrying one JSON
 * request line out and JSON answer lines back. Everything the service sends is checked and
 * capped: it runs in the guest, next to the code it runs.
 */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/conn.h"
#include "internal.h"
#include "ops/code.h"

#define LINE_MAX_BYTES  (64u << 20) /* one answer line */
#define CAPTURE_MAX     (16u << 20) /* captured output per stream */
#define MAX_RESULTS     1024u
#define MAX_FORMATS     32u
#define MAX_CONTEXTS    1024u
#define MAX_JSON_DEPTH  64
#define CODE_MAX_BYTES  (32u << 20)
#define CTL_TIMEOUT_MS  120000u /* context calls: starting an interpreter can be slow */
#define ANSWER_GRACE_MS 10000u  /* after an execution's timeout, for the service to end it */
#define DEFAULT_CODE_MS 300000u
#define CONNECT_MS      5000u

/* One connection to the service, with the bytes received and not yet consumed. */
struct svc {
    struct call *c;
    int fd;
    char *buf;
    size_t off, len, cap;
};

static void svc_close(struct svc *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    free(s->buf);
    s->buf = NULL;
}

/* Dials envd, asks it to connect to the service's port and leaves a raw byte stream. */
static int svc_open(struct call *c, struct svc *s, const char *what)
{
    struct sbx *sb = c->sb;
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->fd = -1;
    int r = call_require(c, AGENT_FEATURE_PORT_FORWARD, what);
    if (r)
        return r;
    if ((r = sbx_agent_dial(sb, &s->fd)) < 0)
        return call_fail(c, r, "%s: cannot connect to the guest agent: %s", what, sbx_strerror(r));
    char err[512] = "";
    r = agent_hello(s->fd, &c->w, NULL, err, sizeof(err));
    if (r == 0) {
        Sbx__Agent__PortConnect pc = SBX__AGENT__PORT_CONNECT__INIT;
        pc.port = sb->code_port ? sb->code_port : SBX_CODE_PORT;
        pc.timeout_ms = CONNECT_MS;
        Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT, *reply = NULL;
        f.id = 1;
        f.body_case = SBX__AGENT__FRAME__BODY_PORT_CONNECT;
        f.port_connect = &pc;
        r = agent_call(s->fd, &c->w, &f, SBX__AGENT__FRAME__BODY_OK, &reply, err, sizeof(err));
        frame_free(reply);
    }
    if (r == SBX_ENOENT) /* envd: nothing listens on the port */
        r = call_fail(c, SBX_ENOTSUP,
                      "%s: no code interpreter service listens in the guest (make the sandbox "
                      "from the code-interpreter template): %s",
                      what, err);
    else if (r == SBX_EGUEST || r == SBX_EINTR || r == SBX_ETIMEDOUT)
        r = call_fail(c, r, "%s: %s", what, r == SBX_EGUEST ? "the guest died" : sbx_strerror(r));
    else if (r)
        r = call_fail(c, r, "%s: connecting to the interpreter service: %s", what, err);
    if (r)
        svc_close(s);
    return r;
}

/* Sends the request as one line. */
static int svc_send(struct svc *s, json_object *req, const char *what)
{
    size_t n = 0;
    const char *txt = json_object_to_json_string_length(req, JSON_C_TO_STRING_PLAIN, &n);
    if (!txt)
        return call_fail(s->c, SBX_ENOMEM, "%s: out of memory", what);
    if (n + 1 > LINE_MAX_BYTES)
        return call_fail(s->c, SBX_EINVAL, "%s: the request is %zu bytes, more than %u", what,
                         n + 1, LINE_MAX_BYTES);
    int r = write_full(&s->c->w, s->fd, txt, n);
    if (r == 0)
        r = write_full(&s->c->w, s->fd, "\n", 1);
    if (r == SBX_EGUEST || r == SBX_EINTR || r == SBX_ETIMEDOUT)
        return call_fail(s->c, r, "%s: %s", what,
                         r == SBX_EGUEST ? "the guest died" : sbx_strerror(r));
    if (r)
        return call_fail(s->c, SBX_EPROTO, "%s: the interpreter service closed the connection",
                         what);
    return 0;
}

/* Receives the next answer line and parses it into a JSON object (release with
   json_object_put). */
static int svc_recv(struct svc *s, json_object **out, const char *what)
{
    *out = NULL;
    for (;;) {
        char *nl = s->len > s->off ? memchr(s->buf + s->off, '\n', s->len - s->off) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - (s->buf + s->off));
            if (n >= LINE_MAX_BYTES) /* its end came in the read that crossed the limit */
                return call_fail(s->c, SBX_EPROTO,
                                 "%s: the interpreter service sent a line longer than %u bytes",
                                 what, LINE_MAX_BYTES);
            *nl = '\0';
            json_tokener *tok = json_tokener_new_ex(MAX_JSON_DEPTH);
            if (!tok)
                return call_fail(s->c, SBX_ENOMEM, "%s: out of memory", what);
            json_object *o = json_tokener_parse_ex(tok, s->buf + s->off, (int)n);
            bool whole = o && json_tokener_get_error(tok) == json_tokener_success &&
                         json_tokener_get_parse_end(tok) == n;
            json_tokener_free(tok);
            s->off += n + 1;
            if (!whole || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return call_fail(s->c, SBX_EPROTO,
                                 "%s: the interpreter service sent a line that is not a JSON "
                                 "object",
                                 what);
            }
            *out = o;
            return 0;
        }
        if (s->len - s->off >= LINE_MAX_BYTES)
            return call_fail(s->c, SBX_EPROTO,
                             "%s: the interpreter service sent a line longer than %u bytes", what,
                             LINE_MAX_BYTES);
        if (s->off > 0) { /* keep the partial line at the start */
            memmove(s->buf, s->buf + s->off, s->len - s->off);
            s->len -= s->off;
            s->off = 0;
        }
        if (s->cap - s->len < 65536) {
            size_t cap = s->cap ? s->cap * 2 : 262144;
            if (cap > LINE_MAX_BYTES + 65536u)
                cap = LINE_MAX_BYTES + 65536u;
            char *nb = realloc(s->buf, cap);
            if (!nb)
                return call_fail(s->c, SBX_ENOMEM, "%s: out of memory", what);
            s->buf = nb;
            s->cap = cap;
        }
        ssize_t got = read(s->fd, s->buf + s->len, s->cap - s->len);
        if (got > 0) {
            s->len += (size_t)got;
            continue;
        }
        if (got == 0 || (errno != EAGAIN && errno != EINTR))
            return call_fail(s->c, SBX_EPROTO,
                             "%s: the interpreter service closed the connection before it "
                             "answered",
                             what);
        if (errno == EINTR)
            continue;
        int r = wait_fd(&s->c->w, s->fd, POLLIN);
        if (r == SBX_ETIMEDOUT)
            return call_fail(s->c, r, "%s: the interpreter service did not answer in time", what);
        if (r)
            return call_fail(s->c, r, "%s: %s", what,
                             r == SBX_EGUEST ? "the guest died" : sbx_strerror(r));
    }
}

/* --- checking the service's answers -------------------------------------------------------- */

static const char *str_field(json_object *o, const char *key, size_t *len)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len)
        *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

/* A boolean field: absent is false, another type is an error (-1). */
static int bool_field(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return -1;
    return json_object_get_boolean(v) ? 1 : 0;
}

/* An integer field in [lo, hi]; absent or null gives `dflt`. Returns false when malformed. */
static bool int_field(json_object *o, const char *key, int64_t lo, int64_t hi, int64_t dflt,
                      int64_t *out)
{
    json_object *v;
    *out = dflt;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
        return true;
    if (!json_object_is_type(v, json_type_int))
        return false;
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (errno || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

/* Copies a short identifier-like string from the service (context id, language, cwd). */
static bool copy_short(json_object *o, const char *key, char *dst, size_t cap)
{
    size_t n;
    const char *v = str_field(o, key, &n);
    if (!v || n >= cap || memchr(v, '\0', n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20)
            return false;
    memcpy(dst, v, n + 1);
    return true;
}

/* A failure answer as the call's error. */
static int failure(struct call *c, json_object *o, const char *what)
{
    const char *code = str_field(o, "code", NULL);
    size_t n = 0;
    const char *msg = str_field(o, "message", &n);
    char m[512];
    size_t k = 0;
    for (size_t i = 0; msg && i < n && k + 1 < sizeof(m); i++)
        m[k++] = (msg[i] >= 0x20 && msg[i] != 0x7f) || (msg[i] & 0x80) ? msg[i] : '?';
    m[k] = '\0';
    int r = SBX_EPROTO;
    if (code && strcmp(code, "invalid") == 0)
        r = SBX_EINVAL;
    else if (code && strcmp(code, "not_found") == 0)
        r = SBX_ENOENT;
    else if (code && strcmp(code, "busy") == 0)
        r = SBX_EBUSY;
    else if (code && strcmp(code, "internal") == 0)
        r = SBX_EIO;
    return call_fail(c, r, "%s: the interpreter service refused: %s", what, k ? m : "no message");
}

/* The answer's type, failures turned into errors, anything but `want` into SBX_EPROTO. */
static int expect(struct call *c, json_object *o, const char *want, const char *what)
{
    const char *t = str_field(o, "type", NULL);
    if (t && strcmp(t, "failure") == 0)
        return failure(c, o, what);
    if (!t || strcmp(t, want) != 0)
        return call_fail(c, SBX_EPROTO, "%s: the interpreter service answered %.32s, not %s", what,
                         t ? t : "without a type", want);
    return 0;
}

/* --- results --------------------------------------------------------------------------------- */

static void result_clear(sbx_code_result *r)
{
    for (unsigned i = 0; i < r->nformats; i++) {
        free(r->mime[i]);
        free(r->data[i]);
    }
    free(r->mime);
    free(r->data);
    memset(r, 0, sizeof(*r));
}

static bool mime_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 127 || !strchr(k, '/'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (k[i] <= 0x20 || k[i] >= 0x7f)
            return false;
    return true;
}

/* Builds a result from a "result" answer. Returns 0, SBX_EPROTO (message in why) or
   SBX_ENOMEM. */
static int parse_result(json_object *o, sbx_code_result *r, char *why, size_t wlen)
{
    memset(r, 0, sizeof(*r));
    int main = bool_field(o, "is_main_result");
    json_object *data;
    if (main < 0 || !json_object_object_get_ex(o, "data", &data) ||
        !json_object_is_type(data, json_type_object)) {
        snprintf(why, wlen, "a result without a data object");
        return SBX_EPROTO;
    }
    size_t n = (size_t)json_object_object_length(data);
    if (n > MAX_FORMATS) {
        snprintf(why, wlen, "a result in %zu formats (at most %u)", n, MAX_FORMATS);
        return SBX_EPROTO;
    }
    r->is_main_result = main;
    r->mime = calloc(n ? n : 1, sizeof(char *));
    r->data = calloc(n ? n : 1, sizeof(char *));
    if (!r->mime || !r->data) {
        result_clear(r);
        return SBX_ENOMEM;
    }
    json_object_object_foreach(data, key, val)
    {
        if (!mime_ok(key)) {
            snprintf(why, wlen, "a result format that is not a MIME type");
            result_clear(r);
            return SBX_EPROTO;
        }
        const char *txt;
        size_t len;
        if (strcmp(key, "application/json") == 0)
            txt = json_object_to_json_string_length(val, JSON_C_TO_STRING_PLAIN, &len);
        else if (json_object_is_type(val, json_type_string)) {
            txt = json_object_get_string(val);
            len = (size_t)json_object_get_string_len(val);
        } else {
            snprintf(why, wlen, "result format %.127s is not a string", key);
            result_clear(r);
            return SBX_EPROTO;
        }
        unsigned i = r->nformats;
        r->mime[i] = strdup(key);
        r->data[i] = txt ? strndup(txt, len) : NULL;
        r->nformats++;
        if (!r->mime[i] || !r->data[i]) {
            result_clear(r);
            return SBX_ENOMEM;
        }
    }
    return 0;
}

const char *sbx_code_result_get(const sbx_code_result *r, const char *mime)
{
    if (!r || !mime)
        return NULL;
    for (unsigned i = 0; i < r->nformats; i++)
        if (strcmp(r->mime[i], mime) == 0)
            return r->data[i];
    return NULL;
}

static void error_free(sbx_code_error *e)
{
    if (!e)
        return;
    free(e->name);
    free(e->value);
    free(e->traceback);
    free(e);
}

void sbx_execution_free(sbx_execution *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->nresults; i++)
        result_clear(&e->results[i]);
    free(e->results);
    free(e->out);
    free(e->err);
    error_free(e->error);
    memset(e, 0, sizeof(*e));
    e->exit_code = -1;
}

/* --- requests -------------------------------------------------------------------------------- */

static bool id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= sizeof(((sbx_code_context *)0)->id))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return false;
    return true;
}

static bool language_ok(const char *l)
{
    return strcmp(l, "python") == 0 || strcmp(l, "javascript") == 0 || strcmp(l, "bash") == 0;
}

/* Whether s is well-formed UTF-8 (the service decodes the request as UTF-8). */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t k;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xe0) == 0xc0) {
            k = 1, cp = b & 0x1f, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            k = 2, cp = b & 0x0f, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            k = 3, cp = b & 0x07, min = 0x10000;
        } else
            return false;
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* The API checks of a string argument that goes into a request. */
static int check_text(struct sbx *sb, const char *s, size_t max, const char *what)
{
    size_t n = strlen(s);
    if (n > max)
        return sbx_seterr(sb, SBX_EINVAL, "%s is %zu bytes, more than %zu", what, n, max);
    if (!utf8_ok((const unsigned char *)s, n))
        return sbx_seterr(sb, SBX_EINVAL, "%s is not valid UTF-8", what);
    return 0;
}

static int add_str(struct sbx *sb, json_object *o, const char *key, const char *val)
{
    json_object *v = json_object_new_string(val);
    if (!v || json_object_object_add(o, key, v) != 0) {
        json_object_put(v);
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    }
    return 0;
}

/* One unary request: connect, send, receive the one answer of type `want`. */
static int control(struct sbx *sb, json_object *req, const char *want, json_object **answer,
                   const char *what)
{
    struct call c;
    int r = call_begin(sb, &c, CTL_TIMEOUT_MS);
    if (r)
        return r;
    struct svc s;
    json_object *o = NULL;
    if ((r = svc_open(&c, &s, what)) == 0 && (r = svc_send(&s, req, what)) == 0 &&
        (r = svc_recv(&s, &o, what)) == 0)
        r = expect(&c, o, want, what);
    svc_close(&s);
    call_end(&c);
    if (r == 0 && answer)
        *answer = o;
    else
        json_object_put(o);
    return r;
}

/* A request naming a context (restart, remove, interrupt). */
static int context_op(sbx *sb, const char *op, const char *context, const char *what)
{
    if (!sb)
        return SBX_EINVAL;
    if (!id_ok(context))
        return sbx_seterr(sb, SBX_EINVAL,
                          "%s: context must be a context id (1..63 of "
                          "[A-Za-z0-9._-])",
                          what);
    json_object *req = json_object_new_object();
    int r = req ? 0 : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r == 0 && (r = add_str(sb, req, "op", op)) == 0 &&
        (r = add_str(sb, req, "context", context)) == 0)
        r = control(sb, req, "ok", NULL, what);
    json_object_put(req);
    return r;
}

int sbx_code_interrupt(sbx *sb, const char *context)
{
    return context_op(sb, "interrupt", context, "sbx_code_interrupt");
}

int sbx_code_context_restart(sbx *sb, const char *context)
{
    return context_op(sb, "restart_context", context, "sbx_code_context_restart");
}

int sbx_code_context_remove(sbx *sb, const char *context)
{
    return context_op(sb, "remove_context", context, "sbx_code_context_remove");
}

/* Fills a context from its description in an answer. */
static bool parse_context(json_object *o, sbx_code_context *out)
{
    memset(out, 0, sizeof(*out));
    return copy_short(o, "id", out->id, sizeof(out->id)) && id_ok(out->id) &&
           copy_short(o, "language", out->language, sizeof(out->language)) &&
           language_ok(out->language) && copy_short(o, "cwd", out->cwd, sizeof(out->cwd));
}

int sbx_code_context_create(sbx *sb, const char *language, const char *cwd, sbx_code_context *out)
{
    static const char what[] = "sbx_code_context_create";
    if (!sb)
        return SBX_EINVAL;
    if (out)
        memset(out, 0, sizeof(*out));
    if (language && !language_ok(language))
        return sbx_seterr(sb, SBX_EINVAL,
                          "%s: language must be \"python\", \"javascript\" or \"bash\"", what);
    int r = 0;
    if (cwd && ((r = check_text(sb, cwd, sizeof(out->cwd) - 1, "cwd")) || !*cwd))
        return r ? r : sbx_seterr(sb, SBX_EINVAL, "%s: cwd is empty", what);
    json_object *req = json_object_new_object(), *ans = NULL;
    r = req ? 0 : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (r == 0)
        r = add_str(sb, req, "op", "create_context");
    if (r == 0)
        r = add_str(sb, req, "language", language ? language : "python");
    if (r == 0 && cwd)
        r = add_str(sb, req, "cwd", cwd);
    if (r == 0)
        r = control(sb, req, "context", &ans, what);
    sbx_code_context ctx;
    if (r == 0 && !parse_context(ans, &ctx))
        r = sbx_seterr(sb, SBX_EPROTO,
                       "%s: the interpreter service described the context "
                       "badly",
                       what);
    if (r == 0 && out)
        *out = ctx;
    json_object_put(ans);
    json_object_put(req);
    return r;
}

int sbx_code_context_list(sbx *sb, sbx_code_context **list, size_t *n)
{
    static const char what[] = "sbx_code_context_list";
    if (!sb)
        return SBX_EINVAL;
    if (!list || !n)
        return sbx_seterr(sb, SBX_EINVAL, "%s: list and n must not be NULL", what);
    *list = NULL;
    *n = 0;
    json_object *req = json_object_new_object(), *ans = NULL, *arr;
    int r = req ? add_str(sb, req, "op", "list_contexts") : sbx_seterr(sb, SBX_ENOMEM, "oom");
    if (r == 0)
        r = control(sb, req, "contexts", &ans, what);
    json_object_put(req);
    if (r)
        return r;
    size_t k = 0;
    if (!json_object_object_get_ex(ans, "contexts", &arr) ||
        !json_object_is_type(arr, json_type_array) ||
        (k = json_object_array_length(arr)) > MAX_CONTEXTS)
        r = sbx_seterr(sb, SBX_EPROTO, "%s: the interpreter service sent a bad list", what);
    sbx_code_context *l = r ? NULL : calloc(k ? k : 1, sizeof(*l));
    if (r == 0 && !l)
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (size_t i = 0; r == 0 && i < k; i++) {
        json_object *e = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(e, json_type_object) || !parse_context(e, &l[i]))
            r = sbx_seterr(sb, SBX_EPROTO,
                           "%s: the interpreter service described context %zu "
                           "badly",
                           what, i);
    }
    json_object_put(ans);
    if (r) {
        free(l);
        return r;
    }
    *list = l;
    *n = k;
    return 0;
}

/* --- executions ------------------------------------------------------------------------------ */

/* Appends output to a capture buffer, up to CAPTURE_MAX. */
static int capture(char **buf, size_t *len, const char *p, size_t n)
{
    if (*len >= CAPTURE_MAX)
        return 0;
    if (n > CAPTURE_MAX - *len)
        n = CAPTURE_MAX - *len;
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return SBX_ENOMEM;
    memcpy(nb + *len, p, n);
    *len += n;
    nb[*len] = '\0';
    *buf = nb;
    return 0;
}

/* Adds "KEY=VALUE" (envs[i] of the options) to the request's envs object. */
static int add_env(struct sbx *sb, json_object *envs, const char *kv, size_t i)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv || (size_t)(eq - kv) > 255)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_run_code: envs[%zu] is not KEY=VALUE", i);
    int r = check_text(sb, kv, 1u << 20, "an env");
    if (r)
        return r;
    char *k = strndup(kv, (size_t)(eq - kv));
    r = k ? add_str(sb, envs, k, eq + 1) : sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    free(k);
    return r;
}

/* Builds the execute request from the options. */
static int execute_request(struct sbx *sb, const sbx_run_code_options *o, json_object **out)
{
    static const char what[] = "sbx_run_code";
    *out = NULL;
    if (!o->code)
        return sbx_seterr(sb, SBX_EINVAL, "%s: no code", what);
    int r = check_text(sb, o->code, CODE_MAX_BYTES, "code");
    if (r)
        return r;
    if (o->context && !id_ok(o->context))
        return sbx_seterr(sb, SBX_EINVAL,
                          "%s: context must be a context id (1..63 of [A-Za-z0-9._-])", what);
    if (o->language && !language_ok(o->language))
        return sbx_seterr(sb, SBX_EINVAL,
                          "%s: language must be \"python\", \"javascript\" or \"bash\"", what);
    json_object *req = json_object_new_object(), *envs = json_object_new_object();
    if (!req || !envs || json_object_object_add(req, "envs", envs) != 0) {
        json_object_put(envs);
        json_object_put(req);
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    }
    /* The sandbox's envs first (the service was started before the sandbox existed, so it
       does not have them), then the call's, which win. */
    char idenv[64];
    snprintf(idenv, sizeof(idenv), "SBX_SANDBOX_ID=%s", sb->id);
    r = add_env(sb, envs, idenv, 0);
    for (size_t i = 0; r == 0 && sb->envs && sb->envs[i]; i++)
        r = add_env(sb, envs, sb->envs[i], i);
    for (size_t i = 0; r == 0 && o->envs && o->envs[i]; i++) {
        if (i >= 1024)
            r = sbx_seterr(sb, SBX_EINVAL, "%s: more than 1024 envs", what);
        else
            r = add_env(sb, envs, o->envs[i], i);
    }
    unsigned t = o->timeout_ms ? o->timeout_ms : DEFAULT_CODE_MS;
    json_object *tv = json_object_new_int64(t == SBX_NO_TIMEOUT ? 0 : t);
    if (r == 0 && (!tv || json_object_object_add(req, "timeout_ms", tv) != 0)) {
        json_object_put(tv);
        r = sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    } else if (r)
        json_object_put(tv);
    if (r == 0)
        r = add_str(sb, req, "op", "execute");
    if (r == 0)
        r = add_str(sb, req, "code", o->code);
    if (r == 0 && o->context)
        r = add_str(sb, req, "context", o->context);
    if (r == 0 && o->language)
        r = add_str(sb, req, "language", o->language);
    if (r)
        json_object_put(req);
    else
        *out = req;
    return r;
}

/* Handles one answer of an execution. Returns 0 to go on, 1 at the end, or an error. */
static int on_answer(struct call *c, const sbx_run_code_options *o, json_object *a,
                     sbx_execution *ex)
{
    static const char what[] = "sbx_run_code";
    const char *t = str_field(a, "type", NULL);
    if (!t)
        return call_fail(c, SBX_EPROTO,
                         "%s: the interpreter service sent an answer without "
                         "a type",
                         what);
    bool out = strcmp(t, "stdout") == 0;
    if (out || strcmp(t, "stderr") == 0) {
        size_t n;
        const char *txt = str_field(a, "text", &n);
        if (!txt)
            return call_fail(c, SBX_EPROTO, "%s: output without text", what);
        if (o->on_output && o->on_output(o->ctx, out ? SBX_STDOUT : SBX_STDERR, txt, n))
            return call_fail(c, SBX_EINTR, "%s: stopped by the output callback", what);
        if (capture(out ? &ex->out : &ex->err, out ? &ex->out_len : &ex->err_len, txt, n))
            return call_fail(c, SBX_ENOMEM, "out of memory");
        return 0;
    }
    if (strcmp(t, "result") == 0) {
        sbx_code_result res;
        char why[200];
        int r = parse_result(a, &res, why, sizeof(why));
        if (r == SBX_ENOMEM)
            return call_fail(c, r, "out of memory");
        if (r)
            return call_fail(c, r, "%s: the interpreter service sent %s", what, why);
        if (o->on_result && o->on_result(o->ctx, &res)) {
            result_clear(&res);
            return call_fail(c, SBX_EINTR, "%s: stopped by the result callback", what);
        }
        if (ex->nresults >= MAX_RESULTS) {
            result_clear(&res);
            return 0;
        }
        if (ex->nresults % 16 == 0) {
            sbx_code_result *nr = realloc(ex->results, (ex->nresults + 16) * sizeof(*nr));
            if (!nr) {
                result_clear(&res);
                return call_fail(c, SBX_ENOMEM, "out of memory");
            }
            ex->results = nr;
        }
        ex->results[ex->nresults++] = res;
        return 0;
    }
    if (strcmp(t, "error") == 0) {
        size_t nn, nv, nt;
        const char *name = str_field(a, "name", &nn), *value = str_field(a, "value", &nv);
        const char *tb = str_field(a, "traceback", &nt);
        if (!name || !value || !tb)
            return call_fail(c, SBX_EPROTO, "%s: an error without name, value and traceback", what);
        sbx_code_error *e = calloc(1, sizeof(*e));
        if (e) {
            e->name = strndup(name, nn > 4096 ? 4096 : nn);
            e->value = strndup(value, nv > CAPTURE_MAX ? CAPTURE_MAX : nv);
            e->traceback = strndup(tb, nt > CAPTURE_MAX ? CAPTURE_MAX : nt);
        }
        if (!e || !e->name || !e->value || !e->traceback) {
            error_free(e);
            return call_fail(c, SBX_ENOMEM, "out of memory");
        }
        error_free(ex->error); /* the last one counts */
        ex->error = e;
        return 0;
    }
    if (strcmp(t, "end") == 0) {
        int64_t count, code;
        int intr = bool_field(a, "interrupted"), tout = bool_field(a, "timed_out");
        int rest = bool_field(a, "restarted");
        if (!copy_short(a, "context", ex->context, sizeof(ex->context)) || !id_ok(ex->context) ||
            !int_field(a, "execution_count", 0, UINT32_MAX, 0, &count) ||
            !int_field(a, "exit_code", -1, 255, -1, &code) || intr < 0 || tout < 0 || rest < 0)
            return call_fail(c, SBX_EPROTO, "%s: the interpreter service sent a malformed end",
                             what);
        ex->execution_count = (unsigned)count;
        ex->exit_code = (int)code;
        ex->interrupted = intr;
        ex->timed_out = tout;
        ex->restarted = rest;
        return 1;
    }
    if (strcmp(t, "failure") == 0)
        return failure(c, a, what);
    return call_fail(c, SBX_EPROTO, "%s: the interpreter service sent an unknown answer %.32s",
                     what, t);
}

/* Reads an execution's answers up to its end. */
static int read_execution(struct svc *s, const sbx_run_code_options *o, sbx_execution *ex)
{
    int r = 0;
    while (r == 0) {
        json_object *a;
        if ((r = svc_recv(s, &a, "sbx_run_code")) == 0) {
            r = on_answer(s->c, o, a, ex);
            json_object_put(a);
        }
    }
    return r == 1 ? 0 : r;
}

int sbx_run_code(sbx *sb, const sbx_run_code_options *o, sbx_execution *ex)
{
    static const char what[] = "sbx_run_code";
    if (ex) {
        memset(ex, 0, sizeof(*ex));
        ex->exit_code = -1;
    }
    if (!sb)
        return SBX_EINVAL;
    if (!o || !ex)
        return sbx_seterr(sb, SBX_EINVAL, "%s: options and execution must not be NULL", what);
    if (o->version < 1 || o->version > SBX_RUN_CODE_OPTIONS_VERSION)
        return sbx_seterr(sb, SBX_EINVAL, "%s: options version %u is not 1..%u", what, o->version,
                          SBX_RUN_CODE_OPTIONS_VERSION);
    json_object *req;
    int r = execute_request(sb, o, &req);
    if (r)
        return r;
    unsigned t = o->timeout_ms ? o->timeout_ms : DEFAULT_CODE_MS;
    unsigned limit = t >= SBX_NO_TIMEOUT - ANSWER_GRACE_MS ? SBX_NO_TIMEOUT : t + ANSWER_GRACE_MS;
    struct call c;
    if ((r = call_begin(sb, &c, limit))) {
        json_object_put(req);
        return r;
    }
    struct svc s;
    if ((r = svc_open(&c, &s, what)) == 0)
        r = svc_send(&s, req, what);
    json_object_put(req);
    if (r == 0)
        r = read_execution(&s, o, ex);
    /* Closing the connection before the end interrupts the code (the service's rule). */
    svc_close(&s);
    call_end(&c);
    return r;
}

int code_read_execution(struct call *c, int fd, const sbx_run_code_options *o, sbx_execution *ex)
{
    struct svc s = {.c = c, .fd = fd};
    memset(ex, 0, sizeof(*ex));
    ex->exit_code = -1;
    int r = read_execution(&s, o, ex);
    s.fd = -1; /* the caller's */
    svc_close(&s);
    return r;
}
