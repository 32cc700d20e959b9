// SPDX-License-Identifier: Apache-2.0
/* envd logging: short "envd: " lines on the serial console, nothing when it is missing. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "envd.h"

/* envd is a single-threaded process; the console fd is its one piece of logging state. */
static int console_fd = -1;

void log_open(bool console)
{
    if (console_fd >= 0)
        return;
    if (console)
        console_fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    /* In test mode (the host's console is not ours), or without a console node, stderr is the
       best we have: the kernel opens the console as fds 0-2 of init when it can. */
    if (console_fd < 0 && fcntl(2, F_GETFD) >= 0)
        console_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
}

void log_msg(const char *fmt, ...)
{
    if (console_fd < 0)
        return;
    /* One write per line, so lines from the kernel and envd do not interleave mid-line. */
    char line[512];
    int n = snprintf(line, sizeof(line), "envd: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(console_fd, line, (size_t)n);
    (void)w;
}
