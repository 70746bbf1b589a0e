/* test-sec-control.c - hostile clients of the control plane (issue 10,
 * breaks 1 and 9): FETCH serves only published regions, the listener's
 * per-address and total bounds, EMFILE on accept, region and remote agent
 * caps, and a 200k-region load that must not stall other peers. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/common/xt.h"

#define WAIT_MS 10000
#define LS_HDR 12
#define BUF_SIZE (1u << 20)
#define SECRET_SIZE (64u << 10)
#define GUARD 4096u          /* canary bytes around the target's memory */
#define CANARY 0xc5

static char self_exe[4096];

/* ---- the target process: an agent with a listener, driven by lines ------- */

/* Target memory: guard, published BUF, guard, unpublished SECRET, guard. */
static unsigned char *target_mem;

static const char *target_verify(uint64_t seed)
{
    unsigned char *buf = target_mem + GUARD;
    unsigned char *secret = buf + BUF_SIZE + GUARD;
    const unsigned char *guards[3] = {target_mem, buf + BUF_SIZE,
                                      secret + SECRET_SIZE};

    for (int g = 0; g < 3; g++)
        for (size_t i = 0; i < GUARD; i++)
            if (guards[g][i] != CANARY)
                return "a canary byte changed";
    if (xt_check(buf, BUF_SIZE, seed) >= 0)
        return "the published buffer changed";
    if (xt_check(secret, SECRET_SIZE, seed + 1) >= 0)
        return "the unpublished buffer changed";
    return NULL;
}

static unsigned open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    unsigned n = 0;

    if (d == NULL)
        return 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 2; /* "." and ".."; the DIR's own fd stands for the next one */
}

/* argv: name seed max_clients max_per_addr timeout_ms nofile_extra log */
static int target_main(char **argv)
{
    const char *name = argv[2];
    uint64_t seed = strtoull(argv[3], NULL, 10);
    unsigned nofile_extra = (unsigned)atoi(argv[7]);
    const char *logpath = argv[8];
    xfer_agent_opts_t opts;
    xfer_mem_opts_t mo;
    xfer_agent_t *a = NULL;
    xfer_mem_t *pub = NULL, *secret = NULL;
    char addr[80], line[256], *blob = NULL;
    size_t blen = 0;
    unsigned char *buf, *sec;
    xfer_desc_t d;
    xfer_dlist_t list = {XFER_MEM_DRAM, 1, &d};
    json_t *root;
    const char *key;

    if (strcmp(logpath, "-") != 0 && freopen(logpath, "w", stderr) == NULL)
        return 1;
    setvbuf(stderr, NULL, _IOLBF, 0);
    target_mem = aligned_alloc(4096, 3 * GUARD + BUF_SIZE + SECRET_SIZE);
    if (target_mem == NULL)
        return 1;
    buf = target_mem + GUARD;
    sec = buf + BUF_SIZE + GUARD;
    memset(target_mem, CANARY, 3 * GUARD + BUF_SIZE + SECRET_SIZE);
    xt_fill(buf, BUF_SIZE, seed);
    xt_fill(sec, SECRET_SIZE, seed + 1);
    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.listen_addr = "127.0.0.1:0";
    opts.listen_max_clients = (unsigned)atoi(argv[4]);
    opts.listen_max_per_addr = (unsigned)atoi(argv[5]);
    opts.listen_timeout_ms = (unsigned)atoi(argv[6]);
    if (xfer_agent_create(&opts, &a) != XFER_OK ||
        xfer_backend_add(a, "tcp", NULL) != XFER_OK)
        goto fail;
    d = (xfer_desc_t){(uintptr_t)buf, BUF_SIZE, 0};
    if (xfer_mem_register(a, &list, NULL, &pub) != XFER_OK)
        goto fail;
    xfer_mem_opts_init(&mo);
    mo.publish = 0;
    d = (xfer_desc_t){(uintptr_t)sec, SECRET_SIZE, 0};
    if (xfer_mem_register(a, &list, &mo, &secret) != XFER_OK ||
        xfer_md_get(a, XFER_MD_MEM, &secret, 1, &blob, &blen) != XFER_OK ||
        xfer_agent_listen_addr(a, addr, sizeof(addr)) != XFER_OK)
        goto fail;
    root = json_loadb(blob, blen, 0, NULL);
    key = json_string_value(json_object_get(
        json_array_get(json_object_get(root, "regions"), 0), "key"));
    if (key == NULL)
        goto fail;
    /* The patterns are in place before the progress thread next takes
     * the backend's lock (an order ThreadSanitizer can see). */
    xfer_progress(a);
    if (nofile_extra > 0) {
        struct rlimit rl;

        /* From here on the agent may open only this many more fds. */
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = open_fds() + nofile_extra;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            printf("FAIL setrlimit: %s\n", strerror(errno));
            return 1;
        }
    }
    printf("READY %s %" PRIxPTR " %" PRIxPTR " %s\n", addr, (uintptr_t)buf,
           (uintptr_t)sec, key);
    fflush(stdout);
    json_decref(root);
    xfer_free(blob);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "verify") == 0) {
            const char *bad = target_verify(seed);

            printf("%s%s\n", bad ? "BAD " : "OK", bad ? bad : "");
        } else if (strcmp(line, "cpu") == 0) {
            struct rusage ru;

            getrusage(RUSAGE_SELF, &ru);
            printf("CPU %ld\n", (long)(ru.ru_utime.tv_sec * 1000 +
                                       ru.ru_utime.tv_usec / 1000 +
                                       ru.ru_stime.tv_sec * 1000 +
                                       ru.ru_stime.tv_usec / 1000));
        } else {
            break;
        }
        fflush(stdout);
    }
    xfer_mem_deregister(a, secret);
    xfer_mem_deregister(a, pub);
    xfer_agent_destroy(a);
    free(target_mem);
    return 0;

fail:
    printf("FAIL %s\n", xfer_last_error());
    return 1;
}

/* ---- the parent's handle on a target ----------------------------------------- */

typedef struct target {
    xt_proc_t proc;
    char addr[80];
    uintptr_t buf, secret;
    char secret_key[32];
    uint64_t seed;
    char log[64];
} target_t;

static void target_stop(void *arg)
{
    target_t *t = arg;

    xt_proc_end(&t->proc, WAIT_MS);
    if (t->log[0] != '\0')
        unlink(t->log);
    free(t);
}

static char *target_ask(target_t *t, const char *cmd)
{
    static char line[256];

    fprintf(t->proc.in, "%s\n", cmd);
    fflush(t->proc.in);
    return xt_proc_line(&t->proc, line, sizeof(line), WAIT_MS);
}

/* with_log: the target's stderr goes to a file the test reads. */
static target_t *target_start(unsigned max_clients, unsigned max_per_addr,
                              unsigned timeout_ms, unsigned nofile_extra,
                              bool with_log)
{
    target_t *t = calloc(1, sizeof(*t));
    char seed[32], nm[64], a1[16], a2[16], a3[16], a4[16], line[512];
    char *argv[] = {self_exe, "--target", nm, seed, a1, a2, a3, a4, NULL,
                    NULL};

    XT_REQUIRE(t != NULL, "out of memory");
    snprintf(nm, sizeof(nm), "%s", xt_name("tgt"));
    t->seed = xt_seed();
    snprintf(seed, sizeof(seed), "%" PRIu64, t->seed);
    snprintf(a1, sizeof(a1), "%u", max_clients);
    snprintf(a2, sizeof(a2), "%u", max_per_addr);
    snprintf(a3, sizeof(a3), "%u", timeout_ms);
    snprintf(a4, sizeof(a4), "%u", nofile_extra);
    if (with_log) {
        int fd;

        snprintf(t->log, sizeof(t->log), "/tmp/xfer-sec-log-XXXXXX");
        fd = mkstemp(t->log);
        XT_REQUIRE(fd >= 0, "mkstemp: %s", strerror(errno));
        close(fd);
        argv[8] = t->log;
    } else {
        argv[8] = "-";
    }
    xt_proc_start(&t->proc, nm, argv);
    xt_defer(target_stop, t);
    xt_proc_line(&t->proc, line, sizeof(line), WAIT_MS);
    XT_REQUIRE(sscanf(line, "READY %79s %" SCNxPTR " %" SCNxPTR " %31s",
                      t->addr, &t->buf, &t->secret, t->secret_key) == 4,
               "target %s: '%s'", t->proc.name, line);
    return t;
}

static void target_check(target_t *t)
{
    const char *r = target_ask(t, "verify");

    XT_CHECK(strcmp(r, "OK") == 0, "target %s after the attack: %s",
             t->proc.name, r);
}

/* How many lines of the target's log contain what. */
static unsigned log_count(const target_t *t, const char *what)
{
    FILE *f = fopen(t->log, "r");
    char line[2048];
    unsigned n = 0;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, what) != NULL;
    fclose(f);
    return n;
}

/* ---- a raw listener client ----------------------------------------------------- */

/* A connection to the listener at addr from source address src. */
static int raw_connect(const char *src, const char *addr)
{
    struct sockaddr_in from = {.sin_family = AF_INET};
    struct sockaddr_in to = {.sin_family = AF_INET};
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    XT_REQUIRE(fd >= 0, "socket: %s", strerror(errno));
    inet_pton(AF_INET, src, &from.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    to.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    XT_REQUIRE(bind(fd, (struct sockaddr *)&from, sizeof(from)) == 0,
               "bind %s: %s", src, strerror(errno));
    XT_REQUIRE(connect(fd, (struct sockaddr *)&to, sizeof(to)) == 0,
               "connect %s from %s: %s", addr, src, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
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

/* One reply frame: its type, and its payload (malloc'd, NUL-terminated).
 * 0 when the stream ended or broke first. */
static unsigned read_frame(int fd, char **payload, size_t *len)
{
    unsigned char h[LS_HDR];
    uint32_t n;

    *payload = NULL;
    *len = 0;
    if (!recv_all(fd, h, LS_HDR) || memcmp(h, "XFMD", 4) != 0)
        return 0;
    memcpy(&n, h + 8, 4);
    n = ntohl(n);
    if (n > XFER_MD_MAX)
        return 0;
    *payload = malloc((size_t)n + 1);
    if (*payload == NULL || !recv_all(fd, *payload, n)) {
        free(*payload);
        *payload = NULL;
        return 0;
    }
    (*payload)[n] = '\0';
    *len = n;
    return (unsigned)h[6] << 8 | h[7];
}

static void send_fetch(int fd)
{
    unsigned char h[LS_HDR] = {'X', 'F', 'M', 'D', 0, 1, 0, 2, 0, 0, 0, 0};

    XT_REQUIRE(send(fd, h, LS_HDR, MSG_NOSIGNAL) == LS_HDR, "send: %s",
               strerror(errno));
}

/* An ERR frame's status and sentence. */
static int32_t err_of(const char *p, size_t len, const char **text)
{
    uint32_t s;

    *text = "";
    if (len < 4)
        return 0;
    memcpy(&s, p, 4);
    *text = p + 4;
    return (int32_t)ntohl(s);
}

/* Whether fd has something to read (a reply, or the end) right now. */
static bool readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, 0) == 1;
}

/* What the listener said to a client it turned away: XFER_ERR_BUSY and a
 * sentence containing want, then the end of the stream. */
static void check_turned_away(int fd, const char *want, const char *who)
{
    char *p, c;
    size_t len;
    unsigned type = read_frame(fd, &p, &len);
    const char *text;
    int32_t st = type == 0x83 ? err_of(p, len, &text) : 0;

    XT_CHECK(type == 0x83 && st == XFER_ERR_BUSY && strstr(text, want),
             "%s: reply type 0x%x status %d '%s', wanted BUSY '%s'", who,
             type, (int)st, type == 0x83 ? text : "", want);
    XT_CHECK(recv(fd, &c, 1, 0) <= 0, "%s: left open", who);
    free(p);
}

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

/* ---- the well-behaved peer ---------------------------------------------------- */

/* Load the target's metadata through the library (from 127.0.0.1) and
 * READ its published buffer, byte for byte. */
static void good_fetch_read(target_t *t, xfer_agent_t *p, unsigned char *local)
{
    xfer_desc_t l = {(uintptr_t)local, BUF_SIZE, 0}, r = {t->buf, BUF_SIZE, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;

    memset(local, 0, BUF_SIZE);
    XT_STATUS_FATAL(xfer_md_fetch(p, t->addr, t->proc.name, WAIT_MS, NULL, 0),
                    XFER_OK);
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_READ, &ll, &rl, t->proc.name,
                                    NULL, &req), XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_CHECK(xt_check(local, BUF_SIZE, t->seed) < 0, "READ data differs at "
             "%ld", xt_check(local, BUF_SIZE, t->seed));
    XT_STATUS(xfer_req_release(req), XFER_OK);
}

/* ---- FETCH serves only what is published ------------------------------------------ */

static void test_fetch_published_only(void)
{
    target_t *t = target_start(0, 0, 0, 0, false);
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    char secret_addr[40], *blob;
    size_t len;
    int fd = raw_connect("127.0.0.1", t->addr);
    unsigned type;

    xt_register(p, local, BUF_SIZE);
    /* What any client of the listener gets. */
    send_fetch(fd);
    type = read_frame(fd, &blob, &len);
    close(fd);
    XT_REQUIRE(type == 0x82, "FETCH answered type 0x%x", type);
    snprintf(secret_addr, sizeof(secret_addr), "\"0x%" PRIxPTR "\"",
             t->secret);
    XT_CHECK(strstr(blob, t->secret_key) == NULL, "FETCH served the key %s "
             "of an unpublished region", t->secret_key);
    XT_CHECK(strstr(blob, secret_addr) == NULL, "FETCH served the address "
             "%s of an unpublished region", secret_addr);
    {
        char pub_addr[40];

        snprintf(pub_addr, sizeof(pub_addr), "\"0x%" PRIxPTR "\"", t->buf);
        XT_CHECK(strstr(blob, pub_addr) != NULL, "FETCH left out the "
                 "published region %s", pub_addr);
    }
    free(blob);
    /* The published region serves; the other is unknown to the peer. */
    good_fetch_read(t, p, local);
    {
        xfer_desc_t l = {(uintptr_t)local, SECRET_SIZE, 0};
        xfer_desc_t r = {t->secret, SECRET_SIZE, 0};
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
        xfer_req_t *req = NULL;

        XT_STATUS(xfer_req_create(p, XFER_OP_READ, &ll, &rl, t->proc.name,
                                  NULL, &req), XFER_ERR_INVALID);
        XT_ERR_HAS("is not inside any DRAM region");
    }
    target_check(t);
}

/* The application's own view: xfer_md_get without handles is what the
 * agent publishes; with a handle, that registration whatever its flag. */
static void test_md_get_publish(void)
{
    xfer_agent_t *a = xt_agent(xt_name("pub"), "tcp", 1);
    unsigned char *b1 = xt_alloc(8192), *b2 = xt_alloc(8192);
    xfer_desc_t d = {(uintptr_t)b2, 8192, 0};
    xfer_dlist_t list = xt_dlist(&d, 1);
    xfer_mem_opts_t mo;
    xfer_mem_t *hidden = NULL;
    char a2[40], *all, *one;
    size_t len;

    xt_register(a, b1, 8192);
    xfer_mem_opts_init(&mo);
    XT_CHECK(mo.publish == 1, "publish defaults to %d", mo.publish);
    mo.publish = 0;
    XT_STATUS_FATAL(xfer_mem_register(a, &list, &mo, &hidden), XFER_OK);
    snprintf(a2, sizeof(a2), "\"0x%" PRIxPTR "\"", (uintptr_t)b2);
    all = xt_md_get(a, XFER_MD_ALL, NULL, 0, &len);
    XT_CHECK(strstr(all, a2) == NULL, "XFER_MD_ALL without handles lists "
             "an unpublished region");
    one = xt_md_get(a, XFER_MD_MEM, &hidden, 1, &len);
    XT_CHECK(strstr(one, a2) != NULL, "the handle of an unpublished region "
             "did not bring it");
    XT_STATUS(xfer_mem_deregister(a, hidden), XFER_OK);
}

/* ---- the listener's bounds --------------------------------------------------------- */

#define FLOOD 70

/* 70 idle connections from one address take 8 slots; a client from
 * another address is served, and the 8 still are. */
static void test_flood_one_address(void)
{
    target_t *t = target_start(0, 0, 30000, 0, false);
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    int fds[FLOOD];
    unsigned kept = 0, refused = 0;

    xt_register(p, local, BUF_SIZE);
    for (int i = 0; i < FLOOD; i++)
        fds[i] = raw_connect("127.0.0.2", t->addr);
    /* The listener takes connections in order: by the time the good
     * client (127.0.0.1, after them) is answered, each of the 70 was
     * taken or turned away. */
    good_fetch_read(t, p, local);
    for (int i = 0; i < FLOOD; i++) {
        if (readable(fds[i])) {
            check_turned_away(fds[i], "listen_max_per_addr", "flood client");
            refused++;
        } else {
            char *md;
            size_t len;

            /* Taken: served like anyone. */
            send_fetch(fds[i]);
            XT_CHECK(read_frame(fds[i], &md, &len) == 0x82, "kept flood "
                     "client %d not served", i);
            free(md);
            kept++;
        }
        close(fds[i]);
    }
    XT_CHECK(kept == 8 && refused == FLOOD - 8, "%u kept, %u refused; "
             "wanted 8 and %d (listen_max_per_addr 8)", kept, refused,
             FLOOD - 8);
    good_fetch_read(t, p, local);
    target_check(t);
}

/* A full listener (4 clients from two addresses, 2 each) makes room for
 * a client from a third address by dropping the oldest idle connection
 * of the busiest one; an address at its own cap is refused. */
static void test_full_listener_fair_share(void)
{
    target_t *t = target_start(4, 2, 30000, 0, false);
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    const char *src[4] = {"127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"};
    int fds[4], extra;
    unsigned dropped = 0;

    xt_register(p, local, BUF_SIZE);
    for (int i = 0; i < 4; i++) {
        fds[i] = raw_connect(src[i], t->addr);
        /* One at a time, so that "oldest" is well defined. */
        xt_sleep_ms(5);
    }
    /* 127.0.0.3 already holds 2: its third is refused, nobody dropped. */
    extra = raw_connect("127.0.0.3", t->addr);
    check_turned_away(extra, "listen_max_per_addr", "third from 127.0.0.3");
    close(extra);
    for (int i = 0; i < 4; i++)
        XT_CHECK(!readable(fds[i]), "client %d dropped for a refused one", i);
    /* The good client from 127.0.0.1 (holding none) takes a place. */
    good_fetch_read(t, p, local);
    for (int i = 0; i < 4; i++) {
        if (!readable(fds[i]))
            continue;
        check_turned_away(fds[i], "listen_max_clients", "dropped client");
        dropped++;
        XT_CHECK(i == 0, "dropped client %d (%s), not the oldest of the "
                 "busiest address (client 0)", i, src[i]);
    }
    XT_CHECK(dropped == 1, "%u clients dropped to make room, wanted 1",
             dropped);
    for (int i = 0; i < 4; i++)
        close(fds[i]);
    target_check(t);
}

/* The target may open only a few more fds: a flood of connections makes
 * accept fail with EMFILE.  The listener must pause (a line in the log,
 * not a spinning thread), keep serving the clients it has, and take new
 * ones again once fds are free. */
#define EMFILE_FLOOD 40
#define EMFILE_WINDOW_MS 3000

static void test_emfile(void)
{
    target_t *t = target_start(1000, 1000, 60000, 12, true);
    xfer_agent_t *p = xt_agent(xt_name("good"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    int fds[EMFILE_FLOOD];
    uint64_t end;
    long cpu0 = 0, cpu1 = 0;
    unsigned lines;
    char *md;
    size_t len;

    xt_register(p, local, BUF_SIZE);
    for (int i = 0; i < EMFILE_FLOOD; i++)
        fds[i] = raw_connect("127.0.0.1", t->addr);
    end = xt_now_ms() + WAIT_MS;
    while (log_count(t, "cannot accept") == 0 && xt_now_ms() < end)
        xt_sleep_ms(20);
    XT_REQUIRE(log_count(t, "cannot accept") > 0, "the target never said "
               "it could not accept (EMFILE)");
    /* A client taken before the fds ran out is still served. */
    send_fetch(fds[0]);
    XT_CHECK(read_frame(fds[0], &md, &len) == 0x82, "a client taken before "
             "EMFILE was not served");
    free(md);
    /* Out of fds, with clients waiting in the backlog, the listener must
     * sleep, not spin: a spinning thread burns most of a CPU in this
     * window, a paused one a few wake-ups.  (A bound on busy work, far
     * from either side, not on speed.) */
    XT_REQUIRE(sscanf(target_ask(t, "cpu"), "CPU %ld", &cpu0) == 1, "cpu");
    xt_sleep_ms(EMFILE_WINDOW_MS);
    XT_REQUIRE(sscanf(target_ask(t, "cpu"), "CPU %ld", &cpu1) == 1, "cpu");
    XT_CHECK(cpu1 - cpu0 < EMFILE_WINDOW_MS / 10, "the target used %ld ms "
             "of CPU in %d ms while out of fds: accept spins",
             cpu1 - cpu0, EMFILE_WINDOW_MS);
    /* The fds come back; new clients are served again. */
    for (int i = 0; i < EMFILE_FLOOD; i++)
        close(fds[i]);
    good_fetch_read(t, p, local);
    lines = log_count(t, "cannot accept");
    XT_CHECK(lines >= 1 && lines <= 2, "%u log lines about accept failing "
             "in about %d ms (one per 10 s wanted)", lines,
             EMFILE_WINDOW_MS);
    target_check(t);
}

/* The listener's buffer budget (listen_buffer_bytes, here 80 KiB): a
 * SEND that grows past it and a FETCH whose reply would are answered
 * BUSY; what they held is given back, and small requests go on. */
static void test_buffer_budget(void)
{
    enum { NREG = 1000 };
    xfer_agent_opts_t o;
    xfer_agent_t *l = NULL, *sender = xt_agent(xt_name("snd"), "tcp", 1);
    unsigned char *mem = xt_alloc(NREG * 4096);
    xfer_desc_t *d = calloc(NREG, sizeof(*d));
    xfer_dlist_t list = {XFER_MEM_DRAM, NREG, d};
    xfer_mem_t *m = NULL;
    char addr[80], *p;
    size_t len;
    int fd;

    XT_REQUIRE(d != NULL, "out of memory");
    xt_defer_late(free, d);
    xfer_agent_opts_init(&o);
    o.name = xt_name("bud");
    o.listen_addr = "127.0.0.1:0";
    o.listen_buffer_bytes = 80 << 10;
    XT_STATUS_FATAL(xfer_agent_create(&o, &l), XFER_OK);
    xt_defer(agent_free, l);
    XT_STATUS_FATAL(xfer_backend_add(l, "tcp", NULL), XFER_OK);
    XT_STATUS_FATAL(xfer_agent_listen_addr(l, addr, sizeof(addr)), XFER_OK);
    /* Metadata far larger than the budget. */
    for (size_t i = 0; i < NREG; i++)
        d[i] = (xfer_desc_t){(uintptr_t)mem + i * 4096, 4096, 0};
    XT_STATUS_FATAL(xfer_mem_register(l, &list, NULL, &m), XFER_OK);
    for (int round = 0; round < 2; round++) {
        /* A SEND that claims 1 MiB and brings 100 KiB. */
        unsigned char *f = calloc(1, LS_HDR + (100 << 10));

        XT_REQUIRE(f != NULL, "out of memory");
        memcpy(f, "XFMD\0\1\0\1", 8);
        f[8] = 0, f[9] = 0x10, f[10] = 0, f[11] = 0; /* 1 MiB */
        fd = raw_connect("127.0.0.1", addr);
        XT_REQUIRE(send(fd, f, LS_HDR + (100 << 10), MSG_NOSIGNAL) ==
                   LS_HDR + (100 << 10), "send: %s", strerror(errno));
        free(f);
        check_turned_away(fd, "listen_buffer_bytes", "big SEND");
        close(fd);
        /* A FETCH whose reply does not fit. */
        fd = raw_connect("127.0.0.1", addr);
        send_fetch(fd);
        check_turned_away(fd, "listen_buffer_bytes", "big FETCH");
        close(fd);
    }
    /* What they held came back: small requests are served. */
    XT_STATUS(xfer_md_send(sender, addr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_check(l, xfer_agent_name(sender)), XFER_OK);
    fd = raw_connect("127.0.0.1", addr);
    {
        /* A FETCH naming another agent: a small answer, not BUSY (an
         * INVALIDATE would need authentication, test-sec-auth). */
        unsigned char h[LS_HDR] = {'X', 'F', 'M', 'D', 0, 1, 0, 2, 0, 0, 0,
                                   6};

        XT_REQUIRE(send(fd, h, LS_HDR, MSG_NOSIGNAL) == LS_HDR &&
                   send(fd, "nobody", 6, MSG_NOSIGNAL) == 6, "send");
        XT_CHECK(read_frame(fd, &p, &len) == 0x83 && len > 4 &&
                     strstr(p + 4, "not 'nobody'") != NULL,
                 "a small FETCH not served after the refusals");
        free(p);
    }
    close(fd);
    XT_STATUS(xfer_mem_deregister(l, m), XFER_OK);
}

/* ---- metadata: regions and remote agents --------------------------------------- */

/* A blob for agent name (epoch) reaching `conn`'s backends, with n
 * regions of 4 KiB at descending addresses from base (keys key0, key0+1,
 * ...).  n 0: no regions field.  Freed after the test. */
static char *synth_blob(xfer_agent_t *conn, const char *name, uint64_t epoch,
                        size_t n, uint64_t base, uint64_t key0, size_t *len)
{
    size_t blen;
    char *own = xt_md_get(conn, XFER_MD_CONN, NULL, 0, &blen);
    json_t *root = xt_blob_parse(own, blen);
    char *backends = json_dumps(json_object_get(root, "backends"),
                                JSON_COMPACT);
    size_t cap = 256 + strlen(backends) + n * 160, off;
    char *out = malloc(cap);

    XT_REQUIRE(out != NULL && backends != NULL, "out of memory");
    off = (size_t)snprintf(out, cap, "{\"format\":\"xfer-md\",\"version\":1,"
                           "\"agent\":\"%s\",\"epoch\":\"0x%" PRIx64 "\","
                           "\"backends\":%s", name, epoch, backends);
    free(backends);
    if (n > 0) {
        off += (size_t)snprintf(out + off, cap - off, ",\"regions\":[");
        for (size_t i = 0; i < n; i++)
            off += (size_t)snprintf(out + off, cap - off,
                                    "%s{\"addr\":\"0x%" PRIx64 "\",\"len\":"
                                    "4096,\"type\":\"DRAM\",\"dev\":0,"
                                    "\"key\":\"0x%" PRIx64 "\",\"access\":"
                                    "\"rw\",\"pub\":{\"tcp\":\"\"}}",
                                    i ? "," : "",
                                    base + (uint64_t)(n - 1 - i) * 4096,
                                    key0 + i);
        off += (size_t)snprintf(out + off, cap - off, "]");
    }
    snprintf(out + off, cap - off, "}");
    xt_defer_late(free, out);
    *len = strlen(out);
    return out;
}

static xfer_agent_t *agent_with(const char *name, unsigned max_remote,
                                unsigned max_regions, const char *listen)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&o);
    o.name = name;
    o.max_remote_agents = max_remote;
    o.md_max_regions = max_regions;
    o.listen_addr = listen;
    XT_STATUS_FATAL(xfer_agent_create(&o, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS_FATAL(xfer_backend_add(a, "tcp", NULL), XFER_OK);
    return a;
}

/* A target in this process with a registered buffer between canaries. */
typedef struct local_target {
    xfer_agent_t *a;
    unsigned char *mem, *buf;
    uint64_t seed;
} local_target_t;

static void local_target(local_target_t *t)
{
    t->a = xt_agent(xt_name("lt"), "tcp", 1);
    t->mem = xt_alloc(BUF_SIZE + 2 * GUARD);
    t->buf = t->mem + GUARD;
    memset(t->mem, CANARY, BUF_SIZE + 2 * GUARD);
    t->seed = xt_seed();
    xt_fill(t->buf, BUF_SIZE, t->seed);
    xt_register(t->a, t->buf, BUF_SIZE);
}

static void local_target_check(const local_target_t *t)
{
    for (size_t i = 0; i < GUARD; i++)
        if (t->mem[i] != CANARY || t->buf[BUF_SIZE + i] != CANARY) {
            XT_FAIL("canary byte %zu around the target changed", i);
            return;
        }
    XT_CHECK(xt_check(t->buf, BUF_SIZE, t->seed) < 0, "target data changed");
}

/* One READ of the whole target buffer into local, checked. */
static xfer_status_t read_once(xfer_agent_t *i, const local_target_t *t,
                               unsigned char *local)
{
    xfer_desc_t l = {(uintptr_t)local, BUF_SIZE, 0};
    xfer_desc_t r = {(uintptr_t)t->buf, BUF_SIZE, 0};
    xfer_dlist_t ll = {XFER_MEM_DRAM, 1, &l}, rl = {XFER_MEM_DRAM, 1, &r};
    xfer_req_t *req = NULL;
    xfer_status_t st;

    memset(local, 0, BUF_SIZE);
    st = xfer_req_create(i, XFER_OP_READ, &ll, &rl, xfer_agent_name(t->a),
                         NULL, &req);
    if (st != XFER_OK)
        return st;
    st = xfer_req_post(req, NULL, 0);
    if (st == XFER_IN_PROG)
        st = xfer_req_wait(req, WAIT_MS);
    xfer_req_release(req);
    if (st == XFER_OK && xt_check(local, BUF_SIZE, t->seed) >= 0)
        st = XFER_ERR_BACKEND; /* wrong bytes */
    return st;
}

static void test_region_cap(void)
{
    local_target_t t;
    xfer_agent_t *i = agent_with(xt_name("ri"), 0, 100, NULL);
    xfer_agent_t *dflt = agent_with(xt_name("rd"), 0, 0, NULL);
    unsigned char *local = xt_alloc(BUF_SIZE);
    const char *fake = xt_name("fake");
    size_t len, count = 0;
    char *blob;

    local_target(&t);
    xt_register(i, local, BUF_SIZE);
    xt_md_exchange(t.a, XFER_MD_ALL, i);
    blob = synth_blob(t.a, fake, 5, 101, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS("101 regions, more than the 100 allowed by the agent option "
               "md_max_regions");
    XT_STATUS(xfer_md_check(i, fake), XFER_ERR_NOT_FOUND);
    /* The default, 65536. */
    blob = synth_blob(t.a, fake, 5, 65537, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(dflt, blob, len, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS("65537 regions, more than the 65536 allowed by the agent "
               "option md_max_regions");
    /* Partial updates cannot pile up past it either. */
    blob = synth_blob(t.a, fake, 5, 60, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    blob = synth_blob(t.a, fake, 5, 60, 0x20000000, 1000, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS("would give it 120 regions, more than the 100 allowed by the "
               "agent option md_max_regions");
    XT_STATUS(xfer_md_regions(i, fake, NULL, 0, &count), XFER_OK);
    XT_CHECK(count == 60, "%zu regions kept after a refused update", count);
    /* A repeat of known regions adds nothing and is fine. */
    blob = synth_blob(t.a, fake, 5, 60, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    /* Others are unaffected. */
    XT_STATUS(read_once(i, &t, local), XFER_OK);
    local_target_check(&t);
}

static void test_max_remote_agents(void)
{
    local_target_t t;
    xfer_agent_t *i = agent_with(xt_name("mi"), 3, 0, "127.0.0.1:0");
    xfer_agent_t *sender = xt_agent(xt_name("snd"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    char f1[64], f2[64], f3[64], addr[80];
    size_t len;
    char *blob;

    local_target(&t);
    xt_register(i, local, BUF_SIZE);
    XT_STATUS_FATAL(xfer_agent_listen_addr(i, addr, sizeof(addr)), XFER_OK);
    snprintf(f1, sizeof(f1), "%s", xt_name("f1"));
    snprintf(f2, sizeof(f2), "%s", xt_name("f2"));
    snprintf(f3, sizeof(f3), "%s", xt_name("f3"));
    xt_md_exchange(t.a, XFER_MD_ALL, i);
    blob = synth_blob(t.a, f1, 5, 1, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    blob = synth_blob(t.a, f2, 5, 1, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    /* A fourth name: refused, with the option named. */
    blob = synth_blob(t.a, f3, 5, 1, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_ERR_NOMEM);
    XT_ERR_HAS("holds 3 remote agents, the most the agent option "
               "max_remote_agents allows", f3, "was not loaded");
    XT_STATUS(xfer_md_check(i, f3), XFER_ERR_NOT_FOUND);
    /* The same through the listener, from any client. */
    XT_STATUS(xfer_md_send(sender, addr, XFER_MD_ALL, WAIT_MS),
              XFER_ERR_NOMEM);
    XT_ERR_HAS("refused", "max_remote_agents");
    /* Those loaded keep working; a newer epoch or more of a loaded one
     * is not a new agent. */
    XT_STATUS(read_once(i, &t, local), XFER_OK);
    blob = synth_blob(t.a, f1, 6, 2, 0x30000000, 50, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    blob = synth_blob(t.a, f2, 5, 3, 0x40000000, 70, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    /* Room again after an invalidation. */
    XT_STATUS(xfer_md_invalidate(i, f1), XFER_OK);
    blob = synth_blob(t.a, f3, 5, 1, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    XT_STATUS(read_once(i, &t, local), XFER_OK);
    local_target_check(&t);
}

/* Strangers on an unauthenticated listener: a quarter of the remote-agent
 * room at most, and never a change to a loaded name (more regions or new
 * public parts would let them bend a real peer).  The application's own
 * loads keep their room. */
static void test_open_listener_budget(void)
{
    local_target_t t;
    xfer_agent_t *i = agent_with(xt_name("oi"), 8, 0, "127.0.0.1:0");
    xfer_agent_t *s1 = xt_agent(xt_name("s1"), "tcp", 1);
    xfer_agent_t *s2 = xt_agent(xt_name("s2"), "tcp", 1);
    xfer_agent_t *s3 = xt_agent(xt_name("s3"), "tcp", 1);
    unsigned char *local = xt_alloc(BUF_SIZE);
    char addr[80], f1[64];
    size_t len;
    char *blob;

    local_target(&t);
    xt_register(i, local, BUF_SIZE);
    XT_STATUS_FATAL(xfer_agent_listen_addr(i, addr, sizeof(addr)), XFER_OK);
    xt_md_exchange(t.a, XFER_MD_ALL, i);
    XT_STATUS(xfer_md_send(s1, addr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_send(s2, addr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_send(s3, addr, XFER_MD_ALL, WAIT_MS), XFER_ERR_NOMEM);
    XT_ERR_HAS("introduced through the listener without authentication",
               "max_remote_agents / 4", xfer_agent_name(s3));
    XT_STATUS(xfer_md_check(i, xfer_agent_name(s3)), XFER_ERR_NOT_FOUND);
    /* The same blob again (same epoch): a change to a loaded name. */
    XT_STATUS(xfer_md_send(s1, addr, XFER_MD_ALL, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS("changing loaded agent", xfer_agent_name(s1),
               "needs authentication");
    /* The application still has its room. */
    snprintf(f1, sizeof(f1), "%s", xt_name("app"));
    blob = synth_blob(t.a, f1, 5, 1, 0x10000000, 1, &len);
    XT_STATUS(xfer_md_load(i, blob, len, NULL, 0), XFER_OK);
    /* Once the application forgets one, a stranger may take its place. */
    XT_STATUS(xfer_md_invalidate(i, xfer_agent_name(s1)), XFER_OK);
    XT_STATUS(xfer_md_send(s3, addr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_STATUS(read_once(i, &t, local), XFER_OK);
    local_target_check(&t);
}

/* ---- a huge blob while others transfer ------------------------------------------- */

#define HUGE_REGIONS 200000u

typedef struct mover {
    xfer_agent_t *i;
    local_target_t *t;
    unsigned char *local;
    atomic_bool loading, stop;
    atomic_uint done, bad;
    unsigned during;
    xfer_status_t first_bad;
    uint64_t worst_ms;
} mover_t;

/* A peer's transfers, one after the other, each created anew (request
 * creation takes the agent lock, as every control call does). */
static void *mover_main(void *arg)
{
    mover_t *m = arg;

    while (!atomic_load(&m->stop)) {
        uint64_t t0 = xt_now_ms(), dt;
        bool loading = atomic_load(&m->loading);
        xfer_status_t st = read_once(m->i, m->t, m->local);

        dt = xt_now_ms() - t0;
        if (dt > m->worst_ms)
            m->worst_ms = dt;
        if (st != XFER_OK) {
            if (atomic_fetch_add(&m->bad, 1) == 0)
                m->first_bad = st;
            continue;
        }
        m->done++;
        if (loading && atomic_load(&m->loading))
            m->during++;
    }
    return NULL;
}

static void test_huge_descending_load(void)
{
    local_target_t t;
    xfer_agent_t *i = agent_with(xt_name("hi"), 0, HUGE_REGIONS, NULL);
    const char *huge = xt_name("huge");
    mover_t m = {.i = i, .t = &t};
    pthread_t th;
    size_t len, count = 0;
    char *blob;
    xfer_status_t st;

    local_target(&t);
    m.local = xt_alloc(BUF_SIZE);
    xt_register(i, m.local, BUF_SIZE);
    xt_md_exchange(t.a, XFER_MD_ALL, i);
    /* Descending addresses: the order that made inserts quadratic. */
    blob = synth_blob(t.a, huge, 5, HUGE_REGIONS, 0x100000000ull, 1, &len);
    XT_REQUIRE(pthread_create(&th, NULL, mover_main, &m) == 0, "thread");
    while (m.done < 3 && m.bad == 0)
        xt_sleep_ms(5);
    atomic_store(&m.loading, true);
    st = xfer_md_load(i, blob, len, NULL, 0);
    atomic_store(&m.loading, false);
    /* A few more after the load, then stop. */
    {
        unsigned after = m.done + 3;

        while (m.done < after && m.bad == 0)
            xt_sleep_ms(5);
    }
    atomic_store(&m.stop, true);
    pthread_join(th, NULL);
    XT_STATUS(st, XFER_OK);
    XT_STATUS(xfer_md_regions(i, huge, NULL, 0, &count), XFER_OK);
    XT_CHECK(count == HUGE_REGIONS, "%zu regions loaded", count);
    XT_CHECK(m.bad == 0, "%u transfers failed beside the load, the first "
             "with %s", m.bad, xt_status_name(m.first_bad));
    XT_CHECK(m.during >= 1, "no transfer completed while the blob loaded "
             "(%u in all)", m.done);
    /* A bound on hanging, not on speed: a transfer waiting on a lock
     * held for the whole load waits as long as the load. */
    XT_CHECK(m.worst_ms < WAIT_MS, "a transfer took %" PRIu64 " ms beside "
             "the load", m.worst_ms);
    printf("  %u transfers, %u while %u regions loaded; the slowest took "
           "%" PRIu64 " ms\n", m.done, m.during, HUGE_REGIONS, m.worst_ms);
    /* Invalidated: freed outside the lock, transfers still fine. */
    XT_STATUS(xfer_md_invalidate(i, huge), XFER_OK);
    XT_STATUS(read_once(i, &t, m.local), XFER_OK);
    local_target_check(&t);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_fetch_published_only),
        XT_TEST(test_md_get_publish),
        XT_TEST(test_flood_one_address),
        XT_TEST(test_full_listener_fair_share),
        XT_TEST(test_emfile),
        XT_TEST(test_buffer_budget),
        XT_TEST(test_region_cap),
        XT_TEST(test_max_remote_agents),
        XT_TEST(test_open_listener_budget),
        XT_TEST(test_huge_descending_load),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"control plane", tests}};
    ssize_t n;

    if (argc == 9 && strcmp(argv[1], "--target") == 0)
        return target_main(argv);
    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    return xt_run(argv[0], suites, 1);
}
