// SPDX-License-Identifier: Apache-2.0
/* envd: resource use of the guest (MetricsRequest). */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "envd.h"

/* The aggregate "cpu" line of /proc/stat, in ms. */
static void cpu_times(uint64_t *busy, uint64_t *total)
{
    *busy = *total = 0;
    FILE *fp = fopen("/proc/stat", "re");
    if (!fp)
        return;
    unsigned long long v[8] = {0};
    if (fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
        long hz = sysconf(_SC_CLK_TCK);
        if (hz <= 0)
            hz = 100;
        /* user nice system idle iowait irq softirq steal */
        uint64_t b = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        *busy = b * 1000 / (uint64_t)hz;
        *total = (b + v[3] + v[4]) * 1000 / (uint64_t)hz;
    }
    fclose(fp);
}

/* A field of /proc/meminfo in KiB, or 0. */
static uint64_t meminfo(const char *key)
{
    FILE *fp = fopen("/proc/meminfo", "re");
    if (!fp)
        return 0;
    char line[256];
    uint64_t v = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), fp))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtoull(line + klen + 1, NULL, 10);
            break;
        }
    fclose(fp);
    return v;
}

static uint32_t count_processes(void)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    uint32_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (isdigit((unsigned char)e->d_name[0]))
            n++;
    closedir(d);
    return n;
}

void metrics_request(struct server *s, struct conn *c, const Sbx__Agent__Frame *req)
{
    Sbx__Agent__Metrics m = SBX__AGENT__METRICS__INIT;
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) == 0)
        m.uptime_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    m.cpus = (uint32_t)get_nprocs();
    cpu_times(&m.cpu_busy_ms, &m.cpu_total_ms);
    m.mem_total_kib = meminfo("MemTotal");
    m.mem_available_kib = meminfo("MemAvailable");
    struct statvfs sv;
    if (statvfs("/", &sv) == 0) {
        m.disk_total_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
        m.disk_used_bytes = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
    }
    m.processes = count_processes();
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT;
    f.id = req->id;
    f.body_case = SBX__AGENT__FRAME__BODY_METRICS;
    f.metrics = &m;
    conn_send(c, &f);
}
