// SPDX-License-Identifier: Apache-2.0
/* A sandbox's network: the virtio-net device, the egress filter and the user-mode NAT. */
#ifndef SBX_NET_NET_H
#define SBX_NET_NET_H

#include <stddef.h>
#include <stdint.h>

#include "net/filter.h"
#include "virtio/virtio.h"

/* The virtual network every sandbox gets (host byte order where numeric). */
#define NET_GUEST_ADDR   "10.0.2.15"
#define NET_GATEWAY_ADDR "10.0.2.2"
#define NET_DNS_ADDR     "10.0.2.3"
#define NET_PREFIX       24
/* The link's MTU (virtio-net and libslirp's maximum): see lib/virtio/net.c. */
#define NET_MTU 65520
extern const uint8_t net_guest_mac[6];

struct net;

/* How the guest is attached: its addresses (host byte order) and MACs, and the backend. */
struct net_link {
    struct netfilter_addrs addrs;
    unsigned prefix;      /* the guest network's netmask length */
    const char *tap_name; /* NULL: the NAT; else the TAP device (owned by the caller) */
    int host_loopback;    /* NAT: the gateway reaches the host's 127.0.0.1 */
};

/* The NAT's link: NET_GUEST_ADDR and friends. */
void net_nat_link(struct net_link *l);

/* The filter of a sandbox's network, with its DNS names (`hosts`, "NAME=IPV4") and initial
   policy: made when the options are checked, so that a bad entry fails sbx_create() before
   anything boots. Returns 0 or SBX_EINVAL / SBX_ENOMEM with a message. */
int net_filter_new(struct netfilter **out, const struct net_link *l, const char *const *hosts,
                   const struct netfilter_policy *p, char *err, size_t errlen);

/* Creates the device (at mmio_base / gsi) with its backend, taking over `nf` (freed on failure
   too). *dev receives the device for the VMM's bus; it is owned by the caller (destroyed with
   virtio_dev_destroy, after net_destroy). Returns 0 or a negative SBX_E* code with a message
   in err (SBX_ENOTSUP: no libslirp or no /dev/net/tun; SBX_EACCES: the TAP device may not be
   used). */
int net_create(struct net **out, struct virtio_dev **dev, const struct devhost *host,
               struct netfilter *nf, const struct net_link *link, uint64_t mmio_base, uint32_t gsi,
               char *err, size_t errlen);

/* The link the network was created with. */
const struct net_link *net_get_link(const struct net *n);

/* Replaces the egress policy (any thread). */
int net_set_policy(struct net *n, const struct netfilter_policy *p, char *err, size_t errlen);

struct net_stats {
    struct virtio_net_stats dev;
    struct netfilter_stats filter;
    uint64_t dropped; /* refused before the filter: martians, socket cap */
};
void net_get_stats(struct net *n, struct net_stats *out);

/* Frees the NAT and its sockets. The device thread must no longer run. */
void net_destroy(struct net *n);

#endif
