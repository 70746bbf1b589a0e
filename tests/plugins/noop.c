/* noop.c - broken test plugin: a full-size table whose mandatory
 * progress op is missing. */
#include "tests/plugins/stub.h"

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(noop) = {
    XT_STUB_OPS("noop", XFER_BACKEND_ABI_MAJOR,
                sizeof(xfer_backend_ops_t), NULL),
};
