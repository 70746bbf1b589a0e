/* internal.h - the agent's objects and the helpers core files share.
 * Nothing here is visible to users or plugins. */
#ifndef XFER_CORE_INTERNAL_H
#define XFER_CORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <xfer/backend.h>
#include <xfer/xfer.h>

#include "core/auth.h"
#include "core/config.h"
#include "core/loader.h"
#include "core/registry.h"
#include "core/stats.h"

#define XFER_API __attribute__((visibility("default")))

/* Backends one agent may hold; regions keep a handle per backend. */
#define XFER__MAX_BACKENDS 8

/* ---- errors and logging (error.c, log.c) ---------------------------- */

/* Set the thread's specific error sentence and return status. */
xfer_status_t xfer__err(xfer_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
xfer_status_t xfer__verr(xfer_status_t status, const char *fmt, va_list ap);
/* Put "<prefix>: " before the thread's current sentence (or before the
 * generic one if none is set), adding context on the way out. */
xfer_status_t xfer__err_prefix(xfer_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "ERR_TIMEOUT" for XFER_ERR_TIMEOUT: the code's name without XFER_. */
const char *xfer__status_name(xfer_status_t status);
/* Forget the thread's last error (at the start of every public call). */
void xfer__err_clear(void);
/* Whether something set an error since the last clear. */
bool xfer__err_isset(void);

void xfer__log(xfer_log_level_t level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void xfer__vlog(xfer_log_level_t level, const char *who, const char *fmt,
                va_list ap);
/* Copy at most len bytes of src (up to a NUL) into dst, control bytes
 * and 0x7f as \xNN and backslash doubled, cut to fit size; returns the
 * length written.  Every log line passes through it (log.c), so bytes
 * from a peer can never start a line of their own. */
size_t xfer__log_escape(char *dst, size_t size, const char *src, size_t len);

/* ---- objects --------------------------------------------------------- */

typedef struct xfer__remote xfer__remote_t;
/* The control plane (core/ctl.h): listener and etcd client. */
typedef struct xfer__listener xfer__listener_t;
typedef struct xfer__etcd xfer__etcd_t;
/* The event plane (core/events.h). */
typedef struct xfer__nats xfer__nats_t;

struct xfer_backend {
    xfer_agent_t *agent;
    unsigned index;                  /* position in agent->backends */
    xfer__plugin_t *plugin;
    const xfer_backend_ops_t *ops;
    xfer__config_t config;
    xfer_host_t host;
    xfer_be_t *be;
    const char *name;                /* ops->hdr.name */
    int event_fd;                    /* -1 if the plugin has none */
    uint32_t flags;                  /* XFER_BE_* (0 before ABI minor 3) */
    bool polled;                     /* progress on every pass */
    /* Serialises calls into a plugin without XFER_BE_THREAD_SAFE: one
     * instance's lock, so a slow op stalls this backend alone. */
    pthread_mutex_t lock;
    /* Everything it did, with every peer (core/stats.h). */
    _Alignas(64) xfer__stats_t stats;
};

/* A local region: one descriptor of a registration. */
typedef struct xfer__region {
    xfer__range_t range;             /* addr, len, key */
    xfer_mem_type_t type;
    uint64_t dev;
    xfer_mem_t *owner;
    unsigned access;                 /* XFER_ACCESS_* peers may use */
    bool ready;                      /* every backend has registered it:
                                        peers and requests may use it */
    unsigned refs;                   /* requests and preps using it */
    void *be_mem[XFER__MAX_BACKENDS];/* plugin handle per backend or NULL */
} xfer__region_t;

struct xfer_mem {
    xfer_agent_t *agent;
    xfer_mem_t *prev, *next;
    bool publish;                    /* in the metadata the agent serves
                                        by itself (listener, etcd) */
    size_t count;
    xfer__region_t *regions;         /* count entries */
};

/* A peer's region, from its metadata. */
typedef struct xfer__rregion {
    xfer__range_t range;
    xfer_mem_type_t type;
    uint64_t dev;
    unsigned access;                 /* XFER_ACCESS_* the peer grants */
    void *be_rmem[XFER__MAX_BACKENDS];
    /* Public parts (plugin -> base64) not unpacked yet, from the last
     * metadata: a backend added later unpacks its own.  NULL: none. */
    json_t *pub;
} xfer__rregion_t;

/* A remote agent.  Requests and preps hold references; invalidation
 * takes it out of the agent's list (dead = true) and removes its peers
 * from the backends, but the memory lives until the last reference. */
/* The part of max_remote_agents that unauthenticated listener clients
 * may take: one in this many. */
#define XFER__OPEN_SHARE 4

struct xfer__remote {
    xfer_agent_t *agent;
    char *name;
    uint64_t epoch;
    unsigned refs;
    _Atomic bool dead;               /* read without the lock on posts */
    const char *dead_why;            /* static text: why it is gone */
    xfer_be_peer_t *peer[XFER__MAX_BACKENDS];
    /* Connection info (plugin -> base64) no backend has used yet, from
     * the last metadata that carried it: a backend added later connects
     * with it.  NULL: none. */
    json_t *conn;
    xfer__registry_t regions;        /* of xfer__rregion_t */
    /* Introduced through a listener without authentication: counted
     * against the agent's open budget (open_nremotes, open_nregions). */
    bool open;
    size_t open_regions;
    xfer__pstats_t *stats;           /* its name's counters, or NULL */
    xfer__remote_t *next;
};

/* One entry of a prepared list. */
typedef struct xfer__prep_ent {
    uint64_t addr;
    size_t len;
    void *region;                    /* xfer__region_t or xfer__rregion_t */
} xfer__prep_ent_t;

struct xfer_prep {
    xfer_agent_t *agent;
    xfer__remote_t *remote;          /* NULL: local memory */
    xfer_mem_type_t type;
    unsigned refs;                   /* requests built from it */
    size_t count;
    xfer__prep_ent_t *ents;
    xfer_prep_t *next;
};

struct xfer_req {
    pthread_mutex_t lock;            /* one caller at a time per request */
    xfer_agent_t *agent;
    xfer_op_t op;
    xfer_backend_t *backend;
    xfer__remote_t *remote;
    xfer_be_req_t *breq;
    size_t nseg;
    xfer_be_seg_t *segs;
    xfer__region_t **lregions;       /* nseg, for reference counts */
    xfer_prep_t *lprep, *rprep;      /* references held, or NULL */
    void *notif;                     /* default notification */
    size_t notif_len;
    xfer_status_t state;             /* last known status */
    bool posted;                     /* ever posted */
    bool timed_out;                  /* cancelled by its own deadline */
    unsigned timeout_ms;             /* per-post bound, 0: none */
    uint64_t deadline_us;            /* of the current post, 0: none */
    /* Telemetry (core/stats.h): what one post moves, when the current
     * one began, and whether it is counted in flight. */
    uint64_t bytes;
    uint64_t post_us;
    bool counted;
    xfer_req_t *prev, *next;
};

/* A sender with notifications queued, and its share of the queue
 * (notif_queue_bytes and _count bound it).  Lives while it has some. */
typedef struct xfer__nq_sender {
    struct xfer__nq_sender *next;    /* hash chain */
    size_t bytes;
    size_t count;
    char name[];
} xfer__nq_sender_t;

#define XFER__NQ_BUCKETS 64
/* The whole notification queue holds at most this many senders' shares
 * (notif_queue_bytes and _count each times this). */
#define XFER__NQ_SHARES 4

typedef struct xfer__notif {
    struct xfer__notif *next;
    const char *from;                /* sender->name */
    xfer__nq_sender_t *sender;
    size_t len;
    unsigned char msg[];
} xfer__notif_t;

/* Locks, in the order they nest (never take one to the left while
 * holding one to the right):
 *   cfg_lock -> lock -> request lock -> backend lock -> reg_lock, nq_lock
 *   md_lock -> lock
 * cfg_lock serialises the slow control calls that run plugins' slow ops
 * (registration, deregistration, adding a backend) without holding
 * `lock`, so those never stall request creation or transfers.  md_lock
 * does the same for loading metadata (metadata.c: a peer's tables are
 * built outside `lock` and swapped in under it); it never nests with
 * cfg_lock.  `lock` guards the agent's lists for short sections.  The
 * data path (post, status, progress) takes only a request's and a
 * backend's lock. */
struct xfer_agent {
    pthread_mutex_t cfg_lock;
    pthread_mutex_t md_lock;         /* one metadata load at a time */
    pthread_mutex_t lock;            /* guards the lists below */
    pthread_rwlock_t reg_lock;       /* the local registry: host mem_check
                                        reads it from progress */
    char *name;
    uint64_t epoch;

    /* Appended under cfg_lock and lock, never removed before destroy;
     * readers without a lock load nbackends (acquire) first. */
    xfer_backend_t *backends[XFER__MAX_BACKENDS];
    _Atomic unsigned nbackends;

    xfer__registry_t regions;        /* of xfer__region_t; under reg_lock */
    xfer_mem_t *mems;
    xfer__remote_t *remotes;
    unsigned nremotes;               /* in remotes */
    unsigned max_remote_agents;      /* opts, defaults applied */
    unsigned md_max_regions;         /* per blob and per remote agent */
    /* What unauthenticated listener clients introduced (under lock):
     * at most XFER__OPEN_SHARE of max_remote_agents, md_max_regions
     * regions in all, so strangers cannot fill the application's room. */
    unsigned open_nremotes;
    size_t open_nregions;
    xfer_req_t *reqs;
    xfer_prep_t *preps;

    pthread_mutex_t nq_lock;         /* the notification queue */
    xfer__notif_t *nq_head, *nq_tail;
    size_t nq_count;
    int nq_fd;                       /* eventfd: readable while queued */
    xfer__nq_sender_t *nq_senders[XFER__NQ_BUCKETS];
    size_t nq_max_bytes, nq_max_count; /* per sender */
    /* All senders together: names are claims without a secret, so a
     * share per name alone bounds nothing (one peer, many names). */
    size_t nq_bytes, nq_held;        /* queued and not yet given back */
    bool nq_full;                    /* a backend heard "no room": wake
                                        progress when the user drains */

    int epfd;                        /* backends' event fds + wake_fd */
    int wake_fd;                     /* eventfd */
    bool progress_thread;
    unsigned progress_wait_us;
    unsigned progress_spin_us;
    pthread_t thread;
    _Atomic bool stop;
    _Atomic bool sleeping;           /* the thread may be in a long wait */
    /* xfer_req_wait sleeps here; the progress thread broadcasts after a
     * pass that handled events, when someone waits. */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond;
    _Atomic unsigned waiters;

    /* Control plane (core/ctl.h); set at creation, never changed. */
    xfer__listener_t *listener;      /* NULL: no listener */
    xfer__etcd_t *etcd;              /* NULL: no etcd */
    xfer__nats_t *nats;              /* NULL: no event plane */

    xfer__stats_table_t st;          /* per-name counters (stats.c) */

    /* The shared secret (core/auth.h), NULL: no authentication; set at
     * creation, never changed. */
    xfer__auth_t *auth;
};

/* ---- shared between core files --------------------------------------- */

/* remote.c */
xfer__remote_t *xfer__remote_find(xfer_agent_t *a, const char *name);
void xfer__remote_ref(xfer__remote_t *r);
void xfer__remote_unref(xfer__remote_t *r);
/* Drop a reference (lock held) without freeing: true when it was the
 * last, and the caller frees r with xfer__remote_free after unlocking,
 * so that a peer's big tables are never freed under the agent lock. */
bool xfer__remote_put(xfer__remote_t *r);
/* Free a remote agent nobody references (no lock needed). */
void xfer__remote_free(xfer__remote_t *r);
/* Mark dead, remove backend peers (failing in-flight requests), unlink. */
void xfer__remote_kill(xfer__remote_t *r, const char *why);
/* xfer__remote_kill for callers that can unlock before freeing: returns
 * r when the caller must xfer__remote_free it after unlocking, or NULL
 * when requests still hold it (the last of them frees it). */
xfer__remote_t *xfer__remote_evict(xfer__remote_t *r, const char *why);
/* Invalidate the remote agent called name, if one is loaded (agent lock
 * not held): evicted under the lock, freed after it.  True if there was
 * one. */
bool xfer__remote_invalidate(xfer_agent_t *a, const char *name,
                             const char *why);
/* Connect backend j to r with r's kept connection info, if it has some
 * for j's plugin and j is not connected yet; once connected, unpack for
 * j what r's regions kept. */
xfer_status_t xfer__remote_reach(xfer__remote_t *r, unsigned j);
/* Unpack rr's kept public part for backend j, if any and j is connected
 * to r; what is unpacked is no longer kept.  shared: r is loaded (other
 * threads see it) while rr is not yet and the agent lock is not held:
 * r's peer is read under the lock and the backend entered hand over
 * hand (xfer__be_enter_from_lock); XFER_ERR_REMOTE_DISCONNECT if r was
 * invalidated meanwhile.  Otherwise the caller holds the lock or r is
 * its own. */
xfer_status_t xfer__rregion_unpack(xfer__remote_t *r, xfer__rregion_t *rr,
                                   unsigned j, bool shared);
/* Release rr's backend handles and free it (it is in no registry). */
void xfer__rregion_free(xfer_agent_t *a, xfer__rregion_t *rr);
/* Backend b was just added (agent lock held): connect it to every
 * loaded remote agent and unpack their regions for it, from what their
 * last metadata said.  A remote that refuses is logged and skipped. */
void xfer__remote_backfill(xfer_agent_t *a, xfer_backend_t *b);

/* metadata.c */
/* Load a blob the application, or the control plane it chose (etcd),
 * hands over: a newer epoch replaces a loaded agent.  With a secret the
 * blob must carry its signature (XFER_ERR_AUTH otherwise). */
xfer_status_t xfer__md_apply(xfer_agent_t *a, const void *blob, size_t len,
                             char *name, size_t name_size);
/* The same for a blob a listener client sent.  client: the agent name it
 * authenticated as, which the blob must name; NULL (no secret): it may
 * add agents, never replace a loaded one or change its connection info. */
xfer_status_t xfer__md_apply_sent(xfer_agent_t *a, const void *blob,
                                  size_t len, const char *client, char *name,
                                  size_t name_size);

/* Whether a blob may be believed before it is loaded: always without a
 * secret; with one, only when it carries the secret's signature. */
bool xfer__md_trusted(const xfer_agent_t *a, const void *blob, size_t len);

/* request.c: release everything at agent destruction. */
void xfer__req_destroy_all(xfer_agent_t *a);

/* notif.c */
void xfer__notif_push(xfer_agent_t *a, const char *from, const void *msg,
                      size_t len);
/* host->notif_room: whether from's share of the queue takes len more
 * bytes and one more notification (always, while it has none queued). */
int xfer__notif_room(xfer_agent_t *a, const char *from, size_t len);
void xfer__notif_free_all(xfer_agent_t *a);

/* agent.c */
/* Drive every backend once (each under its own lock, if it has one);
 * no agent lock held.  Returns events handled. */
int xfer__progress_all(xfer_agent_t *a);
/* Whether the agent may sleep: every backend armed with nothing pending.
 * *poll_ms is lowered to 1 while a backend must be polled regardless. */
bool xfer__arm_all(xfer_agent_t *a, int *poll_ms);
/* Wake whoever sleeps on the agent's event fd. */
void xfer__agent_wake(xfer_agent_t *a);
/* Tell xfer_req_wait callers that progress happened. */
void xfer__agent_done(xfer_agent_t *a);
uint64_t xfer__now_us(void);

/* The backends the agent has now (a stable prefix of a->backends). */
static inline unsigned xfer__nbackends(xfer_agent_t *a)
{
    return atomic_load_explicit(&a->nbackends, memory_order_acquire);
}

/* Enter and leave a plugin instance: its own lock unless it is
 * thread-safe. */
static inline void xfer__be_enter(xfer_backend_t *b)
{
    if (!(b->flags & XFER_BE_THREAD_SAFE))
        pthread_mutex_lock(&b->lock);
}
static inline void xfer__be_leave(xfer_backend_t *b)
{
    if (!(b->flags & XFER_BE_THREAD_SAFE))
        pthread_mutex_unlock(&b->lock);
}

/* mem.c */
/* "READ", "WRITE", "READ and WRITE": for sentences about access rights. */
const char *xfer__access_name(unsigned access);
/* Register a region with one backend (cfg_lock held, not lock). */
xfer_status_t xfer__region_register_be(xfer_backend_t *b, xfer__region_t *r);
/* Deregister every region of m and free it (cfg_lock held, not lock). */
void xfer__mem_free(xfer_mem_t *m);

/* shm.c: memory from xfer_mem_alloc (process-wide table) */
xfer_status_t xfer__shm_lookup(uintptr_t addr, size_t len,
                               xfer_shm_info_t *info);
void xfer__shm_free_all(xfer_agent_t *a);

/* The agent's list lock (see struct xfer_agent for the order). */
static inline void xfer__lock(xfer_agent_t *a) { pthread_mutex_lock(&a->lock); }
static inline void xfer__unlock(xfer_agent_t *a) { pthread_mutex_unlock(&a->lock); }

/* Call into b about a peer found under the agent lock, hand over hand:
 * with b entered, the peer cannot be removed (that takes the agent lock,
 * then the backend) until the call returns, so a serialised backend is
 * called without the agent lock.  A thread-safe backend has no lock to
 * enter and is called with the agent lock still held, which keeps the
 * peer just as well.  Read what the call needs of the remote before
 * entering: the agent lock may be gone after. */
static inline void xfer__be_enter_from_lock(xfer_agent_t *a, xfer_backend_t *b)
{
    xfer__be_enter(b);
    if (!(b->flags & XFER_BE_THREAD_SAFE))
        xfer__unlock(a);
}
static inline void xfer__be_leave_from_lock(xfer_agent_t *a, xfer_backend_t *b)
{
    if (b->flags & XFER_BE_THREAD_SAFE)
        xfer__unlock(a);
    xfer__be_leave(b);
}

/* Lay a caller's options struct (whose first field is its size) over
 * defaults already in dst: as many bytes as both versions hold, so a
 * program built against an older or newer xfer.h keeps working.  NULL:
 * the defaults stay. */
#define XFER__OPTS_COPY(dst, src)                                           \
    do {                                                                    \
        if ((src) != NULL)                                                  \
            memcpy((dst), (src), (src)->size < sizeof(*(dst))               \
                                     ? (src)->size : sizeof(*(dst)));       \
    } while (0)

/* Fill n bytes with random data (getrandom); falls back never. */
xfer_status_t xfer__random(void *buf, size_t n);

#endif /* XFER_CORE_INTERNAL_H */
