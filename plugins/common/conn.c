/* conn.c - connections of the stream engine: instance and epoll loop, accept
 * (within max_conns) and connect, the handshake binding (and with a secret,
 * proving) a peer's name and epoch, receive, timers (stalls, handshake
 * deadline, idle connections). */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "plugins/common/stream-int.h"

#define EVENTS_MAX 64
/* The transport's bytes behind an engine object keep this alignment. */
#define PRIV_ALIGN 16u
#define PRIV_AT(size) (((size) + PRIV_ALIGN - 1) & ~(size_t)(PRIV_ALIGN - 1))

#define LOG XFER__LOG
#define ERR XFER__ERR

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Where an accepted connection comes from, for logs, and the source it
 * counts against for max_conns_per_addr: its IPv4 address, its IPv6 /64
 * (one host's share of addresses), or for a local socket its user id,
 * the one identity the kernel vouches for (SO_PEERCRED). */
static void peer_addr(int fd, char *buf, size_t size,
                      uint8_t key[XFER__STREAM_AKEY])
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN];

    memset(key, 0, XFER__STREAM_AKEY);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(buf, size, "fd %d", fd);
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(buf, size, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
        key[0] = 4;
        memcpy(key + 1, &in->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(buf, size, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            key[0] = 4;
            memcpy(key + 1, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, in6->sin6_addr.s6_addr, 8);
        }
    } else {
        struct ucred cr;
        socklen_t cl = sizeof cr;

        if (ss.ss_family == AF_UNIX &&
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) {
            snprintf(buf, size, "local socket of pid %ld uid %lu",
                     (long)cr.pid, (unsigned long)cr.uid);
            key[0] = 'u';
            memcpy(key + 1, &cr.uid, sizeof cr.uid);
        } else {
            snprintf(buf, size, "local socket fd %d", fd);
        }
    }
}

void xfer__stream_timer_need(xfer_be_t *be)
{
    struct itimerspec its;

    if (be->timer_on)
        return;
    memset(&its, 0, sizeof its);
    its.it_interval.tv_sec = be->tick_ms / 1000;
    its.it_interval.tv_nsec = (long)(be->tick_ms % 1000) * 1000000L;
    its.it_value = its.it_interval;
    if (timerfd_settime(be->tfd, 0, &its, NULL) == 0)
        be->timer_on = 1;
}

void xfer__stream_conn_events(conn_t *c)
{
    struct epoll_event ev;
    uint32_t want = c->paused || c->nwait ? 0 : EPOLLIN;

    /* A paused target waits for EPOLLOUT even with an empty queue: it
     * fires at once and resumes parsing what is buffered, which no
     * EPOLLIN would announce. */
    if (c->connecting || (c->txh && c->blocked) || c->paused)
        want |= EPOLLOUT;
    if (want == c->events || c->closed)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = want;
    ev.data.ptr = c;
    if (epoll_ctl(c->be->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->events = want;
}

/* A status the other side sent: only values it may legitimately send. */
int xfer__stream_wire_status(uint64_t v, xfer_status_t *st)
{
    int64_t s = (int64_t)v;

    if (s > 0 || s < (int64_t)XFER_ERR_AUTH)
        return -1;
    *st = (xfer_status_t)s;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The handshake's pieces (docs/wire-tcp.md, "Authentication")          */
/* ------------------------------------------------------------------ */

/* The labels keep a MAC made for one message from passing for another
 * (a target's MAC replayed as an initiator's, or a listener's). */
#define HS_LABEL_ACK "xfer-stream-ack"
#define HS_LABEL_AUTH "xfer-stream-auth"
#define HS_TRANSCRIPT_MAX \
    (32 + 2 * XFER_WIRE_NONCE + 2 * (1 + XFER_NAME_MAX + 8))

static int hs_nonce(uint8_t n[XFER_WIRE_NONCE])
{
    size_t got = 0;

    while (got < XFER_WIRE_NONCE) {
        ssize_t r = getrandom(n + got, XFER_WIRE_NONCE - got, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static uint8_t *hs_put(uint8_t *p, const char *name, uint64_t epoch)
{
    size_t n = strlen(name);

    *p++ = (uint8_t)n;
    memcpy(p, name, n);
    p += n;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(epoch >> (8 * i));
    return p;
}

/* What a MAC covers: label and its NUL, two nonces, two (name, epoch)
 * pairs, each name after a length byte, each epoch a little-endian u64. */
static size_t hs_transcript(uint8_t *out, const char *label,
                            const uint8_t *na, const uint8_t *nb,
                            const char *n1, uint64_t e1, const char *n2,
                            uint64_t e2)
{
    uint8_t *p = out;

    memcpy(p, label, strlen(label) + 1);
    p += strlen(label) + 1;
    memcpy(p, na, XFER_WIRE_NONCE);
    p += XFER_WIRE_NONCE;
    memcpy(p, nb, XFER_WIRE_NONCE);
    p += XFER_WIRE_NONCE;
    p = hs_put(p, n1, e1);
    p = hs_put(p, n2, e2);
    return (size_t)(p - out);
}

/* The target's MAC (in HELLO_ACK) or the initiator's (in AUTH) for c,
 * from either side's point of view: computed into mac, or, with check
 * set, compared with it.  XFER_OK or XFER_ERR_AUTH. */
static xfer_status_t hs_mac(conn_t *c, int target_mac, int check,
                            uint8_t mac[XFER_WIRE_MAC])
{
    const xfer_host_t *h = c->be->host;
    uint8_t t[HS_TRANSCRIPT_MAX];
    const uint8_t *ni = c->initiator ? c->nonce_own : c->nonce_peer;
    const uint8_t *nt = c->initiator ? c->nonce_peer : c->nonce_own;
    const char *iname = c->initiator ? h->agent_name : c->name;
    const char *tname = c->initiator ? c->name : h->agent_name;
    uint64_t iep = c->initiator ? h->agent_epoch : c->epoch;
    uint64_t tep = c->initiator ? c->epoch : h->agent_epoch;
    size_t n = target_mac ? hs_transcript(t, HS_LABEL_ACK, ni, nt, tname, tep,
                                          iname, iep)
                          : hs_transcript(t, HS_LABEL_AUTH, nt, ni, iname,
                                          iep, tname, tep);

    if (check)
        return h->auth_check(h->ctx, t, n, mac) == XFER_OK ? XFER_OK
                                                           : XFER_ERR_AUTH;
    return h->auth_mac(h->ctx, t, n, mac) == XFER_OK ? XFER_OK : XFER_ERR_AUTH;
}

/* A handshake frame with a body (copied), ready to queue. */
static txe_t *hs_entry(xfer_be_t *be, uint8_t type, uint8_t flags,
                       uint32_t seg, uint64_t tag, uint64_t arg0,
                       uint64_t arg1, const void *body, size_t len)
{
    txe_t *e = xfer__stream_msg_entry(be, type, body, len);

    if (!e)
        return NULL;
    xfer__stream_ctrl_hdr(e, type, seg, tag, arg0, arg1, len);
    e->hdr.flags = flags;
    e->niov = 2;
    return e;
}

/* Best effort, the last word before closing: a bare handshake frame
 * sent now, behind what is queued (not at all if that cannot leave). */
static void hs_tell(conn_t *c, uint8_t type, uint8_t flags, uint64_t arg0,
                    xfer_status_t st)
{
    xfer_wire_hdr_t h;

    if (c->txh && !c->blocked)
        xfer__stream_flush(c);
    if (c->txh || c->closed)
        return;

    memset(&h, 0, sizeof h);
    h.type = type;
    h.flags = flags;
    if (type == XFER_WIRE_HELLO_ACK) {
        h.seg = XFER_WIRE_VERSION;
        h.tag = XFER_WIRE_MAGIC;
    }
    h.arg0 = arg0;
    h.arg1 = (uint64_t)(int64_t)st;
    xfer_wire_encode(&h, &h);
    (void)!send(c->fd, &h, sizeof h, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

/* Close a connection: everything waiting on it fails with st.  The
 * struct itself is freed at the end of progress, since an event for it
 * may still be pending in the current batch. */
void xfer__stream_conn_close(conn_t *c, xfer_status_t st,
                             xfer_log_level_t lvl, const char *fmt, ...)
{
    xfer_be_t *be = c->be;
    char why[256];
    va_list ap;
    txe_t *e;

    if (c->closed)
        return;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    c->closed = 1;
    if (c->accepted)
        be->naccepted--;
    if (c->nwait)
        be->nwaiting--;
    c->nwait = 0;
    LOG(be, lvl, "connection %s agent '%s' (%s) closed: %s",
        c->initiator ? "to" : "from", c->name[0] ? c->name : "?", c->where,
        why);
    epoll_ctl(be->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;

    xfer__stream_reqs_fail(c, st, why);
    while (c->nfdq)
        close(c->fdq[--c->nfdq]);
    if (be->tp->conn_down)
        be->tp->conn_down(be->tctx, c, st, why);
    while ((e = c->txh)) {
        c->txh = e->next;
        xfer__stream_txe_drop(c, e);
    }
    c->txt = NULL;
    c->txn = 0;
    if (c->rmem)
        c->rmem->inflight--;
    c->rmem = NULL;
    free(c->rheap);
    c->rheap = NULL;
    if (c->peer && c->peer->conn == c) {
        c->peer->conn = NULL;
        c->peer->last_err = st;
        snprintf(c->peer->last_why, sizeof c->peer->last_why, "%s", why);
    }
    c->peer = NULL;

    if (c->prev)
        c->prev->next = c->next;
    else
        be->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = be->zombies;
    be->zombies = c;
}

static void reap(xfer_be_t *be)
{
    conn_t *c;

    while ((c = be->zombies)) {
        be->zombies = c->next;
        free(c->buf);
        free(c);
    }
}

static conn_t *conn_new(xfer_be_t *be, int fd, int initiator, int connecting)
{
    struct epoll_event ev;
    conn_t *c = calloc(1, PRIV_AT(sizeof *c) + be->cfg.conn_priv);

    if (!c || !(c->buf = malloc(be->cfg.rx_buf))) {
        free(c);
        return NULL;
    }
    c->kind = XFER__H_CONN;
    c->be = be;
    c->fd = fd;
    c->initiator = initiator;
    c->connecting = connecting;
    c->priv = (char *)c + PRIV_AT(sizeof *c);
    c->t0_ms = c->last_ms = now_ms();
    c->events = EPOLLIN | (connecting ? EPOLLOUT : 0);
    memset(&ev, 0, sizeof ev);
    ev.events = c->events;
    ev.data.ptr = c;
    if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        free(c->buf);
        free(c);
        return NULL;
    }
    c->next = be->conns;
    if (be->conns)
        be->conns->prev = c;
    be->conns = c;
    return c;
}

/* The peer's connection, opened on first use so that loading the
 * metadata of many agents costs no sockets until they are used. */
conn_t *xfer__stream_peer_conn(xfer_be_t *be, xfer_be_peer_t *p,
                               xfer_status_t *st)
{
    int inprog = 0, fd;
    conn_t *c;
    txe_t *e;
    size_t nlen = strlen(be->host->agent_name);
    uint8_t body[XFER_NAME_MAX + XFER_WIRE_NONCE], nonce[XFER_WIRE_NONCE];

    if (p->conn)
        return p->conn;
    fd = be->tp->connect(be->tctx, p->info, p->info_len, &inprog);
    if (fd < 0) {
        *st = ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                  "%s: cannot connect to agent '%s' at %s: %s", be->cfg.name,
                  p->name, p->where, strerror(-fd));
        return NULL;
    }
    /* The HELLO goes first: our name, and with a secret our challenge.
     * Without one requests may follow it at once, because the target
     * checks it before it looks at anything else; with one they wait in
     * the hold list until the target accepted our proof. */
    memcpy(body, be->host->agent_name, nlen);
    if (be->auth && hs_nonce(nonce) < 0) {
        close(fd);
        *st = ERR(be, XFER_ERR_BACKEND, "%s: no random bytes for a "
                  "challenge: %s", be->cfg.name, strerror(errno));
        return NULL;
    }
    memcpy(body + nlen, nonce, sizeof nonce);
    e = hs_entry(be, XFER_WIRE_HELLO, be->auth ? XFER_WIRE_F_AUTH : 0,
                 XFER_WIRE_VERSION, XFER_WIRE_MAGIC, be->host->agent_epoch,
                 p->epoch, body, nlen + (be->auth ? XFER_WIRE_NONCE : 0));
    if (!e || !(c = conn_new(be, fd, 1, inprog))) {
        if (e) {
            free(e->heap);
            xfer__stream_txe_put(be, e);
        }
        close(fd);
        *st = ERR(be, XFER_ERR_NOMEM, "%s: no memory for a connection",
                  be->cfg.name);
        return NULL;
    }
    c->peer = p;
    p->conn = c;
    snprintf(c->name, sizeof c->name, "%s", p->name);
    c->epoch = p->epoch;
    snprintf(c->where, sizeof c->where, "%s", p->where);
    memcpy(c->nonce_own, nonce, sizeof nonce);
    xfer__stream_txq_push(c, e);
    return c;
}

static void connect_done(conn_t *c)
{
    int err = 0;
    socklen_t sl = sizeof err;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
        err = errno;
    if (err) {
        xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                                "connect failed: %s", strerror(err));
        return;
    }
    c->connecting = 0;
    c->idle_ticks = 0;
    c->active = 1;
    xfer__stream_flush(c);
    xfer__stream_conn_events(c);
}

/* The transport's say on a handshaken connection. */
static int conn_up(conn_t *c)
{
    xfer_be_t *be = c->be;
    char why[256] = "";
    xfer_status_t st;

    if (!be->tp->conn_up)
        return 0;
    st = be->tp->conn_up(be->tctx, c, why, sizeof why);
    if (st != XFER_OK && !c->closed)
        xfer__stream_conn_close(c, st, XFER_LOG_WARN, "%s", why);
    return c->closed ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* The handshake and the receive side                                  */
/* ------------------------------------------------------------------ */

void xfer__stream_body_start(conn_t *c, const xfer_wire_hdr_t *h, void *dest,
                             size_t len)
{
    c->rh = *h;
    c->rstate = XFER__RX_BODY;
    c->dest = dest;
    c->left = len;
    c->done = 0;
}

/* A HELLO name binds the sender of notifications and appears in log
 * lines: printable bytes only (as xfer_agent_create requires of names),
 * so a peer cannot forge lines or hide in them.  Closes c when not. */
static int hello_name_check(conn_t *c, size_t len)
{
    const unsigned char *p = (const unsigned char *)c->name;

    c->name[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (p[i] >= 0x20 && p[i] != 0x7f)
            continue;
        XFER__VIOLATION(c, "agent name contains byte 0x%02x at %zu (names "
                        "are printable)", p[i], i);
        return -1;
    }
    return 0;
}

/* Target: c, from an agent that proved its name (and epoch), is up;
 * an older connection from the same agent of the same epoch is one the
 * initiator gave up on (it keeps one per peer, and makes another only
 * after closing the last: a stall, an idle close).  What that one still
 * holds unread is dropped with it.  Read later, it would land stale: a
 * WRITE that failed with a timeout overwriting the data of the retry
 * that completed over c, a notification behind newer ones. */
static void supersede(conn_t *c)
{
    conn_t *o, *next;

    for (o = c->be->conns; o != NULL; o = next) {
        next = o->next;
        if (o == c || !o->accepted || !o->hello_done || o->closed ||
            o->epoch != c->epoch || strcmp(o->name, c->name) != 0)
            continue;
        xfer__stream_conn_close(o, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_INFO,
                                "superseded by a new connection from the "
                                "same agent; what it still held unread is "
                                "dropped");
    }
}

/* The handshake is done on c's side: it serves (target) or sends
 * (initiator) from now on.  A target answers with ack, HELLO_ACK or
 * AUTH_ACK, queued behind what conn_up queued (uds: its memfds), so the
 * initiator has them before it starts. */
static void hs_up(conn_t *c, uint8_t ack)
{
    xfer_be_t *be = c->be;
    txe_t *e;
    int hello;

    c->hello_done = 1;
    c->auth_wait = 0;
    if (conn_up(c) < 0)
        return;
    if (c->initiator) {
        xfer__stream_held_drain(c);
        return;
    }
    supersede(c);
    hello = ack == XFER_WIRE_HELLO_ACK;
    e = hs_entry(be, ack, 0, hello ? XFER_WIRE_VERSION : 0,
                 hello ? XFER_WIRE_MAGIC : 0,
                 hello ? be->host->agent_epoch : 0,
                 (uint64_t)(int64_t)XFER_OK, NULL, 0);
    if (!e) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "out of memory");
        return;
    }
    xfer__stream_txq_push(c, e);
    LOG(be, XFER_LOG_DEBUG, "agent '%s' connected from %s%s", c->name,
        c->where, be->auth ? ", authenticated" : "");
}

/* Target: refuse a HELLO, telling the initiator why (HELLO_ACK with a
 * status) before closing, having served nothing. */
static void hello_refuse(conn_t *c, xfer_status_t st, uint64_t epoch,
                         const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void hello_refuse(conn_t *c, xfer_status_t st, uint64_t epoch,
                         const char *fmt, ...)
{
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    hs_tell(c, XFER_WIRE_HELLO_ACK, c->be->auth ? XFER_WIRE_F_AUTH : 0,
            epoch, st);
    xfer__stream_conn_close(c, st == XFER_ERR_AUTH ? XFER_ERR_AUTH
                                                   : XFER_ERR_REMOTE_DISCONNECT,
                            XFER_LOG_WARN, "refused: %s", why);
}

/* Target: the HELLO's body (name, and with F_AUTH the initiator's
 * challenge) arrived. */
static void hello_done(conn_t *c)
{
    xfer_be_t *be = c->be;
    const xfer_wire_hdr_t *h = &c->rh;
    int auth = (h->flags & XFER_WIRE_F_AUTH) != 0;
    size_t nlen = h->len - (auth ? XFER_WIRE_NONCE : 0);
    uint8_t body[XFER_WIRE_NONCE + XFER_WIRE_MAC];
    txe_t *e;

    memcpy(c->name, c->hs, nlen);
    /* The name goes into log lines (refusals below): printable only. */
    if (hello_name_check(c, nlen) < 0)
        return;
    if (h->seg != XFER_WIRE_VERSION) {
        hello_refuse(c, XFER_ERR_REMOTE_DISCONNECT, be->host->agent_epoch,
                     "protocol version %u, we speak %u", (unsigned)h->seg,
                     XFER_WIRE_VERSION);
        return;
    }
    /* Settings that differ fail on both sides with a sentence, and tell
     * nothing more (not even our epoch) to a peer that cannot prove. */
    if (auth != be->auth) {
        hello_refuse(c, XFER_ERR_AUTH, 0,
                     be->auth ? "agent '%s' has no auth key; this agent "
                                "requires authentication"
                              : "agent '%s' requires authentication; this "
                                "agent has no auth key",
                     c->name);
        return;
    }
    if (h->arg1 != be->host->agent_epoch) {
        hello_refuse(c, XFER_ERR_REMOTE_DISCONNECT, be->host->agent_epoch,
                     "it expects epoch %llu of this agent, ours is %llu "
                     "(stale metadata)", (unsigned long long)h->arg1,
                     (unsigned long long)be->host->agent_epoch);
        return;
    }
    c->epoch = h->arg0;
    if (!be->auth) {
        hs_up(c, XFER_WIRE_HELLO_ACK);
        return;
    }
    /* The challenge: our nonce and our MAC over both nonces and both
     * identities.  Nothing is served before the initiator's AUTH. */
    memcpy(c->nonce_peer, c->hs + nlen, XFER_WIRE_NONCE);
    if (hs_nonce(c->nonce_own) < 0 ||
        hs_mac(c, 1, 0, body + XFER_WIRE_NONCE) != XFER_OK) {
        xfer__stream_conn_close(c, XFER_ERR_BACKEND, XFER_LOG_ERROR,
                                "cannot make a challenge (no random bytes "
                                "or no MAC)");
        return;
    }
    memcpy(body, c->nonce_own, XFER_WIRE_NONCE);
    e = hs_entry(be, XFER_WIRE_HELLO_ACK, XFER_WIRE_F_AUTH, XFER_WIRE_VERSION,
                 XFER_WIRE_MAGIC, be->host->agent_epoch,
                 (uint64_t)(int64_t)XFER_OK, body, sizeof body);
    if (!e) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "out of memory");
        return;
    }
    c->auth_wait = 1;
    xfer__stream_txq_push(c, e);
}

/* Target: the initiator's AUTH (its MAC in c->hs, or its refusal of
 * ours). */
static void auth_done(conn_t *c)
{
    xfer_status_t st;

    xfer__stream_wire_status(c->rh.arg1, &st); /* checked by frame() */
    if (st != XFER_OK) {
        xfer__stream_conn_close(c, XFER_ERR_AUTH, XFER_LOG_WARN,
                                "refused by the agent: this agent's proof of "
                                "the shared secret did not check there (the "
                                "two hold different keys)");
        return;
    }
    if (hs_mac(c, 0, 1, c->hs) != XFER_OK) {
        hs_tell(c, XFER_WIRE_AUTH_ACK, 0, 0, XFER_ERR_AUTH);
        xfer__stream_conn_close(c, XFER_ERR_AUTH, XFER_LOG_WARN,
                                "refused: the agent did not prove the shared "
                                "secret");
        return;
    }
    hs_up(c, XFER_WIRE_AUTH_ACK);
}

/* Initiator: the answer to our HELLO (its body, if any, in c->hs). */
static void hello_ack(conn_t *c, const xfer_wire_hdr_t *h)
{
    xfer_be_t *be = c->be;
    uint8_t mac[XFER_WIRE_MAC];
    xfer_status_t st;
    txe_t *e;

    xfer__stream_wire_status(h->arg1, &st); /* checked by frame() */
    if (h->seg != XFER_WIRE_VERSION) {
        xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                                "the agent speaks protocol version %u, we "
                                "speak %u", (unsigned)h->seg,
                                XFER_WIRE_VERSION);
        return;
    }
    /* Our settings and the target's differ: it refused, or we refuse. */
    if (st == XFER_ERR_AUTH ||
        (st == XFER_OK && !(h->flags & XFER_WIRE_F_AUTH) != !be->auth)) {
        xfer__stream_conn_close(c, XFER_ERR_AUTH, XFER_LOG_WARN,
                                be->auth ? "the target did not prove the "
                                           "shared secret (it has no auth "
                                           "key)"
                                         : "the target requires "
                                           "authentication; this agent has "
                                           "no auth key");
        return;
    }
    if (st != XFER_OK) {
        xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT, XFER_LOG_WARN,
                                "the agent refused the connection (it is "
                                "epoch %llu now, our metadata names epoch "
                                "%llu: reload its metadata)",
                                (unsigned long long)h->arg0,
                                (unsigned long long)c->epoch);
        return;
    }
    if (!be->auth) {
        hs_up(c, 0);
        return;
    }
    /* The target answered our challenge: it holds the secret and is the
     * agent, of the epoch, our metadata names.  Then our own proof. */
    memcpy(c->nonce_peer, c->hs, XFER_WIRE_NONCE);
    if (hs_mac(c, 1, 1, c->hs + XFER_WIRE_NONCE) != XFER_OK) {
        hs_tell(c, XFER_WIRE_AUTH, 0, 0, XFER_ERR_AUTH);
        xfer__stream_conn_close(c, XFER_ERR_AUTH, XFER_LOG_WARN,
                                "the target did not prove the shared secret "
                                "(its key differs from ours, or it is not "
                                "agent '%s')", c->name);
        return;
    }
    if (hs_mac(c, 0, 0, mac) != XFER_OK ||
        !(e = hs_entry(be, XFER_WIRE_AUTH, 0, 0, 0, 0,
                       (uint64_t)(int64_t)XFER_OK, mac, sizeof mac))) {
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "cannot send our proof of the secret");
        return;
    }
    c->auth_wait = 1;
    xfer__stream_txq_send(c, e);
}

/* Initiator: the target checked our proof. */
static void auth_ack(conn_t *c, const xfer_wire_hdr_t *h)
{
    xfer_status_t st;

    xfer__stream_wire_status(h->arg1, &st); /* checked by frame() */
    if (st != XFER_OK) {
        xfer__stream_conn_close(c, XFER_ERR_AUTH, XFER_LOG_WARN,
                                "the target refused this agent's proof of "
                                "the shared secret");
        return;
    }
    hs_up(c, 0);
}

/* Initiator: a descriptor the target passed (it came with the bytes),
 * only once the handshake bound who the target is. */
static void fd_frame(conn_t *c, const xfer_wire_hdr_t *h)
{
    xfer_be_t *be = c->be;
    char why[256] = "";
    xfer_status_t st;
    int fd;

    if (!be->tp->fd_received || h->len || h->seg || !c->nfdq ||
        !c->hello_done) {
        XFER__VIOLATION(c, "bad SHM_FD (%s)",
                        !c->hello_done ? "before HELLO_ACK"
                                       : "no descriptor came with it");
        return;
    }
    fd = c->fdq[0];
    memmove(c->fdq, c->fdq + 1, --c->nfdq * sizeof(int));
    st = be->tp->fd_received(be->tctx, c, h->tag, h->arg0, fd, why,
                             sizeof why);
    if (st != XFER_OK)
        xfer__stream_conn_close(c, st, XFER_LOG_WARN, "%s", why);
}

/* A handshake frame's status field: one a peer may send. */
static int hs_status(conn_t *c, const xfer_wire_hdr_t *h, xfer_status_t *st)
{
    if (xfer__stream_wire_status(h->arg1, st) < 0 ||
        (*st != XFER_OK && h->len)) {
        XFER__VIOLATION(c, "bad status in a handshake frame (type %u)",
                        h->type);
        return -1;
    }
    return 0;
}

/* Initiator: the frames of the handshake. */
static int initiator_hs_frame(conn_t *c, const xfer_wire_hdr_t *h)
{
    xfer_be_t *be = c->be;
    xfer_status_t st;

    if (h->type == XFER_WIRE_SHM_FD) {
        fd_frame(c, h);
    } else if (h->type == XFER_WIRE_HELLO_ACK) {
        if (c->hello_done || c->auth_wait || h->tag != XFER_WIRE_MAGIC ||
            (h->flags & ~XFER_WIRE_F_AUTH)) {
            XFER__VIOLATION(c, "bad HELLO_ACK");
            return 1;
        }
        if (hs_status(c, h, &st) < 0)
            return 1;
        /* A challenge comes with F_AUTH and an OK, and only then; we read
         * it only when we hold a secret (else the answer is our refusal). */
        if (h->len != (st == XFER_OK && (h->flags & XFER_WIRE_F_AUTH)
                           ? XFER_WIRE_NONCE + XFER_WIRE_MAC
                           : 0)) {
            XFER__VIOLATION(c, "bad HELLO_ACK");
            return 1;
        }
        if (h->len && be->auth) {
            c->head += XFER_WIRE_HDR_SIZE;
            xfer__stream_body_start(c, h, c->hs, h->len);
            return 1;
        }
        hello_ack(c, h);
    } else if (h->type == XFER_WIRE_AUTH_ACK) {
        if (!c->auth_wait || h->seg || h->tag || h->arg0 || h->len ||
            h->flags) {
            XFER__VIOLATION(c, "unexpected AUTH_ACK");
            return 1;
        }
        if (hs_status(c, h, &st) < 0)
            return 1;
        auth_ack(c, h);
    } else {
        return 0;
    }
    if (!c->closed)
        c->head += XFER_WIRE_HDR_SIZE;
    return 1;
}

/* Target: the frames of the handshake (HELLO, then with a secret AUTH). */
static int target_hs_frame(conn_t *c, const xfer_wire_hdr_t *h)
{
    xfer_status_t st;
    size_t lo = 1, hi = XFER_NAME_MAX;

    if (c->auth_wait) {
        if (h->type != XFER_WIRE_AUTH) {
            XFER__VIOLATION(c, "frame type %u before AUTH", h->type);
            return 1;
        }
        if (h->seg || h->tag || h->arg0 || h->flags ||
            hs_status(c, h, &st) < 0 ||
            h->len != (st == XFER_OK ? XFER_WIRE_MAC : 0)) {
            if (!c->closed)
                XFER__VIOLATION(c, "bad AUTH");
            return 1;
        }
        c->head += XFER_WIRE_HDR_SIZE;
        if (h->len) {
            xfer__stream_body_start(c, h, c->hs, h->len);
        } else {
            c->rh = *h;
            auth_done(c);
        }
        return 1;
    }
    if (h->type != XFER_WIRE_HELLO) {
        XFER__VIOLATION(c, "frame type %u before HELLO", h->type);
        return 1;
    }
    if (h->flags & XFER_WIRE_F_AUTH) {
        lo += XFER_WIRE_NONCE;
        hi += XFER_WIRE_NONCE;
    }
    if (h->tag != XFER_WIRE_MAGIC || (h->flags & ~XFER_WIRE_F_AUTH) ||
        h->len < lo || h->len > hi) {
        XFER__VIOLATION(c, "bad HELLO");
        return 1;
    }
    c->head += XFER_WIRE_HDR_SIZE;
    xfer__stream_body_start(c, h, c->hs, h->len);
    return 1;
}

/* Called with a whole header at c->buf + head.  Returns 1 when the frame
 * was taken, 0 when it must wait for more bytes. */
static int frame(conn_t *c)
{
    xfer_be_t *be = c->be;
    xfer_wire_hdr_t h;
    size_t avail = c->tail - c->head - XFER_WIRE_HDR_SIZE;

    xfer_wire_decode(&h, c->buf + c->head);
    if (h.rsvd) {
        XFER__VIOLATION(c, "reserved header bits set");
        return 1;
    }
    if (c->initiator) {
        if (initiator_hs_frame(c, &h))
            return 1;
        if (!c->hello_done) {
            XFER__VIOLATION(c, "frame type %u before the handshake ended",
                            h.type);
            return 1;
        }
        return be->role[1]->frame(c, &h, avail);
    }
    if (!c->hello_done)
        return target_hs_frame(c, &h);
    if (h.type == XFER_WIRE_HELLO || h.type == XFER_WIRE_AUTH) {
        XFER__VIOLATION(c, "a second handshake (frame type %u)", h.type);
        return 1;
    }
    return be->role[0]->frame(c, &h, avail);
}

static void body_done(conn_t *c)
{
    c->rstate = XFER__RX_HDR;
    if (c->rh.type == XFER_WIRE_HELLO)
        hello_done(c);
    else if (c->rh.type == XFER_WIRE_AUTH)
        auth_done(c);
    else if (c->rh.type == XFER_WIRE_HELLO_ACK)
        hello_ack(c, &c->rh);
    else
        c->be->role[c->initiator]->body_done(c);
}

/* Take every complete frame out of the buffer. */
static void rx_parse(conn_t *c)
{
    while (!c->closed) {
        if (c->rstate == XFER__RX_BODY) {
            size_t take = c->tail - c->head;

            if (take > c->left)
                take = c->left;
            if (c->dest && take)
                memcpy(c->dest + c->done, c->buf + c->head, take);
            c->head += take;
            c->done += take;
            c->left -= take;
            if (c->left)
                return;
            body_done(c);
            continue;
        }
        if (!c->initiator && xfer__stream_txq_full(c)) {
            c->paused = 1;
            return;
        }
        if (c->tail - c->head < XFER_WIRE_HDR_SIZE || !frame(c))
            return;
    }
}

/* One read.  A transport that takes fds reads with recvmsg and keeps
 * what arrives until the FD frames that announce them are parsed. */
static ssize_t rx_read(conn_t *c, struct iovec *iov, int niov)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 8)];
    } cm;
    struct msghdr m;
    struct cmsghdr *h;
    ssize_t n;
    int over;

    if (!c->initiator || !c->be->tp->fd_received)
        return readv(c->fd, iov, niov);
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)niov;
    m.msg_control = cm.b;
    m.msg_controllen = sizeof cm.b;
    n = recvmsg(c->fd, &m, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return n;
    /* A peer sends one descriptor per FD frame; more than fit, or more
     * than frames claim them, break the pairing of frames and
     * descriptors: none is kept and the connection closes (the kernel
     * closed those that did not fit). */
    over = (m.msg_flags & MSG_CTRUNC) != 0;
    for (h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h)) {
        size_t k;

        if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
            continue;
        k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
            if (!over && c->nfdq < XFER__STREAM_FDQ_MAX)
                c->fdq[c->nfdq++] = fd;
            else {
                close(fd);
                over = 1;
            }
        }
    }
    if (over) {
        XFER__VIOLATION(c, "more file descriptors than SHM_FD frames (at "
                        "most %u may wait for theirs)",
                        (unsigned)XFER__STREAM_FDQ_MAX);
        errno = EPROTO;
        return -1;
    }
    return n;
}

/* Work that must finish within the timeout.  A handshake counts, so a
 * socket that connects and never speaks does not hold a buffer forever. */
static int conn_busy(const conn_t *c)
{
    return c->connecting || !c->hello_done || c->txh ||
           xfer__stream_reqs_busy(c) || c->rstate == XFER__RX_BODY ||
           c->tail > c->head;
}

/* A paused target parses again once its queue is below half of both
 * bounds, so it does not flap around the line. */
static int txq_low(const conn_t *c)
{
    return c->txn < XFER__STREAM_TXQ_LOW &&
           c->txbytes < c->be->cfg.lim.sendq_bytes / 2;
}

int xfer__stream_txq_full(const conn_t *c)
{
    return c->txn >= XFER__STREAM_TXQ_HIGH ||
           c->txbytes >= c->be->cfg.lim.sendq_bytes;
}

void xfer__stream_conn_nwait(conn_t *c)
{
    if (c->nwait || c->closed)
        return;
    c->nwait = 1;
    c->be->nwaiting++;
    xfer__stream_conn_events(c);
}

static void conn_input(conn_t *c)
{
    xfer_be_t *be = c->be;
    const size_t cap = be->cfg.rx_buf;

    if (c->paused && txq_low(c))
        c->paused = 0;
    rx_parse(c);
    for (int round = 0;
         round < 16 && !c->closed && !c->paused && !c->nwait; round++) {
        ssize_t n;
        size_t want;

        if (c->rstate == XFER__RX_BODY && c->left && c->dest &&
            c->head == c->tail) {
            /* Large payload: straight into its destination, with the
             * bodies the role knows follow it (a WRITEV's entries).  Only
             * a header's worth goes to the buffer behind them, so the
             * next large frame is not half-copied through the buffer. */
            struct iovec *iov = be->scatter;
            const xfer__stream_role_t *role = be->role[c->initiator];
            size_t k = 1, more = 0, got;

            c->head = c->tail = 0;
            iov[0].iov_base = c->dest + c->done;
            iov[0].iov_len = c->left;
            if (role->rx_sg)
                k += role->rx_sg(c, iov + 1, XFER__STREAM_GATHER_MAX - 2);
            for (size_t i = 1; i < k; i++)
                more += iov[i].iov_len;
            iov[k].iov_base = c->buf;
            iov[k].iov_len = XFER_WIRE_HDR_SIZE;
            want = c->left + more + XFER_WIRE_HDR_SIZE;
            n = rx_read(c, iov, (int)k + 1);
            if (n > 0) {
                size_t take = (size_t)n < c->left ? (size_t)n : c->left;

                got = (size_t)n - take;
                c->done += take;
                c->left -= take;
                more = got < more ? got : more;
                c->tail = got - more;
                /* Bytes already in place for the bodies that follow:
                 * each is started by body_done as the previous ends. */
                while (more && !c->closed) {
                    if (!c->left) {
                        body_done(c);
                        continue;
                    }
                    take = more < c->left ? more : c->left;
                    c->done += take;
                    c->left -= take;
                    more -= take;
                }
                if (c->closed)
                    return;
            }
        } else {
            if (c->head == c->tail)
                c->head = c->tail = 0;
            else if (c->head && cap - c->head <
                                    XFER_WIRE_HDR_SIZE + be->cfg.inline_max) {
                memmove(c->buf, c->buf + c->head, c->tail - c->head);
                c->tail -= c->head;
                c->head = 0;
            }
            want = cap - c->tail;
            if (!want)
                break; /* cannot happen: a frame always fits */
            {
                struct iovec one = { c->buf + c->tail, want };

                n = rx_read(c, &one, 1);
            }
            if (n > 0)
                c->tail += (size_t)n;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT,
                                    XFER_LOG_WARN, "receive failed: %s",
                                    strerror(errno));
            return;
        }
        if (n == 0) {
            int busy = xfer__stream_reqs_busy(c) || c->txh ||
                       c->rstate == XFER__RX_BODY || c->tail > c->head ||
                       !c->hello_done;
            /* A peer closing an idle connection is routine (it exited or
             * dropped us); only lost work deserves a warning. */
            xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT,
                                    busy ? XFER_LOG_WARN : XFER_LOG_INFO,
                                    c->hello_done
                                        ? "closed by the peer"
                                        : "closed by the peer during the "
                                          "handshake (stale metadata?)");
            return;
        }
        c->idle_ticks = 0;
        c->active = 1;
        rx_parse(c);
        if ((size_t)n < want)
            break; /* drained: epoll says when more comes */
    }
    if (!c->closed && c->hh && c->hello_done && be->tp->held_ready)
        be->tp->held_ready(be->tctx, c);
    if (!c->closed && c->txh && !c->blocked)
        xfer__stream_flush(c);
    if (c->closed)
        return;
    if (c->rstate == XFER__RX_BODY || c->txh || c->hh)
        xfer__stream_timer_need(be);
    xfer__stream_conn_events(c);
}

/* ------------------------------------------------------------------ */
/* Progress                                                            */
/* ------------------------------------------------------------------ */

/* Out of descriptors (or kernel memory): accepting again at once would
 * fail again at once, so the listen fd leaves the poll set for a moment
 * (the backlog keeps the callers waiting) and the episode is said once. */
static void accept_pause(xfer_be_t *be, int err)
{
    epoll_ctl(be->epfd, EPOLL_CTL_DEL, be->lfd, NULL);
    be->accept_off = 1;
    be->accept_at_ms = now_ms() + XFER__STREAM_ACCEPT_BACKOFF_MS;
    if (!be->accept_logged)
        LOG(be, XFER_LOG_WARN, "cannot accept connections: %s; retrying "
            "every %u ms (%u connections accepted now)", strerror(err),
            XFER__STREAM_ACCEPT_BACKOFF_MS, be->naccepted);
    be->accept_logged = 1;
    xfer__stream_timer_need(be);
}

static void accept_resume(xfer_be_t *be, uint64_t now)
{
    struct epoll_event ev;

    if (!be->accept_off || now < be->accept_at_ms)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = &be->lkind;
    if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, be->lfd, &ev) == 0 ||
        errno == EEXIST)
        be->accept_off = 0;
}

/* Accepted connections from the source of key. */
static unsigned addr_count(xfer_be_t *be, const uint8_t *key)
{
    unsigned n = 0;

    for (conn_t *c = be->conns; c; c = c->next)
        if (c->accepted && !memcmp(c->akey, key, XFER__STREAM_AKEY))
            n++;
    return n;
}

static void do_accept(xfer_be_t *be)
{
    for (int i = 0; i < 32; i++) {
        int fd = accept4(be->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        uint8_t key[XFER__STREAM_AKEY];
        char where[128];
        conn_t *c;

        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                accept_pause(be, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK &&
                     errno != ECONNABORTED)
                LOG(be, XFER_LOG_WARN, "accept failed: %s", strerror(errno));
            return;
        }
        if (be->accept_logged)
            LOG(be, XFER_LOG_INFO, "accepting connections again");
        be->accept_logged = 0;
        peer_addr(fd, where, sizeof where, key);
        /* Refused at once, so the backlog keeps moving and the caller
         * hears it instead of waiting out its timeout. */
        if (be->naccepted >= be->cfg.lim.max_conns ||
            (key[0] &&
             addr_count(be, key) >= be->cfg.lim.max_conns_per_addr)) {
            int all = be->naccepted >= be->cfg.lim.max_conns;

            LOG(be, XFER_LOG_WARN, "refused a connection from %s: %s "
                "(%llu)", where,
                all ? "as many connections as max_conns are open"
                    : "as many connections from its source as "
                      "max_conns_per_addr are open",
                (unsigned long long)(all ? be->cfg.lim.max_conns
                                         : be->cfg.lim.max_conns_per_addr));
            close(fd);
            continue;
        }
        if (be->tp->accepted && be->tp->accepted(be->tctx, fd) < 0) {
            close(fd);
            continue;
        }
        if (!(c = conn_new(be, fd, 0, 0))) {
            LOG(be, XFER_LOG_ERROR, "no memory for an incoming connection");
            close(fd);
            continue;
        }
        c->accepted = 1;
        be->naccepted++;
        memcpy(c->akey, key, sizeof key);
        memcpy(c->where, where, sizeof c->where);
        xfer__stream_timer_need(be);
    }
}

/* When nothing is busy, the timer fires once, when the first idle
 * connection is due to close (or never), instead of ticking. */
static void timer_idle(xfer_be_t *be, uint64_t now, uint64_t due)
{
    struct itimerspec its;

    memset(&its, 0, sizeof its);
    if (due != UINT64_MAX) {
        uint64_t ms = due > now ? due - now : 1;

        its.it_value.tv_sec = (time_t)(ms / 1000);
        its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
    }
    timerfd_settime(be->tfd, 0, &its, NULL);
    be->timer_on = 0;
}

/* Stall detection by ticks (the hot path only clears a counter and sets
 * a flag), the handshake deadline from accept, and idle connections:
 * ours close after half of idle_timeout_ms, before the peer's target
 * would close them under a post of ours. */
static void do_tick(xfer_be_t *be)
{
    const xfer__stream_limits_t *lim = &be->cfg.lim;
    uint64_t k = 0, now, due = UINT64_MAX;
    int busy = 0;
    conn_t *c, *next;

    if (read(be->tfd, &k, sizeof k) != (ssize_t)sizeof k || !k)
        return;
    now = now_ms();
    accept_resume(be, now);
    for (c = be->conns; c; c = next) {
        uint64_t idle;

        next = c->next;
        if (c->active) {
            c->active = 0;
            c->last_ms = now;
        }
        if (c->accepted && !c->hello_done &&
            now - c->t0_ms >= lim->handshake_timeout_ms) {
            xfer__stream_conn_close(c, XFER_ERR_TIMEOUT, XFER_LOG_WARN,
                                    "no handshake within %llu ms "
                                    "(handshake_timeout_ms)",
                                    (unsigned long long)
                                        lim->handshake_timeout_ms);
            continue;
        }
        /* Waiting for our application to take notifications: not the
         * peer's stall, and it is retried at every progress. */
        if (c->nwait)
            continue;
        if (conn_busy(c)) {
            busy = 1;
            c->idle_ticks += (unsigned)(k > UINT_MAX / 2 ? UINT_MAX / 2 : k);
            if (c->idle_ticks > be->timeout_ticks)
                xfer__stream_conn_close(c, XFER_ERR_TIMEOUT, XFER_LOG_WARN,
                                        "%s for %llu ms",
                                        c->connecting
                                            ? "connect did not finish"
                                            : "no progress",
                                        (unsigned long long)
                                            be->cfg.timeout_ms);
            continue;
        }
        idle = c->initiator ? lim->idle_timeout_ms / 2 : lim->idle_timeout_ms;
        if (now - c->last_ms >= idle) {
            c->idle_closed = 1;
            xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT,
                                    XFER_LOG_INFO,
                                    "idle for %llu ms (idle_timeout_ms)",
                                    (unsigned long long)idle);
            continue;
        }
        if (c->last_ms + idle < due)
            due = c->last_ms + idle;
    }
    if (!busy && !be->accept_off)
        timer_idle(be, now, due);
}

/* Connections that waited for room in the agent's notification queue
 * try again: the application may have taken some since. */
static void notif_retry(xfer_be_t *be)
{
    conn_t *c, *next;

    for (c = be->conns; c && be->nwaiting; c = next) {
        next = c->next;
        if (!c->nwait)
            continue;
        c->nwait = 0;
        be->nwaiting--;
        conn_input(c);
    }
}

int xfer__stream_progress(xfer_be_t *be)
{
    struct epoll_event ev[EVENTS_MAX];
    int n;

    if (be->accept_off)
        accept_resume(be, now_ms());
    if (be->nwaiting)
        notif_retry(be);
    n = epoll_wait(be->epfd, ev, EVENTS_MAX, 0);
    if (n < 0)
        return errno == EINTR ? 0 : XFER_ERR_BACKEND;
    for (int i = 0; i < n; i++) {
        int kind = *(int *)ev[i].data.ptr;
        uint32_t x = ev[i].events;
        conn_t *c;

        if (kind == XFER__H_LISTEN) {
            do_accept(be);
            continue;
        }
        if (kind == XFER__H_TIMER) {
            do_tick(be);
            continue;
        }
        c = ev[i].data.ptr;
        if (c->closed)
            continue;
        if (c->connecting) {
            if (x & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                connect_done(c);
            continue;
        }
        if ((c->paused || c->nwait) && (x & (EPOLLERR | EPOLLHUP))) {
            xfer__stream_conn_close(c, XFER_ERR_REMOTE_DISCONNECT,
                                    XFER_LOG_WARN, "connection lost");
            continue;
        }
        if (x & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_input(c);
        if (!c->closed && (x & EPOLLOUT)) {
            c->blocked = 0;
            xfer__stream_flush(c);
            if (!c->closed && c->paused && txq_low(c))
                conn_input(c);
        }
    }
    reap(be);
    return n;
}

xfer_status_t xfer__stream_event_fd(xfer_be_t *be, int *fd)
{
    *fd = be->epfd;
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* Instance                                                            */
/* ------------------------------------------------------------------ */

static void limits_default(xfer__stream_limits_t *l)
{
    if (!l->max_conns)
        l->max_conns = XFER__STREAM_MAX_CONNS;
    if (!l->max_conns_per_addr)
        l->max_conns_per_addr = XFER__STREAM_MAX_CONNS_PER_ADDR;
    if (!l->handshake_timeout_ms)
        l->handshake_timeout_ms = XFER__STREAM_HANDSHAKE_MS;
    if (!l->idle_timeout_ms)
        l->idle_timeout_ms = XFER__STREAM_IDLE_MS;
    if (!l->sendq_bytes)
        l->sendq_bytes = XFER__STREAM_SENDQ_BYTES;
}

/* An instance whose frames after the handshake the caller's roles read. */
xfer_status_t xfer__stream_instance(const xfer_host_t *host,
                                    const xfer__stream_transport_t *tp,
                                    void *tctx, const xfer__stream_cfg_t *cfg,
                                    int listen_fd, xfer_be_t **bep)
{
    struct epoll_event ev;
    xfer_be_t *be;
    uint64_t tick;

    if (cfg->rx_buf < XFER_WIRE_HDR_SIZE + cfg->inline_max)
        return host->error(host->ctx, XFER_ERR_CONFIG,
                           "%s: rx_buf (%zu) must hold a header (%u bytes) "
                           "plus inline_max (%zu)",
                           cfg->name, cfg->rx_buf, XFER_WIRE_HDR_SIZE,
                           cfg->inline_max);
    if (!cfg->timeout_ms)
        return host->error(host->ctx, XFER_ERR_CONFIG,
                           "%s: timeout_ms must be at least 1", cfg->name);
    if (!host->agent_name || !host->agent_name[0] ||
        strlen(host->agent_name) > XFER_NAME_MAX)
        return host->error(host->ctx, XFER_ERR_INVALID,
                           "%s: the agent name must be 1 to %u bytes",
                           cfg->name, XFER_NAME_MAX);
    if (!(be = calloc(1, sizeof *be)))
        return host->error(host->ctx, XFER_ERR_NOMEM, "%s: out of memory",
                           cfg->name);
    be->host = host;
    be->tp = tp;
    be->tctx = tctx;
    be->cfg = *cfg;
    /* A core older than ABI minor 4 has no secret to offer. */
    be->auth = host->size >= offsetof(xfer_host_t, auth_check) +
                                 sizeof(host->auth_check) &&
               host->auth;
    limits_default(&be->cfg.lim);
    be->lfd = listen_fd;
    be->lkind = XFER__H_LISTEN;
    be->tkind = XFER__H_TIMER;
    be->next_id = 1;
    /* Eight ticks per timeout: a stall is reported between timeout_ms
     * and 9/8 of it (a handshake deadline likewise), and an instance with
     * nothing under way ticks not at all. */
    tick = (cfg->timeout_ms < be->cfg.lim.handshake_timeout_ms
                ? cfg->timeout_ms
                : be->cfg.lim.handshake_timeout_ms) / 8;
    be->tick_ms = (unsigned)(tick < 5 ? 5 : tick > 1000 ? 1000 : tick);
    be->timeout_ticks =
        (unsigned)((cfg->timeout_ms + be->tick_ms - 1) / be->tick_ms);
    be->epfd = epoll_create1(EPOLL_CLOEXEC);
    be->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (be->epfd < 0 || be->tfd < 0)
        goto fail;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = &be->tkind;
    if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, be->tfd, &ev) < 0)
        goto fail;
    if (listen_fd >= 0) {
        ev.data.ptr = &be->lkind;
        if (epoll_ctl(be->epfd, EPOLL_CTL_ADD, listen_fd, &ev) < 0)
            goto fail;
    }
    *bep = be;
    return XFER_OK;
fail:
    {
        int e = errno;

        if (be->epfd >= 0)
            close(be->epfd);
        if (be->tfd >= 0)
            close(be->tfd);
        free(be);
        return host->error(host->ctx, XFER_ERR_BACKEND,
                           "%s: cannot set up epoll: %s", cfg->name,
                           strerror(e));
    }
}

xfer_status_t xfer__stream_create(const xfer_host_t *host,
                                  const xfer__stream_transport_t *tp,
                                  void *tctx, const xfer__stream_cfg_t *cfg,
                                  int listen_fd, xfer_be_t **bep)
{
    xfer_status_t st = xfer__stream_instance(host, tp, tctx, cfg, listen_fd,
                                             bep);

    if (st == XFER_OK) {
        (*bep)->role[0] = &xfer__stream_target;
        (*bep)->role[1] = &xfer__stream_initiator;
    }
    return st;
}

void xfer__stream_destroy(xfer_be_t *be)
{
    txe_t *e;

    if (!be)
        return;
    while (be->conns)
        xfer__stream_conn_close(be->conns, XFER_ERR_REMOTE_DISCONNECT,
                                XFER_LOG_DEBUG, "backend shut down");
    reap(be);
    /* The core removes peers and registrations before fini; anything
     * left is freed so a misbehaving caller does not also leak. */
    while (be->peers) {
        xfer_be_peer_t *p = be->peers;

        be->peers = p->next;
        free(p->info);
        free(p);
    }
    while (be->mems) {
        smem_t *m = be->mems;

        be->mems = m->next;
        free(m);
    }
    while ((e = be->free_txe)) {
        be->free_txe = e->next;
        free(e);
    }
    close(be->tfd);
    close(be->epfd);
    free(be);
}

void *xfer__stream_tctx(xfer_be_t *be)
{
    return be->tctx;
}

/* ------------------------------------------------------------------ */
/* Peers                                                               */
/* ------------------------------------------------------------------ */

xfer_status_t xfer__stream_peer_add(xfer_be_t *be, const char *name,
                                    uint64_t epoch, const void *info,
                                    size_t len, xfer_be_peer_t **peerp)
{
    xfer_status_t st;
    xfer_be_peer_t *p;

    if (!name || !name[0] || strlen(name) > XFER_NAME_MAX)
        return ERR(be, XFER_ERR_INVALID,
                   "%s: agent name must be 1 to %u bytes", be->cfg.name,
                   XFER_NAME_MAX);
    if (!info || !len || len > XFER_BE_BLOB_MAX)
        return ERR(be, XFER_ERR_INVALID,
                   "%s: connection info of agent '%s' is %zu bytes, not a "
                   "%s address",
                   be->cfg.name, name, len, be->cfg.name);
    st = be->tp->info_check(be->tctx, info, len);
    if (st != XFER_OK)
        return st;
    if (!(p = calloc(1, PRIV_AT(sizeof *p) + be->cfg.peer_priv)) ||
        !(p->info = malloc(len))) {
        free(p);
        return ERR(be, XFER_ERR_NOMEM, "%s: out of memory", be->cfg.name);
    }
    p->be = be;
    p->priv = (char *)p + PRIV_AT(sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->epoch = epoch;
    memcpy(p->info, info, len);
    p->info_len = len;
    be->tp->info_str(be->tctx, info, len, p->where, sizeof p->where);
    p->refs = 1;
    p->next = be->peers;
    if (be->peers)
        be->peers->prev = p;
    be->peers = p;
    *peerp = p;
    return XFER_OK;
}

void xfer__stream_peer_unref(xfer_be_peer_t *p)
{
    xfer_be_t *be = p->be;

    if (--p->refs)
        return;
    if (p->conn)
        xfer__stream_conn_close(p->conn, XFER_ERR_REMOTE_DISCONNECT,
                                XFER_LOG_DEBUG, "agent forgotten");
    if (p->prev)
        p->prev->next = p->next;
    else
        be->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p->info);
    free(p);
}

void xfer__stream_peer_remove(xfer_be_t *be, xfer_be_peer_t *p)
{
    (void)be;
    if (!p)
        return;
    p->removed = 1;
    if (p->conn)
        xfer__stream_conn_close(p->conn, XFER_ERR_REMOTE_DISCONNECT,
                                XFER_LOG_DEBUG, "agent removed");
    xfer__stream_peer_unref(p);
}

xfer_status_t xfer__stream_peer_connect(xfer_be_t *be, xfer_be_peer_t *p)
{
    xfer_status_t st = XFER_OK;

    if (p->removed)
        return ERR(be, XFER_ERR_REMOTE_DISCONNECT,
                   "%s: agent '%s' was removed", be->cfg.name, p->name);
    if (p->conn) {
        p->eager = !p->conn->hello_done;
        return p->conn->hello_done ? XFER_OK : XFER_IN_PROG;
    }
    /* The connection these calls waited for ended: say how, once; the
     * next call starts another. */
    if (p->eager && p->last_err != XFER_OK) {
        p->eager = 0;
        return ERR(be, p->last_err,
                   "%s: connection to agent '%s' (%s) failed: %s",
                   be->cfg.name, p->name, p->where, p->last_why);
    }
    if (!xfer__stream_peer_conn(be, p, &st))
        return st;
    p->eager = 1;
    xfer__stream_flush(p->conn);
    if (!p->conn)
        return xfer__stream_peer_connect(be, p);
    return XFER_IN_PROG;
}

/* ------------------------------------------------------------------ */
/* What transports may look at                                         */
/* ------------------------------------------------------------------ */

void *xfer__stream_conn_priv(xfer__stream_conn_t *c)
{
    return c->priv;
}

int xfer__stream_conn_fd(const xfer__stream_conn_t *c)
{
    return c->fd;
}

int xfer__stream_conn_initiator(const xfer__stream_conn_t *c)
{
    return c->initiator;
}

int xfer__stream_conn_up(const xfer__stream_conn_t *c)
{
    return c->hello_done && !c->closed;
}

int xfer__stream_conn_idle_closed(const xfer__stream_conn_t *c)
{
    return c->idle_closed;
}

int xfer__stream_conn_holds(const xfer__stream_conn_t *c)
{
    return c->hh != NULL;
}

xfer_be_peer_t *xfer__stream_conn_peer(const xfer__stream_conn_t *c)
{
    return c->initiator ? c->peer : NULL;
}

void *xfer__stream_peer_priv(xfer_be_peer_t *p)
{
    return p->priv;
}

const char *xfer__stream_conn_name(const xfer__stream_conn_t *c)
{
    return c->name;
}

uint64_t xfer__stream_conn_epoch(const xfer__stream_conn_t *c)
{
    return c->epoch;
}

xfer_status_t xfer__stream_conn_send_fd(xfer__stream_conn_t *c, uint64_t id,
                                        uint64_t size, int src)
{
    xfer_be_t *be = c->be;
    txe_t *e;
    int fd;

    if (c->closed)
        return XFER_ERR_REMOTE_DISCONNECT;
    e = xfer__stream_txe_get(be);
    fd = e ? fcntl(src, F_DUPFD_CLOEXEC, 0) : -1;
    if (fd < 0) {
        if (e)
            xfer__stream_txe_put(be, e);
        xfer__stream_conn_close(c, XFER_ERR_NOMEM, XFER_LOG_ERROR,
                                "cannot share a descriptor: %s",
                                strerror(errno));
        return XFER_ERR_NOMEM;
    }
    e->kind = XFER__TX_CTRL;
    xfer__stream_ctrl_hdr(e, XFER_WIRE_SHM_FD, 0, id, size, 0, 0);
    e->has_fd = 1;
    e->fd = fd;
    xfer__stream_txq_send(c, e);
    return c->closed ? XFER_ERR_REMOTE_DISCONNECT : XFER_OK;
}
