/* registry.h - a table of address ranges with O(log n) lookup by address
 * and by key; used for local registrations and for a peer's regions. */
#ifndef XFER_CORE_REGISTRY_H
#define XFER_CORE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

/* Embed first in any struct the registry indexes. */
typedef struct xfer__range {
    uint64_t addr;
    uint64_t len;
    uint64_t key;
} xfer__range_t;

/* Two sorted arrays of the same ranges: one by (addr, len), one by key.
 * max_end[i] is the largest end among by_addr[0..i], which bounds the
 * backwards walk when ranges overlap; with disjoint ranges a lookup is
 * one binary search.  Inserts and removals are O(n) (memmove), lookups
 * O(log n): registration is rare, lookup is on every request.  Many
 * ranges at once (a peer's metadata) go through xfer__reg_merge, which
 * is O(n log n) whatever their order. */
typedef struct xfer__registry {
    xfer__range_t **by_addr;
    xfer__range_t **by_key;
    uint64_t *max_end;
    size_t count;
    size_t cap;
} xfer__registry_t;

void xfer__reg_init(xfer__registry_t *reg);
/* Frees the arrays, not the ranges. */
void xfer__reg_fini(xfer__registry_t *reg);

/* XFER_ERR_EXISTS if a range with the same key is already there. */
xfer_status_t xfer__reg_insert(xfer__registry_t *reg, xfer__range_t *r);
/* A new table in *out holding old's ranges and the n ranges of add
 * (whose order it changes), built without touching old: the caller
 * builds it outside its lock and swaps it in under it, then frees the
 * old arrays with xfer__reg_fini.  O((old + n) + n log n).
 * XFER_ERR_EXISTS (out untouched) when a key is there twice,
 * XFER_ERR_NOMEM when the arrays cannot be allocated. */
xfer_status_t xfer__reg_merge(const xfer__registry_t *old,
                              xfer__range_t **add, size_t n,
                              xfer__registry_t *out);
/* XFER_ERR_NOT_FOUND if r is not in the table. */
xfer_status_t xfer__reg_remove(xfer__registry_t *reg, xfer__range_t *r);

/* The range that contains [addr, addr+len): among several, the one with
 * the highest start.  NULL if none, or len == 0, or addr+len overflows. */
xfer__range_t *xfer__reg_find(const xfer__registry_t *reg, uint64_t addr,
                              uint64_t len);
xfer__range_t *xfer__reg_find_key(const xfer__registry_t *reg, uint64_t key);

/* Which ranges a lookup may return: a range of another kind (another
 * memory type) must not hide one of the right kind at the same place. */
typedef bool (*xfer__reg_match_t)(const xfer__range_t *r, const void *arg);
/* xfer__reg_find among the ranges match accepts (match NULL: all). */
xfer__range_t *xfer__reg_find_match(const xfer__registry_t *reg,
                                    uint64_t addr, uint64_t len,
                                    xfer__reg_match_t match, const void *arg);

/* A range that shares at least one byte with [addr, addr+len), the one
 * with the highest start; NULL if none, len == 0 or addr+len overflows. */
xfer__range_t *xfer__reg_overlap(const xfer__registry_t *reg, uint64_t addr,
                                 uint64_t len);

#endif /* XFER_CORE_REGISTRY_H */
