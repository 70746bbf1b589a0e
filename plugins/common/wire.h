/* wire.h - the stream protocol spoken by the software backends (tcp, uds):
 * one fixed 40-byte little-endian header per frame, documented in docs/wire-tcp.md. */
#ifndef XFER_PLUGINS_WIRE_H
#define XFER_PLUGINS_WIRE_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

/* "XFERSTRM" read as a little-endian u64: HELLO and HELLO_ACK carry it so
 * that a stray connection (a port scanner, another protocol) is refused
 * on its first 40 bytes. */
#define XFER_WIRE_MAGIC UINT64_C(0x4d52545352454658)
/* 3: the handshake may authenticate both sides (AUTH, AUTH_ACK). */
#define XFER_WIRE_VERSION 3u

/* Every frame starts with this header, so a receiver always knows how
 * many bytes to wait for before it can decide anything. */
#define XFER_WIRE_HDR_SIZE 40u

enum xfer_wire_type {
    XFER_WIRE_HELLO = 1,     /* initiator -> target, first frame */
    XFER_WIRE_HELLO_ACK = 2, /* target -> initiator, answer to HELLO */
    XFER_WIRE_WRITE = 3,     /* initiator -> target, header + payload */
    XFER_WIRE_ACK = 4,       /* target -> initiator, ends a WRITE request */
    XFER_WIRE_READ_REQ = 5,  /* initiator -> target, no payload */
    XFER_WIRE_READ_RESP = 6, /* target -> initiator, header + payload */
    XFER_WIRE_NOTIF = 7,     /* initiator -> target, header + message */
    XFER_WIRE_SHM_FD = 8,    /* target -> initiator, AF_UNIX only: one
                                descriptor rides along (SCM_RIGHTS) */
    XFER_WIRE_MSG = 9,       /* either way, control channels only (chan.h):
                                an opaque message; never on tcp or uds */
    XFER_WIRE_WRITEV = 10,   /* initiator -> target: a run of WRITE
                                descriptors, table + payloads (version 2) */
    XFER_WIRE_AUTH = 11,     /* initiator -> target: its proof of the
                                shared secret (version 3) */
    XFER_WIRE_AUTH_ACK = 12, /* target -> initiator: the proof checked,
                                the connection is up (version 3) */
};

/* With a shared secret the handshake is a challenge-response both ways:
 * HELLO carries the initiator's nonce, HELLO_ACK the target's nonce and
 * MAC, AUTH the initiator's MAC (docs/wire-tcp.md). */
#define XFER_WIRE_NONCE 32u
#define XFER_WIRE_MAC 32u

/* A WRITEV frame carries at most this many descriptors: its table
 * (24 bytes each) then fits any receive buffer, and a run costs one
 * header and one registration check instead of one per descriptor. */
#define XFER_WIRE_BATCH_MAX 128u
#define XFER_WIRE_ENTRY_SIZE 24u

/* One WRITEV table entry, little-endian on the wire. */
typedef struct xfer_wire_entry {
    uint64_t key;
    uint64_t addr;
    uint64_t len;
} xfer_wire_entry_t;

_Static_assert(sizeof(xfer_wire_entry_t) == XFER_WIRE_ENTRY_SIZE,
               "wire table entry must have no padding");

/* flags */
#define XFER_WIRE_F_LAST 0x01u /* last data frame of a request */
#define XFER_WIRE_F_AUTH 0x02u /* HELLO, HELLO_ACK: the sender holds a
                                  shared secret and authenticates */

/* Field meanings per type (unused fields are sent as 0 and ignored):
 *
 *   type       seg            tag        arg0          arg1         len
 *   HELLO      version        magic      own epoch     expected     name [+ nonce]
 *                                                      target epoch (payload)
 *   HELLO_ACK  version        magic      own epoch     status       0 or nonce + MAC
 *   AUTH       0              0          0             status       MAC (32) or 0
 *   AUTH_ACK   0              0          0             status       0
 *   WRITE      descriptor     request id key           remote addr  payload
 *   ACK        first failed   request id status        frames seen  0
 *              descriptor
 *   READ_REQ   descriptor     request id key           remote addr  bytes wanted
 *   READ_RESP  descriptor     request id status        0            payload
 *   NOTIF      0              0          0             0            message
 *   SHM_FD     0              memfd id   memfd size    0            0
 *   MSG        0              0          0             0            message
 *   WRITEV     first          request id entries (n)   payload      table +
 *              descriptor                              bytes        payload
 *
 * A WRITEV payload is n table entries (key, remote addr, len), then the
 * n descriptors' bytes back to back; len = 24 n + arg1, and arg1 is the
 * sum of the entries' lengths.
 *
 * status is an xfer_status_t stored as a two's-complement int64. */
typedef struct xfer_wire_hdr {
    uint8_t type;
    uint8_t flags;
    uint16_t rsvd;
    uint32_t seg;
    uint64_t tag;
    uint64_t arg0;
    uint64_t arg1;
    uint64_t len;
} xfer_wire_hdr_t;

_Static_assert(sizeof(xfer_wire_hdr_t) == XFER_WIRE_HDR_SIZE,
               "wire header must have no padding");

/* Encode/decode in place: the struct in memory is already the wire image
 * once its multi-byte fields are little-endian.  On little-endian hosts
 * both are plain copies. */
static inline void xfer_wire_encode(xfer_wire_hdr_t *out,
                                    const xfer_wire_hdr_t *in)
{
    out->type = in->type;
    out->flags = in->flags;
    out->rsvd = htole16(in->rsvd);
    out->seg = htole32(in->seg);
    out->tag = htole64(in->tag);
    out->arg0 = htole64(in->arg0);
    out->arg1 = htole64(in->arg1);
    out->len = htole64(in->len);
}

static inline void xfer_wire_decode(xfer_wire_hdr_t *out, const void *buf)
{
    xfer_wire_hdr_t h;

    memcpy(&h, buf, sizeof h);
    out->type = h.type;
    out->flags = h.flags;
    out->rsvd = le16toh(h.rsvd);
    out->seg = le32toh(h.seg);
    out->tag = le64toh(h.tag);
    out->arg0 = le64toh(h.arg0);
    out->arg1 = le64toh(h.arg1);
    out->len = le64toh(h.len);
}

#endif /* XFER_PLUGINS_WIRE_H */
