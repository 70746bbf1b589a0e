/* test-hwctl.c - the control channel of hardware plugins (plugins/common/
 * hwctl.h) over loopback: token asks, credits, death, failed asks. */
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "plugins/common/hwctl.h"
#include "tests/common/runner.h"

#define WAIT_MS 10000
#define WINDOW 8u

/* ---- a side: an instance's channel and session table, as a plugin's ---- */

typedef struct side {
    xfer_host_t host;
    char name[32];
    int epfd;
    xfer__hwctl_t h;
    xfer__ns_table_t ns;
    bool closed;
    char log[4096];
} side_t;

/* A plugin's peer: the session with the target, and what the callbacks
 * were told. */
typedef struct peer {
    xfer__hwctl_peer_t ctl;
    side_t *side;              /* whose peer it is */
    char name[32];
    atomic_bool dead;
    xfer__ns_send_t snd;
    int credits, bad_credits, deaths;
    xfer_status_t death_st;
    char death_why[256];
} peer_t;

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

static bool c_dead(void *peer)
{
    return atomic_load(&((peer_t *)peer)->dead);
}

static bool c_waiting(void *peer)
{
    (void)peer;
    return false;
}

static xfer_status_t c_credit(void *peer, const void *msg, size_t len,
                              uint64_t *lost)
{
    peer_t *p = peer;
    xfer_status_t st = xfer__ns_send_apply(&p->snd, msg, len, lost);

    if (st == XFER_OK)
        p->credits++;
    else
        p->bad_credits++;
    return st;
}

static void c_death(void *peer, xfer_status_t st, const char *why)
{
    peer_t *p = peer;

    p->deaths++;
    p->death_st = st;
    snprintf(p->death_why, sizeof p->death_why, "%s", why);
    atomic_store(&p->dead, true);
}

static const xfer__hwctl_ops_t ops = {
    .dead = c_dead,
    .waiting = c_waiting,
    .on_credit = c_credit,
    .on_death = c_death,
};

static void side_close(side_t *s)
{
    if (s->closed)
        return;
    s->closed = true;
    xfer__hwctl_close(&s->h);
}

static void side_free(void *arg)
{
    side_t *s = arg;

    side_close(s);
    xfer__ns_fini(&s->ns);
    if (s->epfd >= 0)
        close(s->epfd);
    free(s);
}

static side_t *side_new(const char *name, uint64_t epoch)
{
    side_t *s = calloc(1, sizeof *s);
    xfer__hwctl_cfg_t cfg;

    XT_REQUIRE(s, "out of memory");
    snprintf(s->name, sizeof s->name, "%s", name);
    s->host.size = sizeof s->host;
    s->host.ctx = s;
    s->host.agent_name = s->name;
    s->host.agent_epoch = epoch;
    s->host.log = host_log;
    s->host.error = host_error;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    xfer__hwctl_init(&s->h);
    xt_defer(side_free, s);
    XT_REQUIRE(s->epfd >= 0, "epoll_create1 failed");
    XT_REQUIRE(xfer__ns_init(&s->ns, &s->host, "hw", WINDOW, 16) == XFER_OK,
               "xfer__ns_init failed");
    memset(&cfg, 0, sizeof cfg);
    cfg.addr = "127.0.0.1";
    cfg.timeout_ms = 10000;
    XT_REQUIRE(xfer__hwctl_open(&s->h, &s->host, "hw", &cfg, &ops, &s->ns,
                                s->epfd, 0xffffu) == XFER_OK,
               "xfer__hwctl_open: %s", last_error);
    return s;
}

/* Removed before it goes, as the core removes a plugin's peers before
 * fini: the channel's teardown calls back for no freed peer. */
static void peer_free(void *arg)
{
    peer_t *p = arg;

    if (!p->side->closed)
        xfer__hwctl_peer_remove(&p->side->h, &p->ctl);
    free(p);
}

/* A peer of side a for side t, at the tcp address info (24 bytes). */
static peer_t *peer_at(side_t *a, side_t *t, const uint8_t *info)
{
    peer_t *p = calloc(1, sizeof *p);

    XT_REQUIRE(p, "out of memory");
    p->side = a;
    xt_defer(peer_free, p);
    snprintf(p->name, sizeof p->name, "%s", t->name);
    p->snd.window = WINDOW;
    XT_REQUIRE(xfer__hwctl_peer_add(&a->h, &p->ctl, p, p->name,
                                    t->host.agent_epoch, info,
                                    XFER__TCPSOCK_INFO_SIZE) == XFER_OK,
               "peer_add: %s", last_error);
    return p;
}

static peer_t *peer_new(side_t *a, side_t *t)
{
    return peer_at(a, t, t->h.sock.info);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Progress both sides (t may be closed) until cond holds or WAIT_MS. */
#define PUMP_UNTIL(a, t, cond)                                           \
    do {                                                                 \
        uint64_t end_ = now_ms() + WAIT_MS;                              \
        while (!(cond) && now_ms() < end_) {                             \
            xfer__hwctl_progress(&(a)->h, true);                         \
            if (!(t)->closed)                                            \
                xfer__hwctl_progress(&(t)->h, true);                     \
            usleep(100);                                                 \
        }                                                                \
    } while (0)

/* ---- tests ---------------------------------------------------------------- */

/* The first start asks for the token; it arrives through on_credit, and
 * the connection counts as up. */
static void test_token(void)
{
    side_t *t = side_new("target", 5), *a = side_new("alpha", 1);
    peer_t *p = peer_new(a, t);

    XT_CHECK(!atomic_load(&p->ctl.chan_started), "started before a start");
    xfer__hwctl_start(&a->h, &p->ctl);
    XT_CHECK(atomic_load(&p->ctl.chan_started), "no ask after a start");
    PUMP_UNTIL(a, t, p->credits == 1);
    XT_CHECK(p->credits == 1 && p->bad_credits == 0 && p->snd.have_token &&
                 p->snd.window == WINDOW,
             "credits %d bad %d token %d window %llu (target log: %s)",
             p->credits, p->bad_credits, (int)p->snd.have_token,
             (unsigned long long)p->snd.window, t->log);
    XT_CHECK(atomic_load(&p->ctl.chan_connected), "not connected");
    XT_CHECK(xfer__ns_count(&t->ns) == 1, "%llu sessions at the target",
             (unsigned long long)xfer__ns_count(&t->ns));
    XT_CHECK(p->deaths == 0 && !xfer__hwctl_due(&a->h),
             "deaths %d, or asks or acks still due", p->deaths);
}

/* The target goes away: its connection breaking is the peer's death,
 * with the reason. */
static void test_death(void)
{
    side_t *t = side_new("target", 5), *a = side_new("alpha", 1);
    peer_t *p = peer_new(a, t);

    xfer__hwctl_start(&a->h, &p->ctl);
    PUMP_UNTIL(a, t, p->credits == 1);
    XT_REQUIRE(p->credits == 1, "no token (target log: %s)", t->log);
    side_close(t);
    PUMP_UNTIL(a, t, p->deaths > 0);
    XT_CHECK(p->deaths == 1 && p->death_st == XFER_ERR_REMOTE_DISCONNECT,
             "deaths %d, status %d", p->deaths, (int)p->death_st);
    XT_CHECK(strncmp(p->death_why, "its control connection closed: ",
                     31) == 0, "why: \"%s\"", p->death_why);
    XT_CHECK(!atomic_load(&p->ctl.chan_connected) &&
                 !atomic_load(&p->ctl.chan_started),
             "still connected or started after the death");
}

/* An ask that cannot be sent stays wanted, for notifications waiting on
 * its token would wait for good; once the peer is dead it is dropped.
 * The address is IPv4's broadcast one, which a TCP connect refuses at
 * once (ENETUNREACH), so the send itself fails. */
static void test_failed_ask(void)
{
    side_t *t = side_new("target", 5), *a = side_new("alpha", 1);
    uint8_t info[XFER__TCPSOCK_INFO_SIZE];
    peer_t *p;

    memcpy(info, t->h.sock.info, sizeof info);
    XT_REQUIRE(info[5] == 4, "the target listens on IPv%u", info[5]);
    memset(info + 8, 0xff, 4);
    p = peer_at(a, t, info);
    xfer__hwctl_want_ask(&a->h, &p->ctl);
    XT_CHECK(xfer__hwctl_due(&a->h), "a wanted ask is not due");
    for (int k = 0; k < 3; k++) {
        last_error[0] = '\0';
        xfer__hwctl_progress(&a->h, false);
        XT_CHECK(strstr(last_error, "cannot connect to agent 'target'") &&
                     !atomic_load(&p->ctl.chan_started),
                 "ask %d: the send did not fail (\"%s\")", k, last_error);
        XT_CHECK(atomic_load(&p->ctl.want_ask) && xfer__hwctl_due(&a->h),
                 "ask %d: the ask that failed was forgotten", k);
    }
    XT_CHECK(p->deaths == 0, "a failed ask killed the peer");
    atomic_store(&p->dead, true);
    xfer__hwctl_progress(&a->h, false);
    XT_CHECK(!atomic_load(&p->ctl.want_ask) && !xfer__hwctl_due(&a->h),
             "an ask for a dead peer is still due");
}

/* A removed peer is off the list and asks nothing. */
static void test_remove(void)
{
    side_t *t = side_new("target", 5), *a = side_new("alpha", 1);
    peer_t *p = peer_new(a, t);

    XT_CHECK(a->h.peers == &p->ctl && p->ctl.peer == p, "not on the list");
    xfer__hwctl_peer_remove(&a->h, &p->ctl);
    XT_CHECK(a->h.peers == NULL && p->ctl.cp == NULL, "still listed");
    XT_CHECK(xfer__hwctl_peer_connect(&a->h, &p->ctl) ==
                 XFER_ERR_REMOTE_DISCONNECT,
             "connect to a removed peer");
    xfer__hwctl_want_ask(&a->h, &p->ctl);
    xfer__hwctl_progress(&a->h, false);
    XT_CHECK(!xfer__hwctl_due(&a->h) && !atomic_load(&p->ctl.chan_started),
             "a removed peer was asked");
}

static const xt_test_t tests[] = {
    XT_TEST(test_token),
    XT_TEST(test_death),
    XT_TEST(test_failed_ask),
    XT_TEST(test_remove),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {{"hwctl", tests}};

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    return xt_run("test-hwctl", suites, 1);
}
