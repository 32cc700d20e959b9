// SPDX-License-Identifier: Apache-2.0
/* envd, the guest agent: PID 1 of every sandbox; sets the guest up and serves the host. */

/*
 * Concurrency model
 * -----------------
 * envd is one single-threaded process running one poll loop (serve.c) that owns all state:
 * connections now; processes, PTYs and watches later. Why:
 * - State outlives connections. Background processes must be listed, re-attached, fed stdin
 *   and killed from other connections, and survive the vsock transport reset that follows a
 *   snapshot restore; that needs one owner, not a thread or process per connection.
 * - PID 1 must never die (the kernel panics). One thread over non-blocking fds has no locks,
 *   no races and no per-thread stacks to get wrong.
 * - Everything later features wait on is an fd: vsock connections, pipes of children, PTY
 *   masters, inotify, and SIGCHLD through a signalfd. They all join the same poll set.
 * Rules that keep the loop responsive: never block in it (fds are non-blocking; output is
 * queued per connection with backpressure); move bulk data in chunks of at most 64 KiB per
 * wakeup so one connection cannot starve the others; work that may block for long (a huge
 * recursive delete, say) goes to a forked helper whose result comes back through a pipe.
 * Children are started with fork/exec and must restore the signal mask (SIGCHLD is blocked
 * here for the signalfd) and default dispositions before exec. envd reaps every exited
 * child, including orphans re-parented to it, on each SIGCHLD.
 *
 * Every connection starts with Hello both ways (proto/envd.proto); connections are per
 * operation on the host side, so they are cheap and short-lived.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "envd.h"

static int listen_vsock(const struct envd_config *cfg)
{
    /* The vsock transport registers during boot; give a slow probe a moment. */
    int last = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            struct sockaddr_vm sa = {
                .svm_family = AF_VSOCK,
                .svm_cid = VMADDR_CID_ANY,
                .svm_port = cfg->port,
            };
            if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 64) == 0)
                return fd;
            last = errno;
            close(fd);
        } else {
            last = errno;
        }
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    init_fatal(cfg, "cannot listen on vsock port %u: %s", cfg->port, strerror(last));
}

int main(int argc, char **argv)
{
    struct envd_config cfg = {
        .root = "/dev/vda",
        .rootfstype = "ext4",
        .port = ENVD_DEFAULT_PORT,
    };
    /* Hidden test modes (an ordinary process, changing nothing in the system), so the host
       library's unit tests can talk to the real envd without a VM: serve one connected
       stream (--test-serve-fd=N), or accept connections on a unix socket
       (--test-listen=PATH; runs until killed, and dies with its parent). */
    int test_fd = -1;
    const char *test_listen = NULL;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--test-serve-fd=", 16) == 0)
            test_fd = atoi(argv[i] + 16);
        else if (strncmp(argv[i], "--test-listen=", 14) == 0)
            test_listen = argv[i] + 14;
    }
    bool pid1 = getpid() == 1;
    if (!pid1 && test_fd < 0 && !test_listen) {
        fprintf(stderr, "envd: the sandbox guest agent runs as PID 1 (init) only\n");
        return 1;
    }
    /* A vanished host must cost a write error, not PID 1's life. */
    signal(SIGPIPE, SIG_IGN);
    if (!pid1) {
        cfg.test_mode = true;
        log_open(false);
        int lfd = -1;
        if (test_listen) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            /* Bound under a temporary name and renamed once listening, so the socket's
               path appears only when connections succeed. */
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            char final[sizeof(sa.sun_path)];
            if (snprintf(final, sizeof(final), "%s", test_listen) >= (int)sizeof(final) ||
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.tmp", test_listen) >=
                    (int)sizeof(sa.sun_path)) {
                fprintf(stderr, "envd: socket path too long\n");
                return 1;
            }
            lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
                listen(lfd, 64) != 0 || rename(sa.sun_path, final) != 0) {
                fprintf(stderr, "envd: %s: %s\n", test_listen, strerror(errno));
                return 1;
            }
        }
        serve_loop(&cfg, lfd, test_fd);
        return 0;
    }
    umask(022);
    init_system(&cfg);
    int lfd = listen_vsock(&cfg);
    log_msg("ready on vsock port %u", cfg.port);
    serve_loop(&cfg, lfd, -1);
    init_fatal(&cfg, "event loop ended");
}
