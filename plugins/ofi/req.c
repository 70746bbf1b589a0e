/* req.c - transfers of the ofi plugin: one fi_writemsg or fi_readmsg per
 * run of descriptors, writes delivery-complete, the request done when the
 * CQ has counted every operation. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/ofi/ofi.h"

/* -FI_EAGAIN at a post: read the CQ (what frees the provider's queue)
 * and try again this many times before leaving the rest to progress. */
#define EAGAIN_TRIES 4
/* Operations of one request issued per progress call, as one batch. */
#define PROGRESS_OPS 256

/* ---- creation: the operations, worked out once ------------------------ */

/* Descriptors i+1.. that continue descriptor i on both sides, in the
 * same registrations, travel as one operation (up to the provider's
 * largest message). */
static size_t run_len(const xfer_be_seg_t *segs, size_t nseg, size_t i,
                      size_t max, size_t *len)
{
    const xfer_be_seg_t *sg = &segs[i];
    size_t n = 1;

    *len = sg->len;
    while (i + n < nseg) {
        const xfer_be_seg_t *nx = &segs[i + n];

        if (nx->lmem != sg->lmem || nx->rmem != sg->rmem ||
            nx->laddr != sg->laddr + *len || nx->raddr != sg->raddr + *len ||
            nx->len > max - *len)
            break;
        *len += nx->len;
        n++;
    }
    return n;
}

/* Fill ops (NULL: only count them); the number of operations. */
static size_t ops_build(ofi_t *o, ofi_req_t *q, const xfer_be_seg_t *segs,
                        size_t nseg, ofi_op_t *ops)
{
    size_t max = o->max_msg ? o->max_msg : SIZE_MAX, k = 0, len, n;

    for (size_t i = 0; i < nseg; i += n) {
        const ofi_mem_t *lm = segs[i].lmem;
        const ofi_rmem_t *rm = segs[i].rmem;

        n = run_len(segs, nseg, i, max, &len);
        /* A descriptor longer than the provider's largest message goes
         * in pieces. */
        for (size_t off = 0; off < len || (len == 0 && off == 0);) {
            size_t piece = len - off < max ? len - off : max;

            if (ops != NULL) {
                ofi_op_t *op = &ops[k];
                uint64_t ra = segs[i].raddr + off;

                op->ctx.kind = OFI_OP_RMA;
                op->ctx.obj = q;
                op->lmem = lm;
                op->laddr = (void *)(segs[i].laddr + off);
                op->len = piece;
                op->desc = lm->desc;
                op->raddr = o->mr_mode & FI_MR_VIRT_ADDR ? ra : ra - rm->base;
                op->key = rm->key;
                op->seg = i;
            }
            k++;
            off += piece;
            if (piece == 0)
                break;
        }
    }
    return k;
}

xfer_status_t ofi__req_create(ofi_t *o, xfer_op_t op, ofi_peer_t *p,
                              const xfer_be_seg_t *segs, size_t nseg,
                              ofi_req_t **out)
{
    ofi_req_t *q = calloc(1, sizeof *q);
    char why[XFER_NAME_MAX + 200];

    if (q == NULL)
        return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
    q->nops = ops_build(o, q, segs, nseg, NULL);
    if (q->nops && !(q->ops = calloc(q->nops, sizeof *q->ops))) {
        free(q);
        return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
    }
    ops_build(o, q, segs, nseg, q->ops);
    q->o = o;
    q->peer = p;
    atomic_fetch_add(&p->refs, 1);
    q->op = op;
    q->nseg = nseg;
    q->st = XFER_OK;
    q->done = true;
    /* The peer's address now, off the post path; what fails here is
     * said by the post. */
    pthread_mutex_lock(&o->ep_lock);
    (void)ofi__peer_addr(o, p, why, sizeof why);
    pthread_mutex_unlock(&o->ep_lock);
    *out = q;
    return XFER_OK;
}

static void free_req(ofi_req_t *q)
{
    ofi__peer_put(q->peer);
    free(q->ops);
    free(q);
}

/* ---- the end of a request --------------------------------------------- */

static const char *op_name(const ofi_req_t *q)
{
    return q->op == XFER_OP_WRITE ? "WRITE" : "READ";
}

/* Whether q can leave the instance's list (and, released, be freed). */
static void maybe_unlist(ofi_t *o, ofi_req_t *q)
{
    if (!q->done || q->pending > 0)
        return;
    xfer__dlist_remove(&o->reqs, &q->ilink);
    if (q->released)
        free_req(q);
}

/* q ends with st (ep_lock held): XFER_OK when every operation completed,
 * else the error (q->err says why).  Its notification may go now, or
 * never (a failed transfer's would announce data that did not arrive),
 * and what waited behind it goes.  Operations the provider still holds
 * are only counted from now on; the caller then calls maybe_unlist,
 * once (it may free q). */
static void req_finish(ofi_t *o, ofi_req_t *q, xfer_status_t st)
{
    ofi_peer_t *p = q->peer;

    if (q->done)
        return;
    q->done = true;
    q->st = st;
    xfer__dlist_remove(&o->backlog, &q->blink);
    pthread_mutex_lock(&p->olock);
    xfer__dlist_remove(&p->order, &q->plink);
    if (q->slot != NULL) {
        ofi_slot_t *sl = q->slot;

        q->slot = NULL;
        sl->req = NULL;
        sl->ready = true;
        if (st != XFER_OK)
            sl->len = (size_t)-1;
    }
    ofi__notif_pump(o, p);
    pthread_mutex_unlock(&p->olock);
}

/* Every operation of q completed (ep_lock held): its data is visible.
 * A notification it carries may go now, and q ends only once that is
 * handed to the provider (ofi__req_notif_gone), so that its delivery
 * never waits for this side to poll after XFER_OK (DESIGN.md, semantics
 * 2): a token or credits still on their way keep q in progress, within
 * its deadline and the peer's life like any other. */
static void req_landed(ofi_t *o, ofi_req_t *q)
{
    ofi_peer_t *p = q->peer;

    if (q->slot != NULL) {
        pthread_mutex_lock(&p->olock);
        if (q->slot != NULL) {
            q->slot->ready = true;
            ofi__notif_pump(o, p);
        }
        pthread_mutex_unlock(&p->olock);
        if (q->slot != NULL || q->done)
            return;
    }
    req_finish(o, q, XFER_OK);
}

void ofi__req_notif_gone(ofi_t *o, ofi_req_t *q)
{
    q->slot = NULL;
    if (q->done)
        return;
    q->done = true;
    q->st = XFER_OK;
    xfer__dlist_remove(&o->backlog, &q->blink);
    xfer__dlist_remove(&q->peer->order, &q->plink);
    maybe_unlist(o, q);
}

static void req_fail(ofi_t *o, ofi_req_t *q, xfer_status_t st,
                     const char *fmt_why)
{
    if (q->done)
        return;
    snprintf(q->err, sizeof q->err, "%s", fmt_why);
    req_finish(o, q, st);
}

/* A connection-oriented provider (ofi_rxm) learns that a connection
 * broke (a target refusing a bad key closes it) only when its own
 * progress reads the event, some milliseconds later; operations issued
 * on it meanwhile fail with -FI_ENOTCONN without ever having left.  They
 * go again, on the new connection the provider then makes, a few times
 * and within the request's deadline: an RMA operation issued twice
 * moves the same bytes to the same place. */
#define AGAIN_MAX 8u

/* The errors a broken connection (or a target that broke it on a bad
 * key) ends operations with. */
static bool conn_error(int err)
{
    switch (-err) {
    case FI_ENOTCONN:
    case FI_ECONNRESET:
    case FI_ECONNREFUSED:
    case FI_ECONNABORTED:
    case FI_ECANCELED:
    case FI_EACCES:
    case FI_EIO:
        return true;
    default:
        return false;
    }
}
#define AGAIN_DELAY_MS 20u

void ofi__req_done(ofi_t *o, ofi_op_t *op, int err, const char *why)
{
    ofi_req_t *q = op->ctx.obj;
    ofi_peer_t *p = q->peer;

    if (q->pending > 0)
        q->pending--;
    if (err == -FI_ENOTCONN && !q->done && !atomic_load(&p->dead) &&
        q->retries < AGAIN_MAX) {
        q->retries++;
        op->again = true;
        q->nagain++;
        q->again_ms = xfer__now_ms() + AGAIN_DELAY_MS;
        xfer__dlist_append(&o->backlog, &q->blink);
    } else if (err != 0 && !q->done) {
        char msg[sizeof q->err];

        if (atomic_load(&p->dead))
            snprintf(msg, sizeof msg, "ofi: %s to agent '%s' failed: it is "
                     "gone: %s", op_name(q), p->name, p->dead_why);
        else
            snprintf(msg, sizeof msg, "ofi: %s to agent '%s' failed: %s%s",
                     op_name(q), p->name, why ? why : fi_strerror(-err),
                     conn_error(err) ? " (the connection to it broke: it "
                     "died, or it refused a key or a right its registration "
                     "does not grant)" : "");
        req_fail(o, q, atomic_load(&p->dead) ? p->dead_st
                                             : ofi__status(err), msg);
    } else if (!q->done && q->pending == 0 && q->issued == q->nops &&
               q->nagain == 0) {
        req_landed(o, q);
    }
    maybe_unlist(o, q);
}

/* ---- issuing ------------------------------------------------------------ */

/* Hand q's operations to the provider from q->issued on (ep_lock held).
 * -FI_EAGAIN: the CQ is read and the call tried again a few times, then
 * the rest waits on the backlog for progress; any other error fails q
 * (what was issued is still counted as it completes). */
static void issue(ofi_t *o, ofi_req_t *q, size_t limit)
{
    ofi_peer_t *p = q->peer;
    int tries = 0;
    bool eagained = false;
    size_t again = 0, done = 0;

    if (q->nagain > 0 && xfer__now_ms() < q->again_ms)
        return; /* the provider has not yet seen the connection go */
    while (!q->done && (q->issued < q->nops || q->nagain > 0)) {
        ofi_op_t *op;
        bool redo = q->nagain > 0;

        if (done == limit) {
            /* The rest is issued by progress (post_ops). */
            xfer__dlist_append(&o->backlog, &q->blink);
            return;
        }

        if (redo) {
            /* From the start each time: a CQ read below may have marked
             * an earlier one. */
            for (again = 0; again < q->nops && !q->ops[again].again;
                 again++)
                ;
            if (again == q->nops) {
                q->nagain = 0;
                continue;
            }
            op = &q->ops[again];
        } else {
            op = &q->ops[q->issued];
        }
        struct iovec iov = {.iov_base = op->laddr, .iov_len = op->len};
        struct fi_rma_iov rio = {
            .addr = op->raddr, .len = op->len, .key = op->key};
        struct fi_msg_rma m = {
            .msg_iov = &iov, .desc = &op->desc, .iov_count = 1,
            .addr = p->fa, .rma_iov = &rio, .rma_iov_count = 1,
            .context = &op->ctx, .data = 0};
        /* The batch closes with the last operation this call issues: no
         * lock is let go with a batch open (but after -FI_EAGAIN past
         * its retries, when the provider's queue is full anyway). */
        bool after = done + 1 < limit &&
                     (redo ? q->nagain > 1 || q->issued < q->nops
                           : q->issued + 1 < q->nops);
        /* After -FI_EAGAIN no batch is opened again: the lock may be
         * let go before it could be closed. */
        uint64_t flags = FI_COMPLETION |
                         (o->cfg.more && after && tries == 0 && !eagained
                              ? FI_MORE : 0);
        ssize_t r;

        if (q->op == XFER_OP_WRITE)
            r = fi_writemsg(o->ep, &m, flags | (op->len <= o->dc_max
                                                ? FI_DELIVERY_COMPLETE
                                                : 0));
        else
            r = fi_readmsg(o->ep, &m, flags);
        if (r == 0) {
            if (redo) {
                op->again = false;
                q->nagain--;
            } else {
                q->issued++;
            }
            q->pending++;
            done++;
            tries = 0;
            atomic_fetch_add(&o->ops_posted, 1);
            continue;
        }
        if (r == -FI_EAGAIN) {
            eagained = true;
            atomic_fetch_add(&o->eagain, 1);
            if (tries++ < EAGAIN_TRIES) {
                ofi__cq_drain(o, 256);
                continue;
            }
            xfer__dlist_append(&o->backlog, &q->blink);
            return;
        }
        {
            char msg[sizeof q->err];

            snprintf(msg, sizeof msg, "ofi: %s descriptor %zu to agent "
                     "'%s': %s", op_name(q), op->seg, p->name,
                     fi_strerror((int)-r));
            req_fail(o, q, ofi__status((int)r), msg);
        }
        maybe_unlist(o, q);
        return;
    }
    xfer__dlist_remove(&o->backlog, &q->blink);
    if (!q->done && q->pending == 0 && q->issued == q->nops &&
        q->nagain == 0)
        req_landed(o, q);
    maybe_unlist(o, q);
}

xfer_status_t ofi__req_post(ofi_t *o, ofi_req_t *q, const void *notif,
                            size_t len)
{
    ofi_peer_t *p = q->peer;
    xfer_status_t st;

    if (atomic_load(&p->dead))
        return q->st = ofi__peer_gone(o, p);
    xfer__hwctl_start(&o->ctl, &p->ctl);
    pthread_mutex_lock(&o->ep_lock);
    if (q->pending > 0) {
        pthread_mutex_unlock(&o->ep_lock);
        return OERR(o, XFER_ERR_BUSY, "ofi: the provider still holds "
                    "operations of this request's last post (it timed out "
                    "or failed part way); try again later");
    }
    q->err[0] = '\0';
    if ((st = ofi__peer_addr(o, p, q->err, sizeof q->err)) != XFER_OK) {
        q->st = st;
        pthread_mutex_unlock(&o->ep_lock);
        return OERR(o, st, "%s", q->err);
    }
    q->st = XFER_IN_PROG;
    q->done = false;
    q->issued = 0;
    q->retries = 0;
    q->nagain = 0;
    for (size_t i = 0; i < q->nops; i++)
        q->ops[i].again = false;
    o->last_post_ms = xfer__now_ms();
    q->deadline_ms = o->last_post_ms + o->cfg.timeout_ms;
    xfer__dlist_append(&o->reqs, &q->ilink);
    pthread_mutex_lock(&p->olock);
    q->ticket = p->next_ticket++;
    xfer__dlist_append(&p->order, &q->plink);
    /* A zero-length notification is one too (NULL is none).  It goes
     * after the data of every request posted to p before this one. */
    if (notif != NULL) {
        if ((q->slot = ofi__slot_new(p, notif, len)) != NULL) {
            q->slot->ticket = q->ticket;
            q->slot->req = q;
        }
    }
    pthread_mutex_unlock(&p->olock);
    if (notif != NULL && q->slot == NULL) {
        req_fail(o, q, XFER_ERR_NOMEM, "ofi: out of memory");
        maybe_unlist(o, q);
    } else
        issue(o, q, o->cfg.post_ops);
    st = q->st;
    if (st < 0)
        OERR(o, st, "%s", q->err);
    pthread_mutex_unlock(&o->ep_lock);
    return st;
}

xfer_status_t ofi__req_check(ofi_t *o, ofi_req_t *q)
{
    char err[sizeof q->err];
    xfer_status_t st;

    pthread_mutex_lock(&o->ep_lock);
    /* The caller asks because it waits for q: its completion may be in
     * the CQ already, and reading it here saves the hand-over from the
     * progress thread (a few microseconds an operation). */
    if (q->st == XFER_IN_PROG)
        ofi__cq_drain(o, 64);
    st = q->st;
    if (st < 0)
        memcpy(err, q->err, sizeof err);
    pthread_mutex_unlock(&o->ep_lock);
    if (st < 0)
        return OERR(o, st, "%s", err[0] ? err : "ofi: transfer failed");
    return st;
}

void ofi__req_release(ofi_t *o, ofi_req_t *q)
{
    bool now;

    pthread_mutex_lock(&o->ep_lock);
    q->released = true;
    /* Never in progress here (the core's rule), but the provider may
     * still hold operations of a post that failed or timed out: their
     * completions free it. */
    now = q->pending == 0;
    if (now) {
        xfer__dlist_remove(&o->reqs, &q->ilink);
        xfer__dlist_remove(&o->backlog, &q->blink);
        pthread_mutex_lock(&q->peer->olock);
        xfer__dlist_remove(&q->peer->order, &q->plink);
        pthread_mutex_unlock(&q->peer->olock);
    }
    pthread_mutex_unlock(&o->ep_lock);
    if (now)
        free_req(q);
}

int ofi__req_progress(ofi_t *o, uint64_t now)
{
    xfer__dlink_t *k, *next;
    int n = 0;

    /* What met -FI_EAGAIN, in post order. */
    for (k = xfer__dlist_head(&o->backlog); k; k = next) {
        ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, blink);
        size_t before = q->issued;

        next = xfer__dlist_next(k);
        if (q->nagain > 0 && now < q->again_ms)
            continue;
        issue(o, q, PROGRESS_OPS);
        n += (int)(q->issued - before);
        if (xfer__dlist_has(&o->backlog, k) && q->nagain == 0)
            break; /* still no room: the rest would not find any */
    }
    /* Deadlines, oldest first: the list is in post order. */
    for (k = xfer__dlist_head(&o->reqs); k; k = next) {
        ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, ilink);
        char msg[sizeof q->err];

        if (now < q->deadline_ms)
            break;
        next = xfer__dlist_next(k);
        if (q->done)
            continue;
        snprintf(msg, sizeof msg, "ofi: %s to agent '%s' did not complete "
                 "within timeout_ms (%llu ms)", op_name(q), q->peer->name,
                 (unsigned long long)o->cfg.timeout_ms);
        req_fail(o, q, XFER_ERR_TIMEOUT, msg);
        maybe_unlist(o, q);
        n++;
    }
    return n;
}

void ofi__req_fail_peer(ofi_t *o, ofi_peer_t *p)
{
    xfer__dlink_t *k, *next;

    for (k = xfer__dlist_head(&o->reqs); k; k = next) {
        ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, ilink);
        char msg[sizeof q->err];

        next = xfer__dlist_next(k);
        if (q->peer != p || q->done)
            continue;
        snprintf(msg, sizeof msg, "ofi: %s to agent '%s' failed: it is "
                 "gone: %s", op_name(q), p->name, p->dead_why);
        req_fail(o, q, p->dead_st, msg);
        maybe_unlist(o, q);
    }
}

bool ofi__req_uses(ofi_t *o, const void *m)
{
    for (xfer__dlink_t *k = xfer__dlist_head(&o->reqs); k;
         k = xfer__dlist_next(k)) {
        const ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, ilink);

        if (q->pending == 0)
            continue;
        for (size_t i = 0; i < q->nops; i++)
            if (q->ops[i].lmem == m)
                return true;
    }
    return false;
}

void ofi__req_free_all(ofi_t *o)
{
    xfer__dlink_t *k;

    /* First the backlog (never a released request: those are done),
     * so that no link is touched after its request is freed. */
    while ((k = xfer__dlist_head(&o->backlog)) != NULL)
        xfer__dlist_remove(&o->backlog, k);
    while ((k = xfer__dlist_head(&o->reqs)) != NULL) {
        ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, ilink);

        xfer__dlist_remove(&o->reqs, k);
        if (q->released)
            free_req(q);
    }
}
