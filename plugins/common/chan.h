/* chan.h - a control channel for plugins whose data does not travel on the
 * stream (ucx, ofi, verbs): connections per peer with HELLO identity, small messages. */
#ifndef XFER_PLUGINS_CHAN_H
#define XFER_PLUGINS_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "plugins/common/stream.h"

/* The stream engine's connections, handshake, limits, timeouts and
 * disconnect handling, carrying MSG frames (docs/wire-tcp.md) both ways
 * instead of data.  A plugin supplies the sockets (xfer__stream_transport_t:
 * info_check, connect, accepted, info_str; conn_up and conn_down tell it
 * when a peer's connection is set up and ends) and gets messages in
 * order, each with the peer's name and epoch bound by the handshake
 * (xfer__stream_conn_name/_epoch), never a name the message claims.
 * Single-threaded like the engine: the plugin serialises calls. */
typedef struct xfer__chan xfer__chan_t;
typedef struct xfer__chan_peer xfer__chan_peer_t;

/* A message from the peer on c (either role), len <= msg_max. */
typedef void (*xfer__chan_recv_t)(void *tctx, xfer__stream_conn_t *c,
                                  const void *msg, size_t len);

/* msg_max: the largest message either side may send (0: XFER_NOTIF_MAX;
 * at most XFER_NOTIF_MAX); a peer sending more is disconnected.
 * listen_fd as for xfer__stream_create. */
xfer_status_t xfer__chan_create(const xfer_host_t *host,
                                const xfer__stream_transport_t *tp,
                                void *tctx, const xfer__stream_cfg_t *cfg,
                                size_t msg_max, xfer__chan_recv_t recv,
                                int listen_fd, xfer__chan_t **ch);
void xfer__chan_destroy(xfer__chan_t *ch);
/* Handle every ready event without blocking (messages, handshakes,
 * timeouts); the fd is readable when there is work. */
int xfer__chan_progress(xfer__chan_t *ch);
int xfer__chan_fd(xfer__chan_t *ch);

/* A peer from its metadata (name, epoch, connection info); checked by
 * tp->info_check.  Nothing connects until connect or send. */
xfer_status_t xfer__chan_peer_add(xfer__chan_t *ch, const char *name,
                                  uint64_t epoch, const void *info,
                                  size_t len, xfer__chan_peer_t **peer);
/* Close its connection (conn_down with XFER_ERR_REMOTE_DISCONNECT). */
void xfer__chan_peer_remove(xfer__chan_t *ch, xfer__chan_peer_t *peer);
/* xfer__stream_peer_connect for a chan peer: XFER_OK once handshaken,
 * XFER_IN_PROG while under way, or how the connection ended. */
xfer_status_t xfer__chan_connect(xfer__chan_t *ch, xfer__chan_peer_t *peer);
/* Send a message to the peer, over the connection this side opens
 * (opened now if needed; it follows the HELLO).  Queued in order;
 * XFER_ERR_INVALID past msg_max. */
xfer_status_t xfer__chan_send(xfer__chan_t *ch, xfer__chan_peer_t *peer,
                              const void *msg, size_t len);
/* Send a message back on a handshaken connection, either role (e.g. the
 * one a message came in on). */
xfer_status_t xfer__chan_reply(xfer__stream_conn_t *c, const void *msg,
                               size_t len);

#endif /* XFER_PLUGINS_CHAN_H */
