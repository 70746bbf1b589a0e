/* ucx.h - what the files of the ucx plugin share: the instance and its
 * workers, peers and their endpoints, registrations, requests, sessions. */
#ifndef XFER_PLUGINS_UCX_H
#define XFER_PLUGINS_UCX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ucp/api/ucp.h>

#include <xfer/backend.h>

#include "plugins/common/chan.h"
#include "plugins/common/clock.h"
#include "plugins/common/dlist.h"
#include "plugins/common/hwctl.h"
#include "plugins/common/nsess.h"
#include "plugins/common/stream.h"
#include "plugins/common/tcpsock.h"

/* How the files divide the work (ucx.c is the table and reads top-down):
 *   ucx.c    parameters, the ops table, init/fini, progress, arm, state
 *   ctl.c    connection info, and the control channel's callbacks
 *            (plugins/common/hwctl.h: tokens, acks, death)
 *   peer.c   peers and their endpoints (one per local worker)
 *   mem.c    registrations and remote keys
 *   req.c    requests: put/get, one flush per post, timeouts
 *   notif.c  notifications: ordering, credits, the active message both ways
 *
 * The notification sessions themselves (tokens, credits, the target's
 * table, in-order delivery) are plugins/common/nsess.h's.
 *
 * Locks, in the only order they are ever taken (each file says which it
 * takes):  chan_lock -> worker lock -> peer olock -> ns.lock
 *   chan_lock   ctl.chan_lock (hwctl.h): the control channel (the stream
 *               engine is single-threaded), the peer list, the session
 *               list's shape; hwctl's callbacks run under it
 *   w->lock     one UCP worker: its endpoints, rkeys unpacked for it, the
 *               requests posted on it; UCP callbacks run under it
 *   p->olock    one peer's order: requests in post order, notifications
 *               waiting, the session with that target (token, credits);
 *               recursive, because UCP may end other requests from
 *               inside ucp_am_send_nbx (a send that finds the endpoint
 *               reset fails what else was on it): their callbacks take
 *               it again on the thread that holds it for the pump
 *   ns.lock     the target side's sessions (xfer__ns_table_t) as the
 *               active-message handler reads them (a leaf, like every
 *               host callback) */

#define UCX_MAX_WORKERS 16
/* The active message id of a notification; its header is nsess.h's
 * (XFER__NS_HDR_LEN bytes, docs/wire-ucx.md). */
#define UCX_AM_NOTIF 0x58u

typedef struct ucx_config {
    const char *tls;
    const char *devices;
    uint64_t workers;
    const char *error_mode;
    uint64_t timeout_ms;
    uint64_t notif_window;
    uint64_t notif_queue;
    const char *addr;
    uint64_t port;
    const char *advertise;
    xfer__stream_limits_t lim;
} ucx_config_t;

typedef struct xfer_be ucx_t;
typedef struct xfer_be_peer ucx_peer_t;
typedef struct xfer_be_req ucx_req_t;

typedef struct ucx_worker {
    pthread_mutex_t lock;
    ucp_worker_h w;
    int efd;                   /* ucp_worker_get_efd, -1 without */
    unsigned idx;
    ucx_t *u;
    /* Requests whose flush is pending on this worker, oldest first: the
     * head carries the earliest deadline.  lock guards it; links:
     * ucx_req_t.wlink. */
    xfer__dlist_t inflight;
    /* Requests the core released while UCP still held their flush:
     * flush_done frees them, or worker_close once the worker is
     * destroyed (UCP never calls back then).  lock guards it; links:
     * ucx_req_t.hlink. */
    xfer__dlist_t held;
    uint64_t last_post_ms;     /* arm polls a little after a post */
} ucx_worker_t;

/* How long after a post arm keeps answering BUSY (ms). */
#define UCX_ARM_AFTER_POST_MS 2u

/* One peer's endpoint on one local worker; guarded by that worker. */
typedef struct ucx_ep {
    ucp_ep_h ep;               /* NULL: none yet, or closed after an error */
    uint64_t gen;              /* bumped at each creation: rkeys unpacked
                                  for an older one are stale */
    uint64_t err_gen;          /* the generation that failed last */
    xfer_status_t err;         /* ... with this status and sentence */
    char why[XFER_NAME_MAX + 100];
    ucx_peer_t *peer;          /* back pointers for the error handler */
    unsigned wi;
} ucx_ep_t;

/* A notification waiting to go, in post order (peer olock), then in
 * flight until UCP is done with its header and payload. */
typedef struct ucx_slot {
    struct ucx_slot *next;
    uint64_t ticket;           /* the post it belongs to */
    ucx_req_t *req;            /* that request, until it completed */
    bool ready;                /* its data is visible (or a lone one) */
    bool numbered;             /* hdr holds its sequence number: a send
                                  that failed, to go again as it is */
    ucx_peer_t *peer;          /* a reference while in flight */
    size_t len;
    unsigned char hdr[XFER__NS_HDR_LEN];
    unsigned char msg[];
} ucx_slot_t;

struct xfer_be_peer {
    ucx_t *u;
    atomic_uint refs;          /* the core's until peer_remove, one per
                                  request, remote region and slot */
    char name[XFER_NAME_MAX + 1];
    uint64_t epoch;
    xfer__hwctl_peer_t ctl;    /* the control channel's: cp, asks, the
                                  instance's list (chan_lock) */
    /* Its workers' addresses, from the connection info. */
    unsigned nrw;
    unsigned char *waddr[UCX_MAX_WORKERS];
    size_t wlen[UCX_MAX_WORKERS];
    ucx_ep_t ep[UCX_MAX_WORKERS];      /* per local worker */
    /* A transfer to it timed out (or UCX failed its endpoint) and it has
     * not answered on the control channel since (a token request is
     * out): no new endpoint meanwhile,
     * since UCX's tcp transport makes one with a blocking connect(),
     * under the worker lock, that a cut link holds for minutes. */
    atomic_bool unheard;
    /* Set once, before dead: why every post to it now fails. */
    atomic_bool dead;
    xfer_status_t dead_st;
    char dead_why[256];
    /* ---- olock ---- */
    pthread_mutex_t olock;
    uint64_t next_ticket;
    xfer__dlist_t order;               /* requests in flight, post order
                                          (ucx_req_t.plink) */
    ucx_slot_t *sh, *st;               /* notifications waiting */
    size_t nslots;
    bool pumping;                      /* ucx__notif_pump runs: a call
                                          from a callback inside it
                                          returns, the loop goes on */
    xfer__ns_send_t ns;                /* the session with that target:
                                          token, credits */
};

typedef struct ucx_mem {
    ucp_mem_h memh;
    void *rkey;                /* packed, from ucp_rkey_pack */
    size_t rkey_len;
} ucx_mem_t;

typedef struct ucx_rmem {
    ucx_peer_t *peer;          /* a reference */
    /* Per local worker, guarded by it: the rkey unpacked on the peer's
     * endpoint of that generation. */
    ucp_rkey_h rk[UCX_MAX_WORKERS];
    uint64_t gen[UCX_MAX_WORKERS];
    /* error_mode=none: keys of replaced endpoints, which UCP may still
     * use, destroyed with the region (one per rebuild of that worker's
     * endpoint, which takes a timeout_ms each: slow to grow). */
    struct ucx_stale_rkey { ucp_rkey_h rk; struct ucx_stale_rkey *next; }
        *stale[UCX_MAX_WORKERS];
    size_t len;
    unsigned char packed[];
} ucx_rmem_t;

struct xfer_be_req {
    ucx_t *u;
    ucx_peer_t *peer;          /* a reference */
    xfer_op_t op;
    const xfer_be_seg_t *segs;
    size_t nseg;
    /* ---- the lock of worker wi (the worker of the last post) ---- */
    unsigned wi;
    xfer_status_t st;
    char err[XFER_NAME_MAX + 512];
    bool flushing;             /* UCP holds our flush callback */
    bool released;             /* ... and the core released it meanwhile */
    bool timed_out;
    uint64_t gen;              /* endpoint generation it was posted on */
    uint64_t deadline_ms;
    xfer__dlink_t wlink;       /* worker's in-flight list */
    xfer__dlink_t hlink;       /* worker's held list, once released */
    /* ---- peer olock ---- */
    uint64_t ticket;
    xfer__dlink_t plink;       /* the peer's order list, while on it */
    ucx_slot_t *slot;          /* its notification, until it completes */
};

struct xfer_be {
    const xfer_host_t *host;
    ucx_config_t cfg;
    bool peer_mode;
    ucp_context_h ctx;
    unsigned nw;
    ucx_worker_t w[UCX_MAX_WORKERS];
    int epfd;                  /* the workers' fds and the channel's */
    size_t max_am_hdr;
    char tls_used[256];        /* what UCX found, for state() */
    /* control channel: socket, channel, chan_lock, peers, asks */
    xfer__hwctl_t ctl;
    unsigned char info[XFER_BE_BLOB_MAX];
    size_t info_len;
    xfer__ns_table_t ns;       /* target side: the initiators' sessions */
    /* counters for state(), with ns's received and dropped; here the
     * notifications this side dropped as a sender (their peer died) */
    atomic_ulong eps_created, eps_failed, notifs_sent, notifs_dropped;
};

#define UERR(u, st, ...) (u)->host->error((u)->host->ctx, (st), __VA_ARGS__)
#define ULOG(u, lvl, ...) (u)->host->log((u)->host->ctx, (lvl), __VA_ARGS__)

/* The worker the calling thread posts on (docs/api.md, "ucx"). */
unsigned ucx__thread_worker(const ucx_t *u);
xfer_status_t ucx__status(ucs_status_t s);

/* ctl.c; the rest of the channel is xfer__hwctl_* on u->ctl */
/* Open the control channel with this plugin's callbacks. */
xfer_status_t ucx__ctl_open(ucx_t *u);
xfer_status_t ucx__info_build(ucx_t *u);
xfer_status_t ucx__info_parse(ucx_t *u, const char *name, const void *info,
                              size_t len, ucx_peer_t *p,
                              const void **chan_info, size_t *chan_len);

/* peer.c */
xfer_status_t ucx__peer_add(ucx_t *u, const char *name, uint64_t epoch,
                            const void *info, size_t len, ucx_peer_t **out);
void ucx__peer_remove(ucx_t *u, ucx_peer_t *p);
xfer_status_t ucx__peer_connect(ucx_t *u, ucx_peer_t *p);
void ucx__peer_put(ucx_peer_t *p);
/* The answer to anything asked of a dead peer: its status and why. */
xfer_status_t ucx__peer_gone(ucx_t *u, const ucx_peer_t *p);
/* The endpoint of p on worker wi, created if there is none (w->lock
 * held); NULL with *st and why (size bytes) saying why when it cannot
 * be, for the caller to report or not. */
ucx_ep_t *ucx__ep_get(ucx_t *u, ucx_peer_t *p, unsigned wi,
                      xfer_status_t *st, char *why, size_t size);
/* Close the endpoint after an error or timeout (w->lock held): every
 * operation on it ends with an error; the next post makes a new one. */
void ucx__ep_fail(ucx_t *u, ucx_peer_t *p, unsigned wi, xfer_status_t st,
                  const char *why);
/* The peer is gone for good (its control connection was lost, or it
 * was removed): fail what is in flight, refuse later posts.  No worker
 * lock held. */
void ucx__peer_kill(ucx_t *u, ucx_peer_t *p, xfer_status_t st,
                    const char *why);

/* mem.c */
xfer_status_t ucx__mem_register(ucx_t *u, const xfer_be_region_t *r,
                                void **mem);
void ucx__mem_deregister(ucx_t *u, void *mem);
xfer_status_t ucx__mem_pack(ucx_t *u, void *mem, void *buf, size_t *len);
xfer_status_t ucx__rmem_unpack(ucx_t *u, ucx_peer_t *p,
                               const xfer_be_rregion_t *r, const void *buf,
                               size_t len, void **rmem);
void ucx__rmem_release(ucx_t *u, void *rmem);
/* The rkey of rm for the endpoint e of worker wi (w->lock held),
 * unpacked again if e was rebuilt; NULL with the sentence set. */
ucp_rkey_h ucx__rkey(ucx_t *u, ucx_rmem_t *rm, unsigned wi, ucx_ep_t *e);

/* req.c */
xfer_status_t ucx__req_create(ucx_t *u, xfer_op_t op, ucx_peer_t *p,
                              const xfer_be_seg_t *segs, size_t nseg,
                              ucx_req_t **out);
xfer_status_t ucx__req_post(ucx_t *u, ucx_req_t *q, const void *notif,
                            size_t len);
xfer_status_t ucx__req_check(ucx_t *u, ucx_req_t *q);
void ucx__req_release(ucx_t *u, ucx_req_t *q);
/* Fail the oldest requests of worker w whose deadline passed (w->lock
 * held). */
int ucx__req_timeouts(ucx_t *u, ucx_worker_t *w, uint64_t now);
/* End p's requests in flight on w (w->lock held): p is dead. */
void ucx__req_fail_peer(ucx_t *u, ucx_worker_t *w, ucx_peer_t *p);
/* Free the requests released while UCP held them: after
 * ucp_worker_destroy. */
void ucx__req_free_held(ucx_worker_t *w);

/* notif.c */
xfer_status_t ucx__notif_send(ucx_t *u, ucx_peer_t *p, const void *msg,
                              size_t len);
/* A slot for the notification of a request being posted (olock held). */
ucx_slot_t *ucx__slot_new(ucx_peer_t *p, const void *msg, size_t len);
void ucx__slot_free(ucx_slot_t *s);
/* Send what may go now, from the head of p's queue, on worker wi (its
 * lock and p->olock held). */
void ucx__notif_pump(ucx_t *u, ucx_peer_t *p, unsigned wi);
/* Forget everything p had waiting (olock held): it is dead. */
void ucx__notif_drop(ucx_peer_t *p);
xfer_status_t ucx__am_register(ucx_t *u, ucx_worker_t *w);

#endif /* XFER_PLUGINS_UCX_H */
