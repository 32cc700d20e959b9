// SPDX-License-Identifier: Apache-2.0
/* Guest-booting tests of port exposure: web servers in the guest fetched from the host. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Connects to "127.0.0.1:PORT"; -1 when refused. */
static int dial(const char *hostport)
{
    const char *colon = strrchr(hostport, ':');
    CHECK(colon && strncmp(hostport, "127.0.0.1:", 10) == 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One HTTP/1.0 GET over a plain socket. Returns the whole response (malloc'd, NUL-terminated,
   *len without the NUL), or NULL when the connection ended without any answer (nothing
   listened in the guest yet: the relay resets it). */
static char *http_get(const char *hostport, const char *path, size_t *len)
{
    int fd = dial(hostport);
    CHECK(fd >= 0); /* the host side always accepts while the port is exposed */
    char req[256];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, hostport);
    CHECK(send(fd, req, (size_t)n, MSG_NOSIGNAL) == n);
    size_t cap = 1 << 16, got = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (got == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r <= 0) {
            CHECK(r == 0 || errno == ECONNRESET); /* not a timeout */
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (got == 0) {
        free(buf);
        return NULL;
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

/* Fetches path until the server answers (it may still be starting), within timeout_ms. */
static char *fetch(const char *hostport, const char *path, size_t *len, double timeout_ms)
{
    double t0 = itest_ms();
    for (;;) {
        char *r = http_get(hostport, path, len);
        if (r)
            return r;
        if (itest_ms() - t0 > timeout_ms)
            itest_fail(__FILE__, __LINE__, "no answer from %s%s within %.0f ms", hostport, path,
                       timeout_ms);
        usleep(200 * 1000);
    }
}

/* The body of a "200 OK" response. */
static const char *body_of(const char *resp)
{
    CHECK(strncmp(resp, "HTTP/1.0 200", 12) == 0 || strncmp(resp, "HTTP/1.1 200", 12) == 0);
    const char *b = strstr(resp, "\r\n\r\n");
    CHECK(b);
    return b + 4;
}

static sbx_proc *start_server(sbx *sb, unsigned port, const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "exec python3 -m http.server %u --bind 127.0.0.1 --directory %s",
             port, dir);
    sbx_exec_options o = SBX_EXEC_OPTIONS_INIT;
    o.cmd = cmd;
    sbx_proc *p = NULL;
    CHECK_OK(sb, sbx_proc_start(sb, &o, &p));
    return p;
}

/* Without guest networking (only loopback): two web servers bound to the guest's 127.0.0.1,
   each on its own host port; a port where nothing listens closes the host connection. */
SBX_TEST(http_servers)
{
    sbx_options o = itest_options("base");
    o.network = SBX_NET_NONE;
    sbx *sb = NULL;
    CHECK_OK(sb, sbx_create(&sb, &o));

    /* 300 KiB of known content (more than one relay buffer) and a small file elsewhere. */
    size_t big_len = 300u << 10;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    CHECK_OK(sb, sbx_write_file(sb, "/home/user/www/big.txt", big, big_len, 0));
    const char *small = "second service\n";
    CHECK_OK(sb, sbx_write_file(sb, "/home/user/other/id.txt", small, strlen(small), 0));

    /* Exposed before anything listens: allowed, and connections are just closed. */
    char a8000[64], a8001[64], a8002[64];
    CHECK_OK(sb, sbx_get_host(sb, 8000, a8000, sizeof(a8000)));
    CHECK_OK(sb, sbx_get_host(sb, 8001, a8001, sizeof(a8001)));
    CHECK_OK(sb, sbx_get_host(sb, 8002, a8002, sizeof(a8002)));
    CHECK(strcmp(a8000, a8001) != 0 && strcmp(a8001, a8002) != 0);
    fprintf(stderr, "8000 -> %s, 8001 -> %s, 8002 -> %s\n", a8000, a8001, a8002);
    size_t len;
    char *none = http_get(a8000, "/big.txt", &len);
    CHECK(none == NULL);

    sbx_proc *p1 = start_server(sb, 8000, "/home/user/www");
    sbx_proc *p2 = start_server(sb, 8001, "/home/user/other");
    double t0 = itest_ms();
    char *resp = fetch(a8000, "/big.txt", &len, 90000);
    fprintf(stderr, "first answer after %.0f ms\n", itest_ms() - t0);
    const char *b = body_of(resp);
    CHECK((size_t)(resp + len - b) == big_len);
    CHECK(memcmp(b, big, big_len) == 0);
    free(resp);

    resp = fetch(a8001, "/id.txt", &len, 90000);
    CHECK(strcmp(body_of(resp), small) == 0);
    free(resp);

    /* Again, timed: the connection path once the servers are up. */
    t0 = itest_ms();
    resp = fetch(a8000, "/big.txt", &len, 30000);
    b = body_of(resp);
    CHECK((size_t)(resp + len - b) == big_len && memcmp(b, big, big_len) == 0);
    fprintf(stderr, "GET 300 KiB: %.0f ms\n", itest_ms() - t0);
    free(resp);

    /* Nothing on 8002: the host-side connection ends without an answer, promptly. */
    t0 = itest_ms();
    CHECK(http_get(a8002, "/", &len) == NULL);
    CHECK(itest_ms() - t0 < 15000);

    /* Unexposed: the host port is closed; the server itself goes on. */
    CHECK_OK(sb, sbx_unexpose(sb, 8001));
    CHECK(dial(a8001) == -1);
    CHECK_OK(sb, sbx_get_host(sb, 8001, a8001, sizeof(a8001)));
    resp = fetch(a8001, "/id.txt", &len, 30000);
    CHECK(strcmp(body_of(resp), small) == 0);
    free(resp);

    /* A connection in the middle of a request when the sandbox is destroyed: closed. */
    int live = dial(a8000);
    CHECK(live >= 0);
    CHECK(send(live, "GET /big", 8, MSG_NOSIGNAL) == 8);
    usleep(500 * 1000);
    sbx_proc_close(p1);
    sbx_proc_close(p2);
    free(big);
    sbx_destroy(sb);
    char c;
    ssize_t r = recv(live, &c, 1, 0);
    CHECK(r == 0 || (r < 0 && errno == ECONNRESET));
    close(live);
}

ITEST_MAIN(ITEST(http_servers))
