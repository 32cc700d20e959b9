// SPDX-License-Identifier: Apache-2.0
/*
 * The Dockerfile subset that defines a template: parsed from the file's text (no I/O here) into
 * the steps the template builder runs, plus the final state a sandbox created from the template
 * starts with.
 *
 * Supported, with Docker's semantics unless noted:
 *   - comments ('#' first on a line, leading blanks allowed), blank lines, continuation lines
 *     (a trailing '\', optionally followed by blanks; comment and blank lines inside a
 *     continuation are skipped, as Docker does), a UTF-8 BOM, case-insensitive instruction
 *     names, CRLF line ends. Parser directives: "# escape=" is refused (only '\' is
 *     supported), "# syntax=" and "# check=" are plain comments.
 *   - FROM image: exactly one, first, only ARGs before it. Those pre-FROM ARGs are usable in
 *     FROM only (and an "ARG NAME" without a default after FROM inherits one, as in Docker).
 *   - RUN cmd (shell form, run with /bin/sh -c) and RUN ["exe", "arg"] (exec form, JSON string
 *     escapes). A '[' that does not start a valid JSON array is shell form (RUN [ -f x ] ...).
 *   - COPY/ADD [--chown=user[:group]] [--chmod=OCTAL] src... dst, and the JSON form. Sources
 *     are normalised to paths relative to the context root ("." is the whole context) and
 *     may not climb out of it; they may hold wildcards, which the builder expands. ADD of a
 *     URL is refused; whether ADD extracts a local archive is the builder's business.
 *   - ENV K V, ENV K1=V1 K2="v 2" (quotes and '\' escapes); ARG NAME[=default] (several per
 *     line allowed); WORKDIR path; USER user[:group]; LABEL k=v ...
 *   - LABEL sbx.start="cmd" (start command, run after the last step) and LABEL sbx.ready=
 *     "cmd:<command>" | "port:<1-65535>" | "file:<absolute path>" | "delay:<0-600000 ms>";
 *     other sbx.* labels are refused (typos must not be silently ignored).
 *   - CMD (shell or exec form) as the start command when LABEL sbx.start is not given.
 *
 * Variable substitution ($V, ${V}, ${V:-w}, ${V-w}, ${V:+w}, ${V+w}, ${V:?msg}, ${V?msg}; '\$'
 * escapes; a '$' not followed by a name or '{' is literal) applies to FROM, ENV, ARG defaults,
 * WORKDIR, USER, COPY/ADD (flags too) and LABEL, ENV values taking precedence over ARGs of the
 * same name; an unset name gives "". Words are split at blanks before substitution and quotes
 * are removed after it, as in Docker (ENV A=${X:-a b} is an error; quote: ENV A="${X:-a b}").
 * All pairs of one ENV/ARG/LABEL line are expanded against the state before that line (ENV
 * a=1 b=$a sees the previous a), as in Docker. RUN and CMD are never substituted: the shell
 * does that at run time, with dockerfile_step_env's environment. ENV/ARG/LABEL names must be
 * non-empty, without '=', blanks or control characters.
 *
 * Refused with an error naming the line: multi-stage builds (FROM ... AS, COPY --from, a
 * second FROM), ADD (or COPY) from URLs (scheme:// or git@), heredocs, unknown flags,
 * ENTRYPOINT, EXPOSE, VOLUME, HEALTHCHECK, ONBUILD, STOPSIGNAL, SHELL, MAINTAINER and unknown
 * instructions, empty arguments, several COPY/ADD sources with a destination not ending in
 * '/', a CMD or sbx.* label given twice, both CMD and LABEL sbx.start, build args no ARG
 * declares. Caps (errors, never crashes): the text at most 1 MiB and free of NUL bytes, at
 * most 1000 instructions and 4096 steps, a logical line (after joining continuations) at most
 * 64 KiB, at most 256 distinct ENV/ARG names, substitution nested at most 32 deep, and at most
 * 4 MiB of substituted text in total (so "$A$A$A..." cannot blow up memory).
 */
#ifndef SBX_TEMPLATE_DOCKERFILE_H
#define SBX_TEMPLATE_DOCKERFILE_H

#include <stddef.h>

#define DOCKERFILE_MAX_SIZE   (1u << 20) /* bytes of text */
#define DOCKERFILE_MAX_INSTR  1000
#define DOCKERFILE_MAX_STEPS  4096u       /* steps: one per ENV/ARG/LABEL pair */
#define DOCKERFILE_MAX_LINE   (64u << 10) /* bytes of one logical line */
#define DOCKERFILE_MAX_NAMES  256         /* distinct ENV/ARG names, pre-FROM ARGs included */
#define DOCKERFILE_MAX_EXPAND (4u << 20)  /* bytes produced by variable substitution */
#define DOCKERFILE_MAX_DELAY  600000u     /* ms, for sbx.ready=delay: */

enum df_op { DF_RUN, DF_COPY, DF_ADD, DF_ENV, DF_WORKDIR, DF_USER, DF_ARG, DF_LABEL };

/* One step. Every string is NUL-terminated and owned by the struct dockerfile. */
struct df_step {
    enum df_op op;
    unsigned line; /* 1-based line where the instruction starts */
    /* The canonical instruction after continuation joining and variable substitution, for
       cache keys and build logs: upper-case name, one blank between words, words quoted
       ("...", with \ before " \ $) only when they need it, flags in a fixed order, COPY/ADD
       sources normalised and the destination resolved, ARG with its value in effect, RUN
       exec form as compact JSON (["a", "b"]). E.g. "RUN apt-get install -y curl". It only
       holds a newline when a value does (a build arg, a JSON "\n"). */
    char *text;
    char *cmd;   /* RUN: shell form command (run with /bin/sh -c), NULL for exec form */
    char **argv; /* RUN: exec form ["a","b"] as NULL-terminated list (never empty), else NULL */
    /* COPY/ADD: srcs relative to the context root, normalised ("a/b", "." for the root, no
       "..", no leading '/'); dst absolute, resolved against the WORKDIR in effect, with a
       trailing '/' when it names a directory (written with one, or "." or ".."). */
    char **srcs;
    size_t nsrcs;
    char *dst;
    char *chown;   /* COPY/ADD --chown value (user[:group]), else NULL */
    char *chmod;   /* COPY/ADD --chmod value as written (octal, e.g. "0755"), else NULL */
    unsigned mode; /* the --chmod value as a number (<= 07777), 0 without --chmod */
    /* ENV, ARG, LABEL: one step per pair. ARG: value is the value in effect (the build arg if
       given, else the default, else the value the name had before, e.g. from a pre-FROM ARG);
       NULL when it has none (declared but unset: not in the environment). */
    char *key, *value;
    char *path; /* WORKDIR: absolute and normalised, resolved against the previous WORKDIR */
    char *user; /* USER: user[:group] */
};

enum df_ready { DF_READY_NONE, DF_READY_CMD, DF_READY_PORT, DF_READY_FILE, DF_READY_DELAY };

struct dockerfile {
    char *from; /* FROM argument: "base", a template name, or an image path */
    /* every instruction after FROM in order, except CMD and the sbx.* labels */
    struct df_step *steps;
    size_t nsteps;
    char *start_cmd;     /* LABEL sbx.start="..." or CMD (exec form shell-quoted), else NULL */
    unsigned start_line; /* line of the CMD or LABEL that set start_cmd, else 0 */
    enum df_ready ready;
    char *ready_arg;     /* DF_READY_CMD: the command; DF_READY_FILE: the path; else NULL */
    unsigned ready_port; /* DF_READY_PORT */
    unsigned ready_ms;   /* DF_READY_DELAY */
    /* final state after all steps, for sandboxes created from the template: */
    char **envs;   /* "KEY=VALUE", NULL-terminated (ENV only; ARGs are build-time only), in the
                      order names were first set */
    char *workdir; /* NULL when never set */
    char *user;    /* NULL when never set */
};

/*
 * Parses text[0..len) (need not be NUL-terminated). build_args: "NAME=VALUE" entries
 * (NULL-terminated, or NULL) overriding ARG defaults; each must name an ARG of the file, and
 * a name may be given once. Returns 0 and *out (free with dockerfile_free), or -1 with errno
 * ENOMEM or EINVAL and a message in err (err may be NULL); messages about the text start
 * with "line N: ".
 */
int dockerfile_parse(const char *text, size_t len, const char *const *build_args,
                     struct dockerfile **out, char *err, size_t errlen);

void dockerfile_free(struct dockerfile *df);

/*
 * The environment a RUN step at index i sees: ENV values set before it plus the ARG values in
 * scope (an ENV wins over an ARG of the same name), "KEY=VALUE", NULL-terminated, in the order
 * names were first declared, malloc'ed (free with dockerfile_free_list). i >= nsteps gives the
 * environment after the last step. NULL only when out of memory.
 */
char **dockerfile_step_env(const struct dockerfile *df, size_t i);

void dockerfile_free_list(char **l);

#endif
