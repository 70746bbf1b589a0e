/* mem.c - registrations of the ucx plugin (ucp_mem_map of the user's own
 * memory, its packed rkey as the public part) and peers' remote keys. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdlib.h>
#include <string.h>

#include "plugins/ucx/ucx.h"

xfer_status_t ucx__mem_register(ucx_t *u, const xfer_be_region_t *r,
                                void **mem)
{
    ucp_mem_map_params_t mp = {0};
    ucx_mem_t *m = calloc(1, sizeof *m);
    ucs_status_t s;

    if (m == NULL)
        return UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
    /* The user's memory itself, never a copy; the rights peers get are
     * exactly the region's, so a NIC refuses the rest. */
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                    UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                    UCP_MEM_MAP_PARAM_FIELD_PROT;
    mp.address = (void *)r->addr;
    mp.length = r->len;
    mp.prot = UCP_MEM_MAP_PROT_LOCAL_READ | UCP_MEM_MAP_PROT_LOCAL_WRITE;
    if (r->access & XFER_ACCESS_READ)
        mp.prot |= UCP_MEM_MAP_PROT_REMOTE_READ;
    if (r->access & XFER_ACCESS_WRITE)
        mp.prot |= UCP_MEM_MAP_PROT_REMOTE_WRITE;
    if ((s = ucp_mem_map(u->ctx, &mp, &m->memh)) != UCS_OK) {
        free(m);
        return UERR(u, s == UCS_ERR_NO_MEMORY ? XFER_ERR_NOMEM
                                              : XFER_ERR_BACKEND,
                    "ucx: ucp_mem_map of %zu bytes at %p: %s", r->len,
                    (void *)r->addr, ucs_status_string(s));
    }
    s = ucp_rkey_pack(u->ctx, m->memh, &m->rkey, &m->rkey_len);
    if (s != UCS_OK || m->rkey_len > XFER_BE_BLOB_MAX) {
        if (s == UCS_OK)
            ucp_rkey_buffer_release(m->rkey);
        ucp_mem_unmap(u->ctx, m->memh);
        free(m);
        return UERR(u, XFER_ERR_BACKEND, "ucx: packing the remote key: %s",
                    s == UCS_OK ? "larger than the public part may be"
                                : ucs_status_string(s));
    }
    *mem = m;
    return XFER_OK;
}

void ucx__mem_deregister(ucx_t *u, void *mem)
{
    ucx_mem_t *m = mem;

    ucp_rkey_buffer_release(m->rkey);
    ucp_mem_unmap(u->ctx, m->memh);
    free(m);
}

xfer_status_t ucx__mem_pack(ucx_t *u, void *mem, void *buf, size_t *len)
{
    ucx_mem_t *m = mem;

    if (*len < m->rkey_len) {
        *len = m->rkey_len;
        return UERR(u, XFER_ERR_INVALID, "ucx: the packed key needs %zu "
                    "bytes", m->rkey_len);
    }
    memcpy(buf, m->rkey, m->rkey_len);
    *len = m->rkey_len;
    return XFER_OK;
}

ucp_rkey_h ucx__rkey(ucx_t *u, ucx_rmem_t *rm, unsigned wi, ucx_ep_t *e)
{
    ucs_status_t s;

    if (rm->rk[wi] != NULL && rm->gen[wi] == e->gen)
        return rm->rk[wi];
    /* Unpacked on an endpoint that was replaced: again, on the new one.
     * Without peer error handling UCP may still hold puts of the old
     * endpoint that use the old key: it stays until the region goes. */
    if (rm->rk[wi] != NULL && u->peer_mode) {
        ucp_rkey_destroy(rm->rk[wi]);
    } else if (rm->rk[wi] != NULL) {
        struct ucx_stale_rkey *st = malloc(sizeof *st);

        if (st == NULL) {
            UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
            return NULL;
        }
        st->rk = rm->rk[wi];
        st->next = rm->stale[wi];
        rm->stale[wi] = st;
    }
    rm->rk[wi] = NULL;
    s = ucp_ep_rkey_unpack(e->ep, rm->packed, &rm->rk[wi]);
    if (s != UCS_OK) {
        rm->rk[wi] = NULL;
        UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': its packed remote key "
             "of %zu bytes does not unpack: %s", rm->peer->name, rm->len,
             ucs_status_string(s));
        return NULL;
    }
    rm->gen[wi] = e->gen;
    return rm->rk[wi];
}

xfer_status_t ucx__rmem_unpack(ucx_t *u, ucx_peer_t *p,
                               const xfer_be_rregion_t *r, const void *buf,
                               size_t len, void **rmem)
{
    ucx_rmem_t *rm;

    (void)r;
    if (len == 0 || len > XFER_BE_BLOB_MAX || buf == NULL)
        return UERR(u, XFER_ERR_INVALID, "ucx: agent '%s': a packed remote "
                    "key of %zu bytes", p->name, len);
    if (!(rm = calloc(1, sizeof *rm + len)))
        return UERR(u, XFER_ERR_NOMEM, "ucx: out of memory");
    rm->peer = p;
    rm->len = len;
    memcpy(rm->packed, buf, len);
    /* Kept packed: each worker unpacks it at its first post to the peer.
     * UCX parses worker addresses and packed keys without defending
     * against malformed bytes (a corrupted address aborts the process in
     * ucp_ep_create), so nothing from a peer's metadata reaches UCX when
     * it is loaded, only when the application transfers to that peer or
     * connects it (docs/security.md, "UCX"). */
    atomic_fetch_add(&p->refs, 1);
    *rmem = rm;
    return XFER_OK;
}

void ucx__rmem_release(ucx_t *u, void *rmem)
{
    ucx_rmem_t *rm = rmem;

    for (unsigned i = 0; i < u->nw; i++) {
        struct ucx_stale_rkey *st;

        if (rm->rk[i] == NULL && rm->stale[i] == NULL)
            continue;
        pthread_mutex_lock(&u->w[i].lock);
        if (rm->rk[i] != NULL)
            ucp_rkey_destroy(rm->rk[i]);
        while ((st = rm->stale[i]) != NULL) {
            rm->stale[i] = st->next;
            ucp_rkey_destroy(st->rk);
            free(st);
        }
        pthread_mutex_unlock(&u->w[i].lock);
    }
    ucx__peer_put(rm->peer);
    free(rm);
}
