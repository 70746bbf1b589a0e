/* run.c - one rank's part of a run: for every backend an agent, a
 * registered buffer and the peers' metadata; for every block and batch
 * size the measured posts of every initiator thread, timed to
 * completion.
 *
 * Buffers are cut into units of max_block * max_batch bytes.  An
 * initiator owns targets * threads units (unit k * threads + t for its
 * k-th target and thread t); a target owns initiators * threads units
 * (unit s * threads + t for its s-th initiator).  So no two posts ever
 * touch the same bytes, whatever the scheme.  With --pipeline-depth N a
 * thread's batch of a unit is cut into N consecutive slices of batch / N
 * blocks, one request (per target) each, all in flight at once: the
 * slices do not overlap either.
 *
 * --check-consistency talks through the agents themselves: a WRITE
 * carries the notification "xb w SEED OFF LEN", on which the target
 * verifies the bytes (notifications arrive after their data) and answers
 * "xb ok SEED" or "xb bad SEED BYTE"; before a READ the initiator sends
 * "xb f SEED OFF LEN" and the target fills the bytes, then answers. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "xb.h"

/* Linux's encoding of the page size mmap is asked for; older libc
 * headers lack the names. */
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

#define NAME_MAX_LEN 128
#define ADDR_MAX_LEN 128
#define MSG_LEN 96

struct peer {
    int rank;
    char name[NAME_MAX_LEN];
    char listen[ADDR_MAX_LEN]; /* side-channel listener, "-": none */
    uint64_t addr, len;        /* its buffer */
    int slot;                  /* our index among its peers */
};

/* A reply to a consistency check, waiting for the thread that asked. */
struct mail {
    char from[NAME_MAX_LEN];
    uint64_t seed;
    long long bad; /* -1: all right; else the first wrong byte */
};

struct session {
    const struct xb_opts *o;
    struct xb_coord *c;
    size_t bi;                 /* backend index */
    const char *spec;
    int initiator;
    xfer_agent_t *agent;
    unsigned char *buf;
    size_t buf_len, unit;
    size_t map_len;            /* --hugepages without --alloc xfer: mapped */
    xfer_mem_t *mem;
    struct peer peers[XB_MAX_RANKS];
    int npeers;
    /* targets: failures found while serving checks */
    int serve_failed;
    /* initiators: replies to checks */
    pthread_mutex_t mail_lock;
    struct mail *mail;
    size_t nmail, mail_cap;
};

/* ------------------------------------------------------------------ */
/* Buffers                                                             */
/* ------------------------------------------------------------------ */

/* Page aligned (on 2 MiB pages with --hugepages) and touched once, so
 * page faults are not measured.  NULL after xb_fail.  No fallback to
 * small pages: the run would report a figure it did not measure. */
static unsigned char *buffer_alloc(struct session *s)
{
    const struct xb_opts *o = s->o;
    size_t len = s->buf_len;
    xfer_status_t st;
    void *p = NULL;

    if (o->alloc_xfer) {
        st = xfer_mem_alloc(s->agent, len, o->hugepages ? XFER_ALLOC_HUGE : 0,
                            &p);
        if (st != XFER_OK) {
            xb_fail_xfer(st, o->hugepages ? "--hugepages with --alloc xfer"
                                          : "xfer_mem_alloc of the buffer");
            return NULL;
        }
    } else if (o->hugepages) {
        if (len > SIZE_MAX - XB_HUGE_PAGE) {
            xb_fail("--hugepages: a %zu-byte buffer overflows a size", len);
            return NULL;
        }
        s->map_len = (len + XB_HUGE_PAGE - 1) / XB_HUGE_PAGE * XB_HUGE_PAGE;
        p = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1,
                 0);
        if (p == MAP_FAILED) {
            xb_fail("--hugepages: cannot map %zu bytes of 2 MiB huge pages "
                    "(%s); reserve them (sysctl vm.nr_hugepages) or run "
                    "without --hugepages", s->map_len, strerror(errno));
            s->map_len = 0;
            return NULL;
        }
    } else if (posix_memalign(&p, 4096, len) != 0) {
        xb_fail("cannot allocate a %zu-byte buffer", len);
        return NULL;
    }
    memset(p, 0, len);
    return p;
}

static void buffer_free(struct session *s)
{
    if (s->o->alloc_xfer)
        xfer_mem_free(s->agent, s->buf);
    else if (s->map_len != 0)
        munmap(s->buf, s->map_len);
    else
        free(s->buf);
    s->buf = NULL;
}

/* ------------------------------------------------------------------ */
/* Target: serving checks while waiting at barriers                    */
/* ------------------------------------------------------------------ */

static void reply(struct session *s, const char *to, uint64_t seed,
                  long long bad)
{
    char msg[MSG_LEN];
    int n;
    xfer_status_t st;

    if (bad < 0)
        n = snprintf(msg, sizeof(msg), "xb ok %" PRIu64, seed);
    else
        n = snprintf(msg, sizeof(msg), "xb bad %" PRIu64 " %lld", seed, bad);
    st = xfer_notif_send(s->agent, to, msg, (size_t)n, NULL);
    if (st != XFER_OK) {
        xb_fail_xfer(st, "answer a consistency check");
        s->serve_failed = 1;
    }
}

static void target_on_notif(void *arg, const char *from, const void *msg,
                            size_t len)
{
    struct session *s = arg;
    char text[MSG_LEN], op;
    unsigned long long seed, off, n;

    if (len >= sizeof(text))
        return; /* not ours */
    memcpy(text, msg, len);
    text[len] = '\0';
    if (sscanf(text, "xb %c %llu %llu %llu", &op, &seed, &off, &n) != 4 ||
        (op != 'w' && op != 'f'))
        return;
    if (off > s->buf_len || n > s->buf_len - off) {
        xb_fail("%s asked to check bytes %llu to %llu of a %zu-byte buffer",
                from, off, off + n, s->buf_len);
        s->serve_failed = 1;
        return;
    }
    if (op == 'f') {
        xb_pattern_fill(s->buf + off, (size_t)n, seed);
        reply(s, from, seed, -1);
    } else {
        size_t bad = xb_pattern_check(s->buf + off, (size_t)n, seed);

        reply(s, from, seed, bad == n ? -1 : (long long)bad);
    }
}

static int target_idle(void *arg)
{
    struct session *s = arg;
    xfer_status_t st = xfer_notif_drain(s->agent, target_on_notif, s, NULL);

    if (st < 0)
        return xb_fail_xfer(st, "drain notifications");
    return s->serve_failed ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Initiator: waiting for the answer to a check                        */
/* ------------------------------------------------------------------ */

static void initiator_on_notif(void *arg, const char *from, const void *msg,
                               size_t len)
{
    struct session *s = arg;
    char text[MSG_LEN];
    unsigned long long seed;
    long long bad = -1;
    struct mail *m;

    if (len >= sizeof(text))
        return;
    memcpy(text, msg, len);
    text[len] = '\0';
    if (sscanf(text, "xb ok %llu", &seed) != 1 &&
        sscanf(text, "xb bad %llu %lld", &seed, &bad) != 2)
        return;
    if (xb_grow(&s->mail, s->nmail, &s->mail_cap, sizeof(*s->mail), 16))
        return; /* the waiter times out with a sentence */
    m = &s->mail[s->nmail++];
    snprintf(m->from, sizeof(m->from), "%s", from);
    m->seed = seed;
    m->bad = bad;
}

/* 0 and *bad (-1: right) once peer answered seed; -1 on failure. */
static int await_answer(struct session *s, const char *peer, uint64_t seed,
                        long long *bad)
{
    uint64_t deadline = xb_now_ns() + (uint64_t)xb_timeout_ms() * 1000000u;
    size_t i;

    for (;;) {
        xfer_status_t st;
        int found = 0;

        pthread_mutex_lock(&s->mail_lock);
        st = xfer_notif_drain(s->agent, initiator_on_notif, s, NULL);
        for (i = 0; i < s->nmail && st >= 0; i++) {
            if (s->mail[i].seed == seed && strcmp(s->mail[i].from, peer) == 0) {
                *bad = s->mail[i].bad;
                s->mail[i] = s->mail[--s->nmail];
                found = 1;
                break;
            }
        }
        pthread_mutex_unlock(&s->mail_lock);
        if (st < 0)
            return xb_fail_xfer(st, "drain notifications");
        if (found)
            return 0;
        if (xb_now_ns() > deadline)
            return xb_fail("%s did not answer a consistency check within "
                           "%d ms", peer, xb_timeout_ms());
        if (!s->o->progress_thread)
            xfer_progress(s->agent);
        else
            sched_yield();
    }
}

/* ------------------------------------------------------------------ */
/* Initiator threads                                                   */
/* ------------------------------------------------------------------ */

struct samples {
    uint64_t *v;
    size_t n, cap;
};

/* One request of a slot, to target k, and with --reregister what it is
 * built on: the registration of its local blocks and (--prepared) their
 * prepared list. */
struct post {
    xfer_req_t *req;
    xfer_mem_t *mem;
    xfer_prep_t *lprep;
    xfer_status_t st;    /* of the post under way */
};

/* --pipeline-depth slots per thread.  Slot j carries blocks j * per to
 * (j + 1) * per - 1 of the thread's batch, one request per target posted
 * together; it is reposted once all of them completed, while the other
 * slots go on. */
struct slot {
    long iter;           /* the post it carries: seeds and sentences */
    int busy;
    uint64_t t0, t1;     /* before the first post call, after the last */
    uint64_t t_done;     /* all its requests completed; 0: not yet */
};

struct thread {
    struct session *s;
    pthread_t tid;
    int id;
    size_t block, batch;
    long depth;          /* slots */
    size_t per;          /* blocks per request: batch / depth */
    long iters;
    pthread_barrier_t *start;
    uint64_t t_begin;    /* when this thread left the start barrier */
    int *failed;         /* some thread failed before the start */
    uint64_t *cpu_start; /* process CPU ns, by the barrier's serial thread */
    uint64_t t_end;
    struct samples prep, post, xfer;
    int rc;
    struct slot *slots;  /* depth */
    struct post *posts;  /* depth x targets, slot by slot */
    /* per target, over the whole batch */
    xfer_prep_t *lprep[XB_MAX_RANKS], *rprep[XB_MAX_RANKS];
    xfer_desc_t *ldescs, *rdescs;
    size_t *idx;
};

/* Samples go into the room sample_reserve made before the clock
 * started; running out of it is a counting error, never a realloc. */
static int sample_add(struct samples *sm, uint64_t v)
{
    if (sm->n == sm->cap)
        return xb_fail("more timing samples than the %zu reserved", sm->cap);
    sm->v[sm->n++] = v;
    return 0;
}

/* CPU time of the whole process (all threads, the progress thread
 * included), to the nanosecond: getrusage counts in ticks on some
 * kernels, too coarse for a point that lasts a millisecond. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Room for n samples, allocated and touched before the clock starts: a
 * realloc or a page fault in the measured loop would be timed. */
static int sample_reserve(struct samples *sm, size_t n)
{
    sm->v = malloc(n * sizeof(*sm->v));
    if (sm->v == NULL)
        return xb_fail("out of memory for %zu timing samples", n);
    memset(sm->v, 0, n * sizeof(*sm->v));
    sm->cap = n;
    return 0;
}

static size_t local_off(const struct thread *t, int k)
{
    return ((size_t)k * (size_t)t->s->o->threads + (size_t)t->id) *
           t->s->unit;
}

static size_t remote_off(const struct thread *t, int k)
{
    return ((size_t)t->s->peers[k].slot * (size_t)t->s->o->threads +
            (size_t)t->id) * t->s->unit;
}

/* From the start of a thread's unit to the first block of slot j. */
static size_t slot_off(const struct thread *t, long j)
{
    return (size_t)j * t->per * t->block;
}

static struct post *post_of(struct thread *t, long j, int k)
{
    return &t->posts[(size_t)j * (size_t)t->s->npeers + (size_t)k];
}

static xfer_dlist_t dlist(const xfer_desc_t *d, size_t n)
{
    xfer_dlist_t l = { XFER_MEM_DRAM, n, d };

    return l;
}

/* The descriptors first .. first + n - 1 of target k: those blocks of
 * this thread's units, here and there. */
static void fill_descs(struct thread *t, int k, size_t first, size_t n)
{
    struct session *s = t->s;
    size_t i;

    for (i = first; i < first + n; i++) {
        t->ldescs[i] = (xfer_desc_t){
            (uintptr_t)(s->buf + local_off(t, k) + i * t->block), t->block,
            0 };
        t->rdescs[i] = (xfer_desc_t){
            (uintptr_t)(s->peers[k].addr + remote_off(t, k) + i * t->block),
            t->block, 0 };
    }
}

/* Slot j's requests, one per target; with --reregister first the
 * registration of its local blocks (and their prepared list), so that
 * registering is timed with the request. */
static int slot_create(struct thread *t, long j)
{
    struct session *s = t->s;
    const struct xb_opts *o = s->o;
    size_t first = (size_t)j * t->per;
    xfer_req_opts_t ropts;
    xfer_status_t st;
    int k;

    xfer_req_opts_init(&ropts);
    for (k = 0; k < s->npeers; k++) {
        struct post *p = post_of(t, j, k);
        xfer_dlist_t l = dlist(t->ldescs + first, t->per);
        xfer_dlist_t r = dlist(t->rdescs + first, t->per);

        if (!o->prepared || o->reregister)
            fill_descs(t, k, first, t->per);
        if (o->reregister) {
            if ((st = xfer_mem_register(s->agent, &l, NULL, &p->mem)) !=
                XFER_OK)
                return xb_fail_xfer(st, "register the blocks of a post");
            if (o->prepared &&
                (st = xfer_prep_create(s->agent, &l, NULL, &p->lprep)) !=
                    XFER_OK)
                return xb_fail_xfer(st, "prepare local list");
        }
        if (o->prepared && o->reregister)
            st = xfer_req_create_prepped(s->agent, o->op, p->lprep, t->idx,
                                         t->rprep[k], t->idx + first, t->per,
                                         &ropts, &p->req);
        else if (o->prepared)
            st = xfer_req_create_prepped(s->agent, o->op, t->lprep[k],
                                         t->idx + first, t->rprep[k],
                                         t->idx + first, t->per, &ropts,
                                         &p->req);
        else
            st = xfer_req_create(s->agent, o->op, &l, &r, s->peers[k].name,
                                 &ropts, &p->req);
        if (st != XFER_OK)
            return xb_fail_xfer(st, "create request");
    }
    return 0;
}

/* Slot j's requests, then what they were built on; the first failure
 * is kept, the rest released anyway. */
static int slot_release(struct thread *t, long j)
{
    xfer_status_t st;
    int k, rc = 0;

    for (k = 0; k < t->s->npeers; k++) {
        struct post *p = post_of(t, j, k);

        if (p->req != NULL && (st = xfer_req_release(p->req)) != XFER_OK &&
            rc == 0)
            rc = xb_fail_xfer(st, "release request");
        if (p->lprep != NULL && (st = xfer_prep_release(p->lprep)) !=
            XFER_OK && rc == 0)
            rc = xb_fail_xfer(st, "release a prepared list");
        if (p->mem != NULL && (st = xfer_mem_deregister(t->s->agent,
                                                        p->mem)) != XFER_OK &&
            rc == 0)
            rc = xb_fail_xfer(st, "deregister the blocks of a post");
        p->req = NULL;
        p->lprep = NULL;
        p->mem = NULL;
    }
    return rc;
}

/* Lists over the whole batch, per target; slots build their requests
 * from index ranges of them.  With --reregister the local blocks are
 * registered only around each post, so their lists are made there. */
static int prepare_lists(struct thread *t)
{
    struct session *s = t->s;
    xfer_status_t st;
    xfer_dlist_t l, r;
    int k;

    for (k = 0; k < s->npeers; k++) {
        fill_descs(t, k, 0, t->batch);
        l = dlist(t->ldescs, t->batch);
        r = dlist(t->rdescs, t->batch);
        if (!s->o->reregister &&
            (st = xfer_prep_create(s->agent, &l, NULL, &t->lprep[k])) !=
                XFER_OK)
            return xb_fail_xfer(st, "prepare local list");
        if ((st = xfer_prep_create(s->agent, &r, s->peers[k].name,
                                   &t->rprep[k])) != XFER_OK)
            return xb_fail_xfer(st, "prepare remote list");
    }
    return 0;
}

static void release_lists(struct thread *t)
{
    int k;

    for (k = 0; k < t->s->npeers; k++) {
        if (t->lprep[k] != NULL)
            xfer_prep_release(t->lprep[k]);
        if (t->rprep[k] != NULL)
            xfer_prep_release(t->rprep[k]);
        t->lprep[k] = t->rprep[k] = NULL;
    }
}

static const char *op_name(xfer_op_t op)
{
    return op == XFER_OP_WRITE ? "WRITE" : "READ";
}

/* Slot j carries post iter: its requests made when it has none (timed
 * as prep), the check's pattern laid out, then a post to every target. */
static int slot_start(struct thread *t, long j, long iter, int measured)
{
    struct session *s = t->s;
    const struct xb_opts *o = s->o;
    struct slot *sl = &t->slots[j];
    size_t len = t->block * t->per, off = slot_off(t, j);
    char notif[XB_MAX_RANKS][MSG_LEN];
    size_t nlen[XB_MAX_RANKS];
    uint64_t seed = xb_pattern_seed(t->block, t->batch, iter, t->id);
    uint64_t t0;
    xfer_status_t st;
    long long bad;
    int k, all_done = 1;

    if (post_of(t, j, 0)->req == NULL) {
        t0 = xb_now_ns();
        if (slot_create(t, j))
            return -1;
        /* A request made once is timed once, warmup or not. */
        if ((measured || !o->recreate) &&
            sample_add(&t->prep, xb_now_ns() - t0))
            return -1;
    }
    for (k = 0; k < s->npeers; k++) {
        uint64_t sk = seed + (uint64_t)k;

        nlen[k] = 0;
        if (!o->check)
            continue;
        if (o->op == XFER_OP_WRITE) {
            xb_pattern_fill(s->buf + local_off(t, k) + off, len, sk);
            nlen[k] = (size_t)snprintf(notif[k], MSG_LEN,
                                       "xb w %" PRIu64 " %zu %zu", sk,
                                       remote_off(t, k) + off, len);
            continue;
        }
        /* READ: the target fills first; zeroes here catch a READ that
         * moved nothing. */
        nlen[k] = (size_t)snprintf(notif[k], MSG_LEN,
                                   "xb f %" PRIu64 " %zu %zu", sk,
                                   remote_off(t, k) + off, len);
        st = xfer_notif_send(s->agent, s->peers[k].name, notif[k], nlen[k],
                             NULL);
        if (st != XFER_OK)
            return xb_fail_xfer(st, "ask for a fill");
        if (await_answer(s, s->peers[k].name, sk, &bad))
            return -1;
        memset(s->buf + local_off(t, k) + off, 0, len);
        nlen[k] = 0;
    }

    sl->t0 = xb_now_ns();
    for (k = 0; k < s->npeers; k++)
        post_of(t, j, k)->st = xfer_req_post(post_of(t, j, k)->req,
                                             nlen[k] ? notif[k] : NULL,
                                             nlen[k]);
    sl->t1 = xb_now_ns();
    for (k = 0; k < s->npeers; k++)
        all_done &= post_of(t, j, k)->st == XFER_OK;
    sl->iter = iter;
    sl->busy = 1;
    /* A post that completed in the call (a direct copy) ended at t1: one
     * clock read fewer per post where a post costs a microsecond. */
    sl->t_done = all_done ? sl->t1 : 0;
    return 0;
}

/* 1 when all of slot j's requests completed, 0 while some are under
 * way, -1 when one failed. */
static int slot_poll(struct thread *t, long j)
{
    int k, pending = 0;

    for (k = 0; k < t->s->npeers; k++) {
        struct post *p = post_of(t, j, k);

        if (p->st == XFER_IN_PROG)
            p->st = xfer_req_status(p->req);
        if (p->st == XFER_IN_PROG)
            pending = 1;
        else if (p->st != XFER_OK)
            return xb_fail_xfer(p->st, op_name(t->s->o->op));
    }
    return !pending;
}

/* Slot j completed: its samples, the check of every byte it moved, and
 * with --recreate its requests released. */
static int slot_finish(struct thread *t, long j, int measured)
{
    struct session *s = t->s;
    const struct xb_opts *o = s->o;
    struct slot *sl = &t->slots[j];
    size_t len = t->block * t->per, off = slot_off(t, j);
    uint64_t seed = xb_pattern_seed(t->block, t->batch, sl->iter, t->id);
    long long bad;
    int k;

    sl->busy = 0;
    if (measured && (sample_add(&t->post, sl->t1 - sl->t0) ||
                     sample_add(&t->xfer, sl->t_done - sl->t0)))
        return -1;
    for (k = 0; o->check && k < s->npeers; k++) {
        uint64_t sk = seed + (uint64_t)k;

        if (o->op == XFER_OP_WRITE) {
            if (await_answer(s, s->peers[k].name, sk, &bad))
                return -1;
        } else {
            size_t b = xb_pattern_check(s->buf + local_off(t, k) + off, len,
                                        sk);

            bad = b == len ? -1 : (long long)b;
        }
        if (bad >= 0)
            return xb_fail("%s block %zu batch %zu thread %d %s %ld: data "
                           "wrong at byte %lld of %zu (%s %s)",
                           s->spec, t->block, t->batch, t->id,
                           sl->iter < 0 ? "warmup post" : "post",
                           sl->iter < 0
                               ? sl->iter + xb_warmup_for(o, t->block)
                               : sl->iter, bad, len, op_name(o->op),
                           o->op == XFER_OP_WRITE ? "checked at the target"
                                                  : "checked here");
    }
    if (o->recreate && slot_release(t, j))
        return -1;
    return 0;
}

/* count posts numbered from first (negative: warmup), up to depth of
 * them in flight: each slot is reposted as soon as its requests
 * completed, whatever the others are doing.  With depth 1 this is post,
 * wait, post. */
static int run_posts(struct thread *t, long first, long count, int measured)
{
    long issued = 0, finished = 0, j;
    int rc;

    for (j = 0; j < t->depth && issued < count; j++, issued++)
        if (slot_start(t, j, first + issued, measured))
            return -1;
    while (finished < count) {
        for (j = 0; j < t->depth; j++) {
            struct slot *sl = &t->slots[j];

            if (!sl->busy)
                continue;
            if (sl->t_done == 0) {
                if ((rc = slot_poll(t, j)) <= 0) {
                    if (rc < 0)
                        return -1;
                    continue;
                }
                sl->t_done = xb_now_ns();
            }
            if (slot_finish(t, j, measured))
                return -1;
            finished++;
            if (issued < count && slot_start(t, j, first + issued++,
                                             measured))
                return -1;
        }
    }
    return 0;
}

static void *thread_main(void *arg)
{
    struct thread *t = arg;
    long j;
    int ok = 1;

    t->rc = -1;
    if (t->s->o->prepared && prepare_lists(t))
        ok = 0;
    if (ok) {
        long warmup = xb_warmup_for(t->s->o, t->block);

        if (run_posts(t, -warmup, warmup, 0))
            ok = 0;
    }
    /* Every thread reaches the start line, failed or not, so none waits
     * forever; after it they all know whether to go on. */
    if (!ok)
        __atomic_store_n(t->failed, 1, __ATOMIC_SEQ_CST);
    if (pthread_barrier_wait(t->start) == PTHREAD_BARRIER_SERIAL_THREAD)
        *t->cpu_start = cpu_ns();
    t->t_begin = xb_now_ns();
    if (__atomic_load_n(t->failed, __ATOMIC_SEQ_CST))
        goto out;
    if (run_posts(t, 0, t->iters, 1))
        goto out;
    t->t_end = xb_now_ns();
    t->rc = ok ? 0 : -1;
out:
    for (j = 0; j < t->depth; j++)
        if (slot_release(t, j))
            t->rc = -1;
    release_lists(t);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Merge the threads' samples of one kind into avg and p99 (µs). */
static struct xb_stat merge(struct thread *th, long n, size_t off)
{
    struct xb_stat r = { 0, 0, 0 };
    size_t total = 0, k = 0, i;
    uint64_t *all;
    double sum = 0;
    long t;

    for (t = 0; t < n; t++)
        total += ((struct samples *)((char *)&th[t] + off))->n;
    if (total == 0 || (all = malloc(total * sizeof(*all))) == NULL)
        return r;
    for (t = 0; t < n; t++) {
        struct samples *sm = (struct samples *)((char *)&th[t] + off);

        for (i = 0; i < sm->n; i++) {
            all[k++] = sm->v[i];
            sum += (double)sm->v[i];
        }
    }
    qsort(all, total, sizeof(*all), cmp_u64);
    r.avg_us = sum / (double)total / 1e3;
    r.p50_us = (double)all[(total + 1) / 2 - 1] / 1e3;
    i = (total * 99 + 99) / 100; /* the 99th percentile, nearest rank */
    r.p99_us = (double)all[(i > 0 ? i : 1) - 1] / 1e3;
    free(all);
    return r;
}


/* One point of the sweep on this initiator: its threads, their samples. */
static int run_point(struct session *s, size_t block, size_t batch,
                     struct xb_result *res)
{
    const struct xb_opts *o = s->o;
    long n = o->threads, t, started = 0;
    struct thread *th = calloc((size_t)n, sizeof(*th));
    pthread_barrier_t start;
    uint64_t cpu0 = 0, cpu1, t_join;
    uint64_t t_start = UINT64_MAX, t_end = 0;
    int rc = -1, failed = 0;

    memset(res, 0, sizeof(*res));
    if (th == NULL)
        return xb_fail("out of memory for %ld threads", n);
    if (pthread_barrier_init(&start, NULL, (unsigned)n) != 0) {
        free(th);
        return xb_fail("cannot make a barrier for %ld threads", n);
    }
    for (t = 0; t < n; t++) {
        struct thread *x = &th[t];
        size_t i;

        x->s = s;
        x->id = (int)t;
        x->block = block;
        x->batch = batch;
        x->depth = o->pipeline_depth;
        x->per = batch / (size_t)x->depth; /* opts.c: it divides */
        x->iters = xb_iters_for(o, block);
        x->start = &start;
        x->failed = &failed;
        x->cpu_start = &cpu0;
        x->ldescs = calloc(batch, sizeof(*x->ldescs));
        x->rdescs = calloc(batch, sizeof(*x->rdescs));
        x->idx = calloc(batch, sizeof(*x->idx));
        x->slots = calloc((size_t)x->depth, sizeof(*x->slots));
        x->posts = calloc((size_t)x->depth * (size_t)s->npeers,
                          sizeof(*x->posts));
        if (x->ldescs == NULL || x->rdescs == NULL || x->idx == NULL ||
            x->slots == NULL || x->posts == NULL) {
            xb_fail("out of memory for %zu descriptors", batch);
            goto out;
        }
        /* prep: one per measured post with --recreate, else one per
         * slot and point */
        if (sample_reserve(&x->prep, (size_t)x->depth +
                                         (o->recreate ? (size_t)x->iters
                                                      : 0)) ||
            sample_reserve(&x->post, (size_t)x->iters) ||
            sample_reserve(&x->xfer, (size_t)x->iters))
            goto out;
        for (i = 0; i < batch; i++)
            x->idx[i] = i;
    }
    for (t = 0; t < n; t++, started++)
        if (pthread_create(&th[t].tid, NULL, thread_main, &th[t]) != 0) {
            xb_fail("cannot start initiator thread %ld", t);
            break;
        }
    if (started < n) {
        /* Threads that started wait at the barrier for ones that never
         * will: this cannot be undone cleanly, so tell the other ranks
         * and end the process. */
        xb_coord_abort(s->c, xb_error());
        fprintf(stderr, "xfer-bench: rank %d: %s\n", s->c->rank, xb_error());
        exit(1);
    }
    rc = 0;
    for (t = 0; t < n; t++) {
        /* While they work, the ranks waiting on this one hear it is
         * alive: their bound is on silence, not on a point's length. */
        for (;;) {
            struct timespec at;

            clock_gettime(CLOCK_REALTIME, &at);
            at.tv_sec += XB_HEARTBEAT_MS / 1000;
            at.tv_nsec += (long)(XB_HEARTBEAT_MS % 1000) * 1000000L;
            if (at.tv_nsec >= 1000000000L) {
                at.tv_sec++;
                at.tv_nsec -= 1000000000L;
            }
            if (pthread_timedjoin_np(th[t].tid, NULL, &at) != ETIMEDOUT)
                break;
            if (xb_coord_heartbeat(s->c))
                rc = -1; /* the threads finish; the point fails */
        }
        if (th[t].rc != 0)
            rc = -1;
        if (th[t].t_end > t_end)
            t_end = th[t].t_end;
        if (th[t].t_begin < t_start)
            t_start = th[t].t_begin;
    }
    cpu1 = cpu_ns();
    t_join = xb_now_ns();
    if (rc != 0)
        goto out;
    res->block = block;
    res->batch = batch;
    res->iters = th[0].iters;
    res->threads = n;
    res->bytes = (uint64_t)n * (uint64_t)th[0].iters * (uint64_t)s->npeers *
                 block * th[0].per;
    /* From the first thread off the start line to the last one done. */
    res->seconds = (double)(t_end - t_start) / 1e9;
    if (res->seconds <= 0)
        res->seconds = 1e-9;
    res->gbps = (double)res->bytes / res->seconds / 1e9;
    res->avg_lat_us = res->seconds * 1e6 / (double)res->iters;
    res->prep = merge(th, n, offsetof(struct thread, prep));
    res->post = merge(th, n, offsetof(struct thread, post));
    res->xfer = merge(th, n, offsetof(struct thread, xfer));
    /* CPU over the same span as its wall time: start to join. */
    res->cpu_pct = t_join > t_start ? 100.0 * (double)(cpu1 - cpu0) /
                                          (double)(t_join - t_start)
                                    : 0;
out:
    for (t = 0; t < n; t++) {
        free(th[t].ldescs);
        free(th[t].rdescs);
        free(th[t].idx);
        free(th[t].slots);
        free(th[t].posts);
        free(th[t].prep.v);
        free(th[t].post.v);
        free(th[t].xfer.v);
    }
    pthread_barrier_destroy(&start);
    free(th);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Results between ranks: text, so hosts need not agree on layout      */
/* ------------------------------------------------------------------ */

static int result_text(const struct xb_result *r, char *buf, size_t len)
{
    return snprintf(buf, len,
                    "R %zu %zu %ld %ld %" PRIu64 " %.17g %.17g %.17g %.17g "
                    "%.17g %.17g %.17g %.17g %.17g",
                    r->block, r->batch, r->iters, r->threads, r->bytes,
                    r->seconds, r->prep.avg_us, r->prep.p99_us,
                    r->post.avg_us, r->post.p99_us, r->xfer.avg_us,
                    r->xfer.p99_us, r->xfer.p50_us, r->cpu_pct);
}

static int result_parse(const char *text, struct xb_result *r)
{
    memset(r, 0, sizeof(*r));
    if (sscanf(text,
               "R %zu %zu %ld %ld %" SCNu64
               " %lg %lg %lg %lg %lg %lg %lg %lg %lg",
               &r->block, &r->batch, &r->iters, &r->threads, &r->bytes,
               &r->seconds, &r->prep.avg_us, &r->prep.p99_us,
               &r->post.avg_us, &r->post.p99_us, &r->xfer.avg_us,
               &r->xfer.p99_us, &r->xfer.p50_us, &r->cpu_pct) != 14)
        return -1;
    return 0;
}

/* All initiators of a point as one row: bytes add up over the longest
 * time; averages (and medians) are averaged; p99s take the worst. */
static int merge_results(const struct xb_blob *all, int n,
                         struct xb_result *out)
{
    struct xb_result r;
    int i, m = 0;

    memset(out, 0, sizeof(*out));
    for (i = 0; i < n; i++) {
        if (all[i].len == 0)
            continue; /* a target */
        if (result_parse(all[i].data, &r))
            return xb_fail("rank %d sent a malformed result", i);
        if (m++ == 0) {
            *out = r;
            continue;
        }
        out->threads += r.threads;
        out->bytes += r.bytes;
        if (r.seconds > out->seconds)
            out->seconds = r.seconds;
        out->prep.avg_us += r.prep.avg_us;
        out->post.avg_us += r.post.avg_us;
        out->xfer.avg_us += r.xfer.avg_us;
        out->xfer.p50_us += r.xfer.p50_us;
        out->cpu_pct += r.cpu_pct;
        if (r.prep.p99_us > out->prep.p99_us)
            out->prep.p99_us = r.prep.p99_us;
        if (r.post.p99_us > out->post.p99_us)
            out->post.p99_us = r.post.p99_us;
        if (r.xfer.p99_us > out->xfer.p99_us)
            out->xfer.p99_us = r.xfer.p99_us;
    }
    if (m == 0)
        return xb_fail("no initiator sent a result");
    out->prep.avg_us /= m;
    out->post.avg_us /= m;
    out->xfer.avg_us /= m;
    out->xfer.p50_us /= m;
    out->cpu_pct /= m;
    out->gbps = (double)out->bytes / out->seconds / 1e9;
    out->avg_lat_us = out->seconds * 1e6 / (double)out->iters;
    return 0;
}

/* ------------------------------------------------------------------ */
/* A session: one backend                                              */
/* ------------------------------------------------------------------ */

/* --peer gives the target's host; its listener's port comes from its
 * blob (it may listen on a wildcard address). */
static void listener_of(const struct session *s, const struct peer *p,
                        char *out, size_t len)
{
    const char *port = strrchr(p->listen, ':');
    const char *colon = s->o->peer ? strrchr(s->o->peer, ':') : NULL;

    if (colon == NULL || port == NULL)
        snprintf(out, len, "%s", p->listen);
    else if (colon == s->o->peer)
        snprintf(out, len, "127.0.0.1%s", port);
    else
        snprintf(out, len, "%.*s%s", (int)(colon - s->o->peer), s->o->peer,
                 port);
}

static int load_peers(struct session *s)
{
    const struct xb_opts *o = s->o;
    unsigned tmo = (unsigned)xb_timeout_ms();
    xfer_status_t st;
    char hp[ADDR_MAX_LEN + 64], what[NAME_MAX_LEN + 64];
    int k;

    for (k = 0; k < s->npeers; k++) {
        struct peer *p = &s->peers[k];

        snprintf(what, sizeof(what), "metadata of %s (rank %d)", p->name,
                 p->rank);
        if (o->etcd != NULL) {
            /* Both ways: targets answer checks by notification. */
            if ((st = xfer_md_fetch_etcd(s->agent, p->name, tmo)) != XFER_OK)
                return xb_fail_xfer(st, what);
            continue;
        }
        if (!s->initiator)
            continue; /* initiators send theirs to our listener */
        listener_of(s, p, hp, sizeof(hp));
        if ((st = xfer_md_fetch(s->agent, hp, p->name, tmo, NULL, 0)) !=
            XFER_OK)
            return xb_fail_xfer(st, what);
        if ((st = xfer_md_send(s->agent, hp, XFER_MD_ALL, tmo)) != XFER_OK)
            return xb_fail_xfer(st, "send metadata to a target");
    }
    return 0;
}

static int session_open(struct session *s)
{
    const struct xb_opts *o = s->o;
    struct xb_coord *c = s->c;
    int ranks[XB_MAX_RANKS], k;
    char name[NAME_MAX_LEN], listen[ADDR_MAX_LEN] = "-", blob[512];
    xfer_agent_opts_t aopts;
    xfer_status_t st;
    struct xb_blob all[XB_MAX_RANKS];
    xfer_desc_t d;
    xfer_dlist_t l;

    s->initiator = xb_is_initiator(o->scheme, c->rank, c->size);
    s->npeers = s->initiator
                    ? xb_targets_of(o->scheme, c->rank, c->size, ranks)
                    : xb_initiators_of(o->scheme, c->rank, c->size, ranks);
    s->unit = o->max_block * o->max_batch;
    s->buf_len = s->unit * (size_t)o->threads * (size_t)s->npeers;
    if (o->total_buffer > s->buf_len)
        s->buf_len = o->total_buffer;

    snprintf(name, sizeof(name), "xfer-bench-%s-b%zu-r%d",
             o->etcd ? o->group : "local", s->bi, c->rank);
    xfer_agent_opts_init(&aopts);
    aopts.name = name;
    aopts.progress_thread = s->initiator ? o->progress_thread : 1;
    aopts.etcd_endpoints = o->etcd;
    if (o->etcd == NULL && !s->initiator) {
        if (o->peer != NULL) {
            const char *colon = strrchr(o->peer, ':');

            snprintf(listen, sizeof(listen), "%.*s:0",
                     (int)(colon - o->peer), o->peer);
            if (colon == o->peer)
                snprintf(listen, sizeof(listen), "0.0.0.0:0");
        } else {
            snprintf(listen, sizeof(listen), "127.0.0.1:0");
        }
        aopts.listen_addr = listen;
    }
    if ((st = xfer_agent_create(&aopts, &s->agent)) != XFER_OK)
        return xb_fail_xfer(st, "create agent");
    if (aopts.listen_addr != NULL &&
        (st = xfer_agent_listen_addr(s->agent, listen, sizeof(listen))) !=
            XFER_OK)
        return xb_fail_xfer(st, "listener address");
    if ((st = xfer_backend_add(s->agent, s->spec, NULL)) != XFER_OK)
        return xb_fail_xfer(st, s->spec);
    if ((s->buf = buffer_alloc(s)) == NULL)
        return -1;
    /* --reregister: an initiator's blocks are registered around each
     * post only, so every request is built on its own registration. */
    d = (xfer_desc_t){ (uintptr_t)s->buf, s->buf_len, 0 };
    l = dlist(&d, 1);
    if (!(s->initiator && o->reregister) &&
        (st = xfer_mem_register(s->agent, &l, NULL, &s->mem)) != XFER_OK)
        return xb_fail_xfer(st, "register the buffer");

    /* Who is where: name, listener, buffer. */
    snprintf(blob, sizeof(blob), "%s %s %" PRIu64 " %" PRIu64, name, listen,
             (uint64_t)(uintptr_t)s->buf, (uint64_t)s->buf_len);
    if (xb_coord_allgather(c, blob, strlen(blob) + 1, all, NULL))
        return -1;
    for (k = 0; k < s->npeers; k++) {
        struct peer *p = &s->peers[k];
        int mine[XB_MAX_RANKS], n, j;

        p->rank = ranks[k];
        if (sscanf(all[p->rank].data, "%127s %127s %" SCNu64 " %" SCNu64,
                   p->name, p->listen, &p->addr, &p->len) != 4) {
            xb_blobs_free(all, c->size);
            return xb_fail("rank %d sent a malformed description", p->rank);
        }
        /* Our slot among the peer's peers: where our units are there. */
        n = s->initiator
                ? xb_initiators_of(o->scheme, p->rank, c->size, mine)
                : xb_targets_of(o->scheme, p->rank, c->size, mine);
        for (j = 0; j < n && mine[j] != c->rank; j++)
            ;
        p->slot = j;
        if (s->initiator &&
            ((uint64_t)(j + 1) * (uint64_t)o->threads * s->unit > p->len)) {
            xb_blobs_free(all, c->size);
            return xb_fail("rank %d's buffer is too small", p->rank);
        }
    }
    xb_blobs_free(all, c->size);
    if (load_peers(s))
        return -1;
    return 0;
}

/* --stats: the agent's counters with each peer, one "# stats" block
 * written at once, so that ranks printing together do not interleave
 * within a block. */
static void print_stats(struct session *s)
{
    char out[8192];
    size_t len = 0;
    const char *be = xfer_backend_name(NULL);
    xfer_backend_t *b = NULL;

    if (xfer_backend_find(s->agent, s->spec, &b) != XFER_OK) {
        /* The spec carries parameters: the plugin is its first word. */
        char plugin[64];

        snprintf(plugin, sizeof(plugin), "%.*s", (int)strcspn(s->spec, ":"),
                 s->spec);
        if (xfer_backend_find(s->agent, plugin, &b) != XFER_OK)
            return;
    }
    be = xfer_backend_name(b);
    for (int k = -1; k < s->npeers; k++) {
        const char *peer = k < 0 ? NULL : s->peers[k].name;
        xfer_stats_t st;
        int n;

        if (xfer_stats_get(s->agent, be, peer, &st, sizeof(st)) != XFER_OK)
            continue;
        n = snprintf(out + len, sizeof(out) - len,
                     "# stats %s %s %s: read %" PRIu64 " ops %" PRIu64
                     " B, write %" PRIu64 " ops %" PRIu64 " B, descs %" PRIu64
                     ", done %" PRIu64 ", failed %" PRIu64 ", in flight %"
                     PRIu64 ", notif sent %" PRIu64 " recv %" PRIu64,
                     xfer_agent_name(s->agent), be, peer ? peer : "(all)",
                     st.read_ops, st.read_bytes, st.write_ops, st.write_bytes,
                     st.descs, st.done, st.failed, st.in_flight,
                     st.notif_sent, st.notif_recv);
        if (n < 0 || (size_t)n >= sizeof(out) - len)
            break;
        len += (size_t)n;
        for (unsigned i = 1; i < XFER_STATS_CODES; i++) {
            if (st.errors[i] == 0)
                continue;
            n = snprintf(out + len, sizeof(out) - len, ", %s %" PRIu64,
                         xfer_strerror(-(int)i), st.errors[i]);
            if (n < 0 || (size_t)n >= sizeof(out) - len)
                break;
            len += (size_t)n;
        }
        if (st.lat_count > 0) {
            /* Buckets as "<1us:N 1us:N 2us:N ...", the non-empty ones. */
            n = snprintf(out + len, sizeof(out) - len,
                         ", mean latency %.2f us, buckets",
                         (double)st.lat_sum_us / (double)st.lat_count);
            if (n > 0 && (size_t)n < sizeof(out) - len)
                len += (size_t)n;
            for (unsigned i = 0; i < XFER_STATS_LAT_BUCKETS; i++) {
                if (st.lat_us[i] == 0)
                    continue;
                n = i == 0 ? snprintf(out + len, sizeof(out) - len,
                                      " <1us:%" PRIu64, st.lat_us[i])
                           : snprintf(out + len, sizeof(out) - len,
                                      " %lluus:%" PRIu64,
                                      1ull << (i - 1), st.lat_us[i]);
                if (n < 0 || (size_t)n >= sizeof(out) - len)
                    break;
                len += (size_t)n;
            }
        }
        if (len + 1 < sizeof(out))
            out[len++] = '\n';
    }
    fflush(stdout);
    if (len > 0 && write(STDOUT_FILENO, out, len) < 0)
        return;
}

static void session_close(struct session *s)
{
    if (s->o->stats && s->agent != NULL)
        print_stats(s);
    if (s->mem != NULL)
        xfer_mem_deregister(s->agent, s->mem);
    if (s->buf != NULL)
        buffer_free(s);
    xfer_agent_destroy(s->agent);
    free(s->mail);
    pthread_mutex_destroy(&s->mail_lock);
}

static long count_points(const struct xb_opts *o)
{
    long blocks = 0, batches = 0;
    size_t v;

    for (v = o->start_block; v <= o->max_block; v *= 2) {
        blocks++;
        if (v > o->max_block / 2)
            break;
    }
    for (v = o->start_batch; v <= o->max_batch; v *= 2) {
        batches++;
        if (v > o->max_batch / 2)
            break;
    }
    return blocks * batches * (long)o->nbackends;
}

static int run_backend(struct session *s, struct xb_report *rep, long *done,
                       long total)
{
    const struct xb_opts *o = s->o;
    struct xb_coord *c = s->c;
    struct xb_idle idle = { -1, target_idle, s };
    struct xb_blob all[XB_MAX_RANKS];
    struct xb_result res, row;
    char text[512];
    size_t block, batch;
    xfer_status_t st;

    if (session_open(s))
        return -1;
    if (!s->initiator) {
        if ((st = xfer_notif_fd(s->agent, &idle.fd)) != XFER_OK)
            return xb_fail_xfer(st, "notification fd");
    }
    /* Every rank has loaded what it needs before anyone posts. */
    if (xb_coord_barrier(c, s->initiator ? NULL : &idle))
        return -1;
    if (rep != NULL &&
        xb_report_backend(rep, s->spec,
                          o->versions[s->bi] ? o->versions[s->bi] : "?"))
        return -1;
    for (block = o->start_block; block <= o->max_block; block *= 2) {
        for (batch = o->start_batch; batch <= o->max_batch; batch *= 2) {
            text[0] = '\0';
            if (xb_coord_barrier(c, s->initiator ? NULL : &idle))
                return -1;
            if (s->initiator) {
                if (run_point(s, block, batch, &res))
                    return -1;
                result_text(&res, text, sizeof(text));
            }
            if (xb_coord_allgather(c, text, s->initiator ? strlen(text) + 1
                                                        : 0,
                                   all, s->initiator ? NULL : &idle))
                return -1;
            if (rep != NULL) {
                int rc = merge_results(all, c->size, &row);

                if (rc == 0)
                    rc = xb_report_row(rep, &row);
                xb_report_progress(rep, ++*done, total);
                if (rc) {
                    xb_blobs_free(all, c->size);
                    return -1;
                }
            }
            xb_blobs_free(all, c->size);
            if (batch > o->max_batch / 2)
                break;
        }
        if (block > o->max_block / 2)
            break;
    }
    /* Nobody tears down while a peer may still be answering a check. */
    return xb_coord_barrier(c, s->initiator ? NULL : &idle);
}

int xb_run(const struct xb_opts *o, struct xb_coord *c)
{
    struct xb_report *rep = NULL;
    long done = 0, total = count_points(o);
    size_t b;
    int rc = 0;

    if (c->rank == 0 && (rep = xb_report_new(o, c->size)) == NULL)
        rc = xb_fail("out of memory for the report");
    for (b = 0; rc == 0 && b < o->nbackends; b++) {
        struct session s;

        memset(&s, 0, sizeof(s));
        s.o = o;
        s.c = c;
        s.bi = b;
        s.spec = o->backends[b];
        pthread_mutex_init(&s.mail_lock, NULL);
        rc = run_backend(&s, rep, &done, total);
        /* Tell the others why before our agent goes: closing it first
         * would fail their transfers with a bare disconnect. */
        if (rc != 0)
            xb_coord_abort(c, xb_error());
        session_close(&s);
    }
    if (rep != NULL) {
        if (xb_report_finish(rep) && rc == 0)
            rc = -1;
        xb_report_free(rep);
    }
    return rc;
}
