/* ucx.c - the UCX backend: UCP put/get with packed rkeys, a flush before a
 * request completes, notifications as active messages after that flush.
 * This file is the table, the parameters and the instance's life; ucx.h
 * says which file holds the rest and the order of its locks. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "plugins/ucx/ucx.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

static xfer_status_t ucx_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be);
static void ucx_fini(xfer_be_t *u);
static xfer_status_t ucx_conn_info(xfer_be_t *u, void *buf, size_t *len);
static int ucx_progress(xfer_be_t *u);
static xfer_status_t ucx_event_fd(xfer_be_t *u, int *fd);
static xfer_status_t ucx_arm(xfer_be_t *u);
static xfer_status_t ucx_probe(char *buf, size_t len);
static xfer_status_t ucx_state(xfer_be_t *u, char *buf, size_t len);

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(ucx_config_t, f), lo, hi }
static const xfer_param_t ucx_params[] = {
    P("tls", XFER_PARAM_STRING, "",
      "UCX transports of this instance, as UCX_TLS (e.g. tcp, or "
      "posix\\,cma\\,self); empty: UCX_TLS from the environment, else UCX's "
      "own choice",
      tls, 1, 0),
    P("devices", XFER_PARAM_STRING, "",
      "network devices, as UCX_NET_DEVICES (e.g. mlx5_0:1\\,eth0); empty: "
      "UCX_NET_DEVICES, else all",
      devices, 1, 0),
    P("workers", XFER_PARAM_UINT, "1",
      "UCP workers; a thread posts on worker (its number mod workers), "
      "threads numbered in the order they first create a request, post, "
      "notify or connect",
      workers, 1, UCX_MAX_WORKERS),
    P("error_mode", XFER_PARAM_STRING, "peer",
      "peer: endpoints fail cleanly when a peer dies (UCX leaves out "
      "transports that cannot tell); none: every transport, but a dead "
      "peer's buffers stay UCX's until the agent is destroyed",
      error_mode, 1, 0),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a posted transfer not complete this long fails with XFER_ERR_TIMEOUT "
      "(its endpoint is closed and rebuilt at the next post); also the "
      "control channel's",
      timeout_ms, 1, 3600000),
    XFER__HWCTL_PARAMS(ucx_config_t),
    XFER__STREAM_LIMIT_PARAMS(ucx_config_t, lim),
};
#undef P

extern const xfer_backend_ops_t XFER_BACKEND_SYMBOL(ucx);
const xfer_backend_ops_t XFER_BACKEND_SYMBOL(ucx) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "ucx",
        .version = PACKAGE_VERSION,
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                XFER_CAP_REMOTE | XFER_CAP_LOCAL | XFER_CAP_HW_KEYS,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = ucx_params,
    .nparams = sizeof ucx_params / sizeof ucx_params[0],
    .config_size = sizeof(ucx_config_t),
    .init = ucx_init,
    .fini = ucx_fini,
    .conn_info = ucx_conn_info,
    .peer_add = ucx__peer_add,
    .peer_remove = ucx__peer_remove,
    .mem_register = ucx__mem_register,
    .mem_deregister = ucx__mem_deregister,
    .mem_pack = ucx__mem_pack,
    .rmem_unpack = ucx__rmem_unpack,
    .rmem_release = ucx__rmem_release,
    .req_create = ucx__req_create,
    .req_post = ucx__req_post,
    .req_check = ucx__req_check,
    /* No req_cancel: UCP cannot take back one request's puts without
     * closing the endpoint under every other request to that peer. */
    .req_release = ucx__req_release,
    .notif_send = ucx__notif_send,
    .progress = ucx_progress,
    .event_fd = ucx_event_fd,
    .probe = ucx_probe,
    .state = ucx_state,
    .flags = XFER_BE_THREAD_SAFE | XFER_BE_POLL,
    .arm = ucx_arm,
    .peer_connect = ucx__peer_connect,
};

/* ------------------------------------------------------------------ */
/* Small things every file uses                                        */
/* ------------------------------------------------------------------ */

/* Threads are numbered the first time they post through any instance, so
 * that with workers >= posting threads each has a worker of its own. */
static atomic_uint g_threads;
static _Thread_local int t_number = -1;

unsigned ucx__thread_worker(const ucx_t *u)
{
    if (t_number < 0)
        t_number = (int)(atomic_fetch_add(&g_threads, 1) & 0x7fffffff);
    return (unsigned)t_number % u->nw;
}

xfer_status_t ucx__status(ucs_status_t s)
{
    switch (s) {
    case UCS_OK:
        return XFER_OK;
    case UCS_ERR_NO_MEMORY:
        return XFER_ERR_NOMEM;
    case UCS_ERR_TIMED_OUT:
        return XFER_ERR_TIMEOUT;
    /* UCP's keep-alive gave up on the peer: it is gone, not slow (our own
     * timeout_ms is what answers XFER_ERR_TIMEOUT). */
    case UCS_ERR_ENDPOINT_TIMEOUT:
        return XFER_ERR_REMOTE_DISCONNECT;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
        return XFER_ERR_INVALID;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
        return XFER_ERR_NOT_SUPPORTED;
    default:
        return XFER_ERR_REMOTE_DISCONNECT;
    }
}

/* ------------------------------------------------------------------ */
/* The instance                                                        */
/* ------------------------------------------------------------------ */

/* What UCX found for this context: its transports and devices, for
 * state(), the probe and the log ("self/memory0 tcp/lo posix/memory"),
 * from the resource lines of ucp_context_print_info. */
static void note_transports(ucx_t *u)
{
    char *text = NULL;
    size_t size = 0, n = 0;
    FILE *f = open_memstream(&text, &size);

    u->tls_used[0] = '\0';
    if (f == NULL)
        return;
    ucp_context_print_info(u->ctx, f);
    fclose(f);
    for (char *line = text; line && *line;) {
        char *eol = strchr(line, '\n');
        char *last;

        if (eol)
            *eol = '\0';
        last = strrchr(line, ' ');
        if (strstr(line, "resource") && last && last[1] &&
            n + strlen(last) + 1 < sizeof u->tls_used)
            n += (size_t)snprintf(u->tls_used + n, sizeof u->tls_used - n,
                                  "%s%s", n ? " " : "", last + 1);
        line = eol ? eol + 1 : NULL;
    }
    free(text);
}

/* Whether a transport in use checks remote keys in hardware: the RDMA
 * ones (rc_*, dc_* on InfiniBand or RoCE).  tcp, cma and the shared-memory
 * transports write wherever the initiator says (docs/security.md). */
static bool keys_checked(const ucx_t *u)
{
    for (const char *t = u->tls_used; *t;) {
        if (!strncmp(t, "rc", 2) || !strncmp(t, "dc", 2))
            return true;
        t += strcspn(t, " ");
        t += strspn(t, " ");
    }
    return false;
}

/* Whether UCX's tcp transport runs on a device other than loopback. */
static bool tcp_beyond_loopback(const ucx_t *u)
{
    for (const char *t = u->tls_used; (t = strstr(t, "tcp/")) != NULL;) {
        t += 4;
        if (strncmp(t, "lo", 2) != 0 || (t[2] != ' ' && t[2] != '\0'))
            return true;
    }
    return false;
}

/* UCX is not made to be unloaded: libucm's hooks and libucs's global
 * state outlive a dlclose of this plugin, and a UCX mapped again later in
 * the same process crashes in its own log handler.  So the UCX libraries
 * this plugin brought in stay for the life of the process (NODELETE),
 * and in the global scope (GLOBAL), where UCX's transport modules look
 * for their symbols.  NOLOAD: the copies already mapped, never others. */
static void ucx_pin(void)
{
    static const char *const libs[] = {"libucs.so.0", "libucm.so.0",
                                       "libuct.so.0", "libucp.so.0"};

    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++)
        (void)dlopen(libs[i], RTLD_LAZY | RTLD_GLOBAL | RTLD_NODELETE |
                                  RTLD_NOLOAD);
}

static xfer_status_t context_open(ucx_t *u)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    ucp_config_t *conf;
    ucp_params_t prm;
    ucs_status_t s;

    pthread_once(&once, ucx_pin);
    if ((s = ucp_config_read(NULL, NULL, &conf)) != UCS_OK)
        return UERR(u, XFER_ERR_BACKEND, "ucx: reading the UCX_* settings: "
                    "%s", ucs_status_string(s));
    /* Per instance, so two instances of one process can use different
     * transports: the context's own copy of the settings, not setenv. */
    if (u->cfg.tls && u->cfg.tls[0] &&
        (s = ucp_config_modify(conf, "TLS", u->cfg.tls)) != UCS_OK) {
        ucp_config_release(conf);
        return UERR(u, XFER_ERR_CONFIG, "ucx: tls '%s': %s", u->cfg.tls,
                    ucs_status_string(s));
    }
    if (u->cfg.devices && u->cfg.devices[0] &&
        (s = ucp_config_modify(conf, "NET_DEVICES", u->cfg.devices)) !=
            UCS_OK) {
        ucp_config_release(conf);
        return UERR(u, XFER_ERR_CONFIG, "ucx: devices '%s': %s",
                    u->cfg.devices, ucs_status_string(s));
    }
    memset(&prm, 0, sizeof prm);
    prm.field_mask = UCP_PARAM_FIELD_FEATURES |
                     UCP_PARAM_FIELD_MT_WORKERS_SHARED |
                     UCP_PARAM_FIELD_NAME;
    prm.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    /* Registrations run beside worker progress on other threads. */
    prm.mt_workers_shared = 1;
    prm.name = "xfer";
    s = ucp_init(&prm, conf, &u->ctx);
    ucp_config_release(conf);
    if (s != UCS_OK) {
        u->ctx = NULL;
        return UERR(u, s == UCS_ERR_NO_DEVICE || s == UCS_ERR_NO_ELEM
                           ? XFER_ERR_CONFIG : XFER_ERR_BACKEND,
                    "ucx: ucp_init with tls '%s' devices '%s': %s%s",
                    u->cfg.tls ? u->cfg.tls : "",
                    u->cfg.devices ? u->cfg.devices : "",
                    ucs_status_string(s),
                    s == UCS_ERR_NO_DEVICE ? " (no transport or device of "
                    "those is usable here; xfer-info ucx lists what UCX "
                    "finds)" : "");
    }
    note_transports(u);
    return XFER_OK;
}

static xfer_status_t worker_open(ucx_t *u, unsigned i)
{
    ucx_worker_t *w = &u->w[i];
    ucp_worker_params_t wp;
    ucp_worker_attr_t wa;
    struct epoll_event ev = {.events = EPOLLIN};
    ucs_status_t s;

    w->u = u;
    w->idx = i;
    w->efd = -1;
    pthread_mutex_init(&w->lock, NULL);
    memset(&wp, 0, sizeof wp);
    /* Serialised by w->lock: cheaper than UCX's own locks, and ours
     * are needed anyway for the requests and endpoints it guards. */
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
    if ((s = ucp_worker_create(u->ctx, &wp, &w->w)) != UCS_OK) {
        w->w = NULL;
        return UERR(u, XFER_ERR_BACKEND, "ucx: ucp_worker_create: %s",
                    ucs_status_string(s));
    }
    memset(&wa, 0, sizeof wa);
    wa.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
    if (ucp_worker_query(w->w, &wa) == UCS_OK &&
        (i == 0 || wa.max_am_header < u->max_am_hdr))
        u->max_am_hdr = wa.max_am_header;
    if (u->max_am_hdr < XFER__NS_HDR_LEN)
        return UERR(u, XFER_ERR_BACKEND, "ucx: the transports allow active "
                    "message headers of %zu bytes, xfer needs %u",
                    u->max_am_hdr, XFER__NS_HDR_LEN);
    if (ucp_worker_get_efd(w->w, &w->efd) != UCS_OK)
        w->efd = -1;
    ev.data.u32 = i;
    if (w->efd >= 0 && epoll_ctl(u->epfd, EPOLL_CTL_ADD, w->efd, &ev) < 0)
        return UERR(u, XFER_ERR_BACKEND, "ucx: epoll_ctl: %s",
                    strerror(errno));
    return ucx__am_register(u, w);
}

static void worker_close(ucx_t *u, unsigned i)
{
    ucx_worker_t *w = &u->w[i];

    if (w->w == NULL && w->u == NULL)
        return;
    if (w->w) {
        /* Let UCP finish what it still holds (endpoint closes, sends, the
         * connection setup it answers for peers) before it is torn down,
         * bounded: UCX 1.13 aborts in ucp_worker_destroy when a wireup
         * reply is still queued on a tcp endpoint (openucx/ucx#8175,
         * fixed in 1.14; docs/security.md, "UCX"). */
        ucp_request_param_t prm = {0};
        void *r = ucp_worker_flush_nbx(w->w, &prm);
        uint64_t end = xfer__now_ms() + 1000;

        while (UCS_PTR_IS_PTR(r) &&
               ucp_request_check_status(r) == UCS_INPROGRESS &&
               xfer__now_ms() < end)
            ucp_worker_progress(w->w);
        if (UCS_PTR_IS_PTR(r))
            ucp_request_free(r);
        /* Then until it has been quiet a while: a peer's connection
         * being set up shows up as progress. */
        for (unsigned quiet = 0; quiet < 10 && xfer__now_ms() < end;) {
            if (ucp_worker_progress(w->w) > 0) {
                quiet = 0;
            } else {
                quiet++;
                usleep(1000);
            }
        }
        ucp_worker_destroy(w->w);
        ucx__req_free_held(w);
    }
    w->w = NULL;
    pthread_mutex_destroy(&w->lock);
}

static xfer_status_t ucx_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be)
{
    ucx_t *u = calloc(1, sizeof *u);
    xfer_status_t st;

    if (u == NULL)
        return host->error(host->ctx, XFER_ERR_NOMEM, "ucx: out of memory");
    u->host = host;
    u->cfg = *(const ucx_config_t *)config;
    u->nw = (unsigned)u->cfg.workers;
    u->epfd = -1;
    xfer__hwctl_init(&u->ctl);
    /* The initiators' notification sessions: at most max_conns of them
     * (docs/wire-ucx.md). */
    if (xfer__ns_init(&u->ns, host, "ucx", u->cfg.notif_window,
                      u->cfg.lim.max_conns) != XFER_OK) {
        st = UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
        goto fail;
    }
    if (!strcmp(u->cfg.error_mode, "peer")) {
        u->peer_mode = true;
    } else if (strcmp(u->cfg.error_mode, "none") != 0) {
        st = UERR(u, XFER_ERR_CONFIG, "ucx: error_mode '%s': use peer or "
                  "none", u->cfg.error_mode);
        goto fail;
    }
    if ((u->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        st = UERR(u, XFER_ERR_BACKEND, "ucx: epoll_create1: %s",
                  strerror(errno));
        goto fail;
    }
    if ((st = context_open(u)) != XFER_OK)
        goto fail;
    for (unsigned i = 0; i < u->nw; i++)
        if ((st = worker_open(u, i)) != XFER_OK)
            goto fail;
    if ((st = ucx__ctl_open(u)) != XFER_OK)
        goto fail;
    if ((st = ucx__info_build(u)) != XFER_OK)
        goto fail;
    /* UCX's tcp listens on every interface it was given and checks no
     * remote key: say so once, as tcp says so of a listener without a
     * secret. */
    if (!keys_checked(u) && tcp_beyond_loopback(u))
        ULOG(u, XFER_LOG_WARN, "UCX transports %s check no remote key: "
             "whoever reaches them can read and write this process's "
             "memory (restrict devices, or see docs/security.md, \"UCX\")",
             u->tls_used);
    ULOG(u, XFER_LOG_DEBUG, "UCX %s, %u worker(s), error_mode=%s, "
         "transports: %s", ucp_get_version_string(), u->nw,
         u->cfg.error_mode, u->tls_used[0] ? u->tls_used : "?");
    *be = u;
    return XFER_OK;
fail:
    ucx_fini(u);
    return st;
}

static void ucx_fini(xfer_be_t *u)
{
    if (u == NULL)
        return;
    xfer__hwctl_close(&u->ctl);
    xfer__ns_fini(&u->ns);
    for (unsigned i = 0; i < u->nw; i++)
        worker_close(u, i);
    if (u->ctx)
        ucp_cleanup(u->ctx);
    if (u->epfd >= 0)
        close(u->epfd);
    free(u);
}

static xfer_status_t ucx_conn_info(xfer_be_t *u, void *buf, size_t *len)
{
    if (*len < u->info_len) {
        *len = u->info_len;
        return UERR(u, XFER_ERR_INVALID, "ucx: connection info needs %zu "
                    "bytes", u->info_len);
    }
    memcpy(buf, u->info, u->info_len);
    *len = u->info_len;
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */
/* ------------------------------------------------------------------ */

/* One worker: drain UCP's events (bounded, so one busy worker cannot
 * starve the others), then the deadline of its oldest request.  A
 * worker another thread holds is that thread's to progress now. */
static int worker_progress(ucx_t *u, ucx_worker_t *w)
{
    int n = 0;
    unsigned k;

    if (pthread_mutex_trylock(&w->lock) != 0)
        return 1; /* busy: do not let the caller sleep */
    for (int i = 0; i < 64 && (k = ucp_worker_progress(w->w)) > 0; i++)
        n += (int)k;
    if (!xfer__dlist_empty(&w->inflight))
        n += ucx__req_timeouts(u, w, xfer__now_ms());
    pthread_mutex_unlock(&w->lock);
    return n;
}

static int ucx_progress(xfer_be_t *u)
{
    int n = 0;

    for (unsigned i = 0; i < u->nw; i++)
        n += worker_progress(u, &u->w[i]);
    n += xfer__hwctl_progress(&u->ctl, false);
    n += xfer__ns_progress(&u->ns); /* what sessions held, as room came */
    return n;
}

static xfer_status_t ucx_event_fd(xfer_be_t *u, int *fd)
{
    *fd = u->epfd;
    return XFER_OK;
}

/* Sleep only when every worker is armed (ucp_worker_arm answers BUSY
 * while events wait) and no request waits for a deadline that only a
 * progress call would notice. */
static xfer_status_t ucx_arm(xfer_be_t *u)
{
    /* What the channel has (progress looks at it once a millisecond):
     * handled before sleeping, or the thread would wake for it again. */
    if (xfer__hwctl_progress(&u->ctl, true) > 0)
        return XFER_ERR_BUSY;
    for (unsigned i = 0; i < u->nw; i++) {
        ucx_worker_t *w = &u->w[i];
        ucs_status_t s;
        bool busy;

        if (w->efd < 0)
            return XFER_ERR_BUSY;
        pthread_mutex_lock(&w->lock);
        s = ucp_worker_arm(w->w);
        /* An armed worker's fd fires for completions and incoming
         * operations (tcp's sockets, the shared-memory transports'
         * signals), so requests in flight alone do not keep the thread
         * awake: it would take the CPU a target on the same host needs.
         * Only just after a post it polls a little longer, where a reply
         * is due within microseconds; deadlines are seen by the thread's
         * timed passes. */
        busy = s != UCS_OK ||
               (!xfer__dlist_empty(&w->inflight) &&
                xfer__now_ms() - w->last_post_ms < UCX_ARM_AFTER_POST_MS);
        pthread_mutex_unlock(&w->lock);
        if (busy)
            return XFER_ERR_BUSY;
    }
    /* Acks to send, tokens to ask for: a progress call does them, and
     * no fd fires for them (ask_due may be set by a post's pump). */
    if (xfer__hwctl_due(&u->ctl))
        return XFER_ERR_BUSY;
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* What xfer-info and xfer_backend_state() show                        */
/* ------------------------------------------------------------------ */

static xfer_status_t ucx_probe(char *buf, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    ucp_params_t prm = {.field_mask = UCP_PARAM_FIELD_FEATURES,
                        .features = UCP_FEATURE_RMA | UCP_FEATURE_AM};
    ucx_t tmp;
    ucs_status_t s;

    pthread_once(&once, ucx_pin);
    memset(&tmp, 0, sizeof tmp);
    s = ucp_init(&prm, NULL, &tmp.ctx);
    if (s != UCS_OK) {
        snprintf(buf, len, "UCX %s: ucp_init failed: %s",
                 ucp_get_version_string(), ucs_status_string(s));
        return XFER_OK;
    }
    note_transports(&tmp);
    ucp_cleanup(tmp.ctx);
    snprintf(buf, len, "UCX %s (UCX_TLS=%s); transports/devices found: %s",
             ucp_get_version_string(),
             getenv("UCX_TLS") ? getenv("UCX_TLS") : "all",
             tmp.tls_used[0] ? tmp.tls_used : "none");
    return XFER_OK;
}

/* Within XFER_STATE_MAX: what matters first (whether keys are checked,
 * the transports), the counters last. */
static xfer_status_t ucx_state(xfer_be_t *u, char *buf, size_t len)
{
    snprintf(buf, len, "remote keys %s; transports: %s; %u worker(s), "
             "error_mode=%s; endpoints %lu made, %lu failed; notifications "
             "%lu sent, %lu received, %lu dropped",
             keys_checked(u) ? "checked by the NIC"
                             : "not checked at the target (docs/security.md)",
             u->tls_used[0] ? u->tls_used : "?", u->nw, u->cfg.error_mode,
             atomic_load(&u->eps_created), atomic_load(&u->eps_failed),
             atomic_load(&u->notifs_sent), atomic_load(&u->ns.recv),
             atomic_load(&u->ns.dropped) + atomic_load(&u->notifs_dropped));
    return XFER_OK;
}
