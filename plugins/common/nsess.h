/* nsess.h - notification sessions of the plugins whose data does not
 * travel on a stream (ucx, ofi, verbs): tokens, credits, in-order delivery. */
#ifndef XFER_PLUGINS_NSESS_H
#define XFER_PLUGINS_NSESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"

/* A notification travels on the plugin's own fabric (a UCP active
 * message, a libfabric message), where nothing says who sent it.  So a
 * target hands each initiator a random session token over the control
 * channel (chan.h), whose handshake bound the initiator's name and epoch;
 * a notification carries the token and a sequence number, and the target
 * names the sender from the session, never from the message.  The target
 * grants a window of credits; it acknowledges what it delivered over the
 * channel, so a sender never has more than the window on its way and the
 * target never holds more than the window per sender.  Wire: the plugin's
 * docs/wire-*.md (the same bytes for every plugin). */

#define XFER__NS_TOKEN_LEN 16u
/* The header of a notification, little-endian:
 *   0 u8 magic 0x58   1 u8 version (1)   2 u16 flags (0)   4 u32 length
 *   8 u8[16] the session token          24 u64 sequence number */
#define XFER__NS_HDR_LEN 32u
#define XFER__NS_MAGIC 0x58u
/* Control messages on the channel: byte 0 the type, byte 1 the version,
 * the rest little-endian.
 *   TREQ  (initiator -> target)  2 bytes: give me my session
 *   TOKEN (target -> initiator) 32 bytes: 4 u32 window, 8 token,
 *                                         24 u64 delivered so far
 *   ACK   (target -> initiator) 16 bytes: 8 u64 delivered so far
 *   NOSESS (target -> initiator) 2 bytes: no session can be made now
 *         (every one has a connection, or no memory); the answer to a
 *         TREQ that gets no TOKEN, so that the initiator still hears the
 *         target's process answer (ucx waits for that after a timeout).
 *         An older initiator logs it and ignores it.
 *   SKIP  (initiator -> target) 24 bytes: 2..7 zero, 8 u64 from,
 *         16 u64 next: the numbers in [from, next) that have not come
 *         never will (their sends failed with the fabric's connection);
 *         stop waiting for them */
enum { XFER__NS_TREQ = 1, XFER__NS_TOKEN = 2, XFER__NS_ACK = 3,
       XFER__NS_SKIP = 4, XFER__NS_NOSESS = 5 };
#define XFER__NS_SKIP_LEN 24u
#define XFER__NS_MSG_VERSION 1u
#define XFER__NS_MSG_MAX 64u

/* ---- sender ----------------------------------------------------------- */

/* An initiator's session with one target; guarded by the plugin's lock of
 * that peer. */
typedef struct xfer__ns_send {
    bool have_token;
    unsigned char token[XFER__NS_TOKEN_LEN];
    uint64_t sent;             /* notifications numbered (next seq) */
    uint64_t acked;            /* ... that the target has taken */
    uint64_t window;           /* the target's credit window */
} xfer__ns_send_t;

extern const unsigned char xfer__ns_treq[2];

/* May a new notification be numbered now (a token, and a credit)? */
bool xfer__ns_send_can(const xfer__ns_send_t *s);
/* Number a notification of len bytes: fill its header (hdr holds
 * XFER__NS_HDR_LEN bytes) with the token and the next sequence number. */
void xfer__ns_hdr_fill(xfer__ns_send_t *s, unsigned char *hdr, size_t len);
/* Take a TOKEN, ACK or NOSESS (which changes nothing) from the target.
 * XFER_OK, or XFER_ERR_INVALID for a message that is none of them (the
 * caller logs it).  *lost: notifications
 * sent in an earlier session that the target never acknowledged and a new
 * session (it restarted its table) may have lost; 0 mostly. */
xfer_status_t xfer__ns_send_apply(xfer__ns_send_t *s, const void *msg,
                                  size_t len, uint64_t *lost);
/* Whether msg, which xfer__ns_send_apply took, answers a TREQ (a TOKEN or
 * NOSESS): the target's process heard this side since the ask.  An ACK
 * does not: it may have been on its way since before the ask. */
bool xfer__ns_is_answer(const void *msg, size_t len);
/* A SKIP (XFER__NS_SKIP_LEN bytes into buf) telling the target that the
 * numbers from `from` to the last handed out, which the fabric lost (the
 * lowest of the sends that failed), will not come: sent on the channel
 * before any later one can travel.  Without it the target would hold
 * every later notification waiting for a lost number, and the sender's
 * credits would run out.  Numbers below from are still waited for: they
 * went, and may only not have been read yet. */
void xfer__ns_skip_msg(const xfer__ns_send_t *s, uint64_t from,
                       unsigned char *buf);

/* ---- target ----------------------------------------------------------- */

typedef struct xfer__ns_sess xfer__ns_sess_t;

/* The sessions of one target.  Its shape changes under the plugin's
 * channel lock and t->lock; the receive path reads it under t->lock only
 * (a leaf lock: nothing is taken under it but the host's callbacks). */
typedef struct xfer__ns_table {
    const xfer_host_t *host;
    const char *plugin;        /* for log sentences */
    uint64_t window;           /* credits per sender (>= 2) */
    uint64_t max_sess;         /* sessions at once; the least recently
                                  used one without a connection goes */
    pthread_mutex_t lock;
    xfer__ns_sess_t *sess;
    uint64_t nsess;
    uint64_t tick;
    atomic_bool held_any;      /* a session holds notifications */
    atomic_bool ack_due;       /* a session owes its initiator an ack */
    atomic_ulong recv, dropped;
} xfer__ns_table_t;

/* XFER_ERR_NOMEM, with no sentence (the plugin says it), when the lock
 * cannot be made.  xfer__ns_fini is safe after either answer, and on a
 * zeroed table that was never initialised. */
xfer_status_t xfer__ns_init(xfer__ns_table_t *t, const xfer_host_t *host,
                            const char *plugin, uint64_t window,
                            uint64_t max_sess);
void xfer__ns_fini(xfer__ns_table_t *t);
/* A control message that came to the target on c (channel lock held):
 * a TREQ is answered with the session's TOKEN (made now, or the same one
 * again), or NOSESS when no session can be made; a SKIP moves the session past numbers that will not come,
 * delivering what it holds in order; anything else is logged and
 * ignored. */
void xfer__ns_target_msg(xfer__ns_table_t *t, xfer__stream_conn_t *c,
                         const void *msg, size_t len);
/* The target-side connection c closed (channel lock held). */
void xfer__ns_conn_down(xfer__ns_table_t *t, xfer__stream_conn_t *c);
/* Acknowledge what sessions delivered since their last ack, once half a
 * window is due (channel lock held).  Returns how many went. */
int xfer__ns_acks(xfer__ns_table_t *t);
/* A notification arrived on the fabric: header hdr (hlen bytes) and
 * payload.  Delivered now when it is next and the core has room, held
 * within the window otherwise, dropped and counted (with a log line) when
 * forged, unknown, outside the window or a duplicate.  Any thread. */
void xfer__ns_recv(xfer__ns_table_t *t, const void *hdr, size_t hlen,
                   const void *data, size_t len);
/* The same, for a fabric whose delivery path already names the sender
 * (a verbs queue pair made for it through the channel): a notification
 * whose token is not from's session is dropped, so a stolen token is
 * worth nothing on another agent's queue pair. */
void xfer__ns_recv_from(xfer__ns_table_t *t, const char *from,
                        const void *hdr, size_t hlen, const void *data,
                        size_t len);
/* Deliver what sessions hold as the core's queue gets room. */
int xfer__ns_progress(xfer__ns_table_t *t);
/* Sessions now (tests, state sentences). */
uint64_t xfer__ns_count(xfer__ns_table_t *t);

#endif /* XFER_PLUGINS_NSESS_H */
