/* ctl.h - the agent's control plane beside the data path: the side-channel
 * listener (listener.c) and the etcd client (etcd.c), each in its own threads. */
#ifndef XFER_CORE_CTL_H
#define XFER_CORE_CTL_H

#include "core/internal.h"

/* listener.c */
/* Bind o->listen_addr ("host:port", host empty: 127.0.0.1, port 0:
 * ephemeral) and start serving send / fetch / invalidate for agent a,
 * within the listen_* bounds of o (0: their defaults). */
xfer_status_t xfer__listener_start(xfer_agent_t *a,
                                   const xfer_agent_opts_t *o,
                                   xfer__listener_t **out);
/* Stop the thread, close every connection, free.  NULL is accepted. */
void xfer__listener_stop(xfer__listener_t *l);

/* etcd.c */
/* With o's etcd_* options (endpoints NULL: XFER_ETCD_ENDPOINTS; neither:
 * *out = NULL, XFER_OK), start publishing agent a and following peers. */
xfer_status_t xfer__etcd_start(xfer_agent_t *a, const xfer_agent_opts_t *o,
                               xfer__etcd_t **out);
/* Join the threads and revoke the lease (best effort, bounded). */
void xfer__etcd_stop(xfer__etcd_t *e);
/* The agent's metadata changed: republish it soon.  NULL is accepted. */
void xfer__etcd_changed(xfer__etcd_t *e);

#endif /* XFER_CORE_CTL_H */
