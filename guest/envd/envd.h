/* SPDX-License-Identifier: Apache-2.0 */
/* envd internals shared between its files: configuration, logging, system setup, serving. */
#ifndef ENVD_H
#define ENVD_H

#include <stdbool.h>
#include <stdint.h>

#define ENVD_DEFAULT_PORT 49983u

struct envd_config {
    char root[256];      /* sbx.root=, block device of the root filesystem */
    char rootfstype[32]; /* sbx.rootfstype= */
    char rootflags[256]; /* sbx.rootflags=, mount options ("ro,noatime,...") */
    uint32_t port;       /* sbx.port=, vsock port to listen on */
    /* Hidden --test-serve-fd mode (a normal process, not PID 1): change nothing in the
       system (no mounts, clock, hostname, reboot) and exit instead of powering off. */
    bool test_mode;
};

/* log.c: lines "envd: ..." on /dev/console (console false: on stderr); silently dropped
   when neither is open. */
void log_open(bool console);
void log_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* init.c: PID 1 duties. */
/* Mounts /dev, /proc, /sys, reads the kernel command line into cfg, mounts the root disk and
   switches to it, mounts the usual API filesystems and sets the hostname. On a fatal error
   (root cannot be mounted) logs why and reboots, which ends the VM. */
void init_system(struct envd_config *cfg);
/* Stops every process, syncs, unmounts (or remounts read-only) and reboots. Never returns. */
void init_poweroff(const struct envd_config *cfg) __attribute__((noreturn));
/* Logs, syncs and reboots. Never returns. */
void init_fatal(const struct envd_config *cfg, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
/* Steps CLOCK_REALTIME to the host's clock when they differ noticeably. */
void init_set_clock(const struct envd_config *cfg, uint64_t realtime_ns);
void init_set_hostname(const struct envd_config *cfg, const char *name);

/* PRETTY_NAME from /etc/os-release (or /usr/lib/os-release), unquoted and truncated to fit;
   "" when there is none. */
void init_os_name(char *out, size_t cap);

/* serve.c: the event loop. listen_fd accepts vsock connections (or -1); first_fd is an
   already connected stream (or -1; test mode). Returns only in test mode, once no
   connection is left. */
void serve_loop(const struct envd_config *cfg, int listen_fd, int first_fd);

#endif
