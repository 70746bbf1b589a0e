/* test-stats.c - telemetry counters (docs/api.md, "Telemetry") against
 * what the test itself did over tcp: every count exact, per backend and
 * per remote agent, from one thread and from several at once; failures
 * by code; requests in flight; the bound on names; the JSON document. */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tests/common/runner.h"
#include "tests/common/xt.h"

#define WAIT_MS 20000
#define TBUF (4u << 20)
#define SPEC "tcp"

static void get_stats(xfer_agent_t *a, const char *be, const char *rem,
                      xfer_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    XT_STATUS_FATAL(xfer_stats_get(a, be, rem, s, sizeof(*s)), XFER_OK);
}

static uint64_t lat_total(const xfer_stats_t *s)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < XFER_STATS_LAT_BUCKETS; i++)
        n += s->lat_us[i];
    return n;
}

/* Random WRITEs and READs of 1 to 8 descriptors (never adjacent, so no
 * backend merges them), a third with a notification: every counter of
 * both sides equals what was done, and the bytes arrived. */
static void counts_exact(const char *spec, bool shm)
{
    const char *be = strncmp(spec, "uds", 3) == 0 ? "uds" : SPEC;
    uint64_t seed = xt_seed(), rs = seed;
    const char *in = xt_name("ini"), *tn = xt_name("tgt");
    xfer_agent_t *ini = xt_agent(in, spec, 1), *tgt = xt_agent(tn, spec, 1);
    unsigned char *lbuf = xt_alloc(TBUF), *tbuf = NULL;
    uint64_t ops[2] = {0}, bytes[2] = {0}, descs = 0, nnotif = 0, nbytes = 0;
    xt_notifs_t *got = xt_notifs_new();
    xfer_stats_t s, t;
    enum { ROUNDS = 40 };

    printf("%s, seed %" PRIu64 "\n", spec, seed);
    /* On uds, memory from xfer_mem_alloc takes the shared-memory path,
     * where a post completes inside the call. */
    if (shm)
        XT_STATUS_FATAL(xfer_mem_alloc(tgt, TBUF, 0, (void **)&tbuf),
                        XFER_OK);
    else
        tbuf = xt_alloc(TBUF);
    xt_register(ini, lbuf, TBUF);
    xt_register(tgt, tbuf, TBUF);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < ROUNDS; i++) {
        xfer_op_t op = xt_rand(&rs) % 3 == 0 ? XFER_OP_READ : XFER_OP_WRITE;
        size_t n = 1 + xt_rand(&rs) % 8, off = 0, total = 0;
        xfer_desc_t l[8], r[8];
        xfer_dlist_t ll = xt_dlist(l, n), rl = xt_dlist(r, n);
        xfer_req_t *q = NULL;
        char notif[64];
        size_t nlen = 0;

        for (size_t k = 0; k < n; k++) {
            size_t len = 1 + xt_rand(&rs) % 65536;

            l[k] = (xfer_desc_t){(uintptr_t)lbuf + off, len, 0};
            r[k] = (xfer_desc_t){(uintptr_t)tbuf + off, len, 0};
            if (op == XFER_OP_WRITE)
                xt_fill(lbuf + off, len, seed + i * 8 + k);
            else
                xt_fill(tbuf + off, len, seed + i * 8 + k);
            off += len + 64;
            total += len;
        }
        if (xt_rand(&rs) % 3 == 0) {
            nlen = (size_t)snprintf(notif, sizeof notif, "n%u", i);
            nnotif++;
            nbytes += nlen;
        }
        XT_STATUS_FATAL(xfer_req_create(ini, op, &ll, &rl, tn, NULL, &q),
                        XFER_OK);
        xt_req_defer(q);
        XT_STATUS_FATAL(xt_post_wait(q, nlen ? notif : XFER_NOTIF_NONE, nlen,
                                     WAIT_MS), XFER_OK);
        for (size_t k = 0; k < n; k++) {
            unsigned char *dst = op == XFER_OP_WRITE ? tbuf : lbuf;
            size_t at = l[k].addr - (uintptr_t)lbuf;

            XT_CHECK(xt_check(dst + at, l[k].len, seed + i * 8 + k) < 0,
                     "round %u descriptor %zu: bytes differ", i, k);
        }
        ops[op == XFER_OP_READ ? 0 : 1]++;
        bytes[op == XFER_OP_READ ? 0 : 1] += total;
        descs += n;
    }
    XT_CHECK(xt_drain_until(tgt, got, nnotif, WAIT_MS, false) == nnotif,
             "%zu of %" PRIu64 " notifications arrived", got->count, nnotif);

    get_stats(ini, be, tn, &s);
    printf("ini->%s: R %" PRIu64 "/%" PRIu64 " B, W %" PRIu64 "/%" PRIu64
           " B, descs %" PRIu64 ", notifs %" PRIu64 "\n", tn, s.read_ops,
           s.read_bytes, s.write_ops, s.write_bytes, s.descs, s.notif_sent);
    XT_CHECK(s.read_ops == ops[0] && s.write_ops == ops[1], "ops R %" PRIu64
             " W %" PRIu64 ", did %" PRIu64 " and %" PRIu64, s.read_ops,
             s.write_ops, ops[0], ops[1]);
    XT_CHECK(s.read_bytes == bytes[0] && s.write_bytes == bytes[1],
             "bytes R %" PRIu64 " W %" PRIu64 ", moved %" PRIu64 " and %"
             PRIu64, s.read_bytes, s.write_bytes, bytes[0], bytes[1]);
    XT_CHECK(s.descs == descs, "descs %" PRIu64 ", posted %" PRIu64, s.descs,
             descs);
    XT_CHECK(s.done == ROUNDS && s.failed == 0, "done %" PRIu64 " failed %"
             PRIu64, s.done, s.failed);
    XT_CHECK(s.notif_sent == nnotif && s.notif_sent_bytes == nbytes,
             "notif_sent %" PRIu64 " (%" PRIu64 " B), sent %" PRIu64 " (%"
             PRIu64 " B)", s.notif_sent, s.notif_sent_bytes, nnotif, nbytes);
    XT_CHECK(s.in_flight == 0, "in_flight %" PRIu64 " after every wait",
             s.in_flight);
    XT_CHECK(s.lat_count == ROUNDS && lat_total(&s) == ROUNDS,
             "latency: %" PRIu64 " timed, %" PRIu64 " in buckets", s.lat_count,
             lat_total(&s));
    /* One backend, one peer: the totals are the same numbers. */
    get_stats(ini, NULL, NULL, &t);
    XT_CHECK(memcmp(&s, &t, sizeof s) == 0, "the agent's totals differ from "
             "its only peer's counters");
    /* The target received what was sent, counted under the sender. */
    get_stats(tgt, be, in, &t);
    XT_CHECK(t.notif_recv == nnotif && t.notif_recv_bytes == nbytes,
             "target: notif_recv %" PRIu64 " (%" PRIu64 " B) of %" PRIu64,
             t.notif_recv, t.notif_recv_bytes, nnotif);
    XT_CHECK(t.write_ops == 0 && t.read_ops == 0, "the target counted posts "
             "it did not make");
}

static void test_counts_exact(void)
{
    counts_exact(SPEC, false);
}

/* The same over uds's shared-memory path (posts that end in the call)
 * and its CMA path. */
static void test_counts_exact_uds(void)
{
    xfer_plugin_info_t *infos = NULL;
    size_t n = 0;
    bool have = false;

    if (xfer_plugin_list(&infos, &n) == XFER_OK)
        for (size_t i = 0; i < n; i++)
            have |= strcmp(infos[i].name, "uds") == 0;
    xfer_plugin_list_free(infos, n);
    if (!have) {
        printf("SKIP: the uds plugin is not built here\n");
        return;
    }
    counts_exact("uds", true);
    counts_exact("uds:mode=cma", false);
}

/* A post refused at once and a transfer the target refuses: each failed
 * once, under its code; nothing counted done. */
static void test_failures(void)
{
    const char *tn = xt_name("tgt");
    xfer_agent_t *ini = xt_agent(xt_name("ini"), SPEC, 1);
    xfer_agent_t *tgt = xt_agent(tn, SPEC, 1);
    unsigned char *lbuf = xt_alloc(4096), *tbuf = xt_alloc(4096);
    xfer_mem_t *tm;
    xfer_req_t *q;
    xfer_status_t st;
    xfer_stats_t s;

    xt_register(ini, lbuf, 4096);
    tm = xt_register(tgt, tbuf, 4096);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    /* The target forgets the region: the WRITE ends ACCESS. */
    XT_STATUS_FATAL(xfer_mem_deregister(tgt, tm), XFER_OK);
    q = xt_post_to(ini, XFER_OP_WRITE, lbuf, 64, (uintptr_t)tbuf, tn, NULL,
                   &st);
    XT_REQUIRE(q != NULL, "create: %s", xfer_last_error());
    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, WAIT_MS);
    XT_STATUS(st, XFER_ERR_ACCESS);
    get_stats(ini, SPEC, tn, &s);
    XT_CHECK(s.failed == 1 && s.errors[-XFER_ERR_ACCESS] == 1 && s.done == 0,
             "after a refused WRITE: failed %" PRIu64 ", ACCESS %" PRIu64
             ", done %" PRIu64, s.failed, s.errors[-XFER_ERR_ACCESS], s.done);
    XT_CHECK(s.write_ops == 1 && s.in_flight == 0, "write_ops %" PRIu64
             " in_flight %" PRIu64, s.write_ops, s.in_flight);
    /* Polling the ended request again counts nothing more. */
    XT_STATUS(xfer_req_status(q), XFER_ERR_ACCESS);
    get_stats(ini, SPEC, tn, &s);
    XT_CHECK(s.failed == 1, "a second look counted the failure again (%"
             PRIu64 ")", s.failed);
    /* The peer invalidated: the post is refused at once. */
    XT_STATUS(xfer_md_invalidate(ini, tn), XFER_OK);
    XT_STATUS(xfer_req_post(q, NULL, 0), XFER_ERR_REMOTE_DISCONNECT);
    get_stats(ini, SPEC, tn, &s);
    XT_CHECK(s.failed == 2 && s.errors[-XFER_ERR_REMOTE_DISCONNECT] == 1,
             "after a refused post: failed %" PRIu64 ", REMOTE_DISCONNECT %"
             PRIu64, s.failed, s.errors[-XFER_ERR_REMOTE_DISCONNECT]);
    /* Counters of a name outlive its invalidation. */
    XT_CHECK(s.write_ops == 1, "write_ops %" PRIu64 " after invalidation",
             s.write_ops);
}

/* Pump the target (it has no progress thread) until q ends. */
static xfer_status_t pump_until_done(xfer_agent_t *tgt, xfer_req_t *q)
{
    uint64_t end = xt_now_ms() + WAIT_MS;
    xfer_status_t st;

    while ((st = xfer_req_status(q)) == XFER_IN_PROG && xt_now_ms() < end)
        xfer_progress(tgt);
    return st;
}

/* WRITEs to a target that does not progress stay in flight; whether
 * cancelled, completed or released under way, each leaves the gauge
 * once, and every accepted post ends up done, failed or forgotten. */
static void test_in_flight(void)
{
    const char *tn = xt_name("tgt");
    xfer_agent_t *ini = xt_agent(xt_name("ini"), SPEC, 1);
    xfer_agent_t *tgt = xt_agent(tn, SPEC, 0);
    unsigned char *lbuf = xt_alloc(TBUF), *tbuf = xt_alloc(TBUF);
    xfer_req_t *small, *big;
    xfer_status_t st1, st2;
    xfer_stats_t s;
    uint64_t ended;

    xt_register(ini, lbuf, TBUF);
    xt_register(tgt, tbuf, TBUF);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    small = xt_post_to(ini, XFER_OP_WRITE, lbuf, 64, (uintptr_t)tbuf, tn,
                       NULL, &st1);
    big = xt_post_to(ini, XFER_OP_WRITE, lbuf + 4096, TBUF - 4096,
                     (uintptr_t)tbuf + 4096, tn, NULL, &st2);
    XT_REQUIRE(small != NULL && big != NULL, "create: %s", xfer_last_error());
    XT_STATUS(st1, XFER_IN_PROG);
    XT_STATUS(st2, XFER_IN_PROG);
    get_stats(ini, NULL, tn, &s);
    XT_CHECK(s.in_flight == 2 && s.write_ops == 2 && s.done == 0,
             "posted to a target that does not progress: in_flight %" PRIu64
             ", write_ops %" PRIu64 ", done %" PRIu64, s.in_flight,
             s.write_ops, s.done);
    /* Cancelled: it ends CANCELED (or OK, if it won the race). */
    st2 = xfer_req_cancel(big);
    XT_CHECK(st2 == XFER_OK || st2 == XFER_IN_PROG, "cancel: %s: %s",
             xt_status_name(st2), xfer_last_error());
    st2 = pump_until_done(tgt, big);
    XT_CHECK(st2 == XFER_ERR_CANCELED || st2 == XFER_OK, "the cancelled "
             "WRITE ended %s", xt_status_name(st2));
    st1 = pump_until_done(tgt, small);
    XT_STATUS(st1, XFER_OK);
    get_stats(ini, NULL, tn, &s);
    XT_CHECK(s.in_flight == 0, "both ended: in_flight %" PRIu64, s.in_flight);
    XT_CHECK(s.done == 1 + (st2 == XFER_OK) &&
                 s.errors[-XFER_ERR_CANCELED] == (st2 != XFER_OK) &&
                 s.failed == (st2 != XFER_OK),
             "done %" PRIu64 ", failed %" PRIu64 ", CANCELED %" PRIu64
             " for one OK and one %s", s.done, s.failed,
             s.errors[-XFER_ERR_CANCELED], xt_status_name(st2));
    /* Released while under way: gone from the gauge, neither done nor
     * failed (or, if the release had to wait, ended as it ended). */
    ended = s.done + s.failed;
    XT_STATUS(xfer_req_post(big, NULL, 0), XFER_IN_PROG);
    if (xt_req_release(big) == XFER_OK) {
        get_stats(ini, NULL, tn, &s);
        XT_CHECK(s.in_flight == 0 && s.done + s.failed == ended,
                 "released under way: in_flight %" PRIu64 ", done + failed "
                 "%" PRIu64 " (was %" PRIu64 ")", s.in_flight,
                 s.done + s.failed, ended);
    } else {
        pump_until_done(tgt, big);
        get_stats(ini, NULL, tn, &s);
        XT_CHECK(s.in_flight == 0 && s.done + s.failed == ended + 1,
                 "ended before release: in_flight %" PRIu64 ", done + "
                 "failed %" PRIu64 " (was %" PRIu64 ")", s.in_flight,
                 s.done + s.failed, ended);
    }
}

/* A request's own timeout, a notification of 0 bytes, a sender whose
 * name is not UTF-8: each counted once, where it belongs, and the JSON
 * document still made. */
static void test_edges(void)
{
    const char *tn = xt_name("tgt");
    char odd[64], *text = NULL, key[80];
    xfer_agent_t *ini, *tgt = xt_agent(tn, SPEC, 0);
    unsigned char *lbuf = xt_alloc(4096), *tbuf = xt_alloc(4096);
    xfer_desc_t l = {(uintptr_t)lbuf, 64, 0}, r = {(uintptr_t)tbuf, 64, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_opts_t ro;
    xfer_req_t *q = NULL;
    xfer_status_t st;
    xfer_stats_t s;
    json_t *doc;

    /* "caf\xe9-...": printable bytes, not UTF-8. */
    snprintf(odd, sizeof odd, "caf\xe9-%s", tn);
    ini = xt_agent(odd, SPEC, 1);
    xt_register(ini, lbuf, 4096);
    xt_register(tgt, tbuf, 4096);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    /* The target does not progress: the request's 300 ms end it. */
    xfer_req_opts_init(&ro);
    ro.timeout_ms = 300;
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tn, &ro,
                                    &q), XFER_OK);
    xt_req_defer(q);
    st = xfer_req_post(q, XFER_NOTIF_NONE, 0);
    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, WAIT_MS);
    XT_STATUS(st, XFER_ERR_TIMEOUT);
    XT_STATUS(xfer_req_status(q), XFER_ERR_TIMEOUT);
    get_stats(ini, SPEC, tn, &s);
    XT_CHECK(s.failed == 1 && s.errors[-XFER_ERR_TIMEOUT] == 1 &&
                 s.in_flight == 0 && s.done == 0,
             "a timed-out WRITE: failed %" PRIu64 ", TIMEOUT %" PRIu64
             ", in_flight %" PRIu64 ", done %" PRIu64, s.failed,
             s.errors[-XFER_ERR_TIMEOUT], s.in_flight, s.done);
    /* Pump the target until the cancel behind the timeout is through,
     * then a WRITE with a notification of 0 bytes. */
    while (xfer_req_post(q, "", 0) == XFER_ERR_BUSY)
        xfer_progress(tgt);
    {
        uint64_t end = xt_now_ms() + WAIT_MS;

        while ((st = xfer_req_status(q)) == XFER_IN_PROG &&
               xt_now_ms() < end)
            xfer_progress(tgt);
    }
    XT_STATUS(st, XFER_OK);
    get_stats(ini, SPEC, tn, &s);
    XT_CHECK(s.notif_sent == 1 && s.notif_sent_bytes == 0,
             "a notification of 0 bytes: notif_sent %" PRIu64 " (%" PRIu64
             " B)", s.notif_sent, s.notif_sent_bytes);
    xt_drain_until(tgt, xt_notifs_new(), 1, WAIT_MS, true);
    get_stats(tgt, SPEC, odd, &s);
    XT_CHECK(s.notif_recv == 1, "the target counted %" PRIu64 " from %s",
             s.notif_recv, odd);
    /* The odd name is a key of the document, its byte escaped. */
    XT_STATUS_FATAL(xfer_stats_json(tgt, &text), XFER_OK);
    doc = json_loads(text, 0, NULL);
    XT_REQUIRE(doc != NULL, "not JSON: %s", text);
    snprintf(key, sizeof key, "caf\\xe9-%s", tn);
    XT_CHECK(json_object_get(json_object_get(doc, "remotes"), key) != NULL,
             "no key '%s' in %s", key, text);
    json_decref(doc);
    xfer_free(text);
}

typedef struct {
    xfer_agent_t *ini;
    const char *tn;
    unsigned char *lbuf, *tbuf;
    unsigned id, bad;
} worker_t;

enum { THREADS = 4, PER_THREAD = 300, SMALL = 64 };

static void *worker(void *arg)
{
    worker_t *w = arg;
    xfer_desc_t l = {(uintptr_t)w->lbuf + w->id * SMALL, SMALL, 0};
    xfer_desc_t r = {(uintptr_t)w->tbuf + w->id * SMALL, SMALL, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *q = NULL;

    if (xfer_req_create(w->ini, XFER_OP_WRITE, &ll, &rl, w->tn, NULL, &q) !=
        XFER_OK) {
        w->bad = PER_THREAD;
        return NULL;
    }
    for (unsigned i = 0; i < PER_THREAD; i++)
        if (xt_post_wait(q, NULL, 0, WAIT_MS) != XFER_OK)
            w->bad++;
    xfer_req_release(q);
    return NULL;
}

/* Threads posting at once to the same peer over the same backend: the
 * relaxed atomic counters lose nothing. */
static void test_threads_exact(void)
{
    const char *tn = xt_name("tgt");
    xfer_agent_t *ini = xt_agent(xt_name("ini"), SPEC, 1);
    xfer_agent_t *tgt = xt_agent(tn, SPEC, 1);
    unsigned char *lbuf = xt_alloc(4096), *tbuf = xt_alloc(4096);
    pthread_t th[THREADS];
    worker_t w[THREADS];
    unsigned bad = 0;
    xfer_stats_t s;

    xt_register(ini, lbuf, 4096);
    xt_register(tgt, tbuf, 4096);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (worker_t){ini, tn, lbuf, tbuf, i, 0};
        XT_REQUIRE(pthread_create(&th[i], NULL, worker, &w[i]) == 0,
                   "pthread_create");
    }
    for (unsigned i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        bad += w[i].bad;
    }
    XT_CHECK(bad == 0, "%u posts failed", bad);
    get_stats(ini, SPEC, NULL, &s);
    XT_CHECK(s.write_ops == THREADS * PER_THREAD &&
             s.write_bytes == (uint64_t)THREADS * PER_THREAD * SMALL &&
             s.done == THREADS * PER_THREAD,
             "%u threads x %u posts: write_ops %" PRIu64 ", bytes %" PRIu64
             ", done %" PRIu64, THREADS, PER_THREAD, s.write_ops,
             s.write_bytes, s.done);
    XT_CHECK(s.in_flight == 0, "in_flight %" PRIu64, s.in_flight);
}

/* Wrong names, no telemetry, short structs: the documented answers. */
static void test_api(void)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = xt_agent(xt_name("api"), SPEC, 0), *off = NULL;
    xfer_stats_t s;
    char *json = NULL;
    unsigned char canary[sizeof s];

    XT_STATUS(xfer_stats_get(a, "nope", NULL, &s, sizeof s),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("has no 'nope' backend");
    XT_STATUS(xfer_stats_get(a, NULL, "stranger", &s, sizeof s),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("keeps no counters for remote agent 'stranger'");
    XT_STATUS(xfer_stats_get(a, NULL, NULL, NULL, sizeof s),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_stats_get(NULL, NULL, NULL, &s, sizeof s),
              XFER_ERR_INVALID);
    /* A caller built against a smaller struct gets only its part. */
    memset(&s, 0xa5, sizeof s);
    memcpy(canary, &s, sizeof s);
    XT_STATUS(xfer_stats_get(a, NULL, NULL, &s, offsetof(xfer_stats_t, descs)),
              XFER_OK);
    XT_CHECK(s.read_ops == 0 && s.write_bytes == 0, "the fields it asked "
             "for were not written");
    XT_CHECK(memcmp((char *)&s + offsetof(xfer_stats_t, descs),
                    canary + offsetof(xfer_stats_t, descs),
                    sizeof s - offsetof(xfer_stats_t, descs)) == 0,
             "bytes past the caller's size were written");

    xfer_agent_opts_init(&o);
    o.name = xt_name("off");
    o.telemetry = 0;
    XT_STATUS_FATAL(xfer_agent_create(&o, &off), XFER_OK);
    XT_STATUS(xfer_stats_get(off, NULL, NULL, &s, sizeof s),
              XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("keeps no counters (created with telemetry 0)");
    XT_STATUS(xfer_stats_json(off, &json), XFER_ERR_NOT_SUPPORTED);
    XT_CHECK(json == NULL, "a JSON document came back with an error");
    xfer_agent_destroy(off);
}

static uint64_t jget(json_t *root, const char *path)
{
    json_t *v = root;
    char buf[256], *save = NULL;

    snprintf(buf, sizeof buf, "%s", path);
    for (char *k = strtok_r(buf, "/", &save); k && v;
         k = strtok_r(NULL, "/", &save))
        v = json_object_get(v, k);
    XT_CHECK(json_is_integer(v), "%s is not an integer in the document",
             path);
    return json_is_integer(v) ? (uint64_t)json_integer_value(v) : 0;
}

/* The JSON document says what xfer_stats_get says. */
static void test_json(void)
{
    const char *tn = xt_name("tgt");
    xfer_agent_t *ini = xt_agent(xt_name("ini"), SPEC, 1);
    xfer_agent_t *tgt = xt_agent(tn, SPEC, 1);
    unsigned char *lbuf = xt_alloc(4096), *tbuf = xt_alloc(4096);
    xfer_req_t *q;
    xfer_status_t st;
    xfer_stats_t s;
    char *text = NULL, path[300];
    json_t *doc;
    json_error_t jerr;

    xt_register(ini, lbuf, 4096);
    xt_register(tgt, tbuf, 4096);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    q = xt_post_to(ini, XFER_OP_WRITE, lbuf, 100, (uintptr_t)tbuf, tn, "j",
                   &st);
    XT_REQUIRE(q != NULL, "create: %s", xfer_last_error());
    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, WAIT_MS);
    XT_STATUS(st, XFER_OK);
    get_stats(ini, SPEC, tn, &s);
    XT_STATUS_FATAL(xfer_stats_json(ini, &text), XFER_OK);
    doc = json_loads(text, 0, &jerr);
    XT_REQUIRE(doc != NULL, "not JSON: %s: %s", jerr.text, text);
    XT_CHECK(jget(doc, "total/write_ops") == 1 &&
                 jget(doc, "total/write_bytes") == 100,
             "total: %s", text);
    XT_CHECK(jget(doc, "backends/" SPEC "/notif_sent") == 1, "backend: %s",
             text);
    snprintf(path, sizeof path, "remotes/%s/" SPEC "/done", tn);
    XT_CHECK(jget(doc, path) == s.done, "remote: %s", text);
    XT_CHECK(json_array_size(json_object_get(json_object_get(doc, "total"),
                                             "lat_us")) ==
                 XFER_STATS_LAT_BUCKETS,
             "lat_us is not an array of %d", XFER_STATS_LAT_BUCKETS);
    json_decref(doc);
    xfer_free(text);
}

/* xfer_stats_fields describes the whole struct, in order, and every
 * field it names is in the JSON document. */
static void test_fields(void)
{
    size_t n = 0, at = 0;
    const xfer_stats_field_t *f = xfer_stats_fields(&n);
    xfer_agent_t *a = xt_agent(xt_name("fields"), SPEC, 0);
    char *text = NULL;
    json_t *doc, *total;

    XT_REQUIRE(f != NULL && n > 0, "no field table");
    XT_STATUS_FATAL(xfer_stats_json(a, &text), XFER_OK);
    doc = json_loads(text, 0, NULL);
    XT_REQUIRE(doc != NULL, "not JSON: %s", text);
    total = json_object_get(doc, "total");
    for (size_t i = 0; i < n; i++) {
        XT_CHECK(f[i].offset == at, "field %s at %zu, expected %zu",
                 f[i].name, f[i].offset, at);
        XT_CHECK(f[i].help != NULL && strlen(f[i].help) > 5,
                 "field %s says nothing", f[i].name);
        XT_CHECK(json_object_get(total, f[i].name) != NULL,
                 "field %s is not in the JSON document", f[i].name);
        at = f[i].offset + f[i].count * sizeof(uint64_t);
    }
    XT_CHECK(at == sizeof(xfer_stats_t), "the table covers %zu of %zu bytes",
             at, sizeof(xfer_stats_t));
    XT_CHECK(json_object_size(total) == n, "the document has %zu fields, the "
             "table %zu", json_object_size(total), n);
    json_decref(doc);
    xfer_free(text);
}

/* Senders of notifications the target never loaded get counters of
 * their own, but the table of names stays within its bound (64 here):
 * the oldest unheld names go, the backend's totals keep everything. */
static void test_name_bound(void)
{
    enum { SENDERS = 70, BOUND = 64 };
    const char *tn = xt_name("tgt");
    xfer_agent_opts_t to;
    xfer_agent_t *tgt = NULL;
    char *blob, *text = NULL;
    xt_notifs_t *got = xt_notifs_new();
    xfer_stats_t s;
    json_t *doc;
    char last[64];

    /* max_remote_agents 8: the table's own floor of 64 names applies. */
    xfer_agent_opts_init(&to);
    to.name = tn;
    to.max_remote_agents = 8;
    XT_STATUS_FATAL(xfer_agent_create(&to, &tgt), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_add(tgt, SPEC, NULL), XFER_OK);
    blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, NULL);
    for (unsigned i = 0; i < SENDERS; i++) {
        xfer_agent_opts_t o;
        xfer_agent_t *a = NULL;

        xfer_agent_opts_init(&o);
        snprintf(last, sizeof last, "%s-s%u", tn, i);
        o.name = last;
        XT_STATUS_FATAL(xfer_agent_create(&o, &a), XFER_OK);
        XT_STATUS_FATAL(xfer_backend_add(a, SPEC, NULL), XFER_OK);
        XT_STATUS_FATAL(xfer_md_load(a, blob, strlen(blob), NULL, 0),
                        XFER_OK);
        XT_STATUS_FATAL(xfer_notif_send(a, tn, "x", 1, NULL), XFER_OK);
        /* Delivered before the sender goes. */
        XT_REQUIRE(xt_drain_until(tgt, got, i + 1, WAIT_MS, false) == i + 1,
                   "notification %u did not arrive", i);
        xfer_agent_destroy(a);
    }
    get_stats(tgt, SPEC, NULL, &s);
    XT_CHECK(s.notif_recv == SENDERS, "backend notif_recv %" PRIu64 " of %d",
             s.notif_recv, SENDERS);
    get_stats(tgt, SPEC, last, &s);
    XT_CHECK(s.notif_recv == 1, "the last sender's notif_recv is %" PRIu64,
             s.notif_recv);
    snprintf(last, sizeof last, "%s-s0", tn);
    XT_STATUS(xfer_stats_get(tgt, NULL, last, &s, sizeof s),
              XFER_ERR_NOT_FOUND);
    XT_STATUS_FATAL(xfer_stats_json(tgt, &text), XFER_OK);
    doc = json_loads(text, 0, NULL);
    XT_REQUIRE(doc != NULL, "not JSON");
    XT_CHECK(json_object_size(json_object_get(doc, "remotes")) == BOUND,
             "the target keeps counters for %zu names, bound %d",
             json_object_size(json_object_get(doc, "remotes")), BOUND);
    json_decref(doc);
    xfer_free(text);
    xfer_agent_destroy(tgt);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_counts_exact),
        XT_TEST(test_counts_exact_uds),
        XT_TEST(test_failures),
        XT_TEST(test_in_flight),
        XT_TEST(test_edges),
        XT_TEST(test_threads_exact),
        XT_TEST(test_api),
        XT_TEST(test_json),
        XT_TEST(test_fields),
        XT_TEST(test_name_bound),
        XT_END,
    };
    static const xt_suite_t suites[] = { { "telemetry", tests } };

    (void)argc;
    return xt_run(argv[0], suites, 1);
}
