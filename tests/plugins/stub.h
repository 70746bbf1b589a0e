/* stub.h - ops that do nothing, for the deliberately broken test
 * plugins: each fills a table with these and breaks one thing. */
#ifndef XT_PLUGIN_STUB_H
#define XT_PLUGIN_STUB_H

#include <xfer/backend.h>

#define XT_UNUSED __attribute__((unused))

static XT_UNUSED xfer_status_t stub_init(const xfer_host_t *h, const void *c,
                                         xfer_be_t **be)
{
    (void)h; (void)c; (void)be;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED void stub_fini(xfer_be_t *be) { (void)be; }
static XT_UNUSED xfer_status_t stub_conn_info(xfer_be_t *be, void *buf,
                                              size_t *len)
{
    (void)be; (void)buf; (void)len;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED xfer_status_t stub_peer_add(xfer_be_t *be, const char *n,
                                             uint64_t e, const void *i,
                                             size_t l, xfer_be_peer_t **p)
{
    (void)be; (void)n; (void)e; (void)i; (void)l; (void)p;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED void stub_peer_remove(xfer_be_t *be, xfer_be_peer_t *p)
{
    (void)be; (void)p;
}
static XT_UNUSED xfer_status_t stub_mem_register(xfer_be_t *be,
                                                 const xfer_be_region_t *r,
                                                 void **m)
{
    (void)be; (void)r; (void)m;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED void stub_mem_deregister(xfer_be_t *be, void *m)
{
    (void)be; (void)m;
}
static XT_UNUSED xfer_status_t stub_rmem_unpack(xfer_be_t *be,
                                                xfer_be_peer_t *p,
                                                const xfer_be_rregion_t *r,
                                                const void *b, size_t l,
                                                void **m)
{
    (void)be; (void)p; (void)r; (void)b; (void)l; (void)m;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED void stub_rmem_release(xfer_be_t *be, void *m)
{
    (void)be; (void)m;
}
static XT_UNUSED xfer_status_t stub_req_create(xfer_be_t *be, xfer_op_t op,
                                               xfer_be_peer_t *p,
                                               const xfer_be_seg_t *s,
                                               size_t n, xfer_be_req_t **r)
{
    (void)be; (void)op; (void)p; (void)s; (void)n; (void)r;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED xfer_status_t stub_req_post(xfer_be_t *be, xfer_be_req_t *r,
                                             const void *n, size_t l)
{
    (void)be; (void)r; (void)n; (void)l;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED xfer_status_t stub_req_check(xfer_be_t *be, xfer_be_req_t *r)
{
    (void)be; (void)r;
    return XFER_ERR_NOT_SUPPORTED;
}
static XT_UNUSED void stub_req_release(xfer_be_t *be, xfer_be_req_t *r)
{
    (void)be; (void)r;
}
static XT_UNUSED int stub_progress(xfer_be_t *be)
{
    (void)be;
    return 0;
}

/* A table for plugin `nm`, well formed when given XFER_BACKEND_ABI_MAJOR,
 * sizeof(xfer_backend_ops_t) and stub_progress; each broken plugin
 * passes one wrong value. */
#define XT_STUB_OPS(nm, major, size, progress_op)                           \
    XT_STUB_OPS_MINOR(nm, major, XFER_BACKEND_ABI_MINOR, size, progress_op)
/* The same, claiming an older ABI minor. */
#define XT_STUB_OPS_MINOR(nm, major, minor, size, progress_op)              \
    XT_STUB_OPS_CAPS(nm, major, minor, size, progress_op,                   \
                     XFER_CAP_READ | XFER_CAP_WRITE)
/* The same, declaring other capabilities. */
#define XT_STUB_OPS_CAPS(nm, major, minor, size, progress_op, cap_bits)     \
    .hdr = {                                                                \
        .abi_major = (major),                                               \
        .abi_minor = (minor),                                               \
        .struct_size = (size),                                              \
        .name = nm,                                                         \
        .version = "broken-1",                                              \
        .caps = (cap_bits),                                                 \
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),                            \
    },                                                                      \
    .init = stub_init, .fini = stub_fini, .conn_info = stub_conn_info,      \
    .peer_add = stub_peer_add, .peer_remove = stub_peer_remove,             \
    .mem_register = stub_mem_register,                                      \
    .mem_deregister = stub_mem_deregister,                                  \
    .rmem_unpack = stub_rmem_unpack, .rmem_release = stub_rmem_release,     \
    .req_create = stub_req_create, .req_post = stub_req_post,               \
    .req_check = stub_req_check, .req_release = stub_req_release,           \
    .progress = (progress_op)

#endif /* XT_PLUGIN_STUB_H */
