/* mem.c - registrations of the verbs plugin: one ibv_reg_mr per rail with
 * exactly the rights the core passes, the rkeys as the public part, and a
 * deregistration that outlasts the NIC's use of the memory. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugins/verbs/verbs.h"

/* The public part (docs/wire-verbs.md), little-endian:
 *   0 "XVRK"   4 u8 rails   5 u8[3] zero   8 u32 rkey per rail */
#define KEY_MAGIC "XVRK"
#define KEY_HEAD 8u

static void dereg_all(vb_mem_t *m)
{
    for (unsigned r = 0; r < VB_MAX_RAILS; r++)
        if (m->mr[r] != NULL) {
            VAPI->dereg_mr(m->mr[r]);
            m->mr[r] = NULL;
        }
}

xfer_status_t vb__mem_register(vb_t *v, const xfer_be_region_t *r,
                               void **mem)
{
    vb_mem_t *m = calloc(1, sizeof *m);
    /* LOCAL_WRITE always: a READ lands here, and the NIC wants it with
     * any remote write right.  Peers get exactly what the core says. */
    int access = IBV_ACCESS_LOCAL_WRITE |
                 (r->access & XFER_ACCESS_WRITE ? IBV_ACCESS_REMOTE_WRITE : 0) |
                 (r->access & XFER_ACCESS_READ ? IBV_ACCESS_REMOTE_READ : 0);

    if (m == NULL)
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    m->base = r->addr;
    m->len = r->len;
    /* Pinning gigabytes takes a while: under mr_lock only, never under
     * lock, so transfers go on meanwhile. */
    pthread_mutex_lock(&v->mr_lock);
    for (unsigned k = 0; k < v->nrails; k++) {
        m->mr[k] = VAPI->reg_mr(v->rail[k].pd, (void *)r->addr,
                                r->len ? r->len : 1, access);
        if (m->mr[k] == NULL && errno == EFAULT &&
            !(access & IBV_ACCESS_REMOTE_WRITE)) {
            /* Read-only memory (a PROT_READ mapping of a file) cannot be
             * pinned for writing: registered to be read only, a READ
             * landing in it then fails with a local protection error. */
            access &= ~IBV_ACCESS_LOCAL_WRITE;
            m->read_only = true;
            m->mr[k] = VAPI->reg_mr(v->rail[k].pd, (void *)r->addr,
                                    r->len ? r->len : 1, access);
        }
        if (m->mr[k] == NULL) {
            int e = errno;

            dereg_all(m);
            pthread_mutex_unlock(&v->mr_lock);
            free(m);
            return VERR(v, e == ENOMEM || e == EPERM || e == EAGAIN
                               ? XFER_ERR_NOMEM : XFER_ERR_BACKEND,
                        VB_NAME ": ibv_reg_mr of %zu bytes on %s: %s%s",
                        r->len, v->rail[k].name, strerror(e),
                        e == ENOMEM || e == EPERM || e == EAGAIN
                            ? " (pinned memory is limited by RLIMIT_MEMLOCK: "
                              "ulimit -l)"
                            : "");
        }
        m->lkey[k] = m->mr[k]->lkey;
        m->rkey[k] = m->mr[k]->rkey;
    }
    pthread_mutex_unlock(&v->mr_lock);
    *mem = m;
    return XFER_OK;
}

/* Requests that may still have the NIC touch m: their connections are
 * failed, which stops the NIC, before m goes (lock held). */
static bool stop_users(vb_t *v, const vb_mem_t *m, bool force)
{
    bool any = false;

restart:
    for (xfer__dlink_t *k = xfer__dlist_head(&v->reqs); k;
         k = xfer__dlist_next(k)) {
        vb_req_t *q = VB_REQ(k, ilink);
        vb_peer_t *p = q->peer;
        bool uses = false;

        /* Landed data is done with memory, even while its notification
         * waits to go. */
        if (q->pending == 0 && (q->done || vb__req_landed(q)))
            continue;
        for (size_t i = 0; i < q->nlmems && !uses; i++)
            uses = q->lmems[i] == m;
        if (!uses)
            continue;
        any = true;
        if (!force)
            return true;
        /* The users fail for what happened; the rest of that connection
         * only because the NIC has to stop. */
        vb__req_fail(v, q, XFER_ERR_ACCESS, "its local memory was "
                     "deregistered while the transfer was in flight");
        vb__conn_fail(v, p, XFER_ERR_REMOTE_DISCONNECT, "the "
                      "connection was reset to stop the NIC using "
                      "memory being deregistered");
        goto restart;
    }
    return any;
}

void vb__mem_deregister(vb_t *v, void *mem)
{
    vb_mem_t *m = mem;
    uint64_t end = xfer__now_ms() + v->cfg.timeout_ms;

    /* Bounded: transfers using it get the time they have anyway, then
     * their connections are reset. */
    for (;;) {
        bool busy;

        pthread_mutex_lock(&v->lock);
        vb__cq_drain(v, 1024);
        busy = stop_users(v, m, xfer__now_ms() >= end);
        pthread_mutex_unlock(&v->lock);
        if (!busy || xfer__now_ms() >= end)
            break;
        usleep(200);
    }
    pthread_mutex_lock(&v->mr_lock);
    dereg_all(m);
    pthread_mutex_unlock(&v->mr_lock);
    free(m);
}

xfer_status_t vb__mem_pack(vb_t *v, void *mem, void *buf, size_t *len)
{
    vb_mem_t *m = mem;
    unsigned char *b = buf;
    size_t need = KEY_HEAD + 4u * v->nrails;

    if (*len < need) {
        *len = need;
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": a key needs %zu bytes",
                    need);
    }
    memset(b, 0, KEY_HEAD);
    memcpy(b, KEY_MAGIC, 4);
    b[4] = (unsigned char)v->nrails;
    for (unsigned r = 0; r < v->nrails; r++) {
        uint32_t k = htole32(m->rkey[r]);

        memcpy(b + KEY_HEAD + 4u * r, &k, 4);
    }
    *len = need;
    return XFER_OK;
}

xfer_status_t vb__rmem_unpack(vb_t *v, vb_peer_t *p,
                              const xfer_be_rregion_t *r, const void *buf,
                              size_t len, void **rmem)
{
    const unsigned char *b = buf;
    vb_rmem_t *rm;
    unsigned n;

    (void)r;
    if (len < KEY_HEAD || memcmp(b, KEY_MAGIC, 4) != 0 || b[5] || b[6] ||
        b[7])
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": agent '%s': a region's "
                    "key of %zu bytes is not a verbs key", p->name, len);
    n = b[4];
    if (n == 0 || n > VB_MAX_RAILS || len != KEY_HEAD + 4u * n)
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": agent '%s': a region's "
                    "key names %u rails in %zu bytes", p->name, n, len);
    if (n < p->nrails)
        return VERR(v, XFER_ERR_INVALID, VB_NAME ": agent '%s': a region's "
                    "key has %u rails, its connection info %u", p->name, n,
                    p->nrails);
    if ((rm = calloc(1, sizeof *rm)) == NULL)
        return VERR(v, XFER_ERR_NOMEM, VB_NAME ": out of memory");
    rm->nrails = n;
    for (unsigned k = 0; k < n; k++) {
        uint32_t x;

        memcpy(&x, b + KEY_HEAD + 4u * k, 4);
        rm->rkey[k] = le32toh(x);
    }
    rm->peer = p;
    atomic_fetch_add(&p->refs, 1);
    *rmem = rm;
    return XFER_OK;
}

void vb__rmem_release(vb_t *v, void *rmem)
{
    vb_rmem_t *rm = rmem;

    (void)v;
    vb__peer_put(rm->peer);
    free(rm);
}
