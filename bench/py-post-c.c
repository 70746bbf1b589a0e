/* py-post-c.c - the C twin of python/bench/post_overhead.py: the same
 * agents, the same prepared 8 B WRITE and the same two loops, timed the
 * same way, so the difference between the two is what Python adds. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/inproc.h"

struct options {
    long posts, batches, warmup;
    const char *backend;
    int progress_thread; /* the initiator's; the target always has one */
};

/* xfer_req_wait until the post ends, as Transfer.wait() does: in slices
 * of 200 ms (the Python side's, so both make the same calls). */
static void wait_done(xfer_req_t *req)
{
    xfer_status_t st;

    do
        st = xfer_req_wait(req, 200);
    while (st == XFER_IN_PROG);
    ip_check(st, "xfer_req_wait");
}

/* Python: x.post(); x.wait() */
static double post_wait(xfer_req_t *req, long n)
{
    uint64_t t0 = ip_now_ns();

    for (long i = 0; i < n; i++) {
        xfer_status_t st = xfer_req_post(req, NULL, 0);

        if (st < 0)
            ip_check(st, "xfer_req_post");
        wait_done(req);
    }
    return (double)(ip_now_ns() - t0) / (double)n;
}

/* Python: if not x.post(): late += 1; x.wait() */
static double post_alone(xfer_req_t *req, long n, long *late)
{
    uint64_t t0 = ip_now_ns();

    for (long i = 0; i < n; i++) {
        xfer_status_t st = xfer_req_post(req, NULL, 0);

        if (st == XFER_IN_PROG) {
            (*late)++;
            wait_done(req);
        } else if (st != XFER_OK) {
            ip_check(st, "xfer_req_post");
        }
    }
    return (double)(ip_now_ns() - t0) / (double)n;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: py-post-c [-n POSTS] [-r BATCHES] [-w WARMUP] [-b SPEC]"
            " [-p 0|1]\n"
            "Two agents of this process, a prepared WRITE of 1 x 8 B in\n"
            "memory from xfer_mem_alloc; ns per post of two loops, the\n"
            "median of the batches (python/bench/post_overhead.py is the\n"
            "same in Python; bench/compare-python.sh runs both).\n\n"
            "  -n, --posts N      posts per batch (default 100000)\n"
            "  -r, --batches N    batches of each loop (default 5)\n"
            "  -w, --warmup N     posts before timing (default 1000)\n"
            "  -b, --backend SPEC backend spec (default uds)\n"
            "  -p, --progress-thread 0|1  the initiator's (default 1)\n"
            "  -h, --help         this help\n");
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "posts", required_argument, NULL, 'n' },
        { "batches", required_argument, NULL, 'r' },
        { "warmup", required_argument, NULL, 'w' },
        { "backend", required_argument, NULL, 'b' },
        { "progress-thread", required_argument, NULL, 'p' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    char *end;
    long v;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:r:w:b:p:h", longopts, NULL)) !=
           -1) {
        if (c == 'h') {
            usage(stdout);
            exit(0);
        }
        if (c == 'b') {
            o->backend = optarg;
            continue;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "py-post-c: unknown option or missing argument "
                    "in '%s'; try --help.\n", argv[optind - 1]);
            return -1;
        }
        v = strtol(optarg, &end, 10);
        if (end == optarg || *end != '\0' || v < (c == 'n' || c == 'r') ||
            v > (c == 'p' ? 1 : 100000000)) {
            fprintf(stderr, "py-post-c: option -%c: bad value '%s'.\n", c,
                    optarg);
            return -1;
        }
        switch (c) {
        case 'n': o->posts = v; break;
        case 'r': o->batches = v; break;
        case 'w': o->warmup = v; break;
        case 'p': o->progress_thread = (int)v; break;
        default: break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "py-post-c: unexpected argument '%s'.\n",
                argv[optind]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = { 100000, 5, 1000, "uds", 1 };
    double *pw, *pa;
    long late = 0;
    ip_peer_t p;
    xfer_agent_t *ini;

    if (parse_options(argc, argv, &o))
        return 2;
    pw = calloc((size_t)o.batches, sizeof(*pw));
    pa = calloc((size_t)o.batches, sizeof(*pa));
    if (pw == NULL || pa == NULL) {
        fprintf(stderr, "py-post-c: out of memory\n");
        return 1;
    }
    ini = ip_agent("py-post-initiator", &o.backend, 1, o.progress_thread);
    ip_peer_open(&p, ini, o.backend, "py-post-target", 8);
    memcpy(p.lbuf, "8 bytes!", 8);

    post_wait(p.req, o.warmup > 0 ? o.warmup : 1);
    for (long b = 0; b < o.batches; b++) {
        pw[b] = post_wait(p.req, o.posts);
        pa[b] = post_alone(p.req, o.posts, &late);
    }
    printf("# py-post-c, libxfer %s: backend %s, prepared WRITE of 1 x 8 B "
           "(xfer_mem_alloc), initiator progress thread %s, %ld batches of "
           "%ld posts\n", xfer_version(), o.backend,
           o.progress_thread ? "on" : "off", o.batches, o.posts);
    printf("post_wait_ns %.1f\n", ip_quantile(pw, (size_t)o.batches, 0.5));
    printf("post_ns %.1f\n", ip_quantile(pa, (size_t)o.batches, 0.5));
    printf("completed_in_call %ld/%ld\n", o.batches * o.posts - late,
           o.batches * o.posts);
    if (memcmp(p.rbuf, "8 bytes!", 8) != 0) {
        printf("bytes WRONG\n");
        return 1;
    }
    printf("bytes ok\n");
    ip_peer_close(&p, ini);
    xfer_agent_destroy(ini);
    free(pw);
    free(pa);
    return 0;
}
