/* coord.c - the ranks of a run: roles by scheme, and allgather over
 * stream sockets.
 *
 * Rank 0 is a hub holding one socket per other rank: each rank sends its
 * frame to the hub, the hub answers every rank with all frames in rank
 * order.  A frame is a kind byte ('D' data, 'E' the sender failed: the
 * body says why, 'H' the sender is alive: no body), a big-endian u64
 * length and the body.  The bound of a wait is on silence: an 'H'
 * restarts it, and the hub passes the 'H' of the rank it waits on to
 * the others, who wait on the hub. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getaddrinfo, MSG_NOSIGNAL */
#endif

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xb.h"

/* A frame larger than this is a broken peer, not a blob. */
#define FRAME_MAX ((size_t)1 << 26)
#define HDR_LEN 9
/* One connect attempt: a host that drops SYNs is tried again (until
 * the deadline) rather than waited on for the kernel's two minutes. */
#define CONNECT_TRY_MS 3000

/* ------------------------------------------------------------------ */
/* Schemes                                                             */
/* ------------------------------------------------------------------ */

const char *xb_scheme_problem(enum xb_scheme s, int size)
{
    if (size < 2 || size > XB_MAX_RANKS)
        return "a run has 2 to 64 ranks";
    if (s == XB_PAIRWISE && size % 2 != 0)
        return "the pairwise scheme pairs ranks, so their number must be "
               "even";
    return NULL;
}

/* pairwise: ranks [0, n/2) write to rank + n/2; many-to-one: every rank
 * but 0 writes to rank 0; one-to-many: rank 0 writes to every other. */
int xb_is_initiator(enum xb_scheme s, int rank, int size)
{
    switch (s) {
    case XB_MANY_TO_ONE: return rank != 0;
    case XB_ONE_TO_MANY: return rank == 0;
    default: return rank < size / 2;
    }
}

int xb_targets_of(enum xb_scheme s, int rank, int size, int *out)
{
    int n = 0, r;

    if (!xb_is_initiator(s, rank, size))
        return 0;
    switch (s) {
    case XB_MANY_TO_ONE: out[n++] = 0; break;
    case XB_ONE_TO_MANY:
        for (r = 1; r < size; r++)
            out[n++] = r;
        break;
    default: out[n++] = rank + size / 2; break;
    }
    return n;
}

int xb_initiators_of(enum xb_scheme s, int rank, int size, int *out)
{
    int n = 0, r;

    if (xb_is_initiator(s, rank, size))
        return 0;
    switch (s) {
    case XB_MANY_TO_ONE:
        for (r = 1; r < size; r++)
            out[n++] = r;
        break;
    case XB_ONE_TO_MANY: out[n++] = 0; break;
    default: out[n++] = rank - size / 2; break;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Generic parts                                                       */
/* ------------------------------------------------------------------ */

int xb_coord_allgather(struct xb_coord *c, const void *mine, size_t len,
                       struct xb_blob *out, const struct xb_idle *idle)
{
    memset(out, 0, sizeof(*out) * (size_t)c->size);
    if (c->ops->allgather(c->impl, mine, len, out, idle) == 0)
        return 0;
    xb_blobs_free(out, c->size);
    return -1;
}

int xb_coord_barrier(struct xb_coord *c, const struct xb_idle *idle)
{
    struct xb_blob all[XB_MAX_RANKS];

    if (xb_coord_allgather(c, NULL, 0, all, idle))
        return -1;
    xb_blobs_free(all, c->size);
    return 0;
}

void xb_coord_abort(struct xb_coord *c, const char *why)
{
    if (c->ops != NULL && c->ops->abort != NULL)
        c->ops->abort(c->impl, why);
}

int xb_coord_heartbeat(struct xb_coord *c)
{
    if (c->ops == NULL || c->ops->heartbeat == NULL)
        return 0;
    return c->ops->heartbeat(c->impl);
}

void xb_coord_close(struct xb_coord *c)
{
    if (c->ops != NULL)
        c->ops->close(c->impl);
    c->ops = NULL;
    c->impl = NULL;
}

void xb_blobs_free(struct xb_blob *b, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        free(b[i].data);
        b[i].data = NULL;
        b[i].len = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Sockets                                                             */
/* ------------------------------------------------------------------ */

struct sock_coord {
    int rank, size;
    int fds[XB_MAX_RANKS]; /* hub: fds[r] for rank r >= 1; spoke: fds[0] */
    /* Bytes of an 'H' frame already sent on fds[i] (0: none begun): an
     * 'H' goes without waiting, so one may be cut short by a full
     * socket; its tail goes before anything else on that socket. */
    unsigned char hb_sent[XB_MAX_RANKS];
    uint64_t relayed_ns;   /* hub: the last 'H' passed on */
};

static const unsigned char hb_frame[HDR_LEN] = { 'H' };

static void put_u64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Wait until fd is ready, serving idle meanwhile.  0 ready, -1 failed. */
static int wait_fd(int fd, short events, const struct xb_idle *idle,
                   uint64_t deadline, int rank)
{
    for (;;) {
        struct pollfd p[2] = { { fd, events, 0 }, { -1, POLLIN, 0 } };
        int64_t left = (int64_t)(deadline - xb_now_ns()) / 1000000;
        int n = 1, r;

        if (idle != NULL && idle->fd >= 0)
            p[n++].fd = idle->fd;
        if (left <= 0 && events == POLLOUT)
            return xb_fail("rank %d read nothing sent to it for %d ms",
                           rank, xb_timeout_ms());
        if (left <= 0)
            return xb_fail("rank %d sent nothing for %d ms", rank,
                           xb_timeout_ms());
        r = poll(p, (nfds_t)n, (int)(left > 1000 ? 1000 : left + 1));
        if (r < 0 && errno != EINTR)
            return xb_fail("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if (n == 2 && (p[1].revents & POLLIN) && idle->fn(idle->arg))
            return -1;
        if (p[0].revents != 0)
            return 0;
    }
}

static int io_full(int fd, void *buf, size_t len, int writing,
                   const struct xb_idle *idle, uint64_t deadline, int rank)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n;

        if (wait_fd(fd, writing ? POLLOUT : POLLIN, idle, deadline, rank))
            return -1;
        n = writing ? send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT)
                    : recv(fd, p, len, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return xb_fail("control channel to rank %d: %s", rank,
                           strerror(errno));
        if (n == 0)
            return xb_fail("rank %d left the run (its control channel "
                           "closed)", rank);
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The rest of an 'H' on fds[i] without waiting (start one when begin):
 * 0 sent or left for later (a full socket: the peer is not reading, so
 * it needs no news), -1 the peer is gone. */
static int hb_push(struct sock_coord *s, int i, int begin)
{
    if (s->hb_sent[i] == 0 && !begin)
        return 0;
    while (s->hb_sent[i] < HDR_LEN) {
        ssize_t n = send(s->fds[i], hb_frame + s->hb_sent[i],
                         HDR_LEN - s->hb_sent[i], MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return xb_fail("control channel to rank %d: %s", i,
                           n < 0 ? strerror(errno) : "closed");
        s->hb_sent[i] = (unsigned char)(s->hb_sent[i] + n);
    }
    s->hb_sent[i] = 0;
    return 0;
}

/* A frame to fds[i] (rank i, or the hub's rank 0), after the tail of a
 * cut 'H': the stream stays whole. */
static int frame_send(struct sock_coord *s, int i, char kind,
                      const void *body, size_t len,
                      const struct xb_idle *idle)
{
    unsigned char hdr[HDR_LEN];
    uint64_t deadline = xb_now_ns() + (uint64_t)xb_timeout_ms() * 1000000u;
    int fd = s->fds[i];

    if (s->hb_sent[i] != 0) {
        if (io_full(fd, (void *)(hb_frame + s->hb_sent[i]),
                    HDR_LEN - s->hb_sent[i], 1, idle, deadline, i))
            return -1;
        s->hb_sent[i] = 0;
    }
    hdr[0] = (unsigned char)kind;
    put_u64(hdr + 1, len);
    if (io_full(fd, hdr, sizeof(hdr), 1, idle, deadline, i) ||
        (len && io_full(fd, (void *)body, len, 1, idle, deadline, i)))
        return -1;
    return 0;
}

/* The hub heard that rank `from` is alive while the others may wait on
 * the hub alone: tell them, without waiting on anyone, at most once an
 * eighth of a heartbeat period (stale 'H's read in a burst go once). */
static void hub_relay(struct sock_coord *s, int from)
{
    uint64_t now = xb_now_ns();
    int r;

    if (now - s->relayed_ns < (uint64_t)XB_HEARTBEAT_MS * 125000u)
        return;
    s->relayed_ns = now;
    for (r = 1; r < s->size; r++)
        if (r != from)
            hb_push(s, r, 1); /* a gone rank fails its own wait later */
}

/* One frame from fds[i]; an 'E' frame fails with the sender's sentence,
 * an 'H' restarts the wait. */
static int frame_recv(struct sock_coord *s, int i, struct xb_blob *b,
                      const struct xb_idle *idle)
{
    unsigned char hdr[HDR_LEN];
    uint64_t deadline, len;
    int fd = s->fds[i];

    for (;;) {
        deadline = xb_now_ns() + (uint64_t)xb_timeout_ms() * 1000000u;
        if (io_full(fd, hdr, sizeof(hdr), 0, idle, deadline, i))
            return -1;
        len = get_u64(hdr + 1);
        if (hdr[0] != 'H')
            break;
        if (len != 0)
            return xb_fail("control channel to rank %d: malformed frame", i);
        if (s->rank == 0)
            hub_relay(s, i);
    }
    if (len > FRAME_MAX || (hdr[0] != 'D' && hdr[0] != 'E'))
        return xb_fail("control channel to rank %d: malformed frame", i);
    b->data = malloc((size_t)len + 1);
    if (b->data == NULL)
        return xb_fail("out of memory for a %zu-byte frame", (size_t)len);
    b->len = (size_t)len;
    if (len && io_full(fd, b->data, (size_t)len, 0, idle, deadline, i))
        return -1;
    ((char *)b->data)[len] = '\0';
    if (hdr[0] == 'E')
        return xb_fail("rank %d failed: %s", i, (char *)b->data);
    return 0;
}

static int hub_allgather(void *impl, const void *mine, size_t len,
                         struct xb_blob *out, const struct xb_idle *idle)
{
    struct sock_coord *s = impl;
    int r, q;

    out[0].data = malloc(len + 1);
    if (out[0].data == NULL)
        return xb_fail("out of memory for a %zu-byte frame", len);
    if (len)
        memcpy(out[0].data, mine, len);
    ((char *)out[0].data)[len] = '\0';
    out[0].len = len;
    /* Ranks answer in any order; waiting on them one by one is fine: a
     * frame sits in its socket until read. */
    for (r = 1; r < s->size; r++)
        if (frame_recv(s, r, &out[r], idle))
            return -1;
    for (r = 1; r < s->size; r++)
        for (q = 0; q < s->size; q++)
            if (frame_send(s, r, 'D', out[q].data, out[q].len, idle))
                return -1;
    return 0;
}

static int spoke_allgather(void *impl, const void *mine, size_t len,
                           struct xb_blob *out, const struct xb_idle *idle)
{
    struct sock_coord *s = impl;
    int q;

    if (frame_send(s, 0, 'D', mine, len, idle))
        return -1;
    for (q = 0; q < s->size; q++)
        if (frame_recv(s, 0, &out[q], idle))
            return -1;
    return 0;
}

/* Best effort and bounded: the others may be gone already. */
static void sock_abort(void *impl, const char *why)
{
    struct sock_coord *s = impl;
    int r;

    if (s->rank != 0) {
        frame_send(s, 0, 'E', why, strlen(why), NULL);
        return;
    }
    for (r = 1; r < s->size; r++)
        frame_send(s, r, 'E', why, strlen(why), NULL);
}

/* An 'H' to the hub, or from the hub to every rank; never waits. */
static int sock_heartbeat(void *impl)
{
    struct sock_coord *s = impl;
    int r, rc = 0;

    if (s->rank != 0)
        return hb_push(s, 0, 1);
    for (r = 1; r < s->size; r++)
        rc |= hb_push(s, r, 1);
    return rc;
}

static void sock_close(void *impl)
{
    struct sock_coord *s = impl;
    int r;

    for (r = 0; r < s->size; r++)
        if (s->fds[r] >= 0)
            close(s->fds[r]);
    free(s);
}

static const struct xb_coord_ops hub_ops = { hub_allgather, sock_abort,
                                             sock_heartbeat, sock_close };
static const struct xb_coord_ops spoke_ops = { spoke_allgather, sock_abort,
                                               sock_heartbeat, sock_close };

static struct sock_coord *sock_new(int rank, int size)
{
    struct sock_coord *s = malloc(sizeof(*s));
    int r;

    if (s == NULL)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->rank = rank;
    s->size = size;
    for (r = 0; r < XB_MAX_RANKS; r++)
        s->fds[r] = -1;
    return s;
}

int xb_coord_hub(struct xb_coord *c, const int *fds, int nfds)
{
    struct sock_coord *s = sock_new(0, nfds + 1);
    int r;

    if (s == NULL || nfds + 1 > XB_MAX_RANKS) {
        free(s);
        for (r = 0; r < nfds; r++)
            close(fds[r]);
        return xb_fail("cannot coordinate %d ranks", nfds + 1);
    }
    for (r = 0; r < nfds; r++)
        s->fds[r + 1] = fds[r];
    c->rank = 0;
    c->size = nfds + 1;
    c->ops = &hub_ops;
    c->impl = s;
    return 0;
}

int xb_coord_spoke(struct xb_coord *c, int fd, int rank, int size)
{
    struct sock_coord *s = sock_new(rank, size);

    if (s == NULL) {
        close(fd);
        return xb_fail("out of memory");
    }
    /* The hub's socket: fds[0] (sock_close closes it). */
    s->fds[0] = fd;
    c->rank = rank;
    c->size = size;
    c->ops = &spoke_ops;
    c->impl = s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* --role/--peer: one TCP connection                                   */
/* ------------------------------------------------------------------ */

/* connect(2) bounded by CONNECT_TRY_MS and the deadline: 0 connected,
 * else errno.  The socket is left in blocking mode, as it was. */
static int connect_until(int fd, const struct sockaddr *addr,
                         socklen_t len, uint64_t deadline)
{
    int flags = fcntl(fd, F_GETFL), err = 0;
    socklen_t elen = sizeof(err);
    struct pollfd p = { fd, POLLOUT, 0 };
    int64_t left;

    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return errno;
    if (connect(fd, addr, len) == 0)
        goto out;
    if (errno != EINPROGRESS) {
        err = errno;
        goto out;
    }
    left = (int64_t)(deadline - xb_now_ns()) / 1000000;
    left = left < 0 ? 0 : left > CONNECT_TRY_MS ? CONNECT_TRY_MS : left;
    while ((err = poll(&p, 1, (int)left)) < 0 && errno == EINTR)
        ;
    if (err == 0)
        err = ETIMEDOUT;
    else if (err < 0)
        err = errno;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
        err = errno;
out:
    if (err == 0 && fcntl(fd, F_SETFL, flags) < 0)
        err = errno;
    return err;
}

int xb_coord_tcp(struct xb_coord *c, const char *peer, int target)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[256];
    const char *colon = strrchr(peer, ':');
    int fd = -1, lfd = -1, err, one = 1, tries, saved = 0;
    uint64_t deadline;

    if (colon == NULL || colon[1] == '\0' ||
        (size_t)(colon - peer) >= sizeof(host)) {
        fprintf(stderr, "xfer-bench: option --peer expects HOST:PORT, not "
                "'%s'.\n", peer);
        return -2;
    }
    memcpy(host, peer, (size_t)(colon - peer));
    host[colon - peer] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:port */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = target ? AI_PASSIVE : 0;
    err = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (err != 0)
        return xb_fail("--peer %s: %s", peer, gai_strerror(err));
    deadline = xb_now_ns() + (uint64_t)xb_timeout_ms() * 1000000u;
    for (tries = 0; fd < 0 && lfd < 0; tries++) {
        for (ai = res; ai != NULL && fd < 0 && lfd < 0; ai = ai->ai_next) {
            int s = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);

            if (s < 0)
                continue;
            if (target) {
                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(s, ai->ai_addr, ai->ai_addrlen) == 0 &&
                    listen(s, 1) == 0) {
                    lfd = s;
                    break;
                }
            } else if ((saved = connect_until(s, ai->ai_addr,
                                              ai->ai_addrlen,
                                              deadline)) == 0) {
                fd = s;
                break;
            }
            if (target)
                saved = errno;
            close(s);
        }
        /* The initiator retries while the target starts. */
        if (target || fd >= 0 || xb_now_ns() > deadline)
            break;
        usleep(100000);
    }
    freeaddrinfo(res);
    if (lfd >= 0) {
        struct pollfd p = { lfd, POLLIN, 0 };

        fprintf(stderr, "xfer-bench: target waiting at %s\n", peer);
        if (poll(&p, 1, xb_timeout_ms()) == 1)
            fd = accept(lfd, NULL, NULL);
        else
            saved = ETIMEDOUT;
        close(lfd);
    }
    if (fd < 0)
        return xb_fail("cannot %s %s: %s", target ? "serve at" : "reach the "
                       "target at", peer, strerror(saved ? saved : errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (target)
        return xb_coord_spoke(c, fd, 1, 2);
    return xb_coord_hub(c, &fd, 1);
}
