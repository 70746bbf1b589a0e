/* test-loader.c - plugins that must not load (wrong ABI major, short
 * table, no symbol, wrong name, missing op) each fail with a sentence
 * naming the plugin, its file and the problem; listing survives them;
 * good plugins still load afterwards; a plugin from an older ABI minor
 * loads and its table is never read past its size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "tests/common/xt.h"

#ifndef XT_HAVE_TCP
#define XT_HAVE_TCP 0
#endif

typedef struct broken {
    const char *name;
    const char *why[3]; /* what the sentence must also say */
} broken_t;

static const broken_t broken[] = {
    {"badmajor", {"ABI 2", "speaks 1", NULL}},
    {"short", {"ends before mandatory op 'peer_add'", NULL}},
    {"nosym", {"does not export xfer_backend_nosym_v1", NULL}},
    {"misname", {"'other'", "expected 'misname'", NULL}},
    {"noop", {"lacks mandatory op 'progress'", NULL}},
};
#define NBROKEN (sizeof(broken) / sizeof(broken[0]))

static void check_sentence(const broken_t *b, const char *err)
{
    char file[64];

    snprintf(file, sizeof(file), "tests/plugins/xfer_%s.la", b->name);
    XT_CHECK(err != NULL && strstr(err, b->name) != NULL,
             "%s: error \"%s\" does not name the plugin", b->name,
             err ? err : "(null)");
    XT_CHECK(err != NULL && strstr(err, file) != NULL,
             "%s: error \"%s\" does not name the file %s", b->name,
             err ? err : "(null)", file);
    for (unsigned i = 0; i < 3 && b->why[i]; i++)
        XT_CHECK(err != NULL && strstr(err, b->why[i]) != NULL,
                 "%s: error \"%s\" does not say \"%s\"", b->name,
                 err ? err : "(null)", b->why[i]);
}

static void test_open_broken(void)
{
    for (size_t i = 0; i < NBROKEN; i++) {
        xfer__plugin_t *pl = (xfer__plugin_t *)&pl;

        XT_STATUS(xfer__plugin_open(broken[i].name, &pl), XFER_ERR_LOAD);
        CU_ASSERT_PTR_NULL(pl);
        check_sentence(&broken[i], xfer_last_error());
    }
}

static void test_backend_add_broken(void)
{
    xfer_agent_t *a = xt_agent(xt_name("ld"), NULL, 0);

    for (size_t i = 0; i < NBROKEN; i++) {
        xfer_backend_t *b = NULL;

        XT_STATUS(xfer_backend_add(a, broken[i].name, &b), XFER_ERR_LOAD);
        CU_ASSERT_PTR_NULL(b);
        check_sentence(&broken[i], xfer_last_error());
    }
    /* The failures left the agent whole. */
    XT_STATUS(xfer_backend_add(a, "ptest", NULL), XFER_OK);
}

static void test_open_good_after_bad(void)
{
    xfer__plugin_t *pl = NULL;
    const xfer_backend_ops_t *ops;

    for (size_t i = 0; i < NBROKEN; i++) {
        xfer__plugin_t *bad = NULL;

        xfer__plugin_open(broken[i].name, &bad);
        CU_ASSERT_PTR_NULL(bad);
    }
    XT_STATUS_FATAL(xfer__plugin_open("ptest", &pl), XFER_OK);
    ops = xfer__plugin_ops(pl);
    XT_REQUIRE(ops != NULL, "no ops");
    CU_ASSERT_STRING_EQUAL(ops->hdr.name, "ptest");
    CU_ASSERT_EQUAL(ops->hdr.abi_major, XFER_BACKEND_ABI_MAJOR);
    XT_CHECK(strstr(xfer__plugin_path(pl), "tests/plugins/xfer_ptest.la") !=
                 NULL, "ptest loaded from %s", xfer__plugin_path(pl));
    /* Opening twice is fine: each holds its own reference. */
    {
        xfer__plugin_t *again = NULL;

        XT_STATUS(xfer__plugin_open("ptest", &again), XFER_OK);
        CU_ASSERT_PTR_EQUAL(xfer__plugin_ops(again), ops);
        xfer__plugin_close(again);
    }
    CU_ASSERT_STRING_EQUAL(ops->hdr.name, "ptest");
    xfer__plugin_close(pl);
}

static void test_open_missing(void)
{
    xfer__plugin_t *pl = NULL;

    XT_STATUS(xfer__plugin_open("nosuchplugin", &pl), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("nosuchplugin", "tests/plugins");
    CU_ASSERT_PTR_NULL(pl);
    XT_STATUS(xfer__plugin_open("../plugins/ptest", &pl), XFER_ERR_INVALID);
    XT_STATUS(xfer__plugin_open("", &pl), XFER_ERR_INVALID);
    XT_STATUS(xfer__plugin_open("PTEST", &pl), XFER_ERR_INVALID);
}

static void restore_path(void *arg)
{
    setenv("XFER_PLUGIN_PATH", arg, 1);
    free(arg);
}

/* The search path is taken from the environment at each open. */
static void test_search_path(void)
{
    char *saved = strdup(getenv("XFER_PLUGIN_PATH"));
    xfer__plugin_t *pl = NULL;
    char path[4096];

    XT_REQUIRE(saved != NULL, "out of memory");
    xt_defer(restore_path, saved);
    setenv("XFER_PLUGIN_PATH", "/nonexistent-xfer-dir", 1);
    XT_STATUS(xfer__plugin_open("ptest", &pl), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("/nonexistent-xfer-dir");
    /* Empty entries and missing directories are skipped. */
    snprintf(path, sizeof(path), "::/nonexistent-xfer-dir:%s", saved);
    setenv("XFER_PLUGIN_PATH", path, 1);
    XT_STATUS(xfer__plugin_open("ptest", &pl), XFER_OK);
    xfer__plugin_close(pl);
}

static const xfer_plugin_info_t *find_info(const xfer_plugin_info_t *infos,
                                           size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (infos[i].name && strcmp(infos[i].name, name) == 0)
            return &infos[i];
    return NULL;
}

static void test_plugin_list(void)
{
    xfer_plugin_info_t *infos = NULL;
    size_t n = 0;
    const xfer_plugin_info_t *p;

    XT_STATUS_FATAL(xfer_plugin_list(&infos, &n), XFER_OK);
    XT_REQUIRE(infos != NULL && n >= 1 + NBROKEN, "only %zu plugins listed",
               n);

    p = find_info(infos, n, "ptest");
    XT_REQUIRE(p != NULL, "ptest not listed");
    XT_CHECK(p->error == NULL, "ptest listed with error \"%s\"", p->error);
    CU_ASSERT_STRING_EQUAL(p->version, "ptest-1.0");
    CU_ASSERT_EQUAL(p->abi_major, XFER_BACKEND_ABI_MAJOR);
    /* SW_CHECK unless XFER_PTEST_HWKEYS asks ptest to play hardware. */
    CU_ASSERT_EQUAL(p->caps, XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                    XFER_CAP_SW_CHECK);
    CU_ASSERT_EQUAL(p->mem_types, XFER_MEMBIT(XFER_MEM_DRAM));
    XT_CHECK(strstr(p->path, "tests/plugins/xfer_ptest.la") != NULL,
             "ptest path %s", p->path);
    XT_REQUIRE(p->nparams == 9 && p->params != NULL, "ptest has %zu params",
               p->nparams);
    /* The table as declared, in order, with types and ranges. */
    CU_ASSERT_STRING_EQUAL(p->params[0].name, "flag");
    CU_ASSERT_STRING_EQUAL(p->params[0].type, "bool");
    CU_ASSERT_STRING_EQUAL(p->params[1].name, "level");
    CU_ASSERT_STRING_EQUAL(p->params[1].type, "int");
    CU_ASSERT_STRING_EQUAL(p->params[1].defval, "-2");
    CU_ASSERT_EQUAL(p->params[1].min, -10);
    CU_ASSERT_EQUAL(p->params[1].max, 10);
    CU_ASSERT_STRING_EQUAL(p->params[3].name, "port");
    CU_ASSERT_STRING_EQUAL(p->params[3].type, "uint");
    CU_ASSERT_EQUAL(p->params[3].max, 65535);
    CU_ASSERT_STRING_EQUAL(p->params[4].type, "size");
    CU_ASSERT_STRING_EQUAL(p->params[5].type, "string");
    CU_ASSERT_STRING_EQUAL(p->params[5].doc, "a string");
    /* ABI minor 2: the probe's sentence, whole. */
    XT_CHECK(p->state != NULL &&
                 strcmp(p->state, "in-process loopback: always available") ==
                     0,
             "ptest state \"%s\"", p->state ? p->state : "(null)");

    /* Built before minor 2: loads, says nothing, and the probe lying past
     * its struct_size is never called. */
    p = find_info(infos, n, "oldminor");
    XT_REQUIRE(p != NULL, "oldminor not listed");
    XT_CHECK(p->error == NULL, "oldminor listed with error \"%s\"", p->error);
    CU_ASSERT_EQUAL(p->abi_minor, 1);
    XT_CHECK(p->state == NULL, "oldminor has state \"%s\"",
             p->state ? p->state : "");

    for (size_t i = 0; i < NBROKEN; i++) {
        p = find_info(infos, n, broken[i].name);
        XT_CHECK(p != NULL, "broken plugin %s not listed", broken[i].name);
        if (p == NULL)
            continue;
        XT_CHECK(p->error != NULL, "broken plugin %s listed as loaded",
                 broken[i].name);
        if (p->error)
            check_sentence(&broken[i], p->error);
    }

    p = find_info(infos, n, "tcp");
    if (XT_HAVE_TCP) {
        XT_CHECK(p != NULL, "tcp plugin not listed");
        if (p != NULL) {
            XT_CHECK(p->error == NULL, "tcp listed with error \"%s\"",
                     p->error);
            XT_CHECK(p->caps & XFER_CAP_REMOTE, "tcp lacks XFER_CAP_REMOTE");
            XT_CHECK(p->state == NULL, "tcp has state \"%s\"",
                     p->state ? p->state : "");
            XT_CHECK(find_info(infos, n, "tcp") == p, "tcp listed twice");
        }
    }
    /* Each name once, however many directories hold it. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            XT_CHECK(strcmp(infos[i].name, infos[j].name) != 0,
                     "%s listed twice", infos[i].name);
    xfer_plugin_list_free(infos, n);
    /* Listing left nothing behind that breaks a real load. */
    {
        xfer_agent_t *a = xt_agent(xt_name("ld"), "ptest", 0);

        (void)a;
    }
}

/* xfer_backend_state: the instance's sentence, cut to the buffer. */
static void test_backend_state(void)
{
    xfer_agent_t *a = xt_agent(xt_name("ld"), "ptest:label=hello", 0);
    xfer_backend_t *b = NULL;
    char buf[XFER_STATE_MAX];

    XT_STATUS_FATAL(xfer_backend_find(a, "ptest", &b), XFER_OK);
    XT_STATUS(xfer_backend_state(b, buf, sizeof(buf)), XFER_OK);
    CU_ASSERT_STRING_EQUAL(buf, "label=hello");
    XT_STATUS(xfer_backend_state(b, buf, 4), XFER_OK);
    CU_ASSERT_STRING_EQUAL(buf, "lab");
    XT_STATUS(xfer_backend_state(b, buf, 1), XFER_OK);
    CU_ASSERT_STRING_EQUAL(buf, "");
    XT_STATUS(xfer_backend_state(b, buf, 0), XFER_ERR_INVALID);
    XT_STATUS(xfer_backend_state(b, NULL, 8), XFER_ERR_INVALID);
    XT_STATUS(xfer_backend_state(NULL, buf, sizeof(buf)), XFER_ERR_INVALID);
    if (XT_HAVE_TCP) {
        /* A plugin without the op: refused with a sentence naming it. */
        XT_STATUS_FATAL(xfer_backend_add(a, "tcp", &b), XFER_OK);
        strcpy(buf, "stale");
        XT_STATUS(xfer_backend_state(b, buf, sizeof(buf)),
                  XFER_ERR_NOT_SUPPORTED);
        XT_ERR_HAS("'tcp'", "no state");
        CU_ASSERT_STRING_EQUAL(buf, "");
    }
}

static void test_plugin_list_args(void)
{
    size_t n;
    xfer_plugin_info_t *infos;

    XT_STATUS(xfer_plugin_list(NULL, &n), XFER_ERR_INVALID);
    XT_STATUS(xfer_plugin_list(&infos, NULL), XFER_ERR_INVALID);
    xfer_plugin_list_free(NULL, 0);
}

static const xt_test_t tests[] = {
    XT_TEST(test_open_broken),
    XT_TEST(test_backend_add_broken),
    XT_TEST(test_open_good_after_bad),
    XT_TEST(test_open_missing),
    XT_TEST(test_search_path),
    XT_TEST(test_plugin_list),
    XT_TEST(test_plugin_list_args),
    XT_TEST(test_backend_state),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = { { "loader", tests } };

    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    return xt_run("test-loader", suites, 1);
}
