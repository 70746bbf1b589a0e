/* direct.c - uds's direct data path: process_vm_readv/writev or memcpy into a
 * target's memfds, checked by the target's stamp; requests the engine holds for it. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"
#include "plugins/uds/uds.h"

#define mode_names xfer__uds_mode_names

/* ------------------------------------------------------------------ */
/* Initiator: a connection's direct path                               */
/* ------------------------------------------------------------------ */

/* The direct-path state of a connection we opened, counted by path from
 * its first use. */
static uds_conn_t *conn_init(uds_t *u, xfer__stream_conn_t *c)
{
    uds_conn_t *tc = xfer__stream_conn_priv(c);
    xfer_be_peer_t *p;

    if (!tc->on) {
        tc->on = 1;
        tc->path = PATH_SOCKET;
        __atomic_fetch_add(&u->npath[PATH_SOCKET], 1, __ATOMIC_RELAXED);
        tc->conn = c;
        p = xfer__stream_conn_peer(c);
        tc->gate = p ? xfer__stream_peer_priv(p) : NULL;
    }
    return tc;
}

/* One compare per post once the path is settled.  Fast posts on one
 * connection may race here: the exchange keeps the counts exact. */
static void set_path(uds_t *u, uds_conn_t *tc, int path)
{
    int old;

    if (__atomic_load_n(&tc->path, __ATOMIC_RELAXED) == path)
        return;
    old = __atomic_exchange_n(&tc->path, path, __ATOMIC_RELAXED);
    if (old == path)
        return;
    __atomic_fetch_sub(&u->npath[old], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&u->npath[path], 1, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ */
/* Initiator: the gate fast posts pass (see uds_gate_t)                 */
/* ------------------------------------------------------------------ */

/* Under uds_t.lock.  Closing waits for the fast posts that saw the old
 * state: they are a memcpy or a process_vm_* call, so the wait is short. */
static void gate_set(uds_gate_t *g, uds_conn_t *tc)
{
    if (__atomic_load_n(&g->live, __ATOMIC_RELAXED) == tc)
        return;
    __atomic_store_n(&g->live, NULL, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&g->readers, __ATOMIC_SEQ_CST))
        sched_yield();
    if (tc)
        __atomic_store_n(&g->live, tc, __ATOMIC_SEQ_CST);
}

/* Open the gate while the connection is up, its stamp is mapped and it
 * holds nothing (a fast post must not overtake a request posted before
 * it that waits there); close it otherwise. */
static void gate_update(uds_t *u, xfer__stream_conn_t *c)
{
    uds_conn_t *tc = xfer__stream_conn_priv(c);

    if (!tc->on || !tc->gate)
        return;
    gate_set(tc->gate, u->mode != MODE_SOCKET && xfer__stream_conn_up(c) &&
                               tc->gen && !xfer__stream_conn_holds(c)
                           ? tc
                           : NULL);
}

static void share_end(uds_t *u, uds_share_t *sh);

/* Initiator: the process we copy into is the one we handshook with
 * (the pid the kernel recorded when it listened, in our pid namespace),
 * and it runs as our user or one in allow_uids: no other may hand us
 * memory or learn our registrations' addresses.  Target: the engine
 * accepted only such peers; what we share waits for their first
 * checked operation (xfer__uds_mem_checked). */
xfer_status_t xfer__uds_conn_up(void *tctx, xfer__stream_conn_t *c,
                                char *msg, size_t msg_size)
{
    uds_t *u = tctx;
    uds_conn_t *tc;
    struct ucred cr;
    socklen_t sl = sizeof cr;

    if (!xfer__stream_conn_initiator(c))
        return XFER_OK;
    tc = conn_init(u, c);
    if (getsockopt(xfer__stream_conn_fd(c), SOL_SOCKET, SO_PEERCRED, &cr,
                   &sl) < 0) {
        snprintf(msg, msg_size, "SO_PEERCRED: %s", strerror(errno));
        return XFER_ERR_BACKEND;
    }
    if (!xfer__uds_uid_ok(u, cr.uid)) {
        snprintf(msg, msg_size, "uds: agent '%s' (pid %d) runs as uid %u, "
                 "not this user (uid %u) nor one in allow_uids: refused",
                 xfer__stream_conn_name(c), (int)cr.pid, (unsigned)cr.uid,
                 (unsigned)u->uid);
        return XFER_ERR_AUTH;
    }
    tc->pid = cr.pid;
    if (!cr.pid)
        tc->socket_only = 1; /* not visible from our pid namespace */
    gate_update(u, c);
    return XFER_OK;
}

void xfer__uds_conn_down(void *tctx, xfer__stream_conn_t *c,
                         xfer_status_t st, const char *why)
{
    uds_t *u = tctx;
    uds_conn_t *tc = xfer__stream_conn_priv(c);

    (void)st;
    (void)why;
    if (tc->share)
        share_end(u, tc->share);
    tc->share = NULL;
    if (!tc->on)
        return;
    if (tc->gate)
        gate_set(tc->gate, NULL); /* before anything is unmapped */
    __atomic_fetch_sub(&u->npath[tc->path], 1, __ATOMIC_RELAXED);
    if (tc->gen)
        munmap((void *)(uintptr_t)tc->gen, GEN_SIZE);
    if (tc->inflight)
        munmap(tc->inflight, INFLIGHT_SIZE);
    for (size_t i = 0; i < tc->nmaps; i++)
        munmap(tc->maps[i].base, tc->maps[i].size);
    free(tc->maps);
    memset(tc, 0, sizeof *tc);
}



/* Whether fd, which the target says holds size bytes, can be mapped
 * without a fault: a memfd sealed against shrinking, at least that long
 * (a shorter file, or one the target could truncate later, would make
 * our next copy a SIGBUS).  F_GET_SEALS first: it asks nothing of a
 * file system that is not shmem, where fstat could block. */
static xfer_status_t fd_check(int fd, const char *what, uint64_t id,
                              uint64_t size, char *msg, size_t msg_size)
{
    int seals = fcntl(fd, F_GET_SEALS);
    struct stat sb;

    if (seals < 0) {
        snprintf(msg, msg_size, "uds: the target shared %s (id 0x%llx) "
                 "that is not a memfd (F_GET_SEALS: %s): refused", what,
                 (unsigned long long)id, strerror(errno));
        return XFER_ERR_REMOTE_DISCONNECT;
    }
    if (!(seals & F_SEAL_SHRINK)) {
        snprintf(msg, msg_size, "uds: the target shared %s (id 0x%llx) "
                 "not sealed against shrinking (F_SEAL_SHRINK): refused",
                 what, (unsigned long long)id);
        return XFER_ERR_REMOTE_DISCONNECT;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0 ||
        (uint64_t)sb.st_size < size || !size || size > SIZE_MAX) {
        snprintf(msg, msg_size, "uds: the target shared %s (id 0x%llx) "
                 "of %lld bytes and claims %llu: refused", what,
                 (unsigned long long)id, (long long)sb.st_size,
                 (unsigned long long)size);
        return XFER_ERR_REMOTE_DISCONNECT;
    }
    return XFER_OK;
}

/* A descriptor the target passed: our in-flight page, its stamp, or the
 * memfd of a registration we used, mapped for the life of the
 * connection (one that comes again is dropped); the number of memfds is
 * bounded by shm_maps_max.  A bad one closes the connection (msg says
 * why). */
static xfer_status_t fd_take(uds_t *u, xfer__stream_conn_t *c,
                             uds_conn_t *tc, uint64_t id, uint64_t size,
                             int fd, char *msg, size_t msg_size)
{
    int page = id == 0 || id == UDS_CONN_FD_ID;
    const char *what = id == 0 ? "its registration stamp"
                       : id == UDS_CONN_FD_ID ? "our in-flight page"
                                              : "a descriptor";
    int dup = id == 0 ? tc->gen != NULL
              : id == UDS_CONN_FD_ID ? tc->inflight != NULL : 0;
    xfer_status_t st;
    void *p;

    for (size_t i = 0; !page && i < tc->nmaps; i++)
        dup |= tc->maps[i].id == id;
    if (dup)
        return XFER_OK; /* mapped already: nothing more to hold */
    if (page && size != GEN_SIZE) {
        snprintf(msg, msg_size, "uds: the target shared %s (id 0x%llx) "
                 "of %llu bytes, not one page: refused", what,
                 (unsigned long long)id, (unsigned long long)size);
        return XFER_ERR_REMOTE_DISCONNECT;
    }
    st = fd_check(fd, what, id, size, msg, msg_size);
    if (st != XFER_OK)
        return st;
    if (page) {
        p = mmap(NULL, GEN_SIZE, id ? PROT_READ | PROT_WRITE : PROT_READ,
                 MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            snprintf(msg, msg_size, "uds: cannot map %s: %s", what,
                     strerror(errno));
            return XFER_ERR_REMOTE_DISCONNECT;
        }
        if (id) {
            tc->inflight = p;
        } else if (le32toh(__atomic_load_n((const uint32_t *)(const void *)
                                               ((uint8_t *)p +
                                                UDS_LIFE_MAGIC_OFF),
                                           __ATOMIC_ACQUIRE)) !=
                   UDS_LIFE_MAGIC) {
            /* We could not tell its death from a copy into its memory:
             * no stamp, so its data moves through the socket. */
            munmap(p, GEN_SIZE);
            ULOG(u, XFER_LOG_WARN, "uds: agent '%s' shares no liveness word "
                 "(an older xfer?): its data moves through the socket",
                 xfer__stream_conn_name(c));
        } else {
            tc->gen = p;
            tc->life = (const uint32_t *)(const void *)((uint8_t *)p +
                                                        UDS_LIFE_OFF);
        }
        return XFER_OK;
    }
    if (tc->nmaps >= u->cfg.shm_maps_max) {
        if (!tc->warned_maps)
            ULOG(u, XFER_LOG_WARN, "uds: agent '%s' shares more than "
                 "shm_maps_max=%llu memfds on one connection: the others' "
                 "data moves by cma or the socket",
                 xfer__stream_conn_name(c),
                 (unsigned long long)u->cfg.shm_maps_max);
        tc->warned_maps = 1;
        return XFER_OK;
    }
    if (tc->nmaps == tc->cap) {
        size_t cap = tc->cap ? tc->cap * 2 : 8;
        uds_map_t *m = realloc(tc->maps, cap * sizeof *m);

        if (!m) {
            snprintf(msg, msg_size, "uds: out of memory");
            return XFER_ERR_NOMEM;
        }
        tc->maps = m;
        tc->cap = cap;
    }
    p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        /* Its data still moves, by cma or the socket. */
        ULOG(u, XFER_LOG_WARN, "cannot map a shared memfd of %llu bytes: %s",
             (unsigned long long)size, strerror(errno));
        return XFER_OK;
    }
    tc->maps[tc->nmaps].id = id;
    tc->maps[tc->nmaps].base = p;
    tc->maps[tc->nmaps].size = (size_t)size;
    tc->nmaps++;
    return XFER_OK;
}

/* The maps may move: fast posts wait at the gate meanwhile. */
xfer_status_t xfer__uds_fd_received(void *tctx, xfer__stream_conn_t *c,
                                    uint64_t id, uint64_t size, int fd,
                                    char *msg, size_t msg_size)
{
    uds_t *u = tctx;
    uds_conn_t *tc = conn_init(u, c);
    xfer_status_t st;

    if (tc->gate)
        gate_set(tc->gate, NULL);
    st = fd_take(u, c, tc, id, size, fd, msg, msg_size);
    close(fd);
    gate_update(u, c);
    return st;
}

/* Where remote [raddr, raddr+len) of a region packed as shared lies in
 * our mapping; NULL when that memfd has not arrived (yet). */
static uint8_t *shm_addr(const uds_conn_t *tc, const uint8_t *pack,
                         uint64_t rbase, uint64_t raddr, size_t len,
                         size_t *last)
{
    uint64_t id, off, at;

    memcpy(&id, pack + 8, 8);
    memcpy(&off, pack + 16, 8);
    id = le64toh(id);
    off = le64toh(off);
    at = off + (raddr - rbase);
    /* Descriptors of one request mostly share one memfd: try the map
     * that answered last before searching (a request's hint may come
     * from a connection before this one). */
    if (*last >= tc->nmaps)
        *last = 0;
    for (size_t k = 0; k < tc->nmaps; k++) {
        size_t i = k == 0 ? *last : k - 1 + (k - 1 >= *last);
        const uds_map_t *m = &tc->maps[i];

        if (m->id != id)
            continue;
        if (at < off || at > m->size || len > m->size - at)
            return NULL;
        *last = i;
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

/* 1: every segment copied through mappings; 0: not all are mapped;
 * -1: some remote segment is not shared memory at all (*bad: which).
 * All or nothing: every address is resolved (into w, nseg entries)
 * before the first byte moves.  *last: where to look first. */
static int shm_copy(const uds_conn_t *tc, xfer_op_t op,
                    const xfer_be_seg_t *segs, size_t nseg, uint8_t **w,
                    size_t *last, size_t *bad)
{
    for (size_t i = 0; i < nseg; i++) {
        uint64_t rbase;
        const uint8_t *pk = seg_pack(&segs[i], &rbase);

        if (!pk) {
            *bad = i;
            return -1;
        }
        w[i] = shm_addr(tc, pk, rbase, segs[i].raddr, segs[i].len, last);
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

/* liov, riov: cap entries of scratch.  msg NULL: a fast post, which
 * leaves every failure (XFER_ERR_NOT_SUPPORTED, no side effect) to the
 * locked path to meet again and report. */
static xfer_status_t cma_copy(uds_t *u, uds_conn_t *tc, xfer_op_t op,
                              const xfer_be_seg_t *segs, size_t nseg,
                              struct iovec *liov, struct iovec *riov,
                              size_t cap, char *msg, size_t msg_size)
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
            if (k && (uintptr_t)liov[k - 1].iov_base +
                             liov[k - 1].iov_len == l &&
                (uintptr_t)riov[k - 1].iov_base +
                        riov[k - 1].iov_len == r) {
                liov[k - 1].iov_len += len;
                riov[k - 1].iov_len += len;
            } else {
                if (k == cap)
                    break;
                liov[k].iov_base = (void *)l;
                liov[k].iov_len = len;
                riov[k].iov_base = (void *)(uintptr_t)r;
                riov[k].iov_len = len;
                k++;
            }
            want += len;
        }
        if (op == XFER_OP_WRITE)
            n = process_vm_writev(tc->pid, liov, k, riov, k, 0);
        else
            n = process_vm_readv(tc->pid, liov, k, riov, k, 0);
        if (n < 0) {
            int e = errno;

            if (e == EINTR)
                continue;
            if (!msg)
                return XFER_ERR_NOT_SUPPORTED;
            if (e == EPERM && u->mode != MODE_CMA) {
                __atomic_store_n(&tc->socket_only, 1, __ATOMIC_RELAXED);
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
            if (!msg)
                return XFER_ERR_NOT_SUPPORTED;
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
        if (nseg > u->where_cap) {
            uint8_t **w = realloc(u->where, nseg * sizeof *w);

            if (!w) {
                snprintf(msg, msg_size, "uds: out of memory");
                return XFER_ERR_NOMEM;
            }
            u->where = w;
            u->where_cap = nseg;
        }
        r = shm_copy(tc, op, segs, nseg, u->where, &tc->last, &bad);
        if (r == 1) {
            set_path(u, tc, PATH_SHM);
            return XFER_OK;
        }
        if (u->mode == MODE_SHM) {
            if (r < 0) {
                snprintf(msg, msg_size, "uds (mode=shm): remote descriptor "
                         "%zu (addr 0x%llx) is not in memory the target "
                         "shares (a registration for READ and WRITE that "
                         "covers a whole xfer_mem_alloc allocation)",
                         bad, (unsigned long long)segs[bad].raddr);
                return XFER_ERR_NOT_SUPPORTED;
            }
            /* Not mapped on this connection yet: frames, whose answer
             * the target sends after the memfd. */
            return XFER_ERR_NOT_SUPPORTED;
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
    st = cma_copy(u, tc, op, segs, nseg, u->liov, u->riov, UDS_IOV, msg,
                  msg_size);
    if (st == XFER_OK)
        set_path(u, tc, PATH_CMA);
    return st;
}

/* The sentence of a post to a target whose liveness word says it is gone
 * (uds.h): its process ended, or it closed its backend. */
static xfer_status_t gone(const uds_conn_t *tc, char *msg, size_t msg_size)
{
    uint32_t v = __atomic_load_n(tc->life, __ATOMIC_RELAXED);

    snprintf(msg, msg_size, "uds: agent '%s' (pid %d) is gone: %s",
             xfer__stream_conn_name(tc->conn), (int)tc->pid,
             v & FUTEX_OWNER_DIED
                 ? "its process ended (killed, exited or exec'd); what it "
                   "shared is no longer its memory"
                 : "it closed its uds backend (its agent was destroyed)");
    return XFER_ERR_REMOTE_DISCONNECT;
}

/* After a copy, whether the target still lived when it ended.  The
 * copy's loads and stores are ordered before the load of the word by a
 * sequentially consistent read-modify-write (the decrement of the
 * in-flight count; without that page, a sequentially consistent
 * fence): XFER_OK then means they reached the target's memory before its
 * keeper thread's exit (life.c) marked it dead, which precedes the
 * closing of its sockets and its reaping; so a post begun after the
 * target's death could be observed by anyone never answers XFER_OK.
 * (A target killed but not yet through its exit can still get the
 * bytes: no one can tell that apart from a copy just before the kill.) */
static inline int copied_alive(const uds_conn_t *tc, const uint32_t *life)
{
    if (tc->inflight) {
        __atomic_fetch_sub(tc->inflight, 1, __ATOMIC_SEQ_CST);
    } else {
#if defined(__SANITIZE_THREAD__)
        /* TSan takes no fences; an RMW on a local it can see (the
         * compiler may drop one, so only here). */
        int order = 0;

        (void)__atomic_exchange_n(&order, 1, __ATOMIC_SEQ_CST);
#else
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
    }
    return xfer__uds_alive(life);
}

/* Move a request's data without frames.  XFER_OK: all of it moved;
 * XFER_ERR_NOT_SUPPORTED: use the frames; another error: the request
 * fails with it and the sentence in msg.  *vgen: on entry the stamp the
 * request earned (0: none); set to the one to record should the frames
 * succeed.  Data moves directly only while the stamp is current. */
static xfer_status_t direct(uds_t *u, uds_conn_t *tc, xfer_op_t op,
                            const xfer_be_seg_t *segs, size_t nseg,
                            uint64_t *vgen, char *msg, size_t msg_size)
{
    uint64_t g;
    xfer_status_t st;
    int alive;

    /* No stamp yet: the target sends it with the answer to this
     * connection's first operation it accepted. */
    if (u->mode == MODE_SOCKET || !tc->gen)
        return XFER_ERR_NOT_SUPPORTED;
    /* A target that is gone: its memfds are orphans, its pid may be
     * another process's; the request fails at once (the socket, closed,
     * would fail frames too, once progress read it). */
    if (!xfer__uds_alive(tc->life))
        return gone(tc, msg, msg_size);
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
    alive = copied_alive(tc, tc->life);
    if (st == XFER_OK && !alive)
        st = gone(tc, msg, msg_size);
    return st;
}


/* ------------------------------------------------------------------ */
/* Initiator: requests the engine holds for the direct path            */
/* ------------------------------------------------------------------ */

/* Start what c holds (requests posted before its handshake ended),
 * oldest first, once the connection is up: the data moves directly (its
 * notification follows as a frame, after the data), or the request goes
 * as frames, in posting order, so notifications stay in order. */
static void start_held(uds_t *u, xfer__stream_conn_t *c)
{
    xfer_be_req_t *r;

    while (xfer__stream_conn_up(c) && (r = xfer__stream_conn_held(c))) {
        uds_req_t *ur = xfer__stream_req_priv(r);
        char msg[512] = "";
        xfer_op_t op;
        size_t nseg;
        const xfer_be_seg_t *segs = xfer__stream_req_segs(r, &op, &nseg);
        xfer_status_t st;

        ur->vgen_post = ur->vgen;
        st = direct(u, conn_init(u, c), op, segs, nseg, &ur->vgen_post, msg,
                    sizeof msg);
        if (st == XFER_ERR_NOT_SUPPORTED) {
            ur->framed = 1;
            xfer__stream_req_send(u->be, r);
        } else {
            xfer__stream_req_end(u->be, r, st, msg);
        }
    }
}

void xfer__uds_held_ready(void *tctx, xfer__stream_conn_t *c)
{
    start_held(tctx, c);
    gate_update(tctx, c);
}

/* A fast post's scratch lives on its stack; longer requests take the
 * locked path, where the per-post lock is small beside their copies. */
#define FAST_SEGS 64
#define FAST_IOV 16

/* The copy of a fast post: XFER_OK, or XFER_ERR_NOT_SUPPORTED when the
 * locked path must decide (memfd not mapped yet, CMA refused, any
 * error).  What it may have moved already, the locked path moves again:
 * the same bytes to the same place. */
static xfer_status_t fast_copy(uds_t *u, uds_conn_t *tc, xfer_op_t op,
                               const xfer_be_seg_t *segs, size_t nseg,
                               size_t *last)
{
    uint8_t *w[FAST_SEGS];
    struct iovec liov[FAST_IOV], riov[FAST_IOV];
    size_t bad;

    if (u->mode != MODE_CMA &&
        shm_copy(tc, op, segs, nseg, w, last, &bad) == 1) {
        set_path(u, tc, PATH_SHM);
        return XFER_OK;
    }
    if (u->mode == MODE_SHM ||
        __atomic_load_n(&tc->socket_only, __ATOMIC_RELAXED) ||
        cma_copy(u, tc, op, segs, nseg, liov, riov, FAST_IOV, NULL, 0) !=
            XFER_OK)
        return XFER_ERR_NOT_SUPPORTED;
    set_path(u, tc, PATH_CMA);
    return XFER_OK;
}

/* A post without uds_t.lock: through the peer's gate (the connection's
 * maps stay while we are counted), with the stamp's protocol of direct()
 * (announce, then read the stamp).  Only a request whose descriptors
 * the target checked at the current stamp moves this way. */
static xfer_status_t fast_post(uds_t *u, xfer_be_req_t *req, uds_req_t *ur)
{
    uds_gate_t *g = xfer__stream_peer_priv(xfer__stream_req_peer(req));
    xfer_status_t st = XFER_ERR_NOT_SUPPORTED;
    xfer_op_t op;
    size_t nseg;
    const xfer_be_seg_t *segs = xfer__stream_req_segs(req, &op, &nseg);
    uds_conn_t *tc;

    if (!nseg || nseg > FAST_SEGS || !ur->vgen)
        return st;
    __atomic_fetch_add(&g->readers, 1, __ATOMIC_SEQ_CST);
    tc = __atomic_load_n(&g->live, __ATOMIC_SEQ_CST);
    if (tc) {
        /* Where the word is, read before the atomics below, which make
         * the compiler read plain fields again: after the copy, the
         * check is one load of a line already here. */
        const uint32_t *life = tc->life;

        if (tc->inflight)
            __atomic_fetch_add(tc->inflight, 1, __ATOMIC_SEQ_CST);
        /* The stamp and the liveness word share a cache line.  A target
         * gone before or during the copy: the locked path says so. */
        if (__atomic_load_n(tc->gen, __ATOMIC_SEQ_CST) + 1 == ur->vgen &&
            xfer__uds_alive(life))
            st = fast_copy(u, tc, op, segs, nseg, &ur->last);
        if (!copied_alive(tc, life))
            st = XFER_ERR_NOT_SUPPORTED;
    }
    __atomic_fetch_sub(&g->readers, 1, __ATOMIC_RELEASE);
    return st;
}

/* The core never posts one request from two threads, nor while it is
 * in progress: its private bytes and state are ours here, unlocked. */
xfer_status_t xfer__uds_req_post(xfer_be_t *be, xfer_be_req_t *req,
                                 const void *notif, size_t notif_len)
{
    uds_t *u = xfer__stream_tctx(be);
    uds_req_t *ur = xfer__stream_req_priv(req);
    xfer__stream_conn_t *c;
    xfer_status_t st;

    /* Frames that succeeded mean the target itself checked every
     * descriptor: the stamp read before them is earned. */
    if (ur->framed && xfer__stream_req_state(req) == XFER_OK)
        ur->vgen = ur->vgen_post;
    ur->framed = 0;
    /* A notification takes its place in the connection's order: locked. */
    if (!notif && fast_post(u, req, ur) == XFER_OK) {
        xfer__stream_req_done(req);
        return XFER_OK;
    }
    pthread_mutex_lock(&u->lock);
    st = xfer__stream_req_hold(be, req, notif, notif_len, &c);
    if (c && st == XFER_IN_PROG) {
        conn_init(u, c);
        start_held(u, c);
        st = xfer__stream_req_check(be, req);
    }
    if (c)
        gate_update(u, c);
    pthread_mutex_unlock(&u->lock);
    return st;
}

/* ------------------------------------------------------------------ */
/* Target: what we share with a peer                                   */
/* ------------------------------------------------------------------ */

static uint64_t share_count(const uds_share_t *sh)
{
    return sh->inflight ? __atomic_load_n(sh->inflight, __ATOMIC_SEQ_CST) : 0;
}

static void share_free(uds_t *u, uds_share_t *sh)
{
    if (sh->prev)
        sh->prev->next = sh->next;
    else
        u->shares = sh->next;
    if (sh->next)
        sh->next->prev = sh->prev;
    if (sh->inflight)
        munmap(sh->inflight, INFLIGHT_SIZE);
    if (sh->fd >= 0)
        close(sh->fd);
    free(sh->sent);
    free(sh);
}

void xfer__uds_shares_free(uds_t *u)
{
    while (u->shares)
        share_free(u, u->shares);
}

/* A page of its own for the peer's in-flight count: sealed against
 * shrinking (it is mapped here, and read by every deregistration). */
static int inflight_page(uds_share_t *sh)
{
    void *p = MAP_FAILED;

    sh->fd = memfd_create("xfer-uds-inflight", MFD_CLOEXEC |
                          MFD_ALLOW_SEALING);
    if (sh->fd >= 0 && ftruncate(sh->fd, INFLIGHT_SIZE) == 0 &&
        fcntl(sh->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
                                       F_SEAL_SEAL) == 0 &&
        (p = mmap(NULL, INFLIGHT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                  sh->fd, 0)) != MAP_FAILED) {
        sh->inflight = p;
        return 0;
    }
    if (sh->fd >= 0)
        close(sh->fd);
    sh->fd = -1;
    return -1;
}

/* The first operation of a peer that passed our check: it gets its
 * in-flight page, then the registration stamp (so that it never copies
 * unannounced once it can check), ahead of the operation's answer. */
static uds_share_t *share_start(uds_t *u, xfer__stream_conn_t *c)
{
    uds_conn_t *tc = xfer__stream_conn_priv(c);
    uds_share_t *sh = calloc(1, sizeof *sh);

    if (!sh)
        return NULL; /* asked again at its next operation; frames work */
    sh->conn = c;
    sh->fd = -1;
    sh->pid = tc->pid;
    sh->next = u->shares;
    if (u->shares)
        u->shares->prev = sh;
    u->shares = sh;
    tc->share = sh;
    if (inflight_page(sh) < 0)
        /* The peer then copies unannounced, as an older peer would. */
        ULOG(u, XFER_LOG_WARN, "uds: in-flight page for a peer: %s",
             strerror(errno));
    else if (xfer__stream_conn_send_fd(c, UDS_CONN_FD_ID, INFLIGHT_SIZE,
                                       sh->fd) != XFER_OK)
        return NULL;
    if (xfer__stream_conn_send_fd(c, 0, GEN_SIZE, u->gen_fd) != XFER_OK)
        return NULL;
    return sh;
}

/* The peer presented the key of registration mem on c: from now on it
 * may copy directly (stamp), and into mem's memfd if mem is shared.  A
 * peer without a key gets nothing; one with a key gets only the memory
 * that registration covers. */
void xfer__uds_mem_checked(void *tctx, xfer__stream_conn_t *c, void *mem)
{
    uds_t *u = tctx;
    uds_conn_t *tc = xfer__stream_conn_priv(c);
    uds_share_t *sh = tc->share;
    const uds_mem_t *m = xfer__stream_mem_priv(mem);

    if (u->gen_fd < 0)
        return;
    if (!sh && !(sh = share_start(u, c)))
        return;
    /* The peer maps at most its shm_maps_max; ours bounds the list. */
    if (!m->shared || sh->nsent >= u->cfg.shm_maps_max)
        return;
    for (size_t i = 0; i < sh->nsent; i++)
        if (sh->sent[i] == m->id)
            return;
    if (sh->nsent == sh->cap) {
        size_t cap = sh->cap ? sh->cap * 2 : 8;
        uint64_t *n = realloc(sh->sent, cap * sizeof *n);

        if (!n)
            return; /* not shared: its data moves by cma or the socket */
        sh->sent = n;
        sh->cap = cap;
    }
    if (xfer__stream_conn_send_fd(c, m->id, m->size, m->fd) == XFER_OK)
        sh->sent[sh->nsent++] = m->id;
}

/* Whether a closed share's peer process no longer exists: one killed in
 * the middle of a copy never brings its count back to zero, and its page
 * would be kept for the life of the agent, one per such death.  A zombie
 * or a pid reused since counts as alive: the page is then only kept
 * longer.  Needs the peer's pid (SO_PEERCRED; 0 from another pid
 * namespace). */
static int share_peer_gone(const uds_share_t *sh)
{
    return sh->pid > 0 && kill(sh->pid, 0) != 0 && errno == ESRCH;
}

/* The peer's connection closed.  If it closed it, it unmapped the page
 * and copies no more; if we closed it (a timeout, a protocol violation)
 * it may still be in a copy, so a count above zero keeps the page on the
 * list until a deregistration sees it drop to zero, or the peer's
 * process gone. */
static void share_end(uds_t *u, uds_share_t *sh)
{
    sh->conn = NULL;
    if (share_count(sh) == 0 || share_peer_gone(sh))
        share_free(u, sh);
    else
        sh->closed = 1;
}

xfer_status_t xfer__uds_mem_share(uds_t *u, void *mem,
                                  const xfer_shm_info_t *si)
{
    uds_mem_t *m = xfer__stream_mem_priv(mem);

    if (m->shared)
        return XFER_OK;
    m->fd = fcntl(si->fd, F_DUPFD_CLOEXEC, 0);
    if (m->fd < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: cannot duplicate a memfd: %s",
                    strerror(errno));
    m->shared = 1;
    m->id = si->id;
    m->size = si->size;
    m->off = si->offset;
    return XFER_OK;
}

void xfer__uds_mem_unshare(uds_t *u, void *mem)
{
    uds_mem_t *m = xfer__stream_mem_priv(mem);

    (void)u;
    if (!m->shared)
        return;
    close(m->fd);
    m->shared = 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* After the stamp moved: wait until no peer is in a copy that may have
 * read the old one (see direct).  Copies are short; a peer stopped in
 * the middle of one holds us QUIESCE_MS at most, once: it is then marked
 * stuck and not waited for again until its count is seen at zero (said
 * once in the log). */
void xfer__uds_quiesce(uds_t *u)
{
    uds_share_t *sh, *next;

    /* The bound is per peer: one stopped peer must not get the copies of
     * the others, still under way when its bound ran out, taken for
     * stuck ones without a wait of their own. */
    for (sh = u->shares; sh; sh = next) {
        uint64_t end = 0;

        next = sh->next;
        if (sh->closed && share_peer_gone(sh)) {
            share_free(u, sh);
            continue;
        }
        while (!sh->stuck && share_count(sh) != 0) {
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
        if (share_count(sh) == 0) {
            sh->stuck = 0;
            if (sh->closed)
                share_free(u, sh);
        }
    }
}

