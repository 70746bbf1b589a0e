/* peer.c - remote agents of the ucx plugin: their worker addresses, one UCP
 * endpoint per local worker (made lazily, rebuilt after an error), death. */
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

/* Recursive: see olock in ucx.h. */
static void olock_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;

    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
}

xfer_status_t ucx__peer_add(ucx_t *u, const char *name, uint64_t epoch,
                            const void *info, size_t len, ucx_peer_t **out)
{
    ucx_peer_t *p = calloc(1, sizeof *p);
    const void *ci;
    size_t cl;
    xfer_status_t st;

    if (p == NULL)
        return UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
    p->u = u;
    atomic_init(&p->refs, 1);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->epoch = epoch;
    p->ns.window = u->cfg.notif_window;
    olock_init(&p->olock);
    if ((st = ucx__info_parse(u, name, info, len, p, &ci, &cl)) != XFER_OK)
        goto fail;
    st = xfer__hwctl_peer_add(&u->ctl, &p->ctl, p, p->name, epoch, ci, cl);
    if (st != XFER_OK)
        goto fail;
    *out = p;
    return XFER_OK;
fail:
    ucx__peer_put(p);
    return st;
}

void ucx__peer_put(ucx_peer_t *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    for (unsigned i = 0; i < p->nrw; i++)
        free(p->waddr[i]);
    pthread_mutex_destroy(&p->olock);
    free(p);
}

/* UCP calls this from a worker's progress (its lock held) when an
 * endpoint failed: the peer died, a link broke, or a bad access. */
static void ep_error(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    ucx_ep_t *e = arg;
    ucx_peer_t *p = e->peer;
    char why[XFER_NAME_MAX + 100];

    if (e->ep != ep)
        return; /* an endpoint already replaced */
    snprintf(why, sizeof why, "UCX failed the endpoint to agent '%s': %s",
             p->name, ucs_status_string(status));
    ULOG(p->u, XFER_LOG_INFO, "%s", why);
    ucx__ep_fail(p->u, p, e->wi, ucx__status(status), why);
}

xfer_status_t ucx__peer_gone(ucx_t *u, const ucx_peer_t *p)
{
    return UERR(u, p->dead_st, "ucx: agent '%s' is gone: %s", p->name,
                p->dead_why);
}

ucx_ep_t *ucx__ep_get(ucx_t *u, ucx_peer_t *p, unsigned wi,
                      xfer_status_t *st, char *why, size_t size)
{
    ucx_ep_t *e = &p->ep[wi];
    ucp_ep_params_t ep = {0};
    ucs_status_t s;

    if (e->ep != NULL)
        return e;
    if (atomic_load(&p->dead)) {
        *st = p->dead_st;
        snprintf(why, size, "ucx: agent '%s' is gone: %s", p->name,
                 p->dead_why);
        return NULL;
    }
    if (atomic_load(&p->unheard)) {
        /* Its answer (c_credit) lets the next post make the endpoint; its
         * control connection ends within timeout_ms if it cannot come. */
        *st = XFER_ERR_TIMEOUT;
        snprintf(why, size, "ucx: agent '%s' has not answered since a "
                 "transfer to it timed out or its endpoint failed; no new "
                 "endpoint until it does", p->name);
        return NULL;
    }
    e->peer = p;
    e->wi = wi;
    /* Worker i of ours talks to worker i mod n of theirs, so that with
     * as many workers on both sides each pair has a line of its own. */
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = (const ucp_address_t *)p->waddr[wi % p->nrw];
    ep.err_mode = u->peer_mode ? UCP_ERR_HANDLING_MODE_PEER
                               : UCP_ERR_HANDLING_MODE_NONE;
    ep.err_handler.cb = ep_error;
    ep.err_handler.arg = e;
    s = ucp_ep_create(u->w[wi].w, &ep, &e->ep);
    if (s != UCS_OK) {
        e->ep = NULL;
        *st = s == UCS_ERR_UNREACHABLE ? XFER_ERR_REMOTE_DISCONNECT
                                       : XFER_ERR_BACKEND;
        snprintf(why, size, "ucx: cannot make an endpoint to agent '%s': "
                 "%s (no transport of this instance reaches its workers%s)",
                 p->name, ucs_status_string(s),
                 u->peer_mode ? "; error_mode=peer leaves out transports "
                                "that cannot detect a dead peer" : "");
        return NULL;
    }
    e->gen++;
    atomic_fetch_add(&u->eps_created, 1);
    return e;
}

void ucx__ep_fail(ucx_t *u, ucx_peer_t *p, unsigned wi, xfer_status_t st,
                  const char *why)
{
    ucx_ep_t *e = &p->ep[wi];
    ucp_request_param_t prm = {0};
    ucp_ep_h ep = e->ep;
    void *r;

    if (ep == NULL)
        return;
    e->err_gen = e->gen;
    e->err = st;
    snprintf(e->why, sizeof e->why, "%s", why);
    e->ep = NULL;
    atomic_fetch_add(&u->eps_failed, 1);
    /* A timeout, or UCX failing the endpoint (a send that met
     * EHOSTUNREACH, its keep-alive), may be a cut link: hear from the
     * peer (a token request, which its process answers) before the next
     * endpoint is made.  A dead peer is refused before this is looked
     * at. */
    if ((st == XFER_ERR_TIMEOUT || st == XFER_ERR_REMOTE_DISCONNECT) &&
        !atomic_exchange(&p->unheard, true))
        xfer__hwctl_want_ask(&u->ctl, &p->ctl);
    /* Force: every operation still on it ends now with an error, which
     * is what frees its requests and their buffers.  Without peer error
     * handling UCP does not allow that: a flushing close may never end,
     * and UCP keeps what it holds until the worker goes. */
    if (u->peer_mode) {
        prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        prm.flags = UCP_EP_CLOSE_FLAG_FORCE;
    }
    r = ucp_ep_close_nbx(ep, &prm);
    if (UCS_PTR_IS_PTR(r))
        ucp_request_free(r);
}

void ucx__peer_kill(ucx_t *u, ucx_peer_t *p, xfer_status_t st,
                    const char *why)
{
    bool was = false;

    /* The first reason wins; dead_* are written before dead is set. */
    pthread_mutex_lock(&p->olock);
    if (p->dead_st == XFER_OK) {
        p->dead_st = st;
        snprintf(p->dead_why, sizeof p->dead_why, "%s", why);
    } else {
        was = true;
    }
    pthread_mutex_unlock(&p->olock);
    if (was)
        return;
    atomic_store(&p->dead, true);
    ULOG(u, XFER_LOG_INFO, "agent '%s' is gone: %s", p->name, why);
    for (unsigned i = 0; i < u->nw; i++) {
        ucx_worker_t *w = &u->w[i];

        pthread_mutex_lock(&w->lock);
        ucx__ep_fail(u, p, i, st, why);
        ucx__req_fail_peer(u, w, p);
        pthread_mutex_lock(&p->olock);
        ucx__notif_drop(p);
        pthread_mutex_unlock(&p->olock);
        pthread_mutex_unlock(&w->lock);
    }
}

void ucx__peer_remove(ucx_t *u, ucx_peer_t *p)
{
    char why[XFER_NAME_MAX + 40];

    snprintf(why, sizeof why, "agent '%s' was removed", p->name);
    ucx__peer_kill(u, p, XFER_ERR_REMOTE_DISCONNECT, why);
    xfer__hwctl_peer_remove(&u->ctl, &p->ctl);
    ucx__peer_put(p);
}

xfer_status_t ucx__peer_connect(ucx_t *u, ucx_peer_t *p)
{
    unsigned wi = ucx__thread_worker(u);
    char why[XFER_NAME_MAX + 200];
    xfer_status_t st;

    if (atomic_load(&p->dead))
        return ucx__peer_gone(u, p);
    if ((st = xfer__hwctl_peer_connect(&u->ctl, &p->ctl)) != XFER_OK)
        return st;
    pthread_mutex_lock(&u->w[wi].lock);
    if (ucx__ep_get(u, p, wi, &st, why, sizeof why) != NULL)
        st = XFER_OK;
    pthread_mutex_unlock(&u->w[wi].lock);
    return st == XFER_OK ? st : UERR(u, st, "%s", why);
}
