/* loader.h - finds plugins on the search path with libltdl, checks their
 * ops table against the ABI, and remembers why a plugin failed. */
#ifndef XFER_CORE_LOADER_H
#define XFER_CORE_LOADER_H

#include <xfer/backend.h>

/* A loaded plugin: held open for as long as an instance uses it. */
typedef struct xfer__plugin xfer__plugin_t;

/* Open plugin `name`: search XFER_PLUGIN_PATH (':'-separated), then the
 * install directory, for xfer_<name>.la / .so; resolve the symbol
 * xfer_backend_<name>_v<major>; check header, size, name and mandatory
 * ops.  XFER_ERR_NOT_FOUND if no file, XFER_ERR_LOAD otherwise, always
 * with a sentence naming the plugin and the file. */
xfer_status_t xfer__plugin_open(const char *name, xfer__plugin_t **plugin);
void xfer__plugin_close(xfer__plugin_t *plugin);
const xfer_backend_ops_t *xfer__plugin_ops(const xfer__plugin_t *plugin);
const char *xfer__plugin_path(const xfer__plugin_t *plugin);

/* Does the (possibly older, shorter) table have this optional op? */
#define XFER__HAS_OP(ops, field)                                            \
    ((ops)->hdr.struct_size >=                                              \
         offsetof(xfer_backend_ops_t, field) + sizeof((ops)->field) &&     \
     (ops)->field != NULL)

#endif /* XFER_CORE_LOADER_H */
