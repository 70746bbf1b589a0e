/* fuzz-stream.h - what the two stream harnesses (a peer's bytes into a target,
 * and into an initiator) share: the wire of docs/wire-tcp.md, seen from outside. */
#ifndef XFER_FUZZ_STREAM_H
#define XFER_FUZZ_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include <xfer/xfer.h>

#include "tests/fuzz/fuzz-common.h"

#define FZW_HDR 40u
#define FZW_MAGIC UINT64_C(0x4d52545352454658) /* "XFERSTRM" */
#define FZW_VERSION 3u
enum {
    FZW_HELLO = 1, FZW_HELLO_ACK = 2, FZW_WRITE = 3, FZW_ACK = 4,
    FZW_READ_REQ = 5, FZW_READ_RESP = 6, FZW_NOTIF = 7, FZW_SHM_FD = 8,
    FZW_MSG = 9, FZW_WRITEV = 10, FZW_AUTH = 11, FZW_AUTH_ACK = 12,
};
#define FZW_F_AUTH 0x02u      /* HELLO, HELLO_ACK: the sender has a secret */

typedef struct fzw_hdr {
    uint8_t type, flags;
    uint16_t rsvd;
    uint32_t seg;
    uint64_t tag, arg0, arg1, len;
} fzw_hdr_t;

void fzw_decode(fzw_hdr_t *h, const uint8_t *p);
void fzw_encode(uint8_t *p, const fzw_hdr_t *h);

/* The key of a registration of one region, from the agent's metadata. */
uint64_t fzw_region_key(xfer_agent_t *agent, xfer_mem_t *mem);
/* The loopback port of the agent's tcp backend, from its metadata. */
uint16_t fzw_tcp_port(xfer_agent_t *agent);
/* A non-blocking connection to the agent's uds backend, at the socket its
 * metadata names (docs/wire-tcp.md, uds connection info); rcvbuf > 0
 * sets SO_RCVBUF first. */
int fzw_uds_connect(xfer_agent_t *agent, int rcvbuf);

#endif /* XFER_FUZZ_STREAM_H */
