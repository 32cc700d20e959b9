// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the egress filter: entry parsing, verdicts, RST / ICMP / DNS replies, learning
   names from DNS answers, eviction, and hostile frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sandbox.h"
#include "net/filter.h"

#define IP4(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))
#define GUEST           IP4(10, 0, 2, 15)
#define GW              IP4(10, 0, 2, 2)
#define DNS             IP4(10, 0, 2, 3)

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t gw_mac[6] = {0x52, 0x55, 10, 0, 2, 2};

enum { PASS = NETFILTER_PASS, DROP = NETFILTER_DROP, REPLY = NETFILTER_REPLY };

struct fx {
    struct netfilter *nf;
    uint8_t reply[NETFILTER_REPLY_MAX];
    size_t rlen;
    char err[256];
};

/* ---- frame builders (independent of the code under test) ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

/* The ones' complement sum of everything covered, folded: 0xffff when a checksum is right. */
static uint16_t sum(const uint8_t *p, size_t n, uint32_t acc)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        acc += get16(p + i);
    if (n & 1)
        acc += (uint32_t)p[n - 1] << 8;
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

static uint16_t pseudo_sum(const uint8_t *ip, const uint8_t *seg, size_t n)
{
    uint32_t acc =
        get16(ip + 12) + get16(ip + 14) + get16(ip + 16) + get16(ip + 18) + ip[9] + (uint32_t)n;
    return sum(seg, n, acc);
}

static size_t eth(uint8_t *f, const uint8_t *dst_mac, uint16_t type)
{
    memcpy(f, dst_mac, 6);
    memcpy(f + 6, guest_mac, 6);
    put16(f + 12, type);
    return 14;
}

/* Ethernet + IPv4 (ihl words, options zero) around l4[0..n); frag = flags | offset. */
static size_t ip_frame_x(uint8_t *f, uint8_t proto, uint32_t src, uint32_t dst, const uint8_t *l4,
                         size_t n, uint16_t frag, unsigned ihl)
{
    eth(f, gw_mac, 0x0800);
    uint8_t *ip = f + 14;
    memset(ip, 0, ihl * 4);
    ip[0] = (uint8_t)(0x40 | ihl);
    put16(ip + 2, (uint16_t)(ihl * 4 + n));
    put16(ip + 4, 0x4242);
    put16(ip + 6, frag);
    ip[8] = 64;
    ip[9] = proto;
    put32(ip + 12, src);
    put32(ip + 16, dst);
    put16(ip + 10, (uint16_t)~sum(ip, ihl * 4, 0));
    memcpy(ip + ihl * 4, l4, n);
    return 14 + ihl * 4 + n;
}

static size_t ip_frame(uint8_t *f, uint8_t proto, uint32_t src, uint32_t dst, const uint8_t *l4,
                       size_t n, uint16_t frag)
{
    return ip_frame_x(f, proto, src, dst, l4, n, frag, 5);
}

static size_t tcp_frame(uint8_t *f, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq,
                        uint32_t ack, uint8_t flags, size_t data)
{
    uint8_t t[64 + 20] = {0};
    assert_true(data <= 64);
    put16(t, sport);
    put16(t + 2, dport);
    put32(t + 4, seq);
    put32(t + 8, ack);
    t[12] = 5 << 4;
    t[13] = flags;
    put16(t + 14, 64240);
    for (size_t i = 0; i < data; i++)
        t[20 + i] = (uint8_t)i;
    return ip_frame(f, 6, GUEST, dst, t, 20 + data, 0);
}

static size_t udp_frame(uint8_t *f, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                        const uint8_t *data, size_t n)
{
    uint8_t u[1600];
    assert_true(n + 8 <= sizeof(u));
    put16(u, sport);
    put16(u + 2, dport);
    put16(u + 4, (uint16_t)(8 + n));
    put16(u + 6, 0);
    memcpy(u + 8, data, n);
    return ip_frame(f, 17, src, dst, u, 8 + n, 0);
}

static size_t icmp_frame(uint8_t *f, uint32_t dst, uint8_t type)
{
    uint8_t c[16] = {type, 0, 0, 0, 0x12, 0x34, 0, 1, 'p', 'i', 'n', 'g', 'p', 'i', 'n', 'g'};
    put16(c + 2, (uint16_t)~sum(c, sizeof(c), 0));
    return ip_frame(f, 1, GUEST, dst, c, sizeof(c), 0);
}

/* ---- DNS message builder ---- */

struct msg {
    uint8_t b[1500];
    size_t n;
};

static void m16(struct msg *m, uint16_t v)
{
    put16(m->b + m->n, v);
    m->n += 2;
}

static void m32(struct msg *m, uint32_t v)
{
    put32(m->b + m->n, v);
    m->n += 4;
}

static void mhdr(struct msg *m, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns,
                 uint16_t ar)
{
    m->n = 0;
    m16(m, id);
    m16(m, flags);
    m16(m, qd);
    m16(m, an);
    m16(m, ns);
    m16(m, ar);
}

/* Labels of `name` (dotted), without the terminating zero; returns the offset. */
static size_t mlabels(struct msg *m, const char *name)
{
    size_t at = m->n;
    while (*name) {
        size_t l = strcspn(name, ".");
        m->b[m->n++] = (uint8_t)l;
        memcpy(m->b + m->n, name, l);
        m->n += l;
        name += l + (name[l] == '.');
    }
    return at;
}

static size_t mname(struct msg *m, const char *name)
{
    size_t at = mlabels(m, name);
    m->b[m->n++] = 0;
    return at;
}

static void mptr(struct msg *m, size_t off)
{
    m16(m, (uint16_t)(0xc000 | off));
}

/* The common case: question `q` (type A) with one A record per address. */
static void simple_answer(struct msg *m, const char *q, const uint32_t *addrs, unsigned n)
{
    mhdr(m, 7, 0x8180, 1, (uint16_t)n, 0, 0);
    mname(m, q);
    m16(m, 1);
    m16(m, 1);
    for (unsigned i = 0; i < n; i++) {
        mptr(m, 12);
        m16(m, 1);
        m16(m, 1);
        m32(m, 300);
        m16(m, 4);
        m32(m, addrs[i]);
    }
}

/* ---- helpers ---- */

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct netfilter_addrs a = {.guest = GUEST, .gateway = GW, .dns = DNS};
    memcpy(a.guest_mac, guest_mac, 6);
    memcpy(a.gateway_mac, gw_mac, 6);
    static const char *const hosts[] = {"db.internal=10.0.2.2", "multi.test=192.0.2.1",
                                        "multi.test=192.0.2.2", "Multi.Test.=192.0.2.1", NULL};
    assert_int_equal(netfilter_new(&f->nf, &a, hosts, f->err, sizeof(f->err)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    netfilter_free(f->nf);
    free(f);
    return 0;
}

/* Frames are handed over in buffers of their exact size, so that valgrind (ctest
   unit.valgrind.test_netfilter) sees any read beyond them. */
static uint8_t *exact(const uint8_t *frame, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, frame, len);
    return p;
}

static void ingress(struct fx *f, const uint8_t *frame, size_t len)
{
    uint8_t *p = exact(frame, len);
    netfilter_ingress(f->nf, p, len);
    free(p);
}

static int out(struct fx *f, const uint8_t *frame, size_t len)
{
    memset(f->reply, 0xee, sizeof(f->reply));
    f->rlen = 12345;
    uint8_t *p = exact(frame, len);
    int v = (int)netfilter_egress(f->nf, p, len, f->reply, &f->rlen);
    free(p);
    if (v != REPLY)
        assert_int_equal(f->rlen, 0);
    else
        assert_true(f->rlen > 0 && f->rlen <= NETFILTER_REPLY_MAX);
    return v;
}

static int policy(struct fx *f, int internet, const char *const *allow, const char *const *deny)
{
    struct netfilter_policy p = {.allow_internet = internet, .allow_out = allow, .deny_out = deny};
    f->err[0] = 0;
    return netfilter_set_policy(f->nf, &p, f->err, sizeof(f->err));
}

static int syn(struct fx *f, uint32_t dst, uint16_t port)
{
    uint8_t fr[128];
    return out(f, fr, tcp_frame(fr, dst, 40000, port, 1000, 0, 0x02, 0));
}

static void dns_in(struct fx *f, const struct msg *m)
{
    uint8_t fr[1600];
    ingress(f, fr, udp_frame(fr, DNS, GUEST, 53, 33333, m->b, m->n));
}

static uint64_t learned(struct fx *f)
{
    struct netfilter_stats st;
    netfilter_stats(f->nf, &st);
    return st.names_learned;
}

/* Ethernet + IPv4 header of a reply: addressed to the guest, right checksum. */
static const uint8_t *check_reply_ip(struct fx *f, uint8_t proto, uint32_t src)
{
    assert_true(f->rlen >= 34);
    assert_memory_equal(f->reply, guest_mac, 6);
    assert_memory_equal(f->reply + 6, gw_mac, 6);
    assert_int_equal(get16(f->reply + 12), 0x0800);
    const uint8_t *ip = f->reply + 14;
    assert_int_equal(ip[0], 0x45);
    assert_int_equal(get16(ip + 2), f->rlen - 14);
    assert_int_equal(get16(ip + 6) & 0x3fff, 0); /* not a fragment */
    assert_true(ip[8] > 0);
    assert_int_equal(ip[9], proto);
    assert_int_equal(get32(ip + 12), src);
    assert_int_equal(get32(ip + 16), GUEST);
    assert_int_equal(sum(ip, 20, 0), 0xffff);
    return ip;
}

/* ---- parsing ---- */

static void test_entries_accepted(void **state)
{
    struct fx *f = *state;
    char label63[64], long_name[260];
    memset(label63, 'a', 63);
    label63[63] = 0;
    /* 253 characters: 63 + 1 + 63 + 1 + 63 + 1 + 61. */
    snprintf(long_name, sizeof(long_name), "%s.%s.%s.%.61s", label63, label63, label63, label63);
    assert_int_equal(strlen(long_name), 253);
    const char *const ok[] = {"10.1.2.3",
                              "10.0.0.0/8",
                              "0.0.0.0/0",
                              "255.255.255.255/32",
                              "example.com",
                              "*.example.com",
                              "EXAMPLE.Com.",
                              "a-b.c0",
                              "localhost",
                              "1.2.3.4:80",
                              "1.2.3.4:1-65535",
                              "x.com:443",
                              "*.x.com:8000-8080",
                              "0.0.0.0/0:22",
                              label63,
                              long_name,
                              NULL};
    assert_int_equal(policy(f, 1, ok, ok), 0);
    assert_int_equal(policy(f, 0, NULL, ok), 0);
}

static void expect_bad(struct fx *f, const char *entry, const char *why)
{
    const char *const list[] = {"10.0.0.1", entry, NULL};
    assert_int_equal(policy(f, 1, list, NULL), SBX_EINVAL);
    char want[512];
    /* Long entries are cut at 80 characters in messages. */
    snprintf(want, sizeof(want), "allow_out entry \"%.80s%s\"", entry,
             strlen(entry) > 80 ? "..." : "");
    if (!strstr(f->err, want) || !strstr(f->err, why)) {
        print_error("entry \"%s\": got \"%s\", want \"%s\" and \"%s\"\n", entry, f->err, want, why);
        fail();
    }
    assert_int_equal(policy(f, 1, NULL, list), SBX_EINVAL);
    assert_non_null(strstr(f->err, "deny_out entry"));
}

static void test_entries_rejected(void **state)
{
    struct fx *f = *state;
    expect_bad(f, "", "empty entry");
    expect_bad(f, "10.0.0.0/33", "prefix length must be 0..32");
    expect_bad(f, "10.0.0.0/", "prefix length");
    expect_bad(f, "10.0.0.0/-1", "prefix length");
    expect_bad(f, "10.0.0.0/008", "prefix length");
    expect_bad(f, "10.0.0/8", "not a valid IPv4 address");
    expect_bad(f, "256.1.1.1", "not a valid IPv4 address");
    expect_bad(f, "1.2.3.4.5", "not a valid IPv4 address");
    expect_bad(f, "1.2.3.", "not a valid IPv4 address");
    expect_bad(f, "1234.1.1.1", "not a valid IPv4 address");
    expect_bad(f, "01.2.3.4", "leading zero");
    expect_bad(f, "1.2.3.4:0", "port out of range");
    expect_bad(f, "1.2.3.4:65536", "port out of range");
    expect_bad(f, "1.2.3.4:99999999999999999999", "port out of range");
    expect_bad(f, "1.2.3.4:", "bad port");
    expect_bad(f, "1.2.3.4:80-", "bad port");
    expect_bad(f, "1.2.3.4:-80", "bad port");
    expect_bad(f, "1.2.3.4:8a", "bad port");
    expect_bad(f, "1.2.3.4:1-2-3", "bad port");
    expect_bad(f, "1.2.3.4:90-80", "LOW greater than HIGH");
    expect_bad(f, ":80", "missing address");
    expect_bad(f, "ex_ample.com", "invalid character");
    expect_bad(f, "a b.com", "invalid character");
    expect_bad(f, "a..b", "empty label");
    expect_bad(f, ".a.b", "empty label");
    expect_bad(f, "-a.com", "starts or ends with '-'");
    expect_bad(f, "a-.com", "starts or ends with '-'");
    expect_bad(f, "*", "'*' is only allowed");
    expect_bad(f, "*.", "empty domain name");
    expect_bad(f, "foo.*.com", "'*' is only allowed");
    expect_bad(f, "*.*.com", "'*' is only allowed");
    expect_bad(f, "*example.com", "'*' is only allowed");
    expect_bad(f, "::1", "IPv6");
    expect_bad(f, "fe80::1:80", "IPv6");
    expect_bad(f, "[fe80]:80", "IPv6");
    char lab[80], name[300];
    memset(lab, 'b', 64);
    lab[64] = 0;
    expect_bad(f, lab, "longer than 63");
    memset(name, 'c', 254);
    for (int i = 50; i < 254; i += 50)
        name[i] = '.';
    name[254] = 0;
    expect_bad(f, name, "longer than 253");

    /* The exact message. */
    const char *const one[] = {"10.0.0.0/33", NULL};
    assert_int_equal(policy(f, 1, NULL, one), SBX_EINVAL);
    assert_string_equal(f->err, "deny_out entry \"10.0.0.0/33\": prefix length must be 0..32");
    /* Non-printable bytes are not copied into the message. */
    const char *const ctl[] = {"a\x01\x7f.com", NULL};
    assert_int_equal(policy(f, 1, ctl, NULL), SBX_EINVAL);
    assert_non_null(strstr(f->err, "\"a??.com\""));
}

static void test_list_caps(void **state)
{
    struct fx *f = *state;
    const char **l = calloc(1026, sizeof(*l));
    for (int i = 0; i < 1025; i++)
        l[i] = "10.0.0.1";
    l[1024] = NULL; /* exactly 1024 entries: fine */
    assert_int_equal(policy(f, 1, l, l), 0);
    l[1024] = "10.0.0.1";
    assert_int_equal(policy(f, 1, l, NULL), SBX_EINVAL);
    assert_string_equal(f->err, "allow_out has more than 1024 entries");
    assert_int_equal(policy(f, 1, NULL, l), SBX_EINVAL);
    assert_string_equal(f->err, "deny_out has more than 1024 entries");
    free(l);
}

static void test_hosts_errors(void **state)
{
    (void)state;
    struct netfilter_addrs a = {.guest = GUEST, .gateway = GW, .dns = DNS};
    struct netfilter *nf = (struct netfilter *)&a; /* must be reset to NULL on failure */
    char err[256];
    struct {
        const char *entry, *why;
    } bad[] = {
        {"noequal", "expected NAME=IPV4"},   {"bad_name=1.2.3.4", "invalid character"},
        {"a.com=1.2.3", "not a valid IPv4"}, {"a.com=1.2.3.4/8", "not a valid IPv4"},
        {"=1.2.3.4", "empty domain name"},   {"*.a.com=1.2.3.4", "'*' is only allowed"},
        {"a.com=", "not a valid IPv4"},      {"a.com=1.2.3.4:80", "not a valid IPv4"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *const hosts[] = {"ok.test=1.2.3.4", bad[i].entry, NULL};
        assert_int_equal(netfilter_new(&nf, &a, hosts, err, sizeof(err)), SBX_EINVAL);
        assert_null(nf);
        char want[128];
        snprintf(want, sizeof(want), "hosts entry \"%s\": ", bad[i].entry);
        assert_non_null(strstr(err, want));
        assert_non_null(strstr(err, bad[i].why));
    }
    const char **many = calloc(258, sizeof(*many));
    for (int i = 0; i < 257; i++)
        many[i] = "x.test=1.1.1.1";
    assert_int_equal(netfilter_new(&nf, &a, many, err, sizeof(err)), SBX_EINVAL);
    assert_string_equal(err, "hosts has more than 256 entries");
    many[256] = NULL;
    assert_int_equal(netfilter_new(&nf, &a, many, err, sizeof(err)), 0);
    netfilter_free(nf);
    free(many);
    assert_int_equal(netfilter_new(&nf, &a, NULL, err, sizeof(err)), 0);
    netfilter_free(nf);
    netfilter_free(NULL);
}

/* ---- layer 2 and malformed IPv4 ---- */

static void test_l2(void **state)
{
    struct fx *f = *state;
    uint8_t fr[128] = {0};
    size_t n = eth(fr, (const uint8_t *)"\xff\xff\xff\xff\xff\xff", 0x0806);
    memset(fr + n, 0, 28);
    assert_int_equal(out(f, fr, n + 28), PASS);
    assert_int_equal(policy(f, 0, NULL, NULL), 0);
    assert_int_equal(out(f, fr, n + 28), PASS); /* ARP passes even under deny-all */
    assert_int_equal(policy(f, 1, NULL, NULL), 0);

    n = eth(fr, gw_mac, 0x86dd); /* IPv6 */
    assert_int_equal(out(f, fr, n + 40), DROP);
    /* An 802.1Q-tagged IPv4 frame. */
    size_t m = tcp_frame(fr + 4, IP4(1, 1, 1, 1), 1, 80, 0, 0, 0x02, 0);
    eth(fr, gw_mac, 0x8100);
    put16(fr + 14, 5);
    put16(fr + 16, 0x0800); /* the IPv4 packet is already at fr + 18 */
    assert_int_equal(out(f, fr, m + 4), DROP);
    assert_int_equal(out(f, fr, 13), DROP);
    assert_int_equal(out(f, fr, 0), DROP);

    struct netfilter_stats st;
    netfilter_stats(f->nf, &st);
    assert_int_equal(st.passed, 2);
    assert_int_equal(st.dropped, 4);
    assert_int_equal(st.rejected, 0);
}

static void test_malformed_ipv4(void **state)
{
    struct fx *f = *state;
    uint8_t fr[256];
    size_t n = tcp_frame(fr, IP4(1, 1, 1, 1), 1, 80, 0, 0, 0x02, 0);
    assert_int_equal(out(f, fr, n), PASS);
    /* Ethernet padding after the IP packet is fine. */
    memset(fr + n, 0, 20);
    assert_int_equal(out(f, fr, n + 20), PASS);

    uint8_t g[256];
#define MUTATE(expr)                                                                               \
    do {                                                                                           \
        memcpy(g, fr, n);                                                                          \
        expr;                                                                                      \
        assert_int_equal(out(f, g, n), DROP);                                                      \
    } while (0)
    MUTATE(g[14] = 0x65);                   /* version 6 in an IPv4 ethertype */
    MUTATE(g[14] = 0x44);                   /* IHL 4 */
    MUTATE(g[14] = 0x4f);                   /* IHL 15: the header would be longer than the packet */
    MUTATE(put16(g + 16, 100));             /* total length beyond the frame */
    MUTATE(put16(g + 16, 19));              /* total length shorter than the header */
    MUTATE(put16(g + 16, 30));              /* TCP header cut short */
    MUTATE(g[14 + 20 + 12] = 0xf0);         /* TCP data offset beyond the segment */
    MUTATE(g[14 + 20 + 12] = 0x40);         /* TCP data offset < 5 */
    MUTATE(g[23] = 47);                     /* GRE: not for the NAT */
    MUTATE(g[23] = 17; put16(g + 38, 4));   /* UDP length < 8 */
    MUTATE(g[23] = 17; put16(g + 38, 200)); /* UDP length beyond the packet */
#undef MUTATE
    assert_int_equal(out(f, fr, 14 + 19), DROP);
    /* ICMP shorter than its header. */
    uint8_t c[4] = {8, 0, 0, 0};
    assert_int_equal(out(f, g, ip_frame(g, 1, GUEST, IP4(1, 1, 1, 1), c, 4, 0)), DROP);
}

/* ---- verdicts and replies ---- */

static void test_default_passes(void **state)
{
    struct fx *f = *state;
    uint8_t fr[256];
    assert_int_equal(syn(f, IP4(93, 184, 216, 34), 443), PASS);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, IP4(8, 8, 8, 8), 1, 123, fr, 10)), PASS);
    assert_int_equal(out(f, fr, icmp_frame(fr, IP4(8, 8, 8, 8), 8)), PASS);
    /* allow_internet with empty lists, and no policy at all, pass too. */
    assert_int_equal(policy(f, 1, NULL, NULL), 0);
    assert_int_equal(syn(f, GW, 22), PASS);
    assert_int_equal(netfilter_set_policy(f->nf, NULL, f->err, sizeof(f->err)), 0);
    assert_int_equal(syn(f, GW, 22), PASS);
}

static void test_tcp_rst(void **state)
{
    struct fx *f = *state;
    uint8_t fr[256];
    assert_int_equal(policy(f, 0, NULL, NULL), 0);

    /* A SYN: RST|ACK, seq 0, ack = their seq + 1. */
    assert_int_equal(out(f, fr, tcp_frame(fr, GW, 40001, 8080, 0xfffffffe, 0, 0x02, 0)), REPLY);
    assert_int_equal(f->rlen, 54);
    const uint8_t *ip = check_reply_ip(f, 6, GW);
    const uint8_t *t = ip + 20;
    assert_int_equal(get16(t), 8080);
    assert_int_equal(get16(t + 2), 40001);
    assert_int_equal(get32(t + 4), 0);
    assert_int_equal(get32(t + 8), 0xffffffff);
    assert_int_equal(t[12] >> 4, 5);
    assert_int_equal(t[13], 0x14);
    assert_int_equal(pseudo_sum(ip, t, 20), 0xffff);

    /* A segment with ACK: RST with seq = their ack, no ACK. */
    assert_int_equal(out(f, fr, tcp_frame(fr, IP4(1, 2, 3, 4), 5, 443, 77, 0xabcdef01, 0x18, 10)),
                     REPLY);
    ip = check_reply_ip(f, 6, IP4(1, 2, 3, 4));
    t = ip + 20;
    assert_int_equal(get16(t), 443);
    assert_int_equal(get16(t + 2), 5);
    assert_int_equal(get32(t + 4), 0xabcdef01);
    assert_int_equal(get32(t + 8), 0);
    assert_int_equal(t[13], 0x04);
    assert_int_equal(pseudo_sum(ip, t, 20), 0xffff);

    /* SYN|FIN with data, no ACK: ack = seq + data + SYN + FIN. */
    assert_int_equal(out(f, fr, tcp_frame(fr, GW, 6, 7, 100, 0, 0x03, 5)), REPLY);
    t = check_reply_ip(f, 6, GW) + 20;
    assert_int_equal(get32(t + 8), 107);
    assert_int_equal(t[13], 0x14);

    /* A RST is never answered. */
    assert_int_equal(out(f, fr, tcp_frame(fr, GW, 6, 7, 100, 5, 0x14, 0)), DROP);
    assert_int_equal(out(f, fr, tcp_frame(fr, GW, 6, 7, 100, 0, 0x04, 0)), DROP);

    /* A frame sent to a broadcast MAC: the reply comes from the gateway's MAC. */
    size_t n = tcp_frame(fr, GW, 1, 2, 3, 0, 0x02, 0);
    memset(fr, 0xff, 6);
    assert_int_equal(out(f, fr, n), REPLY);
    check_reply_ip(f, 6, GW);

    struct netfilter_stats st;
    netfilter_stats(f->nf, &st);
    assert_int_equal(st.rejected, 6);
    assert_int_equal(st.passed + st.dropped, 0);
}

/* An ICMP "administratively prohibited" about the frame fr[0..n), quoting it. */
static void check_prohibited(struct fx *f, const uint8_t *fr, size_t quoted)
{
    const uint8_t *ip = check_reply_ip(f, 1, GW);
    const uint8_t *c = ip + 20;
    assert_int_equal(f->rlen, 14 + 20 + 8 + quoted);
    assert_int_equal(c[0], 3);
    assert_int_equal(c[1], 13);
    assert_int_equal(get32(c + 4), 0);
    assert_memory_equal(c + 8, fr + 14, quoted);
    assert_int_equal(sum(c, 8 + quoted, 0), 0xffff);
}

static void test_icmp_prohibited(void **state)
{
    struct fx *f = *state;
    uint8_t fr[256], data[40] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    assert_int_equal(policy(f, 0, NULL, NULL), 0);

    size_t n = udp_frame(fr, GUEST, IP4(8, 8, 4, 4), 5000, 123, data, sizeof(data));
    assert_int_equal(out(f, fr, n), REPLY);
    check_prohibited(f, fr, 28);

    n = icmp_frame(fr, IP4(8, 8, 4, 4), 8);
    assert_int_equal(out(f, fr, n), REPLY);
    check_prohibited(f, fr, 28);

    /* IP options are quoted too. */
    uint8_t u[12] = {0x13, 0x88, 0, 123, 0, 12, 0, 0, 'a', 'b', 'c', 'd'};
    n = ip_frame_x(fr, 17, GUEST, IP4(8, 8, 4, 4), u, sizeof(u), 0, 7);
    assert_int_equal(out(f, fr, n), REPLY);
    check_prohibited(f, fr, 28 + 8);

    /* A UDP datagram with an empty payload: header + its 8 bytes. */
    n = udp_frame(fr, GUEST, IP4(8, 8, 4, 4), 5000, 9, data, 0);
    assert_int_equal(out(f, fr, n), REPLY);
    check_prohibited(f, fr, 28);

    /* No error about an ICMP error, a broadcast, a multicast, or from 0.0.0.0. */
    assert_int_equal(out(f, fr, icmp_frame(fr, IP4(8, 8, 4, 4), 3)), DROP);
    assert_int_equal(out(f, fr, icmp_frame(fr, IP4(8, 8, 4, 4), 11)), DROP);
    assert_int_equal(out(f, fr, udp_frame(fr, 0, 0xffffffff, 68, 67, data, 10)), DROP);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, IP4(224, 0, 0, 251), 5353, 5353, data, 10)),
                     DROP);
    assert_int_equal(out(f, fr, udp_frame(fr, 0, IP4(8, 8, 8, 8), 1, 2, data, 10)), DROP);

    struct netfilter_stats st;
    netfilter_stats(f->nf, &st);
    assert_int_equal(st.rejected, 9);
    assert_int_equal(st.dropped, 0);
}

static void test_dns_always_passes(void **state)
{
    struct fx *f = *state;
    uint8_t fr[256], q[20] = {0, 1, 1, 0, 0, 1};
    assert_int_equal(policy(f, 0, NULL, NULL), 0);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, DNS, 4444, 53, q, sizeof(q))), PASS);
    assert_int_equal(syn(f, DNS, 53), PASS);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, DNS, 4444, 5353, q, sizeof(q))), REPLY);
    assert_int_equal(syn(f, DNS, 80), REPLY);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, IP4(8, 8, 8, 8), 4444, 53, q, 20)), REPLY);
    assert_int_equal(out(f, fr, icmp_frame(fr, DNS, 8)), REPLY);
}

static void test_allow_wins(void **state)
{
    struct fx *f = *state;
    const char *const deny[] = {"10.0.0.0/8", NULL};
    const char *const allow[] = {"10.1.2.3", "10.9.0.0/16:443", "10.8.0.0/16:1000-2000", NULL};
    assert_int_equal(policy(f, 1, allow, deny), 0);
    assert_int_equal(syn(f, IP4(10, 1, 2, 3), 22), PASS);
    assert_int_equal(syn(f, IP4(10, 1, 2, 4), 22), REPLY);
    assert_int_equal(syn(f, IP4(10, 9, 200, 1), 443), PASS);
    assert_int_equal(syn(f, IP4(10, 9, 200, 1), 444), REPLY);
    assert_int_equal(syn(f, IP4(10, 8, 0, 1), 999), REPLY);
    assert_int_equal(syn(f, IP4(10, 8, 0, 1), 1000), PASS);
    assert_int_equal(syn(f, IP4(10, 8, 0, 1), 2000), PASS);
    assert_int_equal(syn(f, IP4(10, 8, 0, 1), 2001), REPLY);
    assert_int_equal(syn(f, IP4(11, 0, 0, 1), 22), PASS); /* not denied at all */

    /* An allow entry with ports does not cover ICMP; a deny entry with ports does not hit it. */
    uint8_t fr[256];
    assert_int_equal(out(f, fr, icmp_frame(fr, IP4(10, 9, 1, 1), 8)), REPLY);
    assert_int_equal(out(f, fr, icmp_frame(fr, IP4(10, 1, 2, 3), 8)), PASS);
    const char *const deny22[] = {"0.0.0.0/0:22", NULL};
    assert_int_equal(policy(f, 1, NULL, deny22), 0);
    assert_int_equal(out(f, fr, icmp_frame(fr, IP4(10, 9, 1, 1), 8)), PASS);
    assert_int_equal(syn(f, IP4(10, 9, 1, 1), 22), REPLY);
    assert_int_equal(syn(f, IP4(10, 9, 1, 1), 23), PASS);

    /* allow_internet = 0 with an allow list: just the allowed port of one host. */
    const char *const one[] = {"10.0.2.2:8080", NULL};
    assert_int_equal(policy(f, 0, one, NULL), 0);
    assert_int_equal(syn(f, GW, 8080), PASS);
    assert_int_equal(syn(f, GW, 8081), REPLY);
    assert_int_equal(syn(f, IP4(1, 1, 1, 1), 8080), REPLY);

    /* Host bits of a CIDR are masked off. */
    const char *const masked[] = {"10.1.2.3/8", NULL};
    assert_int_equal(policy(f, 0, masked, NULL), 0);
    assert_int_equal(syn(f, IP4(10, 200, 1, 1), 1), PASS);
    assert_int_equal(syn(f, IP4(11, 0, 0, 1), 1), REPLY);
}

static void test_policy_replacement(void **state)
{
    struct fx *f = *state;
    assert_int_equal(syn(f, GW, 80), PASS);
    const char *const deny[] = {"10.0.2.2", NULL};
    assert_int_equal(policy(f, 1, NULL, deny), 0);
    assert_int_equal(syn(f, GW, 80), REPLY);
    /* A bad policy is refused as a whole: the old one stays. */
    const char *const bad[] = {"10.0.2.2", "nope..", NULL};
    assert_int_equal(policy(f, 1, bad, NULL), SBX_EINVAL);
    assert_non_null(strstr(f->err, "\"nope..\""));
    assert_int_equal(syn(f, GW, 80), REPLY);
    assert_int_equal(policy(f, 1, NULL, NULL), 0);
    assert_int_equal(syn(f, GW, 80), PASS);
    assert_int_equal(policy(f, 0, NULL, NULL), 0);
    assert_int_equal(syn(f, GW, 80), REPLY);
}

/* ---- DNS: learning names ---- */

static void test_domain_learning(void **state)
{
    struct fx *f = *state;
    const uint32_t site = IP4(93, 184, 216, 34), other = IP4(93, 184, 216, 35);
    const char *const allow[] = {"example.com", NULL};
    assert_int_equal(policy(f, 0, allow, NULL), 0);
    assert_int_equal(syn(f, site, 443), REPLY);

    struct msg m;
    simple_answer(&m, "example.com", &site, 1);
    /* Answers that teach nothing: from another server or port, a query, an error. */
    uint8_t fr[1600];
    ingress(f, fr, udp_frame(fr, IP4(8, 8, 8, 8), GUEST, 53, 3333, m.b, m.n));
    ingress(f, fr, udp_frame(fr, DNS, GUEST, 5353, 3333, m.b, m.n));
    put16(m.b + 2, 0x0100);
    dns_in(f, &m);
    put16(m.b + 2, 0x8183); /* NXDOMAIN */
    dns_in(f, &m);
    assert_int_equal(learned(f), 0);
    assert_int_equal(syn(f, site, 443), REPLY);

    put16(m.b + 2, 0x8180);
    dns_in(f, &m);
    assert_int_equal(learned(f), 1);
    assert_int_equal(syn(f, site, 443), PASS);
    assert_int_equal(syn(f, site, 22), PASS);
    assert_int_equal(syn(f, other, 443), REPLY);
    dns_in(f, &m); /* the same pair again: not new */
    assert_int_equal(learned(f), 1);

    /* The learned names survive a policy change; the wildcard skips the apex. */
    const char *const wild[] = {"*.example.com:443", NULL};
    assert_int_equal(policy(f, 0, wild, NULL), 0);
    assert_int_equal(syn(f, site, 443), REPLY);
    simple_answer(&m, "WWW.Example.COM", &other, 1);
    dns_in(f, &m);
    assert_int_equal(syn(f, other, 443), PASS);
    assert_int_equal(syn(f, other, 80), REPLY);
    const uint32_t deep = IP4(93, 184, 216, 36), near = IP4(93, 184, 216, 37);
    simple_answer(&m, "a.b.example.com", &deep, 1);
    dns_in(f, &m);
    simple_answer(&m, "notexample.com", &near, 1);
    dns_in(f, &m);
    assert_int_equal(syn(f, deep, 443), PASS);
    assert_int_equal(syn(f, near, 443), REPLY);

    /* Several A records: every address. 0.0.0.0 (a blocking resolver's answer) is skipped. */
    const uint32_t many[] = {IP4(5, 5, 5, 1), IP4(5, 5, 5, 2), 0};
    simple_answer(&m, "x.example.com", many, 3);
    uint64_t before = learned(f);
    dns_in(f, &m);
    assert_int_equal(learned(f), before + 2);
    assert_int_equal(syn(f, IP4(5, 5, 5, 1), 443), PASS);
    assert_int_equal(syn(f, IP4(5, 5, 5, 2), 443), PASS);
}

static void test_cname_chain(void **state)
{
    struct fx *f = *state;
    const uint32_t edge = IP4(198, 51, 100, 7), evil = IP4(203, 0, 113, 66);
    struct msg m;
    /* www.shop.test CNAME edge.cdn.test; edge.cdn.test A edge; evil.test A evil. */
    mhdr(&m, 9, 0x8180, 1, 3, 0, 0);
    mname(&m, "www.shop.test");
    m16(&m, 1);
    m16(&m, 1);
    mptr(&m, 12);
    m16(&m, 5);
    m16(&m, 1);
    m32(&m, 60);
    size_t rdlen_at = m.n;
    m16(&m, 0);
    size_t target = mlabels(&m, "edge.cdn");
    mptr(&m, 12 + 1 + 3 + 1 + 4); /* "test" of the question */
    put16(m.b + rdlen_at, (uint16_t)(m.n - rdlen_at - 2));
    mptr(&m, target);
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 60);
    m16(&m, 4);
    m32(&m, edge);
    mname(&m, "evil.test");
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 60);
    m16(&m, 4);
    m32(&m, evil);
    dns_in(f, &m);
    assert_int_equal(learned(f), 2); /* edge: www.shop.test and edge.cdn.test */

    const char *const a1[] = {"edge.cdn.test", NULL}, *const a2[] = {"www.shop.test", NULL},
                      *const a3[] = {"evil.test", "*.shop.test", NULL};
    assert_int_equal(policy(f, 0, a1, NULL), 0);
    assert_int_equal(syn(f, edge, 443), PASS);
    assert_int_equal(syn(f, evil, 443), REPLY);
    assert_int_equal(policy(f, 0, a2, NULL), 0);
    assert_int_equal(syn(f, edge, 443), PASS);
    assert_int_equal(syn(f, evil, 443), REPLY);
    /* evil.test is no name of the chain: its A record taught nothing. */
    assert_int_equal(policy(f, 0, a3, NULL), 0);
    assert_int_equal(syn(f, evil, 443), REPLY);
    assert_int_equal(syn(f, edge, 443), PASS);

    /* The A record before the CNAMEs, two levels deep. */
    const uint32_t far = IP4(198, 51, 100, 9);
    mhdr(&m, 10, 0x8180, 1, 3, 0, 0);
    mname(&m, "q.test");
    m16(&m, 1);
    m16(&m, 1);
    mname(&m, "c2.test");
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 60);
    m16(&m, 4);
    m32(&m, far);
    const char *rr[][2] = {{"q.test", "c1.test"}, {"c1.test", "c2.test"}};
    for (int i = 0; i < 2; i++) {
        mname(&m, rr[i][0]);
        m16(&m, 5);
        m16(&m, 1);
        m32(&m, 60);
        m16(&m, (uint16_t)(strlen(rr[i][1]) + 2));
        mname(&m, rr[i][1]);
    }
    dns_in(f, &m);
    for (int i = 0; i < 3; i++) {
        const char *names[] = {"q.test", "c1.test", "c2.test"};
        const char *const al[] = {names[i], NULL};
        assert_int_equal(policy(f, 0, al, NULL), 0);
        assert_int_equal(syn(f, far, 443), PASS);
    }
}

static void test_domain_deny(void **state)
{
    struct fx *f = *state;
    const uint32_t bad = IP4(192, 0, 2, 99);
    const char *const deny[] = {"*.bad.test:443", NULL};
    assert_int_equal(policy(f, 1, NULL, deny), 0);
    assert_int_equal(syn(f, bad, 443), PASS);
    struct msg m;
    simple_answer(&m, "x.bad.test", &bad, 1);
    dns_in(f, &m);
    assert_int_equal(syn(f, bad, 443), REPLY);
    assert_int_equal(syn(f, bad, 80), PASS);
    /* An allowed name of the same address wins. */
    const char *const allow[] = {"good.test", NULL};
    assert_int_equal(policy(f, 1, allow, deny), 0);
    simple_answer(&m, "good.test", &bad, 1);
    dns_in(f, &m);
    assert_int_equal(syn(f, bad, 443), PASS);
}

/* ---- DNS: `hosts` answered here ---- */

/* A query frame for `name` / `type`; *qlen receives the DNS message length. */
static size_t query(uint8_t *fr, struct msg *m, const char *name, uint16_t type, uint16_t class,
                    uint16_t ar)
{
    mhdr(m, 0x1234, 0x0100, 1, 0, 0, ar);
    mname(m, name);
    m16(m, type);
    m16(m, class);
    if (ar) { /* an EDNS OPT record */
        m->b[m->n++] = 0;
        m16(m, 41);
        m16(m, 1232);
        m32(m, 0);
        m16(m, 0);
    }
    return udp_frame(fr, GUEST, DNS, 45678, 53, m->b, m->n);
}

/* Checks the headers of a DNS answer and returns the DNS message. */
static const uint8_t *check_dns_reply(struct fx *f, size_t *dlen)
{
    const uint8_t *ip = check_reply_ip(f, 17, DNS);
    const uint8_t *u = ip + 20;
    assert_int_equal(get16(u), 53);
    assert_int_equal(get16(u + 2), 45678);
    assert_int_equal(get16(u + 4), f->rlen - 34);
    assert_int_not_equal(get16(u + 6), 0);
    assert_int_equal(pseudo_sum(ip, u, get16(u + 4)), 0xffff);
    *dlen = get16(u + 4) - 8;
    return u + 8;
}

static void test_hosts_answered(void **state)
{
    struct fx *f = *state;
    uint8_t fr[600];
    struct msg m;
    size_t dlen;

    assert_int_equal(out(f, fr, query(fr, &m, "DB.Internal", 1, 1, 1)), REPLY);
    const uint8_t *d = check_dns_reply(f, &dlen);
    size_t qlen = 13 + 4; /* "\2DB\10Internal\0" + type + class */
    assert_int_equal(dlen, 12 + qlen + 16);
    assert_int_equal(get16(d), 0x1234);
    assert_int_equal(get16(d + 2), 0x8580); /* QR AA RD RA, NOERROR */
    assert_int_equal(get16(d + 4), 1);
    assert_int_equal(get16(d + 6), 1);
    assert_int_equal(get16(d + 8), 0);
    assert_int_equal(get16(d + 10), 0);
    assert_memory_equal(d + 12, m.b + 12, qlen); /* the question as asked, letter case too */
    const uint8_t *a = d + 12 + qlen;
    assert_int_equal(get16(a), 0xc00c);
    assert_int_equal(get16(a + 2), 1);
    assert_int_equal(get16(a + 4), 1);
    assert_int_equal(get32(a + 6), 60);
    assert_int_equal(get16(a + 10), 4);
    assert_int_equal(get32(a + 12), GW);

    /* ANY: two addresses (the duplicate hosts entry counts once); RD clear stays clear. */
    size_t n = query(fr, &m, "multi.test", 255, 1, 0);
    put16(fr + 14 + 28 + 2, 0); /* DNS flags */
    assert_int_equal(out(f, fr, n), REPLY);
    d = check_dns_reply(f, &dlen);
    assert_int_equal(get16(d + 2), 0x8480);
    assert_int_equal(get16(d + 6), 2);
    a = d + 12 + 12 + 4;
    assert_int_equal(get32(a + 12), IP4(192, 0, 2, 1));
    assert_int_equal(get32(a + 16 + 12), IP4(192, 0, 2, 2));

    /* AAAA: NOERROR without answers. */
    assert_int_equal(out(f, fr, query(fr, &m, "db.internal", 28, 1, 0)), REPLY);
    d = check_dns_reply(f, &dlen);
    assert_int_equal(get16(d + 2) & 0x000f, 0);
    assert_int_equal(get16(d + 6), 0);
    assert_int_equal(dlen, 12 + 13 + 4);
    assert_int_equal(get16(d + 12 + 13), 28);

    /* Not ours: other names, classes, responses, odd counts, malformed questions. */
    assert_int_equal(out(f, fr, query(fr, &m, "db.internal.evil", 1, 1, 0)), PASS);
    assert_int_equal(out(f, fr, query(fr, &m, "internal", 1, 1, 0)), PASS);
    assert_int_equal(out(f, fr, query(fr, &m, "db.internal", 1, 3, 0)), PASS);
    n = query(fr, &m, "db.internal", 1, 1, 0);
    fr[14 + 28 + 2] |= 0x80; /* QR */
    assert_int_equal(out(f, fr, n), PASS);
    n = query(fr, &m, "db.internal", 1, 1, 0);
    fr[14 + 28 + 5] = 2; /* QDCOUNT 2 */
    assert_int_equal(out(f, fr, n), PASS);
    n = query(fr, &m, "db.internal", 1, 1, 0);
    fr[14 + 28 + 2] |= 0x28; /* opcode 5 (UPDATE) */
    assert_int_equal(out(f, fr, n), PASS);
    n = query(fr, &m, "db.internal", 1, 1, 0);
    assert_int_equal(out(f, fr, n - 3), DROP); /* IP total length beyond the frame */
    mhdr(&m, 1, 0x0100, 1, 0, 0, 0);
    mptr(&m, 12); /* the question's name points at itself */
    m16(&m, 1);
    m16(&m, 1);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, DNS, 45678, 53, m.b, m.n)), PASS);
    assert_int_equal(out(f, fr, udp_frame(fr, GUEST, DNS, 45678, 53, m.b, 5)), PASS);

    struct netfilter_stats st;
    netfilter_stats(f->nf, &st);
    assert_int_equal(st.dns_answered, 3);
    assert_int_equal(st.names_learned, 0);

    /* Domain rules see `hosts` names without any query. */
    const char *const a1[] = {"db.internal", NULL}, *const a2[] = {"*.internal:5432", NULL};
    assert_int_equal(policy(f, 0, a1, NULL), 0);
    assert_int_equal(syn(f, GW, 5432), PASS);
    assert_int_equal(syn(f, IP4(192, 0, 2, 1), 5432), REPLY);
    assert_int_equal(policy(f, 0, a2, NULL), 0);
    assert_int_equal(syn(f, GW, 5432), PASS);
    assert_int_equal(syn(f, GW, 5433), REPLY);
    /* Queries are still answered under deny-all. */
    assert_int_equal(out(f, fr, query(fr, &m, "db.internal", 1, 1, 0)), REPLY);
}

/* ---- the table of learned names ---- */

static void learn_one(struct fx *f, const char *name, uint32_t addr)
{
    struct msg m;
    simple_answer(&m, name, &addr, 1);
    dns_in(f, &m);
}

static void test_eviction(void **state)
{
    struct fx *f = *state;
    const char *const allow[] = {"*.evict.test", NULL};
    assert_int_equal(policy(f, 0, allow, NULL), 0);
    char name[64];
    for (uint32_t i = 0; i < 4096 + 100; i++) {
        snprintf(name, sizeof(name), "n%u.evict.test", i);
        learn_one(f, name, IP4(20, 0, 0, 0) + i);
    }
    assert_int_equal(learned(f), 4196);
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal(syn(f, IP4(20, 0, 0, 0) + i, 80), REPLY);
    for (uint32_t i = 100; i < 4196; i += 7)
        assert_int_equal(syn(f, IP4(20, 0, 0, 0) + i, 80), PASS);
    assert_int_equal(syn(f, IP4(20, 0, 0, 0) + 4195, 80), PASS);

    /* A pair that lets traffic through is used, hence kept over older ones. */
    learn_one(f, "a.evict.test", IP4(21, 0, 0, 1));
    learn_one(f, "b.evict.test", IP4(21, 0, 0, 2));
    assert_int_equal(syn(f, IP4(21, 0, 0, 1), 80), PASS);
    for (uint32_t i = 0; i < 4095; i++) {
        snprintf(name, sizeof(name), "m%u.evict.test", i);
        learn_one(f, name, IP4(22, 0, 0, 0) + i);
    }
    assert_int_equal(syn(f, IP4(21, 0, 0, 1), 80), PASS);
    assert_int_equal(syn(f, IP4(21, 0, 0, 2), 80), REPLY);
}

static void test_names_per_address(void **state)
{
    struct fx *f = *state;
    const uint32_t cdn = IP4(198, 18, 0, 1);
    const char *const allow[] = {"k0.cap.test", NULL};
    assert_int_equal(policy(f, 0, allow, NULL), 0);
    char name[64];
    for (int i = 0; i < 32; i++) {
        snprintf(name, sizeof(name), "k%d.cap.test", i);
        learn_one(f, name, cdn);
    }
    assert_int_equal(syn(f, cdn, 80), PASS); /* k0 used: now the newest */
    learn_one(f, "k32.cap.test", cdn);       /* forgets k1, the oldest of this address */
    assert_int_equal(syn(f, cdn, 80), PASS);
    const char *const k1[] = {"k1.cap.test", NULL}, *const k2[] = {"k2.cap.test", NULL};
    assert_int_equal(policy(f, 0, k1, NULL), 0);
    assert_int_equal(syn(f, cdn, 80), REPLY);
    assert_int_equal(policy(f, 0, k2, NULL), 0);
    assert_int_equal(syn(f, cdn, 80), PASS);
    for (int i = 33; i < 100; i++) {
        snprintf(name, sizeof(name), "k%d.cap.test", i);
        learn_one(f, name, cdn);
    }
    assert_int_equal(syn(f, cdn, 80), REPLY); /* k2 is long gone */
    assert_int_equal(learned(f), 100);
}

/* ---- hostile DNS answers ---- */

static void test_hostile_dns(void **state)
{
    struct fx *f = *state;
    const uint32_t addr = IP4(192, 0, 2, 200);
    const char *const allow[] = {"h.test", NULL};
    assert_int_equal(policy(f, 0, allow, NULL), 0);
    struct msg m;
    uint8_t fr[1600];

    /* Owner name pointing at itself. */
    simple_answer(&m, "h.test", &addr, 1);
    size_t rr = 12 + 8 + 4;
    put16(m.b + rr, (uint16_t)(0xc000 | rr));
    dns_in(f, &m);
    /* Pointer forwards, to the answer's own data. */
    simple_answer(&m, "h.test", &addr, 1);
    put16(m.b + rr, (uint16_t)(0xc000 | (rr + 12)));
    dns_in(f, &m);
    /* Two pointers pointing at each other: the question is "\1h" + ptr to the answer. */
    mhdr(&m, 7, 0x8180, 1, 1, 0, 0);
    m.b[m.n++] = 1;
    m.b[m.n++] = 'h';
    mptr(&m, 12 + 2 + 2 + 4); /* forwards, to the owner below */
    m16(&m, 1);
    m16(&m, 1);
    mptr(&m, 12);
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 1);
    m16(&m, 4);
    m32(&m, addr);
    dns_in(f, &m);
    /* A huge answer count with one record, then a truncated record. */
    simple_answer(&m, "h.test", &addr, 1);
    put16(m.b + 6, 65535);
    dns_in(f, &m);
    simple_answer(&m, "h.test", &addr, 1);
    m.n -= 1;
    dns_in(f, &m);
    simple_answer(&m, "h.test", &addr, 1);
    m.n = rr + 2 + 5; /* cut inside the record's fixed fields */
    dns_in(f, &m);
    /* RDLENGTH beyond the message. */
    simple_answer(&m, "h.test", &addr, 1);
    put16(m.b + rr + 10, 400);
    dns_in(f, &m);
    /* Extended label type, label running past the end, a header cut short. */
    simple_answer(&m, "h.test", &addr, 1);
    m.b[12] = 0x41;
    dns_in(f, &m);
    simple_answer(&m, "h.test", &addr, 1);
    m.b[12] = 60;
    dns_in(f, &m);
    simple_answer(&m, "h.test", &addr, 1);
    m.n = 11;
    dns_in(f, &m);
    /* An owner name longer than 255 bytes on the wire, made of pointers to earlier labels
       (kept in a TXT record), followed by a good record: the whole answer is refused. */
    mhdr(&m, 7, 0x8180, 1, 3, 0, 0);
    mname(&m, "h.test");
    m16(&m, 1);
    m16(&m, 1);
    mptr(&m, 12);
    m16(&m, 16);
    m16(&m, 1);
    m32(&m, 1);
    size_t txt_len = m.n;
    m16(&m, 0);
    char l63[64];
    memset(l63, 'x', 63);
    l63[63] = 0;
    size_t prev = mname(&m, l63);
    for (int i = 0; i < 3; i++) {
        size_t at = m.n;
        mlabels(&m, l63);
        mptr(&m, prev);
        prev = at;
    }
    put16(m.b + txt_len, (uint16_t)(m.n - txt_len - 2));
    mlabels(&m, l63); /* 5 labels of 63: 321 bytes */
    mptr(&m, prev);
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 1);
    m16(&m, 4);
    m32(&m, addr);
    mptr(&m, 12);
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 1);
    m16(&m, 4);
    m32(&m, addr);
    dns_in(f, &m);
    /* A label containing a dot: "h.test" as one label is not the name h.test. */
    mhdr(&m, 7, 0x8180, 1, 1, 0, 0);
    m.b[m.n++] = 6;
    memcpy(m.b + m.n, "h.test", 6);
    m.n += 6;
    m.b[m.n++] = 0;
    m16(&m, 1);
    m16(&m, 1);
    mptr(&m, 12);
    m16(&m, 1);
    m16(&m, 1);
    m32(&m, 1);
    m16(&m, 4);
    m32(&m, addr);
    dns_in(f, &m);
    /* An A record with RDLENGTH 5 is no address. */
    simple_answer(&m, "h.test", &addr, 1);
    put16(m.b + rr + 10, 5);
    m.b[m.n++] = 0;
    dns_in(f, &m);
    /* Lying IP and UDP headers around a good answer. */
    simple_answer(&m, "h.test", &addr, 1);
    size_t n = udp_frame(fr, DNS, GUEST, 53, 3333, m.b, m.n);
    fr[14] = 0x4f;
    ingress(f, fr, n);
    n = udp_frame(fr, DNS, GUEST, 53, 3333, m.b, m.n);
    put16(fr + 14 + 20 + 4, (uint16_t)(m.n + 9));
    ingress(f, fr, n);
    n = udp_frame(fr, DNS, GUEST, 53, 3333, m.b, m.n);
    ingress(f, fr, n - 1);
    put16(fr + 14 + 6, 0x2000); /* a first fragment */
    ingress(f, fr, n);
    ingress(f, fr, 20);

    assert_int_equal(learned(f), 0);
    assert_int_equal(syn(f, addr, 443), REPLY);

    /* A CNAME whose target runs past its RDATA: the answer is malformed. */
    mhdr(&m, 7, 0x8180, 1, 2, 0, 0);
    mname(&m, "h.test");
    m16(&m, 1);
    m16(&m, 1);
    mptr(&m, 12);
    m16(&m, 5);
    m16(&m, 1);
    m32(&m, 1);
    m16(&m, 3);
    mname(&m, "abc.test");
    dns_in(f, &m);
    assert_int_equal(learned(f), 0);

    /* After all that, a good answer is still learned. */
    learn_one(f, "h.test", addr);
    assert_int_equal(learned(f), 1);
    assert_int_equal(syn(f, addr, 443), PASS);
}

/* Names of exactly 255 bytes on the wire (253 characters) are learned, longer ones not. */
static void test_name_length_limit(void **state)
{
    struct fx *f = *state;
    char name[300];
    memset(name, 'y', sizeof(name));
    name[63] = name[127] = name[191] = '.';
    name[253] = 0;
    const char *const allow[] = {name, NULL};
    assert_int_equal(policy(f, 0, allow, NULL), 0);
    learn_one(f, name, IP4(192, 0, 2, 1));
    assert_int_equal(learned(f), 1);
    assert_int_equal(syn(f, IP4(192, 0, 2, 1), 443), PASS);
    name[253] = 'y';
    name[254] = 0;
    learn_one(f, name, IP4(192, 0, 2, 2));
    assert_int_equal(learned(f), 1);
}

/* ---- fragments ---- */

static void test_fragments(void **state)
{
    struct fx *f = *state;
    const uint32_t ok = IP4(1, 2, 3, 4);
    const char *const allow[] = {"1.2.3.4:443", NULL};
    assert_int_equal(policy(f, 0, allow, NULL), 0);
    uint8_t fr[256], t[40] = {0};
    put16(t, 40000);
    put16(t + 2, 443);
    t[12] = 5 << 4;
    t[13] = 0x02;

    /* First fragments are judged by their ports. */
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, ok, t, 40, 0x2000)), PASS);
    put16(t + 2, 22);
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, ok, t, 40, 0x2000)), REPLY);
    /* ... and must hold the whole transport header. */
    put16(t + 2, 443);
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, ok, t, 16, 0x2000)), DROP);
    assert_int_equal(out(f, fr, ip_frame(fr, 17, GUEST, ok, t, 4, 0x2000)), DROP);

    /* Later fragments by their address only. */
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, ok, t, 40, 185)), PASS);
    assert_int_equal(out(f, fr, ip_frame(fr, 17, GUEST, ok, t, 8, 0x2000 | 185)), PASS);
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, IP4(5, 6, 7, 8), t, 40, 185)), DROP);
    assert_int_equal(out(f, fr, ip_frame(fr, 17, GUEST, DNS, t, 40, 185)), PASS);
    assert_int_equal(out(f, fr, ip_frame(fr, 47, GUEST, ok, t, 40, 185)), DROP);

    /* A deny entry with ports does not apply to them, one without ports does. */
    const char *const d1[] = {"1.2.3.4:22", NULL}, *const d2[] = {"1.2.3.4", NULL};
    assert_int_equal(policy(f, 1, NULL, d1), 0);
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, ok, t, 40, 185)), PASS);
    assert_int_equal(policy(f, 1, NULL, d2), 0);
    assert_int_equal(out(f, fr, ip_frame(fr, 6, GUEST, ok, t, 40, 185)), DROP);

    struct netfilter_stats st;
    netfilter_stats(f->nf, &st);
    assert_int_equal(st.passed, 5);
    assert_int_equal(st.rejected, 3);
    assert_int_equal(st.dropped, 3);
}

/* Without room for the length, a denied packet is refused silently. */
static void test_no_reply_buffer(void **state)
{
    struct fx *f = *state;
    uint8_t fr[128];
    assert_int_equal(policy(f, 0, NULL, NULL), 0);
    size_t n = tcp_frame(fr, GW, 1, 2, 3, 0, 0x02, 0);
    assert_int_equal(netfilter_egress(f->nf, fr, n, f->reply, NULL), NETFILTER_DROP);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_entries_accepted),
        T(test_entries_rejected),
        T(test_list_caps),
        T(test_hosts_errors),
        T(test_l2),
        T(test_malformed_ipv4),
        T(test_default_passes),
        T(test_tcp_rst),
        T(test_icmp_prohibited),
        T(test_dns_always_passes),
        T(test_allow_wins),
        T(test_policy_replacement),
        T(test_domain_learning),
        T(test_cname_chain),
        T(test_domain_deny),
        T(test_hosts_answered),
        T(test_eviction),
        T(test_names_per_address),
        T(test_hostile_dns),
        T(test_name_length_limit),
        T(test_fragments),
        T(test_no_reply_buffer),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
