// SPDX-License-Identifier: Apache-2.0
/* Loading a Linux kernel (ELF vmlinux or bzImage) and the 64-bit boot protocol's zero page. */
#include <asm/bootparam.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox.h"
#include "vmm/boot.h"
#include "vmm/x86/layout.h"

#define MAX_PHDRS          64
#define KERNEL_CMDLINE_MAX 2048       /* x86 COMMAND_LINE_SIZE */
#define HDRS_MAGIC         0x53726448 /* "HdrS" */
#define SETUP_HDR_OFF      0x1f1
#define E820_RAM           1
#define E820_RESERVED      2

static int fail(char *err, size_t errlen, int code, const char *fmt, const char *path, int e)
{
    char what[256];
    snprintf(what, sizeof(what), fmt, path);
    if (e)
        snprintf(err, errlen, "%s: %s", what, strerror(e));
    else
        snprintf(err, errlen, "%s", what);
    return code;
}

/* pread exactly len bytes at off. */
static int read_at(int fd, void *buf, size_t len, off_t off)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? -EIO : -errno;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/*
 * Maps the whole pages of a page-aligned segment straight from the file over their place in
 * guest RAM, copy on write, instead of reading them: no copy at boot, and the kernel's pages
 * stay shared through the page cache by every sandbox that has not written them. Returns the
 * bytes mapped (0 when the segment is not page aligned); the caller reads the rest.
 */
static uint64_t map_segment(int fd, uint8_t *dst, const Elf64_Phdr *ph)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t len = ph->p_filesz & ~(page - 1);
    if (len == 0 || ph->p_offset % page || (uintptr_t)dst % page)
        return 0;
    if (mmap(dst, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, (off_t)ph->p_offset) ==
        MAP_FAILED)
        return 0;
    return len;
}

static int load_elf(const struct guestmem *gm, int fd, uint64_t fsize, const char *path,
                    struct boot_kernel *k, char *err, size_t errlen)
{
    Elf64_Ehdr eh;
    if (read_at(fd, &eh, sizeof(eh), 0) < 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64 || eh.e_type != ET_EXEC ||
        eh.e_phentsize != sizeof(Elf64_Phdr))
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: not an x86-64 executable ELF vmlinux",
                    path, 0);
    if (eh.e_phnum == 0 || eh.e_phnum > MAX_PHDRS || eh.e_phoff > fsize ||
        eh.e_phnum * sizeof(Elf64_Phdr) > fsize - eh.e_phoff)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: bad ELF program header table", path, 0);
    Elf64_Phdr ph[MAX_PHDRS];
    if (read_at(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), (off_t)eh.e_phoff) < 0)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: cannot read program headers", path, 0);
    uint64_t end = 0;
    int loaded = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD)
            continue;
        if (ph[i].p_filesz > ph[i].p_memsz || ph[i].p_offset > fsize ||
            ph[i].p_filesz > fsize - ph[i].p_offset)
            return fail(err, errlen, SBX_EIMAGE, "kernel %s: ELF segment outside the file", path,
                        0);
        uint8_t *dst = guestmem_ptr(gm, ph[i].p_paddr, ph[i].p_memsz);
        if (!dst || ph[i].p_paddr < LAYOUT_HIMEM)
            return fail(err, errlen, SBX_EIMAGE,
                        "kernel %s: ELF segment does not fit in guest RAM (more memory?)", path, 0);
        uint64_t mapped = map_segment(fd, dst, &ph[i]);
        if (read_at(fd, dst + mapped, ph[i].p_filesz - mapped, (off_t)(ph[i].p_offset + mapped)) <
            0)
            return fail(err, errlen, SBX_EIMAGE, "kernel %s: read error", path, errno);
        memset(dst + ph[i].p_filesz, 0, ph[i].p_memsz - ph[i].p_filesz);
        if (ph[i].p_paddr + ph[i].p_memsz > end)
            end = ph[i].p_paddr + ph[i].p_memsz;
        loaded = 1;
    }
    if (!loaded || !guestmem_ptr(gm, eh.e_entry, 1) || eh.e_entry < LAYOUT_HIMEM)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: no loadable segment or bad entry point",
                    path, 0);
    k->entry = eh.e_entry;
    k->end = end;
    k->initrd_max = 0x7fffffff;
    k->is_bzimage = 0;
    return 0;
}

static int load_bzimage(const struct guestmem *gm, int fd, uint64_t fsize, const char *path,
                        struct boot_kernel *k, char *err, size_t errlen)
{
    struct setup_header h;
    if (fsize < 0x1000 || read_at(fd, &h, sizeof(h), SETUP_HDR_OFF) < 0)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: too small for a bzImage", path, 0);
    if (h.header != HDRS_MAGIC || h.version < 0x020c || !(h.xloadflags & XLF_KERNEL_64) ||
        !(h.loadflags & LOADED_HIGH))
        return fail(err, errlen, SBX_EIMAGE,
                    "kernel %s: not a 64-bit bzImage (boot protocol 2.12 or later)", path, 0);
    uint64_t setup = ((uint64_t)(h.setup_sects ? h.setup_sects : 4) + 1) * 512;
    if (setup >= fsize)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: truncated bzImage", path, 0);
    uint64_t len = fsize - setup;
    /* The decompressor needs init_size bytes from the load address, not just the file. */
    uint64_t need = h.init_size > len ? h.init_size : len;
    uint8_t *dst = guestmem_ptr(gm, LAYOUT_BZIMAGE, need);
    if (!dst)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: does not fit in guest RAM", path, 0);
    if (read_at(fd, dst, len, (off_t)setup) < 0)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: read error", path, errno);
    /* The setup header runs from 0x1f1 to 0x202 + the byte at 0x201 (boot.rst). */
    uint8_t b201;
    if (read_at(fd, &b201, 1, 0x201) < 0)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: read error", path, errno);
    size_t hlen = 0x202 + b201 - SETUP_HDR_OFF;
    if (hlen > sizeof(k->setup_header))
        hlen = sizeof(k->setup_header);
    if (read_at(fd, k->setup_header, hlen, SETUP_HDR_OFF) < 0)
        return fail(err, errlen, SBX_EIMAGE, "kernel %s: read error", path, errno);
    k->setup_header_len = hlen;
    k->entry = LAYOUT_BZIMAGE + 0x200; /* the 64-bit entry of the protected-mode kernel */
    k->end = LAYOUT_BZIMAGE + need;
    k->initrd_max = h.initrd_addr_max;
    k->is_bzimage = 1;
    return 0;
}

int boot_load_kernel(const struct guestmem *gm, const char *path, struct boot_kernel *k, char *err,
                     size_t errlen)
{
    memset(k, 0, sizeof(*k));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, SBX_EIMAGE, "cannot open kernel %s", path, errno);
    struct stat st;
    uint8_t magic[4] = {0};
    int r;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        r = fail(err, errlen, SBX_EIMAGE, "kernel %s: not a regular file", path, 0);
    else if (read_at(fd, magic, 4, 0) < 0)
        r = fail(err, errlen, SBX_EIMAGE, "kernel %s: empty or unreadable", path, 0);
    else if (memcmp(magic, ELFMAG, SELFMAG) == 0)
        r = load_elf(gm, fd, (uint64_t)st.st_size, path, k, err, errlen);
    else
        r = load_bzimage(gm, fd, (uint64_t)st.st_size, path, k, err, errlen);
    close(fd);
    return r;
}

static void e820_add(struct boot_params *bp, uint64_t addr, uint64_t size, uint32_t type)
{
    struct boot_e820_entry *e = &bp->e820_table[bp->e820_entries++];
    e->addr = addr;
    e->size = size;
    e->type = type;
}

int boot_setup(const struct guestmem *gm, const struct boot_kernel *k, const char *cmdline,
               const uint8_t *initrd, size_t initrd_len, char *err, size_t errlen)
{
    struct boot_params *bp = guestmem_ptr(gm, LAYOUT_ZERO_PAGE, sizeof(*bp));
    size_t clen = strlen(cmdline);
    char *cl = guestmem_ptr(gm, LAYOUT_CMDLINE, clen + 1);
    if (!bp || !cl) {
        snprintf(err, errlen, "guest RAM too small for boot structures");
        return SBX_EINVAL;
    }
    if (clen >= KERNEL_CMDLINE_MAX) {
        snprintf(err, errlen, "kernel command line too long (%zu bytes, the kernel takes %d)", clen,
                 KERNEL_CMDLINE_MAX - 1);
        return SBX_EINVAL;
    }
    memcpy(cl, cmdline, clen + 1);

    memset(bp, 0, sizeof(*bp));
    struct setup_header *h = &bp->hdr;
    if (k->is_bzimage) {
        memcpy(h, k->setup_header, k->setup_header_len);
    } else {
        h->boot_flag = 0xaa55;
        h->header = HDRS_MAGIC;
        h->version = 0x020f;
        h->kernel_alignment = 0x1000000;
    }
    h->type_of_loader = 0xff; /* "undefined" loader */
    h->loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    h->heap_end_ptr = 0xfe00;
    h->cmd_line_ptr = (uint32_t)LAYOUT_CMDLINE;
    h->cmdline_size = (uint32_t)clen;

    if (initrd_len > 0) {
        /* As high as possible in low RAM, below the kernel's limit, page aligned. */
        uint64_t top = gm->lo_size;
        if (top > (uint64_t)k->initrd_max + 1)
            top = (uint64_t)k->initrd_max + 1;
        uint64_t addr = top > initrd_len ? (top - initrd_len) & ~0xfffULL : 0;
        uint8_t *dst = addr >= k->end ? guestmem_ptr(gm, addr, initrd_len) : NULL;
        if (!dst) {
            snprintf(err, errlen,
                     "initramfs (%zu bytes) does not fit in guest RAM above the "
                     "kernel; give the sandbox more memory",
                     initrd_len);
            return SBX_EINVAL;
        }
        memcpy(dst, initrd, initrd_len);
        h->ramdisk_image = (uint32_t)addr;
        h->ramdisk_size = (uint32_t)initrd_len;
    }

    e820_add(bp, 0, LAYOUT_EBDA, E820_RAM);
    e820_add(bp, LAYOUT_EBDA, LAYOUT_HIMEM - LAYOUT_EBDA, E820_RESERVED);
    e820_add(bp, LAYOUT_HIMEM, gm->lo_size - LAYOUT_HIMEM, E820_RAM);
    if (gm->hi_size)
        e820_add(bp, GUESTMEM_HI_BASE, gm->hi_size, E820_RAM);
    return 0;
}
