// SPDX-License-Identifier: Apache-2.0
/* x86-64 vCPU setup: CPUID, MSRs, LAPIC, and the register state of the 64-bit boot protocol. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/x86/cpu.h"
#include "vmm/x86/layout.h"

#define MAX_CPUID_ENTRIES 256

struct kvm_cpuid2 *cpu_supported_cpuid(int kvm_fd)
{
    size_t sz = sizeof(struct kvm_cpuid2) + MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = calloc(1, sz);
    if (!c)
        return NULL;
    c->nent = MAX_CPUID_ENTRIES;
    /* api.rst 4.46 KVM_GET_SUPPORTED_CPUID */
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
        int e = errno;
        free(c);
        errno = e;
        return NULL;
    }
    return c;
}

static unsigned order_base2(unsigned n)
{
    unsigned s = 0;
    while ((1u << s) < n)
        s++;
    return s;
}

int cpu_set_cpuid(int vcpu_fd, const struct kvm_cpuid2 *supported, unsigned id, unsigned n,
                  bool tsc_deadline)
{
    size_t sz = sizeof(struct kvm_cpuid2) + supported->nent * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = malloc(sz);
    if (!c)
        return -ENOMEM;
    memcpy(c, supported, sz);
    for (unsigned i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            /* EBX[31:24] initial APIC id, [23:16] logical processors per package. */
            e->ebx = (e->ebx & 0xffff) | (id << 24) | ((n & 0xff) << 16);
            e->ecx |= 1u << 31; /* running under a hypervisor */
            /* KVM emulates the TSC-deadline LAPIC timer but leaves the bit for the VMM to set
               (api.rst, KVM_CAP_TSC_DEADLINE_TIMER). Without it Linux calibrates the periodic
               LAPIC timer, which fails on busy or nested hosts and leaves it without one. */
            if (tsc_deadline)
                e->ecx |= 1u << 24;
            if (n > 1)
                e->edx |= 1u << 28; /* HTT: the package field above is valid */
            break;
        case 0xb:
        case 0x1f:
            /* Extended topology: one thread per core, n cores in one package. */
            e->edx = id;
            if (e->index == 0) {
                e->eax = 0;
                e->ebx = 1;
                e->ecx = 0x100; /* level 0: SMT */
            } else if (e->index == 1) {
                e->eax = order_base2(n);
                e->ebx = n;
                e->ecx = 0x201; /* level 1: core */
            } else {
                e->eax = e->ebx = 0;
                e->ecx = e->index;
            }
            break;
        case 4:
            /* Deterministic cache parameters: EAX[31:26] = cores per package - 1. */
            e->eax = (e->eax & 0x3ffffff) | (((n - 1) & 0x3f) << 26);
            break;
        }
    }
    /* api.rst 4.73 KVM_SET_CPUID2 */
    int r = ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0;
    free(c);
    return r;
}

#define MSR_IA32_TSC            0x10
#define MSR_IA32_SYSENTER_CS    0x174
#define MSR_IA32_SYSENTER_ESP   0x175
#define MSR_IA32_SYSENTER_EIP   0x176
#define MSR_IA32_MISC_ENABLE    0x1a0
#define MSR_MTRR_DEF_TYPE       0x2ff
#define MSR_STAR                0xc0000081
#define MSR_LSTAR               0xc0000082
#define MSR_CSTAR               0xc0000083
#define MSR_SYSCALL_MASK        0xc0000084
#define MSR_KERNEL_GS_BASE      0xc0000102
#define MISC_ENABLE_FAST_STRING 1
#define MTRR_ENABLE_WRITEBACK   ((1u << 11) | 6)

#define APIC_LVT0        0x350
#define APIC_LVT1        0x360
#define APIC_MODE_NMI    0x4
#define APIC_MODE_EXTINT 0x7

static void lvt_set_mode(struct kvm_lapic_state *l, unsigned reg, uint32_t mode)
{
    uint32_t v;
    memcpy(&v, &l->regs[reg], 4);
    v = (v & ~0x700u) | (mode << 8);
    memcpy(&l->regs[reg], &v, 4);
}

int cpu_init(int vcpu_fd, const char **what)
{
    static const struct {
        uint32_t index;
        uint64_t data;
    } boot_msrs[] = {
        {MSR_IA32_SYSENTER_CS, 0},
        {MSR_IA32_SYSENTER_ESP, 0},
        {MSR_IA32_SYSENTER_EIP, 0},
        {MSR_STAR, 0},
        {MSR_CSTAR, 0},
        {MSR_KERNEL_GS_BASE, 0},
        {MSR_SYSCALL_MASK, 0},
        {MSR_LSTAR, 0},
        {MSR_IA32_TSC, 0},
        {MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING},
        {MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK},
    };
    enum { N = sizeof(boot_msrs) / sizeof(boot_msrs[0]) };
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[N];
    } msrs;
    memset(&msrs, 0, sizeof(msrs));
    msrs.hdr.nmsrs = N;
    for (unsigned i = 0; i < N; i++) {
        msrs.e[i].index = boot_msrs[i].index;
        msrs.e[i].data = boot_msrs[i].data;
    }
    /* api.rst 4.19 KVM_SET_MSRS returns the number of MSRs set. */
    int r = ioctl(vcpu_fd, KVM_SET_MSRS, &msrs);
    if (r != N) {
        *what = "KVM_SET_MSRS";
        return r < 0 ? -errno : -EINVAL;
    }

    /* LINT0 delivers the PIC's ExtINT, LINT1 NMIs: what an MP-table BIOS leaves behind. */
    struct kvm_lapic_state lapic;
    if (ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic) < 0) {
        *what = "KVM_GET_LAPIC";
        return -errno;
    }
    lvt_set_mode(&lapic, APIC_LVT0, APIC_MODE_EXTINT);
    lvt_set_mode(&lapic, APIC_LVT1, APIC_MODE_NMI);
    if (ioctl(vcpu_fd, KVM_SET_LAPIC, &lapic) < 0) {
        *what = "KVM_SET_LAPIC";
        return -errno;
    }

    struct kvm_fpu fpu;
    memset(&fpu, 0, sizeof(fpu));
    fpu.fcw = 0x37f;    /* x87 default control word */
    fpu.mxcsr = 0x1f80; /* SSE default: all exceptions masked */
    if (ioctl(vcpu_fd, KVM_SET_FPU, &fpu) < 0) {
        *what = "KVM_SET_FPU";
        return -errno;
    }
    return 0;
}

/* GDT entries: the boot protocol's __BOOT_CS (64-bit code) and __BOOT_DS, then a TSS. */
static const uint64_t boot_gdt[] = {
    0,
    0,
    0x00af9b000000ffffULL, /* 0x10: code, 64-bit (L), present, DPL 0, 4 GiB */
    0x00cf93000000ffffULL, /* 0x18: data, 32-bit (D/B), present, DPL 0, 4 GiB */
    0x00008b0000000fffULL, /* 0x20: busy 64-bit TSS at 0 (only to satisfy VM entry) */
};

static struct kvm_segment seg_from_gdt(unsigned sel)
{
    uint64_t d = boot_gdt[sel / 8];
    struct kvm_segment s = {
        .base = (uint32_t)(((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24)),
        .limit = (uint32_t)((d & 0xffff) | (((d >> 48) & 0xf) << 16)),
        .selector = (uint16_t)sel,
        .type = (uint8_t)((d >> 40) & 0xf),
        .s = (uint8_t)((d >> 44) & 1),
        .dpl = (uint8_t)((d >> 45) & 3),
        .present = (uint8_t)((d >> 47) & 1),
        .avl = (uint8_t)((d >> 52) & 1),
        .l = (uint8_t)((d >> 53) & 1),
        .db = (uint8_t)((d >> 54) & 1),
        .g = (uint8_t)((d >> 55) & 1),
    };
    if (s.g) /* KVM wants the byte-granular limit */
        s.limit = (s.limit << 12) | 0xfff;
    return s;
}

#define CR0_PE   0x1ULL
#define CR0_ET   0x10ULL
#define CR0_NE   0x20ULL
#define CR0_PG   0x80000000ULL
#define CR4_PAE  0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

int cpu_set_boot_regs(int vcpu_fd, uint64_t entry, uint64_t zero_page, const char **what)
{
    struct kvm_sregs sregs;
    if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
        *what = "KVM_GET_SREGS";
        return -errno;
    }
    sregs.gdt.base = LAYOUT_GDT;
    sregs.gdt.limit = sizeof(boot_gdt) - 1;
    sregs.idt.base = LAYOUT_IDT;
    sregs.idt.limit = 0;
    sregs.cs = seg_from_gdt(LAYOUT_BOOT_CS);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = seg_from_gdt(LAYOUT_BOOT_DS);
    sregs.tr = seg_from_gdt(0x20);
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = LAYOUT_PML4;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
        *what = "KVM_SET_SREGS";
        return -errno;
    }

    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    regs.rflags = 2; /* bit 1 is reserved-one; interrupts off */
    regs.rip = entry;
    regs.rsi = zero_page;
    regs.rsp = regs.rbp = LAYOUT_ZERO_PAGE - 16; /* a scratch stack below the zero page */
    if (ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0) {
        *what = "KVM_SET_REGS";
        return -errno;
    }
    return 0;
}

#define PTE_P  0x1ULL
#define PTE_RW 0x2ULL
#define PTE_PS 0x80ULL

int cpu_write_boot_tables(const struct guestmem *gm)
{
    uint64_t *gdt = guestmem_ptr(gm, LAYOUT_GDT, sizeof(boot_gdt));
    uint64_t *pml4 = guestmem_ptr(gm, LAYOUT_PML4, 4096);
    uint64_t *pdpt = guestmem_ptr(gm, LAYOUT_PDPT, 4096);
    uint64_t *pd = guestmem_ptr(gm, LAYOUT_PD, 4 * 4096);
    if (!gdt || !pml4 || !pdpt || !pd)
        return -EINVAL;
    memcpy(gdt, boot_gdt, sizeof(boot_gdt));
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = LAYOUT_PDPT | PTE_P | PTE_RW;
    for (uint64_t i = 0; i < 4; i++)
        pdpt[i] = (LAYOUT_PD + i * 4096) | PTE_P | PTE_RW;
    for (uint64_t i = 0; i < 4 * 512; i++)
        pd[i] = (i << 21) | PTE_P | PTE_RW | PTE_PS;
    return 0;
}
