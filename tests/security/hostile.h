/* hostile.h - what the security tests share: a raw stream client that speaks
 * docs/wire-tcp.md by hand, a target agent in a child process, a well-behaved peer. */
#ifndef XT_HOSTILE_H
#define XT_HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

#include "plugins/common/wire.h"
#include "tests/common/xt.h"

#define HX_WAIT_MS 10000

/* ---- raw client ------------------------------------------------------ */

/* A blocking TCP connection to 127.0.0.1:port from source address src
 * (NULL: any; "127.0.0.2" gives another loopback source), or to a uds
 * socket path (a leading '@' names an abstract socket); -1 on error
 * (errno set).  SO_LINGER is not touched: close sends a FIN. */
int hx_connect_tcp(unsigned port, const char *src);
/* The same without waiting for the connection to be set up (a full
 * backlog would hold a blocking connect for seconds): the fd is
 * non-blocking, hx_send waits for it. */
int hx_connect_tcp_async(unsigned port, const char *src);
int hx_connect_uds(const char *path);

/* Encode a header into out (40 bytes). */
void hx_hdr(void *out, uint8_t type, uint8_t flags, uint32_t seg,
            uint64_t tag, uint64_t arg0, uint64_t arg1, uint64_t len);
/* Send everything (0), or -1 when the connection broke or timeout_ms
 * passed without the socket taking a byte (0: wait forever). */
int hx_send(int fd, const void *buf, size_t len, unsigned timeout_ms);
/* A frame: header fields as given, then pay_len payload bytes (NULL:
 * a 0x5a... pattern).  len is what the header claims, whatever is sent. */
int hx_frame(int fd, uint8_t type, uint8_t flags, uint32_t seg, uint64_t tag,
             uint64_t arg0, uint64_t arg1, uint64_t len, const void *pay,
             size_t pay_len);
/* HELLO with name (its bytes as given, name_len of them), our epoch 7
 * and the target epoch named. */
int hx_hello(int fd, const char *name, size_t name_len, uint64_t epoch);
/* Read one header within timeout_ms: 0, or -1 on EOF, error or time.
 * SHM_FD frames (uds) are skipped: their descriptors are dropped with
 * the bytes, since a raw client reads without taking them. */
int hx_recv_hdr(int fd, xfer_wire_hdr_t *h, unsigned timeout_ms);
/* Read and drop n bytes: 0, or -1. */
int hx_recv_skip(int fd, uint64_t n, unsigned timeout_ms);
/* HELLO, then a HELLO_ACK with status OK: fd, or -1. */
int hx_handshake(int fd, const char *name, uint64_t epoch);
/* 1 when the other side closed the connection (EOF or reset) within
 * timeout_ms, whatever it sent before; 0 otherwise. */
int hx_closed(int fd, unsigned timeout_ms);

/* ---- a target agent in a child process ------------------------------- */

/* The child registers reg bytes (default 1 MiB) with guard pages of
 * canary bytes on both sides, and answers lines on stdin:
 *   canary  -> "canary ok" | "canary bad <offset>"
 *   drain   -> "drained <n> seq <s> bad <b>": n notifications taken now;
 *              s taken so far whose text starts "seq <k>", b of them
 *              whose k was not one more than their sender's last
 *              (order, exactly once; a sender's first k must be 0)
 *   dereg   -> "dereg <ms> ok" once the region is deregistered (the
 *              first one: the second stays)
 *   quit    -> exits 0 */
typedef struct hx_target {
    xt_proc_t proc;
    char name[64];
    uint64_t epoch, key, addr, len;
    uint64_t key2, addr2, len2; /* the second region (reg2=), or 0 */
    unsigned port;              /* port= of its spec, if any */
    char *md;     /* its metadata blob (XFER_MD_ALL), freed after the test */
    size_t md_len;
} hx_target_t;

/* Start it: spec is the backend spec ("tcp:port=...,max_conns=..."),
 * opts space-separated words: nqbytes=N nqcount=N (agent options),
 * nofile=N (RLIMIT_NOFILE), log=PATH (stderr to PATH, at most 64 MiB),
 * reg=N, reg2=N (a second region of N bytes, without guards).  Stopped
 * after the test. */
void hx_target_start(hx_target_t *t, const char *spec, const char *opts);
/* Send a command line, return the answer line (static buffer). */
const char *hx_target_ask(hx_target_t *t, const char *cmd);
/* The canary pages are intact (an XT check). */
void hx_target_canary(hx_target_t *t);
/* The child's resident memory (kB) and CPU time used (ms). */
long hx_rss_kb(int pid);
long hx_cpu_ms(int pid);

/* Call first thing in main(): runs the child role when asked to. */
int hx_main(int argc, char **argv);

/* ---- the well-behaved peer -------------------------------------------- */

typedef struct hx_good {
    xfer_agent_t *agent;
    hx_target_t *t;
    uint8_t *src, *dst;  /* registered, t->len bytes each */
    uint64_t raddr;      /* the target region it uses: t->addr, or set
                            t->addr2 (as long, or longer) */
} hx_good_t;

/* An agent named name with backend spec that loaded t's metadata. */
void hx_good_make(hx_good_t *g, const char *name, const char *spec,
                  hx_target_t *t);
/* WRITE a fresh pattern into [off, off+len) of the target's region, READ
 * it back, compare byte for byte: whether all of that held. */
bool hx_good_roundtrip(hx_good_t *g, size_t off, size_t len);

#endif /* XT_HOSTILE_H */
