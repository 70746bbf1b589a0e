/* ctl.c - the verbs plugin's control channel (chan.h over TCP): connection
 * info, the queue-pair handshake (wire.h), the QPs targets make for their
 * initiators, and hwctl's callbacks (tokens, credits, peer death). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/verbs.h"

/* ---- connection info ---------------------------------------------------- */

xfer_status_t vb__info_build(vb_t *v)
{
    vb_port_addr_t ports[VB_MAX_RAILS];

    for (unsigned r = 0; r < v->nrails; r++)
        ports[r] = v->rail[r].addr;
    v->info_len = vb__info_encode(v->info_blob, sizeof v->info_blob, ports,
                                  v->nrails, v->ctl.sock.info,
                                  XFER__TCPSOCK_INFO_SIZE);
    if (v->info_len == 0)
        return VERR(v, XFER_ERR_BACKEND, VB_NAME ": the connection info "
                    "does not fit");
    return XFER_OK;
}

xfer_status_t vb__info_parse(vb_t *v, const char *name, const void *info,
                             size_t len, vb_peer_t *p, const void **chan,
                             size_t *chan_len)
{
    vb_port_addr_t ports[VB_MAX_RAILS];
    unsigned n = 0;
    char why[200];

    if (vb__info_decode(info, len, ports, &n, chan, chan_len, why,
                        sizeof why) != XFER_OK)
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": agent '%s': connection "
                    "info refused: %s", name, why);
    if (ports[0].link != v->rail[0].addr.link)
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": agent '%s' is on %s, "
                    "this agent on %s: both sides need the same link layer",
                    name, ports[0].link == VB_LINK_ETH ? "RoCE" : "InfiniBand",
                    v->rail[0].addr.link == VB_LINK_ETH ? "RoCE"
                                                        : "InfiniBand");
    if (*chan_len != XFER__TCPSOCK_INFO_SIZE ||
        xfer__tcpsock_info_check(&v->ctl.sock, *chan,
                                 XFER__TCPSOCK_INFO_SIZE) != XFER_OK)
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": agent '%s': its control "
                    "channel address is not valid", name);
    /* The ports themselves come again in each handshake. */
    if (p != NULL)
        p->nrails = n < v->nrails ? n : v->nrails;
    return XFER_OK;
}

/* ---- the initiator's half of the handshake -------------------------------- */

/* Whether q's connection carries nothing now: no request waits on it or
 * has work on its QPs, no notification waits or flies (lock held). */
static bool conn_idle(vb_t *v, vb_peer_t *q)
{
    if (!xfer__dlist_empty(&q->waitq) || q->sh != NULL)
        return false;
    for (unsigned r = 0; r < VB_MAX_RAILS; r++) {
        vb_qp_t *qp = vb__qp_get(v, r, q->slot[r]);

        if (qp != NULL && qp->sq.count > 0)
            return false;
    }
    return true;
}

/* The table is full: the idle connection used least recently goes, so an
 * agent that talked to more targets over its life than max_qps still
 * reaches a new one (chan_lock and lock held).  Whether one went. */
static bool evict_idle(vb_t *v, vb_peer_t *p)
{
    vb_peer_t *best = NULL;

    for (xfer__hwctl_peer_t *hp = v->ctl.peers; hp; hp = hp->next) {
        vb_peer_t *q = hp->peer;

        if (q == p || q->cstate != VB_CONN_READY || !conn_idle(v, q))
            continue;
        if (best == NULL || q->used < best->used)
            best = q;
    }
    if (best == NULL)
        return false;
    VLOG(v, XFER_LOG_INFO, VB_NAME ": all max_qps queue pairs in use: the "
         "idle connection to agent '%s' goes (the next transfer to it "
         "makes a new one)", best->name);
    vb__conn_drop_idle(v, best);
    return true;
}

void vb__conn_ask(vb_t *v, vb_peer_t *p)
{
    unsigned char msg[VB_HS_MAX], skip[XFER__NS_SKIP_LEN];
    bool skip_due = false;
    char why[200];
    vb_hs_t m;
    size_t len;
    xfer_status_t st;

    pthread_mutex_lock(&v->lock);
    if (p->cstate != VB_CONN_NONE || atomic_load(&p->dead) ||
        p->ctl.cp == NULL) {
        pthread_mutex_unlock(&v->lock);
        return;
    }
    if (v->down != VB_DOWN_NO) {
        p->cst = XFER_ERR_REMOTE_DISCONNECT;
        snprintf(p->cwhy, sizeof p->cwhy, VB_NAME ": no connection to agent "
                 "'%s': %s", p->name, v->down_why);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    st = vb__qp_make(v, VB_QP_INI, p, p->nrails, p->slot, why, sizeof why);
    if (st == XFER_ERR_BUSY && evict_idle(v, p))
        st = vb__qp_make(v, VB_QP_INI, p, p->nrails, p->slot, why,
                         sizeof why);
    if (st != XFER_OK) {
        p->cst = st;
        snprintf(p->cwhy, sizeof p->cwhy, VB_NAME ": no connection to agent "
                 "'%s': %s", p->name, why);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    memset(&m, 0, sizeof m);
    m.type = VB_HS_QPREQ;
    m.gen = ++p->gen;
    m.nrails = p->nrails;
    for (unsigned r = 0; r < p->nrails; r++)
        vb__qp_addr(v, p->slot[r], r, &m.qp[r]);
    len = vb__hs_encode(&m, msg, sizeof msg);
    vb__cstate(v, p, VB_CONN_ASKING);
    p->ask_ms = xfer__now_ms();
    if (p->skip_due) {
        /* Notifications lost with the last connection: the target hears
         * of it before the new one can carry any (the channel keeps
         * order, and the QPs exist only once it read the ask).  Sent
         * with every ask until one is answered (the target takes it
         * again harmlessly): an ask lost with its channel loses it too. */
        pthread_mutex_lock(&p->olock);
        xfer__ns_skip_msg(&p->ns, p->skip_from, skip);
        skip_due = p->ns.have_token;
        pthread_mutex_unlock(&p->olock);
    }
    pthread_mutex_unlock(&v->lock);
    /* chan_lock is held: the channel is ours to use. */
    st = skip_due ? xfer__chan_send(v->ctl.chan, p->ctl.cp, skip, sizeof skip)
                  : XFER_OK;
    if (st == XFER_OK)
        st = len ? xfer__chan_send(v->ctl.chan, p->ctl.cp, msg, len)
                 : XFER_ERR_BACKEND;
    if (st != XFER_OK) {
        pthread_mutex_lock(&v->lock);
        snprintf(why, sizeof why, "the handshake could not be sent on its "
                 "control channel (status %d)", (int)st);
        vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
        pthread_mutex_unlock(&v->lock);
    }
}

/* The target's answer (chan_lock held). */
static void on_qprep(vb_t *v, vb_peer_t *p, const vb_hs_t *m)
{
    char why[XFER_NAME_MAX + 240];
    xfer_status_t st = XFER_OK;

    pthread_mutex_lock(&v->lock);
    if (p->cstate != VB_CONN_ASKING || m->gen != p->gen) {
        /* An answer to an ask this side gave up on: its QPs are gone, or
         * remade under a new generation, and must not be touched. */
        VLOG(v, XFER_LOG_DEBUG, VB_NAME ": a stale handshake answer from "
             "'%s' (generation %u, now %u); dropped", p->name,
             (unsigned)m->gen, (unsigned)p->gen);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    if (m->status != VB_HS_OK) {
        snprintf(why, sizeof why, "agent '%s' made no queue pair for this "
                 "agent: %s", p->name,
                 m->status == VB_HS_NO_ROOM
                     ? "it has all its max_qps in use"
                     : "it refused the queue pairs (its log says why)");
        vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    if (m->nrails != p->nrails) {
        snprintf(why, sizeof why, "agent '%s' answered with %u rails, %u "
                 "asked for", p->name, m->nrails, p->nrails);
        vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    for (unsigned r = 0; r < p->nrails && st == XFER_OK; r++)
        st = vb__qp_connect(v, p->slot[r], r, &m->qp[r], why, sizeof why);
    if (st != XFER_OK) {
        char msg[2 * XFER_NAME_MAX + 300];

        snprintf(msg, sizeof msg, "connecting to agent '%s': %s", p->name,
                 why);
        vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, msg);
        pthread_mutex_unlock(&v->lock);
        return;
    }
    vb__cstate(v, p, VB_CONN_READY);
    p->skip_due = false; /* the target read the SKIP before this ask */
    p->ask_fails = 0;
    vb__req_issue_peer(v, p);
    pthread_mutex_unlock(&v->lock);
}

/* ---- the target's half ---------------------------------------------------- */

static void tconn_unlink(vb_t *v, vb_tconn_t *tc)
{
    for (vb_tconn_t **pp = &v->tconns; *pp; pp = &(*pp)->next)
        if (*pp == tc) {
            *pp = tc->next;
            v->ntconns--;
            return;
        }
}

void vb__tconn_drop(vb_t *v, vb_tconn_t *tc)
{
    tconn_unlink(v, tc);
    for (unsigned r = 0; r < tc->nrails; r++) {
        vb__qp_error(v, tc->slot[r], r);
        vb__qp_free(v, tc->slot[r], r);
    }
    vb__tconn_rx_close(v, tc);
    free(tc);
}

void vb__tconns_free(vb_t *v)
{
    while (v->tconns != NULL)
        vb__tconn_drop(v, v->tconns);
}

static vb_tconn_t *tconn_find(vb_t *v, const char *name)
{
    for (vb_tconn_t *tc = v->tconns; tc; tc = tc->next)
        if (strcmp(tc->name, name) == 0)
            return tc;
    return NULL;
}

/* Room for one more: with every QP in use, the least recently connected
 * initiator's go (its next transfer fails and asks again). */
static bool tconn_room(vb_t *v)
{
    vb_tconn_t *old = NULL;

    if (v->nqps < v->cfg.max_qps)
        return true;
    /* What the QPs received is taken first: a notification the HCA
     * acknowledged must not go with them. */
    vb__cq_drain(v, INT_MAX);
    if (v->nqps < v->cfg.max_qps)
        return true;
    for (vb_tconn_t *tc = v->tconns; tc; tc = tc->next)
        if (old == NULL || tc->used < old->used)
            old = tc;
    if (old == NULL)
        return false;
    VLOG(v, XFER_LOG_INFO, VB_NAME ": all max_qps queue pairs in use: agent "
         "'%s''s, the least recently connected, go", old->name);
    vb__tconn_drop(v, old);
    return v->nqps < v->cfg.max_qps;
}

/* An initiator asks for QPs (chan_lock held): made, connected to its,
 * and answered on the connection the ask came on. */
static void on_qpreq(vb_t *v, xfer__stream_conn_t *c, const vb_hs_t *m)
{
    const char *name = xfer__stream_conn_name(c);
    unsigned char out[VB_HS_MAX];
    vb_hs_t rep;
    vb_tconn_t *tc;
    char why[240] = "";
    xfer_status_t st = XFER_OK;
    size_t len;

    memset(&rep, 0, sizeof rep);
    rep.type = VB_HS_QPREP;
    rep.gen = m->gen;
    pthread_mutex_lock(&v->lock);
    /* One connection per initiator: an ask from it (again, or from a new
     * epoch of it) replaces what it had, once what its old QPs received
     * is taken from the CQ (a notification the HCA acknowledged must not
     * go with them). */
    if ((tc = tconn_find(v, name)) != NULL) {
        vb__cq_drain(v, INT_MAX);
        if ((tc = tconn_find(v, name)) != NULL)
            vb__tconn_drop(v, tc);
    }
    tc = NULL;
    if (v->quiesced) {
        rep.status = VB_HS_FAILED;
        snprintf(why, sizeof why, "the agent is being destroyed");
        goto answer;
    }
    if (!tconn_room(v)) {
        rep.status = VB_HS_NO_ROOM;
        goto answer;
    }
    if ((tc = calloc(1, sizeof *tc)) == NULL) {
        rep.status = VB_HS_FAILED;
        snprintf(why, sizeof why, "out of memory");
        goto answer;
    }
    snprintf(tc->name, sizeof tc->name, "%s", name);
    tc->nrails = m->nrails < v->nrails ? m->nrails : v->nrails;
    tc->used = ++v->tick;
    st = vb__qp_make(v, VB_QP_TGT, tc, tc->nrails, tc->slot, why,
                     sizeof why);
    if (st != XFER_OK) {
        free(tc);
        tc = NULL;
        rep.status = st == XFER_ERR_BUSY ? VB_HS_NO_ROOM : VB_HS_FAILED;
        goto answer;
    }
    tc->next = v->tconns;
    v->tconns = tc;
    v->ntconns++;
    /* Receive buffers are posted before the QP can receive. */
    st = vb__tconn_rx_open(v, tc);
    for (unsigned r = 0; r < tc->nrails && st == XFER_OK; r++)
        st = vb__qp_connect(v, tc->slot[r], r, &m->qp[r], why, sizeof why);
    if (st != XFER_OK) {
        if (why[0] == '\0')
            snprintf(why, sizeof why, "no receive buffers (status %d)",
                     (int)st);
        vb__tconn_drop(v, tc);
        tc = NULL;
        rep.status = VB_HS_FAILED;
        goto answer;
    }
    rep.status = VB_HS_OK;
    rep.nrails = tc->nrails;
    for (unsigned r = 0; r < tc->nrails; r++)
        vb__qp_addr(v, tc->slot[r], r, &rep.qp[r]);
answer:
    pthread_mutex_unlock(&v->lock);
    if (rep.status != VB_HS_OK)
        VLOG(v, XFER_LOG_WARN, VB_NAME ": no queue pair for agent '%s': %s",
             name, rep.status == VB_HS_NO_ROOM
                       ? "all max_qps are in use by connected initiators"
                       : why);
    if ((len = vb__hs_encode(&rep, out, sizeof out)) != 0)
        (void)xfer__chan_reply(c, out, len);
}

/* ---- the control channel's callbacks (hwctl.h) ------------------------ */

static vb_t *of_ctl(xfer__hwctl_t *h)
{
    return (vb_t *)(void *)((char *)h - offsetof(vb_t, ctl));
}

/* Whether to log a refused handshake message: a peer that passed the
 * channel's handshake can send many (bounded as nsess's drops). */
static bool log_refusal(vb_t *v)
{
    unsigned long n = atomic_fetch_add(&v->hs_refused, 1) + 1;

    return xfer__log_nth(n);
}

static void c_msg(xfer__hwctl_t *h, xfer__stream_conn_t *c, void *peer,
                  const void *msg, size_t len)
{
    vb_t *v = of_ctl(h);
    const unsigned char *b = msg;
    char why[200];
    vb_hs_t m;

    if (vb__hs_decode(msg, len, &m, why, sizeof why) != XFER_OK) {
        if (log_refusal(v))
            VLOG(v, XFER_LOG_WARN, VB_NAME ": agent '%s' sent a handshake "
                 "that is refused: %s", xfer__stream_conn_name(c), why);
        /* An ask this side cannot read (malformed) is answered, so the
         * asker fails at once rather than after timeout_ms. */
        if (!xfer__stream_conn_initiator(c) && len >= 8 &&
            b[0] == VB_HS_QPREQ) {
            unsigned char out[VB_HS_MAX];
            vb_hs_t rep = {.type = VB_HS_QPREP, .status = VB_HS_FAILED};
            size_t n;

            memcpy(&rep.gen, b + 4, 4);
            rep.gen = le32toh(rep.gen);
            if ((n = vb__hs_encode(&rep, out, sizeof out)) != 0)
                (void)xfer__chan_reply(c, out, n);
        }
        return;
    }
    if (xfer__stream_conn_initiator(c)) {
        if (peer != NULL && m.type == VB_HS_QPREP)
            on_qprep(v, peer, &m);
        else if (log_refusal(v))
            VLOG(v, XFER_LOG_WARN, VB_NAME ": agent '%s' sent a handshake "
                 "ask on a connection this side opened; ignored",
                 xfer__stream_conn_name(c));
    } else if (m.type == VB_HS_QPREQ) {
        on_qpreq(v, c, &m);
    } else if (log_refusal(v)) {
        VLOG(v, XFER_LOG_WARN, VB_NAME ": agent '%s' sent a handshake "
             "answer nobody asked for; ignored", xfer__stream_conn_name(c));
    }
}

static bool c_dead(void *peer)
{
    return atomic_load(&((vb_peer_t *)peer)->dead);
}

static bool c_waiting(void *peer)
{
    vb_peer_t *p = peer;
    bool waiting;

    pthread_mutex_lock(&p->olock);
    waiting = p->sh != NULL;
    pthread_mutex_unlock(&p->olock);
    return waiting;
}

/* chan_lock -> lock -> olock. */
static xfer_status_t c_credit(void *peer, const void *msg, size_t len,
                              uint64_t *lost)
{
    vb_peer_t *p = peer;
    vb_t *v = p->v;
    xfer_status_t st;

    pthread_mutex_lock(&v->lock);
    pthread_mutex_lock(&p->olock);
    st = xfer__ns_send_apply(&p->ns, msg, len, lost);
    if (st == XFER_OK)
        vb__notif_pump(v, p);
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&v->lock);
    return st;
}

static void c_death(void *peer, xfer_status_t st, const char *why)
{
    vb_peer_t *p = peer;

    vb__peer_kill(p->v, p, st, why);
}

static const xfer__hwctl_ops_t ctl_ops = {
    .dead = c_dead,
    .waiting = c_waiting,
    .on_credit = c_credit,
    .on_death = c_death,
    .on_msg = c_msg,
};

xfer_status_t vb__ctl_open(vb_t *v)
{
    xfer__hwctl_cfg_t cfg = {
        .addr = v->cfg.addr,
        .port = v->cfg.ctl_port,
        .advertise = v->cfg.advertise,
        .timeout_ms = v->cfg.timeout_ms,
        .msg_max = VB_HS_MAX,
        .lim = v->cfg.lim,
    };

    return xfer__hwctl_open(&v->ctl, v->host, VB_NAME, &cfg, &ctl_ops,
                            &v->ns, v->epfd, 0xffffu);
}
