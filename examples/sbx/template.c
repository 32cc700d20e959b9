// SPDX-License-Identifier: Apache-2.0
/* sbx template build|ls|rm: templates from a Dockerfile subset, with live build output. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sbx.h"

/* The largest definition `-f -` reads from stdin. */
#define DOCKERFILE_MAX (1u << 20)

/* Prints a failed template call: "sbx: WHAT: ERR", saying so when the library cannot do it. */
static int template_error(int rc, const char *err, const char *what)
{
    const char *m = err && *err ? err : sbx_strerror(rc);
    if (rc == SBX_ENOTSUP)
        msg("%s: %s (not supported by this libsandbox %s)", what, m, sbx_version());
    else
        msg("%s: %s", what, m);
    return EXIT_SBX;
}

/* --- build: progress display ----------------------------------------------------------------
 *
 * Progress goes to stderr, RUN output to stdout and stderr as the guest wrote it. Events are
 * instructions ("[2/5] RUN ...", each started and ended) and phases of the builder ("[boot]",
 * "[snapshot]", ...), which may come inside an instruction (a builder booting for a RUN) and
 * need not be ended. On a terminal the line of what runs stays open, with its elapsed time
 * redrawn every second by a thread of ours, and is completed in place ("... done in 3.1 s")
 * unless output came in between. Otherwise every event is a plain line. The library calls
 * both callbacks on the building thread; the lock orders them against the redrawing thread.
 */
enum { OPEN_NONE, OPEN_STEP, OPEN_PHASE };

struct build_ui {
    int tty;     /* stderr is a terminal: redraw the open line */
    int out_tty; /* stdout is a terminal too: its output breaks the line as well */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    pthread_t ticker;
    int have_ticker;
    char head[1024];   /* the open line, sanitized and cut to fit the terminal */
    int open;          /* OPEN_*: whose line head is, on screen without its newline (tty) */
    double open_s;     /* now_s() when it opened (for the redraws) */
    int at_line_start; /* the terminal's cursor is at the start of a line */
    /* The current instruction. */
    int step_active, step_cached_shown, step_output;
    unsigned step;
    uint64_t step_ms; /* elapsed_ms at its start */
    /* The current phase. */
    int phase_active;
    char phase[32];
    uint64_t phase_ms;
    int broken; /* our stdout or stderr could not be written */
};

static void ui_write(struct build_ui *u, int fd, const char *s, size_t len)
{
    if (len && write_all(fd, s, len) != 0)
        u->broken = 1;
}

static void ui_puts(struct build_ui *u, const char *s)
{
    ui_write(u, 2, s, strlen(s));
}

static unsigned term_cols(void)
{
    struct winsize ws;
    if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col;
    return 80;
}

/* A phase ("boot", "snapshot", ...) rather than an instruction ("RUN ...", "FROM base"). */
static int is_phase(const char *text)
{
    if (!*text)
        return 0;
    for (const char *p = text; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

static const char *phase_says(const char *phase)
{
    static const char *const says[][2] = {
        {"boot", "starting a sandbox"},
        {"start", "starting the start command"},
        {"ready", "waiting until the template is ready"},
        {"snapshot", "saving the template"},
        {"unchanged", "nothing changed: the template is up to date"},
    };
    for (size_t i = 0; i < sizeof(says) / sizeof(says[0]); i++)
        if (strcmp(phase, says[i][0]) == 0)
            return says[i][1];
    return "";
}

/* Control characters become spaces; with max_cols, the text is cut (at a character boundary)
   to at most that many characters, ending in "...". */
static void clean_line(char *s, size_t cap, unsigned max_cols)
{
    unsigned cols = 0;
    for (char *c = s; *c; c++) {
        unsigned char b = (unsigned char)*c;
        if (b < 0x20 || b == 0x7f)
            *c = ' ';
        if ((b & 0xc0) != 0x80 && max_cols && ++cols > max_cols) {
            char *cut = c;
            unsigned back = 0;
            while (cut > s && back < 3) {
                cut--;
                if (((unsigned char)*cut & 0xc0) != 0x80)
                    back++;
            }
            snprintf(cut, cap - (size_t)(cut - s), "...");
            return;
        }
    }
}

/* Ends the open line (tty) so that something else can be printed. */
static void ui_break_line(struct build_ui *u)
{
    if (u->open != OPEN_NONE) {
        /* Without the elapsed time, which is stale once the line stays behind. */
        char buf[1100];
        int n = snprintf(buf, sizeof(buf), "\r%s\033[K\n", u->head);
        ui_write(u, 2, buf, (size_t)n);
        u->open = OPEN_NONE;
        u->at_line_start = 1;
    } else if (!u->at_line_start) {
        ui_puts(u, "\n");
        u->at_line_start = 1;
    }
}

/* Shows a line that begins something: open (tty) or plain. */
static void ui_begin(struct build_ui *u, int kind, const char *line, int keep_open)
{
    ui_break_line(u);
    snprintf(u->head, sizeof(u->head), "%s", line);
    clean_line(u->head, sizeof(u->head), u->tty ? term_cols() - 16 : 0);
    if (u->tty && keep_open) {
        ui_puts(u, u->head);
        u->open = kind;
        u->open_s = now_s();
        u->at_line_start = 0;
    } else {
        char buf[1100];
        snprintf(buf, sizeof(buf), "%s\n", u->head);
        ui_puts(u, buf);
    }
}

/* Shows the end of something: in place when its line is still open, else as "LABEL done". */
static void ui_end(struct build_ui *u, int kind, const char *label, double dur)
{
    char buf[1200];
    if (u->open == kind) {
        snprintf(buf, sizeof(buf), "\r%s  done in %.1f s\033[K\n", u->head, dur);
        u->open = OPEN_NONE;
        u->at_line_start = 1;
    } else {
        ui_break_line(u);
        snprintf(buf, sizeof(buf), "%s done in %.1f s\n", label, dur);
    }
    ui_puts(u, buf);
}

static void *ticker(void *arg)
{
    struct build_ui *u = arg;
    pthread_mutex_lock(&u->lock);
    while (!u->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&u->cond, &u->lock, &ts);
        if (u->stop || u->open == OPEN_NONE)
            continue;
        double s = now_s() - u->open_s;
        if (s < 1)
            continue;
        char buf[1200];
        int n = snprintf(buf, sizeof(buf), "\r%s  %.0f s\033[K", u->head, s);
        ui_write(u, 2, buf, (size_t)n);
    }
    pthread_mutex_unlock(&u->lock);
    return NULL;
}

static int build_output(void *ctx, int stream, const void *data, size_t len)
{
    struct build_ui *u = ctx;
    pthread_mutex_lock(&u->lock);
    int fd = stream == SBX_STDERR ? 2 : 1;
    int on_terminal = fd == 2 ? u->tty : u->out_tty;
    if (len && on_terminal) {
        ui_break_line(u);
        u->at_line_start = ((const char *)data)[len - 1] == '\n';
    }
    if (len)
        u->step_output = 1;
    ui_write(u, fd, data, len);
    int stop = u->broken;
    pthread_mutex_unlock(&u->lock);
    return stop; /* nobody reads the output any more: stop the build */
}

static void phase_progress(struct build_ui *u, const sbx_template_progress *p)
{
    char line[1100], label[64];
    snprintf(label, sizeof(label), "[%.40s]", p->text);
    if (!p->done) {
        snprintf(u->phase, sizeof(u->phase), "%s", p->text);
        u->phase_active = 1;
        u->phase_ms = p->elapsed_ms;
        const char *says = phase_says(p->text);
        snprintf(line, sizeof(line), "%s%s%s", label, *says ? " " : "", says);
        ui_begin(u, OPEN_PHASE, line, 1);
        return;
    }
    uint64_t from = u->phase_active && strcmp(u->phase, p->text) == 0 ? u->phase_ms : p->elapsed_ms;
    u->phase_active = 0;
    ui_end(u, OPEN_PHASE, label, (double)(p->elapsed_ms - from) / 1000.0);
}

static void build_progress(void *ctx, const sbx_template_progress *p)
{
    struct build_ui *u = ctx;
    pthread_mutex_lock(&u->lock);
    const char *text = p->text ? p->text : "";
    char line[1100], label[64];
    snprintf(label, sizeof(label), "[%u/%u]", p->step, p->nsteps);
    if (is_phase(text)) {
        phase_progress(u, p);
    } else if (!p->done) {
        u->step = p->step;
        u->step_ms = p->elapsed_ms;
        u->step_output = 0;
        u->step_cached_shown = p->cached;
        u->step_active = 1;
        snprintf(line, sizeof(line), "%s %s%s", label, p->cached ? "cached " : "", text);
        ui_begin(u, OPEN_STEP, line, !p->cached);
    } else {
        int same = u->step_active && u->step == p->step;
        u->step_active = 0;
        double dur =
            same && p->elapsed_ms > u->step_ms ? (double)(p->elapsed_ms - u->step_ms) / 1000.0 : 0;
        if (p->cached) {
            if (!(same && u->step_cached_shown)) {
                snprintf(line, sizeof(line), "%s cached %s", label, text);
                if (u->open == OPEN_STEP)
                    u->open = OPEN_NONE, ui_puts(u, "\r\033[K"); /* replaced by this line */
                ui_begin(u, OPEN_STEP, line, 0);
            }
        } else if (u->open == OPEN_STEP || u->step_output || dur >= 0.1) {
            /* Quick steps without output (ENV, WORKDIR) need no second line. */
            ui_end(u, OPEN_STEP, label, dur);
        }
    }
    pthread_mutex_unlock(&u->lock);
}

/* Reads the definition from stdin for `-f -`. Returns a malloc'd string or NULL after saying
   why. */
static char *read_definition(void)
{
    char *buf;
    size_t n;
    if (read_all_fd(0, DOCKERFILE_MAX, &buf, &n) != 0) {
        if (errno == EFBIG)
            msg("-f -: the definition on stdin is larger than %u MiB", DOCKERFILE_MAX >> 20);
        else
            msg("-f -: cannot read stdin: %s", strerror(errno));
        return NULL;
    }
    if (strlen(buf) != n) {
        msg("-f -: the definition on stdin contains a NUL byte");
        free(buf);
        return NULL;
    }
    return buf;
}

/* "120.5 MiB" without the space, for table cells that are one word. */
static const char *compact_bytes(uint64_t n, char buf[32])
{
    human_bytes(n, buf);
    char *sp = strchr(buf, ' ');
    if (sp)
        memmove(sp, sp + 1, strlen(sp));
    return buf;
}

int cmd_template_build(struct cli *a)
{
    if (a->nwords > 0)
        return usage_error(a, "unexpected argument '%s' (the build context is --context DIR)",
                           a->words[0]);
    if (!a->file)
        return usage_error(a, "which definition: -f FILE (a Dockerfile subset; -f - reads stdin)");
    if (!a->tpl_name)
        return usage_error(a, "the template needs a name: --name NAME");
    if (!template_name_valid(a->tpl_name))
        return usage_error(a,
                           "--name '%s': a template name is [a-z0-9][a-z0-9._-]*, at most 63 "
                           "characters",
                           a->tpl_name);
    char *text = NULL;
    if (strcmp(a->file, "-") == 0) {
        if (!(text = read_definition()))
            return EXIT_SBX;
    } else {
        struct stat st;
        if (stat(a->file, &st) != 0) {
            msg("-f %s: %s", a->file, strerror(errno));
            return EXIT_SBX;
        }
        if (S_ISDIR(st.st_mode)) {
            msg("-f %s: is a directory (give the file, e.g. %s/Dockerfile)", a->file, a->file);
            return EXIT_SBX;
        }
    }
    if (a->context) {
        struct stat st;
        if (stat(a->context, &st) != 0 || !S_ISDIR(st.st_mode)) {
            msg("--context %s: %s", a->context, errno ? strerror(errno) : "not a directory");
            free(text);
            return EXIT_SBX;
        }
    }

    struct build_ui u = {0};
    u.tty = isatty(2);
    u.out_tty = u.tty && isatty(1);
    u.at_line_start = 1;
    pthread_mutex_init(&u.lock, NULL);
    pthread_cond_init(&u.cond, NULL);
    if (u.tty)
        u.have_ticker = pthread_create(&u.ticker, NULL, ticker, &u) == 0;

    sbx_template_build_options o = SBX_TEMPLATE_BUILD_OPTIONS_INIT;
    o.name = a->tpl_name;
    o.dockerfile = text ? NULL : a->file;
    o.dockerfile_text = text;
    o.context = a->context;
    o.build_args = a->nbuild_args ? a->build_args : NULL;
    o.tags = a->ntags ? a->tags : NULL;
    o.vcpus = a->cpus;
    o.memory_mib = a->memory_mib;
    o.disk_mib = a->disk_mib;
    o.start_cmd = a->start_cmd;
    o.ready = a->ready;
    o.ready_timeout_ms = a->ready_timeout_ms;
    o.step_timeout_ms = a->step_timeout_ms;
    o.no_cache = a->no_cache;
    o.template_dir = a->template_dir;
    o.kernel = a->kernel;
    o.host_loopback = a->host_loopback;
    o.on_output = build_output;
    o.on_progress = build_progress;
    o.ctx = &u;

    sbx_template_info info;
    memset(&info, 0, sizeof(info));
    char err[4096] = "";
    double t0 = now_s();
    int rc = sbx_template_build(&o, &info, err, sizeof(err));
    double took = now_s() - t0;

    pthread_mutex_lock(&u.lock);
    u.stop = 1;
    ui_break_line(&u);
    pthread_cond_signal(&u.cond);
    pthread_mutex_unlock(&u.lock);
    if (u.have_ticker)
        pthread_join(u.ticker, NULL);
    pthread_cond_destroy(&u.cond);
    pthread_mutex_destroy(&u.lock);
    free(text);

    if (rc != 0) {
        if (u.broken)
            return 128 + 13; /* SIGPIPE: like a shell pipeline's writer */
        char what[128];
        snprintf(what, sizeof(what), "cannot build template %s", a->tpl_name);
        return template_error(rc, err, what);
    }
    char mem[32], disk[32];
    if (info.build_ms)
        took = (double)info.build_ms / 1000.0;
    msg("built template %s in %.1f s: %u step%s, %u cached; %u vCPU%s, %u MiB; snapshot %s of "
        "memory and %s of disk",
        info.name[0] ? info.name : a->tpl_name, took, info.nsteps, info.nsteps == 1 ? "" : "s",
        info.ncached, info.vcpus, info.vcpus == 1 ? "" : "s", info.memory_mib,
        human_bytes(info.memory_bytes, mem), human_bytes(info.disk_bytes, disk));
    msg("start sandboxes from it with: sbx run --template %s -- CMD",
        info.name[0] ? info.name : a->tpl_name);
    return 0;
}

/* --- ls ------------------------------------------------------------------------------------ */

static void print_json(const sbx_template_info *l, size_t n)
{
    printf("[");
    for (size_t i = 0; i < n; i++) {
        const sbx_template_info *t = &l[i];
        printf("%s\n  {\"name\": ", i ? "," : "");
        json_str(stdout, t->name);
        printf(", \"kind\": \"%s\", \"parent\": ", t->is_snapshot ? "snapshot" : "template");
        json_str(stdout, t->parent);
        printf(", \"vcpus\": %u, \"memory_mib\": %u, \"disk_mib\": %llu, \"steps\": %u, "
               "\"cached_steps\": %u, \"created\": ",
               t->vcpus, t->memory_mib, (unsigned long long)t->disk_mib, t->nsteps, t->ncached);
        json_time(stdout, t->created_ns);
        printf(", \"memory_bytes\": %llu, \"disk_bytes\": %llu, \"tags\": [",
               (unsigned long long)t->memory_bytes, (unsigned long long)t->disk_bytes);
        char tags[sizeof(t->tags)];
        snprintf(tags, sizeof(tags), "%s", t->tags);
        int first = 1;
        for (char *save = NULL, *tag = strtok_r(tags, ",", &save); tag;
             tag = strtok_r(NULL, ",", &save)) {
            printf("%s", first ? "" : ", ");
            json_str(stdout, tag);
            first = 0;
        }
        printf("], \"error\": ");
        if (t->error[0])
            json_str(stdout, t->error);
        else
            printf("null");
        printf("}");
    }
    printf("%s]\n", n ? "\n" : "");
}

enum { C_NAME, C_KIND, C_VCPUS, C_MEMORY, C_DISK, C_STEPS, C_CREATED, C_SIZE, NCOLS };

static void print_table(const sbx_template_info *l, size_t n)
{
    static const char *const head[NCOLS] = {"NAME", "KIND",  "VCPUS",   "MEMORY",
                                            "DISK", "STEPS", "CREATED", "SIZE"};
    char(*cells)[NCOLS][300] = calloc(n + 1, sizeof(*cells));
    if (!cells) {
        msg("out of memory");
        return;
    }
    uint64_t now = realtime_ns();
    for (size_t c = 0; c < NCOLS; c++)
        snprintf(cells[0][c], sizeof(cells[0][c]), "%s", head[c]);
    for (size_t i = 0; i < n; i++) {
        const sbx_template_info *t = &l[i];
        char(*row)[300] = cells[i + 1];
        char buf[32];
        snprintf(row[C_NAME], 300, "%s", t->name);
        if (t->error[0]) {
            /* Spans the other columns: printed as it is. */
            snprintf(row[C_KIND], 300, "cannot be used: %s", t->error);
            for (char *c = row[C_KIND]; *c; c++)
                if ((unsigned char)*c < 0x20)
                    *c = ' ';
            continue;
        }
        snprintf(row[C_KIND], 300, "%s", t->is_snapshot ? "snapshot" : "template");
        snprintf(row[C_VCPUS], 300, "%u", t->vcpus);
        snprintf(row[C_MEMORY], 300, "%uMiB", t->memory_mib);
        if (t->disk_mib)
            snprintf(row[C_DISK], 300, "%lluMiB", (unsigned long long)t->disk_mib);
        else
            snprintf(row[C_DISK], 300, "-");
        if (t->is_snapshot)
            snprintf(row[C_STEPS], 300, "-");
        else if (t->ncached)
            snprintf(row[C_STEPS], 300, "%u (%u cached)", t->nsteps, t->ncached);
        else
            snprintf(row[C_STEPS], 300, "%u", t->nsteps);
        snprintf(row[C_CREATED], 300, "%s ago", age(t->created_ns, now, buf));
        snprintf(row[C_SIZE], 300, "%s", compact_bytes(t->memory_bytes + t->disk_bytes, buf));
    }
    size_t width[NCOLS] = {0};
    for (size_t i = 0; i <= n; i++) {
        if (i > 0 && l[i - 1].error[0]) {
            if (strlen(cells[i][C_NAME]) > width[C_NAME])
                width[C_NAME] = strlen(cells[i][C_NAME]);
            continue;
        }
        for (size_t c = 0; c < NCOLS; c++)
            if (strlen(cells[i][c]) > width[c])
                width[c] = strlen(cells[i][c]);
    }
    for (size_t i = 0; i <= n; i++) {
        if (i > 0 && l[i - 1].error[0]) {
            printf("%-*s  %s\n", (int)width[C_NAME], cells[i][C_NAME], cells[i][C_KIND]);
            continue;
        }
        for (size_t c = 0; c < NCOLS; c++) {
            /* Numbers right-aligned. */
            int right = c == C_VCPUS || c == C_MEMORY || c == C_DISK || c == C_SIZE;
            const char *sep = c == NCOLS - 1 ? "\n" : "  ";
            if (right)
                printf("%*s%s", (int)width[c], cells[i][c], sep);
            else
                printf("%-*s%s", (int)width[c], cells[i][c], sep);
        }
    }
    free(cells);
}

int cmd_template_ls(struct cli *a)
{
    if (a->nwords > 0)
        return usage_error(a, "unexpected argument '%s' (sbx template ls takes no names)",
                           a->words[0]);
    if (a->json && a->quiet)
        return usage_error(a, "--json and --quiet do not go together");
    sbx_template_info *l = NULL;
    size_t n = 0;
    char err[1024] = "";
    int rc = sbx_template_list(a->template_dir, &l, &n, err, sizeof(err));
    if (rc < 0)
        return template_error(rc, err, "cannot list the templates");
    if (a->json)
        print_json(l, n);
    else if (a->quiet)
        for (size_t i = 0; i < n; i++)
            printf("%s\n", l[i].name);
    else
        print_table(l, n);
    sbx_template_list_free(l, n);
    return 0;
}

/* --- rm ------------------------------------------------------------------------------------ */

int cmd_template_rm(struct cli *a)
{
    if (a->nwords == 0)
        return usage_error(a, "which template: sbx template rm NAME...");
    int status = 0;
    for (int i = 0; i < a->nwords; i++) {
        char err[1024] = "";
        int rc = sbx_template_remove(a->template_dir, a->words[i], err, sizeof(err));
        if (rc < 0) {
            char what[128];
            snprintf(what, sizeof(what), "cannot remove template %.80s", a->words[i]);
            status = template_error(rc, err, what);
        }
    }
    return status;
}
