/* test-verbs-plan.c - a transfer's work requests (plugins/verbs/plan.h):
 * merging, striping, max_len cuts, and every byte covered exactly once. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/plan.h"
#include "tests/common/runner.h"
#include "tests/common/xt.h"

#define RAILS 4u               /* VB_MAX_RAILS (wire.h) */
#define NREG 3u
#define K 1024u
#define MB (1024u * 1024u)

/* Registrations: stand-in objects, and their keys on every rail, all
 * different so that an op's keys name their registration and rail. */
static char lreg[NREG], rreg[NREG];
static const uint32_t lkeys[NREG][RAILS] = {
    {0x100, 0x101, 0x102, 0x103},
    {0x110, 0x111, 0x112, 0x113},
    {0x120, 0x121, 0x122, 0x123},
};
static const uint32_t rkeys[NREG][RAILS] = {
    {0x200, 0x201, 0x202, 0x203},
    {0x210, 0x211, 0x212, 0x213},
    {0x220, 0x221, 0x222, 0x223},
};

static vb_plan_seg_t seg(unsigned lr, uintptr_t laddr, unsigned rr,
                         uint64_t raddr, size_t len)
{
    return (vb_plan_seg_t){
        .laddr = laddr, .raddr = raddr, .len = len,
        .lmem = &lreg[lr], .rmem = &rreg[rr],
        .lkey = lkeys[lr], .rkey = rkeys[rr],
    };
}

static vb_plan_cfg_t cfg1(void)
{
    return (vb_plan_cfg_t){.nrails = 1, .stripe_min = 0,
                           .stripe_align = 4096, .max_len = 1u << 31};
}

/* Plan into a buffer freed after the test, checking that counting asks
 * for what filling writes. */
static size_t plan_at(unsigned line, const vb_plan_cfg_t *c,
                      const vb_plan_seg_t *s, size_t n, vb_op_t **ops)
{
    size_t need = vb__plan(c, s, n, NULL, 0), got;

    *ops = calloc(need + 1, sizeof **ops);
    if (*ops == NULL)
        xt_fail_fatal_at(__FILE__, line, "out of memory");
    xt_defer_late(free, *ops);
    got = vb__plan(c, s, n, *ops, need);
    if (got != need)
        xt_fail_at(__FILE__, line, 0, "counted %zu ops, filled %zu", need,
                   got);
    return need;
}
#define PLAN(c, s, n, ops) plan_at(__LINE__, (c), (s), (n), (ops))

/* op i is exactly this. */
static void op_is_at(unsigned line, const vb_op_t *ops, size_t nops,
                     size_t i, unsigned rail, uintptr_t laddr,
                     uint64_t raddr, uint32_t len, unsigned lr, unsigned rr,
                     size_t segi)
{
    const vb_op_t *o = &ops[i];

    if (i >= nops) {
        xt_fail_at(__FILE__, line, 0, "op %zu of %zu", i, nops);
        return;
    }
    if (o->rail != rail || o->laddr != laddr || o->raddr != raddr ||
        o->len != len || o->lkey != lkeys[lr][rail] ||
        o->rkey != rkeys[rr][rail] || o->seg != segi)
        xt_fail_at(__FILE__, line, 0, "op %zu: rail %u laddr %#" PRIxPTR
                   " raddr %#" PRIx64 " len %u lkey %#x rkey %#x seg %zu; "
                   "expected rail %u laddr %#" PRIxPTR " raddr %#" PRIx64
                   " len %u lkey %#x rkey %#x seg %zu", i, o->rail, o->laddr,
                   o->raddr, o->len, o->lkey, o->rkey, o->seg, rail, laddr,
                   raddr, len, lkeys[lr][rail], rkeys[rr][rail], segi);
    else
        xt_pass_at(__FILE__, line, "op");
}
#define OP_IS(i, rail, la, ra, len, lr, rr, segi)                           \
    op_is_at(__LINE__, ops, n, (i), (rail), (la), (ra), (len), (lr), (rr),  \
             (segi))

/* ---- merging --------------------------------------------------------- */

static void test_plan_merge(void)
{
    vb_plan_cfg_t c = cfg1();
    vb_plan_seg_t s[8];
    vb_op_t *ops;
    size_t n;

    /* Adjacent on both sides, same registrations: one op. */
    s[0] = seg(0, 0x10000, 0, 0x90000, 100);
    s[1] = seg(0, 0x10064, 0, 0x90064, 50);
    n = PLAN(&c, s, 2, &ops);
    XT_CHECK(n == 1, "%zu ops", n);
    OP_IS(0, 0, 0x10000, 0x90000, 150, 0, 0, 0);
    /* Local adjacent, remote not; remote adjacent, local not. */
    s[1] = seg(0, 0x10064, 0, 0x90065, 50);
    n = PLAN(&c, s, 2, &ops);
    XT_CHECK(n == 2, "remote gap: %zu ops", n);
    OP_IS(1, 0, 0x10064, 0x90065, 50, 0, 0, 1);
    s[1] = seg(0, 0x10063, 0, 0x90064, 50);
    n = PLAN(&c, s, 2, &ops);
    XT_CHECK(n == 2, "local overlap: %zu ops", n);
    /* The same addresses in other registrations never merge. */
    s[1] = seg(1, 0x10064, 0, 0x90064, 50);
    n = PLAN(&c, s, 2, &ops);
    XT_CHECK(n == 2, "other local registration: %zu ops", n);
    OP_IS(1, 0, 0x10064, 0x90064, 50, 1, 0, 1);
    s[1] = seg(0, 0x10064, 2, 0x90064, 50);
    n = PLAN(&c, s, 2, &ops);
    XT_CHECK(n == 2, "other remote registration: %zu ops", n);
    OP_IS(1, 0, 0x10064, 0x90064, 50, 0, 2, 1);
    /* Adjacent only backwards: segments keep their order. */
    s[0] = seg(0, 0x10064, 0, 0x90064, 50);
    s[1] = seg(0, 0x10000, 0, 0x90000, 100);
    n = PLAN(&c, s, 2, &ops);
    XT_CHECK(n == 2, "backwards: %zu ops", n);
    OP_IS(0, 0, 0x10064, 0x90064, 50, 0, 0, 0);
    OP_IS(1, 0, 0x10000, 0x90000, 100, 0, 0, 1);
    /* A chain, then a break, then a chain that does not join the first. */
    s[0] = seg(0, 1000, 1, 5000, 10);
    s[1] = seg(0, 1010, 1, 5010, 20);
    s[2] = seg(0, 1030, 1, 5030, 30);
    s[3] = seg(2, 1060, 1, 5060, 40);
    s[4] = seg(0, 1060, 1, 5060, 5);
    s[5] = seg(0, 1065, 1, 5065, 5);
    n = PLAN(&c, s, 6, &ops);
    XT_CHECK(n == 3, "%zu ops", n);
    OP_IS(0, 0, 1000, 5000, 60, 0, 1, 0);
    OP_IS(1, 0, 1060, 5060, 40, 2, 1, 3);
    OP_IS(2, 0, 1060, 5060, 10, 0, 1, 4);
    /* Nothing at all. */
    XT_CHECK(vb__plan(&c, s, 0, NULL, 0) == 0, "no segments, some ops");
}

/* Empty segments are skipped, and do not break a run. */
static void test_plan_empty(void)
{
    vb_plan_cfg_t c = cfg1();
    vb_plan_seg_t s[6];
    vb_op_t *ops;
    size_t n;

    s[0] = seg(0, 100, 0, 900, 0);
    s[1] = seg(0, 100, 0, 900, 10);
    s[2] = seg(2, 7, 2, 7, 0);
    s[3] = seg(0, 110, 0, 910, 10);
    s[4] = seg(1, 0, 1, 0, 0);
    n = PLAN(&c, s, 5, &ops);
    XT_CHECK(n == 1, "%zu ops", n);
    OP_IS(0, 0, 100, 900, 20, 0, 0, 1);
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 0, "one empty segment: %zu ops", n);
    /* With a cut inside: the second piece starts in segment 3, past the
     * empty one. */
    c.max_len = 10;
    n = PLAN(&c, s, 5, &ops);
    XT_CHECK(n == 2, "%zu ops", n);
    OP_IS(0, 0, 100, 900, 10, 0, 0, 1);
    OP_IS(1, 0, 110, 910, 10, 0, 0, 3);
}

/* ---- max_len ------------------------------------------------------------ */

static void test_plan_max_len(void)
{
    vb_plan_cfg_t c = cfg1();
    vb_plan_seg_t s[3];
    vb_op_t *ops;
    size_t n;

    c.max_len = 4;
    s[0] = seg(0, 0x1000, 0, 0x8000, 10);
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 3, "%zu ops", n);
    OP_IS(0, 0, 0x1000, 0x8000, 4, 0, 0, 0);
    OP_IS(1, 0, 0x1004, 0x8004, 4, 0, 0, 0);
    OP_IS(2, 0, 0x1008, 0x8008, 2, 0, 0, 0);
    /* A merged run is cut where max_len falls, each piece naming the
     * segment it starts in. */
    s[0] = seg(1, 0x1000, 2, 0x8000, 3);
    s[1] = seg(1, 0x1003, 2, 0x8003, 3);
    s[2] = seg(1, 0x1006, 2, 0x8006, 3);
    n = PLAN(&c, s, 3, &ops);
    XT_CHECK(n == 3, "%zu ops", n);
    OP_IS(0, 0, 0x1000, 0x8000, 4, 1, 2, 0);
    OP_IS(1, 0, 0x1004, 0x8004, 4, 1, 2, 1);
    OP_IS(2, 0, 0x1008, 0x8008, 1, 1, 2, 2);
    /* Exactly max_len, and one more. */
    c.max_len = 9;
    XT_CHECK(vb__plan(&c, s, 3, NULL, 0) == 1, "9 bytes, max 9");
    c.max_len = 8;
    XT_CHECK(vb__plan(&c, s, 3, NULL, 0) == 2, "9 bytes, max 8");
    /* Lengths past 32 bits (no memory behind them: only numbers). */
    c.max_len = (size_t)1 << 31;
    s[0] = seg(0, (uintptr_t)1 << 40, 0, (uint64_t)1 << 50,
               ((size_t)1 << 32) + 5);
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 3, "%zu ops", n);
    OP_IS(0, 0, (uintptr_t)1 << 40, (uint64_t)1 << 50, 1u << 31, 0, 0, 0);
    OP_IS(1, 0, ((uintptr_t)1 << 40) + (1u << 31),
          ((uint64_t)1 << 50) + (1u << 31), 1u << 31, 0, 0, 0);
    OP_IS(2, 0, ((uintptr_t)1 << 40) + ((uintptr_t)1 << 32),
          ((uint64_t)1 << 50) + ((uint64_t)1 << 32), 5, 0, 0, 0);
    /* max_len 0 (unset) and past 2^31 mean 2^31: a length never
     * overflows the op's 32 bits. */
    c.max_len = 0;
    XT_CHECK(vb__plan(&c, s, 1, NULL, 0) == 3, "max_len 0");
    c.max_len = SIZE_MAX;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 3 && ops[0].len == 1u << 31, "max_len SIZE_MAX: %zu ops",
             n);
}

/* ---- striping ------------------------------------------------------------ */

static void test_plan_stripe(void)
{
    vb_plan_cfg_t c = {.nrails = 4, .stripe_min = 64 * K,
                       .stripe_align = 4096, .max_len = 1u << 31};
    vb_plan_seg_t s[3];
    vb_op_t *ops;
    size_t n;

    /* 1 MiB over 4 rails: four quarters, each with its rail's keys. */
    s[0] = seg(1, 0x100000, 2, 0x700000, MB);
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 4, "%zu ops", n);
    for (unsigned r = 0; r < 4; r++)
        OP_IS(r, r, 0x100000 + r * 256 * K, 0x700000 + r * 256 * K,
              256 * K, 1, 2, 0);
    /* Exactly stripe_min is striped; one byte less is not. */
    s[0].len = 64 * K;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 4, "%zu ops", n);
    OP_IS(3, 3, 0x100000 + 48 * K, 0x700000 + 48 * K, 16 * K, 1, 2, 0);
    s[0].len = 64 * K - 1;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 1, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 64 * K - 1, 1, 2, 0);
    /* Rounded up to the alignment: 10000 over 3 is 3334, so 4096, 4096
     * and the 1808 left. */
    c.nrails = 3;
    c.stripe_min = 8000;
    s[0].len = 10000;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 3, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 4096, 1, 2, 0);
    OP_IS(1, 1, 0x101000, 0x701000, 4096, 1, 2, 0);
    OP_IS(2, 2, 0x102000, 0x702000, 1808, 1, 2, 0);
    /* 12289 over 3 is 4097, so 8192: two stripes cover it all and the
     * third rail gets nothing. */
    s[0].len = 12289;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 2, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 8192, 1, 2, 0);
    OP_IS(1, 1, 0x102000, 0x702000, 4097, 1, 2, 0);
    /* Alignment 1 (and 0, taken as 1): equal thirds, the last shorter. */
    c.stripe_align = 1;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 3, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 4097, 1, 2, 0);
    OP_IS(2, 2, 0x100000 + 8194, 0x700000 + 8194, 4095, 1, 2, 0);
    c.stripe_align = 0;
    XT_CHECK(vb__plan(&c, s, 1, NULL, 0) == 3, "stripe_align 0");
    /* Never striped: stripe_min 0, or one rail. */
    c.stripe_align = 4096;
    c.stripe_min = 0;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 1 && ops[0].rail == 0, "stripe_min 0: %zu ops", n);
    c.stripe_min = 1;
    c.nrails = 1;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 1 && ops[0].rail == 0, "one rail: %zu ops", n);
    /* Striped and cut: 1 MiB over 2 rails with max_len 200 KiB. */
    c.nrails = 2;
    c.stripe_min = 1;
    c.max_len = 200 * K;
    s[0].len = MB;
    n = PLAN(&c, s, 1, &ops);
    XT_CHECK(n == 6, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 200 * K, 1, 2, 0);
    OP_IS(1, 0, 0x100000 + 200 * K, 0x700000 + 200 * K, 200 * K, 1, 2, 0);
    OP_IS(2, 0, 0x100000 + 400 * K, 0x700000 + 400 * K, 112 * K, 1, 2, 0);
    OP_IS(3, 1, 0x100000 + 512 * K, 0x700000 + 512 * K, 200 * K, 1, 2, 0);
    OP_IS(5, 1, 0x100000 + 912 * K, 0x700000 + 912 * K, 112 * K, 1, 2, 0);
    /* A striped run of three merged segments: a stripe starting inside
     * segment 1 names it.  300 KiB over 2: 150 KiB, aligned 152 KiB. */
    c.max_len = 1u << 31;
    s[0] = seg(0, 0x100000, 0, 0x700000, 100 * K);
    s[1] = seg(0, 0x100000 + 100 * K, 0, 0x700000 + 100 * K, 100 * K);
    s[2] = seg(0, 0x100000 + 200 * K, 0, 0x700000 + 200 * K, 100 * K);
    n = PLAN(&c, s, 3, &ops);
    XT_CHECK(n == 2, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 152 * K, 0, 0, 0);
    OP_IS(1, 1, 0x100000 + 152 * K, 0x700000 + 152 * K, 148 * K, 0, 0, 1);
    /* Small runs beside a striped one stay on rail 0. */
    c.stripe_min = 64 * K;
    s[1] = seg(1, 0x900000, 1, 0x900000, 4 * K);
    s[2] = seg(2, 0xa00000, 2, 0xa00000, 256 * K);
    n = PLAN(&c, s, 3, &ops);
    XT_CHECK(n == 5, "%zu ops", n);
    OP_IS(0, 0, 0x100000, 0x700000, 52 * K, 0, 0, 0);
    OP_IS(1, 1, 0x100000 + 52 * K, 0x700000 + 52 * K, 48 * K, 0, 0, 0);
    OP_IS(2, 0, 0x900000, 0x900000, 4 * K, 1, 1, 1);
    OP_IS(3, 0, 0xa00000, 0xa00000, 128 * K, 2, 2, 2);
    OP_IS(4, 1, 0xa00000 + 128 * K, 0xa00000 + 128 * K, 128 * K, 2, 2, 2);
}

/* Filling a short array writes what fits and still says what is needed. */
static void test_plan_count_fill(void)
{
    vb_plan_cfg_t c = {.nrails = 4, .stripe_min = 1, .stripe_align = 1,
                       .max_len = 100};
    vb_plan_seg_t s[2];
    vb_op_t all[64], part[64];
    size_t need, got;

    /* Padding too: the arrays are compared as bytes. */
    memset(all, 0xee, sizeof all);
    memset(part, 0xee, sizeof part);

    s[0] = seg(0, 0, 0, 0, 1000);
    s[1] = seg(1, 5000, 1, 5000, 350);
    need = vb__plan(&c, s, 2, NULL, 0);
    XT_CHECK(need == 4 * 3 + 4 * 1, "counted %zu", need);
    XT_REQUIRE(need <= 64, "counted %zu", need);
    got = vb__plan(&c, s, 2, all, 64);
    XT_CHECK(got == need, "filled %zu of %zu", got, need);
    got = vb__plan(&c, s, 2, part, 5);
    XT_CHECK(got == need, "a short fill says %zu, not %zu", got, need);
    XT_CHECK(memcmp(part, all, 5 * sizeof part[0]) == 0,
             "the first 5 ops differ");
    for (size_t i = 5; i < 64; i++) {
        const unsigned char *p = (const unsigned char *)&part[i];

        for (size_t b = 0; b < sizeof part[i]; b++)
            if (p[b] != 0xee) {
                XT_FAIL("op %zu written past cap 5", i);
                return;
            }
    }
    got = vb__plan(&c, s, 2, NULL, 10);
    XT_CHECK(got == need, "out NULL with cap 10: %zu", got);
}

/* ---- every byte once: random segment lists against a model ------------- */

typedef struct piece {
    size_t seg, off, len;
} piece_t;

static int piece_cmp(const void *a, const void *b)
{
    const piece_t *x = a, *y = b;

    if (x->seg != y->seg)
        return x->seg < y->seg ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

static size_t rand_len(uint64_t *st)
{
    switch (xt_rand(st) % 10) {
    case 0:
        return 0;
    case 1: case 2: case 3:
        return 1 + xt_rand(st) % 100;
    case 4: case 5: case 6: case 7:
        return 1 + xt_rand(st) % (64 * K);
    default:
        return 1 + xt_rand(st) % (4 * MB);
    }
}

/* The model's runs: consecutive non-empty segments adjacent on both
 * sides in the same registrations. */
typedef struct run {
    size_t first, len;
} run_t;

static size_t model_runs(const vb_plan_seg_t *s, size_t n, run_t *runs)
{
    size_t nr = 0;

    for (size_t i = 0; i < n; i++) {
        run_t *r = nr ? &runs[nr - 1] : NULL;

        if (s[i].len == 0)
            continue;
        if (r && s[i].lmem == s[r->first].lmem &&
            s[i].rmem == s[r->first].rmem &&
            s[i].laddr == s[r->first].laddr + r->len &&
            s[i].raddr == s[r->first].raddr + r->len) {
            r->len += s[i].len;
            continue;
        }
        runs[nr++] = (run_t){i, s[i].len};
    }
    return nr;
}

/* What the random cases covered, printed at the end. */
static size_t total_ops, striped_runs, merged_runs;

/* One random case; false (and a failure recorded) when the plan is
 * wrong. */
static bool model_case(uint64_t seed, int iter, uint64_t *st)
{
    vb_plan_seg_t s[48];
    run_t runs[48];
    size_t nseg = 1 + xt_rand(st) % 48, nops, nruns, np = 0, k = 0;
    vb_plan_cfg_t c;
    vb_op_t *ops;
    piece_t *pc;
    bool ok = true;

#define BAD(...)                                                            \
    do {                                                                    \
        char m_[256];                                                       \
        snprintf(m_, sizeof m_, __VA_ARGS__);                               \
        XT_FAIL("seed %" PRIu64 " case %d: %s", seed, iter, m_);            \
        ok = false;                                                         \
        goto out;                                                           \
    } while (0)

    c.nrails = 1 + (unsigned)(xt_rand(st) % RAILS);
    c.stripe_min = xt_rand(st) % 3 == 0 ? 0 : 1 + xt_rand(st) % MB;
    c.stripe_align = (size_t)1 << xt_rand(st) % 14;
    c.max_len = xt_rand(st) % 3 == 0 ? (size_t)1 << 31
                                     : 4 * K + xt_rand(st) % MB;
    for (size_t i = 0; i < nseg; i++) {
        size_t len = rand_len(st);

        if (i > 0 && xt_rand(st) % 2 == 0) {
            /* Continues the previous segment (which may be empty). */
            s[i] = s[i - 1];
            s[i].laddr += s[i - 1].len;
            s[i].raddr += s[i - 1].len;
            s[i].len = len;
            /* Now and then adjacent on one side only. */
            if (xt_rand(st) % 8 == 0)
                s[i].raddr += 1 + xt_rand(st) % 64;
            continue;
        }
        s[i] = seg((unsigned)(xt_rand(st) % NREG),
                   (uintptr_t)(xt_rand(st) & 0xffffffffffull) << 12,
                   (unsigned)(xt_rand(st) % NREG),
                   (xt_rand(st) & 0xffffffffffull) << 12, len);
    }
    nops = vb__plan(&c, s, nseg, NULL, 0);
    ops = calloc(nops + 1, sizeof *ops);
    pc = calloc(2 * nops + nseg + 1, sizeof *pc);
    XT_REQUIRE(ops != NULL && pc != NULL, "out of memory");
    if (vb__plan(&c, s, nseg, ops, nops) != nops)
        BAD("count and fill differ");

    /* Each op: its keys, its segment, and the bytes it moves, walked
     * segment by segment. */
    for (size_t i = 0; i < nops; i++) {
        const vb_op_t *o = &ops[i];
        size_t j = o->seg, off, left = o->len;

        if (o->len == 0 || o->len > c.max_len || o->rail >= c.nrails ||
            j >= nseg)
            BAD("op %zu: len %u rail %u seg %zu", i, o->len, o->rail, j);
        if (i > 0 && o->seg < ops[i - 1].seg)
            BAD("op %zu: segment %zu after %zu", i, o->seg, ops[i - 1].seg);
        if (o->laddr < s[j].laddr || o->laddr - s[j].laddr >= s[j].len)
            BAD("op %zu: laddr %#" PRIxPTR " not in segment %zu", i,
                o->laddr, j);
        off = o->laddr - s[j].laddr;
        if (o->raddr != s[j].raddr + off)
            BAD("op %zu: raddr %#" PRIx64 " for laddr %#" PRIxPTR, i,
                o->raddr, o->laddr);
        if (o->lkey != s[j].lkey[o->rail] || o->rkey != s[j].rkey[o->rail])
            BAD("op %zu: keys %#x %#x not segment %zu's on rail %u", i,
                o->lkey, o->rkey, j, o->rail);
        for (;;) {
            size_t take = s[j].len - off < left ? s[j].len - off : left;
            size_t prev = j;

            pc[np++] = (piece_t){j, off, take};
            left -= take;
            if (left == 0)
                break;
            do
                j++;
            while (j < nseg && s[j].len == 0);
            if (j >= nseg || s[j].lmem != s[prev].lmem ||
                s[j].rmem != s[prev].rmem ||
                s[j].laddr != s[prev].laddr + s[prev].len ||
                s[j].raddr != s[prev].raddr + s[prev].len)
                BAD("op %zu: runs from segment %zu into one not adjacent",
                    i, prev);
            off = 0;
            if (np >= 2 * nops + nseg)
                BAD("op %zu: too many pieces", i);
        }
    }
    /* Every byte of every segment exactly once. */
    qsort(pc, np, sizeof *pc, piece_cmp);
    for (size_t j = 0, p = 0; j < nseg; j++) {
        size_t at = 0;

        for (; p < np && pc[p].seg == j; p++) {
            if (pc[p].off != at)
                BAD("segment %zu: byte %zu %s", j, at,
                    pc[p].off < at ? "moved twice" : "not moved");
            at += pc[p].len;
        }
        if (at != s[j].len)
            BAD("segment %zu: %zu of %zu bytes moved", j, at, s[j].len);
    }

    /* The shape, run by run: stripes of the rounded-up length on rails
     * in order, else rail 0; every piece max_len but a stripe's last. */
    nruns = model_runs(s, nseg, runs);
    for (size_t r = 0; r < nruns; r++) {
        size_t len = runs[r].len, first = runs[r].first, sl = len;
        bool striped = c.stripe_min > 0 && c.nrails > 1 &&
                       len >= c.stripe_min;

        striped_runs += striped;
        merged_runs += len != s[first].len;
        if (striped) {
            sl = (len + c.nrails - 1) / c.nrails;
            sl = (sl + c.stripe_align - 1) / c.stripe_align * c.stripe_align;
        }
        for (size_t a = 0, rail = 0; a < len; rail++) {
            size_t b = len - a > sl ? a + sl : len;

            for (size_t off = a; off < b; k++) {
                size_t want = b - off < c.max_len ? b - off : c.max_len;

                if (k >= nops)
                    BAD("run %zu: ops end at offset %zu", r, off);
                if (ops[k].rail != rail || ops[k].len != want ||
                    ops[k].laddr != s[first].laddr + off ||
                    ops[k].raddr != s[first].raddr + off)
                    BAD("run %zu (%zu bytes, %s): op %zu is rail %u len %u "
                        "at +%zu, model rail %zu len %zu at +%zu", r, len,
                        striped ? "striped" : "whole", k, ops[k].rail,
                        ops[k].len, (size_t)(ops[k].laddr - s[first].laddr),
                        rail, want, off);
                off += want;
            }
            a = b;
        }
    }
    if (k != nops)
        BAD("%zu ops, the model %zu", nops, k);
    total_ops += nops;
out:
    free(ops);
    free(pc);
    return ok;
#undef BAD
}

static void test_plan_model(void)
{
    uint64_t seed = xt_seed(), st = seed;

    printf("seed %" PRIu64 "\n", seed);
    for (int iter = 0; iter < 3000; iter++)
        if (!model_case(seed, iter, &st))
            break;
    printf("%zu ops, %zu merged runs, %zu striped runs\n", total_ops,
           merged_runs, striped_runs);
    XT_CHECK(merged_runs > 100 && striped_runs > 100, "the cases merged "
             "%zu runs and striped %zu", merged_runs, striped_runs);
}

static const xt_test_t plan_tests[] = {
    XT_TEST(test_plan_merge),
    XT_TEST(test_plan_empty),
    XT_TEST(test_plan_max_len),
    XT_TEST(test_plan_stripe),
    XT_TEST(test_plan_count_fill),
    XT_TEST(test_plan_model),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"verbs-plan", plan_tests},
    };

    (void)argc;
    (void)argv;
    return xt_run("test-verbs-plan", suites, 1);
}
