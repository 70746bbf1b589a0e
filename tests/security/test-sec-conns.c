/* test-sec-conns.c - issue 10, break 3: idle connections cannot exhaust a target's
 * descriptors, running out of them does not make it spin or flood its log, and idle
 * connections close (harmlessly for well-behaved peers). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/security/hostile.h"

/* Another loopback source than the good peer's 127.0.0.1. */
#define ATTACKER "127.0.0.2"
#define ATTACK_CONNS 1100
/* Generous: a progress thread spinning on accept uses all of a core. */
#define CPU_MAX_PERMILLE 250
#define LOG_MAX (32u << 10)

typedef struct fx {
    hx_target_t t;
    hx_good_t g;
    unsigned port;
    char log[128];
    int fds[ATTACK_CONNS];
    size_t nfds;
} fx_t;

static void fds_close(void *arg)
{
    fx_t *f = arg;

    while (f->nfds)
        close(f->fds[--f->nfds]);
}

static void log_remove(void *arg)
{
    if (getenv("XT_KEEP_LOGS") == NULL)
        unlink(arg);
}

static fx_t *fx_make(const char *params, const char *opts)
{
    fx_t *f = calloc(1, sizeof *f);
    char spec[256], o[256];

    XT_REQUIRE(f != NULL, "out of memory");
    xt_defer_late(free, f);
    f->port = xt_free_port();
    snprintf(f->log, sizeof f->log, "/tmp/%s.log", xt_name("xsec-conns"));
    xt_defer_late(log_remove, f->log);
    snprintf(spec, sizeof spec, "tcp:port=%u%s%s", f->port,
             params ? "," : "", params ? params : "");
    snprintf(o, sizeof o, "log=%s %s", f->log, opts ? opts : "");
    hx_target_start(&f->t, spec, o);
    xt_defer(fds_close, f);
    return f;
}

static long log_size(fx_t *f)
{
    struct stat st;

    return stat(f->log, &st) == 0 ? (long)st.st_size : -1;
}

/* Connect ATTACK_CONNS times from ATTACKER and send a HELLO on each,
 * without waiting: whatever the target does with them. */
static void attack(fx_t *f, size_t n)
{
    uint8_t hello[XFER_WIRE_HDR_SIZE + 32];

    for (size_t i = 0; i < n && f->nfds < ATTACK_CONNS; i++) {
        int fd = hx_connect_tcp_async(f->port, ATTACKER);
        int k;

        if (fd < 0) {
            XT_REQUIRE(i > 0, "cannot connect from %s: %s", ATTACKER,
                       strerror(errno));
            continue;
        }
        f->fds[f->nfds++] = fd;
        k = snprintf((char *)hello + XFER_WIRE_HDR_SIZE, 32, "idle-%zu", i);
        hx_hdr(hello, XFER_WIRE_HELLO, 0, XFER_WIRE_VERSION, XFER_WIRE_MAGIC,
               7, f->t.epoch, (uint64_t)k);
        /* still in the backlog, or refused: both fine */
        hx_send(fd, hello, XFER_WIRE_HDR_SIZE + (size_t)k, 100);
    }
}

/* Of the attacker's connections, those the target answered with a good
 * HELLO_ACK and still holds. */
static size_t alive(fx_t *f)
{
    size_t n = 0;

    xt_sleep_ms(1000);
    for (size_t i = 0; i < f->nfds; i++) {
        xfer_wire_hdr_t h;

        if (hx_recv_hdr(f->fds[i], &h, 0) == 0 &&
            h.type == XFER_WIRE_HELLO_ACK && h.arg1 == 0 &&
            !hx_closed(f->fds[i], 1))
            n++;
    }
    return n;
}

/* The target's CPU use over ms, per mille. */
static long cpu_permille(fx_t *f, unsigned ms)
{
    long c0 = hx_cpu_ms(f->t.proc.pid), c1;

    xt_sleep_ms(ms);
    c1 = hx_cpu_ms(f->t.proc.pid);
    return c0 < 0 || c1 < 0 ? -1 : (c1 - c0) * 1000 / (long)ms;
}

/* 1,100 connections that handshake and sit idle, from one source, with
 * the descriptor limit at 256: max_conns_per_addr keeps 40 of them, the
 * rest are refused at accept, and a new peer from another source is
 * served; the target does not spin, its log stays small. */
static void test_idle_flood(void)
{
    fx_t *f = fx_make("max_conns=150,max_conns_per_addr=40", "nofile=256");
    size_t n;
    long cpu;

    attack(f, ATTACK_CONNS);
    n = alive(f);
    XT_CHECK(n <= 40, "%zu connections from one source stayed open "
             "(max_conns_per_addr=40)", n);
    hx_good_make(&f->g, xt_name("good"), "tcp", &f->t);
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 1 << 20),
             "a new peer was not served beside %d idle connections",
             ATTACK_CONNS);
    cpu = cpu_permille(f, 3000);
    XT_CHECK(cpu >= 0 && cpu < CPU_MAX_PERMILLE,
             "the target used %ld per mille of a CPU while idle "
             "connections sat", cpu);
    XT_CHECK(log_size(f) < (long)LOG_MAX, "the target logged %ld bytes",
             log_size(f));
    printf("idle flood: %zu of %d connections kept, CPU %ld per mille, "
           "log %ld bytes\n", n, ATTACK_CONNS, cpu, log_size(f));
    hx_target_canary(&f->t);
}

/* Out of descriptors (limit 64, no cap below it): accepting pauses, the
 * target neither spins nor floods its log, the peer already connected
 * keeps being served, and once the attacker leaves a new peer is. */
static void test_emfile_pause(void)
{
    fx_t *f = fx_make("max_conns=1000,max_conns_per_addr=1000", "nofile=64");
    hx_good_t g2;
    long cpu, before;

    hx_good_make(&f->g, xt_name("good"), "tcp", &f->t);
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 1 << 20), "good peer before");
    attack(f, 200);
    xt_sleep_ms(500);
    cpu = cpu_permille(f, 2000);
    XT_CHECK(cpu >= 0 && cpu < CPU_MAX_PERMILLE,
             "out of descriptors, the target used %ld per mille of a CPU",
             cpu);
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 1 << 20),
             "the connected peer was not served while accept failed");
    before = log_size(f);
    XT_CHECK(before >= 0 && before < (long)LOG_MAX,
             "the target logged %ld bytes out of descriptors", before);
    printf("out of descriptors: CPU %ld per mille, log %ld bytes\n", cpu,
           before);
    fds_close(f);
    hx_good_make(&g2, xt_name("good2"), "tcp", &f->t);
    XT_CHECK(hx_good_roundtrip(&g2, 0, 1 << 20),
             "a new peer was not served once descriptors were free again");
    hx_target_canary(&f->t);
}

/* A handshaken connection with nothing in flight is closed after
 * idle_timeout_ms; one that keeps asking is not; a peer whose idle
 * connection the target closed posts again successfully. */
static void test_idle_timeout(void)
{
    fx_t *f = fx_make("idle_timeout_ms=1500", NULL);
    int idle, busy;
    uint64_t t0;

    /* the good peer's own idle timeout is long: the target closes first */
    hx_good_make(&f->g, xt_name("good"), "tcp:idle_timeout_ms=3600000",
                 &f->t);
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 4096), "good peer before");
    idle = hx_handshake(hx_connect_tcp(f->port, NULL), "idle", f->t.epoch);
    busy = hx_handshake(hx_connect_tcp(f->port, NULL), "busy", f->t.epoch);
    XT_REQUIRE(idle >= 0 && busy >= 0, "raw handshakes failed");
    t0 = xt_now_ms();
    for (int k = 0; k < 12; k++) {
        xfer_wire_hdr_t h;

        hx_frame(busy, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, (uint64_t)k,
                 f->t.key, f->t.addr, 8, NULL, 0);
        XT_CHECK(hx_recv_hdr(busy, &h, HX_WAIT_MS) == 0 &&
                     hx_recv_skip(busy, h.len, HX_WAIT_MS) == 0,
                 "a connection that keeps reading was closed after %llu ms",
                 (unsigned long long)(xt_now_ms() - t0));
        xt_sleep_ms(300);
    }
    XT_CHECK(hx_closed(idle, 5000), "an idle connection was still open "
             "%llu ms after it handshook (idle_timeout_ms=1500)",
             (unsigned long long)(xt_now_ms() - t0));
    close(idle);
    close(busy);
    /* the good peer was idle as long: its connection is gone, and the
     * next post reconnects */
    XT_CHECK(hx_good_roundtrip(&f->g, 8192, 4096),
             "a peer idle past idle_timeout_ms could not post again");
    /* our side closes at half its own timeout, before a target would */
    {
        hx_good_t g2;

        hx_good_make(&g2, xt_name("good2"), "tcp:idle_timeout_ms=1000",
                     &f->t);
        for (int k = 0; k < 3; k++) {
            XT_CHECK(hx_good_roundtrip(&g2, 0, 4096), "post %d after idling",
                     k);
            xt_sleep_ms(1200);
        }
    }
    hx_target_canary(&f->t);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_idle_flood),
        XT_TEST(test_emfile_pause),
        XT_TEST(test_idle_timeout),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"sec-conns", tests}};

    hx_main(argc, argv);
    return xt_run(argv[0], suites, 1);
}
