/* ctl.c - the ucx plugin's control channel (chan.h over TCP): connection
 * info, identity, notification tokens and credits, and peer death. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "plugins/ucx/ucx.h"

/* Connection info (docs/wire-ucx.md), little-endian:
 *   0 u32 magic "XUCX"   4 u8 version (1)   5 u8 workers (1..16)
 *   6 u16 zero           8 u8[24] the control channel's tcp address
 *   32 per worker: u16 length, then that UCP worker address */
#define INFO_MAGIC 0x58435558u
#define INFO_VERSION 1u
#define INFO_HEAD (8u + XFER__TCPSOCK_INFO_SIZE)

/* The control messages are nsess.h's (TREQ, TOKEN, ACK). */

static ucx_peer_t **peer_slot(xfer__stream_conn_t *c)
{
    xfer_be_peer_t *cp = xfer__stream_conn_peer(c);

    return cp ? xfer__stream_peer_priv(cp) : NULL;
}

/* ---- connection info ------------------------------------------------ */

xfer_status_t ucx__info_build(ucx_t *u)
{
    unsigned char *b = u->info;
    size_t off = INFO_HEAD;
    uint32_t magic = htole32(INFO_MAGIC);

    memcpy(b, &magic, 4);
    b[4] = INFO_VERSION;
    b[5] = (unsigned char)u->nw;
    b[6] = b[7] = 0;
    memcpy(b + 8, u->sock.info, XFER__TCPSOCK_INFO_SIZE);
    for (unsigned i = 0; i < u->nw; i++) {
        ucp_address_t *a;
        size_t alen;
        uint16_t l;
        ucs_status_t s = ucp_worker_get_address(u->w[i].w, &a, &alen);

        if (s != UCS_OK)
            return UERR(u, XFER_ERR_BACKEND, "ucx: ucp_worker_get_address: "
                        "%s", ucs_status_string(s));
        if (alen == 0 || alen > 0xffff || off + 2 + alen > sizeof u->info) {
            ucp_worker_release_address(u->w[i].w, a);
            return UERR(u, XFER_ERR_CONFIG, "ucx: the addresses of %u "
                        "workers do not fit in %u bytes of connection info: "
                        "use fewer workers, transports (tls) or devices",
                        u->nw, XFER_BE_BLOB_MAX);
        }
        l = htole16((uint16_t)alen);
        memcpy(b + off, &l, 2);
        memcpy(b + off + 2, a, alen);
        off += 2 + alen;
        ucp_worker_release_address(u->w[i].w, a);
    }
    u->info_len = off;
    return XFER_OK;
}

xfer_status_t ucx__info_parse(ucx_t *u, const char *name, const void *info,
                              size_t len, ucx_peer_t *p,
                              const void **chan_info, size_t *chan_len)
{
    const unsigned char *b = info;
    uint32_t magic;
    size_t off = INFO_HEAD;
    unsigned nw;

    if (len < INFO_HEAD + 3)
        return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': connection info "
                    "of %zu bytes is too short", name, len);
    memcpy(&magic, b, 4);
    if (le32toh(magic) != INFO_MAGIC || b[4] != INFO_VERSION)
        return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': connection info "
                    "is not version %u ucx info (bad magic or version %u)",
                    name, INFO_VERSION, b[4]);
    nw = b[5];
    if (nw < 1 || nw > UCX_MAX_WORKERS || b[6] || b[7])
        return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': connection info "
                    "names %u workers (1 to %u)", name, nw, UCX_MAX_WORKERS);
    if (xfer__tcpsock_info_check(&u->sock, b + 8, XFER__TCPSOCK_INFO_SIZE) !=
        XFER_OK)
        return XFER_ERR_INVALID;
    for (unsigned i = 0; i < nw; i++) {
        uint16_t l;

        if (off + 2 > len)
            return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': connection "
                        "info ends before worker %u", name, i);
        memcpy(&l, b + off, 2);
        l = le16toh(l);
        if (l == 0 || off + 2 + l > len)
            return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': worker %u's "
                        "address of %u bytes overruns the connection info",
                        name, i, l);
        if (p != NULL) {
            p->waddr[i] = malloc(l);
            if (p->waddr[i] == NULL)
                return XFER_ERR_NOMEM;
            memcpy(p->waddr[i], b + off + 2, l);
            p->wlen[i] = l;
            p->nrw = i + 1;
        }
        off += 2 + (size_t)l;
    }
    if (off != len)
        return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': %zu bytes after "
                    "the last worker address", name, len - off);
    *chan_info = b + 8;
    *chan_len = XFER__TCPSOCK_INFO_SIZE;
    return XFER_OK;
}

/* ---- the channel's events ------------------------------------------- */

static xfer_status_t t_info_check(void *tctx, const void *info, size_t len)
{
    return xfer__tcpsock_info_check(&((ucx_t *)tctx)->sock, info, len);
}

static int t_connect(void *tctx, const void *info, size_t len,
                     int *in_progress)
{
    return xfer__tcpsock_connect(&((ucx_t *)tctx)->sock, info, len,
                                 in_progress);
}

static int t_accepted(void *tctx, int fd)
{
    return xfer__tcpsock_accepted(&((ucx_t *)tctx)->sock, fd);
}

static void t_info_str(void *tctx, const void *info, size_t len, char *buf,
                       size_t size)
{
    xfer__tcpsock_info_str(&((ucx_t *)tctx)->sock, info, len, buf, size);
}

static xfer_status_t t_conn_up(void *tctx, xfer__stream_conn_t *c, char *msg,
                               size_t msg_size)
{
    ucx_peer_t **pp = peer_slot(c);

    (void)tctx;
    (void)msg;
    (void)msg_size;
    if (xfer__stream_conn_initiator(c) && pp && *pp)
        atomic_store(&(*pp)->chan_connected, true);
    return XFER_OK;
}

/* chan_lock held. */
static void t_conn_down(void *tctx, xfer__stream_conn_t *c, xfer_status_t st,
                        const char *why)
{
    ucx_t *u = tctx;
    ucx_peer_t **pp;
    ucx_peer_t *p;
    char reason[240];

    if (!xfer__stream_conn_initiator(c)) {
        xfer__ns_conn_down(&u->ns, c);
        return;
    }
    if (!(pp = peer_slot(c)) || !(p = *pp))
        return;
    atomic_store(&p->chan_connected, false);
    atomic_store(&p->chan_started, false);
    /* Closing an idle connection is routine: the session (token, credits)
     * lives on at the target, and the next need reopens it.  Notifications
     * still waiting for credits are such a need: the target's acks for
     * them would have come on this connection, and no post may come to
     * reopen it (their requests are complete), so ask again now. */
    if (xfer__stream_conn_idle_closed(c) || p->cp == NULL) {
        bool waiting;

        pthread_mutex_lock(&p->olock);
        waiting = p->sh != NULL && p->cp != NULL;
        pthread_mutex_unlock(&p->olock);
        if (waiting) {
            atomic_store(&p->want_ask, true);
            atomic_store(&u->ask_due, true);
        }
        return;
    }
    snprintf(reason, sizeof reason, "its control connection closed: %s",
             why ? why : "?");
    ucx__peer_kill(u, p, st == XFER_ERR_AUTH ? XFER_ERR_AUTH
                                             : XFER_ERR_REMOTE_DISCONNECT,
                   reason);
}

/* A TOKEN or an ACK from a target we send notifications to: the session
 * takes it, and what waited for it may go. */
static void initiator_msg(ucx_t *u, xfer__stream_conn_t *c,
                          const void *msg, size_t len)
{
    ucx_peer_t **pp = peer_slot(c);
    ucx_peer_t *p = pp ? *pp : NULL;
    ucx_worker_t *w = &u->w[0];
    xfer_status_t st;
    uint64_t lost;

    if (p == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    pthread_mutex_lock(&p->olock);
    st = xfer__ns_send_apply(&p->ns, msg, len, &lost);
    if (st == XFER_OK)
        ucx__notif_pump(u, p, 0);
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&w->lock);
    if (st != XFER_OK)
        ULOG(u, XFER_LOG_WARN, "agent '%s' sent a control message of "
             "%zu bytes that is not a version %u TOKEN or ACK; ignored",
             p->name, len, XFER__NS_MSG_VERSION);
    else if (lost != 0)
        ULOG(u, XFER_LOG_WARN, "agent '%s' started a new notification "
             "session: %llu notification(s) it had not acknowledged may "
             "be lost", p->name, (unsigned long long)lost);
}

/* chan_lock held (the channel calls back from its progress). */
static void t_recv(void *tctx, xfer__stream_conn_t *c, const void *msg,
                   size_t len)
{
    ucx_t *u = tctx;

    if (xfer__stream_conn_initiator(c))
        initiator_msg(u, c, msg, len);
    else
        xfer__ns_target_msg(&u->ns, c, msg, len);
}

/* ---- open, progress, ask, ack ---------------------------------------- */

xfer_status_t ucx__ctl_open(ucx_t *u)
{
    xfer__tcpsock_cfg_t sc = {
        .name = "ucx",
        .addr = u->cfg.addr,
        .port = u->cfg.port,
        .advertise = u->cfg.advertise,
        .nodelay = 1,
        .keepalive = 1,
        .timeout_ms = u->cfg.timeout_ms,
    };
    xfer__stream_cfg_t cc;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0xffffu};
    xfer_status_t st;

    if ((st = xfer__tcpsock_open(&u->sock, u->host, &sc)) != XFER_OK)
        return st;
    u->tp.info_check = t_info_check;
    u->tp.connect = t_connect;
    u->tp.accepted = t_accepted;
    u->tp.info_str = t_info_str;
    u->tp.conn_up = t_conn_up;
    u->tp.conn_down = t_conn_down;
    memset(&cc, 0, sizeof cc);
    cc.name = "ucx";
    cc.timeout_ms = u->cfg.timeout_ms;
    cc.inline_max = XFER__NS_MSG_MAX;
    cc.rx_buf = 16384;
    cc.lim = u->cfg.lim;
    cc.peer_priv = sizeof(ucx_peer_t *);
    st = xfer__chan_create(u->host, &u->tp, u, &cc, XFER__NS_MSG_MAX, t_recv,
                           u->sock.lfd, &u->chan);
    if (st != XFER_OK) {
        u->chan = NULL;
        return st;
    }
    if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, xfer__chan_fd(u->chan), &ev) < 0)
        return UERR(u, XFER_ERR_BACKEND, "ucx: epoll_ctl: %s",
                    strerror(errno));
    return XFER_OK;
}

void ucx__ctl_close(ucx_t *u)
{
    if (u->chan)
        xfer__chan_destroy(u->chan);
    u->chan = NULL;
    if (u->sock.lfd >= 0)
        xfer__tcpsock_close(&u->sock);
}

void ucx__ctl_token_ask(ucx_t *u, ucx_peer_t *p)
{
    if (p->cp == NULL || atomic_load(&p->dead))
        return;
    if (xfer__chan_send(u->chan, p->cp, xfer__ns_treq,
                        sizeof xfer__ns_treq) == XFER_OK)
        atomic_store(&p->chan_started, true);
}

void ucx__ctl_start(ucx_t *u, ucx_peer_t *p)
{
    if (atomic_load(&p->chan_started))
        return;
    pthread_mutex_lock(&u->chan_lock);
    if (!atomic_load(&p->chan_started))
        ucx__ctl_token_ask(u, p);
    pthread_mutex_unlock(&u->chan_lock);
}

/* The channel is looked at once per millisecond at most (each look is an
 * epoll_wait: on a stream of small transfers it was a system call per
 * progress call for nothing), and always when asked to (arm, before the
 * thread sleeps) or when an ask or an ack is due. */
int ucx__ctl_progress(ucx_t *u, bool force)
{
    uint64_t now = ucx__now_ms();
    bool look = force || now != atomic_load(&u->ctl_ms);
    int n = 0;

    if (!look && !atomic_load(&u->ask_due) &&
        !atomic_load(&u->ns.ack_due))
        return 0;
    if (pthread_mutex_trylock(&u->chan_lock) != 0)
        return 0;
    if (look) {
        atomic_store(&u->ctl_ms, now);
        n = xfer__chan_progress(u->chan);
    }
    if (atomic_exchange(&u->ask_due, false))
        for (ucx_peer_t *p = u->peers; p; p = p->next)
            if (atomic_exchange(&p->want_ask, false))
                ucx__ctl_token_ask(u, p);
    n += xfer__ns_acks(&u->ns); /* once half a window is due */
    pthread_mutex_unlock(&u->chan_lock);
    return n < 0 ? 0 : n;
}
