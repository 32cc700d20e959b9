// SPDX-License-Identifier: Apache-2.0
/*
 * A sandbox's network: the virtio-net device behind the egress filter and a user-mode NAT
 * (libslirp), all driven by the sandbox's device thread.
 *
 * Locking: libslirp and the filter are only touched with the device's lock held, so the
 * transmit path (a queue hook, lock held), the NAT's sockets and timers (libevent callbacks on
 * the device thread, which take the lock) and policy updates (any thread) never overlap.
 * libslirp wants its sockets polled with the classic fill / poll / dispatch cycle; the sockets
 * it asks for are kept in one epoll set whose fd the device loop watches, and a timer runs the
 * TCP timers while connections exist.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "net/net.h"
#include "sandbox.h"
#include "virtio/mmio.h"

#ifdef SBX_HAVE_SLIRP
#include <libslirp.h>
#endif

const uint8_t net_guest_mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

/* Host sockets one sandbox may hold through the NAT (its connections and UDP flows): beyond
   this, new connections from the guest are dropped, so a guest cannot exhaust the process's
   file descriptors. */
#define NET_MAX_SOCKETS 512

#ifdef SBX_HAVE_SLIRP

struct nat_timer {
    struct net *n;
    struct event *ev;
    SlirpTimerId id;
    void *cb_opaque;
};

struct pollent {
    int fd;
    uint32_t events; /* EPOLL* */
};

struct net {
    struct virtio_dev *dev;
    struct event_base *evbase;
    struct netfilter *nf;
    struct netfilter_addrs addrs;
    Slirp *slirp;
    int epfd;
    struct event *ep_ev, *tick;
    /* What libslirp asked for in the last fill (index = its poll index) and what the epoll
       set holds (sorted by fd). */
    struct pollfd *pfd;
    unsigned npfd, pfd_cap;
    struct pollent *reg;
    unsigned nreg, reg_cap;
    uint64_t dropped;
    uint8_t reply[NETFILTER_REPLY_MAX];
};

/* ---- libslirp's callbacks (device lock held) ---- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    struct net *n = opaque;
    netfilter_ingress(n->nf, buf, len);
    virtio_net_receive(n->dev, buf, len);
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    (void)msg; /* malformed guest traffic: libslirp dropped it; counted nowhere better */
    ((struct net *)opaque)->dropped++;
}

static int64_t cb_clock_ns(void *opaque)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void resync(struct net *n);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct nat_timer *t = arg;
    struct net *n = t->n;
    pthread_mutex_lock(&n->dev->lock);
    slirp_handle_timer(n->slirp, t->id, t->cb_opaque);
    resync(n);
    pthread_mutex_unlock(&n->dev->lock);
}

static void *cb_timer_new(SlirpTimerId id, void *cb_opaque, void *opaque)
{
    struct nat_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->n = opaque;
    t->id = id;
    t->cb_opaque = cb_opaque;
    if (!(t->ev = evtimer_new(t->n->evbase, on_timer, t))) {
        free(t);
        return NULL;
    }
    return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
    struct nat_timer *t = timer;
    if (!t)
        return;
    event_free(t->ev);
    free(t);
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    struct nat_timer *t = timer;
    if (!t)
        return;
    int64_t left = expire_ms - cb_clock_ns(opaque) / 1000000;
    if (left < 0)
        left = 0;
    struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
    evtimer_add(t->ev, &tv);
}

static void cb_no_op_fd(int fd, void *opaque)
{
    /* Sockets are polled through slirp_pollfds_fill(). */
}

static void cb_notify(void *opaque)
{
    /* Only guest forwards (not used) wait for this. */
}

static const SlirpCb slirp_cbs = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_ns,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_no_op_fd,
    .unregister_poll_fd = cb_no_op_fd,
    .notify = cb_notify,
    .timer_new_opaque = cb_timer_new,
};

/* ---- polling the NAT's sockets ---- */

static int add_poll(int fd, int events, void *opaque)
{
    struct net *n = opaque;
    if (n->npfd == n->pfd_cap) {
        unsigned cap = n->pfd_cap ? n->pfd_cap * 2 : 16;
        struct pollfd *p = realloc(n->pfd, cap * sizeof(*p));
        if (!p)
            return -1; /* libslirp then skips this socket for this round */
        n->pfd = p;
        n->pfd_cap = cap;
    }
    short ev = 0;
    if (events & SLIRP_POLL_IN)
        ev |= POLLIN;
    if (events & SLIRP_POLL_OUT)
        ev |= POLLOUT;
    if (events & SLIRP_POLL_PRI)
        ev |= POLLPRI;
    n->pfd[n->npfd] = (struct pollfd){.fd = fd, .events = ev};
    return (int)n->npfd++;
}

static int get_revents(int idx, void *opaque)
{
    struct net *n = opaque;
    if (idx < 0 || (unsigned)idx >= n->npfd)
        return 0;
    short re = n->pfd[idx].revents;
    int r = 0;
    if (re & POLLIN)
        r |= SLIRP_POLL_IN;
    if (re & POLLOUT)
        r |= SLIRP_POLL_OUT;
    if (re & POLLPRI)
        r |= SLIRP_POLL_PRI;
    if (re & (POLLERR | POLLNVAL))
        r |= SLIRP_POLL_ERR;
    if (re & POLLHUP)
        r |= SLIRP_POLL_HUP;
    return r;
}

static int cmp_pollent(const void *a, const void *b)
{
    int x = ((const struct pollent *)a)->fd, y = ((const struct pollent *)b)->fd;
    return (x > y) - (x < y);
}

static uint32_t epoll_bits(short ev)
{
    return (ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0) |
           (ev & POLLPRI ? EPOLLPRI : 0);
}

static void ep_set(struct net *n, int op, int fd, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.fd = fd};
    if (epoll_ctl(n->epfd, op, fd, &e) == 0)
        return;
    /* libslirp closed the socket (the kernel dropped it from the set) and a new one took its
       number: register it afresh. */
    if (op == EPOLL_CTL_MOD && errno == ENOENT)
        epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &e);
    else if (op == EPOLL_CTL_ADD && errno == EEXIST)
        epoll_ctl(n->epfd, EPOLL_CTL_MOD, fd, &e);
}

/* Asks libslirp which sockets it wants polled for what, and brings the epoll set and the TCP
   timer in line with that. */
static void resync(struct net *n)
{
    n->npfd = 0;
    uint32_t timeout = UINT32_MAX;
    slirp_pollfds_fill(n->slirp, &timeout, add_poll, n);

    struct pollent *want = malloc((n->npfd ? n->npfd : 1) * sizeof(*want));
    if (!want)
        return; /* keep the old set; the next round retries */
    unsigned nw = 0;
    for (unsigned i = 0; i < n->npfd; i++)
        want[nw++] = (struct pollent){n->pfd[i].fd, epoll_bits(n->pfd[i].events)};
    qsort(want, nw, sizeof(*want), cmp_pollent);
    /* Merge duplicates (one fd asked for twice). */
    unsigned m = 0;
    for (unsigned i = 0; i < nw; i++) {
        if (m && want[m - 1].fd == want[i].fd)
            want[m - 1].events |= want[i].events;
        else
            want[m++] = want[i];
    }
    nw = m;

    unsigned i = 0, j = 0;
    while (i < n->nreg || j < nw) {
        if (j == nw || (i < n->nreg && n->reg[i].fd < want[j].fd)) {
            epoll_ctl(n->epfd, EPOLL_CTL_DEL, n->reg[i].fd, NULL); /* may be closed already */
            i++;
        } else if (i == n->nreg || want[j].fd < n->reg[i].fd) {
            ep_set(n, EPOLL_CTL_ADD, want[j].fd, want[j].events);
            j++;
        } else {
            if (n->reg[i].events != want[j].events)
                ep_set(n, EPOLL_CTL_MOD, want[j].fd, want[j].events);
            i++;
            j++;
        }
    }
    free(n->reg);
    n->reg = want;
    n->nreg = nw;

    /* libslirp caps the timeout at 1 s; with no socket there is nothing to time. */
    if (n->npfd && timeout != UINT32_MAX) {
        struct timeval tv = {.tv_sec = timeout / 1000, .tv_usec = (timeout % 1000) * 1000};
        evtimer_add(n->tick, &tv);
    } else {
        evtimer_del(n->tick);
    }
}

static void on_sockets(evutil_socket_t fd, short what, void *arg)
{
    struct net *n = arg;
    pthread_mutex_lock(&n->dev->lock);
    int r = n->npfd ? poll(n->pfd, n->npfd, 0) : 0;
    slirp_pollfds_poll(n->slirp, r < 0, get_revents, n);
    resync(n);
    pthread_mutex_unlock(&n->dev->lock);
}

/* ---- frames from the guest (device lock held) ---- */

/* Destinations libslirp would turn into the host itself or that no guest may address:
   "this network", the host's loopback, multicast and reserved space, and the virtual
   network's addresses other than the gateway and the DNS server (libslirp maps all of them
   to the host). */
static bool martian(const struct net *n, uint32_t dst)
{
    uint8_t top = dst >> 24;
    if (top == 0 || top == 127 || top >= 224)
        return true;
    if ((dst & 0xffffff00u) == (n->addrs.gateway & 0xffffff00u))
        return dst != n->addrs.gateway && dst != n->addrs.dns;
    return false;
}

/* Whether the frame would make libslirp open a new host socket: a TCP SYN or any UDP. */
static bool opens_socket(const uint8_t *ip, size_t len)
{
    size_t ihl = (size_t)(ip[0] & 15) * 4;
    if (ip[9] == IPPROTO_UDP)
        return true;
    return ip[9] == IPPROTO_TCP && len >= ihl + 14 && (ip[ihl + 13] & 0x12) == 0x02;
}

static void be_send(void *ctx, const uint8_t *frame, size_t len)
{
    struct net *n = ctx;
    if (len >= 34 && frame[12] == 0x08 && frame[13] == 0x00) {
        const uint8_t *ip = frame + 14;
        uint32_t dst =
            (uint32_t)ip[16] << 24 | (uint32_t)ip[17] << 16 | (uint32_t)ip[18] << 8 | ip[19];
        if ((ip[0] >> 4) != 4 || (ip[0] & 15) < 5 || martian(n, dst) ||
            (n->nreg >= NET_MAX_SOCKETS && opens_socket(ip, len - 14))) {
            n->dropped++;
            return;
        }
    }
    size_t rlen = 0;
    switch (netfilter_egress(n->nf, frame, len, n->reply, &rlen)) {
    case NETFILTER_PASS:
        slirp_input(n->slirp, frame, (int)len);
        break;
    case NETFILTER_REPLY:
        virtio_net_receive(n->dev, n->reply, rlen);
        break;
    case NETFILTER_DROP:
        break;
    }
}

static void be_flush(void *ctx)
{
    resync(ctx);
}

/* ---- life cycle ---- */

static void std_addrs(struct netfilter_addrs *a)
{
    struct in_addr x;
    memset(a, 0, sizeof(*a));
    inet_aton(NET_GUEST_ADDR, &x);
    a->guest = ntohl(x.s_addr);
    inet_aton(NET_GATEWAY_ADDR, &x);
    a->gateway = ntohl(x.s_addr);
    inet_aton(NET_DNS_ADDR, &x);
    a->dns = ntohl(x.s_addr);
    memcpy(a->guest_mac, net_guest_mac, 6);
    /* libslirp's own MAC for its addresses: 52:55 followed by the gateway address. */
    const uint8_t gw_mac[6] = {0x52, 0x55, 10, 0, 2, 2};
    memcpy(a->gateway_mac, gw_mac, 6);
}

int net_filter_new(struct netfilter **out, const char *const *hosts,
                   const struct netfilter_policy *p, char *err, size_t errlen)
{
    struct netfilter_addrs a;
    std_addrs(&a);
    int r = netfilter_new(out, &a, hosts, err, errlen);
    if (r == 0 && (r = netfilter_set_policy(*out, p, err, errlen)) < 0) {
        netfilter_free(*out);
        *out = NULL;
    }
    return r;
}

int net_create(struct net **out, struct virtio_dev **dev, const struct devhost *host,
               struct netfilter *nf, int host_loopback, uint64_t mmio_base, uint32_t gsi, char *err,
               size_t errlen)
{
    *out = NULL;
    *dev = NULL;
    struct net *n = calloc(1, sizeof(*n));
    if (!n) {
        netfilter_free(nf);
        snprintf(err, errlen, "network: out of memory");
        return SBX_ENOMEM;
    }
    n->nf = nf;
    n->epfd = -1;
    n->evbase = host->evbase;
    std_addrs(&n->addrs);
    int r = SBX_EIO;
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (n->epfd < 0) {
        snprintf(err, errlen, "network: epoll_create1: %s", strerror(errno));
        goto fail;
    }
    n->ep_ev = event_new(n->evbase, n->epfd, EV_READ | EV_PERSIST, on_sockets, n);
    n->tick = evtimer_new(n->evbase, on_sockets, n);
    if (!n->ep_ev || !n->tick || event_add(n->ep_ev, NULL) < 0) {
        snprintf(err, errlen, "network: cannot watch the NAT's sockets");
        r = SBX_ENOMEM;
        goto fail;
    }

    SlirpConfig sc = {
        .version = 4,
        .in_enabled = true,
        .vnetwork = {htonl(n->addrs.gateway & 0xffffff00u)},
        .vnetmask = {htonl(0xffffff00u)},
        .vhost = {htonl(n->addrs.gateway)},
        .vdhcp_start = {htonl(n->addrs.guest)},
        .vnameserver = {htonl(n->addrs.dns)},
        .disable_host_loopback = !host_loopback,
        .disable_dhcp = true, /* envd configures eth0 statically */
        .if_mtu = NET_MTU,
        .if_mru = NET_MTU,
    };
    n->slirp = slirp_new(&sc, &slirp_cbs, n);
    if (!n->slirp) {
        snprintf(err, errlen, "network: libslirp could not set up the NAT");
        goto fail;
    }

    struct net_backend be = {.send = be_send, .flush = be_flush, .ctx = n};
    r = virtio_net_create(dev, host, net_guest_mac, NET_MTU, &be, mmio_base, gsi, err, errlen);
    if (r < 0)
        goto fail;
    n->dev = *dev;
    *out = n;
    return 0;

fail:
    net_destroy(n);
    return r;
}

int net_set_policy(struct net *n, const struct netfilter_policy *p, char *err, size_t errlen)
{
    pthread_mutex_lock(&n->dev->lock);
    int r = netfilter_set_policy(n->nf, p, err, errlen);
    pthread_mutex_unlock(&n->dev->lock);
    return r;
}

void net_get_stats(struct net *n, struct net_stats *out)
{
    virtio_net_stats(n->dev, &out->dev);
    pthread_mutex_lock(&n->dev->lock);
    netfilter_stats(n->nf, &out->filter);
    out->dropped = n->dropped;
    pthread_mutex_unlock(&n->dev->lock);
}

void net_destroy(struct net *n)
{
    if (!n)
        return;
    if (n->slirp)
        slirp_cleanup(n->slirp); /* closes its sockets, frees its timers */
    if (n->ep_ev)
        event_free(n->ep_ev);
    if (n->tick)
        event_free(n->tick);
    if (n->epfd >= 0)
        close(n->epfd);
    netfilter_free(n->nf);
    free(n->pfd);
    free(n->reg);
    free(n);
}

#else /* !SBX_HAVE_SLIRP */

struct net {
    int unused;
};

int net_filter_new(struct netfilter **out, const char *const *hosts,
                   const struct netfilter_policy *p, char *err, size_t errlen)
{
    *out = NULL;
    snprintf(err, errlen,
             "this libsandbox was built without libslirp (Debian: libslirp-dev), so it has no "
             "NAT; create the sandbox with network = SBX_NET_NONE");
    return SBX_ENOTSUP;
}

int net_create(struct net **out, struct virtio_dev **dev, const struct devhost *host,
               struct netfilter *nf, int host_loopback, uint64_t mmio_base, uint32_t gsi, char *err,
               size_t errlen)
{
    return SBX_ENOTSUP; /* unreachable: net_filter_new() already failed */
}

int net_set_policy(struct net *n, const struct netfilter_policy *p, char *err, size_t errlen)
{
    return SBX_ENOTSUP;
}

void net_get_stats(struct net *n, struct net_stats *out)
{
    memset(out, 0, sizeof(*out));
}

void net_destroy(struct net *n)
{
}

#endif
