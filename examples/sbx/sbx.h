/* SPDX-License-Identifier: Apache-2.0 */
/* Shared declarations of the sbx command line tool (examples/sbx). */
#ifndef SBX_CLI_H
#define SBX_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sandbox.h>

/* Exit statuses of sbx's own; everything else is the command's status (see `sbx --help`). */
#define EXIT_TIMEOUT 124 /* --timeout killed the command, like coreutils timeout */
#define EXIT_SBX     125 /* sbx itself failed (usage, no sandbox, a copy), like docker run */

/* The largest standard input `sbx run` forwards: it is read whole before the command runs. */
#define STDIN_MAX (64u << 20)

enum cmd {
    CMD_RUN = 1,
    CMD_SHELL = 2,
    CMD_CP = 4,
    CMD_LS = 8,
    CMD_RESUME = 16,
    CMD_TBUILD = 32, /* sbx template build */
    CMD_TLS = 64,    /* sbx template ls */
    CMD_TRM = 128,   /* sbx template rm */
    CMD_CODE = 256,  /* sbx code */
};

/* Everything any command accepts on its command line. */
struct cli {
    enum cmd cmd;
    const char *name; /* "run", "shell", "template build", ... */
    /* Sandbox options (every command that boots one). */
    const char *kernel, *rootfs, *template_name, *template_dir;
    unsigned cpus, memory_mib, boot_timeout_ms;
    int verbose;
    const char **metadata;
    size_t nmetadata;
    int no_network, block_internet, host_loopback;
    const char *tap[4]; /* --tap, --tap-address, --tap-gateway, --tap-dns */
    const char **allow_out, **deny_out, **hosts; /* NULL-terminated */
    size_t nallow_out, ndeny_out, nhosts;
    /* Command options (run, shell). */
    const char **envs;
    size_t nenvs;
    const char *cwd, *user, *shell_cmd;
    unsigned timeout_ms; /* SBX_NO_TIMEOUT: none */
    int no_stdin;
    char **copy_in, **copy_out; /* "A:B" as given */
    size_t ncopy_in, ncopy_out;
    const char **publish; /* -p [[ADDR:]HOSTPORT:]GUESTPORT as given (checked) */
    size_t npublish;
    /* Snapshots (run, shell, resume): what becomes of the sandbox after the command. */
    const char *snapshot_to; /* --snapshot-to NAME|PATH */
    const char *pause_to;    /* --pause-to PATH; resume --pause: the resumed PATH */
    const char *resume_path; /* resume: the paused sandbox's directory */
    int pause;               /* resume --pause */
    /* template build */
    const char *file, *tpl_name, *context, *start_cmd, *ready;
    const char **build_args, **tags; /* NULL-terminated */
    size_t nbuild_args, ntags;
    uint64_t disk_mib;
    unsigned ready_timeout_ms, step_timeout_ms;
    int no_cache;
    /* sbx code */
    const char *language, *code_context, *out_dir;
    /* ls, template ls, code */
    int json, quiet;
    /* What follows the options. */
    char **words;
    int nwords;
};

/* Messages: "sbx: ..." on stderr. */
void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error: the message plus a pointer to the command's help; returns EXIT_SBX. */
int usage_error(const struct cli *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A library error: "sbx: WHAT: <the handle's message>" plus a hint; returns EXIT_SBX. */
int lib_error(const sbx *sb, int rc, const char *what);

/* Boots the sandbox the options describe (or makes it from --template, or resumes it for
   `sbx resume`); prints why not and returns EXIT_SBX on failure. */
int sandbox_open(const struct cli *a, sbx **out);
/* Checks --snapshot-to and --pause-to before anything boots, so that a mistake there costs no
   work. Returns 0, or EXIT_SBX after saying why. */
int snapshot_targets_check(const struct cli *a);
/* The end of a sandbox of run, shell or resume: --snapshot-to (when keep_ok: the command
   succeeded), --pause-to (always while the sandbox still runs), then sbx_destroy(). status is
   the command's exit status; returns the status sbx exits with. */
int sandbox_finish(const struct cli *a, sbx *sb, int status, int keep_ok);
/* A template or snapshot name as the store accepts it: [a-z0-9][a-z0-9._-]{0,62}, no "..". */
int template_name_valid(const char *name);
/* Fills argv or cmd of o from -c or the words (see `sbx run --help` for the rule). The argv
   array is a[words] itself, which main() keeps NULL-terminated. */
void command_from_words(const struct cli *a, sbx_exec_options *o);

/* Signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGCONT) are handled by a thread of
   their own; see main.c. */
void signals_start(void);
/* The sandbox a terminating signal interrupts (sbx_interrupt); NULL while there is none. */
void signals_set_sandbox(sbx *sb);
/* While on, a first terminating signal without a sandbox set is only recorded (a second one
   still exits): for work that must not be cut short, such as a pause. */
void signals_defer(int on);
/* The terminating signal received so far, or 0. */
int signals_pending(void);
/* A non-blocking fd that receives one byte (the signal number) per signal. */
int signals_fd(void);
/* Called (also from the signal thread or a fatal signal handler) before sbx exits early:
   shell.c points it at its terminal restore. Must be async-signal-safe. */
extern void (*volatile on_early_exit)(void);

/* Writes everything (retrying short writes and EINTR). Returns 0, or -1 with errno. */
int write_all(int fd, const void *data, size_t len);
/* Reads fd to its end into a malloc'd buffer, NUL-terminated (not counted in *len). Returns 0,
   or -1 with errno: EFBIG (more than max bytes), ENOMEM, or the read's error. */
int read_all_fd(int fd, size_t max, char **out, size_t *len);
/* "1.5 MiB" */
const char *human_bytes(uint64_t n, char buf[32]);
/* Monotonic seconds. */
double now_s(void);
/* CLOCK_REALTIME in nanoseconds. */
uint64_t realtime_ns(void);
/* How long ago: "42s", "5m", "3h", "2d". */
const char *age(uint64_t created_ns, uint64_t now_ns, char buf[32]);
/* JSON output: a string (escaped; bytes that are not UTF-8 become U+FFFD), a time (RFC 3339
   UTC string, or null for 0). */
void json_str(FILE *f, const char *s);
void json_time(FILE *f, uint64_t ns);

/* Copies, with cp's "into an existing directory" rule and a progress line on a terminal.
   guest_dst/guest_src are guest paths (without "guest:"). verbose_summary prints what was
   copied. Print errors; return 0, EXIT_SBX, or 128+signal when interrupted. */
int copy_to_guest(sbx *sb, const char *host_src, const char *guest_dst, int summary);
int copy_from_guest(sbx *sb, const char *guest_src, const char *host_dst, int summary);

/* Parses a -p value "[[ADDR:]HOSTPORT:]GUESTPORT" (ADDR: an IPv4 address or [IPv6]); addr
   receives ADDR without brackets ("" when none), host_port 0 when none. Returns 0, or -1
   when the value is malformed. */
int publish_parse(const char *spec, char *addr, size_t cap, unsigned *host_port,
                  unsigned *guest_port);

int cmd_run(struct cli *a);
int cmd_shell(struct cli *a);
int cmd_cp(struct cli *a);
int cmd_ls(struct cli *a);
int cmd_template_build(struct cli *a);
int cmd_template_ls(struct cli *a);
int cmd_template_rm(struct cli *a);
int cmd_code(struct cli *a);

#endif
