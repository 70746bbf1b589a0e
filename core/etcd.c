/* etcd.c - the etcd control plane: this agent's metadata published under a
 * lease kept alive, peers fetched by name and followed through a watch. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/ctl.h"

#if XFER_HAVE_CURL
#include <curl/curl.h>

#include "core/base64.h"
#include "core/etcd-http.h"

#define ETCD_DEFAULT_NS "/xfer/agents/"
#define ETCD_DEFAULT_TTL 10
#define ETCD_MIN_TTL 2              /* etcd's own floor with default timing */
#define ETCD_CALL_MS 1000           /* one call made by the agent's threads */
#define ETCD_RETRY_MS 500           /* after a failure, try again this soon */
#define ETCD_POLL_MS 100            /* a blocking fetch looks this often */
/* An answer carries at most one metadata blob, base64: 4/3 of it. */
#define ETCD_BODY_MAX ((size_t)XFER_MD_MAX / 3 * 4 + 65536)

typedef struct follow {
    char *name;
    bool pending;                   /* fetch_start: not looked up yet */
} follow_t;

struct xfer__etcd {
    xfer_agent_t *agent;
    xfer__etcd_http_t http;         /* endpoints; stop aborts its calls */
    char *ns, *ns_end;              /* prefix and its range end */
    char *key;                      /* ns + agent name */
    unsigned ttl_s;
    CURLM *wm;                      /* the watch's multi handle */
    char *last;                     /* the document last put (publisher
                                       thread only): an unchanged one is
                                       not put again */
    size_t last_len;

    pthread_mutex_t mu;             /* guards what follows */
    pthread_cond_t cv;              /* CLOCK_MONOTONIC */
    bool dirty;                     /* metadata to (re)publish */
    bool force;                     /* put it even if unchanged (the key
                                       may be lost) */
    int64_t lease;                  /* 0: none granted */
    bool published;                 /* the key was ours once */
    bool superseded;                /* a newer agent of our name holds it */
    follow_t *follow;
    size_t nfollow, cfollow;

    atomic_bool stop;
    pthread_t lease_thr, watch_thr;
    bool lease_started, watch_started;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* POST body to path on the first endpoint that answers (etcd-http.c);
 * a failure becomes this thread's error. */
static xfer_status_t etcd_call(xfer__etcd_t *e, const char *path,
                               json_t *body, unsigned timeout_ms,
                               json_t **resp)
{
    xfer__etcd_http_err_t err;
    xfer_status_t st = xfer__etcd_http_call(&e->http, path, body, timeout_ms,
                                            resp, &err);

    return st == XFER_OK ? XFER_OK : xfer__err(st, "%s", err.msg);
}

/* ---- following peers ------------------------------------------------------------ */

static follow_t *follow_find(xfer__etcd_t *e, const char *name)
{
    for (size_t i = 0; i < e->nfollow; i++)
        if (strcmp(e->follow[i].name, name) == 0)
            return &e->follow[i];
    return NULL;
}

static xfer_status_t follow_add(xfer__etcd_t *e, const char *name,
                                bool pending)
{
    follow_t *f;
    xfer_status_t st = XFER_OK;

    pthread_mutex_lock(&e->mu);
    f = follow_find(e, name);
    if (f == NULL) {
        if (e->nfollow == e->cfollow) {
            size_t cap = e->cfollow ? e->cfollow * 2 : 8;
            follow_t *p = realloc(e->follow, cap * sizeof(*p));

            if (p == NULL) {
                st = xfer__err(XFER_ERR_NOMEM, "out of memory");
                goto out;
            }
            e->follow = p;
            e->cfollow = cap;
        }
        f = &e->follow[e->nfollow];
        f->name = strdup(name);
        if (f->name == NULL) {
            st = xfer__err(XFER_ERR_NOMEM, "out of memory");
            goto out;
        }
        f->pending = false;
        e->nfollow++;
    }
    if (pending) {
        f->pending = true;
        pthread_cond_broadcast(&e->cv);
    }
out:
    pthread_mutex_unlock(&e->mu);
    return st;
}

static bool follows(xfer__etcd_t *e, const char *name)
{
    bool yes;

    pthread_mutex_lock(&e->mu);
    yes = follow_find(e, name) != NULL;
    pthread_mutex_unlock(&e->mu);
    return yes;
}

/* The name a key stands for, or NULL if it is outside the namespace. */
static const char *key_name(xfer__etcd_t *e, const char *key)
{
    size_t n = strlen(e->ns);

    return strncmp(key, e->ns, n) == 0 && key[n] != '\0' ? key + n : NULL;
}

static void peer_kill(xfer__etcd_t *e, const char *name, const char *why)
{
    if (xfer__remote_invalidate(e->agent, name, why))
        xfer__log(XFER_LOG_INFO, "etcd", "agent %s invalidated '%s': %s",
                  e->agent->name, name, why);
}

static void peer_apply(xfer__etcd_t *e, const char *name, json_t *value)
{
    size_t len = 0;
    char *blob = xfer__etcd_unb64(value, &len);
    xfer_status_t st;

    if (blob == NULL) {
        xfer__log(XFER_LOG_WARN, "etcd", "agent %s: the value of '%s%s' is "
                  "not base64", e->agent->name, e->ns, name);
        return;
    }
    xfer__err_clear();
    st = xfer__md_apply(e->agent, blob, len, NULL, 0);
    /* A blob the secret did not sign is someone writing to etcd who
     * should not: worth a warning, where a stale epoch is not. */
    if (st != XFER_OK)
        xfer__log(st == XFER_ERR_AUTH ? XFER_LOG_WARN : XFER_LOG_INFO, "etcd",
                  "agent %s did not load '%s' from etcd: %s", e->agent->name,
                  name, xfer_last_error());
    free(blob);
}

/* Look name up once and load it.  XFER_ERR_NOT_FOUND: not published. */
static xfer_status_t fetch_once(xfer__etcd_t *e, const char *name,
                                unsigned timeout_ms)
{
    size_t klen = strlen(e->ns) + strlen(name);
    char *key = malloc(klen + 1);
    json_t *body, *resp = NULL, *kv;
    char *blob;
    size_t len = 0;
    xfer_status_t st;

    if (key == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    snprintf(key, klen + 1, "%s%s", e->ns, name);
    body = json_pack("{s:o}", "key", xfer__b64_json(key, klen));
    free(key);
    if (body == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    st = etcd_call(e, "/v3/kv/range", body, timeout_ms, &resp);
    json_decref(body);
    if (st != XFER_OK)
        return st;
    kv = json_array_get(json_object_get(resp, "kvs"), 0);
    if (kv == NULL) {
        json_decref(resp);
        return xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' is not published in "
                         "etcd (no key '%s%s')", name, e->ns, name);
    }
    blob = xfer__etcd_unb64(json_object_get(kv, "value"), &len);
    json_decref(resp);
    if (blob == NULL)
        return xfer__err(XFER_ERR_INVALID, "etcd key '%s%s' holds no base64 "
                         "value", e->ns, name);
    st = xfer__md_apply(e->agent, blob, len, NULL, 0);
    free(blob);
    if (st != XFER_OK)
        return xfer__err_prefix(st, "metadata of '%s' from etcd", name);
    return XFER_OK;
}

/* ---- publishing: the lease thread ------------------------------------------------ */

static xfer_status_t lease_grant(xfer__etcd_t *e, int64_t *id)
{
    xfer__etcd_http_err_t err;
    xfer_status_t st = xfer__etcd_lease_grant(&e->http, e->ttl_s,
                                              ETCD_CALL_MS, id, &err);

    return st == XFER_OK ? XFER_OK : xfer__err(st, "%s", err.msg);
}

static xfer_status_t lease_keepalive(xfer__etcd_t *e, int64_t id)
{
    xfer__etcd_http_err_t err;
    xfer_status_t st = xfer__etcd_lease_keepalive(&e->http, id, ETCD_CALL_MS,
                                                  &err);

    return st == XFER_OK ? XFER_OK : xfer__err(st, "%s", err.msg);
}

/* Put the key with value under lease if compare (a JSON array, stolen)
 * holds; *won says whether it did. */
static xfer_status_t put_if(xfer__etcd_t *e, json_t *compare, json_t *value,
                            int64_t lease, bool *won)
{
    json_t *body, *resp = NULL;
    xfer_status_t st;

    body = json_pack("{s:o,s:[{s:{s:o,s:O,s:o}}]}", "compare", compare,
                     "success", "request_put", "key",
                     xfer__b64_json(e->key, strlen(e->key)), "value", value,
                     "lease", xfer__etcd_jid(lease));
    if (body == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    st = etcd_call(e, "/v3/kv/txn", body, ETCD_CALL_MS, &resp);
    *won = st == XFER_OK && json_is_true(json_object_get(resp, "succeeded"));
    json_decref(body);
    json_decref(resp);
    return st;
}

static void etcd_put_back(xfer__etcd_t *e);

/* Publish our document.  The first time the key is taken whatever holds
 * it: a restarted agent replaces its older self.  After that it is
 * rewritten only while it is still ours (our lease) or gone (expired,
 * etcd restarted empty): an older incarnation that is still shutting
 * down must not overwrite its successor, nor take the successor's key
 * away when its own lease is revoked. */
static xfer_status_t publish(xfer__etcd_t *e, int64_t lease, bool force)
{
    char *blob = NULL;
    size_t len = 0;
    json_t *value, *mine, *absent;
    xfer_status_t st;
    bool won = false;

    if (e->superseded)
        return XFER_OK;
    st = xfer_md_get(e->agent, XFER_MD_ALL, NULL, 0, &blob, &len);
    if (st != XFER_OK)
        return st;
    /* A change that leaves the document as it was (an unpublished
     * registration, a coalesced second wake) costs etcd nothing and
     * peers no reload. */
    if (!force && e->published && e->last != NULL && len == e->last_len &&
        memcmp(blob, e->last, len) == 0) {
        free(blob);
        return XFER_OK;
    }
    value = xfer__b64_json(blob, len);
    /* No comparison at all the first time: a put whatever is there. */
    mine = !e->published ? json_array()
                         : json_pack("[{s:o,s:s,s:s,s:o}]", "key",
                                     xfer__b64_json(e->key, strlen(e->key)),
                                     "target", "LEASE", "result", "EQUAL",
                                     "lease", xfer__etcd_jid(lease));
    absent = json_pack("[{s:o,s:s,s:s,s:s}]", "key",
                       xfer__b64_json(e->key, strlen(e->key)), "target",
                       "CREATE", "result", "EQUAL", "create_revision", "0");
    if (value == NULL || mine == NULL || absent == NULL) {
        json_decref(value);
        json_decref(mine);
        json_decref(absent);
        free(blob);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    st = put_if(e, mine, value, lease, &won);
    mine = NULL;
    if (st == XFER_OK && !won) {
        st = put_if(e, absent, value, lease, &won);
        absent = NULL;
    }
    json_decref(absent);
    json_decref(value);
    if (st != XFER_OK) {
        free(blob);
        return st;
    }
    free(e->last);
    e->last = won ? blob : NULL;
    e->last_len = won ? len : 0;
    if (!won)
        free(blob);
    if (won) {
        e->published = true;
    } else {
        e->superseded = true;
        xfer__log(XFER_LOG_INFO, "etcd", "agent %s: a newer agent of this "
                  "name holds '%s'; no longer publishing", e->agent->name,
                  e->key);
    }
    return XFER_OK;
}

static bool has_backends(xfer_agent_t *a)
{
    bool yes;

    xfer__lock(a);
    yes = a->nbackends > 0;
    xfer__unlock(a);
    return yes;
}

static void deadline_ts(struct timespec *ts, uint64_t at_ms)
{
    ts->tv_sec = (time_t)(at_ms / 1000);
    ts->tv_nsec = (long)(at_ms % 1000) * 1000000L;
}

static void *lease_main(void *arg)
{
    xfer__etcd_t *e = arg;
    xfer_agent_t *a = e->agent;
    uint64_t next_ka = 0, retry_at = 0;
    bool outage = false;

    for (;;) {
        bool dirty, force, ok = true, want_ka;
        int64_t lease;
        char *pending[16];
        size_t npending = 0;
        uint64_t now;

        pthread_mutex_lock(&e->mu);
        for (;;) {
            bool work = e->dirty || e->lease == 0;
            uint64_t wake = mono_ms() + 1000;
            struct timespec ts;

            for (size_t i = 0; i < e->nfollow && !work; i++)
                work = e->follow[i].pending;
            now = mono_ms();
            if (atomic_load(&e->stop) || (e->lease != 0 && now >= next_ka) ||
                (work && now >= retry_at))
                break;
            if (e->lease != 0 && next_ka < wake)
                wake = next_ka;
            if (work && retry_at < wake)
                wake = retry_at;
            deadline_ts(&ts, wake);
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
        if (atomic_load(&e->stop)) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        dirty = e->dirty;
        e->dirty = false;
        force = e->force;
        e->force = false;
        lease = e->lease;
        for (size_t i = 0; i < e->nfollow && npending < 16; i++)
            if (e->follow[i].pending &&
                (pending[npending] = strdup(e->follow[i].name)) != NULL)
                npending++;
        pthread_mutex_unlock(&e->mu);

        xfer__err_clear();
        want_ka = lease != 0 && now >= next_ka;
        if (lease == 0) {
            ok = lease_grant(e, &lease) == XFER_OK;
            if (ok) {
                dirty = force = true;
                next_ka = mono_ms() + e->ttl_s * 1000u / 3;
                want_ka = false;
            } else {
                lease = 0;
            }
        }
        if (ok && dirty && has_backends(a)) {
            xfer_status_t st = publish(e, lease, force);

            if (st != XFER_OK) {
                ok = false;
                if (strstr(xfer_last_error(), "lease not found") != NULL)
                    lease = 0;
            }
        }
        if (ok && want_ka) {
            xfer_status_t st = lease_keepalive(e, lease);

            if (st == XFER_OK) {
                next_ka = mono_ms() + e->ttl_s * 1000u / 3;
            } else {
                ok = false;
                if (st == XFER_ERR_NOT_FOUND)
                    lease = 0;
            }
        }
        for (size_t i = 0; i < npending; i++) {
            xfer_status_t st = ok ? fetch_once(e, pending[i], ETCD_CALL_MS)
                                  : XFER_ERR_BACKEND;
            bool done = st == XFER_OK || st == XFER_ERR_NOT_FOUND ||
                        st == XFER_ERR_INVALID;

            if (st == XFER_ERR_INVALID)
                xfer__log(XFER_LOG_WARN, "etcd", "agent %s: %s", a->name,
                          xfer_last_error());
            if (st != XFER_OK && !done)
                ok = false;
            pthread_mutex_lock(&e->mu);
            if (done && follow_find(e, pending[i]) != NULL)
                follow_find(e, pending[i])->pending = false;
            pthread_mutex_unlock(&e->mu);
            free(pending[i]);
        }

        pthread_mutex_lock(&e->mu);
        e->lease = lease;
        if (!ok) {
            /* Whatever failed, publish again once etcd answers: keys may
             * have been lost with it. */
            e->dirty = e->force = true;
            retry_at = mono_ms() + ETCD_RETRY_MS;
        }
        pthread_mutex_unlock(&e->mu);
        if (!ok && !outage && !atomic_load(&e->stop)) {
            xfer__log(XFER_LOG_WARN, "etcd", "agent %s: %s; retrying every "
                      "%d ms", a->name, xfer_last_error(), ETCD_RETRY_MS);
            outage = true;
        } else if (ok && outage) {
            xfer__log(XFER_LOG_INFO, "etcd", "agent %s: etcd answers again; "
                      "lease and key re-established", a->name);
            outage = false;
        }
    }
    return NULL;
}

/* ---- following: the watch thread ------------------------------------------------ */

typedef struct wstate {
    xfer__etcd_t *e;
    xfer__etcd_hbuf_t line;
    int64_t *last_rev;
    bool bad;
} wstate_t;

static void watch_events(xfer__etcd_t *e, json_t *events)
{
    size_t i;
    json_t *ev;

    json_array_foreach(events, i, ev) {
        json_t *kv = json_object_get(ev, "kv");
        json_t *type = json_object_get(ev, "type");
        size_t klen = 0;
        char *key = xfer__etcd_unb64(json_object_get(kv, "key"), &klen);
        const char *name = key ? key_name(e, key) : NULL;

        if (name == NULL || strlen(name) != klen - strlen(e->ns)) {
            free(key);
            continue;
        }
        if (json_is_string(type) &&
            strcmp(json_string_value(type), "DELETE") == 0) {
            if (strcmp(name, e->agent->name) == 0)
                etcd_put_back(e); /* ours: put it back */
            else
                peer_kill(e, name, "its etcd key was deleted (lease expired "
                          "or the agent left)");
        } else if (strcmp(name, e->agent->name) != 0 && follows(e, name)) {
            peer_apply(e, name, json_object_get(kv, "value"));
        }
        free(key);
    }
}

/* One message of the watch stream. */
static int watch_message(wstate_t *w, const char *text, size_t len)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    json_t *res = json_object_get(j, "result");
    int64_t rev;
    int rc = 0;

    if (!json_is_object(res)) {
        xfer__log(XFER_LOG_WARN, "etcd", "agent %s: watch ended: %.200s",
                  w->e->agent->name, text);
        rc = -1;
    } else {
        rev = xfer__etcd_jint(json_object_get(json_object_get(res, "header"),
                                              "revision"));
        watch_events(w->e, json_object_get(res, "events"));
        if (rev > *w->last_rev)
            *w->last_rev = rev;
        if (json_is_true(json_object_get(res, "canceled")))
            rc = -1;
    }
    json_decref(j);
    return rc;
}

static size_t watch_write(char *ptr, size_t sz, size_t n, void *ud)
{
    wstate_t *w = ud;
    size_t add = sz * n, start = 0;
    char *nl;

    if (xfer__etcd_hbuf_write(ptr, sz, n, &w->line) != add) {
        w->bad = true;
        return 0;
    }
    while ((nl = memchr(w->line.p + start, '\n', w->line.len - start)) !=
           NULL) {
        size_t end = (size_t)(nl - w->line.p);

        if (end > start && watch_message(w, w->line.p + start,
                                         end - start) != 0) {
            w->bad = true;
            return 0;
        }
        start = end + 1;
    }
    memmove(w->line.p, w->line.p + start, w->line.len - start);
    w->line.len -= start;
    return add;
}

/* Load every followed name present; a followed peer whose key vanished
 * while the watch was down is invalidated, unless etcd's history went
 * back (a new cluster: its owner will publish again). */
static xfer_status_t resync(xfer__etcd_t *e, int64_t *last_rev, int64_t *rev)
{
    json_t *body = json_pack(
        "{s:o,s:o}", "key", xfer__b64_json(e->ns, strlen(e->ns)),
        "range_end", xfer__b64_json(e->ns_end, strlen(e->ns_end)));
    json_t *resp = NULL, *kvs, *kv;
    xfer_status_t st;
    size_t i;
    char **seen = NULL;
    size_t nseen = 0;

    if (body == NULL)
        return XFER_ERR_NOMEM;
    st = etcd_call(e, "/v3/kv/range", body, ETCD_CALL_MS, &resp);
    json_decref(body);
    if (st != XFER_OK)
        return st;
    *rev = xfer__etcd_jint(json_object_get(json_object_get(resp, "header"),
                                           "revision"));
    kvs = json_object_get(resp, "kvs");
    seen = calloc(json_array_size(kvs) + 1, sizeof(*seen));
    json_array_foreach(kvs, i, kv) {
        size_t klen = 0;
        char *key = xfer__etcd_unb64(json_object_get(kv, "key"), &klen);
        const char *name = key ? key_name(e, key) : NULL;

        if (name != NULL && strcmp(name, e->agent->name) != 0 &&
            follows(e, name))
            peer_apply(e, name, json_object_get(kv, "value"));
        if (name != NULL && seen != NULL)
            seen[nseen++] = key;
        else
            free(key);
    }
    json_decref(resp);
    if (*last_rev > 0 && *rev >= *last_rev && seen != NULL) {
        pthread_mutex_lock(&e->mu);
        for (size_t f = 0; f < e->nfollow; f++) {
            bool present = false;

            for (size_t k = 0; k < nseen && !present; k++)
                present = strcmp(key_name(e, seen[k]), e->follow[f].name) == 0;
            if (!present) {
                char *name = strdup(e->follow[f].name);

                pthread_mutex_unlock(&e->mu);
                if (name != NULL)
                    peer_kill(e, name, "its etcd key was deleted while the "
                              "watch was down");
                free(name);
                pthread_mutex_lock(&e->mu);
            }
        }
        pthread_mutex_unlock(&e->mu);
    }
    for (size_t k = 0; k < nseen; k++)
        free(seen[k]);
    free(seen);
    if (*rev > *last_rev)
        *last_rev = *rev;
    return XFER_OK;
}

static void watch_stream(xfer__etcd_t *e, int64_t from, int64_t *last_rev)
{
    json_t *body = json_pack("{s:{s:o,s:o,s:o}}", "create_request", "key",
                             xfer__b64_json(e->ns, strlen(e->ns)), "range_end",
                             xfer__b64_json(e->ns_end, strlen(e->ns_end)),
                             "start_revision", xfer__etcd_jid(from));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: "
                                                "application/json");
    size_t i = atomic_load(&e->http.cur);
    char url[512], errbuf[CURL_ERROR_SIZE];
    wstate_t w = {.e = e, .line = {.max = ETCD_BODY_MAX},
                  .last_rev = last_rev};
    CURL *h = curl_easy_init();
    int running = 1;

    json_decref(body);
    if (text == NULL || hdrs == NULL || h == NULL)
        goto out;
    snprintf(url, sizeof(url), "%s/v3/watch", e->http.eps[i]);
    xfer__etcd_http_easy(&e->http, h, url, text, hdrs, errbuf);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)ETCD_CALL_MS);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 2L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &w);
    if (curl_multi_add_handle(e->wm, h) != CURLM_OK)
        goto out;
    while (!atomic_load(&e->stop) && running) {
        if (curl_multi_perform(e->wm, &running) != CURLM_OK)
            break;
        if (running)
            curl_multi_poll(e->wm, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(e->wm, h);
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    free(text);
    free(w.line.p);
}

static void *watch_main(void *arg)
{
    xfer__etcd_t *e = arg;
    int64_t last_rev = 0;
    bool outage = false;

    while (!atomic_load(&e->stop)) {
        int64_t rev = 0;
        struct timespec ts;

        xfer__err_clear();
        if (resync(e, &last_rev, &rev) == XFER_OK) {
            if (outage)
                xfer__log(XFER_LOG_INFO, "etcd", "agent %s: watch resumed at "
                          "revision %" PRId64, e->agent->name, rev);
            outage = false;
            watch_stream(e, rev + 1, &last_rev);
        } else if (!outage) {
            outage = true;
        }
        pthread_mutex_lock(&e->mu);
        deadline_ts(&ts, mono_ms() + ETCD_RETRY_MS);
        if (!atomic_load(&e->stop))
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

/* ---- lifetime ------------------------------------------------------------------ */

static void etcd_free(xfer__etcd_t *e)
{
    xfer__etcd_http_fini(&e->http);
    free(e->last);
    for (size_t i = 0; i < e->nfollow; i++)
        free(e->follow[i].name);
    free(e->follow);
    free(e->ns);
    free(e->ns_end);
    free(e->key);
    if (e->wm != NULL)
        curl_multi_cleanup(e->wm);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

xfer_status_t xfer__etcd_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__etcd_t **out)
{
    const char *endpoints = o->etcd_endpoints, *ns = o->etcd_namespace;
    unsigned ttl_s = o->etcd_ttl_s;
    pthread_condattr_t ca;
    xfer__etcd_t *e;
    xfer_status_t st;
    size_t n;
    int rc;

    *out = NULL;
    if (endpoints == NULL)
        endpoints = getenv("XFER_ETCD_ENDPOINTS");
    if (endpoints == NULL || endpoints[0] == '\0')
        return XFER_OK;
    if (ns == NULL)
        ns = ETCD_DEFAULT_NS;
    if (ns[0] == '\0' || strlen(ns) > 512)
        return xfer__err(XFER_ERR_INVALID, "agent option etcd_namespace must "
                         "be 1 to 512 bytes");
    if (ttl_s == 0)
        ttl_s = ETCD_DEFAULT_TTL;
    if (ttl_s < ETCD_MIN_TTL)
        return xfer__err(XFER_ERR_INVALID, "agent option etcd_ttl_s: %u s is "
                         "below etcd's minimum lease TTL of %d s", ttl_s,
                         ETCD_MIN_TTL);
    xfer__etcd_http_global_init();
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    e->agent = a;
    e->ttl_s = ttl_s;
    e->dirty = true;
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    e->http.body_max = ETCD_BODY_MAX;
    e->http.stop = &e->stop;
    {
        xfer__etcd_http_err_t err;

        st = xfer__etcd_http_endpoints(&e->http, endpoints, &err);
        if (st == XFER_OK)
            st = xfer__etcd_http_tls(&e->http, o->etcd_cacert, o->etcd_cert,
                                     o->etcd_key, &err);
        if (st != XFER_OK) {
            st = xfer__err(st, "%s", err.msg);
            goto fail;
        }
    }
    n = strlen(ns);
    e->ns = strdup(ns);
    e->ns_end = strdup(ns);
    e->key = malloc(n + strlen(a->name) + 1);
    e->wm = curl_multi_init();
    if (e->ns == NULL || e->ns_end == NULL || e->key == NULL || e->wm == NULL) {
        st = xfer__err(XFER_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* The range end of a prefix: its last byte plus one. */
    e->ns_end[n - 1] = (char)((unsigned char)e->ns_end[n - 1] + 1);
    sprintf(e->key, "%s%s", ns, a->name);
    rc = pthread_create(&e->lease_thr, NULL, lease_main, e);
    if (rc == 0) {
        e->lease_started = true;
        rc = pthread_create(&e->watch_thr, NULL, watch_main, e);
        e->watch_started = rc == 0;
    }
    if (rc != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot start its etcd "
                       "threads: %s", a->name, strerror(rc));
        xfer__etcd_stop(e);
        return st;
    }
    *out = e;
    return XFER_OK;

fail:
    etcd_free(e);
    return st;
}

void xfer__etcd_stop(xfer__etcd_t *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    atomic_store(&e->stop, true);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    curl_multi_wakeup(e->wm);
    if (e->lease_started)
        pthread_join(e->lease_thr, NULL);
    if (e->watch_started)
        pthread_join(e->watch_thr, NULL);
    if (e->lease != 0) {
        /* Revoking deletes our key now, so peers need not wait for the
         * TTL.  Best effort: the lease expires by itself anyway. */
        xfer__etcd_http_err_t err;

        atomic_store(&e->stop, false); /* let the call run */
        if (xfer__etcd_lease_revoke(&e->http, e->lease, ETCD_CALL_MS,
                                    &err) != XFER_OK)
            xfer__log(XFER_LOG_INFO, "etcd", "agent %s: lease not revoked: "
                      "%s", e->agent->name, err.msg);
    }
    etcd_free(e);
}

/* Our key went away (deleted by someone): put it back even though the
 * document did not change. */
static void etcd_put_back(xfer__etcd_t *e)
{
    pthread_mutex_lock(&e->mu);
    e->dirty = e->force = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void xfer__etcd_changed(xfer__etcd_t *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->mu);
    e->dirty = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* ---- public API ------------------------------------------------------------------ */

/* The checks both fetch calls make before touching etcd. */
static xfer_status_t fetch_args(xfer_agent_t *agent, const char *name,
                                const char *fn)
{
    if (agent == NULL || name == NULL)
        return xfer__err(XFER_ERR_INVALID, "%s: NULL argument", fn);
    if (agent->etcd == NULL)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "agent '%s' has no etcd "
                         "endpoints (set opts.etcd_endpoints or "
                         "XFER_ETCD_ENDPOINTS)", agent->name);
    if (name[0] == '\0' || strlen(name) > XFER_NAME_MAX)
        return xfer__err(XFER_ERR_INVALID, "%s: agent name must be 1 to %d "
                         "bytes", fn, XFER_NAME_MAX);
    return XFER_OK;
}

XFER_API xfer_status_t xfer_md_fetch_etcd(xfer_agent_t *agent,
                                          const char *name,
                                          unsigned timeout_ms)
{
    uint64_t deadline;
    xfer_status_t st;
    /* Why an attempt was refused (a bad certificate, say): the answer if
     * the last attempt, cut short by the deadline, only timed out. */
    char refused[512] = "";

    xfer__err_clear();
    st = fetch_args(agent, name, "xfer_md_fetch_etcd");
    if (st != XFER_OK)
        return st;
    st = follow_add(agent->etcd, name, false);
    if (st != XFER_OK)
        return st;
    deadline = mono_ms() + timeout_ms;
    for (;;) {
        uint64_t now = mono_ms();
        unsigned left = now < deadline ? (unsigned)(deadline - now) : 0;

        st = fetch_once(agent->etcd, name,
                        left < 100 ? 100 : left > ETCD_CALL_MS ? ETCD_CALL_MS
                                                               : left);
        if (st == XFER_OK)
            return XFER_OK;
        if (st != XFER_ERR_NOT_FOUND && st != XFER_ERR_TIMEOUT &&
            st != XFER_ERR_BACKEND)
            return st;
        if (st == XFER_ERR_BACKEND)
            snprintf(refused, sizeof(refused), "%s", xfer_last_error());
        now = mono_ms();
        if (now >= deadline) {
            if (st == XFER_ERR_NOT_FOUND)
                return xfer__err(XFER_ERR_TIMEOUT, "agent '%s' was not "
                                 "published in etcd (key '%s%s') within %u "
                                 "ms", name, agent->etcd->ns, name,
                                 timeout_ms);
            if (st == XFER_ERR_TIMEOUT && refused[0] != '\0')
                return xfer__err(XFER_ERR_BACKEND, "%s", refused);
            return st;
        }
        left = (unsigned)(deadline - now);
        {
            struct timespec ts = {0, (long)(left < ETCD_POLL_MS
                                            ? left : ETCD_POLL_MS) * 1000000L};

            nanosleep(&ts, NULL);
        }
    }
}

XFER_API xfer_status_t xfer_md_fetch_start(xfer_agent_t *agent,
                                           const char *name)
{
    xfer_status_t st;

    xfer__err_clear();
    st = fetch_args(agent, name, "xfer_md_fetch_start");
    if (st != XFER_OK)
        return st;
    return follow_add(agent->etcd, name, true);
}

#else /* !XFER_HAVE_CURL */

#define NO_CURL "this libxfer was built without libcurl, so it cannot speak " \
                "to etcd (install libcurl4-openssl-dev and rebuild)"

xfer_status_t xfer__etcd_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__etcd_t **out)
{
    const char *endpoints = o->etcd_endpoints;

    (void)a;
    *out = NULL;
    if (endpoints == NULL)
        endpoints = getenv("XFER_ETCD_ENDPOINTS");
    if (endpoints == NULL || endpoints[0] == '\0')
        return XFER_OK;
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "etcd endpoints given, but %s",
                     NO_CURL);
}

void xfer__etcd_stop(xfer__etcd_t *e)
{
    (void)e;
}

void xfer__etcd_changed(xfer__etcd_t *e)
{
    (void)e;
}

XFER_API xfer_status_t xfer_md_fetch_etcd(xfer_agent_t *agent,
                                          const char *name,
                                          unsigned timeout_ms)
{
    (void)agent, (void)name, (void)timeout_ms;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_md_fetch_etcd: %s",
                     NO_CURL);
}

XFER_API xfer_status_t xfer_md_fetch_start(xfer_agent_t *agent,
                                           const char *name)
{
    (void)agent, (void)name;
    xfer__err_clear();
    return xfer__err(XFER_ERR_NOT_SUPPORTED, "xfer_md_fetch_start: %s",
                     NO_CURL);
}

#endif /* XFER_HAVE_CURL */
