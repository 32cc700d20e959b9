// SPDX-License-Identifier: Apache-2.0
/* Building the guest kernel command line, including virtio-mmio device announcements. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/cmdline.h"

void cmdline_init(struct cmdline *c)
{
    c->buf[0] = 0;
    c->len = 0;
    c->overflow = false;
}

static void append(struct cmdline *c, const char *s, size_t n)
{
    size_t sep = c->len ? 1 : 0;
    if (c->overflow || c->len + sep + n >= CMDLINE_MAX) {
        c->overflow = true;
        return;
    }
    if (sep)
        c->buf[c->len++] = ' ';
    memcpy(c->buf + c->len, s, n);
    c->len += n;
    c->buf[c->len] = 0;
}

void cmdline_add(struct cmdline *c, const char *fmt, ...)
{
    char tmp[CMDLINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        c->overflow = true;
        return;
    }
    append(c, tmp, (size_t)n);
}

void cmdline_add_virtio(struct cmdline *c, uint64_t base, uint64_t size, uint32_t irq)
{
    if (size % 1024 == 0)
        cmdline_add(c, "virtio_mmio.device=%lluK@0x%llx:%u", (unsigned long long)(size / 1024),
                    (unsigned long long)base, irq);
    else
        cmdline_add(c, "virtio_mmio.device=%llu@0x%llx:%u", (unsigned long long)size,
                    (unsigned long long)base, irq);
}

bool cmdline_append_raw(struct cmdline *c, const char *text)
{
    for (const char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    while (*text == ' ')
        text++;
    size_t n = strlen(text);
    while (n > 0 && text[n - 1] == ' ')
        n--;
    if (n)
        append(c, text, n);
    return true;
}
