/* test-verbs.c - the verbs plugin (as vbfake, over the emulated device of
 * tests/plugins/fakeverbs.c, all in this process) against bad input and
 * hostile peers: bad settings, forged connection info and keys, hostile
 * handshakes from a raw control-channel client, stale and refusing answers
 * from a raw control-channel target.  A well-behaved initiator transfers
 * beside every attack, and its bytes and notifications must arrive whole. */
#include <dlfcn.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <openssl/evp.h>

#include "plugins/common/hwctl.h"
#include "plugins/verbs/wire.h"
#include "tests/common/xt.h"
#include "tests/plugins/fakeverbs.h"

#define WAIT_MS 20000
#define PLUGIN "vbfake"
#define SPEC0 PLUGIN ":device=fake0"
#define SPEC1 PLUGIN ":device=fake1"
/* Two rails, striped from 64 KiB: a 1 MiB run is two stripes of 512 KiB,
 * the first on fake0, the second on fake1 (plugins/verbs/plan.h). */
#define SPEC_RAILS PLUGIN ":devices=fake0\\,fake1,stripe_min=64K"
#define BIG (1u << 20)
#define STRIPE (BIG / 2)

/* ---- small things ------------------------------------------------------ */

/* The counters of xfer_backend_state (plugins/verbs/verbs.c, vb_state). */
typedef struct vstate {
    unsigned qps, from;
    unsigned long errors, remade;
    char line[XFER_STATE_MAX];
} vstate_t;

static vstate_t state_of(xfer_agent_t *a)
{
    vstate_t s;
    xfer_backend_t *b = NULL;
    const char *p, *q;

    memset(&s, 0, sizeof s);
    XT_STATUS_FATAL(xfer_backend_find(a, PLUGIN, &b), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_state(b, s.line, sizeof s.line), XFER_OK);
    p = strstr(s.line, "QPs ");
    q = strstr(s.line, " chains, ");
    XT_REQUIRE(p && sscanf(p, "QPs %u per rail, %u from initiators",
                           &s.qps, &s.from) == 2, "no queue pairs in the "
               "state '%s'", s.line);
    XT_REQUIRE(q && sscanf(q, " chains, %lu QP errors, %lu reconnects",
                           &s.errors, &s.remade) == 2,
               "no QP errors in the state '%s'", s.line);
    return s;
}

static void bad_spec(const char *spec, xfer_status_t want, const char *s1,
                     const char *s2)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    XT_STATUS(xfer_backend_add(a, spec, NULL), want);
    XT_ERR_HAS(s1, s2 ? s2 : s1);
    printf("  %s: %s\n", spec, xfer_last_error());
}

/* Post and wait for the end. */
static xfer_status_t move(xfer_agent_t *ini, xfer_op_t op, void *local,
                          size_t len, uint64_t raddr, const char *tgt)
{
    xfer_status_t st;
    xfer_req_t *q = xt_post_to(ini, op, local, len, raddr, tgt, NULL, &st);

    if (st == XFER_IN_PROG)
        st = xt_wait_req(q, WAIT_MS);
    return st;
}

/* ---- the emulated device's hooks --------------------------------------- */

static __typeof__(fakeverbs_qp_state) *fv_qp_state;

static void hooks_close(void *h) { dlclose(h); }

/* The hooks of the vbfake an agent of this test loaded (tests/plugins/
 * fakeverbs.h): the library is already mapped, found by its path. */
static void hooks_load(void)
{
    char path[4096];
    void *h;

    snprintf(path, sizeof path, "%s/tests/plugins/.libs/xfer_vbfake.so",
             getenv("abs_top_builddir"));
    h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    XT_REQUIRE(h != NULL, "vbfake is not loaded from %s: %s", path,
               dlerror());
    xt_defer_late(hooks_close, h);
    *(void **)&fv_qp_state = dlsym(h, "fakeverbs_qp_state");
    XT_REQUIRE(fv_qp_state != NULL, "no fakeverbs_qp_state in %s", path);
}

/* ---- metadata blobs: the verbs parts, base64 in the JSON ---------------- */

static unsigned char *b64_dec(const char *text, size_t *len)
{
    size_t tl = strlen(text);
    unsigned char *raw = xt_alloc(tl + 4);
    int n = EVP_DecodeBlock(raw, (const unsigned char *)text, (int)tl);

    XT_REQUIRE(n >= 0, "not base64: '%s'", text);
    /* EVP_DecodeBlock counts the padding as bytes. */
    while (tl > 0 && text[tl - 1] == '=') {
        n--;
        tl--;
    }
    *len = (size_t)n;
    return raw;
}

static char *b64_enc(const void *raw, size_t len)
{
    char *text = xt_alloc(len * 2 + 8);

    EVP_EncodeBlock((unsigned char *)text, raw, (int)len);
    return text;
}

static json_t *vb_backend(json_t *root)
{
    json_t *bes = json_object_get(root, "backends"), *be;
    size_t i;

    json_array_foreach(bes, i, be)
        if (!strcmp(json_string_value(json_object_get(be, "plugin")),
                    PLUGIN))
            return be;
    XT_FAIL_FATAL("no %s backend in the blob", PLUGIN);
}

/* The connection info of the blob (docs/wire-verbs.md), decoded. */
static unsigned char *conn_of(const char *blob, size_t blen, size_t *len)
{
    json_t *be = vb_backend(xt_blob_parse(blob, blen));
    const char *conn = json_string_value(json_object_get(be, "conn"));
    unsigned char *info;

    XT_REQUIRE(conn != NULL, "no %s connection info", PLUGIN);
    info = b64_dec(conn, len);
    XT_REQUIRE(*len > 8 && !memcmp(info, "XVRB", 4), "no XVRB magic");
    return info;
}

/* blob with its verbs connection info replaced by info. */
static char *with_conn(const char *blob, size_t blen, const void *info,
                       size_t len, size_t *out_len)
{
    json_t *root = xt_blob_parse(blob, blen);

    json_object_set_new(vb_backend(root), "conn",
                        json_string(b64_enc(info, len)));
    return xt_blob_dump(root, out_len);
}

static json_t *region_at(json_t *root, uint64_t addr)
{
    json_t *regs = json_object_get(root, "regions"), *r;
    size_t i;

    json_array_foreach(regs, i, r) {
        uint64_t a = 0;

        if (xt_json_u64(json_object_get(r, "addr"), &a) && a == addr)
            return r;
    }
    XT_FAIL_FATAL("no region at 0x%" PRIx64 " in the blob", addr);
}

/* The packed key of the region at addr ("XVRK", rails, rkeys). */
static unsigned char *key_of(const char *blob, size_t blen, uint64_t addr,
                             size_t *len)
{
    json_t *r = region_at(xt_blob_parse(blob, blen), addr);
    const char *pub = json_string_value(
        json_object_get(json_object_get(r, "pub"), PLUGIN));
    unsigned char *k;

    XT_REQUIRE(pub != NULL, "the region has no %s key", PLUGIN);
    k = b64_dec(pub, len);
    XT_REQUIRE(*len >= 12 && !memcmp(k, "XVRK", 4) && *len == 8u + 4u * k[4],
               "not a verbs key (%zu bytes)", *len);
    return k;
}

static char *with_key(const char *blob, size_t blen, uint64_t addr,
                      const void *key, size_t len, size_t *out_len)
{
    json_t *root = xt_blob_parse(blob, blen);
    json_t *pub = json_object_get(region_at(root, addr), "pub");

    json_object_set_new(pub, PLUGIN, json_string(b64_enc(key, len)));
    return xt_blob_dump(root, out_len);
}

/* ---- a well-behaved initiator --------------------------------------------- */

/* Each round a WRITE of 64 KiB of a fresh pattern with the notification
 * "good-<n>", checked byte for byte at the target; at the end every
 * notification of a round that succeeded, in order, once, named as from
 * this initiator. */
#define GOOD_LEN (64u << 10)
#define GOOD_SLOTS 8u
#define GOOD_MAX 256u

typedef struct good {
    xfer_agent_t *ini, *tgt;
    const char *tname;
    unsigned char *src, *dst;
    uint64_t seed;
    unsigned n;                /* rounds */
    unsigned posts;            /* posts, each with its notification */
    unsigned ok[GOOD_MAX], nok; /* the posts whose notification is due */
    unsigned reposts;
    xt_notifs_t *got;
} good_t;

static good_t *good_new(xfer_agent_t *tgt, const char *spec)
{
    good_t *g = xt_alloc(sizeof *g);

    g->tgt = tgt;
    g->tname = xfer_agent_name(tgt);
    g->ini = xt_agent(xt_name("good"), spec, 1);
    g->src = xt_alloc(GOOD_LEN * GOOD_SLOTS);
    g->dst = xt_alloc(GOOD_LEN * GOOD_SLOTS);
    g->seed = xt_seed();
    g->got = xt_notifs_new();
    xt_register(g->ini, g->src, GOOD_LEN * GOOD_SLOTS);
    xt_register(tgt, g->dst, GOOD_LEN * GOOD_SLOTS);
    xt_md_exchange(tgt, XFER_MD_ALL, g->ini);
    printf("good initiator %s, seed %" PRIu64 "\n", xfer_agent_name(g->ini),
           g->seed);
    return g;
}

/* One round; with evictable, a transfer that failed because the target
 * dropped this initiator's queue pairs (REMOTE_DISCONNECT: its QP met no
 * peer) is posted once more, and said so. */
static void good_round(good_t *g, bool evictable)
{
    size_t off = (size_t)(g->n % GOOD_SLOTS) * GOOD_LEN;
    uint64_t seed = g->seed + g->n;
    xfer_status_t st = XFER_OK;
    long bad;

    xt_fill(g->src + off, GOOD_LEN, seed);
    for (int k = 0; k < 2; k++) {
        unsigned id = g->posts++;
        char m[32];
        xfer_req_t *q;

        snprintf(m, sizeof m, "good-%u", id);
        q = xt_post_to(g->ini, XFER_OP_WRITE, g->src + off, GOOD_LEN,
                       (uintptr_t)g->dst + off, g->tname, m, &st);
        if (st == XFER_IN_PROG)
            st = xt_wait_req(q, WAIT_MS);
        if (st == XFER_OK) {
            if (g->nok < GOOD_MAX)
                g->ok[g->nok++] = id;
            break;
        }
        if (!evictable || k == 1 || st != XFER_ERR_REMOTE_DISCONNECT)
            break;
        printf("  good round %u: %s; posted again\n", g->n,
               xfer_last_error());
        g->reposts++;
    }
    XT_STATUS(st, XFER_OK);
    bad = xt_check(g->dst + off, GOOD_LEN, seed);
    XT_CHECK(bad < 0, "good WRITE %u: byte %ld differs at the target", g->n,
             bad);
    g->n++;
}

/* Every notification of a post that succeeded arrived, in order, once,
 * from the good initiator; nothing else did. */
static void good_verify(good_t *g)
{
    const char *iname = xfer_agent_name(g->ini);

    xt_drain_until(g->tgt, g->got, g->nok, WAIT_MS, false);
    xt_sleep_ms(100);
    xt_drain_until(g->tgt, g->got, g->nok + 1, 0, false);
    XT_CHECK(g->got->count == g->nok, "%zu notifications delivered, %u "
             "due: '%s'", g->got->count, g->nok, state_of(g->tgt).line);
    for (size_t i = 0; i < g->got->count && i < g->nok; i++) {
        const xt_notif_t *m = &g->got->items[i];
        char want[32];
        int k = snprintf(want, sizeof want, "good-%u", g->ok[i]);

        XT_CHECK(strcmp(m->from, iname) == 0, "notification %zu from '%s', "
                 "want '%s'", i, m->from, iname);
        XT_CHECK(m->len == (size_t)k && memcmp(m->msg, want, (size_t)k) == 0,
                 "notification %zu is '%.*s', want '%s'", i, (int)m->len,
                 (char *)m->msg, want);
    }
}

/* ---- a raw control channel (plugins/common/hwctl.h) ------------------------
 * What an agent's verbs plugin speaks before any queue pair exists, driven
 * by hand: as a client it claims any name and sends any bytes to a
 * target's channel; as a target (listening) it answers an initiator's
 * QPREQ as a test says. */

typedef struct raw raw_t;
typedef struct rpeer rpeer_t;

/* What came: a handshake message, decoded or not. */
typedef struct rmsg {
    bool ok;
    vb_hs_t m;
    char why[200];
} rmsg_t;

#define RAW_MSGS 64u

struct raw {
    xfer_host_t host;
    char name[XFER_NAME_MAX + 1];
    int epfd;
    xfer__hwctl_t h;
    xfer__ns_table_t ns;
    bool closed;
    rmsg_t msgs[RAW_MSGS];
    unsigned nmsgs;
    /* target role: called for each QPREQ, on the connection it came on */
    void (*answer)(raw_t *r, xfer__stream_conn_t *c, const vb_hs_t *m);
    int mode;
    vb_port_addr_t port;       /* the port it claims in its answers */
    vb_hs_t first, last;       /* the QPREQs: the first and the last */
    unsigned nreq;
    char log[8192];
};

struct rpeer {
    xfer__hwctl_peer_t ctl;
    raw_t *side;
    char name[XFER_NAME_MAX + 1];
    atomic_bool dead;
    xfer__ns_send_t snd;
    int deaths;
    char death_why[256];
};

static char raw_error[512];

static void raw_log(void *ctx, xfer_log_level_t lvl, const char *fmt, ...)
{
    raw_t *r = ctx;
    size_t n = strlen(r->log);
    va_list ap;

    (void)lvl;
    if (n + 2 >= sizeof r->log)
        return;
    va_start(ap, fmt);
    vsnprintf(r->log + n, sizeof r->log - n - 1, fmt, ap);
    va_end(ap);
    strcat(r->log, "\n");
}

static xfer_status_t raw_err(void *ctx, xfer_status_t st, const char *fmt,
                             ...)
{
    va_list ap;

    (void)ctx;
    va_start(ap, fmt);
    vsnprintf(raw_error, sizeof raw_error, fmt, ap);
    va_end(ap);
    return st;
}

static void raw_deliver(void *ctx, const char *from, const void *msg,
                        size_t len)
{
    (void)ctx;
    (void)from;
    (void)msg;
    (void)len;
}

static bool r_dead(void *peer)
{
    return atomic_load(&((rpeer_t *)peer)->dead);
}

static bool r_waiting(void *peer)
{
    (void)peer;
    return false;
}

static xfer_status_t r_credit(void *peer, const void *msg, size_t len,
                              uint64_t *lost)
{
    return xfer__ns_send_apply(&((rpeer_t *)peer)->snd, msg, len, lost);
}

static void r_death(void *peer, xfer_status_t st, const char *why)
{
    rpeer_t *p = peer;

    (void)st;
    p->deaths++;
    snprintf(p->death_why, sizeof p->death_why, "%s", why);
    atomic_store(&p->dead, true);
}

static void r_msg(xfer__hwctl_t *h, xfer__stream_conn_t *c, void *peer,
                  const void *msg, size_t len)
{
    raw_t *r = (raw_t *)(void *)((char *)h - offsetof(raw_t, h));
    rmsg_t e;

    (void)peer;
    memset(&e, 0, sizeof e);
    e.ok = vb__hs_decode(msg, len, &e.m, e.why, sizeof e.why) == XFER_OK;
    if (r->nmsgs < RAW_MSGS)
        r->msgs[r->nmsgs] = e;
    r->nmsgs++;
    if (!e.ok || e.m.type != VB_HS_QPREQ || xfer__stream_conn_initiator(c))
        return;
    if (r->nreq++ == 0)
        r->first = e.m;
    r->last = e.m;
    if (r->answer != NULL)
        r->answer(r, c, &e.m);
}

static const xfer__hwctl_ops_t raw_ops = {
    .dead = r_dead,
    .waiting = r_waiting,
    .on_credit = r_credit,
    .on_death = r_death,
    .on_msg = r_msg,
};

static void raw_free(void *arg)
{
    raw_t *r = arg;

    if (!r->closed)
        xfer__hwctl_close(&r->h);
    xfer__ns_fini(&r->ns);
    if (r->epfd >= 0)
        close(r->epfd);
    free(r);
}

/* A channel of its own under name and epoch, listening on loopback;
 * msg_max: the largest message it lets itself send (0: the handshake's). */
static raw_t *raw_new(const char *name, uint64_t epoch, size_t msg_max)
{
    raw_t *r = calloc(1, sizeof *r);
    xfer__hwctl_cfg_t cfg;

    XT_REQUIRE(r != NULL, "out of memory");
    snprintf(r->name, sizeof r->name, "%s", name);
    r->host.size = sizeof r->host;
    r->host.ctx = r;
    r->host.agent_name = r->name;
    r->host.agent_epoch = epoch;
    r->host.log = raw_log;
    r->host.error = raw_err;
    r->host.notif_deliver = raw_deliver;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    xfer__hwctl_init(&r->h);
    xt_defer(raw_free, r);
    XT_REQUIRE(r->epfd >= 0, "epoll_create1 failed");
    XT_REQUIRE(xfer__ns_init(&r->ns, &r->host, "raw", 8, 16) == XFER_OK,
               "xfer__ns_init failed");
    memset(&cfg, 0, sizeof cfg);
    cfg.addr = "127.0.0.1";
    cfg.timeout_ms = 10000;
    cfg.msg_max = msg_max ? msg_max : VB_HS_MAX;
    XT_REQUIRE(xfer__hwctl_open(&r->h, &r->host, "raw", &cfg, &raw_ops,
                                &r->ns, r->epfd, 0xffffu) == XFER_OK,
               "xfer__hwctl_open: %s", raw_error);
    return r;
}

static void rpeer_free(void *arg)
{
    rpeer_t *p = arg;

    if (!p->side->closed)
        xfer__hwctl_peer_remove(&p->side->h, &p->ctl);
    free(p);
}

/* r's peer: agent name of epoch at the control channel address chan
 * (24 bytes, tcpsock.h). */
static rpeer_t *rpeer_at(raw_t *r, const char *name, uint64_t epoch,
                         const void *chan)
{
    rpeer_t *p = calloc(1, sizeof *p);

    XT_REQUIRE(p != NULL, "out of memory");
    p->side = r;
    xt_defer(rpeer_free, p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->snd.window = 8;
    XT_REQUIRE(xfer__hwctl_peer_add(&r->h, &p->ctl, p, p->name, epoch, chan,
                                    XFER__TCPSOCK_INFO_SIZE) == XFER_OK,
               "peer_add: %s", raw_error);
    return p;
}

/* Raw bytes to p, after the channel's HELLO (opening it if needed). */
static void raw_send(raw_t *r, rpeer_t *p, const void *msg, size_t len)
{
    xfer_status_t st;

    pthread_mutex_lock(&r->h.chan_lock);
    st = xfer__chan_send(r->h.chan, p->ctl.cp, msg, len);
    pthread_mutex_unlock(&r->h.chan_lock);
    XT_REQUIRE(st == XFER_OK, "xfer__chan_send of %zu bytes: %s", len,
               raw_error);
}

/* Drive r until cond holds or WAIT_MS pass. */
#define RAW_PUMP(r, cond)                                                   \
    do {                                                                    \
        uint64_t end_ = xt_now_ms() + WAIT_MS;                              \
        while (!(cond) && xt_now_ms() < end_) {                             \
            xfer__hwctl_progress(&(r)->h, true);                            \
            usleep(200);                                                    \
        }                                                                   \
    } while (0)

/* The answer of generation gen that came to r, or NULL. */
static const rmsg_t *raw_reply(const raw_t *r, uint32_t gen)
{
    for (unsigned i = 0; i < r->nmsgs && i < RAW_MSGS; i++)
        if (r->msgs[i].ok && r->msgs[i].m.type == VB_HS_QPREP &&
            r->msgs[i].m.gen == gen)
            return &r->msgs[i];
    return NULL;
}

/* A QPREQ for one rail: a plausible port of link (IB: LID 2; RoCE: a
 * link-local GID) and a made-up QP number. */
static size_t qpreq(unsigned char *buf, uint32_t gen, uint32_t qpn,
                    uint8_t link)
{
    vb_hs_t m;
    size_t n;

    memset(&m, 0, sizeof m);
    m.type = VB_HS_QPREQ;
    m.gen = gen;
    m.nrails = 1;
    m.qp[0].port.link = link;
    m.qp[0].port.mtu = VB_MTU_MAX;
    if (link == VB_LINK_IB) {
        m.qp[0].port.lid = 2;
    } else {
        m.qp[0].port.gid[0] = 0xfe;
        m.qp[0].port.gid[1] = 0x80;
        m.qp[0].port.gid[15] = 0x99;
    }
    m.qp[0].qpn = qpn;
    m.qp[0].psn = 0x1234;
    n = vb__hs_encode(&m, buf, VB_HS_MAX);
    XT_REQUIRE(n == 36, "a QPREQ of one rail is %zu bytes", n);
    return n;
}

/* The control channel's address in a's connection info (and its first
 * rail's port in *port). */
static const void *chan_of(xfer_agent_t *a, vb_port_addr_t *port)
{
    size_t blen, clen, chl;
    char *blob = xt_md_get(a, XFER_MD_CONN, NULL, 0, &blen);
    unsigned char *info = conn_of(blob, blen, &clen);
    vb_port_addr_t ports[VB_MAX_RAILS];
    const void *chan = NULL;
    unsigned nr = 0;
    char why[200];

    XT_REQUIRE(vb__info_decode(info, clen, ports, &nr, &chan, &chl, why,
                               sizeof why) == XFER_OK,
               "the agent's own connection info: %s", why);
    XT_REQUIRE(chl == XFER__TCPSOCK_INFO_SIZE, "a control channel part of "
               "%zu bytes", chl);
    if (port != NULL)
        *port = ports[0];
    return chan;
}

/* ---- 1. configuration ------------------------------------------------------ */

static void env_unset(void *name) { unsetenv(name); }

/* name=value until the test ends (after its agents are gone). */
static void env_set(const char *name, const char *value)
{
    setenv(name, value, 1);
    xt_defer_late(env_unset, (void *)name);
}

static void test_bad_config(void)
{
    bad_spec(PLUGIN ":device=nope", XFER_ERR_CONFIG,
             PLUGIN ": no RDMA device 'nope'", "(this host has: fake0 fake1)");
    /* Refused once a rail is open: the instance's clean-up closes it. */
    bad_spec(PLUGIN ":devices=fake0\\,fake1\\,fake0", XFER_ERR_CONFIG,
             PLUGIN ": devices: 'fake0' named twice", NULL);
    bad_spec(PLUGIN ":device=fake0,gid_index=3", XFER_ERR_CONFIG,
             PLUGIN ": fake0 port 1 has no GID at gid_index 3", NULL);
    bad_spec(PLUGIN ":bogus=1", XFER_ERR_CONFIG, "'bogus'", "'" PLUGIN "'");
    /* Five devices that exist, one too many for a rail each. */
    env_set("XFER_FAKEVERBS_DEVICES", "5");
    bad_spec(PLUGIN ":devices=fake0\\,fake1\\,fake2\\,fake3\\,fake4",
             XFER_ERR_CONFIG, PLUGIN ": devices: at most 4", NULL);
    /* No device at all: read again when the backend is made. */
    env_set("XFER_FAKEVERBS_DEVICES", "0");
    bad_spec(PLUGIN, XFER_ERR_NOT_FOUND, PLUGIN ": no RDMA device (", NULL);
    bad_spec(SPEC0, XFER_ERR_NOT_FOUND, PLUGIN ": no RDMA device (", NULL);
    unsetenv("XFER_FAKEVERBS_DEVICES");
    /* And back: the same spec works. */
    xt_agent(xt_name("cfg"), SPEC0, 0);
}

/* Ethernet ports (RoCE): addressed by GID, every QP with a GRH; transfers
 * and notifications work; an agent on InfiniBand and one on RoCE refuse
 * each other's connection info, naming both; a RoCE rail without a GID
 * is refused. */
static void test_roce(void)
{
    uint64_t seed = xt_seed();
    xfer_agent_t *t, *ib;
    good_t *g;
    unsigned char *lbuf = xt_alloc(BIG), *tbuf = xt_alloc(BIG), *f;
    size_t blen, iblen, clen, ol;
    char *blob, *ibblob, *forged;
    vstate_t s;

    printf("seed %" PRIu64 "\n", seed);
    env_set("XFER_FAKEVERBS_DEVICES", "3");
    env_set("XFER_FAKEVERBS_LINK", "eth");
    t = xt_agent(xt_name("tgt"), SPEC0, 1);
    g = good_new(t, SPEC1);
    /* A device keeps its link layer while open: fake2 is InfiniBand. */
    unsetenv("XFER_FAKEVERBS_LINK");
    ib = xt_agent(xt_name("ib"), PLUGIN ":device=fake2", 1);
    s = state_of(t);
    printf("RoCE target: '%s'\n", s.line);
    XT_CHECK(strstr(s.line, "fake0:1 RoCE GID 3 MTU 1024") != NULL,
             "state '%s'", s.line);
    XT_CHECK(strstr(state_of(ib).line, "fake2:1 IB LID 3 MTU 4096")
             != NULL, "state '%s'", state_of(ib).line);

    /* Byte for byte, both ways, 1 MiB, and notifications. */
    xt_register(t, tbuf, BIG);
    xt_register(g->ini, lbuf, BIG);
    xt_md_exchange(t, XFER_MD_ALL, g->ini);
    xt_fill(lbuf, BIG, seed);
    XT_STATUS(move(g->ini, XFER_OP_WRITE, lbuf, BIG, (uintptr_t)tbuf,
                   g->tname), XFER_OK);
    XT_CHECK(xt_check(tbuf, BIG, seed) < 0, "the RoCE WRITE's bytes differ");
    xt_fill(tbuf, BIG, seed + 1);
    XT_STATUS(move(g->ini, XFER_OP_READ, lbuf, BIG, (uintptr_t)tbuf,
                   g->tname), XFER_OK);
    XT_CHECK(xt_check(lbuf, BIG, seed + 1) < 0, "the RoCE READ's bytes "
             "differ");
    for (int i = 0; i < 3; i++)
        good_round(g, false);

    /* Link layers that differ. */
    blob = xt_md_get(t, XFER_MD_ALL, NULL, 0, &blen);
    ibblob = xt_md_get(ib, XFER_MD_ALL, NULL, 0, &iblen);
    XT_STATUS(xfer_md_load(ib, blob, blen, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS(PLUGIN ": agent '", g->tname, "' is on RoCE, this agent on "
               "InfiniBand: both sides need the same link layer");
    printf("  %s\n", xfer_last_error());
    XT_STATUS(xfer_md_load(g->ini, ibblob, iblen, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS(xfer_agent_name(ib), "is on InfiniBand, this agent on RoCE");
    printf("  %s\n", xfer_last_error());

    /* A RoCE rail whose GID is zero. */
    f = conn_of(blob, blen, &clen);
    XT_REQUIRE(f[8] == VB_LINK_ETH, "the RoCE target's rail 0 has link %u",
               f[8]);
    memset(f + 12, 0, 16);
    forged = with_conn(blob, blen, f, clen, &ol);
    XT_STATUS_FATAL(xfer_md_invalidate(g->ini, g->tname), XFER_OK);
    XT_STATUS(xfer_md_load(g->ini, forged, ol, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS(PLUGIN ": agent '", "connection info refused: rail 0: RoCE "
               "port with a zero GID");
    printf("  %s\n", xfer_last_error());
    XT_STATUS(xfer_md_load(g->ini, blob, blen, NULL, 0), XFER_OK);
    good_round(g, false);
    good_verify(g);
}

/* ---- 2. forged connection info --------------------------------------------- */

static void test_forged_info(void)
{
    uint64_t seed = xt_seed();
    xfer_agent_t *t = xt_agent(xt_name("tgt"), SPEC0, 1);
    xfer_agent_t *ini = xt_agent(xt_name("ini"), SPEC1, 1);
    good_t *g = good_new(t, SPEC1);
    unsigned char *src = xt_alloc(4096), *dst = xt_alloc(4096), *c;
    size_t blen, clen;
    char *blob;

    printf("seed %" PRIu64 "\n", seed);
    xt_register(t, dst, 4096);
    xt_register(ini, src, 4096);
    blob = xt_md_get(t, XFER_MD_ALL, NULL, 0, &blen);
    c = conn_of(blob, blen, &clen);
    /* One IB rail: 8 + 20 + 4 + 24 bytes. */
    XT_REQUIRE(clen == 56 && c[5] == 1 && c[8] == VB_LINK_IB,
               "the target's connection info: %zu bytes, %u rails, link %u",
               clen, c[5], c[8]);
    good_round(g, false);
    for (int i = 0; i < 17; i++) {
        unsigned char *f = xt_alloc(clen + 64);
        size_t fl = clen, ol;
        const char *w = NULL;
        char *forged;

        memcpy(f, c, clen);
        switch (i) {
        case 0: f[0] = 'Y'; w = "refused: bad magic"; break;
        case 1: f[4] = 2; w = "refused: version 2 not understood"; break;
        case 2: f[5] = 0; w = "refused: 0 rails out of range (1..4)"; break;
        case 3: f[5] = 5; w = "refused: 5 rails out of range (1..4)"; break;
        case 4: f[6] = 1; w = "refused: reserved field 0x1 not zero"; break;
        case 5: f[9] = 9; w = "refused: rail 0: MTU 9 out of range"; break;
        case 6:
            f[10] = f[11] = 0;
            w = "refused: rail 0: InfiniBand port with LID 0x0";
            break;
        case 7:
            f[10] = 0x00;
            f[11] = 0xc0;
            w = "refused: rail 0: InfiniBand port with LID 0xc000";
            break;
        case 8: /* a RoCE port without a GID */
            f[8] = VB_LINK_ETH;
            memset(f + 12, 0, 16);
            w = "refused: rail 0: RoCE port with a zero GID";
            break;
        case 9: f[8] = 3; w = "refused: rail 0: link layer 3"; break;
        case 10: fl = 7; w = "refused: truncated: 7 bytes"; break;
        case 11:
            fl = 30;
            w = "refused: truncated: 30 bytes, 1 rails and the control "
                "channel's length need 32";
            break;
        case 12:
            fl = clen - 1;
            w = "refused: truncated: the control channel's part says 24 "
                "bytes, 23 remain";
            break;
        case 13:
            fl = clen + 1;
            w = "refused: trailing bytes: 1 after the control channel's "
                "part";
            break;
        case 14: /* the tcp address's magic */
            f[32] ^= 0xff;
            w = "its control channel address is not valid";
            break;
        case 15: /* port 0 */
            f[32 + 6] = f[32 + 7] = 0;
            w = "its control channel address is not valid";
            break;
        default: /* a 23-byte address, the lengths agreeing */
            f[28] = 23;
            fl = clen - 1;
            w = "its control channel address is not valid";
            break;
        }
        forged = with_conn(blob, blen, f, fl, &ol);
        XT_STATUS(xfer_md_load(ini, forged, ol, NULL, 0), XFER_ERR_INVALID);
        XT_ERR_HAS(PLUGIN ": agent '", g->tname, w);
        printf("  forgery %d: %s\n", i, xfer_last_error());
        XT_STATUS(xfer_md_check(ini, g->tname), XFER_ERR_NOT_FOUND);
        if (i % 4 == 3)
            good_round(g, false);
    }
    /* The genuine blob loads and works. */
    XT_STATUS(xfer_md_load(ini, blob, blen, NULL, 0), XFER_OK);
    xt_fill(src, 4096, seed);
    XT_STATUS(move(ini, XFER_OP_WRITE, src, 4096, (uintptr_t)dst, g->tname),
              XFER_OK);
    XT_CHECK(xt_check(dst, 4096, seed) < 0, "the WRITE after the forgeries "
             "differs");
    good_round(g, false);
    good_verify(g);
}

/* ---- 3. forged keys across rails -------------------------------------------- */

/* The offset of the first byte of buf that is neither a's nor b's at the
 * same place, or -1. */
static long either(const unsigned char *buf, const unsigned char *a,
                   const unsigned char *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != a[i] && buf[i] != b[i])
            return (long)i;
    return -1;
}

static void test_forged_keys(void)
{
    uint64_t seed = xt_seed();
    xfer_agent_t *t = xt_agent(xt_name("tgt"), SPEC_RAILS, 1);
    xfer_agent_t *ini = xt_agent(xt_name("ini"), SPEC_RAILS, 1);
    good_t *g = good_new(t, SPEC0); /* one rail to the two of the target */
    unsigned char *tbuf = xt_alloc(BIG), *lbuf = xt_alloc(BIG), *key;
    unsigned char *was = xt_alloc(BIG), *data = xt_alloc(BIG);
    const char *tname = g->tname;
    size_t blen, klen, ol;
    char *blob, *forged;

    printf("seed %" PRIu64 "\n", seed);
    xt_register(t, tbuf, BIG);
    xt_register(ini, lbuf, BIG);
    blob = xt_md_get(t, XFER_MD_ALL, NULL, 0, &blen);
    key = key_of(blob, blen, (uintptr_t)tbuf, &klen);
    XT_REQUIRE(klen == 16 && key[4] == 2, "the target's key: %zu bytes, %u "
               "rails", klen, key[4]);
    xt_md_exchange(t, XFER_MD_ALL, ini);
    /* Both rails carry a striped MiB. */
    xt_fill(lbuf, BIG, seed);
    XT_STATUS(move(ini, XFER_OP_WRITE, lbuf, BIG, (uintptr_t)tbuf, tname),
              XFER_OK);
    XT_CHECK(xt_check(tbuf, BIG, seed) < 0, "the striped WRITE differs");
    good_round(g, false);

    for (unsigned rail = 0; rail < 2; rail++) {
        unsigned char bad[16];
        uint64_t tc = xt_seed(), lc = xt_seed(), dseed = xt_seed();
        size_t other = rail ? 0 : STRIPE, mine = rail ? STRIPE : 0;
        xfer_status_t st;
        long b;

        memcpy(bad, key, 16);
        for (int k = 0; k < 4; k++)
            bad[8 + 4 * rail + (unsigned)k] ^= 0xff;
        forged = with_key(blob, blen, (uintptr_t)tbuf, bad, 16, &ol);
        XT_STATUS_FATAL(xfer_md_invalidate(ini, tname), XFER_OK);
        XT_STATUS_FATAL(xfer_md_load(ini, forged, ol, NULL, 0), XFER_OK);

        /* WRITE: the stripe of the bad key never lands; the other rail's
         * may have (its NIC knew nothing wrong), but only whole bytes of
         * the data, nothing else. */
        xt_fill(tbuf, BIG, tc);
        xt_fill(was, BIG, tc);
        xt_fill(data, BIG, dseed);
        memcpy(lbuf, data, BIG);
        st = move(ini, XFER_OP_WRITE, lbuf, BIG, (uintptr_t)tbuf, tname);
        XT_CHECK(st == XFER_ERR_ACCESS || st == XFER_ERR_REMOTE_DISCONNECT,
                 "WRITE with rail %u's key corrupted: %s (%s)", rail,
                 xt_status_name(st), xfer_last_error());
        XT_ERR_HAS(PLUGIN ": WRITE to agent '", tname);
        printf("  rail %u's key, WRITE: %s\n", rail, xfer_last_error());
        b = xt_check_at(tbuf + mine, STRIPE, tc, mine);
        XT_CHECK(b < 0, "rail %u's stripe at the target was written through "
                 "a corrupted key: byte %ld", rail, b);
        b = either(tbuf + other, was + other, data + other, STRIPE);
        XT_CHECK(b < 0, "the other stripe at the target holds neither its "
                 "canary nor the data at byte %ld", b);
        printf("  the other rail's stripe: %s\n",
               !memcmp(tbuf + other, data + other, STRIPE) ? "landed"
               : !memcmp(tbuf + other, was + other, STRIPE) ? "untouched"
                                                             : "in part");

        /* READ: the local stripe of the bad key stays as it was; the
         * other one holds its canary or the target's bytes. */
        memcpy(data, tbuf, BIG);
        xt_fill(lbuf, BIG, lc);
        xt_fill(was, BIG, lc);
        st = move(ini, XFER_OP_READ, lbuf, BIG, (uintptr_t)tbuf, tname);
        XT_CHECK(st == XFER_ERR_ACCESS || st == XFER_ERR_REMOTE_DISCONNECT,
                 "READ with rail %u's key corrupted: %s (%s)", rail,
                 xt_status_name(st), xfer_last_error());
        XT_ERR_HAS(PLUGIN ": READ to agent '", tname);
        printf("  rail %u's key, READ: %s\n", rail, xfer_last_error());
        b = xt_check_at(lbuf + mine, STRIPE, lc, mine);
        XT_CHECK(b < 0, "rail %u's stripe of the READ's local memory was "
                 "written through a corrupted key: byte %ld", rail, b);
        b = either(lbuf + other, was + other, data + other, STRIPE);
        XT_CHECK(b < 0, "the READ's other local stripe holds neither its "
                 "canary nor the target's bytes at %ld", b);
        XT_CHECK(memcmp(data, tbuf, BIG) == 0, "a READ changed the "
                 "target's memory");
        good_round(g, false);

        /* The good key again: both rails, both ways. */
        XT_STATUS_FATAL(xfer_md_invalidate(ini, tname), XFER_OK);
        XT_STATUS_FATAL(xfer_md_load(ini, blob, blen, NULL, 0), XFER_OK);
        XT_STATUS(move(ini, XFER_OP_WRITE, lbuf, BIG, (uintptr_t)tbuf,
                       tname), XFER_OK);
        XT_CHECK(memcmp(lbuf, tbuf, BIG) == 0, "the WRITE after reloading "
                 "differs");
        xt_fill(tbuf, BIG, dseed + 1);
        XT_STATUS(move(ini, XFER_OP_READ, lbuf, BIG, (uintptr_t)tbuf, tname),
                  XFER_OK);
        XT_CHECK(xt_check(lbuf, BIG, dseed + 1) < 0, "the READ after "
                 "reloading differs");
    }
    {
        vstate_t s = state_of(t);
        size_t n = strlen(s.line);

        printf("target: '%s'\n", s.line);
        /* XFER_STATE_MAX holds any sentence (xfer.h), two rails' too. */
        XT_CHECK(n > 8 && strcmp(s.line + n - 8, " dropped") == 0,
                 "the state of two rails was cut at %zu bytes: '%s'", n,
                 s.line);
    }

    /* A key of one rail for a peer reached over two: refused at load. */
    {
        unsigned char one[12];

        memcpy(one, key, 12);
        one[4] = 1;
        forged = with_key(blob, blen, (uintptr_t)tbuf, one, 12, &ol);
        XT_STATUS_FATAL(xfer_md_invalidate(ini, tname), XFER_OK);
        XT_STATUS(xfer_md_load(ini, forged, ol, NULL, 0), XFER_ERR_INVALID);
        XT_ERR_HAS(PLUGIN ": agent '", tname, "a region's key has 1 rails, "
                   "its connection info 2");
        printf("  one rail's key: %s\n", xfer_last_error());
        XT_STATUS(xfer_md_load(ini, blob, blen, NULL, 0), XFER_OK);
        xt_fill(lbuf, BIG, seed + 7);
        XT_STATUS(move(ini, XFER_OP_WRITE, lbuf, BIG, (uintptr_t)tbuf,
                       tname), XFER_OK);
        XT_CHECK(xt_check(tbuf, BIG, seed + 7) < 0, "the last WRITE "
                 "differs");
    }
    good_round(g, false);
    good_verify(g);
}

/* ---- 4. hostile handshakes at a target ------------------------------------- */

/* One hostile message: its bytes, and what the target's log must say. */
typedef struct hostile {
    const char *what;
    unsigned char msg[VB_HS_MAX + 8];
    size_t len;
    const char *log;
    bool answered;             /* with a refusal (VB_HS_FAILED) */
} hostile_t;

static void put32le(unsigned char *b, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(x >> (8 * i));
}

/* A QPREQ of a new generation to t, answered with a QPREP of it that
 * made a queue pair: everything sent before it was read. */
static void barrier(raw_t *r, rpeer_t *p, uint32_t gen)
{
    unsigned char m[VB_HS_MAX];
    const rmsg_t *rep;

    raw_send(r, p, m, qpreq(m, gen, 0x200000u + gen, VB_LINK_IB));
    RAW_PUMP(r, raw_reply(r, gen) != NULL);
    rep = raw_reply(r, gen);
    XT_REQUIRE(rep != NULL, "no answer to QPREQ %u (raw log: %s)", gen,
               r->log);
    XT_CHECK(rep->m.status == VB_HS_OK && rep->m.nrails == 1 &&
             rep->m.qp[0].port.link == VB_LINK_IB &&
             rep->m.qp[0].port.lid == 1 && rep->m.qp[0].qpn != 0,
             "QPREQ %u answered with status %u, %u rails, link %u, LID %u",
             gen, rep->m.status, rep->m.nrails, rep->m.qp[0].port.link,
             rep->m.qp[0].port.lid);
}

static void test_hostile_handshake(void)
{
    xfer_agent_t *t = xt_agent(xt_name("tgt"), SPEC0, 1);
    good_t *g = good_new(t, SPEC1);
    raw_t *r = raw_new(xt_name("evil"), 7, 4096);
    const void *chan = chan_of(t, NULL);
    rpeer_t *p = rpeer_at(r, g->tname, xfer_agent_epoch(t), chan);
    hostile_t h[16];
    unsigned n = 0, replies;
    uint32_t gen = 1;
    char *log, who[XFER_NAME_MAX + 32];
    vstate_t s;

    good_round(g, false);
    xt_stderr_begin();
    barrier(r, p, gen++);
    replies = 1;
    s = state_of(t);
    XT_CHECK(s.qps == 2 && s.from == 2, "after one ask from '%s': '%s'",
             r->name, s.line);

    /* The messages, each from a valid QPREQ of generation 0x7000 + i. */
#define H(w, l) (memset(&h[n], 0, sizeof h[n]), h[n].what = (w),           \
                 h[n].log = (l),                                            \
                 h[n].len = qpreq(h[n].msg, 0x7000u + n, 0x300000u + n,     \
                                  VB_LINK_IB),                              \
                 &h[n++])
    H("version 2", "refused: QPREQ version 2 not understood")->msg[1] = 2;
    H("rails 0", "refused: QPREQ with 0 rails out of range (1..4)")->msg[2] = 0;
    h[n - 1].len = 8;
    H("rails 5", "refused: QPREQ with 5 rails out of range (1..4)")->msg[2] = 5;
    H("status 1", "refused: QPREQ with status 1")->msg[3] = 1;
    put32le(H("QPN over 24 bits", "refused: QPREQ rail 0: QPN 0x1000000 "
              "over 24 bits")->msg + 28, 0x1000000u);
    put32le(H("PSN over 24 bits", "refused: QPREQ rail 0: PSN 0xffffffff "
              "over 24 bits")->msg + 32, 0xffffffffu);
    memset(H("LID 0", "refused: QPREQ rail 0: InfiniBand port with LID "
             "0x0")->msg + 10, 0, 2);
    H("truncated", "refused: truncated: 35 bytes, 1 rails make 36")->len = 35;
    H("header cut", "refused: truncated: 5 bytes, the header alone is 8")
        ->len = 5;
    H("trailing", "refused: trailing bytes: 37 bytes, 1 rails make 36")
        ->len = 37;
    H("type 0x7f", "refused: message type 0x7f not understood")->msg[0] =
        0x7f;
    {
        vb_hs_t m;

        memset(&m, 0, sizeof m);
        m.type = VB_HS_QPREP;
        m.gen = 0x7000u + n;
        m.nrails = 1;
        m.qp[0].port.link = VB_LINK_IB;
        m.qp[0].port.mtu = VB_MTU_MAX;
        m.qp[0].port.lid = 2;
        m.qp[0].qpn = 0x1234;
        H("unsolicited QPREP", "sent a handshake answer nobody asked for; "
          "ignored");
        h[n - 1].len = vb__hs_encode(&m, h[n - 1].msg, VB_HS_MAX);
    }
    H("Ethernet port", "the peer's rail 0 is Ethernet, fake0 here is "
      "InfiniBand")->answered = true;
    h[n - 1].len = qpreq(h[n - 1].msg, 0x7000u + n - 1, 0x300000u + n - 1,
                         VB_LINK_ETH);
#undef H
    /* An ask the target cannot read, if it is an ask at all (type and a
     * whole header), is answered VB_HS_FAILED with its generation, so
     * the asker fails at once. */
    for (unsigned i = 0; i < n; i++)
        if (h[i].len >= 8 && h[i].msg[0] == VB_HS_QPREQ)
            h[i].answered = true;
    for (unsigned i = 0; i < n; i++) {
        raw_send(r, p, h[i].msg, h[i].len);
        barrier(r, p, gen++);
        replies += 1 + h[i].answered;
        XT_CHECK(r->nmsgs == replies, "after '%s': %u answers, want %u",
                 h[i].what, r->nmsgs, replies);
        if (h[i].answered) {
            const rmsg_t *rep = raw_reply(r, 0x7000u + i);

            XT_CHECK(rep && rep->m.status == VB_HS_FAILED &&
                     rep->m.nrails == 0, "'%s' was not refused with "
                     "VB_HS_FAILED", h[i].what);
        }
        s = state_of(t);
        XT_CHECK(s.qps == 2 && s.from == 2 && s.errors == 0,
                 "after '%s': '%s'", h[i].what, s.line);
        good_round(g, false);
    }
    /* Longer than the channel allows (VB_HS_MAX): the target hangs up. */
    {
        unsigned char big[200];

        memset(big, 0, sizeof big);
        big[0] = VB_HS_QPREQ;
        raw_send(r, p, big, sizeof big);
        RAW_PUMP(r, p->deaths > 0);
        XT_CHECK(p->deaths == 1 && strstr(p->death_why, "closed"),
                 "the target kept a connection that sent 200 bytes "
                 "(deaths %d: '%s')", p->deaths, p->death_why);
        printf("  200 bytes: '%s'\n", p->death_why);
    }
    s = state_of(t);
    XT_CHECK(s.qps == 2 && s.from == 2, "after the long message: '%s'",
             s.line);
    good_round(g, false);
    log = xt_stderr_end();
    snprintf(who, sizeof who, "agent '%s'", r->name);
    for (unsigned i = 0; i < n; i++)
        XT_CHECK(strstr(log, h[i].log) != NULL, "the target did not log "
                 "'%s' for '%s'", h[i].log, h[i].what);
    XT_CHECK(strstr(log, who) != NULL, "the target's log never names %s",
             who);
    XT_CHECK(strstr(log, "protocol violation: message of 200 bytes (at most "
                    "120)") != NULL, "the target did not log the long "
             "message");
    printf("target: '%s'\n", state_of(t).line);
    good_verify(g);
}

/* Far more initiators (claimed names) than the target has queue pairs:
 * the table stays within max_qps.  An initiator whose notifications keep
 * arriving stays among the recently used and keeps its queue pairs; one
 * that falls idle is dropped as the least recently connected, and its
 * next post fails once (its QP meets no peer) and goes again on a new
 * connection, whose notifications must arrive like the earlier ones. */
static void flood_one(xfer_agent_t *t, const void *chan, unsigned i,
                      unsigned maxq, unsigned *most)
{
    raw_t *r = raw_new(xt_name("flood"), 1, 0);
    rpeer_t *p = rpeer_at(r, xfer_agent_name(t), xfer_agent_epoch(t), chan);
    unsigned char m[VB_HS_MAX];
    const rmsg_t *rep;
    vstate_t s;

    raw_send(r, p, m, qpreq(m, 1, 0x400000u + i, VB_LINK_IB));
    RAW_PUMP(r, raw_reply(r, 1) != NULL);
    rep = raw_reply(r, 1);
    XT_REQUIRE(rep != NULL, "flood %u: no answer", i);
    XT_CHECK(rep->m.status == VB_HS_OK, "flood %u: status %u", i,
             rep->m.status);
    s = state_of(t);
    XT_CHECK(s.qps <= maxq && s.from <= maxq, "flood %u: '%s'", i, s.line);
    *most = s.qps > *most ? s.qps : *most;
}

/* A good round, and its notification taken at the target (so that the
 * target has seen this initiator in use before anything else comes). */
static void good_round_seen(good_t *g, bool evictable)
{
    good_round(g, evictable);
    xt_drain_until(g->tgt, g->got, g->nok, WAIT_MS, false);
    /* Fatal: the next rounds' would only wait as long again. */
    XT_REQUIRE(g->got->count == g->nok, "%zu notifications of %u arrived "
               "(round %u): '%s'", g->got->count, g->nok, g->n - 1,
               state_of(g->tgt).line);
}

static void test_flood(void)
{
    enum { MAXQ = 4, N = 4 * MAXQ };
    xfer_agent_t *t = xt_agent(xt_name("tgt"), SPEC0 ",max_qps=4", 1);
    good_t *g = good_new(t, SPEC1);
    const void *chan = chan_of(t, NULL);
    unsigned most = 0, i = 0, before;

    good_round_seen(g, false);
    /* In use: a round after every MAXQ - 1 asks keeps it the most
     * recently used. */
    for (; i < N; i++) {
        flood_one(t, chan, i, MAXQ, &most);
        if (i % (MAXQ - 1) == MAXQ - 2)
            good_round_seen(g, false);
    }
    XT_CHECK(most == MAXQ, "the table never filled (%u of %u)", most, MAXQ);
    /* Idle while MAXQ others ask: dropped. */
    for (unsigned k = 0; k < MAXQ; k++, i++)
        flood_one(t, chan, i, MAXQ, &most);
    before = g->reposts;
    good_round_seen(g, true);
    XT_CHECK(g->reposts == before + 1, "the idle initiator was not dropped "
             "from a full table (%u posts again)", g->reposts - before);
    for (unsigned k = 0; k < 3; k++)
        good_round_seen(g, true);
    printf("target: '%s'; the good initiator posted again %u time(s) in %u "
           "rounds (evicted)\n", state_of(t).line, g->reposts, g->n);
    good_verify(g);
}

/* ---- 5. stale and refusing answers at an initiator ---------------------------- */

enum { ANS_SILENT, ANS_STALE, ANS_NO_ROOM, ANS_FAILED, ANS_RAILS, ANS_ETH };

static void answer_as(raw_t *r, xfer__stream_conn_t *c, vb_hs_t *rep)
{
    unsigned char out[VB_HS_MAX];
    size_t len = vb__hs_encode(rep, out, sizeof out);

    XT_REQUIRE(len > 0, "an answer that cannot be encoded");
    (void)r;
    XT_REQUIRE(xfer__chan_reply(c, out, len) == XFER_OK, "xfer__chan_reply: "
               "%s", raw_error);
}

/* The answers r's mode asks for (chan_lock held, inside its progress). */
static void answer(raw_t *r, xfer__stream_conn_t *c, const vb_hs_t *m)
{
    vb_hs_t rep;

    memset(&rep, 0, sizeof rep);
    rep.type = VB_HS_QPREP;
    rep.gen = m->gen;
    rep.status = VB_HS_OK;
    rep.nrails = 1;
    rep.qp[0].port = r->port;
    rep.qp[0].qpn = 0x54321;
    rep.qp[0].psn = 77;
    switch (r->mode) {
    case ANS_SILENT:
        return;
    case ANS_STALE: /* a late answer to the first ask, one from the future */
        rep.gen = r->first.gen;
        answer_as(r, c, &rep);
        rep.gen = m->gen + 1;
        break;
    case ANS_NO_ROOM:
    case ANS_FAILED:
        rep.status = r->mode == ANS_NO_ROOM ? VB_HS_NO_ROOM : VB_HS_FAILED;
        rep.nrails = 0;
        break;
    case ANS_RAILS:
        rep.nrails = 2;
        rep.qp[1] = rep.qp[0];
        break;
    default: /* ANS_ETH */
        rep.qp[0].port.link = VB_LINK_ETH;
        rep.qp[0].port.gid[0] = 0xfe;
        rep.qp[0].port.gid[1] = 0x80;
        rep.qp[0].port.gid[15] = 9;
        break;
    }
    answer_as(r, c, &rep);
}

/* A target's blob whose control channel is r's instead: the initiator's
 * asks come to this test. */
typedef struct fake_tgt {
    xfer_agent_t *t, *ini;
    good_t *g;
    raw_t *r;
    unsigned char *tbuf, *lbuf;
} fake_tgt_t;

static void fake_tgt_setup(fake_tgt_t *f, unsigned timeout_ms)
{
    char spec[128], *blob, *forged;
    size_t blen, clen, ol;
    unsigned char *info;

    f->t = xt_agent(xt_name("tgt"), SPEC0, 1);
    f->g = good_new(f->t, SPEC1);
    snprintf(spec, sizeof spec, SPEC1 ",timeout_ms=%u", timeout_ms);
    f->ini = xt_agent(xt_name("ini"), spec, 1);
    f->r = raw_new(f->g->tname, xfer_agent_epoch(f->t), 0);
    f->r->answer = answer;
    f->tbuf = xt_alloc(4096);
    f->lbuf = xt_alloc(4096);
    xt_register(f->t, f->tbuf, 4096);
    xt_register(f->ini, f->lbuf, 4096);
    (void)chan_of(f->t, &f->r->port);
    blob = xt_md_get(f->t, XFER_MD_ALL, NULL, 0, &blen);
    info = conn_of(blob, blen, &clen);
    XT_REQUIRE(clen == 56, "connection info of %zu bytes", clen);
    memcpy(info + clen - XFER__TCPSOCK_INFO_SIZE, f->r->h.sock.info,
           XFER__TCPSOCK_INFO_SIZE);
    forged = with_conn(blob, blen, info, clen, &ol);
    XT_STATUS_FATAL(xfer_md_load(f->ini, forged, ol, NULL, 0), XFER_OK);
    hooks_load();
    good_round(f->g, false);
}

/* A WRITE from f->ini to the target whose channel r serves, waited for
 * while serving it; the initiator's QP of the last ask is watched: *rts
 * says whether it was ever seen in RTR or RTS. */
static xfer_status_t write_served(fake_tgt_t *f, uint64_t *took, bool *rts)
{
    xfer_status_t st;
    uint64_t t0 = xt_now_ms(), end = t0 + WAIT_MS;
    xfer_req_t *q;
    unsigned asks = f->r->nreq;

    *rts = false;
    xt_fill(f->lbuf, 4096, xt_seed());
    q = xt_post_to(f->ini, XFER_OP_WRITE, f->lbuf, 4096, (uintptr_t)f->tbuf,
                   f->g->tname, NULL, &st);
    while (st == XFER_IN_PROG && xt_now_ms() < end) {
        xfer__hwctl_progress(&f->r->h, true);
        if (f->r->nreq > asks) {
            int s = fv_qp_state(f->r->last.qp[0].qpn);

            if (s == IBV_QPS_RTR || s == IBV_QPS_RTS)
                *rts = true;
        }
        usleep(200);
        st = xfer_req_status(q);
    }
    *took = xt_now_ms() - t0;
    XT_CHECK(f->r->nreq == asks + 1, "%u asks came for one post",
             f->r->nreq - asks);
    return st;
}

static void test_stale_answer(void)
{
    enum { TMO = 1500 };
    fake_tgt_t f;
    uint64_t canary = xt_seed(), took;
    uint32_t qpn;
    bool rts;
    xfer_status_t st;

    printf("seed %" PRIu64 "\n", canary);
    fake_tgt_setup(&f, TMO);
    xt_fill(f.tbuf, 4096, canary);
    /* No answer at all. */
    f.r->mode = ANS_SILENT;
    st = write_served(&f, &took, &rts);
    XT_STATUS(st, XFER_ERR_TIMEOUT);
    XT_ERR_HAS(PLUGIN ": WRITE to agent '", f.g->tname, "did not complete "
               "within timeout_ms (1500 ms): the peer never answered the "
               "queue-pair handshake");
    printf("  silence: %s (%" PRIu64 " ms)\n", xfer_last_error(), took);
    XT_CHECK(took + 20 >= TMO, "the timeout came after %" PRIu64 " ms",
             took);
    XT_CHECK(!rts && fv_qp_state(f.r->first.qp[0].qpn) == -1, "the first "
             "ask's QP was connected, or outlived its connection (state %d)",
             fv_qp_state(f.r->first.qp[0].qpn));
    good_round(f.g, false);

    /* The answer to the first ask comes late, with one of a generation
     * not yet asked for: neither may configure the QP of the second. */
    f.r->mode = ANS_STALE;
    st = write_served(&f, &took, &rts);
    qpn = f.r->last.qp[0].qpn;
    XT_CHECK(f.r->last.gen != f.r->first.gen && qpn != f.r->first.qp[0].qpn,
             "the second ask reused generation %u or QP %u",
             (unsigned)f.r->last.gen, (unsigned)qpn);
    XT_STATUS(st, XFER_ERR_TIMEOUT);
    XT_ERR_HAS(f.g->tname, "the peer never answered the queue-pair "
               "handshake");
    printf("  stale answers: %s (%" PRIu64 " ms)\n", xfer_last_error(),
           took);
    XT_CHECK(took + 20 >= TMO, "the timeout came after %" PRIu64 " ms",
             took);
    XT_CHECK(!rts, "a stale answer moved the initiator's QP %u to RTR/RTS",
             (unsigned)qpn);
    XT_CHECK(fv_qp_state(qpn) == -1, "the QP of the timed-out ask is still "
             "there (state %d)", fv_qp_state(qpn));
    XT_CHECK(xt_check(f.tbuf, 4096, canary) < 0, "the target's memory "
             "changed");
    good_round(f.g, false);
    good_verify(f.g);
}

/* Answers that refuse, or that cannot be used: the transfer fails at once
 * with REMOTE_DISCONNECT and the reason; the QPs go; the next post asks
 * again. */
static void test_refusing_answers(void)
{
    static const struct {
        int mode;
        const char *why;
    } cases[] = {
        {ANS_NO_ROOM, "made no queue pair for this agent: it has all its "
                      "max_qps in use"},
        {ANS_FAILED, "made no queue pair for this agent: it refused the "
                     "queue pairs (its log says why)"},
        {ANS_RAILS, "answered with 2 rails, 1 asked for"},
        {ANS_ETH, "the peer's rail 0 is Ethernet, fake1 here is InfiniBand"},
        {ANS_NO_ROOM, "it has all its max_qps in use"},
    };
    fake_tgt_t f;
    uint32_t last_gen = 0;

    fake_tgt_setup(&f, 10000);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t took;
        bool rts;
        xfer_status_t st;

        f.r->mode = cases[i].mode;
        st = write_served(&f, &took, &rts);
        XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
        XT_ERR_HAS(PLUGIN ": WRITE to agent '", f.g->tname, cases[i].why);
        printf("  answer %d: %s\n", cases[i].mode, xfer_last_error());
        XT_CHECK(f.r->last.gen != last_gen, "ask %zu reused generation %u",
                 i, (unsigned)last_gen);
        last_gen = f.r->last.gen;
        XT_CHECK(fv_qp_state(f.r->last.qp[0].qpn) == -1, "the QP of a "
                 "refused ask is still there (state %d)",
                 fv_qp_state(f.r->last.qp[0].qpn));
        good_round(f.g, false);
    }
    good_verify(f.g);
}

int main(int argc, char **argv)
{
    static const xt_test_t config[] = {
        XT_TEST(test_bad_config),
        XT_TEST(test_roce),
        XT_TEST(test_forged_info),
        XT_TEST(test_forged_keys),
        XT_END
    };
    static const xt_test_t hostile[] = {
        XT_TEST(test_hostile_handshake),
        XT_TEST(test_flood),
        XT_TEST(test_stale_answer),
        XT_TEST(test_refusing_answers),
        XT_END
    };
    static const xt_suite_t suites[] = {
        { "verbs-input", config },
        { "verbs-hostile", hostile },
    };

    (void)argc;
    signal(SIGPIPE, SIG_IGN);
    if (getenv("abs_top_builddir") == NULL)
        xt_skip("abs_top_builddir is not set (run through make check)");
    /* Every refusal the target logs is looked for: no rate limit. */
    setenv("XFER_LOG_RATE", "0", 0);
    return xt_run(argv[0], suites, sizeof suites / sizeof *suites);
}
