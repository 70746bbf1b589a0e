/* plan.h - a transfer's segments turned into work requests: adjacent runs
 * merged, long ones cut, large ones striped across rails.  Worked out
 * once at request creation; pure arithmetic, no verbs calls. */
#ifndef XFER_PLUGINS_VERBS_PLAN_H
#define XFER_PLUGINS_VERBS_PLAN_H

#include <stddef.h>
#include <stdint.h>

/* One segment, with the keys of its local and remote registration on
 * every rail (index = rail). */
typedef struct vb_plan_seg {
    uintptr_t laddr;
    uint64_t raddr;
    size_t len;
    const void *lmem, *rmem;   /* registrations: runs never cross one */
    const uint32_t *lkey;      /* [nrails] */
    const uint32_t *rkey;      /* [nrails] */
} vb_plan_seg_t;

typedef struct vb_plan_cfg {
    unsigned nrails;           /* 1..VB_MAX_RAILS */
    size_t stripe_min;         /* a run at least this long is striped
                                  over every rail; 0: never */
    size_t stripe_align;       /* stripes start at multiples of this
                                  from the run's start (power of two;
                                  4096); 0 is taken as 1 */
    size_t max_len;            /* one work request moves at most this
                                  (the ports' max_msg_sz, <= 2^31); 0 or
                                  more than 2^31 is taken as 2^31 */
} vb_plan_cfg_t;

/* One work request. */
typedef struct vb_op {
    uint8_t rail;
    uintptr_t laddr;
    uint64_t raddr;
    uint32_t len;
    uint32_t lkey, rkey;
    size_t seg;                /* its first segment, for sentences */
} vb_op_t;

/* Segments in order become work requests in order: segments adjacent on
 * both sides within the same registrations merge into one run (of any
 * length; empty segments are skipped); a run of stripe_min or more is cut
 * into nrails stripes of about equal length on stripe_align boundaries,
 * stripe i on rail i (the last rails get none when the rounding up leaves
 * them no bytes); any other run goes on rail 0; then every stripe or run
 * longer than max_len is cut into pieces of max_len and the rest.
 * Writes at most cap ops to out (out may be NULL with cap 0) and returns
 * how many the plan needs: call once to count, then to fill. */
size_t vb__plan(const vb_plan_cfg_t *cfg, const vb_plan_seg_t *segs,
                size_t nseg, vb_op_t *out, size_t cap);

#endif /* XFER_PLUGINS_VERBS_PLAN_H */
