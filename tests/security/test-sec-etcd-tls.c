/* test-sec-etcd-tls.c - etcd over TLS (issue 10): agents find each other
 * through an etcd that requires client certificates, and one without a
 * certificate, trusting another CA or naming another host is refused. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base64.h"
#include "tests/common/etcd.h"
#include "tests/common/xt.h"

#define WAIT_MS 10000
#define FAIL_MS 2000            /* a fetch that must fail waits this long */
#define BOUND_MS 15000          /* ... and must be back well within this */
#define SIZE (256u << 10)

static xt_etcd_t *etcd;
static const char *endpoint;       /* https://127.0.0.1:PORT */

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

static void env_unset(void *var)
{
    unsetenv(var);
}

static void env_set(const char *var, const char *val)
{
    setenv(var, val, 1);
    xt_defer(env_unset, (void *)var);
}

/* Options for etcd at url with the given TLS files (NULL: none). */
static void tls_opts(xfer_agent_opts_t *o, const char *name, const char *url,
                     const char *ca, const char *cert, const char *key)
{
    xfer_agent_opts_init(o);
    o->name = name;
    o->etcd_endpoints = url;
    o->etcd_ttl_s = 5;
    o->etcd_cacert = ca;
    o->etcd_cert = cert;
    o->etcd_key = key;
}

/* An agent of o with a tcp backend, destroyed after the test. */
static xfer_agent_t *agent(const xfer_agent_opts_t *o)
{
    xfer_agent_t *a = NULL;

    XT_STATUS_FATAL(xfer_agent_create(o, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS_FATAL(xfer_backend_add(a, "tcp", NULL), XFER_OK);
    return a;
}

/* Whether etcd (asked with the right certificates) holds name's key. */
static bool in_etcd(const char *name)
{
    char key[256], b64[400], req[512], out[1 << 16];
    size_t n = (size_t)snprintf(key, sizeof(key), "/xfer/agents/%s", name);

    XT_REQUIRE(n < sizeof(key) && xfer__b64_encoded_size(n) <= sizeof(b64),
               "name too long");
    xfer__b64_encode(key, n, b64);
    snprintf(req, sizeof(req), "{\"key\":\"%s\"}", b64);
    XT_REQUIRE(xt_etcd_post(etcd, "/v3/kv/range", req, out, sizeof(out)),
               "the test's own call to etcd failed");
    return strstr(out, "\"kvs\"") != NULL;
}

/* ---- settings: refused at xfer_agent_create ------------------------------ */

static void create_fails(const xfer_agent_opts_t *o)
{
    xfer_agent_t *a = NULL;

    XT_STATUS(xfer_agent_create(o, &a), XFER_ERR_INVALID);
    XT_CHECK(a == NULL, "an agent came back with the error");
    printf("  refused: %s\n", xfer_last_error());
}

static void test_tls_missing_file(void)
{
    const char *ca = xt_etcd_file(etcd, XT_ETCD_CA);
    const char *cert = xt_etcd_file(etcd, XT_ETCD_CERT);
    const char *key = xt_etcd_file(etcd, XT_ETCD_KEY);
    char nope[400];
    xfer_agent_opts_t o;

    snprintf(nope, sizeof(nope), "%s/no-such.pem", xt_etcd_dir(etcd));
    /* From the environment: the sentence names the variable. */
    env_set("XFER_ETCD_CACERT", nope);
    tls_opts(&o, xt_name("tls-env"), endpoint, NULL, cert, key);
    create_fails(&o);
    XT_ERR_HAS("XFER_ETCD_CACERT", nope, "No such file");
    env_unset("XFER_ETCD_CACERT");
    /* From the options: it names the option. */
    tls_opts(&o, xt_name("tls-opt"), endpoint, ca, nope, key);
    create_fails(&o);
    XT_ERR_HAS("agent option etcd_cert", nope, "No such file");
    tls_opts(&o, xt_name("tls-opt"), endpoint, ca, cert, nope);
    create_fails(&o);
    XT_ERR_HAS("agent option etcd_key", nope);
    /* A directory is no file either. */
    tls_opts(&o, xt_name("tls-dir"), endpoint, xt_etcd_dir(etcd), cert,
             key);
    create_fails(&o);
    XT_ERR_HAS("agent option etcd_cacert", xt_etcd_dir(etcd),
               "not a regular file");
}

static void test_tls_key_without_cert(void)
{
    xfer_agent_opts_t o;

    env_set("XFER_ETCD_KEY", xt_etcd_file(etcd, XT_ETCD_KEY));
    tls_opts(&o, xt_name("tls-key"), endpoint,
             xt_etcd_file(etcd, XT_ETCD_CA), NULL, NULL);
    create_fails(&o);
    XT_ERR_HAS("XFER_ETCD_KEY is set without XFER_ETCD_CERT");
}

/* Certificates for a plain endpoint would protect nothing: refused rather
 * than metadata sent in the clear to someone who asked for TLS. */
static void test_tls_plain_endpoint(void)
{
    char plain[96];
    xfer_agent_opts_t o;

    snprintf(plain, sizeof(plain), "%s,http://127.0.0.1:1", endpoint);
    tls_opts(&o, xt_name("tls-plain"), plain,
             xt_etcd_file(etcd, XT_ETCD_CA), NULL, NULL);
    create_fails(&o);
    XT_ERR_HAS("agent option etcd_cacert", "http://127.0.0.1:1",
               "is not https://");
}

/* ---- over TLS ----------------------------------------------------------------- */

/* Two agents, one configured through the environment and one through its
 * options, publish and find each other, then move data both ways. */
static void test_tls_transfer(void)
{
    const char *ca = xt_etcd_file(etcd, XT_ETCD_CA);
    const char *cert = xt_etcd_file(etcd, XT_ETCD_CERT);
    const char *key = xt_etcd_file(etcd, XT_ETCD_KEY);
    const char *tname = xt_name("tls-target"), *iname = xt_name("tls-init");
    unsigned char *remote = xt_alloc(SIZE), *local = xt_alloc(SIZE);
    xfer_desc_t l = {(uintptr_t)local, SIZE, 0};
    xfer_desc_t r = {(uintptr_t)remote, SIZE, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    uint64_t seed = xt_seed();
    xfer_agent_opts_t o;
    xfer_agent_t *t, *i;
    xfer_req_t *req = NULL;

    printf("  seed %" PRIu64 "\n", seed);
    env_set("XFER_ETCD_CACERT", ca);
    env_set("XFER_ETCD_CERT", cert);
    env_set("XFER_ETCD_KEY", key);
    tls_opts(&o, tname, endpoint, NULL, NULL, NULL);
    t = agent(&o);
    env_unset("XFER_ETCD_CACERT");
    env_unset("XFER_ETCD_CERT");
    env_unset("XFER_ETCD_KEY");
    tls_opts(&o, iname, endpoint, ca, cert, key);
    i = agent(&o);
    xt_fill(remote, SIZE, seed);
    xt_register(t, remote, SIZE);
    xt_register(i, local, SIZE);
    XT_STATUS_FATAL(xfer_md_fetch_etcd(i, tname, WAIT_MS), XFER_OK);
    XT_STATUS_FATAL(xfer_md_fetch_etcd(t, iname, WAIT_MS), XFER_OK);
    XT_CHECK(in_etcd(tname) && in_etcd(iname), "a key is not in etcd");
    /* READ: the target's bytes arrive byte for byte. */
    XT_STATUS_FATAL(xfer_req_create(i, XFER_OP_READ, &ll, &rl, tname, NULL,
                                    &req), XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_CHECK(xt_check(local, SIZE, seed) < 0, "READ data differs at %ld",
             xt_check(local, SIZE, seed));
    XT_STATUS(xfer_req_release(req), XFER_OK);
    /* WRITE: new bytes land in the target byte for byte. */
    xt_fill(local, SIZE, seed + 1);
    XT_STATUS_FATAL(xfer_req_create(i, XFER_OP_WRITE, &ll, &rl, tname, NULL,
                                    &req), XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_CHECK(xt_check(remote, SIZE, seed + 1) < 0, "WRITE data differs at "
             "%ld", xt_check(remote, SIZE, seed + 1));
    XT_STATUS(xfer_req_release(req), XFER_OK);
}

/* An agent whose etcd calls must fail: a fetch of a published peer comes
 * back within bounds with a sentence naming the endpoint and saying why,
 * and its own key never reached etcd. */
static void fetch_refused(const xfer_agent_opts_t *o, const char *why)
{
    const char *ca = xt_etcd_file(etcd, XT_ETCD_CA);
    const char *tname = xt_name("tls-pub");
    xfer_agent_opts_t to;
    xfer_agent_t *bad;
    xfer_status_t st;
    uint64_t t0;

    tls_opts(&to, tname, endpoint, ca, xt_etcd_file(etcd, XT_ETCD_CERT),
             xt_etcd_file(etcd, XT_ETCD_KEY));
    agent(&to);
    bad = agent(o);
    t0 = xt_now_ms();
    st = xfer_md_fetch_etcd(bad, tname, FAIL_MS);
    XT_CHECK(st == XFER_ERR_BACKEND || st == XFER_ERR_TIMEOUT, "fetch "
             "returned %s: %s", xt_status_name(st), xfer_last_error());
    XT_CHECK(xt_now_ms() - t0 < BOUND_MS, "a %d ms fetch took %" PRIu64
             " ms", FAIL_MS, xt_now_ms() - t0);
    printf("  refused: %s\n", xfer_last_error());
    XT_ERR_HAS("etcd unreachable: ", o->etcd_endpoints, why);
    XT_CHECK(xfer_md_check(bad, tname) != XFER_OK, "the peer was loaded");
    /* The agent has had FAIL_MS to publish (it does within milliseconds
     * when it can): etcd let nothing in. */
    XT_CHECK(!in_etcd(o->name), "etcd holds the key of %s", o->name);
    XT_CHECK(in_etcd(tname), "the well-configured agent did not publish");
}

/* etcd --client-cert-auth: an agent that trusts the server but shows no
 * certificate of its own is turned away. */
static void test_tls_no_client_cert(void)
{
    xfer_agent_opts_t o;

    tls_opts(&o, xt_name("tls-nocert"), endpoint,
             xt_etcd_file(etcd, XT_ETCD_CA), NULL, NULL);
    fetch_refused(&o, "certificate");
}

/* A CA that did not sign the server: the agent refuses the server. */
static void test_tls_wrong_ca(void)
{
    xfer_agent_opts_t o;

    tls_opts(&o, xt_name("tls-otherca"), endpoint,
             xt_etcd_file(etcd, XT_ETCD_OTHER_CA),
             xt_etcd_file(etcd, XT_ETCD_CERT),
             xt_etcd_file(etcd, XT_ETCD_KEY));
    fetch_refused(&o, "SSL certificate problem");
}

/* The right CA, but a host name the certificate does not carry (it names
 * only IP 127.0.0.1): the name is checked too. */
static void test_tls_wrong_host(void)
{
    char url[64];
    const char *port = strrchr(endpoint, ':');
    xfer_agent_opts_t o;

    snprintf(url, sizeof(url), "https://localhost%s", port);
    tls_opts(&o, xt_name("tls-host"), url, xt_etcd_file(etcd, XT_ETCD_CA),
             xt_etcd_file(etcd, XT_ETCD_CERT),
             xt_etcd_file(etcd, XT_ETCD_KEY));
    fetch_refused(&o, "host name 'localhost'");
}

int main(int argc, char **argv)
{
    static const xt_test_t settings[] = {
        XT_TEST(test_tls_missing_file),
        XT_TEST(test_tls_key_without_cert),
        XT_TEST(test_tls_plain_endpoint),
        XT_END,
    };
    static const xt_test_t tls[] = {
        XT_TEST(test_tls_transfer),
        XT_TEST(test_tls_no_client_cert),
        XT_TEST(test_tls_wrong_ca),
        XT_TEST(test_tls_wrong_host),
        XT_END,
    };
    static const xt_suite_t suites[] = {
        {"etcd TLS settings", settings},
        {"etcd over TLS", tls},
    };
    int rc;

    (void)argc;
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    /* The test sets these itself. */
    unsetenv("XFER_ETCD_CACERT");
    unsetenv("XFER_ETCD_CERT");
    unsetenv("XFER_ETCD_KEY");
    signal(SIGPIPE, SIG_IGN);
    etcd = xt_etcd_start_tls();
    if (etcd == NULL)
        return 1;
    endpoint = xt_etcd_url(etcd);
    rc = xt_run(argv[0], suites, 2);
    xt_etcd_stop(etcd);
    return rc;
}
