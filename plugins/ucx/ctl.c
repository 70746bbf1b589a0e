/* ctl.c - the ucx plugin's control channel (chan.h over TCP): connection
 * info, and its callbacks to hwctl.h (tokens, credits, peer death). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/ucx/ucx.h"

/* Connection info (docs/wire-ucx.md), little-endian:
 *   0 u32 magic "XUCX"   4 u8 version (1)   5 u8 workers (1..16)
 *   6 u16 zero           8 u8[24] the control channel's tcp address
 *   32 per worker: u16 length, then that UCP worker address */
#define INFO_MAGIC 0x58435558u
#define INFO_VERSION 1u
#define INFO_HEAD (8u + XFER__TCPSOCK_INFO_SIZE)

/* The control messages are nsess.h's (TREQ, TOKEN, ACK). */

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
    memcpy(b + 8, u->ctl.sock.info, XFER__TCPSOCK_INFO_SIZE);
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
    if (xfer__tcpsock_info_check(&u->ctl.sock, b + 8,
                                 XFER__TCPSOCK_INFO_SIZE) != XFER_OK)
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

/* ---- the control channel's callbacks (hwctl.h) ------------------------ */

static bool c_dead(void *peer)
{
    return atomic_load(&((ucx_peer_t *)peer)->dead);
}

static bool c_waiting(void *peer)
{
    ucx_peer_t *p = peer;
    bool waiting;

    pthread_mutex_lock(&p->olock);
    waiting = p->sh != NULL;
    pthread_mutex_unlock(&p->olock);
    return waiting;
}

/* Notifications go on worker 0 (chan_lock -> worker lock -> olock). */
static xfer_status_t c_credit(void *peer, const void *msg, size_t len,
                              uint64_t *lost)
{
    ucx_peer_t *p = peer;
    ucx_worker_t *w = &p->u->w[0];
    xfer_status_t st;

    pthread_mutex_lock(&w->lock);
    pthread_mutex_lock(&p->olock);
    st = xfer__ns_send_apply(&p->ns, msg, len, lost);
    /* Its process answered the token request sent since the timeout:
     * endpoints may be made again (ucx__ep_get).  Only an answer (TOKEN
     * or NOSESS) says so: an ACK may have been queued before a cut. */
    if (st == XFER_OK && xfer__ns_is_answer(msg, len))
        atomic_store(&p->unheard, false);
    if (st == XFER_OK)
        ucx__notif_pump(p->u, p, 0);
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&w->lock);
    return st;
}

static void c_death(void *peer, xfer_status_t st, const char *why)
{
    ucx_peer_t *p = peer;

    ucx__peer_kill(p->u, p, st, why);
}

static const xfer__hwctl_ops_t ctl_ops = {
    .dead = c_dead,
    .waiting = c_waiting,
    .on_credit = c_credit,
    .on_death = c_death,
};

xfer_status_t ucx__ctl_open(ucx_t *u)
{
    xfer__hwctl_cfg_t cfg = {
        .addr = u->cfg.addr,
        .port = u->cfg.port,
        .advertise = u->cfg.advertise,
        .timeout_ms = u->cfg.timeout_ms,
        .lim = u->cfg.lim,
    };

    return xfer__hwctl_open(&u->ctl, u->host, "ucx", &cfg, &ctl_ops, &u->ns,
                            u->epfd, 0xffffu);
}
