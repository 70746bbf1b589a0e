/* auth.h - the agent's shared secret: loaded from a private key file, held
 * locked in memory, used only through HMAC-SHA-256 (OpenSSL libcrypto). */
#ifndef XFER_CORE_AUTH_H
#define XFER_CORE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>
#include <xfer/xfer.h>

/* Key files hold at least this many bytes (after a trailing newline is
 * trimmed) and at most XFER__AUTH_KEY_MAX. */
#define XFER__AUTH_KEY_MIN 16
#define XFER__AUTH_KEY_MAX 4096
/* Bytes of a challenge (random nonce). */
#define XFER__AUTH_NONCE_LEN 32

typedef struct xfer__auth xfer__auth_t;

/* One piece of a message to authenticate; a MAC covers the pieces in
 * order, as if they were one buffer. */
typedef struct xfer__auth_part {
    const void *p;
    size_t len;
} xfer__auth_part_t;

/* Load the secret from path; path NULL: XFER_AUTH_KEY_FILE, and neither
 * (or an empty variable): no secret, *out = NULL and XFER_OK.  A file
 * that is missing, not a regular file, not the caller's (or root's),
 * open to group or others, of a bad size or empty is XFER_ERR_INVALID
 * with a sentence naming it and what to do. */
xfer_status_t xfer__auth_load(const char *path, xfer__auth_t **out);
/* Wipe and free.  NULL is accepted. */
void xfer__auth_free(xfer__auth_t *k);

/* HMAC-SHA-256 over the pieces. */
xfer_status_t xfer__auth_mac(const xfer__auth_t *k,
                             const xfer__auth_part_t *parts, size_t nparts,
                             uint8_t mac[XFER_AUTH_MAC_LEN]);
/* XFER_OK when mac is the pieces' code, compared in constant time;
 * XFER_ERR_AUTH otherwise (k NULL included). */
xfer_status_t xfer__auth_check(const xfer__auth_t *k,
                               const xfer__auth_part_t *parts, size_t nparts,
                               const uint8_t mac[XFER_AUTH_MAC_LEN]);

/* The message a challenge-response MAC covers (docs/wire-listener.md):
 * label with its NUL, nonce a, nonce b, then two (name, epoch) pairs,
 * each name with a one-byte length before it and each epoch as a
 * little-endian u64.  out holds at least XFER__AUTH_TRANSCRIPT_MAX bytes;
 * returns the bytes used. */
#define XFER__AUTH_TRANSCRIPT_MAX \
    (32 + 2 * XFER__AUTH_NONCE_LEN + 2 * (1 + XFER_NAME_MAX + 8))
size_t xfer__auth_transcript(uint8_t *out, const char *label,
                             const uint8_t *nonce_a, const uint8_t *nonce_b,
                             const char *name1, uint64_t epoch1,
                             const char *name2, uint64_t epoch2);

#endif /* XFER_CORE_AUTH_H */
