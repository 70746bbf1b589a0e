/* ctl.c - the ofi plugin's control channel (chan.h over TCP): connection
 * info, identity, notification tokens and credits, and peer death. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "plugins/ofi/ofi.h"

/* Connection info (docs/wire-ofi.md), little-endian:
 *   0 u32 magic "XOFI"   4 u8 version (1)   5 u8 zero   6 u16 name length
 *   8 u8[24] the control channel's tcp address
 *  32 u32 the address format (FI_SOCKADDR_IN ...)   36 u32 zero
 *  40 char[32] the provider's name, NUL-padded
 *  72 the endpoint's name (fi_getname), that many bytes */
#define INFO_MAGIC 0x49464f58u
#define INFO_VERSION 1u
#define INFO_PROV 32u
#define INFO_HEAD (40u + INFO_PROV)

_Static_assert(offsetof(struct xfer_be, sock) == 0,
               "the tcpsock hooks take the instance as their socket");

static ofi_peer_t **peer_slot(xfer__stream_conn_t *c)
{
    xfer_be_peer_t *cp = xfer__stream_conn_peer(c);

    return cp ? xfer__stream_peer_priv(cp) : NULL;
}

/* ---- connection info ------------------------------------------------ */

xfer_status_t ofi__info_build(ofi_t *o)
{
    unsigned char *b = o->info_blob;
    uint32_t magic = htole32(INFO_MAGIC);
    uint32_t fmt = htole32(o->info->addr_format);
    uint16_t nl = htole16((uint16_t)o->name_len);
    const char *prov = o->info->fabric_attr->prov_name;

    if (strlen(prov) >= INFO_PROV || INFO_HEAD + o->name_len > sizeof
        o->info_blob)
        return OERR(o, XFER_ERR_BACKEND, "ofi: provider name '%s' or an "
                    "endpoint name of %zu bytes does not fit the connection "
                    "info", prov, o->name_len);
    memset(b, 0, INFO_HEAD);
    memcpy(b, &magic, 4);
    b[4] = INFO_VERSION;
    memcpy(b + 6, &nl, 2);
    memcpy(b + 8, o->sock.info, XFER__TCPSOCK_INFO_SIZE);
    memcpy(b + 32, &fmt, 4);
    memcpy(b + 40, prov, strlen(prov));
    memcpy(b + INFO_HEAD, o->name, o->name_len);
    o->info_len = INFO_HEAD + o->name_len;
    return XFER_OK;
}

/* Whether a peer's endpoint name is one the provider can take: what the
 * address vector would hand to a provider unchecked (a string it opens,
 * a sockaddr it connects to) is checked here first. */
static xfer_status_t name_check(ofi_t *o, const char *who,
                                const unsigned char *a, size_t len)
{
    switch (o->info->addr_format) {
    case FI_SOCKADDR_IN: {
        struct sockaddr_in sin;

        if (len != sizeof sin)
            break;
        memcpy(&sin, a, sizeof sin);
        if (sin.sin_family != AF_INET || sin.sin_port == 0 ||
            sin.sin_addr.s_addr == htonl(INADDR_ANY))
            break;
        return XFER_OK;
    }
    case FI_SOCKADDR_IN6: {
        struct sockaddr_in6 s6;

        if (len != sizeof s6)
            break;
        memcpy(&s6, a, sizeof s6);
        if (s6.sin6_family != AF_INET6 || s6.sin6_port == 0)
            break;
        return XFER_OK;
    }
    case FI_ADDR_STR: {
        /* "fi_shm://..." and the like: printable, the same scheme as
         * ours, NUL-terminated within the length. */
        const char *colon = memchr(o->name, ':', o->name_len);
        size_t scheme = colon ? (size_t)(colon - (const char *)o->name) : 0;
        size_t sl = strnlen((const char *)a, len);

        if (sl == 0 || sl == len || len - sl > 1 || sl < scheme + 3 ||
            memcmp(a, o->name, scheme + 1) != 0)
            break;
        for (size_t i = 0; i < sl; i++)
            if (a[i] < 0x21 || a[i] > 0x7e)
                goto bad;
        return XFER_OK;
    }
    default:
        /* A provider's own format (FI_ADDR_EFA, FI_ADDR_CXI ...): its
         * names have one size. */
        if (len == o->name_len)
            return XFER_OK;
        break;
    }
bad:
    return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': its endpoint name of "
                "%zu bytes is not a valid address of format %u for %s",
                who, len, o->info->addr_format,
                o->info->fabric_attr->prov_name);
}

xfer_status_t ofi__info_parse(ofi_t *o, const char *name, const void *info,
                              size_t len, ofi_peer_t *p,
                              const void **chan_info, size_t *chan_len)
{
    const unsigned char *b = info;
    const char *prov = o->info->fabric_attr->prov_name;
    char theirs[INFO_PROV + 1];
    uint32_t magic, fmt;
    uint16_t nl;
    xfer_status_t st;

    if (len < INFO_HEAD + 1)
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': connection info "
                    "of %zu bytes is too short", name, len);
    memcpy(&magic, b, 4);
    if (le32toh(magic) != INFO_MAGIC || b[4] != INFO_VERSION || b[5])
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': connection info "
                    "is not version %u ofi info (bad magic or version %u)",
                    name, INFO_VERSION, b[4]);
    memcpy(&nl, b + 6, 2);
    nl = le16toh(nl);
    if ((size_t)nl + INFO_HEAD != len || nl > sizeof p->addr)
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': an endpoint name "
                    "of %u bytes in connection info of %zu", name, nl, len);
    memcpy(theirs, b + 40, INFO_PROV);
    theirs[INFO_PROV] = '\0';
    if (strnlen((const char *)b + 40, INFO_PROV) == INFO_PROV ||
        strcmp(theirs, prov) != 0)
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s' uses provider "
                    "'%.32s', this agent '%s': both sides need the same",
                    name, theirs, prov);
    memcpy(&fmt, b + 32, 4);
    if (le32toh(fmt) != o->info->addr_format)
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': address format "
                    "%u, this side's is %u (another fabric or address "
                    "family: set domain or fabric the same on both)", name,
                    le32toh(fmt), o->info->addr_format);
    if ((st = name_check(o, name, b + INFO_HEAD, nl)) != XFER_OK)
        return st;
    if (xfer__tcpsock_info_check(&o->sock, b + 8, XFER__TCPSOCK_INFO_SIZE) !=
        XFER_OK)
        return XFER_ERR_INVALID;
    if (p != NULL) {
        memcpy(p->addr, b + INFO_HEAD, nl);
        p->alen = nl;
    }
    *chan_info = b + 8;
    *chan_len = XFER__TCPSOCK_INFO_SIZE;
    return XFER_OK;
}

/* ---- the channel's events ------------------------------------------- */

static xfer_status_t t_conn_up(void *tctx, xfer__stream_conn_t *c, char *msg,
                               size_t msg_size)
{
    ofi_peer_t **pp = peer_slot(c);

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
    ofi_t *o = tctx;
    ofi_peer_t **pp;
    ofi_peer_t *p;
    char reason[240];

    if (!xfer__stream_conn_initiator(c)) {
        xfer__ns_conn_down(&o->ns, c);
        return;
    }
    if (!(pp = peer_slot(c)) || !(p = *pp))
        return;
    atomic_store(&p->chan_connected, false);
    atomic_store(&p->chan_started, false);
    /* Closing an idle connection is routine: the session lives on at the
     * target and the next need reopens it.  Notifications waiting for
     * credits are such a need (their acks would have come on this
     * connection, and no post may come to reopen it): ask again now. */
    if (xfer__stream_conn_idle_closed(c) || p->cp == NULL) {
        bool waiting;

        pthread_mutex_lock(&p->olock);
        waiting = p->sh != NULL && p->cp != NULL;
        pthread_mutex_unlock(&p->olock);
        if (waiting) {
            atomic_store(&p->want_ask, true);
            atomic_store(&o->ask_due, true);
        }
        return;
    }
    snprintf(reason, sizeof reason, "its control connection closed: %s",
             why ? why : "?");
    ofi__peer_kill(o, p, st == XFER_ERR_AUTH ? XFER_ERR_AUTH
                                             : XFER_ERR_REMOTE_DISCONNECT,
                   reason);
}

/* A TOKEN or an ACK from a target we send notifications to. */
static void initiator_msg(ofi_t *o, xfer__stream_conn_t *c, const void *m,
                          size_t len)
{
    ofi_peer_t **pp = peer_slot(c);
    ofi_peer_t *p = pp ? *pp : NULL;
    uint64_t lost = 0;
    xfer_status_t st;

    if (p == NULL)
        return;
    pthread_mutex_lock(&o->ep_lock);
    pthread_mutex_lock(&p->olock);
    st = xfer__ns_send_apply(&p->ns, m, len, &lost);
    if (st == XFER_OK)
        ofi__notif_pump(o, p);
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&o->ep_lock);
    if (st != XFER_OK)
        OLOG(o, XFER_LOG_WARN, "ofi: agent '%s' sent a control message of "
             "%zu bytes that is no token or ack; ignored", p->name, len);
    if (lost)
        OLOG(o, XFER_LOG_WARN, "ofi: agent '%s' started a new notification "
             "session: %llu notification(s) it had not acknowledged may be "
             "lost", p->name, (unsigned long long)lost);
}

/* chan_lock held (the channel calls back from its progress). */
static void t_recv(void *tctx, xfer__stream_conn_t *c, const void *msg,
                   size_t len)
{
    ofi_t *o = tctx;

    if (xfer__stream_conn_initiator(c))
        initiator_msg(o, c, msg, len);
    else
        xfer__ns_target_msg(&o->ns, c, msg, len);
}

/* ---- open, progress, ask --------------------------------------------- */

xfer_status_t ofi__ctl_open(ofi_t *o)
{
    xfer__tcpsock_cfg_t sc = {
        .name = "ofi",
        .addr = o->cfg.addr,
        .port = o->cfg.port,
        .advertise = o->cfg.advertise,
        .nodelay = 1,
        .keepalive = 1,
        .timeout_ms = o->cfg.timeout_ms,
    };
    xfer__stream_cfg_t cc;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 0xffffu};
    xfer_status_t st;

    if ((st = xfer__tcpsock_open(&o->sock, o->host, &sc)) != XFER_OK)
        return st;
    o->tp = xfer__tcpsock_transport;
    o->tp.conn_up = t_conn_up;
    o->tp.conn_down = t_conn_down;
    memset(&cc, 0, sizeof cc);
    cc.name = "ofi";
    cc.timeout_ms = o->cfg.timeout_ms;
    cc.inline_max = XFER__NS_MSG_MAX;
    cc.rx_buf = 16384;
    cc.lim = o->cfg.lim;
    cc.peer_priv = sizeof(ofi_peer_t *);
    st = xfer__chan_create(o->host, &o->tp, o, &cc, XFER__NS_MSG_MAX, t_recv,
                           o->sock.lfd, &o->chan);
    if (st != XFER_OK) {
        o->chan = NULL;
        return st;
    }
    if (epoll_ctl(o->epfd, EPOLL_CTL_ADD, xfer__chan_fd(o->chan), &ev) < 0)
        return OERR(o, XFER_ERR_BACKEND, "ofi: epoll_ctl: %s",
                    strerror(errno));
    return XFER_OK;
}

void ofi__ctl_close(ofi_t *o)
{
    if (o->chan)
        xfer__chan_destroy(o->chan);
    o->chan = NULL;
    if (o->sock.lfd >= 0)
        xfer__tcpsock_close(&o->sock);
}

void ofi__ctl_token_ask(ofi_t *o, ofi_peer_t *p)
{
    if (p->cp == NULL || atomic_load(&p->dead))
        return;
    if (xfer__chan_send(o->chan, p->cp, xfer__ns_treq,
                        sizeof xfer__ns_treq) == XFER_OK)
        atomic_store(&p->chan_started, true);
}

void ofi__ctl_start(ofi_t *o, ofi_peer_t *p)
{
    if (atomic_load(&p->chan_started))
        return;
    pthread_mutex_lock(&o->chan_lock);
    if (!atomic_load(&p->chan_started))
        ofi__ctl_token_ask(o, p);
    pthread_mutex_unlock(&o->chan_lock);
}

/* The channel is looked at once per millisecond at most (each look is an
 * epoll_wait), and always when asked to (arm) or when an ask or an ack is
 * due. */
int ofi__ctl_progress(ofi_t *o, bool force)
{
    uint64_t now = ofi__now_ms();
    bool look = force || now != atomic_load(&o->ctl_ms);
    int n = 0;

    if (!look && !atomic_load(&o->ask_due) && !atomic_load(&o->ns.ack_due))
        return 0;
    if (pthread_mutex_trylock(&o->chan_lock) != 0)
        return 0;
    if (look) {
        atomic_store(&o->ctl_ms, now);
        n = xfer__chan_progress(o->chan);
    }
    if (atomic_exchange(&o->ask_due, false))
        for (ofi_peer_t *p = o->peers; p; p = p->next)
            if (atomic_exchange(&p->want_ask, false))
                ofi__ctl_token_ask(o, p);
    n += xfer__ns_acks(&o->ns);
    pthread_mutex_unlock(&o->chan_lock);
    return n < 0 ? 0 : n;
}
