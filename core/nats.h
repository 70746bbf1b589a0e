/* nats.h - between the two halves of the NATS client: nats.c (the
 * connection, the event queue and its publisher) and nats-md.c (metadata
 * in a JetStream key-value bucket, heartbeats, fetch by request/reply).
 * Only built with the NATS C client (XFER_HAVE_NATS). */
#ifndef XFER_CORE_NATS_H
#define XFER_CORE_NATS_H

#include <nats/nats.h>

#include "core/events.h"

typedef struct xfer__natsmd xfer__natsmd_t;

/* ---- nats.c ---------------------------------------------------------- */

/* The connection (made at start, reconnecting by itself after). */
natsConnection *xfer__nats_conn(xfer__nats_t *n);
/* The subject prefix (opts nats_prefix), e.g. "xfer". */
const char *xfer__nats_prefix(xfer__nats_t *n);
/* The metadata side, or NULL (XFER_NATS_OFF_METADATA). */
xfer__natsmd_t *xfer__nats_md(xfer__nats_t *n);
/* An agent name as one subject token and key-value key: letters, digits,
 * '-' and '_' kept, every other byte as "=XX" (upper-case hex), so that
 * distinct names never meet and no name can add tokens or wildcards.
 * Returns the length written, 0 when it does not fit in size. */
size_t xfer__nats_token(char *dst, size_t size, const char *name);
/* The reverse, for keys read from the bucket; false if key is not one. */
bool xfer__nats_untoken(char *dst, size_t size, const char *key);

/* ---- nats-md.c --------------------------------------------------------- */

/* Create the bucket if missing, publish the agent's metadata, keep it
 * alive, answer fetches, start heartbeats and the watcher of followed
 * peers. */
xfer_status_t xfer__natsmd_start(xfer_agent_t *a, xfer__nats_t *n,
                                 const xfer_agent_opts_t *o,
                                 xfer__natsmd_t **out);
/* Delete the entry (bounded), stop, free.  NULL accepted. */
void xfer__natsmd_stop(xfer__natsmd_t *m);
/* The metadata changed, or the connection came back: republish soon. */
void xfer__natsmd_changed(xfer__natsmd_t *m);

#endif /* XFER_CORE_NATS_H */
