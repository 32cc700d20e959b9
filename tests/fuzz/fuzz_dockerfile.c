// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: the template Dockerfile parser on arbitrary text and build args. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "template/dockerfile.h"

/*
 * Input: when it holds a NUL byte, the bytes before the first one are build args ("NAME=VALUE"
 * lines, at most 8) and the rest is the Dockerfile; otherwise all of it is the Dockerfile. The
 * Dockerfile is parsed from a buffer of its exact size, so any read past it is caught.
 *
 * On success every documented invariant of the result is checked, dockerfile_step_env is
 * called, and the canonical texts are parsed again as a file of their own: they must give the
 * same texts (the property the builder's cache keys rely on), except where the header says a
 * text can hold a newline, or where the rebuilt file would exceed a cap.
 */

static void check(int ok)
{
    if (!ok)
        abort();
}

static int is_clean_relative(const char *p)
{
    if (!strcmp(p, "."))
        return 1;
    if (!*p || p[0] == '/' || p[strlen(p) - 1] == '/')
        return 0;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        s += n + (e ? 1 : 0);
    }
    return 1;
}

static int is_clean_absolute(const char *p, int slash_ok)
{
    if (p[0] != '/')
        return 0;
    if (!p[1])
        return 1;
    size_t n = strlen(p);
    char *rel = strndup(p + 1, n - 1 - (slash_ok && p[n - 1] == '/'));
    if (!rel)
        abort();
    int ok = is_clean_relative(rel) && strcmp(rel, ".");
    free(rel);
    return ok;
}

static size_t list_len(char **l)
{
    size_t n = 0;
    while (l[n])
        n++;
    return n;
}

static void check_result(const struct dockerfile *df)
{
    check(df->from && *df->from);
    check(df->nsteps <= DOCKERFILE_MAX_STEPS);
    unsigned prev_line = 0;
    for (size_t i = 0; i < df->nsteps; i++) {
        const struct df_step *st = &df->steps[i];
        check(st->text && st->line >= 1 && st->line >= prev_line);
        prev_line = st->line;
        switch (st->op) {
        case DF_RUN:
            check(!st->cmd != !st->argv);
            check(!st->argv || st->argv[0]);
            check(!st->cmd || *st->cmd);
            check(!strncmp(st->text, "RUN ", 4));
            break;
        case DF_COPY:
        case DF_ADD:
            check(st->nsrcs >= 1 && st->srcs && !st->srcs[st->nsrcs] && st->dst);
            for (size_t k = 0; k < st->nsrcs; k++)
                check(is_clean_relative(st->srcs[k]));
            check(is_clean_absolute(st->dst, 1));
            check(st->nsrcs == 1 || st->dst[strlen(st->dst) - 1] == '/');
            check(!st->chmod || st->mode <= 07777);
            check(!st->chown || *st->chown);
            break;
        case DF_ENV:
        case DF_LABEL:
            check(st->value != NULL);
            /* fall through */
        case DF_ARG:
            check(st->key && *st->key && !strchr(st->key, '='));
            check(st->op != DF_LABEL || strncmp(st->key, "sbx.", 4));
            break;
        case DF_WORKDIR:
            check(st->path && is_clean_absolute(st->path, 0));
            break;
        case DF_USER:
            check(st->user && *st->user);
            break;
        default:
            abort();
        }
    }
    check(!df->start_cmd || *df->start_cmd);
    check(!df->start_cmd == !df->start_line);
    switch (df->ready) {
    case DF_READY_NONE:
        check(!df->ready_arg);
        break;
    case DF_READY_CMD:
        check(df->ready_arg && *df->ready_arg);
        break;
    case DF_READY_FILE:
        check(df->ready_arg && df->ready_arg[0] == '/');
        break;
    case DF_READY_PORT:
        check(df->ready_port >= 1 && df->ready_port <= 65535 && !df->ready_arg);
        break;
    case DF_READY_DELAY:
        check(df->ready_ms <= DOCKERFILE_MAX_DELAY && !df->ready_arg);
        break;
    default:
        abort();
    }
    check(df->envs != NULL);
    for (size_t i = 0; df->envs[i]; i++)
        check(strchr(df->envs[i], '=') && df->envs[i][0] != '=');
    check(!df->workdir || is_clean_absolute(df->workdir, 0));
    size_t probes[3] = {0, df->nsteps / 2, df->nsteps + 5};
    for (size_t k = 0; k < 3; k++) {
        char **e = dockerfile_step_env(df, probes[k]);
        check(e != NULL);
        for (size_t i = 0; e[i]; i++)
            check(strchr(e[i], '=') && e[i][0] != '=');
        if (k == 2)
            check(list_len(e) >= list_len(df->envs));
        dockerfile_free_list(e);
    }
}

static void round_trip(const struct dockerfile *df)
{
    if (df->nsteps >= DOCKERFILE_MAX_INSTR)
        return;
    size_t total = 16;
    for (size_t i = 0; i < df->nsteps; i++) {
        const char *t = df->steps[i].text;
        size_t n = strlen(t);
        if (strchr(t, '\n') || n + 1 > DOCKERFILE_MAX_LINE || t[n - 1] == '\\')
            return;
        total += n + 1;
    }
    if (total > DOCKERFILE_MAX_SIZE)
        return;
    char *text = malloc(total);
    if (!text)
        abort();
    size_t len = 0;
    memcpy(text, "FROM base\n", 10);
    len = 10;
    for (size_t i = 0; i < df->nsteps; i++) {
        size_t n = strlen(df->steps[i].text);
        memcpy(text + len, df->steps[i].text, n);
        text[len + n] = '\n';
        len += n + 1;
    }
    struct dockerfile *again = NULL;
    char err[256];
    if (dockerfile_parse(text, len, NULL, &again, err, sizeof(err)) != 0) {
        /* Substitution may hit its budget a second time round; nothing else may fail. */
        check(strstr(err, "variable substitution produces more than") != NULL);
        free(text);
        return;
    }
    check(again->nsteps == df->nsteps);
    for (size_t i = 0; i < df->nsteps; i++) {
        check(again->steps[i].op == df->steps[i].op);
        check(!strcmp(again->steps[i].text, df->steps[i].text));
    }
    dockerfile_free(again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *ba[9] = {0};
    size_t nba = 0;
    char *args = NULL;
    const uint8_t *nul = memchr(data, 0, size);
    if (nul) {
        size_t an = (size_t)(nul - data);
        args = malloc(an + 1);
        if (!args)
            abort();
        memcpy(args, data, an);
        args[an] = 0;
        for (char *s = args; *s && nba < 8;) {
            ba[nba++] = s;
            char *nl = strchr(s, '\n');
            if (!nl)
                break;
            *nl = 0;
            s = nl + 1;
        }
        size -= an + 1;
        data = nul + 1;
    }
    char *text = malloc(size ? size : 1);
    if (!text)
        abort();
    memcpy(text, data, size);

    struct dockerfile *df = (struct dockerfile *)1;
    char err[128];
    err[0] = 'X';
    int rc =
        dockerfile_parse(text, size, nba ? (const char *const *)ba : NULL, &df, err, sizeof(err));
    if (rc == 0) {
        check(df != NULL && err[0] == 0);
        check_result(df);
        round_trip(df);
        dockerfile_free(df);
    } else {
        check(rc == -1 && df == NULL && err[0] && strlen(err) < sizeof(err));
    }
    free(text);
    free(args);
    return 0;
}
