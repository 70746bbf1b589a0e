/* test-config.c - backend spec strings, JSON parameters and environment
 * overrides: the parser, the table-driven filler, and the same through
 * xfer_backend_add with the ptest plugin (whose connection info echoes
 * its config, so we see what reached the plugin). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base64.h"
#include "core/config.h"
#include "tests/common/xt.h"

/* ---- helpers ------------------------------------------------------------- */

static void json_put(void *arg)
{
    json_decref(arg);
}

/* Parse a spec that must be good; kv freed after the test. */
static json_t *parse_ok(const char *spec, const char *want_plugin)
{
    char *plugin = NULL;
    json_t *kv = NULL;
    xfer_status_t s = xfer__spec_parse(spec, &plugin, &kv);

    XT_REQUIRE(s == XFER_OK, "spec '%s' refused: %s: %s", spec,
               xt_status_name(s), xfer_last_error());
    XT_REQUIRE(plugin != NULL && kv != NULL && json_is_object(kv),
               "spec '%s': no plugin or kv", spec);
    XT_CHECK(strcmp(plugin, want_plugin) == 0, "spec '%s': plugin '%s', want "
             "'%s'", spec, plugin, want_plugin);
    free(plugin);
    xt_defer_late(json_put, kv);
    return kv;
}

/* kv[key] must be the JSON string want. */
static void kv_is(const char *spec, json_t *kv, const char *key,
                  const char *want)
{
    json_t *v = json_object_get(kv, key);

    XT_CHECK(json_is_string(v) && strcmp(json_string_value(v), want) == 0,
             "spec '%s': %s = '%s', want '%s'", spec, key,
             json_is_string(v) ? json_string_value(v) : "(absent)", want);
}

static void env_unset(void *arg)
{
    unsetenv(arg);
}

static void env_set(const char *var, const char *val)
{
    setenv(var, val, 1);
    xt_defer(env_unset, (void *)var);
}

/* ---- spec strings ---------------------------------------------------------- */

static void test_spec_plain(void)
{
    json_t *kv = parse_ok("tcp", "tcp");

    CU_ASSERT_EQUAL(json_object_size(kv), 0);
    kv = parse_ok("ofi_rxm2", "ofi_rxm2");
    CU_ASSERT_EQUAL(json_object_size(kv), 0);
}

static void test_spec_params(void)
{
    const char *spec = "tcp:port=0,nodelay=1";
    json_t *kv = parse_ok(spec, "tcp");

    CU_ASSERT_EQUAL(json_object_size(kv), 2);
    kv_is(spec, kv, "port", "0");
    kv_is(spec, kv, "nodelay", "1");
}

static void test_spec_quoted(void)
{
    static const struct { const char *spec, *want; } cases[] = {
        {"ofi:provider=\"tcp;ofi_rxm\"", "tcp;ofi_rxm"},
        {"x:v=\"a,b;c:d=e\"", "a,b;c:d=e"},
        {"x:v=\"q\\\"uote\\\\d\"", "q\"uote\\d"},  /* \" and \\ inside */
        {"x:v=pre\"mid,dle\"post", "premid,dlepost"}, /* a quoted stretch */
        {"x:v=\"\"", ""},
        {"x:v=\" spaced \"", " spaced "},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *kv = parse_ok(cases[i].spec, cases[i].spec[0] == 'o' ? "ofi"
                                                                     : "x");
        const char *key = cases[i].spec[0] == 'o' ? "provider" : "v";

        CU_ASSERT_EQUAL(json_object_size(kv), 1);
        kv_is(cases[i].spec, kv, key, cases[i].want);
    }
    /* Quoted commas do not end the value; the next key still parses. */
    {
        const char *spec = "x:a=\"1,2\",b=3";
        json_t *kv = parse_ok(spec, "x");

        kv_is(spec, kv, "a", "1,2");
        kv_is(spec, kv, "b", "3");
    }
}

static void test_spec_backslash(void)
{
    const char *spec = "ucx:tls=posix\\,cma,x=\\\"q,y=c\\\\d,z=e\\=f";
    json_t *kv = parse_ok(spec, "ucx");

    CU_ASSERT_EQUAL(json_object_size(kv), 4);
    kv_is(spec, kv, "tls", "posix,cma");
    kv_is(spec, kv, "x", "\"q");
    kv_is(spec, kv, "y", "c\\d");
    kv_is(spec, kv, "z", "e=f");
}

static void test_spec_unquoted_specials(void)
{
    /* Only ',' ends a value: ':', '=' and ';' are ordinary. */
    const char *spec = "x:addr=host:1=2;3,b=B";
    json_t *kv = parse_ok(spec, "x");

    kv_is(spec, kv, "addr", "host:1=2;3");
    kv_is(spec, kv, "b", "B");
}

static void test_spec_empty_value(void)
{
    const char *spec = "x:a=,b=2,c=";
    json_t *kv = parse_ok(spec, "x");

    CU_ASSERT_EQUAL(json_object_size(kv), 3);
    kv_is(spec, kv, "a", "");
    kv_is(spec, kv, "b", "2");
    kv_is(spec, kv, "c", "");
}

/* Spaces are data inside values and never trimmed; around names they
 * are not part of the grammar, so they are refused. */
static void test_spec_spaces(void)
{
    const char *spec = "x:label=a b ,n= 1";
    json_t *kv = parse_ok(spec, "x");
    static const char *const bad[] = {" x", "x :a=1", "x: a=1", "x:a =1",
                                      "x y"};

    kv_is(spec, kv, "label", "a b ");
    kv_is(spec, kv, "n", " 1");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *plugin = NULL;
        json_t *k = NULL;

        XT_STATUS(xfer__spec_parse(bad[i], &plugin, &k), XFER_ERR_INVALID);
        XT_ERR_HAS(bad[i]);
        CU_ASSERT_PTR_NULL(plugin);
        CU_ASSERT_PTR_NULL(k);
    }
}

static void test_spec_bad(void)
{
    static const struct { const char *spec, *why, *what; } cases[] = {
        {":port=1", "no plugin name", NULL},
        {"tcp:", "':'", NULL},
        {"tcp:port", "'='", "port"},
        {"tcp:port1", "'='", "port1"},
        {"tcp:=1", "empty key", NULL},
        {"tcp:a=1,,b=2", "empty key", NULL},
        {"tcp:a=1,", "trailing ','", NULL},
        {"tcp:a=1,a=2", "given twice", "'a'"},
        {"tcp:port=1,nodelay=0,port=2", "given twice", "'port'"},
        {"tcp:a=\"open", "unterminated quote", "'a'"},
        {"tcp:a=\"x\\\"", "unterminated quote", "'a'"},
        {"tcp:a=x\\", "trailing backslash", "'a'"},
        {"tc-p", "'-'", NULL},
        {"tcp;port=1", "';'", NULL},
        {"tcp:po-rt=1", "'='", "po"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *plugin = NULL;
        json_t *kv = NULL;

        XT_STATUS(xfer__spec_parse(cases[i].spec, &plugin, &kv),
                  XFER_ERR_INVALID);
        /* The sentence quotes the spec and says what is wrong. */
        XT_ERR_HAS(cases[i].spec, cases[i].why);
        if (cases[i].what)
            XT_ERR_HAS(cases[i].what);
        CU_ASSERT_PTR_NULL(plugin);
        CU_ASSERT_PTR_NULL(kv);
    }
}

static void test_spec_empty_and_long(void)
{
    char *plugin = NULL, *big;
    json_t *kv = NULL;

    XT_STATUS(xfer__spec_parse("", &plugin, &kv), XFER_ERR_INVALID);
    XT_ERR_HAS("empty");
    XT_STATUS(xfer__spec_parse(NULL, &plugin, &kv), XFER_ERR_INVALID);
    big = malloc(100001);
    XT_REQUIRE(big != NULL, "out of memory");
    xt_defer_late(free, big);
    memcpy(big, "x:a=", 4);
    memset(big + 4, 'v', 100000 - 4);
    big[100000] = '\0';
    XT_STATUS(xfer__spec_parse(big, &plugin, &kv), XFER_ERR_INVALID);
    XT_ERR_HAS("longer");
    CU_ASSERT_PTR_NULL(plugin);
    CU_ASSERT_PTR_NULL(kv);
}

/* ---- filling a config from a table ---------------------------------------- */

typedef struct ucfg {
    int flag;
    int64_t level;
    uint64_t count;
    uint64_t port;
    size_t size;
    const char *label;
} ucfg_t;

static const xfer_param_t uparams[] = {
    {"flag", XFER_PARAM_BOOL, "true", "b", offsetof(ucfg_t, flag), 1, 0},
    {"level", XFER_PARAM_INT, "-3", "i", offsetof(ucfg_t, level), -10, 10},
    {"count", XFER_PARAM_UINT, "5", "u", offsetof(ucfg_t, count), 1, 0},
    {"port", XFER_PARAM_UINT, "8080", "p", offsetof(ucfg_t, port), 0, 65535},
    {"size", XFER_PARAM_SIZE, "4K", "s", offsetof(ucfg_t, size), 1, 0},
    {"label", XFER_PARAM_STRING, "def,ault", "l", offsetof(ucfg_t, label), 1,
     0},
};
#define NUPARAMS (sizeof(uparams) / sizeof(uparams[0]))

static xfer__config_t cfg;

static void cfg_cleanup(void *arg)
{
    (void)arg;
    xfer__config_free(&cfg);
}

/* Fill from kv (a JSON object text, or NULL); returns the status. */
static xfer_status_t fill_json(const char *json)
{
    json_t *kv = NULL;
    xfer_status_t s;

    if (json != NULL) {
        json_error_t err;

        kv = json_loads(json, 0, &err);
        XT_REQUIRE(kv != NULL, "bad test JSON %s: %s", json, err.text);
    }
    xfer__config_free(&cfg);
    s = xfer__config_fill("utest", uparams, NUPARAMS, sizeof(ucfg_t), kv, &cfg);
    json_decref(kv);
    xt_defer(cfg_cleanup, NULL);
    if (s != XFER_OK)
        XT_CHECK(cfg.data == NULL && cfg.nstrings == 0,
                 "a failed fill left data in the config");
    return s;
}

static xfer_status_t fill_spec(const char *spec)
{
    char *plugin = NULL;
    json_t *kv = NULL;
    xfer_status_t s = xfer__spec_parse(spec, &plugin, &kv);

    XT_REQUIRE(s == XFER_OK, "spec '%s' refused: %s", spec, xfer_last_error());
    xfer__config_free(&cfg);
    s = xfer__config_fill(plugin, uparams, NUPARAMS, sizeof(ucfg_t), kv, &cfg);
    free(plugin);
    json_decref(kv);
    xt_defer(cfg_cleanup, NULL);
    return s;
}

static const ucfg_t *U(void)
{
    XT_REQUIRE(cfg.data != NULL, "no config data");
    return cfg.data;
}

static void test_fill_defaults(void)
{
    XT_STATUS_FATAL(fill_json(NULL), XFER_OK);
    CU_ASSERT_EQUAL(U()->flag, 1);
    CU_ASSERT_EQUAL(U()->level, -3);
    CU_ASSERT_EQUAL(U()->count, 5);
    CU_ASSERT_EQUAL(U()->port, 8080);
    CU_ASSERT_EQUAL(U()->size, 4096);
    XT_CHECK(U()->label && strcmp(U()->label, "def,ault") == 0,
             "label default '%s'", U()->label ? U()->label : "(null)");
    /* An empty object is the same as none. */
    XT_STATUS_FATAL(fill_json("{}"), XFER_OK);
    CU_ASSERT_EQUAL(U()->port, 8080);
}

static void test_fill_from_spec(void)
{
    XT_STATUS_FATAL(fill_spec("utest:flag=off,level=-10,"
                              "count=18446744073709551615,port=65535,"
                              "size=64M,label=\"a,b;c=d\\\"e\""),
                    XFER_OK);
    CU_ASSERT_EQUAL(U()->flag, 0);
    CU_ASSERT_EQUAL(U()->level, -10);
    CU_ASSERT_EQUAL(U()->count, UINT64_MAX);
    CU_ASSERT_EQUAL(U()->port, 65535);
    CU_ASSERT_EQUAL(U()->size, (size_t)64 << 20);
    XT_CHECK(strcmp(U()->label, "a,b;c=d\"e") == 0, "label '%s'", U()->label);
    /* Only what the spec names changes. */
    XT_STATUS_FATAL(fill_spec("utest:port=1"), XFER_OK);
    CU_ASSERT_EQUAL(U()->port, 1);
    CU_ASSERT_EQUAL(U()->level, -3);
    XT_CHECK(strcmp(U()->label, "def,ault") == 0, "label '%s'", U()->label);
}

static void test_fill_bool_spellings(void)
{
    static const struct { const char *text; int want; } good[] = {
        {"1", 1}, {"0", 0}, {"true", 1}, {"false", 0}, {"yes", 1},
        {"no", 0}, {"on", 1}, {"off", 0}, {"TRUE", 1}, {"Off", 0},
    };
    static const char *const bad[] = {"2", "maybe", "", "tru", "yes ",
                                      "-1", "0x1"};
    char json[96];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(json, sizeof(json), "{\"flag\": \"%s\"}", good[i].text);
        if (XT_STATUS(fill_json(json), XFER_OK))
            XT_CHECK(U()->flag == good[i].want, "flag '%s' gave %d",
                     good[i].text, U()->flag);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json), "{\"flag\": \"%s\"}", bad[i]);
        XT_STATUS(fill_json(json), XFER_ERR_CONFIG);
        XT_ERR_HAS("'flag'", "utest", "bool");
    }
}

static void test_fill_int(void)
{
    static const struct { const char *text; int64_t want; } good[] = {
        {"-10", -10}, {"10", 10}, {"0", 0}, {"-1", -1}, {"7", 7},
    };
    static const char *const bad_type[] = {"abc", "1.5", "", "5x", "- 1",
                                           "99999999999999999999"};
    static const char *const bad_range[] = {"-11", "11", "1000"};
    char json[96];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(json, sizeof(json), "{\"level\": \"%s\"}", good[i].text);
        if (XT_STATUS(fill_json(json), XFER_OK))
            XT_CHECK(U()->level == good[i].want, "level '%s' gave %" PRId64,
                     good[i].text, U()->level);
    }
    for (size_t i = 0; i < sizeof(bad_type) / sizeof(bad_type[0]); i++) {
        snprintf(json, sizeof(json), "{\"level\": \"%s\"}", bad_type[i]);
        XT_STATUS(fill_json(json), XFER_ERR_CONFIG);
        XT_ERR_HAS("'level'", "utest");
    }
    for (size_t i = 0; i < sizeof(bad_range) / sizeof(bad_range[0]); i++) {
        snprintf(json, sizeof(json), "{\"level\": \"%s\"}", bad_range[i]);
        XT_STATUS(fill_json(json), XFER_ERR_CONFIG);
        XT_ERR_HAS("'level'", "utest", "range", "-10", "10");
    }
}

static void test_fill_uint(void)
{
    static const char *const bad[] = {"-1", "18446744073709551616", "abc",
                                      "", "1k", " 5"};

    XT_STATUS_FATAL(fill_json("{\"count\": \"0\"}"), XFER_OK);
    CU_ASSERT_EQUAL(U()->count, 0);
    XT_STATUS_FATAL(fill_json("{\"count\": \"18446744073709551615\"}"),
                    XFER_OK);
    CU_ASSERT_EQUAL(U()->count, UINT64_MAX);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[96];

        snprintf(json, sizeof(json), "{\"count\": \"%s\"}", bad[i]);
        XT_STATUS(fill_json(json), XFER_ERR_CONFIG);
        XT_ERR_HAS("'count'", "utest");
    }
    XT_STATUS(fill_json("{\"port\": \"65536\"}"), XFER_ERR_CONFIG);
    XT_ERR_HAS("'port'", "utest", "65536", "[0, 65535]");
    XT_STATUS(fill_json("{\"port\": \"abc\"}"), XFER_ERR_CONFIG);
    XT_ERR_HAS("'port'", "abc");
}

static void test_fill_size(void)
{
    static const struct { const char *text; size_t want; } good[] = {
        {"0", 0}, {"17", 17}, {"4K", 4096}, {"4k", 4096},
        {"64M", (size_t)64 << 20}, {"1G", (size_t)1 << 30},
        {"3g", (size_t)3 << 30},
    };
    static const char *const bad[] = {"4X", "K", "-1", "4KB", "1.5M", "",
                                      "17179869184G", "4 K"};
    char json[96];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(json, sizeof(json), "{\"size\": \"%s\"}", good[i].text);
        if (XT_STATUS(fill_json(json), XFER_OK))
            XT_CHECK(U()->size == good[i].want, "size '%s' gave %zu",
                     good[i].text, U()->size);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json), "{\"size\": \"%s\"}", bad[i]);
        XT_STATUS(fill_json(json), XFER_ERR_CONFIG);
        XT_ERR_HAS("'size'", "utest");
    }
}

static void test_fill_string(void)
{
    XT_STATUS_FATAL(fill_json("{\"label\": \"\"}"), XFER_OK);
    XT_CHECK(U()->label != NULL && U()->label[0] == '\0', "empty label");
    XT_STATUS_FATAL(fill_json("{\"label\": \"x,y;z=\\\"q\\\\ \\u00e9\"}"),
                    XFER_OK);
    XT_CHECK(strcmp(U()->label, "x,y;z=\"q\\ \xc3\xa9") == 0, "label '%s'",
             U()->label);
}

static void test_fill_unknown_key(void)
{
    XT_STATUS(fill_json("{\"bogus\": \"1\"}"), XFER_ERR_CONFIG);
    XT_ERR_HAS("'bogus'", "utest");
    /* Known keys beside it do not rescue it. */
    XT_STATUS(fill_json("{\"port\": \"1\", \"Port\": \"2\"}"),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("'Port'", "utest");
}

static void test_fill_json_types(void)
{
    static const struct { const char *json, *key; } bad[] = {
        {"{\"port\": \"x\"}", "'port'"},
        {"{\"port\": true}", "'port'"},
        {"{\"port\": 1.5}", "'port'"},
        {"{\"port\": -1}", "'port'"},
        {"{\"port\": 70000}", "'port'"},
        {"{\"port\": null}", "'port'"},
        {"{\"count\": [1]}", "'count'"},
        {"{\"level\": {}}", "'level'"},
        {"{\"level\": 11}", "'level'"},
        {"{\"label\": 5}", "'label'"},
        {"{\"flag\": 2}", "'flag'"},
        {"{\"flag\": [true]}", "'flag'"},
        {"{\"size\": null}", "'size'"},
        {"{\"size\": -4096}", "'size'"},
    };

    XT_STATUS_FATAL(fill_json("{\"flag\": false, \"level\": -7, \"count\": 123,"
                              " \"port\": 22, \"size\": 8192, \"label\": \"x\"}"),
                    XFER_OK);
    CU_ASSERT_EQUAL(U()->flag, 0);
    CU_ASSERT_EQUAL(U()->level, -7);
    CU_ASSERT_EQUAL(U()->count, 123);
    CU_ASSERT_EQUAL(U()->port, 22);
    CU_ASSERT_EQUAL(U()->size, 8192);
    XT_CHECK(strcmp(U()->label, "x") == 0, "label '%s'", U()->label);
    /* Strings are parsed as in a spec. */
    XT_STATUS_FATAL(fill_json("{\"flag\": \"on\", \"size\": \"2M\"}"), XFER_OK);
    CU_ASSERT_EQUAL(U()->flag, 1);
    CU_ASSERT_EQUAL(U()->size, (size_t)2 << 20);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        XT_STATUS(fill_json(bad[i].json), XFER_ERR_CONFIG);
        XT_ERR_HAS(bad[i].key, "utest");
    }
    XT_STATUS(fill_json("{\"port\": 70000}"), XFER_ERR_CONFIG);
    XT_ERR_HAS("[0, 65535]");
}

static void test_fill_env_override(void)
{
    env_set("XFER_UTEST_PORT", "77");
    env_set("XFER_UTEST_LABEL", "from env");
    XT_STATUS_FATAL(fill_spec("utest:port=5,level=4,label=spec"), XFER_OK);
    CU_ASSERT_EQUAL(U()->port, 77);   /* environment wins over the spec */
    CU_ASSERT_EQUAL(U()->level, 4);   /* untouched by the environment */
    XT_CHECK(strcmp(U()->label, "from env") == 0, "label '%s'", U()->label);
    /* And over the default. */
    XT_STATUS_FATAL(fill_json(NULL), XFER_OK);
    CU_ASSERT_EQUAL(U()->port, 77);
    /* Lower-case variable names are not ours. */
    env_unset("XFER_UTEST_PORT");
    env_set("xfer_utest_level", "9");
    XT_STATUS_FATAL(fill_json(NULL), XFER_OK);
    CU_ASSERT_EQUAL(U()->level, -3);
    CU_ASSERT_EQUAL(U()->port, 8080);
}

static void test_fill_env_bad(void)
{
    env_set("XFER_UTEST_PORT", "abc");
    XT_STATUS(fill_spec("utest:port=5"), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_PORT", "'port'", "abc");
    env_unset("XFER_UTEST_PORT");
    env_set("XFER_UTEST_LEVEL", "50");
    XT_STATUS(fill_json(NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_LEVEL", "'level'", "[-10, 10]");
}

/* A variable that names no parameter is a typo, refused by name. */
static void test_fill_env_unknown(void)
{
    env_set("XFER_UTEST_PROT", "77");
    XT_STATUS(fill_spec("utest:port=5"), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_PROT", "utest");
    XT_STATUS(fill_json(NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_PROT", "utest");
    env_unset("XFER_UTEST_PROT");
    /* Empty values and keys count as well. */
    env_set("XFER_UTEST_", "");
    XT_STATUS(fill_json(NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_", "utest");
    env_unset("XFER_UTEST_");
    /* A parameter's name, whole, and nothing else of another plugin. */
    env_set("XFER_UTEST_PORTS", "1");
    XT_STATUS(fill_json(NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_PORTS");
    env_unset("XFER_UTEST_PORTS");
    env_set("XFER_UTESTX_PORT", "1");
    env_set("XFER_UTES_PORT", "1");
    XT_STATUS(fill_json(NULL), XFER_OK);
    CU_ASSERT_EQUAL(U()->port, 8080);
}

/* The core's own variables share prefixes with plugins that could be
 * named plugin, etcd or log: they are never a plugin's typo. */
static void test_fill_env_core_names(void)
{
    static const char *const plugins[] = {"plugin", "etcd", "log"};

    env_set("XFER_ETCD_ENDPOINTS", "http://127.0.0.1:1");
    env_set("XFER_LOG_LEVEL", "error");
    env_set("XFER_ETCD_CACERT", "/nonexistent/ca.pem");
    env_set("XFER_ETCD_CERT", "/nonexistent/client.pem");
    env_set("XFER_ETCD_KEY", "/nonexistent/client.key");
    XT_REQUIRE(getenv("XFER_PLUGIN_PATH") != NULL, "XFER_PLUGIN_PATH unset");
    for (size_t i = 0; i < sizeof(plugins) / sizeof(plugins[0]); i++) {
        XT_STATUS(fill_spec(plugins[i]), XFER_OK);
    }
}

static char *saved_path;

static void path_restore(void *arg)
{
    (void)arg;
    setenv("XFER_PLUGIN_PATH", saved_path, 1);
    free(saved_path);
    saved_path = NULL;
}

static void rm_file(void *arg)
{
    unlink(arg);
    free(arg);
}

static void rm_dir(void *arg)
{
    rmdir(arg);
    free(arg);
}

/* XFER_UTEST_EXTRA_DEPTH may belong to a plugin utest_extra: it does
 * when such a plugin is on the search path (loadable or not). */
static void test_fill_env_longer_plugin(void)
{
    char tmpl[] = "/tmp/xfer-cfg-XXXXXX", path[4096], *file;
    const char *old = getenv("XFER_PLUGIN_PATH");
    FILE *f;

    env_set("XFER_UTEST_EXTRA_DEPTH", "3");
    XT_STATUS(fill_json(NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_EXTRA_DEPTH", "utest");
    XT_REQUIRE(mkdtemp(tmpl) != NULL, "mkdtemp failed");
    xt_defer_late(rm_dir, strdup(tmpl));
    snprintf(path, sizeof(path), "%s/xfer_utest_extra.so", tmpl);
    file = strdup(path);
    XT_REQUIRE(file != NULL && (f = fopen(path, "w")) != NULL,
               "cannot create %s", path);
    fclose(f);
    xt_defer_late(rm_file, file);
    saved_path = strdup(old ? old : "");
    xt_defer(path_restore, NULL);
    snprintf(path, sizeof(path), "%s:%s", tmpl, saved_path);
    setenv("XFER_PLUGIN_PATH", path, 1);
    XT_STATUS(fill_json(NULL), XFER_OK);
    /* Not a word of it left behind. */
    CU_ASSERT_STRING_EQUAL(xfer_last_error(), "");
    /* Still a typo when nothing continues the name. */
    env_set("XFER_UTEST_EXTRAS_DEPTH", "3");
    XT_STATUS(fill_json(NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_UTEST_EXTRAS_DEPTH");
}

static void test_fill_bad_default(void)
{
    static const xfer_param_t broken[] = {
        {"n", XFER_PARAM_INT, "many", "d", 0, 1, 0},
    };
    xfer__config_t c;

    XT_STATUS(xfer__config_fill("brk", broken, 1, sizeof(int64_t), NULL, &c),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("brk", "default", "'n'");
    CU_ASSERT_PTR_NULL(c.data);
}

static void test_param_parse(void)
{
    xfer_param_t p = {"v", XFER_PARAM_SIZE, "0", "", 0, 1, 0};
    size_t sz = 0;
    int64_t i64 = 0;
    const char *why = NULL;

    CU_ASSERT_EQUAL(xfer__param_parse(&p, "2K", &sz, &why), 0);
    CU_ASSERT_EQUAL(sz, 2048);
    CU_ASSERT_EQUAL(xfer__param_parse(&p, "2Q", &sz, &why), -1);
    XT_CHECK(why != NULL && why[0] != '\0', "no reason for '2Q'");
    p.type = XFER_PARAM_INT;
    p.min = -5;
    p.max = 5;
    CU_ASSERT_EQUAL(xfer__param_parse(&p, "-5", &i64, &why), 0);
    CU_ASSERT_EQUAL(i64, -5);
    CU_ASSERT_EQUAL(xfer__param_parse(&p, "6", &i64, &why), -1);
    XT_CHECK(why != NULL && strstr(why, "range") != NULL, "why '%s'",
             why ? why : "(null)");
    CU_ASSERT_STRING_EQUAL(xfer__param_type_name(XFER_PARAM_BOOL), "bool");
    CU_ASSERT_STRING_EQUAL(xfer__param_type_name(XFER_PARAM_INT), "int");
    CU_ASSERT_STRING_EQUAL(xfer__param_type_name(XFER_PARAM_UINT), "uint");
    CU_ASSERT_STRING_EQUAL(xfer__param_type_name(XFER_PARAM_SIZE), "size");
    CU_ASSERT_STRING_EQUAL(xfer__param_type_name(XFER_PARAM_STRING), "string");
}

/* ---- through the public API, with the ptest plugin ---------------------------- */

/* The ptest instance's connection info, which prints its config. */
static const char *ptest_conn(xfer_agent_t *a)
{
    static char text[XFER_BE_BLOB_MAX + 1];
    size_t len;
    char *blob = xt_md_get(a, XFER_MD_CONN, NULL, 0, &len);
    json_t *root = xt_blob_parse(blob, len), *be;
    size_t i;
    long n;

    json_array_foreach(json_object_get(root, "backends"), i, be) {
        const char *pl = json_string_value(json_object_get(be, "plugin"));

        if (pl && strcmp(pl, "ptest") == 0) {
            n = xfer__b64_decode(json_string_value(json_object_get(be, "conn")),
                                 text, sizeof(text) - 1);
            XT_REQUIRE(n >= 0, "ptest conn is not base64");
            text[n] = '\0';
            return text;
        }
    }
    XT_FAIL_FATAL("no ptest backend in the metadata");
    return NULL;
}

#define CONN_HAS(a, s)                                                      \
    do {                                                                    \
        const char *c_ = ptest_conn(a);                                     \
        XT_CHECK(strstr(c_, (s)) != NULL, "plugin saw \"%s\", want \"%s\"", \
                 c_, (s));                                                  \
    } while (0)

static void test_api_unknown_key(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);
    xfer_backend_t *b = (xfer_backend_t *)&b;

    XT_STATUS(xfer_backend_add(a, "ptest:bogus=1", &b), XFER_ERR_CONFIG);
    XT_ERR_HAS("bogus", "ptest");
    CU_ASSERT_PTR_NULL(b);
    XT_STATUS(xfer_backend_find(a, "ptest", &b), XFER_ERR_NOT_FOUND);
    /* The refusal left the agent as it was. */
    XT_STATUS_FATAL(xfer_backend_add(a, "ptest", &b), XFER_OK);
    XT_REQUIRE(b != NULL, "no backend handle");
    CU_ASSERT_STRING_EQUAL(xfer_backend_name(b), "ptest");
    {
        xfer_backend_t *f = NULL;

        XT_STATUS(xfer_backend_find(a, "ptest", &f), XFER_OK);
        CU_ASSERT_PTR_EQUAL(f, b);
    }
}

static void test_api_config_reaches_plugin(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    XT_STATUS_FATAL(xfer_backend_add(a, "ptest:flag=yes,level=-9,count=42,"
                                     "port=65535,bufsize=1G,"
                                     "label=\"a b,c\"", NULL),
                    XFER_OK);
    CONN_HAS(a, "flag=1 level=-9 count=42 port=65535 bufsize=1073741824 "
                "label=a b,c");
}

static void test_api_defaults_reach_plugin(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), "ptest", 0);

    CONN_HAS(a, "flag=0 level=-2 count=7 port=0 bufsize=65536 label=plain");
}

static void test_api_env_override(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    env_set("XFER_PTEST_LEVEL", "5");
    XT_STATUS_FATAL(xfer_backend_add(a, "ptest:level=1,count=3", NULL),
                    XFER_OK);
    CONN_HAS(a, "level=5 count=3");
    env_unset("XFER_PTEST_LEVEL");

    a = xt_agent(xt_name("cfg"), NULL, 0);
    env_set("XFER_PTEST_PORT", "70000");
    XT_STATUS(xfer_backend_add(a, "ptest", NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_PTEST_PORT", "'port'", "[0, 65535]", "ptest");
}

static void test_api_env_unknown(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    env_set("XFER_PTEST_LEVLE", "5");
    XT_STATUS(xfer_backend_add(a, "ptest:level=1", NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_PTEST_LEVLE", "'ptest'");
    XT_STATUS(xfer_backend_add_json(a, "ptest", NULL, NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_PTEST_LEVLE", "'ptest'");
    env_unset("XFER_PTEST_LEVLE");
    XT_STATUS(xfer_backend_add(a, "ptest", NULL), XFER_OK);
}

static void test_api_unknown_plugin(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    XT_STATUS(xfer_backend_add(a, "nosuch", NULL), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("nosuch");
    XT_STATUS(xfer_backend_add(a, "nosuch:port=1", NULL), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("nosuch");
    XT_STATUS(xfer_backend_add_json(a, "nosuch", "{}", NULL),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("nosuch");
    /* Names that could escape the search directory are not plugin names. */
    XT_STATUS(xfer_backend_add_json(a, "../ptest", NULL, NULL),
              XFER_ERR_INVALID);
    XT_STATUS(xfer_backend_add(a, "ptest", NULL), XFER_OK);
}

static void test_api_bad_spec(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);

    XT_STATUS(xfer_backend_add(a, "ptest:level", NULL), XFER_ERR_INVALID);
    XT_ERR_HAS("level", "'='");
    XT_STATUS(xfer_backend_add(a, "ptest:level=99", NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("'level'", "ptest", "[-10, 10]");
    XT_STATUS(xfer_backend_add(a, "ptest:port=x", NULL), XFER_ERR_CONFIG);
    XT_ERR_HAS("'port'", "ptest");
    XT_STATUS(xfer_backend_add(a, "ptest:level=3", NULL), XFER_OK);
    CONN_HAS(a, "level=3");
}

static void test_api_json(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);
    xfer_agent_t *d = xt_agent(xt_name("cfg"), NULL, 0);
    xfer_backend_t *b = NULL;

    XT_STATUS(xfer_backend_add_json(a, "ptest", "{level", NULL),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("ptest", "JSON");
    XT_STATUS(xfer_backend_add_json(a, "ptest", "[1]", NULL),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("ptest", "object");
    XT_STATUS(xfer_backend_add_json(a, "ptest", "{\"bogus\": 1}", NULL),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("bogus", "ptest");
    XT_STATUS(xfer_backend_add_json(a, "ptest", "{\"port\": \"x\"}", NULL),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("'port'", "ptest");
    XT_STATUS(xfer_backend_add_json(a, "ptest", "{\"port\": true}", NULL),
              XFER_ERR_CONFIG);
    XT_ERR_HAS("'port'", "ptest");
    XT_STATUS(xfer_backend_add_json(a, "ptest",
                                    "{\"level\": 1, \"level\": 2}", NULL),
              XFER_ERR_CONFIG);
    XT_STATUS_FATAL(xfer_backend_add_json(a, "ptest",
                                          "{\"level\": 4, \"flag\": true, "
                                          "\"bufsize\": \"1M\", "
                                          "\"label\": \"j s\"}", &b),
                    XFER_OK);
    CU_ASSERT_STRING_EQUAL(xfer_backend_name(b), "ptest");
    CONN_HAS(a, "flag=1 level=4 count=7 port=0 bufsize=1048576 label=j s");
    XT_STATUS_FATAL(xfer_backend_add_json(d, "ptest", NULL, NULL), XFER_OK);
    CONN_HAS(d, "flag=0 level=-2");
}

static void test_api_duplicate_backend(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), "ptest", 0);

    XT_STATUS(xfer_backend_add(a, "ptest:level=1", NULL), XFER_ERR_EXISTS);
    XT_ERR_HAS("ptest");
    CONN_HAS(a, "level=-2");
}

static void test_api_init_failure(void)
{
    xfer_agent_t *a = xt_agent(xt_name("cfg"), NULL, 0);
    xfer_backend_t *b = NULL;

    XT_STATUS(xfer_backend_add(a, "ptest:fail_init=1,label=zzz", NULL),
              XFER_ERR_BACKEND);
    XT_ERR_HAS("fail_init", "zzz");
    XT_STATUS(xfer_backend_find(a, "ptest", &b), XFER_ERR_NOT_FOUND);
    XT_STATUS(xfer_backend_add(a, "ptest", NULL), XFER_OK);
}

static const xt_test_t spec_tests[] = {
    XT_TEST(test_spec_plain),
    XT_TEST(test_spec_params),
    XT_TEST(test_spec_quoted),
    XT_TEST(test_spec_backslash),
    XT_TEST(test_spec_unquoted_specials),
    XT_TEST(test_spec_empty_value),
    XT_TEST(test_spec_spaces),
    XT_TEST(test_spec_bad),
    XT_TEST(test_spec_empty_and_long),
    XT_END
};

static const xt_test_t fill_tests[] = {
    XT_TEST(test_fill_defaults),
    XT_TEST(test_fill_from_spec),
    XT_TEST(test_fill_bool_spellings),
    XT_TEST(test_fill_int),
    XT_TEST(test_fill_uint),
    XT_TEST(test_fill_size),
    XT_TEST(test_fill_string),
    XT_TEST(test_fill_unknown_key),
    XT_TEST(test_fill_json_types),
    XT_TEST(test_fill_env_override),
    XT_TEST(test_fill_env_bad),
    XT_TEST(test_fill_env_unknown),
    XT_TEST(test_fill_env_core_names),
    XT_TEST(test_fill_env_longer_plugin),
    XT_TEST(test_fill_bad_default),
    XT_TEST(test_param_parse),
    XT_END
};

static const xt_test_t api_tests[] = {
    XT_TEST(test_api_unknown_key),
    XT_TEST(test_api_config_reaches_plugin),
    XT_TEST(test_api_defaults_reach_plugin),
    XT_TEST(test_api_env_override),
    XT_TEST(test_api_env_unknown),
    XT_TEST(test_api_unknown_plugin),
    XT_TEST(test_api_bad_spec),
    XT_TEST(test_api_json),
    XT_TEST(test_api_duplicate_backend),
    XT_TEST(test_api_init_failure),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = {
        { "spec", spec_tests },
        { "fill", fill_tests },
        { "api", api_tests },
    };

    static const char *const vars[] = {
        "XFER_UTEST_FLAG", "XFER_UTEST_LEVEL", "XFER_UTEST_COUNT",
        "XFER_UTEST_PORT", "XFER_UTEST_SIZE", "XFER_UTEST_LABEL",
        "XFER_PTEST_FLAG", "XFER_PTEST_LEVEL", "XFER_PTEST_COUNT",
        "XFER_PTEST_PORT", "XFER_PTEST_BUFSIZE", "XFER_PTEST_LABEL",
        "XFER_PTEST_FAIL_INIT", "XFER_UTEST_PROT", "XFER_UTEST_",
        "XFER_UTEST_PORTS", "XFER_UTEST_EXTRA_DEPTH",
        "XFER_UTEST_EXTRAS_DEPTH", "XFER_PTEST_LEVLE",
    };

    /* Overrides the user may have set must not leak into the tests. */
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    return xt_run("test-config", suites, 3);
}
