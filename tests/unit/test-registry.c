/* test-registry.c - the address-range table behind every descriptor
 * lookup: containment, boundaries, overlaps, keys, lookups restricted to
 * one kind of range, overlap queries, and a random table checked against
 * a brute-force oracle. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/registry.h"
#include "tests/common/runner.h"

typedef struct ent {
    xfer__range_t range; /* first, as the registry requires */
    int id;
} ent_t;

static xfer__registry_t reg;

static void reg_cleanup(void *arg)
{
    (void)arg;
    xfer__reg_fini(&reg);
}

/* A fresh empty registry torn down after the test. */
static xfer__registry_t *fresh(void)
{
    xfer__reg_init(&reg);
    xt_defer(reg_cleanup, NULL);
    return &reg;
}

static void set(ent_t *e, uint64_t addr, uint64_t len, uint64_t key, int id)
{
    e->range.addr = addr;
    e->range.len = len;
    e->range.key = key;
    e->id = id;
}

static void insert_ok(xfer__registry_t *r, ent_t *e)
{
    xfer_status_t s = xfer__reg_insert(r, &e->range);

    XT_REQUIRE(s == XFER_OK, "insert [0x%" PRIx64 ", +%" PRIu64 ") key %" PRIu64
               ": status %d", e->range.addr, e->range.len, e->range.key, s);
}

/* find(addr, len) must return entry `want` (NULL: nothing). */
#define FIND_IS(r, addr, len, want)                                         \
    do {                                                                    \
        xfer__range_t *got_ = xfer__reg_find((r), (addr), (len));           \
        const ent_t *want_ = (want);                                        \
        XT_CHECK(got_ == (want_ ? &want_->range : NULL),                    \
                 "find(0x%" PRIx64 ", %" PRIu64 ") returned id %d, want %d",  \
                 (uint64_t)(addr), (uint64_t)(len),                         \
                 got_ ? ((ent_t *)got_)->id : -1, want_ ? want_->id : -1);  \
    } while (0)

static void test_empty(void)
{
    xfer__registry_t *r = fresh();

    FIND_IS(r, 0, 1, NULL);
    FIND_IS(r, 0x1000, 16, NULL);
    CU_ASSERT_PTR_NULL(xfer__reg_find_key(r, 0));
    CU_ASSERT_PTR_NULL(xfer__reg_find_key(r, 42));
}

static void test_insert_find_remove(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, b;

    set(&a, 0x1000, 0x100, 7, 1);
    set(&b, 0x3000, 0x10, 9, 2);
    insert_ok(r, &a);
    insert_ok(r, &b);
    FIND_IS(r, 0x1000, 0x100, &a);
    FIND_IS(r, 0x3000, 0x10, &b);
    CU_ASSERT_PTR_EQUAL(xfer__reg_find_key(r, 7), &a.range);
    CU_ASSERT_PTR_EQUAL(xfer__reg_find_key(r, 9), &b.range);

    CU_ASSERT_EQUAL(xfer__reg_remove(r, &a.range), XFER_OK);
    FIND_IS(r, 0x1000, 1, NULL);
    CU_ASSERT_PTR_NULL(xfer__reg_find_key(r, 7));
    FIND_IS(r, 0x3000, 0x10, &b);
    CU_ASSERT_PTR_EQUAL(xfer__reg_find_key(r, 9), &b.range);

    /* Removed twice, or never inserted. */
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &a.range), XFER_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &b.range), XFER_OK);
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &b.range), XFER_ERR_NOT_FOUND);
    FIND_IS(r, 0x3000, 1, NULL);
    /* The table is usable again after emptying. */
    insert_ok(r, &a);
    FIND_IS(r, 0x1050, 1, &a);
}

static void test_remove_absent(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, twin, other;

    set(&a, 0x1000, 0x100, 1, 1);
    set(&twin, 0x1000, 0x100, 1, 2); /* equal fields, different object */
    set(&other, 0x1000, 0x100, 2, 3);
    insert_ok(r, &a);
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &twin.range), XFER_ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &other.range), XFER_ERR_NOT_FOUND);
    FIND_IS(r, 0x1000, 0x100, &a);
    CU_ASSERT_PTR_EQUAL(xfer__reg_find_key(r, 1), &a.range);
}

static void test_subrange(void)
{
    xfer__registry_t *r = fresh();
    ent_t a;

    set(&a, 0x10000, 0x1000, 5, 1);
    insert_ok(r, &a);
    FIND_IS(r, 0x10100, 0x100, &a);
    FIND_IS(r, 0x10001, 0xffe, &a);
    FIND_IS(r, 0x10800, 0x800, &a);
}

static void test_boundaries(void)
{
    xfer__registry_t *r = fresh();
    ent_t a;
    const uint64_t base = 0x20000, len = 0x1000;

    set(&a, base, len, 5, 1);
    insert_ok(r, &a);
    FIND_IS(r, base, 1, &a);               /* first byte */
    FIND_IS(r, base + len - 1, 1, &a);     /* last byte */
    FIND_IS(r, base, len, &a);             /* exactly the region */
    FIND_IS(r, base + len, 1, NULL);       /* one past the end */
    FIND_IS(r, base - 1, 1, NULL);         /* one before */
    FIND_IS(r, base - 1, 2, NULL);         /* straddles the start */
    FIND_IS(r, base + len - 1, 2, NULL);   /* straddles the end */
    FIND_IS(r, base, len + 1, NULL);       /* one byte too long */
    FIND_IS(r, base, 0, NULL);             /* zero length */
    FIND_IS(r, base + 5, 0, NULL);
}

static void test_overflow(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, top;

    set(&a, 0x1000, 0x1000, 1, 1);
    set(&top, UINT64_MAX - 0x1000, 0x800, 2, 2);
    insert_ok(r, &a);
    insert_ok(r, &top);
    /* addr + len wraps past 2^64: never "contained", never a crash. */
    FIND_IS(r, 0x1800, UINT64_MAX, NULL);
    FIND_IS(r, UINT64_MAX - 0x1000, UINT64_MAX, NULL);
    FIND_IS(r, UINT64_MAX, 2, NULL);
    FIND_IS(r, UINT64_MAX, UINT64_MAX, NULL);
    /* A wrapped query must not match by its truncated end. */
    FIND_IS(r, UINT64_MAX - 0x0fff, 0x1000 + 0x1800, NULL);
    FIND_IS(r, UINT64_MAX - 0x1000, 0x800, &top);
    FIND_IS(r, UINT64_MAX - 0x801, 1, &top);
}

static void test_duplicate_key(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, b, c;

    set(&a, 0x1000, 0x100, 77, 1);
    set(&b, 0x9000, 0x100, 77, 2);
    set(&c, 0x9000, 0x100, 78, 3);
    insert_ok(r, &a);
    CU_ASSERT_EQUAL(xfer__reg_insert(r, &b.range), XFER_ERR_EXISTS);
    CU_ASSERT_EQUAL(xfer__reg_insert(r, &a.range), XFER_ERR_EXISTS);
    /* The refused one left no trace. */
    FIND_IS(r, 0x9000, 1, NULL);
    CU_ASSERT_PTR_EQUAL(xfer__reg_find_key(r, 77), &a.range);
    insert_ok(r, &c);
    FIND_IS(r, 0x9000, 1, &c);
}

static void test_overlap_nested(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, b, c, same;

    set(&a, 100, 100, 1, 1);  /* [100, 200) */
    set(&b, 150, 100, 2, 2);  /* [150, 250) overlaps a */
    set(&c, 120, 10, 3, 3);   /* [120, 130) nested in a */
    set(&same, 100, 100, 4, 4); /* identical range, other key */
    insert_ok(r, &b);
    insert_ok(r, &c);
    insert_ok(r, &a);
    FIND_IS(r, 125, 2, &c);    /* a and c contain it: highest start wins */
    FIND_IS(r, 110, 5, &a);
    FIND_IS(r, 130, 5, &a);    /* just after c */
    FIND_IS(r, 160, 10, &b);   /* a and b: b starts later */
    FIND_IS(r, 190, 20, &b);   /* only b reaches 210 */
    FIND_IS(r, 100, 150, NULL);/* neither holds all of it */
    FIND_IS(r, 120, 20, &a);   /* c too short, a holds it */
    insert_ok(r, &same);
    {
        xfer__range_t *got = xfer__reg_find(r, 100, 100);

        XT_CHECK(got == &a.range || got == &same.range,
                 "find over two identical ranges returned id %d",
                 got ? ((ent_t *)got)->id : -1);
    }
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &a.range), XFER_OK);
    FIND_IS(r, 100, 100, &same);
    CU_ASSERT_EQUAL(xfer__reg_remove(r, &c.range), XFER_OK);
    FIND_IS(r, 125, 2, &same);
}

/* One long range early, many short ones after it: lookups in the long
 * range's gaps must walk back past every short one. */
static void test_long_range_shadowed(void)
{
    enum { N = 1000 };
    xfer__registry_t *r = fresh();
    ent_t *e = calloc(N + 1, sizeof(*e));

    XT_REQUIRE(e != NULL, "out of memory");
    xt_defer_late(free, e);
    set(&e[N], 0, 1u << 24, 100000, N);
    insert_ok(r, &e[N]);
    for (int i = 0; i < N; i++) {
        set(&e[i], 1000 + (uint64_t)i * 1000, 10, (uint64_t)i, i);
        insert_ok(r, &e[i]);
    }
    for (int i = 0; i < N; i += 37) {
        FIND_IS(r, 1000 + (uint64_t)i * 1000 + 2, 4, &e[i]);
        FIND_IS(r, 1000 + (uint64_t)i * 1000 + 500, 4, &e[N]);
        FIND_IS(r, 1000 + (uint64_t)i * 1000 + 8, 4, &e[N]);
    }
    FIND_IS(r, 0, 1u << 24, &e[N]);
    FIND_IS(r, 0, (1u << 24) + 1, NULL);
}

/* Entries of even id only: a stand-in for "of the memory type asked". */
static bool even_id(const xfer__range_t *r, const void *arg)
{
    (void)arg;
    return ((const ent_t *)r)->id % 2 == 0;
}

static void test_find_match(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, b, c;
    xfer__range_t *got;

    set(&a, 100, 100, 1, 2);  /* [100, 200), wanted */
    set(&b, 100, 200, 2, 1);  /* [100, 300), same start, sorts after a */
    set(&c, 150, 10, 3, 3);   /* [150, 160), nested, not wanted */
    insert_ok(r, &a);
    insert_ok(r, &b);
    insert_ok(r, &c);
    /* Unfiltered, the others hide a. */
    FIND_IS(r, 100, 50, &b);
    FIND_IS(r, 152, 2, &c);
    got = xfer__reg_find_match(r, 100, 50, even_id, NULL);
    XT_CHECK(got == &a.range, "match(100, 50) returned id %d",
             got ? ((ent_t *)got)->id : -1);
    got = xfer__reg_find_match(r, 152, 2, even_id, NULL);
    XT_CHECK(got == &a.range, "match(152, 2) returned id %d",
             got ? ((ent_t *)got)->id : -1);
    /* Only b holds it, and b is not wanted. */
    CU_ASSERT_PTR_NULL(xfer__reg_find_match(r, 250, 10, even_id, NULL));
    FIND_IS(r, 250, 10, &b);
    got = xfer__reg_find_match(r, 250, 10, NULL, NULL);
    CU_ASSERT_PTR_EQUAL(got, &b.range);
}

static void test_overlap(void)
{
    xfer__registry_t *r = fresh();
    ent_t a, b, big;
    xfer__range_t *got;

    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, 0, 100));
    set(&a, 1000, 100, 1, 1);   /* [1000, 1100) */
    set(&b, 2000, 100, 2, 2);   /* [2000, 2100) */
    insert_ok(r, &a);
    insert_ok(r, &b);
    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, 0, 1000));     /* ends at a */
    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, 1100, 900));   /* between */
    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, 2100, 10));    /* after b */
    CU_ASSERT_PTR_EQUAL(xfer__reg_overlap(r, 999, 2), &a.range);
    CU_ASSERT_PTR_EQUAL(xfer__reg_overlap(r, 1099, 1), &a.range);
    CU_ASSERT_PTR_EQUAL(xfer__reg_overlap(r, 1050, 10), &a.range);
    CU_ASSERT_PTR_EQUAL(xfer__reg_overlap(r, 0, 5000), &b.range);
    CU_ASSERT_PTR_EQUAL(xfer__reg_overlap(r, 1500, 501), &b.range);
    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, 1000, 0));
    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, UINT64_MAX, 2));
    /* A long range starting early reaches past later short ones. */
    set(&big, 500, 5000, 3, 3);
    insert_ok(r, &big);
    got = xfer__reg_overlap(r, 3000, 10);
    XT_CHECK(got == &big.range, "overlap(3000, 10) returned id %d",
             got ? ((ent_t *)got)->id : -1);
    CU_ASSERT_PTR_NULL(xfer__reg_overlap(r, 5500, 10));
}

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = (rng_state += 0x9e3779b97f4a7c15ull);

    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* What find must return: the containing range with the highest start
 * (several with that start may qualify: any of them). */
static int oracle_ok(const ent_t *e, const int *live, size_t n, uint64_t addr,
                     uint64_t len, const xfer__range_t *got)
{
    uint64_t best = 0;
    int found = 0;

    if (len == 0 || addr + len < addr)
        return got == NULL;
    for (size_t i = 0; i < n; i++) {
        const xfer__range_t *x = &e[i].range;

        if (live[i] && x->addr <= addr && addr + len <= x->addr + x->len &&
            (!found || x->addr > best)) {
            best = x->addr;
            found = 1;
        }
    }
    if (!found)
        return got == NULL;
    if (got == NULL || got->addr != best)
        return 0;
    return got->addr <= addr && addr + len <= got->addr + got->len;
}

/* got overlaps [addr, addr+len) and is live, or nothing live does. */
static int overlap_ok(const ent_t *e, const int *live, size_t n,
                      uint64_t addr, uint64_t len, const xfer__range_t *got)
{
    for (size_t i = 0; i < n; i++) {
        const xfer__range_t *x = &e[i].range;
        int hits = live[i] && x->addr < addr + len && x->addr + x->len > addr;

        if (got == x)
            return hits;
        if (got == NULL && hits)
            return 0;
    }
    return got == NULL;
}

static void random_queries(const xfer__registry_t *r, const ent_t *e,
                           const int *live, size_t n, uint64_t span,
                           unsigned queries, uint64_t seed)
{
    unsigned bad = 0;

    for (unsigned q = 0; q < queries; q++) {
        uint64_t addr, len;
        const xfer__range_t *got;

        if (q % 2 == 0 && n > 0) {
            /* Around a real boundary, where mistakes live. */
            const xfer__range_t *x = &e[rnd() % n].range;

            addr = x->addr + x->len - 4 + rnd() % 8;
            len = 1 + rnd() % 8;
        } else {
            addr = rnd() % span;
            len = 1 + rnd() % 64;
        }
        got = xfer__reg_find(r, addr, len);
        if (!oracle_ok(e, live, n, addr, len, got) && bad++ < 5)
            XT_FAIL("seed %" PRIu64 ": find(0x%" PRIx64 ", %" PRIu64
                    ") returned id %d, oracle disagrees", seed, addr, len,
                    got ? ((const ent_t *)got)->id : -1);
        got = xfer__reg_overlap(r, addr, len);
        if (!overlap_ok(e, live, n, addr, len, got) && bad++ < 5)
            XT_FAIL("seed %" PRIu64 ": overlap(0x%" PRIx64 ", %" PRIu64
                    ") returned id %d, oracle disagrees", seed, addr, len,
                    got ? ((const ent_t *)got)->id : -1);
    }
    XT_CHECK(bad == 0, "%u of %u random lookups wrong (seed %" PRIu64 ")",
             bad, queries, seed);
}

static void test_random_disjoint(void)
{
    enum { N = 10000 };
    xfer__registry_t *r = fresh();
    ent_t *e = calloc(N, sizeof(*e));
    int *live = calloc(N, sizeof(*live));
    uint64_t seed = (uint64_t)time(NULL), addr = 0x10000;
    size_t *order = calloc(N, sizeof(*order));

    XT_REQUIRE(e && live && order, "out of memory");
    xt_defer_late(free, e);
    xt_defer_late(free, live);
    xt_defer_late(free, order);
    rng_state = seed;
    for (int i = 0; i < N; i++) {
        addr += rnd() % 256;           /* gap, sometimes none */
        set(&e[i], addr, 1 + rnd() % 4096, rnd(), i);
        addr += e[i].range.len;
        order[i] = (size_t)i;
    }
    /* Insert in random order so the sort is exercised. */
    for (size_t i = N - 1; i > 0; i--) {
        size_t j = rnd() % (i + 1), t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < N; i++) {
        xfer_status_t s = xfer__reg_insert(r, &e[order[i]].range);

        /* 64-bit random keys may collide; the registry must say so. */
        if (s == XFER_ERR_EXISTS) {
            XT_CHECK(xfer__reg_find_key(r, e[order[i]].range.key) != NULL,
                     "EXISTS for a key that is not there");
            continue;
        }
        XT_REQUIRE(s == XFER_OK, "insert %zu: status %d", i, s);
        live[order[i]] = 1;
    }
    random_queries(r, e, live, N, addr + 0x1000, 60000, seed);
    for (int i = 0; i < N; i++) {
        if (!live[i])
            continue;
        if (xfer__reg_find_key(r, e[i].range.key) != &e[i].range) {
            XT_FAIL("key lookup of entry %d failed (seed %" PRIu64 ")", i,
                    seed);
            break;
        }
    }
    /* Remove half at random; the rest must still be found, the removed
     * ones never. */
    for (int i = 0; i < N; i++) {
        if (live[i] && rnd() % 2) {
            XT_REQUIRE(xfer__reg_remove(r, &e[i].range) == XFER_OK,
                       "remove entry %d failed", i);
            live[i] = 0;
        }
    }
    random_queries(r, e, live, N, addr + 0x1000, 30000, seed);
    for (int i = 0; i < N; i++) {
        const xfer__range_t *k = xfer__reg_find_key(r, e[i].range.key);

        if (live[i] ? k != &e[i].range : k == &e[i].range) {
            XT_FAIL("key lookup of entry %d (live %d) wrong after removals",
                    i, live[i]);
            break;
        }
    }
}

static void test_random_overlapping(void)
{
    enum { N = 600 };
    xfer__registry_t *r = fresh();
    ent_t *e = calloc(N, sizeof(*e));
    int *live = calloc(N, sizeof(*live));
    uint64_t seed = (uint64_t)time(NULL) ^ 0x5555;

    XT_REQUIRE(e && live, "out of memory");
    xt_defer_late(free, e);
    xt_defer_late(free, live);
    rng_state = seed;
    for (int i = 0; i < N; i++) {
        /* Starts on a coarse grid so equal starts and nesting happen. */
        uint64_t start = (rnd() % 2000) * 8;
        uint64_t len = rnd() % 4 == 0 ? 1 + rnd() % 8000 : 1 + rnd() % 200;

        set(&e[i], start, len, (uint64_t)i + 1, i);
        insert_ok(r, &e[i]);
        live[i] = 1;
    }
    random_queries(r, e, live, N, 20000, 50000, seed);
    for (int i = 0; i < N; i += 3) {
        XT_REQUIRE(xfer__reg_remove(r, &e[i].range) == XFER_OK,
                   "remove entry %d failed", i);
        live[i] = 0;
    }
    random_queries(r, e, live, N, 20000, 50000, seed);
}

/* Overlapping ranges merged in batches (the first into an empty table,
 * one in descending order, some by single inserts between): lookups
 * agree with the oracle, keys are all found, a repeated key refuses its
 * batch and leaves the table as it was. */
static void test_merge(void)
{
    enum { N = 3000, BATCH = 1000 };
    xfer__registry_t *r = fresh();
    ent_t *e = calloc(N + 1, sizeof(*e));
    int *live = calloc(N + 1, sizeof(*live));
    xfer__range_t **add = calloc(BATCH, sizeof(*add));
    uint64_t seed = (uint64_t)time(NULL) ^ 0xaaaa;

    XT_REQUIRE(e && live && add, "out of memory");
    xt_defer_late(free, e);
    xt_defer_late(free, live);
    xt_defer_late(free, add);
    rng_state = seed;
    for (int i = 0; i < N; i++) {
        uint64_t start = (rnd() % 4000) * 8;
        uint64_t len = rnd() % 4 == 0 ? 1 + rnd() % 8000 : 1 + rnd() % 200;

        set(&e[i], start, len, (uint64_t)i + 1, i);
    }
    for (int b = 0; b < N / BATCH; b++) {
        xfer__registry_t next;
        size_t n = 0;

        for (int i = b * BATCH; i < (b + 1) * BATCH; i++) {
            /* Every tenth of the second batch goes in alone first. */
            if (b == 1 && i % 10 == 0) {
                insert_ok(r, &e[i]);
                live[i] = 1;
                continue;
            }
            add[n++] = &e[i].range;
        }
        if (b == 2) /* descending addresses */
            for (size_t i = 0; i < n / 2; i++) {
                xfer__range_t *t = add[i];

                add[i] = add[n - 1 - i];
                add[n - 1 - i] = t;
            }
        XT_REQUIRE(xfer__reg_merge(r, add, n, &next) == XFER_OK,
                   "merge of batch %d failed", b);
        xfer__reg_fini(r);
        *r = next;
        for (int i = b * BATCH; i < (b + 1) * BATCH; i++)
            live[i] = 1;
        XT_CHECK(r->count == (size_t)(b + 1) * BATCH, "%zu ranges after "
                 "batch %d", r->count, b);
    }
    random_queries(r, e, live, N, 40000, 50000, seed);
    for (int i = 0; i < N; i++)
        if (xfer__reg_find_key(r, e[i].range.key) != &e[i].range) {
            XT_FAIL("key of entry %d not found after merges", i);
            break;
        }
    /* A batch repeating a key already there, or within itself. */
    set(&e[N], 0x100, 8, e[5].range.key, N);
    add[0] = &e[N].range;
    {
        xfer__registry_t next;

        XT_CHECK(xfer__reg_merge(r, add, 1, &next) == XFER_ERR_EXISTS,
                 "a key already in the table was merged");
        e[N].range.key = (uint64_t)N + 100;
        add[1] = &e[N].range;
        XT_CHECK(xfer__reg_merge(r, add, 2, &next) == XFER_ERR_EXISTS,
                 "a batch with a repeated key was merged");
    }
    XT_CHECK(r->count == N, "a refused merge changed the table");
    random_queries(r, e, live, N, 40000, 10000, seed);
}

static const xt_test_t tests[] = {
    XT_TEST(test_empty),
    XT_TEST(test_insert_find_remove),
    XT_TEST(test_remove_absent),
    XT_TEST(test_subrange),
    XT_TEST(test_boundaries),
    XT_TEST(test_overflow),
    XT_TEST(test_duplicate_key),
    XT_TEST(test_overlap_nested),
    XT_TEST(test_long_range_shadowed),
    XT_TEST(test_find_match),
    XT_TEST(test_overlap),
    XT_TEST(test_random_disjoint),
    XT_TEST(test_random_overlapping),
    XT_TEST(test_merge),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = { { "registry", tests } };

    return xt_run("test-registry", suites, 1);
}
