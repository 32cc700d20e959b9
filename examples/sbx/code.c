// SPDX-License-Identifier: Apache-2.0
/* sbx code: runs code in a sandbox of the code-interpreter template like a notebook cell:
   output streams here, results are printed (images and PDFs saved as files), and an
   exception's traceback goes to stderr. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sbx.h"

#define CODE_MAX (32u << 20) /* the most code one sbx_run_code() takes */

/* The formats a result is saved as, as files result-N.EXT. */
static const struct {
    const char *mime, *ext;
    int base64;
} saved_formats[] = {
    {"image/png", "png", 1},
    {"image/jpeg", "jpg", 1},
    {"image/svg+xml", "svg", 0},
    {"application/pdf", "pdf", 1},
};

struct code_out {
    const struct cli *a;
    int broken;      /* our stdout or stderr could not be written (a closed pipe) */
    int failed;      /* a result file could not be written (said why) */
    unsigned n;      /* results received */
    unsigned main_n; /* the number of the main result, 0: none yet */
};

/* Writes s and a newline unless it ends with one. */
static void out_line(struct code_out *o, int fd, const char *s)
{
    size_t len = strlen(s);
    if (write_all(fd, s, len) != 0 || ((len == 0 || s[len - 1] != '\n') && write_all(fd, "\n", 1)))
        o->broken = 1;
}

/* Decodes base64 in place (it only shrinks). Returns the length, or -1 when malformed. */
static long base64_decode(char *s)
{
    unsigned acc = 0;
    int bits = 0;
    long n = 0;
    for (const char *p = s; *p && *p != '='; p++) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *at = strchr(alphabet, *p);
        if (*p == '\n' || *p == '\r')
            continue;
        if (!at)
            return -1;
        acc = acc << 6 | (unsigned)(at - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            s[n++] = (char)(acc >> bits);
        }
    }
    return n;
}

/* Writes a whole file. Returns 0, or -1 with errno. */
static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int r = write_all(fd, data, len), e = errno;
    if (close(fd) != 0 && r == 0)
        return -1;
    errno = e;
    return r;
}

/* Saves the formats of result number n that are files; prints their paths. Returns how many
   it saved. */
static int save_files(struct code_out *o, const sbx_code_result *r, unsigned n)
{
    int saved = 0;
    for (size_t i = 0; i < sizeof(saved_formats) / sizeof(saved_formats[0]); i++) {
        const char *data = sbx_code_result_get(r, saved_formats[i].mime);
        if (!data)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s%sresult-%u.%s", o->a->out_dir ? o->a->out_dir : "",
                 o->a->out_dir ? "/" : "", n, saved_formats[i].ext);
        char *bytes = strdup(data);
        long len = !bytes                    ? -1
                   : saved_formats[i].base64 ? base64_decode(bytes)
                                             : (long)strlen(bytes);
        if (len < 0) {
            msg("result %u: %s", n, bytes ? "its data is not valid base64" : "out of memory");
            o->failed = 1;
        } else if (write_file(path, bytes, (size_t)len) != 0) {
            msg("cannot write %s: %s", path, strerror(errno));
            o->failed = 1;
        } else {
            out_line(o, 1, path);
            saved++;
        }
        free(bytes);
    }
    return saved;
}

/* A result as a notebook shows it: its files, else its text (else which format it has). */
static void show_result(struct code_out *o, const sbx_code_result *r, unsigned n)
{
    if (save_files(o, r, n))
        return;
    const char *text = sbx_code_result_get(r, "text/plain");
    char note[128];
    if (!text) {
        snprintf(note, sizeof(note), "[result %u: %s]", n, r->nformats ? r->mime[0] : "empty");
        text = note;
    }
    out_line(o, 1, text);
}

static int on_output(void *ctx, int stream, const void *data, size_t len)
{
    struct code_out *o = ctx;
    if (write_all(stream == SBX_STDERR ? 2 : 1, data, len) != 0)
        o->broken = 1;
    return o->broken; /* nobody reads the output any more: stop the code */
}

/* Results other than the main one are shown as they come; the main one last, like a
   notebook's Out[]. */
static int on_result(void *ctx, const sbx_code_result *r)
{
    struct code_out *o = ctx;
    o->n++;
    if (r->is_main_result)
        o->main_n = o->n;
    else
        show_result(o, r, o->n);
    return o->broken;
}

static void print_json(const sbx_execution *ex)
{
    fputs("{\"results\": [", stdout);
    for (size_t i = 0; i < ex->nresults; i++) {
        const sbx_code_result *r = &ex->results[i];
        printf("%s{\"is_main_result\": %s, \"data\": {", i ? ", " : "",
               r->is_main_result ? "true" : "false");
        for (unsigned k = 0; k < r->nformats; k++) {
            fputs(k ? ", " : "", stdout);
            json_str(stdout, r->mime[k]);
            fputs(": ", stdout);
            if (strcmp(r->mime[k], "application/json") == 0)
                fputs(r->data[k], stdout); /* JSON text already */
            else
                json_str(stdout, r->data[k]);
        }
        fputs("}}", stdout);
    }
    fputs("], \"stdout\": ", stdout);
    json_str(stdout, ex->out ? ex->out : "");
    fputs(", \"stderr\": ", stdout);
    json_str(stdout, ex->err ? ex->err : "");
    fputs(", \"error\": ", stdout);
    if (ex->error) {
        fputs("{\"name\": ", stdout);
        json_str(stdout, ex->error->name);
        fputs(", \"value\": ", stdout);
        json_str(stdout, ex->error->value);
        fputs(", \"traceback\": ", stdout);
        json_str(stdout, ex->error->traceback);
        fputs("}", stdout);
    } else {
        fputs("null", stdout);
    }
    printf(", \"execution_count\": %u, \"interrupted\": %s, \"timed_out\": %s, "
           "\"restarted\": %s, \"exit_code\": ",
           ex->execution_count, ex->interrupted ? "true" : "false",
           ex->timed_out ? "true" : "false", ex->restarted ? "true" : "false");
    if (ex->exit_code < 0)
        fputs("null", stdout);
    else
        printf("%d", ex->exit_code);
    fputs(", \"context\": ", stdout);
    json_str(stdout, ex->context);
    fputs("}\n", stdout);
}

/* Reads the code from FILE, or from stdin for `-` or no FILE. Returns 0 or EXIT_SBX. */
static int read_code(const struct cli *a, char **code)
{
    const char *file = a->nwords ? a->words[0] : "-";
    int stdin_code = strcmp(file, "-") == 0;
    if (!a->nwords && isatty(0))
        return usage_error(a, "no code given: sbx code FILE, or the code on stdin (sbx code - "
                              "reads it from the terminal until Ctrl-D)");
    int fd = stdin_code ? 0 : open(file, O_RDONLY | O_CLOEXEC);
    size_t len;
    int rc = fd < 0 ? -1 : read_all_fd(fd, CODE_MAX, code, &len);
    if (rc != 0)
        msg("cannot read the code from %s: %s", stdin_code ? "stdin" : file,
            errno == EFBIG ? "it is larger than 32 MiB" : strerror(errno));
    if (fd > 0)
        close(fd);
    return rc ? EXIT_SBX : 0;
}

/* The exit status for an execution that ran (see `sbx code --help`). */
static int code_status(const struct cli *a, const sbx_execution *ex)
{
    if (ex->restarted)
        msg("the code did not stop when asked: its interpreter was restarted (its state is lost)");
    if (ex->timed_out) {
        msg("the code did not finish within %g s: interrupted it", a->timeout_ms / 1000.0);
        return EXIT_TIMEOUT;
    }
    if (ex->error)
        return 1;
    return ex->exit_code >= 0 ? ex->exit_code : 0;
}

int cmd_code(struct cli *a)
{
    if (a->nwords > 1)
        return usage_error(a, "one FILE at most (or - for stdin), not '%s' and '%s'", a->words[0],
                           a->words[1]);
    if (!a->template_name)
        a->template_name = "code-interpreter";
    if (a->out_dir && access(a->out_dir, W_OK | X_OK) != 0) {
        msg("--out-dir %s: %s", a->out_dir, strerror(errno));
        return EXIT_SBX;
    }
    char *code;
    int rc = read_code(a, &code);
    if (rc)
        return rc;
    sbx *sb;
    if ((rc = sandbox_open(a, &sb)) != 0) {
        free(code);
        return rc;
    }
    signals_set_sandbox(sb);

    struct code_out out = {.a = a};
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = code;
    o.language = a->language;
    o.context = a->code_context;
    o.envs = a->nenvs ? a->envs : NULL;
    o.timeout_ms = a->timeout_ms;
    if (!a->json) {
        o.on_output = on_output;
        o.on_result = on_result;
        o.ctx = &out;
    }
    sbx_execution ex;
    double t0 = now_s();
    int status;
    rc = sbx_run_code(sb, &o, &ex);
    if (rc == 0) {
        if (a->json) {
            print_json(&ex);
        } else {
            for (size_t i = 0; i < ex.nresults; i++)
                if (ex.results[i].is_main_result)
                    show_result(&out, &ex.results[i], out.main_n);
            if (ex.error && ex.error->traceback[0])
                out_line(&out, 2, ex.error->traceback);
            else if (ex.error)
                fprintf(stderr, "%s: %s\n", ex.error->name, ex.error->value);
        }
        status = out.broken ? 128 + SIGPIPE : out.failed ? EXIT_SBX : code_status(a, &ex);
        if (a->verbose)
            msg("execution %u in context %s took %.2f s", ex.execution_count, ex.context,
                now_s() - t0);
    } else if (out.broken) {
        status = 128 + SIGPIPE; /* like a shell pipeline's writer */
    } else if (signals_pending()) {
        msg("interrupted: stopped the code and the sandbox");
        status = 128 + signals_pending();
    } else {
        status = lib_error(sb, rc, "cannot run the code");
    }
    sbx_execution_free(&ex);
    free(code);
    return sandbox_finish(a, sb, status, 0);
}
