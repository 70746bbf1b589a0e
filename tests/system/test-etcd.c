/* test-etcd.c - finding peers through a real etcd started on free loopback
 * ports: publish/fetch, lease expiry, republish, etcd stopped and restarted. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base64.h"
#include "tests/common/etcd.h"
#include "tests/common/xt.h"

#define TTL_S 2
#define WAIT_MS 10000
#define SMALL (1u << 20)

static char self_exe[4096];
static char endpoint[64];          /* http://127.0.0.1:PORT */
static xt_etcd_t *etcd;

/* ---- the child: an agent that publishes through etcd ------------------------------- */

static int child_main(char **argv)
{
    const char *name = argv[2];
    uint64_t seed = strtoull(argv[3], NULL, 10);
    size_t size = strtoull(argv[4], NULL, 10);
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;
    xfer_mem_t *mem = NULL, *mem2 = NULL;
    void *buf = aligned_alloc(4096, size), *buf2 = NULL;
    xfer_desc_t d = {(uintptr_t)buf, size, 0};
    xfer_dlist_t list = {XFER_MEM_DRAM, 1, &d};
    char line[256];

    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.etcd_endpoints = endpoint;
    opts.etcd_ttl_s = TTL_S;
    if (buf == NULL || xfer_agent_create(&opts, &a) != XFER_OK ||
        xfer_backend_add(a, "tcp", NULL) != XFER_OK ||
        xfer_mem_register(a, &list, NULL, &mem) != XFER_OK) {
        printf("FAIL %s\n", xfer_last_error());
        return 1;
    }
    xt_fill(buf, size, seed);
    printf("READY %" PRIxPTR "\n", (uintptr_t)buf);
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        if (strncmp(line, "reg", 3) == 0 && buf2 == NULL) {
            /* A registration after publishing: peers must learn of it. */
            buf2 = aligned_alloc(4096, SMALL);
            d.addr = (uintptr_t)buf2;
            d.len = SMALL;
            if (buf2 == NULL)
                return 1;
            xt_fill(buf2, SMALL, seed + 1);
            if (xfer_mem_register(a, &list, NULL, &mem2) != XFER_OK)
                return 1;
            printf("REG %" PRIxPTR "\n", (uintptr_t)buf2);
            fflush(stdout);
        } else {
            break;
        }
    }
    if (mem2 != NULL)
        xfer_mem_deregister(a, mem2);
    xfer_mem_deregister(a, mem);
    xfer_agent_destroy(a);
    free(buf);
    free(buf2);
    return 0;
}

typedef struct child {
    xt_proc_t proc;
    uintptr_t buf;
    uint64_t seed;
} child_t;

static char *child_line(child_t *c, char *line, size_t size)
{
    return xt_proc_line(&c->proc, line, size, WAIT_MS);
}

/* Ask the child to leave (destroying its agent revokes its lease) and
 * check it exited cleanly; a killed child is only reaped. */
static void child_end(child_t *c)
{
    xt_proc_end(&c->proc, WAIT_MS);
}

static void child_cleanup(void *arg)
{
    child_end(arg);
    free(arg);
}

static child_t *child_start(const char *name, size_t size)
{
    child_t *c = calloc(1, sizeof(*c));
    char seed[32], sz[32], line[256], nm[64];
    char *argv[] = {self_exe, "--child", nm, seed, sz, endpoint, NULL};

    XT_REQUIRE(c != NULL, "out of memory");
    c->seed = xt_seed();
    snprintf(nm, sizeof(nm), "%s", name);
    snprintf(seed, sizeof(seed), "%" PRIu64, c->seed);
    snprintf(sz, sizeof(sz), "%zu", size);
    xt_proc_start(&c->proc, name, argv);
    xt_defer(child_cleanup, c);
    child_line(c, line, sizeof(line));
    XT_REQUIRE(sscanf(line, "READY %" SCNxPTR, &c->buf) == 1,
               "child %s: '%s'", c->proc.name, line);
    return c;
}

/* ---- the parent's agents ----------------------------------------------------------- */

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

static xfer_agent_t *etcd_agent(const char *name)
{
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.etcd_endpoints = endpoint;
    opts.etcd_ttl_s = TTL_S;
    XT_STATUS_FATAL(xfer_agent_create(&opts, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS_FATAL(xfer_backend_add(a, "tcp", NULL), XFER_OK);
    return a;
}

/* READ size bytes of the peer at raddr into fresh local memory. */
static xfer_status_t read_from(xfer_agent_t *a, const char *peer,
                               uintptr_t raddr, size_t size, void **out)
{
    unsigned char *local = xt_alloc(size);
    xfer_desc_t l = {(uintptr_t)local, size, 0}, r = {raddr, size, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    xfer_mem_t *mem = xt_register(a, local, size);
    xfer_status_t st;

    st = xfer_req_create(a, XFER_OP_READ, &ll, &rl, peer, NULL, &req);
    if (st == XFER_OK) {
        st = xt_post_wait(req, NULL, 0, WAIT_MS);
        xfer_req_release(req);
    }
    xfer_mem_deregister(a, mem);
    *out = local;
    return st;
}

/* The lease the agent key of name is bound to in etcd; 0 when the key is
 * absent or etcd did not answer. */
static int64_t key_lease(const char *name)
{
    char key[256], b64[400], req[512], out[8192];
    json_t *resp, *kv;
    int64_t lease = 0;
    size_t n = (size_t)snprintf(key, sizeof(key), "/xfer/agents/%s", name);

    if (n >= sizeof(key) || xfer__b64_encoded_size(n) > sizeof(b64))
        return 0;
    xfer__b64_encode(key, n, b64);
    snprintf(req, sizeof(req), "{\"key\":\"%s\"}", b64);
    if (!xt_etcd_post(etcd, "/v3/kv/range", req, out, sizeof(out)))
        return 0;
    resp = json_loads(out, 0, NULL);
    kv = json_array_get(json_object_get(resp, "kvs"), 0);
    if (json_is_string(json_object_get(kv, "lease")))
        lease = strtoll(json_string_value(json_object_get(kv, "lease")),
                        NULL, 10);
    json_decref(resp);
    return lease;
}

static bool wait_check(xfer_agent_t *a, const char *name, xfer_status_t want,
                       unsigned ms)
{
    uint64_t end = xt_now_ms() + ms;

    while (xt_now_ms() < end) {
        if (xfer_md_check(a, name) == want)
            return true;
        xt_sleep_ms(20);
    }
    return xfer_md_check(a, name) == want;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_publish_fetch(void)
{
    child_t *c = child_start(xt_name("tgt"), SMALL);
    xfer_agent_t *p = etcd_agent(xt_name("ini"));
    xfer_agent_t *q = etcd_agent(xt_name("async"));
    xfer_agent_t *plain = xt_agent(xt_name("plain"), "tcp", 1);
    void *got;
    char line[256];
    uintptr_t buf2;
    uint64_t t0, end;
    xfer_status_t st;
    const char *wrap = getenv("XT_WRAP");
    unsigned slow = wrap != NULL && wrap[0] != '\0' ? 10 : 1;

    XT_STATUS_FATAL(xfer_md_fetch_etcd(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS(read_from(p, c->proc.name, c->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c->seed) < 0, "READ data differs");

    /* Nobody by that name: a timeout, on time, that says what it waited
     * for (under valgrind each HTTP call is slow, so the bound grows). */
    t0 = xt_now_ms();
    XT_STATUS(xfer_md_fetch_etcd(p, "nobody", 300 * slow), XFER_ERR_TIMEOUT);
    XT_ERR_HAS("'nobody' was not published", "/xfer/agents/nobody");
    XT_CHECK(xt_now_ms() - t0 >= 290 * slow && xt_now_ms() - t0 < 2000 * slow,
             "waited %" PRIu64 " ms", xt_now_ms() - t0);
    XT_STATUS(xfer_md_fetch_etcd(plain, c->proc.name, 100),
              XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("no etcd endpoints");

    /* Asynchronous: start, then check. */
    XT_STATUS(xfer_md_fetch_start(q, c->proc.name), XFER_OK);
    XT_CHECK(wait_check(q, c->proc.name, XFER_OK, 5000), "async fetch of %s "
             "did not load within 5 s", c->proc.name);

    /* A registration made after publishing reaches the followers. */
    fputs("reg\n", c->proc.in);
    fflush(c->proc.in);
    XT_REQUIRE(sscanf(child_line(c, line, sizeof(line)), "REG %" SCNxPTR,
                      &buf2) == 1, "child: '%s'", line);
    end = xt_now_ms() + 5000;
    do {
        st = read_from(p, c->proc.name, buf2, SMALL, &got);
        if (st == XFER_OK)
            break;
        xt_sleep_ms(50);
    } while (xt_now_ms() < end);
    XT_STATUS(st, XFER_OK);
    XT_CHECK(st != XFER_OK || xt_check(got, SMALL, c->seed + 1) < 0,
             "READ of the new registration differs");

    /* Leaving revokes the lease: every follower forgets the child now,
     * not after the TTL. */
    child_end(c);
    XT_CHECK(wait_check(p, c->proc.name, XFER_ERR_NOT_FOUND, 1500),
             "p still has %s 1.5 s after it left", c->proc.name);
    XT_CHECK(wait_check(q, c->proc.name, XFER_ERR_NOT_FOUND, 1500),
             "q still has %s 1.5 s after it left", c->proc.name);
}

static void test_kill_expiry(void)
{
    child_t *c = child_start(xt_name("victim"), SMALL);
    xfer_agent_t *p = etcd_agent(xt_name("survivor"));
    uint64_t t0;

    XT_STATUS_FATAL(xfer_md_fetch_etcd(p, c->proc.name, WAIT_MS), XFER_OK);
    xt_sleep_ms(200);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    xt_proc_kill(&c->proc);
    t0 = xt_now_ms();
    XT_CHECK(wait_check(p, c->proc.name, XFER_ERR_NOT_FOUND,
                        TTL_S * 1000 + 2000),
             "%s still loaded %u ms after SIGKILL (TTL %d s)", c->proc.name,
             (unsigned)(xt_now_ms() - t0), TTL_S);
    XT_CHECK(xt_now_ms() - t0 <= TTL_S * 1000 + 2000, "invalidated after "
             "%" PRIu64 " ms", xt_now_ms() - t0);
}

/* A peer that stops answering (SIGSTOP keeps its sockets open, so only
 * etcd can tell): its lease expires, and the transfer in flight to it
 * fails with XFER_ERR_REMOTE_DISCONNECT. */
static void test_stalled_inflight(void)
{
    const size_t size = 64u << 20;
    child_t *c = child_start(xt_name("stalled"), size);
    xfer_agent_t *p = etcd_agent(xt_name("ini"));
    unsigned char *local = xt_alloc(size);
    xfer_desc_t l = {(uintptr_t)local, size, 0}, r = {c->buf, size, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    xfer_status_t st;
    uint64_t t0, end;

    xt_register(p, local, size);
    XT_STATUS_FATAL(xfer_md_fetch_etcd(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_WRITE, &ll, &rl, c->proc.name,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    kill(c->proc.pid, SIGSTOP);
    c->proc.gone = true;
    t0 = xt_now_ms();
    st = xfer_req_post(req, NULL, 0);
    XT_CHECK(st == XFER_IN_PROG, "64 MiB to a stopped peer: %s",
             xt_status_name(st));
    end = t0 + TTL_S * 1000 + 3000;
    while ((st = xfer_req_status(req)) == XFER_IN_PROG && xt_now_ms() < end)
        xt_sleep_ms(10);
    XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
    XT_CHECK(xt_now_ms() - t0 <= TTL_S * 1000 + 3000, "failed after %" PRIu64
             " ms", xt_now_ms() - t0);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_ERR_NOT_FOUND);
    kill(c->proc.pid, SIGKILL);
    kill(c->proc.pid, SIGCONT);
}

static void test_republish(void)
{
    const char *name = xt_name("phoenix");
    child_t *c1 = child_start(name, SMALL), *c2;
    xfer_agent_t *p = etcd_agent(xt_name("ini"));
    char line[256];
    int64_t lease2;
    void *got;
    uint64_t end;
    bool ok = false;

    XT_STATUS_FATAL(xfer_md_fetch_etcd(p, name, WAIT_MS), XFER_OK);
    XT_STATUS(read_from(p, name, c1->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c1->seed) < 0, "READ from the first");
    /* A second incarnation under the same name: a newer epoch. */
    c2 = child_start(name, SMALL);
    end = xt_now_ms() + 5000;
    while (!ok && xt_now_ms() < end) {
        ok = read_from(p, name, c2->buf, SMALL, &got) == XFER_OK &&
             xt_check(got, SMALL, c2->seed) < 0;
        if (!ok)
            xt_sleep_ms(50);
    }
    XT_CHECK(ok, "the newer epoch of %s was not picked up within 5 s", name);
    /* The older incarnation changing its registrations does not publish
     * over the newer one: the key stays bound to the newer one's lease. */
    lease2 = key_lease(name);
    XT_CHECK(lease2 != 0, "no lease on the key of %s", name);
    fprintf(c1->proc.in, "reg\n");
    fflush(c1->proc.in);
    child_line(c1, line, sizeof(line));
    XT_CHECK(strncmp(line, "REG ", 4) == 0, "child said '%s'", line);
    xt_sleep_ms(1000);
    XT_CHECK(key_lease(name) == lease2, "the older agent of %s took its "
             "key back (lease %" PRId64 ", the newer one's is %" PRId64 ")",
             name, key_lease(name), lease2);
    /* The old one leaving (its lease revoked) does not take the new
     * one's key with it. */
    child_end(c1);
    xt_sleep_ms(1000);
    XT_STATUS(xfer_md_check(p, name), XFER_OK);
    XT_STATUS(read_from(p, name, c2->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c2->seed) < 0, "READ from the second");
}

static void test_etcd_outage(void)
{
    child_t *c = child_start(xt_name("tgt"), SMALL);
    const char *pname = xt_name("ini");
    xfer_agent_t *p = etcd_agent(pname), *q;
    void *got;
    uint64_t t0;
    xfer_status_t st;

    XT_STATUS_FATAL(xfer_md_fetch_etcd(p, c->proc.name, WAIT_MS), XFER_OK);
    xt_etcd_halt(etcd);

    t0 = xt_now_ms();
    st = xfer_md_fetch_etcd(p, "nobody", 1500);
    XT_CHECK(st == XFER_ERR_TIMEOUT || st == XFER_ERR_BACKEND,
             "fetch with etcd down: %s", xt_status_name(st));
    XT_ERR_HAS("etcd unreachable", endpoint);
    XT_CHECK(xt_now_ms() - t0 < 3500, "fetch with etcd down took %" PRIu64
             " ms", xt_now_ms() - t0);
    /* Loaded metadata keeps working. */
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    XT_STATUS(read_from(p, c->proc.name, c->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c->seed) < 0, "READ during the outage");

    /* etcd back, empty (a new data dir): leases and keys come back. */
    XT_REQUIRE(xt_etcd_restart(etcd), "etcd did not restart (see %s)",
               xt_etcd_dir(etcd));
    q = etcd_agent(xt_name("late"));
    XT_STATUS(xfer_md_fetch_etcd(q, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_fetch_etcd(q, pname, WAIT_MS), XFER_OK);
    XT_STATUS(read_from(q, c->proc.name, c->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c->seed) < 0, "READ after the restart");
    /* p never lost the child, and still follows it. */
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    child_end(c);
    XT_CHECK(wait_check(p, c->proc.name, XFER_ERR_NOT_FOUND, 2000),
             "p did not see the child leave after etcd's restart");
}

/* ---- with a shared secret ---------------------------------------------------------- */

static char key_path[64];

static void key_forget(void *arg)
{
    (void)arg;
    unsetenv("XFER_AUTH_KEY_FILE");
    unlink(key_path);
}

/* A private key file; agents and children made while `use` holds it
 * take it (through XFER_AUTH_KEY_FILE). */
static void key_make(void)
{
    static const char key[] = "a secret for test-etcd only, 32b\n";
    int fd;

    snprintf(key_path, sizeof(key_path), "/tmp/xfer-etcd-key-XXXXXX");
    fd = mkstemp(key_path);
    XT_REQUIRE(fd >= 0 && write(fd, key, sizeof(key) - 1) ==
                              (ssize_t)sizeof(key) - 1,
               "key file: %s", strerror(errno));
    close(fd);
    xt_defer_late(key_forget, NULL);
}

static void key_use(bool on)
{
    if (on)
        setenv("XFER_AUTH_KEY_FILE", key_path, 1);
    else
        unsetenv("XFER_AUTH_KEY_FILE");
}

/* Put blob under name's key directly, as anyone who may write to etcd
 * can, without a lease. */
static void etcd_put(const char *name, const char *blob, size_t len)
{
    char key[300], out[4096];
    size_t kn = (size_t)snprintf(key, sizeof(key), "/xfer/agents/%s", name);
    char *kb = malloc(xfer__b64_encoded_size(kn));
    char *vb = malloc(xfer__b64_encoded_size(len));
    char *req = malloc(xfer__b64_encoded_size(len) + 600);

    XT_REQUIRE(kb && vb && req, "out of memory");
    xfer__b64_encode(key, kn, kb);
    xfer__b64_encode(blob, len, vb);
    sprintf(req, "{\"key\":\"%s\",\"value\":\"%s\"}", kb, vb);
    XT_CHECK(xt_etcd_post(etcd, "/v3/kv/put", req, out, sizeof(out)),
             "put %s", name);
    free(kb);
    free(vb);
    free(req);
}

/* With a secret, a follower loads from etcd only what the secret signed:
 * an unsigned publisher is refused, and a forged newer epoch written
 * under a followed name neither replaces nor drops the real peer. */
static void test_signed(void)
{
    child_t *c, *u;
    xfer_agent_t *p, *imp;
    void *got;
    char *blob, *log;
    size_t len;
    const char *wrap = getenv("XT_WRAP");
    unsigned slow = wrap != NULL && wrap[0] != '\0' ? 10 : 1;

    key_make();
    key_use(true);
    c = child_start(xt_name("ktgt"), SMALL);
    p = etcd_agent(xt_name("kini"));
    key_use(false);
    u = child_start(xt_name("utgt"), SMALL);
    XT_STATUS_FATAL(xfer_md_fetch_etcd(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS(read_from(p, c->proc.name, c->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c->seed) < 0, "READ data differs");
    XT_STATUS(xfer_md_fetch_etcd(p, u->proc.name, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS(u->proc.name, "is not signed by this agent's secret");
    XT_CHECK(xfer_md_check(p, u->proc.name) == XFER_ERR_NOT_FOUND,
             "an unsigned blob loaded");
    /* An impostor without the key overwrites the followed key. */
    imp = xt_agent(c->proc.name, "tcp", 1);
    blob = xt_md_get(imp, XFER_MD_ALL, NULL, 0, &len);
    xt_stderr_begin();
    etcd_put(c->proc.name, blob, len);
    xt_sleep_ms(1500 * slow);
    log = xt_stderr_end();
    XT_CHECK(strstr(log, "is not signed by this agent's secret") != NULL,
             "the follower did not refuse the forged blob (or did not see "
             "it within %u ms)", 1500 * slow);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    XT_STATUS(read_from(p, c->proc.name, c->buf, SMALL, &got), XFER_OK);
    XT_CHECK(xt_check(got, SMALL, c->seed) < 0, "READ went elsewhere");
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_publish_fetch),
        XT_TEST(test_kill_expiry),
        XT_TEST(test_stalled_inflight),
        XT_TEST(test_republish),
        XT_TEST(test_etcd_outage),
        XT_TEST(test_signed),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"etcd", tests}};
    ssize_t n;
    int rc;

    if (argc == 6 && strcmp(argv[1], "--child") == 0) {
        snprintf(endpoint, sizeof(endpoint), "%s", argv[5]);
        return child_main(argv);
    }
    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    etcd = xt_etcd_start();
    if (etcd == NULL)
        return 1;
    snprintf(endpoint, sizeof(endpoint), "%s", xt_etcd_url(etcd));
    rc = xt_run(argv[0], suites, 1);
    xt_etcd_stop(etcd);
    return rc;
}
