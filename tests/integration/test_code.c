// SPDX-License-Identifier: Apache-2.0
/* The code interpreter end to end: the code-interpreter template built from the repository's
   guest/interpreter/Dockerfile, sandboxes made from it, sbx_run_code in every language. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static const char *store = SBX_BINARY_DIR "/code-store";

/* Builds the template once (later builds are cache hits) and makes a sandbox from it. Skips
   when the code image has not been built. */
static sbx *code_sandbox(void)
{
    if (access(itest_image("code.ext4"), R_OK) != 0) {
        printf("SKIP: %s is missing (make images builds it)\n", itest_image("code.ext4"));
        exit(ITEST_SKIP);
    }
    sbx_template_build_options b = SBX_TEMPLATE_BUILD_OPTIONS_INIT;
    b.name = "code-interpreter";
    b.dockerfile = SBX_SOURCE_DIR "/guest/interpreter/Dockerfile";
    b.template_dir = store;
    b.kernel = getenv("SBX_KERNEL");
    b.ready_timeout_ms = 600000; /* the emulated host is slow to import numpy and pandas */
    char err[2048];
    double t0 = itest_ms();
    int r = sbx_template_build(&b, NULL, err, sizeof(err));
    if (r != 0)
        itest_fail(__FILE__, __LINE__, "template build: %s: %s", sbx_strerror(r), err);
    fprintf(stderr, "template code-interpreter ready in %.0f ms\n", itest_ms() - t0);
    sbx_options o = itest_options("base");
    o.rootfs = NULL;
    o.memory_mib = 0;
    o.template_name = "code-interpreter";
    o.template_dir = store;
    sbx *sb = NULL;
    t0 = itest_ms();
    CHECK_OK(sb, sbx_create(&sb, &o));
    fprintf(stderr, "created from the template in %.1f ms\n", itest_ms() - t0);
    return sb;
}

static void run(sbx *sb, const char *lang, const char *ctx, const char *code, sbx_execution *ex)
{
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = code;
    o.language = lang;
    o.context = ctx;
    o.timeout_ms = 120000;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_run_code(sb, &o, ex));
    fprintf(stderr, "run_code %.40s... in %.1f ms\n", code, itest_ms() - t0);
}

static const char *text_of(const sbx_execution *ex, size_t i)
{
    CHECK(i < ex->nresults);
    const char *t = sbx_code_result_get(&ex->results[i], "text/plain");
    CHECK(t != NULL);
    return t;
}

SBX_TEST(python_state_results_and_errors)
{
    sbx *sb = code_sandbox();
    sbx_execution ex;
    run(sb, NULL, NULL, "1 + 1", &ex);
    CHECK(ex.nresults == 1 && ex.results[0].is_main_result);
    CHECK(strcmp(text_of(&ex, 0), "2") == 0);
    sbx_execution_free(&ex);

    run(sb, "python", NULL, "import numpy as np\nx = np.arange(10)\ny = 'h\\u00e9llo \\u2603'",
        &ex);
    CHECK(ex.nresults == 0 && ex.error == NULL);
    sbx_execution_free(&ex);
    run(sb, NULL, NULL, "print(y)\nint(x.sum())", &ex);
    CHECK(strcmp(ex.out, "h\xc3\xa9llo \xe2\x98\x83\n") == 0);
    CHECK(strcmp(text_of(&ex, 0), "45") == 0);
    sbx_execution_free(&ex);

    run(sb, NULL, NULL, "def f():\n    return 1 / 0\nf()", &ex);
    CHECK(ex.error != NULL);
    CHECK(strcmp(ex.error->name, "ZeroDivisionError") == 0);
    CHECK(strcmp(ex.error->value, "division by zero") == 0);
    CHECK(strstr(ex.error->traceback, "in f") != NULL);
    sbx_execution_free(&ex);

    run(sb, NULL, NULL, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})", &ex);
    CHECK(ex.nresults == 1);
    CHECK(strstr(text_of(&ex, 0), "a  b") != NULL);
    const char *html = sbx_code_result_get(&ex.results[0], "text/html");
    CHECK(html && strstr(html, "<table") != NULL);
    sbx_execution_free(&ex);

    /* A large output arrives whole, in order. */
    run(sb, NULL, NULL, "for i in range(200000): print(i)", &ex);
    CHECK(ex.out_len > 1000000);
    CHECK(strncmp(ex.out, "0\n1\n2\n", 6) == 0);
    CHECK(strcmp(ex.out + ex.out_len - 7, "199999\n") == 0);
    sbx_execution_free(&ex);
    sbx_destroy(sb);
}

static size_t b64_decode(const char *in, unsigned char *out, size_t cap)
{
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *in && *in != '='; in++) {
        const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = strchr(tbl, *in);
        if (!p)
            continue;
        acc = acc << 6 | (unsigned)(p - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n] = (unsigned char)(acc >> bits);
            n++;
        }
    }
    return n;
}

SBX_TEST(matplotlib_plot_is_a_png)
{
    sbx *sb = code_sandbox();
    sbx_execution ex;
    run(sb, NULL, NULL,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nNone", &ex);
    CHECK(ex.nresults == 1 && !ex.results[0].is_main_result);
    const char *png = sbx_code_result_get(&ex.results[0], "image/png");
    CHECK(png != NULL);
    static unsigned char bin[1 << 20];
    size_t n = b64_decode(png, bin, sizeof(bin));
    CHECK(n > 1000 && n <= sizeof(bin));
    CHECK(memcmp(bin, "\x89PNG\r\n\x1a\n", 8) == 0 && memcmp(bin + 12, "IHDR", 4) == 0);
    uint32_t w = (uint32_t)bin[16] << 24 | bin[17] << 16 | bin[18] << 8 | bin[19];
    uint32_t h = (uint32_t)bin[20] << 24 | bin[21] << 16 | bin[22] << 8 | bin[23];
    fprintf(stderr, "figure: %u x %u, %zu bytes\n", w, h, n);
    CHECK(w == 640 && h == 480);
    sbx_execution_free(&ex);
    sbx_destroy(sb);
}

SBX_TEST(timeout_interrupts_and_keeps_the_context)
{
    sbx *sb = code_sandbox();
    sbx_execution ex;
    run(sb, NULL, NULL, "kept = 'yes'", &ex);
    sbx_execution_free(&ex);
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.code = "while True:\n    pass";
    o.timeout_ms = 2000;
    CHECK_OK(sb, sbx_run_code(sb, &o, &ex));
    CHECK(ex.timed_out && !ex.restarted);
    CHECK(ex.error && strcmp(ex.error->name, "KeyboardInterrupt") == 0);
    sbx_execution_free(&ex);
    run(sb, NULL, NULL, "kept", &ex);
    CHECK(strcmp(text_of(&ex, 0), "'yes'") == 0);
    sbx_execution_free(&ex);
    sbx_destroy(sb);
}

SBX_TEST(javascript_and_bash)
{
    sbx *sb = code_sandbox();
    sbx_execution ex;
    run(sb, "javascript", NULL, "const a = 20; console.log('js', a); a * 2 + 2", &ex);
    CHECK(strcmp(ex.out, "js 20\n") == 0);
    CHECK(strcmp(text_of(&ex, 0), "42") == 0);
    CHECK(strcmp(ex.context, "javascript") == 0);
    sbx_execution_free(&ex);
    run(sb, "javascript", NULL, "await Promise.resolve(a + 1)", &ex);
    CHECK(strcmp(text_of(&ex, 0), "21") == 0);
    sbx_execution_free(&ex);
    run(sb, "javascript", NULL, "function g() { throw new TypeError('bad'); }\ng()", &ex);
    CHECK(ex.error && strcmp(ex.error->name, "TypeError") == 0);
    CHECK(strcmp(ex.error->value, "bad") == 0 && strstr(ex.error->traceback, "at g") != NULL);
    sbx_execution_free(&ex);

    run(sb, "bash", NULL, "cd /tmp && export V=7 && echo out && echo err >&2", &ex);
    CHECK(strcmp(ex.out, "out\n") == 0 && strcmp(ex.err, "err\n") == 0 && ex.exit_code == 0);
    sbx_execution_free(&ex);
    run(sb, "bash", NULL, "echo $V $(pwd); (exit 3)", &ex);
    CHECK(strcmp(ex.out, "7 /tmp\n") == 0 && ex.exit_code == 3);
    sbx_execution_free(&ex);
    sbx_destroy(sb);
}

struct worker {
    sbx *sb;
    const char *ctx;
    sbx_execution ex;
    int rc;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.context = w->ctx;
    o.code = "import time\nt0 = time.time()\ntime.sleep(3)\n(t0, time.time())";
    o.timeout_ms = 120000;
    w->rc = sbx_run_code(w->sb, &o, &w->ex);
    return NULL;
}

SBX_TEST(contexts_are_isolated_and_concurrent)
{
    sbx *sb = code_sandbox();
    sbx_code_context a, b;
    CHECK_OK(sb, sbx_code_context_create(sb, "python", NULL, &a));
    CHECK_OK(sb, sbx_code_context_create(sb, "python", "/tmp", &b));
    sbx_execution ex;
    run(sb, NULL, a.id, "z = 'a'", &ex);
    sbx_execution_free(&ex);
    run(sb, NULL, b.id, "import os\n'z' in dir(), os.getcwd()", &ex);
    CHECK(strcmp(text_of(&ex, 0), "(False, '/tmp')") == 0);
    sbx_execution_free(&ex);

    struct worker w[2] = {{.sb = sb, .ctx = a.id}, {.sb = sb, .ctx = b.id}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, work, &w[i]);
    double s[2], e[2];
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CHECK_RC(sb, w[i].rc, 0);
        CHECK(sscanf(text_of(&w[i].ex, 0), "(%lf, %lf)", &s[i], &e[i]) == 2);
        sbx_execution_free(&w[i].ex);
    }
    fprintf(stderr, "a ran %.2f..%.2f, b %.2f..%.2f\n", s[0], e[0], s[1], e[1]);
    CHECK(s[0] < e[1] && s[1] < e[0]); /* the two sleeps overlapped */

    sbx_code_context *l;
    size_t n;
    CHECK_OK(sb, sbx_code_context_list(sb, &l, &n));
    CHECK(n >= 2);
    free(l);
    CHECK_OK(sb, sbx_code_context_remove(sb, a.id));
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.context = a.id;
    o.code = "z";
    CHECK_RC(sb, sbx_run_code(sb, &o, &ex), SBX_ENOENT);
    sbx_execution_free(&ex);
    sbx_destroy(sb);
}

/* Every sandbox of the template starts from the same memory: the interpreters must not hand
   out the same "random" numbers in two of them. */
SBX_TEST(clones_do_not_share_random_state)
{
    static const char *const cells[][2] = {
        {"python", "import random, uuid, numpy\n(random.random(), uuid.uuid4().hex, "
                   "float(numpy.random.rand()))"},
        {"javascript", "[Math.random(), require('crypto').randomBytes(8).toString('hex'), "
                       "require('crypto').randomUUID()].join(' ')"},
        {"bash", "echo $RANDOM $RANDOM $RANDOM"},
    };
    sbx *a = code_sandbox(), *b = code_sandbox();
    for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++) {
        sbx_execution ea, eb;
        run(a, cells[i][0], NULL, cells[i][1], &ea);
        run(b, cells[i][0], NULL, cells[i][1], &eb);
        const char *ta = ea.nresults ? text_of(&ea, 0) : ea.out;
        const char *tb = eb.nresults ? text_of(&eb, 0) : eb.out;
        fprintf(stderr, "%s: %s | %s\n", cells[i][0], ta, tb);
        CHECK(ta && tb && strcmp(ta, tb) != 0);
        sbx_execution_free(&ea);
        sbx_execution_free(&eb);
    }
    sbx_destroy(a);
    sbx_destroy(b);
}

ITEST_MAIN(ITEST(python_state_results_and_errors), ITEST(matplotlib_plot_is_a_png),
           ITEST(timeout_interrupts_and_keeps_the_context), ITEST(javascript_and_bash),
           ITEST(contexts_are_isolated_and_concurrent), ITEST(clones_do_not_share_random_state))
