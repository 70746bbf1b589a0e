/* nats.c - the event plane's connection to NATS (docs/events.md): the
 * hooks of events.h turn what the core reports into small versioned JSON
 * documents, a bounded queue holds them, and a publisher thread hands
 * them to the NATS C client, so that no caller ever waits on the
 * network.  The metadata side lives in nats-md.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <stdlib.h>

#include "core/events.h"

const char xfer__why_replaced[] = "it was replaced by a newer epoch of the "
                                  "same agent";

/* Skeleton: the client itself is being written (issue 15). */
#if 1

#define NO_NATS "this libxfer was built without the NATS C client, so it " \
                "has no event plane (install libnats-dev and rebuild)"

xfer_status_t xfer__nats_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__nats_t **out)
{
    const char *url = o->nats_url;

    (void)a;
    *out = NULL;
    if (url == NULL)
        url = getenv("XFER_NATS_URL");
    if (url == NULL || url[0] == '\0')
        return XFER_OK;
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "a NATS server is given, but %s",
                     NO_NATS);
}

void xfer__nats_stop(xfer__nats_t *n)
{
    (void)n;
}

void xfer__nats_changed(xfer__nats_t *n)
{
    (void)n;
}

void xfer__ev_backend(xfer_agent_t *a, xfer_backend_t *b)
{
    (void)a, (void)b;
}

void xfer__ev_remote(xfer_agent_t *a, xfer__ev_remote_kind_t kind,
                     const char *name, uint64_t epoch, uint64_t old_epoch,
                     const char *why)
{
    (void)a, (void)kind, (void)name, (void)epoch, (void)old_epoch, (void)why;
}

void xfer__ev_notif(xfer_agent_t *a, xfer_backend_t *b, const char *from,
                    const void *msg, size_t len)
{
    (void)a, (void)b, (void)from, (void)msg, (void)len;
}

void xfer__ev_failure(xfer_agent_t *a, xfer_backend_t *b, const char *remote,
                      xfer_op_t op, xfer_status_t st, const char *why)
{
    (void)a, (void)b, (void)remote, (void)op, (void)st, (void)why;
}

XFER_API xfer_status_t xfer_events_notif(xfer_agent_t *agent,
                                         const char *remote_agent, int on)
{
    (void)agent, (void)remote_agent, (void)on;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_events_notif: %s",
                     NO_NATS);
}

XFER_API xfer_status_t xfer_events_stats(xfer_agent_t *agent,
                                         xfer_events_stats_t *out,
                                         size_t size)
{
    (void)agent, (void)out, (void)size;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_events_stats: %s",
                     NO_NATS);
}

#endif /* XFER_HAVE_NATS */
