/* writeonly.c - a well-formed plugin that declares WRITE but not READ,
 * so that tools can be tested refusing READ on it before any instance
 * exists (its init, a stub, refuses to make one). */
#include "tests/plugins/stub.h"

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(writeonly) = {
    XT_STUB_OPS_CAPS("writeonly", XFER_BACKEND_ABI_MAJOR,
                     XFER_BACKEND_ABI_MINOR, sizeof(xfer_backend_ops_t),
                     stub_progress, XFER_CAP_WRITE),
};
