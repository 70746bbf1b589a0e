/* xt.h - helpers shared by the tests that use the public API: agents
 * that clean themselves up, bounded waits, data patterns, status
 * assertions that show xfer_last_error(), and metadata blob editing. */
#ifndef XT_XT_H
#define XT_XT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include <xfer/xfer.h>

#include "tests/common/runner.h"

/* ---- time ------------------------------------------------------------ */

uint64_t xt_now_ms(void);
void xt_sleep_ms(unsigned ms);

/* ---- status assertions -------------------------------------------------- */

const char *xt_status_name(xfer_status_t s);

/* Assert a call returned `want`; on mismatch the message shows both
 * codes and xfer_last_error().  Evaluates to whether it matched. */
#define XT_STATUS(expr, want)                                               \
    xt_status_at(__FILE__, __LINE__, 0, #expr, (expr), (want))
#define XT_STATUS_FATAL(expr, want)                                         \
    xt_status_at(__FILE__, __LINE__, 1, #expr, (expr), (want))
bool xt_status_at(const char *file, unsigned line, int fatal,
                  const char *what, xfer_status_t got, xfer_status_t want);

/* Assert xfer_last_error() contains every one of the strings (NULL
 * ends the list). */
#define XT_ERR_HAS(...) xt_err_has_at(__FILE__, __LINE__, __VA_ARGS__, NULL)
bool xt_err_has_at(const char *file, unsigned line, ...);

/* ---- names, memory, ports ------------------------------------------------ */

/* A loopback TCP port nobody listened on a moment ago (0 on error). */
unsigned xt_free_port(void);

/* A name unique to this process and call: "<prefix>-<pid>-<n>". */
const char *xt_name(const char *prefix);

/* Page-aligned zeroed memory freed after the test (late cleanup); with
 * XT_ALLOC=xfer in the environment it comes from xfer_mem_alloc. */
void *xt_alloc(size_t len);

/* Deterministic pattern of (seed, absolute index): any sub-range can be
 * checked alone.  xt_check returns the first bad offset or -1. */
void xt_fill(void *buf, size_t len, uint64_t seed);
long xt_check(const void *buf, size_t len, uint64_t seed);
/* Same pattern, as if the buffer started at index `base` of the stream. */
void xt_fill_at(void *buf, size_t len, uint64_t seed, uint64_t base);
long xt_check_at(const void *buf, size_t len, uint64_t seed, uint64_t base);
/* A fresh seed (time, pid and a counter) so every test moves new data. */
uint64_t xt_seed(void);
/* Pseudo-random numbers from a caller-held state. */
uint64_t xt_rand(uint64_t *state);

/* ---- agents ------------------------------------------------------------- */

/* Create an agent (destroyed after the test).  spec may be NULL: no
 * backend.  Fatal on failure. */
xfer_agent_t *xt_agent(const char *name, const char *spec,
                       int progress_thread);
/* Destroy now (and not again at cleanup). */
void xt_agent_destroy(xfer_agent_t *agent);

/* Register one region; fatal on failure. */
xfer_mem_t *xt_register(xfer_agent_t *agent, void *addr, size_t len);

/* The same with access rights (XFER_ACCESS_*); fatal on failure. */
xfer_mem_t *xt_register_access(xfer_agent_t *agent, void *addr, size_t len,
                               unsigned access);

/* Blob of `from` (what = XFER_MD_*) loaded into `to`; fatal on failure. */
void xt_md_exchange(xfer_agent_t *from, unsigned what, xfer_agent_t *to);
/* The whole blob as a NUL-terminated string freed after the test. */
char *xt_md_get(xfer_agent_t *agent, unsigned what, xfer_mem_t *const *mems,
                size_t nmems, size_t *len);

/* A one-descriptor DRAM list over a caller-owned desc. */
xfer_dlist_t xt_dlist(xfer_desc_t *descs, size_t count);

/* Release after the test (early cleanup, before the agents). */
void xt_req_defer(xfer_req_t *req);
/* Release now a request given to xt_req_defer. */
xfer_status_t xt_req_release(xfer_req_t *req);

/* Wait until the request is no longer XFER_IN_PROG, driving progress of
 * the given extra agents too (those without a progress thread); returns
 * the final status or XFER_ERR_TIMEOUT after timeout_ms. */
xfer_status_t xt_wait_req(xfer_req_t *req, unsigned timeout_ms);
xfer_status_t xt_wait_req_pump(xfer_req_t *req, xfer_agent_t *const *pump,
                               size_t npump, unsigned timeout_ms);
/* Post and wait; returns the final status. */
xfer_status_t xt_post_wait(xfer_req_t *req, const void *notif, size_t len,
                           unsigned timeout_ms);
/* A request of one descriptor each side (local, len to raddr of agent
 * tgt), released after the test, posted with notif (a string, or NULL):
 * *st is the post's answer, or creation's when it fails (then NULL). */
xfer_req_t *xt_post_to(xfer_agent_t *ini, xfer_op_t op, void *local,
                       size_t len, uint64_t raddr, const char *tgt,
                       const char *notif, xfer_status_t *st);

/* ---- notifications ------------------------------------------------------ */

typedef struct xt_notif {
    char *from;
    void *msg;
    size_t len;
} xt_notif_t;

typedef struct xt_notifs {
    xt_notif_t *items;
    size_t count, cap;
    /* Optional hook run inside the drain callback, on each message. */
    void (*on_msg)(struct xt_notifs *n, const xt_notif_t *m);
    void *arg;
} xt_notifs_t;

/* Empty collector freed after the test. */
xt_notifs_t *xt_notifs_new(void);
/* Drain into n until it holds at least want messages or timeout_ms pass
 * (driving agent's progress too when pump is set); returns n->count. */
size_t xt_drain_until(xfer_agent_t *agent, xt_notifs_t *n, size_t want,
                      unsigned timeout_ms, bool pump);

/* ---- child processes that speak in lines -------------------------------- */

/* A child process running a program (usually this test again, with a
 * role argument) whose stdin and stdout are pipes: one line a message. */
typedef struct xt_proc {
    int pid;
    FILE *in, *out;
    char name[64];
    bool gone;      /* killed on purpose: its exit status is not checked */
} xt_proc_t;

/* Fork and exec argv (argv[0]: the program); the child dies with the
 * test process.  Fatal on failure.  End it with xt_proc_end. */
void xt_proc_start(xt_proc_t *p, const char *name, char *const argv[]);
/* The child's next line, newline stripped; fatal when it says nothing
 * within timeout_ms or has ended. */
char *xt_proc_line(xt_proc_t *p, char *line, size_t size,
                   unsigned timeout_ms);
/* Send one command line (printf-style, newline added) and return the
 * child's answer, as xt_proc_line. */
char *xt_proc_ask(xt_proc_t *p, char *line, size_t size, unsigned timeout_ms,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* In a child: one answer line on stdout, flushed (the other side of
 * xt_proc_line). */
void xt_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Send "quit", close the pipes, reap it (SIGKILL after timeout_ms) and
 * check it exited with status 0 unless it is gone.  Idempotent. */
void xt_proc_end(xt_proc_t *p, unsigned timeout_ms);
/* SIGKILL it; xt_proc_end then only reaps it. */
void xt_proc_kill(xt_proc_t *p);

/* ---- metadata blobs ----------------------------------------------------- */

/* Parse a blob (fatal if it is not a JSON object); decref'd after the
 * test. */
json_t *xt_blob_parse(const char *blob, size_t len);
/* Compact text of a JSON value, freed after the test. */
char *xt_blob_dump(const json_t *root, size_t *len);
/* A 64-bit field stored as "0x..." text or a JSON integer. */
bool xt_json_u64(const json_t *v, uint64_t *out);
/* Store val the way `old` stored it (hex text or integer). */
json_t *xt_json_u64_like(const json_t *old, uint64_t val);
/* The blob signed as an agent holding the key in keyfile signs its own
 * (docs/api.md, "Authentication"), in place of any signature it carried:
 * what a holder of that key can make.  keyfile NULL: the file
 * XFER_AUTH_KEY_FILE names, and without one the blob unsigned.
 * NUL-terminated, freed after the test; *out_len its length. */
char *xt_blob_sign(const char *blob, size_t len, const char *keyfile,
                   size_t *out_len);
/* regions[i] of a parsed blob, fatal if absent. */
json_t *xt_blob_region(json_t *root, size_t i);
/* Flip one bit of the last byte of a region's packed remote key for
 * `plugin` (its "pub" entry, base64); fatal if it has none. */
void xt_blob_flip_pub(json_t *region, const char *plugin);

/* ---- what the library logs ------------------------------------------------ */

/* Send fd 2 (where the library logs) to a file until xt_stderr_end,
 * which copies it back to the real stderr and returns it as text
 * (freed after the test).  One capture at a time. */
void xt_stderr_begin(void);
char *xt_stderr_end(void);

#endif /* XT_XT_H */
