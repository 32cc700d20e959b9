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
 * On the control socket the parent sends requests (struct iso_request; attached, a fresh
 * socket for the reply, then the request's own descriptors) and reads events (struct
 * iso_event); the child answers on the reply socket (struct iso_reply; for a dial, with the
 * connected socket attached).
 */
#ifndef SBX_ISOLATE_H
#define SBX_ISOLATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "internal.h"

#define ISO_FD_OPTIONS 3
#define ISO_FD_CTL     4
#define ISO_FD_CONSOLE 5

enum iso_request_type {
    ISO_DIAL = 1,        /* a connection to guest port `port` */
    ISO_SET_TIMEOUT = 2, /* sbx_set_timeout(ms) */
    ISO_NET_UPDATE = 3,  /* sbx_network_update(): attached, a sealed memfd holding one packed
                            Sbx__Isolate__NetPolicy */
    ISO_NET_STATS = 4,   /* sbx_network_stats(): the reply's stats */
    ISO_SNAPSHOT = 5,    /* snap_capture_fds(): attached, the files in SNAP_FD_* order */
    ISO_PAUSE = 6,       /* the same, and the VM stays parked (the parent ends the child next) */
};
struct iso_request {
    uint32_t type;
    uint32_t port;
    uint64_t ms;
};

struct iso_reply {
    int32_t rc; /* 0 or an SBX_E* code */
    uint32_t reserved;
    sbx_net_stats stats;
    char msg[1024]; /* rc < 0: why */
};

#define ISO_MAX_FDS 4 /* descriptors attached to one message */

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

/* Sends `len` bytes of `msg` on `sock` with the `nfds` descriptors in `fds` attached, never
   blocking (lib/isolate/wire.c). Returns what sendmsg() does. */
ssize_t iso_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds);

/* Receives one message of at most `cap` bytes and the descriptors attached to it (close-on-
   exec; those beyond ISO_MAX_FDS are closed), with recvmsg() flags `flags`. Returns what
   recvmsg() does; *nfds descriptors are in fds. */
ssize_t iso_recv(int sock, void *buf, size_t cap, int fds[ISO_MAX_FDS], unsigned *nfds, int flags);

/* A sealed memfd holding the packed message `m` (the way options and policies travel; -1 on
   failure), and its contents read back, at most `max` bytes (malloc'ed; NULL if larger or
   unreadable). */
int iso_memfd(const ProtobufCMessage *m);
uint8_t *iso_memfd_read(int fd, size_t max, size_t *len);

/* Parent side (lib/isolate/parent.c). */

/* Starts the child for `sb` with options `o` (NULL: the defaults), from the snapshot in
   `snapdir` when `how` is a resume or fork (lib/sandbox.c's enum origin, else 0), and waits
   until its sandbox runs (filling sb->info and sb->id) or failed (the handle's message set),
   within the boot timeout. */
int iso_start(struct sbx *sb, const sbx_options *o, const char *snapdir, unsigned how);

/* A new connection to guest port `port`, from the child. */
int iso_dial(struct sbx *sb, unsigned port, int *fd);

/* The calls the child carries out for the handle (the handle's message set on failure). */
int iso_set_timeout(struct sbx *sb, uint64_t ms);
int iso_network_update(struct sbx *sb, const sbx_net_policy *policy);
int iso_network_stats(struct sbx *sb, sbx_net_stats *st);
/* Writes a snapshot of the child's VM to `dir` (created here; the child only gets the open
   files); with `pause`, the child's VM stays parked. */
int iso_snapshot(struct sbx *sb, const char *dir, bool pause);

/* Ends the child (it tears its VM down) and releases what iso_start() made. */
void iso_stop(struct sbx *sb);

/* Kills the child at once (the handle's VM was stopped on this side). */
void iso_kill(struct sbx *sb);

/* Child side (lib/isolate/child.c): sbx-vmm's main. Returns its exit status. */
int iso_child_main(void);

#endif
