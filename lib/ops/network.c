// SPDX-License-Identifier: Apache-2.0
/* The networking part of the API: options, policy updates and counters (docs/networking.md). */
#include <string.h>

#include "internal.h"
#include "net/net.h"

static void to_filter_policy(const sbx_net_policy *p, struct netfilter_policy *out)
{
    out->allow_internet = !p->block_internet;
    out->allow_out = p->allow_out;
    out->deny_out = p->deny_out;
}

int network_options(struct sbx *sb, const sbx_options *o)
{
    if (o->version < 2) {
        sb->network = SBX_NET_NAT; /* what version 1 callers got: the default */
        static const sbx_net_policy open = {0, NULL, NULL};
        struct netfilter_policy p;
        to_filter_policy(&open, &p);
        char err[512];
        int r = net_filter_new(&sb->nf, NULL, &p, err, sizeof(err));
        return r < 0 ? sbx_seterr(sb, r, "%s", err) : 0;
    }
    if (o->network != SBX_NET_NAT && o->network != SBX_NET_NONE)
        return sbx_seterr(sb, SBX_EINVAL,
                          "options.network is %d; use SBX_NET_NAT (0) or SBX_NET_NONE (1)",
                          o->network);
    sb->network = o->network;
    sb->host_loopback = o->host_loopback != 0;
    if (o->network == SBX_NET_NONE) {
        if (o->hosts || o->host_loopback || o->net_policy.block_internet ||
            o->net_policy.allow_out || o->net_policy.deny_out)
            return sbx_seterr(sb, SBX_EINVAL,
                              "options.network is SBX_NET_NONE, yet hosts, host_loopback or "
                              "net_policy are set: they need a network");
        return 0;
    }
    struct netfilter_policy p;
    to_filter_policy(&o->net_policy, &p);
    char err[512];
    int r = net_filter_new(&sb->nf, o->hosts, &p, err, sizeof(err));
    return r < 0 ? sbx_seterr(sb, r, "options: %s", err) : 0;
}

void network_free(struct sbx *sb)
{
    netfilter_free(sb->nf);
    sb->nf = NULL;
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
