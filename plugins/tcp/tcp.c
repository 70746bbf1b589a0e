/* tcp.c - the TCP backend: parameters and the ops table; the sockets are
 * tcpsock (plugins/common), everything above them the shared stream engine. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"
#include "plugins/common/tcpsock.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

typedef struct tcp_config {
    xfer__tcpsock_cfg_t sock; /* the socket's parameters (name: set by init) */
    size_t inline_max;
    size_t rx_buf;
    xfer__stream_limits_t lim; /* the engine's bounds (stream.h) */
} tcp_config_t;

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(tcp_config_t, f), lo, hi }
static const xfer_param_t tcp_params[] = {
    P("addr", XFER_PARAM_STRING, "127.0.0.1",
      "numeric IPv4/IPv6 address to listen on; 0.0.0.0 or :: listens on "
      "every interface, only when asked",
      sock.addr, 1, 0),
    P("port", XFER_PARAM_UINT, "0", "port to listen on; 0 picks a free one",
      sock.port, 0, 65535),
    P("advertise", XFER_PARAM_STRING, "",
      "address peers are told to connect to; empty: addr, or the first "
      "non-loopback interface address when addr is a wildcard",
      sock.advertise, 1, 0),
    P("nodelay", XFER_PARAM_BOOL, "1",
      "TCP_NODELAY: send small frames at once (latency)", sock.nodelay, 0, 1),
    P("keepalive", XFER_PARAM_BOOL, "1",
      "TCP keepalive probes, so an idle cut link is noticed in about "
      "2 x timeout_ms",
      sock.keepalive, 0, 1),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a connect or posted transfer that makes no progress this long fails "
      "with XFER_ERR_TIMEOUT; also TCP_USER_TIMEOUT",
      sock.timeout_ms, 1, 3600000),
    P("sndbuf", XFER_PARAM_SIZE, "0",
      "SO_SNDBUF in bytes; 0 keeps the kernel's autotuning", sock.sndbuf, 0,
      1 << 30),
    P("rcvbuf", XFER_PARAM_SIZE, "0",
      "SO_RCVBUF in bytes; 0 keeps the kernel's autotuning", sock.rcvbuf, 0,
      1 << 30),
    P("inline_max", XFER_PARAM_SIZE, "16K",
      "payloads up to this size are copied through the receive buffer; "
      "larger ones are received straight into the destination",
      inline_max, 0, 16 << 20),
    P("rx_buf", XFER_PARAM_SIZE, "256K",
      "per-connection receive buffer; must exceed inline_max by 40 bytes",
      rx_buf, 4096, 256 << 20),
    P("backlog", XFER_PARAM_UINT, "128", "listen(2) backlog", sock.backlog, 1,
      65535),
    XFER__STREAM_LIMIT_PARAMS(tcp_config_t, lim),
};
#undef P

/* The instance is the socket layer's state alone: the stream engine keeps
 * the rest, and hands it back as its tctx. */
static xfer_status_t tcp_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be)
{
    const tcp_config_t *cfg = config;
    xfer__tcpsock_cfg_t sc = cfg->sock;
    xfer__stream_cfg_t scfg;
    xfer__tcpsock_t *s;
    xfer_status_t st;

    if (!(s = calloc(1, sizeof *s)))
        return host->error(host->ctx, XFER_ERR_NOMEM, "tcp: out of memory");
    sc.name = "tcp";
    st = xfer__tcpsock_open(s, host, &sc);
    if (st != XFER_OK)
        goto fail;
    memset(&scfg, 0, sizeof scfg);
    scfg.name = "tcp";
    scfg.timeout_ms = cfg->sock.timeout_ms;
    scfg.inline_max = cfg->inline_max;
    scfg.rx_buf = cfg->rx_buf;
    scfg.lim = cfg->lim;
    st = xfer__stream_create(host, &xfer__tcpsock_transport, s, &scfg, s->lfd,
                             be);
    if (st != XFER_OK)
        goto fail;
    return XFER_OK;
fail:
    xfer__tcpsock_close(s);
    free(s);
    return st;
}

static void tcp_fini(xfer_be_t *be)
{
    xfer__tcpsock_t *s;

    if (!be)
        return;
    s = xfer__stream_tctx(be);
    xfer__stream_destroy(be);
    xfer__tcpsock_close(s);
    free(s);
}

static xfer_status_t tcp_conn_info(xfer_be_t *be, void *buf, size_t *len)
{
    xfer__tcpsock_t *s = xfer__stream_tctx(be);

    if (*len < XFER__TCPSOCK_INFO_SIZE) {
        *len = XFER__TCPSOCK_INFO_SIZE;
        return s->host->error(s->host->ctx, XFER_ERR_INVALID,
                              "tcp: connection info needs %u bytes",
                              XFER__TCPSOCK_INFO_SIZE);
    }
    memcpy(buf, s->info, XFER__TCPSOCK_INFO_SIZE);
    *len = XFER__TCPSOCK_INFO_SIZE;
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
