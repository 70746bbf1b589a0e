/* uds.c - the Unix-socket backend for processes on one host: control over the
 * shared stream engine, data by process_vm_readv/writev or through mapped memfds. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif
#ifdef IOV_MAX
#define UDS_IOV IOV_MAX
#else
#define UDS_IOV 1024
#endif

typedef struct uds_config {
    const char *path;
    const char *mode;
    uint64_t timeout_ms;
    size_t inline_max;
    size_t rx_buf;
    uint64_t backlog;
} uds_config_t;

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(uds_config_t, f), lo, hi }
static const xfer_param_t uds_params[] = {
    P("path", XFER_PARAM_STRING, "",
      "socket path to listen on (created with mode 0600, removed at exit); "
      "empty: a unique abstract socket",
      path, 1, 0),
    P("mode", XFER_PARAM_STRING, "auto",
      "data path: auto (shm where the target's memory is from "
      "xfer_mem_alloc, else cma, else socket), cma, shm or socket",
      mode, 1, 0),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a connect or posted transfer that makes no progress this long fails "
      "with XFER_ERR_TIMEOUT",
      timeout_ms, 1, 3600000),
    P("inline_max", XFER_PARAM_SIZE, "16K",
      "socket path: payloads up to this size are copied through the "
      "receive buffer",
      inline_max, 0, 16 << 20),
    P("rx_buf", XFER_PARAM_SIZE, "256K",
      "per-connection receive buffer; must exceed inline_max by 40 bytes",
      rx_buf, 4096, 256 << 20),
    P("backlog", XFER_PARAM_UINT, "128", "listen(2) backlog", backlog, 1,
      65535),
};
#undef P

enum { MODE_AUTO, MODE_CMA, MODE_SHM, MODE_SOCKET };
static const char *const mode_names[] = { "auto", "cma", "shm", "socket" };

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

/* Target side: one accepted peer's count of direct copies under way into
 * this process (a page it maps read-write), so that a deregistration can
 * wait for the copies that passed the stamp check before it bumped it. */
typedef struct uds_share {
    struct uds_share *next, *prev;
    int fd;
    uint64_t *inflight;
    int closed;     /* its connection closed: kept until it reads 0 */
    int stuck;      /* outlived a deregistration's bound: not waited for */
} uds_share_t;

typedef struct uds {
    const xfer_host_t *host;
    uds_config_t cfg;
    int mode;
    int lfd;
    char fs_path[UDS_PATH_MAX + 1]; /* "" for an abstract socket */
    uid_t uid;
    int warned_socket;              /* the EPERM fallback was logged */
    unsigned npath[NPATHS];         /* connections by their last path */
    int gen_fd;                     /* memfd of the registration stamp */
    uint64_t *gen;                  /* bumped by every deregistration */
    uint8_t info[UDS_INFO_SIZE];
    struct iovec liov[UDS_IOV], riov[UDS_IOV];
    uint8_t **where;                /* shm: resolved remote addresses */
    size_t where_cap;
    /* Accepted peers' in-flight counts.  conn_share/unshare (progress)
     * and quiesce (mem_deregister) are serialised by the core. */
    uds_share_t *shares;
    int warned_quiesce;             /* a peer's copy outlived the bound */
} uds_t;

/* A memfd a target shared with us, mapped for the life of the connection. */
typedef struct uds_map {
    uint64_t id;
    uint8_t *base;
    size_t size;
} uds_map_t;

typedef struct uds_conn {
    const uint64_t *gen;/* the target's registration stamp, read-only */
    uint64_t *inflight; /* our direct copies under way there (its page) */
    pid_t pid;          /* the target, as the kernel saw it connect */
    int same_uid;       /* it shares memfds with us */
    int socket_only;    /* the kernel refused CMA: frames from now on */
    int path;           /* PATH_*, counted in uds_t.npath */
    size_t nmaps, cap, last; /* last: the map that answered last */
    uds_map_t *maps;
} uds_conn_t;

/* The registration stamp: one page, a u64 the target increments before
 * each deregistration. */
#define GEN_SIZE 4096u
/* The in-flight count a target gives each peer: one page, a u64. */
#define INFLIGHT_SIZE 4096u
/* How long a deregistration waits for peers' copies under way: they are
 * memcpy or process_vm_* calls, so a bound reached means a peer stopped
 * (SIGSTOP, debugger) in the middle of one. */
#define QUIESCE_MS 2000u

#define UERR(u, st, ...) (u)->host->error((u)->host->ctx, (st), __VA_ARGS__)
#define ULOG(u, lvl, ...) (u)->host->log((u)->host->ctx, (lvl), __VA_ARGS__)

/* ------------------------------------------------------------------ */
/* Host identity: two agents may share memory only on one kernel       */
/* ------------------------------------------------------------------ */

static void host_ids(char *boot, char *host)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    memset(boot, 0, UDS_BOOT_LEN);
    memset(host, 0, UDS_HOST_LEN);
    if (f) {
        char line[64] = "";

        if (fgets(line, sizeof line, f))
            memcpy(boot, line, strnlen(line, UDS_BOOT_LEN));
        fclose(f);
    }
    if (gethostname(host, UDS_HOST_LEN) != 0)
        host[0] = '\0';
    host[UDS_HOST_LEN - 1] = '\0';
}

static socklen_t info_addr(const uint8_t *info, struct sockaddr_un *sa)
{
    uint16_t plen;

    memcpy(&plen, info + 6, 2);
    plen = le16toh(plen);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (info[5]) {
        memcpy(sa->sun_path + 1, info + 116, plen);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + plen);
    }
    memcpy(sa->sun_path, info + 116, plen);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
}

/* ------------------------------------------------------------------ */
/* Transport hooks: sockets                                             */
/* ------------------------------------------------------------------ */

static xfer_status_t uds_info_check(void *tctx, const void *info, size_t len)
{
    uds_t *u = tctx;
    const uint8_t *b = info;
    char boot[UDS_BOOT_LEN], host[UDS_HOST_LEN];
    char pboot[UDS_BOOT_LEN + 1], phost[UDS_HOST_LEN + 1];
    uint32_t magic, pid;
    uint16_t plen;

    if (len != UDS_INFO_SIZE)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info is %zu bytes, a uds address is %u",
                    len, UDS_INFO_SIZE);
    memcpy(&magic, b, 4);
    memcpy(&plen, b + 6, 2);
    memcpy(&pid, b + 8, 4);
    plen = le16toh(plen);
    if (le32toh(magic) != UDS_INFO_MAGIC || b[4] != UDS_INFO_VERSION)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info is not a version %u uds address "
                    "(bad magic or version %u)",
                    UDS_INFO_VERSION, b[4]);
    if (b[5] > 1 || !plen || plen > UDS_PATH_MAX - 1 || !pid)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info has a bad socket path or pid");
    memcpy(pboot, b + 16, UDS_BOOT_LEN);
    pboot[UDS_BOOT_LEN] = '\0';
    memcpy(phost, b + 52, UDS_HOST_LEN);
    phost[UDS_HOST_LEN] = '\0';
    memcpy(boot, u->info + 16, UDS_BOOT_LEN);
    memcpy(host, u->info + 52, UDS_HOST_LEN);
    if (memcmp(boot, b + 16, UDS_BOOT_LEN) || memcmp(host, b + 52,
                                                        UDS_HOST_LEN))
        return UERR(u, XFER_ERR_INVALID,
                    "uds: the agent runs on another host (host name '%s', "
                    "boot id '%s'; this is '%.64s', '%.36s'): uds reaches "
                    "processes on this host only, use tcp",
                    phost, pboot, host, boot);
    return XFER_OK;
}

static void uds_info_str(void *tctx, const void *info, size_t len, char *buf,
                         size_t size)
{
    const uint8_t *b = info;
    uint16_t plen;
    uint32_t pid;

    (void)tctx;
    (void)len;
    memcpy(&plen, b + 6, 2);
    memcpy(&pid, b + 8, 4);
    snprintf(buf, size, "%s%.*s pid %u", b[5] ? "@" : "",
             (int)le16toh(plen), (const char *)b + 116,
             (unsigned)le32toh(pid));
}

/* A larger send buffer lets the socket path move big payloads in fewer
 * rounds (the kernel caps it at net.core.wmem_max). */
static void uds_bufs(int fd)
{
    int v = 4 << 20;

    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

static void uds_accepted(void *tctx, int fd)
{
    (void)tctx;
    uds_bufs(fd);
}

static int uds_connect(void *tctx, const void *info, size_t len,
                       int *in_progress)
{
    struct sockaddr_un sa;
    socklen_t sl = info_addr(info, &sa);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    (void)tctx;
    (void)len;
    if (fd < 0)
        return -errno;
    uds_bufs(fd);
    if (connect(fd, (struct sockaddr *)&sa, sl) == 0) {
        *in_progress = 0;
        return fd;
    }
    if (errno == EINPROGRESS || errno == EAGAIN) {
        *in_progress = 1;
        return fd;
    }
    {
        int e = errno;

        close(fd);
        return -e;
    }
}

/* Memfds go only to processes of our own user: the socket (abstract
 * ones have no permissions) must not hand our memory to anyone else. */
static int uds_share_ok(void *tctx, int fd)
{
    uds_t *u = tctx;
    struct ucred cr;
    socklen_t sl = sizeof cr;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0)
        return 0;
    return cr.uid == u->uid;
}

/* ------------------------------------------------------------------ */
/* Transport hooks: the direct data path                                */
/* ------------------------------------------------------------------ */

static void *uds_conn_new(void *tctx)
{
    uds_t *u = tctx;
    uds_conn_t *tc = calloc(1, sizeof(uds_conn_t));

    if (tc) {
        tc->path = PATH_SOCKET;
        u->npath[PATH_SOCKET]++;
    }
    return tc;
}

/* One compare per post once the path is settled. */
static void set_path(uds_t *u, uds_conn_t *tc, int path)
{
    if (tc->path == path)
        return;
    u->npath[tc->path]--;
    u->npath[path]++;
    tc->path = path;
}

static void uds_conn_free(void *tctx, void *tconn)
{
    uds_t *u = tctx;
    uds_conn_t *tc = tconn;

    u->npath[tc->path]--;
    if (tc->gen)
        munmap((void *)(uintptr_t)tc->gen, GEN_SIZE);
    if (tc->inflight)
        munmap(tc->inflight, INFLIGHT_SIZE);
    for (size_t i = 0; i < tc->nmaps; i++)
        munmap(tc->maps[i].base, tc->maps[i].size);
    free(tc->maps);
    free(tc);
}

static xfer_status_t uds_conn_up(void *tctx, void *tconn, int fd,
                                 const void *info, size_t len, char *msg,
                                 size_t msg_size)
{
    uds_t *u = tctx;
    uds_conn_t *tc = tconn;
    struct ucred cr;
    socklen_t sl = sizeof cr;

    (void)info;
    (void)len;
    if (!tc) {
        snprintf(msg, msg_size, "out of memory");
        return XFER_ERR_NOMEM;
    }
    /* The pid the kernel recorded when the target listened, in our pid
     * namespace: the process we copy into is the one we handshook with. */
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0) {
        snprintf(msg, msg_size, "SO_PEERCRED: %s", strerror(errno));
        return XFER_ERR_BACKEND;
    }
    tc->pid = cr.pid;
    tc->same_uid = cr.uid == u->uid;
    if (!cr.pid)
        tc->socket_only = 1; /* not visible from our pid namespace */
    return XFER_OK;
}

static void uds_fd_received(void *tctx, void *tconn, uint64_t id,
                            uint64_t size, int fd)
{
    uds_t *u = tctx;
    uds_conn_t *tc = tconn;
    void *p;

    if (tc && id == 0) {
        /* The registration stamp: read-only, one page. */
        if (!tc->gen && size == GEN_SIZE) {
            p = mmap(NULL, GEN_SIZE, PROT_READ, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED)
                tc->gen = p;
        }
        close(fd);
        return;
    }
    if (tc && id == XFER__STREAM_CONN_FD_ID) {
        /* Our in-flight count at the target: read-write, one page. */
        if (!tc->inflight && size == INFLIGHT_SIZE) {
            p = mmap(NULL, INFLIGHT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                     fd, 0);
            if (p != MAP_FAILED)
                tc->inflight = p;
        }
        close(fd);
        return;
    }
    for (size_t i = 0; tc && i < tc->nmaps; i++)
        if (tc->maps[i].id == id) {
            close(fd);
            return;
        }
    if (!tc || !size || size > SIZE_MAX) {
        close(fd);
        return;
    }
    if (tc->nmaps == tc->cap) {
        size_t cap = tc->cap ? tc->cap * 2 : 8;
        uds_map_t *m = realloc(tc->maps, cap * sizeof *m);

        if (!m) {
            close(fd);
            return;
        }
        tc->maps = m;
        tc->cap = cap;
    }
    p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        ULOG(u, XFER_LOG_WARN, "cannot map a shared memfd of %llu bytes: %s",
             (unsigned long long)size, strerror(errno));
        return;
    }
    tc->maps[tc->nmaps].id = id;
    tc->maps[tc->nmaps].base = p;
    tc->maps[tc->nmaps].size = (size_t)size;
    tc->nmaps++;
}

/* Where remote [raddr, raddr+len) of a region packed as shared lies in
 * our mapping; NULL when that memfd has not arrived (yet). */
static uint8_t *shm_addr(uds_conn_t *tc, const uint8_t *pack, uint64_t rbase,
                         uint64_t raddr, size_t len)
{
    uint64_t id, off, at;

    memcpy(&id, pack + 8, 8);
    memcpy(&off, pack + 16, 8);
    id = le64toh(id);
    off = le64toh(off);
    at = off + (raddr - rbase);
    /* Descriptors of one request mostly share one memfd: try the map
     * that answered last before searching. */
    for (size_t k = 0; k < tc->nmaps; k++) {
        size_t i = k == 0 ? tc->last : k - 1 + (k - 1 >= tc->last);
        const uds_map_t *m = &tc->maps[i];

        if (m->id != id)
            continue;
        if (at < off || at > m->size || len > m->size - at)
            return NULL;
        tc->last = i;
        return m->base + at;
    }
    return NULL;
}

/* A region's pack from the engine: shared or not (already checked). */
static const uint8_t *seg_pack(const xfer_be_seg_t *s, uint64_t *rbase)
{
    size_t len;
    const uint8_t *p = xfer__stream_rmem_pack(s->rmem, rbase, &len);

    return len == UDS_PACK_SIZE && p[5] ? p : NULL;
}

/* 1: every segment copied through mappings; 0: not all are mapped (or
 * no memory to resolve them); -1: some remote segment is not shared
 * memory at all (*bad: which).  All or nothing: every address is
 * resolved before the first byte moves. */
static int shm_copy(uds_t *u, uds_conn_t *tc, xfer_op_t op,
                    const xfer_be_seg_t *segs, size_t nseg, size_t *bad)
{
    uint8_t **w;

    if (nseg > u->where_cap) {
        w = realloc(u->where, nseg * sizeof *w);
        if (!w)
            return 0;
        u->where = w;
        u->where_cap = nseg;
    }
    w = u->where;
    for (size_t i = 0; i < nseg; i++) {
        uint64_t rbase;
        const uint8_t *pk = seg_pack(&segs[i], &rbase);

        if (!pk) {
            *bad = i;
            return -1;
        }
        w[i] = shm_addr(tc, pk, rbase, segs[i].raddr, segs[i].len);
        if (!w[i])
            return 0;
    }
    /* Descriptors adjacent on both sides become one memcpy. */
    for (size_t i = 0; i < nseg;) {
        uint8_t *r = w[i];
        uintptr_t l = segs[i].laddr;
        size_t len = segs[i].len;

        while (++i < nseg && segs[i].laddr == l + len && w[i] == r + len)
            len += segs[i].len;
        if (op == XFER_OP_WRITE)
            memcpy(r, (const void *)l, len);
        else
            memcpy((void *)l, r, len);
    }
    return 1;
}

static xfer_status_t cma_copy(uds_t *u, uds_conn_t *tc, xfer_op_t op,
                              const xfer_be_seg_t *segs, size_t nseg,
                              char *msg, size_t msg_size)
{
    size_t i = 0, skip = 0;

    while (i < nseg) {
        size_t k = 0, want = 0, j;
        ssize_t n;

        for (j = i; j < nseg; j++) {
            size_t off = j == i ? skip : 0;
            uintptr_t l = segs[j].laddr + off;
            uint64_t r = segs[j].raddr + off;
            size_t len = segs[j].len - off;

            /* Descriptors adjacent on both sides share one iovec. */
            if (k && (uintptr_t)u->liov[k - 1].iov_base +
                             u->liov[k - 1].iov_len == l &&
                (uintptr_t)u->riov[k - 1].iov_base +
                        u->riov[k - 1].iov_len == r) {
                u->liov[k - 1].iov_len += len;
                u->riov[k - 1].iov_len += len;
            } else {
                if (k == UDS_IOV)
                    break;
                u->liov[k].iov_base = (void *)l;
                u->liov[k].iov_len = len;
                u->riov[k].iov_base = (void *)(uintptr_t)r;
                u->riov[k].iov_len = len;
                k++;
            }
            want += len;
        }
        if (op == XFER_OP_WRITE)
            n = process_vm_writev(tc->pid, u->liov, k, u->riov, k, 0);
        else
            n = process_vm_readv(tc->pid, u->liov, k, u->riov, k, 0);
        if (n < 0) {
            int e = errno;

            if (e == EINTR)
                continue;
            if (e == EPERM && u->mode != MODE_CMA) {
                tc->socket_only = 1;
                set_path(u, tc, PATH_EPERM);
                if (!u->warned_socket) {
                    u->warned_socket = 1;
                    ULOG(u, XFER_LOG_WARN,
                         "the kernel refused cross-process access to pid %d "
                         "(EPERM: ptrace restrictions, another user or a "
                         "container): moving data through the socket from "
                         "now on, one extra copy",
                         (int)tc->pid);
                }
                return i == 0 && skip == 0 ? XFER_ERR_NOT_SUPPORTED
                                           : XFER_ERR_BACKEND;
            }
            snprintf(msg, msg_size, "uds %s descriptor %zu (remote addr "
                     "0x%llx) to pid %d: %s: %s",
                     op == XFER_OP_WRITE ? "process_vm_writev"
                                         : "process_vm_readv",
                     i, (unsigned long long)segs[i].raddr, (int)tc->pid,
                     strerror(e),
                     e == ESRCH ? "the target process is gone"
                     : e == EPERM ? "the kernel refused access (mode=cma)"
                                  : "remote memory not accessible");
            return e == ESRCH ? XFER_ERR_REMOTE_DISCONNECT
                   : e == EPERM || e == EFAULT ? XFER_ERR_ACCESS
                                               : XFER_ERR_BACKEND;
        }
        if ((size_t)n == want) {
            i = j;
            skip = 0;
            continue;
        }
        if (n == 0) {
            snprintf(msg, msg_size, "uds: descriptor %zu (remote addr "
                     "0x%llx) to pid %d: no byte moved",
                     i, (unsigned long long)segs[i].raddr, (int)tc->pid);
            return XFER_ERR_ACCESS;
        }
        /* Partial: go on from the first byte not moved. */
        {
            size_t left = (size_t)n;

            while (left) {
                size_t rem = segs[i].len - skip;

                if (left < rem) {
                    skip += left;
                    left = 0;
                } else {
                    left -= rem;
                    i++;
                    skip = 0;
                }
            }
        }
    }
    return XFER_OK;
}

/* The copy itself, once the stamp said the request's check holds. */
static xfer_status_t direct_copy(uds_t *u, uds_conn_t *tc, xfer_op_t op,
                                 const xfer_be_seg_t *segs, size_t nseg,
                                 char *msg, size_t msg_size)
{
    size_t bad = 0;
    xfer_status_t st;
    int r;

    if (u->mode != MODE_CMA) {
        r = shm_copy(u, tc, op, segs, nseg, &bad);
        if (r == 1) {
            set_path(u, tc, PATH_SHM);
            return XFER_OK;
        }
        if (u->mode == MODE_SHM) {
            if (r < 0) {
                snprintf(msg, msg_size, "uds (mode=shm): remote descriptor "
                         "%zu (addr 0x%llx) is not in memory the target "
                         "allocated with xfer_mem_alloc",
                         bad, (unsigned long long)segs[bad].raddr);
                return XFER_ERR_NOT_SUPPORTED;
            }
            if (!tc->same_uid) {
                snprintf(msg, msg_size, "uds (mode=shm): the target runs as "
                         "another user and does not share its memory");
                return XFER_ERR_ACCESS;
            }
            return XFER_IN_PROG; /* its SHM_FD frame is on the way */
        }
    }
    if (tc->socket_only) {
        if (u->mode == MODE_CMA) {
            snprintf(msg, msg_size, "uds (mode=cma): the target process is "
                     "not visible from this pid namespace");
            return XFER_ERR_ACCESS;
        }
        return XFER_ERR_NOT_SUPPORTED;
    }
    st = cma_copy(u, tc, op, segs, nseg, msg, msg_size);
    if (st == XFER_OK)
        set_path(u, tc, PATH_CMA);
    return st;
}

static xfer_status_t uds_direct(void *tctx, void *tconn, xfer_op_t op,
                                const xfer_be_seg_t *segs, size_t nseg,
                                uint64_t *vgen, char *msg, size_t msg_size)
{
    uds_t *u = tctx;
    uds_conn_t *tc = tconn;
    uint64_t g;
    xfer_status_t st;

    if (u->mode == MODE_SOCKET)
        return XFER_ERR_NOT_SUPPORTED;
    if (!tc->gen) {
        if (u->mode == MODE_AUTO)
            return XFER_ERR_NOT_SUPPORTED;
        snprintf(msg, msg_size, "uds (mode=%s): the target shares no "
                 "registration state with this user, so direct access "
                 "cannot be checked", mode_names[u->mode]);
        return XFER_ERR_ACCESS;
    }
    /* The target checks a request's descriptors itself on its first post
     * (frames); after that, data moves directly until the target
     * deregisters anything.  Announcing the copy before reading the
     * stamp, against the target bumping the stamp before reading the
     * count (both sequentially consistent), means that either we see the
     * new stamp or the deregistration waits for this copy: nothing lands
     * in memory after its deregistration returned.  Cost per post: two
     * atomic adds on a line only we write, one load. */
    if (tc->inflight)
        __atomic_fetch_add(tc->inflight, 1, __ATOMIC_SEQ_CST);
    g = __atomic_load_n(tc->gen, __ATOMIC_SEQ_CST) + 1;
    if (*vgen != g) {
        *vgen = g;
        st = XFER_ERR_NOT_SUPPORTED;
    } else {
        st = direct_copy(u, tc, op, segs, nseg, msg, msg_size);
    }
    if (tc->inflight)
        __atomic_fetch_sub(tc->inflight, 1, __ATOMIC_RELEASE);
    return st;
}

/* A peer we share memory with: its in-flight count, a page of its own. */
static int uds_conn_share(void *tctx, void **tstate, int *fd, uint64_t *size)
{
    uds_t *u = tctx;
    uds_share_t *sh = calloc(1, sizeof *sh);
    void *p = MAP_FAILED;

    if (!sh)
        return -1;
    sh->fd = memfd_create("xfer-uds-inflight", MFD_CLOEXEC);
    if (sh->fd < 0 || ftruncate(sh->fd, INFLIGHT_SIZE) < 0 ||
        (p = mmap(NULL, INFLIGHT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                  sh->fd, 0)) == MAP_FAILED) {
        /* The peer then copies unannounced, as an older peer would. */
        ULOG(u, XFER_LOG_WARN, "uds: in-flight page for a peer: %s",
             strerror(errno));
        if (sh->fd >= 0)
            close(sh->fd);
        free(sh);
        return -1;
    }
    sh->inflight = p;
    sh->next = u->shares;
    if (u->shares)
        u->shares->prev = sh;
    u->shares = sh;
    *tstate = sh;
    *fd = sh->fd;
    *size = INFLIGHT_SIZE;
    return 0;
}

static void share_free(uds_t *u, uds_share_t *sh)
{
    if (sh->prev)
        sh->prev->next = sh->next;
    else
        u->shares = sh->next;
    if (sh->next)
        sh->next->prev = sh->prev;
    munmap(sh->inflight, INFLIGHT_SIZE);
    close(sh->fd);
    free(sh);
}

/* The peer's connection closed.  If it closed it, it unmapped the page
 * and copies no more; if we closed it (a timeout, a protocol violation)
 * it may still be in a copy, so a count above zero keeps the page on the
 * list until a deregistration sees it drop to zero. */
static void uds_conn_unshare(void *tctx, void *tstate)
{
    uds_t *u = tctx;
    uds_share_t *sh = tstate;

    if (__atomic_load_n(sh->inflight, __ATOMIC_SEQ_CST) == 0)
        share_free(u, sh);
    else
        sh->closed = 1;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* After the stamp moved: wait until no peer is in a copy that may have
 * read the old one (see uds_direct).  Copies are short; a peer stopped in
 * the middle of one holds us QUIESCE_MS at most, once: it is then marked
 * stuck and not waited for again until its count is seen at zero (said
 * once in the log). */
static void quiesce(uds_t *u)
{
    uds_share_t *sh, *next;

    /* The bound is per peer: one stopped peer must not get the copies of
     * the others, still under way when its bound ran out, taken for
     * stuck ones without a wait of their own. */
    for (sh = u->shares; sh; sh = next) {
        uint64_t end = 0;

        next = sh->next;
        while (!sh->stuck &&
               __atomic_load_n(sh->inflight, __ATOMIC_SEQ_CST) != 0) {
            if (!end)
                end = mono_ms() + QUIESCE_MS;
            if (mono_ms() >= end) {
                if (!u->warned_quiesce)
                    ULOG(u, XFER_LOG_WARN, "uds: a peer's direct copy was "
                         "still under way %u ms after a deregistration "
                         "(peer stopped?); deregistering anyway", QUIESCE_MS);
                u->warned_quiesce = 1;
                sh->stuck = 1;
                break;
            }
            sched_yield();
        }
        if (__atomic_load_n(sh->inflight, __ATOMIC_SEQ_CST) == 0) {
            sh->stuck = 0;
            if (sh->closed)
                share_free(u, sh);
        }
    }
}

static const xfer__stream_transport_t uds_transport = {
    .info_check = uds_info_check,
    .connect = uds_connect,
    .accepted = uds_accepted,
    .info_str = uds_info_str,
    .conn_new = uds_conn_new,
    .conn_up = uds_conn_up,
    .conn_free = uds_conn_free,
    .direct = uds_direct,
    .fd_received = uds_fd_received,
    .share_ok = uds_share_ok,
    .conn_share = uds_conn_share,
    .conn_unshare = uds_conn_unshare,
};

/* ------------------------------------------------------------------ */
/* Backend ops                                                         */
/* ------------------------------------------------------------------ */

static xfer_status_t uds_listen(uds_t *u, struct sockaddr_un *sa,
                                socklen_t *sl, size_t *plen)
{
    const char *path = u->cfg.path ? u->cfg.path : "";

    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (path[0]) {
        *plen = strlen(path);
        if (*plen > UDS_PATH_MAX - 2)
            return UERR(u, XFER_ERR_CONFIG,
                        "uds: path '%s' is longer than %u bytes", path,
                        UDS_PATH_MAX - 2);
        memcpy(sa->sun_path, path, *plen);
        *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + *plen + 1);
        snprintf(u->fs_path, sizeof u->fs_path, "%s", path);
    } else {
        uint64_t rnd = 0;
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

        if (fd >= 0) {
            if (read(fd, &rnd, sizeof rnd) != (ssize_t)sizeof rnd)
                rnd = 0;
            close(fd);
        }
        *plen = (size_t)snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1,
                                 "xfer-uds-%ld-%016llx", (long)getpid(),
                                 (unsigned long long)rnd);
        *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + *plen);
    }
    u->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->lfd < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: socket: %s", strerror(errno));
    if (bind(u->lfd, (struct sockaddr *)sa, *sl) < 0) {
        int e = errno;

        u->fs_path[0] = '\0';
        return UERR(u, XFER_ERR_BACKEND, "uds: cannot bind %s%s: %s%s",
                    path[0] ? "" : "@", path[0] ? path : sa->sun_path + 1,
                    strerror(e),
                    e == EADDRINUSE ? " (remove a stale socket file or pick "
                                      "another path)" : "");
    }
    if (u->fs_path[0] && chmod(u->fs_path, 0600) < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: chmod 0600 %s: %s", u->fs_path,
                    strerror(errno));
    if (listen(u->lfd, (int)u->cfg.backlog) < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: listen: %s", strerror(errno));
    return XFER_OK;
}

static xfer_status_t uds_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be)
{
    struct sockaddr_un sa;
    socklen_t sl;
    size_t plen = 0;
    xfer__stream_cfg_t scfg;
    xfer_status_t st;
    uint32_t v32;
    uint16_t v16;
    uds_t *u;

    if (!(u = calloc(1, sizeof *u)))
        return host->error(host->ctx, XFER_ERR_NOMEM, "uds: out of memory");
    u->host = host;
    u->cfg = *(const uds_config_t *)config;
    u->lfd = -1;
    u->gen_fd = -1;
    u->uid = geteuid();
    u->mode = -1;
    for (int i = 0; i < 4; i++)
        if (u->cfg.mode && !strcmp(u->cfg.mode, mode_names[i]))
            u->mode = i;
    if (u->mode < 0) {
        st = UERR(u, XFER_ERR_CONFIG,
                  "uds: mode '%s' is not one of auto, cma, shm, socket",
                  u->cfg.mode ? u->cfg.mode : "");
        goto fail;
    }
    st = uds_listen(u, &sa, &sl, &plen);
    if (st != XFER_OK)
        goto fail;
    u->gen_fd = memfd_create("xfer-uds-stamp", MFD_CLOEXEC);
    if (u->gen_fd < 0 || ftruncate(u->gen_fd, GEN_SIZE) < 0 ||
        (u->gen = mmap(NULL, GEN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                       u->gen_fd, 0)) == MAP_FAILED) {
        u->gen = NULL;
        st = UERR(u, XFER_ERR_BACKEND, "uds: registration stamp memfd: %s",
                  strerror(errno));
        goto fail;
    }

    memset(u->info, 0, sizeof u->info);
    v32 = htole32(UDS_INFO_MAGIC);
    memcpy(u->info, &v32, 4);
    u->info[4] = UDS_INFO_VERSION;
    u->info[5] = u->fs_path[0] ? 0 : 1;
    v16 = htole16((uint16_t)plen);
    memcpy(u->info + 6, &v16, 2);
    v32 = htole32((uint32_t)getpid());
    memcpy(u->info + 8, &v32, 4);
    v32 = htole32((uint32_t)u->uid);
    memcpy(u->info + 12, &v32, 4);
    host_ids((char *)u->info + 16, (char *)u->info + 52);
    memcpy(u->info + 116, u->fs_path[0] ? sa.sun_path : sa.sun_path + 1,
           plen);

    memset(&scfg, 0, sizeof scfg);
    scfg.name = "uds";
    scfg.timeout_ms = u->cfg.timeout_ms;
    scfg.inline_max = u->cfg.inline_max;
    scfg.rx_buf = u->cfg.rx_buf;
    scfg.share_fd_set = 1;
    scfg.share_fd = u->gen_fd;
    scfg.share_size = GEN_SIZE;
    st = xfer__stream_create(host, &uds_transport, u, &scfg, u->lfd, be);
    if (st != XFER_OK)
        goto fail;
    {
        char where[160];

        uds_info_str(u, u->info, sizeof u->info, where, sizeof where);
        host->log(host->ctx, XFER_LOG_DEBUG, "listening on %s, mode %s",
                  where, mode_names[u->mode]);
    }
    return XFER_OK;
fail:
    if (u->lfd >= 0)
        close(u->lfd);
    if (u->gen)
        munmap(u->gen, GEN_SIZE);
    if (u->gen_fd >= 0)
        close(u->gen_fd);
    if (u->fs_path[0])
        unlink(u->fs_path);
    free(u);
    return st;
}

static void uds_fini(xfer_be_t *be)
{
    uds_t *u;

    if (!be)
        return;
    u = xfer__stream_tctx(be);
    xfer__stream_destroy(be);
    while (u->shares) /* closed ones still counting: nothing to wait for */
        share_free(u, u->shares);
    close(u->lfd);
    munmap(u->gen, GEN_SIZE);
    close(u->gen_fd);
    free(u->where);
    if (u->fs_path[0])
        unlink(u->fs_path);
    free(u);
}

static xfer_status_t uds_conn_info(xfer_be_t *be, void *buf, size_t *len)
{
    uds_t *u = xfer__stream_tctx(be);

    if (*len < UDS_INFO_SIZE) {
        *len = UDS_INFO_SIZE;
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info needs %u bytes", UDS_INFO_SIZE);
    }
    memcpy(buf, u->info, UDS_INFO_SIZE);
    *len = UDS_INFO_SIZE;
    return XFER_OK;
}

/* Memory from xfer_mem_alloc is offered to peers as a memfd. */
static xfer_status_t uds_mem_register(xfer_be_t *be,
                                      const xfer_be_region_t *r, void **mem)
{
    uds_t *u = xfer__stream_tctx(be);
    const xfer_host_t *h = u->host;
    xfer_shm_info_t si;
    xfer_status_t st = xfer__stream_mem_register(be, r, mem);

    if (st != XFER_OK || u->mode == MODE_CMA || u->mode == MODE_SOCKET)
        return st;
    if (h->size < offsetof(xfer_host_t, shm_lookup) + sizeof(h->shm_lookup) ||
        !h->shm_lookup ||
        h->shm_lookup(h->ctx, r->addr, r->len, &si) != XFER_OK)
        return XFER_OK;
    st = xfer__stream_mem_share(be, *mem, si.fd, si.id, si.size, si.offset);
    if (st != XFER_OK) {
        xfer__stream_mem_deregister(be, *mem);
        *mem = NULL;
    }
    return st;
}

/* Peers that validated requests against this region must check again,
 * and the copies they started before the stamp moved must end first. */
static void uds_mem_deregister(xfer_be_t *be, void *mem)
{
    uds_t *u = xfer__stream_tctx(be);

    __atomic_fetch_add(u->gen, 1, __ATOMIC_SEQ_CST);
    quiesce(u);
    xfer__stream_mem_deregister(be, mem);
}

static xfer_status_t uds_mem_pack(xfer_be_t *be, void *mem, void *buf,
                                  size_t *len)
{
    uint8_t *b = buf;
    uint64_t id = 0, off = 0;
    uint32_t magic = htole32(UDS_PACK_MAGIC);

    (void)be;
    if (*len < UDS_PACK_SIZE) {
        *len = UDS_PACK_SIZE;
        return XFER_ERR_INVALID;
    }
    memset(b, 0, UDS_PACK_SIZE);
    memcpy(b, &magic, 4);
    b[4] = 1;
    b[5] = (uint8_t)xfer__stream_mem_shm(mem, &id, &off);
    id = htole64(id);
    off = htole64(off);
    memcpy(b + 8, &id, 8);
    memcpy(b + 16, &off, 8);
    *len = UDS_PACK_SIZE;
    return XFER_OK;
}

static xfer_status_t uds_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                     const xfer_be_rregion_t *r,
                                     const void *buf, size_t len, void **rmem)
{
    uds_t *u = xfer__stream_tctx(be);
    const uint8_t *b = buf;
    uint32_t magic = 0;

    if (len != UDS_PACK_SIZE || !b)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: remote region key 0x%016llx has a %zu-byte public "
                    "part, not %u",
                    (unsigned long long)r->key, len, UDS_PACK_SIZE);
    memcpy(&magic, b, 4);
    if (le32toh(magic) != UDS_PACK_MAGIC || b[4] != 1 || b[5] > 1)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: remote region key 0x%016llx: public part is not a "
                    "version 1 uds region",
                    (unsigned long long)r->key);
    return xfer__stream_rmem_unpack(be, peer, r, buf, len, rmem);
}

/* ------------------------------------------------------------------ */
/* What xfer-info and xfer_backend_state() show                         */
/* ------------------------------------------------------------------ */

/* /proc/sys/kernel/yama/ptrace_scope, or -1 without Yama. */
static int yama_scope(void)
{
    FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
    int v = -1;

    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static const uint64_t cma_magic = 0x616d632d72656678ull;

/* Ask the kernel whether another process may copy from us: a forked
 * child reads its parent, a process that is not its descendant, which is
 * what a peer agent is to us and the direction Yama's scope 1 refuses.
 * The caller may run threads, so the child makes only async-signal-safe
 * calls.  0: allowed; > 0: the errno of the refusal; -1: the probe
 * itself failed (*why: its errno). */
static int cma_try(int *why)
{
    pid_t parent = getpid(), pid;
    int fds[2], res = 0, ws;
    ssize_t n;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        *why = errno;
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        *why = errno;
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        uint64_t got = 0;
        struct iovec l = { &got, sizeof got };
        struct iovec r = { (void *)(uintptr_t)&cma_magic, sizeof cma_magic };
        int e = process_vm_readv(parent, &l, 1, &r, 1, 0) ==
                        (ssize_t)sizeof got
                    ? (got == cma_magic ? 0 : EFAULT)
                    : errno;

        if (write(fds[1], &e, sizeof e) != (ssize_t)sizeof e)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    while ((n = read(fds[0], &res, sizeof res)) < 0 && errno == EINTR)
        ;
    close(fds[0]);
    /* ECHILD when the program reaps every child itself: nothing left. */
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof res) {
        *why = EIO;
        return -1;
    }
    return res;
}

/* The path mode=auto takes to a peer on this host, as the kernel
 * answers now: for xfer-info, before any instance exists. */
static xfer_status_t uds_probe(char *buf, size_t len)
{
    char yama[48];
    int scope = yama_scope(), why = 0, e = cma_try(&why);

    if (scope < 0)
        snprintf(yama, sizeof yama, "no yama");
    else
        snprintf(yama, sizeof yama, "yama ptrace_scope=%d", scope);
    if (e == 0)
        snprintf(buf, len, "cross-process copy (CMA): available (%s)", yama);
    else if (e < 0)
        snprintf(buf, len, "cross-process copy (CMA): unknown (%s; the "
                 "probe failed: %s)", yama, strerror(why));
    else
        snprintf(buf, len, "cross-process copy (CMA): refused (%s; %s): "
                 "transfers to peers fall back to the socket, except into "
                 "memory from xfer_mem_alloc (shm)",
                 e == EPERM ? "EPERM" : e == ENOSYS ? "ENOSYS" : strerror(e),
                 yama);
    return XFER_OK;
}

/* Connections this instance opened, by the path their data took last. */
static xfer_status_t uds_state(xfer_be_t *be, char *buf, size_t len)
{
    uds_t *u = xfer__stream_tctx(be);
    unsigned eperm = u->npath[PATH_EPERM];
    int n = snprintf(buf, len, "mode=%s; peers: %u via shm, %u via cma, "
                     "%u via socket", mode_names[u->mode], u->npath[PATH_SHM],
                     u->npath[PATH_CMA], u->npath[PATH_SOCKET] + eperm);

    if (eperm && n >= 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, " (%u by EPERM fallback)", eperm);
    return XFER_OK;
}

extern const xfer_backend_ops_t XFER_BACKEND_SYMBOL(uds);
const xfer_backend_ops_t XFER_BACKEND_SYMBOL(uds) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "uds",
        .version = PACKAGE_VERSION,
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                XFER_CAP_LOCAL | XFER_CAP_SW_CHECK,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = uds_params,
    .nparams = sizeof uds_params / sizeof uds_params[0],
    .config_size = sizeof(uds_config_t),
    .init = uds_init,
    .fini = uds_fini,
    .conn_info = uds_conn_info,
    .peer_add = xfer__stream_peer_add,
    .peer_remove = xfer__stream_peer_remove,
    .mem_register = uds_mem_register,
    .mem_deregister = uds_mem_deregister,
    .mem_pack = uds_mem_pack,
    .rmem_unpack = uds_rmem_unpack,
    .rmem_release = xfer__stream_rmem_release,
    .req_create = xfer__stream_req_create,
    .req_post = xfer__stream_req_post,
    .req_check = xfer__stream_req_check,
    .req_cancel = xfer__stream_req_cancel,
    .req_release = xfer__stream_req_release,
    .notif_send = xfer__stream_notif_send,
    .progress = xfer__stream_progress,
    .event_fd = xfer__stream_event_fd,
    .probe = uds_probe,
    .state = uds_state,
};
