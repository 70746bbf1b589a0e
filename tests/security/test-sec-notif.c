/* test-sec-notif.c - issue 10, break 2: a peer flooding notifications cannot grow
 * the target past notif_queue_bytes; it is slowed, never dropped, never closed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/security/hostile.h"

#define NQ_BYTES (4u << 20)
/* What the target may hold beyond the queue bound: receive buffers, the
 * notification being received, the allocator's slack. */
#define SLACK_KB (24u << 10)
/* Names one flooder claims in test_flood_names. */
#define NAMES 40u

typedef struct flooder {
    int pid;
    int stop;   /* write end: a byte tells it to stop */
    int report; /* read end: "<frames> <closed>" */
} flooder_t;

/* The child: 64 KiB notifications "seq <k>" as fast as the target takes
 * them, until told to stop; then it says how many went and whether the
 * target ever closed the connection. */
static void flood_main(unsigned port, uint64_t epoch, int stop, int report)
{
    static uint8_t msg[XFER_NOTIF_MAX];
    uint8_t hdr[XFER_WIRE_HDR_SIZE];
    unsigned long k = 0;
    int closed = 0, fd;
    char out[64];

    fd = hx_handshake(hx_connect_tcp(port, NULL), "flood", epoch);
    if (fd < 0)
        closed = 1;
    hx_hdr(hdr, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0, sizeof msg);
    while (!closed) {
        char c;

        if (read(stop, &c, 1) == 1)
            break;
        memset(msg, 0, 32);
        snprintf((char *)msg, 32, "seq %lu", k);
        /* The frame goes whole or the connection is gone: a short wait
         * per try, but no limit overall (the target is being drained). */
        if (hx_send(fd, hdr, sizeof hdr, 0) < 0 ||
            hx_send(fd, msg, sizeof msg, 0) < 0) {
            closed = 1;
            break;
        }
        k++;
    }
    snprintf(out, sizeof out, "%lu %d\n", k, closed);
    if (write(report, out, strlen(out)) < 0)
        _exit(2);
    if (fd >= 0)
        close(fd);
    xt_child_exit(0);
}

static void flooder_start(flooder_t *f, unsigned port, uint64_t epoch)
{
    int sp[2], rp[2];

    XT_REQUIRE(pipe(sp) == 0 && pipe(rp) == 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    f->pid = fork();
    XT_REQUIRE(f->pid >= 0, "fork: %s", strerror(errno));
    if (f->pid == 0) {
        close(sp[1]);
        close(rp[0]);
        fcntl(sp[0], F_SETFL, O_NONBLOCK);
        flood_main(port, epoch, sp[0], rp[1]);
    }
    xt_child_add(f->pid);
    close(sp[0]);
    close(rp[1]);
    f->stop = sp[1];
    f->report = rp[0];
}

static void drained(hx_target_t *t, size_t *seq, size_t *bad);

/* Stop it and read its report, draining t meanwhile (t NULL: it was
 * killed) so that the frame it is sending can finish; *closed set when
 * the target closed it. */
static unsigned long flooder_stop(flooder_t *f, hx_target_t *t, size_t *seq,
                                  size_t *bad, int *closed)
{
    char line[64] = "";
    unsigned long n = 0;
    ssize_t k = 0;
    int st;

    if (write(f->stop, "x", 1) != 1)
        XT_FAIL("cannot tell the flooder to stop");
    for (uint64_t end = xt_now_ms() + HX_WAIT_MS; xt_now_ms() < end;) {
        struct pollfd p = {f->report, POLLIN, 0};

        if (poll(&p, 1, 20) == 1) {
            k = read(f->report, line, sizeof line - 1);
            break;
        }
        if (t != NULL)
            drained(t, seq, bad);
    }
    *closed = 1;
    if (k > 0) {
        line[k] = '\0';
        sscanf(line, "%lu %d", &n, closed);
    }
    waitpid(f->pid, &st, 0);
    xt_child_forget(f->pid);
    close(f->stop);
    close(f->report);
    return n;
}

static void drained(hx_target_t *t, size_t *seq, size_t *bad)
{
    const char *a = hx_target_ask(t, "drain");
    size_t n;

    XT_REQUIRE(sscanf(a, "drained %zu seq %zu bad %zu", &n, seq, bad) == 3,
               "target said '%s'", a);
}

static void notify(xfer_agent_t *a, const char *to, unsigned k)
{
    char m[32];

    snprintf(m, sizeof m, "seq %u", k);
    XT_STATUS(xfer_notif_send(a, to, m, strlen(m), NULL), XFER_OK);
}

/* 64 KiB notifications as fast as loopback takes them, while the target
 * does not drain: its resident memory stays within the bound (per
 * sender) plus slack; the good peer's notifications are not held up by
 * the flood's share.  Then the target drains: the flood resumes, and
 * every notification of both senders arrives, in order, exactly once. */
static void test_flood_bounded(void)
{
    hx_target_t *t = calloc(1, sizeof *t);
    hx_good_t g;
    flooder_t fl;
    char spec[64], opts[64];
    unsigned port = xt_free_port(), k = 0;
    long base, rss, peak = 0;
    unsigned long sent;
    size_t seq = 0, bad = 0;
    uint64_t end;
    int closed;

    XT_REQUIRE(t != NULL, "out of memory");
    xt_defer_late(free, t);
    snprintf(spec, sizeof spec, "tcp:port=%u", port);
    snprintf(opts, sizeof opts, "nqbytes=%u", NQ_BYTES);
    hx_target_start(t, spec, opts);
    hx_good_make(&g, xt_name("good"), "tcp", t);
    XT_CHECK(hx_good_roundtrip(&g, 0, 1 << 20), "good peer before the flood");
    notify(g.agent, t->name, k++);
    drained(t, &seq, &bad);
    base = hx_rss_kb(t->proc.pid);
    XT_REQUIRE(base > 0, "cannot read the target's VmRSS");

    flooder_start(&fl, port, t->epoch);
    /* Phase 1: nobody drains. */
    for (end = xt_now_ms() + 2000; xt_now_ms() < end;) {
        rss = hx_rss_kb(t->proc.pid);
        peak = rss > peak ? rss : peak;
        if (rss > base + (long)(NQ_BYTES >> 10) + (long)SLACK_KB)
            break;
        if (k < 50)
            notify(g.agent, t->name, k++);
        xt_sleep_ms(20);
    }
    XT_CHECK(peak <= base + (long)(NQ_BYTES >> 10) + (long)SLACK_KB,
             "the target grew from %ld kB to %ld kB under a notification "
             "flood (bound %u kB + %u kB slack)",
             base, peak, NQ_BYTES >> 10, SLACK_KB);
    if (peak > base + (long)(NQ_BYTES >> 10) + (long)SLACK_KB) {
        kill(fl.pid, SIGKILL);
        flooder_stop(&fl, NULL, NULL, NULL, &closed);
        return;
    }
    /* Phase 2: the target drains; the flood flows again. */
    for (end = xt_now_ms() + 2000; xt_now_ms() < end;) {
        drained(t, &seq, &bad);
        rss = hx_rss_kb(t->proc.pid);
        peak = rss > peak ? rss : peak;
        if (k < 100)
            notify(g.agent, t->name, k++);
        xt_sleep_ms(20);
    }
    sent = flooder_stop(&fl, t, &seq, &bad, &closed);
    XT_CHECK(!closed, "the target closed the flooder's connection: "
             "backpressure must slow a sender, not drop it");
    XT_CHECK(sent > 2 * (NQ_BYTES / XFER_NOTIF_MAX),
             "the flood did not resume after the drain (%lu frames)", sent);
    for (end = xt_now_ms() + HX_WAIT_MS;
         seq < sent + k && xt_now_ms() < end;)
        drained(t, &seq, &bad), xt_sleep_ms(20);
    XT_CHECK(seq == sent + k && bad == 0,
             "%zu of %lu notifications arrived (%u good, %lu flood), %zu "
             "out of order or twice",
             seq, sent + k, k, sent, bad);
    XT_CHECK(peak <= base + (long)(NQ_BYTES >> 10) + (long)SLACK_KB,
             "the target grew from %ld kB to %ld kB while draining",
             base, peak);
    printf("flood: %lu frames of 64 KiB, target %ld kB -> peak %ld kB\n",
           sent, base, peak);
    XT_CHECK(hx_good_roundtrip(&g, 0, 1 << 20), "good peer after the flood");
    hx_target_canary(t);
}

/* The child of test_flood_names: a fresh name per share, each share
 * flooded until the target stops reading it (or for good measure a few
 * frames past the bound), connections kept open; never returns. */
static void flood_names_main(unsigned port, uint64_t epoch)
{
    static uint8_t msg[XFER_NOTIF_MAX];
    uint8_t hdr[XFER_WIRE_HDR_SIZE];

    hx_hdr(hdr, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0, sizeof msg);
    for (unsigned i = 0; i < NAMES; i++) {
        char name[32];
        int fd;

        snprintf(name, sizeof name, "flood-%u", i);
        fd = hx_handshake(hx_connect_tcp(port, NULL), name, epoch);
        if (fd < 0)
            continue;
        for (unsigned k = 0; k < NQ_BYTES / XFER_NOTIF_MAX + 4; k++)
            if (hx_send(fd, hdr, sizeof hdr, 300) < 0 ||
                hx_send(fd, msg, sizeof msg, 300) < 0)
                break;
    }
    pause();
    xt_child_exit(0);
}

/* Without a secret a name is a claim: one peer flooding under NAMES
 * names must not make the queue hold NAMES shares.  The whole queue is
 * bounded (XFER__NQ_SHARES shares); the good peer still transfers. */
static void test_flood_names(void)
{
    hx_target_t *t = calloc(1, sizeof *t);
    hx_good_t g;
    char spec[64], opts[64];
    unsigned port = xt_free_port();
    long base, rss, peak = 0, bound;
    int pid, st;

    XT_REQUIRE(t != NULL, "out of memory");
    xt_defer_late(free, t);
    snprintf(spec, sizeof spec, "tcp:port=%u", port);
    snprintf(opts, sizeof opts, "nqbytes=%u", NQ_BYTES);
    hx_target_start(t, spec, opts);
    hx_good_make(&g, xt_name("good"), "tcp", t);
    XT_CHECK(hx_good_roundtrip(&g, 0, 1 << 20), "good peer before the flood");
    base = hx_rss_kb(t->proc.pid);
    XT_REQUIRE(base > 0, "cannot read the target's VmRSS");
    bound = base + (long)(4 * (NQ_BYTES >> 10)) + (long)SLACK_KB;
    fflush(NULL);
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        flood_names_main(port, t->epoch);
    xt_child_add(pid);
    for (uint64_t end = xt_now_ms() + 6000; xt_now_ms() < end;) {
        rss = hx_rss_kb(t->proc.pid);
        peak = rss > peak ? rss : peak;
        if (peak > bound)
            break;
        xt_sleep_ms(50);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    xt_child_forget(pid);
    XT_CHECK(peak <= bound, "the target grew from %ld kB to %ld kB under a "
             "notification flood from %u names (bound %ld kB)", base, peak,
             NAMES, bound);
    printf("flood under %u names: target %ld kB -> peak %ld kB\n", NAMES,
           base, peak);
    XT_CHECK(hx_good_roundtrip(&g, 0, 1 << 20), "good peer after the flood");
    hx_target_canary(t);
}

/* A notification attached to a WRITE when the sender's share is full:
 * the data lands and the WRITE completes, its notification waits on the
 * wire and is delivered later, once, in order; the next request waits
 * behind it (the connection is not read) and completes after a drain. */
static void test_write_notif_waits(void)
{
    enum { N = 10, BS = 4096, COUNT = 4 };
    hx_target_t *t = calloc(1, sizeof *t);
    hx_good_t g;
    char spec[64], opts[64], m[32];
    size_t seq = 0, bad = 0;
    xfer_req_t *req[N];
    uint64_t seed = xt_seed();

    XT_REQUIRE(t != NULL, "out of memory");
    xt_defer_late(free, t);
    snprintf(spec, sizeof spec, "tcp:port=%u", xt_free_port());
    snprintf(opts, sizeof opts, "nqcount=%u", COUNT);
    hx_target_start(t, spec, opts);
    hx_good_make(&g, xt_name("good"), "tcp", t);
    xt_fill(g.src, N * BS, seed);
    for (unsigned i = 0; i < N; i++) {
        xfer_desc_t ld = {(uintptr_t)g.src + i * BS, BS, 0};
        xfer_desc_t rd = {(uintptr_t)t->addr + i * BS, BS, 0};
        xfer_dlist_t l = {XFER_MEM_DRAM, 1, &ld}, r = {XFER_MEM_DRAM, 1, &rd};

        XT_STATUS_FATAL(xfer_req_create(g.agent, XFER_OP_WRITE, &l, &r,
                                        t->name, NULL, &req[i]),
                        XFER_OK);
        xt_req_defer(req[i]);
    }
    /* COUNT notifications fill the share; the next WRITE still lands. */
    for (unsigned i = 0; i <= COUNT; i++) {
        snprintf(m, sizeof m, "seq %u", i);
        XT_STATUS(xt_post_wait(req[i], m, strlen(m), HX_WAIT_MS), XFER_OK);
    }
    snprintf(m, sizeof m, "seq %u", COUNT + 1);
    XT_STATUS(xfer_req_post(req[COUNT + 1], m, strlen(m)), XFER_IN_PROG);
    xt_sleep_ms(500);
    XT_CHECK(xfer_req_status(req[COUNT + 1]) == XFER_IN_PROG,
             "a WRITE behind a notification the queue has no room for "
             "completed: the target kept reading (%s)",
             xt_status_name(xfer_req_status(req[COUNT + 1])));
    drained(t, &seq, &bad);
    XT_CHECK(seq == COUNT, "%zu notifications were queued, the bound is %u",
             seq, COUNT);
    XT_STATUS(xt_wait_req(req[COUNT + 1], HX_WAIT_MS), XFER_OK);
    for (unsigned i = COUNT + 2; i < N; i++) {
        uint64_t end = xt_now_ms() + HX_WAIT_MS;

        snprintf(m, sizeof m, "seq %u", i);
        XT_STATUS(xfer_req_post(req[i], m, strlen(m)), XFER_IN_PROG);
        while (xfer_req_status(req[i]) == XFER_IN_PROG &&
               xt_now_ms() < end) {
            drained(t, &seq, &bad);
            xt_sleep_ms(10);
        }
        XT_STATUS(xfer_req_status(req[i]), XFER_OK);
    }
    for (uint64_t end = xt_now_ms() + HX_WAIT_MS;
         seq < N && xt_now_ms() < end;)
        drained(t, &seq, &bad), xt_sleep_ms(10);
    XT_CHECK(seq == N && bad == 0, "%zu of %u notifications, %zu out of "
             "order or twice", seq, N, bad);
    /* every WRITE landed byte for byte */
    {
        xfer_desc_t ld = {(uintptr_t)g.dst, N * BS, 0};
        xfer_desc_t rd = {(uintptr_t)t->addr, N * BS, 0};
        xfer_dlist_t l = {XFER_MEM_DRAM, 1, &ld}, r = {XFER_MEM_DRAM, 1, &rd};
        xfer_req_t *rr = NULL;

        XT_STATUS_FATAL(xfer_req_create(g.agent, XFER_OP_READ, &l, &r,
                                        t->name, NULL, &rr),
                        XFER_OK);
        xt_req_defer(rr);
        XT_STATUS(xt_post_wait(rr, NULL, 0, HX_WAIT_MS), XFER_OK);
        XT_CHECK(xt_check(g.dst, N * BS, seed) < 0,
                 "WRITE data differs at %ld", xt_check(g.dst, N * BS, seed));
    }
    hx_target_canary(t);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_flood_bounded),
        XT_TEST(test_write_notif_waits),
        XT_TEST(test_flood_names),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"sec-notif", tests}};

    hx_main(argc, argv);
    return xt_run(argv[0], suites, 1);
}
