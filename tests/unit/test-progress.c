/* test-progress.c - the progress contract for backends that must be
 * polled (tests/plugins/ptpoll.c: work visible only inside progress()):
 * with a progress thread and without one, WRITE and READ complete and
 * notifications arrive although the user never asks a request's status;
 * the thread sleeps when idle and still answers the next post at once. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/common/xt.h"

/* The progress thread's sleep bound, far above what any answer here may
 * take: a core that progressed a polled backend only when its sleep
 * timed out (or an fd fired) would take this long per transfer. */
#define LONG_WAIT_US 5000000u
/* What "at once" allows: generous for sanitizers and a loaded machine,
 * and well below LONG_WAIT_US. */
#define PROMPT_MS 1500
#define SIZE 8192

static const char *spec; /* this round's ptpoll shape */

static void destroy_cb(void *arg)
{
    xfer_agent_destroy(arg);
}

static xfer_agent_t *agent_new(const char *prefix, int thread)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&o);
    o.name = xt_name(prefix);
    o.progress_thread = thread;
    o.progress_wait_us = LONG_WAIT_US;
    XT_STATUS_FATAL(xfer_agent_create(&o, &a), XFER_OK);
    xt_defer(destroy_cb, a);
    XT_STATUS_FATAL(xfer_backend_add(a, spec, NULL), XFER_OK);
    return a;
}

typedef struct pair {
    xfer_agent_t *ini, *tgt;
    unsigned char *lbuf, *rbuf;
    xfer_req_t *wr, *rd;      /* WRITE and READ of the whole buffer */
} pair_t;

static void pair_setup(pair_t *p, int thread)
{
    xfer_desc_t l = {0}, r = {0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);

    memset(p, 0, sizeof(*p));
    p->tgt = agent_new("tgt", thread);
    p->ini = agent_new("ini", thread);
    p->lbuf = xt_alloc(SIZE);
    p->rbuf = xt_alloc(SIZE);
    xt_register(p->ini, p->lbuf, SIZE);
    xt_register(p->tgt, p->rbuf, SIZE);
    xt_md_exchange(p->tgt, XFER_MD_ALL, p->ini);
    xt_md_exchange(p->ini, XFER_MD_ALL, p->tgt);
    l = (xfer_desc_t){(uintptr_t)p->lbuf, SIZE, 0};
    r = (xfer_desc_t){(uintptr_t)p->rbuf, SIZE, 0};
    XT_STATUS_FATAL(xfer_req_create(p->ini, XFER_OP_WRITE, &ll, &rl,
                                    xfer_agent_name(p->tgt), NULL, &p->wr),
                    XFER_OK);
    xt_req_defer(p->wr);
    XT_STATUS_FATAL(xfer_req_create(p->ini, XFER_OP_READ, &ll, &rl,
                                    xfer_agent_name(p->tgt), NULL, &p->rd),
                    XFER_OK);
    xt_req_defer(p->rd);
}

static int fd_of(xfer_status_t (*get)(xfer_agent_t *, int *), xfer_agent_t *a)
{
    int fd = -1;

    XT_STATUS_FATAL(get(a, &fd), XFER_OK);
    return fd;
}

static bool readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* Wait for one notification of the target the way an event loop does:
 * sleep on xfer_notif_fd (and, without progress threads, on both
 * agents' event fds, progressing the one that fired); never a request
 * status.  Returns the milliseconds it took, or -1; msg is what came. */
static long await_notif(pair_t *p, bool pump, xt_notifs_t *got)
{
    uint64_t start = xt_now_ms();
    size_t had = got->count;
    struct pollfd fds[3] = {
        {.fd = fd_of(xfer_notif_fd, p->tgt), .events = POLLIN},
        {.fd = fd_of(xfer_agent_event_fd, p->ini), .events = POLLIN},
        {.fd = fd_of(xfer_agent_event_fd, p->tgt), .events = POLLIN},
    };

    while (xt_now_ms() - start < 3 * PROMPT_MS) {
        int n = poll(fds, pump ? 3 : 1, 100);

        if (n < 0)
            continue;
        if (pump && (fds[1].revents & POLLIN))
            XT_STATUS(xfer_progress(p->ini), XFER_OK);
        if (pump && (fds[2].revents & POLLIN))
            XT_STATUS(xfer_progress(p->tgt), XFER_OK);
        if (fds[0].revents & POLLIN) {
            /* Drained with progress folded in when there is no thread;
             * readiness, not the drain's pumping, must have told us. */
            xt_drain_until(p->tgt, got, had + 1, 0, false);
            if (got->count > had)
                return (long)(xt_now_ms() - start);
        }
    }
    return -1;
}

/* WRITE then READ, each with a notification, each seen through the
 * notification fd alone; then xfer_req_wait says OK at once. */
static void write_read(bool thread)
{
    pair_t p;
    xt_notifs_t *got = xt_notifs_new();
    uint64_t seed = xt_seed(), seed2 = xt_seed();
    long ms;

    pair_setup(&p, thread);
    xt_fill(p.lbuf, SIZE, seed);
    XT_STATUS_FATAL(xfer_req_post(p.wr, "w1", 2), XFER_IN_PROG);
    ms = await_notif(&p, !thread, got);
    XT_REQUIRE(ms >= 0 && ms < PROMPT_MS, "WRITE's notification came after "
               "%ld ms (-1: not within %d ms)", ms, 3 * PROMPT_MS);
    XT_CHECK(got->items[0].len == 2 && memcmp(got->items[0].msg, "w1", 2) == 0,
             "got notification '%.*s'", (int)got->items[0].len,
             (char *)got->items[0].msg);
    XT_CHECK(strcmp(got->items[0].from, xfer_agent_name(p.ini)) == 0,
             "notification from '%s'", got->items[0].from);
    XT_CHECK(xt_check(p.rbuf, SIZE, seed) < 0, "target's bytes differ");
    /* Complete already: the wait returns OK without sleeping. */
    ms = (long)xt_now_ms();
    XT_STATUS(xfer_req_wait(p.wr, 10000), XFER_OK);
    XT_CHECK((long)xt_now_ms() - ms < PROMPT_MS, "xfer_req_wait took %ld ms",
             (long)xt_now_ms() - ms);

    /* A READ of new remote bytes; its notification follows the read. */
    xt_fill(p.rbuf, SIZE, seed2);
    XT_STATUS_FATAL(xfer_req_post(p.rd, "r1", 2), XFER_IN_PROG);
    ms = await_notif(&p, !thread, got);
    XT_REQUIRE(ms >= 0 && ms < PROMPT_MS, "READ's notification came after "
               "%ld ms (-1: not within %d ms)", ms, 3 * PROMPT_MS);
    XT_CHECK(memcmp(got->items[1].msg, "r1", 2) == 0, "got '%.*s'",
             (int)got->items[1].len, (char *)got->items[1].msg);
    XT_CHECK(xt_check(p.lbuf, SIZE, seed2) < 0, "READ's bytes differ");
    XT_STATUS(xfer_req_wait(p.rd, 10000), XFER_OK);
}

static void test_thread_write_read(void) { write_read(true); }
static void test_nothread_write_read(void) { write_read(false); }

/* Without any thread and without looking at fds: xfer_req_wait alone
 * drives the initiator, at once, for a WRITE and a READ. */
static void test_nothread_req_wait(void)
{
    pair_t p;
    uint64_t seed = xt_seed(), t0;

    pair_setup(&p, 0);
    for (int i = 0; i < 20; i++) {
        xfer_req_t *req = i % 2 ? p.rd : p.wr;
        unsigned char *src = i % 2 ? p.rbuf : p.lbuf;
        unsigned char *dst = i % 2 ? p.lbuf : p.rbuf;

        seed++;
        xt_fill(src, SIZE, seed);
        t0 = xt_now_ms();
        XT_STATUS_FATAL(xfer_req_post(req, XFER_NOTIF_NONE, 0), XFER_IN_PROG);
        XT_STATUS_FATAL(xfer_req_wait(req, 10000), XFER_OK);
        XT_CHECK(xt_now_ms() - t0 < PROMPT_MS, "round %d took %llu ms", i,
                 (unsigned long long)(xt_now_ms() - t0));
        XT_CHECK(xt_check(dst, SIZE, seed) < 0, "round %d: bytes differ", i);
    }
}

/* With a thread: xfer_req_wait sleeps and is woken by the thread. */
static void test_thread_req_wait(void)
{
    pair_t p;
    uint64_t seed = xt_seed(), t0;

    pair_setup(&p, 1);
    for (int i = 0; i < 20; i++) {
        seed++;
        xt_fill(p.lbuf, SIZE, seed);
        t0 = xt_now_ms();
        XT_STATUS_FATAL(xfer_req_post(p.wr, XFER_NOTIF_NONE, 0), XFER_IN_PROG);
        XT_STATUS_FATAL(xfer_req_wait(p.wr, 10000), XFER_OK);
        XT_CHECK(xt_now_ms() - t0 < PROMPT_MS, "round %d took %llu ms", i,
                 (unsigned long long)(xt_now_ms() - t0));
        XT_CHECK(xt_check(p.rbuf, SIZE, seed) < 0, "round %d: bytes differ",
                 i);
    }
}

static uint64_t cpu_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* After traffic, both progress threads sleep: the process burns far
 * less CPU than the wall time of an idle window (a spinning thread
 * would burn all of it).  Then the next post is answered at once,
 * though the threads sleep up to LONG_WAIT_US. */
static void test_thread_idle_sleeps(void)
{
    pair_t p;
    xt_notifs_t *got = xt_notifs_new();
    uint64_t seed = xt_seed(), c0, w0, cpu, wall;
    long ms;

    pair_setup(&p, 1);
    xt_fill(p.lbuf, SIZE, seed);
    XT_STATUS_FATAL(xfer_req_post(p.wr, "a", 1), XFER_IN_PROG);
    XT_REQUIRE(await_notif(&p, false, got) >= 0, "first WRITE never "
               "notified");
    xt_sleep_ms(50); /* let the threads finish spinning */
    c0 = cpu_us();
    w0 = xt_now_ms();
    xt_sleep_ms(300);
    cpu = cpu_us() - c0;
    wall = (xt_now_ms() - w0) * 1000u;
    XT_CHECK(cpu * 4 < wall, "idle: %llu us of CPU in %llu us", (unsigned long
             long)cpu, (unsigned long long)wall);

    seed++;
    xt_fill(p.lbuf, SIZE, seed);
    XT_STATUS_FATAL(xfer_req_post(p.wr, "b", 1), XFER_IN_PROG);
    ms = await_notif(&p, false, got);
    XT_CHECK(ms >= 0 && ms < PROMPT_MS, "the post after idling was "
             "notified after %ld ms", ms);
    XT_CHECK(xt_check(p.rbuf, SIZE, seed) < 0, "bytes differ");
}

/* Without a thread, once everything is done and progressed, neither
 * agent's event fd stays readable: a loop sleeping on it sleeps.  A
 * post makes the initiator's readable again. */
static void test_nothread_event_fd_quiet(void)
{
    pair_t p;
    xt_notifs_t *got = xt_notifs_new();
    int fi, ft;

    pair_setup(&p, 0);
    fi = fd_of(xfer_agent_event_fd, p.ini);
    ft = fd_of(xfer_agent_event_fd, p.tgt);
    XT_STATUS_FATAL(xfer_req_post(p.wr, "q", 1), XFER_IN_PROG);
    XT_CHECK(readable(fi, 0), "the initiator's event fd is not readable "
             "after a post to a polled backend");
    XT_REQUIRE(await_notif(&p, true, got) >= 0, "no notification");
    XT_STATUS(xfer_req_wait(p.wr, 10000), XFER_OK);
    XT_STATUS(xfer_progress(p.ini), XFER_OK);
    XT_STATUS(xfer_progress(p.tgt), XFER_OK);
    XT_CHECK(!readable(fi, 50), "the initiator's event fd stays readable "
             "with nothing to do");
    XT_CHECK(!readable(ft, 50), "the target's event fd stays readable with "
             "nothing to do");
    XT_STATUS_FATAL(xfer_req_post(p.wr, "r", 1), XFER_IN_PROG);
    XT_CHECK(readable(fi, 0), "the initiator's event fd is not readable "
             "after the next post");
    XT_REQUIRE(await_notif(&p, true, got) >= 0, "no second notification");
}

static const xt_test_t tests[] = {
    XT_TEST(test_thread_write_read),
    XT_TEST(test_nothread_write_read),
    XT_TEST(test_nothread_req_wait),
    XT_TEST(test_thread_req_wait),
    XT_TEST(test_thread_idle_sleeps),
    XT_TEST(test_nothread_event_fd_quiet),
    XT_END,
};

int main(int argc, char **argv)
{
    /* Both shapes of a polled backend: no fd at all, and an event fd
     * beside the arm step. */
    static const char *specs[] = {"ptpoll", "ptpoll:event_fd=1"};
    int rc = 0;

    (void)argc;
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        xt_suite_t suite = {specs[i], tests};

        spec = specs[i];
        printf("backend spec \"%s\"\n", spec);
        if (xt_run(argv[0], &suite, 1) != 0)
            rc = 1;
    }
    return rc;
}
