// SPDX-License-Identifier: Apache-2.0
/* sbx run and sbx resume: get a sandbox (booted, from a template, or resumed), copy in, run one
   command with streamed output, copy out, and destroy, snapshot or pause the sandbox. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sbx.h"

struct out_ctx {
    int broken; /* our stdout or stderr could not be written (a closed pipe) */
};

static int on_output(void *ctx, int stream, const void *data, size_t len)
{
    struct out_ctx *o = ctx;
    if (write_all(stream == SBX_STDERR ? 2 : 1, data, len) != 0) {
        o->broken = 1;
        return 1; /* stops the command: nobody reads its output any more */
    }
    return 0;
}

/* Reads all of stdin when it is not a terminal. Returns 0 (with *data NULL when there is no
   input to forward) or EXIT_SBX after saying why. */
static int read_stdin(const struct cli *a, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    struct stat st;
    if (a->no_stdin || isatty(0) || fstat(0, &st) != 0)
        return 0; /* a terminal, or no stdin at all (closed) */
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > STDIN_MAX)
        goto too_big;
    if (read_all_fd(0, STDIN_MAX, data, len) == 0)
        return 0;
    if (errno == EFBIG)
        goto too_big;
    msg("cannot read stdin: %s", strerror(errno));
    return EXIT_SBX;
too_big:
    msg("standard input is larger than %u MiB: copy big inputs in with --copy-in HOST:GUEST "
        "(or use --no-stdin)",
        STDIN_MAX >> 20);
    return EXIT_SBX;
}

/* Splits "A:B" at the first ':' (checked while parsing). */
static void split(const char *spec, char **left, const char **right)
{
    const char *colon = strchr(spec, ':');
    *left = strndup(spec, (size_t)(colon - spec));
    *right = colon + 1;
    if (!*left) {
        msg("out of memory");
        exit(EXIT_SBX);
    }
}

static int parse_port(const char *s, size_t len, unsigned min, unsigned *out)
{
    unsigned long v = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v < min || v > 65535)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int publish_parse(const char *spec, char *addr, size_t cap, unsigned *host_port,
                  unsigned *guest_port)
{
    addr[0] = '\0';
    *host_port = 0;
    const char *g = strrchr(spec, ':');
    if (!g)
        return parse_port(spec, strlen(spec), 1, guest_port);
    if (parse_port(g + 1, strlen(g + 1), 1, guest_port) != 0)
        return -1;
    /* What is left of GUESTPORT: HOSTPORT, or ADDR:HOSTPORT (ADDR may be [IPv6]). */
    const char *h = g;
    while (h > spec && h[-1] != ':')
        h--;
    if (parse_port(h, (size_t)(g - h), 0, host_port) != 0)
        return -1;
    if (h == spec)
        return 0;
    const char *a = spec;
    size_t alen = (size_t)(h - 1 - spec);
    if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']') {
        a++;
        alen -= 2;
    } else if (memchr(a, ':', alen)) {
        return -1; /* an IPv6 address needs brackets */
    }
    if (alen == 0 || alen >= cap)
        return -1;
    memcpy(addr, a, alen);
    addr[alen] = '\0';
    return 0;
}

/* Exposes the -p ports; prints each mapping. Returns 0 or EXIT_SBX after saying why. */
static int publish_ports(sbx *sb, const struct cli *a)
{
    for (size_t i = 0; i < a->npublish; i++) {
        char addr[64];
        unsigned hp, gp, bound;
        publish_parse(a->publish[i], addr, sizeof(addr), &hp, &gp); /* checked by main() */
        int rc = sbx_expose(sb, gp, addr[0] ? addr : NULL, hp, &bound);
        if (rc != 0) {
            char what[96];
            snprintf(what, sizeof(what), "cannot publish port %s", a->publish[i]);
            return lib_error(sb, rc, what);
        }
        const char *shown = addr[0] ? addr : "127.0.0.1";
        int v6 = strchr(shown, ':') != NULL;
        msg("guest port %u is reachable at %s%s%s:%u", gp, v6 ? "[" : "", shown, v6 ? "]" : "",
            bound);
    }
    return 0;
}

static int exit_status(const sbx_exec_result *res, unsigned timeout_ms)
{
    if (res->timed_out) {
        msg("the command did not finish within %g s: killed it (and its process group)",
            timeout_ms / 1000.0);
        return EXIT_TIMEOUT;
    }
    if (res->signal > 0) {
        if (res->signal != SIGPIPE)
            msg("the command was killed by signal %d (%s)", res->signal,
                res->signal < 64 ? strsignal(res->signal) : "?");
        return 128 + (res->signal & 0x7f);
    }
    return res->exit_code & 0xff;
}

int cmd_run(struct cli *a)
{
    if (!a->shell_cmd && a->nwords == 0)
        return usage_error(a, "no command given: sbx run [OPTIONS] -- CMD [ARG...], or sbx run "
                              "-c 'SHELL COMMAND LINE'");
    if (a->shell_cmd && a->nwords > 0)
        return usage_error(a,
                           "give either -c STRING or a command, not both (here: -c '%s' and "
                           "'%s')",
                           a->shell_cmd, a->words[0]);
    int rc = snapshot_targets_check(a);
    if (rc)
        return rc;
    /* Fail before booting when a source is plainly missing. */
    for (size_t i = 0; i < a->ncopy_in; i++) {
        char *host;
        const char *guest;
        split(a->copy_in[i], &host, &guest);
        struct stat st;
        if (lstat(host, &st) != 0) {
            msg("--copy-in %s: %s: %s", a->copy_in[i], host, strerror(errno));
            free(host);
            return EXIT_SBX;
        }
        free(host);
    }

    char *in;
    size_t in_len;
    rc = read_stdin(a, &in, &in_len);
    if (rc)
        return rc;

    sbx *sb;
    if ((rc = sandbox_open(a, &sb)) != 0) {
        free(in);
        return rc;
    }
    signals_set_sandbox(sb);
    int status = 0;

    for (size_t i = 0; i < a->ncopy_in && status == 0; i++) {
        char *host;
        const char *guest;
        split(a->copy_in[i], &host, &guest);
        status = copy_to_guest(sb, host, guest, a->verbose);
        free(host);
    }

    if (status == 0)
        status = publish_ports(sb, a);

    int ran = 0;
    if (status == 0) {
        struct out_ctx out = {0};
        sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
        command_from_words(a, &o);
        o.envs = a->nenvs ? a->envs : NULL;
        o.cwd = a->cwd;
        o.user = a->user;
        o.stdin_data = in;
        o.stdin_len = in_len;
        o.timeout_ms = a->timeout_ms;
        o.on_output = on_output;
        o.ctx = &out;
        o.tag = "sbx run";
        sbx_exec_result res;
        double t0 = now_s();
        rc = sbx_exec(sb, &o, &res);
        if (rc == 0) {
            ran = 1;
            status = exit_status(&res, a->timeout_ms);
            if (a->verbose)
                msg("the command exited with status %d after %.2f s", status, now_s() - t0);
        } else if (out.broken) {
            status = 128 + SIGPIPE; /* like a shell pipeline's writer */
        } else if (signals_pending()) {
            msg("interrupted: stopped the command and the sandbox");
            status = 128 + signals_pending();
        } else {
            status = lib_error(sb, rc, "cannot run the command");
        }
        sbx_exec_result_free(&res);
    }

    /* Copy out whatever the command's status: build logs of a failed build matter too. */
    for (size_t i = 0; ran && i < a->ncopy_out; i++) {
        char *guest;
        const char *host;
        split(a->copy_out[i], &guest, &host);
        int r = copy_from_guest(sb, guest, host, a->verbose);
        free(guest);
        if (r == EXIT_SBX && !signals_pending()) {
            msg("(the command itself exited with status %d)", status);
            status = EXIT_SBX;
        } else if (r) {
            status = r;
            break;
        }
    }

    free(in);
    /* --snapshot-to only keeps the result of a command that succeeded (a failed install
       must not replace a good template); --pause-to keeps the sandbox whatever happened. */
    return sandbox_finish(a, sb, status, ran && status == 0 && !signals_pending());
}
