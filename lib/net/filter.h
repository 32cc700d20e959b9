// SPDX-License-Identifier: Apache-2.0
/*
 * The egress policy of one sandbox, applied to every Ethernet frame the guest sends before it
 * reaches the NAT (libslirp) or a TAP device, and the sandbox's DNS view: names the host
 * application maps itself (answered here), and the addresses learned from the DNS answers the
 * guest receives, so that domain rules can be matched against the destination of a packet.
 *
 * Everything here parses hostile guest bytes: every length is checked, nothing is trusted.
 * Not thread-safe: the caller serialises calls (the device thread does).
 */
#ifndef SBX_NET_FILTER_H
#define SBX_NET_FILTER_H

#include <stddef.h>
#include <stdint.h>

/* Addresses of the virtual network, in host byte order (10.0.2.0/24 by default). */
struct netfilter_addrs {
    uint32_t guest;   /* the guest's eth0 address, e.g. 10.0.2.15 */
    uint32_t gateway; /* the NAT gateway; with libslirp also the host's loopback, 10.0.2.2 */
    uint32_t dns;     /* the DNS server the guest uses, 10.0.2.3 */
    uint8_t guest_mac[6], gateway_mac[6];
};

/*
 * A policy as the API takes it. Entry syntax (allow_out and deny_out alike):
 *   "10.1.2.3", "10.0.0.0/8", "0.0.0.0/0"   an address or CIDR block
 *   "example.com", "*.example.com"          a domain (the wildcard matches subdomains only)
 *   any of these followed by ":PORT" or ":LOW-HIGH"   only those destination ports
 * Semantics (E2B's): a packet to an address matched by an allow entry passes, even if a deny
 * entry matches too; otherwise a deny entry drops it; otherwise it passes. allow_internet = 0
 * adds the deny entry "0.0.0.0/0". A domain entry matches an address the guest learned from a
 * DNS answer for a matching name (or a name of `hosts`). DNS queries to the sandbox's DNS
 * server (UDP and TCP port 53) always pass (domain rules depend on them). Entries with ports
 * never match ICMP. filter.c's header comment lists the finer points (CIDR host bits,
 * fragments, how long learned names are kept).
 */
struct netfilter_policy {
    int allow_internet;
    const char *const *allow_out; /* NULL-terminated, or NULL */
    const char *const *deny_out;  /* NULL-terminated, or NULL */
};

struct netfilter;

/* Creates a filter that passes everything, with `hosts` ("NAME=IPV4" entries, NULL-terminated
   or NULL; at most 256; a name may be listed with several addresses) answered by the
   sandbox's DNS. Returns 0 or a negative SBX_E* code (SBX_EINVAL for a malformed hosts entry,
   with a message naming it, SBX_ENOMEM). */
int netfilter_new(struct netfilter **out, const struct netfilter_addrs *addrs,
                  const char *const *hosts, char *err, size_t errlen);

void netfilter_free(struct netfilter *nf);

/* Validates `p` completely and then replaces the policy (the learned DNS names are kept).
   SBX_EINVAL with a message naming the bad entry (or the list with more than 1024 entries)
   leaves the old policy in place. p == NULL: pass everything (note that a zeroed policy
   has allow_internet = 0, i.e. denies everything). */
int netfilter_set_policy(struct netfilter *nf, const struct netfilter_policy *p, char *err,
                         size_t errlen);

enum netfilter_verdict {
    NETFILTER_PASS,  /* hand the frame to the backend */
    NETFILTER_DROP,  /* discard it */
    NETFILTER_REPLY, /* discard it and deliver *reply_len bytes of `reply` to the guest: a DNS
                        answer for a `hosts` name, or a TCP RST / ICMP unreachable for a
                        denied destination, so the guest fails fast instead of timing out */
};

/* Judges one frame the guest sent (Ethernet header included; at most 65550 bytes). ARP
   passes; IPv4 is judged by destination address, protocol and port; everything else (IPv6,
   other ethertypes) is dropped. `reply` must hold at least NETFILTER_REPLY_MAX bytes. */
#define NETFILTER_REPLY_MAX 1514
enum netfilter_verdict netfilter_egress(struct netfilter *nf, const uint8_t *frame, size_t len,
                                        uint8_t *reply, size_t *reply_len);

/* Looks at one frame on its way to the guest: DNS answers from the sandbox's DNS server teach
   which names an address belongs to (bounded table; oldest forgotten first). */
void netfilter_ingress(struct netfilter *nf, const uint8_t *frame, size_t len);

/* Counters, for sbx_network_info and the tests. Every egress frame counts in exactly one of
   passed, dropped, rejected and dns_answered. */
struct netfilter_stats {
    uint64_t passed;        /* NETFILTER_PASS */
    uint64_t dropped;       /* malformed or unsupported (IPv6, VLAN, other IP protocols) */
    uint64_t rejected;      /* refused by the policy, with a RST / ICMP reply or without one
                               (a RST, an ICMP error, a broadcast, a non-first fragment) */
    uint64_t dns_answered;  /* queries for `hosts` names answered here */
    uint64_t names_learned; /* new address -> name pairs learned from DNS answers */
};
void netfilter_stats(const struct netfilter *nf, struct netfilter_stats *out);

#endif
