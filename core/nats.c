/* minimal: replaced by the event plane's nats.c at merge.
 * nats.c - the event plane's connection to NATS (docs/events.md): the
 * hooks of events.h turn what the core reports into small versioned JSON
 * documents, a bounded queue holds them, and a publisher thread hands
 * them to the NATS C client, so that no caller ever waits on the
 * network.  The metadata side lives in nats-md.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <config.h>

#include <stdlib.h>

#include "core/events.h"

const char xfer__why_replaced[] = "it was replaced by a newer epoch of the "
                                  "same agent";

/* Minimal (see the top): a connection
 * and the seam of core/nats.h only, so that nats-md.c can be built and
 * tested on its own branch; no events are published. */
#ifdef XFER_HAVE_NATS

#include <stdio.h>
#include <string.h>

#include "core/nats.h"

#define NATS_DEFAULT_PREFIX "xfer"
#define NATS_RECONNECT_MS 250       /* between reconnect attempts */

struct xfer__nats {
    xfer_agent_t *agent;
    natsOptions *opts;
    natsConnection *nc;
    char *prefix;
    /* Set after the connection is made, read by its callbacks: mu keeps
     * a callback from using it while stop frees it. */
    pthread_mutex_t mu;
    xfer__natsmd_t *md;
};

natsConnection *xfer__nats_conn(xfer__nats_t *n)
{
    return n->nc;
}

const char *xfer__nats_prefix(xfer__nats_t *n)
{
    return n->prefix;
}

xfer__natsmd_t *xfer__nats_md(xfer__nats_t *n)
{
    xfer__natsmd_t *md = NULL;

    if (n != NULL) {
        pthread_mutex_lock(&n->mu);
        md = n->md;
        pthread_mutex_unlock(&n->mu);
    }
    return md;
}

static bool token_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

size_t xfer__nats_token(char *dst, size_t size, const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (token_byte(*p)) {
            if (n + 1 >= size)
                return 0;
            dst[n++] = (char)*p;
        } else {
            if (n + 3 >= size)
                return 0;
            dst[n++] = '=';
            dst[n++] = hex[*p >> 4];
            dst[n++] = hex[*p & 15];
        }
    }
    if (n >= size)
        return 0;
    dst[n] = '\0';
    return n;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                                 : -1;
}

bool xfer__nats_untoken(char *dst, size_t size, const char *key)
{
    size_t n = 0;

    if (key[0] == '\0')
        return false;
    for (const char *p = key; *p; p++) {
        int c = (unsigned char)*p;

        if (*p == '=') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

            /* Only the one spelling token() makes: a byte it would have
             * kept, or NUL, written "=XX" is not a key of ours. */
            if (lo < 0 || hi * 16 + lo == 0 || token_byte((unsigned char)
                                                          (hi * 16 + lo)))
                return false;
            c = hi * 16 + lo;
            p += 2;
        } else if (!token_byte((unsigned char)c)) {
            return false;
        }
        if (n + 1 >= size)
            return false;
        dst[n++] = (char)c;
    }
    dst[n] = '\0';
    return true;
}

/* The connection came (back): the metadata entry may be gone with the
 * server's store, so publish it again. */
static void on_connected(natsConnection *nc, void *closure)
{
    xfer__nats_t *n = closure;

    (void)nc;
    pthread_mutex_lock(&n->mu);
    xfer__natsmd_changed(n->md);
    pthread_mutex_unlock(&n->mu);
}

static bool prefix_ok(const char *p)
{
    bool start = true;

    if (p[0] == '\0' || strlen(p) > 128)
        return false;
    for (; *p; p++) {
        if (*p == '.') {
            if (start)
                return false;
            start = true;
        } else if (token_byte((unsigned char)*p)) {
            start = false;
        } else {
            return false;
        }
    }
    return !start;
}

static void nats_free(xfer__nats_t *n)
{
    if (n->nc != NULL) {
        natsConnection_Close(n->nc);
        natsConnection_Destroy(n->nc);
    }
    natsOptions_Destroy(n->opts);
    pthread_mutex_destroy(&n->mu);
    free(n->prefix);
    free(n);
}

xfer_status_t xfer__nats_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__nats_t **out)
{
    const char *url = o->nats_url;
    const char *prefix = o->nats_prefix ? o->nats_prefix : NATS_DEFAULT_PREFIX;
    xfer__nats_t *n;
    xfer__natsmd_t *md = NULL;
    natsStatus s;
    xfer_status_t st;

    *out = NULL;
    if (url == NULL)
        url = getenv("XFER_NATS_URL");
    if (url == NULL || url[0] == '\0')
        return XFER_OK;
    if (!prefix_ok(prefix))
        return xfer__err(XFER_ERR_INVALID, "agent option nats_prefix '%s' "
                         "must be 1 to 128 bytes of dot-separated tokens of "
                         "letters, digits, '-' and '_'", prefix);
    n = calloc(1, sizeof(*n));
    if (n == NULL || (n->prefix = strdup(prefix)) == NULL) {
        free(n);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    n->agent = a;
    pthread_mutex_init(&n->mu, NULL);
    s = natsOptions_Create(&n->opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(n->opts, url); /* "a,b": a list */
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(n->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(n->opts, NATS_RECONNECT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(n->opts, on_connected, n);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(n->opts, true, on_connected,
                                                n);
    if (s == NATS_OK)
        s = natsConnection_Connect(&n->nc, n->opts);
    /* Not up yet: the client keeps trying in the background. */
    if (s == NATS_NOT_YET_CONNECTED)
        s = NATS_OK;
    if (s != NATS_OK) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot use NATS server "
                       "'%s': %s", a->name, url, nats_GetLastError(NULL));
        nats_free(n);
        return st;
    }
    if (!(o->nats_off & XFER_NATS_OFF_METADATA)) {
        st = xfer__natsmd_start(a, n, o, &md);
        if (st != XFER_OK) {
            nats_free(n);
            return st;
        }
        pthread_mutex_lock(&n->mu);
        n->md = md;
        pthread_mutex_unlock(&n->mu);
    }
    *out = n;
    return XFER_OK;
}

void xfer__nats_stop(xfer__nats_t *n)
{
    xfer__natsmd_t *md;

    if (n == NULL)
        return;
    pthread_mutex_lock(&n->mu);
    md = n->md;
    n->md = NULL;
    pthread_mutex_unlock(&n->mu);
    xfer__natsmd_stop(md);
    nats_free(n);
}

void xfer__nats_changed(xfer__nats_t *n)
{
    if (n != NULL)
        xfer__natsmd_changed(xfer__nats_md(n));
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

#define NO_EVENTS "this build's event plane carries metadata only (the " \
                  "event publisher is not in it)"

XFER_API xfer_status_t xfer_events_notif(xfer_agent_t *agent,
                                         const char *remote_agent, int on)
{
    (void)agent, (void)remote_agent, (void)on;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_events_notif: %s",
                     NO_EVENTS);
}

XFER_API xfer_status_t xfer_events_stats(xfer_agent_t *agent,
                                         xfer_events_stats_t *out,
                                         size_t size)
{
    (void)agent, (void)out, (void)size;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_events_stats: %s",
                     NO_EVENTS);
}

#else /* !XFER_HAVE_NATS */

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
