/* conf-faults.c - the conformance suites with a real peer process: data
 * and notifications across processes, a peer killed mid-stream, a peer
 * stopped (alive, connected, silent) and the bounds that end each. */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/backend/conformance.h"

static void test_proc_write_read_notif(void)
{
    const size_t n = (2u << 20) + 3;
    xc_child_t c;
    xfer_agent_t *ini;
    unsigned char *buf;
    xfer_req_t *w, *r;
    uint64_t seed = xt_seed(), seed2 = xt_seed();
    char *reply, want[512];

    xc_child_start(&c, n + 100);
    ini = xt_agent(xt_name("pini"), xc_spec, 1);
    buf = xt_alloc(n);
    xt_register(ini, buf, n);
    XT_STATUS_FATAL(xfer_md_load(ini, c.blob, c.len, NULL, 0), XFER_OK);

    xt_fill(buf, n, seed);
    w = xc_child_req(ini, &c, XFER_OP_WRITE, buf, 7, n);
    XT_STATUS_FATAL(xt_post_wait(w, "wrote", 5, WAIT_MS), XFER_OK);
    reply = xc_child_cmd(&c, "check 7 %zu %" PRIu64, n, seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "target process: WRITE data %s", reply);

    reply = xc_child_cmd(&c, "fill 11 %zu %" PRIu64, n - 100, seed2);
    XT_REQUIRE(strcmp(reply, "ok") == 0, "fill: %s", reply);
    r = xc_child_req(ini, &c, XFER_OP_READ, buf, 11, n - 100);
    XT_STATUS_FATAL(xt_post_wait(r, "read", 4, WAIT_MS), XFER_OK);
    CHECK_PATTERN(buf, n - 100, seed2, 0, "READ from another process");

    for (int i = 0; i < 20; i++) {
        char m[16];

        snprintf(m, sizeof(m), "p%d", i);
        XT_STATUS(xfer_notif_send(ini, c.name, m, strlen(m), NULL), XFER_OK);
    }
    reply = xc_child_cmd(&c, "notifs 22 %u", WAIT_MS);
    snprintf(want, sizeof(want), "%s:wrote;%s:read;", xfer_agent_name(ini),
             xfer_agent_name(ini));
    for (int i = 0; i < 20; i++) {
        size_t used = strlen(want);

        snprintf(want + used, sizeof(want) - used, "%s:p%d;",
                 xfer_agent_name(ini), i);
    }
    XT_CHECK(strcmp(reply, want) == 0, "target process got \"%s\", want "
             "\"%s\"", reply, want);
    xc_child_stop(&c);
}

static void test_proc_kill_midstream(void)
{
    const size_t big = 64u << 20, small = 65536;
    xc_child_t victim, other;
    xfer_agent_t *ini;
    unsigned char *buf;
    xfer_req_t *w, *w2;
    xfer_status_t s = XFER_OK;
    uint64_t start, seed = xt_seed();
    int posts = 0;
    char *reply;

    xc_child_start(&victim, big);
    xc_child_start(&other, small);
    ini = xt_agent(xt_name("pini"), xc_spec, 1);
    buf = xt_alloc(big);
    xt_register(ini, buf, big);
    XT_STATUS_FATAL(xfer_md_load(ini, victim.blob, victim.len, NULL, 0),
                    XFER_OK);
    XT_STATUS_FATAL(xfer_md_load(ini, other.blob, other.len, NULL, 0),
                    XFER_OK);
    xt_fill(buf, big, seed);
    w = xc_child_req(ini, &victim, XFER_OP_WRITE, buf, 0, big);
    w2 = xc_child_req(ini, &other, XFER_OP_WRITE, buf, 0, small);
    XT_STATUS_FATAL(xt_post_wait(w, NULL, 0, WAIT_MS), XFER_OK);

    /* Kill it with a 64 MiB WRITE on the wire; repost until the loss is
     * seen (a post may finish before the kill lands). */
    s = xfer_req_post(w, NULL, 0);
    kill(victim.pid, SIGKILL);
    start = xt_now_ms();
    for (;;) {
        posts++;
        if (s == XFER_IN_PROG)
            s = xt_wait_req(w, WAIT_MS);
        if (s != XFER_OK || xt_now_ms() - start > WAIT_MS)
            break;
        s = xfer_req_post(w, NULL, 0);
    }
    XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);
    XT_CHECK(xt_now_ms() - start < WAIT_MS, "peer death took %" PRIu64
             " ms to notice", xt_now_ms() - start);
    waitpid(victim.pid, NULL, 0);
    xt_child_forget(victim.pid);
    /* It stays failed. */
    s = xfer_req_post(w, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(w, WAIT_MS);
    XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);

    /* The other process is unaffected. */
    XT_STATUS(xt_post_wait(w2, NULL, 0, WAIT_MS), XFER_OK);
    reply = xc_child_cmd(&other, "check 0 %zu %" PRIu64, small, seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "surviving target: %s", reply);
    xc_child_stop(&other);
}

/* A target that stops answering (SIGSTOP: alive, connected, silent) must
 * end a transfer within the backend's bound: XFER_ERR_TIMEOUT, or XFER_OK
 * when the backend moved the data without the target's help (then the
 * data must be there).  Run for backends that declare timeout_ms. */
static void test_proc_stall_timeout(void)
{
    const size_t big = 64u << 20, small = 65536;
    const unsigned timeout = 1000, bound = 3 * timeout + 1000;
    xc_child_t victim, other;
    xfer_agent_t *ini;
    unsigned char *buf;
    xfer_req_t *w, *w2;
    xfer_status_t s;
    uint64_t start, took, seed = xt_seed();
    char ispec[256], *reply;

    xc_child_start(&victim, big);
    xc_child_start(&other, small);
    snprintf(ispec, sizeof(ispec), "%s%ctimeout_ms=%u", xc_spec,
             strchr(xc_spec, ':') ? ',' : ':', timeout);
    ini = xt_agent(xt_name("sini"), ispec, 1);
    buf = xt_alloc(big);
    xt_register(ini, buf, big);
    XT_STATUS_FATAL(xfer_md_load(ini, victim.blob, victim.len, NULL, 0),
                    XFER_OK);
    XT_STATUS_FATAL(xfer_md_load(ini, other.blob, other.len, NULL, 0),
                    XFER_OK);
    w = xc_child_req(ini, &victim, XFER_OP_WRITE, buf, 0, big);
    w2 = xc_child_req(ini, &other, XFER_OP_WRITE, buf, 0, small);
    /* Connected and working before it goes silent. */
    XT_STATUS_FATAL(xt_post_wait(w, NULL, 0, WAIT_MS), XFER_OK);

    xt_fill(buf, big, seed);
    kill(victim.pid, SIGSTOP);
    start = xt_now_ms();
    s = xfer_req_post(w, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(w, bound + 6000);
    took = xt_now_ms() - start;
    XT_CHECK(s == XFER_ERR_TIMEOUT || s == XFER_OK,
             "stalled WRITE ended with %s (%s)", xt_status_name(s),
             xfer_last_error());
    XT_CHECK(took < bound, "stalled WRITE took %" PRIu64 " ms to end, "
             "bound %u ms (timeout_ms=%u)", took, bound, timeout);
    if (s == XFER_ERR_TIMEOUT)
        XT_CHECK(took + 100 >= timeout, "timed out after %" PRIu64 " ms, "
                 "before timeout_ms=%u", took, timeout);

    /* The other target is unaffected. */
    XT_STATUS(xt_post_wait(w2, NULL, 0, WAIT_MS), XFER_OK);
    reply = xc_child_cmd(&other, "check 0 %zu %" PRIu64, small, seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "surviving target: %s", reply);
    xc_child_stop(&other);

    kill(victim.pid, SIGCONT);
    if (s == XFER_OK) {
        reply = xc_child_cmd(&victim, "check 0 %zu %" PRIu64, big, seed);
        XT_CHECK(strcmp(reply, "ok") == 0, "stalled target: %s", reply);
    }
    kill(victim.pid, SIGKILL);
    waitpid(victim.pid, NULL, 0);
    xt_child_forget(victim.pid);
}

/* A target process, connected and then stopped (SIGSTOP: alive,
 * connected, silent), and an initiator that reached it once.  The
 * stalled request is a fresh one: a backend may let the target check a
 * request's first post (uds) and move later ones without it. */
typedef struct stopped {
    xc_child_t c;
    xfer_agent_t *ini;
    unsigned char *buf;
} stopped_t;

static void stopped_start(stopped_t *st, size_t size)
{
    xfer_req_t *warm;

    xc_child_start(&st->c, size);
    st->ini = xt_agent(xt_name("wini"), xc_spec, 1);
    st->buf = xt_alloc(size);
    xt_register(st->ini, st->buf, size);
    XT_STATUS_FATAL(xfer_md_load(st->ini, st->c.blob, st->c.len, NULL, 0),
                    XFER_OK);
    warm = xc_child_req(st->ini, &st->c, XFER_OP_WRITE, st->buf, 0, 64);
    XT_STATUS_FATAL(xt_post_wait(warm, NULL, 0, WAIT_MS), XFER_OK);
    XT_REQUIRE(kill(st->c.pid, SIGSTOP) == 0, "SIGSTOP: %s",
               strerror(errno));
    /* kill() only queues the signal: wait until it has stopped. */
    {
        int status = 0;

        XT_REQUIRE(waitpid(st->c.pid, &status, WUNTRACED) == st->c.pid &&
                   WIFSTOPPED(status), "target process did not stop "
                   "(status 0x%x)", status);
    }
}

/* xfer_req_wait on a WRITE to a stopped target answers XFER_IN_PROG
 * after its timeout; after SIGCONT the WRITE ends and its data is
 * there.  A one-sided path that moves the data without the target (the
 * initiator's own CMA, a NIC) may end it at once with XFER_OK, as
 * test_proc_stall_timeout allows; its data is checked all the same. */
static void test_proc_wait_stopped(void)
{
    enum { SZ = 65536, WAIT = 500 };
    stopped_t st;
    xfer_req_t *w;
    xfer_status_t s;
    uint64_t start, took, seed = xt_seed();
    char *reply;

    stopped_start(&st, SZ);
    xt_fill(st.buf, SZ, seed);
    w = xc_child_req(st.ini, &st.c, XFER_OP_WRITE, st.buf, 0, SZ);
    s = xfer_req_post(w, NULL, 0);
    XT_CHECK(s == XFER_IN_PROG || s == XFER_OK, "WRITE to a stopped target "
             "posted with %s (%s)", xt_status_name(s), xfer_last_error());
    start = xt_now_ms();
    if (s == XFER_IN_PROG)
        s = xfer_req_wait(w, WAIT);
    took = xt_now_ms() - start;
    if (s != XFER_OK) {
        XT_STATUS(s, XFER_IN_PROG);
        XT_CHECK(took + 10 >= WAIT && took < WAIT + 1000, "xfer_req_wait(%u "
                 "ms) returned after %" PRIu64 " ms", WAIT, took);
    }
    kill(st.c.pid, SIGCONT);
    XT_STATUS(xfer_req_wait(w, WAIT_MS), XFER_OK);
    reply = xc_child_cmd(&st.c, "check 0 %u %" PRIu64, (unsigned)SZ, seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "target process: %s", reply);
    xc_child_stop(&st.c);
}

/* xfer_md_connect to a target that is stopped (its kernel accepts, it
 * never answers the handshake) ends in XFER_ERR_TIMEOUT after the time
 * given, naming backend and agent; after SIGCONT it connects. */
static void test_proc_connect_stopped(void)
{
    enum { SZ = 4096, TMO = 300 };
    stopped_t st;
    xfer_agent_t *ini2;
    xfer_status_t s;
    uint64_t start, took;
    char want[64];

    if (!xc_connects_eagerly())
        return;
    stopped_start(&st, SZ);
    ini2 = xt_agent(xt_name("cini"), xc_spec, 1);
    XT_STATUS_FATAL(xfer_md_load(ini2, st.c.blob, st.c.len, NULL, 0),
                    XFER_OK);
    start = xt_now_ms();
    s = xfer_md_connect(ini2, st.c.name, TMO);
    took = xt_now_ms() - start;
    snprintf(want, sizeof(want), "within %u ms", TMO);
    if (XT_STATUS(s, XFER_ERR_TIMEOUT))
        XT_ERR_HAS(want, st.c.name, "did not connect");
    XT_CHECK(took + 10 >= TMO && took < TMO + 2000, "xfer_md_connect(%u ms) "
             "returned after %" PRIu64 " ms", TMO, took);
    kill(st.c.pid, SIGCONT);
    XT_STATUS(xfer_md_connect(ini2, st.c.name, WAIT_MS), XFER_OK);
    xc_child_stop(&st.c);
}

/* timeout_ms ends a WRITE to a stopped target with XFER_ERR_TIMEOUT and
 * its sentence; after SIGCONT the target is reachable again. */
static void test_proc_timeout_stopped(void)
{
    enum { SZ = 65536, TMO = 500 };
    stopped_t st;
    xfer_req_opts_t o;
    xfer_req_t *w;
    xfer_status_t s;
    uint64_t start, took, seed = xt_seed();
    char want[64], *reply;

    stopped_start(&st, SZ);
    xfer_req_opts_init(&o);
    o.timeout_ms = TMO;
    s = xc_child_req_opts(st.ini, &st.c, XFER_OP_WRITE, st.buf, 0, SZ, &o, &w);
    if (xc_timeout_refused(s) || !XT_STATUS(s, XFER_OK)) {
        kill(st.c.pid, SIGCONT);
        xc_child_stop(&st.c);
        return;
    }
    XT_STATUS(xfer_req_post(w, NULL, 0), XFER_IN_PROG);
    start = xt_now_ms();
    s = xfer_req_wait(w, TMO + 5000);
    took = xt_now_ms() - start;
    snprintf(want, sizeof(want), "did not complete within its timeout of "
             "%u ms", TMO);
    if (XT_STATUS(s, XFER_ERR_TIMEOUT))
        XT_ERR_HAS(want, st.c.name);
    XT_CHECK(took + 10 >= TMO && took < TMO + 3000, "timeout_ms=%u ended "
             "the request after %" PRIu64 " ms", TMO, took);
    kill(st.c.pid, SIGCONT);
    w = xc_child_req(st.ini, &st.c, XFER_OP_WRITE, st.buf, 0, SZ);
    xt_fill(st.buf, SZ, seed);
    XT_STATUS(xt_post_wait(w, NULL, 0, WAIT_MS), XFER_OK);
    reply = xc_child_cmd(&st.c, "check 0 %u %" PRIu64, (unsigned)SZ, seed);
    XT_CHECK(strcmp(reply, "ok") == 0, "target process: %s", reply);
    xc_child_stop(&st.c);
}

const xt_test_t xc_process_tests[] = {
    XT_TEST(test_proc_write_read_notif),
    XT_TEST(test_proc_kill_midstream),
    XT_TEST(test_proc_wait_stopped),
    XT_TEST(test_proc_timeout_stopped),
    XT_TEST(test_proc_connect_stopped),
    XT_END
};

/* Needs a timeout_ms parameter to set the bound it checks. */
const xt_test_t xc_stall_tests[] = {
    XT_TEST(test_proc_stall_timeout),
    XT_END
};
