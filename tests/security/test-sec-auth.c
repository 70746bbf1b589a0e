/* test-sec-auth.c - authentication between processes, attacked as a hostile
 * peer would: keyed agents over tcp and uds, agents without the key or with
 * another, raw clients forging and replaying the stream and listener
 * handshakes, and the listener hijack of break 1 (issue 10).  Beside every
 * attack a well-behaved peer moves data checked byte for byte, and the
 * target's canary pages are checked after it. */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/hmac.h>
#include <openssl/evp.h>

#include "core/base64.h"
#include "plugins/common/wire.h"
#include "tests/common/xt.h"

#define REG (256u << 10)        /* the child's registered region */
#define HALF (REG / 2)          /* [0, HALF) READ, [HALF, REG) WRITE */
#define GUARD 4096u             /* canary pages around it, never registered */
#define CANARY 0xc5
#define WAIT_MS 10000
#define BOUND_MS 5000           /* a refusal comes within this */
#define LINE_MAX_ (256u << 10)

static char self_exe[4096];
static char keydir[64];
static char key_a[128], key_b[128];

/* ---- the child: a target agent driven by lines on stdin --------------------- */

static int child_main(char **argv)
{
    const char *name = argv[0], *spec = argv[1], *key = argv[2];
    uint64_t seed = strtoull(argv[3], NULL, 10);
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;
    xfer_mem_t *mem = NULL;
    char addr[80] = "-", *line = malloc(LINE_MAX_), *blob = NULL;
    size_t len = 0;
    uint8_t *base = mmap(NULL, REG + 2 * GUARD, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *buf = base + GUARD;
    xfer_desc_t d = {(uintptr_t)buf, REG, 0};
    xfer_dlist_t list = {XFER_MEM_DRAM, 1, &d};
    int logfd = open(argv[4], O_WRONLY | O_CREAT | O_APPEND, 0600);

    /* What the agent logs goes to a file the parent reads. */
    if (logfd >= 0) {
        dup2(logfd, 2);
        close(logfd);
    }
    memset(base, CANARY, REG + 2 * GUARD);
    xt_fill(buf, REG, seed);
    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.listen_addr = "127.0.0.1:0";
    opts.auth_key_file = strcmp(key, "-") ? key : NULL;
    if (line == NULL || base == MAP_FAILED ||
        xfer_agent_create(&opts, &a) != XFER_OK ||
        xfer_backend_add(a, spec, NULL) != XFER_OK ||
        xfer_mem_register(a, &list, NULL, &mem) != XFER_OK ||
        xfer_agent_listen_addr(a, addr, sizeof(addr)) != XFER_OK ||
        xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) != XFER_OK) {
        printf("FAIL %s\n", xfer_last_error());
        return 1;
    }
    xfer_progress(a);
    printf("READY %s %" PRIxPTR " %" PRIx64 " %s\n", addr, (uintptr_t)buf,
           xfer_agent_epoch(a), blob);
    fflush(stdout);
    xfer_free(blob);
    while (fgets(line, LINE_MAX_, stdin) != NULL) {
        char arg[300];
        unsigned long long s, off, n, ms;

        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "canary") == 0) {
            long bad = -1;

            for (size_t i = 0; i < GUARD && bad < 0; i++)
                if (base[i] != CANARY)
                    bad = (long)i;
            for (size_t i = 0; i < GUARD && bad < 0; i++)
                if (buf[REG + i] != CANARY)
                    bad = (long)(GUARD + REG + i);
            if (bad < 0)
                printf("CANARY ok\n");
            else
                printf("CANARY bad %ld\n", bad);
        } else if (sscanf(line, "expect %llu %llu %llu", &s, &off, &n) == 3) {
            long at = xt_check(buf + off, n, s);

            if (at < 0)
                printf("MATCH\n");
            else
                printf("DIFF %ld\n", at);
        } else if (sscanf(line, "notifs %llu %llu", &n, &ms) == 2) {
            xt_notifs_t *nq = xt_notifs_new();
            size_t k = 0;
            int used = 0;

            xt_drain_until(a, nq, n, (unsigned)ms, false);
            used = snprintf(line, LINE_MAX_, "NOTIFS %zu", nq->count);
            for (k = 0; k < nq->count && used < (int)LINE_MAX_ - 600; k++)
                used += snprintf(line + used, LINE_MAX_ - (size_t)used,
                                 " %s:%.*s", nq->items[k].from,
                                 (int)nq->items[k].len,
                                 (const char *)nq->items[k].msg);
            printf("%s\n", line);
        } else if (sscanf(line, "check %299s", arg) == 1) {
            printf("%s\n", xfer_md_check(a, arg) == XFER_OK ? "LOADED"
                                                            : "ABSENT");
        } else {
            break;
        }
        fflush(stdout);
    }
    xfer_mem_deregister(a, mem);
    xfer_agent_destroy(a);
    munmap(base, REG + 2 * GUARD);
    free(line);
    return 0;
}

/* ---- keys ------------------------------------------------------------------------ */

static void keys_remove(void)
{
    char cmd[128];

    if (keydir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", keydir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", keydir);
}

static void key_write(char *path, size_t size, const char *file,
                      const char *bytes)
{
    int fd;

    snprintf(path, size, "%s/%s", keydir, file);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, bytes, strlen(bytes)) != (ssize_t)strlen(bytes))
        xt_skip("cannot write a key file in %s: %s", keydir, strerror(errno));
    close(fd);
}

static void keys_make(void)
{
    snprintf(keydir, sizeof(keydir), "/tmp/xfer-sec-auth-XXXXXX");
    if (mkdtemp(keydir) == NULL)
        xt_skip("mkdtemp: %s", strerror(errno));
    atexit(keys_remove);
    key_write(key_a, sizeof(key_a), "a", "the shared secret A, 32 bytes..\n");
    key_write(key_b, sizeof(key_b), "b", "another secret B, also 32 bytes\n");
}

/* The key a file holds, as the library reads it (one newline trimmed). */
static size_t key_bytes(const char *path, uint8_t *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    XT_REQUIRE(f != NULL, "open %s", path);
    n = fread(out, 1, cap, f);
    fclose(f);
    if (n > 0 && out[n - 1] == '\n')
        n--;
    return n;
}

static void hmac(const char *keyfile, const void *msg, size_t len,
                 uint8_t mac[32])
{
    uint8_t key[4096];
    size_t klen = key_bytes(keyfile, key, sizeof(key));
    unsigned mlen = 0;

    XT_REQUIRE(HMAC(EVP_sha256(), key, (int)klen, msg, len, mac, &mlen) &&
                   mlen == 32, "HMAC");
}

/* The transcript a handshake MAC covers (docs/wire-tcp.md): label and
 * NUL, two nonces, two (length-prefixed name, little-endian epoch). */
static size_t transcript(uint8_t *out, const char *label, const uint8_t *na,
                         const uint8_t *nb, const char *n1, uint64_t e1,
                         const char *n2, uint64_t e2)
{
    uint8_t *p = out;
    const char *names[2] = {n1, n2};
    uint64_t eps[2] = {e1, e2};

    memcpy(p, label, strlen(label) + 1);
    p += strlen(label) + 1;
    memcpy(p, na, 32);
    memcpy(p + 32, nb, 32);
    p += 64;
    for (int k = 0; k < 2; k++) {
        uint64_t le = htole64(eps[k]);

        *p++ = (uint8_t)strlen(names[k]);
        memcpy(p, names[k], strlen(names[k]));
        p += strlen(names[k]);
        memcpy(p, &le, 8);
        p += 8;
    }
    return (size_t)(p - out);
}

/* A blob signed with keyfile's key instead of whatever it carried: what
 * an attacker holding that key can make. */
static char *resign(const char *blob, const char *keyfile, size_t *len)
{
    return xt_blob_sign(blob, strlen(blob), keyfile, len);
}

/* ---- the parent's handle on a child target ----------------------------------------- */

typedef struct child {
    xt_proc_t proc;
    char addr[80];
    char log[200];
    uintptr_t buf;
    uint64_t epoch, seed;
    char *blob;
    size_t blob_len;
} child_t;

static char *child_line(child_t *c, char *line, size_t size)
{
    return xt_proc_line(&c->proc, line, size, WAIT_MS);
}

static void child_stop(void *arg)
{
    child_t *c = arg;

    xt_proc_end(&c->proc, WAIT_MS);
    unlink(c->log);
    free(c->blob);
    free(c);
}

/* A target process on spec, with the key in keyfile (NULL: none). */
static child_t *child_start(const char *spec, const char *keyfile)
{
    child_t *c = calloc(1, sizeof(*c));
    char *line = malloc(LINE_MAX_), seed[32], nm[64], *blob;
    char *argv[] = {self_exe, "--target", nm, (char *)spec,
                    (char *)(keyfile ? keyfile : "-"), seed, NULL, NULL};
    int n = 0;

    XT_REQUIRE(c != NULL && line != NULL, "out of memory");
    snprintf(nm, sizeof(nm), "%s", xt_name("tgt"));
    snprintf(c->log, sizeof(c->log), "%s/%s.log", keydir, nm);
    argv[6] = c->log;
    c->seed = xt_seed();
    snprintf(seed, sizeof(seed), "%" PRIu64, c->seed);
    xt_proc_start(&c->proc, nm, argv);
    xt_defer(child_stop, c);
    child_line(c, line, LINE_MAX_);
    XT_REQUIRE(sscanf(line, "READY %79s %" SCNxPTR " %" SCNx64 " %n", c->addr,
                      &c->buf, &c->epoch, &n) == 3 && n > 0,
               "child %s: '%.300s'", nm, line);
    blob = line + n;
    c->blob = strdup(blob);
    c->blob_len = strlen(blob);
    free(line);
    return c;
}

static const char *child_ask(child_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const char *child_ask(child_t *c, const char *fmt, ...)
{
    static char line[4096];
    va_list ap;

    va_start(ap, fmt);
    vfprintf(c->proc.in, fmt, ap);
    va_end(ap);
    fputc('\n', c->proc.in);
    fflush(c->proc.in);
    return child_line(c, line, sizeof(line));
}

static void child_canary(child_t *c)
{
    const char *r = child_ask(c, "canary");

    XT_CHECK(strcmp(r, "CANARY ok") == 0, "target %s: %s", c->proc.name, r);
}

/* Whether the child's log holds text (its lines arrive asynchronously:
 * wait up to WAIT_MS). */
static bool child_logged(child_t *c, const char *text)
{
    uint64_t end = xt_now_ms() + WAIT_MS;

    do {
        FILE *f = fopen(c->log, "r");
        char l[2048];
        bool found = false;

        while (f != NULL && !found && fgets(l, sizeof(l), f) != NULL)
            found = strstr(l, text) != NULL;
        if (f != NULL)
            fclose(f);
        if (found)
            return true;
        xt_sleep_ms(20);
    } while (xt_now_ms() < end);
    return false;
}

/* ---- agents of the parent ---------------------------------------------------------- */

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

static xfer_agent_t *agent_make(const char *name, const char *spec,
                                const char *keyfile, bool listen)
{
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.auth_key_file = keyfile;
    opts.listen_addr = listen ? "127.0.0.1:0" : NULL;
    XT_STATUS_FATAL(xfer_agent_create(&opts, &a), XFER_OK);
    xt_defer(agent_free, a);
    if (spec != NULL)
        XT_STATUS_FATAL(xfer_backend_add(a, spec, NULL), XFER_OK);
    return a;
}

/* The well-behaved peer: a READ of the child's pattern and a WRITE of a
 * fresh one with a notification, each checked byte for byte (the
 * notification too, with the sender's name), then the canaries. */
static void good_peer(xfer_agent_t *p, child_t *c, uint8_t *local)
{
    xfer_desc_t rl = {(uintptr_t)local, HALF, 0}, rr = {c->buf, HALF, 0};
    xfer_desc_t wl = {(uintptr_t)local + HALF, HALF, 0};
    xfer_desc_t wr = {c->buf + HALF, HALF, 0};
    xfer_dlist_t rll = xt_dlist(&rl, 1), rrl = xt_dlist(&rr, 1);
    xfer_dlist_t wll = xt_dlist(&wl, 1), wrl = xt_dlist(&wr, 1);
    uint64_t seed = xt_seed();
    xfer_req_t *r = NULL, *w = NULL;
    char note[64], want[400];
    const char *got;

    snprintf(note, sizeof(note), "note-%" PRIu64, seed % 100000);
    memset(local, 0, HALF);
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_READ, &rll, &rrl, c->proc.name,
                                    NULL, &r), XFER_OK);
    xt_req_defer(r);
    XT_STATUS(xt_post_wait(r, NULL, 0, WAIT_MS), XFER_OK);
    XT_CHECK(xt_check(local, HALF, c->seed) < 0, "READ from %s differs",
             c->proc.name);
    xt_fill(local + HALF, HALF, seed);
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_WRITE, &wll, &wrl, c->proc.name,
                                    NULL, &w), XFER_OK);
    xt_req_defer(w);
    XT_STATUS(xt_post_wait(w, note, strlen(note), WAIT_MS), XFER_OK);
    got = child_ask(c, "expect %" PRIu64 " %u %u", seed, HALF, HALF);
    XT_CHECK(strcmp(got, "MATCH") == 0, "WRITE to %s: %s", c->proc.name, got);
    snprintf(want, sizeof(want), "NOTIFS 1 %s:%s", xfer_agent_name(p), note);
    got = child_ask(c, "notifs 1 %u", WAIT_MS);
    XT_CHECK(strcmp(got, want) == 0, "notification: '%s', want '%s'", got,
             want);
    child_canary(c);
    xt_req_release(r);
    xt_req_release(w);
}

/* ---- 1. keyed agents over tcp and uds -------------------------------------------- */

static void keyed_pair(const char *spec)
{
    child_t *c = child_start(spec, key_a);
    xfer_agent_t *p = agent_make(xt_name("ini"), spec, key_a, false);
    uint8_t *local = xt_alloc(REG);
    const char *got;
    char want[300];

    xt_register(p, local, REG);
    XT_STATUS_FATAL(xfer_md_load(p, c->blob, c->blob_len, NULL, 0), XFER_OK);
    XT_STATUS(xfer_md_connect(p, c->proc.name, WAIT_MS), XFER_OK);
    good_peer(p, c, local);
    /* A notification alone carries the name the handshake proved. */
    XT_STATUS(xfer_notif_send(p, c->proc.name, "alone", 5, NULL), XFER_OK);
    snprintf(want, sizeof(want), "NOTIFS 1 %s:alone", xfer_agent_name(p));
    got = child_ask(c, "notifs 1 %u", WAIT_MS);
    XT_CHECK(strcmp(got, want) == 0, "'%s', want '%s'", got, want);
    good_peer(p, c, local);
}

static void test_keyed_tcp(void) { keyed_pair("tcp"); }
static void test_keyed_uds(void) { keyed_pair("uds"); }

/* ---- 2. settings that differ fail clearly, both ways ----------------------------- */

/* Connect and transfer from a, which cannot pass c's handshake: both end
 * in XFER_ERR_AUTH with the sentence, within the bound. */
static void refused_peer(xfer_agent_t *a, child_t *c, const char *sentence)
{
    uint8_t *local = xt_alloc(4096);
    xfer_desc_t l = {(uintptr_t)local, 4096, 0}, r = {c->buf + HALF, 4096, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    uint64_t t0 = xt_now_ms();

    xt_register(a, local, 4096);
    XT_STATUS(xfer_md_connect(a, c->proc.name, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS(sentence);
    XT_CHECK(xt_now_ms() - t0 < BOUND_MS, "connect refused after %" PRIu64
             " ms", xt_now_ms() - t0);
    memset(local, 0x77, 4096);
    t0 = xt_now_ms();
    XT_STATUS_FATAL(xfer_req_create(a, XFER_OP_WRITE, &ll, &rl, c->proc.name,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    XT_STATUS(xt_post_wait(req, "x", 1, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS(sentence);
    XT_CHECK(xt_now_ms() - t0 < BOUND_MS, "WRITE refused after %" PRIu64
             " ms", xt_now_ms() - t0);
}

static void mismatch(const char *spec)
{
    child_t *c = child_start(spec, key_a);
    child_t *open_t = child_start(spec, NULL);
    xfer_agent_t *good = agent_make(xt_name("good"), spec, key_a, false);
    xfer_agent_t *nokey = agent_make(xt_name("nokey"), spec, NULL, false);
    xfer_agent_t *wrong = agent_make(xt_name("wrong"), spec, key_b, false);
    xfer_agent_t *keyed = agent_make(xt_name("keyed"), spec, key_a, false);
    uint8_t *local = xt_alloc(REG);
    size_t len;
    char *blob;

    xt_register(good, local, REG);
    XT_STATUS_FATAL(xfer_md_load(good, c->blob, c->blob_len, NULL, 0),
                    XFER_OK);
    good_peer(good, c, local);

    /* No key: it can read the signed blob, not pass the handshake. */
    XT_STATUS_FATAL(xfer_md_load(nokey, c->blob, c->blob_len, NULL, 0),
                    XFER_OK);
    refused_peer(nokey, c, "the target requires authentication; this agent "
                           "has no auth key");
    XT_CHECK(child_logged(c, "has no auth key; this agent requires "
                             "authentication"),
             "target %s logged no refusal of the keyless agent", c->proc.name);
    good_peer(good, c, local);

    /* Another key: its blob would not even load without a signature of
     * its own, so give it one; the handshake still fails. */
    XT_STATUS(xfer_md_load(wrong, c->blob, c->blob_len, NULL, 0),
              XFER_ERR_AUTH);
    XT_ERR_HAS("is not signed by this agent's secret");
    blob = resign(c->blob, key_b, &len);
    XT_STATUS_FATAL(xfer_md_load(wrong, blob, len, NULL, 0), XFER_OK);
    refused_peer(wrong, c, "the target did not prove the shared secret");
    XT_CHECK(child_logged(c, "the two hold different keys"),
             "target %s logged no refusal of the other key", c->proc.name);
    good_peer(good, c, local);

    /* A target without a key: a keyed initiator refuses it. */
    blob = resign(open_t->blob, key_a, &len);
    XT_STATUS_FATAL(xfer_md_load(keyed, blob, len, NULL, 0), XFER_OK);
    refused_peer(keyed, open_t, "the target did not prove the shared secret "
                                "(it has no auth key)");
    XT_CHECK(child_logged(open_t, "requires authentication; this agent has "
                                  "no auth key"),
             "target %s logged no refusal of the keyed agent",
             open_t->proc.name);
    child_canary(open_t);
    good_peer(good, c, local);
}

static void test_mismatch_tcp(void) { mismatch("tcp"); }
static void test_mismatch_uds(void) { mismatch("uds"); }

/* ---- raw stream clients ---------------------------------------------------------- */

/* The child's connection info for plugin, decoded from its blob. */
static size_t conn_info(child_t *c, const char *plugin, uint8_t *out,
                        size_t cap)
{
    json_t *root = xt_blob_parse(c->blob, c->blob_len), *b;
    size_t i;

    json_array_foreach(json_object_get(root, "backends"), i, b) {
        if (strcmp(json_string_value(json_object_get(b, "plugin")), plugin))
            continue;
        long n = xfer__b64_decode(
            json_string_value(json_object_get(b, "conn")), out, cap);

        XT_REQUIRE(n > 0, "bad conn info");
        return (size_t)n;
    }
    XT_FAIL_FATAL("no %s backend in %s's blob", plugin, c->proc.name);
}

static uint64_t region_key(child_t *c)
{
    json_t *root = xt_blob_parse(c->blob, c->blob_len);
    uint64_t key = 0;

    XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0), "key"),
                           &key), "no key");
    return key;
}

static int raw_tcp(unsigned port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    XT_REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
               "connect port %u: %s", port, strerror(errno));
    return fd;
}

/* A raw connection to the child's stream backend (tcp or uds). */
static int raw_stream(child_t *c, const char *plugin)
{
    uint8_t info[512];
    size_t n = conn_info(c, plugin, info, sizeof(info));

    if (strcmp(plugin, "tcp") == 0) {
        uint16_t port;

        memcpy(&port, info + 6, 2);
        return raw_tcp(ntohs(port));
    } else {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        uint16_t plen = (uint16_t)(info[6] | info[7] << 8);
        socklen_t sl;
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);

        XT_REQUIRE(n >= 116u + plen && plen < sizeof(un.sun_path),
                   "bad uds info");
        if (info[5]) {
            memcpy(un.sun_path + 1, info + 116, plen);
            sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                             plen);
        } else {
            memcpy(un.sun_path, info + 116, plen);
            sl = sizeof(un);
        }
        XT_REQUIRE(fd >= 0 && connect(fd, (struct sockaddr *)&un, sl) == 0,
                   "connect uds: %s", strerror(errno));
        return fd;
    }
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the target may have closed already */
        b += k;
        n -= (size_t)k;
    }
}

/* Read exactly n bytes (noting any descriptor that came along); -1 on
 * end of stream or WAIT_MS of silence. */
static int recv_n(int fd, void *p, size_t n, int *fds)
{
    uint8_t *b = p;

    while (n) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * 8)];
        } cm;
        struct iovec iov = {b, n};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1,
                           .msg_control = cm.b,
                           .msg_controllen = sizeof(cm.b)};
        struct pollfd pf = {fd, POLLIN, 0};
        ssize_t k;

        if (poll(&pf, 1, WAIT_MS) != 1)
            return -1;
        k = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
        if (k <= 0)
            return -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
            if (h->cmsg_type == SCM_RIGHTS) {
                int got;

                memcpy(&got, CMSG_DATA(h), sizeof(got));
                close(got);
                (*fds)++;
            }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static void hdr_put(uint8_t *out, uint8_t type, uint8_t flags, uint32_t seg,
                    uint64_t tag, uint64_t arg0, uint64_t arg1, uint64_t len)
{
    xfer_wire_hdr_t h = {type, flags, 0, seg, tag, arg0, arg1, len}, w;

    /* out follows a name: any alignment. */
    xfer_wire_encode(&w, &h);
    memcpy(out, &w, sizeof(w));
}

/* What the target sent until it closed: frame types in order (a body
 * skipped), descriptors, and whether it closed within WAIT_MS. */
typedef struct seen {
    uint8_t types[16];
    size_t n;
    int fds;
    bool closed;
    int64_t status[16];
} seen_t;

static void drain(int fd, seen_t *s)
{
    for (;;) {
        uint8_t h[XFER_WIRE_HDR_SIZE], body[512];
        xfer_wire_hdr_t w;
        uint8_t c;

        if (recv_n(fd, h, sizeof(h), &s->fds) < 0) {
            struct pollfd pf = {fd, POLLIN, 0};

            s->closed = poll(&pf, 1, 0) == 1 && recv(fd, &c, 1, 0) <= 0;
            if (!s->closed)
                s->closed = recv(fd, &c, 1, MSG_DONTWAIT) == 0 ||
                            (errno != EAGAIN && errno != EWOULDBLOCK);
            return;
        }
        xfer_wire_decode(&w, h);
        if (s->n < 16) {
            s->status[s->n] = (int64_t)w.arg1;
            s->types[s->n++] = w.type;
        }
        if (w.len > sizeof(body) || (w.len && recv_n(fd, body, (size_t)w.len,
                                                      &s->fds) < 0)) {
            s->closed = true;
            return;
        }
    }
}

/* Whether s saw a frame of type t. */
static bool saw(const seen_t *s, uint8_t t)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->types[i] == t)
            return true;
    return false;
}

/* A forged HELLO naming `name`, F_AUTH with a nonce or not. */
static size_t hello_make(uint8_t *out, const char *name, uint64_t epoch,
                         uint64_t target_epoch, bool auth,
                         const uint8_t *nonce)
{
    size_t n = strlen(name), len = n + (auth ? 32 : 0);

    hdr_put(out, XFER_WIRE_HELLO, auth ? XFER_WIRE_F_AUTH : 0,
            XFER_WIRE_VERSION, XFER_WIRE_MAGIC, epoch, target_epoch, len);
    memcpy(out + XFER_WIRE_HDR_SIZE, name, n);
    if (auth)
        memcpy(out + XFER_WIRE_HDR_SIZE + n, nonce, 32);
    return XFER_WIRE_HDR_SIZE + len;
}

/* A READ_REQ for the child's region: served, it would answer READ_RESP. */
static size_t read_req(uint8_t *out, child_t *c)
{
    hdr_put(out, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, 1, region_key(c),
            c->buf, 64);
    return XFER_WIRE_HDR_SIZE;
}

/* One forged connection: bytes sent at once, everything the target says
 * until it closes. */
static seen_t forge(child_t *c, const char *plugin, const void *bytes,
                    size_t n)
{
    int fd = raw_stream(c, plugin);
    seen_t s;

    memset(&s, 0, sizeof(s));
    send_all(fd, bytes, n);
    drain(fd, &s);
    close(fd);
    return s;
}

static void forgeries(const char *plugin)
{
    const char *spec = plugin;
    child_t *c = child_start(spec, key_a);
    xfer_agent_t *good = agent_make(xt_name("good"), spec, key_a, false);
    uint8_t *local = xt_alloc(REG), nonce[32], b[2048];
    const char *victim = xfer_agent_name(good);
    size_t n;
    seen_t s;

    for (int i = 0; i < 32; i++)
        nonce[i] = (uint8_t)(i * 7 + 1);
    xt_register(good, local, REG);
    XT_STATUS_FATAL(xfer_md_load(good, c->blob, c->blob_len, NULL, 0),
                    XFER_OK);
    good_peer(good, c, local);

    /* A HELLO with a valid agent's name and the real epoch, no proof:
     * refused at HELLO, nothing served, no memory shared. */
    n = hello_make(b, victim, 1, c->epoch, false, nonce);
    n += read_req(b + n, c);
    s = forge(c, plugin, b, n);
    XT_CHECK(s.closed && s.n == 1 && s.types[0] == XFER_WIRE_HELLO_ACK &&
                 s.status[0] == XFER_ERR_AUTH && s.fds == 0,
             "HELLO without proof: %zu frames (first %u, status %lld), %d "
             "fds, closed %d", s.n, s.types[0], (long long)s.status[0], s.fds,
             s.closed);
    good_peer(good, c, local);

    /* The same with F_AUTH and a request behind it at once: at most the
     * challenge comes back. */
    n = hello_make(b, victim, 1, c->epoch, true, nonce);
    n += read_req(b + n, c);
    s = forge(c, plugin, b, n);
    XT_CHECK(s.closed && !saw(&s, XFER_WIRE_READ_RESP) && s.fds == 0 &&
                 s.n <= 1,
             "requests before AUTH: %zu frames, %d fds, closed %d", s.n,
             s.fds, s.closed);
    /* Waiting for the challenge first changes nothing. */
    {
        int fd = raw_stream(c, plugin), fds = 0;
        uint8_t ack[XFER_WIRE_HDR_SIZE + 64];
        xfer_wire_hdr_t h;

        n = hello_make(b, victim, 1, c->epoch, true, nonce);
        send_all(fd, b, n);
        XT_REQUIRE(recv_n(fd, ack, sizeof(ack), &fds) == 0, "no challenge");
        xfer_wire_decode(&h, ack);
        XT_CHECK(h.type == XFER_WIRE_HELLO_ACK && h.arg1 == 0 &&
                     (h.flags & XFER_WIRE_F_AUTH) && h.len == 64,
                 "challenge: type %u flags %u len %llu", h.type, h.flags,
                 (unsigned long long)h.len);
        memset(&s, 0, sizeof(s));
        send_all(fd, b + n, read_req(b + n, c));
        drain(fd, &s);
        close(fd);
        XT_CHECK(s.closed && s.n == 0 && fds + s.fds == 0,
                 "a request after the challenge: %zu frames, %d fds, closed "
                 "%d", s.n, fds + s.fds, s.closed);
    }
    good_peer(good, c, local);

    /* A MAC that is not one, then a request. */
    n = hello_make(b, victim, 1, c->epoch, true, nonce);
    hdr_put(b + n, XFER_WIRE_AUTH, 0, 0, 0, 0, 0, 32);
    memset(b + n + XFER_WIRE_HDR_SIZE, 0x42, 32);
    n += XFER_WIRE_HDR_SIZE + 32;
    n += read_req(b + n, c);
    s = forge(c, plugin, b, n);
    XT_CHECK(s.closed && !saw(&s, XFER_WIRE_READ_RESP) && s.fds == 0 &&
                 saw(&s, XFER_WIRE_AUTH_ACK) &&
                 s.status[s.n - 1] == XFER_ERR_AUTH,
             "a forged MAC: %zu frames, %d fds, closed %d", s.n, s.fds,
             s.closed);
    XT_CHECK(child_logged(c, "did not prove the shared secret"),
             "no log line for the forged MAC");
    good_peer(good, c, local);

    /* A name that would forge a log line: a violation, no answer. */
    n = hello_make(b, "evil\nxfer WARN [x]: forged", 1, c->epoch, true,
                   nonce);
    s = forge(c, plugin, b, n);
    XT_CHECK(s.closed && s.n == 0 && s.fds == 0, "a name with a newline: "
             "%zu frames, closed %d", s.n, s.closed);
    XT_CHECK(child_logged(c, "agent name contains byte 0x0a at 4"),
             "no log line for the name with a newline");

    /* Random bytes where the handshake should be. */
    {
        uint64_t rs = xt_seed();

        printf("  forgeries %s: seed %" PRIu64 "\n", plugin, rs);
        for (int k = 0; k < 20; k++) {
            n = hello_make(b, victim, 1, c->epoch, true, nonce);
            for (size_t i = 0; i < 200; i++)
                b[n + i] = (uint8_t)xt_rand(&rs);
            s = forge(c, plugin, b, n + 200);
            XT_CHECK(s.closed && !saw(&s, XFER_WIRE_READ_RESP) &&
                         !saw(&s, XFER_WIRE_ACK) && s.fds == 0,
                     "random AUTH %d: %zu frames, %d fds", k, s.n, s.fds);
        }
    }
    good_peer(good, c, local);
    XT_CHECK(strcmp(child_ask(c, "expect %" PRIu64 " 0 %u", c->seed, HALF),
                    "MATCH") == 0, "the READ half changed");
}

static void test_forgeries_tcp(void) { forgeries("tcp"); }
static void test_forgeries_uds(void) { forgeries("uds"); }

/* ---- replay: an AUTH seen on the wire does not open another connection ---------- */

typedef struct relay {
    int lfd;
    unsigned port, to;
    pthread_t th;
    atomic_bool stop;
    uint8_t rec[1 << 16];      /* initiator -> target bytes */
    _Atomic size_t nrec;
} relay_t;

/* Forward one accepted connection to the target both ways, recording
 * what the initiator sends. */
static void *relay_main(void *arg)
{
    relay_t *r = arg;
    int a = -1, t = -1;

    while (!atomic_load(&r->stop) && a < 0) {
        struct pollfd pf = {r->lfd, POLLIN, 0};

        if (poll(&pf, 1, 100) == 1)
            a = accept(r->lfd, NULL, NULL);
    }
    if (a >= 0)
        t = raw_tcp(r->to);
    while (!atomic_load(&r->stop) && a >= 0) {
        struct pollfd pf[2] = {{a, POLLIN, 0}, {t, POLLIN, 0}};
        uint8_t buf[65536];
        ssize_t k;

        if (poll(pf, 2, 100) <= 0)
            continue;
        if (pf[0].revents) {
            k = recv(a, buf, sizeof(buf), 0);
            if (k <= 0)
                break;
            if (r->nrec + (size_t)k <= sizeof(r->rec)) {
                memcpy(r->rec + r->nrec, buf, (size_t)k);
                atomic_store(&r->nrec, r->nrec + (size_t)k);
            }
            send_all(t, buf, (size_t)k);
        }
        if (pf[1].revents) {
            k = recv(t, buf, sizeof(buf), 0);
            if (k <= 0)
                break;
            send_all(a, buf, (size_t)k);
        }
    }
    if (a >= 0)
        close(a);
    if (t >= 0)
        close(t);
    return NULL;
}

static void relay_stop(void *arg)
{
    relay_t *r = arg;

    atomic_store(&r->stop, true);
    pthread_join(r->th, NULL);
    close(r->lfd);
    free(r);
}

static relay_t *relay_start(unsigned to)
{
    relay_t *r = calloc(1, sizeof(*r));
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t sl = sizeof(a);

    XT_REQUIRE(r != NULL, "out of memory");
    r->to = to;
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    XT_REQUIRE(r->lfd >= 0 && bind(r->lfd, (struct sockaddr *)&a,
                                   sizeof(a)) == 0 &&
                   listen(r->lfd, 4) == 0 &&
                   getsockname(r->lfd, (struct sockaddr *)&a, &sl) == 0,
               "relay: %s", strerror(errno));
    r->port = ntohs(a.sin_port);
    XT_REQUIRE(pthread_create(&r->th, NULL, relay_main, r) == 0, "thread");
    xt_defer(relay_stop, r);
    return r;
}

/* c's blob with its tcp port replaced by port, signed again with key A
 * (the harness knows it; the attacker below does not use it). */
static char *blob_via(child_t *c, unsigned port, size_t *len)
{
    json_t *root = xt_blob_parse(c->blob, c->blob_len), *b;
    uint8_t info[64];
    char enc[128];
    size_t i, n;

    json_object_del(root, "mac");
    json_array_foreach(json_object_get(root, "backends"), i, b) {
        if (strcmp(json_string_value(json_object_get(b, "plugin")), "tcp"))
            continue;
        n = (size_t)xfer__b64_decode(
            json_string_value(json_object_get(b, "conn")), info, sizeof(info));
        info[6] = (uint8_t)(port >> 8);
        info[7] = (uint8_t)port;
        xfer__b64_encode(info, n, enc);
        json_object_set_new(b, "conn", json_string(enc));
    }
    return resign(xt_blob_dump(root, &n), key_a, len);
}

static void test_replay_tcp(void)
{
    child_t *c = child_start("tcp", key_a);
    uint8_t info[64], *local = xt_alloc(REG), *glocal = xt_alloc(REG);
    uint8_t b[1024];
    uint16_t port;
    relay_t *r;
    xfer_agent_t *seen, *good;
    size_t len, hl, al;
    char *blob;
    xfer_wire_hdr_t h;
    seen_t s;

    conn_info(c, "tcp", info, sizeof(info));
    memcpy(&port, info + 6, 2);
    r = relay_start(ntohs(port));
    /* A keyed agent whose connection an observer records. */
    seen = agent_make(xt_name("seen"), "tcp", key_a, false);
    good = agent_make(xt_name("good"), "tcp", key_a, false);
    xt_register(seen, local, REG);
    xt_register(good, glocal, REG);
    blob = blob_via(c, r->port, &len);
    XT_STATUS_FATAL(xfer_md_load(seen, blob, len, NULL, 0), XFER_OK);
    good_peer(seen, c, local);
    /* The recording starts HELLO (with its nonce), then AUTH. */
    XT_REQUIRE(atomic_load(&r->nrec) > 2 * XFER_WIRE_HDR_SIZE, "nothing "
               "recorded");
    xfer_wire_decode(&h, r->rec);
    XT_REQUIRE(h.type == XFER_WIRE_HELLO && (h.flags & XFER_WIRE_F_AUTH),
               "recorded a HELLO without F_AUTH");
    hl = XFER_WIRE_HDR_SIZE + (size_t)h.len;
    xfer_wire_decode(&h, r->rec + hl);
    XT_REQUIRE(h.type == XFER_WIRE_AUTH && h.len == 32, "recorded no AUTH "
               "after the HELLO (type %u)", h.type);
    al = XFER_WIRE_HDR_SIZE + 32;
    /* Replayed whole on a connection of its own, with a request. */
    memcpy(b, r->rec, hl + al);
    len = hl + al + read_req(b + hl + al, c);
    s = forge(c, "tcp", b, len);
    XT_CHECK(s.closed && !saw(&s, XFER_WIRE_READ_RESP) &&
                 saw(&s, XFER_WIRE_AUTH_ACK) &&
                 s.status[s.n - 1] == XFER_ERR_AUTH,
             "replayed AUTH: %zu frames, closed %d", s.n, s.closed);
    /* The agent it came from, and another, still work. */
    XT_STATUS_FATAL(xfer_md_load(good, c->blob, c->blob_len, NULL, 0),
                    XFER_OK);
    good_peer(good, c, glocal);
    good_peer(seen, c, local);
}

/* ---- 3. break 1: the listener ------------------------------------------------------ */

/* The victim V (this process, with a listener) loaded the real peer R
 * (a child); an impostor sends R's name with a newer epoch and its own
 * endpoint, and asks V to forget R. */
static void test_break1_open(void)
{
    child_t *r = child_start("tcp", NULL);
    xfer_agent_t *v = agent_make(xt_name("victim"), "tcp", NULL, true);
    xfer_agent_t *imp = agent_make(r->proc.name, "tcp", NULL, false);
    xfer_agent_t *fresh = agent_make(xt_name("fresh"), "tcp", NULL, false);
    uint8_t *local = xt_alloc(REG), *trap = xt_alloc(REG);
    char vaddr[80];

    XT_STATUS_FATAL(xfer_agent_listen_addr(v, vaddr, sizeof(vaddr)), XFER_OK);
    xt_register(v, local, REG);
    xt_register(imp, trap, REG);
    XT_STATUS_FATAL(xfer_md_load(v, r->blob, r->blob_len, NULL, 0), XFER_OK);
    good_peer(v, r, local);
    XT_CHECK(xfer_agent_epoch(imp) > r->epoch, "the impostor is not newer");
    XT_STATUS(xfer_md_send(imp, vaddr, XFER_MD_ALL, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS("replacing loaded agent", r->proc.name, "through the listener "
               "needs authentication; the application can load it itself");
    XT_STATUS(xfer_md_send_invalidate(imp, vaddr, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS("invalidating", r->proc.name, "needs authentication");
    XT_STATUS(xfer_md_check(v, r->proc.name), XFER_OK);
    /* Transfers still go to the real peer, and none to the impostor. */
    good_peer(v, r, local);
    for (size_t i = 0; i < REG; i++)
        if (trap[i] != 0) {
            XT_FAIL("the impostor's memory changed at %zu", i);
            break;
        }
    /* A name nobody holds is still introduced through the listener. */
    XT_STATUS(xfer_md_send(fresh, vaddr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_check(v, xfer_agent_name(fresh)), XFER_OK);
}

/* ---- the listener's wire, spoken raw ---------------------------------------------- */

static int ls_connect(const char *addr)
{
    struct timeval tv = {WAIT_MS / 1000, 0};
    int fd = raw_tcp((unsigned)atoi(strrchr(addr, ':') + 1));

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void ls_send(int fd, unsigned type, const void *p, size_t n)
{
    uint8_t h[12];
    uint32_t v;

    v = htonl(0x58464d44u);
    memcpy(h, &v, 4);
    h[4] = 0, h[5] = 1;
    h[6] = (uint8_t)(type >> 8), h[7] = (uint8_t)type;
    v = htonl((uint32_t)n);
    memcpy(h + 8, &v, 4);
    send_all(fd, h, 12);
    send_all(fd, p, n);
}

/* The reply: its type, payload in buf (cap bytes), length; 0 when the
 * connection ended instead. */
static unsigned ls_recv(int fd, uint8_t *buf, size_t cap, size_t *len)
{
    uint8_t h[12];
    uint32_t n;
    int fds = 0;

    if (recv_n(fd, h, 12, &fds) < 0)
        return 0;
    memcpy(&n, h + 8, 4);
    n = ntohl(n);
    XT_REQUIRE(n <= cap, "reply of %u bytes", n);
    if (recv_n(fd, buf, n, &fds) < 0)
        return 0;
    *len = n;
    return (unsigned)h[6] << 8 | h[7];
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Authenticate to the listener as (name, epoch) with the key in keyfile,
 * as docs/wire-listener.md says; true when it answered OK.  *proved: its
 * CHALLENGE carried a MAC that checks under that key. */
static bool ls_auth(int fd, const char *keyfile, const char *name,
                    uint64_t epoch, bool *proved)
{
    uint8_t hello[300], rep[600], t[700], mac[32], nc[32];
    size_t n = strlen(name), len = 0, tl;
    char sname[256];
    uint64_t sepoch;

    for (int i = 0; i < 32; i++)
        nc[i] = (uint8_t)(0x30 + i);
    memcpy(hello, nc, 32);
    put_be64(hello + 32, epoch);
    memcpy(hello + 40, name, n);
    ls_send(fd, 4, hello, 40 + n);
    if (ls_recv(fd, rep, sizeof(rep), &len) != 0x84 || len < 73)
        return false;
    sepoch = get_be64(rep + 64);
    memcpy(sname, rep + 72, len - 72);
    sname[len - 72] = '\0';
    /* The listener proved the key over our nonce. */
    tl = transcript(t, "xfer-listen-challenge", nc, rep, sname, sepoch, name,
                    epoch);
    hmac(keyfile, t, tl, mac);
    *proved = memcmp(mac, rep + 32, 32) == 0;
    tl = transcript(t, "xfer-listen-auth", rep, nc, name, epoch, sname,
                    sepoch);
    hmac(keyfile, t, tl, mac);
    ls_send(fd, 5, mac, 32);
    return ls_recv(fd, rep, sizeof(rep), &len) == 0x81;
}

/* Expect an ERR reply with status st and text in its sentence. */
static void ls_expect_err(int fd, xfer_status_t st, const char *text)
{
    uint8_t rep[700];
    size_t len = 0;
    unsigned type = ls_recv(fd, rep, sizeof(rep) - 1, &len);
    int32_t code = 0;

    rep[len] = '\0';
    if (type == 0x83 && len >= 4) {
        uint32_t v;

        memcpy(&v, rep, 4);
        code = (int32_t)ntohl(v);
    }
    XT_CHECK(type == 0x83 && code == st && strstr((char *)rep + 4, text),
             "reply 0x%x status %d '%s', wanted %d '%s'", type, (int)code,
             len >= 4 ? (char *)rep + 4 : "", (int)st, text);
}

/* Break 1 with a secret on both real agents: nobody without the key gets
 * through, and a key holder still cannot send what the key did not sign
 * or speak for another name. */
static void test_break1_keyed(void)
{
    child_t *r = child_start("tcp", key_a);
    xfer_agent_t *v = agent_make(xt_name("victim"), "tcp", key_a, true);
    xfer_agent_t *imp = agent_make(r->proc.name, "tcp", NULL, false);
    xfer_agent_t *wimp = agent_make(r->proc.name, "tcp", key_b, false);
    xfer_agent_t *peer = agent_make(xt_name("peer"), "tcp", key_a, false);
    uint8_t *local = xt_alloc(REG);
    char vaddr[80], *blob;
    bool proved = false;
    size_t len;
    int fd;

    XT_STATUS_FATAL(xfer_agent_listen_addr(v, vaddr, sizeof(vaddr)), XFER_OK);
    xt_register(v, local, REG);
    XT_STATUS_FATAL(xfer_md_load(v, r->blob, r->blob_len, NULL, 0), XFER_OK);
    good_peer(v, r, local);
    /* Without the key, with another: refused, both ways said. */
    XT_STATUS(xfer_md_send(imp, vaddr, XFER_MD_ALL, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS("requires authentication", "did not authenticate");
    XT_STATUS(xfer_md_send_invalidate(imp, vaddr, WAIT_MS), XFER_ERR_AUTH);
    XT_STATUS(xfer_md_fetch(imp, vaddr, NULL, WAIT_MS, NULL, 0),
              XFER_ERR_AUTH);
    XT_STATUS(xfer_md_send(wimp, vaddr, XFER_MD_ALL, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS("did not prove the shared secret");
    good_peer(v, r, local);

    /* A raw client that holds the key and proves R's name: an unsigned
     * blob of a newer R, then one with its MAC bent, are refused. */
    fd = ls_connect(vaddr);
    XT_REQUIRE(ls_auth(fd, key_a, r->proc.name, r->epoch + 1, &proved),
               "no auth");
    XT_CHECK(proved, "the listener's MAC does not check");
    blob = xt_md_get(imp, XFER_MD_ALL, NULL, 0, &len);
    ls_send(fd, 1, blob, len);
    ls_expect_err(fd, XFER_ERR_AUTH, "is not signed by this agent's secret");
    blob = resign(blob, key_a, &len);
    blob[len - 3] = blob[len - 3] == '0' ? '1' : '0';
    ls_send(fd, 1, blob, len);
    ls_expect_err(fd, XFER_ERR_AUTH, "is not signed by this agent's secret");
    /* ... and it may not invalidate another agent than itself. */
    ls_send(fd, 3, xfer_agent_name(peer), strlen(xfer_agent_name(peer)));
    ls_expect_err(fd, XFER_ERR_AUTH, "may invalidate only itself");
    close(fd);
    /* A client that answers the challenge with a wrong MAC. */
    fd = ls_connect(vaddr);
    XT_CHECK(!ls_auth(fd, key_b, "mallory", 7, &proved), "a wrong key "
             "authenticated");
    XT_CHECK(!proved, "the listener's MAC checks under another key");
    close(fd);
    /* Requests before authenticating, raw: refused. */
    fd = ls_connect(vaddr);
    ls_send(fd, 2, "", 0);
    ls_expect_err(fd, XFER_ERR_AUTH, "requires authentication");
    close(fd);
    XT_STATUS(xfer_md_check(v, r->proc.name), XFER_OK);
    good_peer(v, r, local);

    /* Key holders work as before: send, fetch, invalidate themselves. */
    XT_STATUS(xfer_md_send(peer, vaddr, XFER_MD_ALL, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_check(v, xfer_agent_name(peer)), XFER_OK);
    XT_STATUS(xfer_md_fetch(peer, vaddr, xfer_agent_name(v), WAIT_MS, NULL,
                            0), XFER_OK);
    XT_STATUS(xfer_md_send_invalidate(peer, vaddr, WAIT_MS), XFER_OK);
    XT_CHECK(xfer_md_check(v, xfer_agent_name(peer)) == XFER_ERR_NOT_FOUND,
             "the keyed invalidation did not take");
    child_canary(r);
}

/* ---- 4. listening beyond loopback without a secret: said once --------------------- */

static size_t count(const char *text, const char *what)
{
    size_t n = 0;

    for (const char *p = text; (p = strstr(p, what)) != NULL; p++)
        n++;
    return n;
}

static void test_warn_open(void)
{
    const char *lwarn = "without authentication: anyone who reaches it can "
                        "load metadata";
    const char *twarn = "without authentication: anyone who reaches it can "
                        "claim any agent's name";
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;
    char *log;

    xfer_agent_opts_init(&opts);
    opts.name = xt_name("open");
    opts.listen_addr = "0.0.0.0:0";
    xt_stderr_begin();
    if (xfer_agent_create(&opts, &a) == XFER_OK) {
        xfer_backend_add(a, "tcp:addr=0.0.0.0", NULL);
        xfer_agent_destroy(a);
    }
    /* Loopback, or a secret: nothing to say. */
    opts.name = xt_name("lo");
    opts.listen_addr = "127.0.0.1:0";
    if (xfer_agent_create(&opts, &a) == XFER_OK) {
        xfer_backend_add(a, "tcp", NULL);
        xfer_agent_destroy(a);
    }
    opts.name = xt_name("keyed");
    opts.listen_addr = "0.0.0.0:0";
    opts.auth_key_file = key_a;
    if (xfer_agent_create(&opts, &a) == XFER_OK) {
        xfer_backend_add(a, "tcp:addr=0.0.0.0", NULL);
        xfer_agent_destroy(a);
    }
    log = xt_stderr_end();
    XT_CHECK(count(log, lwarn) == 1, "listener warnings: %zu in '%s'",
             count(log, lwarn), log);
    XT_CHECK(count(log, twarn) == 1, "tcp warnings: %zu in '%s'",
             count(log, twarn), log);
}

int main(int argc, char **argv)
{
    static const xt_test_t tcp_tests[] = {
        XT_TEST(test_keyed_tcp),
        XT_TEST(test_mismatch_tcp),
        XT_TEST(test_forgeries_tcp),
        XT_TEST(test_replay_tcp),
        XT_TEST(test_break1_open),
        XT_TEST(test_break1_keyed),
        XT_TEST(test_warn_open),
        XT_END,
    };
    static const xt_test_t uds_tests[] = {
        XT_TEST(test_keyed_uds),
        XT_TEST(test_mismatch_uds),
        XT_TEST(test_forgeries_uds),
        XT_END,
    };
    static const xt_suite_t suites[] = {
        {"sec-auth-tcp", tcp_tests},
        {"sec-auth-uds", uds_tests},
    };
    size_t nsuites = sizeof(suites) / sizeof(suites[0]);
    ssize_t n;

    if (argc == 7 && strcmp(argv[1], "--target") == 0)
        return child_main(argv + 2);
    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
#ifndef XT_HAVE_UDS
    printf("SKIP: suite sec-auth-uds (test_keyed_uds, test_mismatch_uds, "
           "test_forgeries_uds): the uds plugin is not built here\n");
    nsuites--;
#endif
    signal(SIGPIPE, SIG_IGN);
    unsetenv("XFER_AUTH_KEY_FILE");
    keys_make();
    return xt_run(argv[0], suites, nsuites);
}
