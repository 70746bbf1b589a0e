/* mem.c - registrations of the ofi plugin, as the provider's mr_mode asks
 * (keys it picks or we do, endpoint binding, local descriptors), and the
 * remote keys of peers' regions. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugins/ofi/ofi.h"

/* The public part of a region (docs/wire-ofi.md), little-endian:
 *   0 u32 magic "XFOK"   4 u32 zero   8 u64 the key peers present */
#define PACK_LEN 16u

/* How many keys to try when this side picks them and one is taken. */
#define KEY_TRIES 8

/* Registration calls on the domain run under mr_lock (or ep_lock, for a
 * provider that only serialises per domain); ep_held: the caller holds
 * ep_lock already. */
static void mr_lock(ofi_t *o, bool ep_held)
{
    if (o->serial_mr) {
        if (!ep_held)
            pthread_mutex_lock(&o->ep_lock);
    } else {
        pthread_mutex_lock(&o->mr_lock);
    }
}

static void mr_unlock(ofi_t *o, bool ep_held)
{
    if (o->serial_mr) {
        if (!ep_held)
            pthread_mutex_unlock(&o->ep_lock);
    } else {
        pthread_mutex_unlock(&o->mr_lock);
    }
}

/* fi_mr_reg with the key the provider wants: its own (FI_MR_PROV_KEY),
 * else one we pick, unique in the domain (the region's random key first,
 * which is as hard to guess as the core's); bound to the endpoint and
 * enabled where FI_MR_ENDPOINT says so (that touches the endpoint:
 * ep_lock). */
static int mr_reg(ofi_t *o, void *addr, size_t len, uint64_t access,
                  uint64_t want, bool ep_held, struct fid_mr **mr)
{
    int r = -FI_ENOKEY;

    mr_lock(o, ep_held);
    for (int i = 0; i < KEY_TRIES && r == -FI_ENOKEY; i++) {
        uint64_t key = 0;

        if (!(o->mr_mode & FI_MR_PROV_KEY))
            key = i == 0 && want ? want
                                 : atomic_fetch_add(&o->next_key, 0x9e37u);
        r = fi_mr_reg(o->domain, addr, len, access, 0, key, 0, mr, NULL);
        if (o->mr_mode & FI_MR_PROV_KEY)
            break;
    }
    mr_unlock(o, ep_held);
    if (r != 0) {
        *mr = NULL;
        return r;
    }
    if (o->mr_mode & FI_MR_ENDPOINT) {
        if (!ep_held)
            pthread_mutex_lock(&o->ep_lock);
        if ((r = fi_mr_bind(*mr, &o->ep->fid, 0)) == 0)
            r = fi_mr_enable(*mr);
        if (!ep_held)
            pthread_mutex_unlock(&o->ep_lock);
        if (r != 0) {
            ofi__mr_close(o, *mr, ep_held);
            *mr = NULL;
            return r;
        }
    }
    return 0;
}

void ofi__mr_close(ofi_t *o, struct fid_mr *mr, bool ep_held)
{
    if (mr == NULL)
        return;
    mr_lock(o, ep_held);
    fi_close(&mr->fid);
    mr_unlock(o, ep_held);
}

xfer_status_t ofi__mem_register(ofi_t *o, const xfer_be_region_t *r,
                                void **mem)
{
    ofi_mem_t *m = calloc(1, sizeof *m);
    /* Local use: the source of writes, the sink of reads.  Remote: what
     * the region grants peers, exactly, so the provider refuses the rest. */
    uint64_t access = FI_READ | FI_WRITE;
    int e;

    if (m == NULL)
        return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
    if (r->access & XFER_ACCESS_READ)
        access |= FI_REMOTE_READ;
    if (r->access & XFER_ACCESS_WRITE)
        access |= FI_REMOTE_WRITE;
    if ((e = mr_reg(o, (void *)r->addr, r->len, access, r->key, false,
                    &m->mr))) {
        free(m);
        return OERR(o, ofi__status(e) == XFER_ERR_NOMEM ? XFER_ERR_NOMEM
                                                        : XFER_ERR_BACKEND,
                    "ofi: fi_mr_reg of %zu bytes at %p (%s): %s", r->len,
                    (void *)r->addr, o->desc, fi_strerror(-e));
    }
    m->desc = fi_mr_desc(m->mr);
    m->key = fi_mr_key(m->mr);
    m->base = r->addr;
    if (m->key == FI_KEY_NOTAVAIL) {
        ofi__mr_close(o, m->mr, false);
        free(m);
        return OERR(o, XFER_ERR_NOT_SUPPORTED, "ofi: %s gives no key for a "
                    "registration (raw keys are not supported)", o->desc);
    }
    *mem = m;
    return XFER_OK;
}

void ofi__mem_deregister(ofi_t *o, void *mem)
{
    ofi_mem_t *m = mem;
    uint64_t end = xfer__now_ms() + o->cfg.timeout_ms;
    bool held;

    /* A request released after it failed or timed out may still have
     * operations the provider holds on this memory (a READ's answer
     * from a peer that was stopped, say), which would land in it after
     * the application freed it.  Wait for their completions, bounded by
     * timeout_ms (the ABI allows a bounded wait here); past it, say so
     * (docs/api.md, "ofi": free such memory only once the peer is gone
     * or answered). */
    for (;;) {
        pthread_mutex_lock(&o->ep_lock);
        ofi__cq_drain(o, 1024);
        held = ofi__req_uses(o, m);
        pthread_mutex_unlock(&o->ep_lock);
        if (!held || xfer__now_ms() >= end)
            break;
        usleep(100);
    }
    if (held)
        OLOG(o, XFER_LOG_WARN, "ofi: deregistering %p while the provider "
             "still holds operations on it after timeout_ms (%llu ms)",
             (void *)m->base, (unsigned long long)o->cfg.timeout_ms);
    /* Closing it makes the provider refuse a peer's access from now on. */
    ofi__mr_close(o, m->mr, false);
    free(m);
}

xfer_status_t ofi__mem_pack(ofi_t *o, void *mem, void *buf, size_t *len)
{
    ofi_mem_t *m = mem;
    unsigned char *b = buf;
    uint32_t magic = htole32(OFI_MAGIC_KEY);
    uint64_t key = htole64(m->key);

    if (*len < PACK_LEN) {
        *len = PACK_LEN;
        return OERR(o, XFER_ERR_INVALID, "ofi: the packed key needs %u "
                    "bytes", PACK_LEN);
    }
    memset(b, 0, PACK_LEN);
    memcpy(b, &magic, 4);
    memcpy(b + 8, &key, 8);
    *len = PACK_LEN;
    return XFER_OK;
}

xfer_status_t ofi__rmem_unpack(ofi_t *o, ofi_peer_t *p,
                               const xfer_be_rregion_t *r, const void *buf,
                               size_t len, void **rmem)
{
    const unsigned char *b = buf;
    uint32_t magic, zero;
    ofi_rmem_t *rm;

    if (len != PACK_LEN)
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': a packed key of "
                    "%zu bytes (%u expected)", p->name, len, PACK_LEN);
    memcpy(&magic, b, 4);
    memcpy(&zero, b + 4, 4);
    if (le32toh(magic) != OFI_MAGIC_KEY || zero != 0)
        return OERR(o, XFER_ERR_INVALID, "ofi: agent '%s': a packed key "
                    "that is not an ofi key", p->name);
    if ((rm = calloc(1, sizeof *rm)) == NULL)
        return OERR(o, XFER_ERR_NOMEM, "ofi: out of memory");
    memcpy(&rm->key, b + 8, 8);
    rm->key = le64toh(rm->key);
    rm->base = r->addr;
    rm->peer = p;
    atomic_fetch_add(&p->refs, 1);
    *rmem = rm;
    return XFER_OK;
}

void ofi__rmem_release(ofi_t *o, void *rmem)
{
    ofi_rmem_t *rm = rmem;

    (void)o;
    ofi__peer_put(rm->peer);
    free(rm);
}

xfer_status_t ofi__mr_local(ofi_t *o, void *addr, size_t len,
                            uint64_t access, bool ep_held, struct fid_mr **mr)
{
    int e;

    *mr = NULL;
    if (!(o->mr_mode & FI_MR_LOCAL))
        return XFER_OK;
    if ((e = mr_reg(o, addr, len, access, 0, ep_held, mr)) != 0)
        return OERR(o, XFER_ERR_BACKEND, "ofi: registering %zu bytes of "
                    "notification buffers (%s): %s", len, o->desc,
                    fi_strerror(-e));
    return XFER_OK;
}
