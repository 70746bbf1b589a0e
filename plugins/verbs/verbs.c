/* verbs.c - the RDMA verbs backend: RC queue pairs per peer and rail, RDMA
 * WRITE/READ chained per post, notifications as SENDs after the data.
 * This file is the table, the parameters and the instance's life; verbs.h
 * says which file holds the rest and the order of its locks. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "plugins/verbs/verbs.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

static xfer_status_t vb_init(const xfer_host_t *host, const void *config,
                             xfer_be_t **be);
static void vb_fini(xfer_be_t *v);
static void vb_quiesce(xfer_be_t *v);
static xfer_status_t vb_conn_info(xfer_be_t *v, void *buf, size_t *len);
static int vb_progress(xfer_be_t *v);
static xfer_status_t vb_event_fd(xfer_be_t *v, int *fd);
static xfer_status_t vb_arm(xfer_be_t *v);
static xfer_status_t vb_probe(char *buf, size_t len);
static xfer_status_t vb_state(xfer_be_t *v, char *buf, size_t len);

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(vb_config_t, f), lo, hi }
static const xfer_param_t vb_params[] = {
    P("device", XFER_PARAM_STRING, "",
      "RDMA device (mlx5_0, rxe0 ...); empty: the first with an active "
      "port",
      device, 1, 0),
    P("devices", XFER_PARAM_STRING, "",
      "several devices, comma-separated, the commas escaped in a config "
      "string (devices=mlx5_0\\,mlx5_1): one rail each, large runs "
      "striped over them (stripe_min); overrides device",
      devices, 1, 0),
    P("port", XFER_PARAM_UINT, "0",
      "the device's port; 0: its first active port", port, 0, 255),
    P("gid_index", XFER_PARAM_INT, "-1",
      "GID table index for RoCE (and IB with a GRH); -1: RoCE takes a "
      "RoCE v2 entry, IPv4-mapped first, else the first set (peers must "
      "use the same RoCE version: set it on both when they differ); IB "
      "addresses by LID",
      gid_index, -1, 255),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a posted transfer not complete this long fails with XFER_ERR_TIMEOUT "
      "(its connection is reset); also the control channel's",
      timeout_ms, 1, 3600000),
    P("sq_depth", XFER_PARAM_UINT, "256",
      "work requests in flight per queue pair; more wait in order",
      sq_depth, 4, 16384),
    P("chain_max", XFER_PARAM_UINT, "32",
      "work requests chained into one ibv_post_send (only the last is "
      "signaled)",
      chain_max, 1, 1024),
    P("max_qps", XFER_PARAM_UINT, "64",
      "queue pairs per device, to peers and from them; the CQ is sized "
      "for them all; a target that is full drops its least recently "
      "connected initiator's",
      max_qps, 2, 16384),
    P("stripe_min", XFER_PARAM_SIZE, "1M",
      "with several devices, a run of at least this many bytes is "
      "striped over all of them; smaller ones go on the first; 0: never",
      stripe_min, 0, (1ull << 40)),
    P("notif_tx", XFER_PARAM_UINT, "32",
      "registered send buffers (64 KiB each) for notifications too long "
      "to go inline",
      notif_tx, 1, 4096),
    P("cq_batch", XFER_PARAM_UINT, "32",
      "completions read per ibv_poll_cq", cq_batch, 1, 256),
    P("retry_cnt", XFER_PARAM_UINT, "7",
      "transport retries before a queue pair fails (IBV_QP_RETRY_CNT)",
      retry_cnt, 0, 7),
    P("qp_timeout", XFER_PARAM_UINT, "14",
      "local ACK timeout exponent: 4.096 us * 2^n per retry "
      "(IBV_QP_TIMEOUT; 14 is 67 ms)",
      qp_timeout, 1, 31),
    P("traffic_class", XFER_PARAM_UINT, "0",
      "GRH traffic class (RoCE: DSCP << 2 | ECN, e.g. 106 for DSCP 26) of "
      "every queue pair, as lossless RoCE fabrics are configured",
      traffic_class, 0, 255),
    P("sl", XFER_PARAM_UINT, "0",
      "InfiniBand service level of every queue pair (QoS)", sl, 0, 15),
    {"notif_window", XFER_PARAM_UINT, "64",
     "notifications a sender may have on their way to this target before "
     "it acknowledges them (credits); what this target holds per sender, "
     "and the receive buffers (64 KiB each) it posts per initiator",
     offsetof(vb_config_t, notif_window), 2, 4096},
    {"notif_queue", XFER_PARAM_UINT, "1024",
     "notifications alone (xfer_notif_send) queued for one peer while its "
     "credits are spent; past it XFER_ERR_BUSY",
     offsetof(vb_config_t, notif_queue), 1, 1 << 20},
    {"addr", XFER_PARAM_STRING, "127.0.0.1",
     "numeric address the control channel listens on (identity, "
     "handshakes, tokens, death); set one that peers on other hosts reach",
     offsetof(vb_config_t, addr), 1, 0},
    {"ctl_port", XFER_PARAM_UINT, "0",
     "control channel port; 0 picks a free one (\"port\" is the device's "
     "here)",
     offsetof(vb_config_t, ctl_port), 0, 65535},
    {"advertise", XFER_PARAM_STRING, "",
     "control channel address peers are told; empty: addr, or the first "
     "non-loopback interface for a wildcard",
     offsetof(vb_config_t, advertise), 1, 0},
    XFER__STREAM_LIMIT_PARAMS(vb_config_t, lim),
};
#undef P

extern const xfer_backend_ops_t XFER_BACKEND_SYMBOL(VB_PLUGIN);
const xfer_backend_ops_t XFER_BACKEND_SYMBOL(VB_PLUGIN) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = VB_NAME,
        .version = PACKAGE_VERSION,
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                XFER_CAP_REMOTE | XFER_CAP_LOCAL | XFER_CAP_HW_KEYS,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = vb_params,
    .nparams = sizeof vb_params / sizeof vb_params[0],
    .config_size = sizeof(vb_config_t),
    .init = vb_init,
    .fini = vb_fini,
    .conn_info = vb_conn_info,
    .peer_add = vb__peer_add,
    .peer_remove = vb__peer_remove,
    .mem_register = vb__mem_register,
    .mem_deregister = vb__mem_deregister,
    .mem_pack = vb__mem_pack,
    .rmem_unpack = vb__rmem_unpack,
    .rmem_release = vb__rmem_release,
    .req_create = vb__req_create,
    .req_post = vb__req_post,
    .req_check = vb__req_check,
    /* No req_cancel: a work request handed to the NIC cannot be taken
     * back short of moving the whole queue pair to the error state,
     * which ends every transfer on it. */
    .req_release = vb__req_release,
    .notif_send = vb__notif_send,
    .progress = vb_progress,
    .event_fd = vb_event_fd,
    .probe = vb_probe,
    .state = vb_state,
    .flags = XFER_BE_THREAD_SAFE | XFER_BE_POLL,
    .arm = vb_arm,
    .peer_connect = vb__peer_connect,
    .quiesce = vb_quiesce,
};

/* ------------------------------------------------------------------ */
/* Small things every file uses                                        */
/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* The instance                                                        */
/* ------------------------------------------------------------------ */

/* The rails' completion channels and the control channel wake the
 * progress thread through one epoll fd. */
static xfer_status_t watch_channels(vb_t *v)
{
    for (unsigned r = 0; r < v->nrails; r++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = r};
        int fd = v->rail[r].ch->fd; /* non-blocking (rail.c) */

        if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ||
            (v->rail[r].ctx->async_fd >= 0 &&
             epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->rail[r].ctx->async_fd,
                       &ev) < 0))
            return VERR(v, XFER_ERR_BACKEND, VB_NAME ": the completion "
                        "channel of %s: %s", v->rail[r].name,
                        strerror(errno));
        if (VAPI->req_notify_cq(v->rail[r].cq, 0) != 0)
            return VERR(v, XFER_ERR_BACKEND, VB_NAME ": ibv_req_notify_cq "
                        "on %s failed", v->rail[r].name);
    }
    return XFER_OK;
}

/* Registered pages and fork(): on kernels before 5.13 a child's
 * copy-on-write can move the parent's pages away from what the HCA
 * pinned.  rdma-core's cure (ibv_fork_init, or RDMAV_FORK_SAFE=1 in the
 * environment) marks registered pages MADV_DONTFORK for the whole
 * process, which children then lose: the operator's choice, not this
 * plugin's.  Said once per process when it is neither set nor needed. */
static void fork_safety(vb_t *v)
{
    static atomic_bool said;

    if (VAPI->fork_status() == IBV_FORK_DISABLED &&
        !atomic_exchange(&said, true))
        VLOG(v, XFER_LOG_WARN, VB_NAME ": this kernel predates 5.13: a "
             "fork() of this process while memory is registered can corrupt "
             "transfers; set RDMAV_FORK_SAFE=1 (children then lose the "
             "registered pages) or do not fork");
}

static xfer_status_t vb_init(const xfer_host_t *host, const void *config,
                             xfer_be_t **be)
{
    vb_t *v = calloc(1, sizeof *v);
    xfer_status_t st;

    if (v == NULL)
        return host->error(host->ctx, XFER_ERR_NOMEM,
                           VB_NAME ": out of memory");
    v->host = host;
    v->cfg = *(const vb_config_t *)config;
    v->epfd = -1;
    xfer__hwctl_init(&v->ctl);
    pthread_mutex_init(&v->lock, NULL);
    pthread_mutex_init(&v->mr_lock, NULL);
    if ((st = xfer__ns_init(&v->ns, host, VB_NAME, v->cfg.notif_window,
                            v->cfg.lim.max_conns)) != XFER_OK) {
        st = VERR(v, st, VB_NAME ": out of memory");
        goto fail;
    }
    if ((v->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        st = VERR(v, XFER_ERR_BACKEND, VB_NAME ": epoll_create1: %s",
                  strerror(errno));
        goto fail;
    }
    if ((st = vb__rails_open(v)) != XFER_OK ||
        (st = vb__qps_init(v)) != XFER_OK ||
        (st = vb__notif_open(v)) != XFER_OK ||
        (st = watch_channels(v)) != XFER_OK ||
        (st = vb__ctl_open(v)) != XFER_OK ||
        (st = vb__info_build(v)) != XFER_OK)
        goto fail;
    VLOG(v, XFER_LOG_DEBUG, VB_NAME ": %s (%s)", v->desc, VAPI->what);
    fork_safety(v);
    *be = v;
    return XFER_OK;
fail:
    vb_fini(v);
    return st;
}

static void vb_fini(xfer_be_t *v)
{
    if (v == NULL)
        return;
    /* The channel first: no handshake makes a QP after this. */
    xfer__hwctl_close(&v->ctl);
    pthread_mutex_lock(&v->lock);
    vb__tconns_free(v);
    vb__req_free_all(v);
    pthread_mutex_unlock(&v->lock);
    vb__qps_fini(v);
    vb__notif_close(v);
    vb__rails_close(v);
    xfer__ns_fini(&v->ns);
    if (v->epfd >= 0)
        close(v->epfd);
    pthread_mutex_destroy(&v->lock);
    pthread_mutex_destroy(&v->mr_lock);
    free(v);
}

/* The agent goes: the QPs initiators made to us go before its memory
 * does, so a WRITE on the wire meets no responder (the initiator's NIC
 * retries, then fails it as a lost connection) rather than a dead key
 * (an access error that would blame the initiator's request). */
static void vb_quiesce(xfer_be_t *v)
{
    pthread_mutex_lock(&v->lock);
    v->quiesced = true;
    vb__tconns_free(v);
    pthread_mutex_unlock(&v->lock);
}

static xfer_status_t vb_conn_info(xfer_be_t *v, void *buf, size_t *len)
{
    if (*len < v->info_len) {
        *len = v->info_len;
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": connection info needs "
                    "%zu bytes", v->info_len);
    }
    memcpy(buf, v->info_blob, v->info_len);
    *len = v->info_len;
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* Completions                                                         */
/* ------------------------------------------------------------------ */

/* What a failed work completion means for a transfer. */
static xfer_status_t wc_status(enum ibv_wc_status s)
{
    switch (s) {
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR:
    case IBV_WC_LOC_ACCESS_ERR:
        return XFER_ERR_ACCESS;
    default:
        return XFER_ERR_REMOTE_DISCONNECT;
    }
}

/* One completion of an initiator's QP (lock held). */
static void ini_wc(vb_t *v, vb_qp_t *qp, const struct ibv_wc *wc)
{
    vb_peer_t *p = qp->owner;
    uint32_t idx = vb__wrid_idx(wc->wr_id);
    vb_sq_ent_t e;
    char why[300];

    if (wc->status == IBV_WC_SUCCESS) {
        qp->done_ms = xfer__now_ms();
        if (!vb__sq_complete(&qp->sq, idx, &e)) {
            /* RC completes in order: this cannot be, and the queue's
             * count would never come right again. */
            snprintf(why, sizeof why, "a completion out of order on %s "
                     "(batch %u)", v->rail[qp->rail].name, (unsigned)idx);
            vb__conn_fail(v, p, XFER_ERR_BACKEND, why);
            return;
        }
        if (e.kind == VB_WR_DATA && e.owner != NULL) {
            vb__req_done(v, e.owner, qp->rail, e.nwr);
        } else if (e.kind == VB_WR_NOTIF) {
            vb__notif_sent(v, e.owner, 0);
            /* Room in the send queue, a send buffer back: what waited
             * for either goes now. */
            if (!xfer__dlist_empty(&p->waitq)) {
                vb__req_issue_peer(v, p);
            } else if (p->sh != NULL) {
                pthread_mutex_lock(&p->olock);
                vb__notif_pump(v, p);
                pthread_mutex_unlock(&p->olock);
            }
        }
        return;
    }
    atomic_fetch_add(&v->qp_errors, 1);
    snprintf(why, sizeof why, "%s (work completion status %d, vendor "
             "error 0x%x, on %s)", VAPI->wc_status_str(wc->status),
             (int)wc->status, wc->vendor_err, v->rail[qp->rail].name);
    /* The batch it names fails with what the NIC said; the rest of the
     * connection's work with it, as a broken connection. */
    if (wc->status != IBV_WC_WR_FLUSH_ERR &&
        vb__sq_live(&qp->sq, idx) && qp->sq.ring[idx].kind == VB_WR_DATA &&
        qp->sq.ring[idx].owner != NULL) {
        vb_req_t *q = qp->sq.ring[idx].owner;

        vb__req_fail(v, q, wc_status(wc->status), why);
    }
    vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
}

/* One completion of a target's QP: a notification came, or the QP
 * failed (lock held). */
static void tgt_wc(vb_t *v, vb_qp_t *qp, const struct ibv_wc *wc)
{
    vb_tconn_t *tc = qp->owner;

    if (wc->status == IBV_WC_SUCCESS && vb__wrid_kind(wc->wr_id) ==
        VB_WR_RECV) {
        vb__notif_recv(v, tc, vb__wrid_idx(wc->wr_id), wc->byte_len);
        return;
    }
    if (wc->status != IBV_WC_WR_FLUSH_ERR)
        VLOG(v, XFER_LOG_INFO, VB_NAME ": the queue pair from agent '%s' "
             "failed: %s; dropped until it connects again", tc->name,
             VAPI->wc_status_str(wc->status));
    vb__tconn_drop(v, tc);
}

/* ---- asynchronous events ------------------------------------------------ */

static vb_qp_t *qp_by_ptr(vb_t *v, unsigned r, const struct ibv_qp *ib)
{
    for (uint64_t s = 0; s < v->cfg.max_qps; s++)
        if (v->qps[r][s].qp == ib)
            return &v->qps[r][s];
    return NULL;
}

/* What the HCAs say of themselves (lock held): a QP in error fails its
 * connection now rather than at its next completion or deadline; a port
 * or device gone, or a CQ broken, fails every connection (the sweep does
 * it, with the channel's lock) and new ones find out as they are made.
 * Each event is acknowledged before its QP can be destroyed
 * (ibv_destroy_qp waits for that). */
static int async_events(vb_t *v)
{
    int n = 0;

    for (unsigned r = 0; r < v->nrails; r++) {
        struct ibv_async_event ev;

        if (v->rail[r].ctx->async_fd < 0)
            continue;
        while (VAPI->get_async_event(v->rail[r].ctx, &ev) == 0) {
            enum ibv_event_type t = ev.event_type;
            const struct ibv_qp *ib = ev.element.qp;
            unsigned ev_port = (unsigned)ev.element.port_num;
            const char *what = VAPI->event_type_str(t);
            char why[200];

            VAPI->ack_async_event(&ev);
            n++;
            /* Whatever completed before the event is taken first. */
            vb__cq_drain(v, INT_MAX);
            switch (t) {
            case IBV_EVENT_QP_FATAL:
            case IBV_EVENT_QP_REQ_ERR:
            case IBV_EVENT_QP_ACCESS_ERR:
            case IBV_EVENT_PATH_MIG_ERR: {
                vb_qp_t *qp = qp_by_ptr(v, r, ib);

                if (qp == NULL)
                    break; /* gone already */
                snprintf(why, sizeof why, "%s reported %s on its queue "
                         "pair", v->rail[r].name, what);
                atomic_fetch_add(&v->qp_errors, 1);
                if (qp->kind == VB_QP_INI)
                    vb__conn_fail(v, qp->owner, XFER_ERR_REMOTE_DISCONNECT,
                                  why);
                else
                    vb__tconn_drop(v, qp->owner);
                break;
            }
            case IBV_EVENT_PORT_ERR:
            case IBV_EVENT_CQ_ERR:
            case IBV_EVENT_DEVICE_FATAL:
                if (t == IBV_EVENT_PORT_ERR &&
                    ev_port != v->rail[r].port) {
                    VLOG(v, XFER_LOG_DEBUG, VB_NAME ": %s reported %s on "
                         "port %u, which this backend does not use",
                         v->rail[r].name, what, ev_port);
                    break;
                }
                VLOG(v, XFER_LOG_ERROR, VB_NAME ": %s reported %s: every "
                     "connection on it fails%s", v->rail[r].name, what,
                     t == IBV_EVENT_PORT_ERR ? ", and new ones until the "
                     "port is active again" : "; this backend must be made "
                     "again");
                snprintf(v->fail_why, sizeof v->fail_why, "%s reported %s",
                         v->rail[r].name, what);
                /* New connections fail at once while it lasts: for good
                 * after a fatal device or a broken CQ. */
                snprintf(v->down_why, sizeof v->down_why, "%s", v->fail_why);
                v->down = t == IBV_EVENT_PORT_ERR ? VB_DOWN_PORT
                                                  : VB_DOWN_FOR_GOOD;
                atomic_store(&v->fail_all, true);
                atomic_store(&v->sweep_due, true);
                vb__tconns_free(v);
                if (t == IBV_EVENT_DEVICE_FATAL) {
                    /* Its fds stay readable (in error) for good. */
                    epoll_ctl(v->epfd, EPOLL_CTL_DEL, v->rail[r].ch->fd,
                              NULL);
                    epoll_ctl(v->epfd, EPOLL_CTL_DEL,
                              v->rail[r].ctx->async_fd, NULL);
                }
                break;
            case IBV_EVENT_PORT_ACTIVE:
                VLOG(v, XFER_LOG_INFO, VB_NAME ": %s reported %s",
                     v->rail[r].name, what);
                if (v->down == VB_DOWN_PORT && ev_port == v->rail[r].port)
                    v->down = VB_DOWN_NO;
                break;
            default:
                VLOG(v, XFER_LOG_DEBUG, VB_NAME ": %s reported %s",
                     v->rail[r].name, what);
                break;
            }
        }
    }
    return n;
}

int vb__cq_drain(vb_t *v, int max)
{
    struct ibv_wc wc[256];
    int n = 0;

    for (unsigned r = 0; r < v->nrails; r++) {
        while (n < max) {
            int k = VAPI->poll_cq(v->rail[r].cq, (int)v->cfg.cq_batch, wc);

            if (k <= 0) {
                if (k < 0)
                    VLOG(v, XFER_LOG_WARN, VB_NAME ": ibv_poll_cq on %s "
                         "failed", v->rail[r].name);
                break;
            }
            for (int i = 0; i < k; i++) {
                vb_qp_t *qp = vb__qp_of(v, r, wc[i].wr_id);

                if (qp == NULL)
                    continue; /* a QP that is gone: stale */
                if (qp->kind == VB_QP_INI)
                    ini_wc(v, qp, &wc[i]);
                else
                    tgt_wc(v, qp, &wc[i]);
            }
            n += k;
            if (k < (int)v->cfg.cq_batch)
                break;
        }
    }
    return n;
}

/* Take the events the completion channels hold (they are only a
 * wake-up: the CQs are polled anyway). */
static void channel_events(vb_t *v)
{
    for (unsigned r = 0; r < v->nrails; r++) {
        struct ibv_cq *cq;
        void *ctx;

        while (VAPI->get_cq_event(v->rail[r].ch, &cq, &ctx) == 0)
            v->rail[r].events++;
        if (v->rail[r].events > 0) {
            VAPI->ack_cq_events(v->rail[r].cq, v->rail[r].events);
            v->rail[r].events = 0;
        }
    }
}

/* The oldest notification p's first QP holds, if it has held it longer
 * than timeout_ms while the QP completed nothing: a target that stopped
 * reposting receives (RNR retries forever) or a QP that went quiet.  A
 * notification behind slow data that still completes is not stuck (RC
 * completes in order: a SEND that meets RNR holds everything behind
 * it).  Lock held. */
static bool notif_stuck(vb_t *v, vb_peer_t *p, uint64_t now)
{
    vb_qp_t *qp = vb__qp_get(v, 0, p->slot[0]);

    if (qp == NULL)
        return false;
    for (uint32_t i = 0; i < qp->sq.count; i++) {
        const vb_sq_ent_t *e = &qp->sq.ring[(qp->sq.head + i) %
                                            qp->sq.depth];

        if (e->kind == VB_WR_NOTIF && e->owner != NULL) {
            uint64_t since = ((const vb_slot_t *)e->owner)->posted_ms;

            if (qp->done_ms > since)
                since = qp->done_ms;
            /* A stamp taken after `now` (by a post between the reading
             * of the clock and the lock) is no age at all, never an
             * unsigned wrap to "stuck for ages". */
            return now > since && now - since >= v->cfg.timeout_ms;
        }
    }
    return false;
}

/* What no request's deadline covers, looked at every 100 ms (chan_lock
 * before lock, so only when the channel is free): a handshake the target
 * never answered, a QP that refused a notification, a notification the
 * target never took; and notifications alone waiting for a connection
 * that failed, which ask for a new one. */
static int sweep(vb_t *v, uint64_t now)
{
    bool fail_all;
    int n = 0;

    if (now - atomic_load(&v->sweep_ms) < 100 ||
        pthread_mutex_trylock(&v->ctl.chan_lock) != 0)
        return 0;
    atomic_store(&v->sweep_ms, now);
    atomic_store(&v->sweep_due, false);
    fail_all = atomic_exchange(&v->fail_all, false);
    for (xfer__hwctl_peer_t *hp = v->ctl.peers; hp; hp = hp->next) {
        vb_peer_t *p = hp->peer;
        char why[200];
        bool ask;

        pthread_mutex_lock(&v->lock);
        /* Read under the lock: every stamp compared with it (a post's,
         * an ask's, a completion's) is taken under it, so none is
         * later. */
        now = xfer__now_ms();
        if (fail_all && p->cstate != VB_CONN_NONE) {
            snprintf(why, sizeof why, "%s", v->fail_why);
            vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, why);
            n++;
        } else if (p->cstate == VB_CONN_ASKING && now > p->ask_ms &&
            now - p->ask_ms >= v->cfg.timeout_ms) {
            snprintf(why, sizeof why, "the peer never answered the "
                     "queue-pair handshake within timeout_ms (%llu ms)",
                     (unsigned long long)v->cfg.timeout_ms);
            vb__conn_fail(v, p, XFER_ERR_TIMEOUT, why);
            n++;
        } else if (p->broken) {
            p->broken = false;
            vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, "its queue "
                          "pair refused a notification");
            n++;
        } else if (p->cstate == VB_CONN_READY && notif_stuck(v, p, now)) {
            snprintf(why, sizeof why, "a notification was not taken within "
                     "timeout_ms (%llu ms): the target stopped receiving",
                     (unsigned long long)v->cfg.timeout_ms);
            vb__conn_fail(v, p, XFER_ERR_TIMEOUT, why);
            n++;
        }
        ask = p->cstate == VB_CONN_NONE && p->sh != NULL &&
              !atomic_load(&p->dead);
        if (ask && p->ask_fails >= 3) {
            /* Notifications alone have no request to fail: after three
             * asks in a row failed they go, said once, rather than
             * asking for good. */
            size_t lost = p->nslots;

            pthread_mutex_lock(&p->olock);
            vb__notif_drop(v, p);
            pthread_mutex_unlock(&p->olock);
            VLOG(v, XFER_LOG_WARN, VB_NAME ": %zu notification(s) to agent "
                 "'%s' dropped: three connections to it failed in a row "
                 "(the last: %s)", lost, p->name, p->cwhy);
            p->ask_fails = 0;
            ask = false;
        }
        pthread_mutex_unlock(&v->lock);
        if (ask)
            vb__conn_ask(v, p); /* takes lock */
    }
    pthread_mutex_unlock(&v->ctl.chan_lock);
    return n;
}

static int vb_progress(xfer_be_t *v)
{
    int n = 0;

    /* Woken after arming: something arrived (a notification, a peer's
     * handshake) and more may follow: counted as activity. */
    if (atomic_exchange(&v->armed, false))
        n++;
    if (pthread_mutex_trylock(&v->lock) == 0) {
        channel_events(v);
        /* Completions first: what the QPs did before an event concerns
         * them (a notification received, a WRITE acknowledged) counts. */
        n += vb__cq_drain(v, 1024);
        n += async_events(v);
        n += vb__req_progress(v, xfer__now_ms());
        pthread_mutex_unlock(&v->lock);
    } else {
        n = 1; /* another thread progresses it */
    }
    n += xfer__hwctl_progress(&v->ctl, false);
    n += xfer__ns_progress(&v->ns);
    n += sweep(v, xfer__now_ms());
    return n;
}

static xfer_status_t vb_event_fd(xfer_be_t *v, int *fd)
{
    *fd = v->epfd;
    return XFER_OK;
}

/* Sleep only once every CQ is armed and empty: a completion after
 * ibv_req_notify_cq makes its channel readable; one that came before is
 * found by the poll that follows the arming. */
static xfer_status_t vb_arm(xfer_be_t *v)
{
    bool busy = false;
    uint64_t now = xfer__now_ms();

    if (xfer__hwctl_progress(&v->ctl, true) > 0)
        return XFER_ERR_BUSY;
    pthread_mutex_lock(&v->lock);
    channel_events(v);
    busy = !xfer__dlist_empty(&v->reqs) &&
           now - v->last_post_ms < VB_ARM_AFTER_POST_MS;
    for (unsigned r = 0; r < v->nrails && !busy; r++)
        if (VAPI->req_notify_cq(v->rail[r].cq, 0) != 0)
            busy = true;
    if (!busy && vb__cq_drain(v, 256) > 0)
        busy = true;
    pthread_mutex_unlock(&v->lock);
    if (busy || xfer__hwctl_due(&v->ctl))
        return XFER_ERR_BUSY;
    /* A handshake, a notification in flight or a connection to remake
     * is ended by the sweep, which no fd wakes: poll meanwhile (not
     * counted as being woken: nothing may have come). */
    if (atomic_load(&v->asking) || atomic_load(&v->notifs_flying) ||
        atomic_load(&v->sweep_due) || atomic_load(&v->fail_all))
        return XFER_IN_PROG;
    atomic_store(&v->armed, true);
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* What xfer-info and xfer_backend_state() show                        */
/* ------------------------------------------------------------------ */

static xfer_status_t vb_probe(char *buf, size_t len)
{
    vb__rails_probe(buf, len);
    return XFER_OK;
}

static xfer_status_t vb_state(xfer_be_t *v, char *buf, size_t len)
{
    unsigned nq, nt;

    pthread_mutex_lock(&v->lock);
    nq = v->nqps;
    nt = v->ntconns;
    pthread_mutex_unlock(&v->lock);
    /* Within XFER_STATE_MAX (two rails and large counters fit; four
     * rails may lose the last words): the key sentence, the devices, the
     * counters. */
    snprintf(buf, len, "remote keys checked by the NIC; %s; QPs %u per "
             "rail, %u from initiators; %lu WRs in %lu chains, %lu QP "
             "errors, %lu reconnects; notifications %lu sent, %lu received, "
             "%lu dropped",
             v->desc, nq, nt, atomic_load(&v->wrs_posted),
             atomic_load(&v->chains), atomic_load(&v->qp_errors),
             atomic_load(&v->rebuilt), atomic_load(&v->notifs_sent),
             atomic_load(&v->ns.recv), atomic_load(&v->ns.dropped));
    return XFER_OK;
}
