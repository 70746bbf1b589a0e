/* sq.c - a queue pair's send queue as the verbs plugin counts it (sq.h):
 * a ring of posted batches, freed oldest first as their completions come. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdlib.h>
#include <string.h>

#include "plugins/verbs/sq.h"

/* A batch's index travels in the 24 bits of a wr_id's index field: a
 * ring deeper than that could not name its batches. */
#define SQ_DEPTH_MAX (1u << 24)

xfer_status_t vb__sq_init(vb_sq_t *q, uint32_t depth)
{
    memset(q, 0, sizeof *q);
    if (depth == 0 || depth > SQ_DEPTH_MAX)
        return XFER_ERR_INVALID;
    /* Every batch holds at least one work request: depth batches at most. */
    q->ring = calloc(depth, sizeof *q->ring);
    if (q->ring == NULL)
        return XFER_ERR_NOMEM;
    q->depth = depth;
    return XFER_OK;
}

void vb__sq_fini(vb_sq_t *q)
{
    free(q->ring);
    memset(q, 0, sizeof *q);
}

uint32_t vb__sq_room(const vb_sq_t *q)
{
    return q->depth - q->used;
}

/* The ring index of the batch n places after the oldest. */
static uint32_t at(const vb_sq_t *q, uint32_t n)
{
    uint32_t i = q->head + n;

    return i >= q->depth ? i - q->depth : i;
}

uint32_t vb__sq_push(vb_sq_t *q, uint8_t kind, void *owner, uint32_t nwr)
{
    uint32_t i;

    /* Outside 1..room is the plugin's bug; recording it would let the
     * count of work requests in flight pass the queue's depth. */
    if (nwr == 0 || nwr > vb__sq_room(q))
        return UINT32_MAX;
    i = at(q, q->count);
    q->ring[i].kind = kind;
    q->ring[i].owner = owner;
    q->ring[i].nwr = nwr;
    q->count++;
    q->used += nwr;
    return i;
}

void vb__sq_unpush(vb_sq_t *q)
{
    vb_sq_ent_t *e;

    if (q->count == 0)
        return;
    e = &q->ring[at(q, q->count - 1)];
    q->used -= e->nwr;
    q->count--;
    memset(e, 0, sizeof *e);
}

/* Take the oldest batch out of the ring. */
static vb_sq_ent_t pop(vb_sq_t *q)
{
    vb_sq_ent_t e = q->ring[q->head];

    memset(&q->ring[q->head], 0, sizeof q->ring[q->head]);
    q->used -= e.nwr;
    q->count--;
    q->head = at(q, 1);
    return e;
}

bool vb__sq_complete(vb_sq_t *q, uint32_t idx, vb_sq_ent_t *out)
{
    vb_sq_ent_t e;

    if (q->count == 0 || idx != q->head)
        return false;
    e = pop(q);
    if (out != NULL)
        *out = e;
    return true;
}

bool vb__sq_live(const vb_sq_t *q, uint32_t idx)
{
    uint32_t n;

    if (idx >= q->depth)
        return false;
    n = idx >= q->head ? idx - q->head : idx + q->depth - q->head;
    return n < q->count;
}

void vb__sq_drain(vb_sq_t *q, void (*fn)(void *arg, const vb_sq_ent_t *e),
                  void *arg)
{
    /* Each batch leaves the ring before fn sees it, so what fn does to
     * the queue (forget an owner) never meets the batch in hand. */
    while (q->count > 0) {
        vb_sq_ent_t e = pop(q);

        if (fn != NULL)
            fn(arg, &e);
    }
}

void vb__sq_forget(vb_sq_t *q, const void *owner)
{
    for (uint32_t n = 0; n < q->count; n++) {
        vb_sq_ent_t *e = &q->ring[at(q, n)];

        if (e->owner == owner)
            e->owner = NULL;
    }
}
