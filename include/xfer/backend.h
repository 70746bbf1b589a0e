/* backend.h - the plugin ABI: the only header a transport plugin needs.
 * A plugin exports one const xfer_backend_ops_t named xfer_backend_<name>_v1. */
#ifndef XFER_BACKEND_H
#define XFER_BACKEND_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI major is part of the exported symbol's name; a change of major
 * is a new symbol.  Minor versions only append fields to the ops table;
 * the core reads an optional op only when hdr.struct_size covers it. */
#define XFER_BACKEND_ABI_MAJOR 1
/* Minor 1 appended xfer_host_t.shm_lookup (memory from xfer_mem_alloc);
 * a plugin reads it only when host->size covers it.  Minor 2 appended
 * the optional ops probe and state to xfer_backend_ops_t; the core calls
 * them only when hdr.struct_size covers them.  Minor 3 appended flags
 * (threading and progress model) and the optional ops arm and
 * peer_connect, and xfer_be_region_t.access.  Minor 4 appended auth,
 * auth_mac, auth_check and notif_room to xfer_host_t.  Minor 5 appended
 * the optional op quiesce. */
#define XFER_BACKEND_ABI_MINOR 5

#define XFER_BACKEND_STR2(x) #x
#define XFER_BACKEND_STR(x) XFER_BACKEND_STR2(x)
#define XFER_BACKEND_SYM2(name, major) xfer_backend_##name##_v##major
#define XFER_BACKEND_SYM1(name, major) XFER_BACKEND_SYM2(name, major)
/* The symbol a plugin called `name` exports:
 *   const xfer_backend_ops_t XFER_BACKEND_SYMBOL(tcp) = { ... };
 * gives xfer_backend_tcp_v1. */
#define XFER_BACKEND_SYMBOL(name) \
    XFER_BACKEND_SYM1(name, XFER_BACKEND_ABI_MAJOR)

/* Bytes of an authentication code (HMAC-SHA-256). */
#define XFER_AUTH_MAC_LEN 32

/* Largest connection-info or packed-key blob a plugin may produce. */
#define XFER_BE_BLOB_MAX 4096

/* ------------------------------------------------------------------ */
/* Parameters: declared by the plugin, parsed and validated by the core */
/* ------------------------------------------------------------------ */

typedef enum xfer_param_type {
    XFER_PARAM_BOOL,   /* int: 0 or 1; accepts 0/1/true/false/yes/no/on/off */
    XFER_PARAM_INT,    /* int64_t */
    XFER_PARAM_UINT,   /* uint64_t */
    XFER_PARAM_SIZE,   /* size_t; accepts suffixes K, M, G (powers of 2) */
    XFER_PARAM_STRING, /* const char *, owned by the core for the
                          lifetime of the instance */
} xfer_param_type_t;

typedef struct xfer_param {
    const char *name;       /* [a-z0-9_]+ */
    xfer_param_type_t type;
    const char *defval;     /* default, in spec-string syntax */
    const char *doc;        /* one line, shown by xfer-info */
    size_t offset;          /* offsetof(your_config, field) */
    int64_t min, max;       /* numeric range; min > max: unbounded */
} xfer_param_t;

/* ------------------------------------------------------------------ */
/* Host table: what the core offers the plugin                          */
/* ------------------------------------------------------------------ */

typedef enum xfer_log_level {
    XFER_LOG_ERROR = 0,
    XFER_LOG_WARN = 1,
    XFER_LOG_INFO = 2,
    XFER_LOG_DEBUG = 3,
} xfer_log_level_t;

/* A piece of shareable memory (ABI minor 1). */
typedef struct xfer_shm_info {
    int fd;            /* the memfd, owned by the core; one per
                          allocation, sealed against shrinking and
                          growing where the kernel allows (F_GET_SEALS) */
    uint64_t id;       /* random id of the allocation */
    uint64_t size;     /* bytes of the allocation, as asked of
                          xfer_mem_alloc, from offset 0 of the fd (the
                          file is longer by up to a page) */
    uint64_t offset;   /* of addr within the fd */
} xfer_shm_info_t;

typedef struct xfer_host {
    size_t size;            /* sizeof(xfer_host_t) of the core */
    void *ctx;              /* pass back to every callback */
    const char *agent_name; /* this agent's name */
    uint64_t agent_epoch;   /* this agent's epoch */

    /* Log a line, prefixed with the plugin name by the core. */
    void (*log)(void *ctx, xfer_log_level_t level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

    /* Record the specific error sentence for the current call (what
     * xfer_last_error() will return) and return `status` for chaining. */
    xfer_status_t (*error)(void *ctx, xfer_status_t status, const char *fmt,
                           ...) __attribute__((format(printf, 3, 4)));

    /* Queue a notification received from `from` (the name the peer bound
     * when it connected).  Call it only once the data of every operation
     * that preceded the notification on that connection is visible. */
    void (*notif_deliver)(void *ctx, const char *from, const void *msg,
                          size_t len);

    /* Check an incoming operation against the registration table: the
     * key must name a live registration made with this backend that
     * allows `access` (XFER_ACCESS_READ: the peer reads our memory,
     * XFER_ACCESS_WRITE: it writes it), and [addr, addr+len) must lie
     * inside it.  On success *mem is the
     * plugin's own handle for that registration (from mem_register).
     * On failure returns XFER_ERR_ACCESS and writes which check failed
     * to msg (msg_size bytes): the caller logs it, once, with what it
     * knows of the peer; with msg_size 0 the core logs it instead. */
    xfer_status_t (*mem_check)(void *ctx, uint64_t key, uint64_t addr,
                               uint64_t len, unsigned access, void **mem,
                               char *msg, size_t msg_size);

    /* Ask the core to call progress soon (e.g. from a plugin thread). */
    void (*wake)(void *ctx);

    /* ---- ABI minor 1: check host->size before use ---- */
    /* Whether [addr, addr+len) lies in memory from xfer_mem_alloc(): then
     * XFER_OK and *info describes its memfd (the fd stays the core's: dup
     * it to keep it), else XFER_ERR_NOT_FOUND. */
    xfer_status_t (*shm_lookup)(void *ctx, uintptr_t addr, size_t len,
                                struct xfer_shm_info *info);

    /* ---- ABI minor 4: check host->size before use ---- */
    /* 1 when the agent holds a shared secret (auth_key_file): every
     * connection, both ways, must then prove it before anything else is
     * served on it (docs/security.md); 0: no authentication. */
    int auth;
    /* HMAC-SHA-256 of msg under the agent's secret into mac.
     * XFER_ERR_NOT_SUPPORTED when the agent has no secret. */
    xfer_status_t (*auth_mac)(void *ctx, const void *msg, size_t len,
                              uint8_t mac[XFER_AUTH_MAC_LEN]);
    /* Whether mac is msg's code under the agent's secret, compared in
     * constant time: XFER_OK, or XFER_ERR_AUTH (also without a secret). */
    xfer_status_t (*auth_check)(void *ctx, const void *msg, size_t len,
                                const uint8_t mac[XFER_AUTH_MAC_LEN]);
    /* Whether the agent's queue has room for one more notification of
     * len bytes from `from` (opts notif_queue_bytes and _count, per
     * sender): 1, or 0 when that sender's share is full.  On 0 stop
     * reading the connection it came on (backpressure, never a drop) and
     * ask again on a later progress call: when the application takes
     * notifications the core wakes the progress of every backend. */
    int (*notif_room)(void *ctx, const char *from, size_t len);
} xfer_host_t;

/* ------------------------------------------------------------------ */
/* Objects passed to the plugin                                          */
/* ------------------------------------------------------------------ */

/* A local region being registered. */
typedef struct xfer_be_region {
    uintptr_t addr;
    size_t len;
    xfer_mem_type_t type;
    uint64_t dev;
    uint64_t key;            /* the random key peers must present */
    /* ---- ABI minor 3 ---- */
    unsigned access;         /* XFER_ACCESS_*: what peers may do; a
                                hardware backend builds its key with
                                exactly these rights */
} xfer_be_region_t;

/* A remote region, from the peer's metadata. */
typedef struct xfer_be_rregion {
    uint64_t addr;
    uint64_t len;
    xfer_mem_type_t type;
    uint64_t dev;
    uint64_t key;
} xfer_be_rregion_t;

/* One segment of a transfer: local [laddr, laddr+len) in local
 * registration lmem, remote [raddr, raddr+len) in remote region rmem. */
typedef struct xfer_be_seg {
    void *lmem;          /* from mem_register */
    void *rmem;          /* from rmem_unpack */
    uintptr_t laddr;
    uint64_t raddr;
    size_t len;
} xfer_be_seg_t;

/* ------------------------------------------------------------------ */
/* The ops table                                                         */
/* ------------------------------------------------------------------ */

/* Never changes shape: every ABI version starts with it. */
typedef struct xfer_backend_hdr {
    uint16_t abi_major;   /* XFER_BACKEND_ABI_MAJOR */
    uint16_t abi_minor;   /* XFER_BACKEND_ABI_MINOR */
    uint32_t struct_size; /* sizeof(xfer_backend_ops_t) compiled against */
    const char *name;     /* must equal the file stem and symbol name */
    const char *version;  /* the plugin's own version */
    uint32_t caps;        /* XFER_CAP_* */
    uint32_t mem_types;   /* XFER_MEMBIT(...) */
} xfer_backend_hdr_t;

/* Opaque plugin objects.  The core never looks inside. */
typedef struct xfer_be xfer_be_t;           /* an instance */
typedef struct xfer_be_peer xfer_be_peer_t; /* a remote agent */
typedef struct xfer_be_req xfer_be_req_t;   /* a prepared transfer */

/* Flags of an ops table (ABI minor 3; a table too short to hold them
 * has flags 0).
 *
 * XFER_BE_THREAD_SAFE: the plugin locks its own state, and the core calls
 *   any op of one instance from several threads at once: posts of
 *   different requests, progress, registration, peers.  Without it the
 *   core serialises every call into the instance with a mutex of that
 *   instance alone, never an agent-wide one: a slow op (registering
 *   gigabytes, a deregistration's bounded wait) then stalls this
 *   backend's transfers, and no other backend's.
 *   Either way the core never calls, at the same time: two ops on one
 *   request (req_post/req_check/req_cancel/req_release), an op on a peer
 *   with peer_remove of that peer for notif_send and peer_connect (for
 *   requests the plugin's request must keep what it needs of the peer),
 *   mem_register/mem_deregister with each other, and anything with init
 *   or fini.  Host callbacks may be called from any op and any thread.
 *
 * XFER_BE_POLL: completions and incoming operations appear only when
 *   progress() is called (a UCP worker, a libfabric CQ, a verbs CQ).
 *   The progress thread then calls progress on every pass, also while it
 *   spins, not only when the event fd fired.  A backend without an event
 *   fd is treated the same way. */
#define XFER_BE_THREAD_SAFE (1u << 0)
#define XFER_BE_POLL        (1u << 1)

/* Threading: see XFER_BE_THREAD_SAFE above.  No op may block: waiting
 * belongs in progress(); the one exception is mem_deregister, which may
 * wait, bounded, for accesses by peers that it must outlast
 * (docs/plugins.md), and mem_register, which may take as long as the
 * hardware needs to pin memory.
 *
 * Progress and sleeping: the progress thread sleeps on the backends'
 * event fds only after every backend with an arm op answered XFER_OK.
 * A backend without an event fd and without arm is polled at least
 * every millisecond while the agent has a progress thread.
 *
 * Ops marked (mandatory) must be set; a missing one is a load error. */
typedef struct xfer_backend_ops {
    xfer_backend_hdr_t hdr;

    /* Parameter table and the size of the config struct it fills. */
    const xfer_param_t *params;
    size_t nparams;
    size_t config_size;

    /* (mandatory) Create an instance.  config is the filled struct,
     * valid until fini.  host stays valid until fini. */
    xfer_status_t (*init)(const xfer_host_t *host, const void *config,
                          xfer_be_t **be);
    /* (mandatory) Destroy; peers and registrations are already gone. */
    void (*fini)(xfer_be_t *be);

    /* (mandatory) Connection info peers need to reach this instance;
     * write at most *len bytes to buf, set *len to the bytes used. */
    xfer_status_t (*conn_info)(xfer_be_t *be, void *buf, size_t *len);

    /* (mandatory) A remote agent from its connection info.  May connect
     * lazily.  Must check the info and refuse it with XFER_ERR_INVALID. */
    xfer_status_t (*peer_add)(xfer_be_t *be, const char *name, uint64_t epoch,
                              const void *info, size_t len,
                              xfer_be_peer_t **peer);
    /* (mandatory) Forget a peer: disconnect and fail its in-flight
     * requests with XFER_ERR_REMOTE_DISCONNECT.  Requests created on it
     * stay valid for check and release (post fails). */
    void (*peer_remove)(xfer_be_t *be, xfer_be_peer_t *peer);

    /* (mandatory) Register a local region. */
    xfer_status_t (*mem_register)(xfer_be_t *be, const xfer_be_region_t *r,
                                  void **mem);
    /* (mandatory) Deregister: after it returns the plugin must not touch
     * the region's memory again (abort or copy out what is in flight). */
    void (*mem_deregister)(xfer_be_t *be, void *mem);
    /* (optional) Public part peers need (remote key); at most *len bytes.
     * Absent: the core's own key, address and length are enough. */
    xfer_status_t (*mem_pack)(xfer_be_t *be, void *mem, void *buf,
                              size_t *len);
    /* (mandatory) A remote region of peer from its public part. */
    xfer_status_t (*rmem_unpack)(xfer_be_t *be, xfer_be_peer_t *peer,
                                 const xfer_be_rregion_t *r, const void *buf,
                                 size_t len, void **rmem);
    /* (mandatory) */
    void (*rmem_release)(xfer_be_t *be, void *rmem);

    /* (mandatory) Prepare a transfer of nseg segments to peer; segs stays
     * valid and unchanged until req_release. */
    xfer_status_t (*req_create)(xfer_be_t *be, xfer_op_t op,
                                xfer_be_peer_t *peer, const xfer_be_seg_t *segs,
                                size_t nseg, xfer_be_req_t **req);
    /* (mandatory) Start it.  notif (may be NULL) goes to the peer after
     * the data.  XFER_OK if already complete, XFER_IN_PROG, or error. */
    xfer_status_t (*req_post)(xfer_be_t *be, xfer_be_req_t *req,
                              const void *notif, size_t notif_len);
    /* (mandatory) XFER_OK, XFER_IN_PROG or the error it ended with. */
    xfer_status_t (*req_check)(xfer_be_t *be, xfer_be_req_t *req);
    /* (optional) Absent: cancel answers XFER_ERR_NOT_SUPPORTED. */
    xfer_status_t (*req_cancel)(xfer_be_t *be, xfer_be_req_t *req);
    /* (mandatory) Free; never called while the request is in progress. */
    void (*req_release)(xfer_be_t *be, xfer_be_req_t *req);

    /* (optional, mandatory with XFER_CAP_NOTIF) A notification alone. */
    xfer_status_t (*notif_send)(xfer_be_t *be, xfer_be_peer_t *peer,
                                const void *msg, size_t len);

    /* (mandatory) Make progress without blocking; return how many events
     * were handled (0 when idle) or a negative status on a fatal error. */
    int (*progress)(xfer_be_t *be);
    /* (optional) An fd that is readable when progress has work. */
    xfer_status_t (*event_fd)(xfer_be_t *be, int *fd);

    /* ---- ABI minor 2: check hdr.struct_size before use ---- */
    /* (optional) One sentence on what this transport can do on this host
     * right now (e.g. whether the kernel allows cross-process copies),
     * shown by xfer-info as the plugin's state.  No instance exists: it
     * may be called from any thread of a process that runs others, so a
     * probe that forks keeps its child to async-signal-safe calls, and it
     * must reap what it starts.  Write a NUL-terminated sentence of at
     * most len bytes (len >= XFER_STATE_MAX); XFER_OK to show it. */
    xfer_status_t (*probe)(char *buf, size_t len);
    /* (optional) One sentence on what this instance does now (which data
     * path its peers use and why), for xfer_backend_state(): a
     * NUL-terminated sentence of at most len bytes (the caller's buffer,
     * len >= 1; cut to fit). */
    xfer_status_t (*state)(xfer_be_t *be, char *buf, size_t len);

    /* ---- ABI minor 3: check hdr.struct_size before use ---- */
    /* XFER_BE_* */
    uint32_t flags;
    /* (optional) Prepare to sleep: XFER_OK when nothing is pending and
     * the event fd (if any) will become readable for anything that
     * happens from now on (ucp_worker_arm, ibv_req_notify_cq, fi_trywait);
     * XFER_ERR_BUSY when events are pending or work is under way, so the
     * caller must call progress again before sleeping.  A backend without
     * an event fd answers XFER_OK only when nothing can happen until the
     * next call into it or host->wake.  XFER_IN_PROG: nothing is pending,
     * but the fd does not cover everything that may arrive (a libfabric
     * CQ without a wait object): the caller may sleep at most 1 ms. */
    xfer_status_t (*arm)(xfer_be_t *be);
    /* (optional) Connect to peer now rather than at the first post:
     * XFER_OK once the connection is usable (handshake done, identities
     * bound), XFER_IN_PROG while under way (the core calls progress and
     * asks again), or the error the attempt ended with (host->error
     * says why).  Absent: the backend connects lazily. */
    xfer_status_t (*peer_connect)(xfer_be_t *be, xfer_be_peer_t *peer);

    /* ---- ABI minor 5: check hdr.struct_size before use ---- */
    /* (optional) The agent is being destroyed: drop every connection
     * peers made to this instance and accept no new one, so that what
     * they have on the wire fails as a lost connection (the initiator's
     * XFER_ERR_REMOTE_DISCONNECT), not as an access error from memory
     * deregistered under it.  Called once, after every peer was removed
     * and every request released, before the registrations are
     * deregistered and fini.  A transport whose peers reach memory
     * without the target's CPU (an RDMA NIC) needs it; one that serves
     * only in progress() does not, since progress has stopped by then. */
    void (*quiesce)(xfer_be_t *be);
} xfer_backend_ops_t;

#ifdef __cplusplus
}
#endif

#endif /* XFER_BACKEND_H */
