/* target.c - the target side of the stream engine: incoming WRITE, READ_REQ and
 * NOTIF frames checked against the registration table (notifications within the
 * agent's queue bound), and local registrations. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/common/stream-int.h"

#define LOG XFER__LOG
#define ERR XFER__ERR

/* Whether the agent's queue takes a notification of len bytes from c's
 * peer now; if not, c is not read until it does (backpressure: nothing
 * is dropped, and the frame stays where it is, so a NOTIF behind a WRITE
 * is delivered once, later).  Notifications waiting behind READ answers
 * on c count as queued already, so that they too fit when delivered. */
static int notif_room(conn_t *c, size_t len)
{
    const xfer_host_t *h = c->be->host;

    if (h->size < offsetof(xfer_host_t, notif_room) + sizeof h->notif_room ||
        !h->notif_room || h->notif_room(h->ctx, c->name, len + c->nq_pend))
        return 1;
    xfer__stream_conn_nwait(c);
    return 0;
}

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
    c->nq_pend += len;
    xfer__stream_txq_push(c, e);
}

/* An operation passed the check against registration m: the transport
 * may queue frames ahead of its answer.  1 when that closed c. */
static int checked(conn_t *c, void *m)
{
    xfer_be_t *be = c->be;

    if (m && be->tp->mem_checked)
        be->tp->mem_checked(be->tctx, c, m);
    return c->closed;
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

/* The WRITE request's sequence: a frame continues the request being
 * received, or starts one at descriptor 0. */
static int write_seq(conn_t *c, const xfer_wire_hdr_t *h)
{
    if (c->wr_active ? (h->tag != c->wr_tag || h->seg != c->wr_next)
                     : h->seg != 0) {
        XFER__VIOLATION(c, "WRITE frame out of sequence");
        return -1;
    }
    if (!c->wr_active) {
        c->wr_active = 1;
        c->wr_tag = h->tag;
        c->wr_next = 0;
        c->wr_err = XFER_OK;
        c->wr_err_seg = 0;
    }
    return 0;
}

static void write_refused(conn_t *c, xfer_status_t st, uint32_t seg)
{
    if (c->wr_err == XFER_OK) {
        c->wr_err = st;
        c->wr_err_seg = seg;
    }
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
    (void)write_seq(c, h);
    c->wr_next++;
    /* The check comes before any byte reaches the destination. */
    st = host->mem_check(host->ctx, h->arg0, h->arg1, h->len,
                         XFER_ACCESS_WRITE, &m, msg, sizeof msg);
    if (st == XFER_OK && checked(c, m))
        return 1;
    if (st == XFER_OK) {
        if ((c->rmem = m))
            c->rmem->inflight++;
        xfer__stream_body_start(c, h, (void *)(uintptr_t)h->arg1, payload);
    } else {
        refused(c, "WRITE", h, msg);
        write_refused(c, st, h->seg);
        xfer__stream_body_start(c, h, NULL, payload);
    }
    return 1;
}

/* A WRITEV frame: its table is received as a body of its own into
 * c->wb_tab; the payloads follow, one body per entry. */
static int writev_frame(conn_t *c, const xfer_wire_hdr_t *h)
{
    uint64_t n = h->arg0;

    if (!n || n > XFER_WIRE_BATCH_MAX || h->arg1 > XFER__STREAM_LEN_MAX ||
        h->len != n * XFER_WIRE_ENTRY_SIZE + h->arg1) {
        XFER__VIOLATION(c, "WRITEV of %llu entries, %llu payload bytes in "
                        "a frame of %llu",
                        (unsigned long long)n, (unsigned long long)h->arg1,
                        (unsigned long long)h->len);
        return 1;
    }
    if (c->wr_active && c->wr_next + n < c->wr_next) {
        XFER__VIOLATION(c, "WRITEV descriptor index overflows");
        return 1;
    }
    if (write_seq(c, h) < 0)
        return 1;
    c->head += XFER_WIRE_HDR_SIZE;
    c->wb_state = XFER__WB_TABLE;
    c->wb_n = (uint32_t)n;
    c->wb_i = 0;
    xfer__stream_body_start(c, h, c->wb_tab,
                            (size_t)n * XFER_WIRE_ENTRY_SIZE);
    return 1;
}

/* Check entries [i, j) one by one: a refused one names its index. */
static void writev_check_each(conn_t *c, uint32_t i, uint32_t j)
{
    const xfer_host_t *host = c->be->host;

    for (; i < j; i++) {
        const xfer_wire_entry_t *t = &c->wb_tab[i];
        char msg[256];
        void *m;
        xfer_status_t st;

        st = host->mem_check(host->ctx, t->key, t->addr, t->len,
                             XFER_ACCESS_WRITE, &m, msg, sizeof msg);
        if (st == XFER_OK && m) {
            c->wb_mem[i] = m;
            if (checked(c, m))
                return;
            continue;
        }
        if (st == XFER_OK)
            snprintf(msg, sizeof msg, "no registration behind the key");
        {
            xfer_wire_hdr_t e = c->rh;

            e.seg = c->rh.seg + i;
            e.arg0 = t->key;
            e.arg1 = t->addr;
            e.len = t->len;
            refused(c, "WRITE", &e, msg);
        }
        c->wb_mem[i] = NULL;
        write_refused(c, st == XFER_OK ? XFER_ERR_ACCESS : st,
                      c->rh.seg + i);
    }
}

/* The table arrived: decode it, check that it adds up, and check every
 * run of entries with one key once, over the span the run covers (a
 * registration is one interval, so the span is inside it exactly when
 * every entry is); a run that fails is checked entry by entry, so the
 * refusal names the descriptor. */
static void writev_table(conn_t *c)
{
    const xfer_host_t *host = c->be->host;
    uint64_t sum = 0;
    uint32_t n = c->wb_n, i, j;

    for (i = 0; i < n; i++) {
        xfer_wire_entry_t *t = &c->wb_tab[i];

        t->key = le64toh(t->key);
        t->addr = le64toh(t->addr);
        t->len = le64toh(t->len);
        if (t->len > XFER__STREAM_LEN_MAX) {
            XFER__VIOLATION(c, "WRITEV entry %u of %llu bytes", (unsigned)i,
                            (unsigned long long)t->len);
            return;
        }
        sum += t->len;
    }
    if (sum != c->rh.arg1) {
        XFER__VIOLATION(c, "WRITEV entries add up to %llu bytes, the "
                        "header says %llu",
                        (unsigned long long)sum,
                        (unsigned long long)c->rh.arg1);
        return;
    }
    for (i = 0; i < n; i = j) {
        uint64_t key = c->wb_tab[i].key, lo = UINT64_MAX, hi = 0;
        int ok = 1;
        char msg[256];
        void *m = NULL;

        for (j = i; j < n && c->wb_tab[j].key == key; j++) {
            const xfer_wire_entry_t *t = &c->wb_tab[j];

            /* An empty or wrapping entry is refused on its own. */
            if (!t->len || t->addr + t->len < t->addr)
                ok = 0;
            if (t->addr < lo)
                lo = t->addr;
            if (t->addr + t->len > hi)
                hi = t->addr + t->len;
        }
        if (ok && host->mem_check(host->ctx, key, lo, hi - lo,
                                  XFER_ACCESS_WRITE, &m, msg,
                                  sizeof msg) == XFER_OK && m) {
            for (uint32_t k = i; k < j; k++)
                c->wb_mem[k] = m;
            if (checked(c, m))
                return;
            continue;
        }
        writev_check_each(c, i, j);
        if (c->closed)
            return;
    }
    c->wr_next += n;
    c->wb_state = XFER__WB_DATA;
}

/* Start receiving entry wb_i's payload, into place or discarded. */
static void writev_piece(conn_t *c)
{
    const xfer_wire_entry_t *t = &c->wb_tab[c->wb_i];
    smem_t *m = c->wb_mem[c->wb_i];

    if ((c->rmem = m))
        m->inflight++;
    xfer__stream_body_start(c, &c->rh, m ? (void *)(uintptr_t)t->addr : NULL,
                            (size_t)t->len);
}

static size_t target_rx_sg(conn_t *c, struct iovec *iov, size_t max)
{
    size_t k = 0;

    if (c->rh.type != XFER_WIRE_WRITEV || c->wb_state != XFER__WB_DATA)
        return 0;
    for (uint32_t i = c->wb_i + 1; i < c->wb_n && c->wb_mem[i]; i++) {
        uint8_t *d = (uint8_t *)(uintptr_t)c->wb_tab[i].addr;
        size_t len = (size_t)c->wb_tab[i].len;

        if (k && (uint8_t *)iov[k - 1].iov_base + iov[k - 1].iov_len == d) {
            iov[k - 1].iov_len += len;
            continue;
        }
        if (k == max)
            break;
        iov[k].iov_base = d;
        iov[k].iov_len = len;
        k++;
    }
    return k;
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
    if (st == XFER_OK && checked(c, m)) {
        xfer__stream_txe_put(c->be, e);
        return 1;
    }
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
    if (!notif_room(c, payload))
        return 0;
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
    if (c->wr_active && h->type != XFER_WIRE_WRITE &&
        h->type != XFER_WIRE_WRITEV) {
        XFER__VIOLATION(c, "frame type %u inside a WRITE request", h->type);
        return 1;
    }
    switch (h->type) {
    case XFER_WIRE_WRITE:
        return write_frame(c, h, avail);
    case XFER_WIRE_WRITEV:
        return writev_frame(c, h);
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
    if (h->type == XFER_WIRE_WRITEV && c->wb_state == XFER__WB_TABLE) {
        writev_table(c);
        if (!c->closed)
            writev_piece(c);
        return;
    }
    /* WRITE, or one WRITEV entry */
    if (c->rmem) {
        c->rmem->inflight--;
        c->rmem = NULL;
    }
    if (h->type == XFER_WIRE_WRITEV) {
        if (++c->wb_i < c->wb_n) {
            writev_piece(c);
            return;
        }
        c->wb_state = XFER__WB_NONE;
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
    .rx_sg = target_rx_sg,
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

/* A READ answer from m not begun yet becomes an error answer (ACCESS,
 * no payload): the peer's request fails at that descriptor, the stream
 * stays in step, and nothing is copied, however much a peer queued.  One
 * already partly on the wire cannot change any more: its connection
 * goes (the peer's requests on it fail; it reconnects at its next post). */
static int answer_fail(conn_t *c, txe_t *e, smem_t *m)
{
    xfer_wire_hdr_t h;

    if (e->idx || e->off) {
        xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                                "a READ answer was being sent from region "
                                "0x%016llx as it was deregistered",
                                (unsigned long long)m->key);
        return -1;
    }
    xfer_wire_decode(&h, &e->hdr);
    xfer__stream_ctrl_hdr(e, XFER_WIRE_READ_RESP, h.seg, h.tag,
                          (uint64_t)(int64_t)XFER_ERR_ACCESS, 0, 0);
    c->txbytes -= e->qbytes;
    e->qbytes = 0;
    e->mem = NULL;
    m->inflight--;
    return 0;
}

/* After this returns no byte of the region is touched: a WRITE being
 * received into it is discarded and answered with an error, READ
 * answers not yet sent from it are failed (answer_fail).  The work is
 * a walk over the queues, no copy: bounded by max_conns times 8192
 * entries, and no other connection is closed or delayed. */
void xfer__stream_mem_deregister(xfer_be_t *be, void *mem)
{
    smem_t *m = mem;

    if (!m)
        return;
    for (conn_t *c = be->conns, *next; c; c = next) {
        int hit = 0;
        size_t nfail;

        next = c->next;
        /* Entries of a WRITEV still to come that were checked against
         * m are refused now: their payload will be discarded. */
        if (c->wb_state == XFER__WB_DATA)
            for (uint32_t i = c->wb_i + 1; i < c->wb_n; i++)
                if (c->wb_mem[i] == m) {
                    c->wb_mem[i] = NULL;
                    write_refused(c, XFER_ERR_ACCESS, c->rh.seg + i);
                    hit = 1;
                }
        if (c->rmem == m) {
            c->rmem = NULL;
            m->inflight--;
            c->dest = NULL;
            write_refused(c, XFER_ERR_ACCESS,
                          c->rh.seg + (c->rh.type == XFER_WIRE_WRITEV
                                           ? c->wb_i
                                           : 0));
            hit = 1;
        }
        if (hit) {
            LOG(be, XFER_LOG_WARN,
                "WRITE from agent '%s' into key 0x%016llx discarded: the "
                "region was deregistered during the transfer",
                c->name, (unsigned long long)m->key);
        }
        nfail = 0;
        for (txe_t *e = c->txh; e && m->inflight; e = e->next) {
            if (e->mem != m)
                continue;
            if (answer_fail(c, e, m) < 0)
                break;
            nfail++;
        }
        if (nfail)
            LOG(be, XFER_LOG_WARN,
                "%zu READ answers to agent '%s' (%s) queued from key "
                "0x%016llx fail: the region was deregistered first",
                nfail, c->name, c->where, (unsigned long long)m->key);
    }
    if (m->prev)
        m->prev->next = m->next;
    else
        be->mems = m->next;
    if (m->next)
        m->next->prev = m->prev;
    free(m);
}
