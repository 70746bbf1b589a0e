/* remote.c - remote agents: what we know of a peer from its metadata,
 * kept alive by the requests that use it after it is invalidated. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base64.h"
#include "core/events.h"
#include "core/internal.h"

xfer__remote_t *xfer__remote_find(xfer_agent_t *a, const char *name)
{
    for (xfer__remote_t *r = a->remotes; r != NULL; r = r->next)
        if (strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

void xfer__remote_ref(xfer__remote_t *r)
{
    r->refs++;
}

void xfer__rregion_free(xfer_agent_t *a, xfer__rregion_t *rr)
{
    for (unsigned j = 0; j < xfer__nbackends(a); j++) {
        xfer_backend_t *b = a->backends[j];

        if (rr->be_rmem[j] == NULL)
            continue;
        xfer__be_enter(b);
        b->ops->rmem_release(b->be, rr->be_rmem[j]);
        xfer__be_leave(b);
    }
    json_decref(rr->pub);
    free(rr);
}

void xfer__remote_free(xfer__remote_t *r)
{
    for (size_t i = 0; i < r->regions.count; i++)
        xfer__rregion_free(r->agent,
                           (xfer__rregion_t *)r->regions.by_addr[i]);
    xfer__reg_fini(&r->regions);
    json_decref(r->conn);
    xfer__stats_drop(r->agent, r->stats);
    free(r->name);
    free(r);
}

void xfer__remote_unref(xfer__remote_t *r)
{
    if (--r->refs == 0)
        xfer__remote_free(r);
}

bool xfer__remote_put(xfer__remote_t *r)
{
    return --r->refs == 0;
}

void xfer__remote_kill(xfer__remote_t *r, const char *why)
{
    xfer_agent_t *a = r->agent;
    xfer__remote_t **pp;

    if (r->dead)
        return;
    r->dead_why = why;
    atomic_store(&r->dead, true);
    /* A newer epoch says "replaced" itself (metadata.c). */
    if (why != xfer__why_replaced)
        xfer__ev_remote(a, XFER__EV_REMOTE_INVALIDATED, r->name, r->epoch, 0,
                        why);
    for (unsigned j = 0; j < xfer__nbackends(a); j++) {
        xfer_backend_t *b = a->backends[j];
        xfer_be_peer_t *p = r->peer[j];

        if (p == NULL)
            continue;
        r->peer[j] = NULL;
        xfer__be_enter(b);
        b->ops->peer_remove(b->be, p);
        xfer__be_leave(b);
    }
    for (pp = &a->remotes; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            a->nremotes--;
            if (r->open) {
                a->open_nremotes--;
                a->open_nregions -= r->open_regions;
            }
            break;
        }
    }
    r->next = NULL;
    xfer__remote_unref(r); /* the agent's own reference */
}

xfer__remote_t *xfer__remote_evict(xfer__remote_t *r, const char *why)
{
    xfer__remote_ref(r);
    xfer__remote_kill(r, why);
    return xfer__remote_put(r) ? r : NULL;
}

/* Drop plugin's entry from a kept object; the object goes with its last
 * entry. */
static void kept_drop(json_t **kept, const char *plugin)
{
    json_object_del(*kept, plugin);
    if (json_object_size(*kept) == 0) {
        json_decref(*kept);
        *kept = NULL;
    }
}

static xfer_status_t remote_connect(xfer__remote_t *r, unsigned j)
{
    xfer_backend_t *b = r->agent->backends[j];
    json_t *v = r->conn ? json_object_get(r->conn, b->name) : NULL;
    unsigned char buf[XFER_BE_BLOB_MAX];
    xfer_status_t st;
    long n;

    if (v == NULL)
        return XFER_OK;
    if (r->peer[j] == NULL) {
        /* Checked when the metadata was parsed. */
        n = xfer__b64_decode(json_string_value(v), buf, sizeof(buf));
        if (n < 0)
            return xfer__err(XFER_ERR_INVALID, "agent '%s': connection info "
                             "for %s is not base64", r->name, b->name);
        xfer__be_enter(b);
        st = b->ops->peer_add(b->be, r->name, r->epoch, buf, (size_t)n,
                              &r->peer[j]);
        xfer__be_leave(b);
        if (st != XFER_OK) {
            r->peer[j] = NULL;
            return xfer__err_prefix(st, "agent '%s', backend %s", r->name,
                                    b->name);
        }
    }
    kept_drop(&r->conn, b->name);
    return XFER_OK;
}

xfer_status_t xfer__rregion_unpack(xfer__remote_t *r, xfer__rregion_t *rr,
                                   unsigned j, bool shared)
{
    xfer_agent_t *a = r->agent;
    xfer_backend_t *b = a->backends[j];
    json_t *v = rr->pub ? json_object_get(rr->pub, b->name) : NULL;
    xfer_be_rregion_t desc = {
        .addr = rr->range.addr,
        .len = rr->range.len,
        .type = rr->type,
        .dev = rr->dev,
        .key = rr->range.key,
    };
    unsigned char buf[XFER_BE_BLOB_MAX];
    xfer_be_peer_t *peer;
    xfer_status_t st;
    long n;

    if (v == NULL)
        return XFER_OK; /* nothing to do */
    if (rr->be_rmem[j] != NULL) {
        kept_drop(&rr->pub, b->name);
        return XFER_OK;
    }
    if (!shared && r->peer[j] == NULL)
        return XFER_OK; /* not yet */
    /* Checked when the metadata was parsed. */
    n = xfer__b64_decode(json_string_value(v), buf, sizeof(buf));
    if (n < 0)
        return xfer__err(XFER_ERR_INVALID, "region key 0x%016" PRIx64
                         ": public part for %s is not base64",
                         rr->range.key, b->name);
    if (shared) {
        xfer__lock(a);
        if (r->dead) {
            xfer__unlock(a);
            return xfer__err(XFER_ERR_REMOTE_DISCONNECT, "remote agent '%s' "
                             "went away while its metadata loaded: %s",
                             r->name, r->dead_why);
        }
        peer = r->peer[j];
        if (peer == NULL) {
            xfer__unlock(a);
            return XFER_OK; /* not yet */
        }
        /* With b entered the peer cannot be removed until we leave. */
        xfer__be_enter_from_lock(a, b);
    } else {
        peer = r->peer[j];
        xfer__be_enter(b);
    }
    st = b->ops->rmem_unpack(b->be, peer, &desc, buf, (size_t)n,
                             &rr->be_rmem[j]);
    if (shared)
        xfer__be_leave_from_lock(a, b);
    else
        xfer__be_leave(b);
    if (st != XFER_OK) {
        rr->be_rmem[j] = NULL;
        if (!xfer__err_isset())
            xfer__err(st, "backend %s refused region key 0x%016" PRIx64
                      " of agent '%s'", b->name, rr->range.key, r->name);
        return st;
    }
    kept_drop(&rr->pub, b->name);
    return XFER_OK;
}

xfer_status_t xfer__remote_reach(xfer__remote_t *r, unsigned j)
{
    bool was = r->peer[j] != NULL;
    xfer_status_t st = remote_connect(r, j);

    if (st != XFER_OK || was || r->peer[j] == NULL)
        return st;
    /* Newly connected: the regions known so far may now be unpacked. */
    for (size_t i = 0; st == XFER_OK && i < r->regions.count; i++)
        st = xfer__rregion_unpack(r, (xfer__rregion_t *)r->regions.by_addr[i],
                                  j, false);
    return st;
}

void xfer__remote_backfill(xfer_agent_t *a, xfer_backend_t *b)
{
    for (xfer__remote_t *r = a->remotes; r != NULL; r = r->next) {
        if (xfer__remote_reach(r, b->index) != XFER_OK) {
            /* The backend stays: other peers may use it, and requests to
             * this one say which region is not reachable over it. */
            xfer__log(XFER_LOG_WARN, b->name, "agent %s: remote agent '%s' "
                      "is not reachable over the new backend: %s", a->name,
                      r->name, xfer_last_error());
            xfer__err_clear();
        }
    }
}

/* The remote agent a public call names, or NULL with the sentence set
 * (agent lock held). */
static xfer__remote_t *remote_named(xfer_agent_t *a, const char *name)
{
    xfer__remote_t *r = xfer__remote_find(a, name);

    if (r == NULL)
        xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded", name);
    return r;
}

bool xfer__remote_invalidate(xfer_agent_t *a, const char *name,
                             const char *why)
{
    xfer__remote_t *r, *gone = NULL;

    xfer__lock(a);
    r = xfer__remote_find(a, name);
    if (r != NULL)
        gone = xfer__remote_evict(r, why);
    xfer__unlock(a);
    /* A peer's tables can be large: freed without the lock. */
    if (gone != NULL)
        xfer__remote_free(gone);
    return r != NULL;
}

XFER_API xfer_status_t xfer_md_invalidate(xfer_agent_t *agent, const char *name)
{
    xfer__err_clear();
    if (agent == NULL || name == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_invalidate: NULL argument");
    if (!xfer__remote_invalidate(agent, name, "its metadata was invalidated"))
        return xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded",
                         name);
    return XFER_OK;
}

XFER_API xfer_status_t xfer_md_check(xfer_agent_t *agent, const char *name)
{
    xfer__remote_t *r;
    xfer_status_t st = XFER_OK;

    xfer__err_clear();
    if (agent == NULL || name == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_check: NULL argument");
    xfer__lock(agent);
    r = remote_named(agent, name);
    if (r == NULL) {
        st = XFER_ERR_NOT_FOUND;
    } else {
        unsigned j;

        for (j = 0; j < agent->nbackends; j++)
            if (r->peer[j] != NULL)
                break;
        if (j == agent->nbackends)
            st = xfer__err(XFER_ERR_NOT_SUPPORTED, "remote agent '%s' shares "
                           "no backend with agent '%s'", name, agent->name);
    }
    xfer__unlock(agent);
    return st;
}

XFER_API xfer_status_t xfer_md_regions(xfer_agent_t *agent,
                                       const char *remote_agent,
                                       xfer_region_info_t *regions,
                                       size_t max, size_t *count)
{
    xfer__remote_t *r;

    xfer__err_clear();
    if (agent == NULL || remote_agent == NULL || count == NULL ||
        (max > 0 && regions == NULL))
        return xfer__err(XFER_ERR_INVALID, "xfer_md_regions: NULL argument");
    *count = 0;
    xfer__lock(agent);
    r = remote_named(agent, remote_agent);
    if (r == NULL) {
        xfer__unlock(agent);
        return XFER_ERR_NOT_FOUND;
    }
    *count = r->regions.count;
    for (size_t i = 0; i < r->regions.count && i < max; i++) {
        const xfer__rregion_t *rr =
            (const xfer__rregion_t *)r->regions.by_addr[i];

        regions[i] = (xfer_region_info_t){
            .addr = (uintptr_t)rr->range.addr,
            .len = (size_t)rr->range.len,
            .type = rr->type,
            .dev = rr->dev,
            .access = rr->access,
        };
    }
    xfer__unlock(agent);
    return XFER_OK;
}

/* One backend's attempt to connect to a remote agent now. */
static xfer_status_t connect_one(xfer_agent_t *a, const char *name,
                                 xfer_backend_t *b)
{
    xfer__remote_t *r;
    xfer_be_peer_t *peer;
    xfer_status_t st;

    xfer__lock(a);
    r = xfer__remote_find(a, name);
    if (r == NULL || r->peer[b->index] == NULL) {
        xfer__unlock(a);
        return xfer__err(XFER_ERR_REMOTE_DISCONNECT, "remote agent '%s' was "
                         "invalidated while connecting", name);
    }
    peer = r->peer[b->index];
    xfer__be_enter_from_lock(a, b);
    st = b->ops->peer_connect(b->be, peer);
    xfer__be_leave_from_lock(a, b);
    if (st < 0)
        xfer__err_prefix(st, "backend %s could not connect to agent '%s'",
                         b->name, name);
    return st;
}

XFER_API xfer_status_t xfer_md_connect(xfer_agent_t *agent,
                                       const char *remote_agent,
                                       unsigned timeout_ms)
{
    uint64_t deadline;
    unsigned nb;
    bool pending[XFER__MAX_BACKENDS] = {false};
    bool any = false;

    xfer__err_clear();
    if (agent == NULL || remote_agent == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_connect: NULL argument");
    deadline = xfer__now_us() + (timeout_ms ? timeout_ms : 5000) * 1000ull;
    xfer__lock(agent);
    xfer__remote_t *r = xfer__remote_find(agent, remote_agent);

    nb = xfer__nbackends(agent);
    for (unsigned j = 0; r != NULL && j < nb; j++) {
        pending[j] = r->peer[j] != NULL &&
                     XFER__HAS_OP(agent->backends[j]->ops, peer_connect);
        any = any || r->peer[j] != NULL;
    }
    xfer__unlock(agent);
    if (r == NULL)
        return xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded "
                         "(load its metadata first)", remote_agent);
    if (!any)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "remote agent '%s' shares "
                         "no backend with agent '%s'", remote_agent,
                         agent->name);
    for (;;) {
        bool waiting = false;

        for (unsigned j = 0; j < nb; j++) {
            xfer_status_t st;

            if (!pending[j])
                continue;
            st = connect_one(agent, remote_agent, agent->backends[j]);
            if (st < 0)
                return st;
            pending[j] = st == XFER_IN_PROG;
            waiting = waiting || pending[j];
        }
        if (!waiting)
            return XFER_OK;
        if (xfer__now_us() >= deadline)
            break;
        if (!agent->progress_thread)
            xfer__progress_all(agent);
        else
            xfer__agent_wake(agent);
        {
            struct timespec ts = {0, 200000}; /* 0.2 ms */

            nanosleep(&ts, NULL);
        }
    }
    for (unsigned j = 0; j < nb; j++)
        if (pending[j])
            return xfer__err(XFER_ERR_TIMEOUT, "backend %s did not connect to "
                             "agent '%s' within %u ms",
                             agent->backends[j]->name, remote_agent,
                             timeout_ms ? timeout_ms : 5000);
    return XFER_ERR_TIMEOUT;
}
