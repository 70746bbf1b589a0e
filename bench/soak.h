/* soak.h - what the soak test's target (soak.c) and its initiator processes
 * (soak-initiator.c) share: options, the target region's layout, the plan
 * of every transfer, the byte patterns and the notification message.
 *
 *   soak.c            options; which role this process plays
 *   soak-target.c     the target: checker, sampling, kill and restart
 *   soak-proc.c       its RSS and open fds, from /proc
 *   soak-initiator.c  one initiator process (the same program, --child)
 *   soak-plan.c       layout, plans and patterns, computed alike by both
 *
 * Both sides derive everything from (seed, slot, generation, sequence):
 * the initiator what to send, the target what it must find, so the
 * notification needs to carry nothing the target cannot check. */
#ifndef XFER_BENCH_SOAK_H
#define XFER_BENCH_SOAK_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

#define SOAK_TARGET_NAME "soak-target"
/* Initiators are "soak-<slot>"; a restarted one keeps its slot's name
 * and gets a newer epoch (docs/api.md, "Epochs make restarts safe"). */
#define SOAK_NAME_FMT "soak-%u"
/* The status page (soak_status_t per slot) is this fd in an initiator. */
#define SOAK_STATUS_FD 3
#define SOAK_MSG_MAGIC 0x4b414f53u /* "SOAK" */
/* Exit status of an initiator that failed; 2 is a usage error. */
#define SOAK_EXIT_FAIL 1
#define SOAK_LINE 64 /* bytes per slot in the ack area and status page */

typedef struct soak_cfg {
    const char *spec;       /* backend spec, e.g. "tcp" */
    unsigned initiators;    /* slots, one initiator process each */
    uint64_t transfers;     /* total, over every slot */
    size_t min_size, max_size;
    uint64_t seed;
    uint64_t sample_every;  /* transfers between two samples */
    unsigned window;        /* writes in flight to the target per slot */
    unsigned read_pct;      /* share of READs among transfers, percent */
    unsigned restarts;      /* initiators killed and restarted, one at a
                               time, at even points of the run */
    unsigned stall_s;       /* no progress this long: fail */
    unsigned rss_margin_mib, rss_margin_pct;
    /* derived by soak_layout() */
    size_t sub_size;        /* one write sub-slot: max_size rounded up */
    size_t pat_size;        /* the read-only pattern area */
    size_t ack_off, pat_off, wr_off, region_size;
} soak_cfg_t;

/* What one transfer does; both sides compute it with soak_plan(). */
typedef struct soak_plan {
    xfer_op_t op;
    size_t off;             /* in the slot's sub-slot (WRITE) or in the
                               pattern area (READ) */
    size_t len;
    uint64_t tseed;         /* the pattern a WRITE carries */
} soak_plan_t;

/* The notification every transfer carries. */
typedef struct soak_msg {
    uint32_t magic, slot, gen, op;
    uint64_t seq, off, len, tseed;
} soak_msg_t;

/* The target's answer to flow control, read by initiators with a READ:
 * (gen << 32 | transfers of that generation checked so far) and its
 * complement, so that a read racing the update is seen as torn. */
typedef struct soak_ack {
    uint64_t word, check;
} soak_ack_t;

/* One line of the status page, a memfd the target shares with every
 * initiator: what the initiator saw complete, for the checks across a
 * kill (every transfer it saw complete was notified) and stall reports. */
typedef struct soak_status {
    uint64_t done;          /* transfers seen XFER_OK, this generation */
    uint64_t gen;
    uint64_t ack_reads;     /* flow-control READs of the ack line */
    uint64_t finished;      /* 1 once its quota is done */
} soak_status_t;

/* Fill the derived fields; -1 with a sentence on stderr when the
 * options cannot make a layout. */
int soak_layout(soak_cfg_t *c);

void soak_plan(const soak_cfg_t *c, unsigned slot, unsigned gen,
               uint64_t seq, soak_plan_t *p);

/* Byte i of a pattern is byte i % 8 of splitmix64(seed + i / 8), so
 * any range can be made or checked alone.  soak_pat_check returns the
 * index of the first wrong byte in [0, len), or len when all are right. */
void soak_pat_fill(uint8_t *dst, uint64_t seed, size_t start, size_t len);
size_t soak_pat_check(const uint8_t *src, uint64_t seed, size_t start,
                      size_t len);

/* The read-only area's pattern seed. */
uint64_t soak_pat_seed(const soak_cfg_t *c);

/* Where a slot's sub-slot for sequence seq lies, from the region start. */
size_t soak_sub_off(const soak_cfg_t *c, unsigned slot, uint64_t seq);

uint64_t soak_mix64(uint64_t x);
uint64_t soak_now_ns(void);
void soak_sleep_ms(unsigned ms);

/* The target process, which starts the initiators (self: this program):
 * returns the exit status (0 all held, 1 a check failed, 77 no backend). */
int soak_target(soak_cfg_t *c, const char *self);

/* The initiator process: returns its exit status. */
int soak_initiator(const soak_cfg_t *c, const char *listen_addr,
                   unsigned slot, unsigned gen, uint64_t quota);

/* fds below this are told apart from the baseline, one bit each. */
#define SOAK_FD_BITS 1024

/* VmRSS in KiB and the number of open fds; -1 when /proc cannot say. */
long soak_rss_kib(void);
long soak_heap_kib(void); /* malloc'd and in use (glibc), -1: unknown */
long soak_fd_count(void);
/* Set the bit of every fd open now, below nbits. */
void soak_fd_mark(uint64_t *base, size_t nbits);
/* The fds open now that were not at the baseline, each printed with what
 * it points to.  Returns how many are sockets, pipes or files: what a
 * peer's connection or shared memory holds.  An anon_inode (an eventfd
 * or timerfd a transport library opens on first use and keeps for the
 * process: ucx's timer) is printed, not counted; a per-peer one would
 * still show in the first/last comparison across the restart. */
long soak_fd_new(const uint64_t *base, size_t nbits, int print);

#endif /* XFER_BENCH_SOAK_H */
