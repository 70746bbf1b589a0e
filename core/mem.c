/* mem.c - memory registration: regions, their keys and access rights,
 * and their lifetime in every backend of the agent. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl.h"
#include "core/events.h"
#include "core/internal.h"

XFER_API void xfer_mem_opts_init(xfer_mem_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->size = sizeof(*opts);
    opts->access = XFER_ACCESS_RW;
    opts->publish = 1;
}

const char *xfer__access_name(unsigned access)
{
    switch (access & XFER_ACCESS_RW) {
    case XFER_ACCESS_READ:
        return "READ";
    case XFER_ACCESS_WRITE:
        return "WRITE";
    case XFER_ACCESS_RW:
        return "READ and WRITE";
    default:
        return "nothing";
    }
}

xfer_status_t xfer__region_register_be(xfer_backend_t *b, xfer__region_t *r)
{
    xfer_be_region_t br = {
        .addr = (uintptr_t)r->range.addr,
        .len = (size_t)r->range.len,
        .type = r->type,
        .dev = r->dev,
        .key = r->range.key,
        .access = r->access,
    };
    void *mem = NULL;
    xfer_status_t st;

    if (!(b->ops->hdr.mem_types & XFER_MEMBIT(r->type)))
        return XFER_ERR_NOT_SUPPORTED;
    xfer__be_enter(b);
    st = b->ops->mem_register(b->be, &br, &mem);
    xfer__be_leave(b);
    if (st != XFER_OK) {
        if (!xfer__err_isset())
            xfer__err(st, "backend %s could not register [0x%" PRIx64
                      ", +%" PRIu64 ")", b->name, r->range.addr, r->range.len);
        return st;
    }
    r->be_mem[b->index] = mem;
    return XFER_OK;
}

/* Take m's regions out of the registry and m out of the agent's list:
 * from here on no peer and no new request can reach them.  Lock held. */
static void mem_unlink(xfer_mem_t *m)
{
    xfer_agent_t *a = m->agent;

    pthread_rwlock_wrlock(&a->reg_lock);
    for (size_t i = 0; i < m->count; i++) {
        xfer__region_t *r = &m->regions[i];

        if (r->range.key != 0)
            xfer__reg_remove(&a->regions, &r->range);
        r->ready = false;
    }
    pthread_rwlock_unlock(&a->reg_lock);
    if (m->prev != NULL)
        m->prev->next = m->next;
    else if (a->mems == m)
        a->mems = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
}

/* Deregister every region of an unlinked m from every backend, each under
 * that backend's lock alone, and free it. */
static void mem_release(xfer_mem_t *m)
{
    xfer_agent_t *a = m->agent;
    unsigned nb = xfer__nbackends(a);

    for (size_t i = 0; i < m->count; i++) {
        xfer__region_t *r = &m->regions[i];

        for (unsigned j = 0; j < nb; j++) {
            xfer_backend_t *b = a->backends[j];

            if (r->be_mem[j] == NULL)
                continue;
            xfer__be_enter(b);
            b->ops->mem_deregister(b->be, r->be_mem[j]);
            xfer__be_leave(b);
            r->be_mem[j] = NULL;
        }
    }
    free(m->regions);
    free(m);
}

void xfer__mem_free(xfer_mem_t *m)
{
    xfer_agent_t *a = m->agent;

    xfer__lock(a);
    mem_unlink(m);
    xfer__unlock(a);
    mem_release(m);
}

static xfer_status_t check_desc(const xfer_desc_t *d, size_t i)
{
    if (d->len == 0 || d->addr == 0 || d->addr + d->len < d->addr)
        return xfer__err(XFER_ERR_INVALID, "descriptor %zu: [0x%" PRIxPTR
                         ", +%zu) is not a valid region", i, d->addr, d->len);
    return XFER_OK;
}

/* Give every region a unique random key and put it in the registry, not
 * ready yet (peers and requests do not see it).  Lock held. */
static xfer_status_t mem_insert(xfer_mem_t *m, const xfer_dlist_t *list)
{
    xfer_agent_t *a = m->agent;
    xfer_status_t st = XFER_OK;

    m->next = a->mems;
    if (a->mems != NULL)
        a->mems->prev = m;
    a->mems = m;
    pthread_rwlock_wrlock(&a->reg_lock);
    for (size_t i = 0; i < list->count && st == XFER_OK; i++) {
        xfer__region_t *r = &m->regions[i];
        uint64_t key;

        do {
            st = xfer__random(&key, sizeof(key));
        } while (st == XFER_OK &&
                 (key == 0 || xfer__reg_find_key(&a->regions, key) != NULL));
        if (st != XFER_OK)
            break;
        r->range.key = key;
        st = xfer__reg_insert(&a->regions, &r->range);
        if (st != XFER_OK) {
            r->range.key = 0;
            xfer__err(st, "out of memory");
        }
    }
    pthread_rwlock_unlock(&a->reg_lock);
    return st;
}

/* cfg_lock held: the plugins' mem_register (slow on hardware) runs
 * without the agent lock. */
static xfer_status_t mem_register(xfer_agent_t *a, const xfer_dlist_t *list,
                                  const xfer_mem_opts_t *o, xfer_mem_t **out)
{
    xfer_backend_t *only = o->backend;
    unsigned nb = xfer__nbackends(a);
    xfer_mem_t *m;
    xfer_status_t st;

    if (only != NULL && only->agent != a)
        return xfer__err(XFER_ERR_INVALID, "backend %s belongs to another "
                         "agent", only->name);
    if (only != NULL && !(only->ops->hdr.mem_types & XFER_MEMBIT(list->type)))
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s does not support "
                         "%s memory", only->name,
                         list->type == XFER_MEM_VRAM ? "VRAM" : "DRAM");
    if (only == NULL && nb > 0) {
        /* No backend could move it: refuse rather than keep a region
         * that requests would only trip over. */
        unsigned j = 0;

        while (j < nb &&
               !(a->backends[j]->ops->hdr.mem_types & XFER_MEMBIT(list->type)))
            j++;
        if (j == nb)
            return xfer__err(XFER_ERR_NOT_SUPPORTED, "no backend of agent "
                             "'%s' supports %s memory", a->name,
                             list->type == XFER_MEM_VRAM ? "VRAM" : "DRAM");
    }
    if (o->access == 0 || (o->access & ~XFER_ACCESS_RW) != 0)
        return xfer__err(XFER_ERR_INVALID, "access 0x%x: give XFER_ACCESS_READ, "
                         "XFER_ACCESS_WRITE or both", o->access);
    for (size_t i = 0; i < list->count; i++)
        if ((st = check_desc(&list->descs[i], i)) != XFER_OK)
            return st;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    m->agent = a;
    m->publish = o->publish != 0;
    m->count = list->count;
    m->regions = calloc(list->count, sizeof(*m->regions));
    if (m->regions == NULL) {
        free(m);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < list->count; i++) {
        xfer__region_t *r = &m->regions[i];

        r->range.addr = list->descs[i].addr;
        r->range.len = list->descs[i].len;
        r->type = list->type;
        r->dev = list->descs[i].dev;
        r->owner = m;
        r->access = o->access;
    }
    xfer__lock(a);
    st = mem_insert(m, list);
    xfer__unlock(a);
    if (st != XFER_OK)
        goto fail;

    for (size_t i = 0; i < m->count; i++) {
        for (unsigned j = 0; j < nb; j++) {
            xfer_backend_t *b = a->backends[j];

            if (only != NULL && b != only)
                continue;
            st = xfer__region_register_be(b, &m->regions[i]);
            if (st == XFER_ERR_NOT_SUPPORTED && only == NULL)
                continue;
            if (st != XFER_OK) {
                xfer__err_prefix(st, "descriptor %zu", i);
                goto fail;
            }
        }
    }
    xfer__lock(a);
    pthread_rwlock_wrlock(&a->reg_lock);
    for (size_t i = 0; i < m->count; i++)
        m->regions[i].ready = true;
    pthread_rwlock_unlock(&a->reg_lock);
    xfer__unlock(a);
    *out = m;
    return XFER_OK;

fail:
    xfer__mem_free(m);
    return st;
}

XFER_API xfer_status_t xfer_mem_register(xfer_agent_t *agent,
                                         const xfer_dlist_t *list,
                                         const xfer_mem_opts_t *opts,
                                         xfer_mem_t **mem)
{
    xfer_mem_opts_t o;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || list == NULL || mem == NULL ||
        (list->count > 0 && list->descs == NULL))
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_register: NULL argument");
    *mem = NULL;
    if (list->count == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_register: empty list");
    if (list->type != XFER_MEM_DRAM && list->type != XFER_MEM_VRAM)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_register: unknown "
                         "memory type %d", (int)list->type);
    xfer_mem_opts_init(&o);
    XFER__OPTS_COPY(&o, opts);
    pthread_mutex_lock(&agent->cfg_lock);
    st = mem_register(agent, list, &o, mem);
    pthread_mutex_unlock(&agent->cfg_lock);
    /* etcd holds what the agent publishes: an unpublished registration
     * changes nothing there. */
    if (st == XFER_OK && o.publish) {
        xfer__etcd_changed(agent->etcd);
        xfer__nats_changed(agent->nats);
    }
    return st;
}

XFER_API xfer_status_t xfer_mem_deregister(xfer_agent_t *agent, xfer_mem_t *mem)
{
    bool published;

    xfer__err_clear();
    if (agent == NULL || mem == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_deregister: NULL "
                         "argument");
    if (mem->agent != agent)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_deregister: registration "
                         "belongs to another agent");
    pthread_mutex_lock(&agent->cfg_lock);
    xfer__lock(agent);
    for (size_t i = 0; i < mem->count; i++) {
        if (mem->regions[i].refs > 0) {
            unsigned refs = mem->regions[i].refs;

            xfer__unlock(agent);
            pthread_mutex_unlock(&agent->cfg_lock);
            return xfer__err(XFER_ERR_BUSY, "region %zu [0x%" PRIx64 ", +%"
                             PRIu64 ") is still used by %u request(s) or "
                             "prepared list(s)", i, mem->regions[i].range.addr,
                             mem->regions[i].range.len, refs);
        }
    }
    published = mem->publish;
    mem_unlink(mem);
    xfer__unlock(agent);
    mem_release(mem);
    pthread_mutex_unlock(&agent->cfg_lock);
    if (published) {
        xfer__etcd_changed(agent->etcd);
        xfer__nats_changed(agent->nats);
    }
    return XFER_OK;
}
