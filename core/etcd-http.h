/* etcd-http.h - etcd's v3 JSON gateway over libcurl: a call is one POST to
 * the first endpoint that answers.  Used by core/etcd.c and by xfer-bench. */
#ifndef XFER_CORE_ETCD_HTTP_H
#define XFER_CORE_ETCD_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include <xfer/xfer.h>

#define XFER__ETCD_MAX_ENDPOINTS 16

/* The endpoints of one client.  Calls may run from several threads. */
typedef struct xfer__etcd_http {
    char *eps[XFER__ETCD_MAX_ENDPOINTS];
    size_t neps;
    atomic_size_t cur;          /* the endpoint that answered last */
    size_t body_max;            /* the longest answer accepted */
    atomic_bool *stop;          /* NULL, or set: calls in flight give up */
    /* TLS files of every request (xfer__etcd_http_tls); NULL: none, the
     * system's CAs.  The server's certificate and name are always
     * verified. */
    char *cacert, *cert, *key;
} xfer__etcd_http_t;

/* Why a call failed: the sentence, and when no endpoint answered, the
 * endpoint tried last and curl's reason, for callers that word it
 * their own way. */
typedef struct xfer__etcd_http_err {
    char msg[1024];
    const char *ep;             /* NULL unless unreachable */
    char why[CURL_ERROR_SIZE];
} xfer__etcd_http_err_t;

/* A growing response buffer; answers over max fail (over is set). */
typedef struct xfer__etcd_hbuf {
    char *p;
    size_t len, cap, max;
    bool over;
} xfer__etcd_hbuf_t;

/* curl_global_init, once per process. */
void xfer__etcd_http_global_init(void);

/* Parse "http://a:2379,http://b:2379" into h (h zeroed by the caller). */
xfer_status_t xfer__etcd_http_endpoints(xfer__etcd_http_t *h,
                                        const char *list,
                                        xfer__etcd_http_err_t *err);
void xfer__etcd_http_fini(xfer__etcd_http_t *h);

/* The TLS files of h's requests, set after its endpoints: an argument
 * NULL takes its variable (XFER_ETCD_CACERT, XFER_ETCD_CERT,
 * XFER_ETCD_KEY); empty or unset is none.  XFER_ERR_INVALID with a
 * sentence naming the setting (the agent option etcd_cacert, etcd_cert,
 * etcd_key when given as an argument, else the variable) and the file
 * when a file cannot be read, a key comes without its certificate, or a
 * file is set while an endpoint is plain http://. */
xfer_status_t xfer__etcd_http_tls(xfer__etcd_http_t *h, const char *cacert,
                                  const char *cert, const char *key,
                                  xfer__etcd_http_err_t *err);

/* POST body to path ("/v3/kv/range") on the first endpoint that answers,
 * starting with the one that answered last.  On XFER_OK *resp is the
 * parsed answer; otherwise err says why (XFER_ERR_TIMEOUT: the last
 * endpoint timed out, XFER_ERR_BACKEND: refused or an etcd error). */
xfer_status_t xfer__etcd_http_call(xfer__etcd_http_t *h, const char *path,
                                   json_t *body, unsigned timeout_ms,
                                   json_t **resp, xfer__etcd_http_err_t *err);

/* Options every request of h shares (for a caller's own streaming
 * handle, as the watch): URL, body, headers, no proxy, abort on stop,
 * TLS verified with h's files. */
void xfer__etcd_http_easy(xfer__etcd_http_t *h, CURL *c, const char *url,
                          const char *body, struct curl_slist *hdrs,
                          char *errbuf);
/* CURLOPT_WRITEFUNCTION appending to a xfer__etcd_hbuf_t. */
size_t xfer__etcd_hbuf_write(char *ptr, size_t sz, size_t n, void *ud);

/* Leases.  grant: a new lease of ttl_s seconds in *id.  keepalive:
 * XFER_ERR_NOT_FOUND when the lease is gone (expired, revoked).  revoke:
 * its keys go at once. */
xfer_status_t xfer__etcd_lease_grant(xfer__etcd_http_t *h, unsigned ttl_s,
                                     unsigned timeout_ms, int64_t *id,
                                     xfer__etcd_http_err_t *err);
xfer_status_t xfer__etcd_lease_keepalive(xfer__etcd_http_t *h, int64_t id,
                                         unsigned timeout_ms,
                                         xfer__etcd_http_err_t *err);
xfer_status_t xfer__etcd_lease_revoke(xfer__etcd_http_t *h, int64_t id,
                                      unsigned timeout_ms,
                                      xfer__etcd_http_err_t *err);

/* A base64 field decoded into a NUL-terminated malloc'd buffer. */
char *xfer__etcd_unb64(json_t *j, size_t *len);
/* etcd's gateway writes 64-bit integers as strings: either is read. */
int64_t xfer__etcd_jint(json_t *j);
/* A 64-bit integer as the gateway wants it (a string). */
json_t *xfer__etcd_jid(int64_t v);

#endif /* XFER_CORE_ETCD_HTTP_H */
