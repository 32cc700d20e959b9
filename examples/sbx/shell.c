// SPDX-License-Identifier: Apache-2.0
/* sbx shell: an interactive PTY in a new sandbox, with the local terminal in raw mode. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "sbx.h"

/* --- the local terminal -------------------------------------------------------------------- */

/* The terminal's settings before raw mode, restored on every way out: normal returns, exit()
   (atexit), the signal thread's early exit (on_early_exit), and crashes (fatal_signal). */
static struct termios saved_termios;
static volatile sig_atomic_t raw_on;

static void term_restore(void)
{
    if (raw_on) {
        tcsetattr(0, TCSADRAIN, &saved_termios); /* async-signal-safe */
        raw_on = 0;
    }
}

static int term_raw(void)
{
    struct termios t = saved_termios;
    cfmakeraw(&t);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(0, TCSADRAIN, &t) != 0)
        return -1;
    raw_on = 1;
    return 0;
}

static void fatal_signal(int sig)
{
    term_restore();
    raise(sig); /* SA_RESETHAND: now the default action */
}

static void on_fatal_signals(void)
{
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = fatal_signal;
    sa.sa_flags = SA_RESETHAND | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* The size of whichever of stdin, stdout, stderr is a terminal. */
static int window_size(unsigned *rows, unsigned *cols)
{
    for (int fd = 0; fd < 3; fd++) {
        struct winsize ws;
        if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
            *rows = ws.ws_row;
            *cols = ws.ws_col;
            return 1;
        }
    }
    return 0;
}

/* --- the loop ------------------------------------------------------------------------------ */

#define BROKEN_STDOUT 1 /* pump(): our stdout is gone */

/* Everything the PTY has for us now: reads with timeout 0 until SBX_EAGAIN, since frames the
   library already received do not make its fd readable again. *exited: the process ended
   and all its output is out. Returns 0, BROKEN_STDOUT, or an SBX_E* error. */
static int pump(sbx_proc *p, int *exited)
{
    static char buf[65536];
    for (;;) {
        int stream;
        int n = sbx_proc_read(p, buf, sizeof(buf), &stream, 0);
        if (n == SBX_EAGAIN)
            return 0;
        if (n == 0) {
            *exited = 1;
            return 0;
        }
        if (n < 0)
            return n;
        if (write_all(1, buf, (size_t)n) != 0)
            return BROKEN_STDOUT;
    }
}

struct shell {
    sbx *sb;
    sbx_proc *p;
    int tty;
    int ended; /* the shell exited by itself (not killed by a signal, not interrupted) */
};

/* Runs until the process exits; returns sbx's exit status. */
static int loop(struct shell *s)
{
    int stdin_open = 1, exited = 0;
    double last_eof = 0;
    static char buf[65536];
    for (;;) {
        int r = pump(s->p, &exited);
        if (r == BROKEN_STDOUT)
            return 128 + SIGPIPE;
        if (r < 0 && signals_pending())
            break;
        if (r < 0) {
            term_restore();
            return lib_error(s->sb, r, "the terminal failed");
        }
        if (exited)
            break;
        if (signals_pending())
            break;
        struct pollfd fds[3] = {
            {.fd = stdin_open ? 0 : -1, .events = POLLIN},
            {.fd = sbx_proc_fd(s->p), .events = POLLIN},
            {.fd = signals_fd(), .events = POLLIN},
        };
        /* After a piped stdin ended: Ctrl-D again every second until the process exits.
           One is not enough: a ^D typed ahead while the terminal was still in canonical mode
           (before the shell started its line editor) is lost when the mode changes, and a
           program reading the terminal takes one for itself before the shell's turn. */
        int eof_mode = !stdin_open && !s->tty;
        if (poll(fds, 3, eof_mode ? 250 : -1) < 0 && errno != EINTR) {
            term_restore();
            msg("poll: %s", strerror(errno));
            return EXIT_SBX;
        }
        if (fds[2].revents & POLLIN) {
            unsigned char sigs[64];
            ssize_t n = read(signals_fd(), sigs, sizeof(sigs));
            int resize = 0;
            for (ssize_t i = 0; i < n; i++) {
                if (sigs[i] == SIGCONT && s->tty)
                    term_raw(); /* after a stop, whoever resumed us may have reset it */
                if (sigs[i] == SIGWINCH || sigs[i] == SIGCONT)
                    resize = 1;
            }
            unsigned rows, cols;
            if (resize && window_size(&rows, &cols) &&
                (r = sbx_proc_resize(s->p, rows, cols)) < 0 && !signals_pending()) {
                term_restore();
                return lib_error(s->sb, r, "cannot resize the terminal");
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n > 0) {
                r = sbx_proc_write(s->p, buf, (size_t)n);
            } else {
                /* End of input. On a terminal that is a hangup (SIGHUP follows); from a pipe
                   or file it becomes Ctrl-D, the terminal's end of input. */
                stdin_open = 0;
                r = 0;
            }
            /* A process that exits while we type makes the write fail: the next pump says
               so properly. */
            if (r < 0 && r != SBX_EINVAL && r != SBX_EINTR && !signals_pending()) {
                int r2 = pump(s->p, &exited);
                if (exited)
                    break;
                (void)r2;
                term_restore();
                return lib_error(s->sb, r, "cannot write to the terminal");
            }
        }
        if (!stdin_open && !s->tty && now_s() - last_eof >= 1.0) {
            last_eof = now_s();
            int r2 = sbx_proc_write(s->p, "\x04", 1);
            (void)r2; /* a process that is gone: the next pump tells */
        }
    }
    if (signals_pending()) {
        term_restore();
        msg("interrupted: stopped the shell and the sandbox");
        return 128 + signals_pending();
    }
    sbx_exec_result res;
    int r = sbx_proc_wait(s->p, 10000, &res);
    int status;
    if (r == 0) {
        status = res.signal > 0 ? 128 + (res.signal & 0x7f) : res.exit_code & 0xff;
        s->ended = res.signal <= 0 && !signals_pending();
    } else if (signals_pending())
        status = 128 + signals_pending();
    else {
        term_restore();
        status = lib_error(s->sb, r, "cannot get the shell's exit status");
    }
    sbx_exec_result_free(&res);
    return status;
}

int cmd_shell(struct cli *a)
{
    int tty = isatty(0) && tcgetattr(0, &saved_termios) == 0;
    unsigned rows = 24, cols = 80;
    window_size(&rows, &cols);

    int rc = snapshot_targets_check(a);
    if (rc)
        return rc;
    sbx *sb;
    if ((rc = sandbox_open(a, &sb)) != 0)
        return rc;
    signals_set_sandbox(sb);

    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    command_from_words(a, &o);
    o.envs = a->nenvs ? a->envs : NULL;
    o.cwd = a->cwd;
    o.user = a->user;
    o.tag = "sbx shell";
    sbx_proc *p;
    rc = sbx_pty_open(sb, rows, cols, &o, &p);
    int status, ended = 0;
    if (rc < 0) {
        status = signals_pending() ? 128 + signals_pending()
                                   : lib_error(sb, rc, "cannot open a terminal in the sandbox");
    } else {
        if (tty) {
            on_early_exit = term_restore;
            atexit(term_restore);
            on_fatal_signals();
            if (term_raw() != 0)
                msg("warning: cannot switch the terminal to raw mode: %s", strerror(errno));
        }
        struct shell s = {sb, p, tty, 0};
        status = loop(&s);
        ended = s.ended;
        term_restore();
        sbx_proc_close(p);
    }
    /* --snapshot-to keeps what was set up by hand, whatever the last command's status. */
    return sandbox_finish(a, sb, status, ended);
}
