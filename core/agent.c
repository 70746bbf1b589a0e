/* agent.c - the agent: its lifetime, its backends and the host table they
 * call back through, memory registration, and the progress engine. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/ctl.h"
#include "core/internal.h"

/* ---- host table ---------------------------------------------------------- */

static void host_log(void *ctx, xfer_log_level_t level, const char *fmt, ...)
{
    xfer_backend_t *b = ctx;
    char who[96];
    va_list ap;

    snprintf(who, sizeof(who), "%s/%s", b->agent->name, b->name);
    va_start(ap, fmt);
    xfer__vlog(level, who, fmt, ap);
    va_end(ap);
}

static xfer_status_t host_error(void *ctx, xfer_status_t status,
                                const char *fmt, ...)
{
    va_list ap;

    (void)ctx;
    va_start(ap, fmt);
    xfer__verr(status, fmt, ap);
    va_end(ap);
    return status;
}

static void host_notif_deliver(void *ctx, const char *from, const void *msg,
                               size_t len)
{
    xfer_backend_t *b = ctx;

    xfer__notif_push(b->agent, from, msg, len);
}

static xfer_status_t host_mem_check(void *ctx, uint64_t key, uint64_t addr,
                                    uint64_t len, unsigned access, void **mem,
                                    char *msg, size_t msg_size)
{
    xfer_backend_t *b = ctx;
    xfer__region_t *r;
    char why[256];

    (void)access; /* every registration allows READ and WRITE by peers */
    *mem = NULL;
    r = (xfer__region_t *)xfer__reg_find_key(&b->agent->regions, key);
    if (r == NULL)
        snprintf(why, sizeof(why), "key 0x%016" PRIx64 " names no "
                 "registration (wrong or deregistered)", key);
    else if (r->be_mem[b->index] == NULL)
        snprintf(why, sizeof(why), "key 0x%016" PRIx64 " is not registered "
                 "with backend %s", key, b->name);
    else if (len == 0 || addr < r->range.addr || addr + len < addr ||
             addr + len > r->range.addr + r->range.len)
        snprintf(why, sizeof(why), "[0x%" PRIx64 ", +%" PRIu64 ") is outside "
                 "registration 0x%016" PRIx64 " [0x%" PRIx64 ", +%" PRIu64 ")",
                 addr, len, key, r->range.addr, r->range.len);
    else {
        *mem = r->be_mem[b->index];
        return XFER_OK;
    }
    xfer__log(XFER_LOG_WARN, b->name, "agent %s refused a remote %s: %s",
              b->agent->name, access & XFER_ACCESS_WRITE ? "write" : "read",
              why);
    if (msg != NULL && msg_size > 0)
        snprintf(msg, msg_size, "%s", why);
    return XFER_ERR_ACCESS;
}

static void agent_wake(xfer_agent_t *a)
{
    uint64_t one = 1;

    if (write(a->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, a wake is pending. */
    }
}

static void host_wake(void *ctx)
{
    xfer_backend_t *b = ctx;

    agent_wake(b->agent);
}

static xfer_status_t host_shm_lookup(void *ctx, uintptr_t addr, size_t len,
                                     xfer_shm_info_t *info)
{
    (void)ctx;
    return xfer__shm_lookup(addr, len, info);
}

/* ---- progress -------------------------------------------------------------- */

int xfer__progress_locked(xfer_agent_t *a)
{
    int events = 0;

    for (unsigned i = 0; i < a->nbackends; i++) {
        xfer_backend_t *b = a->backends[i];
        int rc = b->ops->progress(b->be);

        if (rc < 0)
            xfer__log(XFER_LOG_ERROR, b->name, "progress failed: %s",
                      xfer_strerror((xfer_status_t)rc));
        else
            events += rc;
    }
    return events;
}

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Sleep on the event fd; after activity, poll for progress_spin_us
 * before sleeping again.  A stream of data then finds the thread awake:
 * the receiver copies while the sender is still sending, instead of
 * waking once per burst (on loopback that overlap is most of the
 * bandwidth, and each wake-up costs a round trip's worth of latency). */
static void *progress_main(void *arg)
{
    xfer_agent_t *a = arg;
    int timeout_ms = (int)((a->progress_wait_us + 999) / 1000);
    uint64_t active = 0;

    for (;;) {
        struct epoll_event ev[8];
        bool spin = a->progress_spin_us > 0 &&
                    now_us() - active < a->progress_spin_us;
        int n = epoll_wait(a->epfd, ev, 8, spin ? 0 : timeout_ms);

        for (int i = 0; i < n; i++) {
            if (ev[i].data.fd == a->wake_fd) {
                uint64_t v;

                if (read(a->wake_fd, &v, sizeof(v)) < 0) {
                    /* EAGAIN: another reader got it first. */
                }
            }
        }
        if (n == 0 && spin)
            continue; /* nothing ready: no need to take the lock */
        xfer__lock(a);
        if (a->stop) {
            xfer__unlock(a);
            break;
        }
        if (xfer__progress_locked(a) > 0)
            active = now_us();
        xfer__unlock(a);
    }
    return NULL;
}

XFER_API xfer_status_t xfer_progress(xfer_agent_t *agent)
{
    xfer__err_clear();
    if (agent == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_progress: NULL agent");
    xfer__lock(agent);
    xfer__progress_locked(agent);
    xfer__unlock(agent);
    return XFER_OK;
}

XFER_API xfer_status_t xfer_agent_event_fd(xfer_agent_t *agent, int *fd)
{
    xfer__err_clear();
    if (agent == NULL || fd == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_agent_event_fd: NULL argument");
    *fd = agent->epfd;
    return XFER_OK;
}

/* ---- agent ------------------------------------------------------------------ */

XFER_API void xfer_agent_opts_init(xfer_agent_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->size = sizeof(*opts);
    opts->progress_thread = 1;
    opts->progress_wait_us = 100000;
    opts->progress_spin_us = 50;
}

/* Epochs only grow: wall-clock nanoseconds, bumped past the last one this
 * process handed out so two agents made in the same tick still differ. */
static uint64_t next_epoch(void)
{
    static _Atomic uint64_t last;
    struct timespec ts;
    uint64_t now, prev;

    clock_gettime(CLOCK_REALTIME, &ts);
    now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    prev = atomic_load(&last);
    do {
        if (now <= prev)
            now = prev + 1;
    } while (!atomic_compare_exchange_weak(&last, &prev, now));
    return now;
}

static bool valid_agent_name(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > XFER_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

XFER_API xfer_status_t xfer_agent_create(const xfer_agent_opts_t *opts,
                                         xfer_agent_t **agent)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a;
    struct epoll_event ev = {.events = EPOLLIN};
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || opts == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_agent_create: NULL argument");
    *agent = NULL;
    xfer_agent_opts_init(&o);
    memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
    if (o.name == NULL || !valid_agent_name(o.name))
        return xfer__err(XFER_ERR_INVALID, "agent name must be 1 to %d "
                         "printable bytes", XFER_NAME_MAX);

    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    a->epfd = -1;
    a->wake_fd = -1;
    a->nq_fd = -1;
    pthread_mutex_init(&a->lock, NULL);
    xfer__reg_init(&a->regions);
    a->name = strdup(o.name);
    a->epoch = next_epoch();
    a->progress_wait_us = o.progress_wait_us ? o.progress_wait_us : 100000;
    a->progress_spin_us = o.progress_spin_us;
    if (a->name == NULL)
        goto nomem;
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    a->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    a->nq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ev.data.fd = a->wake_fd;
    if (a->epfd < 0 || a->wake_fd < 0 || a->nq_fd < 0 ||
        epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->wake_fd, &ev) != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot create its "
                       "event fd: %s", o.name, strerror(errno));
        goto fail;
    }
    if (o.progress_thread) {
        int rc = pthread_create(&a->thread, NULL, progress_main, a);

        if (rc != 0) {
            st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot start its "
                           "progress thread: %s", o.name, strerror(rc));
            goto fail;
        }
        a->progress_thread = true;
    }
    /* Finding peers (core/ctl.h): listener and etcd threads. */
    if (o.listen_addr != NULL) {
        st = xfer__listener_start(a, o.listen_addr, o.listen_timeout_ms,
                                  &a->listener);
        if (st != XFER_OK)
            goto fail;
    }
    st = xfer__etcd_start(a, o.etcd_endpoints, o.etcd_namespace,
                          o.etcd_ttl_s, &a->etcd);
    if (st != XFER_OK)
        goto fail;
    *agent = a;
    return XFER_OK;

nomem:
    st = xfer__err(XFER_ERR_NOMEM, "out of memory");
fail:
    xfer__listener_stop(a->listener);
    if (a->progress_thread) {
        xfer__lock(a);
        a->stop = true;
        xfer__unlock(a);
        agent_wake(a);
        pthread_join(a->thread, NULL);
    }
    if (a->epfd >= 0)
        close(a->epfd);
    if (a->wake_fd >= 0)
        close(a->wake_fd);
    if (a->nq_fd >= 0)
        close(a->nq_fd);
    xfer__reg_fini(&a->regions);
    pthread_mutex_destroy(&a->lock);
    free(a->name);
    free(a);
    return st;
}

static void mem_free(xfer_mem_t *m);

XFER_API void xfer_agent_destroy(xfer_agent_t *agent)
{
    xfer_agent_t *a = agent;

    if (a == NULL)
        return;
    /* The control plane calls into the agent: stop it first. */
    xfer__etcd_stop(a->etcd);
    xfer__listener_stop(a->listener);
    if (a->progress_thread) {
        xfer__lock(a);
        a->stop = true;
        xfer__unlock(a);
        agent_wake(a);
        pthread_join(a->thread, NULL);
    }
    xfer__lock(a);
    /* Peers first, so in-flight requests end and can be released. */
    while (a->remotes != NULL)
        xfer__remote_kill(a->remotes, "its local agent was destroyed");
    xfer__req_destroy_all(a);
    while (a->mems != NULL)
        mem_free(a->mems);
    for (unsigned i = a->nbackends; i-- > 0;) {
        xfer_backend_t *b = a->backends[i];

        b->ops->fini(b->be);
        xfer__config_free(&b->config);
        xfer__plugin_close(b->plugin);
        free(b);
    }
    xfer__notif_free_all(a);
    xfer__unlock(a);
    xfer__shm_free_all(a);

    xfer__reg_fini(&a->regions);
    close(a->epfd);
    close(a->wake_fd);
    close(a->nq_fd);
    pthread_mutex_destroy(&a->lock);
    free(a->name);
    free(a);
}

XFER_API const char *xfer_agent_name(const xfer_agent_t *agent)
{
    return agent ? agent->name : NULL;
}

XFER_API uint64_t xfer_agent_epoch(const xfer_agent_t *agent)
{
    return agent ? agent->epoch : 0;
}

/* ---- backends ---------------------------------------------------------------- */

xfer_status_t xfer__region_register_be(xfer_backend_t *b, xfer__region_t *r)
{
    xfer_be_region_t br = {
        .addr = (uintptr_t)r->range.addr,
        .len = (size_t)r->range.len,
        .type = r->type,
        .dev = r->dev,
        .key = r->range.key,
    };
    void *mem = NULL;
    xfer_status_t st;

    if (!(b->ops->hdr.mem_types & XFER_MEMBIT(r->type)))
        return XFER_ERR_NOT_SUPPORTED;
    st = b->ops->mem_register(b->be, &br, &mem);
    if (st != XFER_OK) {
        if (!xfer__err_isset())
            xfer__err(st, "backend %s could not register [0x%" PRIx64
                      ", +%" PRIu64 ")", b->name, r->range.addr, r->range.len);
        return st;
    }
    r->be_mem[b->index] = mem;
    return XFER_OK;
}

static xfer_status_t backend_add(xfer_agent_t *a, const char *plugin,
                                 json_t *kv, xfer_backend_t **out)
{
    xfer_backend_t *b;
    xfer_status_t st;
    const xfer_backend_ops_t *ops;
    size_t i;

    for (i = 0; i < a->nbackends; i++)
        if (strcmp(a->backends[i]->name, plugin) == 0)
            return xfer__err(XFER_ERR_EXISTS, "agent '%s' already has a '%s' "
                             "backend", a->name, plugin);
    if (a->nbackends == XFER__MAX_BACKENDS)
        return xfer__err(XFER_ERR_INVALID, "agent '%s' already has %d "
                         "backends", a->name, XFER__MAX_BACKENDS);

    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    b->agent = a;
    b->index = a->nbackends;
    b->event_fd = -1;
    st = xfer__plugin_open(plugin, &b->plugin);
    if (st != XFER_OK)
        goto fail;
    ops = b->ops = xfer__plugin_ops(b->plugin);
    b->name = ops->hdr.name;
    st = xfer__config_fill(plugin, ops->params, ops->nparams,
                           ops->config_size, kv, &b->config);
    if (st != XFER_OK)
        goto fail;

    b->host.size = sizeof(b->host);
    b->host.ctx = b;
    b->host.agent_name = a->name;
    b->host.agent_epoch = a->epoch;
    b->host.log = host_log;
    b->host.error = host_error;
    b->host.notif_deliver = host_notif_deliver;
    b->host.mem_check = host_mem_check;
    b->host.wake = host_wake;
    b->host.shm_lookup = host_shm_lookup;
    st = ops->init(&b->host, b->config.data, &b->be);
    if (st != XFER_OK) {
        if (!xfer__err_isset())
            xfer__err(st, "plugin '%s' failed to initialise", plugin);
        goto fail;
    }
    if (XFER__HAS_OP(ops, event_fd) &&
        ops->event_fd(b->be, &b->event_fd) == XFER_OK && b->event_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = b->event_fd};

        if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, b->event_fd, &ev) != 0) {
            st = xfer__err(XFER_ERR_BACKEND, "plugin '%s': cannot watch its "
                           "event fd: %s", plugin, strerror(errno));
            ops->fini(b->be);
            goto fail;
        }
    }
    /* Registrations made before this backend existed join it now, so the
     * order of add and register does not matter to the user. */
    for (i = 0; i < a->regions.count; i++) {
        xfer__region_t *r = (xfer__region_t *)a->regions.by_addr[i];

        st = xfer__region_register_be(b, r);
        if (st != XFER_OK && st != XFER_ERR_NOT_SUPPORTED) {
            while (i-- > 0) {
                r = (xfer__region_t *)a->regions.by_addr[i];
                if (r->be_mem[b->index] != NULL) {
                    ops->mem_deregister(b->be, r->be_mem[b->index]);
                    r->be_mem[b->index] = NULL;
                }
            }
            if (b->event_fd >= 0)
                epoll_ctl(a->epfd, EPOLL_CTL_DEL, b->event_fd, NULL);
            ops->fini(b->be);
            goto fail;
        }
    }
    a->backends[a->nbackends++] = b;
    /* Peers loaded before it exist for it too, as registrations do. */
    xfer__remote_backfill(a, b);
    if (out != NULL)
        *out = b;
    agent_wake(a);
    return XFER_OK;

fail:
    xfer__config_free(&b->config);
    xfer__plugin_close(b->plugin);
    free(b);
    return st;
}

XFER_API xfer_status_t xfer_backend_add(xfer_agent_t *agent, const char *spec,
                                        xfer_backend_t **backend)
{
    char *plugin = NULL;
    json_t *kv = NULL;
    xfer_status_t st;

    xfer__err_clear();
    if (backend != NULL)
        *backend = NULL;
    if (agent == NULL || spec == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_backend_add: NULL argument");
    st = xfer__spec_parse(spec, &plugin, &kv);
    if (st != XFER_OK)
        return st;
    xfer__lock(agent);
    st = backend_add(agent, plugin, kv, backend);
    xfer__unlock(agent);
    if (st == XFER_OK)
        xfer__etcd_changed(agent->etcd);
    free(plugin);
    json_decref(kv);
    return st;
}

XFER_API xfer_status_t xfer_backend_add_json(xfer_agent_t *agent,
                                             const char *plugin,
                                             const char *json,
                                             xfer_backend_t **backend)
{
    json_t *kv = NULL;
    json_error_t jerr;
    xfer_status_t st;

    xfer__err_clear();
    if (backend != NULL)
        *backend = NULL;
    if (agent == NULL || plugin == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_backend_add_json: NULL "
                         "argument");
    if (json != NULL) {
        kv = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
        if (kv == NULL)
            return xfer__err(XFER_ERR_CONFIG, "plugin '%s': parameters are not "
                             "valid JSON: %s (line %d, column %d)", plugin,
                             jerr.text, jerr.line, jerr.column);
        if (!json_is_object(kv)) {
            json_decref(kv);
            return xfer__err(XFER_ERR_CONFIG, "plugin '%s': parameters must be "
                             "a JSON object", plugin);
        }
    }
    xfer__lock(agent);
    st = backend_add(agent, plugin, kv, backend);
    xfer__unlock(agent);
    if (st == XFER_OK)
        xfer__etcd_changed(agent->etcd);
    json_decref(kv);
    return st;
}

XFER_API const char *xfer_backend_name(const xfer_backend_t *backend)
{
    return backend ? backend->name : NULL;
}

XFER_API xfer_status_t xfer_backend_find(xfer_agent_t *agent, const char *name,
                                         xfer_backend_t **backend)
{
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || name == NULL || backend == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_backend_find: NULL argument");
    *backend = NULL;
    xfer__lock(agent);
    st = xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' has no '%s' backend",
                   agent->name, name);
    for (unsigned i = 0; i < agent->nbackends; i++) {
        if (strcmp(agent->backends[i]->name, name) == 0) {
            *backend = agent->backends[i];
            xfer__err_clear();
            st = XFER_OK;
            break;
        }
    }
    xfer__unlock(agent);
    return st;
}

XFER_API xfer_status_t xfer_backend_state(xfer_backend_t *backend, char *buf,
                                          size_t len)
{
    xfer_status_t st;

    xfer__err_clear();
    if (backend == NULL || buf == NULL || len == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_backend_state: NULL "
                         "argument or empty buffer");
    buf[0] = '\0';
    if (!XFER__HAS_OP(backend->ops, state))
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "plugin '%s' reports no "
                         "state (it predates backend ABI minor 2 or has "
                         "nothing to say)", backend->name);
    xfer__lock(backend->agent);
    st = backend->ops->state(backend->be, buf, len);
    xfer__unlock(backend->agent);
    buf[len - 1] = '\0';
    if (st != XFER_OK) {
        buf[0] = '\0';
        if (!xfer__err_isset())
            xfer__err(st, "plugin '%s' could not report its state",
                      backend->name);
    }
    return st;
}

/* ---- memory ------------------------------------------------------------------- */

/* Deregister every region of m from every backend and free it.  Lock held. */
static void mem_free(xfer_mem_t *m)
{
    xfer_agent_t *a = m->agent;

    for (size_t i = 0; i < m->count; i++) {
        xfer__region_t *r = &m->regions[i];

        if (r->range.key == 0)
            continue; /* never inserted: a failed registration */
        xfer__reg_remove(&a->regions, &r->range);
        for (unsigned j = 0; j < a->nbackends; j++) {
            if (r->be_mem[j] != NULL) {
                a->backends[j]->ops->mem_deregister(a->backends[j]->be,
                                                    r->be_mem[j]);
                r->be_mem[j] = NULL;
            }
        }
    }
    if (m->prev != NULL)
        m->prev->next = m->next;
    else if (a->mems == m)
        a->mems = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    free(m->regions);
    free(m);
}

static xfer_status_t mem_register(xfer_agent_t *a, const xfer_dlist_t *list,
                                  xfer_backend_t *only, xfer_mem_t **out)
{
    xfer_mem_t *m;
    xfer_status_t st;

    if (only != NULL && only->agent != a)
        return xfer__err(XFER_ERR_INVALID, "backend %s belongs to another "
                         "agent", only->name);
    if (only != NULL && !(only->ops->hdr.mem_types & XFER_MEMBIT(list->type)))
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "backend %s does not support "
                         "%s memory", only->name,
                         list->type == XFER_MEM_VRAM ? "VRAM" : "DRAM");
    if (only == NULL && a->nbackends > 0) {
        /* No backend could move it: refuse rather than keep a region
         * that requests would only trip over. */
        unsigned j = 0;

        while (j < a->nbackends &&
               !(a->backends[j]->ops->hdr.mem_types & XFER_MEMBIT(list->type)))
            j++;
        if (j == a->nbackends)
            return xfer__err(XFER_ERR_NOT_SUPPORTED, "no backend of agent "
                             "'%s' supports %s memory", a->name,
                             list->type == XFER_MEM_VRAM ? "VRAM" : "DRAM");
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    m->agent = a;
    m->count = list->count;
    m->regions = calloc(list->count, sizeof(*m->regions));
    if (m->regions == NULL) {
        free(m);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    /* Linked first so mem_free can undo a partial registration. */
    m->next = a->mems;
    if (a->mems != NULL)
        a->mems->prev = m;
    a->mems = m;

    for (size_t i = 0; i < list->count; i++) {
        const xfer_desc_t *d = &list->descs[i];
        xfer__region_t *r = &m->regions[i];
        uint64_t key;

        if (d->len == 0 || d->addr == 0 || d->addr + d->len < d->addr) {
            st = xfer__err(XFER_ERR_INVALID, "descriptor %zu: [0x%" PRIxPTR
                           ", +%zu) is not a valid region", i, d->addr,
                           d->len);
            goto fail;
        }
        r->range.addr = d->addr;
        r->range.len = d->len;
        r->type = list->type;
        r->dev = d->dev;
        r->owner = m;
        do {
            st = xfer__random(&key, sizeof(key));
            if (st != XFER_OK)
                goto fail;
        } while (key == 0 || xfer__reg_find_key(&a->regions, key) != NULL);
        r->range.key = key;
        st = xfer__reg_insert(&a->regions, &r->range);
        if (st != XFER_OK) {
            r->range.key = 0;
            xfer__err(st, "out of memory");
            goto fail;
        }
        for (unsigned j = 0; j < a->nbackends; j++) {
            xfer_backend_t *b = a->backends[j];

            if (only != NULL && b != only)
                continue;
            st = xfer__region_register_be(b, r);
            if (st == XFER_ERR_NOT_SUPPORTED && only == NULL)
                continue;
            if (st != XFER_OK) {
                xfer__err_prefix(st, "descriptor %zu", i);
                goto fail;
            }
        }
    }
    *out = m;
    return XFER_OK;

fail:
    mem_free(m);
    return st;
}

XFER_API xfer_status_t xfer_mem_register(xfer_agent_t *agent,
                                         const xfer_dlist_t *list,
                                         xfer_backend_t *backend,
                                         xfer_mem_t **mem)
{
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
    xfer__lock(agent);
    st = mem_register(agent, list, backend, mem);
    xfer__unlock(agent);
    if (st == XFER_OK)
        xfer__etcd_changed(agent->etcd);
    return st;
}

XFER_API xfer_status_t xfer_mem_deregister(xfer_agent_t *agent, xfer_mem_t *mem)
{
    xfer__err_clear();
    if (agent == NULL || mem == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_deregister: NULL "
                         "argument");
    if (mem->agent != agent)
        return xfer__err(XFER_ERR_INVALID, "xfer_mem_deregister: registration "
                         "belongs to another agent");
    xfer__lock(agent);
    for (size_t i = 0; i < mem->count; i++) {
        if (mem->regions[i].refs > 0) {
            unsigned refs = mem->regions[i].refs;

            xfer__unlock(agent);
            return xfer__err(XFER_ERR_BUSY, "region %zu [0x%" PRIx64 ", +%"
                             PRIu64 ") is still used by %u request(s) or "
                             "prepared list(s)", i, mem->regions[i].range.addr,
                             mem->regions[i].range.len, refs);
        }
    }
    mem_free(mem);
    xfer__unlock(agent);
    xfer__etcd_changed(agent->etcd);
    return XFER_OK;
}
