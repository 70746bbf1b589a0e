/* coord-etcd.c - the ranks of a run met through etcd (--etcd, --group,
 * --ranks): rank assignment, allgather and barrier over leased keys.
 *
 * Every key lives under /xfer-bench/<group>/ and under the lease of the
 * process that wrote it, kept alive by a thread: a crashed run leaves
 * nothing behind once its lease expires, and a clean one leaves nothing
 * once its ranks revoke theirs.
 *
 *   size             the group's --ranks (first writer wins)
 *   rank/<r>         taken by one process (txn: created only if absent)
 *   gather/<g>/<r>   rank r's blob of allgather g (0, 1, ...); put with
 *                    the delete of its gather g-2, which nobody reads
 *                    any more: every rank wrote g-1, so read g-2
 *   left/<r>         r closed; the last phase's keys stay until all left
 *   abort/<r>        why r failed, under a lease of its own, never revoked
 *                    (so it may be a failed run's: only a put after our
 *                    join, a newer mod_revision, counts)
 *   beat/<r>         r is alive and working (xb_coord_heartbeat): each
 *                    put, a new mod_revision, restarts the waits on r
 *
 * A rank whose rank/<r> key vanishes or is taken by a new process is
 * gone: waits on it fail at once instead of timing out. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "xb.h"

#if XFER_HAVE_CURL
#include "core/base64.h"
#include "core/etcd-http.h"

/* The lease: a dead rank frees its place this long after it died.  The
 * environment's XB_ETCD_TTL_S overrides it (tests use 2). */
#define EC_TTL_S 10
#define EC_MIN_TTL_S 2              /* etcd's own floor */
#define EC_CALL_MS 2000             /* one HTTP call */
#define EC_POLL_MIN_MS 1            /* waits look again this soon ... */
#define EC_POLL_MAX_MS 20           /* ... backing off to this */
/* Answers carry every rank's blob: up to etcd's request limit each. */
#define EC_BODY_MAX ((size_t)128 << 20)
#define EC_GROUP_MAX 128

struct ecoord {
    xfer__etcd_http_t http;
    char prefix[EC_GROUP_MAX + 32]; /* /xfer-bench/<group>/ */
    const char *group;              /* inside prefix, NUL-terminated copy */
    char group_buf[EC_GROUP_MAX + 1];
    int rank, size;
    unsigned ttl_s;
    int64_t lease;
    unsigned gen;                   /* allgathers begun */
    int64_t joined[XB_MAX_RANKS];   /* create revision of each rank's key */
    unsigned long beats;            /* heartbeats sent */
    bool aborted;

    pthread_mutex_t mu;             /* guards stop */
    pthread_cond_t cv;              /* CLOCK_MONOTONIC */
    bool stop;
    atomic_bool cancel;             /* aborts the calls in flight */
    atomic_bool lost;               /* the lease expired: our keys are gone */
    pthread_t ka_thr;
    bool ka_started;
};

/* What one look at the group found (keys only). */
struct snap {
    int64_t rank_rev[XB_MAX_RANKS]; /* 0: no such key */
    int64_t abort_rev[XB_MAX_RANKS]; /* mod_revision: the last put */
    int64_t beat_rev[XB_MAX_RANKS];  /* mod_revision */
    bool gathered[XB_MAX_RANKS];    /* gather/<gen>/<r> */
    bool left[XB_MAX_RANKS];
};

static uint64_t now_ms(void)
{
    return xb_now_ns() / 1000000u;
}

static unsigned ttl_from_env(void)
{
    const char *env = getenv("XB_ETCD_TTL_S");
    long v = env != NULL ? strtol(env, NULL, 10) : 0;

    if (v <= 0)
        return EC_TTL_S;
    return v < EC_MIN_TTL_S ? EC_MIN_TTL_S : (unsigned)v;
}

/* ---- calls ------------------------------------------------------------ */

/* An unreachable etcd is named with curl's reason; anything else with
 * what was being done and etcd's own sentence. */
static int fail_http(const struct ecoord *ec, const xfer__etcd_http_err_t *err,
                     const char *what)
{
    if (err->ep != NULL)
        return xb_fail("%s: etcd at %s: %s%s", what, err->ep, err->why,
                       ec->http.neps > 1 ? " (every endpoint tried)" : "");
    return xb_fail("%s: %s", what, err->msg);
}

/* One call; a failure is worded by fail_http. */
static int call(struct ecoord *ec, const char *path, json_t *body,
                json_t **resp, const char *what)
{
    xfer__etcd_http_err_t err;
    xfer_status_t st;

    *resp = NULL;
    if (body == NULL)
        return xb_fail("out of memory");
    st = xfer__etcd_http_call(&ec->http, path, body, EC_CALL_MS, resp, &err);
    json_decref(body);
    return st == XFER_OK ? 0 : fail_http(ec, &err, what);
}

static json_t *key_json(const struct ecoord *ec, const char *suffix)
{
    char k[sizeof(ec->prefix) + 64];
    int n = snprintf(k, sizeof(k), "%s%s", ec->prefix, suffix);

    return xfer__b64_json(k, (size_t)n);
}

/* The range end of a prefix: its last byte plus one. */
static json_t *key_end_json(const struct ecoord *ec, const char *suffix)
{
    char k[sizeof(ec->prefix) + 64];
    int n = snprintf(k, sizeof(k), "%s%s", ec->prefix, suffix);

    k[n - 1] = (char)((unsigned char)k[n - 1] + 1);
    return xfer__b64_json(k, (size_t)n);
}

/* r when s is exactly a rank of this group, else -1. */
static int parse_rank(const char *s, int size)
{
    char *end;
    long r;

    if (*s < '0' || *s > '9')
        return -1;
    r = strtol(s, &end, 10);
    return *end == '\0' && r < size ? (int)r : -1;
}

static int64_t lease_grant(struct ecoord *ec)
{
    xfer__etcd_http_err_t err;
    int64_t id;

    if (xfer__etcd_lease_grant(&ec->http, ec->ttl_s, EC_CALL_MS, &id, &err) !=
        XFER_OK) {
        fail_http(ec, &err, "etcd lease");
        return 0;
    }
    return id;
}

static void lease_revoke(struct ecoord *ec, int64_t id)
{
    xfer__etcd_http_err_t err;

    /* Best effort: the lease expires by itself anyway. */
    xfer__etcd_lease_revoke(&ec->http, id, EC_CALL_MS, &err);
}

static int put(struct ecoord *ec, const char *suffix, const void *val,
               size_t len, int64_t lease, const char *what)
{
    json_t *resp;

    if (call(ec, "/v3/kv/put",
             json_pack("{s:o,s:o,s:o}", "key", key_json(ec, suffix), "value",
                       xfer__b64_json(val, len), "lease",
                       xfer__etcd_jid(lease)),
             &resp, what))
        return -1;
    json_decref(resp);
    return 0;
}

/* Create suffix = val under our lease unless it exists.  *won says
 * whether we did; when not, *have (if asked) is the present value. */
static int create(struct ecoord *ec, const char *suffix, const char *val,
                  bool *won, char **have)
{
    json_t *cmp = json_pack("[{s:o,s:s,s:s,s:s}]", "key",
                            key_json(ec, suffix), "target", "CREATE",
                            "result", "EQUAL", "create_revision", "0");
    json_t *ok = json_pack("[{s:{s:o,s:o,s:o}}]", "request_put", "key",
                           key_json(ec, suffix), "value",
                           xfer__b64_json(val, strlen(val)), "lease",
                           xfer__etcd_jid(ec->lease));
    json_t *no = json_pack("[{s:{s:o}}]", "request_range", "key",
                           key_json(ec, suffix));
    json_t *resp, *kv;
    size_t len;

    if (call(ec, "/v3/kv/txn",
             json_pack("{s:o,s:o,s:o}", "compare", cmp, "success", ok,
                       "failure", no),
             &resp, "etcd transaction"))
        return -1;
    *won = json_is_true(json_object_get(resp, "succeeded"));
    if (!*won && have != NULL) {
        kv = json_array_get(json_object_get(json_object_get(
                 json_array_get(json_object_get(resp, "responses"), 0),
                 "response_range"), "kvs"), 0);
        *have = xfer__etcd_unb64(json_object_get(kv, "value"), &len);
    }
    json_decref(resp);
    return 0;
}

/* The keys (no values) of the whole group, sorted into s. */
static int snap_take(struct ecoord *ec, unsigned gen, struct snap *s)
{
    size_t plen = strlen(ec->prefix), i;
    json_t *resp, *kv;

    memset(s, 0, sizeof(*s));
    if (call(ec, "/v3/kv/range",
             json_pack("{s:o,s:o,s:b}", "key", key_json(ec, ""), "range_end",
                       key_end_json(ec, ""), "keys_only", 1),
             &resp, "etcd range"))
        return -1;
    json_array_foreach(json_object_get(resp, "kvs"), i, kv) {
        size_t klen;
        char *key = xfer__etcd_unb64(json_object_get(kv, "key"), &klen);
        int64_t rev = xfer__etcd_jint(json_object_get(kv, "create_revision"));
        int64_t mod = xfer__etcd_jint(json_object_get(kv, "mod_revision"));
        const char *k;
        int r;

        if (key == NULL || klen <= plen) {
            free(key);
            continue;
        }
        k = key + plen;
        if (strncmp(k, "rank/", 5) == 0 &&
            (r = parse_rank(k + 5, ec->size)) >= 0) {
            s->rank_rev[r] = rev;
        } else if (strncmp(k, "abort/", 6) == 0 &&
                   (r = parse_rank(k + 6, ec->size)) >= 0) {
            s->abort_rev[r] = mod;
        } else if (strncmp(k, "beat/", 5) == 0 &&
                   (r = parse_rank(k + 5, ec->size)) >= 0) {
            s->beat_rev[r] = mod;
        } else if (strncmp(k, "left/", 5) == 0 &&
                   (r = parse_rank(k + 5, ec->size)) >= 0) {
            s->left[r] = true;
        } else if (strncmp(k, "gather/", 7) == 0) {
            char *end;
            unsigned long g = strtoul(k + 7, &end, 10);

            if (g == gen && *end == '/' &&
                (r = parse_rank(end + 1, ec->size)) >= 0)
                s->gathered[r] = true;
        }
        free(key);
    }
    json_decref(resp);
    return 0;
}

/* Rank r failed (abort key newer than its place) or is gone (its place
 * vanished or was taken anew): the sentence, or 0 when neither. */
static int check_rank(struct ecoord *ec, const struct snap *s, int r)
{
    char suffix[32];
    json_t *resp;
    char *why = NULL;
    size_t len;

    if (s->abort_rev[r] > ec->joined[r]) {
        snprintf(suffix, sizeof(suffix), "abort/%d", r);
        if (call(ec, "/v3/kv/range",
                 json_pack("{s:o}", "key", key_json(ec, suffix)), &resp,
                 "etcd range"))
            return -1;
        why = xfer__etcd_unb64(json_object_get(json_array_get(
                  json_object_get(resp, "kvs"), 0), "value"), &len);
        json_decref(resp);
        xb_fail("rank %d failed: %s", r, why != NULL ? why : "(no reason)");
        free(why);
        return -1;
    }
    if (s->rank_rev[r] != ec->joined[r])
        return xb_fail("rank %d of group '%s' is gone: its etcd lease ended "
                       "(the process died or lost etcd)", r, ec->group);
    return 0;
}

/* Wait between two looks: serve idle's fd meanwhile, if any. */
static int pause_ms(const struct xb_idle *idle, int ms)
{
    if (idle != NULL && idle->fd >= 0) {
        struct pollfd p = {idle->fd, POLLIN, 0};
        int n = poll(&p, 1, ms);

        if (n < 0 && errno != EINTR)
            return xb_fail("poll: %s", strerror(errno));
        if (n > 0 && idle->fn(idle->arg) < 0)
            return -1;
        return 0;
    }
    {
        struct timespec ts = {0, (long)ms * 1000000L};

        nanosleep(&ts, NULL);
    }
    return 0;
}

/* "rank 2" or "ranks 1, 2": those whose have[] is false. */
static void missing_list(const bool *have, int size, char *buf, size_t cap)
{
    size_t n;
    int r, count = 0;
    bool first = true;

    for (r = 0; r < size; r++)
        count += !have[r];
    n = (size_t)snprintf(buf, cap, "rank%s", count > 1 ? "s" : "");
    for (r = 0; r < size && n < cap; r++) {
        if (have[r])
            continue;
        n += (size_t)snprintf(buf + n, cap - n, "%s %d", first ? "" : ",",
                              r);
        first = false;
    }
}

static int lease_check(struct ecoord *ec)
{
    if (atomic_load(&ec->lost))
        return xb_fail("rank %d of group '%s' lost its etcd lease (etcd did "
                       "not hear from it for %u s), so its keys are gone",
                       ec->rank, ec->group, ec->ttl_s);
    return 0;
}

/* ---- the lease thread ------------------------------------------------- */

static void *ka_main(void *arg)
{
    struct ecoord *ec = arg;
    unsigned wait_ms = ec->ttl_s * 1000u / 3;

    pthread_mutex_lock(&ec->mu);
    while (!ec->stop) {
        uint64_t at = now_ms() + wait_ms;
        struct timespec ts = {(time_t)(at / 1000),
                              (long)(at % 1000) * 1000000L};
        xfer__etcd_http_err_t err;
        xfer_status_t st;

        if (pthread_cond_timedwait(&ec->cv, &ec->mu, &ts) != ETIMEDOUT ||
            ec->stop)
            continue;
        pthread_mutex_unlock(&ec->mu);
        st = xfer__etcd_lease_keepalive(&ec->http, ec->lease, EC_CALL_MS,
                                        &err);
        /* A failed call is tried again soon; a lease etcd no longer has
         * is gone with our keys. */
        wait_ms = st == XFER_OK ? ec->ttl_s * 1000u / 3 : 250;
        if (st == XFER_ERR_NOT_FOUND)
            atomic_store(&ec->lost, true);
        pthread_mutex_lock(&ec->mu);
    }
    pthread_mutex_unlock(&ec->mu);
    return NULL;
}

static void ec_free(struct ecoord *ec)
{
    if (ec->ka_started) {
        pthread_mutex_lock(&ec->mu);
        ec->stop = true;
        pthread_cond_broadcast(&ec->cv);
        pthread_mutex_unlock(&ec->mu);
        atomic_store(&ec->cancel, true);
        pthread_join(ec->ka_thr, NULL);
        atomic_store(&ec->cancel, false);
    }
    if (ec->lease != 0)
        lease_revoke(ec, ec->lease);
    xfer__etcd_http_fini(&ec->http);
    pthread_cond_destroy(&ec->cv);
    pthread_mutex_destroy(&ec->mu);
    free(ec);
}

/* ---- the ops ---------------------------------------------------------- */

static int ec_allgather(void *impl, const void *mine, size_t len,
                        struct xb_blob *out, const struct xb_idle *idle)
{
    struct ecoord *ec = impl;
    unsigned g = ec->gen++;
    uint64_t deadline = now_ms() + (uint64_t)xb_timeout_ms();
    char suffix[64], old[64], missing[XB_MAX_RANKS * 4 + 8];
    int ms = EC_POLL_MIN_MS, r, n = 0;
    int64_t beat[XB_MAX_RANKS];
    bool first = true;
    json_t *ops, *resp, *kv;
    struct snap s;
    size_t i;

    if (lease_check(ec))
        return -1;
    snprintf(suffix, sizeof(suffix), "gather/%u/%d", g, ec->rank);
    snprintf(old, sizeof(old), "gather/%u/%d", g - 2, ec->rank);
    ops = json_pack("[{s:{s:o,s:o,s:o}}]", "request_put", "key",
                    key_json(ec, suffix), "value",
                    xfer__b64_json(mine, len), "lease",
                    xfer__etcd_jid(ec->lease));
    if (g >= 2 && ops != NULL)
        json_array_append_new(ops, json_pack("{s:{s:o}}",
                                             "request_delete_range", "key",
                                             key_json(ec, old)));
    if (call(ec, "/v3/kv/txn", json_pack("{s:o}", "success", ops), &resp,
             "allgather"))
        return -1;
    json_decref(resp);

    for (;;) {
        bool all = true;

        if (lease_check(ec) || snap_take(ec, g, &s))
            return -1;
        for (r = 0; r < ec->size; r++)
            all = all && s.gathered[r];
        if (all)
            break;
        for (r = 0; r < ec->size; r++) {
            /* A missing rank that beat since the last look is working:
             * the bound is on its silence. */
            if (!first && !s.gathered[r] && s.beat_rev[r] != beat[r])
                deadline = now_ms() + (uint64_t)xb_timeout_ms();
            beat[r] = s.beat_rev[r];
            if (s.gathered[r])
                continue;
            if (check_rank(ec, &s, r))
                return -1;
            if (s.left[r])
                return xb_fail("rank %d of group '%s' left the run before "
                               "allgather %u", r, ec->group, g);
        }
        first = false;
        if (now_ms() >= deadline) {
            missing_list(s.gathered, ec->size, missing, sizeof(missing));
            return xb_fail("%s of group '%s' did not reach allgather %u "
                           "within %d ms", missing, ec->group, g,
                           xb_timeout_ms());
        }
        if (pause_ms(idle, ms))
            return -1;
        ms = ms * 2 > EC_POLL_MAX_MS ? EC_POLL_MAX_MS : ms * 2;
    }

    /* All there: one range with the values. */
    snprintf(suffix, sizeof(suffix), "gather/%u/", g);
    if (call(ec, "/v3/kv/range",
             json_pack("{s:o,s:o}", "key", key_json(ec, suffix), "range_end",
                       key_end_json(ec, suffix)),
             &resp, "allgather"))
        return -1;
    json_array_foreach(json_object_get(resp, "kvs"), i, kv) {
        size_t klen, plen = strlen(ec->prefix) + strlen(suffix), blen = 0;
        char *key = xfer__etcd_unb64(json_object_get(kv, "key"), &klen);
        json_t *val = json_object_get(kv, "value");
        char *blob;

        r = key != NULL && klen > plen ? parse_rank(key + plen, ec->size)
                                       : -1;
        free(key);
        if (r < 0 || out[r].data != NULL)
            continue;
        /* etcd leaves an empty value out of its answer. */
        blob = val != NULL ? xfer__etcd_unb64(val, &blen) : calloc(1, 1);
        if (blob == NULL) {
            json_decref(resp);
            return xb_fail("allgather %u: rank %d's value is not base64", g,
                           r);
        }
        out[r].data = blob;
        out[r].len = blen;
        n++;
    }
    json_decref(resp);
    if (n != ec->size)
        return xb_fail("allgather %u: %d of %d values came back from etcd",
                       g, n, ec->size);
    return 0;
}

/* One put of beat/<rank> (a counter, under our lease) per call: each is
 * a new mod_revision that the ranks waiting on this one see. */
static int ec_heartbeat(void *impl)
{
    struct ecoord *ec = impl;
    char suffix[32], val[32];

    if (lease_check(ec))
        return -1;
    snprintf(suffix, sizeof(suffix), "beat/%d", ec->rank);
    snprintf(val, sizeof(val), "%lu", ++ec->beats);
    return put(ec, suffix, val, strlen(val), ec->lease, "heartbeat");
}

static void ec_abort(void *impl, const char *why)
{
    struct ecoord *ec = impl;
    int64_t id;
    char suffix[32];

    /* Under a lease of its own that nobody revokes: the others see it
     * after this process has revoked its main lease and left. */
    ec->aborted = true;
    id = lease_grant(ec);
    snprintf(suffix, sizeof(suffix), "abort/%d", ec->rank);
    if (id != 0)
        put(ec, suffix, why, strlen(why), id, "abort");
}

/* The last phase's keys must outlive every reader: nobody revokes
 * (deleting what it wrote) before all have left.  Rank 0 waits for the
 * others' left/<r>; they wait for rank 0's place to vanish. */
static void ec_close(void *impl)
{
    struct ecoord *ec = impl;
    uint64_t deadline = now_ms() + (uint64_t)xb_timeout_ms();
    int ms = EC_POLL_MIN_MS;
    char suffix[32];
    struct snap s;

    snprintf(suffix, sizeof(suffix), "left/%d", ec->rank);
    if (ec->aborted || atomic_load(&ec->lost) ||
        put(ec, suffix, "", 0, ec->lease, "close"))
        goto out;
    while (now_ms() < deadline && snap_take(ec, ec->gen, &s) == 0) {
        bool done = true;
        int r;

        if (ec->rank == 0)
            for (r = 1; r < ec->size; r++)
                done = done && (s.left[r] || s.abort_rev[r] > ec->joined[r] ||
                                s.rank_rev[r] != ec->joined[r]);
        else
            done = s.rank_rev[0] != ec->joined[0] ||
                   s.abort_rev[0] > ec->joined[0];
        if (done)
            break;
        pause_ms(NULL, ms);
        ms = ms * 2 > EC_POLL_MAX_MS ? EC_POLL_MAX_MS : ms * 2;
    }
out:
    ec_free(ec);
}

static const struct xb_coord_ops etcd_ops = {ec_allgather, ec_abort,
                                             ec_heartbeat, ec_close};

/* ---- joining ---------------------------------------------------------- */

static int group_check(const char *group)
{
    size_t n = strlen(group);

    if (n == 0 || n > EC_GROUP_MAX ||
        strspn(group, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789._-") != n)
        return xb_fail("--group '%s': use 1 to %d letters, digits, '.', "
                       "'_' or '-'", group, EC_GROUP_MAX);
    return 0;
}

/* The group's size (first writer wins), then the first free rank. */
static int take_rank(struct ecoord *ec)
{
    char val[64], suffix[32], *have = NULL;
    bool won;
    int r;

    snprintf(val, sizeof(val), "%d", ec->size);
    if (create(ec, "size", val, &won, &have))
        return -1;
    if (!won && (have == NULL || atoi(have) != ec->size)) {
        xb_fail("group '%s' is running with %s ranks, not %d; choose another "
                "--group or wait for the running one", ec->group,
                have != NULL ? have : "?", ec->size);
        free(have);
        return -1;
    }
    free(have);
    snprintf(val, sizeof(val), "pid %ld", (long)getpid());
    for (r = 0; r < ec->size; r++) {
        snprintf(suffix, sizeof(suffix), "rank/%d", r);
        if (create(ec, suffix, val, &won, NULL))
            return -1;
        if (won) {
            ec->rank = r;
            return 0;
        }
    }
    return xb_fail("group '%s' already has %d ranks; choose another --group "
                   "or wait for the running one", ec->group, ec->size);
}

/* Every rank has its place: remember which process holds each. */
static int wait_joined(struct ecoord *ec)
{
    uint64_t deadline = now_ms() + (uint64_t)xb_timeout_ms();
    char missing[XB_MAX_RANKS * 4 + 8];
    bool have[XB_MAX_RANKS];
    int ms = EC_POLL_MIN_MS, r;
    struct snap s;

    for (;;) {
        bool all = true;

        if (lease_check(ec) || snap_take(ec, 0, &s))
            return -1;
        for (r = 0; r < ec->size; r++) {
            have[r] = s.rank_rev[r] != 0;
            all = all && have[r];
        }
        if (all)
            break;
        if (now_ms() >= deadline) {
            missing_list(have, ec->size, missing, sizeof(missing));
            return xb_fail("%s of group '%s' did not join within %d ms "
                           "(start %d processes with --etcd, --group %s and "
                           "--ranks %d)", missing, ec->group, xb_timeout_ms(),
                           ec->size, ec->group, ec->size);
        }
        pause_ms(NULL, ms);
        ms = ms * 2 > EC_POLL_MAX_MS ? EC_POLL_MAX_MS : ms * 2;
    }
    for (r = 0; r < ec->size; r++)
        ec->joined[r] = s.rank_rev[r];
    return 0;
}

int xb_coord_etcd(struct xb_coord *c, const char *endpoints,
                  const char *group, int size)
{
    pthread_condattr_t ca;
    xfer__etcd_http_err_t err;
    struct ecoord *ec;
    int rc;

    if (group == NULL || group_check(group))
        return group == NULL ? xb_fail("--etcd needs --group") : -1;
    if (size < 1 || size > XB_MAX_RANKS)
        return xb_fail("--ranks %d: a run has 1 to %d ranks", size,
                       XB_MAX_RANKS);
    ec = calloc(1, sizeof(*ec));
    if (ec == NULL)
        return xb_fail("out of memory");
    snprintf(ec->group_buf, sizeof(ec->group_buf), "%s", group);
    ec->group = ec->group_buf;
    snprintf(ec->prefix, sizeof(ec->prefix), "/xfer-bench/%s/", group);
    ec->size = size;
    ec->ttl_s = ttl_from_env();
    ec->http.body_max = EC_BODY_MAX;
    ec->http.stop = &ec->cancel;
    pthread_mutex_init(&ec->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ec->cv, &ca);
    pthread_condattr_destroy(&ca);
    xfer__etcd_http_global_init();
    /* https:// with the agent's TLS variables (XFER_ETCD_CACERT, ...). */
    if (xfer__etcd_http_endpoints(&ec->http, endpoints, &err) != XFER_OK ||
        xfer__etcd_http_tls(&ec->http, NULL, NULL, NULL, &err) != XFER_OK) {
        xb_fail("--etcd %s: %s", endpoints, err.msg);
        goto fail;
    }
    ec->lease = lease_grant(ec);
    if (ec->lease == 0)
        goto fail;
    rc = pthread_create(&ec->ka_thr, NULL, ka_main, ec);
    if (rc != 0) {
        xb_fail("cannot start the etcd lease thread: %s", strerror(rc));
        goto fail;
    }
    ec->ka_started = true;
    if (take_rank(ec) || wait_joined(ec))
        goto fail;
    c->rank = ec->rank;
    c->size = size;
    c->ops = &etcd_ops;
    c->impl = ec;
    return 0;

fail:
    ec_free(ec);
    return -1;
}

#else /* !XFER_HAVE_CURL */

int xb_coord_etcd(struct xb_coord *c, const char *endpoints,
                  const char *group, int size)
{
    (void)c, (void)endpoints, (void)group, (void)size;
    return xb_fail("xfer-bench was built without libcurl; --etcd is not "
                   "available");
}

#endif /* XFER_HAVE_CURL */
