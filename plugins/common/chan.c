/* chan.c - the control channel: the stream engine's connections and handshake
 * with MSG frames as the only traffic, for plugins that move data elsewhere. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdlib.h>

#include "plugins/common/chan.h"
#include "plugins/common/stream-int.h"

/* A channel is an engine instance whose roles are this file's; its
 * peers are the engine's. */
static xfer_be_t *chan_be(xfer__chan_t *ch)
{
    return (xfer_be_t *)(void *)ch;
}

static xfer_be_peer_t *chan_peer(xfer__chan_peer_t *p)
{
    return (xfer_be_peer_t *)(void *)p;
}

static int chan_frame(conn_t *c, const xfer_wire_hdr_t *h, size_t avail)
{
    xfer_be_t *be = c->be;

    if (h->type != XFER_WIRE_MSG || h->seg || h->tag || h->arg0 ||
        h->arg1 || h->flags) {
        XFER__VIOLATION(c, "frame type %u on a control channel", h->type);
        return 1;
    }
    if (h->len > be->msg_max) {
        XFER__VIOLATION(c, "message of %llu bytes (at most %zu)",
                        (unsigned long long)h->len, be->msg_max);
        return 1;
    }
    if (h->len <= be->cfg.inline_max) {
        if (avail < h->len)
            return 0;
        c->head += XFER_WIRE_HDR_SIZE;
        be->recv(be->tctx, c, c->buf + c->head, h->len);
        c->head += h->len;
        return 1;
    }
    c->head += XFER_WIRE_HDR_SIZE;
    if (!(c->rheap = malloc(h->len))) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "out of memory");
        return 1;
    }
    xfer__stream_body_start(c, h, c->rheap, h->len);
    return 1;
}

static void chan_body_done(conn_t *c)
{
    void *msg = c->rheap;

    c->rheap = NULL;
    c->be->recv(c->be->tctx, c, msg, c->rh.len);
    free(msg);
}

static const xfer__stream_role_t chan_role = {
    .frame = chan_frame,
    .body_done = chan_body_done,
};

xfer_status_t xfer__chan_create(const xfer_host_t *host,
                                const xfer__stream_transport_t *tp,
                                void *tctx, const xfer__stream_cfg_t *cfg,
                                size_t msg_max, xfer__chan_recv_t recv,
                                int listen_fd, xfer__chan_t **ch)
{
    xfer_be_t *be;
    xfer_status_t st;

    if (!recv || msg_max > XFER_NOTIF_MAX)
        return host->error(host->ctx, XFER_ERR_INVALID,
                           "%s: a control channel needs a receive callback "
                           "and messages of at most %u bytes",
                           cfg->name, XFER_NOTIF_MAX);
    st = xfer__stream_instance(host, tp, tctx, cfg, listen_fd, &be);
    if (st != XFER_OK)
        return st;
    be->role[0] = be->role[1] = &chan_role;
    be->msg_max = msg_max ? msg_max : XFER_NOTIF_MAX;
    be->recv = recv;
    *ch = (xfer__chan_t *)(void *)be;
    return XFER_OK;
}

void xfer__chan_destroy(xfer__chan_t *ch)
{
    xfer__stream_destroy(chan_be(ch));
}

int xfer__chan_progress(xfer__chan_t *ch)
{
    return xfer__stream_progress(chan_be(ch));
}

int xfer__chan_fd(xfer__chan_t *ch)
{
    return chan_be(ch)->epfd;
}

xfer_status_t xfer__chan_peer_add(xfer__chan_t *ch, const char *name,
                                  uint64_t epoch, const void *info,
                                  size_t len, xfer__chan_peer_t **peer)
{
    xfer_be_peer_t *p;
    xfer_status_t st = xfer__stream_peer_add(chan_be(ch), name, epoch, info,
                                             len, &p);

    if (st == XFER_OK)
        *peer = (xfer__chan_peer_t *)(void *)p;
    return st;
}

void xfer__chan_peer_remove(xfer__chan_t *ch, xfer__chan_peer_t *peer)
{
    xfer__stream_peer_remove(chan_be(ch), chan_peer(peer));
}

xfer_status_t xfer__chan_connect(xfer__chan_t *ch, xfer__chan_peer_t *peer)
{
    return xfer__stream_peer_connect(chan_be(ch), chan_peer(peer));
}

static xfer_status_t msg_check(xfer_be_t *be, const void *msg, size_t len)
{
    if (len > be->msg_max || (len && !msg))
        return XFER__ERR(be, XFER_ERR_INVALID,
                         "%s: a control message of %zu bytes (at most %zu)",
                         be->cfg.name, len, be->msg_max);
    return XFER_OK;
}

static xfer_status_t msg_send(conn_t *c, const void *msg, size_t len)
{
    xfer_be_t *be = c->be;
    txe_t *e;

    if (msg_check(be, msg, len) != XFER_OK)
        return XFER_ERR_INVALID;
    if (c->closed)
        return XFER__ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                         "%s: the connection with agent '%s' is closed",
                         be->cfg.name, c->name);
    if (!(e = xfer__stream_msg_entry(be, XFER_WIRE_MSG, msg, len)))
        return XFER_ERR_NOMEM;
    /* On the side that connects, messages wait for an authenticated
     * handshake to finish: the other side reads nothing before. */
    if (c->initiator)
        return xfer__stream_msg_queue(c, e, "a control message");
    return xfer__stream_msg_send(c, e, "a control message");
}

xfer_status_t xfer__chan_send(xfer__chan_t *ch, xfer__chan_peer_t *peer,
                              const void *msg, size_t len)
{
    xfer_be_t *be = chan_be(ch);
    xfer_be_peer_t *p = chan_peer(peer);
    xfer_status_t st = XFER_OK;
    conn_t *c;

    if (msg_check(be, msg, len) != XFER_OK)
        return XFER_ERR_INVALID;
    if (p->removed)
        return XFER__ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                         "%s: agent '%s' was removed", be->cfg.name, p->name);
    if (!(c = xfer__stream_peer_conn(be, p, &st)))
        return st;
    return msg_send(c, msg, len);
}

xfer_status_t xfer__chan_reply(xfer__stream_conn_t *c, const void *msg,
                               size_t len)
{
    if (!c->closed && !c->hello_done)
        return XFER__ERR(c->be, XFER_ERR_BUSY,
                         "%s: the connection is not set up yet",
                         c->be->cfg.name);
    return msg_send(c, msg, len);
}
