/* test-bench-coord.c - xfer-bench's etcd coordinator against a real etcd
 * on free loopback ports: ranks, allgather, barriers, full and dead groups. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/xfer-bench/xb.h"
#include "core/base64.h"
#include "tests/common/etcd.h"
#include "tests/common/xt.h"

/* The coordinator reads these once per process (children are fresh). */
#define TTL_S "2"                  /* XB_ETCD_TTL_S: dead ranks free soon */
#define TIMEOUT_MS 6000            /* XB_TIMEOUT_MS: above the TTL */
#define WAIT_MS 20000              /* a child's next line */
#define NBARRIERS 20
#define SHORT_MS 1500              /* XB_TIMEOUT_MS of the heartbeat test */
#define BEAT_MS 250                /* its heartbeat period */

static xt_etcd_t *etcd;
static const char *endpoint;      /* its http://127.0.0.1:PORT */
static int kid_timeout_ms;        /* new children's XB_TIMEOUT_MS (0: as is) */

/* ---- etcd ------------------------------------------------------------------------- */

/* How many keys the group has in etcd: none once a run has left. */
static long group_keys(const char *group)
{
    char body[256], req[512], key[200], end[200];
    char *k64, *e64;
    const char *count;
    size_t n;
    long keys = -1;

    n = (size_t)snprintf(key, sizeof(key), "/xfer-bench/%s/", group);
    memcpy(end, key, n + 1);
    end[n - 1]++;
    k64 = malloc(xfer__b64_encoded_size(n));
    e64 = malloc(xfer__b64_encoded_size(n));
    XT_REQUIRE(k64 != NULL && e64 != NULL, "out of memory");
    xfer__b64_encode(key, n, k64);
    xfer__b64_encode(end, n, e64);
    snprintf(req, sizeof(req), "{\"key\":\"%s\",\"range_end\":\"%s\","
             "\"count_only\":true}", k64, e64);
    if (xt_etcd_post(etcd, "/v3/kv/range", req, body, sizeof(body)) &&
        strstr(body, "\"header\"")) {
        /* etcd leaves a zero count out of its answer. */
        count = strstr(body, "\"count\":\"");
        keys = count != NULL ? strtol(count + 9, NULL, 10) : 0;
    }
    free(k64);
    free(e64);
    return keys;
}

/* ---- the ranks: forked children that speak in lines -------------------------------- */

enum mode {
    JOIN,       /* join, say "rank R" or "fail ...", leave */
    FULL,       /* two allgathers checked, NBARRIERS barriers */
    HOLD,       /* join, then per line: "go" a barrier, "abort" abort,
                 * "beat MS" heartbeats for MS ms then a barrier;
                 * anything else: leave */
};

/* Blob k of rank r: its length and bytes, different for every pair. */
static size_t blob_len(int k, int r)
{
    static const size_t lens[2][3] = {{0, 65536, 100}, {7, 0, 65536}};

    return lens[k][r % 3];
}

static unsigned char blob_byte(int k, int r, size_t i)
{
    return (unsigned char)(i * 31u + (unsigned)r * 7u + (unsigned)k * 13u + 1);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void say(FILE *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void say(FILE *out, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    fflush(out);
}

/* One allgather of blob k; "" when every blob is what its rank sent. */
static int gather_check(struct xb_coord *c, int k, uint64_t *hash,
                        FILE *out)
{
    size_t len = blob_len(k, c->rank);
    unsigned char *mine = malloc(len + 1);
    struct xb_blob all[XB_MAX_RANKS];
    int bad = 0;

    for (size_t i = 0; i < len; i++)
        mine[i] = blob_byte(k, c->rank, i);
    if (xb_coord_allgather(c, mine, len, all, NULL) != 0) {
        free(mine);
        say(out, "fail %s", xb_error());
        return -1;
    }
    free(mine);
    for (int r = 0; r < c->size && !bad; r++) {
        const unsigned char *b = all[r].data;

        if (all[r].len != blob_len(k, r)) {
            say(out, "bad gather %d: rank %d sent %zu bytes, not %zu", k, r,
                all[r].len, blob_len(k, r));
            bad = 1;
        }
        for (size_t i = 0; i < all[r].len && !bad; i++)
            if (b[i] != blob_byte(k, r, i)) {
                say(out, "bad gather %d: rank %d byte %zu", k, r, i);
                bad = 1;
            }
        *hash = fnv(*hash, &all[r].len, sizeof(all[r].len));
        *hash = fnv(*hash, all[r].data, all[r].len);
    }
    xb_blobs_free(all, c->size);
    return bad ? -1 : 0;
}

static int kid_main(enum mode mode, const char *ep, const char *group,
                    int size, FILE *in, FILE *out)
{
    struct xb_coord c = {0};
    uint64_t hash = 0xcbf29ce484222325ull;
    char line[64];
    int i, beat_ms;

    if (xb_coord_etcd(&c, ep, group, size) != 0) {
        say(out, "fail %s", xb_error());
        return 0;
    }
    say(out, "rank %d", c.rank);
    if (mode == FULL) {
        if (gather_check(&c, 0, &hash, out) || gather_check(&c, 1, &hash, out))
            goto out;
        say(out, "gathered %" PRIx64, hash);
        for (i = 0; i < NBARRIERS; i++)
            if (xb_coord_barrier(&c, NULL) != 0) {
                say(out, "fail barrier %d: %s", i, xb_error());
                goto out;
            }
        say(out, "barriers ok");
    }
    while (mode == HOLD && fgets(line, sizeof(line), in) != NULL) {
        if (sscanf(line, "beat %d", &beat_ms) == 1) {
            /* A long point: the others wait, hearing that this rank works. */
            uint64_t end = xb_now_ns() / 1000000u + (uint64_t)beat_ms;

            while (xb_now_ns() / 1000000u < end) {
                if (xb_coord_heartbeat(&c) != 0) {
                    say(out, "fail heartbeat: %s", xb_error());
                    break;
                }
                xt_sleep_ms(BEAT_MS);
            }
            memcpy(line, "go", 3);
        }
        if (strncmp(line, "go", 2) == 0 && xb_coord_barrier(&c, NULL) == 0) {
            say(out, "barrier ok");
        } else if (strncmp(line, "go", 2) == 0) {
            say(out, "fail %s", xb_error());
            xb_coord_abort(&c, xb_error());
            break;
        } else if (strncmp(line, "abort", 5) == 0) {
            xb_coord_abort(&c, "disk on fire");
            say(out, "aborted");
            break;
        } else {
            break;
        }
    }
out:
    /* A failed rank has aborted; one that has not waits in close for
     * the others to leave. */
    xb_coord_close(&c);
    say(out, "closed");
    return 0;
}

typedef struct kid {
    int pid;
    FILE *in;                  /* lines to it */
    int rd;                    /* its lines */
    char buf[8192];
    size_t len;
    bool gone;                 /* killed on purpose */
} kid_t;

static void kid_end(void *arg)
{
    kid_t *k = arg;
    uint64_t end = xt_now_ms() + WAIT_MS;
    int status = 0;

    if (k->in != NULL)
        fclose(k->in);
    k->in = NULL;
    if (k->rd >= 0)
        close(k->rd);
    k->rd = -1;
    if (k->pid <= 0)
        return;
    while (waitpid(k->pid, &status, WNOHANG) == 0) {
        if (xt_now_ms() > end) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, &status, 0);
            XT_FAIL("child %d did not end within %d ms", k->pid, WAIT_MS);
            break;
        }
        xt_sleep_ms(10);
    }
    xt_child_forget(k->pid);
    if (!k->gone)
        XT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "child %d ended with status 0x%x", k->pid, status);
    k->pid = 0;
}

static void kid_free(void *arg)
{
    kid_end(arg);
    free(arg);
}

static kid_t *kid_start(enum mode mode, const char *ep, const char *group,
                        int size)
{
    kid_t *k = calloc(1, sizeof(*k));
    int to[2], from[2];

    XT_REQUIRE(k != NULL && pipe(to) == 0 && pipe(from) == 0,
               "pipe: %s", strerror(errno));
    fflush(NULL);
    k->pid = fork();
    XT_REQUIRE(k->pid >= 0, "fork: %s", strerror(errno));
    if (k->pid == 0) {
        FILE *in = fdopen(to[0], "r"), *out = fdopen(from[1], "w");
        int rc;

        free(k); /* the parent's */
        if (kid_timeout_ms > 0) {
            char ms[32];

            snprintf(ms, sizeof(ms), "%d", kid_timeout_ms);
            setenv("XB_TIMEOUT_MS", ms, 1);
        }
        close(to[1]);
        close(from[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        rc = kid_main(mode, ep, group, size, in, out);
        fclose(in);
        fclose(out);
        xt_child_exit(rc);
    }
    close(to[0]);
    close(from[1]);
    xt_child_add(k->pid);
    k->in = fdopen(to[1], "w");
    k->rd = from[0];
    xt_defer(kid_free, k);
    return k;
}

/* The child's next line; fatal when it says nothing within WAIT_MS. */
static char *kid_line(kid_t *k, char *line, size_t size)
{
    uint64_t end = xt_now_ms() + WAIT_MS;

    for (;;) {
        char *nl = memchr(k->buf, '\n', k->len);
        struct pollfd p = {k->rd, POLLIN, 0};
        uint64_t now = xt_now_ms();
        ssize_t n;

        if (nl != NULL) {
            size_t l = (size_t)(nl - k->buf);

            snprintf(line, size, "%.*s", (int)l, k->buf);
            memmove(k->buf, nl + 1, k->len - l - 1);
            k->len -= l + 1;
            return line;
        }
        XT_REQUIRE(now < end && k->len < sizeof(k->buf),
                   "child %d said nothing within %d ms", k->pid, WAIT_MS);
        if (poll(&p, 1, (int)(end - now)) <= 0)
            continue;
        n = read(k->rd, k->buf + k->len, sizeof(k->buf) - k->len);
        XT_REQUIRE(n > 0, "child %d ended without a line", k->pid);
        k->len += (size_t)n;
    }
}

static void kid_say(kid_t *k, const char *what)
{
    fprintf(k->in, "%s\n", what);
    fflush(k->in);
}

/* The rank a child joined as; fatal if it failed. */
static int kid_rank(kid_t *k)
{
    char line[1024];
    int r = -1;

    kid_line(k, line, sizeof(line));
    XT_REQUIRE(sscanf(line, "rank %d", &r) == 1, "child %d: '%s'", k->pid,
               line);
    return r;
}

/* A line that must start with want; returned for more checks. */
static char *kid_expect(kid_t *k, const char *want, char *line, size_t size)
{
    kid_line(k, line, size);
    XT_CHECK(strncmp(line, want, strlen(want)) == 0, "child %d said '%s', "
             "expected '%s...'", k->pid, line, want);
    return line;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_ranks_gather_barriers(void)
{
    const char *g = xt_name("full");
    kid_t *k[3];
    bool seen[3] = {false};
    char hash[3][256], line[1024];

    for (int i = 0; i < 3; i++)
        k[i] = kid_start(FULL, endpoint, g, 3);
    for (int i = 0; i < 3; i++) {
        int r = kid_rank(k[i]);

        XT_REQUIRE(r >= 0 && r < 3 && !seen[r], "rank %d twice or out of "
                   "0..2", r);
        seen[r] = true;
    }
    for (int i = 0; i < 3; i++)
        kid_expect(k[i], "gathered ", hash[i], sizeof(hash[i]));
    XT_CHECK(strcmp(hash[0], hash[1]) == 0 && strcmp(hash[0], hash[2]) == 0,
             "the ranks gathered different arrays: %s / %s / %s", hash[0],
             hash[1], hash[2]);
    for (int i = 0; i < 3; i++) {
        kid_expect(k[i], "barriers ok", line, sizeof(line));
        kid_expect(k[i], "closed", line, sizeof(line));
    }
    /* Leaving revoked every lease: nothing is left of the group. */
    XT_CHECK(group_keys(g) == 0, "group '%s' still has %ld keys in etcd", g,
             group_keys(g));
}

static void test_full_group(void)
{
    const char *g = xt_name("busy");
    kid_t *k[3], *late, *other;
    char line[1024], want[256];

    for (int i = 0; i < 3; i++)
        k[i] = kid_start(HOLD, endpoint, g, 3);
    for (int i = 0; i < 3; i++)
        kid_rank(k[i]);
    XT_CHECK(group_keys(g) == 4, "group '%s' has %ld keys, not size and 3 "
             "ranks", g, group_keys(g));
    late = kid_start(JOIN, endpoint, g, 3);
    snprintf(want, sizeof(want), "fail group '%s' already has 3 ranks; "
             "choose another --group or wait for the running one", g);
    kid_expect(late, want, line, sizeof(line));
    other = kid_start(JOIN, endpoint, g, 4);
    snprintf(want, sizeof(want), "fail group '%s' is running with 3 ranks, "
             "not 4", g);
    kid_expect(other, want, line, sizeof(line));
    /* The group still works, and leaves together. */
    for (int i = 0; i < 3; i++)
        kid_say(k[i], "go");
    for (int i = 0; i < 3; i++)
        kid_expect(k[i], "barrier ok", line, sizeof(line));
    for (int i = 0; i < 3; i++)
        kid_say(k[i], "quit");
    for (int i = 0; i < 3; i++)
        kid_expect(k[i], "closed", line, sizeof(line));
}

static void test_dead_rank_rejoin(void)
{
    const char *g = xt_name("phoenix");
    kid_t *a = kid_start(HOLD, endpoint, g, 2), *b, *c, *d, *late;
    char line[1024], want[256];
    int ra, rb;
    uint64_t t0;

    b = kid_start(HOLD, endpoint, g, 2);
    ra = kid_rank(a);
    rb = kid_rank(b);
    XT_REQUIRE(ra + rb == 1, "ranks %d and %d", ra, rb);
    kill(a->pid, SIGKILL);
    a->gone = true;
    t0 = xt_now_ms();
    /* Its place is held until its lease expires. */
    late = kid_start(JOIN, endpoint, g, 2);
    snprintf(want, sizeof(want), "fail group '%s' already has 2 ranks", g);
    kid_expect(late, want, line, sizeof(line));
    /* The survivor's barrier fails once the lease is gone, naming it. */
    kid_say(b, "go");
    snprintf(want, sizeof(want), "fail rank %d of group '%s' is gone", ra, g);
    kid_expect(b, want, line, sizeof(line));
    XT_CHECK(xt_now_ms() - t0 < TIMEOUT_MS, "the survivor took %" PRIu64
             " ms to see rank %d gone", xt_now_ms() - t0, ra);
    kid_expect(b, "closed", line, sizeof(line));
    /* A new pair takes the group over. */
    c = kid_start(HOLD, endpoint, g, 2);
    d = kid_start(HOLD, endpoint, g, 2);
    XT_CHECK(kid_rank(c) + kid_rank(d) == 1, "new ranks");
    kid_say(c, "go");
    kid_say(d, "go");
    kid_expect(c, "barrier ok", line, sizeof(line));
    kid_expect(d, "barrier ok", line, sizeof(line));
    kid_say(c, "quit");
    kid_say(d, "quit");
    kid_expect(c, "closed", line, sizeof(line));
    kid_expect(d, "closed", line, sizeof(line));
}

static void test_gather_timeout(void)
{
    const char *g = xt_name("lazy");
    kid_t *k[3];
    char line[1024], want[256];
    int rank[3];
    uint64_t t0;

    for (int i = 0; i < 3; i++)
        k[i] = kid_start(HOLD, endpoint, g, 3);
    for (int i = 0; i < 3; i++)
        rank[i] = kid_rank(k[i]);
    t0 = xt_now_ms();
    kid_say(k[0], "go");
    kid_say(k[1], "go");
    /* The second to time out may hear first that the other one failed:
     * either way the sentence names the lazy rank. */
    snprintf(want, sizeof(want), "rank %d of group '%s' did not reach "
             "allgather 0 within %d ms", rank[2], g, TIMEOUT_MS);
    for (int i = 0; i < 2; i++) {
        kid_expect(k[i], "fail ", line, sizeof(line));
        XT_CHECK(strstr(line, want) != NULL, "child %d said '%s', not '%s'",
                 k[i]->pid, line, want);
    }
    XT_CHECK(xt_now_ms() - t0 >= TIMEOUT_MS - 100 &&
             xt_now_ms() - t0 < TIMEOUT_MS + 3000, "timed out after %" PRIu64
             " ms", xt_now_ms() - t0);
    kid_say(k[2], "quit");
    for (int i = 0; i < 3; i++)
        kid_expect(k[i], "closed", line, sizeof(line));
}

/* The bound is on silence: a rank that heartbeats for three bounds
 * before it joins the barrier makes nobody time out; silent, it does. */
static void test_heartbeat(void)
{
    const char *g = xt_name("busy-beat");
    kid_t *k[3];
    char line[1024], want[256], beat[32];
    int rank[3];
    uint64_t t0;

    kid_timeout_ms = SHORT_MS;
    for (int i = 0; i < 3; i++)
        k[i] = kid_start(HOLD, endpoint, g, 3);
    kid_timeout_ms = 0;
    for (int i = 0; i < 3; i++)
        rank[i] = kid_rank(k[i]);
    t0 = xt_now_ms();
    snprintf(beat, sizeof(beat), "beat %d", 3 * SHORT_MS);
    kid_say(k[0], "go");
    kid_say(k[1], "go");
    kid_say(k[2], beat);
    for (int i = 0; i < 3; i++)
        kid_expect(k[i], "barrier ok", line, sizeof(line));
    XT_CHECK(xt_now_ms() - t0 >= 3 * SHORT_MS, "the barrier took only %"
             PRIu64 " ms", xt_now_ms() - t0);
    /* The same ranks, the same bound: silence still fails. */
    t0 = xt_now_ms();
    kid_say(k[0], "go");
    kid_say(k[1], "go");
    snprintf(want, sizeof(want), "rank %d of group '%s' did not reach "
             "allgather 1 within %d ms", rank[2], g, SHORT_MS);
    for (int i = 0; i < 2; i++) {
        kid_expect(k[i], "fail ", line, sizeof(line));
        XT_CHECK(strstr(line, want) != NULL, "child %d said '%s', not '%s'",
                 k[i]->pid, line, want);
    }
    XT_CHECK(xt_now_ms() - t0 >= SHORT_MS - 100 &&
             xt_now_ms() - t0 < SHORT_MS + 3000, "timed out after %" PRIu64
             " ms", xt_now_ms() - t0);
    kid_say(k[2], "quit");
    for (int i = 0; i < 3; i++)
        kid_expect(k[i], "closed", line, sizeof(line));
}

static void test_abort(void)
{
    const char *g = xt_name("abort");
    kid_t *k[2];
    char line[1024], want[256];
    int r0;

    for (int i = 0; i < 2; i++)
        k[i] = kid_start(HOLD, endpoint, g, 2);
    r0 = kid_rank(k[0]);
    kid_rank(k[1]);
    kid_say(k[0], "abort");
    kid_expect(k[0], "aborted", line, sizeof(line));
    kid_say(k[1], "go");
    snprintf(want, sizeof(want), "fail rank %d failed: disk on fire", r0);
    kid_expect(k[1], want, line, sizeof(line));
    for (int i = 0; i < 2; i++)
        kid_expect(k[i], "closed", line, sizeof(line));
}

static void test_unreachable(void)
{
    char ep[64], line[1024], want[128];
    kid_t *k;

    snprintf(ep, sizeof(ep), "http://127.0.0.1:%u", xt_free_port());
    k = kid_start(JOIN, ep, xt_name("nowhere"), 2);
    /* What was being done, where, and curl's reason. */
    snprintf(want, sizeof(want), "fail etcd lease: etcd at %s: ", ep);
    kid_expect(k, want, line, sizeof(line));
    XT_CHECK(strlen(line) > strlen(want), "no reason given: '%s'", line);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_ranks_gather_barriers),
        XT_TEST(test_full_group),
        XT_TEST(test_dead_rank_rejoin),
        XT_TEST(test_gather_timeout),
        XT_TEST(test_heartbeat),
        XT_TEST(test_abort),
        XT_TEST(test_unreachable),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"bench-coord-etcd", tests}};
    char ms[32];
    int rc;

    (void)argc;
    snprintf(ms, sizeof(ms), "%d", TIMEOUT_MS);
    setenv("XB_TIMEOUT_MS", ms, 1);
    setenv("XB_ETCD_TTL_S", TTL_S, 1);
    signal(SIGPIPE, SIG_IGN);
    etcd = xt_etcd_start();
    if (etcd == NULL)
        return 1;
    endpoint = xt_etcd_url(etcd);
    rc = xt_run(argv[0], suites, 1);
    xt_etcd_stop(etcd);
    return rc;
}
