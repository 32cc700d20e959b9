// SPDX-License-Identifier: Apache-2.0
/* Unit tests of the VMM pieces that need no KVM: cmdline, bus, serial, MP table, kernel loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "sandbox.h"
#include "util/cmdline.h"
#include "vmm/boot.h"
#include "vmm/bus.h"
#include "vmm/serial.h"
#include "vmm/x86/layout.h"
#include "vmm/x86/mptable.h"

static void test_cmdline(void **state)
{
    struct cmdline c;
    cmdline_init(&c);
    cmdline_add(&c, "console=ttyS0");
    cmdline_add_virtio(&c, 0xd0000000, 0x1000, 5);
    cmdline_add_virtio(&c, 0xd0001000, 100, 6);
    assert_true(cmdline_append_raw(&c, "  foo=1 bar "));
    assert_string_equal(c.buf, "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 "
                               "virtio_mmio.device=100@0xd0001000:6 foo=1 bar");
    assert_false(c.overflow);
    assert_false(cmdline_append_raw(&c, "evil\nline"));
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    cmdline_add(&c, "%s", big);
    assert_true(c.overflow);
    assert_true(strlen(c.buf) < CMDLINE_MAX);
}

static uint8_t last_write;
static void dev_fn(void *o, uint64_t off, uint8_t *d, uint32_t len, bool w)
{
    if (w)
        last_write = (uint8_t)(d[0] + off);
    else
        memset(d, 0x42, len);
}

static void test_bus(void **state)
{
    struct bus b = {0};
    assert_int_equal(bus_add(&b, 0x100, 0x10, dev_fn, NULL), 0);
    assert_int_equal(bus_add(&b, 0x108, 0x10, dev_fn, NULL), -1);       /* overlap */
    assert_int_equal(bus_add(&b, 0x110, 0, dev_fn, NULL), -1);          /* empty */
    assert_int_equal(bus_add(&b, UINT64_MAX - 1, 4, dev_fn, NULL), -1); /* wraps */
    uint8_t d[8] = {1};
    assert_true(bus_access(&b, 0x104, d, 1, true));
    assert_int_equal(last_write, 5);
    assert_true(bus_access(&b, 0x10c, d, 4, false));
    assert_int_equal(d[0], 0x42);
    /* Straddling the end of the window, or unowned: not routed, reads all ones. */
    assert_false(bus_access(&b, 0x10e, d, 4, false));
    assert_int_equal(d[0], 0xff);
    assert_false(bus_access(&b, 0x200, d, 2, false));
}

static void test_serial(void **state)
{
    struct serial *s = malloc(sizeof(*s));
    serial_init(s, -1, NULL, NULL);
    uint8_t v;
    for (const char *p = "line one\nline two\nthree"; *p; p++) {
        v = (uint8_t)*p;
        serial_io(s, 0, &v, 1, true);
    }
    char buf[128];
    assert_int_equal(serial_tail(s, buf, sizeof(buf)), 23);
    assert_string_equal(buf, "line one\nline two\nthree");
    serial_tail_lines(s, buf, sizeof(buf), 2);
    assert_string_equal(buf, "line two\nthree");
    assert_true(serial_contains(s, "two"));
    assert_false(serial_contains(s, "four"));
    /* LSR says the transmitter is always empty; IIR reports THRE once after IER enables it. */
    serial_io(s, 5, &v, 1, false);
    assert_int_equal(v & 0x60, 0x60);
    v = 0x02;
    serial_io(s, 1, &v, 1, true);
    serial_io(s, 2, &v, 1, false);
    assert_int_equal(v & 0x0f, 0x02);
    serial_io(s, 2, &v, 1, false);
    assert_int_equal(v & 0x0f, 0x01);
    /* The ring keeps only the last SERIAL_RING_SIZE bytes. */
    v = 'z';
    for (int i = 0; i < SERIAL_RING_SIZE + 10; i++)
        serial_io(s, 0, &v, 1, true);
    char *big = malloc(SERIAL_RING_SIZE + 100);
    assert_int_equal(serial_tail(s, big, SERIAL_RING_SIZE + 100), SERIAL_RING_SIZE);
    assert_int_equal(big[0], 'z');
    free(big);
    serial_destroy(s);
    free(s);
}

static struct guestmem make_mem(size_t size)
{
    struct guestmem gm = {0};
    gm.lo = calloc(1, size);
    gm.lo_size = size;
    return gm;
}

static void test_mptable(void **state)
{
    struct guestmem gm = make_mem(2 << 20);
    assert_int_equal(mptable_write(&gm, 4), 0);
    uint8_t *mpf = gm.lo + LAYOUT_MPTABLE;
    assert_memory_equal(mpf, "_MP_", 4);
    uint8_t sum = 0;
    for (int i = 0; i < 16; i++)
        sum += mpf[i];
    assert_int_equal(sum, 0);
    uint32_t cfg;
    memcpy(&cfg, mpf + 4, 4);
    uint8_t *mpc = gm.lo + cfg;
    assert_memory_equal(mpc, "PCMP", 4);
    uint16_t len, count;
    memcpy(&len, mpc + 4, 2);
    memcpy(&count, mpc + 34, 2);
    sum = 0;
    for (int i = 0; i < len; i++)
        sum += mpc[i];
    assert_int_equal(sum, 0);
    assert_int_equal(count, 4 + 1 + 1 + 23 + 2);
    assert_int_equal(mpc[44], 0);     /* first entry: a processor */
    assert_int_equal(mpc[44 + 3], 3); /* enabled + bootstrap */
    assert_int_equal(mptable_write(&gm, 0), -1);
    assert_int_equal(mptable_write(&gm, 255), -1);
    struct guestmem tiny = make_mem(0x1000); /* table outside RAM */
    assert_int_equal(mptable_write(&tiny, 1), -1);
    free(tiny.lo);
    free(gm.lo);
}

static char tmp_path[64];

/* Writes data to a fresh temporary file (replacing the previous one) and returns its path. */
static const char *write_tmp(const void *data, size_t len)
{
    char *path = tmp_path;
    if (path[0])
        unlink(path);
    strcpy(path, "/tmp/sbx-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

/* A minimal ELF vmlinux: one PT_LOAD of 16 bytes at 16 MiB with 32 bytes of bss. */
static void test_load_elf(void **state)
{
    struct {
        Elf64_Ehdr eh;
        Elf64_Phdr ph;
        uint8_t code[16];
    } f;
    memset(&f, 0, sizeof(f));
    memcpy(f.eh.e_ident, ELFMAG, SELFMAG);
    f.eh.e_ident[EI_CLASS] = ELFCLASS64;
    f.eh.e_ident[EI_DATA] = ELFDATA2LSB;
    f.eh.e_type = ET_EXEC;
    f.eh.e_machine = EM_X86_64;
    f.eh.e_entry = 0x1000000;
    f.eh.e_phoff = sizeof(Elf64_Ehdr);
    f.eh.e_phentsize = sizeof(Elf64_Phdr);
    f.eh.e_phnum = 1;
    f.ph.p_type = PT_LOAD;
    f.ph.p_offset = offsetof(__typeof__(f), code);
    f.ph.p_paddr = 0x1000000;
    f.ph.p_filesz = 16;
    f.ph.p_memsz = 48;
    memset(f.code, 0x90, sizeof(f.code));

    struct guestmem gm = make_mem(32 << 20);
    memset(gm.lo + 0x1000000, 0xaa, 64);
    struct boot_kernel k;
    char err[256];
    const char *p = write_tmp(&f, sizeof(f));
    assert_int_equal(boot_load_kernel(&gm, p, &k, err, sizeof(err)), 0);
    assert_int_equal(k.entry, 0x1000000);
    assert_int_equal(k.end, 0x1000000 + 48);
    assert_int_equal(gm.lo[0x1000000], 0x90);
    assert_int_equal(gm.lo[0x1000000 + 20], 0); /* bss cleared */
    assert_int_equal(gm.lo[0x1000000 + 50], 0xaa);

    /* Boot structures: the command line and e820 land where the kernel looks. */
    uint8_t initrd[100] = {1, 2, 3};
    assert_int_equal(boot_setup(&gm, &k, "console=ttyS0", initrd, sizeof(initrd), err, 256), 0);
    assert_string_equal((char *)gm.lo + LAYOUT_CMDLINE, "console=ttyS0");

    /* Segment beyond RAM, bad phnum, wrong machine: refused with a message. */
    struct guestmem small = make_mem(8 << 20);
    assert_int_equal(boot_load_kernel(&small, p, &k, err, sizeof(err)), SBX_EIMAGE);
    assert_non_null(strstr(err, "does not fit"));
    f.eh.e_phnum = 1000;
    p = write_tmp(&f, sizeof(f));
    assert_int_equal(boot_load_kernel(&gm, p, &k, err, sizeof(err)), SBX_EIMAGE);
    f.eh.e_phnum = 1;
    f.ph.p_filesz = 1 << 20; /* beyond the file */
    p = write_tmp(&f, sizeof(f));
    assert_int_equal(boot_load_kernel(&gm, p, &k, err, sizeof(err)), SBX_EIMAGE);
    f.ph.p_filesz = 16;
    f.eh.e_machine = EM_AARCH64;
    p = write_tmp(&f, sizeof(f));
    assert_int_equal(boot_load_kernel(&gm, p, &k, err, sizeof(err)), SBX_EIMAGE);
    assert_int_equal(boot_load_kernel(&gm, "/nonexistent", &k, err, sizeof(err)), SBX_EIMAGE);
    assert_non_null(strstr(err, "/nonexistent"));
    unlink(tmp_path);
    tmp_path[0] = 0;
    free(small.lo);
    free(gm.lo);
}

/* A page-aligned segment is mapped from the file (copy on write), its partial tail read. */
static void test_load_elf_mapped(void **state)
{
    enum { OFF = 4096, FILESZ = 4096 + 100, MEMSZ = 3 * 4096 };
    static uint8_t file[OFF + FILESZ + 64];
    Elf64_Ehdr *eh = (Elf64_Ehdr *)file;
    Elf64_Phdr *ph = (Elf64_Phdr *)(file + sizeof(*eh));
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_entry = 0x1000000;
    eh->e_phoff = sizeof(*eh);
    eh->e_phentsize = sizeof(*ph);
    eh->e_phnum = 1;
    ph->p_type = PT_LOAD;
    ph->p_offset = OFF;
    ph->p_paddr = 0x1000000;
    ph->p_filesz = FILESZ;
    ph->p_memsz = MEMSZ;
    for (int i = 0; i < FILESZ + 64; i++)
        file[OFF + i] = (uint8_t)(i * 13 + 1);

    /* Page-aligned guest RAM, as the VMM's mmap gives it. */
    struct guestmem gm = {0};
    gm.lo_size = 32 << 20;
    gm.lo = mmap(NULL, gm.lo_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(gm.lo != MAP_FAILED);
    memset(gm.lo + 0x1000000, 0xaa, 4 * 4096);
    const char *p = write_tmp(file, sizeof(file));
    struct boot_kernel k;
    char err[256];
    assert_int_equal(boot_load_kernel(&gm, p, &k, err, sizeof(err)), 0);
    uint8_t *seg = gm.lo + 0x1000000;
    assert_memory_equal(seg, file + OFF, FILESZ);
    for (int i = FILESZ; i < MEMSZ; i++)
        assert_int_equal(seg[i], 0);    /* bss, although the file goes on */
    assert_int_equal(seg[MEMSZ], 0xaa); /* RAM after the segment untouched */
    /* Guest writes stay private: the file keeps its bytes. */
    seg[0] ^= 0xff;
    int fd = open(p, O_RDONLY);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, OFF), 1);
    close(fd);
    assert_int_equal(b, file[OFF]);
    munmap(gm.lo, gm.lo_size);
    unlink(tmp_path);
    tmp_path[0] = 0;
}

static void test_boot_setup_limits(void **state)
{
    struct guestmem gm = make_mem(32 << 20);
    struct boot_kernel k = {.entry = 0x1000000, .end = 0x1800000, .initrd_max = 0x7fffffff};
    char err[256];
    char line[3000];
    memset(line, 'a', sizeof(line) - 1);
    line[sizeof(line) - 1] = 0;
    assert_int_equal(boot_setup(&gm, &k, line, NULL, 0, err, sizeof(err)), SBX_EINVAL);
    /* An initrd that would overlap the kernel is refused. */
    static uint8_t big[20 << 20];
    assert_int_equal(boot_setup(&gm, &k, "x", big, sizeof(big), err, sizeof(err)), SBX_EINVAL);
    free(gm.lo);
}

static void test_options(void **state)
{
    sbx_options o = SBX_OPTIONS_INIT;
    sbx *sb = NULL;
    o.version = 0;
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "version"));
    assert_int_equal(sbx_state(sb), SBX_STATE_FAILED);
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.vcpus = 65;
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "vcpus"));
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.memory_mib = 10;
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.max_buffer_mib = 65537;
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    assert_non_null(strstr(sbx_errmsg(sb), "max_buffer_mib"));
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.console_fd = -1;
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.kernel = "/bin/sh";                /* readable: the root filesystem is checked next */
    o.rootfs = "/nonexistent/root.ext4"; /* a path (it has a slash) */
    assert_int_equal(sbx_create(&sb, &o), SBX_EIMAGE);
    assert_non_null(strstr(sbx_errmsg(sb), "nonexistent"));
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.rootfs = "bad name";
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    sbx_disk d = {.path = "/x", .serial = "a-serial-longer-than-twenty-bytes"};
    o.disks = &d;
    o.ndisks = 1;
    assert_int_equal(sbx_create(&sb, &o), SBX_EINVAL);
    sbx_destroy(sb);
    o = (sbx_options)SBX_OPTIONS_INIT;
    o.kernel = "/nonexistent/kernel";
    o.image_dir = "/nonexistent";
    assert_int_equal(sbx_create(&sb, &o), SBX_EIMAGE);
    assert_non_null(strstr(sbx_errmsg(sb), "/nonexistent/kernel"));
    sbx_destroy(sb);
    assert_int_equal(sbx_create(NULL, &o), SBX_EINVAL);
    assert_string_equal(sbx_strerror(SBX_ETIMEDOUT), "timed out");
    assert_string_equal(sbx_strerror(12345), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmdline),
        cmocka_unit_test(test_bus),
        cmocka_unit_test(test_serial),
        cmocka_unit_test(test_mptable),
        cmocka_unit_test(test_load_elf),
        cmocka_unit_test(test_load_elf_mapped),
        cmocka_unit_test(test_boot_setup_limits),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
