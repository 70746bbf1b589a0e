/* tcpsock.h - TCP sockets for stream engines and control channels:
 * numeric addresses, the listen socket, connection info, connect, options. */
#ifndef XFER_PLUGINS_TCPSOCK_H
#define XFER_PLUGINS_TCPSOCK_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"

/* Connection info: what a peer needs to connect, 24 bytes.
 *   0 u32 magic "XTCP" (little-endian)   4 u8 version (1)
 *   5 u8 family (4 or 6)                 6 u16 port (network order)
 *   8 u8[16] address (IPv4: 4 bytes, then zeros) */
#define XFER__TCPSOCK_INFO_SIZE 24u

/* A plugin may embed this in its config struct and point its parameter
 * table's offsets at the fields (the tcp plugin does); name is not a
 * parameter, the plugin sets it. */
typedef struct xfer__tcpsock_cfg {
    const char *name;       /* plugin name, prefix of every sentence ("tcp") */
    const char *addr;       /* numeric address to listen on; NULL: 127.0.0.1 */
    uint64_t port;          /* 0: any */
    const char *advertise;  /* NULL or "": addr, or first non-loopback iface for a wildcard */
    int nodelay, keepalive;
    uint64_t timeout_ms;    /* keepalive timing and TCP_USER_TIMEOUT */
    size_t sndbuf, rcvbuf;  /* 0: kernel autotuning */
    uint64_t backlog;       /* 0: 128 */
} xfer__tcpsock_cfg_t;

typedef struct xfer__tcpsock {
    const xfer_host_t *host;
    xfer__tcpsock_cfg_t cfg;   /* copied; strings still the caller's */
    int lfd;                   /* listening, non-blocking; -1 when closed */
    uint8_t info[XFER__TCPSOCK_INFO_SIZE];   /* what peers connect to */
} xfer__tcpsock_t;

/* Bind and listen as cfg says, fill s->info; logs the WARN about
 * listening beyond loopback without auth (host->auth), with the plugin
 * name from cfg.  On failure s->lfd is -1 and host->error says why
 * (XFER_ERR_CONFIG for a bad address, XFER_ERR_BACKEND for a socket
 * error).  The listen fd stays the caller's to hand to
 * xfer__stream_create or xfer__chan_create, and closes with
 * xfer__tcpsock_close after the engine is destroyed. */
xfer_status_t xfer__tcpsock_open(xfer__tcpsock_t *s, const xfer_host_t *host,
                                 const xfer__tcpsock_cfg_t *cfg);
/* Close the listen fd (again: nothing). */
void xfer__tcpsock_close(xfer__tcpsock_t *s);

/* The four xfer__stream_transport_t hooks, tctx being the
 * xfer__tcpsock_t *. */
xfer_status_t xfer__tcpsock_info_check(void *tctx, const void *info,
                                       size_t len);
int xfer__tcpsock_connect(void *tctx, const void *info, size_t len,
                          int *in_progress);
int xfer__tcpsock_accepted(void *tctx, int fd);
void xfer__tcpsock_info_str(void *tctx, const void *info, size_t len,
                            char *buf, size_t size);

/* A transport table with just those four, for a plugin with no events of
 * its own. */
extern const xfer__stream_transport_t xfer__tcpsock_transport;

#endif /* XFER_PLUGINS_TCPSOCK_H */
