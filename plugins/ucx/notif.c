/* notif.c - notifications of the ucx plugin: sent as active messages only
 * after their transfer's flush, in post order, within the target's credits;
 * received against a session token the control channel handed out. */
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
#include <sys/random.h>

#include "plugins/ucx/ucx.h"

/* The header (docs/wire-ucx.md), little-endian:
 *   0 u8 magic 0x58   1 u8 version (1)   2 u16 flags (0)   4 u32 length
 *   8 u8[16] the session token          24 u64 sequence number */
#define HDR_VERSION 1u

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
    atomic_store(&p->want_ask, true);
    atomic_store(&u->ask_due, true);
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

static void hdr_fill(ucx_slot_t *s, const unsigned char *token, uint64_t seq)
{
    uint32_t len = htole32((uint32_t)s->len);

    seq = htole64(seq);
    memset(s->hdr, 0, sizeof s->hdr);
    s->hdr[0] = UCX_AM_MAGIC;
    s->hdr[1] = HDR_VERSION;
    memcpy(s->hdr + 4, &len, 4);
    memcpy(s->hdr + 8, token, UCX_TOKEN_LEN);
    memcpy(s->hdr + 24, &seq, 8);
}

void ucx__notif_pump(ucx_t *u, ucx_peer_t *p, unsigned wi)
{
    char ewhy[XFER_NAME_MAX + 200];
    xfer_status_t est;
    ucx_slot_t *s;

    while ((s = p->sh) != NULL && s->ready) {
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
        if (!s->numbered && p->oldest && p->oldest->ticket < s->ticket)
            break;
        if (!s->numbered &&
            (!p->have_token || p->sent - p->acked >= p->window)) {
            /* The channel brings the token and the credits back; if it
             * is down, ask at the next progress (chan_lock is above
             * ours). */
            if (!p->have_token || !atomic_load(&p->chan_connected)) {
                atomic_store(&p->want_ask, true);
                atomic_store(&u->ask_due, true);
            }
            break;
        }
        if ((e = ucx__ep_get(u, p, wi, &est, ewhy, sizeof ewhy)) == NULL)
            break; /* again at the next pump; a dead peer drops them */
        slot_pop(p);
        if (!s->numbered)
            hdr_fill(s, p->token, p->sent++);
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
        r = ucp_am_send_nbx(e->ep, UCX_AM_NOTIF, s->hdr, UCX_AM_HDR_LEN,
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
}

void ucx__notif_drop(ucx_peer_t *p)
{
    ucx_slot_t *s;

    for (ucx_req_t *q = p->oldest; q; q = q->pnext)
        q->slot = NULL;
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
    ucx__ctl_start(u, p);
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

/* ---- target: sessions --------------------------------------------------- */

static void sess_free(ucx_sess_t *s, unsigned window)
{
    for (unsigned i = 0; s->held && i < window; i++)
        free(s->held[i].msg);
    free(s->held);
    free(s);
}

/* Unlink s: chan_lock held; takes tlock (the handler reads the list). */
static void sess_unlink(ucx_t *u, ucx_sess_t *s)
{
    pthread_mutex_lock(&u->tlock);
    for (ucx_sess_t **pp = &u->sess; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            u->nsess--;
            break;
        }
    }
    pthread_mutex_unlock(&u->tlock);
    sess_free(s, (unsigned)u->cfg.notif_window);
}

ucx_sess_t *ucx__sess_get(ucx_t *u, const char *name, uint64_t epoch)
{
    ucx_sess_t *s, *lru = NULL;

    for (s = u->sess; s; s = s->next) {
        if (strcmp(s->name, name) != 0)
            continue;
        if (s->epoch == epoch)
            return s;
        /* A new life of that agent: what the old one had on its way
         * here is from a process that is gone. */
        ULOG(u, XFER_LOG_INFO, "agent '%s' restarted (epoch %llu): its "
             "earlier notification session ends", name,
             (unsigned long long)epoch);
        sess_unlink(u, s);
        break;
    }
    if (u->nsess >= u->cfg.lim.max_conns) {
        pthread_mutex_lock(&u->tlock); /* used is the handler's */
        for (s = u->sess; s; s = s->next)
            if (s->conn == NULL && (lru == NULL || s->used < lru->used))
                lru = s;
        pthread_mutex_unlock(&u->tlock);
        if (lru == NULL) {
            ULOG(u, XFER_LOG_WARN, "agent '%s' asked for a notification "
                 "session, but %u are open (max_conns)", name, u->nsess);
            return NULL;
        }
        sess_unlink(u, lru);
    }
    if (!(s = calloc(1, sizeof *s)) ||
        !(s->held = calloc(u->cfg.notif_window, sizeof *s->held)) ||
        getrandom(s->token, sizeof s->token, 0) != (ssize_t)sizeof s->token) {
        if (s)
            free(s->held);
        free(s);
        ULOG(u, XFER_LOG_ERROR, "no notification session for agent '%s': "
             "out of memory or randomness", name);
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->epoch = epoch;
    pthread_mutex_lock(&u->tlock);
    s->used = ++u->tick;
    s->next = u->sess;
    u->sess = s;
    u->nsess++;
    pthread_mutex_unlock(&u->tlock);
    return s;
}

void ucx__sess_conn_down(ucx_t *u, xfer__stream_conn_t *c)
{
    for (ucx_sess_t *s = u->sess; s; s = s->next)
        if (s->conn == c)
            s->conn = NULL;
}

void ucx__sess_free_all(ucx_t *u)
{
    ucx_sess_t *s;

    while ((s = u->sess) != NULL) {
        u->sess = s->next;
        sess_free(s, (unsigned)u->cfg.notif_window);
    }
    u->nsess = 0;
}

/* ---- target: the active message ------------------------------------------ */

static bool token_eq(const unsigned char *a, const unsigned char *b)
{
    unsigned char d = 0;

    for (unsigned i = 0; i < UCX_TOKEN_LEN; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* Hand what s holds to the core, in order, while its queue has room
 * (tlock held). */
static int deliver_held(ucx_t *u, ucx_sess_t *s)
{
    const xfer_host_t *h = u->host;
    uint64_t win = u->cfg.notif_window;
    int n = 0;

    while (s->nheld > 0) {
        struct ucx_held *e = &s->held[s->delivered % win];

        if (!e->full || !h->notif_room(h->ctx, s->name, e->len))
            break;
        h->notif_deliver(h->ctx, s->name, e->msg, e->len);
        free(e->msg);
        e->msg = NULL;
        e->full = false;
        s->nheld--;
        s->delivered++;
        atomic_fetch_add(&u->notifs_recv, 1);
        atomic_store(&u->ack_due, true);
        n++;
    }
    return n;
}

static ucs_status_t am_recv(void *arg, const void *header, size_t hlen,
                            void *data, size_t len,
                            const ucp_am_recv_param_t *param)
{
    ucx_worker_t *w = arg;
    ucx_t *u = w->u;
    const xfer_host_t *h = u->host;
    const unsigned char *b = header;
    uint64_t win = u->cfg.notif_window, seq;
    uint32_t hl;
    ucx_sess_t *s;

    if (hlen != UCX_AM_HDR_LEN || b[0] != UCX_AM_MAGIC ||
        b[1] != HDR_VERSION || (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        atomic_fetch_add(&u->notifs_dropped, 1);
        ULOG(u, XFER_LOG_WARN, "dropped an active message with a %zu-byte "
             "header that is not an xfer notification", hlen);
        return UCS_OK;
    }
    memcpy(&hl, b + 4, 4);
    memcpy(&seq, b + 24, 8);
    seq = le64toh(seq);
    if (le32toh(hl) != len || len > XFER_NOTIF_MAX) {
        atomic_fetch_add(&u->notifs_dropped, 1);
        ULOG(u, XFER_LOG_WARN, "dropped a notification of %zu bytes whose "
             "header says %u", len, le32toh(hl));
        return UCS_OK;
    }
    pthread_mutex_lock(&u->tlock);
    for (s = u->sess; s && !token_eq(s->token, b + 8); s = s->next)
        ;
    if (s == NULL) {
        pthread_mutex_unlock(&u->tlock);
        atomic_fetch_add(&u->notifs_dropped, 1);
        ULOG(u, XFER_LOG_WARN, "dropped a notification carrying a token of "
             "no session (forged, or from an agent that restarted)");
        return UCS_OK;
    }
    s->used = ++u->tick;
    if (seq < s->delivered || seq >= s->delivered + win ||
        s->held[seq % win].full) {
        pthread_mutex_unlock(&u->tlock);
        atomic_fetch_add(&u->notifs_dropped, 1);
        ULOG(u, XFER_LOG_WARN, "dropped notification %llu from agent '%s': "
             "outside its window [%llu, +%llu) or a duplicate",
             (unsigned long long)seq, s->name,
             (unsigned long long)s->delivered, (unsigned long long)win);
        return UCS_OK;
    }
    if (seq == s->delivered && s->nheld == 0 &&
        h->notif_room(h->ctx, s->name, len)) {
        h->notif_deliver(h->ctx, s->name, data, len);
        s->delivered++;
        atomic_fetch_add(&u->notifs_recv, 1);
        atomic_store(&u->ack_due, true);
    } else {
        /* Out of order, or no room: kept, within the window the sender
         * may not exceed, until its turn and room come. */
        struct ucx_held *e = &s->held[seq % win];

        if ((e->msg = malloc(len ? len : 1)) == NULL) {
            pthread_mutex_unlock(&u->tlock);
            atomic_fetch_add(&u->notifs_dropped, 1);
            ULOG(u, XFER_LOG_ERROR, "dropped a notification from agent "
                 "'%s': out of memory", s->name);
            return UCS_OK;
        }
        memcpy(e->msg, data, len);
        e->len = len;
        e->full = true;
        s->nheld++;
        deliver_held(u, s);
        if (s->nheld)
            atomic_store(&u->held_any, true);
    }
    pthread_mutex_unlock(&u->tlock);
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

int ucx__notif_progress(ucx_t *u)
{
    bool any = false;
    int n = 0;

    if (!atomic_load(&u->held_any))
        return 0;
    pthread_mutex_lock(&u->tlock);
    for (ucx_sess_t *s = u->sess; s; s = s->next) {
        if (s->nheld) {
            n += deliver_held(u, s);
            any |= s->nheld != 0;
        }
    }
    atomic_store(&u->held_any, any);
    pthread_mutex_unlock(&u->tlock);
    return n;
}
