/* xfer.h - public API of libxfer: agents, memory registration, metadata
 * exchange and one-sided READ / WRITE / notification transfers. */
#ifndef XFER_XFER_H
#define XFER_XFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define XFER_VERSION_MAJOR 0
#define XFER_VERSION_MINOR 1
#define XFER_VERSION_PATCH 0

/* Longest agent name, terminating NUL excluded. */
#define XFER_NAME_MAX 255

/* ------------------------------------------------------------------ */
/* Status codes                                                        */
/* ------------------------------------------------------------------ */

/* Every call returns one of these.  XFER_OK and XFER_IN_PROG are not
 * errors; every error is negative.  xfer_strerror() gives the generic
 * sentence, xfer_last_error() the specific one for the calling thread. */
typedef enum xfer_status {
    XFER_OK = 0,                       /* done; data is where it was sent */
    XFER_IN_PROG = 1,                  /* posted, not complete yet */
    XFER_ERR_INVALID = -1,             /* bad argument, spec or metadata */
    XFER_ERR_NOT_FOUND = -2,           /* no such plugin, agent, region */
    XFER_ERR_NOMEM = -3,               /* out of memory */
    XFER_ERR_NOT_SUPPORTED = -4,       /* backend cannot do this */
    XFER_ERR_BACKEND = -5,             /* transport failed locally */
    XFER_ERR_REMOTE_DISCONNECT = -6,   /* peer gone, link cut, replaced */
    XFER_ERR_TIMEOUT = -7,             /* no progress within the bound */
    XFER_ERR_CANCELED = -8,            /* cancelled by the caller */
    XFER_ERR_ACCESS = -9,              /* refused: key, bounds, deregistered */
    XFER_ERR_BUSY = -10,               /* object still in use */
    XFER_ERR_EXISTS = -11,             /* already there */
    XFER_ERR_LOAD = -12,               /* plugin could not be loaded */
    XFER_ERR_CONFIG = -13,             /* unknown key, bad type or range */
    XFER_ERR_AUTH = -14,               /* peer failed authentication */
} xfer_status_t;

/* Generic sentence for a status code; never NULL, never freed. */
const char *xfer_strerror(xfer_status_t status);

/* The specific sentence for the last error returned to this thread
 * (which key, which descriptor, which plugin file).  Valid until the
 * next xfer call on this thread; "" when there is none. */
const char *xfer_last_error(void);

/* "major.minor.patch" of the library actually loaded. */
const char *xfer_version(void);

/* Free memory the library handed to the caller (metadata blobs). */
void xfer_free(void *ptr);

/* ------------------------------------------------------------------ */
/* Objects                                                             */
/* ------------------------------------------------------------------ */

typedef struct xfer_agent xfer_agent_t;     /* owns everything below */
typedef struct xfer_backend xfer_backend_t; /* a plugin with its config */
typedef struct xfer_mem xfer_mem_t;         /* a registration */
typedef struct xfer_prep xfer_prep_t;       /* a validated (prepared) list */
typedef struct xfer_req xfer_req_t;         /* a transfer request */

typedef enum xfer_mem_type {
    XFER_MEM_DRAM = 0,
    XFER_MEM_VRAM = 1,
} xfer_mem_type_t;

typedef enum xfer_op {
    XFER_OP_READ = 1,  /* pull remote memory into local memory */
    XFER_OP_WRITE = 2, /* push local memory into remote memory */
} xfer_op_t;

/* One contiguous piece of memory.  dev is the device id (0 for DRAM). */
typedef struct xfer_desc {
    uintptr_t addr;
    size_t len;
    uint64_t dev;
} xfer_desc_t;

/* A descriptor list: a memory type and an array the caller owns.  The
 * library copies what it needs; the array may be freed after the call. */
typedef struct xfer_dlist {
    xfer_mem_type_t type;
    size_t count;
    const xfer_desc_t *descs;
} xfer_dlist_t;

/* ------------------------------------------------------------------ */
/* Agent                                                               */
/* ------------------------------------------------------------------ */

typedef struct xfer_agent_opts {
    size_t size;              /* sizeof(xfer_agent_opts_t), set by _init */
    const char *name;         /* unique among the agents that talk; required */
    int progress_thread;      /* 1: a thread drives transfers (default 1) */
    const char *listen_addr;  /* side-channel listener "host:port", NULL: none */
    unsigned progress_wait_us;/* progress thread sleep bound (default 100000) */
    unsigned progress_spin_us;/* after activity, poll this long before
                                 sleeping (default 50; 0: never spin) */
    /* Finding peers (see the section of that name below). */
    unsigned listen_timeout_ms; /* listener: a client must finish each
                                 request within this (default 5000) */
    const char *etcd_endpoints; /* "http://h:p[,http://h:p...]"; NULL:
                                 XFER_ETCD_ENDPOINTS, unset: no etcd */
    const char *etcd_namespace; /* key prefix (default "/xfer/agents/") */
    unsigned etcd_ttl_s;      /* lease TTL in seconds (default 10, min 2) */
    /* Security (docs/security.md). */
    const char *auth_key_file;/* shared secret every peer must prove, on
                                 every backend and the listener, and that
                                 signs metadata; NULL: XFER_AUTH_KEY_FILE,
                                 unset: no authentication */
    /* Bounds on what peers can make the agent hold (docs/security.md);
     * 0: the default. */
    size_t notif_queue_bytes; /* received notifications not yet taken, per
                                 sender, in bytes (default 16 MiB); past
                                 it the sender's connection is not read */
    unsigned notif_queue_count; /* ... and in number (default 65536) */
    unsigned max_remote_agents; /* remote agents loaded (default 4096) */
    unsigned md_max_regions;  /* regions in one metadata blob (default
                                 65536) */
    unsigned listen_max_clients;  /* listener clients at once (default 64) */
    unsigned listen_max_per_addr; /* of them from one address (default 8) */
    size_t listen_buffer_bytes;   /* requests and replies the listener
                                     holds for all its clients together
                                     (default 256 MiB) */
    /* etcd over TLS (https:// endpoints; docs/api.md, etcd).  The server's
     * certificate and host name are always verified. */
    const char *etcd_cacert;  /* CA file (PEM) trusted for etcd's server
                                 certificate; NULL: XFER_ETCD_CACERT,
                                 unset: the system's CAs */
    const char *etcd_cert;    /* client certificate (PEM) for etcd's
                                 --client-cert-auth; NULL: XFER_ETCD_CERT */
    const char *etcd_key;     /* its private key (PEM); NULL: XFER_ETCD_KEY,
                                 unset: in the etcd_cert file */
    /* Telemetry (section of that name below). */
    int telemetry;            /* 1: keep counters (default 1); 0: none */
    /* The event plane on NATS (docs/events.md).  Everything below is
     * used only when a server is given. */
    const char *nats_url;     /* "nats://h:p[,nats://h:p...]"; NULL:
                                 XFER_NATS_URL, unset: no NATS */
    const char *nats_prefix;  /* first subject tokens (default "xfer") */
    unsigned nats_off;        /* XFER_NATS_OFF_* bits: what not to do
                                 (default 0: everything) */
    unsigned nats_stats_ms;   /* telemetry snapshot period (default
                                 10000, at least 100) */
    unsigned nats_queue;      /* events held while the server is slow or
                                 away (default 4096); past it they are
                                 dropped and counted */
    const char *nats_bucket;  /* JetStream key-value bucket of metadata
                                 (default "xfer_agents") */
    unsigned nats_ttl_s;      /* a dead agent's metadata lives at most
                                 this long (default 10, min 2) */
} xfer_agent_opts_t;

/* nats_off bits. */
#define XFER_NATS_OFF_EVENTS   0x1u /* no lifecycle or failure events */
#define XFER_NATS_OFF_STATS    0x2u /* no telemetry snapshots */
#define XFER_NATS_OFF_METADATA 0x4u /* no metadata in the bucket, no
                                       answers to fetches */

/* Fill opts with defaults; always call it before setting fields. */
void xfer_agent_opts_init(xfer_agent_opts_t *opts);

/* Create an agent.  Its epoch (see metadata) is fixed here. */
xfer_status_t xfer_agent_create(const xfer_agent_opts_t *opts,
                                xfer_agent_t **agent);

/* Destroy an agent: stops its progress thread, fails and frees requests,
 * deregisters memory and unloads backends.  NULL is accepted. */
void xfer_agent_destroy(xfer_agent_t *agent);

/* The agent's name as given at creation. */
const char *xfer_agent_name(const xfer_agent_t *agent);

/* The agent's epoch: larger for an agent created later under the same
 * name, so peers can tell a restarted agent from the old one. */
uint64_t xfer_agent_epoch(const xfer_agent_t *agent);

/* ------------------------------------------------------------------ */
/* Backends                                                            */
/* ------------------------------------------------------------------ */

/* Add a backend from a spec string:
 *   name[:key=value[,key=value]...]
 * A value may be double-quoted ("a,b;c") with \" and \\ inside quotes,
 * or use a backslash to escape one character outside quotes (tls=a\,b).
 * XFER_<NAME>_<KEY> environment variables override the string.  Backends
 * are preferred in the order they are added.  One instance per plugin. */
xfer_status_t xfer_backend_add(xfer_agent_t *agent, const char *spec,
                               xfer_backend_t **backend);

/* Same, with the parameters given as a JSON object text, e.g.
 * {"port": 0, "nodelay": true}.  json may be NULL for all defaults. */
xfer_status_t xfer_backend_add_json(xfer_agent_t *agent, const char *plugin,
                                    const char *json,
                                    xfer_backend_t **backend);

/* The plugin name of a backend instance ("tcp"). */
const char *xfer_backend_name(const xfer_backend_t *backend);

/* Look up an agent's backend instance by plugin name. */
xfer_status_t xfer_backend_find(xfer_agent_t *agent, const char *name,
                                xfer_backend_t **backend);

/* Room for any state sentence (xfer_backend_state, xfer_plugin_info_t). */
#define XFER_STATE_MAX 256

/* One sentence on what a backend instance does now, e.g. for uds
 * "mode=auto; peers: 1 via shm, 0 via cma, 1 via socket (1 by EPERM
 * fallback)".  buf (len bytes, XFER_STATE_MAX holds any sentence) is
 * always NUL-terminated; a longer sentence is cut.
 * XFER_ERR_NOT_SUPPORTED if the plugin reports no state. */
xfer_status_t xfer_backend_state(xfer_backend_t *backend, char *buf,
                                 size_t len);

/* Capability bits of a plugin. */
#define XFER_CAP_READ   (1u << 0)
#define XFER_CAP_WRITE  (1u << 1)
#define XFER_CAP_NOTIF  (1u << 2)
#define XFER_CAP_REMOTE (1u << 3) /* reaches other hosts */
#define XFER_CAP_LOCAL  (1u << 4) /* reaches processes on this host */
/* How a backend keeps a target to its registrations (one of the two):
 * SW_CHECK: the target's CPU checks every incoming operation (key,
 *   bounds, access, still registered); a bad one fails that request with
 *   XFER_ERR_ACCESS and the connection stays up (tcp, uds).
 * HW_KEYS: the NIC or library checks a packed remote key; a bad access
 *   fails the request (XFER_ERR_ACCESS or XFER_ERR_REMOTE_DISCONNECT) and
 *   may break the connection, which the backend rebuilds for the next
 *   post (ucx, ofi, verbs). */
#define XFER_CAP_SW_CHECK (1u << 5)
#define XFER_CAP_HW_KEYS  (1u << 6)

/* Memory type bits: 1u << XFER_MEM_DRAM, 1u << XFER_MEM_VRAM. */
#define XFER_MEMBIT(type) (1u << (type))

typedef struct xfer_param_info {
    const char *name;
    const char *type;    /* "bool", "int", "uint", "size", "string" */
    const char *defval;  /* default as text */
    const char *doc;     /* one line */
    int64_t min, max;    /* range of numeric types; min > max: unbounded */
} xfer_param_info_t;

typedef struct xfer_plugin_info {
    const char *name;         /* plugin name, or file stem if it failed */
    const char *path;         /* file it was loaded from */
    const char *version;      /* plugin's own version string */
    unsigned abi_major, abi_minor;
    unsigned caps;            /* XFER_CAP_* */
    unsigned mem_types;       /* XFER_MEMBIT(...) */
    size_t nparams;
    const xfer_param_info_t *params;
    const char *error;        /* NULL if loaded, else why not */
    /* What the plugin says about this host now (e.g. "cross-process
     * copy (CMA): available"); NULL if it says nothing or failed to load.
     * Appended before 1.0: the array's stride grew, so a program built
     * against an older xfer.h must be rebuilt (docs/api.md). */
    const char *state;
} xfer_plugin_info_t;

/* Scan the plugin search path (XFER_PLUGIN_PATH, then the install
 * directory) and describe every plugin found, loaded or not.  The array
 * and its strings belong to the library until xfer_plugin_list_free(). */
xfer_status_t xfer_plugin_list(xfer_plugin_info_t **infos, size_t *count);
void xfer_plugin_list_free(xfer_plugin_info_t *infos, size_t count);

/* ------------------------------------------------------------------ */
/* Memory registration                                                 */
/* ------------------------------------------------------------------ */

/* What peers may do to a registration. */
#define XFER_ACCESS_READ  (1u << 0) /* peers may READ it */
#define XFER_ACCESS_WRITE (1u << 1) /* peers may WRITE it */
#define XFER_ACCESS_RW    (XFER_ACCESS_READ | XFER_ACCESS_WRITE)

typedef struct xfer_mem_opts {
    size_t size;              /* sizeof(xfer_mem_opts_t), set by _init */
    xfer_backend_t *backend;  /* only this backend; NULL: every one that
                                 supports the memory type */
    unsigned access;          /* XFER_ACCESS_*, default XFER_ACCESS_RW */
    int publish;              /* 1 (default): served to peers that fetch
                                 this agent's metadata (listener, etcd);
                                 0: only in blobs the application asks
                                 for by handle (xfer_md_get's mems) */
} xfer_mem_opts_t;

void xfer_mem_opts_init(xfer_mem_opts_t *opts);

/* Register every descriptor of list as one region each, with every
 * backend of the agent that supports the memory type (or only with
 * opts->backend).  Each region gets a random 64-bit key that peers must
 * present, and the access rights of opts (what peers may do: a READ of
 * a write-only region is refused, by the target's check on software
 * backends and by the NIC's key on hardware ones).  Overlapping
 * registrations are allowed.  opts may be NULL.  Registering is slow on
 * hardware backends (pinning); it never stalls other threads' transfers
 * on other backends. */
xfer_status_t xfer_mem_register(xfer_agent_t *agent, const xfer_dlist_t *list,
                                const xfer_mem_opts_t *opts, xfer_mem_t **mem);

/* Deregister.  XFER_ERR_BUSY while a request or prepared list still uses
 * one of its regions; incoming remote operations on it are refused from
 * the moment this returns. */
xfer_status_t xfer_mem_deregister(xfer_agent_t *agent, xfer_mem_t *mem);

/* ------------------------------------------------------------------ */
/* Metadata                                                            */
/* ------------------------------------------------------------------ */

/* What a metadata blob carries. */
#define XFER_MD_CONN (1u << 0) /* per-backend connection info */
#define XFER_MD_MEM  (1u << 1) /* registrations and their public keys */
#define XFER_MD_ALL  (XFER_MD_CONN | XFER_MD_MEM)

/* Longest metadata blob accepted or produced, in bytes. */
#define XFER_MD_MAX (64u << 20)

/* Produce this agent's metadata as a NUL-terminated JSON text (*len
 * excludes the NUL); free it with xfer_free().  what selects the parts;
 * with XFER_MD_MEM, mems/nmems select registrations (nmems == 0: all). */
xfer_status_t xfer_md_get(xfer_agent_t *agent, unsigned what,
                          xfer_mem_t *const *mems, size_t nmems,
                          char **blob, size_t *len);

/* Load a peer's metadata.  A blob with a newer epoch for a known name
 * replaces the old remote agent (its requests then fail with
 * XFER_ERR_REMOTE_DISCONNECT); the same epoch merges (partial updates);
 * an older epoch is refused.  The peer's name is copied into name
 * (name NULL or name_size 0: not wanted); a name_size too small for the
 * name and its NUL is XFER_ERR_INVALID, refused before anything loads. */
xfer_status_t xfer_md_load(xfer_agent_t *agent, const void *blob, size_t len,
                           char *name, size_t name_size);

/* Forget a remote agent: disconnect, fail its requests. */
xfer_status_t xfer_md_invalidate(xfer_agent_t *agent, const char *name);

/* XFER_OK if a remote agent of that name is loaded and connectable. */
xfer_status_t xfer_md_check(xfer_agent_t *agent, const char *name);

/* Connect to a loaded remote agent now, on every backend that reaches
 * it, instead of at the first post: the first transfer then pays no
 * connection set-up.  Waits up to timeout_ms (0: 5000).  XFER_OK when
 * every such backend is connected; XFER_ERR_TIMEOUT, or the error of
 * the first backend that failed, with a sentence naming it.  Backends
 * that connect only lazily are skipped. */
xfer_status_t xfer_md_connect(xfer_agent_t *agent, const char *remote_agent,
                              unsigned timeout_ms);

/* One region of a loaded remote agent, as its metadata describes it. */
typedef struct xfer_region_info {
    uintptr_t addr;
    size_t len;
    xfer_mem_type_t type;
    uint64_t dev;
    unsigned access;          /* XFER_ACCESS_READ | XFER_ACCESS_WRITE bits:
                                 what the peer lets us do there */
} xfer_region_info_t;

/* The regions of remote agent `remote_agent` known from its metadata, in
 * address order: *count receives how many there are, and the first
 * min(max, *count) are copied into regions (max 0: only count them;
 * regions may then be NULL).  XFER_ERR_NOT_FOUND if it is not loaded. */
xfer_status_t xfer_md_regions(xfer_agent_t *agent, const char *remote_agent,
                              xfer_region_info_t *regions, size_t max,
                              size_t *count);

/* ------------------------------------------------------------------ */
/* Transfers                                                           */
/* ------------------------------------------------------------------ */

typedef struct xfer_req_opts {
    size_t size;              /* sizeof(xfer_req_opts_t), set by _init */
    xfer_backend_t *backend;  /* pin to one backend; NULL: first that fits */
    const void *notif;        /* default notification, NULL: none */
    size_t notif_len;
    unsigned timeout_ms;      /* a post not complete within this fails with
                                 XFER_ERR_TIMEOUT (0: only the backend's
                                 own bound); needs a backend that can
                                 cancel */
} xfer_req_opts_t;

void xfer_req_opts_init(xfer_req_opts_t *opts);

/* Longest notification message, bytes. */
#define XFER_NOTIF_MAX (64u << 10)

/* Create a request from descriptor lists: local[i] moves to or from
 * remote[i] of agent `remote_agent`; lengths must match pairwise.  Each
 * local descriptor must lie inside a local registration and each remote
 * one inside a registration in the peer's metadata.  opts may be NULL. */
xfer_status_t xfer_req_create(xfer_agent_t *agent, xfer_op_t op,
                              const xfer_dlist_t *local,
                              const xfer_dlist_t *remote,
                              const char *remote_agent,
                              const xfer_req_opts_t *opts, xfer_req_t **req);

/* Validate a list once, so requests can be built from indices into it
 * with no lookups.  remote_agent NULL: the list is local memory. */
xfer_status_t xfer_prep_create(xfer_agent_t *agent, const xfer_dlist_t *list,
                               const char *remote_agent, xfer_prep_t **prep);

/* Release a prepared list.  XFER_ERR_BUSY while requests use it. */
xfer_status_t xfer_prep_release(xfer_prep_t *prep);

/* Create a request from prepared lists: local entry lidx[i] moves to or
 * from remote entry ridx[i], for i < count. */
xfer_status_t xfer_req_create_prepped(xfer_agent_t *agent, xfer_op_t op,
                                      xfer_prep_t *local, const size_t *lidx,
                                      xfer_prep_t *remote, const size_t *ridx,
                                      size_t count,
                                      const xfer_req_opts_t *opts,
                                      xfer_req_t **req);

/* Pass as notif to xfer_req_post to send no notification at all, even
 * when the request has a default one. */
#define XFER_NOTIF_NONE ((const void *)xfer_notif_none)
extern const char xfer_notif_none[1];

/* Post (or repost) a request.  notif NULL: the request's default
 * notification (if any); XFER_NOTIF_NONE: none; anything else: that
 * message for this post only.  Returns XFER_OK when complete at once,
 * XFER_IN_PROG when under way, XFER_ERR_BUSY when the previous post is
 * still in progress, or an error. */
xfer_status_t xfer_req_post(xfer_req_t *req, const void *notif,
                            size_t notif_len);

/* XFER_OK: the data is visible where it was sent (the target's memory
 * for a WRITE, local memory for a READ).  XFER_IN_PROG: not yet.  The
 * error a post ended with, also one that failed at once; XFER_ERR_INVALID
 * for a request never posted.  Also drives progress when the agent has
 * no progress thread. */
xfer_status_t xfer_req_status(xfer_req_t *req);

/* Wait up to timeout_ms for a posted request to end: its final status
 * (as xfer_req_status), or XFER_IN_PROG when the time ran out first (the
 * request goes on).  Sleeps rather than spins when nothing is pending. */
xfer_status_t xfer_req_wait(xfer_req_t *req, unsigned timeout_ms);

/* Stop a posted request.  XFER_OK when it stopped (its status is then
 * XFER_ERR_CANCELED) or had already ended; XFER_IN_PROG when the
 * transport must finish what is on the wire first (poll status).  A
 * request that ended by its own timeout_ms may still be held by its
 * backend (bytes on the wire to a peer that stopped reading): cancel
 * answers XFER_IN_PROG until it is free to post or release again. */
xfer_status_t xfer_req_cancel(xfer_req_t *req);

/* Release a request.  An in-progress request is cancelled first; if
 * that cannot finish at once XFER_ERR_BUSY is returned and the request
 * stays valid.  NULL is accepted. */
xfer_status_t xfer_req_release(xfer_req_t *req);

/* The backend a request was bound to. */
xfer_backend_t *xfer_req_backend(const xfer_req_t *req);

/* ------------------------------------------------------------------ */
/* Notifications                                                       */
/* ------------------------------------------------------------------ */

typedef struct xfer_notif_opts {
    size_t size;              /* sizeof(xfer_notif_opts_t), set by _init */
    xfer_backend_t *backend;  /* pin to one backend; NULL: first that can */
} xfer_notif_opts_t;

void xfer_notif_opts_init(xfer_notif_opts_t *opts);

/* Send a notification alone to a remote agent.  Notifications from one
 * agent to another arrive in the order they were posted or sent, each
 * exactly once, behind the data of every request posted before them on
 * the same backend.  opts may be NULL. */
xfer_status_t xfer_notif_send(xfer_agent_t *agent, const char *remote_agent,
                              const void *msg, size_t len,
                              const xfer_notif_opts_t *opts);

/* from: the sender's name as bound when its connection was made. */
typedef void (*xfer_notif_cb_t)(void *arg, const char *from, const void *msg,
                                size_t len);

/* Hand every queued notification to cb, oldest first, and forget it.
 * *count (may be NULL) receives how many were handed over.  The callback
 * may call into the agent (it runs without the agent lock). */
xfer_status_t xfer_notif_drain(xfer_agent_t *agent, xfer_notif_cb_t cb,
                               void *arg, size_t *count);

/* A file descriptor (owned by the agent) that is readable while
 * notifications are queued and not readable once they are drained, for
 * poll/epoll loops.  Notifications arrive through progress: without a
 * progress thread, also watch xfer_agent_event_fd() and call
 * xfer_progress() when it fires. */
xfer_status_t xfer_notif_fd(xfer_agent_t *agent, int *fd);

/* ------------------------------------------------------------------ */
/* Progress                                                            */
/* ------------------------------------------------------------------ */

/* Drive every backend once, without blocking. */
xfer_status_t xfer_progress(xfer_agent_t *agent);

/* A file descriptor that becomes readable when xfer_progress() has work
 * to do, for poll/epoll loops.  Owned by the agent. */
xfer_status_t xfer_agent_event_fd(xfer_agent_t *agent, int *fd);

/* ------------------------------------------------------------------ */
/* Shareable memory                                                    */
/* ------------------------------------------------------------------ */

/* Back the allocation with huge pages (MFD_HUGETLB, 2 MiB); fails with
 * XFER_ERR_NOMEM and a sentence when none are reserved. */
#define XFER_ALLOC_HUGE (1u << 0)

/* Allocate size bytes (rounded up to a page) of memory that same-host
 * backends can share with a peer: a memfd mapped MAP_SHARED, zeroed.
 * Register it like any other memory; uds then lets peers map it and copy
 * with no system call per transfer.  The agent owns it: free it with
 * xfer_mem_free() after deregistering it, or it is freed with the agent. */
xfer_status_t xfer_mem_alloc(xfer_agent_t *agent, size_t size, unsigned flags,
                             void **ptr);
/* Free memory from xfer_mem_alloc() of the same agent.  NULL is accepted. */
xfer_status_t xfer_mem_free(xfer_agent_t *agent, void *ptr);

/* ------------------------------------------------------------------ */
/* Finding peers: the side-channel listener and etcd                   */
/* ------------------------------------------------------------------ */

/* The address the agent's listener is bound to ("127.0.0.1:40123", or
 * "[::1]:40123"), with an ephemeral port resolved.  XFER_ERR_NOT_FOUND
 * when the agent has no listener (opts.listen_addr was NULL). */
xfer_status_t xfer_agent_listen_addr(xfer_agent_t *agent, char *buf,
                                     size_t size);

/* Send this agent's metadata (what = XFER_MD_*) to the listener at
 * hostport ("host:port"), which loads it.  timeout_ms bounds the whole
 * exchange (0: 5000).  A refusal returns the peer's status and sentence. */
xfer_status_t xfer_md_send(xfer_agent_t *agent, const char *hostport,
                           unsigned what, unsigned timeout_ms);

/* Fetch the metadata of the agent listening at hostport and load it as
 * xfer_md_load() does.  name: the agent expected there (NULL: whichever
 * it is); the loaded name is copied into name_out (may be NULL). */
xfer_status_t xfer_md_fetch(xfer_agent_t *agent, const char *hostport,
                            const char *name, unsigned timeout_ms,
                            char *name_out, size_t name_size);

/* Tell the agent listening at hostport to forget this agent, as if it
 * had called xfer_md_invalidate(its_agent, our_name). */
xfer_status_t xfer_md_send_invalidate(xfer_agent_t *agent,
                                      const char *hostport,
                                      unsigned timeout_ms);

/* With etcd configured, an agent publishes its full metadata under
 * <namespace><name>, bound to a lease it keeps alive, and rewrites it
 * whenever a backend is added or memory is (de)registered.  Peers that
 * fetched a name follow it: a newer epoch published under it is loaded,
 * and a deleted or expired key invalidates it.
 *
 * Fetch a peer's metadata from etcd and load it, waiting up to
 * timeout_ms for the key to appear (0: one look).  XFER_ERR_TIMEOUT
 * when it did not, XFER_ERR_TIMEOUT or XFER_ERR_BACKEND when etcd could
 * not be reached; XFER_ERR_NOT_SUPPORTED without etcd. */
xfer_status_t xfer_md_fetch_etcd(xfer_agent_t *agent, const char *name,
                                 unsigned timeout_ms);

/* The same without waiting: returns at once, and the agent's etcd
 * thread loads the metadata when it is (or becomes) published.  Poll
 * xfer_md_check(agent, name) until it returns XFER_OK. */
xfer_status_t xfer_md_fetch_start(xfer_agent_t *agent, const char *name);

/* With NATS configured (nats_url), an agent also keeps its metadata in a
 * JetStream key-value bucket (the entry is refreshed while it lives and
 * expires nats_ttl_s after it dies) and answers fetches on a subject, so
 * a peer needs neither a listening port nor etcd (docs/events.md).  As
 * with etcd, peers fetched this way are followed: a newer epoch is
 * loaded; a peer whose heartbeats stop is invalidated within nats_ttl_s
 * + 1 s, and one whose entry is deleted at once (without a secret; with
 * one, heartbeats decide).  Do not destroy the agent while a fetch
 * waits.
 *
 * Fetch a peer's metadata over NATS and load it, waiting up to
 * timeout_ms for the peer to answer (0: one request).  XFER_ERR_TIMEOUT
 * when nobody answered; XFER_ERR_NOT_SUPPORTED without NATS. */
xfer_status_t xfer_md_fetch_nats(xfer_agent_t *agent, const char *name,
                                 unsigned timeout_ms);

/* ------------------------------------------------------------------ */
/* Telemetry                                                           */
/* ------------------------------------------------------------------ */

/* Counters the agent keeps as transfers happen (unless opts telemetry
 * is 0), per backend and per remote agent, read at any time without
 * stopping transfers.  Each is a running total since the agent (or, for
 * a remote agent, the first load of its name) began, except in_flight.
 * A snapshot is not atomic across fields: each field is exact on its
 * own.  docs/api.md, "Telemetry", says when each is counted. */

/* Latency buckets of post-to-completion time: bucket 0 counts requests
 * under 1 us, bucket i (1 <= i < last) those in [2^(i-1), 2^i) us, the
 * last those of 2^(XFER_STATS_LAT_BUCKETS-2) us (about 8.4 s) or more. */
#define XFER_STATS_LAT_BUCKETS 25
/* errors[] is indexed by -status: errors[6] counts
 * XFER_ERR_REMOTE_DISCONNECT. */
#define XFER_STATS_CODES 16

typedef struct xfer_stats {
    uint64_t read_ops, write_ops;       /* posts accepted */
    uint64_t read_bytes, write_bytes;   /* bytes those posts moved */
    uint64_t descs;                     /* descriptors of those posts */
    uint64_t done;                      /* posts that ended XFER_OK */
    uint64_t failed;                    /* posts refused or ended in error */
    uint64_t errors[XFER_STATS_CODES];  /* failed, by code */
    uint64_t notif_sent, notif_sent_bytes;
    uint64_t notif_recv, notif_recv_bytes;
    uint64_t in_flight;                 /* posted and not ended, now */
    uint64_t lat_count, lat_sum_us;     /* completions timed */
    uint64_t lat_us[XFER_STATS_LAT_BUCKETS];
} xfer_stats_t;

/* Read counters into *out (size: sizeof(*out), for later growth).
 * backend NULL: all backends together; remote_agent NULL: everything
 * the backend did, with any peer (including peers since invalidated).
 * XFER_ERR_NOT_FOUND for a backend the agent does not have or a remote
 * agent it keeps no counters for; XFER_ERR_NOT_SUPPORTED when telemetry
 * is off. */
xfer_status_t xfer_stats_get(xfer_agent_t *agent, const char *backend,
                             const char *remote_agent, xfer_stats_t *out,
                             size_t size);

/* What each field of xfer_stats_t is: its name in xfer_stats_json, where
 * it lies in the struct, how many uint64_t it holds (errors and lat_us
 * are arrays) and one sentence on when it counts.  A static table of
 * *count entries, in struct order (xfer-info --counters prints it). */
typedef struct xfer_stats_field {
    const char *name;
    size_t offset;                      /* in xfer_stats_t */
    size_t count;                       /* uint64_t values there */
    const char *help;
} xfer_stats_field_t;

const xfer_stats_field_t *xfer_stats_fields(size_t *count);

/* Every counter as one JSON document (the "stats" event of
 * docs/events.md, without its envelope): totals, then per backend, then
 * per remote agent and backend.  *json is freed with xfer_free. */
xfer_status_t xfer_stats_json(xfer_agent_t *agent, char **json);

/* ------------------------------------------------------------------ */
/* Event plane                                                         */
/* ------------------------------------------------------------------ */

/* Also publish each notification received from remote_agent (NULL: from
 * every sender) on the event plane, after its data is visible, as it is
 * queued for xfer_notif_drain (on 1; on 0 stops it).  At most 1024 names
 * are followed.  XFER_ERR_NOT_SUPPORTED without NATS. */
xfer_status_t xfer_events_notif(xfer_agent_t *agent, const char *remote_agent,
                                int on);

/* The event plane's own counters. */
typedef struct xfer_events_stats {
    uint64_t published;                 /* events handed to the server */
    uint64_t dropped;                   /* lost to a full queue */
    uint64_t queued;                    /* waiting now */
    uint64_t reconnects;                /* connections remade */
    int connected;                      /* 1 while the server is there */
} xfer_events_stats_t;

xfer_status_t xfer_events_stats(xfer_agent_t *agent, xfer_events_stats_t *out,
                                size_t size);

#ifdef __cplusplus
}
#endif

#endif /* XFER_XFER_H */
