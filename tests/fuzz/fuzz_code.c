// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: the code interpreter's answers (JSON lines from the guest service) as the
   host reads them for sbx_run_code, callbacks included. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "ops/code.h"

static size_t touched;

static int on_output(void *ctx, int stream, const void *data, size_t len)
{
    (void)ctx;
    if ((stream != SBX_STDOUT && stream != SBX_STDERR) || (len && !data))
        abort();
    touched += len ? ((const unsigned char *)data)[len - 1] : 0;
    return 0;
}

static int on_result(void *ctx, const sbx_code_result *r)
{
    (void)ctx;
    for (unsigned i = 0; i < r->nformats; i++)
        touched += strlen(r->mime[i]) + strlen(r->data[i]);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sbx *sb;
    if (!sb) {
        sb = calloc(1, sizeof(*sb));
        pthread_mutex_init(&sb->err_lock, NULL);
    }
    int fd = memfd_create("answers", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || lseek(fd, 0, SEEK_SET) != 0)
        abort();
    struct call c = {.sb = sb, .w = {.deadline_ns = now_ns() + 10000000000ull, .intr_fd = -1,
                                     .dead_fd = -1},
                     .slot = -1};
    sbx_run_code_options o = SBX_RUN_CODE_OPTIONS_INIT;
    o.on_output = on_output;
    o.on_result = on_result;
    sbx_execution ex;
    int r = code_read_execution(&c, fd, &o, &ex);
    if (r > 0 || ex.nresults > 1024 || ex.out_len > (16u << 20) || ex.err_len > (16u << 20))
        abort();
    for (size_t i = 0; i < ex.nresults; i++) {
        if (ex.results[i].nformats > 32)
            abort();
        on_result(NULL, &ex.results[i]);
    }
    if (ex.error)
        touched += strlen(ex.error->name) + strlen(ex.error->value) + strlen(ex.error->traceback);
    sbx_execution_free(&ex);
    close(fd);
    return 0;
}
