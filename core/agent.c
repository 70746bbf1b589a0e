/* agent.c - the agent: its lifetime, its backends and the host table they
 * call back through, and the progress engine that drives them. */
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
#include "core/events.h"
#include "core/internal.h"

/* Defaults of the agent options that bound what peers make it hold. */
#define AGENT_MAX_REMOTE_AGENTS 4096
#define AGENT_MD_MAX_REGIONS 65536
#define AGENT_NOTIF_QUEUE_BYTES ((size_t)16 << 20) /* per sender */
#define AGENT_NOTIF_QUEUE_COUNT 65536

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

    /* Counted before it can be drained: a reader that took N sees at
     * least N. */
    xfer__stats_notif_recv(b, from, len);
    xfer__notif_push(b->agent, from, msg, len);
    xfer__ev_notif(b->agent, b, from, msg, len);
}

/* Called from plugins' progress, under their lock: reads the registry
 * under reg_lock alone, never the agent lock. */
static xfer_status_t host_mem_check(void *ctx, uint64_t key, uint64_t addr,
                                    uint64_t len, unsigned access, void **mem,
                                    char *msg, size_t msg_size)
{
    xfer_backend_t *b = ctx;
    xfer_agent_t *a = b->agent;
    xfer__region_t *r;
    char why[256];

    *mem = NULL;
    pthread_rwlock_rdlock(&a->reg_lock);
    r = (xfer__region_t *)xfer__reg_find_key(&a->regions, key);
    if (r == NULL || !r->ready)
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
    else if ((access & ~r->access) != 0)
        snprintf(why, sizeof(why), "registration 0x%016" PRIx64 " allows "
                 "peers %s, not %s", key, xfer__access_name(r->access),
                 xfer__access_name(access & ~r->access));
    else {
        *mem = r->be_mem[b->index];
        pthread_rwlock_unlock(&a->reg_lock);
        return XFER_OK;
    }
    pthread_rwlock_unlock(&a->reg_lock);
    /* A caller that takes the sentence logs it with what it knows of the
     * peer: one line per refused operation, not two. */
    if (msg != NULL && msg_size > 0)
        snprintf(msg, msg_size, "%s", why);
    else
        xfer__log(XFER_LOG_WARN, b->name, "agent %s refused a remote %s: %s",
                  a->name, access & XFER_ACCESS_WRITE ? "write" : "read",
                  why);
    return XFER_ERR_ACCESS;
}

void xfer__agent_wake(xfer_agent_t *a)
{
    uint64_t one = 1;

    if (write(a->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, a wake is pending. */
    }
}

static void host_wake(void *ctx)
{
    xfer_backend_t *b = ctx;

    xfer__agent_wake(b->agent);
}

static xfer_status_t host_shm_lookup(void *ctx, uintptr_t addr, size_t len,
                                     xfer_shm_info_t *info)
{
    (void)ctx;
    return xfer__shm_lookup(addr, len, info);
}

/* Authentication (ABI minor 4): the agent's secret, through core/auth.c. */
static xfer_status_t host_auth_mac(void *ctx, const void *msg, size_t len,
                                   uint8_t mac[XFER_AUTH_MAC_LEN])
{
    xfer_backend_t *b = ctx;
    xfer__auth_part_t part = {msg, len};

    return xfer__auth_mac(b->agent->auth, &part, 1, mac);
}

static xfer_status_t host_auth_check(void *ctx, const void *msg, size_t len,
                                     const uint8_t mac[XFER_AUTH_MAC_LEN])
{
    xfer_backend_t *b = ctx;
    xfer__auth_part_t part = {msg, len};

    return xfer__auth_check(b->agent->auth, &part, 1, mac);
}

static int host_notif_room(void *ctx, const char *from, size_t len)
{
    xfer_backend_t *b = ctx;

    return xfer__notif_room(b->agent, from, len);
}

/* ---- progress -------------------------------------------------------------- */

uint64_t xfer__now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* One pass over the backends: the polled ones always, the others only
 * when fds may be ready (fds_ready), so that a thread spinning with
 * nothing readable costs no lock and no call.  Each backend runs under
 * its own lock at most: one backend's progress never waits for
 * another's, nor for a post on another. */
static int progress_pass(xfer_agent_t *a, bool fds_ready)
{
    unsigned nb = xfer__nbackends(a);
    int events = 0;

    for (unsigned i = 0; i < nb; i++) {
        xfer_backend_t *b = a->backends[i];
        int rc;

        if (!b->polled && !fds_ready)
            continue;
        xfer__be_enter(b);
        rc = b->ops->progress(b->be);
        xfer__be_leave(b);
        if (rc < 0)
            xfer__log(XFER_LOG_ERROR, b->name, "progress failed: %s",
                      xfer_strerror((xfer_status_t)rc));
        else
            events += rc;
    }
    return events;
}

int xfer__progress_all(xfer_agent_t *a)
{
    return progress_pass(a, true);
}

bool xfer__arm_all(xfer_agent_t *a, int *poll_ms)
{
    unsigned nb = xfer__nbackends(a);

    for (unsigned i = 0; i < nb; i++) {
        xfer_backend_t *b = a->backends[i];
        xfer_status_t st;

        if (!XFER__HAS_OP(b->ops, arm)) {
            /* Nothing tells us when a polled backend without an event fd
             * has work: look again soon. */
            if (b->event_fd < 0 && *poll_ms > 1)
                *poll_ms = 1;
            continue;
        }
        xfer__be_enter(b);
        st = b->ops->arm(b->be);
        xfer__be_leave(b);
        if (st == XFER_IN_PROG) {
            /* Armed as far as it can be: its fd does not cover all it
             * waits for (a libfabric CQ without a wait fd). */
            if (*poll_ms > 1)
                *poll_ms = 1;
            continue;
        }
        if (st != XFER_OK)
            return false;
    }
    return true;
}

void xfer__agent_done(xfer_agent_t *a)
{
    if (atomic_load(&a->waiters) == 0)
        return;
    pthread_mutex_lock(&a->done_lock);
    pthread_cond_broadcast(&a->done_cond);
    pthread_mutex_unlock(&a->done_lock);
}

/* Sleep on the event fd; after activity, poll for progress_spin_us
 * before sleeping again.  A stream of data then finds the thread awake:
 * the receiver copies while the sender is still sending, instead of
 * waking once per burst (on loopback that overlap is most of the
 * bandwidth, and each wake-up costs a round trip's worth of latency).
 * Backends that must be polled are progressed on every pass, and the
 * thread sleeps only once every backend with an arm op is armed. */
static void *progress_main(void *arg)
{
    xfer_agent_t *a = arg;
    int wait_ms = (int)((a->progress_wait_us + 999) / 1000);
    uint64_t active = 0;

    while (!atomic_load(&a->stop)) {
        struct epoll_event ev[8];
        bool spin = a->progress_spin_us > 0 &&
                    xfer__now_us() - active < a->progress_spin_us;
        int timeout = 0, n;
        bool woken = false;

        if (!spin) {
            timeout = wait_ms;
            atomic_store(&a->sleeping, true);
            if (!xfer__arm_all(a, &timeout))
                timeout = 0;
        }
        n = epoll_wait(a->epfd, ev, 8, timeout);
        atomic_store(&a->sleeping, false);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.fd == a->wake_fd) {
                uint64_t v;

                woken = true;
                if (read(a->wake_fd, &v, sizeof(v)) < 0) {
                    /* EAGAIN: another reader got it first. */
                }
            }
        }
        /* A wait that timed out also drives everyone: backends keep
         * their timers (stall detection) in progress.  A wake counts as
         * activity: a plugin may have completed a request from another
         * thread (host->wake), with nothing left for this pass to do,
         * and xfer_req_wait callers must look again now. */
        if (progress_pass(a, n > 0 || timeout > 0) > 0 || woken) {
            active = xfer__now_us();
            xfer__agent_done(a);
        }
    }
    return NULL;
}

XFER_API xfer_status_t xfer_progress(xfer_agent_t *agent)
{
    int poll_ms = 1000;

    xfer__err_clear();
    if (agent == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_progress: NULL agent");
    /* Without a thread the user sleeps on epfd, so the wake eventfd must
     * be readable exactly while there is work: consume it before the
     * pass (a wake after this one stays), and raise it again when a
     * backend is busy or must be polled regardless. */
    if (!agent->progress_thread) {
        uint64_t v;

        if (read(agent->wake_fd, &v, sizeof(v)) < 0) {
            /* EAGAIN: nobody woke us. */
        }
    }
    if (xfer__progress_all(agent) > 0)
        xfer__agent_done(agent);
    if (!agent->progress_thread &&
        (!xfer__arm_all(agent, &poll_ms) || poll_ms <= 1))
        xfer__agent_wake(agent);
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
    opts->telemetry = 1;
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

static void stop_thread(xfer_agent_t *a)
{
    if (!a->progress_thread)
        return;
    atomic_store(&a->stop, true);
    xfer__agent_wake(a);
    pthread_join(a->thread, NULL);
    a->progress_thread = false;
}

static void destroy_locks(xfer_agent_t *a)
{
    pthread_cond_destroy(&a->done_cond);
    pthread_mutex_destroy(&a->done_lock);
    pthread_mutex_destroy(&a->nq_lock);
    pthread_rwlock_destroy(&a->reg_lock);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->md_lock);
    pthread_mutex_destroy(&a->cfg_lock);
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
    XFER__OPTS_COPY(&o, opts);
    if (o.name == NULL || !valid_agent_name(o.name))
        return xfer__err(XFER_ERR_INVALID, "agent name must be 1 to %d "
                         "printable bytes", XFER_NAME_MAX);

    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    /* The secret first: an agent meant to authenticate never runs
     * without it, and the listener below needs it. */
    st = xfer__auth_load(o.auth_key_file, &a->auth);
    if (st != XFER_OK) {
        free(a);
        return xfer__err_prefix(st, "agent '%s'", o.name);
    }
    a->epfd = -1;
    a->wake_fd = -1;
    a->nq_fd = -1;
    pthread_mutex_init(&a->cfg_lock, NULL);
    pthread_mutex_init(&a->md_lock, NULL);
    pthread_mutex_init(&a->lock, NULL);
    pthread_rwlock_init(&a->reg_lock, NULL);
    pthread_mutex_init(&a->nq_lock, NULL);
    pthread_mutex_init(&a->done_lock, NULL);
    {
        pthread_condattr_t ca;

        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&a->done_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    xfer__reg_init(&a->regions);
    a->name = strdup(o.name);
    a->epoch = next_epoch();
    a->progress_wait_us = o.progress_wait_us ? o.progress_wait_us : 100000;
    a->progress_spin_us = o.progress_spin_us;
    /* What peers can make the agent hold (docs/api.md). */
    a->max_remote_agents = o.max_remote_agents ? o.max_remote_agents
                                               : AGENT_MAX_REMOTE_AGENTS;
    a->md_max_regions = o.md_max_regions ? o.md_max_regions
                                         : AGENT_MD_MAX_REGIONS;
    a->nq_max_bytes = o.notif_queue_bytes ? o.notif_queue_bytes
                                          : AGENT_NOTIF_QUEUE_BYTES;
    a->nq_max_count = o.notif_queue_count ? o.notif_queue_count
                                          : AGENT_NOTIF_QUEUE_COUNT;
    xfer__stats_init(a, o.telemetry != 0, a->max_remote_agents);
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
        st = xfer__listener_start(a, &o, &a->listener);
        if (st != XFER_OK)
            goto fail;
    }
    st = xfer__etcd_start(a, &o, &a->etcd);
    if (st != XFER_OK)
        goto fail;
    /* The event plane (core/events.h) last: "agent.up" means ready. */
    st = xfer__nats_start(a, &o, &a->nats);
    if (st != XFER_OK)
        goto fail;
    *agent = a;
    return XFER_OK;

nomem:
    st = xfer__err(XFER_ERR_NOMEM, "out of memory");
fail:
    xfer__etcd_stop(a->etcd);
    xfer__listener_stop(a->listener);
    stop_thread(a);
    if (a->epfd >= 0)
        close(a->epfd);
    if (a->wake_fd >= 0)
        close(a->wake_fd);
    if (a->nq_fd >= 0)
        close(a->nq_fd);
    xfer__reg_fini(&a->regions);
    xfer__stats_fini(a);
    destroy_locks(a);
    xfer__auth_free(a->auth);
    free(a->name);
    free(a);
    return st;
}

XFER_API void xfer_agent_destroy(xfer_agent_t *agent)
{
    xfer_agent_t *a = agent;

    if (a == NULL)
        return;
    /* The control plane calls into the agent: stop it first.  Then no
     * other thread runs in the agent: the user owes us that.  The event
     * plane goes once no other thread can call its hooks (the progress
     * thread delivers notifications, etcd and the listener load peers),
     * saying "agent.down" while peers are still loaded; nothing after
     * it publishes. */
    xfer__etcd_stop(a->etcd);
    xfer__listener_stop(a->listener);
    stop_thread(a);
    xfer__nats_stop(a->nats);
    a->nats = NULL;
    xfer__lock(a);
    /* Peers first, so in-flight requests end and can be released. */
    while (a->remotes != NULL)
        xfer__remote_kill(a->remotes, "its local agent was destroyed");
    xfer__req_destroy_all(a);
    xfer__unlock(a);
    /* Then the connections peers made to us, before the memory they
     * reach: a NIC still serving them would answer a WRITE on the wire
     * with an access error once its region went, where the peer must
     * see this agent gone. */
    for (unsigned i = 0; i < xfer__nbackends(a); i++) {
        xfer_backend_t *b = a->backends[i];

        if (XFER__HAS_OP(b->ops, quiesce))
            b->ops->quiesce(b->be);
    }
    while (a->mems != NULL)
        xfer__mem_free(a->mems);
    for (unsigned i = xfer__nbackends(a); i-- > 0;) {
        xfer_backend_t *b = a->backends[i];

        b->ops->fini(b->be);
        xfer__config_free(&b->config);
        xfer__plugin_close(b->plugin);
        pthread_mutex_destroy(&b->lock);
        free(b);
    }
    xfer__notif_free_all(a);
    xfer__shm_free_all(a);

    xfer__reg_fini(&a->regions);
    xfer__stats_fini(a);
    close(a->epfd);
    close(a->wake_fd);
    close(a->nq_fd);
    destroy_locks(a);
    xfer__auth_free(a->auth);
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

/* The table's flags (ABI minor 3), and whether the backend must be
 * progressed on every pass of the progress thread. */
static void backend_model(xfer_backend_t *b)
{
    const xfer_backend_ops_t *ops = b->ops;

    b->flags = ops->hdr.struct_size >= offsetof(xfer_backend_ops_t, flags) +
                                           sizeof(ops->flags)
                   ? ops->flags
                   : 0;
    b->polled = (b->flags & XFER_BE_POLL) || b->event_fd < 0 ||
                XFER__HAS_OP(ops, arm);
}

/* Undo what backend_add did to the regions before it failed. */
static void backend_unregister(xfer_agent_t *a, xfer_backend_t *b)
{
    for (size_t i = 0; i < a->regions.count; i++) {
        xfer__region_t *r = (xfer__region_t *)a->regions.by_addr[i];

        if (r->be_mem[b->index] != NULL) {
            b->ops->mem_deregister(b->be, r->be_mem[b->index]);
            r->be_mem[b->index] = NULL;
        }
    }
}

/* cfg_lock held: registrations cannot change under us, and init and the
 * registrations that join the new backend run without the agent lock. */
static xfer_status_t backend_add(xfer_agent_t *a, const char *plugin,
                                 json_t *kv, xfer_backend_t **out)
{
    xfer_backend_t *b;
    xfer_status_t st;
    const xfer_backend_ops_t *ops;
    unsigned nb = xfer__nbackends(a);

    for (unsigned i = 0; i < nb; i++)
        if (strcmp(a->backends[i]->name, plugin) == 0)
            return xfer__err(XFER_ERR_EXISTS, "agent '%s' already has a '%s' "
                             "backend", a->name, plugin);
    if (nb == XFER__MAX_BACKENDS)
        return xfer__err(XFER_ERR_INVALID, "agent '%s' already has %d "
                         "backends", a->name, XFER__MAX_BACKENDS);

    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    b->agent = a;
    b->index = nb;
    b->event_fd = -1;
    pthread_mutex_init(&b->lock, NULL);
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
    b->host.auth = a->auth != NULL;
    b->host.auth_mac = host_auth_mac;
    b->host.auth_check = host_auth_check;
    b->host.notif_room = host_notif_room;
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
    backend_model(b);
    /* Registrations made before this backend existed join it now, so the
     * order of add and register does not matter to the user. */
    for (size_t i = 0; i < a->regions.count; i++) {
        xfer__region_t *r = (xfer__region_t *)a->regions.by_addr[i];

        st = xfer__region_register_be(b, r);
        if (st != XFER_OK && st != XFER_ERR_NOT_SUPPORTED) {
            backend_unregister(a, b);
            if (b->event_fd >= 0)
                epoll_ctl(a->epfd, EPOLL_CTL_DEL, b->event_fd, NULL);
            ops->fini(b->be);
            goto fail;
        }
    }
    xfer__lock(a);
    a->backends[nb] = b;
    atomic_store_explicit(&a->nbackends, nb + 1, memory_order_release);
    /* Peers loaded before it exist for it too, as registrations do. */
    xfer__remote_backfill(a, b);
    xfer__ev_backend(a, b);
    xfer__unlock(a);
    if (out != NULL)
        *out = b;
    xfer__agent_wake(a);
    return XFER_OK;

fail:
    xfer__config_free(&b->config);
    xfer__plugin_close(b->plugin);
    pthread_mutex_destroy(&b->lock);
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
    pthread_mutex_lock(&agent->cfg_lock);
    st = backend_add(agent, plugin, kv, backend);
    pthread_mutex_unlock(&agent->cfg_lock);
    if (st == XFER_OK) {
        xfer__etcd_changed(agent->etcd);
        xfer__nats_changed(agent->nats);
    }
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
    pthread_mutex_lock(&agent->cfg_lock);
    st = backend_add(agent, plugin, kv, backend);
    pthread_mutex_unlock(&agent->cfg_lock);
    if (st == XFER_OK) {
        xfer__etcd_changed(agent->etcd);
        xfer__nats_changed(agent->nats);
    }
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
    st = xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' has no '%s' backend",
                   agent->name, name);
    for (unsigned i = 0; i < xfer__nbackends(agent); i++) {
        if (strcmp(agent->backends[i]->name, name) == 0) {
            *backend = agent->backends[i];
            xfer__err_clear();
            st = XFER_OK;
            break;
        }
    }
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
    xfer__be_enter(backend);
    st = backend->ops->state(backend->be, buf, len);
    xfer__be_leave(backend);
    buf[len - 1] = '\0';
    if (st != XFER_OK) {
        buf[0] = '\0';
        if (!xfer__err_isset())
            xfer__err(st, "plugin '%s' could not report its state",
                      backend->name);
    }
    return st;
}
