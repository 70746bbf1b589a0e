/* test-conformance.c - the backend conformance suite, written once and
 * run for every backend: the xc_spec comes from argv[1] or XFER_TEST_BACKEND.
 * Data moves byte for byte at every size and descriptor count, requests
 * repost, notifications keep order and follow their data, bad accesses
 * are refused while the target keeps serving, and peer death is an
 * answer, never a hang.  The refusal tests follow the backend's caps:
 * a SW_CHECK target refuses each bad operation itself and keeps the
 * connection; a HW_KEYS backend fails the request (ACCESS or
 * REMOTE_DISCONNECT) and must rebuild its connection for the next post. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/backend/conformance.h"

const char *xc_spec;              /* e.g. "tcp" or "tcp:nodelay=0" */
const char *xc_unenforced;        /* conformance.h */
static char plugin[64];           /* the spec's plugin name */
static unsigned caps;             /* XFER_CAP_* of the plugin */
static bool hw;                   /* XFER_CAP_HW_KEYS, else SW_CHECK */
static bool hw_knows_why;         /* ptest's emulation of HW_KEYS, which
                                     can say which right was missing */


/* ---- an initiator and a target in this process ----------------------------- */

typedef struct pair {
    xfer_agent_t *ini, *tgt;
    const char *tname;
    unsigned char *lbuf, *rbuf;   /* local (initiator) and remote (target) */
    size_t size;
    xfer_mem_t *lmem, *rmem;
} pair_t;

static void pair_setup_opts(pair_t *p, size_t size, int ini_thread,
                            int tgt_thread)
{
    static char tname[64];

    memset(p, 0, sizeof(*p));
    snprintf(tname, sizeof(tname), "%s", xt_name("tgt"));
    p->tname = tname;
    p->size = size;
    p->tgt = xt_agent(tname, xc_spec, tgt_thread);
    p->ini = xt_agent(xt_name("ini"), xc_spec, ini_thread);
    p->lbuf = xt_alloc(size);
    p->rbuf = xt_alloc(size);
    p->lmem = xt_register(p->ini, p->lbuf, size);
    p->rmem = xt_register(p->tgt, p->rbuf, size);
    xt_md_exchange(p->tgt, XFER_MD_ALL, p->ini);
}

static void pair_setup(pair_t *p, size_t size)
{
    pair_setup_opts(p, size, 1, 1);
}

/* A request of n pairs (local offset, remote offset, length). */
static xfer_status_t pair_req(pair_t *p, xfer_op_t op, const size_t *loff,
                              const size_t *roff, const size_t *len, size_t n,
                              const xfer_req_opts_t *opts, xfer_req_t **req)
{
    xfer_desc_t *l = calloc(n, sizeof(*l)), *r = calloc(n, sizeof(*r));
    xfer_dlist_t ll = xt_dlist(l, n), rl = xt_dlist(r, n);
    xfer_status_t s;

    XT_REQUIRE(l && r, "out of memory");
    for (size_t i = 0; i < n; i++) {
        l[i] = (xfer_desc_t){ (uintptr_t)(p->lbuf + loff[i]), len[i], 0 };
        r[i] = (xfer_desc_t){ (uintptr_t)(p->rbuf + roff[i]), len[i], 0 };
    }
    *req = NULL;
    s = xfer_req_create(p->ini, op, &ll, &rl, p->tname, opts, req);
    free(l);
    free(r);
    if (s == XFER_OK)
        xt_req_defer(*req);
    return s;
}

static xfer_req_t *pair_req1(pair_t *p, xfer_op_t op, size_t loff,
                             size_t roff, size_t len)
{
    xfer_req_t *req;

    XT_STATUS_FATAL(pair_req(p, op, &loff, &roff, &len, 1, NULL, &req),
                    XFER_OK);
    return req;
}


/* ---- sizes ------------------------------------------------------------------ */

/* Move `size` bytes at odd offsets, then check the bytes around them
 * were not touched. */
static void move_size(xfer_op_t op, size_t size)
{
    const size_t loff = 3, roff = 5, total = size + 64;
    uint64_t data = xt_seed(), canary = xt_seed();
    pair_t p;
    xfer_req_t *req;
    unsigned char *src, *dst;
    size_t soff, doff;

    pair_setup(&p, total);
    if (op == XFER_OP_WRITE) {
        src = p.lbuf, dst = p.rbuf, soff = loff, doff = roff;
    } else {
        src = p.rbuf, dst = p.lbuf, soff = roff, doff = loff;
    }
    xt_fill(dst, total, canary);
    xt_fill_at(src + soff, size, data, 0);
    req = pair_req1(&p, op, loff, roff, size);
    XT_STATUS_FATAL(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(dst + doff, size, data, 0, "moved data");
    CHECK_PATTERN(dst, doff, canary, 0, "bytes before");
    CHECK_PATTERN(dst + doff + size, total - doff - size, canary,
                  doff + size, "bytes after");
    /* Again with new data: the request is reusable. */
    data = xt_seed();
    xt_fill_at(src + soff, size, data, 0);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(dst + doff, size, data, 0, "reposted data");
}

static void test_write_1B(void) { move_size(XFER_OP_WRITE, 1); }
static void test_write_7B(void) { move_size(XFER_OP_WRITE, 7); }
static void test_write_4K(void) { move_size(XFER_OP_WRITE, 4096); }
static void test_write_1M13(void) { move_size(XFER_OP_WRITE, (1u << 20) + 13); }
static void test_write_64M(void) { move_size(XFER_OP_WRITE, 64u << 20); }
static void test_read_1B(void) { move_size(XFER_OP_READ, 1); }
static void test_read_7B(void) { move_size(XFER_OP_READ, 7); }
static void test_read_4K(void) { move_size(XFER_OP_READ, 4096); }
static void test_read_1M13(void) { move_size(XFER_OP_READ, (1u << 20) + 13); }
static void test_read_64M(void) { move_size(XFER_OP_READ, 64u << 20); }

/* ---- descriptor counts -------------------------------------------------------- */

/* n descriptors of varied lengths; local slots in order, remote slots in
 * a shuffled order, both with gaps, so no two descriptors are adjacent
 * and no offset matches its partner's.  With runs, both sides keep the
 * order and most neighbours touch, with a gap now and then on one side,
 * the other or both: a backend that merges adjacent descriptors must
 * stop at every gap. */
static void multi_desc_layout(size_t n, bool runs)
{
    size_t *loff = calloc(n, sizeof(size_t)), *roff = calloc(n, sizeof(size_t));
    size_t *len = calloc(n, sizeof(size_t)), *perm = calloc(n, sizeof(size_t));
    size_t *rstart = calloc(n, sizeof(size_t));
    uint64_t st = xt_seed(), data = xt_seed(), canary = xt_seed();
    size_t lpos = 17, rpos = 29, total;
    pair_t p;
    xfer_req_t *w, *r;

    XT_REQUIRE(loff && roff && len && perm && rstart, "out of memory");
    xt_defer_late(free, loff);
    xt_defer_late(free, roff);
    xt_defer_late(free, len);
    xt_defer_late(free, perm);
    xt_defer_late(free, rstart);
    for (size_t i = 0; i < n; i++) {
        len[i] = 1 + (size_t)(xt_rand(&st) % (n > 64 ? 700 : 5000));
        perm[i] = i;
    }
    for (size_t i = n; !runs && i-- > 1;) {
        size_t j = (size_t)(xt_rand(&st) % (i + 1)), t = perm[i];

        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < n; i++) {
        loff[i] = lpos;
        lpos += len[i];
        if (!runs || xt_rand(&st) % 8 == 0)
            lpos += 1 + (size_t)(xt_rand(&st) % 16);
    }
    /* Remote slots laid out in perm order. */
    for (size_t k = 0; k < n; k++) {
        size_t i = perm[k];

        roff[i] = rpos;
        rpos += len[i];
        if (!runs || xt_rand(&st) % 8 == 0)
            rpos += 1 + (size_t)(xt_rand(&st) % 16);
    }
    total = (lpos > rpos ? lpos : rpos) + 64;
    pair_setup(&p, total);

    /* WRITE: each local slot lands in its remote slot, gaps untouched. */
    xt_fill(p.lbuf, total, data);
    xt_fill(p.rbuf, total, canary);
    XT_STATUS_FATAL(pair_req(&p, XFER_OP_WRITE, loff, roff, len, n, NULL, &w),
                    XFER_OK);
    XT_STATUS_FATAL(xt_post_wait(w, NULL, 0, WAIT_MS), XFER_OK);
    {
        unsigned bad = 0;
        size_t prev_end = 0;

        for (size_t k = 0; k < n; k++) {
            size_t i = perm[k];

            if (xt_check_at(p.rbuf + roff[i], len[i], data, loff[i]) >= 0 &&
                bad++ < 3)
                XT_FAIL("%zu descriptors: descriptor %zu (len %zu) wrong",
                        n, i, len[i]);
            if (xt_check_at(p.rbuf + prev_end, roff[i] - prev_end, canary,
                            prev_end) >= 0 && bad++ < 3)
                XT_FAIL("%zu descriptors: gap before descriptor %zu written",
                        n, i);
            prev_end = roff[i] + len[i];
        }
        if (xt_check_at(p.rbuf + prev_end, total - prev_end, canary,
                        prev_end) >= 0 && bad++ < 3)
            XT_FAIL("%zu descriptors: bytes after the last one written", n);
        XT_CHECK(bad == 0, "%u errors in a %zu-descriptor WRITE", bad, n);
    }

    /* READ it back into local memory refilled with a canary. */
    xt_fill(p.lbuf, total, canary);
    XT_STATUS_FATAL(pair_req(&p, XFER_OP_READ, loff, roff, len, n, NULL, &r),
                    XFER_OK);
    XT_STATUS_FATAL(xt_post_wait(r, NULL, 0, WAIT_MS), XFER_OK);
    {
        unsigned bad = 0;

        for (size_t i = 0; i < n; i++)
            if (xt_check_at(p.lbuf + loff[i], len[i], data, loff[i]) >= 0 &&
                bad++ < 3)
                XT_FAIL("%zu descriptors: READ of descriptor %zu wrong", n, i);
        XT_CHECK(bad == 0, "%u errors in a %zu-descriptor READ", bad, n);
    }
}

static void multi_desc(size_t n) { multi_desc_layout(n, false); }

static void test_desc_1(void) { multi_desc(1); }
static void test_desc_2(void) { multi_desc(2); }
static void test_desc_64(void) { multi_desc(64); }
static void test_desc_1024(void) { multi_desc(1024); }
static void test_desc_runs_1024(void) { multi_desc_layout(1024, true); }

/* ---- reposting and prepared lists ----------------------------------------------- */

static bool has_notif(void)
{
    return (caps & XFER_CAP_NOTIF) != 0;
}

static void test_repost(void)
{
    enum { N = 50, SZ = 65536 };
    pair_t p;
    xfer_req_t *req;
    xt_notifs_t *got = xt_notifs_new();
    char msg[32];

    pair_setup(&p, SZ);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, SZ);
    for (int i = 0; i < N; i++) {
        uint64_t seed = xt_seed();

        xt_fill(p.lbuf, SZ, seed);
        snprintf(msg, sizeof(msg), "post-%d", i);
        XT_STATUS_FATAL(xt_post_wait(req, has_notif() ? msg : NULL,
                                     has_notif() ? strlen(msg) : 0, WAIT_MS),
                        XFER_OK);
        if (xt_check(p.rbuf, SZ, seed) >= 0) {
            XT_FAIL("post %d: data not there", i);
            break;
        }
    }
    if (!has_notif())
        return;
    xt_drain_until(p.tgt, got, N, WAIT_MS, false);
    XT_REQUIRE(got->count == N, "%zu of %d notifications", got->count, N);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "post-%d", i);
        XT_CHECK(strcmp(got->items[i].msg, msg) == 0, "notification %d is "
                 "\"%s\"", i, (char *)got->items[i].msg);
    }
}

/* The request's default notification, and a per-post replacement. */
static void test_default_notif(void)
{
    pair_t p;
    xfer_req_t *req;
    xfer_req_opts_t o;
    xt_notifs_t *got = xt_notifs_new();
    size_t off = 0, len = 128;

    if (!has_notif())
        return;
    pair_setup(&p, 4096);
    xfer_req_opts_init(&o);
    o.notif = "default";
    o.notif_len = 7;
    XT_STATUS_FATAL(pair_req(&p, XFER_OP_WRITE, &off, &off, &len, 1, &o, &req),
                    XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS(xt_post_wait(req, "override", 8, WAIT_MS), XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    xt_drain_until(p.tgt, got, 3, WAIT_MS, false);
    XT_REQUIRE(got->count == 3, "%zu of 3 notifications", got->count);
    CU_ASSERT_STRING_EQUAL(got->items[0].msg, "default");
    CU_ASSERT_STRING_EQUAL(got->items[1].msg, "override");
    CU_ASSERT_STRING_EQUAL(got->items[2].msg, "default");
}

static void test_prepped(void)
{
    enum { SLOTS = 16, SLOT = 4096 };
    static const size_t lidx[] = {3, 0, 15, 7, 8};
    static const size_t ridx[] = {9, 2, 4, 11, 0};
    const size_t n = sizeof(lidx) / sizeof(lidx[0]);
    xfer_desc_t l[SLOTS], r[SLOTS];
    xfer_dlist_t ll = xt_dlist(l, SLOTS), rl = xt_dlist(r, SLOTS);
    xfer_prep_t *lp = NULL, *rp = NULL;
    xfer_req_t *req = NULL;
    pair_t p;

    pair_setup(&p, SLOTS * SLOT * 2);
    for (size_t i = 0; i < SLOTS; i++) {
        /* Slots of different sizes at every other SLOT. */
        l[i] = (xfer_desc_t){ (uintptr_t)p.lbuf + 2 * SLOT * i, SLOT - i, 0 };
        r[i] = (xfer_desc_t){ (uintptr_t)p.rbuf + 2 * SLOT * i + 1, SLOT - i,
                              0 };
    }
    /* Pairs must match in length: give every used pair the same size. */
    for (size_t k = 0; k < n; k++)
        l[lidx[k]].len = r[ridx[k]].len = 1000 + 7 * k;
    XT_STATUS_FATAL(xfer_prep_create(p.ini, &ll, NULL, &lp), XFER_OK);
    XT_STATUS_FATAL(xfer_prep_create(p.ini, &rl, p.tname, &rp), XFER_OK);
    XT_STATUS_FATAL(xfer_req_create_prepped(p.ini, XFER_OP_WRITE, lp, lidx, rp,
                                            ridx, n, NULL, &req),
                    XFER_OK);
    for (int round = 0; round < 3; round++) {
        uint64_t seed = xt_seed();

        xt_fill(p.lbuf, p.size, seed);
        XT_STATUS_FATAL(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
        for (size_t k = 0; k < n; k++) {
            size_t lo = 2 * SLOT * lidx[k];

            CHECK_PATTERN(p.rbuf + 2 * SLOT * ridx[k] + 1, l[lidx[k]].len,
                          seed, lo, "prepped WRITE");
        }
    }
    /* In use: neither the lists nor the memory may go. */
    XT_STATUS(xfer_prep_release(lp), XFER_ERR_BUSY);
    XT_STATUS(xfer_mem_deregister(p.ini, p.lmem), XFER_ERR_BUSY);
    /* Bad indices are named. */
    {
        size_t bad_l[] = {0, SLOTS};
        size_t bad_r[] = {0, 1};
        xfer_req_t *x = NULL;

        l[0].len = r[0].len;
        XT_STATUS(xfer_req_create_prepped(p.ini, XFER_OP_WRITE, lp, bad_l, rp,
                                          bad_r, 2, NULL, &x),
                  XFER_ERR_INVALID);
        XT_ERR_HAS("1");
    }
    XT_STATUS(xfer_req_release(req), XFER_OK);
    XT_STATUS(xfer_prep_release(lp), XFER_OK);
    XT_STATUS(xfer_prep_release(rp), XFER_OK);
    XT_STATUS(xfer_mem_deregister(p.ini, p.lmem), XFER_OK);
}

/* ---- notifications -------------------------------------------------------------- */

typedef struct slot_check {
    pair_t *p;
    size_t slot;
    uint64_t seeds[64];
    unsigned late;   /* notifications seen before their data */
    unsigned next;   /* the index expected next */
    unsigned order;  /* out-of-order arrivals */
} slot_check_t;

static void on_slot_notif(xt_notifs_t *n, const xt_notif_t *m)
{
    slot_check_t *c = n->arg;
    unsigned i;

    if (sscanf(m->msg, "slot-%u", &i) != 1 || i >= 64)
        return;
    if (i != c->next)
        c->order++;
    c->next = i + 1;
    /* The data of this WRITE must already be visible. */
    if (xt_check_at(c->p->rbuf + i * c->slot, c->slot, c->seeds[i],
                    i * c->slot) >= 0)
        c->late++;
}

static void test_notif_write_after_data(void)
{
    enum { K = 32, SLOT = 256 * 1024 };
    pair_t p;
    xfer_req_t *req[K];
    slot_check_t c;
    xt_notifs_t *got = xt_notifs_new();
    char msg[32];

    pair_setup(&p, (size_t)K * SLOT);
    memset(&c, 0, sizeof(c));
    c.p = &p;
    c.slot = SLOT;
    got->on_msg = on_slot_notif;
    got->arg = &c;
    for (int i = 0; i < K; i++) {
        c.seeds[i] = xt_seed();
        xt_fill_at(p.lbuf + (size_t)i * SLOT, SLOT, c.seeds[i],
                   (uint64_t)i * SLOT);
        req[i] = pair_req1(&p, XFER_OP_WRITE, (size_t)i * SLOT,
                           (size_t)i * SLOT, SLOT);
    }
    /* Post everything and watch only the target. */
    for (int i = 0; i < K; i++) {
        xfer_status_t s;

        snprintf(msg, sizeof(msg), "slot-%d", i);
        s = xfer_req_post(req[i], msg, strlen(msg));
        XT_CHECK(s == XFER_OK || s == XFER_IN_PROG, "post %d: %s (%s)", i,
                 xt_status_name(s), xfer_last_error());
    }
    xt_drain_until(p.tgt, got, K, WAIT_MS, false);
    XT_CHECK(got->count == K, "%zu of %d notifications arrived", got->count, K);
    XT_CHECK(c.late == 0, "%u notifications arrived before their data",
             c.late);
    XT_CHECK(c.order == 0, "%u notifications out of order", c.order);
    for (int i = 0; i < K; i++)
        XT_STATUS(xt_wait_req(req[i], WAIT_MS), XFER_OK);
    for (size_t i = 0; i < got->count; i++)
        XT_CHECK(strcmp(got->items[i].from, xfer_agent_name(p.ini)) == 0,
                 "notification from \"%s\", want \"%s\"", got->items[i].from,
                 xfer_agent_name(p.ini));
    /* Exactly once: nothing more comes. */
    xt_sleep_ms(100);
    xt_drain_until(p.tgt, got, K + 1, 0, false);
    XT_CHECK(got->count == K, "%zu notifications for %d writes", got->count,
             K);
}

static void test_notif_read(void)
{
    enum { N = 10, SZ = 100000 };
    pair_t p;
    xfer_req_t *req;
    xt_notifs_t *got = xt_notifs_new();
    char msg[32];

    pair_setup(&p, SZ);
    req = pair_req1(&p, XFER_OP_READ, 0, 0, SZ);
    for (int i = 0; i < N; i++) {
        uint64_t seed = xt_seed();

        xt_fill(p.rbuf, SZ, seed);
        snprintf(msg, sizeof(msg), "read-%d", i);
        XT_STATUS_FATAL(xt_post_wait(req, msg, strlen(msg), WAIT_MS), XFER_OK);
        CHECK_PATTERN(p.lbuf, SZ, seed, 0, "READ with notification");
        /* Delivered once the data was read: wait for it before the
         * target memory changes. */
        xt_drain_until(p.tgt, got, (size_t)i + 1, WAIT_MS, false);
        XT_REQUIRE(got->count == (size_t)i + 1, "READ %d: notification "
                   "missing (%zu)", i, got->count);
        XT_CHECK(strcmp(got->items[i].msg, msg) == 0, "READ %d: \"%s\"", i,
                 (char *)got->items[i].msg);
    }
    xt_sleep_ms(50);
    xt_drain_until(p.tgt, got, N + 1, 0, false);
    CU_ASSERT_EQUAL(got->count, N);
}

static void test_notif_standalone_order(void)
{
    enum { N = 1000 };
    pair_t p;
    xt_notifs_t *got = xt_notifs_new();
    unsigned bad = 0;
    char msg[32];

    pair_setup(&p, 4096);
    for (int i = 0; i < N; i++) {
        xfer_status_t s;

        snprintf(msg, sizeof(msg), "n-%d", i);
        s = xfer_notif_send(p.ini, p.tname, msg, strlen(msg), NULL);
        if (s != XFER_OK) {
            XT_FAIL("xfer_notif_send %d: %s (%s)", i, xt_status_name(s),
                    xfer_last_error());
            break;
        }
    }
    xt_drain_until(p.tgt, got, N, WAIT_MS, false);
    XT_REQUIRE(got->count == N, "%zu of %d notifications", got->count, N);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "n-%d", i);
        if ((got->items[i].len != strlen(msg) ||
             memcmp(got->items[i].msg, msg, strlen(msg)) != 0 ||
             strcmp(got->items[i].from, xfer_agent_name(p.ini)) != 0) &&
            bad++ < 3)
            XT_FAIL("notification %d: \"%s\" from \"%s\"", i,
                    (char *)got->items[i].msg, got->items[i].from);
    }
    XT_CHECK(bad == 0, "%u notifications wrong or out of order", bad);
    xt_sleep_ms(50);
    xt_drain_until(p.tgt, got, N + 1, 0, false);
    CU_ASSERT_EQUAL(got->count, N);
}

/* The notification fd is readable exactly while notifications are
 * queued: it wakes a poll loop, and a drain quiets it. */
static void test_notif_fd(void)
{
    pair_t p;
    xt_notifs_t *got = xt_notifs_new();
    struct pollfd pfd = { -1, POLLIN, 0 };

    pair_setup(&p, 4096);
    XT_STATUS_FATAL(xfer_notif_fd(p.tgt, &pfd.fd), XFER_OK);
    XT_CHECK(poll(&pfd, 1, 0) == 0, "notification fd readable with an "
             "empty queue");
    XT_STATUS_FATAL(xfer_notif_send(p.ini, p.tname, "ping", 4, NULL),
                    XFER_OK);
    XT_CHECK(poll(&pfd, 1, WAIT_MS) == 1 && (pfd.revents & POLLIN),
             "notification fd did not become readable");
    xt_drain_until(p.tgt, got, 1, WAIT_MS, false);
    XT_REQUIRE(got->count == 1, "%zu notifications", got->count);
    XT_CHECK(got->items[0].len == 4 && memcmp(got->items[0].msg, "ping", 4)
             == 0, "wrong notification");
    XT_CHECK(poll(&pfd, 1, 0) == 0, "notification fd still readable after "
             "the queue was drained");
}

/* WRITE notifications and standalone ones share one order. */
static void test_notif_mixed_order(void)
{
    enum { N = 100 };
    pair_t p;
    xfer_req_t *req;
    xt_notifs_t *got = xt_notifs_new();
    char msg[32];

    pair_setup(&p, 8192);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, 8192);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "m-%d", i);
        if (i % 3 == 0)
            XT_STATUS(xt_post_wait(req, msg, strlen(msg), WAIT_MS), XFER_OK);
        else
            XT_STATUS(xfer_notif_send(p.ini, p.tname, msg, strlen(msg), NULL),
                      XFER_OK);
    }
    xt_drain_until(p.tgt, got, N, WAIT_MS, false);
    XT_REQUIRE(got->count == N, "%zu of %d notifications", got->count, N);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "m-%d", i);
        XT_CHECK(strcmp(got->items[i].msg, msg) == 0, "position %d holds "
                 "\"%s\"", i, (char *)got->items[i].msg);
    }
}

static void test_notif_sizes(void)
{
    pair_t p;
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *big = xt_alloc(XFER_NOTIF_MAX + 1);
    uint64_t seed = xt_seed();

    pair_setup(&p, 4096);
    xt_fill(big, XFER_NOTIF_MAX + 1, seed);
    XT_STATUS(xfer_notif_send(p.ini, p.tname, big, XFER_NOTIF_MAX + 1, NULL),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_notif_send(p.ini, p.tname, big, XFER_NOTIF_MAX, NULL),
              XFER_OK);
    XT_STATUS(xfer_notif_send(p.ini, p.tname, big, 1, NULL), XFER_OK);
    xt_drain_until(p.tgt, got, 2, WAIT_MS, false);
    XT_REQUIRE(got->count == 2, "%zu of 2 notifications", got->count);
    CU_ASSERT_EQUAL(got->items[0].len, XFER_NOTIF_MAX);
    CHECK_PATTERN(got->items[0].msg, got->items[0].len, seed, 0,
                  "largest notification");
    CU_ASSERT_EQUAL(got->items[1].len, 1);
    CHECK_PATTERN(got->items[1].msg, 1, seed, 0, "1-byte notification");
}

/* ---- refusals ------------------------------------------------------------------- */

/* A second, fresh initiator that must still reach the target. */
static void third_party_works(pair_t *p)
{
    xfer_agent_t *other = xt_agent(xt_name("third"), xc_spec, 1);
    unsigned char *buf = xt_alloc(4096);
    xfer_desc_t l = { (uintptr_t)buf, 4096, 0 };
    xfer_desc_t r = { (uintptr_t)p->rbuf, 4096, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    uint64_t seed = xt_seed();

    xt_register(other, buf, 4096);
    xt_md_exchange(p->tgt, XFER_MD_ALL, other);
    xt_fill(buf, 4096, seed);
    XT_STATUS_FATAL(xfer_req_create(other, XFER_OP_WRITE, &ll, &rl, p->tname,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p->rbuf, 4096, seed, 0, "third agent's WRITE");
}

/* The pair's own connection still carries good transfers. */
static void same_link_works(pair_t *p, size_t roff)
{
    xfer_req_t *req = pair_req1(p, XFER_OP_WRITE, 0, roff, 512);
    uint64_t seed = xt_seed();

    xt_fill(p->lbuf, 512, seed);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p->rbuf + roff, 512, seed, 0, "WRITE after a refusal");
}

/* Load into the pair's initiator a forged copy of the target's blob. */
static void load_forged(pair_t *p, void (*edit)(json_t *region))
{
    size_t len;
    char *blob = xt_md_get(p->tgt, XFER_MD_ALL, NULL, 0, &len);
    json_t *root = xt_blob_parse(blob, len);
    char *forged;

    edit(xt_blob_region(root, 0));
    forged = xt_blob_dump(root, &len);
    /* With a shared secret (conformance-*-auth.sh) the initiator loads
     * only signed blobs: sign the forgery, as a key holder could. */
    forged = xt_blob_sign(forged, len, NULL, &len);
    XT_STATUS_FATAL(xfer_md_load(p->ini, forged, len, NULL, 0), XFER_OK);
}

/* Whether a post ended as a refused access should: XFER_ERR_ACCESS
 * naming the descriptor and the target on a SW_CHECK backend; on a
 * HW_KEYS one XFER_ERR_ACCESS or XFER_ERR_REMOTE_DISCONNECT (the link
 * broke) naming the target. */
static bool check_refused(xfer_status_t s, const char *tname, size_t desc)
{
    char d[32];

    snprintf(d, sizeof(d), "descriptor %zu", desc);
    if (!hw) {
        if (!XT_STATUS(s, XFER_ERR_ACCESS))
            return false;
        return XT_ERR_HAS(d, tname);
    }
    XT_CHECK(s == XFER_ERR_ACCESS || s == XFER_ERR_REMOTE_DISCONNECT,
             "bad access through a hardware key ended with %s (%s), want "
             "XFER_ERR_ACCESS or XFER_ERR_REMOTE_DISCONNECT",
             xt_status_name(s), xfer_last_error());
    return XT_ERR_HAS(tname);
}

/* Post a 2-descriptor request, descriptor 0 to good memory, descriptor 1
 * to bad; it must be refused naming descriptor 1. */
static void refused_access(pair_t *p, xfer_op_t op, void *good, void *bad)
{
    xfer_desc_t l[2] = { { (uintptr_t)p->lbuf, 256, 0 },
                         { (uintptr_t)p->lbuf + 1024, 32, 0 } };
    xfer_desc_t r[2] = { { (uintptr_t)good, 256, 0 },
                         { (uintptr_t)bad, 32, 0 } };
    xfer_dlist_t ll = xt_dlist(l, 2), rl = xt_dlist(r, 2);
    xfer_req_t *req = NULL;
    xfer_status_t s;

    XT_STATUS_FATAL(xfer_req_create(p->ini, op, &ll, &rl, p->tname, NULL,
                                    &req), XFER_OK);
    xt_req_defer(req);
    s = xfer_req_post(req, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(req, WAIT_MS);
    check_refused(s, p->tname, 1);
    /* Asking again gives the same answer. */
    XT_STATUS(xfer_req_status(req), s);
}

static void grow_region(json_t *r)
{
    json_int_t len = json_integer_value(json_object_get(r, "len"));

    json_object_set_new(r, "len", json_integer(len * 2));
}

static void test_refuse_out_of_region(void)
{
    pair_t p;
    uint64_t canary = xt_seed();

    pair_setup(&p, 65536);
    /* The target exposes 32K of its 64K; the forged blob claims 64K. */
    XT_STATUS_FATAL(xfer_mem_deregister(p.tgt, p.rmem), XFER_OK);
    p.rmem = xt_register(p.tgt, p.rbuf, 32768);
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    load_forged(&p, grow_region);
    xt_fill(p.rbuf, 65536, canary);
    /* Straddling the end, then wholly outside. */
    refused_access(&p, XFER_OP_WRITE, p.rbuf, p.rbuf + 32768 - 16);
    refused_access(&p, XFER_OP_WRITE, p.rbuf, p.rbuf + 40000);
    refused_access(&p, XFER_OP_READ, p.rbuf, p.rbuf + 40000);
    CHECK_PATTERN(p.rbuf + 32768 - 16, 65536 - 32768 + 16, canary,
                  32768 - 16, "memory beyond the registration");
    same_link_works(&p, 1000);
    third_party_works(&p);
}

static void flip_key(json_t *r)
{
    json_t *k = json_object_get(r, "key");
    uint64_t v = 0;

    XT_REQUIRE(xt_json_u64(k, &v), "key unreadable");
    json_object_set_new(r, "key", xt_json_u64_like(k, v ^ 0x10));
}

/* SW_CHECK: the core's key is what the target checks. */
static void test_refuse_wrong_key(void)
{
    pair_t p;
    size_t loff = 0, roff = 0, len = 256;
    xfer_req_t *req;
    xfer_status_t s;

    pair_setup(&p, 65536);
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    load_forged(&p, flip_key);
    XT_STATUS_FATAL(pair_req(&p, XFER_OP_WRITE, &loff, &roff, &len, 1, NULL,
                             &req), XFER_OK);
    s = xfer_req_post(req, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(req, WAIT_MS);
    if (XT_STATUS(s, XFER_ERR_ACCESS))
        XT_ERR_HAS("descriptor 0", p.tname);
    /* The real key still works on the same link after reloading. */
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    xt_md_exchange(p.tgt, XFER_MD_ALL, p.ini);
    same_link_works(&p, 0);
    third_party_works(&p);
}

static void flip_pub(json_t *r)
{
    xt_blob_flip_pub(r, plugin);
}

/* HW_KEYS: the packed remote key (the metadata's per-backend public
 * part) is what the NIC checks.  Region 0's is corrupted, region 1's is
 * not; the remote agent is loaded once, so the good post after the
 * refusal travels on the connection the plugin had to rebuild. */
static void test_refuse_bad_packed_key(void)
{
    pair_t p;
    unsigned char *second = xt_alloc(65536);
    uint64_t canary = xt_seed(), lcanary = xt_seed(), seed = xt_seed();
    size_t len;
    char *blob, *forged;
    json_t *root;
    xfer_status_t s;

    pair_setup(&p, 65536);
    xt_register(p.tgt, second, 65536);
    blob = xt_md_get(p.tgt, XFER_MD_ALL, NULL, 0, &len);
    root = xt_blob_parse(blob, len);
    /* Region 0 of the blob is the newest registration: find p.rbuf's. */
    for (size_t i = 0; i < 2; i++) {
        json_t *r = xt_blob_region(root, i);
        uint64_t addr = 0;

        XT_REQUIRE(xt_json_u64(json_object_get(r, "addr"), &addr),
                   "region %zu has no address", i);
        if (addr == (uintptr_t)p.rbuf)
            flip_pub(r);
    }
    forged = xt_blob_dump(root, &len);
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    s = xfer_md_load(p.ini, forged, len, NULL, 0);
    if (s != XFER_OK) {
        /* Refusing the key when unpacking it is a defence too. */
        XT_STATUS(s, XFER_ERR_INVALID);
        XT_ERR_HAS(plugin);
        printf("note: %s refused the corrupted packed key at load: %s\n",
               plugin, xfer_last_error());
        xt_md_exchange(p.tgt, XFER_MD_ALL, p.ini);
    } else {
        xt_fill(p.rbuf, 65536, canary);
        xt_fill(p.lbuf, 65536, lcanary);
        for (int op = XFER_OP_READ; op <= XFER_OP_WRITE; op++) {
            xfer_req_t *req = pair_req1(&p, (xfer_op_t)op, 0, 0, 4096);

            s = xfer_req_post(req, NULL, 0);
            if (s == XFER_IN_PROG)
                s = xt_wait_req(req, WAIT_MS);
            check_refused(s, p.tname, 0);
        }
        CHECK_PATTERN(p.rbuf, 65536, canary, 0, "target memory behind a "
                      "corrupted key");
        CHECK_PATTERN(p.lbuf, 65536, lcanary, 0, "local memory of a READ "
                      "through a corrupted key");
    }
    /* The same peer, not reloaded: its other region is reachable. */
    {
        xfer_desc_t l = { (uintptr_t)p.lbuf, 4096, 0 };
        xfer_desc_t r = { (uintptr_t)second + 3, 4096, 0 };
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
        xfer_req_t *req = NULL;

        xt_fill(p.lbuf, 4096, seed);
        XT_STATUS_FATAL(xfer_req_create(p.ini, XFER_OP_WRITE, &ll, &rl,
                                        p.tname, NULL, &req), XFER_OK);
        xt_req_defer(req);
        XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
        CHECK_PATTERN(second + 3, 4096, seed, 0, "WRITE on the rebuilt "
                      "connection");
    }
    third_party_works(&p);
}

static void test_refuse_deregistered(void)
{
    pair_t p;
    unsigned char *second = xt_alloc(65536);

    pair_setup(&p, 65536);
    /* Two regions; the initiator knows both, the target drops one. */
    {
        xfer_mem_t *m2 = xt_register(p.tgt, second, 65536);

        (void)m2;
        xt_md_exchange(p.tgt, XFER_MD_ALL, p.ini);
        XT_STATUS_FATAL(xfer_mem_deregister(p.tgt, p.rmem), XFER_OK);
    }
    refused_access(&p, XFER_OP_WRITE, second, p.rbuf + 4096);
    refused_access(&p, XFER_OP_READ, second, p.rbuf + 4096);
    /* The other region and other agents are still served. */
    {
        xfer_desc_t l = { (uintptr_t)p.lbuf, 1000, 0 };
        xfer_desc_t r = { (uintptr_t)second + 5, 1000, 0 };
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
        xfer_req_t *req = NULL;
        uint64_t seed = xt_seed();

        xt_fill(p.lbuf, 1000, seed);
        XT_STATUS_FATAL(xfer_req_create(p.ini, XFER_OP_WRITE, &ll, &rl,
                                        p.tname, NULL, &req), XFER_OK);
        xt_req_defer(req);
        XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
        CHECK_PATTERN(second + 5, 1000, seed, 0, "WRITE to the live region");
    }
    p.rbuf = second;
    third_party_works(&p);
}

static void test_unknown_remote(void)
{
    pair_t p;
    xfer_desc_t d = { 0, 16, 0 };
    xfer_dlist_t l;
    xfer_req_t *req = NULL;
    xfer_prep_t *prep = NULL;

    pair_setup(&p, 4096);
    d.addr = (uintptr_t)p.lbuf;
    l = xt_dlist(&d, 1);
    XT_STATUS(xfer_req_create(p.ini, XFER_OP_WRITE, &l, &l, "nobody-here",
                              NULL, &req), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("nobody-here");
    CU_ASSERT_PTR_NULL(req);
    XT_STATUS(xfer_prep_create(p.ini, &l, "nobody-here", &prep),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("nobody-here");
    if (has_notif()) {
        XT_STATUS(xfer_notif_send(p.ini, "nobody-here", "x", 1, NULL),
                  XFER_ERR_NOT_FOUND);
        XT_ERR_HAS("nobody-here");
    }
    same_link_works(&p, 0);
}

static void test_deregister_busy(void)
{
    pair_t p;
    xfer_req_t *req;

    pair_setup(&p, 65536);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, 4096);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_mem_deregister(p.ini, p.lmem), XFER_ERR_BUSY);
    XT_CHECK(xfer_last_error()[0] != '\0', "BUSY without a sentence");
    /* Still registered: the request still works. */
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS(xt_req_release(req), XFER_OK);
    XT_STATUS(xfer_mem_deregister(p.ini, p.lmem), XFER_OK);
}

/* ---- access rights ------------------------------------------------------------------ */

/* A forged blob claims every right: the initiator lies to itself, as a
 * hostile peer would, so that only the target can refuse. */
static void grant_all(json_t *region)
{
    json_object_set_new(region, "access", json_string("rw"));
}

/* The target's region carries `rights`.  With honest metadata the
 * initiator refuses `op` at request creation (XFER_ERR_ACCESS, `why`).
 * With a blob forged to claim every right, the target must refuse it
 * with `why` (host_mem_check's words: in the target's log on a SW_CHECK
 * backend, in the initiator's sentence on ptest's emulation of HW_KEYS;
 * a real NIC or provider only tells the initiator that the access was
 * refused, so there the sentence need only name the target), no byte may
 * move either way, a repost is refused again, and the op the rights
 * allow works. */
static void access_refused(xfer_op_t op, unsigned rights, const char *why)
{
    enum { SZ = 8192 };
    const xfer_op_t other = op == XFER_OP_WRITE ? XFER_OP_READ
                                                : XFER_OP_WRITE;
    uint64_t rcanary = xt_seed(), lcanary = xt_seed(), seed = xt_seed();
    pair_t p;
    xfer_req_t *req;
    xfer_status_t s;
    char *log = NULL;

    pair_setup(&p, SZ);
    XT_STATUS_FATAL(xfer_mem_deregister(p.tgt, p.rmem), XFER_OK);
    p.rmem = xt_register_access(p.tgt, p.rbuf, SZ, rights);
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    xt_md_exchange(p.tgt, XFER_MD_ALL, p.ini);
    {
        size_t loff = 0, roff = 0, len = 4096;
        xfer_req_t *early = NULL;

        if (XT_STATUS(pair_req(&p, op, &loff, &roff, &len, 1, NULL, &early),
                      XFER_ERR_ACCESS))
            XT_ERR_HAS(why, p.tname, "remote descriptor 0");
        XT_CHECK(early == NULL, "a refused request was handed out");
    }
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    load_forged(&p, grant_all);
    xt_fill(p.rbuf, SZ, rcanary);
    xt_fill(p.lbuf, SZ, lcanary);
    req = pair_req1(&p, op, 0, 0, 4096);
    for (int round = 0; round < 2; round++) {
        if (!hw)
            xt_stderr_begin();
        s = xfer_req_post(req, NULL, 0);
        if (s == XFER_IN_PROG)
            s = xt_wait_req(req, WAIT_MS);
        if (!hw)
            log = xt_stderr_end();
        if (!check_refused(s, p.tname, 0))
            continue;
        if (hw) {
            if (hw_knows_why)
                XT_ERR_HAS(why);
        } else {
            XT_CHECK(strstr(log, why) != NULL && strstr(log, p.tname) != NULL,
                     "post %d: the target's log does not say \"%s\" for "
                     "agent %s:\n%s", round, why, p.tname, log);
        }
    }
    CHECK_PATTERN(p.rbuf, SZ, rcanary, 0, "target memory after a refused "
                  "access");
    CHECK_PATTERN(p.lbuf, SZ, lcanary, 0, "local memory after a refused "
                  "access");
    /* What the rights allow still works, on the same peer. */
    req = pair_req1(&p, other, 64, 128, 4096);
    xt_fill_at(other == XFER_OP_WRITE ? p.lbuf + 64 : p.rbuf + 128, 4096,
               seed, 0);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(other == XFER_OP_WRITE ? p.rbuf + 128 : p.lbuf + 64, 4096,
                  seed, 0, "the access the rights allow");
}

static void test_access_read_only(void)
{
    access_refused(XFER_OP_WRITE, XFER_ACCESS_READ,
                   "allows peers READ, not WRITE");
}

static void test_access_write_only(void)
{
    access_refused(XFER_OP_READ, XFER_ACCESS_WRITE,
                   "allows peers WRITE, not READ");
}

/* No options, and options left at their defaults, both allow both. */
static void test_access_default(void)
{
    enum { SZ = 8192 };
    pair_t p;
    unsigned char *second = xt_alloc(SZ);
    xfer_desc_t d = { (uintptr_t)second, SZ, 0 };
    xfer_dlist_t l = xt_dlist(&d, 1);
    xfer_mem_opts_t o;
    xfer_mem_t *m = NULL;

    pair_setup(&p, SZ);
    xfer_mem_opts_init(&o);
    XT_CHECK(o.access == XFER_ACCESS_RW, "default access 0x%x", o.access);
    XT_STATUS_FATAL(xfer_mem_register(p.tgt, &l, &o, &m), XFER_OK);
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    xt_md_exchange(p.tgt, XFER_MD_ALL, p.ini);
    for (int i = 0; i < 2; i++) {
        unsigned char *rb = i == 0 ? p.rbuf : second;
        xfer_desc_t ld = { (uintptr_t)p.lbuf, SZ, 0 }, rd = { (uintptr_t)rb,
                                                            SZ, 0 };
        xfer_dlist_t ll = xt_dlist(&ld, 1), rl = xt_dlist(&rd, 1);
        xfer_req_t *w = NULL, *r = NULL;
        uint64_t s1 = xt_seed(), s2 = xt_seed();

        XT_STATUS_FATAL(xfer_req_create(p.ini, XFER_OP_WRITE, &ll, &rl,
                                        p.tname, NULL, &w), XFER_OK);
        xt_req_defer(w);
        XT_STATUS_FATAL(xfer_req_create(p.ini, XFER_OP_READ, &ll, &rl,
                                        p.tname, NULL, &r), XFER_OK);
        xt_req_defer(r);
        xt_fill(p.lbuf, SZ, s1);
        XT_STATUS(xt_post_wait(w, NULL, 0, WAIT_MS), XFER_OK);
        CHECK_PATTERN(rb, SZ, s1, 0, i ? "WRITE, default options" :
                      "WRITE, no options");
        xt_fill(rb, SZ, s2);
        XT_STATUS(xt_post_wait(r, NULL, 0, WAIT_MS), XFER_OK);
        CHECK_PATTERN(p.lbuf, SZ, s2, 0, i ? "READ, default options" :
                      "READ, no options");
    }
}

/* Rights that are no rights, or not rights at all, never register. */
static void test_access_invalid(void)
{
    static const unsigned bad[] = { 0, 1u << 2, XFER_ACCESS_RW | 1u << 3,
                                    1u << 31 };
    xfer_agent_t *a = xt_agent(xt_name("acc"), xc_spec, 1);
    unsigned char *buf = xt_alloc(4096);
    xfer_desc_t d = { (uintptr_t)buf, 4096, 0 };
    xfer_dlist_t l = xt_dlist(&d, 1);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        xfer_mem_opts_t o;
        static char sentinel;
        xfer_mem_t *m = (xfer_mem_t *)&sentinel;
        char want[32];

        xfer_mem_opts_init(&o);
        o.access = bad[i];
        snprintf(want, sizeof(want), "access 0x%x", bad[i]);
        if (XT_STATUS(xfer_mem_register(a, &l, &o, &m), XFER_ERR_INVALID))
            XT_ERR_HAS(want, "XFER_ACCESS_READ");
        XT_CHECK(m == NULL, "a refused registration handed out %p",
                 (void *)m);
    }
    /* Nothing of them was kept: the metadata lists no region. */
    {
        size_t len;
        char *blob = xt_md_get(a, XFER_MD_ALL, NULL, 0, &len);
        json_t *root = xt_blob_parse(blob, len);

        XT_CHECK(json_array_size(json_object_get(root, "regions")) == 0,
                 "refused registrations in the metadata: %s", blob);
    }
}

/* ---- the request API ----------------------------------------------------------------- */

/* XFER_NOTIF_NONE sends nothing, even when the request has a default
 * notification; the next plain post sends the default.  Notifications
 * keep their order, so a stray one would arrive first. */
static void test_notif_none(void)
{
    enum { SZ = 4096 };
    pair_t p;
    xfer_req_t *req;
    xfer_req_opts_t o;
    xt_notifs_t *got = xt_notifs_new();
    size_t off = 0, len = SZ;
    uint64_t s1 = xt_seed(), s2 = xt_seed();

    pair_setup(&p, SZ);
    xfer_req_opts_init(&o);
    if (has_notif()) {
        o.notif = "default";
        o.notif_len = 7;
    }
    XT_STATUS_FATAL(pair_req(&p, XFER_OP_WRITE, &off, &off, &len, 1, &o, &req),
                    XFER_OK);
    xt_fill(p.lbuf, SZ, s1);
    XT_STATUS(xt_post_wait(req, XFER_NOTIF_NONE, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf, SZ, s1, 0, "WRITE posted with XFER_NOTIF_NONE");
    if (!has_notif())
        return;
    xt_fill(p.lbuf, SZ, s2);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf, SZ, s2, 0, "WRITE posted with its default");
    xt_drain_until(p.tgt, got, 1, WAIT_MS, false);
    xt_sleep_ms(50);
    xt_drain_until(p.tgt, got, 2, 0, false);
    XT_REQUIRE(got->count == 1, "%zu notifications for one post with "
               "XFER_NOTIF_NONE and one with the default", got->count);
    XT_CHECK(got->items[0].len == 7 && memcmp(got->items[0].msg, "default",
             7) == 0, "got \"%.*s\"", (int)got->items[0].len,
             (char *)got->items[0].msg);
}

/* xfer_req_wait of a transfer that completes: XFER_OK, data there. */
static void test_req_wait_done(void)
{
    const size_t n = (1u << 20) + 3;
    pair_t p;
    uint64_t s1 = xt_seed(), s2 = xt_seed();
    xfer_req_t *w, *r;
    xfer_status_t s;

    pair_setup(&p, n);
    w = pair_req1(&p, XFER_OP_WRITE, 0, 0, n);
    r = pair_req1(&p, XFER_OP_READ, 0, 0, n);
    xt_fill(p.lbuf, n, s1);
    s = xfer_req_post(w, NULL, 0);
    XT_CHECK(s == XFER_OK || s == XFER_IN_PROG, "post: %s (%s)",
             xt_status_name(s), xfer_last_error());
    XT_STATUS(xfer_req_wait(w, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf, n, s1, 0, "WRITE ended by xfer_req_wait");
    /* An ended request answers at once, again. */
    XT_STATUS(xfer_req_wait(w, 0), XFER_OK);
    xt_fill(p.rbuf, n, s2);
    s = xfer_req_post(r, NULL, 0);
    XT_CHECK(s == XFER_OK || s == XFER_IN_PROG, "post: %s (%s)",
             xt_status_name(s), xfer_last_error());
    XT_STATUS(xfer_req_wait(r, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.lbuf, n, s2, 0, "READ ended by xfer_req_wait");
}

/* A request never posted has no status to give. */
static void test_req_status_never_posted(void)
{
    pair_t p;
    xfer_req_t *req;
    uint64_t seed = xt_seed();

    pair_setup(&p, 4096);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, 4096);
    if (XT_STATUS(xfer_req_status(req), XFER_ERR_INVALID))
        XT_ERR_HAS("never posted");
    if (XT_STATUS(xfer_req_wait(req, 100), XFER_ERR_INVALID))
        XT_ERR_HAS("never posted");
    xt_fill(p.lbuf, 4096, seed);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_req_status(req), XFER_OK);
    CHECK_PATTERN(p.rbuf, 4096, seed, 0, "first post");
}

/* A post that failed at once leaves its error as the status. */
static void test_req_status_failed_at_once(void)
{
    pair_t p;
    xfer_req_t *req;

    pair_setup(&p, 4096);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, 4096);
    XT_STATUS_FATAL(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS_FATAL(xfer_md_invalidate(p.ini, p.tname), XFER_OK);
    if (XT_STATUS(xfer_req_post(req, NULL, 0), XFER_ERR_REMOTE_DISCONNECT))
        XT_ERR_HAS(p.tname);
    if (XT_STATUS(xfer_req_status(req), XFER_ERR_REMOTE_DISCONNECT))
        XT_ERR_HAS(p.tname);
    XT_STATUS(xfer_req_wait(req, 100), XFER_ERR_REMOTE_DISCONNECT);
}

/* A WRITE to a target that never progresses: xfer_req_wait gives up
 * after its timeout with XFER_IN_PROG, and the request still ends once
 * the target moves again. */
static void test_req_wait_stalled(void)
{
    enum { SZ = 65536, WAIT = 300 };
    pair_t p;
    xfer_req_t *req;
    xfer_status_t s;
    uint64_t start, took, seed = xt_seed();

    pair_setup_opts(&p, SZ, 1, 0);
    xt_fill(p.lbuf, SZ, seed);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, SZ);
    XT_STATUS(xfer_req_post(req, NULL, 0), XFER_IN_PROG);
    start = xt_now_ms();
    s = xfer_req_wait(req, WAIT);
    took = xt_now_ms() - start;
    XT_STATUS(s, XFER_IN_PROG);
    XT_CHECK(took + 10 >= WAIT && took < WAIT + 1000, "xfer_req_wait(%u ms) "
             "returned after %" PRIu64 " ms", WAIT, took);
    XT_STATUS(xt_wait_req_pump(req, &p.tgt, 1, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf, SZ, seed, 0, "WRITE once the target moved");
}

/* Whether a request with timeout_ms could be made; a backend that cannot
 * cancel must refuse it at creation, saying why. */
bool xc_timeout_refused(xfer_status_t s)
{
    if (s != XFER_ERR_NOT_SUPPORTED)
        return false;
    XT_ERR_HAS("cannot cancel", "timeout");
    printf("note: %s cannot cancel: request timeouts refused\n", plugin);
    return true;
}

/* xfer_req_opts_t.timeout_ms bounds a WRITE to a target that never
 * progresses; the target is served again once it moves. */
static void test_req_timeout_stalled(void)
{
    enum { SZ = 65536, TMO = 300 };
    pair_t p;
    xfer_req_t *req;
    xfer_req_opts_t o;
    xfer_status_t s;
    size_t off = 0, len = SZ;
    uint64_t start, took, seed = xt_seed();
    char want[64];

    pair_setup_opts(&p, SZ, 1, 0);
    xfer_req_opts_init(&o);
    o.timeout_ms = TMO;
    s = pair_req(&p, XFER_OP_WRITE, &off, &off, &len, 1, &o, &req);
    if (xc_timeout_refused(s) || !XT_STATUS(s, XFER_OK))
        return;
    XT_STATUS(xfer_req_post(req, NULL, 0), XFER_IN_PROG);
    start = xt_now_ms();
    s = xfer_req_wait(req, TMO + 5000);
    took = xt_now_ms() - start;
    snprintf(want, sizeof(want), "did not complete within its timeout of "
             "%u ms", TMO);
    if (XT_STATUS(s, XFER_ERR_TIMEOUT))
        XT_ERR_HAS(want, p.tname);
    XT_CHECK(took + 10 >= TMO && took < TMO + 3000, "timeout_ms=%u ended "
             "the request after %" PRIu64 " ms", TMO, took);
    if (XT_STATUS(xfer_req_status(req), XFER_ERR_TIMEOUT))
        XT_ERR_HAS(want);
    /* The target moves again: a request without a timeout gets there. */
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, SZ);
    xt_fill(p.lbuf, SZ, seed);
    s = xfer_req_post(req, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req_pump(req, &p.tgt, 1, WAIT_MS);
    XT_STATUS(s, XFER_OK);
    CHECK_PATTERN(p.rbuf, SZ, seed, 0, "WRITE after a timed-out one");
}

/* xfer_notif_send pinned to a backend: the agent's own carries it,
 * another agent's is refused. */
static void test_notif_send_pinned(void)
{
    pair_t p;
    xfer_backend_t *mine = NULL, *theirs = NULL;
    xfer_notif_opts_t o;
    xt_notifs_t *got = xt_notifs_new();

    pair_setup(&p, 4096);
    XT_STATUS_FATAL(xfer_backend_find(p.ini, plugin, &mine), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_find(p.tgt, plugin, &theirs), XFER_OK);
    xfer_notif_opts_init(&o);
    o.backend = mine;
    XT_STATUS(xfer_notif_send(p.ini, p.tname, "pinned", 6, &o), XFER_OK);
    o.backend = theirs;
    if (XT_STATUS(xfer_notif_send(p.ini, p.tname, "stray", 5, &o),
                  XFER_ERR_INVALID))
        XT_ERR_HAS("another agent");
    xt_drain_until(p.tgt, got, 1, WAIT_MS, false);
    xt_sleep_ms(50);
    xt_drain_until(p.tgt, got, 2, 0, false);
    XT_REQUIRE(got->count == 1, "%zu notifications for one pinned send",
               got->count);
    XT_CHECK(got->items[0].len == 6 && memcmp(got->items[0].msg, "pinned", 6)
             == 0 && strcmp(got->items[0].from, xfer_agent_name(p.ini)) == 0,
             "got \"%.*s\" from %s", (int)got->items[0].len,
             (char *)got->items[0].msg, got->items[0].from);
}


/* Whether the backend connects when asked (a peer_connect op): the
 * stream backends do; ptest's in-process peers have nothing to set up. */
bool xc_connects_eagerly(void)
{
    return strncmp(xc_spec, "ptest", 5) != 0;
}

/* xfer_md_connect: an unknown agent is named; a live one is connected and
 * the first post then works; a dead one is an error that names the
 * backend and the agent, well within the time given. */
static void test_md_connect(void)
{
    enum { SZ = 4096 };
    pair_t p;
    xfer_req_t *req;
    xfer_agent_t *ini2;
    char *blob;
    size_t len, off = 0, n = SZ;
    uint64_t start, took, seed = xt_seed();
    xfer_status_t s;

    pair_setup(&p, SZ);
    if (XT_STATUS(xfer_md_connect(p.ini, "nobody-here", 1000),
                  XFER_ERR_NOT_FOUND))
        XT_ERR_HAS("nobody-here");
    XT_STATUS(xfer_md_connect(p.ini, p.tname, 0), XFER_OK);
    XT_STATUS_FATAL(pair_req(&p, XFER_OP_WRITE, &off, &off, &n, 1, NULL, &req),
                    XFER_OK);
    xt_fill(p.lbuf, SZ, seed);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf, SZ, seed, 0, "WRITE after xfer_md_connect");
    if (!xc_connects_eagerly())
        return;
    /* A blob of a target that is gone by the time we connect. */
    blob = xt_md_get(p.tgt, XFER_MD_ALL, NULL, 0, &len);
    xt_agent_destroy(p.tgt);
    ini2 = xt_agent(xt_name("ini2"), xc_spec, 1);
    XT_STATUS_FATAL(xfer_md_load(ini2, blob, len, NULL, 0), XFER_OK);
    start = xt_now_ms();
    s = xfer_md_connect(ini2, p.tname, 3000);
    took = xt_now_ms() - start;
    XT_CHECK(s == XFER_ERR_REMOTE_DISCONNECT || s == XFER_ERR_TIMEOUT,
             "connecting to a destroyed agent: %s (%s)", xt_status_name(s),
             xfer_last_error());
    XT_ERR_HAS(p.tname);
    XT_CHECK(took < 3000 + 1000, "xfer_md_connect(3000 ms) returned after "
             "%" PRIu64 " ms", took);
}

/* xfer_prep_create(agent, list, remote_agent, prep): the name says
 * whose memory the list is. */
static void test_prep_which_side(void)
{
    pair_t p;
    xfer_desc_t ld = { 0, 512, 0 }, rd = { 0, 512, 0 };
    xfer_dlist_t ll = xt_dlist(&ld, 1), rl = xt_dlist(&rd, 1);
    xfer_prep_t *lp = NULL, *rp = NULL, *x = NULL;
    xfer_req_t *req = NULL;
    size_t idx = 0;
    uint64_t seed = xt_seed();

    pair_setup(&p, 4096);
    ld.addr = (uintptr_t)p.lbuf + 100;
    rd.addr = (uintptr_t)p.rbuf + 200;
    /* Local memory named as the target's, and the target's as local. */
    if (XT_STATUS(xfer_prep_create(p.ini, &ll, p.tname, &x),
                  XFER_ERR_INVALID))
        XT_ERR_HAS("remote descriptor 0", p.tname);
    if (XT_STATUS(xfer_prep_create(p.ini, &rl, NULL, &x), XFER_ERR_INVALID))
        XT_ERR_HAS("local descriptor 0");
    CU_ASSERT_PTR_NULL(x);
    XT_STATUS_FATAL(xfer_prep_create(p.ini, &ll, NULL, &lp), XFER_OK);
    XT_STATUS_FATAL(xfer_prep_create(p.ini, &rl, p.tname, &rp), XFER_OK);
    XT_STATUS_FATAL(xfer_req_create_prepped(p.ini, XFER_OP_WRITE, lp, &idx,
                                            rp, &idx, 1, NULL, &req),
                    XFER_OK);
    xt_fill(p.lbuf + 100, 512, seed);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf + 200, 512, seed, 0, "prepped WRITE");
    XT_STATUS(xfer_req_release(req), XFER_OK);
    XT_STATUS(xfer_prep_release(lp), XFER_OK);
    XT_STATUS(xfer_prep_release(rp), XFER_OK);
}

/* ---- peer restart ----------------------------------------------------------------- */

static void test_peer_restart(void)
{
    pair_t p;
    xfer_req_t *old, *fresh;
    xfer_agent_t *t2;
    unsigned char *buf2 = xt_alloc(65536);
    xfer_status_t s;
    uint64_t seed = xt_seed(), epoch1;

    pair_setup(&p, 65536);
    old = pair_req1(&p, XFER_OP_WRITE, 0, 0, 4096);
    XT_STATUS_FATAL(xt_post_wait(old, NULL, 0, WAIT_MS), XFER_OK);
    epoch1 = xfer_agent_epoch(p.tgt);

    /* The target dies: the old request fails, within the bound. */
    xt_agent_destroy(p.tgt);
    s = xfer_req_post(old, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(old, WAIT_MS);
    XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);

    /* It comes back under the same name with a new epoch. */
    t2 = xt_agent(p.tname, xc_spec, 1);
    XT_CHECK(xfer_agent_epoch(t2) > epoch1, "restarted epoch 0x%" PRIx64
             " not above 0x%" PRIx64, xfer_agent_epoch(t2), epoch1);
    xt_register(t2, buf2, 65536);
    xt_md_exchange(t2, XFER_MD_ALL, p.ini);
    s = xfer_req_post(old, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(old, WAIT_MS);
    XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);
    {
        xfer_desc_t l = { (uintptr_t)p.lbuf, 4096, 0 };
        xfer_desc_t r = { (uintptr_t)buf2, 4096, 0 };
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);

        XT_STATUS_FATAL(xfer_req_create(p.ini, XFER_OP_WRITE, &ll, &rl,
                                        p.tname, NULL, &fresh), XFER_OK);
        xt_req_defer(fresh);
    }
    xt_fill(p.lbuf, 4096, seed);
    XT_STATUS(xt_post_wait(fresh, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(buf2, 4096, seed, 0, "WRITE to the restarted peer");
    if (has_notif()) {
        xt_notifs_t *got = xt_notifs_new();

        XT_STATUS(xfer_notif_send(p.ini, p.tname, "again", 5, NULL), XFER_OK);
        xt_drain_until(t2, got, 1, WAIT_MS, false);
        XT_CHECK(got->count == 1 && strcmp(got->items[0].msg, "again") == 0,
                 "restarted peer got %zu notifications", got->count);
    }
}

/* ---- without a progress thread ----------------------------------------------------- */

static void test_no_thread_status(void)
{
    pair_t p;
    xfer_req_t *w, *r;
    uint64_t seed = xt_seed();
    const size_t n = (1u << 20) + 5;

    pair_setup_opts(&p, n, 0, 1);
    xt_fill(p.lbuf, n, seed);
    w = pair_req1(&p, XFER_OP_WRITE, 0, 0, n);
    /* Only xfer_req_status drives the initiator. */
    XT_STATUS_FATAL(xt_post_wait(w, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.rbuf, n, seed, 0, "WRITE polled by status");
    memset(p.lbuf, 0, n);
    r = pair_req1(&p, XFER_OP_READ, 0, 0, n);
    XT_STATUS_FATAL(xt_post_wait(r, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(p.lbuf, n, seed, 0, "READ polled by status");
}

/* Both agents single-threaded, driven from one poll() loop. */
static void test_no_thread_event_fd(void)
{
    pair_t p;
    xfer_req_t *w;
    int fds[2];
    uint64_t seed = xt_seed(), end;
    const size_t n = 4u << 20;
    xfer_status_t s = XFER_IN_PROG;
    xt_notifs_t *got = xt_notifs_new();
    unsigned wakeups = 0;

    pair_setup_opts(&p, n, 0, 0);
    XT_STATUS_FATAL(xfer_agent_event_fd(p.ini, &fds[0]), XFER_OK);
    XT_STATUS_FATAL(xfer_agent_event_fd(p.tgt, &fds[1]), XFER_OK);
    XT_REQUIRE(fds[0] >= 0 && fds[1] >= 0, "event fds %d %d", fds[0], fds[1]);
    xt_fill(p.lbuf, n, seed);
    w = pair_req1(&p, XFER_OP_WRITE, 0, 0, n);
    s = xfer_req_post(w, has_notif() ? "evfd" : NULL, has_notif() ? 4 : 0);
    end = xt_now_ms() + WAIT_MS;
    while (s == XFER_IN_PROG && xt_now_ms() < end) {
        struct pollfd pf[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };

        if (poll(pf, 2, 100) > 0)
            wakeups++;
        xfer_progress(p.tgt);
        xfer_progress(p.ini);
        s = xfer_req_status(w);
    }
    XT_STATUS(s, XFER_OK);
    XT_CHECK(wakeups > 0, "the event fds never became readable");
    CHECK_PATTERN(p.rbuf, n, seed, 0, "WRITE driven by poll()");
    if (has_notif()) {
        xt_drain_until(p.tgt, got, 1, WAIT_MS, true);
        XT_CHECK(got->count == 1 && strcmp(got->items[0].msg, "evfd") == 0,
                 "%zu notifications", got->count);
    }
}

/* ---- concurrency -------------------------------------------------------------------- */

typedef struct worker {
    pair_t *p;
    xfer_req_t *req;
    size_t off, len;
    int rounds;
    int failures;
    char why[256];
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uint64_t st = xt_seed();

    for (int i = 0; i < w->rounds && w->failures == 0; i++) {
        uint64_t seed = xt_rand(&st);
        xfer_status_t s;
        uint64_t end = xt_now_ms() + WAIT_MS;

        xt_fill(w->p->lbuf + w->off, w->len, seed);
        s = xfer_req_post(w->req, NULL, 0);
        while (s == XFER_IN_PROG && xt_now_ms() < end)
            s = xfer_req_status(w->req);
        if (s != XFER_OK) {
            snprintf(w->why, sizeof(w->why), "round %d: %s (%s)", i,
                     xt_status_name(s), xfer_last_error());
            w->failures++;
        } else if (xt_check(w->p->rbuf + w->off, w->len, seed) >= 0) {
            snprintf(w->why, sizeof(w->why), "round %d: data differs", i);
            w->failures++;
        }
    }
    return NULL;
}

/* Several threads post on one agent at once, each on its own slot. */
static void test_threads_post(void)
{
    enum { T = 4, SLOT = 128 * 1024 };
    pair_t p;
    worker_t w[T];
    pthread_t th[T];

    pair_setup(&p, (size_t)T * SLOT);
    for (int i = 0; i < T; i++) {
        w[i] = (worker_t){ .p = &p, .off = (size_t)i * SLOT,
                           .len = SLOT - (size_t)i * 17, .rounds = 200 };
        w[i].req = pair_req1(&p, XFER_OP_WRITE, w[i].off, w[i].off, w[i].len);
    }
    for (int i = 0; i < T; i++)
        XT_REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0,
                   "pthread_create failed");
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < T; i++)
        XT_CHECK(w[i].failures == 0, "thread %d: %s", i, w[i].why);
}

/* Two senders to one target: each keeps its order, each is named. */
static void test_notif_two_senders(void)
{
    enum { N = 300 };
    pair_t p;
    xfer_agent_t *b = xt_agent(xt_name("ini2"), xc_spec, 1);
    xt_notifs_t *got = xt_notifs_new();
    int next[2] = {0, 0};
    unsigned bad = 0;
    char msg[32];

    pair_setup(&p, 4096);
    xt_md_exchange(p.tgt, XFER_MD_ALL, b);
    for (int i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "a-%d", i);
        XT_STATUS(xfer_notif_send(p.ini, p.tname, msg, strlen(msg), NULL),
                  XFER_OK);
        snprintf(msg, sizeof(msg), "b-%d", i);
        XT_STATUS(xfer_notif_send(b, p.tname, msg, strlen(msg), NULL),
                  XFER_OK);
    }
    xt_drain_until(p.tgt, got, 2 * N, WAIT_MS, false);
    XT_REQUIRE(got->count == 2 * N, "%zu of %d notifications", got->count,
               2 * N);
    for (size_t i = 0; i < got->count; i++) {
        const xt_notif_t *m = &got->items[i];
        int who = m->msg && ((char *)m->msg)[0] == 'b';
        const char *want_from = xfer_agent_name(who ? b : p.ini);
        int k = -1;

        sscanf((char *)m->msg + 2, "%d", &k);
        if ((k != next[who] || strcmp(m->from, want_from) != 0) && bad++ < 3)
            XT_FAIL("notification %zu: \"%s\" from \"%s\", want #%d from "
                    "\"%s\"", i, (char *)m->msg, m->from, next[who],
                    want_from);
        next[who] = k + 1;
    }
    XT_CHECK(bad == 0, "%u notifications out of order or misattributed", bad);
}

/* The target agent is destroyed while a large WRITE is on its way: the
 * initiator gets an answer within the bound, never a hang. */
static void test_target_destroyed_midstream(void)
{
    const size_t big = 64u << 20;
    pair_t p;
    xfer_req_t *req;
    xfer_status_t s;
    uint64_t start;

    pair_setup(&p, big);
    req = pair_req1(&p, XFER_OP_WRITE, 0, 0, big);
    s = xfer_req_post(req, NULL, 0);
    xt_agent_destroy(p.tgt);
    start = xt_now_ms();
    for (;;) {
        if (s == XFER_IN_PROG)
            s = xt_wait_req(req, WAIT_MS);
        if (s != XFER_OK || xt_now_ms() - start > WAIT_MS)
            break;
        s = xfer_req_post(req, NULL, 0);
    }
    XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);
}

/* ---- registration ---------------------------------------------------------------------- */

static const xt_test_t data_tests[] = {
    XT_TEST(test_write_1B), XT_TEST(test_write_7B), XT_TEST(test_write_4K),
    XT_TEST(test_write_1M13), XT_TEST(test_write_64M),
    XT_TEST(test_read_1B), XT_TEST(test_read_7B), XT_TEST(test_read_4K),
    XT_TEST(test_read_1M13), XT_TEST(test_read_64M),
    XT_TEST(test_desc_1), XT_TEST(test_desc_2), XT_TEST(test_desc_64),
    XT_TEST(test_desc_1024),
    XT_TEST(test_desc_runs_1024),
    XT_TEST(test_repost),
    XT_TEST(test_prepped),
    XT_END
};

static const xt_test_t notif_tests[] = {
    XT_TEST(test_default_notif),
    XT_TEST(test_notif_write_after_data),
    XT_TEST(test_notif_read),
    XT_TEST(test_notif_standalone_order),
    XT_TEST(test_notif_fd),
    XT_TEST(test_notif_mixed_order),
    XT_TEST(test_notif_sizes),
    XT_TEST(test_notif_two_senders),
    XT_END
};

/* Bounds and deregistration: the target's check or the hardware key;
 * check_refused() tells the two answers apart. */
static const xt_test_t refusal_tests[] = {
    XT_TEST(test_unknown_remote),
    XT_TEST(test_deregister_busy),
    XT_TEST(test_peer_restart),
    XT_TEST(test_target_destroyed_midstream),
    XT_END
};

/* The key that is wrong: the core's (SW_CHECK) or the packed one
 * (HW_KEYS). */
static const xt_test_t refusal_sw_tests[] = {
    XT_TEST(test_refuse_wrong_key),
    XT_END
};

static const xt_test_t refusal_hw_tests[] = {
    XT_TEST(test_refuse_bad_packed_key),
    XT_END
};

/* Accesses the target itself must refuse: its CPU (SW_CHECK) or its
 * NIC (HW_KEYS) stands between the peer and the memory. */
static const xt_test_t enforced_tests[] = {
    XT_TEST(test_refuse_out_of_region),
    XT_TEST(test_refuse_deregistered),
    XT_TEST(test_access_read_only),
    XT_TEST(test_access_write_only),
    XT_END
};

static const xt_test_t access_tests[] = {
    XT_TEST(test_access_default),
    XT_TEST(test_access_invalid),
    XT_END
};

static const xt_test_t api_tests[] = {
    XT_TEST(test_notif_none),
    XT_TEST(test_req_wait_done),
    XT_TEST(test_req_status_never_posted),
    XT_TEST(test_req_status_failed_at_once),
    XT_TEST(test_req_wait_stalled),
    XT_TEST(test_req_timeout_stalled),
    XT_TEST(test_prep_which_side),
    XT_TEST(test_md_connect),
    XT_END
};

static const xt_test_t notif_api_tests[] = {
    XT_TEST(test_notif_send_pinned),
    XT_END
};

static const xt_test_t progress_tests[] = {
    XT_TEST(test_no_thread_status),
    XT_TEST(test_no_thread_event_fd),
    XT_TEST(test_threads_post),
    XT_END
};

static int has_timeout_param;

/* The plugin must be there and load; its caps pick the suites. */
static void probe_plugin(void)
{
    xfer_plugin_info_t *infos = NULL;
    size_t n = 0;
    int found = 0;

    if (xfer_plugin_list(&infos, &n) != XFER_OK)
        xt_skip("cannot list plugins: %s", xfer_last_error());
    for (size_t i = 0; i < n; i++) {
        if (strcmp(infos[i].name, plugin) != 0)
            continue;
        found = 1;
        if (infos[i].error != NULL) {
            /* Built but broken is a failure, not a skip. */
            printf("FAIL: plugin %s does not load: %s\n", plugin,
                   infos[i].error);
            exit(1);
        }
        caps = infos[i].caps;
        for (size_t j = 0; j < infos[i].nparams; j++)
            if (strcmp(infos[i].params[j].name, "timeout_ms") == 0)
                has_timeout_param = 1;
    }
    xfer_plugin_list_free(infos, n);
    if (!found)
        xt_skip("plugin '%s' is not on XFER_PLUGIN_PATH", plugin);
}

static size_t ntests(const xt_test_t *t)
{
    size_t n = 0;

    while (t[n].name)
        n++;
    return n;
}

/* Why this xc_spec's targets cannot refuse a bad access, or NULL when they
 * can.  A HW_KEYS backend says so in its state when the transports it
 * runs on check no key (ucx over tcp or shared memory: docs/security.md);
 * the suite then cannot ask for refusals, and says which it skips. */
static const char *unenforced(char *buf, size_t size)
{
    xfer_agent_t *a;
    xfer_backend_t *b = NULL;
    const char *why = NULL;

    if (!hw)
        return NULL;
    a = xt_agent(xt_name("probe"), xc_spec, 0);
    if (xfer_backend_find(a, plugin, &b) == XFER_OK &&
        xfer_backend_state(b, buf, size) == XFER_OK &&
        strstr(buf, "remote keys not checked") != NULL)
        why = buf;
    xt_agent_destroy(a);
    return why;
}

int main(int argc, char **argv)
{
    char state[1024];
    const char *why, *same;
    xt_suite_t suites[16];
    unsigned keys;
    size_t ns = 0;

    xc_spec = argc > 1 ? argv[1] : getenv("XFER_TEST_BACKEND");
    if (xc_spec == NULL || xc_spec[0] == '\0')
        xt_skip("no backend: give a spec as argv[1] or XFER_TEST_BACKEND");
    snprintf(plugin, sizeof(plugin), "%.*s", (int)strcspn(xc_spec, ":"), xc_spec);
    probe_plugin();
    printf("conformance of backend \"%s\" (caps 0x%x)\n", xc_spec, caps);
    if ((caps & (XFER_CAP_READ | XFER_CAP_WRITE)) !=
        (XFER_CAP_READ | XFER_CAP_WRITE)) {
        printf("FAIL: plugin %s lacks READ or WRITE\n", plugin);
        return 1;
    }
    keys = caps & (XFER_CAP_SW_CHECK | XFER_CAP_HW_KEYS);
    if (keys != XFER_CAP_SW_CHECK && keys != XFER_CAP_HW_KEYS) {
        printf("FAIL: plugin %s declares %s of XFER_CAP_SW_CHECK and "
               "XFER_CAP_HW_KEYS; it must declare exactly one, so that the "
               "suite knows how its targets refuse a bad access\n", plugin,
               keys ? "both" : "neither");
        return 1;
    }
    hw = keys == XFER_CAP_HW_KEYS;
    hw_knows_why = hw && strcmp(plugin, "ptest") == 0;
    printf("refusals checked as %s\n", hw ? "HW_KEYS: the packed key" :
           "SW_CHECK: the target's check");
    suites[ns++] = (xt_suite_t){ "data", data_tests };
    if (caps & XFER_CAP_NOTIF) {
        suites[ns++] = (xt_suite_t){ "notif", notif_tests };
        suites[ns++] = (xt_suite_t){ "notif-api", notif_api_tests };
    } else {
        printf("note: %s has no notifications; notif suites not run\n",
               plugin);
    }
    suites[ns++] = (xt_suite_t){ "refusal", refusal_tests };
    if ((xc_unenforced = why = unenforced(state, sizeof state)) != NULL) {
        printf("SKIP: suites refusal-enforced (%zu tests) and refusal-hw "
               "(%zu) not run: the target cannot refuse a bad access on "
               "these transports; backend state: %s\n",
               ntests(enforced_tests), ntests(refusal_hw_tests), why);
    } else {
        suites[ns++] = (xt_suite_t){ "refusal-enforced", enforced_tests };
        suites[ns++] = hw ? (xt_suite_t){ "refusal-hw", refusal_hw_tests }
                          : (xt_suite_t){ "refusal-sw", refusal_sw_tests };
    }
    suites[ns++] = (xt_suite_t){ "access", access_tests };
    suites[ns++] = (xt_suite_t){ "api", api_tests };
    suites[ns++] = (xt_suite_t){ "progress", progress_tests };
    /* An emulated device (vbfake) lives in one process: a child's agent
     * has its own and reaches nothing of ours. */
    same = getenv("XT_SAME_PROCESS");
    if (same != NULL && same[0] != '\0') {
        printf("SKIP: suites process (%zu tests) and stall (%zu) not run: "
               "%s\n", ntests(xc_process_tests), ntests(xc_stall_tests), same);
    } else if (caps & (XFER_CAP_LOCAL | XFER_CAP_REMOTE)) {
        suites[ns++] = (xt_suite_t){ "process", xc_process_tests };
    } else {
        printf("note: %s reaches only its own process; process suite not "
               "run\n", plugin);
    }
    if (same != NULL && same[0] != '\0')
        ;
    else if ((caps & (XFER_CAP_LOCAL | XFER_CAP_REMOTE)) && has_timeout_param)
        suites[ns++] = (xt_suite_t){ "stall", xc_stall_tests };
    else
        printf("note: %s declares no timeout_ms or reaches no other "
               "process; stall suite not run\n", plugin);
    /* A link to cut: only where conformance-netns.sh made one. */
    if (getenv("XT_LINK_CUT") != NULL && getenv("XT_LINK_CUT")[0] != '\0' &&
        (same == NULL || same[0] == '\0') && has_timeout_param &&
        (caps & (XFER_CAP_LOCAL | XFER_CAP_REMOTE)))
        suites[ns++] = (xt_suite_t){ "link", xc_link_tests };
    return xt_run("test-conformance", suites, ns);
}
