/* fakeverbs.h - an emulated RDMA device behind the verbs plugin's seam
 * (plugins/verbs/vapi.h), and the hooks tests use to watch and break it.
 *
 * fakeverbs.c defines vb__api: linked in place of plugins/verbs/vapi.c it
 * gives the plugin RC queue pairs between devices of one process, moved by
 * a thread that plays the NIC.  It is strict where real hardware is (queue
 * slots, state machine, keys, CQ overrun, flushes) so that it finds plugin
 * bugs rather than hiding them.
 *
 * Environment, read at every get_device_list:
 *   XFER_FAKEVERBS_DEVICES   devices fake0.. (default 2, at most 16; 0: none)
 *   XFER_FAKEVERBS_LINK      ib (default: LID addressing) or eth (RoCE v2 GID)
 *   XFER_FAKEVERBS_DELAY_US  latency of each work request (default 0)
 *   XFER_FAKEVERBS_RETRY_MS  an unreachable peer fails a WR with
 *                            IBV_WC_RETRY_EXC_ERR after this (default 20)
 *   XFER_FAKEVERBS_RNR_MS    receiver-not-ready retries last this long at
 *                            rnr_retry 7, proportionally less below (1000)
 *
 * The hooks are plain C functions with default visibility: a test reaches
 * them through dlsym on the loaded plugin. */
#ifndef XFER_TESTS_PLUGINS_FAKEVERBS_H
#define XFER_TESTS_PLUGINS_FAKEVERBS_H

#include <stdbool.h>
#include <stdint.h>

#define FAKEVERBS_API __attribute__((visibility("default")))

/* The device's limits beyond the ones ibv_query_device reports: the
 * largest max_inline_data a QP may ask for. */
#define FAKEVERBS_MAX_INLINE 512u
/* Devices fake0 .. fake15 at most (XFER_FAKEVERBS_DEVICES). */
#define FAKEVERBS_MAX_DEV 16u

struct fakeverbs_stats {
    /* counters (fakeverbs_reset_stats zeroes them) */
    uint64_t wrs_executed;  /* send WRs that completed successfully */
    uint64_t wrs_failed;    /* send WRs completed in error (not flushes) */
    uint64_t flushed;       /* CQEs with IBV_WC_WR_FLUSH_ERR, both queues */
    uint64_t bytes_moved;   /* payload of the successful WRs */
    uint64_t rnr_events;    /* WRs that met a receiver not ready */
    uint64_t cq_overruns;   /* CQs that overflowed (a caller bug) */
    /* what callers handed over: post_send calls that queued work (a
     * chain each), and of their send WRs, how many were signaled and
     * inline */
    uint64_t post_sends, wrs_posted, wrs_signaled, wrs_inline;
    /* bytes_moved by the device of the requester (the QP that posted the
     * WR: a WRITE's or READ's initiator, a SEND's sender): which rails
     * carried a striped transfer */
    uint64_t bytes_by_dev[FAKEVERBS_MAX_DEV];
    /* live objects */
    uint64_t live_contexts, live_pds, live_mrs, live_cqs, live_qps,
        live_channels;
};

/* A snapshot of the counters and live objects. */
FAKEVERBS_API void fakeverbs_stats(struct fakeverbs_stats *out);
FAKEVERBS_API void fakeverbs_reset_stats(void);

/* As a link failure on one QP: it moves to IBV_QPS_ERR; its oldest queued
 * send WR completes with IBV_WC_RETRY_EXC_ERR, the later ones are flushed
 * (a CQE only when signaled), its receives are flushed.  Returns 0, or
 * ENOENT when no live QP has that number. */
FAKEVERBS_API int fakeverbs_qp_error(uint32_t qpn);

/* The state the hardware holds a QP in (an enum ibv_qp_state), or -1 when
 * no live QP has that number.  ibv_qp.state is only what the caller last
 * set with modify_qp: rdma-core never updates it when the hardware moves
 * a QP to error, and neither does the emulation. */
FAKEVERBS_API int fakeverbs_qp_state(uint32_t qpn);

/* After n more send WRs are queued (counted across post_send calls), the
 * next one is refused: that post_send returns ENOMEM with *bad at it, the
 * WRs before it in the list stay queued.  Fires once. */
FAKEVERBS_API void fakeverbs_fail_post_after(unsigned n);

/* A live QP as the hardware holds it (fakeverbs_qps). */
struct fakeverbs_qp_info {
    uint32_t qpn;
    int dev;                /* its device: fakeN */
    int state;              /* the hardware's, an enum ibv_qp_state */
    uint32_t dest_qpn;      /* the remote QP it was connected to (RTR) */
    int dest_dev;           /* the device its address vector names, or -1
                               (none yet, or that device is not open) */
    uint32_t max_send_wr;   /* its send queue's size */
    uint64_t sq_queued;     /* send WRs posted and not yet executed */
    bool held;              /* fakeverbs_hold */
};

/* The live QPs, oldest first: up to max into out (out may be NULL with
 * max 0); returns how many there are.  Which agent owns a QP is not the
 * device's business: tests give each agent its own device, and know a
 * connection by its two ends' devices. */
FAKEVERBS_API unsigned fakeverbs_qps(struct fakeverbs_qp_info *out,
                                     unsigned max);

/* While held, the NIC executes none of the QP's send WRs (as a congested
 * path would delay them): a test keeps work in flight for as long as it
 * needs, then releases it, fails it (fakeverbs_qp_error) or tears it
 * down.  Posting, flushes and the receive side are unchanged.  Returns 0,
 * or ENOENT when no live QP has that number. */
FAKEVERBS_API int fakeverbs_hold(uint32_t qpn, bool hold);

/* The held QP qpn is released by the next ibv_dereg_mr on any device,
 * which runs the WRs it has due before it returns, as a NIC would that
 * was mid-transfer when the memory went: a test sees what a peer's NIC
 * meets at that instant of a teardown, not after it.  Returns 0, or
 * ENOENT when no live QP has that number. */
FAKEVERBS_API int fakeverbs_release_on_dereg(uint32_t qpn);

/* XFER_FAKEVERBS_DELAY_US from now on (WRs already waiting keep the
 * deadline they have): the environment is only read at get_device_list. */
FAKEVERBS_API void fakeverbs_set_delay_us(unsigned us);

/* While cut, every send WR the NIC executes meets an unreachable peer:
 * it fails with IBV_WC_RETRY_EXC_ERR after XFER_FAKEVERBS_RETRY_MS unless
 * the link is restored before then (a real NIC's retries). */
FAKEVERBS_API void fakeverbs_cut(bool cut);

/* An asynchronous event (ibv_get_async_event) for every open context of
 * device dev: of queue pair qpn (its context only), or with qpn 0 of the
 * port (element.port_num 1).  Only the event: a QP stays as it is
 * (IBV_EVENT_QP_FATAL's QP can be moved with fakeverbs_qp_error).  0, or
 * ENOENT when nothing took it. */
FAKEVERBS_API int fakeverbs_async(int dev, enum ibv_event_type type,
                                  uint32_t qpn);

#endif /* XFER_TESTS_PLUGINS_FAKEVERBS_H */
