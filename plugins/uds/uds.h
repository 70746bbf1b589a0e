/* uds.h - what the uds plugin's files share: its config, instance and
 * per-connection state; uds.c is the backend, direct.c the direct data path. */
#ifndef XFER_PLUGINS_UDS_H
#define XFER_PLUGINS_UDS_H

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"

#ifdef IOV_MAX
#define UDS_IOV IOV_MAX
#else
#define UDS_IOV 1024
#endif

typedef struct uds_config {
    const char *path;
    const char *allow_uids;
    const char *mode;
    uint64_t shm_maps_max;
    uint64_t timeout_ms;
    size_t inline_max;
    size_t rx_buf;
    uint64_t backlog;
    xfer__stream_limits_t lim; /* the engine's bounds (stream.h) */
} uds_config_t;

/* Users besides our own that may connect, be connected to and share
 * memory (allow_uids). */
#define UDS_ALLOW_MAX 32


enum { MODE_AUTO, MODE_CMA, MODE_SHM, MODE_SOCKET };
extern const char *const xfer__uds_mode_names[];

/* The path a connection's data took last, for xfer_backend_state(): the
 * socket until a direct copy succeeds, or for good after EPERM. */
enum { PATH_SOCKET, PATH_SHM, PATH_CMA, PATH_EPERM, NPATHS };

/* Connection info, 224 bytes (docs/wire-tcp.md, "uds connection info"):
 *   0 u32 magic "XUDS"   4 u8 version (1)   5 u8 abstract (0/1)
 *   6 u16 path length    8 u32 pid         12 u32 uid
 *  16 char[36] boot id  52 char[64] host name (NUL padded)
 * 116 u8[108] socket path (abstract: without the leading NUL) */
#define UDS_INFO_MAGIC 0x53445558u
#define UDS_INFO_VERSION 1u
#define UDS_INFO_SIZE 224u
#define UDS_BOOT_LEN 36u
#define UDS_HOST_LEN 64u
#define UDS_PATH_MAX 108u

/* The public part of a registration, 24 bytes:
 *   0 u32 magic "XUDM"  4 u8 version (1)  5 u8 shared  6 u16 0
 *   8 u64 memfd id     16 u64 offset of the region in the memfd */
#define UDS_PACK_MAGIC 0x4d445558u
#define UDS_PACK_SIZE 24u

/* Target side: what one accepted peer was given, from its first
 * operation that passed the target's check (it proved a key): its count
 * of direct copies under way into this process (a page it maps
 * read-write), so that a deregistration can wait for the copies that
 * passed the stamp check before it bumped it, and the memfds it got. */
typedef struct uds_share {
    struct uds_share *next, *prev;
    xfer__stream_conn_t *conn;  /* NULL once it closed */
    int fd;                     /* -1: no page (the peer copies unannounced) */
    uint64_t *inflight;
    int closed;     /* its connection closed: kept until it reads 0 */
    int stuck;      /* outlived a deregistration's bound: not waited for */
    pid_t pid;      /* the peer's process (0: not visible from here) */
    uint64_t *sent; /* ids of the memfds sent, each once per connection */
    size_t nsent, cap;
} uds_share_t;

/* A registration that covers a whole xfer_mem_alloc allocation, read
 * and write: the only memory handed to peers as a memfd (the engine
 * keeps it as the registration's private bytes). */
typedef struct uds_mem {
    int shared;
    int fd;                         /* our duplicate of its memfd */
    uint64_t id, size, off;
} uds_mem_t;

/* Threads (the plugin is XFER_BE_THREAD_SAFE): every op the core calls
 * runs under uds_t.lock, as the core's per-backend lock did, except a
 * post of a request without a notification whose peer's gate is open:
 * it copies on the direct path under the gate alone (direct.c).  The
 * lock is taken after the core's own (agent, request); host callbacks
 * made under it take only the core's leaf locks. */

/* A peer's gate (the engine keeps it as the peer's private bytes): live
 * is its connection's direct-path state while fast posts may use it,
 * readers the fast posts under way.  Whoever changes or unmaps that
 * state holds uds_t.lock, sets live to NULL and waits for readers to
 * drain (each side writes, then reads the other's word, sequentially
 * consistent: a post either sees NULL or is waited for). */
typedef struct uds_gate {
    struct uds_conn *live;
    unsigned readers;
} uds_gate_t;

typedef struct uds {
    pthread_mutex_t lock;           /* see "Threads" above */
    const xfer_host_t *host;
    xfer_be_t *be;
    uds_config_t cfg;
    int mode;
    int lfd;
    char fs_path[UDS_PATH_MAX + 1]; /* "" for an abstract socket */
    uid_t uid;
    uid_t allow[UDS_ALLOW_MAX];     /* allow_uids */
    unsigned nallow;
    unsigned long refused;          /* connections of other users */
    int warned_socket;              /* the EPERM fallback was logged */
    unsigned npath[NPATHS];         /* connections by their last path
                                       (atomic: fast posts move them) */
    int gen_fd;                     /* memfd of the registration stamp,
                                       sealed: peers map it read-only;
                                       -1: not shareable (old kernel) */
    uint64_t *gen;                  /* bumped by every deregistration;
                                       its page holds the liveness word */
    /* The liveness word's keeper (life.c): a thread of ours. */
    pthread_t life_thr;
    pthread_mutex_t life_mu;        /* guards life_state and life_stop */
    pthread_cond_t life_cv;
    int life_init;                  /* life_mu, life_cv initialised */
    int life_on;                    /* the thread runs: join it */
    int life_state;                 /* 0 starting, 1 holding, -errno */
    int life_stop;
    pid_t life_pid;                 /* the process that started it */
    uint8_t info[UDS_INFO_SIZE];
    struct iovec liov[UDS_IOV], riov[UDS_IOV];
    uint8_t **where;                /* shm: resolved remote addresses */
    size_t where_cap;
    /* Accepted peers we share memory with, and their in-flight counts.
     * Their first checked operations, closes (progress) and quiesce
     * (mem_deregister) are serialised by lock. */
    uds_share_t *shares;
    int warned_quiesce;             /* a peer's copy outlived the bound */
} uds_t;

/* A memfd a target shared with us, mapped for the life of the connection. */
typedef struct uds_map {
    uint64_t id;
    uint8_t *base;
    size_t size;
} uds_map_t;

/* An initiator connection's direct path (the engine keeps it as the
 * connection's private bytes); a target connection's share. */
typedef struct uds_conn {
    int on;             /* set up as an initiator's (counted in npath) */
    uds_gate_t *gate;   /* initiator: its peer's */
    xfer__stream_conn_t *conn;
    uds_share_t *share; /* target: what this peer maps of ours */
    const uint64_t *gen;/* the target's registration stamp, read-only */
    const uint32_t *life; /* its liveness word, in the same page */
    uint64_t *inflight; /* our direct copies under way there (its page) */
    pid_t pid;          /* the target, as the kernel saw it connect */
    int warned_maps;    /* shm_maps_max reached (logged once) */
    int socket_only;    /* the kernel refused CMA: frames from now on
                           (written atomically: fast posts read it) */
    int path;           /* PATH_*, counted in uds_t.npath (atomic) */
    size_t nmaps, cap, last; /* last: the map that answered last */
    uds_map_t *maps;
} uds_conn_t;

/* The registration stamp: one page, a u64 the target increments before
 * each deregistration.  The same page holds the target's liveness word
 * (life.c; docs/wire-tcp.md): at UDS_LIFE_OFF a futex word that holds
 * the id of a thread of the target's uds backend while that backend
 * lives, 0 once it closed, and FUTEX_OWNER_DIED, set by the kernel, once
 * that thread ended (the process was killed, exited or exec'd); valid
 * only under UDS_LIFE_MAGIC.  It shares the stamp's cache line: a post
 * reads both for the price of one.  Then the robust list through which
 * the kernel finds the word (the target's own; peers only see it). */
#define GEN_SIZE 4096u
#define UDS_LIFE_MAGIC 0x56494c58u /* "XLIV" */
#define UDS_LIFE_MAGIC_OFF 8u
#define UDS_LIFE_OFF 12u
#define UDS_LIFE_HEAD_OFF 64u
#define UDS_LIFE_ENTRY_OFF 128u

/* Whether the target whose liveness word this is still lives: one load,
 * one compare (a thread id, with neither FUTEX_OWNER_DIED nor
 * FUTEX_WAITERS, which no one sets while it lives). */
static inline int xfer__uds_alive(const uint32_t *w)
{
    return __atomic_load_n(w, __ATOMIC_SEQ_CST) - 1u < FUTEX_TID_MASK;
}
/* The in-flight count a target gives each peer: one page, a u64. */
#define INFLIGHT_SIZE 4096u
/* How long a deregistration waits for peers' copies under way: they are
 * memcpy or process_vm_* calls, so a bound reached means a peer stopped
 * (SIGSTOP, debugger) in the middle of one. */
#define QUIESCE_MS 2000u
/* The FD frame id of a connection's in-flight page (memfd ids of
 * registrations are random, 0 is the registration stamp). */
#define UDS_CONN_FD_ID UINT64_MAX

/* A request's direct-path state: the engine keeps it as its private
 * bytes.  vgen: the stamp the target's check of its descriptors earned
 * (0: none); vgen_post: the one its frames earn if they succeed. */
typedef struct uds_req {
    uint64_t vgen, vgen_post;
    int framed;         /* the last post went as frames */
    size_t last;        /* fast posts: the map that answered last */
} uds_req_t;

#define UERR(u, st, ...) (u)->host->error((u)->host->ctx, (st), __VA_ARGS__)
#define ULOG(u, lvl, ...) (u)->host->log((u)->host->ctx, (lvl), __VA_ARGS__)

/* uds.c: whether processes of uid may talk to us (ours, allow_uids). */
int xfer__uds_uid_ok(const uds_t *u, uid_t uid);

/* direct.c: the events of a connection, and the ops it wraps. */
xfer_status_t xfer__uds_conn_up(void *tctx, xfer__stream_conn_t *c,
                                char *msg, size_t msg_size);
void xfer__uds_conn_down(void *tctx, xfer__stream_conn_t *c,
                         xfer_status_t st, const char *why);
xfer_status_t xfer__uds_fd_received(void *tctx, xfer__stream_conn_t *c,
                                    uint64_t id, uint64_t size, int fd,
                                    char *msg, size_t msg_size);
void xfer__uds_held_ready(void *tctx, xfer__stream_conn_t *c);
void xfer__uds_mem_checked(void *tctx, xfer__stream_conn_t *c, void *mem);
/* The backend's req_post: the fast path, else the locked one. */
xfer_status_t xfer__uds_req_post(xfer_be_t *be, xfer_be_req_t *req,
                                 const void *notif, size_t notif_len);
/* Keep the memfd of a registration that may be shared: it goes to a
 * peer with the answer to its first operation on that registration. */
xfer_status_t xfer__uds_mem_share(uds_t *u, void *mem,
                                  const xfer_shm_info_t *si);
/* Forget a registration's memfd (deregistration). */
void xfer__uds_mem_unshare(uds_t *u, void *mem);
/* life.c: start the thread that holds the liveness word (msg: why not),
 * and stop it (the word reads 0), before the sockets close. */
xfer_status_t xfer__uds_life_start(uds_t *u, char *msg, size_t msg_size);
void xfer__uds_life_stop(uds_t *u);
/* After the stamp moved: wait (bounded) for peers' copies under way. */
void xfer__uds_quiesce(uds_t *u);
void xfer__uds_shares_free(uds_t *u);

#endif /* XFER_PLUGINS_UDS_H */
