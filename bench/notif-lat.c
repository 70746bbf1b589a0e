/* notif-lat.c - round-trip time of an 8-byte WRITE with a notification:
 * the initiator posts it, the target's application takes the notification
 * (xfer_notif_fd + xfer_notif_drain) and answers with a notification of
 * its own, the initiator waits for that answer.  With --nats URL the
 * target runs the event plane and publishes every notification it
 * receives (xfer_events_notif), the cost docs/performance.md compares. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xfer/xfer.h>

struct options {
    long iters, warmup;
    const char *backend;
    const char *nats;          /* NULL: no event plane */
};

struct bench {
    xfer_agent_t *ini, *tgt;
    char tname[XFER_NAME_MAX + 1];
    _Atomic int stop;
    int ini_fd, tgt_fd;
    long answered;             /* by the target's thread */
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

static int fail(xfer_status_t st, const char *what)
{
    fprintf(stderr, "notif-lat: %s: %s (%s)\n", what, xfer_strerror(st),
            xfer_last_error());
    return -1;
}

static void count_cb(void *arg, const char *from, const void *msg, size_t len)
{
    (void)from, (void)msg, (void)len;
    (*(size_t *)arg)++;
}

/* The target's application: each notification answered with one. */
static void *responder(void *arg)
{
    struct bench *b = arg;
    char ini[XFER_NAME_MAX + 1];

    snprintf(ini, sizeof(ini), "%s", xfer_agent_name(b->ini));
    while (!atomic_load(&b->stop)) {
        struct pollfd p = {.fd = b->tgt_fd, .events = POLLIN};
        size_t n = 0;

        if (poll(&p, 1, 100) <= 0)
            continue;
        if (xfer_notif_drain(b->tgt, count_cb, &n, NULL) != XFER_OK)
            break;
        for (size_t i = 0; i < n; i++)
            if (xfer_notif_send(b->tgt, ini, "a", 1, NULL) == XFER_OK)
                b->answered++;
    }
    return NULL;
}

/* Wait for one answer on the initiator's notification fd. */
static int await_answer(struct bench *b)
{
    size_t n = 0;
    uint64_t end = now_ns() + 10000000000ull;

    while (n == 0) {
        struct pollfd p = {.fd = b->ini_fd, .events = POLLIN};

        if (now_ns() > end) {
            fprintf(stderr, "notif-lat: no answer within 10 s\n");
            return -1;
        }
        if (poll(&p, 1, 100) > 0 &&
            xfer_notif_drain(b->ini, count_cb, &n, NULL) != XFER_OK)
            return fail(XFER_ERR_BACKEND, "drain");
    }
    return 0;
}

static int setup(struct bench *b, const struct options *o, void **lbuf,
                 void **tbuf, xfer_req_t **req)
{
    xfer_agent_opts_t ao;
    xfer_desc_t d;
    xfer_dlist_t l = {XFER_MEM_DRAM, 1, &d};
    xfer_mem_t *m; /* freed with its agent */
    char *blob = NULL;
    size_t len;
    xfer_status_t st;

    xfer_agent_opts_init(&ao);
    ao.name = "notif-lat-target";
    ao.nats_url = o->nats;
    if ((st = xfer_agent_create(&ao, &b->tgt)) != XFER_OK)
        return fail(st, "create the target");
    xfer_agent_opts_init(&ao);
    ao.name = "notif-lat-initiator";
    if ((st = xfer_agent_create(&ao, &b->ini)) != XFER_OK)
        return fail(st, "create the initiator");
    if ((st = xfer_backend_add(b->tgt, o->backend, NULL)) != XFER_OK ||
        (st = xfer_backend_add(b->ini, o->backend, NULL)) != XFER_OK)
        return fail(st, o->backend);
    if (o->nats && (st = xfer_events_notif(b->tgt, NULL, 1)) != XFER_OK)
        return fail(st, "publish notifications");
    *lbuf = calloc(1, 4096);
    *tbuf = calloc(1, 4096);
    if (*lbuf == NULL || *tbuf == NULL)
        return fail(XFER_ERR_NOMEM, "buffers");
    d = (xfer_desc_t){(uintptr_t)*tbuf, 4096, 0};
    if ((st = xfer_mem_register(b->tgt, &l, NULL, &m)) != XFER_OK)
        return fail(st, "register the target");
    d.addr = (uintptr_t)*lbuf;
    if ((st = xfer_mem_register(b->ini, &l, NULL, &m)) != XFER_OK)
        return fail(st, "register the initiator");
    if ((st = xfer_md_get(b->tgt, XFER_MD_ALL, NULL, 0, &blob, &len)) !=
            XFER_OK ||
        (st = xfer_md_load(b->ini, blob, len, b->tname, sizeof(b->tname))) !=
            XFER_OK)
        return fail(st, "metadata");
    xfer_free(blob);
    /* The answers need the initiator loaded at the target too. */
    if ((st = xfer_md_get(b->ini, XFER_MD_CONN, NULL, 0, &blob, &len)) !=
            XFER_OK ||
        (st = xfer_md_load(b->tgt, blob, len, NULL, 0)) != XFER_OK)
        return fail(st, "metadata back");
    xfer_free(blob);
    if ((st = xfer_notif_fd(b->ini, &b->ini_fd)) != XFER_OK ||
        (st = xfer_notif_fd(b->tgt, &b->tgt_fd)) != XFER_OK)
        return fail(st, "notification fds");
    {
        xfer_desc_t ld = {(uintptr_t)*lbuf, 8, 0}, rd = {(uintptr_t)*tbuf, 8, 0};
        xfer_dlist_t ll = {XFER_MEM_DRAM, 1, &ld}, rl = {XFER_MEM_DRAM, 1, &rd};

        if ((st = xfer_req_create(b->ini, XFER_OP_WRITE, &ll, &rl, b->tname,
                                  NULL, req)) != XFER_OK)
            return fail(st, "create the request");
    }
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: notif-lat [-n ITERS] [-w WARMUP] [-b SPEC] [--nats URL]\n"
            "Round trip of an 8 B WRITE with a notification and the "
            "target's answer.\n\n"
            "  -n, --iters N    timed round trips (default 20000)\n"
            "  -w, --warmup N   round trips before timing (default 500)\n"
            "  -b, --backend S  backend spec (default tcp)\n"
            "  --nats URL       the target publishes every notification it\n"
            "                   receives on this NATS server\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"iters", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {"backend", required_argument, NULL, 'b'},
        {"nats", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct options o = {20000, 500, "tcp", NULL};
    struct bench b;
    void *lbuf = NULL, *tbuf = NULL;
    xfer_req_t *req = NULL;
    pthread_t th;
    uint64_t *t;
    xfer_status_t st;
    int c, rc = 1, started = 0;

    while ((c = getopt_long(argc, argv, "n:w:b:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': o.iters = strtol(optarg, NULL, 10); break;
        case 'w': o.warmup = strtol(optarg, NULL, 10); break;
        case 'b': o.backend = optarg; break;
        case 'N': o.nats = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (o.iters < 1 || o.warmup < 0) {
        fprintf(stderr, "notif-lat: -n must be at least 1, -w at least 0\n");
        return 2;
    }
    t = calloc((size_t)o.iters, sizeof(*t));
    memset(&b, 0, sizeof(b));
    if (t == NULL || setup(&b, &o, &lbuf, &tbuf, &req))
        goto out;
    if (pthread_create(&th, NULL, responder, &b) != 0)
        goto out;
    started = 1;
    for (long k = -o.warmup; k < o.iters; k++) {
        uint64_t t0 = now_ns();

        st = xfer_req_post(req, "n", 1);
        if (st == XFER_IN_PROG)
            st = xfer_req_wait(req, 10000);
        if (st != XFER_OK) {
            fail(st, "WRITE");
            goto out;
        }
        if (await_answer(&b))
            goto out;
        if (k >= 0)
            t[k] = now_ns() - t0;
    }
    qsort(t, (size_t)o.iters, sizeof(*t), cmp_u64);
    printf("# notif-lat, libxfer %s: backend %s, %ld round trips, event "
           "plane %s\n", xfer_version(), o.backend, o.iters,
           o.nats ? "on, notifications published" : "off");
    printf("median_us %.2f p99_us %.2f\n", (double)t[o.iters / 2] / 1e3,
           (double)t[o.iters * 99 / 100] / 1e3);
    rc = 0;
out:
    atomic_store(&b.stop, 1);
    if (started)
        pthread_join(th, NULL);
    if (req != NULL)
        xfer_req_release(req);
    xfer_agent_destroy(b.ini);
    xfer_agent_destroy(b.tgt);
    free(lbuf);
    free(tbuf);
    free(t);
    return rc;
}
