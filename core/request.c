/* request.c - transfer requests and prepared lists: every lookup happens
 * when they are built, so posting one costs the backend's work alone. */
#include <inttypes.h>
#include <poll.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "core/events.h"
#include "core/internal.h"

XFER_API void xfer_req_opts_init(xfer_req_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->size = sizeof(*opts);
}

static void read_opts(const xfer_req_opts_t *in, xfer_req_opts_t *out)
{
    xfer_req_opts_init(out);
    XFER__OPTS_COPY(out, in);
}

static const char *op_name(xfer_op_t op)
{
    return op == XFER_OP_READ ? "READ" : "WRITE";
}

/* The remote agent a request or prep names, alive. */
static xfer_status_t find_remote(xfer_agent_t *a, const char *name,
                                 xfer__remote_t **out)
{
    xfer__remote_t *r;

    if (name == NULL)
        return xfer__err(XFER_ERR_INVALID, "no remote agent named");
    r = xfer__remote_find(a, name);
    if (r == NULL)
        return xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded "
                         "(load its metadata first)", name);
    *out = r;
    return XFER_OK;
}

/* A region of the memory type asked for: one of another type at the
 * same address must not hide it. */
/* A local region of that type that every backend has registered (a
 * registration under way is not there yet for requests). */
static bool local_is_type(const xfer__range_t *r, const void *type)
{
    const xfer__region_t *lr = (const xfer__region_t *)r;

    return lr->type == *(const xfer_mem_type_t *)type && lr->ready;
}

static bool remote_is_type(const xfer__range_t *r, const void *type)
{
    return ((const xfer__rregion_t *)r)->type ==
           *(const xfer_mem_type_t *)type;
}

static xfer_status_t lookup_local(xfer_agent_t *a, const xfer_desc_t *d,
                                  xfer_mem_type_t type, size_t i,
                                  xfer__region_t **out)
{
    xfer__region_t *r = (xfer__region_t *)xfer__reg_find_match(
        &a->regions, d->addr, d->len, local_is_type, &type);

    if (r == NULL)
        return xfer__err(XFER_ERR_INVALID, "local descriptor %zu [0x%" PRIxPTR
                         ", +%zu) is not inside a registered %s region of "
                         "agent '%s'", i, d->addr, d->len,
                         type == XFER_MEM_VRAM ? "VRAM" : "DRAM", a->name);
    *out = r;
    return XFER_OK;
}

static xfer_status_t lookup_remote(xfer__remote_t *rem, const xfer_desc_t *d,
                                   xfer_mem_type_t type, size_t i,
                                   xfer__rregion_t **out)
{
    xfer__rregion_t *r = (xfer__rregion_t *)xfer__reg_find_match(
        &rem->regions, d->addr, d->len, remote_is_type, &type);

    if (r == NULL)
        return xfer__err(XFER_ERR_INVALID, "remote descriptor %zu [0x%" PRIxPTR
                         ", +%zu) is not inside any %s region of agent '%s'",
                         i, d->addr, d->len,
                         type == XFER_MEM_VRAM ? "VRAM" : "DRAM", rem->name);
    *out = r;
    return XFER_OK;
}

/* ---- prepared lists ---------------------------------------------------- */

static void prep_free(xfer_prep_t *p)
{
    xfer_agent_t *a = p->agent;
    xfer_prep_t **pp;

    if (p->remote == NULL)
        for (size_t i = 0; i < p->count; i++)
            ((xfer__region_t *)p->ents[i].region)->refs--;
    else
        xfer__remote_unref(p->remote);
    for (pp = &a->preps; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    free(p->ents);
    free(p);
}

static xfer_status_t prep_create(xfer_agent_t *a, const char *remote_agent,
                                 const xfer_dlist_t *list, xfer_prep_t **out)
{
    xfer_prep_t *p;
    xfer_status_t st = XFER_OK;
    size_t i;

    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    p->agent = a;
    p->type = list->type;
    p->ents = calloc(list->count, sizeof(*p->ents));
    if (p->ents == NULL) {
        free(p);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    if (remote_agent != NULL) {
        st = find_remote(a, remote_agent, &p->remote);
        if (st != XFER_OK) {
            free(p->ents);
            free(p);
            return st;
        }
        xfer__remote_ref(p->remote);
    }
    for (i = 0; i < list->count && st == XFER_OK; i++) {
        const xfer_desc_t *d = &list->descs[i];

        p->ents[i].addr = d->addr;
        p->ents[i].len = d->len;
        if (p->remote != NULL) {
            xfer__rregion_t *rr = NULL;

            st = lookup_remote(p->remote, d, list->type, i, &rr);
            p->ents[i].region = rr;
        } else {
            xfer__region_t *r = NULL;

            st = lookup_local(a, d, list->type, i, &r);
            if (st == XFER_OK) {
                r->refs++;
                p->ents[i].region = r;
            }
        }
    }
    p->count = st == XFER_OK ? list->count : (p->remote ? 0 : i - 1);
    p->next = a->preps;
    a->preps = p;
    if (st != XFER_OK) {
        prep_free(p);
        return st;
    }
    *out = p;
    return XFER_OK;
}

XFER_API xfer_status_t xfer_prep_create(xfer_agent_t *agent,
                                        const xfer_dlist_t *list,
                                        const char *remote_agent,
                                        xfer_prep_t **prep)
{
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || list == NULL || prep == NULL ||
        (list->count > 0 && list->descs == NULL))
        return xfer__err(XFER_ERR_INVALID, "xfer_prep_create: NULL argument");
    *prep = NULL;
    if (list->count == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_prep_create: empty list");
    xfer__lock(agent);
    st = prep_create(agent, remote_agent, list, prep);
    xfer__unlock(agent);
    return st;
}

XFER_API xfer_status_t xfer_prep_release(xfer_prep_t *prep)
{
    xfer_agent_t *a;

    xfer__err_clear();
    if (prep == NULL)
        return XFER_OK;
    a = prep->agent;
    xfer__lock(a);
    if (prep->refs > 0) {
        unsigned refs = prep->refs;

        xfer__unlock(a);
        return xfer__err(XFER_ERR_BUSY, "prepared list is still used by %u "
                         "request(s)", refs);
    }
    prep_free(prep);
    xfer__unlock(a);
    return XFER_OK;
}

/* ---- requests ---------------------------------------------------------- */

/* Can backend b carry segment i: local region lr, remote region rr? */
static bool fits(const xfer_backend_t *b, const xfer__remote_t *rem,
                 const xfer__region_t *lr, const xfer__rregion_t *rr)
{
    return rem->peer[b->index] != NULL && lr->be_mem[b->index] != NULL &&
           rr->be_rmem[b->index] != NULL;
}

typedef struct req_build {
    xfer_agent_t *agent;
    xfer_op_t op;
    xfer__remote_t *remote;
    size_t n;
    xfer__region_t **lr;
    xfer__rregion_t **rr;
    xfer_be_seg_t *segs;
} req_build_t;

/* The first backend (in the order they were added) that can carry every
 * segment, or the pinned one if it can. */
static xfer_status_t choose_backend(req_build_t *rb, xfer_backend_t *pin,
                                    xfer_backend_t **out)
{
    xfer_agent_t *a = rb->agent;
    unsigned cap = rb->op == XFER_OP_READ ? XFER_CAP_READ : XFER_CAP_WRITE;
    unsigned nb = xfer__nbackends(a);

    for (unsigned j = 0; j < nb; j++) {
        xfer_backend_t *b = a->backends[j];
        size_t i;

        if (pin != NULL && b != pin)
            continue;
        if (!(b->ops->hdr.caps & cap)) {
            if (pin != NULL)
                return xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s cannot "
                                 "%s", b->name, op_name(rb->op));
            continue;
        }
        for (i = 0; i < rb->n; i++)
            if (!fits(b, rb->remote, rb->lr[i], rb->rr[i]))
                break;
        if (i == rb->n) {
            *out = b;
            return XFER_OK;
        }
        if (pin != NULL) {
            if (rb->remote->peer[b->index] == NULL)
                return xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s has no "
                                 "connection to agent '%s'", b->name,
                                 rb->remote->name);
            return xfer__err(XFER_ERR_NOT_SUPPORTED, "descriptor %zu is not "
                             "registered with backend %s on both sides", i,
                             b->name);
        }
    }
    if (pin != NULL)
        return xfer__err(XFER_ERR_INVALID, "pinned backend belongs to another "
                         "agent");
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "no backend of agent '%s' can %s "
                     "all descriptors to agent '%s' (no shared backend with "
                     "both sides registered)", a->name, op_name(rb->op),
                     rb->remote->name);
}

static void req_unlink(xfer_req_t *r)
{
    xfer_agent_t *a = r->agent;

    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        a->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
}

/* Release everything a request holds; the backend request is gone. */
static void req_free(xfer_req_t *r)
{
    xfer__stats_forget(r);
    if (r->lregions != NULL)
        for (size_t i = 0; i < r->nseg; i++)
            r->lregions[i]->refs--;
    if (r->lprep != NULL)
        r->lprep->refs--;
    if (r->rprep != NULL)
        r->rprep->refs--;
    xfer__remote_unref(r->remote);
    req_unlink(r);
    free(r->lregions);
    free(r->segs);
    free(r->notif);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static xfer_status_t req_finish(req_build_t *rb, const xfer_req_opts_t *opts,
                                bool hold_lregions, xfer_req_t **out)
{
    xfer_agent_t *a = rb->agent;
    xfer_backend_t *b = NULL;
    xfer_req_t *r;
    xfer_status_t st;

    if (opts->notif_len > XFER_NOTIF_MAX)
        return xfer__err(XFER_ERR_INVALID, "notification of %zu bytes exceeds "
                         "%u", opts->notif_len, XFER_NOTIF_MAX);
    if (opts->notif_len > 0 && opts->notif == NULL)
        return xfer__err(XFER_ERR_INVALID, "notification length without data");
    /* The peer's metadata says what it lets us do: refuse here what its
     * target would refuse (on a hardware backend, at the cost of the
     * connection). */
    for (size_t i = 0; i < rb->n; i++) {
        unsigned need = rb->op == XFER_OP_READ ? XFER_ACCESS_READ
                                               : XFER_ACCESS_WRITE;
        unsigned has = rb->rr[i]->access ? rb->rr[i]->access : XFER_ACCESS_RW;

        if (!(has & need))
            return xfer__err(XFER_ERR_ACCESS, "remote descriptor %zu lies in "
                             "a region agent '%s' allows peers %s, not %s", i,
                             rb->remote->name, xfer__access_name(has),
                             xfer__access_name(need));
    }
    st = choose_backend(rb, opts->backend, &b);
    if (st != XFER_OK)
        return st;
    if (opts->notif != NULL && !(b->ops->hdr.caps & XFER_CAP_NOTIF))
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s cannot carry "
                         "notifications", b->name);
    if (opts->timeout_ms > 0 && !XFER__HAS_OP(b->ops, req_cancel))
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s cannot cancel "
                         "requests, so a request timeout cannot be kept",
                         b->name);
    for (size_t i = 0; i < rb->n; i++) {
        rb->segs[i].lmem = rb->lr[i]->be_mem[b->index];
        rb->segs[i].rmem = rb->rr[i]->be_rmem[b->index];
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    if (opts->notif != NULL) {
        r->notif = malloc(opts->notif_len ? opts->notif_len : 1);
        if (r->notif == NULL) {
            free(r);
            return xfer__err(XFER_ERR_NOMEM, "out of memory");
        }
        memcpy(r->notif, opts->notif, opts->notif_len);
        r->notif_len = opts->notif_len;
    }
    xfer__be_enter(b);
    st = b->ops->req_create(b->be, rb->op, rb->remote->peer[b->index],
                            rb->segs, rb->n, &r->breq);
    xfer__be_leave(b);
    if (st != XFER_OK) {
        if (!xfer__err_isset())
            xfer__err(st, "backend %s could not create the request", b->name);
        free(r->notif);
        free(r);
        return st;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->agent = a;
    r->op = rb->op;
    r->backend = b;
    r->timeout_ms = opts->timeout_ms;
    r->remote = rb->remote;
    xfer__remote_ref(r->remote);
    r->nseg = rb->n;
    r->segs = rb->segs;
    rb->segs = NULL;
    for (size_t i = 0; i < r->nseg; i++)
        r->bytes += r->segs[i].len;
    if (hold_lregions) {
        for (size_t i = 0; i < rb->n; i++)
            rb->lr[i]->refs++;
        r->lregions = rb->lr;
        rb->lr = NULL;
    }
    r->state = XFER_ERR_INVALID; /* never posted */
    r->next = a->reqs;
    if (a->reqs != NULL)
        a->reqs->prev = r;
    a->reqs = r;
    *out = r;
    return XFER_OK;
}

static xfer_status_t rb_alloc(req_build_t *rb, size_t n)
{
    rb->n = n;
    rb->lr = calloc(n, sizeof(*rb->lr));
    rb->rr = calloc(n, sizeof(*rb->rr));
    rb->segs = calloc(n, sizeof(*rb->segs));
    if (rb->lr == NULL || rb->rr == NULL || rb->segs == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    return XFER_OK;
}

static void rb_free(req_build_t *rb)
{
    free(rb->lr);
    free(rb->rr);
    free(rb->segs);
}

static xfer_status_t check_op(xfer_op_t op)
{
    if (op != XFER_OP_READ && op != XFER_OP_WRITE)
        return xfer__err(XFER_ERR_INVALID, "unknown operation %d", (int)op);
    return XFER_OK;
}

XFER_API xfer_status_t xfer_req_create(xfer_agent_t *agent, xfer_op_t op,
                                       const xfer_dlist_t *local,
                                       const xfer_dlist_t *remote,
                                       const char *remote_agent,
                                       const xfer_req_opts_t *opts,
                                       xfer_req_t **req)
{
    req_build_t rb = {.agent = agent, .op = op};
    xfer_req_opts_t o;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || local == NULL || remote == NULL || req == NULL ||
        remote_agent == NULL || (local->count && local->descs == NULL) ||
        (remote->count && remote->descs == NULL))
        return xfer__err(XFER_ERR_INVALID, "xfer_req_create: NULL argument");
    *req = NULL;
    if ((st = check_op(op)) != XFER_OK)
        return st;
    if (local->count == 0 || local->count != remote->count)
        return xfer__err(XFER_ERR_INVALID, "local and remote lists must have "
                         "the same, non-zero, number of descriptors (%zu vs "
                         "%zu)", local->count, remote->count);
    read_opts(opts, &o);

    xfer__lock(agent);
    st = find_remote(agent, remote_agent, &rb.remote);
    if (st == XFER_OK)
        st = rb_alloc(&rb, local->count);
    for (size_t i = 0; st == XFER_OK && i < local->count; i++) {
        const xfer_desc_t *ld = &local->descs[i], *rd = &remote->descs[i];

        if (ld->len != rd->len) {
            st = xfer__err(XFER_ERR_INVALID, "descriptor %zu: local length %zu "
                           "differs from remote length %zu", i, ld->len,
                           rd->len);
            break;
        }
        st = lookup_local(agent, ld, local->type, i, &rb.lr[i]);
        if (st == XFER_OK)
            st = lookup_remote(rb.remote, rd, remote->type, i, &rb.rr[i]);
        rb.segs[i].laddr = ld->addr;
        rb.segs[i].raddr = rd->addr;
        rb.segs[i].len = ld->len;
    }
    if (st == XFER_OK)
        st = req_finish(&rb, &o, true, req);
    xfer__unlock(agent);
    rb_free(&rb);
    return st;
}

XFER_API xfer_status_t xfer_req_create_prepped(
    xfer_agent_t *agent, xfer_op_t op, xfer_prep_t *local, const size_t *lidx,
    xfer_prep_t *remote, const size_t *ridx, size_t count,
    const xfer_req_opts_t *opts, xfer_req_t **req)
{
    req_build_t rb = {.agent = agent, .op = op};
    xfer_req_opts_t o;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || local == NULL || remote == NULL || lidx == NULL ||
        ridx == NULL || req == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_create_prepped: NULL "
                         "argument");
    *req = NULL;
    if ((st = check_op(op)) != XFER_OK)
        return st;
    if (count == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_create_prepped: no "
                         "descriptors");
    if (local->agent != agent || remote->agent != agent ||
        local->remote != NULL || remote->remote == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_create_prepped: local "
                         "must be a local list and remote a remote one, both "
                         "of this agent");
    read_opts(opts, &o);

    xfer__lock(agent);
    rb.remote = remote->remote;
    if (rb.remote->dead)
        st = xfer__err(XFER_ERR_REMOTE_DISCONNECT, "remote agent '%s' is gone: "
                       "%s", rb.remote->name, rb.remote->dead_why);
    if (st == XFER_OK)
        st = rb_alloc(&rb, count);
    for (size_t i = 0; st == XFER_OK && i < count; i++) {
        const xfer__prep_ent_t *le, *re;

        if (lidx[i] >= local->count || ridx[i] >= remote->count) {
            st = xfer__err(XFER_ERR_INVALID, "index pair %zu (%zu, %zu) is out "
                           "of the lists' range (%zu, %zu)", i, lidx[i],
                           ridx[i], local->count, remote->count);
            break;
        }
        le = &local->ents[lidx[i]];
        re = &remote->ents[ridx[i]];
        if (le->len != re->len) {
            st = xfer__err(XFER_ERR_INVALID, "descriptor %zu: local length %zu "
                           "differs from remote length %zu", i, le->len,
                           re->len);
            break;
        }
        rb.lr[i] = le->region;
        rb.rr[i] = re->region;
        rb.segs[i].laddr = (uintptr_t)le->addr;
        rb.segs[i].raddr = re->addr;
        rb.segs[i].len = le->len;
    }
    if (st == XFER_OK)
        st = req_finish(&rb, &o, false, req);
    if (st == XFER_OK) {
        (*req)->lprep = local;
        (*req)->rprep = remote;
        local->refs++;
        remote->refs++;
    }
    xfer__unlock(agent);
    rb_free(&rb);
    return st;
}

static xfer_status_t be_check(xfer_req_t *r)
{
    xfer_backend_t *b = r->backend;
    xfer_status_t st;

    xfer__be_enter(b);
    st = b->ops->req_check(b->be, r->breq);
    xfer__be_leave(b);
    return st;
}

static xfer_status_t be_cancel(xfer_req_t *r)
{
    xfer_backend_t *b = r->backend;
    xfer_status_t st;

    if (!XFER__HAS_OP(b->ops, req_cancel))
        return XFER_ERR_NOT_SUPPORTED;
    xfer__be_enter(b);
    st = b->ops->req_cancel(b->be, r->breq);
    xfer__be_leave(b);
    return st;
}

/* The sentence of a request's final state, for the caller's thread. */
static void req_sentence(xfer_req_t *r)
{
    if (r->state >= 0 || xfer__err_isset())
        return;
    if (!r->posted)
        xfer__err(r->state, "the request was never posted");
    else if (r->timed_out && r->state == XFER_ERR_TIMEOUT)
        xfer__err(r->state, "%s to agent '%s' did not complete within its "
                  "timeout of %u ms", op_name(r->op), r->remote->name,
                  r->timeout_ms);
    else
        xfer__err(r->state, "%s to agent '%s' failed: %s", op_name(r->op),
                  r->remote->name, xfer_strerror(r->state));
}

/* A post accepted IN_PROG has just ended in r->state: counted, and a
 * failure told to the event plane with its sentence (which the caller's
 * thread then keeps).  Request lock held. */
static void req_ended(xfer_req_t *r)
{
    if (!r->counted)
        return;
    xfer__stats_end(r, r->state);
    /* A cancel the user asked for is counted, not reported. */
    if (r->state < 0 && r->state != XFER_ERR_CANCELED) {
        req_sentence(r);
        xfer__ev_failure(r->agent, r->backend, r->remote->name, r->op,
                         r->state, xfer_last_error());
    }
}

/* Refresh r->state from the backend, and keep the request's own
 * deadline; request lock held.  At its deadline a request ends with
 * XFER_ERR_TIMEOUT, also when the backend must first finish what is on
 * the wire before its cancel takes (a stream to a stopped peer): that
 * could take as long as the peer stays silent, which is what the
 * timeout bounds.  Until the backend is done, deadline_us stays set and
 * req_busy() keeps the backend request from being posted or released. */
static xfer_status_t req_poll(xfer_req_t *r)
{
    if (r->timed_out && r->deadline_us != 0) {
        if (be_check(r) != XFER_IN_PROG)
            r->deadline_us = 0;
        return r->state;
    }
    if (r->state != XFER_IN_PROG)
        return r->state;
    r->state = be_check(r);
    if (r->state == XFER_IN_PROG && r->deadline_us != 0 && !r->timed_out &&
        xfer__now_us() >= r->deadline_us) {
        r->timed_out = true;
        r->state = XFER_ERR_TIMEOUT;
        if (be_cancel(r) != XFER_IN_PROG)
            r->deadline_us = 0;
    }
    if (r->state != XFER_IN_PROG)
        req_ended(r);
    return r->state;
}

/* Whether the backend holds the request, as last seen: under way, or
 * timed out and still being cancelled.  Request lock held. */
static bool req_holds(const xfer_req_t *r)
{
    return r->state == XFER_IN_PROG || (r->timed_out && r->deadline_us != 0);
}

/* The same, looked at again now.  Request lock held. */
static bool req_busy(xfer_req_t *r)
{
    return req_poll(r) == XFER_IN_PROG ||
           (r->timed_out && r->deadline_us != 0);
}

/* Wake the progress thread for a backend it polls: it may sleep armed
 * with nothing pending, and this call gave it something.  Without a
 * thread, the user's loop sleeping on the agent's event fd is woken. */
static void poke(xfer_agent_t *a, xfer_backend_t *b)
{
    if (b->polled && (!a->progress_thread || atomic_load(&a->sleeping)))
        xfer__agent_wake(a);
}

XFER_API const char xfer_notif_none[1] = {0};

XFER_API xfer_status_t xfer_req_post(xfer_req_t *req, const void *notif,
                                     size_t notif_len)
{
    xfer_backend_t *b;
    xfer_status_t st;
    bool telemetry;

    xfer__err_clear();
    if (req == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_post: NULL request");
    b = req->backend;
    telemetry = req->agent->st.on;
    if (notif == XFER_NOTIF_NONE) {
        notif = NULL;
        notif_len = 0;
    } else if (notif == NULL) {
        notif = req->notif;
        notif_len = req->notif_len;
    } else if (notif_len > XFER_NOTIF_MAX) {
        return xfer__err(XFER_ERR_INVALID, "notification of %zu bytes exceeds "
                         "%u", notif_len, XFER_NOTIF_MAX);
    }
    pthread_mutex_lock(&req->lock);
    if (req_busy(req)) {
        bool cancelling = req->state != XFER_IN_PROG;

        pthread_mutex_unlock(&req->lock);
        if (cancelling)
            return xfer__err(XFER_ERR_BUSY, "request timed out, and its "
                             "backend still finishes what is on the wire; "
                             "post again once xfer_req_cancel answers "
                             "XFER_OK");
        return xfer__err(XFER_ERR_BUSY, "request is still in progress; wait "
                         "for it before posting again");
    }
    xfer__err_clear();
    req->posted = true;
    req->timed_out = false;
    if (atomic_load(&req->remote->dead)) {
        st = xfer__err(XFER_ERR_REMOTE_DISCONNECT, "remote agent '%s' is gone: "
                       "%s", req->remote->name, req->remote->dead_why);
    } else if (notif != NULL && !(b->ops->hdr.caps & XFER_CAP_NOTIF)) {
        st = xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s cannot carry "
                       "notifications", b->name);
    } else {
        uint64_t now = req->timeout_ms || telemetry ? xfer__now_us() : 0;

        req->deadline_us = req->timeout_ms ? now + req->timeout_ms * 1000ull
                                           : 0;
        req->post_us = now;
        xfer__be_enter(b);
        st = b->ops->req_post(b->be, req->breq, notif, notif_len);
        xfer__be_leave(b);
        if (st < 0 && !xfer__err_isset())
            xfer__err(st, "%s to agent '%s' failed: %s", op_name(req->op),
                      req->remote->name, xfer_strerror(st));
        if (st == XFER_IN_PROG)
            poke(req->agent, b);
    }
    req->state = st;
    /* Telemetry and the event plane (core/stats.h, core/events.h). */
    if (telemetry)
        xfer__stats_post(req, st, notif != NULL, notif_len);
    if (st < 0)
        xfer__ev_failure(req->agent, b, req->remote->name, req->op, st,
                         xfer_last_error());
    pthread_mutex_unlock(&req->lock);
    return st;
}

XFER_API xfer_status_t xfer_req_status(xfer_req_t *req)
{
    xfer_agent_t *a;
    xfer_status_t st;

    xfer__err_clear();
    if (req == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_status: NULL request");
    a = req->agent;
    pthread_mutex_lock(&req->lock);
    /* Without a thread, the caller drives progress while the backend
     * still holds the request (also while a timed-out one is cancelled). */
    if (!a->progress_thread && req_holds(req))
        xfer__progress_all(a);
    st = req_poll(req);
    req_sentence(req);
    pthread_mutex_unlock(&req->lock);
    return st;
}

/* Sleep until the agent may have progressed, at most until deadline_us:
 * on the progress thread's word, or, without one, on the agent's event
 * fd once every backend is armed. */
static void wait_progress(xfer_agent_t *a, uint64_t deadline_us)
{
    uint64_t now = xfer__now_us();
    int ms;

    if (now >= deadline_us)
        return;
    ms = (int)((deadline_us - now + 999) / 1000);
    if (a->progress_thread) {
        /* Bounded slices: a broadcast is only a hint, the status is the
         * truth, and it is looked at again after every slice. */
        struct timespec ts;

        if (ms > 10)
            ms = 10;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&a->done_cond, &a->done_lock, &ts);
    } else {
        struct pollfd p = {.fd = a->epfd, .events = POLLIN};

        if (!xfer__arm_all(a, &ms))
            return;
        poll(&p, 1, ms);
    }
}

XFER_API xfer_status_t xfer_req_wait(xfer_req_t *req, unsigned timeout_ms)
{
    xfer_agent_t *a;
    uint64_t deadline;
    xfer_status_t st;

    xfer__err_clear();
    if (req == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_wait: NULL request");
    a = req->agent;
    deadline = xfer__now_us() + timeout_ms * 1000ull;
    atomic_fetch_add(&a->waiters, 1);
    if (a->progress_thread)
        pthread_mutex_lock(&a->done_lock);
    for (;;) {
        pthread_mutex_lock(&req->lock);
        /* Without a thread, the caller drives progress while the backend
     * still holds the request (also while a timed-out one is cancelled). */
    if (!a->progress_thread && req_holds(req))
            xfer__progress_all(a);
        st = req_poll(req);
        req_sentence(req);
        pthread_mutex_unlock(&req->lock);
        if (st != XFER_IN_PROG || xfer__now_us() >= deadline)
            break;
        wait_progress(a, deadline);
    }
    if (a->progress_thread)
        pthread_mutex_unlock(&a->done_lock);
    atomic_fetch_sub(&a->waiters, 1);
    return st;
}

XFER_API xfer_status_t xfer_req_cancel(xfer_req_t *req)
{
    xfer_status_t st = XFER_OK;

    xfer__err_clear();
    if (req == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_req_cancel: NULL request");
    pthread_mutex_lock(&req->lock);
    /* Without a thread, the caller drives progress while the backend
     * holds the request: polling cancel after a timeout must get it
     * back, as polling status does. */
    if (!req->agent->progress_thread && req_holds(req))
        xfer__progress_all(req->agent);
    if (req_poll(req) == XFER_IN_PROG) {
        st = be_cancel(req);
        if (st == XFER_ERR_NOT_SUPPORTED)
            st = xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s cannot cancel "
                           "requests", req->backend->name);
        if (st == XFER_OK) {
            req->state = XFER_ERR_CANCELED;
            req_ended(req);
        }
    } else if (req->timed_out && req->deadline_us != 0) {
        /* Ended by its own timeout, but the backend still finishes what
         * is on the wire (a stream to a stopped peer): the request can
         * be posted or released once this answers XFER_OK. */
        st = XFER_IN_PROG;
    }
    pthread_mutex_unlock(&req->lock);
    return st;
}

XFER_API xfer_status_t xfer_req_release(xfer_req_t *req)
{
    xfer_agent_t *a;
    xfer_backend_t *b;

    xfer__err_clear();
    if (req == NULL)
        return XFER_OK;
    a = req->agent;
    b = req->backend;
    pthread_mutex_lock(&req->lock);
    if (req_busy(req) && be_cancel(req) != XFER_OK) {
        pthread_mutex_unlock(&req->lock);
        return xfer__err(XFER_ERR_BUSY, "request is still in progress and "
                         "could not be cancelled at once; poll its status "
                         "and release it later");
    }
    xfer__be_enter(b);
    b->ops->req_release(b->be, req->breq);
    xfer__be_leave(b);
    pthread_mutex_unlock(&req->lock);
    xfer__lock(a);
    req_free(req);
    xfer__unlock(a);
    return XFER_OK;
}

XFER_API xfer_backend_t *xfer_req_backend(const xfer_req_t *req)
{
    return req ? req->backend : NULL;
}

void xfer__req_destroy_all(xfer_agent_t *a)
{
    /* Remotes are already gone, so no request is still on the wire, and
     * no other thread runs in the agent. */
    while (a->reqs != NULL) {
        xfer_req_t *r = a->reqs;
        xfer_backend_t *b = r->backend;

        if (req_busy(r))
            be_cancel(r);
        xfer__be_enter(b);
        b->ops->req_release(b->be, r->breq);
        xfer__be_leave(b);
        req_free(r);
    }
    while (a->preps != NULL) {
        a->preps->refs = 0;
        prep_free(a->preps);
    }
}
