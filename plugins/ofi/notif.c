/* notif.c - notifications of the ofi plugin: sent as messages only after
 * every write of their transfer completed delivery-complete, in post
 * order, within the target's credits; received into posted buffers and
 * named from the session token the control channel handed out. */
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

/* ---- sender ----------------------------------------------------------- */

ofi_slot_t *ofi__slot_new(ofi_peer_t *p, const void *msg, size_t len)
{
    ofi_slot_t *s = malloc(sizeof *s + XFER__NS_HDR_LEN + len);

    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof *s);
    memcpy(s->buf + XFER__NS_HDR_LEN, msg, len);
    s->len = len;
    s->ctx.kind = OFI_OP_SEND;
    s->ctx.obj = s;
    if (p->st)
        p->st->next = s;
    else
        p->sh = s;
    p->st = s;
    p->nslots++;
    return s;
}

void ofi__slot_free(ofi_t *o, ofi_slot_t *s)
{
    if (s->req)
        s->req->slot = NULL; /* its peer died: that fails the request */
    ofi__mr_close(o, s->mr, true);
    if (s->peer)
        ofi__peer_put(s->peer);
    free(s);
}

static void slot_pop(ofi_peer_t *p)
{
    ofi_slot_t *s = p->sh;

    p->sh = s->next;
    if (p->sh == NULL)
        p->st = NULL;
    s->next = NULL;
    p->nslots--;
}

/* A notification whose send failed already used its sequence number: the
 * target holds every later one until that number comes, so it goes again,
 * first, with the same header (the target drops a copy that did arrive),
 * after a token ask's round trip (olock held).  False: p is dead. */
static bool slot_again(ofi_t *o, ofi_peer_t *p, ofi_slot_t *s)
{
    if (atomic_load(&p->dead))
        return false;
    ofi__mr_close(o, s->mr, true);
    s->mr = NULL;
    if (s->peer) {
        ofi__peer_put(s->peer); /* not the last: the core holds one */
        s->peer = NULL;
    }
    s->next = p->sh;
    p->sh = s;
    if (p->st == NULL)
        p->st = s;
    p->nslots++;
    xfer__hwctl_want_ask(&o->ctl, &p->ctl);
    return true;
}

static void flight_add(ofi_t *o, ofi_slot_t *s)
{
    s->fprev = NULL;
    s->fnext = o->sflight;
    if (o->sflight)
        o->sflight->fprev = s;
    o->sflight = s;
}

static void flight_del(ofi_t *o, ofi_slot_t *s)
{
    if (s->fprev)
        s->fprev->fnext = s->fnext;
    else if (o->sflight == s)
        o->sflight = s->fnext;
    if (s->fnext)
        s->fnext->fprev = s->fprev;
    s->fnext = s->fprev = NULL;
}

/* Hand s to the provider (ep_lock held): 0, -FI_EAGAIN, or an error. */
static int send_one(ofi_t *o, ofi_slot_t *s)
{
    size_t n = XFER__NS_HDR_LEN + s->len;
    void *desc = NULL;
    ssize_t r;

    if ((o->mr_mode & FI_MR_LOCAL) && s->mr == NULL &&
        ofi__mr_local(o, s->buf, n, FI_SEND, true, &s->mr) != XFER_OK)
        return -FI_ENOMEM;
    if (s->mr)
        desc = fi_mr_desc(s->mr);
    r = fi_send(o->ep, s->buf, n, desc, s->peer->fa, &s->ctx);
    if (r == 0) {
        atomic_fetch_add(&o->notifs_sent, 1);
        flight_add(o, s);
    }
    return (int)r;
}

void ofi__notif_pump(ofi_t *o, ofi_peer_t *p)
{
    char why[XFER_NAME_MAX + 200];
    ofi_slot_t *s;

    while ((s = p->sh) != NULL && s->ready) {
        const ofi_req_t *oldest;
        int r;

        if (s->len == (size_t)-1) { /* its transfer failed */
            slot_pop(p);
            ofi__slot_free(o, s);
            continue;
        }
        if (atomic_load(&p->dead))
            break;
        /* After the data of every request posted before it. */
        oldest = XFER__DLIST_ENTRY(xfer__dlist_head(&p->order), ofi_req_t,
                                   plink);
        if (!s->numbered && oldest && oldest->ticket < s->ticket)
            break;
        if (!s->numbered && !xfer__ns_send_can(&p->ns)) {
            /* The channel brings the token and the credits back; if it
             * is down, ask at the next progress (chan_lock is above
             * ours). */
            if (!p->ns.have_token ||
                !atomic_load(&p->ctl.chan_connected))
                xfer__hwctl_want_ask(&o->ctl, &p->ctl);
            break;
        }
        if (ofi__peer_addr(o, p, why, sizeof why) != XFER_OK)
            break; /* again at the next pump; a dead peer drops them */
        slot_pop(p);
        if (!s->numbered) {
            xfer__ns_hdr_fill(&p->ns, s->buf, s->len);
            s->numbered = true;
        }
        s->peer = p;
        atomic_fetch_add(&p->refs, 1);
        r = send_one(o, s);
        if ((r == 0 || r == -FI_EAGAIN) && s->req != NULL) {
            ofi_req_t *q = s->req;

            s->req = NULL;
            ofi__req_notif_gone(o, q);
        }
        if (r == -FI_EAGAIN) {
            /* The provider's queue is full: progress sends it. */
            s->next = o->sbacklog;
            o->sbacklog = s;
            atomic_fetch_add(&o->eagain, 1);
        } else if (r != 0) {
            OLOG(o, XFER_LOG_INFO, "ofi: a notification to agent '%s' goes "
                 "again: %s", p->name, fi_strerror(-r));
            if (!slot_again(o, p, s)) {
                atomic_fetch_add(&o->ns.dropped, 1);
                ofi__slot_free(o, s);
            }
            break;
        }
    }
}

int ofi__notif_retry(ofi_t *o)
{
    ofi_slot_t *s = o->sbacklog, *keep = NULL;
    int n = 0;

    o->sbacklog = NULL;
    while (s != NULL) {
        ofi_slot_t *next = s->next;
        int r = atomic_load(&s->peer->dead) ? -FI_ECANCELED
                                            : send_one(o, s);

        s->next = NULL;
        if (r == -FI_EAGAIN) {
            s->next = keep;
            keep = s;
        } else if (r != 0) {
            ofi__notif_sent(o, s, r);
            n++;
        } else {
            n++;
        }
        s = next;
    }
    o->sbacklog = keep;
    /* Receive buffers a full queue kept from being posted. */
    for (size_t i = 0; i < o->nrx; i++) {
        ofi_rxbuf_t *b = &o->rx[i];
        void *desc = o->rx_mr ? fi_mr_desc(o->rx_mr) : NULL;

        if (!b->posted &&
            fi_recv(o->ep, b->buf, OFI_RX_SIZE, desc, FI_ADDR_UNSPEC,
                    &b->ctx) == 0) {
            b->posted = true;
            n++;
        }
    }
    return n;
}

void ofi__notif_sent(ofi_t *o, ofi_slot_t *s, int err)
{
    ofi_peer_t *p = s->peer;
    bool again = false;

    flight_del(o, s);
    if (err != 0) {
        pthread_mutex_lock(&p->olock);
        again = slot_again(o, p, s);
        pthread_mutex_unlock(&p->olock);
        OLOG(o, XFER_LOG_INFO, "ofi: a notification to agent '%s' %s: %s",
             p->name, again ? "goes again" : "is dropped (it is gone)",
             fi_strerror(-err));
    }
    if (!again) {
        if (err != 0)
            atomic_fetch_add(&o->ns.dropped, 1);
        ofi__slot_free(o, s);
    }
}

void ofi__notif_free_all(ofi_t *o)
{
    ofi_slot_t *s;

    while ((s = o->sflight) != NULL) {
        flight_del(o, s);
        ofi__slot_free(o, s);
    }
    while ((s = o->sbacklog) != NULL) {
        o->sbacklog = s->next;
        ofi__slot_free(o, s);
    }
}

void ofi__notif_drop(ofi_t *o, ofi_peer_t *p)
{
    ofi_slot_t *s;

    for (xfer__dlink_t *k = xfer__dlist_head(&p->order); k;
         k = xfer__dlist_next(k))
        XFER__DLIST_ENTRY(k, ofi_req_t, plink)->slot = NULL;
    while ((s = p->sh) != NULL) {
        slot_pop(p);
        ofi__slot_free(o, s);
    }
}

xfer_status_t ofi__notif_send(ofi_t *o, ofi_peer_t *p, const void *msg,
                              size_t len)
{
    char why[XFER_NAME_MAX + 200];
    ofi_slot_t *s;
    xfer_status_t st = XFER_OK;

    if (atomic_load(&p->dead))
        return ofi__peer_gone(o, p);
    xfer__hwctl_start(&o->ctl, &p->ctl);
    pthread_mutex_lock(&o->ep_lock);
    pthread_mutex_lock(&p->olock);
    /* Again under olock: a peer_kill that ran since the look above has
     * already dropped the queue, and would never see this one. */
    if (atomic_load(&p->dead)) {
        st = ofi__peer_gone(o, p);
    } else if ((st = ofi__peer_addr(o, p, why, sizeof why)) != XFER_OK) {
        st = OERR(o, st, "%s", why);
    } else if (p->nslots >= o->cfg.notif_queue) {
        st = OERR(o, XFER_ERR_BUSY, "ofi: %zu notifications already wait "
                  "for agent '%s' to take earlier ones (notif_queue); try "
                  "again later", p->nslots, p->name);
    } else if ((s = ofi__slot_new(p, msg, len)) == NULL) {
        st = OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
    } else {
        s->ticket = p->next_ticket++;
        s->ready = true;
        ofi__notif_pump(o, p);
    }
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&o->ep_lock);
    return st;
}

/* ---- receiver ----------------------------------------------------------- */

xfer_status_t ofi__rx_open(ofi_t *o)
{
    size_t n = o->cfg.notif_rx;
    xfer_status_t st;
    void *mem = NULL;

    /* Page-aligned, for providers that register it (FI_MR_LOCAL). */
    if (posix_memalign(&mem, 4096, n * OFI_RX_SIZE) != 0)
        mem = NULL;
    o->rx_mem = mem;
    o->rx = calloc(n, sizeof *o->rx);
    if (o->rx_mem == NULL || o->rx == NULL)
        return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory for %zu "
                    "notification buffers", n);
    o->nrx = n;
    if ((st = ofi__mr_local(o, o->rx_mem, n * OFI_RX_SIZE, FI_RECV, false,
                            &o->rx_mr)) != XFER_OK)
        return st;
    for (size_t i = 0; i < n; i++) {
        o->rx[i].ctx.kind = OFI_OP_RECV;
        o->rx[i].ctx.obj = &o->rx[i];
        o->rx[i].buf = o->rx_mem + i * OFI_RX_SIZE;
    }
    pthread_mutex_lock(&o->ep_lock);
    ofi__notif_retry(o);
    pthread_mutex_unlock(&o->ep_lock);
    return XFER_OK;
}

void ofi__rx_close(ofi_t *o)
{
    ofi__mr_close(o, o->rx_mr, false);
    o->rx_mr = NULL;
    free(o->rx_mem);
    free(o->rx);
    o->rx_mem = NULL;
    o->rx = NULL;
    o->nrx = 0;
}

void ofi__notif_recv(ofi_t *o, ofi_rxbuf_t *b, size_t len, int err)
{
    void *desc = o->rx_mr ? fi_mr_desc(o->rx_mr) : NULL;

    b->posted = false;
    if (err == -FI_ECANCELED)
        return; /* the endpoint is closing */
    if (err != 0) {
        atomic_fetch_add(&o->ns.dropped, 1);
        OLOG(o, XFER_LOG_WARN, "ofi: dropped a message that did not fit a "
             "notification buffer or failed: %s", fi_strerror(-err));
    } else {
        size_t h = len < XFER__NS_HDR_LEN ? len : XFER__NS_HDR_LEN;

        /* Copied out when held: the buffer goes back at once. */
        xfer__ns_recv(&o->ns, b->buf, h, b->buf + h, len - h);
    }
    if (fi_recv(o->ep, b->buf, OFI_RX_SIZE, desc, FI_ADDR_UNSPEC,
                &b->ctx) == 0)
        b->posted = true;
}
