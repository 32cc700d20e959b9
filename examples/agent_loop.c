// SPDX-License-Identifier: Apache-2.0
/*
 * An agent loop without the model: code strings arrive one by one, as an LLM would produce
 * them; each runs in the same sandbox, and what it printed, how it ended and its errors go
 * back as the next "observation". Files persist between steps (the sandbox's state); every
 * step has a time limit and a cap on how much output is fed back.
 *
 *     agent_loop [ROOTFS]    (default "base": Debian with python3)
 */
#include <stdio.h>
#include <string.h>

#include <sandbox.h>

/* What a model might answer, including its usual mistakes. */
static const char *const steps[] = {
    /* 1: plain work */
    "import sys\nprint('python', sys.version.split()[0])\nprint(sum(range(1, 101)))\n",
    /* 2: state for later steps lives in files */
    "with open('notes.txt', 'w') as f:\n    f.write('the answer is 42\\n')\nprint('saved')\n",
    /* 3: reads what step 2 left */
    "print(open('notes.txt').read().strip())\n",
    /* 4: a bug: the traceback is the observation the model needs */
    "values = [3, 1, 0]\nprint([10 / v for v in values])\n",
    /* 5: far too much output: only the first part is fed back */
    "for i in range(200000):\n    print('line', i)\n",
    /* 6: never ends: the time limit stops it */
    "import time\nwhile True:\n    time.sleep(1)\n",
};

#define STEP_TIMEOUT_MS 10000 /* per step */
#define FEEDBACK_CAP    600   /* bytes of each stream fed back to the model */

/* Prints one stream of the observation, at most FEEDBACK_CAP bytes of it. */
static void feed_back(const char *name, const char *data, size_t len, int truncated)
{
    if (!data || !len)
        return;
    size_t n = len < FEEDBACK_CAP ? len : FEEDBACK_CAP;
    printf("  %s:\n%.*s%s", name, (int)n, data, data[n - 1] == '\n' ? "" : "\n");
    if (truncated)
        printf("  [%s truncated: %zu bytes shown, more than %zu produced]\n", name, n, len);
    else if (n < len)
        printf("  [%s truncated: %zu of %zu bytes shown]\n", name, n, len);
}

int main(int argc, char **argv)
{
    sbx_options opts = SBX_OPTIONS_INIT;
    opts.rootfs = argc > 1 ? argv[1] : "base";
    opts.memory_mib = 256;
    sbx *sb = NULL;
    int rc = sbx_create(&sb, &opts);
    if (rc != 0) {
        fprintf(stderr, "agent_loop: sbx_create: %s: %s\n", sbx_strerror(rc), sbx_errmsg(sb));
        sbx_destroy(sb);
        return 1;
    }
    int failed = 0;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char path[64];
        snprintf(path, sizeof(path), "step%zu.py", i + 1);
        printf("== step %zu: the model wrote %s\n", i + 1, path);
        /* A file rather than `python3 -c`: tracebacks then show the code's lines. */
        if ((rc = sbx_write_file(sb, path, steps[i], strlen(steps[i]), 0)) != 0) {
            fprintf(stderr, "agent_loop: writing %s: %s\n", path, sbx_errmsg(sb));
            failed = 1;
            break;
        }
        const char *cmd[] = {"python3", path, NULL};
        sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
        x.argv = cmd;
        x.timeout_ms = STEP_TIMEOUT_MS;
        x.output_cap = 64 * 1024; /* the guest keeps running; the host keeps only this much */
        sbx_exec_result res;
        if ((rc = sbx_exec(sb, &x, &res)) != 0) {
            /* The sandbox itself failed (not the code): no point in going on. */
            fprintf(stderr, "agent_loop: running %s: %s\n", path, sbx_errmsg(sb));
            failed = 1;
            break;
        }
        printf("observation: ");
        if (res.timed_out)
            printf("timed out after %u s (killed)\n", STEP_TIMEOUT_MS / 1000);
        else if (res.signal)
            printf("killed by signal %d\n", res.signal);
        else
            printf("exit code %d after %llu ms\n", res.exit_code,
                   (unsigned long long)res.duration_ms);
        feed_back("stdout", res.out, res.out_len, res.truncated);
        feed_back("stderr", res.err, res.err_len, res.truncated);
        sbx_exec_result_free(&res);
    }
    sbx_destroy(sb);
    return failed;
}
