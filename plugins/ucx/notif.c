/* notif.c - notifications of the ucx plugin: sent as active messages only
 * after their transfer's flush, in post order, within the target's credits;
 * received by the session table (nsess.h) the control channel fills. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdlib.h>
#include <string.h>

#include "plugins/ucx/ucx.h"

/* ---- sender ----------------------------------------------------------- */

ucx_slot_t *ucx__slot_new(ucx_peer_t *p, const void *msg, size_t len)
{
    ucx_slot_t *s = malloc(sizeof *s + len);

    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof *s);
    memcpy(s->msg, msg, len);
    s->len = len;
    s->next = NULL;
    if (p->st)
        p->st->next = s;
    else
        p->sh = s;
    p->st = s;
    p->nslots++;
    return s;
}

void ucx__slot_free(ucx_slot_t *s)
{
    if (s->peer)
        ucx__peer_put(s->peer);
    free(s);
}

static void slot_pop(ucx_peer_t *p)
{
    ucx_slot_t *s = p->sh;

    p->sh = s->next;
    if (p->sh == NULL)
        p->st = NULL;
    p->nslots--;
}

/* A notification whose send failed (its endpoint failed or timed out)
 * already used its sequence number: the target holds every later one
 * until that number comes, so it goes again, first, with the same
 * header (the target drops a copy that did arrive).  The next pump sends
 * it; a token ask makes one happen (olock held). */
static bool slot_again(ucx_t *u, ucx_peer_t *p, ucx_slot_t *s)
{
    if (atomic_load(&p->dead))
        return false;
    s->numbered = true;
    s->peer = NULL; /* the queue's now: the sender's reference is put */
    s->next = p->sh;
    p->sh = s;
    if (p->st == NULL)
        p->st = s;
    p->nslots++;
    xfer__hwctl_want_ask(&u->ctl, &p->ctl);
    return true;
}

static void am_sent(void *request, ucs_status_t status, void *user_data)
{
    ucx_slot_t *s = user_data;
    ucx_peer_t *p = s->peer;
    bool again = false;

    ucp_request_free(request);
    if (status != UCS_OK) {
        pthread_mutex_lock(&p->olock);
        again = slot_again(p->u, p, s);
        pthread_mutex_unlock(&p->olock);
        ULOG(p->u, XFER_LOG_INFO, "a notification to agent '%s' %s: %s",
             p->name, again ? "goes again" : "is dropped (it is gone)",
             ucs_status_string(status));
        if (again) {
            /* p lives while not dead (the core's reference): not the
             * last one. */
            ucx__peer_put(p);
        } else {
            atomic_fetch_add(&p->u->notifs_dropped, 1);
        }
    }
    if (!again)
        ucx__slot_free(s);
}

void ucx__notif_pump(ucx_t *u, ucx_peer_t *p, unsigned wi)
{
    char ewhy[XFER_NAME_MAX + 200];
    xfer_status_t est;
    ucx_slot_t *s;

    /* Called again from a callback that UCP ran inside our own send
     * (olock is ours, recursively): the loop below looks at the queue
     * again after that send, so what the callback readied goes then. */
    if (p->pumping)
        return;
    p->pumping = true;
    while ((s = p->sh) != NULL && s->ready) {
        const ucx_req_t *oldest;
        ucp_request_param_t prm = {0};
        ucs_status_ptr_t r;
        ucx_ep_t *e;

        if (s->len == (size_t)-1) { /* its transfer failed */
            slot_pop(p);
            ucx__slot_free(s);
            continue;
        }
        if (atomic_load(&p->dead))
            break;
        /* After the data of every request posted before it. */
        oldest = XFER__DLIST_ENTRY(xfer__dlist_head(&p->order), ucx_req_t,
                                   plink);
        if (!s->numbered && oldest && oldest->ticket < s->ticket)
            break;
        if (!s->numbered && !xfer__ns_send_can(&p->ns)) {
            /* The channel brings the token and the credits back; if it
             * is down, ask at the next progress (chan_lock is above
             * ours). */
            if (!p->ns.have_token ||
                !atomic_load(&p->ctl.chan_connected))
                xfer__hwctl_want_ask(&u->ctl, &p->ctl);
            break;
        }
        if ((e = ucx__ep_get(u, p, wi, &est, ewhy, sizeof ewhy)) == NULL)
            break; /* again at the next pump; a dead peer drops them */
        slot_pop(p);
        if (!s->numbered)
            xfer__ns_hdr_fill(&p->ns, s->hdr, s->len);
        s->peer = p;
        atomic_fetch_add(&p->refs, 1);
        /* Eager: one protocol, one lane, so what the target holds is
         * whole when it arrives; the header and payload stay in the slot
         * until UCP is done with them. */
        prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK |
                           UCP_OP_ATTR_FIELD_USER_DATA |
                           UCP_OP_ATTR_FIELD_FLAGS;
        prm.flags = UCP_AM_SEND_FLAG_EAGER;
        prm.cb.send = am_sent;
        prm.user_data = s;
        r = ucp_am_send_nbx(e->ep, UCX_AM_NOTIF, s->hdr, XFER__NS_HDR_LEN,
                            s->msg, s->len, &prm);
        atomic_fetch_add(&u->notifs_sent, 1);
        if (UCS_PTR_IS_ERR(r)) {
            ULOG(u, XFER_LOG_INFO, "a notification to agent '%s' goes "
                 "again: %s", p->name, ucs_status_string(UCS_PTR_STATUS(r)));
            s->peer = NULL;
            ucx__peer_put(p); /* not the last: the caller holds one */
            if (!slot_again(u, p, s)) {
                atomic_fetch_add(&u->notifs_dropped, 1);
                ucx__slot_free(s);
            }
            break; /* not again now: after a token ask's round trip */
        } else if (r == NULL) {
            ucx__slot_free(s);
        }
    }
    p->pumping = false;
}

void ucx__notif_drop(ucx_peer_t *p)
{
    ucx_slot_t *s;

    for (xfer__dlink_t *k = xfer__dlist_head(&p->order); k;
         k = xfer__dlist_next(k))
        XFER__DLIST_ENTRY(k, ucx_req_t, plink)->slot = NULL;
    while ((s = p->sh) != NULL) {
        slot_pop(p);
        ucx__slot_free(s);
    }
}

xfer_status_t ucx__notif_send(ucx_t *u, ucx_peer_t *p, const void *msg,
                              size_t len)
{
    char why[XFER_NAME_MAX + 200];
    unsigned wi;
    ucx_slot_t *s;
    xfer_status_t st = XFER_OK;

    if (atomic_load(&p->dead))
        return ucx__peer_gone(u, p);
    xfer__hwctl_start(&u->ctl, &p->ctl);
    wi = ucx__thread_worker(u);
    pthread_mutex_lock(&u->w[wi].lock);
    pthread_mutex_lock(&p->olock);
    /* Again under olock: a peer_kill that ran since the look above has
     * already dropped the queue, and would never see this one. */
    if (atomic_load(&p->dead)) {
        st = ucx__peer_gone(u, p);
    } else if (!ucx__ep_get(u, p, wi, &st, why, sizeof why)) {
        /* As a post would: the peer cannot be reached now (its death
         * may not have come through the control channel yet). */
        st = UERR(u, st, "%s", why);
    } else if (p->nslots >= u->cfg.notif_queue) {
        st = UERR(u, XFER_ERR_BUSY, "ucx: %zu notifications already wait "
                  "for agent '%s' to take earlier ones (notif_queue); try "
                  "again later", p->nslots, p->name);
    } else if ((s = ucx__slot_new(p, msg, len)) == NULL) {
        st = UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
    } else {
        s->ticket = p->next_ticket++;
        s->ready = true;
        ucx__notif_pump(u, p, wi);
    }
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&u->w[wi].lock);
    return st;
}

/* ---- target ------------------------------------------------------------ */

/* A notification's active message: UCX's own checks here, the session's
 * (header, token, window, order) in xfer__ns_recv.  Any worker's thread,
 * under that worker's lock. */
static ucs_status_t am_recv(void *arg, const void *header, size_t hlen,
                            void *data, size_t len,
                            const ucp_am_recv_param_t *param)
{
    ucx_worker_t *w = arg;
    ucx_t *u = w->u;

    /* Rendezvous would hand a descriptor to fetch, not the payload: the
     * sender always asks for eager (docs/wire-ucx.md). */
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
        atomic_fetch_add(&u->ns.dropped, 1);
        ULOG(u, XFER_LOG_WARN, "dropped a notification of %zu bytes that "
             "came by rendezvous, not eager", len);
        return UCS_OK;
    }
    xfer__ns_recv(&u->ns, header, hlen, data, len);
    return UCS_OK;
}

xfer_status_t ucx__am_register(ucx_t *u, ucx_worker_t *w)
{
    ucp_am_handler_param_t hp = {0};
    ucs_status_t s;

    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID |
                    UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                    UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG;
    hp.id = UCX_AM_NOTIF;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    hp.cb = am_recv;
    hp.arg = w;
    if ((s = ucp_worker_set_am_recv_handler(w->w, &hp)) != UCS_OK)
        return UERR(u, XFER_ERR_BACKEND, "ucx: setting the notification "
                    "handler: %s", ucs_status_string(s));
    return XFER_OK;
}
