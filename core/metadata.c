/* metadata.c - the agent's metadata as a versioned, bounded JSON document,
 * and the strict parser that turns a peer's blob into a remote agent. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/base64.h"
#include "core/events.h"
#include "core/internal.h"

#define MD_FORMAT "xfer-md"
#define MD_VERSION 1
/* Bounds a parser enforces before it allocates on a peer's word. */
#define MD_MAX_BACKENDS 32

static const char *type_name(xfer_mem_type_t t)
{
    return t == XFER_MEM_VRAM ? "VRAM" : "DRAM";
}

/* Rights a region grants peers, as the document spells them. */
static const struct {
    const char *name;
    unsigned bits;
} access_names[] = {
    {"rw", XFER_ACCESS_READ | XFER_ACCESS_WRITE},
    {"r", XFER_ACCESS_READ},
    {"w", XFER_ACCESS_WRITE},
};

static const char *access_name(unsigned access)
{
    /* 0: a registration that predates access rights, open to both. */
    for (size_t i = 1; i < sizeof(access_names) / sizeof(access_names[0]); i++)
        if (access == access_names[i].bits)
            return access_names[i].name;
    return access_names[0].name;
}

static json_t *hex64(uint64_t v)
{
    char buf[24];

    snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
    return json_string(buf);
}

/* json_object_set_new that reports failure (it steals v either way). */
static int put(json_t *obj, const char *key, json_t *v)
{
    return v == NULL || json_object_set_new(obj, key, v) != 0 ? -1 : 0;
}

static int add_region(xfer_agent_t *a, json_t *regions, xfer__region_t *r)
{
    json_t *o = json_object(), *pub = json_object();
    unsigned char buf[XFER_BE_BLOB_MAX];

    if (o == NULL || pub == NULL)
        goto fail;
    for (unsigned j = 0; j < a->nbackends; j++) {
        xfer_backend_t *b = a->backends[j];
        size_t len = sizeof(buf);

        if (r->be_mem[j] == NULL)
            continue;
        if (XFER__HAS_OP(b->ops, mem_pack)) {
            xfer_status_t st;

            xfer__be_enter(b);
            st = b->ops->mem_pack(b->be, r->be_mem[j], buf, &len);
            xfer__be_leave(b);
            if (st != XFER_OK || len > sizeof(buf))
                goto fail;
        } else {
            len = 0;
        }
        if (put(pub, b->name, xfer__b64_json(buf, len)) != 0)
            goto fail;
    }
    if (put(o, "addr", hex64(r->range.addr)) || put(o, "len",
        json_integer((json_int_t)r->range.len)) ||
        put(o, "type", json_string(type_name(r->type))) ||
        put(o, "dev", json_integer((json_int_t)r->dev)) ||
        put(o, "key", hex64(r->range.key)) ||
        put(o, "access", json_string(access_name(r->access))) ||
        put(o, "pub", pub))
        goto fail_o;
    return json_array_append_new(regions, o);

fail:
    json_decref(pub);
fail_o:
    json_decref(o);
    return -1;
}

static xfer_status_t md_build(xfer_agent_t *a, unsigned what,
                              xfer_mem_t *const *mems, size_t nmems,
                              json_t **out)
{
    json_t *root = json_object();
    unsigned char buf[XFER_BE_BLOB_MAX];

    if (root == NULL || put(root, "format", json_string(MD_FORMAT)) ||
        put(root, "version", json_integer(MD_VERSION)) ||
        put(root, "agent", json_string(a->name)) ||
        put(root, "epoch", hex64(a->epoch)))
        goto nomem;

    if (what & XFER_MD_CONN) {
        json_t *backends = json_array();

        if (put(root, "backends", backends))
            goto nomem;
        for (unsigned j = 0; j < a->nbackends; j++) {
            xfer_backend_t *b = a->backends[j];
            size_t len = sizeof(buf);
            json_t *o;
            xfer_status_t st;

            xfer__be_enter(b);
            st = b->ops->conn_info(b->be, buf, &len);
            xfer__be_leave(b);

            if (st != XFER_OK || len > sizeof(buf)) {
                json_decref(root);
                if (!xfer__err_isset())
                    xfer__err(XFER_ERR_BACKEND, "backend %s gave no connection "
                              "info", b->name);
                return st != XFER_OK ? st : XFER_ERR_BACKEND;
            }
            o = json_object();
            if (json_array_append_new(backends, o) ||
                put(o, "plugin", json_string(b->name)) ||
                put(o, "conn", xfer__b64_json(buf, len)))
                goto nomem;
        }
    }
    if (what & XFER_MD_MEM) {
        json_t *regions = json_array();

        if (put(root, "regions", regions))
            goto nomem;
        if (nmems == 0) {
            /* All: what the agent publishes (what its listener and etcd
             * serve), each region once registered with every backend.
             * An unpublished registration travels only by handle. */
            for (size_t i = 0; i < a->regions.count; i++) {
                xfer__region_t *r = (xfer__region_t *)a->regions.by_addr[i];

                if (!r->ready || !r->owner->publish)
                    continue;
                if (add_region(a, regions, r))
                    goto nomem;
            }
        } else {
            for (size_t m = 0; m < nmems; m++) {
                if (mems[m] == NULL || mems[m]->agent != a) {
                    json_decref(root);
                    return xfer__err(XFER_ERR_INVALID, "xfer_md_get: mems[%zu] "
                                     "is not a registration of agent '%s'", m,
                                     a->name);
                }
                for (size_t i = 0; i < mems[m]->count; i++)
                    if (add_region(a, regions, &mems[m]->regions[i]))
                        goto nomem;
            }
        }
    }
    *out = root;
    return XFER_OK;

nomem:
    json_decref(root);
    return xfer__err(XFER_ERR_NOMEM, "out of memory building metadata");
}

/* ---- signatures ------------------------------------------------------------- */

/* With a secret every blob ends in ,"mac":"<64 hex digits>"} where the
 * document's own closing brace was: an HMAC over the exact bytes before
 * the comma (after a label), so a receiver checks it on the text it got,
 * never on a re-serialisation that could differ. */
#define MD_MAC_LABEL "xfer-md-v1"
#define MD_MAC_HEAD ",\"mac\":\""
#define MD_MAC_SUFFIX_LEN (sizeof(MD_MAC_HEAD) - 1 + 2 * XFER_AUTH_MAC_LEN + 2)

/* What the MAC covers: the label with its NUL, then the text. */
static void md_parts(xfer__auth_part_t parts[2], const char *text, size_t len)
{
    parts[0] = (xfer__auth_part_t){MD_MAC_LABEL, sizeof(MD_MAC_LABEL)};
    parts[1] = (xfer__auth_part_t){text, len};
}

static xfer_status_t md_mac(const xfer__auth_t *k, const char *text,
                            size_t len, uint8_t mac[XFER_AUTH_MAC_LEN])
{
    xfer__auth_part_t parts[2];

    md_parts(parts, text, len);
    return xfer__auth_mac(k, parts, 2, mac);
}

static bool md_mac_check(const xfer__auth_t *k, const char *text, size_t len,
                         const uint8_t mac[XFER_AUTH_MAC_LEN])
{
    xfer__auth_part_t parts[2];

    md_parts(parts, text, len);
    return xfer__auth_check(k, parts, 2, mac) == XFER_OK;
}

static xfer_status_t md_sign(xfer_agent_t *a, char **text)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t mac[XFER_AUTH_MAC_LEN];
    size_t n = strlen(*text);
    char *s, *p;
    xfer_status_t st;

    if (a->auth == NULL)
        return XFER_OK;
    /* json_dumps of an object ends with its closing brace. */
    st = md_mac(a->auth, *text, n - 1, mac);
    if (st != XFER_OK || (s = realloc(*text, n - 1 + MD_MAC_SUFFIX_LEN + 1))
                             == NULL) {
        free(*text);
        *text = NULL;
        return st != XFER_OK ? st : xfer__err(XFER_ERR_NOMEM, "out of memory "
                                              "signing metadata");
    }
    p = s + n - 1;
    memcpy(p, MD_MAC_HEAD, sizeof(MD_MAC_HEAD) - 1);
    p += sizeof(MD_MAC_HEAD) - 1;
    for (size_t i = 0; i < XFER_AUTH_MAC_LEN; i++) {
        *p++ = hex[mac[i] >> 4];
        *p++ = hex[mac[i] & 15];
    }
    memcpy(p, "\"}", 3);
    *text = s;
    return XFER_OK;
}

/* Whether blob (len bytes, trailing NUL excluded) carries a signature by
 * a's secret over its exact bytes. */
static bool md_signed(const xfer_agent_t *a, const char *blob, size_t len)
{
    uint8_t mac[XFER_AUTH_MAC_LEN];
    const char *h;

    if (len < MD_MAC_SUFFIX_LEN + 1)
        return false;
    h = blob + len - MD_MAC_SUFFIX_LEN;
    if (memcmp(h, MD_MAC_HEAD, sizeof(MD_MAC_HEAD) - 1) != 0 ||
        memcmp(blob + len - 2, "\"}", 2) != 0)
        return false;
    h += sizeof(MD_MAC_HEAD) - 1;
    for (size_t i = 0; i < XFER_AUTH_MAC_LEN; i++) {
        int v = 0;

        for (int k = 0; k < 2; k++) {
            char c = h[2 * i + (size_t)k];

            if (c >= '0' && c <= '9')
                v = v * 16 + (c - '0');
            else if (c >= 'a' && c <= 'f')
                v = v * 16 + (c - 'a' + 10);
            else
                return false;
        }
        mac[i] = (uint8_t)v;
    }
    return md_mac_check(a->auth, blob, len - MD_MAC_SUFFIX_LEN, mac);
}

bool xfer__md_trusted(const xfer_agent_t *a, const void *blob, size_t len)
{
    const char *text = blob;

    if (a->auth == NULL)
        return true;
    while (len > 0 && text[len - 1] == '\0')
        len--;
    return md_signed(a, text, len);
}

XFER_API xfer_status_t xfer_md_get(xfer_agent_t *agent, unsigned what,
                                   xfer_mem_t *const *mems, size_t nmems,
                                   char **blob, size_t *len)
{
    json_t *root = NULL;
    xfer_status_t st;
    char *text;

    xfer__err_clear();
    if (agent == NULL || blob == NULL || (nmems > 0 && mems == NULL))
        return xfer__err(XFER_ERR_INVALID, "xfer_md_get: NULL argument");
    *blob = NULL;
    if (len != NULL)
        *len = 0;
    if (what == 0 || (what & ~XFER_MD_ALL))
        return xfer__err(XFER_ERR_INVALID, "xfer_md_get: 'what' must be a "
                         "combination of XFER_MD_CONN and XFER_MD_MEM");
    xfer__lock(agent);
    st = md_build(agent, what, mems, nmems, &root);
    xfer__unlock(agent);
    if (st != XFER_OK)
        return st;
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory encoding metadata");
    st = md_sign(agent, &text);
    if (st != XFER_OK)
        return st;
    if (strlen(text) > XFER_MD_MAX) {
        free(text);
        return xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' exceeds "
                         "%u bytes", agent->name, XFER_MD_MAX);
    }
    *blob = text;
    if (len != NULL)
        *len = strlen(text);
    return XFER_OK;
}

/* ---- parsing ---------------------------------------------------------------- */

/* A parsed blob, checked in full before anything in the agent changes. */
typedef struct md_backend {
    const char *plugin;
    json_t *conn;     /* base64 text, checked; borrowed from the document */
} md_backend_t;

typedef struct md_region {
    xfer_be_rregion_t r;
    unsigned access;  /* XFER_ACCESS_* */
    json_t *pub;      /* borrowed from the document */
} md_region_t;

typedef struct md_doc {
    json_t *root;
    const char *name;
    uint64_t epoch;
    bool has_conn;    /* a non-empty backend list */
    bool has_mem;
    size_t nbackends;
    md_backend_t *backends;
    size_t nregions;
    md_region_t *regions;
} md_doc_t;

static void doc_free(md_doc_t *d)
{
    free(d->backends);
    free(d->regions);
    json_decref(d->root);
}

static int parse_hex64(json_t *j, uint64_t *out)
{
    const char *s;
    char *end;

    if (!json_is_string(j))
        return -1;
    s = json_string_value(j);
    if (strncmp(s, "0x", 2) != 0 || s[2] == '\0' || strlen(s) > 18)
        return -1;
    /* strtoull alone would take a sign, spaces or a second 0x. */
    for (const char *p = s + 2; *p; p++)
        if (!isxdigit((unsigned char)*p))
            return -1;
    errno = 0;
    *out = strtoull(s + 2, &end, 16);
    return *end == '\0' && errno == 0 ? 0 : -1;
}

static bool plugin_name_ok(const char *s)
{
    size_t n = 0;

    for (; *s; s++, n++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '_'))
            return false;
    return n > 0 && n <= 64;
}

static xfer_status_t bad(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static xfer_status_t bad(const char *fmt, ...)
{
    char why[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return xfer__err(XFER_ERR_INVALID, "malformed metadata: %s", why);
}

static xfer_status_t parse_region(json_t *o, size_t i, md_region_t *out)
{
    json_t *len = json_object_get(o, "len"), *dev = json_object_get(o, "dev");
    json_t *access = json_object_get(o, "access");
    const char *type;
    const char *key;
    json_t *v;

    if (!json_is_object(o))
        return bad("regions[%zu] is not an object", i);
    if (json_object_size(o) != 6u + (access != NULL))
        return bad("regions[%zu] must have exactly addr, len, type, dev, key "
                   "and pub, and may have access", i);
    if (parse_hex64(json_object_get(o, "addr"), &out->r.addr))
        return bad("regions[%zu].addr is not a 0x-prefixed 64-bit hex string",
                   i);
    if (!json_is_integer(len) || json_integer_value(len) <= 0)
        return bad("regions[%zu].len is not a positive integer", i);
    out->r.len = (uint64_t)json_integer_value(len);
    if (out->r.addr + out->r.len < out->r.addr)
        return bad("regions[%zu] wraps around the address space", i);
    if (!json_is_string(json_object_get(o, "type")))
        return bad("regions[%zu].type is not a string", i);
    type = json_string_value(json_object_get(o, "type"));
    if (strcmp(type, "DRAM") == 0)
        out->r.type = XFER_MEM_DRAM;
    else if (strcmp(type, "VRAM") == 0)
        out->r.type = XFER_MEM_VRAM;
    else
        return bad("regions[%zu].type '%.32s' is neither DRAM nor VRAM", i,
                   type);
    if (!json_is_integer(dev) || json_integer_value(dev) < 0)
        return bad("regions[%zu].dev is not a non-negative integer", i);
    out->r.dev = (uint64_t)json_integer_value(dev);
    if (parse_hex64(json_object_get(o, "key"), &out->r.key) ||
        out->r.key == 0)
        return bad("regions[%zu].key is not a non-zero 64-bit hex string", i);
    /* Absent: a blob from before access rights, which granted both. */
    out->access = access_names[0].bits;
    if (access != NULL) {
        size_t k, n = sizeof(access_names) / sizeof(access_names[0]);

        for (k = 0; k < n; k++)
            if (json_is_string(access) &&
                strcmp(json_string_value(access), access_names[k].name) == 0)
                break;
        if (k == n)
            return bad("regions[%zu].access is not \"rw\", \"r\" or \"w\"",
                       i);
        out->access = access_names[k].bits;
    }
    out->pub = json_object_get(o, "pub");
    if (!json_is_object(out->pub) ||
        json_object_size(out->pub) > MD_MAX_BACKENDS)
        return bad("regions[%zu].pub is not an object of at most %d entries",
                   i, MD_MAX_BACKENDS);
    json_object_foreach(out->pub, key, v) {
        unsigned char buf[XFER_BE_BLOB_MAX];

        if (!plugin_name_ok(key) || !json_is_string(v) ||
            json_string_length(v) > xfer__b64_encoded_size(XFER_BE_BLOB_MAX))
            return bad("regions[%zu].pub has a bad entry '%.64s'", i, key);
        if (xfer__b64_decode(json_string_value(v), buf, sizeof(buf)) < 0)
            return bad("regions[%zu].pub.%s is not base64 of at most %d "
                       "bytes", i, key, XFER_BE_BLOB_MAX);
    }
    return XFER_OK;
}

/* max_regions: the agent's md_max_regions. */
static xfer_status_t md_parse(const void *blob, size_t len,
                              unsigned max_regions, md_doc_t *d)
{
    json_error_t jerr;
    json_t *root, *v, *backends, *regions, *mac;
    size_t i;
    const char *name;

    memset(d, 0, sizeof(*d));
    if (blob == NULL || len == 0)
        return bad("empty blob");
    if (len > XFER_MD_MAX)
        return bad("%zu bytes, more than the %u allowed", len, XFER_MD_MAX);
    /* A trailing NUL, as xfer_md_get's length excludes, is tolerated. */
    if (((const char *)blob)[len - 1] == '\0')
        len--;
    root = json_loadb(blob, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return bad("not JSON: %s at byte %d", jerr.text, jerr.position);
    d->root = root;
    if (!json_is_object(root))
        return bad("not a JSON object");
    v = json_object_get(root, "format");
    if (!json_is_string(v) || strcmp(json_string_value(v), MD_FORMAT) != 0)
        return bad("format tag is not '%s'", MD_FORMAT);
    v = json_object_get(root, "version");
    if (!json_is_integer(v))
        return bad("no integer version");
    if (json_integer_value(v) != MD_VERSION)
        return bad("version %" JSON_INTEGER_FORMAT " is not supported (this "
                   "library reads version %d)", json_integer_value(v),
                   MD_VERSION);
    v = json_object_get(root, "agent");
    if (!json_is_string(v))
        return bad("no agent name");
    name = json_string_value(v);
    if (json_string_length(v) == 0 || json_string_length(v) > XFER_NAME_MAX ||
        strlen(name) != json_string_length(v))
        return bad("agent name must be 1 to %d bytes without NUL",
                   XFER_NAME_MAX);
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return bad("agent name contains control characters");
    d->name = name;
    if (parse_hex64(json_object_get(root, "epoch"), &d->epoch))
        return bad("epoch is not a 0x-prefixed 64-bit hex string");

    backends = json_object_get(root, "backends");
    regions = json_object_get(root, "regions");
    /* A signature (checked on the text by md_signed, not here). */
    mac = json_object_get(root, "mac");
    if (mac != NULL && (!json_is_string(mac) ||
                        json_string_length(mac) != 2 * XFER_AUTH_MAC_LEN))
        return bad("mac is not %d hex digits", 2 * XFER_AUTH_MAC_LEN);
    if (json_object_size(root) !=
        4u + (backends != NULL) + (regions != NULL) + (mac != NULL))
        return bad("unknown top-level fields");

    if (backends != NULL) {
        if (!json_is_array(backends) ||
            json_array_size(backends) > MD_MAX_BACKENDS)
            return bad("backends is not an array of at most %d entries",
                       MD_MAX_BACKENDS);
        d->has_conn = json_array_size(backends) > 0;
        d->nbackends = json_array_size(backends);
        d->backends = calloc(d->nbackends + 1, sizeof(*d->backends));
        if (d->backends == NULL)
            return xfer__err(XFER_ERR_NOMEM, "out of memory");
        json_array_foreach(backends, i, v) {
            json_t *pl = json_object_get(v, "plugin");
            json_t *conn = json_object_get(v, "conn");
            unsigned char buf[XFER_BE_BLOB_MAX];

            if (!json_is_object(v) || json_object_size(v) != 2 ||
                !json_is_string(pl) || !json_is_string(conn))
                return bad("backends[%zu] must be {\"plugin\": ..., \"conn\": "
                           "...}", i);
            if (!plugin_name_ok(json_string_value(pl)))
                return bad("backends[%zu].plugin is not a plugin name", i);
            for (size_t k = 0; k < i; k++)
                if (strcmp(d->backends[k].plugin, json_string_value(pl)) == 0)
                    return bad("backends[%zu] repeats plugin '%s'", i,
                               json_string_value(pl));
            d->backends[i].plugin = json_string_value(pl);
            if (xfer__b64_decode(json_string_value(conn), buf,
                                 sizeof(buf)) < 0)
                return bad("backends[%zu].conn is not base64 of at most %d "
                           "bytes", i, XFER_BE_BLOB_MAX);
            d->backends[i].conn = conn;
        }
    }
    if (regions != NULL) {
        if (!json_is_array(regions))
            return bad("regions is not an array");
        /* Before anything is allocated per region. */
        if (json_array_size(regions) > max_regions)
            return xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' has "
                             "%zu regions, more than the %u allowed by the "
                             "agent option md_max_regions", name,
                             json_array_size(regions), max_regions);
        d->has_mem = true;
        d->nregions = json_array_size(regions);
        d->regions = calloc(d->nregions + 1, sizeof(*d->regions));
        if (d->regions == NULL)
            return xfer__err(XFER_ERR_NOMEM, "out of memory");
        json_array_foreach(regions, i, v) {
            xfer_status_t st = parse_region(v, i, &d->regions[i]);

            if (st != XFER_OK)
                return st;
        }
    }
    /* An empty backend list carries no connection info: with no regions
     * either, the blob says nothing. */
    if (!d->has_conn && !d->has_mem)
        return bad("neither backends (connection info) nor regions");
    return XFER_OK;
}

/* ---- applying ------------------------------------------------------------------ */

/* A blob is applied in three steps, so that a peer's tables of any size
 * never hold the agent lock for long: decide under the lock what the
 * blob is (a new remote agent, a newer epoch, or more of a loaded one),
 * build everything it adds outside the lock (regions, their plugin
 * handles, the sorted tables), then swap that in under the lock.
 * md_lock keeps loads one at a time, so nobody else changes a remote
 * agent's table meanwhile; invalidation and backends added meanwhile
 * are looked at again in the last step. */

static bool same_region(const xfer__rregion_t *rr, const md_region_t *mr)
{
    return rr->range.addr == mr->r.addr && rr->range.len == mr->r.len &&
           rr->type == mr->r.type && rr->dev == mr->r.dev &&
           rr->access == mr->access;
}

static bool same_md_region(const md_region_t *x, const md_region_t *y)
{
    return x->r.addr == y->r.addr && x->r.len == y->r.len &&
           x->r.type == y->r.type && x->r.dev == y->r.dev &&
           x->access == y->access;
}

static int cmp_md_key(const void *x, const void *y)
{
    uint64_t a = (*(md_region_t *const *)x)->r.key;
    uint64_t b = (*(md_region_t *const *)y)->r.key;

    return a < b ? -1 : a > b;
}

/* What one blob adds to a remote agent, built outside the agent lock. */
typedef struct md_batch {
    xfer__rregion_t **fresh;  /* regions new to the remote agent */
    size_t nfresh;
    xfer__rregion_t **known;  /* regions it has, the blob repeats ... */
    json_t **known_pub;       /* ... with these public parts (copies) */
    size_t nknown;
    xfer__registry_t table;   /* its table plus fresh; after the swap,
                                 the arrays it replaced */
} md_batch_t;

static void batch_discard(xfer_agent_t *a, md_batch_t *b)
{
    for (size_t i = 0; i < b->nfresh; i++)
        xfer__rregion_free(a, b->fresh[i]);
    for (size_t i = 0; i < b->nknown; i++)
        json_decref(b->known_pub[i]);
    free(b->fresh);
    free(b->known);
    free(b->known_pub);
    xfer__reg_fini(&b->table);
    memset(b, 0, sizeof(*b));
}

/* A copy of a region's public parts: nothing kept shares a reference
 * count with the document, which is freed outside the agent's lock.
 * NULL with *st OK: it has none. */
static json_t *pub_copy(const md_region_t *mr, xfer_status_t *st)
{
    json_t *pub = NULL;

    *st = XFER_OK;
    if (json_object_size(mr->pub) > 0 &&
        (pub = json_deep_copy(mr->pub)) == NULL)
        *st = xfer__err(XFER_ERR_NOMEM, "out of memory");
    return pub;
}

/* Sort the blob's regions by key (O(n log n), whatever their order),
 * sort them into those rem knows and fresh ones, unpack the fresh ones
 * for every backend connected to rem, and build rem's next table.  No
 * agent lock held: rem is the caller's own (a remote agent not loaded
 * yet), or shared (loaded; its peers are then reached hand over hand,
 * and its table, which only loads change, is read as is). */
static xfer_status_t batch_prepare(xfer__remote_t *rem, const md_doc_t *d,
                                   bool shared, md_batch_t *b)
{
    xfer_agent_t *a = rem->agent;
    unsigned nb = xfer__nbackends(a);
    md_region_t **ord = NULL;
    xfer__range_t **ranges = NULL;
    xfer_status_t st = XFER_OK;

    memset(b, 0, sizeof(*b));
    if (d->nregions == 0)
        return XFER_OK;
    ord = malloc(d->nregions * sizeof(*ord));
    b->fresh = malloc(d->nregions * sizeof(*b->fresh));
    b->known = malloc(d->nregions * sizeof(*b->known));
    b->known_pub = malloc(d->nregions * sizeof(*b->known_pub));
    if (ord == NULL || b->fresh == NULL || b->known == NULL ||
        b->known_pub == NULL) {
        st = xfer__err(XFER_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < d->nregions; i++)
        ord[i] = &d->regions[i];
    qsort(ord, d->nregions, sizeof(*ord), cmp_md_key);
    for (size_t i = 0; i < d->nregions && st == XFER_OK; i++) {
        const md_region_t *mr = ord[i];
        xfer__rregion_t *rr;
        json_t *pub;

        /* Same key twice: a repeat, unless it disagrees, which only a
         * confused or hostile peer sends. */
        if (i > 0 && ord[i - 1]->r.key == mr->r.key) {
            if (!same_md_region(ord[i - 1], mr))
                st = xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' "
                               "redefines region key 0x%016" PRIx64,
                               rem->name, mr->r.key);
            continue;
        }
        rr = (xfer__rregion_t *)xfer__reg_find_key(&rem->regions, mr->r.key);
        if (rr != NULL && !same_region(rr, mr)) {
            st = xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' "
                           "redefines region key 0x%016" PRIx64, rem->name,
                           mr->r.key);
            break;
        }
        pub = pub_copy(mr, &st);
        if (st != XFER_OK)
            break;
        if (rr != NULL) {
            b->known[b->nknown] = rr;
            b->known_pub[b->nknown++] = pub;
            continue;
        }
        rr = calloc(1, sizeof(*rr));
        if (rr == NULL) {
            json_decref(pub);
            st = xfer__err(XFER_ERR_NOMEM, "out of memory");
            break;
        }
        rr->range.addr = mr->r.addr;
        rr->range.len = mr->r.len;
        rr->range.key = mr->r.key;
        rr->type = mr->r.type;
        rr->dev = mr->r.dev;
        rr->access = mr->access;
        rr->pub = pub;
        b->fresh[b->nfresh++] = rr;
    }
    if (st != XFER_OK)
        goto out;
    /* Partial updates must not grow a peer past what one blob may hold. */
    if (rem->regions.count + b->nfresh > a->md_max_regions) {
        st = xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' would give "
                       "it %zu regions, more than the %u allowed by the agent "
                       "option md_max_regions", rem->name,
                       rem->regions.count + b->nfresh, a->md_max_regions);
        goto out;
    }
    for (size_t i = 0; i < b->nfresh && st == XFER_OK; i++)
        for (unsigned j = 0; st == XFER_OK && j < nb; j++)
            st = xfer__rregion_unpack(rem, b->fresh[i], j, shared);
    if (st != XFER_OK)
        goto out;
    ranges = malloc((b->nfresh ? b->nfresh : 1) * sizeof(*ranges));
    if (ranges == NULL) {
        st = xfer__err(XFER_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->nfresh; i++)
        ranges[i] = &b->fresh[i]->range;
    st = xfer__reg_merge(&rem->regions, ranges, b->nfresh, &b->table);
    if (st != XFER_OK)
        xfer__err(st, "out of memory"); /* keys were checked above */
out:
    free(ord);
    free(ranges);
    return st;
}

/* Swap a prepared batch in (agent lock held): the known regions take
 * the blob's public parts, every region is unpacked for the backends
 * connected since it was prepared, and the new table replaces the old,
 * whose arrays stay in the batch to be freed after unlocking. */
static xfer_status_t batch_commit(xfer__remote_t *rem, md_batch_t *b)
{
    xfer_agent_t *a = rem->agent;
    unsigned nb = xfer__nbackends(a);
    xfer__registry_t old;
    xfer_status_t st = XFER_OK;

    for (size_t i = 0; st == XFER_OK && i < b->nknown; i++) {
        xfer__rregion_t *rr = b->known[i];

        json_decref(rr->pub);
        rr->pub = b->known_pub[i];
        b->known_pub[i] = NULL;
        for (unsigned j = 0; st == XFER_OK && j < nb; j++)
            st = xfer__rregion_unpack(rem, rr, j, false);
    }
    /* Those prepared are done already: this is cheap. */
    for (size_t i = 0; st == XFER_OK && i < b->nfresh; i++)
        for (unsigned j = 0; st == XFER_OK && j < nb; j++)
            st = xfer__rregion_unpack(rem, b->fresh[i], j, false);
    if (st != XFER_OK)
        return st;
    if (b->nfresh == 0)
        return XFER_OK; /* the table is the same: keep it */
    old = rem->regions;
    rem->regions = b->table;
    b->table = old;
    b->nfresh = 0; /* the remote agent owns them now */
    return XFER_OK;
}

/* Keep the blob's connection info (the last word replaces what was kept)
 * and connect every backend that is not connected yet, unpacking for it
 * the regions already known. */
static xfer_status_t add_peers(xfer__remote_t *rem, const md_doc_t *d)
{
    xfer_agent_t *a = rem->agent;
    xfer_status_t st = XFER_OK;

    if (d->has_conn) {
        json_t *conn = json_object();

        for (size_t i = 0; conn != NULL && i < d->nbackends; i++) {
            /* A copy, for the reason pub_copy copies. */
            json_t *v = json_string(json_string_value(d->backends[i].conn));

            if (json_object_set_new(conn, d->backends[i].plugin, v) != 0) {
                json_decref(conn);
                conn = NULL;
            }
        }
        if (conn == NULL)
            return xfer__err(XFER_ERR_NOMEM, "out of memory");
        json_decref(rem->conn);
        rem->conn = conn;
    }
    for (unsigned j = 0; st == XFER_OK && j < xfer__nbackends(a); j++)
        st = xfer__remote_reach(rem, j);
    return st;
}

/* Who hands the agent a blob, and so what it may do with it. */
typedef struct md_via {
    bool listener;      /* a listener client, not the application (nor
                           etcd, the control plane the application chose) */
    const char *client; /* the name it authenticated as; NULL: none */
} md_via_t;

/* Whether d, handed over by via, may be loaded, as the agent is now
 * (lock held); rem: the remote agent of that name, if any. */
static xfer_status_t md_admit(xfer_agent_t *a, const md_doc_t *d,
                              const xfer__remote_t *rem, const md_via_t *via)
{
    if (strcmp(d->name, a->name) == 0 && d->epoch == a->epoch)
        return xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' is this "
                         "agent's own", d->name);
    if (rem != NULL && d->epoch < rem->epoch)
        return xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' has epoch "
                         "0x%" PRIx64 ", older than the loaded 0x%" PRIx64,
                         d->name, d->epoch, rem->epoch);
    /* Anyone who reaches an unauthenticated listener may introduce a new
     * name, but must not take a loaded one over: neither a newer epoch
     * (which drops the real peer) nor connection info (which points a
     * backend not yet connected to it at another endpoint). */
    /* Nor add regions to it, or replace their public parts: a loaded
     * name is the application's (or an authenticated peer's) alone. */
    if (via->listener && via->client == NULL && rem != NULL)
        return xfer__err(XFER_ERR_AUTH, "%s loaded agent '%s' through the "
                         "listener needs authentication; the application "
                         "can load it itself",
                         d->epoch > rem->epoch ? "replacing" : "changing",
                         d->name);
    if (rem != NULL && d->epoch == rem->epoch)
        return XFER_OK;
    if (!d->has_conn)
        return xfer__err(XFER_ERR_INVALID, "metadata of agent '%s' (epoch "
                         "0x%" PRIx64 ") has no connection info (no or an "
                         "empty backend list); load its full metadata "
                         "first", d->name, d->epoch);
    if (via->listener && via->client == NULL && rem == NULL) {
        unsigned cap = a->max_remote_agents / XFER__OPEN_SHARE;

        if (cap == 0)
            cap = 1;
        if (a->open_nremotes >= cap)
            return xfer__err(XFER_ERR_NOMEM, "agent '%s' holds %u remote "
                             "agents introduced through the listener "
                             "without authentication, the most it takes "
                             "(max_remote_agents / %d): '%s' was not "
                             "loaded", a->name, a->open_nremotes,
                             XFER__OPEN_SHARE, d->name);
        if (a->open_nregions + d->nregions > a->md_max_regions)
            return xfer__err(XFER_ERR_NOMEM, "agent '%s' holds %zu regions "
                             "of agents introduced through the listener "
                             "without authentication; '%s' would add %zu, "
                             "past md_max_regions (%u) in all",
                             a->name, a->open_nregions, d->name,
                             d->nregions, a->md_max_regions);
    }
    if (rem == NULL && a->nremotes >= a->max_remote_agents)
        return xfer__err(XFER_ERR_NOMEM, "agent '%s' holds %u remote agents, "
                         "the most the agent option max_remote_agents "
                         "allows: '%s' was not loaded (invalidate one "
                         "first)", a->name, a->nremotes, d->name);
    return XFER_OK;
}

/* Forget a remote agent that was never loaded. */
static void fresh_discard(xfer__remote_t *fresh, md_batch_t *b)
{
    xfer_agent_t *a = fresh->agent;

    for (unsigned j = 0; j < xfer__nbackends(a); j++) {
        xfer_backend_t *be = a->backends[j];

        if (fresh->peer[j] == NULL)
            continue;
        xfer__be_enter(be);
        be->ops->peer_remove(be->be, fresh->peer[j]);
        xfer__be_leave(be);
        fresh->peer[j] = NULL;
    }
    batch_discard(a, b);
    xfer__remote_free(fresh);
}

/* A new remote agent, or a newer epoch of a loaded one: built whole
 * outside the lock, then put in the agent's list, replacing the older
 * epoch.  *gone: the replaced one, to free after unlocking. */
static xfer_status_t md_load_fresh(xfer_agent_t *a, const md_doc_t *d,
                                   const md_via_t *via, xfer__remote_t **gone)
{
    xfer__remote_t *fresh = calloc(1, sizeof(*fresh)), *old;
    md_batch_t b = {0};
    xfer_status_t st;

    if (fresh == NULL || (fresh->name = strdup(d->name)) == NULL) {
        free(fresh);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    fresh->agent = a;
    fresh->epoch = d->epoch;
    fresh->refs = 1;
    xfer__reg_init(&fresh->regions);
    /* Nobody sees it yet: connected and unpacked without the lock. */
    st = add_peers(fresh, d);
    if (st == XFER_OK)
        st = batch_prepare(fresh, d, false, &b);
    if (st == XFER_OK) {
        xfer__lock(a);
        /* Invalidations may have happened meanwhile; loads may not. */
        old = xfer__remote_find(a, d->name);
        st = md_admit(a, d, old, via);
        if (st == XFER_OK && old != NULL && old->epoch == d->epoch)
            st = xfer__err(XFER_ERR_EXISTS, "agent '%s' epoch 0x%" PRIx64
                           " was loaded meanwhile", d->name, d->epoch);
        if (st == XFER_OK)
            st = batch_commit(fresh, &b);
        if (st == XFER_OK) {
            /* Backends added meanwhile, as xfer__remote_backfill does
             * for the remote agents it sees. */
            for (unsigned j = 0; j < xfer__nbackends(a); j++) {
                if (xfer__remote_reach(fresh, j) != XFER_OK) {
                    xfer__log(XFER_LOG_WARN, a->backends[j]->name, "agent "
                              "%s: remote agent '%s' is not reachable over "
                              "the new backend: %s", a->name, d->name,
                              xfer_last_error());
                    xfer__err_clear();
                }
            }
            /* Its name's counters (core/stats.h), kept across epochs;
             * taken once admitted, so a refused load makes none. */
            fresh->stats = xfer__stats_hold(a, d->name);
            if (old != NULL)
                *gone = xfer__remote_evict(old, xfer__why_replaced);
            xfer__ev_remote(a, old != NULL ? XFER__EV_REMOTE_REPLACED
                                           : XFER__EV_REMOTE_LOADED,
                            d->name, d->epoch, old ? old->epoch : 0, NULL);
            fresh->next = a->remotes;
            a->remotes = fresh;
            a->nremotes++;
            if (via->listener && via->client == NULL) {
                fresh->open = true;
                fresh->open_regions = d->nregions;
                a->open_nremotes++;
                a->open_nregions += d->nregions;
            }
        }
        xfer__unlock(a);
    }
    if (st != XFER_OK) {
        /* Nothing of a new epoch is kept unless all of it loaded. */
        fresh_discard(fresh, &b);
        return st;
    }
    batch_discard(a, &b);
    return XFER_OK;
}

/* More of a loaded remote agent (same epoch): new connection info and
 * regions merge into it.  The caller holds a reference on rem. */
static xfer_status_t md_load_more(xfer__remote_t *rem, const md_doc_t *d)
{
    xfer_agent_t *a = rem->agent;
    md_batch_t b;
    xfer_status_t st = batch_prepare(rem, d, true, &b);

    if (st == XFER_OK) {
        xfer__lock(a);
        if (rem->dead)
            st = xfer__err(XFER_ERR_REMOTE_DISCONNECT, "remote agent '%s' "
                           "went away while its metadata loaded: %s",
                           rem->name, rem->dead_why);
        if (st == XFER_OK)
            st = add_peers(rem, d);
        if (st == XFER_OK)
            st = batch_commit(rem, &b);
        xfer__unlock(a);
    }
    batch_discard(a, &b);
    return st;
}

/* md_lock held. */
static xfer_status_t md_load(xfer_agent_t *a, const md_doc_t *d,
                             const md_via_t *via)
{
    xfer__remote_t *rem, *gone = NULL;
    xfer_status_t st;
    bool last = false;

    xfer__lock(a);
    rem = xfer__remote_find(a, d->name);
    st = md_admit(a, d, rem, via);
    if (st == XFER_OK && rem != NULL && rem->epoch == d->epoch)
        xfer__remote_ref(rem);
    else
        rem = NULL;
    xfer__unlock(a);
    if (st != XFER_OK)
        return st;
    if (rem == NULL) {
        st = md_load_fresh(a, d, via, &gone);
    } else {
        st = md_load_more(rem, d);
        xfer__lock(a);
        last = xfer__remote_put(rem);
        xfer__unlock(a);
        if (last)
            gone = rem;
    }
    /* A peer's tables can be large: freed without the lock. */
    if (gone != NULL)
        xfer__remote_free(gone);
    return st;
}

static xfer_status_t md_apply(xfer_agent_t *a, const void *blob, size_t len,
                              char *name, size_t name_size,
                              const md_via_t *via)
{
    md_doc_t d;
    xfer_status_t st = md_parse(blob, len, a->md_max_regions, &d);
    size_t need = st == XFER_OK ? strlen(d.name) + 1 : 0;

    /* With a secret, only what a holder of it signed loads, whoever hands
     * it over (the application too: it may pass on a blob it got from
     * anywhere).  The text checked is the text parsed. */
    if (st == XFER_OK && a->auth != NULL &&
        !md_signed(a, blob, ((const char *)blob)[len - 1] ? len : len - 1))
        st = xfer__err(XFER_ERR_AUTH, "metadata for '%s' is not signed by "
                       "this agent's secret", d.name);
    if (st == XFER_OK && via->client != NULL && strcmp(d.name, via->client))
        st = xfer__err(XFER_ERR_AUTH, "metadata for '%s' came from a client "
                       "that authenticated as agent '%s'", d.name,
                       via->client);
    /* Refused before anything is applied: a caller told nothing of the
     * name would not know which agent it just loaded. */
    if (st == XFER_OK && name != NULL && name_size > 0 && need > name_size)
        st = xfer__err(XFER_ERR_INVALID, "a name buffer of %zu bytes cannot "
                       "hold agent name '%s': %zu bytes are needed", name_size,
                       d.name, need);
    if (st == XFER_OK) {
        pthread_mutex_lock(&a->md_lock);
        st = md_load(a, &d, via);
        pthread_mutex_unlock(&a->md_lock);
    }
    if (st == XFER_OK && name != NULL && name_size > 0)
        memcpy(name, d.name, need);
    doc_free(&d);
    return st;
}

xfer_status_t xfer__md_apply(xfer_agent_t *a, const void *blob, size_t len,
                             char *name, size_t name_size)
{
    const md_via_t via = {false, NULL};

    return md_apply(a, blob, len, name, name_size, &via);
}

xfer_status_t xfer__md_apply_sent(xfer_agent_t *a, const void *blob,
                                  size_t len, const char *client, char *name,
                                  size_t name_size)
{
    const md_via_t via = {true, client};

    return md_apply(a, blob, len, name, name_size, &via);
}

XFER_API xfer_status_t xfer_md_load(xfer_agent_t *agent, const void *blob,
                                    size_t len, char *name, size_t name_size)
{
    xfer__err_clear();
    if (name != NULL && name_size > 0)
        name[0] = '\0';
    if (agent == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_load: NULL agent");
    return xfer__md_apply(agent, blob, len, name, name_size);
}
