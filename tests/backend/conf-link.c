/* conf-link.c - the conformance suite's link cut: a target process across
 * a link that is cut mid-transfer (XT_LINK_CUT, XT_LINK_RESTORE: shell
 * commands, set by conformance-netns.sh).  In-flight requests and later
 * posts end within the bound, another peer of the same agent (not behind
 * the link) keeps working, and after the link returns and the peer's
 * metadata is reloaded, data and notifications flow again.
 *
 * The bound: the initiator runs with timeout_ms=TMO (2 s: a second of no
 * progress is not rare on a loaded test machine);
 * every request to the cut peer must end, with XFER_ERR_TIMEOUT or
 * XFER_ERR_REMOTE_DISCONNECT, within BOUND = 3 * TMO + 1 s of the later of
 * its post and the start of the cut command (the slack is for a loaded
 * machine: the backends answer after about TMO, docs/api.md).  After the
 * link returns and the peer is reloaded, the first WRITE may be retried
 * (new requests) within WAIT_MS while a provider's own connection comes
 * back; the tries and the time are printed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/backend/conformance.h"

extern char **environ;

enum {
    TMO = 2000,                   /* the initiator's timeout_ms */
    BOUND = 3 * TMO + 1000,       /* what a request to the cut peer takes */
    BIG = 64u << 20,              /* the large transfer cut mid-flight */
    NEAR = 65536,                 /* the other peer's buffer */
    TRIES = 5,                    /* cuts tried until one lands mid-flight */
    STREAM = 16,                  /* small WRITEs in flight at once */
    SMALL = 4096,                 /* ... of this size */
    WARM_ROUNDS = 3               /* stream rounds before the cut starts */
};

/* A target across the link (far: in XT_CHILD_NETNS) and one that is not
 * (near: in this namespace), and one initiator agent that talks to both. */
typedef struct link {
    xc_child_t far, near;
    xfer_agent_t *ini;
    unsigned char *buf, *nbuf;    /* for the far and the near peer */
    bool cut;
    uint64_t cut_ms;              /* when the cut command started */
    pid_t cutter;                 /* link_cut_async's, until reaped */
} link_t;

/* The test's link_t: static, since the cleanup that restores the link
 * runs after a failed test's frame is gone. */
static link_t the_link;
static char link_spec[512];      /* xc_spec with timeout_ms=TMO */

/* Run one of the script's commands; the test cannot go on without it. */
static void link_run(const char *var)
{
    const char *cmd = getenv(var);
    int st;

    XT_REQUIRE(cmd != NULL && cmd[0] != '\0', "%s is not set", var);
    fflush(NULL);
    st = system(cmd);
    XT_REQUIRE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
               "%s (\"%s\") failed with status 0x%x", var, cmd, st);
}

static void link_cut(link_t *l)
{
    l->cut_ms = xt_now_ms();
    l->cut = true;
    link_run("XT_LINK_CUT");
}

static void link_restore(link_t *l)
{
    if (!l->cut)
        return;
    l->cut = false;
    link_run("XT_LINK_RESTORE");
}

/* After the test, failed or not: the next test needs the link. */
static void link_restore_late(void *arg)
{
    link_t *l = arg;

    if (l->cutter > 0)
        waitpid(l->cutter, NULL, 0); /* restore after the cut, not before */
    l->cutter = 0;
    if (l->cut) {
        l->cut = false;
        if (system(getenv("XT_LINK_RESTORE")) != 0)
            fprintf(stderr, "link: XT_LINK_RESTORE failed\n");
    }
}

/* The cut as a child process, so that transfers go on while it lands
 * (l->cutter). */
static void link_cut_async(link_t *l)
{
    const char *cmd = getenv("XT_LINK_CUT");
    char *argv[] = { "sh", "-c", (char *)cmd, NULL };
    pid_t pid;
    int err;

    XT_REQUIRE(cmd != NULL, "XT_LINK_CUT is not set");
    fflush(NULL);
    l->cut_ms = xt_now_ms();
    l->cut = true;
    err = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ);
    XT_REQUIRE(err == 0, "posix_spawn(/bin/sh): %s", strerror(err));
    l->cutter = pid;
}

/* Whether the async cut finished (it must have succeeded). */
static bool link_cut_done(link_t *l)
{
    int st = 0;
    pid_t r;

    if (l->cutter <= 0)
        return true;
    r = waitpid(l->cutter, &st, WNOHANG);
    if (r == 0)
        return false;
    l->cutter = 0;
    XT_REQUIRE(r > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
               "XT_LINK_CUT failed with status 0x%x", st);
    return true;
}

static link_t *link_setup(size_t size)
{
    link_t *l = &the_link;
    xfer_req_t *warm;

    memset(l, 0, sizeof(*l));
    if (link_spec[0] == '\0')
        snprintf(link_spec, sizeof(link_spec), "%s%ctimeout_ms=%u", xc_spec,
                 strchr(xc_spec, ':') ? ',' : ':', (unsigned)TMO);
    /* The targets keep the default timeout_ms: the bound under test is
     * the initiator's, and a target that closed a handshake the loaded
     * machine left waiting a second would fail the test for nothing. */
    xc_child_start(&l->far, size + NEAR); /* + link_recover's room */
    xc_child_start_in(&l->near, NEAR, "");
    l->ini = xt_agent(xt_name("lini"), link_spec, 1);
    l->buf = xt_alloc(size);
    l->nbuf = xt_alloc(NEAR);
    xt_register(l->ini, l->buf, size);
    xt_register(l->ini, l->nbuf, NEAR);
    xc_child_load(l->ini, &l->far);
    xc_child_load(l->ini, &l->near);
    /* Both connected and working before the cut. */
    warm = xc_child_req(l->ini, &l->far, XFER_OP_WRITE, l->buf, 0, 64);
    XT_STATUS_FATAL(xt_post_wait(warm, NULL, 0, WAIT_MS), XFER_OK);
    warm = xc_child_req(l->ini, &l->near, XFER_OP_WRITE, l->nbuf, 0, 64);
    XT_STATUS_FATAL(xt_post_wait(warm, NULL, 0, WAIT_MS), XFER_OK);
    /* Registered after the agent: runs before the agent is destroyed. */
    xt_defer(link_restore_late, l);
    return l;
}

/* Whether s is a failure a request to the cut peer may end with: the
 * two of the promise, and for the repost of a request whose last post
 * failed, XFER_ERR_BUSY (ucx with error_mode=none, ofi: "the request can
 * be posted again once the provider has answered for its operations",
 * docs/api.md). */
static bool link_failure(xfer_status_t s, bool repost)
{
    return s == XFER_ERR_TIMEOUT || s == XFER_ERR_REMOTE_DISCONNECT ||
           (repost && s == XFER_ERR_BUSY);
}

/* A request to the cut peer ended as promised: a failure, with its
 * sentence, within BOUND of `from`. */
static void link_check_failed_as(link_t *l, xfer_status_t s, uint64_t from,
                                 const char *what, bool repost)
{
    uint64_t took = xt_now_ms() - from;
    const char *why = xfer_last_error();

    XT_CHECK(s != XFER_IN_PROG, "%s: still in flight %" PRIu64 " ms after "
             "the cut (bound %u ms, timeout_ms=%u)", what, took,
             (unsigned)BOUND, (unsigned)TMO);
    XT_CHECK(link_failure(s, repost), "%s ended with %s (%s), not "
             "XFER_ERR_TIMEOUT or XFER_ERR_REMOTE_DISCONNECT%s", what,
             xt_status_name(s), why, repost ? " (or BUSY)" : "");
    XT_CHECK(took < BOUND, "%s took %" PRIu64 " ms to end, bound %u ms "
             "(timeout_ms=%u)", what, took, (unsigned)BOUND, (unsigned)TMO);
    /* The sentence says which peer. */
    if (s == XFER_ERR_TIMEOUT || s == XFER_ERR_REMOTE_DISCONNECT)
        XT_ERR_HAS(l->far.name);
    printf("  %s: %s after %" PRIu64 " ms: %s\n", what, xt_status_name(s),
           took, why);
}

static void link_check_failed(link_t *l, xfer_status_t s, uint64_t from,
                              const char *what)
{
    link_check_failed_as(l, s, from, what, false);
}

/* Post req (a fresh one, or one that ended) while the link is cut: it
 * fails within the bound of its post, at once or after waiting. */
static void link_post_fails(link_t *l, xfer_req_t *req, const char *notif,
                            const char *what, bool repost)
{
    uint64_t t0 = xt_now_ms();
    xfer_status_t s = xfer_req_post(req, notif, notif ? strlen(notif) : 0);

    if (s == XFER_IN_PROG)
        s = xfer_req_wait(req, BOUND + 6000);
    link_check_failed_as(l, s, t0, what, repost);
}

/* The near peer works during the cut: a WRITE with a notification, its
 * bytes, and a READ. */
static void link_near_works(link_t *l)
{
    uint64_t seed = xt_seed(), seed2 = xt_seed();
    xfer_req_t *w, *r;
    char *reply, want[128];

    XT_REQUIRE(l->cut, "the near peer is checked while the link is cut");
    xt_fill(l->nbuf, NEAR, seed);
    w = xc_child_req(l->ini, &l->near, XFER_OP_WRITE, l->nbuf, 0, NEAR);
    XT_STATUS(xt_post_wait(w, "near", 4, WAIT_MS), XFER_OK);
    reply = xc_child_cmd(&l->near, "check 0 %u %" PRIu64, (unsigned)NEAR,
                         seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "the other peer, during the cut: "
             "WRITE data %s", reply);
    reply = xc_child_cmd(&l->near, "notifs 1 %u", WAIT_MS);
    snprintf(want, sizeof(want), "%s:near;", xfer_agent_name(l->ini));
    XT_CHECK(strcmp(reply, want) == 0, "the other peer, during the cut, got "
             "\"%s\", want \"%s\"", reply, want);
    reply = xc_child_cmd(&l->near, "fill 0 %u %" PRIu64, (unsigned)NEAR,
                         seed2);
    XT_REQUIRE(strcmp(reply, "ok") == 0, "fill: %s", reply);
    r = xc_child_req(l->ini, &l->near, XFER_OP_READ, l->nbuf, 0, NEAR);
    XT_STATUS(xt_post_wait(r, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(l->nbuf, NEAR, seed2, 0, "READ from the other peer during "
                  "the cut");
}

/* Forget the far peer and load its blob again: what a user does once it
 * learns the peer is reachable again. */
static void link_reload(link_t *l)
{
    XT_STATUS_FATAL(xfer_md_invalidate(l->ini, l->far.name), XFER_OK);
    xc_child_load(l->ini, &l->far);
}

/* Restore the link, reload the far peer's metadata (forget it, load its
 * blob again: what a user does once it learns the peer is reachable
 * again) and move data both ways with a notification.  Returns the far
 * peer's notifications since it was last asked, which end with "back". */
static char *link_recover(link_t *l)
{
    uint64_t seed = xt_seed(), seed2 = xt_seed(), end, t0;
    xfer_status_t s;
    int tries;
    xfer_req_t *w, *r;
    char *reply, want[128];
    size_t rl, wl;
    static char got[65536];

    link_restore(l);
    link_reload(l);
    /* nbuf: the failed requests' buffer may still be the provider's. */
    xt_fill(l->nbuf, NEAR, seed);
    /* The first transfer may still fail while the provider's own
     * connection comes back (its TCP retransmission backoff, not ours):
     * new requests until one succeeds, within WAIT_MS, and say how long
     * it took. */
    t0 = xt_now_ms();
    for (tries = 1;; tries++) {
        w = xc_child_req(l->ini, &l->far, XFER_OP_WRITE, l->nbuf, 5, NEAR);
        s = xt_post_wait(w, "back", 4, WAIT_MS);
        if (s == XFER_OK || xt_now_ms() - t0 > WAIT_MS ||
            !link_failure(s, false))
            break;
        printf("  after the link returned, WRITE try %d: %s (%s)\n", tries,
               xt_status_name(s), xfer_last_error());
    }
    XT_STATUS(s, XFER_OK);
    printf("  after the link returned: WRITE %s at try %d, %" PRIu64
           " ms after the reload\n", xt_status_name(s), tries,
           xt_now_ms() - t0);
    reply = xc_child_cmd(&l->far, "check 5 %u %" PRIu64, (unsigned)NEAR,
                         seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "after the link returned: WRITE data "
             "%s", reply);
    reply = xc_child_cmd(&l->far, "fill 9 %u %" PRIu64, (unsigned)NEAR,
                         seed2);
    XT_REQUIRE(strcmp(reply, "ok") == 0, "fill: %s", reply);
    r = xc_child_req(l->ini, &l->far, XFER_OP_READ, l->nbuf, 9, NEAR);
    XT_STATUS(xt_post_wait(r, NULL, 0, WAIT_MS), XFER_OK);
    CHECK_PATTERN(l->nbuf, NEAR, seed2, 0, "READ after the link returned");
    /* Everything it got, until "back" (the last one sent) is there. */
    snprintf(want, sizeof(want), "%s:back;", xfer_agent_name(l->ini));
    wl = strlen(want);
    got[0] = '\0';
    end = xt_now_ms() + WAIT_MS;
    do {
        reply = xc_child_cmd(&l->far, "notifs 1 %u", 1000u);
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s", reply);
        rl = strlen(got);
    } while ((rl < wl || strcmp(got + rl - wl, want) != 0) &&
             xt_now_ms() < end);
    XT_CHECK(rl >= wl && strcmp(got + rl - wl, want) == 0,
             "after the link returned, the peer's notifications end with "
             "\"%s\", want \"%s\"", got + (rl > 200 ? rl - 200 : 0), want);
    return got;
}

/* Cut the link with a request of op (l->buf <-> the far peer's buffer, BIG
 * bytes) in flight: tries until the cut lands while it is still in
 * flight (a transfer that ended before the cut command ran proves
 * nothing; the link is then restored, the peer reloaded, since even a
 * short cut may have cost its connections, and a new request tried),
 * then checks it ends within the bound. */
static void link_cut_midflight(link_t *l, xfer_op_t op, const char *what)
{
    xfer_req_t *req;
    xfer_status_t s;
    int tries;

    for (tries = 1;; tries++) {
        req = xc_child_req(l->ini, &l->far, op, l->buf, 0, BIG);
        s = xfer_req_post(req, NULL, 0);
        XT_REQUIRE(s == XFER_IN_PROG || s == XFER_OK, "%s posted with %s "
                   "(%s)", what, xt_status_name(s), xfer_last_error());
        link_cut(l);
        if (s == XFER_IN_PROG)
            s = xfer_req_status(req);
        if (s == XFER_IN_PROG)
            break;
        XT_REQUIRE(s == XFER_OK, "%s ended with %s before the cut took "
                   "effect (%s)", what, xt_status_name(s), xfer_last_error());
        link_restore(l);
        XT_REQUIRE(tries < TRIES, "%s finished before the cut command "
                   "returned, %d times", what, tries);
        link_reload(l);
    }
    printf("  %s in flight at the cut (try %d)\n", what, tries);
    s = xfer_req_wait(req, BOUND + 6000);
    link_check_failed(l, s, l->cut_ms, what);
}

/* A 64 MiB WRITE in flight when the link is cut. */
static void test_link_cut_write(void)
{
    link_t *l;
    xfer_req_t *later;

    l = link_setup(BIG);
    xt_fill(l->buf, BIG, xt_seed());
    link_cut_midflight(l, XFER_OP_WRITE, "64 MiB WRITE");
    later = xc_child_req(l->ini, &l->far, XFER_OP_WRITE, l->buf, 0, SMALL);
    link_post_fails(l, later, "late", "a WRITE posted after it failed",
                    false);
    link_near_works(l);
    link_recover(l);
    xc_child_stop(&l->near);
    xc_child_stop(&l->far);
}

/* A 64 MiB READ in flight when the link is cut. */
static void test_link_cut_read(void)
{
    link_t *l;
    xfer_req_t *later;
    char *reply;

    l = link_setup(BIG);
    reply = xc_child_cmd(&l->far, "fill 0 %u %" PRIu64, (unsigned)BIG,
                         xt_seed());
    XT_REQUIRE(strcmp(reply, "ok") == 0, "fill: %s", reply);
    link_cut_midflight(l, XFER_OP_READ, "64 MiB READ");
    later = xc_child_req(l->ini, &l->far, XFER_OP_READ, l->buf, 0, SMALL);
    link_post_fails(l, later, NULL, "a READ posted after it failed",
                    false);
    link_near_works(l);
    link_recover(l);
    xc_child_stop(&l->near);
    xc_child_stop(&l->far);
}

/* The link is cut while nothing is in flight: new posts (WRITE, READ,
 * with and without a notification) fail within the bound, each time. */
static void test_link_post_while_cut(void)
{
    link_t *l;
    xfer_req_t *w, *r;

    l = link_setup(NEAR);
    w = xc_child_req(l->ini, &l->far, XFER_OP_WRITE, l->buf, 0, SMALL);
    r = xc_child_req(l->ini, &l->far, XFER_OP_READ, l->buf, SMALL, SMALL);
    link_cut(l);
    link_post_fails(l, w, "cut", "a WRITE posted after the cut", false);
    link_post_fails(l, r, NULL, "a READ posted after the cut", false);
    /* Again: a backend that reconnects must not hang on the new
     * connection either. */
    link_post_fails(l, w, NULL, "the WRITE posted again", true);
    link_near_works(l);
    link_recover(l);
    xc_child_stop(&l->near);
    xc_child_stop(&l->far);
}

/* Index of tag "s<round>.<k>" in post order, or -1. */
static long stream_index(const char *tag)
{
    unsigned round, k;
    int used = 0;

    if (sscanf(tag, "s%u.%u%n", &round, &k, &used) != 2 ||
        tag[used] != '\0' || k >= STREAM)
        return -1;
    return (long)round * STREAM + k;
}

/* A stream of small WRITEs with notifications, rounds of STREAM in
 * flight at once, cut while it runs (the cut command runs beside it).
 * Each ends within the bound; the peer got each notification at most
 * once and in order, and the one of every WRITE that answered XFER_OK;
 * after recovery a new stream's notifications all arrive. */
static void test_link_cut_notif_stream(void)
{
    link_t *l;
    xfer_req_t *q[STREAM];
    xfer_status_t st[STREAM];
    uint64_t posted[STREAM], seed = xt_seed();
    bool failed_k[STREAM] = { false };
    unsigned round, after = 0, failed = 0, ok = 0, k;
    char tag[32], *got, *p, want[4096], *reply;
    const char *me;
    long last = -1, *okv = NULL, *gotv = NULL;
    size_t meln, nok = 0, capok = 0, ngot = 0;

    l = link_setup(STREAM * SMALL);
    xt_fill(l->buf, STREAM * SMALL, seed);
    for (k = 0; k < STREAM; k++)
        q[k] = xc_child_req(l->ini, &l->far, XFER_OP_WRITE, l->buf + k * SMALL,
                            k * SMALL, SMALL);
    for (round = 0; round < 100000; round++) {
        bool was_cut = round > WARM_ROUNDS && link_cut_done(l);

        if (round == WARM_ROUNDS)
            link_cut_async(l);
        /* While the cut lands, a round every millisecond or so: enough to
         * be in flight, few enough notifications for the peer's list. */
        if (round > WARM_ROUNDS && !was_cut)
            xt_sleep_ms(1);
        for (k = 0; k < STREAM; k++) {
            snprintf(tag, sizeof(tag), "s%u.%u", round, k);
            posted[k] = xt_now_ms();
            st[k] = xfer_req_post(q[k], tag, strlen(tag));
        }
        for (k = 0; k < STREAM; k++) {
            uint64_t from;

            if (st[k] == XFER_IN_PROG)
                st[k] = xfer_req_wait(q[k], BOUND + 6000);
            if (st[k] == XFER_OK) {
                XT_CHECK(!was_cut, "WRITE s%u.%u, posted after the cut had "
                         "taken effect, answered XFER_OK", round, k);
                ok++;
                /* Its notification must be at the peer: recorded. */
                if (nok == capok) {
                    capok = capok ? 2 * capok : 256;
                    okv = realloc(okv, capok * sizeof(*okv));
                    XT_REQUIRE(okv != NULL, "out of memory");
                }
                okv[nok++] = (long)round * STREAM + k;
                continue;
            }
            XT_REQUIRE(round >= WARM_ROUNDS, "WRITE s%u.%u failed before "
                       "the cut: %s (%s)", round, k, xt_status_name(st[k]),
                       xfer_last_error());
            from = posted[k] > l->cut_ms ? posted[k] : l->cut_ms;
            snprintf(tag, sizeof(tag), "WRITE s%u.%u", round, k);
            if (failed++ < 2 || st[k] == XFER_IN_PROG)
                link_check_failed_as(l, st[k], from, tag, failed_k[k]);
            else
                XT_CHECK(link_failure(st[k], failed_k[k]) &&
                         xt_now_ms() - from < BOUND, "%s ended with %s after "
                         "%" PRIu64 " ms (bound %u)", tag,
                         xt_status_name(st[k]), xt_now_ms() - from,
                         (unsigned)BOUND);
            failed_k[k] = true;
        }
        /* Done after a whole round posted once the cut had taken effect. */
        if (was_cut && ++after == 2)
            break;
    }
    printf("  %u WRITEs ended XFER_OK, %u failed, in %u rounds of %u\n", ok,
           failed, round + 1, (unsigned)STREAM);
    XT_CHECK(failed >= STREAM, "only %u WRITEs failed after the cut", failed);
    link_near_works(l);

    /* Recovery, and what the far peer got: each tag once, in order. */
    got = link_recover(l);
    me = xfer_agent_name(l->ini);
    meln = strlen(me);
    xt_defer_late(free, okv);
    gotv = calloc(strlen(got) / 2 + 1, sizeof(*gotv));
    XT_REQUIRE(gotv != NULL, "out of memory");
    xt_defer_late(free, gotv);
    {
        size_t j = 0;

        for (p = got; *p != '\0';) {
            char *semi = strchr(p, ';');
            long idx;

            XT_REQUIRE(semi != NULL, "notifications \"%s\" not ;-terminated",
                       p);
            *semi = '\0';
            XT_CHECK(strncmp(p, me, meln) == 0 && p[meln] == ':',
                     "notification \"%s\" not from %s", p, me);
            if (strcmp(p + meln + 1, "back") == 0) {
                p = semi + 1;
                continue;
            }
            idx = stream_index(p + meln + 1);
            XT_CHECK(idx >= 0, "unexpected notification \"%s\"", p);
            XT_CHECK(idx > last, "notification \"%s\" out of order or "
                     "repeated (after index %ld)", p, last);
            if (idx > last)
                gotv[ngot++] = idx;
            last = idx;
            p = semi + 1;
        }
        /* Every WRITE that answered XFER_OK delivered its notification
         * (after its data): both lists ascend. */
        for (size_t i = 0; i < nok; i++) {
            while (j < ngot && gotv[j] < okv[i])
                j++;
            XT_CHECK(j < ngot && gotv[j] == okv[i], "WRITE s%ld.%ld answered "
                     "XFER_OK but its notification never arrived",
                     okv[i] / STREAM, okv[i] % STREAM);
        }
    }

    /* And a new stream after recovery: every notification, in order. */
    want[0] = '\0';
    for (k = 0; k < STREAM; k++) {
        q[k] = xc_child_req(l->ini, &l->far, XFER_OP_WRITE, l->buf + k * SMALL,
                            k * SMALL, SMALL);
        snprintf(tag, sizeof(tag), "r%u", k);
        XT_STATUS(xt_post_wait(q[k], tag, strlen(tag), WAIT_MS), XFER_OK);
        snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s:%s;",
                 me, tag);
    }
    reply = xc_child_cmd(&l->far, "check 0 %u %" PRIu64,
                         (unsigned)(STREAM * SMALL), seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "the new stream's data: %s", reply);
    reply = xc_child_cmd(&l->far, "notifs %u %u", (unsigned)STREAM, WAIT_MS);
    XT_CHECK(strcmp(reply, want) == 0, "after recovery the peer got \"%s\", "
             "want \"%s\"", reply, want);
    xc_child_stop(&l->near);
    xc_child_stop(&l->far);
}

const xt_test_t xc_link_tests[] = {
    XT_TEST(test_link_cut_write),
    XT_TEST(test_link_cut_read),
    XT_TEST(test_link_post_while_cut),
    XT_TEST(test_link_cut_notif_stream),
    XT_END
};
