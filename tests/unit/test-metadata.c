/* test-metadata.c - metadata blobs between agents (ptest backend): full
 * and partial blobs, epochs, a peer's regions and access rights, backends
 * added after a peer was loaded (tcp and uds), and a strict parser that
 * refuses every malformed, truncated or oversized blob with a sentence
 * and leaves the agent working. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xfer/backend.h>

#include "tests/common/xt.h"

#define BUF 65536

/* A target with two registered buffers and an initiator with one. */
typedef struct md_env {
    xfer_agent_t *tgt, *ini;
    char *b1, *b2, *lb;
    xfer_mem_t *m1, *m2, *lm;
    const char *name;
} md_env_t;

static void env_setup(md_env_t *e)
{
    static char name[64];

    snprintf(name, sizeof(name), "%s", xt_name("mdt"));
    e->name = name;
    e->tgt = xt_agent(name, "ptest", 1);
    e->ini = xt_agent(xt_name("mdi"), "ptest", 1);
    e->b1 = xt_alloc(BUF);
    e->b2 = xt_alloc(BUF);
    e->lb = xt_alloc(BUF);
    e->m1 = xt_register(e->tgt, e->b1, BUF);
    e->m2 = xt_register(e->tgt, e->b2, BUF);
    e->lm = xt_register(e->ini, e->lb, BUF);
}

/* Create a WRITE of n bytes from lb+loff to raddr; returns the status. */
static xfer_status_t write_req(md_env_t *e, const char *remote, void *raddr,
                               size_t loff, size_t n, xfer_req_t **req)
{
    xfer_desc_t l = { (uintptr_t)(e->lb + loff), n, 0 };
    xfer_desc_t r = { (uintptr_t)raddr, n, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_status_t s;

    *req = NULL;
    s = xfer_req_create(e->ini, XFER_OP_WRITE, &ll, &rl, remote, NULL, req);
    if (s == XFER_OK)
        xt_req_defer(*req);
    return s;
}

/* A WRITE into dst that must arrive byte for byte. */
static void write_works(md_env_t *e, char *dst, size_t n)
{
    uint64_t seed = xt_seed();
    xfer_req_t *req;
    long bad;

    XT_STATUS_FATAL(write_req(e, e->name, dst, 0, n, &req), XFER_OK);
    xt_fill(e->lb, n, seed);
    XT_STATUS(xt_post_wait(req, NULL, 0, 10000), XFER_OK);
    bad = xt_check(dst, n, seed);
    XT_CHECK(bad < 0, "byte %ld of the WRITE differs", bad);
}

static xfer_status_t load(xfer_agent_t *a, const char *blob, size_t len)
{
    return xfer_md_load(a, blob, len, NULL, 0);
}

/* ---- shape and round trip ------------------------------------------------ */

static void test_md_shape(void)
{
    md_env_t e;
    size_t len;
    char *blob;
    json_t *root, *be, *regs;
    uint64_t v, k1 = 0, k2 = 0;

    env_setup(&e);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    CU_ASSERT_EQUAL(strlen(blob), len);
    root = xt_blob_parse(blob, len);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(root, "format")),
                           "xfer-md");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(root, "version")), 1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(root, "agent")),
                           e.name);
    XT_CHECK(xt_json_u64(json_object_get(root, "epoch"), &v) &&
                 v == xfer_agent_epoch(e.tgt),
             "epoch in blob 0x%" PRIx64 ", agent 0x%" PRIx64, v,
             xfer_agent_epoch(e.tgt));
    be = json_object_get(root, "backends");
    XT_REQUIRE(json_array_size(be) == 1, "backends: %zu", json_array_size(be));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(
                               json_array_get(be, 0), "plugin")), "ptest");
    regs = json_object_get(root, "regions");
    XT_REQUIRE(json_array_size(regs) == 2, "regions: %zu",
               json_array_size(regs));
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(regs, i);
        uint64_t addr = 0, key = 0;

        XT_CHECK(xt_json_u64(json_object_get(r, "addr"), &addr) &&
                     (addr == (uintptr_t)e.b1 || addr == (uintptr_t)e.b2),
                 "regions[%zu].addr 0x%" PRIx64, i, addr);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(r, "len")), BUF);
        XT_CHECK(xt_json_u64(json_object_get(r, "key"), &key) && key != 0,
                 "regions[%zu].key", i);
        XT_CHECK(json_is_object(json_object_get(r, "pub")) &&
                     json_object_get(json_object_get(r, "pub"), "ptest"),
                 "regions[%zu].pub has no ptest entry", i);
        if (i == 0)
            k1 = key;
        else
            k2 = key;
    }
    XT_CHECK(k1 != k2, "two registrations share key 0x%" PRIx64, k1);
}

static void test_md_full_round_trip(void)
{
    md_env_t e;
    size_t len;
    char *blob;
    char name[XFER_NAME_MAX + 1];

    env_setup(&e);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS(e.name);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    XT_STATUS_FATAL(xfer_md_load(e.ini, blob, len, name, sizeof(name)),
                    XFER_OK);
    CU_ASSERT_STRING_EQUAL(name, e.name);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_OK);
    write_works(&e, e.b1, BUF);
    write_works(&e, e.b2 + 100, 1000);
    /* The length may include the NUL as well. */
    XT_STATUS(xfer_md_load(e.ini, blob, len + 1, NULL, 0), XFER_OK);
}

static void test_md_name_buffer(void)
{
    md_env_t e;
    size_t len, need;
    char *blob;
    char small[5], exact[XFER_NAME_MAX + 1], want[64];

    env_setup(&e);
    need = strlen(e.name) + 1;
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    /* Too small: refused with the size needed, and nothing loaded. */
    memset(small, 'x', sizeof(small));
    XT_STATUS(xfer_md_load(e.ini, blob, len, small, sizeof(small)),
              XFER_ERR_INVALID);
    snprintf(want, sizeof(want), "%zu bytes are needed", need);
    XT_ERR_HAS("name buffer of 5 bytes", e.name, want);
    CU_ASSERT_EQUAL(small[0], '\0');
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
    /* One byte short of the NUL is too small as well. */
    XT_STATUS(xfer_md_load(e.ini, blob, len, exact, need - 1),
              XFER_ERR_INVALID);
    XT_ERR_HAS(want);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
    /* Exactly enough, or not wanted at all. */
    XT_STATUS(xfer_md_load(e.ini, blob, len, exact, need), XFER_OK);
    CU_ASSERT_STRING_EQUAL(exact, e.name);
    XT_STATUS(xfer_md_load(e.ini, blob, len, NULL, 0), XFER_OK);
    XT_STATUS(xfer_md_load(e.ini, blob, len, small, 0), XFER_OK);
}

static void test_md_partial(void)
{
    md_env_t e;
    size_t len;
    char *conn, *mem1, *mem2;
    xfer_req_t *req;
    xfer_mem_t *only1[] = { NULL }, *only2[] = { NULL };

    env_setup(&e);
    only1[0] = e.m1;
    only2[0] = e.m2;
    conn = xt_md_get(e.tgt, XFER_MD_CONN, NULL, 0, &len);
    {
        json_t *root = xt_blob_parse(conn, len);

        CU_ASSERT_PTR_NULL(json_object_get(root, "regions"));
        CU_ASSERT_PTR_NOT_NULL(json_object_get(root, "backends"));
    }
    XT_STATUS_FATAL(load(e.ini, conn, len), XFER_OK);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_OK);
    /* Connected, but no region is known yet. */
    XT_STATUS(write_req(&e, e.name, e.b1, 0, 64, &req), XFER_ERR_INVALID);
    XT_ERR_HAS("remote descriptor 0");

    mem1 = xt_md_get(e.tgt, XFER_MD_MEM, only1, 1, &len);
    {
        json_t *root = xt_blob_parse(mem1, len);

        CU_ASSERT_PTR_NULL(json_object_get(root, "backends"));
        CU_ASSERT_EQUAL(json_array_size(json_object_get(root, "regions")), 1);
    }
    XT_STATUS_FATAL(load(e.ini, mem1, len), XFER_OK);
    write_works(&e, e.b1, 4096);
    /* b2 is still unknown: the failing descriptor is named. */
    {
        xfer_desc_t l[2] = { { (uintptr_t)e.lb, 16, 0 },
                             { (uintptr_t)e.lb + 16, 16, 0 } };
        xfer_desc_t r[2] = { { (uintptr_t)e.b1, 16, 0 },
                             { (uintptr_t)e.b2, 16, 0 } };
        xfer_dlist_t ll = xt_dlist(l, 2), rl = xt_dlist(r, 2);

        XT_STATUS(xfer_req_create(e.ini, XFER_OP_WRITE, &ll, &rl, e.name, NULL,
                                  &req), XFER_ERR_INVALID);
        XT_ERR_HAS("remote descriptor 1");
    }
    mem2 = xt_md_get(e.tgt, XFER_MD_MEM, only2, 1, &len);
    XT_STATUS_FATAL(load(e.ini, mem2, len), XFER_OK);
    write_works(&e, e.b2, BUF);
    write_works(&e, e.b1 + 7, 9);
}

static void agent_put(void *a)
{
    xfer_agent_destroy(a);
}

/* xfer_md_fetch copies the name the same way: refused before loading. */
static void test_md_fetch_name_buffer(void)
{
    const char *tname = xt_name("mdl");
    xfer_agent_opts_t o;
    xfer_agent_t *tgt = NULL, *ini = xt_agent(xt_name("mdf"), "ptest", 1);
    char addr[64], small[4], want[64], got[XFER_NAME_MAX + 1];

    xfer_agent_opts_init(&o);
    o.name = tname;
    o.listen_addr = "127.0.0.1:0";
    XT_STATUS_FATAL(xfer_agent_create(&o, &tgt), XFER_OK);
    xt_defer(agent_put, tgt);
    XT_STATUS_FATAL(xfer_backend_add(tgt, "ptest", NULL), XFER_OK);
    XT_STATUS_FATAL(xfer_agent_listen_addr(tgt, addr, sizeof(addr)), XFER_OK);
    XT_STATUS(xfer_agent_listen_addr(tgt, small, sizeof(small)),
              XFER_ERR_INVALID);
    snprintf(want, sizeof(want), "%zu are needed", strlen(addr) + 1);
    XT_ERR_HAS(want);
    XT_STATUS(xfer_md_fetch(ini, addr, NULL, 5000, small, sizeof(small)),
              XFER_ERR_INVALID);
    snprintf(want, sizeof(want), "%zu bytes are needed", strlen(tname) + 1);
    XT_ERR_HAS(tname, want);
    CU_ASSERT_EQUAL(small[0], '\0');
    XT_STATUS(xfer_md_check(ini, tname), XFER_ERR_NOT_FOUND);
    XT_STATUS(xfer_md_fetch(ini, addr, tname, 5000, got, strlen(tname) + 1),
              XFER_OK);
    CU_ASSERT_STRING_EQUAL(got, tname);
    XT_STATUS(xfer_md_check(ini, tname), XFER_OK);
}

/* A blob whose backend list is empty carries no connection info: not
 * enough for an agent not loaded yet, fine as a memory-only update. */
static void test_md_empty_backends(void)
{
    md_env_t e;
    size_t len, elen, nlen;
    char *blob, *empty, *noregs;
    json_t *root;

    env_setup(&e);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    root = xt_blob_parse(blob, len);
    json_object_set_new(root, "backends", json_array());
    empty = xt_blob_dump(root, &elen);
    XT_STATUS(load(e.ini, empty, elen), XFER_ERR_INVALID);
    XT_ERR_HAS(e.name, "no connection info", "empty backend list");
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
    /* Nothing at all to say. */
    json_object_del(root, "regions");
    noregs = xt_blob_dump(root, &nlen);
    XT_STATUS(load(e.ini, noregs, nlen), XFER_ERR_INVALID);
    XT_ERR_HAS("neither");
    /* Once the agent is loaded, the same blob is a partial update. */
    XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
    XT_STATUS(load(e.ini, empty, elen), XFER_OK);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_OK);
    write_works(&e, e.b1, 256);
}

static void test_md_mem_only_unknown_agent(void)
{
    md_env_t e;
    size_t len;
    char *mem = NULL;

    env_setup(&e);
    mem = xt_md_get(e.tgt, XFER_MD_MEM, NULL, 0, &len);
    XT_STATUS(load(e.ini, mem, len), XFER_ERR_INVALID);
    XT_ERR_HAS(e.name, "connection info");
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
}

static void test_md_outside_regions(void)
{
    md_env_t e;
    xfer_req_t *req;

    env_setup(&e);
    xt_md_exchange(e.tgt, XFER_MD_ALL, e.ini);
    /* Crossing the end of b1 by one byte. */
    XT_STATUS(write_req(&e, e.name, e.b1 + BUF - 63, 0, 64, &req),
              XFER_ERR_INVALID);
    XT_ERR_HAS("remote descriptor 0");
    XT_STATUS(write_req(&e, e.name, e.b1 - 1, 0, 2, &req), XFER_ERR_INVALID);
    XT_ERR_HAS("remote descriptor 0");
    /* Local memory outside the local registration. */
    XT_STATUS(write_req(&e, e.name, e.b1, BUF - 8, 16, &req),
              XFER_ERR_INVALID);
    XT_ERR_HAS("local descriptor 0");
    /* The index named is the failing one. */
    {
        xfer_desc_t l[3], r[3];
        xfer_dlist_t ll = xt_dlist(l, 3), rl = xt_dlist(r, 3);

        for (int i = 0; i < 3; i++) {
            l[i] = (xfer_desc_t){ (uintptr_t)e.lb + 100 * (unsigned)i, 50, 0 };
            r[i] = (xfer_desc_t){ (uintptr_t)e.b2 + 100 * (unsigned)i, 50, 0 };
        }
        r[2].addr = (uintptr_t)e.b2 + BUF;
        XT_STATUS(xfer_req_create(e.ini, XFER_OP_READ, &ll, &rl, e.name, NULL,
                                  &req), XFER_ERR_INVALID);
        XT_ERR_HAS("remote descriptor 2");
        r[2].addr = (uintptr_t)e.b2 + 200;
        XT_STATUS(xfer_req_create(e.ini, XFER_OP_READ, &ll, &rl, e.name, NULL,
                                  &req), XFER_OK);
        xt_req_defer(req);
    }
    /* Refusals changed nothing. */
    write_works(&e, e.b1, BUF);
}

/* ---- epochs ------------------------------------------------------------------- */

static void test_md_epoch_replace(void)
{
    md_env_t e;
    size_t len1, len2;
    char *blob1, *blob2;
    xfer_agent_t *t2;
    char *b3 = xt_alloc(BUF);
    xfer_req_t *old, *fresh;

    env_setup(&e);
    blob1 = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len1);
    XT_STATUS_FATAL(load(e.ini, blob1, len1), XFER_OK);
    XT_STATUS_FATAL(write_req(&e, e.name, e.b1, 0, 128, &old), XFER_OK);
    XT_STATUS(xt_post_wait(old, NULL, 0, 10000), XFER_OK);

    /* The same name, started later: a restarted peer. */
    t2 = xt_agent(e.name, "ptest", 1);
    XT_CHECK(xfer_agent_epoch(t2) > xfer_agent_epoch(e.tgt),
             "later agent has epoch 0x%" PRIx64 ", earlier 0x%" PRIx64,
             xfer_agent_epoch(t2), xfer_agent_epoch(e.tgt));
    xt_register(t2, b3, BUF);
    blob2 = xt_md_get(t2, XFER_MD_ALL, NULL, 0, &len2);
    XT_STATUS_FATAL(load(e.ini, blob2, len2), XFER_OK);

    /* Requests on the old epoch are cut off, new ones reach t2. */
    {
        xfer_status_t s = xfer_req_post(old, NULL, 0);

        if (s == XFER_IN_PROG)
            s = xt_wait_req(old, 10000);
        XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);
    }
    XT_STATUS(write_req(&e, e.name, e.b1, 0, 128, &fresh), XFER_ERR_INVALID);
    write_works(&e, b3, BUF);

    /* Going back is refused and changes nothing. */
    XT_STATUS(load(e.ini, blob1, len1), XFER_ERR_INVALID);
    XT_ERR_HAS(e.name, "older");
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_OK);
    write_works(&e, b3 + 1, 100);
}

static char *with_epoch(const char *blob, size_t len, int64_t delta,
                        size_t *outlen)
{
    json_t *root = xt_blob_parse(blob, len);
    json_t *ep = json_object_get(root, "epoch");
    uint64_t v = 0;

    XT_REQUIRE(xt_json_u64(ep, &v), "epoch unreadable");
    json_object_set_new(root, "epoch", xt_json_u64_like(ep, v + (uint64_t)delta));
    return xt_blob_dump(root, outlen);
}

static void test_md_forged_epochs(void)
{
    md_env_t e;
    size_t len, nlen, olen;
    char *blob, *newer, *older;

    env_setup(&e);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    newer = with_epoch(blob, len, 1, &nlen);
    older = with_epoch(blob, len, -1, &olen);
    XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
    XT_STATUS(load(e.ini, blob, len), XFER_OK);     /* same epoch: merge */
    XT_STATUS(load(e.ini, older, olen), XFER_ERR_INVALID);
    XT_ERR_HAS("older");
    XT_STATUS(load(e.ini, newer, nlen), XFER_OK);   /* replaces */
    XT_STATUS(load(e.ini, blob, len), XFER_ERR_INVALID);
    write_works(&e, e.b2, 512);
}

static void test_md_own_blob(void)
{
    md_env_t e;
    size_t len;
    char *blob;

    env_setup(&e);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    XT_STATUS(load(e.tgt, blob, len), XFER_ERR_INVALID);
    XT_ERR_HAS(e.name);
}

static void test_md_invalidate(void)
{
    md_env_t e;
    xfer_req_t *req;
    xfer_status_t s;

    env_setup(&e);
    xt_md_exchange(e.tgt, XFER_MD_ALL, e.ini);
    XT_STATUS_FATAL(write_req(&e, e.name, e.b1, 0, 64, &req), XFER_OK);
    XT_STATUS(xfer_md_invalidate(e.ini, e.name), XFER_OK);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
    s = xfer_req_post(req, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(req, 10000);
    XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);
    XT_STATUS(xfer_md_invalidate(e.ini, e.name), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS(e.name);
    XT_STATUS(xfer_md_invalidate(e.ini, "never-loaded"), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("never-loaded");
    /* Loading again brings it back. */
    xt_md_exchange(e.tgt, XFER_MD_ALL, e.ini);
    write_works(&e, e.b1, 64);
}

static void test_md_get_args(void)
{
    md_env_t e, other;
    char *blob = NULL;
    size_t len = 0;
    xfer_mem_t *foreign[1];

    env_setup(&e);
    env_setup(&other);
    foreign[0] = other.m1;
    XT_STATUS(xfer_md_get(e.tgt, 0, NULL, 0, &blob, &len), XFER_ERR_INVALID);
    XT_STATUS(xfer_md_get(e.tgt, 0x100, NULL, 0, &blob, &len),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_md_get(e.tgt, XFER_MD_ALL, NULL, 0, NULL, &len),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_md_get(e.tgt, XFER_MD_MEM, foreign, 1, &blob, &len),
              XFER_ERR_INVALID);
    XT_ERR_HAS("mems[0]");
    CU_ASSERT_PTR_NULL(blob);
}

static void test_agent_name_limits(void)
{
    char name[XFER_NAME_MAX + 2];
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    memset(name, 'n', sizeof(name));
    name[XFER_NAME_MAX + 1] = '\0';
    xfer_agent_opts_init(&o);
    o.name = name;
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_INVALID);
    CU_ASSERT_PTR_NULL(a);
    name[XFER_NAME_MAX] = '\0';
    a = xt_agent(name, "ptest", 0);
    CU_ASSERT_EQUAL(strlen(xfer_agent_name(a)), XFER_NAME_MAX);
    /* A maximal name survives a round trip. */
    {
        md_env_t e;
        char got[XFER_NAME_MAX + 1];
        size_t len;
        char *blob;

        env_setup(&e);
        blob = xt_md_get(a, XFER_MD_ALL, NULL, 0, &len);
        XT_STATUS(xfer_md_load(e.ini, blob, len, got, sizeof(got)), XFER_OK);
        CU_ASSERT_STRING_EQUAL(got, name);
    }
}

/* ---- listing a peer's regions, access rights ------------------------------ */

static void test_md_regions(void)
{
    md_env_t e;
    xfer_region_info_t info[3];
    size_t count = 99;
    char *lo, *hi;

    env_setup(&e);
    lo = e.b1 < e.b2 ? e.b1 : e.b2;
    hi = e.b1 < e.b2 ? e.b2 : e.b1;
    XT_STATUS(xfer_md_regions(e.ini, e.name, NULL, 0, &count),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS(e.name);
    CU_ASSERT_EQUAL(count, 0);
    xt_md_exchange(e.tgt, XFER_MD_ALL, e.ini);
    /* max 0 counts. */
    XT_STATUS(xfer_md_regions(e.ini, e.name, NULL, 0, &count), XFER_OK);
    CU_ASSERT_EQUAL(count, 2);
    /* max 1 fills the lowest, still counts all. */
    memset(info, 0xee, sizeof(info));
    XT_STATUS(xfer_md_regions(e.ini, e.name, info, 1, &count), XFER_OK);
    CU_ASSERT_EQUAL(count, 2);
    CU_ASSERT_EQUAL(info[0].addr, (uintptr_t)lo);
    CU_ASSERT_EQUAL(info[1].addr, (uintptr_t)0xeeeeeeeeeeeeeeeeull);
    /* Room for more: both, in address order, as registered. */
    XT_STATUS(xfer_md_regions(e.ini, e.name, info, 3, &count), XFER_OK);
    XT_REQUIRE(count == 2, "count %zu", count);
    CU_ASSERT_EQUAL(info[0].addr, (uintptr_t)lo);
    CU_ASSERT_EQUAL(info[1].addr, (uintptr_t)hi);
    for (size_t i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(info[i].len, BUF);
        CU_ASSERT_EQUAL(info[i].type, XFER_MEM_DRAM);
        CU_ASSERT_EQUAL(info[i].dev, 0);
        CU_ASSERT_EQUAL(info[i].access, XFER_ACCESS_READ | XFER_ACCESS_WRITE);
    }
    /* What is listed is what a request may address. */
    write_works(&e, (char *)info[1].addr, BUF);
    XT_STATUS(xfer_md_regions(e.ini, e.name, NULL, 1, &count),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_md_regions(e.ini, NULL, NULL, 0, &count),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_md_regions(e.ini, e.name, NULL, 0, NULL), XFER_ERR_INVALID);
    XT_STATUS(xfer_md_invalidate(e.ini, e.name), XFER_OK);
    XT_STATUS(xfer_md_regions(e.ini, e.name, NULL, 0, &count),
              XFER_ERR_NOT_FOUND);
}

/* The access a region of the blob grants, as xfer_md_regions reports it. */
static unsigned access_loaded(md_env_t *e, json_t *root, const char *value)
{
    xfer_region_info_t info[2];
    size_t len, count = 0;
    json_t *copy = json_deep_copy(root);
    char *m;
    unsigned got = 0;

    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(json_object_get(copy, "regions"), i);

        if (value != NULL)
            json_object_set_new(r, "access", json_string(value));
        else
            json_object_del(r, "access");
    }
    m = xt_blob_dump(copy, &len);
    json_decref(copy);
    XT_STATUS(load(e->ini, m, len), XFER_OK);
    XT_STATUS(xfer_md_regions(e->ini, e->name, info, 2, &count), XFER_OK);
    if (count == 2 && info[0].access == info[1].access)
        got = info[0].access;
    xfer_md_invalidate(e->ini, e->name);
    return got;
}

static void test_md_access(void)
{
    md_env_t e;
    size_t len;
    char *blob;
    json_t *root;

    env_setup(&e);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    root = xt_blob_parse(blob, len);
    /* Published for every registration: peers may do both by default. */
    for (size_t i = 0; i < 2; i++) {
        json_t *a = json_object_get(xt_blob_region(root, i), "access");

        XT_CHECK(json_is_string(a) && strcmp(json_string_value(a), "rw") == 0,
                 "regions[%zu].access is not \"rw\"", i);
    }
    CU_ASSERT_EQUAL(access_loaded(&e, root, "rw"),
                    XFER_ACCESS_READ | XFER_ACCESS_WRITE);
    CU_ASSERT_EQUAL(access_loaded(&e, root, "r"), XFER_ACCESS_READ);
    CU_ASSERT_EQUAL(access_loaded(&e, root, "w"), XFER_ACCESS_WRITE);
    /* A blob from before access rights granted both. */
    CU_ASSERT_EQUAL(access_loaded(&e, root, NULL),
                    XFER_ACCESS_READ | XFER_ACCESS_WRITE);
    /* The same key with other rights at the same epoch is a redefinition. */
    {
        json_t *copy = json_deep_copy(root);
        size_t mlen;
        char *m;

        json_object_set_new(xt_blob_region(copy, 0), "access",
                            json_string("r"));
        m = xt_blob_dump(copy, &mlen);
        json_decref(copy);
        XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
        XT_STATUS(load(e.ini, m, mlen), XFER_ERR_INVALID);
        XT_ERR_HAS("redefines");
    }
}

/* ---- memory types --------------------------------------------------------- */

/* A peer's VRAM region at the address of its DRAM region, longer and so
 * found first by address, must not hide the DRAM one. */
static void test_md_vram_does_not_hide_dram(void)
{
    md_env_t e;
    size_t len, mlen;
    char *blob, *m;
    json_t *root, *regs, *v;
    xfer_region_info_t info[3];
    size_t count = 0;
    xfer_req_t *req;

    env_setup(&e);
    blob = xt_md_get(e.tgt, XFER_MD_ALL, NULL, 0, &len);
    root = xt_blob_parse(blob, len);
    regs = json_object_get(root, "regions");
    v = json_deep_copy(xt_blob_region(root, 0));
    json_object_set_new(v, "type", json_string("VRAM"));
    json_object_set_new(v, "len", json_integer(2 * BUF));
    json_object_set_new(v, "key", json_string("0x1234567812345678"));
    json_array_append_new(regs, v);
    m = xt_blob_dump(root, &mlen);
    XT_STATUS_FATAL(load(e.ini, m, mlen), XFER_OK);
    XT_STATUS(xfer_md_regions(e.ini, e.name, info, 3, &count), XFER_OK);
    CU_ASSERT_EQUAL(count, 3);
    {
        uint64_t addr = 0;

        XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0),
                                               "addr"), &addr), "addr");
        write_works(&e, (char *)(uintptr_t)addr, BUF);
        /* Past the DRAM region, only the VRAM one would contain it. */
        XT_STATUS(write_req(&e, e.name, (char *)(uintptr_t)addr + BUF, 0, 64,
                            &req), XFER_ERR_INVALID);
        XT_ERR_HAS("remote descriptor 0", "DRAM");
    }
}

/* ---- a backend added after the peer was loaded ------------------------------ */

/* Add spec to a; false (and the test passes vacuously) when this build
 * has no such plugin. */
static bool add_if_built(xfer_agent_t *a, const char *spec,
                         xfer_backend_t **b)
{
    xfer_status_t s = xfer_backend_add(a, spec, b);

    if (s == XFER_ERR_NOT_FOUND) {
        fprintf(stderr, "  (no %s plugin in this build: skipped)\n", spec);
        return false;
    }
    XT_STATUS_FATAL(s, XFER_OK);
    return true;
}

/* A WRITE over backend `pin` only; its status (the data arrived when OK). */
static xfer_status_t pinned_write(xfer_agent_t *ini, xfer_backend_t *pin,
                                  const char *target, char *src, char *dst,
                                  size_t n)
{
    xfer_desc_t l = { (uintptr_t)src, n, 0 }, r = { (uintptr_t)dst, n, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_opts_t o;
    xfer_req_t *req = NULL;
    uint64_t seed = xt_seed();
    xfer_status_t s;
    long bad;

    xfer_req_opts_init(&o);
    o.backend = pin;
    s = xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, target, &o, &req);
    if (s != XFER_OK)
        return s;
    xt_req_defer(req);
    CU_ASSERT_PTR_EQUAL(xfer_req_backend(req), pin);
    xt_fill(src, n, seed);
    s = xt_post_wait(req, NULL, 0, 10000);
    if (s == XFER_OK) {
        bad = xt_check(dst, n, seed);
        XT_CHECK(bad < 0, "byte %ld of the WRITE over %s differs", bad,
                 xfer_backend_name(pin));
    }
    return s;
}

/* A target and an initiator over tcp, each with a registered buffer, one
 * of them with uds as well, and the target loaded by the initiator. */
typedef struct bf_env {
    const char *tname;
    xfer_agent_t *tgt, *ini;
    char *tb, *lb;
} bf_env_t;

/* false (the test then passes vacuously) when this build has no uds. */
static bool bf_setup(bf_env_t *e, bool uds_on_target, xfer_backend_t **uds)
{
    e->tname = xt_name("bft");
    e->tgt = xt_agent(e->tname, "tcp", 1);
    e->ini = xt_agent(xt_name("bfi"), "tcp", 1);
    e->tb = xt_alloc(BUF);
    e->lb = xt_alloc(BUF);
    if (!add_if_built(uds_on_target ? e->tgt : e->ini, "uds", uds))
        return false;
    xt_register(e->tgt, e->tb, BUF);
    xt_register(e->ini, e->lb, BUF);
    xt_md_exchange(e->tgt, XFER_MD_ALL, e->ini);
    return true;
}

/* The initiator knew the target over tcp only, then adds uds: the
 * target's regions are reachable over uds at once, no reload needed. */
static void test_md_backend_added_after_load(void)
{
    bf_env_t e;
    xfer_backend_t *uds = NULL, *tcp = NULL;

    if (!bf_setup(&e, true, NULL))
        return;
    XT_STATUS_FATAL(xfer_backend_add(e.ini, "uds", &uds), XFER_OK);
    XT_STATUS(pinned_write(e.ini, uds, e.tname, e.lb, e.tb, BUF), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_find(e.ini, "tcp", &tcp), XFER_OK);
    XT_STATUS(pinned_write(e.ini, tcp, e.tname, e.lb + 100, e.tb + 100, 1000),
              XFER_OK);
    /* A reload of the same blob changes nothing that works. */
    xt_md_exchange(e.tgt, XFER_MD_ALL, e.ini);
    XT_STATUS(pinned_write(e.ini, uds, e.tname, e.lb, e.tb, 4096), XFER_OK);
}

/* The target adds uds after the initiator loaded it: reloading its blob
 * (same epoch) connects uds and unpacks the regions already known. */
static void test_md_reload_reaches_new_backend(void)
{
    bf_env_t e;
    xfer_backend_t *uds = NULL;

    if (!bf_setup(&e, false, &uds))
        return;
    XT_STATUS(pinned_write(e.ini, uds, e.tname, e.lb, e.tb, 64),
              XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("uds", e.tname);
    XT_STATUS_FATAL(xfer_backend_add(e.tgt, "uds", NULL), XFER_OK);
    xt_md_exchange(e.tgt, XFER_MD_ALL, e.ini);
    XT_STATUS(pinned_write(e.ini, uds, e.tname, e.lb, e.tb, BUF), XFER_OK);
}

/* The same in two partial blobs: the regions' uds keys first, kept
 * until the uds connection info arrives. */
static void test_md_partial_then_new_backend(void)
{
    bf_env_t e;
    xfer_backend_t *uds = NULL;

    if (!bf_setup(&e, false, &uds))
        return;
    XT_STATUS_FATAL(xfer_backend_add(e.tgt, "uds", NULL), XFER_OK);
    xt_md_exchange(e.tgt, XFER_MD_MEM, e.ini);
    XT_STATUS(pinned_write(e.ini, uds, e.tname, e.lb, e.tb, 64),
              XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("no connection");
    xt_md_exchange(e.tgt, XFER_MD_CONN, e.ini);
    XT_STATUS(pinned_write(e.ini, uds, e.tname, e.lb, e.tb, BUF), XFER_OK);
}

/* ---- malformed blobs ------------------------------------------------------------- */

/* Follow "a/0/b" through objects and arrays; *parent and *last name the
 * final step.  Returns the value there or NULL. */
static json_t *walk(json_t *root, const char *path, json_t **parent,
                    char *last, size_t last_size)
{
    char buf[128];
    char *save = NULL, *tok, *next;
    json_t *cur = root;

    snprintf(buf, sizeof(buf), "%s", path);
    *parent = NULL;
    for (tok = strtok_r(buf, "/", &save); tok; tok = next) {
        next = strtok_r(NULL, "/", &save);
        *parent = cur;
        snprintf(last, last_size, "%s", tok);
        if (json_is_array(cur))
            cur = json_array_get(cur, (size_t)atoi(tok));
        else
            cur = json_object_get(cur, tok);
        if (cur == NULL && next != NULL)
            return NULL;
    }
    return cur;
}

static void json_put(void *arg)
{
    json_decref(arg);
}

/* Set (value != NULL) or delete the field at path in a copy of root. */
static char *mutate(json_t *root, const char *path, const char *value,
                    size_t *len)
{
    json_t *copy = json_deep_copy(root), *parent, *v = NULL;
    char last[64];
    char *text;

    xt_defer_late(json_put, copy);
    walk(copy, path, &parent, last, sizeof(last));
    XT_REQUIRE(parent != NULL, "bad test path %s", path);
    if (value != NULL) {
        json_error_t err;

        v = json_loads(value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        XT_REQUIRE(v != NULL, "bad test value %s: %s", value, err.text);
    }
    if (json_is_array(parent)) {
        size_t i = (size_t)atoi(last);

        if (v)
            json_array_set_new(parent, i, v);
        else
            json_array_remove(parent, i);
    } else if (v) {
        json_object_set_new(parent, last, v);
    } else {
        json_object_del(parent, last);
    }
    text = xt_blob_dump(copy, len);
    return text;
}

typedef struct mut {
    const char *path;
    const char *value; /* JSON text; NULL deletes the field */
    const char *why;   /* the sentence must contain this */
} mut_t;

static const mut_t muts[] = {
    {"format", NULL, "format"},
    {"format", "\"xfer-mdx\"", "format"},
    {"format", "5", "format"},
    {"version", NULL, "version"},
    {"version", "2", "version 2"},
    {"version", "0", "version"},
    {"version", "\"1\"", "version"},
    {"version", "1.0", "version"},
    {"agent", NULL, "agent name"},
    {"agent", "\"\"", "agent name"},
    {"agent", "5", "agent name"},
    {"agent", "null", "agent name"},
    {"agent", "\"a\\nb\"", "agent name"},
    {"agent", "\"a\\u0000b\"", "metadata"},
    {"epoch", NULL, "epoch"},
    {"epoch", "5", "epoch"},
    {"epoch", "\"123\"", "epoch"},
    {"epoch", "\"0x\"", "epoch"},
    {"epoch", "\"0xzz\"", "epoch"},
    {"epoch", "\"0x1ffffffffffffffff\"", "epoch"},
    {"epoch", "\"0x-1\"", "epoch"},
    {"epoch", "\"0x 1\"", "epoch"},
    {"epoch", "\"0x+1\"", "epoch"},
    {"epoch", "\"0x0x1\"", "epoch"},
    {"extra", "1", "unknown"},
    {"backends", "\"x\"", "backends"},
    {"backends", "{}", "backends"},
    {"backends/0", "5", "backends[0]"},
    {"backends/0/conn", NULL, "backends[0]"},
    {"backends/0/plugin", NULL, "backends[0]"},
    {"backends/0/plugin", "5", "backends[0]"},
    {"backends/0/plugin", "\"Bad-Name\"", "backends[0].plugin"},
    {"backends/0/plugin", "\"\"", "backends[0].plugin"},
    {"backends/0/conn", "\"!!!!\"", "backends[0].conn"},
    {"backends/0/conn", "\"QUJD\\n\"", "backends[0].conn"},
    {"backends/0/conn", "\"QUJ\"", "backends[0].conn"},
    {"backends/0/conn", "7", "backends[0]"},
    {"backends/0/extra", "1", "backends[0]"},
    {"regions", "\"x\"", "regions"},
    {"regions", "{}", "regions"},
    {"regions/0", "5", "regions[0]"},
    {"regions/0", "[]", "regions[0]"},
    {"regions/0/addr", NULL, "regions[0]"},
    {"regions/0/len", NULL, "regions[0]"},
    {"regions/0/type", NULL, "regions[0]"},
    {"regions/0/dev", NULL, "regions[0]"},
    {"regions/0/key", NULL, "regions[0]"},
    {"regions/0/pub", NULL, "regions[0]"},
    {"regions/0/extra", "1", "regions[0]"},
    {"regions/0/addr", "4096", "regions[0].addr"},
    {"regions/0/addr", "\"0x\"", "regions[0].addr"},
    {"regions/0/addr", "\"0x-1000\"", "regions[0].addr"},
    {"regions/0/addr", "\"4096\"", "regions[0].addr"},
    {"regions/0/len", "-1", "regions[0].len"},
    {"regions/0/len", "0", "regions[0].len"},
    {"regions/0/len", "\"16\"", "regions[0].len"},
    {"regions/0/len", "1.5", "regions[0].len"},
    {"regions/0/len", "null", "regions[0].len"},
    {"regions/0/type", "\"HBM\"", "regions[0].type"},
    {"regions/0/type", "1", "regions[0].type"},
    {"regions/0/dev", "-1", "regions[0].dev"},
    {"regions/0/dev", "\"0\"", "regions[0].dev"},
    {"regions/0/key", "\"0x0\"", "regions[0].key"},
    {"regions/0/key", "12345", "regions[0].key"},
    {"regions/0/key", "\"0x-5\"", "regions[0].key"},
    {"regions/0/pub", "\"x\"", "regions[0].pub"},
    {"regions/0/pub", "[]", "regions[0].pub"},
    {"regions/0/pub/ptest", "5", "regions[0].pub"},
    {"regions/0/pub/Bad-Name", "\"\"", "regions[0].pub"},
    {"regions/0/pub/ptest", "\"@@@@\"", "base64"},
    {"regions/0/pub/ptest", "\"eA==\"", "ptest"},
    {"regions/1/len", "0", "regions[1].len"},
    {"regions/0/access", "\"x\"", "regions[0].access"},
    {"regions/0/access", "\"\"", "regions[0].access"},
    {"regions/0/access", "\"RW\"", "regions[0].access"},
    {"regions/0/access", "\"rwx\"", "regions[0].access"},
    {"regions/0/access", "\"wr\"", "regions[0].access"},
    {"regions/0/access", "3", "regions[0].access"},
    {"regions/0/access", "null", "regions[0].access"},
    {"regions/0/pub/ptest", "\"QUJ\"", "base64"},
};

/* One blob with everything in it: every kind of field is present. */
static char *full_blob(md_env_t *e, size_t *len)
{
    env_setup(e);
    return xt_md_get(e->tgt, XFER_MD_ALL, NULL, 0, len);
}

/* A refusal: XFER_ERR_INVALID with a sentence, and nothing loaded. */
static void refused(md_env_t *e, const char *what, const char *blob,
                    size_t len, const char *why)
{
    xfer_status_t s = load(e->ini, blob, len);

    XT_CHECK(s == XFER_ERR_INVALID, "%s: load gave %s, want XFER_ERR_INVALID "
             "(%s)", what, xt_status_name(s), xfer_last_error());
    if (s == XFER_OK) {
        xfer_md_invalidate(e->ini, e->name);
        return;
    }
    XT_CHECK(xfer_last_error()[0] != '\0', "%s: refused without a sentence",
             what);
    if (why != NULL)
        XT_CHECK(strstr(xfer_last_error(), why) != NULL,
                 "%s: sentence \"%s\" does not mention \"%s\"", what,
                 xfer_last_error(), why);
    XT_CHECK(xfer_md_check(e->ini, e->name) == XFER_ERR_NOT_FOUND,
             "%s: a refused blob left agent '%s' loaded", what, e->name);
}

static void test_md_malformed_fields(void)
{
    md_env_t e;
    size_t len;
    char *blob = full_blob(&e, &len);
    json_t *root = xt_blob_parse(blob, len);

    for (size_t i = 0; i < sizeof(muts) / sizeof(muts[0]); i++) {
        char what[160];
        size_t mlen;
        char *m = mutate(root, muts[i].path, muts[i].value, &mlen);

        snprintf(what, sizeof(what), "%s := %s", muts[i].path,
                 muts[i].value ? muts[i].value : "(deleted)");
        refused(&e, what, m, mlen, muts[i].why);
    }
    /* After all of that, the good blob loads and works. */
    XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
    write_works(&e, e.b1, BUF);
}

static void test_md_malformed_structure(void)
{
    static const char *const texts[] = {
        "hello", "{", "[]", "null", "\"xfer-md\"", "{}", "42",
        "{\"format\":\"xfer-md\",\"version\":1}",
    };
    md_env_t e;
    size_t len, mlen;
    char *blob = full_blob(&e, &len), *m;
    json_t *root = xt_blob_parse(blob, len), *copy;
    char longname[XFER_NAME_MAX + 2];

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        refused(&e, texts[i], texts[i], strlen(texts[i]), "metadata");
    refused(&e, "empty", "", 0, NULL);
    XT_STATUS(load(e.ini, NULL, 10), XFER_ERR_INVALID);

    /* Neither backends nor regions. */
    copy = json_deep_copy(root);
    json_object_del(copy, "backends");
    json_object_del(copy, "regions");
    m = xt_blob_dump(copy, &mlen);
    json_decref(copy);
    refused(&e, "no backends, no regions", m, mlen, "neither");

    /* A name one byte too long. */
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    copy = json_deep_copy(root);
    json_object_set_new(copy, "agent", json_string(longname));
    m = xt_blob_dump(copy, &mlen);
    json_decref(copy);
    refused(&e, "name too long", m, mlen, "agent name");

    /* Duplicate keys in the JSON text itself. */
    {
        char *dup = malloc(len + 32);

        XT_REQUIRE(dup != NULL, "out of memory");
        xt_defer_late(free, dup);
        /* {"version":1,...}: repeat a member at the front. */
        snprintf(dup, len + 32, "{\"version\":1,%s", blob + 1);
        refused(&e, "duplicate member", dup, strlen(dup), "metadata");
    }

    /* More backends than a blob may carry, all well formed. */
    copy = json_deep_copy(root);
    {
        json_t *arr = json_array();

        for (int i = 0; i < 40; i++) {
            char pl[16];

            snprintf(pl, sizeof(pl), "p%d", i);
            json_array_append_new(arr, json_pack("{s:s,s:s}", "plugin", pl,
                                                 "conn", "eA=="));
        }
        json_object_set_new(copy, "backends", arr);
    }
    m = xt_blob_dump(copy, &mlen);
    json_decref(copy);
    refused(&e, "40 backends", m, mlen, "backends");

    /* Two backends entries for one plugin. */
    copy = json_deep_copy(root);
    json_array_append(json_object_get(copy, "backends"),
                      json_array_get(json_object_get(copy, "backends"), 0));
    m = xt_blob_dump(copy, &mlen);
    json_decref(copy);
    refused(&e, "repeated plugin", m, mlen, "repeats");

    /* Connection info longer than any plugin may produce. */
    {
        size_t n = 5000, enc = (n + 2) / 3 * 4;
        char *big = malloc(enc + 1);

        XT_REQUIRE(big != NULL, "out of memory");
        xt_defer_late(free, big);
        memset(big, 'A', enc);
        big[enc] = '\0';
        copy = json_deep_copy(root);
        json_object_set_new(json_array_get(json_object_get(copy, "backends"),
                                           0), "conn", json_string(big));
        m = xt_blob_dump(copy, &mlen);
        json_decref(copy);
        refused(&e, "5000-byte conn", m, mlen, "backends[0].conn");
    }

    /* A region that wraps around the address space. */
    copy = json_deep_copy(root);
    {
        json_t *r = json_array_get(json_object_get(copy, "regions"), 0);

        json_object_set_new(r, "addr", json_string("0xffffffffffff0000"));
        json_object_set_new(r, "len", json_integer(0x20000));
    }
    m = xt_blob_dump(copy, &mlen);
    json_decref(copy);
    refused(&e, "wrapping region", m, mlen, "regions[0]");

    XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
    write_works(&e, e.b2, 333);
}

static void test_md_truncated(void)
{
    md_env_t e;
    size_t len, bad = 0;
    char *blob = full_blob(&e, &len);

    for (size_t cut = 0; cut < len; cut++) {
        /* Not NUL-terminated at the cut: a copy of just the prefix. */
        char *p = malloc(cut ? cut : 1);
        xfer_status_t s;

        XT_REQUIRE(p != NULL, "out of memory");
        memcpy(p, blob, cut);
        s = load(e.ini, p, cut);
        free(p);
        if (s != XFER_ERR_INVALID && bad++ < 5)
            XT_FAIL("prefix of %zu/%zu bytes gave %s", cut, len,
                    xt_status_name(s));
    }
    XT_CHECK(bad == 0, "%zu of %zu prefixes not refused", bad, len);
    XT_STATUS(xfer_md_check(e.ini, e.name), XFER_ERR_NOT_FOUND);
    XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
    write_works(&e, e.b1, 100);
}

static void test_md_oversized(void)
{
    md_env_t e;
    size_t len;
    char *blob = full_blob(&e, &len);
    char *big = malloc((size_t)XFER_MD_MAX + 2);

    XT_REQUIRE(big != NULL, "out of memory");
    xt_defer_late(free, big);
    /* A valid document padded with whitespace: only its size is wrong. */
    memcpy(big, blob, len);
    memset(big + len, ' ', (size_t)XFER_MD_MAX + 1 - len);
    big[(size_t)XFER_MD_MAX + 1] = '\0';
    refused(&e, "XFER_MD_MAX + 1 bytes", big, (size_t)XFER_MD_MAX + 1, NULL);
    /* Exactly the limit is allowed. */
    XT_STATUS(load(e.ini, big, XFER_MD_MAX), XFER_OK);
    write_works(&e, e.b1, 10);
}

/* Random damage: never a crash, only XFER_OK or XFER_ERR_INVALID. */
static void test_md_fuzz(void)
{
    md_env_t e;
    size_t len;
    char *blob = full_blob(&e, &len);
    char *p = malloc(len);
    uint64_t st = xt_seed(), seed = st;
    unsigned other = 0;

    XT_REQUIRE(p != NULL, "out of memory");
    xt_defer_late(free, p);
    for (int iter = 0; iter < 3000; iter++) {
        char name[XFER_NAME_MAX + 1];
        int flips = 1 + (int)(xt_rand(&st) % 3);
        xfer_status_t s;

        memcpy(p, blob, len);
        for (int f = 0; f < flips; f++)
            p[xt_rand(&st) % len] = (char)xt_rand(&st);
        s = xfer_md_load(e.ini, p, len, name, sizeof(name));
        if (s == XFER_OK)
            xfer_md_invalidate(e.ini, name);
        else if (s != XFER_ERR_INVALID && other++ < 5)
            XT_FAIL("seed %" PRIu64 " iteration %d: %s (%s)", seed, iter,
                    xt_status_name(s), xfer_last_error());
    }
    XT_CHECK(other == 0, "%u damaged blobs gave codes other than OK/INVALID",
             other);
    XT_STATUS_FATAL(load(e.ini, blob, len), XFER_OK);
    write_works(&e, e.b2, 4096);
}

static const xt_test_t tests[] = {
    XT_TEST(test_md_shape),
    XT_TEST(test_md_full_round_trip),
    XT_TEST(test_md_name_buffer),
    XT_TEST(test_md_fetch_name_buffer),
    XT_TEST(test_md_partial),
    XT_TEST(test_md_empty_backends),
    XT_TEST(test_md_mem_only_unknown_agent),
    XT_TEST(test_md_outside_regions),
    XT_TEST(test_md_epoch_replace),
    XT_TEST(test_md_forged_epochs),
    XT_TEST(test_md_own_blob),
    XT_TEST(test_md_invalidate),
    XT_TEST(test_md_get_args),
    XT_TEST(test_agent_name_limits),
    XT_TEST(test_md_regions),
    XT_TEST(test_md_access),
    XT_TEST(test_md_vram_does_not_hide_dram),
    XT_TEST(test_md_backend_added_after_load),
    XT_TEST(test_md_reload_reaches_new_backend),
    XT_TEST(test_md_partial_then_new_backend),
    XT_TEST(test_md_malformed_fields),
    XT_TEST(test_md_malformed_structure),
    XT_TEST(test_md_truncated),
    XT_TEST(test_md_oversized),
    XT_TEST(test_md_fuzz),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = { { "metadata", tests } };

    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    return xt_run("test-metadata", suites, 1);
}
