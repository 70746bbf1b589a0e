/* qp.c - the verbs plugin's queue pairs: a table of slots per rail whose
 * generations tell stale completions apart, and the RC state machine
 * RESET -> INIT -> RTR -> RTS (and ERR). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "plugins/verbs/verbs.h"

/* A QP's index is the same on every rail: one slot number names a
 * peer's whole connection. */
xfer_status_t vb__qps_init(vb_t *v)
{
    for (unsigned r = 0; r < v->nrails; r++)
        if ((v->qps[r] = calloc(v->cfg.max_qps, sizeof(vb_qp_t))) == NULL)
            return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    return XFER_OK;
}

void vb__qps_fini(vb_t *v)
{
    for (unsigned r = 0; r < VB_MAX_RAILS; r++) {
        if (v->qps[r] == NULL)
            continue;
        for (uint64_t s = 0; s < v->cfg.max_qps; s++)
            if (v->qps[r][s].qp != NULL)
                vb__qp_free(v, (int)s, r);
        free(v->qps[r]);
        v->qps[r] = NULL;
    }
}

vb_qp_t *vb__qp_get(vb_t *v, unsigned rail, int slot)
{
    if (rail >= v->nrails || slot < 0 || (uint64_t)slot >= v->cfg.max_qps)
        return NULL;
    return v->qps[rail][slot].qp ? &v->qps[rail][slot] : NULL;
}

vb_qp_t *vb__qp_of(vb_t *v, unsigned rail, uint64_t wr_id)
{
    vb_qp_t *qp = vb__qp_get(v, rail, (int)vb__wrid_slot(wr_id));

    return qp && qp->gen == vb__wrid_gen(wr_id) ? qp : NULL;
}

static uint32_t random_psn(void)
{
    uint32_t x = 0;

    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x)
        x = (uint32_t)xfer__now_ms() * 2654435761u;
    return x & 0xffffffu;
}

/* Create the QP of slot s on rail r and bring it to INIT. */
static xfer_status_t make_one(vb_t *v, uint8_t kind, void *owner, int s,
                              unsigned r, char *why, size_t size)
{
    vb_rail_t *rl = &v->rail[r];
    vb_qp_t *q = &v->qps[r][s];
    struct ibv_qp_init_attr ia;
    struct ibv_qp_attr a;
    int err;

    memset(&ia, 0, sizeof ia);
    ia.send_cq = rl->cq;
    ia.recv_cq = rl->cq;
    ia.qp_type = IBV_QPT_RC;
    ia.sq_sig_all = 0;
    /* An initiator's QP sends (data and notifications); a target's only
     * receives notifications, on the first rail. */
    ia.cap.max_send_wr = kind == VB_QP_INI ? (uint32_t)v->cfg.sq_depth : 1;
    ia.cap.max_recv_wr = kind == VB_QP_TGT && r == 0
                             ? (uint32_t)v->cfg.notif_window : 1;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    ia.cap.max_inline_data = kind == VB_QP_INI ? 64 : 0;
    if ((q->qp = VAPI->create_qp(rl->pd, &ia)) == NULL) {
        snprintf(why, size, "ibv_create_qp on %s: %s", rl->name,
                 strerror(errno));
        return errno == ENOMEM ? XFER_ERR_NOMEM : XFER_ERR_BACKEND;
    }
    if (kind == VB_QP_INI && (rl->max_inline == 0 ||
                              ia.cap.max_inline_data < rl->max_inline))
        rl->max_inline = ia.cap.max_inline_data;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = rl->port;
    /* Only a target's QP lets the peer in; the memory it reaches is
     * still limited to what each registration grants. */
    a.qp_access_flags = kind == VB_QP_TGT
                            ? IBV_ACCESS_LOCAL_WRITE |
                                  IBV_ACCESS_REMOTE_WRITE |
                                  IBV_ACCESS_REMOTE_READ
                            : 0;
    if ((err = VAPI->modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                                              IBV_QP_PORT |
                                              IBV_QP_ACCESS_FLAGS)) != 0) {
        snprintf(why, size, "a queue pair on %s to INIT: %s", rl->name,
                 strerror(err));
        VAPI->destroy_qp(q->qp);
        q->qp = NULL;
        return XFER_ERR_BACKEND;
    }
    if (kind == VB_QP_INI &&
        vb__sq_init(&q->sq, (uint32_t)v->cfg.sq_depth) != XFER_OK) {
        snprintf(why, size, "out of memory");
        VAPI->destroy_qp(q->qp);
        q->qp = NULL;
        return XFER_ERR_NOMEM;
    }
    q->kind = kind;
    q->rail = (uint8_t)r;
    q->owner = owner;
    q->psn = random_psn();
    return XFER_OK;
}

xfer_status_t vb__qp_make(vb_t *v, uint8_t kind, void *owner,
                          unsigned nrails, int *slot, char *why,
                          size_t size)
{
    int s = -1;
    xfer_status_t st = XFER_OK;

    for (uint64_t i = 0; i < v->cfg.max_qps && s < 0; i++)
        if (v->qps[0][i].qp == NULL)
            s = (int)i;
    if (s < 0) {
        snprintf(why, size, "all max_qps (%llu) queue pairs are in use",
                 (unsigned long long)v->cfg.max_qps);
        return XFER_ERR_BUSY;
    }
    /* Counted first: freeing rail 0's QP (here, on a failure past it, or
     * later) uncounts it. */
    v->nqps++;
    for (unsigned r = 0; r < nrails && st == XFER_OK; r++) {
        st = make_one(v, kind, owner, s, r, why, size);
        if (st != XFER_OK) {
            for (unsigned k = 0; k < r; k++)
                vb__qp_free(v, s, k);
            if (r == 0)
                v->nqps--;
        }
    }
    if (st != XFER_OK)
        return st;
    for (unsigned r = 0; r < VB_MAX_RAILS; r++)
        slot[r] = r < nrails ? s : -1;
    return XFER_OK;
}

void vb__qp_addr(vb_t *v, int slot, unsigned rail, vb_qp_addr_t *a)
{
    vb_qp_t *q = &v->qps[rail][slot];

    memset(a, 0, sizeof *a);
    a->port = v->rail[rail].addr;
    a->qpn = q->qp->qp_num & 0xffffffu;
    a->psn = q->psn;
}

xfer_status_t vb__qp_connect(vb_t *v, int slot, unsigned rail,
                             const vb_qp_addr_t *r, char *why, size_t size)
{
    vb_rail_t *rl = &v->rail[rail];
    vb_qp_t *q = &v->qps[rail][slot];
    struct ibv_qp_attr a;
    int err;

    if (r->port.link != rl->addr.link) {
        snprintf(why, size, "the peer's rail %u is %s, %s here is %s", rail,
                 r->port.link == VB_LINK_ETH ? "Ethernet" : "InfiniBand",
                 rl->name,
                 rl->addr.link == VB_LINK_ETH ? "Ethernet" : "InfiniBand");
        return XFER_ERR_INVALID;
    }
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = (enum ibv_mtu)(r->port.mtu < rl->addr.mtu ? r->port.mtu
                                                           : rl->addr.mtu);
    a.dest_qp_num = r->qpn;
    a.rq_psn = r->psn;
    a.max_dest_rd_atomic = (uint8_t)rl->max_rd_atom;
    a.min_rnr_timer = 12; /* 0.64 ms */
    a.ah_attr.port_num = rl->port;
    a.ah_attr.sl = (uint8_t)v->cfg.sl;
    a.ah_attr.dlid = r->port.lid;
    /* RoCE is always routed by GID; IB only when a GID index is set. */
    if (rl->addr.link == VB_LINK_ETH || rl->gid_index >= 0) {
        static const uint8_t zero[16];

        if (memcmp(r->port.gid, zero, 16) == 0) {
            snprintf(why, size, "%s routes by GID (gid_index %d) but the "
                     "peer's rail %u publishes none", rl->name,
                     rl->gid_index, rail);
            return XFER_ERR_INVALID;
        }
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, r->port.gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)rl->gid_index;
        a.ah_attr.grh.hop_limit = 64;
        a.ah_attr.grh.traffic_class = (uint8_t)v->cfg.traffic_class;
    }
    if ((err = VAPI->modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_AV |
                                              IBV_QP_PATH_MTU |
                                              IBV_QP_DEST_QPN |
                                              IBV_QP_RQ_PSN |
                                              IBV_QP_MAX_DEST_RD_ATOMIC |
                                              IBV_QP_MIN_RNR_TIMER)) != 0) {
        snprintf(why, size, "a queue pair on %s to RTR (remote QP %u): %s",
                 rl->name, r->qpn, strerror(err));
        return XFER_ERR_BACKEND;
    }
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RTS;
    a.timeout = (uint8_t)v->cfg.qp_timeout;
    a.retry_cnt = (uint8_t)v->cfg.retry_cnt;
    a.rnr_retry = 7; /* credits keep receivers ahead: RNR is a slip */
    a.sq_psn = q->psn;
    /* READs out at once: the requester's limit, and never more than a
     * responder gives (16 on every HCA this was written for). */
    a.max_rd_atomic = (uint8_t)rl->max_init_rd;
    if ((err = VAPI->modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
                                              IBV_QP_RETRY_CNT |
                                              IBV_QP_RNR_RETRY |
                                              IBV_QP_SQ_PSN |
                                              IBV_QP_MAX_QP_RD_ATOMIC)) !=
        0) {
        snprintf(why, size, "a queue pair on %s to RTS: %s", rl->name,
                 strerror(err));
        return XFER_ERR_BACKEND;
    }
    return XFER_OK;
}

void vb__qp_error(vb_t *v, int slot, unsigned rail)
{
    vb_qp_t *q = vb__qp_get(v, rail, slot);
    struct ibv_qp_attr a;

    if (q == NULL)
        return;
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_ERR;
    (void)VAPI->modify_qp(q->qp, &a, IBV_QP_STATE);
}

void vb__qp_free(vb_t *v, int slot, unsigned rail)
{
    vb_qp_t *q = vb__qp_get(v, rail, slot);
    int err;

    if (q == NULL)
        return;
    if ((err = VAPI->destroy_qp(q->qp)) != 0)
        VLOG(v, XFER_LOG_WARN, VB_NAME ": ibv_destroy_qp on %s: %s",
             v->rail[rail].name, strerror(err));
    vb__sq_fini(&q->sq);
    memset(&q->sq, 0, sizeof q->sq);
    q->qp = NULL;
    q->owner = NULL;
    q->gen++;
    if (rail == 0 && v->nqps > 0)
        v->nqps--;
}
