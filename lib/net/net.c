// SPDX-License-Identifier: Apache-2.0
/*
 * A sandbox's network: the virtio-net device behind the egress filter, with one of two
 * backends, both driven by the sandbox's device thread:
 *  - the user-mode NAT (libslirp): the guest's connections become ordinary sockets of this
 *    process; no privileges, no host configuration;
 *  - a TAP device the host administrator created: frames go to and come from the host's
 *    network stack as they are (bridged or routed by the host).
 *
 * Locking: the backend and the filter are only touched with the device's lock held, so the
 * transmit path (a queue hook, lock held), the backend's sockets and timers (libevent
 * callbacks on the device thread, which take the lock) and policy updates (any thread) never
 * overlap. libslirp wants its sockets polled with the classic fill / poll / dispatch cycle;
 * the sockets it asks for are kept in one epoll set whose fd the device loop watches, and a
 * timer runs the TCP timers while connections exist.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <linux/if_tun.h>

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
/* Frames read from a TAP device per wake-up, so one busy sandbox cannot hog the thread. */
#define TAP_BATCH 64

struct pollent {
    int fd;
    uint32_t events; /* EPOLL* */
};

struct net {
    struct virtio_dev *dev;
    struct event_base *evbase;
    struct netfilter *nf;
    struct net_link link;
    uint64_t dropped;
    uint8_t reply[NETFILTER_REPLY_MAX];
    /* TAP backend */
    int tap_fd;
    struct event *tap_ev;
    /* NAT backend */
#ifdef SBX_HAVE_SLIRP
    Slirp *slirp;
#endif
    int epfd;
    struct event *ep_ev, *tick;
    /* What libslirp asked for in the last fill (index = its poll index) and what the epoll
       set holds (sorted by fd). */
    struct pollfd *pfd;
    unsigned npfd, pfd_cap;
    struct pollent *reg;
    unsigned nreg;
};

/* Frames that reach the guest: the filter learns from them. Device lock held. */
static void to_guest(struct net *n, const uint8_t *frame, size_t len)
{
    netfilter_ingress(n->nf, frame, len);
    virtio_net_receive(n->dev, frame, len);
}

/* The destination of an IPv4 frame (0 with *ip NULL when it is not one). */
static uint32_t ipv4_dst(const uint8_t *frame, size_t len, const uint8_t **ip)
{
    *ip = NULL;
    if (len < 34 || frame[12] != 0x08 || frame[13] != 0x00)
        return 0;
    *ip = frame + 14;
    return (uint32_t)frame[30] << 24 | (uint32_t)frame[31] << 16 | (uint32_t)frame[32] << 8 |
           frame[33];
}

/* ======================================================================================= */
/* The NAT (libslirp)                                                                       */
/* ======================================================================================= */
#ifdef SBX_HAVE_SLIRP

struct nat_timer {
    struct net *n;
    struct event *ev;
    SlirpTimerId id;
    void *cb_opaque;
};

/* ---- libslirp's callbacks (device lock held) ---- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    to_guest(opaque, buf, len);
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

/* Destinations libslirp would turn into the host itself or that no guest may address:
   "this network", the host's loopback, multicast and reserved space, and the virtual
   network's addresses other than the gateway and the DNS server (libslirp maps all of them
   to the host). */
static bool martian(const struct net *n, uint32_t dst)
{
    uint8_t top = dst >> 24;
    if (top == 0 || top == 127 || top >= 224)
        return true;
    if ((dst & 0xffffff00u) == (n->link.addrs.gateway & 0xffffff00u))
        return dst != n->link.addrs.gateway && dst != n->link.addrs.dns;
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

static void nat_input(struct net *n, const uint8_t *frame, size_t len)
{
    const uint8_t *ip;
    uint32_t dst = ipv4_dst(frame, len, &ip);
    if (ip && ((ip[0] >> 4) != 4 || (ip[0] & 15) < 5 || martian(n, dst) ||
               (n->nreg >= NET_MAX_SOCKETS && opens_socket(ip, len - 14)))) {
        n->dropped++;
        return;
    }
    slirp_input(n->slirp, frame, (int)len);
}

static int nat_start(struct net *n, char *err, size_t errlen)
{
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (n->epfd < 0) {
        snprintf(err, errlen, "network: epoll_create1: %s", strerror(errno));
        return SBX_EIO;
    }
    n->ep_ev = event_new(n->evbase, n->epfd, EV_READ | EV_PERSIST, on_sockets, n);
    n->tick = evtimer_new(n->evbase, on_sockets, n);
    if (!n->ep_ev || !n->tick || event_add(n->ep_ev, NULL) < 0) {
        snprintf(err, errlen, "network: cannot watch the NAT's sockets");
        return SBX_ENOMEM;
    }
    const struct netfilter_addrs *a = &n->link.addrs;
    uint32_t mask = n->link.prefix ? ~0u << (32 - n->link.prefix) : 0;
    SlirpConfig sc = {
        .version = 4,
        .in_enabled = true,
        .vnetwork = {htonl(a->gateway & mask)},
        .vnetmask = {htonl(mask)},
        .vhost = {htonl(a->gateway)},
        .vdhcp_start = {htonl(a->guest)},
        .vnameserver = {htonl(a->dns)},
        .disable_host_loopback = !n->link.host_loopback,
        .disable_dhcp = true, /* envd configures eth0 statically */
        .if_mtu = NET_MTU,
        .if_mru = NET_MTU,
    };
    n->slirp = slirp_new(&sc, &slirp_cbs, n);
    if (!n->slirp) {
        snprintf(err, errlen, "network: libslirp could not set up the NAT");
        return SBX_EIO;
    }
    return 0;
}

static void nat_stop(struct net *n)
{
    if (n->slirp)
        slirp_cleanup(n->slirp); /* closes its sockets, frees its timers */
    n->slirp = NULL;
}

#else /* !SBX_HAVE_SLIRP */

static void nat_input(struct net *n, const uint8_t *frame, size_t len)
{
}

static void resync(struct net *n)
{
}

static int nat_start(struct net *n, char *err, size_t errlen)
{
    snprintf(err, errlen,
             "this libsandbox was built without libslirp (Debian: libslirp-dev), so it has no "
             "NAT; use network = SBX_NET_NONE or SBX_NET_TAP");
    return SBX_ENOTSUP;
}

static void nat_stop(struct net *n)
{
}

#endif

/* ======================================================================================= */
/* A TAP device                                                                             */
/* ======================================================================================= */

static void on_tap(evutil_socket_t fd, short what, void *arg)
{
    struct net *n = arg;
    static __thread uint8_t frame[65536];
    pthread_mutex_lock(&n->dev->lock);
    for (int i = 0; i < TAP_BATCH; i++) {
        ssize_t r = read(fd, frame, sizeof(frame));
        if (r <= 0)
            break;
        to_guest(n, frame, (size_t)r);
    }
    pthread_mutex_unlock(&n->dev->lock);
}

static void tap_input(struct net *n, const uint8_t *frame, size_t len)
{
    /* A full device queue drops the frame, as a congested link would. */
    if (write(n->tap_fd, frame, len) != (ssize_t)len)
        n->dropped++;
}

/* Attaches to the TAP device `name` (which the host's administrator made, typically with
   `ip tuntap add NAME mode tap user USER`) and reads its MTU. */
static int tap_start(struct net *n, unsigned *mtu, char *err, size_t errlen)
{
    const char *name = n->link.tap_name;
    n->tap_fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (n->tap_fd < 0) {
        snprintf(err, errlen, "network: /dev/net/tun: %s", strerror(errno));
        return errno == ENOENT ? SBX_ENOTSUP : errno == EACCES ? SBX_EACCES : SBX_EIO;
    }
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(n->tap_fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        snprintf(err, errlen,
                 "network: attaching to TAP device %s: %s (create it first, for example with "
                 "`ip tuntap add %s mode tap user $USER`)",
                 name, strerror(e), name);
        return e == EPERM || e == EACCES ? SBX_EACCES : e == EBUSY ? SBX_EBUSY : SBX_EINVAL;
    }
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    *mtu = 1500;
    if (s >= 0 && ioctl(s, SIOCGIFMTU, &ifr) == 0 && ifr.ifr_mtu >= 576 && ifr.ifr_mtu <= 65535)
        *mtu = (unsigned)ifr.ifr_mtu;
    if (s >= 0)
        close(s);
    n->tap_ev = event_new(n->evbase, n->tap_fd, EV_READ | EV_PERSIST, on_tap, n);
    if (!n->tap_ev || event_add(n->tap_ev, NULL) < 0) {
        snprintf(err, errlen, "network: cannot watch TAP device %s", name);
        return SBX_ENOMEM;
    }
    return 0;
}

/* ======================================================================================= */
/* The device's backend and the life cycle                                                  */
/* ======================================================================================= */

static void be_send(void *ctx, const uint8_t *frame, size_t len)
{
    struct net *n = ctx;
    size_t rlen = 0;
    switch (netfilter_egress(n->nf, frame, len, n->reply, &rlen)) {
    case NETFILTER_PASS:
        if (n->link.tap_name)
            tap_input(n, frame, len);
        else
            nat_input(n, frame, len);
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
    struct net *n = ctx;
    if (!n->link.tap_name)
        resync(n);
}

void net_nat_link(struct net_link *l)
{
    struct in_addr x;
    memset(l, 0, sizeof(*l));
    inet_aton(NET_GUEST_ADDR, &x);
    l->addrs.guest = ntohl(x.s_addr);
    inet_aton(NET_GATEWAY_ADDR, &x);
    l->addrs.gateway = ntohl(x.s_addr);
    inet_aton(NET_DNS_ADDR, &x);
    l->addrs.dns = ntohl(x.s_addr);
    l->prefix = NET_PREFIX;
    memcpy(l->addrs.guest_mac, net_guest_mac, 6);
    /* libslirp's own MAC for its addresses: 52:55 followed by the gateway address. */
    const uint8_t gw_mac[6] = {0x52, 0x55, 10, 0, 2, 2};
    memcpy(l->addrs.gateway_mac, gw_mac, 6);
}

int net_filter_new(struct netfilter **out, const struct net_link *l, const char *const *hosts,
                   const struct netfilter_policy *p, char *err, size_t errlen)
{
    int r = netfilter_new(out, &l->addrs, hosts, err, errlen);
    if (r == 0 && (r = netfilter_set_policy(*out, p, err, errlen)) < 0) {
        netfilter_free(*out);
        *out = NULL;
    }
    return r;
}

int net_create(struct net **out, struct virtio_dev **dev, const struct devhost *host,
               struct netfilter *nf, const struct net_link *link, uint64_t mmio_base, uint32_t gsi,
               char *err, size_t errlen)
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
    n->link = *link;
    n->epfd = n->tap_fd = -1;
    n->evbase = host->evbase;
    unsigned mtu = NET_MTU;
    int r = link->tap_name ? tap_start(n, &mtu, err, errlen) : nat_start(n, err, errlen);
    if (r < 0)
        goto fail;
    struct net_backend be = {.send = be_send, .flush = be_flush, .ctx = n};
    r = virtio_net_create(dev, host, link->addrs.guest_mac, mtu, &be, mmio_base, gsi, err, errlen);
    if (r < 0)
        goto fail;
    n->dev = *dev;
    *out = n;
    return 0;

fail:
    net_destroy(n);
    return r;
}

const struct net_link *net_get_link(const struct net *n)
{
    return &n->link;
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
    nat_stop(n);
    if (n->ep_ev)
        event_free(n->ep_ev);
    if (n->tick)
        event_free(n->tick);
    if (n->epfd >= 0)
        close(n->epfd);
    if (n->tap_ev)
        event_free(n->tap_ev);
    if (n->tap_fd >= 0)
        close(n->tap_fd);
    netfilter_free(n->nf);
    free(n->pfd);
    free(n->reg);
    free(n);
}
