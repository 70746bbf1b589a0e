/* post-overhead.c - what xfer_req_post costs per descriptor for a prepared
 * request, against a raw writev of the same frames as the floor under it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xfer/xfer.h>

/* Descriptors start STRIDE bytes apart, or size + STRIDE when they are
 * that long: a gap between neighbours, so no backend can merge them. */
#define STRIDE 64
/* The largest -s: 1024 descriptors then span 64 MiB on each side. */
#define MAX_SIZE 65536

/* The software backends' per-segment frame header (docs/wire-tcp.md),
 * repeated here because a benchmark sees only the public API. */
#define FRAME_HEADER 40

struct options {
    long posts, warmup;
    size_t ndesc, size;
    const char *backend;
    int telemetry;  /* the agents' opts telemetry */
};

static size_t stride_of(size_t size)
{
    return size < STRIDE ? STRIDE : size + STRIDE;
}

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

struct stats {
    double median, p99; /* ns per post */
};

static struct stats stats_of(uint64_t *t, long n)
{
    struct stats s;

    qsort(t, (size_t)n, sizeof(*t), cmp_u64);
    s.median = (double)t[n / 2];
    s.p99 = (double)t[(size_t)((double)(n - 1) * 0.99)];
    return s;
}

static int report(xfer_status_t st, const char *what)
{
    fprintf(stderr, "post-overhead: %s: %s (%s)\n", what, xfer_strerror(st),
            xfer_last_error());
    return -1;
}

/* ---- the raw floor: the same frames written with writev ------------ */

/* A forked reader drains a loopback TCP connection while we time the
 * writev calls that put ndesc (header, payload) pairs into it.  Done
 * before any agent exists, so fork() is safe. */
static int raw_floor(const struct options *o, uint64_t *t, struct stats *out)
{
    size_t niov = 2 * o->ndesc, i, done;
    struct iovec *iov = calloc(niov, sizeof(*iov));
    char *hdr = calloc(o->ndesc, FRAME_HEADER);
    char *data = calloc(o->ndesc, o->size);
    struct sockaddr_in addr;
    socklen_t alen = sizeof(addr);
    int lfd = -1, fd = -1, one = 1, status, rc = -1;
    pid_t pid = -1;
    long k;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (iov == NULL || hdr == NULL || data == NULL)
        goto out;
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0)
        goto out;
    fflush(stdout);
    if ((pid = fork()) < 0)
        goto out;
    if (pid == 0) {
        char sink[1 << 16];
        int c = accept(lfd, NULL, NULL);

        while (c >= 0 && read(c, sink, sizeof(sink)) > 0)
            ;
        _exit(0);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        goto out;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (i = 0; i < o->ndesc; i++) {
        iov[2 * i] = (struct iovec){ hdr + i * FRAME_HEADER, FRAME_HEADER };
        iov[2 * i + 1] = (struct iovec){ data + i * o->size, o->size };
    }
    for (k = -o->warmup; k < o->posts; k++) {
        uint64_t t0 = now_ns();

        /* Plain writev loop; a short write ends the sample (the reader
         * keeps up, so it does not happen in practice). */
        for (done = 0; done < niov; done += IOV_MAX) {
            size_t n = niov - done < IOV_MAX ? niov - done : IOV_MAX;

            if (writev(fd, iov + done, (int)n) < 0)
                goto out;
        }
        if (k >= 0)
            t[k] = now_ns() - t0;
    }
    *out = stats_of(t, o->posts);
    rc = 0;
out:
    if (rc != 0)
        perror("post-overhead: raw writev floor");
    if (fd >= 0)
        close(fd);
    if (lfd >= 0)
        close(lfd);
    if (pid > 0) {
        if (fd < 0)
            kill(pid, SIGTERM); /* never connected: it waits in accept */
        waitpid(pid, &status, 0);
    }
    free(iov);
    free(hdr);
    free(data);
    return rc;
}

/* ---- the library: two agents in this process ----------------------- */

struct pair {
    xfer_agent_t *target, *init;
    xfer_mem_t *tmem, *imem;
    unsigned char *tbuf, *ibuf;
    xfer_prep_t *lprep, *rprep;
    size_t *idx;
};

static int pair_setup(struct pair *p, const struct options *o)
{
    size_t stride = stride_of(o->size), len = o->ndesc * stride, i;
    xfer_desc_t *descs = calloc(o->ndesc, sizeof(*descs));
    xfer_agent_opts_t aopts;
    char *blob = NULL, peer[XFER_NAME_MAX + 1];
    size_t blob_len;
    xfer_status_t st;
    int rc = -1;

    p->tbuf = calloc(1, len);
    p->ibuf = calloc(1, len);
    p->idx = calloc(o->ndesc, sizeof(*p->idx));
    if (descs == NULL || p->tbuf == NULL || p->ibuf == NULL ||
        p->idx == NULL) {
        fprintf(stderr, "post-overhead: out of memory\n");
        goto out;
    }

    /* The target serves from its progress thread.  The initiator has
     * none: nothing else takes its lock while a post is timed, and the
     * status polls between posts drive its side. */
    xfer_agent_opts_init(&aopts);
    aopts.telemetry = o->telemetry;
    aopts.name = "post-overhead-target";
    if ((st = xfer_agent_create(&aopts, &p->target)) != XFER_OK)
        goto fail;
    aopts.name = "post-overhead-initiator";
    aopts.progress_thread = 0;
    if ((st = xfer_agent_create(&aopts, &p->init)) != XFER_OK ||
        (st = xfer_backend_add(p->target, o->backend, NULL)) != XFER_OK ||
        (st = xfer_backend_add(p->init, o->backend, NULL)) != XFER_OK)
        goto fail;

    xfer_desc_t whole = { (uintptr_t)p->tbuf, len, 0 };
    xfer_dlist_t list = { XFER_MEM_DRAM, 1, &whole };
    if ((st = xfer_mem_register(p->target, &list, NULL, &p->tmem)) !=
        XFER_OK)
        goto fail;
    whole.addr = (uintptr_t)p->ibuf;
    if ((st = xfer_mem_register(p->init, &list, NULL, &p->imem)) != XFER_OK ||
        (st = xfer_md_get(p->target, XFER_MD_ALL, NULL, 0, &blob,
                          &blob_len)) != XFER_OK ||
        (st = xfer_md_load(p->init, blob, blob_len, peer, sizeof(peer))) !=
            XFER_OK)
        goto fail;

    list.count = o->ndesc;
    list.descs = descs;
    for (i = 0; i < o->ndesc; i++) {
        descs[i] = (xfer_desc_t){ (uintptr_t)p->ibuf + i * stride, o->size,
                                  0 };
        p->idx[i] = i;
    }
    if ((st = xfer_prep_create(p->init, &list, NULL, &p->lprep)) != XFER_OK)
        goto fail;
    for (i = 0; i < o->ndesc; i++)
        descs[i].addr = (uintptr_t)p->tbuf + i * stride;
    if ((st = xfer_prep_create(p->init, &list, peer, &p->rprep)) != XFER_OK)
        goto fail;
    rc = 0;
    goto out;
fail:
    report(st, "setup");
out:
    xfer_free(blob);
    free(descs);
    return rc;
}

static void pair_teardown(struct pair *p)
{
    if (p->lprep != NULL)
        xfer_prep_release(p->lprep);
    if (p->rprep != NULL)
        xfer_prep_release(p->rprep);
    if (p->imem != NULL)
        xfer_mem_deregister(p->init, p->imem);
    if (p->tmem != NULL)
        xfer_mem_deregister(p->target, p->tmem);
    xfer_agent_destroy(p->init);
    xfer_agent_destroy(p->target);
    free(p->tbuf);
    free(p->ibuf);
    free(p->idx);
}

/* Time xfer_req_post alone for a prepared request of n descriptors;
 * completion is awaited outside the timed region. */
static int time_posts(struct pair *p, const struct options *o, size_t n,
                      uint64_t *t, struct stats *out)
{
    xfer_req_t *req = NULL;
    xfer_status_t st;
    long k;

    st = xfer_req_create_prepped(p->init, XFER_OP_WRITE, p->lprep, p->idx,
                                 p->rprep, p->idx, n, NULL, &req);
    if (st != XFER_OK)
        return report(st, "create request");
    for (k = -o->warmup; k < o->posts; k++) {
        uint64_t t0 = now_ns();

        st = xfer_req_post(req, NULL, 0);
        if (k >= 0)
            t[k] = now_ns() - t0;
        while (st == XFER_IN_PROG)
            st = xfer_req_status(req);
        if (st != XFER_OK) {
            report(st, "WRITE");
            xfer_req_release(req);
            return -1;
        }
    }
    *out = stats_of(t, o->posts);
    if ((st = xfer_req_release(req)) != XFER_OK)
        return report(st, "release request");
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: post-overhead [-n POSTS] [-w WARMUP] [-d DESCS] [-s SIZE]"
            " [-b SPEC]\n"
            "Time xfer_req_post of a prepared WRITE between two agents of\n"
            "this process; report ns per descriptor.\n\n"
            "  -n, --posts N      timed posts (default 10000)\n"
            "  -w, --warmup N     posts before timing (default 100)\n"
            "  -d, --descs N      descriptors per request (default 1024)\n"
            "  -s, --size BYTES   bytes per descriptor (default 8, max %d)\n"
            "  -b, --backend SPEC backend spec (default tcp)\n"
            "  -t, --telemetry 0|1  the agents keep telemetry counters\n"
            "                     (default 1, as agents do)\n"
            "  -h, --help         this help\n",
            MAX_SIZE);
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "posts", required_argument, NULL, 'n' },
        { "warmup", required_argument, NULL, 'w' },
        { "descs", required_argument, NULL, 'd' },
        { "size", required_argument, NULL, 's' },
        { "backend", required_argument, NULL, 'b' },
        { "telemetry", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    char *end;
    long v;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:w:d:s:b:t:h", longopts, NULL)) !=
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
            fprintf(stderr, "post-overhead: unknown option or missing "
                    "argument in '%s'; try --help.\n", argv[optind - 1]);
            return -1;
        }
        errno = 0;
        v = strtol(optarg, &end, 10);
        if (errno != 0 || end == optarg || *end != '\0' ||
            v < (c == 'w' || c == 't' ? 0 : 1) || (c == 's' && v > MAX_SIZE) ||
            (c == 't' && v > 1)) {
            fprintf(stderr, "post-overhead: option -%c: bad value '%s'.\n", c,
                    optarg);
            return -1;
        }
        switch (c) {
        case 'n': o->posts = v; break;
        case 'w': o->warmup = v; break;
        case 'd': o->ndesc = (size_t)v; break;
        case 's': o->size = (size_t)v; break;
        case 't': o->telemetry = (int)v; break;
        default: break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "post-overhead: unexpected argument '%s'.\n",
                argv[optind]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = { 10000, 100, 1024, 8, "tcp", 1 };
    struct stats full, one, raw;
    struct pair p;
    uint64_t *t;
    double d;
    int rc = 1;

    if (parse_options(argc, argv, &o))
        return 2;
    t = calloc((size_t)o.posts, sizeof(*t));
    if (t == NULL) {
        fprintf(stderr, "post-overhead: out of memory\n");
        return 1;
    }
    memset(&p, 0, sizeof(p));
    if (raw_floor(&o, t, &raw) || pair_setup(&p, &o) ||
        time_posts(&p, &o, o.ndesc, t, &full) ||
        time_posts(&p, &o, 1, t, &one))
        goto out;

    d = (double)o.ndesc;
    printf("# post-overhead, libxfer %s: backend %s, prepared WRITE of %zu "
           "x %zu B, %ld posts timed, telemetry %s\n", xfer_version(),
           o.backend, o.ndesc, o.size, o.posts, o.telemetry ? "on" : "off");
    printf("# times include the backend writing its frames into the socket; "
           "the rows below split that out\n");
    printf("%-34s %14s %14s %14s\n", "measurement", "median_ns/desc",
           "p99_ns/desc", "median_ns/post");
    printf("%-34s %14.1f %14.1f %14.0f\n", "xfer_req_post, all descriptors",
           full.median / d, full.p99 / d, full.median);
    printf("%-34s %14s %14s %14.0f\n", "xfer_req_post, 1 descriptor", "-",
           "-", one.median);
    if (o.ndesc > 1)
        printf("%-34s %14.1f %14s %14s\n", "  marginal cost per descriptor",
               (full.median - one.median) / (d - 1), "-", "-");
    printf("%-34s %14.1f %14.1f %14.0f\n", "raw writev of the frames (floor)",
           raw.median / d, raw.p99 / d, raw.median);
    printf("%-34s %14.1f %14s %14s\n", "  core + backend above the floor",
           (full.median - raw.median) / d, "-", "-");
    rc = 0;
out:
    pair_teardown(&p);
    free(t);
    return rc;
}
