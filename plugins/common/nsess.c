/* nsess.c - notification sessions (nsess.h): the sender's token and
 * credits, the target's table of sessions, and delivery in order. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "plugins/common/chan.h"
#include "plugins/common/clock.h"
#include "plugins/common/nsess.h"

#define HDR_VERSION 1u
#define TREQ_LEN 2u
#define TOKEN_LEN (8u + XFER__NS_TOKEN_LEN + 8u)
#define ACK_LEN 16u
#define NOSESS_LEN 2u

#define LOG(t, lvl, ...) (t)->host->log((t)->host->ctx, (lvl), __VA_ARGS__)

static uint64_t get64(const unsigned char *b)
{
    uint64_t v;

    memcpy(&v, b, 8);
    return le64toh(v);
}

static void put64(unsigned char *b, uint64_t v)
{
    v = htole64(v);
    memcpy(b, &v, 8);
}

/* ---- sender ----------------------------------------------------------- */

const unsigned char xfer__ns_treq[2] = {XFER__NS_TREQ, XFER__NS_MSG_VERSION};

bool xfer__ns_send_can(const xfer__ns_send_t *s)
{
    return s->have_token && s->sent - s->acked < s->window;
}

void xfer__ns_hdr_fill(xfer__ns_send_t *s, unsigned char *hdr, size_t len)
{
    uint32_t l = htole32((uint32_t)len);

    memset(hdr, 0, XFER__NS_HDR_LEN);
    hdr[0] = XFER__NS_MAGIC;
    hdr[1] = HDR_VERSION;
    memcpy(hdr + 4, &l, 4);
    memcpy(hdr + 8, s->token, XFER__NS_TOKEN_LEN);
    put64(hdr + 24, s->sent++);
}

void xfer__ns_skip_msg(const xfer__ns_send_t *s, uint64_t from,
                       unsigned char *buf)
{
    memset(buf, 0, XFER__NS_SKIP_LEN);
    buf[0] = XFER__NS_SKIP;
    buf[1] = XFER__NS_MSG_VERSION;
    put64(buf + 8, from < s->sent ? from : s->sent);
    put64(buf + 16, s->sent);
}

xfer_status_t xfer__ns_send_apply(xfer__ns_send_t *s, const void *msg,
                                  size_t len, uint64_t *lost)
{
    const unsigned char *m = msg;
    uint64_t delivered;

    *lost = 0;
    if (len < 2 || m[1] != XFER__NS_MSG_VERSION ||
        !((m[0] == XFER__NS_TOKEN && len == TOKEN_LEN) ||
          (m[0] == XFER__NS_ACK && len == ACK_LEN) ||
          (m[0] == XFER__NS_NOSESS && len == NOSESS_LEN)))
        return XFER_ERR_INVALID;
    if (m[0] == XFER__NS_NOSESS)
        return XFER_OK; /* an answer, but no token: notifications wait */
    delivered = get64(m + len - 8);
    if (m[0] == XFER__NS_TOKEN) {
        bool same = s->have_token &&
                    memcmp(s->token, m + 8, XFER__NS_TOKEN_LEN) == 0;
        uint32_t win;

        memcpy(&win, m + 4, 4);
        win = le32toh(win);
        if (s->have_token && !same)
            *lost = s->sent - s->acked;
        /* A new session starts where the target says it is. */
        if (!same)
            s->sent = delivered;
        memcpy(s->token, m + 8, XFER__NS_TOKEN_LEN);
        s->have_token = true;
        s->window = win >= 2 ? win : 2;
        /* Credits only for what was sent: a count past it (a confused or
         * hostile target) must not let us overrun its window. */
        if (delivered <= s->sent)
            s->acked = delivered;
    } else if (delivered > s->acked && delivered <= s->sent) {
        s->acked = delivered;
    }
    return XFER_OK;
}

bool xfer__ns_is_answer(const void *msg, size_t len)
{
    const unsigned char *m = msg;

    return (len == TOKEN_LEN && m[0] == XFER__NS_TOKEN) ||
           (len == NOSESS_LEN && m[0] == XFER__NS_NOSESS);
}

/* ---- target: sessions --------------------------------------------------- */

/* An initiator that asked this target for a token. */
struct xfer__ns_sess {
    xfer__ns_sess_t *next;
    char name[XFER_NAME_MAX + 1];
    uint64_t epoch;
    unsigned char token[XFER__NS_TOKEN_LEN];
    xfer__stream_conn_t *conn; /* channel lock: its control connection */
    uint64_t delivered;        /* t->lock: handed to the core, in order
                                  (or skipped: SKIP) */
    uint64_t skip_from, skip_to; /* t->lock: numbers in [from, to) that
                                  have not come are not waited for */
    uint64_t acked;            /* channel lock: last count sent back */
    uint64_t used;             /* t->lock: for eviction, a tick */
    /* t->lock: arrived but not yet delivered (out of order, or the core's
     * queue had no room), slot seq % window */
    struct held { unsigned char *msg; size_t len; bool full; } *held;
    uint64_t nheld;
};

xfer_status_t xfer__ns_init(xfer__ns_table_t *t, const xfer_host_t *host,
                            const char *plugin, uint64_t window,
                            uint64_t max_sess)
{
    memset(t, 0, sizeof *t);
    t->host = host;
    t->plugin = plugin;
    t->window = window >= 2 ? window : 2;
    t->max_sess = max_sess >= 1 ? max_sess : 1;
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        t->host = NULL; /* xfer__ns_fini: nothing to undo */
        return XFER_ERR_NOMEM;
    }
    return XFER_OK;
}

static void sess_free(xfer__ns_sess_t *s, uint64_t window)
{
    for (uint64_t i = 0; s->held && i < window; i++)
        free(s->held[i].msg);
    free(s->held);
    free(s);
}

void xfer__ns_fini(xfer__ns_table_t *t)
{
    xfer__ns_sess_t *s;

    if (t->host == NULL)
        return;
    while ((s = t->sess) != NULL) {
        t->sess = s->next;
        sess_free(s, t->window);
    }
    t->nsess = 0;
    pthread_mutex_destroy(&t->lock);
    t->host = NULL;
}

/* Unlink s: channel lock held; takes t->lock (the receive path reads the
 * list). */
static void sess_unlink(xfer__ns_table_t *t, xfer__ns_sess_t *s)
{
    pthread_mutex_lock(&t->lock);
    for (xfer__ns_sess_t **pp = &t->sess; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            t->nsess--;
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    sess_free(s, t->window);
}

static xfer__ns_sess_t *sess_get(xfer__ns_table_t *t, const char *name,
                                 uint64_t epoch)
{
    xfer__ns_sess_t *s, *lru = NULL;

    for (s = t->sess; s; s = s->next) {
        if (strcmp(s->name, name) != 0)
            continue;
        if (s->epoch == epoch)
            return s;
        /* A new life of that agent: what the old one had on its way
         * here is from a process that is gone. */
        LOG(t, XFER_LOG_INFO, "%s: agent '%s' restarted (epoch %llu): its "
            "earlier notification session ends", t->plugin, name,
            (unsigned long long)epoch);
        sess_unlink(t, s);
        break;
    }
    if (t->nsess >= t->max_sess) {
        pthread_mutex_lock(&t->lock); /* used is the receive path's */
        for (s = t->sess; s; s = s->next)
            if (s->conn == NULL && (lru == NULL || s->used < lru->used))
                lru = s;
        pthread_mutex_unlock(&t->lock);
        if (lru == NULL) {
            LOG(t, XFER_LOG_WARN, "%s: agent '%s' asked for a notification "
                "session, but %llu are open, each with a connection "
                "(max_conns)", t->plugin, name,
                (unsigned long long)t->nsess);
            return NULL;
        }
        sess_unlink(t, lru);
    }
    if (!(s = calloc(1, sizeof *s)) ||
        !(s->held = calloc(t->window, sizeof *s->held)) ||
        getrandom(s->token, sizeof s->token, 0) != (ssize_t)sizeof s->token) {
        if (s)
            free(s->held);
        free(s);
        LOG(t, XFER_LOG_ERROR, "%s: no notification session for agent "
            "'%s': out of memory or randomness", t->plugin, name);
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->epoch = epoch;
    pthread_mutex_lock(&t->lock);
    s->used = ++t->tick;
    s->next = t->sess;
    t->sess = s;
    t->nsess++;
    pthread_mutex_unlock(&t->lock);
    return s;
}

static int deliver_held(xfer__ns_table_t *t, xfer__ns_sess_t *s);

/* The initiator on c says numbers below next will not come (channel lock
 * held).  Only its own session moves, and never past what it could have
 * sent (its window beyond what was delivered). */
static void target_skip(xfer__ns_table_t *t, xfer__stream_conn_t *c,
                        uint64_t from, uint64_t next)
{
    const char *name = xfer__stream_conn_name(c);
    uint64_t epoch = xfer__stream_conn_epoch(c);
    xfer__ns_sess_t *s;

    for (s = t->sess; s; s = s->next)
        if (strcmp(s->name, name) == 0 && s->epoch == epoch)
            break;
    if (s == NULL)
        return; /* no session: nothing waits */
    pthread_mutex_lock(&t->lock);
    if (next > s->delivered + t->window) {
        pthread_mutex_unlock(&t->lock);
        LOG(t, XFER_LOG_WARN, "%s: agent '%s' asked to skip to notification "
            "%llu, past its window (%llu delivered); ignored", t->plugin,
            name, (unsigned long long)next,
            (unsigned long long)s->delivered);
        return;
    }
    if (from > next) {
        pthread_mutex_unlock(&t->lock);
        LOG(t, XFER_LOG_WARN, "%s: agent '%s' asked to skip notifications "
            "%llu to %llu, an empty range; ignored", t->plugin, name,
            (unsigned long long)from, (unsigned long long)next);
        return;
    }
    /* One range at a time: a new one (another failed connection) starts
     * past what the last covered, or the last is done with. */
    s->skip_from = from;
    s->skip_to = next;
    if (next > s->delivered)
        LOG(t, XFER_LOG_INFO, "%s: agent '%s' says its notifications %llu "
            "to %llu, where they have not come, were lost with its fabric "
            "connection; later ones do not wait for them", t->plugin, name,
            (unsigned long long)from, (unsigned long long)next - 1);
    deliver_held(t, s);
    if (s->nheld)
        atomic_store(&t->held_any, true);
    pthread_mutex_unlock(&t->lock);
}

void xfer__ns_target_msg(xfer__ns_table_t *t, xfer__stream_conn_t *c,
                         const void *msg, size_t len)
{
    const unsigned char *m = msg;
    unsigned char tok[TOKEN_LEN];
    uint32_t win = htole32((uint32_t)t->window);
    xfer__ns_sess_t *s;
    uint64_t delivered;

    if (len == XFER__NS_SKIP_LEN && m[0] == XFER__NS_SKIP &&
        m[1] == XFER__NS_MSG_VERSION && !m[2] && !m[3] && !m[4] && !m[5] &&
        !m[6] && !m[7]) {
        target_skip(t, c, get64(m + 8), get64(m + 16));
        return;
    }
    if (len != TREQ_LEN || m[0] != XFER__NS_TREQ ||
        m[1] != XFER__NS_MSG_VERSION) {
        LOG(t, XFER_LOG_WARN, "%s: agent '%s' sent a control message of "
            "%zu bytes that is not a version %u token request or skip; "
            "ignored", t->plugin, xfer__stream_conn_name(c), len,
            XFER__NS_MSG_VERSION);
        return;
    }
    s = sess_get(t, xfer__stream_conn_name(c), xfer__stream_conn_epoch(c));
    if (s == NULL) {
        /* Answered all the same (sess_get said why there is no session):
         * an initiator that waits to hear from this process before it
         * makes a fabric endpoint (ucx after a timeout) would otherwise
         * wait for good.  Not a TOKEN of window 0: an older initiator
         * would take its token and lose notifications on it. */
        static const unsigned char no[NOSESS_LEN] = {XFER__NS_NOSESS,
                                                     XFER__NS_MSG_VERSION};

        xfer__chan_reply(c, no, sizeof no);
        return;
    }
    s->conn = c;
    pthread_mutex_lock(&t->lock);
    delivered = s->delivered;
    memcpy(tok + 8, s->token, XFER__NS_TOKEN_LEN);
    pthread_mutex_unlock(&t->lock);
    s->acked = delivered;
    memset(tok, 0, 8);
    tok[0] = XFER__NS_TOKEN;
    tok[1] = XFER__NS_MSG_VERSION;
    memcpy(tok + 4, &win, 4);
    put64(tok + 8 + XFER__NS_TOKEN_LEN, delivered);
    xfer__chan_reply(c, tok, sizeof tok);
}

void xfer__ns_conn_down(xfer__ns_table_t *t, xfer__stream_conn_t *c)
{
    for (xfer__ns_sess_t *s = t->sess; s; s = s->next)
        if (s->conn == c)
            s->conn = NULL;
}

int xfer__ns_acks(xfer__ns_table_t *t)
{
    uint64_t half = t->window / 2;
    int n = 0;

    if (!atomic_exchange(&t->ack_due, false))
        return 0;
    for (xfer__ns_sess_t *s = t->sess; s; s = s->next) {
        unsigned char a[ACK_LEN] = {XFER__NS_ACK, XFER__NS_MSG_VERSION};
        uint64_t d;

        pthread_mutex_lock(&t->lock);
        d = s->delivered;
        pthread_mutex_unlock(&t->lock);
        if (s->conn == NULL || d - s->acked < half)
            continue;
        put64(a + 8, d);
        if (xfer__chan_reply(s->conn, a, sizeof a) == XFER_OK) {
            s->acked = d;
            n++;
        } else {
            /* Still owed: the next call tries again (a closed
             * connection's session loses conn first, and is skipped). */
            atomic_store(&t->ack_due, true);
        }
    }
    return n;
}

uint64_t xfer__ns_count(xfer__ns_table_t *t)
{
    uint64_t n;

    pthread_mutex_lock(&t->lock);
    n = t->nsess;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* ---- target: receiving -------------------------------------------------- */

static bool token_eq(const unsigned char *a, const unsigned char *b)
{
    unsigned char d = 0;

    for (unsigned i = 0; i < XFER__NS_TOKEN_LEN; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* Hand what s holds to the core, in order, while its queue has room
 * (t->lock held). */
static int deliver_held(xfer__ns_table_t *t, xfer__ns_sess_t *s)
{
    const xfer_host_t *h = t->host;
    int n = 0;

    while (s->nheld > 0 ||
           (s->delivered >= s->skip_from && s->delivered < s->skip_to)) {
        struct held *e = &s->held[s->delivered % t->window];

        if (!e->full && s->delivered >= s->skip_from &&
            s->delivered < s->skip_to) {
            /* A number the sender says will not come. */
            s->delivered++;
            atomic_store(&t->ack_due, true);
            continue;
        }
        if (!e->full || !h->notif_room(h->ctx, s->name, e->len))
            break;
        h->notif_deliver(h->ctx, s->name, e->msg, e->len);
        free(e->msg);
        e->msg = NULL;
        e->full = false;
        s->nheld--;
        s->delivered++;
        atomic_fetch_add(&t->recv, 1);
        atomic_store(&t->ack_due, true);
        n++;
    }
    return n;
}

/* Count a drop; whether to log it.  Anyone who reaches the fabric
 * endpoint can send messages, so the log of them is bounded (clock.h's
 * xfer__log_nth; the count is in the backend's state sentence). */
static bool dropped(xfer__ns_table_t *t)
{
    unsigned long n = atomic_fetch_add(&t->dropped, 1) + 1;

    return xfer__log_nth(n);
}

void xfer__ns_recv(xfer__ns_table_t *t, const void *hdr, size_t hlen,
                   const void *data, size_t len)
{
    xfer__ns_recv_from(t, NULL, hdr, hlen, data, len);
}

void xfer__ns_recv_from(xfer__ns_table_t *t, const char *from,
                        const void *hdr, size_t hlen, const void *data,
                        size_t len)
{
    const xfer_host_t *h = t->host;
    const unsigned char *b = hdr;
    uint64_t win = t->window, seq;
    uint32_t hl;
    xfer__ns_sess_t *s;

    if (hlen != XFER__NS_HDR_LEN || b[0] != XFER__NS_MAGIC ||
        b[1] != HDR_VERSION) {
        if (dropped(t))
            LOG(t, XFER_LOG_WARN, "%s: dropped a message with a %zu-byte "
                "header that is not an xfer notification", t->plugin, hlen);
        return;
    }
    memcpy(&hl, b + 4, 4);
    seq = get64(b + 24);
    if (le32toh(hl) != len || len > XFER_NOTIF_MAX) {
        if (dropped(t))
            LOG(t, XFER_LOG_WARN, "%s: dropped a notification of %zu bytes "
                "whose header says %u", t->plugin, len, le32toh(hl));
        return;
    }
    pthread_mutex_lock(&t->lock);
    for (s = t->sess; s && !token_eq(s->token, b + 8); s = s->next)
        ;
    if (s == NULL) {
        pthread_mutex_unlock(&t->lock);
        if (dropped(t))
            LOG(t, XFER_LOG_WARN, "%s: dropped a notification carrying a "
                "token of no session (forged, or from an agent that "
                "restarted)", t->plugin);
        return;
    }
    if (from != NULL && strcmp(s->name, from) != 0) {
        char owner[XFER_NAME_MAX + 1];

        snprintf(owner, sizeof owner, "%s", s->name);
        pthread_mutex_unlock(&t->lock);
        if (dropped(t))
            LOG(t, XFER_LOG_WARN, "%s: dropped a notification carrying "
                "agent '%s''s token that came from agent '%s' (a stolen "
                "token)", t->plugin, owner, from);
        return;
    }
    s->used = ++t->tick;
    if (seq < s->delivered || seq >= s->delivered + win ||
        s->held[seq % win].full) {
        pthread_mutex_unlock(&t->lock);
        if (dropped(t))
            LOG(t, XFER_LOG_WARN, "%s: dropped notification %llu from agent "
                "'%s': outside its window [%llu, +%llu) or a duplicate",
                t->plugin, (unsigned long long)seq, s->name,
                (unsigned long long)s->delivered, (unsigned long long)win);
        return;
    }
    if (seq == s->delivered && s->nheld == 0 &&
        h->notif_room(h->ctx, s->name, len)) {
        h->notif_deliver(h->ctx, s->name, data, len);
        s->delivered++;
        atomic_fetch_add(&t->recv, 1);
        atomic_store(&t->ack_due, true);
    } else {
        /* Out of order, or no room: kept, within the window the sender
         * may not exceed, until its turn and room come. */
        struct held *e = &s->held[seq % win];

        if ((e->msg = malloc(len ? len : 1)) == NULL) {
            pthread_mutex_unlock(&t->lock);
            if (dropped(t))
                LOG(t, XFER_LOG_ERROR, "%s: dropped a notification from "
                    "agent '%s': out of memory", t->plugin, s->name);
            return;
        }
        memcpy(e->msg, data, len);
        e->len = len;
        e->full = true;
        s->nheld++;
        deliver_held(t, s);
        if (s->nheld)
            atomic_store(&t->held_any, true);
    }
    pthread_mutex_unlock(&t->lock);
}

int xfer__ns_progress(xfer__ns_table_t *t)
{
    bool any = false;
    int n = 0;

    if (!atomic_load(&t->held_any))
        return 0;
    pthread_mutex_lock(&t->lock);
    for (xfer__ns_sess_t *s = t->sess; s; s = s->next) {
        if (s->nheld) {
            n += deliver_held(t, s);
            any |= s->nheld != 0;
        }
    }
    atomic_store(&t->held_any, any);
    pthread_mutex_unlock(&t->lock);
    return n;
}
