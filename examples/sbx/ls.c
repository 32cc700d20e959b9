// SPDX-License-Identifier: Apache-2.0
/* sbx ls: the sandboxes running on this machine (sbx_list_running), as a table or JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sbx.h"

uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *age(uint64_t created_ns, uint64_t now, char buf[32])
{
    uint64_t s = now > created_ns ? (now - created_ns) / 1000000000ull : 0;
    if (s < 120)
        snprintf(buf, 32, "%llus", (unsigned long long)s);
    else if (s < 2 * 3600)
        snprintf(buf, 32, "%llum", (unsigned long long)(s / 60));
    else if (s < 2 * 86400)
        snprintf(buf, 32, "%lluh", (unsigned long long)(s / 3600));
    else
        snprintf(buf, 32, "%llud", (unsigned long long)(s / 86400));
    return buf;
}

/* The image path with the home directory shortened to ~. */
static const char *short_path(const char *p, char *buf, size_t cap)
{
    const char *home = getenv("HOME");
    size_t n = home ? strlen(home) : 0;
    if (n > 1 && strncmp(p, home, n) == 0 && p[n] == '/') {
        snprintf(buf, cap, "~%s", p + n);
        return buf;
    }
    return p;
}

void json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
            p++;
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
            p++;
        } else if (c < 0x80) {
            fputc((int)c, f);
            p++;
        } else {
            size_t len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            size_t k = 1;
            while (len && k < len && (p[k] & 0xc0) == 0x80)
                k++;
            if (len && k == len) {
                fwrite(p, 1, len, f);
                p += len;
            } else {
                fputs("\\ufffd", f);
                p++;
            }
        }
    }
    fputc('"', f);
}

void json_time(FILE *f, uint64_t ns)
{
    if (!ns) {
        fputs("null", f);
        return;
    }
    time_t t = (time_t)(ns / 1000000000ull);
    struct tm tm;
    char buf[64];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(f, "\"%s.%03uZ\"", buf, (unsigned)(ns % 1000000000ull / 1000000));
}

static void print_json(const sbx_listing *l, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        printf("%s\n  {\"id\": ", i ? "," : "");
        json_str(stdout, l[i].id);
        printf(", \"pid\": %d, \"created\": ", l[i].pid);
        json_time(stdout, l[i].created_ns);
        printf(", \"ends\": ");
        json_time(stdout, l[i].ends_ns);
        printf(", \"cpus\": %u, \"memory_mib\": %u, \"rootfs\": ", l[i].vcpus, l[i].memory_mib);
        json_str(stdout, l[i].rootfs);
        printf(", \"metadata\": {");
        for (size_t k = 0; l[i].metadata && l[i].metadata[k]; k++) {
            char *kv = l[i].metadata[k], *eq = strchr(kv, '=');
            if (!eq)
                continue;
            *eq = '\0';
            printf("%s", k ? ", " : "");
            json_str(stdout, kv);
            printf(": ");
            json_str(stdout, eq + 1);
            *eq = '=';
        }
        printf("}}");
    }
    printf("%s]\n", n ? "\n" : "");
}

enum { C_ID, C_PID, C_AGE, C_CPUS, C_MEM, C_ROOTFS, C_META, NCOLS };

static void print_table(const sbx_listing *l, size_t n)
{
    static const char *const head[NCOLS] = {"ID",  "PID",    "AGE",     "CPUS",
                                            "MEM", "ROOTFS", "METADATA"};
    /* Cells first, then widths. */
    char **cells = calloc((n + 1) * NCOLS, sizeof(char *));
    if (!cells) {
        msg("out of memory");
        return;
    }
    uint64_t now = realtime_ns();
    for (size_t c = 0; c < NCOLS; c++)
        cells[c] = strdup(head[c]);
    for (size_t i = 0; i < n; i++) {
        char **row = cells + (i + 1) * NCOLS, buf[512];
        row[C_ID] = strdup(l[i].id);
        snprintf(buf, sizeof(buf), "%d", l[i].pid);
        row[C_PID] = strdup(buf);
        row[C_AGE] = strdup(age(l[i].created_ns, now, buf));
        snprintf(buf, sizeof(buf), "%u", l[i].vcpus);
        row[C_CPUS] = strdup(buf);
        snprintf(buf, sizeof(buf), "%uMiB", l[i].memory_mib);
        row[C_MEM] = strdup(buf);
        row[C_ROOTFS] = strdup(short_path(l[i].rootfs, buf, sizeof(buf)));
        size_t len = 1;
        for (size_t k = 0; l[i].metadata && l[i].metadata[k]; k++)
            len += strlen(l[i].metadata[k]) + 1;
        char *meta = malloc(len + 1);
        if (meta) {
            meta[0] = '\0';
            for (size_t k = 0; l[i].metadata && l[i].metadata[k]; k++) {
                if (k)
                    strcat(meta, ",");
                strcat(meta, l[i].metadata[k]);
            }
            if (!meta[0])
                strcpy(meta, "-");
        }
        row[C_META] = meta;
    }
    size_t width[NCOLS] = {0};
    for (size_t i = 0; i <= n; i++)
        for (size_t c = 0; c < NCOLS; c++) {
            const char *s = cells[i * NCOLS + c];
            if (s && strlen(s) > width[c])
                width[c] = strlen(s);
        }
    for (size_t i = 0; i <= n; i++) {
        for (size_t c = 0; c < NCOLS; c++) {
            const char *s = cells[i * NCOLS + c] ? cells[i * NCOLS + c] : "?";
            /* Numbers right-aligned; the last column unpadded. */
            int right = c == C_PID || c == C_CPUS || c == C_MEM;
            if (c == NCOLS - 1)
                printf("%s\n", s);
            else if (right)
                printf("%*s  ", (int)width[c], s);
            else
                printf("%-*s  ", (int)width[c], s);
        }
    }
    for (size_t i = 0; i < (n + 1) * NCOLS; i++)
        free(cells[i]);
    free(cells);
}

static int by_creation(const void *x, const void *y)
{
    const sbx_listing *a = x, *b = y;
    return a->created_ns < b->created_ns ? -1 : a->created_ns > b->created_ns;
}

int cmd_ls(struct cli *a)
{
    if (a->nwords > 0)
        return usage_error(a, "unexpected argument '%s' (sbx ls takes no paths)", a->words[0]);
    if (a->json && a->quiet)
        return usage_error(a, "--json and --quiet do not go together");
    sbx_listing *l;
    size_t n;
    int rc = sbx_list_running(&l, &n);
    if (rc < 0)
        return lib_error(NULL, rc, "cannot list the sandboxes");
    if (n > 1)
        qsort(l, n, sizeof(*l), by_creation);
    if (a->json)
        print_json(l, n);
    else if (a->quiet)
        for (size_t i = 0; i < n; i++)
            printf("%s\n", l[i].id);
    else
        print_table(l, n);
    sbx_listing_free(l, n);
    return 0;
}
