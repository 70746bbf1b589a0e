/* fakeverbs.c - an emulated RDMA device behind the verbs plugin's seam
 * (vapi.h): RC queue pairs between devices of one process, moved by a NIC.
 *
 * Map, top-down: devices and the environment; contexts, PDs, MRs (two
 * hashes by key), completion channels, CQs; QPs (the state machine, the
 * send and receive rings, posting); the NIC thread (scheduling, execution,
 * errors and flushes); the table; the test hooks (fakeverbs.h).
 *
 * One mutex guards everything.  The NIC thread holds it while it reads or
 * writes user memory, so dereg_mr is a fence: once it returns, the memory
 * is never touched again.  Posting only queues; the NIC executes a QP's
 * work in order, QPs interleaved round robin, and stalls a WR (receiver
 * not ready, peer unreachable) by timestamp, never by blocking.
 *
 * Where rdma-core and the hardware leave the caller to cope, the emulation
 * picks the harder case: exact CQ sizes, unsignaled slots freed only by a
 * later polled CQE, flush CQEs only for signaled WRs, random distinct lkey
 * and rkey.  ibv_qp.state is what the caller last set with modify_qp (as
 * rdma-core keeps it: it never sees the hardware move a QP to error); the
 * hardware's state is internal, for tests through fakeverbs_qp_state. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "plugins/verbs/vapi.h"
#include "tests/plugins/fakeverbs.h"

/* The device's limits: reported by query_device and enforced. */
#define FV_MAX_DEV 16
_Static_assert(FV_MAX_DEV == FAKEVERBS_MAX_DEV, "fakeverbs.h says how many");
#define FV_MAX_QP_WR 16384
#define FV_MAX_SGE 30
#define FV_MAX_CQE 4194303
#define FV_MAX_QP 65536
#define FV_MAX_CQ 65536
#define FV_MAX_PD 65536
#define FV_MAX_MR (1 << 24)
#define FV_MAX_RD_ATOM 16
#define FV_MAX_MR_SIZE (1ull << 48)
#define FV_MAX_MSG (1ull << 31)
#define FV_GID_TBL 4
/* A stalled WR (receiver not ready, peer unreachable) is looked at again
 * after this long, until its deadline. */
#define FV_POLL_NS 1000000ull
#define FV_KEY_BUCKETS 1024u

/* Every handle the plugin passes must be ours and live (a wrong one is a
 * caller bug: say so and abort, as a real provider would crash). */
enum {
    FV_CTX = 0x66760001,
    FV_PD,
    FV_MR,
    FV_CH,
    FV_CQ,
    FV_QP,
};

/* ---- intrusive lists -------------------------------------------------- */

typedef struct fv_link {
    struct fv_link *prev, *next;
} fv_link_t;

#define FV_OF(ptr, type, member)                                            \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static void link_init(fv_link_t *h)
{
    h->prev = h->next = h;
}

static void link_add(fv_link_t *h, fv_link_t *l)
{
    l->prev = h->prev;
    l->next = h;
    h->prev->next = l;
    h->prev = l;
}

static void link_del(fv_link_t *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

/* ---- objects ------------------------------------------------------------ */

typedef struct fv_dev {
    struct ibv_device dev;  /* first: the plugin's handle */
    int index;
    bool eth;               /* RoCE: GID addressing; else InfiniBand LIDs */
    int nopen;              /* contexts open on it */
} fv_dev_t;

/* Asynchronous events a context has not yet handed out (the hook
 * fakeverbs_async queues them; async_fd, an eventfd, counts them). */
#define FV_ASYNC_MAX 16

typedef struct fv_ctx {
    struct ibv_context ctx;
    unsigned magic;
    fv_dev_t *dev;
    int npd, ncq, nch;
    struct ibv_async_event ev[FV_ASYNC_MAX];
    unsigned nev;
    struct fv_ctx *next;       /* fv.ctxs: the open contexts */
} fv_ctx_t;

typedef struct fv_pd {
    struct ibv_pd pd;
    unsigned magic;
    fv_ctx_t *ctx;
    int nmr, nqp;
} fv_pd_t;

typedef struct fv_mr {
    struct ibv_mr mr;
    unsigned magic;
    fv_pd_t *pd;
    int access;
    fv_link_t by_lkey, by_rkey;
} fv_mr_t;

struct fv_cq;

/* One completion event not yet taken by get_cq_event. */
typedef struct fv_event {
    struct fv_event *next;
    struct fv_cq *cq;
} fv_event_t;

typedef struct fv_ch {
    struct ibv_comp_channel ch;
    unsigned magic;
    fv_ctx_t *ctx;
    int ncq;
    /* Events in order; the eventfd (EFD_SEMAPHORE) counts them, and both
     * change only under the lock, so the fd is readable exactly when an
     * event waits. */
    fv_event_t *head, **tail;
} fv_ch_t;

struct fv_qp;

typedef struct fv_cqe {
    struct ibv_wc wc;
    struct fv_qp *qp;   /* whose queue it frees when polled; NULL once gone */
    uint64_t seq;       /* the WR's place in that queue */
    bool send;          /* send queue, else receive queue */
    bool solicited;     /* wakes a CQ armed for solicited events only */
} fv_cqe_t;

typedef struct fv_cq {
    struct ibv_cq cq;
    unsigned magic;
    fv_ctx_t *ctx;
    fv_ch_t *ch;
    fv_cqe_t *ring;
    int cap, head, count;
    int nqp;                 /* QPs using it (as send and as receive CQ) */
    bool armed, armed_solicited;
    bool overrun;            /* overflowed once: drops every later CQE */
    uint64_t ev_got, ev_acked;
} fv_cq_t;

/* A queued send WR, copied at post. */
typedef struct fv_swqe {
    uint64_t wr_id;
    enum ibv_wr_opcode op;
    unsigned flags;
    uint32_t imm;
    uint64_t raddr;
    uint32_t rkey;
    int nsge;
    struct ibv_sge *sge;     /* the slot's own copy */
    void *inl;               /* IBV_SEND_INLINE: the data, copied at post */
    uint32_t inl_len;
    bool signaled;
    bool rnr_seen;
    /* monotonic ns; 0: not started */
    uint64_t delay_until, rnr_until, retry_until;
} fv_swqe_t;

typedef struct fv_rwqe {
    uint64_t wr_id;
    int nsge;
    struct ibv_sge *sge;
} fv_rwqe_t;

typedef struct fv_qp {
    struct ibv_qp qp;        /* qp.state: the caller's view (modify_qp) */
    unsigned magic;
    fv_link_t link;
    fv_ctx_t *ctx;
    fv_pd_t *pd;
    fv_cq_t *scq, *rcq;
    enum ibv_qp_state hw;    /* the state the hardware is in */
    struct ibv_qp_cap cap;
    bool sig_all;
    /* set by modify_qp */
    int access;
    enum ibv_mtu mtu;
    uint32_t dest_qpn;
    struct ibv_ah_attr av;
    uint8_t max_rd, max_dest_rd, timeout, retry_cnt, rnr_retry, min_rnr;
    uint32_t rq_psn, sq_psn;
    /* Send queue by sequence number: [s_free, s_exec) executed, their
     * slots held until a CQE at or after them is polled; [s_exec, s_post)
     * queued.  Slot of seq: seq % max_send_wr. */
    fv_swqe_t *sq;
    struct ibv_sge *ssge;
    uint64_t s_post, s_exec, s_free;
    /* Receive queue: [r_free, r_used) consumed, held until polled;
     * [r_used, r_post) posted. */
    fv_rwqe_t *rq;
    struct ibv_sge *rsge;
    uint64_t r_post, r_used, r_free;
    uint64_t not_before;     /* ns: the NIC looks at the head WR then */
    uint64_t served;         /* round robin: when it last had a turn */
    bool rnr_said;
    bool held;               /* fakeverbs_hold: the NIC passes it by */
} fv_qp_t;

static struct {
    pthread_mutex_t mu;
    pthread_mutex_t life;    /* NIC start and join; taken before mu */
    pthread_once_t once;
    pthread_cond_t nic_cv;
    fv_dev_t dev[FV_MAX_DEV];
    unsigned delay_us, retry_ms, rnr_ms;
    int nctx;
    struct fv_ctx *ctxs;     /* open contexts (async events) */
    pthread_t nic;
    bool nic_running;        /* a NIC thread of this process exists */
    bool nic_stop;
    fv_link_t qps;
    fv_link_t lkeys[FV_KEY_BUCKETS], rkeys[FV_KEY_BUCKETS];
    uint64_t rng, tick;
    struct fakeverbs_stats st;
    bool cut;
    bool fail_armed;
    unsigned fail_left;
    uint32_t release_on_dereg; /* a held QP's number, or 0 */
} fv = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .life = PTHREAD_MUTEX_INITIALIZER,
    .once = PTHREAD_ONCE_INIT,
    .retry_ms = 20,
    .rnr_ms = 1000,
};

static void lock(void);
static void unlock(void);

static void nic_cv_init(void)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fv.nic_cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* fork(): the child gets the state unlocked and no NIC thread (a forked
 * target process of a test may open devices of its own; what it inherited
 * is the parent's, as with real verbs, and never completes there). */
static void fork_prepare(void)
{
    pthread_mutex_lock(&fv.life);
    lock();
}

static void fork_parent(void)
{
    unlock();
    pthread_mutex_unlock(&fv.life);
}

static void fork_child(void)
{
    fv.nic_running = false;
    nic_cv_init();
    unlock();
    pthread_mutex_unlock(&fv.life);
}

static void init_once(void)
{
    unsigned i;

    nic_cv_init();
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    link_init(&fv.qps);
    for (i = 0; i < FV_KEY_BUCKETS; i++) {
        link_init(&fv.lkeys[i]);
        link_init(&fv.rkeys[i]);
    }
    fv.rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    for (i = 0; i < FV_MAX_DEV; i++) {
        fv_dev_t *d = &fv.dev[i];

        d->index = (int)i;
        d->dev.node_type = IBV_NODE_CA;
        d->dev.transport_type = IBV_TRANSPORT_IB;
        snprintf(d->dev.name, sizeof d->dev.name, "fake%u", i);
        snprintf(d->dev.dev_name, sizeof d->dev.dev_name, "uverbs%u", i);
        snprintf(d->dev.dev_path, sizeof d->dev.dev_path,
                 "/sys/class/infiniband_verbs/uverbs%u", i);
        snprintf(d->dev.ibdev_path, sizeof d->dev.ibdev_path,
                 "/sys/class/infiniband/fake%u", i);
    }
}

static void fv_init(void)
{
    pthread_once(&fv.once, init_once);
}

static void lock(void)
{
    pthread_mutex_lock(&fv.mu);
}

static void unlock(void)
{
    pthread_mutex_unlock(&fv.mu);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64, under the lock. */
static uint64_t rnd(void)
{
    uint64_t z = (fv.rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void bad_handle(const char *fn, const char *what, const void *p)
{
    fprintf(stderr, "fakeverbs: %s: %p is not a live %s (a caller bug)\n",
            fn, p, what);
    abort();
}

#define FV_HANDLE(name, type, pub, magic_v, what)                           \
    static type *name(pub *p, const char *fn)                               \
    {                                                                       \
        type *x = (type *)(void *)p;                                        \
        if (!p || x->magic != (magic_v))                                    \
            bad_handle(fn, what, p);                                        \
        return x;                                                           \
    }
FV_HANDLE(ctx_of, fv_ctx_t, struct ibv_context, FV_CTX, "context")
FV_HANDLE(pd_of, fv_pd_t, struct ibv_pd, FV_PD, "protection domain")
FV_HANDLE(mr_of, fv_mr_t, struct ibv_mr, FV_MR, "memory region")
FV_HANDLE(ch_of, fv_ch_t, struct ibv_comp_channel, FV_CH,
          "completion channel")
FV_HANDLE(cq_of, fv_cq_t, struct ibv_cq, FV_CQ, "completion queue")
FV_HANDLE(qp_of, fv_qp_t, struct ibv_qp, FV_QP, "queue pair")

/* ---- devices ------------------------------------------------------------- */

/* A whole decimal number from the environment, or def with a sentence. */
static unsigned env_uint(const char *name, unsigned def, unsigned max)
{
    const char *s = getenv(name);
    char *end;
    unsigned long v;

    if (!s || !*s)
        return def;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || s[0] == '-' || v > max) {
        fprintf(stderr, "fakeverbs: %s=%s is not a number from 0 to %u; "
                "using %u\n", name, s, max, def);
        return def;
    }
    return (unsigned)v;
}

static fv_dev_t *dev_of(struct ibv_device *d)
{
    fv_dev_t *x = (fv_dev_t *)(void *)d;

    if (x < fv.dev || x >= fv.dev + FV_MAX_DEV)
        return NULL;
    return x;
}

/* GID table, as mlx5 lists it on RoCE, one entry per address and type:
 * 0 fe80::<index+1> RoCE v1, 1 ::ffff:198.18.0.<index+1> (IPv4-mapped)
 * RoCE v1, 2 and 3 the same as RoCE v2.  On InfiniBand only 0, the port
 * GID, is set. */
static void gid_of(int index, bool eth, int gidx, union ibv_gid *g)
{
    memset(g, 0, sizeof *g);
    if (gidx < 0 || gidx >= FV_GID_TBL || (!eth && gidx != 0))
        return;
    if (gidx % 2 == 0) {
        g->raw[0] = 0xfe;
        g->raw[1] = 0x80;
        g->raw[15] = (uint8_t)(index + 1);
    } else {
        g->raw[10] = g->raw[11] = 0xff;
        g->raw[12] = 198;
        g->raw[13] = 18;
        g->raw[14] = 0;
        g->raw[15] = (uint8_t)(index + 1);
    }
}

/* The emulation shares nothing with a child's pages: fork needs no care. */
static enum ibv_fork_status fv_fork_status(void)
{
    return IBV_FORK_UNNEEDED;
}

static enum ibv_gid_type gid_type_of(bool eth, int gidx)
{
    return !eth ? IBV_GID_TYPE_IB
                : gidx < 2 ? IBV_GID_TYPE_ROCE_V1 : IBV_GID_TYPE_ROCE_V2;
}

static bool gid_zero(const union ibv_gid *g)
{
    static const union ibv_gid zero;

    return memcmp(g, &zero, sizeof zero) == 0;
}

static uint16_t dev_lid(const fv_dev_t *d)
{
    return d->eth ? 0 : (uint16_t)(d->index + 1);
}

static struct ibv_device **fv_get_device_list(int *num)
{
    struct ibv_device **list;
    const char *link;
    unsigned n, i;
    bool eth = false;

    fv_init();
    lock();
    n = env_uint("XFER_FAKEVERBS_DEVICES", 2, FV_MAX_DEV);
    link = getenv("XFER_FAKEVERBS_LINK");
    if (link && *link && strcmp(link, "ib") != 0) {
        if (strcmp(link, "eth") == 0)
            eth = true;
        else
            fprintf(stderr, "fakeverbs: XFER_FAKEVERBS_LINK=%s is neither "
                    "ib nor eth; using ib\n", link);
    }
    fv.delay_us = env_uint("XFER_FAKEVERBS_DELAY_US", 0, 10000000);
    fv.retry_ms = env_uint("XFER_FAKEVERBS_RETRY_MS", 20, 3600000);
    fv.rnr_ms = env_uint("XFER_FAKEVERBS_RNR_MS", 1000, 3600000);
    list = calloc(n + 1, sizeof *list);
    if (list) {
        for (i = 0; i < n; i++) {
            if (!fv.dev[i].nopen)   /* an open device keeps its link */
                fv.dev[i].eth = eth;
            list[i] = &fv.dev[i].dev;
        }
    }
    unlock();
    if (!list) {
        errno = ENOMEM;
        return NULL;
    }
    if (num)
        *num = (int)n;
    return list;
}

static void fv_free_device_list(struct ibv_device **list)
{
    free(list);
}

static const char *fv_get_device_name(struct ibv_device *d)
{
    if (!dev_of(d))
        bad_handle(__func__, "device", d);
    return d->name;
}

static void *nic_main(void *arg);

static struct ibv_context *fv_open_device(struct ibv_device *d)
{
    fv_dev_t *dev = dev_of(d);
    fv_ctx_t *c;
    int rc;

    fv_init();
    if (!dev) {
        errno = ENODEV;
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    c->magic = FV_CTX;
    c->dev = dev;
    c->ctx.device = d;
    c->ctx.cmd_fd = -1;
    c->ctx.async_fd = eventfd(0, EFD_CLOEXEC);
    c->ctx.num_comp_vectors = 1;
    if (c->ctx.async_fd < 0) {
        free(c);
        return NULL;
    }
    pthread_mutex_lock(&fv.life);
    lock();
    if (!fv.nic_running) {
        fv.nic_stop = false;
        rc = pthread_create(&fv.nic, NULL, nic_main, NULL);
        if (rc) {
            unlock();
            pthread_mutex_unlock(&fv.life);
            free(c);
            errno = rc;
            return NULL;
        }
        fv.nic_running = true;
    }
    fv.nctx++;
    dev->nopen++;
    fv.st.live_contexts++;
    c->next = fv.ctxs;
    fv.ctxs = c;
    unlock();
    pthread_mutex_unlock(&fv.life);
    return &c->ctx;
}

static int fv_close_device(struct ibv_context *ibctx)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    bool stop;

    pthread_mutex_lock(&fv.life);
    lock();
    if (c->npd || c->ncq || c->nch) {
        unlock();
        pthread_mutex_unlock(&fv.life);
        return EBUSY;
    }
    c->dev->nopen--;
    fv.st.live_contexts--;
    for (fv_ctx_t **pp = &fv.ctxs; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    stop = --fv.nctx == 0 && fv.nic_running;
    if (stop) {
        fv.nic_stop = true;
        pthread_cond_signal(&fv.nic_cv);
    }
    unlock();
    if (stop) {
        pthread_join(fv.nic, NULL);
        fv.nic_running = false;
    }
    pthread_mutex_unlock(&fv.life);
    c->magic = 0;
    close(c->ctx.async_fd);
    free(c);
    return 0;
}

/* The oldest event queued for the context: 0, or -1 with errno EAGAIN
 * (the caller made async_fd non-blocking) when there is none. */
static int fv_get_async_event(struct ibv_context *ibctx,
                              struct ibv_async_event *ev)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    uint64_t one;

    lock();
    if (c->nev == 0) {
        unlock();
        errno = EAGAIN;
        return -1;
    }
    *ev = c->ev[0];
    memmove(c->ev, c->ev + 1, --c->nev * sizeof c->ev[0]);
    if (read(c->ctx.async_fd, &one, sizeof one) < 0) { /* one fewer */
    }
    if (c->nev > 0) {
        one = c->nev;
        if (write(c->ctx.async_fd, &one, sizeof one) < 0) {
        }
    }
    unlock();
    return 0;
}

static void fv_ack_async_event(struct ibv_async_event *ev)
{
    (void)ev;
}

static int fv_query_device(struct ibv_context *ibctx, struct ibv_device_attr *a)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    uint64_t guid = 0x02fa4e0000000000ull | (uint64_t)(c->dev->index + 1);

    memset(a, 0, sizeof *a);
    snprintf(a->fw_ver, sizeof a->fw_ver, "fakeverbs");
    a->node_guid = guid;
    a->sys_image_guid = guid;
    a->max_mr_size = FV_MAX_MR_SIZE;
    a->page_size_cap = 4096;
    a->max_qp = FV_MAX_QP;
    a->max_qp_wr = FV_MAX_QP_WR;
    a->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN |
        IBV_DEVICE_PORT_ACTIVE_EVENT;
    a->max_sge = FV_MAX_SGE;
    a->max_sge_rd = FV_MAX_SGE;
    a->max_cq = FV_MAX_CQ;
    a->max_cqe = FV_MAX_CQE;
    a->max_mr = FV_MAX_MR;
    a->max_pd = FV_MAX_PD;
    a->max_qp_rd_atom = FV_MAX_RD_ATOM;
    a->max_qp_init_rd_atom = FV_MAX_RD_ATOM;
    a->max_res_rd_atom = FV_MAX_RD_ATOM * FV_MAX_QP;
    a->atomic_cap = IBV_ATOMIC_NONE;
    a->max_pkeys = 1;
    a->local_ca_ack_delay = 16;
    a->phys_port_cnt = 1;
    return 0;
}

static int fv_query_port(struct ibv_context *ibctx, uint8_t port,
                         struct ibv_port_attr *a)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    fv_dev_t *d = c->dev;

    if (port != 1)
        return EINVAL;
    memset(a, 0, sizeof *a);
    a->state = IBV_PORT_ACTIVE;
    a->max_mtu = IBV_MTU_4096;
    a->active_mtu = d->eth ? IBV_MTU_1024 : IBV_MTU_4096;
    a->gid_tbl_len = FV_GID_TBL;
    a->max_msg_sz = (uint32_t)FV_MAX_MSG;
    a->pkey_tbl_len = 1;
    a->lid = dev_lid(d);
    a->sm_lid = d->eth ? 0 : 1;
    a->max_vl_num = 1;
    a->subnet_timeout = 18;
    a->active_width = 2;    /* 4X */
    a->active_speed = 32;   /* EDR */
    a->phys_state = 5;      /* LinkUp */
    a->link_layer = d->eth ? IBV_LINK_LAYER_ETHERNET
                           : IBV_LINK_LAYER_INFINIBAND;
    return 0;
}

static int fv_query_gid(struct ibv_context *ibctx, uint8_t port, int index,
                        union ibv_gid *gid)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);

    if (port != 1 || index < 0 || index >= FV_GID_TBL)
        return EINVAL;
    gid_of(c->dev->index, c->dev->eth, index, gid);
    return 0;
}

static int fv_query_gid_type(struct ibv_context *ibctx, uint8_t port,
                             int index, enum ibv_gid_type *type)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    union ibv_gid g;

    if (port != 1 || index < 0 || index >= FV_GID_TBL)
        return EINVAL;
    gid_of(c->dev->index, c->dev->eth, index, &g);
    if (gid_zero(&g))
        return ENODATA; /* as ibv_query_gid_ex for an empty entry */
    *type = gid_type_of(c->dev->eth, index);
    return 0;
}

/* ---- protection domains and memory regions ----------------------------- */

static struct ibv_pd *fv_alloc_pd(struct ibv_context *ibctx)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    fv_pd_t *pd = calloc(1, sizeof *pd);

    if (!pd) {
        errno = ENOMEM;
        return NULL;
    }
    pd->magic = FV_PD;
    pd->ctx = c;
    pd->pd.context = ibctx;
    lock();
    pd->pd.handle = (uint32_t)rnd();
    c->npd++;
    fv.st.live_pds++;
    unlock();
    return &pd->pd;
}

static int fv_dealloc_pd(struct ibv_pd *ibpd)
{
    fv_pd_t *pd = pd_of(ibpd, __func__);

    lock();
    if (pd->nmr || pd->nqp) {
        unlock();
        return EBUSY;
    }
    pd->ctx->npd--;
    fv.st.live_pds--;
    unlock();
    pd->magic = 0;
    free(pd);
    return 0;
}

static fv_mr_t *mr_by_key(uint32_t key, bool remote)
{
    fv_link_t *h = remote ? &fv.rkeys[key % FV_KEY_BUCKETS]
                          : &fv.lkeys[key % FV_KEY_BUCKETS];
    fv_link_t *l;

    for (l = h->next; l != h; l = l->next) {
        fv_mr_t *mr = remote ? FV_OF(l, fv_mr_t, by_rkey)
                             : FV_OF(l, fv_mr_t, by_lkey);

        if ((remote ? mr->mr.rkey : mr->mr.lkey) == key)
            return mr;
    }
    return NULL;
}

/* A fresh nonzero key, unlike every live lkey and rkey. */
static uint32_t new_key(void)
{
    uint32_t k;

    do
        k = (uint32_t)rnd();
    while (!k || mr_by_key(k, false) || mr_by_key(k, true));
    return k;
}

/* As the kernel pinning pages: every page of the range must be mapped. */
static bool range_mapped(const void *addr, size_t len)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)addr & ~(pg - 1);
    uintptr_t end = (uintptr_t)addr + len;
    unsigned char vec[256];

    while (a < end) {
        uintptr_t n = (end - a + pg - 1) / pg;

        if (n > sizeof vec)
            n = sizeof vec;
        if (mincore((void *)a, n * pg, vec) != 0)
            return false;
        a += n * pg;
    }
    return true;
}

/* Access bits emulated; the optional range (IBV_ACCESS_OPTIONAL_RANGE,
 * e.g. RELAXED_ORDERING) is ignored, as libibverbs drops it when the
 * device lacks it. */
#define FV_MR_ACCESS                                                        \
    (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |                     \
     IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |                    \
     IBV_ACCESS_MW_BIND)

static struct ibv_mr *fv_reg_mr(struct ibv_pd *ibpd, void *addr, size_t len,
                                int access)
{
    fv_pd_t *pd = pd_of(ibpd, __func__);
    int acc = access & ~IBV_ACCESS_OPTIONAL_RANGE;
    fv_mr_t *mr;

    if (len == 0 || len > FV_MAX_MR_SIZE ||
        (uintptr_t)addr + len < (uintptr_t)addr || (acc & ~FV_MR_ACCESS) ||
        ((acc & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
         !(acc & IBV_ACCESS_LOCAL_WRITE))) {
        errno = EINVAL;
        return NULL;
    }
    if (!range_mapped(addr, len)) {
        errno = EFAULT;
        return NULL;
    }
    mr = calloc(1, sizeof *mr);
    if (!mr) {
        errno = ENOMEM;
        return NULL;
    }
    mr->magic = FV_MR;
    mr->pd = pd;
    mr->access = acc;
    mr->mr.context = ibpd->context;
    mr->mr.pd = ibpd;
    mr->mr.addr = addr;
    mr->mr.length = len;
    lock();
    if (fv.st.live_mrs >= FV_MAX_MR) {
        unlock();
        free(mr);
        errno = ENOMEM;
        return NULL;
    }
    mr->mr.handle = (uint32_t)rnd();
    mr->mr.lkey = new_key();
    link_add(&fv.lkeys[mr->mr.lkey % FV_KEY_BUCKETS], &mr->by_lkey);
    mr->mr.rkey = new_key();
    link_add(&fv.rkeys[mr->mr.rkey % FV_KEY_BUCKETS], &mr->by_rkey);
    pd->nmr++;
    fv.st.live_mrs++;
    unlock();
    return &mr->mr;
}

static void run_released(uint64_t now);

static int fv_dereg_mr(struct ibv_mr *ibmr)
{
    fv_mr_t *mr = mr_of(ibmr, __func__);

    lock();
    link_del(&mr->by_lkey);
    link_del(&mr->by_rkey);
    mr->pd->nmr--;
    fv.st.live_mrs--;
    run_released(now_ns());
    unlock();
    mr->magic = 0;
    free(mr);
    return 0;
}

/* Whether [addr, addr+len) lies inside the region. */
static bool mr_covers(const fv_mr_t *mr, uint64_t addr, uint64_t len)
{
    uint64_t base = (uintptr_t)mr->mr.addr;

    return addr >= base && len <= mr->mr.length &&
           addr - base <= mr->mr.length - len;
}

/* ---- completion channels ------------------------------------------------ */

static struct ibv_comp_channel *fv_create_comp_channel(
    struct ibv_context *ibctx)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    fv_ch_t *ch = calloc(1, sizeof *ch);

    if (!ch) {
        errno = ENOMEM;
        return NULL;
    }
    ch->ch.fd = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
    if (ch->ch.fd < 0) {
        free(ch);
        return NULL;
    }
    ch->magic = FV_CH;
    ch->ctx = c;
    ch->ch.context = ibctx;
    ch->tail = &ch->head;
    lock();
    c->nch++;
    fv.st.live_channels++;
    unlock();
    return &ch->ch;
}

static int fv_destroy_comp_channel(struct ibv_comp_channel *ibch)
{
    fv_ch_t *ch = ch_of(ibch, __func__);

    lock();
    if (ch->ncq) {
        unlock();
        return EBUSY;
    }
    ch->ctx->nch--;
    fv.st.live_channels--;
    unlock();
    close(ch->ch.fd);
    ch->magic = 0;
    free(ch);
    return 0;
}

static void ch_count(fv_ch_t *ch, bool up)
{
    uint64_t v = 1;
    ssize_t n = up ? write(ch->ch.fd, &v, sizeof v)
                   : read(ch->ch.fd, &v, sizeof v);

    if (n != (ssize_t)sizeof v)
        fprintf(stderr, "fakeverbs: completion channel fd %d: %s\n",
                ch->ch.fd, strerror(errno));
}

static void ch_event(fv_ch_t *ch, fv_cq_t *cq)
{
    fv_event_t *ev = malloc(sizeof *ev);

    if (!ev) {
        fprintf(stderr, "fakeverbs: out of memory: a completion event "
                "is lost\n");
        return;
    }
    ev->next = NULL;
    ev->cq = cq;
    *ch->tail = ev;
    ch->tail = &ev->next;
    ch_count(ch, true);
}

static int fv_get_cq_event(struct ibv_comp_channel *ibch, struct ibv_cq **cq,
                           void **cq_context)
{
    fv_ch_t *ch = ch_of(ibch, __func__);

    for (;;) {
        fv_event_t *ev;
        struct pollfd p;
        int fl;

        lock();
        ev = ch->head;
        if (ev) {
            ch->head = ev->next;
            if (!ch->head)
                ch->tail = &ch->head;
            ch_count(ch, false);    /* counted: cannot block */
            ev->cq->ev_got++;
            *cq = &ev->cq->cq;
            *cq_context = ev->cq->cq.cq_context;
            unlock();
            free(ev);
            return 0;
        }
        unlock();
        fl = fcntl(ch->ch.fd, F_GETFL);
        if (fl < 0)
            return -1;
        if (fl & O_NONBLOCK) {
            errno = EAGAIN;
            return -1;
        }
        p.fd = ch->ch.fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return -1;
    }
}

static void fv_ack_cq_events(struct ibv_cq *ibcq, unsigned int n)
{
    fv_cq_t *cq = cq_of(ibcq, __func__);

    lock();
    cq->ev_acked += n;
    if (cq->ev_acked > cq->ev_got)
        fprintf(stderr, "fakeverbs: ack_cq_events: %" PRIu64 " events "
                "acknowledged, only %" PRIu64 " were got\n", cq->ev_acked,
                cq->ev_got);
    unlock();
}

/* ---- completion queues --------------------------------------------------- */

static struct ibv_cq *fv_create_cq(struct ibv_context *ibctx, int cqe,
                                   void *cq_context,
                                   struct ibv_comp_channel *ibch, int vector)
{
    fv_ctx_t *c = ctx_of(ibctx, __func__);
    fv_ch_t *ch = ibch ? ch_of(ibch, __func__) : NULL;
    fv_cq_t *cq;

    if (cqe < 1 || cqe > FV_MAX_CQE || vector != 0 ||
        (ch && ch->ctx != c)) {
        errno = EINVAL;
        return NULL;
    }
    cq = calloc(1, sizeof *cq);
    if (cq)
        cq->ring = calloc((size_t)cqe, sizeof *cq->ring);
    if (!cq || !cq->ring) {
        free(cq);
        errno = ENOMEM;
        return NULL;
    }
    cq->magic = FV_CQ;
    cq->ctx = c;
    cq->ch = ch;
    cq->cap = cqe;
    cq->cq.context = ibctx;
    cq->cq.channel = ibch;
    cq->cq.cq_context = cq_context;
    cq->cq.cqe = cqe;
    lock();
    if (fv.st.live_cqs >= FV_MAX_CQ) {
        unlock();
        free(cq->ring);
        free(cq);
        errno = ENOMEM;
        return NULL;
    }
    cq->cq.handle = (uint32_t)rnd();
    c->ncq++;
    if (ch) {
        ch->ncq++;
        ch->ch.refcnt++;
    }
    fv.st.live_cqs++;
    unlock();
    return &cq->cq;
}

static int fv_destroy_cq(struct ibv_cq *ibcq)
{
    fv_cq_t *cq = cq_of(ibcq, __func__);
    fv_ch_t *ch = cq->ch;

    lock();
    if (cq->nqp) {
        unlock();
        return EBUSY;
    }
    if (cq->ev_got > cq->ev_acked) {
        fprintf(stderr, "fakeverbs: destroy_cq: %" PRIu64 " completion "
                "events got but not acknowledged (ack_cq_events first)\n",
                cq->ev_got - cq->ev_acked);
        unlock();
        return EBUSY;
    }
    if (ch) {   /* its events not yet got go with it, as in the kernel */
        fv_event_t **pp = &ch->head;

        while (*pp) {
            fv_event_t *ev = *pp;

            if (ev->cq == cq) {
                *pp = ev->next;
                free(ev);
                ch_count(ch, false);
            } else {
                pp = &ev->next;
            }
        }
        ch->tail = &ch->head;
        while (*ch->tail)
            ch->tail = &(*ch->tail)->next;
        ch->ncq--;
        ch->ch.refcnt--;
    }
    cq->ctx->ncq--;
    fv.st.live_cqs--;
    unlock();
    cq->magic = 0;
    free(cq->ring);
    free(cq);
    return 0;
}

static int fv_req_notify_cq(struct ibv_cq *ibcq, int solicited_only)
{
    fv_cq_t *cq = cq_of(ibcq, __func__);

    lock();
    if (cq->ch) {   /* without a channel there is nothing to wake */
        cq->armed_solicited = cq->armed
            ? cq->armed_solicited && solicited_only : solicited_only != 0;
        cq->armed = true;
    }
    unlock();
    return 0;
}

static void qp_to_err(fv_qp_t *qp);

/* A CQ overflowed: a caller bug, fatal to the CQ and its QPs. */
static void cq_overrun(fv_cq_t *cq)
{
    fv_link_t *l;

    cq->overrun = true;
    fv.st.cq_overruns++;
    fprintf(stderr, "fakeverbs: CQ overrun (a CQ of %d entries was full; "
            "its QPs move to error)\n", cq->cap);
    for (l = fv.qps.next; l != &fv.qps; l = l->next) {
        fv_qp_t *qp = FV_OF(l, fv_qp_t, link);

        if (qp->scq == cq || qp->rcq == cq)
            qp_to_err(qp);
    }
}

static void cq_push(fv_cq_t *cq, const fv_cqe_t *e)
{
    if (e->wc.status == IBV_WC_WR_FLUSH_ERR)
        fv.st.flushed++;
    if (cq->overrun)
        return;
    if (cq->count == cq->cap) {
        cq_overrun(cq);
        return;
    }
    cq->ring[(cq->head + cq->count) % cq->cap] = *e;
    cq->count++;
    if (cq->armed && (!cq->armed_solicited || e->solicited ||
                      e->wc.status != IBV_WC_SUCCESS)) {
        cq->armed = false;
        ch_event(cq->ch, cq);
    }
}

/* Forget a QP that is going away: its CQEs stay, freeing nothing. */
static void cq_forget(fv_cq_t *cq, const fv_qp_t *qp)
{
    int i;

    for (i = 0; i < cq->count; i++) {
        fv_cqe_t *e = &cq->ring[(cq->head + i) % cq->cap];

        if (e->qp == qp)
            e->qp = NULL;
    }
}

static int fv_poll_cq(struct ibv_cq *ibcq, int n, struct ibv_wc *wc)
{
    fv_cq_t *cq = cq_of(ibcq, __func__);
    int k = 0;

    if (n < 0) {
        fprintf(stderr, "fakeverbs: poll_cq: n=%d is negative\n", n);
        return -1;
    }
    lock();
    while (k < n && cq->count) {
        fv_cqe_t *e = &cq->ring[cq->head];

        wc[k++] = e->wc;
        /* Polling a CQE frees its WR's slot and, on the send queue, the
         * unsignaled ones before it (as real providers advance the tail). */
        if (e->qp && e->send && e->seq >= e->qp->s_free)
            e->qp->s_free = e->seq + 1;
        else if (e->qp && !e->send && e->seq >= e->qp->r_free)
            e->qp->r_free = e->seq + 1;
        cq->head = (cq->head + 1) % cq->cap;
        cq->count--;
    }
    unlock();
    return k;
}

/* ---- queue pairs ----------------------------------------------------------- */

static fv_swqe_t *swqe(fv_qp_t *qp, uint64_t seq)
{
    return &qp->sq[seq % qp->cap.max_send_wr];
}

static fv_rwqe_t *rwqe(fv_qp_t *qp, uint64_t seq)
{
    return &qp->rq[seq % qp->cap.max_recv_wr];
}

static void swqe_release(fv_swqe_t *w)
{
    free(w->inl);
    w->inl = NULL;
}

static enum ibv_wc_opcode wc_opcode(enum ibv_wr_opcode op)
{
    switch (op) {
    case IBV_WR_RDMA_READ:
        return IBV_WC_RDMA_READ;
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
        return IBV_WC_SEND;
    default:
        return IBV_WC_RDMA_WRITE;
    }
}

/* Flushes: queued send WRs get a CQE only when signaled (the case a
 * caller cannot avoid: some providers flush nothing else); every posted
 * receive gets one. */
static void flush_sq(fv_qp_t *qp)
{
    while (qp->s_exec < qp->s_post) {
        uint64_t seq = qp->s_exec++;
        fv_swqe_t *w = swqe(qp, seq);
        fv_cqe_t e;

        memset(&e, 0, sizeof e);
        e.wc.wr_id = w->wr_id;
        e.wc.status = IBV_WC_WR_FLUSH_ERR;
        e.wc.opcode = wc_opcode(w->op);
        e.wc.qp_num = qp->qp.qp_num;
        e.qp = qp;
        e.seq = seq;
        e.send = true;
        swqe_release(w);
        if (w->signaled)
            cq_push(qp->scq, &e);
    }
}

static void flush_rq(fv_qp_t *qp)
{
    while (qp->r_used < qp->r_post) {
        uint64_t seq = qp->r_used++;
        fv_cqe_t e;

        memset(&e, 0, sizeof e);
        e.wc.wr_id = rwqe(qp, seq)->wr_id;
        e.wc.status = IBV_WC_WR_FLUSH_ERR;
        e.wc.opcode = IBV_WC_RECV;
        e.wc.qp_num = qp->qp.qp_num;
        e.qp = qp;
        e.seq = seq;
        cq_push(qp->rcq, &e);
    }
}

/* The hardware moves the QP to error: everything queued is flushed. */
static void qp_to_err(fv_qp_t *qp)
{
    if (qp->hw == IBV_QPS_ERR)
        return;
    qp->hw = IBV_QPS_ERR;
    flush_sq(qp);
    flush_rq(qp);
}

/* RESET: queued work is dropped without CQEs; CQEs already in a CQ stay
 * (and free nothing when polled: every slot is free again). */
static void qp_reset(fv_qp_t *qp)
{
    uint64_t s;

    for (s = qp->s_exec; s < qp->s_post; s++)
        swqe_release(swqe(qp, s));
    qp->s_exec = qp->s_free = qp->s_post;
    qp->r_used = qp->r_free = qp->r_post;
    qp->hw = IBV_QPS_RESET;
    qp->access = 0;
    qp->mtu = 0;
    qp->dest_qpn = 0;
    memset(&qp->av, 0, sizeof qp->av);
    qp->max_rd = qp->max_dest_rd = 0;
    qp->timeout = qp->retry_cnt = qp->rnr_retry = qp->min_rnr = 0;
    qp->rq_psn = qp->sq_psn = 0;
    qp->not_before = 0;
}

static fv_qp_t *qp_by_num(uint32_t qpn)
{
    fv_link_t *l;

    for (l = fv.qps.next; l != &fv.qps; l = l->next) {
        fv_qp_t *qp = FV_OF(l, fv_qp_t, link);

        if (qp->qp.qp_num == qpn)
            return qp;
    }
    return NULL;
}

static struct ibv_qp *fv_create_qp(struct ibv_pd *ibpd,
                                   struct ibv_qp_init_attr *attr)
{
    fv_pd_t *pd = pd_of(ibpd, __func__);
    fv_cq_t *scq, *rcq;
    fv_qp_t *qp;
    struct ibv_qp_cap cap;
    size_t ns, nr, nss, nrs;
    uint32_t qpn;

    if (!attr || attr->qp_type != IBV_QPT_RC || !attr->send_cq ||
        !attr->recv_cq || attr->srq) {
        errno = EINVAL;
        return NULL;
    }
    scq = cq_of(attr->send_cq, __func__);
    rcq = cq_of(attr->recv_cq, __func__);
    cap = attr->cap;
    if (scq->ctx != pd->ctx || rcq->ctx != pd->ctx ||
        cap.max_send_wr > FV_MAX_QP_WR || cap.max_recv_wr > FV_MAX_QP_WR ||
        cap.max_send_sge > FV_MAX_SGE || cap.max_recv_sge > FV_MAX_SGE ||
        cap.max_inline_data > FAKEVERBS_MAX_INLINE) {
        errno = EINVAL;
        return NULL;
    }
    ns = cap.max_send_wr ? cap.max_send_wr : 1;
    nr = cap.max_recv_wr ? cap.max_recv_wr : 1;
    nss = cap.max_send_sge ? cap.max_send_sge : 1;
    nrs = cap.max_recv_sge ? cap.max_recv_sge : 1;
    qp = calloc(1, sizeof *qp);
    if (qp) {
        qp->sq = calloc(ns, sizeof *qp->sq);
        qp->ssge = calloc(ns * nss, sizeof *qp->ssge);
        qp->rq = calloc(nr, sizeof *qp->rq);
        qp->rsge = calloc(nr * nrs, sizeof *qp->rsge);
    }
    if (!qp || !qp->sq || !qp->ssge || !qp->rq || !qp->rsge) {
        if (qp) {
            free(qp->sq);
            free(qp->ssge);
            free(qp->rq);
            free(qp->rsge);
            free(qp);
        }
        errno = ENOMEM;
        return NULL;
    }
    for (size_t i = 0; i < ns; i++)
        qp->sq[i].sge = qp->ssge + i * nss;
    for (size_t i = 0; i < nr; i++)
        qp->rq[i].sge = qp->rsge + i * nrs;
    qp->magic = FV_QP;
    qp->ctx = pd->ctx;
    qp->pd = pd;
    qp->scq = scq;
    qp->rcq = rcq;
    qp->cap = cap;
    qp->sig_all = attr->sq_sig_all != 0;
    qp->hw = IBV_QPS_RESET;
    qp->qp.context = ibpd->context;
    qp->qp.qp_context = attr->qp_context;
    qp->qp.pd = ibpd;
    qp->qp.send_cq = attr->send_cq;
    qp->qp.recv_cq = attr->recv_cq;
    qp->qp.state = IBV_QPS_RESET;
    qp->qp.qp_type = IBV_QPT_RC;
    lock();
    if (fv.st.live_qps >= FV_MAX_QP) {
        unlock();
        free(qp->sq);
        free(qp->ssge);
        free(qp->rq);
        free(qp->rsge);
        free(qp);
        errno = ENOMEM;
        return NULL;
    }
    do  /* 0 and 1 are the special QPs of InfiniBand */
        qpn = (uint32_t)rnd() & 0xffffff;
    while (qpn < 2 || qp_by_num(qpn));
    qp->qp.qp_num = qpn;
    qp->qp.handle = (uint32_t)rnd();
    link_add(&fv.qps, &qp->link);
    pd->nqp++;
    scq->nqp++;
    rcq->nqp++;
    fv.st.live_qps++;
    unlock();
    return &qp->qp;
}

static int fv_destroy_qp(struct ibv_qp *ibqp)
{
    fv_qp_t *qp = qp_of(ibqp, __func__);
    uint64_t s;

    lock();
    link_del(&qp->link);
    for (s = qp->s_exec; s < qp->s_post; s++)
        swqe_release(swqe(qp, s));
    cq_forget(qp->scq, qp);
    cq_forget(qp->rcq, qp);
    qp->pd->nqp--;
    qp->scq->nqp--;
    qp->rcq->nqp--;
    fv.st.live_qps--;
    unlock();
    qp->magic = 0;
    free(qp->sq);
    free(qp->ssge);
    free(qp->rq);
    free(qp->rsge);
    free(qp);
    return 0;
}

/* ---- modify_qp: the RC state machine ---------------------------------------- */

/* Required and optional attributes of each transition (the kernel's
 * qp_state_table for RC, less alternate paths, which are not emulated).
 * Any state may go to RESET or ERR with no attribute but the state. */
static const struct fv_trans {
    enum ibv_qp_state from, to;
    int req, opt;
} fv_trans[] = {
    { IBV_QPS_RESET, IBV_QPS_INIT,
      IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0 },
    { IBV_QPS_INIT, IBV_QPS_INIT,
      0, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS },
    { IBV_QPS_INIT, IBV_QPS_RTR,
      IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
          IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
      IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX },
    { IBV_QPS_RTR, IBV_QPS_RTS,
      IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
          IBV_QP_MAX_QP_RD_ATOMIC,
      IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER },
    { IBV_QPS_RTS, IBV_QPS_RTS,
      0, IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER },
};

#define FV_QP_ACCESS                                                        \
    (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |                     \
     IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC)

/* The address vector: port 1; on Ethernet a GRH with a destination GID
 * and a source GID index the table fills; on InfiniBand a unicast LID. */
static bool av_ok(const fv_qp_t *qp, const struct ibv_ah_attr *av)
{
    if (av->port_num != 1)
        return false;
    if (av->is_global) {
        union ibv_gid sg;

        gid_of(qp->ctx->dev->index, qp->ctx->dev->eth, av->grh.sgid_index,
               &sg);
        if (gid_zero(&sg) || gid_zero(&av->grh.dgid))
            return false;
    }
    if (qp->ctx->dev->eth)
        return av->is_global;
    return av->dlid != 0 && av->dlid < 0xc000;
}

static bool attrs_ok(const fv_qp_t *qp, const struct ibv_qp_attr *a, int mask)
{
    enum ibv_mtu active = qp->ctx->dev->eth ? IBV_MTU_1024 : IBV_MTU_4096;

    if ((mask & IBV_QP_PKEY_INDEX) && a->pkey_index != 0)
        return false;
    if ((mask & IBV_QP_PORT) && a->port_num != 1)
        return false;
    if ((mask & IBV_QP_ACCESS_FLAGS) && (a->qp_access_flags & ~FV_QP_ACCESS))
        return false;
    if ((mask & IBV_QP_AV) && !av_ok(qp, &a->ah_attr))
        return false;
    if ((mask & IBV_QP_PATH_MTU) &&
        (a->path_mtu < IBV_MTU_256 || a->path_mtu > active))
        return false;
    if ((mask & IBV_QP_DEST_QPN) && a->dest_qp_num > 0xffffff)
        return false;
    if ((mask & IBV_QP_RQ_PSN) && a->rq_psn > 0xffffff)
        return false;
    if ((mask & IBV_QP_SQ_PSN) && a->sq_psn > 0xffffff)
        return false;
    if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) &&
        a->max_dest_rd_atomic > FV_MAX_RD_ATOM)
        return false;
    if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) && a->max_rd_atomic > FV_MAX_RD_ATOM)
        return false;
    if ((mask & IBV_QP_MIN_RNR_TIMER) && a->min_rnr_timer > 31)
        return false;
    if ((mask & IBV_QP_TIMEOUT) && a->timeout > 31)
        return false;
    if ((mask & IBV_QP_RETRY_CNT) && a->retry_cnt > 7)
        return false;
    if ((mask & IBV_QP_RNR_RETRY) && a->rnr_retry > 7)
        return false;
    return true;
}

static int fv_modify_qp(struct ibv_qp *ibqp, struct ibv_qp_attr *a, int mask)
{
    fv_qp_t *qp = qp_of(ibqp, __func__);
    enum ibv_qp_state to;
    int req = -1, opt = 0;
    size_t i;

    lock();
    if ((mask & IBV_QP_CUR_STATE) && a->cur_qp_state != qp->hw)
        goto invalid;
    mask &= ~IBV_QP_CUR_STATE;
    to = (mask & IBV_QP_STATE) ? a->qp_state : qp->hw;
    if (to == IBV_QPS_RESET || to == IBV_QPS_ERR) {
        req = 0;
    } else {
        for (i = 0; i < sizeof fv_trans / sizeof fv_trans[0]; i++) {
            if (fv_trans[i].from == qp->hw && fv_trans[i].to == to) {
                req = fv_trans[i].req;
                opt = fv_trans[i].opt;
            }
        }
    }
    if (req < 0 || (mask & req) != req ||
        (mask & ~(req | opt | IBV_QP_STATE)) || !attrs_ok(qp, a, mask))
        goto invalid;

    if (mask & IBV_QP_ACCESS_FLAGS)
        qp->access = (int)a->qp_access_flags;
    if (mask & IBV_QP_AV)
        qp->av = a->ah_attr;
    if (mask & IBV_QP_PATH_MTU)
        qp->mtu = a->path_mtu;
    if (mask & IBV_QP_DEST_QPN)
        qp->dest_qpn = a->dest_qp_num;
    if (mask & IBV_QP_RQ_PSN)
        qp->rq_psn = a->rq_psn;
    if (mask & IBV_QP_SQ_PSN)
        qp->sq_psn = a->sq_psn;
    if (mask & IBV_QP_MAX_DEST_RD_ATOMIC)
        qp->max_dest_rd = a->max_dest_rd_atomic;
    if (mask & IBV_QP_MAX_QP_RD_ATOMIC)
        qp->max_rd = a->max_rd_atomic;
    if (mask & IBV_QP_MIN_RNR_TIMER)
        qp->min_rnr = a->min_rnr_timer;
    if (mask & IBV_QP_TIMEOUT)
        qp->timeout = a->timeout;
    if (mask & IBV_QP_RETRY_CNT)
        qp->retry_cnt = a->retry_cnt;
    if (mask & IBV_QP_RNR_RETRY)
        qp->rnr_retry = a->rnr_retry;
    if (mask & IBV_QP_STATE) {
        if (to == IBV_QPS_RESET)
            qp_reset(qp);
        else if (to == IBV_QPS_ERR)
            qp_to_err(qp);
        else
            qp->hw = to;
        qp->qp.state = to;  /* as rdma-core: the caller's last word */
    }
    unlock();
    return 0;

invalid:
    unlock();
    return EINVAL;
}

/* ---- posting --------------------------------------------------------------- */

#define FV_SEND_FLAGS                                                       \
    (IBV_SEND_FENCE | IBV_SEND_SIGNALED | IBV_SEND_SOLICITED |              \
     IBV_SEND_INLINE)

/* Queue one send WR (copied; inline data copied now), or say why not. */
static int sq_queue(fv_qp_t *qp, const struct ibv_send_wr *wr)
{
    uint64_t total = 0;
    fv_swqe_t *w;
    void *inl = NULL;
    int i;

    switch (wr->opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
    case IBV_WR_RDMA_READ:
        break;
    default:
        return EINVAL;
    }
    if (wr->num_sge < 0 || wr->num_sge > (int)qp->cap.max_send_sge ||
        (wr->num_sge && !wr->sg_list) || (wr->send_flags & ~FV_SEND_FLAGS))
        return EINVAL;
    for (i = 0; i < wr->num_sge; i++)
        total += wr->sg_list[i].length;
    if ((wr->send_flags & IBV_SEND_INLINE) &&
        (wr->opcode == IBV_WR_RDMA_READ || total > qp->cap.max_inline_data))
        return EINVAL;
    if (qp->s_post - qp->s_free >= qp->cap.max_send_wr)
        return ENOMEM;
    if (fv.fail_armed) {
        if (fv.fail_left == 0) {
            fv.fail_armed = false;
            return ENOMEM;
        }
        fv.fail_left--;
    }
    if ((wr->send_flags & IBV_SEND_INLINE) && total) {
        char *p = inl = malloc(total);

        if (!inl)
            return ENOMEM;
        for (i = 0; i < wr->num_sge; i++) {
            memcpy(p, (void *)(uintptr_t)wr->sg_list[i].addr,
                   wr->sg_list[i].length);
            p += wr->sg_list[i].length;
        }
    }
    w = swqe(qp, qp->s_post);
    w->wr_id = wr->wr_id;
    w->op = wr->opcode;
    w->flags = wr->send_flags;
    w->imm = wr->imm_data;
    w->raddr = wr->wr.rdma.remote_addr;
    w->rkey = wr->wr.rdma.rkey;
    w->nsge = wr->num_sge;
    if (wr->num_sge)
        memcpy(w->sge, wr->sg_list, (size_t)wr->num_sge * sizeof *w->sge);
    w->inl = inl;
    w->inl_len = (uint32_t)total;
    w->signaled = qp->sig_all || (wr->send_flags & IBV_SEND_SIGNALED);
    w->rnr_seen = false;
    w->delay_until = w->rnr_until = w->retry_until = 0;
    qp->s_post++;
    return 0;
}

static int fv_post_send(struct ibv_qp *ibqp, struct ibv_send_wr *wr,
                        struct ibv_send_wr **bad)
{
    fv_qp_t *qp = qp_of(ibqp, __func__);
    int rc = 0;

    lock();
    if (qp->hw != IBV_QPS_RTS) {
        rc = EINVAL;
    } else {
        fv.st.post_sends++;
        for (; wr; wr = wr->next) {
            rc = sq_queue(qp, wr);
            if (rc)
                break;
            fv.st.wrs_posted++;
            fv.st.wrs_signaled += (wr->send_flags & IBV_SEND_SIGNALED) != 0;
            fv.st.wrs_inline += (wr->send_flags & IBV_SEND_INLINE) != 0;
        }
        pthread_cond_signal(&fv.nic_cv);
    }
    unlock();
    if (rc && bad)
        *bad = wr;
    return rc;
}

static int fv_post_recv(struct ibv_qp *ibqp, struct ibv_recv_wr *wr,
                        struct ibv_recv_wr **bad)
{
    fv_qp_t *qp = qp_of(ibqp, __func__);
    int rc = 0;

    lock();
    if (qp->hw == IBV_QPS_RESET) {
        rc = EINVAL;
    } else {
        for (; wr; wr = wr->next) {
            fv_rwqe_t *r;

            if (wr->num_sge < 0 || wr->num_sge > (int)qp->cap.max_recv_sge ||
                (wr->num_sge && !wr->sg_list)) {
                rc = EINVAL;
                break;
            }
            if (qp->r_post - qp->r_free >= qp->cap.max_recv_wr) {
                rc = ENOMEM;
                break;
            }
            r = rwqe(qp, qp->r_post);
            r->wr_id = wr->wr_id;
            r->nsge = wr->num_sge;
            if (wr->num_sge)
                memcpy(r->sge, wr->sg_list,
                       (size_t)wr->num_sge * sizeof *r->sge);
            qp->r_post++;
        }
        if (qp->hw == IBV_QPS_ERR)  /* accepted, and flushed at once */
            flush_rq(qp);
    }
    unlock();
    if (rc && bad)
        *bad = wr;
    return rc;
}

/* ---- the NIC: execution -------------------------------------------------------- */

/* A contiguous piece of memory a WR reads or writes. */
typedef struct fv_seg {
    char *p;
    size_t len;
} fv_seg_t;

/* SGEs as segments, each checked against the PD's live MRs with `need`
 * access; zero-length SGEs are skipped (as providers do).  false: an SGE
 * names no such MR or leaves it. */
static bool sges_segs(const fv_pd_t *pd, const struct ibv_sge *sge, int n,
                      int need, fv_seg_t *seg, int *nseg)
{
    int i;

    *nseg = 0;
    for (i = 0; i < n; i++) {
        const fv_mr_t *mr;

        if (!sge[i].length)
            continue;
        mr = mr_by_key(sge[i].lkey, false);
        if (!mr || mr->pd != pd || (mr->access & need) != need ||
            !mr_covers(mr, sge[i].addr, sge[i].length))
            return false;
        seg[*nseg].p = (char *)(uintptr_t)sge[i].addr;
        seg[*nseg].len = sge[i].length;
        (*nseg)++;
    }
    return true;
}

/* The local side of a send WR: its inline copy, or its SGEs. */
static bool local_segs(const fv_qp_t *qp, const fv_swqe_t *w, int need,
                       fv_seg_t *seg, int *nseg)
{
    if (w->flags & IBV_SEND_INLINE) {
        *nseg = 0;
        if (w->inl_len) {
            seg[0].p = w->inl;
            seg[0].len = w->inl_len;
            *nseg = 1;
        }
        return true;
    }
    return sges_segs(qp->pd, w->sge, w->nsge, need, seg, nseg);
}

/* The responder's side of an RDMA WRITE or READ: the rkey names a live MR
 * of the remote QP's PD granting `need`, the range lies inside it and the
 * QP itself allows the access.  A zero-length access checks nothing. */
static bool remote_seg(const fv_qp_t *r, uint32_t rkey, uint64_t addr,
                       uint64_t len, int need, fv_seg_t *seg, int *nseg)
{
    const fv_mr_t *mr;

    *nseg = 0;
    if (!len)
        return true;
    mr = mr_by_key(rkey, true);
    if (!mr || mr->pd != r->pd || !(mr->access & need) ||
        !(r->access & need) || !mr_covers(mr, addr, len))
        return false;
    seg[0].p = (char *)(uintptr_t)addr;
    seg[0].len = len;
    *nseg = 1;
    return true;
}

static void seg_copy(const fv_seg_t *dst, int nd, const fv_seg_t *src, int ns)
{
    int i = 0, j = 0;
    size_t di = 0, si = 0;

    while (i < nd && j < ns) {
        size_t n = dst[i].len - di;

        if (n > src[j].len - si)
            n = src[j].len - si;
        memmove(dst[i].p + di, src[j].p + si, n);
        di += n;
        si += n;
        if (di == dst[i].len) {
            i++;
            di = 0;
        }
        if (si == src[j].len) {
            j++;
            si = 0;
        }
    }
}

static uint64_t wr_len(const fv_swqe_t *w)
{
    uint64_t total = 0;
    int i;

    for (i = 0; i < w->nsge; i++)
        total += w->sge[i].length;
    return total;
}

/* The send WR at seq is done.  Its CQE goes out when signaled or failed;
 * a failure moves the QP to error.  Nothing happens when the WR is no
 * longer at the head (flushed meanwhile, by a CQ overrun). */
static void sq_done(fv_qp_t *qp, uint64_t seq, enum ibv_wc_status st,
                    uint32_t byte_len)
{
    fv_swqe_t *w;
    fv_cqe_t e;

    if (qp->s_exec != seq)
        return;
    w = swqe(qp, seq);
    qp->s_exec++;
    if (st == IBV_WC_SUCCESS)
        fv.st.wrs_executed++;
    else
        fv.st.wrs_failed++;
    memset(&e, 0, sizeof e);
    e.wc.wr_id = w->wr_id;
    e.wc.status = st;
    e.wc.opcode = wc_opcode(w->op);
    e.wc.byte_len = byte_len;
    e.wc.qp_num = qp->qp.qp_num;
    e.qp = qp;
    e.seq = seq;
    e.send = true;
    swqe_release(w);
    if (w->signaled || st != IBV_WC_SUCCESS)
        cq_push(qp->scq, &e);
    if (st != IBV_WC_SUCCESS)
        qp_to_err(qp);
}

/* The receive at rseq of r is consumed by w from qp (skipped if it was
 * flushed meanwhile). */
static void rq_done(fv_qp_t *r, uint64_t rseq, enum ibv_wc_status st,
                    const fv_qp_t *qp, const fv_swqe_t *w, uint32_t len)
{
    bool imm = w->op == IBV_WR_SEND_WITH_IMM ||
               w->op == IBV_WR_RDMA_WRITE_WITH_IMM;
    fv_cqe_t e;

    if (r->r_used != rseq)
        return;
    memset(&e, 0, sizeof e);
    e.wc.wr_id = rwqe(r, rseq)->wr_id;
    e.wc.status = st;
    e.wc.opcode = w->op == IBV_WR_RDMA_WRITE_WITH_IMM
        ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV;
    e.wc.byte_len = st == IBV_WC_SUCCESS ? len : 0;
    e.wc.qp_num = r->qp.qp_num;
    e.wc.src_qp = qp->qp.qp_num;
    e.wc.slid = dev_lid(qp->ctx->dev);
    if (imm) {
        e.wc.wc_flags = IBV_WC_WITH_IMM;
        e.wc.imm_data = w->imm;
    }
    e.qp = r;
    e.seq = rseq;
    e.solicited = (w->flags & IBV_SEND_SOLICITED) != 0;
    r->r_used++;
    cq_push(r->rcq, &e);
}

/* A NAK from the responder: the requester fails, both QPs go to error. */
static void responder_fail(fv_qp_t *qp, uint64_t seq, fv_qp_t *r,
                           enum ibv_wc_status st)
{
    sq_done(qp, seq, st, 0);
    qp_to_err(r);
}

/* The WR cannot go on yet: look again soon, or fail at the deadline. */
static void stall(fv_qp_t *qp, uint64_t seq, uint64_t until, uint64_t now,
                  enum ibv_wc_status st)
{
    if (now >= until) {
        sq_done(qp, seq, st, 0);
        return;
    }
    qp->not_before = now + FV_POLL_NS < until ? now + FV_POLL_NS : until;
}

/* Receiver not ready: retried for rnr_ms at rnr_retry 7, less below. */
static void rnr(fv_qp_t *qp, uint64_t seq, fv_swqe_t *w, uint64_t now)
{
    if (!w->rnr_seen) {
        w->rnr_seen = true;
        fv.st.rnr_events++;
        if (!qp->rnr_said) {
            qp->rnr_said = true;
            fprintf(stderr, "fakeverbs: RNR on QP %u\n", qp->qp.qp_num);
        }
        w->rnr_until = now + (uint64_t)fv.rnr_ms * 1000000ull *
                       qp->rnr_retry / 7;
    }
    stall(qp, seq, w->rnr_until, now, IBV_WC_RNR_RETRY_EXC_ERR);
}

/* The device an address vector of a QP on `me` names, if it is open. */
static fv_dev_t *av_dev(const fv_dev_t *me, const struct ibv_ah_attr *av)
{
    int i;

    if (me->eth) {
        for (i = 0; i < FV_MAX_DEV; i++) {
            fv_dev_t *d = &fv.dev[i];
            union ibv_gid g0, g1;

            gid_of(i, true, 0, &g0);
            gid_of(i, true, 1, &g1);
            if (d->eth && d->nopen &&
                (!memcmp(&av->grh.dgid, &g0, sizeof g0) ||
                 !memcmp(&av->grh.dgid, &g1, sizeof g1)))
                return d;
        }
        return NULL;
    }
    if (av->dlid == 0 || av->dlid > FV_MAX_DEV)
        return NULL;
    return !fv.dev[av->dlid - 1].eth && fv.dev[av->dlid - 1].nopen
        ? &fv.dev[av->dlid - 1] : NULL;
}

/* The responder: on the device addressed, a live QP numbered dest_qpn in
 * RTR or RTS, connected back to this one; NULL as a NIC that hears no
 * answer. */
static fv_qp_t *resolve(const fv_qp_t *qp)
{
    fv_dev_t *me = qp->ctx->dev;
    fv_dev_t *to = av_dev(me, &qp->av);
    fv_qp_t *r;

    if (!to || fv.cut)
        return NULL;
    r = qp_by_num(qp->dest_qpn);
    if (!r || r->ctx->dev != to ||
        (r->hw != IBV_QPS_RTR && r->hw != IBV_QPS_RTS) ||
        r->dest_qpn != qp->qp.qp_num || av_dev(to, &r->av) != me)
        return NULL;
    return r;
}

/* Payload qp's WR moved, on the requester's device. */
static void moved(const fv_qp_t *qp, uint64_t len)
{
    fv.st.bytes_moved += len;
    fv.st.bytes_by_dev[qp->ctx->dev->index] += len;
}

static void run_write(fv_qp_t *qp, uint64_t seq, fv_swqe_t *w, fv_qp_t *r,
                      uint64_t len, uint64_t now)
{
    fv_seg_t src[FV_MAX_SGE], dst[1];
    int ns, nd;
    bool imm = w->op == IBV_WR_RDMA_WRITE_WITH_IMM;

    if (!local_segs(qp, w, 0, src, &ns)) {
        sq_done(qp, seq, IBV_WC_LOC_PROT_ERR, 0);
        return;
    }
    if (!remote_seg(r, w->rkey, w->raddr, len, IBV_ACCESS_REMOTE_WRITE, dst,
                    &nd)) {
        responder_fail(qp, seq, r, IBV_WC_REM_ACCESS_ERR);
        return;
    }
    if (imm && r->r_used == r->r_post) {
        rnr(qp, seq, w, now);
        return;
    }
    seg_copy(dst, nd, src, ns);
    moved(qp, len);
    if (imm)
        rq_done(r, r->r_used, IBV_WC_SUCCESS, qp, w, (uint32_t)len);
    sq_done(qp, seq, IBV_WC_SUCCESS, 0);
}

static void run_read(fv_qp_t *qp, uint64_t seq, fv_swqe_t *w, fv_qp_t *r,
                     uint64_t len)
{
    fv_seg_t src[1], dst[FV_MAX_SGE];
    int ns, nd;

    if (qp->max_rd == 0) {  /* no READ may be outstanding at all */
        sq_done(qp, seq, IBV_WC_LOC_QP_OP_ERR, 0);
        return;
    }
    if (r->max_dest_rd == 0) {
        responder_fail(qp, seq, r, IBV_WC_REM_INV_REQ_ERR);
        return;
    }
    if (!remote_seg(r, w->rkey, w->raddr, len, IBV_ACCESS_REMOTE_READ, src,
                    &ns)) {
        responder_fail(qp, seq, r, IBV_WC_REM_ACCESS_ERR);
        return;
    }
    if (!local_segs(qp, w, IBV_ACCESS_LOCAL_WRITE, dst, &nd)) {
        sq_done(qp, seq, IBV_WC_LOC_PROT_ERR, 0);
        return;
    }
    seg_copy(dst, nd, src, ns);
    moved(qp, len);
    sq_done(qp, seq, IBV_WC_SUCCESS, (uint32_t)len);
}

static void run_send(fv_qp_t *qp, uint64_t seq, fv_swqe_t *w, fv_qp_t *r,
                     uint64_t len, uint64_t now)
{
    fv_seg_t src[FV_MAX_SGE], dst[FV_MAX_SGE];
    const fv_rwqe_t *rw;
    uint64_t room = 0;
    int ns, nd, i;

    if (!local_segs(qp, w, 0, src, &ns)) {
        sq_done(qp, seq, IBV_WC_LOC_PROT_ERR, 0);
        return;
    }
    if (r->r_used == r->r_post) {
        rnr(qp, seq, w, now);
        return;
    }
    rw = rwqe(r, r->r_used);
    for (i = 0; i < rw->nsge; i++)
        room += rw->sge[i].length;
    if (len > room) {
        rq_done(r, r->r_used, IBV_WC_LOC_LEN_ERR, qp, w, 0);
        responder_fail(qp, seq, r, IBV_WC_REM_INV_REQ_ERR);
        return;
    }
    if (!sges_segs(r->pd, rw->sge, rw->nsge, IBV_ACCESS_LOCAL_WRITE, dst,
                   &nd)) {
        rq_done(r, r->r_used, IBV_WC_LOC_PROT_ERR, qp, w, 0);
        responder_fail(qp, seq, r, IBV_WC_REM_OP_ERR);
        return;
    }
    seg_copy(dst, nd, src, ns);
    moved(qp, len);
    rq_done(r, r->r_used, IBV_WC_SUCCESS, qp, w, (uint32_t)len);
    sq_done(qp, seq, IBV_WC_SUCCESS, 0);
}

/* One turn of a QP: execute (or stall) its oldest queued WR. */
static void qp_run(fv_qp_t *qp, uint64_t now)
{
    uint64_t seq = qp->s_exec;
    fv_swqe_t *w = swqe(qp, seq);
    fv_qp_t *r;
    uint64_t len;

    if (fv.delay_us) {
        if (!w->delay_until)
            w->delay_until = now + (uint64_t)fv.delay_us * 1000ull;
        if (now < w->delay_until) {
            qp->not_before = w->delay_until;
            return;
        }
    }
    r = resolve(qp);
    if (!r) {   /* a real NIC retries, then gives up */
        if (!w->retry_until)
            w->retry_until = now + (uint64_t)fv.retry_ms * 1000000ull;
        stall(qp, seq, w->retry_until, now, IBV_WC_RETRY_EXC_ERR);
        return;
    }
    w->retry_until = 0;
    len = (w->flags & IBV_SEND_INLINE) ? w->inl_len : wr_len(w);
    if (len > FV_MAX_MSG) {
        sq_done(qp, seq, IBV_WC_LOC_LEN_ERR, 0);
        return;
    }
    switch (w->op) {
    case IBV_WR_RDMA_READ:
        run_read(qp, seq, w, r, len);
        break;
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
        run_write(qp, seq, w, r, len, now);
        break;
    default:
        run_send(qp, seq, w, r, len, now);
        break;
    }
}

/* fakeverbs_release_on_dereg's QP, at a dereg_mr (lock held): released,
 * and its due WRs run now, each turn one WR, until one stalls. */
static void run_released(uint64_t now)
{
    fv_qp_t *qp;

    if (fv.release_on_dereg == 0)
        return;
    qp = qp_by_num(fv.release_on_dereg);
    fv.release_on_dereg = 0;
    if (!qp)
        return;
    qp->held = false;
    while (qp->hw == IBV_QPS_RTS && qp->s_exec != qp->s_post &&
           qp->not_before <= now) {
        uint64_t seq = qp->s_exec;

        qp_run(qp, now);
        if (qp->s_exec == seq)
            break;
    }
    pthread_cond_signal(&fv.nic_cv);
}

/* ---- the NIC: scheduling ------------------------------------------------------- */

static void *nic_main(void *arg)
{
    (void)arg;
    lock();
    while (!fv.nic_stop) {
        uint64_t now = now_ns(), wake = UINT64_MAX;
        fv_qp_t *best = NULL;
        fv_link_t *l;

        for (l = fv.qps.next; l != &fv.qps; l = l->next) {
            fv_qp_t *qp = FV_OF(l, fv_qp_t, link);

            if (qp->hw != IBV_QPS_RTS || qp->s_exec == qp->s_post ||
                qp->held)
                continue;
            if (qp->not_before > now) {
                if (qp->not_before < wake)
                    wake = qp->not_before;
                continue;
            }
            if (!best || qp->served < best->served)
                best = qp;
        }
        if (!best) {
            if (wake == UINT64_MAX) {
                pthread_cond_wait(&fv.nic_cv, &fv.mu);
            } else {
                struct timespec ts;

                ts.tv_sec = (time_t)(wake / 1000000000ull);
                ts.tv_nsec = (long)(wake % 1000000000ull);
                pthread_cond_timedwait(&fv.nic_cv, &fv.mu, &ts);
            }
            continue;
        }
        best->served = ++fv.tick;
        best->not_before = 0;
        qp_run(best, now);
        /* Jitter: let the caller's threads in now and then, so that no
         * completion arrives in step with its post. */
        if ((rnd() & 3) == 0) {
            unlock();
            sched_yield();
            lock();
        }
    }
    unlock();
    return NULL;
}

/* ---- the table ------------------------------------------------------------------ */

static const char *fv_wc_status_str(enum ibv_wc_status st)
{
    return ibv_wc_status_str(st);
}

static const vb_api_t fakeverbs_api = {
    .what = "fakeverbs",
    .get_device_list = fv_get_device_list,
    .free_device_list = fv_free_device_list,
    .get_device_name = fv_get_device_name,
    .open_device = fv_open_device,
    .close_device = fv_close_device,
    .get_async_event = fv_get_async_event,
    .ack_async_event = fv_ack_async_event,
    .event_type_str = ibv_event_type_str,
    .query_device = fv_query_device,
    .query_port = fv_query_port,
    .query_gid = fv_query_gid,
    .query_gid_type = fv_query_gid_type,
    .fork_status = fv_fork_status,
    .alloc_pd = fv_alloc_pd,
    .dealloc_pd = fv_dealloc_pd,
    .reg_mr = fv_reg_mr,
    .dereg_mr = fv_dereg_mr,
    .create_comp_channel = fv_create_comp_channel,
    .destroy_comp_channel = fv_destroy_comp_channel,
    .create_cq = fv_create_cq,
    .destroy_cq = fv_destroy_cq,
    .req_notify_cq = fv_req_notify_cq,
    .get_cq_event = fv_get_cq_event,
    .ack_cq_events = fv_ack_cq_events,
    .poll_cq = fv_poll_cq,
    .create_qp = fv_create_qp,
    .modify_qp = fv_modify_qp,
    .destroy_qp = fv_destroy_qp,
    .post_send = fv_post_send,
    .post_recv = fv_post_recv,
    .wc_status_str = fv_wc_status_str,
};

const vb_api_t *const vb__api = &fakeverbs_api;

/* ---- test hooks ------------------------------------------------------------------ */

void fakeverbs_stats(struct fakeverbs_stats *out)
{
    fv_init();
    lock();
    *out = fv.st;
    unlock();
}

void fakeverbs_reset_stats(void)
{
    fv_init();
    lock();
    fv.st.wrs_executed = fv.st.wrs_failed = fv.st.flushed = 0;
    fv.st.post_sends = fv.st.wrs_posted = fv.st.wrs_signaled = 0;
    fv.st.wrs_inline = 0;
    fv.st.bytes_moved = fv.st.rnr_events = fv.st.cq_overruns = 0;
    memset(fv.st.bytes_by_dev, 0, sizeof fv.st.bytes_by_dev);
    unlock();
}

int fakeverbs_async(int dev, enum ibv_event_type type, uint32_t qpn)
{
    fv_qp_t *qp = NULL;
    int n = 0;

    fv_init();
    lock();
    if (qpn != 0 && (qp = qp_by_num(qpn)) == NULL) {
        unlock();
        return ENOENT;
    }
    for (fv_ctx_t *c = fv.ctxs; c; c = c->next) {
        struct ibv_async_event *e;
        uint64_t one = 1;

        if (c->dev->index != dev || c->nev == FV_ASYNC_MAX ||
            (qp != NULL && qp->ctx != c))
            continue;
        e = &c->ev[c->nev++];
        memset(e, 0, sizeof *e);
        e->event_type = type;
        if (qp != NULL)
            e->element.qp = &qp->qp;
        else
            e->element.port_num = 1;
        if (write(c->ctx.async_fd, &one, sizeof one) < 0) {
        }
        n++;
    }
    unlock();
    return n > 0 ? 0 : ENOENT;
}

/* A hook's QP: the live one numbered qpn, returned with the lock held;
 * NULL, unlocked, when there is none. */
static fv_qp_t *hook_qp(uint32_t qpn)
{
    fv_qp_t *qp;

    fv_init();
    lock();
    qp = qp_by_num(qpn);
    if (!qp)
        unlock();
    return qp;
}

int fakeverbs_qp_error(uint32_t qpn)
{
    fv_qp_t *qp = hook_qp(qpn);

    if (!qp)
        return ENOENT;
    if (qp->hw == IBV_QPS_RTS && qp->s_exec < qp->s_post)
        sq_done(qp, qp->s_exec, IBV_WC_RETRY_EXC_ERR, 0);
    qp_to_err(qp);
    unlock();
    return 0;
}

int fakeverbs_qp_state(uint32_t qpn)
{
    fv_qp_t *qp = hook_qp(qpn);
    int st;

    if (!qp)
        return -1;
    st = (int)qp->hw;
    unlock();
    return st;
}

void fakeverbs_fail_post_after(unsigned n)
{
    fv_init();
    lock();
    fv.fail_armed = true;
    fv.fail_left = n;
    unlock();
}

void fakeverbs_cut(bool cut)
{
    fv_init();
    lock();
    fv.cut = cut;
    pthread_cond_signal(&fv.nic_cv);
    unlock();
}

unsigned fakeverbs_qps(struct fakeverbs_qp_info *out, unsigned max)
{
    unsigned n = 0;
    fv_link_t *l;

    fv_init();
    lock();
    for (l = fv.qps.next; l != &fv.qps; l = l->next, n++) {
        const fv_qp_t *qp = FV_OF(l, fv_qp_t, link);
        const fv_dev_t *to;
        struct fakeverbs_qp_info *o;

        if (n >= max || !out)
            continue;
        o = &out[n];
        memset(o, 0, sizeof *o);
        o->qpn = qp->qp.qp_num;
        o->dev = qp->ctx->dev->index;
        o->state = (int)qp->hw;
        o->dest_qpn = qp->dest_qpn;
        to = qp->hw == IBV_QPS_RESET || qp->hw == IBV_QPS_INIT
            ? NULL : av_dev(qp->ctx->dev, &qp->av);
        o->dest_dev = to ? to->index : -1;
        o->max_send_wr = qp->cap.max_send_wr;
        o->sq_queued = qp->s_post - qp->s_exec;
        o->held = qp->held;
    }
    unlock();
    return n;
}

int fakeverbs_hold(uint32_t qpn, bool hold)
{
    fv_qp_t *qp = hook_qp(qpn);

    if (!qp)
        return ENOENT;
    qp->held = hold;
    pthread_cond_signal(&fv.nic_cv);
    unlock();
    return 0;
}

int fakeverbs_release_on_dereg(uint32_t qpn)
{
    fv_qp_t *qp = hook_qp(qpn);

    if (!qp)
        return ENOENT;
    qp->held = true;
    fv.release_on_dereg = qpn;
    unlock();
    return 0;
}

void fakeverbs_set_delay_us(unsigned us)
{
    fv_init();
    lock();
    fv.delay_us = us;
    pthread_cond_signal(&fv.nic_cv);
    unlock();
}
