/* test-tcpsock.c - the shared TCP socket layer (plugins/common/tcpsock.h)
 * on its own: the listen socket, the 24-byte info, its checks, connect. */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "plugins/common/tcpsock.h"
#include "tests/common/runner.h"

/* ---- a host that keeps the last sentence and the log ------------------- */

static char last_error[512];
static char logbuf[4096];
static xfer_host_t host;

static void host_log(void *ctx, xfer_log_level_t lvl, const char *fmt, ...)
{
    size_t n = strlen(logbuf);
    va_list ap;

    (void)ctx;
    if (n + 8 >= sizeof logbuf)
        return;
    n += (size_t)snprintf(logbuf + n, sizeof logbuf - n, "%s ",
                          lvl == XFER_LOG_WARN ? "WARN" : "log");
    va_start(ap, fmt);
    vsnprintf(logbuf + n, sizeof logbuf - n, fmt, ap);
    va_end(ap);
    n = strlen(logbuf);
    if (n + 1 < sizeof logbuf)
        strcat(logbuf, "\n");
}

static xfer_status_t host_error(void *ctx, xfer_status_t st, const char *fmt,
                                ...)
{
    va_list ap;

    (void)ctx;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

static void host_reset(int auth)
{
    memset(&host, 0, sizeof host);
    host.size = sizeof host;
    host.agent_name = "a";
    host.log = host_log;
    host.error = host_error;
    host.auth = auth;
    last_error[0] = logbuf[0] = '\0';
}

/* A config as the tcp plugin's defaults, under another plugin's name, so
 * every sentence shows whose it is. */
static xfer__tcpsock_cfg_t cfg_default(void)
{
    xfer__tcpsock_cfg_t c;

    memset(&c, 0, sizeof c);
    c.name = "ucx";
    c.addr = "127.0.0.1";
    c.nodelay = 1;
    c.keepalive = 1;
    c.timeout_ms = 10000;
    return c;
}

static void sock_close(void *arg)
{
    xfer__tcpsock_close(arg);
}

static xfer__tcpsock_t *open_ok(const xfer__tcpsock_cfg_t *c)
{
    static xfer__tcpsock_t socks[4];
    static size_t next;
    xfer__tcpsock_t *s = &socks[next++ % 4];

    XT_REQUIRE(xfer__tcpsock_open(s, &host, c) == XFER_OK,
               "open %s: %s", c->addr ? c->addr : "(null)", last_error);
    XT_REQUIRE(s->lfd >= 0, "lfd %d after XFER_OK", s->lfd);
    xt_defer(sock_close, s);
    return s;
}

static uint16_t listen_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;

    XT_REQUIRE(getsockname(fd, (struct sockaddr *)&ss, &sl) == 0,
               "getsockname: %s", strerror(errno));
    return ntohs(ss.ss_family == AF_INET
                     ? ((struct sockaddr_in *)&ss)->sin_port
                     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* ---- the listen socket and its info ------------------------------------ */

static void test_info_ipv4(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    xfer__tcpsock_t *s;
    uint8_t want[XFER__TCPSOCK_INFO_SIZE] = { 'X', 'T', 'C', 'P', 1, 4 };
    uint16_t port;
    char str[64], exp[64];

    host_reset(0);
    s = open_ok(&c);
    port = htons(listen_port(s->lfd));
    memcpy(want + 6, &port, 2);
    want[8] = 127;
    want[11] = 1;
    XT_CHECK(memcmp(s->info, want, sizeof want) == 0,
             "info is not XTCP v1, family 4, the port, 127.0.0.1, zeros");
    XT_CHECK(xfer__tcpsock_info_check(s, s->info, sizeof s->info) == XFER_OK,
             "own info refused: %s", last_error);
    xfer__tcpsock_info_str(s, s->info, sizeof s->info, str, sizeof str);
    snprintf(exp, sizeof exp, "127.0.0.1:%u", (unsigned)ntohs(port));
    XT_CHECK(!strcmp(str, exp), "info_str '%s', want '%s'", str, exp);
    XT_CHECK(!strstr(logbuf, "WARN"), "loopback warned: %s", logbuf);
    XT_CHECK(strstr(logbuf, exp) != NULL, "no debug line naming %s: %s", exp,
             logbuf);
}

static void test_info_ipv6(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    /* Static: the deferred close runs in the teardown, after this frame
     * is gone (ASan: stack-use-after-return). */
    static xfer__tcpsock_t s;
    uint8_t want[XFER__TCPSOCK_INFO_SIZE] = { 'X', 'T', 'C', 'P', 1, 6 };
    uint16_t port;
    char str[64], exp[64];

    host_reset(0);
    c.addr = "[::1]";
    if (xfer__tcpsock_open(&s, &host, &c) != XFER_OK) {
        /* A host without IPv6 loopback: nothing here to test. */
        printf("SKIP: no IPv6 loopback (%s)\n", last_error);
        return;
    }
    xt_defer(sock_close, &s);
    port = htons(listen_port(s.lfd));
    memcpy(want + 6, &port, 2);
    want[23] = 1;
    XT_CHECK(memcmp(s.info, want, sizeof want) == 0,
             "info is not XTCP v1, family 6, the port, ::1");
    xfer__tcpsock_info_str(&s, s.info, sizeof s.info, str, sizeof str);
    snprintf(exp, sizeof exp, "[::1]:%u", (unsigned)ntohs(port));
    XT_CHECK(!strcmp(str, exp), "info_str '%s', want '%s'", str, exp);
}

static void test_advertise(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    xfer__tcpsock_t *s;
    char str[64], exp[64];

    host_reset(0);
    c.advertise = "10.1.2.3";
    s = open_ok(&c);
    xfer__tcpsock_info_str(s, s->info, sizeof s->info, str, sizeof str);
    snprintf(exp, sizeof exp, "10.1.2.3:%u", (unsigned)listen_port(s->lfd));
    XT_CHECK(!strcmp(str, exp), "advertised '%s', want '%s'", str, exp);
}

/* A wildcard listener advertises a real address, and warns about the
 * missing secret exactly when there is none. */
static void test_wildcard_warn(void)
{
    const char *warn = "WARN listening on 0.0.0.0 without authentication: "
                       "anyone who reaches it can claim any agent's name "
                       "(set auth_key_file, docs/security.md)";
    xfer__tcpsock_cfg_t c = cfg_default();
    xfer__tcpsock_t *s;

    host_reset(0);
    c.addr = "0.0.0.0";
    s = open_ok(&c);
    XT_CHECK(strstr(logbuf, warn) != NULL, "no warning in: %s", logbuf);
    XT_CHECK(memcmp(s->info + 8, "\0\0\0\0", 4) != 0,
             "a wildcard listener advertised 0.0.0.0");

    host_reset(1);
    s = open_ok(&c);
    XT_CHECK(!strstr(logbuf, "without authentication"),
             "warned with a secret: %s", logbuf);
}

/* open refuses c with st and exactly the sentence want, and holds no fd. */
static void open_fails(const xfer__tcpsock_cfg_t *c, xfer_status_t st,
                       const char *want)
{
    xfer__tcpsock_t t;

    last_error[0] = '\0';
    XT_CHECK(xfer__tcpsock_open(&t, &host, c) == st, "not refused: want '%s'",
             want);
    XT_CHECK(!strcmp(last_error, want), "sentence '%s', want '%s'",
             last_error, want);
    XT_CHECK(t.lfd == -1, "lfd %d after a failure", t.lfd);
    xfer__tcpsock_close(&t); /* closing a closed one: nothing */
}

static void test_open_errors(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    xfer__tcpsock_t *s;
    char want[160];
    uint16_t port;

    host_reset(0);
    c.addr = "host.example";
    open_fails(&c, XFER_ERR_CONFIG, "ucx: addr 'host.example' is not a "
                                    "numeric IPv4 or IPv6 address");
    c = cfg_default();
    c.advertise = "::";
    open_fails(&c, XFER_ERR_CONFIG, "ucx: advertise '::' is not a numeric, "
                                    "non-wildcard IPv4 or IPv6 address");

    /* The port another listener holds. */
    c = cfg_default();
    s = open_ok(&c);
    port = listen_port(s->lfd);
    c.port = port;
    snprintf(want, sizeof want, "ucx: cannot listen on 127.0.0.1 port %u: %s",
             (unsigned)port, strerror(EADDRINUSE));
    open_fails(&c, XFER_ERR_BACKEND, want);
}

/* ---- info_check: each way a blob can be wrong, in its own words -------- */

static void bad_info(xfer__tcpsock_t *s, const uint8_t *b, size_t len,
                     const char *want)
{
    last_error[0] = '\0';
    XT_CHECK(xfer__tcpsock_info_check(s, b, len) == XFER_ERR_INVALID,
             "accepted: want '%s'", want);
    XT_CHECK(!strcmp(last_error, want), "sentence '%s', want '%s'",
             last_error, want);
}

static void test_info_check(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    xfer__tcpsock_t *s;
    uint8_t b[XFER__TCPSOCK_INFO_SIZE + 1];

    host_reset(0);
    s = open_ok(&c);
    memcpy(b, s->info, XFER__TCPSOCK_INFO_SIZE);
    b[XFER__TCPSOCK_INFO_SIZE] = 0;
    bad_info(s, b, 25, "ucx: connection info is 25 bytes, a tcp address is "
                       "24");
    b[0] = 'Y';
    bad_info(s, b, 24, "ucx: connection info is not a version 1 tcp address "
                       "(bad magic or version 1)");
    b[0] = 'X';
    b[4] = 2;
    bad_info(s, b, 24, "ucx: connection info is not a version 1 tcp address "
                       "(bad magic or version 2)");
    b[4] = 1;
    b[5] = 5;
    bad_info(s, b, 24, "ucx: connection info names address family 5, not 4 "
                       "or 6");
    b[5] = 4;
    b[6] = b[7] = 0;
    bad_info(s, b, 24, "ucx: connection info names port 0");
    memcpy(b, s->info, XFER__TCPSOCK_INFO_SIZE);
    b[23] = 1;
    bad_info(s, b, 24, "ucx: connection info has trailing bytes after an "
                       "IPv4 address");
    b[5] = 6; /* the same bytes as an IPv6 address are fine */
    XT_CHECK(xfer__tcpsock_info_check(s, b, 24) == XFER_OK,
             "an IPv6 info refused: %s", last_error);
}

/* ---- connect and accept: options set, bytes through -------------------- */

static int opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;

    XT_REQUIRE(getsockopt(fd, level, name, &v, &l) == 0, "getsockopt: %s",
               strerror(errno));
    return v;
}

static void fd_close(void *arg)
{
    close((int)(intptr_t)arg);
}

static void test_connect(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    const xfer__stream_transport_t *tp = &xfer__tcpsock_transport;
    xfer__tcpsock_t *s;
    struct pollfd p;
    char msg[] = "twenty-four bytes, then!", got[sizeof msg];
    int fd, afd, inprog = -1;
    ssize_t n;

    host_reset(0);
    c.timeout_ms = 7000;
    s = open_ok(&c);
    XT_REQUIRE(tp->info_check == xfer__tcpsock_info_check &&
               tp->connect == xfer__tcpsock_connect &&
               tp->accepted == xfer__tcpsock_accepted &&
               tp->info_str == xfer__tcpsock_info_str && !tp->conn_up &&
               !tp->conn_down && !tp->fd_received && !tp->held_ready &&
               !tp->mem_checked,
               "the transport table is not the four hooks alone");
    fd = tp->connect(s, s->info, sizeof s->info, &inprog);
    XT_REQUIRE(fd >= 0, "connect: %s", strerror(-fd));
    xt_defer(fd_close, (void *)(intptr_t)fd);
    XT_CHECK(inprog == 0 || inprog == 1, "in_progress %d", inprog);
    p.fd = s->lfd;
    p.events = POLLIN;
    XT_REQUIRE(poll(&p, 1, 10000) == 1, "nothing to accept");
    afd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
    XT_REQUIRE(afd >= 0, "accept: %s", strerror(errno));
    xt_defer(fd_close, (void *)(intptr_t)afd);
    XT_CHECK(tp->accepted(s, afd) == 0, "an accepted socket refused");
    XT_CHECK(opt(fd, IPPROTO_TCP, TCP_NODELAY) != 0, "no TCP_NODELAY");
    XT_CHECK(opt(afd, IPPROTO_TCP, TCP_NODELAY) != 0, "no TCP_NODELAY");
    XT_CHECK(opt(afd, SOL_SOCKET, SO_KEEPALIVE) != 0, "no SO_KEEPALIVE");
    XT_CHECK(opt(afd, IPPROTO_TCP, TCP_KEEPIDLE) == 7, "TCP_KEEPIDLE %d",
             opt(afd, IPPROTO_TCP, TCP_KEEPIDLE));
    XT_CHECK(opt(afd, IPPROTO_TCP, TCP_KEEPINTVL) == 2, "TCP_KEEPINTVL %d",
             opt(afd, IPPROTO_TCP, TCP_KEEPINTVL));
    XT_CHECK(opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT) == 7000,
             "TCP_USER_TIMEOUT %d", opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT));
    XT_CHECK(!strstr(logbuf, "WARN"), "warned: %s", logbuf);

    p.fd = fd;
    p.events = POLLOUT;
    XT_REQUIRE(poll(&p, 1, 10000) == 1, "connect never finished");
    XT_REQUIRE(send(fd, msg, sizeof msg, MSG_NOSIGNAL) == (ssize_t)sizeof msg,
               "send: %s", strerror(errno));
    n = recv(afd, got, sizeof got, MSG_WAITALL);
    XT_CHECK(n == (ssize_t)sizeof msg && !memcmp(got, msg, sizeof msg),
             "received %zd bytes, not what was sent", n);
}

/* With nodelay and keepalive off, neither is set; a refused connect is
 * its errno. */
static void test_connect_plain(void)
{
    xfer__tcpsock_cfg_t c = cfg_default();
    xfer__tcpsock_t *s;
    uint8_t info[XFER__TCPSOCK_INFO_SIZE];
    int fd, inprog = -1;

    host_reset(0);
    c.nodelay = 0;
    c.keepalive = 0;
    s = open_ok(&c);
    fd = xfer__tcpsock_connect(s, s->info, sizeof s->info, &inprog);
    XT_REQUIRE(fd >= 0, "connect: %s", strerror(-fd));
    xt_defer(fd_close, (void *)(intptr_t)fd);
    XT_CHECK(opt(fd, IPPROTO_TCP, TCP_NODELAY) == 0, "TCP_NODELAY set");
    XT_CHECK(opt(fd, SOL_SOCKET, SO_KEEPALIVE) == 0, "SO_KEEPALIVE set");

    /* The same address once nobody listens there. */
    memcpy(info, s->info, sizeof info);
    xfer__tcpsock_close(s);
    fd = xfer__tcpsock_connect(s, info, sizeof info, &inprog);
    if (fd >= 0) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0;
        socklen_t l = sizeof err;

        XT_CHECK(inprog == 1, "connected to a closed port");
        XT_REQUIRE(poll(&p, 1, 10000) == 1, "connect never finished");
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
        close(fd);
        fd = -err;
    }
    XT_CHECK(fd == -ECONNREFUSED, "connect to a closed port: %d (%s)", fd,
             strerror(-fd));
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_info_ipv4),
        XT_TEST(test_info_ipv6),
        XT_TEST(test_advertise),
        XT_TEST(test_wildcard_warn),
        XT_TEST(test_open_errors),
        XT_TEST(test_info_check),
        XT_TEST(test_connect),
        XT_TEST(test_connect_plain),
        XT_END,
    };
    static const xt_suite_t suites[] = { { "tcpsock", tests } };

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    return xt_run("test-tcpsock", suites, 1);
}
