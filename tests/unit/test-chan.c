/* test-chan.c - the control channel (plugins/common/chan.h) between two
 * instances over loopback TCP: order, bound identity, limits, a dying peer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "plugins/common/chan.h"
#include "plugins/common/wire.h"
#include "tests/common/runner.h"

#define MSG_MAX 1000u
#define WAIT_MS 10000

/* ---- a minimal host and a loopback TCP transport ----------------------- */

typedef struct side {
    xfer_host_t host;
    char name[32];
    int lfd;
    uint16_t port;
    xfer__chan_t *ch;
    /* what arrived */
    char got[256][48];
    char from[256][32];
    uint64_t epoch[256];
    size_t ngot;
    xfer__stream_conn_t *last; /* the connection the last message came on */
    int downs;
    xfer_status_t down_st;
    int ups;
    uint64_t key;              /* with host.auth: the stand-in secret */
} side_t;

static char last_error[512];

static void host_log(void *ctx, xfer_log_level_t lvl, const char *fmt, ...)
{
    (void)ctx;
    (void)lvl;
    (void)fmt;
}

static xfer_status_t host_error(void *ctx, xfer_status_t st, const char *fmt,
                                ...)
{
    va_list ap;

    (void)ctx;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

static xfer_status_t t_info_check(void *tctx, const void *info, size_t len)
{
    (void)tctx;
    (void)info;
    return len == 2 ? XFER_OK : XFER_ERR_INVALID;
}

static int t_connect(void *tctx, const void *info, size_t len, int *inprog)
{
    struct sockaddr_in sa;
    uint16_t port;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    (void)tctx;
    (void)len;
    if (fd < 0)
        return -errno;
    memcpy(&port, info, 2);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *inprog = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        *inprog = 1;
        return fd;
    }
    close(fd);
    return -ECONNREFUSED;
}

static void t_info_str(void *tctx, const void *info, size_t len, char *buf,
                       size_t size)
{
    uint16_t port;

    (void)tctx;
    (void)len;
    memcpy(&port, info, 2);
    snprintf(buf, size, "127.0.0.1:%u", (unsigned)port);
}

static xfer_status_t t_up(void *tctx, xfer__stream_conn_t *c, char *msg,
                          size_t size)
{
    side_t *s = tctx;

    (void)c;
    (void)msg;
    (void)size;
    s->ups++;
    return XFER_OK;
}

static void t_down(void *tctx, xfer__stream_conn_t *c, xfer_status_t st,
                   const char *why)
{
    side_t *s = tctx;

    (void)why;
    if (s->last == c)
        s->last = NULL;
    s->downs++;
    s->down_st = st;
}

static void t_recv(void *tctx, xfer__stream_conn_t *c, const void *msg,
                   size_t len)
{
    side_t *s = tctx;

    if (s->ngot < 256) {
        snprintf(s->got[s->ngot], sizeof s->got[0], "%.*s", (int)len,
                 (const char *)msg);
        snprintf(s->from[s->ngot], sizeof s->from[0], "%s",
                 xfer__stream_conn_name(c));
        s->epoch[s->ngot] = xfer__stream_conn_epoch(c);
    }
    s->ngot++;
    s->last = c;
}

/* A stand-in for the host's HMAC (the engine only hands it bytes): a
 * keyed FNV-1a spread over 32 bytes; sides with different keys never
 * agree. */
static void toy_mac(const side_t *s, const void *msg, size_t len,
                    uint8_t mac[XFER_AUTH_MAC_LEN])
{
    const uint8_t *m = msg;

    for (int k = 0; k < XFER_AUTH_MAC_LEN / 8; k++) {
        uint64_t h = 1469598103934665603ull ^ s->key ^ (uint64_t)k;

        for (size_t i = 0; i < len; i++)
            h = (h ^ m[i]) * 1099511628211ull;
        memcpy(mac + 8 * k, &h, 8);
    }
}

static xfer_status_t host_auth_mac(void *ctx, const void *msg, size_t len,
                                   uint8_t mac[XFER_AUTH_MAC_LEN])
{
    toy_mac(ctx, msg, len, mac);
    return XFER_OK;
}

static xfer_status_t host_auth_check(void *ctx, const void *msg, size_t len,
                                     const uint8_t mac[XFER_AUTH_MAC_LEN])
{
    uint8_t want[XFER_AUTH_MAC_LEN];

    toy_mac(ctx, msg, len, want);
    return memcmp(want, mac, sizeof want) ? XFER_ERR_AUTH : XFER_OK;
}

static const xfer__stream_transport_t transport = {
    .info_check = t_info_check,
    .connect = t_connect,
    .info_str = t_info_str,
    .conn_up = t_up,
    .conn_down = t_down,
};

static void side_free(void *arg)
{
    side_t *s = arg;

    xfer__chan_destroy(s->ch);
    close(s->lfd);
    free(s);
}

static side_t *side_new_keyed(const char *name, uint64_t epoch,
                              uint64_t key)
{
    side_t *s = calloc(1, sizeof *s);
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    xfer__stream_cfg_t cfg;

    XT_REQUIRE(s, "out of memory");
    snprintf(s->name, sizeof s->name, "%s", name);
    s->host.size = sizeof s->host;
    s->host.ctx = s;
    s->host.agent_name = s->name;
    s->host.agent_epoch = epoch;
    s->host.log = host_log;
    s->host.error = host_error;
    s->host.auth = key != 0;
    s->host.auth_mac = host_auth_mac;
    s->host.auth_check = host_auth_check;
    s->key = key;
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    XT_REQUIRE(s->lfd >= 0 && bind(s->lfd, (struct sockaddr *)&sa,
                                   sizeof sa) == 0 &&
               listen(s->lfd, 16) == 0 &&
               getsockname(s->lfd, (struct sockaddr *)&sa, &sl) == 0,
               "listen: %s", strerror(errno));
    s->port = ntohs(sa.sin_port);
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "chan";
    cfg.timeout_ms = 2000;
    cfg.inline_max = 256; /* messages past it go through the heap path */
    cfg.rx_buf = 4096;
    XT_REQUIRE(xfer__chan_create(&s->host, &transport, s, &cfg, MSG_MAX,
                                 t_recv, s->lfd, &s->ch) == XFER_OK,
               "xfer__chan_create: %s", last_error);
    xt_defer(side_free, s);
    return s;
}

static side_t *side_new(const char *name, uint64_t epoch)
{
    return side_new_keyed(name, epoch, 0);
}

static xfer__chan_peer_t *peer_of(side_t *from, const side_t *to,
                                  uint64_t epoch)
{
    xfer__chan_peer_t *p = NULL;

    XT_REQUIRE(xfer__chan_peer_add(from->ch, to->name, epoch, &to->port, 2,
                                   &p) == XFER_OK,
               "peer_add: %s", last_error);
    return p;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Drive both sides until cond holds or WAIT_MS pass. */
#define PUMP_UNTIL(a, b, cond)                                           \
    do {                                                                 \
        uint64_t end_ = now_ms() + WAIT_MS;                              \
        while (!(cond) && now_ms() < end_) {                             \
            xfer__chan_progress((a)->ch);                                \
            if (b)                                                       \
                xfer__chan_progress((b)->ch);                            \
            usleep(100);                                                 \
        }                                                                \
    } while (0)

/* ---- tests ---------------------------------------------------------------- */

/* Messages arrive in order, with the name and epoch the handshake bound,
 * whatever they claim; the receiver answers on the same connection. */
static void test_order_and_identity(void)
{
    side_t *a = side_new("alpha", 7), *b = side_new("beta", 9);
    xfer__chan_peer_t *pb = peer_of(a, b, 9);
    char big[600];

    for (int i = 0; i < 200; i++) {
        char m[48];
        int n = snprintf(m, sizeof m, "from mallory #%d", i);

        XT_REQUIRE(xfer__chan_send(a->ch, pb, m, (size_t)n) == XFER_OK,
                   "send %d: %s", i, last_error);
    }
    /* One past inline_max: received through the heap, still in order. */
    memset(big, 'x', sizeof big);
    XT_REQUIRE(xfer__chan_send(a->ch, pb, big, sizeof big) == XFER_OK,
               "send big: %s", last_error);
    PUMP_UNTIL(a, b, b->ngot >= 201);
    XT_REQUIRE(b->ngot == 201, "beta got %zu of 201 messages", b->ngot);
    for (int i = 0; i < 200; i++) {
        char m[48];

        snprintf(m, sizeof m, "from mallory #%d", i);
        XT_CHECK(strcmp(b->got[i], m) == 0, "message %d is \"%s\"", i,
                 b->got[i]);
        XT_CHECK(strcmp(b->from[i], "alpha") == 0 && b->epoch[i] == 7,
                 "message %d from '%s' epoch %llu", i, b->from[i],
                 (unsigned long long)b->epoch[i]);
    }
    XT_CHECK(strlen(b->got[200]) == sizeof b->got[0] - 1 &&
             b->got[200][0] == 'x', "the large message did not arrive");
    /* An answer on the connection the messages came in on. */
    XT_REQUIRE(b->last, "no connection to answer on");
    XT_REQUIRE(xfer__chan_reply(b->last, "qp 42", 5) == XFER_OK,
               "reply: %s", last_error);
    PUMP_UNTIL(a, b, a->ngot >= 1);
    XT_CHECK(a->ngot == 1 && strcmp(a->got[0], "qp 42") == 0 &&
             strcmp(a->from[0], "beta") == 0 && a->epoch[0] == 9,
             "alpha got %zu: \"%s\" from '%s'", a->ngot, a->got[0],
             a->from[0]);
    XT_CHECK(a->ups == 1 && b->ups == 1, "ups: %d, %d", a->ups, b->ups);
}

/* Too large is refused at the sender; a peer sending it anyway (a raw
 * socket here) is disconnected, and the others are not. */
static void test_oversize(void)
{
    side_t *a = side_new("alpha", 1), *b = side_new("beta", 2);
    xfer__chan_peer_t *pb = peer_of(a, b, 2);
    static char big[MSG_MAX + 1];
    struct sockaddr_in sa;
    xfer_wire_hdr_t h;
    char buf[64];
    int fd;
    ssize_t n = -1;

    XT_CHECK(xfer__chan_send(a->ch, pb, big, MSG_MAX + 1) ==
             XFER_ERR_INVALID, "an oversize message was accepted");
    XT_CHECK(xfer__chan_send(a->ch, pb, big, MSG_MAX) == XFER_OK,
             "a message of the largest size: %s", last_error);
    PUMP_UNTIL(a, b, b->ngot >= 1);
    XT_CHECK(b->ngot == 1, "the largest message did not arrive");

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(b->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    XT_REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
               "connect: %s", strerror(errno));
    memset(&h, 0, sizeof h);
    h.type = XFER_WIRE_HELLO;
    h.seg = XFER_WIRE_VERSION;
    h.tag = XFER_WIRE_MAGIC;
    h.arg0 = 5;
    h.arg1 = 2;
    h.len = 3;
    xfer_wire_encode(&h, &h);
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, "eve", 3);
    XT_REQUIRE(write(fd, buf, sizeof h + 3) == (ssize_t)(sizeof h + 3),
               "write");
    memset(&h, 0, sizeof h);
    h.type = XFER_WIRE_MSG;
    h.len = MSG_MAX + 1;
    xfer_wire_encode(&h, &h);
    XT_REQUIRE(write(fd, &h, sizeof h) == (ssize_t)sizeof h, "write");
    {
        uint64_t end = now_ms() + WAIT_MS;

        while (now_ms() < end) {
            xfer__chan_progress(b->ch);
            n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                break;
            usleep(100);
        }
    }
    XT_CHECK(n == 0 || n > 0 || errno == ECONNRESET,
             "the oversize sender was not disconnected");
    close(fd);
    XT_CHECK(b->ngot == 1, "beta delivered part of an oversize message");
    /* alpha's connection is unaffected. */
    XT_CHECK(xfer__chan_send(a->ch, pb, "still", 5) == XFER_OK, "send: %s",
             last_error);
    PUMP_UNTIL(a, b, b->ngot >= 2);
    XT_CHECK(b->ngot == 2 && strcmp(b->got[1], "still") == 0 &&
             strcmp(b->from[1], "alpha") == 0,
             "after the bad peer: %zu messages", b->ngot);
}

/* Eager connection, then the peer dies: REMOTE_DISCONNECT, both as the
 * connection's end and as the answer of the next connect. */
static void test_peer_dies(void)
{
    side_t *a = side_new("alpha", 1);
    int pfd[2], pid, st;
    uint16_t port = 0;
    xfer__chan_peer_t *pb = NULL;
    xfer_status_t s = XFER_IN_PROG;

    XT_REQUIRE(pipe(pfd) == 0, "pipe");
    fflush(NULL);
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        side_t *b;

        close(pfd[0]);
        alarm(30);
        b = side_new("beta", 2);
        if (write(pfd[1], &b->port, 2) != 2)
            _exit(3);
        while (b->ngot < 1)
            xfer__chan_progress(b->ch);
        kill(getpid(), SIGKILL); /* dies without a word */
        _exit(4);
    }
    xt_child_add(pid);
    close(pfd[1]);
    XT_REQUIRE(read(pfd[0], &port, 2) == 2, "no port from the child");
    close(pfd[0]);
    XT_REQUIRE(xfer__chan_peer_add(a->ch, "beta", 2, &port, 2, &pb) ==
               XFER_OK, "peer_add: %s", last_error);
    {
        uint64_t end = now_ms() + WAIT_MS;

        while ((s = xfer__chan_connect(a->ch, pb)) == XFER_IN_PROG &&
               now_ms() < end)
            xfer__chan_progress(a->ch);
    }
    XT_REQUIRE(s == XFER_OK, "eager connect: %d %s", (int)s, last_error);
    XT_CHECK(a->ups == 1, "conn_up %d times", a->ups);
    XT_REQUIRE(xfer__chan_send(a->ch, pb, "bye", 3) == XFER_OK, "send: %s",
               last_error);
    PUMP_UNTIL(a, (side_t *)NULL, a->downs > 0);
    XT_CHECK(a->downs == 1 && a->down_st == XFER_ERR_REMOTE_DISCONNECT,
             "downs %d, status %d", a->downs, (int)a->down_st);
    waitpid(pid, &st, 0);
    xt_child_forget(pid);
    /* Nobody listens there now: the next eager connect ends in an error
     * with a sentence naming the peer. */
    {
        uint64_t end = now_ms() + WAIT_MS;

        while ((s = xfer__chan_connect(a->ch, pb)) == XFER_IN_PROG &&
               now_ms() < end)
            xfer__chan_progress(a->ch);
    }
    XT_CHECK(s == XFER_ERR_REMOTE_DISCONNECT, "connect to a dead peer: %d",
             (int)s);
    XT_CHECK(strstr(last_error, "beta") != NULL, "sentence: %s", last_error);
}

/* Connect eagerly from a to b until it ends; its status. */
static xfer_status_t connect_end(side_t *a, side_t *b, xfer__chan_peer_t *p)
{
    uint64_t end = now_ms() + WAIT_MS;
    xfer_status_t s;

    while ((s = xfer__chan_connect(a->ch, p)) == XFER_IN_PROG &&
           now_ms() < end) {
        xfer__chan_progress(a->ch);
        xfer__chan_progress(b->ch);
        usleep(100);
    }
    return s;
}

/* With a secret (the host's auth ops), a channel gets the engine's
 * challenge-response: messages sent at once wait for it and arrive in
 * order with the proved identity; another key, or none, is refused on
 * both sides and delivers nothing. */
static void test_auth(void)
{
    side_t *a = side_new_keyed("alpha", 7, 0x1111), *b =
        side_new_keyed("beta", 9, 0x1111);
    side_t *c = side_new_keyed("carol", 3, 0x2222), *d = side_new("dave", 4);
    side_t *e = side_new("erin", 5);
    xfer__chan_peer_t *pb = peer_of(a, b, 9), *pc;

    for (int i = 0; i < 50; i++) {
        char m[48];
        int n = snprintf(m, sizeof m, "keyed #%d", i);

        XT_REQUIRE(xfer__chan_send(a->ch, pb, m, (size_t)n) == XFER_OK,
                   "send %d: %s", i, last_error);
    }
    PUMP_UNTIL(a, b, b->ngot >= 50);
    XT_REQUIRE(b->ngot == 50, "beta got %zu of 50 messages", b->ngot);
    for (int i = 0; i < 50; i++) {
        char m[48];

        snprintf(m, sizeof m, "keyed #%d", i);
        XT_CHECK(strcmp(b->got[i], m) == 0 && strcmp(b->from[i], "alpha") ==
                     0 && b->epoch[i] == 7,
                 "message %d: \"%s\" from '%s'", i, b->got[i], b->from[i]);
    }
    XT_CHECK(a->ups == 1 && b->ups == 1, "ups: %d, %d", a->ups, b->ups);
    /* Another key: refused, nothing delivered, beta's own peer intact. */
    pc = peer_of(c, b, 9);
    XT_CHECK(xfer__chan_send(c->ch, pc, "x", 1) == XFER_OK, "send: %s",
             last_error);
    XT_CHECK(connect_end(c, b, pc) == XFER_ERR_AUTH,
             "carol's connect: %s", last_error);
    XT_CHECK(strstr(last_error, "did not prove the shared secret"),
             "sentence: %s", last_error);
    /* No key against a keyed side, and a key against an open one. */
    XT_CHECK(connect_end(d, b, peer_of(d, b, 9)) == XFER_ERR_AUTH &&
                 strstr(last_error, "requires authentication; this agent "
                                    "has no auth key"),
             "dave's connect: %s", last_error);
    XT_CHECK(connect_end(a, e, peer_of(a, e, 5)) == XFER_ERR_AUTH &&
                 strstr(last_error, "(it has no auth key)"),
             "alpha to erin: %s", last_error);
    for (int i = 0; i < 200; i++) {
        xfer__chan_progress(b->ch);
        xfer__chan_progress(e->ch);
        usleep(500);
    }
    XT_CHECK(b->ngot == 50 && e->ngot == 0, "delivered past a refusal: "
             "beta %zu, erin %zu", b->ngot, e->ngot);
    XT_CHECK(b->ups == 1 && e->ups == 0, "conn_up past a refusal: %d, %d",
             b->ups, e->ups);
    XT_CHECK(xfer__chan_send(a->ch, pb, "still", 5) == XFER_OK, "send: %s",
             last_error);
    PUMP_UNTIL(a, b, b->ngot >= 51);
    XT_CHECK(b->ngot == 51 && strcmp(b->got[50], "still") == 0,
             "after the refusals: %zu messages", b->ngot);
}

static const xt_test_t tests[] = {
    XT_TEST(test_order_and_identity),
    XT_TEST(test_auth),
    XT_TEST(test_oversize),
    XT_TEST(test_peer_dies),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = { { "chan", tests } };

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    return xt_run("test-chan", suites, 1);
}
