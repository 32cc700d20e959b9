// SPDX-License-Identifier: Apache-2.0
/*
 * A hostile guest program (tests/integration/test_hostile.c runs it as root inside a sandbox):
 * it attacks the VMM's virtio-mmio devices through /dev/mem, the way a replaced guest kernel
 * could, and reports on stdout what it did and what the device answered.
 *
 *   hostile registers SEED COUNT   nonsense of every width to every register of every device
 *   hostile ring-outside TYPE      a queue whose descriptor table lies outside guest RAM
 *   hostile desc-outside TYPE      a descriptor pointing outside guest RAM
 *   hostile desc-loop TYPE         two descriptors chained to each other
 *   hostile avail-jump TYPE        an available index 0x8000 ahead of the used one
 *   hostile huge-len TYPE          a descriptor of 4 GiB - 1 bytes
 *   hostile vsock-oversize         a vsock packet header announcing 2 GiB of payload
 *   hostile vsock-requests COUNT   COUNT connection requests to the host, each from a new port
 *   hostile vsock-connect COUNT    COUNT non-blocking AF_VSOCK connects to the host (real driver)
 *
 * TYPE is a virtio device id (2 block, 19 vsock, 1 net). The queue attacks take the device from
 * its driver (reset), set it up again with rings in low memory (the first MiB, which Linux
 * keeps for itself and never uses) and notify it. The program is static, needs no library in
 * the guest, and is written for a guest kernel with CONFIG_DEVMEM and no STRICT_DEVMEM.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>
#include <linux/vm_sockets.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEVS 32
#define WINDOW   0x200 /* registers and config space of one device */
#define QSIZE    16
/* Rings in low memory: descriptor table, available ring, used ring, then data buffers. */
#define LOW_BASE  0x60000UL
#define LOW_SIZE  0x10000UL
#define DESC_OFF  0x0000
#define AVAIL_OFF 0x1000
#define USED_OFF  0x2000
#define DATA_OFF  0x4000
#define OUTSIDE   0x7ff000000000ULL /* far beyond any sandbox's RAM */

struct dev {
    uint64_t base;
    volatile uint8_t *regs;
    uint32_t id;
};

static struct dev devs[MAX_DEVS];
static unsigned ndevs;
static int memfd = -1;
static uint8_t *low;

static void die(const char *what)
{
    printf("hostile: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint32_t rd32(struct dev *d, unsigned off)
{
    return *(volatile uint32_t *)(d->regs + off);
}

static void wr32(struct dev *d, unsigned off, uint32_t v)
{
    *(volatile uint32_t *)(d->regs + off) = v;
}

/* The devices the kernel was told about: virtio_mmio.device=SIZE@BASE:IRQ on its command line. */
static void find_devices(void)
{
    char cmdline[8192];
    FILE *f = fopen("/proc/cmdline", "r");
    if (!f || !fgets(cmdline, sizeof(cmdline), f))
        die("/proc/cmdline");
    fclose(f);
    memfd = open("/dev/mem", O_RDWR | O_SYNC);
    if (memfd < 0)
        die("/dev/mem");
    for (char *p = cmdline; (p = strstr(p, "virtio_mmio.device=")) && ndevs < MAX_DEVS; p++) {
        char *at = strchr(p, '@');
        if (!at)
            break;
        uint64_t base = strtoull(at + 1, NULL, 0);
        void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, (off_t)base);
        if (m == MAP_FAILED)
            die("mmap of a device window");
        devs[ndevs] = (struct dev){.base = base, .regs = m};
        devs[ndevs].id = rd32(&devs[ndevs], VIRTIO_MMIO_DEVICE_ID);
        printf("hostile: device %u at 0x%llx: id %u\n", ndevs, (unsigned long long)base,
               devs[ndevs].id);
        ndevs++;
    }
    low = mmap(NULL, LOW_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, (off_t)LOW_BASE);
    if (low == MAP_FAILED)
        die("mmap of low memory");
}

static struct dev *device(uint32_t id)
{
    for (unsigned i = 0; i < ndevs; i++)
        if (devs[i].id == id)
            return &devs[i];
    printf("hostile: no device with id %u\n", id);
    exit(2);
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Every register offset, every width, random values, interleaved with reads. */
static void registers(uint64_t seed, unsigned long count)
{
    uint64_t s = seed | 1;
    for (unsigned long i = 0; i < count; i++) {
        struct dev *d = &devs[xorshift(&s) % ndevs];
        uint64_t r = xorshift(&s);
        unsigned width = 1u << (r % 4), off = (unsigned)((r >> 8) % WINDOW) & ~(width - 1);
        uint64_t v = xorshift(&s);
        volatile uint8_t *p = d->regs + off;
        if ((r >> 40) % 4 == 0) {
            switch (width) {
            case 1:
                (void)*(volatile uint8_t *)p;
                break;
            case 2:
                (void)*(volatile uint16_t *)p;
                break;
            case 4:
                (void)*(volatile uint32_t *)p;
                break;
            default:
                (void)*(volatile uint64_t *)p;
                break;
            }
            continue;
        }
        switch (width) {
        case 1:
            *(volatile uint8_t *)p = (uint8_t)v;
            break;
        case 2:
            *(volatile uint16_t *)p = (uint16_t)v;
            break;
        case 4:
            *(volatile uint32_t *)p = (uint32_t)v;
            break;
        default:
            *(volatile uint64_t *)p = v;
            break;
        }
    }
    printf("hostile: %lu register accesses done\n", count);
}

/* Takes the device from its driver and sets up queue `q` with our rings (or with the
   descriptor table at `desc_gpa`). Returns the device status afterwards. */
static uint32_t setup_queue(struct dev *d, unsigned q, uint64_t desc_gpa)
{
    wr32(d, VIRTIO_MMIO_STATUS, 0);
    wr32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    wr32(d, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    wr32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr32(d, VIRTIO_MMIO_DRIVER_FEATURES, 1); /* VIRTIO_F_VERSION_1 (bit 32) */
    wr32(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr32(d, VIRTIO_MMIO_DRIVER_FEATURES, 0);
    wr32(d, VIRTIO_MMIO_STATUS,
         VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    memset(low, 0, DATA_OFF);
    wr32(d, VIRTIO_MMIO_QUEUE_SEL, q);
    wr32(d, VIRTIO_MMIO_QUEUE_NUM, QSIZE);
    wr32(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc_gpa);
    wr32(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc_gpa >> 32));
    wr32(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)(LOW_BASE + AVAIL_OFF));
    wr32(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
    wr32(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)(LOW_BASE + USED_OFF));
    wr32(d, VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
    wr32(d, VIRTIO_MMIO_QUEUE_READY, 1);
    wr32(d, VIRTIO_MMIO_STATUS,
         VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
             VIRTIO_CONFIG_S_DRIVER_OK);
    return rd32(d, VIRTIO_MMIO_STATUS);
}

static struct vring_desc *desc(unsigned i)
{
    return (struct vring_desc *)(low + DESC_OFF) + i;
}

static struct vring_avail *avail(void)
{
    return (struct vring_avail *)(low + AVAIL_OFF);
}

static struct vring_used *used(void)
{
    return (struct vring_used *)(low + USED_OFF);
}

/* Publishes chain head 0 with the available index `idx`, notifies queue `q` and waits a little
   for the device to act; prints what it did. */
static void kick(struct dev *d, unsigned q, uint16_t idx)
{
    avail()->ring[0] = 0;
    __atomic_store_n(&avail()->idx, idx, __ATOMIC_RELEASE);
    wr32(d, VIRTIO_MMIO_QUEUE_NOTIFY, q);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    printf("hostile: notified; device status 0x%x, used idx %u\n", rd32(d, VIRTIO_MMIO_STATUS),
           used()->idx);
}

/* The queue a request goes to: the block device's only queue, vsock's transmit queue. */
static unsigned request_queue(uint32_t type)
{
    return type == 19 ? 1 : type == 1 ? 1 : 0;
}

static void queue_attack(const char *what, uint32_t type)
{
    struct dev *d = device(type);
    unsigned q = request_queue(type);
    if (strcmp(what, "ring-outside") == 0) {
        uint32_t st = setup_queue(d, q, OUTSIDE);
        printf("hostile: descriptor table outside RAM; device status 0x%x\n", st);
        wr32(d, VIRTIO_MMIO_QUEUE_NOTIFY, q);
        return;
    }
    uint32_t st = setup_queue(d, q, LOW_BASE + DESC_OFF);
    printf("hostile: queue %u set up; device status 0x%x\n", q, st);
    uint64_t data = LOW_BASE + DATA_OFF;
    if (strcmp(what, "desc-outside") == 0) {
        *desc(0) =
            (struct vring_desc){.addr = data, .len = 16, .flags = VRING_DESC_F_NEXT, .next = 1};
        *desc(1) = (struct vring_desc){.addr = OUTSIDE, .len = 4096, .flags = VRING_DESC_F_WRITE};
        kick(d, q, 1);
    } else if (strcmp(what, "desc-loop") == 0) {
        *desc(0) =
            (struct vring_desc){.addr = data, .len = 16, .flags = VRING_DESC_F_NEXT, .next = 1};
        *desc(1) =
            (struct vring_desc){.addr = data, .len = 16, .flags = VRING_DESC_F_NEXT, .next = 0};
        kick(d, q, 1);
    } else if (strcmp(what, "avail-jump") == 0) {
        *desc(0) = (struct vring_desc){.addr = data, .len = 16};
        kick(d, q, 0x8000);
    } else if (strcmp(what, "huge-len") == 0) {
        *desc(0) =
            (struct vring_desc){.addr = data, .len = 16, .flags = VRING_DESC_F_NEXT, .next = 1};
        *desc(1) =
            (struct vring_desc){.addr = data, .len = 0xffffffffu, .flags = VRING_DESC_F_WRITE};
        kick(d, q, 1);
    } else {
        printf("hostile: unknown attack %s\n", what);
        exit(2);
    }
}

/* Packets on vsock's transmit queue, built by hand. */
static void vsock_packets(const char *what, unsigned long count)
{
    struct dev *d = device(19);
    uint32_t st = setup_queue(d, 1, LOW_BASE + DESC_OFF);
    printf("hostile: vsock transmit queue set up; device status 0x%x\n", st);
    struct virtio_vsock_hdr *h = (struct virtio_vsock_hdr *)(low + DATA_OFF);
    uint64_t guest_cid = *(volatile uint64_t *)(d->regs + VIRTIO_MMIO_CONFIG);
    if (strcmp(what, "vsock-oversize") == 0) {
        *h = (struct virtio_vsock_hdr){.src_cid = guest_cid,
                                       .dst_cid = VMADDR_CID_HOST,
                                       .src_port = 5000,
                                       .dst_port = 1024,
                                       .len = 0x80000000u,
                                       .type = VIRTIO_VSOCK_TYPE_STREAM,
                                       .op = VIRTIO_VSOCK_OP_RW,
                                       .buf_alloc = 65536};
        *desc(0) = (struct vring_desc){.addr = LOW_BASE + DATA_OFF, .len = sizeof(*h) + 64};
        kick(d, 1, 1);
        return;
    }
    /* Connection requests, each from a new source port, QSIZE at a time. */
    unsigned long sent = 0;
    uint16_t idx = 0;
    while (sent < count && !(rd32(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET)) {
        for (unsigned i = 0; i < QSIZE && sent < count; i++, sent++) {
            struct virtio_vsock_hdr *p = h + i;
            *p = (struct virtio_vsock_hdr){.src_cid = guest_cid,
                                           .dst_cid = VMADDR_CID_HOST,
                                           .src_port = (uint32_t)(10000 + sent),
                                           .dst_port = 1024 + (uint32_t)(sent % 4096),
                                           .type = VIRTIO_VSOCK_TYPE_STREAM,
                                           .op = VIRTIO_VSOCK_OP_REQUEST,
                                           .buf_alloc = 65536};
            *desc(i) = (struct vring_desc){.addr = LOW_BASE + DATA_OFF + i * sizeof(*p),
                                           .len = sizeof(*p)};
            avail()->ring[idx % QSIZE] = (uint16_t)i;
            idx++;
        }
        __atomic_store_n(&avail()->idx, idx, __ATOMIC_RELEASE);
        wr32(d, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
        /* Wait until the device consumed them (or gave up). */
        for (int w = 0; w < 1000 && used()->idx != idx; w++) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    printf("hostile: %lu connection requests sent; device status 0x%x, used idx %u\n", sent,
           rd32(d, VIRTIO_MMIO_STATUS), used()->idx);
}

/* Through the real driver: many non-blocking connects to the host's ports. */
static void vsock_connects(unsigned long count)
{
    unsigned long made = 0, refused = 0;
    for (unsigned long i = 0; i < count; i++) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            refused++;
            continue;
        }
        struct sockaddr_vm sa = {.svm_family = AF_VSOCK,
                                 .svm_cid = VMADDR_CID_HOST,
                                 .svm_port = 1024 + (unsigned)(i % 60000)};
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EINPROGRESS)
            made++;
        else
            refused++;
        close(fd);
    }
    printf("hostile: %lu vsock connects started, %lu failed at once\n", made, refused);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: hostile ATTACK [ARGS]\n");
        return 2;
    }
    const char *what = argv[1];
    if (strcmp(what, "vsock-connect") == 0)
        vsock_connects(argc > 2 ? strtoul(argv[2], NULL, 0) : 10000);
    else
        find_devices();
    if (strcmp(what, "vsock-connect") == 0)
        ;
    else if (strcmp(what, "registers") == 0)
        registers(argc > 2 ? strtoull(argv[2], NULL, 0) : 1,
                  argc > 3 ? strtoul(argv[3], NULL, 0) : 100000);
    else if (strcmp(what, "vsock-oversize") == 0)
        vsock_packets(what, 1);
    else if (strcmp(what, "vsock-requests") == 0)
        vsock_packets(what, argc > 2 ? strtoul(argv[2], NULL, 0) : 5000);
    else if (argc > 2)
        queue_attack(what, (uint32_t)strtoul(argv[2], NULL, 0));
    else {
        fprintf(stderr, "hostile: %s needs a device type\n", what);
        return 2;
    }
    printf("hostile: done\n");
    return 0;
}
