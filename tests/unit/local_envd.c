// SPDX-License-Identifier: Apache-2.0
/* Unit-test helper: runs the embedded envd in --test-listen mode and attaches a handle. */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "local_envd.h"

extern const unsigned char sbx_envd_blob[], sbx_envd_blob_end[];

/* One local envd per handle; a test process has few, so a small table is enough. */
static struct {
    sbx *sb;
    pid_t pid;
    char dir[64];
} locals[16];

int local_envd_start(const sbx_options *opts, sbx **out)
{
    *out = NULL;
    size_t slot = 0;
    while (slot < 16 && locals[slot].sb)
        slot++;
    if (slot == 16)
        return SBX_EBUSY;
    snprintf(locals[slot].dir, sizeof(locals[slot].dir), "/tmp/sbx-envd.XXXXXX");
    if (!mkdtemp(locals[slot].dir))
        return SBX_EIO;
    char sock[128], arg[160];
    snprintf(sock, sizeof(sock), "%s/sock", locals[slot].dir);
    snprintf(arg, sizeof(arg), "--test-listen=%s", sock);
    /* A real file, not a memfd: valgrind cannot follow fexecve. */
    char bin[128];
    snprintf(bin, sizeof(bin), "%s/envd", locals[slot].dir);
    int bfd = open(bin, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    size_t len = (size_t)(sbx_envd_blob_end - sbx_envd_blob);
    bool written = bfd >= 0 && write(bfd, sbx_envd_blob, len) == (ssize_t)len;
    if (bfd >= 0)
        close(bfd);
    if (!written)
        return SBX_EIO;
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"envd", arg, NULL};
        execv(bin, argv);
        _exit(127);
    }
    if (pid < 0)
        return SBX_EIO;
    struct stat st;
    for (int i = 0; i < 500 && stat(sock, &st) != 0; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    locals[slot].pid = pid;
    int r = sbx_local_attach(sock, opts, out);
    locals[slot].sb = *out;
    if (r < 0 && !*out)
        local_envd_stop(NULL);
    return r;
}

void local_envd_stop(sbx *sb)
{
    for (size_t i = 0; i < 16; i++) {
        if (locals[i].sb != sb || !locals[i].pid)
            continue;
        sbx_destroy(sb);
        kill(locals[i].pid, SIGKILL);
        waitpid(locals[i].pid, NULL, 0);
        char sock[128];
        snprintf(sock, sizeof(sock), "%s/sock", locals[i].dir);
        unlink(sock);
        snprintf(sock, sizeof(sock), "%s/envd", locals[i].dir);
        unlink(sock);
        rmdir(locals[i].dir);
        locals[i].sb = NULL;
        locals[i].pid = 0;
        return;
    }
    sbx_destroy(sb);
}
