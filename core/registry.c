/* registry.c - sorted tables of address ranges: every request resolves
 * its descriptors here, every incoming remote operation its key. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/registry.h"

void xfer__reg_init(xfer__registry_t *reg)
{
    memset(reg, 0, sizeof(*reg));
}

void xfer__reg_fini(xfer__registry_t *reg)
{
    free(reg->by_addr);
    free(reg->by_key);
    free(reg->max_end);
    memset(reg, 0, sizeof(*reg));
}

static int range_before(const xfer__range_t *a, const xfer__range_t *b)
{
    if (a->addr != b->addr)
        return a->addr < b->addr;
    if (a->len != b->len)
        return a->len < b->len;
    return a->key < b->key;
}

/* First index whose entry is not before r. */
static size_t addr_lower_bound(const xfer__registry_t *reg,
                               const xfer__range_t *r)
{
    size_t lo = 0, hi = reg->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (range_before(reg->by_addr[mid], r))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t key_lower_bound(const xfer__registry_t *reg, uint64_t key)
{
    size_t lo = 0, hi = reg->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (reg->by_key[mid]->key < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void recompute_max_end(xfer__registry_t *reg, size_t from)
{
    uint64_t m = from > 0 ? reg->max_end[from - 1] : 0;

    for (size_t i = from; i < reg->count; i++) {
        uint64_t end = reg->by_addr[i]->addr + reg->by_addr[i]->len;

        if (end > m)
            m = end;
        reg->max_end[i] = m;
    }
}

static int grow(xfer__registry_t *reg)
{
    size_t cap = reg->cap ? reg->cap * 2 : 16;
    xfer__range_t **a, **k;
    uint64_t *m;

    a = realloc(reg->by_addr, cap * sizeof(*a));
    if (a == NULL)
        return -1;
    reg->by_addr = a;
    k = realloc(reg->by_key, cap * sizeof(*k));
    if (k == NULL)
        return -1;
    reg->by_key = k;
    m = realloc(reg->max_end, cap * sizeof(*m));
    if (m == NULL)
        return -1;
    reg->max_end = m;
    reg->cap = cap;
    return 0;
}

xfer_status_t xfer__reg_insert(xfer__registry_t *reg, xfer__range_t *r)
{
    size_t ia, ik;

    ik = key_lower_bound(reg, r->key);
    if (ik < reg->count && reg->by_key[ik]->key == r->key)
        return XFER_ERR_EXISTS;
    if (reg->count == reg->cap && grow(reg) != 0)
        return XFER_ERR_NOMEM;

    ia = addr_lower_bound(reg, r);
    memmove(&reg->by_addr[ia + 1], &reg->by_addr[ia],
            (reg->count - ia) * sizeof(reg->by_addr[0]));
    reg->by_addr[ia] = r;
    memmove(&reg->by_key[ik + 1], &reg->by_key[ik],
            (reg->count - ik) * sizeof(reg->by_key[0]));
    reg->by_key[ik] = r;
    reg->count++;
    recompute_max_end(reg, ia);
    return XFER_OK;
}

static int cmp_addr(const void *x, const void *y)
{
    const xfer__range_t *a = *(xfer__range_t *const *)x;
    const xfer__range_t *b = *(xfer__range_t *const *)y;

    return range_before(a, b) ? -1 : range_before(b, a) ? 1 : 0;
}

static int cmp_key(const void *x, const void *y)
{
    uint64_t a = (*(xfer__range_t *const *)x)->key;
    uint64_t b = (*(xfer__range_t *const *)y)->key;

    return a < b ? -1 : a > b;
}

/* Merge two sorted runs into dst (before: the order). */
static void merge_runs(xfer__range_t **dst, xfer__range_t *const *a,
                       size_t na, xfer__range_t *const *b, size_t nb,
                       bool by_key)
{
    size_t i = 0, j = 0, k = 0;

    while (i < na && j < nb) {
        bool take_b = by_key ? b[j]->key < a[i]->key
                             : range_before(b[j], a[i]);

        dst[k++] = take_b ? b[j++] : a[i++];
    }
    while (i < na)
        dst[k++] = a[i++];
    while (j < nb)
        dst[k++] = b[j++];
}

xfer_status_t xfer__reg_merge(const xfer__registry_t *old,
                              xfer__range_t **add, size_t n,
                              xfer__registry_t *out)
{
    xfer__registry_t t;
    size_t total = old->count + n;

    xfer__reg_init(&t);
    /* Keys first: a repeated one refuses the whole batch. */
    qsort(add, n, sizeof(*add), cmp_key);
    for (size_t i = 0; i < n; i++)
        if ((i > 0 && add[i - 1]->key == add[i]->key) ||
            xfer__reg_find_key(old, add[i]->key) != NULL)
            return XFER_ERR_EXISTS;
    t.cap = total > 16 ? total : 16;
    t.by_addr = malloc(t.cap * sizeof(*t.by_addr));
    t.by_key = malloc(t.cap * sizeof(*t.by_key));
    t.max_end = malloc(t.cap * sizeof(*t.max_end));
    if (t.by_addr == NULL || t.by_key == NULL || t.max_end == NULL) {
        xfer__reg_fini(&t);
        return XFER_ERR_NOMEM;
    }
    merge_runs(t.by_key, old->by_key, old->count, add, n, true);
    qsort(add, n, sizeof(*add), cmp_addr);
    merge_runs(t.by_addr, old->by_addr, old->count, add, n, false);
    t.count = total;
    recompute_max_end(&t, 0);
    *out = t;
    return XFER_OK;
}

xfer_status_t xfer__reg_remove(xfer__registry_t *reg, xfer__range_t *r)
{
    size_t ia = addr_lower_bound(reg, r);
    size_t ik = key_lower_bound(reg, r->key);

    if (ia >= reg->count || reg->by_addr[ia] != r || ik >= reg->count ||
        reg->by_key[ik] != r)
        return XFER_ERR_NOT_FOUND;
    memmove(&reg->by_addr[ia], &reg->by_addr[ia + 1],
            (reg->count - ia - 1) * sizeof(reg->by_addr[0]));
    memmove(&reg->by_key[ik], &reg->by_key[ik + 1],
            (reg->count - ik - 1) * sizeof(reg->by_key[0]));
    reg->count--;
    recompute_max_end(reg, ia);
    return XFER_OK;
}

/* Count of entries starting at or before addr (strictly before when
 * strict): the walks below go backwards from there. */
static size_t starts_upto(const xfer__registry_t *reg, uint64_t addr,
                          bool strict)
{
    size_t lo = 0, hi = reg->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t a = reg->by_addr[mid]->addr;

        if (a < addr || (!strict && a == addr))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

xfer__range_t *xfer__reg_find_match(const xfer__registry_t *reg,
                                    uint64_t addr, uint64_t len,
                                    xfer__reg_match_t match, const void *arg)
{
    uint64_t end;

    if (len == 0 || addr + len < addr)
        return NULL;
    end = addr + len;
    /* Walk back from the highest start; max_end says when no earlier
     * range can reach far enough, so disjoint tables stop at once. */
    for (size_t i = starts_upto(reg, addr, false); i-- > 0;) {
        xfer__range_t *r = reg->by_addr[i];

        if (reg->max_end[i] < end)
            break;
        if (r->addr + r->len >= end && (match == NULL || match(r, arg)))
            return r;
    }
    return NULL;
}

xfer__range_t *xfer__reg_find(const xfer__registry_t *reg, uint64_t addr,
                              uint64_t len)
{
    return xfer__reg_find_match(reg, addr, len, NULL, NULL);
}

xfer__range_t *xfer__reg_overlap(const xfer__registry_t *reg, uint64_t addr,
                                 uint64_t len)
{
    if (len == 0 || addr + len < addr)
        return NULL;
    /* Ranges starting before the end; any of them that ends after addr
     * overlaps, and max_end stops the walk once none can. */
    for (size_t i = starts_upto(reg, addr + len, true); i-- > 0;) {
        xfer__range_t *r = reg->by_addr[i];

        if (reg->max_end[i] <= addr)
            break;
        if (r->addr + r->len > addr)
            return r;
    }
    return NULL;
}

xfer__range_t *xfer__reg_find_key(const xfer__registry_t *reg, uint64_t key)
{
    size_t i = key_lower_bound(reg, key);

    if (i < reg->count && reg->by_key[i]->key == key)
        return reg->by_key[i];
    return NULL;
}
