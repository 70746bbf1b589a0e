/* hwctl.c - the control channel of a hardware plugin (hwctl.h): its events,
 * open and close, peers, token asks, and progress once a millisecond. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "plugins/common/clock.h"
#include "plugins/common/hwctl.h"

_Static_assert(offsetof(xfer__hwctl_t, sock) == 0,
               "the tcpsock hooks take the channel as their socket");

#define HERR(h, st, ...) (h)->host->error((h)->host->ctx, (st), __VA_ARGS__)
#define HLOG(h, lvl, ...) (h)->host->log((h)->host->ctx, (lvl), __VA_ARGS__)

/* The channel peer's private slot holds our peer. */
static xfer__hwctl_peer_t **chan_slot(xfer__chan_peer_t *cp)
{
    return xfer__stream_peer_priv((xfer_be_peer_t *)(void *)cp);
}

static xfer__hwctl_peer_t *conn_peer(xfer__stream_conn_t *c)
{
    xfer_be_peer_t *cp = xfer__stream_conn_peer(c);
    xfer__hwctl_peer_t **pp = cp ? xfer__stream_peer_priv(cp) : NULL;

    return pp ? *pp : NULL;
}

/* ---- the channel's events ------------------------------------------- */

static xfer_status_t t_conn_up(void *tctx, xfer__stream_conn_t *c, char *msg,
                               size_t msg_size)
{
    xfer__hwctl_peer_t *hp = conn_peer(c);

    (void)tctx;
    (void)msg;
    (void)msg_size;
    if (xfer__stream_conn_initiator(c) && hp)
        atomic_store(&hp->chan_connected, true);
    return XFER_OK;
}

/* chan_lock held. */
static void t_conn_down(void *tctx, xfer__stream_conn_t *c, xfer_status_t st,
                        const char *why)
{
    xfer__hwctl_t *h = tctx;
    xfer__hwctl_peer_t *hp;
    char reason[240];

    if (!xfer__stream_conn_initiator(c)) {
        xfer__ns_conn_down(h->ns, c);
        return;
    }
    if (!(hp = conn_peer(c)))
        return;
    atomic_store(&hp->chan_connected, false);
    atomic_store(&hp->chan_started, false);
    /* Closing an idle connection is routine: the session (token, credits)
     * lives on at the target, and the next need reopens it.  Notifications
     * still waiting for credits are such a need: the target's acks for
     * them would have come on this connection, and no post may come to
     * reopen it (their requests are complete), so ask again now. */
    if (xfer__stream_conn_idle_closed(c) || hp->cp == NULL) {
        if (hp->cp != NULL && h->ops->waiting(hp->peer))
            xfer__hwctl_want_ask(h, hp);
        return;
    }
    snprintf(reason, sizeof reason, "its control connection closed: %s",
             why ? why : "?");
    h->ops->on_death(hp->peer, st == XFER_ERR_AUTH
                                   ? XFER_ERR_AUTH
                                   : XFER_ERR_REMOTE_DISCONNECT, reason);
}

/* A TOKEN or an ACK from a target we send notifications to: the session
 * takes it, and what waited for it may go. */
static void initiator_msg(xfer__hwctl_t *h, xfer__stream_conn_t *c,
                          const void *msg, size_t len)
{
    xfer__hwctl_peer_t *hp = conn_peer(c);
    uint64_t lost = 0;
    xfer_status_t st;

    if (hp == NULL)
        return;
    st = h->ops->on_credit(hp->peer, msg, len, &lost);
    if (st != XFER_OK)
        HLOG(h, XFER_LOG_WARN, "%s: agent '%s' sent a control message of "
             "%zu bytes that is not a version %u TOKEN, ACK or NOSESS; "
             "ignored",
             h->plugin, hp->name, len, XFER__NS_MSG_VERSION);
    else if (lost != 0)
        HLOG(h, XFER_LOG_WARN, "%s: agent '%s' started a new notification "
             "session: %llu notification(s) it had not acknowledged may "
             "be lost", h->plugin, hp->name, (unsigned long long)lost);
}

/* chan_lock held (the channel calls back from its progress). */
static void t_recv(void *tctx, xfer__stream_conn_t *c, const void *msg,
                   size_t len)
{
    xfer__hwctl_t *h = tctx;
    const unsigned char *b = msg;

    if (len >= 1 && b[0] >= XFER__HWCTL_PLUGIN_MSG) {
        if (h->ops->on_msg != NULL)
            h->ops->on_msg(h, c, xfer__stream_conn_initiator(c) &&
                                         conn_peer(c)
                                     ? conn_peer(c)->peer
                                     : NULL,
                           msg, len);
        else
            HLOG(h, XFER_LOG_WARN, "%s: agent '%s' sent a control message "
                 "of type %u, which this plugin does not use; ignored",
                 h->plugin, xfer__stream_conn_name(c), b[0]);
        return;
    }
    if (xfer__stream_conn_initiator(c))
        initiator_msg(h, c, msg, len);
    else
        xfer__ns_target_msg(h->ns, c, msg, len);
}

/* ---- open and close --------------------------------------------------- */

void xfer__hwctl_init(xfer__hwctl_t *h)
{
    h->sock.lfd = -1;
    h->chan = NULL;
    pthread_mutex_init(&h->chan_lock, NULL);
}

xfer_status_t xfer__hwctl_open(xfer__hwctl_t *h, const xfer_host_t *host,
                               const char *plugin,
                               const xfer__hwctl_cfg_t *cfg,
                               const xfer__hwctl_ops_t *ops,
                               xfer__ns_table_t *ns, int epfd, uint32_t tag)
{
    xfer__tcpsock_cfg_t sc = {
        .name = plugin,
        .addr = cfg->addr,
        .port = cfg->port,
        .advertise = cfg->advertise,
        .nodelay = 1,
        .keepalive = 1,
        .timeout_ms = cfg->timeout_ms,
    };
    xfer__stream_cfg_t cc;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = tag};
    xfer_status_t st;
    size_t msg_max = cfg->msg_max > XFER__NS_MSG_MAX ? cfg->msg_max
                                                     : XFER__NS_MSG_MAX;

    if (msg_max > 4096)
        msg_max = 4096;
    h->host = host;
    h->plugin = plugin;
    h->ops = ops;
    h->ns = ns;
    if ((st = xfer__tcpsock_open(&h->sock, host, &sc)) != XFER_OK)
        return st;
    h->tp = xfer__tcpsock_transport;
    h->tp.conn_up = t_conn_up;
    h->tp.conn_down = t_conn_down;
    memset(&cc, 0, sizeof cc);
    cc.name = plugin;
    cc.timeout_ms = cfg->timeout_ms;
    cc.inline_max = msg_max;
    cc.rx_buf = 16384;
    cc.lim = cfg->lim;
    cc.peer_priv = sizeof(xfer__hwctl_peer_t *);
    st = xfer__chan_create(host, &h->tp, h, &cc, msg_max, t_recv,
                           h->sock.lfd, &h->chan);
    if (st != XFER_OK) {
        h->chan = NULL;
        return st;
    }
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, xfer__chan_fd(h->chan), &ev) < 0)
        return HERR(h, XFER_ERR_BACKEND, "%s: epoll_ctl: %s", plugin,
                    strerror(errno));
    return XFER_OK;
}

void xfer__hwctl_close(xfer__hwctl_t *h)
{
    if (h->chan)
        xfer__chan_destroy(h->chan);
    h->chan = NULL;
    if (h->sock.lfd >= 0)
        xfer__tcpsock_close(&h->sock);
    pthread_mutex_destroy(&h->chan_lock);
}

/* ---- peers ------------------------------------------------------------ */

/* XFER_OK when asked, or when there is nothing to ask (removed, dead);
 * the channel's status when the ask could not be sent. */
static xfer_status_t token_ask(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp)
{
    xfer_status_t st;

    if (hp->cp == NULL || h->ops->dead(hp->peer))
        return XFER_OK;
    st = xfer__chan_send(h->chan, hp->cp, xfer__ns_treq,
                         sizeof xfer__ns_treq);
    if (st == XFER_OK)
        atomic_store(&hp->chan_started, true);
    return st;
}

xfer_status_t xfer__hwctl_peer_add(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp,
                                   void *peer, const char *name,
                                   uint64_t epoch, const void *ci,
                                   size_t cl)
{
    xfer_status_t st;

    hp->peer = peer;
    hp->name = name;
    pthread_mutex_lock(&h->chan_lock);
    st = xfer__chan_peer_add(h->chan, name, epoch, ci, cl, &hp->cp);
    if (st == XFER_OK) {
        *chan_slot(hp->cp) = hp;
        hp->next = h->peers;
        h->peers = hp;
    }
    pthread_mutex_unlock(&h->chan_lock);
    if (st != XFER_OK)
        hp->cp = NULL;
    return st;
}

void xfer__hwctl_peer_remove(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp)
{
    pthread_mutex_lock(&h->chan_lock);
    if (hp->cp != NULL) {
        xfer__chan_peer_t *cp = hp->cp;

        *chan_slot(cp) = NULL;
        hp->cp = NULL;
        xfer__chan_peer_remove(h->chan, cp);
    }
    for (xfer__hwctl_peer_t **pp = &h->peers; *pp; pp = &(*pp)->next) {
        if (*pp == hp) {
            *pp = hp->next;
            break;
        }
    }
    pthread_mutex_unlock(&h->chan_lock);
}

xfer_status_t xfer__hwctl_peer_connect(xfer__hwctl_t *h,
                                       xfer__hwctl_peer_t *hp)
{
    xfer_status_t st;

    pthread_mutex_lock(&h->chan_lock);
    if (!atomic_load(&hp->chan_started))
        (void)token_ask(h, hp);
    st = hp->cp ? xfer__chan_connect(h->chan, hp->cp)
                : XFER_ERR_REMOTE_DISCONNECT;
    pthread_mutex_unlock(&h->chan_lock);
    return st;
}

/* ---- asks and progress ------------------------------------------------ */

void xfer__hwctl_start(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp)
{
    if (atomic_load(&hp->chan_started))
        return;
    pthread_mutex_lock(&h->chan_lock);
    if (!atomic_load(&hp->chan_started))
        (void)token_ask(h, hp);
    pthread_mutex_unlock(&h->chan_lock);
}

void xfer__hwctl_want_ask(xfer__hwctl_t *h, xfer__hwctl_peer_t *hp)
{
    atomic_store(&hp->want_ask, true);
    atomic_store(&h->ask_due, true);
}

bool xfer__hwctl_due(xfer__hwctl_t *h)
{
    return atomic_load(&h->ns->ack_due) || atomic_load(&h->ask_due);
}

/* The channel is looked at once per millisecond at most (each look is an
 * epoll_wait: on a stream of small transfers it was a system call per
 * progress call for nothing), and always when asked to (arm, before the
 * thread sleeps) or when an ask or an ack is due.  An ask that could not
 * be sent stays wanted: notifications waiting for its token or credits
 * would otherwise wait for good. */
int xfer__hwctl_progress(xfer__hwctl_t *h, bool force)
{
    uint64_t now = xfer__now_ms();
    bool look = force || now != atomic_load(&h->ctl_ms);
    int n = 0;

    if (!look && !xfer__hwctl_due(h))
        return 0;
    if (pthread_mutex_trylock(&h->chan_lock) != 0)
        return 0;
    if (look) {
        atomic_store(&h->ctl_ms, now);
        n = xfer__chan_progress(h->chan);
    }
    if (atomic_exchange(&h->ask_due, false))
        for (xfer__hwctl_peer_t *hp = h->peers; hp; hp = hp->next)
            if (atomic_exchange(&hp->want_ask, false) &&
                token_ask(h, hp) != XFER_OK)
                xfer__hwctl_want_ask(h, hp);
    n += xfer__ns_acks(h->ns); /* once half a window is due */
    pthread_mutex_unlock(&h->chan_lock);
    return n < 0 ? 0 : n;
}
