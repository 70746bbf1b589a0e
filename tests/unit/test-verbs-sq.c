/* test-verbs-sq.c - the verbs plugin's send-queue bookkeeping (plugins/
 * verbs/sq.h): room, completion order, unpush, drain, forget, wr_ids. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/sq.h"
#include "tests/common/runner.h"
#include "tests/common/xt.h"

/* Owners are only compared: addresses of these stand in for requests. */
static char own[8];

static void sq_free(void *q)
{
    vb__sq_fini(q);
    free(q);
}

/* A queue of depth, finished and freed after the test (which a fatal
 * assertion may have left). */
static vb_sq_t *sq_new(uint32_t depth)
{
    vb_sq_t *q = calloc(1, sizeof *q);

    XT_REQUIRE(q != NULL, "out of memory");
    if (vb__sq_init(q, depth) != XFER_OK) {
        free(q);
        XT_FAIL_FATAL("init of depth %u", depth);
    }
    xt_defer_late(sq_free, q);
    return q;
}

/* The queue's state and ring, to prove a refused call changed nothing. */
typedef struct snap {
    vb_sq_t q;
    vb_sq_ent_t ring[64];
} snap_t;

static void snap_take(snap_t *s, const vb_sq_t *q)
{
    memset(s, 0, sizeof *s);
    s->q = *q;
    XT_REQUIRE(q->depth <= 64, "snapshot of depth %u", q->depth);
    memcpy(s->ring, q->ring, q->depth * sizeof q->ring[0]);
}

static bool snap_same(const snap_t *s, const vb_sq_t *q)
{
    return memcmp(&s->q, q, sizeof *q) == 0 &&
           memcmp(s->ring, q->ring, q->depth * sizeof q->ring[0]) == 0;
}

static void test_sq_init(void)
{
    vb_sq_t q, z;

    memset(&q, 0x5a, sizeof q);
    XT_CHECK(vb__sq_init(&q, 0) == XFER_ERR_INVALID, "depth 0 accepted");
    memset(&z, 0, sizeof z);
    XT_CHECK(memcmp(&q, &z, sizeof q) == 0, "a refused init left junk");
    XT_CHECK(vb__sq_init(&q, (1u << 24) + 1) == XFER_ERR_INVALID,
             "a depth past the wr_id's 24-bit index accepted");
    vb__sq_fini(&q);            /* zeroed: nothing to free */
    XT_REQUIRE(vb__sq_init(&q, 1) == XFER_OK, "depth 1");
    XT_CHECK(q.depth == 1 && q.used == 0 && q.count == 0 && q.ring != NULL,
             "depth %u used %u count %u", q.depth, q.used, q.count);
    XT_CHECK(vb__sq_room(&q) == 1, "room %u", vb__sq_room(&q));
    XT_CHECK(vb__sq_push(&q, 1, own, 1) == 0, "the one batch");
    XT_CHECK(vb__sq_room(&q) == 0, "room %u", vb__sq_room(&q));
    vb__sq_fini(&q);
    XT_CHECK(q.ring == NULL && q.depth == 0 && vb__sq_room(&q) == 0,
             "fini left the queue usable");
    vb__sq_fini(&q);            /* twice: safe */
}

static void test_sq_room(void)
{
    vb_sq_t *q = sq_new(10);
    vb_sq_ent_t e;
    snap_t s;
    uint32_t a, b;

    a = vb__sq_push(q, 1, &own[0], 3);
    b = vb__sq_push(q, 2, &own[1], 7);
    XT_CHECK(a == 0 && b == 1, "indexes %u %u", a, b);
    XT_CHECK(vb__sq_room(q) == 0 && q->used == 10 && q->count == 2,
             "room %u used %u count %u", vb__sq_room(q), q->used, q->count);
    snap_take(&s, q);
    XT_CHECK(vb__sq_push(q, 1, &own[2], 1) == UINT32_MAX, "a push past "
             "the depth accepted");
    XT_CHECK(snap_same(&s, q), "a refused push changed the queue");
    XT_CHECK(vb__sq_complete(q, a, &e), "the oldest refused");
    XT_CHECK(e.kind == 1 && e.owner == &own[0] && e.nwr == 3,
             "entry kind %u nwr %u", e.kind, e.nwr);
    XT_CHECK(vb__sq_room(q) == 3, "room %u", vb__sq_room(q));
    snap_take(&s, q);
    XT_CHECK(vb__sq_push(q, 1, &own[2], 0) == UINT32_MAX, "a push of 0 "
             "work requests accepted");
    XT_CHECK(vb__sq_push(q, 1, &own[2], 4) == UINT32_MAX, "a push of 4 "
             "with room 3 accepted");
    XT_CHECK(snap_same(&s, q), "a refused push changed the queue");
    /* The ring wraps: the next batch goes to index 2, then 0. */
    XT_CHECK(vb__sq_push(q, 3, &own[2], 2) == 2, "third index");
    XT_CHECK(vb__sq_push(q, 3, &own[3], 1) == 3, "fourth index");
    XT_CHECK(vb__sq_room(q) == 0, "room %u", vb__sq_room(q));
}

static void test_sq_complete_order(void)
{
    vb_sq_t *q = sq_new(8);
    vb_sq_ent_t e;
    snap_t s;
    uint32_t idx[5];

    /* Move the head so that the batches wrap round the ring's end. */
    for (int i = 0; i < 6; i++) {
        uint32_t k = vb__sq_push(q, 0, NULL, 1);

        XT_REQUIRE(vb__sq_complete(q, k, NULL), "warm-up %d", i);
    }
    for (int i = 0; i < 5; i++) {
        idx[i] = vb__sq_push(q, (uint8_t)i, &own[i], 1);
        XT_CHECK(idx[i] == (6u + (uint32_t)i) % 8, "batch %d at %u", i,
                 idx[i]);
    }
    for (int i = 0; i < 5; i++) {
        snap_take(&s, q);
        for (uint32_t k = 0; k < 20; k++) {
            if (k == idx[i])
                continue;
            if (vb__sq_complete(q, k, &e))
                XT_FAIL("batch %d oldest: completion of %u accepted", i, k);
        }
        XT_CHECK(vb__sq_complete(q, UINT32_MAX, &e) == false,
                 "index UINT32_MAX accepted");
        XT_CHECK(snap_same(&s, q), "refused completions changed the queue");
        for (int j = 0; j < 5; j++)
            XT_CHECK(vb__sq_live(q, idx[j]) == (j >= i), "batch %d live "
                     "%d with %d completed", j, vb__sq_live(q, idx[j]), i);
        XT_CHECK(vb__sq_complete(q, idx[i], &e), "batch %d refused", i);
        XT_CHECK(e.kind == i && e.owner == &own[i] && e.nwr == 1,
                 "batch %d entry", i);
    }
    XT_CHECK(q->count == 0 && q->used == 0, "count %u used %u", q->count,
             q->used);
    XT_CHECK(!vb__sq_complete(q, idx[4], &e), "completion of an empty "
             "queue accepted");
    XT_CHECK(!vb__sq_live(q, 8) && !vb__sq_live(q, UINT32_MAX),
             "an index past the ring is live");
}

static void test_sq_unpush(void)
{
    vb_sq_t *q = sq_new(16);
    vb_sq_ent_t e;
    uint32_t a, b, c;

    vb__sq_unpush(q);           /* empty: nothing */
    XT_CHECK(q->count == 0 && q->used == 0 && vb__sq_room(q) == 16,
             "unpush of an empty queue");
    a = vb__sq_push(q, 1, &own[0], 4);
    b = vb__sq_push(q, 2, &own[1], 5);
    vb__sq_unpush(q);
    XT_CHECK(vb__sq_room(q) == 12 && q->count == 1, "room %u count %u",
             vb__sq_room(q), q->count);
    XT_CHECK(vb__sq_live(q, a) && !vb__sq_live(q, b), "live a %d b %d",
             vb__sq_live(q, a), vb__sq_live(q, b));
    XT_CHECK(!vb__sq_complete(q, b, &e), "an unpushed batch completed");
    c = vb__sq_push(q, 3, &own[2], 2);
    XT_CHECK(c == b, "the next batch at %u, not the freed %u", c, b);
    vb__sq_unpush(q);
    vb__sq_unpush(q);
    XT_CHECK(q->count == 0 && q->used == 0 && !vb__sq_live(q, a),
             "count %u used %u", q->count, q->used);
    XT_CHECK(vb__sq_push(q, 1, &own[0], 16) == a, "the whole queue");
}

typedef struct seen {
    vb_sq_t *q;
    int n;
    vb_sq_ent_t e[16];
    int live_during;            /* batches the queue still held, in fn */
} seen_t;

static void record(void *arg, const vb_sq_ent_t *e)
{
    seen_t *s = arg;

    if (s->n < 16)
        s->e[s->n] = *e;
    s->n++;
    s->live_during += (int)s->q->count;
    /* fn may forget owners while the queue drains. */
    vb__sq_forget(s->q, &own[2]);
}

static void test_sq_drain(void)
{
    vb_sq_t *q = sq_new(16);
    seen_t s = {.q = q};
    uint32_t idx[5];

    for (int i = 0; i < 3; i++)
        XT_REQUIRE(vb__sq_complete(q, vb__sq_push(q, 0, NULL, 2), NULL),
                   "warm-up");
    for (int i = 0; i < 5; i++)
        idx[i] = vb__sq_push(q, (uint8_t)(10 + i), &own[i],
                             (uint32_t)i + 1);
    XT_CHECK(vb__sq_room(q) == 1, "room %u", vb__sq_room(q));
    vb__sq_drain(q, record, &s);
    XT_CHECK(s.n == 5, "%d batches drained", s.n);
    /* Batch 2's owner was forgotten by fn, at batch 0. */
    for (int i = 0; i < 5 && i < s.n; i++)
        XT_CHECK(s.e[i].kind == 10 + i &&
                 s.e[i].owner == (i == 2 ? NULL : &own[i]) &&
                 s.e[i].nwr == (uint32_t)i + 1, "batch %d: kind %u nwr %u "
                 "(oldest first)", i, s.e[i].kind, s.e[i].nwr);
    XT_CHECK(s.live_during == 4 + 3 + 2 + 1 + 0, "fn saw %d batches still "
             "queued (each leaves before fn)", s.live_during);
    XT_CHECK(q->count == 0 && q->used == 0 && vb__sq_room(q) == 16,
             "count %u used %u room %u", q->count, q->used, vb__sq_room(q));
    for (int i = 0; i < 5; i++)
        XT_CHECK(!vb__sq_live(q, idx[i]), "batch %d live after drain", i);
    s.n = 0;
    vb__sq_drain(q, record, &s);
    XT_CHECK(s.n == 0, "an empty drain called fn %d times", s.n);
    vb__sq_push(q, 0, NULL, 1);
    vb__sq_drain(q, NULL, NULL);
    XT_CHECK(q->count == 0 && q->used == 0, "drain without fn");
}

static void test_sq_forget(void)
{
    vb_sq_t *q = sq_new(8);
    vb_sq_ent_t e;
    uint32_t a, b, c;

    a = vb__sq_push(q, 1, &own[0], 1);
    b = vb__sq_push(q, 2, &own[1], 2);
    c = vb__sq_push(q, 3, &own[0], 3);
    vb__sq_forget(q, &own[0]);
    XT_CHECK(q->count == 3 && q->used == 6, "forget changed the counts: "
             "count %u used %u", q->count, q->used);
    XT_CHECK(vb__sq_complete(q, a, &e) && e.owner == NULL && e.kind == 1 &&
             e.nwr == 1, "first batch: owner still set");
    XT_CHECK(vb__sq_complete(q, b, &e) && e.owner == &own[1] && e.nwr == 2,
             "another owner's batch was forgotten");
    XT_CHECK(vb__sq_complete(q, c, &e) && e.owner == NULL && e.nwr == 3,
             "third batch: owner still set");
    vb__sq_forget(q, &own[3]);   /* empty queue: nothing */
}

/* ---- a long random run against a plain model --------------------------- */

typedef struct model_ent {
    uint32_t idx;
    uint8_t kind;
    void *owner;
    uint32_t nwr;
} model_ent_t;

static void test_sq_model(void)
{
    uint64_t seed = xt_seed(), st = seed;
    model_ent_t m[64];
    unsigned cycles = 0;

    printf("seed %" PRIu64 "\n", seed);
    for (uint32_t depth = 1; depth <= 40; depth += 3) {
        vb_sq_t q;
        uint32_t mhead = 0, mn = 0, mused = 0, wraps = 0;

        XT_REQUIRE(vb__sq_init(&q, depth) == XFER_OK, "depth %u", depth);
        for (int step = 0; step < 20000; step++) {
            unsigned op = (unsigned)(xt_rand(&st) % 100);
            vb_sq_ent_t e;

            if (op < 45) {
                uint32_t room = depth - mused, nwr, want, got;

                if (room == 0)
                    continue;
                /* Mostly small batches, sometimes all the room. */
                nwr = xt_rand(&st) % 4 == 0 ? room
                                            : 1 + (uint32_t)(xt_rand(&st) %
                                                             (room < 4 ? room
                                                                       : 4));
                want = (mhead + mn) % depth;
                m[mn] = (model_ent_t){want, (uint8_t)xt_rand(&st),
                                      &own[xt_rand(&st) % 8], nwr};
                got = vb__sq_push(&q, m[mn].kind, m[mn].owner, nwr);
                if (got != want) {
                    XT_FAIL("seed %" PRIu64 " depth %u step %d: push at %u, "
                            "not %u", seed, depth, step, got, want);
                    break;
                }
                if (want + 1 == depth)
                    wraps++;
                mn++;
                mused += nwr;
            } else if (op < 85) {
                /* A completion: the oldest's, or now and then another. */
                uint32_t idx = mn > 0 && xt_rand(&st) % 8 != 0
                                   ? m[0].idx
                                   : (uint32_t)(xt_rand(&st) % (depth + 2));
                bool want = mn > 0 && idx == m[0].idx;
                bool got = vb__sq_complete(&q, idx, &e);

                if (got != want) {
                    XT_FAIL("seed %" PRIu64 " depth %u step %d: complete(%u) "
                            "%d, not %d", seed, depth, step, idx, got, want);
                    break;
                }
                if (!got)
                    continue;
                if (e.kind != m[0].kind || e.owner != m[0].owner ||
                    e.nwr != m[0].nwr) {
                    XT_FAIL("seed %" PRIu64 " depth %u step %d: completed "
                            "entry differs", seed, depth, step);
                    break;
                }
                mused -= m[0].nwr;
                memmove(m, m + 1, --mn * sizeof m[0]);
                mhead = (mhead + 1) % depth;
                cycles++;
            } else if (op < 92) {
                vb__sq_unpush(&q);
                if (mn > 0)
                    mused -= m[--mn].nwr;
            } else if (op < 98) {
                void *o = &own[xt_rand(&st) % 8];

                vb__sq_forget(&q, o);
                for (uint32_t i = 0; i < mn; i++)
                    if (m[i].owner == o)
                        m[i].owner = NULL;
            } else {
                vb__sq_drain(&q, NULL, NULL);
                mhead = (mhead + mn) % depth;
                mn = 0;
                mused = 0;
            }
            /* The whole state against the model. */
            if (q.count != mn || q.used != mused ||
                vb__sq_room(&q) != depth - mused) {
                XT_FAIL("seed %" PRIu64 " depth %u step %d: count %u used %u "
                        "room %u, model %u %u", seed, depth, step, q.count,
                        q.used, vb__sq_room(&q), mn, mused);
                break;
            }
            bool bad = false;

            for (uint32_t k = 0; k < depth && !bad; k++) {
                bool live = false;

                for (uint32_t i = 0; i < mn; i++)
                    live |= m[i].idx == k;
                bad = vb__sq_live(&q, k) != live;
            }
            if (bad) {
                XT_FAIL("seed %" PRIu64 " depth %u step %d: live indexes "
                        "differ from the model", seed, depth, step);
                break;
            }
        }
        XT_CHECK(depth == 1 || wraps > 10, "depth %u: the ring wrapped only "
                 "%u times", depth, wraps);
        vb__sq_fini(&q);
    }
    printf("%u batches completed\n", cycles);
}

/* ---- wr_id ------------------------------------------------------------- */

static void wrid_is(unsigned line, unsigned kind, unsigned slot,
                    unsigned gen, uint32_t idx, unsigned wk, unsigned ws,
                    unsigned wg, uint32_t wi)
{
    uint64_t id = vb__wrid(kind, slot, gen, idx);

    if (vb__wrid_kind(id) != wk || vb__wrid_slot(id) != ws ||
        vb__wrid_gen(id) != wg || vb__wrid_idx(id) != wi)
        xt_fail_at(__FILE__, line, 0, "wrid(%#x, %#x, %#x, %#x) = %#018"
                   PRIx64 " reads back %#x %#x %#x %#x", kind, slot, gen,
                   idx, id, vb__wrid_kind(id), vb__wrid_slot(id),
                   vb__wrid_gen(id), vb__wrid_idx(id));
    else
        xt_pass_at(__FILE__, line, "wrid");
}
#define WRID_IS(k, s, g, i, wk, ws, wg, wi)                                 \
    wrid_is(__LINE__, k, s, g, i, wk, ws, wg, wi)

static void test_wrid(void)
{
    uint64_t seed = xt_seed(), st = seed;

    WRID_IS(0, 0, 0, 0, 0, 0, 0, 0);
    XT_CHECK(vb__wrid(0, 0, 0, 0) == 0, "all zero");
    XT_CHECK(vb__wrid(0xff, 0xffff, 0xffff, 0xffffff) == UINT64_MAX,
             "all ones");
    /* Each field at its top alone: nothing leaks into a neighbour. */
    WRID_IS(0xff, 0, 0, 0, 0xff, 0, 0, 0);
    WRID_IS(0, 0xffff, 0, 0, 0, 0xffff, 0, 0);
    WRID_IS(0, 0, 0xffff, 0, 0, 0, 0xffff, 0);
    WRID_IS(0, 0, 0, 0xffffff, 0, 0, 0, 0xffffff);
    XT_CHECK(vb__wrid(0xff, 0, 0, 0) == 0xff00000000000000ull, "kind bits");
    XT_CHECK(vb__wrid(0, 0xffff, 0, 0) == 0x00ffff0000000000ull, "slot bits");
    XT_CHECK(vb__wrid(0, 0, 0xffff, 0) == 0x000000ffff000000ull, "gen bits");
    XT_CHECK(vb__wrid(0, 0, 0, 0xffffff) == 0x0000000000ffffffull,
             "index bits");
    /* Values past a field are cut to it, never spilled. */
    WRID_IS(0x1ff, 0x10000, 0x1ffff, 0x1000000, 0xff, 0, 0xffff, 0);
    WRID_IS(0x100, 0x1ffff, 0x10001, 0xffffffff, 0, 0xffff, 1, 0xffffff);
    for (int i = 0; i < 10000; i++) {
        unsigned k = (unsigned)xt_rand(&st) & 0xff;
        unsigned s = (unsigned)xt_rand(&st) & 0xffff;
        unsigned g = (unsigned)xt_rand(&st) & 0xffff;
        uint32_t x = (uint32_t)xt_rand(&st) & 0xffffff;
        uint64_t id = vb__wrid(k, s, g, x);

        if (vb__wrid_kind(id) != k || vb__wrid_slot(id) != s ||
            vb__wrid_gen(id) != g || vb__wrid_idx(id) != x) {
            XT_FAIL("seed %" PRIu64 ": %#x %#x %#x %#x did not round trip",
                    seed, k, s, g, x);
            break;
        }
    }
}

static const xt_test_t sq_tests[] = {
    XT_TEST(test_sq_init),
    XT_TEST(test_sq_room),
    XT_TEST(test_sq_complete_order),
    XT_TEST(test_sq_unpush),
    XT_TEST(test_sq_drain),
    XT_TEST(test_sq_forget),
    XT_TEST(test_sq_model),
    XT_TEST(test_wrid),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"verbs-sq", sq_tests},
    };

    (void)argc;
    (void)argv;
    return xt_run("test-verbs-sq", suites, 1);
}
