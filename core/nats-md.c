/* nats-md.c - metadata over NATS (docs/events.md): the agent's blob in a
 * JetStream key-value bucket, kept alive while it lives; heartbeats on a
 * subject, because nats-server 2.9 does not tell watchers when an entry
 * expires; fetch by request/reply; peers fetched this way followed as
 * etcd follows them (same epochs and replacement rules). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <config.h>

#include "core/events.h"

#ifdef XFER_HAVE_NATS

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/nats.h"

#define MD_DEFAULT_BUCKET "xfer_agents"
#define MD_DEFAULT_TTL 10
#define MD_MIN_TTL 2
#define MD_CALL_MS 1000             /* one call made by the module's threads */
#define MD_RETRY_MS 500             /* after a failure, try again this soon */
#define MD_POLL_MS 100              /* a waiting fetch asks this often */
#define MD_ONCE_MS 500              /* the one request of a fetch with 0 ms */
#define MD_CHECK_MS 1000            /* heartbeats of followed peers checked */
#define MD_STOP_MS 1000             /* stop: deleting the entry, at most */
#define MD_WATCH_MS 250             /* the watch thread looks at stop */
#define MD_TOKEN_MAX (3 * XFER_NAME_MAX + 1)

typedef struct follow {
    char *name;
    uint64_t epoch;                 /* newest epoch loaded through NATS */
    uint64_t digest;                /* of the blob last loaded, 0: none */
    uint64_t last_hb;               /* mono ms: last heartbeat or load */
    bool alive;                     /* loaded, not invalidated by us */
    bool want;                      /* load the entry from the bucket */
} follow_t;

struct xfer__natsmd {
    xfer_agent_t *agent;
    natsConnection *nc;             /* nats.c's */
    char *bucket;
    unsigned ttl_s;
    char tok[MD_TOKEN_MAX];         /* our name as a key and token */
    char *md_subj, *hb_subj, *hb_all, *hb_pre;
    jsCtx *js;
    kvStore *kv;                    /* set once by the module thread */
    natsSubscription *md_sub, *hb_sub;

    /* The module thread's own. */
    uint64_t rev;                   /* our entry's last revision, 0: none */
    bool published;                 /* the entry was ours once */
    char *last;                     /* the blob last put */
    size_t last_len;

    pthread_mutex_t mu;             /* guards what follows */
    pthread_cond_t cv;              /* CLOCK_MONOTONIC */
    bool dirty, force;              /* (re)publish; even if unchanged */
    bool superseded;                /* a newer agent of our name holds it */
    /* Our own heartbeats as they come back through the server (mono ms):
     * while they do not, silence says nothing about peers. */
    uint64_t self_hb;
    char *blob;                     /* what fetches are answered with */
    size_t blob_len;
    unsigned gen;                   /* connections made: the watch
                                       thread remakes its watcher */
    follow_t *follow;
    size_t nfollow, cfollow;
    unsigned nsubs;                 /* subscriptions that will say when */
    unsigned subs_done;             /* their callbacks ended */

    atomic_bool stop;
    pthread_t thr, watch_thr;
    bool thr_started, watch_started;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void deadline_ts(struct timespec *ts, uint64_t at_ms)
{
    ts->tv_sec = (time_t)(at_ms / 1000);
    ts->tv_nsec = (long)(at_ms % 1000) * 1000000L;
}

/* The client's sentence for its last failure on this thread. */
static const char *nats_why(natsStatus s)
{
    const char *t = nats_GetLastError(NULL);

    return t != NULL && t[0] != '\0' ? t : natsStatus_GetText(s);
}

static bool connected(xfer__natsmd_t *m)
{
    return natsConnection_Status(m->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* FNV-1a: tells an unchanged blob from a new one without keeping it. */
static uint64_t digest(const void *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ull;
    return h | 1;
}

/* The agent name and epoch a blob claims, before it is loaded (the load
 * checks everything else).  False when it is not one to look into. */
static bool blob_peek(const void *blob, size_t len, char *name, size_t size,
                      uint64_t *epoch)
{
    json_t *root;

    /* As the load does: trailing NULs are not part of the document (a
     * peek that failed on them would let a blob past the name check). */
    while (len > 0 && ((const char *)blob)[len - 1] == '\0')
        len--;
    root = json_loadb(blob, len, 0, NULL);
    const char *n = json_string_value(json_object_get(root, "agent"));
    const char *e = json_string_value(json_object_get(root, "epoch"));
    bool ok = n != NULL && e != NULL && strncmp(e, "0x", 2) == 0 &&
              strlen(n) < size;

    if (ok) {
        snprintf(name, size, "%s", n);
        *epoch = strtoull(e + 2, NULL, 16);
    }
    json_decref(root);
    return ok;
}

/* ---- following peers ------------------------------------------------------------ */

static follow_t *follow_find(xfer__natsmd_t *m, const char *name)
{
    for (size_t i = 0; i < m->nfollow; i++)
        if (strcmp(m->follow[i].name, name) == 0)
            return &m->follow[i];
    return NULL;
}

static xfer_status_t follow_add(xfer__natsmd_t *m, const char *name)
{
    xfer_status_t st = XFER_OK;
    follow_t *f;

    pthread_mutex_lock(&m->mu);
    if (follow_find(m, name) != NULL)
        goto out;
    /* One entry per peer the agent could hold: max_remote_agents. */
    if (m->nfollow >= m->agent->max_remote_agents) {
        st = xfer__err(XFER_ERR_NOMEM, "agent '%s' follows %zu names over "
                       "NATS, the most max_remote_agents allows: '%s' is "
                       "not followed", m->agent->name, m->nfollow, name);
        goto out;
    }
    if (m->nfollow == m->cfollow) {
        size_t cap = m->cfollow ? m->cfollow * 2 : 8;
        follow_t *p = realloc(m->follow, cap * sizeof(*p));

        if (p == NULL) {
            st = xfer__err(XFER_ERR_NOMEM, "out of memory");
            goto out;
        }
        m->follow = p;
        m->cfollow = cap;
    }
    f = &m->follow[m->nfollow];
    memset(f, 0, sizeof(*f));
    f->name = strdup(name);
    if (f->name == NULL) {
        st = xfer__err(XFER_ERR_NOMEM, "out of memory");
        goto out;
    }
    f->last_hb = mono_ms();
    m->nfollow++;
out:
    pthread_mutex_unlock(&m->mu);
    return st;
}

static void peer_kill(xfer__natsmd_t *m, const char *name, const char *why)
{
    if (xfer__remote_invalidate(m->agent, name, why))
        xfer__log(XFER_LOG_INFO, "nats", "agent %s invalidated '%s': %s",
                  m->agent->name, name, why);
}

/* Load a blob said to be name's (from where: for sentences), as etcd.c
 * does: the blob's own rules decide (signature, epochs).  A blob that
 * names another agent is refused before anything is loaded. */
static xfer_status_t apply(xfer__natsmd_t *m, const char *name,
                           const void *blob, size_t len, const char *where)
{
    char got[XFER_NAME_MAX + 1];
    uint64_t epoch = 0;
    xfer_status_t st;
    follow_t *f;

    if (!blob_peek(blob, len, got, sizeof(got), &epoch))
        return xfer__err(XFER_ERR_INVALID, "%s holds no agent metadata (no "
                         "agent name and epoch could be read): refused",
                         where);
    if (strcmp(got, name) != 0)
        return xfer__err(XFER_ERR_INVALID, "%s holds metadata of agent '%s', "
                         "not of '%s': refused", where, got, name);
    /* Never back to an epoch older than one seen, also after the peer was
     * invalidated (a replayed blob of a dead incarnation). */
    pthread_mutex_lock(&m->mu);
    f = follow_find(m, name);
    if (f != NULL && epoch < f->epoch) {
        uint64_t seen = f->epoch;

        pthread_mutex_unlock(&m->mu);
        return xfer__err(XFER_ERR_INVALID, "%s holds metadata of agent '%s' "
                         "epoch 0x%" PRIx64 ", older than epoch 0x%" PRIx64
                         " seen before: refused", where, name, epoch, seen);
    }
    pthread_mutex_unlock(&m->mu);
    st = xfer__md_apply(m->agent, blob, len, NULL, 0);
    if (st != XFER_OK)
        return xfer__err_prefix(st, "metadata of '%s' from %s", name, where);
    pthread_mutex_lock(&m->mu);
    f = follow_find(m, name);
    if (f != NULL) {
        if (epoch > f->epoch)
            f->epoch = epoch;
        f->digest = digest(blob, len);
        f->last_hb = mono_ms();
        f->alive = true;
    }
    pthread_mutex_unlock(&m->mu);
    return XFER_OK;
}

/* Load name's entry from the bucket unless it is the blob loaded last. */
static void load_entry(xfer__natsmd_t *m, const char *name)
{
    char tok[MD_TOKEN_MAX], where[MD_TOKEN_MAX + 128];
    kvEntry *e = NULL;
    natsStatus s;
    const void *v;
    size_t len;
    uint64_t d, have = 0;
    xfer_status_t st;
    follow_t *f;

    if (xfer__nats_token(tok, sizeof(tok), name) == 0)
        return;
    s = kvStore_Get(&e, m->kv, tok);
    if (s != NATS_OK) {
        if (s != NATS_NOT_FOUND)
            xfer__log(XFER_LOG_INFO, "nats", "agent %s: cannot read '%s' "
                      "from bucket '%s': %s", m->agent->name, tok, m->bucket,
                      nats_why(s));
        return;
    }
    v = kvEntry_Value(e);
    len = kvEntry_ValueLen(e) > 0 ? (size_t)kvEntry_ValueLen(e) : 0;
    d = digest(v, len);
    pthread_mutex_lock(&m->mu);
    f = follow_find(m, name);
    if (f != NULL)
        have = f->digest;
    pthread_mutex_unlock(&m->mu);
    if (len > 0 && d != have) {
        snprintf(where, sizeof(where), "NATS bucket '%s' key '%s'", m->bucket,
                 tok);
        xfer__err_clear();
        st = apply(m, name, v, len, where);
        /* A blob the secret did not sign, or naming someone else, is
         * someone writing to the bucket who should not: worth a warning,
         * where a stale epoch is not. */
        if (st != XFER_OK)
            xfer__log(st == XFER_ERR_AUTH || strstr(xfer_last_error(), "not "
                      "of '") ? XFER_LOG_WARN : XFER_LOG_INFO, "nats",
                      "agent %s did not load '%s': %s", m->agent->name, name,
                      xfer_last_error());
    }
    kvEntry_Destroy(e);
}

/* ---- callbacks (the client's threads) ------------------------------------------- */

/* Fetch by request/reply: the blob, or nothing before a backend. */
static void on_md(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                  void *closure)
{
    xfer__natsmd_t *m = closure;
    const char *reply = natsMsg_GetReply(msg);

    (void)sub;
    /* The requester names the reply subject: never one of the server's
     * own ($JS.API..., $KV...), where an answer would act with this
     * agent's permissions (an empty one deletes a stream). */
    if (reply != NULL && reply[0] != '$') {
        natsStatus s = NATS_OK;
        size_t len = 0;

        pthread_mutex_lock(&m->mu);
        if (!m->superseded) {
            len = m->blob != NULL ? m->blob_len : 0;
            s = natsConnection_Publish(nc, reply, m->blob, (int)len);
        }
        pthread_mutex_unlock(&m->mu);
        /* The fetcher would only time out: say why here (the log is
         * rate-limited per call site). */
        if (s != NATS_OK)
            xfer__log(XFER_LOG_WARN, "nats", "agent %s: could not answer a "
                      "fetch of its metadata (%zu bytes): %s", m->agent->name,
                      len, natsStatus_GetText(s));
    }
    natsMsg_Destroy(msg);
}

/* A heartbeat on P.hb.T: a followed peer lives; a newer epoch is loaded. */
static void on_hb(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                  void *closure)
{
    xfer__natsmd_t *m = closure;
    const char *subj = natsMsg_GetSubject(msg);
    char name[XFER_NAME_MAX + 1];
    json_t *j;
    uint64_t epoch = 0;
    follow_t *f;

    (void)nc, (void)sub;
    if (strncmp(subj, m->hb_pre, strlen(m->hb_pre)) != 0 ||
        !xfer__nats_untoken(name, sizeof(name), subj + strlen(m->hb_pre))) {
        natsMsg_Destroy(msg);
        return;
    }
    if (strcmp(name, m->agent->name) == 0) {
        /* Ours, back through the server: it delivers heartbeats. */
        pthread_mutex_lock(&m->mu);
        m->self_hb = mono_ms();
        pthread_mutex_unlock(&m->mu);
        natsMsg_Destroy(msg);
        return;
    }
    j = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                   0, NULL);
    if (json_is_integer(json_object_get(j, "epoch")))
        epoch = (uint64_t)json_integer_value(json_object_get(j, "epoch"));
    json_decref(j);
    natsMsg_Destroy(msg);
    pthread_mutex_lock(&m->mu);
    f = follow_find(m, name);
    if (f != NULL) {
        f->last_hb = mono_ms();
        if (epoch > f->epoch) {
            f->want = true;
            pthread_cond_broadcast(&m->cv);
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static void on_sub_done(void *closure)
{
    xfer__natsmd_t *m = closure;

    pthread_mutex_lock(&m->mu);
    m->subs_done++;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* ---- publishing: the module thread ---------------------------------------------- */

/* The bucket, made if missing.  A bucket that exists keeps its TTL. */
static xfer_status_t bucket_open(xfer__natsmd_t *m)
{
    kvStore *kv = NULL;
    kvConfig cfg;
    kvStatus *ks = NULL;
    natsStatus s;

    s = js_KeyValue(&kv, m->js, m->bucket);
    if (s == NATS_NOT_FOUND) {
        kvConfig_Init(&cfg);
        cfg.Bucket = m->bucket;
        cfg.History = 1;
        cfg.TTL = (int64_t)m->ttl_s * 1000000000;
        s = js_CreateKeyValue(&kv, m->js, &cfg);
        if (s == NATS_OK)
            xfer__log(XFER_LOG_INFO, "nats", "agent %s made bucket '%s' (TTL "
                      "%u s)", m->agent->name, m->bucket, m->ttl_s);
    } else if (s == NATS_OK && kvStore_Status(&ks, kv) == NATS_OK) {
        int64_t ttl = kvStatus_TTL(ks);

        if (ttl != (int64_t)m->ttl_s * 1000000000)
            xfer__log(XFER_LOG_WARN, "nats", "agent %s: bucket '%s' exists "
                      "with a TTL of %.1f s, not nats_ttl_s %u s: it is used "
                      "as it is", m->agent->name, m->bucket, (double)ttl / 1e9,
                      m->ttl_s);
        kvStatus_Destroy(ks);
    }
    if (s != NATS_OK)
        return xfer__err(XFER_ERR_BACKEND, "agent '%s': NATS bucket '%s': %s",
                         m->agent->name, m->bucket, nats_why(s));
    pthread_mutex_lock(&m->mu);
    m->kv = kv;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return XFER_OK;
}

/* A put failed while connected: if the bucket is gone (an operator
 * deleted it, a server came back without its store), make it again and
 * have the watcher start over on the new stream.  Only this module's
 * thread uses m->kv for calls, so the old handle can go here. */
static void bucket_check(xfer__natsmd_t *m)
{
    kvStore *kv = NULL, *old;
    kvConfig cfg;
    natsStatus s = js_KeyValue(&kv, m->js, m->bucket);

    if (s == NATS_OK) {
        kvStore_Destroy(kv);
        return;
    }
    if (s != NATS_NOT_FOUND)
        return;
    kvConfig_Init(&cfg);
    cfg.Bucket = m->bucket;
    cfg.History = 1;
    cfg.TTL = (int64_t)m->ttl_s * 1000000000;
    if (js_CreateKeyValue(&kv, m->js, &cfg) != NATS_OK)
        return;
    xfer__log(XFER_LOG_WARN, "nats", "agent %s: bucket '%s' was gone; made "
              "it again", m->agent->name, m->bucket);
    pthread_mutex_lock(&m->mu);
    old = m->kv;
    m->kv = kv;
    m->published = false;
    m->dirty = m->force = true;
    m->gen++;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    kvStore_Destroy(old);
}

/* What fetches are answered with from now on (a copy of blob). */
static void serve(xfer__natsmd_t *m, const char *blob, size_t len)
{
    char *copy = malloc(len);

    if (copy == NULL)
        return;
    memcpy(copy, blob, len);
    pthread_mutex_lock(&m->mu);
    free(m->blob);
    m->blob = copy;
    m->blob_len = len;
    pthread_mutex_unlock(&m->mu);
}

/* Without the bucket (no JetStream, or not yet), fetches are still
 * answered with the metadata as it is. */
static void serve_current(xfer__natsmd_t *m)
{
    char *blob = NULL;
    size_t len = 0;

    if (xfer_md_get(m->agent, XFER_MD_ALL, NULL, 0, &blob, &len) == XFER_OK)
        serve(m, blob, len);
    free(blob);
}

/* Put our blob.  The first time the entry is taken whatever holds it: a
 * restarted agent replaces its older self.  After that it is rewritten
 * only over our own last revision, or where it is gone (expired, deleted,
 * a server that lost its store) or holds no newer agent of our name: an
 * older incarnation still running must not overwrite its successor. */
static xfer_status_t publish(xfer__natsmd_t *m, bool force)
{
    char *blob = NULL, got[XFER_NAME_MAX + 1];
    size_t len = 0;
    uint64_t rev = 0, epoch = 0;
    kvEntry *e = NULL;
    natsStatus s;
    xfer_status_t st;

    st = xfer_md_get(m->agent, XFER_MD_ALL, NULL, 0, &blob, &len);
    if (st != XFER_OK)
        return st;
    serve(m, blob, len);
    if (!force && m->published && m->last != NULL && len == m->last_len &&
        memcmp(blob, m->last, len) == 0) {
        free(blob);
        return XFER_OK;
    }
    if (!m->published)
        s = kvStore_Put(&rev, m->kv, m->tok, blob, (int)len);
    else
        s = kvStore_Update(&rev, m->kv, m->tok, blob, (int)len, m->rev);
    if (s != NATS_OK && m->published) {
        /* Not our revision any more: see who holds the key. */
        s = kvStore_Get(&e, m->kv, m->tok);
        if (s == NATS_NOT_FOUND) {
            s = kvStore_Create(&rev, m->kv, m->tok, blob, (int)len);
        } else if (s == NATS_OK) {
            /* A successor only if it proves it (with a secret, anyone
             * can put anything under the key). */
            if (blob_peek(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), got,
                          sizeof(got), &epoch) &&
                strcmp(got, m->agent->name) == 0 && epoch > m->agent->epoch &&
                xfer__md_trusted(m->agent, kvEntry_Value(e),
                                 (size_t)kvEntry_ValueLen(e))) {
                pthread_mutex_lock(&m->mu);
                m->superseded = true;
                pthread_mutex_unlock(&m->mu);
                xfer__log(XFER_LOG_INFO, "nats", "agent %s: a newer agent of "
                          "this name holds '%s' in bucket '%s'; no longer "
                          "publishing", m->agent->name, m->tok, m->bucket);
                kvEntry_Destroy(e);
                free(blob);
                return XFER_OK;
            }
            xfer__log(XFER_LOG_WARN, "nats", "agent %s: key '%s' of bucket "
                      "'%s' held what this agent did not put there; put "
                      "back", m->agent->name, m->tok, m->bucket);
            s = kvStore_Update(&rev, m->kv, m->tok, blob, (int)len,
                               kvEntry_Revision(e));
            kvEntry_Destroy(e);
        }
    }
    if (s != NATS_OK) {
        free(blob);
        return xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot put key '%s' "
                         "in NATS bucket '%s': %s", m->agent->name, m->tok,
                         m->bucket, nats_why(s));
    }
    m->rev = rev;
    m->published = true;
    free(m->last);
    m->last = blob;
    m->last_len = len;
    return XFER_OK;
}

static void heartbeat(xfer__natsmd_t *m)
{
    json_t *j = json_pack("{s:i,s:s,s:I}", "v", 1, "agent", m->agent->name,
                          "epoch", (json_int_t)m->agent->epoch);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;

    if (text != NULL)
        natsConnection_PublishString(m->nc, m->hb_subj, text);
    free(text);
    json_decref(j);
}

static bool has_backends(xfer_agent_t *a)
{
    return xfer__nbackends(a) > 0;
}

/* The reason a peer is invalidated for silence: a remote agent keeps
 * only a pointer to it (dead_why, static text), so one string per TTL
 * in use lives as long as the process. */
static const char *hb_why(unsigned ttl_s)
{
    typedef struct why {
        struct why *next;
        unsigned ttl_s;
        char text[];
    } why_t;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static why_t *whys;
    const char *text = "its NATS heartbeats stopped";
    why_t *w;

    pthread_mutex_lock(&mu);
    for (w = whys; w != NULL && w->ttl_s != ttl_s; w = w->next)
        ;
    if (w == NULL && (w = malloc(sizeof(*w) + 80)) != NULL) {
        w->ttl_s = ttl_s;
        snprintf(w->text, 80, "its NATS heartbeats stopped for more than %u "
                 "s", ttl_s);
        w->next = whys;
        whys = w;
    }
    if (w != NULL)
        text = w->text;
    pthread_mutex_unlock(&mu);
    return text;
}

/* Followed peers whose heartbeats stopped for more than the TTL. */
static void check_heartbeats(xfer__natsmd_t *m)
{
    char **dead;
    uint64_t now;
    size_t ndead = 0, cap;

    pthread_mutex_lock(&m->mu);
    /* Every peer that fell silent goes in this pass, however many (a
     * rack at once): the bound is per peer.  Out of memory: next pass. */
    cap = m->nfollow;
    dead = cap ? calloc(cap, sizeof(*dead)) : NULL;
    if (dead == NULL)
        cap = 0;
    /* Read under the lock: a load or heartbeat stamps later than an
     * earlier reading of the clock. */
    now = mono_ms();
    /* Our own heartbeats have not come back either: the server is not
     * delivering (shutting down, stalled), which says nothing of the
     * peers.  The clock stops, as while disconnected. */
    if (now > m->self_hb && now - m->self_hb > m->ttl_s * 1000u) {
        for (size_t i = 0; i < m->nfollow; i++)
            m->follow[i].last_hb = now;
        cap = 0;
    }
    for (size_t i = 0; i < m->nfollow && ndead < cap; i++) {
        follow_t *f = &m->follow[i];

        if (f->alive && now > f->last_hb &&
            now - f->last_hb > m->ttl_s * 1000u &&
            (dead[ndead] = strdup(f->name)) != NULL) {
            ndead++;
            /* Its next entry, of any epoch, loads it again. */
            f->alive = false;
            f->digest = 0;
        }
    }
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < ndead; i++) {
        peer_kill(m, dead[i], hb_why(m->ttl_s));
        free(dead[i]);
    }
    free(dead);
}

static void *md_main(void *arg)
{
    xfer__natsmd_t *m = arg;
    xfer_agent_t *a = m->agent;
    uint64_t next_keep = 0, next_hb = 0, next_check = 0, retry_at = 0;
    bool outage = false, was_up = false;

    for (;;) {
        bool dirty, force, ok = true, up, superseded;
        char *pending[16];
        size_t npending = 0;
        uint64_t now;

        pthread_mutex_lock(&m->mu);
        for (;;) {
            bool work = m->dirty;
            uint64_t wake = next_check;
            struct timespec ts;

            for (size_t i = 0; i < m->nfollow && !work; i++)
                work = m->follow[i].want;
            now = mono_ms();
            /* The keep-alive is due, unless superseded or the last try
             * failed less than MD_RETRY_MS ago (an outage: never spin). */
            bool keep = m->published && !m->superseded;
            uint64_t keep_at = next_keep > retry_at ? next_keep : retry_at;

            if (atomic_load(&m->stop) || now >= next_check ||
                now >= next_hb || (keep && now >= keep_at) ||
                (work && now >= retry_at))
                break;
            if (next_hb < wake)
                wake = next_hb;
            if (keep && keep_at < wake)
                wake = keep_at;
            if (work && retry_at < wake)
                wake = retry_at;
            deadline_ts(&ts, wake);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        if (atomic_load(&m->stop)) {
            pthread_mutex_unlock(&m->mu);
            break;
        }
        up = connected(m);
        if (up && !was_up) {
            /* Back: the entry may be gone with the server's store, and
             * heartbeats missed meanwhile say nothing about peers. */
            m->dirty = m->force = true;
            m->gen++;
            for (size_t i = 0; i < m->nfollow; i++)
                m->follow[i].last_hb = now;
            pthread_cond_broadcast(&m->cv);
        }
        was_up = up;
        dirty = m->dirty;
        force = m->force;
        superseded = m->superseded;
        if (up && m->kv != NULL) {
            m->dirty = m->force = false;
            for (size_t i = 0; i < m->nfollow && npending < 16; i++)
                if (m->follow[i].want &&
                    (pending[npending] = strdup(m->follow[i].name)) != NULL) {
                    m->follow[i].want = false;
                    npending++;
                }
        }
        pthread_mutex_unlock(&m->mu);

        xfer__err_clear();
        if (!up) {
            ok = false;
            xfer__err(XFER_ERR_BACKEND, "no connection to NATS");
        } else if (m->kv == NULL) {
            ok = bucket_open(m) == XFER_OK;
            if (ok)
                dirty = force = true;
        }
        if (!ok && dirty && !superseded && has_backends(a))
            serve_current(m);
        if (ok && !superseded && (dirty || now >= next_keep) &&
            has_backends(a)) {
            /* The keep-alive is a put too: the entry lives ttl after it. */
            bool keep = m->published && now >= next_keep;

            ok = publish(m, force || keep) == XFER_OK;
            if (ok)
                next_keep = mono_ms() + m->ttl_s * 1000u / 3;
            else
                bucket_check(m);
        }
        if (up && !superseded && now >= next_hb) {
            heartbeat(m);
            next_hb = now + m->ttl_s * 1000u / 3;
        } else if (!up && now >= next_hb) {
            next_hb = now + m->ttl_s * 1000u / 3;
        }
        for (size_t i = 0; i < npending; i++) {
            load_entry(m, pending[i]);
            free(pending[i]);
        }
        if (now >= next_check) {
            if (up)
                check_heartbeats(m);
            next_check = now + MD_CHECK_MS;
        }
        if (!ok) {
            pthread_mutex_lock(&m->mu);
            m->dirty = true;
            m->force = m->force || force;
            pthread_mutex_unlock(&m->mu);
            retry_at = mono_ms() + MD_RETRY_MS;
            if (!outage && !atomic_load(&m->stop))
                xfer__log(XFER_LOG_WARN, "nats", "agent %s: %s; retrying "
                          "every %d ms", a->name, xfer_last_error(),
                          MD_RETRY_MS);
            outage = true;
        } else if (outage && m->published) {
            xfer__log(XFER_LOG_INFO, "nats", "agent %s: NATS answers again; "
                      "metadata published in bucket '%s'", a->name, m->bucket);
            outage = false;
        }
    }
    return NULL;
}

/* ---- following: the watch thread ------------------------------------------------ */

/* One change of the bucket (headers only): key is the entry's key. */
static void watch_change(xfer__natsmd_t *m, const char *key, bool gone)
{
    char name[XFER_NAME_MAX + 1];
    follow_t *f;

    if (!xfer__nats_untoken(name, sizeof(name), key))
        return;
    if (strcmp(name, m->agent->name) == 0) {
        if (gone) {
            /* Ours, deleted by someone: put it back. */
            pthread_mutex_lock(&m->mu);
            m->dirty = m->force = true;
            pthread_cond_broadcast(&m->cv);
            pthread_mutex_unlock(&m->mu);
        }
        return;
    }
    pthread_mutex_lock(&m->mu);
    f = follow_find(m, name);
    if (f != NULL && gone) {
        f->alive = false;
        f->digest = 0;
    } else if (f != NULL) {
        f->want = true;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    /* A delete marker carries no signature: with a secret it is only a
     * hint, and the peer goes when its heartbeats stop (nats_ttl_s + the
     * check period), which a forger cannot fake for it. */
    if (f != NULL && gone && m->agent->auth == NULL)
        peer_kill(m, name, "its metadata entry was deleted from NATS");
}

/* The bucket's changes come through a JetStream push consumer of its
 * own, headers only, from the last change of every key on: what
 * kvStore_WatchAll does with its MetaOnly option, but not through its
 * ordered consumer, which libnats 3.4 resets after a reconnection in a
 * way that its destruction then reads freed memory (valgrind).  After a
 * reconnection the consumer is made anew instead. */
static void *watch_main(void *arg)
{
    xfer__natsmd_t *m = arg;
    unsigned gen = 0;
    char *stream = NULL, *subj = NULL;
    size_t pre;

    if (asprintf(&stream, "KV_%s", m->bucket) < 0)
        stream = NULL;
    if (asprintf(&subj, "$KV.%s.>", m->bucket) < 0)
        subj = NULL;
    if (stream == NULL || subj == NULL) {
        xfer__log(XFER_LOG_WARN, "nats", "agent %s: out of memory: peers "
                  "are not watched in bucket '%s'", m->agent->name,
                  m->bucket);
        free(stream);
        free(subj);
        return NULL;
    }
    pre = strlen(subj) - 1;
    while (!atomic_load(&m->stop)) {
        natsSubscription *sub = NULL;
        jsSubOptions so;
        struct timespec ts;
        natsStatus s = NATS_OK;

        pthread_mutex_lock(&m->mu);
        while (!atomic_load(&m->stop) && (m->kv == NULL || m->gen == 0)) {
            deadline_ts(&ts, mono_ms() + MD_RETRY_MS);
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        }
        gen = m->gen;
        pthread_mutex_unlock(&m->mu);
        if (atomic_load(&m->stop))
            break;
        jsSubOptions_Init(&so);
        so.Stream = stream;
        so.Config.DeliverPolicy = js_DeliverLastPerSubject;
        so.Config.AckPolicy = js_AckNone;
        so.Config.HeadersOnly = true;
        s = js_SubscribeSync(&sub, m->js, subj, NULL, &so, NULL);
        while (s == NATS_OK && !atomic_load(&m->stop)) {
            natsMsg *msg = NULL;
            const char *op = NULL, *key;

            s = natsSubscription_NextMsg(&msg, sub, MD_WATCH_MS);
            if (s == NATS_TIMEOUT) {
                s = NATS_OK;
                pthread_mutex_lock(&m->mu);
                if (m->gen != gen)
                    s = NATS_CONNECTION_CLOSED; /* remake it */
                pthread_mutex_unlock(&m->mu);
                continue;
            }
            if (s != NATS_OK)
                break;
            key = natsMsg_GetSubject(msg);
            if (strlen(key) > pre) {
                natsMsgHeader_Get(msg, "KV-Operation", &op);
                watch_change(m, key + pre, op != NULL &&
                             (strcmp(op, "DEL") == 0 ||
                              strcmp(op, "PURGE") == 0));
            }
            natsMsg_Destroy(msg);
        }
        /* No call to the server: its ephemeral consumer goes by itself
         * once nobody listens, and stop must not wait on an outage. */
        natsSubscription_Destroy(sub);
        if (atomic_load(&m->stop))
            break;
        pthread_mutex_lock(&m->mu);
        deadline_ts(&ts, mono_ms() + MD_RETRY_MS);
        if (!atomic_load(&m->stop))
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
        pthread_mutex_unlock(&m->mu);
    }
    free(stream);
    free(subj);
    return NULL;
}

/* ---- lifetime ------------------------------------------------------------------ */

static void md_free(xfer__natsmd_t *m)
{
    for (size_t i = 0; i < m->nfollow; i++)
        free(m->follow[i].name);
    free(m->follow);
    kvStore_Destroy(m->kv);
    jsCtx_Destroy(m->js);
    free(m->bucket);
    free(m->md_subj);
    free(m->hb_subj);
    free(m->hb_all);
    free(m->hb_pre);
    free(m->blob);
    free(m->last);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static bool bucket_ok(const char *b)
{
    if (b[0] == '\0' || strlen(b) > 64)
        return false;
    for (; *b; b++)
        if (!((*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z') ||
              (*b >= '0' && *b <= '9') || *b == '-' || *b == '_'))
            return false;
    return true;
}

static char *subject(const char *prefix, const char *kind, const char *tok)
{
    char *s = NULL;

    if (asprintf(&s, "%s.%s.%s", prefix, kind, tok) < 0)
        return NULL;
    return s;
}

xfer_status_t xfer__natsmd_start(xfer_agent_t *a, xfer__nats_t *n,
                                 const xfer_agent_opts_t *o,
                                 xfer__natsmd_t **out)
{
    const char *bucket = o->nats_bucket ? o->nats_bucket : MD_DEFAULT_BUCKET;
    const char *prefix = xfer__nats_prefix(n);
    unsigned ttl_s = o->nats_ttl_s ? o->nats_ttl_s : MD_DEFAULT_TTL;
    pthread_condattr_t ca;
    xfer__natsmd_t *m;
    xfer_status_t st;
    jsOptions jo;
    natsStatus s;
    int rc;

    *out = NULL;
    if (!bucket_ok(bucket))
        return xfer__err(XFER_ERR_INVALID, "agent option nats_bucket '%s' "
                         "must be 1 to 64 letters, digits, '-' or '_'",
                         bucket);
    if (ttl_s < MD_MIN_TTL)
        return xfer__err(XFER_ERR_INVALID, "agent option nats_ttl_s: %u s is "
                         "below the minimum of %d s", ttl_s, MD_MIN_TTL);
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    m->agent = a;
    m->nc = xfer__nats_conn(n);
    m->ttl_s = ttl_s;
    m->self_hb = mono_ms();
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    m->dirty = true;
    xfer__nats_token(m->tok, sizeof(m->tok), a->name);
    m->bucket = strdup(bucket);
    m->md_subj = subject(prefix, "md", m->tok);
    m->hb_subj = subject(prefix, "hb", m->tok);
    m->hb_all = subject(prefix, "hb", "*");
    m->hb_pre = subject(prefix, "hb", "");
    if (m->bucket == NULL || m->md_subj == NULL || m->hb_subj == NULL ||
        m->hb_all == NULL || m->hb_pre == NULL) {
        md_free(m);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    /* Every JetStream call (bucket, puts, reads) waits at most
     * MD_CALL_MS, so that stop stays bounded in an outage too. */
    jsOptions_Init(&jo);
    jo.Wait = MD_CALL_MS;
    s = natsConnection_JetStream(&m->js, m->nc, &jo);
    /* Subscriptions made before the server answers are sent when it does. */
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&m->md_sub, m->nc, m->md_subj, on_md, m);
    if (s == NATS_OK &&
        (s = natsSubscription_SetOnCompleteCB(m->md_sub, on_sub_done, m)) ==
            NATS_OK)
        m->nsubs++;
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&m->hb_sub, m->nc, m->hb_all, on_hb, m);
    if (s == NATS_OK &&
        (s = natsSubscription_SetOnCompleteCB(m->hb_sub, on_sub_done, m)) ==
            NATS_OK)
        m->nsubs++;
    if (s != NATS_OK) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot subscribe to "
                       "'%s' and '%s': %s", a->name, m->md_subj, m->hb_all,
                       nats_why(s));
        xfer__natsmd_stop(m);
        return st;
    }
    rc = pthread_create(&m->thr, NULL, md_main, m);
    m->thr_started = rc == 0;
    if (rc == 0) {
        rc = pthread_create(&m->watch_thr, NULL, watch_main, m);
        m->watch_started = rc == 0;
    }
    if (rc != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot start its NATS "
                       "metadata threads: %s", a->name, strerror(rc));
        xfer__natsmd_stop(m);
        return st;
    }
    *out = m;
    return XFER_OK;
}

void xfer__natsmd_stop(xfer__natsmd_t *m)
{
    uint64_t end;
    bool drained;

    if (m == NULL)
        return;
    /* The watch thread sees stop within one wait of its subscription. */
    pthread_mutex_lock(&m->mu);
    atomic_store(&m->stop, true);
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (m->thr_started)
        pthread_join(m->thr, NULL);
    if (m->watch_started)
        pthread_join(m->watch_thr, NULL);
    /* No more answers or heartbeats read; the client tells on_sub_done
     * when each subscription's callbacks are over (also when the
     * connection closed them already). */
    if (m->md_sub != NULL)
        natsSubscription_Unsubscribe(m->md_sub);
    if (m->hb_sub != NULL)
        natsSubscription_Unsubscribe(m->hb_sub);
    /* Deleting the entry tells every follower now, not after the TTL:
     * only over our own last revision, so that an older incarnation
     * leaving never takes its successor's entry with it. */
    if (m->published && !m->superseded && m->kv != NULL && connected(m)) {
        natsMsg *msg = NULL;
        jsPubOptions po;
        char *subj = NULL;
        natsStatus s = NATS_NO_MEMORY;

        jsPubOptions_Init(&po);
        po.MaxWait = MD_STOP_MS;
        po.ExpectLastSubjectSeq = m->rev;
        if (asprintf(&subj, "$KV.%s.%s", m->bucket, m->tok) >= 0 &&
            (s = natsMsg_Create(&msg, subj, NULL, NULL, 0)) == NATS_OK &&
            (s = natsMsgHeader_Set(msg, "KV-Operation", "DEL")) == NATS_OK)
            s = js_PublishMsg(NULL, m->js, msg, &po, NULL);
        if (s != NATS_OK)
            xfer__log(XFER_LOG_INFO, "nats", "agent %s: entry '%s' not "
                      "deleted from bucket '%s': %s", m->agent->name, m->tok,
                      m->bucket, nats_why(s));
        natsMsg_Destroy(msg);
        free(subj);
    }
    /* Callbacks still running hold m: wait for the client to say they
     * are done (it does once the unsubscription is processed). */
    end = mono_ms() + MD_STOP_MS;
    pthread_mutex_lock(&m->mu);
    while (m->subs_done < m->nsubs && mono_ms() < end) {
        struct timespec ts;

        deadline_ts(&ts, end);
        pthread_cond_timedwait(&m->cv, &m->mu, &ts);
    }
    drained = m->subs_done >= m->nsubs;
    pthread_mutex_unlock(&m->mu);
    natsSubscription_Destroy(m->md_sub);
    natsSubscription_Destroy(m->hb_sub);
    if (!drained) {
        /* A callback may still hold it: leaking it is safe, freeing not. */
        xfer__log(XFER_LOG_WARN, "nats", "agent %s: NATS callbacks did not "
                  "end within %d ms; their state is left allocated",
                  m->agent->name, MD_STOP_MS);
        return;
    }
    md_free(m);
}

void xfer__natsmd_changed(xfer__natsmd_t *m)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->mu);
    m->dirty = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

/* ---- public API ------------------------------------------------------------------ */

XFER_API xfer_status_t xfer_md_fetch_nats(xfer_agent_t *agent,
                                          const char *name,
                                          unsigned timeout_ms)
{
    char tok[MD_TOKEN_MAX], *subj = NULL, where[MD_TOKEN_MAX + 160];
    xfer__natsmd_t *m;
    uint64_t deadline;
    bool empty = false;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || name == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_fetch_nats: NULL "
                         "argument");
    if (agent->nats == NULL)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "agent '%s' has no NATS "
                         "server (set opts.nats_url or XFER_NATS_URL)",
                         agent->name);
    m = xfer__nats_md(agent->nats);
    if (m == NULL)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "agent '%s' does not keep "
                         "metadata in NATS (nats_off has "
                         "XFER_NATS_OFF_METADATA)", agent->name);
    if (name[0] == '\0' || strlen(name) > XFER_NAME_MAX)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_fetch_nats: agent name "
                         "must be 1 to %d bytes", XFER_NAME_MAX);
    if (strcmp(name, agent->name) == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_fetch_nats: '%s' is this "
                         "agent's own name", name);
    xfer__nats_token(tok, sizeof(tok), name);
    subj = subject(xfer__nats_prefix(agent->nats), "md", tok);
    if (subj == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    st = follow_add(m, name);
    if (st != XFER_OK) {
        free(subj);
        return st;
    }
    snprintf(where, sizeof(where), "NATS subject '%s'", subj);
    deadline = mono_ms() + timeout_ms;
    for (;;) {
        uint64_t now = mono_ms();
        unsigned left = now < deadline ? (unsigned)(deadline - now) : 0;
        natsMsg *reply = NULL;
        natsStatus s;

        s = natsConnection_Request(&reply, m->nc, subj, NULL, 0,
                                   timeout_ms == 0 ? MD_ONCE_MS
                                   : left < MD_POLL_MS ? MD_POLL_MS
                                   : left > MD_CALL_MS ? MD_CALL_MS : left);
        if (s == NATS_OK && natsMsg_GetDataLength(reply) > 0) {
            xfer__err_clear();
            st = apply(m, name, natsMsg_GetData(reply),
                       (size_t)natsMsg_GetDataLength(reply), where);
            natsMsg_Destroy(reply);
            free(subj);
            return st;
        }
        /* Empty: the agent is there, without a backend yet. */
        if (s == NATS_OK)
            empty = true;
        natsMsg_Destroy(reply);
        now = mono_ms();
        if (now >= deadline)
            break;
        if (s != NATS_TIMEOUT) {
            /* No responders (answered at once) or no connection yet. */
            struct timespec ts;

            left = (unsigned)(deadline - now);
            ts.tv_sec = 0;
            ts.tv_nsec = (long)(left < MD_POLL_MS ? left : MD_POLL_MS) *
                         1000000L;
            nanosleep(&ts, NULL);
            if (mono_ms() >= deadline)
                break;
        }
    }
    if (empty)
        st = xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' answered on %s with "
                       "no metadata (it has no backend yet) within %u ms",
                       name, where, timeout_ms);
    else if (!connected(m))
        /* Nobody could have answered: say why, not that nobody did. */
        st = xfer__err(XFER_ERR_TIMEOUT, "no answer from agent '%s' on %s "
                       "within %u ms: this agent has no connection to "
                       "NATS", name, where, timeout_ms ? timeout_ms
                       : MD_ONCE_MS);
    else
        st = xfer__err(XFER_ERR_TIMEOUT, "no agent '%s' answered on %s "
                       "within %u ms", name, where, timeout_ms ? timeout_ms
                       : MD_ONCE_MS);
    free(subj);
    return st;
}

#else /* !XFER_HAVE_NATS */

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
