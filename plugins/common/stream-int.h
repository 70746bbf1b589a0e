/* stream-int.h - what the engine's files share (txq, conn, target, initiator,
 * chan): the structs of an instance, a connection, a request, and their calls. */
#ifndef XFER_PLUGINS_STREAM_INT_H
#define XFER_PLUGINS_STREAM_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "plugins/common/stream.h"
#include "plugins/common/wire.h"

#ifdef IOV_MAX
#define XFER__STREAM_GATHER_MAX IOV_MAX
#else
#define XFER__STREAM_GATHER_MAX 1024
#endif
/* Staging buffer for small pieces of a send (txq.c). */
#define XFER__STREAM_STAGE_SIZE (64u << 10)
/* A target stops parsing a peer's frames while this many answers (or
 * lim.sendq_bytes of READ payload and queued notifications) wait to be
 * sent: a peer that never reads cannot make us queue without bound.  It
 * parses again below half of both. */
#define XFER__STREAM_TXQ_HIGH 8192u
#define XFER__STREAM_TXQ_LOW (XFER__STREAM_TXQ_HIGH / 2)
/* Accepting pauses this long when the process is out of descriptors. */
#define XFER__STREAM_ACCEPT_BACKOFF_MS 100u
/* Bytes of a source key (max_conns_per_addr): a family tag, then an
 * IPv4 address, an IPv6 /64 prefix, or a uid. */
#define XFER__STREAM_AKEY 17
/* No legitimate region is this large; a length past it is a broken peer. */
#define XFER__STREAM_LEN_MAX (UINT64_C(1) << 47)
/* File descriptors received ahead of the FD frames they belong to. */
#define XFER__STREAM_FDQ_MAX 32
#define XFER__STREAM_PACK_MAX 64

enum { XFER__H_LISTEN = 1, XFER__H_TIMER, XFER__H_CONN };
enum { XFER__RX_HDR, XFER__RX_BODY };
/* Send-queue entries: a request's frames, control frames, a target's
 * READ answer, a marker that delivers a notification once the answers
 * before it left (target). */
enum { XFER__TX_REQ, XFER__TX_CTRL, XFER__TX_RESP, XFER__TX_DELIVER };

typedef struct xfer__stream_conn conn_t;
typedef struct xfer__stream_smem smem_t;

/* A local registration as seen by the engine.  inflight counts frames
 * that still point into the memory, so deregistration knows whether it
 * has anything to detach.  The transport's private bytes follow it. */
struct xfer__stream_smem {
    uintptr_t addr;
    size_t len;
    uint64_t key;
    unsigned inflight;
    smem_t *prev, *next;
};

typedef struct xfer__stream_srmem {
    uint64_t key, addr, len;
    size_t pack_len;
    uint8_t pack[XFER__STREAM_PACK_MAX];
} srmem_t;

/* One send-queue entry: an iovec list with a cursor.  A request's entry
 * is embedded in it; the others come from a free list so the steady
 * state allocates nothing. */
typedef struct xfer__stream_txe {
    struct xfer__stream_txe *next;
    uint8_t kind;
    uint8_t queued;
    int niov, idx;     /* iov[idx] + off is the next byte to send */
    size_t off;
    struct iovec *iov;
    struct iovec v[2]; /* iov for entries other than TX_REQ */
    xfer_wire_hdr_t hdr;
    void *heap;        /* owned bytes (a notification) */
    size_t heap_len;
    size_t qbytes;     /* counted in the connection's txbytes */
    smem_t *mem;       /* TX_RESP: registration the payload comes from */
    int has_fd, fd;    /* an fd to pass with the first byte (FD frame) */
} txe_t;

struct xfer_be_peer {
    xfer_be_t *be;
    char name[XFER_NAME_MAX + 1];
    uint64_t epoch;
    void *info;
    size_t info_len;
    char where[128];
    conn_t *conn;
    unsigned refs;     /* the core's, plus one per request */
    int removed;
    int eager;         /* peer_connect waits for its connection */
    xfer_status_t last_err; /* how its last connection ended */
    char last_why[256];
    void *priv;        /* the transport's bytes */
    xfer_be_peer_t *prev, *next;
};

struct xfer_be_req {
    xfer_be_t *be;
    xfer_be_peer_t *peer;
    xfer_op_t op;
    const xfer_be_seg_t *segs;
    size_t nseg;
    uint64_t id;
    xfer_status_t status;
    int canceled;
    int held;                   /* in its connection's hold list */
    conn_t *conn;               /* while posted */
    struct xfer_be_req *fnext;  /* answers expected on conn, in order */
    size_t next_resp;
    xfer_status_t err;
    uint32_t err_seg;
    txe_t txe;
    int has_notif;
    void *hdrs;                 /* wire headers (and WRITEV tables),
                                   built once */
    struct iovec *iov;          /* niov_data + 2 for a notification */
    size_t niov_data;
    xfer_wire_hdr_t nhdr;
    void *notif;
    size_t notif_len, notif_cap;
    void *priv;                 /* the transport's bytes */
    char msg[768];
};

/* What a connection's frames mean once the handshake is done: a stream
 * instance's target or initiator side, or a control channel. */
typedef struct xfer__stream_role {
    /* A whole header at c->buf + c->head, avail payload bytes behind it:
     * 1 when the frame was taken, 0 when it must wait for more bytes. */
    int (*frame)(conn_t *c, const xfer_wire_hdr_t *h, size_t avail);
    /* The body started with xfer__stream_body_start has arrived. */
    void (*body_done)(conn_t *c);
    /* Optional: the destinations of the bodies that body_done will start
     * next, back to back on the wire with no header between them (a
     * WRITEV's payloads), at most max iovecs, so that one readv lands
     * them all in place.  0: none known. */
    size_t (*rx_sg)(conn_t *c, struct iovec *iov, size_t max);
} xfer__stream_role_t;

/* Target: a WRITEV frame being received (target.c). */
enum { XFER__WB_NONE, XFER__WB_TABLE, XFER__WB_DATA };

struct xfer__stream_conn {
    int kind; /* XFER__H_CONN: first, epoll data points here */
    xfer_be_t *be;
    int fd;
    int initiator, connecting, hello_done, closed, paused, blocked;
    int idle_closed;    /* closed by this side for idle_timeout_ms */
    int nwait;                      /* target: a NOTIF waits for room in
                                       the agent's queue; not read */
    int accepted;                   /* counts against max_conns */
    int active;                     /* moved bytes since the last tick */
    uint32_t events;
    unsigned idle_ticks;
    uint64_t t0_ms, last_ms;        /* accepted at; active last at (ticks) */
    uint8_t akey[XFER__STREAM_AKEY];/* source, for max_conns_per_addr */
    xfer_be_peer_t *peer;           /* initiator side */
    char name[XFER_NAME_MAX + 1];   /* the other agent, bound by HELLO */
    uint64_t epoch;                 /* ... and its epoch */
    char where[128];
    /* The handshake with a shared secret (conn.c).  auth_wait: a target
     * sent its challenge and waits for AUTH, an initiator sent AUTH and
     * waits for AUTH_ACK.  Handshake bodies (HELLO, HELLO_ACK, AUTH) are
     * received into hs. */
    int auth_wait;
    uint8_t nonce_own[XFER_WIRE_NONCE], nonce_peer[XFER_WIRE_NONCE];
    uint8_t hs[XFER_NAME_MAX + XFER_WIRE_NONCE];
    /* send side */
    txe_t *txh, *txt;
    size_t txn;
    size_t hold;                    /* READ answers and deliver markers queued */
    size_t txbytes;                 /* ... their payload bytes */
    size_t nq_pend;                 /* ... of which notifications */
    /* initiator: posted requests awaiting answers, and requests (with
     * the lone notifications behind them) the transport holds */
    xfer_be_req_t *fh, *ft;
    txe_t *hh, *ht;
    /* receive side */
    uint8_t *buf;
    size_t head, tail;
    int rstate;
    xfer_wire_hdr_t rh;
    uint8_t *dest;                  /* NULL: discard the body */
    size_t left, done;
    smem_t *rmem;
    void *rheap;
    /* target: the WRITE request being received */
    int wr_active;
    uint64_t wr_tag;
    uint32_t wr_next, wr_err_seg;
    xfer_status_t wr_err;
    /* target: the WRITEV frame being received: its table, then each
     * entry's checked registration (NULL: refused, payload discarded) */
    int wb_state;
    uint32_t wb_n, wb_i;
    xfer_wire_entry_t wb_tab[XFER_WIRE_BATCH_MAX];
    smem_t *wb_mem[XFER_WIRE_BATCH_MAX];
    int fdq[XFER__STREAM_FDQ_MAX];
    unsigned nfdq;
    void *priv;                     /* the transport's bytes */
    conn_t *prev, *next;
};

struct xfer_be {
    const xfer_host_t *host;
    const xfer__stream_transport_t *tp;
    void *tctx;
    xfer__stream_cfg_t cfg;
    const xfer__stream_role_t *role[2]; /* [initiator] */
    int auth;                           /* the agent holds a secret:
                                           every handshake proves it */
    size_t msg_max;                     /* control channel messages */
    void (*recv)(void *tctx, conn_t *c, const void *msg, size_t len);
    int epfd, lfd, tfd;
    int lkind, tkind;
    int timer_on;
    unsigned tick_ms, timeout_ticks;
    unsigned naccepted;                 /* open accepted connections */
    unsigned nwaiting;                  /* connections with nwait set */
    int accept_off, accept_logged;      /* out of fds: listen fd unpolled */
    uint64_t accept_at_ms;              /* ... until then */
    conn_t *conns, *zombies;
    xfer_be_peer_t *peers;
    smem_t *mems;
    txe_t *free_txe;
    uint64_t next_id;
    struct iovec gather[XFER__STREAM_GATHER_MAX];
    struct iovec scatter[XFER__STREAM_GATHER_MAX]; /* conn.c receive */
    uint8_t stage[XFER__STREAM_STAGE_SIZE];
};

#define XFER__LOG(be, lvl, ...) \
    (be)->host->log((be)->host->ctx, (lvl), __VA_ARGS__)
#define XFER__ERR(be, st, ...) \
    (be)->host->error((be)->host->ctx, (st), __VA_ARGS__)
#define XFER__VIOLATION(c, ...)                                           \
    xfer__stream_conn_close((c), XFER_ERR_REMOTE_DISCONNECT,              \
                            XFER_LOG_WARN, "protocol violation: " __VA_ARGS__)

/* txq.c */
txe_t *xfer__stream_txe_get(xfer_be_t *be);
void xfer__stream_txe_put(xfer_be_t *be, txe_t *e);
void xfer__stream_txe_drop(conn_t *c, txe_t *e);
void xfer__stream_txq_push(conn_t *c, txe_t *e);
void xfer__stream_txq_send(conn_t *c, txe_t *e);
void xfer__stream_txq_unlink(conn_t *c, txe_t *e);
void xfer__stream_flush(conn_t *c);
void xfer__stream_ctrl_hdr(txe_t *e, uint8_t type, uint32_t seg, uint64_t tag,
                           uint64_t arg0, uint64_t arg1, uint64_t len);
txe_t *xfer__stream_msg_entry(xfer_be_t *be, uint8_t type, const void *msg,
                              size_t len);
xfer_status_t xfer__stream_msg_send(conn_t *c, txe_t *e, const char *what);
/* Unlink node from a singly linked list (head, tail) whose link lies at
 * byte offset link of each node; 1 if it was there. */
int xfer__stream_unlink(void *headp, void *tailp, void *node, size_t link);

/* conn.c */
void xfer__stream_timer_need(xfer_be_t *be);
/* A target connection stops being read until the agent's notification
 * queue has room again (retried at every progress). */
void xfer__stream_conn_nwait(conn_t *c);
/* Whether a target connection has queued as much as it may. */
int xfer__stream_txq_full(const conn_t *c);
void xfer__stream_conn_events(conn_t *c);
void xfer__stream_conn_close(conn_t *c, xfer_status_t st,
                             xfer_log_level_t lvl, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
conn_t *xfer__stream_peer_conn(xfer_be_t *be, xfer_be_peer_t *p,
                               xfer_status_t *st);
void xfer__stream_peer_unref(xfer_be_peer_t *p);
void xfer__stream_body_start(conn_t *c, const xfer_wire_hdr_t *h, void *dest,
                             size_t len);
int xfer__stream_wire_status(uint64_t v, xfer_status_t *st);
xfer_status_t xfer__stream_instance(const xfer_host_t *host,
                                    const xfer__stream_transport_t *tp,
                                    void *tctx, const xfer__stream_cfg_t *cfg,
                                    int listen_fd, xfer_be_t **bep);

/* target.c */
extern const xfer__stream_role_t xfer__stream_target;

/* initiator.c */
extern const xfer__stream_role_t xfer__stream_initiator;
/* The connection closed: fail what waits on it. */
void xfer__stream_reqs_fail(conn_t *c, xfer_status_t st, const char *why);
int xfer__stream_reqs_busy(const conn_t *c);
/* Send what c holds, oldest first, up to a request the transport holds
 * for itself (the handshake finished, or a held request went). */
void xfer__stream_held_drain(conn_t *c);
/* Send a message entry (xfer__stream_msg_entry) on an initiator's c, or,
 * while c holds something or its authenticated handshake is not done,
 * hold it there behind the rest: nothing overtakes, nothing precedes the
 * proof of the secret. */
xfer_status_t xfer__stream_msg_queue(conn_t *c, txe_t *e, const char *what);

#endif /* XFER_PLUGINS_STREAM_INT_H */
