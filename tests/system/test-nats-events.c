/* test-nats-events.c - the event plane against a real nats-server: what
 * arrives and in what order, notifications seen by another process only
 * after their data, outages that stall nothing, bad options. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1               /* memfd_create */
#endif

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <nats/nats.h>

#include "core/base64.h"
#include "tests/common/nats.h"
#include "tests/common/xt.h"

#define WAIT_MS 10000               /* one event or one transfer, at most */
#define SLOT (64u << 10)            /* one notified WRITE's bytes */
#define NSLOTS 24

static char self_exe[4096];
static char url[128];
static xt_nats_t *server;

/* ---- a subscriber of our own (libnats), in this process or a child ------ */

typedef struct sub {
    natsConnection *nc;
    natsSubscription *s;
} sub_t;

static void sub_close(sub_t *s)
{
    natsSubscription_Destroy(s->s);
    natsConnection_Destroy(s->nc);
    s->s = NULL;
    s->nc = NULL;
}

/* Subscribe to subject (wildcards allowed); reconnects by itself.  The
 * subscription is at the server when it returns true. */
static bool sub_open(sub_t *s, const char *subject)
{
    natsOptions *o = NULL;
    natsStatus st;

    memset(s, 0, sizeof(*s));
    st = natsOptions_Create(&o);
    if (st == NATS_OK)
        st = natsOptions_SetURL(o, url);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(o, 100);
    if (st == NATS_OK)
        st = natsConnection_Connect(&s->nc, o);
    natsOptions_Destroy(o);
    if (st == NATS_OK)
        st = natsConnection_SubscribeSync(&s->s, s->nc, subject);
    if (st == NATS_OK)
        st = natsSubscription_SetPendingLimits(s->s, 1 << 20, 256 << 20);
    if (st == NATS_OK)
        st = natsConnection_FlushTimeout(s->nc, WAIT_MS);
    if (st != NATS_OK) {
        fprintf(stderr, "subscriber on %s: %s\n", subject,
                natsStatus_GetText(st));
        sub_close(s);
        return false;
    }
    return true;
}

/* The next event within ms (NULL: none), its subject copied to subj. */
static json_t *sub_next(sub_t *s, unsigned ms, char *subj, size_t size)
{
    natsMsg *m = NULL;
    json_t *doc;

    if (natsSubscription_NextMsg(&m, s->s, ms) != NATS_OK)
        return NULL;
    if (subj != NULL)
        snprintf(subj, size, "%s", natsMsg_GetSubject(m));
    doc = json_loadb(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), 0,
                     NULL);
    if (doc == NULL || !json_is_object(doc)) {
        fprintf(stderr, "not a JSON object on %s: %.*s\n",
                natsMsg_GetSubject(m), natsMsg_GetDataLength(m),
                natsMsg_GetData(m));
        json_decref(doc);
        doc = json_object();
    }
    natsMsg_Destroy(m);
    return doc;
}

static void sub_cleanup(void *arg)
{
    sub_close(arg);
    free(arg);
}

/* A subscriber closed after the test; fatal if it cannot subscribe. */
static sub_t *sub_new(const char *subject)
{
    sub_t *s = calloc(1, sizeof(*s));

    XT_REQUIRE(s != NULL && sub_open(s, subject), "cannot subscribe to %s "
               "at %s", subject, url);
    xt_defer(sub_cleanup, s);
    return s;
}

static void json_cleanup(void *arg)
{
    json_decref(arg);
}

static const char *jget_str(json_t *doc, const char *key)
{
    const char *v = json_string_value(json_object_get(doc, key));

    return v != NULL ? v : "(none)";
}

static uint64_t jget_u64(json_t *doc, const char *key)
{
    uint64_t v = 0;

    xt_json_u64(json_object_get(doc, key), &v);
    return v;
}

/* The next event of type (others skipped, e.g. stats), or fatal. */
static json_t *sub_wait(sub_t *s, const char *type, unsigned ms)
{
    uint64_t end = xt_now_ms() + ms;
    json_t *doc;

    while (xt_now_ms() < end) {
        doc = sub_next(s, 100, NULL, 0);
        if (doc == NULL)
            continue;
        xt_defer_late(json_cleanup, doc);
        if (strcmp(jget_str(doc, "type"), type) == 0)
            return doc;
    }
    XT_FAIL_FATAL("no '%s' event within %u ms", type, ms);
}

/* ---- agents with the event plane ------------------------------------------ */

static void agent_cleanup(void *arg)
{
    xfer_agent_t **slot = arg;

    xfer_agent_destroy(*slot);
    free(slot);
}

/* An agent on tcp (spec NULL: no backend), destroyed after the test or
 * earlier with ev_agent_end. */
static xfer_agent_t **ev_agent(const xfer_agent_opts_t *o, const char *spec)
{
    xfer_agent_t **slot = calloc(1, sizeof(*slot));
    xfer_status_t st;

    XT_REQUIRE(slot != NULL, "out of memory");
    st = xfer_agent_create(o, slot);
    if (st != XFER_OK) {
        free(slot);
        XT_FAIL_FATAL("xfer_agent_create(%s): %s: %s", o->name,
                      xt_status_name(st), xfer_last_error());
    }
    xt_defer(agent_cleanup, slot);
    if (spec != NULL)
        XT_STATUS_FATAL(xfer_backend_add(*slot, spec, NULL), XFER_OK);
    return slot;
}

static void ev_agent_end(xfer_agent_t **slot)
{
    xfer_agent_destroy(*slot);
    *slot = NULL;
}

/* Options of an agent that publishes events under prefix (metadata off:
 * test-nats-md tests that side). */
static void ev_opts(xfer_agent_opts_t *o, const char *name,
                    const char *prefix, unsigned off)
{
    xfer_agent_opts_init(o);
    o->name = name;
    o->progress_thread = 1;
    o->nats_url = url;
    o->nats_prefix = prefix;
    o->nats_off = off | XFER_NATS_OFF_METADATA;
}

/* A fresh subject prefix for a test; the server is up (a test that
 * failed during an outage may have left it down). */
static const char *new_prefix(void)
{
    static char buf[64];
    static unsigned n;

    if (xt_nats_pid(server) == 0)
        XT_REQUIRE(xt_nats_restart(server), "nats-server did not come back "
                   "(%s)", xt_nats_dir(server));
    snprintf(buf, sizeof(buf), "t%d_%u", (int)getpid(), ++n);
    return buf;
}

static xfer_events_stats_t ev_stats(xfer_agent_t *a)
{
    xfer_events_stats_t s;

    memset(&s, 0, sizeof(s));
    XT_STATUS(xfer_events_stats(a, &s, sizeof(s)), XFER_OK);
    return s;
}

/* Wait until pred holds for a's event counters, or fail. */
#define EV_WAIT(a, pred, ms)                                                \
    do {                                                                    \
        uint64_t end_ = xt_now_ms() + (ms);                                 \
        xfer_events_stats_t s_ = ev_stats(a);                               \
        while (!(pred) && xt_now_ms() < end_) {                             \
            xt_sleep_ms(20);                                                \
            s_ = ev_stats(a);                                               \
        }                                                                   \
        XT_REQUIRE(pred, "event counters never met %s (published %"        \
                   PRIu64 " dropped %" PRIu64 " queued %" PRIu64            \
                   " reconnects %" PRIu64 " connected %d)", #pred,          \
                   s_.published, s_.dropped, s_.queued, s_.reconnects,      \
                   s_.connected);                                           \
    } while (0)

/* The subject of an agent's events of type. */
static void ev_subject(char *buf, size_t size, const char *prefix,
                       const char *token, const char *type)
{
    snprintf(buf, size, "%s.ev.%s.%s", prefix, token, type);
}

/* What xfer_last_error() said when write_notif's transfer ended. */
static char last_sentence[1024];

/* A WRITE of len bytes from local to raddr at tgt, with notif; waited. */
static xfer_status_t write_notif(xfer_agent_t *ini, void *local, size_t len,
                                 uint64_t raddr, const char *tgt,
                                 const void *notif, size_t nlen)
{
    xfer_desc_t l = {(uintptr_t)local, len, 0}, r = {raddr, len, 0};
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *q = NULL;
    xfer_status_t st;

    st = xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tgt, NULL, &q);
    if (st != XFER_OK)
        return st;
    st = xt_post_wait(q, notif, nlen, WAIT_MS);
    snprintf(last_sentence, sizeof(last_sentence), "%s", xfer_last_error());
    xfer_req_release(q);
    return st;
}

/* ---- lifecycle -------------------------------------------------------------- */

static void test_lifecycle(void)
{
    const char *prefix = new_prefix();
    /* A name that is not a subject token as it stands. */
    char name[64], token[128], peer[64], subj[256], want[256], sub_subj[128];
    const char *types[] = {"agent.up", "backend.added", "remote.loaded",
                           "remote.replaced", "remote.invalidated",
                           "agent.down"};
    xfer_agent_opts_t o;
    xfer_agent_t **a, *b;
    uint64_t epoch, b1, b2;
    sub_t *s;

    snprintf(name, sizeof(name), "ev.A b*%d", (int)getpid());
    snprintf(token, sizeof(token), "ev=2EA=20b=2A%d", (int)getpid());
    snprintf(peer, sizeof(peer), "%s", xt_name("evpeer"));
    snprintf(sub_subj, sizeof(sub_subj), "%s.ev.>", prefix);
    s = sub_new(sub_subj);
    ev_opts(&o, name, prefix, XFER_NATS_OFF_STATS);
    a = ev_agent(&o, "tcp");
    epoch = xfer_agent_epoch(*a);

    b = xt_agent(peer, "tcp", 1);
    b1 = xfer_agent_epoch(b);
    xt_md_exchange(b, XFER_MD_ALL, *a);
    xt_agent_destroy(b);
    b = xt_agent(peer, "tcp", 1);
    b2 = xfer_agent_epoch(b);
    xt_md_exchange(b, XFER_MD_ALL, *a);
    XT_STATUS(xfer_md_invalidate(*a, peer), XFER_OK);
    ev_agent_end(a);

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        json_t *doc = sub_next(s, WAIT_MS, subj, sizeof(subj));

        XT_REQUIRE(doc != NULL, "event %zu (%s) did not arrive", i + 1,
                   types[i]);
        xt_defer_late(json_cleanup, doc);
        ev_subject(want, sizeof(want), prefix, token, types[i]);
        XT_CHECK(strcmp(subj, want) == 0, "event %zu on '%s', want '%s'",
                 i + 1, subj, want);
        XT_CHECK(strcmp(jget_str(doc, "type"), types[i]) == 0,
                 "event %zu is '%s', want '%s'", i + 1,
                 jget_str(doc, "type"), types[i]);
        XT_CHECK(json_integer_value(json_object_get(doc, "v")) == 1,
                 "event %zu: v is not 1", i + 1);
        XT_CHECK(strcmp(jget_str(doc, "agent"), name) == 0,
                 "event %zu: agent '%s', want '%s'", i + 1,
                 jget_str(doc, "agent"), name);
        XT_CHECK(jget_u64(doc, "epoch") == epoch, "event %zu: epoch %" PRIx64
                 ", want %" PRIx64, i + 1, jget_u64(doc, "epoch"), epoch);
        /* From 1, no gaps: nothing was dropped. */
        XT_CHECK(jget_u64(doc, "seq") == i + 1, "event %zu: seq %" PRIu64,
                 i + 1, jget_u64(doc, "seq"));
        XT_CHECK(jget_u64(doc, "ts_ms") > 1600000000000ull,
                 "event %zu: ts_ms %" PRIu64, i + 1, jget_u64(doc, "ts_ms"));
        switch (i) {
        case 0:
            XT_CHECK(jget_u64(doc, "pid") == (uint64_t)getpid(),
                     "agent.up: pid %" PRIu64, jget_u64(doc, "pid"));
            XT_CHECK(json_is_array(json_object_get(doc, "backends")) &&
                     json_is_string(json_object_get(doc, "host")),
                     "agent.up: no backends list or host");
            break;
        case 1:
            XT_CHECK(strcmp(jget_str(doc, "backend"), "tcp") == 0,
                     "backend.added: '%s'", jget_str(doc, "backend"));
            break;
        case 2:
        case 3:
        case 4:
            XT_CHECK(strcmp(jget_str(doc, "remote"), peer) == 0,
                     "%s: remote '%s'", types[i], jget_str(doc, "remote"));
            XT_CHECK(jget_u64(doc, "remote_epoch") == (i == 2 ? b1 : b2),
                     "%s: remote_epoch %" PRIx64, types[i],
                     jget_u64(doc, "remote_epoch"));
            if (i == 3)
                XT_CHECK(jget_u64(doc, "old_epoch") == b1,
                         "remote.replaced: old_epoch %" PRIx64 ", want %"
                         PRIx64, jget_u64(doc, "old_epoch"), b1);
            if (i == 4)
                XT_CHECK(strlen(jget_str(doc, "reason")) > 10 &&
                         strcmp(jget_str(doc, "reason"), "(none)") != 0,
                         "remote.invalidated: reason '%s'",
                         jget_str(doc, "reason"));
            break;
        default:
            break;
        }
    }
    XT_CHECK(sub_next(s, 300, subj, sizeof(subj)) == NULL,
             "an event after agent.down, on %s", subj);
}

/* ---- failures ------------------------------------------------------------- */

static void test_failure_event(void)
{
    const char *prefix = new_prefix();
    char sub_subj[256], tok[128];
    const char *tname = xt_name("evtgt");
    xfer_agent_opts_t o;
    xfer_agent_t **a, *t;
    void *src = xt_alloc(SLOT), *dst = xt_alloc(SLOT);
    xfer_mem_t *m;
    xfer_status_t st;
    char sentence[1024];
    json_t *doc;
    sub_t *s;

    ev_opts(&o, xt_name("evini"), prefix, XFER_NATS_OFF_STATS);
    snprintf(tok, sizeof(tok), "%s", o.name);
    snprintf(sub_subj, sizeof(sub_subj), "%s.ev.%s.xfer.failed", prefix, tok);
    s = sub_new(sub_subj);
    a = ev_agent(&o, "tcp");
    xt_register(*a, src, SLOT);
    t = xt_agent(tname, "tcp", 1);
    m = xt_register(t, dst, SLOT);
    xt_md_exchange(t, XFER_MD_ALL, *a);
    /* The target forgets the region the initiator still believes in:
     * the WRITE is refused there. */
    XT_STATUS_FATAL(xfer_mem_deregister(t, m), XFER_OK);
    st = write_notif(*a, src, SLOT, (uintptr_t)dst, tname, NULL, 0);
    XT_REQUIRE(st < 0, "a WRITE to a deregistered region gave %s",
               xt_status_name(st));
    snprintf(sentence, sizeof(sentence), "%s", last_sentence);
    XT_CHECK(strstr(sentence, "refused") != NULL, "the caller was told "
             "'%s'", sentence);
    doc = sub_wait(s, "xfer.failed", WAIT_MS);
    XT_CHECK(strcmp(jget_str(doc, "remote"), tname) == 0, "remote '%s'",
             jget_str(doc, "remote"));
    XT_CHECK(strcmp(jget_str(doc, "backend"), "tcp") == 0, "backend '%s'",
             jget_str(doc, "backend"));
    XT_CHECK(strcmp(jget_str(doc, "op"), "WRITE") == 0, "op '%s'",
             jget_str(doc, "op"));
    XT_CHECK(strcmp(jget_str(doc, "code"), xt_status_name(st) + 5) == 0 ||
             strcmp(jget_str(doc, "code"), xt_status_name(st)) == 0,
             "code '%s', the caller got %s", jget_str(doc, "code"),
             xt_status_name(st));
    XT_CHECK(strcmp(jget_str(doc, "error"), sentence) == 0,
             "error '%s', the caller was told '%s'", jget_str(doc, "error"),
             sentence);
}

/* ---- notifications seen by another process --------------------------------- */

/* The subscriber child: argv = --sub URL SUBJECT FD SENDER NEXPECT.  The
 * target's memory is the memfd it inherited: on each notif event it
 * checks the slot the message names, byte for byte, at once. */
static int sub_main(char **argv)
{
    const char *subject = argv[3], *sender = argv[5];
    int fd = atoi(argv[4]);
    unsigned expect = (unsigned)atoi(argv[6]), good = 0, bad = 0, other = 0;
    unsigned char *mem;
    uint64_t end;
    char line[64];
    sub_t s;

    snprintf(url, sizeof(url), "%s", argv[2]);
    mem = mmap(NULL, (size_t)SLOT * NSLOTS, PROT_READ, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED || !sub_open(&s, subject)) {
        xt_say("FAIL cannot map or subscribe");
        return 1;
    }
    xt_say("READY");
    end = xt_now_ms() + 60000;
    while (good + bad < expect && xt_now_ms() < end) {
        json_t *doc = sub_next(&s, 100, NULL, 0);
        char msg[128] = "";
        unsigned slot = 0;
        unsigned long long seed = 0;
        long off;

        if (doc == NULL)
            continue;
        if (strcmp(jget_str(doc, "from"), sender) != 0) {
            other++;
        } else if (xfer__b64_decode(jget_str(doc, "msg_b64"), msg,
                                    sizeof(msg) - 1) < 0 ||
                   sscanf(msg, "slot %u seed %llu", &slot, &seed) != 2 ||
                   slot >= NSLOTS) {
            fprintf(stderr, "sub: a notif event I cannot read\n");
            bad++;
        } else if ((off = xt_check(mem + (size_t)slot * SLOT, SLOT,
                                   seed)) >= 0) {
            fprintf(stderr, "sub: slot %u (seed %llu) differs at byte %ld "
                    "when its notif event arrived\n", slot, seed, off);
            bad++;
        } else {
            good++;
        }
        json_decref(doc);
    }
    /* Anything from the unfollowed sender came before (events keep
     * their order); a last look for stragglers. */
    for (json_t *doc; (doc = sub_next(&s, 300, NULL, 0)) != NULL;) {
        if (strcmp(jget_str(doc, "from"), sender) != 0)
            other++;
        json_decref(doc);
    }
    xt_say("DONE good=%u bad=%u other=%u", good, bad, other);
    sub_close(&s);
    munmap(mem, (size_t)SLOT * NSLOTS);
    nats_Close();
    while (fgets(line, sizeof(line), stdin) != NULL)
        ;
    return 0;
}

static void fd_cleanup(void *arg)
{
    close((int)(intptr_t)arg);
}

static void map_cleanup(void *arg)
{
    munmap(arg, (size_t)SLOT * NSLOTS);
}

static void test_notif_other_process(void)
{
    const char *prefix = new_prefix();
    const char *iname = xt_name("evini"), *jname = xt_name("evother");
    char subject[256], fdbuf[16], nbuf[16], line[256], msg[64];
    uint64_t seed = xt_seed();
    unsigned good = 99, bad = 99, other = 99;
    xfer_agent_opts_t o;
    xfer_agent_t **t, *ini, *other_ini;
    unsigned char *mem, *src = xt_alloc(SLOT);
    xt_notifs_t *got = xt_notifs_new();
    xt_proc_t p;
    int fd;

    printf("seed %" PRIu64 "\n", seed);
    fd = memfd_create("xfer-test-target", 0);   /* inherited by the child */
    XT_REQUIRE(fd >= 0 && ftruncate(fd, (off_t)SLOT * NSLOTS) == 0,
               "memfd: %s", strerror(errno));
    xt_defer_late(fd_cleanup, (void *)(intptr_t)fd);
    mem = mmap(NULL, (size_t)SLOT * NSLOTS, PROT_READ | PROT_WRITE,
               MAP_SHARED, fd, 0);
    XT_REQUIRE(mem != MAP_FAILED, "mmap: %s", strerror(errno));
    xt_defer_late(map_cleanup, mem);

    ev_opts(&o, xt_name("evtgt"), prefix, XFER_NATS_OFF_STATS);
    snprintf(subject, sizeof(subject), "%s.ev.%s.notif", prefix, o.name);
    snprintf(fdbuf, sizeof(fdbuf), "%d", fd);
    snprintf(nbuf, sizeof(nbuf), "%d", NSLOTS);
    {
        char *argv[] = {self_exe, "--sub", url, subject, fdbuf,
                        (char *)iname, nbuf, NULL};

        xt_proc_start(&p, "subscriber", argv);
    }
    XT_REQUIRE(strcmp(xt_proc_line(&p, line, sizeof(line), WAIT_MS),
                      "READY") == 0, "subscriber: %s", line);

    t = ev_agent(&o, "tcp");
    xt_register(*t, mem, (size_t)SLOT * NSLOTS);
    XT_STATUS_FATAL(xfer_events_notif(*t, iname, 1), XFER_OK);
    ini = xt_agent(iname, "tcp", 1);
    other_ini = xt_agent(jname, "tcp", 1);
    xt_register(ini, src, SLOT);
    xt_register(other_ini, src, SLOT);
    xt_md_exchange(*t, XFER_MD_ALL, ini);
    xt_md_exchange(*t, XFER_MD_ALL, other_ini);

    /* An unfollowed sender first: its notifications are delivered, and
     * never published. */
    for (unsigned i = 0; i < 4; i++) {
        snprintf(msg, sizeof(msg), "unfollowed %u", i);
        XT_STATUS_FATAL(write_notif(other_ini, src, 64, (uintptr_t)mem,
                                    o.name, msg,
                                    strlen(msg)), XFER_OK);
    }
    for (unsigned i = 0; i < NSLOTS; i++) {
        xt_fill(src, SLOT, seed + i);
        snprintf(msg, sizeof(msg), "slot %u seed %" PRIu64, i, seed + i);
        XT_STATUS_FATAL(write_notif(ini, src, SLOT,
                                    (uintptr_t)mem + (size_t)i * SLOT,
                                    o.name, msg, strlen(msg)), XFER_OK);
    }
    XT_CHECK(xt_drain_until(*t, got, 4 + NSLOTS, WAIT_MS, false) ==
             4 + NSLOTS, "the target got %zu of %u notifications",
             got->count, 4 + NSLOTS);
    xt_proc_line(&p, line, sizeof(line), 60000 + WAIT_MS);
    XT_REQUIRE(sscanf(line, "DONE good=%u bad=%u other=%u", &good, &bad,
                      &other) == 3, "subscriber said '%s'", line);
    XT_CHECK(good == NSLOTS && bad == 0, "subscriber: %u slots right and %u "
             "wrong when their events arrived, of %u (seed %" PRIu64 ")",
             good, bad, NSLOTS, seed);
    XT_CHECK(other == 0, "subscriber saw %u events from the unfollowed "
             "sender", other);
    xt_proc_end(&p, WAIT_MS);
}

/* ---- the server killed and restarted mid-run --------------------------------- */

static void test_server_restart(void)
{
    const char *prefix = new_prefix();
    const char *iname = xt_name("evini");
    enum { ROUNDS = 60, KILL_AT = 15, BACK_AT = 35 };
    char subject[256], msg[32];
    xfer_agent_opts_t o;
    xfer_agent_t **t, *ini;
    void *dst = xt_alloc(SLOT), *src = xt_alloc(SLOT);
    xt_notifs_t *got = xt_notifs_new();
    unsigned seen = 0, last = 0;
    bool any = false;
    sub_t *s;

    ev_opts(&o, xt_name("evtgt"), prefix, XFER_NATS_OFF_STATS);
    snprintf(subject, sizeof(subject), "%s.ev.%s.notif", prefix, o.name);
    s = sub_new(subject);
    t = ev_agent(&o, "tcp");
    xt_register(*t, dst, SLOT);
    XT_STATUS_FATAL(xfer_events_notif(*t, NULL, 1), XFER_OK);
    ini = xt_agent(iname, "tcp", 1);
    xt_register(ini, src, SLOT);
    xt_md_exchange(*t, XFER_MD_ALL, ini);
    for (unsigned i = 0; i < ROUNDS; i++) {
        uint64_t t0 = xt_now_ms();

        if (i == KILL_AT)
            xt_nats_kill(server);
        if (i == BACK_AT) {
            XT_REQUIRE(xt_nats_restart(server), "nats-server did not come "
                       "back (%s)", xt_nats_dir(server));
            /* Both clients back, the subscription at the server again:
             * what the agent publishes from now on must arrive. */
            EV_WAIT(*t, s_.connected && s_.reconnects >= 1, WAIT_MS);
            while (natsConnection_FlushTimeout(s->nc, 200) != NATS_OK &&
                   xt_now_ms() < t0 + WAIT_MS)
                ;
            t0 = xt_now_ms();
        }
        xt_fill(src, SLOT, i);
        snprintf(msg, sizeof(msg), "round %u", i);
        XT_STATUS_FATAL(write_notif(ini, src, SLOT, (uintptr_t)dst, o.name,
                                    msg, strlen(msg)), XFER_OK);
        XT_CHECK(xt_now_ms() - t0 < WAIT_MS, "round %u took %" PRIu64 " ms",
                 i, xt_now_ms() - t0);
    }
    XT_CHECK(xt_drain_until(*t, got, ROUNDS, WAIT_MS, false) == ROUNDS,
             "%zu of %u notifications reached xfer_notif_drain", got->count,
             (unsigned)ROUNDS);
    for (size_t i = 0; i < got->count; i++) {
        snprintf(msg, sizeof(msg), "round %zu", i);
        XT_CHECK(got->items[i].len == strlen(msg) &&
                 memcmp(got->items[i].msg, msg, strlen(msg)) == 0,
                 "notification %zu is not '%s'", i, msg);
    }
    /* Events after the outage arrive, in order. */
    for (json_t *doc; (doc = sub_next(s, seen < ROUNDS - BACK_AT ? WAIT_MS
                                                                  : 300,
                                        NULL, 0)) != NULL;) {
        char b[64] = "";
        unsigned r;

        xfer__b64_decode(jget_str(doc, "msg_b64"), b, sizeof(b) - 1);
        if (sscanf(b, "round %u", &r) == 1) {
            XT_CHECK(!any || r > last, "round %u's event after %u's", r,
                     last);
            any = true;
            last = r;
            if (r >= BACK_AT)
                seen++;
        }
        json_decref(doc);
    }
    XT_CHECK(seen == ROUNDS - BACK_AT, "%u of the %u notif events after "
             "the restart arrived", seen, ROUNDS - BACK_AT);
    XT_CHECK(ev_stats(*t).reconnects >= 1, "reconnects %" PRIu64,
             ev_stats(*t).reconnects);
}

/* ---- an outage longer than the queue ------------------------------------------ */

static void test_outage_drops(void)
{
    const char *prefix = new_prefix();
    const char *iname = xt_name("evini");
    enum { QUEUE = 32, BURST = 100 };
    xfer_agent_opts_t o;
    xfer_agent_t **t, *ini;
    void *dst = xt_alloc(SLOT), *src = xt_alloc(SLOT);
    xfer_events_stats_t before, after;
    char subject[256];
    uint64_t last_seq = 0;
    json_t *doc;
    sub_t *s;

    ev_opts(&o, xt_name("evtgt"), prefix, XFER_NATS_OFF_STATS);
    o.nats_queue = QUEUE;
    t = ev_agent(&o, "tcp");
    xt_register(*t, dst, SLOT);
    XT_STATUS_FATAL(xfer_events_notif(*t, iname, 1), XFER_OK);
    ini = xt_agent(iname, "tcp", 1);
    xt_register(ini, src, SLOT);
    xt_md_exchange(*t, XFER_MD_ALL, ini);
    EV_WAIT(*t, s_.connected && s_.queued == 0, WAIT_MS);
    xt_nats_kill(server);
    EV_WAIT(*t, !s_.connected, WAIT_MS);
    before = ev_stats(*t);
    for (unsigned i = 0; i < BURST; i++) {
        uint64_t t0 = xt_now_ms();

        XT_STATUS_FATAL(write_notif(ini, src, 64, (uintptr_t)dst, o.name,
                                    "burst", 5), XFER_OK);
        XT_CHECK(xt_now_ms() - t0 < WAIT_MS, "transfer %u took %" PRIu64
                 " ms", i, xt_now_ms() - t0);
    }
    after = ev_stats(*t);
    XT_CHECK(after.dropped - before.dropped == BURST - QUEUE,
             "dropped %" PRIu64 " of a burst of %u with room for %u",
             after.dropped - before.dropped, (unsigned)BURST,
             (unsigned)QUEUE);
    XT_CHECK(after.queued == QUEUE, "queued %" PRIu64 ", bound %u",
             after.queued, (unsigned)QUEUE);
    XT_REQUIRE(xt_nats_restart(server), "nats-server did not come back");
    snprintf(subject, sizeof(subject), "%s.ev.>", prefix);
    s = sub_new(subject);
    /* What was kept goes out after the reconnect. */
    EV_WAIT(*t, s_.connected && s_.queued == 0 &&
                s_.published >= before.published + QUEUE, WAIT_MS);
    /* A later event shows the gap in seq: one per event, sent or not. */
    XT_STATUS_FATAL(write_notif(ini, src, 64, (uintptr_t)dst, o.name,
                                "after", 5), XFER_OK);
    while ((doc = sub_next(s, WAIT_MS, NULL, 0)) != NULL) {
        char b[16] = "";

        last_seq = jget_u64(doc, "seq");
        xfer__b64_decode(jget_str(doc, "msg_b64"), b, sizeof(b) - 1);
        json_decref(doc);
        if (strcmp(b, "after") == 0)
            break;
    }
    XT_CHECK(last_seq == before.published + before.dropped + BURST + 1,
             "the event after the burst has seq %" PRIu64 ", want %" PRIu64,
             last_seq, before.published + before.dropped + BURST + 1);
}

/* ---- telemetry snapshots ------------------------------------------------------ */

static void test_stats_snapshots(void)
{
    const char *prefix = new_prefix();
    enum { PERIOD = 200, WRITES = 5 };
    xfer_agent_opts_t o;
    xfer_agent_t **a, *t;
    const char *tname = xt_name("evtgt");
    void *dst = xt_alloc(SLOT), *src = xt_alloc(SLOT);
    char subject[256];
    unsigned count = 0;
    uint64_t t0, done_ms, prev_ts = 0, min_gap = UINT64_MAX, ops = 0;
    sub_t *s;

    ev_opts(&o, xt_name("evini"), prefix, 0);
    o.nats_stats_ms = PERIOD;
    snprintf(subject, sizeof(subject), "%s.ev.%s.stats", prefix, o.name);
    s = sub_new(subject);
    a = ev_agent(&o, "tcp");
    xt_register(*a, src, SLOT);
    t = xt_agent(tname, "tcp", 1);
    xt_register(t, dst, SLOT);
    xt_md_exchange(t, XFER_MD_ALL, *a);
    for (unsigned i = 0; i < WRITES; i++)
        XT_STATUS_FATAL(write_notif(*a, src, 4096, (uintptr_t)dst, tname,
                                    NULL, 0), XFER_OK);
    done_ms = xt_now_ms();
    t0 = xt_now_ms();
    while (xt_now_ms() - t0 < 3000) {
        json_t *doc = sub_next(s, 100, NULL, 0), *total;
        uint64_t ts;

        if (doc == NULL)
            continue;
        count++;
        ts = jget_u64(doc, "ts_ms");
        if (prev_ts != 0 && ts - prev_ts < min_gap)
            min_gap = ts - prev_ts;
        prev_ts = ts;
        total = json_object_get(json_object_get(doc, "stats"), "total");
        XT_CHECK(total != NULL && json_is_object(json_object_get(doc,
                                                                 "events")),
                 "a stats event without stats.total or events");
        if (xt_now_ms() > done_ms + 2 * PERIOD)
            ops = jget_u64(total, "write_ops");
        json_decref(doc);
    }
    /* About 15 in 3 s; generous, the machine may be slow. */
    XT_CHECK(count >= 3 && count <= 3000 / PERIOD + 5, "%u snapshots in 3 s "
             "at one per %u ms", count, (unsigned)PERIOD);
    XT_CHECK(min_gap > 0, "two snapshots %" PRIu64 " ms apart", min_gap);
    XT_CHECK(ops == WRITES, "the last snapshot counts %" PRIu64 " WRITEs of "
             "%u", ops, (unsigned)WRITES);
}

/* ---- options --------------------------------------------------------------------- */

static void test_bad_options(void)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_events_stats_t es;

    ev_opts(&o, xt_name("evbad"), NULL, 0);
    o.nats_url = "http://127.0.0.1:4222";
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_CONFIG);
    XT_ERR_HAS("nats_url", "http://127.0.0.1:4222", "nats://host:port");
    o.nats_url = NULL;
    setenv("XFER_NATS_URL", "127.0.0.1:4222", 1);
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_CONFIG);
    XT_ERR_HAS("XFER_NATS_URL", "nats://host:port");
    unsetenv("XFER_NATS_URL");

    o.nats_url = url;
    {
        const char *bad[] = {"", "a.*", "a..b", "x.>", ".a", "a.", "a b"};

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            o.nats_prefix = bad[i];
            XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_CONFIG);
            XT_ERR_HAS("nats_prefix", "no wildcards");
        }
    }
    o.nats_prefix = NULL;
    o.nats_stats_ms = 50;
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_CONFIG);
    XT_ERR_HAS("nats_stats_ms 50", "at least 100");
    o.nats_stats_ms = 0;
    o.nats_ttl_s = 1;
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_CONFIG);
    XT_ERR_HAS("nats_ttl_s 1", "at least 2");
    o.nats_ttl_s = 0;
    o.nats_off = 0x80;
    XT_STATUS(xfer_agent_create(&o, &a), XFER_ERR_CONFIG);
    XT_ERR_HAS("nats_off", "unknown bits");
    XT_CHECK(a == NULL, "an agent was made of bad options");

    /* No event plane: the calls say so. */
    a = xt_agent(xt_name("evnone"), NULL, 0);
    XT_STATUS(xfer_events_notif(a, NULL, 1), XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("no event plane", "nats_url");
    XT_STATUS(xfer_events_stats(a, &es, sizeof(es)), XFER_ERR_NOT_SUPPORTED);
    XT_ERR_HAS("no event plane");
}

/* The names xfer_events_notif follows are bounded. */
static void test_follow_bound(void)
{
    xfer_agent_opts_t o;
    xfer_agent_t **a;
    char name[32];

    ev_opts(&o, xt_name("evfollow"), new_prefix(), XFER_NATS_OFF_STATS);
    a = ev_agent(&o, NULL);
    for (unsigned i = 0; i < 1024; i++) {
        snprintf(name, sizeof(name), "peer-%u", i);
        XT_STATUS_FATAL(xfer_events_notif(*a, name, 1), XFER_OK);
    }
    XT_STATUS(xfer_events_notif(*a, "peer-0", 1), XFER_OK);
    XT_STATUS(xfer_events_notif(*a, "one-more", 1), XFER_ERR_INVALID);
    XT_ERR_HAS("already follows 1024 senders");
    XT_STATUS(xfer_events_notif(*a, "peer-7", 0), XFER_OK);
    XT_STATUS(xfer_events_notif(*a, "one-more", 1), XFER_OK);
    XT_STATUS(xfer_events_notif(*a, NULL, 0), XFER_OK);
    XT_STATUS(xfer_events_notif(*a, "another", 1), XFER_OK);
    XT_STATUS(xfer_events_notif(*a, "", 1), XFER_ERR_INVALID);
    XT_ERR_HAS("1 to 255 bytes");
}

static void test_server_late(void)
{
    const char *prefix = new_prefix();
    xfer_agent_opts_t o;
    xfer_agent_t **a;
    char subject[256];
    json_t *doc;
    sub_t *s;

    xt_nats_halt(server);
    ev_opts(&o, xt_name("evlate"), prefix, XFER_NATS_OFF_STATS);
    a = ev_agent(&o, NULL);     /* the server is down: it starts anyway */
    XT_CHECK(ev_stats(*a).connected == 0, "connected to a server that is "
             "down");
    XT_STATUS(xfer_events_notif(*a, "someone", 1), XFER_OK);
    XT_REQUIRE(xt_nats_restart(server), "nats-server did not come back");
    snprintf(subject, sizeof(subject), "%s.ev.>", prefix);
    s = sub_new(subject);
    EV_WAIT(*a, s_.connected && s_.queued == 0, WAIT_MS);
    XT_STATUS_FATAL(xfer_backend_add(*a, "tcp", NULL), XFER_OK);
    doc = sub_wait(s, "backend.added", WAIT_MS);
    /* agent.up went first, whether we were there for it or not. */
    XT_CHECK(jget_u64(doc, "seq") == 2, "backend.added has seq %" PRIu64,
             jget_u64(doc, "seq"));
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_bad_options),
        XT_TEST(test_lifecycle),
        XT_TEST(test_failure_event),
        XT_TEST(test_notif_other_process),
        XT_TEST(test_stats_snapshots),
        XT_TEST(test_outage_drops),
        XT_TEST(test_server_restart),
        XT_TEST(test_follow_bound),
        XT_TEST(test_server_late),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"nats-events", tests}};
    ssize_t n;
    int rc;

    if (argc == 7 && strcmp(argv[1], "--sub") == 0)
        return sub_main(argv);
    n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    server = xt_nats_start();
    if (server == NULL)
        return 1;
    snprintf(url, sizeof(url), "%s", xt_nats_url(server));
    rc = xt_run(argv[0], suites, 1);
    xt_nats_stop(server);
    nats_Close();
    return rc;
}
