/* short.c - broken test plugin: struct_size ends after conn_info, so
 * the table does not cover the mandatory ops that follow. */
#include "tests/plugins/stub.h"

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(short) = {
    XT_STUB_OPS("short", XFER_BACKEND_ABI_MAJOR,
                offsetof(xfer_backend_ops_t, peer_add), stub_progress),
};
