/* test-mem.c - registration against what the agent can move: memory
 * types no backend takes, a registration of one type hiding another at
 * the same address, and shareable memory freed while still registered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/xt.h"

#define BUF 65536

static xfer_status_t reg(xfer_agent_t *a, xfer_mem_type_t type, void *addr,
                         size_t len, xfer_mem_t **m)
{
    xfer_desc_t d = { (uintptr_t)addr, len, 0 };
    xfer_dlist_t l = { type, 1, &d };

    return xfer_mem_register(a, &l, NULL, m);
}

static void test_vram_without_a_backend_for_it(void)
{
    const char *name = xt_name("vr");
    xfer_agent_t *a = xt_agent(name, "ptest", 0);
    xfer_agent_t *bare = xt_agent(xt_name("vb"), NULL, 0);
    char *buf = xt_alloc(BUF);
    xfer_mem_t *m = NULL;

    /* ptest takes DRAM only: the agent could never move this. */
    XT_STATUS(reg(a, XFER_MEM_VRAM, buf, BUF, &m), XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("VRAM", name);
    CU_ASSERT_PTR_NULL(m);
    XT_STATUS(reg(a, XFER_MEM_DRAM, buf, BUF, &m), XFER_OK);
    XT_STATUS(xfer_mem_deregister(a, m), XFER_OK);
    /* With no backend yet, the one added later may take it. */
    XT_STATUS(reg(bare, XFER_MEM_VRAM, buf, BUF, &m), XFER_OK);
    XT_STATUS(xfer_mem_deregister(bare, m), XFER_OK);
}

/* A VRAM registration over a DRAM one (same start, longer, so found
 * first by address) must not make DRAM requests fail. */
static void test_vram_does_not_hide_dram(void)
{
    const char *tname = xt_name("vt");
    xfer_agent_t *tgt = xt_agent(tname, "ptest", 1);
    xfer_agent_t *ini = xt_agent(xt_name("vi"), NULL, 1);
    char *lb = xt_alloc(2 * BUF), *tb = xt_alloc(BUF);
    xfer_desc_t l = { (uintptr_t)lb, BUF, 0 }, r = { (uintptr_t)tb, BUF, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_mem_t *dram, *vram;
    xfer_req_t *req = NULL;
    uint64_t seed = xt_seed();
    long bad;

    XT_STATUS_FATAL(reg(ini, XFER_MEM_DRAM, lb, BUF, &dram), XFER_OK);
    XT_STATUS_FATAL(reg(ini, XFER_MEM_VRAM, lb, 2 * BUF, &vram), XFER_OK);
    XT_STATUS_FATAL(xfer_backend_add(ini, "ptest", NULL), XFER_OK);
    xt_register(tgt, tb, BUF);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tname, NULL,
                                    &req), XFER_OK);
    xt_req_defer(req);
    xt_fill(lb, BUF, seed);
    XT_STATUS(xt_post_wait(req, NULL, 0, 10000), XFER_OK);
    bad = xt_check(tb, BUF, seed);
    XT_CHECK(bad < 0, "byte %ld of the WRITE differs", bad);
    /* Past the DRAM registration only VRAM holds it: refused by type. */
    l.addr = (uintptr_t)lb + BUF;
    XT_STATUS(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tname, NULL,
                              &req), XFER_ERR_INVALID);
    XT_ERR_HAS("local descriptor 0", "DRAM");
}

static void test_free_while_registered(void)
{
    const char *name = xt_name("fr");
    xfer_agent_t *a = xt_agent(name, "ptest", 0);
    char *p = NULL, *q = NULL;
    xfer_mem_t *m = NULL, *other = NULL;

    XT_STATUS_FATAL(xfer_mem_alloc(a, 3 * 4096, 0, (void **)&p), XFER_OK);
    XT_STATUS_FATAL(xfer_mem_alloc(a, 4096, 0, (void **)&q), XFER_OK);
    /* A registration of part of it, and one of other memory. */
    XT_STATUS_FATAL(reg(a, XFER_MEM_DRAM, p + 4096 + 10, 100, &m), XFER_OK);
    XT_STATUS_FATAL(reg(a, XFER_MEM_DRAM, q, 4096, &other), XFER_OK);
    XT_STATUS(xfer_mem_free(a, p), XFER_ERR_BUSY);
    XT_ERR_HAS("still registered", name, "deregister");
    /* Still mapped: writing it is fine. */
    memset(p, 0x5a, 3 * 4096);
    XT_STATUS(xfer_mem_deregister(a, m), XFER_OK);
    XT_STATUS(xfer_mem_free(a, p), XFER_OK);
    /* Gone now. */
    XT_STATUS(xfer_mem_free(a, p), XFER_ERR_NOT_FOUND);
    XT_STATUS(xfer_mem_free(a, q), XFER_ERR_BUSY);
    XT_STATUS(xfer_mem_deregister(a, other), XFER_OK);
    XT_STATUS(xfer_mem_free(a, q), XFER_OK);
    XT_STATUS(xfer_mem_free(NULL, q), XFER_ERR_INVALID);
    XT_STATUS(xfer_mem_free(a, NULL), XFER_OK);
}

static const xt_test_t tests[] = {
    XT_TEST(test_vram_without_a_backend_for_it),
    XT_TEST(test_vram_does_not_hide_dram),
    XT_TEST(test_free_while_registered),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = { { "mem", tests } };

    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    return xt_run("test-mem", suites, 1);
}
