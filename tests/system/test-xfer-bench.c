/* test-xfer-bench.c - the xfer-bench program as people run it: a short
 * sweep per built backend with every byte checked, the schemes, --json
 * and --csv, two processes joined by --role/--peer, a target killed in
 * the middle, and bad options. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "tests/common/xt.h"

static char bench[4096], tmpdir[256];
static int have_uds;

struct run {
    int status;        /* exit status, or 128 + signal */
    char out[65536];   /* stdout */
    char err[32768];   /* stderr, valgrind's reports included */
};

static void slurp(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f != NULL) {
        n = fread(buf, 1, size - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

/* Start xfer-bench (under $XT_WRAP when set) with stdout and stderr in
 * files of tmpdir named after tag; returns the pid. */
static int start(const char *tag, const char *args)
{
    const char *wrap = getenv("XT_WRAP");
    char cmd[8192];
    int pid;

    snprintf(cmd, sizeof(cmd), "exec %s '%s' %s >'%s/%s.out' 2>'%s/%s.err'",
             wrap ? wrap : "", bench, args, tmpdir, tag, tmpdir, tag);
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    xt_child_add(pid);
    return pid;
}

static void finish(int pid, const char *tag, struct run *r)
{
    char path[512];
    int st;

    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    xt_child_forget(pid);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    snprintf(path, sizeof(path), "%s/%s.out", tmpdir, tag);
    slurp(path, r->out, sizeof(r->out));
    snprintf(path, sizeof(path), "%s/%s.err", tmpdir, tag);
    slurp(path, r->err, sizeof(r->err));
}

static struct run *run(const char *fmt, ...)
{
    static struct run r;
    char args[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    finish(start("run", args), "run", &r);
    return &r;
}

/* Table rows (lines that start with a digit) and banners ("# xfer-bench")
 * of a run's stdout; each row must carry 12 numbers, a positive GB/s and
 * the block and batch sizes the sweep asked for. */
static int count_rows(const struct run *r, int *banners, size_t min_block,
                      size_t max_block, size_t max_batch)
{
    char copy[sizeof(r->out)], *line, *save = NULL;
    int rows = 0;

    *banners = 0;
    memcpy(copy, r->out, sizeof(copy));
    for (line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        double v[12];
        int n;

        if (strncmp(line, "# xfer-bench", 12) == 0)
            (*banners)++;
        if (line[strspn(line, " ")] < '0' || line[strspn(line, " ")] > '9')
            continue;
        n = sscanf(line, "%lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8],
                   &v[9], &v[10], &v[11]);
        XT_CHECK(n == 12, "row with %d numbers: %s", n, line);
        XT_CHECK(v[0] >= (double)min_block && v[0] <= (double)max_block,
                 "block size out of the sweep: %s", line);
        XT_CHECK(v[1] >= 1 && v[1] <= (double)max_batch,
                 "batch size out of the sweep: %s", line);
        XT_CHECK(v[2] > 0, "no bandwidth: %s", line);
        XT_CHECK(v[8] > 0, "no transfer time: %s", line);
        rows++;
    }
    return rows;
}

static void expect_ok(const struct run *r, const char *what)
{
    XT_CHECK(r->status == 0, "%s: exit %d, stderr: %s", what, r->status,
             r->err);
}

/* Every built backend and data path in one run, every byte checked. */
static void sweep_all_backends(const char *op)
{
    const char *uds = " --backend uds --backend uds:mode=cma"
                      " --backend uds:mode=socket --backend uds:mode=shm";
    int banners, rows, nb = have_uds ? 5 : 1;
    struct run *r = run("--backend tcp%s --op %s --check-consistency"
                        " --start-block-size 4K --max-block-size 64K"
                        " --max-batch-size 4 --num-iter 16 --warmup-iter 2"
                        " --threads 2 --alloc xfer --no-progress",
                        have_uds ? uds : "", op);

    expect_ok(r, op);
    rows = count_rows(r, &banners, 4096, 65536, 4);
    /* 5 block sizes times 3 batch sizes per backend */
    XT_CHECK(banners == nb, "%d banners for %d backends", banners, nb);
    XT_CHECK(rows == nb * 15, "%d rows, not %d:\n%s", rows, nb * 15, r->out);
    XT_CHECK(strstr(r->out, "--check-consistency") != NULL,
             "the banner does not say timings include verification");
}

static void test_write_every_backend(void)
{
    sweep_all_backends("WRITE");
}

static void test_read_every_backend(void)
{
    sweep_all_backends("READ");
}

static void test_schemes(void)
{
    struct run *r;
    int banners;

    r = run("--scheme many-to-one --ranks 3 --op WRITE --check-consistency"
            " --start-block-size 4K --max-block-size 16K --num-iter 16"
            " --warmup-iter 1");
    expect_ok(r, "many-to-one");
    XT_CHECK(count_rows(r, &banners, 4096, 16384, 1) == 3, "rows: %s", r->out);
    XT_CHECK(strstr(r->out, "many-to-one, 3 ranks") != NULL,
             "banner: %s", r->out);

    r = run("--scheme one-to-many --ranks 3 --op READ --check-consistency"
            " --start-block-size 4K --max-block-size 16K --num-iter 16"
            " --warmup-iter 1");
    expect_ok(r, "one-to-many");
    XT_CHECK(count_rows(r, &banners, 4096, 16384, 1) == 3, "rows: %s", r->out);

    r = run("--ranks 4 --check-consistency --prepared --recreate"
            " --start-block-size 4K --max-block-size 8K --max-batch-size 2"
            " --num-iter 16 --warmup-iter 1");
    expect_ok(r, "pairwise, 4 ranks");
    XT_CHECK(count_rows(r, &banners, 4096, 8192, 2) == 4, "rows: %s", r->out);
}

/* --recreate times a request creation every post: prep is not zero. */
static void test_recreate_times_prep(void)
{
    struct run *r = run("--recreate --start-block-size 4K --max-block-size 4K"
                        " --num-iter 32 --warmup-iter 1");
    double v[12] = { 0 };
    const char *row;

    expect_ok(r, "--recreate");
    row = strstr(r->out, "\n      4096");
    XT_REQUIRE(row != NULL, "no 4096 row: %s", r->out);
    XT_REQUIRE(sscanf(row, "%lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf",
                      &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7],
                      &v[8], &v[9], &v[10], &v[11]) == 12, "row: %s", row);
    XT_CHECK(v[4] > 0 && v[5] >= v[4], "prep avg %g p99 %g", v[4], v[5]);
    XT_CHECK(v[6] > 0 && v[7] >= v[6], "post avg %g p99 %g", v[6], v[7]);
    XT_CHECK(v[8] >= v[6], "transfer %g shorter than post %g", v[8], v[6]);
}

static void test_json_and_csv(void)
{
    char json[512], csv[512], text[8192], *line, *save = NULL;
    json_error_t jerr;
    json_t *root, *res;
    struct run *r;
    int lines = 0;

    snprintf(json, sizeof(json), "%s/r.json", tmpdir);
    snprintf(csv, sizeof(csv), "%s/r.csv", tmpdir);
    r = run("--backend tcp --backend tcp:nodelay=1 --start-block-size 4K"
            " --max-block-size 8K --num-iter 8 --warmup-iter 1"
            " --json %s --csv %s", json, csv);
    expect_ok(r, "--json --csv");
    root = json_load_file(json, 0, &jerr);
    XT_REQUIRE(root != NULL, "%s: %s", json, jerr.text);
    XT_CHECK(json_array_size(json_object_get(root, "backends")) == 2,
             "JSON has not two backends");
    res = json_object_get(json_array_get(json_object_get(root, "backends"),
                                         1), "results");
    XT_CHECK(json_array_size(res) == 2, "second backend: %zu results",
             json_array_size(res));
    XT_CHECK(json_integer_value(json_object_get(json_array_get(res, 1),
                                                "block_size")) == 8192,
             "second row is not the 8K block");
    json_decref(root);
    slurp(csv, text, sizeof(text));
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save))
        lines++;
    XT_CHECK(lines == 5, "CSV has %d lines, not a header and 4 rows", lines);
}

/* A --role target and a --role initiator on a free loopback port, both
 * given the same options; outputs tagged tag-t and tag-i. */
static void start_pair(const char *tag, const char *opts, int *tp, int *ip)
{
    char args[1024], name[64];
    unsigned port = xt_free_port();

    XT_REQUIRE(port != 0, "no free loopback port");
    snprintf(args, sizeof(args), "--role target --peer 127.0.0.1:%u %s",
             port, opts);
    snprintf(name, sizeof(name), "%s-t", tag);
    *tp = start(name, args);
    snprintf(args, sizeof(args), "--role initiator --peer 127.0.0.1:%u %s",
             port, opts);
    snprintf(name, sizeof(name), "%s-i", tag);
    *ip = start(name, args);
}

static void test_role_peer(void)
{
    static struct run t, i;
    int tp, ip, banners;

    start_pair("peer", "--check-consistency --op READ --start-block-size 4K"
               " --max-block-size 64K --num-iter 16 --warmup-iter 1", &tp, &ip);
    finish(ip, "peer-i", &i);
    finish(tp, "peer-t", &t);
    expect_ok(&i, "initiator");
    expect_ok(&t, "target");
    XT_CHECK(count_rows(&i, &banners, 4096, 65536, 1) == 5,
             "initiator rows: %s", i.out);
    XT_CHECK(count_rows(&t, &banners, 4096, 65536, 1) == 0,
             "the target printed rows: %s", t.out);
}

/* Whether the stdout of tag's run holds text within ms. */
static int wait_output(const char *tag, const char *text, unsigned ms)
{
    static struct run seen;
    char path[512];
    uint64_t end = xt_now_ms() + ms;

    snprintf(path, sizeof(path), "%s/%s.out", tmpdir, tag);
    do {
        slurp(path, seen.out, sizeof(seen.out));
        if (strstr(seen.out, text) != NULL)
            return 1;
        xt_sleep_ms(100);
    } while (xt_now_ms() < end);
    return 0;
}

/* The target dies in the middle: the initiator answers with an error
 * that names the peer, long before any timeout. */
static void test_dead_target(void)
{
    static struct run t, i;
    int tp, ip, running;
    uint64_t t0;

    start_pair("dead", "--start-block-size 4K --max-block-size 4K"
               " --num-iter 100000000 --warmup-iter 1", &tp, &ip);
    /* In the middle: past the first barrier (the header is out), which
     * under valgrind takes far longer than a fixed pause. */
    running = wait_output("dead-i", "block_size", 60000);
    XT_CHECK(running, "the pair did not start within 60 s");
    xt_sleep_ms(500);
    kill(tp, SIGKILL);
    t0 = xt_now_ms();
    finish(ip, "dead-i", &i);
    finish(tp, "dead-t", &t);
    XT_CHECK(i.status == 1, "initiator exit %d, stderr: %s", i.status, i.err);
    XT_CHECK(xt_now_ms() - t0 < 20000, "the initiator took %llu ms to fail",
             (unsigned long long)(xt_now_ms() - t0));
    XT_CHECK(strstr(i.err, "xfer-bench: rank 0: ") != NULL &&
             (strstr(i.err, "disconnected") != NULL ||
              strstr(i.err, "left the run") != NULL),
             "no sentence about the lost peer: %s", i.err);
}

static void test_bad_options(void)
{
    struct run *r = run("--backend nope");

    XT_CHECK(r->status == 2, "unknown backend: exit %d", r->status);
    XT_CHECK(strstr(r->err, "option --backend 'nope'") != NULL,
             "unknown backend: %s", r->err);
    r = run("--backend tcp:bogus=1");
    XT_CHECK(r->status == 2 && strstr(r->err, "'bogus'") != NULL,
             "unknown key: exit %d: %s", r->status, r->err);
    r = run("--max-block-size 2M --total-buffer-size 1M");
    XT_CHECK(r->status == 2 && strstr(r->err, "--total-buffer-size") != NULL,
             "block above buffer: exit %d: %s", r->status, r->err);
    /* writeonly: a test plugin that declares WRITE but not READ */
    r = run("--backend writeonly --op READ");
    XT_CHECK(r->status == 2 &&
             strstr(r->err, "option --op READ: backend 'writeonly' cannot "
                    "READ") != NULL,
             "READ on a backend without READ: exit %d: %s", r->status,
             r->err);
    r = run("--help");
    XT_CHECK(r->status == 0 && strstr(r->out, "--scheme") != NULL,
             "--help: exit %d", r->status);
}

static void cleanup_dir(void)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_write_every_backend),
        XT_TEST(test_read_every_backend),
        XT_TEST(test_schemes),
        XT_TEST(test_recreate_times_prep),
        XT_TEST(test_json_and_csv),
        XT_TEST(test_role_peer),
        XT_TEST(test_dead_target),
        XT_TEST(test_bad_options),
        XT_END,
    };
    static const xt_suite_t suites[] = { { "xfer-bench", tests } };
    const char *top = getenv("abs_top_builddir");
    char path[4200];
    struct stat sb;
    int rc;

    (void)argc;
    if (top == NULL)
        xt_skip("abs_top_builddir is not set (run through make check)");
    snprintf(bench, sizeof(bench), "%s/tools/xfer-bench", top);
    if (access(bench, X_OK) != 0)
        xt_skip("%s is not built", bench);
    snprintf(path, sizeof(path), "%s/plugins/tcp/xfer_tcp.la", top);
    if (stat(path, &sb) != 0)
        xt_skip("the tcp plugin is not built");
    snprintf(path, sizeof(path), "%s/plugins/uds/xfer_uds.la", top);
    have_uds = stat(path, &sb) == 0;
    snprintf(tmpdir, sizeof(tmpdir), "%s/xfer-bench-test.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(tmpdir) == NULL)
        xt_skip("mkdtemp: %s", strerror(errno));
    /* A lost peer must fail the run, never hang it: short bounds. */
    setenv("XB_TIMEOUT_MS", "20000", 1);
    rc = xt_run(argv[0], suites, 1);
    cleanup_dir();
    return rc;
}
