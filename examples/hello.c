// SPDX-License-Identifier: Apache-2.0
/* The smallest libsandbox program: boot a sandbox, ask who it is, run code in it, shut it down. */
#include <stdio.h>
#include <stdlib.h>

#include <sandbox.h>

int main(int argc, char **argv)
{
    sbx_options opts = SBX_OPTIONS_INIT;
    opts.rootfs = argc > 1 ? argv[1] : "base"; /* an image name or a path to an ext4 image */
    opts.vcpus = 2;

    sbx *sb = NULL;
    int rc = sbx_create(&sb, &opts);
    if (rc != 0) {
        fprintf(stderr, "sbx_create: %s: %s\n", sbx_strerror(rc), sbx_errmsg(sb));
        sbx_destroy(sb);
        return 1;
    }

    sbx_info info;
    sbx_get_info(sb, &info);
    printf("sandbox %s is up after %.1f ms (%u vCPUs, %u MiB)\n", info.id, info.boot_ns / 1e6,
           info.vcpus, info.memory_mib);
    printf("guest OS:     %s, Linux %s, %u CPUs, %llu MiB usable\n", info.os_name,
           info.kernel_release, info.guest_cpus, (unsigned long long)(info.guest_mem_kib / 1024));
    printf("guest agent:  envd %s (protocol %u)\n", info.envd_version, info.protocol_version);

    /* A file in, a command that uses it, its output back. */
    static const char script[] = "import platform\nprint('hello from', platform.node())\n";
    sbx_exec_options x = SBX_EXEC_OPTIONS_INIT;
    x.cmd = "python3 hello.py 2>/dev/null || echo \"hello from $(hostname) ($(id -un))\"";
    sbx_exec_result res = {0};
    if ((rc = sbx_write_file(sb, "hello.py", script, sizeof(script) - 1, 0)) != 0)
        fprintf(stderr, "sbx_write_file: %s\n", sbx_errmsg(sb));
    else if ((rc = sbx_exec(sb, &x, &res)) != 0)
        fprintf(stderr, "sbx_exec: %s\n", sbx_errmsg(sb));
    else
        printf("command:      exit %d, said: %s", res.exit_code, res.out ? res.out : "\n");
    sbx_exec_result_free(&res);

    if (rc == 0 && (rc = sbx_shutdown(sb, 0)) != 0)
        fprintf(stderr, "sbx_shutdown: %s\n", sbx_errmsg(sb));
    else if (rc == 0)
        printf("guest shut down cleanly\n");
    sbx_destroy(sb);
    return rc ? 1 : 0;
}
