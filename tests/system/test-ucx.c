/* test-ucx.c - what the conformance suite cannot show of the ucx backend,
 * seen from outside and as a hostile peer: forged active messages from a
 * raw UCP client, notification order under a small credit window and a
 * slow reader, two agents writing to each other at once, four workers
 * posting together, a target SIGKILLed mid-transfer, bad configuration
 * and the shared secret.  Every attack runs beside a well-behaved peer
 * whose traffic must arrive whole, in order and exactly once. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <ucp/api/ucp.h>

#include "tests/common/xt.h"

#define WAIT_MS 20000
#define LINE_MAX_ (1u << 20)
/* Over loopback TCP: UCX's own tcp transport, and self for an agent that
 * writes to itself. */
#define SPEC_TCP "ucx:tls=tcp\\,self,devices=lo"
#define SPEC_SHM "ucx:tls=posix\\,cma\\,self,error_mode=none"
/* The notification's active message (docs/wire-ucx.md). */
#define AM_ID 0x58u
#define AM_HDR 32u

static char self_exe[4096];

/* ---- agents ----------------------------------------------------------- */

static void agent_fini(void *a) { xfer_agent_destroy(a); }

/* An agent with one backend and the options the tests vary; destroyed
 * after the test.  queue: notif_queue_count (0: default); key:
 * auth_key_file (NULL: none). */
static xfer_agent_t *mk_agent(const char *name, const char *spec,
                              unsigned queue, const char *key)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&o);
    o.name = name;
    o.progress_thread = 1;
    o.notif_queue_count = queue;
    o.auth_key_file = key;
    XT_STATUS_FATAL(xfer_agent_create(&o, &a), XFER_OK);
    xt_defer(agent_fini, a);
    XT_STATUS_FATAL(xfer_backend_add(a, spec, NULL), XFER_OK);
    return a;
}

/* The counters xfer_backend_state reports. */
typedef struct counters {
    unsigned long sent, recv, dropped;
    char line[XFER_STATE_MAX];
} counters_t;

static counters_t state_of(xfer_agent_t *a)
{
    counters_t c = {0};
    xfer_backend_t *b = NULL;
    const char *p;

    XT_STATUS_FATAL(xfer_backend_find(a, "ucx", &b), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_state(b, c.line, sizeof c.line), XFER_OK);
    p = strstr(c.line, "notifications ");
    XT_REQUIRE(p && sscanf(p, "notifications %lu sent, %lu received, %lu "
                           "dropped", &c.sent, &c.recv, &c.dropped) == 3,
               "no counters in the state '%s'", c.line);
    return c;
}

/* Wait until the target's dropped counter reaches want (driving the raw
 * worker meanwhile, which the target may need for a reply). */
static bool dropped_reaches(xfer_agent_t *a, unsigned long want,
                            ucp_worker_h w)
{
    uint64_t end = xt_now_ms() + WAIT_MS;

    while (xt_now_ms() < end) {
        if (state_of(a).dropped >= want)
            return true;
        if (w)
            ucp_worker_progress(w);
        xt_sleep_ms(1);
    }
    return false;
}

/* ---- a raw UCP client: no xfer, no session, only the target's
 * published worker address ------------------------------------------------ */

typedef struct raw {
    ucp_context_h ctx;
    ucp_worker_h w;
    ucp_ep_h ep;
} raw_t;

/* The target's worker 0 address, from its metadata's ucx connection info
 * (plugins/ucx/ctl.c: a 32-byte head, then u16 length + address). */
static unsigned char *worker_addr(xfer_agent_t *tgt, size_t *alen)
{
    size_t len;
    char *blob = xt_md_get(tgt, XFER_MD_CONN, NULL, 0, &len);
    json_t *root = xt_blob_parse(blob, len);
    json_t *be = json_array_get(json_object_get(root, "backends"), 0);
    const char *conn = json_string_value(json_object_get(be, "conn"));
    size_t clen = conn ? strlen(conn) : 0;
    unsigned char *info = xt_alloc(clen + 4);
    int n;
    uint16_t l;

    XT_REQUIRE(conn, "no ucx connection info in '%s'", blob);
    n = EVP_DecodeBlock(info, (const unsigned char *)conn, (int)clen);
    XT_REQUIRE(n > 34, "connection info is not base64");
    XT_REQUIRE(memcmp(info, "XUCX", 4) == 0, "no XUCX magic");
    memcpy(&l, info + 32, 2);
    XT_REQUIRE((size_t)34 + l <= (size_t)n, "worker address overruns");
    *alen = l;
    return info + 34;
}

static void raw_fini(void *arg)
{
    raw_t *r = arg;

    if (r->ep) {
        ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                   .flags = UCP_EP_CLOSE_FLAG_FORCE};
        void *q = ucp_ep_close_nbx(r->ep, &prm);
        uint64_t end = xt_now_ms() + 5000;

        while (UCS_PTR_IS_PTR(q) && ucp_request_check_status(q) ==
               UCS_INPROGRESS && xt_now_ms() < end)
            ucp_worker_progress(r->w);
        if (UCS_PTR_IS_PTR(q))
            ucp_request_free(q);
    }
    if (r->w)
        ucp_worker_destroy(r->w);
    if (r->ctx)
        ucp_cleanup(r->ctx);
    free(r);
}

static raw_t *raw_open(xfer_agent_t *tgt)
{
    raw_t *r = calloc(1, sizeof *r);
    ucp_config_t *cfg;
    ucp_params_t prm = {.field_mask = UCP_PARAM_FIELD_FEATURES,
                        .features = UCP_FEATURE_AM};
    ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};
    ucp_ep_params_t ep = {0};
    size_t alen;

    XT_REQUIRE(r, "out of memory");
    xt_defer(raw_fini, r);
    XT_REQUIRE(ucp_config_read(NULL, NULL, &cfg) == UCS_OK, "ucp_config_read");
    ucp_config_modify(cfg, "TLS", "tcp");
    ucp_config_modify(cfg, "NET_DEVICES", "lo");
    XT_REQUIRE(ucp_init(&prm, cfg, &r->ctx) == UCS_OK, "ucp_init");
    ucp_config_release(cfg);
    XT_REQUIRE(ucp_worker_create(r->ctx, &wp, &r->w) == UCS_OK,
               "ucp_worker_create");
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    ep.address = (const ucp_address_t *)worker_addr(tgt, &alen);
    XT_REQUIRE(ucp_ep_create(r->w, &ep, &r->ep) == UCS_OK, "ucp_ep_create");
    return r;
}

/* Send one active message id AM_ID and wait (bounded) until UCP is done
 * with it, whatever the target did. */
static void raw_am(raw_t *r, const void *hdr, size_t hlen, const void *data,
                   size_t len, bool rndv)
{
    ucp_request_param_t prm = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                               .flags = rndv ? UCP_AM_SEND_FLAG_RNDV
                                             : UCP_AM_SEND_FLAG_EAGER};
    void *q = ucp_am_send_nbx(r->ep, AM_ID, hdr, hlen, data, len, &prm);
    uint64_t end = xt_now_ms() + WAIT_MS;

    XT_REQUIRE(!UCS_PTR_IS_ERR(q), "ucp_am_send_nbx: %s",
               ucs_status_string(UCS_PTR_STATUS(q)));
    while (UCS_PTR_IS_PTR(q) && ucp_request_check_status(q) ==
           UCS_INPROGRESS && xt_now_ms() < end)
        ucp_worker_progress(r->w);
    if (UCS_PTR_IS_PTR(q)) {
        XT_CHECK(ucp_request_check_status(q) != UCS_INPROGRESS,
                 "the raw active message never completed");
        ucp_request_free(q);
    }
}

static void hdr_make(unsigned char *h, uint32_t len, const unsigned char *tok,
                     uint64_t seq)
{
    memset(h, 0, AM_HDR);
    h[0] = 0x58;
    h[1] = 1;
    memcpy(h + 4, &len, 4);     /* the test runs little-endian */
    memcpy(h + 8, tok, 16);
    memcpy(h + 24, &seq, 8);
}

/* ---- 1. hostile active messages ------------------------------------------ */

typedef struct legit {
    xfer_agent_t *ini;
    const char *tgt;
    unsigned n;
} legit_t;

static void legit_send(legit_t *l)
{
    char m[32];
    int k = snprintf(m, sizeof m, "legit-%u", l->n++);

    XT_STATUS(xfer_notif_send(l->ini, l->tgt, m, (size_t)k, NULL), XFER_OK);
}

static void test_hostile_am(void)
{
    uint64_t seed = xt_seed(), rs = seed;
    char tname[64], iname[64];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    legit_t l;
    raw_t *r;
    /* Zeroed: the long headers send all 64 bytes, hdr_make writes 32. */
    unsigned char h[64] = {0}, tok[16], *big;
    unsigned long d0;
    size_t bigl = 1u << 20;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    tgt = mk_agent(tname, SPEC_TCP, 0, NULL);
    ini = mk_agent(iname, SPEC_TCP, 0, NULL);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    l = (legit_t){ini, tname, 0};
    legit_send(&l);
    XT_REQUIRE(xt_drain_until(tgt, got, 1, WAIT_MS, false) == 1,
               "the first legitimate notification did not arrive");
    r = raw_open(tgt);
    big = xt_alloc(bigl);
    xt_fill(big, bigl, seed);
    d0 = state_of(tgt).dropped;

    /* Random tokens: well-formed otherwise, seq 0 and others. */
    for (unsigned i = 0; i < 20; i++) {
        for (unsigned j = 0; j < 16; j += 8) {
            uint64_t v = xt_rand(&rs);
            memcpy(tok + j, &v, 8);
        }
        hdr_make(h, 5, tok, i < 10 ? 0 : xt_rand(&rs) % 64);
        raw_am(r, h, AM_HDR, "forge", 5, false);
        XT_CHECK(dropped_reaches(tgt, d0 + i + 1, r->w),
                 "forged token %u was not dropped: '%s'", i,
                 state_of(tgt).line);
        legit_send(&l);
    }
    d0 += 20;
    /* Headers of the wrong length: short, long, empty. */
    {
        size_t lens[] = {31, 33, 64, 0, 1};

        for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
            memset(tok, 0xa5, 16);
            hdr_make(h, 5, tok, 0);
            raw_am(r, lens[i] ? h : NULL, lens[i], "forge", 5, false);
            XT_CHECK(dropped_reaches(tgt, d0 + i + 1, r->w),
                     "a %zu-byte header was not dropped", lens[i]);
            legit_send(&l);
        }
        d0 += sizeof lens / sizeof *lens;
    }
    /* A length field that lies (shorter, longer, past XFER_NOTIF_MAX), a
     * bad magic, a bad version. */
    {
        uint32_t lies[] = {4, 6, 0, XFER_NOTIF_MAX + 1, 0xffffffffu};

        for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
            hdr_make(h, lies[i], tok, 0);
            raw_am(r, h, AM_HDR, "forge", 5, false);
            XT_CHECK(dropped_reaches(tgt, d0 + i + 1, r->w),
                     "length field %u for 5 bytes was not dropped", lies[i]);
            legit_send(&l);
        }
        d0 += sizeof lies / sizeof *lies;
        hdr_make(h, 5, tok, 0);
        h[0] = 0x59;
        raw_am(r, h, AM_HDR, "forge", 5, false);
        hdr_make(h, 5, tok, 0);
        h[1] = 2;
        raw_am(r, h, AM_HDR, "forge", 5, false);
        XT_CHECK(dropped_reaches(tgt, d0 + 2, r->w),
                 "bad magic or version not dropped");
        d0 += 2;
        legit_send(&l);
    }
    /* Larger than any notification, eager; then the rendezvous protocol
     * (the target takes no data it did not ask for). */
    hdr_make(h, (uint32_t)(XFER_NOTIF_MAX + 1), tok, 0);
    raw_am(r, h, AM_HDR, big, XFER_NOTIF_MAX + 1, false);
    XT_CHECK(dropped_reaches(tgt, d0 + 1, r->w), "an oversized notification "
             "was not dropped");
    legit_send(&l);
    hdr_make(h, (uint32_t)bigl, tok, 0);
    raw_am(r, h, AM_HDR, big, bigl, true);
    XT_CHECK(dropped_reaches(tgt, d0 + 2, r->w), "a rendezvous message was "
             "not dropped: '%s'", state_of(tgt).line);
    hdr_make(h, 100, tok, 0);
    raw_am(r, h, AM_HDR, big, 100, true);
    XT_CHECK(dropped_reaches(tgt, d0 + 3, r->w), "a small rendezvous message "
             "was not dropped");
    d0 += 3;
    legit_send(&l);

    /* Every legitimate one, in order, exactly once, from its name; none
     * other. */
    xt_drain_until(tgt, got, l.n, WAIT_MS, false);
    xt_sleep_ms(200);
    xt_drain_until(tgt, got, l.n + 1, 0, false);
    XT_CHECK(got->count == l.n, "%zu notifications delivered, %u sent",
             got->count, l.n);
    for (size_t i = 0; i < got->count; i++) {
        char want[32];
        int k = snprintf(want, sizeof want, "legit-%zu", i);

        XT_CHECK(strcmp(got->items[i].from, iname) == 0,
                 "notification %zu from '%s'", i, got->items[i].from);
        XT_CHECK(got->items[i].len == (size_t)k &&
                 memcmp(got->items[i].msg, want, (size_t)k) == 0,
                 "notification %zu is '%.*s', want '%s'", i,
                 (int)got->items[i].len, (char *)got->items[i].msg, want);
    }
    XT_CHECK(state_of(tgt).dropped == d0, "dropped %lu, want %lu",
             state_of(tgt).dropped, d0);
}

/* ---- 2. order and credits ---------------------------------------------- */

#define NOTIFS 2000

static size_t notif_size(uint64_t seed, unsigned i)
{
    uint64_t s = seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull);

    if (i == 0)
        return 0;
    if (i == 1 || i == NOTIFS - 1)
        return XFER_NOTIF_MAX;
    switch (xt_rand(&s) % 4) {
    case 0: return xt_rand(&s) % 16;
    case 1: return xt_rand(&s) % 512;
    case 2: return xt_rand(&s) % (XFER_NOTIF_MAX + 1);
    default: return XFER_NOTIF_MAX - xt_rand(&s) % 8;
    }
}

static void test_order_credits(void)
{
    uint64_t seed = xt_seed();
    char tname[64], iname[64];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *msg = xt_alloc(XFER_NOTIF_MAX), *buf = xt_alloc(8192),
                  *lbuf = xt_alloc(4096);
    xfer_desc_t ld = {(uintptr_t)lbuf, 64, 0}, rd = {(uintptr_t)buf, 64, 0};
    xfer_dlist_t ll = xt_dlist(&ld, 1), rl = xt_dlist(&rd, 1);
    xfer_req_t *req = NULL;
    unsigned reqs = 0;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    /* The target takes 8 at a time into its queue; credits of 4. */
    tgt = mk_agent(tname, SPEC_TCP ",notif_window=4", 8, NULL);
    ini = mk_agent(iname, SPEC_TCP ",notif_queue=4096", 0, NULL);
    xt_register(tgt, buf, 8192);
    xt_register(ini, lbuf, 4096);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tname,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    for (unsigned i = 0; i < NOTIFS; i++) {
        size_t n = notif_size(seed, i);

        xt_fill(msg, n, seed + i);
        /* Every third one rides a WRITE (whose request is reused when
         * done); the others go alone. */
        if (i % 3 == 0) {
            xfer_status_t st = xfer_req_status(req);

            if (st == XFER_IN_PROG)
                st = xt_wait_req(req, WAIT_MS);
            XT_REQUIRE(st == XFER_OK || i == 0, "WRITE before %u: %s", i,
                       xt_status_name(st));
            st = xfer_req_post(req, msg, n);

            XT_REQUIRE(st == XFER_OK || st == XFER_IN_PROG, "post %u: %s: %s",
                       i, xt_status_name(st), xfer_last_error());
            reqs++;
        } else {
            XT_STATUS_FATAL(xfer_notif_send(ini, tname, msg, n, NULL),
                            XFER_OK);
        }
    }
    XT_STATUS(xt_wait_req(req, WAIT_MS), XFER_OK);
    XT_CHECK(reqs == (NOTIFS + 2) / 3, "only %u notifications rode a WRITE", reqs);
    /* Not drained for a while: the target holds at most its queue and a
     * window. */
    xt_sleep_ms(500);
    XT_CHECK(state_of(tgt).recv <= 8 + 4, "the target took %lu of %u while "
             "its queue holds 8", state_of(tgt).recv, NOTIFS);
    xt_drain_until(tgt, got, NOTIFS, 30000, false);
    xt_sleep_ms(100);
    xt_drain_until(tgt, got, NOTIFS + 1, 0, false);
    XT_CHECK(got->count == NOTIFS, "%zu of %u notifications arrived (%u on "
             "WRITEs); target '%s'; initiator '%s'", got->count, NOTIFS, reqs,
             state_of(tgt).line, state_of(ini).line);
    if (got->count != NOTIFS) {
        /* Which ones went missing. */
        size_t j = 0;

        for (unsigned i = 0; i < NOTIFS && j <= got->count; i++) {
            size_t n = notif_size(seed, i);

            if (j < got->count && got->items[j].len == n &&
                xt_check(got->items[j].msg, n, seed + i) < 0)
                j++;
            else
                XT_FAIL("notification %u (%zu bytes, %s) is missing", i, n,
                        i % 3 ? "alone" : "on a WRITE");
        }
    }
    for (size_t i = 0; i < got->count && i < NOTIFS; i++) {
        size_t n = notif_size(seed, (unsigned)i);
        long bad;

        if (got->items[i].len != n) {
            XT_FAIL("notification %zu: %zu bytes, want %zu", i,
                    got->items[i].len, n);
            break;
        }
        if ((bad = xt_check(got->items[i].msg, n, seed + i)) >= 0) {
            XT_FAIL("notification %zu: byte %ld differs (out of order?)", i,
                    bad);
            break;
        }
        XT_CHECK(strcmp(got->items[i].from, iname) == 0, "from '%s'",
                 got->items[i].from);
    }
    XT_CHECK(state_of(tgt).dropped == 0, "dropped: '%s'", state_of(tgt).line);
}

/* notif_queue: past it, xfer_notif_send says XFER_ERR_BUSY and why; the
 * ones queued still arrive. */
static void test_notif_queue_busy(void)
{
    char tname[64], iname[64];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    unsigned ok = 0;
    xfer_status_t s = XFER_OK;

    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    tgt = mk_agent(tname, SPEC_TCP ",notif_window=2", 2, NULL);
    ini = mk_agent(iname, SPEC_TCP ",notif_queue=8", 0, NULL);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < 100; i++) {
        char m[16];
        int k = snprintf(m, sizeof m, "q%u", i);

        if ((s = xfer_notif_send(ini, tname, m, (size_t)k, NULL)) != XFER_OK)
            break;
        ok++;
    }
    XT_STATUS(s, XFER_ERR_BUSY);
    XT_ERR_HAS("ucx", "notif_queue", tname);
    XT_CHECK(ok >= 8 && ok <= 8 + 2 + 2, "%u accepted before BUSY", ok);
    xt_drain_until(tgt, got, ok, WAIT_MS, false);
    XT_CHECK(got->count == ok, "%zu of %u arrived", got->count, ok);
    for (size_t i = 0; i < got->count; i++) {
        char want[16];
        int k = snprintf(want, sizeof want, "q%zu", i);

        XT_CHECK(got->items[i].len == (size_t)k &&
                 memcmp(got->items[i].msg, want, (size_t)k) == 0,
                 "notification %zu out of order", i);
    }
    /* Room again. */
    XT_STATUS(xfer_notif_send(ini, tname, "again", 5, NULL), XFER_OK);
    XT_CHECK(xt_drain_until(tgt, got, ok + 1, WAIT_MS, false) == ok + 1,
             "no notification after BUSY");
}

/* ---- child processes -------------------------------------------------- */

static char *line_buf(void)
{
    char *b = malloc(LINE_MAX_);

    XT_REQUIRE(b, "out of memory");
    xt_defer_late(free, b);
    return b;
}

static void proc_end(void *p) { xt_proc_end(p, 10000); }

/* A child running this program in a role; its first line is its
 * metadata ("MD <blob>"), copied into md. */
static xt_proc_t *proc_start(const char *role, const char *name,
                             const char *spec, const char *arg, char *md)
{
    xt_proc_t *p = xt_alloc(sizeof *p);
    char *argv[] = {self_exe, (char *)role, (char *)name, (char *)spec,
                    (char *)arg, NULL};

    xt_proc_start(p, name, argv);
    xt_defer(proc_end, p);
    xt_proc_line(p, md, LINE_MAX_, WAIT_MS);
    XT_REQUIRE(strncmp(md, "MD ", 3) == 0, "child %s said '%.200s'", name,
               md);
    memmove(md, md + 3, strlen(md + 3) + 1);
    return p;
}

/* The child side.  Lines in, one line out per command:
 *   load <blob>          -> "ok" | "err ..."
 *   round <r> <peer>     (mutual) WRITE 1 MiB of pattern r into the peer,
 *                        wait for it and the peer's notification r, check
 *                        what the peer wrote -> "ok" | "err ..."
 *   check <seed> <off> <len> -> "ok" | "bad <offset>"
 *   quit                 -> exit 0 */
#define CHILD_BUF (8u << 20)
#define MUTUAL_LEN (1u << 20)

static int child_fail(const char *what)
{
    printf("err %s: %s\n", what, xfer_last_error());
    fflush(stdout);
    return 1;
}

static void child_collect(void *arg, const char *from, const void *msg,
                          size_t len)
{
    unsigned *last = arg;
    char b[32];

    (void)from;
    if (len < sizeof b) {
        memcpy(b, msg, len);
        b[len] = '\0';
        *last = (unsigned)strtoul(b, NULL, 10) + 1;
    }
}

struct seen {
    const char *want;
    bool found;
};

static void child_seen(void *arg, const char *from, const void *msg,
                       size_t len)
{
    struct seen *w = arg;

    (void)from;
    if (len == strlen(w->want) && !memcmp(msg, w->want, len))
        w->found = true;
}

static uint64_t mutual_seed(const char *writer, unsigned r)
{
    uint64_t h = 1469598103934665603ull;

    for (const char *c = writer; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h + r;
}

static int child_main(const char *role, const char *name, const char *spec,
                      const char *arg)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *m = NULL;
    unsigned char *buf;
    xfer_desc_t d;
    xfer_dlist_t dl;
    char *blob = NULL, *line = malloc(LINE_MAX_), peer[XFER_NAME_MAX + 1];
    size_t len;
    unsigned heard = 0; /* notifications "r" from the peer: last r + 1 */
    uint64_t remote = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    xfer_agent_opts_init(&o);
    o.name = name;
    if (posix_memalign((void **)&buf, 4096, CHILD_BUF) || !line)
        return 1;
    xt_fill(buf, CHILD_BUF, strtoull(arg, NULL, 0));
    if (xfer_agent_create(&o, &a) != XFER_OK)
        return child_fail("agent");
    if (xfer_backend_add(a, spec, NULL) != XFER_OK)
        return child_fail("backend");
    d = (xfer_desc_t){(uintptr_t)buf, CHILD_BUF, 0};
    dl = xt_dlist(&d, 1);
    if (xfer_mem_register(a, &dl, NULL, &m) != XFER_OK)
        return child_fail("register");
    if (xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) != XFER_OK)
        return child_fail("md_get");
    printf("MD %s\n", blob);
    xfer_free(blob);
    (void)role;
    while (fgets(line, (int)LINE_MAX_, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strcmp(line, "quit"))
            break;
        if (!strncmp(line, "load ", 5)) {
            json_t *root = json_loads(line + 5, 0, NULL);
            json_t *reg = root ? json_array_get(json_object_get(root,
                                                "regions"), 0) : NULL;

            if (!reg || !xt_json_u64(json_object_get(reg, "addr"), &remote)) {
                printf("err no region in the blob\n");
            } else if (xfer_md_load(a, line + 5, strlen(line + 5), peer,
                                    sizeof peer) != XFER_OK) {
                child_fail("load");
            } else {
                printf("ok\n");
            }
            json_decref(root);
        } else if (!strncmp(line, "check ", 6)) {
            unsigned long long seed, off, n;
            long bad;

            sscanf(line + 6, "%llu %llu %llu", &seed, &off, &n);
            bad = xt_check(buf + off, n, seed);
            printf(bad < 0 ? "ok\n" : "bad %ld\n", bad);
        } else if (!strncmp(line, "round ", 6)) {
            unsigned r = (unsigned)strtoul(line + 6, NULL, 10);
            xfer_desc_t l = {(uintptr_t)buf, MUTUAL_LEN, 0},
                        rd = {remote + MUTUAL_LEN, MUTUAL_LEN, 0};
            xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&rd, 1);
            xfer_req_t *q = NULL;
            char note[16];
            int k = snprintf(note, sizeof note, "%u", r);
            uint64_t end = xt_now_ms() + WAIT_MS;
            xfer_status_t s;
            long bad;

            xt_fill(buf, MUTUAL_LEN, mutual_seed(name, r));
            if (xfer_req_create(a, XFER_OP_WRITE, &ll, &rl, peer, NULL, &q) !=
                XFER_OK) {
                child_fail("create");
                continue;
            }
            s = xfer_req_post(q, note, (size_t)k);
            if (s == XFER_IN_PROG)
                s = xfer_req_wait(q, WAIT_MS);
            if (s != XFER_OK) {
                /* Before release, which clears the sentence. */
                child_fail(s == XFER_IN_PROG ? "write (still in progress)"
                                             : "write");
                if (s != XFER_IN_PROG)
                    xfer_req_release(q);
                continue;
            }
            xfer_req_release(q);
            while (heard <= r && xt_now_ms() < end) {
                xfer_notif_drain(a, child_collect, &heard, NULL);
                if (heard <= r)
                    xt_sleep_ms(1);
            }
            if (heard <= r) {
                printf("err no notification %u from %s\n", r, peer);
                continue;
            }
            bad = xt_check(buf + MUTUAL_LEN, MUTUAL_LEN,
                           mutual_seed(peer, r));
            if (bad >= 0)
                printf("err round %u: byte %ld differs\n", r, bad);
            else
                printf("ok\n");
        } else if (!strncmp(line, "wait ", 5)) {
            /* Until a notification with this text came (any before it
             * are dropped) -> "ok" | "err ..." */
            struct seen w = {line + 5, false};
            uint64_t end = xt_now_ms() + WAIT_MS;

            while (!w.found && xt_now_ms() < end) {
                xfer_notif_drain(a, child_seen, &w, NULL);
                if (!w.found)
                    xt_sleep_ms(1);
            }
            printf(w.found ? "ok\n" : "err no notification '%s'\n", w.want);
        } else {
            printf("err unknown command\n");
        }
    }
    xfer_mem_deregister(a, m);
    xfer_agent_destroy(a);
    free(buf);
    free(line);
    return 0;
}

/* ---- 3. two agents write to each other at the same moment ------------------ */

static void test_mutual(void)
{
    char *mda = line_buf(), *mdb = line_buf(), *l = line_buf();
    char na[64], nb[64];
    xt_proc_t *a, *b;

    snprintf(na, sizeof na, "%s", xt_name("ma"));
    snprintf(nb, sizeof nb, "%s", xt_name("mb"));
    a = proc_start("child", na, SPEC_TCP, "1", mda);
    b = proc_start("child", nb, SPEC_TCP, "2", mdb);
    XT_REQUIRE(!strcmp(xt_proc_ask(a, l, LINE_MAX_, WAIT_MS,
                                   "load %s", mdb), "ok"),
               "a: %s", l);
    XT_REQUIRE(!strcmp(xt_proc_ask(b, l, LINE_MAX_, WAIT_MS,
                                   "load %s", mda), "ok"),
               "b: %s", l);
    for (unsigned r = 0; r < 20; r++) {
        char la[256], lb[256];

        /* The barrier: both commands go before either answer is read. */
        fprintf(a->in, "round %u\n", r);
        fprintf(b->in, "round %u\n", r);
        fflush(a->in);
        fflush(b->in);
        xt_proc_line(a, la, sizeof la, 2 * WAIT_MS);
        xt_proc_line(b, lb, sizeof lb, 2 * WAIT_MS);
        XT_REQUIRE(!strcmp(la, "ok") && !strcmp(lb, "ok"),
                   "round %u: a '%s', b '%s'", r, la, lb);
    }
}

/* ---- 4. four workers, four threads ----------------------------------------- */

#define T4_LEN (1u << 20)
#define T4_ROUNDS 20

typedef struct t4 {
    xfer_agent_t *ini;
    const char *tgt;
    uint64_t remote, seed;
    unsigned idx;
    unsigned char *out, *in;
    char err[256];
} t4_t;

static void *t4_run(void *arg)
{
    t4_t *t = arg;

    for (unsigned r = 0; r < T4_ROUNDS && !t->err[0]; r++) {
        uint64_t s = t->seed + r * 16 + t->idx;
        size_t len = (size_t)(T4_LEN - (s % 4096));
        xfer_desc_t o = {(uintptr_t)t->out, len, 0},
                    i = {(uintptr_t)t->in, len, 0},
                    rd = {t->remote + (uint64_t)t->idx * T4_LEN, len, 0};
        xfer_dlist_t ol = xt_dlist(&o, 1), il = xt_dlist(&i, 1),
                     rl = xt_dlist(&rd, 1);
        xfer_req_t *w = NULL, *q = NULL;
        xfer_status_t st;
        long bad;

        xt_fill(t->out, len, s);
        memset(t->in, 0, len);
        if (xfer_req_create(t->ini, XFER_OP_WRITE, &ol, &rl, t->tgt, NULL,
                            &w) != XFER_OK ||
            ((st = xfer_req_post(w, NULL, 0)) != XFER_OK &&
             (st != XFER_IN_PROG || xfer_req_wait(w, WAIT_MS) != XFER_OK)) ||
            xfer_req_create(t->ini, XFER_OP_READ, &il, &rl, t->tgt, NULL,
                            &q) != XFER_OK ||
            ((st = xfer_req_post(q, NULL, 0)) != XFER_OK &&
             (st != XFER_IN_PROG || xfer_req_wait(q, WAIT_MS) != XFER_OK)))
            snprintf(t->err, sizeof t->err, "round %u: %s", r,
                     xfer_last_error());
        else if ((bad = xt_check(t->in, len, s)) >= 0)
            snprintf(t->err, sizeof t->err, "round %u: byte %ld of %zu "
                     "differs", r, bad, len);
        if (w)
            xfer_req_release(w);
        if (q)
            xfer_req_release(q);
    }
    return NULL;
}

static void test_four_workers(void)
{
    uint64_t seed = xt_seed();
    char tname[64], iname[64];
    xfer_agent_t *tgt, *ini;
    unsigned char *tb = xt_alloc(4 * T4_LEN);
    t4_t t[4];
    pthread_t th[4];

    printf("seed %" PRIu64 "\n", seed);
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    tgt = mk_agent(tname, SPEC_TCP ",workers=4", 0, NULL);
    ini = mk_agent(iname, SPEC_TCP ",workers=4", 0, NULL);
    xt_register(tgt, tb, 4 * T4_LEN);
    for (unsigned i = 0; i < 4; i++) {
        t[i] = (t4_t){.ini = ini, .tgt = tname, .remote = (uintptr_t)tb,
                      .seed = seed, .idx = i, .out = xt_alloc(T4_LEN),
                      .in = xt_alloc(T4_LEN)};
        xt_register(ini, t[i].out, T4_LEN);
        xt_register(ini, t[i].in, T4_LEN);
    }
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < 4; i++)
        XT_REQUIRE(pthread_create(&th[i], NULL, t4_run, &t[i]) == 0,
                   "pthread_create");
    for (unsigned i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        XT_CHECK(!t[i].err[0], "thread %u: %s", i, t[i].err);
    }
    /* The target's memory holds each thread's last round. */
    for (unsigned i = 0; i < 4; i++) {
        uint64_t s = seed + (T4_ROUNDS - 1) * 16 + i;
        size_t len = (size_t)(T4_LEN - (s % 4096));
        long bad = xt_check(tb + (size_t)i * T4_LEN, len, s);

        XT_CHECK(bad < 0, "target slice %u: byte %ld differs", i, bad);
    }
    XT_CHECK(strstr(state_of(ini).line, "4 worker(s)") != NULL, "state '%s'",
             state_of(ini).line);
}

/* ---- 5. a target SIGKILLed mid-transfer ------------------------------------ */

#define KILL_TIMEOUT_MS 3000
#define SLACK_MS 15000

static uint64_t md_addr(const char *md)
{
    json_t *root = xt_blob_parse(md, strlen(md));
    uint64_t a = 0;

    XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0), "addr"),
                           &a), "no region address");
    return a;
}

static void killed_target(const char *spec, bool stops_data)
{
    char *md = line_buf(), *md2 = line_buf(), *l = line_buf();
    char tname[64], t2name[64], iname[64], full[256];
    xt_proc_t *t, *t2;
    xfer_agent_t *ini;
    unsigned char *big = xt_alloc(CHILD_BUF), *small = xt_alloc(4096);
    uint64_t ra, ra2, t0;
    xfer_req_t *q[20];
    size_t nq = 0;
    xfer_status_t st;

    snprintf(full, sizeof full, "%s,timeout_ms=%u", spec, KILL_TIMEOUT_MS);
    snprintf(tname, sizeof tname, "%s", xt_name("victim"));
    snprintf(t2name, sizeof t2name, "%s", xt_name("other"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    t = proc_start("child", tname, full, "7", md);
    t2 = proc_start("child", t2name, full, "8", md2);
    ini = mk_agent(iname, full, 0, NULL);
    xt_register(ini, big, CHILD_BUF);
    xt_register(ini, small, 4096);
    XT_STATUS_FATAL(xfer_md_load(ini, md, strlen(md), NULL, 0), XFER_OK);
    XT_STATUS_FATAL(xfer_md_load(ini, md2, strlen(md2), NULL, 0), XFER_OK);
    ra = md_addr(md);
    ra2 = md_addr(md2);
    /* One transfer and notification first: everything is connected. */
    q[0] = xt_post_to(ini, XFER_OP_WRITE, small, 64, ra, tname, "warm", &st);
    XT_STATUS_FATAL(st == XFER_IN_PROG ? xt_wait_req(q[0], WAIT_MS) : st,
                    XFER_OK);
    /* Stopped, the target answers nothing: over tcp what is posted now
     * stays in flight until it dies. */
    kill(t->pid, SIGSTOP);
    xt_fill(big, CHILD_BUF, 99);
    q[nq++] = xt_post_to(ini, XFER_OP_WRITE, big, CHILD_BUF, ra, tname, NULL,
                         &st);
    XT_CHECK(st == XFER_IN_PROG || st == XFER_OK, "big WRITE: %s",
             xt_status_name(st));
    q[nq++] = xt_post_to(ini, XFER_OP_READ, big, 1u << 20, ra, tname, NULL,
                         &st);
    XT_CHECK(st == XFER_IN_PROG || st == XFER_OK, "READ: %s",
             xt_status_name(st));
    for (unsigned i = 0; i < 10; i++) {
        char n[16];

        snprintf(n, sizeof n, "s%u", i);
        q[nq++] = xt_post_to(ini, XFER_OP_WRITE, small + 64 * i, 64,
                             ra + 4096 + 64 * i, tname, n, &st);
        XT_CHECK(st == XFER_IN_PROG || st == XFER_OK, "small WRITE: %s",
                 xt_status_name(st));
    }
    if (stops_data)
        XT_CHECK(xfer_req_status(q[0 + 1]) == XFER_IN_PROG,
                 "a READ from a stopped target completed: %s",
                 xt_status_name(xfer_req_status(q[1])));
    xt_proc_kill(t);
    t0 = xt_now_ms();
    for (size_t i = 0; i < nq; i++) {
        if (!q[i])
            continue;
        st = xt_wait_req(q[i], KILL_TIMEOUT_MS + SLACK_MS);
        /* Over shared memory (cma) a WRITE may finish without the target
         * running; over tcp nothing can. */
        if (stops_data || st != XFER_OK) {
            XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
            XT_ERR_HAS(tname);
        }
    }
    XT_CHECK(xt_now_ms() - t0 <= KILL_TIMEOUT_MS + SLACK_MS,
             "in-flight requests ended after %" PRIu64 " ms",
             xt_now_ms() - t0);
    /* Later posts fail at once. */
    t0 = xt_now_ms();
    {
        xfer_req_t *r = xt_post_to(ini, XFER_OP_WRITE, small, 64, ra, tname,
                                   NULL, &st);

        if (r && st == XFER_IN_PROG)
            st = xt_wait_req(r, WAIT_MS);
        /* An endpoint UCP failed before the control channel saw the
         * death leaves the peer unheard: TIMEOUT at once, naming it
         * (docs/api.md, "The ucx backend"); seen on slow runs. */
        if (st == XFER_ERR_TIMEOUT)
            XT_ERR_HAS(tname, "has not answered");
        else
            XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
        /* A notification meets the same unheard peer until the control
         * channel knows it dead, which must come within the bound. */
        while ((st = xfer_notif_send(ini, tname, "x", 1, NULL)) ==
                   XFER_ERR_TIMEOUT &&
               xt_now_ms() - t0 < 5000) {
            XT_ERR_HAS(tname, "has not answered");
            xt_sleep_ms(10);
        }
        XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
        XT_CHECK(xt_now_ms() - t0 < 5000, "a post to a dead target took "
                 "%" PRIu64 " ms", xt_now_ms() - t0);
    }
    /* The other target does not notice. */
    xt_fill(small, 4096, 5);
    q[0] = xt_post_to(ini, XFER_OP_WRITE, small, 4096, ra2 + 8192, t2name,
                      NULL, &st);
    XT_STATUS(st == XFER_IN_PROG ? xt_wait_req(q[0], WAIT_MS) : st, XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t2, l, LINE_MAX_, WAIT_MS,
                                 "check 5 8192 4096"), "ok"),
             "the other target got '%s'", l);
    /* The same name again, a new epoch: it loads and works. */
    xt_proc_end(t, 5000);
    t = proc_start("child", tname, full, "9", md);
    XT_STATUS_FATAL(xfer_md_load(ini, md, strlen(md), NULL, 0), XFER_OK);
    ra = md_addr(md);
    xt_fill(small, 4096, 6);
    q[0] = xt_post_to(ini, XFER_OP_WRITE, small, 4096, ra + 4096, tname,
                      "back", &st);
    XT_STATUS(st == XFER_IN_PROG ? xt_wait_req(q[0], WAIT_MS) : st, XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "check 6 4096 4096"), "ok"),
             "the restarted target got '%s'", l);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS, "wait back"), "ok"),
             "the restarted target: '%s'", l);
    (void)t2;
}

static void test_killed_tcp(void) { killed_target(SPEC_TCP, true); }
static void test_killed_shm(void) { killed_target(SPEC_SHM, false); }

/* ---- 5b. a stopped target, continued, and an agent without a thread -------- */

#define STOP_TIMEOUT_MS 1000

/* A transfer to a stopped target times out and the peer is unheard: posts
 * fail at once with XFER_ERR_TIMEOUT until its process answers the token
 * request.  Once continued it answers; an application without a progress
 * thread that only posts again must see a post succeed (the post drives
 * the control channel), within a generous bound, and the bytes arrive. */
static void test_unheard_repost(void)
{
    char *md = line_buf(), *l = line_buf();
    char tname[64], iname[64], full[256];
    xt_proc_t *t;
    xfer_agent_t *ini;
    unsigned char *big = xt_alloc(1u << 20), *small = xt_alloc(4096);
    xfer_desc_t ld = {0}, rd = {0};
    xfer_dlist_t ll, rl;
    xfer_req_t *q, *r = NULL;
    uint64_t ra, t0;
    xfer_status_t st;
    unsigned refused = 0;

    snprintf(full, sizeof full, "%s,timeout_ms=%u", SPEC_TCP,
             STOP_TIMEOUT_MS);
    snprintf(tname, sizeof tname, "%s", xt_name("stopped"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    t = proc_start("child", tname, full, "7", md);
    ini = xt_agent(iname, full, 0);
    xt_register(ini, big, 1u << 20);
    xt_register(ini, small, 4096);
    XT_STATUS_FATAL(xfer_md_load(ini, md, strlen(md), NULL, 0), XFER_OK);
    ra = md_addr(md);
    q = xt_post_to(ini, XFER_OP_WRITE, small, 64, ra, tname, "warm", &st);
    XT_STATUS_FATAL(st == XFER_IN_PROG
                        ? xt_wait_req_pump(q, &ini, 1, WAIT_MS)
                        : st,
                    XFER_OK);
    /* Stopped, it answers nothing: over tcp a READ cannot complete.  The
     * stop is waited for: kill() returns before every thread of it has
     * stopped, and its progress thread could serve the READ meanwhile. */
    kill(t->pid, SIGSTOP);
    {
        int ws = 0;

        XT_REQUIRE(waitpid(t->pid, &ws, WUNTRACED) == t->pid &&
                       WIFSTOPPED(ws),
                   "the target did not stop (wait status 0x%x)", ws);
    }
    q = xt_post_to(ini, XFER_OP_READ, big, 1u << 20, ra, tname, NULL, &st);
    XT_STATUS_FATAL(st == XFER_IN_PROG
                        ? xt_wait_req_pump(q, &ini, 1,
                                           STOP_TIMEOUT_MS + SLACK_MS)
                        : st,
                    XFER_ERR_TIMEOUT);
    /* Unheard: a post fails at once, saying why. */
    xt_fill(small, 4096, 6);
    ld = (xfer_desc_t){(uintptr_t)small, 4096, 0};
    rd = (xfer_desc_t){ra + 4096, 4096, 0};
    ll = xt_dlist(&ld, 1);
    rl = xt_dlist(&rd, 1);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tname,
                                    NULL, &r), XFER_OK);
    xt_req_defer(r);
    XT_STATUS(xfer_req_post(r, "after", 5), XFER_ERR_TIMEOUT);
    XT_ERR_HAS(tname, "has not answered");
    /* Continued: posting again, and nothing else (no xfer_progress), must
     * get through once its answer comes. */
    kill(t->pid, SIGCONT);
    t0 = xt_now_ms();
    for (;;) {
        st = xfer_req_post(r, "after", 5);
        if (st != XFER_ERR_TIMEOUT || xt_now_ms() - t0 > SLACK_MS)
            break;
        refused++;
        xt_sleep_ms(1);
    }
    XT_CHECK(st == XFER_IN_PROG || st == XFER_OK, "%u posts after SIGCONT "
             "were refused for %" PRIu64 " ms; the last: %s: %s", refused,
             xt_now_ms() - t0, xt_status_name(st), xfer_last_error());
    if (st == XFER_IN_PROG)
        st = xt_wait_req_pump(r, &ini, 1, WAIT_MS);
    XT_STATUS(st, XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "check 6 4096 4096"), "ok"),
             "the continued target got '%s'", l);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "wait after"), "ok"),
             "the continued target: '%s'", l);
}

/* ---- 6. bad configuration -------------------------------------------------- */

static void bad_spec(const char *spec, xfer_status_t want, const char *s1,
                     const char *s2)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    XT_STATUS(xfer_backend_add(a, spec, NULL), want);
    XT_ERR_HAS(s1, s2);
}

static void test_bad_config(void)
{
    bad_spec("ucx:bogus=1", XFER_ERR_CONFIG, "'ucx'", "'bogus'");
    bad_spec("ucx:error_mode=bogus", XFER_ERR_CONFIG, "error_mode 'bogus'",
             "peer or none");
    bad_spec("ucx:workers=0", XFER_ERR_CONFIG, "workers", "ucx");
    bad_spec("ucx:workers=17", XFER_ERR_CONFIG, "workers", "ucx");
    {
        xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);
        xfer_status_t s = xfer_backend_add(a, "ucx:tls=nonexistent", NULL);

        XT_CHECK(s == XFER_ERR_CONFIG || s == XFER_ERR_BACKEND,
                 "tls=nonexistent: %s", xt_status_name(s));
        XT_ERR_HAS("ucx", "nonexistent");
    }
}

/* Connection info that is not ucx's: refused, naming ucx. */
static void test_forged_info(void)
{
    xfer_agent_t *tgt = mk_agent(xt_name("tgt"), SPEC_TCP, 0, NULL);
    xfer_agent_t *ini = mk_agent(xt_name("ini"), SPEC_TCP, 0, NULL);
    size_t len;
    char *blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, &len);
    const char *edits[][2] = {
        /* prefix replaced, or the whole text: what it breaks */
        {"AAAA", "bad magic"},
        {"WFVDWAIB", "version 2"},        /* "XUCX", version 2 */
        {"WFVDWAEA", "workers"},          /* 0 workers */
        {"WFVDWAER", "workers"},          /* 17 workers */
    };

    for (size_t i = 0; i < sizeof edits / sizeof *edits + 2; i++) {
        json_t *root = xt_blob_parse(blob, len);
        json_t *be = json_array_get(json_object_get(root, "backends"), 0);
        const char *conn = json_string_value(json_object_get(be, "conn"));
        char *c = strdup(conn), *forged;
        size_t fl;
        const char *why;

        XT_REQUIRE(c && strlen(c) > 60, "no connection info");
        if (i < sizeof edits / sizeof *edits) {
            memcpy(c, edits[i][0], strlen(edits[i][0]));
            why = edits[i][1];
        } else if (i == sizeof edits / sizeof *edits) {
            c[40] = '\0'; /* 30 bytes */
            why = "too short";
        } else {
            c[strlen(c) - 8] = '\0'; /* the last address cut */
            why = "overruns";
        }
        json_object_set_new(be, "conn", json_string(c));
        free(c);
        forged = xt_blob_dump(root, &fl);
        XT_STATUS(xfer_md_load(ini, forged, fl, NULL, 0), XFER_ERR_INVALID);
        XT_ERR_HAS("ucx", why);
    }
    XT_STATUS(xfer_md_load(ini, blob, len, NULL, 0), XFER_OK);
}

/* A worker address with bytes changed, the way a peer without the secret
 * could hand one out: UCX 1.13 aborts inside ucp_ep_create on some, so
 * loading such metadata must not pass it to UCX (docs/security.md,
 * "UCX"): every load succeeds, and no endpoint is made. */
static void test_mangled_address(void)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    xfer_agent_t *tgt = mk_agent(xt_name("tgt"), SPEC_TCP, 0, NULL);
    xfer_agent_t *ini = mk_agent(xt_name("ini"), SPEC_TCP, 0, NULL);
    const char *tname = xfer_agent_name(tgt);
    uint64_t seed = xt_seed();
    size_t len;
    char *blob;

    /* A region, so that loading has a packed key to unpack too. */
    xt_register(tgt, xt_alloc(4096), 4096);
    blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, &len);
    printf("seed %" PRIu64 "\n", seed);
    for (int i = 0; i < 100; i++) {
        json_t *root = xt_blob_parse(blob, len);
        json_t *be = json_array_get(json_object_get(root, "backends"), 0);
        char *c = strdup(json_string_value(json_object_get(be, "conn")));
        size_t cl, fl;
        char *forged;

        XT_REQUIRE(c && (cl = strlen(c)) > 64, "no connection info");
        /* Characters from 48 on encode the worker address's own bytes
         * (32 bytes of head and 2 of length come first): 1 to 4 of them. */
        for (int k = 0, n = 1 + (int)(xt_rand(&seed) % 4); k < n; k++) {
            size_t at = 48 + xt_rand(&seed) % (cl - 52);

            if (c[at] != '=')
                c[at] = b64[xt_rand(&seed) % 64];
        }
        json_object_set_new(be, "conn", json_string(c));
        free(c);
        forged = xt_blob_dump(root, &fl);
        XT_STATUS(xfer_md_load(ini, forged, fl, NULL, 0), XFER_OK);
        XT_STATUS(xfer_md_invalidate(ini, tname), XFER_OK);
    }
    XT_CHECK(strstr(state_of(ini).line, "endpoints 0 made") != NULL,
             "loading metadata made endpoints: '%s'", state_of(ini).line);
    /* The genuine blob still loads and works. */
    XT_STATUS(xfer_md_load(ini, blob, len, NULL, 0), XFER_OK);
    XT_STATUS(xfer_md_connect(ini, tname, 10000), XFER_OK);
}

/* UCX_TLS from the environment when tls is empty. */
static void test_env_tls(void)
{
    xfer_agent_t *a;
    counters_t c;
    char *old = getenv("UCX_TLS") ? strdup(getenv("UCX_TLS")) : NULL;

    setenv("UCX_TLS", "tcp", 1);
    a = mk_agent(xt_name("env"), "ucx:devices=lo", 0, NULL);
    if (old) {
        setenv("UCX_TLS", old, 1);
        free(old);
    } else {
        unsetenv("UCX_TLS");
    }
    c = state_of(a);
    XT_CHECK(strstr(c.line, "tcp") != NULL, "state '%s'", c.line);
    XT_CHECK(!strstr(c.line, "posix") && !strstr(c.line, "sysv") &&
             !strstr(c.line, "cma") && !strstr(c.line, "self"),
             "UCX_TLS=tcp, yet the state says '%s'", c.line);
}

/* ---- 7. the shared secret -------------------------------------------------- */

static const char *key_file(const char *dir, const char *name)
{
    static char paths[2][4096];
    static int n;
    char *p = paths[n++ % 2];
    unsigned char k[32];
    FILE *f;

    snprintf(p, sizeof paths[0], "%s/%s", dir, name);
    XT_REQUIRE(getrandom(k, sizeof k, 0) == (ssize_t)sizeof k, "getrandom");
    XT_REQUIRE((f = fopen(p, "w")) != NULL, "%s: %s", p, strerror(errno));
    fwrite(k, 1, sizeof k, f);
    fclose(f);
    chmod(p, 0600);
    return p;
}

static void rm_dir(void *d)
{
    char cmd[4200];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", (char *)d);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", (char *)d);
    free(d);
}

static void test_auth(void)
{
    char tmpl[] = "/tmp/xfer-ucx-key.XXXXXX", *dir = mkdtemp(tmpl);
    char tname[64], iname[64], nname[64];
    const char *key, *other;
    xfer_agent_t *tgt, *ini, *nokey, *wrong;
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *buf = xt_alloc(4096), *lb = xt_alloc(4096);
    xfer_status_t st;
    xfer_req_t *q;

    XT_REQUIRE(dir, "mkdtemp");
    xt_defer_late(rm_dir, strdup(dir));
    key = key_file(dir, "key");
    other = key_file(dir, "other");
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    snprintf(nname, sizeof nname, "%s", xt_name("nokey"));
    tgt = mk_agent(tname, SPEC_TCP, 0, key);
    ini = mk_agent(iname, SPEC_TCP, 0, key);
    xt_register(tgt, buf, 4096);
    xt_register(ini, lb, 4096);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < 5; i++)
        XT_STATUS(xfer_notif_send(ini, tname, "k", 1, NULL), XFER_OK);
    xt_fill(lb, 4096, 3);
    q = xt_post_to(ini, XFER_OP_WRITE, lb, 4096, (uintptr_t)buf, tname, "w",
                   &st);
    XT_STATUS(st == XFER_IN_PROG ? xt_wait_req(q, WAIT_MS) : st, XFER_OK);
    XT_CHECK(xt_check(buf, 4096, 3) < 0, "keyed WRITE lost bytes");
    XT_CHECK(xt_drain_until(tgt, got, 6, WAIT_MS, false) == 6,
             "%zu of 6 keyed notifications", got->count);

    /* Without the key, and with another: connecting fails with
     * XFER_ERR_AUTH and the sentence, and so does every later post.
     * (A WRITE posted before the channel's handshake failed may land:
     * UCP's data path takes the rkey as its only capability, see
     * docs/security.md; the agent learns of the refusal from the
     * channel.) */
    nokey = mk_agent(nname, SPEC_TCP, 0, NULL);
    wrong = mk_agent(xt_name("wrong"), SPEC_TCP, 0, other);
    for (int k = 0; k < 2; k++) {
        xfer_agent_t *a = k ? wrong : nokey;
        size_t len;
        char *blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, &len);

        if (k)
            blob = xt_blob_sign(blob, len, other, &len);
        xt_register(a, lb, 4096);
        XT_STATUS(xfer_md_load(a, blob, len, NULL, 0), XFER_OK);
        XT_STATUS(xfer_md_connect(a, tname, WAIT_MS), XFER_ERR_AUTH);
        XT_ERR_HAS(k ? "did not prove the shared secret"
                     : "requires authentication");
        q = xt_post_to(a, XFER_OP_WRITE, lb, 64, (uintptr_t)buf, tname, "x",
                       &st);
        if (q && st == XFER_IN_PROG)
            st = xt_wait_req(q, WAIT_MS);
        XT_STATUS(st, XFER_ERR_AUTH);
        XT_STATUS(xfer_notif_send(a, tname, "n", 1, NULL), XFER_ERR_AUTH);
    }
    /* The keyed pair goes on. */
    XT_STATUS(xfer_notif_send(ini, tname, "after", 5, NULL), XFER_OK);
    XT_CHECK(xt_drain_until(tgt, got, 7, WAIT_MS, false) == 7,
             "the keyed peer stopped after the refusals");
    for (size_t i = 0; i < got->count; i++)
        XT_CHECK(!strcmp(got->items[i].from, iname), "a notification from "
                 "'%s' reached the keyed target", got->items[i].from);
}

int main(int argc, char **argv)
{
    static const xt_test_t hostile[] = {
        XT_TEST(test_hostile_am),
        XT_TEST(test_order_credits),
        XT_TEST(test_notif_queue_busy),
        XT_TEST(test_auth),
        XT_END
    };
    static const xt_test_t procs[] = {
        XT_TEST(test_mutual),
        XT_TEST(test_four_workers),
        XT_TEST(test_killed_tcp),
        XT_TEST(test_killed_shm),
        XT_TEST(test_unheard_repost),
        XT_END
    };
    static const xt_test_t config[] = {
        XT_TEST(test_bad_config),
        XT_TEST(test_forged_info),
        XT_TEST(test_mangled_address),
        XT_TEST(test_env_tls),
        XT_END
    };
    static const xt_suite_t suites[] = {
        { "ucx-hostile", hostile },
        { "ucx-processes", procs },
        { "ucx-config", config },
    };
    ssize_t n;

    if (argc == 5 && !strcmp(argv[1], "child"))
        return child_main(argv[1], argv[2], argv[3], argv[4]);
    n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        xt_skip("cannot find this program (/proc/self/exe)");
    self_exe[n] = '\0';
    return xt_run(argv[0], suites, sizeof suites / sizeof *suites);
}
