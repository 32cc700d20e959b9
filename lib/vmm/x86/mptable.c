// SPDX-License-Identifier: Apache-2.0
/* The Intel MultiProcessor table (MP spec 1.4) that tells the guest its CPUs and IRQ wiring. */
#include <stdint.h>
#include <string.h>

#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"

struct mpf { /* floating pointer structure */
    char signature[4];
    uint32_t config;
    uint8_t length, spec, checksum, feature[5];
} __attribute__((packed));

struct mpc { /* configuration table header */
    char signature[4];
    uint16_t length;
    uint8_t spec, checksum;
    char oem[8], product[12];
    uint32_t oem_table;
    uint16_t oem_size, count;
    uint32_t lapic;
    uint16_t ext_length;
    uint8_t ext_checksum, reserved;
} __attribute__((packed));

struct mpc_cpu {
    uint8_t type, apic_id, apic_ver, flags;
    uint32_t signature, features;
    uint32_t reserved[2];
} __attribute__((packed));

struct mpc_bus {
    uint8_t type, id;
    char name[6];
} __attribute__((packed));

struct mpc_ioapic {
    uint8_t type, id, ver, flags;
    uint32_t addr;
} __attribute__((packed));

struct mpc_int { /* I/O interrupt and local interrupt assignment entries */
    uint8_t type, irqtype;
    uint16_t flags;
    uint8_t src_bus, src_irq, dst_apic, dst_pin;
} __attribute__((packed));

enum { MP_CPU = 0, MP_BUS = 1, MP_IOAPIC = 2, MP_IOINT = 3, MP_LINT = 4 };
enum { MP_INT = 0, MP_NMI = 1, MP_EXTINT = 3 };
#define CPU_ENABLED   1
#define CPU_BOOT      2
#define APIC_VERSION  0x14
#define IOAPIC_VER    0x11
#define CPU_SIGNATURE 0x600 /* family 6 */
#define CPU_FEATURES  0x201 /* FPU | APIC */

static uint8_t checksum(const void *p, size_t n)
{
    uint8_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += ((const uint8_t *)p)[i];
    return (uint8_t)-s;
}

int mptable_write(const struct guestmem *gm, unsigned ncpus)
{
    size_t nints = LAYOUT_IOAPIC_PINS - 1; /* every ISA IRQ except 2 (the cascade) */
    size_t size = sizeof(struct mpf) + sizeof(struct mpc) + ncpus * sizeof(struct mpc_cpu) +
                  sizeof(struct mpc_bus) + sizeof(struct mpc_ioapic) +
                  (nints + 2) * sizeof(struct mpc_int);
    if (ncpus == 0 || ncpus > 254 || size > LAYOUT_MPTABLE_MAX)
        return -1;
    uint8_t *base = guestmem_ptr(gm, LAYOUT_MPTABLE, size);
    if (!base)
        return -1;
    memset(base, 0, size);

    struct mpf *mpf = (struct mpf *)base;
    struct mpc *mpc = (struct mpc *)(mpf + 1);
    uint8_t *p = (uint8_t *)(mpc + 1);
    uint8_t ioapic_id = (uint8_t)ncpus;
    uint16_t count = 0;

    for (unsigned i = 0; i < ncpus; i++, count++) {
        struct mpc_cpu c = {MP_CPU,        (uint8_t)i,
                            APIC_VERSION,  (uint8_t)(CPU_ENABLED | (i == 0 ? CPU_BOOT : 0)),
                            CPU_SIGNATURE, CPU_FEATURES,
                            {0, 0}};
        memcpy(p, &c, sizeof(c));
        p += sizeof(c);
    }
    struct mpc_bus bus = {MP_BUS, 0, {'I', 'S', 'A', ' ', ' ', ' '}};
    memcpy(p, &bus, sizeof(bus));
    p += sizeof(bus);
    count++;
    struct mpc_ioapic io = {MP_IOAPIC, ioapic_id, IOAPIC_VER, 1, (uint32_t)LAYOUT_IOAPIC};
    memcpy(p, &io, sizeof(io));
    p += sizeof(io);
    count++;
    /* KVM's default routing sends GSI 0 (the PIT) to IOAPIC pin 2; all others to pin n.
       Flags 0 = "conforming to the bus": ISA means edge-triggered, active high. */
    for (unsigned irq = 0; irq < LAYOUT_IOAPIC_PINS; irq++) {
        if (irq == 2)
            continue;
        struct mpc_int e = {
            MP_IOINT, MP_INT, 0, 0, (uint8_t)irq, ioapic_id, (uint8_t)(irq == 0 ? 2 : irq)};
        memcpy(p, &e, sizeof(e));
        p += sizeof(e);
        count++;
    }
    struct mpc_int lint0 = {MP_LINT, MP_EXTINT, 0, 0, 0, 0xff, 0};
    struct mpc_int lint1 = {MP_LINT, MP_NMI, 0, 0, 0, 0xff, 1};
    memcpy(p, &lint0, sizeof(lint0));
    p += sizeof(lint0);
    memcpy(p, &lint1, sizeof(lint1));
    p += sizeof(lint1);
    count += 2;

    memcpy(mpc->signature, "PCMP", 4);
    mpc->length = (uint16_t)(p - (uint8_t *)mpc);
    mpc->spec = 4;
    memcpy(mpc->oem, "LIBSBX  ", 8);
    memcpy(mpc->product, "MICROVM     ", 12);
    mpc->count = count;
    mpc->lapic = (uint32_t)LAYOUT_LAPIC;
    mpc->checksum = checksum(mpc, mpc->length);

    memcpy(mpf->signature, "_MP_", 4);
    mpf->config = (uint32_t)(LAYOUT_MPTABLE + sizeof(*mpf));
    mpf->length = 1; /* in 16-byte units */
    mpf->spec = 4;
    mpf->checksum = checksum(mpf, sizeof(*mpf));
    return 0;
}
