/* peer.c - remote agents of the ofi plugin: their endpoint names, one entry
 * each in the address vector (inserted at first use, removed with them). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#include "plugins/ofi/ofi.h"

/* Endpoints of this process.  libfabric's shm provider reaches a peer
 * in the same process through that peer's own mapping, which goes when
 * the peer's endpoint closes: an operation to it, or a progress call
 * with one in flight, then touches freed memory before any control
 * channel can tell of the death.  So an instance closing marks itself
 * dead in every other first, leaves their address vectors (shm keeps
 * the entry: av_remove), and lets what is in flight with them finish
 * (local_quiesce).  Lock order: local_lock -> chan_lock -> ep_lock;
 * nothing takes local_lock under an instance's lock. */
static pthread_mutex_t local_lock = PTHREAD_MUTEX_INITIALIZER;
static ofi_t *local_list;

void ofi__local_add(ofi_t *o)
{
    pthread_mutex_lock(&local_lock);
    o->local_next = local_list;
    local_list = o;
    pthread_mutex_unlock(&local_lock);
}

static void av_remove(ofi_t *o, ofi_peer_t *p);

/* Whether b (ep_lock held) has operations with p, or, p NULL, with
 * anyone, that its provider still holds. */
static bool in_flight(const ofi_t *b, const ofi_peer_t *p)
{
    for (const ofi_slot_t *s = b->sflight; s; s = s->fnext)
        if (p == NULL || s->peer == p)
            return true;
    for (xfer__dlink_t *k = xfer__dlist_head(&b->reqs); k;
         k = xfer__dlist_next(k)) {
        const ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, ilink);

        if ((p == NULL || q->peer == p) && q->pending > 0)
            return true;
    }
    return false;
}

/* Progress o and every other instance until nothing is in flight
 * between them (local_lock held), within o's timeout_ms: an answer or
 * a completion read once o's endpoint is closed touches its freed
 * region.  All of o's own count: its peers are gone by fini. */
static void local_quiesce(ofi_t *o)
{
    uint64_t end = xfer__now_ms() + o->cfg.timeout_ms;
    bool busy;

    /* Only shm reaches into a peer's own memory; and only what is in
     * flight with this process's instances can be finished here (o's
     * operations to other processes, a stopped one say, never would). */
    if (!o->shm)
        return;
    for (;;) {
        busy = false;
        for (ofi_t *b = local_list; b; b = b->local_next) {
            bool with_b = false;

            pthread_mutex_lock(&o->ep_lock);
            ofi__cq_drain(o, 1024);
            for (xfer__hwctl_peer_t *h = o->ctl.peers; h; h = h->next) {
                ofi_peer_t *p = h->peer;

                if (p->alen == b->name_len &&
                    memcmp(p->addr, b->name, p->alen) == 0)
                    with_b |= in_flight(o, p);
            }
            pthread_mutex_unlock(&o->ep_lock);
            busy |= with_b;
        }
        for (ofi_t *b = local_list; b; b = b->local_next) {
            pthread_mutex_lock(&b->ctl.chan_lock);
            pthread_mutex_lock(&b->ep_lock);
            ofi__cq_drain(b, 1024);
            for (xfer__hwctl_peer_t *h = b->ctl.peers; h; h = h->next) {
                ofi_peer_t *p = h->peer;

                if (p->alen == o->name_len &&
                    memcmp(p->addr, o->name, p->alen) == 0)
                    busy |= in_flight(b, p);
            }
            pthread_mutex_unlock(&b->ep_lock);
            pthread_mutex_unlock(&b->ctl.chan_lock);
        }
        if (!busy || xfer__now_ms() >= end)
            break;
        usleep(100);
    }
}

void ofi__local_del(ofi_t *o)
{
    pthread_mutex_lock(&local_lock);
    for (ofi_t **pp = &local_list; *pp; pp = &(*pp)->local_next) {
        if (*pp == o) {
            *pp = o->local_next;
            break;
        }
    }
    for (ofi_t *b = local_list; b; b = b->local_next) {
        pthread_mutex_lock(&b->ctl.chan_lock);
        pthread_mutex_lock(&b->ep_lock);
        for (xfer__hwctl_peer_t *h = b->ctl.peers; h; h = h->next) {
            ofi_peer_t *p = h->peer;

            if (p->alen != o->name_len ||
                memcmp(p->addr, o->name, p->alen) != 0)
                continue;
            ofi__peer_mark_dead(p, XFER_ERR_REMOTE_DISCONNECT, "its "
                                "endpoint in this process was closed");
            ofi__req_fail_peer(b, p);
            pthread_mutex_lock(&p->olock);
            ofi__notif_drop(b, p);
            pthread_mutex_unlock(&p->olock);
            av_remove(b, p);
        }
        pthread_mutex_unlock(&b->ep_lock);
        pthread_mutex_unlock(&b->ctl.chan_lock);
    }
    local_quiesce(o);
    pthread_mutex_unlock(&local_lock);
}

xfer_status_t ofi__peer_add(ofi_t *o, const char *name, uint64_t epoch,
                            const void *info, size_t len, ofi_peer_t **out)
{
    ofi_peer_t *p = calloc(1, sizeof *p);
    const void *ci;
    size_t cl;
    xfer_status_t st;

    if (p == NULL)
        return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
    p->o = o;
    atomic_init(&p->refs, 1);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->epoch = epoch;
    p->fa = FI_ADDR_UNSPEC;
    p->ns.window = o->cfg.notif_window;
    pthread_mutex_init(&p->olock, NULL);
    if ((st = ofi__info_parse(o, name, info, len, p, &ci, &cl)) != XFER_OK)
        goto fail;
    st = xfer__hwctl_peer_add(&o->ctl, &p->ctl, p, p->name, epoch, ci, cl);
    if (st != XFER_OK)
        goto fail;
    *out = p;
    return XFER_OK;
fail:
    ofi__peer_put(p);
    return st;
}

void ofi__peer_put(ofi_peer_t *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&p->olock);
    free(p);
}

xfer_status_t ofi__peer_gone(ofi_t *o, const ofi_peer_t *p)
{
    return OERR(o, p->dead_st, "ofi: agent '%s' is gone: %s", p->name,
                p->dead_why);
}

/* Take p out of the address vector (ep_lock held): a provider with
 * connections (ofi_rxm) closes its own, which ends what is still on it;
 * a new epoch of that agent comes in as a new peer with its own entry.
 * Not on libfabric 1.17's shm: it gives a removed peer's slot to the
 * next address inserted, while this endpoint still counts that slot as
 * introduced (smr_unmap_from_endpoint leaves peer_data[slot].addr.id),
 * so the new peer is sent commands under an id it never gave and
 * crashes in its progress.  There the entry stays until the AV closes
 * (OFI_SHM_AV_MAX over the instance's life: ofi__peer_addr). */
static void av_remove(ofi_t *o, ofi_peer_t *p)
{
    int r;

    if (!p->in_av)
        return;
    if (!o->shm && (r = fi_av_remove(o->av, &p->fa, 1, 0)) != 0)
        OLOG(o, XFER_LOG_INFO, "ofi: removing agent '%s' from the address "
             "vector: %s", p->name, fi_strerror(-r));
    p->in_av = false;
    p->fa = FI_ADDR_UNSPEC;
}

xfer_status_t ofi__peer_addr(ofi_t *o, ofi_peer_t *p, char *why,
                             size_t size)
{
    int r;

    if (atomic_load(&p->dead)) {
        snprintf(why, size, "ofi: agent '%s' is gone: %s", p->name,
                 p->dead_why);
        return p->dead_st;
    }
    if (p->in_av)
        return XFER_OK;
    r = fi_av_insert(o->av, p->addr, 1, &p->fa, 0, NULL);
    if (r == 0 && o->shm && o->av_used >= OFI_SHM_AV_MAX) {
        /* Not an error of the name: shm refuses it when full. */
        snprintf(why, size, "ofi: agent '%s': shm's address vector is "
                 "full (%d peers over this backend's life: shm keeps "
                 "every peer it reached, av_remove in peer.c says why); "
                 "a new ofi backend instance starts with an empty one",
                 p->name, OFI_SHM_AV_MAX);
        p->fa = FI_ADDR_UNSPEC;
        return XFER_ERR_NOMEM;
    }
    if (r != 1) {
        snprintf(why, size, "ofi: agent '%s': its endpoint name is not an "
                 "address %s takes (fi_av_insert: %s)", p->name,
                 o->info->fabric_attr->prov_name,
                 fi_strerror(r < 0 ? -r : FI_EINVAL));
        p->fa = FI_ADDR_UNSPEC;
        return r < 0 && ofi__status(r) != XFER_ERR_REMOTE_DISCONNECT
                   ? ofi__status(r) : XFER_ERR_REMOTE_DISCONNECT;
    }
    p->in_av = true;
    o->av_used++;
    return XFER_OK;
}

bool ofi__peer_mark_dead(ofi_peer_t *p, xfer_status_t st, const char *why)
{
    bool no = false;

    /* The first reason wins; dead_* are written before dead is set, and
     * read only after it is. */
    if (!atomic_compare_exchange_strong(&p->dying, &no, true)) {
        /* Another thread is writing the reason: what follows (failing
         * requests with dead_st) must not read it half-written. */
        while (!atomic_load(&p->dead))
            sched_yield();
        return false;
    }
    p->dead_st = st;
    snprintf(p->dead_why, sizeof p->dead_why, "%s", why);
    atomic_store(&p->dead, true);
    return true;
}

void ofi__peer_kill(ofi_t *o, ofi_peer_t *p, xfer_status_t st,
                    const char *why)
{
    ofi__peer_mark_dead(p, st, why);
    if (atomic_exchange(&p->killed, true))
        return;
    OLOG(o, XFER_LOG_INFO, "ofi: agent '%s' is gone: %s", p->name,
         p->dead_why);
    pthread_mutex_lock(&o->ep_lock);
    ofi__req_fail_peer(o, p);
    pthread_mutex_lock(&p->olock);
    ofi__notif_drop(o, p);
    pthread_mutex_unlock(&p->olock);
    /* What the provider still holds for it is let go (ofi_rxm closes the
     * connection; shm forgets the peer's queue, which a dead peer would
     * never drain). */
    av_remove(o, p);
    pthread_mutex_unlock(&o->ep_lock);
}

void ofi__peer_remove(ofi_t *o, ofi_peer_t *p)
{
    char why[XFER_NAME_MAX + 40];

    snprintf(why, sizeof why, "agent '%s' was removed", p->name);
    ofi__peer_kill(o, p, XFER_ERR_REMOTE_DISCONNECT, why);
    xfer__hwctl_peer_remove(&o->ctl, &p->ctl);
    pthread_mutex_lock(&o->ep_lock);
    av_remove(o, p);
    pthread_mutex_unlock(&o->ep_lock);
    ofi__peer_put(p);
}

xfer_status_t ofi__peer_connect(ofi_t *o, ofi_peer_t *p)
{
    char why[XFER_NAME_MAX + 200];
    xfer_status_t st;

    if (atomic_load(&p->dead))
        return ofi__peer_gone(o, p);
    if ((st = xfer__hwctl_peer_connect(&o->ctl, &p->ctl)) != XFER_OK)
        return st;
    pthread_mutex_lock(&o->ep_lock);
    st = ofi__peer_addr(o, p, why, sizeof why);
    pthread_mutex_unlock(&o->ep_lock);
    return st == XFER_OK ? st : OERR(o, st, "%s", why);
}
