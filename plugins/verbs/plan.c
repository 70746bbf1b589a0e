/* plan.c - a transfer's segments as work requests (plan.h): merge the
 * adjacent ones into runs, stripe the large runs, cut at max_len. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdbool.h>

#include "plugins/verbs/plan.h"

/* A work request's length is a uint32_t, and the ports' max_msg_sz is
 * 2^31 at most: a max_len of 0 (unset) or beyond means this. */
#define OP_LEN_MAX ((size_t)1 << 31)

typedef struct emit {
    const vb_plan_seg_t *segs;
    vb_op_t *out;
    size_t cap;
    size_t n;                  /* ops the plan needs so far */
    size_t max_len;
    /* the run being emitted */
    uintptr_t laddr;
    uint64_t raddr;
    size_t seg;                /* the segment holding byte soff of the run */
    size_t soff;               /* that segment's offset in the run */
} emit_t;

/* One work request for the run's bytes [off, off + len) on rail, off
 * never below the last one's: the segment cursor only moves forward. */
static void put(emit_t *e, unsigned rail, size_t off, size_t len)
{
    const vb_plan_seg_t *s;
    vb_op_t *op;

    /* Skips empty segments too: a byte never starts in one. */
    while (off >= e->soff + e->segs[e->seg].len) {
        e->soff += e->segs[e->seg].len;
        e->seg++;
    }
    if (e->out != NULL && e->n < e->cap) {
        s = &e->segs[e->seg];
        op = &e->out[e->n];
        op->rail = (uint8_t)rail;
        op->laddr = e->laddr + off;
        op->raddr = e->raddr + off;
        op->len = (uint32_t)len;
        op->lkey = s->lkey[rail];
        op->rkey = s->rkey[rail];
        op->seg = e->seg;
    }
    e->n++;
}

/* The run's bytes [a, b) on one rail, in pieces of max_len at most. */
static void cut(emit_t *e, unsigned rail, size_t a, size_t b)
{
    while (a < b) {
        size_t len = b - a < e->max_len ? b - a : e->max_len;

        put(e, rail, a, len);
        a += len;
    }
}

/* The stripe length: len over nrails, rounded up to a multiple of align;
 * never 0, and nrails of them always cover len. */
static size_t stripe_len(size_t len, unsigned nrails, size_t align)
{
    size_t s = len / nrails + (len % nrails != 0);
    size_t r = s % align;

    if (r != 0 && s <= SIZE_MAX - (align - r))
        s += align - r;
    return s;
}

static void emit_run(emit_t *e, const vb_plan_cfg_t *cfg, unsigned nrails,
                     size_t first, size_t len)
{
    size_t s, a = 0;

    e->laddr = e->segs[first].laddr;
    e->raddr = e->segs[first].raddr;
    e->seg = first;
    e->soff = 0;
    if (cfg->stripe_min == 0 || nrails < 2 || len < cfg->stripe_min) {
        cut(e, 0, 0, len);
        return;
    }
    s = stripe_len(len, nrails, cfg->stripe_align ? cfg->stripe_align : 1);

    /* Stripe i is [i*s, (i+1)*s) of the run, clipped to its end; the
     * last rails get nothing when the rounding up left no bytes. */
    for (unsigned r = 0; r < nrails && a < len; r++) {
        size_t b = len - a > s ? a + s : len;

        cut(e, r, a, b);
        a = b;
    }
}

/* Whether s continues the run of len bytes that starts with segment
 * run: the same registrations on both sides, and the next bytes of each. */
static bool continues(const vb_plan_seg_t *run, size_t len,
                     const vb_plan_seg_t *s)
{
    return s->lmem == run->lmem && s->rmem == run->rmem &&
           s->laddr == run->laddr + len && s->raddr == run->raddr + len &&
           s->len <= SIZE_MAX - len;
}

size_t vb__plan(const vb_plan_cfg_t *cfg, const vb_plan_seg_t *segs,
                size_t nseg, vb_op_t *out, size_t cap)
{
    emit_t e = {
        .segs = segs,
        .out = out,
        .cap = out != NULL ? cap : 0,
        .max_len = cfg->max_len == 0 || cfg->max_len > OP_LEN_MAX
                       ? OP_LEN_MAX : cfg->max_len,
    };
    unsigned nrails = cfg->nrails ? cfg->nrails : 1;
    size_t i = 0;

    /* Runs merge without a bound on their length: emit cuts them at
     * max_len, which never makes more work requests than stopping the
     * merge there would. */
    while (i < nseg) {
        size_t first = i, len, j;

        if (segs[i].len == 0) {
            i++;
            continue;
        }
        len = segs[first].len;
        for (j = first + 1; j < nseg; j++) {
            if (segs[j].len == 0)
                continue;
            if (!continues(&segs[first], len, &segs[j]))
                break;
            len += segs[j].len;
        }
        emit_run(&e, cfg, nrails, first, len);
        i = j;
    }
    return e.n;
}
