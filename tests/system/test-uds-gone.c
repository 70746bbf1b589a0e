/* test-uds-gone.c - uds's shared-memory path against a target that is gone:
 * killed and reaped, killed while posts stream, closed, or deregistered.
 *
 * On the shm path a post is a memcpy into the target's memfd, mapped here
 * for the life of the connection: nothing in the copy itself fails when
 * the target is gone, so these tests check that the post does (issue 14).
 * The target is another process (this program again, role "target"); the
 * initiator has no progress thread unless a test says so, so that nothing
 * but the post itself can notice. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/xt.h"

#define WAIT_MS 20000
#define LINE_MAX_ (256u << 10)
#define REGION (64u << 10)   /* the target's xfer_mem_alloc allocation */
#define XLEN 4096u           /* bytes each WRITE and READ moves */
/* The initiator: the shm path only, and a timeout no test waits for, so
 * that a request ended by the timeout cannot pass for a prompt failure. */
#define INI_SPEC "uds:mode=shm,timeout_ms=3600000"
#define SHM_STATE "mode=shm; peers: 1 via shm, 0 via cma, 0 via socket"

static char self_exe[4096];

/* ---- the target process ----------------------------------------------------- */

/* Take the uds plugin's lock: the progress thread moves framed data
 * into and out of the region under it, so this orders our own accesses
 * with its (the edge through the pipe from the test is one TSan does not
 * see). */
static void plugin_sync(xfer_agent_t *a)
{
    xfer_backend_t *b = NULL;
    char state[XFER_STATE_MAX];

    if (xfer_backend_find(a, "uds", &b) == XFER_OK)
        (void)xfer_backend_state(b, state, sizeof state);
}

/* An agent with a progress thread and REGION bytes from xfer_mem_alloc,
 * registered whole for READ and WRITE (so uds shares its memfd); its
 * first line is "MD <blob>".  Then, one answer per line:
 *   fill <seed>   the region holds the pattern of seed   -> "ok"
 *   check <seed>  whether the first XLEN bytes hold it    -> "ok" | "bad N"
 *   destroy       xfer_agent_destroy, the process lives on -> "ok"
 *   dereg         xfer_mem_deregister, then xfer_mem_free  -> "ok"
 *   quit          exit 0 */
static int target_main(const char *name)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *m = NULL;
    unsigned char *mem = NULL;
    xfer_desc_t d;
    xfer_dlist_t dl;
    char *blob = NULL, *line = malloc(LINE_MAX_);
    size_t len;

    alarm(600); /* never outlive a lost test */
    xfer_agent_opts_init(&o);
    o.name = name;
    if (!line || xfer_agent_create(&o, &a) != XFER_OK ||
        xfer_backend_add(a, "uds", NULL) != XFER_OK ||
        xfer_mem_alloc(a, REGION, 0, (void **)&mem) != XFER_OK) {
        xt_say("err setup: %s", xfer_last_error());
        return 1;
    }
    d = (xfer_desc_t){ (uintptr_t)mem, REGION, 0 };
    dl = xt_dlist(&d, 1);
    if (xfer_mem_register(a, &dl, NULL, &m) != XFER_OK ||
        xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) != XFER_OK ||
        memchr(blob, '\n', len)) {
        xt_say("err metadata: %s", xfer_last_error());
        return 1;
    }
    xt_say("MD %s", blob);
    xfer_free(blob);
    while (fgets(line, (int)LINE_MAX_, stdin)) {
        uint64_t seed;

        if (sscanf(line, "fill %" SCNx64, &seed) == 1) {
            xt_fill(mem, REGION, seed);
            plugin_sync(a);
            xt_say("ok");
        } else if (sscanf(line, "check %" SCNx64, &seed) == 1) {
            long at;

            plugin_sync(a);
            at = xt_check(mem, XLEN, seed);
            if (at < 0)
                xt_say("ok");
            else
                xt_say("bad %ld", at);
        } else if (!strncmp(line, "destroy", 7)) {
            xfer_agent_destroy(a); /* unmaps the allocation too */
            a = NULL;
            mem = NULL;
            xt_say("ok");
        } else if (!strncmp(line, "dereg", 5)) {
            if (xfer_mem_deregister(a, m) != XFER_OK ||
                xfer_mem_free(a, mem) != XFER_OK) {
                xt_say("err dereg: %s", xfer_last_error());
                continue;
            }
            mem = NULL;
            xt_say("ok");
        } else if (!strncmp(line, "quit", 4)) {
            break;
        } else {
            xt_say("err unknown command");
        }
    }
    if (a)
        xfer_agent_destroy(a);
    free(line);
    return 0;
}

/* ---- the initiator's side ----------------------------------------------------- */

static void proc_end(void *p) { xt_proc_end(p, 10000); }

/* A target process and an initiator agent whose WRITE and READ of XLEN
 * bytes of the target's region have each moved once through the mapped
 * memfd, byte for byte, as xfer_backend_state shows. */
struct pair {
    xt_proc_t *tgt;
    char name[64];
    xfer_agent_t *ini;
    xfer_backend_t *be;
    unsigned char *src, *dst;
    xfer_req_t *w, *r;
    char *line;
};

static void pair_state(struct pair *p, char *state, size_t len)
{
    XT_STATUS_FATAL(xfer_backend_state(p->be, state, len), XFER_OK);
}

static void pair_start(struct pair *p, int progress_thread)
{
    char *argv[] = { self_exe, "target", p->name, NULL };
    char state[XFER_STATE_MAX];
    uint64_t addr = 0, seed = xt_seed();
    json_t *root;
    xfer_desc_t l, r;
    xfer_dlist_t ll, rl;
    int n;

    snprintf(p->name, sizeof p->name, "%s", xt_name("gone"));
    p->line = xt_alloc(LINE_MAX_);
    p->tgt = xt_alloc(sizeof *p->tgt);
    xt_proc_start(p->tgt, p->name, argv);
    xt_defer(proc_end, p->tgt);
    xt_proc_line(p->tgt, p->line, LINE_MAX_, WAIT_MS);
    XT_REQUIRE(strncmp(p->line, "MD ", 3) == 0, "target said '%.200s'",
               p->line);
    root = xt_blob_parse(p->line + 3, strlen(p->line + 3));
    XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0), "addr"),
                           &addr), "no region address in the metadata");
    p->ini = xt_agent(xt_name("goneini"), INI_SPEC, progress_thread);
    XT_STATUS_FATAL(xfer_backend_find(p->ini, "uds", &p->be), XFER_OK);
    p->src = xt_alloc(XLEN);
    p->dst = xt_alloc(XLEN);
    xt_register(p->ini, p->src, XLEN);
    xt_register(p->ini, p->dst, XLEN);
    XT_STATUS_FATAL(xfer_md_load(p->ini, p->line + 3, strlen(p->line + 3),
                                 NULL, 0), XFER_OK);
    r = (xfer_desc_t){ (uintptr_t)addr, XLEN, 0 };
    rl = xt_dlist(&r, 1);
    l = (xfer_desc_t){ (uintptr_t)p->src, XLEN, 0 };
    ll = xt_dlist(&l, 1);
    XT_STATUS_FATAL(xfer_req_create(p->ini, XFER_OP_WRITE, &ll, &rl, p->name,
                                    NULL, &p->w), XFER_OK);
    xt_req_defer(p->w);
    l.addr = (uintptr_t)p->dst;
    ll = xt_dlist(&l, 1);
    XT_STATUS_FATAL(xfer_req_create(p->ini, XFER_OP_READ, &ll, &rl, p->name,
                                    NULL, &p->r), XFER_OK);
    xt_req_defer(p->r);
    /* The target checks each request's first post (frames); the memfd
     * and the stamp come with its answers; then the copies are direct. */
    xt_fill(p->src, XLEN, seed);
    for (n = 0; n < 3; n++)
        XT_STATUS_FATAL(xt_post_wait(p->w, XFER_NOTIF_NONE, 0, WAIT_MS),
                        XFER_OK);
    pair_state(p, state, sizeof state);
    XT_REQUIRE(!strcmp(state, SHM_STATE), "after three WRITEs: \"%s\"",
               state);
    XT_REQUIRE(!strcmp(xt_proc_ask(p->tgt, p->line, LINE_MAX_, WAIT_MS,
                                   "check %" PRIx64, seed), "ok"),
               "the WRITE did not land: %s", p->line);
    seed = xt_seed();
    XT_REQUIRE(!strcmp(xt_proc_ask(p->tgt, p->line, LINE_MAX_, WAIT_MS,
                                   "fill %" PRIx64, seed), "ok"),
               "target: %s", p->line);
    for (n = 0; n < 2; n++) {
        memset(p->dst, 0, XLEN);
        XT_STATUS_FATAL(xt_post_wait(p->r, XFER_NOTIF_NONE, 0, WAIT_MS),
                        XFER_OK);
        XT_REQUIRE(xt_check(p->dst, XLEN, seed) < 0, "READ %d: wrong bytes",
                   n);
    }
    pair_state(p, state, sizeof state);
    XT_REQUIRE(!strcmp(state, SHM_STATE), "after two READs: \"%s\"", state);
    /* One more of each, both on the shm path. */
    XT_STATUS_FATAL(xfer_req_post(p->w, XFER_NOTIF_NONE, 0), XFER_OK);
    XT_STATUS_FATAL(xfer_req_post(p->r, XFER_NOTIF_NONE, 0), XFER_OK);
}

static void pair_kill(struct pair *p)
{
    int st;

    xt_proc_kill(p->tgt);
    XT_REQUIRE(waitpid(p->tgt->pid, &st, 0) == p->tgt->pid, "waitpid: %s",
               strerror(errno));
    XT_REQUIRE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
               "the target ended with status 0x%x", st);
}

/* The post itself answers REMOTE_DISCONNECT, with a sentence naming the
 * target and what became of it; never OK, never later (no progress runs,
 * and the timeout is an hour). */
static void post_refused(struct pair *p, xfer_req_t *req, const char *why)
{
    if (XT_STATUS(xfer_req_post(req, XFER_NOTIF_NONE, 0),
                  XFER_ERR_REMOTE_DISCONNECT))
        XT_ERR_HAS(p->name, "is gone", why);
}

/* ---- killed and reaped -------------------------------------------------------- */

/* Once waitpid has reaped the target, a WRITE and a READ on the shm path
 * fail at once, and keep failing after progress closed the connection. */
static void test_killed_then_post(void)
{
    struct pair p;
    xfer_status_t s;

    memset(&p, 0, sizeof p);
    pair_start(&p, 0);
    pair_kill(&p);
    post_refused(&p, p.w, "its process ended");
    post_refused(&p, p.r, "its process ended");
    post_refused(&p, p.w, "its process ended");
    /* Progress sees the closed socket; later posts still fail. */
    for (int i = 0; i < 10; i++)
        (void)xfer_progress(p.ini);
    for (int i = 0; i < 2; i++) {
        s = xfer_req_post(i ? p.r : p.w, XFER_NOTIF_NONE, 0);
        if (s == XFER_IN_PROG)
            s = xt_wait_req(i ? p.r : p.w, WAIT_MS);
        XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT);
    }
}

/* ---- killed while posts stream ------------------------------------------------ */

struct stream {
    struct pair *p;
    int reaped;     /* set by the test once waitpid returned */
    int stop;
    long ok;        /* OK answers before the target was reaped */
    long after;     /* posts begun after it was reaped */
    long late_ok;   /* ... that answered OK: the hole */
    long ok_after_fail; /* OK after a post had failed */
    long other;     /* failures other than REMOTE_DISCONNECT */
    xfer_status_t other_st;
    char other_msg[512];
};

/* WRITE and READ by turns as fast as they answer.  A post that begins
 * after the target was reaped must fail; so must every post after the
 * first one that failed. */
static void *stream_main(void *arg)
{
    struct stream *s = arg;
    int failed = 0;

    for (unsigned long i = 0; !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE);
         i++) {
        xfer_req_t *req = i & 1 ? s->p->r : s->p->w;
        int reaped = __atomic_load_n(&s->reaped, __ATOMIC_SEQ_CST);
        xfer_status_t st = xfer_req_post(req, XFER_NOTIF_NONE, 0);

        if (st == XFER_IN_PROG)
            st = xfer_req_wait(req, WAIT_MS);
        if (reaped)
            __atomic_add_fetch(&s->after, 1, __ATOMIC_RELEASE);
        if (st == XFER_OK) {
            if (reaped)
                s->late_ok++;
            else
                __atomic_add_fetch(&s->ok, 1, __ATOMIC_RELEASE);
            if (failed)
                s->ok_after_fail++;
            continue;
        }
        failed = 1;
        if (st != XFER_ERR_REMOTE_DISCONNECT && !s->other++) {
            s->other_st = st;
            snprintf(s->other_msg, sizeof s->other_msg, "%s",
                     xfer_last_error());
        }
    }
    return NULL;
}

static long load(long *v) { return __atomic_load_n(v, __ATOMIC_ACQUIRE); }

static void killed_mid_stream(int progress_thread)
{
    struct pair p;
    struct stream s;
    pthread_t tid;
    uint64_t end;

    memset(&p, 0, sizeof p);
    memset(&s, 0, sizeof s);
    pair_start(&p, progress_thread);
    s.p = &p;
    XT_REQUIRE(pthread_create(&tid, NULL, stream_main, &s) == 0, "thread");
    /* Posts are under way on the shm path when the kill comes. */
    end = xt_now_ms() + WAIT_MS;
    while (load(&s.ok) < 2000 && xt_now_ms() < end)
        xt_sleep_ms(1);
    pair_kill(&p);
    __atomic_store_n(&s.reaped, 1, __ATOMIC_SEQ_CST);
    end = xt_now_ms() + WAIT_MS;
    while (load(&s.after) < 2000 && xt_now_ms() < end)
        xt_sleep_ms(1);
    __atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
    pthread_join(tid, NULL);
    printf("%s: %ld posts OK before the target was reaped, %ld after it\n",
           progress_thread ? "progress thread" : "no progress thread", s.ok,
           s.after);
    XT_CHECK(s.ok >= 2000, "only %ld posts completed before the kill", s.ok);
    XT_CHECK(s.after >= 2000, "only %ld posts after the target was reaped",
             s.after);
    XT_CHECK(s.late_ok == 0, "%ld of %ld posts begun after the target was "
             "reaped answered XFER_OK (their data went into its orphaned "
             "memfd)", s.late_ok, s.after);
    XT_CHECK(s.ok_after_fail == 0, "%ld posts answered XFER_OK after one had "
             "failed", s.ok_after_fail);
    XT_CHECK(s.other == 0, "%ld posts failed otherwise, the first %s: %s",
             s.other, xt_status_name(s.other_st), s.other_msg);
}

static void test_killed_mid_stream(void) { killed_mid_stream(0); }
static void test_killed_mid_stream_pt(void) { killed_mid_stream(1); }

/* ---- closed, deregistered ------------------------------------------------------ */

/* The target destroys its agent and lives on: its memory is no longer
 * shared, the posts fail at once. */
static void test_closed_then_post(void)
{
    struct pair p;

    memset(&p, 0, sizeof p);
    pair_start(&p, 0);
    XT_REQUIRE(!strcmp(xt_proc_ask(p.tgt, p.line, LINE_MAX_, WAIT_MS,
                                   "destroy"), "ok"), "target: %s",
               p.line);
    post_refused(&p, p.w, "closed its uds backend");
    post_refused(&p, p.r, "closed its uds backend");
}

/* The target deregisters and frees the allocation: the stamp moved, so
 * the posts go to the target, which refuses the key (the documented
 * XFER_ERR_ACCESS); nothing lands in the freed pages. */
static void test_deregistered_then_post(void)
{
    struct pair p;
    xfer_status_t s;

    memset(&p, 0, sizeof p);
    pair_start(&p, 0);
    XT_REQUIRE(!strcmp(xt_proc_ask(p.tgt, p.line, LINE_MAX_, WAIT_MS,
                                   "dereg"), "ok"), "target: %s",
               p.line);
    for (int i = 0; i < 2; i++) {
        s = xfer_req_post(i ? p.r : p.w, XFER_NOTIF_NONE, 0);
        if (s == XFER_IN_PROG)
            s = xt_wait_req(i ? p.r : p.w, WAIT_MS);
        if (XT_STATUS(s, XFER_ERR_ACCESS))
            XT_ERR_HAS(p.name, "refused", "deregistered memory");
    }
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_killed_then_post),
        XT_TEST(test_killed_mid_stream),
        XT_TEST(test_killed_mid_stream_pt),
        XT_TEST(test_closed_then_post),
        XT_TEST(test_deregistered_then_post),
        XT_END,
    };
    static const xt_suite_t suites[] = { { "uds-gone", tests } };
    ssize_t n;

    if (argc == 3 && !strcmp(argv[1], "target"))
        return target_main(argv[2]);
    n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        xt_skip("cannot find this program (/proc/self/exe)");
    self_exe[n] = '\0';
    return xt_run(argv[0], suites, 1);
}
