/* txq.c - the send queue of a connection: entries of iovecs with a cursor,
 * gathered into one sendmsg, small pieces staged, an fd riding with its frame. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "plugins/common/stream-int.h"

/* One sendmsg need not describe a whole 1 GiB request: past this the
 * socket is full anyway and rebuilding the array is wasted work. */
#define GATHER_BYTES (8u << 20)
/* Pieces this small are copied into one staging buffer instead of being
 * handed to the kernel one iovec each: a 1024-descriptor post of small
 * frames becomes one contiguous send, and per-iovec kernel cost (far more
 * than a 48-byte memcpy) disappears. */
#define STAGE_PIECE 512u

txe_t *xfer__stream_txe_get(xfer_be_t *be)
{
    txe_t *e = be->free_txe;

    if (e)
        be->free_txe = e->next;
    else if (!(e = malloc(sizeof *e)))
        return NULL;
    memset(e, 0, sizeof *e);
    e->iov = e->v;
    return e;
}

void xfer__stream_txe_put(xfer_be_t *be, txe_t *e)
{
    e->next = be->free_txe;
    be->free_txe = e;
}

/* Drop an entry that will not be sent: give back what it holds. */
void xfer__stream_txe_drop(conn_t *c, txe_t *e)
{
    e->queued = 0;
    if (e->kind == XFER__TX_REQ)
        return;
    if (e->has_fd)
        close(e->fd);
    e->has_fd = 0;
    if (e->kind == XFER__TX_RESP || e->kind == XFER__TX_DELIVER) {
        c->hold--;
        c->txbytes -= e->qbytes;
        if (e->kind == XFER__TX_DELIVER)
            c->nq_pend -= e->heap_len;
    }
    if (e->mem)
        e->mem->inflight--;
    free(e->heap);
    xfer__stream_txe_put(c->be, e);
}

void xfer__stream_txq_push(conn_t *c, txe_t *e)
{
    e->next = NULL;
    e->queued = 1;
    if (c->txt)
        c->txt->next = e;
    else
        c->txh = e;
    c->txt = e;
    c->txn++;
    if (e->kind == XFER__TX_RESP || e->kind == XFER__TX_DELIVER) {
        /* READ payload referenced in place, or a notification's copy:
         * what a peer's requests make us hold, bounded by sendq_bytes. */
        e->qbytes = e->kind == XFER__TX_DELIVER ? e->heap_len
                    : e->niov > 1               ? e->v[1].iov_len
                                                : 0;
        c->hold++;
        c->txbytes += e->qbytes;
    }
    xfer__stream_timer_need(c->be);
}

int xfer__stream_unlink(void *headp, void *tailp, void *node, size_t link)
{
    void **pp = headp, *prev = NULL;

    while (*pp && *pp != node) {
        prev = *pp;
        pp = (void **)((char *)*pp + link);
    }
    if (!*pp)
        return 0;
    *pp = *(void **)((char *)node + link);
    if (*(void **)tailp == node)
        *(void **)tailp = prev;
    return 1;
}

void xfer__stream_txq_unlink(conn_t *c, txe_t *e)
{
    if (!xfer__stream_unlink(&c->txh, &c->txt, e, offsetof(txe_t, next)))
        return;
    c->txn--;
    e->queued = 0;
}

/* An entry whose bytes are all on the wire is finished here; a deliver
 * marker reaching the head means every READ answer before it has left
 * our memory, which is the promise a READ notification makes. */
static void txe_sent(conn_t *c, txe_t *e)
{
    xfer_be_t *be = c->be;

    if (e->kind == XFER__TX_DELIVER)
        be->host->notif_deliver(be->host->ctx, c->name, e->heap,
                                e->heap_len);
    xfer__stream_txe_drop(c, e);
}

static void tx_advance(conn_t *c, size_t n)
{
    txe_t *e;

    while ((e = c->txh)) {
        while (e->idx < e->niov) {
            size_t rem = e->iov[e->idx].iov_len - e->off;

            if (rem > n) {
                e->off += n;
                return;
            }
            n -= rem;
            e->idx++;
            e->off = 0;
        }
        c->txh = e->next;
        if (!c->txh)
            c->txt = NULL;
        c->txn--;
        txe_sent(c, e);
    }
}

void xfer__stream_flush(conn_t *c)
{
    xfer_be_t *be = c->be;
    struct msghdr m;
    ssize_t n;

    if (c->connecting || c->closed)
        return;
    for (;;) {
        size_t total = 0, staged = 0;
        int cnt = 0;
        txe_t *e, *fd_e = NULL;
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int))];
        } cm;

        tx_advance(c, 0);
        if (!c->txh)
            break;
        for (e = c->txh;
             e && cnt < XFER__STREAM_GATHER_MAX && total < GATHER_BYTES;
             e = e->next) {
            /* An fd travels with the first byte of its own sendmsg, so
             * that the receiver gets it with its frame's bytes. */
            if (e->has_fd && e != c->txh)
                break;
            if (e->has_fd)
                fd_e = e;
            for (int i = e->idx; i < e->niov &&
                                 cnt < XFER__STREAM_GATHER_MAX &&
                                 total < GATHER_BYTES;
                 i++) {
                size_t skip = i == e->idx ? e->off : 0;
                size_t len = e->iov[i].iov_len - skip;
                const char *base;

                if (!len)
                    continue;
                /* An empty piece may have no base (a frame without a
                 * body): no arithmetic on it. */
                base = (const char *)e->iov[i].iov_base + skip;
                total += len;
                if (len <= STAGE_PIECE &&
                    staged + len <= XFER__STREAM_STAGE_SIZE) {
                    uint8_t *dst = be->stage + staged;

                    memcpy(dst, base, len);
                    staged += len;
                    if (cnt && (uint8_t *)be->gather[cnt - 1].iov_base +
                                       be->gather[cnt - 1].iov_len == dst) {
                        be->gather[cnt - 1].iov_len += len;
                        continue;
                    }
                    base = (const char *)dst;
                }
                be->gather[cnt].iov_base = (void *)base;
                be->gather[cnt].iov_len = len;
                cnt++;
            }
            if (fd_e)
                break;
        }
        memset(&m, 0, sizeof m);
        m.msg_iov = be->gather;
        m.msg_iovlen = (size_t)cnt;
        if (fd_e) {
            memset(&cm, 0, sizeof cm);
            m.msg_control = cm.b;
            m.msg_controllen = sizeof cm.b;
            cm.h.cmsg_level = SOL_SOCKET;
            cm.h.cmsg_type = SCM_RIGHTS;
            cm.h.cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(&cm.h), &fd_e->fd, sizeof(int));
        }
        n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (n > 0 && fd_e) {
            close(fd_e->fd);
            fd_e->has_fd = 0;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->blocked = 1;
                break;
            }
            xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT,
                                    XFER_LOG_WARN, "send failed: %s",
                                    strerror(errno));
            return;
        }
        c->idle_ticks = 0;
        c->active = 1;
        tx_advance(c, (size_t)n);
        if ((size_t)n < total) {
            /* A short write means the socket is full: wait for EPOLLOUT
             * rather than spend a syscall to hear EAGAIN. */
            c->blocked = 1;
            break;
        }
    }
    if (!c->txh)
        c->blocked = 0;
    xfer__stream_conn_events(c);
}

/* Queue an entry and push it out at once when nothing waits before it,
 * so a small post costs one sendmsg and no EPOLLOUT round. */
void xfer__stream_txq_send(conn_t *c, txe_t *e)
{
    xfer__stream_txq_push(c, e);
    if (!c->blocked)
        xfer__stream_flush(c);
}

void xfer__stream_ctrl_hdr(txe_t *e, uint8_t type, uint32_t seg, uint64_t tag,
                           uint64_t arg0, uint64_t arg1, uint64_t len)
{
    e->hdr.type = type;
    e->hdr.seg = seg;
    e->hdr.tag = tag;
    e->hdr.arg0 = arg0;
    e->hdr.arg1 = arg1;
    e->hdr.len = len;
    xfer_wire_encode(&e->hdr, &e->hdr);
    e->v[0].iov_base = &e->hdr;
    e->v[0].iov_len = XFER_WIRE_HDR_SIZE;
    e->niov = 1;
}

/* An entry for a frame of one message (NOTIF, MSG), copied; NULL (with
 * the sentence set) when out of memory. */
txe_t *xfer__stream_msg_entry(xfer_be_t *be, uint8_t type, const void *msg,
                              size_t len)
{
    txe_t *e = xfer__stream_txe_get(be);

    if (!e || (len && !(e->heap = malloc(len)))) {
        if (e)
            xfer__stream_txe_put(be, e);
        XFER__ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
        return NULL;
    }
    if (len)
        memcpy(e->heap, msg, len);
    e->kind = XFER__TX_CTRL;
    xfer__stream_ctrl_hdr(e, type, 0, 0, 0, 0, len);
    e->v[1].iov_base = e->heap;
    e->v[1].iov_len = len;
    e->niov = 2;
    return e;
}

/* Send an entry from xfer__stream_msg_entry on c; the sentence when the
 * send closed the connection names what was being sent. */
xfer_status_t xfer__stream_msg_send(conn_t *c, txe_t *e, const char *what)
{
    xfer__stream_txq_send(c, e);
    if (c->closed)
        return XFER__ERR(c->be, XFER_ERR_REMOTE_DISCONNECT,
                         "%s: connection to agent '%s' (%s) failed while "
                         "sending %s",
                         c->be->cfg.name, c->name, c->where, what);
    return XFER_OK;
}
