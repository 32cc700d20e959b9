// SPDX-License-Identifier: Apache-2.0
/*
 * A hostile guest, end to end (docs/SECURITY.md): tests/guest/hostile.c runs as root in one
 * sandbox and attacks the VMM's devices through /dev/mem, while a second sandbox in the same
 * process looks on. For each attack: the host process stays up, the bystander keeps working,
 * the attacked sandbox is failed with a message naming the violation (or the bad request is
 * refused and it keeps running), the host's memory stays bounded, and sbx_destroy() of the
 * attacked sandbox returns promptly.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define HOSTILE         SBX_BINARY_DIR "/tests/hostile"
#define ATTACK_WAIT_MS  60000
#define MAX_RSS_GROW_KB (64 * 1024)
#define DESTROY_MAX_MS  10000

static long rss_kib(void)
{
    long kib = itest_status("/proc/self/status", "VmRSS:");
    CHECK(kib > 0);
    return kib;
}

static sbx *boot(void)
{
    sbx_options o = itest_options(NULL);
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));
    return sb;
}

/* Uploads the program to a tmpfs in the sandbox (the attacks may take the root disk away). */
static void arm(sbx *sb)
{
    FILE *f = fopen(HOSTILE, "rb");
    CHECK(f != NULL);
    static char prog[4 << 20];
    size_t n = fread(prog, 1, sizeof(prog), f);
    fclose(f);
    CHECK(n > 0 && n < sizeof(prog));
    free(itest_run(sb, "root", "mkdir -p /run/h && mount -t tmpfs -o size=8m none /run/h"));
    CHECK_OK(sb, sbx_write_file(sb, "/run/h/hostile", prog, n, 0755));
}

/* Starts `hostile ARGS` detached, its report on the console (the attack may take the agent's
   connection away), and waits until it reports "done" or the sandbox fails. Returns the
   console's text (static). */
static const char *attack(sbx *sb, const char *args)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "setsid /run/h/hostile %s </dev/null >/dev/console 2>&1 &", args);
    free(itest_run(sb, "root", cmd));
    static char console[65536];
    double end = itest_ms() + ATTACK_WAIT_MS;
    for (;;) {
        size_t n = sbx_console(sb, console, sizeof(console) - 1);
        console[n < sizeof(console) ? n : sizeof(console) - 1] = '\0';
        if (strstr(console, "hostile: done") || sbx_state(sb) != SBX_STATE_RUNNING)
            return console;
        if (itest_ms() > end)
            itest_fail(__FILE__, __LINE__, "hostile %s: neither done nor failed after %d ms:\n%s",
                       args, ATTACK_WAIT_MS, console);
        usleep(100 * 1000);
    }
}

/* The attacked sandbox is failed, and a call on it says why: `reason` must be in the message. */
static void expect_failed(sbx *sb, const char *reason)
{
    CHECK(sbx_state(sb) == SBX_STATE_FAILED);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = "true";
    sbx_exec_result res;
    int rc = sbx_exec(sb, &o, &res);
    CHECK(rc == SBX_EDEAD);
    if (!strstr(sbx_errmsg(sb), reason))
        itest_fail(__FILE__, __LINE__, "wanted \"%s\" in: %s", reason, sbx_errmsg(sb));
    printf("failed as expected: %.300s\n", sbx_errmsg(sb));
}

/* What must hold after every attack. */
static void aftermath(sbx *victim, sbx *bystander, long rss_before)
{
    itest_expect(bystander, NULL, "echo alive", "alive\n");
    long grow = rss_kib() - rss_before;
    printf("host RSS grew by %ld KiB during the attack\n", grow);
    CHECK(grow < MAX_RSS_GROW_KB);
    double t0 = itest_ms();
    sbx_destroy(victim);
    double took = itest_ms() - t0;
    printf("sbx_destroy of the attacked sandbox took %.0f ms\n", took);
    CHECK(took < DESTROY_MAX_MS);
    sbx_destroy(bystander);
}

/* One attack that must fail the attacked sandbox with `reason`. */
static void fatal_attack(const char *args, const char *reason)
{
    sbx *bystander = boot(), *victim = boot();
    arm(victim);
    long rss = rss_kib();
    const char *console = attack(victim, args);
    if (sbx_state(victim) != SBX_STATE_FAILED)
        itest_fail(__FILE__, __LINE__, "hostile %s: the sandbox still runs:\n%s", args, console);
    expect_failed(victim, reason);
    aftermath(victim, bystander, rss);
}

/* A virtio-blk queue whose descriptor table lies outside guest RAM. */
SBX_TEST(ring_outside_ram)
{
    fatal_attack("ring-outside 2", "outside guest RAM");
}

/* A descriptor pointing outside guest RAM. */
SBX_TEST(descriptor_outside_ram)
{
    fatal_attack("desc-outside 2", "points outside guest RAM");
}

/* Two descriptors chained to each other. */
SBX_TEST(descriptor_loop)
{
    fatal_attack("desc-loop 2", "(a loop?)");
}

/* An available index 0x8000 ahead. */
SBX_TEST(available_index_jump)
{
    fatal_attack("avail-jump 2", "available index jumped");
}

/* A 4 GiB descriptor. */
SBX_TEST(huge_descriptor)
{
    fatal_attack("huge-len 2", "virtio-blk: queue");
}

/* The same on vsock's transmit queue. */
SBX_TEST(vsock_descriptor_loop)
{
    fatal_attack("desc-loop 19", "(a loop?)");
}

/* A vsock packet header announcing 2 GiB of payload: the packet is refused (or the device
   failed), nothing is allocated for it. */
SBX_TEST(vsock_oversized_packet)
{
    sbx *bystander = boot(), *victim = boot();
    arm(victim);
    long rss = rss_kib();
    const char *console = attack(victim, "vsock-oversize");
    printf("%s\n", strstr(console, "hostile: vsock") ? strstr(console, "hostile: vsock") : "");
    aftermath(victim, bystander, rss);
}

/* 20000 connection requests from new ports, hand-built: each is answered with a reset, no
   state piles up on the host. */
SBX_TEST(vsock_request_flood)
{
    sbx *bystander = boot(), *victim = boot();
    arm(victim);
    long rss = rss_kib();
    const char *console = attack(victim, "vsock-requests 20000");
    const char *report = strstr(console, "connection requests sent");
    CHECK(report != NULL || sbx_state(victim) == SBX_STATE_FAILED);
    if (report)
        printf("hostile:%.120s\n", report);
    aftermath(victim, bystander, rss);
}

/* 20000 connects through the guest's real driver: refused, and the sandbox keeps working. */
SBX_TEST(vsock_connect_flood)
{
    sbx *bystander = boot(), *victim = boot();
    arm(victim);
    long rss = rss_kib();
    attack(victim, "vsock-connect 20000");
    CHECK(sbx_state(victim) == SBX_STATE_RUNNING);
    itest_expect(victim, NULL, "echo still here", "still here\n");
    aftermath(victim, bystander, rss);
}

/* Nonsense of every width to every register of every device, three seeds. */
SBX_TEST(register_garbage)
{
    for (unsigned seed = 1; seed <= 3; seed++) {
        sbx *bystander = boot(), *victim = boot();
        arm(victim);
        long rss = rss_kib();
        char args[64];
        snprintf(args, sizeof(args), "registers %u 50000", seed);
        attack(victim, args);
        printf("seed %u: the sandbox is %s\n", seed,
               sbx_state(victim) == SBX_STATE_FAILED ? "failed" : "still running");
        aftermath(victim, bystander, rss);
    }
}

ITEST_MAIN(ITEST(ring_outside_ram), ITEST(descriptor_outside_ram), ITEST(descriptor_loop),
           ITEST(available_index_jump), ITEST(huge_descriptor), ITEST(vsock_descriptor_loop),
           ITEST(vsock_oversized_packet), ITEST(vsock_request_flood), ITEST(vsock_connect_flood),
           ITEST(register_garbage))
