// SPDX-License-Identifier: Apache-2.0
/* libFuzzer target: the egress filter on hostile guest frames, DNS answers and policy entries. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/filter.h"

/*
 * Input: byte 0 picks the starting policy; then records of [kind][len hi][len lo][len bytes]:
 * (kind & 63) % 6:
 *   0  a raw frame from the guest (egress)
 *   1  a raw frame to the guest (ingress)
 *   2  a DNS message wrapped in a valid frame from the DNS server (ingress)
 *   3  a DNS message wrapped in a valid query to the DNS server (egress)
 *   4  a valid TCP SYN (with kind bit 6: a UDP datagram) to the address and port in the first
 *      6 bytes: exercises matching against learned names
 *   5  a new policy: '\n'-separated entries, the allow list if kind bit 6 is set
 * Every record is copied into a buffer of its exact size, so any read past it is caught.
 */

#define GUEST 0x0a00020fu
#define GW    0x0a000202u
#define DNS   0x0a000203u

static const uint8_t guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static const uint8_t gw_mac[6] = {0x52, 0x55, 10, 0, 2, 2};

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

/* A frame with a valid Ethernet + IPv4 header around l4[0..n) (n < 65515), in a buffer of
   its exact size; *len receives the size. */
static uint8_t *ip_frame(uint8_t proto, uint32_t src, uint32_t dst, const uint8_t *l4, size_t n,
                         size_t *len)
{
    *len = 34 + n;
    uint8_t *f = malloc(*len);
    if (!f)
        abort();
    memcpy(f, src == GUEST ? gw_mac : guest_mac, 6);
    memcpy(f + 6, src == GUEST ? guest_mac : gw_mac, 6);
    put16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    put16(ip + 2, (uint16_t)(20 + n));
    ip[8] = 64;
    ip[9] = proto;
    put32(ip + 12, src);
    put32(ip + 16, dst);
    put16(ip + 10, (uint16_t)~sum(ip, 20, 0));
    memcpy(ip + 20, l4, n);
    return f;
}

static uint8_t *udp_frame(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
                          const uint8_t *d, size_t n, size_t *len)
{
    uint8_t *u = malloc(8 + n);
    if (!u)
        abort();
    put16(u, sport);
    put16(u + 2, dport);
    put16(u + 4, (uint16_t)(8 + n));
    put16(u + 6, 0);
    memcpy(u + 8, d, n);
    uint8_t *f = ip_frame(17, src, dst, u, 8 + n, len);
    free(u);
    return f;
}

/* A reply must be a well-formed frame to the guest with right checksums. */
static void check_reply(const uint8_t *r, size_t n)
{
    if (n < 34 || n > NETFILTER_REPLY_MAX || get16(r + 12) != 0x0800)
        abort();
    const uint8_t *ip = r + 14, *l4 = ip + 20;
    size_t l4len = n - 34;
    if (ip[0] != 0x45 || get16(ip + 2) != n - 14 || sum(ip, 20, 0) != 0xffff)
        abort();
    uint32_t pseudo =
        get16(ip + 12) + get16(ip + 14) + get16(ip + 16) + get16(ip + 18) + ip[9] + (uint32_t)l4len;
    switch (ip[9]) {
    case 6:
        if (l4len != 20 || !(l4[13] & 0x04) || sum(l4, 20, pseudo) != 0xffff)
            abort();
        break;
    case 17:
        if (get16(l4) != 53 || get16(l4 + 4) != l4len || sum(l4, l4len, pseudo) != 0xffff)
            abort();
        break;
    case 1:
        if (l4[0] != 3 || l4[1] != 13 || sum(l4, l4len, 0) != 0xffff)
            abort();
        break;
    default:
        abort();
    }
}

static unsigned long n_egress;

static void egress(struct netfilter *nf, uint8_t *f, size_t len)
{
    uint8_t reply[NETFILTER_REPLY_MAX];
    size_t rlen = 99999;
    enum netfilter_verdict v = netfilter_egress(nf, f, len, reply, &rlen);
    n_egress++;
    if (v == NETFILTER_REPLY)
        check_reply(reply, rlen);
    else if ((v != NETFILTER_PASS && v != NETFILTER_DROP) || rlen != 0)
        abort();
    free(f);
}

static void set_policy(struct netfilter *nf, const uint8_t *d, size_t n, int allow)
{
    char *text = malloc(n + 1), *entries[17];
    if (!text)
        abort();
    memcpy(text, d, n);
    text[n] = 0;
    size_t k = 0;
    for (char *s = text; k < 16;) {
        entries[k++] = s;
        char *nl = strchr(s, '\n');
        if (!nl)
            break;
        *nl = 0;
        s = nl + 1;
    }
    entries[k] = NULL;
    struct netfilter_policy p = {.allow_internet = !allow};
    if (allow)
        p.allow_out = (const char *const *)entries;
    else
        p.deny_out = (const char *const *)entries;
    char err[160];
    (void)netfilter_set_policy(nf, &p, err, sizeof(err));
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const hosts[] = {"db.internal=10.0.2.2", "a.test=192.0.2.1",
                                        "a.test=192.0.2.2", NULL};
    static const char *const allow[] = {"*.test", "10.0.2.2:8080", "example.com:443", NULL};
    static const char *const deny[] = {"10.0.0.0/8", "*.bad.test", "1.2.3.4:22", NULL};
    struct netfilter_addrs a = {.guest = GUEST, .gateway = GW, .dns = DNS};
    memcpy(a.guest_mac, guest_mac, 6);
    memcpy(a.gateway_mac, gw_mac, 6);
    struct netfilter *nf;
    char err[160];
    if (size < 1 || netfilter_new(&nf, &a, hosts, err, sizeof(err)) != 0)
        return 0;
    struct netfilter_policy pols[4] = {
        {.allow_internet = 1},
        {.allow_internet = 0, .allow_out = allow},
        {.allow_internet = 1, .deny_out = deny},
        {.allow_internet = 0, .allow_out = allow, .deny_out = deny},
    };
    if (netfilter_set_policy(nf, &pols[data[0] & 3], err, sizeof(err)) != 0)
        abort();
    data++;
    size--;
    n_egress = 0;

    while (size >= 3) {
        uint8_t kind = data[0];
        size_t n = get16(data + 1);
        data += 3;
        size -= 3;
        if (n > size)
            n = size;
        size_t len;
        uint8_t *f;
        switch ((kind & 63) % 6) {
        case 0:
            f = malloc(n ? n : 1);
            if (!f)
                abort();
            memcpy(f, data, n);
            egress(nf, f, n);
            break;
        case 1:
            f = malloc(n ? n : 1);
            if (!f)
                abort();
            memcpy(f, data, n);
            netfilter_ingress(nf, f, n);
            free(f);
            break;
        case 2:
            if (n > 1400)
                n = 1400;
            f = udp_frame(DNS, GUEST, 53, 40000, data, n, &len);
            netfilter_ingress(nf, f, len);
            free(f);
            break;
        case 3:
            if (n > 1400)
                n = 1400;
            egress(nf, udp_frame(GUEST, DNS, 40000, 53, data, n, &len), len);
            break;
        case 4: {
            uint8_t t[20] = {0x9c, 0x40, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02};
            uint32_t dst = n >= 4 ? (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 |
                                        (uint32_t)data[2] << 8 | data[3]
                                  : GW;
            memcpy(t + 2, n >= 6 ? data + 4 : (const uint8_t *)"\0\120", 2);
            if (kind & 0x40)
                egress(nf, udp_frame(GUEST, dst, 40000, get16(t + 2), t, 8, &len), len);
            else
                egress(nf, ip_frame(6, GUEST, dst, t, 20, &len), len);
            break;
        }
        case 5:
            set_policy(nf, data, n, kind & 0x40);
            break;
        }
        data += n;
        size -= n;
    }

    struct netfilter_stats st;
    netfilter_stats(nf, &st);
    if (st.passed + st.dropped + st.rejected + st.dns_answered != n_egress)
        abort();
    netfilter_free(nf);
    return 0;
}
