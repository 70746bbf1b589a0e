/* nats-md.c - metadata over NATS (docs/events.md): the agent's blob in a
 * JetStream key-value bucket, kept alive while it lives; heartbeats on a
 * subject, because nats-server 2.9 does not tell watchers when an entry
 * expires; fetch by request/reply; peers fetched this way followed as
 * etcd follows them (same epochs and replacement rules). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "core/events.h"

/* Skeleton: the client itself is being written (issue 15). */
#if 1

XFER_API xfer_status_t xfer_md_fetch_nats(xfer_agent_t *agent,
                                          const char *name,
                                          unsigned timeout_ms)
{
    (void)agent, (void)name, (void)timeout_ms;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_md_fetch_nats: this "
                     "libxfer was built without the NATS C client (install "
                     "libnats-dev and rebuild)");
}

#endif /* XFER_HAVE_NATS */

/* Stub until nats-md.c lands: the metadata side does nothing yet, so
 * that nats.c links (issue 15; the lead resolves this file at merge). */
#include <config.h>
#ifdef XFER_HAVE_NATS
#include "core/nats.h"

xfer_status_t xfer__natsmd_start(xfer_agent_t *a, xfer__nats_t *n,
                                 const xfer_agent_opts_t *o,
                                 xfer__natsmd_t **out)
{
    (void)a, (void)n, (void)o;
    *out = NULL;
    return XFER_OK;
}

void xfer__natsmd_stop(xfer__natsmd_t *m)
{
    (void)m;
}

void xfer__natsmd_changed(xfer__natsmd_t *m)
{
    (void)m;
}
#endif /* stub until nats-md.c lands */
