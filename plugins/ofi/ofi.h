/* ofi.h - what the files of the ofi plugin share: the instance (fabric,
 * domain, endpoint, CQ, AV), peers, registrations, requests, notifications. */
#ifndef XFER_PLUGINS_OFI_H
#define XFER_PLUGINS_OFI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include <xfer/backend.h>

#include "plugins/common/chan.h"
#include "plugins/common/clock.h"
#include "plugins/common/dlist.h"
#include "plugins/common/hwctl.h"
#include "plugins/common/nsess.h"
#include "plugins/common/stream.h"
#include "plugins/common/tcpsock.h"

/* How the files divide the work (ofi.c is the table and reads top-down):
 *   ofi.c    parameters, the ops table, init/fini (fi_getinfo, fabric,
 *            domain, endpoint, CQ, AV), progress, arm, probe, state
 *   ctl.c    connection info, and the control channel's callbacks
 *            (plugins/common/hwctl.h: tokens, acks, death)
 *   peer.c   peers and their address vector entries
 *   mem.c    registrations (the provider's mr_mode) and remote keys
 *   req.c    requests: fi_writemsg/fi_readmsg per run of descriptors,
 *            completions counted, -FI_EAGAIN, timeouts
 *   notif.c  notifications: ordering, credits, messages both ways, the
 *            receive buffers
 *
 * Locks, in the only order they are ever taken:
 *   chan_lock -> ep_lock -> peer olock -> ns.lock;  ep_lock -> mr_lock
 *   chan_lock   ctl.chan_lock (hwctl.h): the control channel and the
 *               peer list's shape; hwctl's callbacks run under it
 *   ep_lock     the endpoint, its CQ and AV (FI_THREAD_DOMAIN: libfabric
 *               takes no lock of its own), every request's issue and
 *               completion state, the receive buffers
 *   p->olock    one peer's order: requests in post order, notifications
 *               waiting, the session with that target (token, credits)
 *   ns.lock     the target's sessions (nsess.h), a leaf
 *   mr_lock     registration calls on the domain (a leaf), which with
 *               FI_THREAD_ENDPOINT may run beside the endpoint's; a
 *               provider that serialises only per domain (serial_mr)
 *               registers under ep_lock instead */

#define OFI_MAGIC_KEY 0x4b4f4658u       /* "XFOK", a packed key */
/* Entries in an address vector of libfabric 1.17's shm (SMR_MAX_PEERS),
 * which this plugin never removes (peer.c, av_remove). */
#define OFI_SHM_AV_MAX 256

typedef struct ofi_config {
    const char *provider;
    const char *domain;
    const char *fabric;
    const char *node;
    uint64_t timeout_ms;
    uint64_t notif_window;
    uint64_t notif_queue;
    uint64_t notif_rx;
    uint64_t more;
    uint64_t post_ops;
    uint64_t cq_batch;
    const char *addr;
    uint64_t port;
    const char *advertise;
    xfer__stream_limits_t lim;
} ofi_config_t;

typedef struct xfer_be ofi_t;
typedef struct xfer_be_peer ofi_peer_t;
typedef struct xfer_be_req ofi_req_t;

/* What a CQ entry's op_context points at: the provider's scratch space
 * first (FI_CONTEXT2 mode), then what the operation was. */
enum { OFI_OP_RMA = 1, OFI_OP_SEND, OFI_OP_RECV };
typedef struct ofi_ctx {
    struct fi_context2 fi;
    int kind;
    void *obj;                 /* ofi_req_t, ofi_slot_t or ofi_rxbuf_t */
} ofi_ctx_t;

/* One RMA operation of a request: a run of descriptors adjacent on both
 * sides, worked out at creation so a post only issues. */
typedef struct ofi_op {
    ofi_ctx_t ctx;             /* its own: the provider may use it */
    const void *lmem;          /* the local registration (ofi_mem_t) */
    void *laddr;
    size_t len;
    void *desc;                /* local descriptor (FI_MR_LOCAL), or NULL */
    uint64_t raddr;            /* as the provider wants it: virtual address
                                  or offset into the registration */
    uint64_t key;
    size_t seg;                /* its first descriptor, for sentences */
    bool again;                /* failed on a connection the provider had
                                  found broken: to issue again */
} ofi_op_t;

/* A notification waiting to go, in post order (peer olock), then in
 * flight until the provider is done with it (ep_lock). */
typedef struct ofi_slot {
    struct ofi_slot *next;
    struct ofi_slot *fnext, *fprev;    /* ep_lock: with the provider */
    ofi_ctx_t ctx;
    uint64_t ticket;           /* the post it belongs to */
    ofi_req_t *req;            /* that request, until it failed or this
                                  was handed over */
    bool ready;                /* its data is visible (or a lone one) */
    bool numbered;             /* hdr holds its sequence number: a send
                                  that failed, to go again as it is */
    ofi_peer_t *peer;          /* a reference while in flight */
    struct fid_mr *mr;         /* FI_MR_LOCAL: the message registered */
    size_t len;                /* of the payload; (size_t)-1: dropped */
    unsigned char buf[];       /* XFER__NS_HDR_LEN header, then payload */
} ofi_slot_t;

struct xfer_be_peer {
    ofi_t *o;
    atomic_uint refs;          /* the core's until peer_remove, one per
                                  request, remote region and slot */
    char name[XFER_NAME_MAX + 1];
    uint64_t epoch;
    xfer__hwctl_peer_t ctl;    /* the control channel's: cp, asks, the
                                  instance's list (chan_lock) */
    /* Its endpoint's name, from the connection info, and (ep_lock) its
     * entry in the address vector, inserted at first use. */
    size_t alen;
    unsigned char addr[256];
    fi_addr_t fa;
    bool in_av;
    /* Set once, before dead: why every post to it now fails. */
    atomic_bool dying, dead, killed;
    xfer_status_t dead_st;
    char dead_why[256];
    /* ---- olock ---- */
    pthread_mutex_t olock;
    uint64_t next_ticket;
    xfer__dlist_t order;               /* requests in flight, post order
                                          (ofi_req_t.plink) */
    ofi_slot_t *sh, *st;               /* notifications waiting */
    size_t nslots;
    xfer__ns_send_t ns;                /* token and credits */
};

typedef struct ofi_mem {
    struct fid_mr *mr;
    void *desc;
    uint64_t key;
    uintptr_t base;
} ofi_mem_t;

typedef struct ofi_rmem {
    ofi_peer_t *peer;          /* a reference */
    uint64_t key;
    uint64_t base;             /* subtracted from addresses without
                                  FI_MR_VIRT_ADDR */
} ofi_rmem_t;

struct xfer_be_req {
    ofi_t *o;
    ofi_peer_t *peer;          /* a reference */
    xfer_op_t op;
    size_t nseg;
    size_t nops;
    ofi_op_t *ops;
    /* ---- ep_lock ---- */
    xfer_status_t st;
    char err[XFER_NAME_MAX + 512];
    size_t issued;             /* operations of this post handed over */
    size_t pending;            /* ... not yet completed by the CQ */
    bool released;             /* the core let go while pending */
    bool done;                 /* st is final; off the peer's order */
    unsigned retries;          /* operations issued again this post */
    size_t nagain;             /* operations marked again */
    uint64_t again_ms;         /* not before then */
    uint64_t deadline_ms;
    xfer__dlink_t ilink;       /* the instance's list while not done, or
                                  pending: post order */
    xfer__dlink_t blink;       /* the instance's backlog list, while
                                  waiting to issue the rest (-FI_EAGAIN) */
    /* ---- peer olock ---- */
    uint64_t ticket;
    xfer__dlink_t plink;       /* the peer's order list, while on it */
    ofi_slot_t *slot;          /* its notification, until that is handed
                                  over or dropped */
};

/* A receive buffer for notifications: header and the largest payload. */
typedef struct ofi_rxbuf {
    ofi_ctx_t ctx;
    bool posted;
    unsigned char *buf;
} ofi_rxbuf_t;
#define OFI_RX_SIZE (XFER__NS_HDR_LEN + XFER_NOTIF_MAX)

struct xfer_be {
    const xfer_host_t *host;
    ofi_config_t cfg;
    struct fi_info *info;      /* the one chosen */
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_ep *ep;
    struct fid_av *av;
    struct fid_cq *cq;
    int cq_fd;                 /* FI_WAIT_FD, -1 without */
    struct fid_cntr *rcntr;    /* without it: peers' RMA here, counted */
    uint64_t rseen;            /* ep_lock: the count last seen */
    int epfd;                  /* the CQ's fd and the channel's */
    uint64_t mr_mode;
    bool serial_mr;            /* FI_THREAD_DOMAIN: registrations under
                                  ep_lock */
    pthread_mutex_t mr_lock;
    size_t max_msg;
    bool shm;                  /* libfabric's shm provider (its quirks:
                                  ofi.c choose, peer.c av_remove) */
    size_t dc_max;             /* writes up to this many bytes carry
                                  FI_DELIVERY_COMPLETE (ofi.c choose) */
    size_t av_used;            /* ep_lock: addresses inserted, ever */
    atomic_uint_fast64_t next_key; /* requested keys without PROV_KEY */
    unsigned char name[256];   /* our endpoint's address */
    ofi_t *local_next;         /* peer.c's list of this process's */
    bool local;
    size_t name_len;
    char addr_str[96];         /* the same, readable (fi_av_straddr) */
    char desc[200];            /* "provider tcp;ofi_rxm, domain lo, ..." */
    /* ---- ep_lock ---- */
    pthread_mutex_t ep_lock;
    xfer__dlist_t reqs;        /* requests with operations pending
                                  (ofi_req_t.ilink) */
    xfer__dlist_t backlog;     /* requests with operations to issue
                                  (ofi_req_t.blink) */
    ofi_slot_t *sbacklog;      /* notifications to send again (EAGAIN) */
    ofi_slot_t *sflight;       /* notifications the provider holds */
    uint64_t last_post_ms;
    atomic_bool armed;         /* arm said the thread may sleep */
    size_t nrx;
    ofi_rxbuf_t *rx;
    struct fid_mr *rx_mr;      /* FI_MR_LOCAL: all receive buffers */
    unsigned char *rx_mem;
    /* control channel: socket, channel, chan_lock, peers, asks */
    xfer__hwctl_t ctl;
    unsigned char info_blob[XFER_BE_BLOB_MAX];
    size_t info_len;
    /* target side */
    xfer__ns_table_t ns;
    /* counters for state() */
    atomic_ulong ops_posted, eagain, cq_errors, notifs_sent;
};

#define OERR(o, st, ...) (o)->host->error((o)->host->ctx, (st), __VA_ARGS__)
#define OLOG(o, lvl, ...) (o)->host->log((o)->host->ctx, (lvl), __VA_ARGS__)

/* How long after a post arm keeps answering BUSY (ms). */
#define OFI_ARM_AFTER_POST_MS 2u

/* A libfabric error (a negative -FI_E*) as an xfer status. */
xfer_status_t ofi__status(int err);
/* Read and handle up to max CQ entries (ep_lock held); how many. */
int ofi__cq_drain(ofi_t *o, int max);

/* ctl.c; the rest of the channel is xfer__hwctl_* on o->ctl */
/* Open the control channel with this plugin's callbacks. */
xfer_status_t ofi__ctl_open(ofi_t *o);
xfer_status_t ofi__info_build(ofi_t *o);
xfer_status_t ofi__info_parse(ofi_t *o, const char *name, const void *info,
                              size_t len, ofi_peer_t *p,
                              const void **chan_info, size_t *chan_len);

/* peer.c */
xfer_status_t ofi__peer_add(ofi_t *o, const char *name, uint64_t epoch,
                            const void *info, size_t len, ofi_peer_t **out);
void ofi__peer_remove(ofi_t *o, ofi_peer_t *p);
xfer_status_t ofi__peer_connect(ofi_t *o, ofi_peer_t *p);
void ofi__peer_put(ofi_peer_t *p);
xfer_status_t ofi__peer_gone(ofi_t *o, const ofi_peer_t *p);
/* p's address vector entry, inserted if needed (ep_lock held): XFER_OK,
 * or the status with why (size bytes) set. */
xfer_status_t ofi__peer_addr(ofi_t *o, ofi_peer_t *p, char *why,
                             size_t size);
/* Mark p dead with st and why, unless it is already (then false). */
bool ofi__peer_mark_dead(ofi_peer_t *p, xfer_status_t st, const char *why);
/* The peer is gone for good: mark it, fail what is in flight, drop what
 * waits (no lock held). */
void ofi__peer_kill(ofi_t *o, ofi_peer_t *p, xfer_status_t st,
                    const char *why);
/* The process's endpoints (peer.c): an instance joins once its endpoint
 * is named, and leaves before it closes, taking itself out of the
 * others' address vectors. */
void ofi__local_add(ofi_t *o);
void ofi__local_del(ofi_t *o);

/* mem.c */
xfer_status_t ofi__mem_register(ofi_t *o, const xfer_be_region_t *r,
                                void **mem);
void ofi__mem_deregister(ofi_t *o, void *mem);
xfer_status_t ofi__mem_pack(ofi_t *o, void *mem, void *buf, size_t *len);
xfer_status_t ofi__rmem_unpack(ofi_t *o, ofi_peer_t *p,
                               const xfer_be_rregion_t *r, const void *buf,
                               size_t len, void **rmem);
void ofi__rmem_release(ofi_t *o, void *rmem);
/* Register [addr, addr+len) for the local use access (FI_SEND, FI_RECV)
 * of a provider with FI_MR_LOCAL; *mr NULL when it needs none. */
xfer_status_t ofi__mr_local(ofi_t *o, void *addr, size_t len,
                            uint64_t access, bool ep_held,
                            struct fid_mr **mr);
/* Close a registration of ours (NULL: nothing). */
void ofi__mr_close(ofi_t *o, struct fid_mr *mr, bool ep_held);

/* req.c */
xfer_status_t ofi__req_create(ofi_t *o, xfer_op_t op, ofi_peer_t *p,
                              const xfer_be_seg_t *segs, size_t nseg,
                              ofi_req_t **out);
xfer_status_t ofi__req_post(ofi_t *o, ofi_req_t *q, const void *notif,
                            size_t len);
xfer_status_t ofi__req_check(ofi_t *o, ofi_req_t *q);
void ofi__req_release(ofi_t *o, ofi_req_t *q);
/* A completion (err 0) or error entry of RMA operation op (ep_lock
 * held). */
void ofi__req_done(ofi_t *o, ofi_op_t *op, int err, const char *why);
/* Issue what waits for room, fail what is past its deadline (ep_lock
 * held). */
int ofi__req_progress(ofi_t *o, uint64_t now);
/* q's notification went to the provider (or to the queue progress
 * sends from): q, whose data had landed, ends (ep_lock and q's peer's
 * olock held, from ofi__notif_pump). */
void ofi__req_notif_gone(ofi_t *o, ofi_req_t *q);
/* End p's requests in flight (ep_lock held): p is dead. */
void ofi__req_fail_peer(ofi_t *o, ofi_peer_t *p);
/* Whether the provider still holds an operation on registration m
 * (ep_lock held). */
bool ofi__req_uses(ofi_t *o, const void *m);
/* Free requests released while pending (fini, after the endpoint). */
void ofi__req_free_all(ofi_t *o);

/* notif.c */
xfer_status_t ofi__notif_send(ofi_t *o, ofi_peer_t *p, const void *msg,
                              size_t len);
ofi_slot_t *ofi__slot_new(ofi_peer_t *p, const void *msg, size_t len);
void ofi__slot_free(ofi_t *o, ofi_slot_t *s);
/* Send what may go now from the head of p's queue (ep_lock and p->olock
 * held). */
void ofi__notif_pump(ofi_t *o, ofi_peer_t *p);
/* Forget what p had waiting (olock held): it is dead. */
void ofi__notif_drop(ofi_t *o, ofi_peer_t *p);
/* A send's completion or error (ep_lock held). */
void ofi__notif_sent(ofi_t *o, ofi_slot_t *s, int err);
/* A receive's completion (err 0, len bytes) or error (ep_lock held). */
void ofi__notif_recv(ofi_t *o, ofi_rxbuf_t *b, size_t len, int err);
xfer_status_t ofi__rx_open(ofi_t *o);
void ofi__rx_close(ofi_t *o);
/* Sends that met -FI_EAGAIN, again (ep_lock held). */
int ofi__notif_retry(ofi_t *o);
/* Free the notifications the provider held or had no room for (fini,
 * after the endpoint closed: no completion comes for them now). */
void ofi__notif_free_all(ofi_t *o);

#endif /* XFER_PLUGINS_OFI_H */
