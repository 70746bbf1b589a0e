/* opts.c - xfer-bench's options: one table drives getopt_long, --help,
 * the nixlbench spellings and the checks, so a new option is one row
 * plus one case. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "xb.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* Longest --backend spec kept; specs are copied so their plugin name
 * can be folded to lower case (nixlbench says UCX, plugins say ucx). */
#define SPEC_MAX 512
#define SPEC_STR2(x) #x
#define SPEC_STR(x) SPEC_STR2(x)

enum opt_id {
    OPT_HELP = 'h',
    OPT_BACKEND = 256,
    OPT_OP,
    OPT_START_BLOCK,
    OPT_MAX_BLOCK,
    OPT_START_BATCH,
    OPT_MAX_BATCH,
    OPT_NUM_ITER,
    OPT_WARMUP_ITER,
    OPT_LARGE_FACTOR,
    OPT_THREADS,
    OPT_TOTAL_BUFFER,
    OPT_CHECK,
    OPT_STATS,
    OPT_PREPARED,
    OPT_RECREATE,
    OPT_REREGISTER,
    OPT_PIPELINE,
    OPT_PROGRESS_THREAD,
    OPT_PROGRESS_THREADS,
    OPT_SCHEME,
    OPT_ISEG,
    OPT_TSEG,
    OPT_ROLE,
    OPT_PEER,
    OPT_ETCD,
    OPT_GROUP,
    OPT_RANKS,
    OPT_ALLOC,
    OPT_HUGEPAGES,
    OPT_JSON,
    OPT_CSV,
    OPT_PLOT,
    OPT_PROGRESS,
    OPT_NO_PROGRESS,
    OPT_VERSION,
    /* nixlbench options with one meaningful value here */
    OPT_NX_RUNTIME,
    OPT_NX_WORKER,
    OPT_NX_MODE,
    OPT_NX_IDEV,
    OPT_NX_TDEV,
    OPT_NX_DEVICES,
};

struct opt_def {
    const char *name;
    int id;
    const char *arg;   /* NULL: a flag (true|false allowed after '=') */
    const char *dflt;  /* shown by --help; NULL: not shown */
    const char *help;  /* NULL: an alias, not listed on its own */
};

static const struct opt_def opt_defs[] = {
    { "backend", OPT_BACKEND, "SPEC", "tcp",
      "backend spec (tcp, uds:mode=shm, ...); repeat it to compare "
      "backends in one run" },
    { "op", OPT_OP, "READ|WRITE", "WRITE", "operation the initiators post" },
    { "start-block-size", OPT_START_BLOCK, "SIZE", "4K",
      "first block size (K, M, G: powers of 2)" },
    { "max-block-size", OPT_MAX_BLOCK, "SIZE", "64M",
      "last block size; sizes double from the first" },
    { "start-batch-size", OPT_START_BATCH, "N", "1",
      "first number of blocks (descriptors) per request" },
    { "max-batch-size", OPT_MAX_BATCH, "N", "1",
      "last blocks per request; doubling" },
    { "num-iter", OPT_NUM_ITER, "N", "1000",
      "measured posts per point, shared by the threads" },
    { "warmup-iter", OPT_WARMUP_ITER, "N", "100",
      "posts before measuring, per thread (blocks >= 1M: divided "
      "as num-iter)" },
    { "large-block-iter-factor", OPT_LARGE_FACTOR, "N", "16",
      "blocks >= 1M run num-iter / N posts" },
    { "threads", OPT_THREADS, "N", "1",
      "initiator threads, each with its own requests and buffer part" },
    { "total-buffer-size", OPT_TOTAL_BUFFER, "SIZE", "what the sweep needs",
      "bytes each process registers" },
    { "check-consistency", OPT_CHECK, NULL, "off",
      "verify every byte of every post where it landed" },
    { "stats", OPT_STATS, NULL, "off",
      "at the end of each backend, print every process's telemetry "
      "counters (xfer_stats_get: ops, bytes, errors by code, "
      "notifications, latency buckets) as '# stats' lines" },
    { "prepared", OPT_PREPARED, NULL, "off",
      "prepared lists and index-built requests" },
    { "recreate", OPT_RECREATE, NULL, "off",
      "create and release the request every iteration" },
    { "reregister", OPT_REREGISTER, NULL, "off",
      "register the local blocks before every post and deregister them "
      "after it, timed as prep (implies --recreate)" },
    { "pipeline-depth", OPT_PIPELINE, "N", "1",
      "requests in flight per thread: each batch is split into N "
      "requests (batch sizes must be multiples of N), each reposted as "
      "it completes" },
    { "progress-thread", OPT_PROGRESS_THREAD, NULL, "off",
      "initiators use a progress thread, not polling" },
    { "progress-threads", OPT_PROGRESS_THREADS, "0|1", "0",
      "threads that drive an agent's backends besides the caller: 1 is "
      "--progress-thread, 0 leaves it as set; xfer has one per agent" },
    { "scheme", OPT_SCHEME, "pairwise|many-to-one|one-to-many", "pairwise",
      "who writes to whom when there are more than two ranks" },
    { "initiator-seg-type", OPT_ISEG, "DRAM|VRAM", "DRAM",
      "memory of the initiators" },
    { "target-seg-type", OPT_TSEG, "DRAM|VRAM", "DRAM",
      "memory of the targets" },
    { "role", OPT_ROLE, "target|initiator", "all ranks forked here",
      "run one side; the other is reached at --peer" },
    { "peer", OPT_PEER, "HOST:PORT", "-",
      "with --role: the target's control channel; metadata moves "
      "through the agents' side-channel listeners" },
    { "etcd", OPT_ETCD, "URL[,URL]", "-",
      "ranks, barriers and metadata through etcd" },
    { "group", OPT_GROUP, "NAME", "default",
      "with --etcd: the processes of one run" },
    { "ranks", OPT_RANKS, "N", "2 (3 for many-to-one, one-to-many)",
      "processes in the run (forked here without --etcd)" },
    { "alloc", OPT_ALLOC, "malloc|xfer", "malloc",
      "buffers from posix_memalign, or xfer_mem_alloc (memfd: uds maps "
      "them and copies with no system call)" },
    { "hugepages", OPT_HUGEPAGES, NULL, "off",
      "buffers on 2 MiB huge pages (mmap MAP_HUGETLB; with --alloc xfer, "
      "XFER_ALLOC_HUGE); the run fails with a sentence when too few are "
      "reserved" },
    { "json", OPT_JSON, "FILE", "-", "write parameters and results as JSON" },
    { "csv", OPT_CSV, "FILE", "-", "write the results as CSV" },
    { "plot", OPT_PLOT, "FILE.png", "-",
      "draw GB/s and latency against block size (gnuplot)" },
    { "progress", OPT_PROGRESS, NULL, "when stderr is a terminal",
      "show a progress bar on stderr" },
    { "no-progress", OPT_NO_PROGRESS, NULL, NULL, "never show it" },
    { "help", OPT_HELP, NULL, NULL, "print this help and exit" },
    { "version", OPT_VERSION, NULL, NULL, "print the version and exit" },

    /* nixlbench's spellings, so its command lines run unchanged */
    { "op_type", OPT_OP, "", NULL, NULL },
    { "start_block_size", OPT_START_BLOCK, "", NULL, NULL },
    { "max_block_size", OPT_MAX_BLOCK, "", NULL, NULL },
    { "start_batch_size", OPT_START_BATCH, "", NULL, NULL },
    { "max_batch_size", OPT_MAX_BATCH, "", NULL, NULL },
    { "num_iter", OPT_NUM_ITER, "", NULL, NULL },
    { "warmup_iter", OPT_WARMUP_ITER, "", NULL, NULL },
    { "large_blk_iter_ftr", OPT_LARGE_FACTOR, "", NULL, NULL },
    { "num_threads", OPT_THREADS, "", NULL, NULL },
    { "total_buffer_size", OPT_TOTAL_BUFFER, "", NULL, NULL },
    { "check_consistency", OPT_CHECK, NULL, NULL, NULL },
    { "recreate_xfer", OPT_RECREATE, NULL, NULL, NULL },
    { "prepared_xfer", OPT_PREPARED, NULL, NULL, NULL },
    { "reregister_mem", OPT_REREGISTER, NULL, NULL, NULL },
    { "pipeline_depth", OPT_PIPELINE, "", NULL, NULL },
    { "use_hugepages", OPT_HUGEPAGES, NULL, NULL, NULL },
    { "enable_pt", OPT_PROGRESS_THREAD, NULL, NULL, NULL },
    { "initiator_seg_type", OPT_ISEG, "", NULL, NULL },
    { "target_seg_type", OPT_TSEG, "", NULL, NULL },
    { "etcd_endpoints", OPT_ETCD, "", NULL, NULL },
    { "benchmark_group", OPT_GROUP, "", NULL, NULL },
    { "runtime_type", OPT_NX_RUNTIME, "", NULL, NULL },
    { "worker_type", OPT_NX_WORKER, "", NULL, NULL },
    { "mode", OPT_NX_MODE, "", NULL, NULL },
    { "num_initiator_dev", OPT_NX_IDEV, "", NULL, NULL },
    { "num_target_dev", OPT_NX_TDEV, "", NULL, NULL },
    { "device_list", OPT_NX_DEVICES, "", NULL, NULL },
    { "progress_threads", OPT_PROGRESS_THREADS, "", NULL, NULL },
};

static char spec_store[XB_MAX_BACKENDS][SPEC_MAX];

/* Print words from text, wrapped at 79 columns with a 33-column indent;
 * col is where the cursor is. */
static size_t wrap(FILE *out, const char *text, size_t col)
{
    while (*text != '\0') {
        size_t w = strcspn(text, " ");

        if (col > 33 && col + 1 + w > 79) {
            fprintf(out, "\n%33s", "");
            col = 33;
        } else if (col > 33) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", (int)w, text);
        col += w;
        text += w;
        while (*text == ' ')
            text++;
    }
    return col;
}

static void usage(FILE *out)
{
    size_t i;

    fprintf(out,
            "Usage: xfer-bench [OPTION]...\n"
            "Measure xfer READ/WRITE bandwidth and latency.  By default two\n"
            "ranks, a target and an initiator, are forked here; every post\n"
            "is timed to completion (the data is visible at its "
            "destination).\n\n");
    for (i = 0; i < COUNT_OF(opt_defs); i++) {
        const struct opt_def *d = &opt_defs[i];
        char left[64], dflt[96];
        size_t col;
        int n;

        if (d->help == NULL)
            continue;
        n = snprintf(left, sizeof(left), "  --%s%s%s", d->name,
                     d->arg ? " " : "", d->arg ? d->arg : "");
        if (n > 32)
            fprintf(out, "%s\n%33s", left, "");
        else
            fprintf(out, "%-33s", left);
        col = wrap(out, d->help, 33);
        if (d->dflt != NULL) {
            /* The default stays in one piece: on this line or the next. */
            snprintf(dflt, sizeof(dflt), "(default: %s)", d->dflt);
            if (col + 1 + strlen(dflt) > 79)
                fprintf(out, "\n%33s%s", "", dflt);
            else
                fprintf(out, " %s", dflt);
        }
        fprintf(out, "\n");
    }
    fprintf(out,
            "\nnixlbench's spellings are accepted too: --op_type, "
            "--start_block_size,\n"
            "--max_block_size, --start_batch_size, --max_batch_size, "
            "--num_iter,\n"
            "--warmup_iter, --large_blk_iter_ftr, --num_threads, "
            "--total_buffer_size,\n"
            "--check_consistency, --recreate_xfer, --prepared_xfer,\n"
            "--reregister_mem, --pipeline_depth, --use_hugepages, "
            "--enable_pt,\n"
            "--progress_threads, --initiator_seg_type, --target_seg_type,\n"
            "--etcd_endpoints, --benchmark_group, and --runtime_type,\n"
            "--worker_type, --mode, --num_initiator_dev, --num_target_dev,\n"
            "--device_list where their value is the one xfer-bench\n"
            "implements.\n"
            "\nGB/s is 10^9 bytes moved by all initiators divided by the time\n"
            "from the first measured post to the last completion; latency is\n"
            "that time divided by one thread's posts; prep is request\n"
            "creation, post the xfer_req_post call, transfer post to\n"
            "completion; cpu_pct is the initiator process's CPU time over\n"
            "that time.  Exit status: 0 on success, 1 on a failed run, 2 on\n"
            "a bad option.\n");
}

static int bad_option(const char *name, const char *arg, const char *why)
{
    fprintf(stderr, "xfer-bench: option --%s: %s '%s'; try --help.\n", name,
            why, arg);
    return -1;
}

/* Sizes in bytes, with K/M/G (optionally KiB, MiB, GiB) meaning powers
 * of 2, as in the backend specs; plain numbers are bytes. */
static int parse_size(const char *name, const char *arg, size_t *out)
{
    unsigned long long v;
    unsigned shift = 0;
    char *end;

    errno = 0;
    if (arg[0] == '-' || arg[0] == '\0')
        return bad_option(name, arg, "expects a size, not");
    v = strtoull(arg, &end, 10);
    if (errno != 0 || end == arg)
        return bad_option(name, arg, "expects a size, not");
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift != 0 && strcasecmp(end, "iB") == 0)
        end += 2;
    else if (shift != 0 && (*end == 'b' || *end == 'B'))
        end++;
    if (*end != '\0' || v == 0 || v > (SIZE_MAX >> shift))
        return bad_option(name, arg, "expects a positive size, not");
    *out = (size_t)v << shift;
    return 0;
}

static int parse_count(const char *name, const char *arg, long min, long max,
                       long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min || v > max) {
        char why[80];

        snprintf(why, sizeof(why), "expects an integer in [%ld, %ld], not",
                 min, max);
        return bad_option(name, arg, why);
    }
    *out = v;
    return 0;
}

/* A flag, or --flag=true|false as nixlbench's command lines write it. */
static int parse_flag(const char *name, const char *arg, int *out)
{
    if (arg == NULL || strcasecmp(arg, "true") == 0 || strcmp(arg, "1") == 0 ||
        strcasecmp(arg, "yes") == 0)
        *out = 1;
    else if (strcasecmp(arg, "false") == 0 || strcmp(arg, "0") == 0 ||
             strcasecmp(arg, "no") == 0)
        *out = 0;
    else
        return bad_option(name, arg, "takes no value, or true or false, not");
    return 0;
}

static int parse_seg(const char *name, const char *arg, enum xb_seg *out)
{
    if (strcasecmp(arg, "DRAM") == 0)
        *out = XB_SEG_DRAM;
    else if (strcasecmp(arg, "VRAM") == 0)
        *out = XB_SEG_VRAM;
    else
        return bad_option(name, arg, "expects DRAM or VRAM, not");
    return 0;
}

static int add_backend(struct xb_opts *o, const char *name, const char *arg)
{
    char *s;
    size_t i;

    if (o->nbackends == XB_MAX_BACKENDS)
        return bad_option(name, arg, "is given more than "
                          SPEC_STR(XB_MAX_BACKENDS) " times; last");
    if (arg[0] == '\0' || strlen(arg) >= SPEC_MAX)
        return bad_option(name, arg, "expects a backend spec of 1 to 511 "
                          "characters, not");
    s = spec_store[o->nbackends];
    strcpy(s, arg);
    for (i = 0; s[i] != '\0' && s[i] != ':'; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] - 'A' + 'a');
    o->backends[o->nbackends++] = s;
    return 0;
}

/* The nixlbench options that xfer-bench accepts only with the value it
 * implements: their command lines then run, and anything else is said. */
static int only_value(const char *name, const char *arg, const char *want,
                      const char *why)
{
    if (strcasecmp(arg, want) == 0)
        return 0;
    fprintf(stderr, "xfer-bench: option --%s: only '%s' is implemented (%s), "
            "not '%s'.\n", name, want, why, arg);
    return -1;
}

static int parse_opt(struct xb_opts *o, int id, const char *name,
                     const char *arg)
{
    long v;

    switch (id) {
    case OPT_BACKEND: return add_backend(o, name, arg);
    case OPT_OP:
        if (strcasecmp(arg, "READ") == 0)
            o->op = XFER_OP_READ;
        else if (strcasecmp(arg, "WRITE") == 0)
            o->op = XFER_OP_WRITE;
        else
            return bad_option(name, arg, "expects READ or WRITE, not");
        return 0;
    case OPT_START_BLOCK: return parse_size(name, arg, &o->start_block);
    case OPT_MAX_BLOCK: return parse_size(name, arg, &o->max_block);
    case OPT_START_BATCH:
    case OPT_MAX_BATCH:
        if (parse_count(name, arg, 1, 1L << 20, &v))
            return -1;
        *(id == OPT_START_BATCH ? &o->start_batch : &o->max_batch) =
            (size_t)v;
        return 0;
    case OPT_NUM_ITER:
        return parse_count(name, arg, 1, 1L << 30, &o->num_iter);
    case OPT_WARMUP_ITER:
        return parse_count(name, arg, 0, 1L << 30, &o->warmup_iter);
    case OPT_LARGE_FACTOR:
        return parse_count(name, arg, 1, 1L << 20, &o->large_iter_factor);
    case OPT_THREADS: return parse_count(name, arg, 1, 256, &o->threads);
    case OPT_TOTAL_BUFFER: return parse_size(name, arg, &o->total_buffer);
    case OPT_CHECK: return parse_flag(name, arg, &o->check);
    case OPT_STATS: return parse_flag(name, arg, &o->stats);
    case OPT_PREPARED: return parse_flag(name, arg, &o->prepared);
    case OPT_RECREATE: return parse_flag(name, arg, &o->recreate);
    case OPT_REREGISTER: return parse_flag(name, arg, &o->reregister);
    case OPT_PIPELINE:
        return parse_count(name, arg, 1, XB_MAX_PIPELINE, &o->pipeline_depth);
    case OPT_HUGEPAGES: return parse_flag(name, arg, &o->hugepages);
    case OPT_PROGRESS_THREAD: return parse_flag(name, arg, &o->progress_thread);
    case OPT_SCHEME:
        if (strcasecmp(arg, "pairwise") == 0)
            o->scheme = XB_PAIRWISE;
        else if (strcasecmp(arg, "many-to-one") == 0 ||
                 strcasecmp(arg, "manytoone") == 0)
            o->scheme = XB_MANY_TO_ONE;
        else if (strcasecmp(arg, "one-to-many") == 0 ||
                 strcasecmp(arg, "onetomany") == 0)
            o->scheme = XB_ONE_TO_MANY;
        else
            return bad_option(name, arg, "expects pairwise, many-to-one or "
                              "one-to-many, not");
        return 0;
    case OPT_ISEG: return parse_seg(name, arg, &o->iseg);
    case OPT_TSEG: return parse_seg(name, arg, &o->tseg);
    case OPT_ROLE:
        if (strcmp(arg, "target") == 0)
            o->role = XB_ROLE_TARGET;
        else if (strcmp(arg, "initiator") == 0)
            o->role = XB_ROLE_INITIATOR;
        else
            return bad_option(name, arg, "expects target or initiator, not");
        return 0;
    case OPT_PEER: o->peer = arg; return 0;
    case OPT_ETCD:
        if (strncmp(arg, "http://", 7) != 0 &&
            strncmp(arg, "https://", 8) != 0)
            return bad_option(name, arg, "expects http://HOST:PORT, not");
        o->etcd = arg;
        return 0;
    case OPT_GROUP:
        if (arg[0] == '\0' || strlen(arg) > 64 || strchr(arg, '/') != NULL)
            return bad_option(name, arg, "expects a name of 1 to 64 "
                              "characters without '/', not");
        o->group = arg;
        return 0;
    case OPT_RANKS: return parse_count(name, arg, 2, XB_MAX_RANKS, &o->ranks);
    case OPT_ALLOC:
        if (strcmp(arg, "xfer") == 0)
            o->alloc_xfer = 1;
        else if (strcmp(arg, "malloc") == 0)
            o->alloc_xfer = 0;
        else
            return bad_option(name, arg, "expects malloc or xfer, not");
        return 0;
    case OPT_JSON: o->json_path = arg; return 0;
    case OPT_CSV: o->csv_path = arg; return 0;
    case OPT_PLOT: o->plot_path = arg; return 0;
    case OPT_PROGRESS:
        if (parse_flag(name, arg, &o->progress))
            return -1;
        return 0;
    case OPT_NO_PROGRESS: o->progress = 0; return 0;
    case OPT_NX_RUNTIME:
        return only_value(name, arg, "ETCD", "ranks meet through etcd or "
                          "sockets");
    case OPT_NX_WORKER:
        return only_value(name, arg, "nixl", "the xfer agent API");
    case OPT_NX_MODE:
        return only_value(name, arg, "SG", "one buffer per process");
    case OPT_NX_IDEV:
    case OPT_NX_TDEV:
        return only_value(name, arg, "1", "one buffer per process");
    case OPT_NX_DEVICES:
        return only_value(name, arg, "all", "backends pick devices by "
                          "their own spec keys");
    case OPT_PROGRESS_THREADS:
        /* nixlbench hands N to its backend as extra progress threads (0,
         * its default, is none: --enable_pt alone decides).  An xfer
         * agent's backends are driven by one thread or by the caller. */
        if (parse_count(name, arg, 0, 1L << 20, &v))
            return -1;
        if (v > 1) {
            fprintf(stderr, "xfer-bench: option --%s %ld: an xfer agent "
                    "drives its backends from one progress thread, so only "
                    "0 or 1 applies (1 is --progress-thread; UCX workers "
                    "are the backend key ucx:workers=N).\n", name, v);
            return -1;
        }
        if (v == 1)
            o->progress_thread = 1;
        return 0;
    default: return -1;
    }
}

void xb_opts_defaults(struct xb_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->op = XFER_OP_WRITE;
    o->start_block = (size_t)4 << 10;
    o->max_block = (size_t)64 << 20;
    o->start_batch = 1;
    o->max_batch = 1;
    o->num_iter = 1000;
    o->warmup_iter = 100;
    o->large_iter_factor = 16;
    o->threads = 1;
    o->pipeline_depth = 1;
    o->scheme = XB_PAIRWISE;
    o->role = XB_ROLE_LOCAL;
    o->group = "default";
    o->progress = -1;
}

/* Peers one process serves at most: a many-to-one target has every
 * other rank, a one-to-many initiator too; pairwise ranks have one. */
static size_t max_peers(const struct xb_opts *o)
{
    return o->scheme == XB_PAIRWISE || o->ranks < 2 ? 1
                                                    : (size_t)o->ranks - 1;
}

size_t xb_opts_buffer(const struct xb_opts *o)
{
    size_t need = o->max_block * o->max_batch * (size_t)o->threads *
                  max_peers(o);

    return o->total_buffer > need ? o->total_buffer : need;
}

const char *xb_scheme_name(enum xb_scheme s)
{
    switch (s) {
    case XB_MANY_TO_ONE: return "many-to-one";
    case XB_ONE_TO_MANY: return "one-to-many";
    default: return "pairwise";
    }
}

long xb_iters_for(const struct xb_opts *o, size_t block)
{
    long n = o->num_iter;

    if (block >= XB_LARGE_BLOCK)
        n /= o->large_iter_factor;
    n /= o->threads;
    return n > 0 ? n : 1;
}

long xb_warmup_for(const struct xb_opts *o, size_t block)
{
    long n = o->warmup_iter;

    if (block >= XB_LARGE_BLOCK && n > 0) {
        n /= o->large_iter_factor;
        if (n == 0)
            n = 1;
    }
    return n;
}

/* The checks that need more than one option, each one sentence. */
static int check_combination(struct xb_opts *o)
{
    static char dflt_spec[] = "tcp";
    const char *why;

    if (o->nbackends == 0)
        o->backends[o->nbackends++] = dflt_spec;
    if (o->start_block > o->max_block) {
        fprintf(stderr, "xfer-bench: option --start-block-size must not "
                "exceed --max-block-size.\n");
        return -1;
    }
    if (o->start_batch > o->max_batch) {
        fprintf(stderr, "xfer-bench: option --start-batch-size must not "
                "exceed --max-batch-size.\n");
        return -1;
    }
    /* As nixlbench: a batch is cut into pipeline_depth requests, so
     * every batch of the sweep (doubling from the first) must divide. */
    if (o->start_batch % (size_t)o->pipeline_depth != 0) {
        fprintf(stderr, "xfer-bench: option --pipeline-depth %ld: "
                "--start-batch-size %zu is not a multiple of it (each batch "
                "is split into that many requests in flight).\n",
                o->pipeline_depth, o->start_batch);
        return -1;
    }
    /* A request cannot outlive the registration of its memory
     * (xfer_mem_deregister answers XFER_ERR_BUSY). */
    if (o->reregister)
        o->recreate = 1;
    if (o->iseg == XB_SEG_VRAM || o->tseg == XB_SEG_VRAM) {
        fprintf(stderr, "xfer-bench: option --%s VRAM: no backend of this "
                "build registers GPU memory (DRAM only).\n",
                o->iseg == XB_SEG_VRAM ? "initiator-seg-type"
                                       : "target-seg-type");
        return -1;
    }
    if (o->role != XB_ROLE_LOCAL && o->peer == NULL) {
        fprintf(stderr, "xfer-bench: option --role needs --peer.\n");
        return -1;
    }
    if (o->peer != NULL && o->role == XB_ROLE_LOCAL) {
        fprintf(stderr, "xfer-bench: option --peer needs --role.\n");
        return -1;
    }
    if (o->etcd != NULL && o->peer != NULL) {
        fprintf(stderr, "xfer-bench: option --etcd: choose --etcd or "
                "--role/--peer, not both.\n");
        return -1;
    }
    if (o->ranks == 0)
        o->ranks = o->scheme == XB_PAIRWISE ? 2 : 3;
    if (o->peer != NULL && (o->ranks != 2 || o->scheme != XB_PAIRWISE)) {
        fprintf(stderr, "xfer-bench: option --peer joins two ranks; use "
                "--etcd for --ranks %ld or --scheme %s.\n", o->ranks,
                xb_scheme_name(o->scheme));
        return -1;
    }
    if ((why = xb_scheme_problem(o->scheme, (int)o->ranks)) != NULL) {
        fprintf(stderr, "xfer-bench: option --ranks %ld: %s.\n", o->ranks,
                why);
        return -1;
    }
    /* A process registers block x batch x threads bytes per peer. */
    if (o->max_block > SIZE_MAX / o->max_batch / (size_t)o->threads /
                           max_peers(o)) {
        fprintf(stderr, "xfer-bench: option --max-block-size times "
                "--max-batch-size times --threads%s overflows a size.\n",
                max_peers(o) > 1 ? " times the peers of a rank" : "");
        return -1;
    }
    if (o->total_buffer != 0 &&
        o->max_block * o->max_batch * (size_t)o->threads * max_peers(o) >
            o->total_buffer) {
        char peers[64] = "";

        if (max_peers(o) > 1)
            snprintf(peers, sizeof(peers), " times %zu peers (%s)",
                     max_peers(o), xb_scheme_name(o->scheme));
        fprintf(stderr, "xfer-bench: option --max-block-size: %zu-byte "
                "blocks times %zu per request times %ld threads%s do not "
                "fit in --total-buffer-size %zu.\n", o->max_block,
                o->max_batch, o->threads, peers, o->total_buffer);
        return -1;
    }
    return 0;
}

int xb_opts_parse(int argc, char **argv, struct xb_opts *o)
{
    struct option longopts[COUNT_OF(opt_defs) + 1];
    size_t i;
    int c, idx;

    xb_opts_defaults(o);
    for (i = 0; i < COUNT_OF(opt_defs); i++) {
        longopts[i].name = opt_defs[i].name;
        longopts[i].has_arg = opt_defs[i].arg ? required_argument
                                              : optional_argument;
        longopts[i].flag = NULL;
        longopts[i].val = opt_defs[i].id;
    }
    memset(&longopts[i], 0, sizeof(longopts[i]));

    optind = 0; /* glibc: start over, as for a new argv */
    opterr = 0; /* one sentence of our own instead */
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        if (c == OPT_HELP) {
            usage(stdout);
            return 1;
        }
        if (c == OPT_VERSION) {
            printf("xfer-bench (libxfer %s)\n", xfer_version());
            return 1;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "xfer-bench: unknown option or missing argument "
                    "in '%s'; try --help.\n", argv[optind - 1]);
            return -1;
        }
        if (parse_opt(o, c, longopts[idx].name, optarg))
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "xfer-bench: unexpected argument '%s'; try --help.\n",
                argv[optind]);
        return -1;
    }
    return check_combination(o);
}
