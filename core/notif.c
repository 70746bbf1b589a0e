/* notif.c - the agent's queue of received notifications: appended by
 * backends as messages arrive, drained by the user in arrival order. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

/* Keep nq_fd readable exactly while the queue is not empty; both sides
 * of that change happen under the agent lock. */
static void nq_fd_set(xfer_agent_t *a, bool readable)
{
    uint64_t v = 1;

    if (readable) {
        if (write(a->nq_fd, &v, sizeof(v)) < 0) {
            /* EAGAIN: the counter is saturated, still readable. */
        }
    } else if (read(a->nq_fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: it was not readable. */
    }
}

void xfer__notif_push(xfer_agent_t *a, const char *from, const void *msg,
                      size_t len)
{
    xfer__notif_t *n = malloc(sizeof(*n) + len);

    if (n == NULL || (n->from = strdup(from)) == NULL) {
        free(n);
        /* Losing a notification silently would break the exactly-once
         * promise; the least we owe is a loud line. */
        xfer__log(XFER_LOG_ERROR, a->name, "out of memory: dropped a %zu-byte "
                  "notification from %s", len, from);
        return;
    }
    n->next = NULL;
    n->len = len;
    if (len > 0)
        memcpy(n->msg, msg, len);
    if (a->nq_tail != NULL)
        a->nq_tail->next = n;
    else
        a->nq_head = n;
    a->nq_tail = n;
    if (a->nq_count++ == 0)
        nq_fd_set(a, true);
}

static void free_list(xfer__notif_t *n)
{
    while (n != NULL) {
        xfer__notif_t *next = n->next;

        free(n->from);
        free(n);
        n = next;
    }
}

void xfer__notif_free_all(xfer_agent_t *a)
{
    free_list(a->nq_head);
    a->nq_head = a->nq_tail = NULL;
    if (a->nq_count > 0)
        nq_fd_set(a, false);
    a->nq_count = 0;
}

XFER_API xfer_status_t xfer_notif_fd(xfer_agent_t *agent, int *fd)
{
    xfer__err_clear();
    if (agent == NULL || fd == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_notif_fd: NULL argument");
    *fd = agent->nq_fd;
    return XFER_OK;
}

XFER_API xfer_status_t xfer_notif_drain(xfer_agent_t *agent, xfer_notif_cb_t cb,
                                        void *arg, size_t *count)
{
    xfer__notif_t *list;
    size_t n = 0;

    xfer__err_clear();
    if (count != NULL)
        *count = 0;
    if (agent == NULL || cb == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_notif_drain: NULL argument");
    xfer__lock(agent);
    if (!agent->progress_thread)
        xfer__progress_locked(agent);
    /* Take the whole queue, then call back unlocked: the callback may
     * post or send without deadlocking on the agent. */
    list = agent->nq_head;
    agent->nq_head = agent->nq_tail = NULL;
    if (agent->nq_count > 0)
        nq_fd_set(agent, false);
    agent->nq_count = 0;
    xfer__unlock(agent);

    for (xfer__notif_t *it = list; it != NULL; it = it->next, n++)
        cb(arg, it->from, it->msg, it->len);
    free_list(list);
    if (count != NULL)
        *count = n;
    return XFER_OK;
}
