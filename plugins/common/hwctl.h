/* hwctl.h - the control channel of a hardware plugin (ucx, ofi): chan.h over
 * tcpsock.h, peers' tokens and credits (nsess.h), and what ends a peer. */
#ifndef XFER_PLUGINS_HWCTL_H
#define XFER_PLUGINS_HWCTL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

#include "plugins/common/chan.h"
#include "plugins/common/nsess.h"
#include "plugins/common/stream.h"
#include "plugins/common/tcpsock.h"

/* A plugin whose data travels on its own fabric keeps a TCP control
 * channel to each peer it sends to: it asks the target for a
 * notification session (TREQ), takes its TOKEN and ACKs, and learns of
 * the peer's death when that connection breaks.  As a target it answers
 * the TREQs and acks what it delivered (nsess.h's table).  What differs
 * between plugins is in the callbacks: which locks guard a peer's
 * notifications, how they are pumped, how a peer is killed.
 *
 * Locks: chan_lock (xfer__hwctl_t) comes before every lock of the plugin;
 * the callbacks below run with it held and take the plugin's own. */

typedef struct xfer__hwctl_peer xfer__hwctl_peer_t;
typedef struct xfer__hwctl xfer__hwctl_t;

/* Control messages of a plugin's own (a verbs queue-pair handshake) have
 * a type byte at or above this; below it are nsess.h's. */
#define XFER__HWCTL_PLUGIN_MSG 0x10u

typedef struct xfer__hwctl_ops {
    /* Whether the plugin's peer is dead (no post may reach it). */
    bool (*dead)(void *peer);
    /* Whether notifications wait for a token or credits (chan_lock
     * held; the plugin takes the peer's own lock to look). */
    bool (*waiting)(void *peer);
    /* A TOKEN, ACK or NOSESS from the target (chan_lock held): take the plugin's
     * locks, hand it to the peer's xfer__ns_send_apply (its *lost) and,
     * on XFER_OK, send what may go now.  The status of the apply. */
    xfer_status_t (*on_credit)(void *peer, const void *msg, size_t len,
                               uint64_t *lost);
    /* The peer's control connection broke (chan_lock held): it is gone,
     * with st and why. */
    void (*on_death)(void *peer, xfer_status_t st, const char *why);
    /* (optional) A message of the plugin's own (type byte at or above
     * XFER__HWCTL_PLUGIN_MSG) on c, either role (chan_lock held): peer is
     * the plugin's peer on a connection this side opened, NULL on one a
     * peer opened (xfer__stream_conn_name/_epoch say who).  Without it
     * such messages are logged and ignored. */
    void (*on_msg)(xfer__hwctl_t *h, xfer__stream_conn_t *c, void *peer,
                   const void *msg, size_t len);
} xfer__hwctl_ops_t;

/* One peer's side of the channel, embedded in the plugin's peer. */
struct xfer__hwctl_peer {
    void *peer;                /* the plugin's, handed to the callbacks */
    const char *name;          /* the plugin's copy, for sentences */
    xfer__chan_peer_t *cp;     /* chan_lock; NULL once removed */
    atomic_bool chan_started;  /* a token was asked for */
    atomic_bool chan_connected; /* set under chan_lock: its connection is up */
    atomic_bool want_ask;      /* notifications wait for a token or
                                  credits and the channel is down: the
                                  next progress asks */
    xfer__hwctl_peer_t *next;  /* chan_lock: the channel's peers */
};

/* The channel, embedded in the plugin's instance. */
struct xfer__hwctl {
    /* First: the tcpsock hooks take the channel as their socket. */
    xfer__tcpsock_t sock;
    const xfer_host_t *host;
    const char *plugin;        /* "ucx": the prefix of sentences */
    const xfer__hwctl_ops_t *ops;
    xfer__stream_transport_t tp;
    xfer__chan_t *chan;
    pthread_mutex_t chan_lock; /* the channel (single-threaded engine),
                                  the peer list, the sessions' shape */
    xfer__ns_table_t *ns;      /* target side: the initiators' sessions */
    atomic_bool ask_due;       /* a peer wants a token asked for */
    atomic_uint_fast64_t ctl_ms; /* when the channel was last looked at */
    xfer__hwctl_peer_t *peers; /* chan_lock: peers not yet removed */
};

/* What the plugin's parameters say of the channel. */
typedef struct xfer__hwctl_cfg {
    const char *addr;          /* tcpsock.h's addr, port, advertise */
    uint64_t port;
    const char *advertise;
    uint64_t timeout_ms;       /* the channel's and the sockets' */
    size_t msg_max;            /* the largest message either side sends;
                                  0: XFER__NS_MSG_MAX (at most 4096) */
    xfer__stream_limits_t lim;
} xfer__hwctl_cfg_t;

/* Before anything else of the instance can fail (the close is then
 * safe): no socket, the lock made. */
void xfer__hwctl_init(xfer__hwctl_t *h);
/* Listen, make the channel, add its fd to epfd with data.u32 tag.
 * plugin, ops and ns must outlive the channel. */
xfer_status_t xfer__hwctl_open(xfer__hwctl_t *h, const xfer_host_t *host,
                               const char *plugin,
                               const xfer__hwctl_cfg_t *cfg,
                               const xfer__hwctl_ops_t *ops,
                               xfer__ns_table_t *ns, int epfd, uint32_t tag);
/* The channel and the socket, then the lock: nothing takes chan_lock
 * after this.  Safe after a failed or no open. */
void xfer__hwctl_close(xfer__hwctl_t *h);

/* A peer from its connection info's channel part (ci, cl); hp embedded
 * in the plugin's peer, which name belongs to.  On failure hp->cp is
 * NULL and the sentence is set. */
xfer_status_t xfer__hwctl_peer_add(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp,
                                   void *peer, const char *name,
                                   uint64_t epoch, const void *ci,
                                   size_t cl);
/* Off the list, its connection closed (no callback for it comes after). */
void xfer__hwctl_peer_remove(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp);
/* Ask for the token if not yet asked, then xfer__chan_connect:
 * XFER_OK once its connection is up, XFER_IN_PROG, or how it ended. */
xfer_status_t xfer__hwctl_peer_connect(xfer__hwctl_t *h,
                                       xfer__hwctl_peer_t *hp);
/* Ask the target for a token over the channel (opening it) unless one
 * was asked for already (chan_lock not held):
 * the channel carries the token for notifications and tells of the
 * peer's death, so it opens with the first post or notification. */
void xfer__hwctl_start(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp);
/* Notifications of hp wait for a token or credits: the next progress
 * asks (any lock). */
void xfer__hwctl_want_ask(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp);
/* Look at the channel (once a millisecond at most, or now with force),
 * ask for the tokens wanted, send the acks due.  How much was done. */
int xfer__hwctl_progress(xfer__hwctl_t *h, bool force);
/* Asks or acks wait that only a progress call sends (no fd fires). */
bool xfer__hwctl_due(xfer__hwctl_t *h);

/* The parameter entries a hardware plugin's control channel and
 * notification sessions take, for a config struct `type` with members
 * notif_window, notif_queue, addr, port and advertise (ucx, ofi): the
 * same names, defaults, bounds and sentences for every such plugin. */
#define XFER__HWCTL_PARAMS(type)                                            \
    {"notif_window", XFER_PARAM_UINT, "64",                                 \
     "notifications a sender may have on their way to this target before "  \
     "it acknowledges them (credits); what this target holds per sender",  \
     offsetof(type, notif_window), 2, 4096},                                \
    {"notif_queue", XFER_PARAM_UINT, "1024",                                \
     "notifications alone (xfer_notif_send) queued for one peer while its " \
     "credits are spent; past it XFER_ERR_BUSY",                            \
     offsetof(type, notif_queue), 1, 1 << 20},                              \
    {"addr", XFER_PARAM_STRING, "127.0.0.1",                                \
     "numeric address the control channel listens on (identity, tokens, "   \
     "death); set one that peers on other hosts reach",                     \
     offsetof(type, addr), 1, 0},                                           \
    {"port", XFER_PARAM_UINT, "0",                                          \
     "control channel port; 0 picks a free one",                            \
     offsetof(type, port), 0, 65535},                                       \
    {"advertise", XFER_PARAM_STRING, "",                                    \
     "control channel address peers are told; empty: addr, or the first "   \
     "non-loopback interface for a wildcard",                               \
     offsetof(type, advertise), 1, 0}

#endif /* XFER_PLUGINS_HWCTL_H */
