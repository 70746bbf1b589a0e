/* notif.c - notifications: sending one alone, and the agent's queue of
 * received ones, appended by backends as messages arrive (within each
 * sender's share) and drained by the user in arrival order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

/* Keep nq_fd readable exactly while the queue is not empty; both sides
 * of that change happen under nq_lock. */
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

/* ---- each sender's share -------------------------------------------- */

/* A backend asks before it takes a notification off the wire, and stops
 * reading that connection while the answer is no: a sender can make the
 * queue hold at most nq_max_bytes and nq_max_count of its notifications
 * (one always fits, so a bound below one message cannot wedge it), and
 * the application taking them is what lets it send more. */

static unsigned sender_bucket(const char *name)
{
    uint32_t h = 2166136261u;

    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 16777619u;
    return h % XFER__NQ_BUCKETS;
}

/* nq_lock held. */
static xfer__nq_sender_t *sender_find(xfer_agent_t *a, const char *name)
{
    xfer__nq_sender_t *s = a->nq_senders[sender_bucket(name)];

    while (s != NULL && strcmp(s->name, name) != 0)
        s = s->next;
    return s;
}

/* nq_lock held; NULL when out of memory. */
static xfer__nq_sender_t *sender_get(xfer_agent_t *a, const char *name)
{
    xfer__nq_sender_t *s = sender_find(a, name);
    size_t n;
    unsigned b;

    if (s != NULL)
        return s;
    n = strlen(name);
    if ((s = calloc(1, sizeof(*s) + n + 1)) == NULL)
        return NULL;
    memcpy(s->name, name, n + 1);
    b = sender_bucket(name);
    s->next = a->nq_senders[b];
    a->nq_senders[b] = s;
    return s;
}

/* n was taken by the user: give its sender's share back; nq_lock held. */
static void sender_release(xfer_agent_t *a, xfer__notif_t *n)
{
    xfer__nq_sender_t *s = n->sender, **pp;

    s->bytes -= n->len;
    a->nq_bytes -= n->len;
    a->nq_held--;
    if (--s->count > 0)
        return;
    for (pp = &a->nq_senders[sender_bucket(s->name)]; *pp != s;
         pp = &(*pp)->next)
        ;
    *pp = s->next;
    free(s);
}

static size_t nq_total(size_t share)
{
    return share > SIZE_MAX / XFER__NQ_SHARES ? SIZE_MAX
                                              : share * XFER__NQ_SHARES;
}

int xfer__notif_room(xfer_agent_t *a, const char *from, size_t len)
{
    xfer__nq_sender_t *s;
    int room;

    pthread_mutex_lock(&a->nq_lock);
    s = sender_find(a, from);
    room = s == NULL || s->count == 0 ||
           (s->count < a->nq_max_count && len <= a->nq_max_bytes &&
            s->bytes <= a->nq_max_bytes - len);
    /* The whole queue: XFER__NQ_SHARES senders' worth, whatever names
     * they claim (an empty queue always takes one, so a bound below
     * one message cannot wedge it). */
    room = room && (a->nq_held == 0 ||
                    (a->nq_held < nq_total(a->nq_max_count) &&
                     len <= nq_total(a->nq_max_bytes) &&
                     a->nq_bytes <= nq_total(a->nq_max_bytes) - len));
    if (!room)
        a->nq_full = true;
    pthread_mutex_unlock(&a->nq_lock);
    return room;
}

/* ---- the queue -------------------------------------------------------- */

void xfer__notif_push(xfer_agent_t *a, const char *from, const void *msg,
                      size_t len)
{
    xfer__notif_t *n = malloc(sizeof(*n) + len);

    if (n != NULL && len > 0)
        memcpy(n->msg, msg, len);
    pthread_mutex_lock(&a->nq_lock);
    if (n == NULL || (n->sender = sender_get(a, from)) == NULL) {
        pthread_mutex_unlock(&a->nq_lock);
        free(n);
        /* Losing a notification silently would break the exactly-once
         * promise; the least we owe is a loud line. */
        xfer__log(XFER_LOG_ERROR, a->name, "out of memory: dropped a %zu-byte "
                  "notification from %s", len, from);
        return;
    }
    n->next = NULL;
    n->len = len;
    n->from = n->sender->name;
    n->sender->bytes += len;
    n->sender->count++;
    a->nq_bytes += len;
    a->nq_held++;
    if (a->nq_tail != NULL)
        a->nq_tail->next = n;
    else
        a->nq_head = n;
    a->nq_tail = n;
    if (a->nq_count++ == 0)
        nq_fd_set(a, true);
    pthread_mutex_unlock(&a->nq_lock);
}

/* Free a list taken off the queue, giving its senders' shares back; a
 * backend that stopped reading for lack of room reads again at its next
 * progress, which the wake brings about now. */
static void free_list(xfer_agent_t *a, xfer__notif_t *n)
{
    bool wake;

    pthread_mutex_lock(&a->nq_lock);
    for (xfer__notif_t *it = n; it != NULL; it = it->next)
        sender_release(a, it);
    wake = a->nq_full && n != NULL;
    if (wake)
        a->nq_full = false;
    pthread_mutex_unlock(&a->nq_lock);
    while (n != NULL) {
        xfer__notif_t *next = n->next;

        free(n);
        n = next;
    }
    if (wake)
        xfer__agent_wake(a);
}

void xfer__notif_free_all(xfer_agent_t *a)
{
    free_list(a, a->nq_head);
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
    if (!agent->progress_thread)
        xfer__progress_all(agent);
    /* Take the whole queue, then call back unlocked: the callback may
     * post or send without deadlocking on the agent. */
    pthread_mutex_lock(&agent->nq_lock);
    list = agent->nq_head;
    agent->nq_head = agent->nq_tail = NULL;
    if (agent->nq_count > 0)
        nq_fd_set(agent, false);
    agent->nq_count = 0;
    pthread_mutex_unlock(&agent->nq_lock);

    for (xfer__notif_t *it = list; it != NULL; it = it->next, n++)
        cb(arg, it->from, it->msg, it->len);
    free_list(agent, list);
    if (count != NULL)
        *count = n;
    return XFER_OK;
}

/* ---- sending --------------------------------------------------------- */

XFER_API void xfer_notif_opts_init(xfer_notif_opts_t *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->size = sizeof(*opts);
}

/* The first backend (in the order added), or the pinned one, that can
 * carry notifications to rem.  Lock held. */
static xfer_backend_t *notif_backend(xfer_agent_t *a, xfer__remote_t *rem,
                                     xfer_backend_t *pin)
{
    unsigned nb = xfer__nbackends(a);

    for (unsigned j = 0; j < nb; j++) {
        xfer_backend_t *c = a->backends[j];

        if ((pin == NULL || c == pin) && (c->ops->hdr.caps & XFER_CAP_NOTIF) &&
            rem->peer[j] != NULL)
            return c;
    }
    return NULL;
}

XFER_API xfer_status_t xfer_notif_send(xfer_agent_t *agent,
                                       const char *remote_agent,
                                       const void *msg, size_t len,
                                       const xfer_notif_opts_t *opts)
{
    xfer_notif_opts_t o;
    xfer__remote_t *rem;
    xfer_backend_t *b;
    xfer_be_peer_t *peer;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || remote_agent == NULL || (len > 0 && msg == NULL))
        return xfer__err(XFER_ERR_INVALID, "xfer_notif_send: NULL argument");
    if (len > XFER_NOTIF_MAX)
        return xfer__err(XFER_ERR_INVALID, "notification of %zu bytes exceeds "
                         "%u", len, XFER_NOTIF_MAX);
    xfer_notif_opts_init(&o);
    XFER__OPTS_COPY(&o, opts);
    if (o.backend != NULL && o.backend->agent != agent)
        return xfer__err(XFER_ERR_INVALID, "backend %s belongs to another "
                         "agent", o.backend->name);
    xfer__lock(agent);
    rem = xfer__remote_find(agent, remote_agent);
    if (rem == NULL) {
        xfer__unlock(agent);
        return xfer__err(XFER_ERR_NOT_FOUND, "no remote agent '%s' is loaded "
                         "(load its metadata first)", remote_agent);
    }
    b = notif_backend(agent, rem, o.backend);
    if (b == NULL) {
        xfer__unlock(agent);
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "no backend%s%s of agent '%s' "
                         "can send notifications to agent '%s'",
                         o.backend ? " " : "", o.backend ? o.backend->name : "",
                         agent->name, remote_agent);
    }
    peer = rem->peer[b->index];
    xfer__be_enter_from_lock(agent, b);
    st = b->ops->notif_send(b->be, peer, msg, len);
    /* Still inside b: rem cannot be freed before we leave it. */
    if (st >= 0)
        xfer__stats_notif_sent(b, rem->stats, len);
    xfer__be_leave_from_lock(agent, b);
    if (st < 0 && !xfer__err_isset())
        xfer__err(st, "notification to agent '%s' failed: %s", remote_agent,
                  xfer_strerror(st));
    if (st >= 0 && b->polled &&
        (!agent->progress_thread || atomic_load(&agent->sleeping)))
        xfer__agent_wake(agent);
    return st;
}
