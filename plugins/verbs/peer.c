/* peer.c - remote agents of the verbs plugin: their rails from the
 * connection info, and their connection: one QP per rail, asked for at the
 * first post, failed and remade whole. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/verbs.h"

xfer_status_t vb__peer_add(vb_t *v, const char *name, uint64_t epoch,
                           const void *info, size_t len, vb_peer_t **out)
{
    vb_peer_t *p = calloc(1, sizeof *p);
    const void *ci;
    size_t cl;
    xfer_status_t st;

    if (p == NULL)
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    p->v = v;
    atomic_init(&p->refs, 1);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->epoch = epoch;
    p->ns.window = v->cfg.notif_window;
    for (unsigned r = 0; r < VB_MAX_RAILS; r++)
        p->slot[r] = -1;
    pthread_mutex_init(&p->olock, NULL);
    if ((st = vb__info_parse(v, name, info, len, p, &ci, &cl)) != XFER_OK)
        goto fail;
    st = xfer__hwctl_peer_add(&v->ctl, &p->ctl, p, p->name, epoch, ci, cl);
    if (st != XFER_OK)
        goto fail;
    *out = p;
    return XFER_OK;
fail:
    vb__peer_put(p);
    return st;
}

void vb__peer_put(vb_peer_t *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&p->olock);
    free(p);
}

xfer_status_t vb__peer_gone(vb_t *v, const vb_peer_t *p)
{
    return VERR(v, p->dead_st, VB_NAME ": agent '%s' is gone: %s", p->name,
                p->dead_why);
}

bool vb__peer_mark_dead(vb_peer_t *p, xfer_status_t st, const char *why)
{
    /* The first reason wins: dead_* are written under lock (the only
     * place this is called) before dead is set, and read only after. */
    if (atomic_load(&p->dead))
        return false;
    p->dead_st = st;
    snprintf(p->dead_why, sizeof p->dead_why, "%s", why);
    atomic_store(&p->dead, true);
    return true;
}

/* Free p's QPs (lock held): into the error state first, so the NIC has
 * stopped touching memory before any request is told it failed. */
static void conn_close(vb_t *v, vb_peer_t *p, xfer_status_t st,
                       const char *why)
{
    p->broken = false; /* of these QPs, which go now */
    for (unsigned r = 0; r < VB_MAX_RAILS; r++)
        if (p->slot[r] >= 0)
            vb__qp_error(v, p->slot[r], r);
    vb__req_fail_peer(v, p, st, why);
    for (unsigned r = 0; r < VB_MAX_RAILS; r++) {
        if (p->slot[r] < 0)
            continue;
        vb__qp_free(v, p->slot[r], r);
        p->slot[r] = -1;
    }
}

void vb__conn_fail(vb_t *v, vb_peer_t *p, xfer_status_t st,
                   const char *why)
{
    if (p->cstate == VB_CONN_NONE && p->slot[0] < 0) {
        vb__req_fail_peer(v, p, st, why);
        return;
    }
    VLOG(v, XFER_LOG_INFO, VB_NAME ": the connection to agent '%s' failed "
         "(%s); the next transfer makes a new one", p->name, why);
    if (p->cstate == VB_CONN_ASKING)
        p->ask_fails++;
    vb__cstate(v, p, VB_CONN_NONE);
    p->cst = st;
    if (p->sh != NULL)
        atomic_store(&v->sweep_due, true); /* they want a new one */
    snprintf(p->cwhy, sizeof p->cwhy, "%s", why);
    atomic_fetch_add(&v->rebuilt, 1);
    conn_close(v, p, st, why);
}

void vb__conn_drop_idle(vb_t *v, vb_peer_t *p)
{
    vb__cstate(v, p, VB_CONN_NONE);
    conn_close(v, p, XFER_ERR_REMOTE_DISCONNECT, "its idle connection was "
               "closed to make room (max_qps)");
}

void vb__cstate(vb_t *v, vb_peer_t *p, int cs)
{
    if (p->cstate == VB_CONN_ASKING && cs != VB_CONN_ASKING)
        atomic_fetch_sub(&v->asking, 1);
    else if (p->cstate != VB_CONN_ASKING && cs == VB_CONN_ASKING)
        atomic_fetch_add(&v->asking, 1);
    p->cstate = cs;
}

void vb__conn_ensure(vb_t *v, vb_peer_t *p)
{
    /* chan_lock comes before lock, so lock is let go for the ask.  A
     * connection the ask made can meanwhile go (closed while idle to
     * make room): asked once more then; an ask that failed itself (its
     * generation did not move) is not repeated: cwhy says why. */
    for (int i = 0; i < 2 && p->cstate == VB_CONN_NONE &&
                    !atomic_load(&p->dead); i++) {
        uint32_t gen = p->gen;

        pthread_mutex_unlock(&v->lock);
        pthread_mutex_lock(&v->ctl.chan_lock);
        vb__conn_ask(v, p);
        pthread_mutex_unlock(&v->ctl.chan_lock);
        pthread_mutex_lock(&v->lock);
        if (p->gen == gen)
            break;
    }
}

void vb__conn_need(vb_t *v, vb_peer_t *p)
{
    pthread_mutex_lock(&v->lock);
    vb__conn_ensure(v, p);
    pthread_mutex_unlock(&v->lock);
}

void vb__peer_kill(vb_t *v, vb_peer_t *p, xfer_status_t st,
                   const char *why)
{
    pthread_mutex_lock(&v->lock);
    if (!vb__peer_mark_dead(p, st, why)) {
        pthread_mutex_unlock(&v->lock);
        return;
    }
    VLOG(v, XFER_LOG_INFO, VB_NAME ": agent '%s' is gone: %s", p->name,
         p->dead_why);
    vb__cstate(v, p, VB_CONN_NONE);
    conn_close(v, p, p->dead_st, p->dead_why);
    pthread_mutex_lock(&p->olock);
    vb__notif_drop(v, p);
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&v->lock);
}

void vb__peer_remove(vb_t *v, vb_peer_t *p)
{
    char why[XFER_NAME_MAX + 40];

    snprintf(why, sizeof why, "agent '%s' was removed", p->name);
    vb__peer_kill(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
    xfer__hwctl_peer_remove(&v->ctl, &p->ctl);
    vb__peer_put(p);
}

/* Connected once the control channel is up and the QPs are ready. */
xfer_status_t vb__peer_connect(vb_t *v, vb_peer_t *p)
{
    char why[sizeof p->cwhy];
    xfer_status_t st;
    int cs;

    if (atomic_load(&p->dead))
        return vb__peer_gone(v, p);
    if ((st = xfer__hwctl_peer_connect(&v->ctl, &p->ctl)) != XFER_OK)
        return st;
    vb__conn_need(v, p);
    pthread_mutex_lock(&v->lock);
    cs = p->cstate;
    st = p->cst;
    memcpy(why, p->cwhy, sizeof why);
    pthread_mutex_unlock(&v->lock);
    if (cs == VB_CONN_READY)
        return XFER_OK;
    if (cs == VB_CONN_ASKING)
        return XFER_IN_PROG;
    if (atomic_load(&p->dead))
        return vb__peer_gone(v, p);
    return VERR(v, st != XFER_OK ? st : XFER_ERR_REMOTE_DISCONNECT, "%s",
                why[0] ? why : VB_NAME ": no connection");
}
