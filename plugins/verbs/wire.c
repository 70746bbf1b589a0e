/* wire.c - the verbs plugin's bytes outside the fabric (wire.h): its
 * connection info and the queue-pair handshake, written and strictly read. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "plugins/verbs/wire.h"

#define INFO_HEAD 8u           /* magic, version, rails, reserved */
#define HS_HEAD 8u             /* type, version, rails, status, gen */
#define HS_QP_WIRE (VB_PORT_WIRE + 8u)
#define QP_FIELD_MAX 0xffffffu /* qpn and psn are 24 bits */
#define LID_UNICAST_MAX 0xbfffu

/* Explicit little-endian bytes: the layout never depends on the host's
 * byte order or a compiler's struct padding. */
static void put16(unsigned char *b, uint16_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)v;
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

static uint16_t get16(const unsigned char *b)
{
    return (uint16_t)(b[0] | (unsigned)b[1] << 8);
}

static uint32_t get32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}

/* The sentence for a refusal; why may be NULL or of size 0. */
static void say(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t why_size, const char *fmt, ...)
{
    va_list ap;

    if (why == NULL || why_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
}

static void port_put(unsigned char *b, const vb_port_addr_t *a)
{
    b[0] = a->link;
    b[1] = a->mtu;
    put16(b + 2, a->lid);
    memcpy(b + 4, a->gid, sizeof a->gid);
}

static void port_get(const unsigned char *b, vb_port_addr_t *a)
{
    a->link = b[0];
    a->mtu = b[1];
    a->lid = get16(b + 2);
    memcpy(a->gid, b + 4, sizeof a->gid);
}

bool vb__port_check(const vb_port_addr_t *a, char *why, size_t why_size)
{
    static const uint8_t zero[16];

    if (a->link != VB_LINK_IB && a->link != VB_LINK_ETH) {
        say(why, why_size, "link layer %u not understood (1 InfiniBand, "
            "2 Ethernet)", a->link);
        return false;
    }
    if (a->mtu < VB_MTU_MIN || a->mtu > VB_MTU_MAX) {
        say(why, why_size, "MTU %u out of range (%u..%u)", a->mtu,
            VB_MTU_MIN, VB_MTU_MAX);
        return false;
    }
    if (a->link == VB_LINK_IB &&
        (a->lid == 0 || a->lid > LID_UNICAST_MAX)) {
        say(why, why_size, "InfiniBand port with LID 0x%x, not a unicast "
            "LID (0x1..0x%x)", a->lid, LID_UNICAST_MAX);
        return false;
    }
    if (a->link == VB_LINK_ETH && memcmp(a->gid, zero, sizeof zero) == 0) {
        say(why, why_size, "RoCE port with a zero GID");
        return false;
    }
    return true;
}

/* ---- connection info ------------------------------------------------ */

size_t vb__info_encode(void *buf, size_t size, const vb_port_addr_t *rails,
                       unsigned nrails, const void *chan, size_t chan_len)
{
    unsigned char *b = buf;
    size_t need, off;

    if (nrails == 0 || nrails > VB_MAX_RAILS || chan_len > UINT32_MAX ||
        (chan == NULL && chan_len > 0))
        return 0;
    need = INFO_HEAD + (size_t)nrails * VB_PORT_WIRE + 4u;
    if (size < need || size - need < chan_len)
        return 0;
    memcpy(b, VB_INFO_MAGIC, 4);
    b[4] = VB_INFO_VERSION;
    b[5] = (unsigned char)nrails;
    put16(b + 6, 0);
    off = INFO_HEAD;
    for (unsigned i = 0; i < nrails; i++, off += VB_PORT_WIRE)
        port_put(b + off, &rails[i]);
    put32(b + off, (uint32_t)chan_len);
    off += 4;
    if (chan_len > 0)
        memcpy(b + off, chan, chan_len);
    return off + chan_len;
}

xfer_status_t vb__info_decode(const void *buf, size_t len,
                              vb_port_addr_t *rails, unsigned *nrails,
                              const void **chan, size_t *chan_len,
                              char *why, size_t why_size)
{
    const unsigned char *b = buf;
    vb_port_addr_t got[VB_MAX_RAILS];
    char pw[160];
    unsigned n;
    size_t off, need;
    uint32_t cl;

    if (len < INFO_HEAD) {
        say(why, why_size, "truncated: %zu bytes, the header alone is %u",
            len, INFO_HEAD);
        return XFER_ERR_INVALID;
    }
    if (memcmp(b, VB_INFO_MAGIC, 4) != 0) {
        say(why, why_size, "bad magic (not verbs connection info)");
        return XFER_ERR_INVALID;
    }
    if (b[4] != VB_INFO_VERSION) {
        say(why, why_size, "version %u not understood (this one reads %u)",
            b[4], VB_INFO_VERSION);
        return XFER_ERR_INVALID;
    }
    n = b[5];
    if (n == 0 || n > VB_MAX_RAILS) {
        say(why, why_size, "%u rails out of range (1..%u)", n, VB_MAX_RAILS);
        return XFER_ERR_INVALID;
    }
    if (get16(b + 6) != 0) {
        say(why, why_size, "reserved field 0x%x not zero", get16(b + 6));
        return XFER_ERR_INVALID;
    }
    need = INFO_HEAD + (size_t)n * VB_PORT_WIRE + 4u;
    if (len < need) {
        say(why, why_size, "truncated: %zu bytes, %u rails and the control "
            "channel's length need %zu", len, n, need);
        return XFER_ERR_INVALID;
    }
    off = INFO_HEAD;
    for (unsigned i = 0; i < n; i++, off += VB_PORT_WIRE) {
        port_get(b + off, &got[i]);
        if (!vb__port_check(&got[i], pw, sizeof pw)) {
            say(why, why_size, "rail %u: %s", i, pw);
            return XFER_ERR_INVALID;
        }
    }
    cl = get32(b + off);
    off += 4;
    if (cl > len - off) {
        say(why, why_size, "truncated: the control channel's part says %u "
            "bytes, %zu remain", cl, len - off);
        return XFER_ERR_INVALID;
    }
    if (len - off > cl) {
        say(why, why_size, "trailing bytes: %zu after the control "
            "channel's part", len - off - cl);
        return XFER_ERR_INVALID;
    }
    memcpy(rails, got, n * sizeof got[0]);
    *nrails = n;
    *chan = b + off;
    *chan_len = cl;
    return XFER_OK;
}

/* ---- the handshake -------------------------------------------------- */

/* The rails a message may carry: at least one, but for a refusal. */
static unsigned hs_min_rails(unsigned type, unsigned status)
{
    return type == VB_HS_QPREP && status != VB_HS_OK ? 0u : 1u;
}

size_t vb__hs_encode(const vb_hs_t *m, void *buf, size_t size)
{
    unsigned char *b = buf;
    size_t need, off;

    if (m->type != VB_HS_QPREQ && m->type != VB_HS_QPREP)
        return 0;
    if (m->nrails < hs_min_rails(m->type, m->status) ||
        m->nrails > VB_MAX_RAILS)
        return 0;
    need = HS_HEAD + (size_t)m->nrails * HS_QP_WIRE;
    if (size < need)
        return 0;
    b[0] = m->type;
    b[1] = VB_HS_VERSION;
    b[2] = (unsigned char)m->nrails;
    b[3] = m->type == VB_HS_QPREP ? m->status : 0;
    put32(b + 4, m->gen);
    off = HS_HEAD;
    for (unsigned i = 0; i < m->nrails; i++, off += HS_QP_WIRE) {
        port_put(b + off, &m->qp[i].port);
        put32(b + off + VB_PORT_WIRE, m->qp[i].qpn);
        put32(b + off + VB_PORT_WIRE + 4, m->qp[i].psn);
    }
    return off;
}

static const char *hs_name(unsigned type)
{
    return type == VB_HS_QPREQ ? "QPREQ" : "QPREP";
}

xfer_status_t vb__hs_decode(const void *buf, size_t len, vb_hs_t *m,
                            char *why, size_t why_size)
{
    const unsigned char *b = buf;
    vb_hs_t got;
    char pw[160];
    size_t need, off;
    bool check;

    if (len < HS_HEAD) {
        say(why, why_size, "truncated: %zu bytes, the header alone is %u",
            len, HS_HEAD);
        return XFER_ERR_INVALID;
    }
    memset(&got, 0, sizeof got);
    got.type = b[0];
    got.status = b[3];
    got.nrails = b[2];
    got.gen = get32(b + 4);
    if (got.type != VB_HS_QPREQ && got.type != VB_HS_QPREP) {
        say(why, why_size, "message type 0x%02x not understood", got.type);
        return XFER_ERR_INVALID;
    }
    if (b[1] != VB_HS_VERSION) {
        say(why, why_size, "%s version %u not understood (this one reads "
            "%u)", hs_name(got.type), b[1], VB_HS_VERSION);
        return XFER_ERR_INVALID;
    }
    if (got.type == VB_HS_QPREQ && got.status != 0) {
        say(why, why_size, "QPREQ with status %u (a request carries 0)",
            got.status);
        return XFER_ERR_INVALID;
    }
    if (got.type == VB_HS_QPREP && got.status != VB_HS_OK &&
        got.status != VB_HS_NO_ROOM && got.status != VB_HS_FAILED) {
        say(why, why_size, "QPREP status %u not understood", got.status);
        return XFER_ERR_INVALID;
    }
    if (got.nrails < hs_min_rails(got.type, got.status) ||
        got.nrails > VB_MAX_RAILS) {
        say(why, why_size, "%s with %u rails out of range (%u..%u)",
            hs_name(got.type), got.nrails,
            hs_min_rails(got.type, got.status), VB_MAX_RAILS);
        return XFER_ERR_INVALID;
    }
    need = HS_HEAD + (size_t)got.nrails * HS_QP_WIRE;
    if (len != need) {
        say(why, why_size, "%s: %zu bytes, %u rails make %zu",
            len < need ? "truncated" : "trailing bytes", len, got.nrails,
            need);
        return XFER_ERR_INVALID;
    }
    /* A refusal's addresses mean nothing and are not looked at. */
    check = got.type == VB_HS_QPREQ || got.status == VB_HS_OK;
    off = HS_HEAD;
    for (unsigned i = 0; i < got.nrails; i++, off += HS_QP_WIRE) {
        vb_qp_addr_t *q = &got.qp[i];

        port_get(b + off, &q->port);
        q->qpn = get32(b + off + VB_PORT_WIRE);
        q->psn = get32(b + off + VB_PORT_WIRE + 4);
        if (!check)
            continue;
        if (!vb__port_check(&q->port, pw, sizeof pw)) {
            say(why, why_size, "%s rail %u: %s", hs_name(got.type), i, pw);
            return XFER_ERR_INVALID;
        }
        if (q->qpn > QP_FIELD_MAX || q->psn > QP_FIELD_MAX) {
            say(why, why_size, "%s rail %u: %s 0x%x over 24 bits",
                hs_name(got.type), i, q->qpn > QP_FIELD_MAX ? "QPN" : "PSN",
                q->qpn > QP_FIELD_MAX ? q->qpn : q->psn);
            return XFER_ERR_INVALID;
        }
    }
    *m = got;
    return XFER_OK;
}
