// SPDX-License-Identifier: Apache-2.0
/*
 * The egress policy and DNS view of a sandbox's network (see filter.h): entry parsing, the
 * per-frame verdict, the replies that make refused connections fail fast, the answers for
 * `hosts` names, and the table of names learned from the DNS answers the guest receives.
 *
 * Choices worth knowing (docs/networking.md repeats them for users):
 *  - A CIDR entry with host bits set ("10.1.2.3/8") is accepted and masked ("10.0.0.0/8"),
 *    like most firewalls do. Octets with leading zeros ("010.0.0.1") are refused: inet_aton
 *    would read them as octal, so their meaning is ambiguous.
 *  - Learned names ignore the DNS TTL: an address stays associated with a name until the table
 *    (LEARN_MAX pairs, at most LEARN_PER_ADDR names per address) forgets it, least recently
 *    learned or used first. A pair is "used" when it lets a packet through an allow rule, so
 *    the names of long-lived allowed connections are not forgotten while the guest resolves
 *    other names.
 *  - Names of `hosts` are bound to their addresses for the filter's whole life.
 *  - A non-first IP fragment carries no ports. It is judged by its address alone: an allow
 *    entry matching the address lets it through whatever the entry's ports, a deny entry only
 *    applies to it if it has no ports. That is safe because the NAT reassembles datagrams and
 *    the first fragment, which alone carries the ports (a later one starts at byte 8 at the
 *    earliest and cannot overwrite them), is judged by its ports; a first fragment too short
 *    to hold the whole TCP or UDP header is dropped.
 *  - DNS to the sandbox's DNS server (UDP and TCP, port 53) always passes: it only reaches
 *    the host's resolver. Only unfragmented UDP answers are learned from.
 *  - Domain deny entries are a convenience, not a boundary: a guest can connect to an address
 *    it never resolved. A domain allow entry under a deny-all is one: the guest reaches only
 *    addresses that the resolver returned for an allowed name (and anything else on them).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/filter.h"
#include "sandbox.h"

#define MAX_RULES      1024 /* per list, as documented in sandbox.h */
#define MAX_HOSTS      256
#define LEARN_MAX      4096 /* address -> name pairs */
#define LEARN_PER_ADDR 32   /* names kept per address (a CDN address serves thousands) */
#define LEARN_BUCKETS  1024
#define NAME_MAX_TEXT  253 /* a dotted name without its trailing dot */
#define DNS_CHAIN_MAX  16  /* the question and the CNAME targets reached from it */
#define DNS_CNAME_MAX  32  /* CNAME records looked at per answer */
#define DNS_A_MAX      64  /* A records looked at per answer */
#define DNS_TTL        60  /* of the answers for `hosts` names */
#define DNS_UDP_MAX    512 /* answers fit a classic DNS datagram */

#define ETH_HLEN  14
#define ETH_IPV4  0x0800
#define ETH_ARP   0x0806
#define IPP_ICMP  1
#define IPP_TCP   6
#define IPP_UDP   17
#define TCP_FIN   0x01
#define TCP_SYN   0x02
#define TCP_RST   0x04
#define TCP_ACK   0x10
#define DNS_PORT  53
#define DNS_QR    0x8000
#define DNS_AA    0x0400
#define DNS_RD    0x0100
#define DNS_RA    0x0080
#define DNS_A     1
#define DNS_CNAME 5
#define DNS_ANY   255
#define DNS_IN    1

/* The port of a packet for matching, or one of these. */
enum {
    PORT_NONE = -1,    /* ICMP: entries with ports never match */
    PORT_UNKNOWN = -2, /* non-first fragment: see the comment at the top */
};

struct rule {
    bool deny, domain, wildcard, has_port;
    uint16_t lo, hi;
    uint32_t net, mask; /* address entries */
    char *name;         /* domain entries: lower case; for "*.x" just "x" */
};

struct policy {
    struct rule *rules; /* allow entries first, then deny entries */
    size_t n;
    /* Open-addressing index of the domain entries: rule index + 1, 0 = empty slot. */
    uint32_t *dom;
    size_t domcap; /* a power of two, or 0 */
};

struct host {
    char *name; /* lower case */
    uint32_t addr;
};

/* One learned address -> name pair; slots are chained per address hash and in age order. */
struct learned {
    char *name; /* NULL: free slot (then hnext links the free list) */
    uint32_t addr;
    int32_t hnext, hprev; /* bucket chain */
    int32_t older, newer; /* age list */
    uint64_t seq;         /* when learned or last used */
};

struct netfilter {
    struct netfilter_addrs a;
    struct policy pol;
    struct host *hosts;
    size_t nhosts;
    struct learned *lt;
    int32_t bucket[LEARN_BUCKETS];
    int32_t oldest, newest, freelist;
    uint64_t seq;
    struct netfilter_stats st;
    /* Scratch for one DNS answer (kept here, not on the device thread's stack). */
    char chain[DNS_CHAIN_MAX][NAME_MAX_TEXT + 1];
    char cn_from[DNS_CNAME_MAX][NAME_MAX_TEXT + 1], cn_to[DNS_CNAME_MAX][NAME_MAX_TEXT + 1];
    char a_owner[DNS_A_MAX][NAME_MAX_TEXT + 1];
    uint32_t a_addr[DNS_A_MAX];
};

/* ---- bytes ---- */

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc)
{
    for (; n > 1; p += 2, n -= 2)
        acc += rd16(p);
    if (n)
        acc += (uint32_t)p[0] << 8;
    return acc;
}

static uint16_t fold(uint32_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}

/* Checksum of a TCP or UDP segment with the IPv4 pseudo-header. */
static uint16_t l4_csum(uint32_t src, uint32_t dst, uint8_t proto, const uint8_t *seg, size_t n)
{
    uint32_t acc =
        (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + (uint32_t)n;
    return fold(sum16(seg, n, acc));
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* ---- entries ---- */

/* The entry as it may appear in a message: bounded, non-printable bytes replaced. */
static void quote(char *dst, size_t cap, const char *s)
{
    size_t i = 0, o = 0;
    for (; s[i] && o + 4 < cap && i < 80; i++)
        dst[o++] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
    if (s[i] && o + 4 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = 0;
}

static int entry_error(char *err, size_t errlen, const char *list, const char *entry,
                       const char *why)
{
    char q[96];
    quote(q, sizeof(q), entry);
    snprintf(err, errlen, "%s entry \"%s\": %s", list, q, why);
    return SBX_EINVAL;
}

/* "a.b.c.d": four decimal octets, no leading zeros. */
static const char *parse_ipv4(const char *s, size_t n, uint32_t *out)
{
    uint32_t addr = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return "not a valid IPv4 address";
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || v > 255 || (i < n && s[i] >= '0' && s[i] <= '9'))
            return "not a valid IPv4 address";
        if (s[start] == '0' && i - start > 1)
            return "IPv4 octet with a leading zero (ambiguous: octal or decimal?)";
        addr = addr << 8 | v;
    }
    if (i != n)
        return "not a valid IPv4 address";
    *out = addr;
    return NULL;
}

/* RFC 1123 host name; `out` (NAME_MAX_TEXT + 1 bytes) receives it in lower case. */
static const char *parse_domain(const char *s, size_t n, char *out)
{
    if (n > 0 && s[n - 1] == '.')
        n--; /* the fully qualified form names the same domain */
    if (n == 0)
        return "empty domain name";
    if (n > NAME_MAX_TEXT)
        return "domain name longer than 253 characters";
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? s[i] : '.';
        if (c == '.') {
            if (label == 0)
                return "empty label in domain name";
            if (s[i - 1] == '-' || s[i - label] == '-')
                return "domain label starts or ends with '-'";
            label = 0;
            if (i < n)
                out[i] = '.';
            continue;
        }
        if (c == '*')
            return "'*' is only allowed as a leading \"*.\"";
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return "invalid character in domain name (letters, digits, '-' and '.' only)";
        if (++label > 63)
            return "domain label longer than 63 characters";
        out[i] = lower(c);
    }
    out[n] = 0;
    return NULL;
}

/* ":PORT" or ":LOW-HIGH" without the colon. */
static const char *parse_ports(const char *s, uint16_t *lo, uint16_t *hi)
{
    unsigned v[2] = {0, 0};
    int k = 0;
    for (size_t i = 0;; i++) {
        size_t start = i;
        while (s[i] >= '0' && s[i] <= '9') {
            v[k] = v[k] * 10 + (unsigned)(s[i++] - '0');
            if (v[k] > 65535)
                return "port out of range (1..65535)";
        }
        if (i == start)
            return "bad port (expected :PORT or :LOW-HIGH with ports 1..65535)";
        if (v[k] == 0)
            return "port out of range (1..65535)";
        if (s[i] == 0)
            break;
        if (s[i] != '-' || k == 1)
            return "bad port (expected :PORT or :LOW-HIGH with ports 1..65535)";
        k++;
    }
    if (k == 1 && v[0] > v[1])
        return "port range LOW-HIGH with LOW greater than HIGH";
    *lo = (uint16_t)v[0];
    *hi = (uint16_t)(k == 1 ? v[1] : v[0]);
    return NULL;
}

static int parse_rule(const char *e, bool deny, struct rule *r, char *err, size_t errlen)
{
    const char *list = deny ? "deny_out" : "allow_out", *entry = e;
    const char *why = NULL;
    memset(r, 0, sizeof(*r));
    r->deny = deny;
    if (e[0] == 0)
        return entry_error(err, errlen, list, e, "empty entry");
    if (strlen(e) > 300)
        return entry_error(err, errlen, list, e, "entry too long");
    const char *colon = strchr(e, ':');
    if (colon && strchr(colon + 1, ':'))
        return entry_error(err, errlen, list, e, "IPv6 addresses are not supported");
    if (colon) {
        if ((why = parse_ports(colon + 1, &r->lo, &r->hi)))
            return entry_error(err, errlen, list, e, why);
        r->has_port = true;
    }
    size_t n = colon ? (size_t)(colon - e) : strlen(e);
    if (n == 0)
        return entry_error(err, errlen, list, e, "missing address or domain before ':'");
    if (e[0] == '[')
        return entry_error(err, errlen, list, e, "IPv6 addresses are not supported");
    const char *slash = memchr(e, '/', n);
    bool numeric = true;
    for (size_t i = 0; i < n; i++)
        numeric = numeric && ((e[i] >= '0' && e[i] <= '9') || e[i] == '.');
    if (slash || numeric) {
        size_t alen = slash ? (size_t)(slash - e) : n;
        unsigned prefix = 32;
        if (slash) {
            const char *p = slash + 1;
            size_t plen = n - alen - 1;
            if (plen == 0 || plen > 2)
                return entry_error(err, errlen, list, e, "prefix length must be 0..32");
            prefix = 0;
            for (size_t i = 0; i < plen; i++) {
                if (p[i] < '0' || p[i] > '9')
                    return entry_error(err, errlen, list, e, "prefix length must be 0..32");
                prefix = prefix * 10 + (unsigned)(p[i] - '0');
            }
            if (prefix > 32)
                return entry_error(err, errlen, list, e, "prefix length must be 0..32");
        }
        if ((why = parse_ipv4(e, alen, &r->net)))
            return entry_error(err, errlen, list, e, why);
        r->mask = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
        r->net &= r->mask;
        return 0;
    }
    char name[NAME_MAX_TEXT + 1];
    r->domain = true;
    if (n >= 2 && e[0] == '*' && e[1] == '.') {
        r->wildcard = true;
        e += 2;
        n -= 2;
    }
    if ((why = parse_domain(e, n, name)))
        return entry_error(err, errlen, list, entry, why);
    if (!(r->name = strdup(name))) {
        snprintf(err, errlen, "out of memory");
        return SBX_ENOMEM;
    }
    return 0;
}

static uint32_t name_hash(const char *s, bool wildcard)
{
    uint32_t h = wildcard ? 0x9e3779b9u : 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void policy_clear(struct policy *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->rules[i].name);
    free(p->rules);
    free(p->dom);
    memset(p, 0, sizeof(*p));
}

static int count_list(const char *const *l, const char *name, size_t *n, char *err, size_t errlen)
{
    *n = 0;
    for (; l && l[*n]; (*n)++) {
        if (*n == MAX_RULES) {
            snprintf(err, errlen, "%s has more than %d entries", name, MAX_RULES);
            return SBX_EINVAL;
        }
    }
    return 0;
}

static int policy_build(struct policy *p, const struct netfilter_policy *in, char *err,
                        size_t errlen)
{
    size_t na = 0, nd = 0;
    int r;
    memset(p, 0, sizeof(*p));
    if (!in)
        return 0; /* no policy: everything passes */
    if ((r = count_list(in->allow_out, "allow_out", &na, err, errlen)) < 0 ||
        (r = count_list(in->deny_out, "deny_out", &nd, err, errlen)) < 0)
        return r;
    size_t total = na + nd + (in->allow_internet ? 0 : 1);
    if (total == 0)
        return 0;
    if (!(p->rules = calloc(total, sizeof(*p->rules))))
        goto nomem;
    size_t ndom = 0;
    for (size_t i = 0; i < na + nd; i++) {
        bool deny = i >= na;
        const char *e = deny ? in->deny_out[i - na] : in->allow_out[i];
        if ((r = parse_rule(e, deny, &p->rules[p->n], err, errlen)) < 0) {
            policy_clear(p);
            return r;
        }
        ndom += p->rules[p->n++].domain;
    }
    if (!in->allow_internet) {
        struct rule *all = &p->rules[p->n++];
        all->deny = true; /* "0.0.0.0/0": net and mask stay 0 */
    }
    if (ndom) {
        p->domcap = 16;
        while (p->domcap < 2 * ndom)
            p->domcap *= 2;
        if (!(p->dom = calloc(p->domcap, sizeof(*p->dom))))
            goto nomem;
        for (size_t i = 0; i < p->n; i++) {
            if (!p->rules[i].domain)
                continue;
            size_t s = name_hash(p->rules[i].name, p->rules[i].wildcard) & (p->domcap - 1);
            while (p->dom[s])
                s = (s + 1) & (p->domcap - 1);
            p->dom[s] = (uint32_t)i + 1;
        }
    }
    return 0;
nomem:
    policy_clear(p);
    snprintf(err, errlen, "out of memory");
    return SBX_ENOMEM;
}

static int parse_hosts(struct netfilter *nf, const char *const *hosts, char *err, size_t errlen)
{
    size_t n = 0;
    while (hosts && hosts[n]) {
        if (++n > MAX_HOSTS) {
            snprintf(err, errlen, "hosts has more than %d entries", MAX_HOSTS);
            return SBX_EINVAL;
        }
    }
    if (n == 0)
        return 0;
    if (!(nf->hosts = calloc(n, sizeof(*nf->hosts))))
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const char *e = hosts[i], *eq = strchr(e, '='), *why;
        char name[NAME_MAX_TEXT + 1];
        uint32_t addr;
        if (!eq)
            return entry_error(err, errlen, "hosts", e, "expected NAME=IPV4");
        if (strlen(e) > 300)
            return entry_error(err, errlen, "hosts", e, "entry too long");
        if ((why = parse_domain(e, (size_t)(eq - e), name)))
            return entry_error(err, errlen, "hosts", e, why);
        if ((why = parse_ipv4(eq + 1, strlen(eq + 1), &addr)))
            return entry_error(err, errlen, "hosts", e, why);
        bool dup = false;
        for (size_t k = 0; k < nf->nhosts; k++)
            dup = dup || (nf->hosts[k].addr == addr && !strcmp(nf->hosts[k].name, name));
        if (dup)
            continue;
        if (!(nf->hosts[nf->nhosts].name = strdup(name)))
            goto nomem;
        nf->hosts[nf->nhosts++].addr = addr;
    }
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return SBX_ENOMEM;
}

/* ---- life cycle ---- */

int netfilter_new(struct netfilter **out, const struct netfilter_addrs *addrs,
                  const char *const *hosts, char *err, size_t errlen)
{
    *out = NULL;
    if (!addrs) {
        snprintf(err, errlen, "netfilter: no addresses");
        return SBX_EINVAL;
    }
    struct netfilter *nf = calloc(1, sizeof(*nf));
    if (!nf || !(nf->lt = calloc(LEARN_MAX, sizeof(*nf->lt)))) {
        free(nf);
        snprintf(err, errlen, "out of memory");
        return SBX_ENOMEM;
    }
    nf->a = *addrs;
    for (int i = 0; i < LEARN_BUCKETS; i++)
        nf->bucket[i] = -1;
    for (int32_t i = 0; i < LEARN_MAX; i++)
        nf->lt[i].hnext = i + 1 < LEARN_MAX ? i + 1 : -1;
    nf->freelist = 0;
    nf->oldest = nf->newest = -1;
    int r = parse_hosts(nf, hosts, err, errlen);
    if (r < 0) {
        netfilter_free(nf);
        return r;
    }
    *out = nf;
    return 0;
}

void netfilter_free(struct netfilter *nf)
{
    if (!nf)
        return;
    policy_clear(&nf->pol);
    for (size_t i = 0; i < nf->nhosts; i++)
        free(nf->hosts[i].name);
    free(nf->hosts);
    for (size_t i = 0; i < LEARN_MAX; i++)
        free(nf->lt[i].name);
    free(nf->lt);
    free(nf);
}

int netfilter_set_policy(struct netfilter *nf, const struct netfilter_policy *p, char *err,
                         size_t errlen)
{
    struct policy np;
    int r = policy_build(&np, p, err, errlen);
    if (r < 0)
        return r;
    policy_clear(&nf->pol);
    nf->pol = np;
    return 0;
}

void netfilter_stats(const struct netfilter *nf, struct netfilter_stats *out)
{
    *out = nf->st;
}

/* ---- learned names ---- */

static unsigned addr_bucket(uint32_t addr)
{
    return (addr * 2654435761u) >> 22; /* 10 bits: LEARN_BUCKETS */
}

static void age_unlink(struct netfilter *nf, int32_t i)
{
    struct learned *e = &nf->lt[i];
    if (e->older >= 0)
        nf->lt[e->older].newer = e->newer;
    else
        nf->oldest = e->newer;
    if (e->newer >= 0)
        nf->lt[e->newer].older = e->older;
    else
        nf->newest = e->older;
}

static void age_push(struct netfilter *nf, int32_t i)
{
    struct learned *e = &nf->lt[i];
    e->older = nf->newest;
    e->newer = -1;
    if (nf->newest >= 0)
        nf->lt[nf->newest].newer = i;
    else
        nf->oldest = i;
    nf->newest = i;
    e->seq = ++nf->seq;
}

static void touch(struct netfilter *nf, int32_t i)
{
    age_unlink(nf, i);
    age_push(nf, i);
}

static void forget(struct netfilter *nf, int32_t i)
{
    struct learned *e = &nf->lt[i];
    age_unlink(nf, i);
    if (e->hprev >= 0)
        nf->lt[e->hprev].hnext = e->hnext;
    else
        nf->bucket[addr_bucket(e->addr)] = e->hnext;
    if (e->hnext >= 0)
        nf->lt[e->hnext].hprev = e->hprev;
    free(e->name);
    e->name = NULL;
    e->hnext = nf->freelist;
    nf->freelist = i;
}

static void learn(struct netfilter *nf, uint32_t addr, const char *name)
{
    unsigned b = addr_bucket(addr);
    int32_t same = -1, count = 0;
    for (int32_t i = nf->bucket[b]; i >= 0; i = nf->lt[i].hnext) {
        if (nf->lt[i].addr != addr)
            continue;
        if (!strcmp(nf->lt[i].name, name)) {
            touch(nf, i);
            return;
        }
        count++;
        if (same < 0 || nf->lt[i].seq < nf->lt[same].seq)
            same = i;
    }
    char *copy = strdup(name);
    if (!copy)
        return; /* out of memory: the name is simply not learned */
    if (count >= LEARN_PER_ADDR)
        forget(nf, same);
    else if (nf->freelist < 0)
        forget(nf, nf->oldest);
    int32_t i = nf->freelist;
    struct learned *e = &nf->lt[i];
    nf->freelist = e->hnext;
    e->name = copy;
    e->addr = addr;
    e->hprev = -1;
    e->hnext = nf->bucket[b];
    if (e->hnext >= 0)
        nf->lt[e->hnext].hprev = i;
    nf->bucket[b] = i;
    age_push(nf, i);
    nf->st.names_learned++;
}

/* ---- matching ---- */

static bool port_ok(const struct rule *r, int port)
{
    if (!r->has_port)
        return true;
    if (port >= 0)
        return port >= r->lo && port <= r->hi;
    return port == PORT_UNKNOWN && !r->deny;
}

static bool domain_lookup(const struct policy *p, const char *key, bool wildcard, bool deny,
                          int port)
{
    for (size_t s = name_hash(key, wildcard) & (p->domcap - 1); p->dom[s];
         s = (s + 1) & (p->domcap - 1)) {
        const struct rule *r = &p->rules[p->dom[s] - 1];
        if (r->deny == deny && r->wildcard == wildcard && port_ok(r, port) && !strcmp(r->name, key))
            return true;
    }
    return false;
}

/* Does a domain entry of the `deny` list match `name` (lower case)? "*.x" matches the names
   below x, so every proper suffix after a '.' is a candidate. */
static bool name_matches(const struct policy *p, const char *name, bool deny, int port)
{
    if (!p->domcap)
        return false;
    if (domain_lookup(p, name, false, deny, port))
        return true;
    for (const char *d = strchr(name, '.'); d; d = strchr(d + 1, '.'))
        if (domain_lookup(p, d + 1, true, deny, port))
            return true;
    return false;
}

static bool list_matches(struct netfilter *nf, uint32_t addr, int port, bool deny)
{
    const struct policy *p = &nf->pol;
    for (size_t i = 0; i < p->n; i++) {
        const struct rule *r = &p->rules[i];
        if (r->deny == deny && !r->domain && (addr & r->mask) == r->net && port_ok(r, port))
            return true;
    }
    if (!p->domcap)
        return false;
    for (size_t i = 0; i < nf->nhosts; i++)
        if (nf->hosts[i].addr == addr && name_matches(p, nf->hosts[i].name, deny, port))
            return true;
    for (int32_t i = nf->bucket[addr_bucket(addr)]; i >= 0; i = nf->lt[i].hnext) {
        if (nf->lt[i].addr == addr && name_matches(p, nf->lt[i].name, deny, port)) {
            if (!deny)
                touch(nf, i); /* in use: keep it */
            return true;
        }
    }
    return false;
}

/* May the guest send to addr:port? Allow entries win, then deny entries, then yes. */
static bool allowed(struct netfilter *nf, uint32_t addr, int port)
{
    if (!nf->pol.n)
        return true;
    return list_matches(nf, addr, port, false) || !list_matches(nf, addr, port, true);
}

/* ---- frames ---- */

struct pkt {
    const uint8_t *eth, *ip, *l4;
    size_t l4len;
    uint32_t src, dst;
    uint8_t proto;
    bool more, first; /* more fragments follow; offset 0 */
};

/* Ethernet II + a sane IPv4 header whose lengths fit the frame. */
static bool parse_ip(const uint8_t *f, size_t len, struct pkt *k)
{
    if (len < ETH_HLEN + 20 || rd16(f + 12) != ETH_IPV4)
        return false;
    const uint8_t *ip = f + ETH_HLEN;
    size_t ihl = (size_t)(ip[0] & 15) * 4, tot = rd16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < 20 || tot < ihl || tot > len - ETH_HLEN)
        return false;
    uint16_t frag = rd16(ip + 6);
    k->eth = f;
    k->ip = ip;
    k->l4 = ip + ihl;
    k->l4len = tot - ihl;
    k->src = rd32(ip + 12);
    k->dst = rd32(ip + 16);
    k->proto = ip[9];
    k->more = frag & 0x2000;
    k->first = (frag & 0x1fff) == 0;
    return true;
}

/* Addresses an error may be sent about or to (RFC 1122 3.2.2: never about a broadcast or
   multicast packet, nor to a source that is not one host). */
static bool unicast(uint32_t a)
{
    return a != 0 && (a >> 28) < 14; /* not 0.0.0.0, 224/4 (multicast) nor 240/4 */
}

static bool group_mac(const uint8_t *m)
{
    return m[0] & 1;
}

/* Ethernet + IPv4 headers of a reply to `k` coming from `src`; returns the IP header. */
static uint8_t *reply_headers(const struct netfilter *nf, const struct pkt *k, uint8_t *out,
                              uint8_t proto, uint32_t src, size_t l4len)
{
    memcpy(out, group_mac(k->eth + 6) ? nf->a.guest_mac : k->eth + 6, 6);
    memcpy(out + 6, group_mac(k->eth) ? nf->a.gateway_mac : k->eth, 6);
    wr16(out + 12, ETH_IPV4);
    uint8_t *ip = out + ETH_HLEN;
    memset(ip, 0, 20);
    ip[0] = 0x45;
    wr16(ip + 2, (uint16_t)(20 + l4len));
    wr16(ip + 6, 0x4000); /* DF */
    ip[8] = 64;
    ip[9] = proto;
    wr32(ip + 12, src);
    wr32(ip + 16, k->src);
    wr16(ip + 10, fold(sum16(ip, 20, 0)));
    return ip;
}

/* The RST a host without a listener would send (RFC 793, "reset generation"). */
static size_t tcp_rst(const struct netfilter *nf, const struct pkt *k, uint8_t *out)
{
    const uint8_t *t = k->l4;
    uint8_t flags = t[13];
    uint8_t *ip = reply_headers(nf, k, out, IPP_TCP, k->dst, 20);
    uint8_t *r = ip + 20;
    memset(r, 0, 20);
    memcpy(r, t + 2, 2);
    memcpy(r + 2, t, 2);
    if (flags & TCP_ACK) {
        memcpy(r + 4, t + 8, 4); /* seq = their ack */
        r[13] = TCP_RST;
    } else {
        size_t data = k->l4len - (size_t)(t[12] >> 4) * 4;
        uint32_t ack = rd32(t + 4) + (uint32_t)data + !!(flags & TCP_SYN) + !!(flags & TCP_FIN);
        wr32(r + 8, ack);
        r[13] = TCP_RST | TCP_ACK;
    }
    r[12] = 5 << 4;
    wr16(r + 16, l4_csum(k->dst, k->src, IPP_TCP, r, 20));
    return ETH_HLEN + 40;
}

/* ICMP destination unreachable, "communication administratively prohibited" (RFC 1812),
   from the gateway, quoting the IP header and the first 8 bytes after it. */
static size_t icmp_prohibited(const struct netfilter *nf, const struct pkt *k, uint8_t *out)
{
    size_t ihl = (size_t)(k->l4 - k->ip), quoted = ihl + (k->l4len < 8 ? k->l4len : 8);
    uint8_t *ip = reply_headers(nf, k, out, IPP_ICMP, nf->a.gateway, 8 + quoted);
    uint8_t *c = ip + 20;
    memset(c, 0, 8);
    c[0] = 3;
    c[1] = 13;
    memcpy(c + 8, k->ip, quoted);
    wr16(c + 2, fold(sum16(c, 8 + quoted, 0)));
    return ETH_HLEN + 20 + 8 + quoted;
}

static bool icmp_is_error(uint8_t type)
{
    return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

/* ---- DNS ---- */

/*
 * Reads the possibly compressed name at *pos of msg[0..len); its uncompressed part must end
 * before `limit`. Writes the dotted text (no trailing dot, "" for the root; at most 253
 * characters since the wire form is at most 255 bytes) to `out`, in lower case if `fold_case`,
 * and moves *pos past the name. A pointer must go to an offset before the part being read,
 * so every jump goes backwards and loops are impossible. Returns 1 for a name made of
 * letters, digits, '-' and '_' only, 0 for a well-formed name with other bytes (never matched
 * against anything), -1 for a malformed one.
 */
static int dns_name(const uint8_t *msg, size_t len, size_t *pos, size_t limit, char *out,
                    bool fold_case)
{
    size_t p = *pos, seg = *pos, end = 0, wire = 1, o = 0;
    bool jumped = false;
    int clean = 1;
    if (limit > len)
        limit = len;
    for (;;) {
        size_t lim = jumped ? len : limit;
        if (p >= lim)
            return -1;
        uint8_t l = msg[p];
        if ((l & 0xc0) == 0xc0) {
            if (p + 1 >= lim)
                return -1;
            size_t target = (size_t)(l & 0x3f) << 8 | msg[p + 1];
            if (target >= seg)
                return -1;
            if (!jumped)
                end = p + 2;
            jumped = true;
            p = seg = target;
            continue;
        }
        if (l & 0xc0)
            return -1; /* extended label types (RFC 6891 deprecated them) */
        if (l == 0) {
            if (!jumped)
                end = p + 1;
            break;
        }
        wire += 1 + (size_t)l;
        if (wire > 255 || p + 1 + l > lim)
            return -1;
        if (o)
            out[o++] = '.';
        for (size_t i = 0; i < l; i++) {
            char c = (char)msg[p + 1 + i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_'))
                clean = 0;
            out[o++] = fold_case ? lower(c) : c;
        }
        p += 1 + (size_t)l;
    }
    out[o] = 0;
    *pos = end;
    return clean;
}

static bool host_name_eq(const char *lc, const char *name)
{
    for (; *lc && lower(*name) == *lc; lc++, name++)
        ;
    return *lc == 0 && *name == 0;
}

/* A query for a `hosts` name, answered here; false: not one (the backend gets it). */
static bool dns_answer(struct netfilter *nf, const struct pkt *k, uint8_t *out, size_t *out_len)
{
    const uint8_t *m = k->l4 + 8;
    size_t n = rd16(k->l4 + 4) - 8, pos = 12;
    char name[NAME_MAX_TEXT + 1];
    if (n < 12)
        return false;
    uint16_t flags = rd16(m + 2);
    if ((flags & DNS_QR) || ((flags >> 11) & 15) != 0 || rd16(m + 4) != 1 || rd16(m + 6) ||
        rd16(m + 8))
        return false;
    if (dns_name(m, n, &pos, n, name, false) != 1 || name[0] == 0 || pos + 4 > n)
        return false;
    uint16_t qtype = rd16(m + pos), qclass = rd16(m + pos + 2);
    bool known = false;
    for (size_t i = 0; i < nf->nhosts && !known; i++)
        known = host_name_eq(nf->hosts[i].name, name);
    if (!known || qclass != DNS_IN)
        return false;

    uint8_t *ip = out + ETH_HLEN, *u = ip + 20, *d = u + 8;
    memcpy(d, m, 2); /* id */
    wr16(d + 2, DNS_QR | DNS_AA | (flags & DNS_RD) | DNS_RA);
    wr16(d + 4, 1);
    memset(d + 6, 0, 6);
    size_t o = 12;
    for (const char *s = name; *s;) { /* the question, with the guest's letter case */
        size_t l = strcspn(s, ".");
        d[o++] = (uint8_t)l;
        memcpy(d + o, s, l);
        o += l;
        s += l + (s[l] == '.');
    }
    d[o++] = 0;
    wr16(d + o, qtype);
    wr16(d + o + 2, qclass);
    o += 4;
    uint16_t an = 0;
    for (size_t i = 0; i < nf->nhosts && (qtype == DNS_A || qtype == DNS_ANY); i++) {
        if (!host_name_eq(nf->hosts[i].name, name) || o + 16 > DNS_UDP_MAX)
            continue;
        wr16(d + o, 0xc00c); /* the question's name */
        wr16(d + o + 2, DNS_A);
        wr16(d + o + 4, DNS_IN);
        wr32(d + o + 6, DNS_TTL);
        wr16(d + o + 10, 4);
        wr32(d + o + 12, nf->hosts[i].addr);
        o += 16;
        an++;
    }
    wr16(d + 6, an);

    reply_headers(nf, k, out, IPP_UDP, k->dst, 8 + o);
    memcpy(u, k->l4 + 2, 2);
    memcpy(u + 2, k->l4, 2);
    wr16(u + 4, (uint16_t)(8 + o));
    wr16(u + 6, 0);
    uint16_t cs = l4_csum(k->dst, k->src, IPP_UDP, u, 8 + o);
    wr16(u + 6, cs ? cs : 0xffff);
    *out_len = ETH_HLEN + 20 + 8 + o;
    return true;
}

static bool in_chain(const struct netfilter *nf, size_t nchain, const char *name)
{
    for (size_t i = 0; i < nchain; i++)
        if (!strcmp(nf->chain[i], name))
            return true;
    return false;
}

/* An answer from the DNS server: binds each A address reached from the question (directly
   or through CNAMEs) to the question and to every name of the chain. A malformed answer
   teaches nothing. */
static void dns_learn(struct netfilter *nf, const uint8_t *m, size_t n)
{
    size_t pos = 12, ncn = 0, na = 0, nchain = 1;
    char owner[NAME_MAX_TEXT + 1];
    if (n < 12)
        return;
    uint16_t flags = rd16(m + 2);
    if (!(flags & DNS_QR) || ((flags >> 11) & 15) != 0 || (flags & 15) != 0 || rd16(m + 4) != 1)
        return;
    if (dns_name(m, n, &pos, n, nf->chain[0], true) != 1 || pos + 4 > n ||
        rd16(m + pos + 2) != DNS_IN)
        return;
    pos += 4;
    /* Each record takes 11 bytes at least, so a lying count ends at the end of the message. */
    for (unsigned i = 0, an = rd16(m + 6); i < an; i++) {
        int clean = dns_name(m, n, &pos, n, owner, true);
        if (clean < 0 || pos + 10 > n)
            return;
        uint16_t type = rd16(m + pos), class = rd16(m + pos + 2), rdlen = rd16(m + pos + 8);
        pos += 10;
        if (rdlen > n - pos)
            return;
        if (clean && class == DNS_IN && type == DNS_CNAME && ncn < DNS_CNAME_MAX) {
            size_t t = pos;
            int c = dns_name(m, n, &t, pos + rdlen, nf->cn_to[ncn], true);
            if (c < 0)
                return;
            if (c == 1) {
                memcpy(nf->cn_from[ncn], owner, sizeof(owner));
                ncn++;
            }
        } else if (clean && class == DNS_IN && type == DNS_A && rdlen == 4 && na < DNS_A_MAX) {
            memcpy(nf->a_owner[na], owner, sizeof(owner));
            nf->a_addr[na++] = rd32(m + pos);
        }
        pos += rdlen;
    }
    /* The names reached from the question, whatever the order of the records. */
    for (bool grew = true; grew && nchain < DNS_CHAIN_MAX;) {
        grew = false;
        for (size_t i = 0; i < ncn && nchain < DNS_CHAIN_MAX; i++) {
            if (in_chain(nf, nchain, nf->cn_from[i]) && !in_chain(nf, nchain, nf->cn_to[i])) {
                memcpy(nf->chain[nchain++], nf->cn_to[i], NAME_MAX_TEXT + 1);
                grew = true;
            }
        }
    }
    for (size_t i = 0; i < na; i++) {
        if (!in_chain(nf, nchain, nf->a_owner[i]) || !unicast(nf->a_addr[i]))
            continue;
        for (size_t c = 0; c < nchain; c++)
            learn(nf, nf->a_addr[i], nf->chain[c]);
    }
}

/* ---- the two directions ---- */

enum outcome { O_PASS, O_DROP, O_REFUSED, O_REPLY_REFUSED, O_ANSWERED };

static enum outcome egress(struct netfilter *nf, const uint8_t *f, size_t len, uint8_t *reply,
                           size_t *reply_len)
{
    struct pkt k;
    if (len < ETH_HLEN)
        return O_DROP;
    uint16_t type = rd16(f + 12);
    if (type == ETH_ARP)
        return O_PASS;
    if (type != ETH_IPV4 || !parse_ip(f, len, &k))
        return O_DROP; /* IPv6, VLAN tags, other protocols, malformed IPv4 */
    bool to_dns = k.dst == nf->a.dns;

    if (!k.first) {
        if (k.proto != IPP_TCP && k.proto != IPP_UDP && k.proto != IPP_ICMP)
            return O_DROP;
        if (to_dns && k.proto != IPP_ICMP)
            return O_PASS; /* the rest of a DNS query; its first fragment was judged */
        return allowed(nf, k.dst, PORT_UNKNOWN) ? O_PASS : O_REFUSED;
    }

    int port;
    switch (k.proto) {
    case IPP_TCP:
        if (k.l4len < 20 || (k.l4[12] >> 4) < 5 || (size_t)(k.l4[12] >> 4) * 4 > k.l4len)
            return O_DROP;
        port = rd16(k.l4 + 2);
        if (to_dns && port == DNS_PORT)
            return O_PASS;
        break;
    case IPP_UDP:
        if (k.l4len < 8)
            return O_DROP;
        port = rd16(k.l4 + 2);
        if (!k.more && (rd16(k.l4 + 4) < 8 || rd16(k.l4 + 4) > k.l4len))
            return O_DROP;
        if (to_dns && port == DNS_PORT) {
            if (!k.more && reply && dns_answer(nf, &k, reply, reply_len))
                return O_ANSWERED;
            return O_PASS;
        }
        break;
    case IPP_ICMP:
        if (k.l4len < 8)
            return O_DROP;
        port = PORT_NONE;
        break;
    default:
        return O_DROP; /* the NAT knows TCP, UDP and ICMP only */
    }
    if (allowed(nf, k.dst, port))
        return O_PASS;

    if (!reply || !unicast(k.src) || !unicast(k.dst) || (k.src >> 24) == 127)
        return O_REFUSED;
    if (k.proto == IPP_TCP) {
        if (k.l4[13] & TCP_RST)
            return O_REFUSED; /* never answer a reset */
        *reply_len = tcp_rst(nf, &k, reply);
    } else {
        if (k.proto == IPP_ICMP && icmp_is_error(k.l4[0]))
            return O_REFUSED; /* no error about an error (RFC 1122 3.2.2) */
        *reply_len = icmp_prohibited(nf, &k, reply);
    }
    return O_REPLY_REFUSED;
}

enum netfilter_verdict netfilter_egress(struct netfilter *nf, const uint8_t *frame, size_t len,
                                        uint8_t *reply, size_t *reply_len)
{
    size_t dummy;
    if (!reply_len) {
        reply = NULL; /* nowhere to say how long a reply would be: refuse silently */
        reply_len = &dummy;
    }
    *reply_len = 0;
    switch (egress(nf, frame, len, reply, reply_len)) {
    case O_PASS:
        nf->st.passed++;
        return NETFILTER_PASS;
    case O_REFUSED:
        nf->st.rejected++;
        return NETFILTER_DROP;
    case O_REPLY_REFUSED:
        nf->st.rejected++;
        return NETFILTER_REPLY;
    case O_ANSWERED:
        nf->st.dns_answered++;
        return NETFILTER_REPLY;
    case O_DROP:
        break;
    }
    nf->st.dropped++;
    return NETFILTER_DROP;
}

void netfilter_ingress(struct netfilter *nf, const uint8_t *frame, size_t len)
{
    struct pkt k;
    if (!parse_ip(frame, len, &k) || k.proto != IPP_UDP || k.more || !k.first ||
        k.src != nf->a.dns || k.l4len < 8 || rd16(k.l4) != DNS_PORT)
        return;
    size_t ulen = rd16(k.l4 + 4);
    if (ulen < 8 || ulen > k.l4len)
        return;
    dns_learn(nf, k.l4 + 8, ulen - 8);
}
