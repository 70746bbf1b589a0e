/* conformance.h - what the files of the backend conformance suite share:
 * the spec under test, the bound on a transfer, and the target process
 * harness (conf-proc.c) that the process, stall and fault suites drive. */
#ifndef XT_CONFORMANCE_H
#define XT_CONFORMANCE_H

#include "tests/common/xt.h"

extern const char *xc_spec;       /* e.g. "tcp" or "tcp:nodelay=0" */
/* Why this spec's targets cannot refuse a bad access (the backend state's
 * words), or NULL when they can. */
extern const char *xc_unenforced;

#define WAIT_MS 30000             /* bound on any single transfer */

#define CHECK_PATTERN(buf, len, seed, base, what)                           \
    do {                                                                    \
        long bad_ = xt_check_at((buf), (len), (seed), (base));              \
        XT_CHECK(bad_ < 0, "%s: byte %ld of %zu differs", (what), bad_,     \
                 (size_t)(len));                                            \
    } while (0)

/* A target process: one agent with xc_spec's backend and one registered
 * buffer, serving text commands over a socketpair (conf-proc.c lists
 * them). */
typedef struct xc_child {
    int pid;
    int fd;
    char name[64];
    char *blob;                   /* its metadata, all regions */
    uint32_t len;
} xc_child_t;

/* Fork a target process of `size` bytes; returns once its blob is here.
 * Call before creating agents in this process. */
void xc_child_start(xc_child_t *c, size_t size);
/* The same, its buffer from xfer_mem_alloc when xalloc (shareable: the
 * uds shm path), else from posix_memalign. */
void xc_child_start_mem(xc_child_t *c, size_t size, bool xalloc);
/* The same in network namespace netns (a path such as /run/netns/b;
 * NULL or "": this process's own), whatever XT_CHILD_NETNS says. */
void xc_child_start_in(xc_child_t *c, size_t size, const char *netns);
/* Send a command and return the reply (freed after the test). */
char *xc_child_cmd(xc_child_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Tell it to exit and check that it did, cleanly. */
void xc_child_stop(xc_child_t *c);
/* Load the child's metadata into ini (fatal if refused). */
void xc_child_load(xfer_agent_t *ini, xc_child_t *c);
/* The remote address of the child's buffer, from its blob. */
uintptr_t xc_child_base(xc_child_t *c);
/* A request of one descriptor: local <-> the child's buffer at roff. */
xfer_status_t xc_child_req_opts(xfer_agent_t *ini, xc_child_t *c,
                                xfer_op_t op, void *local, size_t roff,
                                size_t len, const xfer_req_opts_t *opts,
                                xfer_req_t **req);
xfer_req_t *xc_child_req(xfer_agent_t *ini, xc_child_t *c, xfer_op_t op,
                         void *local, size_t roff, size_t len);

/* True (and says so) when s is the refusal of a request timeout by a
 * backend that cannot cancel. */
bool xc_timeout_refused(xfer_status_t s);
/* Whether the backend connects at xfer_md_connect (not at first post). */
bool xc_connects_eagerly(void);

/* The suites that need other processes (conf-faults.c). */
extern const xt_test_t xc_process_tests[];
extern const xt_test_t xc_stall_tests[];
/* A link cut under transfers (conf-link.c): needs XT_LINK_CUT and
 * XT_LINK_RESTORE, set by conformance-netns.sh. */
extern const xt_test_t xc_link_tests[];

#endif
