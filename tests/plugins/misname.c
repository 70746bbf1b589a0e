/* misname.c - broken test plugin: file and symbol say "misname", the
 * header says "other". */
#include "tests/plugins/stub.h"

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(misname) = {
    XT_STUB_OPS("other", XFER_BACKEND_ABI_MAJOR,
                sizeof(xfer_backend_ops_t), stub_progress),
};
