/* test-nsess.c - the notification sessions (plugins/common/nsess.h): the
 * sender's credits and header, the target's table, order, holding, drops. */
#include <endian.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plugins/common/chan.h"
#include "plugins/common/nsess.h"
#include "plugins/common/tcpsock.h"
#include "tests/common/runner.h"

#define WAIT_MS 10000
#define WINDOW 8u
#define MAXD 64

/* ---- a side: a control channel over loopback TCP, both roles ------------ */

/* The target's half is a session table fed by the channel, as a plugin's
 * is; the initiator's half is one sender session taking the target's
 * replies.  Notifications skip the fabric: the test hands the header
 * xfer__ns_hdr_fill made straight to xfer__ns_recv, in any order. */
typedef struct side {
    xfer__tcpsock_t sock;      /* first: the tcpsock hooks take the side */
    xfer_host_t host;
    char name[32];
    xfer__chan_t *ch;
    char log[8192];
    /* target */
    xfer__ns_table_t tab;
    int room;                  /* deliveries notif_room allows; -1: any */
    size_t nd;
    char dfrom[MAXD][32], dmsg[MAXD][32];
    int downs;                 /* target-side connections closed */
    /* initiator */
    xfer__chan_peer_t *to;
    xfer__ns_send_t snd;
    int replies, bad_replies;
    int answers;               /* replies that answer a TREQ */
    unsigned char last_type;   /* of the last reply taken */
    uint64_t lost;
} side_t;

static char last_error[512];

static void host_log(void *ctx, xfer_log_level_t lvl, const char *fmt, ...)
{
    side_t *s = ctx;
    size_t n = strlen(s->log);
    va_list ap;

    (void)lvl;
    if (n + 2 >= sizeof s->log)
        return;
    va_start(ap, fmt);
    vsnprintf(s->log + n, sizeof s->log - n - 1, fmt, ap);
    va_end(ap);
    strcat(s->log, "\n");
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

static int host_room(void *ctx, const char *from, size_t len)
{
    side_t *s = ctx;

    (void)from;
    (void)len;
    return s->room != 0;
}

static void host_deliver(void *ctx, const char *from, const void *msg,
                         size_t len)
{
    side_t *s = ctx;

    if (s->room > 0)
        s->room--;
    if (s->nd < MAXD) {
        snprintf(s->dfrom[s->nd], sizeof s->dfrom[0], "%s", from);
        snprintf(s->dmsg[s->nd], sizeof s->dmsg[0], "%.*s", (int)len,
                 (const char *)msg);
    }
    s->nd++;
}

static void t_recv(void *tctx, xfer__stream_conn_t *c, const void *msg,
                   size_t len)
{
    side_t *s = tctx;
    uint64_t lost;

    if (!xfer__stream_conn_initiator(c)) {
        xfer__ns_target_msg(&s->tab, c, msg, len);
        return;
    }
    if (xfer__ns_send_apply(&s->snd, msg, len, &lost) == XFER_OK) {
        s->replies++;
        s->answers += xfer__ns_is_answer(msg, len);
        s->last_type = *(const unsigned char *)msg;
        s->lost += lost;
    } else {
        s->bad_replies++;
    }
}

static void t_down(void *tctx, xfer__stream_conn_t *c, xfer_status_t st,
                   const char *why)
{
    side_t *s = tctx;

    (void)st;
    (void)why;
    if (!xfer__stream_conn_initiator(c)) {
        xfer__ns_conn_down(&s->tab, c);
        s->downs++;
    }
}

static const xfer__stream_transport_t transport = {
    .info_check = xfer__tcpsock_info_check,
    .connect = xfer__tcpsock_connect,
    .accepted = xfer__tcpsock_accepted,
    .info_str = xfer__tcpsock_info_str,
    .conn_down = t_down,
};

static void side_free(void *arg)
{
    side_t *s = arg;

    xfer__chan_destroy(s->ch);
    xfer__tcpsock_close(&s->sock);
    xfer__ns_fini(&s->tab);
    free(s);
}

static side_t *side_new(const char *name, uint64_t epoch, uint64_t max_sess)
{
    side_t *s = calloc(1, sizeof *s);
    xfer__tcpsock_cfg_t sc;
    xfer__stream_cfg_t cfg;

    XT_REQUIRE(s, "out of memory");
    snprintf(s->name, sizeof s->name, "%s", name);
    s->host.size = sizeof s->host;
    s->host.ctx = s;
    s->host.agent_name = s->name;
    s->host.agent_epoch = epoch;
    s->host.log = host_log;
    s->host.error = host_error;
    s->host.notif_room = host_room;
    s->host.notif_deliver = host_deliver;
    s->room = -1;
    memset(&sc, 0, sizeof sc);
    sc.name = "nsess";
    sc.addr = "127.0.0.1";
    sc.timeout_ms = 10000;
    XT_REQUIRE(xfer__tcpsock_open(&s->sock, &s->host, &sc) == XFER_OK,
               "listen: %s", last_error);
    XT_REQUIRE(xfer__ns_init(&s->tab, &s->host, "nsess", WINDOW, max_sess) ==
               XFER_OK, "xfer__ns_init failed");
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "nsess";
    cfg.timeout_ms = 10000;
    cfg.inline_max = XFER__NS_MSG_MAX;
    cfg.rx_buf = 4096;
    XT_REQUIRE(xfer__chan_create(&s->host, &transport, s, &cfg,
                                 XFER__NS_MSG_MAX, t_recv, s->sock.lfd,
                                 &s->ch) == XFER_OK,
               "xfer__chan_create: %s", last_error);
    xt_defer(side_free, s);
    return s;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Drive both sides until cond holds or WAIT_MS pass. */
#define PUMP_UNTIL(a, b, cond)                                           \
    do {                                                                 \
        uint64_t end_ = now_ms() + WAIT_MS;                              \
        while (!(cond) && now_ms() < end_) {                             \
            xfer__chan_progress((a)->ch);                                \
            xfer__chan_progress((b)->ch);                                \
            usleep(100);                                                 \
        }                                                                \
    } while (0)

/* i asks t for its session (a TREQ), and waits for the TOKEN. */
static void ask(side_t *i, side_t *t)
{
    int r = i->replies;

    if (i->to == NULL)
        XT_REQUIRE(xfer__chan_peer_add(i->ch, t->name, t->host.agent_epoch,
                                       t->sock.info, sizeof t->sock.info,
                                       &i->to) == XFER_OK,
                   "peer_add: %s", last_error);
    XT_REQUIRE(xfer__chan_send(i->ch, i->to, xfer__ns_treq,
                               sizeof xfer__ns_treq) == XFER_OK,
               "send TREQ: %s", last_error);
    PUMP_UNTIL(i, t, i->replies > r);
    XT_REQUIRE(i->replies == r + 1 && i->snd.have_token,
               "'%s' got no TOKEN from '%s' (log: %s)", i->name, t->name,
               t->log);
}

/* Close i's connection to t and wait until t saw it end. */
static void hang_up(side_t *i, side_t *t)
{
    int d = t->downs;

    xfer__chan_peer_remove(i->ch, i->to);
    i->to = NULL;
    PUMP_UNTIL(i, t, t->downs > d);
    XT_REQUIRE(t->downs == d + 1, "'%s' did not see '%s' hang up",
               t->name, i->name);
}

/* A notification from i numbered now, its header kept for later. */
typedef struct note {
    unsigned char hdr[XFER__NS_HDR_LEN];
    char msg[32];
} note_t;

static note_t number(side_t *i, const char *msg)
{
    note_t n;

    snprintf(n.msg, sizeof n.msg, "%s", msg);
    xfer__ns_hdr_fill(&i->snd, n.hdr, strlen(n.msg));
    return n;
}

static void arrive(side_t *t, const note_t *n)
{
    xfer__ns_recv(&t->tab, n->hdr, sizeof n->hdr, n->msg, strlen(n->msg));
}

/* A notification from i arrives at t at once. */
static void notify(side_t *i, side_t *t, const char *msg)
{
    note_t n = number(i, msg);

    arrive(t, &n);
}

/* t delivered exactly these, in this order, from this agent. */
static void check_delivered(side_t *t, const char *from, size_t n,
                            const char *const *want)
{
    XT_CHECK(t->nd == n, "'%s' delivered %zu notifications, want %zu",
             t->name, t->nd, n);
    for (size_t k = 0; k < n && k < t->nd; k++)
        XT_CHECK(strcmp(t->dmsg[k], want[k]) == 0 &&
                     strcmp(t->dfrom[k], from) == 0,
                 "delivery %zu: \"%s\" from '%s', want \"%s\" from '%s'", k,
                 t->dmsg[k], t->dfrom[k], want[k], from);
}

#define DELIVERED(t, from, ...)                                            \
    do {                                                                   \
        static const char *const w_[] = {__VA_ARGS__};                    \
        check_delivered((t), (from), sizeof w_ / sizeof w_[0], w_);        \
    } while (0)

/* ---- the sender alone ------------------------------------------------------ */

static size_t token_msg(unsigned char *m, uint32_t window, unsigned char tok,
                        uint64_t delivered)
{
    uint32_t w = htole32(window);
    uint64_t d = htole64(delivered);

    memset(m, 0, 32);
    m[0] = XFER__NS_TOKEN;
    m[1] = XFER__NS_MSG_VERSION;
    memcpy(m + 4, &w, 4);
    memset(m + 8, tok, XFER__NS_TOKEN_LEN);
    memcpy(m + 24, &d, 8);
    return 32;
}

static size_t ack_msg(unsigned char *m, uint64_t delivered)
{
    uint64_t d = htole64(delivered);

    memset(m, 0, 16);
    m[0] = XFER__NS_ACK;
    m[1] = XFER__NS_MSG_VERSION;
    memcpy(m + 8, &d, 8);
    return 16;
}

static void apply_ok(xfer__ns_send_t *s, const unsigned char *m, size_t len,
                     uint64_t want_lost)
{
    uint64_t lost = 99;

    XT_REQUIRE(xfer__ns_send_apply(s, m, len, &lost) == XFER_OK,
               "a good type %u message of %zu bytes was refused", m[0], len);
    XT_CHECK(lost == want_lost, "lost %llu, want %llu",
             (unsigned long long)lost, (unsigned long long)want_lost);
}

static void number_n(xfer__ns_send_t *s, unsigned n)
{
    unsigned char h[XFER__NS_HDR_LEN];

    for (unsigned k = 0; k < n; k++)
        xfer__ns_hdr_fill(s, h, 1);
}

/* A TOKEN gives the window and where numbering starts; credits come back
 * with ACKs, never past what was sent; nothing goes without a token. */
static void test_send_credits(void)
{
    xfer__ns_send_t s = {0};
    unsigned char m[32];

    XT_CHECK(!xfer__ns_send_can(&s), "a sender without a token may send");
    apply_ok(&s, m, token_msg(m, 4, 0xa1, 0), 0);
    XT_CHECK(s.have_token && s.window == 4 && s.sent == 0 && s.acked == 0,
             "after TOKEN: token %d window %llu sent %llu acked %llu",
             s.have_token, (unsigned long long)s.window,
             (unsigned long long)s.sent, (unsigned long long)s.acked);
    for (unsigned k = 0; k < 4; k++) {
        XT_CHECK(xfer__ns_send_can(&s), "no credit for notification %u", k);
        number_n(&s, 1);
    }
    XT_CHECK(!xfer__ns_send_can(&s), "a fifth notification in a window of 4");
    /* An ACK past what was sent (a confused or hostile target) gives
     * nothing; one behind the last gives nothing back either. */
    apply_ok(&s, m, ack_msg(m, 9), 0);
    XT_CHECK(s.acked == 0 && !xfer__ns_send_can(&s),
             "an ACK of 9 of 4 sent counted: acked %llu",
             (unsigned long long)s.acked);
    apply_ok(&s, m, ack_msg(m, 2), 0);
    XT_CHECK(s.acked == 2 && xfer__ns_send_can(&s), "ACK 2: acked %llu",
             (unsigned long long)s.acked);
    apply_ok(&s, m, ack_msg(m, 1), 0);
    XT_CHECK(s.acked == 2, "an older ACK moved acked to %llu",
             (unsigned long long)s.acked);
    /* The same token again (a reopened connection): numbering goes on,
     * and its count is taken only up to what was sent. */
    apply_ok(&s, m, token_msg(m, 4, 0xa1, 5), 0);
    XT_CHECK(s.sent == 4 && s.acked == 2, "same TOKEN past sent: sent %llu "
             "acked %llu", (unsigned long long)s.sent,
             (unsigned long long)s.acked);
    apply_ok(&s, m, token_msg(m, 4, 0xa1, 3), 0);
    XT_CHECK(s.sent == 4 && s.acked == 3, "same TOKEN: sent %llu acked %llu",
             (unsigned long long)s.sent, (unsigned long long)s.acked);
    /* A window below 2 would stall a sender: taken as 2. */
    apply_ok(&s, m, token_msg(m, 0, 0xa1, 3), 0);
    XT_CHECK(s.window == 2, "window 0 taken as %llu",
             (unsigned long long)s.window);
}

/* Another token is a new session: numbering restarts where the target
 * says, and what the old one never acknowledged is reported lost. */
static void test_send_new_token(void)
{
    xfer__ns_send_t s = {0};
    unsigned char m[32], h[XFER__NS_HDR_LEN];
    uint64_t seq;

    apply_ok(&s, m, token_msg(m, 8, 0x11, 0), 0);
    number_n(&s, 5);
    apply_ok(&s, m, ack_msg(m, 2), 0);
    apply_ok(&s, m, token_msg(m, 8, 0x22, 7), 3);
    XT_CHECK(s.sent == 7 && s.acked == 7 && s.token[0] == 0x22 &&
             s.token[XFER__NS_TOKEN_LEN - 1] == 0x22,
             "new session: sent %llu acked %llu token %02x",
             (unsigned long long)s.sent, (unsigned long long)s.acked,
             s.token[0]);
    xfer__ns_hdr_fill(&s, h, 1);
    memcpy(&seq, h + 24, 8);
    XT_CHECK(le64toh(seq) == 7, "first number of the new session: %llu",
             (unsigned long long)le64toh(seq));
    /* Everything acknowledged: nothing lost. */
    apply_ok(&s, m, ack_msg(m, 8), 0);
    apply_ok(&s, m, token_msg(m, 8, 0x33, 0), 0);
    XT_CHECK(s.sent == 0 && s.acked == 0, "third session: sent %llu",
             (unsigned long long)s.sent);
}

static bool same_send(const xfer__ns_send_t *a, const xfer__ns_send_t *b)
{
    return a->have_token == b->have_token &&
           memcmp(a->token, b->token, XFER__NS_TOKEN_LEN) == 0 &&
           a->sent == b->sent && a->acked == b->acked &&
           a->window == b->window;
}

/* Anything but a well-formed TOKEN or ACK is refused and changes
 * nothing. */
static void test_send_malformed(void)
{
    static const struct { unsigned char type, version; size_t len; } bad[] = {
        {XFER__NS_TOKEN, 1, 0},  {XFER__NS_TOKEN, 1, 1},
        {XFER__NS_TOKEN, 1, 31}, {XFER__NS_TOKEN, 1, 33},
        {XFER__NS_TOKEN, 2, 32}, {XFER__NS_ACK, 1, 15},
        {XFER__NS_ACK, 1, 17},   {XFER__NS_ACK, 0, 16},
        {XFER__NS_TREQ, 1, 2},   {XFER__NS_TREQ, 1, 16},
        {9, 1, 16},              {0, 1, 32},
        {XFER__NS_NOSESS, 1, 1}, {XFER__NS_NOSESS, 1, 3},
        {XFER__NS_NOSESS, 2, 2},
    };
    xfer__ns_send_t s = {0}, before;
    unsigned char m[40], good[32];

    apply_ok(&s, good, token_msg(good, 8, 0x44, 0), 0);
    number_n(&s, 3);
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        uint64_t lost = 99;
        xfer_status_t st;

        memset(m, 0, sizeof m);
        token_msg(m, 2, 0x55, 1);
        if (bad[k].type == XFER__NS_ACK)
            ack_msg(m, 1);
        m[0] = bad[k].type;
        m[1] = bad[k].version;
        before = s;
        st = xfer__ns_send_apply(&s, m, bad[k].len, &lost);
        XT_CHECK(st == XFER_ERR_INVALID, "type %u version %u, %zu bytes: "
                 "status %d", bad[k].type, bad[k].version, bad[k].len,
                 (int)st);
        XT_CHECK(same_send(&before, &s) && lost == 0,
                 "type %u version %u, %zu bytes changed the session",
                 bad[k].type, bad[k].version, bad[k].len);
    }
}

/* NOSESS is taken and changes nothing; it and a TOKEN answer a TREQ, an
 * ACK (which may have been on its way since before the ask) does not. */
static void test_send_nosess(void)
{
    static const unsigned char no[2] = {XFER__NS_NOSESS, 1};
    xfer__ns_send_t s = {0}, before;
    unsigned char m[40];
    uint64_t lost = 99;

    before = s;
    XT_CHECK(xfer__ns_send_apply(&s, no, sizeof no, &lost) == XFER_OK,
             "NOSESS refused");
    XT_CHECK(same_send(&before, &s) && lost == 0 && !s.have_token,
             "NOSESS without a session changed it");
    apply_ok(&s, m, token_msg(m, 8, 0x44, 0), 0);
    number_n(&s, 3);
    before = s;
    XT_CHECK(xfer__ns_send_apply(&s, no, sizeof no, &lost) == XFER_OK,
             "NOSESS refused with a session");
    XT_CHECK(same_send(&before, &s) && lost == 0,
             "NOSESS changed a session that has a token");
    XT_CHECK(xfer__ns_is_answer(no, sizeof no), "NOSESS is no answer");
    XT_CHECK(xfer__ns_is_answer(m, token_msg(m, 8, 0x44, 0)),
             "a TOKEN is no answer");
    XT_CHECK(!xfer__ns_is_answer(m, ack_msg(m, 1)), "an ACK is an answer");
}

/* The header, byte for byte (docs/wire-ucx.md). */
static void test_hdr_fill(void)
{
    xfer__ns_send_t s = {0};
    unsigned char m[32], h[XFER__NS_HDR_LEN], want[XFER__NS_HDR_LEN] = {
        0x58, 1, 0, 0, 0x34, 0x12, 0, 0,
        0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77,
        0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77,
        0x05, 0x01, 0, 0, 0, 0, 0, 0,
    };

    XT_CHECK(sizeof xfer__ns_treq == 2 && xfer__ns_treq[0] == 1 &&
             xfer__ns_treq[1] == 1, "TREQ is %02x %02x", xfer__ns_treq[0],
             xfer__ns_treq[1]);
    apply_ok(&s, m, token_msg(m, 4096, 0x77, 0x105), 0);
    memset(h, 0xee, sizeof h);
    xfer__ns_hdr_fill(&s, h, 0x1234);
    for (size_t k = 0; k < sizeof h; k++)
        XT_CHECK(h[k] == want[k], "header byte %zu is %02x, want %02x", k,
                 h[k], want[k]);
    XT_CHECK(s.sent == 0x106, "sent %llu after one",
             (unsigned long long)s.sent);
}

/* ---- the target, through a real channel --------------------------------- */

/* A TREQ gets a TOKEN with the window; asked again (a reopened
 * connection), the same session. */
static void test_token_round_trip(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    unsigned char tok[XFER__NS_TOKEN_LEN];

    ask(a, t);
    XT_CHECK(a->snd.window == WINDOW && a->snd.sent == 0 &&
             a->snd.acked == 0 && a->lost == 0 && a->bad_replies == 0,
             "TOKEN: window %llu sent %llu acked %llu",
             (unsigned long long)a->snd.window,
             (unsigned long long)a->snd.sent,
             (unsigned long long)a->snd.acked);
    XT_CHECK(xfer__ns_count(&t->tab) == 1, "%llu sessions",
             (unsigned long long)xfer__ns_count(&t->tab));
    memcpy(tok, a->snd.token, sizeof tok);
    notify(a, t, "one");
    hang_up(a, t);
    ask(a, t);
    XT_CHECK(memcmp(tok, a->snd.token, sizeof tok) == 0 && a->lost == 0 &&
             a->snd.sent == 1 && a->snd.acked == 1,
             "asked again: another token, or sent %llu acked %llu",
             (unsigned long long)a->snd.sent,
             (unsigned long long)a->snd.acked);
    XT_CHECK(xfer__ns_count(&t->tab) == 1, "%llu sessions",
             (unsigned long long)xfer__ns_count(&t->tab));
    notify(a, t, "two");
    DELIVERED(t, "alpha", "one", "two");
}

/* What the target takes on its channel is a TREQ and nothing else. */
static void test_target_bad_request(void)
{
    static const unsigned char bad[][3] = {{1, 2}, {2, 1}, {1, 1, 0}};
    static const size_t len[] = {2, 2, 3};
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);

    XT_REQUIRE(xfer__chan_peer_add(a->ch, t->name, 5, t->sock.info,
                                   sizeof t->sock.info, &a->to) == XFER_OK,
               "peer_add: %s", last_error);
    for (size_t k = 0; k < 3; k++) {
        t->log[0] = '\0';
        XT_REQUIRE(xfer__chan_send(a->ch, a->to, bad[k], len[k]) == XFER_OK,
                   "send: %s", last_error);
        PUMP_UNTIL(a, t, strstr(t->log, "token request"));
        XT_CHECK(strstr(t->log, "agent 'alpha' sent a control message of") &&
                     strstr(t->log, "not a version 1 token request or "
                                    "skip; ignored"),
                 "message %zu: log \"%s\"", k, t->log);
    }
    XT_CHECK(xfer__ns_count(&t->tab) == 0 && a->replies == 0,
             "a bad request made %llu sessions, %d replies",
             (unsigned long long)xfer__ns_count(&t->tab), a->replies);
}

/* In order: delivered at once, with the session's name. */
static void test_in_order(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);

    ask(a, t);
    notify(a, t, "n0");
    notify(a, t, "n1");
    notify(a, t, "");
    notify(a, t, "n3");
    DELIVERED(t, "alpha", "n0", "n1", "", "n3");
    XT_CHECK(atomic_load(&t->tab.recv) == 4 &&
             atomic_load(&t->tab.dropped) == 0, "recv %lu dropped %lu",
             atomic_load(&t->tab.recv), atomic_load(&t->tab.dropped));
}

/* Out of order: held until the gap fills, then all in order. */
static void test_out_of_order(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    note_t n[4];

    ask(a, t);
    for (int k = 0; k < 4; k++) {
        char m[8];

        snprintf(m, sizeof m, "m%d", k);
        n[k] = number(a, m);
    }
    arrive(t, &n[2]);
    arrive(t, &n[1]);
    arrive(t, &n[3]);
    XT_CHECK(t->nd == 0, "%zu delivered before the first arrived", t->nd);
    arrive(t, &n[0]);
    DELIVERED(t, "alpha", "m0", "m1", "m2", "m3");
    /* held_any is a hint that progress clears: nothing is left for it. */
    XT_CHECK(xfer__ns_progress(&t->tab) == 0 &&
                 !atomic_load(&t->tab.held_any) &&
                 atomic_load(&t->tab.dropped) == 0,
             "dropped %lu, held_any %d", atomic_load(&t->tab.dropped),
             (int)atomic_load(&t->tab.held_any));
}

/* A copy of one delivered or held, and one past the window, are dropped,
 * counted and logged; the session goes on. */
static void test_duplicate_and_window(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    note_t n0, n2, far, before;

    ask(a, t);
    n0 = number(a, "d0");
    arrive(t, &n0);
    arrive(t, &n0);
    XT_CHECK(atomic_load(&t->tab.dropped) == 1 &&
                 strstr(t->log, "dropped notification 0 from agent 'alpha': "
                                "outside its window [1, +8) or a duplicate"),
             "a delivered copy: dropped %lu, log \"%s\"",
             atomic_load(&t->tab.dropped), t->log);
    number(a, "d1"); /* lost on the way, for now */
    n2 = number(a, "d2");
    arrive(t, &n2);
    arrive(t, &n2);
    XT_CHECK(atomic_load(&t->tab.dropped) == 2, "a held copy: dropped %lu",
             atomic_load(&t->tab.dropped));
    /* 1 + 8 is the first number past the window; 1 + 7 the last in it. */
    a->snd.sent = 9;
    far = number(a, "far");
    arrive(t, &far);
    XT_CHECK(atomic_load(&t->tab.dropped) == 3 &&
                 strstr(t->log, "dropped notification 9 from agent 'alpha': "
                                "outside its window [1, +8)"),
             "past the window: dropped %lu, log \"%s\"",
             atomic_load(&t->tab.dropped), t->log);
    a->snd.sent = 8;
    far = number(a, "d8");
    arrive(t, &far);
    XT_CHECK(atomic_load(&t->tab.dropped) == 3, "the window's last number "
             "was dropped");
    a->snd.sent = 1;
    before = number(a, "d1");
    arrive(t, &before);
    DELIVERED(t, "alpha", "d0", "d1", "d2");
    XT_CHECK(atomic_load(&t->tab.recv) == 3, "recv %lu",
             atomic_load(&t->tab.recv));
}

/* Headers that are not a notification's, a token of no session, a length
 * that disagrees: dropped, counted, logged, and the session untouched. */
static void test_bad_headers(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    static unsigned char big[XFER_NOTIF_MAX + 1];
    unsigned char h[XFER__NS_HDR_LEN + 1];
    unsigned long d = 0;
    uint32_t l;

    ask(a, t);
    /* Numbered as 0 each time: what is refused must not count. */
#define DROPPED(what, phrase, ...)                                         \
    do {                                                                   \
        a->snd.sent = 0;                                                   \
        xfer__ns_hdr_fill(&a->snd, h, 2);                                  \
        t->log[0] = '\0';                                                  \
        __VA_ARGS__;                                                       \
        d++;                                                               \
        XT_CHECK(atomic_load(&t->tab.dropped) == d &&                      \
                     strstr(t->log, phrase) && t->nd == 0,                 \
                 "%s: dropped %lu, delivered %zu, log \"%s\"", what,       \
                 atomic_load(&t->tab.dropped), t->nd, t->log);             \
    } while (0)
    DROPPED("31-byte header", "dropped a message with a 31-byte header that "
            "is not an xfer notification",
            xfer__ns_recv(&t->tab, h, 31, "hi", 2));
    DROPPED("33-byte header", "with a 33-byte header",
            xfer__ns_recv(&t->tab, h, 33, "hi", 2));
    DROPPED("magic", "not an xfer notification",
            h[0] = 0x59; xfer__ns_recv(&t->tab, h, 32, "hi", 2));
    DROPPED("version", "not an xfer notification",
            h[1] = 2; xfer__ns_recv(&t->tab, h, 32, "hi", 2));
    DROPPED("length", "dropped a notification of 3 bytes whose header says 2",
            xfer__ns_recv(&t->tab, h, 32, "hi!", 3));
    DROPPED("too long", "whose header says 65537",
            l = htole32(XFER_NOTIF_MAX + 1); memcpy(h + 4, &l, 4);
            xfer__ns_recv(&t->tab, h, 32, big, sizeof big));
    DROPPED("forged token", "carrying a token of no session",
            h[8] ^= 1; xfer__ns_recv(&t->tab, h, 32, "hi", 2));
#undef DROPPED
    a->snd.sent = 0;
    notify(a, t, "ok");
    DELIVERED(t, "alpha", "ok");
}

/* Anyone who reaches a fabric endpoint can send junk: every drop is
 * counted, but the log takes the first 64 and then only the 128th,
 * 256th, 512th ... */
static void test_drop_log_bound(void)
{
    side_t *t = side_new("target", 5, 16);
    unsigned char h[XFER__NS_HDR_LEN];
    unsigned lines = 0;

    memset(h, 0, sizeof h);
    for (int i = 0; i < 1000; i++)
        xfer__ns_recv(&t->tab, h, sizeof h, "hi", 2);
    for (const char *p = t->log; (p = strstr(p, "not an xfer notification"));
         p++)
        lines++;
    XT_CHECK(atomic_load(&t->tab.dropped) == 1000, "dropped %lu of 1000",
             atomic_load(&t->tab.dropped));
    XT_CHECK(lines == 64 + 3, "%u log lines for 1000 drops, want 67 (64, "
             "then the 128th, 256th and 512th)", lines);
}

/* No room in the core's queue: held, and delivered in order by progress
 * as room comes, a little at a time. */
static void test_room(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    note_t n[4];

    ask(a, t);
    t->room = 0;
    for (int k = 0; k < 4; k++) {
        char m[8];

        snprintf(m, sizeof m, "r%d", k);
        n[k] = number(a, m);
    }
    arrive(t, &n[0]);
    arrive(t, &n[2]);
    arrive(t, &n[1]);
    XT_CHECK(t->nd == 0 && atomic_load(&t->tab.held_any),
             "without room: %zu delivered, held_any %d", t->nd,
             (int)atomic_load(&t->tab.held_any));
    XT_CHECK(xfer__ns_progress(&t->tab) == 0 && t->nd == 0,
             "progress delivered without room");
    t->room = 2;
    XT_CHECK(xfer__ns_progress(&t->tab) == 2, "progress with room for 2");
    DELIVERED(t, "alpha", "r0", "r1");
    XT_CHECK(atomic_load(&t->tab.held_any), "r2 is still held");
    /* Room again: r3's arrival hands the held r2 over first. */
    t->room = -1;
    arrive(t, &n[3]);
    DELIVERED(t, "alpha", "r0", "r1", "r2", "r3");
    XT_CHECK(xfer__ns_progress(&t->tab) == 0 &&
                 !atomic_load(&t->tab.held_any) &&
                 atomic_load(&t->tab.dropped) == 0,
             "after all: held_any %d dropped %lu",
             (int)atomic_load(&t->tab.held_any),
             atomic_load(&t->tab.dropped));
}

/* ACKs go once half a window is delivered, and give the sender its
 * credits back. */
static void test_acks(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    note_t n[WINDOW];

    ask(a, t);
    for (unsigned k = 0; k < WINDOW; k++) {
        XT_REQUIRE(xfer__ns_send_can(&a->snd), "no credit for %u", k);
        n[k] = number(a, "x");
    }
    XT_CHECK(!xfer__ns_send_can(&a->snd), "credit past the window");
    XT_CHECK(xfer__ns_acks(&t->tab) == 0, "an ACK before any delivery");
    for (unsigned k = 0; k < WINDOW / 2 - 1; k++)
        arrive(t, &n[k]);
    XT_CHECK(xfer__ns_acks(&t->tab) == 0, "an ACK of %u in a window of %u",
             WINDOW / 2 - 1, WINDOW);
    arrive(t, &n[WINDOW / 2 - 1]);
    XT_CHECK(xfer__ns_acks(&t->tab) == 1, "no ACK at half a window");
    XT_CHECK(xfer__ns_acks(&t->tab) == 0, "an ACK again with none due");
    PUMP_UNTIL(a, t, a->snd.acked == WINDOW / 2);
    XT_CHECK(a->snd.acked == WINDOW / 2 && xfer__ns_send_can(&a->snd),
             "after the ACK: acked %llu", (unsigned long long)a->snd.acked);
    for (unsigned k = WINDOW / 2; k < WINDOW; k++)
        arrive(t, &n[k]);
    XT_CHECK(xfer__ns_acks(&t->tab) == 1, "no second ACK");
    PUMP_UNTIL(a, t, a->snd.acked == WINDOW);
    XT_CHECK(a->snd.acked == WINDOW && a->bad_replies == 0,
             "after the second ACK: acked %llu",
             (unsigned long long)a->snd.acked);
    /* Without a connection nothing is sent, and none is owed later. */
    hang_up(a, t);
    notify(a, t, "x");
    notify(a, t, "x");
    notify(a, t, "x");
    notify(a, t, "x");
    XT_CHECK(xfer__ns_acks(&t->tab) == 0, "an ACK without a connection");
    XT_CHECK(t->nd == WINDOW + 4, "%zu delivered", t->nd);
}

/* At most max_sess sessions: past it the least recently used one without
 * a connection goes; with every one connected, the request is refused,
 * and answered all the same (NOSESS: the initiator hears the target). */
static void test_max_sess(void)
{
    side_t *t = side_new("target", 5, 2), *a = side_new("alpha", 1, 2),
           *b = side_new("bravo", 1, 2), *c = side_new("charlie", 1, 2);
    note_t a1, b1;

    ask(a, t);
    ask(b, t);
    /* charlie: both sessions have their connections. */
    XT_REQUIRE(xfer__chan_peer_add(c->ch, t->name, 5, t->sock.info,
                                   sizeof t->sock.info, &c->to) == XFER_OK,
               "peer_add: %s", last_error);
    XT_REQUIRE(xfer__chan_send(c->ch, c->to, xfer__ns_treq,
                               sizeof xfer__ns_treq) == XFER_OK, "send");
    PUMP_UNTIL(c, t, c->replies > 0);
    XT_CHECK(strstr(t->log, "agent 'charlie' asked for a notification "
                            "session, but 2 are open, each with a "
                            "connection"), "log: \"%s\"", t->log);
    XT_CHECK(xfer__ns_count(&t->tab) == 2 && !c->snd.have_token,
             "%llu sessions, charlie has a token %d",
             (unsigned long long)xfer__ns_count(&t->tab),
             (int)c->snd.have_token);
    XT_CHECK(c->replies == 1 && c->answers == 1 && c->bad_replies == 0 &&
                 c->last_type == XFER__NS_NOSESS,
             "charlie's TREQ: %d replies (%d answers, %d bad), last type %u",
             c->replies, c->answers, c->bad_replies, c->last_type);
    /* Both hang up; alpha's session, created first, is used since. */
    notify(a, t, "a0");
    a1 = number(a, "a1");
    b1 = number(b, "b0");
    hang_up(a, t);
    hang_up(b, t);
    ask(c, t);
    XT_CHECK(xfer__ns_count(&t->tab) == 2, "%llu sessions",
             (unsigned long long)xfer__ns_count(&t->tab));
    arrive(t, &b1);
    arrive(t, &a1);
    notify(c, t, "c0");
    XT_CHECK(t->nd == 3 && strcmp(t->dmsg[1], "a1") == 0 &&
                 strcmp(t->dfrom[2], "charlie") == 0,
             "bravo's session was not the one to go: %zu delivered", t->nd);
    XT_CHECK(atomic_load(&t->tab.dropped) == 1 &&
                 strstr(t->log, "token of no session"),
             "bravo's notification: dropped %lu",
             atomic_load(&t->tab.dropped));
    /* bravo asks again: alpha's is now the one without a connection. */
    ask(b, t);
    XT_CHECK(xfer__ns_count(&t->tab) == 2 && b->lost == 1,
             "%llu sessions, bravo lost %llu",
             (unsigned long long)xfer__ns_count(&t->tab),
             (unsigned long long)b->lost);
    notify(b, t, "b-new");
    a1 = number(a, "a2");
    arrive(t, &a1);
    XT_CHECK(t->nd == 4 && strcmp(t->dmsg[3], "b-new") == 0 &&
                 atomic_load(&t->tab.dropped) == 2,
             "after bravo's return: %zu delivered, %lu dropped", t->nd,
             atomic_load(&t->tab.dropped));
}

/* A new epoch of a name ends the old session: its token is dead, the new
 * one numbers from 0. */
static void test_new_epoch(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16),
           *a2 = side_new("alpha", 2, 16);
    note_t old;

    ask(a, t);
    notify(a, t, "life 1");
    old = number(a, "late");
    ask(a2, t);
    XT_CHECK(memcmp(a->snd.token, a2->snd.token, XFER__NS_TOKEN_LEN) != 0 &&
                 a2->snd.sent == 0,
             "the new life got the old token, or starts at %llu",
             (unsigned long long)a2->snd.sent);
    XT_CHECK(xfer__ns_count(&t->tab) == 1 &&
                 strstr(t->log, "agent 'alpha' restarted (epoch 2): its "
                                "earlier notification session ends"),
             "%llu sessions, log \"%s\"",
             (unsigned long long)xfer__ns_count(&t->tab), t->log);
    arrive(t, &old);
    notify(a2, t, "life 2");
    DELIVERED(t, "alpha", "life 1", "life 2");
    XT_CHECK(atomic_load(&t->tab.dropped) == 1, "the old life's: dropped "
             "%lu", atomic_load(&t->tab.dropped));
}

/* i tells t (over the channel) that numbers below i's next will not
 * come, and waits until t's log says it took it or, for one it must
 * ignore, until that sentence shows. */
static void skip(side_t *i, side_t *t, uint64_t from, const char *until)
{
    unsigned char m[XFER__NS_SKIP_LEN];

    t->log[0] = '\0';
    xfer__ns_skip_msg(&i->snd, from, m);
    XT_CHECK(m[0] == XFER__NS_SKIP && m[1] == XFER__NS_MSG_VERSION,
             "SKIP type %u version %u", m[0], m[1]);
    XT_REQUIRE(xfer__chan_send(i->ch, i->to, m, sizeof m) == XFER_OK,
               "send SKIP: %s", last_error);
    PUMP_UNTIL(i, t, strstr(t->log, until));
    XT_REQUIRE(strstr(t->log, until) != NULL, "no \"%s\" in the log: %s",
               until, t->log);
}

/* Numbers lost on the fabric (their sends failed with the connection):
 * without a SKIP every later one would be held for them for good; with
 * it what is held goes in order, the holes are passed, and the sender's
 * credits come back for them. */
static void test_skip(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    note_t n[6];

    ask(a, t);
    for (int k = 0; k < 4; k++) {
        char m[8];

        snprintf(m, sizeof m, "s%d", k);
        n[k] = number(a, m);
    }
    /* s1 and s3 are lost; s2 came and is held behind the hole; s0 went
     * but is not read yet (below the range: still waited for). */
    arrive(t, &n[2]);
    skip(a, t, 1, "notifications 1 to 3, where they have not come");
    XT_CHECK(t->nd == 0, "%zu delivered before s0, which went", t->nd);
    arrive(t, &n[0]);
    DELIVERED(t, "alpha", "s0", "s2");
    XT_CHECK(!atomic_load(&t->tab.held_any) || xfer__ns_progress(&t->tab) ==
             0, "something is still held");
    /* The next number is delivered at once, and a late copy of a lost
     * one is dropped as old. */
    n[4] = number(a, "s4");
    arrive(t, &n[4]);
    DELIVERED(t, "alpha", "s0", "s2", "s4");
    arrive(t, &n[3]);
    XT_CHECK(atomic_load(&t->tab.dropped) == 1, "late s3: dropped %lu",
             atomic_load(&t->tab.dropped));
    /* The skipped numbers count as taken: the ACK gives their credits. */
    XT_CHECK(xfer__ns_acks(&t->tab) == 1, "no ACK after the skip");
    PUMP_UNTIL(a, t, a->snd.acked == 5);
    XT_CHECK(a->snd.acked == 5, "acked %llu after the skip",
             (unsigned long long)a->snd.acked);
    /* Nothing to skip: a SKIP of what was all taken changes nothing. */
    skip(a, t, 5, "");
    n[5] = number(a, "s5");
    arrive(t, &n[5]);
    DELIVERED(t, "alpha", "s0", "s2", "s4", "s5");
}

/* A SKIP waits for room like any delivery: what is held before the hole
 * goes first, in order, once the core takes it. */
static void test_skip_room(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16);
    note_t n[3];

    ask(a, t);
    t->room = 0;
    n[0] = number(a, "h0");
    n[1] = number(a, "h1"); /* lost */
    n[2] = number(a, "h2");
    arrive(t, &n[0]);
    arrive(t, &n[2]);
    skip(a, t, 1, "notifications 1 to 2");
    XT_CHECK(t->nd == 0, "delivered without room");
    t->room = -1;
    XT_CHECK(xfer__ns_progress(&t->tab) == 2, "progress with room");
    DELIVERED(t, "alpha", "h0", "h2");
}

/* A SKIP past what the sender could have sent (its window), or from an
 * agent without a session, moves nothing. */
static void test_skip_refused(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16),
           *b = side_new("bravo", 1, 16);
    unsigned char m[XFER__NS_SKIP_LEN];
    note_t n;

    ask(a, t);
    a->snd.sent = WINDOW + 1; /* a lie: more than the window out */
    skip(a, t, 0, "past its window");
    a->snd.sent = 0;
    n = number(a, "ok");
    arrive(t, &n);
    DELIVERED(t, "alpha", "ok");
    /* bravo never asked for a session: nothing to move, nothing made. */
    XT_REQUIRE(xfer__chan_peer_add(b->ch, t->name, t->host.agent_epoch,
                                   t->sock.info, sizeof t->sock.info,
                                   &b->to) == XFER_OK,
               "peer_add: %s", last_error);
    b->snd.sent = 3;
    xfer__ns_skip_msg(&b->snd, 0, m);
    XT_REQUIRE(xfer__chan_send(b->ch, b->to, m, sizeof m) == XFER_OK,
               "send: %s", last_error);
    PUMP_UNTIL(b, t, strstr(t->log, "'bravo' connected"));
    for (int k = 0; k < 50; k++) {
        xfer__chan_progress(b->ch);
        xfer__chan_progress(t->ch);
        usleep(200);
    }
    XT_CHECK(xfer__ns_count(&t->tab) == 1, "%llu sessions after bravo's "
             "SKIP", (unsigned long long)xfer__ns_count(&t->tab));
}

/* Where the fabric names the sender (a verbs queue pair), a notification
 * carrying another agent's token is dropped, counted and logged; one
 * with its own is delivered. */
static void test_recv_from(void)
{
    side_t *t = side_new("target", 5, 16), *a = side_new("alpha", 1, 16),
           *b = side_new("bravo", 1, 16);
    note_t n;

    ask(a, t);
    ask(b, t);
    n = number(a, "mine");
    t->log[0] = '\0';
    xfer__ns_recv_from(&t->tab, "bravo", n.hdr, sizeof n.hdr, n.msg,
                       strlen(n.msg));
    XT_CHECK(t->nd == 0 && atomic_load(&t->tab.dropped) == 1,
             "alpha's token on bravo's path: %zu delivered, %lu dropped",
             t->nd, atomic_load(&t->tab.dropped));
    XT_CHECK(strstr(t->log, "agent 'alpha''s token that came from agent "
                            "'bravo'") != NULL, "log: %s", t->log);
    xfer__ns_recv_from(&t->tab, "alpha", n.hdr, sizeof n.hdr, n.msg,
                       strlen(n.msg));
    DELIVERED(t, "alpha", "mine");
}

static const xt_test_t send_tests[] = {
    XT_TEST(test_send_credits),
    XT_TEST(test_send_new_token),
    XT_TEST(test_send_malformed),
    XT_TEST(test_hdr_fill),
    XT_TEST(test_send_nosess),
    XT_END,
};

static const xt_test_t target_tests[] = {
    XT_TEST(test_token_round_trip),
    XT_TEST(test_target_bad_request),
    XT_TEST(test_in_order),
    XT_TEST(test_out_of_order),
    XT_TEST(test_duplicate_and_window),
    XT_TEST(test_bad_headers),
    XT_TEST(test_drop_log_bound),
    XT_TEST(test_room),
    XT_TEST(test_acks),
    XT_TEST(test_max_sess),
    XT_TEST(test_new_epoch),
    XT_TEST(test_skip),
    XT_TEST(test_skip_room),
    XT_TEST(test_skip_refused),
    XT_TEST(test_recv_from),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        {"nsess-sender", send_tests},
        {"nsess-target", target_tests},
    };

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    return xt_run("test-nsess", suites, 2);
}
