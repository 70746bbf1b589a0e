/* tcp.c - the TCP backend: parameters, listen socket, addresses and socket
 * options; everything above the socket is the shared stream engine. */
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
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

typedef struct tcp_config {
    const char *addr;
    uint64_t port;
    const char *advertise;
    int nodelay;
    int keepalive;
    uint64_t timeout_ms;
    size_t sndbuf;
    size_t rcvbuf;
    size_t inline_max;
    size_t rx_buf;
    uint64_t backlog;
    xfer__stream_limits_t lim; /* the engine's bounds (stream.h) */
} tcp_config_t;

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(tcp_config_t, f), lo, hi }
static const xfer_param_t tcp_params[] = {
    P("addr", XFER_PARAM_STRING, "127.0.0.1",
      "numeric IPv4/IPv6 address to listen on; 0.0.0.0 or :: listens on "
      "every interface, only when asked",
      addr, 1, 0),
    P("port", XFER_PARAM_UINT, "0", "port to listen on; 0 picks a free one",
      port, 0, 65535),
    P("advertise", XFER_PARAM_STRING, "",
      "address peers are told to connect to; empty: addr, or the first "
      "non-loopback interface address when addr is a wildcard",
      advertise, 1, 0),
    P("nodelay", XFER_PARAM_BOOL, "1",
      "TCP_NODELAY: send small frames at once (latency)", nodelay, 0, 1),
    P("keepalive", XFER_PARAM_BOOL, "1",
      "TCP keepalive probes, so an idle cut link is noticed in about "
      "2 x timeout_ms",
      keepalive, 0, 1),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a connect or posted transfer that makes no progress this long fails "
      "with XFER_ERR_TIMEOUT; also TCP_USER_TIMEOUT",
      timeout_ms, 1, 3600000),
    P("sndbuf", XFER_PARAM_SIZE, "0",
      "SO_SNDBUF in bytes; 0 keeps the kernel's autotuning", sndbuf, 0,
      1 << 30),
    P("rcvbuf", XFER_PARAM_SIZE, "0",
      "SO_RCVBUF in bytes; 0 keeps the kernel's autotuning", rcvbuf, 0,
      1 << 30),
    P("inline_max", XFER_PARAM_SIZE, "16K",
      "payloads up to this size are copied through the receive buffer; "
      "larger ones are received straight into the destination",
      inline_max, 0, 16 << 20),
    P("rx_buf", XFER_PARAM_SIZE, "256K",
      "per-connection receive buffer; must exceed inline_max by 40 bytes",
      rx_buf, 4096, 256 << 20),
    P("backlog", XFER_PARAM_UINT, "128", "listen(2) backlog", backlog, 1,
      65535),
    XFER__STREAM_LIMIT_PARAMS(tcp_config_t, lim),
};
#undef P

/* Connection info: what a peer needs to connect, 24 bytes.
 *   0 u32 magic "XTCP" (little-endian)   4 u8 version (1)
 *   5 u8 family (4 or 6)                 6 u16 port (network order)
 *   8 u8[16] address (IPv4: 4 bytes, then zeros) */
#define TCP_INFO_MAGIC 0x50435458u
#define TCP_INFO_VERSION 1u
#define TCP_INFO_SIZE 24u

typedef struct tcp {
    const xfer_host_t *host;
    tcp_config_t cfg;
    int lfd;
    uint8_t info[TCP_INFO_SIZE];
} tcp_t;

#define TERR(t, st, ...) (t)->host->error((t)->host->ctx, (st), __VA_ARGS__)

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

/* Whether the agent holds a shared secret (ABI minor 4: an older core
 * offers none). */
static int host_auth(const xfer_host_t *host)
{
    return host->size >= offsetof(xfer_host_t, auth) + sizeof(host->auth) &&
           host->auth;
}

/* For a wildcard listener, advertise an address a remote host can reach:
 * the first interface that is up and not loopback, else loopback. */
static void addr_pick(tcp_t *t, struct sockaddr_storage *ss)
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
    t->host->log(t->host->ctx, XFER_LOG_WARN,
                 "listening on a wildcard address and no non-loopback "
                 "interface found: advertising loopback");
}

static void info_encode(uint8_t *info, const struct sockaddr_storage *ss)
{
    uint32_t magic = htole32(TCP_INFO_MAGIC);

    memset(info, 0, TCP_INFO_SIZE);
    memcpy(info, &magic, 4);
    info[4] = TCP_INFO_VERSION;
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

/* ------------------------------------------------------------------ */
/* Transport hooks for the stream engine                               */
/* ------------------------------------------------------------------ */

static xfer_status_t tcp_info_check(void *tctx, const void *info, size_t len)
{
    tcp_t *t = tctx;
    const uint8_t *b = info;
    uint32_t magic;
    uint16_t port;

    if (len != TCP_INFO_SIZE)
        return TERR(t, XFER_ERR_INVALID,
                    "tcp: connection info is %zu bytes, a tcp address is %u",
                    len, TCP_INFO_SIZE);
    memcpy(&magic, b, 4);
    memcpy(&port, b + 6, 2);
    if (le32toh(magic) != TCP_INFO_MAGIC || b[4] != TCP_INFO_VERSION)
        return TERR(t, XFER_ERR_INVALID,
                    "tcp: connection info is not a version %u tcp address "
                    "(bad magic or version %u)",
                    TCP_INFO_VERSION, b[4]);
    if (b[5] != 4 && b[5] != 6)
        return TERR(t, XFER_ERR_INVALID,
                    "tcp: connection info names address family %u, not 4 or "
                    "6",
                    b[5]);
    if (!port)
        return TERR(t, XFER_ERR_INVALID,
                    "tcp: connection info names port 0");
    if (b[5] == 4) {
        for (int i = 12; i < 24; i++)
            if (b[i])
                return TERR(t, XFER_ERR_INVALID,
                            "tcp: connection info has trailing bytes after "
                            "an IPv4 address");
    }
    return XFER_OK;
}

static void tcp_info_str(void *tctx, const void *info, size_t len, char *buf,
                         size_t size)
{
    struct sockaddr_storage ss;
    char ip[INET6_ADDRSTRLEN] = "?";

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

static void set_int(tcp_t *t, int fd, int level, int opt, int v,
                    const char *name)
{
    if (setsockopt(fd, level, opt, &v, sizeof v) < 0)
        t->host->log(t->host->ctx, XFER_LOG_WARN, "setsockopt %s=%d: %s",
                     name, v, strerror(errno));
}

static void sock_opts(tcp_t *t, int fd)
{
    const tcp_config_t *cfg = &t->cfg;
    unsigned secs = (unsigned)((cfg->timeout_ms + 999) / 1000);

    if (cfg->nodelay)
        set_int(t, fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    if (cfg->keepalive) {
        set_int(t, fd, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
        set_int(t, fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)secs, "TCP_KEEPIDLE");
        set_int(t, fd, IPPROTO_TCP, TCP_KEEPINTVL,
                (int)(secs / 3 ? secs / 3 : 1), "TCP_KEEPINTVL");
        set_int(t, fd, IPPROTO_TCP, TCP_KEEPCNT, 3, "TCP_KEEPCNT");
    }
    /* Unacknowledged data older than the timeout kills the connection
     * in the kernel too, so a cut link is an error, not a silent wait. */
    set_int(t, fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (int)cfg->timeout_ms,
            "TCP_USER_TIMEOUT");
}

/* Buffer sizes must be set before connect/listen to affect the window
 * scale; accepted sockets inherit them from the listener. */
static void sock_bufs(tcp_t *t, int fd)
{
    if (t->cfg.sndbuf)
        set_int(t, fd, SOL_SOCKET, SO_SNDBUF, (int)t->cfg.sndbuf, "SO_SNDBUF");
    if (t->cfg.rcvbuf)
        set_int(t, fd, SOL_SOCKET, SO_RCVBUF, (int)t->cfg.rcvbuf, "SO_RCVBUF");
}

static int tcp_connect(void *tctx, const void *info, size_t len,
                       int *in_progress)
{
    tcp_t *t = tctx;
    struct sockaddr_storage ss;
    socklen_t sl = info_decode(info, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);

    if (fd < 0)
        return -errno;
    sock_bufs(t, fd);
    sock_opts(t, fd);
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

static int tcp_accepted(void *tctx, int fd)
{
    sock_opts(tctx, fd);
    return 0;
}

static const xfer__stream_transport_t tcp_transport = {
    .info_check = tcp_info_check,
    .connect = tcp_connect,
    .accepted = tcp_accepted,
    .info_str = tcp_info_str,
};

/* ------------------------------------------------------------------ */
/* Backend ops                                                         */
/* ------------------------------------------------------------------ */

static xfer_status_t tcp_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be)
{
    struct sockaddr_storage ss, adv;
    socklen_t sl, asl;
    xfer__stream_cfg_t scfg;
    xfer_status_t st;
    tcp_t *t;
    const char *a;
    int e;

    if (!(t = calloc(1, sizeof *t)))
        return host->error(host->ctx, XFER_ERR_NOMEM, "tcp: out of memory");
    t->host = host;
    t->cfg = *(const tcp_config_t *)config;
    t->lfd = -1;
    a = t->cfg.addr ? t->cfg.addr : "127.0.0.1";
    if (addr_parse(a, (uint16_t)t->cfg.port, &ss, &sl) < 0) {
        st = TERR(t, XFER_ERR_CONFIG,
                  "tcp: addr '%s' is not a numeric IPv4 or IPv6 address", a);
        goto fail;
    }
    t->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    0);
    if (t->lfd < 0) {
        st = TERR(t, XFER_ERR_BACKEND, "tcp: socket: %s", strerror(errno));
        goto fail;
    }
    set_int(t, t->lfd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    sock_bufs(t, t->lfd);
    if (bind(t->lfd, (struct sockaddr *)&ss, sl) < 0 ||
        listen(t->lfd, (int)t->cfg.backlog) < 0) {
        e = errno;
        st = TERR(t, XFER_ERR_BACKEND, "tcp: cannot listen on %s port %u: %s",
                  a, (unsigned)t->cfg.port, strerror(e));
        goto fail;
    }
    sl = sizeof ss;
    if (getsockname(t->lfd, (struct sockaddr *)&ss, &sl) < 0) {
        st = TERR(t, XFER_ERR_BACKEND, "tcp: getsockname: %s",
                  strerror(errno));
        goto fail;
    }

    adv = ss;
    if (t->cfg.advertise && t->cfg.advertise[0]) {
        uint16_t port = ntohs(ss.ss_family == AF_INET
                                  ? ((struct sockaddr_in *)&ss)->sin_port
                                  : ((struct sockaddr_in6 *)&ss)->sin6_port);

        if (addr_parse(t->cfg.advertise, port, &adv, &asl) < 0 ||
            addr_is_any(&adv)) {
            st = TERR(t, XFER_ERR_CONFIG,
                      "tcp: advertise '%s' is not a numeric, non-wildcard "
                      "IPv4 or IPv6 address",
                      t->cfg.advertise);
            goto fail;
        }
    } else if (addr_is_any(&adv)) {
        addr_pick(t, &adv);
    }
    info_encode(t->info, &adv);

    memset(&scfg, 0, sizeof scfg);
    scfg.name = "tcp";
    scfg.timeout_ms = t->cfg.timeout_ms;
    scfg.inline_max = t->cfg.inline_max;
    scfg.rx_buf = t->cfg.rx_buf;
    scfg.lim = t->cfg.lim;
    st = xfer__stream_create(host, &tcp_transport, t, &scfg, t->lfd, be);
    if (st != XFER_OK)
        goto fail;
    if (!addr_is_loopback(&ss) && !host_auth(host))
        host->log(host->ctx, XFER_LOG_WARN, "listening on %s without "
                  "authentication: anyone who reaches it can claim any "
                  "agent's name (set auth_key_file, docs/security.md)", a);
    {
        char where[80];

        tcp_info_str(t, t->info, sizeof t->info, where, sizeof where);
        host->log(host->ctx, XFER_LOG_DEBUG, "listening on %s port %u, "
                  "advertising %s", a, (unsigned)ntohs(
                      ss.ss_family == AF_INET
                          ? ((struct sockaddr_in *)&ss)->sin_port
                          : ((struct sockaddr_in6 *)&ss)->sin6_port),
                  where);
    }
    return XFER_OK;
fail:
    if (t->lfd >= 0)
        close(t->lfd);
    free(t);
    return st;
}

static void tcp_fini(xfer_be_t *be)
{
    tcp_t *t;

    if (!be)
        return;
    t = xfer__stream_tctx(be);
    xfer__stream_destroy(be);
    close(t->lfd);
    free(t);
}

static xfer_status_t tcp_conn_info(xfer_be_t *be, void *buf, size_t *len)
{
    tcp_t *t = xfer__stream_tctx(be);

    if (*len < TCP_INFO_SIZE) {
        *len = TCP_INFO_SIZE;
        return TERR(t, XFER_ERR_INVALID,
                    "tcp: connection info needs %u bytes", TCP_INFO_SIZE);
    }
    memcpy(buf, t->info, TCP_INFO_SIZE);
    *len = TCP_INFO_SIZE;
    return XFER_OK;
}

extern const xfer_backend_ops_t XFER_BACKEND_SYMBOL(tcp);
const xfer_backend_ops_t XFER_BACKEND_SYMBOL(tcp) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "tcp",
        .version = PACKAGE_VERSION,
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                XFER_CAP_REMOTE | XFER_CAP_LOCAL | XFER_CAP_SW_CHECK,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = tcp_params,
    .nparams = sizeof tcp_params / sizeof tcp_params[0],
    .config_size = sizeof(tcp_config_t),
    .init = tcp_init,
    .fini = tcp_fini,
    .conn_info = tcp_conn_info,
    /* mem_pack absent: the core's key, address and length suffice. */
    XFER__STREAM_OPS,
};
