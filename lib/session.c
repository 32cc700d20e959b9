// SPDX-License-Identifier: Apache-2.0
/* Sandbox-wide settings: environment, default user, metadata, lifetime, metrics. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>

#include "net/net.h"
#include "agent/agent.h"
#include "agent/conn.h"
#include "internal.h"
#include "isolate/isolate.h"
#include "registry.h"
#include "session.h"
#include "util/wait.h"

#define MAX_META     64
#define MAX_META_LEN 1024
#define MAX_ENVS     1024
#define MAX_ENV_LEN  (64u << 10)
#define MAX_USER_LEN 63
#define DAY_MS       (24ull * 3600 * 1000)
#define MAX_LIFETIME (365 * DAY_MS)
#define METRICS_MS   10000

static void free_list(char **l)
{
    for (size_t i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

/* Copies a NULL-terminated "K=V" list after checking each entry; *count gets its length. */
static int copy_kv_list(struct sbx *sb, const char *what, const char *const *in, size_t max,
                        size_t maxlen, char ***out, size_t *count)
{
    size_t n = 0;
    while (in && in[n]) {
        const char *e = in[n];
        const char *eq = strchr(e, '=');
        if (n == max)
            return sbx_seterr(sb, SBX_EINVAL, "options.%s has more than %zu entries", what, max);
        if (!eq || eq == e || strlen(e) > maxlen)
            return sbx_seterr(sb, SBX_EINVAL,
                              "options.%s[%zu] is not KEY=VALUE with a non-empty key of at "
                              "most %zu bytes in all",
                              what, n, maxlen);
        n++;
    }
    char **l = calloc(n + 1, sizeof(*l));
    if (!l)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!(l[i] = strdup(in[i]))) {
            free_list(l);
            return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        }
    *out = l;
    *count = n;
    return 0;
}

int session_options(struct sbx *sb, const sbx_options *o)
{
    size_t n;
    int r = copy_kv_list(sb, "envs", o->envs, MAX_ENVS, MAX_ENV_LEN, &sb->envs, &n);
    if (r == 0)
        r = copy_kv_list(sb, "metadata", o->metadata, MAX_META, MAX_META_LEN, &sb->meta,
                         &sb->nmeta);
    if (r < 0)
        return r;
    /* Stored split as "key\0value". */
    for (size_t i = 0; i < sb->nmeta; i++) {
        *strchr(sb->meta[i], '=') = '\0';
        for (size_t j = 0; j < i; j++)
            if (strcmp(sb->meta[j], sb->meta[i]) == 0)
                return sbx_seterr(sb, SBX_EINVAL, "options.metadata: key \"%s\" given twice",
                                  sb->meta[i]);
    }
    if (o->default_user) {
        if (!*o->default_user || strlen(o->default_user) > MAX_USER_LEN ||
            strpbrk(o->default_user, ":\n/"))
            return sbx_seterr(sb, SBX_EINVAL,
                              "options.default_user must be a user name or uid (1..%d bytes)",
                              MAX_USER_LEN);
        if (!(sb->default_user = strdup(o->default_user)))
            return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    }
    if (o->lifetime_ms > MAX_LIFETIME)
        return sbx_seterr(sb, SBX_EINVAL, "options.lifetime_ms exceeds a year");
    sb->lifetime_ms = o->lifetime_ms;
    return 0;
}

int session_restore(struct sbx *sb, char *const *envs, size_t nenvs, const char *user,
                    char *const *meta, size_t nmeta, bool identity)
{
    if (identity && ((sb->envs && sb->envs[0]) || sb->nmeta || sb->default_user))
        return sbx_seterr(sb, SBX_EINVAL,
                          "a resumed sandbox keeps its envs, default user and metadata: leave "
                          "those options unset");
    size_t nown = 0;
    while (sb->envs && sb->envs[nown])
        nown++;
    /* The snapshot's environment first, then the caller's: later entries win in envd. */
    char **l = calloc(nenvs + nown + 1, sizeof(*l));
    if (!l)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (size_t i = 0; i < nenvs + nown; i++)
        if (!(l[i] = strdup(i < nenvs ? envs[i] : sb->envs[i - nenvs]))) {
            free_list(l);
            return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        }
    free_list(sb->envs);
    sb->envs = l;
    if (!sb->default_user && user && *user && !(sb->default_user = strdup(user)))
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    if (!identity)
        return 0;
    sb->meta = calloc(nmeta + 1, sizeof(char *));
    if (!sb->meta)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    for (size_t i = 0; i < nmeta; i++) {
        char *eq = strchr(meta[i], '=');
        if (!eq)
            return sbx_seterr(sb, SBX_EIMAGE, "snapshot metadata entry without '='");
        if (!(sb->meta[i] = strdup(meta[i])))
            return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
        sb->meta[i][eq - meta[i]] = '\0';
        sb->nmeta = i + 1;
    }
    return 0;
}

char **session_meta_joined(const struct sbx *sb)
{
    char **l = calloc(sb->nmeta + 1, sizeof(*l));
    for (size_t i = 0; l && i < sb->nmeta; i++) {
        const char *k = sb->meta[i];
        if (asprintf(&l[i], "%s=%s", k, k + strlen(k) + 1) < 0) {
            l[i] = NULL;
            free_list(l);
            return NULL;
        }
    }
    return l;
}

void session_list_free(char **l)
{
    free_list(l);
}

void session_free(struct sbx *sb)
{
    free_list(sb->envs);
    free_list(sb->meta);
    free(sb->default_user);
    free(sb->default_cwd);
    sb->envs = sb->meta = NULL;
    sb->default_user = sb->default_cwd = NULL;
}

int session_configure(struct sbx *sb, int fd, const struct waitctx *w)
{
    Sbx__Agent__Configure cfg = SBX__AGENT__CONFIGURE__INIT;
    size_t n = 0;
    while (sb->envs && sb->envs[n])
        n++;
    /* SBX_SANDBOX_ID first, so that the caller's envs can override it. */
    char idenv[64];
    snprintf(idenv, sizeof(idenv), "SBX_SANDBOX_ID=%s", sb->id);
    char **envs = calloc(n + 2, sizeof(*envs));
    if (!envs)
        return sbx_seterr(sb, SBX_ENOMEM, "out of memory");
    envs[0] = idenv;
    for (size_t i = 0; i < n; i++)
        envs[i + 1] = sb->envs[i];
    cfg.n_envs = n + 1;
    cfg.envs = envs;
    uint8_t entropy[64];
    if (getrandom(entropy, sizeof(entropy), 0) == (ssize_t)sizeof(entropy)) {
        cfg.entropy.data = entropy;
        cfg.entropy.len = sizeof(entropy);
    }
    cfg.clock_ns = realtime_ns();
    cfg.default_cwd = sb->default_cwd ? sb->default_cwd : "";
    cfg.default_user = sb->default_user ? sb->default_user : "";
    cfg.max_processes = sb->max_processes;
    Sbx__Agent__NetConfig net = SBX__AGENT__NET_CONFIG__INIT;
    char addr[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN], dns[INET_ADDRSTRLEN];
    if (sb->net) {
        const struct net_link *l = net_get_link(sb->net);
        struct in_addr a = {htonl(l->addrs.guest)}, g = {htonl(l->addrs.gateway)},
                       d = {htonl(l->addrs.dns)};
        net.address = (char *)inet_ntop(AF_INET, &a, addr, sizeof(addr));
        net.gateway = (char *)inet_ntop(AF_INET, &g, gw, sizeof(gw));
        net.dns = (char *)inet_ntop(AF_INET, &d, dns, sizeof(dns));
        net.prefix = l->prefix;
        net.mac.data = (uint8_t *)l->addrs.guest_mac;
        net.mac.len = 6;
        cfg.net = &net;
    }
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT, *reply = NULL;
    f.id = 2;
    f.body_case = SBX__AGENT__FRAME__BODY_CONFIGURE;
    f.configure = &cfg;
    char err[512] = "";
    int r = agent_call(fd, w, &f, SBX__AGENT__FRAME__BODY_OK, &reply, err, sizeof(err));
    frame_free(reply);
    free(envs);
    if (r < 0)
        return sbx_seterr(sb, r, "configuring the guest agent: %s", err);
    return 0;
}

/* Arms (or with ms 0 disarms) the lifetime timer. */
/* The lifetime's end as sbx_get_info() shows it: `ms` from now (0: none). */
static void set_ends(struct sbx *sb, uint64_t ms)
{
    atomic_store(&sb->ends_ns, ms ? realtime_ns() + ms * 1000000ull : 0);
}

static int arm(struct sbx *sb, uint64_t ms)
{
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(ms / 1000);
    its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
    if (timerfd_settime(sb->life_fd, 0, &its, NULL) < 0)
        return sbx_seterr(sb, SBX_EIO, "timerfd_settime failed");
    set_ends(sb, ms);
    return 0;
}

int session_start_lifetime(struct sbx *sb)
{
    return sb->lifetime_ms ? arm(sb, sb->lifetime_ms) : 0;
}

void session_lifetime_expired(struct sbx *sb)
{
    atomic_store(&sb->expired, true);
    sbx_stop(sb, SBX_STATE_STOPPED, "the sandbox's lifetime expired");
}

const char *sbx_metadata(const sbx *sb, const char *key)
{
    if (!sb || !key)
        return NULL;
    for (size_t i = 0; i < sb->nmeta; i++)
        if (strcmp(sb->meta[i], key) == 0)
            return strchr(sb->meta[i], '\0') + 1;
    return NULL;
}

int sbx_metadata_at(const sbx *sb, size_t i, const char **key, const char **value)
{
    if (!sb || !key || !value)
        return SBX_EINVAL;
    if (i >= sb->nmeta)
        return SBX_ENOENT;
    *key = sb->meta[i];
    *value = strchr(sb->meta[i], '\0') + 1;
    return 0;
}

int sbx_set_timeout(sbx *sb, uint64_t ms)
{
    if (!sb)
        return SBX_EINVAL;
    if (ms > MAX_LIFETIME)
        return sbx_seterr(sb, SBX_EINVAL, "timeout exceeds a year");
    struct call c;
    int r = call_begin(sb, &c, 0);
    if (r < 0)
        return r;
    if (sb->isolated) {
        if ((r = iso_set_timeout(sb, ms)) == 0) {
            set_ends(sb, ms);
            registry_add(sb);
        }
    } else if (!sb->evbase) {
        r = call_fail(&c, SBX_ENOTSUP, "this sandbox has no lifetime timer");
    } else if ((r = arm(sb, ms)) == 0) {
        registry_add(sb);
    }
    call_end(&c);
    return r;
}

int sbx_get_metrics(sbx *sb, sbx_metrics *m, unsigned timeout_ms)
{
    if (!sb || !m)
        return sb ? sbx_seterr(sb, SBX_EINVAL, "metrics: NULL output") : SBX_EINVAL;
    memset(m, 0, sizeof(*m));
    Sbx__Agent__MetricsRequest mr = SBX__AGENT__METRICS_REQUEST__INIT;
    Sbx__Agent__Frame f = SBX__AGENT__FRAME__INIT, *reply;
    f.body_case = SBX__AGENT__FRAME__BODY_METRICS_REQUEST;
    f.metrics_request = &mr;
    int r = agent_request(sb, timeout_ms ? timeout_ms : METRICS_MS, &f,
                          SBX__AGENT__FRAME__BODY_METRICS, &reply, "metrics");
    if (r == 0) {
        const Sbx__Agent__Metrics *g = reply->metrics;
        m->uptime_ms = g->uptime_ms;
        m->cpus = g->cpus;
        m->cpu_busy_ms = g->cpu_busy_ms;
        m->cpu_total_ms = g->cpu_total_ms;
        m->mem_total_kib = g->mem_total_kib;
        m->mem_available_kib = g->mem_available_kib;
        m->disk_total_bytes = g->disk_total_bytes;
        m->disk_used_bytes = g->disk_used_bytes;
        m->processes = g->processes;
    }
    frame_free(reply);
    return r;
}
