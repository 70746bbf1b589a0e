/* test-listener.c - the side-channel listener between two processes: send,
 * fetch and invalidate; bad frames refused while good clients are served. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/common/xt.h"

#define BUF_SIZE (1u << 20)
#define WAIT_MS 10000
#define LS_HDR 12

static char self_exe[4096];

/* ---- the child: an agent with a listener, driven by lines on stdin -------- */

static int child_main(const char *name, const char *seed_text)
{
    uint64_t seed = strtoull(seed_text, NULL, 10);
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;
    xfer_mem_t *mem = NULL;
    char addr[80], line[512];
    void *buf = aligned_alloc(4096, BUF_SIZE);
    xfer_desc_t d = {(uintptr_t)buf, BUF_SIZE, 0};
    xfer_dlist_t list = {XFER_MEM_DRAM, 1, &d};

    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.listen_addr = "127.0.0.1:0";
    if (buf == NULL || xfer_agent_create(&opts, &a) != XFER_OK ||
        xfer_backend_add(a, "tcp", NULL) != XFER_OK ||
        xfer_mem_register(a, &list, NULL, &mem) != XFER_OK ||
        xfer_agent_listen_addr(a, addr, sizeof(addr)) != XFER_OK) {
        printf("FAIL %s\n", xfer_last_error());
        return 1;
    }
    xt_fill(buf, BUF_SIZE, seed);
    /* The pattern is in place before the progress thread next takes the
     * backend's lock (and so before it sends it to a READ): an order
     * ThreadSanitizer can see, unlike the one through the parent. */
    xfer_progress(a);
    printf("READY %s %" PRIxPTR "\n", addr, (uintptr_t)buf);
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "check ", 6) == 0)
            printf("%s\n", xfer_md_check(a, line + 6) == XFER_OK ? "LOADED"
                                                                 : "ABSENT");
        else
            break;
        fflush(stdout);
    }
    xfer_mem_deregister(a, mem);
    xfer_agent_destroy(a);
    free(buf);
    return 0;
}

/* ---- the parent's handle on a child ------------------------------------------------ */

typedef struct child {
    xt_proc_t proc;
    char addr[80];
    uintptr_t buf;
    uint64_t seed;
} child_t;

static char *child_line(child_t *c, char *line, size_t size)
{
    return xt_proc_line(&c->proc, line, size, WAIT_MS);
}

static void child_stop(void *arg)
{
    child_t *c = arg;

    xt_proc_end(&c->proc, WAIT_MS);
    free(c);
}

static child_t *child_start(void)
{
    child_t *c = calloc(1, sizeof(*c));
    char seed[32], line[256], nm[64];
    char *argv[] = {self_exe, "--child", nm, seed, NULL};

    XT_REQUIRE(c != NULL, "out of memory");
    snprintf(nm, sizeof(nm), "%s", xt_name("child"));
    c->seed = xt_seed();
    snprintf(seed, sizeof(seed), "%" PRIu64, c->seed);
    xt_proc_start(&c->proc, nm, argv);
    xt_defer(child_stop, c);
    child_line(c, line, sizeof(line));
    XT_REQUIRE(sscanf(line, "READY %79s %" SCNxPTR, c->addr, &c->buf) == 2,
               "child %s: '%s'", c->proc.name, line);
    return c;
}

static const char *child_ask(child_t *c, const char *fmt, const char *arg)
{
    static char line[256];

    fprintf(c->proc.in, fmt, arg);
    fflush(c->proc.in);
    return child_line(c, line, sizeof(line));
}

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

static xfer_agent_t *listening_agent(const char *name, unsigned timeout_ms,
                                     char *addr, size_t size)
{
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.listen_addr = "127.0.0.1:0";
    opts.listen_timeout_ms = timeout_ms;
    XT_STATUS_FATAL(xfer_agent_create(&opts, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS_FATAL(xfer_backend_add(a, "tcp", NULL), XFER_OK);
    XT_STATUS_FATAL(xfer_agent_listen_addr(a, addr, size), XFER_OK);
    return a;
}

/* ---- send, fetch, invalidate between two processes ------------------------------------ */

static void test_fetch_read(void)
{
    child_t *c = child_start();
    xfer_agent_t *p = xt_agent(xt_name("ini"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    xfer_desc_t l = {(uintptr_t)local, BUF_SIZE, 0}, r = {c->buf, BUF_SIZE, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    char got[XFER_NAME_MAX + 1];
    xfer_req_t *req;

    xt_register(p, local, BUF_SIZE);
    XT_STATUS(xfer_md_fetch(p, c->addr, "nobody", WAIT_MS, got, sizeof(got)),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("serves agent", c->proc.name, "not 'nobody'");
    XT_CHECK(xfer_md_check(p, c->proc.name) == XFER_ERR_NOT_FOUND,
             "refused fetch loaded nothing");
    XT_STATUS_FATAL(xfer_md_fetch(p, c->addr, c->proc.name, WAIT_MS, got,
                                  sizeof(got)), XFER_OK);
    XT_CHECK(strcmp(got, c->proc.name) == 0, "loaded '%s'", got);
    /* The blob is real: a READ brings the child's pattern. */
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_READ, &ll, &rl, c->proc.name,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_CHECK(xt_check(local, BUF_SIZE, c->seed) < 0, "READ data differs");
    /* No name: whichever agent listens there; fetching again merges. */
    XT_STATUS(xfer_md_fetch(p, c->addr, NULL, WAIT_MS, got, sizeof(got)),
              XFER_OK);
    XT_CHECK(strcmp(got, c->proc.name) == 0, "loaded '%s'", got);
}

/* A private key file both agents of a test share, and the environment
 * naming it (children inherit it); both undone after the test. */
static char key_path[64];

static void key_forget(void *arg)
{
    (void)arg;
    unsetenv("XFER_AUTH_KEY_FILE");
    unlink(key_path);
}

static void key_share(void)
{
    static const char key[] = "a secret for test-listener only\n";
    int fd;

    snprintf(key_path, sizeof(key_path), "/tmp/xfer-listener-key-XXXXXX");
    fd = mkstemp(key_path);
    XT_REQUIRE(fd >= 0 && write(fd, key, sizeof(key) - 1) ==
                              (ssize_t)sizeof(key) - 1,
               "key file: %s", strerror(errno));
    close(fd);
    xt_defer_late(key_forget, NULL);
    setenv("XFER_AUTH_KEY_FILE", key_path, 1);
}

/* Sending and invalidating one's own metadata: with a secret on both
 * sides, as a listener lets only a peer that proved it take over or drop
 * a loaded agent (test-sec-auth tries it without). */
static void test_send_invalidate(void)
{
    const char *pname = xt_name("ini");
    child_t *c;
    xfer_agent_t *p;

    key_share();
    c = child_start();
    p = xt_agent(pname, "tcp", 1);

    XT_CHECK(strcmp(child_ask(c, "check %s\n", pname), "ABSENT") == 0,
             "child knows us before we sent anything");
    XT_STATUS_FATAL(xfer_md_send(p, c->addr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_CHECK(strcmp(child_ask(c, "check %s\n", pname), "LOADED") == 0,
             "child did not load what we sent");
    XT_STATUS(xfer_md_send_invalidate(p, c->addr, WAIT_MS), XFER_OK);
    XT_CHECK(strcmp(child_ask(c, "check %s\n", pname), "ABSENT") == 0,
             "child still has us after the invalidation");
    XT_STATUS(xfer_md_send_invalidate(p, c->addr, WAIT_MS),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("refused", "no remote agent", pname);
    /* Metadata without connection info for an unknown agent: refused
     * with the loader's sentence, carried back. */
    XT_STATUS(xfer_md_send(p, c->addr, XFER_MD_MEM, WAIT_MS),
              XFER_ERR_INVALID);
    XT_ERR_HAS("no connection info");
    XT_STATUS(xfer_md_send(p, c->addr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_CHECK(strcmp(child_ask(c, "check %s\n", pname), "LOADED") == 0,
             "child did not load what we sent again");
}

static void test_addresses(void)
{
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;
    char addr[80], tiny[4];
    int fd;
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sin);
    uint64_t t0;
    xfer_agent_t *p = xt_agent(xt_name("plain"), NULL, 1);

    XT_STATUS(xfer_agent_listen_addr(p, addr, sizeof(addr)),
              XFER_ERR_NOT_FOUND);
    XT_ERR_HAS("has no listener");
    xfer_agent_opts_init(&opts);
    opts.name = xt_name("l");
    opts.listen_addr = ":0"; /* no host: loopback, never every interface */
    XT_STATUS_FATAL(xfer_agent_create(&opts, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS(xfer_agent_listen_addr(a, addr, sizeof(addr)), XFER_OK);
    XT_CHECK(strncmp(addr, "127.0.0.1:", 10) == 0 && atoi(addr + 10) > 0,
             "bound to '%s'", addr);
    XT_STATUS(xfer_agent_listen_addr(a, tiny, sizeof(tiny)), XFER_ERR_INVALID);
    opts.name = xt_name("bad");
    opts.listen_addr = "no-port";
    XT_STATUS(xfer_agent_create(&opts, &a), XFER_ERR_INVALID);
    XT_ERR_HAS("listen_addr", "host:port");
    opts.listen_addr = "127.0.0.1:99999";
    XT_STATUS(xfer_agent_create(&opts, &a), XFER_ERR_INVALID);
    XT_ERR_HAS("port out of range");

    /* Nobody there: an answer at once. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    XT_REQUIRE(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
               getsockname(fd, (struct sockaddr *)&sin, &sl) == 0, "bind");
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sin.sin_port));
    XT_STATUS(xfer_md_fetch(p, addr, NULL, 1000, NULL, 0),
              XFER_ERR_REMOTE_DISCONNECT);
    XT_ERR_HAS("cannot connect", addr);
    /* Someone there who never answers: a timeout, on time. */
    XT_REQUIRE(listen(fd, 4) == 0, "listen");
    t0 = xt_now_ms();
    XT_STATUS(xfer_md_fetch(p, addr, NULL, 300, NULL, 0), XFER_ERR_TIMEOUT);
    XT_ERR_HAS("timed out", addr);
    XT_CHECK(xt_now_ms() - t0 >= 290 && xt_now_ms() - t0 < 2000,
             "timeout after %" PRIu64 " ms", xt_now_ms() - t0);
    close(fd);
}

/* ---- bad frames ------------------------------------------------------------------ */

static int raw_connect(const char *addr)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct timeval tv = {3, 0};
    const char *colon = strrchr(addr, ':');
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)atoi(colon + 1));
    XT_REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&sin,
                                  sizeof(sin)) == 0,
               "connect %s: %s", addr, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void hdr(unsigned char *h, uint32_t magic, uint16_t ver, uint16_t type,
                uint32_t len)
{
    uint32_t m = htonl(magic), l = htonl(len);
    uint16_t v = htons(ver), t = htons(type);

    memcpy(h, &m, 4);
    memcpy(h + 4, &v, 2);
    memcpy(h + 6, &t, 2);
    memcpy(h + 8, &l, 4);
}

static bool recv_all(int fd, void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);

        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Send bytes, read the reply: its type, status and sentence.  The
 * server must then close the connection (a refused frame ends it). */
static unsigned raw_exchange(const char *addr, const void *bytes, size_t n,
                             bool shut, int32_t *status, char *text,
                             size_t size, bool expect_close)
{
    int fd = raw_connect(addr);
    unsigned char h[LS_HDR], body[1024];
    uint32_t len;
    unsigned type;
    char c;

    XT_REQUIRE(send(fd, bytes, n, MSG_NOSIGNAL) == (ssize_t)n, "send");
    if (shut)
        shutdown(fd, SHUT_WR);
    XT_REQUIRE(recv_all(fd, h, LS_HDR), "no reply header");
    XT_CHECK(memcmp(h, "XFMD", 4) == 0, "reply magic");
    type = (unsigned)h[6] << 8 | h[7];
    memcpy(&len, h + 8, 4);
    len = ntohl(len);
    XT_REQUIRE(len < sizeof(body), "reply of %" PRIu32 " bytes", len);
    XT_REQUIRE(recv_all(fd, body, len), "short reply");
    text[0] = '\0';
    *status = 0;
    if (type == 0x83 && len >= 4) {
        uint32_t s;

        memcpy(&s, body, 4);
        *status = (int32_t)ntohl(s);
        snprintf(text, size, "%.*s", (int)(len - 4), body + 4);
    }
    if (expect_close)
        XT_CHECK(recv(fd, &c, 1, 0) == 0, "connection left open after a "
                 "refused frame");
    close(fd);
    return type;
}

#define REFUSED(addr, bytes, n, shut, want)                                 \
    do {                                                                    \
        int32_t st_;                                                        \
        char text_[600];                                                    \
        unsigned t_ = raw_exchange((addr), (bytes), (n), (shut), &st_,      \
                                   text_, sizeof(text_), true);             \
        XT_CHECK(t_ == 0x83 && st_ == XFER_ERR_INVALID &&                   \
                 strstr(text_, (want)) != NULL,                             \
                 "reply type 0x%x status %d '%s', wanted '%s'", t_,         \
                 (int)st_, text_, (want));                                  \
    } while (0)

static void test_bad_frames(void)
{
    char addr[80];
    const char *lname = xt_name("lst");
    xfer_agent_t *l = listening_agent(lname, 2000, addr, sizeof(addr));
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    unsigned char f[LS_HDR + 400];

    (void)l;
    hdr(f, 0x58464d45u, 1, 2, 0);
    REFUSED(addr, f, LS_HDR, false, "bad magic");
    hdr(f, 0x58464d44u, 2, 2, 0);
    REFUSED(addr, f, LS_HDR, false, "wire version 2 is not supported");
    hdr(f, 0x58464d44u, 1, 9, 0);
    REFUSED(addr, f, LS_HDR, false, "unknown request type 9");
    hdr(f, 0x58464d44u, 1, 1, XFER_MD_MAX + 1);
    REFUSED(addr, f, LS_HDR, false, "exceeds the 67108864-byte limit");
    hdr(f, 0x58464d44u, 1, 2, 300);
    REFUSED(addr, f, LS_HDR, false, "exceeds the 255-byte limit");
    hdr(f, 0x58464d44u, 1, 3, 0);
    REFUSED(addr, f, LS_HDR, false, "names no agent");
    /* Header promises 100 bytes, 10 come, then the client stops sending. */
    hdr(f, 0x58464d44u, 1, 1, 100);
    memset(f + LS_HDR, 'x', 10);
    REFUSED(addr, f, LS_HDR + 10, true, "truncated frame: 22 bytes");
    /* A short header, then the end. */
    REFUSED(addr, f, 5, true, "truncated frame: 5 bytes");
    /* A well-framed blob that is not metadata: the loader's sentence. */
    hdr(f, 0x58464d44u, 1, 1, 8);
    memcpy(f + LS_HDR, "not json", 8);
    {
        int32_t st;
        char text[600];
        unsigned t = raw_exchange(addr, f, LS_HDR + 8, false, &st, text,
                                  sizeof(text), false);

        XT_CHECK(t == 0x83 && st == XFER_ERR_INVALID &&
                 strstr(text, "malformed metadata: not JSON") != NULL,
                 "reply 0x%x %d '%s'", t, (int)st, text);
    }
    /* A good request in a raw frame is served. */
    {
        int32_t st;
        char text[600];

        hdr(f, 0x58464d44u, 1, 2, (uint32_t)strlen(lname));
        memcpy(f + LS_HDR, lname, strlen(lname));
        XT_CHECK(raw_exchange(addr, f, LS_HDR + strlen(lname), false, &st,
                              text, sizeof(text), false) == 0x82,
                 "fetch by raw frame");
    }
    /* Through all of it the listener kept serving. */
    XT_STATUS(xfer_md_fetch(p, addr, lname, WAIT_MS, NULL, 0), XFER_OK);
}

/* Random frames, mostly almost right; the listener answers or drops
 * each and keeps serving. */
static void test_fuzz_frames(void)
{
    char addr[80];
    const char *lname = xt_name("lst");
    xfer_agent_t *l = listening_agent(lname, 500, addr, sizeof(addr));
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    uint64_t rs = xt_seed();

    (void)l;
    for (int i = 0; i < 300; i++) {
        unsigned char f[LS_HDR + 512];
        size_t n = LS_HDR + (size_t)(xt_rand(&rs) % 512);
        int fd = raw_connect(addr);
        char sink[256];

        for (size_t k = 0; k < n; k++)
            f[k] = (unsigned char)xt_rand(&rs);
        if (xt_rand(&rs) % 2)
            hdr(f, 0x58464d44u, (uint16_t)(xt_rand(&rs) % 3),
                (uint16_t)(xt_rand(&rs) % 5),
                (uint32_t)(xt_rand(&rs) % 600));
        send(fd, f, xt_rand(&rs) % 4 ? n : n / 2, MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR);
        while (recv(fd, sink, sizeof(sink), 0) > 0)
            ;
        close(fd);
    }
    XT_STATUS(xfer_md_fetch(p, addr, lname, WAIT_MS, NULL, 0), XFER_OK);
}

/* A client that trickles a byte at a time holds no one up, and is
 * dropped at the deadline. */
static void test_trickle(void)
{
    char addr[80];
    const char *lname = xt_name("lst");
    xfer_agent_t *l = listening_agent(lname, 1000, addr, sizeof(addr));
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    unsigned char f[LS_HDR + 8];
    int fd = raw_connect(addr);
    uint64_t t0 = xt_now_ms(), t, dropped = 0;
    size_t sent = 0;

    (void)l;
    hdr(f, 0x58464d44u, 1, 2, 8);
    memcpy(f + LS_HDR, "whatever", 8);
    XT_REQUIRE(send(fd, f, 1, MSG_NOSIGNAL) == 1, "send");
    sent = 1;
    t = xt_now_ms();
    XT_STATUS(xfer_md_fetch(p, addr, lname, WAIT_MS, NULL, 0), XFER_OK);
    XT_CHECK(xt_now_ms() - t < 500, "a good fetch took %" PRIu64 " ms beside "
             "a trickling client", xt_now_ms() - t);
    while (xt_now_ms() - t0 < 4000 && dropped == 0) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        char c;

        if (poll(&pf, 1, 100) == 1 && recv(fd, &c, 1, MSG_DONTWAIT) <= 0) {
            dropped = xt_now_ms() - t0;
            break;
        }
        if (sent < sizeof(f) &&
            send(fd, f + sent, 1, MSG_NOSIGNAL) == 1)
            sent++;
        if (sent == sizeof(f) - 1)
            sent = 1; /* never finish the frame */
    }
    close(fd);
    XT_CHECK(dropped >= 900 && dropped < 2500, "trickling client dropped "
             "after %" PRIu64 " ms (deadline 1000 ms)", dropped);
    XT_STATUS(xfer_md_fetch(p, addr, lname, WAIT_MS, NULL, 0), XFER_OK);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_fetch_read),
        XT_TEST(test_send_invalidate),
        XT_TEST(test_addresses),
        XT_TEST(test_bad_frames),
        XT_TEST(test_fuzz_frames),
        XT_TEST(test_trickle),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"listener", tests}};
    ssize_t n;

    if (argc == 4 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], argv[3]);
    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    return xt_run(argv[0], suites, 1);
}
