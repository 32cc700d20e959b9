/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The isolated mode (docs/SECURITY.md, "Isolated mode"): the VMM of a sandbox runs in a child
 * process, sbx-vmm, started in its own mount, PID, IPC and UTS namespaces (and network
 * namespace when the sandbox has no network), which then jails itself: an empty read-only
 * root (pivot_root), no capabilities, rlimits, seccomp. The application's handle is a proxy:
 * every operation dials envd, and a dial is a request to the child, answered with the
 * connected socket (SCM_RIGHTS); no guest data passes through an extra copy.
 *
 * Child's file descriptors: 3 the options (a sealed memfd holding one packed
 * Sbx__Isolate__Options), 4 the control socket (SOCK_SEQPACKET), 5 the console pipe (the guest's
 * console output, written non-blocking; the parent keeps the ring and feeds the caller's sink).
 *
 * On the control socket the parent sends requests (struct iso_request, with a fresh socket
 * for the reply as SCM_RIGHTS) and reads events (struct iso_event); the child answers on the
 * reply socket (struct iso_reply, with the connected socket as SCM_RIGHTS).
 */
#ifndef SBX_ISOLATE_H
#define SBX_ISOLATE_H

#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

#define ISO_FD_OPTIONS 3
#define ISO_FD_CTL     4
#define ISO_FD_CONSOLE 5

enum iso_request_type { ISO_DIAL = 1 };
struct iso_request {
    uint32_t type;
    uint32_t port;
};

struct iso_reply {
    int32_t rc; /* 0 (the socket is attached) or an SBX_E* code */
};

enum iso_event_type {
    ISO_READY = 1,   /* the sandbox runs: info is filled */
    ISO_FAILED = 2,  /* sbx_create() failed: code and msg */
    ISO_STOPPED = 3, /* the VM ended: state and msg */
};
struct iso_event {
    uint32_t type;
    int32_t code;
    int32_t state;
    uint32_t features;
    sbx_info info;
    char msg[SBX_ERRMSG_MAX];
};

struct sbx;

/* Sends `len` bytes of `msg` on `sock` with `fd` attached (fd < 0: none), never blocking
   (lib/isolate/wire.c). Returns what sendmsg() does. */
ssize_t iso_send(int sock, const void *msg, size_t len, int fd);

/* Parent side (lib/isolate/parent.c). */

/* Starts the child for `sb` with options `o` and waits until its sandbox runs (filling
   sb->info and sb->id) or failed (the handle's message set), within the boot timeout. */
int iso_start(struct sbx *sb, const sbx_options *o);

/* A new connection to guest port `port`, from the child. */
int iso_dial(struct sbx *sb, unsigned port, int *fd);

/* Ends the child (it tears its VM down) and releases what iso_start() made. */
void iso_stop(struct sbx *sb);

/* Kills the child at once (the handle's VM was stopped on this side). */
void iso_kill(struct sbx *sb);

/* Child side (lib/isolate/child.c): sbx-vmm's main. Returns its exit status. */
int iso_child_main(void);

#endif
