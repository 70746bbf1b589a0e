/* isolation.c - does a slow registration on one backend stall another
 * backend's transfers?  A peer's 8 B WRITE latency (p50, p99) over each
 * spec, alone and while another thread of the same agent registers and
 * deregisters memory in a loop on ptpoll, whose registration takes
 * 50 ms (a NIC pinning gigabytes).  Rounds take turns; the table shows
 * medians over rounds and the p99 ratio (busy / alone).
 *
 *   bench/isolation [-n min-samples] [-t ms] [-r rounds] [spec...]
 *
 * Each phase runs at least ms milliseconds (default 300: several slow
 * registrations) and n samples (default 2000).
 *
 * Specs default to uds and tcp; ptpoll lives in tests/plugins. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/inproc.h"

typedef struct churn {
    xfer_agent_t *agent;
    xfer_backend_t *slow;
    atomic_bool stop;
    unsigned cycles;
} churn_t;

static void *churn_main(void *arg)
{
    churn_t *c = arg;
    static char buf[4096];
    xfer_desc_t d = {(uintptr_t)buf, sizeof(buf), 0};
    xfer_dlist_t l = {XFER_MEM_DRAM, 1, &d};
    xfer_mem_opts_t o;

    xfer_mem_opts_init(&o);
    o.backend = c->slow;
    while (!atomic_load(&c->stop)) {
        xfer_mem_t *m = NULL;

        ip_check(xfer_mem_register(c->agent, &l, &o, &m), "slow register");
        ip_check(xfer_mem_deregister(c->agent, m), "slow deregister");
        c->cycles++;
    }
    return NULL;
}

/* p50 and p99 in microseconds of WRITEs for at least ms milliseconds
 * and at least min samples (at most cap). */
static void sample(ip_peer_t *p, double *lat, size_t min, size_t cap,
                   unsigned ms, double *p50, double *p99)
{
    uint64_t end = ip_now_ns() + (uint64_t)ms * 1000000u;
    size_t n = 0;

    while (n < cap && (n < min || ip_now_ns() < end))
        lat[n++] = (double)ip_write(p) / 1e3;
    *p50 = ip_quantile(lat, n, 0.50);
    *p99 = ip_quantile(lat, n, 0.99);
}

int main(int argc, char **argv)
{
    static const char *defaults[] = {"uds", "tcp"};
    const char *const *specs = defaults;
    int nspecs = 2, rounds = 5, opt;
    size_t n = 2000, cap = 4u << 20;
    unsigned ms = 300;

    while ((opt = getopt(argc, argv, "n:t:r:")) != -1) {
        if (opt == 'n')
            n = (size_t)atol(optarg);
        else if (opt == 't')
            ms = (unsigned)atoi(optarg);
        else if (opt == 'r')
            rounds = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-n min-samples] [-t ms] [-r rounds] "
                    "[spec...]\n", argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        specs = (const char *const *)&argv[optind];
        nspecs = argc - optind;
    }
    if (rounds < 1 || n < 100 || n > cap)
        return 2;
    printf("# 8 B WRITE latency (us), phases of >= %u ms and >= %zu samples, "
           "median of %d rounds; busy: another thread registers/deregisters "
           "on ptpoll:reg_delay_ms=50\n", ms, n, rounds);
    printf("%-10s %10s %10s %10s %10s %10s %8s\n", "backend", "alone p50",
           "alone p99", "busy p50", "busy p99", "slow regs", "p99 x");
    for (int s = 0; s < nspecs; s++) {
        const char *both[2] = {specs[s], "ptpoll:reg_delay_ms=50"};
        xfer_agent_t *ini = ip_agent("iso-ini", both, 2, 1);
        xfer_backend_t *slow = NULL;
        double *lat = calloc(cap, sizeof(double));
        double *v[4];
        unsigned regs = 0;
        ip_peer_t peer;

        for (int k = 0; k < 4; k++)
            v[k] = calloc((size_t)rounds, sizeof(double));
        if (lat == NULL || !v[0] || !v[1] || !v[2] || !v[3])
            return 1;
        ip_check(xfer_backend_find(ini, "ptpoll", &slow), "ptpoll");
        ip_peer_open(&peer, ini, specs[s], "iso-tgt", 8);
        for (int i = 0; i < 1000; i++) /* connect, warm up */
            ip_write(&peer);
        for (int r = 0; r < rounds; r++) {
            churn_t c = {.agent = ini, .slow = slow};
            pthread_t th;

            sample(&peer, lat, n, cap, ms, &v[0][r], &v[1][r]);
            if (pthread_create(&th, NULL, churn_main, &c) != 0)
                return 1;
            sample(&peer, lat, n, cap, ms, &v[2][r], &v[3][r]);
            atomic_store(&c.stop, true);
            pthread_join(th, NULL);
            regs += c.cycles;
        }
        for (int k = 0; k < 4; k++)
            v[k][0] = ip_quantile(v[k], (size_t)rounds, 0.5);
        printf("%-10s %10.1f %10.1f %10.1f %10.1f %10u %7.2fx\n", specs[s],
               v[0][0], v[1][0], v[2][0], v[3][0], regs, v[3][0] / v[1][0]);
        ip_peer_close(&peer, ini);
        xfer_agent_destroy(ini);
        free(lat);
        for (int k = 0; k < 4; k++)
            free(v[k]);
    }
    return 0;
}
