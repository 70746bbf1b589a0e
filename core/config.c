/* config.c - turns a backend spec string or JSON object into the plugin's
 * typed config struct, by the plugin's declared parameter table. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/internal.h"

/* A spec is short; a longer one is a mistake, not a config. */
#define SPEC_MAX 4096
#define PLUGIN_NAME_MAX 64

static bool is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

const char *xfer__param_type_name(xfer_param_type_t type)
{
    switch (type) {
    case XFER_PARAM_BOOL: return "bool";
    case XFER_PARAM_INT: return "int";
    case XFER_PARAM_UINT: return "uint";
    case XFER_PARAM_SIZE: return "size";
    case XFER_PARAM_STRING: return "string";
    }
    return "?";
}

/* Read one value starting at *pp up to an unescaped ',' or the end.
 * Returns a malloc'd string or NULL with an error set. */
static char *read_value(const char *spec, const char **pp, const char *key)
{
    const char *p = *pp;
    size_t cap = strlen(p) + 1, n = 0;
    char *out = malloc(cap);
    bool quoted = false;

    if (out == NULL) {
        xfer__err(XFER_ERR_NOMEM, "out of memory parsing spec");
        return NULL;
    }
    for (;; p++) {
        char c = *p;

        if (c == '\0') {
            if (quoted) {
                xfer__err(XFER_ERR_INVALID,
                          "spec '%s': unterminated quote in the value of '%s'",
                          spec, key);
                free(out);
                return NULL;
            }
            break;
        }
        if (c == '\\') {
            if (p[1] == '\0') {
                xfer__err(XFER_ERR_INVALID,
                          "spec '%s': trailing backslash in the value of '%s'",
                          spec, key);
                free(out);
                return NULL;
            }
            out[n++] = *++p;
            continue;
        }
        if (c == '"') {
            quoted = !quoted;
            continue;
        }
        if (c == ',' && !quoted)
            break;
        out[n++] = c;
    }
    out[n] = '\0';
    *pp = p;
    return out;
}

xfer_status_t xfer__spec_parse(const char *spec, char **plugin, json_t **kv)
{
    const char *p = spec, *start;
    char *name = NULL;
    json_t *obj = NULL;

    *plugin = NULL;
    *kv = NULL;
    if (spec == NULL || *spec == '\0')
        return xfer__err(XFER_ERR_INVALID, "empty backend spec");
    if (strlen(spec) > SPEC_MAX)
        return xfer__err(XFER_ERR_INVALID,
                         "backend spec longer than %d bytes", SPEC_MAX);

    start = p;
    while (is_name_char(*p))
        p++;
    if (p == start)
        return xfer__err(XFER_ERR_INVALID,
                         "spec '%s': no plugin name before the parameters",
                         spec);
    if (*p != '\0' && *p != ':')
        return xfer__err(XFER_ERR_INVALID,
                         "spec '%s': unexpected '%c' at offset %zu in the "
                         "plugin name", spec, *p, (size_t)(p - spec));
    if ((size_t)(p - start) > PLUGIN_NAME_MAX)
        return xfer__err(XFER_ERR_INVALID, "spec '%s': plugin name too long",
                         spec);
    name = strndup(start, (size_t)(p - start));
    obj = json_object();
    if (name == NULL || obj == NULL)
        goto nomem;

    if (*p == ':') {
        p++;
        if (*p == '\0') {
            xfer__err(XFER_ERR_INVALID,
                      "spec '%s': ':' must be followed by key=value", spec);
            goto fail;
        }
        for (;;) {
            char key[128];
            char *value;
            size_t klen;

            start = p;
            while (is_name_char(*p))
                p++;
            klen = (size_t)(p - start);
            if (klen == 0) {
                xfer__err(XFER_ERR_INVALID,
                          "spec '%s': empty key at offset %zu", spec,
                          (size_t)(start - spec));
                goto fail;
            }
            if (klen >= sizeof(key)) {
                xfer__err(XFER_ERR_INVALID, "spec '%s': key too long", spec);
                goto fail;
            }
            memcpy(key, start, klen);
            key[klen] = '\0';
            if (*p != '=') {
                xfer__err(XFER_ERR_INVALID,
                          "spec '%s': expected '=' after key '%s' at offset "
                          "%zu", spec, key, (size_t)(p - spec));
                goto fail;
            }
            p++;
            if (json_object_get(obj, key) != NULL) {
                xfer__err(XFER_ERR_INVALID, "spec '%s': key '%s' given twice",
                          spec, key);
                goto fail;
            }
            value = read_value(spec, &p, key);
            if (value == NULL)
                goto fail;
            if (json_object_set_new(obj, key, json_string(value)) != 0) {
                free(value);
                goto nomem;
            }
            free(value);
            if (*p == '\0')
                break;
            p++; /* ',' */
            if (*p == '\0') {
                xfer__err(XFER_ERR_INVALID,
                          "spec '%s': trailing ',' with no parameter", spec);
                goto fail;
            }
        }
    }
    *plugin = name;
    *kv = obj;
    return XFER_OK;

nomem:
    xfer__err(XFER_ERR_NOMEM, "out of memory parsing spec");
    free(name);
    json_decref(obj);
    return XFER_ERR_NOMEM;
fail:
    free(name);
    json_decref(obj);
    return XFER_ERR_INVALID;
}

/* ---- values ---------------------------------------------------------- */

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (unsigned i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Decimal, or hex with 0x: a leading zero is not octal here (port=010
 * means ten), since a config is written by people, not by C programs. */
static int numeric_base(const char *text)
{
    const char *p = text;

    if (*p == '-' || *p == '+')
        p++;
    return p[0] == '0' && (p[1] == 'x' || p[1] == 'X') ? 16 : 10;
}

static bool in_range(const xfer_param_t *p, bool is_signed, int64_t sv,
                     uint64_t uv)
{
    if (p->min > p->max)
        return true;
    if (is_signed)
        return sv >= p->min && sv <= p->max;
    if (p->max < 0)
        return false;
    return (p->min <= 0 || uv >= (uint64_t)p->min) && uv <= (uint64_t)p->max;
}

int xfer__param_parse(const xfer_param_t *p, const char *text, void *out,
                      const char **why)
{
    char *end;

    *why = NULL;
    switch (p->type) {
    case XFER_PARAM_BOOL: {
        int b;

        if (parse_bool(text, &b) != 0) {
            *why = "expected a bool (0/1, true/false, yes/no, on/off)";
            return -1;
        }
        *(int *)out = b;
        return 0;
    }
    case XFER_PARAM_INT: {
        long long v;

        errno = 0;
        v = strtoll(text, &end, numeric_base(text));
        if (*text == '\0' || *end != '\0' || errno != 0) {
            *why = "expected an integer";
            return -1;
        }
        if (!in_range(p, true, v, 0)) {
            *why = "out of range";
            return -1;
        }
        *(int64_t *)out = v;
        return 0;
    }
    case XFER_PARAM_UINT:
    case XFER_PARAM_SIZE: {
        unsigned long long v;
        unsigned shift = 0;

        errno = 0;
        if (*text == '-' || *text == '\0' || isspace((unsigned char)*text)) {
            *why = p->type == XFER_PARAM_SIZE
                       ? "expected a size (e.g. 4096, 64K, 16M, 1G)"
                       : "expected an unsigned integer";
            return -1;
        }
        v = strtoull(text, &end, numeric_base(text));
        if (p->type == XFER_PARAM_SIZE && end != text && *end != '\0' &&
            end[1] == '\0') {
            switch (*end) {
            case 'k': case 'K': shift = 10; end++; break;
            case 'm': case 'M': shift = 20; end++; break;
            case 'g': case 'G': shift = 30; end++; break;
            default: break;
            }
        }
        if (end == text || *end != '\0' || errno != 0) {
            *why = p->type == XFER_PARAM_SIZE
                       ? "expected a size (e.g. 4096, 64K, 16M, 1G)"
                       : "expected an unsigned integer";
            return -1;
        }
        if (shift && v > (ULLONG_MAX >> shift)) {
            *why = "out of range";
            return -1;
        }
        v <<= shift;
        if (!in_range(p, false, 0, v) ||
            (p->type == XFER_PARAM_SIZE && v > SIZE_MAX)) {
            *why = "out of range";
            return -1;
        }
        if (p->type == XFER_PARAM_SIZE)
            *(size_t *)out = (size_t)v;
        else
            *(uint64_t *)out = v;
        return 0;
    }
    case XFER_PARAM_STRING:
        /* Strings are stored by the caller, which owns the copy. */
        return 0;
    }
    *why = "unknown parameter type";
    return -1;
}

/* ---- filling a config ------------------------------------------------ */

static const xfer_param_t *find_param(const xfer_param_t *params, size_t n,
                                      const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(params[i].name, key) == 0)
            return &params[i];
    return NULL;
}

static xfer_status_t range_error(const char *plugin, const xfer_param_t *p,
                                 const char *text, const char *source)
{
    if (p->min <= p->max)
        return xfer__err(XFER_ERR_CONFIG,
                         "plugin '%s': %s '%s' = '%s' is out of range "
                         "[%" PRId64 ", %" PRId64 "]",
                         plugin, source, p->name, text, p->min, p->max);
    return xfer__err(XFER_ERR_CONFIG, "plugin '%s': %s '%s' = '%s' is out of "
                     "range", plugin, source, p->name, text);
}

static xfer_status_t set_text(const char *plugin, const xfer_param_t *p,
                              const char *text, const char *source,
                              xfer__config_t *cfg)
{
    void *field = (char *)cfg->data + p->offset;
    const char *why;

    if (p->type == XFER_PARAM_STRING) {
        char *copy = strdup(text);
        char **grown;

        if (copy == NULL)
            return xfer__err(XFER_ERR_NOMEM, "out of memory");
        grown = realloc(cfg->strings, (cfg->nstrings + 1) * sizeof(*grown));
        if (grown == NULL) {
            free(copy);
            return xfer__err(XFER_ERR_NOMEM, "out of memory");
        }
        cfg->strings = grown;
        cfg->strings[cfg->nstrings++] = copy;
        *(const char **)field = copy;
        return XFER_OK;
    }
    if (xfer__param_parse(p, text, field, &why) != 0) {
        if (strcmp(why, "out of range") == 0)
            return range_error(plugin, p, text, source);
        return xfer__err(XFER_ERR_CONFIG,
                         "plugin '%s': %s '%s' = '%s': %s (type %s)", plugin,
                         source, p->name, text, why,
                         xfer__param_type_name(p->type));
    }
    return XFER_OK;
}

/* A typed JSON value, checked against the parameter's type. */
static xfer_status_t set_json(const char *plugin, const xfer_param_t *p,
                              json_t *v, xfer__config_t *cfg)
{
    char buf[64];

    if (json_is_string(v))
        return set_text(plugin, p, json_string_value(v), "key", cfg);
    switch (p->type) {
    case XFER_PARAM_BOOL:
        if (json_is_boolean(v))
            return set_text(plugin, p, json_is_true(v) ? "1" : "0", "key", cfg);
        if (json_is_integer(v)) {
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(v));
            return set_text(plugin, p, buf, "key", cfg);
        }
        break;
    case XFER_PARAM_INT:
    case XFER_PARAM_UINT:
    case XFER_PARAM_SIZE:
        if (json_is_integer(v)) {
            snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(v));
            return set_text(plugin, p, buf, "key", cfg);
        }
        break;
    case XFER_PARAM_STRING:
        break;
    }
    return xfer__err(XFER_ERR_CONFIG,
                     "plugin '%s': key '%s' has a JSON %s, expected %s",
                     plugin, p->name,
                     json_is_object(v) ? "object" : json_is_array(v) ? "array"
                     : json_is_boolean(v) ? "boolean" : json_is_null(v) ? "null"
                     : json_is_real(v) ? "real" : json_is_integer(v) ? "integer"
                     : "value",
                     xfer__param_type_name(p->type));
}

/* Variables the core reads itself: never a parameter of a plugin that
 * happens to be named plugin, etcd or log, nor its typo. */
static bool core_var(const char *name, size_t len)
{
    static const char *const vars[] = {
        "XFER_PLUGIN_PATH", "XFER_PLUGIN_DLCLOSE", "XFER_ETCD_ENDPOINTS",
        "XFER_LOG_LEVEL", "XFER_ETCD_CACERT", "XFER_ETCD_CERT",
        "XFER_ETCD_KEY",
    };

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (strlen(vars[i]) == len && strncmp(name, vars[i], len) == 0)
            return true;
    return false;
}

/* Whether XFER_<PLUGIN>_<rest> is rather a variable of another plugin
 * whose name continues plugin's ("tcp" and "tcp_rdma"): one found on the
 * search path, loadable or not.  Only asked about an unknown name. */
static bool other_plugins_var(const char *plugin, const char *rest,
                              size_t klen)
{
    char name[PLUGIN_NAME_MAX + 1];
    size_t n = strlen(plugin);

    for (size_t k = 1; k < klen && n + 1 + k <= PLUGIN_NAME_MAX; k++) {
        xfer__plugin_t *pl = NULL;
        xfer_status_t st;

        if (rest[k] != '_')
            continue;
        memcpy(name, plugin, n);
        name[n] = '_';
        for (size_t i = 0; i < k; i++)
            name[n + 1 + i] = (char)tolower((unsigned char)rest[i]);
        name[n + 1 + k] = '\0';
        st = xfer__plugin_open(name, &pl);
        if (st == XFER_OK)
            xfer__plugin_close(pl);
        xfer__err_clear();
        if (st != XFER_ERR_NOT_FOUND && st != XFER_ERR_INVALID)
            return true;
    }
    return false;
}

/* A variable XFER_<PLUGIN>_<KEY> whose KEY names no parameter is a typo
 * that would otherwise change nothing without a word: refuse it, as an
 * unknown key of a spec is refused. */
static xfer_status_t check_env_names(const char *plugin,
                                     const xfer_param_t *params,
                                     size_t nparams)
{
    extern char **environ;
    char prefix[PLUGIN_NAME_MAX + 8];
    size_t plen = (size_t)snprintf(prefix, sizeof(prefix), "XFER_%s_", plugin);

    if (plen >= sizeof(prefix))
        return XFER_OK;
    for (char *c = prefix; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        const char *rest = *e + plen, *eq;
        size_t i, klen;

        if (strncmp(*e, prefix, plen) != 0 || (eq = strchr(rest, '=')) == NULL)
            continue;
        klen = (size_t)(eq - rest);
        for (i = 0; i < nparams; i++) {
            const char *p = params[i].name;
            size_t k = 0;

            while (k < klen && p[k] != '\0' &&
                   toupper((unsigned char)p[k]) == rest[k])
                k++;
            if (k == klen && p[k] == '\0')
                break;
        }
        if (i < nparams || core_var(*e, (size_t)(eq - *e)) ||
            other_plugins_var(plugin, rest, klen))
            continue;
        return xfer__err(XFER_ERR_CONFIG, "plugin '%s' has no parameter "
                         "named by environment variable %.*s (see xfer-info "
                         "%s)", plugin, (int)(eq - *e), *e, plugin);
    }
    return XFER_OK;
}

xfer_status_t xfer__config_fill(const char *plugin, const xfer_param_t *params,
                                size_t nparams, size_t config_size,
                                json_t *kv, xfer__config_t *cfg)
{
    xfer_status_t st = XFER_OK;
    const char *key;
    json_t *val;

    memset(cfg, 0, sizeof(*cfg));
    cfg->data = calloc(1, config_size ? config_size : 1);
    if (cfg->data == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");

    for (size_t i = 0; i < nparams && st == XFER_OK; i++)
        st = set_text(plugin, &params[i],
                      params[i].defval ? params[i].defval : "", "default of",
                      cfg);
    if (st != XFER_OK) {
        /* A broken default is the plugin's bug; say so. */
        st = xfer__err_prefix(XFER_ERR_CONFIG, "plugin '%s' declares an "
                              "invalid default", plugin);
        goto fail;
    }

    if (kv != NULL) {
        json_object_foreach(kv, key, val) {
            const xfer_param_t *p = find_param(params, nparams, key);

            if (p == NULL) {
                st = xfer__err(XFER_ERR_CONFIG,
                               "plugin '%s' has no parameter '%s' (see "
                               "xfer-info %s)", plugin, key, plugin);
                goto fail;
            }
            st = set_json(plugin, p, val, cfg);
            if (st != XFER_OK)
                goto fail;
        }
    }

    st = check_env_names(plugin, params, nparams);
    if (st != XFER_OK)
        goto fail;
    for (size_t i = 0; i < nparams; i++) {
        char var[160];
        size_t n = (size_t)snprintf(var, sizeof(var), "XFER_%s_%s", plugin,
                                    params[i].name);
        const char *env;

        if (n >= sizeof(var))
            continue;
        for (char *c = var; *c; c++)
            *c = (char)toupper((unsigned char)*c);
        env = core_var(var, n) ? NULL : getenv(var);
        if (env == NULL)
            continue;
        st = set_text(plugin, &params[i], env, "environment", cfg);
        if (st != XFER_OK) {
            xfer__err_prefix(st, "%s", var);
            goto fail;
        }
    }
    return XFER_OK;

fail:
    xfer__config_free(cfg);
    return st;
}

void xfer__config_free(xfer__config_t *cfg)
{
    for (size_t i = 0; i < cfg->nstrings; i++)
        free(cfg->strings[i]);
    free(cfg->strings);
    free(cfg->data);
    memset(cfg, 0, sizeof(*cfg));
}
