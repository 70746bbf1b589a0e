/* verbs.h - what the files of the verbs plugin share: rails (devices),
 * queue pairs, peers, registrations, requests, notifications. */
#ifndef XFER_PLUGINS_VERBS_H
#define XFER_PLUGINS_VERBS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

#include "plugins/common/chan.h"
#include "plugins/common/clock.h"
#include "plugins/common/dlist.h"
#include "plugins/common/hwctl.h"
#include "plugins/common/nsess.h"
#include "plugins/common/stream.h"
#include "plugins/common/tcpsock.h"
#include "plugins/verbs/plan.h"
#include "plugins/verbs/sq.h"
#include "plugins/verbs/vapi.h"
#include "plugins/verbs/wire.h"

/* How the files divide the work (verbs.c is the table and reads top-down):
 *   verbs.c  parameters, the ops table, init/fini, progress (the CQs),
 *            arm, probe, state
 *   rail.c   devices: opening one, its port and GID, PD, completion
 *            channel and CQ
 *   qp.c     queue pairs: the slot table, RESET->INIT->RTR->RTS, error,
 *            destruction, generations
 *   ctl.c    connection info, the handshake (wire.h) on the control
 *            channel, the targets' queue pairs, hwctl's callbacks
 *   peer.c   peers: their rails, their connection (the QPs to them)
 *   mem.c    registrations on every rail, remote keys
 *   req.c    requests: the plan (plan.h), chains of work requests under
 *            each QP's cap (sq.h), completions, failures, deadlines
 *   notif.c  notifications: SENDs after the data, the send buffers, the
 *            targets' receive buffers, credits (nsess.h)
 *   vapi.c   the seam to libibverbs (vapi.h); tests link an emulation
 *
 * Locks, in the only order they are ever taken:
 *   chan_lock -> lock -> peer olock -> ns.lock;  mr_lock alone
 *   chan_lock   ctl.chan_lock (hwctl.h): the control channel, the peer
 *               list's shape; the handshake runs under it
 *   lock        everything of the data path: QP slots and their send
 *               queues, CQs, requests, connections' state, notification
 *               buffers
 *   p->olock    one peer's order: requests in post order, notifications
 *               waiting, the session with that target (token, credits)
 *   ns.lock     the target's sessions (nsess.h), a leaf
 *   mr_lock     registrations (ibv_reg_mr may take long: never under
 *               lock, so it stalls no transfer) */

#ifndef VB_PLUGIN
#define VB_PLUGIN verbs        /* the test build names itself vbfake */
#endif
#define VB_STR2(x) #x
#define VB_STR(x) VB_STR2(x)
#define VB_NAME VB_STR(VB_PLUGIN)

typedef struct vb_config {
    const char *device;
    const char *devices;
    uint64_t port;
    int64_t gid_index;
    uint64_t timeout_ms;
    uint64_t sq_depth;
    uint64_t chain_max;
    uint64_t max_qps;
    uint64_t stripe_min;
    uint64_t notif_tx;
    uint64_t cq_batch;
    uint64_t retry_cnt;
    uint64_t qp_timeout;
    uint64_t traffic_class;
    uint64_t sl;
    uint64_t notif_window;
    uint64_t notif_queue;
    const char *addr;
    uint64_t ctl_port;         /* "port" is the HCA's port here */
    const char *advertise;
    xfer__stream_limits_t lim;
} vb_config_t;

typedef struct xfer_be vb_t;
typedef struct xfer_be_peer vb_peer_t;
typedef struct xfer_be_req vb_req_t;

/* ---- rails ------------------------------------------------------------- */

typedef struct vb_rail {
    char name[64];             /* the device's */
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *ch;
    struct ibv_cq *cq;
    int cqe;                   /* the CQ's size */
    uint8_t port;
    int gid_index;             /* -1: none (IB without GRH) */
    vb_port_addr_t addr;       /* as peers reach it */
    uint32_t max_msg;          /* the port's max_msg_sz */
    uint32_t max_inline;       /* what create_qp granted, 0 until known */
    int max_rd_atom;           /* device max_qp_rd_atom: READs a QP
                                  answers at once (responder) */
    int max_init_rd;           /* device max_qp_init_rd_atom: READs a QP
                                  has out at once (requester) */
    unsigned events;           /* CQ events not yet acknowledged */
} vb_rail_t;

/* ---- queue pairs ------------------------------------------------------- */

enum { VB_WR_DATA = 1, VB_WR_NOTIF = 2, VB_WR_RECV = 3 };
enum { VB_QP_INI = 1, VB_QP_TGT = 2 };

/* A queue pair in a slot of its rail's table: completions name the slot
 * and its generation (sq.h's wr_id), so one for a QP that is gone, or
 * was remade in the same slot, is recognised and dropped. */
typedef struct vb_qp {
    struct ibv_qp *qp;         /* NULL: the slot is free */
    uint16_t gen;              /* moves on each time the slot is freed */
    uint8_t kind;              /* VB_QP_* */
    uint8_t rail;
    uint32_t psn;              /* our starting PSN */
    vb_sq_t sq;                /* VB_QP_INI: its send queue */
    uint64_t done_ms;          /* VB_QP_INI: its last good completion */
    void *owner;               /* VB_QP_INI: the peer; VB_QP_TGT: the
                                  target connection (vb_tconn_t) */
} vb_qp_t;

/* The queue pairs an initiator asked this target for (ctl.c), one per
 * rail, kept per initiator (by the name the control channel's handshake
 * bound) until it asks again (a new generation or epoch), its QP fails,
 * or the table is full and it is the least recently used one. */
typedef struct vb_tconn {
    struct vb_tconn *next;
    char name[XFER_NAME_MAX + 1];
    unsigned nrails;
    int slot[VB_MAX_RAILS];    /* its QP on each rail */
    uint64_t used;             /* tick of the last handshake */
    /* Receive buffers for notifications on rail 0's QP: window of them,
     * XFER__NS_HDR_LEN + XFER_NOTIF_MAX bytes each, one registration. */
    unsigned nrx;
    unsigned char *rx;
    struct ibv_mr *rx_mr;
} vb_tconn_t;
#define VB_RX_SIZE (XFER__NS_HDR_LEN + XFER_NOTIF_MAX)

/* ---- peers -------------------------------------------------------------- */

/* The connection of a peer: one QP per rail, all made and connected
 * together (generation gen), remade whole after any of them fails. */
enum { VB_CONN_NONE = 0, VB_CONN_ASKING, VB_CONN_READY };
/* Whether an asynchronous event took a rail down (verbs.c). */
enum { VB_DOWN_NO = 0, VB_DOWN_PORT, VB_DOWN_FOR_GOOD };

typedef struct vb_slot vb_slot_t;

struct xfer_be_peer {
    vb_t *v;
    atomic_uint refs;          /* the core's until peer_remove, one per
                                  request, remote region and slot */
    char name[XFER_NAME_MAX + 1];
    uint64_t epoch;
    xfer__hwctl_peer_t ctl;
    unsigned nrails;           /* min(ours, theirs) */
    /* Set once, before dead: why every post to it now fails. */
    atomic_bool dead;
    xfer_status_t dead_st;
    char dead_why[256];
    /* ---- lock ---- */
    int cstate;                /* VB_CONN_* */
    xfer_status_t cst;         /* why the last ask failed (cwhy) */
    uint32_t gen;              /* of the connection asked for or made */
    int slot[VB_MAX_RAILS];    /* its QPs, -1 none */
    uint64_t ask_ms;           /* when the QPREQ went */
    uint64_t used;             /* tick of its last post or notification */
    unsigned ask_fails;        /* asks failed in a row (the sweep gives up
                                  on notifications alone after 3) */
    char cwhy[XFER_NAME_MAX + 512]; /* why the last connection ended */
    xfer__dlist_t waitq;       /* requests waiting for the
                                  connection or for room in a send queue */
    /* ---- olock ---- */
    pthread_mutex_t olock;
    uint64_t next_ticket;
    xfer__dlist_t order;       /* requests in flight, post order */
    vb_slot_t *sh, *st;        /* notifications waiting, post order */
    size_t nslots;
    xfer__ns_send_t ns;
    /* lock: waiting for one of the instance's notif_tx send buffers */
    xfer__dlink_t txwlink;
    bool broken;               /* lock: its first QP refused a SEND; the
                                  sweep (verbs.c) remakes the connection */
    uint64_t skip_from;        /* lock: the lowest of them (skip_due) */
    bool skip_due;             /* lock: notification numbers were lost with
                                  a connection; the target is told (SKIP)
                                  before the next one asks for QPs */
};

/* ---- registrations ------------------------------------------------------ */

typedef struct vb_mem {
    struct ibv_mr *mr[VB_MAX_RAILS];
    uint32_t lkey[VB_MAX_RAILS];
    uint32_t rkey[VB_MAX_RAILS];
    uintptr_t base;
    size_t len;
    bool read_only;            /* pinned without local write (read-only
                                  memory): no READ may land in it */
} vb_mem_t;

typedef struct vb_rmem {
    vb_peer_t *peer;           /* a reference */
    unsigned nrails;
    uint32_t rkey[VB_MAX_RAILS];
} vb_rmem_t;

/* ---- requests ----------------------------------------------------------- */

struct xfer_be_req {
    vb_t *v;
    vb_peer_t *peer;           /* a reference */
    xfer_op_t op;
    size_t nseg;
    size_t nops;
    vb_op_t *ops;              /* plan.h's, grouped by rail */
    struct ibv_send_wr *wr;    /* one per op, filled at creation */
    struct ibv_sge *sge;
    size_t rfirst[VB_MAX_RAILS], rcount[VB_MAX_RAILS];
    const vb_mem_t **lmems;    /* distinct local registrations used */
    size_t nlmems;
    /* ---- lock ---- */
    xfer_status_t st;
    char err[XFER_NAME_MAX + 512];
    size_t issued[VB_MAX_RAILS]; /* work requests posted, per rail */
    size_t pending;            /* posted, not yet completed */
    size_t pend[VB_MAX_RAILS]; /* ... per rail */
    bool released;             /* the core let go while pending */
    bool done;                 /* st is final */
    xfer__dlink_t wlink;       /* on its peer's waitq */
    uint64_t deadline_ms;
    xfer__dlink_t ilink;       /* on the instance's reqs */
    /* ---- peer olock ---- */
    uint64_t ticket;
    xfer__dlink_t plink;       /* on its peer's order */
    vb_slot_t *slot;           /* its notification, until handed over */
};

/* ---- notifications ------------------------------------------------------ */

/* A notification waiting to go, in post order (peer olock), then handed
 * to the QP (lock) until its SEND completes. */
struct vb_slot {
    vb_slot_t *next;
    uint64_t ticket;           /* the post it belongs to */
    vb_req_t *req;             /* that request, until it failed or this
                                  was handed over */
    vb_peer_t *peer;           /* a reference */
    int txb;                   /* the send buffer it went from, -1 none
                                  (inline) */
    uint64_t posted_ms;        /* when its SEND was posted */
    size_t len;                /* of the payload; (size_t)-1: dropped */
    unsigned char buf[];       /* XFER__NS_HDR_LEN header, then payload */
};

/* ---- the instance -------------------------------------------------------- */

struct xfer_be {
    const xfer_host_t *host;
    vb_config_t cfg;
    unsigned nrails;
    vb_rail_t rail[VB_MAX_RAILS];
    int epfd;                  /* the rails' channels and the control
                                  channel */
    pthread_mutex_t mr_lock;
    /* ---- lock ---- */
    pthread_mutex_t lock;
    vb_qp_t *qps[VB_MAX_RAILS];  /* max_qps slots per rail */
    unsigned nqps;             /* in use on rail 0 (every rail alike) */
    xfer__dlist_t reqs;        /* requests posted and not finished */
    vb_tconn_t *tconns;        /* the QPs made for initiators (ctl.c) */
    unsigned ntconns;
    uint64_t tick;
    /* Send buffers for notifications too long to go inline: notif_tx
     * of VB_RX_SIZE bytes on rail 0, one registration. */
    unsigned char *tx;
    struct ibv_mr *tx_mr;
    int *tx_free;              /* a stack of free buffer indices */
    unsigned ntx_free;
    xfer__dlist_t txwait;      /* peers waiting for one, in turn */
    uint64_t last_post_ms;
    atomic_bool armed;
    atomic_uint_fast64_t sweep_ms; /* the last look at every connection */
    /* What only the sweep (verbs.c) ends, so the progress thread must
     * not sleep on the fds alone while any is so: peers asking for QPs,
     * notifications the QPs hold, a connection to remake. */
    atomic_uint asking, notifs_flying;
    atomic_bool sweep_due;
    /* An HCA said a port or device is gone, or a CQ broke (an async
     * event, verbs.c): the sweep fails every connection with this. */
    atomic_bool fail_all;
    char fail_why[200];        /* lock */
    int down;                  /* lock: VB_DOWN_*: new connections fail */
    char down_why[200];        /* lock: with this */
    bool quiesced;             /* lock: the agent goes (vb_quiesce): no QP
                                  is made for an initiator again */
    /* control channel: socket, channel, chan_lock, peers, asks */
    xfer__hwctl_t ctl;
    unsigned char info_blob[XFER_BE_BLOB_MAX];
    size_t info_len;
    /* target side */
    xfer__ns_table_t ns;
    /* counters for state() */
    atomic_ulong wrs_posted, chains, qp_errors, notifs_sent, rebuilt;
    atomic_ulong hs_refused;   /* handshake messages refused (ctl.c) */
    char desc[160];            /* "mlx5_0:1 IB LID 3 MTU 4096, ..." */
};

#define VERR(v, st, ...) (v)->host->error((v)->host->ctx, (st), __VA_ARGS__)
#define VLOG(v, lvl, ...) (v)->host->log((v)->host->ctx, (lvl), __VA_ARGS__)
#define VAPI (vb__api)
/* The request a link of one of its lists belongs to. */
#define VB_REQ(k, member) XFER__DLIST_ENTRY((k), vb_req_t, member)

/* How long after a post arm keeps answering BUSY (ms). */
#define VB_ARM_AFTER_POST_MS 2u

/* Read up to max completions of every rail (lock held); how many. */
int vb__cq_drain(vb_t *v, int max);

/* rail.c */
/* Open the rails the parameters name (device, devices, port, gid_index):
 * XFER_ERR_NOT_FOUND with a sentence when there is no RDMA device or no
 * active port. */
xfer_status_t vb__rails_open(vb_t *v);
void vb__rails_close(vb_t *v);
/* A sentence on what devices this host has (probe). */
void vb__rails_probe(char *buf, size_t len);

/* qp.c */
xfer_status_t vb__qps_init(vb_t *v);
void vb__qps_fini(vb_t *v);
/* A new QP on every rail in [0, nrails) in INIT, of kind, for owner: the
 * slot indices in slot[]; XFER_ERR_BUSY when the table is full (lock
 * held). */
xfer_status_t vb__qp_make(vb_t *v, uint8_t kind, void *owner,
                          unsigned nrails, int *slot, char *why,
                          size_t size);
/* INIT -> RTR -> RTS towards the remote QP r (lock held). */
xfer_status_t vb__qp_connect(vb_t *v, int slot, unsigned rail,
                             const vb_qp_addr_t *r, char *why, size_t size);
/* Our address of the QP in slot (for a handshake). */
void vb__qp_addr(vb_t *v, int slot, unsigned rail, vb_qp_addr_t *a);
/* Into the error state: the NIC stops (lock held). */
void vb__qp_error(vb_t *v, int slot, unsigned rail);
/* Destroy and free the slot; its generation moves on (lock held). */
void vb__qp_free(vb_t *v, int slot, unsigned rail);
vb_qp_t *vb__qp_get(vb_t *v, unsigned rail, int slot);
/* The QP a completion's wr_id names, or NULL when stale. */
vb_qp_t *vb__qp_of(vb_t *v, unsigned rail, uint64_t wr_id);

/* ctl.c */
xfer_status_t vb__ctl_open(vb_t *v);
xfer_status_t vb__info_build(vb_t *v);
xfer_status_t vb__info_parse(vb_t *v, const char *name, const void *info,
                             size_t len, vb_peer_t *p, const void **chan,
                             size_t *chan_len);
/* Ask the peer for its QPs (chan_lock held, not lock): makes ours. */
void vb__conn_ask(vb_t *v, vb_peer_t *p);
/* The target's connection tc (lock held): its QP failed, it goes. */
void vb__tconn_drop(vb_t *v, vb_tconn_t *tc);
/* Every target connection (fini). */
void vb__tconns_free(vb_t *v);

/* peer.c */
xfer_status_t vb__peer_add(vb_t *v, const char *name, uint64_t epoch,
                           const void *info, size_t len, vb_peer_t **out);
void vb__peer_remove(vb_t *v, vb_peer_t *p);
xfer_status_t vb__peer_connect(vb_t *v, vb_peer_t *p);
void vb__peer_put(vb_peer_t *p);
xfer_status_t vb__peer_gone(vb_t *v, const vb_peer_t *p);
bool vb__peer_mark_dead(vb_peer_t *p, xfer_status_t st, const char *why);
void vb__peer_kill(vb_t *v, vb_peer_t *p, xfer_status_t st,
                   const char *why);
/* p's connection failed (lock held): its QPs go to the error state and
 * are freed, what was in flight on them fails with st and why, and the
 * next post asks for a new one. */
void vb__conn_fail(vb_t *v, vb_peer_t *p, xfer_status_t st,
                   const char *why);
/* Close p's idle connection to make room (lock held): nothing fails, the
 * next transfer asks again. */
void vb__conn_drop_idle(vb_t *v, vb_peer_t *p);
/* p's connection state becomes cs (lock held; counts the askers). */
void vb__cstate(vb_t *v, vb_peer_t *p, int cs);
/* Make sure p has a connection or is asking for one (no lock held): the
 * first post's part of it. */
void vb__conn_need(vb_t *v, vb_peer_t *p);
/* The same with lock held (let go and taken again while asking): on
 * return p is connected, asking, or its ask failed (cst, cwhy). */
void vb__conn_ensure(vb_t *v, vb_peer_t *p);

/* mem.c */
xfer_status_t vb__mem_register(vb_t *v, const xfer_be_region_t *r,
                               void **mem);
void vb__mem_deregister(vb_t *v, void *mem);
xfer_status_t vb__mem_pack(vb_t *v, void *mem, void *buf, size_t *len);
xfer_status_t vb__rmem_unpack(vb_t *v, vb_peer_t *p,
                              const xfer_be_rregion_t *r, const void *buf,
                              size_t len, void **rmem);
void vb__rmem_release(vb_t *v, void *rmem);

/* req.c */
xfer_status_t vb__req_create(vb_t *v, xfer_op_t op, vb_peer_t *p,
                             const xfer_be_seg_t *segs, size_t nseg,
                             vb_req_t **out);
xfer_status_t vb__req_post(vb_t *v, vb_req_t *q, const void *notif,
                           size_t len);
xfer_status_t vb__req_check(vb_t *v, vb_req_t *q);
void vb__req_release(vb_t *v, vb_req_t *q);
/* A data batch of nwr work requests of q on rail completed (lock
 * held). */
void vb__req_done(vb_t *v, vb_req_t *q, unsigned rail, uint32_t nwr);
/* q fails with st and why (lock held); it may be freed. */
void vb__req_fail(vb_t *v, vb_req_t *q, xfer_status_t st, const char *why);
/* Post what waits on p (its connection became ready, or room came). */
int vb__req_issue_peer(vb_t *v, vb_peer_t *p);
/* Deadlines (lock held). */
int vb__req_progress(vb_t *v, uint64_t now);
/* End p's requests (lock held): its connection failed (st, why). */
void vb__req_fail_peer(vb_t *v, vb_peer_t *p, xfer_status_t st,
                       const char *why);
/* q's notification's SEND completed (lock held): q ends if its data
 * landed; it may be freed. */
void vb__req_notif_done(vb_t *v, vb_req_t *q);
/* Whether q's data landed: nothing of it on the HCA any more (lock). */
bool vb__req_landed(const vb_req_t *q);
/* Whether every request up to ticket t has its data ahead of a SEND
 * posted now on rail 0 (lock and olock held). */
bool vb__req_covered(vb_t *v, vb_peer_t *p, uint64_t t);
void vb__req_free_all(vb_t *v);

/* notif.c */
xfer_status_t vb__notif_open(vb_t *v);
void vb__notif_close(vb_t *v);
xfer_status_t vb__notif_send(vb_t *v, vb_peer_t *p, const void *msg,
                             size_t len);
vb_slot_t *vb__slot_new(vb_peer_t *p, const void *msg, size_t len);
void vb__slot_free(vb_t *v, vb_slot_t *s);
/* Send what may go from the head of p's queue (lock and olock held). */
void vb__notif_pump(vb_t *v, vb_peer_t *p);
/* Forget what p had waiting (olock held), and take it off the queue for
 * send buffers. */
void vb__notif_drop(vb_t *v, vb_peer_t *p);
/* The SEND of slot owner ended (lock held): err 0, or it failed or was
 * taken back with its connection. */
void vb__notif_sent(vb_t *v, void *owner, int err);
/* A receive on a target QP completed (lock held). */
void vb__notif_recv(vb_t *v, vb_tconn_t *tc, unsigned buf, size_t len);
/* Post receive buffer i of tc (lock held). */
int vb__notif_repost(vb_t *v, vb_tconn_t *tc, unsigned i);
xfer_status_t vb__tconn_rx_open(vb_t *v, vb_tconn_t *tc);
void vb__tconn_rx_close(vb_t *v, vb_tconn_t *tc);

#endif /* XFER_PLUGINS_VERBS_H */
