/* test-sec-dereg.c - issue 10, break 5: READ answers a key holder queues and never
 * reads cost the target no copies when the region is deregistered, nor memory
 * beyond the notification bound when notifications wait behind them. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/security/hostile.h"

#define MIB (1u << 20)
/* Generous for a slow machine; the copy this replaced took tens of
 * seconds for gigabytes. */
#define DEREG_MAX_MS 5000
#define SLACK_KB (16u << 10)

static hx_target_t *target(const char *opts)
{
    hx_target_t *t = calloc(1, sizeof *t);
    char spec[64];

    XT_REQUIRE(t != NULL, "out of memory");
    xt_defer_late(free, t);
    snprintf(spec, sizeof spec, "tcp:port=%u", xt_free_port());
    hx_target_start(t, spec, opts);
    return t;
}

static int holder(hx_target_t *t)
{
    int fd = hx_handshake(hx_connect_tcp(t->port, NULL), "holder", t->epoch);

    XT_REQUIRE(fd >= 0, "the key holder's handshake failed");
    return fd;
}

/* READ_REQs of len bytes at addr, addr + step, ... (wrapping within
 * span), tags tag0 on, sent back to back and never read, until n went
 * or the target stopped taking them for 500 ms.  Returns how many went. */
static unsigned reads(int fd, uint64_t key, uint64_t addr, uint64_t span,
                      uint64_t len, unsigned n, uint64_t tag0)
{
    uint8_t h[XFER_WIRE_HDR_SIZE];
    unsigned k;

    for (k = 0; k < n; k++) {
        hx_hdr(h, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, tag0 + k, key,
               addr + (k * len) % (span - len + 1), len);
        if (hx_send(fd, h, sizeof h, 500) < 0)
            break;
    }
    return k;
}

/* Ask the target to deregister its first region while the good peer has
 * a READ of the second in flight: the call returns within DEREG_MAX_MS
 * and the good READ completes. */
static void dereg_beside_good(hx_target_t *t, hx_good_t *g)
{
    xfer_desc_t ld = {(uintptr_t)g->dst, MIB, 0};
    xfer_desc_t rd = {(uintptr_t)t->addr2, MIB, 0};
    xfer_dlist_t l = {XFER_MEM_DRAM, 1, &ld}, r = {XFER_MEM_DRAM, 1, &rd};
    xfer_req_t *req = NULL;
    unsigned long long ms = 0;
    char ok[16] = "";
    const char *a;
    xfer_status_t st;

    XT_STATUS_FATAL(xfer_req_create(g->agent, XFER_OP_READ, &l, &r, t->name,
                                    NULL, &req),
                    XFER_OK);
    xt_req_defer(req);
    st = xfer_req_post(req, NULL, 0);
    XT_CHECK(st == XFER_OK || st == XFER_IN_PROG, "good READ post: %s",
             xt_status_name(st));
    a = hx_target_ask(t, "dereg");
    XT_CHECK(sscanf(a, "dereg %llu %15s", &ms, ok) == 2 &&
                 strcmp(ok, "ok") == 0,
             "target said '%s'", a);
    XT_CHECK(ms < DEREG_MAX_MS, "deregistration took %llu ms with READ "
             "answers queued", ms);
    printf("deregistration took %llu ms\n", ms);
    XT_STATUS(xt_wait_req(req, HX_WAIT_MS), XFER_OK);
}

/* A key holder queues 32 MiB of answers from the second region, then
 * thousands of READs of the first, and never reads.  Deregistering the
 * first returns promptly, copies nothing (the target's memory does not
 * grow by what was queued), and a good peer is served meanwhile.  The
 * holder then gets its answers in order: the second region's bytes, an
 * error (ACCESS, no payload) for every READ of the first, and the
 * connection stays in step for its next READ. */
static void test_dereg_queued_reads(void)
{
    enum { N = 3000, RLEN = 16u << 10 };
    hx_target_t *t = target("reg=33554432 reg2=33554432");
    hx_good_t g;
    xfer_wire_hdr_t h;
    unsigned sent, refused = 0, closed = 0;
    long base, peak;
    int fd;

    hx_good_make(&g, xt_name("good"), "tcp", t);
    g.raddr = t->addr2;
    XT_CHECK(hx_good_roundtrip(&g, 0, MIB), "good peer before");
    base = hx_rss_kb(t->proc.pid);
    fd = holder(t);
    XT_REQUIRE(reads(fd, t->key2, t->addr2, t->len2, t->len2, 1, 0) == 1,
               "the first READ did not go");
    sent = reads(fd, t->key, t->addr, t->len, RLEN, N, 1);
    XT_CHECK(sent > 100, "only %u READs went", sent);
    xt_sleep_ms(500);
    dereg_beside_good(t, &g);
    peak = hx_rss_kb(t->proc.pid);
    XT_CHECK(peak - base < (long)SLACK_KB, "the target grew by %ld kB "
             "deregistering a region with %u READ answers queued",
             peak - base, sent);
    /* The holder reads now. */
    XT_CHECK(hx_recv_hdr(fd, &h, HX_WAIT_MS) == 0 &&
                 h.type == XFER_WIRE_READ_RESP && h.tag == 0 &&
                 h.arg0 == 0 && h.len == t->len2 &&
                 hx_recv_skip(fd, h.len, HX_WAIT_MS) == 0,
             "the answer from the region that stays did not come whole");
    for (unsigned k = 1; k <= sent; k++) {
        if (hx_recv_hdr(fd, &h, HX_WAIT_MS) < 0) {
            closed = 1;
            break;
        }
        if (h.type != XFER_WIRE_READ_RESP || h.tag != k) {
            XT_FAIL("answer %u: type %u tag %" PRIu64 ": out of step", k,
                    h.type, h.tag);
            break;
        }
        if ((int64_t)h.arg0 == XFER_ERR_ACCESS && h.len == 0) {
            refused++;
            continue;
        }
        XT_FAIL("answer %u: status %" PRId64 ", %" PRIu64 " bytes from a "
                "deregistered region", k, (int64_t)h.arg0, h.len);
        if (hx_recv_skip(fd, h.len, HX_WAIT_MS) < 0)
            break;
    }
    XT_CHECK(!closed && refused == sent, "%u of %u READs of the "
             "deregistered region were refused in order (closed: %u)",
             refused, sent, closed);
    XT_CHECK(reads(fd, t->key2, t->addr2, t->len2, 4096, 1, sent + 1) == 1 &&
                 hx_recv_hdr(fd, &h, HX_WAIT_MS) == 0 &&
                 h.type == XFER_WIRE_READ_RESP && h.tag == sent + 1 &&
                 h.arg0 == 0 && h.len == 4096,
             "the holder's connection is out of step after the refusals");
    close(fd);
    XT_CHECK(hx_good_roundtrip(&g, 0, MIB), "good peer after");
    hx_target_canary(t);
}

/* The answer being sent when the region goes cannot be taken back: that
 * connection closes, nothing is copied, the good peer is served. */
static void test_dereg_answer_on_the_wire(void)
{
    hx_target_t *t = target("reg=33554432 reg2=4194304");
    hx_good_t g;
    xfer_wire_hdr_t h;
    unsigned sent;
    long base, peak;
    int fd;

    hx_good_make(&g, xt_name("good"), "tcp", t);
    g.raddr = t->addr2;
    XT_CHECK(hx_good_roundtrip(&g, 0, MIB), "good peer before");
    base = hx_rss_kb(t->proc.pid);
    fd = holder(t);
    sent = reads(fd, t->key, t->addr, t->len, 4 * MIB, 64, 0);
    XT_CHECK(sent == 64, "only %u READs went", sent);
    xt_sleep_ms(500);
    dereg_beside_good(t, &g);
    peak = hx_rss_kb(t->proc.pid);
    XT_CHECK(peak - base < (long)SLACK_KB, "the target grew by %ld kB "
             "deregistering a region with %u MiB of READ answers queued",
             peak - base, sent * 4);
    /* what was on the wire still arrives, then the close */
    for (unsigned k = 0; k < sent; k++)
        if (hx_recv_hdr(fd, &h, HX_WAIT_MS) < 0 ||
            hx_recv_skip(fd, h.len, HX_WAIT_MS) < 0)
            break;
    XT_CHECK(hx_closed(fd, HX_WAIT_MS), "the holder's connection stayed "
             "open with a half-sent answer from a deregistered region");
    close(fd);
    XT_CHECK(hx_good_roundtrip(&g, 0, MIB), "good peer after");
    hx_target_canary(t);
}

static void drained(hx_target_t *t, size_t *seq, size_t *bad)
{
    const char *a = hx_target_ask(t, "drain");
    size_t n;

    XT_REQUIRE(sscanf(a, "drained %zu seq %zu bad %zu", &n, seq, bad) == 3,
               "target said '%s'", a);
}

/* Bytes of buf that went within timeout_ms of the socket taking none. */
static size_t send_some(int fd, const uint8_t *buf, size_t len,
                        unsigned timeout_ms)
{
    size_t done = 0;

    while (done < len) {
        struct pollfd p = {fd, POLLOUT, 0};
        ssize_t k;

        if (poll(&p, 1, (int)timeout_ms) != 1)
            break;
        k = send(fd, buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k <= 0)
            break;
        done += (size_t)k;
    }
    return done;
}

/* READ + 64 KiB notification pairs, the answers never read: every
 * notification must wait behind its READ's answer, and the target may
 * hold no more of them than the sender's share of the queue; once the
 * holder reads, all arrive, in order, once. */
static void test_notifs_behind_unread_answers(void)
{
    enum { PAIRS = 4096, NQ = 8u << 20 };
    enum { PAIR = 2 * XFER_WIRE_HDR_SIZE + XFER_NOTIF_MAX };
    hx_target_t *t = target("nqbytes=8388608");
    static uint8_t pair[PAIR];
    hx_good_t g;
    unsigned sent = 0, answers = 0;
    size_t seq = 0, bad = 0, off = 0;
    long base, rss, peak = 0;
    int fd;

    hx_good_make(&g, xt_name("good"), "tcp", t);
    XT_CHECK(hx_good_roundtrip(&g, 0, MIB), "good peer before");
    base = hx_rss_kb(t->proc.pid);
    fd = holder(t);
    /* Send until the target stops taking them (or grows too much). */
    for (; sent < PAIRS; sent++) {
        hx_hdr(pair, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, sent, t->key,
               t->addr, 4096);
        hx_hdr(pair + XFER_WIRE_HDR_SIZE, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0,
               XFER_NOTIF_MAX);
        snprintf((char *)pair + 2 * XFER_WIRE_HDR_SIZE, 32, "seq %u", sent);
        off = send_some(fd, pair, PAIR, 500);
        rss = hx_rss_kb(t->proc.pid);
        peak = rss > peak ? rss : peak;
        if (off < PAIR || rss - base > (long)(NQ >> 10) + (long)SLACK_KB)
            break;
        off = 0;
    }
    XT_CHECK(peak - base <= (long)(NQ >> 10) + (long)SLACK_KB,
             "notifications waiting behind unread answers grew the target "
             "by %ld kB (bound %u kB + %u kB)",
             peak - base, NQ >> 10, SLACK_KB);
    printf("%u READ+NOTIF pairs before the target stopped reading; target "
           "%ld kB -> %ld kB\n", sent, base, peak);
    /* The holder reads (and finishes the pair it was sending); the
     * target drains. */
    for (uint64_t end = xt_now_ms() + 3 * HX_WAIT_MS;
         (off || answers < sent || seq < sent) && xt_now_ms() < end;) {
        xfer_wire_hdr_t a;
        struct pollfd p = {fd, POLLIN, 0};

        if (off) {
            off += send_some(fd, pair + off, PAIR - off, 1);
            if (off == PAIR)
                off = 0, sent++;
        }
        while (answers < sent && poll(&p, 1, 0) == 1 &&
               hx_recv_hdr(fd, &a, HX_WAIT_MS) == 0) {
            XT_REQUIRE(a.type == XFER_WIRE_READ_RESP && a.tag == answers &&
                           a.arg0 == 0 &&
                           hx_recv_skip(fd, a.len, HX_WAIT_MS) == 0,
                       "answer %u out of step", answers);
            answers++;
        }
        drained(t, &seq, &bad);
        xt_sleep_ms(5);
    }
    XT_CHECK(answers == sent && seq == sent && bad == 0,
             "%u of %u answers, %zu of %u notifications (%zu out of order "
             "or twice)", answers, sent, seq, sent, bad);
    close(fd);
    XT_CHECK(hx_good_roundtrip(&g, 0, MIB), "good peer after");
    hx_target_canary(t);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_dereg_queued_reads),
        XT_TEST(test_dereg_answer_on_the_wire),
        XT_TEST(test_notifs_behind_unread_answers),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"sec-dereg", tests}};

    hx_main(argc, argv);
    return xt_run(argv[0], suites, 1);
}
