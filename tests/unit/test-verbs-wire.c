/* test-verbs-wire.c - the verbs plugin's connection info and handshake
 * (plugins/verbs/wire.h): round trips, the exact bytes, every refusal. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/wire.h"
#include "tests/common/runner.h"
#include "tests/common/xt.h"

#define CHAN_MAX 256u
#define INFO_MAX (8u + VB_MAX_RAILS * VB_PORT_WIRE + 4u + CHAN_MAX)
#define HS_QP 28u

/* ---- helpers ----------------------------------------------------------- */

/* A port that passes vb__port_check: IB with a unicast LID (its GID
 * random, a quarter of the time zero), or RoCE with a non-zero GID and
 * any LID. */
static void rand_port(uint64_t *st, vb_port_addr_t *p)
{
    memset(p, 0, sizeof *p);
    p->link = xt_rand(st) & 1 ? VB_LINK_IB : VB_LINK_ETH;
    p->mtu = (uint8_t)(VB_MTU_MIN + xt_rand(st) % VB_MTU_MAX);
    p->lid = (uint16_t)xt_rand(st);
    if (p->link == VB_LINK_IB) {
        p->lid = (uint16_t)(1 + xt_rand(st) % 0xbfff);
        if (xt_rand(st) % 4 == 0)
            return;
    }
    for (int i = 0; i < 16; i++)
        p->gid[i] = (uint8_t)xt_rand(st);
    p->gid[xt_rand(st) % 16] |= 1;
}

static void rand_qp(uint64_t *st, vb_qp_addr_t *q)
{
    rand_port(st, &q->port);
    q->qpn = (uint32_t)xt_rand(st) & 0xffffffu;
    q->psn = (uint32_t)xt_rand(st) & 0xffffffu;
}

static bool port_eq(const vb_port_addr_t *a, const vb_port_addr_t *b)
{
    return a->link == b->link && a->mtu == b->mtu && a->lid == b->lid &&
           memcmp(a->gid, b->gid, 16) == 0;
}

/* The first string of the NULL-ended list that why lacks, or NULL. */
static const char *why_lacks(const char *why, va_list ap)
{
    const char *s;

    while ((s = va_arg(ap, const char *)) != NULL)
        if (strstr(why, s) == NULL)
            return s;
    return NULL;
}

/* Decode a copy of exactly len bytes (so that a read past them is a
 * finding of ASan or valgrind) and expect a refusal whose sentence holds
 * each string, the outputs left as they were. */
#define INFO_REFUSED(b, len, ...)                                           \
    info_refused(__LINE__, (b), (len), __VA_ARGS__, (const char *)NULL)
static void info_refused(unsigned line, const void *b, size_t len, ...)
{
    unsigned char *copy = malloc(len ? len : 1);
    vb_port_addr_t rails[VB_MAX_RAILS];
    unsigned n = 99;
    const void *chan = &n;
    size_t cl = 77;
    char why[256] = "";
    const char *lacks;
    xfer_status_t st;
    va_list ap;

    if (copy == NULL)
        xt_fail_fatal_at(__FILE__, line, "out of memory");
    memcpy(copy, b, len);
    st = vb__info_decode(copy, len, rails, &n, &chan, &cl, why, sizeof why);
    free(copy);
    va_start(ap, len);
    lacks = why_lacks(why, ap);
    va_end(ap);
    if (st != XFER_ERR_INVALID)
        xt_fail_at(__FILE__, line, 0, "info of %zu bytes: status %d, not "
                   "XFER_ERR_INVALID", len, (int)st);
    else if (lacks != NULL)
        xt_fail_at(__FILE__, line, 0, "info of %zu bytes: sentence '%s' "
                   "lacks '%s'", len, why, lacks);
    else if (n != 99 || chan != &n || cl != 77)
        xt_fail_at(__FILE__, line, 0, "info of %zu bytes: a refusal "
                   "changed the outputs", len);
    else
        xt_pass_at(__FILE__, line, why);
}

#define HS_REFUSED(b, len, ...)                                             \
    hs_refused(__LINE__, (b), (len), __VA_ARGS__, (const char *)NULL)
static void hs_refused(unsigned line, const void *b, size_t len, ...)
{
    unsigned char *copy = malloc(len ? len : 1);
    vb_hs_t m, before;
    char why[256] = "";
    const char *lacks;
    xfer_status_t st;
    va_list ap;

    if (copy == NULL)
        xt_fail_fatal_at(__FILE__, line, "out of memory");
    memset(&m, 0xa5, sizeof m);
    before = m;
    memcpy(copy, b, len);
    st = vb__hs_decode(copy, len, &m, why, sizeof why);
    free(copy);
    va_start(ap, len);
    lacks = why_lacks(why, ap);
    va_end(ap);
    if (st != XFER_ERR_INVALID)
        xt_fail_at(__FILE__, line, 0, "handshake of %zu bytes: status %d, "
                   "not XFER_ERR_INVALID", len, (int)st);
    else if (lacks != NULL)
        xt_fail_at(__FILE__, line, 0, "handshake of %zu bytes: sentence "
                   "'%s' lacks '%s'", len, why, lacks);
    else if (memcmp(&m, &before, sizeof m) != 0)
        xt_fail_at(__FILE__, line, 0, "handshake of %zu bytes: a refusal "
                   "changed the output", len);
    else
        xt_pass_at(__FILE__, line, why);
}

/* A fixed, valid two-rail info: IB on rail 0, RoCE on rail 1. */
static const unsigned char chan7[7] = {'c', 'h', 'a', 'n', 'n', 'e', 'l'};

static void two_rails(vb_port_addr_t r[2])
{
    memset(r, 0, 2 * sizeof r[0]);
    r[0].link = VB_LINK_IB;
    r[0].mtu = 5;
    r[0].lid = 0x1234;
    r[1].link = VB_LINK_ETH;
    r[1].mtu = 3;
    for (int i = 0; i < 16; i++)
        r[1].gid[i] = (uint8_t)(0xf0 + i);
}

static size_t two_rail_info(unsigned char *b, size_t size)
{
    vb_port_addr_t r[2];
    size_t n;

    two_rails(r);
    n = vb__info_encode(b, size, r, 2, chan7, sizeof chan7);
    XT_REQUIRE(n == 8 + 2 * 20 + 4 + 7, "encode wrote %zu bytes", n);
    return n;
}

/* Offsets in the two-rail info. */
#define R0 8u
#define R1 (8u + 20u)
#define CL (8u + 40u)

/* ---- port addresses ---------------------------------------------------- */

static void test_port_check(void)
{
    vb_port_addr_t r[2], p;
    char why[256];
    uint64_t st = xt_seed();

    two_rails(r);
    XT_CHECK(vb__port_check(&r[0], why, sizeof why), "IB port refused: %s",
             why);
    XT_CHECK(vb__port_check(&r[1], why, sizeof why), "RoCE port refused: "
             "%s", why);
    for (int i = 0; i < 1000; i++) {
        rand_port(&st, &p);
        if (!vb__port_check(&p, why, sizeof why)) {
            XT_FAIL("a valid port refused: %s", why);
            break;
        }
    }
    /* The bounds of the LID and the MTU are in range. */
    p = r[0];
    p.lid = 1;
    p.mtu = VB_MTU_MIN;
    XT_CHECK(vb__port_check(&p, NULL, 0), "LID 1, MTU 1 refused");
    p.lid = 0xbfff;
    p.mtu = VB_MTU_MAX;
    XT_CHECK(vb__port_check(&p, NULL, 0), "LID 0xbfff, MTU 5 refused");
    /* A RoCE port's LID means nothing. */
    p = r[1];
    p.lid = 0;
    XT_CHECK(vb__port_check(&p, NULL, 0), "RoCE port with LID 0 refused");

#define PORT_BAD(port, word)                                                \
    do {                                                                    \
        strcpy(why, "");                                                    \
        XT_CHECK(!vb__port_check(&(port), why, sizeof why),                 \
                 "a bad port passed (%s)", word);                           \
        XT_CHECK(strstr(why, word) != NULL, "sentence '%s' lacks '%s'",     \
                 why, word);                                                \
        XT_CHECK(!vb__port_check(&(port), NULL, 0), "NULL why: passed");    \
    } while (0)
    p = r[0];
    p.link = 0;
    PORT_BAD(p, "link layer 0 not understood");
    p.link = 3;
    PORT_BAD(p, "link layer 3 not understood");
    p = r[0];
    p.mtu = 0;
    PORT_BAD(p, "MTU 0 out of range");
    p.mtu = 6;
    PORT_BAD(p, "MTU 6 out of range");
    p = r[0];
    p.lid = 0;
    PORT_BAD(p, "LID 0x0");
    p.lid = 0xc000;
    PORT_BAD(p, "LID 0xc000");
    p.lid = 0xffff;
    PORT_BAD(p, "not a unicast LID");
    p = r[1];
    memset(p.gid, 0, 16);
    PORT_BAD(p, "RoCE port with a zero GID");
#undef PORT_BAD
}

/* ---- connection info ----------------------------------------------------- */

/* The documented layout, byte for byte: little-endian whatever the host. */
static void test_info_layout(void)
{
    unsigned char b[INFO_MAX];
    static const unsigned char head[8] = {'X', 'V', 'R', 'B', 1, 2, 0, 0};
    size_t n = two_rail_info(b, sizeof b);

    XT_CHECK(memcmp(b, head, 8) == 0, "header bytes differ");
    XT_CHECK(b[R0] == 1 && b[R0 + 1] == 5 && b[R0 + 2] == 0x34 &&
             b[R0 + 3] == 0x12, "rail 0: %02x %02x %02x %02x", b[R0],
             b[R0 + 1], b[R0 + 2], b[R0 + 3]);
    for (int i = 0; i < 16; i++)
        XT_CHECK(b[R0 + 4 + i] == 0, "rail 0 gid[%d] %02x", i, b[R0 + 4 + i]);
    XT_CHECK(b[R1] == 2 && b[R1 + 1] == 3 && b[R1 + 2] == 0 &&
             b[R1 + 3] == 0, "rail 1's head bytes differ");
    for (int i = 0; i < 16; i++)
        XT_CHECK(b[R1 + 4 + i] == 0xf0 + i, "rail 1 gid[%d] %02x", i,
                 b[R1 + 4 + i]);
    XT_CHECK(b[CL] == 7 && b[CL + 1] == 0 && b[CL + 2] == 0 &&
             b[CL + 3] == 0, "channel length bytes differ");
    XT_CHECK(memcmp(b + CL + 4, chan7, 7) == 0, "channel bytes differ");
    XT_CHECK(n == CL + 4 + 7, "length %zu", n);
}

static void test_info_round_trip(void)
{
    uint64_t seed = xt_seed(), st = seed;
    unsigned char b[INFO_MAX], chan[CHAN_MAX];

    printf("seed %" PRIu64 "\n", seed);
    for (unsigned nr = 1; nr <= VB_MAX_RAILS; nr++) {
        for (int iter = 0; iter < 200; iter++) {
            vb_port_addr_t in[VB_MAX_RAILS], out[VB_MAX_RAILS];
            size_t cl = xt_rand(&st) % (CHAN_MAX + 1), want, n, ocl = 0;
            unsigned on = 0;
            const void *oc = NULL;
            char why[256] = "";

            for (unsigned i = 0; i < nr; i++)
                rand_port(&st, &in[i]);
            for (size_t i = 0; i < cl; i++)
                chan[i] = (unsigned char)xt_rand(&st);
            want = 8 + nr * 20 + 4 + cl;
            /* Too small by one byte, then exactly the size. */
            n = vb__info_encode(b, want - 1, in, nr, chan, cl);
            XT_CHECK(n == 0, "seed %" PRIu64 ": encode into %zu bytes of "
                     "%zu wrote %zu", seed, want - 1, want, n);
            n = vb__info_encode(b, want, in, nr, chan, cl);
            XT_REQUIRE(n == want, "seed %" PRIu64 ": %u rails, chan %zu: "
                       "wrote %zu of %zu", seed, nr, cl, n, want);
            XT_REQUIRE(vb__info_decode(b, n, out, &on, &oc, &ocl, why,
                                       sizeof why) == XFER_OK,
                       "seed %" PRIu64 ": decode refused: %s", seed, why);
            XT_CHECK(on == nr, "seed %" PRIu64 ": %u rails back of %u",
                     seed, on, nr);
            for (unsigned i = 0; i < nr && i < on; i++)
                XT_CHECK(port_eq(&in[i], &out[i]), "seed %" PRIu64 ": "
                         "rail %u differs", seed, i);
            XT_CHECK(ocl == cl && oc == b + n - cl, "seed %" PRIu64 ": "
                     "channel part %zu bytes at +%td", seed, ocl,
                     (const unsigned char *)oc - b);
            XT_CHECK(ocl == cl && memcmp(oc, chan, cl) == 0,
                     "seed %" PRIu64 ": channel bytes differ", seed);
        }
    }
}

static void test_info_encode_refuses(void)
{
    vb_port_addr_t r[VB_MAX_RAILS + 1];
    unsigned char b[INFO_MAX + 32];

    memset(r, 0, sizeof r);
    two_rails(r);
    r[2] = r[3] = r[4] = r[1];
    XT_CHECK(vb__info_encode(b, sizeof b, r, 0, chan7, 7) == 0, "0 rails");
    XT_CHECK(vb__info_encode(b, sizeof b, r, VB_MAX_RAILS + 1, chan7, 7) ==
             0, "%u rails", VB_MAX_RAILS + 1);
    XT_CHECK(vb__info_encode(b, sizeof b, r, 2, NULL, 7) == 0,
             "no channel part but a length");
    XT_CHECK(vb__info_encode(b, sizeof b, r, VB_MAX_RAILS, chan7, 7) ==
             8 + VB_MAX_RAILS * 20 + 4 + 7, "%u rails refused",
             VB_MAX_RAILS);
    XT_CHECK(vb__info_encode(b, sizeof b, r, 1, NULL, 0) == 8 + 20 + 4,
             "an empty channel part refused");
    for (size_t sz = 0; sz < 8 + 40 + 4 + 7; sz++)
        if (vb__info_encode(b, sz, r, 2, chan7, 7) != 0) {
            XT_FAIL("encode into %zu bytes did not refuse", sz);
            break;
        }
}

static void test_info_refusals(void)
{
    unsigned char good[INFO_MAX], b[INFO_MAX + 8];
    size_t n = two_rail_info(good, sizeof good);

#define FRESH() memcpy(b, good, n)
    FRESH();
    b[0] = 'Y';
    INFO_REFUSED(b, n, "bad magic");
    FRESH();
    b[3] = 'C';
    INFO_REFUSED(b, n, "bad magic");
    FRESH();
    b[4] = 7;
    INFO_REFUSED(b, n, "version 7 not understood");
    FRESH();
    b[4] = 0;
    INFO_REFUSED(b, n, "version 0 not understood");
    FRESH();
    b[5] = 0;
    INFO_REFUSED(b, n, "0 rails out of range");
    FRESH();
    b[5] = VB_MAX_RAILS + 1;
    INFO_REFUSED(b, n, "5 rails out of range");
    FRESH();
    b[5] = 255;
    INFO_REFUSED(b, n, "255 rails out of range");
    FRESH();
    b[7] = 1;
    INFO_REFUSED(b, n, "reserved field 0x100 not zero");
    /* Each port fault, named with its rail. */
    FRESH();
    b[R1 + 1] = 9;
    INFO_REFUSED(b, n, "rail 1: MTU 9 out of range");
    FRESH();
    b[R0] = 4;
    INFO_REFUSED(b, n, "rail 0: link layer 4 not understood");
    FRESH();
    b[R0 + 2] = b[R0 + 3] = 0;
    INFO_REFUSED(b, n, "rail 0: ", "LID 0x0");
    FRESH();
    b[R0 + 2] = 0x00;
    b[R0 + 3] = 0xc0;
    INFO_REFUSED(b, n, "rail 0: ", "LID 0xc000", "unicast");
    FRESH();
    memset(b + R1 + 4, 0, 16);
    INFO_REFUSED(b, n, "rail 1: RoCE port with a zero GID");
    /* The channel's length against what is there. */
    FRESH();
    b[CL] = 8;
    INFO_REFUSED(b, n, "truncated", "says 8 bytes, 7 remain");
    FRESH();
    b[CL + 3] = 0x80;
    INFO_REFUSED(b, n, "truncated", "2147483655 bytes");
    FRESH();
    b[CL] = 6;
    INFO_REFUSED(b, n, "trailing bytes: 1 after");
    FRESH();
    b[n] = 0;
    INFO_REFUSED(b, n + 1, "trailing bytes: 1 after");
    /* A rail count other than what was written: more is short, fewer
     * reads rail 1's first bytes (link 2, MTU 3, LID 0) as the channel's
     * length, 0x302. */
    FRESH();
    b[5] = 3;
    INFO_REFUSED(b, n, "truncated", "3 rails");
    b[5] = 1;
    INFO_REFUSED(b, n, "truncated", "says 770 bytes");
#undef FRESH
}

/* Every proper prefix of a valid info, for every rail count: refused as
 * truncated, nothing read past it. */
static void test_info_truncated(void)
{
    unsigned char b[INFO_MAX];
    vb_port_addr_t r[VB_MAX_RAILS];
    uint64_t st = xt_seed();

    for (unsigned nr = 1; nr <= VB_MAX_RAILS; nr++) {
        size_t n;

        for (unsigned i = 0; i < nr; i++)
            rand_port(&st, &r[i]);
        n = vb__info_encode(b, sizeof b, r, nr, chan7, sizeof chan7);
        XT_REQUIRE(n > 0, "encode of %u rails failed", nr);
        for (size_t len = 0; len < n; len++)
            INFO_REFUSED(b, len, "truncated");
    }
}

/* Random damage: OK or INVALID, never a crash, and what passes is
 * canonical (encoding it again gives the same bytes). */
static void test_info_damage(void)
{
    uint64_t seed = xt_seed(), st = seed;
    unsigned char good[INFO_MAX], b[INFO_MAX], again[INFO_MAX];
    vb_port_addr_t r[VB_MAX_RAILS];
    unsigned ok = 0;

    printf("seed %" PRIu64 "\n", seed);
    for (int iter = 0; iter < 20000; iter++) {
        unsigned nr = 1 + (unsigned)(xt_rand(&st) % VB_MAX_RAILS), on;
        size_t n, cl, len;
        const void *chan;
        char why[256];
        xfer_status_t s;

        for (unsigned i = 0; i < nr; i++)
            rand_port(&st, &r[i]);
        n = vb__info_encode(good, sizeof good, r, nr, chan7, sizeof chan7);
        memcpy(b, good, n);
        for (int f = 1 + (int)(xt_rand(&st) % 3); f > 0; f--)
            b[xt_rand(&st) % n] ^= (unsigned char)(1u << xt_rand(&st) % 8);
        len = n - (xt_rand(&st) % 4 == 0 ? xt_rand(&st) % n : 0);
        s = vb__info_decode(b, len, r, &on, &chan, &cl, why, sizeof why);
        if (s == XFER_OK) {
            ok++;
            if (vb__info_encode(again, sizeof again, r, on, chan, cl) !=
                    len || memcmp(again, b, len) != 0) {
                XT_FAIL("seed %" PRIu64 " iteration %d: accepted bytes "
                        "that do not encode back", seed, iter);
                break;
            }
        } else if (s != XFER_ERR_INVALID || why[0] == '\0') {
            XT_FAIL("seed %" PRIu64 " iteration %d: status %d, '%s'", seed,
                    iter, (int)s, why);
            break;
        }
    }
    printf("%u damaged infos accepted\n", ok);
}

/* ---- the handshake -------------------------------------------------------- */

static vb_hs_t two_rail_hs(uint8_t type)
{
    vb_hs_t m;
    vb_port_addr_t r[2];

    memset(&m, 0, sizeof m);
    two_rails(r);
    m.type = type;
    m.gen = 0x01020304;
    m.nrails = 2;
    m.qp[0].port = r[0];
    m.qp[0].qpn = 0xabcdef;
    m.qp[0].psn = 0x000001;
    m.qp[1].port = r[1];
    m.qp[1].qpn = 0xffffff;
    m.qp[1].psn = 0;
    return m;
}

static bool hs_eq(const vb_hs_t *a, const vb_hs_t *b)
{
    if (a->type != b->type || a->status != b->status || a->gen != b->gen ||
        a->nrails != b->nrails)
        return false;
    for (unsigned i = 0; i < a->nrails; i++)
        if (!port_eq(&a->qp[i].port, &b->qp[i].port) ||
            a->qp[i].qpn != b->qp[i].qpn || a->qp[i].psn != b->qp[i].psn)
            return false;
    return true;
}

static void test_hs_layout(void)
{
    vb_hs_t m = two_rail_hs(VB_HS_QPREP);
    unsigned char b[VB_HS_MAX];
    static const unsigned char head[8] = {0x11, 1, 2, 2, 4, 3, 2, 1};
    size_t n;

    m.status = VB_HS_FAILED;
    n = vb__hs_encode(&m, b, sizeof b);
    XT_REQUIRE(n == 8 + 2 * HS_QP, "wrote %zu", n);
    XT_CHECK(memcmp(b, head, 8) == 0, "header %02x %02x %02x %02x %02x %02x "
             "%02x %02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]);
    XT_CHECK(b[8] == 1 && b[9] == 5 && b[10] == 0x34 && b[11] == 0x12,
             "rail 0's port");
    XT_CHECK(b[28] == 0xef && b[29] == 0xcd && b[30] == 0xab && b[31] == 0,
             "rail 0's qpn");
    XT_CHECK(b[32] == 1 && b[33] == 0 && b[34] == 0 && b[35] == 0,
             "rail 0's psn");
    XT_CHECK(b[36] == 2 && b[36 + 4] == 0xf0 && b[36 + 19] == 0xff,
             "rail 1's port");
    XT_CHECK(b[56] == 0xff && b[57] == 0xff && b[58] == 0xff && b[59] == 0,
             "rail 1's qpn");
    /* A request carries status 0 whatever the struct says. */
    m.type = VB_HS_QPREQ;
    XT_REQUIRE(vb__hs_encode(&m, b, sizeof b) == n, "QPREQ not written");
    XT_CHECK(b[0] == 0x10 && b[3] == 0, "QPREQ type %02x status %u", b[0],
             b[3]);
}

static void test_hs_round_trip(void)
{
    uint64_t seed = xt_seed(), st = seed;
    static const struct {
        uint8_t type, status;
        unsigned min;
    } kinds[] = {
        {VB_HS_QPREQ, 0, 1},
        {VB_HS_QPREP, VB_HS_OK, 1},
        {VB_HS_QPREP, VB_HS_NO_ROOM, 0},
        {VB_HS_QPREP, VB_HS_FAILED, 0},
    };

    printf("seed %" PRIu64 "\n", seed);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        for (unsigned nr = kinds[k].min; nr <= VB_MAX_RAILS; nr++) {
            for (int iter = 0; iter < 100; iter++) {
                vb_hs_t in, out;
                unsigned char b[VB_HS_MAX];
                char why[256] = "";
                size_t n, want = 8 + nr * HS_QP;

                memset(&in, 0, sizeof in);
                in.type = kinds[k].type;
                in.status = kinds[k].status;
                in.gen = (uint32_t)xt_rand(&st);
                in.nrails = nr;
                for (unsigned i = 0; i < nr; i++)
                    rand_qp(&st, &in.qp[i]);
                if (iter == 0) {
                    /* The field bounds. */
                    in.gen = UINT32_MAX;
                    in.qp[0].qpn = in.qp[0].psn = 0xffffff;
                } else if (iter == 1) {
                    in.gen = 0;
                    in.qp[0].qpn = in.qp[0].psn = 0;
                }
                XT_CHECK(vb__hs_encode(&in, b, want - 1) == 0,
                         "encode into one byte short wrote");
                n = vb__hs_encode(&in, b, want);
                XT_REQUIRE(n == want, "seed %" PRIu64 ": type %#x status %u "
                           "%u rails: wrote %zu of %zu", seed, in.type,
                           in.status, nr, n, want);
                XT_REQUIRE(vb__hs_decode(b, n, &out, why, sizeof why) ==
                           XFER_OK, "seed %" PRIu64 ": type %#x status %u "
                           "%u rails: refused: %s", seed, in.type,
                           in.status, nr, why);
                XT_CHECK(hs_eq(&in, &out), "seed %" PRIu64 ": type %#x "
                         "status %u %u rails: differs", seed, in.type,
                         in.status, nr);
            }
        }
    }
}

static void test_hs_encode_refuses(void)
{
    vb_hs_t m = two_rail_hs(VB_HS_QPREQ);
    unsigned char b[VB_HS_MAX + 28];

    m.nrails = 0;
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == 0, "QPREQ of 0 rails");
    m.nrails = VB_MAX_RAILS + 1;
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == 0, "QPREQ of 5 rails");
    m.type = VB_HS_QPREP;
    m.status = VB_HS_OK;
    m.nrails = 0;
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == 0, "OK QPREP of 0 rails");
    m.status = VB_HS_NO_ROOM;
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == 8, "refusing QPREP of 0 "
             "rails not written");
    m.nrails = VB_MAX_RAILS + 1;
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == 0, "refusing QPREP of 5 "
             "rails");
    m = two_rail_hs(0x12);
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == 0, "type 0x12");
    m = two_rail_hs(VB_HS_QPREQ);
    m.nrails = VB_MAX_RAILS;
    m.qp[2] = m.qp[3] = m.qp[1];
    XT_CHECK(vb__hs_encode(&m, b, sizeof b) == VB_HS_MAX, "4 rails not "
             "VB_HS_MAX bytes");
}

static void test_hs_refusals(void)
{
    vb_hs_t m = two_rail_hs(VB_HS_QPREQ);
    unsigned char good[VB_HS_MAX], b[VB_HS_MAX + 8];
    size_t n = vb__hs_encode(&m, good, sizeof good);
    vb_hs_t out;
    char why[256];

    XT_REQUIRE(n == 8 + 2 * HS_QP, "wrote %zu", n);
#define FRESH() memcpy(b, good, n)
    FRESH();
    b[0] = 0x12;
    HS_REFUSED(b, n, "message type 0x12 not understood");
    FRESH();
    b[0] = 0x01;
    HS_REFUSED(b, n, "message type 0x01 not understood");
    FRESH();
    b[1] = 2;
    HS_REFUSED(b, n, "QPREQ version 2 not understood");
    FRESH();
    b[3] = 1;
    HS_REFUSED(b, n, "QPREQ with status 1");
    FRESH();
    b[0] = VB_HS_QPREP;
    b[3] = 3;
    HS_REFUSED(b, n, "QPREP status 3 not understood");
    /* Rails out of range, each with a length that would fit them. */
    FRESH();
    b[2] = 0;
    HS_REFUSED(b, 8, "QPREQ with 0 rails out of range (1..4)");
    FRESH();
    b[0] = VB_HS_QPREP;
    b[2] = 0;
    HS_REFUSED(b, 8, "QPREP with 0 rails out of range (1..4)");
    FRESH();
    b[2] = 5;
    HS_REFUSED(b, n, "QPREQ with 5 rails out of range");
    FRESH();
    b[0] = VB_HS_QPREP;
    b[3] = VB_HS_NO_ROOM;
    b[2] = 5;
    HS_REFUSED(b, n, "QPREP with 5 rails out of range (0..4)");
    /* Length not exactly 8 + rails * 28. */
    FRESH();
    HS_REFUSED(b, n - 1, "truncated", "63 bytes, 2 rails make 64");
    FRESH();
    b[n] = 0;
    HS_REFUSED(b, n + 1, "trailing bytes", "65 bytes, 2 rails make 64");
    FRESH();
    b[2] = 1;
    HS_REFUSED(b, n, "trailing bytes", "64 bytes, 1 rails make 36");
    /* The addresses, named by their rail. */
    FRESH();
    b[36 + 1] = 9;
    HS_REFUSED(b, n, "QPREQ rail 1: MTU 9 out of range");
    FRESH();
    b[8] = 7;
    HS_REFUSED(b, n, "QPREQ rail 0: link layer 7 not understood");
    FRESH();
    b[10] = b[11] = 0;
    HS_REFUSED(b, n, "QPREQ rail 0: ", "LID 0x0");
    FRESH();
    memset(b + 36 + 4, 0, 16);
    HS_REFUSED(b, n, "QPREQ rail 1: RoCE port with a zero GID");
    FRESH();
    b[31] = 1;
    HS_REFUSED(b, n, "QPREQ rail 0: QPN 0x1abcdef over 24 bits");
    FRESH();
    b[36 + 27] = 0x80;
    HS_REFUSED(b, n, "QPREQ rail 1: PSN 0x80000000 over 24 bits");
    FRESH();
    b[0] = VB_HS_QPREP;
    b[59] = 1;
    HS_REFUSED(b, n, "QPREP rail 1: QPN 0x1ffffff over 24 bits");
    /* A refusal's addresses are not looked at. */
    FRESH();
    b[0] = VB_HS_QPREP;
    b[3] = VB_HS_FAILED;
    b[8] = 7;
    b[31] = 1;
    strcpy(why, "");
    XT_CHECK(vb__hs_decode(b, n, &out, why, sizeof why) == XFER_OK,
             "a failed QPREP with junk addresses refused: %s", why);
    XT_CHECK(out.type == VB_HS_QPREP && out.status == VB_HS_FAILED &&
             out.nrails == 2 && out.gen == 0x01020304, "fields differ");
    FRESH();
    b[0] = VB_HS_QPREP;
    b[3] = VB_HS_NO_ROOM;
    b[2] = 0;
    XT_CHECK(vb__hs_decode(b, 8, &out, why, sizeof why) == XFER_OK &&
             out.nrails == 0 && out.status == VB_HS_NO_ROOM,
             "a QPREP NO_ROOM of 0 rails refused: %s", why);
    HS_REFUSED(b, 9, "trailing bytes");
#undef FRESH
}

static void test_hs_truncated(void)
{
    uint64_t st = xt_seed();

    for (unsigned nr = 1; nr <= VB_MAX_RAILS; nr++) {
        vb_hs_t m;
        unsigned char b[VB_HS_MAX];
        size_t n;

        memset(&m, 0, sizeof m);
        m.type = nr % 2 ? VB_HS_QPREQ : VB_HS_QPREP;
        m.nrails = nr;
        for (unsigned i = 0; i < nr; i++)
            rand_qp(&st, &m.qp[i]);
        n = vb__hs_encode(&m, b, sizeof b);
        XT_REQUIRE(n == 8 + nr * HS_QP, "encode of %u rails", nr);
        for (size_t len = 0; len < n; len++)
            HS_REFUSED(b, len, "truncated");
    }
}

static void test_hs_damage(void)
{
    uint64_t seed = xt_seed(), st = seed;
    unsigned ok = 0;

    printf("seed %" PRIu64 "\n", seed);
    for (int iter = 0; iter < 20000; iter++) {
        vb_hs_t m;
        unsigned char b[VB_HS_MAX], again[VB_HS_MAX];
        char why[256] = "";
        size_t n, len;
        xfer_status_t s;

        memset(&m, 0, sizeof m);
        m.type = xt_rand(&st) & 1 ? VB_HS_QPREQ : VB_HS_QPREP;
        m.nrails = 1 + (unsigned)(xt_rand(&st) % VB_MAX_RAILS);
        m.gen = (uint32_t)xt_rand(&st);
        for (unsigned i = 0; i < m.nrails; i++)
            rand_qp(&st, &m.qp[i]);
        n = vb__hs_encode(&m, b, sizeof b);
        for (int f = 1 + (int)(xt_rand(&st) % 3); f > 0; f--)
            b[xt_rand(&st) % n] ^= (unsigned char)(1u << xt_rand(&st) % 8);
        len = n - (xt_rand(&st) % 4 == 0 ? xt_rand(&st) % n : 0);
        s = vb__hs_decode(b, len, &m, why, sizeof why);
        if (s == XFER_OK) {
            ok++;
            if (vb__hs_encode(&m, again, sizeof again) != len ||
                memcmp(again, b, len) != 0) {
                XT_FAIL("seed %" PRIu64 " iteration %d: accepted bytes "
                        "that do not encode back", seed, iter);
                break;
            }
        } else if (s != XFER_ERR_INVALID || why[0] == '\0') {
            XT_FAIL("seed %" PRIu64 " iteration %d: status %d, '%s'", seed,
                    iter, (int)s, why);
            break;
        }
    }
    printf("%u damaged handshakes accepted\n", ok);
}

/* A short why buffer gets a truncated, terminated sentence; none at all
 * is fine. */
static void test_why_buffer(void)
{
    unsigned char b[INFO_MAX];
    size_t n = two_rail_info(b, sizeof b);
    vb_port_addr_t r[VB_MAX_RAILS];
    unsigned nr;
    const void *chan;
    size_t cl;
    char why[8];
    vb_hs_t m;

    b[0] = 'Y';
    memset(why, 'x', sizeof why);
    XT_CHECK(vb__info_decode(b, n, r, &nr, &chan, &cl, why, sizeof why) ==
             XFER_ERR_INVALID, "bad magic passed");
    XT_CHECK(memchr(why, '\0', sizeof why) != NULL && strncmp(why, "bad",
             3) == 0, "short why not terminated");
    XT_CHECK(vb__info_decode(b, n, r, &nr, &chan, &cl, NULL, 0) ==
             XFER_ERR_INVALID, "bad magic passed without why");
    b[0] = 0x33;
    XT_CHECK(vb__hs_decode(b, 8, &m, NULL, 0) == XFER_ERR_INVALID,
             "type 0x33 passed without why");
}

static const xt_test_t info_tests[] = {
    XT_TEST(test_port_check),
    XT_TEST(test_info_layout),
    XT_TEST(test_info_round_trip),
    XT_TEST(test_info_encode_refuses),
    XT_TEST(test_info_refusals),
    XT_TEST(test_info_truncated),
    XT_TEST(test_info_damage),
    XT_TEST(test_why_buffer),
    XT_END,
};

static const xt_test_t hs_tests[] = {
    XT_TEST(test_hs_layout),
    XT_TEST(test_hs_round_trip),
    XT_TEST(test_hs_encode_refuses),
    XT_TEST(test_hs_refusals),
    XT_TEST(test_hs_truncated),
    XT_TEST(test_hs_damage),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"verbs-info", info_tests},
        {"verbs-handshake", hs_tests},
    };

    (void)argc;
    (void)argv;
    return xt_run("test-verbs-wire", suites, 2);
}
