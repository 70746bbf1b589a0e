/* stats.h - telemetry counters (docs/api.md, "Telemetry").
 *
 * One block of counters per backend (embedded in it) and, per remote
 * agent name, one block per backend (allocated the first time the name
 * uses that backend).  The data path only adds to them with relaxed
 * atomics: no lock, no allocation per transfer.  Readers sum them at any
 * time; each field is exact on its own, a snapshot is not atomic across
 * fields.
 *
 * Per-name blocks (xfer__pstats_t) live in a table of the agent under
 * st_lock, a leaf lock taken inside any other (also under a backend's
 * lock, where notifications arrive).  A loaded remote agent holds its
 * name's entry; entries nobody holds (a name invalidated, or a sender of
 * notifications never loaded) are kept until the table is full, then
 * dropped oldest first: the table never holds more than
 * max(max_remote_agents, 64) names. */
#ifndef XFER_CORE_STATS_H
#define XFER_CORE_STATS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

typedef struct xfer__stats {
    _Atomic uint64_t ops[2];         /* [0] READ, [1] WRITE */
    _Atomic uint64_t bytes[2];
    _Atomic uint64_t descs, done, failed;
    _Atomic uint64_t errors[XFER_STATS_CODES];
    _Atomic uint64_t notif_sent, notif_sent_bytes;
    _Atomic uint64_t notif_recv, notif_recv_bytes;
    _Atomic int64_t in_flight;
    _Atomic uint64_t lat_count, lat_sum_us;
    _Atomic uint64_t lat_us[XFER_STATS_LAT_BUCKETS];
} xfer__stats_t;

typedef struct xfer__pstats xfer__pstats_t;

/* The pieces of struct xfer_agent that stats.c owns. */
typedef struct xfer__stats_table {
    bool on;                         /* opts telemetry */
    pthread_mutex_t lock;            /* st_lock: the table, leaf */
    xfer__pstats_t *buckets[64];     /* by name hash */
    xfer__pstats_t *oldest, *newest; /* every entry, in creation order */
    unsigned count, max;
} xfer__stats_table_t;

struct xfer_agent;
struct xfer_backend;
struct xfer_req;

void xfer__stats_init(struct xfer_agent *a, bool on, unsigned max_names);
void xfer__stats_fini(struct xfer_agent *a);

/* The entry of name, made if missing (NULL when telemetry is off, or out
 * of memory), with a reference the caller keeps (a loaded remote). */
xfer__pstats_t *xfer__stats_hold(struct xfer_agent *a, const char *name);
void xfer__stats_drop(struct xfer_agent *a, xfer__pstats_t *p);

/* Request events; the request's lock is held, telemetry is on. */
/* Posted (r->post_us: when the post began): accepted (st IN_PROG or OK)
 * or refused (st < 0); notif: it carries a notification (of notif_len
 * bytes, which may be 0). */
void xfer__stats_post(struct xfer_req *r, xfer_status_t st, bool notif,
                      size_t notif_len);
/* Ended after a post that was accepted IN_PROG (st: OK or error); does
 * nothing for a request not counted in flight. */
void xfer__stats_end(struct xfer_req *r, xfer_status_t st);
/* Released while still counted in flight. */
void xfer__stats_forget(struct xfer_req *r);

/* Every counter as one JSON object (xfer_stats_json; NULL: no memory). */
struct json_t *xfer__stats_doc(struct xfer_agent *a);

/* A notification alone went to `to` over b (len bytes). */
void xfer__stats_notif_sent(struct xfer_backend *b, xfer__pstats_t *to,
                            size_t len);
/* A notification from `from` was queued, over b. */
void xfer__stats_notif_recv(struct xfer_backend *b, const char *from,
                            size_t len);

#endif /* XFER_CORE_STATS_H */
