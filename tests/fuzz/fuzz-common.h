/* fuzz-common.h - what the libFuzzer harnesses share: the process set-up,
 * a verdict that stops the run, guarded memory, tokens, and socket pumping. */
#ifndef XFER_FUZZ_COMMON_H
#define XFER_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

/* Environment every harness needs, once, before the first agent: its own
 * instrumented plugins (next to the binary), plugins kept mapped so leak
 * reports name their lines, nothing from the caller's environment that
 * changes an agent (etcd, authentication, XFER_TCP_* overrides), and
 * every log line formatted (XFER_LOG_LEVEL=debug unless set: log
 * formatting of a peer's bytes is part of what is fuzzed). */
void fz_setup(void);

/* A finding: say what, through the sanitizers' report channel too (it
 * survives -close_fd_mask=2), and abort so libFuzzer keeps the input. */
_Noreturn void fz_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
/* FUZZ_VERBOSE=1 in the environment: harnesses say what each input did
 * (to check that a seed reaches what it was written for). */
bool fz_verbose(void);
/* Set-up that must work; dies with xfer_last_error() otherwise. */
void fz_ok(xfer_status_t st, const char *what);
/* Every error comes with a sentence (DESIGN, semantics 6). */
void fz_sentence(xfer_status_t st, const char *what);

uint64_t fz_now_ms(void);
/* How long one input may run before it counts as a hang. */
#define FZ_HANG_MS 30000u

/* ---- guarded memory ----------------------------------------------------- */

/* len usable bytes, page aligned, between two guard pages of a random
 * pattern: a write outside the range changes a guard, a read outside it
 * sends guard bytes to the peer.  The check functions are built without
 * coverage instrumentation, so the fuzzer cannot learn the pattern from
 * their comparisons. */
typedef struct fz_guarded {
    uint8_t *base;               /* the usable bytes */
    size_t len;
} fz_guarded_t;

void fz_guarded_init(fz_guarded_t *g, size_t len);
void fz_guarded_free(fz_guarded_t *g);
/* Dies when a guard page changed. */
void fz_guarded_check(const fz_guarded_t *g, const char *what);
/* Dies when buf holds 8 aligned guard bytes (a read outside the range). */
void fz_guard_leak_check(const void *buf, size_t len, const char *what);

/* ---- tokens --------------------------------------------------------------- */

/* An 8-byte placeholder in an input that the harness replaces with a
 * value only known at run time (a key, an address, an epoch), little-
 * endian, wherever it occurs: 7 bytes of text, then a byte k that the
 * fuzzer is free to vary; the value written is value + k * step. */
typedef struct fz_token {
    char text[8];                /* 7 characters */
    uint64_t value;
    int64_t step;
} fz_token_t;

void fz_tokens_apply(uint8_t *buf, size_t len, const fz_token_t *t, size_t n);

/* ---- authentication ------------------------------------------------------- */

/* A shared secret for agents of this process: a private key file made
 * once (removed at exit), its path, and the key as the agents read it. */
const char *fz_auth_key(const uint8_t **key, size_t *len);
/* HMAC-SHA-256 under key of the challenge-response transcript of
 * docs/wire-tcp.md ("Authentication"), computed here independently of the
 * library: label and NUL, nonce a, nonce b, then (length byte, name,
 * little-endian u64 epoch) for 1 and 2. */
void fz_auth_mac(const uint8_t *key, size_t klen, const char *label,
                 const uint8_t na[32], const uint8_t nb[32], const char *n1,
                 uint64_t e1, const char *n2, uint64_t e2, uint8_t mac[32]);

/* ---- byte buffers and sockets ---------------------------------------------- */

typedef struct fz_buf {
    uint8_t *p;
    size_t len, cap;
} fz_buf_t;

void fz_buf_put(fz_buf_t *b, const void *p, size_t n);
void fz_buf_free(fz_buf_t *b);

/* A loopback TCP listening socket (non-blocking) on a free port. */
int fz_listen(uint16_t *port);
/* A non-blocking connection to 127.0.0.1:port, established; rcvbuf > 0
 * sets SO_RCVBUF first (a slow reader). */
int fz_connect(uint16_t port, int rcvbuf);

/* One side of a connection the harness speaks: what it sends, then a
 * shutdown of its sending side (so the other side sees every byte, then
 * the end), and everything it receives until the other side closes. */
typedef struct fz_io {
    int fd;
    const uint8_t *tx;
    size_t tx_len, tx_off;
    bool tx_set;                 /* tx is final: shut down after it */
    bool shut;
    fz_buf_t rx;
    bool eof;                    /* the other side closed (or reset) */
} fz_io_t;

/* One round: drive agent (may be NULL) once, then wait up to wait_ms for
 * the connection or the agent's event fd, then send and receive what
 * can be.  io->fd < 0: only the agent. */
void fz_io_step(fz_io_t *io, xfer_agent_t *agent, int wait_ms);
/* Send everything in io->tx, shut down, and read until the other side
 * closes; dies past FZ_HANG_MS. */
void fz_io_finish(fz_io_t *io, xfer_agent_t *agent, const char *what);
void fz_io_close(fz_io_t *io);

/* Little-endian and big-endian field access. */
uint64_t fz_le64(const uint8_t *p);
void fz_put_le64(uint8_t *p, uint64_t v);

#endif /* XFER_FUZZ_COMMON_H */
