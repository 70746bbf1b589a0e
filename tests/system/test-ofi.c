/* test-ofi.c - what the conformance suite cannot show of the ofi backend,
 * seen from outside and as a hostile peer: forged notification messages
 * and RMA with guessed keys from a raw libfabric endpoint, credits under a
 * target that does not drain, bad configuration and forged connection
 * info, and targets SIGKILLed or SIGSTOPped mid-transfer.  Every attack
 * runs beside a well-behaved peer whose traffic must arrive whole, in
 * order and exactly once. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "tests/common/xt.h"

#define WAIT_MS 20000
#define LINE_MAX_ (1u << 20)
#define PROV_TCP "tcp;ofi_rxm"
#define SPEC_TCP "ofi:provider=tcp;ofi_rxm,domain=lo"
#define SPEC_SHM "ofi:provider=shm"
/* The notification's header (plugins/common/nsess.h) and the connection
 * info's (plugins/ofi/ctl.c): their sizes and where fields are. */
#define NS_HDR 32u
#define INFO_HEAD 72u
#define INFO_PROV_AT 40u
#define INFO_FMT_AT 32u

static char self_exe[4096];

/* ---- agents ----------------------------------------------------------- */

static void agent_fini(void *a) { xfer_agent_destroy(a); }

/* An agent with one backend; queue: notif_queue_count (0: default). */
static xfer_agent_t *mk_agent(const char *name, const char *spec,
                              unsigned queue)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&o);
    o.name = name;
    o.progress_thread = 1;
    o.notif_queue_count = queue;
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

    XT_STATUS_FATAL(xfer_backend_find(a, "ofi", &b), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_state(b, c.line, sizeof c.line), XFER_OK);
    p = strstr(c.line, "notifications ");
    XT_REQUIRE(p && sscanf(p, "notifications %lu sent, %lu received, %lu "
                           "dropped", &c.sent, &c.recv, &c.dropped) == 3,
               "no counters in the state '%s'", c.line);
    return c;
}

/* The ofi connection info in an agent's metadata (base64 decoded). */
static unsigned char *conn_of(const char *blob, size_t blen, size_t *len)
{
    json_t *root = xt_blob_parse(blob, blen);
    json_t *bes = json_object_get(root, "backends"), *be;
    const char *conn = NULL;
    unsigned char *info;
    size_t i, cl;
    int n;

    json_array_foreach(bes, i, be)
        if (!strcmp(json_string_value(json_object_get(be, "plugin")), "ofi"))
            conn = json_string_value(json_object_get(be, "conn"));
    XT_REQUIRE(conn, "no ofi connection info in '%.300s'", blob);
    cl = strlen(conn);
    info = xt_alloc(cl + 4);
    n = EVP_DecodeBlock(info, (const unsigned char *)conn, (int)cl);
    XT_REQUIRE(n > (int)INFO_HEAD, "ofi connection info is not base64");
    /* EVP_DecodeBlock counts the padding as bytes. */
    while (cl > 0 && conn[cl - 1] == '=') {
        n--;
        cl--;
    }
    XT_REQUIRE(memcmp(info, "XOFI", 4) == 0, "no XOFI magic");
    *len = (size_t)n;
    return info;
}

/* blob with its ofi connection info replaced by info (len bytes); freed
 * after the test. */
static char *with_conn(const char *blob, size_t blen, const void *info,
                       size_t len, size_t *out_len)
{
    json_t *root = xt_blob_parse(blob, blen);
    json_t *bes = json_object_get(root, "backends"), *be;
    char *b64 = xt_alloc(len * 2 + 8);
    size_t i;

    EVP_EncodeBlock((unsigned char *)b64, info, (int)len);
    json_array_foreach(bes, i, be)
        if (!strcmp(json_string_value(json_object_get(be, "plugin")), "ofi"))
            json_object_set_new(be, "conn", json_string(b64));
    return xt_blob_dump(root, out_len);
}

/* The packed key (plugins/ofi/mem.c: "XFOK", zero, u64 key) and address
 * of region i in a blob. */
static void region_of(const char *blob, size_t i, uint64_t *addr,
                      uint64_t *key)
{
    json_t *root = xt_blob_parse(blob, strlen(blob));
    json_t *reg = xt_blob_region(root, i);
    const char *pub = json_string_value(
        json_object_get(json_object_get(reg, "pub"), "ofi"));
    unsigned char b[64];

    XT_REQUIRE(xt_json_u64(json_object_get(reg, "addr"), addr),
               "region %zu has no address", i);
    XT_REQUIRE(pub && strlen(pub) == 24 &&
               EVP_DecodeBlock(b, (const unsigned char *)pub, 24) == 18 &&
               !memcmp(b, "XFOK", 4), "region %zu: no ofi key", i);
    memcpy(key, b + 8, 8); /* the test runs little-endian */
}

/* A well-behaved initiator: each round a WRITE of 64 KiB of its own
 * pattern with notification "legit-<n>", checked at the target. */
#define LEGIT_LEN (64u << 10)
#define LEGIT_SLOTS 16u

typedef struct legit {
    xfer_agent_t *ini;
    const char *tgt;
    unsigned char *src, *dst; /* LEGIT_SLOTS slots each */
    uint64_t seed;
    unsigned n;
} legit_t;

static void legit_round(legit_t *l)
{
    unsigned slot = l->n % LEGIT_SLOTS;
    size_t off = (size_t)slot * LEGIT_LEN;
    char m[32];
    xfer_status_t st;
    xfer_req_t *q;
    long bad;

    snprintf(m, sizeof m, "legit-%u", l->n);
    xt_fill(l->src + off, LEGIT_LEN, l->seed + l->n);
    q = xt_post_to(l->ini, XFER_OP_WRITE, l->src + off, LEGIT_LEN,
                   (uintptr_t)l->dst + off, l->tgt, m, &st);
    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, WAIT_MS);
    XT_STATUS(st, XFER_OK);
    bad = xt_check(l->dst + off, LEGIT_LEN, l->seed + l->n);
    XT_CHECK(bad < 0, "legitimate WRITE %u: byte %ld differs at the target",
             l->n, bad);
    if (q)
        xt_req_release(q);
    l->n++;
}

/* Every legitimate notification, in order, exactly once, from its name;
 * nothing else. */
static void legit_verify(legit_t *l, xfer_agent_t *tgt, xt_notifs_t *got,
                         const char *iname)
{
    xt_drain_until(tgt, got, l->n, WAIT_MS, false);
    xt_sleep_ms(200);
    xt_drain_until(tgt, got, l->n + 1, 0, false);
    XT_CHECK(got->count == l->n, "%zu notifications delivered, %u sent: "
             "'%s'", got->count, l->n, state_of(tgt).line);
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
}

/* ---- a raw libfabric client: no xfer, no session, only the target's
 * published endpoint name ------------------------------------------------ */

#define RAW_BUF (2u << 20)
#define RAW_CTX 64u

typedef struct raw {
    struct fi_info *info;
    struct fid_fabric *fab;
    struct fid_domain *dom;
    struct fid_av *av;
    struct fid_cq *cq;
    struct fid_ep *ep;
    struct fid_mr *mr;
    void *desc;
    fi_addr_t peer;
    unsigned char *buf;
    struct fi_context2 ctx[RAW_CTX];
    unsigned next;
} raw_t;

/* Where byte off of a target's region at base is, as this provider's
 * RMA addresses it: a virtual address, or an offset (FI_MR_VIRT_ADDR). */
static uint64_t raw_at(const raw_t *r, uint64_t base, uint64_t off)
{
    return (r->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR) ? base + off
                                                             : off;
}

static void raw_fini(void *arg)
{
    raw_t *r = arg;

    if (r->ep)
        fi_close(&r->ep->fid);
    if (r->mr)
        fi_close(&r->mr->fid);
    if (r->av)
        fi_close(&r->av->fid);
    if (r->cq)
        fi_close(&r->cq->fid);
    if (r->dom)
        fi_close(&r->dom->fid);
    if (r->fab)
        fi_close(&r->fab->fid);
    if (r->info)
        fi_freeinfo(r->info);
    free(r);
}

#define FI_REQ(call)                                                        \
    do {                                                                    \
        int e_ = (int)(call);                                               \
        XT_REQUIRE(e_ == 0, "%s: %s", #call, fi_strerror(-e_));             \
    } while (0)

/* An RDM endpoint of provider prov (and domain dom, NULL: any) with the
 * target's endpoint name, from its metadata, in its address vector. */
static raw_t *raw_open(const char *prov, const char *dom, xfer_agent_t *tgt)
{
    raw_t *r = calloc(1, sizeof *r);
    struct fi_info *h = fi_allocinfo();
    struct fi_cq_attr cqa = {.format = FI_CQ_FORMAT_DATA, .size = 256,
                             .wait_obj = FI_WAIT_NONE};
    struct fi_av_attr ava = {.type = FI_AV_TABLE};
    size_t blen, ilen;
    char *blob = xt_md_get(tgt, XFER_MD_CONN, NULL, 0, &blen);
    unsigned char *info = conn_of(blob, blen, &ilen);
    uint16_t nl;
    int e;

    XT_REQUIRE(r && h, "out of memory");
    xt_defer(raw_fini, r);
    h->ep_attr->type = FI_EP_RDM;
    h->caps = FI_MSG | FI_RMA | FI_SEND | FI_RECV | FI_READ | FI_WRITE;
    h->mode = FI_CONTEXT | FI_CONTEXT2;
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
                              FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                              FI_MR_ENDPOINT;
    h->domain_attr->threading = FI_THREAD_DOMAIN;
    h->domain_attr->av_type = FI_AV_TABLE;
    h->fabric_attr->prov_name = strdup(prov);
    if (dom)
        h->domain_attr->name = strdup(dom);
    e = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, h, &r->info);
    fi_freeinfo(h);
    XT_REQUIRE(e == 0, "fi_getinfo for %s: %s", prov, fi_strerror(-e));
    FI_REQ(fi_fabric(r->info->fabric_attr, &r->fab, NULL));
    FI_REQ(fi_domain(r->fab, r->info, &r->dom, NULL));
    FI_REQ(fi_cq_open(r->dom, &cqa, &r->cq, NULL));
    FI_REQ(fi_av_open(r->dom, &ava, &r->av, NULL));
    FI_REQ(fi_endpoint(r->dom, r->info, &r->ep, NULL));
    FI_REQ(fi_ep_bind(r->ep, &r->av->fid, 0));
    FI_REQ(fi_ep_bind(r->ep, &r->cq->fid, FI_TRANSMIT | FI_RECV));
    FI_REQ(fi_enable(r->ep));
    r->buf = xt_alloc(RAW_BUF);
    FI_REQ(fi_mr_reg(r->dom, r->buf, RAW_BUF, FI_SEND | FI_RECV | FI_READ |
                     FI_WRITE, 0, 0x5eed, 0, &r->mr, NULL));
    if (r->info->domain_attr->mr_mode & FI_MR_ENDPOINT) {
        FI_REQ(fi_mr_bind(r->mr, &r->ep->fid, 0));
        FI_REQ(fi_mr_enable(r->mr));
    }
    r->desc = fi_mr_desc(r->mr);
    memcpy(&nl, info + 6, 2);
    XT_REQUIRE(INFO_HEAD + nl == ilen, "an endpoint name of %u bytes in "
               "connection info of %zu", nl, ilen);
    e = fi_av_insert(r->av, info + INFO_HEAD, 1, &r->peer, 0, NULL);
    XT_REQUIRE(e == 1, "fi_av_insert of the target's name: %d", e);
    return r;
}

/* Read the CQ once; *which: the context of an entry seen, with its error
 * (0) in *err.  Returns whether one was seen. */
static bool raw_poll(raw_t *r, void **which, int *err)
{
    struct fi_cq_data_entry ent;
    ssize_t n = fi_cq_read(r->cq, &ent, 1);

    if (n == 1) {
        *which = ent.op_context;
        *err = 0;
        return true;
    }
    if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry ee = {0};

        if (fi_cq_readerr(r->cq, &ee, 0) == 1) {
            *which = ee.op_context;
            *err = ee.err ? (int)ee.err : FI_EIO;
            return true;
        }
    }
    return false;
}

/* Issue one operation (again while -FI_EAGAIN, reading the CQ) and wait
 * for its completion: 0, a positive FI_E* error, or FI_ETIMEDOUT. */
typedef ssize_t (*raw_issue_fn)(raw_t *r, void *ctx, const void *arg);

static int raw_run(raw_t *r, raw_issue_fn fn, const void *arg, unsigned ms)
{
    void *ctx = &r->ctx[r->next++ % RAW_CTX], *seen;
    uint64_t end = xt_now_ms() + ms;
    ssize_t e;
    int err;

    while ((e = fn(r, ctx, arg)) == -FI_EAGAIN && xt_now_ms() < end)
        raw_poll(r, &seen, &err);
    if (e != 0)
        return e == -FI_EAGAIN ? FI_ETIMEDOUT : (int)-e;
    while (xt_now_ms() < end)
        if (raw_poll(r, &seen, &err) && seen == ctx)
            return err;
    return FI_ETIMEDOUT;
}

typedef struct raw_msg {
    size_t len;
} raw_msg_t;

static ssize_t issue_send(raw_t *r, void *ctx, const void *arg)
{
    const raw_msg_t *m = arg;

    return fi_send(r->ep, r->buf, m->len, r->desc, r->peer, ctx);
}

/* Send msg (len bytes, at most RAW_BUF) as one message. */
static int raw_send(raw_t *r, const void *msg, size_t len)
{
    raw_msg_t m = {len};

    if (msg != r->buf)
        memcpy(r->buf, msg, len);
    return raw_run(r, issue_send, &m, WAIT_MS);
}

typedef struct raw_rma {
    bool write;
    uint64_t addr, key;
    size_t len;
} raw_rma_t;

static ssize_t issue_rma(raw_t *r, void *ctx, const void *arg)
{
    const raw_rma_t *a = arg;
    struct iovec iov = {.iov_base = r->buf, .iov_len = a->len};
    struct fi_rma_iov rio = {.addr = a->addr, .len = a->len, .key = a->key};
    struct fi_msg_rma m = {.msg_iov = &iov, .desc = &r->desc, .iov_count = 1,
                           .addr = r->peer, .rma_iov = &rio,
                           .rma_iov_count = 1, .context = ctx};

    /* Delivery-complete: the target has handled it (taken or refused)
     * by the time this side hears. */
    return a->write ? fi_writemsg(r->ep, &m, FI_COMPLETION |
                                  FI_DELIVERY_COMPLETE)
                    : fi_readmsg(r->ep, &m, FI_COMPLETION);
}

/* One RMA operation that reaches the target: an operation the provider
 * failed with -FI_ENOTCONN never left (ofi_rxm reconnects after the
 * target closed the connection over the last refusal), so it goes again. */
static int raw_rma(raw_t *r, bool write, uint64_t addr, uint64_t key,
                   size_t len)
{
    raw_rma_t a = {write, addr, key, len};
    int e = 0;

    for (int i = 0; i < 100; i++) {
        uint64_t end = xt_now_ms() + 20;

        if ((e = raw_run(r, issue_rma, &a, WAIT_MS)) != FI_ENOTCONN)
            break;
        /* The provider learns of the close, and reconnects, only as its
         * CQ is read. */
        while (xt_now_ms() < end) {
            void *seen;
            int err;

            raw_poll(r, &seen, &err);
        }
    }
    return e;
}

/* Wait until the target's dropped counter reaches want, reading the raw
 * CQ meanwhile (a manual-progress provider moves nothing otherwise). */
static bool dropped_reaches(xfer_agent_t *a, unsigned long want, raw_t *r)
{
    uint64_t end = xt_now_ms() + WAIT_MS;

    while (xt_now_ms() < end) {
        void *seen;
        int err;

        if (state_of(a).dropped >= want)
            return true;
        if (r)
            raw_poll(r, &seen, &err);
        xt_sleep_ms(1);
    }
    return false;
}

static void hdr_make(unsigned char *h, uint32_t len, const unsigned char *tok,
                     uint64_t seq)
{
    memset(h, 0, NS_HDR);
    h[0] = 0x58;
    h[1] = 1;
    memcpy(h + 4, &len, 4); /* the test runs little-endian */
    memcpy(h + 8, tok, 16);
    memcpy(h + 24, &seq, 8);
}

static void rand_token(unsigned char *tok, uint64_t *rs)
{
    for (unsigned j = 0; j < 16; j += 8) {
        uint64_t v = xt_rand(rs);

        memcpy(tok + j, &v, 8);
    }
}

/* ---- 1. forged notification messages ----------------------------------- */

/* One forged message (header h of hlen bytes, then len bytes of data):
 * sent, then counted as dropped at the target, then a legitimate round. */
static void forge(raw_t *r, xfer_agent_t *tgt, legit_t *l, unsigned long *d,
                  const void *h, size_t hlen, const void *data, size_t len,
                  const char *what)
{
    int e;

    XT_REQUIRE(hlen + len <= RAW_BUF, "forged message too long");
    if (hlen)
        memcpy(r->buf, h, hlen);
    if (len)
        memcpy(r->buf + hlen, data, len);
    e = raw_send(r, r->buf, hlen + len);
    /* The provider may take or refuse the message; either way the target
     * must count it dropped, and deliver nothing. */
    if (e != 0)
        printf("  %s: the raw send ended with %s\n", what, fi_strerror(e));
    ++*d;
    XT_CHECK(dropped_reaches(tgt, *d, r), "%s was not dropped: '%s'", what,
             state_of(tgt).line);
    legit_round(l);
}

/* long_ok: whether messages longer than the target's buffers can be
 * sent without hanging the provider (not 1.17's shm). */
static void hostile_msgs(const char *spec, const char *prov, const char *dom,
                         bool long_ok)
{
    uint64_t seed = xt_seed(), rs = seed;
    char tname[64], iname[64];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    legit_t l;
    raw_t *r;
    unsigned char h[NS_HDR], tok[16], *big;
    unsigned long d;
    size_t bigl = RAW_BUF - NS_HDR;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    tgt = mk_agent(tname, spec, 0);
    ini = mk_agent(iname, spec, 0);
    l = (legit_t){ini, tname, xt_alloc(LEGIT_SLOTS * LEGIT_LEN),
                  xt_alloc(LEGIT_SLOTS * LEGIT_LEN), seed, 0};
    xt_register(ini, l.src, LEGIT_SLOTS * LEGIT_LEN);
    xt_register(tgt, l.dst, LEGIT_SLOTS * LEGIT_LEN);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    legit_round(&l);
    XT_REQUIRE(xt_drain_until(tgt, got, 1, WAIT_MS, false) == 1,
               "the first legitimate notification did not arrive");
    r = raw_open(prov, dom, tgt);
    big = xt_alloc(bigl);
    xt_fill(big, bigl, seed);
    d = state_of(tgt).dropped;
    XT_CHECK(d == 0, "dropped before any attack: '%s'", state_of(tgt).line);
    xt_stderr_begin();

    /* Wrong magic, wrong version, flags set: well-formed otherwise. */
    rand_token(tok, &rs);
    hdr_make(h, 5, tok, 0);
    h[0] = 0x59;
    forge(r, tgt, &l, &d, h, NS_HDR, "forge", 5, "a bad magic");
    hdr_make(h, 5, tok, 0);
    h[1] = 2;
    forge(r, tgt, &l, &d, h, NS_HDR, "forge", 5, "version 2");
    hdr_make(h, 5, tok, 0);
    h[1] = 0;
    forge(r, tgt, &l, &d, h, NS_HDR, "forge", 5, "version 0");
    /* Length fields that lie: shorter, longer, zero, past the largest
     * notification, all ones. */
    {
        uint32_t lies[] = {4, 6, 0, XFER_NOTIF_MAX + 1, 0xffffffffu};

        for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
            char what[64];

            snprintf(what, sizeof what, "a length field of %u for 5 bytes",
                     lies[i]);
            hdr_make(h, lies[i], tok, 0);
            forge(r, tgt, &l, &d, h, NS_HDR, "forge", 5, what);
        }
    }
    /* Random tokens, sequence 0 and others. */
    for (unsigned i = 0; i < 10; i++) {
        rand_token(tok, &rs);
        hdr_make(h, 5, tok, i < 5 ? 0 : xt_rand(&rs) % 64);
        forge(r, tgt, &l, &d, h, NS_HDR, "forge", 5, "a random token");
    }
    /* A plausible one: the next sequence number the legitimate peer will
     * use and the very text it will send, under a token of no session. */
    {
        char m[32];
        int k = snprintf(m, sizeof m, "legit-%u", l.n);

        rand_token(tok, &rs);
        hdr_make(h, (uint32_t)k, tok, l.n);
        forge(r, tgt, &l, &d, h, NS_HDR, m, (size_t)k,
              "the legitimate peer's next notification under a made-up "
              "token");
    }
    /* Short messages: empty, 1 byte, a header cut at 31 bytes. */
    hdr_make(h, 0, tok, 0);
    forge(r, tgt, &l, &d, NULL, 0, NULL, 0, "an empty message");
    forge(r, tgt, &l, &d, h, 1, NULL, 0, "a 1-byte message");
    forge(r, tgt, &l, &d, h, NS_HDR - 1, NULL, 0, "a 31-byte message");
    /* Longer than any notification buffer: one byte over, and 2 MiB
     * (which ofi_rxm sends by rendezvous). */
    if (long_ok) {
        hdr_make(h, XFER_NOTIF_MAX + 1, tok, 0);
        forge(r, tgt, &l, &d, h, NS_HDR, big, XFER_NOTIF_MAX + 1,
              "a message one byte longer than a notification");
        hdr_make(h, (uint32_t)bigl, tok, 0);
        forge(r, tgt, &l, &d, h, NS_HDR, big, bigl, "a 2 MiB message");
    } else {
        /* libfabric 1.17's shm copies a message longer than the receive
         * buffer it matched with process_vm_readv of 0 local bytes, again
         * and again: fi_cq_read at the target never returns, and with
         * it every transfer and notification to that agent stops. */
        printf("SKIP: %s: messages longer than a notification buffer: "
               "libfabric %u.%u's %s provider spins in the target's "
               "fi_cq_read on them (a provider bug)\n", spec,
               FI_MAJOR(fi_version()), FI_MINOR(fi_version()), prov);
    }

    /* The target said why, for each kind (the log is rate-limited per
     * call site, so at least once each). */
    {
        const char *log = xt_stderr_end();
        const char *says[] = {
            "ofi: dropped a message with a 32-byte header that is not an "
            "xfer notification",
            "ofi: dropped a notification of 5 bytes whose header says 4",
            "ofi: dropped a notification carrying a token of no session",
            "ofi: dropped a message with a 1-byte header that is not",
            "ofi: dropped a message that did not fit a notification buffer "
            "or failed: Truncation error",
        };

        for (size_t i = 0; i < sizeof says / sizeof *says - !long_ok; i++)
            XT_CHECK(strstr(log, says[i]) != NULL, "the target never said "
                     "'%s'", says[i]);
    }
    legit_verify(&l, tgt, got, iname);
    XT_CHECK(state_of(tgt).dropped == d, "dropped %lu, want %lu: '%s'",
             state_of(tgt).dropped, d, state_of(tgt).line);
    XT_CHECK(state_of(tgt).recv == l.n, "received %lu, want %u: '%s'",
             state_of(tgt).recv, l.n, state_of(tgt).line);
}

static void test_hostile_msgs_tcp(void)
{
    hostile_msgs(SPEC_TCP, PROV_TCP, "lo", true);
}

static void test_hostile_msgs_shm(void)
{
    hostile_msgs(SPEC_SHM, "shm", NULL, false);
}

/* ---- 2. a token read off the wire ---------------------------------------- */

/* Packets on the loopback interface, as root may read them. */
typedef struct sniff {
    int fd;
} sniff_t;

static void sniff_fini(void *arg)
{
    sniff_t *s = arg;

    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* NULL (with why) when this process may not read packets. */
static sniff_t *sniff_open(char *why, size_t size)
{
    sniff_t *s = calloc(1, sizeof *s);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET,
                              .sll_protocol = htons(ETH_P_ALL)};
    int big = 8 << 20;

    XT_REQUIRE(s, "out of memory");
    s->fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   htons(ETH_P_ALL));
    xt_defer(sniff_fini, s);
    if (s->fd < 0) {
        snprintf(why, size, "no packet socket (%s; needs CAP_NET_RAW)",
                 strerror(errno));
        return NULL;
    }
    sll.sll_ifindex = (int)if_nametoindex("lo");
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (sll.sll_ifindex == 0 ||
        bind(s->fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        snprintf(why, size, "cannot read packets on lo: %s",
                 strerror(errno));
        return NULL;
    }
    return s;
}

/* The 32-byte header in front of the notification whose payload is
 * msg (len bytes), as it crossed loopback. */
static bool sniff_hdr(sniff_t *s, const void *msg, size_t len,
                      unsigned char *hdr, unsigned ms)
{
    static unsigned char pkt[1 << 16];
    uint64_t end = xt_now_ms() + ms;

    while (xt_now_ms() < end) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 10) != 1)
            continue;
        while ((n = recv(s->fd, pkt, sizeof pkt, 0)) > 0) {
            unsigned char *at = pkt;
            size_t left = (size_t)n;

            while ((at = memmem(at, left, msg, len)) != NULL) {
                uint32_t hl;

                if (at - pkt >= (ptrdiff_t)NS_HDR) {
                    unsigned char *h = at - NS_HDR;

                    memcpy(&hl, h + 4, 4);
                    if (h[0] == 0x58 && h[1] == 1 && hl == len) {
                        memcpy(hdr, h, NS_HDR);
                        return true;
                    }
                }
                at++;
                left = (size_t)n - (size_t)(at - pkt);
            }
        }
    }
    return false;
}

/* What a thief on the network can do with a real token: replay a
 * notification (a duplicate), jump past the window, and use the token of
 * a session that ended when its agent restarted (a new epoch).  The
 * target drops each, and the real sender's notifications go on. */
static void test_stolen_token(void)
{
    uint64_t seed = xt_seed();
    char tname[64], iname[64], why[128], mark[40];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    unsigned char h[NS_HDR], old[NS_HDR], nh[NS_HDR];
    unsigned long d = 0;
    uint64_t seq;
    sniff_t *s;
    raw_t *r;
    int k;

    printf("seed %" PRIu64 "\n", seed);
    if ((s = sniff_open(why, sizeof why)) == NULL) {
        printf("SKIP: test_stolen_token: %s\n", why);
        return;
    }
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    tgt = mk_agent(tname, SPEC_TCP, 0);
    ini = mk_agent(iname, SPEC_TCP, 0);
    xt_md_exchange(tgt, XFER_MD_CONN, ini);
    r = raw_open(PROV_TCP, "lo", tgt);
    /* Three notifications, the third one's header read off the wire. */
    XT_STATUS(xfer_notif_send(ini, tname, "one", 3, NULL), XFER_OK);
    XT_STATUS(xfer_notif_send(ini, tname, "two", 3, NULL), XFER_OK);
    k = snprintf(mark, sizeof mark, "mark-%016" PRIx64, seed);
    XT_STATUS(xfer_notif_send(ini, tname, mark, (size_t)k, NULL), XFER_OK);
    XT_REQUIRE(sniff_hdr(s, mark, (size_t)k, h, WAIT_MS),
               "the notification '%s' was not seen on lo", mark);
    XT_REQUIRE(xt_drain_until(tgt, got, 3, WAIT_MS, false) == 3,
               "%zu of the first 3 notifications arrived", got->count);
    memcpy(&seq, h + 24, 8);
    XT_CHECK(seq == 2, "the third notification had sequence number %" PRIu64,
             seq);

    /* Replayed as it was: a duplicate. */
    xt_stderr_begin();
    memcpy(r->buf, h, NS_HDR);
    memcpy(r->buf + NS_HDR, mark, (size_t)k);
    raw_send(r, r->buf, NS_HDR + (size_t)k);
    XT_CHECK(dropped_reaches(tgt, ++d, r), "a replayed notification was not "
             "dropped: '%s'", state_of(tgt).line);
    /* Past the window (64 by default), and far past it. */
    for (int i = 0; i < 2; i++) {
        uint64_t far = i ? UINT64_MAX - 1 : seq + 1 + 64;

        memcpy(r->buf + 24, &far, 8);
        raw_send(r, r->buf, NS_HDR + (size_t)k);
        XT_CHECK(dropped_reaches(tgt, ++d, r), "sequence number %" PRIu64
                 " was not dropped", far);
    }
    {
        char want[200];
        const char *log = xt_stderr_end();

        snprintf(want, sizeof want, "ofi: dropped notification 2 from agent "
                 "'%s': outside its window [3, +64) or a duplicate", iname);
        XT_CHECK(strstr(log, want) != NULL, "the target never said '%s'",
                 want);
    }
    XT_STATUS(xfer_notif_send(ini, tname, "four", 4, NULL), XFER_OK);
    XT_CHECK(xt_drain_until(tgt, got, 4, WAIT_MS, false) == 4,
             "the real sender's next notification did not arrive");

    /* The sender restarts: the same name, a new epoch; its first
     * notification ends the old session at the target. */
    memcpy(old, h, NS_HDR);
    xt_agent_destroy(ini);
    ini = mk_agent(iname, SPEC_TCP, 0);
    xt_md_exchange(tgt, XFER_MD_CONN, ini);
    k = snprintf(mark, sizeof mark, "new-%016" PRIx64, seed);
    XT_STATUS(xfer_notif_send(ini, tname, mark, (size_t)k, NULL), XFER_OK);
    XT_REQUIRE(sniff_hdr(s, mark, (size_t)k, nh, WAIT_MS),
               "the new session's notification was not seen on lo");
    XT_CHECK(xt_drain_until(tgt, got, 5, WAIT_MS, false) == 5,
             "the restarted sender's notification did not arrive");
    XT_CHECK(memcmp(nh + 8, old + 8, 16) != 0, "the new session has the old "
             "token");
    /* The old token at the number that would come next in its session,
     * and at the new session's next. */
    for (uint64_t sq = 0; sq < 2; sq++) {
        uint64_t at = sq ? 1 : seq + 2;

        memcpy(r->buf, old, NS_HDR);
        memcpy(r->buf + 24, &at, 8);
        memcpy(&r->buf[4], &(uint32_t){5}, 4);
        memcpy(r->buf + NS_HDR, "stale", 5);
        raw_send(r, r->buf, NS_HDR + 5);
        XT_CHECK(dropped_reaches(tgt, ++d, r), "the ended session's token "
                 "(sequence %" PRIu64 ") was not dropped: '%s'", at,
                 state_of(tgt).line);
    }
    XT_STATUS(xfer_notif_send(ini, tname, "six", 3, NULL), XFER_OK);
    xt_drain_until(tgt, got, 6, WAIT_MS, false);
    xt_sleep_ms(200);
    xt_drain_until(tgt, got, 7, 0, false);
    {
        const char *want[] = {"one", "two", NULL, "four", NULL, "six"};

        XT_CHECK(got->count == 6, "%zu notifications delivered, want 6",
                 got->count);
        for (size_t i = 0; i < got->count && i < 6; i++) {
            XT_CHECK(!strcmp(got->items[i].from, iname), "notification %zu "
                     "from '%s'", i, got->items[i].from);
            if (want[i])
                XT_CHECK(got->items[i].len == strlen(want[i]) &&
                         !memcmp(got->items[i].msg, want[i],
                                 strlen(want[i])),
                         "notification %zu is '%.*s', want '%s'", i,
                         (int)got->items[i].len, (char *)got->items[i].msg,
                         want[i]);
        }
    }
    XT_CHECK(state_of(tgt).dropped == d, "dropped %lu, want %lu",
             state_of(tgt).dropped, d);
}

/* ---- 3. RMA with keys the target never gave ------------------------------ */

#define VICTIM_LEN (1u << 20)
#define RO_LEN (64u << 10)

static void test_hostile_rma_tcp(void)
{
    uint64_t seed = xt_seed(), rs = seed, vaddr, vkey, roaddr, rokey, gaddr,
             gkey;
    char tname[64], iname[64];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *victim = xt_alloc(VICTIM_LEN), *ro = xt_alloc(RO_LEN);
    xfer_mem_t *mv, *mro, *mg;
    legit_t l;
    raw_t *r;
    size_t blen;
    char *blob;
    unsigned refused = 0, tries = 0;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    tgt = mk_agent(tname, SPEC_TCP, 0);
    ini = mk_agent(iname, SPEC_TCP, 0);
    xt_fill(victim, VICTIM_LEN, seed ^ 1);
    xt_fill(ro, RO_LEN, seed ^ 2);
    l = (legit_t){ini, tname, xt_alloc(LEGIT_SLOTS * LEGIT_LEN),
                  xt_alloc(LEGIT_SLOTS * LEGIT_LEN), seed, 0};
    xt_register(ini, l.src, LEGIT_SLOTS * LEGIT_LEN);
    mv = xt_register(tgt, victim, VICTIM_LEN);
    mro = xt_register_access(tgt, ro, RO_LEN, XFER_ACCESS_READ);
    mg = xt_register(tgt, l.dst, LEGIT_SLOTS * LEGIT_LEN);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    {
        xfer_mem_t *ms[] = {mv, mro, mg};

        blob = xt_md_get(tgt, XFER_MD_MEM, ms, 3, &blen);
    }
    region_of(blob, 0, &vaddr, &vkey);
    region_of(blob, 1, &roaddr, &rokey);
    region_of(blob, 2, &gaddr, &gkey);
    XT_REQUIRE(vaddr == (uintptr_t)victim && roaddr == (uintptr_t)ro &&
               gaddr == (uintptr_t)l.dst, "regions out of order in '%s'",
               blob);
    printf("keys: victim 0x%" PRIx64 ", read-only 0x%" PRIx64 ", good "
           "peer's 0x%" PRIx64 "\n", vkey, rokey, gkey);
    legit_round(&l);
    r = raw_open(PROV_TCP, "lo", tgt);
    memset(r->buf, 0xee, RAW_BUF);

    /* Writes to the victim with keys it never gave: random ones, and the
     * small numbers a provider that picks keys counts up from, but for
     * the three real ones; then the read-only region's own key, which
     * does not grant writing; then the victim's key out of its bounds. */
    for (unsigned i = 0; i < 80; i++) {
        uint64_t key = i < 16 ? xt_rand(&rs) : i - 16,
                 addr = raw_at(r, vaddr, 0);
        size_t len = 4096;
        const char *what = "a guessed key";
        int e;

        if (key == vkey || key == gkey || key == rokey)
            continue;
        if (i == 78) {
            key = rokey;
            addr = raw_at(r, roaddr, 0);
            what = "the read-only region's key";
        } else if (i == 79) {
            key = vkey;
            addr = raw_at(r, vaddr, VICTIM_LEN - 2048);
            what = "the victim's key past its end";
        } else if (i % 8 == 1) {
            addr = raw_at(r, vaddr,
                          (xt_rand(&rs) % (VICTIM_LEN / 4096)) * 4096);
        }
        e = raw_rma(r, true, addr, key, len);
        tries++;
        if (e != 0)
            refused++;
        else
            printf("  %s (0x%" PRIx64 ") WRITE completed without an error\n",
                   what, key);
        if (i % 16 == 15 || i >= 78) {
            long bad = xt_check(victim, VICTIM_LEN, seed ^ 1);

            XT_CHECK(bad < 0, "after %s 0x%" PRIx64 " the victim's byte %ld "
                     "changed", what, key, bad);
            bad = xt_check(ro, RO_LEN, seed ^ 2);
            XT_CHECK(bad < 0, "after %s 0x%" PRIx64 " the read-only region's "
                     "byte %ld changed", what, key, bad);
            legit_round(&l);
        }
    }
    /* Reads with guessed keys bring nothing back. */
    for (unsigned i = 0; i < 20; i++) {
        uint64_t key = i < 10 ? xt_rand(&rs) : i - 10;
        int e;

        if (key == vkey || key == gkey || key == rokey)
            continue;
        memset(r->buf, 0xee, 4096);
        e = raw_rma(r, false, raw_at(r, vaddr, 0), key, 4096);
        tries++;
        refused += e != 0;
        for (size_t j = 0; j < 4096; j++)
            if (r->buf[j] != 0xee) {
                XT_FAIL("a READ with guessed key 0x%" PRIx64 " brought back "
                        "the victim's bytes (byte %zu)", key, j);
                break;
            }
    }
    printf("%u of %u hostile operations failed at the hostile side\n",
           refused, tries);
    XT_CHECK(refused == tries, "%u of %u operations with keys the target "
             "never gave completed without an error", tries - refused, tries);
    legit_round(&l);
    XT_CHECK(xt_check(victim, VICTIM_LEN, seed ^ 1) < 0, "the victim changed");
    XT_CHECK(xt_check(ro, RO_LEN, seed ^ 2) < 0, "the read-only region "
             "changed");
    legit_verify(&l, tgt, got, iname);
    XT_CHECK(strstr(state_of(tgt).line, "remote keys checked by the "
                    "provider") != NULL, "state '%s'", state_of(tgt).line);
}

/* ---- 4. credits: a target that does not take its notifications ----------- */

#define CREDIT_N 200u
#define CREDIT_WIN 4u
#define CREDIT_QUEUE 4u

static size_t credit_size(uint64_t seed, unsigned i)
{
    uint64_t s = seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull);

    if (i == 0)
        return 0;
    if (i == 1 || i == CREDIT_N - 1)
        return XFER_NOTIF_MAX;
    switch (xt_rand(&s) % 3) {
    case 0: return xt_rand(&s) % 16;
    case 1: return xt_rand(&s) % 1024;
    default: return xt_rand(&s) % (XFER_NOTIF_MAX + 1);
    }
}

static void credits(const char *spec)
{
    uint64_t seed = xt_seed();
    char tname[64], iname[64], spec_t[128];
    xfer_agent_t *tgt, *ini;
    xt_notifs_t *got = xt_notifs_new();
    unsigned char *msg = xt_alloc(XFER_NOTIF_MAX), *src = xt_alloc(1 << 20),
                  *dst = xt_alloc(1 << 20);
    unsigned writes = 0;
    counters_t ts, is;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(tname, sizeof tname, "%s", xt_name("tgt"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    snprintf(spec_t, sizeof spec_t, "%s,notif_window=%u", spec, CREDIT_WIN);
    /* The target's application takes nothing for now: its queue holds 4,
     * its sessions a window of 4 more. */
    tgt = mk_agent(tname, spec_t, CREDIT_QUEUE);
    ini = mk_agent(iname, spec, 0);
    xt_register(tgt, dst, 1 << 20);
    xt_register(ini, src, 1 << 20);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < CREDIT_N; i++) {
        size_t n = credit_size(seed, i);

        xt_fill(msg, n, seed + i);
        /* Every tenth rides a WRITE of 4 KiB, whose data must be there
         * when its notification is. */
        if (i % 10 == 5) {
            size_t off = (size_t)(writes % 256) * 4096;
            xfer_status_t st;
            xfer_desc_t ld = {(uintptr_t)src + off, 4096, 0},
                        rd = {(uintptr_t)dst + off, 4096, 0};
            xfer_dlist_t ll = xt_dlist(&ld, 1), rl = xt_dlist(&rd, 1);
            xfer_req_t *q = NULL;

            xt_fill(src + off, 4096, seed ^ (0xabcull + i));
            XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl,
                                            tname, NULL, &q), XFER_OK);
            xt_req_defer(q);
            st = xfer_req_post(q, msg, n);
            XT_REQUIRE(st == XFER_OK || st == XFER_IN_PROG, "post %u: %s: %s",
                       i, xt_status_name(st), xfer_last_error());
            writes++;
        } else {
            XT_STATUS_FATAL(xfer_notif_send(ini, tname, msg, n, NULL),
                            XFER_OK);
        }
    }
    /* Not drained for a while: the sender is held back, nothing is lost. */
    xt_sleep_ms(500);
    ts = state_of(tgt);
    is = state_of(ini);
    printf("undrained: target '%s'; initiator '%s'\n", ts.line, is.line);
    XT_CHECK(ts.recv <= CREDIT_QUEUE + CREDIT_WIN, "the target took %lu of "
             "%u while its queue holds %u", ts.recv, CREDIT_N, CREDIT_QUEUE);
    XT_CHECK(is.sent <= CREDIT_QUEUE + 2 * CREDIT_WIN, "the sender sent %lu "
             "with a window of %u and a queue of %u at the target", is.sent,
             CREDIT_WIN, CREDIT_QUEUE);
    XT_CHECK(ts.dropped == 0, "dropped: '%s'", ts.line);
    xt_drain_until(tgt, got, CREDIT_N, 60000, false);
    xt_sleep_ms(200);
    xt_drain_until(tgt, got, CREDIT_N + 1, 0, false);
    XT_CHECK(got->count == CREDIT_N, "%zu of %u notifications arrived: "
             "target '%s'; initiator '%s'", got->count, CREDIT_N,
             state_of(tgt).line, state_of(ini).line);
    for (size_t i = 0, w = 0; i < got->count && i < CREDIT_N; i++) {
        size_t n = credit_size(seed, (unsigned)i);
        long bad;

        if (got->items[i].len != n ||
            (bad = xt_check(got->items[i].msg, n, seed + i)) >= 0) {
            XT_FAIL("notification %zu: %zu bytes, want %zu, or its bytes "
                    "differ (out of order?)", i, got->items[i].len, n);
            break;
        }
        XT_CHECK(!strcmp(got->items[i].from, iname), "from '%s'",
                 got->items[i].from);
        if (i % 10 == 5) {
            size_t off = (w++ % 256) * 4096;

            bad = xt_check(dst + off, 4096, seed ^ (0xabcull + i));
            XT_CHECK(bad < 0, "the WRITE under notification %zu: byte %ld "
                     "differs", i, bad);
        }
    }
    XT_CHECK(state_of(tgt).dropped == 0, "dropped: '%s'", state_of(tgt).line);
    XT_CHECK(state_of(tgt).recv == CREDIT_N, "received: '%s'",
             state_of(tgt).line);
}

static void test_credits_tcp(void) { credits(SPEC_TCP); }
static void test_credits_shm(void) { credits(SPEC_SHM); }

/* ---- 5. configuration ------------------------------------------------------ */

static void bad_spec(const char *spec, xfer_status_t want, const char *s1,
                     const char *s2)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    XT_STATUS(xfer_backend_add(a, spec, NULL), want);
    XT_ERR_HAS(s1, s2);
    printf("  %s: %s\n", spec, xfer_last_error());
}

static void test_bad_config(void)
{
    bad_spec("ofi:bogus=1", XFER_ERR_CONFIG, "'ofi'", "'bogus'");
    bad_spec("ofi:provider=nosuch", XFER_ERR_CONFIG, "provider 'nosuch'",
             "xfer-info ofi");
    bad_spec("ofi:provider=tcp;ofi_rxm,domain=nosuch", XFER_ERR_CONFIG,
             "domain 'nosuch'", "provider 'tcp;ofi_rxm'");
    bad_spec("ofi:provider=shm,fabric=nosuch", XFER_ERR_CONFIG,
             "fabric 'nosuch'", "provider 'shm'");
    bad_spec("ofi:notif_window=1", XFER_ERR_CONFIG, "notif_window", "ofi");
    bad_spec("ofi:timeout_ms=0", XFER_ERR_CONFIG, "timeout_ms", "ofi");
    bad_spec("ofi:more=2", XFER_ERR_CONFIG, "more", "ofi");
    bad_spec("ofi:addr=nowhere", XFER_ERR_CONFIG, "nowhere", "ofi");
}

/* The state names what was chosen, so a silent fall-back shows. */
static void test_state_names(void)
{
    xfer_agent_t *t = mk_agent(xt_name("st"), SPEC_TCP, 0);
    xfer_agent_t *s = mk_agent(xt_name("ss"), SPEC_SHM, 0);
    counters_t ct = state_of(t), cs = state_of(s);

    printf("tcp: '%s'\nshm: '%s'\n", ct.line, cs.line);
    XT_CHECK(strstr(ct.line, "provider tcp;ofi_rxm, domain lo,") != NULL,
             "state '%s'", ct.line);
    XT_CHECK(strstr(ct.line, "remote keys checked by the provider") != NULL,
             "state '%s'", ct.line);
    XT_CHECK(strstr(cs.line, "provider shm, domain ") != NULL, "state '%s'",
             cs.line);
    XT_CHECK(strstr(cs.line, "remote keys not checked at the target") != NULL,
             "state '%s'", cs.line);
    XT_CHECK(ct.sent == 0 && ct.recv == 0 && ct.dropped == 0, "counters of "
             "a new agent: '%s'", ct.line);
}

/* ---- 6. forged connection info ------------------------------------------- */

/* A WRITE with a notification from ini to tgt (registered buffers src,
 * dst of 4 KiB), checked byte for byte. */
static void good_round(xfer_agent_t *ini, xfer_agent_t *tgt, void *src,
                       void *dst, uint64_t seed, xt_notifs_t *got)
{
    xfer_status_t st;
    size_t want = got->count + 1;
    xfer_req_t *q;

    xt_fill(src, 4096, seed);
    q = xt_post_to(ini, XFER_OP_WRITE, src, 4096, (uintptr_t)dst,
                   xfer_agent_name(tgt), "good", &st);
    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, WAIT_MS);
    XT_STATUS(st, XFER_OK);
    XT_CHECK(xt_check(dst, 4096, seed) < 0, "the good WRITE's bytes differ");
    XT_CHECK(xt_drain_until(tgt, got, want, WAIT_MS, false) == want &&
             got->items[want - 1].len == 4 &&
             !memcmp(got->items[want - 1].msg, "good", 4),
             "the good notification did not arrive");
}

static void test_forged_info(void)
{
    uint64_t seed = xt_seed();
    xfer_agent_t *tgt = mk_agent(xt_name("tgt"), SPEC_TCP, 0);
    xfer_agent_t *ini = mk_agent(xt_name("ini"), SPEC_TCP, 0);
    xfer_agent_t *shm = mk_agent(xt_name("shm"), SPEC_SHM, 0);
    unsigned char *src = xt_alloc(4096), *dst = xt_alloc(4096), *c;
    xt_notifs_t *got = xt_notifs_new();
    size_t blen, slen, clen;
    char *blob, *sblob;

    printf("seed %" PRIu64 "\n", seed);
    xt_register(tgt, dst, 4096);
    xt_register(ini, src, 4096);
    blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, &blen);
    sblob = xt_md_get(shm, XFER_MD_ALL, NULL, 0, &slen);
    c = conn_of(blob, blen, &clen);
    XT_REQUIRE(clen == INFO_HEAD + 16, "tcp;ofi_rxm's connection info is %zu "
               "bytes, want a sockaddr_in after %u", clen, INFO_HEAD);

    /* Each forgery: what it changes, and what the sentence must say. */
    for (int i = 0; i < 14; i++) {
        unsigned char *f = xt_alloc(clen + 64);
        size_t fl = clen, ol;
        const char *w1 = NULL, *w2 = NULL;
        char *forged;

        memcpy(f, c, clen);
        switch (i) {
        case 0: fl = 40; w1 = "too short"; break;
        case 1: fl = INFO_HEAD; w1 = "too short"; break;
        case 2: fl = clen - 1; w1 = "an endpoint name of 16 bytes"; break;
        case 3: f[0] = 'Y'; w1 = "bad magic or version"; break;
        case 4: f[4] = 2; w1 = "bad magic or version 2"; break;
        case 5:
            memset(f + INFO_PROV_AT, 0, 32);
            memcpy(f + INFO_PROV_AT, "shm", 3);
            w1 = "uses provider 'shm'";
            w2 = "this agent 'tcp;ofi_rxm'";
            break;
        case 6:
            memset(f + INFO_PROV_AT, 'A', 32);
            w1 = "provider";
            w2 = "both sides need the same";
            break;
        case 7:
            f[INFO_FMT_AT] ^= 0x7f;
            w1 = "address format";
            w2 = "set domain or fabric the same on both";
            break;
        case 8: { /* a name of 20 bytes */
            uint16_t nl = 20;

            memcpy(f + 6, &nl, 2);
            memset(f + clen, 0, 4);
            fl = clen + 4;
            w1 = "endpoint name of 20 bytes is not a valid address";
            break;
        }
        case 9: /* sin_port 0 */
            memset(f + INFO_HEAD + 2, 0, 2);
            w1 = "endpoint name of 16 bytes is not a valid address";
            w2 = "tcp;ofi_rxm";
            break;
        case 10: /* family AF_INET6 in a sockaddr_in */
            f[INFO_HEAD] = AF_INET6;
            f[INFO_HEAD + 1] = 0;
            w1 = "is not a valid address";
            break;
        case 11: /* 0.0.0.0 */
            memset(f + INFO_HEAD + 4, 0, 4);
            w1 = "endpoint name of 16 bytes is not a valid address";
            break;
        case 12: /* the zero byte after the version */
            f[5] = 1;
            w1 = "bad magic or version";
            break;
        default: /* the control address mangled */
            memset(f + 8, 0xff, 4);
            w1 = "not a version 1 tcp address";
            break;
        }
        forged = with_conn(blob, blen, f, fl, &ol);
        XT_STATUS(xfer_md_load(ini, forged, ol, NULL, 0), XFER_ERR_INVALID);
        XT_ERR_HAS("ofi", w1);
        if (w2)
            XT_ERR_HAS(w2);
        printf("  forgery %d: %s\n", i, xfer_last_error());
    }
    /* An shm agent's own metadata, into a tcp agent: refused whole. */
    XT_STATUS(xfer_md_load(ini, sblob, slen, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS("uses provider 'shm'", "this agent 'tcp;ofi_rxm'");
    /* And the tcp info under the shm agent's name. */
    {
        size_t ol;
        char *forged = with_conn(sblob, slen, c, clen, &ol);
        xfer_agent_t *s2 = mk_agent(xt_name("shm2"), SPEC_SHM, 0);

        XT_STATUS(xfer_md_load(s2, forged, ol, NULL, 0), XFER_ERR_INVALID);
        XT_ERR_HAS("uses provider 'tcp;ofi_rxm'", "this agent 'shm'");
    }
    /* The genuine blob still loads and works. */
    XT_STATUS(xfer_md_load(ini, blob, blen, NULL, 0), XFER_OK);
    good_round(ini, tgt, src, dst, seed, got);
}

/* shm's endpoint names are strings ("fi_shm://<pid>:<n>:<n>") that the
 * provider opens: what is not one of them is refused at load; one that
 * names no endpoint loads, and a post to it fails within timeout_ms. */
static void test_forged_info_shm(void)
{
    uint64_t seed = xt_seed();
    xfer_agent_t *tgt = mk_agent(xt_name("tgt"), SPEC_SHM, 0);
    xfer_agent_t *ini = mk_agent(xt_name("ini"), SPEC_SHM ",timeout_ms=2000",
                                 0);
    unsigned char *src = xt_alloc(4096), *dst = xt_alloc(4096), *c;
    xt_notifs_t *got = xt_notifs_new();
    const char *tname = xfer_agent_name(tgt);
    size_t blen, clen;
    char *blob;

    printf("seed %" PRIu64 "\n", seed);
    xt_register(tgt, dst, 4096);
    xt_register(ini, src, 4096);
    blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, &blen);
    c = conn_of(blob, blen, &clen);
    XT_REQUIRE(clen > INFO_HEAD + 10 && !memcmp(c + INFO_HEAD, "fi_shm://", 9)
               && c[clen - 1] == '\0', "shm's name is not 'fi_shm://...': "
               "'%.*s'", (int)(clen - INFO_HEAD), c + INFO_HEAD);
    printf("the target's name: '%s'\n", (char *)c + INFO_HEAD);
    for (int i = 0; i < 5; i++) {
        unsigned char *f = xt_alloc(clen + 64);
        size_t fl = clen, ol;
        uint16_t nl = (uint16_t)(clen - INFO_HEAD);
        char *forged;

        memcpy(f, c, clen);
        switch (i) {
        case 0: f[INFO_HEAD + 10] = '\n'; break;             /* a control */
        case 1: memcpy(f + INFO_HEAD, "fi_xyz", 6); break;    /* a scheme */
        case 2: f[clen - 1] = 'x'; break;                     /* no NUL */
        case 3: f[INFO_HEAD] = '\0'; break;                   /* empty */
        default:                                              /* 2 NULs */
            f[clen] = '\0';
            fl = clen + 1;
            nl++;
            break;
        }
        memcpy(f + 6, &nl, 2);
        forged = with_conn(blob, blen, f, fl, &ol);
        XT_STATUS(xfer_md_load(ini, forged, ol, NULL, 0), XFER_ERR_INVALID);
        XT_ERR_HAS("ofi", tname, "is not a valid address of format",
                   "for shm");
        printf("  forgery %d: %s\n", i, xfer_last_error());
    }
    /* A well-formed name of no endpoint (a process that cannot exist). */
    {
        char name[64];
        int k = snprintf(name, sizeof name, "fi_shm://%d:0:0", 0x3fffffff);
        unsigned char *f = xt_alloc(INFO_HEAD + (size_t)k + 1);
        uint16_t nl = (uint16_t)(k + 1);
        size_t ol;
        char *forged;
        xfer_req_t *q;
        xfer_status_t st;
        uint64_t t0 = xt_now_ms();

        memcpy(f, c, INFO_HEAD);
        memcpy(f + 6, &nl, 2);
        memcpy(f + INFO_HEAD, name, (size_t)k + 1);
        forged = with_conn(blob, blen, f, INFO_HEAD + (size_t)k + 1, &ol);
        st = xfer_md_load(ini, forged, ol, NULL, 0);
        if (st == XFER_OK) {
            q = xt_post_to(ini, XFER_OP_WRITE, src, 4096, (uintptr_t)dst,
                           tname, "lost", &st);
            if (q && st == XFER_IN_PROG)
                st = xt_wait_req(q, 2000 + 15000);
            XT_CHECK(st == XFER_ERR_REMOTE_DISCONNECT ||
                     st == XFER_ERR_TIMEOUT, "a WRITE to '%s': %s", name,
                     xt_status_name(st));
            XT_ERR_HAS("ofi", tname);
            printf("  a WRITE to '%s' after %" PRIu64 " ms: %s\n", name,
                   xt_now_ms() - t0, xfer_last_error());
            if (q)
                xt_req_release(q);
            XT_STATUS(xfer_md_invalidate(ini, tname), XFER_OK);
        } else {
            XT_STATUS(st, XFER_ERR_INVALID);
            XT_ERR_HAS("ofi", tname);
        }
    }
    /* The genuine blob still loads and works. */
    XT_STATUS(xfer_md_load(ini, blob, blen, NULL, 0), XFER_OK);
    good_round(ini, tgt, src, dst, seed, got);
}

/* ---- child processes ------------------------------------------------------ */

static char *line_buf(void)
{
    char *b = malloc(LINE_MAX_);

    XT_REQUIRE(b, "out of memory");
    xt_defer_late(free, b);
    return b;
}

static void proc_end(void *p) { xt_proc_end(p, 10000); }

/* A stopped child must run again to answer "quit".  Not once it was
 * ended: xt_proc_end leaves pid 0, and kill(0, ...) would continue
 * the whole process group, other tests' stopped children included
 * (make check -j). */
static void proc_cont(void *p)
{
    if (((xt_proc_t *)p)->pid > 0)
        kill(((xt_proc_t *)p)->pid, SIGCONT);
}

/* A child running this program as a target; its first line is its
 * metadata ("MD <blob>"), copied into md. */
static xt_proc_t *proc_start(const char *name, const char *spec,
                             const char *arg, char *md)
{
    xt_proc_t *p = xt_alloc(sizeof *p);
    char *argv[] = {self_exe, "child", (char *)name, (char *)spec,
                    (char *)arg, NULL};

    xt_proc_start(p, name, argv);
    xt_defer(proc_end, p);
    xt_defer(proc_cont, p);
    xt_proc_line(p, md, LINE_MAX_, WAIT_MS);
    XT_REQUIRE(strncmp(md, "MD ", 3) == 0, "child %s said '%.200s'", name,
               md);
    memmove(md, md + 3, strlen(md + 3) + 1);
    return p;
}

/* The child side: a target with CHILD_BUF registered.  Lines in, one
 * line out per command:
 *   check <seed> <off> <len> -> "ok" | "bad <offset>"
 *   notes <ms>               -> "notes a,b,..." (what came within ms)
 *   quit                     -> exit 0 */
#define CHILD_BUF (32u << 20)

static int child_fail(const char *what)
{
    printf("err %s: %s\n", what, xfer_last_error());
    fflush(stdout);
    return 1;
}

static void child_note(void *arg, const char *from, const void *msg,
                       size_t len)
{
    char *out = arg;
    size_t n = strlen(out);

    (void)from;
    if (n + len + 2 < 4096) {
        if (n > 6)
            out[n++] = ',';
        memcpy(out + n, msg, len);
        out[n + len] = '\0';
    }
}

static int child_main(const char *name, const char *spec, const char *arg)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *m = NULL;
    unsigned char *buf;
    xfer_desc_t d;
    xfer_dlist_t dl;
    char *blob = NULL, line[256], notes[4096];
    size_t len;

    setvbuf(stdout, NULL, _IOLBF, 0);
    xfer_agent_opts_init(&o);
    o.name = name;
    if (posix_memalign((void **)&buf, 4096, CHILD_BUF))
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
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strcmp(line, "quit"))
            break;
        if (!strncmp(line, "check ", 6)) {
            unsigned long long seed, off, n;
            long bad;

            if (sscanf(line + 6, "%llu %llu %llu", &seed, &off, &n) != 3 ||
                off + n > CHILD_BUF) {
                printf("err bad check\n");
                continue;
            }
            bad = xt_check(buf + off, n, seed);
            printf(bad < 0 ? "ok\n" : "bad %ld\n", bad);
        } else if (!strncmp(line, "notes ", 6)) {
            uint64_t end = xt_now_ms() + strtoul(line + 6, NULL, 10);

            snprintf(notes, sizeof notes, "notes ");
            do {
                xfer_notif_drain(a, child_note, notes, NULL);
                xt_sleep_ms(5);
            } while (xt_now_ms() < end);
            printf("%s\n", notes);
        } else {
            printf("err unknown command\n");
        }
    }
    xfer_mem_deregister(a, m);
    xfer_agent_destroy(a);
    free(buf);
    return 0;
}

static uint64_t md_addr(const char *md)
{
    json_t *root = xt_blob_parse(md, strlen(md));
    uint64_t a = 0;

    XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0), "addr"),
                           &a), "no region address");
    return a;
}

/* ---- 7. a target SIGKILLed mid-transfer, another beside it --------------- */

#define SHORT_MS 2000u
#define SLACK_MS 15000u

static void test_killed_tcp(void)
{
    char *md = line_buf(), *md2 = line_buf(), *l = line_buf();
    char tname[64], t2name[64], iname[64], spec[160];
    xt_proc_t *t, *t2;
    xfer_agent_t *ini;
    unsigned char *big = xt_alloc(CHILD_BUF), *small = xt_alloc(4096);
    uint64_t ra, ra2, t0, seed = xt_seed();
    xfer_req_t *q[8];
    size_t nq = 0;
    xfer_status_t st;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(spec, sizeof spec, "%s,timeout_ms=%u", SPEC_TCP, SHORT_MS);
    snprintf(tname, sizeof tname, "%s", xt_name("victim"));
    snprintf(t2name, sizeof t2name, "%s", xt_name("other"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    t = proc_start(tname, spec, "7", md);
    t2 = proc_start(t2name, spec, "8", md2);
    ini = mk_agent(iname, spec, 0);
    xt_register(ini, big, CHILD_BUF);
    xt_register(ini, small, 4096);
    XT_STATUS_FATAL(xfer_md_load(ini, md, strlen(md), NULL, 0), XFER_OK);
    XT_STATUS_FATAL(xfer_md_load(ini, md2, strlen(md2), NULL, 0), XFER_OK);
    ra = md_addr(md);
    ra2 = md_addr(md2);
    /* Connected first, with a notification. */
    xt_fill(small, 4096, seed);
    q[0] = xt_post_to(ini, XFER_OP_WRITE, small, 4096, ra, tname, "warm", &st);
    XT_STATUS_FATAL(st == XFER_IN_PROG ? xt_wait_req(q[0], WAIT_MS) : st,
                    XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "check %" PRIu64 " 0 4096",
                                 seed), "ok"), "the victim got '%s'", l);
    /* 32 MiB on its way, a READ and a notified WRITE behind it; the
     * target stopped a moment so that they are surely in flight, then
     * killed. */
    xt_fill(big, CHILD_BUF, seed + 1);
    kill(t->pid, SIGSTOP);
    q[nq++] = xt_post_to(ini, XFER_OP_WRITE, big, CHILD_BUF, ra, tname, NULL,
                         &st);
    XT_CHECK(st == XFER_IN_PROG, "the big WRITE: %s", xt_status_name(st));
    q[nq++] = xt_post_to(ini, XFER_OP_READ, small, 4096, ra, tname, NULL, &st);
    XT_CHECK(st == XFER_IN_PROG, "the READ: %s", xt_status_name(st));
    q[nq++] = xt_post_to(ini, XFER_OP_WRITE, small, 4096, ra + 4096, tname,
                         "never", &st);
    XT_CHECK(st == XFER_IN_PROG, "the notified WRITE: %s",
             xt_status_name(st));
    xt_sleep_ms(100);
    for (size_t i = 0; i < nq; i++)
        XT_CHECK(q[i] && xfer_req_status(q[i]) == XFER_IN_PROG, "request %zu "
                 "ended while the target was stopped: %s", i,
                 q[i] ? xt_status_name(xfer_req_status(q[i])) : "none");
    xt_proc_kill(t);
    t0 = xt_now_ms();
    for (size_t i = 0; i < nq; i++) {
        if (!q[i])
            continue;
        st = xt_wait_req(q[i], SHORT_MS + SLACK_MS);
        XT_CHECK(st == XFER_ERR_REMOTE_DISCONNECT || st == XFER_ERR_TIMEOUT,
                 "request %zu to the killed target: %s: %s", i,
                 xt_status_name(st), xfer_last_error());
        XT_ERR_HAS("ofi", tname);
        /* Its control connection closed (it is gone), or the provider
         * failed what it held on the broken connection. */
        if (st == XFER_ERR_REMOTE_DISCONNECT)
            XT_CHECK(strstr(xfer_last_error(), "it is gone") ||
                     strstr(xfer_last_error(), "the connection to it broke"),
                     "the sentence '%s' says neither that it is gone nor "
                     "that the connection broke", xfer_last_error());
        else if (st == XFER_ERR_TIMEOUT)
            XT_ERR_HAS("did not complete within timeout_ms (2000 ms)");
        printf("  request %zu: %s: %s\n", i, xt_status_name(st),
               xfer_last_error());
    }
    XT_CHECK(xt_now_ms() - t0 <= SHORT_MS + SLACK_MS, "in-flight requests "
             "ended after %" PRIu64 " ms", xt_now_ms() - t0);
    /* Later posts fail at once, and so do notifications. */
    t0 = xt_now_ms();
    {
        xfer_req_t *r = xt_post_to(ini, XFER_OP_WRITE, small, 64, ra, tname,
                                   NULL, &st);

        if (r && st == XFER_IN_PROG)
            st = xt_wait_req(r, WAIT_MS);
        XT_CHECK(st == XFER_ERR_REMOTE_DISCONNECT || st == XFER_ERR_TIMEOUT,
                 "a post to the dead target: %s", xt_status_name(st));
        XT_ERR_HAS("ofi", tname);
        st = xfer_notif_send(ini, tname, "x", 1, NULL);
        XT_CHECK(st == XFER_ERR_REMOTE_DISCONNECT, "a notification to the "
                 "dead target: %s", xt_status_name(st));
        XT_ERR_HAS("ofi", tname, "gone");
        XT_CHECK(xt_now_ms() - t0 <= SHORT_MS + SLACK_MS, "posts to a dead "
                 "target took %" PRIu64 " ms", xt_now_ms() - t0);
    }
    /* The other target does not notice. */
    xt_fill(big, 1 << 20, seed + 2);
    q[0] = xt_post_to(ini, XFER_OP_WRITE, big, 1 << 20, ra2 + 8192, t2name,
                      NULL, &st);
    XT_STATUS(st == XFER_IN_PROG ? xt_wait_req(q[0], WAIT_MS) : st, XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t2, l, LINE_MAX_, WAIT_MS,
                                 "check %" PRIu64 " 8192 %u",
                                 seed + 2, 1u << 20), "ok"),
             "the other target got '%s'", l);
    /* The same name again, a new epoch: its metadata loads and works. */
    xt_proc_end(t, 5000);
    t = proc_start(tname, spec, "9", md);
    XT_STATUS_FATAL(xfer_md_load(ini, md, strlen(md), NULL, 0), XFER_OK);
    ra = md_addr(md);
    xt_fill(big, 1 << 20, seed + 3);
    q[0] = xt_post_to(ini, XFER_OP_WRITE, big, 1 << 20, ra + 4096, tname,
                      "back", &st);
    XT_STATUS(st == XFER_IN_PROG ? xt_wait_req(q[0], WAIT_MS) : st, XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "check %" PRIu64 " 4096 %u",
                                 seed + 3, 1u << 20), "ok"),
             "the restarted target got '%s'", l);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "notes 300"), "notes back"),
             "the restarted target: '%s'", l);
}

/* ---- 8. a target SIGSTOPped: a timeout, then it runs again ---------------- */

static void test_stopped_tcp(void)
{
    char *md = line_buf(), *l = line_buf();
    char tname[64], iname[64], spec[160];
    xt_proc_t *t;
    xfer_agent_t *ini;
    unsigned char *src = xt_alloc(4u << 20);
    uint64_t ra, t0, took, seed = xt_seed();
    xfer_req_t *q;
    xfer_status_t st;

    printf("seed %" PRIu64 "\n", seed);
    snprintf(spec, sizeof spec, "%s,timeout_ms=%u", SPEC_TCP, SHORT_MS);
    snprintf(tname, sizeof tname, "%s", xt_name("stopped"));
    snprintf(iname, sizeof iname, "%s", xt_name("ini"));
    t = proc_start(tname, spec, "5", md);
    ini = mk_agent(iname, spec, 0);
    xt_register(ini, src, 4u << 20);
    XT_STATUS_FATAL(xfer_md_load(ini, md, strlen(md), NULL, 0), XFER_OK);
    ra = md_addr(md);
    xt_fill(src, 4096, seed);
    q = xt_post_to(ini, XFER_OP_WRITE, src, 4096, ra, tname, "warm", &st);
    XT_STATUS_FATAL(st == XFER_IN_PROG ? xt_wait_req(q, WAIT_MS) : st,
                    XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "notes 100"), "notes warm"),
             "the target: '%s'", l);

    /* Stopped: a WRITE of 2 MiB with a notification times out within
     * timeout_ms, with its sentence. */
    kill(t->pid, SIGSTOP);
    xt_fill(src + (1u << 20), 2u << 20, seed + 1);
    t0 = xt_now_ms();
    q = xt_post_to(ini, XFER_OP_WRITE, src + (1u << 20), 2u << 20,
                   ra + (8u << 20), tname, "stopped", &st);
    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, SHORT_MS + SLACK_MS);
    took = xt_now_ms() - t0;
    XT_STATUS(st, XFER_ERR_TIMEOUT);
    XT_ERR_HAS("ofi: WRITE to agent", tname,
               "did not complete within timeout_ms (2000 ms)");
    XT_CHECK(took >= SHORT_MS - 50 && took <= SHORT_MS + SLACK_MS,
             "the timeout came after %" PRIu64 " ms", took);
    /* Running again: a new post succeeds without reloading anything, its
     * notification arrives and the timed-out one's never does. */
    kill(t->pid, SIGCONT);
    xt_fill(src + 4096, 4096, seed + 2);
    q = xt_post_to(ini, XFER_OP_WRITE, src + 4096, 4096, ra + 4096, tname,
                   "after", &st);
    XT_STATUS(st == XFER_IN_PROG ? xt_wait_req(q, WAIT_MS) : st, XFER_OK);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "check %" PRIu64 " 4096 4096",
                                 seed + 2), "ok"), "the target got '%s'", l);
    XT_CHECK(!strcmp(xt_proc_ask(t, l, LINE_MAX_, WAIT_MS,
                                 "notes 300"), "notes after"),
             "after SIGCONT the target heard '%s'", l);
}

int main(int argc, char **argv)
{
    static const xt_test_t hostile[] = {
        XT_TEST(test_hostile_msgs_tcp),
        XT_TEST(test_hostile_msgs_shm),
        XT_TEST(test_stolen_token),
        XT_TEST(test_hostile_rma_tcp),
        XT_END
    };
    static const xt_test_t credit[] = {
        XT_TEST(test_credits_tcp),
        XT_TEST(test_credits_shm),
        XT_END
    };
    static const xt_test_t config[] = {
        XT_TEST(test_bad_config),
        XT_TEST(test_state_names),
        XT_TEST(test_forged_info),
        XT_TEST(test_forged_info_shm),
        XT_END
    };
    static const xt_test_t procs[] = {
        XT_TEST(test_killed_tcp),
        XT_TEST(test_stopped_tcp),
        XT_END
    };
    static const xt_suite_t suites[] = {
        { "ofi-hostile", hostile },
        { "ofi-credits", credit },
        { "ofi-config", config },
        { "ofi-processes", procs },
    };
    ssize_t n;

    if (argc == 5 && !strcmp(argv[1], "child"))
        return child_main(argv[2], argv[3], argv[4]);
    /* Without CAP_NET_RAW no token can be read off the wire: that test is
     * skipped, not passed. */
    {
        int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC,
                        htons(ETH_P_ALL));

        if (fd >= 0) {
            close(fd);
        } else {
            const char *old = getenv("XT_SKIP");
            char list[1024];

            snprintf(list, sizeof list, "%s%stest_stolen_token",
                     old ? old : "", old && old[0] ? "," : "");
            setenv("XT_SKIP", list, 1);
            if (!getenv("XT_SKIP_WHY"))
                setenv("XT_SKIP_WHY", "no packet socket to read a token "
                       "off loopback (needs CAP_NET_RAW)", 1);
        }
    }
    n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        xt_skip("cannot find this program (/proc/self/exe)");
    self_exe[n] = '\0';
    return xt_run(argv[0], suites, sizeof suites / sizeof *suites);
}
