/* stream.c - the stream protocol engine: framing, send queues, receive state
 * machine, request tracking, target-side checks, notifications, timeouts. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "plugins/common/stream.h"
#include "plugins/common/wire.h"

#ifdef IOV_MAX
#define GATHER_MAX IOV_MAX
#else
#define GATHER_MAX 1024
#endif
/* One sendmsg need not describe a whole 1 GiB request: past this the
 * socket is full anyway and rebuilding the array is wasted work. */
#define GATHER_BYTES (8u << 20)
/* Pieces this small are copied into one staging buffer instead of being
 * handed to the kernel one iovec each: a 1024-descriptor post of small
 * frames becomes one contiguous send, and per-iovec kernel cost (far more
 * than a 48-byte memcpy) disappears. */
#define STAGE_PIECE 512u
#define STAGE_SIZE (64u << 10)
/* A target stops parsing a peer's frames while this many answers wait
 * to be sent: a peer that never reads cannot make us queue without bound. */
#define TXQ_HIGH 8192u
#define TXQ_LOW (TXQ_HIGH / 2)
/* No legitimate region is this large; a length past it is a broken peer. */
#define LEN_MAX (UINT64_C(1) << 47)
#define EVENTS_MAX 64

enum { H_LISTEN = 1, H_TIMER, H_CONN };
enum { RX_HDR, RX_BODY };
enum { TX_REQ, TX_CTRL, TX_RESP, TX_DELIVER };

typedef struct conn conn_t;

/* A local registration as seen by the engine.  inflight counts frames
 * that still point into the memory, so deregistration knows whether it
 * has anything to detach. */
typedef struct smem {
    uintptr_t addr;
    size_t len;
    uint64_t key;
    unsigned inflight;
    int shm_fd;        /* -1, or our duplicate of its memfd (uds) */
    uint64_t shm_id, shm_size, shm_off;
    struct smem *prev, *next;
} smem_t;

#define PACK_MAX 64
typedef struct srmem {
    uint64_t key, addr, len;
    size_t pack_len;
    uint8_t pack[PACK_MAX];
} srmem_t;

/* File descriptors received ahead of the SHM_FD frames they belong to. */
#define FDQ_MAX 32

/* One send-queue entry: an iovec list with a cursor.  A request's entry
 * is embedded in it; the others come from a free list so the steady
 * state allocates nothing. */
typedef struct txe {
    struct txe *next;
    uint8_t kind;
    uint8_t queued;
    int niov, idx;     /* iov[idx] + off is the next byte to send */
    size_t off;
    struct iovec *iov;
    struct iovec v[2]; /* iov for entries other than TX_REQ */
    xfer_wire_hdr_t hdr;
    void *heap;        /* owned bytes (notification, copied-out data) */
    size_t heap_len;
    smem_t *mem;       /* TX_RESP: registration the payload comes from */
    int has_fd, fd;    /* an fd to pass with the first byte (SHM_FD) */
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
    conn_t *conn;               /* while posted */
    struct xfer_be_req *fnext;  /* answers expected on conn, in order */
    size_t next_resp;
    xfer_status_t err;
    uint32_t err_seg;
    txe_t txe;
    struct xfer_be_req *dnext;  /* waiting for the direct path */
    uint64_t vgen, vgen_post;   /* direct path: validation stamps */
    int parked;
    size_t notif_len;
    int has_notif;
    xfer_wire_hdr_t *hdrs;      /* nseg wire headers, built once */
    struct iovec *iov;          /* niov_data + 2 for a notification */
    size_t niov_data;
    xfer_wire_hdr_t nhdr;
    void *notif;
    size_t notif_cap;
    char msg[768];
};

struct conn {
    int kind; /* H_CONN: first, epoll data points here */
    xfer_be_t *be;
    int fd;
    int initiator, connecting, hello_done, closed, paused, blocked;
    uint32_t events;
    unsigned idle_ticks;
    xfer_be_peer_t *peer;           /* initiator side */
    char name[XFER_NAME_MAX + 1];   /* the other agent, bound by HELLO */
    char where[128];
    /* send side */
    txe_t *txh, *txt;
    size_t txn;
    size_t hold;                    /* READ answers and deliver markers queued */
    xfer_be_req_t *fh, *ft;         /* initiator: posted, awaiting answers */
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
    /* direct data path (transport hooks; unused by tcp) */
    void *tconn;
    void *tshare;                   /* target: conn_share's state */
    int share;                      /* target: send memfds to this peer */
    xfer_be_req_t *dh, *dt;         /* initiator: parked direct requests */
    int fdq[FDQ_MAX];
    unsigned nfdq;
    conn_t *prev, *next;
};

struct xfer_be {
    const xfer_host_t *host;
    const xfer__stream_transport_t *tp;
    void *tctx;
    xfer__stream_cfg_t cfg;
    int epfd, lfd, tfd;
    int lkind, tkind;
    int timer_on;
    unsigned tick_ms, timeout_ticks;
    conn_t *conns, *zombies;
    xfer_be_peer_t *peers;
    smem_t *mems;
    txe_t *free_txe;
    uint64_t next_id;
    struct iovec gather[GATHER_MAX];
    uint8_t stage[STAGE_SIZE];
};

#define LOG(be, lvl, ...) (be)->host->log((be)->host->ctx, (lvl), __VA_ARGS__)
#define ERR(be, st, ...) (be)->host->error((be)->host->ctx, (st), __VA_ARGS__)

static void flush(conn_t *c);
static void conn_input(conn_t *c);

static const char *status_text(xfer_status_t st)
{
    switch (st) {
    case XFER_ERR_ACCESS:
        return "access refused (key, bounds or deregistered memory)";
    case XFER_ERR_NOMEM:
        return "target out of memory";
    case XFER_ERR_REMOTE_DISCONNECT:
        return "remote disconnect";
    case XFER_ERR_TIMEOUT:
        return "timed out";
    case XFER_ERR_CANCELED:
        return "canceled";
    default:
        return "target error";
    }
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static void sockaddr_str(int fd, char *buf, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];

    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(buf, size, "fd %d", fd);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(buf, size, "local socket fd %d", fd);
    }
}

static void timer_need(xfer_be_t *be)
{
    struct itimerspec its;

    if (be->timer_on)
        return;
    memset(&its, 0, sizeof its);
    its.it_interval.tv_sec = be->tick_ms / 1000;
    its.it_interval.tv_nsec = (long)(be->tick_ms % 1000) * 1000000L;
    its.it_value = its.it_interval;
    if (timerfd_settime(be->tfd, 0, &its, NULL) == 0)
        be->timer_on = 1;
}

static txe_t *txe_get(xfer_be_t *be)
{
    txe_t *e = be->free_txe;

    if (e)
        be->free_txe = e->next;
    else if (!(e = malloc(sizeof *e)))
        return NULL;
    memset(e, 0, sizeof *e);
    e->iov = e->v;
    return e;
}

static void txe_put(xfer_be_t *be, txe_t *e)
{
    e->next = be->free_txe;
    be->free_txe = e;
}

/* Drop an entry that will not be sent: give back what it holds. */
static void txe_drop(conn_t *c, txe_t *e)
{
    e->queued = 0;
    if (e->kind == TX_REQ)
        return;
    if (e->has_fd)
        close(e->fd);
    e->has_fd = 0;
    if (e->kind == TX_RESP || e->kind == TX_DELIVER)
        c->hold--;
    if (e->mem)
        e->mem->inflight--;
    free(e->heap);
    txe_put(c->be, e);
}

static void txq_push(conn_t *c, txe_t *e)
{
    e->next = NULL;
    e->queued = 1;
    if (c->txt)
        c->txt->next = e;
    else
        c->txh = e;
    c->txt = e;
    c->txn++;
    if (e->kind == TX_RESP || e->kind == TX_DELIVER)
        c->hold++;
    timer_need(c->be);
}

static void conn_events(conn_t *c)
{
    struct epoll_event ev;
    uint32_t want = c->paused ? 0 : EPOLLIN;

    /* A paused target waits for EPOLLOUT even with an empty queue: it
     * fires at once and resumes parsing what is buffered, which no
     * EPOLLIN would announce. */
    if (c->connecting || (c->txh && c->blocked) || c->paused)
        want |= EPOLLOUT;
    if (want == c->events || c->closed)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = want;
    ev.data.ptr = c;
    if (epoll_ctl(c->be->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->events = want;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

static void req_fail(xfer_be_req_t *r, xfer_status_t st, const char *why)
{
    xfer_be_t *be = r->be;

    r->status = st;
    r->conn = NULL;
    r->fnext = NULL;
    snprintf(r->msg, sizeof r->msg, "%s %s to agent '%s' (%s): %s",
             be->cfg.name, r->op == XFER_OP_READ ? "READ" : "WRITE",
             r->peer->name, r->peer->where, why);
}

/* Close a connection: every request waiting on it fails with st.  The
 * struct itself is freed at the end of progress, since an event for it
 * may still be pending in the current batch. */
static void conn_close(conn_t *c, xfer_status_t st, xfer_log_level_t lvl,
                       const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conn_close(conn_t *c, xfer_status_t st, xfer_log_level_t lvl,
                       const char *fmt, ...)
{
    xfer_be_t *be = c->be;
    char why[256];
    va_list ap;
    xfer_be_req_t *r;
    txe_t *e;

    if (c->closed)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    c->closed = 1;
    LOG(be, lvl, "connection %s agent '%s' (%s) closed: %s",
        c->initiator ? "to" : "from", c->name[0] ? c->name : "?", c->where,
        why);
    epoll_ctl(be->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;

    while ((r = c->fh)) {
        c->fh = r->fnext;
        req_fail(r, st, why);
    }
    c->ft = NULL;
    while ((r = c->dh)) {
        c->dh = r->dnext;
        r->parked = 0;
        r->dnext = NULL;
        req_fail(r, st, why);
    }
    c->dt = NULL;
    while (c->nfdq)
        close(c->fdq[--c->nfdq]);
    if (be->tp->conn_free && c->tconn)
        be->tp->conn_free(be->tctx, c->tconn);
    c->tconn = NULL;
    if (be->tp->conn_unshare && c->tshare)
        be->tp->conn_unshare(be->tctx, c->tshare);
    c->tshare = NULL;
    while ((e = c->txh)) {
        c->txh = e->next;
        txe_drop(c, e);
    }
    c->txt = NULL;
    c->txn = 0;
    if (c->rmem)
        c->rmem->inflight--;
    c->rmem = NULL;
    free(c->rheap);
    c->rheap = NULL;
    if (c->peer && c->peer->conn == c)
        c->peer->conn = NULL;
    c->peer = NULL;

    if (c->prev)
        c->prev->next = c->next;
    else
        be->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = be->zombies;
    be->zombies = c;
}

static void reap(xfer_be_t *be)
{
    conn_t *c;

    while ((c = be->zombies)) {
        be->zombies = c->next;
        free(c->buf);
        free(c);
    }
}

static conn_t *conn_new(xfer_be_t *be, int fd, int initiator, int connecting)
{
    struct epoll_event ev;
    conn_t *c = calloc(1, sizeof *c);

    if (!c || !(c->buf = malloc(be->cfg.rx_buf))) {
        free(c);
        return NULL;
    }
    c->kind = H_CONN;
    c->be = be;
    c->fd = fd;
    c->initiator = initiator;
    c->connecting = connecting;
    c->events = EPOLLIN | (connecting ? EPOLLOUT : 0);
    memset(&ev, 0, sizeof ev);
    ev.events = c->events;
    ev.data.ptr = c;
    if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        free(c->buf);
        free(c);
        return NULL;
    }
    c->next = be->conns;
    if (be->conns)
        be->conns->prev = c;
    be->conns = c;
    return c;
}

/* The peer's connection, opened on first use so that loading the
 * metadata of many agents costs no sockets until they are used. */
static conn_t *peer_conn(xfer_be_t *be, xfer_be_peer_t *p, xfer_status_t *st)
{
    int inprog = 0, fd;
    conn_t *c;
    txe_t *e;
    size_t nlen = strlen(be->host->agent_name);

    if (p->conn)
        return p->conn;
    fd = be->tp->connect(be->tctx, p->info, p->info_len, &inprog);
    if (fd < 0) {
        *st = ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                  "%s: cannot connect to agent '%s' at %s: %s", be->cfg.name,
                  p->name, p->where, strerror(-fd));
        return NULL;
    }
    e = txe_get(be);
    if (!e || !(c = conn_new(be, fd, 1, inprog))) {
        if (e)
            txe_put(be, e);
        close(fd);
        *st = ERR(be, XFER_ERR_NOMEM, "%s: no memory for a connection",
                  be->cfg.name);
        return NULL;
    }
    if (be->tp->conn_new)
        c->tconn = be->tp->conn_new(be->tctx);
    c->peer = p;
    p->conn = c;
    snprintf(c->name, sizeof c->name, "%s", p->name);
    snprintf(c->where, sizeof c->where, "%s", p->where);

    /* The HELLO goes first; requests may follow it at once, because the
     * target checks it before it looks at anything else. */
    e->kind = TX_CTRL;
    e->hdr.type = XFER_WIRE_HELLO;
    e->hdr.seg = XFER_WIRE_VERSION;
    e->hdr.tag = XFER_WIRE_MAGIC;
    e->hdr.arg0 = be->host->agent_epoch;
    e->hdr.arg1 = p->epoch;
    e->hdr.len = nlen;
    xfer_wire_encode(&e->hdr, &e->hdr);
    e->v[0].iov_base = &e->hdr;
    e->v[0].iov_len = XFER_WIRE_HDR_SIZE;
    e->v[1].iov_base = (void *)(uintptr_t)be->host->agent_name;
    e->v[1].iov_len = nlen;
    e->niov = 2;
    txq_push(c, e);
    return c;
}

static void connect_done(conn_t *c)
{
    int err = 0;
    socklen_t sl = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
        err = errno;
    if (err) {
        conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                   "connect failed: %s", strerror(err));
        return;
    }
    c->connecting = 0;
    c->idle_ticks = 0;
    flush(c);
    conn_events(c);
}

/* ------------------------------------------------------------------ */
/* Send side                                                           */
/* ------------------------------------------------------------------ */

/* An entry whose bytes are all on the wire is finished here; a deliver
 * marker reaching the head means every READ answer before it has left
 * our memory, which is the promise a READ notification makes. */
static void txe_sent(conn_t *c, txe_t *e)
{
    xfer_be_t *be = c->be;

    if (e->kind == TX_DELIVER)
        be->host->notif_deliver(be->host->ctx, c->name, e->heap,
                                e->heap_len);
    txe_drop(c, e);
}

static void tx_advance(conn_t *c, size_t n)
{
    txe_t *e;

    while ((e = c->txh)) {
        while (e->idx < e->niov) {
            size_t rem = e->iov[e->idx].iov_len - e->off;

            if (rem > n) {
                e->off += n;
                return;
            }
            n -= rem;
            e->idx++;
            e->off = 0;
        }
        c->txh = e->next;
        if (!c->txh)
            c->txt = NULL;
        c->txn--;
        txe_sent(c, e);
    }
}

static void flush(conn_t *c)
{
    xfer_be_t *be = c->be;
    struct msghdr m;
    ssize_t n;

    if (c->connecting || c->closed)
        return;
    for (;;) {
        size_t total = 0, staged = 0;
        int cnt = 0;
        txe_t *e, *fd_e = NULL;
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } cm;

        tx_advance(c, 0);
        if (!c->txh)
            break;
        for (e = c->txh; e && cnt < GATHER_MAX && total < GATHER_BYTES;
             e = e->next) {
            /* An fd travels with the first byte of its own sendmsg, so
             * that the receiver gets it with its frame's bytes. */
            if (e->has_fd && e != c->txh)
                break;
            if (e->has_fd)
                fd_e = e;
            for (int i = e->idx;
                 i < e->niov && cnt < GATHER_MAX && total < GATHER_BYTES;
                 i++) {
                size_t skip = i == e->idx ? e->off : 0;
                size_t len = e->iov[i].iov_len - skip;

                const char *base = (const char *)e->iov[i].iov_base + skip;

                if (!len)
                    continue;
                total += len;
                if (len <= STAGE_PIECE && staged + len <= STAGE_SIZE) {
                    uint8_t *dst = be->stage + staged;

                    memcpy(dst, base, len);
                    staged += len;
                    if (cnt && (uint8_t *)be->gather[cnt - 1].iov_base +
                                       be->gather[cnt - 1].iov_len == dst) {
                        be->gather[cnt - 1].iov_len += len;
                        continue;
                    }
                    base = (const char *)dst;
                }
                be->gather[cnt].iov_base = (void *)base;
                be->gather[cnt].iov_len = len;
                cnt++;
            }
            if (fd_e)
                break;
        }
        memset(&m, 0, sizeof m);
        m.msg_iov = be->gather;
        m.msg_iovlen = (size_t)cnt;
        if (fd_e) {
            memset(&cm, 0, sizeof cm);
            m.msg_control = cm.b;
            m.msg_controllen = sizeof cm.b;
            cm.h.cmsg_level = SOL_SOCKET;
            cm.h.cmsg_type = SCM_RIGHTS;
            cm.h.cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(&cm.h), &fd_e->fd, sizeof(int));
        }
        n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (n > 0 && fd_e) {
            close(fd_e->fd);
            fd_e->has_fd = 0;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->blocked = 1;
                break;
            }
            conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                       "send failed: %s", strerror(errno));
            return;
        }
        c->idle_ticks = 0;
        tx_advance(c, (size_t)n);
        if ((size_t)n < total) {
            /* A short write means the socket is full: wait for EPOLLOUT
             * rather than spend a syscall to hear EAGAIN. */
            c->blocked = 1;
            break;
        }
    }
    if (!c->txh)
        c->blocked = 0;
    conn_events(c);
}

/* Queue an entry and push it out at once when nothing waits before it,
 * so a small post costs one sendmsg and no EPOLLOUT round. */
static void txq_send(conn_t *c, txe_t *e)
{
    txq_push(c, e);
    if (!c->blocked)
        flush(c);
}

static void ctrl_hdr(txe_t *e, uint8_t type, uint32_t seg, uint64_t tag,
                     uint64_t arg0, uint64_t arg1, uint64_t len)
{
    e->hdr.type = type;
    e->hdr.seg = seg;
    e->hdr.tag = tag;
    e->hdr.arg0 = arg0;
    e->hdr.arg1 = arg1;
    e->hdr.len = len;
    xfer_wire_encode(&e->hdr, &e->hdr);
    e->v[0].iov_base = &e->hdr;
    e->v[0].iov_len = XFER_WIRE_HDR_SIZE;
    e->niov = 1;
}

/* ------------------------------------------------------------------ */
/* Receive side                                                        */
/* ------------------------------------------------------------------ */

#define VIOLATION(c, ...)                                                 \
    conn_close((c), XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,            \
               "protocol violation: " __VA_ARGS__)

static void body_start(conn_t *c, const xfer_wire_hdr_t *h, void *dest,
                       size_t len)
{
    c->rh = *h;
    c->rstate = RX_BODY;
    c->dest = dest;
    c->left = len;
    c->done = 0;
}

static void notif_handle(conn_t *c, const void *msg, size_t len, void *owned)
{
    xfer_be_t *be = c->be;
    txe_t *e;

    if (!c->hold) {
        be->host->notif_deliver(be->host->ctx, c->name, msg, len);
        free(owned);
        return;
    }
    /* A READ answer (or an earlier notification) is still queued: this
     * one waits behind it, which keeps both promises, data first and
     * notifications in order. */
    e = txe_get(be);
    if (!owned && len) {
        owned = malloc(len);
        if (owned)
            memcpy(owned, msg, len);
    }
    if (!e || (len && !owned)) {
        free(owned);
        if (e)
            txe_put(be, e);
        conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                   "no memory to queue a notification");
        return;
    }
    e->kind = TX_DELIVER;
    e->heap = owned;
    e->heap_len = len;
    e->niov = 0;
    txq_push(c, e);
}

static void target_refused(conn_t *c, const char *op,
                           const xfer_wire_hdr_t *h, const char *msg)
{
    LOG(c->be, XFER_LOG_WARN,
        "refused %s from agent '%s' (%s): descriptor %u, key 0x%016llx, "
        "addr 0x%llx, %llu bytes: %s",
        op, c->name, c->where, (unsigned)h->seg, (unsigned long long)h->arg0,
        (unsigned long long)h->arg1, (unsigned long long)h->len, msg);
}

static void req_complete(conn_t *c, xfer_be_req_t *r)
{
    c->fh = r->fnext;
    if (!c->fh)
        c->ft = NULL;
    r->conn = NULL;
    r->fnext = NULL;
    if (r->canceled) {
        r->status = XFER_ERR_CANCELED;
        snprintf(r->msg, sizeof r->msg, "%s request canceled",
                 r->be->cfg.name);
    } else {
        r->status = r->err;
        /* The target checked every descriptor: the direct path may now
         * move this request's data while the stamp stays current. */
        if (r->status == XFER_OK)
            r->vgen = r->vgen_post;
    }
}

/* Queue one SHM_FD frame carrying a duplicate of src. */
static void share_fd(conn_t *c, int src, uint64_t id, uint64_t size)
{
    txe_t *e = txe_get(c->be);
    int fd = e ? fcntl(src, F_DUPFD_CLOEXEC, 0) : -1;

    if (fd < 0) {
        if (e)
            txe_put(c->be, e);
        conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                   "cannot share a memfd: %s", strerror(errno));
        return;
    }
    e->kind = TX_CTRL;
    ctrl_hdr(e, XFER_WIRE_SHM_FD, 0, id, size, 0, 0);
    e->has_fd = 1;
    e->fd = fd;
    txq_push(c, e);
}

static void share_one(conn_t *c, smem_t *m)
{
    share_fd(c, m->shm_fd, m->shm_id, m->shm_size);
}

static void body_done(conn_t *c)
{
    xfer_be_t *be = c->be;
    const xfer_wire_hdr_t *h = &c->rh;
    xfer_be_req_t *r;
    txe_t *e;

    c->rstate = RX_HDR;
    switch (h->type) {
    case XFER_WIRE_HELLO:
        c->name[h->len] = '\0';
        if (strlen(c->name) != h->len) {
            VIOLATION(c, "agent name contains a NUL byte");
            return;
        }
        if (h->seg != XFER_WIRE_VERSION || h->arg1 != be->host->agent_epoch) {
            xfer_wire_hdr_t a;

            /* Best effort: tell the initiator why before closing. */
            memset(&a, 0, sizeof a);
            a.type = XFER_WIRE_HELLO_ACK;
            a.seg = XFER_WIRE_VERSION;
            a.tag = XFER_WIRE_MAGIC;
            a.arg0 = be->host->agent_epoch;
            a.arg1 = (uint64_t)(int64_t)XFER_ERR_REMOTE_DISCONNECT;
            xfer_wire_encode(&a, &a);
            (void)!send(c->fd, &a, sizeof a, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (h->seg != XFER_WIRE_VERSION)
                conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                           "refused: protocol version %u, we speak %u",
                           (unsigned)h->seg, XFER_WIRE_VERSION);
            else
                conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                           "refused: it expects epoch %llu of this agent, "
                           "ours is %llu (stale metadata)",
                           (unsigned long long)h->arg1,
                           (unsigned long long)be->host->agent_epoch);
            return;
        }
        c->hello_done = 1;
        if (be->tp->share_ok && be->tp->share_ok(be->tctx, c->fd)) {
            c->share = 1;
            if (be->cfg.share_fd_set)
                share_fd(c, be->cfg.share_fd, 0, be->cfg.share_size);
            if (be->tp->conn_share && !c->closed) {
                int cfd = -1;
                uint64_t csize = 0;

                if (be->tp->conn_share(be->tctx, &c->tshare, &cfd, &csize) ==
                        0 && cfd >= 0)
                    share_fd(c, cfd, XFER__STREAM_CONN_FD_ID, csize);
            }
            for (smem_t *m = be->mems; m && !c->closed; m = m->next)
                if (m->shm_fd >= 0)
                    share_one(c, m);
            if (c->closed)
                return;
        }
        e = txe_get(be);
        if (!e) {
            conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR, "out of memory");
            return;
        }
        e->kind = TX_CTRL;
        ctrl_hdr(e, XFER_WIRE_HELLO_ACK, XFER_WIRE_VERSION, XFER_WIRE_MAGIC,
                 be->host->agent_epoch, (uint64_t)(int64_t)XFER_OK, 0);
        txq_push(c, e);
        LOG(be, XFER_LOG_DEBUG, "agent '%s' connected from %s", c->name,
            c->where);
        break;

    case XFER_WIRE_WRITE:
        if (c->rmem) {
            c->rmem->inflight--;
            c->rmem = NULL;
        }
        if (h->flags & XFER_WIRE_F_LAST) {
            c->wr_active = 0;
            e = txe_get(be);
            if (!e) {
                conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR, "out of memory");
                return;
            }
            e->kind = TX_CTRL;
            ctrl_hdr(e, XFER_WIRE_ACK, c->wr_err_seg, h->tag,
                     (uint64_t)(int64_t)c->wr_err, c->wr_next, 0);
            txq_push(c, e);
        }
        break;

    case XFER_WIRE_NOTIF:
        notif_handle(c, c->rheap, h->len, c->rheap);
        c->rheap = NULL;
        break;

    case XFER_WIRE_READ_RESP:
        r = c->fh;
        if (++r->next_resp == r->nseg) {
            if (r->txe.queued) {
                VIOLATION(c, "READ answered before it was sent");
                return;
            }
            req_complete(c, r);
        }
        break;
    }
}

static void req_error(xfer_be_req_t *r, uint32_t seg, xfer_status_t st,
                      const char *who)
{
    const xfer_be_seg_t *s = &r->segs[seg];
    const srmem_t *rm = s->rmem;

    if (r->err != XFER_OK)
        return;
    r->err = st;
    r->err_seg = seg;
    snprintf(r->msg, sizeof r->msg,
             "%s %s descriptor %u (key 0x%016llx, remote addr 0x%llx, %zu "
             "bytes) refused by agent '%s': %s",
             r->be->cfg.name, r->op == XFER_OP_READ ? "READ" : "WRITE",
             (unsigned)seg, (unsigned long long)rm->key,
             (unsigned long long)s->raddr, s->len, who, status_text(st));
}

/* A status the target sent: only values it may legitimately send. */
static int wire_status(uint64_t v, xfer_status_t *st)
{
    int64_t s = (int64_t)v;

    if (s > 0 || s < (int64_t)XFER_ERR_CONFIG)
        return -1;
    *st = (xfer_status_t)s;
    return 0;
}

/* Called with a whole header at c->buf + head.  Returns 1 when the frame
 * was taken, 0 when it must wait for more bytes. */
static int frame(conn_t *c)
{
    xfer_be_t *be = c->be;
    const xfer_host_t *host = be->host;
    xfer_wire_hdr_t h;
    size_t avail = c->tail - c->head - XFER_WIRE_HDR_SIZE;
    size_t payload = 0;
    char msg[256];
    void *m;
    xfer_status_t st;
    xfer_be_req_t *r;
    txe_t *e;

    xfer_wire_decode(&h, c->buf + c->head);
    if (h.rsvd) {
        VIOLATION(c, "reserved header bits set");
        return 1;
    }
    if (c->initiator) {
        if (h.type != XFER_WIRE_HELLO_ACK && h.type != XFER_WIRE_SHM_FD &&
            !c->hello_done) {
            VIOLATION(c, "frame type %u before HELLO_ACK", h.type);
            return 1;
        }
        switch (h.type) {
        case XFER_WIRE_HELLO_ACK:
            if (c->hello_done || h.tag != XFER_WIRE_MAGIC || h.len) {
                VIOLATION(c, "bad HELLO_ACK");
                return 1;
            }
            if (wire_status(h.arg1, &st) < 0) {
                VIOLATION(c, "bad status in HELLO_ACK");
                return 1;
            }
            if (st != XFER_OK) {
                conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                           "the agent refused the connection (it is epoch "
                           "%llu now, our metadata names epoch %llu: reload "
                           "its metadata)",
                           (unsigned long long)h.arg0,
                           c->peer ? (unsigned long long)c->peer->epoch : 0ull);
                return 1;
            }
            if (be->tp->conn_up) {
                char why[256] = "";

                st = be->tp->conn_up(be->tctx, c->tconn, c->fd, c->peer->info,
                                     c->peer->info_len, why, sizeof why);
                if (st != XFER_OK) {
                    conn_close(c, st, XFER_LOG_WARN, "%s", why);
                    return 1;
                }
            }
            c->hello_done = 1;
            break;
        case XFER_WIRE_SHM_FD:
            if (!be->tp->fd_received || h.len || h.seg || !c->nfdq) {
                VIOLATION(c, "bad SHM_FD (no descriptor came with it)");
                return 1;
            }
            {
                int fd = c->fdq[0];

                memmove(c->fdq, c->fdq + 1, --c->nfdq * sizeof(int));
                be->tp->fd_received(be->tctx, c->tconn, h.tag, h.arg0, fd);
            }
            break;
        case XFER_WIRE_ACK:
            r = c->fh;
            if (!r || r->op != XFER_OP_WRITE || h.tag != r->id || h.len ||
                r->txe.queued || wire_status(h.arg0, &st) < 0 ||
                (st != XFER_OK && h.seg >= r->nseg)) {
                VIOLATION(c, "unexpected ACK");
                return 1;
            }
            if (st != XFER_OK)
                req_error(r, h.seg, st, c->name);
            req_complete(c, r);
            break;
        case XFER_WIRE_READ_RESP:
            r = c->fh;
            if (!r || r->op != XFER_OP_READ || h.tag != r->id ||
                h.seg != r->next_resp || wire_status(h.arg0, &st) < 0 ||
                h.len != (st == XFER_OK ? r->segs[h.seg].len : 0)) {
                VIOLATION(c, "unexpected READ_RESP");
                return 1;
            }
            payload = h.len;
            if (payload && payload <= be->cfg.inline_max && avail < payload)
                return 0;
            c->head += XFER_WIRE_HDR_SIZE;
            if (st != XFER_OK)
                req_error(r, h.seg, st, c->name);
            body_start(c, &h, (void *)r->segs[h.seg].laddr, payload);
            return 1;
        default:
            VIOLATION(c, "frame type %u sent to an initiator", h.type);
            return 1;
        }
        c->head += XFER_WIRE_HDR_SIZE;
        return 1;
    }

    /* target side */
    if (!c->hello_done && h.type != XFER_WIRE_HELLO) {
        VIOLATION(c, "frame type %u before HELLO", h.type);
        return 1;
    }
    if (c->wr_active && h.type != XFER_WIRE_WRITE) {
        VIOLATION(c, "frame type %u inside a WRITE request", h.type);
        return 1;
    }
    switch (h.type) {
    case XFER_WIRE_HELLO:
        if (c->hello_done || h.tag != XFER_WIRE_MAGIC || !h.len ||
            h.len > XFER_NAME_MAX) {
            VIOLATION(c, "bad HELLO");
            return 1;
        }
        payload = h.len;
        if (payload <= be->cfg.inline_max && avail < payload)
            return 0;
        c->head += XFER_WIRE_HDR_SIZE;
        body_start(c, &h, c->name, payload);
        return 1;

    case XFER_WIRE_WRITE:
        if (h.len > LEN_MAX) {
            VIOLATION(c, "WRITE of %llu bytes", (unsigned long long)h.len);
            return 1;
        }
        if (c->wr_active ? (h.tag != c->wr_tag || h.seg != c->wr_next)
                         : h.seg != 0) {
            VIOLATION(c, "WRITE frame out of sequence");
            return 1;
        }
        payload = h.len;
        if (payload && payload <= be->cfg.inline_max && avail < payload)
            return 0;
        c->head += XFER_WIRE_HDR_SIZE;
        if (!c->wr_active) {
            c->wr_active = 1;
            c->wr_tag = h.tag;
            c->wr_next = 0;
            c->wr_err = XFER_OK;
            c->wr_err_seg = 0;
        }
        c->wr_next++;
        /* The check comes before any byte reaches the destination. */
        st = host->mem_check(host->ctx, h.arg0, h.arg1, h.len,
                             XFER_ACCESS_WRITE, &m, msg, sizeof msg);
        if (st == XFER_OK) {
            if ((c->rmem = m))
                c->rmem->inflight++;
            body_start(c, &h, (void *)(uintptr_t)h.arg1, payload);
        } else {
            target_refused(c, "WRITE", &h, msg);
            if (c->wr_err == XFER_OK) {
                c->wr_err = st;
                c->wr_err_seg = h.seg;
            }
            body_start(c, &h, NULL, payload);
        }
        return 1;

    case XFER_WIRE_READ_REQ:
        if (h.len > LEN_MAX) {
            VIOLATION(c, "READ of %llu bytes", (unsigned long long)h.len);
            return 1;
        }
        e = txe_get(be);
        if (!e) {
            conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR, "out of memory");
            return 1;
        }
        c->head += XFER_WIRE_HDR_SIZE;
        e->kind = TX_RESP;
        st = host->mem_check(host->ctx, h.arg0, h.arg1, h.len,
                             XFER_ACCESS_READ, &m, msg, sizeof msg);
        if (st == XFER_OK) {
            /* Zero copy: the answer is sent from the registered memory. */
            ctrl_hdr(e, XFER_WIRE_READ_RESP, h.seg, h.tag, 0, 0, h.len);
            e->v[1].iov_base = (void *)(uintptr_t)h.arg1;
            e->v[1].iov_len = h.len;
            e->niov = 2;
            if ((e->mem = m))
                e->mem->inflight++;
        } else {
            target_refused(c, "READ", &h, msg);
            ctrl_hdr(e, XFER_WIRE_READ_RESP, h.seg, h.tag,
                     (uint64_t)(int64_t)st, 0, 0);
        }
        txq_push(c, e);
        return 1;

    case XFER_WIRE_NOTIF:
        if (h.len > XFER_NOTIF_MAX) {
            VIOLATION(c, "notification of %llu bytes",
                      (unsigned long long)h.len);
            return 1;
        }
        payload = h.len;
        if (payload <= be->cfg.inline_max) {
            if (avail < payload)
                return 0;
            c->head += XFER_WIRE_HDR_SIZE;
            notif_handle(c, c->buf + c->head, payload, NULL);
            c->head += payload;
            return 1;
        }
        c->head += XFER_WIRE_HDR_SIZE;
        if (!(c->rheap = malloc(payload))) {
            conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR, "out of memory");
            return 1;
        }
        body_start(c, &h, c->rheap, payload);
        return 1;

    default:
        VIOLATION(c, "frame type %u sent to a target", h.type);
        return 1;
    }
}

/* Take every complete frame out of the buffer. */
static void rx_parse(conn_t *c)
{
    while (!c->closed) {
        if (c->rstate == RX_BODY) {
            size_t take = c->tail - c->head;

            if (take > c->left)
                take = c->left;
            if (c->dest && take)
                memcpy(c->dest + c->done, c->buf + c->head, take);
            c->head += take;
            c->done += take;
            c->left -= take;
            if (c->left)
                return;
            body_done(c);
            continue;
        }
        if (!c->initiator && c->txn >= TXQ_HIGH) {
            c->paused = 1;
            return;
        }
        if (c->tail - c->head < XFER_WIRE_HDR_SIZE || !frame(c))
            return;
    }
}

/* One read.  A transport that takes fds reads with recvmsg and keeps
 * what arrives until the SHM_FD frames that announce them are parsed. */
static ssize_t rx_read(conn_t *c, struct iovec *iov, int niov)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 8)];
    } cm;
    struct msghdr m;
    struct cmsghdr *h;
    ssize_t n;

    if (!c->initiator || !c->be->tp->fd_received)
        return readv(c->fd, iov, niov);
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)niov;
    m.msg_control = cm.b;
    m.msg_controllen = sizeof cm.b;
    n = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    for (h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
        size_t k;

        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
            if (c->nfdq < FDQ_MAX)
                c->fdq[c->nfdq++] = fd;
            else
                close(fd);
        }
    }
    if (m.msg_flags & MSG_CTRUNC)
        LOG(c->be, XFER_LOG_WARN, "shared file descriptors from agent '%s' "
            "were truncated", c->name);
    return n;
}

static void direct_retry(conn_t *c);

static void conn_input(conn_t *c)
{
    xfer_be_t *be = c->be;
    const size_t cap = be->cfg.rx_buf;

    if (c->paused && c->txn < TXQ_LOW)
        c->paused = 0;
    rx_parse(c);
    for (int round = 0; round < 16 && !c->closed && !c->paused; round++) {
        ssize_t n;
        size_t want;

        if (c->rstate == RX_BODY && c->left && c->dest &&
            c->head == c->tail) {
            /* Large payload: straight into its destination.  Only a
             * header's worth goes to the buffer behind it, so the next
             * large frame is not half-copied through the buffer. */
            struct iovec iov[2];

            c->head = c->tail = 0;
            iov[0].iov_base = c->dest + c->done;
            iov[0].iov_len = c->left;
            iov[1].iov_base = c->buf;
            iov[1].iov_len = XFER_WIRE_HDR_SIZE;
            want = c->left + XFER_WIRE_HDR_SIZE;
            n = rx_read(c, iov, 2);
            if (n > 0) {
                size_t take = (size_t)n < c->left ? (size_t)n : c->left;

                c->done += take;
                c->left -= take;
                c->tail = (size_t)n - take;
            }
        } else {
            if (c->head == c->tail)
                c->head = c->tail = 0;
            else if (c->head && cap - c->head <
                                    XFER_WIRE_HDR_SIZE + be->cfg.inline_max) {
                memmove(c->buf, c->buf + c->head, c->tail - c->head);
                c->tail -= c->head;
                c->head = 0;
            }
            want = cap - c->tail;
            if (!want)
                break; /* cannot happen: a frame always fits */
            {
                struct iovec one = { c->buf + c->tail, want };

                n = rx_read(c, &one, 1);
            }
            if (n > 0)
                c->tail += (size_t)n;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                       "receive failed: %s", strerror(errno));
            return;
        }
        if (n == 0) {
            int busy = c->fh || c->txh || c->rstate == RX_BODY ||
                       c->tail > c->head || !c->hello_done;
            /* A peer closing an idle connection is routine (it exited or
             * dropped us); only lost work deserves a warning. */
            conn_close(c, XFER_ERR_REMOTE_DISCONNECT,
                       busy ? XFER_LOG_WARN : XFER_LOG_INFO,
                       c->hello_done ? "closed by the peer"
                                     : "closed by the peer during the "
                                       "handshake (stale metadata?)");
            return;
        }
        c->idle_ticks = 0;
        rx_parse(c);
        if ((size_t)n < want)
            break; /* drained: epoll says when more comes */
    }
    if (!c->closed && c->dh && c->hello_done)
        direct_retry(c);
    if (!c->closed && c->txh && !c->blocked)
        flush(c);
    if (c->closed)
        return;
    if (c->rstate == RX_BODY || c->txh || c->dh)
        timer_need(be);
    conn_events(c);
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */
/* ------------------------------------------------------------------ */

static void do_accept(xfer_be_t *be)
{
    for (int i = 0; i < 32; i++) {
        int fd = accept4(be->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        conn_t *c;

        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK &&
                errno != ECONNABORTED)
                LOG(be, XFER_LOG_WARN, "accept failed: %s", strerror(errno));
            return;
        }
        if (be->tp->accepted)
            be->tp->accepted(be->tctx, fd);
        if (!(c = conn_new(be, fd, 0, 0))) {
            LOG(be, XFER_LOG_ERROR, "no memory for an incoming connection");
            close(fd);
            continue;
        }
        sockaddr_str(fd, c->where, sizeof c->where);
        timer_need(be);
    }
}

/* Work that must finish within the timeout.  A handshake counts, so a
 * socket that connects and never speaks does not hold a buffer forever. */
static int conn_busy(const conn_t *c)
{
    return c->connecting || !c->hello_done || c->txh || c->fh || c->dh ||
           c->rstate == RX_BODY || c->tail > c->head;
}

/* Stall detection by ticks: the hot path only clears a counter. */
static void do_tick(xfer_be_t *be)
{
    uint64_t k = 0;
    int busy = 0;
    conn_t *c, *next;

    if (read(be->tfd, &k, sizeof k) != (ssize_t)sizeof k || !k)
        return;
    for (c = be->conns; c; c = next) {
        next = c->next;
        if (!conn_busy(c))
            continue;
        busy = 1;
        c->idle_ticks += (unsigned)(k > UINT_MAX / 2 ? UINT_MAX / 2 : k);
        if (c->idle_ticks > be->timeout_ticks)
            conn_close(c, XFER_ERR_TIMEOUT, XFER_LOG_WARN,
                       "%s for %llu ms",
                       c->connecting ? "connect did not finish"
                                     : "no progress",
                       (unsigned long long)be->cfg.timeout_ms);
    }
    if (!busy) {
        struct itimerspec its;

        memset(&its, 0, sizeof its);
        timerfd_settime(be->tfd, 0, &its, NULL);
        be->timer_on = 0;
    }
}

int xfer__stream_progress(xfer_be_t *be)
{
    struct epoll_event ev[EVENTS_MAX];
    int n = epoll_wait(be->epfd, ev, EVENTS_MAX, 0);

    if (n < 0)
        return errno == EINTR ? 0 : XFER_ERR_BACKEND;
    for (int i = 0; i < n; i++) {
        int kind = *(int *)ev[i].data.ptr;
        uint32_t x = ev[i].events;
        conn_t *c;

        if (kind == H_LISTEN) {
            do_accept(be);
            continue;
        }
        if (kind == H_TIMER) {
            do_tick(be);
            continue;
        }
        c = ev[i].data.ptr;
        if (c->closed)
            continue;
        if (c->connecting) {
            if (x & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                connect_done(c);
            continue;
        }
        if (c->paused && (x & (EPOLLERR | EPOLLHUP))) {
            conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                       "connection lost");
            continue;
        }
        if (x & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_input(c);
        if (!c->closed && (x & EPOLLOUT)) {
            c->blocked = 0;
            flush(c);
            if (!c->closed && c->paused && c->txn < TXQ_LOW)
                conn_input(c);
        }
    }
    reap(be);
    return n;
}

xfer_status_t xfer__stream_event_fd(xfer_be_t *be, int *fd)
{
    *fd = be->epfd;
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* Instance                                                            */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__stream_create(const xfer_host_t *host,
                                  const xfer__stream_transport_t *tp,
                                  void *tctx, const xfer__stream_cfg_t *cfg,
                                  int listen_fd, xfer_be_t **bep)
{
    struct epoll_event ev;
    xfer_be_t *be;
    uint64_t tick;

    if (cfg->rx_buf < XFER_WIRE_HDR_SIZE + cfg->inline_max)
        return host->error(host->ctx, XFER_ERR_CONFIG,
                           "%s: rx_buf (%zu) must hold a header (%u bytes) "
                           "plus inline_max (%zu)",
                           cfg->name, cfg->rx_buf, XFER_WIRE_HDR_SIZE,
                           cfg->inline_max);
    if (!cfg->timeout_ms)
        return host->error(host->ctx, XFER_ERR_CONFIG,
                           "%s: timeout_ms must be at least 1", cfg->name);
    if (!host->agent_name || !host->agent_name[0] ||
        strlen(host->agent_name) > XFER_NAME_MAX)
        return host->error(host->ctx, XFER_ERR_INVALID,
                           "%s: the agent name must be 1 to %u bytes",
                           cfg->name, XFER_NAME_MAX);
    if (!(be = calloc(1, sizeof *be)))
        return host->error(host->ctx, XFER_ERR_NOMEM, "%s: out of memory",
                           cfg->name);
    be->host = host;
    be->tp = tp;
    be->tctx = tctx;
    be->cfg = *cfg;
    be->lfd = listen_fd;
    be->lkind = H_LISTEN;
    be->tkind = H_TIMER;
    be->next_id = 1;
    /* Eight ticks per timeout: a stall is reported between timeout_ms
     * and 9/8 of it, and an idle instance has no timer at all. */
    tick = cfg->timeout_ms / 8;
    be->tick_ms = (unsigned)(tick < 5 ? 5 : tick > 1000 ? 1000 : tick);
    be->timeout_ticks =
        (unsigned)((cfg->timeout_ms + be->tick_ms - 1) / be->tick_ms);
    be->epfd = epoll_create1(EPOLL_CLOEXEC);
    be->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (be->epfd < 0 || be->tfd < 0)
        goto fail;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = &be->tkind;
    if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, be->tfd, &ev) < 0)
        goto fail;
    if (listen_fd >= 0) {
        ev.data.ptr = &be->lkind;
        if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, listen_fd, &ev) < 0)
            goto fail;
    }
    *bep = be;
    return XFER_OK;
fail:
    {
        int e = errno;

        if (be->epfd >= 0)
            close(be->epfd);
        if (be->tfd >= 0)
            close(be->tfd);
        free(be);
        return host->error(host->ctx, XFER_ERR_BACKEND,
                           "%s: cannot set up epoll: %s", cfg->name,
                           strerror(e));
    }
}

void xfer__stream_destroy(xfer_be_t *be)
{
    txe_t *e;

    if (!be)
        return;
    while (be->conns)
        conn_close(be->conns, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_DEBUG,
                   "backend shut down");
    reap(be);
    /* The core removes peers and registrations before fini; anything
     * left is freed so a misbehaving caller does not also leak. */
    while (be->peers) {
        xfer_be_peer_t *p = be->peers;

        be->peers = p->next;
        free(p->info);
        free(p);
    }
    while (be->mems) {
        smem_t *m = be->mems;

        be->mems = m->next;
        if (m->shm_fd >= 0)
            close(m->shm_fd);
        free(m);
    }
    while ((e = be->free_txe)) {
        be->free_txe = e->next;
        free(e);
    }
    close(be->tfd);
    close(be->epfd);
    free(be);
}

void *xfer__stream_tctx(xfer_be_t *be)
{
    return be->tctx;
}

/* ------------------------------------------------------------------ */
/* Peers                                                               */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__stream_peer_add(xfer_be_t *be, const char *name,
                                    uint64_t epoch, const void *info,
                                    size_t len, xfer_be_peer_t **peerp)
{
    xfer_status_t st;
    xfer_be_peer_t *p;

    if (!name || !name[0] || strlen(name) > XFER_NAME_MAX)
        return ERR(be, XFER_ERR_INVALID,
                   "%s: agent name must be 1 to %u bytes", be->cfg.name,
                   XFER_NAME_MAX);
    if (!info || !len || len > XFER_BE_BLOB_MAX)
        return ERR(be, XFER_ERR_INVALID,
                   "%s: connection info of agent '%s' is %zu bytes, not a "
                   "%s address",
                   be->cfg.name, name, len, be->cfg.name);
    st = be->tp->info_check(be->tctx, info, len);
    if (st != XFER_OK)
        return st;
    if (!(p = calloc(1, sizeof *p)) || !(p->info = malloc(len))) {
        free(p);
        return ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
    }
    p->be = be;
    snprintf(p->name, sizeof p->name, "%s", name);
    p->epoch = epoch;
    memcpy(p->info, info, len);
    p->info_len = len;
    be->tp->info_str(be->tctx, info, len, p->where, sizeof p->where);
    p->refs = 1;
    p->next = be->peers;
    if (be->peers)
        be->peers->prev = p;
    be->peers = p;
    *peerp = p;
    return XFER_OK;
}

static void peer_unref(xfer_be_peer_t *p)
{
    xfer_be_t *be = p->be;

    if (--p->refs)
        return;
    if (p->conn)
        conn_close(p->conn, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_DEBUG,
                   "agent forgotten");
    if (p->prev)
        p->prev->next = p->next;
    else
        be->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p->info);
    free(p);
}

void xfer__stream_peer_remove(xfer_be_t *be, xfer_be_peer_t *p)
{
    if (!p)
        return;
    p->removed = 1;
    if (p->conn)
        conn_close(p->conn, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_DEBUG,
                   "agent removed");
    peer_unref(p);
}

/* ------------------------------------------------------------------ */
/* Memory                                                              */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__stream_mem_register(xfer_be_t *be,
                                        const xfer_be_region_t *r, void **mem)
{
    smem_t *m;

    if (r->type != XFER_MEM_DRAM)
        return ERR(be, XFER_ERR_NOT_SUPPORTED,
                   "%s moves DRAM only (memory type %d)", be->cfg.name,
                   (int)r->type);
    if (!(m = calloc(1, sizeof *m)))
        return ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
    m->addr = r->addr;
    m->len = r->len;
    m->key = r->key;
    m->shm_fd = -1;
    m->next = be->mems;
    if (be->mems)
        be->mems->prev = m;
    be->mems = m;
    *mem = m;
    return XFER_OK;
}

/* After this returns no byte of the region is touched: a WRITE being
 * received into it is discarded and answered with an error, READ
 * answers not yet sent from it are copied out first. */
void xfer__stream_mem_deregister(xfer_be_t *be, void *mem)
{
    smem_t *m = mem;

    if (!m)
        return;
    for (conn_t *c = be->conns, *next; c && m->inflight; c = next) {
        next = c->next;
        if (c->rmem == m) {
            c->rmem = NULL;
            m->inflight--;
            c->dest = NULL;
            if (c->wr_err == XFER_OK) {
                c->wr_err = XFER_ERR_ACCESS;
                c->wr_err_seg = c->rh.seg;
            }
            LOG(be, XFER_LOG_WARN,
                "WRITE from agent '%s' into key 0x%016llx discarded: the "
                "region was deregistered during the transfer",
                c->name, (unsigned long long)m->key);
        }
        for (txe_t *e = c->txh; e; e = e->next) {
            size_t sent, rem;
            void *copy;

            if (e->mem != m)
                continue;
            sent = e->idx == 0 ? 0 : e->off;
            rem = e->v[1].iov_len - sent;
            copy = malloc(rem ? rem : 1);
            if (!copy) {
                /* Cannot keep the stream whole without the bytes. */
                conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                           "no memory to detach a READ answer from a "
                           "deregistered region");
                break;
            }
            memcpy(copy, (char *)e->v[1].iov_base + sent, rem);
            e->heap = copy;
            e->v[1].iov_base = copy;
            e->v[1].iov_len = rem;
            if (e->idx == 1)
                e->off = 0;
            e->mem = NULL;
            m->inflight--;
        }
    }
    if (m->prev)
        m->prev->next = m->next;
    else
        be->mems = m->next;
    if (m->next)
        m->next->prev = m->prev;
    if (m->shm_fd >= 0)
        close(m->shm_fd);
    free(m);
}

int xfer__stream_mem_shm(const void *mem, uint64_t *id, uint64_t *off)
{
    const smem_t *m = mem;

    if (m->shm_fd < 0)
        return 0;
    *id = m->shm_id;
    *off = m->shm_off;
    return 1;
}

xfer_status_t xfer__stream_mem_share(xfer_be_t *be, void *mem, int fd,
                                     uint64_t id, uint64_t size, uint64_t off)
{
    smem_t *m = mem;

    if (m->shm_fd >= 0)
        return XFER_OK;
    m->shm_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (m->shm_fd < 0)
        return ERR(be, XFER_ERR_BACKEND, "%s: cannot duplicate a memfd: %s",
                   be->cfg.name, strerror(errno));
    m->shm_id = id;
    m->shm_size = size;
    m->shm_off = off;
    /* Peers already connected learn of it before they can hold metadata
     * that names it: the frame is queued before this call returns. */
    for (conn_t *c = be->conns, *next; c; c = next) {
        next = c->next;
        if (!c->initiator && c->share && c->hello_done) {
            share_one(c, m);
            if (!c->closed && !c->blocked)
                flush(c);
        }
    }
    return XFER_OK;
}

const void *xfer__stream_rmem_pack(const void *rmem, uint64_t *addr,
                                   size_t *len)
{
    const srmem_t *rm = rmem;

    *addr = rm->addr;
    *len = rm->pack_len;
    return rm->pack;
}

xfer_status_t xfer__stream_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                       const xfer_be_rregion_t *r,
                                       const void *buf, size_t len,
                                       void **rmem)
{
    srmem_t *rm;

    if (r->type != XFER_MEM_DRAM)
        return ERR(be, XFER_ERR_NOT_SUPPORTED,
                   "%s moves DRAM only (memory type %d)", be->cfg.name,
                   (int)r->type);
    if (r->addr + r->len < r->addr)
        return ERR(be, XFER_ERR_INVALID,
                   "%s: remote region at 0x%llx of %llu bytes wraps around",
                   be->cfg.name, (unsigned long long)r->addr,
                   (unsigned long long)r->len);
    if (!(rm = calloc(1, sizeof *rm)))
        return ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
    rm->key = r->key;
    rm->addr = r->addr;
    rm->len = r->len;
    if (buf && len && len <= PACK_MAX) {
        memcpy(rm->pack, buf, len);
        rm->pack_len = len;
    }
    *rmem = rm;
    return XFER_OK;
}

void xfer__stream_rmem_release(xfer_be_t *be, void *rmem)
{
    free(rmem);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* Everything a post needs is built here, once: wire headers and the
 * iovec array, so posting N descriptors is one pass of sendmsg. */
xfer_status_t xfer__stream_req_create(xfer_be_t *be, xfer_op_t op,
                                      xfer_be_peer_t *peer,
                                      const xfer_be_seg_t *segs, size_t nseg,
                                      xfer_be_req_t **reqp)
{
    xfer_be_req_t *r;
    size_t per = op == XFER_OP_WRITE ? 2 : 1;
    size_t niov, size;

    if (op != XFER_OP_READ && op != XFER_OP_WRITE)
        return ERR(be, XFER_ERR_INVALID, "%s: unknown operation %d",
                   be->cfg.name, (int)op);
    if (nseg > UINT32_MAX || nseg > (SIZE_MAX / 64))
        return ERR(be, XFER_ERR_INVALID, "%s: %zu descriptors is too many",
                   be->cfg.name, nseg);
    for (size_t i = 0; i < nseg; i++) {
        const srmem_t *rm = segs[i].rmem;

        if (!rm || segs[i].raddr < rm->addr ||
            segs[i].len > rm->len ||
            segs[i].raddr - rm->addr > rm->len - segs[i].len)
            return ERR(be, XFER_ERR_INVALID,
                       "%s: descriptor %zu (remote addr 0x%llx, %zu bytes) "
                       "is outside its remote region",
                       be->cfg.name, i, (unsigned long long)segs[i].raddr,
                       segs[i].len);
    }
    niov = nseg * per + 2;
    size = sizeof *r + nseg * sizeof(xfer_wire_hdr_t) +
           niov * sizeof(struct iovec);
    if (!(r = calloc(1, size)))
        return ERR(be, XFER_ERR_NOMEM,
                   "%s: no memory for a request of %zu descriptors",
                   be->cfg.name, nseg);
    r->be = be;
    r->peer = peer;
    r->op = op;
    r->segs = segs;
    r->nseg = nseg;
    r->id = be->next_id++;
    r->status = XFER_OK;
    r->hdrs = (xfer_wire_hdr_t *)(r + 1);
    r->iov = (struct iovec *)(r->hdrs + nseg);
    r->niov_data = nseg * per;
    for (size_t i = 0; i < nseg; i++) {
        xfer_wire_hdr_t h;

        memset(&h, 0, sizeof h);
        h.type = op == XFER_OP_WRITE ? XFER_WIRE_WRITE : XFER_WIRE_READ_REQ;
        h.flags = i + 1 == nseg ? XFER_WIRE_F_LAST : 0;
        h.seg = (uint32_t)i;
        h.tag = r->id;
        h.arg0 = ((const srmem_t *)segs[i].rmem)->key;
        h.arg1 = segs[i].raddr;
        h.len = segs[i].len;
        xfer_wire_encode(&r->hdrs[i], &h);
        r->iov[i * per].iov_base = &r->hdrs[i];
        r->iov[i * per].iov_len = XFER_WIRE_HDR_SIZE;
        if (per == 2) {
            r->iov[i * 2 + 1].iov_base = (void *)segs[i].laddr;
            r->iov[i * 2 + 1].iov_len = segs[i].len;
        }
    }
    r->txe.kind = TX_REQ;
    r->txe.iov = r->iov;
    peer->refs++;
    *reqp = r;
    return XFER_OK;
}

static xfer_status_t notif_queue(xfer_be_t *be, xfer_be_peer_t *p,
                                 const void *msg, size_t len)
{
    xfer_status_t st = XFER_OK;
    conn_t *c;
    txe_t *e;

    if (!(c = peer_conn(be, p, &st)))
        return st;
    if (!(e = txe_get(be)) || (len && !(e->heap = malloc(len)))) {
        if (e)
            txe_put(be, e);
        return ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
    }
    if (len)
        memcpy(e->heap, msg, len);
    e->kind = TX_CTRL;
    ctrl_hdr(e, XFER_WIRE_NOTIF, 0, 0, 0, 0, len);
    e->v[1].iov_base = e->heap;
    e->v[1].iov_len = len;
    e->niov = 2;
    txq_send(c, e);
    if (c->closed)
        return ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                   "%s: connection to agent '%s' (%s) failed while sending "
                   "a notification",
                   be->cfg.name, p->name, p->where);
    return XFER_OK;
}

static void send_frames(conn_t *c, xfer_be_req_t *r)
{
    if (c->ft)
        c->ft->fnext = r;
    else
        c->fh = r;
    c->ft = r;
    txq_send(c, &r->txe);
}

static void park(conn_t *c, xfer_be_req_t *r)
{
    r->parked = 1;
    r->dnext = NULL;
    if (c->dt)
        c->dt->dnext = r;
    else
        c->dh = r;
    c->dt = r;
    timer_need(c->be);
}

static void unpark(conn_t *c, xfer_be_req_t *r)
{
    xfer_be_req_t **pp = &c->dh, *prev = NULL;

    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->dnext;
    }
    if (*pp) {
        *pp = r->dnext;
        if (c->dt == r)
            c->dt = prev;
    }
    r->parked = 0;
    r->dnext = NULL;
}

/* Let the transport move the data itself; the notification follows as
 * a frame once the copy has returned, so it arrives after the data. */
static void direct_run(conn_t *c, xfer_be_req_t *r)
{
    xfer_be_t *be = c->be;
    xfer_status_t st;

    r->vgen_post = r->vgen;
    st = be->tp->direct(be->tctx, c->tconn, r->op, r->segs, r->nseg,
                        &r->vgen_post, r->msg, sizeof r->msg);
    if (st == XFER_IN_PROG) {
        park(c, r);
        return;
    }
    if (st == XFER_ERR_NOT_SUPPORTED) {
        r->msg[0] = '\0';
        send_frames(c, r);
        return;
    }
    r->conn = NULL;
    if (st == XFER_OK && r->has_notif) {
        st = notif_queue(be, r->peer, r->notif, r->notif_len);
        if (st != XFER_OK)
            snprintf(r->msg, sizeof r->msg, "%s: the data moved but its "
                     "notification could not be sent to agent '%s' (%s)",
                     be->cfg.name, r->peer->name, r->peer->where);
    }
    if (st != XFER_OK) {
        /* Name the peer, as frame errors do; the transport said why. */
        char why[sizeof r->msg];
        size_t n;

        snprintf(why, sizeof why, "%s", r->msg[0] ? r->msg
                                                  : status_text(st));
        n = (size_t)snprintf(r->msg, sizeof r->msg, "%s %s to agent '%s' "
                             "(%s): ", be->cfg.name,
                             r->op == XFER_OP_READ ? "READ" : "WRITE",
                             r->peer->name, r->peer->where);
        if (n < sizeof r->msg) {
            size_t k = strnlen(why, sizeof r->msg - n - 1);

            memcpy(r->msg + n, why, k);
            r->msg[n + k] = '\0';
        }
    }
    r->status = st;
}

/* After input on a handshaken connection: parked requests, in order. */
static void direct_retry(conn_t *c)
{
    xfer_be_req_t *list = c->dh, *r;

    c->dh = c->dt = NULL;
    while ((r = list) && !c->closed) {
        list = r->dnext;
        r->parked = 0;
        r->dnext = NULL;
        if (c->dh) /* one waits again: the rest wait behind it */
            park(c, r);
        else
            direct_run(c, r);
    }
    while ((r = list)) { /* the connection closed under us */
        list = r->dnext;
        r->parked = 0;
        r->dnext = NULL;
        req_fail(r, XFER_ERR_REMOTE_DISCONNECT, "connection closed");
    }
}

xfer_status_t xfer__stream_req_post(xfer_be_t *be, xfer_be_req_t *r,
                                    const void *notif, size_t notif_len)
{
    xfer_status_t st = XFER_OK;
    xfer_be_peer_t *p = r->peer;
    conn_t *c;
    int niov = (int)r->niov_data;

    if (r->status == XFER_IN_PROG)
        return ERR(be, XFER_ERR_BUSY, "%s: request still in progress",
                   be->cfg.name);
    if (p->removed)
        return ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                   "%s: agent '%s' was removed", be->cfg.name, p->name);
    if (notif && notif_len > XFER_NOTIF_MAX)
        return ERR(be, XFER_ERR_INVALID,
                   "%s: notification of %zu bytes exceeds %u", be->cfg.name,
                   notif_len, XFER_NOTIF_MAX);
    if (!r->nseg) {
        /* Nothing to wait for: the notification alone is the request. */
        st = notif ? notif_queue(be, p, notif, notif_len) : XFER_OK;
        r->status = st;
        return st;
    }
    if (notif) {
        xfer_wire_hdr_t h;

        if (notif_len > r->notif_cap) {
            void *nb = realloc(r->notif, notif_len);

            if (!nb)
                return ERR(be, XFER_ERR_NOMEM, "%s: out of memory",
                           be->cfg.name);
            r->notif = nb;
            r->notif_cap = notif_len;
        }
        if (notif_len)
            memcpy(r->notif, notif, notif_len);
        memset(&h, 0, sizeof h);
        h.type = XFER_WIRE_NOTIF;
        h.len = notif_len;
        xfer_wire_encode(&r->nhdr, &h);
        r->iov[niov].iov_base = &r->nhdr;
        r->iov[niov].iov_len = XFER_WIRE_HDR_SIZE;
        r->iov[niov + 1].iov_base = r->notif;
        r->iov[niov + 1].iov_len = notif_len;
        niov += 2;
    }
    r->has_notif = notif != NULL;
    r->notif_len = notif ? notif_len : 0;
    if (!(c = peer_conn(be, p, &st)))
        return st;
    r->txe.niov = niov;
    r->txe.idx = 0;
    r->txe.off = 0;
    r->next_resp = 0;
    r->err = XFER_OK;
    r->canceled = 0;
    r->msg[0] = '\0';
    r->status = XFER_IN_PROG;
    r->conn = c;
    r->fnext = NULL;
    if (be->tp->direct) {
        /* Behind parked requests, so notifications keep their order. */
        if (!c->hello_done || c->dh) {
            park(c, r);
            if (!c->blocked)
                flush(c); /* the HELLO, if this post opened the link */
        } else
            direct_run(c, r);
    } else {
        send_frames(c, r);
    }
    if (r->status < 0)
        return ERR(be, r->status, "%s", r->msg);
    return r->status;
}

xfer_status_t xfer__stream_req_check(xfer_be_t *be, xfer_be_req_t *r)
{
    if (r->status < 0)
        return ERR(be, r->status, "%s",
                   r->msg[0] ? r->msg : status_text(r->status));
    return r->status;
}

static void fifo_unlink(conn_t *c, xfer_be_req_t *r)
{
    xfer_be_req_t **pp = &c->fh, *prev = NULL;

    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->fnext;
    }
    if (!*pp)
        return;
    *pp = r->fnext;
    if (c->ft == r)
        c->ft = prev;
}

static void txq_unlink(conn_t *c, txe_t *e)
{
    txe_t **pp = &c->txh, *prev = NULL;

    while (*pp && *pp != e) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = e->next;
    if (c->txt == e)
        c->txt = prev;
    c->txn--;
    e->queued = 0;
}

xfer_status_t xfer__stream_req_cancel(xfer_be_t *be, xfer_be_req_t *r)
{
    conn_t *c = r->conn;

    if (r->status != XFER_IN_PROG)
        return XFER_OK;
    if (c && r->parked) {
        unpark(c, r);
        r->conn = NULL;
        r->status = XFER_ERR_CANCELED;
        snprintf(r->msg, sizeof r->msg, "%s request canceled before it "
                 "started", be->cfg.name);
        return XFER_OK;
    }
    /* Nothing on the wire yet: it can vanish without a trace.  Once a
     * byte has left, the target expects the rest, so it runs to its end
     * and reports XFER_ERR_CANCELED then. */
    if (c && r->txe.queued && !r->txe.idx && !r->txe.off) {
        txq_unlink(c, &r->txe);
        fifo_unlink(c, r);
        r->conn = NULL;
        r->fnext = NULL;
        r->status = XFER_ERR_CANCELED;
        snprintf(r->msg, sizeof r->msg, "%s request canceled before it "
                 "was sent", be->cfg.name);
        conn_events(c);
        return XFER_OK;
    }
    r->canceled = 1;
    return XFER_IN_PROG;
}

void xfer__stream_req_release(xfer_be_t *be, xfer_be_req_t *r)
{
    if (!r)
        return;
    if (r->status == XFER_IN_PROG &&
        xfer__stream_req_cancel(be, r) != XFER_OK && r->conn)
        /* The core never does this; if it did, the stream would lose
         * sync, so the connection goes instead. */
        conn_close(r->conn, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                   "request released while on the wire");
    peer_unref(r->peer);
    free(r->notif);
    free(r);
}

xfer_status_t xfer__stream_notif_send(xfer_be_t *be, xfer_be_peer_t *p,
                                      const void *msg, size_t len)
{
    if (p->removed)
        return ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                   "%s: agent '%s' was removed", be->cfg.name, p->name);
    if (len > XFER_NOTIF_MAX || (len && !msg))
        return ERR(be, XFER_ERR_INVALID,
                   "%s: notification of %zu bytes (at most %u)",
                   be->cfg.name, len, XFER_NOTIF_MAX);
    return notif_queue(be, p, msg, len);
}
