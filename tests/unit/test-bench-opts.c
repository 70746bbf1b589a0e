/* test-bench-opts.c - xfer-bench's options: defaults, every spelling
 * nixlbench uses, sizes, and one sentence naming the option for each
 * kind of bad input; the scheme roles. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/xfer-bench/xb.h"
#include "tests/common/runner.h"

/* What a parse printed on stderr, NUL-terminated. */
static char errtext[4096];

/* Run xb_opts_parse on argv with file descriptor fd (1 or 2) sent to a
 * temporary file; what was written lands in out (NUL-terminated). */
static int parse_capturing(struct xb_opts *o, int argc, char **argv, int fd,
                           char *out, size_t size)
{
    FILE *tmp = tmpfile(), *stream = fd == 1 ? stdout : stderr;
    int saved, rc;
    size_t n;

    XT_REQUIRE(tmp != NULL, "tmpfile failed");
    fflush(stream);
    saved = dup(fd);
    dup2(fileno(tmp), fd);
    rc = xb_opts_parse(argc, argv, o);
    fflush(stream);
    dup2(saved, fd);
    close(saved);
    rewind(tmp);
    n = fread(out, 1, size - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return rc;
}

/* Parse a NULL-terminated argument list ("xfer-bench" is argv[0]) with
 * stderr captured into errtext; returns xb_opts_parse's result. */
static int parse(struct xb_opts *o, ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;

    argv[argc++] = (char *)"xfer-bench";
    va_start(ap, o);
    while (argc < 63 && (argv[argc] = va_arg(ap, char *)) != NULL)
        argc++;
    va_end(ap);
    argv[argc] = NULL;
    return parse_capturing(o, argc, argv, 2, errtext, sizeof(errtext));
}

/* The parse failed with exactly one line that contains every string. */
static void expect_refused(int rc, ...)
{
    const char *want;
    va_list ap;

    XT_CHECK(rc == -1, "parse returned %d, not -1 (stderr: %s)", rc,
             errtext);
    XT_CHECK(strncmp(errtext, "xfer-bench: ", 12) == 0,
             "message does not start with 'xfer-bench: ': %s", errtext);
    XT_CHECK(strchr(errtext, '\n') == errtext + strlen(errtext) - 1,
             "not exactly one line: %s", errtext);
    va_start(ap, rc);
    while ((want = va_arg(ap, const char *)) != NULL)
        XT_CHECK(strstr(errtext, want) != NULL, "'%s' not in: %s", want,
                 errtext);
    va_end(ap);
}

static void test_defaults(void)
{
    struct xb_opts o;

    XT_REQUIRE(parse(&o, NULL) == 0, "empty command line refused: %s",
               errtext);
    CU_ASSERT_EQUAL(o.nbackends, 1);
    CU_ASSERT_STRING_EQUAL(o.backends[0], "tcp");
    CU_ASSERT_EQUAL(o.op, XFER_OP_WRITE);
    CU_ASSERT_EQUAL(o.start_block, 4096);
    CU_ASSERT_EQUAL(o.max_block, (size_t)64 << 20);
    CU_ASSERT_EQUAL(o.start_batch, 1);
    CU_ASSERT_EQUAL(o.max_batch, 1);
    CU_ASSERT_EQUAL(o.num_iter, 1000);
    CU_ASSERT_EQUAL(o.warmup_iter, 100);
    CU_ASSERT_EQUAL(o.large_iter_factor, 16);
    CU_ASSERT_EQUAL(o.threads, 1);
    CU_ASSERT_EQUAL(o.scheme, XB_PAIRWISE);
    CU_ASSERT_EQUAL(o.ranks, 2);
    CU_ASSERT_EQUAL(o.role, XB_ROLE_LOCAL);
    CU_ASSERT_EQUAL(o.progress, -1);
    CU_ASSERT_EQUAL(o.pipeline_depth, 1);
    CU_ASSERT(!o.prepared && !o.recreate && !o.reregister && !o.hugepages &&
              !o.progress_thread);
    CU_ASSERT_EQUAL(xb_opts_buffer(&o), (size_t)64 << 20);
    CU_ASSERT_EQUAL(errtext[0], '\0');
}

static void test_long_options(void)
{
    struct xb_opts o;
    int rc = parse(&o, "--backend", "tcp:nodelay=1", "--backend", "UDS:mode=shm",
                   "--op", "read", "--start-block-size", "8K",
                   "--max-block-size=1MiB", "--start-batch-size", "2",
                   "--max-batch-size", "16", "--num-iter", "64",
                   "--warmup-iter", "0", "--large-block-iter-factor", "4",
                   "--threads", "4", "--total-buffer-size", "1G",
                   "--check-consistency", "--prepared", "--recreate",
                   "--progress-thread", "--scheme", "many-to-one",
                   "--reregister", "--pipeline-depth", "2", "--hugepages",
                   "--ranks", "5", "--alloc", "xfer", "--json", "a.json",
                   "--csv", "a.csv", "--plot", "a.png", "--no-progress",
                   NULL);

    XT_REQUIRE(rc == 0, "refused: %s", errtext);
    CU_ASSERT_EQUAL(o.nbackends, 2);
    CU_ASSERT_STRING_EQUAL(o.backends[0], "tcp:nodelay=1");
    /* The plugin name folds to lower case, the config does not. */
    CU_ASSERT_STRING_EQUAL(o.backends[1], "uds:mode=shm");
    CU_ASSERT_EQUAL(o.op, XFER_OP_READ);
    CU_ASSERT_EQUAL(o.start_block, 8192);
    CU_ASSERT_EQUAL(o.max_block, 1 << 20);
    CU_ASSERT_EQUAL(o.start_batch, 2);
    CU_ASSERT_EQUAL(o.max_batch, 16);
    CU_ASSERT_EQUAL(o.num_iter, 64);
    CU_ASSERT_EQUAL(o.warmup_iter, 0);
    CU_ASSERT_EQUAL(o.large_iter_factor, 4);
    CU_ASSERT_EQUAL(o.threads, 4);
    CU_ASSERT_EQUAL(o.total_buffer, (size_t)1 << 30);
    CU_ASSERT(o.check && o.prepared && o.recreate && o.progress_thread);
    CU_ASSERT(o.reregister && o.hugepages);
    CU_ASSERT_EQUAL(o.pipeline_depth, 2);
    CU_ASSERT_EQUAL(o.scheme, XB_MANY_TO_ONE);
    CU_ASSERT_EQUAL(o.ranks, 5);
    CU_ASSERT_EQUAL(o.alloc_xfer, 1);
    CU_ASSERT_STRING_EQUAL(o.json_path, "a.json");
    CU_ASSERT_STRING_EQUAL(o.csv_path, "a.csv");
    CU_ASSERT_STRING_EQUAL(o.plot_path, "a.png");
    CU_ASSERT_EQUAL(o.progress, 0);
    CU_ASSERT_EQUAL(xb_opts_buffer(&o), (size_t)1 << 30);
    /* 1000 / 4 threads below 1M; / 16 above it, then / 4. */
    CU_ASSERT_EQUAL(xb_iters_for(&o, 4096), 16);
    CU_ASSERT_EQUAL(xb_iters_for(&o, 1 << 20), 4);
}

/* A nixlbench command line and its xfer-bench twin parse the same. */
static void test_nixlbench_spellings(void)
{
    struct xb_opts a, b;

    XT_REQUIRE(parse(&a, "--backend", "UCX", "--op_type", "READ",
                     "--start_block_size", "4096", "--max_block_size",
                     "67108864", "--start_batch_size", "1",
                     "--max_batch_size", "8", "--num_iter", "100",
                     "--warmup_iter", "10", "--large_blk_iter_ftr", "2",
                     "--num_threads", "2", "--total_buffer_size",
                     "4294967296", "--check_consistency", "--recreate_xfer",
                     "--enable_pt=true", "--initiator_seg_type", "DRAM",
                     "--target_seg_type", "DRAM", "--scheme", "onetomany",
                     "--etcd_endpoints", "http://127.0.0.1:2379",
                     "--benchmark_group", "g1", "--runtime_type", "ETCD",
                     "--worker_type", "nixl", "--mode", "SG",
                     "--num_initiator_dev", "1", "--num_target_dev", "1",
                     "--device_list", "all", NULL) == 0,
               "nixlbench spelling refused: %s", errtext);
    XT_REQUIRE(parse(&b, "--backend", "ucx", "--op", "READ",
                     "--start-block-size", "4K", "--max-block-size", "64M",
                     "--start-batch-size", "1", "--max-batch-size", "8",
                     "--num-iter", "100", "--warmup-iter", "10",
                     "--large-block-iter-factor", "2", "--threads", "2",
                     "--total-buffer-size", "4G", "--check-consistency",
                     "--recreate", "--progress-thread", "--scheme",
                     "one-to-many", "--etcd", "http://127.0.0.1:2379",
                     "--group", "g1", NULL) == 0,
               "xfer-bench spelling refused: %s", errtext);
    CU_ASSERT_STRING_EQUAL(a.backends[0], b.backends[0]);
    CU_ASSERT_EQUAL(a.op, b.op);
    CU_ASSERT_EQUAL(a.start_block, b.start_block);
    CU_ASSERT_EQUAL(a.max_block, b.max_block);
    CU_ASSERT_EQUAL(a.max_batch, b.max_batch);
    CU_ASSERT_EQUAL(a.num_iter, b.num_iter);
    CU_ASSERT_EQUAL(a.warmup_iter, b.warmup_iter);
    CU_ASSERT_EQUAL(a.large_iter_factor, b.large_iter_factor);
    CU_ASSERT_EQUAL(a.threads, b.threads);
    CU_ASSERT_EQUAL(a.total_buffer, b.total_buffer);
    CU_ASSERT_EQUAL(a.check, b.check);
    CU_ASSERT_EQUAL(a.recreate, b.recreate);
    CU_ASSERT_EQUAL(a.progress_thread, b.progress_thread);
    CU_ASSERT_EQUAL(a.scheme, b.scheme);
    CU_ASSERT_STRING_EQUAL(a.etcd, b.etcd);
    CU_ASSERT_STRING_EQUAL(a.group, b.group);
    CU_ASSERT_EQUAL(a.ranks, 3);

    /* Flags written as gflags writes them. */
    XT_REQUIRE(parse(&a, "--enable_pt=false", "--check_consistency=0",
                     NULL) == 0, "refused: %s", errtext);
    CU_ASSERT_EQUAL(a.progress_thread, 0);
    CU_ASSERT_EQUAL(a.check, 0);
}

/* The options nixlbench grew later, in its spelling and in ours. */
static void test_nixlbench_later_options(void)
{
    struct xb_opts a, b;

    XT_REQUIRE(parse(&a, "--prepared_xfer", "--reregister_mem=1",
                     "--pipeline_depth", "4", "--start_batch_size", "4",
                     "--max_batch_size", "16", "--use_hugepages=true",
                     "--progress_threads", "1", NULL) == 0,
               "nixlbench spelling refused: %s", errtext);
    XT_REQUIRE(parse(&b, "--prepared", "--reregister", "--pipeline-depth",
                     "4", "--start-batch-size", "4", "--max-batch-size",
                     "16", "--hugepages", "--progress-threads", "1",
                     NULL) == 0, "xfer-bench spelling refused: %s", errtext);
    CU_ASSERT(a.prepared && b.prepared);
    CU_ASSERT(a.reregister && b.reregister);
    /* A request cannot outlive its memory's registration. */
    CU_ASSERT(a.recreate && b.recreate);
    CU_ASSERT_EQUAL(a.pipeline_depth, 4);
    CU_ASSERT_EQUAL(b.pipeline_depth, 4);
    CU_ASSERT(a.hugepages && b.hugepages);
    CU_ASSERT(a.progress_thread && b.progress_thread);
    /* The batch is split, never grown: the buffer is the sweep's. */
    CU_ASSERT_EQUAL(xb_opts_buffer(&a), (size_t)16 * (64 << 20));

    XT_REQUIRE(parse(&a, "--prepared_xfer=false", "--reregister_mem=0",
                     "--use_hugepages=0", NULL) == 0, "refused: %s",
               errtext);
    CU_ASSERT(!a.prepared && !a.reregister && !a.recreate && !a.hugepages);

    /* nixlbench's default 0 is "no extra backend threads": --enable_pt
     * still decides; 1 is the agent's progress thread. */
    XT_REQUIRE(parse(&a, "--enable_pt", "--progress_threads", "0", NULL) == 0,
               "refused: %s", errtext);
    CU_ASSERT_EQUAL(a.progress_thread, 1);
    XT_REQUIRE(parse(&a, "--progress_threads", "0", NULL) == 0, "refused: %s",
               errtext);
    CU_ASSERT_EQUAL(a.progress_thread, 0);
    XT_REQUIRE(parse(&a, "--progress_threads=1", NULL) == 0, "refused: %s",
               errtext);
    CU_ASSERT_EQUAL(a.progress_thread, 1);
    expect_refused(parse(&a, "--progress_threads", "2", NULL),
                   "option --progress_threads 2", "one progress thread",
                   "only 0 or 1 applies", NULL);
    expect_refused(parse(&a, "--progress-threads", "8", NULL),
                   "option --progress-threads 8", "one progress thread",
                   NULL);
    expect_refused(parse(&a, "--progress-threads", "-1", NULL),
                   "--progress-threads", "'-1'", NULL);
}

static void test_bad_values(void)
{
    struct xb_opts o;

    expect_refused(parse(&o, "--op", "COPY", NULL), "--op", "READ or WRITE",
                   "'COPY'", NULL);
    expect_refused(parse(&o, "--start-block-size", "4X", NULL),
                   "--start-block-size", "'4X'", NULL);
    expect_refused(parse(&o, "--max_block_size", "0", NULL),
                   "--max_block_size", "'0'", NULL);
    expect_refused(parse(&o, "--num-iter", "-3", NULL), "--num-iter",
                   "'-3'", NULL);
    expect_refused(parse(&o, "--threads", "1000", NULL), "--threads",
                   "[1, 256]", NULL);
    expect_refused(parse(&o, "--scheme", "star", NULL), "--scheme",
                   "pairwise, many-to-one or one-to-many", NULL);
    expect_refused(parse(&o, "--check-consistency=maybe", NULL),
                   "--check-consistency", "'maybe'", NULL);
    expect_refused(parse(&o, "--etcd", "127.0.0.1:2379", NULL), "--etcd",
                   "http://", NULL);
    expect_refused(parse(&o, "--group", "a/b", NULL), "--group", NULL);
    expect_refused(parse(&o, "--worker_type", "nvshmem", NULL),
                   "--worker_type", "'nvshmem'", "nixl", NULL);
    expect_refused(parse(&o, "--num_target_dev", "2", NULL),
                   "--num_target_dev", NULL);
    expect_refused(parse(&o, "--pipeline-depth", "0", NULL),
                   "--pipeline-depth", "[1, 1024]", "'0'", NULL);
    expect_refused(parse(&o, "--pipeline_depth", "2048", NULL),
                   "--pipeline_depth", "[1, 1024]", NULL);
    expect_refused(parse(&o, "--use_hugepages=maybe", NULL),
                   "--use_hugepages", "'maybe'", NULL);
    expect_refused(parse(&o, "--reregister=2", NULL), "--reregister", "'2'",
                   NULL);
    expect_refused(parse(&o, "--frobnicate", NULL), "--frobnicate",
                   "unknown option", NULL);
    expect_refused(parse(&o, "stray", NULL), "'stray'", NULL);
}

static void test_bad_combinations(void)
{
    struct xb_opts o;

    expect_refused(parse(&o, "--start-block-size", "1M", "--max-block-size",
                         "4K", NULL), "--start-block-size",
                   "--max-block-size", NULL);
    expect_refused(parse(&o, "--start-batch-size", "8", "--max-batch-size",
                         "2", NULL), "--start-batch-size", NULL);
    /* A block above the buffer names both options. */
    expect_refused(parse(&o, "--max-block-size", "2M", "--total-buffer-size",
                         "1M", NULL), "--max-block-size",
                   "--total-buffer-size", NULL);
    expect_refused(parse(&o, "--max-block-size", "1M", "--threads", "4",
                         "--total-buffer-size", "2M", NULL),
                   "--total-buffer-size", "4 threads", NULL);
    /* A many-to-one target holds a part per initiator. */
    expect_refused(parse(&o, "--max-block-size", "1M", "--scheme",
                         "many-to-one", "--ranks", "4", "--total-buffer-size",
                         "2M", NULL),
                   "--total-buffer-size", "3 peers (many-to-one)", NULL);
    XT_REQUIRE(parse(&o, "--max-block-size", "1M", "--scheme", "many-to-one",
                     "--ranks", "4", NULL) == 0, "refused: %s", errtext);
    CU_ASSERT_EQUAL(xb_opts_buffer(&o), (size_t)3 << 20);
    /* nixlbench splits a batch into pipeline_depth requests. */
    expect_refused(parse(&o, "--pipeline_depth", "3", "--start_batch_size",
                         "4", "--max_batch_size", "8", NULL),
                   "option --pipeline-depth 3", "--start-batch-size 4",
                   "not a multiple", NULL);
    expect_refused(parse(&o, "--pipeline-depth", "2", NULL),
                   "--pipeline-depth 2", "--start-batch-size 1", NULL);
    expect_refused(parse(&o, "--initiator-seg-type", "VRAM", NULL),
                   "--initiator-seg-type", "VRAM", NULL);
    expect_refused(parse(&o, "--target_seg_type", "VRAM", NULL),
                   "--target-seg-type", NULL);
    expect_refused(parse(&o, "--role", "target", NULL), "--role", "--peer",
                   NULL);
    expect_refused(parse(&o, "--peer", "h:1", NULL), "--peer", "--role",
                   NULL);
    expect_refused(parse(&o, "--ranks", "3", NULL), "--ranks", "even", NULL);
    expect_refused(parse(&o, "--role", "initiator", "--peer", "h:1",
                         "--ranks", "4", NULL), "--peer", "--etcd", NULL);
}

static void test_help_lists_every_option(void)
{
    static const char *const names[] = {
        "--backend", "--op", "--start-block-size", "--max-block-size",
        "--start-batch-size", "--max-batch-size", "--num-iter",
        "--warmup-iter", "--large-block-iter-factor", "--threads",
        "--total-buffer-size", "--prepared", "--recreate",
        "--check-consistency", "--scheme", "--initiator-seg-type",
        "--target-seg-type", "--progress-thread", "--role", "--peer",
        "--etcd", "--group", "--ranks", "--json", "--csv", "--plot",
        "--op_type", "--large_blk_iter_ftr", "--num_threads",
        "--pipeline-depth", "--reregister", "--hugepages",
        "--progress-threads", "--prepared_xfer", "--reregister_mem",
        "--pipeline_depth", "--use_hugepages", "--progress_threads",
    };
    char buf[16384], *line;
    char *argv[] = { (char *)"xfer-bench", (char *)"--help", NULL };
    struct xb_opts o;
    size_t i;
    int rc = parse_capturing(&o, 2, argv, 1, buf, sizeof(buf));

    CU_ASSERT_EQUAL(rc, 1);
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        XT_CHECK(strstr(buf, names[i]) != NULL, "--help omits %s", names[i]);
    XT_CHECK(strstr(buf, "(default: 4K)") != NULL, "no defaults in --help");
    for (line = strtok(buf, "\n"); line != NULL; line = strtok(NULL, "\n"))
        XT_CHECK(strlen(line) <= 79, "--help line over 79 columns: %s", line);
}

static void test_schemes(void)
{
    int out[XB_MAX_RANKS];

    CU_ASSERT_PTR_NULL(xb_scheme_problem(XB_PAIRWISE, 4));
    CU_ASSERT_PTR_NULL(xb_scheme_problem(XB_MANY_TO_ONE, 3));
    CU_ASSERT_PTR_NOT_NULL(xb_scheme_problem(XB_PAIRWISE, 5));
    CU_ASSERT_PTR_NOT_NULL(xb_scheme_problem(XB_ONE_TO_MANY, 1));
    CU_ASSERT_PTR_NOT_NULL(xb_scheme_problem(XB_ONE_TO_MANY, 65));
    /* pairwise, 4 ranks: 0->2, 1->3 */
    CU_ASSERT(xb_is_initiator(XB_PAIRWISE, 1, 4));
    CU_ASSERT(!xb_is_initiator(XB_PAIRWISE, 2, 4));
    CU_ASSERT_EQUAL(xb_targets_of(XB_PAIRWISE, 1, 4, out), 1);
    CU_ASSERT_EQUAL(out[0], 3);
    CU_ASSERT_EQUAL(xb_initiators_of(XB_PAIRWISE, 2, 4, out), 1);
    CU_ASSERT_EQUAL(out[0], 0);
    /* many-to-one, 4 ranks: 1, 2, 3 -> 0 */
    CU_ASSERT_EQUAL(xb_initiators_of(XB_MANY_TO_ONE, 0, 4, out), 3);
    CU_ASSERT(out[0] == 1 && out[1] == 2 && out[2] == 3);
    CU_ASSERT_EQUAL(xb_targets_of(XB_MANY_TO_ONE, 2, 4, out), 1);
    CU_ASSERT_EQUAL(out[0], 0);
    CU_ASSERT_EQUAL(xb_targets_of(XB_MANY_TO_ONE, 0, 4, out), 0);
    /* one-to-many, 3 ranks: 0 -> 1, 2 */
    CU_ASSERT_EQUAL(xb_targets_of(XB_ONE_TO_MANY, 0, 3, out), 2);
    CU_ASSERT(out[0] == 1 && out[1] == 2);
    CU_ASSERT_EQUAL(xb_initiators_of(XB_ONE_TO_MANY, 2, 3, out), 1);
    CU_ASSERT_EQUAL(out[0], 0);
}

static void test_pattern(void)
{
    unsigned char buf[1003];
    uint64_t seed = xb_pattern_seed(4096, 2, 7, 1);

    CU_ASSERT_NOT_EQUAL(seed, xb_pattern_seed(4096, 2, 8, 1));
    CU_ASSERT_NOT_EQUAL(seed, xb_pattern_seed(4096, 2, 7, 0));
    xb_pattern_fill(buf, sizeof(buf), seed);
    CU_ASSERT_EQUAL(xb_pattern_check(buf, sizeof(buf), seed), sizeof(buf));
    CU_ASSERT_EQUAL(xb_pattern_check(buf, sizeof(buf), seed + 1), 0);
    buf[1001] ^= 1;
    CU_ASSERT_EQUAL(xb_pattern_check(buf, sizeof(buf), seed), 1001);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_defaults),
        XT_TEST(test_long_options),
        XT_TEST(test_nixlbench_spellings),
        XT_TEST(test_nixlbench_later_options),
        XT_TEST(test_bad_values),
        XT_TEST(test_bad_combinations),
        XT_TEST(test_help_lists_every_option),
        XT_TEST(test_schemes),
        XT_TEST(test_pattern),
        XT_END,
    };
    static const xt_suite_t suites[] = { { "bench-opts", tests } };

    (void)argc;
    return xt_run(argv[0], suites, 1);
}
