/* sq.h - a queue pair's send queue as the verbs plugin accounts for it:
 * work requests in flight under a cap, posted in batches of which only
 * the last is signaled.  Bookkeeping only: no verbs calls. */
#ifndef XFER_PLUGINS_VERBS_SQ_H
#define XFER_PLUGINS_VERBS_SQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

/* A provider frees the send-queue slots of unsignaled work requests only
 * when a later signaled one's completion is polled.  So the plugin posts
 * a chain of work requests as one batch whose last is signaled, records
 * the batch here, and counts its work requests in flight until that
 * completion is polled.  Completions on one QP come in post order, so
 * the batches form a ring and a completion must be for the oldest.
 * Every work request of a batch carries the batch's wr_id, so an error
 * completion (which comes for unsignaled ones too) names its batch. */
typedef struct vb_sq_ent {
    uint8_t kind;              /* the plugin's: data, notification */
    void *owner;               /* its request or notification; NULL once
                                  forgotten */
    uint32_t nwr;              /* work requests in the batch */
} vb_sq_ent_t;

typedef struct vb_sq {
    uint32_t depth;            /* work requests in flight at most */
    uint32_t used;             /* in flight now */
    uint32_t head;             /* the oldest batch's index */
    uint32_t count;            /* batches in flight */
    vb_sq_ent_t *ring;         /* depth entries */
} vb_sq_t;

/* depth 1..2^24 (a batch's index must fit a wr_id's 24 bits), else
 * XFER_ERR_INVALID and q zeroed.  XFER_ERR_NOMEM.  fini is safe on a
 * zeroed q and twice. */
xfer_status_t vb__sq_init(vb_sq_t *q, uint32_t depth);
void vb__sq_fini(vb_sq_t *q);
/* Work requests that may be posted now. */
uint32_t vb__sq_room(const vb_sq_t *q);
/* Record a batch of nwr (1..room) work requests about to be posted; its
 * index (for the wr_id), which is (head + count) % depth before the push.
 * Any other nwr records nothing and returns UINT32_MAX. */
uint32_t vb__sq_push(vb_sq_t *q, uint8_t kind, void *owner, uint32_t nwr);
/* The newest batch was not posted after all (ibv_post_send refused its
 * first work request): take it back. */
void vb__sq_unpush(vb_sq_t *q);
/* The signaled completion of batch idx was polled: true and *out its
 * entry when idx is the oldest batch, which is freed; false for anything
 * else (a stale or impossible completion), which changes nothing. */
bool vb__sq_complete(vb_sq_t *q, uint32_t idx, vb_sq_ent_t *out);
/* Whether idx is a batch in flight now. */
bool vb__sq_live(const vb_sq_t *q, uint32_t idx);
/* The QP failed or is being torn down: each batch in flight, oldest
 * first, to fn, and the queue is empty. */
void vb__sq_drain(vb_sq_t *q, void (*fn)(void *arg, const vb_sq_ent_t *e),
                  void *arg);
/* owner no longer wants to hear of its batches (it ended or was freed):
 * their owner becomes NULL; they still count until completed. */
void vb__sq_forget(vb_sq_t *q, const void *owner);

/* A work request's wr_id: what it is, which QP slot and generation, which
 * batch (or receive buffer).  A completion whose slot's generation moved
 * on is stale and dropped.
 *   bits 56..63 kind   40..55 slot   24..39 generation   0..23 index */
static inline uint64_t vb__wrid(unsigned kind, unsigned slot, unsigned gen,
                                uint32_t idx)
{
    return (uint64_t)(kind & 0xffu) << 56 | (uint64_t)(slot & 0xffffu) << 40 |
           (uint64_t)(gen & 0xffffu) << 24 | (idx & 0xffffffu);
}
static inline unsigned vb__wrid_kind(uint64_t id) { return (unsigned)(id >> 56); }
static inline unsigned vb__wrid_slot(uint64_t id) { return (unsigned)(id >> 40) & 0xffffu; }
static inline unsigned vb__wrid_gen(uint64_t id) { return (unsigned)(id >> 24) & 0xffffu; }
static inline uint32_t vb__wrid_idx(uint64_t id) { return (uint32_t)id & 0xffffffu; }

#endif /* XFER_PLUGINS_VERBS_SQ_H */
