/* initiator.c - the initiator side of the stream engine: requests built once and
 * posted many times, their answers (ACK, READ_RESP), notifications, remote regions. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/common/stream-int.h"

#define ERR XFER__ERR
#define TXE_LINK offsetof(txe_t, next)

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

static const char *op_name(const xfer_be_req_t *r)
{
    return r->op == XFER_OP_READ ? "READ" : "WRITE";
}

static xfer_be_req_t *txe_req(txe_t *e)
{
    return (xfer_be_req_t *)(void *)((char *)e - offsetof(xfer_be_req_t, txe));
}

/* ------------------------------------------------------------------ */
/* Remote regions                                                      */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__stream_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                       const xfer_be_rregion_t *r,
                                       const void *buf, size_t len,
                                       void **rmem)
{
    srmem_t *rm;

    (void)peer;
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
    if (buf && len && len <= XFER__STREAM_PACK_MAX) {
        memcpy(rm->pack, buf, len);
        rm->pack_len = len;
    }
    *rmem = rm;
    return XFER_OK;
}

void xfer__stream_rmem_release(xfer_be_t *be, void *rmem)
{
    (void)be;
    free(rmem);
}

const void *xfer__stream_rmem_pack(const void *rmem, uint64_t *addr,
                                   size_t *len)
{
    const srmem_t *rm = rmem;

    *addr = rm->addr;
    *len = rm->pack_len;
    return rm->pack;
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */
/* ------------------------------------------------------------------ */

static void req_fail(xfer_be_req_t *r, xfer_status_t st, const char *why)
{
    xfer_be_t *be = r->be;

    /* A cancel that answered XFER_IN_PROG promised XFER_ERR_CANCELED or
     * XFER_OK (docs/api.md); the connection failing under it (a stalled
     * or dead peer) ends it no less cancelled.  The sentence says why. */
    r->status = r->canceled ? XFER_ERR_CANCELED : st;
    r->conn = NULL;
    r->fnext = NULL;
    snprintf(r->msg, sizeof r->msg, "%s %s to agent '%s' (%s)%s: %s",
             be->cfg.name, op_name(r), r->peer->name, r->peer->where,
             r->canceled ? ", canceled" : "", why);
}

void xfer__stream_reqs_fail(conn_t *c, xfer_status_t st, const char *why)
{
    xfer_be_req_t *r;
    txe_t *e;

    while ((r = c->fh)) {
        c->fh = r->fnext;
        req_fail(r, st, why);
    }
    c->ft = NULL;
    while ((e = c->hh)) {
        c->hh = e->next;
        if (e->kind == XFER__TX_REQ) {
            r = txe_req(e);
            r->held = 0;
            req_fail(r, st, why);
        } else {
            xfer__stream_txe_drop(c, e);
        }
    }
    c->ht = NULL;
}

int xfer__stream_reqs_busy(const conn_t *c)
{
    return c->fh || c->hh;
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
             r->be->cfg.name, op_name(r), (unsigned)seg,
             (unsigned long long)rm->key, (unsigned long long)s->raddr,
             s->len, who, status_text(st));
}

static int initiator_frame(conn_t *c, const xfer_wire_hdr_t *h, size_t avail)
{
    xfer_be_req_t *r = c->fh;
    xfer_status_t st;
    size_t payload;

    switch (h->type) {
    case XFER_WIRE_ACK:
        if (!r || r->op != XFER_OP_WRITE || h->tag != r->id || h->len ||
            r->txe.queued || xfer__stream_wire_status(h->arg0, &st) < 0 ||
            (st != XFER_OK && h->seg >= r->nseg)) {
            XFER__VIOLATION(c, "unexpected ACK");
            return 1;
        }
        if (st != XFER_OK)
            req_error(r, h->seg, st, c->name);
        req_complete(c, r);
        c->head += XFER_WIRE_HDR_SIZE;
        return 1;
    case XFER_WIRE_READ_RESP:
        if (!r || r->op != XFER_OP_READ || h->tag != r->id ||
            h->seg != r->next_resp ||
            xfer__stream_wire_status(h->arg0, &st) < 0 ||
            h->len != (st == XFER_OK ? r->segs[h->seg].len : 0)) {
            XFER__VIOLATION(c, "unexpected READ_RESP");
            return 1;
        }
        payload = h->len;
        if (payload && payload <= c->be->cfg.inline_max && avail < payload)
            return 0;
        c->head += XFER_WIRE_HDR_SIZE;
        if (st != XFER_OK)
            req_error(r, h->seg, st, c->name);
        xfer__stream_body_start(c, h, (void *)r->segs[h->seg].laddr,
                                payload);
        return 1;
    default:
        XFER__VIOLATION(c, "frame type %u sent to an initiator", h->type);
        return 1;
    }
}

static void initiator_body_done(conn_t *c)
{
    xfer_be_req_t *r = c->fh;

    /* READ_RESP */
    if (++r->next_resp == r->nseg) {
        if (r->txe.queued) {
            XFER__VIOLATION(c, "READ answered before it was sent");
            return;
        }
        req_complete(c, r);
    }
}

const xfer__stream_role_t xfer__stream_initiator = {
    .frame = initiator_frame,
    .body_done = initiator_body_done,
};

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

#define REQ_PRIV_ALIGN 16u

/* The wire image of a WRITE request: runs of up to XFER_WIRE_BATCH_MAX
 * descriptors, each one WRITEV frame (header and table in one piece,
 * then the payloads, adjacent ones merged into one iovec); a run of one
 * is a plain WRITE frame.  Returns the iovecs used. */
static size_t write_build(xfer_be_req_t *r, const xfer_be_seg_t *segs,
                          size_t nseg)
{
    uint8_t *w = r->hdrs;
    size_t niov = 0;

    for (size_t first = 0; first < nseg; first += XFER_WIRE_BATCH_MAX) {
        size_t n = nseg - first < XFER_WIRE_BATCH_MAX ? nseg - first
                                                      : XFER_WIRE_BATCH_MAX;
        uint8_t *start = w;
        xfer_wire_hdr_t h;
        uint64_t bytes = 0;

        memset(&h, 0, sizeof h);
        h.flags = first + n == nseg ? XFER_WIRE_F_LAST : 0;
        h.seg = (uint32_t)first;
        h.tag = r->id;
        w += XFER_WIRE_HDR_SIZE;
        for (size_t i = first; i < first + n; i++) {
            xfer_wire_entry_t ent;

            bytes += segs[i].len;
            if (n == 1)
                break;
            ent.key = htole64(((const srmem_t *)segs[i].rmem)->key);
            ent.addr = htole64(segs[i].raddr);
            ent.len = htole64(segs[i].len);
            memcpy(w, &ent, sizeof ent);
            w += sizeof ent;
        }
        if (n == 1) {
            h.type = XFER_WIRE_WRITE;
            h.arg0 = ((const srmem_t *)segs[first].rmem)->key;
            h.arg1 = segs[first].raddr;
            h.len = bytes;
        } else {
            h.type = XFER_WIRE_WRITEV;
            h.arg0 = n;
            h.arg1 = bytes;
            h.len = n * XFER_WIRE_ENTRY_SIZE + bytes;
        }
        xfer_wire_encode((xfer_wire_hdr_t *)(void *)start, &h);
        r->iov[niov].iov_base = start;
        r->iov[niov].iov_len = (size_t)(w - start);
        niov++;
        for (size_t i = first, prev = SIZE_MAX; i < first + n; i++) {
            if (!segs[i].len)
                continue;
            if (prev != SIZE_MAX &&
                (uint8_t *)r->iov[prev].iov_base + r->iov[prev].iov_len ==
                    (uint8_t *)segs[i].laddr) {
                r->iov[prev].iov_len += segs[i].len;
                continue;
            }
            prev = niov;
            r->iov[niov].iov_base = (void *)segs[i].laddr;
            r->iov[niov].iov_len = segs[i].len;
            niov++;
        }
    }
    return niov;
}

/* Everything a post needs is built here, once: wire headers and the
 * iovec array, so posting N descriptors is one pass of sendmsg. */
xfer_status_t xfer__stream_req_create(xfer_be_t *be, xfer_op_t op,
                                      xfer_be_peer_t *peer,
                                      const xfer_be_seg_t *segs, size_t nseg,
                                      xfer_be_req_t **reqp)
{
    xfer_be_req_t *r;
    size_t nbatch = (nseg + XFER_WIRE_BATCH_MAX - 1) / XFER_WIRE_BATCH_MAX;
    size_t niov, wire, size, priv_at;

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
    if (op == XFER_OP_WRITE) {
        niov = nbatch + nseg + 2;
        wire = nbatch * XFER_WIRE_HDR_SIZE + nseg * XFER_WIRE_ENTRY_SIZE;
    } else {
        niov = nseg + 2;
        wire = nseg * XFER_WIRE_HDR_SIZE;
    }
    size = sizeof *r + niov * sizeof(struct iovec) + wire;
    priv_at = (size + REQ_PRIV_ALIGN - 1) & ~(size_t)(REQ_PRIV_ALIGN - 1);
    if (!(r = calloc(1, priv_at + be->cfg.req_priv)))
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
    r->iov = (struct iovec *)(r + 1);
    r->hdrs = r->iov + niov;
    r->priv = (char *)r + priv_at;
    if (op == XFER_OP_WRITE) {
        r->niov_data = write_build(r, segs, nseg);
    } else {
        xfer_wire_hdr_t *hdrs = r->hdrs;

        r->niov_data = nseg;
        for (size_t i = 0; i < nseg; i++) {
            xfer_wire_hdr_t h;

            memset(&h, 0, sizeof h);
            h.type = XFER_WIRE_READ_REQ;
            h.flags = i + 1 == nseg ? XFER_WIRE_F_LAST : 0;
            h.seg = (uint32_t)i;
            h.tag = r->id;
            h.arg0 = ((const srmem_t *)segs[i].rmem)->key;
            h.arg1 = segs[i].raddr;
            h.len = segs[i].len;
            xfer_wire_encode(&hdrs[i], &h);
            r->iov[i].iov_base = &hdrs[i];
            r->iov[i].iov_len = XFER_WIRE_HDR_SIZE;
        }
    }
    r->txe.kind = XFER__TX_REQ;
    r->txe.iov = r->iov;
    peer->refs++;
    *reqp = r;
    return XFER_OK;
}

static void send_frames(conn_t *c, xfer_be_req_t *r)
{
    if (c->ft)
        c->ft->fnext = r;
    else
        c->fh = r;
    c->ft = r;
    xfer__stream_txq_send(c, &r->txe);
}

static void held_push(conn_t *c, txe_t *e)
{
    e->next = NULL;
    if (c->ht)
        c->ht->next = e;
    else
        c->hh = e;
    c->ht = e;
    xfer__stream_timer_need(c->be);
}

/* Whether posts on c must wait in its hold list: behind what it holds
 * already, or, with a secret, until the target accepted our proof (it
 * serves nothing before, and would take early frames as a violation). */
static int must_hold(const conn_t *c)
{
    return c->hh || (c->be->auth && !c->hello_done);
}

/* The head of the hold list goes to the send queue while it is a lone
 * notification or a request that may go as frames. */
void xfer__stream_held_drain(conn_t *c)
{
    txe_t *e;

    while (!c->closed && c->hello_done && (e = c->hh)) {
        xfer_be_req_t *r = e->kind == XFER__TX_REQ ? txe_req(e) : NULL;

        if (r && r->held == 1)
            break;
        c->hh = e->next;
        if (!c->hh)
            c->ht = NULL;
        if (r) {
            r->held = 0;
            send_frames(c, r);
        } else {
            xfer__stream_txq_send(c, e);
        }
    }
}

/* A notification alone: behind whatever the transport still holds on
 * the connection, so that it never overtakes an earlier request's. */
static xfer_status_t notif_queue(xfer_be_t *be, xfer_be_peer_t *p,
                                 const void *msg, size_t len)
{
    xfer_status_t st = XFER_OK;
    conn_t *c;
    txe_t *e;

    if (!(c = xfer__stream_peer_conn(be, p, &st)))
        return st;
    if (!(e = xfer__stream_msg_entry(be, XFER_WIRE_NOTIF, msg, len)))
        return XFER_ERR_NOMEM;
    return xfer__stream_msg_queue(c, e, "a notification");
}

/* Hold e on c; the HELLO, if this post opened the connection, leaves now
 * (nothing else would send it: what follows it waits). */
static void hold(conn_t *c, txe_t *e)
{
    held_push(c, e);
    if (!c->blocked)
        xfer__stream_flush(c);
}

xfer_status_t xfer__stream_msg_queue(conn_t *c, txe_t *e, const char *what)
{
    if (!must_hold(c))
        return xfer__stream_msg_send(c, e, what);
    hold(c, e);
    if (c->closed)
        return XFER__ERR(c->be, XFER_ERR_REMOTE_DISCONNECT,
                         "%s: connection to agent '%s' (%s) failed before "
                         "sending %s", c->be->cfg.name, c->name, c->where,
                         what);
    return XFER_OK;
}

/* Checks and state common to every post; *c: the peer's connection,
 * NULL when the post already ended (no descriptors). */
static xfer_status_t post_prepare(xfer_be_t *be, xfer_be_req_t *r,
                                  const void *notif, size_t notif_len,
                                  conn_t **cp)
{
    xfer_status_t st = XFER_OK;
    xfer_be_peer_t *p = r->peer;
    int niov = (int)r->niov_data;

    *cp = NULL;
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
    if (!(*cp = xfer__stream_peer_conn(be, p, &st)))
        return st;
    r->txe.niov = niov;
    r->txe.idx = 0;
    r->txe.off = 0;
    r->next_resp = 0;
    r->err = XFER_OK;
    r->canceled = 0;
    r->msg[0] = '\0';
    r->status = XFER_IN_PROG;
    r->conn = *cp;
    r->fnext = NULL;
    return XFER_IN_PROG;
}

xfer_status_t xfer__stream_req_post(xfer_be_t *be, xfer_be_req_t *r,
                                    const void *notif, size_t notif_len)
{
    conn_t *c;
    xfer_status_t st = post_prepare(be, r, notif, notif_len, &c);

    if (!c)
        return st;
    if (must_hold(c)) {
        /* Behind what the transport holds, so notifications keep their
         * order, or until the handshake proved the secret; it goes as
         * frames when its turn comes. */
        r->held = 2;
        hold(c, &r->txe);
        return xfer__stream_req_check(be, r);
    }
    send_frames(c, r);
    return xfer__stream_req_check(be, r);
}

xfer_status_t xfer__stream_req_hold(xfer_be_t *be, xfer_be_req_t *r,
                                    const void *notif, size_t notif_len,
                                    xfer__stream_conn_t **cp)
{
    xfer_status_t st = post_prepare(be, r, notif, notif_len, cp);

    if (!*cp)
        return st;
    r->held = 1;
    held_push(*cp, &r->txe);
    if (!(*cp)->blocked)
        xfer__stream_flush(*cp); /* the HELLO, if this post opened it */
    return xfer__stream_req_check(be, r);
}

xfer_be_req_t *xfer__stream_conn_held(xfer__stream_conn_t *c)
{
    txe_t *e = c->hh;

    return e && e->kind == XFER__TX_REQ && txe_req(e)->held == 1 ? txe_req(e)
                                                                 : NULL;
}

void xfer__stream_req_send(xfer_be_t *be, xfer_be_req_t *r)
{
    (void)be;
    if (r->held != 1 || !r->conn)
        return;
    r->held = 2;
    xfer__stream_held_drain(r->conn);
}

void xfer__stream_req_end(xfer_be_t *be, xfer_be_req_t *r, xfer_status_t st,
                          const char *why)
{
    conn_t *c = r->conn;
    txe_t *e = NULL;

    if (r->held != 1 || !c)
        return;
    xfer__stream_unlink(&c->hh, &c->ht, &r->txe, TXE_LINK);
    r->held = 0;
    r->conn = NULL;
    r->msg[0] = '\0';
    /* The data moved: its notification takes the request's place. */
    if (st == XFER_OK && r->has_notif &&
        !(e = xfer__stream_msg_entry(be, XFER_WIRE_NOTIF, r->notif,
                                     r->notif_len)))
        st = XFER_ERR_NOMEM;
    if (e) {
        e->next = c->hh;
        c->hh = e;
        if (!c->ht)
            c->ht = e;
    }
    xfer__stream_held_drain(c);
    if (e && c->closed) {
        st = XFER_ERR_REMOTE_DISCONNECT;
        why = "the data moved but its notification could not be sent";
    }
    r->status = st;
    if (st != XFER_OK)
        snprintf(r->msg, sizeof r->msg, "%s %s to agent '%s' (%s): %s",
                 be->cfg.name, op_name(r), r->peer->name, r->peer->where,
                 why && why[0] ? why : status_text(st));
}

xfer_status_t xfer__stream_req_state(const xfer_be_req_t *r)
{
    return r->status;
}

void *xfer__stream_req_priv(xfer_be_req_t *r)
{
    return r->priv;
}

xfer_be_peer_t *xfer__stream_req_peer(const xfer_be_req_t *r)
{
    return r->peer;
}

void xfer__stream_req_done(xfer_be_req_t *r)
{
    r->status = XFER_OK;
    r->msg[0] = '\0';
}

const xfer_be_seg_t *xfer__stream_req_segs(const xfer_be_req_t *r,
                                           xfer_op_t *op, size_t *nseg)
{
    *op = r->op;
    *nseg = r->nseg;
    return r->segs;
}

xfer_status_t xfer__stream_req_check(xfer_be_t *be, xfer_be_req_t *r)
{
    if (r->status < 0)
        return ERR(be, r->status, "%s",
                   r->msg[0] ? r->msg : status_text(r->status));
    return r->status;
}

static xfer_status_t canceled(xfer_be_req_t *r, const char *when)
{
    r->conn = NULL;
    r->fnext = NULL;
    r->status = XFER_ERR_CANCELED;
    snprintf(r->msg, sizeof r->msg, "%s request canceled before it %s",
             r->be->cfg.name, when);
    return XFER_OK;
}

xfer_status_t xfer__stream_req_cancel(xfer_be_t *be, xfer_be_req_t *r)
{
    conn_t *c = r->conn;

    (void)be;
    if (r->status != XFER_IN_PROG)
        return XFER_OK;
    if (c && r->held) {
        xfer__stream_unlink(&c->hh, &c->ht, &r->txe, TXE_LINK);
        r->held = 0;
        canceled(r, "started");
        xfer__stream_held_drain(c);
        return XFER_OK;
    }
    /* Nothing on the wire yet: it can vanish without a trace.  Once a
     * byte has left, the target expects the rest, so it runs to its end
     * and reports XFER_ERR_CANCELED then. */
    if (c && r->txe.queued && !r->txe.idx && !r->txe.off) {
        xfer__stream_txq_unlink(c, &r->txe);
        xfer__stream_unlink(&c->fh, &c->ft, r,
                            offsetof(xfer_be_req_t, fnext));
        canceled(r, "was sent");
        xfer__stream_conn_events(c);
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
        xfer__stream_conn_close(r->conn, XFER_ERR_REMOTE_DISCONNECT,
                                XFER_LOG_WARN,
                                "request released while on the wire");
    xfer__stream_peer_unref(r->peer);
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
