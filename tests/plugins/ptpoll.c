/* ptpoll.c - a test plugin shaped like a one-sided hardware transport:
 * in-process loopback whose work is visible only when progress() runs.
 *
 * A post only queues the request on its own instance (a send queue);
 * the initiator's progress() moves the bytes (checked by the target's
 * host mem_check, as a NIC checks a remote key) and completes it, so
 * completions exist only for a core that polls.  Notifications land in
 * the target's inbox and reach its agent only from the target's own
 * progress().  No event fd by default (event_fd=1 adds one), flags
 * XFER_BE_THREAD_SAFE | XFER_BE_POLL, and arm() answers XFER_ERR_BUSY
 * while anything is queued or in flight.  reg_delay_ms makes
 * mem_register sleep, standing in for a NIC pinning gigabytes. */
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <xfer/backend.h>

typedef struct pp_config {
    int event_fd;
    uint64_t reg_delay_ms;
} pp_config_t;

static const xfer_param_t pp_params[] = {
    {"event_fd", XFER_PARAM_BOOL, "0", "give the core an eventfd (default: "
     "none, the backend must be polled)", offsetof(pp_config_t, event_fd), 1,
     0},
    {"reg_delay_ms", XFER_PARAM_UINT, "0", "mem_register sleeps this long "
     "(a NIC pinning gigabytes)", offsetof(pp_config_t, reg_delay_ms), 0,
     10000},
};

#define PP_ERR_MAX 600 /* a request's error sentence */

/* A queued item: one of our requests, or a notification sent alone. */
typedef struct pp_op {
    struct pp_op *next;
    struct xfer_be_req *req; /* NULL: a notification alone */
    uint64_t target_id;      /* for a notification alone */
    size_t len;
    unsigned char *msg;      /* the notification, or NULL */
} pp_op_t;

/* A notification waiting in a target's inbox. */
typedef struct pp_msg {
    struct pp_msg *next;
    char from[XFER_NAME_MAX + 1];
    size_t len;
    unsigned char msg[];
} pp_msg_t;

struct xfer_be {
    uint64_t id;
    const xfer_host_t *host;
    const pp_config_t *cfg;
    char name[XFER_NAME_MAX + 1];
    int efd;                     /* -1 unless event_fd=1 */
    unsigned refs;               /* initiators touching us; under g_lock */
    struct xfer_be *next;        /* g_list */

    /* Serialises progress: the inbox and the send queue leave in order. */
    pthread_mutex_t prog_lock;
    /* Held (read) by initiators while they touch our memory; taken
     * (write) by mem_deregister to outlast them. */
    pthread_rwlock_t mem_lock;
    /* Guards everything below and every request's state. */
    pthread_mutex_t lock;
    pp_op_t *sq_head, *sq_tail;  /* posted, not yet run */
    pp_msg_t *in_head, *in_tail; /* notifications for our agent */
    unsigned running;            /* taken off the queue, not yet done */
    struct xfer_be_req *reqs;    /* every request created here */
};

struct xfer_be_peer {
    uint64_t target_id;
};

typedef struct pp_mem {
    xfer_be_region_t r;
} pp_mem_t;

typedef struct pp_rmem {
    uint64_t key;
} pp_rmem_t;

struct xfer_be_req {
    xfer_be_t *be;
    xfer_be_peer_t *peer;    /* NULL once the peer was removed */
    uint64_t target_id;
    xfer_op_t op;
    const xfer_be_seg_t *segs;
    size_t nseg;
    xfer_status_t state;
    bool queued, running;
    char err[PP_ERR_MAX];
    pp_op_t node;            /* on be's send queue while queued */
    struct xfer_be_req *prev, *next; /* be->reqs */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static xfer_be_t *g_list;
static uint64_t g_next_id = 1;

/* A live instance by id, held until target_put. */
static xfer_be_t *target_get(uint64_t id)
{
    xfer_be_t *b;

    pthread_mutex_lock(&g_lock);
    for (b = g_list; b != NULL && b->id != id; b = b->next)
        ;
    if (b != NULL)
        b->refs++;
    pthread_mutex_unlock(&g_lock);
    return b;
}

static void target_put(xfer_be_t *b)
{
    pthread_mutex_lock(&g_lock);
    if (--b->refs == 0)
        pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

static void signal_fd(xfer_be_t *be)
{
    uint64_t one = 1;

    if (be->efd >= 0 && write(be->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: already readable. */
    }
}

/* Something is pending on be: its event fd fires, or, without one, its
 * agent is told to call progress (the arm contract). */
static void kick(xfer_be_t *be)
{
    if (be->efd >= 0)
        signal_fd(be);
    else
        be->host->wake(be->host->ctx);
}

static xfer_status_t pp_init(const xfer_host_t *host, const void *config,
                             xfer_be_t **out)
{
    const pp_config_t *cfg = config;
    xfer_be_t *be = calloc(1, sizeof(*be));

    if (be == NULL)
        return XFER_ERR_NOMEM;
    be->host = host;
    be->cfg = cfg;
    be->efd = -1;
    snprintf(be->name, sizeof(be->name), "%s", host->agent_name);
    if (cfg->event_fd) {
        be->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (be->efd < 0) {
            free(be);
            return host->error(host->ctx, XFER_ERR_BACKEND, "ptpoll: no "
                               "eventfd");
        }
    }
    pthread_mutex_init(&be->prog_lock, NULL);
    pthread_rwlock_init(&be->mem_lock, NULL);
    pthread_mutex_init(&be->lock, NULL);
    pthread_mutex_lock(&g_lock);
    be->id = g_next_id++;
    be->next = g_list;
    g_list = be;
    pthread_mutex_unlock(&g_lock);
    *out = be;
    return XFER_OK;
}

static void pp_fini(xfer_be_t *be)
{
    pthread_mutex_lock(&g_lock);
    for (xfer_be_t **pp = &g_list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == be) {
            *pp = be->next;
            break;
        }
    }
    /* Initiators in the middle of an access to us finish first. */
    while (be->refs > 0)
        pthread_cond_wait(&g_cond, &g_lock);
    pthread_mutex_unlock(&g_lock);
    /* Peers and requests are gone (the core's order): only lone
     * notifications never run and undelivered messages are left. */
    while (be->sq_head != NULL) {
        pp_op_t *op = be->sq_head;

        be->sq_head = op->next;
        free(op->msg);
        free(op);
    }
    while (be->in_head != NULL) {
        pp_msg_t *m = be->in_head;

        be->in_head = m->next;
        free(m);
    }
    if (be->efd >= 0)
        close(be->efd);
    pthread_mutex_destroy(&be->lock);
    pthread_rwlock_destroy(&be->mem_lock);
    pthread_mutex_destroy(&be->prog_lock);
    free(be);
}

static xfer_status_t pp_conn_info(xfer_be_t *be, void *buf, size_t *len)
{
    int n = snprintf(buf, *len, "ptpoll pid=%ld id=%" PRIu64, (long)getpid(),
                     be->id);

    if (n < 0 || (size_t)n >= *len)
        return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                               "ptpoll: connection info does not fit");
    *len = (size_t)n;
    return XFER_OK;
}

static xfer_status_t pp_peer_add(xfer_be_t *be, const char *name,
                                 uint64_t epoch, const void *info, size_t len,
                                 xfer_be_peer_t **out)
{
    char text[128];
    long pid;
    uint64_t id;
    xfer_be_peer_t *p;

    (void)epoch;
    if (len == 0 || len >= sizeof(text))
        return be->host->error(be->host->ctx, XFER_ERR_INVALID, "ptpoll: peer "
                               "'%s': connection info of %zu bytes", name, len);
    memcpy(text, info, len);
    text[len] = '\0';
    if (sscanf(text, "ptpoll pid=%ld id=%" SCNu64, &pid, &id) != 2)
        return be->host->error(be->host->ctx, XFER_ERR_INVALID, "ptpoll: peer "
                               "'%s': malformed connection info", name);
    if (pid != (long)getpid())
        return be->host->error(be->host->ctx, XFER_ERR_INVALID, "ptpoll: peer "
                               "'%s' lives in process %ld; ptpoll only reaches "
                               "its own process", name, pid);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return XFER_ERR_NOMEM;
    p->target_id = id;
    *out = p;
    return XFER_OK;
}

/* be->lock held. */
static void sq_unlink(xfer_be_t *be, pp_op_t *op)
{
    pp_op_t *prev = NULL;

    for (pp_op_t **pp = &be->sq_head; *pp != NULL;
         prev = *pp, pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            if (be->sq_tail == op)
                be->sq_tail = prev;
            return;
        }
    }
}

static void sq_append(xfer_be_t *be, pp_op_t *op)
{
    op->next = NULL;
    if (be->sq_tail != NULL)
        be->sq_tail->next = op;
    else
        be->sq_head = op;
    be->sq_tail = op;
}

/* Queued requests to that peer fail and later posts are refused; one
 * running finishes on its own (target_get keeps the target). */
static void pp_peer_remove(xfer_be_t *be, xfer_be_peer_t *peer)
{
    pthread_mutex_lock(&be->lock);
    for (struct xfer_be_req *q = be->reqs; q != NULL; q = q->next) {
        if (q->peer != peer)
            continue;
        q->peer = NULL;
        if (!q->queued)
            continue;
        sq_unlink(be, &q->node);
        q->queued = false;
        q->state = XFER_ERR_REMOTE_DISCONNECT;
        snprintf(q->err, sizeof(q->err), "ptpoll: peer removed");
    }
    pthread_mutex_unlock(&be->lock);
    free(peer);
}

static xfer_status_t pp_mem_register(xfer_be_t *be, const xfer_be_region_t *r,
                                     void **mem)
{
    pp_mem_t *m;

    if (be->cfg->reg_delay_ms > 0) {
        struct timespec ts = {
            .tv_sec = (time_t)(be->cfg->reg_delay_ms / 1000),
            .tv_nsec = (long)(be->cfg->reg_delay_ms % 1000) * 1000000L,
        };

        while (nanosleep(&ts, &ts) != 0)
            ;
    }
    m = malloc(sizeof(*m));
    if (m == NULL)
        return XFER_ERR_NOMEM;
    m->r = *r;
    *mem = m;
    return XFER_OK;
}

static void pp_mem_deregister(xfer_be_t *be, void *mem)
{
    /* The core took the region out of its table first, so no new access
     * passes mem_check; wait out the ones that already did. */
    pthread_rwlock_wrlock(&be->mem_lock);
    pthread_rwlock_unlock(&be->mem_lock);
    free(mem);
}

/* No mem_pack: the core's key, address and length are all a peer needs,
 * so the public part is empty (a hardware key would travel here). */
static xfer_status_t pp_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                    const xfer_be_rregion_t *r,
                                    const void *buf, size_t len, void **rmem)
{
    pp_rmem_t *m = malloc(sizeof(*m));

    (void)peer;
    (void)buf;
    if (m == NULL)
        return XFER_ERR_NOMEM;
    if (len != 0) {
        free(m);
        return be->host->error(be->host->ctx, XFER_ERR_INVALID, "ptpoll: "
                               "a public part of %zu bytes; ptpoll packs "
                               "none", len);
    }
    m->key = r->key;
    *rmem = m;
    return XFER_OK;
}

static void pp_rmem_release(xfer_be_t *be, void *rmem)
{
    (void)be;
    free(rmem);
}

static xfer_status_t pp_req_create(xfer_be_t *be, xfer_op_t op,
                                   xfer_be_peer_t *peer,
                                   const xfer_be_seg_t *segs, size_t nseg,
                                   xfer_be_req_t **out)
{
    struct xfer_be_req *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return XFER_ERR_NOMEM;
    q->be = be;
    q->target_id = peer->target_id;
    q->op = op;
    q->segs = segs;
    q->nseg = nseg;
    q->state = XFER_OK;
    q->node.req = q;
    q->peer = peer;
    pthread_mutex_lock(&be->lock);
    q->next = be->reqs;
    if (be->reqs != NULL)
        be->reqs->prev = q;
    be->reqs = q;
    pthread_mutex_unlock(&be->lock);
    *out = q;
    return XFER_OK;
}

static xfer_status_t pp_req_post(xfer_be_t *be, xfer_be_req_t *q,
                                 const void *notif, size_t notif_len)
{
    unsigned char *copy = NULL;

    if (notif != NULL) {
        copy = malloc(notif_len ? notif_len : 1);
        if (copy == NULL)
            return XFER_ERR_NOMEM;
        memcpy(copy, notif, notif_len);
    }
    pthread_mutex_lock(&be->lock);
    if (q->queued || q->running) {
        pthread_mutex_unlock(&be->lock);
        free(copy);
        return be->host->error(be->host->ctx, XFER_ERR_BUSY,
                               "ptpoll: request still in progress");
    }
    if (q->peer == NULL) {
        q->state = XFER_ERR_REMOTE_DISCONNECT;
        pthread_mutex_unlock(&be->lock);
        free(copy);
        return be->host->error(be->host->ctx, XFER_ERR_REMOTE_DISCONNECT,
                               "ptpoll: the peer was removed");
    }
    free(q->node.msg);
    q->node.msg = copy;
    q->node.len = notif_len;
    q->err[0] = '\0';
    q->state = XFER_IN_PROG;
    q->queued = true;
    sq_append(be, &q->node);
    pthread_mutex_unlock(&be->lock);
    /* No host->wake: the core pokes a polled backend's agent on post.
     * With an event fd, it fires as a NIC's would. */
    signal_fd(be);
    return XFER_IN_PROG;
}

static xfer_status_t pp_req_check(xfer_be_t *be, xfer_be_req_t *q)
{
    xfer_status_t s;
    char err[sizeof(q->err)];

    pthread_mutex_lock(&be->lock);
    s = q->state;
    memcpy(err, q->err, sizeof(err));
    pthread_mutex_unlock(&be->lock);
    if (s < 0)
        return be->host->error(be->host->ctx, s, "%s",
                               err[0] ? err : "ptpoll: request failed");
    return s;
}

static xfer_status_t pp_req_cancel(xfer_be_t *be, xfer_be_req_t *q)
{
    xfer_status_t st = XFER_OK;

    pthread_mutex_lock(&be->lock);
    if (q->running) {
        st = XFER_ERR_BUSY; /* the bytes are moving: it ends on its own */
    } else if (q->queued) {
        sq_unlink(be, &q->node);
        q->queued = false;
        q->state = XFER_ERR_CANCELED;
    }
    pthread_mutex_unlock(&be->lock);
    return st;
}

static void pp_req_release(xfer_be_t *be, xfer_be_req_t *q)
{
    pthread_mutex_lock(&be->lock);
    if (q->queued)
        sq_unlink(be, &q->node);
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        be->reqs = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    pthread_mutex_unlock(&be->lock);
    free(q->node.msg);
    free(q);
}

static xfer_status_t pp_notif_send(xfer_be_t *be, xfer_be_peer_t *peer,
                                   const void *msg, size_t len)
{
    pp_op_t *op = calloc(1, sizeof(*op));

    if (op == NULL || (op->msg = malloc(len ? len : 1)) == NULL) {
        free(op);
        return XFER_ERR_NOMEM;
    }
    if (len > 0)
        memcpy(op->msg, msg, len);
    op->len = len;
    op->target_id = peer->target_id;
    /* Through the send queue, behind the requests posted before it:
     * notifications to one peer keep their order. */
    pthread_mutex_lock(&be->lock);
    sq_append(be, op);
    pthread_mutex_unlock(&be->lock);
    signal_fd(be);
    return XFER_OK;
}

/* Put a notification in tgt's inbox and tell tgt's agent. */
static xfer_status_t deliver(xfer_be_t *from, xfer_be_t *tgt, const void *msg,
                             size_t len)
{
    pp_msg_t *m = malloc(sizeof(*m) + len);

    if (m == NULL)
        return XFER_ERR_NOMEM;
    m->next = NULL;
    snprintf(m->from, sizeof(m->from), "%s", from->name);
    m->len = len;
    memcpy(m->msg, msg, len);
    pthread_mutex_lock(&tgt->lock);
    if (tgt->in_tail != NULL)
        tgt->in_tail->next = m;
    else
        tgt->in_head = m;
    tgt->in_tail = m;
    pthread_mutex_unlock(&tgt->lock);
    kick(tgt);
    return XFER_OK;
}

/* Move a request's bytes, as the NIC would, and its notification after
 * them.  No lock of ours held: the outcome goes to *st and err, which
 * the caller publishes under be->lock. */
static void run_req(xfer_be_t *be, struct xfer_be_req *q, xfer_status_t *st,
                    char *err, size_t err_size)
{
    unsigned access = q->op == XFER_OP_WRITE ? XFER_ACCESS_WRITE
                                             : XFER_ACCESS_READ;
    xfer_be_t *tgt = target_get(q->target_id);

    *st = XFER_OK;
    err[0] = '\0';
    if (tgt == NULL) {
        *st = XFER_ERR_REMOTE_DISCONNECT;
        snprintf(err, err_size, "ptpoll: the target went away");
        return;
    }
    pthread_rwlock_rdlock(&tgt->mem_lock);
    for (size_t i = 0; i < q->nseg; i++) {
        const xfer_be_seg_t *s = &q->segs[i];
        const pp_rmem_t *rm = s->rmem;
        char msg[256];
        void *mem;

        if (tgt->host->mem_check(tgt->host->ctx, rm->key, s->raddr, s->len,
                                 access, &mem, msg, sizeof(msg)) != XFER_OK) {
            *st = XFER_ERR_ACCESS;
            snprintf(err, err_size, "ptpoll: agent '%s' refused descriptor "
                     "%zu: %s", tgt->name, i, msg);
            break;
        }
        if (q->op == XFER_OP_WRITE)
            memcpy((void *)(uintptr_t)s->raddr, (const void *)s->laddr,
                   s->len);
        else
            memcpy((void *)s->laddr, (const void *)(uintptr_t)s->raddr,
                   s->len);
    }
    pthread_rwlock_unlock(&tgt->mem_lock);
    if (*st == XFER_OK && q->node.msg != NULL &&
        deliver(be, tgt, q->node.msg, q->node.len) != XFER_OK) {
        *st = XFER_ERR_NOMEM;
        snprintf(err, err_size, "ptpoll: no memory for the notification");
    }
    target_put(tgt);
}

static int pp_progress(xfer_be_t *be)
{
    pp_msg_t *in;
    int handled = 0;

    pthread_mutex_lock(&be->prog_lock);
    /* Drain the fd first: what is signalled after this is seen by this
     * pass or the next, and arm answers BUSY until then. */
    if (be->efd >= 0) {
        uint64_t v;

        if (read(be->efd, &v, sizeof(v)) < 0) {
            /* EAGAIN: it was not readable. */
        }
    }
    /* Incoming notifications, in arrival order. */
    pthread_mutex_lock(&be->lock);
    in = be->in_head;
    be->in_head = be->in_tail = NULL;
    pthread_mutex_unlock(&be->lock);
    while (in != NULL) {
        pp_msg_t *m = in;

        in = m->next;
        be->host->notif_deliver(be->host->ctx, m->from, m->msg, m->len);
        free(m);
        handled++;
    }
    /* Our send queue, one item at a time, in order. */
    for (;;) {
        pp_op_t *op;
        struct xfer_be_req *q;
        xfer_status_t st = XFER_OK;
        char err[PP_ERR_MAX];

        pthread_mutex_lock(&be->lock);
        op = be->sq_head;
        if (op == NULL) {
            pthread_mutex_unlock(&be->lock);
            break;
        }
        sq_unlink(be, op);
        q = op->req;
        if (q != NULL) {
            q->queued = false;
            q->running = true;
        }
        be->running++;
        pthread_mutex_unlock(&be->lock);

        if (q != NULL) {
            run_req(be, q, &st, err, sizeof(err));
        } else {
            xfer_be_t *tgt = target_get(op->target_id);

            if (tgt != NULL) {
                deliver(be, tgt, op->msg, op->len);
                target_put(tgt);
            }
            free(op->msg);
            free(op);
        }
        pthread_mutex_lock(&be->lock);
        if (q != NULL) {
            q->running = false;
            q->state = st;
            memcpy(q->err, err, sizeof(q->err));
        }
        be->running--;
        pthread_mutex_unlock(&be->lock);
        handled++;
    }
    pthread_mutex_unlock(&be->prog_lock);
    return handled;
}

/* BUSY while anything waits for progress; otherwise armed: our event fd
 * (or, without one, host->wake and the core's poke on post) tells of
 * anything new. */
static xfer_status_t pp_arm(xfer_be_t *be)
{
    bool busy;

    pthread_mutex_lock(&be->lock);
    busy = be->sq_head != NULL || be->in_head != NULL || be->running > 0;
    pthread_mutex_unlock(&be->lock);
    return busy ? XFER_ERR_BUSY : XFER_OK;
}

static xfer_status_t pp_event_fd(xfer_be_t *be, int *fd)
{
    *fd = be->efd;
    return be->efd >= 0 ? XFER_OK : XFER_ERR_NOT_SUPPORTED;
}

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(ptpoll) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "ptpoll",
        .version = "ptpoll-1.0",
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = pp_params,
    .nparams = sizeof(pp_params) / sizeof(pp_params[0]),
    .config_size = sizeof(pp_config_t),
    .init = pp_init,
    .fini = pp_fini,
    .conn_info = pp_conn_info,
    .peer_add = pp_peer_add,
    .peer_remove = pp_peer_remove,
    .mem_register = pp_mem_register,
    .mem_deregister = pp_mem_deregister,
    .rmem_unpack = pp_rmem_unpack,
    .rmem_release = pp_rmem_release,
    .req_create = pp_req_create,
    .req_post = pp_req_post,
    .req_check = pp_req_check,
    .req_cancel = pp_req_cancel,
    .req_release = pp_req_release,
    .notif_send = pp_notif_send,
    .progress = pp_progress,
    .event_fd = pp_event_fd,
    .flags = XFER_BE_THREAD_SAFE | XFER_BE_POLL,
    .arm = pp_arm,
};
