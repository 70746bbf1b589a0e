/* xb.h - the parts of xfer-bench and how they meet.
 *
 *   opts.c      options: one table for getopt_long, --help, the nixlbench
 *               underscore aliases and the checks of their values
 *   coord.c     the ranks of a run: who is target and initiator (scheme),
 *               allgather and barrier over sockets (forked ranks, --peer)
 *   coord-etcd.c  the same over etcd (--etcd, --group, --ranks)
 *   run.c       agents, buffers, metadata, the measured loops, threads
 *   pattern.c   fill/verify patterns for --check-consistency
 *   util.c      the first error as one sentence, the clock, the bound
 *   report.c    the table, --json, --csv, --plot, the progress bar
 *   main.c      glue
 */
#ifndef XFER_BENCH_XB_H
#define XFER_BENCH_XB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <xfer/xfer.h>

#define XB_MAX_BACKENDS 16
#define XB_MAX_RANKS 64

/* Blocks at least this large run num_iter / large_iter_factor times. */
#define XB_LARGE_BLOCK ((size_t)1 << 20)

/* How long any rank waits on a silent one before the run fails: failure
 * is an answer, never a hang.  Working initiators send a heartbeat every
 * XB_HEARTBEAT_MS, so the bound is on silence, not on a point's length. */
#define XB_TIMEOUT_MS 60000
#define XB_HEARTBEAT_MS 2000

/* Most requests one initiator thread keeps in flight (--pipeline-depth):
 * each holds a request per target; more than this is a typo. */
#define XB_MAX_PIPELINE 1024
/* --hugepages: the page size asked of mmap (MAP_HUGE_2MB). */
#define XB_HUGE_PAGE ((size_t)2 << 20)

enum xb_role { XB_ROLE_LOCAL, XB_ROLE_TARGET, XB_ROLE_INITIATOR };
enum xb_scheme { XB_PAIRWISE, XB_MANY_TO_ONE, XB_ONE_TO_MANY };
enum xb_seg { XB_SEG_DRAM, XB_SEG_VRAM };

struct xb_opts {
    const char *backends[XB_MAX_BACKENDS]; /* --backend, in order */
    size_t nbackends;
    const char *versions[XB_MAX_BACKENDS]; /* their plugins' (main.c) */
    xfer_op_t op;
    size_t start_block, max_block;
    size_t start_batch, max_batch;
    long num_iter, warmup_iter, large_iter_factor;
    long threads;             /* initiator threads, each with its requests */
    size_t total_buffer;      /* per process; 0: what the sweep needs */
    int check;                /* --check-consistency */
    int stats;                /* --stats: print telemetry at the end */
    int prepared;             /* prepared lists + index-built requests */
    int recreate;             /* create/release a request every iteration */
    int reregister;           /* register the local blocks of every post
                                 (implies recreate) */
    long pipeline_depth;      /* requests in flight per thread; a batch is
                                 split among them */
    int progress_thread;
    int alloc_xfer;           /* xfer_mem_alloc (memfd) instead of malloc */
    int hugepages;            /* buffers on 2 MiB huge pages */
    enum xb_scheme scheme;
    enum xb_seg iseg, tseg;
    enum xb_role role;        /* LOCAL: fork every rank here */
    const char *peer;         /* --role with a TCP control channel */
    const char *etcd;         /* --etcd URL[,URL]: ranks through etcd */
    const char *group;        /* --group: etcd key space of this run */
    long ranks;               /* processes in the run (0: scheme default) */
    const char *json_path, *csv_path, *plot_path;
    int progress;             /* progress bar: -1 auto (stderr a tty) */
};

/* opts.c.  0: run; 1: help or version printed, exit 0; -1: the one
 * sentence naming the option was printed, exit 2. */
int xb_opts_parse(int argc, char **argv, struct xb_opts *o);
void xb_opts_defaults(struct xb_opts *o);
/* Bytes each process registers: total_buffer, or what the sweep needs. */
size_t xb_opts_buffer(const struct xb_opts *o);
const char *xb_scheme_name(enum xb_scheme s);
/* Measured posts per thread, and warmup posts per thread, of a block
 * size: blocks >= XB_LARGE_BLOCK divide both by large_iter_factor. */
long xb_iters_for(const struct xb_opts *o, size_t block);
long xb_warmup_for(const struct xb_opts *o, size_t block);

/* Errors: the first failure of a process, as one sentence. */
int xb_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int xb_fail_xfer(xfer_status_t st, const char *what);
const char *xb_error(void);
uint64_t xb_now_ns(void);
/* XB_TIMEOUT_MS, or the environment's XB_TIMEOUT_MS (tests shorten it). */
int xb_timeout_ms(void);
/* Room for one more element in the array *arr of *n used, *cap held
 * (elem bytes each), doubling from first; -1, nothing changed, when out
 * of memory. */
int xb_grow(void *arr, size_t n, size_t *cap, size_t elem, size_t first);

/* ------------------------------------------------------------------ */
/* coord: the ranks of one run.                                        */
/* ------------------------------------------------------------------ */

struct xb_blob {
    void *data; /* malloc'd, owned by the array of xb_coord_allgather */
    size_t len;
};

/* While a rank waits on the others it keeps serving: idle_fd (-1: none)
 * is watched with the coordinator's own fds, and idle(arg) is called
 * when it is readable.  idle returns -1 to fail the wait. */
struct xb_idle {
    int fd;
    int (*fn)(void *arg);
    void *arg;
};

struct xb_coord_ops {
    /* Every rank contributes a blob and receives all of them, in rank
     * order (out[rank]); the caller frees them with xb_blobs_free. */
    int (*allgather)(void *impl, const void *mine, size_t len,
                     struct xb_blob *out, const struct xb_idle *idle);
    /* Tell every rank that this one failed, and why (best effort); their
     * waits then fail with that sentence instead of timing out. */
    void (*abort)(void *impl, const char *why);
    /* This rank is alive and working (an initiator during a point, every
     * XB_HEARTBEAT_MS): ranks waiting on it restart their silence bound,
     * so a long point is not taken for a dead rank. */
    int (*heartbeat)(void *impl);
    void (*close)(void *impl);
};

struct xb_coord {
    int rank, size;
    const struct xb_coord_ops *ops;
    void *impl;
};

int xb_coord_allgather(struct xb_coord *c, const void *mine, size_t len,
                       struct xb_blob *out, const struct xb_idle *idle);
int xb_coord_barrier(struct xb_coord *c, const struct xb_idle *idle);
void xb_coord_abort(struct xb_coord *c, const char *why);
int xb_coord_heartbeat(struct xb_coord *c);
void xb_coord_close(struct xb_coord *c);
void xb_blobs_free(struct xb_blob *b, int n);

/* Socket coordinators (coord.c).  Hub: rank 0 holds one stream socket
 * per other rank (socketpairs for forked ranks, TCP for --peer).  They
 * take ownership of the fds. */
int xb_coord_hub(struct xb_coord *c, const int *fds, int nfds); /* rank 0 */
int xb_coord_spoke(struct xb_coord *c, int fd, int rank, int size);
/* --role/--peer: the target listens at HOST:PORT, the initiator
 * connects; the initiator is rank 0, the target rank 1.  Returns -2
 * (after printing the sentence) when --peer is malformed. */
int xb_coord_tcp(struct xb_coord *c, const char *peer, int target);
/* etcd (coord-etcd.c): rank assignment, allgather and barrier under
 * <prefix>/xfer-bench/<group>/; ranks join within XB_TIMEOUT_MS. */
int xb_coord_etcd(struct xb_coord *c, const char *endpoints,
                  const char *group, int size);

/* Roles from scheme and rank.  Each initiator's targets: ranks of the
 * targets it posts to, in order; returns their count. */
int xb_is_initiator(enum xb_scheme s, int rank, int size);
int xb_targets_of(enum xb_scheme s, int rank, int size, int *out);
int xb_initiators_of(enum xb_scheme s, int rank, int size, int *out);
/* Why size ranks cannot run scheme s, or NULL when they can. */
const char *xb_scheme_problem(enum xb_scheme s, int size);

/* ------------------------------------------------------------------ */
/* results and report                                                  */
/* ------------------------------------------------------------------ */

struct xb_stat {
    double avg_us, p50_us, p99_us;
};

/* One row: a block and batch size of one backend, all initiators. */
struct xb_result {
    size_t block, batch;
    long iters;             /* measured posts per initiator thread */
    long threads;           /* initiator threads in all (all ranks) */
    uint64_t bytes;         /* moved while measured, all initiators */
    double seconds;         /* first post to last completion */
    double gbps;            /* bytes / seconds / 1e9 */
    double avg_lat_us;      /* seconds per post of one thread */
    struct xb_stat prep;    /* request creation */
    struct xb_stat post;    /* xfer_req_post call */
    struct xb_stat xfer;    /* post to completion */
    double cpu_pct;         /* initiator CPU time / wall, % of one core */
};

struct xb_report;

/* The run's parameters go into --json/--csv with every row. */
struct xb_report *xb_report_new(const struct xb_opts *o, int ranks);
/* A new backend: prints the banner and the header row. */
int xb_report_backend(struct xb_report *r, const char *spec,
                      const char *plugin_version);
int xb_report_row(struct xb_report *r, const struct xb_result *res);
/* Progress of the sweep on stderr when enabled (done of total points). */
void xb_report_progress(struct xb_report *r, long done, long total);
/* Writes --json, --csv and --plot; prints why one could not be. */
int xb_report_finish(struct xb_report *r);
void xb_report_free(struct xb_report *r);

/* pattern.c */
void xb_pattern_fill(unsigned char *p, size_t len, uint64_t seed);
size_t xb_pattern_check(const unsigned char *p, size_t len, uint64_t seed);
uint64_t xb_pattern_seed(size_t block, size_t batch, long iter, int thread);

/* run.c: this rank's part of the whole run. */
int xb_run(const struct xb_opts *o, struct xb_coord *c);

#endif
