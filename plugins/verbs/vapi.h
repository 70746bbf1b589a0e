/* vapi.h - the thin seam between the verbs plugin and libibverbs.
 *
 * Every verbs call the plugin makes goes through one table of function
 * pointers, vb__api.  The plugin proper links vapi.c, which fills it
 * with rdma-core's functions (several of which are static inlines in
 * <infiniband/verbs.h>, so the table holds small wrappers).  The test
 * build of the same sources (the plugin vbfake) links an emulated
 * device instead: RC queue pairs in one process, moved by a thread that
 * plays the NIC.  Nothing else of the plugin knows which it has.
 *
 * The objects are rdma-core's own structs: an emulation allocates them
 * inside its own and fills the public fields the plugin reads
 * (ibv_context.device, ibv_comp_channel.fd, ibv_cq.channel/cq_context,
 * ibv_qp.qp_num/state, ibv_mr.addr/length/lkey/rkey). */
#ifndef XFER_PLUGINS_VERBS_VAPI_H
#define XFER_PLUGINS_VERBS_VAPI_H

#include <infiniband/verbs.h>

typedef struct vb_api {
    const char *what;          /* "libibverbs", or the emulation's name */
    struct ibv_device **(*get_device_list)(int *num);
    void (*free_device_list)(struct ibv_device **list);
    const char *(*get_device_name)(struct ibv_device *dev);
    struct ibv_context *(*open_device)(struct ibv_device *dev);
    int (*close_device)(struct ibv_context *ctx);
    int (*query_device)(struct ibv_context *ctx, struct ibv_device_attr *a);
    int (*query_port)(struct ibv_context *ctx, uint8_t port,
                      struct ibv_port_attr *a);
    int (*query_gid)(struct ibv_context *ctx, uint8_t port, int index,
                     union ibv_gid *gid);
    /* The entry's type (IBV_GID_TYPE_IB, _ROCE_V1, _ROCE_V2): 0, or an
     * errno (ENODATA for an empty entry). */
    int (*query_gid_type)(struct ibv_context *ctx, uint8_t port, int index,
                          enum ibv_gid_type *type);
    /* Whether registered memory is safe across fork() (ibv_fork_init was
     * called: RDMAV_FORK_SAFE), needs nothing (kernel 5.13 or later), or
     * neither. */
    enum ibv_fork_status (*fork_status)(void);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *ctx);
    int (*dealloc_pd)(struct ibv_pd *pd);
    struct ibv_mr *(*reg_mr)(struct ibv_pd *pd, void *addr, size_t len,
                             int access);
    int (*dereg_mr)(struct ibv_mr *mr);
    struct ibv_comp_channel *(*create_comp_channel)(struct ibv_context *ctx);
    int (*destroy_comp_channel)(struct ibv_comp_channel *ch);
    struct ibv_cq *(*create_cq)(struct ibv_context *ctx, int cqe,
                                void *cq_context,
                                struct ibv_comp_channel *ch, int vector);
    int (*destroy_cq)(struct ibv_cq *cq);
    int (*req_notify_cq)(struct ibv_cq *cq, int solicited_only);
    int (*get_cq_event)(struct ibv_comp_channel *ch, struct ibv_cq **cq,
                        void **cq_context);
    void (*ack_cq_events)(struct ibv_cq *cq, unsigned int n);
    int (*poll_cq)(struct ibv_cq *cq, int n, struct ibv_wc *wc);
    struct ibv_qp *(*create_qp)(struct ibv_pd *pd,
                                struct ibv_qp_init_attr *attr);
    int (*modify_qp)(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask);
    int (*destroy_qp)(struct ibv_qp *qp);
    int (*post_send)(struct ibv_qp *qp, struct ibv_send_wr *wr,
                     struct ibv_send_wr **bad);
    int (*post_recv)(struct ibv_qp *qp, struct ibv_recv_wr *wr,
                     struct ibv_recv_wr **bad);
    const char *(*wc_status_str)(enum ibv_wc_status st);
    /* Asynchronous events: port and device state, QPs and CQs in error
     * (the context's async_fd, made non-blocking, says when). */
    int (*get_async_event)(struct ibv_context *ctx,
                           struct ibv_async_event *ev);
    void (*ack_async_event)(struct ibv_async_event *ev);
    const char *(*event_type_str)(enum ibv_event_type ev);
} vb_api_t;

/* The table this build of the plugin uses (vapi.c, or an emulation). */
extern const vb_api_t *const vb__api;

#endif /* XFER_PLUGINS_VERBS_VAPI_H */
