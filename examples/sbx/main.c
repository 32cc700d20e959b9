// SPDX-License-Identifier: Apache-2.0
/* sbx: the command line tool of libsandbox: options, help, signals and the shared helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "sbx.h"

/* --- help ---------------------------------------------------------------------------------- */

static const char help_main[] =
    "sbx: run commands in throwaway, hardware-isolated Linux sandboxes (KVM microVMs).\n"
    "\n"
    "Usage: sbx [OPTIONS] COMMAND [ARGS...]\n"
    "\n"
    "Every sbx command that needs a sandbox boots a new one inside its own process and\n"
    "destroys it when it exits. There is no daemon: nothing done in a sandbox outlives the\n"
    "sbx command that made it.\n"
    "\n"
    "Commands:\n"
    "  run      run a command in a new sandbox, stream its output, exit with its status\n"
    "  shell    an interactive terminal (login shell) in a new sandbox\n"
    "  cp       copy files and directory trees between this machine and a new sandbox\n"
    "  ls       list the sandboxes running on this machine (made by any program)\n"
    "  help     help for a command (same as sbx COMMAND --help)\n"
    "\n"
    "Options of every command that boots a sandbox (before or after COMMAND):\n"
    "  --rootfs NAME|PATH    root filesystem: an image name from the image directory (\"base\":\n"
    "                        Debian 12 with bash and python3; \"test\": busybox) or a path to\n"
    "                        an ext4 image [base]\n"
    "  --template NAME       accepted, and for now the same as --rootfs NAME (templates, that\n"
    "                        is snapshots of prepared sandboxes, come in a later version)\n"
    "  --kernel PATH         guest kernel, vmlinux or bzImage [$SBX_KERNEL, else vmlinux from\n"
    "                        the image directory]\n"
    "  --cpus N              virtual CPUs, 1 to 64 [1]\n"
    "  --memory MIB          guest memory in MiB, 64 to 65536; 2G means 2048 [512]\n"
    "  --metadata KEY=VALUE  a label, shown by `sbx ls` (repeatable)\n"
    "  --boot-timeout S      give up when the guest has not booted within S seconds [30]\n"
    "  -v, --verbose         copy the guest's console to stderr and say what sbx does\n"
    "\n"
    "Network (docs/networking.md): the sandbox has eth0 behind a NAT with internet access.\n"
    "  --no-network          no network device, only loopback\n"
    "  --block-internet      block every destination not allowed with --allow-out\n"
    "  --allow-out RULE      always allow RULE: an address, a CIDR (10.0.0.0/8), a domain\n"
    "                        (example.com, *.example.com), optionally :PORT or :LOW-HIGH;\n"
    "                        wins over --deny-out (repeatable)\n"
    "  --deny-out RULE       block RULE unless allowed (repeatable)\n"
    "  --add-host NAME=IP    answer NAME with IP in the sandbox's DNS (repeatable)\n"
    "  --host-loopback       let the gateway 10.0.2.2 reach this machine's 127.0.0.1\n"
    "  --tap NAME --tap-address IP/PREFIX --tap-gateway IP [--tap-dns IP]\n"
    "                        use the existing TAP device NAME instead of the NAT\n"
    "\n"
    "  -h, --help            this help; `sbx COMMAND --help` for a command's\n"
    "  --version             the version of sbx (that of libsandbox)\n"
    "\n"
    "Exit status: `run` and `shell` exit with the command's status (128+N when signal N\n"
    "killed it, 124 when --timeout did, 130 after Ctrl-C). 125 means sbx itself failed (bad\n"
    "usage, no usable KVM, a missing image, a failed copy); the reason is on stderr as\n"
    "\"sbx: ...\".\n"
    "\n"
    "Examples:\n"
    "  sbx run -- uname -a\n"
    "  sbx run 'ls / | wc -l'                   # one word with a | : run by the shell\n"
    "  echo 'print(6 * 7)' | sbx run python3    # stdin goes to the command\n"
    "  sbx run --copy-in ./proj:proj --copy-out proj/out:./out -- make -C proj\n"
    "  sbx shell --cpus 2 --memory 1G\n"
    "  sbx ls\n"
    "\n"
    "Images (kernel, root filesystems) are looked up in $SBX_CACHE_DIR, else\n"
    "$XDG_CACHE_HOME/libsandbox, else ~/.cache/libsandbox; `make images` builds them.\n";

static const char help_run[] =
    "Usage: sbx run [OPTIONS] [--] CMD [ARG...]\n"
    "       sbx run [OPTIONS] -c 'SHELL COMMAND LINE'\n"
    "\n"
    "Boots a new sandbox, runs CMD in it, streams CMD's stdout and stderr here as they come,\n"
    "destroys the sandbox and exits with CMD's exit status. On the base image CMD runs as\n"
    "`user` in its home directory (/home/user).\n"
    "\n"
    "How CMD runs:\n"
    "  - several words run as an argv, with no shell:    sbx run ls -l /\n"
    "  - a single word that contains a space, a tab or one of  | & ; < > ( ) $ ` \\ \" ' * ? [ ~\n"
    "    is a shell command line, run with the guest's `bash -l -c` (`sh -c` without bash):\n"
    "                                                     sbx run 'ls / | wc -l'\n"
    "  - -c STRING is always a shell command line:        sbx run -c 'cd /tmp && pwd'\n"
    "  Options go before CMD: everything from CMD on is CMD's. Write -- before a CMD that\n"
    "  starts with '-'. CMD is looked up in the guest's PATH; 127: not found, 126: not\n"
    "  executable.\n"
    "\n"
    "Standard input: when sbx's stdin is a pipe or a file, it is read to its end first (at\n"
    "most 64 MiB; use --copy-in for more) and given to CMD. When it is a terminal (or with\n"
    "--no-stdin), CMD's stdin is empty: CMD cannot be interactive (use `sbx shell`).\n"
    "\n"
    "Options:\n"
    "  -e, --env KEY=VALUE    environment variable for CMD (repeatable); `-e KEY` passes this\n"
    "                         machine's value of KEY\n"
    "  -w, --cwd DIR          working directory [the user's home]\n"
    "  -u, --user USER        user name or uid in the guest [`user` if the image has one,\n"
    "                         else root]\n"
    "  --timeout S            kill CMD and every process of its process group after S seconds\n"
    "                         (decimals allowed) and exit 124 [no limit]\n"
    "  --copy-in HOST:GUEST   copy a file or directory tree into the sandbox before CMD runs\n"
    "                         (repeatable)\n"
    "  --copy-out GUEST:HOST  copy one out after CMD ran, whatever its status (repeatable)\n"
    "  -p, --publish [HOSTPORT:]GUESTPORT\n"
    "                         make TCP port GUESTPORT of the sandbox reachable on this machine\n"
    "                         at 127.0.0.1:HOSTPORT while CMD runs (repeatable); without\n"
    "                         HOSTPORT a free port is picked. The mapping is printed to stderr.\n"
    "                         ADDR:HOSTPORT:GUESTPORT listens on ADDR instead (0.0.0.0: every\n"
    "                         interface, so other machines can connect: no authentication).\n"
    "                         Services that listen only on the guest's 127.0.0.1 work too.\n"
    "  -c STRING              run STRING with the guest's shell (instead of CMD)\n"
    "  --no-stdin             do not read stdin; CMD's stdin is empty\n"
    "  and the sandbox options of `sbx --help` (--rootfs, --cpus, --memory, --verbose, ...)\n"
    "\n"
    "Copies: the first ':' separates the two paths. Guest paths are absolute or relative to\n"
    "the user's home. Like cp: when the destination is an existing directory or ends with\n"
    "'/', the source goes into it under its own name; otherwise the destination is the new\n"
    "name. Directories are copied recursively with modes and symlinks; a source that is\n"
    "itself a symlink is followed.\n"
    "\n"
    "Exit status: CMD's; 128+N if signal N killed it; 124 on --timeout; 130 after Ctrl-C\n"
    "(which stops CMD and the sandbox); 141 if sbx's stdout was closed (a broken pipe); 125 if\n"
    "sbx failed (no sandbox, an unknown user or directory, a failed copy: see stderr).\n"
    "\n"
    "Examples:\n"
    "  sbx run -- echo hello\n"
    "  sbx run -e NAME=world -c 'echo hello $NAME'\n"
    "  sbx run --user root --cwd /etc -- ls\n"
    "  sbx run --timeout 10 -- python3 -c 'while True: pass'; echo $?     # 124\n"
    "  tar c src | sbx run -- tar x -v\n"
    "  sbx run --copy-in ./src:src --copy-out src/build:./build -- make -C src\n"
    "  sbx run -p 8000:8000 -- python3 -m http.server 8000   # http://127.0.0.1:8000/\n";

static const char help_shell[] =
    "Usage: sbx shell [OPTIONS] [--] [CMD [ARG...]]\n"
    "\n"
    "Boots a new sandbox and opens an interactive terminal in it running the user's login\n"
    "shell (`bash -l`, else `sh -l`), or CMD (the same rules as `sbx run`; try `top`). Your\n"
    "terminal is switched to raw mode, so every key (Ctrl-C, Ctrl-Z, arrows) goes to the\n"
    "sandbox; it is restored when sbx ends, however it ends. Window size changes are passed\n"
    "on. Leave with `exit` or Ctrl-D: sbx exits with the shell's status and the sandbox is\n"
    "destroyed, with everything done in it.\n"
    "\n"
    "When stdin is not a terminal, what it gives is typed into the sandbox's terminal as it\n"
    "comes; once it ends, Ctrl-D (end of input) is typed every second until the shell exits:\n"
    "    echo 'uname -a; exit 3' | sbx shell\n"
    "\n"
    "Options:\n"
    "  -e, --env KEY=VALUE    environment variable (repeatable); TERM is xterm-256color\n"
    "  -w, --cwd DIR          working directory [the user's home]\n"
    "  -u, --user USER        user name or uid [`user` if the image has one, else root]\n"
    "  and the sandbox options of `sbx --help` (--rootfs, --cpus, --memory, --verbose, ...)\n"
    "\n"
    "Examples:\n"
    "  sbx shell\n"
    "  sbx shell --user root\n"
    "  sbx shell --rootfs test -- sh\n";

static const char help_cp[] =
    "Usage: sbx cp [OPTIONS] SRC DST\n"
    "\n"
    "Copies a file or a directory tree (recursively, with modes and symlinks) between this\n"
    "machine and a sandbox. Write the sandbox's side as guest:PATH (or :PATH); guest paths\n"
    "are absolute or relative to the user's home. Like cp, a DST that is an existing\n"
    "directory or ends with '/' receives SRC under its own name. A SRC that is a symlink is\n"
    "followed (like cp -H); symlinks inside a tree are copied as symlinks. DST `-` writes a\n"
    "guest file to stdout. A progress line shows on a terminal when a copy takes a while.\n"
    "\n"
    "Read this first: like every sbx command, `sbx cp` boots a sandbox of its own and\n"
    "destroys it when it is done (there is no daemon, and sbx cannot reach a sandbox of\n"
    "another process). So:\n"
    "  - guest -> host gets files out of a fresh image:     sbx cp guest:/etc/os-release .\n"
    "  - host -> guest copies into a throwaway sandbox: it checks that the copy works and\n"
    "    tells what it copied, and then the copy is gone. To work on files in a sandbox,\n"
    "    copy them in and out as part of `sbx run`:\n"
    "        sbx run --copy-in ./proj:proj --copy-out proj/dist:./dist -- make -C proj\n"
    "\n"
    "Options: the sandbox options of `sbx --help` (--rootfs, --verbose, ...).\n"
    "\n"
    "Examples:\n"
    "  sbx cp guest:/etc/os-release -\n"
    "  sbx cp --rootfs ./my.ext4 guest:/opt/app ./app-from-image\n"
    "  sbx cp ./data guest:/tmp/\n";

static const char help_ls[] =
    "Usage: sbx ls [--json] [-q]\n"
    "\n"
    "Lists the sandboxes running on this machine for this user, whichever program created\n"
    "them (other sbx commands, or any program using libsandbox): every sandbox registers\n"
    "itself in $XDG_RUNTIME_DIR/libsandbox (else /tmp/libsandbox-UID) while it runs.\n"
    "\n"
    "Columns: ID, PID (the process the sandbox runs in), AGE, CPUS, MEM (MiB), ROOTFS (the\n"
    "image it booted), METADATA (its labels, from --metadata or sbx_options.metadata).\n"
    "\n"
    "Options:\n"
    "  --json       a JSON array of {\"id\", \"pid\", \"created\", \"ends\" (null: no lifetime),\n"
    "               \"cpus\", \"memory_mib\", \"rootfs\", \"metadata\": {KEY: VALUE}}; times\n"
    "               are RFC 3339, UTC\n"
    "  -q, --quiet  only the IDs, one a line\n";

/* --- messages ------------------------------------------------------------------------------ */

void msg(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "sbx: %s\n", buf);
}

int usage_error(const struct cli *a, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (a && a->name)
        fprintf(stderr, "sbx %s: %s\nTry 'sbx %s --help'.\n", a->name, buf, a->name);
    else
        fprintf(stderr, "sbx: %s\nTry 'sbx --help'.\n", buf);
    return EXIT_SBX;
}

int lib_error(const sbx *sb, int rc, const char *what)
{
    const char *m = sb ? sbx_errmsg(sb) : "";
    msg("%s: %s", what, m && *m ? m : sbx_strerror(rc));
    if (rc == SBX_ENOKVM)
        fprintf(stderr, "hint: this machine's KVM cannot boot the guest; README.md, \"Machines "
                        "whose /dev/kvm cannot boot a standard guest\", says what to do\n");
    else if (rc == SBX_EIMAGE)
        fprintf(stderr, "hint: `make images` builds the guest kernel and root filesystems; "
                        "--rootfs takes an image name or the path of an ext4 image\n");
    return EXIT_SBX;
}

int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

const char *human_bytes(uint64_t n, char buf[32])
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (n < 1024) {
        snprintf(buf, 32, "%llu B", (unsigned long long)n);
        return buf;
    }
    double v = (double)n / 1024;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024;
        u++;
    }
    snprintf(buf, 32, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- signals ------------------------------------------------------------------------------- */

/*
 * sbx blocks the signals it handles before the library creates any thread (threads inherit
 * the mask), and one thread of its own takes them with sigwait(). So no library thread is
 * ever interrupted by them, and the handling code may use ordinary calls. A terminating
 * signal interrupts the sandbox's calls (sbx_interrupt), and the main thread then exits with
 * 128+signal; while no sandbox exists yet (booting), or at a second signal, sbx leaves at once
 * (the VM lives in this process, so it goes with it).
 */
static sigset_t sig_set;
static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static sbx *sig_sb;
static atomic_int sig_term;
static int sig_pipe[2] = {-1, -1};
void (*volatile on_early_exit)(void);

static void *signal_thread(void *arg)
{
    (void)arg;
    for (;;) {
        int sig;
        if (sigwait(&sig_set, &sig) != 0)
            continue;
        unsigned char b = (unsigned char)sig;
        if (write(sig_pipe[1], &b, 1) < 0) {
            /* full: the main thread is behind; it re-reads the state anyway */
        }
        if (sig == SIGWINCH || sig == SIGCONT)
            continue;
        int expected = 0;
        int first = atomic_compare_exchange_strong(&sig_term, &expected, sig);
        pthread_mutex_lock(&sig_lock);
        sbx *sb = sig_sb;
        if (first && sb)
            sbx_interrupt(sb);
        pthread_mutex_unlock(&sig_lock);
        if (first && sb)
            continue;
        if (on_early_exit)
            on_early_exit();
        static const char m[] = "\nsbx: interrupted\n";
        if (write(2, m, sizeof(m) - 1) < 0) {
            /* nothing left to tell it to */
        }
        _exit(128 + sig);
    }
    return NULL;
}

void signals_start(void)
{
    /* A signal ignored on entry stays ignored: shells ignore SIGINT and SIGQUIT in
       background jobs, nohup ignores SIGHUP. */
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGCONT};
    sigemptyset(&sig_set);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaddset(&sig_set, sigs[i]);
    }
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        msg("pipe: %s", strerror(errno));
        exit(EXIT_SBX);
    }
    pthread_sigmask(SIG_BLOCK, &sig_set, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, signal_thread, NULL) != 0) {
        msg("cannot start a thread");
        exit(EXIT_SBX);
    }
    pthread_detach(t);
}

void signals_set_sandbox(sbx *sb)
{
    /* After this returns with NULL, no sbx_interrupt() on the old handle is in progress, so
       it may be destroyed. */
    pthread_mutex_lock(&sig_lock);
    sig_sb = sb;
    pthread_mutex_unlock(&sig_lock);
}

int signals_pending(void)
{
    return atomic_load(&sig_term);
}

int signals_fd(void)
{
    return sig_pipe[0];
}

/* --- the sandbox --------------------------------------------------------------------------- */

int sandbox_open(const struct cli *a, sbx **out)
{
    sbx_options o = SBX_OPTIONS_INIT;
    o.kernel = a->kernel;
    o.rootfs = a->template_name ? a->template_name : a->rootfs;
    o.vcpus = a->cpus;
    o.memory_mib = a->memory_mib;
    o.boot_timeout_ms = a->boot_timeout_ms;
    o.metadata = a->nmetadata ? a->metadata : NULL;
    o.network = a->no_network ? SBX_NET_NONE : a->tap[0] ? SBX_NET_TAP : SBX_NET_NAT;
    o.tap_name = a->tap[0];
    o.tap_address = a->tap[1];
    o.tap_gateway = a->tap[2];
    o.tap_dns = a->tap[3];
    o.net_policy.block_internet = a->block_internet;
    o.net_policy.allow_out = a->allow_out;
    o.net_policy.deny_out = a->deny_out;
    o.hosts = a->hosts;
    o.host_loopback = a->host_loopback;
    if (a->verbose)
        o.console_fd = 2;
    sbx *sb = NULL;
    double t0 = now_s();
    int rc = sbx_create(&sb, &o);
    if (rc != 0) {
        lib_error(sb, rc, "cannot start a sandbox");
        sbx_destroy(sb);
        *out = NULL;
        return EXIT_SBX;
    }
    if (a->verbose) {
        sbx_info info;
        if (sbx_get_info(sb, &info) == 0)
            msg("sandbox %s is up after %.2f s: %s, Linux %s, %u vCPUs, %u MiB", info.id,
                now_s() - t0, info.os_name[0] ? info.os_name : "unknown OS", info.kernel_release,
                info.vcpus, info.memory_mib);
    }
    *out = sb;
    return 0;
}

/* A single word with any of these is a shell command line (documented in `sbx run --help`). */
static int is_shell_line(const char *w)
{
    return strpbrk(w, " \t\n|&;<>()$`\\\"'*?[~") != NULL;
}

void command_from_words(const struct cli *a, sbx_exec_options *o)
{
    if (a->shell_cmd)
        o->cmd = a->shell_cmd;
    else if (a->nwords == 1 && is_shell_line(a->words[0]))
        o->cmd = a->words[0];
    else if (a->nwords > 0)
        o->argv = (const char *const *)a->words;
}

/* --- options ------------------------------------------------------------------------------- */

enum optid {
    O_HELP = 1,
    O_VERSION,
    O_KERNEL,
    O_ROOTFS,
    O_TEMPLATE,
    O_CPUS,
    O_MEMORY,
    O_METADATA,
    O_NO_NETWORK,
    O_BLOCK_INTERNET,
    O_ALLOW_OUT,
    O_DENY_OUT,
    O_ADD_HOST,
    O_HOST_LOOPBACK,
    O_TAP,
    O_TAP_ADDRESS,
    O_TAP_GATEWAY,
    O_TAP_DNS,
    O_BOOT_TIMEOUT,
    O_VERBOSE,
    O_ENV,
    O_CWD,
    O_USER,
    O_TIMEOUT,
    O_SHELL_CMD,
    O_NO_STDIN,
    O_COPY_IN,
    O_COPY_OUT,
    O_PUBLISH,
    O_JSON,
    O_QUIET,
};

#define BOOTS (CMD_RUN | CMD_SHELL | CMD_CP)
#define ALL   (BOOTS | CMD_LS)

struct opt {
    const char *name; /* long name, or NULL */
    char short_name;  /* or 0 */
    const char *arg;  /* the value's name, NULL for a flag */
    int id;
    unsigned cmds; /* the commands it applies to (0: only before the command) */
};

static const struct opt options[] = {
    {"help", 'h', NULL, O_HELP, ALL},
    {"version", 0, NULL, O_VERSION, 0},
    {"kernel", 0, "PATH", O_KERNEL, BOOTS},
    {"rootfs", 0, "NAME|PATH", O_ROOTFS, BOOTS},
    {"template", 0, "NAME", O_TEMPLATE, BOOTS},
    {"cpus", 0, "N", O_CPUS, BOOTS},
    {"memory", 0, "MIB", O_MEMORY, BOOTS},
    {"metadata", 0, "KEY=VALUE", O_METADATA, BOOTS},
    {"no-network", 0, NULL, O_NO_NETWORK, BOOTS},
    {"block-internet", 0, NULL, O_BLOCK_INTERNET, BOOTS},
    {"allow-out", 0, "RULE", O_ALLOW_OUT, BOOTS},
    {"deny-out", 0, "RULE", O_DENY_OUT, BOOTS},
    {"add-host", 0, "NAME=IP", O_ADD_HOST, BOOTS},
    {"host-loopback", 0, NULL, O_HOST_LOOPBACK, BOOTS},
    {"tap", 0, "NAME", O_TAP, BOOTS},
    {"tap-address", 0, "IP/PREFIX", O_TAP_ADDRESS, BOOTS},
    {"tap-gateway", 0, "IP", O_TAP_GATEWAY, BOOTS},
    {"tap-dns", 0, "IP", O_TAP_DNS, BOOTS},
    {"boot-timeout", 0, "SECONDS", O_BOOT_TIMEOUT, BOOTS},
    {"verbose", 'v', NULL, O_VERBOSE, BOOTS},
    {"env", 'e', "KEY=VALUE", O_ENV, CMD_RUN | CMD_SHELL},
    {"cwd", 'w', "DIR", O_CWD, CMD_RUN | CMD_SHELL},
    {"user", 'u', "USER", O_USER, CMD_RUN | CMD_SHELL},
    {"timeout", 0, "SECONDS", O_TIMEOUT, CMD_RUN},
    {NULL, 'c', "STRING", O_SHELL_CMD, CMD_RUN},
    {"no-stdin", 0, NULL, O_NO_STDIN, CMD_RUN},
    {"copy-in", 0, "HOST:GUEST", O_COPY_IN, CMD_RUN},
    {"copy-out", 0, "GUEST:HOST", O_COPY_OUT, CMD_RUN},
    {"publish", 'p', "[HOSTPORT:]GUESTPORT", O_PUBLISH, CMD_RUN},
    {"json", 0, NULL, O_JSON, CMD_LS},
    {"quiet", 'q', NULL, O_QUIET, CMD_LS},
};

struct parser {
    int argc;
    char **argv;
    int i;
};

/* The next option at p->i: its id, with *val its value; 0 at the first word that is not an
   option (or after "--", which is consumed); -1 after printing a usage error. mask: the
   commands whose options are accepted (0: before the command). */
static int next_opt(struct parser *p, const struct cli *a, unsigned mask, const char **val,
                    const struct opt **which)
{
    *val = NULL;
    if (p->i >= p->argc)
        return 0;
    char *arg = p->argv[p->i];
    if (strcmp(arg, "--") == 0) {
        p->i++;
        return 0;
    }
    if (arg[0] != '-' || arg[1] == '\0')
        return 0;
    const struct opt *o = NULL;
    const char *inline_val = NULL;
    char shown[64];
    if (arg[1] == '-') {
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t k = 0; k < sizeof(options) / sizeof(options[0]); k++)
            if (options[k].name && strlen(options[k].name) == len &&
                strncmp(options[k].name, name, len) == 0)
                o = &options[k];
        snprintf(shown, sizeof(shown), "--%.*s", (int)(len > 40 ? 40 : len), name);
        if (eq)
            inline_val = eq + 1;
    } else {
        for (size_t k = 0; k < sizeof(options) / sizeof(options[0]); k++)
            if (options[k].short_name == arg[1])
                o = &options[k];
        snprintf(shown, sizeof(shown), "-%c", arg[1]);
        if (arg[2])
            inline_val = arg + 2;
        if (o && !o->arg && inline_val) {
            usage_error(a, "unknown option '%s' (options cannot be grouped: write -%c -%c)", arg,
                        arg[1], arg[2]);
            return -1;
        }
    }
    if (!o) {
        if (a && a->cmd == CMD_RUN)
            usage_error(a,
                        "unknown option '%s' (to run a command that starts with '-', "
                        "write -- before it)",
                        shown);
        else
            usage_error(a, "unknown option '%s'", shown);
        return -1;
    }
    if (mask && !(o->cmds & mask)) {
        usage_error(a, "option '%s' does not apply to 'sbx %s'", shown, a->name);
        return -1;
    }
    if (!mask && !(o->cmds & BOOTS) && o->id != O_HELP && o->id != O_VERSION) {
        usage_error(a, "option '%s' goes after the command (sbx COMMAND %s ...)", shown, shown);
        return -1;
    }
    p->i++;
    if (!o->arg) {
        if (inline_val) {
            usage_error(a, "option '%s' takes no value", shown);
            return -1;
        }
    } else if (inline_val) {
        *val = inline_val;
    } else if (p->i < p->argc) {
        *val = p->argv[p->i++];
    } else {
        usage_error(a, "option '%s' needs a value: %s %s", shown, shown, o->arg);
        return -1;
    }
    *which = o;
    return o->id;
}

/* Appends to a NULL-terminated array. */
static void push(void *arrayp, size_t *n, const void *item)
{
    const void ***array = arrayp;
    const void **grown = realloc(*array, (*n + 2) * sizeof(void *));
    if (!grown) {
        msg("out of memory");
        exit(EXIT_SBX);
    }
    grown[(*n)++] = item;
    grown[*n] = NULL;
    *array = grown;
}

static int parse_uint(const struct cli *a, const char *opt, const char *v, unsigned min,
                      unsigned max, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || n < min || n > max)
        return usage_error(a, "%s wants a whole number from %u to %u, not '%s'", opt, min, max, v);
    *out = (unsigned)n;
    return 0;
}

/* "512", "512M", "512MiB", "2G", "2GiB" -> MiB */
static int parse_mib(const struct cli *a, const char *v, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    unsigned long mult = 1;
    if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gib") == 0 || strcasecmp(end, "gb") == 0)
        mult = 1024;
    else if (*end && strcasecmp(end, "m") != 0 && strcasecmp(end, "mib") != 0 &&
             strcasecmp(end, "mb") != 0)
        mult = 0;
    if (!*v || v[0] == '-' || end == v || errno || !mult || n > 65536 || n * mult < 64 ||
        n * mult > 65536)
        return usage_error(a, "--memory wants MiB from 64 to 65536 (or like 2G), not '%s'", v);
    *out = (unsigned)(n * mult);
    return 0;
}

/* Seconds (decimals allowed) -> milliseconds, at most ~49 days. */
static int parse_seconds(const struct cli *a, const char *opt, const char *v, unsigned *ms)
{
    char *end;
    errno = 0;
    double s = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(s) || s < 0 || s * 1000 >= (double)UINT_MAX - 1)
        return usage_error(a, "%s wants a number of seconds, not '%s'", opt, v);
    *ms = (unsigned)llround(s * 1000);
    if (*ms == 0 && s > 0)
        *ms = 1;
    return 0;
}

static int apply(struct cli *a, const struct opt *o, const char *v)
{
    char shown[32];
    if (o->name)
        snprintf(shown, sizeof(shown), "--%s", o->name);
    else
        snprintf(shown, sizeof(shown), "-%c", o->short_name);
    switch (o->id) {
    case O_KERNEL:
        a->kernel = v;
        return 0;
    case O_ROOTFS:
        a->rootfs = v;
        return 0;
    case O_TEMPLATE:
        a->template_name = v;
        return 0;
    case O_CPUS:
        return parse_uint(a, shown, v, 1, 64, &a->cpus);
    case O_MEMORY:
        return parse_mib(a, v, &a->memory_mib);
    case O_METADATA:
        if (!strchr(v, '=') || v[0] == '=')
            return usage_error(a, "--metadata wants KEY=VALUE, not '%s'", v);
        push(&a->metadata, &a->nmetadata, v);
        return 0;
    case O_NO_NETWORK:
        a->no_network = 1;
        return 0;
    case O_BLOCK_INTERNET:
        a->block_internet = 1;
        return 0;
    case O_HOST_LOOPBACK:
        a->host_loopback = 1;
        return 0;
    case O_TAP:
        a->tap[0] = v;
        return 0;
    case O_TAP_ADDRESS:
        a->tap[1] = v;
        return 0;
    case O_TAP_GATEWAY:
        a->tap[2] = v;
        return 0;
    case O_TAP_DNS:
        a->tap[3] = v;
        return 0;
    case O_ALLOW_OUT:
        push(&a->allow_out, &a->nallow_out, v);
        return 0;
    case O_DENY_OUT:
        push(&a->deny_out, &a->ndeny_out, v);
        return 0;
    case O_ADD_HOST:
        if (!strchr(v, '=') || v[0] == '=')
            return usage_error(a, "%s wants NAME=IP, not '%s'", shown, v);
        push(&a->hosts, &a->nhosts, v);
        return 0;
    case O_BOOT_TIMEOUT:
        return parse_seconds(a, shown, v, &a->boot_timeout_ms);
    case O_VERBOSE:
        a->verbose = 1;
        return 0;
    case O_ENV: {
        if (v[0] == '=' || !v[0])
            return usage_error(a, "%s wants KEY=VALUE or KEY, not '%s'", shown, v);
        if (!strchr(v, '=')) {
            const char *here = getenv(v);
            if (!here)
                return usage_error(a, "%s %s: %s is not set here (write %s=VALUE)", shown, v, v, v);
            char *kv;
            if (asprintf(&kv, "%s=%s", v, here) < 0) {
                msg("out of memory");
                exit(EXIT_SBX);
            }
            v = kv;
        } else if (!(v = strdup(v))) {
            msg("out of memory");
            exit(EXIT_SBX);
        }
        push(&a->envs, &a->nenvs, v); /* all malloc'd: main() frees them */
        return 0;
    }
    case O_CWD:
        a->cwd = v;
        return 0;
    case O_USER:
        if (!v[0])
            return usage_error(a, "%s wants a user name or uid", shown);
        a->user = v;
        return 0;
    case O_TIMEOUT:
        if (parse_seconds(a, shown, v, &a->timeout_ms))
            return EXIT_SBX;
        if (a->timeout_ms == 0)
            a->timeout_ms = SBX_NO_TIMEOUT;
        return 0;
    case O_SHELL_CMD:
        a->shell_cmd = v;
        return 0;
    case O_NO_STDIN:
        a->no_stdin = 1;
        return 0;
    case O_COPY_IN:
    case O_COPY_OUT: {
        const char *colon = strchr(v, ':');
        if (!colon || colon == v || !colon[1])
            return usage_error(a, "%s wants %s, not '%s'", shown, o->arg, v);
        if (o->id == O_COPY_IN)
            push(&a->copy_in, &a->ncopy_in, v);
        else
            push(&a->copy_out, &a->ncopy_out, v);
        return 0;
    }
    case O_PUBLISH: {
        char addr[64];
        unsigned hp, gp;
        if (publish_parse(v, addr, sizeof(addr), &hp, &gp) != 0)
            return usage_error(a,
                               "%s wants [HOSTPORT:]GUESTPORT or ADDR:HOSTPORT:GUESTPORT with "
                               "ports 1..65535 (HOSTPORT 0: any free port), not '%s'",
                               shown, v);
        push(&a->publish, &a->npublish, v);
        return 0;
    }
    case O_JSON:
        a->json = 1;
        return 0;
    case O_QUIET:
        a->quiet = 1;
        return 0;
    }
    return 0;
}

static const struct {
    const char *name;
    enum cmd cmd;
    int (*fn)(struct cli *);
    const char *help;
} commands[] = {
    {"run", CMD_RUN, cmd_run, help_run},
    {"shell", CMD_SHELL, cmd_shell, help_shell},
    {"cp", CMD_CP, cmd_cp, help_cp},
    {"ls", CMD_LS, cmd_ls, help_ls},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static int find_command(const char *name)
{
    for (size_t k = 0; k < NCOMMANDS; k++)
        if (strcmp(commands[k].name, name) == 0)
            return (int)k;
    return -1;
}

static int print_help(const char *text)
{
    fputs(text, stdout);
    return fflush(stdout) == 0 ? 0 : EXIT_SBX;
}

int main(int argc, char **argv)
{
    /* Output to a closed pipe fails with EPIPE instead of killing sbx (and the sandbox). */
    signal(SIGPIPE, SIG_IGN);

    struct cli a = {0};
    struct parser p = {argc, argv, 1};
    const char *v;
    const struct opt *o = NULL;
    const char *boot_opt_before = NULL;
    int id;

    /* Options before the command: the sandbox options, --help, --version. */
    int at = p.i;
    while ((id = next_opt(&p, NULL, 0, &v, &o)) > 0) {
        if (id == O_HELP)
            return print_help(help_main);
        if (id == O_VERSION) {
            printf("sbx %s\n", sbx_version());
            return fflush(stdout) == 0 ? 0 : EXIT_SBX;
        }
        if (apply(&a, o, v))
            return EXIT_SBX;
        boot_opt_before = argv[at];
        at = p.i;
    }
    if (id < 0)
        return EXIT_SBX;
    if (p.i >= argc) {
        fputs(help_main, stderr);
        fprintf(stderr, "\nsbx: no command given\n");
        return EXIT_SBX;
    }
    const char *name = argv[p.i++];
    if (strcmp(name, "help") == 0) {
        if (p.i >= argc)
            return print_help(help_main);
        int k = find_command(argv[p.i]);
        if (k < 0)
            return usage_error(NULL, "no command named '%s' (commands: run, shell, cp, ls)",
                               argv[p.i]);
        return print_help(commands[k].help);
    }
    int k = find_command(name);
    if (k < 0) {
        if (strcmp(name, "exec") == 0 || strcmp(name, "start") == 0)
            return usage_error(NULL, "no command named '%s'; did you mean 'sbx run'?", name);
        if (strcmp(name, "list") == 0 || strcmp(name, "ps") == 0)
            return usage_error(NULL, "no command named '%s'; did you mean 'sbx ls'?", name);
        return usage_error(NULL, "no command named '%s' (commands: run, shell, cp, ls)", name);
    }
    a.cmd = commands[k].cmd;
    a.name = commands[k].name;
    if (a.cmd == CMD_LS && boot_opt_before)
        return usage_error(&a, "option '%s' does not apply to 'sbx ls'", boot_opt_before);

    /* run and shell: options, then the command (whatever follows is the command's). cp and
       ls: options and paths in any order ("--" ends the options). */
    char **words = calloc((size_t)argc + 1, sizeof(char *));
    if (!words) {
        msg("out of memory");
        return EXIT_SBX;
    }
    int nwords = 0, dashdash = 0;
    for (;;) {
        if (!dashdash) {
            int before = p.i;
            id = next_opt(&p, &a, a.cmd, &v, &o);
            if (id < 0)
                return EXIT_SBX;
            if (id == O_HELP)
                return print_help(commands[k].help);
            if (id > 0) {
                if (apply(&a, o, v))
                    return EXIT_SBX;
                continue;
            }
            if (p.i > before)
                dashdash = 1; /* consumed "--" */
        }
        if (p.i >= argc)
            break;
        if (a.cmd == CMD_RUN || a.cmd == CMD_SHELL) {
            while (p.i < argc)
                words[nwords++] = argv[p.i++];
            break;
        }
        words[nwords++] = argv[p.i++];
    }
    words[nwords] = NULL;
    a.words = words;
    a.nwords = nwords;
    if (a.template_name && a.rootfs)
        return usage_error(&a, "--template and --rootfs name the same thing: give one");
    if (a.timeout_ms == 0)
        a.timeout_ms = SBX_NO_TIMEOUT;
    if (a.cmd != CMD_LS)
        signals_start();
    int rc = commands[k].fn(&a);
    if (fflush(stdout) != 0 && rc == 0)
        rc = EXIT_SBX;
    for (size_t i = 0; i < a.nenvs; i++)
        free((char *)a.envs[i]);
    free(a.envs);
    free(a.metadata);
    free(a.allow_out);
    free(a.deny_out);
    free(a.hosts);
    free(a.copy_in);
    free(a.copy_out);
    free(a.publish);
    free(words);
    return rc;
}
