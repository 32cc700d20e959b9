// SPDX-License-Identifier: Apache-2.0
/* Parser for the Dockerfile subset that defines templates (see dockerfile.h). */
#include "template/dockerfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How Docker's rules map onto this file (so that a file behaves as it does with docker build):
 *   - physical lines -> logical lines: read_line/main loop (Docker's parser.Parse);
 *   - "--flag" words at the start of the arguments: parse_flags (extractBuilderFlags); every
 *     instruction has them, so "CMD --help" is an unknown flag there as here;
 *   - splitting arguments into words: next_word (parseWords: quotes and '\' keep blanks in a
 *     word, the word itself is kept raw);
 *   - a raw word -> its value: expand (shlex's ProcessWord: quotes removed, escapes, $-forms);
 *   - exec forms: parse_exec (parseMaybeJSON: only a valid JSON array is exec form).
 * Nothing here does I/O or keeps state outside the struct ctx of one call.
 */

#define MAX_DEPTH 32 /* nesting of ${...:-${...}} and of JSON values */
#define MAX_FLAGS 8

/* ---- growable strings and string lists ---- */

struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_addc(struct sbuf *b, char c)
{
    sb_add(b, &c, 1);
}

static void sb_adds(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_free(struct sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* The string built so far ("" when nothing was added), or NULL when out of memory; b is reset
   either way. */
static char *sb_take(struct sbuf *b)
{
    if (!b->oom && !b->p)
        sb_add(b, "", 0);
    if (b->oom) {
        sb_free(b);
        return NULL;
    }
    char *p = b->p;
    memset(b, 0, sizeof(*b));
    return p;
}

struct slist {
    char **v; /* NULL-terminated once anything was pushed (or sl_terminate) */
    size_t n, cap;
};

/* Makes l a valid (empty) NULL-terminated list when nothing was pushed. */
static int sl_terminate(struct slist *l)
{
    if (l->v)
        return 0;
    if (!(l->v = calloc(1, sizeof(*l->v))))
        return -1;
    l->cap = 1;
    return 0;
}

/* Takes ownership of s (freed on failure). */
static int sl_push(struct slist *l, char *s)
{
    if (!s)
        return -1;
    if (l->n + 2 > l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (!v) {
            free(s);
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    l->v[l->n] = NULL;
    return 0;
}

static void sl_free(struct slist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void dockerfile_free_list(char **l)
{
    if (!l)
        return;
    for (char **p = l; *p; p++)
        free(*p);
    free(l);
}

/* ---- characters ---- */

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_name_char(char c)
{
    return is_alpha(c) || is_digit(c) || c == '_';
}

static char to_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (to_upper(*s) != to_upper(*prefix))
            return 0;
    return 1;
}

/* ---- parser state ---- */

struct var {
    char *name;
    char *env;        /* value set by ENV, NULL when none */
    char *arg;        /* value of the ARG in scope, NULL when none (or not declared) */
    unsigned env_seq; /* order of the first ENV of this name (1, 2, ...), 0 before */
};

struct build_arg {
    const char *name; /* points into the caller's string */
    size_t nlen;
    const char *value;
    int used;
};

struct ctx {
    char *err;
    size_t errlen;
    int failed;
    unsigned line; /* of the instruction being parsed, 0 outside one */
    struct dockerfile *df;
    size_t steps_cap;
    int after_from;
    /* post-FROM ENV/ARG names and the pre-FROM ("meta") ARGs, which only FROM sees */
    struct var vars[DOCKERFILE_MAX_NAMES], meta[DOCKERFILE_MAX_NAMES];
    size_t nvars, nmeta;
    struct build_arg *bargs;
    size_t nbargs;
    size_t expanded; /* bytes produced by substitution so far (DOCKERFILE_MAX_EXPAND) */
    int start_from;  /* what set start_cmd: 0 nothing, 1 CMD, 2 LABEL sbx.start */
    unsigned nenv;   /* names set by ENV so far */
};

static int fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct ctx *c, const char *fmt, ...)
{
    if (!c->failed && c->err && c->errlen) {
        int k = c->line ? snprintf(c->err, c->errlen, "line %u: ", c->line) : 0;
        if (k >= 0 && (size_t)k < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    if (!c->failed)
        errno = EINVAL;
    c->failed = 1;
    return -1;
}

static int oom(struct ctx *c)
{
    if (!c->failed && c->err && c->errlen)
        snprintf(c->err, c->errlen, "out of memory");
    if (!c->failed)
        errno = ENOMEM;
    c->failed = 1;
    return -1;
}

/* A copy of s[0..n) fit for an error message: at most 40 bytes, control bytes as '?'. */
static const char *shown(char *buf, size_t bufsz, const char *s, size_t n)
{
    size_t k = 0;
    for (; k < n && k + 4 < bufsz && k < 40; k++)
        buf[k] = (unsigned char)s[k] < 0x20 || s[k] == 0x7f ? '?' : s[k];
    if (k < n && k + 4 <= bufsz) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = 0;
    return buf;
}

static int check_oom(struct ctx *c, struct sbuf *b)
{
    return b->oom ? oom(c) : 0;
}

/* ---- words and variable substitution ---- */

/* The next word of s[*i..n) as Docker's parseWords splits: blanks end it except inside quotes
   or after '\'. The raw word (quotes and escapes kept) is s[*ws..*we). Returns 0 at the end. */
static int next_word(const char *s, size_t n, size_t *i, size_t *ws, size_t *we)
{
    size_t k = *i;
    while (k < n && is_blank(s[k]))
        k++;
    if (k >= n) {
        *i = k;
        return 0;
    }
    *ws = k;
    char quote = 0;
    while (k < n) {
        char ch = s[k];
        if (!quote && is_blank(ch))
            break;
        if (quote && ch == quote)
            quote = 0;
        else if (!quote && (ch == '"' || ch == '\''))
            quote = ch;
        else if (ch == '\\' && quote != '\'' && k + 1 < n)
            k++;
        k++;
    }
    *we = k;
    *i = k;
    return 1;
}

static struct var *find_var(struct var *tab, size_t n, const char *name, size_t nlen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(tab[i].name) == nlen && memcmp(tab[i].name, name, nlen) == 0)
            return &tab[i];
    return NULL;
}

/* The value of a variable for substitution: ENV wins over ARG; before FROM only the pre-FROM
   ARGs exist. NULL when unset. */
static const char *lookup(struct ctx *c, const char *name, size_t nlen)
{
    if (!c->after_from) {
        struct var *v = find_var(c->meta, c->nmeta, name, nlen);
        return v ? v->arg : NULL;
    }
    struct var *v = find_var(c->vars, c->nvars, name, nlen);
    if (!v)
        return NULL;
    return v->env ? v->env : v->arg;
}

/* Everything substitution produces goes through here, so that the total stays bounded even
   for "$A$A$A..." with a large A or words that are produced and then dropped. */
static int emit(struct ctx *c, struct sbuf *out, const char *s, size_t n)
{
    if (n > DOCKERFILE_MAX_EXPAND - c->expanded)
        return fail(c, "variable substitution produces more than %u bytes", DOCKERFILE_MAX_EXPAND);
    c->expanded += n;
    sb_add(out, s, n);
    return check_oom(c, out);
}

static int expand(struct ctx *c, const char *s, size_t n, size_t *i, char stop, int depth,
                  struct sbuf *out);

/* s[*i] == '$': $NAME, ${NAME}, ${NAME<op>word} with op one of :- - :+ + :? ?. A '$' not
   followed by a name or '{' is kept literally. */
static int expand_dollar(struct ctx *c, const char *s, size_t n, size_t *i, int depth,
                         struct sbuf *out)
{
    char shownbuf[48];
    size_t start = *i;
    (*i)++;
    if (*i >= n || (s[*i] != '{' && !is_alpha(s[*i]) && s[*i] != '_'))
        return emit(c, out, "$", 1);
    if (s[*i] != '{') {
        size_t ns = *i;
        while (*i < n && is_name_char(s[*i]))
            (*i)++;
        const char *v = lookup(c, s + ns, *i - ns);
        return v ? emit(c, out, v, strlen(v)) : 0;
    }
    (*i)++;
    size_t ns = *i;
    while (*i < n && is_name_char(s[*i]))
        (*i)++;
    size_t nlen = *i - ns;
    if (*i >= n)
        return fail(c, "missing '}' in %s",
                    shown(shownbuf, sizeof(shownbuf), s + start, n - start));
    if (nlen == 0)
        return fail(c, "bad substitution %s",
                    shown(shownbuf, sizeof(shownbuf), s + start, n - start));
    const char *v = lookup(c, s + ns, nlen);
    if (s[*i] == '}') {
        (*i)++;
        return v ? emit(c, out, v, strlen(v)) : 0;
    }
    int colon = s[*i] == ':';
    if (colon)
        (*i)++;
    char op = *i < n ? s[*i] : 0;
    if (op != '-' && op != '+' && op != '?')
        return fail(c,
                    "unsupported substitution %s (supported: ${NAME}, ${NAME:-word}, "
                    "${NAME:+word}, ${NAME:?message} and the forms without ':')",
                    shown(shownbuf, sizeof(shownbuf), s + start, n - start));
    (*i)++;
    if (depth >= MAX_DEPTH)
        return fail(c, "variable substitution nested more than %d deep", MAX_DEPTH);
    struct sbuf word = {0};
    if (expand(c, s, n, i, '}', depth + 1, &word) != 0) {
        sb_free(&word);
        return -1;
    }
    int set = v != NULL, empty = !v || !*v, rc = 0;
    /* With ':' an empty value counts as unset, as in the shell. */
    int unset = colon ? (!set || empty) : !set;
    if (op == '-')
        rc = unset ? emit(c, out, word.p ? word.p : "", word.n) : emit(c, out, v, strlen(v));
    else if (op == '+')
        rc = unset ? 0 : emit(c, out, word.p ? word.p : "", word.n);
    else if (unset)
        rc = fail(c, "%.*s: %s", (int)nlen, s + ns,
                  word.n ? shown(shownbuf, sizeof(shownbuf), word.p, word.n) : "is not set");
    else
        rc = emit(c, out, v, strlen(v));
    sb_free(&word);
    return rc;
}

/* Docker's word processing of s[*i..n) up to an unquoted `stop` (consumed) or the end (stop
   0): '...' literal, "..." with $-forms and \" \$ \\ escapes, '\' outside quotes escapes any
   character (a final one is dropped). */
static int expand(struct ctx *c, const char *s, size_t n, size_t *i, char stop, int depth,
                  struct sbuf *out)
{
    while (*i < n) {
        char ch = s[*i];
        if (stop && ch == stop) {
            (*i)++;
            return 0;
        }
        if (ch == '\'') {
            const char *q = memchr(s + *i + 1, '\'', n - *i - 1);
            if (!q)
                return fail(c, "unterminated single quote");
            size_t qs = *i + 1, qn = (size_t)(q - s) - qs;
            *i = (size_t)(q - s) + 1;
            if (emit(c, out, s + qs, qn) != 0)
                return -1;
        } else if (ch == '"') {
            (*i)++;
            for (;;) {
                if (*i >= n)
                    return fail(c, "unterminated double quote");
                ch = s[*i];
                if (ch == '"') {
                    (*i)++;
                    break;
                }
                if (ch == '$') {
                    if (expand_dollar(c, s, n, i, depth, out) != 0)
                        return -1;
                    continue;
                }
                if (ch == '\\' && *i + 1 < n &&
                    (s[*i + 1] == '"' || s[*i + 1] == '$' || s[*i + 1] == '\\'))
                    (*i)++;
                if (emit(c, out, s + *i, 1) != 0)
                    return -1;
                (*i)++;
            }
        } else if (ch == '$') {
            if (expand_dollar(c, s, n, i, depth, out) != 0)
                return -1;
        } else {
            if (ch == '\\') {
                (*i)++;
                if (*i >= n)
                    break;
            }
            if (emit(c, out, s + *i, 1) != 0)
                return -1;
            (*i)++;
        }
    }
    if (stop)
        return fail(c, "missing '}' in variable substitution");
    return 0;
}

/* The value of the raw word s[0..n), malloc'ed; NULL after an error (reported). */
static char *expand_word(struct ctx *c, const char *s, size_t n)
{
    struct sbuf out = {0};
    size_t i = 0;
    if (expand(c, s, n, &i, 0, 0, &out) != 0) {
        sb_free(&out);
        return NULL;
    }
    char *r = sb_take(&out);
    if (!r)
        oom(c);
    return r;
}

/* ---- canonical text ---- */

static int word_is_safe(const char *s, const char *extra)
{
    if (!*s || (s[0] == '-' && s[1] == '-'))
        return 0;
    for (; *s; s++)
        if (!is_name_char(*s) && !strchr(extra, *s))
            return 0;
    return 1;
}

/* A word that expand() turns back into s: bare when safe, else double-quoted. */
static void add_word(struct sbuf *b, const char *s)
{
    if (word_is_safe(s, "@%+=:,./-~^")) {
        sb_adds(b, s);
        return;
    }
    sb_addc(b, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\' || *s == '$')
            sb_addc(b, '\\');
        sb_addc(b, *s);
    }
    sb_addc(b, '"');
}

/* A word /bin/sh reads back as s (no '=' bare, so a first word is never an assignment). */
static void add_shell_word(struct sbuf *b, const char *s)
{
    if (word_is_safe(s, "@%+:,./-")) {
        sb_adds(b, s);
        return;
    }
    sb_addc(b, '\'');
    for (; *s; s++) {
        if (*s == '\'')
            sb_adds(b, "'\\''");
        else
            sb_addc(b, *s);
    }
    sb_addc(b, '\'');
}

static void add_json_string(struct sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sb_addc(b, '"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            sb_addc(b, '\\');
            sb_addc(b, (char)ch);
        } else if (ch == '\n') {
            sb_adds(b, "\\n");
        } else if (ch == '\t') {
            sb_adds(b, "\\t");
        } else if (ch == '\r') {
            sb_adds(b, "\\r");
        } else if (ch < 0x20) {
            char u[7] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15], 0};
            sb_adds(b, u);
        } else {
            sb_addc(b, (char)ch);
        }
    }
    sb_addc(b, '"');
}

/* ---- JSON exec form ---- */

static size_t json_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

static int hex4(const char *s, size_t n, size_t i, unsigned *v)
{
    if (i + 4 > n)
        return -1;
    *v = 0;
    for (size_t k = i; k < i + 4; k++) {
        char ch = s[k];
        unsigned d = is_digit(ch)               ? (unsigned)(ch - '0')
                     : (ch >= 'a' && ch <= 'f') ? (unsigned)(ch - 'a' + 10)
                     : (ch >= 'A' && ch <= 'F') ? (unsigned)(ch - 'A' + 10)
                                                : 16u;
        if (d > 15)
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

static void add_utf8(struct sbuf *b, unsigned cp)
{
    char u[4];
    size_t k;
    if (cp < 0x80) {
        u[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | cp >> 6);
        u[1] = (char)(0x80 | (cp & 0x3f));
        k = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | cp >> 12);
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        k = 3;
    } else {
        u[0] = (char)(0xf0 | cp >> 18);
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        k = 4;
    }
    sb_add(b, u, k);
}

/* A JSON string at s[*i] == '"' into out (when not NULL). Returns 0, or -1 when it is not
   valid JSON. *nul is set when it holds \u0000 (valid JSON, but no C string can hold it). Lone
   surrogates become U+FFFD, as Go's decoder (Docker's) does. */
static int json_string(const char *s, size_t n, size_t *i, struct sbuf *out, int *nul)
{
    size_t k = *i + 1;
    for (;;) {
        if (k >= n)
            return -1;
        unsigned char ch = (unsigned char)s[k];
        if (ch == '"')
            break;
        if (ch < 0x20)
            return -1;
        if (ch != '\\') {
            if (out)
                sb_addc(out, (char)ch);
            k++;
            continue;
        }
        if (k + 1 >= n)
            return -1;
        char e = s[k + 1];
        k += 2;
        static const char esc[] = "\"\\/bfnrt", map[] = "\"\\/\b\f\n\r\t";
        const char *simple = e ? strchr(esc, e) : NULL;
        if (simple) {
            if (out)
                sb_addc(out, map[simple - esc]);
            continue;
        }
        unsigned cp;
        if (e != 'u' || hex4(s, n, k, &cp) != 0)
            return -1;
        k += 4;
        if (cp >= 0xd800 && cp < 0xdc00) {
            unsigned lo;
            if (k + 1 < n && s[k] == '\\' && s[k + 1] == 'u' && hex4(s, n, k + 2, &lo) == 0 &&
                lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                k += 6;
            } else {
                cp = 0xfffd;
            }
        } else if (cp >= 0xdc00 && cp < 0xe000) {
            cp = 0xfffd;
        }
        if (cp == 0)
            *nul = 1;
        else if (out)
            add_utf8(out, cp);
    }
    *i = k + 1;
    return 0;
}

static int json_value(const char *s, size_t n, size_t *i, int depth, int *nul);

static int json_number(const char *s, size_t n, size_t *i)
{
    size_t k = *i;
    if (k < n && s[k] == '-')
        k++;
    if (k < n && s[k] == '0')
        k++;
    else if (k < n && is_digit(s[k]))
        while (k < n && is_digit(s[k]))
            k++;
    else
        return -1;
    if (k < n && s[k] == '.') {
        k++;
        if (k >= n || !is_digit(s[k]))
            return -1;
        while (k < n && is_digit(s[k]))
            k++;
    }
    if (k < n && (s[k] == 'e' || s[k] == 'E')) {
        k++;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= n || !is_digit(s[k]))
            return -1;
        while (k < n && is_digit(s[k]))
            k++;
    }
    *i = k;
    return 0;
}

/* Skips one JSON value of any kind (only to tell a valid JSON array of non-strings, which
   Docker refuses, from shell syntax that happens to start with '['). */
static int json_value(const char *s, size_t n, size_t *i, int depth, int *nul)
{
    if (depth > MAX_DEPTH || *i >= n)
        return -1;
    char ch = s[*i];
    if (ch == '"')
        return json_string(s, n, i, NULL, nul);
    if (ch == '[' || ch == '{') {
        char close = ch == '[' ? ']' : '}';
        size_t k = json_ws(s, n, *i + 1);
        if (k < n && s[k] == close) {
            *i = k + 1;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                if (k >= n || s[k] != '"' || json_string(s, n, &k, NULL, nul) != 0)
                    return -1;
                k = json_ws(s, n, k);
                if (k >= n || s[k] != ':')
                    return -1;
                k = json_ws(s, n, k + 1);
            }
            if (json_value(s, n, &k, depth + 1, nul) != 0)
                return -1;
            k = json_ws(s, n, k);
            if (k < n && s[k] == ',') {
                k = json_ws(s, n, k + 1);
                continue;
            }
            if (k < n && s[k] == close) {
                *i = k + 1;
                return 0;
            }
            return -1;
        }
    }
    static const char *const lits[] = {"true", "false", "null"};
    for (size_t l = 0; l < 3; l++) {
        size_t ln = strlen(lits[l]);
        if (n - *i >= ln && memcmp(s + *i, lits[l], ln) == 0) {
            *i += ln;
            return 0;
        }
    }
    return json_number(s, n, i);
}

/* s[0..n) as a JSON array of strings (Docker's exec form). Returns 1 with *out filled (may be
   empty), 0 when s is not a JSON array at all (the caller takes it as shell form), -1 after an
   error (reported). */
static int parse_exec(struct ctx *c, const char *s, size_t n, const char *instr, struct slist *out)
{
    if (n == 0 || s[0] != '[')
        return 0;
    int nul = 0, nonstring = 0;
    size_t k = json_ws(s, n, 1);
    struct sbuf b = {0};
    if (k < n && s[k] == ']') {
        k++;
    } else {
        for (;;) {
            if (k < n && s[k] == '"') {
                if (json_string(s, n, &k, &b, &nul) != 0)
                    goto not_json;
                if (sl_push(out, sb_take(&b)) != 0) {
                    sl_free(out);
                    return oom(c);
                }
            } else {
                if (json_value(s, n, &k, 1, &nul) != 0)
                    goto not_json;
                nonstring = 1;
            }
            k = json_ws(s, n, k);
            if (k < n && s[k] == ',') {
                k = json_ws(s, n, k + 1);
                continue;
            }
            if (k < n && s[k] == ']') {
                k++;
                break;
            }
            goto not_json;
        }
    }
    if (json_ws(s, n, k) != n)
        goto not_json;
    if (nonstring || nul) {
        sl_free(out);
        return fail(c,
                    nonstring ? "%s: a JSON array must hold only strings"
                              : "%s: \\u0000 in a JSON string",
                    instr);
    }
    return 1;
not_json:
    sb_free(&b);
    sl_free(out);
    return 0;
}

/* Docker's heredoc syntax (<<EOF, <<-EOF, 2<<"EOF" as a word of its own): the lines after
   the instruction would be taken as instructions, so refuse it with a clear message. */
static int is_heredoc(const char *w, size_t n)
{
    size_t k = 0;
    while (k < n && is_digit(w[k]))
        k++;
    if (n - k < 3 || w[k] != '<' || w[k + 1] != '<')
        return 0;
    k += 2;
    if (w[k] == '-')
        k++;
    return k < n && !memchr(w + k, '<', n - k);
}

static int check_heredoc(struct ctx *c, const char *s, size_t n, const char *instr)
{
    size_t i = 0, ws, we;
    while (next_word(s, n, &i, &ws, &we))
        if (is_heredoc(s + ws, we - ws))
            return fail(c,
                        "%s: heredocs (<<EOF) are not supported; use RUN with a quoted "
                        "string or COPY a file",
                        instr);
    return 0;
}

/* ---- paths ---- */

/* Appends the cleaned form of p (segments "", "." and ".." resolved) as "/seg/seg" to out,
   which holds an absolute prefix ("" for the root, or e.g. "/srv", no trailing '/'). ".."
   never removes the first `floor` bytes of out: there it sets *above and stays. */
static void clean_into(struct sbuf *out, const char *p, size_t floor, int *above)
{
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e && *e != '/')
            e++;
        size_t sn = (size_t)(e - p);
        if (sn == 0 || (sn == 1 && p[0] == '.')) {
            /* nothing */
        } else if (sn == 2 && p[0] == '.' && p[1] == '.') {
            if (out->n <= floor) {
                *above = 1;
            } else {
                while (out->n > floor && out->p[out->n - 1] != '/')
                    out->n--;
                if (out->n > floor)
                    out->n--; /* the '/' */
                out->p[out->n] = 0;
            }
        } else {
            sb_addc(out, '/');
            sb_add(out, p, sn);
        }
        p = e;
    }
}

/* p resolved against the absolute directory base (NULL: "/"), normalised, malloc'ed. With
   keep_slash, a '/' is appended when p names a directory by its form ("x/", ".", ".."). */
static char *resolve_path(struct ctx *c, const char *base, const char *p, int keep_slash)
{
    struct sbuf out = {0};
    int above = 0;
    sb_add(&out, "", 0);
    if (p[0] != '/' && base)
        clean_into(&out, base, 0, &above);
    clean_into(&out, p, 0, &above);
    size_t pl = strlen(p);
    int dir = pl && (p[pl - 1] == '/' || strcmp(p, ".") == 0 || strcmp(p, "..") == 0 ||
                     (pl >= 2 && strcmp(p + pl - 2, "/.") == 0) ||
                     (pl >= 3 && strcmp(p + pl - 3, "/..") == 0));
    if (out.n == 0 || (keep_slash && dir))
        sb_addc(&out, '/');
    char *r = sb_take(&out);
    if (!r)
        oom(c);
    return r;
}

/* A COPY/ADD source relative to the context root: "." for the root itself. */
static char *context_path(struct ctx *c, const char *p, const char *instr)
{
    char shownbuf[48];
    struct sbuf out = {0};
    int above = 0;
    sb_add(&out, "", 0);
    clean_into(&out, p, 0, &above);
    if (above) {
        sb_free(&out);
        fail(c, "%s source %s is outside the build context", instr,
             shown(shownbuf, sizeof(shownbuf), p, strlen(p)));
        return NULL;
    }
    if (out.oom) {
        sb_free(&out);
        oom(c);
        return NULL;
    }
    if (out.n == 0) {
        sb_free(&out);
        char *r = strdup(".");
        if (!r)
            oom(c);
        return r;
    }
    /* drop the leading '/' clean_into writes */
    memmove(out.p, out.p + 1, out.n--);
    char *r = sb_take(&out);
    if (!r)
        oom(c);
    return r;
}

/* ---- steps ---- */

static struct df_step *new_step(struct ctx *c, enum df_op op)
{
    struct dockerfile *df = c->df;
    /* One line of ENV/ARG/LABEL pairs makes many steps: bounded apart from instructions. */
    if (df->nsteps >= DOCKERFILE_MAX_STEPS) {
        fail(c, "more than %u steps (each ENV/ARG/LABEL pair is one)", DOCKERFILE_MAX_STEPS);
        return NULL;
    }
    if (df->nsteps == c->steps_cap) {
        size_t cap = c->steps_cap ? c->steps_cap * 2 : 16;
        struct df_step *s = realloc(df->steps, cap * sizeof(*s));
        if (!s) {
            oom(c);
            return NULL;
        }
        df->steps = s;
        c->steps_cap = cap;
    }
    struct df_step *st = &df->steps[df->nsteps++];
    memset(st, 0, sizeof(*st));
    st->op = op;
    st->line = c->line;
    return st;
}

static int set_text(struct ctx *c, struct df_step *st, struct sbuf *t)
{
    st->text = sb_take(t);
    return st->text ? 0 : oom(c);
}

static int dup_into(struct ctx *c, char **dst, const char *s)
{
    *dst = s ? strdup(s) : NULL;
    return s && !*dst ? oom(c) : 0;
}

/* ---- flags ---- */

struct flag {
    const char *name, *val; /* val: raw, may be NULL (a flag without '=') */
    size_t nlen, vlen;
};

/* Leading "--name[=value]" words of *args (Docker parses them for every instruction); "--"
   ends them. *args and *n are advanced past them. */
static int parse_flags(struct ctx *c, const char **args, size_t *n, struct flag *f, size_t *nf,
                       const char *instr)
{
    const char *s = *args;
    size_t len = *n, i = 0, ws, we;
    *nf = 0;
    for (;;) {
        size_t save = i;
        if (!next_word(s, len, &i, &ws, &we) || we - ws < 2 || s[ws] != '-' || s[ws + 1] != '-') {
            i = save;
            break;
        }
        if (we - ws == 2)
            break; /* "--" */
        if (*nf == MAX_FLAGS)
            return fail(c, "%s: too many flags", instr);
        struct flag *fl = &f[(*nf)++];
        fl->name = s + ws + 2;
        const char *eq = memchr(fl->name, '=', we - ws - 2);
        fl->nlen = eq ? (size_t)(eq - fl->name) : we - ws - 2;
        fl->val = eq ? eq + 1 : NULL;
        fl->vlen = eq ? (size_t)(s + we - (eq + 1)) : 0;
    }
    while (i < len && is_blank(s[i]))
        i++;
    *args = s + i;
    *n = len - i;
    return 0;
}

static int flag_is(const struct flag *f, const char *name)
{
    return f->nlen == strlen(name) && memcmp(f->name, name, f->nlen) == 0;
}

static int no_flags(struct ctx *c, const struct flag *f, size_t nf, const char *instr)
{
    char shownbuf[48];
    if (nf)
        return fail(c, "%s --%s is not supported", instr,
                    shown(shownbuf, sizeof(shownbuf), f[0].name, f[0].nlen));
    return 0;
}

/* ---- values ---- */

/* user[:group]: both parts non-empty, no blanks or control characters. */
static int check_user(struct ctx *c, const char *u, const char *what)
{
    char shownbuf[48];
    const char *colon = strchr(u, ':');
    int bad = !*u || colon == u || (colon && (!colon[1] || strchr(colon + 1, ':')));
    for (const char *p = u; *p && !bad; p++)
        bad = (unsigned char)*p <= ' ' || *p == 0x7f;
    if (bad)
        return fail(c, "%s: bad user %s (expected user[:group])", what,
                    shown(shownbuf, sizeof(shownbuf), u, strlen(u)));
    return 0;
}

/* An ENV/ARG/LABEL name: non-empty, no '=', blanks or control characters. */
static int check_name(struct ctx *c, const char *k, const char *instr)
{
    char shownbuf[48];
    int bad = !*k;
    for (const char *p = k; *p && !bad; p++)
        bad = (unsigned char)*p <= ' ' || *p == '=' || *p == 0x7f;
    if (bad)
        return fail(c, *k ? "%s: bad name %s" : "%s: empty name%s", instr,
                    shown(shownbuf, sizeof(shownbuf), k, strlen(k)));
    return 0;
}

static struct var *var_get(struct ctx *c, int meta, const char *name)
{
    struct var *tab = meta ? c->meta : c->vars;
    size_t *n = meta ? &c->nmeta : &c->nvars;
    struct var *v = find_var(tab, *n, name, strlen(name));
    if (v)
        return v;
    if (c->nmeta + c->nvars >= DOCKERFILE_MAX_NAMES) {
        fail(c, "more than %d ENV/ARG names", DOCKERFILE_MAX_NAMES);
        return NULL;
    }
    v = &tab[*n];
    memset(v, 0, sizeof(*v));
    if (!(v->name = strdup(name))) {
        oom(c);
        return NULL;
    }
    (*n)++;
    return v;
}

/* Replaces *slot with a copy of s (NULL allowed). */
static int replace(struct ctx *c, char **slot, const char *s)
{
    char *d = NULL;
    if (s && !(d = strdup(s)))
        return oom(c);
    free(*slot);
    *slot = d;
    return 0;
}

/* ---- instructions ---- */

struct pair {
    char *key, *value; /* expanded; value NULL for "ARG NAME" */
};

static void free_pairs(struct pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].key);
        free(p[i].value);
    }
    free(p);
}

/*
 * ENV/LABEL (legacy "NAME value" when the first word has no '=', else NAME=value words) and
 * ARG (NAME or NAME=value words), as Docker's parseNameVal / parseNameOrNameVal. The raw words
 * are split at their first '=' and both sides expanded against the state before the line.
 */
static int parse_pairs(struct ctx *c, const char *s, size_t n, const char *instr, int is_arg,
                       struct pair **out, size_t *nout)
{
    char shownbuf[48];
    size_t i = 0, ws, we, cap = 0;
    struct pair *p = NULL;
    *out = NULL;
    *nout = 0;
    if (!next_word(s, n, &i, &ws, &we))
        return fail(c, is_arg ? "%s needs a name" : "%s needs a name and a value", instr);
    int legacy = !is_arg && !memchr(s + ws, '=', we - ws);
    i = 0;
    for (;;) {
        const char *ks, *vs = NULL;
        size_t kn, vn = 0;
        if (legacy) {
            /* Docker splits this form at the first blank, quotes or not. */
            size_t k = 0;
            while (k < n && !is_blank(s[k]))
                k++;
            ks = s;
            kn = k;
            while (k < n && is_blank(s[k]))
                k++;
            if (k >= n)
                return fail(c, "%s needs a value (%s NAME VALUE or %s NAME=VALUE)", instr, instr,
                            instr);
            vs = s + k;
            vn = n - k;
        } else {
            if (!next_word(s, n, &i, &ws, &we))
                break;
            ks = s + ws;
            const char *eq = memchr(ks, '=', we - ws);
            if (!eq && !is_arg) {
                free_pairs(p, *nout);
                return fail(c, "%s: no '=' in %s (expected NAME=VALUE)", instr,
                            shown(shownbuf, sizeof(shownbuf), ks, we - ws));
            }
            kn = eq ? (size_t)(eq - ks) : we - ws;
            if (eq) {
                vs = eq + 1;
                vn = (size_t)(s + we - vs);
            }
        }
        if (*nout == cap) {
            cap = cap ? cap * 2 : 4;
            struct pair *np = realloc(p, cap * sizeof(*np));
            if (!np) {
                free_pairs(p, *nout);
                return oom(c);
            }
            p = np;
        }
        struct pair *pp = &p[(*nout)++];
        pp->value = NULL;
        if (!(pp->key = expand_word(c, ks, kn)) || check_name(c, pp->key, instr) != 0 ||
            (vs && !(pp->value = expand_word(c, vs, vn)))) {
            free_pairs(p, *nout);
            return -1;
        }
        if (legacy)
            break;
    }
    *out = p;
    return 0;
}

static int do_from(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (c->after_from)
        return fail(c, "multi-stage builds are not supported (a second FROM)");
    if (no_flags(c, f, nf, "FROM") != 0)
        return -1;
    size_t i = 0, ws[3], we[3], k = 0, a, b;
    while (k < 3 && next_word(s, n, &i, &ws[k], &we[k]))
        k++;
    if (k == 3 && we[1] - ws[1] == 2 && has_prefix_ci(s + ws[1], "as") &&
        !next_word(s, n, &i, &a, &b))
        return fail(c, "multi-stage builds are not supported (FROM ... AS name)");
    if (k != 1)
        return fail(c, k ? "FROM takes one argument: base, a template name or an image path"
                         : "FROM needs an argument: base, a template name or an image path");
    char *from = expand_word(c, s + ws[0], we[0] - ws[0]);
    if (!from)
        return -1;
    if (!*from) {
        free(from);
        return fail(c, "FROM is empty after variable substitution");
    }
    c->df->from = from;
    c->after_from = 1;
    return 0;
}

static int do_arg(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (no_flags(c, f, nf, "ARG") != 0)
        return -1;
    struct pair *p;
    size_t np;
    if (parse_pairs(c, s, n, "ARG", 1, &p, &np) != 0)
        return -1;
    int rc = 0;
    for (size_t k = 0; k < np && rc == 0; k++) {
        const char *val = p[k].value;
        for (size_t b = 0; b < c->nbargs; b++) {
            struct build_arg *ba = &c->bargs[b];
            if (ba->nlen == strlen(p[k].key) && memcmp(ba->name, p[k].key, ba->nlen) == 0) {
                ba->used = 1;
                val = ba->value;
            }
        }
        struct var *v = var_get(c, !c->after_from, p[k].key);
        if (!v) {
            rc = -1;
            break;
        }
        /* Without a value of its own an ARG keeps the one it had: after FROM that is how a
           pre-FROM ARG is brought into the build, as in Docker. */
        if (!val && !v->arg && c->after_from) {
            struct var *m = find_var(c->meta, c->nmeta, p[k].key, strlen(p[k].key));
            val = m ? m->arg : NULL;
        }
        if (!val)
            val = v->arg;
        if (val != v->arg && (rc = replace(c, &v->arg, val)) != 0)
            break;
        if (!c->after_from)
            continue;
        struct df_step *st = new_step(c, DF_ARG);
        struct sbuf t = {0};
        if (!st || dup_into(c, &st->key, p[k].key) != 0 || dup_into(c, &st->value, v->arg) != 0) {
            rc = -1;
            break;
        }
        sb_adds(&t, "ARG ");
        add_word(&t, st->key);
        if (st->value) {
            sb_addc(&t, '=');
            add_word(&t, st->value);
        }
        rc = set_text(c, st, &t);
    }
    free_pairs(p, np);
    return rc;
}

static int do_env(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (no_flags(c, f, nf, "ENV") != 0)
        return -1;
    struct pair *p;
    size_t np;
    if (parse_pairs(c, s, n, "ENV", 0, &p, &np) != 0)
        return -1;
    int rc = 0;
    for (size_t k = 0; k < np && rc == 0; k++) {
        struct var *v = var_get(c, 0, p[k].key);
        struct df_step *st = v ? new_step(c, DF_ENV) : NULL;
        struct sbuf t = {0};
        if (v && !v->env_seq)
            v->env_seq = ++c->nenv;
        if (!st || replace(c, &v->env, p[k].value) != 0 || dup_into(c, &st->key, p[k].key) != 0 ||
            dup_into(c, &st->value, p[k].value) != 0) {
            rc = -1;
            break;
        }
        sb_adds(&t, "ENV ");
        add_word(&t, st->key);
        sb_addc(&t, '=');
        add_word(&t, st->value);
        rc = set_text(c, st, &t);
    }
    free_pairs(p, np);
    return rc;
}

/* Takes ownership of cmd. */
static int set_start(struct ctx *c, char *cmd, int from_label)
{
    if (c->start_from) {
        free(cmd);
        if (c->start_from != from_label + 1)
            return fail(c, "both CMD and LABEL sbx.start (the start command is given once)");
        return fail(c, from_label ? "LABEL sbx.start given twice" : "CMD given twice");
    }
    c->df->start_cmd = cmd;
    c->df->start_line = c->line;
    c->start_from = from_label + 1;
    return 0;
}

static int parse_ready(struct ctx *c, const char *v)
{
    struct dockerfile *df = c->df;
    if (df->ready != DF_READY_NONE)
        return fail(c, "LABEL sbx.ready given twice");
    const char *arg;
    unsigned long num = 0;
    int digits = 0;
    if (!strncmp(v, "cmd:", 4) && v[4]) {
        df->ready = DF_READY_CMD;
        return dup_into(c, &df->ready_arg, v + 4);
    }
    if (!strncmp(v, "file:", 5) && v[5] == '/') {
        df->ready = DF_READY_FILE;
        return dup_into(c, &df->ready_arg, v + 5);
    }
    int port = !strncmp(v, "port:", 5), delay = !strncmp(v, "delay:", 6);
    if (port || delay) {
        arg = v + (port ? 5 : 6);
        for (; is_digit(*arg) && digits < 8; arg++, digits++)
            num = num * 10 + (unsigned long)(*arg - '0');
        if (digits && !*arg && port && num >= 1 && num <= 65535) {
            df->ready = DF_READY_PORT;
            df->ready_port = (unsigned)num;
            return 0;
        }
        if (digits && !*arg && delay && num <= DOCKERFILE_MAX_DELAY) {
            df->ready = DF_READY_DELAY;
            df->ready_ms = (unsigned)num;
            return 0;
        }
    }
    return fail(c,
                "LABEL sbx.ready must be cmd:<command>, port:<1-65535>, file:<absolute path> "
                "or delay:<0-%u ms>",
                DOCKERFILE_MAX_DELAY);
}

static int do_label(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    char shownbuf[48];
    if (no_flags(c, f, nf, "LABEL") != 0)
        return -1;
    struct pair *p;
    size_t np;
    if (parse_pairs(c, s, n, "LABEL", 0, &p, &np) != 0)
        return -1;
    int rc = 0;
    for (size_t k = 0; k < np && rc == 0; k++) {
        const char *key = p[k].key, *val = p[k].value;
        if (!strcmp(key, "sbx.start")) {
            if (!*val) {
                rc = fail(c, "LABEL sbx.start is empty");
                break;
            }
            p[k].value = NULL; /* set_start owns it now */
            rc = set_start(c, (char *)val, 1);
            continue;
        }
        if (!strcmp(key, "sbx.ready")) {
            rc = parse_ready(c, val);
            continue;
        }
        if (!strncmp(key, "sbx.", 4)) {
            rc = fail(c, "unknown label %s (known: sbx.start, sbx.ready)",
                      shown(shownbuf, sizeof(shownbuf), key, strlen(key)));
            break;
        }
        struct df_step *st = new_step(c, DF_LABEL);
        struct sbuf t = {0};
        if (!st || dup_into(c, &st->key, key) != 0 || dup_into(c, &st->value, val) != 0) {
            rc = -1;
            break;
        }
        sb_adds(&t, "LABEL ");
        add_word(&t, key);
        sb_addc(&t, '=');
        add_word(&t, val);
        rc = set_text(c, st, &t);
    }
    free_pairs(p, np);
    return rc;
}

/* The rest of the line as one word (WORKDIR, USER), expanded; NULL after an error. */
static char *single_value(struct ctx *c, const char *s, size_t n, const char *instr)
{
    if (n == 0) {
        fail(c, "%s needs an argument", instr);
        return NULL;
    }
    char *v = expand_word(c, s, n);
    if (v && !*v) {
        free(v);
        fail(c, "%s is empty after variable substitution", instr);
        return NULL;
    }
    return v;
}

static int do_workdir(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (no_flags(c, f, nf, "WORKDIR") != 0)
        return -1;
    char *v = single_value(c, s, n, "WORKDIR");
    if (!v)
        return -1;
    char *path = resolve_path(c, c->df->workdir, v, 0);
    free(v);
    struct df_step *st = path ? new_step(c, DF_WORKDIR) : NULL;
    if (!st) {
        free(path);
        return -1;
    }
    st->path = path;
    struct sbuf t = {0};
    sb_adds(&t, "WORKDIR ");
    add_word(&t, path);
    if (set_text(c, st, &t) != 0)
        return -1;
    return replace(c, &c->df->workdir, path);
}

static int do_user(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (no_flags(c, f, nf, "USER") != 0)
        return -1;
    char *v = single_value(c, s, n, "USER");
    if (!v)
        return -1;
    struct df_step *st = NULL;
    if (check_user(c, v, "USER") != 0 || !(st = new_step(c, DF_USER))) {
        free(v);
        return -1;
    }
    st->user = v;
    struct sbuf t = {0};
    sb_adds(&t, "USER ");
    add_word(&t, v);
    if (set_text(c, st, &t) != 0)
        return -1;
    return replace(c, &c->df->user, v);
}

/* RUN and CMD: exec form (*argv, non-empty) or shell form (*cmd, the text as written). */
static int command(struct ctx *c, const char *s, size_t n, const char *instr, char **cmd,
                   struct slist *argv)
{
    *cmd = NULL;
    memset(argv, 0, sizeof(*argv));
    if (n == 0)
        return fail(c, "%s needs a command", instr);
    int r = parse_exec(c, s, n, instr, argv);
    if (r < 0)
        return -1;
    if (r == 1) {
        if (argv->n == 0) {
            sl_free(argv);
            return fail(c, "%s []: the exec form needs a program", instr);
        }
        return 0;
    }
    if (check_heredoc(c, s, n, instr) != 0)
        return -1;
    if (!(*cmd = strndup(s, n)))
        return oom(c);
    return 0;
}

static int do_run(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (no_flags(c, f, nf, "RUN") != 0)
        return -1;
    char *cmd;
    struct slist argv;
    if (command(c, s, n, "RUN", &cmd, &argv) != 0)
        return -1;
    struct df_step *st = new_step(c, DF_RUN);
    if (!st) {
        free(cmd);
        sl_free(&argv);
        return -1;
    }
    st->cmd = cmd;
    st->argv = argv.v;
    struct sbuf t = {0};
    sb_adds(&t, "RUN ");
    if (cmd) {
        if (cmd[0] == '-' && cmd[1] == '-')
            sb_adds(&t, "-- "); /* it came after "--": keep it from reading as a flag */
        sb_adds(&t, cmd);
    } else {
        sb_addc(&t, '[');
        for (size_t k = 0; k < argv.n; k++) {
            if (k)
                sb_adds(&t, ", ");
            add_json_string(&t, argv.v[k]);
        }
        sb_addc(&t, ']');
    }
    return set_text(c, st, &t);
}

static int do_cmd(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf)
{
    if (no_flags(c, f, nf, "CMD") != 0)
        return -1;
    char *cmd;
    struct slist argv;
    if (command(c, s, n, "CMD", &cmd, &argv) != 0)
        return -1;
    if (!cmd) {
        /* The exec form runs as a command line of words the shell reads back unchanged. */
        struct sbuf b = {0};
        for (size_t k = 0; k < argv.n; k++) {
            if (k)
                sb_addc(&b, ' ');
            add_shell_word(&b, argv.v[k]);
        }
        sl_free(&argv);
        if (!(cmd = sb_take(&b)))
            return oom(c);
    }
    return set_start(c, cmd, 0);
}

/* scheme://... or git@host:path, which Docker's ADD fetches. */
static int is_url(const char *s)
{
    if (!strncmp(s, "git@", 4))
        return 1;
    if (!is_alpha(*s))
        return 0;
    while (is_alpha(*s) || is_digit(*s) || *s == '+' || *s == '.' || *s == '-')
        s++;
    return !strncmp(s, "://", 3);
}

static int do_copy(struct ctx *c, const char *s, size_t n, const struct flag *f, size_t nf, int add)
{
    char shownbuf[48];
    const char *instr = add ? "ADD" : "COPY";
    const struct flag *chown = NULL, *chmod = NULL;
    for (size_t k = 0; k < nf; k++) {
        const struct flag *fl = &f[k];
        const struct flag **slot = flag_is(fl, "chown")   ? &chown
                                   : flag_is(fl, "chmod") ? &chmod
                                                          : NULL;
        if (flag_is(fl, "from"))
            return fail(c, "multi-stage builds are not supported (%s --from)", instr);
        if (!slot)
            return no_flags(c, fl, 1, instr);
        if (*slot)
            return fail(c, "%s: --%.*s given twice", instr, (int)fl->nlen, fl->name);
        if (!fl->val || !fl->vlen)
            return fail(c, "%s: --%.*s needs a value", instr, (int)fl->nlen, fl->name);
        *slot = fl;
    }
    if (n == 0)
        return fail(c, "%s needs a source and a destination", instr);

    /* The words, raw: from the JSON form or split at blanks. */
    struct slist raw = {0}, words = {0};
    int r = parse_exec(c, s, n, instr, &raw);
    if (r < 0)
        return -1;
    if (r == 0) {
        size_t i = 0, ws, we;
        while (next_word(s, n, &i, &ws, &we)) {
            if (is_heredoc(s + ws, we - ws)) {
                sl_free(&raw);
                return fail(c, "%s: heredocs (<<EOF) are not supported; COPY a file", instr);
            }
            if (sl_push(&raw, strndup(s + ws, we - ws)) != 0) {
                sl_free(&raw);
                return oom(c);
            }
        }
    }
    for (size_t k = 0; k < raw.n; k++) {
        char *w = expand_word(c, raw.v[k], strlen(raw.v[k]));
        if (!w || sl_push(&words, w) != 0) {
            sl_free(&raw);
            sl_free(&words);
            return w ? oom(c) : -1;
        }
    }
    sl_free(&raw);
    if (words.n < 2) {
        sl_free(&words);
        return fail(c, "%s needs a source and a destination", instr);
    }

    struct df_step *st = new_step(c, add ? DF_ADD : DF_COPY);
    if (!st) {
        sl_free(&words);
        return -1;
    }
    /* From here on the step owns what is put into it; dockerfile_free frees it. */
    size_t nsrcs = words.n - 1;
    const char *dst = words.v[nsrcs];
    int rc = 0;
    if (!(st->srcs = calloc(nsrcs + 1, sizeof(char *))))
        rc = oom(c);
    for (size_t k = 0; k < nsrcs && rc == 0; k++) {
        const char *w = words.v[k];
        if (!*w)
            rc = fail(c, "%s: empty source", instr);
        else if (is_url(w))
            rc = fail(c,
                      add ? "ADD from URLs is not supported; use RUN curl (%s)"
                          : "COPY does not take URLs (%s)",
                      shown(shownbuf, sizeof(shownbuf), w, strlen(w)));
        else if (!(st->srcs[k] = context_path(c, w, instr)))
            rc = -1;
        else
            st->nsrcs++;
    }
    if (rc == 0 && !*dst)
        rc = fail(c, "%s: empty destination", instr);
    if (rc == 0 && !(st->dst = resolve_path(c, c->df->workdir, dst, 1)))
        rc = -1;
    if (rc == 0 && nsrcs > 1 && st->dst[strlen(st->dst) - 1] != '/')
        rc = fail(c, "%s with several sources needs a destination ending in '/'", instr);
    if (rc == 0 && chown) {
        st->chown = expand_word(c, chown->val, chown->vlen);
        if (!st->chown || check_user(c, st->chown, add ? "ADD --chown" : "COPY --chown") != 0)
            rc = -1;
    }
    if (rc == 0 && chmod) {
        st->chmod = expand_word(c, chmod->val, chmod->vlen);
        if (!st->chmod) {
            rc = -1;
        } else {
            size_t len = strlen(st->chmod);
            unsigned long m = 0;
            int ok = len >= 1 && len <= 5;
            for (size_t k = 0; k < len && ok; k++) {
                ok = st->chmod[k] >= '0' && st->chmod[k] <= '7';
                m = m * 8 + (unsigned long)(st->chmod[k] - '0');
            }
            if (!ok || m > 07777)
                rc = fail(c, "%s: --chmod must be an octal mode (e.g. 0755)", instr);
            st->mode = (unsigned)(ok ? m : 0);
        }
    }
    sl_free(&words);
    if (rc != 0)
        return -1;
    struct sbuf t = {0};
    sb_adds(&t, instr);
    if (st->chown) {
        sb_adds(&t, " --chown=");
        add_word(&t, st->chown);
    }
    if (st->chmod) {
        sb_adds(&t, " --chmod=");
        add_word(&t, st->chmod);
    }
    for (size_t k = 0; k < st->nsrcs; k++) {
        sb_addc(&t, ' ');
        /* "/git@x" is a local file, but "git@x" would read back as a URL */
        if (is_url(st->srcs[k]))
            sb_adds(&t, "./");
        add_word(&t, st->srcs[k]);
    }
    sb_addc(&t, ' ');
    add_word(&t, st->dst);
    return set_text(c, st, &t);
}

static const struct {
    const char *name, *why;
} unsupported[] = {
    {"ENTRYPOINT", "set the start command with CMD or LABEL sbx.start"},
    {"EXPOSE", "every guest port is reachable without it: sbx_get_host() gives its address on "
               "the host"},
    {"VOLUME", "sandboxes have no volumes; COPY files in or write them at run time"},
    {"HEALTHCHECK", "use LABEL sbx.ready"},
    {"ONBUILD", NULL},
    {"STOPSIGNAL", NULL},
    {"SHELL", "RUN uses /bin/sh -c; for another shell use the exec form, RUN [\"bash\", \"-c\", "
              "\"...\"]"},
    {"MAINTAINER", "use LABEL maintainer=..."},
};

static int instruction(struct ctx *c, const char *s, size_t n)
{
    char shownbuf[48], name[16];
    size_t k = 0;
    while (k < n && !is_blank(s[k]))
        k++;
    size_t nlen = k;
    while (k < n && is_blank(s[k]))
        k++;
    const char *args = s + k;
    size_t alen = n - k;
    while (alen && is_blank(args[alen - 1]))
        alen--;

    int known = nlen < sizeof(name);
    for (size_t i = 0; i < nlen && known; i++)
        name[i] = to_upper(s[i]);
    if (known)
        name[nlen] = 0;
    static const char *const names[] = {"FROM", "RUN", "COPY",    "ADD",  "ENV",
                                        "ARG",  "CMD", "WORKDIR", "USER", "LABEL"};
    int which = -1;
    for (size_t i = 0; known && i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(name, names[i]))
            which = (int)i;
    if (which < 0) {
        for (size_t i = 0; known && i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
            if (!strcmp(name, unsupported[i].name))
                return unsupported[i].why
                           ? fail(c, "%s is not supported; %s", name, unsupported[i].why)
                           : fail(c, "%s is not supported", name);
        return fail(c, "unknown instruction %s", shown(shownbuf, sizeof(shownbuf), s, nlen));
    }
    if (!c->after_from && which != 0 && which != 5)
        return fail(c, "%s before FROM (only ARG may come before FROM)", name);

    struct flag f[MAX_FLAGS];
    size_t nf;
    if (parse_flags(c, &args, &alen, f, &nf, name) != 0)
        return -1;
    switch (which) {
    case 0:
        return do_from(c, args, alen, f, nf);
    case 1:
        return do_run(c, args, alen, f, nf);
    case 2:
        return do_copy(c, args, alen, f, nf, 0);
    case 3:
        return do_copy(c, args, alen, f, nf, 1);
    case 4:
        return do_env(c, args, alen, f, nf);
    case 5:
        return do_arg(c, args, alen, f, nf);
    case 6:
        return do_cmd(c, args, alen, f, nf);
    case 7:
        return do_workdir(c, args, alen, f, nf);
    case 8:
        return do_user(c, args, alen, f, nf);
    default:
        return do_label(c, args, alen, f, nf);
    }
}

/* ---- lines ---- */

struct reader {
    const char *p;
    size_t len, pos;
    unsigned lineno;
};

/* The next physical line without its '\n' (and a '\r' before it); 0 at the end. */
static int read_line(struct reader *r, const char **s, size_t *n)
{
    if (r->pos >= r->len)
        return 0;
    const char *start = r->p + r->pos;
    const char *nl = memchr(start, '\n', r->len - r->pos);
    size_t ln = nl ? (size_t)(nl - start) : r->len - r->pos;
    r->pos += ln + (nl ? 1 : 0);
    r->lineno++;
    if (ln && start[ln - 1] == '\r')
        ln--;
    *s = start;
    *n = ln;
    return 1;
}

static size_t lead_blanks(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && is_blank(s[k]))
        k++;
    return k;
}

/* Strips a continuation ('\' then only blanks) off the end of s[0..*n); 1 when there was one. */
static int continues(const char *s, size_t *n)
{
    size_t k = *n;
    while (k && (s[k - 1] == ' ' || s[k - 1] == '\t'))
        k--;
    if (k && s[k - 1] == '\\') {
        *n = k - 1;
        return 1;
    }
    return 0;
}

/* "# escape=x" (any case, blanks allowed) among the comments at the top of the file. */
static int is_escape_directive(const char *s, size_t n)
{
    size_t k = 1;
    k += lead_blanks(s + k, n - k);
    if (n - k < 6 || !has_prefix_ci(s + k, "escape"))
        return 0;
    k += 6;
    k += lead_blanks(s + k, n - k);
    return k < n && s[k] == '=';
}

static int is_directive(const char *s, size_t n)
{
    size_t k = 1;
    k += lead_blanks(s + k, n - k);
    size_t ks = k;
    while (k < n && (is_alpha(s[k]) || s[k] == '_'))
        k++;
    if (k == ks)
        return 0;
    k += lead_blanks(s + k, n - k);
    return k < n && s[k] == '=';
}

static int parse_lines(struct ctx *c, const char *text, size_t len)
{
    struct reader r = {.p = text, .len = len};
    const char *s;
    size_t n;
    int directives = 1;
    unsigned ninstr = 0;
    struct sbuf line = {0};
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        r.pos = 3;
    while (read_line(&r, &s, &n)) {
        size_t lb = lead_blanks(s, n);
        s += lb;
        n -= lb;
        if (n && s[0] == '#') {
            if (directives && is_escape_directive(s, n)) {
                c->line = r.lineno;
                return fail(c, "the escape parser directive is not supported (only '\\' "
                               "continues lines)");
            }
            directives = directives && is_directive(s, n);
            continue;
        }
        directives = 0;
        if (n == 0)
            continue;
        c->line = r.lineno;
        int more = continues(s, &n);
        line.n = 0;
        sb_add(&line, s, n);
        while (more && line.n <= DOCKERFILE_MAX_LINE && read_line(&r, &s, &n)) {
            size_t b = lead_blanks(s, n);
            if (b == n || s[b] == '#')
                continue; /* Docker skips these inside a continuation */
            more = continues(s, &n);
            sb_add(&line, s, n);
        }
        if (line.oom) {
            sb_free(&line);
            return oom(c);
        }
        if (line.n > DOCKERFILE_MAX_LINE) {
            sb_free(&line);
            return fail(c, "instruction longer than %u bytes", DOCKERFILE_MAX_LINE);
        }
        size_t lb2 = lead_blanks(line.p, line.n);
        if (lb2 == line.n)
            continue; /* e.g. a lone "\" */
        if (++ninstr > DOCKERFILE_MAX_INSTR) {
            sb_free(&line);
            return fail(c, "more than %d instructions", DOCKERFILE_MAX_INSTR);
        }
        if (instruction(c, line.p + lb2, line.n - lb2) != 0) {
            sb_free(&line);
            return -1;
        }
    }
    sb_free(&line);
    c->line = 0;
    return 0;
}

/* ---- results ---- */

static void free_step(struct df_step *st)
{
    free(st->text);
    free(st->cmd);
    dockerfile_free_list(st->argv);
    for (size_t k = 0; st->srcs && st->srcs[k]; k++)
        free(st->srcs[k]);
    free(st->srcs);
    free(st->dst);
    free(st->chown);
    free(st->chmod);
    free(st->key);
    free(st->value);
    free(st->path);
    free(st->user);
}

void dockerfile_free(struct dockerfile *df)
{
    if (!df)
        return;
    free(df->from);
    for (size_t i = 0; i < df->nsteps; i++)
        free_step(&df->steps[i]);
    free(df->steps);
    free(df->start_cmd);
    free(df->ready_arg);
    dockerfile_free_list(df->envs);
    free(df->workdir);
    free(df->user);
    free(df);
}

static char *key_value(const char *k, const char *v)
{
    size_t kn = strlen(k), vn = strlen(v);
    char *s = malloc(kn + vn + 2);
    if (s) {
        memcpy(s, k, kn);
        s[kn] = '=';
        memcpy(s + kn + 1, v, vn + 1);
    }
    return s;
}

static int build_args(struct ctx *c, const char *const *ba)
{
    char shownbuf[48];
    size_t n = 0;
    while (ba && ba[n])
        n++;
    if (n > DOCKERFILE_MAX_NAMES)
        return fail(c, "more than %d build args", DOCKERFILE_MAX_NAMES);
    if (n && !(c->bargs = calloc(n, sizeof(*c->bargs))))
        return oom(c);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(ba[i], '=');
        if (!eq || eq == ba[i])
            return fail(c, "build arg %s is not NAME=VALUE",
                        shown(shownbuf, sizeof(shownbuf), ba[i], strlen(ba[i])));
        struct build_arg *b = &c->bargs[i];
        b->name = ba[i];
        b->nlen = (size_t)(eq - ba[i]);
        b->value = eq + 1;
        for (size_t j = 0; j < i; j++)
            if (c->bargs[j].nlen == b->nlen && !memcmp(c->bargs[j].name, b->name, b->nlen))
                return fail(c, "build arg %s given twice",
                            shown(shownbuf, sizeof(shownbuf), b->name, b->nlen));
        c->nbargs++;
    }
    return 0;
}

static int finish(struct ctx *c)
{
    char shownbuf[48];
    struct dockerfile *df = c->df;
    if (!c->after_from)
        return fail(c, "no FROM instruction");
    for (size_t i = 0; i < c->nbargs; i++)
        if (!c->bargs[i].used)
            return fail(c, "build arg %s is not declared by any ARG",
                        shown(shownbuf, sizeof(shownbuf), c->bargs[i].name, c->bargs[i].nlen));
    struct slist envs = {0};
    if (sl_terminate(&envs) != 0)
        return oom(c);
    /* In the order of the first ENV of each name (at most 256: quadratic is fine). */
    for (unsigned seq = 1; seq <= c->nenv; seq++)
        for (size_t i = 0; i < c->nvars; i++)
            if (c->vars[i].env_seq == seq &&
                sl_push(&envs, key_value(c->vars[i].name, c->vars[i].env)) != 0) {
                sl_free(&envs);
                return oom(c);
            }
    df->envs = envs.v;
    return 0;
}

int dockerfile_parse(const char *text, size_t len, const char *const *build_args_list,
                     struct dockerfile **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = 0;
    if (out)
        *out = NULL;
    struct ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    c->err = err;
    c->errlen = errlen;
    int rc = -1;
    if (!out || (!text && len)) {
        fail(c, "no Dockerfile text or result pointer");
        goto done;
    }
    if (len > DOCKERFILE_MAX_SIZE) {
        fail(c, "the Dockerfile is larger than %u bytes", DOCKERFILE_MAX_SIZE);
        goto done;
    }
    const char *nul = len ? memchr(text, 0, len) : NULL;
    if (nul) {
        unsigned line = 1;
        for (const char *p = text; p < nul; p++)
            line += *p == '\n';
        c->line = line;
        fail(c, "NUL byte in the Dockerfile");
        goto done;
    }
    if (!(c->df = calloc(1, sizeof(*c->df)))) {
        oom(c);
        goto done;
    }
    if (build_args(c, build_args_list) != 0 || parse_lines(c, text, len) != 0 || finish(c) != 0)
        goto done;
    *out = c->df;
    c->df = NULL;
    rc = 0;
done:
    dockerfile_free(c->df);
    for (size_t i = 0; i < c->nvars; i++) {
        free(c->vars[i].name);
        free(c->vars[i].env);
        free(c->vars[i].arg);
    }
    for (size_t i = 0; i < c->nmeta; i++) {
        free(c->meta[i].name);
        free(c->meta[i].arg);
    }
    free(c->bargs);
    free(c);
    return rc;
}

char **dockerfile_step_env(const struct dockerfile *df, size_t i)
{
    /* Replays the ENV and ARG steps before i (each holds its value in effect). */
    struct ent {
        const char *key, *env, *arg;
    } *e = NULL;
    size_t ne = 0, cap = 0;
    struct slist out = {0};
    if (i > df->nsteps)
        i = df->nsteps;
    for (size_t k = 0; k < i; k++) {
        const struct df_step *st = &df->steps[k];
        if (st->op != DF_ENV && st->op != DF_ARG)
            continue;
        size_t j = 0;
        while (j < ne && strcmp(e[j].key, st->key))
            j++;
        if (j == ne) {
            if (ne == cap) {
                cap = cap ? cap * 2 : 16;
                struct ent *ne2 = realloc(e, cap * sizeof(*e));
                if (!ne2)
                    goto nomem;
                e = ne2;
            }
            e[ne++] = (struct ent){st->key, NULL, NULL};
        }
        if (st->op == DF_ENV)
            e[j].env = st->value;
        else
            e[j].arg = st->value;
    }
    if (sl_terminate(&out) != 0)
        goto nomem;
    for (size_t j = 0; j < ne; j++) {
        const char *v = e[j].env ? e[j].env : e[j].arg;
        if (v && sl_push(&out, key_value(e[j].key, v)) != 0)
            goto nomem;
    }
    free(e);
    return out.v;
nomem:
    free(e);
    sl_free(&out);
    return NULL;
}
