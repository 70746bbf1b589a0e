/* tcpsock.c - TCP sockets shared by the tcp plugin and the control channels
 * of hardware plugins: addresses, listen socket, connection info, options. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "plugins/common/tcpsock.h"

#define INFO_MAGIC 0x50435458u /* "XTCP" */
#define INFO_VERSION 1u
#define INFO_SIZE XFER__TCPSOCK_INFO_SIZE
#define DEFAULT_ADDR "127.0.0.1"
#define DEFAULT_BACKLOG 128

/* Every sentence starts with the plugin's name: "%s: ...", s->cfg.name. */
#define SERR(s, st, ...) (s)->host->error((s)->host->ctx, (st), __VA_ARGS__)

/* Numeric addresses only: a name would need a resolver, and init must
 * not block on DNS.  "localhost" is common enough to be spared. */
static int addr_parse(const char *s, uint16_t port,
                      struct sockaddr_storage *ss, socklen_t *sl)
{
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof *ss);
    if (!strcmp(s, "localhost"))
        s = "127.0.0.1";
    if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *sl = sizeof *in;
        return 0;
    }
    if (s[0] == '[') {
        char tmp[INET6_ADDRSTRLEN];
        size_t n = strlen(s);

        if (n < 3 || n - 2 >= sizeof tmp || s[n - 1] != ']')
            return -1;
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        s = tmp;
        if (inet_pton(AF_INET6, s, &in6->sin6_addr) != 1)
            return -1;
    } else if (inet_pton(AF_INET6, s, &in6->sin6_addr) != 1) {
        return -1;
    }
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    *sl = sizeof *in6;
    return 0;
}

static int addr_is_any(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr ==
               htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Reachable from this host alone: 127.0.0.0/8, ::1, ::ffff:127.x. */
static int addr_is_loopback(const struct sockaddr_storage *ss)
{
    const struct in6_addr *a6;

    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >>
                24) == 127;
    a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a6) ||
           (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
}

static uint16_t addr_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET
                     ? ((const struct sockaddr_in *)ss)->sin_port
                     : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Whether the agent holds a shared secret (ABI minor 4: an older core
 * offers none). */
static int host_auth(const xfer_host_t *host)
{
    return host->size >= offsetof(xfer_host_t, auth) + sizeof(host->auth) &&
           host->auth;
}

/* For a wildcard listener, advertise an address a remote host can reach:
 * the first interface that is up and not loopback, else loopback. */
static void addr_pick(xfer__tcpsock_t *s, struct sockaddr_storage *ss)
{
    struct ifaddrs *ifa, *i;
    int fam = ss->ss_family;

    if (getifaddrs(&ifa) == 0) {
        for (i = ifa; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != fam ||
                !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
                continue;
            if (fam == AF_INET6 &&
                IN6_IS_ADDR_LINKLOCAL(
                    &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr))
                continue;
            if (fam == AF_INET)
                ((struct sockaddr_in *)ss)->sin_addr =
                    ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
            else
                ((struct sockaddr_in6 *)ss)->sin6_addr =
                    ((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
            freeifaddrs(ifa);
            return;
        }
        freeifaddrs(ifa);
    }
    if (fam == AF_INET)
        ((struct sockaddr_in *)ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else
        ((struct sockaddr_in6 *)ss)->sin6_addr = in6addr_loopback;
    s->host->log(s->host->ctx, XFER_LOG_WARN,
                 "listening on a wildcard address and no non-loopback "
                 "interface found: advertising loopback");
}

static void info_encode(uint8_t *info, const struct sockaddr_storage *ss)
{
    uint32_t magic = htole32(INFO_MAGIC);

    memset(info, 0, INFO_SIZE);
    memcpy(info, &magic, 4);
    info[4] = INFO_VERSION;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        info[5] = 4;
        memcpy(info + 6, &in->sin_port, 2);
        memcpy(info + 8, &in->sin_addr, 4);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        info[5] = 6;
        memcpy(info + 6, &in6->sin6_port, 2);
        memcpy(info + 8, &in6->sin6_addr, 16);
    }
}

static socklen_t info_decode(const uint8_t *info, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (info[5] == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_port, info + 6, 2);
        memcpy(&in->sin_addr, info + 8, 4);
        return sizeof *in;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_port, info + 6, 2);
        memcpy(&in6->sin6_addr, info + 8, 16);
        return sizeof *in6;
    }
}

static void set_int(xfer__tcpsock_t *s, int fd, int level, int opt, int v,
                    const char *name)
{
    if (setsockopt(fd, level, opt, &v, sizeof v) < 0)
        s->host->log(s->host->ctx, XFER_LOG_WARN, "setsockopt %s=%d: %s",
                     name, v, strerror(errno));
}

static void sock_opts(xfer__tcpsock_t *s, int fd)
{
    const xfer__tcpsock_cfg_t *cfg = &s->cfg;
    unsigned secs = (unsigned)((cfg->timeout_ms + 999) / 1000);

    if (cfg->nodelay)
        set_int(s, fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    if (cfg->keepalive) {
        set_int(s, fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
        set_int(s, fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)secs, "TCP_KEEPIDLE");
        set_int(s, fd, IPPROTO_TCP, TCP_KEEPINTVL,
                (int)(secs / 3 ? secs / 3 : 1), "TCP_KEEPINTVL");
        set_int(s, fd, IPPROTO_TCP, TCP_KEEPCNT, 3, "TCP_KEEPCNT");
    }
    /* Unacknowledged data older than the timeout kills the connection
     * in the kernel too, so a cut link is an error, not a silent wait. */
    set_int(s, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (int)cfg->timeout_ms,
            "TCP_USER_TIMEOUT");
}

/* Buffer sizes must be set before connect/listen to affect the window
 * scale; accepted sockets inherit them from the listener. */
static void sock_bufs(xfer__tcpsock_t *s, int fd)
{
    if (s->cfg.sndbuf)
        set_int(s, fd, SOL_SOCKET, SO_SNDBUF, (int)s->cfg.sndbuf, "SO_SNDBUF");
    if (s->cfg.rcvbuf)
        set_int(s, fd, SOL_SOCKET, SO_RCVBUF, (int)s->cfg.rcvbuf, "SO_RCVBUF");
}

/* ------------------------------------------------------------------ */
/* The listen socket                                                   */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__tcpsock_open(xfer__tcpsock_t *s, const xfer_host_t *host,
                                 const xfer__tcpsock_cfg_t *cfg)
{
    struct sockaddr_storage ss, adv;
    socklen_t sl, asl;
    xfer_status_t st;
    const char *a;
    int e;

    memset(s, 0, sizeof *s);
    s->host = host;
    s->cfg = *cfg;
    s->lfd = -1;
    if (!s->cfg.name)
        s->cfg.name = "tcp";
    if (!s->cfg.backlog)
        s->cfg.backlog = DEFAULT_BACKLOG;
    a = s->cfg.addr ? s->cfg.addr : DEFAULT_ADDR;
    if (addr_parse(a, (uint16_t)s->cfg.port, &ss, &sl) < 0)
        return SERR(s, XFER_ERR_CONFIG,
                    "%s: addr '%s' is not a numeric IPv4 or IPv6 address",
                    s->cfg.name, a);
    s->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (s->lfd < 0)
        return SERR(s, XFER_ERR_BACKEND, "%s: socket: %s", s->cfg.name,
                    strerror(errno));
    set_int(s, s->lfd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    sock_bufs(s, s->lfd);
    if (bind(s->lfd, (struct sockaddr *)&ss, sl) < 0 ||
        listen(s->lfd, (int)s->cfg.backlog) < 0) {
        e = errno;
        st = SERR(s, XFER_ERR_BACKEND, "%s: cannot listen on %s port %u: %s",
                  s->cfg.name, a, (unsigned)s->cfg.port, strerror(e));
        goto fail;
    }
    sl = sizeof ss;
    if (getsockname(s->lfd, (struct sockaddr *)&ss, &sl) < 0) {
        st = SERR(s, XFER_ERR_BACKEND, "%s: getsockname: %s", s->cfg.name,
                  strerror(errno));
        goto fail;
    }

    adv = ss;
    if (s->cfg.advertise && s->cfg.advertise[0]) {
        if (addr_parse(s->cfg.advertise, addr_port(&ss), &adv, &asl) < 0 ||
            addr_is_any(&adv)) {
            st = SERR(s, XFER_ERR_CONFIG,
                      "%s: advertise '%s' is not a numeric, non-wildcard "
                      "IPv4 or IPv6 address",
                      s->cfg.name, s->cfg.advertise);
            goto fail;
        }
    } else if (addr_is_any(&adv)) {
        addr_pick(s, &adv);
    }
    info_encode(s->info, &adv);

    if (!addr_is_loopback(&ss) && !host_auth(host))
        host->log(host->ctx, XFER_LOG_WARN, "listening on %s without "
                  "authentication: anyone who reaches it can claim any "
                  "agent's name (set auth_key_file, docs/security.md)", a);
    {
        char where[80];

        xfer__tcpsock_info_str(s, s->info, sizeof s->info, where,
                               sizeof where);
        host->log(host->ctx, XFER_LOG_DEBUG, "listening on %s port %u, "
                  "advertising %s", a, (unsigned)addr_port(&ss), where);
    }
    return XFER_OK;
fail:
    xfer__tcpsock_close(s);
    return st;
}

void xfer__tcpsock_close(xfer__tcpsock_t *s)
{
    if (s->lfd >= 0)
        close(s->lfd);
    s->lfd = -1;
}

/* ------------------------------------------------------------------ */
/* Transport hooks for the stream engine                               */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__tcpsock_info_check(void *tctx, const void *info,
                                       size_t len)
{
    xfer__tcpsock_t *s = tctx;
    const uint8_t *b = info;
    uint32_t magic;
    uint16_t port;

    if (len != INFO_SIZE)
        return SERR(s, XFER_ERR_INVALID,
                    "%s: connection info is %zu bytes, a tcp address is %u",
                    s->cfg.name, len, INFO_SIZE);
    memcpy(&magic, b, 4);
    memcpy(&port, b + 6, 2);
    if (le32toh(magic) != INFO_MAGIC || b[4] != INFO_VERSION)
        return SERR(s, XFER_ERR_INVALID,
                    "%s: connection info is not a version %u tcp address "
                    "(bad magic or version %u)",
                    s->cfg.name, INFO_VERSION, b[4]);
    if (b[5] != 4 && b[5] != 6)
        return SERR(s, XFER_ERR_INVALID,
                    "%s: connection info names address family %u, not 4 or "
                    "6",
                    s->cfg.name, b[5]);
    if (!port)
        return SERR(s, XFER_ERR_INVALID, "%s: connection info names port 0",
                    s->cfg.name);
    if (b[5] == 4) {
        for (int i = 12; i < 24; i++)
            if (b[i])
                return SERR(s, XFER_ERR_INVALID,
                            "%s: connection info has trailing bytes "
                            "after an IPv4 address",
                            s->cfg.name);
    }
    return XFER_OK;
}

void xfer__tcpsock_info_str(void *tctx, const void *info, size_t len,
                            char *buf, size_t size)
{
    struct sockaddr_storage ss;
    char ip[INET6_ADDRSTRLEN] = "?";

    (void)tctx;
    (void)len;
    info_decode(info, &ss);
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    }
}

int xfer__tcpsock_connect(void *tctx, const void *info, size_t len,
                          int *in_progress)
{
    xfer__tcpsock_t *s = tctx;
    struct sockaddr_storage ss;
    socklen_t sl = info_decode(info, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);

    (void)len;
    if (fd < 0)
        return -errno;
    sock_bufs(s, fd);
    sock_opts(s, fd);
    if (connect(fd, (struct sockaddr *)&ss, sl) == 0) {
        *in_progress = 0;
        return fd;
    }
    if (errno == EINPROGRESS) {
        *in_progress = 1;
        return fd;
    }
    {
        int e = errno;

        close(fd);
        return -e;
    }
}

int xfer__tcpsock_accepted(void *tctx, int fd)
{
    sock_opts(tctx, fd);
    return 0;
}

const xfer__stream_transport_t xfer__tcpsock_transport = {
    .info_check = xfer__tcpsock_info_check,
    .connect = xfer__tcpsock_connect,
    .accepted = xfer__tcpsock_accepted,
    .info_str = xfer__tcpsock_info_str,
};
