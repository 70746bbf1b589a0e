/* req.c - transfers of the verbs plugin: the plan (plan.h) worked out at
 * creation, chains of RDMA WRITE/READ work requests under each QP's cap
 * (sq.h), completions counted, a failed connection failing what was on it. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/verbs.h"

static const char *op_name(const vb_req_t *q)
{
    return q->op == XFER_OP_WRITE ? "WRITE" : "READ";
}

/* ---- creation: the work requests, worked out once ---------------------- */

/* The plan's ops, stably grouped by rail (each rail's chain keeps the
 * plan's order), and a work request for each. */
static xfer_status_t build(vb_t *v, vb_req_t *q, const xfer_be_seg_t *segs,
                           size_t nseg)
{
    vb_plan_seg_t *ps = nseg ? calloc(nseg, sizeof *ps) : NULL;
    vb_plan_cfg_t pc = {
        .nrails = q->peer->nrails,
        .stripe_min = v->cfg.stripe_min,
        .stripe_align = 4096,
        .max_len = 1u << 30,
    };
    vb_op_t *plan = NULL;
    size_t n, k;

    if (nseg && ps == NULL)
        return XFER_ERR_NOMEM;
    for (unsigned r = 0; r < pc.nrails; r++)
        if (v->rail[r].max_msg < pc.max_len)
            pc.max_len = v->rail[r].max_msg;
    for (size_t i = 0; i < nseg; i++) {
        const vb_mem_t *lm = segs[i].lmem;
        const vb_rmem_t *rm = segs[i].rmem;

        ps[i].laddr = segs[i].laddr;
        ps[i].raddr = segs[i].raddr;
        ps[i].len = segs[i].len;
        ps[i].lmem = lm;
        ps[i].rmem = rm;
        ps[i].lkey = lm->lkey;
        ps[i].rkey = rm->rkey;
    }
    n = vb__plan(&pc, ps, nseg, NULL, 0);
    if (n && ((plan = calloc(n, sizeof *plan)) == NULL ||
              (q->ops = calloc(n, sizeof *q->ops)) == NULL ||
              (q->wr = calloc(n, sizeof *q->wr)) == NULL ||
              (q->sge = calloc(n, sizeof *q->sge)) == NULL))
        goto nomem;
    vb__plan(&pc, ps, nseg, plan, n);
    q->nops = n;
    /* Grouped by rail. */
    k = 0;
    for (unsigned r = 0; r < VB_MAX_RAILS; r++) {
        q->rfirst[r] = k;
        for (size_t i = 0; i < n; i++)
            if (plan[i].rail == r)
                q->ops[k++] = plan[i];
        q->rcount[r] = k - q->rfirst[r];
    }
    for (size_t i = 0; i < n; i++) {
        const vb_op_t *op = &q->ops[i];
        struct ibv_send_wr *w = &q->wr[i];

        q->sge[i].addr = op->laddr;
        q->sge[i].length = op->len;
        q->sge[i].lkey = op->lkey;
        w->sg_list = &q->sge[i];
        w->num_sge = 1;
        w->opcode = q->op == XFER_OP_WRITE ? IBV_WR_RDMA_WRITE
                                           : IBV_WR_RDMA_READ;
        w->wr.rdma.remote_addr = op->raddr;
        w->wr.rdma.rkey = op->rkey;
    }
    /* The local registrations it uses, once each (deregistration looks). */
    if (nseg && (q->lmems = calloc(nseg, sizeof *q->lmems)) == NULL)
        goto nomem;
    for (size_t i = 0; i < nseg; i++) {
        bool seen = false;

        for (size_t j = 0; j < q->nlmems && !seen; j++)
            seen = q->lmems[j] == segs[i].lmem;
        if (!seen)
            q->lmems[q->nlmems++] = segs[i].lmem;
    }
    free(plan);
    free(ps);
    return XFER_OK;
nomem:
    free(plan);
    free(ps);
    return XFER_ERR_NOMEM;
}

static void free_req(vb_req_t *q)
{
    vb__peer_put(q->peer);
    free(q->ops);
    free(q->wr);
    free(q->sge);
    free(q->lmems);
    free(q);
}

xfer_status_t vb__req_create(vb_t *v, xfer_op_t op, vb_peer_t *p,
                             const xfer_be_seg_t *segs, size_t nseg,
                             vb_req_t **out)
{
    vb_req_t *q = calloc(1, sizeof *q);

    if (q == NULL)
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    q->v = v;
    q->peer = p;
    atomic_fetch_add(&p->refs, 1);
    q->op = op;
    q->nseg = nseg;
    q->st = XFER_OK;
    q->done = true;
    for (size_t i = 0; i < nseg; i++) {
        const vb_rmem_t *rm = segs[i].rmem;

        if (rm->peer != p || rm->nrails < p->nrails) {
            free_req(q);
            return VERR(v, XFER_ERR_INVALID, VB_NAME ": descriptor %zu: a "
                        "remote region of another agent", i);
        }
        if (op == XFER_OP_READ &&
            ((const vb_mem_t *)segs[i].lmem)->read_only) {
            free_req(q);
            return VERR(v, XFER_ERR_ACCESS, VB_NAME ": descriptor %zu: a "
                        "READ into memory registered read-only (it could "
                        "not be pinned for writing)", i);
        }
    }
    if (build(v, q, segs, nseg) != XFER_OK) {
        free_req(q);
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    }
    *out = q;
    return XFER_OK;
}

/* ---- lists (dlist.h) ------------------------------------------------------- */

/* The instance's requests posted and not finished (lock); a peer's
 * waiting for its connection or for room, in post order (lock); a peer's
 * in post order, what notifications wait behind (olock). */
static void list_add(vb_t *v, vb_req_t *q)
{
    xfer__dlist_append(&v->reqs, &q->ilink);
}

static void list_del(vb_t *v, vb_req_t *q)
{
    xfer__dlist_remove(&v->reqs, &q->ilink);
}

static void wait_add(vb_peer_t *p, vb_req_t *q)
{
    xfer__dlist_append(&p->waitq, &q->wlink);
}

static void wait_del(vb_peer_t *p, vb_req_t *q)
{
    xfer__dlist_remove(&p->waitq, &q->wlink);
}

static void order_add(vb_peer_t *p, vb_req_t *q)
{
    q->ticket = p->next_ticket++;
    xfer__dlist_append(&p->order, &q->plink);
}

static void order_del(vb_peer_t *p, vb_req_t *q)
{
    xfer__dlist_remove(&p->order, &q->plink);
}

/* ---- the end of a request ------------------------------------------------------ */

static bool all_issued(const vb_req_t *q)
{
    for (unsigned r = 0; r < VB_MAX_RAILS; r++)
        if (q->issued[r] < q->rcount[r])
            return false;
    return true;
}

static bool landed(const vb_req_t *q)
{
    return q->pending == 0 && all_issued(q);
}

bool vb__req_landed(const vb_req_t *q)
{
    return landed(q);
}

/* Whether q can leave the instance's list (and, released, be freed). */
static void maybe_unlist(vb_t *v, vb_req_t *q)
{
    if (!q->done || q->pending > 0)
        return;
    list_del(v, q);
    if (q->released)
        free_req(q);
}

/* q ends with st (lock held).  Its notification goes now if its data
 * landed, or never (a failed transfer's would announce data that did not
 * arrive); what waited behind it may go.  The caller calls maybe_unlist
 * once (it may free q). */
static void finish(vb_t *v, vb_req_t *q, xfer_status_t st)
{
    vb_peer_t *p = q->peer;

    if (q->done)
        return;
    q->done = true;
    q->st = st;
    wait_del(p, q);
    pthread_mutex_lock(&p->olock);
    order_del(p, q);
    if (q->slot != NULL) {
        vb_slot_t *sl = q->slot;

        q->slot = NULL;
        sl->req = NULL;
        if (st != XFER_OK)
            sl->len = (size_t)-1;
    }
    vb__notif_pump(v, p);
    pthread_mutex_unlock(&p->olock);
}

void vb__req_fail(vb_t *v, vb_req_t *q, xfer_status_t st, const char *why)
{
    if (q->done)
        return;
    if (strncmp(why, VB_NAME ":", sizeof VB_NAME) == 0)
        snprintf(q->err, sizeof q->err, "%s", why);
    else
        snprintf(q->err, sizeof q->err, VB_NAME ": %s to agent '%s' "
                 "failed: %s", op_name(q), q->peer->name, why);
    finish(v, q, st);
    maybe_unlist(v, q);
}

/* Every work request of q completed: its data is visible.  With a
 * notification it ends once that notification's SEND completed too
 * (vb__req_notif_done): it may go now. */
static void req_landed(vb_t *v, vb_req_t *q)
{
    vb_peer_t *p = q->peer;

    if (q->slot != NULL) {
        pthread_mutex_lock(&p->olock);
        vb__notif_pump(v, p);
        pthread_mutex_unlock(&p->olock);
        return;
    }
    finish(v, q, XFER_OK);
}

void vb__req_notif_done(vb_t *v, vb_req_t *q)
{
    q->slot = NULL;
    if (!q->done && landed(q))
        finish(v, q, XFER_OK);
    maybe_unlist(v, q);
}

void vb__req_done(vb_t *v, vb_req_t *q, unsigned rail, uint32_t nwr)
{
    vb_peer_t *p = q->peer;

    q->pending -= nwr <= q->pending ? nwr : q->pending;
    q->pend[rail] -= nwr <= q->pend[rail] ? nwr : q->pend[rail];
    if (!q->done && landed(q)) {
        req_landed(v, q);
    } else if (rail != 0 && p->sh != NULL) {
        /* Another rail's data landing may let a notification go. */
        pthread_mutex_lock(&p->olock);
        vb__notif_pump(v, p);
        pthread_mutex_unlock(&p->olock);
    }
    /* Room in the send queue: what waited for it (before q may go, with
     * its reference on p). */
    if (!xfer__dlist_empty(&p->waitq))
        vb__req_issue_peer(v, p);
    maybe_unlist(v, q);
}

bool vb__req_covered(vb_t *v, vb_peer_t *p, uint64_t t)
{
    (void)v;
    for (xfer__dlink_t *k = xfer__dlist_head(&p->order); k;
         k = xfer__dlist_next(k)) {
        const vb_req_t *q = VB_REQ(k, plink);

        if (q->ticket > t)
            break;
        if (q->issued[0] < q->rcount[0])
            return false;
        for (unsigned r = 1; r < VB_MAX_RAILS; r++)
            if (q->issued[r] < q->rcount[r] || q->pend[r] > 0)
                return false;
    }
    return true;
}

/* ---- issuing ------------------------------------------------------------------ */

/* Post q's work requests on every rail as far as the send queues have
 * room, in chains of at most chain_max whose last is signaled (lock
 * held).  true when all are posted; false when room ran out or q ended
 * (failed). */
static bool issue(vb_t *v, vb_req_t *q)
{
    vb_peer_t *p = q->peer;

    for (unsigned r = 0; r < p->nrails; r++) {
        vb_qp_t *qp = vb__qp_get(v, r, p->slot[r]);

        while (!q->done && q->issued[r] < q->rcount[r]) {
            uint32_t room = qp ? vb__sq_room(&qp->sq) : 0;
            size_t left = q->rcount[r] - q->issued[r];
            uint32_t k = (uint32_t)(left < v->cfg.chain_max ? left
                                                             : v->cfg.chain_max);
            struct ibv_send_wr *first, *bad = NULL;
            uint32_t idx;
            uint64_t id;
            int err;

            if (qp == NULL)
                return false;
            if (k > room)
                k = room;
            if (k == 0)
                return false;
            idx = vb__sq_push(&qp->sq, VB_WR_DATA, q, k);
            id = vb__wrid(VB_WR_DATA, (unsigned)p->slot[r], qp->gen, idx);
            first = &q->wr[q->rfirst[r] + q->issued[r]];
            for (uint32_t j = 0; j < k; j++) {
                struct ibv_send_wr *w = first + j;

                w->wr_id = id;
                w->next = j + 1 < k ? w + 1 : NULL;
                w->send_flags = j + 1 == k ? IBV_SEND_SIGNALED : 0;
                /* A short WRITE goes inline: the NIC takes the bytes now,
                 * no DMA read of them later. */
                if (q->op == XFER_OP_WRITE &&
                    w->sg_list->length <= v->rail[r].max_inline)
                    w->send_flags |= IBV_SEND_INLINE;
            }
            if ((err = VAPI->post_send(qp->qp, first, &bad)) != 0) {
                char why[240];

                if (bad == first)
                    vb__sq_unpush(&qp->sq);
                /* Part of a chain may be on the QP, unsignaled: nothing
                 * would ever tell when it is done, so the QP goes. */
                snprintf(why, sizeof why, "ibv_post_send on %s refused "
                         "descriptor %zu: %s", v->rail[r].name,
                         (bad && bad >= first && bad < first + k)
                             ? q->ops[q->rfirst[r] + q->issued[r] +
                                      (size_t)(bad - first)].seg
                             : q->ops[q->rfirst[r] + q->issued[r]].seg,
                         strerror(err));
                /* A refusal means the QP is broken (ibv_qp.state does
                 * not say so: only a completion would) or this side
                 * miscounted its room: either way the connection is
                 * remade, and q fails with the HCA's words. */
                if (bad != first && bad != NULL) {
                    q->pending += (size_t)(bad - first);
                    q->pend[r] += (size_t)(bad - first);
                }
                vb__req_fail(v, q, XFER_ERR_BACKEND, why);
                vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
                return false;
            }
            q->issued[r] += k;
            q->pending += k;
            q->pend[r] += k;
            atomic_fetch_add(&v->wrs_posted, k);
            atomic_fetch_add(&v->chains, 1);
        }
    }
    return !q->done;
}

int vb__req_issue_peer(vb_t *v, vb_peer_t *p)
{
    int n = 0;

    if (p->cstate != VB_CONN_READY)
        return 0;
    /* In post order, and none overtakes one that waits for room. */
    while (!xfer__dlist_empty(&p->waitq)) {
        vb_req_t *q = VB_REQ(xfer__dlist_head(&p->waitq), wlink);

        if (!issue(v, q)) {
            if (q->done) {
                wait_del(p, q);
                continue;
            }
            break;
        }
        wait_del(p, q);
        n++;
        if (landed(q))
            req_landed(v, q);
        maybe_unlist(v, q);
        if (p->cstate != VB_CONN_READY)
            break;
    }
    pthread_mutex_lock(&p->olock);
    vb__notif_pump(v, p);
    pthread_mutex_unlock(&p->olock);
    return n;
}

xfer_status_t vb__req_post(vb_t *v, vb_req_t *q, const void *notif,
                           size_t len)
{
    vb_peer_t *p = q->peer;
    xfer_status_t st;

    if (atomic_load(&p->dead))
        return q->st = vb__peer_gone(v, p);
    xfer__hwctl_start(&v->ctl, &p->ctl);
    pthread_mutex_lock(&v->lock);
    vb__conn_ensure(v, p);
    if (q->pending > 0) {
        pthread_mutex_unlock(&v->lock);
        return VERR(v, XFER_ERR_BUSY, VB_NAME ": the NIC still holds work "
                    "requests of this request's last post; try again later");
    }
    q->err[0] = '\0';
    q->st = XFER_IN_PROG;
    q->done = false;
    memset(q->issued, 0, sizeof q->issued);
    memset(q->pend, 0, sizeof q->pend);
    v->last_post_ms = xfer__now_ms();
    q->deadline_ms = v->last_post_ms + v->cfg.timeout_ms;
    p->used = ++v->tick;
    list_add(v, q);
    pthread_mutex_lock(&p->olock);
    order_add(p, q);
    /* A zero-length notification is one too (NULL is none). */
    if (notif != NULL && (q->slot = vb__slot_new(p, notif, len)) != NULL) {
        q->slot->ticket = q->ticket;
        q->slot->req = q;
    }
    pthread_mutex_unlock(&p->olock);
    if (atomic_load(&p->dead)) {
        vb__req_fail(v, q, p->dead_st, p->dead_why);
    } else if (notif != NULL && q->slot == NULL) {
        vb__req_fail(v, q, XFER_ERR_NOMEM, "out of memory");
    } else if (p->cstate == VB_CONN_NONE) {
        /* The ask for a connection failed (no room for a QP ...). */
        vb__req_fail(v, q, p->cst != XFER_OK ? p->cst
                                             : XFER_ERR_REMOTE_DISCONNECT,
                     p->cwhy[0] ? p->cwhy : "no connection");
    } else {
        wait_add(p, q);
        vb__req_issue_peer(v, p);
    }
    st = q->st;
    if (st < 0)
        VERR(v, st, "%s", q->err);
    pthread_mutex_unlock(&v->lock);
    return st;
}

xfer_status_t vb__req_check(vb_t *v, vb_req_t *q)
{
    char err[sizeof q->err];
    xfer_status_t st;

    pthread_mutex_lock(&v->lock);
    /* Its completion may be in the CQ already: reading it here saves the
     * hand-over from the progress thread. */
    if (q->st == XFER_IN_PROG)
        vb__cq_drain(v, 64);
    st = q->st;
    if (st < 0)
        memcpy(err, q->err, sizeof err);
    pthread_mutex_unlock(&v->lock);
    if (st < 0)
        return VERR(v, st, "%s", err[0] ? err : VB_NAME ": transfer failed");
    return st;
}

void vb__req_release(vb_t *v, vb_req_t *q)
{
    bool now;

    pthread_mutex_lock(&v->lock);
    q->released = true;
    /* Never in progress here (the core's rule); anything the NIC still
     * held was taken back when its connection failed. */
    now = q->pending == 0;
    if (now) {
        list_del(v, q);
        wait_del(q->peer, q);
        pthread_mutex_lock(&q->peer->olock);
        order_del(q->peer, q);
        pthread_mutex_unlock(&q->peer->olock);
    }
    pthread_mutex_unlock(&v->lock);
    if (now)
        free_req(q);
}

int vb__req_progress(vb_t *v, uint64_t now)
{
    int n = 0;

restart:
    for (xfer__dlink_t *k = xfer__dlist_head(&v->reqs); k;
         k = xfer__dlist_next(k)) {
        vb_req_t *q = VB_REQ(k, ilink);
        char msg[300];
        vb_peer_t *p = q->peer;

        if (now < q->deadline_ms)
            break;
        if (q->done)
            continue;
        snprintf(msg, sizeof msg, "did not complete within timeout_ms "
                 "(%llu ms)%s", (unsigned long long)v->cfg.timeout_ms,
                 p->cstate == VB_CONN_ASKING ? ": the peer never answered "
                 "the queue-pair handshake" : "");
        n++;
        /* A SEND already on the QP counts as in flight too: delivered
         * late, it would announce a transfer reported failed. */
        if (q->pending > 0 || p->cstate == VB_CONN_ASKING ||
            (q->slot != NULL && q->slot->posted_ms != 0)) {
            /* The NIC may still touch its memory: the connection goes
             * first (error state), then q fails with the rest of it. */
            vb__req_fail(v, q, XFER_ERR_TIMEOUT, msg);
            vb__conn_fail(v, p, XFER_ERR_TIMEOUT, "a transfer before it "
                          "timed out, and its connection was reset");
        } else {
            vb__req_fail(v, q, XFER_ERR_TIMEOUT, msg);
        }
        goto restart;
    }
    return n;
}

void vb__req_fail_peer(vb_t *v, vb_peer_t *p, xfer_status_t st,
                       const char *why)
{
    /* Work on its QPs is taken back first: the owners' counts go to zero
     * so nothing waits for completions that will not come. */
    for (unsigned r = 0; r < VB_MAX_RAILS; r++) {
        vb_qp_t *qp = vb__qp_get(v, r, p->slot[r]);

        if (qp == NULL)
            continue;
        while (qp->sq.count > 0) {
            vb_sq_ent_t e;

            vb__sq_complete(&qp->sq, qp->sq.head, &e);
            if (e.kind == VB_WR_DATA && e.owner != NULL) {
                vb_req_t *q = e.owner;

                q->pending -= e.nwr <= q->pending ? e.nwr : q->pending;
                q->pend[r] -= e.nwr <= q->pend[r] ? e.nwr : q->pend[r];
            } else if (e.kind == VB_WR_NOTIF) {
                vb__notif_sent(v, e.owner, -1);
            }
        }
    }
restart:
    for (xfer__dlink_t *k = xfer__dlist_head(&v->reqs); k;
         k = xfer__dlist_next(k)) {
        vb_req_t *q = VB_REQ(k, ilink);

        if (q->peer != p)
            continue;
        if (!q->done) {
            vb__req_fail(v, q, st, why);
            goto restart;
        }
        if (q->pending == 0) {
            maybe_unlist(v, q);
            goto restart;
        }
    }
}

void vb__req_free_all(vb_t *v)
{
    while (!xfer__dlist_empty(&v->reqs)) {
        vb_req_t *q = VB_REQ(xfer__dlist_head(&v->reqs), ilink);

        list_del(v, q);
        if (q->released)
            free_req(q);
    }
}
