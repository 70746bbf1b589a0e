/* req.c - transfers of the ucx plugin: a put or get per segment, then one
 * endpoint flush per post, so XFER_OK means the data is visible. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/ucx/ucx.h"

/* A request names the peer the application means to reach: make the
 * endpoint of the creating thread's worker and unpack the keys its
 * descriptors use now, off the post path (and before anything can go
 * wrong in the worker meanwhile).  What fails here is said by the post. */
static void prepare(ucx_t *u, ucx_req_t *q)
{
    char why[XFER_NAME_MAX + 200];
    unsigned wi = ucx__thread_worker(u);
    ucx_worker_t *w = &u->w[wi];
    xfer_status_t st;
    ucx_ep_t *e;

    pthread_mutex_lock(&w->lock);
    if ((e = ucx__ep_get(u, q->peer, wi, &st, why, sizeof why)) != NULL)
        for (size_t i = 0; i < q->nseg; i++)
            if (!ucx__rkey(u, q->segs[i].rmem, wi, e))
                break;
    pthread_mutex_unlock(&w->lock);
}

xfer_status_t ucx__req_create(ucx_t *u, xfer_op_t op, ucx_peer_t *p,
                              const xfer_be_seg_t *segs, size_t nseg,
                              ucx_req_t **out)
{
    ucx_req_t *q = calloc(1, sizeof *q);

    if (q == NULL)
        return UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
    q->u = u;
    q->peer = p;
    atomic_fetch_add(&p->refs, 1);
    q->op = op;
    q->segs = segs;
    q->nseg = nseg;
    q->st = XFER_OK;
    prepare(u, q);
    *out = q;
    return XFER_OK;
}

static void free_req(ucx_req_t *q)
{
    ucx__peer_put(q->peer);
    free(q);
}

/* The sentence of a request that ended with UCP status s: the endpoint's
 * failure when that is what ended it, else UCP's word. */
static void req_error(ucx_req_t *q, ucs_status_t s)
{
    ucx_peer_t *p = q->peer;
    ucx_ep_t *e = &p->ep[q->wi];
    const char *op = q->op == XFER_OP_WRITE ? "WRITE" : "READ";

    if (q->timed_out) {
        q->st = XFER_ERR_TIMEOUT;
        snprintf(q->err, sizeof q->err, "ucx: %s to agent '%s' did not "
                 "complete within timeout_ms (%llu ms)", op, p->name,
                 (unsigned long long)q->u->cfg.timeout_ms);
    } else if (atomic_load(&p->dead)) {
        q->st = p->dead_st;
        snprintf(q->err, sizeof q->err, "ucx: %s to agent '%s' failed: it "
                 "is gone: %s", op, p->name, p->dead_why);
    } else if (e->err_gen == q->gen && e->err != XFER_OK) {
        q->st = e->err;
        snprintf(q->err, sizeof q->err, "ucx: %s to agent '%s' failed: %s",
                 op, p->name, e->why);
    } else {
        q->st = ucx__status(s);
        snprintf(q->err, sizeof q->err, "ucx: %s to agent '%s' failed: %s",
                 op, p->name, ucs_status_string(s));
    }
}

/* The flush of q ended (w->lock held): its data is visible, or it
 * failed.  Its notification may go now, and what waited behind it. */
static void req_finish(ucx_t *u, ucx_req_t *q, ucs_status_t s)
{
    ucx_peer_t *p = q->peer;

    if (s == UCS_OK && q->st == XFER_IN_PROG)
        q->st = XFER_OK;
    else if (q->st == XFER_IN_PROG)
        req_error(q, s);
    pthread_mutex_lock(&p->olock);
    xfer__dlist_remove(&p->order, &q->plink);
    if (q->slot != NULL) {
        ucx_slot_t *sl = q->slot;

        q->slot = NULL;
        sl->req = NULL;
        /* A failed transfer's notification is never sent: it would
         * announce data that did not arrive.  It leaves the queue when
         * it reaches the head. */
        sl->ready = true;
        if (q->st != XFER_OK)
            sl->len = (size_t)-1;
    }
    ucx__notif_pump(u, p, q->wi);
    pthread_mutex_unlock(&p->olock);
}

static void flush_done(void *request, ucs_status_t s, void *user_data)
{
    ucx_req_t *q = user_data;
    ucx_worker_t *w = &q->u->w[q->wi];

    ucp_request_free(request);
    q->flushing = false;
    xfer__dlist_remove(&w->inflight, &q->wlink);
    if (q->st == XFER_IN_PROG || xfer__dlist_has(&q->peer->order, &q->plink))
        req_finish(q->u, q, s);
    if (q->released) {
        xfer__dlist_remove(&w->held, &q->hlink);
        free_req(q);
    }
}

/* Segments i+1.. that continue segment i on both sides, in the same
 * registrations: they travel as one put or get.  UCX 1.13 emulates RMA
 * on user memory with active messages (docs/performance.md) and the
 * target answers each one: 1024 adjacent 4 KiB puts are 1024 messages
 * and 1024 answers, one 4 MiB put is as many as full fragments need
 * (512 of posix's 8 KiB), and over real RMA one operation instead of
 * 1024 saves their per-operation cost too. */
static size_t run_len(const ucx_req_t *q, size_t i, size_t *len)
{
    const xfer_be_seg_t *sg = &q->segs[i];
    size_t n = 1;

    *len = sg->len;
    while (i + n < q->nseg) {
        const xfer_be_seg_t *nx = &q->segs[i + n];

        if (nx->lmem != sg->lmem || nx->rmem != sg->rmem ||
            nx->laddr != sg->laddr + *len || nx->raddr != sg->raddr + *len)
            break;
        *len += nx->len;
        n++;
    }
    return n;
}

/* Issue the segments on endpoint e; the first error UCP gives, or OK. */
static ucs_status_t issue(ucx_t *u, ucx_req_t *q, ucx_ep_t *e, unsigned wi,
                          xfer_status_t *st)
{
    ucp_request_param_t prm = {0};
    size_t len, n;

    for (size_t i = 0; i < q->nseg; i += n) {
        const xfer_be_seg_t *sg = &q->segs[i];
        const ucx_mem_t *lm = sg->lmem;
        ucp_rkey_h rk = ucx__rkey(u, sg->rmem, wi, e);
        ucs_status_ptr_t r;

        n = run_len(q, i, &len);

        if (rk == NULL) {
            /* A key the peer's metadata carried that UCX cannot read:
             * refused, as a NIC refuses a bad rkey. */
            *st = XFER_ERR_ACCESS;
            snprintf(q->err, sizeof q->err, "ucx: descriptor %zu: the "
                     "packed remote key from agent '%s' does not unpack",
                     i, q->peer->name);
            return UCS_ERR_INVALID_PARAM;
        }
        /* The registration's handle spares UCP a lookup per segment;
         * no callback: the flush below is what completes the post. */
        prm.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
        prm.memh = lm->memh;
        if (q->op == XFER_OP_WRITE)
            r = ucp_put_nbx(e->ep, (void *)sg->laddr, len, sg->raddr, rk,
                            &prm);
        else
            r = ucp_get_nbx(e->ep, (void *)sg->laddr, len, sg->raddr, rk,
                            &prm);
        if (UCS_PTR_IS_ERR(r)) {
            *st = ucx__status(UCS_PTR_STATUS(r));
            snprintf(q->err, sizeof q->err, "ucx: descriptor %zu to agent "
                     "'%s': %s", i, q->peer->name,
                     ucs_status_string(UCS_PTR_STATUS(r)));
            return UCS_PTR_STATUS(r);
        }
        if (r != NULL)
            ucp_request_free(r); /* UCP frees it when the op is done */
    }
    return UCS_OK;
}

xfer_status_t ucx__req_post(ucx_t *u, ucx_req_t *q, const void *notif,
                            size_t len)
{
    ucx_peer_t *p = q->peer;
    unsigned wi;
    ucx_worker_t *w;
    ucx_ep_t *e;
    ucp_request_param_t fp = {0};
    ucs_status_ptr_t r;
    xfer_status_t st = XFER_OK;
    ucs_status_t s;

    if (atomic_load(&p->dead))
        return q->st = ucx__peer_gone(u, p);
    if (q->flushing)
        return UERR(u, XFER_ERR_BUSY, "ucx: UCP still holds this request's "
                    "last transfer (it timed out or failed part way); try "
                    "again later");
    xfer__hwctl_start(&u->ctl, &p->ctl);
    /* Unheard (ucx__ep_get refuses): the token request that would clear
     * it, and its answer, go only through the channel's progress.  An
     * agent without a progress thread that only posts again must drive
     * it here, or the peer would stay unheard for good.  Before the
     * worker lock: the answer's callback takes chan_lock -> worker lock
     * -> olock. */
    if (atomic_load(&p->unheard))
        (void)xfer__hwctl_progress(&u->ctl, false);
    wi = ucx__thread_worker(u);
    w = &u->w[wi];
    pthread_mutex_lock(&w->lock);
    q->wi = wi;
    q->timed_out = false;
    q->err[0] = '\0';
    if (!(e = ucx__ep_get(u, p, wi, &st, q->err, sizeof q->err))) {
        q->st = st;
        pthread_mutex_unlock(&w->lock);
        return UERR(u, st, "%s", q->err);
    }
    q->gen = e->gen;
    q->st = XFER_IN_PROG;
    s = issue(u, q, e, wi, &st);
    pthread_mutex_lock(&p->olock);
    q->ticket = p->next_ticket++;
    xfer__dlist_append(&p->order, &q->plink);
    /* A zero-length notification is one too (NULL is none). */
    if (notif != NULL && s == UCS_OK) {
        if (!(q->slot = ucx__slot_new(p, notif, len))) {
            st = XFER_ERR_NOMEM;
        } else {
            /* The post it belongs to: the pump sends it only after the
             * data of every request posted before this one, as on the
             * stream plugins (a later worker's flush may end first). */
            q->slot->ticket = q->ticket;
            q->slot->req = q;
        }
    }
    pthread_mutex_unlock(&p->olock);
    if (st != XFER_OK)
        q->st = st; /* what was issued is flushed, then it fails */
    fp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    fp.cb.send = flush_done;
    fp.user_data = q;
    r = ucp_ep_flush_nbx(e->ep, &fp);
    if (r == NULL || UCS_PTR_IS_ERR(r)) {
        req_finish(u, q, UCS_PTR_STATUS(r));
    } else {
        q->flushing = true;
        w->last_post_ms = xfer__now_ms();
        q->deadline_ms = w->last_post_ms + u->cfg.timeout_ms;
        xfer__dlist_append(&w->inflight, &q->wlink);
    }
    st = q->st;
    if (st < 0 && q->err[0])
        UERR(u, st, "%s", q->err);
    pthread_mutex_unlock(&w->lock);
    return st;
}

xfer_status_t ucx__req_check(ucx_t *u, ucx_req_t *q)
{
    ucx_worker_t *w = &u->w[q->wi];
    char err[sizeof q->err];
    xfer_status_t st;

    pthread_mutex_lock(&w->lock);
    st = q->st;
    if (st < 0)
        memcpy(err, q->err, sizeof err);
    pthread_mutex_unlock(&w->lock);
    if (st < 0)
        return UERR(u, st, "%s", err[0] ? err : "ucx: transfer failed");
    return st;
}

void ucx__req_release(ucx_t *u, ucx_req_t *q)
{
    ucx_worker_t *w = &u->w[q->wi];
    bool later;

    pthread_mutex_lock(&w->lock);
    /* UCP still holds the flush (error_mode=none after a timeout): its
     * callback frees the request. */
    later = q->flushing;
    q->released = true;
    if (later)
        xfer__dlist_append(&w->held, &q->hlink);
    else {
        pthread_mutex_lock(&q->peer->olock);
        xfer__dlist_remove(&q->peer->order, &q->plink);
        pthread_mutex_unlock(&q->peer->olock);
    }
    pthread_mutex_unlock(&w->lock);
    if (!later)
        free_req(q);
}

/* Requests are in post order, so the head has the earliest deadline.
 * A request past it means its endpoint is stuck (a peer stopped, a link
 * cut): close the endpoint, which ends every operation on it, and the
 * next post builds a new one.  Without peer error handling UCP cannot
 * close it that way: the request fails now, and UCP keeps it. */
int ucx__req_timeouts(ucx_t *u, ucx_worker_t *w, uint64_t now)
{
    int n = 0;
    ucx_req_t *q;

    while ((q = XFER__DLIST_ENTRY(xfer__dlist_head(&w->inflight), ucx_req_t,
                                  wlink)) != NULL &&
           now >= q->deadline_ms) {
        char why[200];

        snprintf(why, sizeof why, "no completion within timeout_ms "
                 "(%llu ms)", (unsigned long long)u->cfg.timeout_ms);
        bool fail_ep = q->peer->ep[w->idx].gen == q->gen;

        q->timed_out = true;
        xfer__dlist_remove(&w->inflight, &q->wlink);
        if (u->peer_mode && fail_ep && q->st == XFER_IN_PROG) {
            /* Forcing the endpoint closed ends q's flush (flush_done) and
             * every other operation on it.  In progress, q cannot be
             * released meanwhile, so it is still ours below. */
            ucx__ep_fail(u, q->peer, w->idx, XFER_ERR_TIMEOUT, why);
            fail_ep = false;
        }
        /* Not ended by that (error_mode=none, an endpoint that already
         * failed or was replaced, a flush UCP keeps, a post that failed
         * part way and may be released): end it here, so that it answers
         * and no longer holds back the peer's notifications; flush_done,
         * if it ever comes, only frees it. */
        if (q->st == XFER_IN_PROG ||
            xfer__dlist_has(&q->peer->order, &q->plink))
            req_finish(u, q, UCS_ERR_TIMED_OUT);
        /* Last: closing may call flush_done, which frees a released q. */
        if (fail_ep)
            ucx__ep_fail(u, q->peer, w->idx, XFER_ERR_TIMEOUT, why);
        n++;
    }
    return n;
}

/* After ucp_worker_destroy (no callback can come any more): free the
 * requests that waited for UCP to let go of their flush. */
void ucx__req_free_held(ucx_worker_t *w)
{
    xfer__dlink_t *k;

    while ((k = xfer__dlist_head(&w->held)) != NULL) {
        ucx_req_t *q = XFER__DLIST_ENTRY(k, ucx_req_t, hlink);

        xfer__dlist_remove(&w->held, k);
        free_req(q);
    }
}

/* p is dead: end its requests on w now (w->lock held).  With peer error
 * handling the endpoint's forced close already ended them or will, with
 * an error; without it UCP may never call back, and a dead peer's
 * transfer must still end.  A late flush_done then only frees. */
void ucx__req_fail_peer(ucx_t *u, ucx_worker_t *w, ucx_peer_t *p)
{
    xfer__dlink_t *k, *next;

    for (k = xfer__dlist_head(&w->inflight); k; k = next) {
        ucx_req_t *q = XFER__DLIST_ENTRY(k, ucx_req_t, wlink);

        next = xfer__dlist_next(k);
        if (q->peer != p)
            continue;
        xfer__dlist_remove(&w->inflight, k);
        req_finish(u, q, UCS_ERR_CANCELED);
    }
}
