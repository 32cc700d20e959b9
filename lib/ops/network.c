// SPDX-License-Identifier: Apache-2.0
/* The networking part of the API: options, policy updates and counters (docs/networking.md). */
#include <arpa/inet.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "isolate/isolate.h"
#include "net/net.h"

static void to_filter_policy(const sbx_net_policy *p, struct netfilter_policy *out)
{
    out->allow_internet = !p->block_internet;
    out->allow_out = p->allow_out;
    out->deny_out = p->deny_out;
}

static int parse_ip(const char *s, uint32_t *out)
{
    struct in_addr a;
    if (!s || inet_pton(AF_INET, s, &a) != 1)
        return -1;
    *out = ntohl(a.s_addr);
    return 0;
}

/* The TAP options: the device and the guest's addresses on its network. */
static int tap_link(struct sbx *sb, const sbx_options *o, struct net_link *l)
{
    memset(l, 0, sizeof(*l));
    if (!o->tap_name || !*o->tap_name || strlen(o->tap_name) >= IFNAMSIZ)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.tap_name must name a TAP device (1..%d bytes) with "
                          "network = SBX_NET_TAP",
                          IFNAMSIZ - 1);
    char addr[32];
    const char *slash = o->tap_address ? strchr(o->tap_address, '/') : NULL;
    char *end = NULL;
    unsigned long prefix = slash ? strtoul(slash + 1, &end, 10) : 0;
    if (!slash || (size_t)(slash - o->tap_address) >= sizeof(addr) || !end || *end || prefix < 1 ||
        prefix > 30)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.tap_address must be IPV4/PREFIX (prefix 1..30), not \"%s\"",
                          o->tap_address ? o->tap_address : "(null)");
    memcpy(addr, o->tap_address, (size_t)(slash - o->tap_address));
    addr[slash - o->tap_address] = 0;
    if (parse_ip(addr, &l->addrs.guest) < 0)
        return sbx_seterr(sb, SBX_EINVAL, "options.tap_address: \"%s\" is not an IPv4 address",
                          addr);
    if (parse_ip(o->tap_gateway, &l->addrs.gateway) < 0)
        return sbx_seterr(sb, SBX_EINVAL, "options.tap_gateway must be an IPv4 address");
    l->addrs.dns = l->addrs.gateway;
    if (o->tap_dns && parse_ip(o->tap_dns, &l->addrs.dns) < 0)
        return sbx_seterr(sb, SBX_EINVAL, "options.tap_dns must be an IPv4 address");
    uint32_t mask = ~0u << (32 - prefix);
    if ((l->addrs.gateway & mask) != (l->addrs.guest & mask) || l->addrs.gateway == l->addrs.guest)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.tap_gateway is not another address of the guest's network %s",
                          o->tap_address);
    l->prefix = (unsigned)prefix;
    memcpy(l->addrs.guest_mac, net_guest_mac, 6);
    /* Only the source of the answers the filter makes itself (refusals, `hosts` names). */
    const uint8_t gw_mac[6] = {0x52, 0x55, 0, 0, 0, 1};
    memcpy(l->addrs.gateway_mac, gw_mac, 6);
    if (!(sb->tap_name = strdup(o->tap_name)))
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    l->tap_name = sb->tap_name;
    return 0;
}

int network_options(struct sbx *sb, const sbx_options *o)
{
    struct netfilter_policy p;
    char err[512];
    if (o->version < 2) {
        sb->network = SBX_NET_NAT; /* what version 1 callers get: the default */
        static const sbx_net_policy open = {0, NULL, NULL};
        to_filter_policy(&open, &p);
        net_nat_link(&sb->link);
        int r = net_filter_new(&sb->nf, &sb->link, NULL, &p, err, sizeof(err));
        return r < 0 ? sbx_seterr(sb, r, "%s", err) : 0;
    }
    if (o->network != SBX_NET_NAT && o->network != SBX_NET_NONE && o->network != SBX_NET_TAP)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.network is %d; use SBX_NET_NAT (0), SBX_NET_NONE (1) or "
                          "SBX_NET_TAP (2)",
                          o->network);
    sb->network = o->network;
    if (o->network != SBX_NET_TAP &&
        (o->tap_name || o->tap_address || o->tap_gateway || o->tap_dns))
        return sbx_seterr(sb, SBX_EINVAL, "options.tap_* are set, yet network is not SBX_NET_TAP");
    if (o->network == SBX_NET_NONE) {
        if (o->hosts || o->host_loopback || o->net_policy.block_internet ||
            o->net_policy.allow_out || o->net_policy.deny_out)
            return sbx_seterr(sb, SBX_EINVAL,
                              "options.network is SBX_NET_NONE, yet hosts, host_loopback or "
                              "net_policy are set: they need a network");
        return 0;
    }
    if (o->network == SBX_NET_TAP) {
        if (o->host_loopback)
            return sbx_seterr(sb, SBX_EINVAL, "options.host_loopback is for the NAT only");
        int r = tap_link(sb, o, &sb->link);
        if (r < 0)
            return r;
    } else {
        net_nat_link(&sb->link);
        sb->link.host_loopback = o->host_loopback != 0;
    }
    to_filter_policy(&o->net_policy, &p);
    int r = net_filter_new(&sb->nf, &sb->link, o->hosts, &p, err, sizeof(err));
    return r < 0 ? sbx_seterr(sb, r, "options: %s", err) : 0;
}

void network_free(struct sbx *sb)
{
    netfilter_free(sb->nf);
    sb->nf = NULL;
    free(sb->tap_name);
    sb->tap_name = NULL;
}

int sbx_network_update(sbx *sb, const sbx_net_policy *policy)
{
    if (!sb)
        return SBX_EINVAL;
    if (!policy)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_network_update: policy is NULL");
    int st = atomic_load(&sb->state);
    if (st != SBX_STATE_RUNNING)
        return sbx_seterr(sb, st == SBX_STATE_FAILED ? SBX_EDEAD : SBX_ESTATE,
                          "sbx_network_update: the sandbox is not running");
    if (sb->isolated && sb->network != SBX_NET_NONE)
        return iso_network_update(sb, policy);
    if (!sb->net)
        return sbx_seterr(sb, SBX_ENOTSUP, "sbx_network_update: the sandbox has no network");
    struct netfilter_policy p;
    to_filter_policy(policy, &p);
    char err[512];
    int r = net_set_policy(sb->net, &p, err, sizeof(err));
    return r < 0 ? sbx_seterr(sb, r, "sbx_network_update: %s", err) : 0;
}

int sbx_network_stats(sbx *sb, sbx_net_stats *st)
{
    if (!sb)
        return SBX_EINVAL;
    if (!st)
        return sbx_seterr(sb, SBX_EINVAL, "sbx_network_stats: st is NULL");
    memset(st, 0, sizeof(*st));
    if (sb->isolated && sb->network != SBX_NET_NONE)
        return iso_network_stats(sb, st);
    if (!sb->net)
        return sbx_seterr(sb, SBX_ENOTSUP, "sbx_network_stats: the sandbox has no network");
    struct net_stats s;
    net_get_stats(sb->net, &s);
    st->tx_frames = s.dev.tx_frames;
    st->tx_bytes = s.dev.tx_bytes;
    st->rx_frames = s.dev.rx_frames;
    st->rx_bytes = s.dev.rx_bytes;
    st->blocked = s.filter.rejected;
    st->dropped = s.dev.tx_dropped + s.dev.rx_dropped + s.dropped + s.filter.dropped;
    return 0;
}
