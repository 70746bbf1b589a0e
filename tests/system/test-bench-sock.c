/* test-bench-sock.c - xfer-bench's socket coordinator (hub and spokes over
 * socketpairs, one forked process a rank): the bound is on silence. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/xfer-bench/xb.h"
#include "tests/common/xt.h"

#define NRANKS 3
#define TIMEOUT_MS 1500            /* XB_TIMEOUT_MS of every rank */
#define BEAT_MS 200                /* heartbeat period of a busy rank */
#define LONG_MS (3 * TIMEOUT_MS)   /* a point longer than the bound */
#define WAIT_MS 20000              /* a rank's answer */

/* What a rank does before its barrier: 0 nothing, > 0 heartbeat that
 * many ms (a long point), < 0 stay silent that many ms, then leave. */
typedef struct ranks {
    int pid[NRANKS];
    int rd[NRANKS];                /* each rank's one line */
} ranks_t;

static void rank_main(struct xb_coord *c, int before, int wr)
{
    char line[512];
    int n;

    if (before < 0) {
        xt_sleep_ms((unsigned)-before);
        n = snprintf(line, sizeof(line), "silent\n");
    } else {
        uint64_t end = xt_now_ms() + (uint64_t)before;

        while (xt_now_ms() < end && xb_coord_heartbeat(c) == 0)
            xt_sleep_ms(BEAT_MS);
        if (xb_coord_barrier(c, NULL) == 0) {
            n = snprintf(line, sizeof(line), "ok\n");
        } else {
            n = snprintf(line, sizeof(line), "fail %s\n", xb_error());
            xb_coord_abort(c, xb_error());
        }
    }
    if (write(wr, line, (size_t)n) != n)
        xt_child_exit(1);
    xb_coord_close(c);
}

static void ranks_end(void *arg)
{
    ranks_t *rk = arg;
    uint64_t end = xt_now_ms() + WAIT_MS;
    int status;

    for (int r = 0; r < NRANKS; r++) {
        if (rk->rd[r] >= 0)
            close(rk->rd[r]);
        while (waitpid(rk->pid[r], &status, WNOHANG) == 0) {
            if (xt_now_ms() > end) {
                kill(rk->pid[r], SIGKILL);
                waitpid(rk->pid[r], &status, 0);
                XT_FAIL("rank %d did not end within %d ms", r, WAIT_MS);
                break;
            }
            xt_sleep_ms(10);
        }
        xt_child_forget(rk->pid[r]);
        XT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                 "rank %d ended with status 0x%x", r, status);
    }
    free(rk);
}

/* Fork rank 0 (the hub) and ranks 1.. (spokes), each doing before[r]. */
static ranks_t *ranks_start(const int *before)
{
    ranks_t *rk = calloc(1, sizeof(*rk));
    int sp[NRANKS][2], out[NRANKS][2], hub[NRANKS - 1];

    XT_REQUIRE(rk != NULL, "out of memory");
    for (int r = 0; r < NRANKS; r++) {
        XT_REQUIRE(pipe(out[r]) == 0, "pipe: %s", strerror(errno));
        if (r > 0)
            XT_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sp[r]) == 0,
                       "socketpair: %s", strerror(errno));
    }
    fflush(NULL);
    for (int r = 0; r < NRANKS; r++) {
        rk->pid[r] = fork();
        XT_REQUIRE(rk->pid[r] >= 0, "fork: %s", strerror(errno));
        if (rk->pid[r] == 0) {
            struct xb_coord c = {0};

            prctl(PR_SET_PDEATHSIG, SIGKILL);
            free(rk); /* the parent's bookkeeping */
            /* Only its own ends stay open: a dead rank's sockets close. */
            for (int q = 0; q < NRANKS; q++) {
                close(out[q][0]);
                if (q != r)
                    close(out[q][1]);
                if (q > 0 && q != r)
                    close(sp[q][1]);
                if (q > 0 && r != 0)
                    close(sp[q][0]);
            }
            for (int q = 1; q < NRANKS; q++)
                hub[q - 1] = sp[q][0];
            if (r == 0 ? xb_coord_hub(&c, hub, NRANKS - 1)
                       : xb_coord_spoke(&c, sp[r][1], r, NRANKS))
                xt_child_exit(1);
            rank_main(&c, before[r], out[r][1]);
            xt_child_exit(0);
        }
        xt_child_add(rk->pid[r]);
    }
    for (int r = 0; r < NRANKS; r++) {
        close(out[r][1]);
        rk->rd[r] = out[r][0];
        if (r > 0) {
            close(sp[r][0]);
            close(sp[r][1]);
        }
    }
    xt_defer(ranks_end, rk);
    return rk;
}

/* Rank r's line, newline stripped; fatal after WAIT_MS. */
static char *rank_line(ranks_t *rk, int r, char *line, size_t size)
{
    struct pollfd p = {rk->rd[r], POLLIN, 0};
    size_t len = 0;
    ssize_t n;

    XT_REQUIRE(poll(&p, 1, WAIT_MS) == 1, "rank %d said nothing within %d "
               "ms", r, WAIT_MS);
    while (len + 1 < size && (n = read(rk->rd[r], line + len, 1)) == 1 &&
           line[len] != '\n')
        len++;
    line[len] = '\0';
    return line;
}

/* One rank works (heartbeating) for three bounds while the others wait
 * in the barrier: nobody times out. */
static void heartbeat_case(int busy)
{
    int before[NRANKS] = {0};
    ranks_t *rk;
    char line[512];
    uint64_t t0 = xt_now_ms();

    before[busy] = LONG_MS;
    rk = ranks_start(before);
    for (int r = 0; r < NRANKS; r++) {
        rank_line(rk, r, line, sizeof(line));
        XT_CHECK(strcmp(line, "ok") == 0, "rank %d (rank %d busy) said '%s'",
                 r, busy, line);
    }
    XT_CHECK(xt_now_ms() - t0 >= LONG_MS, "the barrier took only %" PRIu64
             " ms", xt_now_ms() - t0);
}

/* many-to-one: the hub is a target waiting on rank 1, and passes its
 * heartbeats on to rank 2, which waits on the hub alone. */
static void test_spoke_beats_hub_relays(void)
{
    heartbeat_case(1);
}

/* The hub reads rank 1's frame first, then waits on busy rank 2. */
static void test_last_spoke_beats(void)
{
    heartbeat_case(2);
}

/* one-to-many: the hub is the initiator, every spoke waits on it. */
static void test_hub_beats(void)
{
    heartbeat_case(0);
}

/* A silent rank still fails the others within the bound. */
static void test_silence_times_out(void)
{
    int before[NRANKS] = {0, 0, -2 * TIMEOUT_MS};
    ranks_t *rk;
    char line[512], want[128];
    uint64_t t0 = xt_now_ms();

    rk = ranks_start(before);
    snprintf(want, sizeof(want), "fail rank 2 sent nothing for %d ms",
             TIMEOUT_MS);
    rank_line(rk, 0, line, sizeof(line));
    XT_CHECK(strcmp(line, want) == 0, "rank 0 said '%s', not '%s'", line,
             want);
    XT_CHECK(xt_now_ms() - t0 >= TIMEOUT_MS - 100 &&
             xt_now_ms() - t0 < TIMEOUT_MS + 1000, "timed out after %"
             PRIu64 " ms", xt_now_ms() - t0);
    /* Rank 1 hears the hub's sentence, or times out on the hub itself. */
    rank_line(rk, 1, line, sizeof(line));
    XT_CHECK(strncmp(line, "fail rank 0 ", 12) == 0, "rank 1 said '%s'",
             line);
    rank_line(rk, 2, line, sizeof(line));
    XT_CHECK(strcmp(line, "silent") == 0, "rank 2 said '%s'", line);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_spoke_beats_hub_relays),
        XT_TEST(test_last_spoke_beats),
        XT_TEST(test_hub_beats),
        XT_TEST(test_silence_times_out),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"bench-coord-sock", tests}};
    char ms[32];

    (void)argc;
    snprintf(ms, sizeof(ms), "%d", TIMEOUT_MS);
    setenv("XB_TIMEOUT_MS", ms, 1);
    signal(SIGPIPE, SIG_IGN);
    return xt_run(argv[0], suites, 1);
}
