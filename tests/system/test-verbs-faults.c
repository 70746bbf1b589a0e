/* test-verbs-faults.c - the verbs plugin under faults and load, over the
 * emulated device (the plugin vbfake and the hooks of fakeverbs.h).
 *
 * Queue pairs failing mid-stream, posts refused part way, a cut link,
 * notification bursts against a small window, small queues under two
 * threads, striping over two rails, timeouts, memory and peers going with
 * work in flight, a target out of queue pairs.  Every test asserts exact
 * behaviour (status and sentence, bytes, the device's counters) and every
 * wait is bounded; no verdict comes from speed.  The emulation lives in
 * one process, so every agent does; each agent gets a device of its own
 * (fake0 ..), so that a connection is known by its two ends' devices.
 * Work is kept in flight deterministically by holding a queue pair
 * (fakeverbs_hold), never by racing the NIC. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <inttypes.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <infiniband/verbs.h>

#include "tests/common/xt.h"
#include "tests/plugins/fakeverbs.h"

/* Any wait: far beyond what anything takes, even under valgrind; only a
 * hang reaches it. */
#define WAIT_MS 30000u
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* ---- the device's hooks -------------------------------------------------- */

static struct {
    void *dl;
    __typeof__(fakeverbs_stats) *stats;
    __typeof__(fakeverbs_reset_stats) *reset_stats;
    __typeof__(fakeverbs_qp_error) *qp_error;
    __typeof__(fakeverbs_fail_post_after) *fail_post_after;
    __typeof__(fakeverbs_cut) *cut;
    __typeof__(fakeverbs_qps) *qps;
    __typeof__(fakeverbs_hold) *hold;
    __typeof__(fakeverbs_release_on_dereg) *release_on_dereg;
    __typeof__(fakeverbs_set_delay_us) *set_delay_us;
    __typeof__(fakeverbs_async) *async;
} fv;

static int find_vbfake(struct dl_phdr_info *info, size_t size, void *arg)
{
    static const char tail[] = "/xfer_vbfake.so";
    size_t n = strlen(info->dlpi_name), k = sizeof tail - 1;

    (void)size;
    if (n < k || strcmp(info->dlpi_name + n - k, tail) != 0)
        return 0;
    snprintf(arg, 4096, "%s", info->dlpi_name);
    return 1;
}

static void hooks_close(void *arg)
{
    (void)arg;
    if (fv.dl)
        dlclose(fv.dl);
    memset(&fv, 0, sizeof fv);
}

/* A fault a test injected is undone when it ends, failed or not (the
 * device outlives the test where plugins stay loaded). */
static void fault_undo(void *arg)
{
    (void)arg;
    if (fv.cut && fv.set_delay_us) {
        fv.cut(false);
        fv.set_delay_us(0);
    }
}

/* The hooks of the plugin an agent loaded.  The reference taken here
 * keeps the device, and its counters, until the test's end, after its
 * agents are gone; the next test starts on a fresh one. */
static void hooks(void)
{
    char path[4096] = "";

    if (fv.dl)
        return;
    dl_iterate_phdr(find_vbfake, path);
    XT_REQUIRE(path[0], "xfer_vbfake.so is not loaded: no agent of this "
               "test has the vbfake backend");
    fv.dl = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    XT_REQUIRE(fv.dl, "dlopen(%s, RTLD_NOLOAD): %s", path, dlerror());
    xt_defer_late(hooks_close, NULL);
    xt_defer_late(fault_undo, NULL);
#define HOOK(f)                                                             \
    XT_REQUIRE((*(void **)&fv.f = dlsym(fv.dl, "fakeverbs_" #f)) != NULL,  \
               "%s has no fakeverbs_" #f, path)
    HOOK(stats);
    HOOK(reset_stats);
    HOOK(qp_error);
    HOOK(fail_post_after);
    HOOK(cut);
    HOOK(qps);
    HOOK(hold);
    HOOK(release_on_dereg);
    HOOK(set_delay_us);
    HOOK(async);
#undef HOOK
}

static struct fakeverbs_stats dev_stats(void)
{
    struct fakeverbs_stats s;

    fv.stats(&s);
    return s;
}

/* The initiator's queue pair from device `from` to a target on device
 * `to`, in RTS (an initiator's has a send queue of sq_depth >= 4 work
 * requests, a target's of 1). */
static uint32_t ini_qp(int from, int to)
{
    struct fakeverbs_qp_info q[64];
    unsigned n = fv.qps(q, 64), found = 0;
    uint32_t qpn = 0;

    for (unsigned i = 0; i < n && i < 64; i++) {
        if (q[i].dev == from && q[i].dest_dev == to &&
            q[i].max_send_wr > 1 && q[i].state == IBV_QPS_RTS) {
            qpn = q[i].qpn;
            found++;
        }
    }
    XT_REQUIRE(found == 1, "%u queue pairs from fake%d to fake%d in RTS "
               "(of %u live), want 1", found, from, to, n);
    return qpn;
}

static struct fakeverbs_qp_info qp_info(uint32_t qpn)
{
    struct fakeverbs_qp_info q[64];
    unsigned n = fv.qps(q, 64);

    for (unsigned i = 0; i < n && i < 64; i++)
        if (q[i].qpn == qpn)
            return q[i];
    XT_FAIL_FATAL("no live queue pair %u", qpn);
}

/* Whether a QP of that number lives. */
static bool qp_live(uint32_t qpn)
{
    struct fakeverbs_qp_info q[64];
    unsigned n = fv.qps(q, 64);

    for (unsigned i = 0; i < n && i < 64; i++)
        if (q[i].qpn == qpn)
            return true;
    return false;
}

/* Live queue pairs on device dev. */
static unsigned qps_on(int dev)
{
    struct fakeverbs_qp_info q[64];
    unsigned n = fv.qps(q, 64), k = 0;

    for (unsigned i = 0; i < n && i < 64; i++)
        k += q[i].dev == dev;
    return k;
}

/* ---- the environment the device reads at get_device_list ---------------- */

static void env_unset(void *name)
{
    unsetenv(name);
}

/* Set for the agents this test makes next; unset after the test. */
static void env_set(const char *name, const char *value)
{
    setenv(name, value, 1);
    xt_defer_late(env_unset, (void *)name);
}

/* ---- agents, requests, waits ------------------------------------------------ */

static uint64_t begin(const char *what)
{
    uint64_t seed = xt_seed();

    printf("\n  %s: seed %" PRIu64 "\n", what, seed);
    fflush(stdout);
    return seed;
}

static xfer_agent_t *agent(const char *role, const char *spec)
{
    xfer_agent_t *a = xt_agent(xt_name(role), spec, 1);

    hooks();
    return a;
}

static const char *name_of(xfer_agent_t *a)
{
    return xfer_agent_name(a);
}

/* ini learns tgt's metadata (its regions registered by now) and makes
 * its connection to it. */
static void connect_to(xfer_agent_t *ini, xfer_agent_t *tgt)
{
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    XT_STATUS_FATAL(xfer_md_connect(ini, name_of(tgt), WAIT_MS), XFER_OK);
}

/* Requests of this test, released before its agents go (finish()). */
static xfer_req_t *reqs[1024];
static size_t nreqs;

static void reqs_forget(void *arg)
{
    (void)arg;
    nreqs = 0;
}

static xfer_req_t *mkreq(xfer_agent_t *ini, xfer_op_t op,
                         const xfer_desc_t *l, const xfer_desc_t *r,
                         size_t n, xfer_agent_t *tgt)
{
    xfer_dlist_t ll = {XFER_MEM_DRAM, n, l}, rl = {XFER_MEM_DRAM, n, r};
    xfer_req_t *q = NULL;

    XT_REQUIRE(nreqs < sizeof reqs / sizeof reqs[0], "too many requests");
    XT_STATUS_FATAL(xfer_req_create(ini, op, &ll, &rl, name_of(tgt), NULL,
                                    &q), XFER_OK);
    if (nreqs == 0)
        xt_defer_late(reqs_forget, NULL);
    xt_req_defer(q);
    reqs[nreqs++] = q;
    return q;
}

/* Take a request off this test's list. */
static void req_unlist(xfer_req_t *q)
{
    for (size_t i = 0; i < nreqs; i++) {
        if (reqs[i] == q) {
            reqs[i] = reqs[--nreqs];
            return;
        }
    }
    XT_FAIL("request %p is not this test's", (void *)q);
}

/* Release a request of this test now. */
static void req_drop(xfer_req_t *q)
{
    req_unlist(q);
    XT_STATUS(xt_req_release(q), XFER_OK);
}

/* One descriptor each side, at offsets into local and remote memory. */
static xfer_req_t *mkreq1(xfer_agent_t *ini, xfer_op_t op, void *local,
                          void *remote, size_t len, xfer_agent_t *tgt)
{
    xfer_desc_t l = {(uintptr_t)local, len, 0};
    xfer_desc_t r = {(uintptr_t)remote, len, 0};

    return mkreq(ini, op, &l, &r, 1, tgt);
}

/* ini (device 0) connects to tgt (device 1) and posts an `op` of len
 * bytes from local to remote on its QP, held first: the request stays
 * on the wire until the test lets the QP go.  *qpn: that QP. */
static xfer_req_t *post_held(xfer_agent_t *ini, xfer_agent_t *tgt,
                             xfer_op_t op, void *local, void *remote,
                             size_t len, uint32_t *qpn)
{
    xfer_req_t *q;

    connect_to(ini, tgt);
    *qpn = ini_qp(0, 1);
    q = mkreq1(ini, op, local, remote, len, tgt);
    XT_REQUIRE(fv.hold(*qpn, true) == 0, "hold");
    XT_STATUS(xfer_req_post(q, NULL, 0), XFER_IN_PROG);
    return q;
}

/* The sentence of the last final status seen (wait_end, post_end). */
static char why[2048];

/* The final status of a posted request, its sentence in why.  A request
 * still in progress after WAIT_MS hangs: fatal. */
static xfer_status_t wait_end(xfer_req_t *q)
{
    uint64_t end = xt_now_ms() + WAIT_MS;

    for (;;) {
        xfer_status_t st = xfer_req_wait(q, 100);

        if (st != XFER_IN_PROG) {
            snprintf(why, sizeof why, "%s", st < 0 ? xfer_last_error() : "");
            return st;
        }
        if (xt_now_ms() > end)
            XT_FAIL_FATAL("a request is still in progress after %u ms: it "
                          "hangs", WAIT_MS);
    }
}

static xfer_status_t post_end(xfer_req_t *q, const void *notif, size_t len)
{
    xfer_status_t st = xfer_req_post(q, notif, len);

    if (st == XFER_IN_PROG)
        return wait_end(q);
    snprintf(why, sizeof why, "%s", st < 0 ? xfer_last_error() : "");
    return st;
}

/* Whether why holds every word (NULL ends them). */
#define WHY_HAS(...) why_has_at(__FILE__, __LINE__, __VA_ARGS__, NULL)
static bool why_has_at(const char *file, unsigned line, ...)
{
    va_list ap;
    const char *w;
    bool ok = true;

    va_start(ap, line);
    while ((w = va_arg(ap, const char *)) != NULL) {
        if (strstr(why, w) == NULL) {
            xt_fail_at(file, line, 0, "the sentence '%s' lacks '%s'", why,
                       w);
            ok = false;
        }
    }
    va_end(ap);
    if (ok)
        xt_pass_at(file, line, "sentence");
    return ok;
}

/* What xfer_backend_state says of the vbfake backend. */
typedef struct vstate {
    unsigned qps, from_ini;
    unsigned long wrs, chains, qp_errors, remade, sent, recv, dropped;
    char line[1024];
} vstate_t;

static vstate_t vstate(xfer_agent_t *a)
{
    vstate_t s;
    xfer_backend_t *b = NULL;
    const char *p;

    memset(&s, 0, sizeof s);
    XT_STATUS_FATAL(xfer_backend_find(a, "vbfake", &b), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_state(b, s.line, sizeof s.line), XFER_OK);
    p = strstr(s.line, "QPs ");
    XT_REQUIRE(p && sscanf(p, "QPs %u per rail, %u from initiators; %lu "
                           "WRs in %lu chains, %lu QP errors, %lu "
                           "reconnects; notifications %lu sent, %lu "
                           "received, %lu dropped", &s.qps, &s.from_ini,
                           &s.wrs, &s.chains,
                           &s.qp_errors, &s.remade, &s.sent, &s.recv,
                           &s.dropped) == 9,
               "the state of %s does not say its counters: '%s'",
               name_of(a), s.line);
    return s;
}

/* The agents go, with everything they had on the device: nothing of it
 * may be left (an object leaked, a CQ overrun on the way). */
static void finish(xfer_agent_t *const *agents, size_t n)
{
    struct fakeverbs_stats s;

    for (size_t i = 0; i < nreqs; i++)
        XT_STATUS(xt_req_release(reqs[i]), XFER_OK);
    nreqs = 0;
    for (size_t i = 0; i < n; i++)
        xt_agent_destroy(agents[i]);
    s = dev_stats();
    XT_CHECK(s.live_qps == 0 && s.live_mrs == 0 && s.live_cqs == 0 &&
             s.live_pds == 0 && s.live_channels == 0 &&
             s.live_contexts == 0, "the agents left objects on the device: "
             "%" PRIu64 " QPs, %" PRIu64 " MRs, %" PRIu64 " CQs, %" PRIu64
             " PDs, %" PRIu64 " channels, %" PRIu64 " contexts", s.live_qps,
             s.live_mrs, s.live_cqs, s.live_pds, s.live_channels,
             s.live_contexts);
    XT_CHECK(s.cq_overruns == 0, "%" PRIu64 " CQ overruns", s.cq_overruns);
}

/* Memory mapped for the test alone: munmap'ed on purpose, after which
 * any access by the emulated NIC faults at once. */
static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    XT_REQUIRE(p != MAP_FAILED, "mmap of %zu bytes failed", len);
    return p;
}

/* ---- a bystander stream --------------------------------------------------- */

/* WRITEs of one slot at a time to a target, each checked byte for byte
 * at the target, until told to stop: traffic that a fault elsewhere must
 * not disturb.  Its requests are made by the main thread (the test
 * helpers are not thread-safe). */
#define BY_SLOTS 4u
#define BY_LEN (64 * KiB)

typedef struct bystander {
    xfer_req_t *req[BY_SLOTS];
    unsigned char *src, *dst;
    uint64_t seed;
    atomic_bool stop;
    atomic_uint done;
    char err[1024];
    pthread_t th;
    bool running;       /* the thread is to be joined */
} bystander_t;

static void *by_main(void *arg)
{
    bystander_t *b = arg;

    for (unsigned i = 0; !atomic_load(&b->stop); i++) {
        unsigned k = i % BY_SLOTS;
        size_t off = (size_t)k * BY_LEN;
        uint64_t end = xt_now_ms() + WAIT_MS;
        xfer_status_t st;
        long bad;

        xt_fill(b->src + off, BY_LEN, b->seed + i);
        st = xfer_req_post(b->req[k], NULL, 0);
        while (st == XFER_IN_PROG && xt_now_ms() < end)
            st = xfer_req_wait(b->req[k], 100);
        if (st != XFER_OK) {
            snprintf(b->err, sizeof b->err, "bystander transfer %u: %s: %s",
                     i, xt_status_name(st), st == XFER_IN_PROG ? "hangs"
                                                              : xfer_last_error());
            return NULL;
        }
        bad = xt_check(b->dst + off, BY_LEN, b->seed + i);
        if (bad >= 0) {
            snprintf(b->err, sizeof b->err, "bystander transfer %u: byte "
                     "%ld differs at the target", i, bad);
            return NULL;
        }
        atomic_fetch_add(&b->done, 1);
    }
    return NULL;
}

/* The thread ends before the agents it uses go, also when the test
 * ends early on a fatal assertion (early cleanups run last-in first). */
static void by_join(void *arg)
{
    bystander_t *b = arg;

    if (!b->running)
        return;
    atomic_store(&b->stop, true);
    pthread_join(b->th, NULL);
    b->running = false;
}

static void by_start(bystander_t *b, xfer_agent_t *ini, xfer_agent_t *tgt,
                     uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->src = xt_alloc(BY_SLOTS * BY_LEN);
    b->dst = xt_alloc(BY_SLOTS * BY_LEN);
    xt_register(ini, b->src, BY_SLOTS * BY_LEN);
    xt_register(tgt, b->dst, BY_SLOTS * BY_LEN);
    connect_to(ini, tgt);
    for (unsigned k = 0; k < BY_SLOTS; k++)
        b->req[k] = mkreq1(ini, XFER_OP_WRITE, b->src + k * BY_LEN,
                           b->dst + k * BY_LEN, BY_LEN, tgt);
    b->seed = seed;
    XT_REQUIRE(pthread_create(&b->th, NULL, by_main, b) == 0,
               "pthread_create");
    b->running = true;
    xt_defer(by_join, b);
}

/* Wait until the bystander completed `more` transfers beyond `from`
 * (bounded), then stop it: it must have seen no error. */
static void by_stop(bystander_t *b, unsigned from, unsigned more)
{
    uint64_t end = xt_now_ms() + WAIT_MS;

    while (atomic_load(&b->done) < from + more && !b->err[0] &&
           xt_now_ms() < end)
        xt_sleep_ms(1);
    by_join(b);
    XT_CHECK(b->err[0] == '\0', "%s", b->err);
    XT_CHECK(atomic_load(&b->done) >= from + more, "the bystander made %u "
             "transfers, %u of them after the fault; want %u after",
             atomic_load(&b->done), atomic_load(&b->done) - from, more);
}

/* ---- 1. a queue pair in error mid-stream ---------------------------------- */

/* Request i moves NSEG segments of SEG bytes, each followed by a gap, so
 * that every segment is a work request of its own. */
#define S1_REQS 10u
#define S1_SEGS 4u
#define S1_SEG (128 * KiB)
#define S1_STRIDE (S1_SEG + 4 * KiB)
#define S1_AREA (S1_SEGS * S1_STRIDE)

static xfer_req_t *s1_req(xfer_agent_t *ini, xfer_op_t op, unsigned char *l,
                          unsigned char *r, unsigned i, xfer_agent_t *tgt)
{
    xfer_desc_t ld[S1_SEGS], rd[S1_SEGS];

    for (unsigned k = 0; k < S1_SEGS; k++) {
        size_t off = (size_t)i * S1_AREA + (size_t)k * S1_STRIDE;

        ld[k] = (xfer_desc_t){(uintptr_t)(l + off), S1_SEG, 0};
        rd[k] = (xfer_desc_t){(uintptr_t)(r + off), S1_SEG, 0};
    }
    return mkreq(ini, op, ld, rd, S1_SEGS, tgt);
}

/* Request i's segments at dst hold the pattern (of the source's bytes). */
static long s1_check(const unsigned char *dst, unsigned i, uint64_t seed)
{
    for (unsigned k = 0; k < S1_SEGS; k++) {
        size_t off = (size_t)i * S1_AREA + (size_t)k * S1_STRIDE;
        long bad = xt_check_at(dst + off, S1_SEG, seed, off);

        if (bad >= 0)
            return (long)off + bad;
    }
    return -1;
}

static void s1_zero(unsigned char *dst, unsigned i)
{
    memset(dst + (size_t)i * S1_AREA, 0, S1_AREA);
}

static void qp_error_stream(xfer_op_t op)
{
    uint64_t seed = begin(op == XFER_OP_WRITE ? "WRITEs" : "READs");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    xfer_agent_t *by = agent("by", "vbfake:device=fake2");
    size_t len = S1_REQS * S1_AREA;
    unsigned char *loc = xt_alloc(len), *rem = xt_alloc(len);
    unsigned char *src = op == XFER_OP_WRITE ? loc : rem;
    unsigned char *dst = op == XFER_OP_WRITE ? rem : loc;
    xfer_req_t *q[S1_REQS];
    xfer_status_t st[S1_REQS];
    bystander_t *b = xt_alloc(sizeof *b); /* outlives the test's frame */
    uint32_t qpn;
    unsigned at_error, failed = 0;
    vstate_t vs;

    xt_fill_at(src, len, seed, 0);
    xt_register(ini, loc, len);
    xt_register(tgt, rem, len);
    connect_to(ini, tgt);
    for (unsigned i = 0; i < S1_REQS; i++)
        q[i] = s1_req(ini, op, loc, rem, i, tgt);
    by_start(b, ini, by, seed ^ 0x5a5a);

    /* The stream: the first four go as they may; then the path holds and
     * the rest are certainly on the queue pair when it fails. */
    qpn = ini_qp(0, 1);
    for (unsigned i = 0; i < 4; i++) {
        st[i] = xfer_req_post(q[i], NULL, 0);
        XT_CHECK(st[i] == XFER_IN_PROG || st[i] == XFER_OK, "post %u: %s: "
                 "%s", i, xt_status_name(st[i]), xfer_last_error());
    }
    XT_REQUIRE(fv.hold(qpn, true) == 0, "hold QP %u", qpn);
    for (unsigned i = 4; i < S1_REQS; i++)
        XT_STATUS(xfer_req_post(q[i], NULL, 0), XFER_IN_PROG);
    XT_CHECK(qp_info(qpn).sq_queued >= (S1_REQS - 4) * S1_SEGS,
             "%" PRIu64 " work requests queued on the held QP, want at "
             "least %u", qp_info(qpn).sq_queued, (S1_REQS - 4) * S1_SEGS);
    at_error = atomic_load(&b->done);
    XT_REQUIRE(fv.qp_error(qpn) == 0, "fakeverbs_qp_error(%u)", qpn);

    /* Every request ends: with its data, or failed with the HCA's words. */
    for (unsigned i = 0; i < S1_REQS; i++) {
        st[i] = wait_end(q[i]);
        if (i < 4 && st[i] == XFER_OK) {
            long bad = s1_check(dst, i, seed);

            XT_CHECK(bad < 0, "request %u: byte %ld differs", i, bad);
            continue;
        }
        failed++;
        XT_STATUS(st[i], XFER_ERR_REMOTE_DISCONNECT);
        WHY_HAS(name_of(tgt), "transport retry counter exceeded", "fake0");
    }
    XT_CHECK(failed >= S1_REQS - 4, "%u requests failed, want at least %u",
             failed, S1_REQS - 4);
    /* The bystander of the same agent went on meanwhile. */
    by_stop(b, at_error, 3);

    /* The connection is remade: every failed request again, whole. */
    for (unsigned i = 0; i < S1_REQS; i++) {
        long bad;

        if (st[i] == XFER_OK)
            continue;
        s1_zero(dst, i);
        XT_STATUS(post_end(q[i], NULL, 0), XFER_OK);
        bad = s1_check(dst, i, seed);
        XT_CHECK(bad < 0, "request %u again: byte %ld differs", i, bad);
    }
    XT_CHECK(ini_qp(0, 1) != qpn, "the failed QP %u is still the "
             "connection's", qpn);
    vs = vstate(ini);
    XT_CHECK(vs.remade >= 1 && vs.qp_errors >= 1, "state: '%s' (want a QP "
             "error and a connection remade)", vs.line);
    finish((xfer_agent_t *[]){ini, tgt, by}, 3);
}

static void test_qp_error_writes(void)
{
    qp_error_stream(XFER_OP_WRITE);
}

static void test_qp_error_reads(void)
{
    qp_error_stream(XFER_OP_READ);
}

/* Notifications on the failing queue pair: the SENDs behind the held
 * WRITEs are flushed with them (their transfers failed: they must never
 * arrive), and what is sent after the connection is remade arrives, in
 * order, exactly once.  (A short timeout_ms and drain: where the
 * sessions stall, the test fails in seconds rather than minutes; the
 * traffic itself takes milliseconds.) */
static void test_qp_error_notifs(void)
{
    uint64_t seed = begin("QP error with notifications");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,timeout_ms=3000");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    unsigned char *l = xt_alloc(4 * 64 * KiB), *r = xt_alloc(4 * 64 * KiB);
    xt_notifs_t *got = xt_notifs_new();
    static const char *const want[] = {"before", "new-0", "new-1", "new-2"};
    xfer_req_t *q[3];
    char msg[32];
    uint32_t qpn;

    xt_fill(l, 4 * 64 * KiB, seed);
    xt_register(ini, l, 4 * 64 * KiB);
    xt_register(tgt, r, 4 * 64 * KiB);
    connect_to(ini, tgt);
    for (unsigned i = 0; i < 3; i++)
        q[i] = mkreq1(ini, XFER_OP_WRITE, l + i * 64 * KiB, r + i * 64 * KiB,
                      64 * KiB, tgt);
    XT_STATUS(xfer_notif_send(ini, name_of(tgt), "before", 6, NULL),
              XFER_OK);
    XT_REQUIRE(xt_drain_until(tgt, got, 1, WAIT_MS, false) == 1,
               "the first notification did not arrive");
    qpn = ini_qp(0, 1);
    XT_REQUIRE(fv.hold(qpn, true) == 0, "hold");
    for (unsigned i = 0; i < 3; i++) {
        snprintf(msg, sizeof msg, "old-%u", i);
        XT_STATUS(xfer_req_post(q[i], msg, strlen(msg)), XFER_IN_PROG);
    }
    XT_REQUIRE(fv.qp_error(qpn) == 0, "fakeverbs_qp_error(%u)", qpn);
    for (unsigned i = 0; i < 3; i++) {
        XT_STATUS(wait_end(q[i]), XFER_ERR_REMOTE_DISCONNECT);
        WHY_HAS("transport retry counter exceeded");
    }
    /* Again, on a new connection: with their data, and alone. */
    memset(r, 0, 4 * 64 * KiB);
    XT_STATUS(post_end(q[0], "new-0", 5), XFER_OK);
    XT_STATUS(xfer_notif_send(ini, name_of(tgt), "new-1", 5, NULL), XFER_OK);
    XT_STATUS(post_end(q[1], "new-2", 5), XFER_OK);
    XT_CHECK(xt_check(r, 2 * 64 * KiB, seed) < 0, "bytes differ");
    xt_drain_until(tgt, got, 4, 10000, false);
    XT_CHECK(got->count == 4, "%zu notifications arrived, want 4 (the "
             "first, then the three sent after the connection was remade); "
             "initiator: '%s'; target: '%s'", got->count, vstate(ini).line,
             vstate(tgt).line);
    for (unsigned i = 0; i < got->count && i < 4; i++)
        XT_CHECK(got->items[i].len == strlen(want[i]) &&
                 memcmp(got->items[i].msg, want[i], strlen(want[i])) == 0,
                 "notification %u is '%s', want '%s'", i,
                 (const char *)got->items[i].msg, want[i]);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* ---- 2. a post refused part way --------------------------------------------- */

/* Segments of 4 KiB, 8 KiB apart: each a work request.  A has 4, B 40,
 * C 8: with sq_depth 8 and chain_max 3, B goes in several chains, some
 * of them from completions (the progress thread). */
#define S2_SEG (4 * KiB)
#define S2_STRIDE (8 * KiB)
#define S2_NA 4u
#define S2_NB 40u
#define S2_NC 8u

static xfer_req_t *s2_req(xfer_agent_t *ini, unsigned char *l,
                          unsigned char *r, unsigned first, unsigned n,
                          xfer_agent_t *tgt)
{
    xfer_desc_t ld[S2_NB], rd[S2_NB];

    for (unsigned k = 0; k < n; k++) {
        size_t off = (size_t)(first + k) * S2_STRIDE;

        ld[k] = (xfer_desc_t){(uintptr_t)(l + off), S2_SEG, 0};
        rd[k] = (xfer_desc_t){(uintptr_t)(r + off), S2_SEG, 0};
    }
    return mkreq(ini, XFER_OP_WRITE, ld, rd, n, tgt);
}

static long s2_check(const unsigned char *r, unsigned first, unsigned n,
                     uint64_t seed)
{
    for (unsigned k = 0; k < n; k++) {
        size_t off = (size_t)(first + k) * S2_STRIDE;
        long bad = xt_check_at(r + off, S2_SEG, seed, off);

        if (bad >= 0)
            return (long)off + bad;
    }
    return -1;
}

/* The device refuses the (after+1)-th work request queued from now: it
 * is B's descriptor `desc` (A's 4 go first). */
static void post_refused(unsigned after, unsigned desc)
{
    uint64_t seed = begin("refused post");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,sq_depth=8,"
                                     "chain_max=3");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    size_t len = (S2_NA + S2_NB + S2_NC) * S2_STRIDE;
    unsigned char *l = xt_alloc(len), *r = xt_alloc(len);
    static const unsigned first[3] = {0, S2_NA, S2_NA + S2_NB};
    static const unsigned count[3] = {S2_NA, S2_NB, S2_NC};
    xfer_req_t *q[3];
    xfer_status_t st[3];
    char want[128];

    xt_fill_at(l, len, seed, 0);
    xt_register(ini, l, len);
    xt_register(tgt, r, len);
    connect_to(ini, tgt);
    for (unsigned i = 0; i < 3; i++)
        q[i] = s2_req(ini, l, r, first[i], count[i], tgt);
    fv.fail_post_after(after);
    for (unsigned i = 0; i < 3; i++) {
        st[i] = xfer_req_post(q[i], NULL, 0);
        if (i == 1 && st[i] == XFER_ERR_BACKEND) /* refused in the call */
            snprintf(why, sizeof why, "%s", xfer_last_error());
        XT_CHECK(st[i] == XFER_IN_PROG || st[i] == XFER_OK ||
                 (i == 1 && st[i] == XFER_ERR_BACKEND),
                 "post %u: %s: %s", i, xt_status_name(st[i]),
                 xfer_last_error());
    }
    /* B fails with the device's refusal, naming its descriptor (the
     * sentence comes with the first answer that tells the failure). */
    snprintf(want, sizeof want, "refused descriptor %u: ", desc);
    if (st[1] != XFER_ERR_BACKEND)
        st[1] = wait_end(q[1]);
    XT_STATUS(st[1], XFER_ERR_BACKEND);
    WHY_HAS("ibv_post_send on fake0", want, "Cannot allocate memory",
            name_of(tgt));
    /* The others end: with their data, or with the connection. */
    for (unsigned i = 0; i < 3; i += 2) {
        st[i] = wait_end(q[i]);
        if (st[i] == XFER_OK) {
            long bad = s2_check(r, first[i], count[i], seed);

            XT_CHECK(bad < 0, "request %u: byte %ld differs", i, bad);
        } else {
            XT_STATUS(st[i], XFER_ERR_REMOTE_DISCONNECT);
            WHY_HAS("ibv_post_send on fake0", want);
        }
    }
    /* The next posts succeed, byte for byte. */
    for (unsigned i = 0; i < 3; i++) {
        long bad;

        if (i != 1 && st[i] == XFER_OK)
            continue;
        memset(r + (size_t)first[i] * S2_STRIDE, 0,
               (size_t)count[i] * S2_STRIDE);
        XT_STATUS(post_end(q[i], NULL, 0), XFER_OK);
        bad = s2_check(r, first[i], count[i], seed);
        XT_CHECK(bad < 0, "request %u again: byte %ld differs", i, bad);
    }
    XT_CHECK(vstate(ini).remade >= 1, "state: '%s'", vstate(ini).line);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* The first work request of a chain refused (nothing of it queued). */
static void test_post_refused_chain_head(void)
{
    post_refused(S2_NA + 3, 3);
}

/* One inside a chain (the ones before it queued, unsignaled). */
static void test_post_refused_mid_chain(void)
{
    post_refused(S2_NA + 5, 5);
}

/* ---- 3. the link cut ------------------------------------------------------------ */

#define S3_RETRY_MS 300u

static void test_link_cut(void)
{
    uint64_t seed = begin("link cut");
    xfer_agent_t *ini, *tgt;
    size_t len = 4 * 256 * KiB;
    unsigned char *l = xt_alloc(len), *r = xt_alloc(len);
    xfer_req_t *q[4];
    uint64_t t0;

    env_set("XFER_FAKEVERBS_RETRY_MS", "300");
    ini = agent("ini", "vbfake:device=fake0");
    tgt = agent("tgt", "vbfake:device=fake1");
    xt_fill_at(l, len, seed, 0);
    xt_fill_at(r, len, seed, 0);
    xt_register(ini, l, len);
    xt_register(tgt, r, len);
    connect_to(ini, tgt);
    for (unsigned i = 0; i < 4; i++)
        q[i] = mkreq1(ini, i == 3 ? XFER_OP_READ : XFER_OP_WRITE,
                      l + i * 256 * KiB, r + i * 256 * KiB, 256 * KiB, tgt);
    XT_STATUS(post_end(q[0], NULL, 0), XFER_OK);

    fv.cut(true);
    t0 = xt_now_ms();
    for (unsigned i = 0; i < 4; i++)
        XT_STATUS(xfer_req_post(q[i], NULL, 0), XFER_IN_PROG);
    for (unsigned i = 0; i < 4; i++) {
        XT_STATUS(wait_end(q[i]), XFER_ERR_REMOTE_DISCONNECT);
        WHY_HAS(name_of(tgt), "transport retry counter exceeded");
    }
    /* Not before the NIC's retries ran out (a lower bound the device
     * guarantees; the upper one is only WAIT_MS). */
    XT_CHECK(xt_now_ms() - t0 >= S3_RETRY_MS, "failed after %" PRIu64
             " ms, before XFER_FAKEVERBS_RETRY_MS (%u)", xt_now_ms() - t0,
             S3_RETRY_MS);
    fv.cut(false);
    memset(r, 0, 3 * 256 * KiB);
    memset(l + 3 * 256 * KiB, 0, 256 * KiB);
    for (unsigned i = 0; i < 4; i++) {
        long bad;

        XT_STATUS(post_end(q[i], NULL, 0), XFER_OK);
        bad = i == 3 ? xt_check_at(l + i * 256 * KiB, 256 * KiB, seed,
                                   i * 256 * KiB)
                     : xt_check_at(r + i * 256 * KiB, 256 * KiB, seed,
                                   i * 256 * KiB);
        XT_CHECK(bad < 0, "transfer %u after the cut: byte %ld differs", i,
                 bad);
    }
    XT_CHECK(vstate(ini).remade >= 1, "state: '%s'", vstate(ini).line);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* ---- 4. notifications in bursts ------------------------------------------------- */

#define S4_WINDOW 4u
#define S4_N (50u * S4_WINDOW)

/* The expected message i of a burst: its tag, then pattern bytes. */
static size_t s4_msg(char *buf, size_t cap, const char *tag, unsigned i,
                     size_t plen, uint64_t seed)
{
    int n = snprintf(buf, cap, "%s-%u:", tag, i);

    XT_REQUIRE(n > 0 && (size_t)n + plen <= cap, "message too long");
    xt_fill(buf + n, plen, seed + i);
    return (size_t)n + plen;
}

/* What a delivery must be: the message, from whom. */
typedef struct s4_exp {
    char *msg;
    size_t len;
} s4_exp_t;

/* The notifications delivered are exactly exp[0..n), in order. */
static void s4_check(const xt_notifs_t *got, const s4_exp_t *exp, size_t n,
                     const char *from)
{
    XT_CHECK(got->count == n, "%zu notifications delivered, want %zu",
             got->count, n);
    for (size_t i = 0; i < got->count && i < n; i++) {
        const xt_notif_t *m = &got->items[i];

        if (m->len != exp[i].len || memcmp(m->msg, exp[i].msg, m->len) != 0 ||
            strcmp(m->from, from) != 0) {
            XT_FAIL("notification %zu: %zu bytes '%.24s' from '%s', want "
                    "%zu bytes '%.24s' from '%s'", i, m->len,
                    (const char *)m->msg, m->from, exp[i].len, exp[i].msg,
                    from);
            return;
        }
    }
}

static void s4_no_rnr(const char *when)
{
    struct fakeverbs_stats s = dev_stats();

    XT_CHECK(s.rnr_events == 0 && s.cq_overruns == 0, "%s: %" PRIu64
             " receiver-not-ready events and %" PRIu64 " CQ overruns, want "
             "none (credits keep receivers ahead)", when, s.rnr_events,
             s.cq_overruns);
}

static void test_notif_burst_alone(void)
{
    uint64_t seed = begin("notification burst");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1,notif_window=4");
    s4_exp_t *exp = xt_alloc(S4_N * sizeof *exp);
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *r = xt_alloc(4096);

    xt_register(tgt, r, 4096);
    connect_to(ini, tgt);
    fv.reset_stats();
    for (unsigned i = 0; i < S4_N; i++) {
        exp[i].msg = xt_alloc(512);
        exp[i].len = s4_msg(exp[i].msg, 512, "n", i, (i * 37u) % 300u, seed);
        XT_STATUS(xfer_notif_send(ini, name_of(tgt), exp[i].msg, exp[i].len,
                                  NULL), XFER_OK);
    }
    xt_drain_until(tgt, got, S4_N, WAIT_MS, false);
    s4_check(got, exp, S4_N, name_of(ini));
    s4_no_rnr("200 notifications to a window of 4");
    XT_CHECK(vstate(ini).sent == S4_N && vstate(tgt).recv == S4_N &&
             vstate(tgt).dropped == 0, "sender: '%s'; target: '%s'",
             vstate(ini).line, vstate(tgt).line);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* At each delivery of "w-<i>", WRITE i's data is already in place. */
typedef struct s4_data {
    const unsigned char *r;
    uint64_t seed;
    unsigned bad;
    char first[200];
} s4_data_t;

static void s4_on_msg(xt_notifs_t *n, const xt_notif_t *m)
{
    s4_data_t *d = n->arg;
    unsigned i;

    if (sscanf(m->msg, "w-%u:", &i) != 1)
        return;
    if (xt_check(d->r + (size_t)i * 4096, 4096, d->seed + 1000000 + i) >= 0 &&
        d->bad++ == 0)
        snprintf(d->first, sizeof d->first, "notification w-%u came before "
                 "its WRITE's data", i);
}

static void test_notif_burst_writes(void)
{
    uint64_t seed = begin("notification burst with WRITEs");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1,notif_window=4");
    const unsigned nw = S4_N / 2;
    s4_exp_t *exp = xt_alloc(S4_N * sizeof *exp);
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *l = xt_alloc(nw * 4096), *r = xt_alloc(nw * 4096);
    xfer_req_t **q = xt_alloc(nw * sizeof *q);
    s4_data_t d = {.r = r, .seed = seed};

    xt_register(ini, l, nw * 4096);
    xt_register(tgt, r, nw * 4096);
    connect_to(ini, tgt);
    for (unsigned i = 0; i < nw; i++) {
        q[i] = mkreq1(ini, XFER_OP_WRITE, l + i * 4096, r + i * 4096, 4096,
                      tgt);
        xt_fill(l + i * 4096, 4096, seed + 1000000 + i);
    }
    got->on_msg = s4_on_msg;
    got->arg = &d;
    fv.reset_stats();
    /* A WRITE with its notification, then one alone, as fast as they
     * go: they arrive in that order, each behind the data before it. */
    for (unsigned i = 0; i < nw; i++) {
        xfer_status_t st;

        exp[2 * i].msg = xt_alloc(512);
        exp[2 * i].len = s4_msg(exp[2 * i].msg, 512, "w", i, i % 100, seed);
        exp[2 * i + 1].msg = xt_alloc(512);
        exp[2 * i + 1].len = s4_msg(exp[2 * i + 1].msg, 512, "s", i,
                                    (i * 13u) % 200u, seed);
        st = xfer_req_post(q[i], exp[2 * i].msg, exp[2 * i].len);
        XT_CHECK(st == XFER_IN_PROG || st == XFER_OK, "WRITE %u: %s: %s", i,
                 xt_status_name(st), xfer_last_error());
        XT_STATUS(xfer_notif_send(ini, name_of(tgt), exp[2 * i + 1].msg,
                                  exp[2 * i + 1].len, NULL), XFER_OK);
    }
    xt_drain_until(tgt, got, S4_N, WAIT_MS, false);
    for (unsigned i = 0; i < nw; i++)
        XT_STATUS(wait_end(q[i]), XFER_OK);
    s4_check(got, exp, S4_N, name_of(ini));
    XT_CHECK(d.bad == 0, "%u notifications before their data: %s", d.bad,
             d.first);
    s4_no_rnr("100 WRITEs with notifications and 100 alone, window 4");
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* Every size class, with one send buffer: 0, 1, the largest that goes
 * inline (the plugin asks for 64 bytes of inline data: 32 of header and
 * 32 of payload), one above, and XFER_NOTIF_MAX, many times over, so
 * that the one buffer is taken and given back between them. */
static void test_notif_sizes(void)
{
    static const size_t sizes[] = {0, 1, 32, 33, 64, 4096, XFER_NOTIF_MAX - 1,
                                   XFER_NOTIF_MAX, XFER_NOTIF_MAX,
                                   XFER_NOTIF_MAX, XFER_NOTIF_MAX, 0,
                                   XFER_NOTIF_MAX, 33, XFER_NOTIF_MAX, 32,
                                   XFER_NOTIF_MAX, XFER_NOTIF_MAX, 1};
    const size_t n = sizeof sizes / sizeof sizes[0];
    uint64_t seed = begin("notification sizes");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,notif_tx=1");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1,notif_window=4");
    s4_exp_t *exp = xt_alloc((n + 2) * sizeof *exp);
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *l = xt_alloc(64 * KiB), *r = xt_alloc(64 * KiB);
    xfer_req_t *q;

    xt_register(ini, l, 64 * KiB);
    xt_register(tgt, r, 64 * KiB);
    connect_to(ini, tgt);
    q = mkreq1(ini, XFER_OP_WRITE, l, r, 64 * KiB, tgt);
    fv.reset_stats();
    for (size_t i = 0; i < n; i++) {
        exp[i].msg = xt_alloc(sizes[i] + 1);
        exp[i].len = sizes[i];
        xt_fill(exp[i].msg, sizes[i], seed + i);
        XT_STATUS(xfer_notif_send(ini, name_of(tgt), exp[i].msg, exp[i].len,
                                  NULL), XFER_OK);
    }
    /* And the largest on a WRITE, twice. */
    for (size_t i = n; i < n + 2; i++) {
        exp[i].msg = xt_alloc(XFER_NOTIF_MAX);
        exp[i].len = XFER_NOTIF_MAX;
        xt_fill(exp[i].msg, XFER_NOTIF_MAX, seed + i);
        xt_fill(l, 64 * KiB, seed + 7 * i);
        XT_STATUS(post_end(q, exp[i].msg, exp[i].len), XFER_OK);
        XT_CHECK(xt_check(r, 64 * KiB, seed + 7 * i) < 0, "WRITE %zu: "
                 "bytes differ", i);
    }
    xt_drain_until(tgt, got, n + 2, WAIT_MS, false);
    s4_check(got, exp, n + 2, name_of(ini));
    s4_no_rnr("notifications of every size, one send buffer");
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* ---- 5. small queues under load ---------------------------------------------------- */

#define S5_THREADS 2u
#define S5_SLOTS 8u        /* requests in flight per thread */
#define S5_SEGS 12u        /* descriptors per request */
#define S5_STRIDE (20 * KiB)
#define S5_AREA (S5_SEGS * S5_STRIDE)
#define S5_ROUNDS 4u

typedef struct s5_thread {
    unsigned t;
    xfer_req_t *w[S5_SLOTS], *r[S5_SLOTS];
    unsigned char *loc[S5_SLOTS], *rem[S5_SLOTS];
    size_t off[S5_SEGS], len[S5_SEGS]; /* segment k, in every slot */
    uint64_t seed;
    pthread_t th;
    char err[1024];
} s5_thread_t;

static void *s5_main(void *arg)
{
    s5_thread_t *x = arg;

    for (unsigned round = 0; round < S5_ROUNDS && !x->err[0]; round++) {
        bool wr = round % 2 == 0;
        uint64_t seed = x->seed + round * 1000u;

        for (unsigned s = 0; s < S5_SLOTS; s++) {
            unsigned char *src = wr ? x->loc[s] : x->rem[s];
            unsigned char *dst = wr ? x->rem[s] : x->loc[s];

            xt_fill_at(src, S5_AREA, seed + s, 0);
            memset(dst, 0, S5_AREA);
        }
        for (unsigned s = 0; s < S5_SLOTS; s++) {
            xfer_status_t st = xfer_req_post(wr ? x->w[s] : x->r[s], NULL, 0);

            if (st != XFER_IN_PROG && st != XFER_OK) {
                snprintf(x->err, sizeof x->err, "thread %u round %u post "
                         "%u: %s: %s", x->t, round, s, xt_status_name(st),
                         xfer_last_error());
                return NULL;
            }
        }
        for (unsigned s = 0; s < S5_SLOTS; s++) {
            xfer_req_t *q = wr ? x->w[s] : x->r[s];
            unsigned char *dst = wr ? x->rem[s] : x->loc[s];
            uint64_t end = xt_now_ms() + WAIT_MS;
            xfer_status_t st = XFER_IN_PROG;

            while (st == XFER_IN_PROG && xt_now_ms() < end)
                st = xfer_req_wait(q, 100);
            if (st != XFER_OK) {
                snprintf(x->err, sizeof x->err, "thread %u round %u "
                         "request %u: %s: %s", x->t, round, s,
                         xt_status_name(st), st == XFER_IN_PROG
                             ? "hangs" : xfer_last_error());
                return NULL;
            }
            for (unsigned k = 0; k < S5_SEGS; k++) {
                size_t off = x->off[k];
                long bad = xt_check_at(dst + off, x->len[k], seed + s, off);

                if (bad >= 0) {
                    snprintf(x->err, sizeof x->err, "thread %u round %u "
                             "request %u segment %u: byte %ld differs",
                             x->t, round, s, k, bad);
                    return NULL;
                }
            }
        }
    }
    return NULL;
}

static void test_small_queues(void)
{
    uint64_t seed = begin("small queues");
    const char *spec = "vbfake:device=fake0,sq_depth=4,chain_max=2,max_qps=2";
    xfer_agent_t *ini = agent("ini", spec);
    xfer_agent_t *tgt[2] = {agent("tgt", "vbfake:device=fake1,max_qps=2"),
                            agent("tgt", "vbfake:device=fake2,max_qps=2")};
    size_t per = S5_THREADS * S5_SLOTS * S5_AREA;
    unsigned char *loc = xt_alloc(per), *rem[2] = {xt_alloc(per),
                                                    xt_alloc(per)};
    s5_thread_t x[S5_THREADS];
    uint64_t rs = seed;
    struct fakeverbs_stats s;
    vstate_t vs;

    xt_register(ini, loc, per);
    for (unsigned i = 0; i < 2; i++) {
        xt_register(tgt[i], rem[i], per);
        connect_to(ini, tgt[i]);
    }
    fv.reset_stats();
    for (unsigned t = 0; t < S5_THREADS; t++) {
        memset(&x[t], 0, sizeof x[t]);
        x[t].t = t;
        x[t].seed = seed + 100000u * t;
        /* Even segments of 1 byte to 16 KiB at the start of their
         * stride; each odd one right after the even one before (on both
         * sides: they merge into one work request), up to the stride's
         * end. */
        for (unsigned k = 0; k < S5_SEGS; k++) {
            if (k % 2 == 0) {
                x[t].off[k] = (size_t)k * S5_STRIDE;
                x[t].len[k] = 1 + xt_rand(&rs) % (16 * KiB);
            } else {
                x[t].off[k] = x[t].off[k - 1] + x[t].len[k - 1];
                x[t].len[k] = 1 + xt_rand(&rs) %
                    ((size_t)(k + 1) * S5_STRIDE - x[t].off[k]);
            }
        }
        for (unsigned sl = 0; sl < S5_SLOTS; sl++) {
            size_t off = ((size_t)t * S5_SLOTS + sl) * S5_AREA;
            xfer_desc_t ld[S5_SEGS], rd[S5_SEGS];
            unsigned g = sl % 2;

            x[t].loc[sl] = loc + off;
            x[t].rem[sl] = rem[g] + off;
            for (unsigned k = 0; k < S5_SEGS; k++) {
                ld[k] = (xfer_desc_t){(uintptr_t)(x[t].loc[sl] + x[t].off[k]),
                                      x[t].len[k], 0};
                rd[k] = (xfer_desc_t){(uintptr_t)(x[t].rem[sl] + x[t].off[k]),
                                      x[t].len[k], 0};
            }
            x[t].w[sl] = mkreq(ini, XFER_OP_WRITE, ld, rd, S5_SEGS, tgt[g]);
            x[t].r[sl] = mkreq(ini, XFER_OP_READ, ld, rd, S5_SEGS, tgt[g]);
        }
    }
    for (unsigned t = 0; t < S5_THREADS; t++)
        XT_REQUIRE(pthread_create(&x[t].th, NULL, s5_main, &x[t]) == 0,
                   "pthread_create");
    for (unsigned t = 0; t < S5_THREADS; t++) {
        pthread_join(x[t].th, NULL);
        XT_CHECK(x[t].err[0] == '\0', "%s", x[t].err);
    }
    s = dev_stats();
    XT_CHECK(s.rnr_events == 0 && s.cq_overruns == 0 && s.wrs_failed == 0,
             "%" PRIu64 " RNR events, %" PRIu64 " CQ overruns, %" PRIu64
             " failed work requests; want none", s.rnr_events,
             s.cq_overruns, s.wrs_failed);
    vs = vstate(ini);
    XT_CHECK(vs.qp_errors == 0 && vs.remade == 0 && vs.chains * 2 >= vs.wrs,
             "state: '%s' (no error; chains of chain_max 2 at most)",
             vs.line);
    finish((xfer_agent_t *[]){ini, tgt[0], tgt[1]}, 3);
}

/* ---- 6. striping over two rails ----------------------------------------------- */

#define S6_MIN (64 * KiB)
#define S6_LEN (8 * MiB)

typedef struct s6_seg {
    size_t loff, roff, len;
} s6_seg_t;

/* The bytes each rail must carry, worked out here from the documented
 * rule alone (plan.h): segments adjacent on both sides merge into runs;
 * a run of at least stripe_min is cut in nrails stripes of len/nrails
 * rounded up to 4 KiB, stripe i on rail i; any other run goes on rail 0. */
static void s6_expect(const s6_seg_t *s, size_t n, unsigned nrails,
                      uint64_t out[2])
{
    out[0] = out[1] = 0;
    for (size_t i = 0; i < n;) {
        size_t len = s[i].len, j = i + 1;

        while (j < n && s[j].loff == s[i].loff + len &&
               s[j].roff == s[i].roff + len)
            len += s[j++].len;
        if (nrails == 2 && len >= S6_MIN) {
            size_t st = (len / 2 + len % 2 + 4095) / 4096 * 4096;

            out[0] += st < len ? st : len;
            out[1] += st < len ? len - st : 0;
        } else {
            out[0] += len;
        }
        i = j;
    }
}

/* A random list: sizes straddling stripe_min, every other one (at
 * random) adjacent to the one before on both sides, the rest after a gap
 * on one side or both. */
static size_t s6_random(s6_seg_t *s, size_t cap, uint64_t *rs)
{
    size_t n = 1 + xt_rand(rs) % cap, lo = 0, ro = 3 * MiB;

    for (size_t i = 0; i < n; i++) {
        size_t len;

        switch (xt_rand(rs) % 6) {
        case 0: len = 1 + xt_rand(rs) % (4 * KiB); break;
        case 1: len = S6_MIN - 1 - xt_rand(rs) % (8 * KiB); break;
        case 2: len = S6_MIN; break;
        case 3: len = S6_MIN + 1 + xt_rand(rs) % (8 * KiB); break;
        case 4: len = 100 * KiB + xt_rand(rs) % (200 * KiB); break;
        default: len = 4 * KiB + xt_rand(rs) % (16 * KiB); break;
        }
        if (i > 0 && xt_rand(rs) % 2) {
            unsigned gap = (unsigned)(xt_rand(rs) % 3);

            lo += gap != 1 ? 4 * KiB + xt_rand(rs) % 100 : 0;
            ro += gap != 0 ? 4 * KiB + xt_rand(rs) % 100 : 0;
        }
        if (lo + len > 3 * MiB || ro + len > S6_LEN)
            return i;
        s[i] = (s6_seg_t){lo, ro, len};
        lo += len;
        ro += len;
    }
    return n;
}

typedef struct s6_pair {
    xfer_agent_t *ini, *tgt;
    unsigned char *l, *r;
    unsigned nrails;        /* the connection's: min of both sides */
    int dev[2];             /* the initiator's devices, rail by rail */
} s6_pair_t;

/* WRITE the list, then READ it back into cleared memory: byte for byte,
 * and each of the initiator's devices carried exactly its rail's share. */
static void s6_run(s6_pair_t *p, const s6_seg_t *s, size_t n, uint64_t seed,
                   const char *what)
{
    xfer_desc_t ld[16], rd[16];
    uint64_t exp[2];

    XT_REQUIRE(n <= 16, "list too long");
    for (size_t i = 0; i < n; i++) {
        ld[i] = (xfer_desc_t){(uintptr_t)(p->l + s[i].loff), s[i].len, 0};
        rd[i] = (xfer_desc_t){(uintptr_t)(p->r + s[i].roff), s[i].len, 0};
    }
    s6_expect(s, n, p->nrails, exp);
    for (int k = 0; k < 2; k++) {
        xfer_op_t op = k == 0 ? XFER_OP_WRITE : XFER_OP_READ;
        bool wr = op == XFER_OP_WRITE;
        xfer_req_t *q = mkreq(p->ini, op, ld, rd, n, p->tgt);
        struct fakeverbs_stats st;

        for (size_t i = 0; i < n; i++) {
            unsigned char *src = wr ? p->l + s[i].loff : p->r + s[i].roff;
            unsigned char *dst = wr ? p->r + s[i].roff : p->l + s[i].loff;

            xt_fill_at(src, s[i].len, seed + op, i << 32);
            memset(dst, 0, s[i].len);
        }
        fv.reset_stats();
        XT_STATUS(post_end(q, NULL, 0), XFER_OK);
        for (size_t i = 0; i < n; i++) {
            unsigned char *dst = wr ? p->r + s[i].roff : p->l + s[i].loff;
            long bad = xt_check_at(dst, s[i].len, seed + op, i << 32);

            XT_CHECK(bad < 0, "%s, %s: segment %zu of %zu (%zu bytes): byte "
                     "%ld differs", what, wr ? "WRITE" : "READ", i, n,
                     s[i].len, bad);
        }
        st = dev_stats();
        for (int d = 0; d < 4; d++) {
            uint64_t want = d == p->dev[0] ? exp[0]
                            : d == p->dev[1] ? exp[1] : 0;

            XT_CHECK(st.bytes_by_dev[d] == want, "%s, %s of %zu segments: "
                     "fake%d moved %" PRIu64 " bytes, want %" PRIu64, what,
                     wr ? "WRITE" : "READ", n, d, st.bytes_by_dev[d], want);
        }
    }
}

static void s6_pair(s6_pair_t *p, const char *ispec, const char *tspec,
                    unsigned nrails, int dev0, int dev1)
{
    p->ini = agent("ini", ispec);
    p->tgt = agent("tgt", tspec);
    p->l = xt_alloc(3 * MiB);
    p->r = xt_alloc(S6_LEN);
    p->nrails = nrails;
    p->dev[0] = dev0;
    p->dev[1] = dev1;
    xt_register(p->ini, p->l, 3 * MiB);
    xt_register(p->tgt, p->r, S6_LEN);
    connect_to(p->ini, p->tgt);
}

static void test_striping(void)
{
    uint64_t seed = begin("striping"), rs = seed;
    const char *spec = "vbfake:devices=fake0\\,fake1,stripe_min=64K";
    s6_pair_t p;
    s6_seg_t s[16];
    size_t n;
    uint64_t exp[2];

    s6_pair(&p, spec, spec, 2, 0, 1);
    /* Small runs, apart: only the first rail. */
    for (n = 0; n < 6; n++)
        s[n] = (s6_seg_t){n * 80 * KiB, n * 90 * KiB, 4 * KiB + n * 9 * KiB};
    s6_expect(s, n, 2, exp);
    XT_CHECK(exp[1] == 0, "the small list would be striped");
    s6_run(&p, s, n, seed, "six small segments apart");
    /* One large run: both rails. */
    s[0] = (s6_seg_t){0, MiB, MiB};
    s6_run(&p, s, 1, seed + 10, "one MiB");
    /* Small segments adjacent on both sides: one run of 80 KiB, striped. */
    for (n = 0; n < 16; n++)
        s[n] = (s6_seg_t){n * 5 * KiB, 2 * MiB + n * 5 * KiB, 5 * KiB};
    s6_expect(s, n, 2, exp);
    XT_CHECK(exp[0] > 0 && exp[1] > 0, "the adjacent list would not be "
             "striped");
    s6_run(&p, s, n, seed + 20, "sixteen adjacent 5 KiB segments");
    /* Adjacent on one side only: runs apart, each small. */
    for (n = 0; n < 16; n++)
        s[n] = (s6_seg_t){n * 5 * KiB, 2 * MiB + n * 6 * KiB, 5 * KiB};
    s6_run(&p, s, n, seed + 30, "sixteen segments adjacent locally only");
    for (unsigned round = 0; round < 8; round++) {
        char what[64];

        n = s6_random(s, 12, &rs);
        snprintf(what, sizeof what, "random list %u", round);
        s6_run(&p, s, n, seed + 100 * (round + 1), what);
    }
    finish((xfer_agent_t *[]){p.ini, p.tgt}, 2);
}

/* Two rails on one side, one on the other: the connection has one, and
 * everything goes on the initiator's first device. */
static void test_striping_rails_min(void)
{
    uint64_t seed = begin("striping, 2 rails and 1"), rs = seed;
    s6_pair_t p;
    s6_seg_t s[16];
    size_t n;

    s6_pair(&p, "vbfake:devices=fake0\\,fake1,stripe_min=64K",
            "vbfake:device=fake2,stripe_min=64K", 1, 0, -1);
    s[0] = (s6_seg_t){0, MiB, MiB};
    s6_run(&p, s, 1, seed, "one MiB, initiator 2 rails, target 1");
    n = s6_random(s, 12, &rs);
    s6_run(&p, s, n, seed + 10, "a random list, initiator 2 rails, target 1");
    finish((xfer_agent_t *[]){p.ini, p.tgt}, 2);

    s6_pair(&p, "vbfake:device=fake0,stripe_min=64K",
            "vbfake:devices=fake1\\,fake2,stripe_min=64K", 1, 0, -1);
    s[0] = (s6_seg_t){0, MiB, MiB};
    s6_run(&p, s, 1, seed + 20, "one MiB, initiator 1 rail, target 2");
    n = s6_random(s, 12, &rs);
    s6_run(&p, s, n, seed + 30, "a random list, initiator 1 rail, target 2");
    finish((xfer_agent_t *[]){p.ini, p.tgt}, 2);
}

/* The state sentence of an agent with two rails, after traffic, fits
 * where xfer.h says any sentence does (XFER_STATE_MAX): a caller's
 * buffer of that size would lose its counters. */
static void test_state_two_rails(void)
{
    uint64_t seed = begin("state sentence, two rails");
    const char *spec = "vbfake:devices=fake0\\,fake1,stripe_min=64K";
    s6_pair_t p;
    s6_seg_t s = {0, MiB, MiB};
    size_t len;

    s6_pair(&p, spec, spec, 2, 0, 1);
    s6_run(&p, &s, 1, seed, "one MiB");
    len = strlen(vstate(p.ini).line);
    XT_CHECK(len < XFER_STATE_MAX, "the state of a 2-rail agent takes %zu "
             "bytes, XFER_STATE_MAX is %u: '%s'", len, XFER_STATE_MAX,
             vstate(p.ini).line);
    finish((xfer_agent_t *[]){p.ini, p.tgt}, 2);
}

/* ---- 7. a timeout resets the connection ------------------------------------ */

static void test_timeout(void)
{
    uint64_t seed = begin("timeout");
    xfer_agent_t *ini, *tgt;
    unsigned char *l = xt_alloc(256 * KiB), *r = xt_alloc(256 * KiB);
    xfer_req_t *q;
    uint64_t t0;
    uint32_t qpn;

    /* Every work request takes 10 s on the wire; the initiator waits 1. */
    env_set("XFER_FAKEVERBS_DELAY_US", "10000000");
    ini = agent("ini", "vbfake:device=fake0,timeout_ms=1000");
    tgt = agent("tgt", "vbfake:device=fake1");
    xt_fill(l, 256 * KiB, seed);
    xt_register(ini, l, 256 * KiB);
    xt_register(tgt, r, 256 * KiB);
    connect_to(ini, tgt);
    qpn = ini_qp(0, 1);
    q = mkreq1(ini, XFER_OP_WRITE, l, r, 256 * KiB, tgt);
    t0 = xt_now_ms();
    XT_STATUS(xfer_req_post(q, NULL, 0), XFER_IN_PROG);
    XT_STATUS(wait_end(q), XFER_ERR_TIMEOUT);
    WHY_HAS("timeout_ms", "1000 ms", name_of(tgt));
    XT_CHECK(xt_now_ms() - t0 >= 1000, "timed out after %" PRIu64 " ms, "
             "before timeout_ms", xt_now_ms() - t0);
    XT_CHECK(!qp_live(qpn), "the timed-out connection's QP "
             "%u is still live", qpn);
    /* The wire is quick again: the same request, on a new connection. */
    fv.set_delay_us(0);
    XT_STATUS(post_end(q, NULL, 0), XFER_OK);
    XT_CHECK(xt_check(r, 256 * KiB, seed) < 0, "bytes differ after the "
             "timeout");
    XT_CHECK(vstate(ini).remade >= 1, "state: '%s'", vstate(ini).line);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* ---- 8. deregistration with work in flight ------------------------------------ */

#define S8_LEN (4 * MiB)

/* The initiator's own region: the core refuses while a request uses it,
 * at once, and the transfer goes on unharmed. */
static void test_dereg_local_in_flight(void)
{
    uint64_t seed = begin("local deregistration in flight");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    unsigned char *l = map(S8_LEN), *r = xt_alloc(S8_LEN);
    xfer_mem_t *ml;
    xfer_req_t *q;
    uint32_t qpn;

    xt_fill(l, S8_LEN, seed);
    ml = xt_register(ini, l, S8_LEN);
    xt_register(tgt, r, S8_LEN);
    q = post_held(ini, tgt, XFER_OP_WRITE, l, r, S8_LEN, &qpn);
    XT_STATUS(xfer_mem_deregister(ini, ml), XFER_ERR_BUSY);
    XT_ERR_HAS("still used by 1 request");
    XT_REQUIRE(fv.hold(qpn, false) == 0, "release");
    XT_STATUS(wait_end(q), XFER_OK);
    XT_CHECK(xt_check(r, S8_LEN, seed) < 0, "bytes differ");
    /* Released, the region goes; its memory is unmapped: nothing may
     * touch it after. */
    req_drop(q);
    XT_STATUS(xfer_mem_deregister(ini, ml), XFER_OK);
    munmap(l, S8_LEN);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* The target's region goes while a WRITE (then a READ) into it is on the
 * wire: deregistration returns, the memory is unmapped at once, and the
 * transfer fails when the NIC meets the dead key; the next one works. */
static void test_dereg_remote_in_flight(void)
{
    uint64_t seed = begin("remote deregistration in flight");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    unsigned char *l = xt_alloc(S8_LEN), *r2 = xt_alloc(S8_LEN);
    /* Both mapped now: the second cannot land where the first was. */
    unsigned char *rr[2] = {map(S8_LEN), map(S8_LEN)};
    xfer_req_t *q2;

    xt_fill(l, S8_LEN, seed);
    xt_register(ini, l, S8_LEN);
    xt_register(tgt, r2, S8_LEN);
    for (int op = XFER_OP_READ; op <= XFER_OP_WRITE; op++) {
        unsigned char *r = rr[op - XFER_OP_READ];
        xfer_mem_t *mr = xt_register(tgt, r, S8_LEN);
        xfer_req_t *q;
        uint32_t qpn;
        uint64_t t0;

        q = post_held(ini, tgt, op, l, r, S8_LEN, &qpn);
        t0 = xt_now_ms();
        XT_STATUS(xfer_mem_deregister(tgt, mr), XFER_OK);
        XT_CHECK(xt_now_ms() - t0 < WAIT_MS, "deregistration took %" PRIu64
                 " ms", xt_now_ms() - t0);
        munmap(r, S8_LEN);
        XT_REQUIRE(fv.hold(qpn, false) == 0, "release");
        XT_STATUS(wait_end(q), XFER_ERR_ACCESS);
        WHY_HAS("remote access error", name_of(tgt));
    }
    /* Another region of the same target, on a new connection. */
    q2 = mkreq1(ini, XFER_OP_WRITE, l, r2, S8_LEN, tgt);
    XT_STATUS(post_end(q2, NULL, 0), XFER_OK);
    XT_CHECK(xt_check(r2, S8_LEN, seed) < 0, "bytes differ");
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* The initiator goes whole (every registration with it) while a
 * transfer on its memory is on the wire: it returns, its QPs are gone,
 * its memory is unmapped; the target serves another initiator after. */
static void test_dereg_agent_in_flight(void)
{
    uint64_t seed = begin("initiator destroyed in flight");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    xfer_agent_t *ini2 = agent("ini", "vbfake:device=fake2");
    unsigned char *l = map(S8_LEN), *l2 = xt_alloc(S8_LEN);
    unsigned char *r = xt_alloc(2 * S8_LEN);
    xfer_req_t *q;
    uint32_t qpn;

    xt_fill(l, S8_LEN, seed);
    xt_fill(l2, S8_LEN, seed + 1);
    xt_register(ini, l, S8_LEN);
    xt_register(ini2, l2, S8_LEN);
    xt_register(tgt, r, 2 * S8_LEN);
    q = post_held(ini, tgt, XFER_OP_WRITE, l, r, S8_LEN, &qpn);
    /* No cancel on verbs: it cannot be released in flight, and goes with
     * its agent. */
    req_unlist(q);
    XT_STATUS(xt_req_release(q), XFER_ERR_BUSY);
    xt_agent_destroy(ini);
    XT_CHECK(qps_on(0) == 0, "%u QPs left on the destroyed agent's device",
             qps_on(0));
    munmap(l, S8_LEN);
    connect_to(ini2, tgt);
    q = mkreq1(ini2, XFER_OP_WRITE, l2, r + S8_LEN, S8_LEN, tgt);
    XT_STATUS(post_end(q, NULL, 0), XFER_OK);
    XT_CHECK(xt_check(r + S8_LEN, S8_LEN, seed + 1) < 0, "bytes differ");
    finish((xfer_agent_t *[]){tgt, ini2}, 2);
}

/* The target goes whole while a WRITE into it is on the wire, and the
 * NIC runs it at the instant the target's first registration goes: the
 * QPs initiators made to it went before (the backend's quiesce), so the
 * WRITE meets no responder and fails as the target gone, not as an
 * access error that would blame the request.  The initiator has no
 * progress thread: its completion is read before its control channel,
 * whose break would say the same whatever the NIC met. */
static void test_target_destroyed_in_flight(void)
{
    uint64_t seed = begin("target destroyed in flight");
    xfer_agent_t *ini = xt_agent(xt_name("ini"), "vbfake:device=fake0", 0);
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    unsigned char *l = xt_alloc(S8_LEN), *r = map(S8_LEN);
    char tname[XFER_NAME_MAX + 1];
    xfer_req_t *q;
    uint32_t qpn;

    snprintf(tname, sizeof tname, "%s", name_of(tgt));
    xt_fill(l, S8_LEN, seed);
    xt_register(ini, l, S8_LEN);
    xt_register(tgt, r, S8_LEN);
    q = post_held(ini, tgt, XFER_OP_WRITE, l, r, S8_LEN, &qpn);
    XT_REQUIRE(fv.release_on_dereg(qpn) == 0, "release on dereg");
    xt_agent_destroy(tgt);
    XT_CHECK(qps_on(1) == 0, "%u QPs left on the destroyed agent's device",
             qps_on(1));
    munmap(r, S8_LEN);
    XT_STATUS(wait_end(q), XFER_ERR_REMOTE_DISCONNECT);
    WHY_HAS(tname);
    finish((xfer_agent_t *[]){ini}, 1);
}

/* ---- 9. the peer removed with work in flight ---------------------------------- */

#define S9_N 6u

static void test_peer_removed(void)
{
    uint64_t seed = begin("peer removed in flight");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    size_t len = S9_N * 256 * KiB;
    unsigned char *l = xt_alloc(len), *r = xt_alloc(len);
    xt_notifs_t *got = xt_notifs_new();
    xfer_req_t *q[S9_N];
    char msg[32];
    uint32_t qpn;

    xt_fill_at(l, len, seed, 0);
    xt_register(ini, l, len);
    xt_register(tgt, r, len);
    connect_to(ini, tgt);
    qpn = ini_qp(0, 1);
    for (unsigned i = 0; i < S9_N; i++)
        q[i] = mkreq1(ini, XFER_OP_WRITE, l + i * 256 * KiB,
                      r + i * 256 * KiB, 256 * KiB, tgt);
    XT_REQUIRE(fv.hold(qpn, true) == 0, "hold");
    for (unsigned i = 0; i < S9_N; i++) {
        snprintf(msg, sizeof msg, "old-%u", i);
        XT_STATUS(xfer_req_post(q[i], msg, strlen(msg)), XFER_IN_PROG);
    }
    XT_STATUS(xfer_md_invalidate(ini, name_of(tgt)), XFER_OK);
    /* At once: the first look at each already says so. */
    for (unsigned i = 0; i < S9_N; i++) {
        XT_STATUS(xfer_req_status(q[i]), XFER_ERR_REMOTE_DISCONNECT);
        XT_ERR_HAS(name_of(tgt));
    }
    XT_CHECK(qps_on(0) == 0, "the removed peer's QP is still live");
    /* The old requests name a peer that is gone. */
    XT_STATUS(xfer_req_post(q[0], NULL, 0), XFER_ERR_REMOTE_DISCONNECT);
    /* Loaded again, it works: new requests, and only their
     * notifications arrive. */
    memset(r, 0, len);
    connect_to(ini, tgt);
    for (unsigned i = 0; i < S9_N; i++) {
        xfer_req_t *n = mkreq1(ini, XFER_OP_WRITE, l + i * 256 * KiB,
                               r + i * 256 * KiB, 256 * KiB, tgt);

        snprintf(msg, sizeof msg, "new-%u", i);
        XT_STATUS(post_end(n, msg, strlen(msg)), XFER_OK);
        XT_CHECK(xt_check_at(r + i * 256 * KiB, 256 * KiB, seed,
                             i * 256 * KiB) < 0, "WRITE %u after the reload: "
                 "bytes differ", i);
    }
    xt_drain_until(tgt, got, S9_N, WAIT_MS, false);
    XT_CHECK(got->count == S9_N, "%zu notifications, want %u", got->count,
             S9_N);
    for (unsigned i = 0; i < got->count && i < S9_N; i++) {
        snprintf(msg, sizeof msg, "new-%u", i);
        XT_CHECK(got->items[i].len == strlen(msg) &&
                 memcmp(got->items[i].msg, msg, strlen(msg)) == 0,
                 "notification %u is '%s', want '%s'", i,
                 (const char *)got->items[i].msg, msg);
    }
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* ---- 10. a target out of queue pairs ------------------------------------------ */

#define S10_INI 3u
#define S10_ROUNDS 3u
#define S10_LEN (256 * KiB)

static void test_max_qps_target(void)
{
    uint64_t seed = begin("max_qps on the target");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake0,max_qps=2");
    xfer_agent_t *ini[S10_INI];
    unsigned char *l[S10_INI], *r = xt_alloc(S10_INI * S10_LEN);
    xfer_req_t *q[S10_INI];
    unsigned retried = 0;

    xt_register(tgt, r, S10_INI * S10_LEN);
    for (unsigned i = 0; i < S10_INI; i++) {
        char spec[64];

        snprintf(spec, sizeof spec, "vbfake:device=fake%u", i + 1);
        ini[i] = agent("ini", spec);
        l[i] = xt_alloc(S10_LEN);
        xt_register(ini[i], l[i], S10_LEN);
        xt_md_exchange(tgt, XFER_MD_ALL, ini[i]);
        q[i] = mkreq1(ini[i], XFER_OP_WRITE, l[i], r + i * S10_LEN, S10_LEN,
                      tgt);
    }
    for (unsigned round = 0; round < S10_ROUNDS; round++) {
        for (unsigned i = 0; i < S10_INI; i++) {
            uint64_t sd = seed + round * 10 + i;
            xfer_status_t st;
            vstate_t vs;

            xt_fill(l[i], S10_LEN, sd);
            st = post_end(q[i], NULL, 0);
            if (st != XFER_OK) {
                /* Its QP was given to another: once, then it works. */
                XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
                WHY_HAS(name_of(tgt), "transport retry counter exceeded");
                retried++;
                XT_STATUS(post_end(q[i], NULL, 0), XFER_OK);
            }
            XT_CHECK(xt_check(r + i * S10_LEN, S10_LEN, sd) < 0, "round %u, "
                     "initiator %u: bytes differ", round, i);
            vs = vstate(tgt);
            XT_CHECK(vs.qps <= 2 && vs.from_ini <= 2, "the target holds "
                     "more than max_qps: '%s'", vs.line);
        }
    }
    /* Three initiators round robin over two queue pairs: each round
     * evicts one that comes back. */
    XT_CHECK(retried >= 1, "no initiator was ever evicted (%u retries)",
             retried);
    finish((xfer_agent_t *[]){ini[0], ini[1], ini[2], tgt}, 4);
}

/* ---- send buffers shared by peers, a target that stops taking ------------- */

/* One send buffer (notif_tx=1) for two targets: a notification to B that
 * found the buffer taken by A's goes when A's completes, though B has
 * nothing else in flight that would wake it. */
static void test_notif_tx_shared(void)
{
    uint64_t seed = begin("send buffers shared by two targets");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,notif_tx=1");
    xfer_agent_t *a = agent("tgt", "vbfake:device=fake1");
    xfer_agent_t *b = agent("tgt", "vbfake:device=fake2");
    xt_notifs_t *ga = xt_notifs_new(), *gb = xt_notifs_new();
    char msg[100];

    connect_to(ini, a);
    connect_to(ini, b);
    for (unsigned i = 0; i < 40; i++) {
        memset(msg, 'a' + (int)(i % 26), sizeof msg);
        snprintf(msg, 16, "%u-%" PRIu64, i, seed % 1000);
        XT_STATUS(xfer_notif_send(ini, name_of(i % 2 ? b : a), msg,
                                  sizeof msg, NULL), XFER_OK);
    }
    xt_drain_until(a, ga, 20, WAIT_MS, false);
    xt_drain_until(b, gb, 20, WAIT_MS, false);
    XT_CHECK(ga->count == 20 && gb->count == 20, "delivered %zu to A and %zu "
             "to B, want 20 each (100-byte notifications, one send "
             "buffer)", ga->count, gb->count);
    for (size_t i = 0; i < gb->count; i++) {
        snprintf(msg, 16, "%zu-%" PRIu64, 2 * i + 1, seed % 1000);
        XT_CHECK(gb->items[i].len == sizeof msg &&
                     strncmp(gb->items[i].msg, msg, strlen(msg)) == 0,
                 "B's notification %zu is out of order", i);
    }
    finish((xfer_agent_t *[]){ini, a, b}, 3);
}

/* A notification the target never takes (here: its QP held by the
 * emulated NIC) is not left in flight for good: after timeout_ms the
 * connection is reset with a sentence, the target is told the number
 * will not come, and the next notification is delivered. */
static void test_notif_stuck(void)
{
    uint64_t seed = begin("a notification never taken");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,timeout_ms=500");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    xt_notifs_t *got = xt_notifs_new();
    uint64_t end;
    uint32_t qpn;

    (void)seed;
    connect_to(ini, tgt);
    XT_STATUS(xfer_notif_send(ini, name_of(tgt), "first", 5, NULL), XFER_OK);
    XT_REQUIRE(xt_drain_until(tgt, got, 1, WAIT_MS, false) == 1,
               "the first notification did not arrive");
    qpn = ini_qp(0, 1);
    XT_REQUIRE(fv.hold(qpn, true) == 0, "hold");
    XT_STATUS(xfer_notif_send(ini, name_of(tgt), "lost", 4, NULL), XFER_OK);
    end = xt_now_ms() + WAIT_MS;
    while (qp_live(qpn) && xt_now_ms() < end)
        xt_sleep_ms(20);
    XT_CHECK(!qp_live(qpn), "the queue pair holding a notification for "
             "over timeout_ms was not reset");
    XT_CHECK(vstate(ini).remade >= 1, "state: '%s'", vstate(ini).line);
    XT_STATUS(xfer_notif_send(ini, name_of(tgt), "after", 5, NULL), XFER_OK);
    xt_drain_until(tgt, got, 2, WAIT_MS, false);
    XT_CHECK(got->count == 2 && got->items[1].len == 5 &&
                 memcmp(got->items[1].msg, "after", 5) == 0,
             "%zu notifications; the one after the reset did not come "
             "(target: '%s')", got->count, vstate(tgt).line);
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

/* An initiator whose table holds 2 queue pairs (max_qps=2) talks to four
 * targets in turn: each new one takes the place of the idle connection
 * used least recently, and every transfer lands. */
static void test_max_qps_initiator(void)
{
    uint64_t seed = begin("an initiator out of queue pairs");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,max_qps=2");
    xfer_agent_t *tgt[4];
    unsigned char *l = xt_alloc(64 * KiB), *r[4];
    xfer_req_t *q[4];

    xt_fill(l, 64 * KiB, seed);
    xt_register(ini, l, 64 * KiB);
    for (int i = 0; i < 4; i++) {
        char spec[64];

        snprintf(spec, sizeof spec, "vbfake:device=fake%d", 1 + i % 3);
        tgt[i] = agent("tgt", spec);
        r[i] = xt_alloc(64 * KiB);
        xt_register(tgt[i], r[i], 64 * KiB);
        xt_md_exchange(tgt[i], XFER_MD_ALL, ini);
        q[i] = mkreq1(ini, XFER_OP_WRITE, l, r[i], 64 * KiB, tgt[i]);
    }
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 4; i++) {
            memset(r[i], 0, 64 * KiB);
            XT_STATUS(post_end(q[i], NULL, 0), XFER_OK);
            XT_CHECK(xt_check(r[i], 64 * KiB, seed) < 0, "round %d, target "
                     "%d: bytes differ (%s)", round, i, why);
            XT_CHECK(vstate(ini).qps <= 2, "the initiator holds more than "
                     "max_qps: '%s'", vstate(ini).line);
        }
    finish((xfer_agent_t *[]){ini, tgt[0], tgt[1], tgt[2], tgt[3]}, 5);
}

/* ---- what the HCA says of itself -------------------------------------------- */

/* An asynchronous event fails what it concerns at once, with the event's
 * words, rather than at a deadline: a QP's catastrophic error its
 * connection, a port error every connection of the device; the next
 * transfer makes a new one. */
static void async_case(enum ibv_event_type type, bool of_qp,
                       const char *words)
{
    uint64_t seed = begin(words);
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    unsigned char *l = xt_alloc(64 * KiB), *r = xt_alloc(64 * KiB);
    xfer_req_t *q;
    uint32_t qpn;
    uint64_t t0;

    xt_fill(l, 64 * KiB, seed);
    xt_register(ini, l, 64 * KiB);
    xt_register(tgt, r, 64 * KiB);
    q = post_held(ini, tgt, XFER_OP_WRITE, l, r, 64 * KiB, &qpn);
    t0 = xt_now_ms();
    XT_REQUIRE(fv.async(0, type, of_qp ? qpn : 0) == 0, "the event");
    XT_STATUS(wait_end(q), XFER_ERR_REMOTE_DISCONNECT);
    WHY_HAS(words, "fake0");
    XT_CHECK(xt_now_ms() - t0 < 5000, "the event took %" PRIu64 " ms to "
             "fail the transfer (the deadline is 10 s)", xt_now_ms() - t0);
    XT_CHECK(!qp_live(qpn), "the queue pair outlived its event");
    if (type == IBV_EVENT_PORT_ERR) {
        /* While the port is down a new connection fails at once, with
         * the event's words; once it is active again, transfers go. */
        XT_STATUS(post_end(q, NULL, 0), XFER_ERR_REMOTE_DISCONNECT);
        WHY_HAS("fake0 reported port error");
        XT_REQUIRE(fv.async(0, IBV_EVENT_PORT_ACTIVE, 0) == 0, "active");
        /* The progress thread reads the event when it comes to it: until
         * then a post may still meet the port as down. */
        for (uint64_t end = xt_now_ms() + WAIT_MS;
             post_end(q, NULL, 0) != XFER_OK && xt_now_ms() < end;)
            xt_sleep_ms(20);
    }
    memset(r, 0, 64 * KiB);
    XT_STATUS(post_end(q, NULL, 0), XFER_OK);
    XT_CHECK(xt_check(r, 64 * KiB, seed) < 0, "bytes differ after the "
             "event");
    finish((xfer_agent_t *[]){ini, tgt}, 2);
}

static void test_async_qp_fatal(void)
{
    async_case(IBV_EVENT_QP_FATAL, true, "local work queue catastrophic "
               "error");
}

static void test_async_port_err(void)
{
    async_case(IBV_EVENT_PORT_ERR, false, "port error");
}

/* ---- chains and signaling ---------------------------------------------------- */

/* Work requests go to the HCA in chains of at most chain_max, one
 * ibv_post_send each, only the last of a chain signaled; a send queue of
 * sq_depth cuts chains where it is full; runs adjacent on both sides
 * merge into one work request; short WRITEs go inline.  Counted at the
 * device: post_send calls, work requests, signaled, inline. */
static struct fakeverbs_stats chains_of(xfer_agent_t *ini, xfer_agent_t *tgt,
                                        unsigned char *l, unsigned char *r,
                                        size_t n, size_t len, size_t gap,
                                        uint64_t seed)
{
    xfer_desc_t ld[64], rd[64];
    struct fakeverbs_stats before, after, d;
    xfer_req_t *q;

    XT_REQUIRE(n <= 64, "at most 64 descriptors");
    for (size_t i = 0; i < n; i++) {
        ld[i] = (xfer_desc_t){(uintptr_t)l + i * (len + gap), len, 0};
        rd[i] = (xfer_desc_t){(uintptr_t)r + i * (len + gap), len, 0};
    }
    q = mkreq(ini, XFER_OP_WRITE, ld, rd, n, tgt);
    memset(r, 0, n * (len + gap));
    before = dev_stats();
    XT_STATUS(post_end(q, NULL, 0), XFER_OK);
    after = dev_stats();
    for (size_t i = 0; i < n; i++)
        XT_CHECK(memcmp(r + i * (len + gap), l + i * (len + gap), len) == 0,
                 "descriptor %zu differs (seed %" PRIu64 ")", i, seed);
    d.post_sends = after.post_sends - before.post_sends;
    d.wrs_posted = after.wrs_posted - before.wrs_posted;
    d.wrs_signaled = after.wrs_signaled - before.wrs_signaled;
    d.wrs_inline = after.wrs_inline - before.wrs_inline;
    req_drop(q);
    return d;
}

static void test_chains(void)
{
    uint64_t seed = begin("chains and signaling");
    xfer_agent_t *ini = agent("ini", "vbfake:device=fake0,chain_max=4,"
                                     "sq_depth=64");
    xfer_agent_t *tgt = agent("tgt", "vbfake:device=fake1");
    xfer_agent_t *sq4 = agent("ini", "vbfake:device=fake2,chain_max=32,"
                                     "sq_depth=4");
    unsigned char *l = xt_alloc(1 << 20), *r = xt_alloc(1 << 20);
    struct fakeverbs_stats d;

    xt_fill(l, 1 << 20, seed);
    xt_register(ini, l, 1 << 20);
    xt_register(sq4, l, 1 << 20);
    xt_register(tgt, r, 1 << 20);
    connect_to(ini, tgt);
    connect_to(sq4, tgt);
    /* 10 descriptors with gaps: 10 work requests in chains of 4, 4, 2. */
    d = chains_of(ini, tgt, l, r, 10, 4096, 4096, seed);
    XT_CHECK(d.post_sends == 3 && d.wrs_posted == 10 && d.wrs_signaled == 3,
             "10 x 4 KiB, chain_max 4: %" PRIu64 " post_send, %" PRIu64
             " WRs, %" PRIu64 " signaled; want 3, 10, 3", d.post_sends,
             d.wrs_posted, d.wrs_signaled);
    XT_CHECK(d.wrs_inline == 0, "%" PRIu64 " 4 KiB WRs inline",
             d.wrs_inline);
    /* 10 adjacent descriptors: one work request. */
    d = chains_of(ini, tgt, l, r, 10, 4096, 0, seed);
    XT_CHECK(d.post_sends == 1 && d.wrs_posted == 1 && d.wrs_signaled == 1,
             "10 adjacent x 4 KiB: %" PRIu64 " post_send, %" PRIu64 " WRs, %"
             PRIu64 " signaled; want 1, 1, 1", d.post_sends, d.wrs_posted,
             d.wrs_signaled);
    /* 8-byte WRITEs go inline. */
    d = chains_of(ini, tgt, l, r, 4, 8, 56, seed);
    XT_CHECK(d.wrs_posted == 4 && d.wrs_inline == 4 && d.post_sends == 1 &&
             d.wrs_signaled == 1,
             "4 x 8 B: %" PRIu64 " WRs, %" PRIu64 " inline, %" PRIu64
             " post_send, %" PRIu64 " signaled; want 4, 4, 1, 1",
             d.wrs_posted, d.wrs_inline, d.post_sends, d.wrs_signaled);
    /* A send queue of 4: chains end where it is full, each signaled, and
     * the rest waits for the completion that frees room. */
    d = chains_of(sq4, tgt, l, r, 10, 4096, 4096, seed);
    XT_CHECK(d.wrs_posted == 10 && d.post_sends == d.wrs_signaled &&
                 d.post_sends >= 3,
             "10 x 4 KiB, sq_depth 4: %" PRIu64 " post_send, %" PRIu64
             " WRs, %" PRIu64 " signaled; want 10 WRs in 3 or more chains, "
             "each signaled once", d.post_sends, d.wrs_posted,
             d.wrs_signaled);
    finish((xfer_agent_t *[]){ini, sq4, tgt}, 3);
}

/* ---- the program -------------------------------------------------------------- */

static const xt_test_t faults[] = {
    XT_TEST(test_qp_error_writes),
    XT_TEST(test_qp_error_reads),
    XT_TEST(test_qp_error_notifs),
    XT_TEST(test_post_refused_chain_head),
    XT_TEST(test_post_refused_mid_chain),
    XT_TEST(test_link_cut),
    XT_TEST(test_timeout),
    XT_TEST(test_dereg_local_in_flight),
    XT_TEST(test_dereg_remote_in_flight),
    XT_TEST(test_dereg_agent_in_flight),
    XT_TEST(test_target_destroyed_in_flight),
    XT_TEST(test_peer_removed),
    XT_TEST(test_max_qps_target),
    XT_TEST(test_max_qps_initiator),
    XT_TEST(test_async_qp_fatal),
    XT_TEST(test_async_port_err),
    XT_END,
};

static const xt_test_t load[] = {
    XT_TEST(test_notif_burst_alone),
    XT_TEST(test_notif_burst_writes),
    XT_TEST(test_notif_sizes),
    XT_TEST(test_small_queues),
    XT_TEST(test_striping),
    XT_TEST(test_striping_rails_min),
    XT_TEST(test_state_two_rails),
    XT_TEST(test_chains),
    XT_TEST(test_notif_tx_shared),
    XT_TEST(test_notif_stuck),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"verbs under faults", faults},
        {"verbs under load", load},
    };

    (void)argc;
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set: the test plugin vbfake is "
                "found in the build tree (run through make check)");
    /* Lines reach the log as they are printed, also from a run that
     * dies. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* fake0 .. fake3: an agent each. */
    setenv("XFER_FAKEVERBS_DEVICES", "4", 1);
    return xt_run(argv[0], suites, sizeof suites / sizeof suites[0]);
}
