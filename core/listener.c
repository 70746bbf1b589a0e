/* listener.c - the side-channel listener: length-framed send / fetch /
 * invalidate of metadata over TCP (docs/wire-listener.md), server and client. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/ctl.h"

#define LS_MAGIC 0x58464d44u      /* "XFMD" */
#define LS_VERSION 1
#define LS_HDR 12                 /* magic u32, version u16, type u16, len u32 */
#define LS_DEFAULT_TIMEOUT_MS 5000
#define LS_ERR_TEXT_MAX 512
/* Bounds on what clients make the listener hold (docs/wire-listener.md);
 * the first three are agent options. */
#define LS_DEFAULT_MAX_CLIENTS 64
#define LS_DEFAULT_MAX_PER_ADDR 8
#define LS_DEFAULT_BUFFER_BYTES ((size_t)4 * XFER_MD_MAX)
/* Over one connection's life, requests and replies together: past it
 * the connection is closed after the reply that crossed it. */
#define LS_CONN_MAX_BYTES ((uint64_t)4 * XFER_MD_MAX)
/* accept failing for want of fds (EMFILE, ENFILE) or memory: try again
 * this much later instead of spinning on a backlog we cannot take. */
#define LS_ACCEPT_PAUSE_MS 100
/* Events any client can repeat at will are logged once, then at most
 * once per this period, with the count of those not logged. */
#define LS_LOG_EVERY_MS 10000

enum {
    LS_SEND = 1,                  /* payload: metadata blob; reply OK */
    LS_FETCH = 2,                 /* payload: agent name or empty; reply MD */
    LS_INVALIDATE = 3,            /* payload: sender's name; reply OK */
    LS_HELLO = 4,                 /* payload: nonce, epoch, name; reply
                                     CHALLENGE (with a secret) */
    LS_AUTH = 5,                  /* payload: the client's MAC; reply OK */
    LS_OK = 0x81,                 /* empty payload */
    LS_MD = 0x82,                 /* payload: metadata blob */
    LS_ERR = 0x83,                /* payload: i32 status, then a sentence */
    LS_CHALLENGE = 0x84,          /* payload: nonce, MAC, epoch, name */
};

/* Authentication (docs/wire-listener.md): HELLO is nonce_c, the client's
 * epoch (u64) and name; CHALLENGE is nonce_s, the server's MAC, its epoch
 * and name; AUTH is the client's MAC.  The labels keep a MAC made for
 * one message from passing for another, or for the stream's. */
#define LS_NONCE XFER__AUTH_NONCE_LEN
#define LS_HELLO_MIN (LS_NONCE + 8 + 1)
#define LS_CHALLENGE_MIN (LS_NONCE + XFER_AUTH_MAC_LEN + 8 + 1)
#define LS_LABEL_CHALLENGE "xfer-listen-challenge"
#define LS_LABEL_AUTH "xfer-listen-auth"

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void hdr_build(unsigned char *h, unsigned type, uint32_t len)
{
    put_u32(h, LS_MAGIC);
    put_u16(h + 4, LS_VERSION);
    put_u16(h + 6, (uint16_t)type);
    put_u32(h + 8, len);
}

/* Largest payload a frame of this type may carry. */
static uint32_t type_max(unsigned type)
{
    switch (type) {
    case LS_SEND:
    case LS_MD:
        return XFER_MD_MAX;
    case LS_FETCH:
    case LS_INVALIDATE:
        return XFER_NAME_MAX;
    case LS_HELLO:
        return LS_NONCE + 8 + XFER_NAME_MAX;
    case LS_AUTH:
        return XFER_AUTH_MAC_LEN;
    case LS_CHALLENGE:
        return LS_CHALLENGE_MIN - 1 + XFER_NAME_MAX;
    case LS_OK:
        return 0;
    case LS_ERR:
        return 4 + LS_ERR_TEXT_MAX;
    }
    return 0;
}

/* "host:port" or "[v6]:port" into its parts; host may be empty. */
static xfer_status_t split_hostport(const char *hp, char *host, size_t hsize,
                                    char *port, size_t psize)
{
    const char *colon, *h = hp;
    size_t hl;

    if (hp[0] == '[') {
        const char *close = strchr(hp, ']');

        if (close == NULL || close[1] != ':')
            return xfer__err(XFER_ERR_INVALID, "address '%s' is not "
                             "\"[v6-address]:port\"", hp);
        h = hp + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(hp, ':');
        if (colon == NULL)
            return xfer__err(XFER_ERR_INVALID, "address '%s' is not "
                             "\"host:port\"", hp);
        hl = (size_t)(colon - hp);
    }
    if (hl >= hsize || strlen(colon + 1) >= psize || colon[1] == '\0')
        return xfer__err(XFER_ERR_INVALID, "address '%s' is not \"host:port\"",
                         hp);
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return xfer__err(XFER_ERR_INVALID, "address '%s': port '%s' is not "
                             "a number", hp, colon + 1);
    if (strtoul(colon + 1, NULL, 10) > 65535)
        return xfer__err(XFER_ERR_INVALID, "address '%s': port out of range",
                         hp);
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, psize, "%s", colon + 1);
    return XFER_OK;
}

static void addr_text(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, size, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, size, "[%s]:%u", host, port);
    } else {
        snprintf(buf, size, "?");
    }
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: reachable from this host
 * alone. */
static bool addr_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >>
                24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)
                                         ->sin6_addr;

        return IN6_IS_ADDR_LOOPBACK(a6) ||
               (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return false;
}

/* ---- server ---------------------------------------------------------------- */

typedef struct ls_conn {
    int fd;
    char peer[64];
    unsigned char from[17];       /* source address: family, then bytes */
    uint64_t seq;                 /* order of acceptance: the oldest goes first */
    uint64_t bytes;               /* requests and replies so far */
    size_t held;                  /* of the listener's buffer budget */
    uint64_t deadline;            /* the current request must end by then */
    unsigned char hdr[LS_HDR];
    size_t hdr_got;
    unsigned type;
    uint32_t len;
    unsigned char *in;            /* payload, grown as it arrives */
    size_t in_cap, in_got;
    unsigned char *out;           /* reply being written */
    size_t out_len, out_off;
    bool close_after;             /* after the reply: a bad frame */
    /* Authentication, with a secret: nothing but HELLO and AUTH is
     * served until the client proved it, as `client` of client_epoch. */
    enum { LS_ANON, LS_CHALLENGED, LS_PROVED } auth;
    uint8_t nonce_c[LS_NONCE], nonce_s[LS_NONCE];
    uint64_t client_epoch;
    char client[XFER_NAME_MAX + 1];
    struct ls_conn *next;
} ls_conn_t;

/* One kind of event logged now and then (LS_LOG_EVERY_MS). */
typedef struct ls_ratelog {
    uint64_t next;                /* no line before then */
    unsigned skipped;             /* since the last line */
} ls_ratelog_t;

struct xfer__listener {
    xfer_agent_t *agent;
    int fd, epfd, wake_fd;
    unsigned timeout_ms;
    unsigned max_clients, max_per_addr;
    size_t buf_max, buf_used;     /* payloads and replies held */
    uint64_t paused_until;        /* accepting resumes then; 0: not paused */
    uint64_t accepted;            /* clients so far */
    ls_ratelog_t log_addr, log_full, log_evict, log_accept, log_buf;
    ls_ratelog_t log_auth;        /* refusals for want of authentication */
    char addr[80];
    pthread_t thread;
    atomic_bool stop;
    ls_conn_t *conns;
    unsigned nconns;
};

/* Whether to log an event of this kind now; more receives the end of
 * the line: how many were not logged since the last one, if any. */
static bool ratelog_due(ls_ratelog_t *r, char *more, size_t size)
{
    uint64_t now = mono_ms();

    if (now < r->next) {
        r->skipped++;
        return false;
    }
    more[0] = '\0';
    if (r->skipped > 0)
        snprintf(more, size, " (%u more since the last such line)",
                 r->skipped);
    r->skipped = 0;
    r->next = now + LS_LOG_EVERY_MS;
    return true;
}

/* What the budget has left (small error replies may overdraw it). */
static size_t budget_room(const xfer__listener_t *l)
{
    return l->buf_used < l->buf_max ? l->buf_max - l->buf_used : 0;
}

/* Charge n bytes a client makes us hold to the listener's budget. */
static bool budget_take(xfer__listener_t *l, ls_conn_t *c, size_t n)
{
    if (n > budget_room(l))
        return false;
    l->buf_used += n;
    c->held += n;
    return true;
}

static void budget_give(xfer__listener_t *l, ls_conn_t *c)
{
    l->buf_used -= c->held;
    c->held = 0;
}

static void conn_close(xfer__listener_t *l, ls_conn_t *c)
{
    ls_conn_t **pp;

    for (pp = &l->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (c->fd >= 0) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    budget_give(l, c);
    free(c->in);
    free(c->out);
    free(c);
    l->nconns--;
}

static void conn_watch(xfer__listener_t *l, ls_conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Queue a reply frame; a failed allocation drops the client. */
static int conn_reply(xfer__listener_t *l, ls_conn_t *c, unsigned type,
                      const void *p1, size_t n1, const void *p2, size_t n2)
{
    c->out = malloc(LS_HDR + n1 + n2);
    if (c->out == NULL)
        return -1;
    /* Charged even past the budget: large replies were checked against
     * it before they were built, the rest are a few hundred bytes. */
    l->buf_used += LS_HDR + n1 + n2;
    c->held += LS_HDR + n1 + n2;
    hdr_build(c->out, type, (uint32_t)(n1 + n2));
    if (n1 > 0)
        memcpy(c->out + LS_HDR, p1, n1);
    if (n2 > 0)
        memcpy(c->out + LS_HDR + n1, p2, n2);
    c->out_len = LS_HDR + n1 + n2;
    c->out_off = 0;
    conn_watch(l, c, EPOLLOUT);
    return 0;
}

static int conn_reply_err(xfer__listener_t *l, ls_conn_t *c,
                          xfer_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int conn_reply_err(xfer__listener_t *l, ls_conn_t *c,
                          xfer_status_t st, const char *fmt, ...)
{
    unsigned char code[4];
    char text[LS_ERR_TEXT_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(text))
        n = (int)sizeof(text) - 1;
    put_u32(code, (uint32_t)(int32_t)st);
    return conn_reply(l, c, LS_ERR, code, 4, text, (size_t)n);
}

/* Whether to log a refusal for want of authentication now: anyone can
 * repeat one at will, so they are logged now and then (more: the end of
 * the line, with how many were not). */
static bool auth_log_due(xfer__listener_t *l, char *more, size_t size)
{
    return ratelog_due(&l->log_auth, more, size);
}

/* Refuse a bad frame: log it, answer with the reason, then close. */
#define REFUSE_AS(l, c, st, ...)                                            \
    do {                                                                    \
        char why_[LS_ERR_TEXT_MAX], more_[64] = "";                         \
        snprintf(why_, sizeof(why_), __VA_ARGS__);                          \
        if ((st) != XFER_ERR_AUTH || auth_log_due((l), more_,               \
                                                  sizeof(more_)))           \
            xfer__log(XFER_LOG_WARN, "listener", "agent %s refused a "      \
                      "frame from %s: %s%s", (l)->agent->name, (c)->peer,   \
                      why_, more_);                                         \
        (c)->close_after = true;                                            \
        return conn_reply_err((l), (c), (st), "%s", why_);                  \
    } while (0)
#define REFUSE(l, c, ...) REFUSE_AS(l, c, XFER_ERR_INVALID, __VA_ARGS__)

/* An agent name from a frame: 1 to 255 printable bytes. */
static bool name_ok(const unsigned char *p, size_t n)
{
    if (n == 0 || n > XFER_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

/* The MAC of one side of the exchange: the server's (in CHALLENGE) or
 * the client's (in AUTH), over both nonces and both identities. */
static xfer_status_t ls_mac(const xfer__auth_t *k, bool server,
                            const uint8_t *nonce_c, const uint8_t *nonce_s,
                            const char *sname, uint64_t sepoch,
                            const char *cname, uint64_t cepoch,
                            uint8_t mac[XFER_AUTH_MAC_LEN], bool check)
{
    uint8_t t[XFER__AUTH_TRANSCRIPT_MAX];
    xfer__auth_part_t part = {t, 0};

    part.len = server ? xfer__auth_transcript(t, LS_LABEL_CHALLENGE, nonce_c,
                                              nonce_s, sname, sepoch, cname,
                                              cepoch)
                      : xfer__auth_transcript(t, LS_LABEL_AUTH, nonce_s,
                                              nonce_c, cname, cepoch, sname,
                                              sepoch);
    return check ? xfer__auth_check(k, &part, 1, mac)
                 : xfer__auth_mac(k, &part, 1, mac);
}

/* HELLO and AUTH: the client proves the secret, and learns that we hold
 * it too (our MAC covers its nonce). */
static int conn_auth(xfer__listener_t *l, ls_conn_t *c)
{
    xfer_agent_t *a = l->agent;
    unsigned char out[LS_CHALLENGE_MIN - 1 + XFER_NAME_MAX];
    size_t nlen;

    if (c->type == LS_HELLO) {
        nlen = c->len - (LS_NONCE + 8);
        if (c->auth != LS_ANON)
            REFUSE(l, c, "a second HELLO on one connection");
        if (c->len < LS_HELLO_MIN || !name_ok(c->in + LS_NONCE + 8, nlen))
            REFUSE(l, c, "HELLO must carry a %d-byte nonce, an epoch and an "
                   "agent name of 1 to %d printable bytes", LS_NONCE,
                   XFER_NAME_MAX);
        memcpy(c->client, c->in + LS_NONCE + 8, nlen);
        c->client[nlen] = '\0';
        if (a->auth == NULL)
            REFUSE_AS(l, c, XFER_ERR_AUTH, "client '%s' requires "
                      "authentication; agent '%s' has no auth key",
                      c->client, a->name);
        memcpy(c->nonce_c, c->in, LS_NONCE);
        c->client_epoch = get_u64(c->in + LS_NONCE);
        xfer__err_clear();
        if (xfer__random(c->nonce_s, LS_NONCE) != XFER_OK ||
            ls_mac(a->auth, true, c->nonce_c, c->nonce_s, a->name, a->epoch,
                   c->client, c->client_epoch, out + LS_NONCE,
                   false) != XFER_OK)
            return conn_reply_err(l, c, XFER_ERR_BACKEND, "agent '%s' "
                                  "cannot make a challenge: %s", a->name,
                                  xfer_last_error());
        memcpy(out, c->nonce_s, LS_NONCE);
        put_u64(out + LS_NONCE + XFER_AUTH_MAC_LEN, a->epoch);
        memcpy(out + LS_CHALLENGE_MIN - 1, a->name, strlen(a->name));
        c->auth = LS_CHALLENGED;
        return conn_reply(l, c, LS_CHALLENGE, out,
                          LS_CHALLENGE_MIN - 1 + strlen(a->name), NULL, 0);
    }
    /* AUTH */
    if (c->auth != LS_CHALLENGED || c->len != XFER_AUTH_MAC_LEN)
        REFUSE(l, c, "AUTH must answer this connection's CHALLENGE with a "
               "%d-byte MAC", XFER_AUTH_MAC_LEN);
    if (ls_mac(a->auth, false, c->nonce_c, c->nonce_s, a->name, a->epoch,
               c->client, c->client_epoch, c->in, true) != XFER_OK)
        REFUSE_AS(l, c, XFER_ERR_AUTH, "client '%s' did not prove the "
                  "shared secret", c->client);
    c->auth = LS_PROVED;
    xfer__log(XFER_LOG_INFO, "listener", "agent %s authenticated client "
              "'%s' at %s", a->name, c->client, c->peer);
    return conn_reply(l, c, LS_OK, NULL, 0, NULL, 0);
}

/* Refuse a request for want of room: logged now and then, answered
 * with XFER_ERR_BUSY, then the connection is closed. */
static int conn_busy(xfer__listener_t *l, ls_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int conn_busy(xfer__listener_t *l, ls_conn_t *c, const char *fmt, ...)
{
    char why[LS_ERR_TEXT_MAX], more[64];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (ratelog_due(&l->log_buf, more, sizeof(more)))
        xfer__log(XFER_LOG_WARN, "listener", "agent %s refused a request of "
                  "%s: %s%s", l->agent->name, c->peer, why, more);
    c->close_after = true;
    return conn_reply_err(l, c, XFER_ERR_BUSY, "%s", why);
}

/* A whole request arrived: serve it.  Runs without the agent lock; the
 * calls below take it as the public API does. */
static int conn_serve(xfer__listener_t *l, ls_conn_t *c)
{
    xfer_agent_t *a = l->agent;
    char name[XFER_NAME_MAX + 1];
    xfer_status_t st;

    if (c->type == LS_HELLO || c->type == LS_AUTH)
        return conn_auth(l, c);
    if (a->auth != NULL && c->auth != LS_PROVED)
        REFUSE_AS(l, c, XFER_ERR_AUTH, "agent '%s' requires authentication "
                  "(HELLO and AUTH) before any request; this client did not "
                  "authenticate (it has no auth key?)", a->name);
    switch (c->type) {
    case LS_SEND:
        xfer__err_clear();
        st = xfer__md_apply_sent(a, c->in, c->len,
                                 a->auth != NULL ? c->client : NULL, name,
                                 sizeof(name));
        if (st != XFER_OK) {
            char more[64] = "";

            if (st != XFER_ERR_AUTH || auth_log_due(l, more, sizeof(more)))
                xfer__log(XFER_LOG_WARN, "listener", "agent %s refused "
                          "metadata sent by %s: %s%s", a->name, c->peer,
                          xfer_last_error(), more);
            return conn_reply_err(l, c, st, "%s", xfer_last_error());
        }
        xfer__log(XFER_LOG_INFO, "listener", "agent %s loaded metadata of "
                  "'%s' sent by %s", a->name, name, c->peer);
        return conn_reply(l, c, LS_OK, NULL, 0, NULL, 0);
    case LS_FETCH: {
        char *blob = NULL;
        size_t len = 0;
        int rc;

        if (c->len > 0)
            memcpy(name, c->in, c->len);
        name[c->len] = '\0';
        if (c->len > 0 && strcmp(name, a->name) != 0)
            return conn_reply_err(l, c, XFER_ERR_NOT_FOUND, "this listener "
                                  "serves agent '%s', not '%s'", a->name,
                                  name);
        /* All that the agent publishes: a registration made with
         * publish = 0 is not served (xfer_md_get without handles). */
        st = xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len);
        if (st != XFER_OK)
            return conn_reply_err(l, c, st, "agent '%s' could not produce its "
                                  "metadata: %s", a->name, xfer_last_error());
        if (LS_HDR + len > budget_room(l)) {
            free(blob);
            return conn_busy(l, c, "the listener holds %zu bytes for its "
                             "clients and a reply of %zu would pass the %zu "
                             "of the agent option listen_buffer_bytes",
                             l->buf_used, LS_HDR + len, l->buf_max);
        }
        rc = conn_reply(l, c, LS_MD, blob, len, NULL, 0);
        free(blob);
        return rc;
    }
    case LS_INVALIDATE:
        memcpy(name, c->in, c->len);
        name[c->len] = '\0';
        /* Only a client that proved the secret, and only for itself. */
        if (a->auth == NULL || strcmp(name, c->client) != 0) {
            char more[64] = "";

            if (auth_log_due(l, more, sizeof(more)))
                xfer__log(XFER_LOG_WARN, "listener", "agent %s refused an "
                          "INVALIDATE from %s: %s%s", a->name, c->peer,
                          a->auth == NULL ? "it needs authentication"
                                          : "it names another agent than "
                                            "the client authenticated as",
                          more);
            if (a->auth == NULL)
                return conn_reply_err(l, c, XFER_ERR_AUTH, "invalidating "
                                      "'%s' through the listener needs "
                                      "authentication; agent '%s' has no "
                                      "auth key", name, a->name);
            return conn_reply_err(l, c, XFER_ERR_AUTH, "a client "
                                  "authenticated as '%s' may invalidate "
                                  "only itself, not '%s'", c->client, name);
        }
        st = xfer_md_invalidate(a, name);
        if (st != XFER_OK)
            return conn_reply_err(l, c, st, "%s", xfer_last_error());
        xfer__log(XFER_LOG_INFO, "listener", "agent %s invalidated '%s' at "
                  "the request of %s", a->name, name, c->peer);
        return conn_reply(l, c, LS_OK, NULL, 0, NULL, 0);
    }
    return -1;
}

/* Check a complete header; refuse anything this side cannot take. */
static int conn_header(xfer__listener_t *l, ls_conn_t *c)
{
    uint32_t magic = get_u32(c->hdr);
    unsigned version = get_u16(c->hdr + 4);

    c->type = get_u16(c->hdr + 6);
    c->len = get_u32(c->hdr + 8);
    if (magic != LS_MAGIC)
        REFUSE(l, c, "bad magic 0x%08" PRIx32 " (want 0x%08x, \"XFMD\")",
               magic, LS_MAGIC);
    if (version != LS_VERSION)
        REFUSE(l, c, "wire version %u is not supported (this agent speaks "
               "version %d)", version, LS_VERSION);
    if (c->type != LS_SEND && c->type != LS_FETCH &&
        c->type != LS_INVALIDATE && c->type != LS_HELLO &&
        c->type != LS_AUTH)
        REFUSE(l, c, "unknown request type %u", c->type);
    if (c->len > type_max(c->type))
        REFUSE(l, c, "frame of %" PRIu32 " bytes exceeds the %" PRIu32
               "-byte limit of request type %u", c->len, type_max(c->type),
               c->type);
    if (c->type == LS_INVALIDATE && c->len == 0)
        REFUSE(l, c, "invalidate names no agent");
    return 0;
}

/* Read what is there; returns -1 when the client must be dropped. */
static int conn_read(xfer__listener_t *l, ls_conn_t *c)
{
    for (;;) {
        ssize_t n;

        if (c->hdr_got < LS_HDR) {
            n = recv(c->fd, c->hdr + c->hdr_got, LS_HDR - c->hdr_got, 0);
        } else {
            size_t want = c->len - c->in_got;

            if (want == 0)
                break;
            if (c->in_got == c->in_cap) {
                /* Grow with what arrives, so a header that merely claims
                 * a large length costs nothing. */
                size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
                unsigned char *p;

                if (cap > c->len)
                    cap = c->len;
                if (!budget_take(l, c, cap - c->in_cap))
                    return conn_busy(l, c, "the listener holds %zu bytes "
                                     "for its clients, and %zu more for "
                                     "this request would pass the %zu of "
                                     "the agent option listen_buffer_bytes",
                                     l->buf_used, cap - c->in_cap,
                                     l->buf_max);
                p = realloc(c->in, cap + 1);
                if (p == NULL)
                    return -1;
                c->in = p;
                c->in_cap = cap;
            }
            n = recv(c->fd, c->in + c->in_got, c->in_cap - c->in_got, 0);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            xfer__log(XFER_LOG_INFO, "listener", "client %s: %s", c->peer,
                      strerror(errno));
            return -1;
        }
        if (n == 0) {
            if (c->hdr_got == 0)
                return -1; /* a clean end between requests */
            xfer__log(XFER_LOG_WARN, "listener", "agent %s refused a frame "
                      "from %s: truncated frame (%zu of %zu bytes, then end "
                      "of stream)", l->agent->name, c->peer,
                      c->hdr_got + c->in_got, (size_t)LS_HDR + (c->hdr_got ==
                      LS_HDR ? c->len : 0));
            c->close_after = true;
            /* The client may have shut down only its sending side. */
            if (conn_reply_err(l, c, XFER_ERR_INVALID, "truncated frame: %zu "
                               "bytes, then end of stream", c->hdr_got +
                               c->in_got) != 0)
                return -1;
            return 0;
        }
        if (c->hdr_got < LS_HDR) {
            c->hdr_got += (size_t)n;
            if (c->hdr_got == LS_HDR) {
                if (conn_header(l, c) != 0)
                    return -1;
                if (c->out != NULL)
                    return 0; /* refused; the reply is on its way */
            }
        } else {
            c->in_got += (size_t)n;
        }
    }
    if (c->len > 0 && c->in == NULL)
        return -1;
    if (conn_serve(l, c) != 0)
        return -1;
    return 0;
}

static int conn_write(xfer__listener_t *l, ls_conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->close_after)
        return -1;
    /* A connection that carried enough ends here: the client opens
     * another, which competes for a slot like everyone else. */
    c->bytes += LS_HDR + c->len + c->out_len;
    if (c->bytes >= LS_CONN_MAX_BYTES)
        return -1;
    /* Ready for the next request on the same connection. */
    budget_give(l, c);
    free(c->out);
    free(c->in);
    c->out = c->in = NULL;
    c->out_len = c->out_off = c->in_cap = c->in_got = c->hdr_got = 0;
    c->len = 0;
    c->deadline = mono_ms() + l->timeout_ms;
    conn_watch(l, c, EPOLLIN);
    return 0;
}

/* The source address of a client, without its port: what the per-address
 * bound counts. */
static void addr_key(const struct sockaddr_storage *ss, unsigned char *key)
{
    memset(key, 0, 17);
    key[0] = (unsigned char)ss->ss_family;
    if (ss->ss_family == AF_INET)
        memcpy(key + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    else if (ss->ss_family == AF_INET6)
        memcpy(key + 1, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
}

/* Tell a client it is not served (best effort: one non-blocking send of
 * an ERR frame, then the end of the stream) and close it.  What it sent
 * already is read away first, so that the close is a FIN its reply can
 * be read before, not a reset. */
static void say_busy_close(int fd, const char *why)
{
    unsigned char f[LS_HDR + 4 + LS_ERR_TEXT_MAX], sink[4096];
    size_t n = strlen(why);

    if (n > LS_ERR_TEXT_MAX)
        n = LS_ERR_TEXT_MAX;
    hdr_build(f, LS_ERR, (uint32_t)(4 + n));
    put_u32(f + LS_HDR, (uint32_t)(int32_t)XFER_ERR_BUSY);
    memcpy(f + LS_HDR + 4, why, n);
    if (send(fd, f, LS_HDR + 4 + n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        /* The client is gone or not reading: closing is all we owe it. */
    }
    shutdown(fd, SHUT_WR);
    if (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) < 0) {
        /* Nothing there. */
    }
    close(fd);
}

static int cmp_from(const void *x, const void *y)
{
    const ls_conn_t *a = *(ls_conn_t *const *)x, *b = *(ls_conn_t *const *)y;
    int d = memcmp(a->from, b->from, sizeof(a->from));

    if (d != 0)
        return d;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* The listener is full and a client from an address holding `mine`
 * connections knocks: the connection it may take the place of, or NULL.
 * Fair share: only an address holding more than `mine` gives one up,
 * the busiest of all, and of its connections an idle one before one
 * with a request under way, the oldest first.  O(n log n) in the
 * clients, and only when full. */
static ls_conn_t *pick_victim(xfer__listener_t *l, unsigned mine)
{
    ls_conn_t **v = malloc(l->nconns * sizeof(*v)), *best = NULL;
    size_t n = 0, run_at = 0, best_count = mine;

    if (v == NULL)
        return NULL;
    for (ls_conn_t *c = l->conns; c != NULL; c = c->next)
        v[n++] = c;
    qsort(v, n, sizeof(*v), cmp_from);
    for (size_t i = 1; i <= n; i++) {
        size_t count;

        if (i < n && memcmp(v[i]->from, v[run_at]->from,
                            sizeof(v[i]->from)) == 0)
            continue;
        /* v[run_at .. i) share an address, oldest first. */
        count = i - run_at;
        if (count > best_count) {
            best_count = count;
            best = v[run_at];
            for (size_t k = run_at; k < i; k++) {
                if (v[k]->hdr_got == 0 && v[k]->out == NULL) {
                    best = v[k];
                    break;
                }
            }
        }
        run_at = i;
    }
    free(v);
    return best;
}

/* accept failed for want of fds or memory: stop watching the socket for
 * a moment; the backlog keeps the clients until then. */
static void accept_pause(xfer__listener_t *l, int err)
{
    struct epoll_event ev = {.events = 0};
    char more[64];

    epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->fd, &ev);
    l->paused_until = mono_ms() + LS_ACCEPT_PAUSE_MS;
    if (ratelog_due(&l->log_accept, more, sizeof(more)))
        xfer__log(XFER_LOG_WARN, "listener", "agent %s cannot accept "
                  "clients: %s; accepting again in %d ms%s", l->agent->name,
                  strerror(err), LS_ACCEPT_PAUSE_MS, more);
}

static void accept_resume(xfer__listener_t *l)
{
    struct epoll_event ev = {.events = EPOLLIN};

    l->paused_until = 0;
    epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->fd, &ev);
}

/* Whether a client from `from` may come in now, making room if the
 * listener is full and it is owed a share; logs (now and then) and
 * answers those turned away. */
static bool admit(xfer__listener_t *l, int fd, const unsigned char *from,
                  const char *peer)
{
    unsigned mine = 0;
    ls_conn_t *victim;
    char why[LS_ERR_TEXT_MAX], more[64];

    for (ls_conn_t *c = l->conns; c != NULL; c = c->next)
        mine += memcmp(c->from, from, sizeof(c->from)) == 0;
    if (mine >= l->max_per_addr) {
        snprintf(why, sizeof(why), "already serving %u clients from this "
                 "address, the most the agent option listen_max_per_addr "
                 "allows", mine);
        if (ratelog_due(&l->log_addr, more, sizeof(more)))
            xfer__log(XFER_LOG_WARN, "listener", "agent %s refused client "
                      "%s: %s%s", l->agent->name, peer, why, more);
        say_busy_close(fd, why);
        return false;
    }
    if (l->nconns < l->max_clients)
        return true;
    victim = pick_victim(l, mine);
    if (victim == NULL) {
        snprintf(why, sizeof(why), "already serving %u clients, the most "
                 "the agent option listen_max_clients allows", l->nconns);
        if (ratelog_due(&l->log_full, more, sizeof(more)))
            xfer__log(XFER_LOG_WARN, "listener", "agent %s refused client "
                      "%s: %s%s", l->agent->name, peer, why, more);
        say_busy_close(fd, why);
        return false;
    }
    snprintf(why, sizeof(why), "the listener is full (listen_max_clients "
             "%u) and a client from an address with fewer connections "
             "took this one's place", l->max_clients);
    if (ratelog_due(&l->log_evict, more, sizeof(more)))
        xfer__log(XFER_LOG_WARN, "listener", "agent %s dropped client %s "
                  "for %s: %s%s", l->agent->name, victim->peer, peer, why,
                  more);
    /* A reply under way cannot be interrupted by another frame. */
    if (victim->out == NULL) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, victim->fd, NULL);
        say_busy_close(victim->fd, why);
        victim->fd = -1;
    }
    conn_close(l, victim);
    return true;
}

static void ls_accept(xfer__listener_t *l)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN};
        unsigned char from[17];
        ls_conn_t *c;
        char peer[64];

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue; /* a client gone before we took it */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM)
                accept_pause(l, errno);
            return; /* EAGAIN: all taken */
        }
        addr_text((struct sockaddr *)&ss, peer, sizeof(peer));
        addr_key(&ss, from);
        if (!admit(l, fd, from, peer))
            continue;
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        snprintf(c->peer, sizeof(c->peer), "%s", peer);
        memcpy(c->from, from, sizeof(c->from));
        c->seq = ++l->accepted;
        c->deadline = mono_ms() + l->timeout_ms;
        ev.data.ptr = c;
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = l->conns;
        l->conns = c;
        l->nconns++;
    }
}

static void *ls_main(void *arg)
{
    xfer__listener_t *l = arg;

    while (!atomic_load(&l->stop)) {
        struct epoll_event ev[16];
        uint64_t now = mono_ms(), next = now + 1000;
        bool knock = false;
        int n;

        for (ls_conn_t *c = l->conns; c != NULL; c = c->next)
            if (c->deadline < next)
                next = c->deadline;
        if (l->paused_until != 0 && l->paused_until < next)
            next = l->paused_until;
        n = epoll_wait(l->epfd, ev, 16, next > now ? (int)(next - now) : 0);
        for (int i = 0; i < n; i++) {
            ls_conn_t *c = ev[i].data.ptr;
            int rc = 0;

            if (c == NULL) {
                knock = true;
                continue;
            }
            if (ev[i].data.ptr == (void *)l)
                continue; /* the wake fd: the loop head checks stop */
            if (c->out != NULL)
                rc = conn_write(l, c);
            else if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                rc = conn_read(l, c);
            if (rc == 0 && c->out != NULL && c->out_off == 0)
                rc = conn_write(l, c); /* usually goes out at once */
            if (rc != 0)
                conn_close(l, c);
        }
        /* After the batch: making room closes a client whose event may
         * be further down in it. */
        if (knock)
            ls_accept(l);
        now = mono_ms();
        if (l->paused_until != 0 && now >= l->paused_until)
            accept_resume(l);
        for (ls_conn_t *c = l->conns, *nx; c != NULL; c = nx) {
            nx = c->next;
            if (c->deadline > now)
                continue;
            if (c->hdr_got > 0 || c->out != NULL)
                xfer__log(XFER_LOG_WARN, "listener", "agent %s dropped client "
                          "%s: request not done within %u ms", l->agent->name,
                          c->peer, l->timeout_ms);
            conn_close(l, c);
        }
    }
    return NULL;
}

xfer_status_t xfer__listener_start(xfer_agent_t *a,
                                   const xfer_agent_opts_t *o,
                                   xfer__listener_t **out)
{
    const char *addr = o->listen_addr;
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    struct epoll_event ev = {.events = EPOLLIN};
    xfer__listener_t *l;
    xfer_status_t st;
    int rc, one = 1;

    *out = NULL;
    st = split_hostport(addr, host, sizeof(host), port, sizeof(port));
    if (st != XFER_OK)
        return xfer__err_prefix(st, "agent option listen_addr");
    /* No host means loopback: all interfaces only when asked for. */
    rc = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &res);
    if (rc != 0)
        return xfer__err(XFER_ERR_INVALID, "agent option listen_addr '%s': "
                         "%s", addr, gai_strerror(rc));
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        freeaddrinfo(res);
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    }
    l->agent = a;
    l->epfd = l->wake_fd = -1;
    l->timeout_ms = o->listen_timeout_ms ? o->listen_timeout_ms
                                         : LS_DEFAULT_TIMEOUT_MS;
    l->max_clients = o->listen_max_clients ? o->listen_max_clients
                                           : LS_DEFAULT_MAX_CLIENTS;
    l->max_per_addr = o->listen_max_per_addr ? o->listen_max_per_addr
                                             : LS_DEFAULT_MAX_PER_ADDR;
    l->buf_max = o->listen_buffer_bytes ? o->listen_buffer_bytes
                                        : LS_DEFAULT_BUFFER_BYTES;
    l->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                   0);
    if (l->fd < 0 ||
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(l->fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(l->fd, 64) != 0 ||
        getsockname(l->fd, (struct sockaddr *)&ss, &sl) != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot listen on '%s': "
                       "%s", a->name, addr, strerror(errno));
        goto fail;
    }
    addr_text((struct sockaddr *)&ss, l->addr, sizeof(l->addr));
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epfd < 0 || l->wake_fd < 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->fd, &ev) != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': listener: %s", a->name,
                       strerror(errno));
        goto fail;
    }
    ev.data.ptr = l;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': listener: %s", a->name,
                       strerror(errno));
        goto fail;
    }
    rc = pthread_create(&l->thread, NULL, ls_main, l);
    if (rc != 0) {
        st = xfer__err(XFER_ERR_BACKEND, "agent '%s': cannot start its "
                       "listener thread: %s", a->name, strerror(rc));
        goto fail;
    }
    freeaddrinfo(res);
    xfer__log(XFER_LOG_INFO, "listener", "agent %s listening on %s", a->name,
              l->addr);
    if (a->auth == NULL && !addr_loopback((struct sockaddr *)&ss))
        xfer__log(XFER_LOG_WARN, "listener", "agent %s listens on %s without "
                  "authentication: anyone who reaches it can load metadata "
                  "into it (set auth_key_file, docs/security.md)", a->name,
                  l->addr);
    *out = l;
    return XFER_OK;

fail:
    freeaddrinfo(res);
    if (l->fd >= 0)
        close(l->fd);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    free(l);
    return st;
}

void xfer__listener_stop(xfer__listener_t *l)
{
    uint64_t one = 1;

    if (l == NULL)
        return;
    atomic_store(&l->stop, true);
    if (write(l->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: a wake is already pending. */
    }
    pthread_join(l->thread, NULL);
    while (l->conns != NULL)
        conn_close(l, l->conns);
    close(l->fd);
    close(l->epfd);
    close(l->wake_fd);
    free(l);
}

/* ---- client ------------------------------------------------------------------ */

/* Wait for fd to become ready for events before deadline. */
static xfer_status_t wait_fd(int fd, short events, uint64_t deadline,
                             const char *hp, const char *doing)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        uint64_t now = mono_ms();
        int n;

        if (now >= deadline)
            return xfer__err(XFER_ERR_TIMEOUT, "listener at %s: timed out "
                             "%s", hp, doing);
        n = poll(&p, 1, (int)(deadline - now));
        if (n > 0)
            return XFER_OK;
        if (n < 0 && errno != EINTR)
            return xfer__err(XFER_ERR_BACKEND, "listener at %s: poll: %s", hp,
                             strerror(errno));
    }
}

static xfer_status_t ls_connect(const char *hp, uint64_t deadline, int *out)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    xfer_status_t st;
    int fd, rc, err = 0;
    socklen_t el = sizeof(err);

    st = split_hostport(hp, host, sizeof(host), port, sizeof(port));
    if (st != XFER_OK)
        return st;
    rc = getaddrinfo(host[0] ? host : "127.0.0.1", port, &hints, &res);
    if (rc != 0)
        return xfer__err(XFER_ERR_INVALID, "listener address '%s': %s", hp,
                         gai_strerror(rc));
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(res);
        return xfer__err(XFER_ERR_BACKEND, "socket: %s", strerror(errno));
    }
    rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno != EINPROGRESS) {
        err = errno;
    } else if (rc != 0) {
        st = wait_fd(fd, POLLOUT, deadline, hp, "connecting");
        if (st != XFER_OK) {
            close(fd);
            return st;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
    }
    if (err != 0) {
        close(fd);
        return xfer__err(XFER_ERR_REMOTE_DISCONNECT, "cannot connect to the "
                         "listener at %s: %s", hp, strerror(err));
    }
    *out = fd;
    return XFER_OK;
}

static xfer_status_t io_all(int fd, bool wr, void *buf, size_t len,
                            uint64_t deadline, const char *hp)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        xfer_status_t st;

        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n == 0)
            return xfer__err(XFER_ERR_REMOTE_DISCONNECT, "listener at %s "
                             "closed the connection", hp);
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return xfer__err(XFER_ERR_REMOTE_DISCONNECT, "listener at %s: %s",
                             hp, strerror(errno));
        st = wait_fd(fd, wr ? POLLOUT : POLLIN, deadline, hp,
                     wr ? "sending" : "waiting for the reply");
        if (st != XFER_OK)
            return st;
    }
    return XFER_OK;
}

/* Send one request frame on fd and read its reply.  An LS_ERR reply
 * becomes its status and sentence; otherwise *reply (malloc'd,
 * NUL-terminated) holds the payload of a reply of type want. */
static xfer_status_t ls_exchange(int fd, const char *hp, uint64_t deadline,
                                 unsigned type, const void *p, size_t len,
                                 unsigned want, char **reply,
                                 size_t *reply_len)
{
    unsigned char h[LS_HDR];
    unsigned rtype;
    uint32_t rlen;
    char *buf = NULL;
    xfer_status_t st;

    hdr_build(h, type, (uint32_t)len);
    st = io_all(fd, true, h, LS_HDR, deadline, hp);
    if (st == XFER_OK && len > 0)
        st = io_all(fd, true, (void *)p, len, deadline, hp);
    if (st == XFER_OK)
        st = io_all(fd, false, h, LS_HDR, deadline, hp);
    if (st != XFER_OK)
        return st;
    rtype = get_u16(h + 6);
    rlen = get_u32(h + 8);
    if (get_u32(h) != LS_MAGIC || get_u16(h + 4) != LS_VERSION ||
        (rtype != want && rtype != LS_ERR) || rlen > type_max(rtype) ||
        (rtype == LS_ERR && rlen < 4))
        return xfer__err(XFER_ERR_INVALID, "listener at %s sent a malformed "
                         "reply (type %u, %" PRIu32 " bytes)", hp, rtype,
                         rlen);
    buf = malloc((size_t)rlen + 1);
    if (buf == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    st = io_all(fd, false, buf, rlen, deadline, hp);
    if (st != XFER_OK) {
        free(buf);
        return st;
    }
    buf[rlen] = '\0';
    if (rtype == LS_ERR) {
        int32_t code = (int32_t)get_u32((unsigned char *)buf);

        if (code >= 0 || code < XFER_ERR_AUTH)
            code = XFER_ERR_BACKEND;
        st = xfer__err((xfer_status_t)code, "listener at %s refused: %s", hp,
                       buf + 4);
        free(buf);
        return st;
    }
    *reply = buf;
    if (reply_len != NULL)
        *reply_len = rlen;
    return XFER_OK;
}

/* With a secret, before any request: prove it to the listener and have
 * it prove it to us (its MAC covers our fresh nonce). */
static xfer_status_t ls_authenticate(xfer_agent_t *a, int fd, const char *hp,
                                     uint64_t deadline)
{
    unsigned char hello[LS_NONCE + 8 + XFER_NAME_MAX];
    uint8_t nonce_c[LS_NONCE], mac[XFER_AUTH_MAC_LEN];
    size_t nlen = strlen(a->name), rlen = 0;
    char *reply = NULL, sname[XFER_NAME_MAX + 1];
    const unsigned char *r;
    xfer_status_t st;

    st = xfer__random(nonce_c, sizeof(nonce_c));
    if (st != XFER_OK)
        return st;
    memcpy(hello, nonce_c, LS_NONCE);
    put_u64(hello + LS_NONCE, a->epoch);
    memcpy(hello + LS_NONCE + 8, a->name, nlen);
    st = ls_exchange(fd, hp, deadline, LS_HELLO, hello, LS_NONCE + 8 + nlen,
                     LS_CHALLENGE, &reply, &rlen);
    if (st != XFER_OK)
        return st;
    r = (const unsigned char *)reply;
    if (rlen < LS_CHALLENGE_MIN ||
        !name_ok(r + LS_CHALLENGE_MIN - 1, rlen - (LS_CHALLENGE_MIN - 1))) {
        free(reply);
        return xfer__err(XFER_ERR_INVALID, "listener at %s sent a malformed "
                         "CHALLENGE (%zu bytes)", hp, rlen);
    }
    memcpy(sname, r + LS_CHALLENGE_MIN - 1, rlen - (LS_CHALLENGE_MIN - 1));
    sname[rlen - (LS_CHALLENGE_MIN - 1)] = '\0';
    st = ls_mac(a->auth, true, nonce_c, r, sname,
                get_u64(r + LS_NONCE + XFER_AUTH_MAC_LEN), a->name, a->epoch,
                (uint8_t *)r + LS_NONCE, true);
    if (st != XFER_OK) {
        free(reply);
        return xfer__err(XFER_ERR_AUTH, "listener at %s did not prove the "
                         "shared secret (its key differs from ours)", hp);
    }
    st = ls_mac(a->auth, false, nonce_c, r, sname,
                get_u64(r + LS_NONCE + XFER_AUTH_MAC_LEN), a->name, a->epoch,
                mac, false);
    free(reply);
    reply = NULL;
    if (st == XFER_OK)
        st = ls_exchange(fd, hp, deadline, LS_AUTH, mac, sizeof(mac), LS_OK,
                         &reply, NULL);
    free(reply);
    return st;
}

/* One request, one reply, on a connection of its own (authenticated
 * first when the agent holds a secret). */
static xfer_status_t ls_call(xfer_agent_t *a, const char *hp, unsigned type,
                             const void *p, size_t len, unsigned timeout_ms,
                             unsigned want, char **reply, size_t *reply_len)
{
    uint64_t deadline = mono_ms() + (timeout_ms ? timeout_ms
                                                : LS_DEFAULT_TIMEOUT_MS);
    xfer_status_t st;
    int fd;

    st = ls_connect(hp, deadline, &fd);
    if (st != XFER_OK)
        return st;
    if (a->auth != NULL)
        st = ls_authenticate(a, fd, hp, deadline);
    if (st == XFER_OK)
        st = ls_exchange(fd, hp, deadline, type, p, len, want, reply,
                         reply_len);
    close(fd);
    return st;
}

/* ---- public API ---------------------------------------------------------------- */

XFER_API xfer_status_t xfer_agent_listen_addr(xfer_agent_t *agent, char *buf,
                                              size_t size)
{
    xfer__err_clear();
    if (agent == NULL || buf == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_agent_listen_addr: NULL "
                         "argument");
    if (agent->listener == NULL)
        return xfer__err(XFER_ERR_NOT_FOUND, "agent '%s' has no listener "
                         "(set opts.listen_addr)", agent->name);
    if (strlen(agent->listener->addr) >= size)
        return xfer__err(XFER_ERR_INVALID, "xfer_agent_listen_addr: %zu "
                         "bytes are too few for '%s': %zu are needed", size,
                         agent->listener->addr,
                         strlen(agent->listener->addr) + 1);
    snprintf(buf, size, "%s", agent->listener->addr);
    return XFER_OK;
}

XFER_API xfer_status_t xfer_md_send(xfer_agent_t *agent, const char *hostport,
                                    unsigned what, unsigned timeout_ms)
{
    char *blob = NULL, *reply = NULL;
    size_t len = 0;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || hostport == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_send: NULL argument");
    st = xfer_md_get(agent, what, NULL, 0, &blob, &len);
    if (st != XFER_OK)
        return st;
    st = ls_call(agent, hostport, LS_SEND, blob, len, timeout_ms, LS_OK,
                 &reply, NULL);
    free(blob);
    free(reply);
    return st;
}

XFER_API xfer_status_t xfer_md_fetch(xfer_agent_t *agent, const char *hostport,
                                     const char *name, unsigned timeout_ms,
                                     char *name_out, size_t name_size)
{
    char *blob = NULL, got[XFER_NAME_MAX + 1];
    size_t len = 0, nlen = name ? strlen(name) : 0;
    xfer_status_t st;

    xfer__err_clear();
    if (name_out != NULL && name_size > 0)
        name_out[0] = '\0';
    if (agent == NULL || hostport == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_fetch: NULL argument");
    if (nlen > XFER_NAME_MAX)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_fetch: name longer than "
                         "%d bytes", XFER_NAME_MAX);
    st = ls_call(agent, hostport, LS_FETCH, name, nlen, timeout_ms, LS_MD,
                 &blob, &len);
    if (st != XFER_OK)
        return st;
    /* name_out's size bounds the name, so a buffer too small for it is
     * refused before anything is loaded. */
    st = xfer__md_apply(agent, blob, len, got,
                        name_out != NULL && name_size > 0 &&
                        name_size < sizeof(got) ? name_size : sizeof(got));
    free(blob);
    if (st != XFER_OK)
        return xfer__err_prefix(st, "metadata fetched from %s", hostport);
    if (name != NULL && strcmp(got, name) != 0) {
        /* Loaded already; say so rather than pretend it did not happen. */
        return xfer__err(XFER_ERR_INVALID, "listener at %s served agent '%s' "
                         "when '%s' was asked for", hostport, got, name);
    }
    if (name_out != NULL && name_size > 0)
        snprintf(name_out, name_size, "%s", got);
    return XFER_OK;
}

XFER_API xfer_status_t xfer_md_send_invalidate(xfer_agent_t *agent,
                                               const char *hostport,
                                               unsigned timeout_ms)
{
    char *reply = NULL;
    xfer_status_t st;

    xfer__err_clear();
    if (agent == NULL || hostport == NULL)
        return xfer__err(XFER_ERR_INVALID, "xfer_md_send_invalidate: NULL "
                         "argument");
    st = ls_call(agent, hostport, LS_INVALIDATE, agent->name,
                 strlen(agent->name), timeout_ms, LS_OK, &reply, NULL);
    free(reply);
    return st;
}
