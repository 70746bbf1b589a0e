/* rail.c - the verbs plugin's devices: which ones the parameters name,
 * their port and GID, and each one's PD, completion channel and CQ. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/verbs.h"

static const char *link_name(uint8_t link)
{
    return link == VB_LINK_ETH ? "RoCE" : "IB";
}

static unsigned mtu_bytes(uint8_t mtu)
{
    return mtu >= VB_MTU_MIN && mtu <= VB_MTU_MAX ? 128u << mtu : 0;
}

static bool gid_zero(const uint8_t *g)
{
    for (int i = 0; i < 16; i++)
        if (g[i])
            return false;
    return true;
}

static bool gid_v4(const uint8_t *g)
{
    static const uint8_t pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    return memcmp(g, pre, sizeof pre) == 0;
}

/* The GID a RoCE port is reached by, unless gid_index names one.  HCAs
 * list each address once per RoCE version (mlx5: v1 then v2); v1 is
 * Ethernet-only and misses the DSCP/PFC set-up of most lossless fabrics,
 * so RoCE v2 comes first: an IPv4-mapped v2 entry, then any v2 entry,
 * then (a provider that types none) the first IPv4-mapped, then the first
 * set.  -1 when the port has none. */
static int pick_gid(struct ibv_context *ctx, uint8_t port, int len,
                    union ibv_gid *out)
{
    int best = -1, rank = 0;
    union ibv_gid g;

    for (int i = 0; i < len; i++) {
        enum ibv_gid_type t = IBV_GID_TYPE_ROCE_V1;
        int r;

        if (VAPI->query_gid(ctx, port, i, &g) != 0 || gid_zero(g.raw))
            continue;
        if (VAPI->query_gid_type(ctx, port, i, &t) != 0)
            t = IBV_GID_TYPE_ROCE_V1; /* untyped: rank it as v1 */
        r = (t == IBV_GID_TYPE_ROCE_V2 ? 2 : 0) + (gid_v4(g.raw) ? 1 : 0) +
            1;
        if (r > rank) {
            rank = r;
            best = i;
            *out = g;
        }
    }
    return best;
}

/* Port p of ctx if active, or with want 0 the first active one: its
 * number, or 0 with why set. */
static uint8_t pick_port(struct ibv_context *ctx, unsigned nports,
                         unsigned want, struct ibv_port_attr *pa, char *why,
                         size_t size)
{
    for (unsigned p = want ? want : 1; p <= (want ? want : nports); p++) {
        memset(pa, 0, sizeof *pa);
        if (VAPI->query_port(ctx, (uint8_t)p, pa) != 0) {
            snprintf(why, size, "port %u cannot be queried", p);
            continue;
        }
        if (pa->state == IBV_PORT_ACTIVE)
            return (uint8_t)p;
        snprintf(why, size, "port %u is not active (state %d)", p,
                 (int)pa->state);
    }
    if (want == 0 && nports == 0)
        snprintf(why, size, "it has no port");
    return 0;
}

/* Open device dev as rail r (its name for sentences). */
static xfer_status_t rail_open(vb_t *v, unsigned r, struct ibv_device *dev,
                               char *why, size_t size)
{
    vb_rail_t *rl = &v->rail[r];
    struct ibv_device_attr da;
    struct ibv_port_attr pa;
    union ibv_gid gid;
    uint64_t cqe;
    int fl;

    snprintf(rl->name, sizeof rl->name, "%s", VAPI->get_device_name(dev));
    if ((rl->ctx = VAPI->open_device(dev)) == NULL) {
        snprintf(why, size, "%s cannot be opened: %s", rl->name,
                 strerror(errno));
        return XFER_ERR_BACKEND;
    }
    /* Asynchronous events are read without blocking, from progress. */
    if (rl->ctx->async_fd >= 0 &&
        ((fl = fcntl(rl->ctx->async_fd, F_GETFL)) < 0 ||
         fcntl(rl->ctx->async_fd, F_SETFL, fl | O_NONBLOCK) < 0)) {
        snprintf(why, size, "%s: its event fd: %s", rl->name,
                 strerror(errno));
        return XFER_ERR_BACKEND;
    }
    memset(&da, 0, sizeof da);
    if (VAPI->query_device(rl->ctx, &da) != 0) {
        snprintf(why, size, "%s cannot be queried", rl->name);
        return XFER_ERR_BACKEND;
    }
    if ((rl->port = pick_port(rl->ctx, da.phys_port_cnt,
                              (unsigned)v->cfg.port, &pa, why,
                              size)) == 0) {
        char inner[160];

        snprintf(inner, sizeof inner, "%s", why);
        snprintf(why, size, "%s: %s", rl->name, inner);
        return XFER_ERR_NOT_FOUND;
    }
    rl->addr.link = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? VB_LINK_ETH
                                                             : VB_LINK_IB;
    rl->addr.mtu = (uint8_t)pa.active_mtu;
    rl->addr.lid = pa.lid;
    rl->max_msg = pa.max_msg_sz ? pa.max_msg_sz : (1u << 30);
    rl->max_rd_atom = da.max_qp_rd_atom > 16 ? 16 : da.max_qp_rd_atom;
    if (rl->max_rd_atom < 1)
        rl->max_rd_atom = 1;
    rl->max_init_rd = da.max_qp_init_rd_atom > 16 ? 16
                                                  : da.max_qp_init_rd_atom;
    if (rl->max_init_rd < 1)
        rl->max_init_rd = 1;
    rl->gid_index = (int)v->cfg.gid_index;
    if (rl->gid_index >= 0) {
        if (rl->gid_index >= pa.gid_tbl_len ||
            VAPI->query_gid(rl->ctx, rl->port, rl->gid_index, &gid) != 0 ||
            gid_zero(gid.raw)) {
            snprintf(why, size, "%s port %u has no GID at gid_index %d",
                     rl->name, rl->port, rl->gid_index);
            return XFER_ERR_CONFIG;
        }
        memcpy(rl->addr.gid, gid.raw, 16);
    } else if (rl->addr.link == VB_LINK_ETH) {
        if ((rl->gid_index = pick_gid(rl->ctx, rl->port, pa.gid_tbl_len,
                                      &gid)) < 0) {
            snprintf(why, size, "%s port %u is Ethernet (RoCE) but has no "
                     "GID: give the interface an IP address", rl->name,
                     rl->port);
            return XFER_ERR_NOT_FOUND;
        }
        memcpy(rl->addr.gid, gid.raw, 16);
    } else if (VAPI->query_gid(rl->ctx, rl->port, 0, &gid) == 0) {
        /* InfiniBand without a GRH of its own: the port GID is still
         * published, so a peer that routes by GID (its gid_index set)
         * reaches this port. */
        memcpy(rl->addr.gid, gid.raw, 16);
    }
    if (rl->addr.link == VB_LINK_IB &&
        (rl->addr.lid == 0 || rl->addr.lid >= 0xc000)) {
        snprintf(why, size, "%s port %u is InfiniBand without a unicast "
                 "LID (%u): is a subnet manager running?", rl->name,
                 rl->port, rl->addr.lid);
        return XFER_ERR_NOT_FOUND;
    }
    if ((rl->pd = VAPI->alloc_pd(rl->ctx)) == NULL ||
        (rl->ch = VAPI->create_comp_channel(rl->ctx)) == NULL) {
        snprintf(why, size, "%s: no protection domain or completion "
                 "channel: %s", rl->name, strerror(errno));
        return XFER_ERR_BACKEND;
    }
    /* Events are taken without blocking, from the first (closing the
     * rail takes what is left, and must not wait for more). */
    if ((fl = fcntl(rl->ch->fd, F_GETFL)) < 0 ||
        fcntl(rl->ch->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(why, size, "%s: the completion channel: %s", rl->name,
                 strerror(errno));
        return XFER_ERR_BACKEND;
    }
    /* Room for every completion that can be outstanding: each QP's send
     * queue (one per batch at most, a batch being at least one work
     * request) and a target's receive buffers. */
    cqe = v->cfg.max_qps * (v->cfg.sq_depth + v->cfg.notif_window + 1);
    if ((da.max_cqe > 0 && cqe > (uint64_t)da.max_cqe) || cqe > INT_MAX) {
        snprintf(why, size, "%s holds at most %d completions per CQ; "
                 "max_qps * (sq_depth + notif_window + 1) is %llu: lower "
                 "one of them", rl->name, da.max_cqe > 0 ? da.max_cqe : INT_MAX,
                 (unsigned long long)cqe);
        return XFER_ERR_CONFIG;
    }
    rl->cqe = (int)cqe;
    if ((rl->cq = VAPI->create_cq(rl->ctx, rl->cqe, v, rl->ch, 0)) == NULL) {
        snprintf(why, size, "%s: ibv_create_cq of %d entries: %s", rl->name,
                 rl->cqe, strerror(errno));
        return XFER_ERR_BACKEND;
    }
    return XFER_OK;
}

/* The next name of a comma-separated list into out; false at its end. */
static bool next_name(const char **s, char *out, size_t size)
{
    const char *p = *s, *e;
    size_t n;

    while (*p == ',' || *p == ' ')
        p++;
    if (*p == '\0')
        return false;
    for (e = p; *e && *e != ','; e++)
        ;
    n = (size_t)(e - p);
    while (n > 0 && p[n - 1] == ' ')
        n--;
    if (n >= size)
        n = size - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    *s = e;
    return true;
}

static struct ibv_device *find_dev(struct ibv_device **list, int n,
                                   const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(VAPI->get_device_name(list[i]), name) == 0)
            return list[i];
    return NULL;
}

/* "mlx5_0:1 IB LID 3 MTU 4096, mlx5_1:1 ..." or "... RoCE GID 3 ...". */
static void describe(vb_t *v)
{
    size_t n = 0;

    for (unsigned r = 0; r < v->nrails && n < sizeof v->desc; r++) {
        const vb_rail_t *rl = &v->rail[r];

        n += (size_t)snprintf(v->desc + n, sizeof v->desc - n,
                              "%s%s:%u %s %s %d MTU %u", r ? ", " : "",
                              rl->name, rl->port, link_name(rl->addr.link),
                              rl->addr.link == VB_LINK_IB ? "LID" : "GID",
                              rl->addr.link == VB_LINK_IB ? rl->addr.lid
                                                          : rl->gid_index,
                              mtu_bytes(rl->addr.mtu));
    }
}

xfer_status_t vb__rails_open(vb_t *v)
{
    int n = 0;
    struct ibv_device **list = VAPI->get_device_list(&n);
    const char *names = v->cfg.devices[0] ? v->cfg.devices : v->cfg.device;
    char why[256] = "", name[64];
    xfer_status_t st = XFER_OK;

    if (list == NULL || n <= 0) {
        st = VERR(v, XFER_ERR_NOT_FOUND, VB_NAME ": no RDMA device (%s%s%s)",
                  VAPI->what, list == NULL && errno ? ": " : "",
                  list == NULL && errno ? strerror(errno) : "");
        goto out;
    }
    if (names[0] == '\0') {
        /* The first device with an active port. */
        for (int i = 0; i < n && v->nrails == 0; i++) {
            v->nrails = 1;
            if ((st = rail_open(v, 0, list[i], why, sizeof why)) != XFER_OK) {
                vb__rails_close(v);
                v->nrails = 0;
            }
        }
        if (v->nrails == 0) {
            st = VERR(v, XFER_ERR_NOT_FOUND, VB_NAME ": no RDMA device with "
                      "an active port (the last: %s)", why);
            goto out;
        }
    } else {
        const char *s = names;

        while (next_name(&s, name, sizeof name)) {
            struct ibv_device *d = find_dev(list, n, name);

            if (v->nrails == VB_MAX_RAILS) {
                st = VERR(v, XFER_ERR_CONFIG, VB_NAME ": devices: at most "
                          "%u", VB_MAX_RAILS);
                goto out;
            }
            for (unsigned r = 0; r < v->nrails; r++)
                if (strcmp(v->rail[r].name, name) == 0) {
                    st = VERR(v, XFER_ERR_CONFIG, VB_NAME ": devices: '%s' "
                              "named twice", name);
                    goto out;
                }
            if (d == NULL) {
                char have[160];
                size_t k = 0;

                have[0] = '\0';
                for (int i = 0; i < n && k < sizeof have; i++)
                    k += (size_t)snprintf(have + k, sizeof have - k, "%s%s",
                                          i ? " " : "",
                                          VAPI->get_device_name(list[i]));
                st = VERR(v, XFER_ERR_CONFIG, VB_NAME ": no RDMA device "
                          "'%s' (this host has: %s)", name, have);
                goto out;
            }
            v->nrails++;
            if ((st = rail_open(v, v->nrails - 1, d, why, sizeof why)) !=
                XFER_OK) {
                st = VERR(v, st, VB_NAME ": %s", why);
                goto out;
            }
        }
        if (v->nrails == 0) {
            st = VERR(v, XFER_ERR_CONFIG, VB_NAME ": devices names no "
                      "device");
            goto out;
        }
    }
    /* Rails of one instance share its peers' QPs' fate: they must all
     * be reached the same way. */
    for (unsigned r = 1; r < v->nrails; r++)
        if (v->rail[r].addr.link != v->rail[0].addr.link) {
            st = VERR(v, XFER_ERR_CONFIG, VB_NAME ": %s is %s and %s is %s: "
                      "the devices of one instance must share a link layer",
                      v->rail[0].name, link_name(v->rail[0].addr.link),
                      v->rail[r].name, link_name(v->rail[r].addr.link));
            goto out;
        }
    describe(v);
out:
    if (list != NULL)
        VAPI->free_device_list(list);
    return st;
}

void vb__rails_close(vb_t *v)
{
    for (unsigned r = 0; r < VB_MAX_RAILS; r++) {
        vb_rail_t *rl = &v->rail[r];

        if (rl->cq) {
            struct ibv_cq *cq;
            void *ctx;

            /* The channel is non-blocking from its creation: this takes
             * what is there and never waits for more. */
            while (rl->ch && VAPI->get_cq_event(rl->ch, &cq, &ctx) == 0)
                rl->events++;
            if (rl->events)
                VAPI->ack_cq_events(rl->cq, rl->events);
            rl->events = 0;
            VAPI->destroy_cq(rl->cq);
        }
        if (rl->ch)
            VAPI->destroy_comp_channel(rl->ch);
        if (rl->pd)
            VAPI->dealloc_pd(rl->pd);
        if (rl->ctx)
            VAPI->close_device(rl->ctx);
        memset(rl, 0, sizeof *rl);
    }
}

void vb__rails_probe(char *buf, size_t len)
{
    int n = 0;
    struct ibv_device **list = VAPI->get_device_list(&n);
    size_t k = 0;

    if (list == NULL || n <= 0) {
        snprintf(buf, len, "no RDMA device (%s%s%s)", VAPI->what,
                 list == NULL ? ": " : "",
                 list == NULL ? strerror(errno) : "");
        if (list != NULL)
            VAPI->free_device_list(list);
        return;
    }
    k = (size_t)snprintf(buf, len, "%s:", VAPI->what);
    for (int i = 0; i < n && k + 1 < len; i++) {
        struct ibv_context *ctx = VAPI->open_device(list[i]);
        struct ibv_device_attr da;
        struct ibv_port_attr pa;
        const char *state = "cannot be opened";
        char pbuf[64] = "";

        if (ctx != NULL) {
            memset(&da, 0, sizeof da);
            state = "no active port";
            if (VAPI->query_device(ctx, &da) == 0)
                for (unsigned p = 1; p <= da.phys_port_cnt; p++) {
                    memset(&pa, 0, sizeof pa);
                    if (VAPI->query_port(ctx, (uint8_t)p, &pa) == 0 &&
                        pa.state == IBV_PORT_ACTIVE) {
                        snprintf(pbuf, sizeof pbuf, "port %u active (%s, "
                                 "MTU %u)", p,
                                 pa.link_layer == IBV_LINK_LAYER_ETHERNET
                                     ? "RoCE" : "IB",
                                 mtu_bytes((uint8_t)pa.active_mtu));
                        state = pbuf;
                        break;
                    }
                }
            VAPI->close_device(ctx);
        }
        k += (size_t)snprintf(buf + k, len - k, "%s %s %s", i ? "," : "",
                              VAPI->get_device_name(list[i]), state);
    }
    VAPI->free_device_list(list);
}
