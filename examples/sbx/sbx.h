/* SPDX-License-Identifier: Apache-2.0 */
/* Shared declarations of the sbx command line tool (examples/sbx). */
#ifndef SBX_CLI_H
#define SBX_CLI_H

#include <stddef.h>
#include <stdint.h>

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
};

/* Everything any command accepts on its command line. */
struct cli {
    enum cmd cmd;
    const char *name; /* "run", "shell", ... */
    /* Sandbox options (every command that boots one). */
    const char *kernel, *rootfs, *template_name;
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
    /* ls */
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

/* Boots the sandbox the options describe; prints why not and returns EXIT_SBX on failure. */
int sandbox_open(const struct cli *a, sbx **out);
/* Fills argv or cmd of o from -c or the words (see `sbx run --help` for the rule). The argv
   array is a[words] itself, which main() keeps NULL-terminated. */
void command_from_words(const struct cli *a, sbx_exec_options *o);

/* Signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGCONT) are handled by a thread of
   their own; see main.c. */
void signals_start(void);
/* The sandbox a terminating signal interrupts (sbx_interrupt); NULL while there is none. */
void signals_set_sandbox(sbx *sb);
/* The terminating signal received so far, or 0. */
int signals_pending(void);
/* A non-blocking fd that receives one byte (the signal number) per signal. */
int signals_fd(void);
/* Called (also from the signal thread or a fatal signal handler) before sbx exits early:
   shell.c points it at its terminal restore. Must be async-signal-safe. */
extern void (*volatile on_early_exit)(void);

/* Writes everything (retrying short writes and EINTR). Returns 0, or -1 with errno. */
int write_all(int fd, const void *data, size_t len);
/* "1.5 MiB" */
const char *human_bytes(uint64_t n, char buf[32]);
/* Monotonic seconds. */
double now_s(void);

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

#endif
