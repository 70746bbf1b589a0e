/* ofi-rma.c - the raw libfabric baseline the ofi backend is measured
 * against: the same RMA loop (post, wait for completion) with no xfer.
 *
 * One process forks a target and an initiator before either touches
 * libfabric.  Each opens an FI_EP_RDM endpoint of the provider asked for
 * (caps FI_MSG | FI_RMA, tx op_flags FI_DELIVERY_COMPLETE: a completion
 * means the data is visible at the target, as the ofi backend promises)
 * and registers one buffer as the provider's mr_mode demands.  Endpoint
 * names, buffer address and key travel over a socketpair.  The initiator
 * then times WRITEs or READs of `batch` segments of `size` bytes:
 *
 *   batch mode   post every segment, then wait for all their completions
 *                (xfer-bench: one request of `batch` blocks);
 *   --window     keep `batch` segments in flight, each reposted as soon
 *                as it completes (xfer-bench --pipeline-depth `batch`).
 *
 * The target only drives progress (manual-progress providers need it).
 * Afterwards the bytes are checked where they landed, so a run that
 * moved nothing cannot pass for a fast one. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

/* The libfabric API this program is written against (Debian 12's). */
#define API_VERSION FI_VERSION(1, 17)

/* Room for an endpoint name (fi_getname); EFA's is 32 bytes, an IPv6
 * sockaddr 28. */
#define NAME_BYTES 256

/* Completions taken per fi_cq_read. */
#define CQ_BATCH 16

/* Empty CQ polls between looks at the clock and at the control socket:
 * often enough to notice a dead peer at once, rare enough to cost
 * nothing. */
#define IDLE_CHECK_EVERY 1024

/* The mr_mode bits this program honours.  A provider that needs another
 * (FI_MR_RAW keys, FI_MR_RMA_EVENT, FI_MR_HMEM, ...) is then not offered
 * by fi_getinfo, rather than used wrongly. */
#define MR_MODE_HANDLED \
    (FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | \
     FI_MR_ENDPOINT)

/* Our keys where the provider lets us choose them (no FI_MR_PROV_KEY);
 * each process has a domain of its own. */
#define KEY_TARGET 1
#define KEY_INITIATOR 2

/* What the target answers to the initiator's "done". */
#define VERDICT_OK UINT64_MAX

enum rma_op { OP_WRITE, OP_READ };

struct options {
    const char *provider;
    const char *domain;  /* NULL: the provider's first */
    enum rma_op op;
    size_t size;         /* bytes per segment */
    size_t batch;        /* segments per post (window: in flight) */
    int window;          /* reposts each segment as it completes */
    int more;            /* FI_MORE on all but a batch's last post */
    long posts, warmup;  /* window: a post is one segment */
    double timeout;      /* seconds without a completion */
};

/* One process's libfabric objects and its registered buffer. */
struct fab {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av *av;
    struct fid_cq *cq;
    struct fid_ep *ep;
    struct fid_mr *mr;
    void *desc;          /* fi_mr_desc: required with FI_MR_LOCAL */
    unsigned char *buf;
    size_t len;
    fi_addr_t peer;
};

/* What each side tells the other over the control socket.  Both are
 * this binary on this host, so the struct goes as it is. */
struct hello {
    uint64_t name_len;
    uint64_t base;       /* RMA address of buf[0]: its virtual address
                            (FI_MR_VIRT_ADDR) or 0 (offsets) */
    uint64_t key;
    uint64_t len;
    unsigned char name[NAME_BYTES];
};

/* One segment's operation.  The provider's context room comes first:
 * with FI_CONTEXT or FI_CONTEXT2 in its mode it owns those bytes while
 * the operation is in flight, and op_context points at them. */
struct op {
    struct fi_context2 ctx;
    size_t off;          /* of its segment, in both buffers */
    long post;           /* window mode: the post it carries */
    uint64_t t0;
};

/* The initiator's measured loop. */
struct run {
    struct fab *f;
    const struct options *o;
    int ctl;             /* control socket: readable = the target left */
    uint64_t raddr, rkey;
    struct op *ops;      /* batch of them */
    struct op **ready;   /* window mode: ops free to post, a ring */
    uint64_t *lat;       /* ns per timed post */
    uint64_t *posting;   /* batch mode: ns from a post's first segment
                            posted to its last accepted */
    uint64_t t_start, t_last;
    long idle, completed;
};

static const char *side = "ofi-rma";

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A libfabric call that returned ret < 0, as a sentence; returns -1. */
static int fi_fail(const char *call, long ret)
{
    fprintf(stderr, "%s: %s failed: %s (%ld).\n", side, call,
            fi_strerror((int)-ret), ret);
    return -1;
}

static const char *op_name(enum rma_op op)
{
    return op == OP_WRITE ? "WRITE" : "READ";
}

/* Byte i of what WRITE sends and READ fetches: a multiplicative hash,
 * so a segment landing at the wrong offset shows. */
static unsigned char pattern(size_t i)
{
    return (unsigned char)((uint32_t)(i * 2654435761u) >> 24);
}

static void fill(unsigned char *buf, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        buf[i] = pattern(i);
}

/* The first offset where buf is not the pattern, or VERDICT_OK. */
static uint64_t check(const unsigned char *buf, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (buf[i] != pattern(i))
            return i;
    return VERDICT_OK;
}

/* ---- control socket ------------------------------------------------ */

/* send_full and recv_full return -1 quietly when the other process has
 * gone: it says why itself (or main reports the signal that ended it). */
static int send_full(int fd, const void *p, size_t len)
{
    const char *c = p;

    while (len > 0) {
        ssize_t n = send(fd, c, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EPIPE && errno != ECONNRESET)
                fprintf(stderr, "%s: control socket: %s.\n", side,
                        strerror(errno));
            return -1;
        }
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_full(int fd, void *p, size_t len)
{
    char *c = p;

    while (len > 0) {
        ssize_t n = recv(fd, c, len, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno != ECONNRESET)
                fprintf(stderr, "%s: control socket: %s.\n", side,
                        strerror(errno));
            return -1;
        }
        c += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 1 when fd has something to read (or hung up), without waiting. */
static int readable(int fd)
{
    struct pollfd p = { fd, POLLIN, 0 };

    return poll(&p, 1, 0) > 0;
}

/* ---- libfabric objects --------------------------------------------- */

static int fab_getinfo(struct fab *f, const struct options *o)
{
    struct fi_info *hints = fi_allocinfo(), *list, *pick;
    int ret;

    if (hints == NULL) {
        fprintf(stderr, "%s: out of memory for fi_info hints.\n", side);
        return -1;
    }
    hints->ep_attr->type = FI_EP_RDM;
    hints->caps = FI_MSG | FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ |
                  FI_REMOTE_WRITE;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->domain_attr->mr_mode = MR_MODE_HANDLED;
    /* One thread per process touches the domain. */
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->tx_attr->op_flags = FI_DELIVERY_COMPLETE;
    /* fi_freeinfo frees the string with the hints.  The domain is
     * picked below: layered providers (ofi_rxm) ignore a domain name in
     * the hints. */
    hints->fabric_attr->prov_name = strdup(o->provider);
    if (hints->fabric_attr->prov_name == NULL) {
        fi_freeinfo(hints);
        fprintf(stderr, "%s: out of memory for fi_info hints.\n", side);
        return -1;
    }
    ret = fi_getinfo(API_VERSION, NULL, NULL, 0, hints, &list);
    fi_freeinfo(hints);
    if (ret == -FI_ENODATA) {
        fprintf(stderr,
                "%s: provider \"%s\" offers no FI_EP_RDM endpoint with "
                "FI_RMA, FI_DELIVERY_COMPLETE and an mr_mode within "
                "FI_MR_LOCAL, VIRT_ADDR, ALLOCATED, PROV_KEY, ENDPOINT "
                "(`fi_info -p '%s' -t FI_EP_RDM` lists what it has).\n",
                side, o->provider, o->provider);
        return -1;
    }
    if (ret != 0)
        return fi_fail("fi_getinfo", ret);
    for (pick = list; pick != NULL && o->domain != NULL; pick = pick->next)
        if (strcmp(pick->domain_attr->name, o->domain) == 0)
            break;
    if (pick == NULL) {
        fprintf(stderr, "%s: provider \"%s\" has no domain \"%s\"; it "
                "offers:", side, o->provider, o->domain);
        for (pick = list; pick != NULL; pick = pick->next) {
            const struct fi_info *seen = list;

            while (seen != pick && strcmp(seen->domain_attr->name,
                                          pick->domain_attr->name) != 0)
                seen = seen->next;
            if (seen == pick)
                fprintf(stderr, " %s", pick->domain_attr->name);
        }
        fprintf(stderr, ".\n");
        fi_freeinfo(list);
        return -1;
    }
    f->info = fi_dupinfo(pick);
    fi_freeinfo(list);
    if (f->info == NULL) {
        fprintf(stderr, "%s: out of memory for fi_dupinfo.\n", side);
        return -1;
    }
    if (o->size > f->info->ep_attr->max_msg_size) {
        fprintf(stderr, "%s: --size %zu is above the provider's "
                "max_msg_size %zu.\n", side, o->size,
                f->info->ep_attr->max_msg_size);
        return -1;
    }
    return 0;
}

/* The endpoint, its CQ and AV, and the registered buffer of len bytes
 * with the access given; key is ours unless the provider chooses. */
static int fab_open(struct fab *f, const struct options *o, size_t len,
                    uint64_t access, uint64_t key)
{
    struct fi_cq_attr cq_attr;
    struct fi_av_attr av_attr;
    void *buf;
    int ret, mr_mode;

    if (fab_getinfo(f, o) != 0)
        return -1;
    mr_mode = f->info->domain_attr->mr_mode;
    if ((ret = fi_fabric(f->info->fabric_attr, &f->fabric, NULL)) != 0)
        return fi_fail("fi_fabric", ret);
    if ((ret = fi_domain(f->fabric, f->info, &f->domain, NULL)) != 0)
        return fi_fail("fi_domain", ret);

    /* Polled, never waited on: no wait object. */
    memset(&cq_attr, 0, sizeof(cq_attr));
    cq_attr.format = FI_CQ_FORMAT_CONTEXT;
    cq_attr.wait_obj = FI_WAIT_NONE;
    cq_attr.size = f->info->tx_attr->size;
    if ((ret = fi_cq_open(f->domain, &cq_attr, &f->cq, NULL)) != 0)
        return fi_fail("fi_cq_open", ret);
    memset(&av_attr, 0, sizeof(av_attr));
    av_attr.type = f->info->domain_attr->av_type;
    av_attr.count = 1;
    if ((ret = fi_av_open(f->domain, &av_attr, &f->av, NULL)) != 0)
        return fi_fail("fi_av_open", ret);
    if ((ret = fi_endpoint(f->domain, f->info, &f->ep, NULL)) != 0)
        return fi_fail("fi_endpoint", ret);
    if ((ret = fi_ep_bind(f->ep, &f->av->fid, 0)) != 0)
        return fi_fail("fi_ep_bind (AV)", ret);
    if ((ret = fi_ep_bind(f->ep, &f->cq->fid, FI_TRANSMIT | FI_RECV)) != 0)
        return fi_fail("fi_ep_bind (CQ)", ret);
    if ((ret = fi_enable(f->ep)) != 0)
        return fi_fail("fi_enable", ret);

    /* Page-aligned and touched before registration, as xfer-bench's
     * --alloc malloc buffers are. */
    if (posix_memalign(&buf, (size_t)sysconf(_SC_PAGESIZE), len) != 0) {
        fprintf(stderr, "%s: out of memory for a %zu-byte buffer.\n", side,
                len);
        return -1;
    }
    f->buf = buf;
    f->len = len;
    memset(f->buf, 0, len);
    ret = fi_mr_reg(f->domain, f->buf, len, access, 0, key, 0, &f->mr, NULL);
    if (ret != 0)
        return fi_fail("fi_mr_reg", ret);
    if (mr_mode & FI_MR_ENDPOINT) {
        if ((ret = fi_mr_bind(f->mr, &f->ep->fid, 0)) != 0)
            return fi_fail("fi_mr_bind", ret);
        if ((ret = fi_mr_enable(f->mr)) != 0)
            return fi_fail("fi_mr_enable", ret);
    }
    /* Passed with every operation: FI_MR_LOCAL requires it, and without
     * that bit providers ignore it. */
    f->desc = fi_mr_desc(f->mr);
    return 0;
}

static void fab_close(struct fab *f)
{
    /* The endpoint first: it holds references to the rest. */
    if (f->ep != NULL)
        fi_close(&f->ep->fid);
    if (f->mr != NULL)
        fi_close(&f->mr->fid);
    if (f->av != NULL)
        fi_close(&f->av->fid);
    if (f->cq != NULL)
        fi_close(&f->cq->fid);
    if (f->domain != NULL)
        fi_close(&f->domain->fid);
    if (f->fabric != NULL)
        fi_close(&f->fabric->fid);
    if (f->info != NULL)
        fi_freeinfo(f->info);
    free(f->buf);
}

/* Our endpoint name and buffer, to the peer. */
static int hello_send(const struct fab *f, int ctl)
{
    struct hello me;
    size_t name_len = sizeof(me.name);
    int ret;

    memset(&me, 0, sizeof(me));
    if ((ret = fi_getname(&f->ep->fid, me.name, &name_len)) != 0)
        return fi_fail("fi_getname", ret);
    me.name_len = name_len;
    me.base = (f->info->domain_attr->mr_mode & FI_MR_VIRT_ADDR)
                  ? (uint64_t)(uintptr_t)f->buf : 0;
    me.key = fi_mr_key(f->mr);
    me.len = f->len;
    return send_full(ctl, &me, sizeof(me));
}

static int hello_recv(int ctl, struct hello *peer)
{
    if (recv_full(ctl, peer, sizeof(*peer)) != 0)
        return -1;
    if (peer->name_len > sizeof(peer->name)) {
        fprintf(stderr, "%s: the peer's endpoint name is %" PRIu64
                " bytes, more than %zu.\n", side, peer->name_len,
                sizeof(peer->name));
        return -1;
    }
    return 0;
}

static int peer_insert(struct fab *f, const struct hello *peer)
{
    int ret = fi_av_insert(f->av, peer->name, 1, &f->peer, 0, NULL);

    if (ret != 1)
        return fi_fail("fi_av_insert", ret < 0 ? ret : -FI_EINVAL);
    return 0;
}

/* The error entry behind -FI_EAVAIL, as a sentence; returns -1. */
static int cq_error(struct fid_cq *cq, const char *what)
{
    struct fi_cq_err_entry err;
    ssize_t ret;

    memset(&err, 0, sizeof(err));
    ret = fi_cq_readerr(cq, &err, 0);
    if (ret < 0)
        return fi_fail("fi_cq_readerr", ret);
    fprintf(stderr, "%s: %s completed with an error: %s (%d); provider: "
            "%s.\n", side, what, fi_strerror(err.err), err.err,
            fi_cq_strerror(cq, err.prov_errno, err.err_data, NULL, 0));
    return -1;
}

/* ---- the target ---------------------------------------------------- */

/* Drive progress until the initiator says it is done, check a WRITE's
 * bytes and answer with the verdict.  Returns the exit status. */
static int target(const struct options *o, int ctl)
{
    struct fab f;
    struct hello peer;
    struct fi_cq_entry ent[CQ_BATCH];
    uint64_t verdict = VERDICT_OK;
    char c = 'R';
    long spins = 0;
    ssize_t n;
    int rc = 1;

    side = "ofi-rma (target)";
    memset(&f, 0, sizeof(f));
    if (fab_open(&f, o, o->size * o->batch, FI_REMOTE_READ | FI_REMOTE_WRITE,
                 KEY_TARGET) != 0)
        goto out;
    if (o->op == OP_READ)
        fill(f.buf, f.len);
    if (hello_send(&f, ctl) != 0 || hello_recv(ctl, &peer) != 0 ||
        peer_insert(&f, &peer) != 0 || send_full(ctl, &c, 1) != 0)
        goto out;
    for (;;) {
        /* Nothing should complete here; the read is for progress. */
        n = fi_cq_read(f.cq, ent, CQ_BATCH);
        if (n == -FI_EAVAIL) {
            /* Once the initiator has gone, its connection's end is
             * reported here: no news. */
            if (!readable(ctl))
                cq_error(f.cq, "an operation at the target");
            goto out;
        }
        if (n < 0 && n != -FI_EAGAIN) {
            fi_fail("fi_cq_read", n);
            goto out;
        }
        if (++spins % IDLE_CHECK_EVERY == 0 && readable(ctl))
            break;
    }
    if (recv_full(ctl, &c, 1) != 0)
        goto out;
    if (o->op == OP_WRITE)
        verdict = check(f.buf, f.len);
    if (send_full(ctl, &verdict, sizeof(verdict)) != 0)
        goto out;
    /* Wait for the initiator to close its endpoint before ours goes. */
    if (recv(ctl, &c, 1, 0) != 0)
        goto out;
    rc = 0;
out:
    fab_close(&f);
    return rc;
}

/* ---- the initiator ------------------------------------------------- */

static ssize_t post_op(struct run *r, struct op *op, uint64_t more)
{
    struct iovec iov = { r->f->buf + op->off, r->o->size };
    void *desc = r->f->desc;
    struct fi_rma_iov rma = { r->raddr + op->off, r->o->size, r->rkey };
    struct fi_msg_rma msg = {
        .msg_iov = &iov, .desc = &desc, .iov_count = 1, .addr = r->f->peer,
        .rma_iov = &rma, .rma_iov_count = 1, .context = &op->ctx,
        .data = 0,
    };

    /* FI_DELIVERY_COMPLETE again here: the *msg calls take their flags
     * from the call, not from tx_attr->op_flags. */
    if (r->o->op == OP_WRITE)
        return fi_writemsg(r->f->ep, &msg,
                           FI_COMPLETION | FI_DELIVERY_COMPLETE | more);
    return fi_readmsg(r->f->ep, &msg, FI_COMPLETION | more);
}

/* Completed ops into done[] (at most CQ_BATCH); 0 when none, -1 on an
 * error, on CQ silence beyond --timeout or when the target is gone. */
static ssize_t cq_poll(struct run *r, struct op **done)
{
    struct fi_cq_entry ent[CQ_BATCH];
    ssize_t n = fi_cq_read(r->f->cq, ent, CQ_BATCH), i;

    if (n > 0) {
        r->t_last = now_ns();
        r->idle = 0;
        r->completed += n;
        for (i = 0; i < n; i++)
            done[i] = ent[i].op_context;
        return n;
    }
    if (n == -FI_EAVAIL)
        return cq_error(r->f->cq, r->o->op == OP_WRITE ? "a WRITE"
                                                       : "a READ");
    if (n != -FI_EAGAIN)
        return fi_fail("fi_cq_read", n);
    if (++r->idle % IDLE_CHECK_EVERY != 0)
        return 0;
    if ((double)(now_ns() - r->t_last) > r->o->timeout * 1e9) {
        fprintf(stderr, "%s: no completion for %.0f s after %ld of the "
                "run's operations completed.\n", side, r->o->timeout,
                r->completed);
        return -1;
    }
    if (readable(r->ctl)) {
        fprintf(stderr, "%s: the target process ended during the run.\n",
                side);
        return -1;
    }
    return 0;
}

/* Every post: the batch's segments, then all their completions.  On
 * -FI_EAGAIN the queue is full: reading the CQ makes room. */
static int run_batch(struct run *r)
{
    const struct options *o = r->o;
    struct op *done[CQ_BATCH];
    long k;

    for (k = -o->warmup; k < o->posts; k++) {
        uint64_t t0 = now_ns();
        size_t posted = 0, completed = 0;
        ssize_t n;
        int full = 0;

        if (k == 0)
            r->t_start = t0;
        while (completed < o->batch) {
            while (posted < o->batch) {
                /* FI_MORE promises another post at once; after a full
                 * queue that promise is dropped, so nothing the provider
                 * holds back waits on a post that waits on it. */
                uint64_t more = o->more && !full && posted + 1 < o->batch
                                    ? FI_MORE : 0;
                ssize_t ret = post_op(r, &r->ops[posted], more);

                if (ret == -FI_EAGAIN) {
                    full = 1;
                    break;
                }
                if (ret != 0)
                    return fi_fail(o->op == OP_WRITE ? "fi_writemsg"
                                                     : "fi_readmsg", ret);
                if (++posted == o->batch && k >= 0)
                    r->posting[k] = now_ns() - t0;
            }
            n = cq_poll(r, done);
            if (n < 0)
                return -1;
            completed += (size_t)n;
        }
        if (k >= 0)
            r->lat[k] = r->t_last - t0;
    }
    return 0;
}

/* Keep batch segments in flight; each is reposted as it completes.
 * Free ops wait in a ring, first in first out: when the provider takes
 * fewer at once than the window (-FI_EAGAIN), every segment still gets
 * its turn, and the check afterwards sees all of them written. */
static int run_window(struct run *r)
{
    const struct options *o = r->o;
    long total = o->warmup + o->posts, next = 0;
    size_t head = 0, nready = o->batch, i;
    struct op *done[CQ_BATCH];
    ssize_t n;

    for (i = 0; i < o->batch; i++)
        r->ready[i] = &r->ops[i];
    while (r->completed < total) {
        while (nready > 0 && next < total) {
            struct op *op = r->ready[head];
            ssize_t ret;

            op->post = next;
            op->t0 = now_ns();
            if (next == o->warmup)
                r->t_start = op->t0;
            ret = post_op(r, op, 0);
            if (ret == -FI_EAGAIN)
                break;
            if (ret != 0)
                return fi_fail(o->op == OP_WRITE ? "fi_writemsg"
                                                 : "fi_readmsg", ret);
            head = (head + 1) % o->batch;
            nready--;
            next++;
        }
        n = cq_poll(r, done);
        if (n < 0)
            return -1;
        for (i = 0; i < (size_t)n; i++) {
            if (done[i]->post >= o->warmup)
                r->lat[done[i]->post - o->warmup] = r->t_last - done[i]->t0;
            r->ready[(head + nready++) % o->batch] = done[i];
        }
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

/* The p-th quantile of v[0..n-1], which it sorts. */
static uint64_t quantile(uint64_t *v, long n, double p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    return v[(size_t)((double)(n - 1) * p)];
}

static void report(const struct run *r)
{
    const struct options *o = r->o;
    const struct fi_info *info = r->f->info;
    int mr_mode = info->domain_attr->mr_mode;
    enum fi_progress progress = info->domain_attr->data_progress;
    uint32_t v = fi_version();
    size_t per_post = o->window ? 1 : o->batch;
    double bytes = (double)o->posts * (double)per_post * (double)o->size;
    double sum = 0, med, p99;
    char posting[32] = "-";
    long i;

    for (i = 0; i < o->posts; i++)
        sum += (double)r->lat[i];
    med = (double)quantile(r->lat, o->posts, 0.5);
    p99 = (double)quantile(r->lat, o->posts, 0.99);
    if (!o->window)
        snprintf(posting, sizeof(posting), "%.1f",
                 (double)quantile(r->posting, o->posts, 0.5) /
                     (double)o->batch);

    printf("# ofi-rma, libfabric %u.%u: provider %s, fabric %s, domain %s\n",
           FI_MAJOR(v), FI_MINOR(v), info->fabric_attr->prov_name,
           info->fabric_attr->name, info->domain_attr->name);
    /* fi_tostr's buffer is reused by every call: one call a printf. */
    printf("# mr_mode [%s],", fi_tostr(&mr_mode, FI_TYPE_MR_MODE));
    printf(" data progress %s\n", fi_tostr(&progress, FI_TYPE_PROGRESS));
    printf("# %s%s: ", op_name(o->op),
           o->op == OP_WRITE ? " with FI_DELIVERY_COMPLETE" : "");
    if (o->window)
        printf("%zu x %zu B in flight, each reposted as it completes; %ld "
               "timed after %ld\n", o->batch, o->size, o->posts, o->warmup);
    else
        printf("%zu x %zu B posted%s, then all awaited; %ld posts timed "
               "after %ld\n", o->batch, o->size,
               o->more ? " with FI_MORE" : "", o->posts, o->warmup);
    printf("# lat: a post's first segment posted to its last completion; "
           "post_ns_desc: posting alone, per segment (median)\n");
    printf("%-10s %-10s %-9s %-11s %-11s %-11s %-12s\n", "block_size",
           "batch_size", "gbps", "med_lat_us", "avg_lat_us", "p99_lat_us",
           "post_ns_desc");
    printf("%-10zu %-10zu %-9.4f %-11.2f %-11.2f %-11.2f %-12s\n", o->size,
           o->batch, bytes / (double)(r->t_last - r->t_start), med / 1e3,
           sum / (double)o->posts / 1e3, p99 / 1e3, posting);
}

/* Returns the exit status. */
static int initiator(const struct options *o, int ctl)
{
    struct fab f;
    struct hello peer;
    struct run r;
    uint64_t verdict;
    size_t i, len = o->size * o->batch;
    char c;
    int rc = 1;

    side = "ofi-rma (initiator)";
    memset(&f, 0, sizeof(f));
    memset(&r, 0, sizeof(r));
    r.f = &f;
    r.o = o;
    r.ctl = ctl;
    r.ops = calloc(o->batch, sizeof(*r.ops));
    r.ready = calloc(o->batch, sizeof(*r.ready));
    r.lat = calloc((size_t)o->posts, sizeof(*r.lat));
    r.posting = calloc((size_t)o->posts, sizeof(*r.posting));
    if (r.ops == NULL || r.ready == NULL || r.lat == NULL ||
        r.posting == NULL) {
        fprintf(stderr, "%s: out of memory.\n", side);
        goto out;
    }
    /* The target sets up first, so that a provider both would fail to
     * open is reported once, by the target. */
    if (hello_recv(ctl, &peer) != 0 ||
        fab_open(&f, o, len, FI_READ | FI_WRITE, KEY_INITIATOR) != 0)
        goto out;
    if (o->op == OP_WRITE)
        fill(f.buf, len);
    if (hello_send(&f, ctl) != 0 || peer_insert(&f, &peer) != 0 ||
        recv_full(ctl, &c, 1) != 0)
        goto out;
    if (peer.len != len) {
        fprintf(stderr, "%s: the target registered %" PRIu64 " bytes, not "
                "%zu.\n", side, peer.len, len);
        goto out;
    }
    r.raddr = peer.base;
    r.rkey = peer.key;
    for (i = 0; i < o->batch; i++)
        r.ops[i].off = i * o->size;

    r.t_last = now_ns(); /* the timeout counts from here */
    if ((o->window ? run_window(&r) : run_batch(&r)) != 0)
        goto out;

    c = 'D';
    if (send_full(ctl, &c, 1) != 0 ||
        recv_full(ctl, &verdict, sizeof(verdict)) != 0)
        goto out;
    if (o->op == OP_READ)
        verdict = check(f.buf, len);
    if (verdict != VERDICT_OK) {
        fprintf(stderr, "%s: after the %ss, byte %" PRIu64 " of the %s's "
                "buffer is wrong: the data did not land where it was sent.\n", side,
                op_name(o->op), verdict,
                o->op == OP_WRITE ? "target" : "initiator");
        goto out;
    }
    report(&r);
    rc = 0;
out:
    fab_close(&f);
    free(r.ops);
    free(r.ready);
    free(r.lat);
    free(r.posting);
    return rc;
}

/* ---- options ------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: ofi-rma [-p PROVIDER] [-d DOMAIN] [-o WRITE|READ] [-s SIZE]\n"
        "               [-b N [--window | --more]] [-n POSTS] [-w WARMUP]\n"
        "The raw libfabric RMA loop xfer's ofi backend is compared against:\n"
        "a forked target and initiator, FI_EP_RDM, FI_DELIVERY_COMPLETE.\n"
        "\n"
        "  -p, --provider NAME  libfabric provider (default \"tcp;ofi_rxm\";\n"
        "                       shm, verbs;ofi_rxm, efa, ...)\n"
        "  -d, --domain NAME    its domain, e.g. lo (default: its first)\n"
        "  -o, --op OP          WRITE or READ (default WRITE)\n"
        "  -s, --size BYTES     bytes per segment; K, M, G: powers of 2\n"
        "                       (default 64K)\n"
        "  -b, --batch N        segments per post, all posted, then all\n"
        "                       awaited (default 1)\n"
        "      --window         instead keep N segments in flight, each\n"
        "                       reposted as it completes; a post is then\n"
        "                       one segment\n"
        "      --more           FI_MORE on all but a batch's last segment\n"
        "  -n, --posts N        timed posts (default 1000)\n"
        "  -w, --warmup N       posts before timing (default 100)\n"
        "  -t, --timeout S      fail after S seconds without a completion\n"
        "                       (default 30)\n"
        "  -h, --help           this help\n"
        "GB/s means 10^9 bytes per second; latencies are per post, from its\n"
        "first segment's post to its last completion.\n");
}

/* A count or byte size in arg: digits, then K, M or G (powers of 2). */
static int parse_num(const char *opt, const char *arg, long long min,
                     int suffix, long long *out)
{
    char *end;
    long long v;
    int shift = 0;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (suffix && end != arg && end[0] != '\0' && end[1] == '\0') {
        switch (end[0]) {
        case 'K': case 'k': shift = 10; end++; break;
        case 'M': case 'm': shift = 20; end++; break;
        case 'G': case 'g': shift = 30; end++; break;
        default: break;
        }
    }
    if (errno != 0 || end == arg || *end != '\0' || v < min ||
        v > (LLONG_MAX >> shift)) {
        fprintf(stderr, "ofi-rma: option %s needs %s >= %lld, not '%s'.\n",
                opt, suffix ? "a size" : "an integer", min, arg);
        return -1;
    }
    *out = v << shift;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum { OPT_WINDOW = 256, OPT_MORE };
    static const struct option longopts[] = {
        { "provider", required_argument, NULL, 'p' },
        { "domain", required_argument, NULL, 'd' },
        { "op", required_argument, NULL, 'o' },
        { "size", required_argument, NULL, 's' },
        { "batch", required_argument, NULL, 'b' },
        { "window", no_argument, NULL, OPT_WINDOW },
        { "more", no_argument, NULL, OPT_MORE },
        { "posts", required_argument, NULL, 'n' },
        { "warmup", required_argument, NULL, 'w' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    long long v;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "p:d:o:s:b:n:w:t:h", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'p': o->provider = optarg; break;
        case 'd': o->domain = optarg; break;
        case 'o':
            if (strcmp(optarg, "WRITE") == 0 || strcmp(optarg, "write") == 0)
                o->op = OP_WRITE;
            else if (strcmp(optarg, "READ") == 0 ||
                     strcmp(optarg, "read") == 0)
                o->op = OP_READ;
            else {
                fprintf(stderr, "ofi-rma: option -o needs WRITE or READ, "
                        "not '%s'.\n", optarg);
                return -1;
            }
            break;
        case 's':
            if (parse_num("-s", optarg, 1, 1, &v) != 0)
                return -1;
            o->size = (size_t)v;
            break;
        case 'b':
            if (parse_num("-b", optarg, 1, 0, &v) != 0)
                return -1;
            o->batch = (size_t)v;
            break;
        case OPT_WINDOW: o->window = 1; break;
        case OPT_MORE: o->more = 1; break;
        case 'n':
            if (parse_num("-n", optarg, 1, 0, &v) != 0)
                return -1;
            o->posts = (long)v;
            break;
        case 'w':
            if (parse_num("-w", optarg, 0, 0, &v) != 0)
                return -1;
            o->warmup = (long)v;
            break;
        case 't':
            if (parse_num("-t", optarg, 1, 0, &v) != 0)
                return -1;
            o->timeout = (double)v;
            break;
        case 'h': usage(stdout); exit(0);
        default:
            fprintf(stderr, "ofi-rma: unknown option or missing argument "
                    "in '%s'; try --help.\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "ofi-rma: unexpected argument '%s'.\n",
                argv[optind]);
        return -1;
    }
    if (o->window && o->more) {
        fprintf(stderr, "ofi-rma: --more applies to a batch posted at once, "
                "not to --window.\n");
        return -1;
    }
    if (o->window && (size_t)(o->posts + o->warmup) < o->batch) {
        fprintf(stderr, "ofi-rma: --window needs --posts + --warmup (%ld) "
                "of at least --batch (%zu), so that every segment is "
                "written and checked.\n", o->posts + o->warmup, o->batch);
        return -1;
    }
    if (o->size > SIZE_MAX / o->batch) {
        fprintf(stderr, "ofi-rma: --batch %zu x --size %zu does not fit in "
                "memory.\n", o->batch, o->size);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = { "tcp;ofi_rxm", NULL, OP_WRITE, 65536, 1, 0, 0,
                         1000, 100, 30.0 };
    int sv[2], status, rc;
    pid_t pid;

    if (parse_options(argc, argv, &o) != 0)
        return 2;
    /* Fork before either side touches libfabric: a provider's state does
     * not survive fork. */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        perror("ofi-rma: socketpair");
        return 1;
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        perror("ofi-rma: fork");
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        rc = target(&o, sv[1]);
        close(sv[1]);
        _exit(rc);
    }
    close(sv[1]);
    rc = initiator(&o, sv[0]);
    close(sv[0]); /* EOF: the target tears down and exits */
    /* A target that failed said why; one killed by a signal could not. */
    if (waitpid(pid, &status, 0) != pid) {
        perror("ofi-rma: waitpid");
        rc = 1;
    } else if (WIFSIGNALED(status)) {
        fprintf(stderr, "ofi-rma: the target process was killed by signal "
                "%d.\n", WTERMSIG(status));
        rc = 1;
    } else if (WEXITSTATUS(status) != 0) {
        rc = 1;
    }
    return rc;
}
