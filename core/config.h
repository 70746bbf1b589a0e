/* config.h - backend spec strings, JSON parameters and environment
 * overrides, turned into a plugin's typed config struct by its table. */
#ifndef XFER_CORE_CONFIG_H
#define XFER_CORE_CONFIG_H

#include <jansson.h>

#include <xfer/backend.h>

/* Split a spec "name[:key=value[,key=value]...]" into the plugin name
 * (*plugin, malloc'd) and an object of key -> JSON string (*kv, new
 * reference).  Grammar: keys are [A-Za-z0-9_]+; a value runs to the
 * next unescaped ','; inside a value `\x` stands for x, and "..." quotes
 * a stretch (with \" and \\ inside).  Duplicate keys, empty keys, a
 * missing '=', unterminated quotes and a trailing backslash are errors
 * with a sentence naming the position. */
xfer_status_t xfer__spec_parse(const char *spec, char **plugin, json_t **kv);

/* A filled config: the plugin's struct plus the strings it points to. */
typedef struct xfer__config {
    void *data;      /* config_size bytes, laid out by the param table */
    char **strings;  /* owned copies behind XFER_PARAM_STRING fields */
    size_t nstrings;
} xfer__config_t;

/* Fill cfg from the table: defaults, then kv (values are JSON strings
 * from a spec or typed JSON values from an object), then environment
 * variables XFER_<PLUGIN>_<KEY> (upper-cased).  Unknown keys, bad types
 * and out-of-range values are XFER_ERR_CONFIG with a sentence naming the
 * plugin and the key.  kv may be NULL.  On error cfg holds nothing. */
xfer_status_t xfer__config_fill(const char *plugin, const xfer_param_t *params,
                                size_t nparams, size_t config_size,
                                json_t *kv, xfer__config_t *cfg);
void xfer__config_free(xfer__config_t *cfg);

/* Parse one value of a type, as the spec grammar and environment give
 * it; out points at the field.  Returns 0 or -1 (with *why set). */
int xfer__param_parse(const xfer_param_t *p, const char *text, void *out,
                      const char **why);

/* Name of a type ("bool", "int", "uint", "size", "string"). */
const char *xfer__param_type_name(xfer_param_type_t type);

#endif /* XFER_CORE_CONFIG_H */
