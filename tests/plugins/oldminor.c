/* oldminor.c - a well-formed plugin from before ABI minor 2: its table
 * ends before probe, so it loads, and the core never reads what lies past
 * struct_size (here a probe that would betray it if called). */
#include "tests/plugins/stub.h"

static xfer_status_t past_the_end(char *buf, size_t len)
{
    if (len > 0)
        buf[0] = 'X';
    if (len > 1)
        buf[1] = '\0';
    return XFER_OK;
}

const xfer_backend_ops_t XFER_BACKEND_SYMBOL(oldminor) = {
    XT_STUB_OPS_MINOR("oldminor", XFER_BACKEND_ABI_MAJOR, 1,
                      offsetof(xfer_backend_ops_t, probe), stub_progress),
    .probe = past_the_end,
};
