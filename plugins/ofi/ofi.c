/* ofi.c - the libfabric backend: RDM endpoints, fi_writemsg/fi_readmsg with
 * FI_DELIVERY_COMPLETE, notifications as messages after the data.
 * This file is the table, the parameters and the instance's life; ofi.h
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

#include "plugins/ofi/ofi.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

/* The libfabric API this plugin is written against. */
#define OFI_API FI_VERSION(1, 17)

static xfer_status_t ofi_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be);
static void ofi_fini(xfer_be_t *o);
static xfer_status_t ofi_conn_info(xfer_be_t *o, void *buf, size_t *len);
static int ofi_progress(xfer_be_t *o);
static xfer_status_t ofi_event_fd(xfer_be_t *o, int *fd);
static xfer_status_t ofi_arm(xfer_be_t *o);
static xfer_status_t ofi_probe(char *buf, size_t len);
static xfer_status_t ofi_state(xfer_be_t *o, char *buf, size_t len);

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(ofi_config_t, f), lo, hi }
static const xfer_param_t ofi_params[] = {
    P("provider", XFER_PARAM_STRING, "",
      "libfabric provider, as FI_PROVIDER names it (tcp;ofi_rxm, shm, "
      "verbs;ofi_rxm, efa, cxi ...); empty: FI_PROVIDER, else libfabric's "
      "first choice",
      provider, 1, 0),
    P("domain", XFER_PARAM_STRING, "",
      "domain (the NIC or interface: lo, eth0, mlx5_0, rdmap0s6-rdm ...); "
      "empty: the provider's first",
      domain, 1, 0),
    P("fabric", XFER_PARAM_STRING, "",
      "fabric name (an IP subnet for tcp); empty: the provider's first",
      fabric, 1, 0),
    P("node", XFER_PARAM_STRING, "",
      "local address the endpoint binds to (tcp;ofi_rxm: a numeric IP); "
      "empty: the domain's",
      node, 1, 0),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a posted transfer not complete this long fails with XFER_ERR_TIMEOUT; "
      "also the control channel's",
      timeout_ms, 1, 3600000),
    P("notif_rx", XFER_PARAM_UINT, "32",
      "receive buffers posted for notifications (64 KiB each); the "
      "provider holds what arrives beyond them",
      notif_rx, 2, 4096),
    P("more", XFER_PARAM_UINT, "1",
      "1: the operations of one post go as a batch (FI_MORE on all but the "
      "last); 0: each on its own",
      more, 0, 1),
    P("post_ops", XFER_PARAM_UINT, "16",
      "operations a post hands to the provider itself; the rest of a "
      "request's go from progress (the progress thread, or the caller's "
      "wait), so a post of many descriptors returns at once",
      post_ops, 1, 1 << 20),
    P("cq_batch", XFER_PARAM_UINT, "32",
      "completion entries read per fi_cq_read", cq_batch, 1, 256),
    XFER__HWCTL_PARAMS(ofi_config_t),
    XFER__STREAM_LIMIT_PARAMS(ofi_config_t, lim),
};
#undef P

extern const xfer_backend_ops_t XFER_BACKEND_SYMBOL(ofi);
const xfer_backend_ops_t XFER_BACKEND_SYMBOL(ofi) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "ofi",
        .version = PACKAGE_VERSION,
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                XFER_CAP_REMOTE | XFER_CAP_LOCAL | XFER_CAP_HW_KEYS,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = ofi_params,
    .nparams = sizeof ofi_params / sizeof ofi_params[0],
    .config_size = sizeof(ofi_config_t),
    .init = ofi_init,
    .fini = ofi_fini,
    .conn_info = ofi_conn_info,
    .peer_add = ofi__peer_add,
    .peer_remove = ofi__peer_remove,
    .mem_register = ofi__mem_register,
    .mem_deregister = ofi__mem_deregister,
    .mem_pack = ofi__mem_pack,
    .rmem_unpack = ofi__rmem_unpack,
    .rmem_release = ofi__rmem_release,
    .req_create = ofi__req_create,
    .req_post = ofi__req_post,
    .req_check = ofi__req_check,
    /* No req_cancel: fi_cancel takes back receives, not RMA operations a
     * provider has handed to the NIC or the peer. */
    .req_release = ofi__req_release,
    .notif_send = ofi__notif_send,
    .progress = ofi_progress,
    .event_fd = ofi_event_fd,
    .probe = ofi_probe,
    .state = ofi_state,
    .flags = XFER_BE_THREAD_SAFE | XFER_BE_POLL,
    .arm = ofi_arm,
    .peer_connect = ofi__peer_connect,
};

/* ------------------------------------------------------------------ */
/* Small things every file uses                                        */
/* ------------------------------------------------------------------ */

xfer_status_t ofi__status(int err)
{
    switch (err < 0 ? -err : err) {
    case 0:
        return XFER_OK;
    case FI_ENOMEM:
        return XFER_ERR_NOMEM;
    case FI_ETIMEDOUT:
        return XFER_ERR_TIMEOUT;
    case FI_EACCES:
    case FI_EPERM:
    case FI_EKEYREJECTED:
    case FI_ENOKEY:
    case FI_EFAULT:
        return XFER_ERR_ACCESS;
    case FI_EINVAL:
    case FI_EMSGSIZE:
    case FI_ETOOSMALL:
        return XFER_ERR_INVALID;
    case FI_ENOSYS:
    case FI_EOPNOTSUPP:
        return XFER_ERR_NOT_SUPPORTED;
    default: /* FI_EIO, FI_ECONNREFUSED, FI_ECONNRESET, FI_ECANCELED ... */
        return XFER_ERR_REMOTE_DISCONNECT;
    }
}

/* ------------------------------------------------------------------ */
/* Choosing the provider                                               */
/* ------------------------------------------------------------------ */

/* What xfer needs of a provider, and every mr_mode this plugin honours
 * (mem.c): providers that need more (FI_MR_RAW keys, FI_MR_HMEM) are
 * left out by fi_getinfo rather than misused. */
static struct fi_info *hints_new(const ofi_config_t *c, int threading)
{
    struct fi_info *h = fi_allocinfo();

    if (h == NULL)
        return NULL;
    h->ep_attr->type = FI_EP_RDM;
    h->caps = FI_RMA | FI_MSG | FI_READ | FI_WRITE | FI_REMOTE_READ |
              FI_REMOTE_WRITE | FI_SEND | FI_RECV;
    /* The op contexts carry struct fi_context2 first. */
    h->mode = FI_CONTEXT | FI_CONTEXT2;
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
                              FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                              FI_MR_ENDPOINT;
    /* ep_lock serialises every call on the endpoint, its CQ and AV;
     * registrations run beside them (FI_THREAD_ENDPOINT), or under
     * ep_lock as well where the provider offers only FI_THREAD_DOMAIN. */
    h->domain_attr->threading = threading;
    h->domain_attr->av_type = FI_AV_TABLE;
    /* A completion means the data is visible at the target (DESIGN.md):
     * a provider that cannot promise it is not used. */
    h->tx_attr->op_flags = FI_DELIVERY_COMPLETE;
    if (c != NULL) {
        if (c->provider && c->provider[0])
            h->fabric_attr->prov_name = strdup(c->provider);
        if (c->domain && c->domain[0])
            h->domain_attr->name = strdup(c->domain);
        if (c->fabric && c->fabric[0])
            h->fabric_attr->name = strdup(c->fabric);
    }
    return h;
}

/* libfabric keeps what fi_getinfo first set up (its providers, their
 * strings) until the process ends, and a libfabric unloaded with this
 * plugin and loaded again sets it all up again: about 3 KiB lost each
 * time.  So the libfabric this plugin brought in stays for the life of
 * the process (NODELETE); NOLOAD: the copy already mapped, never another. */
static void pin(void)
{
    (void)dlopen("libfabric.so.1", RTLD_LAZY | RTLD_NODELETE | RTLD_NOLOAD);
}

static void ofi_pin(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, pin);
}

/* Whether an entry before i has i's domain and fabric (fi_getinfo lists
 * each pair once per address format and threading level). */
static bool listed(const struct fi_info *all, const struct fi_info *i)
{
    for (const struct fi_info *j = all; j != i; j = j->next)
        if (!strcmp(j->domain_attr->name, i->domain_attr->name) &&
            !strcmp(j->fabric_attr->name, i->fabric_attr->name))
            return true;
    return false;
}

static xfer_status_t choose(ofi_t *o)
{
    static const int levels[] = {FI_THREAD_ENDPOINT, FI_THREAD_DOMAIN};
    const char *node = o->cfg.node && o->cfg.node[0] ? o->cfg.node : NULL;
    int r = -FI_ENODATA;

    ofi_pin();
    for (size_t i = 0; i < 2 && r == -FI_ENODATA; i++) {
        struct fi_info *h = hints_new(&o->cfg, levels[i]);

        if (h == NULL)
            return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
        r = fi_getinfo(OFI_API, node, NULL, node ? FI_SOURCE : 0, h,
                       &o->info);
        fi_freeinfo(h);
        o->serial_mr = levels[i] == FI_THREAD_DOMAIN;
    }
    if (r != 0) {
        o->info = NULL;
        return OERR(o, XFER_ERR_CONFIG, "ofi: no libfabric provider offers "
                    "RDM endpoints with RMA, messages and delivery-complete "
                    "for provider '%s' domain '%s' fabric '%s' node '%s': "
                    "%s (xfer-info ofi lists what is found)",
                    o->cfg.provider, o->cfg.domain, o->cfg.fabric,
                    o->cfg.node, fi_strerror(-r));
    }
    /* libfabric 1.17 does not filter on the domain and fabric names of
     * the hints (tcp lists every interface whatever is asked): the first
     * that matches, in libfabric's order of preference, is ours. */
    {
        struct fi_info *pick = NULL, *prev = NULL;
        char seen[200] = "";
        size_t n = 0;

        for (struct fi_info *i = o->info; i; prev = i, i = i->next) {
            const char *d = i->domain_attr->name, *f = i->fabric_attr->name;

            if ((!o->cfg.domain[0] || (d && !strcmp(d, o->cfg.domain))) &&
                (!o->cfg.fabric[0] || (f && !strcmp(f, o->cfg.fabric)))) {
                pick = i;
                break;
            }
            if (n < sizeof seen && !listed(o->info, i))
                n += (size_t)snprintf(seen + n, sizeof seen - n, "%s%s/%s",
                                      n ? " " : "", d ? d : "?",
                                      f ? f : "?");
        }
        if (pick == NULL) {
            OERR(o, XFER_ERR_CONFIG, "ofi: provider '%s' has no domain '%s' "
                 "on fabric '%s' here (domain/fabric found: %s)",
                 o->cfg.provider, o->cfg.domain, o->cfg.fabric, seen);
            return XFER_ERR_CONFIG;
        }
        if (prev != NULL) {
            prev->next = NULL;
            fi_freeinfo(o->info);
            o->info = pick;
        }
        if (pick->next) {
            fi_freeinfo(pick->next);
            pick->next = NULL;
        }
    }
    o->mr_mode = (uint64_t)o->info->domain_attr->mr_mode;
    o->max_msg = o->info->ep_attr->max_msg_size;
    o->shm = strcmp(o->info->fabric_attr->prov_name, "shm") == 0;
    /* libfabric 1.17's shm answers a delivery-complete write only once
     * the target process has taken it, and reads those answers from one
     * queue in post order (smr_progress_resp stops at the first not yet
     * given): a target killed before it answers holds back every later
     * completion of this endpoint, to every peer, for good; a stopped
     * one until it runs.  Without the flag, a write from memory with
     * FI_MR_VIRT_ADDR (no RMA ordering asked) is copied by this process
     * itself, process_vm_writev inside fi_writemsg (smr_rma_fast), where
     * CMA works; where it does not, a write above the inject size still
     * completes only once the target has placed it (its CMA, SAR
     * buffers, mmap).  Only the inline and inject protocols of small
     * writes complete at queueing: those keep the flag. */
    o->dc_max = o->shm ? o->info->tx_attr->inject_size : SIZE_MAX;
    if (o->info->domain_attr->mr_key_size > 8)
        return OERR(o, XFER_ERR_NOT_SUPPORTED, "ofi: provider %s uses keys "
                    "of %zu bytes; xfer carries 8", o->info->fabric_attr->
                    prov_name, o->info->domain_attr->mr_key_size);
    snprintf(o->desc, sizeof o->desc, "provider %s, domain %s, fabric %s",
             o->info->fabric_attr->prov_name, o->info->domain_attr->name,
             o->info->fabric_attr->name);
    return XFER_OK;
}

#define FI_TRY(o, call, what)                                               \
    do {                                                                    \
        int r_ = (call);                                                    \
        if (r_ != 0)                                                        \
            return OERR(o, XFER_ERR_BACKEND, "ofi: %s (%s): %s", what,      \
                        (o)->desc, fi_strerror(-r_));                       \
    } while (0)

static void close_fid(struct fid *f)
{
    if (f != NULL)
        fi_close(f);
}

static xfer_status_t open_endpoint(ofi_t *o)
{
    struct fi_cq_attr cqa = {0};
    struct fi_av_attr ava = {0};

    FI_TRY(o, fi_fabric(o->info->fabric_attr, &o->fabric, NULL), "fi_fabric");
    FI_TRY(o, fi_domain(o->fabric, o->info, &o->domain, NULL), "fi_domain");
    ava.type = FI_AV_TABLE;
    FI_TRY(o, fi_av_open(o->domain, &ava, &o->av, NULL), "fi_av_open");
    /* Sized for what may be outstanding: the provider's queues and the
     * receive buffers.  A wait fd lets the progress thread sleep. */
    cqa.format = FI_CQ_FORMAT_DATA;
    cqa.size = o->info->tx_attr->size + o->info->rx_attr->size +
               o->cfg.notif_rx;
    cqa.wait_obj = FI_WAIT_FD;
    if (fi_cq_open(o->domain, &cqa, &o->cq, NULL) != 0) {
        cqa.wait_obj = FI_WAIT_NONE;
        FI_TRY(o, fi_cq_open(o->domain, &cqa, &o->cq, NULL), "fi_cq_open");
    } else if (fi_control(&o->cq->fid, FI_GETWAIT, &o->cq_fd) != 0) {
        o->cq_fd = -1;
    }
    FI_TRY(o, fi_endpoint(o->domain, o->info, &o->ep, NULL), "fi_endpoint");
    /* A target's part of a peer's WRITE or READ (shm: answering it so it
     * completes) makes no completion here, so without a wait fd nothing
     * would say the thread is busy and it would sleep between a ping's
     * operations.  A counter of them, where the provider keeps one
     * (FI_RMA_EVENT), is that sign. */
    if (o->cq_fd < 0 && (o->info->caps & FI_RMA_EVENT)) {
        struct fi_cntr_attr ca = {.events = FI_CNTR_EVENTS_COMP,
                                  .wait_obj = FI_WAIT_NONE};

        if (fi_cntr_open(o->domain, &ca, &o->rcntr, NULL) != 0 ||
            fi_ep_bind(o->ep, &o->rcntr->fid,
                       FI_REMOTE_WRITE | FI_REMOTE_READ) != 0) {
            close_fid(o->rcntr ? &o->rcntr->fid : NULL);
            o->rcntr = NULL;
        }
    }
    FI_TRY(o, fi_ep_bind(o->ep, &o->av->fid, 0), "binding the AV");
    FI_TRY(o, fi_ep_bind(o->ep, &o->cq->fid, FI_TRANSMIT | FI_RECV),
           "binding the CQ");
    FI_TRY(o, fi_enable(o->ep), "fi_enable");
    o->name_len = sizeof o->name;
    FI_TRY(o, fi_getname(&o->ep->fid, o->name, &o->name_len), "fi_getname");
    {
        size_t n = sizeof o->addr_str;

        if (fi_av_straddr(o->av, o->name, o->addr_str, &n) == NULL)
            snprintf(o->addr_str, sizeof o->addr_str, "?");
    }
    if (o->cq_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 1};

        if (epoll_ctl(o->epfd, EPOLL_CTL_ADD, o->cq_fd, &ev) < 0)
            return OERR(o, XFER_ERR_BACKEND, "ofi: epoll_ctl: %s",
                        strerror(errno));
    }
    return XFER_OK;
}


static xfer_status_t ofi_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be)
{
    ofi_t *o = calloc(1, sizeof *o);
    xfer_status_t st;
    uint64_t seed;

    if (o == NULL)
        return host->error(host->ctx, XFER_ERR_NOMEM, "ofi: out of memory");
    o->host = host;
    o->cfg = *(const ofi_config_t *)config;
    o->epfd = -1;
    o->cq_fd = -1;
    xfer__hwctl_init(&o->ctl);
    pthread_mutex_init(&o->ep_lock, NULL);
    pthread_mutex_init(&o->mr_lock, NULL);
    /* Keys this side asks for when the provider does not pick them: the
     * region's random key comes first (mem.c); a clash moves on from a
     * random start. */
    seed = (uint64_t)(uintptr_t)o ^ xfer__now_ms() << 20;
    atomic_init(&o->next_key, seed | 1u);
    if ((st = xfer__ns_init(&o->ns, host, "ofi", o->cfg.notif_window,
                            o->cfg.lim.max_conns)) != XFER_OK)
        goto fail;
    if ((o->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        st = OERR(o, XFER_ERR_BACKEND, "ofi: epoll_create1: %s",
                  strerror(errno));
        goto fail;
    }
    if ((st = choose(o)) != XFER_OK || (st = open_endpoint(o)) != XFER_OK ||
        (st = ofi__rx_open(o)) != XFER_OK ||
        (st = ofi__ctl_open(o)) != XFER_OK ||
        (st = ofi__info_build(o)) != XFER_OK)
        goto fail;
    ofi__local_add(o);
    o->local = true;
    OLOG(o, XFER_LOG_DEBUG, "ofi: %s, endpoint %s, mr_mode 0x%llx, "
         "progress %s, wait %s", o->desc, o->addr_str,
         (unsigned long long)o->mr_mode,
         o->info->domain_attr->data_progress == FI_PROGRESS_AUTO ? "auto"
                                                                 : "manual",
         o->cq_fd >= 0 ? "fd" : "none");
    *be = o;
    return XFER_OK;
fail:
    ofi_fini(o);
    return st;
}

static void ofi_fini(xfer_be_t *o)
{
    if (o == NULL)
        return;
    if (o->local)
        ofi__local_del(o);
    xfer__hwctl_close(&o->ctl);
    /* The endpoint first: no completion can come for what it still
     * holds once it is closed, and then what waited for one is freed. */
    close_fid(o->ep ? &o->ep->fid : NULL);
    o->ep = NULL;
    ofi__req_free_all(o);
    ofi__notif_free_all(o);
    ofi__rx_close(o);
    close_fid(o->av ? &o->av->fid : NULL);
    close_fid(o->rcntr ? &o->rcntr->fid : NULL);
    close_fid(o->cq ? &o->cq->fid : NULL);
    close_fid(o->domain ? &o->domain->fid : NULL);
    close_fid(o->fabric ? &o->fabric->fid : NULL);
    if (o->info)
        fi_freeinfo(o->info);
    xfer__ns_fini(&o->ns);
    if (o->epfd >= 0)
        close(o->epfd);
    pthread_mutex_destroy(&o->ep_lock);
    pthread_mutex_destroy(&o->mr_lock);
    free(o);
}

static xfer_status_t ofi_conn_info(xfer_be_t *o, void *buf, size_t *len)
{
    if (*len < o->info_len) {
        *len = o->info_len;
        return OERR(o, XFER_ERR_INVALID, "ofi: connection info needs %zu "
                    "bytes", o->info_len);
    }
    memcpy(buf, o->info_blob, o->info_len);
    *len = o->info_len;
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */
/* ------------------------------------------------------------------ */

int ofi__cq_drain(ofi_t *o, int max)
{
    struct fi_cq_data_entry ents[256];
    size_t batch = o->cfg.cq_batch;
    int n = 0;

    while (n < max) {
        ssize_t r = fi_cq_read(o->cq, ents, batch);

        if (r == -FI_EAVAIL) {
            struct fi_cq_err_entry e = {0};
            char why[256];
            ofi_ctx_t *c;

            if (fi_cq_readerr(o->cq, &e, 0) != 1)
                break;
            atomic_fetch_add(&o->cq_errors, 1);
            snprintf(why, sizeof why, "%s (%s)",
                     fi_cq_strerror(o->cq, e.prov_errno, e.err_data, NULL, 0),
                     fi_strerror(e.err));
            n++;
            if ((c = e.op_context) == NULL)
                continue;
            if (c->kind == OFI_OP_RMA)
                ofi__req_done(o, (ofi_op_t *)c, e.err ? -(int)e.err : -FI_EIO,
                              why);
            else if (c->kind == OFI_OP_SEND)
                ofi__notif_sent(o, c->obj, e.err ? -(int)e.err : -FI_EIO);
            else if (c->kind == OFI_OP_RECV)
                ofi__notif_recv(o, c->obj, 0, e.err ? -(int)e.err : -FI_EIO);
            continue;
        }
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++) {
            ofi_ctx_t *c = ents[i].op_context;

            if (c == NULL)
                continue;
            if (c->kind == OFI_OP_RMA)
                ofi__req_done(o, (ofi_op_t *)c, 0, NULL);
            else if (c->kind == OFI_OP_SEND)
                ofi__notif_sent(o, c->obj, 0);
            else if (c->kind == OFI_OP_RECV)
                ofi__notif_recv(o, c->obj, ents[i].len, 0);
        }
        n += (int)r;
        if ((size_t)r < batch)
            break;
    }
    return n;
}

static int ofi_progress(xfer_be_t *o)
{
    int n = 0;

    /* Woken after arming: a peer's operation here (a target's part of
     * a WRITE or READ makes no completion of its own) is the likeliest
     * reason, and another may follow at once: counted as activity, so
     * the progress thread polls a while (progress_spin_us) rather than
     * paying a wake-up for each. */
    if (atomic_exchange(&o->armed, false))
        n++;
    if (pthread_mutex_trylock(&o->ep_lock) == 0) {
        n += ofi__cq_drain(o, 1024);
        if (o->rcntr != NULL) {
            uint64_t c = fi_cntr_read(o->rcntr);

            n += c != o->rseen;
            o->rseen = c;
        }
        n += ofi__req_progress(o, xfer__now_ms());
        n += ofi__notif_retry(o);
        pthread_mutex_unlock(&o->ep_lock);
    } else {
        n = 1; /* another thread progresses it: do not let the caller
                  sleep */
    }
    n += xfer__hwctl_progress(&o->ctl, false);
    n += xfer__ns_progress(&o->ns);
    return n;
}

static xfer_status_t ofi_event_fd(xfer_be_t *o, int *fd)
{
    *fd = o->epfd;
    return XFER_OK;
}

/* Sleep only when the CQ's fd will fire for what comes (fi_trywait says
 * so, which for a manual-progress provider also means it has nothing to
 * progress) and nothing waits that only a progress call would do; a CQ
 * without a wait fd is polled every millisecond (XFER_IN_PROG). */
static xfer_status_t ofi_arm(xfer_be_t *o)
{
    struct fid *f;
    bool busy, poll = false;
    uint64_t now = xfer__now_ms();

    if (xfer__hwctl_progress(&o->ctl, true) > 0)
        return XFER_ERR_BUSY;
    pthread_mutex_lock(&o->ep_lock);
    f = &o->cq->fid;
    /* Operations to issue now keep the thread busy; ones waiting for a
     * connection to be remade (again_ms) or for room in the provider's
     * queue (sbacklog) are looked at every millisecond. */
    busy = (!xfer__dlist_empty(&o->reqs) &&
            now - o->last_post_ms < OFI_ARM_AFTER_POST_MS);
    for (xfer__dlink_t *k = xfer__dlist_head(&o->backlog); k && !busy;
         k = xfer__dlist_next(k)) {
        const ofi_req_t *q = XFER__DLIST_ENTRY(k, ofi_req_t, blink);

        if (q->nagain > 0 && now < q->again_ms)
            poll = true;
        else
            busy = true;
    }
    poll |= o->sbacklog != NULL;
    busy = busy ||
           (o->cq_fd >= 0 && fi_trywait(o->fabric, &f, 1) != FI_SUCCESS);
    pthread_mutex_unlock(&o->ep_lock);
    /* Held notifications are not a reason: the core wakes every backend
     * when the application takes some. */
    if (busy || xfer__hwctl_due(&o->ctl))
        return XFER_ERR_BUSY;
    atomic_store(&o->armed, true);
    /* Without a wait fd (shm) the CQ is looked at every millisecond. */
    return o->cq_fd >= 0 && !poll ? XFER_OK : XFER_IN_PROG;
}

/* ------------------------------------------------------------------ */
/* What xfer-info and xfer_backend_state() show                        */
/* ------------------------------------------------------------------ */

/* Providers found that offer what xfer needs, each once, in libfabric's
 * order of preference. */
static xfer_status_t ofi_probe(char *buf, size_t len)
{
    struct fi_info *h = hints_new(NULL, FI_THREAD_DOMAIN), *all = NULL;
    size_t n = 0;
    int r;

    ofi_pin();
    if (h == NULL)
        return XFER_ERR_NOMEM;
    r = fi_getinfo(OFI_API, NULL, NULL, 0, h, &all);
    fi_freeinfo(h);
    n = (size_t)snprintf(buf, len, "libfabric %u.%u; ",
                         FI_MAJOR(fi_version()), FI_MINOR(fi_version()));
    if (r != 0) {
        snprintf(buf + n, len - n, "no provider offers RDM endpoints with "
                 "RMA and delivery-complete here (%s)", fi_strerror(-r));
        return XFER_OK;
    }
    n += (size_t)snprintf(buf + n, len - n, "RDM providers with RMA:");
    for (struct fi_info *i = all; i && n + 1 < len; i = i->next) {
        const char *p = i->fabric_attr->prov_name;
        bool seen = false;

        for (struct fi_info *j = all; j != i; j = j->next)
            seen |= strcmp(j->fabric_attr->prov_name, p) == 0;
        if (!seen)
            n += (size_t)snprintf(buf + n, len - n, " %s", p);
    }
    fi_freeinfo(all);
    return XFER_OK;
}

/* Whether the provider checks a peer's key and rights at this target.
 * libfabric 1.17's shm does not: a READ, and a WRITE above the inject
 * size (choose), go by process_vm_readv/writev from the initiator, which
 * no key stops, and a small write with a bad key is dropped without an
 * answer (docs/security.md, "ofi").  The network providers
 * (ofi_rxm over tcp or verbs, efa, cxi) check them, in software or on
 * the NIC. */
static bool keys_checked(const ofi_t *o)
{
    const char *p = o->info->fabric_attr->prov_name;

    return strstr(p, "shm") == NULL && strstr(p, "sm2") == NULL;
}

/* Within XFER_STATE_MAX: what matters first (whether keys are checked,
 * the provider: a silent fall-back shows), the counters last. */
static xfer_status_t ofi_state(xfer_be_t *o, char *buf, size_t len)
{
    snprintf(buf, len, "remote keys %s; %s; %s progress; operations %lu "
             "posted, %lu -FI_EAGAIN, %lu errors; notifications %lu sent, "
             "%lu received, %lu dropped",
             keys_checked(o) ? "checked by the provider"
                             : "not checked at the target (docs/security.md)",
             o->desc,
             o->info->domain_attr->data_progress == FI_PROGRESS_AUTO
                 ? "auto" : "manual",
             atomic_load(&o->ops_posted), atomic_load(&o->eagain),
             atomic_load(&o->cq_errors), atomic_load(&o->notifs_sent),
             atomic_load(&o->ns.recv), atomic_load(&o->ns.dropped));
    return XFER_OK;
}
