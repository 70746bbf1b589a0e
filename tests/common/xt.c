/* xt.c - helpers for tests written against the public API (see xt.h).
 * Everything a test creates is handed to the runner's cleanups. */
#include "tests/common/xt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ---- time ------------------------------------------------------------ */

uint64_t xt_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void xt_sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void sleep_us(unsigned us)
{
    struct timespec ts = { 0, (long)us * 1000L };

    nanosleep(&ts, NULL);
}

/* ---- status assertions -------------------------------------------------- */

const char *xt_status_name(xfer_status_t s)
{
    switch (s) {
    case XFER_OK: return "XFER_OK";
    case XFER_IN_PROG: return "XFER_IN_PROG";
    case XFER_ERR_INVALID: return "XFER_ERR_INVALID";
    case XFER_ERR_NOT_FOUND: return "XFER_ERR_NOT_FOUND";
    case XFER_ERR_NOMEM: return "XFER_ERR_NOMEM";
    case XFER_ERR_NOT_SUPPORTED: return "XFER_ERR_NOT_SUPPORTED";
    case XFER_ERR_BACKEND: return "XFER_ERR_BACKEND";
    case XFER_ERR_REMOTE_DISCONNECT: return "XFER_ERR_REMOTE_DISCONNECT";
    case XFER_ERR_TIMEOUT: return "XFER_ERR_TIMEOUT";
    case XFER_ERR_CANCELED: return "XFER_ERR_CANCELED";
    case XFER_ERR_ACCESS: return "XFER_ERR_ACCESS";
    case XFER_ERR_BUSY: return "XFER_ERR_BUSY";
    case XFER_ERR_EXISTS: return "XFER_ERR_EXISTS";
    case XFER_ERR_LOAD: return "XFER_ERR_LOAD";
    case XFER_ERR_CONFIG: return "XFER_ERR_CONFIG";
    case XFER_ERR_AUTH: return "XFER_ERR_AUTH";
    }
    return "(unknown status)";
}

bool xt_status_at(const char *file, unsigned line, int fatal,
                  const char *what, xfer_status_t got, xfer_status_t want)
{
    if (got == want) {
        CU_assertImplementation(CU_TRUE, line, what, file, "", CU_FALSE);
        return true;
    }
    xt_fail_at(file, line, fatal, "%s: got %s (%d), want %s (%d); last error: \"%s\"",
               what, xt_status_name(got), (int)got, xt_status_name(want),
               (int)want, xfer_last_error());
    return false;
}

bool xt_err_has_at(const char *file, unsigned line, ...)
{
    const char *err = xfer_last_error();
    const char *s;
    bool ok = true;
    va_list ap;

    va_start(ap, line);
    while ((s = va_arg(ap, const char *)) != NULL) {
        if (err == NULL || strstr(err, s) == NULL) {
            xt_fail_at(file, line, 0,
                       "xfer_last_error() \"%s\" does not mention \"%s\"",
                       err ? err : "(null)", s);
            ok = false;
        }
    }
    va_end(ap);
    if (ok)
        CU_assertImplementation(CU_TRUE, line, "xfer_last_error", file, "",
                                CU_FALSE);
    return ok;
}

/* ---- names, memory ------------------------------------------------------ */

unsigned xt_free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned port = 0;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &sl) == 0)
        port = ntohs(sin.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

const char *xt_name(const char *prefix)
{
    static unsigned counter;
    static char names[16][64];
    char *out = names[counter % 16];

    snprintf(out, sizeof(names[0]), "%s-%ld-%u", prefix, (long)getpid(),
             counter);
    counter++;
    return out;
}

/* XT_ALLOC=xfer: every buffer comes from xfer_mem_alloc of one helper
 * agent (no backends), so that a suite runs over shareable memory. */
static xfer_agent_t *alloc_agent;

static void alloc_agent_fini(void)
{
    xfer_agent_destroy(alloc_agent);
    alloc_agent = NULL;
}

static void alloc_free(void *p)
{
    if (alloc_agent != NULL)
        xfer_mem_free(alloc_agent, p);
}

static void *alloc_shared(size_t len)
{
    void *p = NULL;
    xfer_status_t st;

    if (alloc_agent == NULL) {
        xfer_agent_opts_t o;
        char name[64];

        xfer_agent_opts_init(&o);
        snprintf(name, sizeof(name), "xt-alloc-%ld", (long)getpid());
        o.name = name;
        o.progress_thread = 0;
        if (xfer_agent_create(&o, &alloc_agent) != XFER_OK)
            XT_FAIL_FATAL("XT_ALLOC=xfer: cannot create an agent: %s",
                          xfer_last_error());
        atexit(alloc_agent_fini);
    }
    st = xfer_mem_alloc(alloc_agent, len ? len : 1, 0, &p);
    if (st != XFER_OK)
        XT_FAIL_FATAL("xfer_mem_alloc(%zu): %s", len, xfer_last_error());
    xt_defer_late(alloc_free, p);
    return p;
}

void *xt_alloc(size_t len)
{
    void *p = NULL;
    const char *how = getenv("XT_ALLOC");

    if (how != NULL && strcmp(how, "xfer") == 0)
        return alloc_shared(len);
    if (posix_memalign(&p, 4096, len ? len : 1) != 0)
        XT_FAIL_FATAL("posix_memalign(%zu) failed", len);
    memset(p, 0, len);
    xt_defer_late(free, p);
    return p;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline unsigned char pattern_byte(uint64_t seed, uint64_t j)
{
    return (unsigned char)(mix64(seed ^ ((j >> 3) * 0x632be59bd9b4e019ull)) >>
                           ((j & 7) * 8));
}

void xt_fill_at(void *buf, size_t len, uint64_t seed, uint64_t base)
{
    unsigned char *p = buf;
    size_t i = 0;

    for (; i < len && ((base + i) & 7) != 0; i++)
        p[i] = pattern_byte(seed, base + i);
    for (; i + 8 <= len; i += 8) {
        uint64_t w = mix64(seed ^ (((base + i) >> 3) * 0x632be59bd9b4e019ull));

        for (unsigned b = 0; b < 8; b++)
            p[i + b] = (unsigned char)(w >> (b * 8));
    }
    for (; i < len; i++)
        p[i] = pattern_byte(seed, base + i);
}

long xt_check_at(const void *buf, size_t len, uint64_t seed, uint64_t base)
{
    const unsigned char *p = buf;
    size_t i = 0;

    for (; i < len && ((base + i) & 7) != 0; i++)
        if (p[i] != pattern_byte(seed, base + i))
            return (long)i;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = mix64(seed ^ (((base + i) >> 3) * 0x632be59bd9b4e019ull));

        for (unsigned b = 0; b < 8; b++)
            if (p[i + b] != (unsigned char)(w >> (b * 8)))
                return (long)(i + b);
    }
    for (; i < len; i++)
        if (p[i] != pattern_byte(seed, base + i))
            return (long)i;
    return -1;
}

void xt_fill(void *buf, size_t len, uint64_t seed)
{
    xt_fill_at(buf, len, seed, 0);
}

long xt_check(const void *buf, size_t len, uint64_t seed)
{
    return xt_check_at(buf, len, seed, 0);
}

uint64_t xt_seed(void)
{
    /* Atomic: worker threads of the thread tests seed themselves. */
    static _Atomic uint64_t counter;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                 ((uint64_t)getpid() << 48) ^ (atomic_fetch_add(&counter, 1) + 1));
}

uint64_t xt_rand(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    return mix64(*state);
}

/* ---- agents ------------------------------------------------------------- */

#define XT_MAX_AGENTS 64
static xfer_agent_t *live_agents[XT_MAX_AGENTS];

static void agent_cleanup(void *arg)
{
    for (size_t i = 0; i < XT_MAX_AGENTS; i++) {
        if (live_agents[i] == arg) {
            live_agents[i] = NULL;
            xfer_agent_destroy(arg);
            return;
        }
    }
}

xfer_agent_t *xt_agent(const char *name, const char *spec,
                       int progress_thread)
{
    xfer_agent_opts_t opts;
    xfer_agent_t *agent = NULL;
    xfer_status_t s;
    size_t slot;

    for (slot = 0; slot < XT_MAX_AGENTS && live_agents[slot]; slot++)
        ;
    if (slot == XT_MAX_AGENTS)
        XT_FAIL_FATAL("too many agents in one test");
    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.progress_thread = progress_thread;
    s = xfer_agent_create(&opts, &agent);
    if (s != XFER_OK || agent == NULL)
        XT_FAIL_FATAL("xfer_agent_create(%s): %s: %s", name,
                      xt_status_name(s), xfer_last_error());
    live_agents[slot] = agent;
    xt_defer(agent_cleanup, agent);
    if (spec != NULL) {
        s = xfer_backend_add(agent, spec, NULL);
        if (s != XFER_OK)
            XT_FAIL_FATAL("xfer_backend_add(%s, \"%s\"): %s: %s", name, spec,
                          xt_status_name(s), xfer_last_error());
    }
    return agent;
}

void xt_agent_destroy(xfer_agent_t *agent)
{
    agent_cleanup(agent);
}

xfer_mem_t *xt_register(xfer_agent_t *agent, void *addr, size_t len)
{
    xfer_desc_t d = { (uintptr_t)addr, len, 0 };
    xfer_dlist_t l = { XFER_MEM_DRAM, 1, &d };
    xfer_mem_t *mem = NULL;
    xfer_status_t s = xfer_mem_register(agent, &l, NULL, &mem);

    if (s != XFER_OK || mem == NULL)
        XT_FAIL_FATAL("xfer_mem_register(%s, %zu bytes): %s: %s",
                      xfer_agent_name(agent), len, xt_status_name(s),
                      xfer_last_error());
    return mem;
}

xfer_mem_t *xt_register_access(xfer_agent_t *agent, void *addr, size_t len,
                               unsigned access)
{
    xfer_desc_t d = { (uintptr_t)addr, len, 0 };
    xfer_dlist_t l = { XFER_MEM_DRAM, 1, &d };
    xfer_mem_opts_t o;
    xfer_mem_t *mem = NULL;
    xfer_status_t s;

    xfer_mem_opts_init(&o);
    o.access = access;
    s = xfer_mem_register(agent, &l, &o, &mem);
    if (s != XFER_OK || mem == NULL)
        XT_FAIL_FATAL("xfer_mem_register(%s, %zu bytes, access 0x%x): %s: %s",
                      xfer_agent_name(agent), len, access, xt_status_name(s),
                      xfer_last_error());
    return mem;
}

char *xt_md_get(xfer_agent_t *agent, unsigned what, xfer_mem_t *const *mems,
                size_t nmems, size_t *len)
{
    char *blob = NULL;
    size_t n = 0;
    xfer_status_t s = xfer_md_get(agent, what, mems, nmems, &blob, &n);

    if (s != XFER_OK || blob == NULL)
        XT_FAIL_FATAL("xfer_md_get(%s): %s: %s", xfer_agent_name(agent),
                      xt_status_name(s), xfer_last_error());
    xt_defer_late(xfer_free, blob);
    if (len)
        *len = n;
    return blob;
}

void xt_md_exchange(xfer_agent_t *from, unsigned what, xfer_agent_t *to)
{
    size_t len;
    char *blob = xt_md_get(from, what, NULL, 0, &len);
    char name[XFER_NAME_MAX + 1];
    xfer_status_t s = xfer_md_load(to, blob, len, name, sizeof(name));

    if (s != XFER_OK)
        XT_FAIL_FATAL("xfer_md_load(%s <- %s): %s: %s", xfer_agent_name(to),
                      xfer_agent_name(from), xt_status_name(s),
                      xfer_last_error());
    XT_CHECK(strcmp(name, xfer_agent_name(from)) == 0,
             "xfer_md_load returned name \"%s\", want \"%s\"", name,
             xfer_agent_name(from));
}

xfer_dlist_t xt_dlist(xfer_desc_t *descs, size_t count)
{
    xfer_dlist_t l = { XFER_MEM_DRAM, count, descs };

    return l;
}

#define XT_MAX_REQS 4096
static xfer_req_t *live_reqs[XT_MAX_REQS];

/* Forget a deferred request; false if it was not deferred. */
static bool req_forget(xfer_req_t *req)
{
    for (size_t i = 0; i < XT_MAX_REQS; i++) {
        if (live_reqs[i] == req) {
            live_reqs[i] = NULL;
            return true;
        }
    }
    return false;
}

static void req_cleanup(void *arg)
{
    xfer_req_t *req = arg;
    uint64_t end = xt_now_ms() + 5000;

    if (!req_forget(req))
        return;
    /* A request still on the wire is cancelled; give it a bounded time
     * and leave the rest to xfer_agent_destroy. */
    while (xfer_req_release(req) == XFER_ERR_BUSY) {
        if (xt_now_ms() > end)
            return;
        xfer_req_status(req);
        sleep_us(100);
    }
}

void xt_req_defer(xfer_req_t *req)
{
    size_t i;

    for (i = 0; i < XT_MAX_REQS && live_reqs[i]; i++)
        ;
    if (i == XT_MAX_REQS)
        XT_FAIL_FATAL("too many requests in one test");
    live_reqs[i] = req;
    xt_defer(req_cleanup, req);
}

xfer_status_t xt_req_release(xfer_req_t *req)
{
    req_forget(req);
    return xfer_req_release(req);
}

xfer_status_t xt_wait_req_pump(xfer_req_t *req, xfer_agent_t *const *pump,
                               size_t npump, unsigned timeout_ms)
{
    uint64_t end = xt_now_ms() + timeout_ms;
    unsigned spins = 0;

    for (;;) {
        xfer_status_t s = xfer_req_status(req);

        if (s != XFER_IN_PROG)
            return s;
        for (size_t i = 0; i < npump; i++)
            xfer_progress(pump[i]);
        if (xt_now_ms() > end)
            return XFER_ERR_TIMEOUT;
        if (++spins < 64)
            sched_yield();
        else
            sleep_us(50);
    }
}

xfer_status_t xt_wait_req(xfer_req_t *req, unsigned timeout_ms)
{
    return xt_wait_req_pump(req, NULL, 0, timeout_ms);
}

xfer_req_t *xt_post_to(xfer_agent_t *ini, xfer_op_t op, void *local,
                       size_t len, uint64_t raddr, const char *tgt,
                       const char *notif, xfer_status_t *st)
{
    xfer_desc_t l = {(uintptr_t)local, len, 0}, r = {raddr, len, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *q = NULL;

    *st = xfer_req_create(ini, op, &ll, &rl, tgt, NULL, &q);
    if (*st != XFER_OK)
        return NULL;
    xt_req_defer(q);
    *st = xfer_req_post(q, notif, notif ? strlen(notif) : 0);
    return q;
}

xfer_status_t xt_post_wait(xfer_req_t *req, const void *notif, size_t len,
                           unsigned timeout_ms)
{
    xfer_status_t s = xfer_req_post(req, notif, len);

    if (s != XFER_IN_PROG)
        return s;
    return xt_wait_req(req, timeout_ms);
}

/* ---- notifications ------------------------------------------------------ */

static void notifs_free(void *arg)
{
    xt_notifs_t *n = arg;

    for (size_t i = 0; i < n->count; i++) {
        free(n->items[i].from);
        free(n->items[i].msg);
    }
    free(n->items);
    free(n);
}

xt_notifs_t *xt_notifs_new(void)
{
    xt_notifs_t *n = calloc(1, sizeof(*n));

    if (n == NULL)
        XT_FAIL_FATAL("out of memory");
    xt_defer_late(notifs_free, n);
    return n;
}

static void notif_collect(void *arg, const char *from, const void *msg,
                          size_t len)
{
    xt_notifs_t *n = arg;
    xt_notif_t *m;

    if (n->count == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 64;
        xt_notif_t *items = realloc(n->items, cap * sizeof(*items));

        if (items == NULL)
            abort();
        n->items = items;
        n->cap = cap;
    }
    m = &n->items[n->count];
    m->from = strdup(from ? from : "(null)");
    m->msg = malloc(len + 1);
    if (m->from == NULL || m->msg == NULL)
        abort();
    memcpy(m->msg, msg, len);
    ((char *)m->msg)[len] = '\0';
    m->len = len;
    n->count++;
    if (n->on_msg)
        n->on_msg(n, m);
}

size_t xt_drain_until(xfer_agent_t *agent, xt_notifs_t *n, size_t want,
                      unsigned timeout_ms, bool pump)
{
    uint64_t end = xt_now_ms() + timeout_ms;

    for (;;) {
        xfer_status_t s;

        if (pump)
            xfer_progress(agent);
        s = xfer_notif_drain(agent, notif_collect, n, NULL);
        if (s != XFER_OK) {
            XT_FAIL("xfer_notif_drain: %s: %s", xt_status_name(s),
                    xfer_last_error());
            return n->count;
        }
        if (n->count >= want || xt_now_ms() > end)
            return n->count;
        sleep_us(pump ? 20 : 200);
    }
}

/* ---- metadata blobs ----------------------------------------------------- */

static void json_cleanup(void *arg)
{
    json_decref(arg);
}

json_t *xt_blob_parse(const char *blob, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(blob, len, 0, &err);

    if (root == NULL || !json_is_object(root))
        XT_FAIL_FATAL("metadata blob is not a JSON object: %s", err.text);
    xt_defer_late(json_cleanup, root);
    return root;
}

char *xt_blob_dump(const json_t *root, size_t *len)
{
    char *text = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);

    if (text == NULL)
        XT_FAIL_FATAL("json_dumps failed");
    xt_defer_late(free, text);
    if (len)
        *len = strlen(text);
    return text;
}

char *xt_blob_sign(const char *blob, size_t len, const char *keyfile,
                   size_t *out_len)
{
    static const char head[] = ",\"mac\":\"";
    uint8_t key[4096 + 2], mac[32];
    unsigned mlen = 0;
    size_t klen = 0, plen = len;
    const char *m;
    char *out, *msg;
    FILE *f;

    if (plen > 0 && blob[plen - 1] == '\0')
        plen--;
    /* The document without its signature and closing brace. */
    m = plen > sizeof(head) + 66 ? blob + plen - 66 - (sizeof(head) - 1)
                                 : NULL;
    if (m != NULL && memcmp(m, head, sizeof(head) - 1) == 0)
        plen = (size_t)(m - blob);
    else if (plen > 0)
        plen--;
    if (keyfile == NULL)
        keyfile = getenv("XFER_AUTH_KEY_FILE");
    out = malloc(plen + 80);
    msg = malloc(plen + 11);
    XT_REQUIRE(out != NULL && msg != NULL, "out of memory");
    xt_defer_late(free, out);
    memcpy(out, blob, plen);
    if (keyfile == NULL || keyfile[0] == '\0') {
        strcpy(out + plen, "}");
        free(msg);
        *out_len = plen + 1;
        return out;
    }
    f = fopen(keyfile, "rb");
    XT_REQUIRE(f != NULL, "key file %s: %s", keyfile, strerror(errno));
    klen = fread(key, 1, sizeof(key), f);
    fclose(f);
    if (klen > 0 && key[klen - 1] == '\n')
        klen--;
    memcpy(msg, "xfer-md-v1", 11); /* the label and its NUL */
    memcpy(msg + 11, blob, plen);
    XT_REQUIRE(HMAC(EVP_sha256(), key, (int)klen, (const uint8_t *)msg,
                    plen + 11, mac, &mlen) != NULL && mlen == 32, "HMAC");
    free(msg);
    plen += (size_t)sprintf(out + plen, "%s", head);
    for (int i = 0; i < 32; i++)
        plen += (size_t)sprintf(out + plen, "%02x", mac[i]);
    plen += (size_t)sprintf(out + plen, "\"}");
    *out_len = plen;
    return out;
}

bool xt_json_u64(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;

        errno = 0;
        *out = strtoull(s, &end, 0);
        return errno == 0 && end != s && *end == '\0';
    }
    return false;
}

json_t *xt_json_u64_like(const json_t *old, uint64_t val)
{
    char text[32];

    if (json_is_integer(old))
        return json_integer((json_int_t)val);
    snprintf(text, sizeof(text), "0x%" PRIx64, val);
    return json_string(text);
}

json_t *xt_blob_region(json_t *root, size_t i)
{
    json_t *regions = json_object_get(root, "regions");
    json_t *r = json_array_get(regions, i);

    if (r == NULL || !json_is_object(r))
        XT_FAIL_FATAL("blob has no regions[%zu]", i);
    return r;
}

static const char b64_digits[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void xt_blob_flip_pub(json_t *region, const char *plugin)
{
    json_t *v = json_object_get(json_object_get(region, "pub"), plugin);
    const char *text = json_string_value(v);
    size_t n = text ? strlen(text) : 0, len = 0, o = 0;
    unsigned char *raw;
    char *out;
    uint32_t acc = 0;
    int bits = 0;

    if (n == 0)
        XT_FAIL_FATAL("region has no packed key for %s", plugin);
    raw = malloc(n);
    out = malloc(n + 4);
    XT_REQUIRE(raw && out, "out of memory");
    xt_defer_late(free, raw);
    xt_defer_late(free, out);
    for (size_t i = 0; i < n && text[i] != '='; i++) {
        const char *d = strchr(b64_digits, text[i]);

        XT_REQUIRE(d != NULL && text[i] != '\0', "packed key of %s is not "
                   "base64: %s", plugin, text);
        acc = acc << 6 | (uint32_t)(d - b64_digits);
        if ((bits += 6) >= 8) {
            bits -= 8;
            raw[len++] = (unsigned char)(acc >> bits);
        }
    }
    XT_REQUIRE(len > 0, "empty packed key for %s", plugin);
    raw[len - 1] ^= 0x01;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)raw[i] << 16 |
                     (i + 1 < len ? (uint32_t)raw[i + 1] << 8 : 0) |
                     (i + 2 < len ? raw[i + 2] : 0);

        out[o++] = b64_digits[w >> 18 & 63];
        out[o++] = b64_digits[w >> 12 & 63];
        out[o++] = i + 1 < len ? b64_digits[w >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? b64_digits[w & 63] : '=';
    }
    out[o] = '\0';
    json_object_set_new(json_object_get(region, "pub"), plugin,
                        json_string(out));
}

/* ---- what the library logs -------------------------------------------------- */

static int stderr_saved = -1;
static FILE *stderr_file;

/* Put the real stderr back (also when a test ends inside a capture). */
static void stderr_restore(void *arg)
{
    (void)arg;
    if (stderr_saved < 0)
        return;
    dup2(stderr_saved, 2);
    close(stderr_saved);
    stderr_saved = -1;
    fclose(stderr_file);
    stderr_file = NULL;
}

void xt_stderr_begin(void)
{
    XT_REQUIRE(stderr_saved < 0, "stderr is already captured");
    fflush(stderr);
    stderr_file = tmpfile();
    XT_REQUIRE(stderr_file != NULL, "tmpfile: %s", strerror(errno));
    stderr_saved = dup(2);
    if (stderr_saved < 0 || dup2(fileno(stderr_file), 2) < 0) {
        fclose(stderr_file);
        XT_FAIL_FATAL("redirecting stderr: %s", strerror(errno));
    }
    xt_defer(stderr_restore, NULL);
}

char *xt_stderr_end(void)
{
    off_t n;
    char *text;

    XT_REQUIRE(stderr_saved >= 0, "stderr is not captured");
    fflush(stderr);
    n = lseek(fileno(stderr_file), 0, SEEK_END);
    text = calloc(1, n > 0 ? (size_t)n + 1 : 1);
    if (text != NULL && n > 0 &&
        pread(fileno(stderr_file), text, (size_t)n, 0) != (ssize_t)n)
        text[0] = '\0';
    stderr_restore(NULL);
    XT_REQUIRE(text != NULL, "out of memory");
    xt_defer_late(free, text);
    fputs(text, stderr);
    return text;
}

/* ---- child processes that speak in lines -------------------------------- */

void xt_proc_start(xt_proc_t *p, const char *name, char *const argv[])
{
    int to[2], from[2];

    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    XT_REQUIRE(pipe(to) == 0 && pipe(from) == 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    p->pid = fork();
    XT_REQUIRE(p->pid >= 0, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(to[0], 0);
        dup2(from[1], 1);
        close(to[0]), close(to[1]), close(from[0]), close(from[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    xt_child_add(p->pid);
    close(to[0]);
    close(from[1]);
    p->in = fdopen(to[1], "w");
    p->out = fdopen(from[0], "r");
    XT_REQUIRE(p->in && p->out, "fdopen: %s", strerror(errno));
}

char *xt_proc_line(xt_proc_t *p, char *line, size_t size, unsigned timeout_ms)
{
    struct pollfd pfd = {.fd = fileno(p->out), .events = POLLIN};

    XT_REQUIRE(poll(&pfd, 1, (int)timeout_ms) == 1, "child %s said nothing "
               "within %u ms", p->name, timeout_ms);
    XT_REQUIRE(fgets(line, (int)size, p->out) != NULL, "child %s ended",
               p->name);
    line[strcspn(line, "\n")] = '\0';
    return line;
}

char *xt_proc_ask(xt_proc_t *p, char *line, size_t size, unsigned timeout_ms,
                  const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(p->in, fmt, ap);
    va_end(ap);
    fputc('\n', p->in);
    fflush(p->in);
    return xt_proc_line(p, line, size, timeout_ms);
}

void xt_say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

void xt_proc_end(xt_proc_t *p, unsigned timeout_ms)
{
    int status = 0;
    uint64_t end = xt_now_ms() + timeout_ms;

    if (p->in != NULL) {
        fputs("quit\n", p->in);
        fclose(p->in);
        p->in = NULL;
    }
    if (p->out != NULL) {
        fclose(p->out);
        p->out = NULL;
    }
    if (p->pid <= 0)
        return;
    while (waitpid(p->pid, &status, WNOHANG) == 0) {
        if (xt_now_ms() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &status, 0);
            XT_FAIL("child %s did not exit", p->name);
            break;
        }
        xt_sleep_ms(10);
    }
    xt_child_forget(p->pid);
    if (!p->gone)
        XT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "child %s ended with status 0x%x", p->name, status);
    p->pid = 0;
}

void xt_proc_kill(xt_proc_t *p)
{
    kill(p->pid, SIGKILL);
    p->gone = true;
}
