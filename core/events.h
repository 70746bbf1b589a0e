/* events.h - the event plane (docs/events.md): what the core tells it,
 * and the NATS client that carries it (nats.c: connection, event queue,
 * publisher thread; nats-md.c: metadata in a JetStream key-value bucket,
 * heartbeats, fetch by request/reply).
 *
 * Every xfer__ev_* hook may be called with any core lock held (the agent
 * lock, a backend's lock in progress): it returns at once, takes only
 * the event queue's own lock (a leaf) and never waits on the network.
 * With no NATS (a->nats NULL) each is one load and a return. */
#ifndef XFER_CORE_EVENTS_H
#define XFER_CORE_EVENTS_H

#include "core/internal.h"

/* The version of every event document ("v"). */
#define XFER__EV_VERSION 1

/* The reason xfer__remote_evict is given for a newer epoch: the hook in
 * xfer__remote_kill says "replaced" for it, not "invalidated". */
extern const char xfer__why_replaced[];

typedef enum xfer__ev_remote_kind {
    XFER__EV_REMOTE_LOADED,      /* first epoch of a name */
    XFER__EV_REMOTE_REPLACED,    /* a newer epoch replaced old_epoch */
    XFER__EV_REMOTE_INVALIDATED, /* gone, why says why */
} xfer__ev_remote_kind_t;

/* ---- hooks (nats.c; no-ops without NATS) ------------------------------ */

/* Backend b joined the agent. */
void xfer__ev_backend(xfer_agent_t *a, xfer_backend_t *b);
/* A remote agent was loaded, replaced or invalidated (agent lock held). */
void xfer__ev_remote(xfer_agent_t *a, xfer__ev_remote_kind_t kind,
                     const char *name, uint64_t epoch, uint64_t old_epoch,
                     const char *why);
/* A notification from `from` was queued for the application, over b (its
 * data is visible): published if the user follows `from`. */
void xfer__ev_notif(xfer_agent_t *a, xfer_backend_t *b, const char *from,
                    const void *msg, size_t len);
/* A request to remote (NULL: none known) over b failed with st: refused
 * at post, or ended in error; why is the library's sentence. */
void xfer__ev_failure(xfer_agent_t *a, xfer_backend_t *b, const char *remote,
                      xfer_op_t op, xfer_status_t st, const char *why);

/* ---- the client's life (agent.c) ------------------------------------- */

typedef struct xfer__nats xfer__nats_t;

/* With o's nats_* options (url NULL: XFER_NATS_URL; neither: *out = NULL,
 * XFER_OK), connect (retrying in the background if the server is not up
 * yet), start the publisher, publish "agent.up" and, unless
 * XFER_NATS_OFF_METADATA, start the metadata side (nats-md.c). */
xfer_status_t xfer__nats_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__nats_t **out);
/* Publish "agent.down", delete the metadata entry, flush what is queued
 * (bounded: about a second, a few with the server away), close and
 * free.  NULL accepted. */
void xfer__nats_stop(xfer__nats_t *n);
/* The agent's metadata changed: republish it soon.  NULL accepted. */
void xfer__nats_changed(xfer__nats_t *n);

#endif /* XFER_CORE_EVENTS_H */
