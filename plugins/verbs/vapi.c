/* vapi.c - the seam (vapi.h) filled with rdma-core's libibverbs. */
#include "plugins/verbs/vapi.h"

static const char *dev_name(struct ibv_device *d)
{
    return ibv_get_device_name(d);
}

static struct ibv_device **dev_list(int *n)
{
    return ibv_get_device_list(n);
}

static int query_port(struct ibv_context *c, uint8_t port,
                      struct ibv_port_attr *a)
{
    return ibv_query_port(c, port, a);
}

static int req_notify(struct ibv_cq *cq, int solicited)
{
    return ibv_req_notify_cq(cq, solicited);
}

static int poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
    return ibv_poll_cq(cq, n, wc);
}

static int post_send(struct ibv_qp *qp, struct ibv_send_wr *wr,
                     struct ibv_send_wr **bad)
{
    return ibv_post_send(qp, wr, bad);
}

static int post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr,
                     struct ibv_recv_wr **bad)
{
    return ibv_post_recv(qp, wr, bad);
}

static struct ibv_mr *reg_mr(struct ibv_pd *pd, void *addr, size_t len,
                             int access)
{
    return ibv_reg_mr(pd, addr, len, access);
}

static int gid_type(struct ibv_context *c, uint8_t port, int index,
                    enum ibv_gid_type *type)
{
    struct ibv_gid_entry e;
    int r = ibv_query_gid_ex(c, port, (uint32_t)index, &e, 0);

    if (r == 0)
        *type = (enum ibv_gid_type)e.gid_type;
    return r;
}

static const vb_api_t real = {
    .what = "libibverbs",
    .get_device_list = dev_list,
    .free_device_list = ibv_free_device_list,
    .get_device_name = dev_name,
    .open_device = ibv_open_device,
    .close_device = ibv_close_device,
    .query_device = ibv_query_device,
    .query_port = query_port,
    .query_gid = ibv_query_gid,
    .query_gid_type = gid_type,
    .fork_status = ibv_is_fork_initialized,
    .alloc_pd = ibv_alloc_pd,
    .dealloc_pd = ibv_dealloc_pd,
    .reg_mr = reg_mr,
    .dereg_mr = ibv_dereg_mr,
    .create_comp_channel = ibv_create_comp_channel,
    .destroy_comp_channel = ibv_destroy_comp_channel,
    .create_cq = ibv_create_cq,
    .destroy_cq = ibv_destroy_cq,
    .req_notify_cq = req_notify,
    .get_cq_event = ibv_get_cq_event,
    .ack_cq_events = ibv_ack_cq_events,
    .poll_cq = poll_cq,
    .create_qp = ibv_create_qp,
    .modify_qp = ibv_modify_qp,
    .destroy_qp = ibv_destroy_qp,
    .post_send = post_send,
    .post_recv = post_recv,
    .wc_status_str = ibv_wc_status_str,
    .get_async_event = ibv_get_async_event,
    .ack_async_event = ibv_ack_async_event,
    .event_type_str = ibv_event_type_str,
};

const vb_api_t *const vb__api = &real;
