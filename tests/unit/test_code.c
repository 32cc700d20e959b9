// SPDX-License-Identifier: Apache-2.0
/*
 * Unit tests of the code interpreter API (lib/ops/code.c) against the real envd running
 * locally: once with the real interpreter service (guest/interpreter/server.py, run natively),
 * and once with a hostile fake service that answers each request with a scripted payload.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "local_envd.h"
#include "sandbox.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_listens(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* --- the real service ------------------------------------------------------------------------ */

struct real {
    sbx *sb;
    pid_t pid;
};

static int real_setup(void **state)
{
    struct real *r = calloc(1, sizeof(*r));
    unsigned port = free_port();
    char portarg[16];
    snprintf(portarg, sizeof(portarg), "%u", port);
    r->pid = fork();
    if (r->pid == 0) {
        setenv("MPLBACKEND", "Agg", 1);
        /* argv[0] a full path: Python takes sys.executable (which runs the workers) from it,
           and "python3" could find another Python in PATH. */
        execl("/usr/bin/python3", "/usr/bin/python3", SBX_SOURCE_DIR "/guest/interpreter/server.py",
              "--port", portarg, "--host", "127.0.0.1", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 600 && !port_listens(port); i++) /* it warms its contexts first */
        sleep_ms(100);
    if (!port_listens(port) || local_envd_start(NULL, &r->sb) != 0) {
        fprintf(stderr, "setup: the interpreter service did not start on port %u\n", port);
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        free(r);
        return -1;
    }
    r->sb->code_port = port;
    *state = r;
    return 0;
}

static int real_teardown(void **state)
{
    struct real *r = *state;
    local_envd_stop(r->sb);
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
    free(r);
    return 0;
}

static int run(sbx *sb, const char *code, const char *lang, sbx_execution *ex)
{
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = code;
    o.language = lang;
    o.timeout_ms = 30000;
    return sbx_run_code(sb, &o, ex);
}

struct streamed {
    char out[256];
    unsigned nout, nresults;
    bool stop_on_output;
};

static int on_output(void *ctx, int stream, const void *data, size_t len)
{
    struct streamed *s = ctx;
    if (stream == SBX_STDOUT) {
        size_t n = strlen(s->out);
        snprintf(s->out + n, sizeof(s->out) - n, "%.*s", (int)len, (const char *)data);
        s->nout++;
    }
    return s->stop_on_output;
}

static int on_result(void *ctx, const sbx_code_result *r)
{
    (void)r;
    ((struct streamed *)ctx)->nresults++;
    return 0;
}

static void test_real_service(void **state)
{
    sbx *sb = ((struct real *)*state)->sb;
    sbx_execution ex;
    assert_int_equal(run(sb, "x = 40\nprint('hi')\nx + 2", NULL, &ex), 0);
    assert_string_equal(ex.out, "hi\n");
    assert_int_equal(ex.nresults, 1);
    assert_true(ex.results[0].is_main_result);
    assert_string_equal(sbx_code_result_get(&ex.results[0], "text/plain"), "42");
    assert_null(sbx_code_result_get(&ex.results[0], "image/png"));
    assert_null(ex.error);
    assert_string_equal(ex.context, "python");
    unsigned count = ex.execution_count;
    assert_true(count >= 1);
    sbx_execution_free(&ex);

    /* State persists; an exception is an error, not a failure; JSON stays JSON. */
    assert_int_equal(run(sb, "x / 0", "python", &ex), 0);
    assert_non_null(ex.error);
    assert_string_equal(ex.error->name, "ZeroDivisionError");
    assert_non_null(strstr(ex.error->traceback, "ZeroDivisionError"));
    assert_int_equal(ex.execution_count, count + 1);
    sbx_execution_free(&ex);
    assert_int_equal(
        run(sb, "class J:\n  def _repr_json_(self): return {'a': [1, 2]}\nJ()", NULL, &ex), 0);
    assert_int_equal(ex.nresults, 1);
    assert_string_equal(sbx_code_result_get(&ex.results[0], "application/json"), "{\"a\":[1,2]}");
    sbx_execution_free(&ex);

    /* Streaming callbacks. */
    struct streamed s = {0};
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "print('a', flush=True)\ndisplay(1)\nprint('b')\n3";
    o.on_output = on_output;
    o.on_result = on_result;
    o.ctx = &s;
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    assert_string_equal(s.out, "a\nb\n");
    assert_int_equal(s.nresults, 2);
    assert_int_equal(ex.nresults, 2);
    assert_false(ex.results[0].is_main_result);
    assert_true(ex.results[1].is_main_result);
    sbx_execution_free(&ex);

    /* Bash keeps its cwd; its exit code comes back. */
    assert_int_equal(run(sb, "cd /tmp; false", "bash", &ex), 0);
    assert_int_equal(ex.exit_code, 1);
    sbx_execution_free(&ex);
    assert_int_equal(run(sb, "pwd", "bash", &ex), 0);
    assert_string_equal(ex.out, "/tmp\n");
    assert_int_equal(ex.exit_code, 0);
    sbx_execution_free(&ex);

    /* A timeout interrupts and keeps the context. */
    o = (sbx_run_code_options)SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "import time\nwhile True: time.sleep(0.05)";
    o.timeout_ms = 500;
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    assert_true(ex.timed_out);
    assert_false(ex.restarted);
    assert_non_null(ex.error);
    assert_string_equal(ex.error->name, "KeyboardInterrupt");
    sbx_execution_free(&ex);
    assert_int_equal(run(sb, "x", NULL, &ex), 0);
    assert_string_equal(sbx_code_result_get(&ex.results[0], "text/plain"), "40");
    sbx_execution_free(&ex);

    /* A callback that stops the call interrupts the code. */
    s = (struct streamed){.stop_on_output = true};
    o = (sbx_run_code_options)SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "import time\nwhile True:\n  print('.', flush=True)\n  time.sleep(0.05)";
    o.on_output = on_output;
    o.ctx = &s;
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINTR);
    sbx_execution_free(&ex);
    assert_int_equal(run(sb, "x + 1", NULL, &ex), 0); /* waits its turn, then runs */
    assert_string_equal(sbx_code_result_get(&ex.results[0], "text/plain"), "41");
    sbx_execution_free(&ex);
}

struct interrupter {
    sbx *sb;
    const char *context;
    int rc;
};

static void *interrupt_later(void *arg)
{
    struct interrupter *it = arg;
    sleep_ms(700);
    it->rc = sbx_code_interrupt(it->sb, it->context);
    return NULL;
}

static void test_real_contexts(void **state)
{
    sbx *sb = ((struct real *)*state)->sb;
    sbx_code_context a, b;
    assert_int_equal(sbx_code_context_create(sb, NULL, "/tmp", &a), 0);
    assert_string_equal(a.language, "python");
    assert_string_equal(a.cwd, "/tmp");
    assert_int_equal(sbx_code_context_create(sb, "bash", NULL, &b), 0);
    assert_string_not_equal(a.id, b.id);
    assert_int_equal(sbx_code_context_create(sb, "ruby", NULL, NULL), SBX_EINVAL);
    assert_int_equal(sbx_code_context_create(sb, "python", "/no/such/dir", NULL), SBX_ENOENT);

    sbx_code_context *l;
    size_t n;
    assert_int_equal(sbx_code_context_list(sb, &l, &n), 0);
    bool seen_a = false, seen_b = false, seen_default = false;
    for (size_t i = 0; i < n; i++) {
        seen_a |= strcmp(l[i].id, a.id) == 0;
        seen_b |= strcmp(l[i].id, b.id) == 0;
        seen_default |= strcmp(l[i].id, "python") == 0;
    }
    free(l);
    assert_true(seen_a && seen_b && seen_default);

    /* State is per context. */
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    sbx_execution ex;
    o.context = a.id;
    o.code = "import os\ny = 5\nos.getcwd()";
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    assert_string_equal(sbx_code_result_get(&ex.results[0], "text/plain"), "'/tmp'");
    sbx_execution_free(&ex);
    o.context = NULL;
    o.code = "y";
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    assert_string_equal(ex.error->name, "NameError");
    sbx_execution_free(&ex);

    /* A context of another language than asked for is refused. */
    o.context = a.id;
    o.language = "bash";
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL);
    sbx_execution_free(&ex);

    /* An explicit interrupt from another thread. */
    struct interrupter it = {.sb = sb, .context = a.id};
    pthread_t t;
    pthread_create(&t, NULL, interrupt_later, &it);
    o.language = NULL;
    o.code = "import time\nwhile True: time.sleep(0.05)";
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    pthread_join(t, NULL);
    assert_int_equal(it.rc, 0);
    assert_true(ex.interrupted);
    assert_string_equal(ex.error->name, "KeyboardInterrupt");
    sbx_execution_free(&ex);

    /* Restart clears the state; remove makes the id unknown. */
    assert_int_equal(sbx_code_context_restart(sb, a.id), 0);
    o.code = "y";
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    assert_string_equal(ex.error->name, "NameError");
    assert_int_equal(ex.execution_count, 1);
    sbx_execution_free(&ex);
    assert_int_equal(sbx_code_context_remove(sb, a.id), 0);
    assert_int_equal(sbx_code_context_remove(sb, a.id), SBX_ENOENT);
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_ENOENT);
    sbx_execution_free(&ex);
    assert_int_equal(sbx_code_interrupt(sb, "nosuchcontext"), SBX_ENOENT);
    assert_int_equal(sbx_code_context_remove(sb, b.id), 0);
}

/* --- API misuse (no service needed) ---------------------------------------------------------- */

static int envd_setup(void **state)
{
    sbx *sb = NULL;
    if (local_envd_start(NULL, &sb) != 0)
        return -1;
    *state = sb;
    return 0;
}

static int envd_teardown(void **state)
{
    local_envd_stop(*state);
    return 0;
}

static void test_misuse(void **state)
{
    sbx *sb = *state;
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    sbx_execution ex;
    assert_int_equal(sbx_run_code(NULL, &o, &ex), SBX_EINVAL);
    assert_int_equal(sbx_run_code(sb, NULL, &ex), SBX_EINVAL);
    assert_int_equal(sbx_run_code(sb, &o, NULL), SBX_EINVAL);
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL); /* no code */
    assert_non_null(strstr(sbx_errmsg(sb), "no code"));
    o.code = "\xff\xfe";
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "UTF-8"));
    o.code = "1";
    o.language = "cobol";
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL);
    o.language = NULL;
    o.context = "../etc";
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL);
    o.context = NULL;
    const char *envs[] = {"NOEQUALS", NULL};
    o.envs = envs;
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL);
    o.envs = NULL;
    o.version = 0;
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_EINVAL);
    sbx_execution_free(&ex);
    sbx_execution_free(NULL);
    assert_int_equal(sbx_code_interrupt(sb, NULL), SBX_EINVAL);
    assert_int_equal(sbx_code_context_restart(sb, ""), SBX_EINVAL);
    assert_int_equal(sbx_code_context_remove(NULL, "python"), SBX_EINVAL);
    assert_int_equal(sbx_code_context_list(sb, NULL, NULL), SBX_EINVAL);
    assert_null(sbx_code_result_get(NULL, "text/plain"));

    /* Nothing listens on the port: not supported, said clearly. */
    sb->code_port = free_port();
    o = (sbx_run_code_options)SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "1";
    assert_int_equal(sbx_run_code(sb, &o, &ex), SBX_ENOTSUP);
    assert_non_null(strstr(sbx_errmsg(sb), "code-interpreter template"));
    sbx_execution_free(&ex);
}

/* --- a hostile service ----------------------------------------------------------------------- */

/* Serves one scripted answer per connection: reads the request line, writes `reply` (and
   `filler` bytes of 'x' before it, when set), then closes. */
struct fake {
    int lfd;
    unsigned port;
    pthread_t thread;
    const char *reply;
    size_t filler;
    char request[4096];
    atomic_bool stop;
};

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *fake_loop(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        int c = accept(f->lfd, NULL, NULL);
        if (c < 0)
            continue;
        size_t n = 0;
        while (n + 1 < sizeof(f->request)) {
            ssize_t r = read(c, f->request + n, sizeof(f->request) - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            if (memchr(f->request, '\n', n))
                break;
        }
        f->request[n] = '\0';
        if (f->filler) {
            char *x = malloc(f->filler);
            memset(x, 'x', f->filler);
            write_all(c, x, f->filler);
            free(x);
        }
        write_all(c, f->reply, strlen(f->reply));
        close(c);
    }
    return NULL;
}

struct fixture {
    sbx *sb;
    struct fake *f;
};

static int fake_setup(void **state)
{
    struct fixture *x = calloc(1, sizeof(*x));
    struct fake *f = x->f = calloc(1, sizeof(*f));
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (bind(f->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(f->lfd, 16) ||
        getsockname(f->lfd, (struct sockaddr *)&a, &l) || local_envd_start(NULL, &x->sb) != 0)
        return -1;
    f->port = ntohs(a.sin_port);
    x->sb->code_port = f->port;
    pthread_create(&f->thread, NULL, fake_loop, f);
    *state = x;
    return 0;
}

static int fake_teardown(void **state)
{
    struct fixture *x = *state;
    local_envd_stop(x->sb);
    atomic_store(&x->f->stop, true);
    pthread_join(x->f->thread, NULL);
    close(x->f->lfd);
    free(x->f);
    free(x);
    return 0;
}

/* One hostile answer: the call returns `want`, with `msg` in the error message. */
static void hostile(sbx *sb, struct fake *f, const char *reply, size_t filler, int want,
                    const char *msg)
{
    f->reply = reply;
    f->filler = filler;
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "1";
    sbx_execution ex;
    int r = sbx_run_code(sb, &o, &ex);
    if (r != want || (msg && !strstr(sbx_errmsg(sb), msg)))
        fail_msg("reply %.60s: got %d (%s), want %d with \"%s\"", reply, r, sbx_errmsg(sb), want,
                 msg ? msg : "");
    sbx_execution_free(&ex);
}

#define END "{\"type\":\"end\",\"context\":\"python\",\"execution_count\":1}\n"

static void test_hostile(void **state)
{
    sbx *sb = ((struct fixture *)*state)->sb;
    struct fake *f = ((struct fixture *)*state)->f;
    /* The request is one JSON line with what the options said. */
    hostile(sb, f, END, 0, 0, NULL);
    assert_non_null(strstr(f->request, "\"op\":\"execute\""));
    assert_non_null(strstr(f->request, "\"timeout_ms\":300000"));
    assert_non_null(strstr(f->request, "\"SBX_SANDBOX_ID\":\""));
    assert_non_null(strchr(f->request, '\n'));

    hostile(sb, f, "not json\n", 0, SBX_EPROTO, "not a JSON object");
    hostile(sb, f, "[1,2]\n", 0, SBX_EPROTO, "not a JSON object");
    hostile(sb, f, "{\"type\":\"end\"} trailing\n", 0, SBX_EPROTO, "not a JSON object");
    hostile(sb, f, "{\"type\":\"stdout\",\"text\":\"a\"}\n", 0, SBX_EPROTO, "closed");
    hostile(sb, f, "", 0, SBX_EPROTO, "closed");
    hostile(sb, f, "{\"type\":\"surprise\"}\n", 0, SBX_EPROTO, "unknown answer");
    hostile(sb, f, "{\"text\":\"a\"}\n", 0, SBX_EPROTO, "without a type");
    hostile(sb, f, "{\"type\":\"stdout\",\"text\":5}\n", 0, SBX_EPROTO, "output without text");
    hostile(sb, f, "{\"type\":\"result\",\"data\":[]}\n", 0, SBX_EPROTO, "data object");
    hostile(sb, f, "{\"type\":\"result\",\"data\":{\"text/plain\":5}}\n", 0, SBX_EPROTO,
            "not a string");
    hostile(sb, f, "{\"type\":\"result\",\"data\":{\"bad mime\":\"x\"}}\n", 0, SBX_EPROTO, "MIME");
    hostile(sb, f, "{\"type\":\"result\",\"is_main_result\":3,\"data\":{}}\n", 0, SBX_EPROTO,
            "data object");
    hostile(sb, f, "{\"type\":\"error\",\"name\":\"E\"}\n", 0, SBX_EPROTO, "without name");
    hostile(sb, f, "{\"type\":\"end\",\"context\":\"../x\",\"execution_count\":1}\n", 0, SBX_EPROTO,
            "malformed end");
    hostile(sb, f, "{\"type\":\"end\",\"context\":\"p\",\"execution_count\":-1}\n", 0, SBX_EPROTO,
            "malformed end");
    hostile(sb, f, "{\"type\":\"end\",\"context\":\"p\",\"exit_code\":\"0\"}\n", 0, SBX_EPROTO,
            "malformed end");
    hostile(sb, f, "{\"type\":\"failure\",\"code\":\"busy\",\"message\":\"full\\u0007\"}\n", 0,
            SBX_EBUSY, "refused: full?");
    hostile(sb, f, "{\"type\":\"failure\",\"code\":\"not_found\"}\n", 0, SBX_ENOENT, "no message");
    hostile(sb, f, "{\"type\":\"failure\",\"code\":\"whatever\"}\n", 0, SBX_EPROTO, "refused");
    /* Deeply nested JSON is refused by the parser, not the stack. */
    static char deep[4096];
    size_t k = 0;
    k += (size_t)snprintf(deep, sizeof(deep),
                          "{\"type\":\"result\",\"data\":{\"application/json\":");
    for (int i = 0; i < 1000; i++)
        deep[k++] = '[';
    deep[k++] = '\n';
    deep[k] = '\0';
    hostile(sb, f, deep, 0, SBX_EPROTO, "not a JSON object");

    /* 33 formats. */
    static char many[4096];
    k = (size_t)snprintf(many, sizeof(many), "{\"type\":\"result\",\"data\":{");
    for (int i = 0; i < 33; i++)
        k += (size_t)snprintf(many + k, sizeof(many) - k, "%s\"x/%d\":\"v\"", i ? "," : "", i);
    snprintf(many + k, sizeof(many) - k, "}}\n" END);
    hostile(sb, f, many, 0, SBX_EPROTO, "33 formats");

    /* A line longer than 64 MiB. */
    hostile(sb, f, "\n", (64u << 20) + 10, SBX_EPROTO, "longer than");
}

/* Capture caps: 16 MiB of output per stream and 1024 results are kept, the rest dropped. */
static void test_caps(void **state)
{
    sbx *sb = ((struct fixture *)*state)->sb;
    struct fake *f = ((struct fixture *)*state)->f;
    size_t chunk = 1u << 20, nchunks = 17;
    size_t cap = nchunks * (chunk + 64) + 1025 * 64 + 256;
    char *reply = malloc(cap), *text = malloc(chunk + 1);
    memset(text, 'o', chunk);
    text[chunk] = '\0';
    size_t k = 0;
    for (size_t i = 0; i < nchunks; i++)
        k += (size_t)snprintf(reply + k, cap - k, "{\"type\":\"stdout\",\"text\":\"%s\"}\n", text);
    for (int i = 0; i < 1030; i++)
        k += (size_t)snprintf(reply + k, cap - k,
                              "{\"type\":\"result\",\"data\":{\"application/json\":{\"i\":%d}}}\n",
                              i);
    snprintf(reply + k, cap - k, END);
    f->reply = reply;
    struct streamed s = {0};
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "1";
    o.on_result = on_result;
    o.ctx = &s;
    sbx_execution ex;
    assert_int_equal(sbx_run_code(sb, &o, &ex), 0);
    assert_int_equal(ex.out_len, 16u << 20);
    assert_int_equal(ex.nresults, 1024);
    assert_int_equal(s.nresults, 1030);
    assert_string_equal(sbx_code_result_get(&ex.results[1023], "application/json"), "{\"i\":1023}");
    assert_int_equal(ex.execution_count, 1);
    sbx_execution_free(&ex);
    free(reply);
    free(text);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_misuse, envd_setup, envd_teardown),
        cmocka_unit_test_setup_teardown(test_real_service, real_setup, real_teardown),
        cmocka_unit_test_setup_teardown(test_real_contexts, real_setup, real_teardown),
        cmocka_unit_test_setup_teardown(test_hostile, fake_setup, fake_teardown),
        cmocka_unit_test_setup_teardown(test_caps, fake_setup, fake_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
