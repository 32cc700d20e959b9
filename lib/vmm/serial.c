// SPDX-License-Identifier: Apache-2.0
/* A 16550A UART (COM1) whose output feeds the console ring and an optional fd sink. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/serial.h"

/* Register offsets and bits (the 16550 data sheet; Linux's include/uapi/linux/serial_reg.h). */
enum { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };
#define LCR_DLAB   0x80
#define IER_THRI   0x02
#define IIR_NO_INT 0x01
#define IIR_THRI   0x02
#define IIR_FIFO   0xc0 /* "FIFOs enabled": what makes Linux detect a 16550A */
#define LSR_THRE   0x20
#define LSR_TEMT   0x40
#define MCR_LOOP   0x10
#define MSR_IDLE   0xb0 /* DCD | DSR | CTS: a terminal is attached and ready */

void serial_init(struct serial *s, int sink_fd, void (*irq)(void *), void *ctx)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    s->sink_fd = sink_fd;
    s->irq = irq;
    s->ctx = ctx;
    s->dll = 12; /* 9600 baud until the guest programs it */
}

void serial_destroy(struct serial *s)
{
    pthread_mutex_destroy(&s->lock);
}

static void out_byte(struct serial *s, uint8_t c)
{
    s->ring[s->written % SERIAL_RING_SIZE] = (char)c;
    s->written++;
    if (s->sink_fd > 0) {
        /* Best effort: a sink that cannot keep up loses output, the guest never stalls. */
        ssize_t r = write(s->sink_fd, &c, 1);
        (void)r;
    }
}

void serial_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct serial *s = opaque;
    bool raise = false;
    pthread_mutex_lock(&s->lock);
    bool dlab = s->lcr & LCR_DLAB;
    if (is_write) {
        uint8_t v = data[0];
        switch (offset) {
        case RBR_THR:
            if (dlab) {
                s->dll = v;
            } else {
                if (!(s->mcr & MCR_LOOP))
                    out_byte(s, v);
                /* The byte left at once: THR is empty again. */
                if (s->ier & IER_THRI) {
                    s->thri_pending = true;
                    raise = true;
                }
            }
            break;
        case IER:
            if (dlab) {
                s->dlm = v;
            } else {
                bool was = s->ier & IER_THRI;
                s->ier = v & 0x0f;
                if ((s->ier & IER_THRI) && !was) {
                    s->thri_pending = true;
                    raise = true;
                }
                if (!(s->ier & IER_THRI))
                    s->thri_pending = false;
            }
            break;
        case IIR_FCR:
            s->fcr = v;
            break;
        case LCR:
            s->lcr = v;
            break;
        case MCR:
            s->mcr = v;
            break;
        case SCR:
            s->scr = v;
            break;
        default: /* LSR and MSR are read-only */
            break;
        }
    } else {
        uint8_t v = 0;
        switch (offset) {
        case RBR_THR:
            v = dlab ? s->dll : 0; /* no input: the console is output-only */
            break;
        case IER:
            v = dlab ? s->dlm : s->ier;
            break;
        case IIR_FCR:
            v = (s->fcr & 1) ? IIR_FIFO : 0;
            if (s->thri_pending) {
                v |= IIR_THRI;
                s->thri_pending = false; /* reading IIR acknowledges THRE */
            } else {
                v |= IIR_NO_INT;
            }
            break;
        case LCR:
            v = s->lcr;
            break;
        case MCR:
            v = s->mcr;
            break;
        case LSR:
            v = LSR_THRE | LSR_TEMT;
            break;
        case MSR:
            v = (s->mcr & MCR_LOOP) ? (uint8_t)((s->mcr & 0x0f) << 4) : MSR_IDLE;
            break;
        case SCR:
            v = s->scr;
            break;
        }
        memset(data, 0, len);
        data[0] = v;
    }
    pthread_mutex_unlock(&s->lock);
    if (raise && s->irq)
        s->irq(s->ctx);
}

/* Copies the last n (<= ring size) bytes; caller holds the lock. */
static void copy_tail(const struct serial *s, char *dst, size_t n)
{
    uint64_t start = s->written - n;
    for (size_t i = 0; i < n; i++)
        dst[i] = s->ring[(start + i) % SERIAL_RING_SIZE];
}

void serial_feed(struct serial *s, const char *buf, size_t n)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++)
        s->ring[(s->written + i) % SERIAL_RING_SIZE] = buf[i];
    s->written += n;
    pthread_mutex_unlock(&s->lock);
}

size_t serial_tail(struct serial *s, char *buf, size_t cap)
{
    if (cap == 0)
        return 0;
    pthread_mutex_lock(&s->lock);
    size_t have = s->written < SERIAL_RING_SIZE ? (size_t)s->written : SERIAL_RING_SIZE;
    size_t n = have < cap - 1 ? have : cap - 1;
    copy_tail(s, buf, n);
    pthread_mutex_unlock(&s->lock);
    buf[n] = 0;
    return n;
}

size_t serial_tail_lines(struct serial *s, char *buf, size_t cap, unsigned lines)
{
    size_t n = serial_tail(s, buf, cap);
    /* Drop trailing newlines, then walk back `lines` line starts. */
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    size_t start = n;
    unsigned seen = 0;
    while (start > 0) {
        if (buf[start - 1] == '\n' && ++seen == lines)
            break;
        start--;
    }
    memmove(buf, buf + start, n - start + 1);
    n -= start;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\r')
            buf[i] = ' ';
        else if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
            buf[i] = '?';
    }
    return n;
}

bool serial_contains(struct serial *s, const char *needle)
{
    static const size_t cap = SERIAL_RING_SIZE + 1;
    char *tmp = malloc(cap);
    if (!tmp)
        return false;
    serial_tail(s, tmp, cap);
    bool found = strstr(tmp, needle) != NULL;
    free(tmp);
    return found;
}
