/* remote.c - remote agents: what we know of a peer from its metadata,
 * kept alive by the requests that use it after it is invalidated. */
#include <stdlib.h>
#include <string.h>

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

static void remote_free(xfer__remote_t *r)
{
    xfer_agent_t *a = r->agent;

    for (size_t i = 0; i < r->regions.count; i++) {
        xfer__rregion_t *rr = (xfer__rregion_t *)r->regions.by_addr[i];

        for (unsigned j = 0; j < a->nbackends; j++)
            if (rr->be_rmem[j] != NULL)
                a->backends[j]->ops->rmem_release(a->backends[j]->be,
                                                  rr->be_rmem[j]);
        free(rr);
    }
    xfer__reg_fini(&r->regions);
    free(r->name);
    free(r);
}

void xfer__remote_unref(xfer__remote_t *r)
{
    if (--r->refs == 0)
        remote_free(r);
}

void xfer__remote_kill(xfer__remote_t *r, const char *why)
{
    xfer_agent_t *a = r->agent;
    xfer__remote_t **pp;

    if (r->dead)
        return;
    r->dead = true;
    r->dead_why = why;
    for (unsigned j = 0; j < a->nbackends; j++) {
        if (r->peer[j] != NULL) {
            a->backends[j]->ops->peer_remove(a->backends[j]->be, r->peer[j]);
            r->peer[j] = NULL;
        }
    }
    for (pp = &a->remotes; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    r->next = NULL;
    xfer__remote_unref(r); /* the agent's own reference */
}

XFER_API xfer_status_t xfer_md_invalidate(xfer_agent_t *agent, const char *name)
{
    xfer__remote_t *r;

    xfer__err_clear();
    if (agent == NULL || name == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_invalidate: NULL argument");
    xfer__lock(agent);
    r = xfer__remote_find(agent, name);
    if (r == NULL) {
        xfer__unlock(agent);
        return xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded",
                         name);
    }
    xfer__remote_kill(r, "its metadata was invalidated");
    xfer__unlock(agent);
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
    r = xfer__remote_find(agent, name);
    if (r == NULL) {
        st = xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded",
                       name);
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
