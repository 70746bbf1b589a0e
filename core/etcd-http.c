/* etcd-http.c - etcd's v3 JSON gateway over libcurl: endpoints, one call
 * with fail-over, and the JSON shapes the gateway uses (base64, int64). */
#include <config.h>

#if XFER_HAVE_CURL
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base64.h"
#include "core/etcd-http.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void xfer__etcd_http_global_init(void)
{
    pthread_once(&curl_once, curl_init_once);
}

static xfer_status_t fail(xfer__etcd_http_err_t *err, xfer_status_t st,
                          const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static xfer_status_t fail(xfer__etcd_http_err_t *err, xfer_status_t st,
                          const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return st;
}

/* ---- JSON ------------------------------------------------------------------------ */

char *xfer__etcd_unb64(json_t *j, size_t *len)
{
    const char *s = json_string_value(j);
    size_t cap;
    char *out;
    long n;

    if (s == NULL)
        return NULL;
    cap = strlen(s) / 4 * 3 + 3;
    out = malloc(cap + 1);
    if (out == NULL)
        return NULL;
    n = xfer__b64_decode(s, out, cap);
    if (n < 0) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    *len = (size_t)n;
    return out;
}

int64_t xfer__etcd_jint(json_t *j)
{
    if (json_is_integer(j))
        return (int64_t)json_integer_value(j);
    if (json_is_string(j))
        return strtoll(json_string_value(j), NULL, 10);
    return 0;
}

json_t *xfer__etcd_jid(int64_t v)
{
    char buf[32];

    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return json_string(buf);
}

/* ---- endpoints ------------------------------------------------------------------- */

xfer_status_t xfer__etcd_http_endpoints(xfer__etcd_http_t *h,
                                        const char *list,
                                        xfer__etcd_http_err_t *err)
{
    const char *p = list;

    err->ep = NULL;
    err->why[0] = '\0';
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);

        while (n > 0 && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '/'))
            n--;
        if (n > 0) {
            if (h->neps == XFER__ETCD_MAX_ENDPOINTS)
                return fail(err, XFER_ERR_INVALID, "etcd endpoints: more "
                            "than %d", XFER__ETCD_MAX_ENDPOINTS);
            if ((n < 8 || strncmp(p, "http://", 7) != 0) &&
                (n < 9 || strncmp(p, "https://", 8) != 0))
                return fail(err, XFER_ERR_INVALID, "etcd endpoint '%.*s' is "
                            "not an http:// or https:// URL", (int)n, p);
            if (n > 256)
                return fail(err, XFER_ERR_INVALID, "etcd endpoint longer "
                            "than 256 bytes");
            h->eps[h->neps] = strndup(p, n);
            if (h->eps[h->neps] == NULL)
                return fail(err, XFER_ERR_NOMEM, "out of memory");
            h->neps++;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    if (h->neps == 0)
        return fail(err, XFER_ERR_INVALID, "etcd endpoints '%s' name no "
                    "endpoint", list);
    return XFER_OK;
}

void xfer__etcd_http_fini(xfer__etcd_http_t *h)
{
    for (size_t i = 0; i < h->neps; i++)
        free(h->eps[i]);
    h->neps = 0;
    free(h->cacert);
    free(h->cert);
    free(h->key);
    h->cacert = h->cert = h->key = NULL;
}

/* ---- TLS ------------------------------------------------------------------------- */

/* One TLS file: the argument, else its variable; checked readable now so
 * a wrong path is a sentence at start, not a TLS error at every call. */
static xfer_status_t tls_file(const char *arg, const char *opt,
                              const char *var, char **out,
                              xfer__etcd_http_err_t *err)
{
    const char *path = arg ? arg : getenv(var);
    const char *what = arg ? opt : var;
    struct stat st;
    int fd;

    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return XFER_OK;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, XFER_ERR_INVALID, "%s: cannot read '%s': %s", what,
                    path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, XFER_ERR_INVALID, "%s: '%s' is not a regular file",
                    what, path);
    }
    close(fd);
    *out = strdup(path);
    return *out ? XFER_OK : fail(err, XFER_ERR_NOMEM, "out of memory");
}

xfer_status_t xfer__etcd_http_tls(xfer__etcd_http_t *h, const char *cacert,
                                  const char *cert, const char *key,
                                  xfer__etcd_http_err_t *err)
{
    static const char *const opt[3] = {"agent option etcd_cacert",
                                       "agent option etcd_cert",
                                       "agent option etcd_key"};
    static const char *const var[3] = {"XFER_ETCD_CACERT", "XFER_ETCD_CERT",
                                       "XFER_ETCD_KEY"};
    const char *arg[3] = {cacert, cert, key};
    char **out[3] = {&h->cacert, &h->cert, &h->key};
    size_t set = 0;

    err->ep = NULL;
    err->why[0] = '\0';
    for (size_t i = 0; i < 3; i++) {
        xfer_status_t st = tls_file(arg[i], opt[i], var[i], out[i], err);

        if (st != XFER_OK)
            return st;
        if (*out[i] != NULL)
            set = i + 1;
    }
    if (set == 0)
        return XFER_OK;
    if (h->key != NULL && h->cert == NULL)
        return fail(err, XFER_ERR_INVALID, "%s is set without %s: a client "
                    "key needs its certificate", key ? opt[2] : var[2],
                    cert ? opt[1] : var[1]);
    /* A certificate given for a plain endpoint would protect nothing: say
     * so rather than send metadata in clear to someone who asked for TLS. */
    for (size_t i = 0; i < h->neps; i++)
        if (strncmp(h->eps[i], "https://", 8) != 0)
            return fail(err, XFER_ERR_INVALID, "%s is set, but etcd endpoint "
                        "'%s' is not https://", arg[set - 1] ? opt[set - 1]
                        : var[set - 1], h->eps[i]);
    return XFER_OK;
}

/* ---- HTTP ------------------------------------------------------------------------ */

size_t xfer__etcd_hbuf_write(char *ptr, size_t sz, size_t n, void *ud)
{
    xfer__etcd_hbuf_t *b = ud;
    size_t add = sz * n;

    if (b->len + add > b->max) {
        b->over = true;
        return 0;
    }
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;

        while (cap < b->len + add + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL)
            return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, ptr, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

static int abort_cb(void *ud, curl_off_t a, curl_off_t b, curl_off_t c,
                    curl_off_t d)
{
    xfer__etcd_http_t *h = ud;

    (void)a, (void)b, (void)c, (void)d;
    return h->stop != NULL && atomic_load(h->stop) ? 1 : 0;
}

void xfer__etcd_http_easy(xfer__etcd_http_t *h, CURL *c, const char *url,
                          const char *body, struct curl_slist *hdrs,
                          char *errbuf)
{
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    /* The endpoints are named explicitly: never through a proxy. */
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, abort_cb);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
    /* https:// endpoints: the server's certificate and its name are always
     * checked (libcurl's defaults, set here so they are not lost).  A CA
     * file given is the only trust: no system directory besides it. */
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (h->cacert != NULL) {
        curl_easy_setopt(c, CURLOPT_CAINFO, h->cacert);
        curl_easy_setopt(c, CURLOPT_CAPATH, (char *)NULL);
    }
    if (h->cert != NULL)
        curl_easy_setopt(c, CURLOPT_SSLCERT, h->cert);
    if (h->key != NULL)
        curl_easy_setopt(c, CURLOPT_SSLKEY, h->key);
    errbuf[0] = '\0';
}

/* etcd with --client-cert-auth drops a client without a certificate once
 * TLS is up, and curl's words for that vary with timing (an alert, a
 * reset, a failed getpeername): say what is likely missing. */
static const char *no_cert_hint(const xfer__etcd_http_t *h, const char *ep,
                                CURLcode rc)
{
    if (h->cert != NULL || strncmp(ep, "https://", 8) != 0)
        return "";
    if (rc != CURLE_SEND_ERROR && rc != CURLE_RECV_ERROR &&
        rc != CURLE_SSL_CONNECT_ERROR && rc != CURLE_GOT_NOTHING)
        return "";
    return " (no client certificate was offered: if etcd requires one, set "
           "XFER_ETCD_CERT and XFER_ETCD_KEY)";
}

xfer_status_t xfer__etcd_http_call(xfer__etcd_http_t *h, const char *path,
                                   json_t *body, unsigned timeout_ms,
                                   json_t **resp, xfer__etcd_http_err_t *err)
{
    char *text = json_dumps(body, JSON_COMPACT);
    struct curl_slist *hdrs;
    size_t start = atomic_load(&h->cur);
    CURLcode last = CURLE_OK;
    char errbuf[CURL_ERROR_SIZE], lasterr[CURL_ERROR_SIZE] = "";
    const char *lastep = h->eps[0];
    xfer_status_t st;

    *resp = NULL;
    err->ep = NULL;
    err->why[0] = '\0';
    if (text == NULL)
        return fail(err, XFER_ERR_NOMEM, "out of memory");
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    for (size_t k = 0; k < h->neps; k++) {
        size_t i = (start + k) % h->neps;
        char url[512];
        xfer__etcd_hbuf_t b = {.max = h->body_max};
        CURL *c = curl_easy_init();
        long code = 0;
        CURLcode rc;
        json_t *j, *e;

        if (c == NULL || hdrs == NULL) {
            curl_easy_cleanup(c);
            st = fail(err, XFER_ERR_NOMEM, "out of memory");
            goto out;
        }
        snprintf(url, sizeof(url), "%s%s", h->eps[i], path);
        xfer__etcd_http_easy(h, c, url, text, hdrs, errbuf);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(timeout_ms < 1000 ? timeout_ms : 1000));
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, xfer__etcd_hbuf_write);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_cleanup(c);
        if (rc != CURLE_OK && !b.over) {
            free(b.p);
            last = rc;
            lastep = h->eps[i];
            snprintf(lasterr, sizeof(lasterr), "%s",
                     errbuf[0] ? errbuf : curl_easy_strerror(rc));
            if (rc == CURLE_ABORTED_BY_CALLBACK)
                break;
            continue;
        }
        /* It answered: what it said is the answer, no failing over. */
        atomic_store(&h->cur, i);
        if (b.over) {
            free(b.p);
            st = fail(err, XFER_ERR_BACKEND, "etcd at %s: answer larger "
                      "than %zu bytes", h->eps[i], h->body_max);
            goto out;
        }
        j = b.p ? json_loadb(b.p, b.len, 0, NULL) : NULL;
        free(b.p);
        e = json_object_get(j, "error");
        if (!json_is_object(j) || code != 200 || e != NULL) {
            st = fail(err, XFER_ERR_BACKEND, "etcd at %s%s: %s (HTTP %ld)",
                      h->eps[i], path, json_is_string(e) ?
                      json_string_value(e) : "unexpected answer", code);
            json_decref(j);
            goto out;
        }
        *resp = j;
        st = XFER_OK;
        goto out;
    }
    err->ep = lastep;
    snprintf(err->why, sizeof(err->why), "%s", lasterr);
    st = fail(err, last == CURLE_OPERATION_TIMEDOUT ? XFER_ERR_TIMEOUT
                                                    : XFER_ERR_BACKEND,
              "etcd unreachable: %s: %s%s%s", lastep, lasterr,
              h->neps > 1 ? " (every endpoint tried)" : "",
              no_cert_hint(h, lastep, last));
out:
    curl_slist_free_all(hdrs);
    free(text);
    return st;
}

/* ---- leases ---------------------------------------------------------------------- */

/* A lease call: body in, the answer parsed, err set either way. */
static xfer_status_t lease_call(xfer__etcd_http_t *h, const char *path,
                                json_t *body, unsigned timeout_ms,
                                json_t **resp, xfer__etcd_http_err_t *err)
{
    xfer_status_t st;

    *resp = NULL;
    err->ep = NULL;
    err->why[0] = '\0';
    if (body == NULL)
        return fail(err, XFER_ERR_NOMEM, "out of memory");
    st = xfer__etcd_http_call(h, path, body, timeout_ms, resp, err);
    json_decref(body);
    return st;
}

xfer_status_t xfer__etcd_lease_grant(xfer__etcd_http_t *h, unsigned ttl_s,
                                     unsigned timeout_ms, int64_t *id,
                                     xfer__etcd_http_err_t *err)
{
    json_t *resp;
    xfer_status_t st = lease_call(h, "/v3/lease/grant",
                                  json_pack("{s:I}", "TTL", (json_int_t)ttl_s),
                                  timeout_ms, &resp, err);

    *id = 0;
    if (st != XFER_OK)
        return st;
    *id = xfer__etcd_jint(json_object_get(resp, "ID"));
    json_decref(resp);
    return *id != 0 ? XFER_OK
                    : fail(err, XFER_ERR_BACKEND, "etcd granted no lease");
}

xfer_status_t xfer__etcd_lease_keepalive(xfer__etcd_http_t *h, int64_t id,
                                         unsigned timeout_ms,
                                         xfer__etcd_http_err_t *err)
{
    json_t *resp;
    xfer_status_t st = lease_call(h, "/v3/lease/keepalive",
                                  json_pack("{s:o}", "ID", xfer__etcd_jid(id)),
                                  timeout_ms, &resp, err);
    int64_t ttl;

    if (st != XFER_OK)
        return st;
    ttl = xfer__etcd_jint(json_object_get(json_object_get(resp, "result"),
                                          "TTL"));
    json_decref(resp);
    return ttl > 0 ? XFER_OK
                   : fail(err, XFER_ERR_NOT_FOUND, "lease %" PRId64 " expired",
                          id);
}

xfer_status_t xfer__etcd_lease_revoke(xfer__etcd_http_t *h, int64_t id,
                                      unsigned timeout_ms,
                                      xfer__etcd_http_err_t *err)
{
    json_t *resp;
    xfer_status_t st = lease_call(h, "/v3/lease/revoke",
                                  json_pack("{s:o}", "ID", xfer__etcd_jid(id)),
                                  timeout_ms, &resp, err);

    json_decref(resp);
    return st;
}

#endif /* XFER_HAVE_CURL */
