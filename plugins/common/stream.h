/* stream.h - the stream protocol engine shared by the software backends.
 * A plugin supplies sockets (listen, connect, options); the engine does the rest. */
#ifndef XFER_PLUGINS_STREAM_H
#define XFER_PLUGINS_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

/* One connection, either role (the engine's; opaque to transports). */
typedef struct xfer__stream_conn xfer__stream_conn_t;

/* What the engine needs from a transport.  The first four are about
 * sockets and addresses; framing, requests, access checks,
 * notifications, timeouts and disconnects belong to the engine. */
typedef struct xfer__stream_transport {
    /* Check a peer's connection info.  Refuse anything that is not a blob
     * this transport produced with host->error(XFER_ERR_INVALID, ...). */
    xfer_status_t (*info_check)(void *tctx, const void *info, size_t len);
    /* Start a non-blocking connect to a checked info: return a new
     * SOCK_NONBLOCK|SOCK_CLOEXEC stream socket with its options set, and
     * *in_progress = 1 while the connect has not finished; or -errno. */
    int (*connect)(void *tctx, const void *info, size_t len, int *in_progress);
    /* Set options on a socket the engine accepted from the listen fd,
     * and say whether to keep it: 0, or -1 to refuse the peer (the
     * engine closes fd; the transport says why in its log). */
    int (*accepted)(void *tctx, int fd);
    /* Write a printable form of a checked info ("10.0.0.2:4791") for logs. */
    void (*info_str)(void *tctx, const void *info, size_t len, char *buf,
                     size_t size);

    /* ---- Optional events (NULL: none) ---- */
    /* The handshake of c completed: an initiator got HELLO_ACK OK, a
     * target a good HELLO (frames it queues now precede HELLO_ACK).
     * Anything but XFER_OK closes c with msg as the reason. */
    xfer_status_t (*conn_up)(void *tctx, xfer__stream_conn_t *c, char *msg,
                             size_t msg_size);
    /* c closed (handshaken or not); it is freed after progress returns.
     * Release what its private area holds. */
    void (*conn_down)(void *tctx, xfer__stream_conn_t *c, xfer_status_t st,
                      const char *why);
    /* A descriptor came with an FD frame after the handshake (AF_UNIX
     * only; the transport owns fd).  Set: initiators read with recvmsg
     * and accept FD frames.  Anything but XFER_OK closes c with msg as
     * the reason (a descriptor the transport refuses). */
    xfer_status_t (*fd_received)(void *tctx, xfer__stream_conn_t *c,
                                 uint64_t id, uint64_t size, int fd,
                                 char *msg, size_t msg_size);
    /* A handshaken connection that holds requests for the transport
     * (xfer__stream_req_hold) received input: start what now can. */
    void (*held_ready)(void *tctx, xfer__stream_conn_t *c);
    /* Target: an operation that came on c passed the check against the
     * registration mem (from xfer__stream_mem_register): the peer
     * presented its key.  Frames the transport queues on c now precede
     * the operation's answer. */
    void (*mem_checked)(void *tctx, xfer__stream_conn_t *c, void *mem);
} xfer__stream_transport_t;

/* What one instance lets peers make it hold (docs/wire-tcp.md, "Bounds").
 * A transport embeds this struct in its config and lists
 * XFER__STREAM_LIMIT_PARAMS in its parameter table, so every stream
 * transport declares them once, alike; 0 in a field: the default. */
typedef struct xfer__stream_limits {
    uint64_t max_conns;            /* accepted connections at once */
    uint64_t max_conns_per_addr;   /* ... from one source (see below) */
    uint64_t handshake_timeout_ms; /* accept to good HELLO */
    uint64_t idle_timeout_ms;      /* handshaken, nothing in flight */
    size_t sendq_bytes;            /* READ answers queued per connection */
} xfer__stream_limits_t;

#define XFER__STREAM_MAX_CONNS 512
#define XFER__STREAM_MAX_CONNS_PER_ADDR 64
#define XFER__STREAM_HANDSHAKE_MS 5000
#define XFER__STREAM_IDLE_MS 600000
#define XFER__STREAM_SENDQ_BYTES ((size_t)64 << 20)

#define XFER__STREAM_STR2(x) #x
#define XFER__STREAM_STR(x) XFER__STREAM_STR2(x)
/* The parameter entries of an xfer__stream_limits_t at member `field` of
 * the transport's config struct `type`. */
#define XFER__STREAM_LIMIT_PARAMS(type, field)                              \
    {"max_conns", XFER_PARAM_UINT,                                          \
     XFER__STREAM_STR(XFER__STREAM_MAX_CONNS),                              \
     "connections accepted at once; past it a new one is closed at "        \
     "once (a rate-limited log line says so)",                              \
     offsetof(type, field.max_conns), 1, 1 << 20},                          \
    {"max_conns_per_addr", XFER_PARAM_UINT,                                 \
     XFER__STREAM_STR(XFER__STREAM_MAX_CONNS_PER_ADDR),                     \
     "of max_conns, how many may come from one source: an IPv4 address "    \
     "or IPv6 /64 (tcp), a user id (uds)",                                  \
     offsetof(type, field.max_conns_per_addr), 1, 1 << 20},                 \
    {"handshake_timeout_ms", XFER_PARAM_UINT,                               \
     XFER__STREAM_STR(XFER__STREAM_HANDSHAKE_MS),                           \
     "an accepted connection must complete its handshake within this, "     \
     "however slowly its bytes trickle in, or it is closed",                \
     offsetof(type, field.handshake_timeout_ms), 1, 3600000},               \
    {"idle_timeout_ms", XFER_PARAM_UINT,                                    \
     XFER__STREAM_STR(XFER__STREAM_IDLE_MS),                                \
     "an accepted connection with nothing in flight and no traffic this "   \
     "long is closed; a connection this agent opened is closed after half " \
     "of it, and reopened at the next post",                               \
     offsetof(type, field.idle_timeout_ms), 1000, 86400000},                \
    {"sendq_bytes", XFER_PARAM_SIZE, "64M",                                 \
     "READ answers queued on one connection, in bytes; past it (or 8192 "   \
     "answers) the peer's further requests wait until it reads",            \
     offsetof(type, field.sendq_bytes), 4096, (int64_t)1 << 40}

typedef struct xfer__stream_cfg {
    const char *name;    /* plugin name, for sentences ("tcp") */
    uint64_t timeout_ms; /* no progress this long: XFER_ERR_TIMEOUT */
    size_t inline_max;   /* payloads up to this go through the rx buffer */
    size_t rx_buf;       /* per-connection receive buffer */
    xfer__stream_limits_t lim;
    /* Zeroed bytes the engine keeps for the transport in every
     * connection, request and registration (the *_priv accessors). */
    size_t conn_priv, req_priv, mem_priv;
    size_t peer_priv;    /* ... and in every peer (xfer__stream_peer_priv) */
} xfer__stream_cfg_t;

/* Create an engine instance that accepts on listen_fd (a listening,
 * non-blocking stream socket the transport keeps owning; -1: none).  tp
 * and tctx must outlive the instance.  The instance is the plugin's
 * xfer_be_t, so most ops of its table are the engine's (XFER__STREAM_OPS). */
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
/* Connect eagerly: XFER_OK once the handshake completed, XFER_IN_PROG
 * while under way (call again after progress), or the error the last
 * connection ended with (with its sentence). */
xfer_status_t xfer__stream_peer_connect(xfer_be_t *be, xfer_be_peer_t *peer);

/* The ops a stream plugin's table takes from the engine; list after it
 * only what differs (a later designated initializer wins, so ignore
 * -Woverride-init for the table). */
#define XFER__STREAM_OPS                                                   \
    .peer_add = xfer__stream_peer_add,                                     \
    .peer_remove = xfer__stream_peer_remove,                               \
    .mem_register = xfer__stream_mem_register,                             \
    .mem_deregister = xfer__stream_mem_deregister,                         \
    .rmem_unpack = xfer__stream_rmem_unpack,                               \
    .rmem_release = xfer__stream_rmem_release,                             \
    .req_create = xfer__stream_req_create,                                 \
    .req_post = xfer__stream_req_post,                                     \
    .req_check = xfer__stream_req_check,                                   \
    .req_cancel = xfer__stream_req_cancel,                                 \
    .req_release = xfer__stream_req_release,                               \
    .notif_send = xfer__stream_notif_send,                                 \
    .progress = xfer__stream_progress,                                     \
    .event_fd = xfer__stream_event_fd,                                     \
    .peer_connect = xfer__stream_peer_connect

/* ---- Extension points for a plugin that wraps ops ------------------ */

/* Connections. */
void *xfer__stream_conn_priv(xfer__stream_conn_t *c);
int xfer__stream_conn_fd(const xfer__stream_conn_t *c);
int xfer__stream_conn_initiator(const xfer__stream_conn_t *c);
/* Handshaken and not closed. */
int xfer__stream_conn_up(const xfer__stream_conn_t *c);
/* Closed by this side because it was idle (idle_timeout_ms), not lost:
 * a control channel reopens it when needed and mourns no one. */
int xfer__stream_conn_idle_closed(const xfer__stream_conn_t *c);
/* Whether requests or notifications wait in c's hold list. */
int xfer__stream_conn_holds(const xfer__stream_conn_t *c);
/* An initiator's peer (NULL for a target's connection); still set
 * while conn_down runs. */
xfer_be_peer_t *xfer__stream_conn_peer(const xfer__stream_conn_t *c);
/* The other agent's name and epoch, bound by the handshake. */
const char *xfer__stream_conn_name(const xfer__stream_conn_t *c);
uint64_t xfer__stream_conn_epoch(const xfer__stream_conn_t *c);
/* Queue an FD frame carrying a duplicate of fd (AF_UNIX; a target's,
 * handshaken connection) and send it at once when nothing blocks. */
xfer_status_t xfer__stream_conn_send_fd(xfer__stream_conn_t *c, uint64_t id,
                                        uint64_t size, int fd);

/* Requests a transport starts itself.  hold: like req_post, but the
 * request only takes its place in its connection's order (a lone
 * notification posted later waits behind it) and stays XFER_IN_PROG;
 * *c: that connection.  Then, oldest first, the transport either sends
 * it as frames (req_send) or ends it (req_end: XFER_OK means its data
 * moved, and its notification goes now). */
xfer_status_t xfer__stream_req_hold(xfer_be_t *be, xfer_be_req_t *req,
                                    const void *notif, size_t notif_len,
                                    xfer__stream_conn_t **c);
/* The oldest request c holds for the transport, NULL: none. */
xfer_be_req_t *xfer__stream_conn_held(xfer__stream_conn_t *c);
void xfer__stream_req_send(xfer_be_t *be, xfer_be_req_t *req);
void xfer__stream_req_end(xfer_be_t *be, xfer_be_req_t *req,
                          xfer_status_t st, const char *why);
/* Status of the last post, without a sentence; XFER_OK only once the
 * target answered every frame (or req_end said so). */
xfer_status_t xfer__stream_req_state(const xfer_be_req_t *req);
void *xfer__stream_req_priv(xfer_be_req_t *req);
xfer_be_peer_t *xfer__stream_req_peer(const xfer_be_req_t *req);
/* The transport moved a request's data itself, outside any connection
 * (a request not in progress, held nowhere): it ends XFER_OK. */
void xfer__stream_req_done(xfer_be_req_t *req);

/* Peers: the transport's zeroed bytes, which live as long as the peer
 * (the core's reference and every request's). */
void *xfer__stream_peer_priv(xfer_be_peer_t *peer);
const xfer_be_seg_t *xfer__stream_req_segs(const xfer_be_req_t *req,
                                           xfer_op_t *op, size_t *nseg);

/* Registrations and remote regions. */
void *xfer__stream_mem_priv(void *mem);
/* The public part a remote region was unpacked from (at most 64 bytes
 * are kept; *len 0: none) and the region's start address. */
const void *xfer__stream_rmem_pack(const void *rmem, uint64_t *addr,
                                   size_t *len);

#endif /* XFER_PLUGINS_STREAM_H */
