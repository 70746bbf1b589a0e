/* test-sec-etcd.c - what an agent puts in etcd is only what it publishes
 * (issue 10, break 1): read straight from a real etcd, as anyone with
 * access to it could, and used by a peer that fetches from there. */
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
#define SIZE (256u << 10)

static char endpoint[64];          /* http://127.0.0.1:PORT */
static xt_etcd_t *etcd;

/* The document stored under the agent's key (freed after the test) and
 * the key's version; NULL when absent. */
static char *published(const char *name, long *version)
{
    char key[256], b64[400], req[512];
    static char out[4u << 20];
    json_t *resp, *kv;
    const char *v;
    char *doc = NULL;
    size_t n = (size_t)snprintf(key, sizeof(key), "/xfer/agents/%s", name);
    long got;

    *version = 0;
    XT_REQUIRE(n < sizeof(key) && xfer__b64_encoded_size(n) <= sizeof(b64),
               "name too long");
    xfer__b64_encode(key, n, b64);
    snprintf(req, sizeof(req), "{\"key\":\"%s\"}", b64);
    if (!xt_etcd_post(etcd, "/v3/kv/range", req, out, sizeof(out)))
        return NULL;
    resp = json_loads(out, 0, NULL);
    kv = json_array_get(json_object_get(resp, "kvs"), 0);
    v = json_string_value(json_object_get(kv, "value"));
    if (v != NULL) {
        doc = calloc(1, strlen(v) + 1);
        got = doc ? xfer__b64_decode(v, doc, strlen(v)) : -1;
        if (got < 0) {
            free(doc);
            doc = NULL;
        } else {
            xt_defer_late(free, doc);
            if (json_is_string(json_object_get(kv, "version")))
                *version = strtol(json_string_value(
                                      json_object_get(kv, "version")),
                                  NULL, 10);
        }
    }
    json_decref(resp);
    return doc;
}

/* Wait until the published document contains (or, want false, lacks)
 * text; returns the document. */
static char *wait_doc(const char *name, const char *text, bool want,
                      long *version)
{
    uint64_t end = xt_now_ms() + WAIT_MS;
    char *doc;

    for (;;) {
        doc = published(name, version);
        if (doc != NULL && (strstr(doc, text) != NULL) == want)
            return doc;
        XT_REQUIRE(xt_now_ms() < end, "etcd's document of %s %s '%s' after "
                   "%d ms", name, want ? "still lacks" : "still has", text,
                   WAIT_MS);
        xt_sleep_ms(20);
    }
}

static xfer_mem_t *reg(xfer_agent_t *a, void *buf, size_t len, int publish)
{
    xfer_desc_t d = {(uintptr_t)buf, len, 0};
    xfer_dlist_t list = xt_dlist(&d, 1);
    xfer_mem_opts_t mo;
    xfer_mem_t *m = NULL;

    xfer_mem_opts_init(&mo);
    mo.publish = publish;
    XT_STATUS_FATAL(xfer_mem_register(a, &list, &mo, &m), XFER_OK);
    return m;
}

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

static void test_etcd_publishes_only_published(void)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    const char *name = xt_name("pub");
    unsigned char *pub = xt_alloc(SIZE), *hidden = xt_alloc(SIZE);
    unsigned char *hidden2 = xt_alloc(SIZE), *pub2 = xt_alloc(SIZE);
    unsigned char *local = xt_alloc(SIZE);
    char a_pub[40], a_hidden[40], a_hidden2[40], a_pub2[40], *doc;
    uint64_t seed = xt_seed();
    long v1 = 0, v2 = 0;

    xfer_agent_opts_init(&o);
    o.name = name;
    o.etcd_endpoints = endpoint;
    o.etcd_ttl_s = 5;
    XT_STATUS_FATAL(xfer_agent_create(&o, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS_FATAL(xfer_backend_add(a, "tcp", NULL), XFER_OK);
    xt_fill(pub, SIZE, seed);
    xt_fill(hidden, SIZE, seed + 1);
    reg(a, hidden, SIZE, 0);
    reg(a, pub, SIZE, 1);
    snprintf(a_pub, sizeof(a_pub), "\"0x%" PRIxPTR "\"", (uintptr_t)pub);
    snprintf(a_hidden, sizeof(a_hidden), "\"0x%" PRIxPTR "\"",
             (uintptr_t)hidden);
    snprintf(a_hidden2, sizeof(a_hidden2), "\"0x%" PRIxPTR "\"",
             (uintptr_t)hidden2);
    snprintf(a_pub2, sizeof(a_pub2), "\"0x%" PRIxPTR "\"", (uintptr_t)pub2);
    doc = wait_doc(name, a_pub, true, &v1);
    XT_CHECK(strstr(doc, a_hidden) == NULL, "etcd holds the unpublished "
             "region %s", a_hidden);
    /* An unpublished registration changes nothing there: no new version
     * (the agent republishes within milliseconds when it has to; a
     * second is plenty to see it did not). */
    reg(a, hidden2, SIZE, 0);
    xt_sleep_ms(1000);
    doc = published(name, &v2);
    XT_REQUIRE(doc != NULL, "the key went away");
    XT_CHECK(v2 == v1, "version %ld became %ld after an unpublished "
             "registration", v1, v2);
    XT_CHECK(strstr(doc, a_hidden2) == NULL, "etcd holds the unpublished "
             "region %s", a_hidden2);
    /* A published one does, and still nothing unpublished. */
    reg(a, pub2, SIZE, 1);
    doc = wait_doc(name, a_pub2, true, &v2);
    XT_CHECK(v2 > v1, "version %ld after %ld", v2, v1);
    XT_CHECK(strstr(doc, a_hidden) == NULL && strstr(doc, a_hidden2) == NULL,
             "etcd holds an unpublished region after a republish");
    /* A peer fetching from etcd reads what is published, and cannot
     * even name the rest. */
    {
        xfer_agent_opts_t po;
        xfer_agent_t *p = NULL;
        xfer_desc_t l = {(uintptr_t)local, SIZE, 0};
        xfer_desc_t r = {(uintptr_t)pub, SIZE, 0};
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
        xfer_req_t *req = NULL;

        xfer_agent_opts_init(&po);
        po.name = xt_name("fetcher");
        po.etcd_endpoints = endpoint;
        XT_STATUS_FATAL(xfer_agent_create(&po, &p), XFER_OK);
        xt_defer(agent_free, p);
        XT_STATUS_FATAL(xfer_backend_add(p, "tcp", NULL), XFER_OK);
        xt_register(p, local, SIZE);
        XT_STATUS_FATAL(xfer_md_fetch_etcd(p, name, WAIT_MS), XFER_OK);
        XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_READ, &ll, &rl, name,
                                        NULL, &req), XFER_OK);
        XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
        XT_CHECK(xt_check(local, SIZE, seed) < 0, "READ data differs");
        XT_STATUS(xfer_req_release(req), XFER_OK);
        r.addr = (uintptr_t)hidden;
        XT_STATUS(xfer_req_create(p, XFER_OP_READ, &ll, &rl, name, NULL,
                                  &req), XFER_ERR_INVALID);
        XT_ERR_HAS("is not inside any DRAM region");
    }
    XT_CHECK(xt_check(hidden, SIZE, seed + 1) < 0, "unpublished data "
             "changed");
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_etcd_publishes_only_published),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"etcd publish", tests}};
    int rc;

    (void)argc;
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    etcd = xt_etcd_start();
    if (etcd == NULL)
        return 1;
    snprintf(endpoint, sizeof(endpoint), "%s", xt_etcd_url(etcd));
    rc = xt_run(argv[0], suites, 1);
    xt_etcd_stop(etcd);
    return rc;
}
