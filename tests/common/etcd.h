/* etcd.h - a real etcd for the tests that need one: started on free
 * loopback ports with its data and log in a temporary dir, stopped and
 * brought back empty, and asked over its HTTP API (links libcurl), in the
 * clear or over TLS with client certificates. */
#ifndef XT_ETCD_H
#define XT_ETCD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct xt_etcd xt_etcd_t;

/* Start etcd ($XT_ETCD, else /usr/bin/etcd) and wait until it is healthy.
 * Only before xt_run: skips the program (exit 77) when there is no etcd
 * binary or temporary dir; NULL, with its log copied to stderr, when it
 * did not become healthy within 10 s. */
xt_etcd_t *xt_etcd_start(void);
/* The same over TLS: a throwaway CA, made with the openssl command in its
 * dir, signs its server certificate (IP 127.0.0.1) and a client one; it
 * serves https:// and requires a client certificate the CA signed.  Also
 * skips without openssl ($XT_OPENSSL, else openssl on PATH). */
xt_etcd_t *xt_etcd_start_tls(void);

/* The files of a TLS etcd, NULL for a plain one: the CA that signed its
 * certificates, the client certificate and key, and a CA that signed none
 * of them. */
typedef enum {
    XT_ETCD_CA, XT_ETCD_CERT, XT_ETCD_KEY, XT_ETCD_OTHER_CA
} xt_etcd_file_t;
const char *xt_etcd_file(const xt_etcd_t *etcd, xt_etcd_file_t which);
/* Its client URL, "http://127.0.0.1:PORT" (https:// over TLS); the same
 * across restarts. */
const char *xt_etcd_url(const xt_etcd_t *etcd);
/* The temporary dir of its data dirs and logs, for failure messages. */
const char *xt_etcd_dir(const xt_etcd_t *etcd);
/* Stop it (SIGTERM, SIGKILL after 5 s) as an outage would; idempotent. */
void xt_etcd_halt(xt_etcd_t *etcd);
/* Halt it if running, then start it again on the same ports with a new,
 * empty data dir; false when it did not become healthy within 10 s. */
bool xt_etcd_restart(xt_etcd_t *etcd);
/* POST body (JSON) to path ("/v3/kv/range") and keep up to size - 1
 * bytes of the answer in out; false when etcd did not answer. */
bool xt_etcd_post(xt_etcd_t *etcd, const char *path, const char *body,
                  char *out, size_t size);
/* Halt it, remove its dir and free it; NULL is fine. */
void xt_etcd_stop(xt_etcd_t *etcd);


#endif /* XT_ETCD_H */
