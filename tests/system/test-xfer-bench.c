/* test-xfer-bench.c - the xfer-bench program as people run it: a short
 * sweep per built backend with every byte checked, the schemes, --json
 * and --csv, nixlbench's later options (pipeline depth, prepared lists,
 * registration every post, huge pages, progress threads), two processes
 * joined by --role/--peer, a target killed in the middle, and bad
 * options. */
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

/* ---- nixlbench's later options, each over tcp and uds, every byte --- */
/* checked, and what the run reports about it.                          */

/* The backends these runs compare: tcp, and uds when it is built. */
static const char *tcp_uds(void)
{
    return have_uds ? "--backend tcp --backend uds" : "--backend tcp";
}

/* A short sweep of 4K and 8K blocks, batches of 4 and 8, two threads,
 * every byte checked, with the options given; --json into tmpdir. */
static struct run *run_checked(const char *backends, const char *op,
                               const char *opts)
{
    return run("%s --op %s --check-consistency --start-block-size 4K"
               " --max-block-size 8K --start-batch-size 4"
               " --max-batch-size 8 --num-iter 32 --warmup-iter 4"
               " --threads 2 --no-progress --json %s/p.json %s",
               backends, op, tmpdir, opts);
}

/* The run succeeded with a full table for each backend. */
static void expect_sweep(const struct run *r, const char *what)
{
    int banners, nb = have_uds ? 2 : 1;

    expect_ok(r, what);
    XT_CHECK(count_rows(r, &banners, 4096, 8192, 8) == nb * 4,
             "%s: not 4 rows per backend:\n%s", what, r->out);
    XT_CHECK(banners == nb, "%s: %d banners for %d backends", what, banners,
             nb);
}

/* The "parameters" object of the last --json; the caller decrefs root. */
static json_t *json_params(json_t **root)
{
    char path[512];
    json_error_t jerr;

    snprintf(path, sizeof(path), "%s/p.json", tmpdir);
    *root = json_load_file(path, 0, &jerr);
    XT_REQUIRE(*root != NULL, "%s: %s", path, jerr.text);
    return json_object_get(*root, "parameters");
}

static void expect_param_int(const char *key, long long want)
{
    json_t *root, *v = json_object_get(json_params(&root), key);

    XT_CHECK(json_is_integer(v) && json_integer_value(v) == want,
             "parameter %s is not %lld", key, want);
    json_decref(root);
}

static void expect_param_bool(const char *key, int want)
{
    json_t *root, *v = json_object_get(json_params(&root), key);

    XT_CHECK(json_is_boolean(v) && json_is_true(v) == want,
             "parameter %s is not %s", key, want ? "true" : "false");
    json_decref(root);
}

/* Four requests in flight per thread, each a quarter of the batch;
 * nixlbench's spelling and ours. */
static void test_pipeline_depth(void)
{
    struct run *r = run_checked(tcp_uds(), "WRITE", "--pipeline_depth 4");

    expect_sweep(r, "--pipeline_depth 4, WRITE");
    XT_CHECK(strstr(r->out, "4 in flight per thread") != NULL,
             "the banner does not give the depth:\n%s", r->out);
    expect_param_int("pipeline_depth", 4);

    r = run_checked(tcp_uds(), "READ", "--pipeline-depth 2");
    expect_sweep(r, "--pipeline-depth 2, READ");
    expect_param_int("pipeline_depth", 2);

    /* Several targets, each with its own requests in every slot. */
    r = run("--scheme one-to-many --op READ --check-consistency"
            " --pipeline-depth 2 --start-batch-size 2 --max-batch-size 2"
            " --start-block-size 4K --max-block-size 4K --num-iter 16"
            " --warmup-iter 2 --no-progress");
    expect_ok(r, "one-to-many, --pipeline-depth 2");
}

static void test_prepared_xfer(void)
{
    struct run *r = run_checked(tcp_uds(), "READ", "--prepared_xfer");

    expect_sweep(r, "--prepared_xfer");
    XT_CHECK(strstr(r->out, "requests from prepared lists") != NULL,
             "the banner does not say prepared lists:\n%s", r->out);
    expect_param_bool("prepared", 1);
    expect_param_bool("recreate", 0);
}

static void test_reregister_mem(void)
{
    struct run *r = run_checked(tcp_uds(), "WRITE", "--reregister_mem");

    expect_sweep(r, "--reregister_mem");
    XT_CHECK(strstr(r->out, "recreated every post, memory registered "
                    "every post") != NULL,
             "the banner does not say registered every post:\n%s", r->out);
    expect_param_bool("reregister", 1);
    expect_param_bool("recreate", 1);

    /* With prepared lists and slots: each slot's own registration and
     * list, index ranges of the remote list. */
    r = run_checked(tcp_uds(), "READ",
                    "--reregister --prepared --pipeline-depth 2");
    expect_sweep(r, "--reregister --prepared --pipeline-depth 2");
    expect_param_bool("reregister", 1);
    expect_param_bool("prepared", 1);
    expect_param_int("pipeline_depth", 2);
}

/* 2 MiB pages free on this host, from /proc/meminfo; -1: unknown. */
static long huge_pages_free(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long n = -1, kb = 0;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        sscanf(line, "HugePages_Free: %ld", &n);
        sscanf(line, "Hugepagesize: %ld kB", &kb);
    }
    fclose(f);
    return kb == 2048 ? n : -1;
}

/* Huge pages where the host has them reserved; where it has not, the
 * run fails with the sentence that says how to reserve them. */
static void test_use_hugepages(void)
{
    /* Each of the 2 ranks maps one 2 MiB page (its buffer is 64 KiB),
     * one backend at a time. */
    long free_pages = huge_pages_free();
    int have = free_pages >= 2;
    struct run *r;

    fprintf(stderr, "%ld huge pages free: %s\n", free_pages,
            have ? "checking runs on them" : "checking the refusal");
    r = run_checked(tcp_uds(), "WRITE", "--use_hugepages");
    if (have) {
        expect_sweep(r, "--use_hugepages");
        XT_CHECK(strstr(r->out, "malloc buffers on 2 MiB huge pages") != NULL,
                 "the banner does not say huge pages:\n%s", r->out);
        expect_param_bool("hugepages", 1);
        expect_param_int("pipeline_depth", 1);
    } else {
        XT_CHECK(r->status == 1 &&
                     strstr(r->err, "--hugepages: cannot map 2097152 bytes "
                            "of 2 MiB huge pages") != NULL &&
                     strstr(r->err, "vm.nr_hugepages") != NULL,
                 "--use_hugepages without huge pages: exit %d: %s",
                 r->status, r->err);
    }
    if (!have_uds)
        return;
    /* xfer's own allocator on huge pages: memfd the peer maps. */
    r = run_checked("--backend uds:mode=shm --alloc xfer", "READ",
                    "--hugepages");
    if (have) {
        expect_ok(r, "--hugepages --alloc xfer");
        expect_param_bool("hugepages", 1);
    } else {
        XT_CHECK(r->status == 1 &&
                     strstr(r->err, "--hugepages with --alloc xfer") != NULL &&
                     strstr(r->err, "nr_hugepages") != NULL,
                 "--hugepages --alloc xfer without huge pages: exit %d: %s",
                 r->status, r->err);
    }
}

static void test_progress_threads(void)
{
    struct run *r = run_checked(tcp_uds(), "WRITE", "--progress_threads 1");

    expect_sweep(r, "--progress_threads 1");
    XT_CHECK(strstr(r->out, "progress by thread") != NULL,
             "--progress_threads 1 did not start the progress thread:\n%s",
             r->out);
    expect_param_bool("progress_thread", 1);

    /* nixlbench's default 0 adds no thread; --enable_pt still decides. */
    r = run_checked(tcp_uds(), "READ", "--enable_pt --progress_threads 0");
    expect_sweep(r, "--enable_pt --progress_threads 0");
    expect_param_bool("progress_thread", 1);
    r = run_checked(tcp_uds(), "READ", "--progress-threads 0");
    expect_sweep(r, "--progress-threads 0");
    expect_param_bool("progress_thread", 0);
}

/* --stats: each process prints its counters; the initiator's WRITE
 * count is exactly the posts the sweep made (warmup included), with no
 * failure and nothing left in flight. */
static void test_stats(void)
{
    struct run *r = run("--backend tcp --stats --start-block-size 4K "
                        "--max-block-size 8K --num-iter 50 --warmup-iter 5");
    char want[160], *line;
    int banners;

    expect_ok(r, "--stats");
    XT_CHECK(count_rows(r, &banners, 4096, 8192, 1) == 2, "rows: %s", r->out);
    /* Two block sizes of 50 + 5 posts: 110 WRITEs of 4 and 8 KiB. */
    snprintf(want, sizeof(want), "write 110 ops %u B, descs 110, done 110, "
             "failed 0, in flight 0", 55u * 4096u + 55u * 8192u);
    line = strstr(r->out, "# stats xfer-bench-local-b0-r0 tcp (all): ");
    XT_CHECK(line != NULL && strstr(line, want) != NULL,
             "no initiator line with \"%s\":\n%s", want, r->out);
    XT_CHECK(strstr(r->out, "# stats xfer-bench-local-b0-r1 tcp (all): read 0 "
                    "ops 0 B, write 0 ops 0 B") != NULL,
             "no target line:\n%s", r->out);
    XT_CHECK(line != NULL && strstr(line, "mean latency") != NULL,
             "no latency on the initiator's line:\n%s", r->out);
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
    /* nixlbench's later options where they cannot apply. */
    r = run("--progress_threads 4");
    XT_CHECK(r->status == 2 &&
             strstr(r->err, "option --progress_threads 4: an xfer agent "
                    "drives its backends from one progress thread") != NULL,
             "--progress_threads 4: exit %d: %s", r->status, r->err);
    r = run("--pipeline_depth 3 --start_batch_size 4 --max_batch_size 4");
    XT_CHECK(r->status == 2 &&
             strstr(r->err, "option --pipeline-depth 3: --start-batch-size 4 "
                    "is not a multiple of it") != NULL,
             "--pipeline_depth 3 with batch 4: exit %d: %s", r->status,
             r->err);
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
        XT_TEST(test_pipeline_depth),
        XT_TEST(test_prepared_xfer),
        XT_TEST(test_reregister_mem),
        XT_TEST(test_use_hugepages),
        XT_TEST(test_progress_threads),
        XT_TEST(test_role_peer),
        XT_TEST(test_stats),
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
