/* ptest.c - the test plugin: a parameter of every type, and an
 * in-process loopback transport, so core tests need no sockets.
 *
 * Every live instance sits in one process-wide list.  A post queues the
 * request on the target instance and wakes the target agent; the
 * target's progress() checks each segment with its host's mem_check
 * (so refusals are the core's own) and copies with memcpy, then
 * delivers the notification and wakes the initiator.  With inline=1,
 * once the target has run a request, its reposts are run by the posting
 * thread itself (the same checks, copy and notification) and complete at
 * once, as uds's shared-memory path does after the target checked a
 * request's first post; the first post still waits for the target, so a
 * target that is never progressed stalls fresh requests in either mode.
 * Peers in another process are refused at peer_add.
 *
 * With hwkeys=1 it plays a one-sided hardware transport instead
 * (XFER_CAP_HW_KEYS): each registration gets a secret packed into its
 * public part, the target checks the presented packed key against its
 * own registrations (secret, bounds, the rights of xfer_be_region_t.access)
 * the way a NIC checks an rkey, never asking the core, and a bad access
 * fails the request and breaks the peer's connection, which the next
 * post re-establishes.  Caps live in the exported table, fixed when the
 * plugin is loaded, so XFER_PTEST_HWKEYS (which the core also applies
 * to the parameter) decides them; an instance whose hwkeys disagrees
 * with its plugin's caps is refused.
 *
 * Locking (XFER_BE_THREAD_SAFE): g_lock guards only the instance list and
 * the id and secret counters.  Each instance's lock guards what happens
 * at it as a target: its queue, its registrations (hwkeys), the state of
 * requests and peers aimed at it, and whether it is dead.  A thread never
 * holds two ptest locks at once, so there is no order to keep (instances
 * post to each other both ways); host callbacks take only leaf locks in
 * the core, so they are called with an instance's lock held.  Peers hold
 * a reference to their target and requests one to their peer: a target's
 * fini marks it dead and fails what is queued, and its memory goes with
 * the last reference, so a post never needs the list. */
#include <inttypes.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <xfer/backend.h>

typedef struct ptest_config {
    int flag;
    int64_t level;
    uint64_t count;
    uint64_t port;
    size_t bufsize;
    const char *label;
    int fail_init;
    int hwkeys;
    int run_inline;
} ptest_config_t;

static const xfer_param_t ptest_params[] = {
    {"flag", XFER_PARAM_BOOL, "0", "a bool", offsetof(ptest_config_t, flag),
     1, 0},
    {"level", XFER_PARAM_INT, "-2", "an int in [-10, 10]",
     offsetof(ptest_config_t, level), -10, 10},
    {"count", XFER_PARAM_UINT, "7", "an unbounded uint",
     offsetof(ptest_config_t, count), 1, 0},
    {"port", XFER_PARAM_UINT, "0", "a uint in [0, 65535]",
     offsetof(ptest_config_t, port), 0, 65535},
    {"bufsize", XFER_PARAM_SIZE, "64K", "a size",
     offsetof(ptest_config_t, bufsize), 1, 0},
    {"label", XFER_PARAM_STRING, "plain", "a string",
     offsetof(ptest_config_t, label), 1, 0},
    {"fail_init", XFER_PARAM_BOOL, "no", "make init fail",
     offsetof(ptest_config_t, fail_init), 1, 0},
    {"hwkeys", XFER_PARAM_BOOL, "0", "check packed keys like a NIC "
     "(HW_KEYS); caps follow XFER_PTEST_HWKEYS",
     offsetof(ptest_config_t, hwkeys), 1, 0},
    {"inline", XFER_PARAM_BOOL, "0", "reposts run in the posting thread "
     "once the target ran the request's first post (no thread hop)",
     offsetof(ptest_config_t, run_inline), 1, 0},
};

typedef struct pt_node pt_node_t;

struct xfer_be {
    uint64_t id;
    const xfer_host_t *host;
    const ptest_config_t *cfg;
    char name[XFER_NAME_MAX + 1];
    atomic_uint refs;            /* its own until fini, one per peer */
    struct xfer_be *next;        /* g_list; g_lock */
    pthread_mutex_t lock;        /* guards the rest, as a target */
    bool dead;                   /* fini ran: its host is gone */
    pt_node_t *head, *tail;      /* operations for this target */
    struct pt_mem *mems;         /* hwkeys: registrations, for the check */
};

/* Fields below target are guarded by target->lock. */
struct xfer_be_peer {
    xfer_be_t *target;       /* NULL: not found at peer_add */
    atomic_uint refs;        /* the core's until peer_remove, one per req */
    bool removed;            /* peer_remove ran; requests stay valid */
    bool broken;             /* hwkeys: a bad access broke the link */
    unsigned reconnects;     /* hwkeys: times a post rebuilt it */
    size_t nqueued;          /* nodes of ours on the target's queue */
};

typedef struct pt_mem {
    xfer_be_region_t r;
    uint64_t secret;         /* hwkeys: what the packed key carries */
    struct pt_mem *next;
} pt_mem_t;

typedef struct pt_rmem {
    xfer_be_rregion_t r;
    uint64_t secret;         /* hwkeys: the presented packed key */
} pt_rmem_t;

/* hwkeys: the packed key is this tag and the secret, little-endian. */
#define PT_HWKEY_TAG "PTHK"
#define PT_HWKEY_LEN (4 + 8)

struct pt_node {
    pt_node_t *next;
    struct xfer_be_req *req; /* NULL: a notification alone */
    xfer_be_peer_t *peer;    /* counted in nqueued; NULL once removed */
    char from[XFER_NAME_MAX + 1];
    size_t len;
    unsigned char *msg;
};

/* Its state, err, node and queued are guarded by peer->target->lock. */
struct xfer_be_req {
    xfer_be_t *be;
    xfer_be_peer_t *peer;    /* a reference: valid until release */
    xfer_op_t op;
    const xfer_be_seg_t *segs;
    size_t nseg;
    xfer_status_t state;
    char err[700];
    pt_node_t node;          /* queued on the target while in progress */
    bool queued;
    bool vetted;             /* the target ran it: inline may repost it */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static xfer_be_t *g_list;
static uint64_t g_next_id = 1;
static uint64_t g_secret_state;  /* hwkeys secrets; g_lock held */

extern xfer_backend_ops_t XFER_BACKEND_SYMBOL(ptest);

/* Whether XFER_PTEST_HWKEYS asks for hardware keys, read as the core
 * reads a bool parameter. */
static int env_hwkeys(void)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    const char *v = getenv("XFER_PTEST_HWKEYS");

    for (size_t i = 0; v != NULL && i < sizeof(yes) / sizeof(yes[0]); i++)
        if (strcasecmp(v, yes[i]) == 0)
            return 1;
    return 0;
}

/* The caps are read from the table when the plugin is loaded: set them
 * before anyone can look. */
__attribute__((constructor)) static void pt_load(void)
{
    XFER_BACKEND_SYMBOL(ptest).hdr.caps |=
        env_hwkeys() ? XFER_CAP_HW_KEYS : XFER_CAP_SW_CHECK;
}

static bool hw_caps(void)
{
    return (XFER_BACKEND_SYMBOL(ptest).hdr.caps & XFER_CAP_HW_KEYS) != 0;
}

/* A fresh non-zero secret (splitmix64).  g_lock held. */
static uint64_t next_secret(void)
{
    uint64_t z;

    if (g_secret_state == 0)
        g_secret_state = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^
                         (uint64_t)getpid();
    do {
        z = (g_secret_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
    } while (z == 0);
    return z;
}

/* The live instance id with a reference for the caller, or NULL. */
static xfer_be_t *target_get(uint64_t id)
{
    xfer_be_t *b;

    pthread_mutex_lock(&g_lock);
    for (b = g_list; b && b->id != id; b = b->next)
        ;
    if (b != NULL)
        atomic_fetch_add(&b->refs, 1);
    pthread_mutex_unlock(&g_lock);
    return b;
}

static void target_put(xfer_be_t *b)
{
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        pthread_mutex_destroy(&b->lock);
        free(b);
    }
}

static void peer_put(xfer_be_peer_t *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1) {
        if (p->target != NULL)
            target_put(p->target);
        free(p);
    }
}

/* The queue: tgt->lock held. */
static void enqueue(xfer_be_t *tgt, pt_node_t *n)
{
    n->next = NULL;
    if (tgt->tail)
        tgt->tail->next = n;
    else
        tgt->head = n;
    tgt->tail = n;
    if (n->peer)
        n->peer->nqueued++;
}

/* Unlink *pp (prev before it, NULL at the head). */
static void unlink_node(xfer_be_t *tgt, pt_node_t **pp, pt_node_t *prev)
{
    pt_node_t *n = *pp;

    *pp = n->next;
    if (tgt->tail == n)
        tgt->tail = prev;
    if (n->peer)
        n->peer->nqueued--;
}

static void req_dequeue(xfer_be_t *tgt, struct xfer_be_req *q,
                        xfer_status_t why)
{
    pt_node_t **pp = &tgt->head, *prev = NULL;

    if (!q->queued)
        return;
    for (; *pp != &q->node; prev = *pp, pp = &(*pp)->next)
        ;
    unlink_node(tgt, pp, prev);
    q->queued = false;
    q->state = why;
}

/* Fail the queued requests of peer (of every peer when NULL) with
 * REMOTE_DISCONNECT and err, and wake their initiators; lone
 * notifications stay.  tgt->lock held. */
static void flush(xfer_be_t *tgt, const xfer_be_peer_t *peer,
                  const char *err)
{
    pt_node_t **pp = &tgt->head, *prev = NULL;

    while (*pp) {
        pt_node_t *n = *pp;
        struct xfer_be_req *q = n->req;

        if (q == NULL || (peer != NULL && q->peer != peer)) {
            prev = n;
            pp = &n->next;
            continue;
        }
        unlink_node(tgt, pp, prev);
        q->queued = false;
        q->state = XFER_ERR_REMOTE_DISCONNECT;
        snprintf(q->err, sizeof(q->err), "%s", err);
        q->be->host->wake(q->be->host->ctx);
    }
}

static xfer_status_t pt_init(const xfer_host_t *host, const void *config,
                             xfer_be_t **out)
{
    const ptest_config_t *cfg = config;
    xfer_be_t *be;

    if (cfg->fail_init)
        return host->error(host->ctx, XFER_ERR_BACKEND,
                           "ptest: init refused because fail_init is set "
                           "(label '%s')", cfg->label);
    if ((cfg->hwkeys != 0) != hw_caps())
        return host->error(host->ctx, XFER_ERR_CONFIG,
                           "ptest: hwkeys=%d, but the plugin was loaded "
                           "declaring %s (caps are fixed at load, from "
                           "XFER_PTEST_HWKEYS): set XFER_PTEST_HWKEYS=%d",
                           cfg->hwkeys, hw_caps() ? "HW_KEYS" : "SW_CHECK",
                           cfg->hwkeys);
    be = calloc(1, sizeof(*be));
    if (be == NULL)
        return XFER_ERR_NOMEM;
    be->host = host;
    be->cfg = cfg;
    snprintf(be->name, sizeof(be->name), "%s", host->agent_name);
    atomic_init(&be->refs, 1);
    pthread_mutex_init(&be->lock, NULL);
    pthread_mutex_lock(&g_lock);
    be->id = g_next_id++;
    be->next = g_list;
    g_list = be;
    pthread_mutex_unlock(&g_lock);
    *out = be;
    return XFER_OK;
}

/* Peers of other instances may still point here: the memory stays until
 * they go, marked dead so that nobody calls its host again. */
static void pt_fini(xfer_be_t *be)
{
    char err[XFER_NAME_MAX + 64];

    pthread_mutex_lock(&g_lock);
    for (xfer_be_t **pp = &g_list; *pp; pp = &(*pp)->next) {
        if (*pp == be) {
            *pp = be->next;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    /* What was queued here will never run: the peer is gone. */
    snprintf(err, sizeof(err), "ptest: target agent '%s' went away",
             be->name);
    pthread_mutex_lock(&be->lock);
    be->dead = true;
    flush(be, NULL, err);
    while (be->head) {
        pt_node_t *n = be->head;

        unlink_node(be, &be->head, NULL);
        free(n->msg);
        free(n);
    }
    pthread_mutex_unlock(&be->lock);
    target_put(be);
}

static xfer_status_t pt_conn_info(xfer_be_t *be, void *buf, size_t *len)
{
    const ptest_config_t *c = be->cfg;
    int n = snprintf(buf, *len, "ptest pid=%ld id=%" PRIu64 " flag=%d "
                     "level=%" PRId64 " count=%" PRIu64 " port=%" PRIu64
                     " bufsize=%zu label=%s", (long)getpid(), be->id, c->flag,
                     c->level, c->count, c->port, c->bufsize, c->label);

    if (n < 0 || (size_t)n >= *len)
        return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                               "ptest: connection info does not fit");
    *len = (size_t)n;
    return XFER_OK;
}

static xfer_status_t pt_peer_add(xfer_be_t *be, const char *name,
                                 uint64_t epoch, const void *info, size_t len,
                                 xfer_be_peer_t **out)
{
    char text[256];
    long pid;
    uint64_t id;
    xfer_be_peer_t *p;

    (void)epoch;
    if (len == 0 || len >= sizeof(text))
        return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                               "ptest: peer '%s': connection info of %zu "
                               "bytes", name, len);
    memcpy(text, info, len);
    text[len] = '\0';
    if (sscanf(text, "ptest pid=%ld id=%" SCNu64, &pid, &id) != 2)
        return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                               "ptest: peer '%s': malformed connection info",
                               name);
    if (pid != (long)getpid())
        return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                               "ptest: peer '%s' lives in process %ld; ptest "
                               "only reaches its own process", name, pid);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return XFER_ERR_NOMEM;
    /* A target already gone is found at the first post, as before. */
    p->target = target_get(id);
    atomic_init(&p->refs, 1);
    *out = p;
    return XFER_OK;
}

/* Its requests stay valid for check and release: they keep the peer. */
static void pt_peer_remove(xfer_be_t *be, xfer_be_peer_t *peer)
{
    xfer_be_t *tgt = peer->target;

    (void)be;
    if (tgt != NULL) {
        pthread_mutex_lock(&tgt->lock);
        flush(tgt, peer, "ptest: peer removed");
        /* Its lone notifications are still delivered. */
        for (pt_node_t *n = tgt->head; n; n = n->next)
            if (n->peer == peer)
                n->peer = NULL;
        peer->nqueued = 0;
        peer->removed = true;
        pthread_mutex_unlock(&tgt->lock);
    }
    peer_put(peer);
}

static xfer_status_t pt_mem_register(xfer_be_t *be, const xfer_be_region_t *r,
                                     void **mem)
{
    pt_mem_t *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return XFER_ERR_NOMEM;
    m->r = *r;
    if (be->cfg->hwkeys) {
        /* Like a NIC: the rights are part of the key from here on. */
        pthread_mutex_lock(&g_lock);
        m->secret = next_secret();
        pthread_mutex_unlock(&g_lock);
        pthread_mutex_lock(&be->lock);
        m->next = be->mems;
        be->mems = m;
        pthread_mutex_unlock(&be->lock);
    }
    *mem = m;
    return XFER_OK;
}

static void pt_mem_deregister(xfer_be_t *be, void *mem)
{
    pthread_mutex_lock(&be->lock);
    for (pt_mem_t **pp = &be->mems; *pp; pp = &(*pp)->next) {
        if (*pp == mem) {
            *pp = ((pt_mem_t *)mem)->next;
            break;
        }
    }
    pthread_mutex_unlock(&be->lock);
    free(mem);
}

static xfer_status_t pt_mem_pack(xfer_be_t *be, void *mem, void *buf,
                                 size_t *len)
{
    pt_mem_t *m = mem;
    int n;

    if (be->cfg->hwkeys) {
        unsigned char *b = buf;

        if (*len < PT_HWKEY_LEN)
            return XFER_ERR_INVALID;
        memcpy(b, PT_HWKEY_TAG, 4);
        for (int i = 0; i < 8; i++)
            b[4 + i] = (unsigned char)(m->secret >> (8 * i));
        *len = PT_HWKEY_LEN;
        return XFER_OK;
    }
    n = snprintf(buf, *len, "ptest-key:%016" PRIx64, m->r.key);
    if (n < 0 || (size_t)n >= *len)
        return XFER_ERR_INVALID;
    *len = (size_t)n;
    return XFER_OK;
}

static xfer_status_t pt_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                    const xfer_be_rregion_t *r,
                                    const void *buf, size_t len, void **rmem)
{
    char text[64];
    uint64_t key, secret = 0;
    pt_rmem_t *m;

    (void)peer;
    if (be->cfg->hwkeys) {
        const unsigned char *b = buf;

        /* Any secret unpacks: only the target can tell a bad one. */
        if (len != PT_HWKEY_LEN || memcmp(b, PT_HWKEY_TAG, 4) != 0)
            return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                                   "ptest: packed key of %zu bytes is not a "
                                   "hwkeys key", len);
        for (int i = 0; i < 8; i++)
            secret |= (uint64_t)b[4 + i] << (8 * i);
    } else {
        if (len == 0 || len >= sizeof(text))
            return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                                   "ptest: packed key of %zu bytes", len);
        memcpy(text, buf, len);
        text[len] = '\0';
        if (sscanf(text, "ptest-key:%" SCNx64, &key) != 1)
            return be->host->error(be->host->ctx, XFER_ERR_INVALID,
                                   "ptest: malformed packed key '%s'", text);
    }
    /* The packed key travels beside the core's key; a mismatch means
     * the blob was edited inconsistently, which the tests may do: the
     * core's key is the one presented, as a real transport would. */
    m = malloc(sizeof(*m));
    if (m == NULL)
        return XFER_ERR_NOMEM;
    m->r = *r;
    m->secret = secret;
    *rmem = m;
    return XFER_OK;
}

static void pt_rmem_release(xfer_be_t *be, void *rmem)
{
    (void)be;
    free(rmem);
}

static xfer_status_t pt_req_create(xfer_be_t *be, xfer_op_t op,
                                   xfer_be_peer_t *peer,
                                   const xfer_be_seg_t *segs, size_t nseg,
                                   xfer_be_req_t **out)
{
    struct xfer_be_req *q = calloc(1, sizeof(*q));

    if (q == NULL)
        return XFER_ERR_NOMEM;
    q->be = be;
    q->peer = peer;
    atomic_fetch_add(&peer->refs, 1);
    q->op = op;
    q->segs = segs;
    q->nseg = nseg;
    q->state = XFER_OK;
    q->node.req = q;
    q->node.peer = peer;
    snprintf(q->node.from, sizeof(q->node.from), "%s", be->name);
    *out = q;
    return XFER_OK;
}

static void run_req(xfer_be_t *be, struct xfer_be_req *q, const void *msg,
                    size_t len);

/* Whether tgt can take an operation from peer: tgt->lock held. */
static bool reachable(const xfer_be_t *tgt, xfer_be_peer_t *peer)
{
    if (tgt->dead || peer->removed)
        return false;
    if (peer->broken) {
        /* A bad access broke the link: this operation rebuilds it. */
        peer->broken = false;
        peer->reconnects++;
    }
    return true;
}

static xfer_status_t pt_req_post(xfer_be_t *be, xfer_be_req_t *q,
                                 const void *notif, size_t notif_len)
{
    xfer_be_t *tgt = q->peer->target;
    unsigned char *copy = NULL;
    xfer_status_t s;

    if (notif == NULL || notif_len == 0) {
        notif = NULL;
        notif_len = 0;
    }
    if (tgt == NULL) {
        q->state = XFER_ERR_REMOTE_DISCONNECT;
        return be->host->error(be->host->ctx, XFER_ERR_REMOTE_DISCONNECT,
                               "ptest: the target is gone");
    }
    pthread_mutex_lock(&tgt->lock);
    if (q->queued) {
        pthread_mutex_unlock(&tgt->lock);
        return be->host->error(be->host->ctx, XFER_ERR_BUSY,
                               "ptest: request still in progress");
    }
    if (!reachable(tgt, q->peer)) {
        q->state = XFER_ERR_REMOTE_DISCONNECT;
        pthread_mutex_unlock(&tgt->lock);
        return be->host->error(be->host->ctx, XFER_ERR_REMOTE_DISCONNECT,
                               "ptest: the target is gone");
    }
    q->err[0] = '\0';
    /* Inline only behind nothing of ours, so that data and notifications
     * arrive in the order they were posted. */
    if (be->cfg->run_inline && q->vetted && q->peer->nqueued == 0) {
        run_req(tgt, q, notif, notif_len);
        s = q->state;
        pthread_mutex_unlock(&tgt->lock);
        if (s < 0)
            return be->host->error(be->host->ctx, s, "%s", q->err);
        return XFER_OK;
    }
    if (notif_len > 0 && (copy = malloc(notif_len)) == NULL) {
        pthread_mutex_unlock(&tgt->lock);
        return XFER_ERR_NOMEM;
    }
    if (copy)
        memcpy(copy, notif, notif_len);
    free(q->node.msg);
    q->node.msg = copy;
    q->node.len = notif_len;
    q->state = XFER_IN_PROG;
    q->queued = true;
    enqueue(tgt, &q->node);
    tgt->host->wake(tgt->host->ctx);
    pthread_mutex_unlock(&tgt->lock);
    return XFER_IN_PROG;
}

static xfer_status_t pt_req_check(xfer_be_t *be, xfer_be_req_t *q)
{
    xfer_be_t *tgt = q->peer->target;
    xfer_status_t s;
    char err[sizeof(q->err)];

    /* Without a target nothing but this request's own ops writes it. */
    if (tgt)
        pthread_mutex_lock(&tgt->lock);
    s = q->state;
    if (s < 0)
        memcpy(err, q->err, sizeof(err));
    if (tgt)
        pthread_mutex_unlock(&tgt->lock);
    if (s < 0)
        return be->host->error(be->host->ctx, s, "%s",
                               err[0] ? err : "ptest: request failed");
    return s;
}

static xfer_status_t pt_req_cancel(xfer_be_t *be, xfer_be_req_t *q)
{
    xfer_be_t *tgt = q->peer->target;

    (void)be;
    if (tgt == NULL)
        return XFER_OK;
    pthread_mutex_lock(&tgt->lock);
    req_dequeue(tgt, q, XFER_ERR_CANCELED);
    pthread_mutex_unlock(&tgt->lock);
    return XFER_OK;
}

static void pt_req_release(xfer_be_t *be, xfer_be_req_t *q)
{
    pt_req_cancel(be, q);
    free(q->node.msg);
    peer_put(q->peer);
    free(q);
}

static xfer_status_t pt_notif_send(xfer_be_t *be, xfer_be_peer_t *peer,
                                   const void *msg, size_t len)
{
    xfer_be_t *tgt = peer->target;
    pt_node_t *n;

    if (tgt == NULL)
        return be->host->error(be->host->ctx, XFER_ERR_REMOTE_DISCONNECT,
                               "ptest: the target is gone");
    pthread_mutex_lock(&tgt->lock);
    if (!reachable(tgt, peer)) {
        pthread_mutex_unlock(&tgt->lock);
        return be->host->error(be->host->ctx, XFER_ERR_REMOTE_DISCONNECT,
                               "ptest: the target is gone");
    }
    if (be->cfg->run_inline && peer->nqueued == 0) {
        tgt->host->notif_deliver(tgt->host->ctx, be->name, msg, len);
        pthread_mutex_unlock(&tgt->lock);
        return XFER_OK;
    }
    n = calloc(1, sizeof(*n));
    if (n == NULL || (len > 0 && (n->msg = malloc(len)) == NULL)) {
        pthread_mutex_unlock(&tgt->lock);
        free(n);
        return XFER_ERR_NOMEM;
    }
    if (len > 0)
        memcpy(n->msg, msg, len);
    n->len = len;
    n->peer = peer;
    snprintf(n->from, sizeof(n->from), "%s", be->name);
    enqueue(tgt, n);
    tgt->host->wake(tgt->host->ctx);
    pthread_mutex_unlock(&tgt->lock);
    return XFER_OK;
}

/* hwkeys: check a presented packed key as a NIC checks an rkey, against
 * this target's own registrations alone.  be->lock held. */
static bool hw_check(xfer_be_t *be, const pt_rmem_t *rm,
                     const xfer_be_seg_t *s, unsigned access, char *msg,
                     size_t size)
{
    const pt_mem_t *m = be->mems;
    uint64_t lo, len = s->len;

    while (m != NULL && m->secret != rm->secret)
        m = m->next;
    if (m == NULL) {
        snprintf(msg, size, "packed key 0x%016" PRIx64 " names no "
                 "registration (wrong or deregistered)", rm->secret);
        return false;
    }
    lo = m->r.addr;
    if (len == 0 || s->raddr < lo || s->raddr + len < s->raddr ||
        s->raddr + len > lo + m->r.len) {
        snprintf(msg, size, "[0x%" PRIx64 ", +%" PRIu64 ") is outside the "
                 "registration of packed key 0x%016" PRIx64 " [0x%" PRIx64
                 ", +%zu)", s->raddr, len, rm->secret, lo, m->r.len);
        return false;
    }
    if ((access & ~m->r.access) != 0) {
        /* access is one right, and a region has at least one: the other. */
        const char *op = access == XFER_ACCESS_WRITE ? "WRITE" : "READ";

        snprintf(msg, size, "registration of packed key 0x%016" PRIx64
                 " allows peers %s, not %s", rm->secret,
                 access == XFER_ACCESS_WRITE ? "READ" : "WRITE", op);
        return false;
    }
    return true;
}

/* Run one request against this (target) instance, from its progress or
 * inline from the post; msg is the notification to deliver after the
 * data.  be->lock held. */
static void run_req(xfer_be_t *be, struct xfer_be_req *q, const void *msg,
                    size_t len)
{
    unsigned access = q->op == XFER_OP_WRITE ? XFER_ACCESS_WRITE
                                             : XFER_ACCESS_READ;

    for (size_t i = 0; i < q->nseg; i++) {
        const xfer_be_seg_t *s = &q->segs[i];
        const pt_rmem_t *rm = s->rmem;
        char why[256];
        void *mem;

        if (be->cfg->hwkeys ? !hw_check(be, rm, s, access, why, sizeof(why))
                            : be->host->mem_check(be->host->ctx, rm->r.key,
                                                  s->raddr, s->len, access,
                                                  &mem, why, sizeof(why)) !=
                                  XFER_OK) {
            q->state = XFER_ERR_ACCESS;
            snprintf(q->err, sizeof(q->err), "ptest: agent '%s' refused "
                     "descriptor %zu: %s", be->name, i, why);
            /* mem_check handed us its sentence: ours to log, once. */
            if (!be->cfg->hwkeys)
                be->host->log(be->host->ctx, XFER_LOG_WARN,
                              "refused a %s from agent '%s', descriptor "
                              "%zu: %s",
                              q->op == XFER_OP_WRITE ? "WRITE" : "READ",
                              q->node.from, i, why);
            if (be->cfg->hwkeys) {
                /* A queue pair in the error state: what the link still
                 * has queued here is flushed. */
                char err[XFER_NAME_MAX + 96];

                snprintf(err, sizeof(err), "ptest: the connection to agent "
                         "'%s' broke on a bad access of an earlier request",
                         be->name);
                q->peer->broken = true;
                flush(be, q->peer, err);
            }
            return;
        }
        if (q->op == XFER_OP_WRITE)
            memcpy((void *)(uintptr_t)s->raddr, (const void *)s->laddr,
                   s->len);
        else
            memcpy((void *)s->laddr, (const void *)(uintptr_t)s->raddr,
                   s->len);
    }
    if (msg != NULL)
        be->host->notif_deliver(be->host->ctx, q->node.from, msg, len);
    q->state = XFER_OK;
}

static int pt_progress(xfer_be_t *be)
{
    int handled = 0;

    pthread_mutex_lock(&be->lock);
    while (be->head) {
        pt_node_t *n = be->head;

        unlink_node(be, &be->head, NULL);
        if (n->req) {
            struct xfer_be_req *q = n->req;

            q->queued = false;
            run_req(be, q, q->node.msg, q->node.len);
            q->vetted = q->state == XFER_OK;
            q->be->host->wake(q->be->host->ctx);
        } else {
            be->host->notif_deliver(be->host->ctx, n->from, n->msg, n->len);
            free(n->msg);
            free(n);
        }
        handled++;
    }
    pthread_mutex_unlock(&be->lock);
    return handled;
}

/* ABI minor 2: fixed sentences, so tests can see them arrive whole. */
static xfer_status_t pt_probe(char *buf, size_t len)
{
    snprintf(buf, len, "in-process loopback: always available");
    return XFER_OK;
}

static xfer_status_t pt_state(xfer_be_t *be, char *buf, size_t len)
{
    snprintf(buf, len, "label=%s%s", be->cfg->label ? be->cfg->label : "",
             be->cfg->hwkeys ? "; hwkeys" : "");
    return XFER_OK;
}

/* Not const: pt_load adds SW_CHECK or HW_KEYS to the caps at load. */
xfer_backend_ops_t XFER_BACKEND_SYMBOL(ptest) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "ptest",
        .version = "ptest-1.0",
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = ptest_params,
    .nparams = sizeof(ptest_params) / sizeof(ptest_params[0]),
    .config_size = sizeof(ptest_config_t),
    .init = pt_init,
    .fini = pt_fini,
    .conn_info = pt_conn_info,
    .peer_add = pt_peer_add,
    .peer_remove = pt_peer_remove,
    .mem_register = pt_mem_register,
    .mem_deregister = pt_mem_deregister,
    .mem_pack = pt_mem_pack,
    .rmem_unpack = pt_rmem_unpack,
    .rmem_release = pt_rmem_release,
    .req_create = pt_req_create,
    .req_post = pt_req_post,
    .req_check = pt_req_check,
    .req_cancel = pt_req_cancel,
    .req_release = pt_req_release,
    .notif_send = pt_notif_send,
    .progress = pt_progress,
    .probe = pt_probe,
    .state = pt_state,
    .flags = XFER_BE_THREAD_SAFE,
};
