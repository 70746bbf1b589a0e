/* concurrent-post.c - do threads posting their own requests to their own
 * peers scale?  1 and then 2 threads each post prepared 8 B WRITEs (and
 * spin on their status) for a while; rounds take turns and the table
 * shows the median aggregate posts per second and the 2:1 ratio.
 *
 *   bench/concurrent-post [-t seconds] [-r rounds] [spec...]
 *
 * Specs default to ptest:inline=1, ptpoll and uds; memory comes from
 * xfer_mem_alloc so uds takes its shm path.  The in-process row is
 * ptest with inline=1: its reposts complete in the posting thread, so
 * the row measures the core's post path and the plugin's locking; plain
 * ptest completes every post on the target's progress thread, and on a
 * small machine measures thread wake-ups instead.  ptest and ptpoll
 * live in tests/plugins. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/inproc.h"

#define MAXT 2

typedef struct poster {
    ip_peer_t *peer;
    atomic_bool *go, *stop;
    uint64_t posts;
} poster_t;

static void *poster_main(void *arg)
{
    poster_t *p = arg;
    uint64_t posts = 0;

    while (!atomic_load(p->go))
        ;
    /* Counted on the stack: the posters' structs share a cache line, and
     * bumping them in the loop measured the line's bouncing, not posts. */
    while (!atomic_load(p->stop)) {
        ip_write(p->peer);
        posts++;
    }
    p->posts = posts;
    return NULL;
}

/* Aggregate posts per second of n threads over secs. */
static double run(ip_peer_t *peers, int n, double secs)
{
    poster_t ps[MAXT];
    pthread_t th[MAXT];
    atomic_bool go = false, stop = false;
    uint64_t t0, total = 0;

    for (int i = 0; i < n; i++) {
        ps[i] = (poster_t){.peer = &peers[i], .go = &go, .stop = &stop};
        if (pthread_create(&th[i], NULL, poster_main, &ps[i]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    t0 = ip_now_ns();
    atomic_store(&go, true);
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&stop, true);
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        total += ps[i].posts;
    }
    return (double)total * 1e9 / (double)(ip_now_ns() - t0);
}

int main(int argc, char **argv)
{
    static const char *defaults[] = {"ptest:inline=1", "ptpoll", "uds"};
    const char *const *specs = defaults;
    int nspecs = 3, rounds = 5, opt;
    double secs = 0.5;

    while ((opt = getopt(argc, argv, "t:r:")) != -1) {
        if (opt == 't')
            secs = atof(optarg);
        else if (opt == 'r')
            rounds = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-t seconds] [-r rounds] [spec...]\n",
                    argv[0]);
            return 2;
        }
    }
    if (optind < argc) {
        specs = (const char *const *)&argv[optind];
        nspecs = argc - optind;
    }
    if (rounds < 1 || secs <= 0)
        return 2;
    printf("# prepared 8 B WRITEs, each thread its own request and peer; "
           "median of %d rounds of %.2f s, 1 and 2 threads taking turns\n",
           rounds, secs);
    printf("%-22s %14s %14s %7s\n", "backend", "1 thread/s", "2 threads/s",
           "ratio");
    for (int s = 0; s < nspecs; s++) {
        xfer_agent_t *ini = ip_agent("cp-ini", &specs[s], 1, 1);
        ip_peer_t peers[MAXT];
        double *one = calloc((size_t)rounds, sizeof(double));
        double *two = calloc((size_t)rounds, sizeof(double));
        double m1, m2;

        if (one == NULL || two == NULL)
            return 1;
        for (int i = 0; i < MAXT; i++) {
            char name[32];

            snprintf(name, sizeof(name), "cp-tgt%d", i);
            ip_peer_open(&peers[i], ini, specs[s], name, 8);
        }
        for (int i = 0; i < 1000; i++) /* connect, warm up */
            ip_write(&peers[i % MAXT]);
        for (int r = 0; r < rounds; r++) {
            one[r] = run(peers, 1, secs);
            two[r] = run(peers, 2, secs);
        }
        m1 = ip_quantile(one, (size_t)rounds, 0.5);
        m2 = ip_quantile(two, (size_t)rounds, 0.5);
        printf("%-22s %14.0f %14.0f %6.2fx\n", specs[s], m1, m2, m2 / m1);
        for (int i = 0; i < MAXT; i++)
            ip_peer_close(&peers[i], ini);
        xfer_agent_destroy(ini);
        free(one);
        free(two);
    }
    return 0;
}
