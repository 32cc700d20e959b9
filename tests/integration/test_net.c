// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of guest networking: the NAT, DNS names, the egress policy and its
   updates, and a sandbox without network. All traffic stays on this machine: the guest talks
   to servers this test starts on the host's loopback, reached through the gateway. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* A TCP server on the host's 127.0.0.1 that greets every connection with "hello PORT\n". */
struct server {
    int fd;
    unsigned port;
    pthread_t thread;
};

static void *serve(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            return NULL; /* shut down */
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "hello %u\n", s->port);
        if (write(c, msg, (size_t)n) != n)
            perror("server write");
        close(c);
    }
}

static void server_start_on(struct server *s, const char *addr)
{
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    CHECK(inet_pton(AF_INET, addr, &a.sin_addr) == 1);
    socklen_t len = sizeof(a);
    CHECK(s->fd >= 0 && bind(s->fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(listen(s->fd, 16) == 0 && getsockname(s->fd, (struct sockaddr *)&a, &len) == 0);
    s->port = ntohs(a.sin_port);
    CHECK(pthread_create(&s->thread, NULL, serve, s) == 0);
}

static void server_start(struct server *s)
{
    server_start_on(s, "127.0.0.1");
}

static void server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* Runs a shell command in the guest as `user` (NULL: the default user); returns its exit
   code, stdout in out. */
static int sh_as(sbx *sb, const char *user, const char *cmd, char *out, size_t cap)
{
    sbx_exec_options e = SBX_EXEC_OPTIONS_INIT;
    e.cmd = cmd;
    e.user = user;
    e.timeout_ms = 180000;
    sbx_exec_result r;
    CHECK_OK(sb, sbx_exec(sb, &e, &r));
    snprintf(out, cap, "%s", r.out ? r.out : "");
    fprintf(stderr, "$ %s -> %d (%llu ms)\n%s%s", cmd, r.exit_code,
            (unsigned long long)r.duration_ms, out, r.err ? r.err : "");
    int code = r.exit_code;
    sbx_exec_result_free(&r);
    return code;
}

static int sh(sbx *sb, const char *cmd, char *out, size_t cap)
{
    return sh_as(sb, NULL, cmd, out, cap);
}

/* Connects from the guest to host:port with bash's /dev/tcp and prints what it got. A refused
   connection must fail at once (the policy answers with RST), so the limit is short compared
   with a TCP connect timeout. Returns the exit code. */
static int fetch(sbx *sb, const char *host, unsigned port, char *out, size_t cap)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "timeout 20 bash -c 'exec 3<>/dev/tcp/%s/%u && cat <&3'", host,
             port);
    return sh(sb, cmd, out, cap);
}

static void expect_hello(sbx *sb, const char *host, unsigned port)
{
    char out[256], want[32];
    snprintf(want, sizeof(want), "hello %u\n", port);
    CHECK(fetch(sb, host, port, out, sizeof(out)) == 0);
    CHECK(strcmp(out, want) == 0);
}

static void expect_refused(sbx *sb, const char *host, unsigned port)
{
    char out[256];
    double t0 = itest_ms();
    int code = fetch(sb, host, port, out, sizeof(out));
    CHECK(code != 0 && code != 124); /* refused, not timed out */
    CHECK(out[0] == 0);
    CHECK(itest_ms() - t0 < 15000);
}

static sbx *boot(sbx_options *o)
{
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, o));
    return sb;
}

SBX_TEST(nat_reaches_host)
{
    /* eth0 configured by envd; the host's loopback reachable through the gateway when asked. */
    struct server s;
    server_start(&s);
    sbx_options o = itest_options("base");
    o.host_loopback = 1;
    sbx *sb = boot(&o);
    char out[4096];
    /* The kernel reports the operational state from its link-watch work, which may run up to
       a second after the link came up (traffic flows from the start). */
    CHECK(
        sh(sb,
           "for i in $(seq 50); do [ \"$(cat /sys/class/net/eth0/operstate)\" = up ] && "
           "break; sleep 0.1; done; cat /sys/class/net/eth0/operstate /sys/class/net/lo/operstate",
           out, sizeof(out)) == 0);
    CHECK(strcmp(out, "up\nunknown\n") == 0);
    CHECK(sh(sb, "cat /etc/resolv.conf", out, sizeof(out)) == 0);
    CHECK(strcmp(out, "nameserver 10.0.2.3\n") == 0);
    /* The default route: destination 0, gateway 10.0.2.2 (little-endian hex). */
    CHECK(sh(sb, "awk '$2==\"00000000\"{print $1, $3}' /proc/net/route", out, sizeof(out)) == 0);
    CHECK(strcmp(out, "eth0 0202000A\n") == 0);
    expect_hello(sb, "10.0.2.2", s.port);
    /* Several connections in a row and a bigger transfer through the NAT both ways. */
    for (int i = 0; i < 3; i++)
        expect_hello(sb, "10.0.2.2", s.port);
    sbx_net_stats st;
    CHECK_OK(sb, sbx_network_stats(sb, &st));
    fprintf(stderr, "tx %llu frames, rx %llu frames, blocked %llu, dropped %llu\n",
            (unsigned long long)st.tx_frames, (unsigned long long)st.rx_frames,
            (unsigned long long)st.blocked, (unsigned long long)st.dropped);
    CHECK(st.tx_frames >= 8 && st.rx_frames >= 8 && st.blocked == 0);
    sbx_destroy(sb);
    server_stop(&s);
}

SBX_TEST(host_loopback_is_closed_by_default)
{
    struct server s;
    server_start(&s);
    sbx_options o = itest_options("base");
    sbx *sb = boot(&o);
    char out[256];
    /* The gateway address leads nowhere: libslirp refuses it. */
    CHECK(fetch(sb, "10.0.2.2", s.port, out, sizeof(out)) != 0);
    /* Addresses that libslirp would map to the host itself are never forwarded. */
    CHECK(fetch(sb, "10.0.2.77", s.port, out, sizeof(out)) != 0);
    sbx_destroy(sb);
    server_stop(&s);
}

SBX_TEST(dns_names_and_domain_rules)
{
    /* Names given as `hosts` are answered by the sandbox's DNS and count for domain rules:
       a domain allow entry opens their address. (Names learned from real DNS answers are
       covered by tests/unit/test_netfilter.c: the tests send no traffic off this machine.) */
    struct server s;
    server_start(&s);
    const char *hosts[] = {"svc.test=10.0.2.2", NULL};
    const char *allow_other[] = {"*.good.test", NULL};
    sbx_options o = itest_options("base");
    o.host_loopback = 1;
    o.hosts = hosts;
    o.net_policy.block_internet = 1;
    o.net_policy.allow_out = allow_other;
    sbx *sb = boot(&o);
    char out[256];
    CHECK(sh(sb, "getent hosts svc.test", out, sizeof(out)) == 0);
    CHECK(strncmp(out, "10.0.2.2", 8) == 0 && strstr(out, "svc.test"));
    /* Blocked: the address alone, and through a name outside the allowed domain. */
    expect_refused(sb, "10.0.2.2", s.port);
    expect_refused(sb, "svc.test", s.port);
    /* "*.svc.test" is the subdomains only, not the name itself. */
    const char *allow_sub[] = {"*.svc.test", NULL};
    sbx_net_policy p = {1, allow_sub, NULL};
    CHECK_OK(sb, sbx_network_update(sb, &p));
    expect_refused(sb, "svc.test", s.port);
    /* The name itself: its address is open, by name and by number. */
    const char *allow_name[] = {"svc.test", NULL};
    p.allow_out = allow_name;
    CHECK_OK(sb, sbx_network_update(sb, &p));
    expect_hello(sb, "svc.test", s.port);
    expect_hello(sb, "10.0.2.2", s.port);
    sbx_net_stats st;
    CHECK_OK(sb, sbx_network_stats(sb, &st));
    CHECK(st.blocked >= 3);
    sbx_destroy(sb);
    server_stop(&s);
}

SBX_TEST(policy_allow_wins_and_updates)
{
    struct server a, b;
    server_start(&a);
    server_start(&b);
    sbx_options o = itest_options("base");
    o.host_loopback = 1;
    sbx *sb = boot(&o);
    /* Open: both reachable. */
    expect_hello(sb, "10.0.2.2", a.port);
    expect_hello(sb, "10.0.2.2", b.port);

    /* Deny the whole network but allow one port: the allow entry wins for that port. */
    char allow_a[64];
    snprintf(allow_a, sizeof(allow_a), "10.0.2.2:%u", a.port);
    const char *allow[] = {allow_a, NULL};
    const char *deny[] = {"10.0.2.0/24", NULL};
    sbx_net_policy p = {0, allow, deny};
    CHECK_OK(sb, sbx_network_update(sb, &p));
    expect_hello(sb, "10.0.2.2", a.port);
    expect_refused(sb, "10.0.2.2", b.port);

    /* No internet at all. */
    sbx_net_policy none = {1, NULL, NULL};
    CHECK_OK(sb, sbx_network_update(sb, &none));
    expect_refused(sb, "10.0.2.2", a.port);

    /* A bad entry is refused with its name and leaves the policy as it was. */
    const char *bad[] = {"10.0.0.0/33", NULL};
    sbx_net_policy pb = {0, bad, NULL};
    CHECK_RC(sb, sbx_network_update(sb, &pb), SBX_EINVAL);
    fprintf(stderr, "bad entry: %s\n", sbx_errmsg(sb));
    CHECK(strstr(sbx_errmsg(sb), "10.0.0.0/33") != NULL);
    expect_refused(sb, "10.0.2.2", a.port);

    /* Open again. */
    sbx_net_policy open = {0, NULL, NULL};
    CHECK_OK(sb, sbx_network_update(sb, &open));
    expect_hello(sb, "10.0.2.2", b.port);
    sbx_destroy(sb);
    server_stop(&a);
    server_stop(&b);
}

SBX_TEST(network_off_leaves_loopback)
{
    sbx_options o = itest_options("base");
    o.network = SBX_NET_NONE;
    sbx *sb = boot(&o);
    char out[256];
    CHECK(sh(sb, "ls /sys/class/net", out, sizeof(out)) == 0);
    CHECK(strcmp(out, "lo\n") == 0);
    /* Loopback works: a server and a client inside the guest. */
    CHECK(sh(sb,
             "python3 -c 'import socket; s=socket.create_server((\"127.0.0.1\", 0)); "
             "c=socket.create_connection(s.getsockname()); a,_=s.accept(); a.sendall(b\"lo-ok\"); "
             "print(c.recv(10).decode())'",
             out, sizeof(out)) == 0);
    CHECK(strcmp(out, "lo-ok\n") == 0);
    sbx_net_policy none = {1, NULL, NULL};
    CHECK_RC(sb, sbx_network_update(sb, &none), SBX_ENOTSUP);
    sbx_net_stats st;
    CHECK_RC(sb, sbx_network_stats(sb, &st), SBX_ENOTSUP);
    sbx_destroy(sb);

    /* Options that need a network are refused without one, and bad entries are named. */
    o.net_policy.block_internet = 1;
    sb = NULL;
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EINVAL);
    sbx_destroy(sb);
    o = itest_options("base");
    const char *hosts[] = {"x.test=not-an-address", NULL};
    o.hosts = hosts;
    sb = NULL;
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EINVAL);
    CHECK(strstr(sbx_errmsg(sb), "x.test") != NULL);
    sbx_destroy(sb);
}

/* Runs a host command; skips the test (with the reason) when it fails. */
SBX_TEST(apt_get_install_through_the_nat)
{
    /* What a template's `RUN apt-get install` does, against a package repository this test
       serves on the host's loopback (so no traffic leaves the machine): apt fetches the index
       and the package over HTTP through the NAT, and the package works. */
    char port[16], cmd[1024];
    snprintf(port, sizeof(port), "%u", itest_apt_repo());
    sbx_options o = itest_options("base");
    o.host_loopback = 1;
    sbx *sb = boot(&o);
    char out[4096];
    snprintf(cmd, sizeof(cmd), ITEST_APT_INSTALL " && sbx-hello", port);
    CHECK(sh_as(sb, "root", cmd, out, sizeof(out)) == 0);
    CHECK(strcmp(out, "hello from a package\n") == 0);
    sbx_destroy(sb);
}

SBX_TEST(tap_backend)
{
    /* A TAP device made here plays the deployment's bridge: the host's end has 10.99.0.1, the
       guest 10.99.0.2; traffic goes through the host's own network stack. */
    if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0 ||
        system("ip -V >/dev/null 2>&1") != 0) {
        fprintf(stderr, "skip: making a TAP device needs root, /dev/net/tun and ip(8)\n");
        exit(ITEST_SKIP);
    }
    if (system("ip link del sbxtest0 2>/dev/null; ip tuntap add dev sbxtest0 mode tap && "
               "ip addr add 10.99.0.1/24 dev sbxtest0 && ip link set sbxtest0 up") != 0) {
        fprintf(stderr, "skip: cannot make the TAP device sbxtest0 here\n");
        exit(ITEST_SKIP);
    }
    struct server s;
    server_start_on(&s, "10.99.0.1");
    const char *hosts[] = {"tapsvc.test=10.99.0.1", NULL};
    sbx_options o = itest_options("base");
    o.network = SBX_NET_TAP;
    o.tap_name = "sbxtest0";
    o.tap_address = "10.99.0.2/24";
    o.tap_gateway = "10.99.0.1";
    o.hosts = hosts;
    sbx *sb = boot(&o);
    char out[256];
    CHECK(sh(sb, "cat /sys/class/net/eth0/mtu /etc/resolv.conf", out, sizeof(out)) == 0);
    CHECK(strcmp(out, "1500\nnameserver 10.99.0.1\n") == 0);
    expect_hello(sb, "10.99.0.1", s.port);
    expect_hello(sb, "tapsvc.test", s.port); /* the sandbox's DNS answers `hosts` on TAP too */
    sbx_net_policy none = {1, NULL, NULL};
    CHECK_OK(sb, sbx_network_update(sb, &none));
    expect_refused(sb, "10.99.0.1", s.port);
    sbx_destroy(sb);
    server_stop(&s);

    /* Bad TAP options are refused before anything boots. */
    o.tap_address = "10.99.0.2";
    sb = NULL;
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EINVAL);
    CHECK(strstr(sbx_errmsg(sb), "tap_address") != NULL);
    sbx_destroy(sb);
    o.tap_address = "10.99.0.2/24";
    o.tap_gateway = "10.98.0.1";
    sb = NULL;
    CHECK_RC(sb, sbx_create(&sb, &o), SBX_EINVAL);
    sbx_destroy(sb);
    CHECK(system("ip link del sbxtest0") == 0);
}

ITEST_MAIN(ITEST(nat_reaches_host), ITEST(host_loopback_is_closed_by_default),
           ITEST(dns_names_and_domain_rules), ITEST(policy_allow_wins_and_updates),
           ITEST(network_off_leaves_loopback), ITEST(apt_get_install_through_the_nat),
           ITEST(tap_backend))
