/* inproc.h - what the in-process benchmarks share: agents of one process
 * wired to each other, an 8 B prepared WRITE between them, clocks and
 * medians.  bench/concurrent-post.c and bench/isolation.c use it. */
#ifndef XFER_BENCH_INPROC_H
#define XFER_BENCH_INPROC_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

/* One peer: a target agent, and a prepared WRITE of len bytes to it from
 * the initiator, in memory from xfer_mem_alloc (uds's shm path). */
typedef struct ip_peer {
    xfer_agent_t *tgt;
    void *lbuf, *rbuf;
    xfer_mem_t *lmem, *rmem;
    xfer_prep_t *lprep, *rprep;
    xfer_req_t *req;
} ip_peer_t;

uint64_t ip_now_ns(void);
/* Exit with a sentence naming the call when st is not XFER_OK. */
void ip_check(xfer_status_t st, const char *what);
/* An agent with the backends of a comma-free list of specs ("uds",
 * "ptpoll:reg_delay_ms=50"), up to 4, in that order. */
xfer_agent_t *ip_agent(const char *name, const char *const *specs,
                       size_t nspecs, int progress_thread);
/* A target agent over spec, its metadata loaded into ini, and the
 * prepared WRITE; ip_peer_close undoes it. */
void ip_peer_open(ip_peer_t *p, xfer_agent_t *ini, const char *spec,
                  const char *name, size_t len);
void ip_peer_close(ip_peer_t *p, xfer_agent_t *ini);
/* Post the WRITE and spin on its status: the post-to-completion ns. */
uint64_t ip_write(ip_peer_t *p);
/* The q-quantile (0..1) of n values, sorted in place. */
double ip_quantile(double *v, size_t n, double q);

#endif
