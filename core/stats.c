/* stats.c - telemetry counters: added to on the data path with relaxed
 * atomics, read by xfer_stats_get and xfer_stats_json (core/stats.h says
 * how they are kept). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include <jansson.h>

#include "core/internal.h"

struct xfer__pstats {
    xfer__pstats_t *next;            /* hash chain */
    xfer__pstats_t *older, *newer;   /* creation order */
    unsigned refs;                   /* loaded remote agents holding it */
    _Atomic(xfer__stats_t *) be[XFER__MAX_BACKENDS];
    char name[];
};

/* The table's smallest bound, whatever max_remote_agents says. */
#define STATS_MIN_NAMES 64

static inline void add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static inline uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static unsigned name_hash(const char *name)
{
    uint32_t h = 2166136261u;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % (sizeof(((xfer__stats_table_t *)0)->buckets) /
                sizeof(xfer__pstats_t *));
}

void xfer__stats_init(xfer_agent_t *a, bool on, unsigned max_names)
{
    xfer__stats_table_t *t = &a->st;

    t->on = on;
    t->max = max_names > STATS_MIN_NAMES ? max_names : STATS_MIN_NAMES;
    pthread_mutex_init(&t->lock, NULL);
}

static void pstats_free(xfer__pstats_t *p)
{
    for (unsigned j = 0; j < XFER__MAX_BACKENDS; j++)
        free(atomic_load(&p->be[j]));
    free(p);
}

void xfer__stats_fini(xfer_agent_t *a)
{
    xfer__stats_table_t *t = &a->st;

    while (t->oldest != NULL) {
        xfer__pstats_t *p = t->oldest;

        t->oldest = p->newer;
        pstats_free(p);
    }
    pthread_mutex_destroy(&t->lock);
}

/* ---- the table of names (st_lock held) -------------------------------- */

static xfer__pstats_t *table_find(xfer__stats_table_t *t, const char *name)
{
    for (xfer__pstats_t *p = t->buckets[name_hash(name)]; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}

static void table_unlink(xfer__stats_table_t *t, xfer__pstats_t *p)
{
    xfer__pstats_t **pp = &t->buckets[name_hash(p->name)];

    while (*pp != p)
        pp = &(*pp)->next;
    *pp = p->next;
    if (p->older != NULL)
        p->older->newer = p->newer;
    else
        t->oldest = p->newer;
    if (p->newer != NULL)
        p->newer->older = p->older;
    else
        t->newest = p->older;
    t->count--;
}

/* The entry of name, made if missing: when the table is full, the oldest
 * entry nobody holds goes first.  held: for a loaded remote agent, which
 * always gets one (loaded agents are bounded by max_remote_agents, and
 * the few more that requests keep alive after an invalidation); else
 * NULL when every entry is held. */
static xfer__pstats_t *table_get(xfer__stats_table_t *t, const char *name,
                                 bool held)
{
    xfer__pstats_t *p = table_find(t, name);
    size_t len;

    if (p != NULL)
        return p;
    if (t->count >= t->max) {
        xfer__pstats_t *old = t->oldest;

        while (old != NULL && old->refs > 0)
            old = old->newer;
        if (old == NULL && !held)
            return NULL;
        if (old != NULL) {
            table_unlink(t, old);
            pstats_free(old);
        }
    }
    len = strlen(name);
    p = calloc(1, sizeof(*p) + len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p->name, name, len + 1);
    p->next = t->buckets[name_hash(name)];
    t->buckets[name_hash(name)] = p;
    p->older = t->newest;
    if (t->newest != NULL)
        t->newest->newer = p;
    else
        t->oldest = p;
    t->newest = p;
    t->count++;
    return p;
}

xfer__pstats_t *xfer__stats_hold(xfer_agent_t *a, const char *name)
{
    xfer__stats_table_t *t = &a->st;
    xfer__pstats_t *p;

    if (!t->on)
        return NULL;
    pthread_mutex_lock(&t->lock);
    p = table_get(t, name, true);
    if (p != NULL)
        p->refs++;
    pthread_mutex_unlock(&t->lock);
    return p;
}

void xfer__stats_drop(xfer_agent_t *a, xfer__pstats_t *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&a->st.lock);
    p->refs--;
    pthread_mutex_unlock(&a->st.lock);
}

/* The block of p for backend j, made the first time it is needed (once
 * per name and backend, never per transfer); NULL when out of memory. */
static xfer__stats_t *pblock(xfer__pstats_t *p, unsigned j)
{
    xfer__stats_t *s, *none = NULL;

    if (p == NULL)
        return NULL;
    s = atomic_load_explicit(&p->be[j], memory_order_acquire);
    if (s != NULL)
        return s;
    s = aligned_alloc(64, (sizeof(*s) + 63) & ~(size_t)63);
    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof(*s));
    if (!atomic_compare_exchange_strong_explicit(&p->be[j], &none, s,
                                                 memory_order_acq_rel,
                                                 memory_order_acquire)) {
        free(s);
        return none;
    }
    return s;
}

/* ---- the data path ---------------------------------------------------- */

/* Latency bucket of us microseconds (xfer.h, XFER_STATS_LAT_BUCKETS). */
static unsigned lat_bucket(uint64_t us)
{
    unsigned i = us == 0 ? 0 : 64 - (unsigned)__builtin_clzll(us);

    return i < XFER_STATS_LAT_BUCKETS ? i : XFER_STATS_LAT_BUCKETS - 1;
}

static void count_end(xfer__stats_t *s, xfer_status_t st, uint64_t lat)
{
    if (st == XFER_OK) {
        add(&s->done, 1);
        add(&s->lat_count, 1);
        add(&s->lat_sum_us, lat);
        add(&s->lat_us[lat_bucket(lat)], 1);
    } else {
        add(&s->failed, 1);
        if (-st < XFER_STATS_CODES)
            add(&s->errors[-st], 1);
    }
}

/* The request's two blocks: its backend's and its peer's name's. */
#define FOR_BLOCKS(r, s)                                                    \
    for (xfer__stats_t *blocks_[2] = {&(r)->backend->stats,                 \
                                      pblock((r)->remote->stats,            \
                                             (r)->backend->index)},         \
                       *s = blocks_[0];                                     \
         s != NULL; s = s == blocks_[0] ? blocks_[1] : NULL)

void xfer__stats_post(xfer_req_t *r, xfer_status_t st, bool notif,
                      size_t notif_len)
{
    unsigned op = r->op == XFER_OP_READ ? 0 : 1;
    uint64_t lat = 0;

    if (st == XFER_OK)
        lat = xfer__now_us() - r->post_us;
    FOR_BLOCKS(r, s) {
        if (st < 0) {
            count_end(s, st, 0);
            continue;
        }
        add(&s->ops[op], 1);
        add(&s->bytes[op], r->bytes);
        add(&s->descs, r->nseg);
        if (notif) {
            add(&s->notif_sent, 1);
            add(&s->notif_sent_bytes, notif_len);
        }
        if (st == XFER_IN_PROG)
            atomic_fetch_add_explicit(&s->in_flight, 1, memory_order_relaxed);
        else
            count_end(s, st, lat);
    }
    r->counted = st == XFER_IN_PROG;
}

void xfer__stats_end(xfer_req_t *r, xfer_status_t st)
{
    uint64_t lat;

    if (!r->counted)
        return;
    r->counted = false;
    lat = st == XFER_OK ? xfer__now_us() - r->post_us : 0;
    FOR_BLOCKS(r, s) {
        atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
        count_end(s, st, lat);
    }
}

void xfer__stats_forget(xfer_req_t *r)
{
    if (!r->counted)
        return;
    r->counted = false;
    FOR_BLOCKS(r, s)
        atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
}

void xfer__stats_notif_sent(xfer_backend_t *b, xfer__pstats_t *to, size_t len)
{
    xfer__stats_t *p = pblock(to, b->index);

    if (!b->agent->st.on)
        return;
    add(&b->stats.notif_sent, 1);
    add(&b->stats.notif_sent_bytes, len);
    if (p != NULL) {
        add(&p->notif_sent, 1);
        add(&p->notif_sent_bytes, len);
    }
}

void xfer__stats_notif_recv(xfer_backend_t *b, const char *from, size_t len)
{
    xfer__stats_table_t *t = &b->agent->st;
    xfer__stats_t *p = NULL;

    if (!t->on)
        return;
    add(&b->stats.notif_recv, 1);
    add(&b->stats.notif_recv_bytes, len);
    /* A sender never loaded gets an entry of its own, within the bound.
     * Counted under the lock: an entry nobody holds may be evicted (and
     * freed) by the next name the moment the lock is let go. */
    pthread_mutex_lock(&t->lock);
    p = pblock(table_get(t, from, false), b->index);
    if (p != NULL) {
        add(&p->notif_recv, 1);
        add(&p->notif_recv_bytes, len);
    }
    pthread_mutex_unlock(&t->lock);
}

/* ---- readers ---------------------------------------------------------- */

#define F(name, n, help) {#name, offsetof(xfer_stats_t, name), n, help}
static const xfer_stats_field_t fields[] = {
    F(read_ops, 1, "READ posts accepted (answered XFER_OK or XFER_IN_PROG)"),
    F(write_ops, 1, "WRITE posts accepted"),
    F(read_bytes, 1, "bytes those READ posts asked for, all descriptors"),
    F(write_bytes, 1, "bytes those WRITE posts asked for"),
    F(descs, 1, "descriptors (segments after resolution) of accepted posts"),
    F(done, 1, "posts that ended XFER_OK (seen by xfer_req_post, "
               "xfer_req_status or xfer_req_wait)"),
    F(failed, 1, "posts refused, or ended in an error (a timeout, a "
                 "cancel, a dead peer, a refused key)"),
    F(errors, XFER_STATS_CODES, "failed, by code: errors[-status]; in JSON "
                                "an object of the non-zero ones by name"),
    F(notif_sent, 1, "notifications sent, with a post or alone"),
    F(notif_sent_bytes, 1, "their bytes"),
    F(notif_recv, 1, "notifications received and queued for "
                     "xfer_notif_drain (counted per sender name)"),
    F(notif_recv_bytes, 1, "their bytes"),
    F(in_flight, 1, "posts accepted and not ended, now (a gauge)"),
    F(lat_count, 1, "ended posts whose post-to-completion time was taken"),
    F(lat_sum_us, 1, "the sum of those times, in microseconds"),
    F(lat_us, XFER_STATS_LAT_BUCKETS, "those times in log2 buckets: [0] "
                                      "under 1 us, [i] in [2^(i-1), 2^i) "
                                      "us, the last at least 2^23 us"),
};
#undef F

XFER_API const xfer_stats_field_t *xfer_stats_fields(size_t *count)
{
    if (count != NULL)
        *count = sizeof(fields) / sizeof(fields[0]);
    return fields;
}

static void sum_into(xfer_stats_t *o, xfer__stats_t *s)
{
    int64_t fl;

    if (s == NULL)
        return;
    o->read_ops += get(&s->ops[0]);
    o->write_ops += get(&s->ops[1]);
    o->read_bytes += get(&s->bytes[0]);
    o->write_bytes += get(&s->bytes[1]);
    o->descs += get(&s->descs);
    o->done += get(&s->done);
    o->failed += get(&s->failed);
    for (unsigned i = 0; i < XFER_STATS_CODES; i++)
        o->errors[i] += get(&s->errors[i]);
    o->notif_sent += get(&s->notif_sent);
    o->notif_sent_bytes += get(&s->notif_sent_bytes);
    o->notif_recv += get(&s->notif_recv);
    o->notif_recv_bytes += get(&s->notif_recv_bytes);
    fl = atomic_load_explicit(&s->in_flight, memory_order_relaxed);
    o->in_flight += fl > 0 ? (uint64_t)fl : 0;
    o->lat_count += get(&s->lat_count);
    o->lat_sum_us += get(&s->lat_sum_us);
    for (unsigned i = 0; i < XFER_STATS_LAT_BUCKETS; i++)
        o->lat_us[i] += get(&s->lat_us[i]);
}

XFER_API xfer_status_t xfer_stats_get(xfer_agent_t *agent, const char *backend,
                                      const char *remote_agent,
                                      xfer_stats_t *out, size_t size)
{
    xfer_stats_t sum;
    unsigned nb, from = 0, to;

    xfer__err_clear();
    if (agent == NULL || out == NULL || size == 0)
        return xfer__err(XFER_ERR_INVALID, "xfer_stats_get: NULL argument "
                         "or size 0");
    if (!agent->st.on)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "agent '%s' keeps no "
                         "counters (created with telemetry 0)", agent->name);
    memset(&sum, 0, sizeof(sum));
    nb = to = xfer__nbackends(agent);
    if (backend != NULL) {
        for (from = 0; from < nb; from++)
            if (strcmp(agent->backends[from]->name, backend) == 0)
                break;
        if (from == nb)
            return xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' has no '%s' "
                             "backend", agent->name, backend);
        to = from + 1;
    }
    if (remote_agent == NULL) {
        for (unsigned j = from; j < to; j++)
            sum_into(&sum, &agent->backends[j]->stats);
    } else {
        xfer__pstats_t *p;

        pthread_mutex_lock(&agent->st.lock);
        p = table_find(&agent->st, remote_agent);
        if (p != NULL)
            for (unsigned j = from; j < to; j++)
                sum_into(&sum, atomic_load(&p->be[j]));
        pthread_mutex_unlock(&agent->st.lock);
        if (p == NULL)
            return xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' keeps no "
                             "counters for remote agent '%s'", agent->name,
                             remote_agent);
    }
    memcpy(out, &sum, size < sizeof(sum) ? size : sizeof(sum));
    return XFER_OK;
}

/* One block as a JSON object (docs/events.md, "stats"), field by field
 * from the table above: scalars as integers, errors as an object of the
 * non-zero codes by name, lat_us as an array. */
static json_t *stats_object(const xfer_stats_t *s)
{
    json_t *o = json_object();
    int rc = o == NULL;

    for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]) && !rc; f++) {
        const uint64_t *v =
            (const uint64_t *)(const void *)((const char *)s + fields[f].offset);
        json_t *val;

        if (fields[f].count == 1) {
            val = json_integer((json_int_t)v[0]);
        } else if (fields[f].offset == offsetof(xfer_stats_t, errors)) {
            val = json_object();
            for (unsigned i = 1; i < XFER_STATS_CODES && val != NULL; i++)
                if (v[i] != 0)
                    rc |= json_object_set_new(val,
                                              xfer__status_name(-(int)i),
                                              json_integer((json_int_t)v[i]));
        } else {
            val = json_array();
            for (size_t i = 0; i < fields[f].count && val != NULL; i++)
                rc |= json_array_append_new(val,
                                            json_integer((json_int_t)v[i]));
        }
        rc |= json_object_set_new(o, fields[f].name, val);
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A name as a JSON object key: jansson takes only UTF-8, and names are
 * any printable bytes, so bytes that are not UTF-8 are written "\xNN"
 * (names that are UTF-8 stay as they are). *buf is freed by the caller. */
static const char *json_key(const char *name, char **buf)
{
    json_t *probe = json_string(name);
    size_t len = strlen(name);
    char *out;

    *buf = NULL;
    if (probe != NULL) {
        json_decref(probe);
        return name;
    }
    out = malloc(len * 4 + 1);
    if (out == NULL)
        return NULL;
    *buf = out;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        if (*c < 0x80)
            *out++ = (char)*c;
        else
            out += sprintf(out, "\\x%02x", *c);
    }
    *out = '\0';
    return *buf;
}

/* One name's counters, copied under st_lock so that the JSON is built
 * without it (received notifications take that lock). */
typedef struct {
    char *name;
    unsigned mask;                   /* backends with a block */
    xfer_stats_t be[XFER__MAX_BACKENDS];
} name_copy_t;

json_t *xfer__stats_doc(xfer_agent_t *a)
{
    json_t *doc = json_object(), *bes = json_object(), *rems = json_object();
    unsigned nb = xfer__nbackends(a);
    xfer_stats_t total, s;
    name_copy_t *copy = NULL;
    size_t n = 0;
    int rc = 0;

    if (doc == NULL || bes == NULL || rems == NULL)
        goto fail;
    memset(&total, 0, sizeof(total));
    for (unsigned j = 0; j < nb; j++) {
        memset(&s, 0, sizeof(s));
        sum_into(&s, &a->backends[j]->stats);
        sum_into(&total, &a->backends[j]->stats);
        rc |= json_object_set_new(bes, a->backends[j]->name, stats_object(&s));
    }
    pthread_mutex_lock(&a->st.lock);
    copy = calloc(a->st.count ? a->st.count : 1, sizeof(*copy));
    for (xfer__pstats_t *p = a->st.oldest; p != NULL && copy != NULL;
         p = p->newer) {
        name_copy_t *c = &copy[n];

        c->name = strdup(p->name);
        if (c->name == NULL)
            break;
        n++;
        for (unsigned j = 0; j < nb; j++) {
            xfer__stats_t *blk = atomic_load(&p->be[j]);

            if (blk != NULL) {
                c->mask |= 1u << j;
                sum_into(&c->be[j], blk);
            }
        }
    }
    if (copy == NULL || n != a->st.count)
        rc = -1;
    pthread_mutex_unlock(&a->st.lock);
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_t *per = json_object();
        char *buf;
        const char *key = json_key(copy[i].name, &buf);

        for (unsigned j = 0; j < nb && per != NULL; j++)
            if (copy[i].mask & (1u << j))
                rc |= json_object_set_new(per, a->backends[j]->name,
                                          stats_object(&copy[i].be[j]));
        rc |= key != NULL ? json_object_set_new(rems, key, per) : -1;
        if (key == NULL)
            json_decref(per);
        free(buf);
    }
    for (size_t i = 0; i < n; i++)
        free(copy[i].name);
    free(copy);
    rc |= json_object_set_new(doc, "total", stats_object(&total));
    rc |= json_object_set_new(doc, "backends", bes);
    bes = NULL;
    rc |= json_object_set_new(doc, "remotes", rems);
    rems = NULL;
    if (rc == 0)
        return doc;
fail:
    json_decref(doc), json_decref(bes), json_decref(rems);
    return NULL;
}

XFER_API xfer_status_t xfer_stats_json(xfer_agent_t *agent, char **json)
{
    json_t *doc;

    xfer__err_clear();
    if (agent == NULL || json == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_stats_json: NULL argument");
    *json = NULL;
    if (!agent->st.on)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "agent '%s' keeps no "
                         "counters (created with telemetry 0)", agent->name);
    doc = xfer__stats_doc(agent);
    if (doc != NULL)
        *json = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (*json == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    return XFER_OK;
}
