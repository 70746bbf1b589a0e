/* test-nats-md.c - finding peers through a real nats-server (JetStream) on a
 * free loopback port, with no listener and no etcd: fetch by request/reply,
 * the bucket's entry and its expiry, heartbeats, restarts, forged input. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/nats.h>

#include "tests/common/nats.h"
#include "tests/common/xt.h"

/* nats_ttl_s of every agent here: under valgrind a starved thread can
 * miss a 1 s heartbeat period, so periods and slack grow there. */
#define TTL_S (slow ? 10 : 3)
#define CHECK_MS 1000           /* nats-md.c's heartbeat check period */
/* What a watcher sees "at once", far below the heartbeats' bound. */
#define SOON_MS (slow ? 6000 : 1500)
#define SLACK_MS (slow ? 10000 : 2000) /* a loaded two-core machine */
#define WAIT_MS 10000
#define SMALL (1u << 20)
#define BUCKET "xfer_agents"

static char self_exe[4096];
static char url[64];
static int slow;                /* under valgrind or a sanitizer */
static xt_nats_t *nats;

/* ---- the child: an agent that publishes through NATS ------------------------------ */

static int child_main(char **argv)
{
    const char *name = argv[2];
    uint64_t seed = strtoull(argv[3], NULL, 10);
    size_t size = strtoull(argv[4], NULL, 10);
    unsigned delay_ms = (unsigned)strtoul(argv[6], NULL, 10);
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;
    xfer_mem_t *mem = NULL;
    void *buf = aligned_alloc(4096, size);
    xfer_desc_t d = {(uintptr_t)buf, size, 0};
    xfer_dlist_t list = {XFER_MEM_DRAM, 1, &d};
    char line[256];

    xt_sleep_ms(delay_ms);
    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.nats_url = url;
    opts.nats_ttl_s = TTL_S;
    if (buf == NULL || xfer_agent_create(&opts, &a) != XFER_OK ||
        xfer_backend_add(a, "tcp", NULL) != XFER_OK ||
        xfer_mem_register(a, &list, NULL, &mem) != XFER_OK) {
        printf("FAIL %s\n", xfer_last_error());
        return 1;
    }
    xt_fill(buf, size, seed);
    xt_say("READY %" PRIxPTR " %" PRIx64, (uintptr_t)buf,
           xfer_agent_epoch(a));
    while (fgets(line, sizeof(line), stdin) != NULL) {
        uint64_t s;

        if (sscanf(line, "check %" SCNu64, &s) == 1) {
            long bad = xt_check(buf, size, s);

            xt_say(bad < 0 ? "OK" : "BAD %ld", bad);
        } else {
            break;
        }
    }
    xfer_mem_deregister(a, mem);
    xfer_agent_destroy(a);
    free(buf);
    return 0;
}

typedef struct child {
    xt_proc_t proc;
    uintptr_t buf;
    uint64_t seed, epoch;
} child_t;

static void child_cleanup(void *arg)
{
    xt_proc_end(&((child_t *)arg)->proc, WAIT_MS);
    free(arg);
}

/* Start a child; ready: wait for its READY line (else child_ready). */
static child_t *child_spawn(const char *name, size_t size, unsigned delay_ms)
{
    child_t *c = calloc(1, sizeof(*c));
    char seed[32], sz[32], nm[64], dl[16];
    char *argv[] = {self_exe, "--child", nm, seed, sz, url, dl, NULL};

    XT_REQUIRE(c != NULL, "out of memory");
    c->seed = xt_seed();
    snprintf(nm, sizeof(nm), "%s", name);
    snprintf(seed, sizeof(seed), "%" PRIu64, c->seed);
    snprintf(sz, sizeof(sz), "%zu", size);
    snprintf(dl, sizeof(dl), "%u", delay_ms);
    xt_proc_start(&c->proc, name, argv);
    xt_defer(child_cleanup, c);
    return c;
}

static void child_ready(child_t *c)
{
    char line[256];

    xt_proc_line(&c->proc, line, sizeof(line), WAIT_MS);
    XT_REQUIRE(sscanf(line, "READY %" SCNxPTR " %" SCNx64, &c->buf,
                      &c->epoch) == 2, "child %s: '%s'", c->proc.name, line);
}

static child_t *child_start(const char *name, size_t size)
{
    child_t *c = child_spawn(name, size, 0);

    child_ready(c);
    return c;
}

/* ---- the parent's agents and its own NATS client ------------------------------------- */

static void agent_free(void *a)
{
    xfer_agent_destroy(a);
}

static xfer_agent_t *nats_agent(const char *name)
{
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&opts);
    opts.name = name;
    opts.nats_url = url;
    opts.nats_ttl_s = TTL_S;
    XT_STATUS_FATAL(xfer_agent_create(&opts, &a), XFER_OK);
    xt_defer(agent_free, a);
    XT_STATUS_FATAL(xfer_backend_add(a, "tcp", NULL), XFER_OK);
    return a;
}

typedef struct client {
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;
} client_t;

static void client_free(void *arg)
{
    client_t *c = arg;

    kvStore_Destroy(c->kv);
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
    free(c);
}

/* A plain NATS client, as anyone who may use the server has; the bucket
 * exists once an agent made it. */
static client_t *client(void)
{
    client_t *c = calloc(1, sizeof(*c));
    uint64_t end = xt_now_ms() + WAIT_MS;
    natsStatus s;

    XT_REQUIRE(c != NULL, "out of memory");
    xt_defer(client_free, c);
    s = natsConnection_ConnectTo(&c->nc, url);
    XT_REQUIRE(s == NATS_OK, "connect to %s: %s", url, natsStatus_GetText(s));
    s = natsConnection_JetStream(&c->js, c->nc, NULL);
    XT_REQUIRE(s == NATS_OK, "JetStream: %s", natsStatus_GetText(s));
    while ((s = js_KeyValue(&c->kv, c->js, BUCKET)) != NATS_OK &&
           xt_now_ms() < end)
        xt_sleep_ms(50);
    XT_REQUIRE(s == NATS_OK, "bucket %s: %s", BUCKET, natsStatus_GetText(s));
    return c;
}

/* Whether the bucket holds an entry under name (as a plain key). */
static bool has_entry(client_t *c, const char *key)
{
    kvEntry *e = NULL;
    bool yes = kvStore_Get(&e, c->kv, key) == NATS_OK;

    kvEntry_Destroy(e);
    return yes;
}

static bool wait_entry(client_t *c, const char *key, bool want, unsigned ms)
{
    uint64_t end = xt_now_ms() + ms;

    while (xt_now_ms() < end) {
        if (has_entry(c, key) == want)
            return true;
        xt_sleep_ms(50);
    }
    return has_entry(c, key) == want;
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

/* One op of size bytes between fresh local memory and the peer's raddr;
 * for a WRITE the local side holds the pattern of seed first. */
static xfer_status_t move(xfer_agent_t *a, xfer_op_t op, const char *peer,
                          uintptr_t raddr, size_t size, uint64_t seed,
                          void **out)
{
    unsigned char *local = xt_alloc(size);
    xfer_desc_t l = {(uintptr_t)local, size, 0}, r = {raddr, size, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    xfer_mem_t *mem = xt_register(a, local, size);
    xfer_status_t st;

    if (op == XFER_OP_WRITE)
        xt_fill(local, size, seed);
    st = xfer_req_create(a, op, &ll, &rl, peer, NULL, &req);
    if (st == XFER_OK) {
        st = xt_post_wait(req, NULL, 0, WAIT_MS);
        xfer_req_release(req);
    }
    xfer_mem_deregister(a, mem);
    if (out != NULL)
        *out = local;
    return st;
}

static bool read_is(xfer_agent_t *a, child_t *c, uint64_t seed)
{
    void *got = NULL;
    xfer_status_t st = move(a, XFER_OP_READ, c->proc.name, c->buf, SMALL, 0,
                            &got);

    if (st != XFER_OK)
        fprintf(stderr, "READ from %s: %s: %s\n", c->proc.name,
                xt_status_name(st), xfer_last_error());
    return st == XFER_OK && xt_check(got, SMALL, seed) < 0;
}

/* ---- tests ----------------------------------------------------------------------- */

/* Two processes, no listener, no etcd: the initiator finds the target by
 * name, WRITEs a random pattern into it and READs it back. */
static void test_fetch_write_read(void)
{
    child_t *c = child_start(xt_name("tgt"), SMALL);
    xfer_agent_t *p = nats_agent(xt_name("ini"));
    xfer_agent_t *plain = xt_agent(xt_name("plain"), "tcp", 1);
    uint64_t seed = xt_seed();
    char line[64];
    void *got = NULL;

    printf("  seed %" PRIu64 "\n", seed);
    XT_STATUS_FATAL(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    XT_CHECK(read_is(p, c, c->seed), "READ of the target's pattern differs");
    XT_STATUS(move(p, XFER_OP_WRITE, c->proc.name, c->buf, SMALL, seed, NULL),
              XFER_OK);
    xt_proc_ask(&c->proc, line, sizeof(line), WAIT_MS, "check %" PRIu64, seed);
    XT_CHECK(strcmp(line, "OK") == 0, "the target holds other bytes: %s",
             line);
    XT_STATUS(move(p, XFER_OP_READ, c->proc.name, c->buf, SMALL, 0, &got),
              XFER_OK);
    XT_CHECK(got != NULL && xt_check(got, SMALL, seed) < 0, "READ after "
             "WRITE differs");
    /* Without NATS the call says what is missing. */
    XT_STATUS(xfer_md_fetch_nats(plain, c->proc.name, 100),
              XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("no NATS server", "nats_url");
}

/* A fetch made before the target exists waits for it; a name nobody
 * serves times out, on time, naming the agent and the subject. */
static void test_fetch_wait(void)
{
    child_t *c = child_spawn(xt_name("late"), SMALL, 700);
    xfer_agent_t *p = nats_agent(xt_name("ini"));
    char subj[128];
    uint64_t t0;

    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_ERR_NOT_FOUND);
    XT_STATUS(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    child_ready(c);
    XT_CHECK(read_is(p, c, c->seed), "READ from the late target differs");

    t0 = xt_now_ms();
    XT_STATUS(xfer_md_fetch_nats(p, "nobody", 400), XFER_ERR_TIMEOUT);
    XT_ERR_HAS("no agent 'nobody' answered", "'xfer.md.nobody'", "400 ms");
    XT_CHECK(xt_now_ms() - t0 >= 390 && xt_now_ms() - t0 < 400 + SLACK_MS,
             "waited %" PRIu64 " ms", xt_now_ms() - t0);
    /* 0: one request.  A name that is no token is encoded, not refused. */
    XT_STATUS(xfer_md_fetch_nats(p, "no.body *", 0), XFER_ERR_TIMEOUT);
    snprintf(subj, sizeof(subj), "'xfer.md.no=2Ebody=20=2A'");
    XT_ERR_HAS("no agent 'no.body *' answered", subj);
}

/* SIGKILL: the entry expires with the TTL, the follower invalidates the
 * peer when its heartbeats stop (TTL + check period), a request to it
 * fails, and another peer keeps working. */
static void test_kill(void)
{
    child_t *c = child_start(xt_name("victim"), SMALL);
    child_t *o = child_start(xt_name("other"), SMALL);
    xfer_agent_t *p = nats_agent(xt_name("survivor"));
    client_t *cl = client();
    unsigned char *local = xt_alloc(SMALL);
    xfer_desc_t l = {(uintptr_t)local, SMALL, 0}, r = {c->buf, SMALL, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    xfer_status_t st;
    uint64_t t0, bound = TTL_S * 1000 + CHECK_MS + SLACK_MS;

    xt_register(p, local, SMALL);
    XT_STATUS_FATAL(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS_FATAL(xfer_md_fetch_nats(p, o->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_READ, &ll, &rl, c->proc.name,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    XT_CHECK(has_entry(cl, c->proc.name), "no entry for %s", c->proc.name);
    /* Past one heartbeat period: the peer is still there. */
    xt_sleep_ms(TTL_S * 1000 / 3 + 500);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    xt_proc_kill(&c->proc);
    t0 = xt_now_ms();
    XT_CHECK(wait_check(p, c->proc.name, XFER_ERR_NOT_FOUND, bound),
             "%s still loaded %" PRIu64 " ms after SIGKILL (bound %" PRIu64
             " ms)", c->proc.name, xt_now_ms() - t0, bound);
    XT_CHECK(wait_entry(cl, c->proc.name, false, TTL_S * 1000 + SLACK_MS),
             "the entry of %s outlived the TTL by %d ms", c->proc.name,
             SLACK_MS);
    st = xfer_req_post(req, NULL, 0);
    if (st == XFER_IN_PROG)
        st = xt_wait_req(req, WAIT_MS);
    XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
    {
        char why[80];

        snprintf(why, sizeof(why), "its NATS heartbeats stopped for more "
                 "than %d s", TTL_S);
        XT_ERR_HAS(c->proc.name, "is gone", why);
    }
    XT_STATUS(xfer_md_check(p, o->proc.name), XFER_OK);
    XT_CHECK(read_is(p, o, o->seed), "READ from the other peer differs");
}

/* A restarted target (same name, newer epoch) replaces the old one at
 * the follower without a new fetch. */
static void test_restart(void)
{
    const char *name = xt_name("phoenix");
    child_t *c1 = child_start(name, SMALL), *c2;
    xfer_agent_t *p = nats_agent(xt_name("ini"));
    uint64_t end;
    bool ok = false;

    XT_STATUS_FATAL(xfer_md_fetch_nats(p, name, WAIT_MS), XFER_OK);
    XT_CHECK(read_is(p, c1, c1->seed), "READ from the first");
    xt_proc_kill(&c1->proc);
    c2 = child_start(name, SMALL);
    XT_CHECK(c2->epoch > c1->epoch, "epochs %" PRIx64 " then %" PRIx64,
             c1->epoch, c2->epoch);
    end = xt_now_ms() + WAIT_MS;
    while (!ok && xt_now_ms() < end) {
        ok = xfer_md_check(p, name) == XFER_OK && read_is(p, c2, c2->seed);
        if (!ok)
            xt_sleep_ms(100);
    }
    XT_CHECK(ok, "the newer epoch of %s was not loaded within %d ms", name,
             WAIT_MS);
    /* It stays: its heartbeats are the new epoch's. */
    xt_sleep_ms(TTL_S * 1000 + CHECK_MS);
    XT_STATUS(xfer_md_check(p, name), XFER_OK);
    XT_CHECK(read_is(p, c2, c2->seed), "READ from the second");
}

/* Leaving deletes the entry: the follower forgets the peer at once, far
 * sooner than heartbeats would tell. */
static void test_clean_exit(void)
{
    child_t *c = child_start(xt_name("leaver"), SMALL);
    xfer_agent_t *p = nats_agent(xt_name("ini"));
    client_t *cl = client();
    unsigned char *local = xt_alloc(SMALL);
    xfer_desc_t l = {(uintptr_t)local, SMALL, 0}, r = {c->buf, SMALL, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    xfer_status_t st;
    uint64_t t0;

    xt_register(p, local, SMALL);
    XT_STATUS_FATAL(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_STATUS_FATAL(xfer_req_create(p, XFER_OP_READ, &ll, &rl, c->proc.name,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    XT_CHECK(wait_entry(cl, c->proc.name, true, WAIT_MS), "no entry");
    xt_proc_end(&c->proc, WAIT_MS);
    /* Gone before the process is: the follower hears of it from here,
     * usually within milliseconds.  The verdict is the reason, not the
     * time (which a loaded machine stretches): the deletion, not the
     * heartbeats' silence, must be what invalidated it. */
    t0 = xt_now_ms();
    XT_CHECK(!has_entry(cl, c->proc.name), "the entry is still there");
    XT_CHECK(wait_check(p, c->proc.name, XFER_ERR_NOT_FOUND,
                        TTL_S * 1000 + CHECK_MS + SLACK_MS),
             "%s still loaded %" PRIu64 " ms after its entry was deleted",
             c->proc.name, xt_now_ms() - t0);
    printf("  invalidated %" PRIu64 " ms after the entry was deleted\n",
           xt_now_ms() - t0);
    st = xfer_req_post(req, NULL, 0);
    if (st == XFER_IN_PROG)
        st = xt_wait_req(req, WAIT_MS);
    XT_STATUS(st, XFER_ERR_REMOTE_DISCONNECT);
    XT_ERR_HAS(c->proc.name, "is gone", "its metadata entry was deleted "
               "from NATS");
}

/* Someone deletes the bucket: the agent makes it again and puts its
 * entry back at its next keep-alive; a newcomer's fetch works. */
static void test_bucket_deleted(void)
{
    child_t *c = child_start(xt_name("keeper"), SMALL);
    client_t *cl = client();
    xfer_agent_t *p;

    XT_CHECK(wait_entry(cl, c->proc.name, true, WAIT_MS), "no entry");
    XT_CHECK(js_DeleteStream(cl->js, "KV_" BUCKET, NULL, NULL) == NATS_OK,
             "delete the bucket's stream");
    XT_CHECK(wait_entry(cl, c->proc.name, true,
                        TTL_S * 1000 / 3 + 2 * SLACK_MS),
             "%s's entry did not come back after the bucket was deleted",
             c->proc.name);
    p = nats_agent(xt_name("ini"));
    XT_STATUS(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_CHECK(read_is(p, c, c->seed), "READ after the bucket came back");
}

/* The server goes away long enough for every entry to expire, and comes
 * back: agents republish by themselves, fetches work again, and loaded
 * peers stayed loaded. */
static void test_server_restart(void)
{
    child_t *c = child_start(xt_name("tgt"), SMALL);
    xfer_agent_t *p = nats_agent(xt_name("ini")), *q;
    client_t *cl;

    XT_STATUS_FATAL(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    xt_nats_halt(nats);
    xt_sleep_ms(TTL_S * 1000 + 1000);
    /* Loaded metadata keeps working meanwhile. */
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    XT_CHECK(read_is(p, c, c->seed), "READ during the outage");
    XT_REQUIRE(xt_nats_restart(nats), "nats-server did not restart (see %s)",
               xt_nats_dir(nats));
    cl = client();
    XT_CHECK(wait_entry(cl, c->proc.name, true, WAIT_MS), "%s did not "
             "republish its entry within %d ms", c->proc.name, WAIT_MS);
    q = nats_agent(xt_name("late"));
    XT_STATUS(xfer_md_fetch_nats(q, c->proc.name, WAIT_MS), XFER_OK);
    XT_CHECK(read_is(q, c, c->seed), "READ after the restart");
    xt_sleep_ms(TTL_S * 1000 + CHECK_MS);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
}

/* ---- forged input ------------------------------------------------------------------ */

static const char *fake_reply;
static size_t fake_len;

static void on_fake(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                    void *closure)
{
    (void)sub, (void)closure;
    natsConnection_Publish(nc, natsMsg_GetReply(msg), fake_reply,
                           (int)fake_len);
    natsMsg_Destroy(msg);
}

static void sub_free(void *arg)
{
    natsSubscription_Unsubscribe(arg);
    natsSubscription_Destroy(arg);
}

/* Answers to fetches of a name that are not its metadata. */
static void test_forged_replies(void)
{
    xfer_agent_t *p = nats_agent(xt_name("ini"));
    xfer_agent_t *other = xt_agent(xt_name("someone"), "tcp", 1);
    client_t *cl = client();
    natsSubscription *sub = NULL;
    const char *fake = xt_name("fake");
    char subj[128];

    snprintf(subj, sizeof(subj), "xfer.md.%s", fake);
    XT_REQUIRE(natsConnection_Subscribe(&sub, cl->nc, subj, on_fake, NULL) ==
               NATS_OK && natsConnection_Flush(cl->nc) == NATS_OK,
               "subscribe %s", subj);
    xt_defer(sub_free, sub);

    fake_reply = xt_md_get(other, XFER_MD_ALL, NULL, 0, &fake_len);
    XT_STATUS(xfer_md_fetch_nats(p, fake, 2000), XFER_ERR_INVALID);
    XT_ERR_HAS("holds metadata of agent", xfer_agent_name(other),
               "not of '", fake, "refused");
    XT_STATUS(xfer_md_check(p, xfer_agent_name(other)), XFER_ERR_NOT_FOUND);
    /* The same with a trailing NUL, which the load ignores: the name
     * check must not (it once let such a blob through unchecked). */
    fake_len++;
    XT_STATUS(xfer_md_fetch_nats(p, fake, 2000), XFER_ERR_INVALID);
    XT_ERR_HAS("holds metadata of agent", xfer_agent_name(other),
               "not of '", fake, "refused");
    XT_STATUS(xfer_md_check(p, xfer_agent_name(other)), XFER_ERR_NOT_FOUND);

    fake_reply = "";
    fake_len = 0;
    XT_STATUS(xfer_md_fetch_nats(p, fake, 300), XFER_ERR_NOT_FOUND);
    XT_ERR_HAS(fake, "with no metadata", "no backend yet");

    fake_reply = "\x01garbage{{";
    fake_len = strlen(fake_reply);
    XT_STATUS(xfer_md_fetch_nats(p, fake, 2000), XFER_ERR_INVALID);
    XT_ERR_HAS(fake, "holds no agent metadata", subj);
    XT_STATUS(xfer_md_check(p, fake), XFER_ERR_NOT_FOUND);
}

/* Someone writes another agent's blob under a followed key: refused with
 * a warning, and the real peer stays loaded. */
static void test_forged_entry(void)
{
    child_t *c = child_start(xt_name("real"), SMALL);
    xfer_agent_t *p = nats_agent(xt_name("ini"));
    xfer_agent_t *imp = xt_agent(xt_name("impostor"), "tcp", 1);
    client_t *cl = client();
    size_t len;
    char *blob = xt_md_get(imp, XFER_MD_ALL, NULL, 0, &len), *log;

    XT_STATUS_FATAL(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    xt_stderr_begin();
    XT_CHECK(kvStore_Put(NULL, cl->kv, c->proc.name, blob, (int)len) ==
             NATS_OK, "put");
    xt_sleep_ms(SOON_MS + SLACK_MS);
    log = xt_stderr_end();
    XT_CHECK(strstr(log, "holds metadata of agent") != NULL &&
             strstr(log, xfer_agent_name(imp)) != NULL,
             "the follower did not refuse the forged entry within %d ms",
             SOON_MS + SLACK_MS);
    XT_STATUS(xfer_md_check(p, xfer_agent_name(imp)), XFER_ERR_NOT_FOUND);
    XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    XT_CHECK(read_is(p, c, c->seed), "READ went elsewhere");
}

static char key_path[64];

static void key_forget(void *arg)
{
    (void)arg;
    unsetenv("XFER_AUTH_KEY_FILE");
    unlink(key_path);
}

/* With a secret, an unsigned agent's metadata is refused. */
static void test_unsigned(void)
{
    static const char key[] = "a secret for test-nats-md only..\n";
    child_t *c, *u;
    xfer_agent_t *p;
    int fd;

    snprintf(key_path, sizeof(key_path), "/tmp/xfer-nats-key-XXXXXX");
    fd = mkstemp(key_path);
    XT_REQUIRE(fd >= 0 && write(fd, key, sizeof(key) - 1) ==
                              (ssize_t)sizeof(key) - 1,
               "key file: %s", strerror(errno));
    close(fd);
    xt_defer_late(key_forget, NULL);
    u = child_start(xt_name("unsigned"), SMALL);
    setenv("XFER_AUTH_KEY_FILE", key_path, 1);
    c = child_start(xt_name("signed"), SMALL);
    p = nats_agent(xt_name("kini"));
    XT_STATUS(xfer_md_fetch_nats(p, c->proc.name, WAIT_MS), XFER_OK);
    XT_CHECK(read_is(p, c, c->seed), "READ from the signed peer");
    XT_STATUS(xfer_md_fetch_nats(p, u->proc.name, WAIT_MS), XFER_ERR_AUTH);
    XT_ERR_HAS(u->proc.name, "is not signed by this agent's secret",
               "NATS subject");
    XT_STATUS(xfer_md_check(p, u->proc.name), XFER_ERR_NOT_FOUND);

    /* Anyone may write to the bucket.  With a secret, an unsigned
     * delete marker does not make followers let the peer go (its
     * heartbeats still come), and an unsigned entry claiming a newer
     * epoch does not make the owner step aside: it puts its own back at
     * the next keep-alive, and fetches keep being answered. */
    {
        client_t *cl = client();
        char forged[256];
        xfer_agent_t *q;

        XT_CHECK(kvStore_Delete(cl->kv, c->proc.name) == NATS_OK, "delete");
        xt_sleep_ms(SOON_MS);
        XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
        XT_CHECK(read_is(p, c, c->seed), "READ after a forged delete");
        snprintf(forged, sizeof(forged), "{\"agent\":\"%s\",\"epoch\":"
                 "\"0xffffffffffffffff\"}", c->proc.name);
        XT_CHECK(kvStore_Put(NULL, cl->kv, c->proc.name, forged,
                             (int)strlen(forged)) == NATS_OK, "put");
        xt_sleep_ms(TTL_S * 1000 / 3 + SOON_MS);
        q = nats_agent(xt_name("kini2"));
        XT_STATUS(xfer_md_fetch_nats(q, c->proc.name, WAIT_MS), XFER_OK);
        XT_CHECK(read_is(q, c, c->seed), "READ by a newcomer after a forged "
                 "successor");
        XT_STATUS(xfer_md_check(p, c->proc.name), XFER_OK);
    }
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_fetch_write_read),
        XT_TEST(test_fetch_wait),
        XT_TEST(test_kill),
        XT_TEST(test_restart),
        XT_TEST(test_clean_exit),
        XT_TEST(test_forged_replies),
        XT_TEST(test_forged_entry),
        XT_TEST(test_unsigned),
        XT_TEST(test_bucket_deleted),
        XT_TEST(test_server_restart),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"nats-md", tests}};
    const char *wrap = getenv("XT_WRAP");
    ssize_t n;
    int rc;

    slow = wrap != NULL && wrap[0] != '\0';
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    /* The sanitizers slow every thread too (TSan most: a 1 s heartbeat
     * period was missed at TTL 3 s, and the follower rightly let the
     * peer go): the same longer periods as under valgrind. */
    slow = 1;
#endif
    if (argc == 7 && strcmp(argv[1], "--child") == 0) {
        snprintf(url, sizeof(url), "%s", argv[5]);
        return child_main(argv);
    }
    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    /* Peers are found through NATS alone. */
    unsetenv("XFER_ETCD_ENDPOINTS");
    unsetenv("XFER_AUTH_KEY_FILE");
    signal(SIGPIPE, SIG_IGN);
    nats = xt_nats_start();
    if (nats == NULL)
        return 1;
    snprintf(url, sizeof(url), "%s", xt_nats_url(nats));
    rc = xt_run(argv[0], suites, 1);
    xt_nats_stop(nats);
    return rc;
}
