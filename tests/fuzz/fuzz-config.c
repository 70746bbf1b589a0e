/* fuzz-config.c - libFuzzer harness for the config grammar: backend spec
 * strings, JSON parameter objects and single values, against a table of every type. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "tests/fuzz/fuzz-common.h"

/* A plugin's config with a field of every parameter type, bounded and
 * unbounded, so that every parse and range check is reached. */
typedef struct fz_cfg {
    int b;
    int64_t i, ir;
    uint64_t u, ur;
    size_t s, sr;
    const char *str, *path;
} fz_cfg_t;

#define P(n, t, d, f, lo, hi) {n, t, d, "fuzzed", offsetof(fz_cfg_t, f), lo, hi}
static const xfer_param_t params[] = {
    P("b", XFER_PARAM_BOOL, "1", b, 0, 1),
    P("i", XFER_PARAM_INT, "-7", i, 1, 0),
    P("ir", XFER_PARAM_INT, "0", ir, -5, 5),
    P("u", XFER_PARAM_UINT, "0", u, 1, 0),
    P("ur", XFER_PARAM_UINT, "80", ur, 1, 65535),
    P("s", XFER_PARAM_SIZE, "16K", s, 1, 0),
    P("sr", XFER_PARAM_SIZE, "256K", sr, 4096, 256 << 20),
    P("str", XFER_PARAM_STRING, "", str, 1, 0),
    P("path", XFER_PARAM_STRING, "/tmp/x", path, 1, 0),
};
#undef P
#define NPARAMS (sizeof(params) / sizeof(params[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_setup();
    return 0;
}

static bool in_range(const xfer_param_t *p, const fz_cfg_t *c)
{
    const char *f = (const char *)c + p->offset;
    int64_t sv;
    uint64_t uv;

    if (p->min > p->max && p->type != XFER_PARAM_BOOL)
        return true;
    switch (p->type) {
    case XFER_PARAM_BOOL:
        return *(const int *)f == 0 || *(const int *)f == 1;
    case XFER_PARAM_INT:
        memcpy(&sv, f, sizeof(sv));
        return sv >= p->min && sv <= p->max;
    case XFER_PARAM_UINT:
        memcpy(&uv, f, sizeof(uv));
        return uv >= (uint64_t)p->min && uv <= (uint64_t)p->max;
    case XFER_PARAM_SIZE:
        return *(const size_t *)f >= (uint64_t)p->min &&
               *(const size_t *)f <= (uint64_t)p->max;
    case XFER_PARAM_STRING:
        return *(const char *const *)f != NULL;
    }
    return false;
}

/* A config the core accepted holds only what the table allows. */
static void check_filled(const xfer__config_t *cfg, const char *what)
{
    for (size_t k = 0; k < NPARAMS; k++)
        if (!in_range(&params[k], cfg->data))
            fz_die("%s: accepted parameter '%s' outside its type or range",
                   what, params[k].name);
}

static void fill(const char *plugin, json_t *kv, const char *what)
{
    xfer__config_t cfg;
    xfer_status_t st;

    xfer__err_clear();
    st = xfer__config_fill(plugin, params, NPARAMS, sizeof(fz_cfg_t), kv,
                           &cfg);
    fz_sentence(st, what);
    if (fz_verbose())
        fprintf(stderr, "%s: %s\n", what,
                st == XFER_OK ? "accepted" : xfer_last_error());
    if (st == XFER_OK) {
        check_filled(&cfg, what);
        xfer__config_free(&cfg);
    } else if (cfg.data != NULL || cfg.strings != NULL) {
        fz_die("%s: a failed fill kept memory in its config", what);
    }
}

/* Spec grammar: name[:key=value,...], then the fill. */
static void fuzz_spec(const char *text)
{
    char *plugin = NULL;
    json_t *kv = NULL;
    const char *key;
    json_t *v;
    xfer_status_t st;

    xfer__err_clear();
    st = xfer__spec_parse(text, &plugin, &kv);
    fz_sentence(st, "xfer__spec_parse");
    if (st != XFER_OK && fz_verbose())
        fprintf(stderr, "spec: %s\n", xfer_last_error());
    if (st != XFER_OK) {
        if (plugin != NULL || kv != NULL)
            fz_die("xfer__spec_parse failed but returned a result");
        return;
    }
    if (plugin == NULL || plugin[0] == '\0' || !json_is_object(kv))
        fz_die("xfer__spec_parse succeeded without a name and an object");
    json_object_foreach(kv, key, v) {
        if (key[0] == '\0' || !json_is_string(v))
            fz_die("xfer__spec_parse produced key '%s' with a non-string "
                   "value", key);
        for (const char *p = key; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_'))
                fz_die("xfer__spec_parse accepted key '%s'", key);
    }
    fill(plugin, kv, "spec fill");
    free(plugin);
    json_decref(kv);
}

/* A JSON parameter object, as xfer_backend_add_json reads it. */
static void fuzz_json(const char *text, size_t len)
{
    json_error_t jerr;
    json_t *kv = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);

    if (kv == NULL)
        return;
    if (json_is_object(kv))
        fill("fz", kv, "JSON fill");
    json_decref(kv);
}

/* One value of each type, as the environment gives them. */
static void fuzz_value(const char *text)
{
    for (size_t k = 0; k < NPARAMS; k++) {
        fz_cfg_t c;
        const char *why = NULL;

        memset(&c, 0, sizeof(c));
        if (params[k].type == XFER_PARAM_STRING)
            c.str = c.path = "";
        if (params[k].type == XFER_PARAM_BOOL)
            c.b = 0;
        if (xfer__param_parse(&params[k], text,
                              (char *)&c + params[k].offset, &why) == 0) {
            if (params[k].type != XFER_PARAM_STRING &&
                !in_range(&params[k], &c))
                fz_die("xfer__param_parse accepted '%s' for '%s' outside its "
                       "range", text, params[k].name);
        } else if (why == NULL || why[0] == '\0') {
            fz_die("xfer__param_parse refused '%s' without a reason", text);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    if (size < 1)
        return 0;
    /* The first byte picks the entry point; the rest is the text, with a
     * NUL added (the spec and value parsers take C strings). */
    text = malloc(size);
    if (text == NULL)
        fz_die("out of memory");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    switch (data[0] % 3) {
    case 0:
        fuzz_spec(text);
        break;
    case 1:
        fuzz_json(text, size - 1);
        break;
    default:
        fuzz_value(text);
        break;
    }
    free(text);
    return 0;
}
