/* badmajor.c - broken test plugin: the right symbol name, but a header
 * claiming a backend ABI major this library does not speak. */
#include "tests/plugins/stub.h"

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(badmajor) = {
    XT_STUB_OPS("badmajor", XFER_BACKEND_ABI_MAJOR + 1,
                sizeof(xfer_backend_ops_t), stub_progress),
};
