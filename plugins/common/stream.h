/* stream.h - the stream protocol engine shared by the software backends.
 * A plugin supplies sockets (listen, connect, options); the engine does the rest. */
#ifndef XFER_PLUGINS_STREAM_H
#define XFER_PLUGINS_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

/* What the engine needs from a transport.  Everything here is about
 * sockets and addresses; framing, requests, access checks, notifications,
 * timeouts and disconnects belong to the engine. */
typedef struct xfer__stream_transport {
    /* Check a peer's connection info.  Refuse anything that is not a blob
     * this transport produced with host->error(XFER_ERR_INVALID, ...). */
    xfer_status_t (*info_check)(void *tctx, const void *info, size_t len);
    /* Start a non-blocking connect to a checked info: return a new
     * SOCK_NONBLOCK|SOCK_CLOEXEC stream socket with its options set, and
     * *in_progress = 1 while the connect has not finished; or -errno. */
    int (*connect)(void *tctx, const void *info, size_t len, int *in_progress);
    /* Set options on a socket the engine accepted from the listen fd. */
    void (*accepted)(void *tctx, int fd);
    /* Write a printable form of a checked info ("10.0.0.2:4791") for logs. */
    void (*info_str)(void *tctx, const void *info, size_t len, char *buf,
                     size_t size);
} xfer__stream_transport_t;

typedef struct xfer__stream_cfg {
    const char *name;    /* plugin name, for sentences ("tcp") */
    uint64_t timeout_ms; /* no progress this long: XFER_ERR_TIMEOUT */
    size_t inline_max;   /* payloads up to this go through the rx buffer */
    size_t rx_buf;       /* per-connection receive buffer */
} xfer__stream_cfg_t;

/* Create an engine instance that accepts on listen_fd (a listening,
 * non-blocking stream socket the transport keeps owning; -1: none).  tp
 * and tctx must outlive the instance.  The instance is the plugin's
 * xfer_be_t, so most ops of the table below point straight at the engine. */
xfer_status_t xfer__stream_create(const xfer_host_t *host,
                                  const xfer__stream_transport_t *tp,
                                  void *tctx, const xfer__stream_cfg_t *cfg,
                                  int listen_fd, xfer_be_t **be);
/* Close every connection and free everything the engine owns. */
void xfer__stream_destroy(xfer_be_t *be);
/* The tctx given to create. */
void *xfer__stream_tctx(xfer_be_t *be);

/* Backend ops, with the signatures of xfer_backend_ops_t. */
xfer_status_t xfer__stream_peer_add(xfer_be_t *be, const char *name,
                                    uint64_t epoch, const void *info,
                                    size_t len, xfer_be_peer_t **peer);
void xfer__stream_peer_remove(xfer_be_t *be, xfer_be_peer_t *peer);
xfer_status_t xfer__stream_mem_register(xfer_be_t *be,
                                        const xfer_be_region_t *r, void **mem);
void xfer__stream_mem_deregister(xfer_be_t *be, void *mem);
xfer_status_t xfer__stream_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                       const xfer_be_rregion_t *r,
                                       const void *buf, size_t len,
                                       void **rmem);
void xfer__stream_rmem_release(xfer_be_t *be, void *rmem);
xfer_status_t xfer__stream_req_create(xfer_be_t *be, xfer_op_t op,
                                      xfer_be_peer_t *peer,
                                      const xfer_be_seg_t *segs, size_t nseg,
                                      xfer_be_req_t **req);
xfer_status_t xfer__stream_req_post(xfer_be_t *be, xfer_be_req_t *req,
                                    const void *notif, size_t notif_len);
xfer_status_t xfer__stream_req_check(xfer_be_t *be, xfer_be_req_t *req);
xfer_status_t xfer__stream_req_cancel(xfer_be_t *be, xfer_be_req_t *req);
void xfer__stream_req_release(xfer_be_t *be, xfer_be_req_t *req);
xfer_status_t xfer__stream_notif_send(xfer_be_t *be, xfer_be_peer_t *peer,
                                      const void *msg, size_t len);
int xfer__stream_progress(xfer_be_t *be);
xfer_status_t xfer__stream_event_fd(xfer_be_t *be, int *fd);

#endif /* XFER_PLUGINS_STREAM_H */
