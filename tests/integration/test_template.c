// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of templates: a build with every instruction, the layer cache, start and
   ready commands, sandboxes from a template, apt-get in a RUN step, many sandboxes at once. */
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static char store[256], ctx[256];

static void sh_host(const char *cmd)
{
    if (system(cmd) != 0)
        itest_fail(__FILE__, __LINE__, "host command failed: %s", cmd);
}

/* A template store and a build context in the test's temporary directory. */
static void setup_dirs(void)
{
    const char *t = itest_tmpfile("x", "", 0);
    snprintf(store, sizeof(store), "%s.store", t);
    snprintf(ctx, sizeof(ctx), "%s.ctx", t);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "set -e; mkdir -p %s/dir/sub %s/pack; echo one > %s/one.txt; echo deep > "
             "%s/dir/sub/deep.txt; echo packed > %s/pack/p.txt; tar -C %s/pack -cf %s/p.tar p.txt",
             ctx, ctx, ctx, ctx, ctx, ctx, ctx);
    sh_host(cmd);
}

static void expect(sbx *sb, const char *cmd, const char *want)
{
    itest_expect(sb, NULL, cmd, want);
}

static unsigned nprogress, nruns;

static void on_progress(void *ctx_, const sbx_template_progress *p)
{
    (void)ctx_;
    nprogress++;
    if (p->done && p->step > 0 && !p->cached && strncmp(p->text, "RUN", 3) == 0)
        nruns++;
    fprintf(stderr, "[%u/%u] %s%s%s (%llu ms)\n", p->step, p->nsteps, p->cached ? "cached " : "",
            p->text, p->done ? " done" : "", (unsigned long long)p->elapsed_ms);
}

static int on_output(void *ctx_, int stream, const void *data, size_t len)
{
    (void)ctx_;
    (void)stream;
    fwrite(data, 1, len, stderr);
    return 0;
}

static unsigned ready_timeout_ms; /* 0: the default */
static int host_loopback;

static int build(const char *name, const char *text, const char *const *args,
                 sbx_template_info *info, char *err, size_t errlen)
{
    sbx_template_build_options o = SBX_TEMPLATE_BUILD_OPTIONS_INIT;
    o.ready_timeout_ms = ready_timeout_ms;
    o.host_loopback = host_loopback;
    o.name = name;
    o.dockerfile_text = text;
    o.context = ctx;
    o.template_dir = store;
    o.build_args = args;
    o.kernel = getenv("SBX_KERNEL");
    o.on_progress = on_progress;
    o.on_output = on_output;
    o.ctx = NULL;
    nprogress = nruns = 0;
    double t0 = itest_ms();
    int r = sbx_template_build(&o, info, err, errlen);
    fprintf(stderr, "build %s: %d (%.0f ms) %s\n", name, r, itest_ms() - t0, r ? err : "");
    return r;
}

static sbx *from_template(const char *name)
{
    sbx_options o = itest_options("base");
    o.rootfs = NULL;
    o.memory_mib = 0;
    o.template_name = name;
    o.template_dir = store;
    sbx *sb = NULL;
    double t0 = itest_ms();
    CHECK_OK(sb, sbx_create(&sb, &o));
    fprintf(stderr, "created from template %s in %.1f ms\n", name, itest_ms() - t0);
    return sb;
}

static const char *every_instruction =
    "# every instruction of the subset\n"
    "ARG GREETING=hello\n"
    "FROM base\n"
    "ARG GREETING\n"
    "ENV APP_HOME=/srv/app \\\n"
    "    MODE=test\n"
    "WORKDIR $APP_HOME\n"
    "RUN echo \"$GREETING from $MODE\" > greeting.txt\n"
    "COPY one.txt ./\n"
    "COPY dir /srv/tree\n"
    "ADD p.tar /srv/unpacked/\n"
    "RUN [\"sh\", \"-c\", \"id -un > /srv/app/builder-user\"]\n"
    "USER user\n"
    "RUN whoami > /tmp/who && cp /tmp/who /home/user/who\n"
    "LABEL sbx.start=\"python3 -m http.server 8000 --directory /srv\"\n"
    "LABEL sbx.ready=\"port:8000\"\n";

SBX_TEST(build_every_instruction_then_cache)
{
    setup_dirs();
    char err[4096];
    sbx_template_info info;
    const char *args[] = {"GREETING=hi", NULL};
    CHECK(build("every", every_instruction, args, &info, err, sizeof(err)) == 0);
    CHECK(nruns == 3);
    CHECK(info.ncached == 0);
    CHECK(info.memory_bytes > 0);
    fprintf(stderr, "template: %u steps, memory %llu bytes, disk %llu bytes, %llu ms\n",
            info.nsteps, (unsigned long long)info.memory_bytes, (unsigned long long)info.disk_bytes,
            (unsigned long long)info.build_ms);

    /* A sandbox from it: files from every step, ENV, WORKDIR, USER, and the server the start
       command launched answers at once. */
    sbx *sb = from_template("every");
    expect(sb, "cat /srv/app/greeting.txt", "hi from test\n");
    expect(sb, "cat /srv/app/one.txt /srv/tree/sub/deep.txt /srv/unpacked/p.txt",
           "one\ndeep\npacked\n");
    expect(sb, "cat /srv/app/builder-user /home/user/who", "root\nuser\n");
    expect(sb, "echo $APP_HOME $MODE; pwd; whoami", "/srv/app test\n/srv/app\nuser\n");
    expect(sb,
           "python3 -c \"import urllib.request as u; "
           "print(u.urlopen('http://127.0.0.1:8000/app/one.txt', timeout=5).read().decode(), "
           "end='')\"",
           "one\n");
    sbx_destroy(sb);

    /* Unchanged: no work at all. */
    sbx_template_info again;
    double t0 = itest_ms();
    CHECK(build("every", every_instruction, args, &again, err, sizeof(err)) == 0);
    double dt = itest_ms() - t0;
    CHECK(nruns == 0);
    CHECK(again.created_ns == info.created_ns);
    CHECK(again.ncached == again.nsteps);
    CHECK(dt < 5000);

    /* A changed last RUN: the steps before it come from the cache. */
    char *changed = NULL;
    CHECK(asprintf(&changed, "%sRUN echo changed > /tmp/changed\n", every_instruction) > 0);
    CHECK(build("every", changed, args, &again, err, sizeof(err)) == 0);
    CHECK(nruns == 1);
    CHECK(again.ncached >= 6);
    sb = from_template("every");
    expect(sb, "cat /tmp/changed /srv/app/greeting.txt", "changed\nhi from test\n");
    sbx_destroy(sb);
    free(changed);

    /* Listing and removal. */
    sbx_template_info *list = NULL;
    size_t n = 0;
    CHECK(sbx_template_list(store, &list, &n, err, sizeof(err)) == 0);
    CHECK(n == 1 && strcmp(list[0].name, "every") == 0 && !list[0].is_snapshot);
    sbx_template_list_free(list, n);
    CHECK(sbx_template_remove(store, "every", err, sizeof(err)) == 0);
    CHECK(sbx_template_remove(store, "every", err, sizeof(err)) == SBX_ENOENT);
    CHECK(sbx_template_list(store, &list, &n, err, sizeof(err)) == 0 && n == 0);
    sbx_template_list_free(list, n);
}

SBX_TEST(failing_steps_and_bad_files)
{
    setup_dirs();
    char err[4096];
    CHECK(build("bad", "FROM base\nRUN echo before; echo to-stderr >&2; exit 3\n", NULL, NULL, err,
                sizeof(err)) == SBX_EGUEST);
    CHECK(strstr(err, "exited with code 3") && strstr(err, "to-stderr"));
    CHECK(build("bad", "FROM base\nEXPOSE 80\n", NULL, NULL, err, sizeof(err)) == SBX_EINVAL);
    CHECK(build("bad", "FROM nosuchimage\nRUN true\n", NULL, NULL, err, sizeof(err)) == SBX_EIMAGE);
    CHECK(build("Bad Name", "FROM base\n", NULL, NULL, err, sizeof(err)) == SBX_EINVAL);
    CHECK(build("bad", "FROM base\nCOPY missing.txt /x\n", NULL, NULL, err, sizeof(err)) ==
          SBX_EINVAL);
    ready_timeout_ms = 3000;
    CHECK(build("bad", "FROM base\nLABEL sbx.ready=\"cmd:false\"\n", NULL, NULL, err,
                sizeof(err)) == SBX_ETIMEDOUT);
    CHECK(strstr(err, "ready check"));
    /* Nothing was published. */
    sbx_template_info *list = NULL;
    size_t n = 9;
    CHECK(sbx_template_list(store, &list, &n, err, sizeof(err)) == 0 && n == 0);
    sbx_template_list_free(list, n);
}

SBX_TEST(many_sandboxes_from_one_template)
{
    setup_dirs();
    char err[4096];
    CHECK(build("small", "FROM base\nRUN echo ready > /ready\n", NULL, NULL, err, sizeof(err)) ==
          0);
    unsigned count = getenv("SBX_TEST_MANY") ? (unsigned)atoi(getenv("SBX_TEST_MANY")) : 100;
    /* Each sandbox holds a few dozen descriptors (KVM, eventfds, sockets, disk layers). */
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rl.rlim_cur = rl.rlim_max;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < count * 40ull) {
        fprintf(stderr, "only %llu file descriptors: making %llu sandboxes\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_cur / 40);
        count = (unsigned)(rl.rlim_cur / 40);
    }
    sbx **all = calloc(count, sizeof(*all));
    double t0 = itest_ms();
    for (unsigned i = 0; i < count; i++)
        all[i] = from_template("small");
    fprintf(stderr, "%u sandboxes in %.0f ms\n", count, itest_ms() - t0);
    char line[64] = "";
    FILE *f = popen("ls /proc/$PPID/fd | wc -l", "r");
    if (f && fgets(line, sizeof(line), f))
        fprintf(stderr, "%s open descriptors in the process\n", strtok(line, "\n"));
    if (f)
        pclose(f);
    for (unsigned i = 0; i < count; i += count / 10 ? count / 10 : 1)
        expect(all[i], "cat /ready", "ready\n");
    for (unsigned i = 0; i < count; i++)
        sbx_destroy(all[i]);
    free(all);
}

SBX_TEST(apt_get_install_in_a_run_step)
{
    /* A template step installs a package with apt-get through the NAT (from a repository this
       test serves on the host's loopback: no traffic leaves the machine). */
    setup_dirs();
    char text[2048], port[16], err[4096];
    snprintf(port, sizeof(port), "%u", itest_apt_repo());
    snprintf(text, sizeof(text), "FROM base\nRUN " ITEST_APT_INSTALL "\n", port);
    host_loopback = 1;
    CHECK(build("apt", text, NULL, NULL, err, sizeof(err)) == 0);
    host_loopback = 0;
    sbx *sb = from_template("apt");
    expect(sb, "sbx-hello", "hello from a package\n");
    sbx_destroy(sb);
}

ITEST_MAIN(ITEST(build_every_instruction_then_cache), ITEST(failing_steps_and_bad_files),
           ITEST(many_sandboxes_from_one_template), ITEST(apt_get_install_in_a_run_step))
