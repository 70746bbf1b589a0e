/* test-dlist.c - the intrusive list of plugins/common/dlist.h: order,
 * removal anywhere, removals that must do nothing, and a model check. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/common/dlist.h"
#include "tests/common/runner.h"
#include "tests/common/xt.h"

/* Two links, neither first in the struct, so that the containing-struct
 * macro must subtract a real offset (and a different one for each). */
typedef struct item {
    int id;
    char pad[13];
    xfer__dlink_t a;
    double more;
    xfer__dlink_t b;
} item_t;

#define NITEMS 8

static void items_init(item_t *it, size_t n)
{
    memset(it, 0, n * sizeof *it);
    for (size_t i = 0; i < n; i++)
        it[i].id = (int)i;
}

/* l, walked from head by next and from tail by prev, holds exactly the
 * ids of want (n of them), each link saying it is on l.  Reports the
 * first difference; returns whether there was none. */
static bool list_is(const xfer__dlist_t *l, const int *want, size_t n,
                    const char *what)
{
    const xfer__dlink_t *k = xfer__dlist_head(l), *last = NULL;
    size_t i = 0;

    if (xfer__dlist_empty(l) != (n == 0)) {
        XT_FAIL("%s: empty says %d with %zu items", what,
                (int)xfer__dlist_empty(l), n);
        return false;
    }
    for (; k != NULL; last = k, k = xfer__dlist_next(k), i++) {
        const item_t *it = XFER__DLIST_ENTRY((xfer__dlink_t *)k, item_t, a);

        if (i >= n || it->id != want[i]) {
            XT_FAIL("%s: position %zu holds %d, not %d", what, i, it->id,
                    i < n ? want[i] : -1);
            return false;
        }
        if (k->prev != last || !xfer__dlist_has(l, k)) {
            XT_FAIL("%s: position %zu (%d) has a wrong prev or owner", what,
                    i, it->id);
            return false;
        }
    }
    if (i != n || xfer__dlist_tail(l) != last) {
        XT_FAIL("%s: %zu items walked, %zu wanted, or a wrong tail", what,
                i, n);
        return false;
    }
    return true;
}

static bool unlinked(const xfer__dlink_t *k)
{
    return k->next == NULL && k->prev == NULL && k->on == NULL;
}

/* A list of items 0..n-1 on link a. */
static void fill(xfer__dlist_t *l, item_t *it, size_t n)
{
    xfer__dlist_init(l);
    for (size_t i = 0; i < n; i++)
        xfer__dlist_append(l, &it[i].a);
}

static void test_empty(void)
{
    xfer__dlist_t l;
    item_t it[1];

    memset(&l, 0, sizeof l);    /* as in a calloc'd owner */
    items_init(it, 1);
    XT_CHECK(list_is(&l, NULL, 0, "zeroed"), "zeroed list");
    XT_CHECK(xfer__dlist_head(&l) == NULL && xfer__dlist_tail(&l) == NULL,
             "head or tail of an empty list");
    XT_CHECK(XFER__DLIST_ENTRY(xfer__dlist_head(&l), item_t, a) == NULL,
             "the entry of an empty list's head is not NULL");
    XT_CHECK(!xfer__dlist_has(&l, &it[0].a), "a zeroed link on a list");
    memset(&l, 0x5a, sizeof l);
    xfer__dlist_init(&l);
    XT_CHECK(list_is(&l, NULL, 0, "init"), "init over junk");
}

static void test_append_order(void)
{
    static const int want[] = {0, 1, 2, 3, 4};
    xfer__dlist_t l;
    item_t it[NITEMS];

    items_init(it, NITEMS);
    xfer__dlist_init(&l);
    for (size_t i = 0; i < 5; i++) {
        xfer__dlist_append(&l, &it[i].a);
        if (!list_is(&l, want, i + 1, "appending"))
            return;
        XT_CHECK(xfer__dlist_tail(&l) == &it[i].a, "item %zu not the tail",
                 i);
    }
    XT_CHECK(xfer__dlist_head(&l) == &it[0].a, "first append not the head");
    XT_CHECK(xfer__dlist_next(&it[4].a) == NULL, "the tail has a next");
}

/* Remove item `at` of 0..3: the other three stay in order, and the
 * removed one, appended again, goes after the new tail. */
static void remove_at(int at, const char *what)
{
    int want[4], n = 0;
    xfer__dlist_t l;
    item_t it[NITEMS];

    for (int i = 0; i < 4; i++)
        if (i != at)
            want[n++] = i;
    items_init(it, NITEMS);
    fill(&l, it, 4);
    xfer__dlist_remove(&l, &it[at].a);
    XT_CHECK(list_is(&l, want, 3, what), "%s", what);
    XT_CHECK(unlinked(&it[at].a), "%s: the removed item still points "
             "somewhere", what);
    XT_CHECK(!xfer__dlist_has(&l, &it[at].a), "%s: still on it", what);
    want[3] = at;
    xfer__dlist_append(&l, &it[at].a);
    XT_CHECK(list_is(&l, want, 4, what), "%s, then appended", what);
}

static void test_remove_head(void)
{
    remove_at(0, "head removed");
}

static void test_remove_middle(void)
{
    remove_at(2, "middle removed");
}

static void test_remove_tail(void)
{
    remove_at(3, "tail removed");
}

static void test_remove_only(void)
{
    xfer__dlist_t l;
    item_t it[1];

    items_init(it, 1);
    fill(&l, it, 1);
    XT_CHECK(xfer__dlist_head(&l) == &it[0].a &&
             xfer__dlist_tail(&l) == &it[0].a, "one item: head and tail");
    xfer__dlist_remove(&l, &it[0].a);
    XT_CHECK(list_is(&l, NULL, 0, "only one removed"), "only one removed");
    XT_CHECK(unlinked(&it[0].a), "the removed item still points somewhere");
}

/* The calls that must do nothing change no byte of the list or of any
 * item (the plugins call them from every path that may end a request). */
static void test_remove_twice(void)
{
    static const int want[] = {0, 2, 3};
    xfer__dlist_t l, ls;
    item_t it[NITEMS], is[NITEMS];

    items_init(it, NITEMS);
    fill(&l, it, 4);
    xfer__dlist_remove(&l, &it[1].a);
    ls = l;
    memcpy(is, it, sizeof it);
    xfer__dlist_remove(&l, &it[1].a);
    XT_CHECK(memcmp(&l, &ls, sizeof l) == 0 &&
             memcmp(it, is, sizeof it) == 0, "a second remove changed "
             "something");
    XT_CHECK(list_is(&l, want, 3, "removed twice"), "removed twice");
}

static void test_remove_never_added(void)
{
    static const int want[] = {0, 1, 2};
    xfer__dlist_t l, other, ls, os;
    item_t it[NITEMS], is[NITEMS];

    items_init(it, NITEMS);
    fill(&l, it, 3);
    xfer__dlist_init(&other);
    xfer__dlist_append(&other, &it[5].a);
    ls = l;
    os = other;
    memcpy(is, it, sizeof it);
    /* A zeroed link, and one on another list: neither is l's. */
    xfer__dlist_remove(&l, &it[4].a);
    xfer__dlist_remove(&l, &it[5].a);
    /* The same items' other link, never added anywhere. */
    xfer__dlist_remove(&l, &it[0].b);
    XT_CHECK(memcmp(&l, &ls, sizeof l) == 0 &&
             memcmp(&other, &os, sizeof other) == 0 &&
             memcmp(it, is, sizeof it) == 0,
             "removing a link that is not on the list changed something");
    XT_CHECK(list_is(&l, want, 3, "after removes of strangers"), "l kept");
    XT_CHECK(list_is(&other, (const int[]){5}, 1, "the other list"),
             "the other list kept");
    /* Nor from an empty list. */
    xfer__dlist_init(&ls);
    xfer__dlist_remove(&ls, &it[6].a);
    XT_CHECK(list_is(&ls, NULL, 0, "empty"), "empty list kept");
}

static void test_append_twice(void)
{
    static const int want[] = {0, 1, 2};
    xfer__dlist_t l, other;
    item_t it[NITEMS];

    items_init(it, NITEMS);
    fill(&l, it, 3);
    /* Already on l: it keeps its place (not moved to the tail). */
    xfer__dlist_append(&l, &it[0].a);
    XT_CHECK(list_is(&l, want, 3, "appended twice"), "appended twice");
    /* On l: not taken onto another list through the same link. */
    xfer__dlist_init(&other);
    xfer__dlist_append(&other, &it[1].a);
    XT_CHECK(list_is(&other, NULL, 0, "other"), "a link on two lists");
    XT_CHECK(list_is(&l, want, 3, "l after other"), "l after other");
}

/* One item on two lists through two links: each list its own. */
static void test_two_links(void)
{
    xfer__dlist_t la, lb;
    item_t it[NITEMS];
    xfer__dlink_t *k;
    int got[NITEMS] = {0}, n = 0;

    items_init(it, NITEMS);
    fill(&la, it, 4);
    xfer__dlist_init(&lb);
    for (int i = 3; i >= 0; i--)
        xfer__dlist_append(&lb, &it[i].b);
    xfer__dlist_remove(&la, &it[2].a);
    XT_CHECK(xfer__dlist_has(&lb, &it[2].b), "removed from b with a");
    XT_CHECK(!xfer__dlist_has(&la, &it[2].b) &&
             !xfer__dlist_has(&lb, &it[2].a), "a link on the other list");
    for (k = xfer__dlist_head(&lb); k && n < NITEMS; k = xfer__dlist_next(k))
        got[n++] = XFER__DLIST_ENTRY(k, item_t, b)->id;
    XT_CHECK(n == 4 && got[0] == 3 && got[1] == 2 && got[2] == 1 &&
             got[3] == 0, "list b: %d items, %d %d %d %d", n, got[0],
             got[1], got[2], got[3]);
    XT_CHECK(list_is(&la, (const int[]){0, 1, 3}, 3, "list a"), "list a");
}

static void test_entry(void)
{
    item_t it[2];

    items_init(it, 2);
    XT_CHECK(XFER__DLIST_ENTRY(&it[1].a, item_t, a) == &it[1],
             "entry by a: %p, not %p",
             (void *)XFER__DLIST_ENTRY(&it[1].a, item_t, a), (void *)&it[1]);
    XT_CHECK(XFER__DLIST_ENTRY(&it[1].b, item_t, b) == &it[1],
             "entry by b: %p, not %p",
             (void *)XFER__DLIST_ENTRY(&it[1].b, item_t, b), (void *)&it[1]);
    XT_CHECK(XFER__DLIST_ENTRY((xfer__dlink_t *)NULL, item_t, b) == NULL,
             "the entry of NULL");
}

/* The plugins' loops: read next, then end the current one (which
 * removes it, maybe frees it).  Ending one may remove others too: a
 * next removed meanwhile has no next, so the loop stops on it. */
static void test_walk_removing(void)
{
    xfer__dlist_t l;
    item_t *it[NITEMS];
    xfer__dlink_t *k, *next;
    int seen = 0;

    xfer__dlist_init(&l);
    for (int i = 0; i < NITEMS; i++) {
        it[i] = calloc(1, sizeof *it[i]);
        XT_REQUIRE(it[i] != NULL, "out of memory");
        it[i]->id = i;
        xfer__dlist_append(&l, &it[i]->a);
    }
    /* Every even one ends and is freed. */
    for (k = xfer__dlist_head(&l); k; k = next) {
        item_t *q = XFER__DLIST_ENTRY(k, item_t, a);

        next = xfer__dlist_next(k);
        seen++;
        if (q->id % 2 == 0) {
            xfer__dlist_remove(&l, k);
            it[q->id] = NULL;
            free(q);
        }
    }
    XT_CHECK(seen == NITEMS, "walked %d of %d", seen, NITEMS);
    XT_CHECK(list_is(&l, (const int[]){1, 3, 5, 7}, 4, "odd kept"),
             "odd kept");
    /* Ending 1 also removes 3 (what another path may do): the walk
     * reaches 3, which has no next now, and stops there. */
    seen = 0;
    for (k = xfer__dlist_head(&l); k; k = next) {
        item_t *q = XFER__DLIST_ENTRY(k, item_t, a);

        next = xfer__dlist_next(k);
        seen++;
        if (q->id == 1) {
            xfer__dlist_remove(&l, k);
            xfer__dlist_remove(&l, &it[3]->a);
        }
    }
    XT_CHECK(seen == 2, "walked %d, not 2 (1, then the removed 3)", seen);
    XT_CHECK(list_is(&l, (const int[]){5, 7}, 2, "after 1 and 3"),
             "after 1 and 3");
    for (int i = 0; i < NITEMS; i++)
        free(it[i]);
}

/* Random appends and removes (of items on the list, off it, never
 * added) against an array of ids in order, checked after every step. */
static void test_model(void)
{
    enum { N = 24, STEPS = 200000 };
    const char *env = getenv("XT_DLIST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : xt_seed(), st = seed;
    item_t it[N];
    int model[N];
    size_t mn = 0, appends = 0, removes = 0, noops = 0;
    xfer__dlist_t l;

    printf("seed %" PRIu64 " (XT_DLIST_SEED=%" PRIu64 " repeats it)\n",
           seed, seed);
    items_init(it, N);
    xfer__dlist_init(&l);
    for (int step = 0; step < STEPS; step++) {
        int id = (int)(xt_rand(&st) % N);
        bool in = false, add = xt_rand(&st) % 2 == 0;
        size_t at = 0;

        for (; at < mn; at++)
            if (model[at] == id) {
                in = true;
                break;
            }
        if (xfer__dlist_has(&l, &it[id].a) != in) {
            XT_FAIL("seed %" PRIu64 " step %d: item %d on the list says %d",
                    seed, step, id, (int)!in);
            return;
        }
        if (add) {
            xfer__dlist_append(&l, &it[id].a);
            if (!in)
                model[mn++] = id;
            appends += !in;
        } else {
            xfer__dlist_remove(&l, &it[id].a);
            if (in) {
                memmove(&model[at], &model[at + 1],
                        (mn - at - 1) * sizeof model[0]);
                mn--;
                if (!unlinked(&it[id].a)) {
                    XT_FAIL("seed %" PRIu64 " step %d: removed item %d "
                            "still linked", seed, step, id);
                    return;
                }
            }
            removes += in;
        }
        noops += in == add;
        if (!list_is(&l, model, mn, "model")) {
            XT_FAIL("seed %" PRIu64 " step %d: %s item %d", seed, step,
                    add ? "append" : "remove", id);
            return;
        }
    }
    printf("%zu appends, %zu removes, %zu that did nothing\n", appends,
           removes, noops);
    XT_CHECK(appends > STEPS / 8 && removes > STEPS / 8 &&
             noops > STEPS / 8, "the walk did not mix: %zu %zu %zu",
             appends, removes, noops);
}

static const xt_test_t dlist_tests[] = {
    XT_TEST(test_empty),
    XT_TEST(test_append_order),
    XT_TEST(test_remove_head),
    XT_TEST(test_remove_middle),
    XT_TEST(test_remove_tail),
    XT_TEST(test_remove_only),
    XT_TEST(test_remove_twice),
    XT_TEST(test_remove_never_added),
    XT_TEST(test_append_twice),
    XT_TEST(test_two_links),
    XT_TEST(test_entry),
    XT_TEST(test_walk_removing),
    XT_TEST(test_model),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"dlist", dlist_tests},
    };

    (void)argc;
    (void)argv;
    return xt_run("test-dlist", suites, 1);
}
