/* nosym.c - broken test plugin: a well-formed table exported under a
 * name that is not xfer_backend_nosym_v1. */
#include "tests/plugins/stub.h"

const xfer_backend_ops_t xfer_backend_nosymbol_v1 = {
    XT_STUB_OPS("nosym", XFER_BACKEND_ABI_MAJOR,
                sizeof(xfer_backend_ops_t), stub_progress),
};
