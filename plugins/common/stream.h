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

    /* ---- Optional: a direct data path beside the frames (uds).  All
     * NULL in tcp; the engine then behaves exactly as without them. ---- */
    /* State for a new initiator connection (NULL is a valid state). */
    void *(*conn_new)(void *tctx);
    /* The handshake of an initiator connection to the agent of `info`
     * succeeded.  Anything but XFER_OK closes it with msg as the reason. */
    xfer_status_t (*conn_up)(void *tctx, void *tconn, int fd,
                             const void *info, size_t len, char *msg,
                             size_t msg_size);
    void (*conn_free)(void *tctx, void *tconn);
    /* Move a posted request's data without frames, on a handshaken
     * connection.  XFER_OK: all of it moved (the engine then sends the
     * notification and completes the request); XFER_ERR_NOT_SUPPORTED:
     * use the frames; XFER_IN_PROG: ask again when more input arrived on
     * the connection (bounded by timeout_ms); another error: the request
     * fails with it and the sentence written to msg.
     * *vgen: on entry the validation stamp this request earned (0: none),
     * the value the transport last set when frames ended in XFER_OK, i.e.
     * after the target itself checked every descriptor; the transport
     * moves data directly only while the stamp is current, and sets *vgen
     * to the stamp to record should the frames succeed. */
    xfer_status_t (*direct)(void *tctx, void *tconn, xfer_op_t op,
                            const xfer_be_seg_t *segs, size_t nseg,
                            uint64_t *vgen, char *msg, size_t msg_size);
    /* A file descriptor the target shared (SHM_FD frame); tconn owns it. */
    void (*fd_received)(void *tctx, void *tconn, uint64_t id, uint64_t size,
                        int fd);
    /* Target side: whether to share registered memfds with the peer on
     * this accepted connection (e.g. same user only). */
    int (*share_ok)(void *tctx, int fd);
    /* Target side, for a peer share_ok accepted, at its handshake: state
     * of this connection (*tstate) and a file descriptor the engine sends
     * it (SHM_FD, id XFER__STREAM_CONN_FD_ID) after the shared fd of the
     * config; the transport keeps owning fd.  Non-zero: share nothing.
     * conn_unshare frees the state when the connection closes. */
    int (*conn_share)(void *tctx, void **tstate, int *fd, uint64_t *size);
    void (*conn_unshare)(void *tctx, void *tstate);
} xfer__stream_transport_t;

/* The SHM_FD id of the per-connection descriptor of conn_share (memfd ids
 * of registrations are random, 0 is the config's shared fd). */
#define XFER__STREAM_CONN_FD_ID UINT64_MAX

typedef struct xfer__stream_cfg {
    const char *name;    /* plugin name, for sentences ("tcp") */
    uint64_t timeout_ms; /* no progress this long: XFER_ERR_TIMEOUT */
    size_t inline_max;   /* payloads up to this go through the rx buffer */
    size_t rx_buf;       /* per-connection receive buffer */
    /* Target: with share_fd_set, share_fd goes (SHM_FD, id 0) to every
     * peer share_ok accepts, before any registration's memfd. */
    int share_fd_set, share_fd;
    uint64_t share_size;
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

/* A registration (from xfer__stream_mem_register) lies in a memfd at
 * offset off: keep a duplicate of fd and send it (SHM_FD frame) to every
 * peer that share_ok accepted, now and on later handshakes. */
xfer_status_t xfer__stream_mem_share(xfer_be_t *be, void *mem, int fd,
                                     uint64_t id, uint64_t size, uint64_t off);
/* 1 and the memfd id and offset if the registration was shared, else 0. */
int xfer__stream_mem_shm(const void *mem, uint64_t *id, uint64_t *off);
/* The public part a remote region was unpacked from (at most 64 bytes
 * are kept; *len 0: none) and the region's start address. */
const void *xfer__stream_rmem_pack(const void *rmem, uint64_t *addr,
                                   size_t *len);

#endif /* XFER_PLUGINS_STREAM_H */
