/* ctl.c - the ofi plugin's control channel (chan.h over TCP): connection
 * info, and its callbacks to hwctl.h (tokens, credits, peer death). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <endian.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

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
    memcpy(b + 8, o->ctl.sock.info, XFER__TCPSOCK_INFO_SIZE);
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
    if (xfer__tcpsock_info_check(&o->ctl.sock, b + 8,
                                 XFER__TCPSOCK_INFO_SIZE) != XFER_OK)
        return XFER_ERR_INVALID;
    if (p != NULL) {
        memcpy(p->addr, b + INFO_HEAD, nl);
        p->alen = nl;
    }
    *chan_info = b + 8;
    *chan_len = XFER__TCPSOCK_INFO_SIZE;
    return XFER_OK;
}

/* ---- the control channel's callbacks (hwctl.h) ------------------------ */

static bool c_dead(void *peer)
{
    return atomic_load(&((ofi_peer_t *)peer)->dead);
}

static bool c_waiting(void *peer)
{
    ofi_peer_t *p = peer;
    bool waiting;

    pthread_mutex_lock(&p->olock);
    waiting = p->sh != NULL;
    pthread_mutex_unlock(&p->olock);
    return waiting;
}

/* chan_lock -> ep_lock -> olock. */
static xfer_status_t c_credit(void *peer, const void *msg, size_t len,
                              uint64_t *lost)
{
    ofi_peer_t *p = peer;
    ofi_t *o = p->o;
    xfer_status_t st;

    pthread_mutex_lock(&o->ep_lock);
    pthread_mutex_lock(&p->olock);
    st = xfer__ns_send_apply(&p->ns, msg, len, lost);
    if (st == XFER_OK)
        ofi__notif_pump(o, p);
    pthread_mutex_unlock(&p->olock);
    pthread_mutex_unlock(&o->ep_lock);
    return st;
}

static void c_death(void *peer, xfer_status_t st, const char *why)
{
    ofi_peer_t *p = peer;

    ofi__peer_kill(p->o, p, st, why);
}

static const xfer__hwctl_ops_t ctl_ops = {
    .dead = c_dead,
    .waiting = c_waiting,
    .on_credit = c_credit,
    .on_death = c_death,
};

xfer_status_t ofi__ctl_open(ofi_t *o)
{
    xfer__hwctl_cfg_t cfg = {
        .addr = o->cfg.addr,
        .port = o->cfg.port,
        .advertise = o->cfg.advertise,
        .timeout_ms = o->cfg.timeout_ms,
        .lim = o->cfg.lim,
    };

    return xfer__hwctl_open(&o->ctl, o->host, "ofi", &cfg, &ctl_ops, &o->ns,
                            o->epfd, 0xffffu);
}
