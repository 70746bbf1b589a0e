/* nats.c - the event plane's connection to NATS (docs/events.md): the
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

#ifdef XFER_HAVE_NATS

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/base64.h"
#include "core/nats.h"

#define NATS_DEFAULT_PREFIX "xfer"
#define NATS_PREFIX_MAX 128         /* bytes of nats_prefix */
#define NATS_DEFAULT_STATS_MS 10000
#define NATS_MIN_STATS_MS 100
#define NATS_DEFAULT_QUEUE 4096
/* The queue's byte bound: events are small (a notification's message is
 * at most a few KiB in base64), so this only matters when many wait. */
#define NATS_QUEUE_BYTES ((size_t)4 << 20)
#define NATS_DEFAULT_TTL_S 10
#define NATS_MIN_TTL_S 2
#define NATS_RECONNECT_WAIT_MS 250  /* between reconnect attempts */
/* What libnats itself holds for us while it reconnects: only what was
 * handed over in the moment before it saw the server go (the publisher
 * stops handing over while disconnected). */
#define NATS_RECONNECT_BUF ((int)(1u << 20))
#define NATS_CONNECT_MS 1000        /* one connect attempt */
#define NATS_PING_MS 2000           /* a half-open connection found soon */
/* A write to a server that stopped reading fails after this, so that
 * neither the publisher nor stop waits on it longer. */
#define NATS_WRITE_MS 2000
#define NATS_FLUSH_MS 1000          /* the bound on what stop waits for */
#define NATS_CLOSE_WAIT_MS 2000     /* for libnats's closed callback */
#define NATS_IDLE_MS 250            /* the publisher looks around this often */
/* Events are published in batches: the publisher, woken by the first
 * event after a quiet spell, lingers this long for more before it
 * publishes them together (or less, once NATS_BATCH are queued), so a
 * stream of events costs a wake-up per batch, not per event, on the
 * cores the data path runs on.  It bounds how late an event goes out. */
#define NATS_LINGER_MS 2
#define NATS_BATCH 256
#define FOLLOW_MAX 1024             /* names xfer_events_notif follows */
#define FOLLOW_BUCKETS 256

typedef struct ev {
    struct ev *next;
    const char *type;               /* the subject's last tokens */
    size_t len;
    size_t cost;                    /* what it counts against the bound */
    char doc[];                     /* the JSON document */
} ev_t;

typedef struct follow {
    struct follow *next;
    char name[];
} follow_t;

struct xfer__nats {
    xfer_agent_t *agent;
    char *prefix;                   /* opts nats_prefix */
    char *subj;                     /* "<prefix>.ev.<token>." */
    size_t subj_len;
    char *agent_json;               /* the agent's name as a JSON string */
    /* The agent's name for libnats's callbacks, which may outlive the
     * agent when a close was never reported (nats_close). */
    char *name;
    unsigned off;                   /* XFER_NATS_OFF_* */
    unsigned stats_ms;
    natsConnection *nc;
    pthread_t thr;
    bool thr_started;

    /* qlock: a leaf (hooks run under the agent's and backends' locks);
     * guards the queue, its counters and the names followed. */
    pthread_mutex_t qlock;
    pthread_cond_t qcv;             /* CLOCK_MONOTONIC */
    ev_t *head, *tail;
    size_t qcount, qbytes, qmax, qbytes_max;
    uint64_t seq, published, dropped, reconnects;
    bool stop;
    bool lingering;                 /* the publisher gathers a batch */
    bool closing;                   /* "agent.down" is queued: the last */
    bool follow_all;
    unsigned nfollow;
    follow_t *follow[FOLLOW_BUCKETS];
    /* Set while anything is followed: the test a notification makes
     * before anything else, so following nothing costs one load. */
    atomic_bool following;

    atomic_bool connected;          /* what the callbacks said (logs) */
    /* mdlock guards md against the connection callbacks (libnats's
     * thread) while stop takes it away; never taken under another lock
     * of ours. */
    pthread_mutex_t mdlock;
    xfer__natsmd_t *md;
    bool closed;                    /* libnats said so; under mdlock */
    pthread_cond_t closed_cv;       /* CLOCK_MONOTONIC */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static xfer__nats_t *nats_of(xfer_agent_t *a)
{
    /* Set once at creation, cleared at destroy after every thread that
     * calls a hook has stopped (agent.c). */
    return __atomic_load_n(&a->nats, __ATOMIC_ACQUIRE);
}

/* Whether the connection is up now: libnats's own word, not only what
 * its callbacks said (they do not run in a process forked after libnats
 * started).  Never called under qlock: it takes the connection's lock. */
static bool is_up(xfer__nats_t *n)
{
    return n->nc != NULL &&
           natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* ---- names as subject tokens --------------------------------------------- */

static bool token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

size_t xfer__nats_token(char *dst, size_t size, const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (token_char(*p)) {
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
    if (n == 0 || n >= size)
        return 0;
    dst[n] = '\0';
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;      /* lower case is not what xfer__nats_token writes */
}

bool xfer__nats_untoken(char *dst, size_t size, const char *key)
{
    size_t n = 0;

    for (const char *p = key; *p; p++) {
        int c = (unsigned char)*p;

        if (*p == '=') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

            /* Only the one spelling xfer__nats_token makes: a kept
             * character escaped, or a NUL, is another key. */
            if (lo < 0 || (hi << 4 | lo) == 0 || token_char((unsigned)(hi << 4 | lo)))
                return false;
            c = hi << 4 | lo;
            p += 2;
        } else if (!token_char((unsigned char)c)) {
            return false;
        }
        if (n + 1 >= size)
            return false;
        dst[n++] = (char)c;
    }
    if (n == 0)
        return false;
    dst[n] = '\0';
    return true;
}

/* ---- the queue ------------------------------------------------------------ */

/* A JSON string of text that may not be UTF-8 (names and sentences can
 * come from peers): bytes jansson refuses become '?'. */
static json_t *jstr(const char *s)
{
    json_t *j;
    char *copy;

    if (s == NULL)
        return json_null();
    j = json_string(s);
    if (j != NULL)
        return j;
    copy = strdup(s);
    if (copy == NULL)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static json_t *jhex(uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
    return json_string(buf);
}

/* Queue an event of type with body's fields (stolen; NULL: none, or a
 * failed allocation when fail is set) after the envelope.  Never waits:
 * a full queue drops it, counted, and its seq is spent all the same so
 * subscribers see the gap. */
static void ev_put(xfer__nats_t *n, const char *type, json_t *body, bool fail)
{
    char *rest = NULL;
    size_t rlen = 0, cap;
    ev_t *e = NULL;
    uint64_t ts, seq;
    bool drop;

    if (body != NULL) {
        rest = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        fail = fail || rest == NULL;
        rlen = rest != NULL ? strlen(rest) : 0;
    }
    /* {"v":1,"type":"<type>","agent":<name>,"epoch":"0x<16>","seq":<20>,
     * "ts_ms":<20>  then "," and rest without its "{", or "}". */
    cap = strlen(type) + strlen(n->agent_json) + rlen + 128;
    if (!fail)
        e = malloc(sizeof(*e) + cap);
    pthread_mutex_lock(&n->qlock);
    /* After "agent.down" nothing more is its agent's: not even counted. */
    if (n->closing) {
        pthread_mutex_unlock(&n->qlock);
        free(e);
        free(rest);
        return;
    }
    n->closing = strcmp(type, "agent.down") == 0;
    /* Taken with seq, so that both grow together. */
    ts = unix_ms();
    seq = ++n->seq;
    drop = e == NULL || n->stop || n->qcount >= n->qmax ||
           n->qbytes + cap > n->qbytes_max;
    if (drop) {
        n->dropped++;
    } else {
        int len = snprintf(e->doc, cap, "{\"v\":%d,\"type\":\"%s\",\"agent\":"
                           "%s,\"epoch\":\"0x%" PRIx64 "\",\"seq\":%" PRIu64
                           ",\"ts_ms\":%" PRIu64 "%s%s", XFER__EV_VERSION,
                           type, n->agent_json, n->agent->epoch, seq, ts,
                           rlen > 2 ? "," : "}", rlen > 2 ? rest + 1 : "");

        e->len = (size_t)len;
        e->cost = cap;
        e->type = type;
        e->next = NULL;
        if (n->tail != NULL)
            n->tail->next = e;
        else
            n->head = e;
        n->tail = e;
        n->qcount++;
        n->qbytes += cap;
        /* Wake the publisher for the first event of a batch, or when a
         * batch is full; not for each event while it gathers them. */
        if ((n->qcount == 1 && !n->lingering) || n->qcount == NATS_BATCH)
            pthread_cond_signal(&n->qcv);
        e = NULL;
    }
    pthread_mutex_unlock(&n->qlock);
    free(e);
    free(rest);
}

/* A body object from key/value pairs (NULL key ends); *fail is set if
 * any allocation failed. */
static json_t *body_of(bool *fail, ...)
{
    json_t *o = json_object();
    va_list ap;
    const char *k;

    *fail = o == NULL;
    va_start(ap, fail);
    while ((k = va_arg(ap, const char *)) != NULL) {
        json_t *v = va_arg(ap, json_t *);

        if (o == NULL || v == NULL || json_object_set_new(o, k, v) != 0) {
            *fail = true;
            if (o == NULL)
                json_decref(v);
        }
    }
    va_end(ap);
    return o;
}

/* ---- hooks (events.h) -------------------------------------------------- */

void xfer__ev_backend(xfer_agent_t *a, xfer_backend_t *b)
{
    xfer__nats_t *n = nats_of(a);
    json_t *body;
    bool fail;

    if (n == NULL || (n->off & XFER_NATS_OFF_EVENTS))
        return;
    body = body_of(&fail, "backend", jstr(b->name), NULL);
    ev_put(n, "backend.added", body, fail);
}

void xfer__ev_remote(xfer_agent_t *a, xfer__ev_remote_kind_t kind,
                     const char *name, uint64_t epoch, uint64_t old_epoch,
                     const char *why)
{
    xfer__nats_t *n = nats_of(a);
    json_t *body;
    bool fail;

    if (n == NULL || (n->off & XFER_NATS_OFF_EVENTS))
        return;
    switch (kind) {
    case XFER__EV_REMOTE_LOADED:
        body = body_of(&fail, "remote", jstr(name), "remote_epoch",
                       jhex(epoch), NULL);
        ev_put(n, "remote.loaded", body, fail);
        break;
    case XFER__EV_REMOTE_REPLACED:
        body = body_of(&fail, "remote", jstr(name), "remote_epoch",
                       jhex(epoch), "old_epoch", jhex(old_epoch), NULL);
        ev_put(n, "remote.replaced", body, fail);
        break;
    default:
        body = body_of(&fail, "remote", jstr(name), "remote_epoch",
                       jhex(epoch), "reason", jstr(why ? why : "unknown"),
                       NULL);
        ev_put(n, "remote.invalidated", body, fail);
        break;
    }
}

static unsigned follow_hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % FOLLOW_BUCKETS;
}

/* qlock held. */
static follow_t **follow_find(xfer__nats_t *n, const char *name)
{
    follow_t **pp = &n->follow[follow_hash(name)];

    while (*pp != NULL && strcmp((*pp)->name, name) != 0)
        pp = &(*pp)->next;
    return pp;
}

void xfer__ev_notif(xfer_agent_t *a, xfer_backend_t *b, const char *from,
                    const void *msg, size_t len)
{
    xfer__nats_t *n = nats_of(a);
    json_t *body;
    bool yes, fail;

    if (n == NULL || !atomic_load_explicit(&n->following,
                                           memory_order_relaxed))
        return;
    pthread_mutex_lock(&n->qlock);
    yes = n->follow_all || *follow_find(n, from) != NULL;
    pthread_mutex_unlock(&n->qlock);
    if (!yes)
        return;
    body = body_of(&fail, "from", jstr(from), "backend", jstr(b->name),
                   "len", json_integer((json_int_t)len), "msg_b64",
                   xfer__b64_json(msg, len), NULL);
    ev_put(n, "notif", body, fail);
}

void xfer__ev_failure(xfer_agent_t *a, xfer_backend_t *b, const char *remote,
                      xfer_op_t op, xfer_status_t st, const char *why)
{
    xfer__nats_t *n = nats_of(a);
    json_t *body;
    bool fail;

    if (n == NULL || (n->off & XFER_NATS_OFF_EVENTS))
        return;
    body = body_of(&fail, "remote", jstr(remote), "backend",
                   jstr(b != NULL ? b->name : NULL), "op",
                   json_string(op == XFER_OP_READ ? "READ" : "WRITE"),
                   "code", json_string(xfer__status_name(st)), "error",
                   jstr(why != NULL ? why : xfer_strerror(st)), NULL);
    ev_put(n, "xfer.failed", body, fail);
}

/* ---- the publisher -------------------------------------------------------- */

static json_t *events_doc(xfer__nats_t *n)
{
    bool up = is_up(n);
    json_t *o;

    pthread_mutex_lock(&n->qlock);
    o = json_pack("{sI sI sI sI sb}", "published", (json_int_t)n->published,
                  "dropped", (json_int_t)n->dropped, "queued",
                  (json_int_t)n->qcount, "reconnects",
                  (json_int_t)n->reconnects, "connected", (int)up);
    pthread_mutex_unlock(&n->qlock);
    return o;
}

static void ev_stats(xfer__nats_t *n)
{
    json_t *st = n->agent->st.on ? xfer__stats_doc(n->agent) : NULL;
    json_t *body;
    bool fail;

    if (n->agent->st.on && st == NULL) {
        ev_put(n, "stats", NULL, true);
        return;
    }
    if (st != NULL)
        body = body_of(&fail, "stats", st, "events", events_doc(n), NULL);
    else
        body = body_of(&fail, "events", events_doc(n), NULL);
    ev_put(n, "stats", body, fail);
}

typedef enum { PUB_DONE, PUB_DROP, PUB_LATER } pub_t;

static pub_t publish(xfer__nats_t *n, ev_t *e, char *subj, size_t size)
{
    natsStatus s;

    snprintf(subj, size, "%s%s", n->subj, e->type);
    s = natsConnection_Publish(n->nc, subj, e->doc, (int)e->len);
    if (s == NATS_OK)
        return PUB_DONE;
    if (natsConnection_Status(n->nc) != NATS_CONN_STATUS_CONNECTED ||
        s == NATS_INSUFFICIENT_BUFFER)
        return PUB_LATER;
    /* Connected and refused (too big for the server's max_payload):
     * it will never go; count it lost rather than block the rest. */
    xfer__log(XFER_LOG_WARN, "nats", "agent %s: a %s event (%zu bytes) "
              "could not be published: %s", n->agent->name, e->type, e->len,
              natsStatus_GetText(s));
    return PUB_DROP;
}

/* Drains the queue in order while connected; while not, keeps it (the
 * hooks drop past the bound).  Takes telemetry snapshots.  At stop it
 * publishes what it can while connected, then ends. */
static void *pub_main(void *arg)
{
    xfer__nats_t *n = arg;
    char subj[NATS_PREFIX_MAX + 3 * XFER_NAME_MAX + 64];
    bool stats = !(n->off & XFER_NATS_OFF_STATS), blocked = false;
    bool gathered = false;          /* this batch waited its linger */
    uint64_t next = mono_ms() + n->stats_ms;
    struct timespec ts;

    pthread_mutex_lock(&n->qlock);
    for (;;) {
        uint64_t now = mono_ms(), wait_ms;
        ev_t *e = n->head;

        if (stats && !n->stop && now >= next) {
            pthread_mutex_unlock(&n->qlock);
            ev_stats(n);
            next += n->stats_ms;
            if (next <= now)
                next = now + n->stats_ms;
            pthread_mutex_lock(&n->qlock);
            continue;
        }
        if (e != NULL && !blocked && !gathered && !n->stop &&
            n->qcount < NATS_BATCH) {
            n->lingering = true;
            deadline_in(&ts, NATS_LINGER_MS);
            pthread_cond_timedwait(&n->qcv, &n->qlock, &ts);
            n->lingering = false;
            gathered = true;
            continue;
        }
        if (e == NULL)
            gathered = false;
        if (e != NULL && !blocked) {
            pub_t r;

            /* Only this thread takes from the head: e stays there. */
            pthread_mutex_unlock(&n->qlock);
            r = is_up(n) ? publish(n, e, subj, sizeof(subj)) : PUB_LATER;
            pthread_mutex_lock(&n->qlock);
            if (r != PUB_LATER) {
                n->head = e->next;
                if (n->head == NULL)
                    n->tail = NULL;
                n->qcount--;
                n->qbytes -= e->cost;
                if (r == PUB_DONE)
                    n->published++;
                else
                    n->dropped++;
                pthread_mutex_unlock(&n->qlock);
                free(e);
                pthread_mutex_lock(&n->qlock);
                continue;
            }
            blocked = true;
        }
        if (n->stop && (e == NULL || blocked))
            break;
        /* Not connected: look again soon, or when a callback or a new
         * event wakes us. */
        wait_ms = blocked ? 50 : NATS_IDLE_MS;
        if (stats && next - now < wait_ms)
            wait_ms = next - now;
        deadline_in(&ts, (unsigned)wait_ms);
        pthread_cond_timedwait(&n->qcv, &n->qlock, &ts);
        blocked = false;
    }
    pthread_mutex_unlock(&n->qlock);
    nats_ReleaseThreadMemory();
    return NULL;
}

/* ---- the connection ------------------------------------------------------- */

/* libnats's callbacks run on its own thread. */
static void md_changed(xfer__nats_t *n)
{
    pthread_mutex_lock(&n->mdlock);
    if (n->md != NULL)
        xfer__natsmd_changed(n->md);
    pthread_mutex_unlock(&n->mdlock);
}

static void wake(xfer__nats_t *n)
{
    pthread_mutex_lock(&n->qlock);
    pthread_cond_signal(&n->qcv);
    pthread_mutex_unlock(&n->qlock);
}

static void on_connected(natsConnection *nc, void *closure)
{
    xfer__nats_t *n = closure;

    (void)nc;
    atomic_store(&n->connected, true);
    xfer__log(XFER_LOG_INFO, "nats", "agent %s: connected to NATS", n->name);
    wake(n);
    md_changed(n);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    xfer__nats_t *n = closure;

    (void)nc;
    if (atomic_exchange(&n->connected, false))
        xfer__log(XFER_LOG_INFO, "nats", "agent %s: lost NATS, reconnecting",
                  n->name);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    xfer__nats_t *n = closure;

    (void)nc;
    pthread_mutex_lock(&n->qlock);
    n->reconnects++;
    pthread_mutex_unlock(&n->qlock);
    on_connected(nc, closure);
}

static void on_closed(natsConnection *nc, void *closure)
{
    xfer__nats_t *n = closure;

    (void)nc;
    atomic_store(&n->connected, false);
    pthread_mutex_lock(&n->mdlock);
    n->closed = true;
    pthread_cond_broadcast(&n->closed_cv);
    pthread_mutex_unlock(&n->mdlock);
}

/* nats_url: servers separated by commas, each nats:// or tls://. */
static xfer_status_t check_url(const char *url, const char *from)
{
    const char *p = url;

    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        size_t skip = 0;

        if (len > 7 && strncmp(p, "nats://", 7) == 0)
            skip = 7;
        else if (len > 6 && strncmp(p, "tls://", 6) == 0)
            skip = 6;
        if (skip == 0 || len == skip)
            return xfer__err(XFER_ERR_CONFIG, "%s '%s': each server must be "
                             "given as nats://host:port or tls://host:port "
                             "(several separated by commas)", from, url);
        if (end == NULL)
            return XFER_OK;
        p = end + 1;
    }
}

static xfer_status_t check_prefix(const char *prefix)
{
    size_t len = strlen(prefix);
    bool tok = false;

    if (len == 0 || len > NATS_PREFIX_MAX)
        goto bad;
    for (const char *p = prefix; *p; p++) {
        if (*p == '.') {
            if (!tok)
                goto bad;
            tok = false;
        } else if (token_char((unsigned char)*p)) {
            tok = true;
        } else {
            goto bad;
        }
    }
    if (tok)
        return XFER_OK;
bad:
    return xfer__err(XFER_ERR_CONFIG, "nats_prefix '%s': must be 1 to %d "
                     "characters, tokens of letters, digits, '-' and '_' "
                     "separated by single dots (no wildcards, no empty "
                     "token)", prefix, NATS_PREFIX_MAX);
}

static xfer_status_t check_opts(const xfer_agent_opts_t *o)
{
    const unsigned known = XFER_NATS_OFF_EVENTS | XFER_NATS_OFF_STATS |
                           XFER_NATS_OFF_METADATA;

    if (o->nats_prefix != NULL && check_prefix(o->nats_prefix) != XFER_OK)
        return XFER_ERR_CONFIG;
    if (o->nats_off & ~known)
        return xfer__err(XFER_ERR_CONFIG, "nats_off 0x%x: unknown bits 0x%x "
                         "(known: XFER_NATS_OFF_EVENTS, _STATS, _METADATA)",
                         o->nats_off, o->nats_off & ~known);
    if (o->nats_stats_ms != 0 && o->nats_stats_ms < NATS_MIN_STATS_MS)
        return xfer__err(XFER_ERR_CONFIG, "nats_stats_ms %u: the telemetry "
                         "period must be at least %d ms (0: the default %d)",
                         o->nats_stats_ms, NATS_MIN_STATS_MS,
                         NATS_DEFAULT_STATS_MS);
    if (o->nats_ttl_s != 0 && o->nats_ttl_s < NATS_MIN_TTL_S)
        return xfer__err(XFER_ERR_CONFIG, "nats_ttl_s %u: metadata must live "
                         "at least %d s (0: the default %d)", o->nats_ttl_s,
                         NATS_MIN_TTL_S, NATS_DEFAULT_TTL_S);
    return XFER_OK;
}

static xfer_status_t nats_err(xfer__nats_t *n, natsStatus s, const char *what)
{
    const char *last = nats_GetLastError(NULL);

    return xfer__err(XFER_ERR_BACKEND, "agent '%s': NATS %s: %s%s%s",
                     n->agent->name, what, natsStatus_GetText(s),
                     last != NULL && last[0] ? ": " : "",
                     last != NULL ? last : "");
}

static xfer_status_t connect_to(xfer__nats_t *n, const char *url)
{
    natsOptions *no = NULL;
    natsStatus s;
    xfer_status_t st = XFER_OK;

    s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, url);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, n->agent->name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(no, NATS_RECONNECT_WAIT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(no, NATS_RECONNECT_BUF);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, NATS_CONNECT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetPingInterval(no, NATS_PING_MS);
    if (s == NATS_OK)
        s = natsOptions_SetMaxPingsOut(no, 2);
    if (s == NATS_OK)
        s = natsOptions_SetWriteDeadline(no, NATS_WRITE_MS);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(no, true, on_connected, n);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(no, on_closed, n);
    if (s != NATS_OK) {
        st = nats_err(n, s, "options");
        goto out;
    }
    s = natsConnection_Connect(&n->nc, no);
    if (s == NATS_OK) {
        atomic_store(&n->connected, true);
    } else if (s == NATS_NOT_YET_CONNECTED) {
        /* The agent starts anyway: libnats keeps trying, and events
         * wait in the queue (within its bound) until it gets there. */
        xfer__log(XFER_LOG_INFO, "nats", "agent %s: NATS at %s is not up "
                  "yet; connecting in the background", n->agent->name, url);
    } else {
        n->nc = NULL;
        st = nats_err(n, s, "connect");
    }
out:
    natsOptions_Destroy(no);
    return st;
}

static json_t *up_doc(xfer_agent_t *a, bool *fail)
{
    json_t *bes = json_array();
    char host[256] = "";
    unsigned nb = xfer__nbackends(a);

    for (unsigned j = 0; j < nb && bes != NULL; j++)
        json_array_append_new(bes, jstr(a->backends[j]->name));
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    return body_of(fail, "backends", bes, "pid",
                   json_integer((json_int_t)getpid()), "host", jstr(host),
                   NULL);
}

/* Free everything; the connection is already closed or never made. */
static void nats_free(xfer__nats_t *n)
{
    ev_t *e;

    while ((e = n->head) != NULL) {
        n->head = e->next;
        free(e);
    }
    for (unsigned i = 0; i < FOLLOW_BUCKETS; i++) {
        follow_t *f, *next;

        for (f = n->follow[i]; f != NULL; f = next) {
            next = f->next;
            free(f);
        }
    }
    pthread_cond_destroy(&n->qcv);
    pthread_cond_destroy(&n->closed_cv);
    pthread_mutex_destroy(&n->qlock);
    pthread_mutex_destroy(&n->mdlock);
    free(n->prefix);
    free(n->subj);
    free(n->agent_json);
    free(n->name);
    free(n);
}

/* Close the connection and wait (bounded) for libnats to say it is
 * closed, after which none of its callbacks runs with n.  false: it did
 * not say so in time, and n must not be freed (a callback may come). */
static bool nats_close(xfer__nats_t *n)
{
    struct timespec ts;
    bool closed;

    if (n->nc == NULL)
        return true;
    natsConnection_Close(n->nc);
    deadline_in(&ts, NATS_CLOSE_WAIT_MS);
    pthread_mutex_lock(&n->mdlock);
    while (!n->closed &&
           pthread_cond_timedwait(&n->closed_cv, &n->mdlock, &ts) == 0)
        ;
    closed = n->closed;
    pthread_mutex_unlock(&n->mdlock);
    natsConnection_Destroy(n->nc);
    n->nc = NULL;
    if (!closed)
        xfer__log(XFER_LOG_WARN, "nats", "agent %s: libnats did not report "
                  "the connection closed within %d ms (a process forked "
                  "after using NATS?); its state is left allocated",
                  n->agent->name, NATS_CLOSE_WAIT_MS);
    return closed;
}

static xfer_status_t nats_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc == 0 ? XFER_OK : xfer__err(XFER_ERR_NOMEM, "out of memory");
}

xfer_status_t xfer__nats_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__nats_t **out)
{
    const char *url = o->nats_url, *from = "nats_url";
    const char *prefix = o->nats_prefix ? o->nats_prefix : NATS_DEFAULT_PREFIX;
    char tok[3 * XFER_NAME_MAX + 1];
    xfer__nats_t *n;
    xfer__natsmd_t *md = NULL;
    json_t *name, *body;
    xfer_status_t st;
    bool fail;
    int rc;

    *out = NULL;
    if (url == NULL) {
        url = getenv("XFER_NATS_URL");
        from = "XFER_NATS_URL";
    }
    if (url == NULL || url[0] == '\0')
        return XFER_OK;
    st = check_url(url, from);
    if (st == XFER_OK)
        st = check_opts(o);
    if (st != XFER_OK)
        return st;
    if (xfer__nats_token(tok, sizeof(tok), a->name) == 0)
        return xfer__err(XFER_ERR_INVALID, "agent '%s': its name cannot be a "
                         "NATS subject token", a->name);

    n = calloc(1, sizeof(*n));
    if (n == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    n->agent = a;
    n->off = o->nats_off;
    n->stats_ms = o->nats_stats_ms ? o->nats_stats_ms : NATS_DEFAULT_STATS_MS;
    n->qmax = o->nats_queue ? o->nats_queue : NATS_DEFAULT_QUEUE;
    n->qbytes_max = NATS_QUEUE_BYTES;
    pthread_mutex_init(&n->qlock, NULL);
    pthread_mutex_init(&n->mdlock, NULL);
    if (nats_cond_init(&n->qcv) != XFER_OK) {
        pthread_cond_init(&n->closed_cv, NULL);
        nats_free(n);
        return XFER_ERR_NOMEM;
    }
    if (nats_cond_init(&n->closed_cv) != XFER_OK) {
        pthread_cond_init(&n->closed_cv, NULL);
        nats_free(n);
        return XFER_ERR_NOMEM;
    }
    n->prefix = strdup(prefix);
    n->name = strdup(a->name);
    name = jstr(a->name);
    n->agent_json = name ? json_dumps(name, JSON_COMPACT | JSON_ENCODE_ANY)
                         : NULL;
    json_decref(name);
    if (n->prefix != NULL && n->name != NULL &&
        asprintf(&n->subj, "%s.ev.%s.", prefix, tok) < 0)
        n->subj = NULL;
    if (n->prefix == NULL || n->agent_json == NULL || n->subj == NULL) {
        nats_free(n);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    n->subj_len = strlen(n->subj);

    /* Queued first, so it is the first event whenever the server comes. */
    if (!(n->off & XFER_NATS_OFF_EVENTS)) {
        body = up_doc(a, &fail);
        ev_put(n, "agent.up", body, fail);
    }
    st = connect_to(n, url);
    if (st != XFER_OK) {
        nats_free(n);
        return st;
    }
    rc = pthread_create(&n->thr, NULL, pub_main, n);
    if (rc != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot start its NATS "
                       "publisher thread: %s", a->name, strerror(rc));
        goto fail;
    }
    n->thr_started = true;
    if (!(n->off & XFER_NATS_OFF_METADATA)) {
        st = xfer__natsmd_start(a, n, o, &md);
        if (st != XFER_OK)
            goto fail;
        pthread_mutex_lock(&n->mdlock);
        n->md = md;
        pthread_mutex_unlock(&n->mdlock);
        /* A connection made while md was not yet in place told nobody. */
        if (is_up(n))
            md_changed(n);
    }
    __atomic_store_n(out, n, __ATOMIC_RELEASE);
    return XFER_OK;

fail:
    pthread_mutex_lock(&n->qlock);
    n->stop = true;
    pthread_cond_signal(&n->qcv);
    pthread_mutex_unlock(&n->qlock);
    if (n->thr_started)
        pthread_join(n->thr, NULL);
    if (nats_close(n))
        nats_free(n);
    return st;
}

void xfer__nats_stop(xfer__nats_t *n)
{
    xfer__natsmd_t *md;

    if (n == NULL)
        return;
    /* Metadata first: its entry is deleted while the connection is up. */
    pthread_mutex_lock(&n->mdlock);
    md = n->md;
    n->md = NULL;
    pthread_mutex_unlock(&n->mdlock);
    xfer__natsmd_stop(md);
    if (!(n->off & XFER_NATS_OFF_EVENTS))
        ev_put(n, "agent.down", NULL, false);
    /* The publisher hands over what it can while connected, then ends;
     * the flush bounds how long the server may take to take it. */
    pthread_mutex_lock(&n->qlock);
    n->stop = true;
    pthread_cond_signal(&n->qcv);
    pthread_mutex_unlock(&n->qlock);
    pthread_join(n->thr, NULL);
    if (is_up(n))
        natsConnection_FlushTimeout(n->nc, NATS_FLUSH_MS);
    if (nats_close(n))
        nats_free(n);
}

void xfer__nats_changed(xfer__nats_t *n)
{
    if (n != NULL)
        md_changed(n);
}

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
    return n->md;
}

/* ---- public ------------------------------------------------------------- */

static xfer_status_t no_plane(xfer_agent_t *a, const char *fn)
{
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "%s: agent '%s' has no event "
                     "plane (created without nats_url or XFER_NATS_URL)", fn,
                     a->name);
}

XFER_API xfer_status_t xfer_events_notif(xfer_agent_t *agent,
                                         const char *remote_agent, int on)
{
    xfer__nats_t *n;
    follow_t **pp, *gone = NULL, *f = NULL;
    size_t len;
    xfer_status_t st = XFER_OK;

    xfer__err_clear();
    if (agent == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_events_notif: NULL agent");
    n = nats_of(agent);
    if (n == NULL)
        return no_plane(agent, "xfer_events_notif");
    if (remote_agent != NULL) {
        len = strlen(remote_agent);
        if (len == 0 || len > XFER_NAME_MAX)
            return xfer__err(XFER_ERR_INVALID, "xfer_events_notif: an agent "
                             "name is 1 to %d bytes", XFER_NAME_MAX);
        if (on) {
            f = malloc(sizeof(*f) + len + 1);
            if (f == NULL)
                return xfer__err(XFER_ERR_NOMEM, "out of memory");
            memcpy(f->name, remote_agent, len + 1);
        }
    }
    pthread_mutex_lock(&n->qlock);
    if (remote_agent == NULL) {
        /* NULL, 1: every sender; NULL, 0: none at all. */
        n->follow_all = on != 0;
        if (!on) {
            for (unsigned i = 0; i < FOLLOW_BUCKETS; i++) {
                follow_t *l = n->follow[i];

                while (l != NULL) {
                    follow_t *next = l->next;

                    l->next = gone;
                    gone = l;
                    l = next;
                }
                n->follow[i] = NULL;
            }
            n->nfollow = 0;
        }
    } else {
        pp = follow_find(n, remote_agent);
        if (on && *pp == NULL) {
            if (n->nfollow >= FOLLOW_MAX) {
                st = xfer__err(XFER_ERR_INVALID, "xfer_events_notif: agent "
                               "'%s' already follows %d senders (the most); "
                               "stop one first, or follow all with NULL",
                               agent->name, FOLLOW_MAX);
            } else {
                f->next = NULL;
                *pp = f;
                f = NULL;
                n->nfollow++;
            }
        } else if (!on && *pp != NULL) {
            gone = *pp;
            *pp = gone->next;
            gone->next = NULL;
            n->nfollow--;
        }
    }
    atomic_store(&n->following, n->follow_all || n->nfollow > 0);
    pthread_mutex_unlock(&n->qlock);
    free(f);
    while (gone != NULL) {
        follow_t *next = gone->next;

        free(gone);
        gone = next;
    }
    return st;
}

XFER_API xfer_status_t xfer_events_stats(xfer_agent_t *agent,
                                         xfer_events_stats_t *out,
                                         size_t size)
{
    xfer_events_stats_t s;
    xfer__nats_t *n;

    xfer__err_clear();
    if (agent == NULL || out == NULL || size == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_events_stats: NULL argument "
                         "or size 0");
    n = nats_of(agent);
    if (n == NULL)
        return no_plane(agent, "xfer_events_stats");
    memset(&s, 0, sizeof(s));
    pthread_mutex_lock(&n->qlock);
    s.published = n->published;
    s.dropped = n->dropped;
    s.queued = n->qcount;
    s.reconnects = n->reconnects;
    pthread_mutex_unlock(&n->qlock);
    s.connected = is_up(n);
    memcpy(out, &s, size < sizeof(s) ? size : sizeof(s));
    return XFER_OK;
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
