/* test-fakeverbs.c - the emulated RDMA device (tests/plugins/fakeverbs.c)
 * through the seam's table only, as the verbs plugin will use it: data
 * byte for byte, and every strict rule the plugin is tested against. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plugins/verbs/vapi.h"
#include "tests/common/runner.h"
#include "tests/plugins/fakeverbs.h"

#if defined(__SANITIZE_THREAD__)
#define XT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define XT_TSAN 1
#endif
#endif

#define WAIT_MS 20000u      /* a hang guard, never a verdict */
#define API vb__api

static uint64_t seed;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap(void)
{
    struct timespec ts = { 0, 200000 };

    nanosleep(&ts, NULL);
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill(void *buf, size_t len, uint64_t *s)
{
    unsigned char *p = buf;

    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)rnd(s);
}

static struct fakeverbs_stats stats(void)
{
    struct fakeverbs_stats st;

    fakeverbs_stats(&st);
    return st;
}

/* Wait until a counter reaches a value (fatal after WAIT_MS). */
#define WAIT_STAT(field, want)                                              \
    do {                                                                    \
        uint64_t t0_ = now_ms();                                            \
        while (stats().field < (want)) {                                    \
            if (now_ms() - t0_ > WAIT_MS)                                   \
                XT_FAIL_FATAL("stats." #field " stayed at %" PRIu64         \
                              ", want %" PRIu64, stats().field,             \
                              (uint64_t)(want));                            \
            nap();                                                          \
        }                                                                   \
    } while (0)

/* stderr into a file while the test provokes a message. */
static FILE *cap_file;
static int cap_saved = -1;

static void cap_begin(void)
{
    fflush(stderr);
    cap_file = tmpfile();
    XT_REQUIRE(cap_file != NULL, "tmpfile: %s", strerror(errno));
    cap_saved = dup(2);
    dup2(fileno(cap_file), 2);
}

/* The text captured (static buffer), also echoed to the real stderr. */
static const char *cap_end(void)
{
    static char text[4096];
    size_t n;

    fflush(stderr);
    dup2(cap_saved, 2);
    close(cap_saved);
    cap_saved = -1;
    rewind(cap_file);
    n = fread(text, 1, sizeof text - 1, cap_file);
    text[n] = '\0';
    fclose(cap_file);
    cap_file = NULL;
    fputs(text, stderr);
    return text;
}

static void cap_cleanup(void *arg)
{
    (void)arg;
    if (cap_saved >= 0)
        (void)cap_end();
}

/* ---- two connected QPs on two devices ----------------------------------- */

typedef struct opts {
    int cqe;
    uint32_t max_send_wr, max_recv_wr, max_sge, max_inline;
    int sig_all;
    unsigned qp_access;
    uint8_t rnr_retry;
    bool channel;        /* a completion channel on each side's CQ */
} opts_t;

typedef struct side {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *ch;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    int dev;
    unsigned unacked;    /* events got, to ack before destroy_cq */
} side_t;

#define MAX_MR 16

typedef struct pair {
    side_t s[2];
    opts_t o;
    bool eth;
    struct ibv_mr *mr[MAX_MR];
    void *buf[MAX_MR];
    int nmr;
} pair_t;

static pair_t P;

static opts_t defaults(void)
{
    opts_t o = {
        .cqe = 64,
        .max_send_wr = 16,
        .max_recv_wr = 16,
        .max_sge = 4,
        .max_inline = 64,
        .qp_access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                     IBV_ACCESS_REMOTE_READ,
        .rnr_retry = 7,
    };
    return o;
}

static struct ibv_qp *make_qp(side_t *s, const opts_t *o)
{
    struct ibv_qp_init_attr ia;

    memset(&ia, 0, sizeof ia);
    ia.send_cq = s->cq;
    ia.recv_cq = s->cq;
    ia.qp_type = IBV_QPT_RC;
    ia.sq_sig_all = o->sig_all;
    ia.cap.max_send_wr = o->max_send_wr;
    ia.cap.max_recv_wr = o->max_recv_wr;
    ia.cap.max_send_sge = o->max_sge;
    ia.cap.max_recv_sge = o->max_sge;
    ia.cap.max_inline_data = o->max_inline;
    return API->create_qp(s->pd, &ia);
}

static void side_close(side_t *s)
{
    if (s->qp && API->destroy_qp(s->qp) == 0)
        s->qp = NULL;
    if (s->cq && s->unacked) {
        API->ack_cq_events(s->cq, s->unacked);
        s->unacked = 0;
    }
    if (s->cq && API->destroy_cq(s->cq) == 0)
        s->cq = NULL;
    if (s->ch && API->destroy_comp_channel(s->ch) == 0)
        s->ch = NULL;
}

static void side_close_rest(side_t *s)
{
    if (s->pd && API->dealloc_pd(s->pd) == 0)
        s->pd = NULL;
    if (s->ctx && API->close_device(s->ctx) == 0)
        s->ctx = NULL;
}

/* Tear down what is left, in order (a test may have failed half way). */
static void pair_close(void *arg)
{
    pair_t *p = arg;

    for (int i = 0; i < 2; i++)
        side_close(&p->s[i]);
    for (int i = 0; i < p->nmr; i++) {
        if (p->mr[i] && API->dereg_mr(p->mr[i]) == 0)
            p->mr[i] = NULL;
        free(p->buf[i]);
        p->buf[i] = NULL;
    }
    p->nmr = 0;
    for (int i = 0; i < 2; i++)
        side_close_rest(&p->s[i]);
}

/* Open fake0 and fake1 (the environment as the test set it), each with a
 * PD, a CQ and an RC QP in RESET; closed after the test. */
static void pair_open(const opts_t *o)
{
    struct ibv_device **list;
    struct ibv_port_attr pa;
    int n;

    memset(&P, 0, sizeof P);
    P.o = *o;
    xt_defer(pair_close, &P);
    list = API->get_device_list(&n);
    XT_REQUIRE(list && n >= 2, "get_device_list: %d devices", n);
    for (int i = 0; i < 2; i++) {
        side_t *s = &P.s[i];

        s->dev = i;
        s->ctx = API->open_device(list[i]);
        XT_REQUIRE(s->ctx != NULL, "open_device: %s", strerror(errno));
        s->pd = API->alloc_pd(s->ctx);
        XT_REQUIRE(s->pd != NULL, "alloc_pd: %s", strerror(errno));
        if (o->channel) {
            s->ch = API->create_comp_channel(s->ctx);
            XT_REQUIRE(s->ch != NULL, "create_comp_channel");
        }
        s->cq = API->create_cq(s->ctx, o->cqe, s, s->ch, 0);
        XT_REQUIRE(s->cq != NULL, "create_cq: %s", strerror(errno));
        s->qp = make_qp(s, o);
        XT_REQUIRE(s->qp != NULL, "create_qp: %s", strerror(errno));
    }
    API->free_device_list(list);
    XT_REQUIRE(API->query_port(P.s[0].ctx, 1, &pa) == 0, "query_port");
    P.eth = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
}

/* A buffer of len bytes registered on side i with the access given. */
static struct ibv_mr *pair_mr(int i, size_t len, int access)
{
    void *buf;
    struct ibv_mr *mr;

    XT_REQUIRE(P.nmr < MAX_MR, "too many MRs");
    buf = calloc(1, len);
    XT_REQUIRE(buf != NULL, "calloc");
    mr = API->reg_mr(P.s[i].pd, buf, len, access);
    P.buf[P.nmr] = buf;
    P.mr[P.nmr++] = mr;
    XT_REQUIRE(mr != NULL, "reg_mr: %s", strerror(errno));
    return mr;
}

#define ALL_ACCESS                                                          \
    (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |                     \
     IBV_ACCESS_REMOTE_READ)

static void deregister(struct ibv_mr *mr)
{
    for (int i = 0; i < P.nmr; i++) {
        if (P.mr[i] == mr) {
            XT_CHECK(API->dereg_mr(mr) == 0, "dereg_mr");
            P.mr[i] = NULL;
        }
    }
}

/* The attributes of each step to RTS, towards the QP of side `to`. */
static void init_attr(struct ibv_qp_attr *a, int *mask)
{
    memset(a, 0, sizeof *a);
    a->qp_state = IBV_QPS_INIT;
    a->pkey_index = 0;
    a->port_num = 1;
    a->qp_access_flags = P.o.qp_access;
    *mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
            IBV_QP_ACCESS_FLAGS;
}

static void rtr_attr(struct ibv_qp_attr *a, int *mask, int to)
{
    struct ibv_port_attr pa;

    memset(a, 0, sizeof *a);
    XT_REQUIRE(API->query_port(P.s[to].ctx, 1, &pa) == 0, "query_port");
    a->qp_state = IBV_QPS_RTR;
    a->path_mtu = pa.active_mtu;
    a->dest_qp_num = P.s[to].qp->qp_num;
    a->rq_psn = 0x123;
    a->max_dest_rd_atomic = 16;
    a->min_rnr_timer = 12;
    a->ah_attr.port_num = 1;
    if (P.eth) {
        a->ah_attr.is_global = 1;
        a->ah_attr.grh.sgid_index = 1;
        a->ah_attr.grh.hop_limit = 64;
        XT_REQUIRE(API->query_gid(P.s[to].ctx, 1, 1,
                                  &a->ah_attr.grh.dgid) == 0, "query_gid");
    } else {
        a->ah_attr.dlid = pa.lid;
    }
    *mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
            IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
}

static void rts_attr(struct ibv_qp_attr *a, int *mask)
{
    memset(a, 0, sizeof *a);
    a->qp_state = IBV_QPS_RTS;
    a->timeout = 14;
    a->retry_cnt = 7;
    a->rnr_retry = P.o.rnr_retry;
    a->sq_psn = 0x123;
    a->max_rd_atomic = 16;
    *mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
            IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC;
}

static void to_rts(int i, int to)
{
    struct ibv_qp_attr a;
    int mask, rc;

    init_attr(&a, &mask);
    rc = API->modify_qp(P.s[i].qp, &a, mask);
    XT_REQUIRE(rc == 0, "RESET->INIT: %s", strerror(rc));
    rtr_attr(&a, &mask, to);
    rc = API->modify_qp(P.s[i].qp, &a, mask);
    XT_REQUIRE(rc == 0, "INIT->RTR: %s", strerror(rc));
    rts_attr(&a, &mask);
    rc = API->modify_qp(P.s[i].qp, &a, mask);
    XT_REQUIRE(rc == 0, "RTR->RTS: %s", strerror(rc));
}

/* Both QPs from RESET to RTS, connected to each other. */
static void pair_connect(void)
{
    to_rts(0, 1);
    to_rts(1, 0);
}

/* Both QPs back to RESET and connected again (after an error). */
static void pair_reconnect(void)
{
    struct ibv_qp_attr a;

    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RESET;
    for (int i = 0; i < 2; i++)
        XT_REQUIRE(API->modify_qp(P.s[i].qp, &a, IBV_QP_STATE) == 0,
                   "to RESET");
    pair_connect();
}

/* Exactly n CQEs from side i's CQ (fatal if they do not come). */
static void poll_n(int i, struct ibv_wc *wc, int n)
{
    uint64_t t0 = now_ms();
    int got = 0;

    while (got < n) {
        int k = API->poll_cq(P.s[i].cq, n - got, wc + got);

        XT_REQUIRE(k >= 0, "poll_cq: %d", k);
        got += k;
        if (got < n) {
            if (now_ms() - t0 > WAIT_MS)
                XT_FAIL_FATAL("side %d: %d of %d CQEs", i, got, n);
            nap();
        }
    }
}

/* No CQE waiting on side i. */
static void poll_none(int i)
{
    struct ibv_wc wc;
    int k = API->poll_cq(P.s[i].cq, 1, &wc);

    XT_CHECK(k == 0, "side %d: an unexpected CQE (wr_id %" PRIu64 ", %s)",
             i, wc.wr_id, API->wc_status_str(wc.status));
}

static void check_wc(const struct ibv_wc *wc, uint64_t wr_id,
                     enum ibv_wc_status st, enum ibv_wc_opcode op)
{
    XT_CHECK(wc->wr_id == wr_id, "wr_id %" PRIu64 ", want %" PRIu64,
             wc->wr_id, wr_id);
    XT_CHECK(wc->status == st, "wr_id %" PRIu64 ": status %s, want %s",
             wc->wr_id, API->wc_status_str(wc->status),
             API->wc_status_str(st));
    if (st == IBV_WC_SUCCESS)
        XT_CHECK(wc->opcode == op, "wr_id %" PRIu64 ": opcode %d, want %d",
                 wc->wr_id, wc->opcode, op);
}

static struct ibv_sge sge_of(const struct ibv_mr *mr, size_t off, size_t len)
{
    struct ibv_sge s = {
        .addr = (uintptr_t)mr->addr + off,
        .length = (uint32_t)len,
        .lkey = mr->lkey,
    };
    return s;
}

static struct ibv_send_wr wr_of(uint64_t id, enum ibv_wr_opcode op,
                                struct ibv_sge *sge, int nsge,
                                unsigned flags)
{
    struct ibv_send_wr w;

    memset(&w, 0, sizeof w);
    w.wr_id = id;
    w.opcode = op;
    w.sg_list = sge;
    w.num_sge = nsge;
    w.send_flags = flags;
    return w;
}

static void rdma_to(struct ibv_send_wr *w, const struct ibv_mr *mr,
                    size_t off)
{
    w->wr.rdma.remote_addr = (uintptr_t)mr->addr + off;
    w->wr.rdma.rkey = mr->rkey;
}

static void chain(struct ibv_send_wr *w, int n)
{
    for (int i = 0; i + 1 < n; i++)
        w[i].next = &w[i + 1];
    w[n - 1].next = NULL;
}

static int post_send(int i, struct ibv_send_wr *w, struct ibv_send_wr **bad)
{
    struct ibv_send_wr *b = NULL;
    int rc = API->post_send(P.s[i].qp, w, &b);

    if (bad)
        *bad = b;
    return rc;
}

static void post_one(int i, struct ibv_send_wr *w)
{
    int rc = post_send(i, w, NULL);

    XT_REQUIRE(rc == 0, "post_send: %s", strerror(rc));
}

static void post_recv(int i, uint64_t id, struct ibv_sge *sge, int nsge)
{
    struct ibv_recv_wr r, *bad = NULL;
    int rc;

    memset(&r, 0, sizeof r);
    r.wr_id = id;
    r.sg_list = sge;
    r.num_sge = nsge;
    rc = API->post_recv(P.s[i].qp, &r, &bad);
    XT_REQUIRE(rc == 0, "post_recv: %s", strerror(rc));
}

static int hw_state(int i)
{
    return fakeverbs_qp_state(P.s[i].qp->qp_num);
}

static void live_none(void)
{
    struct fakeverbs_stats st = stats();

    XT_CHECK(st.live_contexts == 0 && st.live_pds == 0 && st.live_mrs == 0 &&
             st.live_cqs == 0 && st.live_qps == 0 && st.live_channels == 0,
             "left alive: %" PRIu64 " contexts %" PRIu64 " PDs %" PRIu64
             " MRs %" PRIu64 " CQs %" PRIu64 " QPs %" PRIu64 " channels",
             st.live_contexts, st.live_pds, st.live_mrs, st.live_cqs,
             st.live_qps, st.live_channels);
}

/* ---- devices ------------------------------------------------------------ */

static void test_devices(void)
{
    struct ibv_device **list;
    struct ibv_context *ctx;
    struct ibv_device_attr da;
    struct ibv_port_attr pa;
    union ibv_gid g;
    int n;

    setenv("XFER_FAKEVERBS_DEVICES", "3", 1);
    list = API->get_device_list(&n);
    XT_REQUIRE(list && n == 3, "3 devices asked, %d listed", n);
    XT_CHECK(list[3] == NULL, "the list ends with NULL");
    XT_CHECK(strcmp(API->get_device_name(list[2]), "fake2") == 0,
             "name %s", API->get_device_name(list[2]));
    XT_CHECK(strcmp(API->what, "fakeverbs") == 0, "what: %s", API->what);
    ctx = API->open_device(list[1]);
    XT_REQUIRE(ctx != NULL, "open_device");
    XT_CHECK(ctx->device == list[1], "context names its device");
    XT_CHECK(API->query_device(ctx, &da) == 0, "query_device");
    XT_CHECK(da.max_qp_wr == 16384 && da.max_sge == 30 &&
             da.max_cqe == 4194303 && da.max_qp == 65536 &&
             da.max_mr_size == (1ull << 48) && da.max_qp_rd_atom == 16 &&
             da.max_qp_init_rd_atom == 16 && da.phys_port_cnt == 1 &&
             strcmp(da.fw_ver, "fakeverbs") == 0, "device limits");
    XT_CHECK(API->query_port(ctx, 1, &pa) == 0, "query_port 1");
    XT_CHECK(pa.state == IBV_PORT_ACTIVE && pa.active_mtu == IBV_MTU_4096 &&
             pa.link_layer == IBV_LINK_LAYER_INFINIBAND && pa.lid == 2 &&
             pa.gid_tbl_len == 4, "ib port: state %d mtu %d link %d lid %u",
             pa.state, pa.active_mtu, pa.link_layer, pa.lid);
    XT_CHECK(API->query_port(ctx, 2, &pa) == EINVAL, "port 2: EINVAL");
    XT_CHECK(API->query_port(ctx, 0, &pa) == EINVAL, "port 0: EINVAL");
    XT_CHECK(API->query_gid(ctx, 1, 0, &g) == 0 && g.raw[0] == 0xfe &&
             g.raw[1] == 0x80 && g.raw[15] == 2, "gid 0: fe80::2");
    /* InfiniBand: only the port GID (RoCE's, typed v1 and v2: test-verbs-qp). */
    XT_CHECK(API->query_gid(ctx, 1, 1, &g) == 0 && g.global.subnet_prefix ==
             0 && g.global.interface_id == 0, "gid 1 on IB: zero");
    XT_CHECK(API->query_gid(ctx, 1, 3, &g) == 0 && g.global.subnet_prefix ==
             0 && g.global.interface_id == 0, "gid 3: zero");
    XT_CHECK(API->query_gid(ctx, 1, 4, &g) == EINVAL, "gid 4: EINVAL");
    XT_CHECK(API->query_gid(ctx, 2, 0, &g) == EINVAL, "gid on port 2");
    XT_CHECK(API->close_device(ctx) == 0, "close_device");
    API->free_device_list(list);

    setenv("XFER_FAKEVERBS_DEVICES", "0", 1);
    list = API->get_device_list(&n);
    XT_CHECK(list && n == 0 && list[0] == NULL, "0 devices: empty list");
    API->free_device_list(list);

    setenv("XFER_FAKEVERBS_DEVICES", "2", 1);
    setenv("XFER_FAKEVERBS_LINK", "eth", 1);
    list = API->get_device_list(&n);
    XT_REQUIRE(list && n == 2, "2 devices");
    ctx = API->open_device(list[0]);
    XT_REQUIRE(ctx != NULL, "open_device");
    XT_CHECK(API->query_port(ctx, 1, &pa) == 0 &&
             pa.link_layer == IBV_LINK_LAYER_ETHERNET &&
             pa.active_mtu == IBV_MTU_1024 && pa.lid == 0,
             "eth port: link %d mtu %d lid %u", pa.link_layer,
             pa.active_mtu, pa.lid);
    XT_CHECK(API->close_device(ctx) == 0, "close_device");
    API->free_device_list(list);
    setenv("XFER_FAKEVERBS_LINK", "ib", 1);
    live_none();
}

/* ---- objects: strict creation and teardown ------------------------------- */

static void test_objects(void)
{
    opts_t o = defaults();
    struct ibv_qp_init_attr ia;
    struct ibv_mr *a, *b;
    void *page;
    char buf[64];

    pair_open(&o);
    a = pair_mr(0, 4096, ALL_ACCESS);
    b = pair_mr(0, 4096, IBV_ACCESS_LOCAL_WRITE);
    XT_CHECK(a->lkey && a->rkey && b->lkey && b->rkey && a->lkey != a->rkey &&
             a->lkey != b->lkey && a->rkey != b->rkey && a->lkey != b->rkey,
             "keys nonzero and distinct: %x %x %x %x", a->lkey, a->rkey,
             b->lkey, b->rkey);
    XT_CHECK(a->pd == P.s[0].pd && a->length == 4096 && a->context ==
             P.s[0].ctx, "MR fields");

    errno = 0;
    XT_CHECK(API->reg_mr(P.s[0].pd, buf, sizeof buf,
                         IBV_ACCESS_REMOTE_WRITE) == NULL && errno == EINVAL,
             "REMOTE_WRITE without LOCAL_WRITE: EINVAL (errno %d)", errno);
    errno = 0;
    XT_CHECK(API->reg_mr(P.s[0].pd, buf, sizeof buf,
                         IBV_ACCESS_REMOTE_ATOMIC) == NULL && errno == EINVAL,
             "REMOTE_ATOMIC without LOCAL_WRITE: EINVAL");
    errno = 0;
    XT_CHECK(API->reg_mr(P.s[0].pd, buf, 0, IBV_ACCESS_LOCAL_WRITE) == NULL &&
             errno == EINVAL, "zero length: EINVAL");
    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    XT_REQUIRE(page != MAP_FAILED, "mmap");
    munmap(page, 4096);
    errno = 0;
    XT_CHECK(API->reg_mr(P.s[0].pd, page, 4096, IBV_ACCESS_LOCAL_WRITE) ==
             NULL && errno == EFAULT, "unmapped memory: EFAULT");

    memset(&ia, 0, sizeof ia);
    ia.send_cq = ia.recv_cq = P.s[0].cq;
    ia.qp_type = IBV_QPT_UD;
    ia.cap.max_send_wr = 1;
    errno = 0;
    XT_CHECK(API->create_qp(P.s[0].pd, &ia) == NULL && errno == EINVAL,
             "UD QP refused");
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = 16385;
    errno = 0;
    XT_CHECK(API->create_qp(P.s[0].pd, &ia) == NULL && errno == EINVAL,
             "max_send_wr over the device's: EINVAL");
    ia.cap.max_send_wr = 1;
    ia.cap.max_inline_data = FAKEVERBS_MAX_INLINE + 1;
    errno = 0;
    XT_CHECK(API->create_qp(P.s[0].pd, &ia) == NULL && errno == EINVAL,
             "max_inline_data over the device's: EINVAL");
    ia.cap.max_inline_data = 0;
    ia.send_cq = NULL;
    errno = 0;
    XT_CHECK(API->create_qp(P.s[0].pd, &ia) == NULL && errno == EINVAL,
             "no send CQ: EINVAL");
    errno = 0;
    XT_CHECK(API->create_cq(P.s[0].ctx, 0, NULL, NULL, 0) == NULL &&
             errno == EINVAL, "a CQ of 0 entries: EINVAL");
    errno = 0;
    XT_CHECK(API->create_cq(P.s[0].ctx, 4194304, NULL, NULL, 0) == NULL &&
             errno == EINVAL, "a CQ over max_cqe: EINVAL");

    XT_CHECK(P.s[0].qp->qp_num > 1 && P.s[0].qp->qp_num <= 0xffffff &&
             P.s[0].qp->qp_num != P.s[1].qp->qp_num, "QP numbers %u %u",
             P.s[0].qp->qp_num, P.s[1].qp->qp_num);
    XT_CHECK(P.s[0].qp->state == IBV_QPS_RESET &&
             P.s[0].qp->qp_type == IBV_QPT_RC &&
             P.s[0].qp->send_cq == P.s[0].cq && P.s[0].qp->pd == P.s[0].pd,
             "QP fields");

    /* Busy objects. */
    XT_CHECK(API->dealloc_pd(P.s[0].pd) == EBUSY, "PD with MRs and a QP");
    XT_CHECK(API->destroy_cq(P.s[0].cq) == EBUSY, "CQ with a QP");
    XT_CHECK(API->close_device(P.s[0].ctx) == EBUSY, "context with a PD");
    XT_CHECK(API->destroy_qp(P.s[0].qp) == 0, "destroy_qp");
    P.s[0].qp = NULL;
    XT_CHECK(API->dealloc_pd(P.s[0].pd) == EBUSY, "PD with MRs");
    pair_close(&P);
    live_none();
}

/* ---- data, byte for byte -------------------------------------------------- */

static void test_write_read_send(void)
{
    opts_t o = defaults();
    uint64_t s = seed ^ 1;
    size_t len = 1000 + rnd(&s) % 60000, half = len / 3;
    struct ibv_mr *src, *dst, *back, *rcv;
    struct ibv_sge sg[2], rs[2];
    struct ibv_send_wr w;
    struct ibv_wc wc[2];
    unsigned char *S, *D, *B, *R;

    pair_open(&o);
    pair_connect();
    src = pair_mr(0, len, ALL_ACCESS);
    back = pair_mr(0, len, ALL_ACCESS);
    dst = pair_mr(1, len, ALL_ACCESS);
    rcv = pair_mr(1, len + 16, IBV_ACCESS_LOCAL_WRITE);
    S = src->addr;
    D = dst->addr;
    B = back->addr;
    R = rcv->addr;
    fill(S, len, &s);

    /* WRITE from two SGEs into the remote region. */
    sg[0] = sge_of(src, 0, half);
    sg[1] = sge_of(src, half, len - half);
    w = wr_of(1, IBV_WR_RDMA_WRITE, sg, 2, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, wc, 1);
    check_wc(&wc[0], 1, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    XT_CHECK(wc[0].qp_num == P.s[0].qp->qp_num, "qp_num of the CQE");
    XT_CHECK(memcmp(S, D, len) == 0, "WRITE: %zu bytes arrived", len);

    /* READ it back into two SGEs. */
    sg[0] = sge_of(back, 0, len - half);
    sg[1] = sge_of(back, len - half, half);
    w = wr_of(2, IBV_WR_RDMA_READ, sg, 2, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, wc, 1);
    check_wc(&wc[0], 2, IBV_WC_SUCCESS, IBV_WC_RDMA_READ);
    XT_CHECK(wc[0].byte_len == len, "READ byte_len %u", wc[0].byte_len);
    XT_CHECK(memcmp(S, B, len) == 0, "READ: %zu bytes back", len);

    /* SEND with immediate into a receive of two SGEs. */
    fill(S, len, &s);
    rs[0] = sge_of(rcv, 0, 7);
    rs[1] = sge_of(rcv, 7, len + 9);
    post_recv(1, 77, rs, 2);
    sg[0] = sge_of(src, 0, len);
    w = wr_of(3, IBV_WR_SEND_WITH_IMM, sg, 1, IBV_SEND_SIGNALED);
    w.imm_data = 0xabcd1234;
    post_one(0, &w);
    poll_n(0, wc, 1);
    check_wc(&wc[0], 3, IBV_WC_SUCCESS, IBV_WC_SEND);
    poll_n(1, wc, 1);
    check_wc(&wc[0], 77, IBV_WC_SUCCESS, IBV_WC_RECV);
    XT_CHECK(wc[0].byte_len == len && wc[0].src_qp == P.s[0].qp->qp_num &&
             wc[0].qp_num == P.s[1].qp->qp_num &&
             (wc[0].wc_flags & IBV_WC_WITH_IMM) &&
             wc[0].imm_data == 0xabcd1234,
             "receive CQE: len %u src %u imm %x", wc[0].byte_len,
             wc[0].src_qp, wc[0].imm_data);
    XT_CHECK(memcmp(S, R, len) == 0, "SEND: %zu bytes received", len);

    /* WRITE with immediate: the data, and a receive consumed. */
    fill(S, len, &s);
    post_recv(1, 78, NULL, 0);
    w = wr_of(4, IBV_WR_RDMA_WRITE_WITH_IMM, sg, 1, IBV_SEND_SIGNALED);
    w.imm_data = 0x55;
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, wc, 1);
    check_wc(&wc[0], 4, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    poll_n(1, wc, 1);
    check_wc(&wc[0], 78, IBV_WC_SUCCESS, IBV_WC_RECV_RDMA_WITH_IMM);
    XT_CHECK(wc[0].byte_len == len && wc[0].imm_data == 0x55,
             "RECV_RDMA_WITH_IMM: len %u imm %x", wc[0].byte_len,
             wc[0].imm_data);
    XT_CHECK(memcmp(S, D, len) == 0, "WRITE_WITH_IMM: data arrived");

    /* Inline: the data is taken at post time. */
    memset(S, 'a', 64);
    post_recv(1, 79, rs, 2);
    sg[0] = sge_of(src, 0, 64);
    sg[0].lkey = 0;     /* inline data needs no key */
    w = wr_of(5, IBV_WR_SEND, sg, 1, IBV_SEND_SIGNALED | IBV_SEND_INLINE);
    post_one(0, &w);
    memset(S, 'b', 64);
    poll_n(1, wc, 1);
    check_wc(&wc[0], 79, IBV_WC_SUCCESS, IBV_WC_RECV);
    XT_CHECK(R[0] == 'a' && R[63] == 'a', "inline data as it was at post");
    poll_n(0, wc, 1);
    sg[0].length = 65;
    w = wr_of(6, IBV_WR_SEND, sg, 1, IBV_SEND_INLINE);
    XT_CHECK(post_send(0, &w, NULL) == EINVAL,
             "inline over max_inline_data: EINVAL");

    XT_CHECK(stats().bytes_moved >= 4 * len, "bytes counted");
    pair_close(&P);
    live_none();
}

/* RoCE: the peer addressed by GID. */
static void test_eth(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w;
    struct ibv_wc wc;
    struct ibv_qp_attr a;
    uint64_t s = seed ^ 2;
    int mask;

    setenv("XFER_FAKEVERBS_LINK", "eth", 1);
    pair_open(&o);
    setenv("XFER_FAKEVERBS_LINK", "ib", 1);
    XT_REQUIRE(P.eth, "the devices are Ethernet");

    init_attr(&a, &mask);
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "INIT");
    rtr_attr(&a, &mask, 1);
    a.path_mtu = IBV_MTU_4096;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL,
             "path_mtu over the port's active_mtu: EINVAL");
    rtr_attr(&a, &mask, 1);
    a.ah_attr.is_global = 0;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL,
             "RoCE without a GRH: EINVAL");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_INIT, "still INIT");
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RESET;
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, IBV_QP_STATE) == 0, "RESET");
    pair_connect();

    src = pair_mr(0, 5000, ALL_ACCESS);
    dst = pair_mr(1, 5000, ALL_ACCESS);
    fill(src->addr, 5000, &s);
    sg = sge_of(src, 0, 5000);
    w = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 1, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    XT_CHECK(memcmp(src->addr, dst->addr, 5000) == 0, "bytes over RoCE");
    pair_close(&P);
}

/* ---- the state machine ------------------------------------------------------ */

static void test_modify_masks(void)
{
    opts_t o = defaults();
    struct ibv_qp_attr a;
    struct ibv_send_wr w, *bad = NULL;
    int mask;

    pair_open(&o);
    init_attr(&a, &mask);
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask & ~IBV_QP_ACCESS_FLAGS) ==
             EINVAL, "RESET->INIT without ACCESS_FLAGS: EINVAL");
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask & ~IBV_QP_PORT) == EINVAL,
             "RESET->INIT without PORT: EINVAL");
    a.port_num = 2;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL, "port 2");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_RESET, "still RESET");
    rtr_attr(&a, &mask, 1);
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL,
             "RESET->RTR: EINVAL");
    init_attr(&a, &mask);
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "RESET->INIT");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_INIT, "qp->state INIT");
    XT_CHECK(hw_state(0) == IBV_QPS_INIT, "hardware INIT");

    rtr_attr(&a, &mask, 1);
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask & ~IBV_QP_MIN_RNR_TIMER) ==
             EINVAL, "INIT->RTR without MIN_RNR_TIMER: EINVAL");
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask & ~IBV_QP_AV) == EINVAL,
             "INIT->RTR without AV: EINVAL");
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask | IBV_QP_SQ_PSN) == EINVAL,
             "INIT->RTR with SQ_PSN (not allowed there): EINVAL");
    a.ah_attr.dlid = 0;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL, "dlid 0");
    rtr_attr(&a, &mask, 1);
    a.dest_qp_num = 1u << 24;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL,
             "dest_qp_num over 24 bits");
    rts_attr(&a, &mask);
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL,
             "INIT->RTS: EINVAL");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_INIT, "still INIT");
    rtr_attr(&a, &mask, 1);
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "INIT->RTR");

    w = wr_of(1, IBV_WR_RDMA_WRITE, NULL, 0, IBV_SEND_SIGNALED);
    XT_CHECK(API->post_send(P.s[0].qp, &w, &bad) == EINVAL && bad == &w,
             "post_send in RTR: EINVAL, *bad at the WR");

    rts_attr(&a, &mask);
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask & ~IBV_QP_SQ_PSN) == EINVAL,
             "RTR->RTS without SQ_PSN: EINVAL");
    a.retry_cnt = 8;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL, "retry_cnt 8");
    rts_attr(&a, &mask);
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "RTR->RTS");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_RTS, "qp->state RTS");
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, mask) == EINVAL,
             "RTS->RTS with the RTR->RTS mask: EINVAL");
    init_attr(&a, &mask);
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, IBV_QP_STATE) == EINVAL,
             "RTS->INIT: EINVAL");
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_ERR;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, IBV_QP_STATE | IBV_QP_PORT) ==
             EINVAL, "to ERR with another attribute: EINVAL");
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, IBV_QP_STATE) == 0, "to ERR");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_ERR, "qp->state ERR");
    a.qp_state = IBV_QPS_RESET;
    XT_CHECK(API->modify_qp(P.s[0].qp, &a, IBV_QP_STATE) == 0,
             "ERR->RESET");
    XT_CHECK(P.s[0].qp->state == IBV_QPS_RESET, "qp->state RESET");
    pair_close(&P);
}

/* ---- errors ------------------------------------------------------------------ */

static void test_bad_rkey(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst, *rcv;
    struct ibv_sge sg, rs;
    struct ibv_send_wr w, *bad = NULL;
    struct ibv_wc wc;

    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    rcv = pair_mr(1, 4096, IBV_ACCESS_LOCAL_WRITE);
    rs = sge_of(rcv, 0, 4096);
    post_recv(1, 50, &rs, 1);

    sg = sge_of(src, 0, 100);
    w = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, 0);   /* unsignaled */
    rdma_to(&w, dst, 0);
    w.wr.rdma.rkey = dst->rkey ^ 0x10000;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 1, IBV_WC_REM_ACCESS_ERR, IBV_WC_RDMA_WRITE);
    XT_CHECK(strcmp(API->wc_status_str(wc.status), "remote access error") ==
             0, "status text: %s", API->wc_status_str(wc.status));
    XT_CHECK(hw_state(0) == IBV_QPS_ERR && hw_state(1) == IBV_QPS_ERR,
             "both QPs in error: %d %d", hw_state(0), hw_state(1));
    XT_CHECK(P.s[0].qp->state == IBV_QPS_RTS,
             "qp->state stays the caller's last word (RTS), as rdma-core");
    poll_n(1, &wc, 1);
    check_wc(&wc, 50, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV);
    XT_CHECK(API->post_send(P.s[0].qp, &w, &bad) == EINVAL && bad == &w,
             "post_send in error: EINVAL");
    post_recv(0, 51, NULL, 0);
    poll_n(0, &wc, 1);
    check_wc(&wc, 51, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV);

    /* A range past the region's end, then a region without REMOTE_READ. */
    pair_reconnect();
    w = wr_of(2, IBV_WR_RDMA_WRITE, &sg, 1, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 4000);
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 2, IBV_WC_REM_ACCESS_ERR, IBV_WC_RDMA_WRITE);
    pair_reconnect();
    w = wr_of(3, IBV_WR_RDMA_READ, &sg, 1, IBV_SEND_SIGNALED);
    rdma_to(&w, rcv, 0);        /* LOCAL_WRITE only */
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 3, IBV_WC_REM_ACCESS_ERR, IBV_WC_RDMA_READ);
    pair_close(&P);
}

static void test_dereg_fences(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w;
    struct ibv_wc wc;
    uint32_t lkey;

    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 512);
    lkey = src->lkey;
    w = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 1, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);

    deregister(src);
    sg.lkey = lkey;
    w.wr_id = 2;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 2, IBV_WC_LOC_PROT_ERR, IBV_WC_RDMA_WRITE);
    XT_CHECK(hw_state(0) == IBV_QPS_ERR && hw_state(1) == IBV_QPS_RTS,
             "a local error stops only the requester: %d %d", hw_state(0),
             hw_state(1));

    pair_reconnect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 512);
    deregister(dst);
    w.wr_id = 3;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 3, IBV_WC_REM_ACCESS_ERR, IBV_WC_RDMA_WRITE);

    /* A READ into memory without LOCAL_WRITE. */
    pair_reconnect();
    dst = pair_mr(1, 4096, ALL_ACCESS);
    src = pair_mr(0, 4096, IBV_ACCESS_REMOTE_READ);
    sg = sge_of(src, 0, 512);
    w = wr_of(4, IBV_WR_RDMA_READ, &sg, 1, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 4, IBV_WC_LOC_PROT_ERR, IBV_WC_RDMA_READ);
    pair_close(&P);
}

/* Unsignaled WRs hold their slots until a later signaled CQE is polled. */
static void test_unsignaled_slots(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w[5], *bad = NULL;
    struct ibv_wc wc[4];
    uint64_t base;
    int rc;

    o.max_send_wr = 4;
    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 64);
    base = stats().wrs_executed;
    for (int i = 0; i < 5; i++) {
        w[i] = wr_of((uint64_t)i, IBV_WR_RDMA_WRITE, &sg, 1,
                     i == 3 ? IBV_SEND_SIGNALED : 0);
        rdma_to(&w[i], dst, (size_t)i * 64);
    }
    chain(w, 5);
    rc = post_send(0, w, &bad);
    XT_CHECK(rc == ENOMEM && bad == &w[4], "the 5th of 4 slots: ENOMEM at "
             "it (rc %d, bad %p, want %p)", rc, (void *)bad, (void *)&w[4]);
    WAIT_STAT(wrs_executed, base + 4);
    w[4].next = NULL;
    XT_CHECK(post_send(0, &w[4], &bad) == ENOMEM,
             "executed but unpolled WRs still hold their slots");
    poll_n(0, wc, 1);
    check_wc(&wc[0], 3, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    poll_none(0);
    XT_CHECK(post_send(0, &w[4], &bad) == 0,
             "the polled signaled CQE freed the slots before it");

    /* The receive queue: max_recv_wr slots, freed when polled. */
    for (int i = 0; i < 16; i++)
        post_recv(1, (uint64_t)i, NULL, 0);
    {
        struct ibv_recv_wr r, *rbad = NULL;

        memset(&r, 0, sizeof r);
        XT_CHECK(API->post_recv(P.s[1].qp, &r, &rbad) == ENOMEM &&
                 rbad == &r, "receive queue full: ENOMEM");
    }
    pair_close(&P);
}

/* A failed WR always completes; the WRs after it are flushed, with a CQE
 * only when signaled; receives are flushed. */
static void test_flush(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w[3];
    struct ibv_wc wc[2];

    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 64);
    post_recv(0, 90, NULL, 0);
    fakeverbs_cut(true);
    w[0] = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, 0);
    w[1] = wr_of(2, IBV_WR_RDMA_WRITE, &sg, 1, 0);
    w[2] = wr_of(3, IBV_WR_RDMA_WRITE, &sg, 1, IBV_SEND_SIGNALED);
    for (int i = 0; i < 3; i++)
        rdma_to(&w[i], dst, 0);
    chain(w, 3);
    post_one(0, w);
    poll_n(0, wc, 2);
    fakeverbs_cut(false);
    check_wc(&wc[0], 1, IBV_WC_RETRY_EXC_ERR, IBV_WC_RDMA_WRITE);
    /* the receive and the signaled WR, in either order */
    if (wc[1].wr_id == 90) {
        check_wc(&wc[1], 90, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV);
        poll_n(0, wc, 1);
        check_wc(&wc[0], 3, IBV_WC_WR_FLUSH_ERR, IBV_WC_RDMA_WRITE);
    } else {
        check_wc(&wc[1], 3, IBV_WC_WR_FLUSH_ERR, IBV_WC_RDMA_WRITE);
        poll_n(0, wc, 1);
        check_wc(&wc[0], 90, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV);
    }
    poll_none(0);
    XT_CHECK(hw_state(0) == IBV_QPS_ERR, "QP in error");

    /* modify_qp(ERR) by the caller flushes likewise; RESET drops. */
    pair_reconnect();
    post_recv(1, 91, NULL, 0);
    {
        struct ibv_qp_attr a;

        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_ERR;
        XT_REQUIRE(API->modify_qp(P.s[1].qp, &a, IBV_QP_STATE) == 0, "ERR");
        poll_n(1, wc, 1);
        check_wc(&wc[0], 91, IBV_WC_WR_FLUSH_ERR, IBV_WC_RECV);
        a.qp_state = IBV_QPS_RESET;
        XT_REQUIRE(API->modify_qp(P.s[1].qp, &a, IBV_QP_STATE) == 0, "RESET");
        to_rts(1, 0);
        post_recv(1, 92, NULL, 0);
        XT_REQUIRE(API->modify_qp(P.s[1].qp, &a, IBV_QP_STATE) == 0, "RESET");
        poll_none(1);
    }
    pair_close(&P);
}

/* No receive posted: RNR, retried, then RNR_RETRY_EXC_ERR. */
static void test_rnr_exceeded(void)
{
    opts_t o = defaults();
    struct ibv_mr *src;
    struct ibv_sge sg;
    struct ibv_send_wr w;
    struct ibv_wc wc;
    char want[64];
    const char *text;
    uint64_t base;

    setenv("XFER_FAKEVERBS_RNR_MS", "30", 1);
    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 64);
    base = stats().rnr_events;
    w = wr_of(1, IBV_WR_SEND, &sg, 1, IBV_SEND_SIGNALED);
    xt_defer(cap_cleanup, NULL);
    cap_begin();
    post_one(0, &w);
    poll_n(0, &wc, 1);
    text = cap_end();
    check_wc(&wc, 1, IBV_WC_RNR_RETRY_EXC_ERR, IBV_WC_SEND);
    XT_CHECK(stats().rnr_events == base + 1, "one RNR counted");
    snprintf(want, sizeof want, "fakeverbs: RNR on QP %u\n",
             P.s[0].qp->qp_num);
    XT_CHECK(strstr(text, want) != NULL, "stderr says \"%s\": %s", want,
             text);
    XT_CHECK(hw_state(0) == IBV_QPS_ERR && hw_state(1) == IBV_QPS_RTS,
             "the requester alone in error");
    pair_close(&P);
}

/* RNR, then a receive posted: the SEND goes through. */
static void test_rnr_recovers(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *rcv;
    struct ibv_sge sg, rs;
    struct ibv_send_wr w;
    struct ibv_wc wc;
    uint64_t base, s = seed ^ 3;

    setenv("XFER_FAKEVERBS_RNR_MS", "600000", 1);
    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    rcv = pair_mr(1, 4096, IBV_ACCESS_LOCAL_WRITE);
    fill(src->addr, 300, &s);
    sg = sge_of(src, 0, 300);
    base = stats().rnr_events;
    w = wr_of(1, IBV_WR_SEND, &sg, 1, IBV_SEND_SIGNALED);
    post_one(0, &w);
    WAIT_STAT(rnr_events, base + 1);
    poll_none(0);
    {   /* the stall holds no other QP: the reverse direction moves */
        struct ibv_mr *back = pair_mr(0, 4096, ALL_ACCESS);
        struct ibv_sge bs = sge_of(rcv, 0, 200);
        struct ibv_send_wr bw = wr_of(9, IBV_WR_RDMA_WRITE, &bs, 1,
                                      IBV_SEND_SIGNALED);

        rdma_to(&bw, back, 0);
        post_one(1, &bw);
        poll_n(1, &wc, 1);
        check_wc(&wc, 9, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
        poll_none(0);
    }
    rs = sge_of(rcv, 0, 4096);
    post_recv(1, 7, &rs, 1);
    poll_n(0, &wc, 1);
    check_wc(&wc, 1, IBV_WC_SUCCESS, IBV_WC_SEND);
    poll_n(1, &wc, 1);
    check_wc(&wc, 7, IBV_WC_SUCCESS, IBV_WC_RECV);
    XT_CHECK(wc.byte_len == 300 && memcmp(src->addr, rcv->addr, 300) == 0,
             "the SEND's bytes after the RNR");

    /* A SEND too long for the receive. */
    rs.length = 100;
    post_recv(1, 8, &rs, 1);
    w.wr_id = 2;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 2, IBV_WC_REM_INV_REQ_ERR, IBV_WC_SEND);
    poll_n(1, &wc, 1);
    check_wc(&wc, 8, IBV_WC_LOC_LEN_ERR, IBV_WC_RECV);
    XT_CHECK(hw_state(0) == IBV_QPS_ERR && hw_state(1) == IBV_QPS_ERR,
             "both in error after a length error");

    /* A link failure on a QP stalled in RNR. */
    pair_reconnect();
    base = stats().rnr_events;
    {
        struct ibv_send_wr c[3];
        struct ibv_wc two[2];

        c[0] = wr_of(10, IBV_WR_SEND, &sg, 1, 0);
        c[1] = wr_of(11, IBV_WR_SEND, &sg, 1, 0);
        c[2] = wr_of(12, IBV_WR_SEND, &sg, 1, IBV_SEND_SIGNALED);
        chain(c, 3);
        post_one(0, c);
        WAIT_STAT(rnr_events, base + 1);
        XT_CHECK(fakeverbs_qp_error(P.s[0].qp->qp_num) == 0, "qp_error");
        XT_CHECK(fakeverbs_qp_error(0) == ENOENT, "qp_error on no QP");
        poll_n(0, two, 2);
        check_wc(&two[0], 10, IBV_WC_RETRY_EXC_ERR, IBV_WC_SEND);
        check_wc(&two[1], 12, IBV_WC_WR_FLUSH_ERR, IBV_WC_SEND);
        poll_none(0);
    }
    setenv("XFER_FAKEVERBS_RNR_MS", "1000", 1);
    pair_close(&P);
}

/* A peer that does not answer: RETRY_EXC_ERR after the retries. */
static void test_unreachable(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w;
    struct ibv_wc wc;
    struct ibv_qp_attr a;
    int mask;

    pair_open(&o);
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    to_rts(1, 0);
    init_attr(&a, &mask);
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "INIT");
    rtr_attr(&a, &mask, 1);
    a.dest_qp_num = P.s[1].qp->qp_num ^ 1;  /* nobody */
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "RTR");
    rts_attr(&a, &mask);
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, mask) == 0, "RTS");
    sg = sge_of(src, 0, 64);
    w = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, 0);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 1, IBV_WC_RETRY_EXC_ERR, IBV_WC_RDMA_WRITE);
    XT_CHECK(strcmp(API->wc_status_str(wc.status),
                    "transport retry counter exceeded") == 0, "text: %s",
             API->wc_status_str(wc.status));

    /* The peer exists but is connected elsewhere: no answer either. */
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_RESET;
    XT_REQUIRE(API->modify_qp(P.s[0].qp, &a, IBV_QP_STATE) == 0 &&
               API->modify_qp(P.s[1].qp, &a, IBV_QP_STATE) == 0, "RESET");
    to_rts(0, 1);
    init_attr(&a, &mask);
    XT_REQUIRE(API->modify_qp(P.s[1].qp, &a, mask) == 0, "INIT");
    rtr_attr(&a, &mask, 0);
    a.dest_qp_num = P.s[0].qp->qp_num ^ 1;
    XT_REQUIRE(API->modify_qp(P.s[1].qp, &a, mask) == 0, "RTR");
    w.wr_id = 2;
    w.send_flags = IBV_SEND_SIGNALED;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 2, IBV_WC_RETRY_EXC_ERR, IBV_WC_RDMA_WRITE);

    /* The peer connected back but in error: no answer. */
    pair_reconnect();
    memset(&a, 0, sizeof a);
    a.qp_state = IBV_QPS_ERR;
    XT_REQUIRE(API->modify_qp(P.s[1].qp, &a, IBV_QP_STATE) == 0, "ERR");
    w.wr_id = 3;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    check_wc(&wc, 3, IBV_WC_RETRY_EXC_ERR, IBV_WC_RDMA_WRITE);
    pair_close(&P);
}

static void test_cq_overrun(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w[3];
    struct ibv_wc wc[3];
    uint64_t base;
    const char *text;

    o.cqe = 2;
    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 64);
    for (int i = 0; i < 3; i++) {
        w[i] = wr_of((uint64_t)i, IBV_WR_RDMA_WRITE, &sg, 1,
                     IBV_SEND_SIGNALED);
        rdma_to(&w[i], dst, 0);
    }
    chain(w, 3);
    base = stats().cq_overruns;
    xt_defer(cap_cleanup, NULL);
    cap_begin();
    post_one(0, w);
    WAIT_STAT(cq_overruns, base + 1);
    text = cap_end();
    XT_CHECK(strstr(text, "fakeverbs: CQ overrun") != NULL,
             "stderr names the overrun: %s", text);
    XT_CHECK(hw_state(0) == IBV_QPS_ERR, "the CQ's QP in error");
    XT_CHECK(API->poll_cq(P.s[0].cq, 3, wc) == 2, "the two CQEs it held");
    check_wc(&wc[0], 0, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    check_wc(&wc[1], 1, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    pair_close(&P);
}

static void test_fail_post_after(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w[4], *bad = NULL;
    struct ibv_wc wc[2];
    int rc;

    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 64);
    for (int i = 0; i < 4; i++) {
        w[i] = wr_of((uint64_t)i, IBV_WR_RDMA_WRITE, &sg, 1,
                     IBV_SEND_SIGNALED);
        rdma_to(&w[i], dst, 0);
    }
    chain(w, 4);
    fakeverbs_fail_post_after(2);
    rc = post_send(0, w, &bad);
    XT_CHECK(rc == ENOMEM && bad == &w[2], "ENOMEM at the third WR (rc %d)",
             rc);
    poll_n(0, wc, 2);
    check_wc(&wc[0], 0, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    check_wc(&wc[1], 1, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    XT_CHECK(post_send(0, &w[2], &bad) == 0, "fires once");
    poll_n(0, wc, 2);
    pair_close(&P);
}

/* ---- completion channels ----------------------------------------------------- */

static bool readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll(&p, 1, 0) == 1;
}

static bool wait_readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return poll(&p, 1, (int)WAIT_MS) == 1;
}

static void test_channel(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w;
    struct ibv_wc wc;
    struct ibv_cq *cq = NULL;
    void *cctx = NULL;
    int fd;
    uint64_t base;
    const char *text;

    o.channel = true;
    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 64);
    fd = P.s[0].ch->fd;
    XT_REQUIRE(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0,
               "O_NONBLOCK");
    XT_CHECK(P.s[0].cq->channel == P.s[0].ch && P.s[0].ch->context ==
             P.s[0].ctx, "channel fields");
    errno = 0;
    XT_CHECK(API->get_cq_event(P.s[0].ch, &cq, &cctx) == -1 &&
             errno == EAGAIN, "no event yet: EAGAIN");

    /* Armed: the next CQE fires once. */
    XT_CHECK(API->req_notify_cq(P.s[0].cq, 0) == 0, "arm");
    w = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, IBV_SEND_SIGNALED);
    rdma_to(&w, dst, 0);
    post_one(0, &w);
    XT_REQUIRE(wait_readable(fd), "the fd became readable");
    XT_CHECK(API->get_cq_event(P.s[0].ch, &cq, &cctx) == 0 &&
             cq == P.s[0].cq && cctx == &P.s[0], "the event names the CQ");
    P.s[0].unacked++;
    XT_CHECK(!readable(fd), "one event per arm");
    poll_n(0, &wc, 1);

    /* Not armed: a CQE, no event. */
    w.wr_id = 2;
    post_one(0, &w);
    poll_n(0, &wc, 1);
    XT_CHECK(!readable(fd), "not armed: no event");
    errno = 0;
    XT_CHECK(API->get_cq_event(P.s[0].ch, &cq, &cctx) == -1 &&
             errno == EAGAIN, "not armed: EAGAIN");

    /* A CQE already there at arm time does not fire it. */
    base = stats().wrs_executed;
    w.wr_id = 3;
    post_one(0, &w);
    WAIT_STAT(wrs_executed, base + 1);
    XT_CHECK(API->req_notify_cq(P.s[0].cq, 0) == 0, "arm");
    XT_CHECK(!readable(fd), "a CQE there before arming fires nothing");
    w.wr_id = 4;
    post_one(0, &w);
    XT_REQUIRE(wait_readable(fd), "the next CQE fires it");
    XT_CHECK(API->get_cq_event(P.s[0].ch, &cq, &cctx) == 0, "event");
    P.s[0].unacked++;
    poll_n(0, &wc, 1);
    poll_n(0, &wc, 1);

    /* Armed for solicited events only: a plain SEND does not wake it. */
    {
        struct ibv_mr *rcv = pair_mr(1, 4096, IBV_ACCESS_LOCAL_WRITE);
        struct ibv_sge rs = sge_of(rcv, 0, 4096);
        int fd1 = P.s[1].ch->fd;

        post_recv(1, 20, &rs, 1);
        post_recv(1, 21, &rs, 1);
        XT_CHECK(API->req_notify_cq(P.s[1].cq, 1) == 0, "arm solicited");
        w = wr_of(5, IBV_WR_SEND, &sg, 1, IBV_SEND_SIGNALED);
        post_one(0, &w);
        poll_n(1, &wc, 1);
        check_wc(&wc, 20, IBV_WC_SUCCESS, IBV_WC_RECV);
        XT_CHECK(!readable(fd1), "an unsolicited SEND: no event");
        w = wr_of(6, IBV_WR_SEND, &sg, 1,
                  IBV_SEND_SIGNALED | IBV_SEND_SOLICITED);
        post_one(0, &w);
        XT_REQUIRE(wait_readable(fd1), "a solicited SEND: the event");
        XT_CHECK(API->get_cq_event(P.s[1].ch, &cq, &cctx) == 0 &&
                 cq == P.s[1].cq, "the receive CQ's event");
        P.s[1].unacked++;
        poll_n(1, &wc, 1);
        check_wc(&wc, 21, IBV_WC_SUCCESS, IBV_WC_RECV);
        poll_n(0, &wc, 1);
        poll_n(0, &wc, 1);
    }

    /* Unacknowledged events keep the CQ. */
    XT_CHECK(API->destroy_comp_channel(P.s[0].ch) == EBUSY,
             "channel with a CQ: EBUSY");
    XT_REQUIRE(API->destroy_qp(P.s[0].qp) == 0, "destroy_qp");
    P.s[0].qp = NULL;
    xt_defer(cap_cleanup, NULL);
    cap_begin();
    XT_CHECK(API->destroy_cq(P.s[0].cq) == EBUSY, "unacked events: EBUSY");
    text = cap_end();
    XT_CHECK(strstr(text, "2 completion events got but not acknowledged"),
             "stderr says why: %s", text);
    API->ack_cq_events(P.s[0].cq, 2);
    P.s[0].unacked = 0;
    XT_CHECK(API->destroy_cq(P.s[0].cq) == 0, "acked: destroyed");
    P.s[0].cq = NULL;
    XT_CHECK(API->destroy_comp_channel(P.s[0].ch) == 0, "channel");
    P.s[0].ch = NULL;
    pair_close(&P);
    live_none();
}

/* Several QPs at once from several threads' worth of posts: every WR of
 * every QP completes, in order per QP. */
static void test_many_qps(void)
{
    enum { NQ = 6, NW = 40 };
    opts_t o = defaults();
    struct ibv_qp *q0[NQ], *q1[NQ];
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    uint64_t s = seed ^ 4;
    int got = 0;

    o.cqe = NQ * NW;
    o.max_send_wr = NW;
    pair_open(&o);
    src = pair_mr(0, NQ * NW * 64, ALL_ACCESS);
    dst = pair_mr(1, NQ * NW * 64, ALL_ACCESS);
    fill(src->addr, NQ * NW * 64, &s);
    q0[0] = P.s[0].qp;
    q1[0] = P.s[1].qp;
    for (int i = 1; i < NQ; i++) {
        q0[i] = make_qp(&P.s[0], &o);
        q1[i] = make_qp(&P.s[1], &o);
        XT_REQUIRE(q0[i] && q1[i], "create_qp");
    }
    for (int i = 0; i < NQ; i++) {
        P.s[0].qp = q0[i];
        P.s[1].qp = q1[i];
        pair_connect();
    }
    for (int k = 0; k < NW; k++) {
        for (int i = 0; i < NQ; i++) {
            size_t off = (size_t)(i * NW + k) * 64;
            struct ibv_send_wr w;

            sg = sge_of(src, off, 64);
            w = wr_of((uint64_t)(i * NW + k), IBV_WR_RDMA_WRITE, &sg, 1,
                      IBV_SEND_SIGNALED);
            rdma_to(&w, dst, off);
            XT_REQUIRE(API->post_send(q0[i], &w, &(struct ibv_send_wr *){0})
                       == 0, "post");
        }
    }
    {
        int next[NQ] = {0};
        uint64_t t0 = now_ms();

        while (got < NQ * NW) {
            struct ibv_wc wc[16];
            int k = API->poll_cq(P.s[0].cq, 16, wc);

            for (int j = 0; j < k; j++) {
                int q = (int)(wc[j].wr_id / NW);

                XT_CHECK(wc[j].status == IBV_WC_SUCCESS, "status %d",
                         wc[j].status);
                XT_CHECK((int)(wc[j].wr_id % NW) == next[q], "QP %d in "
                         "order: %" PRIu64, q, wc[j].wr_id);
                next[q]++;
            }
            got += k;
            XT_REQUIRE(now_ms() - t0 < WAIT_MS, "%d CQEs", got);
            if (!k)
                nap();
        }
    }
    XT_CHECK(memcmp(src->addr, dst->addr, NQ * NW * 64) == 0,
             "every byte");
    for (int i = 1; i < NQ; i++) {
        XT_CHECK(API->destroy_qp(q0[i]) == 0 && API->destroy_qp(q1[i]) == 0,
                 "destroy_qp");
    }
    P.s[0].qp = q0[0];
    P.s[1].qp = q1[0];
    pair_close(&P);
    live_none();
}

/* XFER_FAKEVERBS_DELAY_US: every WR waits, and still all complete. */
static void test_delay(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg[3];
    struct ibv_send_wr w[3];
    struct ibv_wc wc[3];
    uint64_t s = seed ^ 5;

    setenv("XFER_FAKEVERBS_DELAY_US", "2000", 1);
    pair_open(&o);
    setenv("XFER_FAKEVERBS_DELAY_US", "0", 1);
    pair_connect();
    src = pair_mr(0, 3000, ALL_ACCESS);
    dst = pair_mr(1, 3000, ALL_ACCESS);
    fill(src->addr, 3000, &s);
    for (int i = 0; i < 3; i++) {
        sg[i] = sge_of(src, (size_t)i * 1000, 1000);
        w[i] = wr_of((uint64_t)i, IBV_WR_RDMA_WRITE, &sg[i], 1,
                     IBV_SEND_SIGNALED);
        rdma_to(&w[i], dst, (size_t)i * 1000);
    }
    chain(w, 3);
    post_one(0, w);
    poll_n(0, wc, 3);
    for (int i = 0; i < 3; i++)
        check_wc(&wc[i], (uint64_t)i, IBV_WC_SUCCESS, IBV_WC_RDMA_WRITE);
    XT_CHECK(memcmp(src->addr, dst->addr, 3000) == 0, "every byte");
    pair_close(&P);
}

/* In a forked child (as the conformance suite's target processes): two
 * QPs of one device looped to each other, one WRITE; 0 when its bytes
 * arrived.  No assertions here: they belong to the parent's runner. */
static int child_write(void)
{
    struct ibv_device **list;
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_cq *cq;
    struct ibv_qp *q[2];
    struct ibv_mr *mr;
    struct ibv_qp_init_attr ia;
    struct ibv_qp_attr a;
    struct ibv_port_attr pa;
    struct ibv_sge sg;
    struct ibv_send_wr w, *bad;
    struct ibv_wc wc;
    char *buf = calloc(1, 8192);
    int n, ok = 0, got = 0;
    uint64_t t0;

    list = API->get_device_list(&n);
    if (!list || n < 1 || !buf)
        return 1;
    ctx = API->open_device(list[0]);
    API->free_device_list(list);
    if (!ctx)
        return 2;
    pd = API->alloc_pd(ctx);
    cq = API->create_cq(ctx, 8, NULL, NULL, 0);
    mr = API->reg_mr(pd, buf, 8192, ALL_ACCESS);
    if (!pd || !cq || !mr || API->query_port(ctx, 1, &pa))
        return 3;
    memset(&ia, 0, sizeof ia);
    ia.send_cq = ia.recv_cq = cq;
    ia.qp_type = IBV_QPT_RC;
    ia.cap.max_send_wr = ia.cap.max_recv_wr = 4;
    ia.cap.max_send_sge = ia.cap.max_recv_sge = 1;
    q[0] = API->create_qp(pd, &ia);
    q[1] = API->create_qp(pd, &ia);
    if (!q[0] || !q[1])
        return 4;
    for (int i = 0; i < 2; i++) {
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_INIT;
        a.port_num = 1;
        a.qp_access_flags = ALL_ACCESS;
        ok |= API->modify_qp(q[i], &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
                             IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_RTR;
        a.path_mtu = pa.active_mtu;
        a.dest_qp_num = q[1 - i]->qp_num;
        a.max_dest_rd_atomic = 1;
        a.ah_attr.port_num = 1;
        a.ah_attr.dlid = pa.lid;
        ok |= API->modify_qp(q[i], &a, IBV_QP_STATE | IBV_QP_AV |
                             IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                             IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
                             IBV_QP_MIN_RNR_TIMER);
        memset(&a, 0, sizeof a);
        a.qp_state = IBV_QPS_RTS;
        a.max_rd_atomic = 1;
        ok |= API->modify_qp(q[i], &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
                             IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                             IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    }
    if (ok)
        return 5;
    memset(buf, 'z', 4096);
    sg.addr = (uintptr_t)buf;
    sg.length = 4096;
    sg.lkey = mr->lkey;
    w = wr_of(1, IBV_WR_RDMA_WRITE, &sg, 1, IBV_SEND_SIGNALED);
    w.wr.rdma.remote_addr = (uintptr_t)buf + 4096;
    w.wr.rdma.rkey = mr->rkey;
    if (API->post_send(q[0], &w, &bad))
        return 6;
    for (t0 = now_ms(); !got && now_ms() - t0 < WAIT_MS; nap())
        got = API->poll_cq(cq, 1, &wc);
    if (got != 1 || wc.status != IBV_WC_SUCCESS ||
        memcmp(buf, buf + 4096, 4096) != 0)
        return 7;
    if (API->destroy_qp(q[0]) || API->destroy_qp(q[1]) ||
        API->dereg_mr(mr) || API->destroy_cq(cq) || API->dealloc_pd(pd) ||
        API->close_device(ctx))
        return 8;
    free(buf);
    return 0;
}

/* fork() while this process has devices open and its NIC running: the
 * child gets a NIC of its own and nothing locked. */
static void test_fork(void)
{
    opts_t o = defaults();
    struct ibv_mr *src, *dst;
    struct ibv_sge sg;
    struct ibv_send_wr w[8];
    struct ibv_wc wc[8];
    int pid, status = -1;

    pair_open(&o);
    pair_connect();
    src = pair_mr(0, 4096, ALL_ACCESS);
    dst = pair_mr(1, 4096, ALL_ACCESS);
    sg = sge_of(src, 0, 512);
    for (int i = 0; i < 8; i++) {
        w[i] = wr_of((uint64_t)i, IBV_WR_RDMA_WRITE, &sg, 1,
                     IBV_SEND_SIGNALED);
        rdma_to(&w[i], dst, 0);
    }
    chain(w, 8);
    post_one(0, w);     /* the NIC busy while we fork */
    fflush(NULL);
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        xt_child_exit(child_write());
    xt_child_add(pid);
    XT_CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
             WEXITSTATUS(status) == 0, "the child's WRITE: status %d "
             "(exit %d)", status, WIFEXITED(status) ? WEXITSTATUS(status)
             : -1);
    xt_child_forget(pid);
    poll_n(0, wc, 8);
    pair_close(&P);
    live_none();
}

static const xt_test_t fv_tests[] = {
    XT_TEST(test_devices),
    XT_TEST(test_objects),
    XT_TEST(test_write_read_send),
    XT_TEST(test_eth),
    XT_TEST(test_modify_masks),
    XT_TEST(test_bad_rkey),
    XT_TEST(test_dereg_fences),
    XT_TEST(test_unsignaled_slots),
    XT_TEST(test_flush),
    XT_TEST(test_rnr_exceeded),
    XT_TEST(test_rnr_recovers),
    XT_TEST(test_unreachable),
    XT_TEST(test_cq_overrun),
    XT_TEST(test_fail_post_after),
    XT_TEST(test_channel),
    XT_TEST(test_many_qps),
    XT_TEST(test_delay),
    XT_TEST(test_fork),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"fakeverbs", fv_tests},
    };
    const char *s = getenv("XT_FAKEVERBS_SEED");

    (void)argc;
    (void)argv;
    seed = s ? strtoull(s, NULL, 0)
             : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    printf("test-fakeverbs: seed %" PRIu64 " (XT_FAKEVERBS_SEED=%" PRIu64
           " repeats it)\n", seed, seed);
#ifdef XT_TSAN
    /* ThreadSanitizer kills a forked child of a threaded process that
     * starts a thread (its die_after_fork): test_fork cannot run. */
    {
        const char *old = getenv("XT_SKIP");
        char list[512];

        snprintf(list, sizeof list, "%s%stest_fork", old ? old : "",
                 old && *old ? "," : "");
        setenv("XT_SKIP", list, 1);
        setenv("XT_SKIP_WHY", "ThreadSanitizer does not allow a forked "
               "child to start the NIC thread", 0);
    }
#endif
    setenv("XFER_FAKEVERBS_DEVICES", "2", 1);
    setenv("XFER_FAKEVERBS_LINK", "ib", 1);
    setenv("XFER_FAKEVERBS_RETRY_MS", "20", 1);
    return xt_run("test-fakeverbs", suites, 1);
}
