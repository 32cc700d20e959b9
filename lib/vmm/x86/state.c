// SPDX-License-Identifier: Apache-2.0
/* Saving and restoring the KVM state of x86 vCPUs and of the VM (irqchip, PIT, clock). */
#include <errno.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vmm/x86/state.h"

#define MAX_MSRS          1024
#define MAX_CPUID_ENTRIES 256

size_t xstate_xsave_size(int kvm_fd)
{
    int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2); /* api.rst 4.42 */
    return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
}

unsigned xstate_tsc_khz(int vcpu_fd)
{
    int r = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0); /* api.rst 4.56 */
    return r > 0 ? (unsigned)r : 0;
}

/* Runs a KVM_GET_* ioctl into a new buffer of `len` bytes stored in *b. */
static int get_blob(int fd, unsigned long req, size_t len, ProtobufCBinaryData *b)
{
    b->data = calloc(1, len);
    if (!b->data)
        return -ENOMEM;
    b->len = len;
    return ioctl(fd, req, b->data) < 0 ? -errno : 0;
}

/* The fixed-size pieces of a vCPU's state, in the order they are restored (api.rst: SREGS
   before the LAPIC, whose base address they hold; XSAVE after SREGS' CR4). The MSRs come after
   them and the events last. len 0: the XSAVE area, whose size depends on the host. */
static const struct {
    size_t off;
    unsigned long get, set;
    size_t len;
    const char *get_name, *set_name;
} pieces[] = {
#define PIECE(field, GET, SET, type)                                                               \
    {                                                                                              \
        offsetof(Sbx__Snap__Vcpu, field), GET, SET, sizeof(type), #GET, #SET                       \
    }
    PIECE(mp_state, KVM_GET_MP_STATE, KVM_SET_MP_STATE, struct kvm_mp_state),
    PIECE(regs, KVM_GET_REGS, KVM_SET_REGS, struct kvm_regs),
    PIECE(sregs, KVM_GET_SREGS, KVM_SET_SREGS, struct kvm_sregs),
    {offsetof(Sbx__Snap__Vcpu, xsave), 0, KVM_SET_XSAVE, 0, "KVM_GET_XSAVE", "KVM_SET_XSAVE"},
    PIECE(xcrs, KVM_GET_XCRS, KVM_SET_XCRS, struct kvm_xcrs),
    PIECE(debugregs, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS, struct kvm_debugregs),
    PIECE(lapic, KVM_GET_LAPIC, KVM_SET_LAPIC, struct kvm_lapic_state),
#undef PIECE
};

/* The MSRs KVM can save (api.rst 4.3 KVM_GET_MSR_INDEX_LIST), malloc'ed. */
static struct kvm_msr_list *msr_index_list(int kvm_fd)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return NULL;
    if (probe.nmsrs == 0 || probe.nmsrs > MAX_MSRS) {
        errno = EINVAL;
        return NULL;
    }
    struct kvm_msr_list *l = malloc(sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
    if (!l)
        return NULL;
    l->nmsrs = probe.nmsrs;
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        free(l);
        return NULL;
    }
    return l;
}

/* Reads every MSR of the index list that this vCPU can read: KVM_GET_MSRS stops at the first
   MSR it cannot read (some depend on CPU features the guest lacks), which is left out. */
static int save_msrs(int kvm_fd, int vcpu_fd, Sbx__Snap__Vcpu *out)
{
    struct kvm_msr_list *l = msr_index_list(kvm_fd);
    if (!l)
        return -errno;
    struct kvm_msrs *m = calloc(1, sizeof(*m) + l->nmsrs * sizeof(struct kvm_msr_entry));
    if (!m) {
        free(l);
        return -ENOMEM;
    }
    unsigned n = l->nmsrs;
    for (unsigned i = 0; i < n; i++)
        m->entries[i].index = l->indices[i];
    free(l);
    int r;
    for (;;) {
        m->nmsrs = n;
        r = ioctl(vcpu_fd, KVM_GET_MSRS, m); /* api.rst 4.18: returns the number read */
        if (r < 0) {
            r = -errno;
            break;
        }
        if ((unsigned)r == n) {
            r = 0;
            break;
        }
        memmove(&m->entries[r], &m->entries[r + 1], (n - (unsigned)r - 1) * sizeof(m->entries[0]));
        n--;
    }
    if (r == 0) {
        out->msrs = calloc(n ? n : 1, sizeof(*out->msrs));
        r = out->msrs ? 0 : -ENOMEM;
    }
    for (unsigned i = 0; r == 0 && i < n; i++) {
        Sbx__Snap__Msr *e = malloc(sizeof(*e));
        if (!e) {
            r = -ENOMEM;
            break;
        }
        sbx__snap__msr__init(e);
        e->index = m->entries[i].index;
        e->data = m->entries[i].data;
        out->msrs[out->n_msrs++] = e;
    }
    free(m);
    return r;
}

int xstate_vcpu_save(int kvm_fd, int vcpu_fd, size_t xsave_size, Sbx__Snap__Vcpu *out,
                     const char **what)
{
    sbx__snap__vcpu__init(out);
    size_t csz = sizeof(struct kvm_cpuid2) + MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = calloc(1, csz);
    if (!c)
        return -ENOMEM;
    c->nent = MAX_CPUID_ENTRIES;
    int r = ioctl(vcpu_fd, KVM_GET_CPUID2, c) < 0 ? -errno : 0; /* api.rst 4.65 */
    if (r == 0) {
        size_t len = c->nent * sizeof(struct kvm_cpuid_entry2);
        out->cpuid.data = malloc(len ? len : 1);
        if (!out->cpuid.data)
            r = -ENOMEM;
        else {
            memcpy(out->cpuid.data, c->entries, len);
            out->cpuid.len = len;
        }
    }
    free(c);
    if (r < 0) {
        *what = "KVM_GET_CPUID2";
        return r;
    }
    bool big = xsave_size > sizeof(struct kvm_xsave);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        ProtobufCBinaryData *b = (ProtobufCBinaryData *)((char *)out + pieces[i].off);
        unsigned long req = pieces[i].len ? pieces[i].get : big ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
        if ((r = get_blob(vcpu_fd, req, pieces[i].len ? pieces[i].len : xsave_size, b)) < 0) {
            *what = pieces[i].len || !big ? pieces[i].get_name : "KVM_GET_XSAVE2";
            return r;
        }
    }
    r = get_blob(vcpu_fd, KVM_GET_VCPU_EVENTS, sizeof(struct kvm_vcpu_events), &out->events);
    if (r < 0) {
        *what = "KVM_GET_VCPU_EVENTS";
        return r;
    }
    if ((r = save_msrs(kvm_fd, vcpu_fd, out)) < 0)
        *what = "KVM_GET_MSRS";
    return r;
}

void xstate_vcpu_free(Sbx__Snap__Vcpu *v)
{
    ProtobufCBinaryData *b[] = {&v->cpuid, &v->mp_state,  &v->regs,  &v->sregs, &v->xsave,
                                &v->xcrs,  &v->debugregs, &v->lapic, &v->events};
    for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++)
        free(b[i]->data);
    for (size_t i = 0; i < v->n_msrs; i++)
        free(v->msrs[i]);
    free(v->msrs);
    sbx__snap__vcpu__init(v);
}

const char *xstate_vcpu_check(const Sbx__Snap__Vcpu *v, size_t xsave_size)
{
    if (v->cpuid.len == 0 || v->cpuid.len % sizeof(struct kvm_cpuid_entry2) ||
        v->cpuid.len / sizeof(struct kvm_cpuid_entry2) > MAX_CPUID_ENTRIES)
        return "CPUID entries";
    if (v->mp_state.len != sizeof(struct kvm_mp_state))
        return "MP state";
    if (v->regs.len != sizeof(struct kvm_regs))
        return "registers";
    if (v->sregs.len != sizeof(struct kvm_sregs))
        return "special registers";
    if (v->xsave.len != xsave_size)
        return "XSAVE area";
    if (v->xcrs.len != sizeof(struct kvm_xcrs))
        return "XCRs";
    if (v->debugregs.len != sizeof(struct kvm_debugregs))
        return "debug registers";
    if (v->lapic.len != sizeof(struct kvm_lapic_state))
        return "LAPIC";
    if (v->events.len != sizeof(struct kvm_vcpu_events))
        return "events";
    if (v->n_msrs == 0 || v->n_msrs > MAX_MSRS)
        return "MSR count";
    struct kvm_xcrs x;
    memcpy(&x, v->xcrs.data, sizeof(x));
    if (x.nr_xcrs > KVM_MAX_XCRS)
        return "XCR count";
    return NULL;
}

/* KVM_SET_MSRS stops at the first MSR it refuses. A refusal is fine only if the MSR already
   holds the saved value (read-only feature MSRs on the same host); else *bad names it. */
static int restore_msrs(int vcpu_fd, const Sbx__Snap__Vcpu *v, uint32_t *bad)
{
    size_t n = v->n_msrs, start = 0;
    struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
    if (!m)
        return -ENOMEM;
    int r = 0;
    while (start < n) {
        m->nmsrs = (uint32_t)(n - start);
        for (size_t i = 0; i < m->nmsrs; i++)
            m->entries[i] = (struct kvm_msr_entry){.index = v->msrs[start + i]->index,
                                                   .data = v->msrs[start + i]->data};
        int got = ioctl(vcpu_fd, KVM_SET_MSRS, m); /* api.rst 4.19: returns the number set */
        if (got < 0) {
            r = -errno;
            break;
        }
        start += (size_t)got;
        if (start == n)
            break;
        struct {
            struct kvm_msrs hdr;
            struct kvm_msr_entry e;
        } one = {.hdr.nmsrs = 1, .e.index = v->msrs[start]->index};
        if (ioctl(vcpu_fd, KVM_GET_MSRS, &one) != 1 || one.e.data != v->msrs[start]->data) {
            *bad = v->msrs[start]->index;
            r = -EINVAL;
            break;
        }
        start++;
    }
    free(m);
    return r;
}

int xstate_vcpu_restore(int vcpu_fd, const Sbx__Snap__Vcpu *v, const char **what)
{
    size_t nent = v->cpuid.len / sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *c = malloc(sizeof(*c) + v->cpuid.len);
    if (!c)
        return -ENOMEM;
    c->nent = (uint32_t)nent;
    c->padding = 0;
    memcpy(c->entries, v->cpuid.data, v->cpuid.len);
    int r = ioctl(vcpu_fd, KVM_SET_CPUID2, c) < 0 ? -errno : 0; /* api.rst 4.64 */
    free(c);
    if (r < 0) {
        *what = "KVM_SET_CPUID2 (the snapshot's CPU features are not all available here)";
        return r;
    }
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        const ProtobufCBinaryData *b =
            (const ProtobufCBinaryData *)((const char *)v + pieces[i].off);
        if (ioctl(vcpu_fd, pieces[i].set, b->data) < 0) {
            *what = pieces[i].set_name;
            return -errno;
        }
    }
    uint32_t bad = 0;
    if ((r = restore_msrs(vcpu_fd, v, &bad)) < 0) {
        *what =
            bad ? "KVM_SET_MSRS (an MSR of the snapshot is refused on this host)" : "KVM_SET_MSRS";
        return r;
    }
    if (ioctl(vcpu_fd, KVM_SET_VCPU_EVENTS, v->events.data) < 0) { /* last: api.rst 4.32 */
        *what = "KVM_SET_VCPU_EVENTS";
        return -errno;
    }
    return 0;
}

int xstate_vm_save(int vm_fd, Sbx__Snap__Vm *out, const char **what)
{
    sbx__snap__vm__init(out);
    ProtobufCBinaryData *chips[] = {&out->pic_master, &out->pic_slave, &out->ioapic};
    for (unsigned i = 0; i < 3; i++) {
        int r = get_blob(vm_fd, KVM_GET_IRQCHIP, sizeof(struct kvm_irqchip), chips[i]);
        if (r == -ENOMEM)
            return r;
        /* KVM_GET_IRQCHIP reads chip_id from the buffer: set it and ask again. */
        ((struct kvm_irqchip *)chips[i]->data)->chip_id = i;
        if (ioctl(vm_fd, KVM_GET_IRQCHIP, chips[i]->data) < 0) { /* api.rst 4.26 */
            *what = "KVM_GET_IRQCHIP";
            return -errno;
        }
    }
    int r = get_blob(vm_fd, KVM_GET_PIT2, sizeof(struct kvm_pit_state2), &out->pit);
    if (r < 0) {
        *what = "KVM_GET_PIT2";
        return r;
    }
    if ((r = get_blob(vm_fd, KVM_GET_CLOCK, sizeof(struct kvm_clock_data), &out->clock)) < 0)
        *what = "KVM_GET_CLOCK";
    return r;
}

void xstate_vm_free(Sbx__Snap__Vm *v)
{
    free(v->pic_master.data);
    free(v->pic_slave.data);
    free(v->ioapic.data);
    free(v->pit.data);
    free(v->clock.data);
    sbx__snap__vm__init(v);
}

const char *xstate_vm_check(const Sbx__Snap__Vm *v)
{
    const ProtobufCBinaryData *chips[] = {&v->pic_master, &v->pic_slave, &v->ioapic};
    for (unsigned i = 0; i < 3; i++) {
        if (chips[i]->len != sizeof(struct kvm_irqchip))
            return "irqchip";
        struct kvm_irqchip c;
        memcpy(&c, chips[i]->data, sizeof(c));
        if (c.chip_id != i)
            return "irqchip id";
    }
    if (v->pit.len != sizeof(struct kvm_pit_state2))
        return "PIT";
    if (v->clock.len != sizeof(struct kvm_clock_data))
        return "clock";
    return NULL;
}

int xstate_vm_restore(int vm_fd, const Sbx__Snap__Vm *v, const char **what)
{
    if (ioctl(vm_fd, KVM_SET_PIT2, v->pit.data) < 0) { /* api.rst 4.71 */
        *what = "KVM_SET_PIT2";
        return -errno;
    }
    struct kvm_clock_data clk;
    memcpy(&clk, v->clock.data, sizeof(clk));
    clk.flags = 0; /* the saved value as is: guest time continues from the snapshot */
    memset(clk.pad, 0, sizeof(clk.pad));
    if (ioctl(vm_fd, KVM_SET_CLOCK, &clk) < 0) { /* api.rst 4.61 */
        *what = "KVM_SET_CLOCK";
        return -errno;
    }
    const ProtobufCBinaryData *chips[] = {&v->pic_master, &v->pic_slave, &v->ioapic};
    for (unsigned i = 0; i < 3; i++)
        if (ioctl(vm_fd, KVM_SET_IRQCHIP, chips[i]->data) < 0) { /* api.rst 4.27 */
            *what = "KVM_SET_IRQCHIP";
            return -errno;
        }
    return 0;
}
