/* test-verbs-qp.c - the verbs plugin's devices and queue pairs (plugins/verbs/
 * rail.c, qp.c) through the seam, over the emulated device: which device and
 * GID the parameters pick, the RC state machine, the slot table's bound and
 * the generation that makes a stale completion unrecognisable. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugins/verbs/verbs.h"
#include "tests/common/runner.h"
#include "tests/common/xt.h"
#include "tests/plugins/fakeverbs.h"

static char last_error[1024];

static void host_log(void *ctx, xfer_log_level_t lvl, const char *fmt, ...)
{
    (void)ctx;
    (void)lvl;
    (void)fmt;
}

static xfer_status_t host_error(void *ctx, xfer_status_t st, const char *fmt,
                                ...)
{
    va_list ap;

    (void)ctx;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

static const xfer_host_t host = {
    .log = host_log,
    .error = host_error,
};

/* An instance with only its rails and QP table, as vb_init makes them. */
static void inst_free(void *p)
{
    vb_t *v = p;

    vb__qps_fini(v);
    vb__rails_close(v);
    free(v);
}

static vb_t *inst_cfg(const char *device, const char *devices,
                      int64_t gid_index, uint64_t max_qps, xfer_status_t *st)
{
    vb_t *v = calloc(1, sizeof *v);

    XT_REQUIRE(v != NULL, "out of memory");
    v->host = &host;
    v->cfg.device = device;
    v->cfg.devices = devices;
    v->cfg.gid_index = gid_index;
    v->cfg.max_qps = max_qps;
    v->cfg.sq_depth = 16;
    v->cfg.notif_window = 4;
    v->cfg.qp_timeout = 14;
    v->cfg.retry_cnt = 7;
    last_error[0] = '\0';
    *st = vb__rails_open(v);
    if (*st == XFER_OK)
        *st = vb__qps_init(v);
    xt_defer(inst_free, v);
    return v;
}

static vb_t *inst(const char *device)
{
    xfer_status_t st;
    vb_t *v = inst_cfg(device, "", -1, 8, &st);

    XT_REQUIRE(st == XFER_OK, "rails of '%s': %s", device, last_error);
    return v;
}

static void unset_env(void *unused)
{
    (void)unused;
    unsetenv("XFER_FAKEVERBS_DEVICES");
    unsetenv("XFER_FAKEVERBS_LINK");
}

/* ---- devices --------------------------------------------------------------- */

static void test_rail_default(void)
{
    vb_t *v = inst("");

    CU_ASSERT_EQUAL(v->nrails, 1);
    XT_CHECK(strcmp(v->rail[0].name, "fake0") == 0, "first device: %s",
             v->rail[0].name);
    XT_CHECK(strstr(v->desc, "fake0:1 IB LID 1 MTU 4096") != NULL,
             "description: %s", v->desc);
    CU_ASSERT_EQUAL(v->rail[0].addr.link, VB_LINK_IB);
    CU_ASSERT_EQUAL(v->rail[0].gid_index, -1);
    /* No GRH of its own, but its port GID published for peers that
     * route by GID. */
    XT_CHECK(v->rail[0].addr.gid[0] == 0xfe && v->rail[0].addr.gid[1] == 0x80
                 && v->rail[0].addr.gid[15] == 1,
             "IB port GID not published");
}

static void test_rail_named(void)
{
    xfer_status_t st;

    inst_cfg("nope", "", -1, 8, &st);
    XT_CHECK(st == XFER_ERR_CONFIG, "status %d", st);
    XT_CHECK(strstr(last_error, "no RDMA device 'nope'") &&
                 strstr(last_error, "fake0 fake1"),
             "sentence: %s", last_error);
    inst_cfg("", "fake0,fake0", -1, 8, &st);
    XT_CHECK(st == XFER_ERR_CONFIG && strstr(last_error, "named twice"),
             "a device twice: %d %s", st, last_error);
    xt_defer(unset_env, NULL);
    setenv("XFER_FAKEVERBS_DEVICES", "6", 1);
    inst_cfg("", "fake0,fake1,fake2,fake3,fake4", -1, 8, &st);
    XT_CHECK(st == XFER_ERR_CONFIG && strstr(last_error, "at most 4"),
             "five devices: %d %s", st, last_error);
    unsetenv("XFER_FAKEVERBS_DEVICES");
    {
        vb_t *v = inst_cfg("fake0", "fake1, fake0", -1, 8, &st);

        XT_REQUIRE(st == XFER_OK, "two rails: %s", last_error);
        CU_ASSERT_EQUAL(v->nrails, 2);
        XT_CHECK(strcmp(v->rail[0].name, "fake1") == 0 &&
                     strcmp(v->rail[1].name, "fake0") == 0,
                 "devices overrides device, in its order: %s", v->desc);
    }
}

static void test_rail_none(void)
{
    char probe[XFER_STATE_MAX];
    xfer_status_t st;

    xt_defer(unset_env, NULL);
    setenv("XFER_FAKEVERBS_DEVICES", "0", 1);
    inst_cfg("", "", -1, 8, &st);
    XT_CHECK(st == XFER_ERR_NOT_FOUND &&
                 strstr(last_error, "no RDMA device (fakeverbs"),
             "no device: %d %s", st, last_error);
    vb__rails_probe(probe, sizeof probe);
    XT_CHECK(strncmp(probe, "no RDMA device", 14) == 0, "probe: %s", probe);
    unsetenv("XFER_FAKEVERBS_DEVICES");
    vb__rails_probe(probe, sizeof probe);
    XT_CHECK(strstr(probe, "fake0 port 1 active (IB, MTU 4096)") &&
                 strstr(probe, "fake1 port 1 active"),
             "probe: %s", probe);
}

static void test_rail_roce_gid(void)
{
    xfer_status_t st;
    vb_t *v;

    xt_defer(unset_env, NULL);
    setenv("XFER_FAKEVERBS_LINK", "eth", 1);
    v = inst_cfg("fake1", "", -1, 8, &st);
    XT_REQUIRE(st == XFER_OK, "RoCE: %s", last_error);
    CU_ASSERT_EQUAL(v->rail[0].addr.link, VB_LINK_ETH);
    /* The IPv4-mapped RoCE v2 entry (3), over the v1 ones (0, 1) and the
     * link-local v2 one (2). */
    CU_ASSERT_EQUAL(v->rail[0].gid_index, 3);
    {
        static const enum ibv_gid_type want[4] = {
            IBV_GID_TYPE_ROCE_V1, IBV_GID_TYPE_ROCE_V1,
            IBV_GID_TYPE_ROCE_V2, IBV_GID_TYPE_ROCE_V2};

        for (int i = 0; i < 4; i++) {
            enum ibv_gid_type t = IBV_GID_TYPE_IB;

            XT_CHECK(vb__api->query_gid_type(v->rail[0].ctx, 1, i, &t) == 0
                         && t == want[i],
                     "GID %d of a RoCE port: type %d, want %d", i, (int)t,
                     (int)want[i]);
        }
    }
    XT_CHECK(v->rail[0].addr.gid[10] == 0xff && v->rail[0].addr.gid[11] == 0xff
                 && v->rail[0].addr.gid[15] == 2,
             "GID is not ::ffff:198.18.0.2");
    inst_cfg("fake1", "", 5, 8, &st);
    XT_CHECK(st == XFER_ERR_CONFIG && strstr(last_error, "no GID at "
                                                          "gid_index 5"),
             "gid_index 5: %d %s", st, last_error);
    v = inst_cfg("fake1", "", 0, 8, &st);
    XT_CHECK(st == XFER_OK && v->rail[0].gid_index == 0, "gid_index 0: %s",
             last_error);
}

static void test_rail_cq_bound(void)
{
    xfer_status_t st;

    /* max_qps * (sq_depth + notif_window + 1) past the device's CQ. */
    {
        vb_t *v = calloc(1, sizeof *v);

        XT_REQUIRE(v != NULL, "out of memory");
        v->host = &host;
        v->cfg.device = "fake0";
        v->cfg.devices = "";
        v->cfg.gid_index = -1;
        v->cfg.max_qps = 16384;
        v->cfg.sq_depth = 16384;
        v->cfg.notif_window = 4096;
        xt_defer(inst_free, v);
        st = vb__rails_open(v);
        XT_CHECK(st == XFER_ERR_CONFIG &&
                     strstr(last_error, "completions per CQ"),
                 "a CQ too large: %d %s", st, last_error);
    }
}

/* ---- queue pairs --------------------------------------------------------- */

/* An initiator's QP on a and a target's on b, connected to each other. */
static void pair_qps(vb_t *a, vb_t *b, int *sa, int *sb)
{
    char why[256];
    vb_qp_addr_t aa, ba;
    int ts[VB_MAX_RAILS];

    XT_REQUIRE(vb__qp_make(a, VB_QP_INI, a, 1, sa, why, sizeof why) ==
                   XFER_OK, "initiator QP: %s", why);
    XT_REQUIRE(vb__qp_make(b, VB_QP_TGT, b, 1, ts, why, sizeof why) ==
                   XFER_OK, "target QP: %s", why);
    *sb = ts[0];
    vb__qp_addr(a, *sa, 0, &aa);
    vb__qp_addr(b, *sb, 0, &ba);
    CU_ASSERT(aa.qpn <= 0xffffffu && aa.psn <= 0xffffffu);
    CU_ASSERT_EQUAL(fakeverbs_qp_state(aa.qpn), IBV_QPS_INIT);
    XT_REQUIRE(vb__qp_connect(b, *sb, 0, &aa, why, sizeof why) == XFER_OK,
               "target to RTS: %s", why);
    XT_REQUIRE(vb__qp_connect(a, *sa, 0, &ba, why, sizeof why) == XFER_OK,
               "initiator to RTS: %s", why);
    CU_ASSERT_EQUAL(fakeverbs_qp_state(aa.qpn), IBV_QPS_RTS);
    CU_ASSERT_EQUAL(fakeverbs_qp_state(ba.qpn), IBV_QPS_RTS);
}

static void test_qp_states(void)
{
    vb_t *a = inst("fake0"), *b = inst("fake1");
    int sa[VB_MAX_RAILS], sb;
    vb_qp_addr_t aa;

    pair_qps(a, b, sa, &sb);
    CU_ASSERT_EQUAL(sa[1], -1); /* one rail: the others unused */
    vb__qp_addr(a, sa[0], 0, &aa);
    vb__qp_error(a, sa[0], 0);
    CU_ASSERT_EQUAL(fakeverbs_qp_state(aa.qpn), IBV_QPS_ERR);
    vb__qp_free(a, sa[0], 0);
    CU_ASSERT_EQUAL(fakeverbs_qp_state(aa.qpn), -1);
    CU_ASSERT_PTR_NULL(vb__qp_get(a, 0, sa[0]));
    vb__qp_free(b, sb, 0);
    CU_ASSERT_EQUAL(a->nqps, 0);
    CU_ASSERT_EQUAL(b->nqps, 0);
}

/* A completion names its QP's slot and generation: once the slot is freed
 * and made again, the old name finds nothing. */
static void test_qp_generation(void)
{
    vb_t *a = inst("fake0"), *b = inst("fake1");
    int sa[VB_MAX_RAILS], sa2[VB_MAX_RAILS], sb;
    char why[256];
    uint64_t old, now;
    vb_qp_t *q;

    pair_qps(a, b, sa, &sb);
    q = vb__qp_get(a, 0, sa[0]);
    XT_REQUIRE(q != NULL, "no QP in slot %d", sa[0]);
    old = vb__wrid(VB_WR_DATA, (unsigned)sa[0], q->gen, 5);
    CU_ASSERT_PTR_EQUAL(vb__qp_of(a, 0, old), q);
    CU_ASSERT_PTR_NULL(vb__qp_of(a, 1, old));
    vb__qp_free(a, sa[0], 0);
    CU_ASSERT_PTR_NULL(vb__qp_of(a, 0, old));
    XT_REQUIRE(vb__qp_make(a, VB_QP_INI, a, 1, sa2, why, sizeof why) ==
                   XFER_OK, "again: %s", why);
    CU_ASSERT_EQUAL(sa2[0], sa[0]); /* the same slot, a new generation */
    q = vb__qp_get(a, 0, sa2[0]);
    XT_REQUIRE(q != NULL, "no QP in slot %d", sa2[0]);
    now = vb__wrid(VB_WR_DATA, (unsigned)sa2[0], q->gen, 5);
    CU_ASSERT(now != old);
    CU_ASSERT_PTR_NULL(vb__qp_of(a, 0, old));
    CU_ASSERT_PTR_EQUAL(vb__qp_of(a, 0, now), q);
    /* A slot number past the table names nothing either. */
    CU_ASSERT_PTR_NULL(vb__qp_of(a, 0, vb__wrid(VB_WR_DATA, 0xffffu, 0, 0)));
}

static void test_qp_table_full(void)
{
    xfer_status_t st;
    vb_t *a = inst_cfg("fake0", "", -1, 2, &st);
    int s[3][VB_MAX_RAILS];
    char why[256] = "";

    XT_REQUIRE(st == XFER_OK, "rails: %s", last_error);
    for (int i = 0; i < 2; i++)
        XT_REQUIRE(vb__qp_make(a, VB_QP_INI, a, 1, s[i], why, sizeof why) ==
                       XFER_OK, "QP %d: %s", i, why);
    st = vb__qp_make(a, VB_QP_INI, a, 1, s[2], why, sizeof why);
    XT_CHECK(st == XFER_ERR_BUSY && strstr(why, "all max_qps (2)"),
             "a third QP: %d %s", st, why);
    vb__qp_free(a, s[0][0], 0);
    XT_CHECK(vb__qp_make(a, VB_QP_INI, a, 1, s[2], why, sizeof why) ==
                 XFER_OK, "after one went: %s", why);
}

/* Two rails: one slot number on both, each QP on its own device. */
static void test_qp_rails(void)
{
    xfer_status_t st;
    vb_t *a = inst_cfg("", "fake0,fake1", -1, 4, &st);
    int s[VB_MAX_RAILS];
    char why[256];

    XT_REQUIRE(st == XFER_OK, "rails: %s", last_error);
    XT_REQUIRE(vb__qp_make(a, VB_QP_INI, a, 2, s, why, sizeof why) ==
                   XFER_OK, "QPs: %s", why);
    CU_ASSERT_EQUAL(s[0], s[1]);
    CU_ASSERT_EQUAL(s[2], -1);
    XT_REQUIRE(vb__qp_get(a, 0, s[0]) && vb__qp_get(a, 1, s[1]), "no QPs");
    CU_ASSERT_PTR_EQUAL(vb__qp_get(a, 0, s[0])->qp->pd, a->rail[0].pd);
    CU_ASSERT_PTR_EQUAL(vb__qp_get(a, 1, s[1])->qp->pd, a->rail[1].pd);
    CU_ASSERT_EQUAL(a->nqps, 1);
}

/* A peer's address on another link layer is refused before the HCA sees
 * it, naming both. */
static void test_qp_link_mismatch(void)
{
    vb_t *a = inst("fake0");
    int s[VB_MAX_RAILS];
    char why[256];
    vb_qp_addr_t r;
    xfer_status_t st;

    XT_REQUIRE(vb__qp_make(a, VB_QP_INI, a, 1, s, why, sizeof why) ==
                   XFER_OK, "QP: %s", why);
    memset(&r, 0, sizeof r);
    r.port.link = VB_LINK_ETH;
    r.port.mtu = 3;
    r.port.gid[15] = 1;
    r.qpn = 77;
    st = vb__qp_connect(a, s[0], 0, &r, why, sizeof why);
    XT_CHECK(st == XFER_ERR_INVALID && strstr(why, "Ethernet") &&
                 strstr(why, "InfiniBand"),
             "mismatch: %d %s", st, why);
}

static const xt_test_t rail_tests[] = {
    XT_TEST(test_rail_default),
    XT_TEST(test_rail_named),
    XT_TEST(test_rail_none),
    XT_TEST(test_rail_roce_gid),
    XT_TEST(test_rail_cq_bound),
    {NULL, NULL},
};

static const xt_test_t qp_tests[] = {
    XT_TEST(test_qp_states),
    XT_TEST(test_qp_generation),
    XT_TEST(test_qp_table_full),
    XT_TEST(test_qp_rails),
    XT_TEST(test_qp_link_mismatch),
    {NULL, NULL},
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"verbs-rail", rail_tests},
        {"verbs-qp", qp_tests},
    };

    (void)argc;
    (void)argv;
    return xt_run("test-verbs-qp", suites, 2);
}
