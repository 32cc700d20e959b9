/* SPDX-License-Identifier: Apache-2.0 */
/* A 16550A UART (COM1) whose output feeds the console ring and an optional fd sink. */
#ifndef SBX_SERIAL_H
#define SBX_SERIAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define SERIAL_PORT      0x3f8
#define SERIAL_NPORTS    8
#define SERIAL_RING_SIZE (64 * 1024)

struct serial {
    pthread_mutex_t lock;
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
    bool thri_pending; /* "transmitter holding register empty" interrupt not yet read */
    /* Console ring: the last SERIAL_RING_SIZE bytes the guest wrote. */
    char ring[SERIAL_RING_SIZE];
    uint64_t written; /* total bytes ever written; ring position = written % size */
    int sink_fd;      /* copy of the output, or -1 */
    /* Raises the UART's interrupt line (an edge on IRQ 4). */
    void (*irq)(void *ctx);
    void *ctx;
};

void serial_init(struct serial *s, int sink_fd, void (*irq)(void *), void *ctx);
void serial_destroy(struct serial *s);

/* bus_fn for ports SERIAL_PORT .. SERIAL_PORT + 7. */
void serial_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write);

/* Appends console output that another process's UART produced (the isolated mode) to the
   ring; the sink is not written. */
void serial_feed(struct serial *s, const char *buf, size_t n);

/* Copies the last bytes of output (at most cap - 1) NUL-terminated; returns the count. */
size_t serial_tail(struct serial *s, char *buf, size_t cap);

/* Copies at most `lines` last lines (and at most cap - 1 bytes), NUL-terminated, with
   non-printable bytes replaced: for error messages. */
size_t serial_tail_lines(struct serial *s, char *buf, size_t cap, unsigned lines);

/* True if the console output contains `needle` within its last SERIAL_RING_SIZE bytes. */
bool serial_contains(struct serial *s, const char *needle);

#endif
