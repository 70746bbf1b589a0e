/* notif.c - notifications of the verbs plugin: a SEND on the peer's first
 * QP once the data ahead of it will land first (RC executes a QP's work in
 * order; the fence waits for READs), with the session's token and credits
 * (nsess.h); and the receive buffers a target posts for each initiator. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/verbs.h"

/* ---- send buffers --------------------------------------------------------- */

xfer_status_t vb__notif_open(vb_t *v)
{
    size_t n = v->cfg.notif_tx;
    void *mem = NULL;

    if (posix_memalign(&mem, 4096, n * VB_RX_SIZE) != 0 ||
        (v->tx_free = calloc(n, sizeof *v->tx_free)) == NULL) {
        free(mem);
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory for %zu "
                    "notification send buffers", n);
    }
    v->tx = mem;
    v->tx_mr = VAPI->reg_mr(v->rail[0].pd, v->tx, n * VB_RX_SIZE,
                            IBV_ACCESS_LOCAL_WRITE);
    if (v->tx_mr == NULL)
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": registering %zu bytes of "
                    "notification send buffers on %s: %s", n * VB_RX_SIZE,
                    v->rail[0].name, strerror(errno));
    for (size_t i = 0; i < n; i++)
        v->tx_free[v->ntx_free++] = (int)(n - 1 - i);
    return XFER_OK;
}

void vb__notif_close(vb_t *v)
{
    if (v->tx_mr)
        VAPI->dereg_mr(v->tx_mr);
    v->tx_mr = NULL;
    free(v->tx);
    free(v->tx_free);
    v->tx = NULL;
    v->tx_free = NULL;
}

/* ---- slots --------------------------------------------------------------- */

vb_slot_t *vb__slot_new(vb_peer_t *p, const void *msg, size_t len)
{
    vb_slot_t *s = malloc(sizeof *s + XFER__NS_HDR_LEN + len);

    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof *s);
    if (len)
        memcpy(s->buf + XFER__NS_HDR_LEN, msg, len);
    s->len = len;
    s->txb = -1;
    if (p->st)
        p->st->next = s;
    else
        p->sh = s;
    p->st = s;
    p->nslots++;
    return s;
}

void vb__slot_free(vb_t *v, vb_slot_t *s)
{
    if (s->req)
        s->req->slot = NULL;
    if (s->txb >= 0)
        v->tx_free[v->ntx_free++] = s->txb;
    if (s->peer)
        vb__peer_put(s->peer);
    free(s);
}

static void slot_pop(vb_peer_t *p)
{
    vb_slot_t *s = p->sh;

    p->sh = s->next;
    if (p->sh == NULL)
        p->st = NULL;
    s->next = NULL;
    p->nslots--;
}

/* ---- sending ------------------------------------------------------------- */

/* The SEND of s on p's first QP (lock and olock held): 0, or an errno
 * when the QP refused it; EAGAIN when there is no room now. */
static int send_one(vb_t *v, vb_peer_t *p, vb_slot_t *s)
{
    vb_qp_t *qp = vb__qp_get(v, 0, p->slot[0]);
    size_t total = XFER__NS_HDR_LEN + s->len;
    struct ibv_sge sge;
    struct ibv_send_wr wr, *bad = NULL;
    uint32_t idx;
    int err;

    if (qp == NULL || vb__sq_room(&qp->sq) == 0)
        return EAGAIN;
    memset(&wr, 0, sizeof wr);
    /* The fence holds it behind READs posted before it (a READ's data is
     * not yet read when a later SEND could run); after WRITEs RC order
     * alone is enough. */
    wr.send_flags = IBV_SEND_SIGNALED | IBV_SEND_FENCE;
    if (total <= v->rail[0].max_inline) {
        sge.addr = (uintptr_t)s->buf;
        sge.lkey = 0;
        wr.send_flags |= IBV_SEND_INLINE;
    } else {
        if (v->ntx_free == 0)
            return ENOBUFS;
        s->txb = v->tx_free[--v->ntx_free];
        memcpy(v->tx + (size_t)s->txb * VB_RX_SIZE, s->buf, total);
        sge.addr = (uintptr_t)(v->tx + (size_t)s->txb * VB_RX_SIZE);
        sge.lkey = v->tx_mr->lkey;
    }
    sge.length = (uint32_t)total;
    idx = vb__sq_push(&qp->sq, VB_WR_NOTIF, s, 1);
    wr.wr_id = vb__wrid(VB_WR_NOTIF, (unsigned)p->slot[0], qp->gen, idx);
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND;
    if ((err = VAPI->post_send(qp->qp, &wr, &bad)) != 0) {
        vb__sq_unpush(&qp->sq);
        if (s->txb >= 0) {
            v->tx_free[v->ntx_free++] = s->txb;
            s->txb = -1;
        }
        return err;
    }
    return 0;
}

/* The send buffers are the instance's: a peer that found none waits in
 * turn, and is pumped when one comes back (vb__notif_sent), whoever's
 * notification freed it. */
static void txw_add(vb_t *v, vb_peer_t *p)
{
    xfer__dlist_append(&v->txwait, &p->txwlink);
}

static void txw_del(vb_t *v, vb_peer_t *p)
{
    xfer__dlist_remove(&v->txwait, &p->txwlink);
}

/* Buffers came back: the peers waiting for one, in turn, while there
 * are any (lock held, no olock). */
static void txw_wake(vb_t *v)
{
    while (v->ntx_free > 0 && !xfer__dlist_empty(&v->txwait)) {
        vb_peer_t *p = XFER__DLIST_ENTRY(xfer__dlist_head(&v->txwait),
                                         vb_peer_t, txwlink);

        txw_del(v, p);
        pthread_mutex_lock(&p->olock);
        vb__notif_pump(v, p);
        pthread_mutex_unlock(&p->olock);
        if (xfer__dlist_has(&v->txwait, &p->txwlink))
            break; /* it took the last and wants more: its turn again */
    }
}

void vb__notif_pump(vb_t *v, vb_peer_t *p)
{
    vb_slot_t *s;

    while ((s = p->sh) != NULL) {
        int err;

        if (s->len == (size_t)-1) { /* its transfer failed */
            slot_pop(p);
            vb__slot_free(v, s);
            continue;
        }
        if (atomic_load(&p->dead) || p->cstate != VB_CONN_READY)
            break;
        /* After the data of its own request and every one posted before
         * it: all on the first QP ahead of it, or landed elsewhere. */
        if (!vb__req_covered(v, p, s->ticket))
            break;
        if (!xfer__ns_send_can(&p->ns)) {
            /* The channel brings the token and the credits back; if it
             * is down, ask at the next progress (chan_lock is above
             * ours). */
            if (!p->ns.have_token || !atomic_load(&p->ctl.chan_connected))
                xfer__hwctl_want_ask(&v->ctl, &p->ctl);
            break;
        }
        xfer__ns_hdr_fill(&p->ns, s->buf, s->len);
        if ((err = send_one(v, p, s)) != 0) {
            /* Numbered but not sent: take the number back, so the
             * target's sequence has no hole. */
            p->ns.sent--;
            if (err == ENOBUFS) {
                txw_add(v, p);
            } else if (err != EAGAIN) {
                VLOG(v, XFER_LOG_WARN, VB_NAME ": a notification to agent "
                     "'%s' was refused by the queue pair (%s); its "
                     "connection is reset", p->name, strerror(err));
                /* The NIC stops; conn_fail needs olock free, so the sweep
                 * (verbs.c) does it. */
                vb__qp_error(v, p->slot[0], 0);
                p->broken = true;
                atomic_store(&v->sweep_due, true);
            }
            break;
        }
        slot_pop(p);
        s->posted_ms = xfer__now_ms();
        atomic_fetch_add(&v->notifs_flying, 1);
        s->peer = p;
        atomic_fetch_add(&p->refs, 1);
        atomic_fetch_add(&v->notifs_sent, 1);
        /* Its request (s->req) ends when the SEND completes: then the
         * notification is in the target's receive buffer, and a SEND
         * lost with the connection fails the request rather than
         * vanishing behind an XFER_OK. */
    }
}

void vb__notif_sent(vb_t *v, void *owner, int err)
{
    vb_slot_t *s = owner;

    if (s == NULL)
        return;
    atomic_fetch_sub(&v->notifs_flying, 1);
    if (err != 0) {
        /* Its number was handed out and never taken: the target is told
         * before the next connection carries another (vb__conn_ask), or
         * it would hold every later one waiting for it.  Its request,
         * still in flight, fails with the connection. */
        if (s->peer != NULL) {
            vb_peer_t *p = s->peer;
            uint64_t seq;

            memcpy(&seq, s->buf + 24, 8); /* nsess.h: the header's */
            seq = le64toh(seq);
            if (!p->skip_due || seq < p->skip_from)
                p->skip_from = seq;
            p->skip_due = true;
        }
    } else if (s->req != NULL) {
        vb_req_t *q = s->req;

        s->req = NULL;
        vb__req_notif_done(v, q);
    }
    vb__slot_free(v, s);
    if (!xfer__dlist_empty(&v->txwait))
        txw_wake(v);
}

xfer_status_t vb__notif_send(vb_t *v, vb_peer_t *p, const void *msg,
                             size_t len)
{
    vb_slot_t *s;
    xfer_status_t st = XFER_OK;

    if (atomic_load(&p->dead))
        return vb__peer_gone(v, p);
    xfer__hwctl_start(&v->ctl, &p->ctl);
    pthread_mutex_lock(&v->lock);
    vb__conn_ensure(v, p);
    pthread_mutex_lock(&p->olock);
    if (atomic_load(&p->dead)) {
        st = vb__peer_gone(v, p);
    } else if (p->cstate == VB_CONN_NONE) {
        st = VERR(v, p->cst != XFER_OK ? p->cst : XFER_ERR_REMOTE_DISCONNECT,
                  "%s", p->cwhy[0] ? p->cwhy : VB_NAME ": no connection");
    } else if (p->nslots >= v->cfg.notif_queue) {
        st = VERR(v, XFER_ERR_BUSY, VB_NAME ": %zu notifications already "
                  "wait for agent '%s' to take earlier ones (notif_queue); "
                  "try again later", p->nslots, p->name);
    } else if ((s = vb__slot_new(p, msg, len)) == NULL) {
        st = VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    } else {
        /* After the data of every request posted before it. */
        p->used = ++v->tick;
        s->ticket = p->next_ticket++;
        vb__notif_pump(v, p);
    }
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&v->lock);
    return st;
}

void vb__notif_drop(vb_t *v, vb_peer_t *p)
{
    txw_del(v, p);
    while (p->sh != NULL) {
        vb_slot_t *s = p->sh;

        slot_pop(p);
        vb__slot_free(v, s);
    }
}

/* ---- receiving (target) ------------------------------------------------------ */

int vb__notif_repost(vb_t *v, vb_tconn_t *tc, unsigned i)
{
    vb_qp_t *qp = vb__qp_get(v, 0, tc->slot[0]);
    struct ibv_sge sge = {
        .addr = (uintptr_t)(tc->rx + (size_t)i * VB_RX_SIZE),
        .length = VB_RX_SIZE,
        .lkey = tc->rx_mr->lkey,
    };
    struct ibv_recv_wr wr = {.sg_list = &sge, .num_sge = 1}, *bad = NULL;

    if (qp == NULL)
        return EINVAL;
    wr.wr_id = vb__wrid(VB_WR_RECV, (unsigned)tc->slot[0], qp->gen, i);
    return VAPI->post_recv(qp->qp, &wr, &bad);
}

xfer_status_t vb__tconn_rx_open(vb_t *v, vb_tconn_t *tc)
{
    size_t n = v->cfg.notif_window;
    void *mem = NULL;
    int err;

    if (posix_memalign(&mem, 4096, n * VB_RX_SIZE) != 0)
        return XFER_ERR_NOMEM;
    tc->rx = mem;
    tc->nrx = (unsigned)n;
    tc->rx_mr = VAPI->reg_mr(v->rail[0].pd, tc->rx, n * VB_RX_SIZE,
                             IBV_ACCESS_LOCAL_WRITE);
    if (tc->rx_mr == NULL)
        return XFER_ERR_NOMEM;
    for (unsigned i = 0; i < tc->nrx; i++)
        if ((err = vb__notif_repost(v, tc, i)) != 0)
            return XFER_ERR_BACKEND;
    return XFER_OK;
}

void vb__tconn_rx_close(vb_t *v, vb_tconn_t *tc)
{
    (void)v;
    if (tc->rx_mr)
        VAPI->dereg_mr(tc->rx_mr);
    tc->rx_mr = NULL;
    free(tc->rx);
    tc->rx = NULL;
}

void vb__notif_recv(vb_t *v, vb_tconn_t *tc, unsigned i, size_t len)
{
    const unsigned char *b;
    int err;

    if (i >= tc->nrx)
        return;
    b = tc->rx + (size_t)i * VB_RX_SIZE;
    /* nsess checks the header and names the sender from its session,
     * never from the message; it copies what it holds. */
    if (len >= XFER__NS_HDR_LEN)
        xfer__ns_recv_from(&v->ns, tc->name, b, XFER__NS_HDR_LEN,
                           b + XFER__NS_HDR_LEN, len - XFER__NS_HDR_LEN);
    else
        xfer__ns_recv_from(&v->ns, tc->name, b, len, NULL, 0);
    tc->used = ++v->tick;
    if ((err = vb__notif_repost(v, tc, i)) != 0) {
        VLOG(v, XFER_LOG_WARN, VB_NAME ": reposting a receive buffer for "
             "agent '%s': %s; its queue pair is dropped", tc->name,
             strerror(err));
        vb__tconn_drop(v, tc);
    }
}
