// SPDX-License-Identifier: Apache-2.0
/* envd: the guest's network interfaces: loopback at boot, eth0 as the host's Configure says. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envd.h"

/* Sets IFF_UP on `name`. Returns 0 or an errno. */
static int link_up(int s, const char *name)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return errno;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr) < 0 ? errno : 0;
}

void net_loopback_up(void)
{
    /* The kernel gives lo 127.0.0.1/8 (and ::1) itself when it comes up. */
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        log_msg("loopback: socket: %s", strerror(errno));
        return;
    }
    int e = link_up(s, "lo");
    if (e)
        log_msg("loopback: %s", strerror(e));
    close(s);
}

/* The interface whose MAC address is `mac` (6 bytes); "" if none. */
static void find_by_mac(int s, const uint8_t *mac, char *name, size_t cap)
{
    name[0] = 0;
    struct if_nameindex *all = if_nameindex();
    for (struct if_nameindex *i = all; i && i->if_index; i++) {
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", i->if_name);
        if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0 && !memcmp(ifr.ifr_hwaddr.sa_data, mac, 6)) {
            snprintf(name, cap, "%s", i->if_name);
            break;
        }
    }
    if (all)
        if_freenameindex(all);
}

static int set_addr(int s, const char *ifname, unsigned long req, struct in_addr a)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    sin->sin_family = AF_INET;
    sin->sin_addr = a;
    return ioctl(s, req, &ifr) < 0 ? errno : 0;
}

static int default_route(int s, const char *ifname, struct in_addr gw)
{
    struct rtentry rt = {0};
    struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
    struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
    struct sockaddr_in *via = (struct sockaddr_in *)&rt.rt_gateway;
    dst->sin_family = mask->sin_family = via->sin_family = AF_INET;
    via->sin_addr = gw;
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    rt.rt_dev = (char *)ifname;
    if (ioctl(s, SIOCADDRT, &rt) < 0 && errno != EEXIST)
        return errno;
    return 0;
}

/* Replaces /etc/resolv.conf (a symlink, as systemd-resolved leaves it, is replaced too). */
static int write_resolv(struct in_addr dns)
{
    char text[64];
    int n = snprintf(text, sizeof(text), "nameserver %s\n", inet_ntoa(dns));
    const char *tmp = "/etc/.resolv.conf.envd";
    mkdir("/etc", 0755); /* minimal root filesystems may lack it */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    int e = write(fd, text, (size_t)n) == n ? 0 : (errno ? errno : EIO);
    if (close(fd) < 0 && !e)
        e = errno;
    if (!e && rename(tmp, "/etc/resolv.conf") < 0)
        e = errno;
    if (e)
        unlink(tmp);
    return e;
}

/* The virtual network is IPv4 only: without IPv6 on the interface the guest sends no router
   solicitations and programs do not try IPv6 addresses first. Best effort. */
static void no_ipv6(const char *ifname)
{
    char path[96];
    snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (write(fd, "1", 1) != 1)
        log_msg("%s: %s", path, strerror(errno));
    close(fd);
}

int net_configure(const Sbx__Agent__NetConfig *nc, char *err, size_t cap)
{
    struct in_addr addr, gw, dns;
    if (!inet_aton(nc->address, &addr) || !inet_aton(nc->gateway, &gw) ||
        !inet_aton(nc->dns, &dns) || nc->prefix < 1 || nc->prefix > 30 || nc->mac.len != 6) {
        snprintf(err, cap, "network configuration: malformed address, prefix or MAC");
        return EINVAL;
    }
    struct in_addr mask = {htonl(~0u << (32 - nc->prefix))};
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, cap, "network configuration: socket: %s", strerror(errno));
        return errno;
    }
    char ifname[IF_NAMESIZE];
    find_by_mac(s, nc->mac.data, ifname, sizeof(ifname));
    const char *step = "no interface has the sandbox's MAC address";
    int e = ENODEV;
    if (ifname[0]) {
        no_ipv6(ifname);
        if ((e = set_addr(s, ifname, SIOCSIFADDR, addr)))
            step = "setting the address";
        else if ((e = set_addr(s, ifname, SIOCSIFNETMASK, mask)))
            step = "setting the netmask";
        else if ((e = link_up(s, ifname)))
            step = "bringing the link up";
        else if ((e = default_route(s, ifname, gw)))
            step = "adding the default route";
        else if ((e = write_resolv(dns)))
            step = "writing /etc/resolv.conf";
    }
    close(s);
    if (e)
        snprintf(err, cap, "network configuration: %s%s%s: %s", step, ifname[0] ? " of " : "",
                 ifname, strerror(e));
    return e;
}
