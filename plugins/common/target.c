/* target.c - the target side of the stream engine: incoming WRITE, READ_REQ and
 * NOTIF frames checked against the registration table, and local registrations. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdlib.h>
#include <string.h>

#include "plugins/common/stream-int.h"

#define LOG XFER__LOG
#define ERR XFER__ERR

static void notif_handle(conn_t *c, const void *msg, size_t len, void *owned)
{
    xfer_be_t *be = c->be;
    txe_t *e;

    if (!c->hold) {
        be->host->notif_deliver(be->host->ctx, c->name, msg, len);
        free(owned);
        return;
    }
    /* A READ answer (or an earlier notification) is still queued: this
     * one waits behind it, which keeps both promises, data first and
     * notifications in order. */
    e = xfer__stream_txe_get(be);
    if (!owned && len) {
        owned = malloc(len);
        if (owned)
            memcpy(owned, msg, len);
    }
    if (!e || (len && !owned)) {
        free(owned);
        if (e)
            xfer__stream_txe_put(be, e);
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "no memory to queue a notification");
        return;
    }
    e->kind = XFER__TX_DELIVER;
    e->heap = owned;
    e->heap_len = len;
    e->niov = 0;
    xfer__stream_txq_push(c, e);
}

static void refused(conn_t *c, const char *op, const xfer_wire_hdr_t *h,
                    const char *msg)
{
    LOG(c->be, XFER_LOG_WARN,
        "refused %s from agent '%s' (%s): descriptor %u, key 0x%016llx, "
        "addr 0x%llx, %llu bytes: %s",
        op, c->name, c->where, (unsigned)h->seg, (unsigned long long)h->arg0,
        (unsigned long long)h->arg1, (unsigned long long)h->len, msg);
}

static int write_frame(conn_t *c, const xfer_wire_hdr_t *h, size_t avail)
{
    const xfer_host_t *host = c->be->host;
    size_t payload = h->len;
    char msg[256];
    void *m;
    xfer_status_t st;

    if (h->len > XFER__STREAM_LEN_MAX) {
        XFER__VIOLATION(c, "WRITE of %llu bytes", (unsigned long long)h->len);
        return 1;
    }
    if (c->wr_active ? (h->tag != c->wr_tag || h->seg != c->wr_next)
                     : h->seg != 0) {
        XFER__VIOLATION(c, "WRITE frame out of sequence");
        return 1;
    }
    if (payload && payload <= c->be->cfg.inline_max && avail < payload)
        return 0;
    c->head += XFER_WIRE_HDR_SIZE;
    if (!c->wr_active) {
        c->wr_active = 1;
        c->wr_tag = h->tag;
        c->wr_next = 0;
        c->wr_err = XFER_OK;
        c->wr_err_seg = 0;
    }
    c->wr_next++;
    /* The check comes before any byte reaches the destination. */
    st = host->mem_check(host->ctx, h->arg0, h->arg1, h->len,
                         XFER_ACCESS_WRITE, &m, msg, sizeof msg);
    if (st == XFER_OK) {
        if ((c->rmem = m))
            c->rmem->inflight++;
        xfer__stream_body_start(c, h, (void *)(uintptr_t)h->arg1, payload);
    } else {
        refused(c, "WRITE", h, msg);
        if (c->wr_err == XFER_OK) {
            c->wr_err = st;
            c->wr_err_seg = h->seg;
        }
        xfer__stream_body_start(c, h, NULL, payload);
    }
    return 1;
}

static int read_frame(conn_t *c, const xfer_wire_hdr_t *h)
{
    const xfer_host_t *host = c->be->host;
    char msg[256];
    void *m;
    xfer_status_t st;
    txe_t *e;

    if (h->len > XFER__STREAM_LEN_MAX) {
        XFER__VIOLATION(c, "READ of %llu bytes", (unsigned long long)h->len);
        return 1;
    }
    e = xfer__stream_txe_get(c->be);
    if (!e) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "out of memory");
        return 1;
    }
    c->head += XFER_WIRE_HDR_SIZE;
    e->kind = XFER__TX_RESP;
    st = host->mem_check(host->ctx, h->arg0, h->arg1, h->len,
                         XFER_ACCESS_READ, &m, msg, sizeof msg);
    if (st == XFER_OK) {
        /* Zero copy: the answer is sent from the registered memory. */
        xfer__stream_ctrl_hdr(e, XFER_WIRE_READ_RESP, h->seg, h->tag, 0, 0,
                              h->len);
        e->v[1].iov_base = (void *)(uintptr_t)h->arg1;
        e->v[1].iov_len = h->len;
        e->niov = 2;
        if ((e->mem = m))
            e->mem->inflight++;
    } else {
        refused(c, "READ", h, msg);
        xfer__stream_ctrl_hdr(e, XFER_WIRE_READ_RESP, h->seg, h->tag,
                              (uint64_t)(int64_t)st, 0, 0);
    }
    xfer__stream_txq_push(c, e);
    return 1;
}

static int notif_frame(conn_t *c, const xfer_wire_hdr_t *h, size_t avail)
{
    size_t payload = h->len;

    if (h->len > XFER_NOTIF_MAX) {
        XFER__VIOLATION(c, "notification of %llu bytes",
                        (unsigned long long)h->len);
        return 1;
    }
    if (payload <= c->be->cfg.inline_max) {
        if (avail < payload)
            return 0;
        c->head += XFER_WIRE_HDR_SIZE;
        notif_handle(c, c->buf + c->head, payload, NULL);
        c->head += payload;
        return 1;
    }
    c->head += XFER_WIRE_HDR_SIZE;
    if (!(c->rheap = malloc(payload))) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "out of memory");
        return 1;
    }
    xfer__stream_body_start(c, h, c->rheap, payload);
    return 1;
}

static int target_frame(conn_t *c, const xfer_wire_hdr_t *h, size_t avail)
{
    if (c->wr_active && h->type != XFER_WIRE_WRITE) {
        XFER__VIOLATION(c, "frame type %u inside a WRITE request", h->type);
        return 1;
    }
    switch (h->type) {
    case XFER_WIRE_WRITE:
        return write_frame(c, h, avail);
    case XFER_WIRE_READ_REQ:
        return read_frame(c, h);
    case XFER_WIRE_NOTIF:
        return notif_frame(c, h, avail);
    default:
        XFER__VIOLATION(c, "frame type %u sent to a target", h->type);
        return 1;
    }
}

static void target_body_done(conn_t *c)
{
    const xfer_wire_hdr_t *h = &c->rh;
    txe_t *e;

    if (h->type == XFER_WIRE_NOTIF) {
        notif_handle(c, c->rheap, h->len, c->rheap);
        c->rheap = NULL;
        return;
    }
    /* WRITE */
    if (c->rmem) {
        c->rmem->inflight--;
        c->rmem = NULL;
    }
    if (!(h->flags & XFER_WIRE_F_LAST))
        return;
    c->wr_active = 0;
    e = xfer__stream_txe_get(c->be);
    if (!e) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "out of memory");
        return;
    }
    e->kind = XFER__TX_CTRL;
    xfer__stream_ctrl_hdr(e, XFER_WIRE_ACK, c->wr_err_seg, h->tag,
                          (uint64_t)(int64_t)c->wr_err, c->wr_next, 0);
    xfer__stream_txq_push(c, e);
}

const xfer__stream_role_t xfer__stream_target = {
    .frame = target_frame,
    .body_done = target_body_done,
};

/* ------------------------------------------------------------------ */
/* Local registrations                                                 */
/* ------------------------------------------------------------------ */

#define MEM_AT(size) (((size) + 15u) & ~(size_t)15u)

xfer_status_t xfer__stream_mem_register(xfer_be_t *be,
                                        const xfer_be_region_t *r, void **mem)
{
    smem_t *m;

    if (r->type != XFER_MEM_DRAM)
        return ERR(be, XFER_ERR_NOT_SUPPORTED,
                   "%s moves DRAM only (memory type %d)", be->cfg.name,
                   (int)r->type);
    if (!(m = calloc(1, MEM_AT(sizeof *m) + be->cfg.mem_priv)))
        return ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
    m->addr = r->addr;
    m->len = r->len;
    m->key = r->key;
    m->next = be->mems;
    if (be->mems)
        be->mems->prev = m;
    be->mems = m;
    *mem = m;
    return XFER_OK;
}

void *xfer__stream_mem_priv(void *mem)
{
    return (char *)mem + MEM_AT(sizeof(smem_t));
}

/* A READ answer not yet sent from m gets its own copy of the bytes. */
static int detach(conn_t *c, txe_t *e, smem_t *m)
{
    size_t sent = e->idx == 0 ? 0 : e->off;
    size_t rem = e->v[1].iov_len - sent;
    void *copy = malloc(rem ? rem : 1);

    if (!copy) {
        /* Cannot keep the stream whole without the bytes. */
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "no memory to detach a READ answer from a "
                                "deregistered region");
        return -1;
    }
    memcpy(copy, (char *)e->v[1].iov_base + sent, rem);
    e->heap = copy;
    e->v[1].iov_base = copy;
    e->v[1].iov_len = rem;
    if (e->idx == 1)
        e->off = 0;
    e->mem = NULL;
    m->inflight--;
    return 0;
}

/* After this returns no byte of the region is touched: a WRITE being
 * received into it is discarded and answered with an error, READ
 * answers not yet sent from it are copied out first. */
void xfer__stream_mem_deregister(xfer_be_t *be, void *mem)
{
    smem_t *m = mem;

    if (!m)
        return;
    for (conn_t *c = be->conns, *next; c && m->inflight; c = next) {
        next = c->next;
        if (c->rmem == m) {
            c->rmem = NULL;
            m->inflight--;
            c->dest = NULL;
            if (c->wr_err == XFER_OK) {
                c->wr_err = XFER_ERR_ACCESS;
                c->wr_err_seg = c->rh.seg;
            }
            LOG(be, XFER_LOG_WARN,
                "WRITE from agent '%s' into key 0x%016llx discarded: the "
                "region was deregistered during the transfer",
                c->name, (unsigned long long)m->key);
        }
        for (txe_t *e = c->txh; e; e = e->next)
            if (e->mem == m && detach(c, e, m) < 0)
                break;
    }
    if (m->prev)
        m->prev->next = m->next;
    else
        be->mems = m->next;
    if (m->next)
        m->next->prev = m->prev;
    free(m);
}
