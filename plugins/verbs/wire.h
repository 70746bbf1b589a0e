/* wire.h - what the verbs plugin puts on the wire outside the fabric: its
 * connection info (in the agent's metadata) and the queue-pair handshake
 * on the control channel.  Encoding and checking only: no verbs calls. */
#ifndef XFER_PLUGINS_VERBS_WIRE_H
#define XFER_PLUGINS_VERBS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <xfer/backend.h>

/* Rails (devices) an instance drives at most; conn info and handshakes
 * refuse more. */
#define VB_MAX_RAILS 4u

/* Link layers and MTUs as <infiniband/verbs.h> numbers them
 * (IBV_LINK_LAYER_INFINIBAND 1, IBV_LINK_LAYER_ETHERNET 2;
 * IBV_MTU_256 1 .. IBV_MTU_4096 5), restated so this file needs no
 * verbs header. */
#define VB_LINK_IB  1u
#define VB_LINK_ETH 2u
#define VB_MTU_MIN  1u
#define VB_MTU_MAX  5u

/* One rail's port as a peer reaches it. */
typedef struct vb_port_addr {
    uint8_t link;              /* VB_LINK_* */
    uint8_t mtu;               /* the port's active MTU, enum ibv_mtu */
    uint16_t lid;              /* IB: the port's LID (1..0xbfff) */
    uint8_t gid[16];           /* RoCE: the GID at gid_index (required);
                                  IB: the port GID (zero when unused) */
} vb_port_addr_t;

/* One queue pair, in a handshake. */
typedef struct vb_qp_addr {
    vb_port_addr_t port;
    uint32_t qpn;              /* 24 bits */
    uint32_t psn;              /* 24 bits */
} vb_qp_addr_t;

/* ---- connection info (docs/wire-verbs.md) ------------------------------
 *   0 "XVRB"  4 u8 version (1)  5 u8 rails (1..VB_MAX_RAILS)  6 u16 0
 *   8 per rail 20 bytes: u8 link, u8 mtu, u16 lid, u8 gid[16]
 *   then u32 length of the control channel's part, and that part.
 * Little-endian throughout. */
#define VB_INFO_MAGIC "XVRB"
#define VB_INFO_VERSION 1u
#define VB_PORT_WIRE 20u

/* Bytes written, or 0 when size is too small or an argument is out of
 * range (nrails 0 or > VB_MAX_RAILS, chan_len past 32 bits, chan NULL
 * with a length). */
size_t vb__info_encode(void *buf, size_t size, const vb_port_addr_t *rails,
                       unsigned nrails, const void *chan, size_t chan_len);
/* XFER_OK, or XFER_ERR_INVALID with a sentence in why (starting with what
 * is wrong: "bad magic", "version 7 not understood", "rail 1: MTU 9 out of
 * range", "truncated", "trailing bytes" ...; why may be NULL) and the
 * outputs untouched.  rails has room for VB_MAX_RAILS; chan points into
 * buf. */
xfer_status_t vb__info_decode(const void *buf, size_t len,
                              vb_port_addr_t *rails, unsigned *nrails,
                              const void **chan, size_t *chan_len,
                              char *why, size_t why_size);
/* Whether a port address could be real: link known, MTU in range, an IB
 * port with a unicast LID (1..0xbfff), a RoCE port with a non-zero GID.
 * false with a sentence. */
bool vb__port_check(const vb_port_addr_t *a, char *why, size_t why_size);

/* ---- the handshake (control channel messages) -------------------------
 * The initiator asks for a queue pair at the target for each rail (QPREQ,
 * its own QPs' addresses); the target makes and connects its QPs and
 * answers (QPREP, its QPs' addresses, or a refusal).  gen is the
 * initiator's generation of its QPs to this peer: the reply echoes it, and
 * a reply for another generation than the current one is stale and is
 * dropped, so a late answer never configures a rebuilt QP.
 *   0 u8 type  1 u8 version (1)  2 u8 rails  3 u8 status (QPREP; 0 in
 *   QPREQ)  4 u32 gen  8 per rail 28 bytes: port (20) u32 qpn u32 psn
 * Types start at 0x10, above the notification sessions' (nsess.h). */
enum { VB_HS_QPREQ = 0x10, VB_HS_QPREP = 0x11 };
#define VB_HS_VERSION 1u
#define VB_HS_MAX (8u + VB_MAX_RAILS * 28u)
/* QPREP status: the target made the QPs, or why it did not. */
enum { VB_HS_OK = 0, VB_HS_NO_ROOM = 1, VB_HS_FAILED = 2 };

typedef struct vb_hs {
    uint8_t type;
    uint8_t status;
    uint32_t gen;
    unsigned nrails;
    vb_qp_addr_t qp[VB_MAX_RAILS];
} vb_hs_t;

/* Bytes written (<= VB_HS_MAX), or 0 when it does not fit, the type is
 * unknown or nrails is out of range.  A QPREP with a status other than
 * VB_HS_OK may carry 0 rails; a QPREQ is written with status 0. */
size_t vb__hs_encode(const vb_hs_t *m, void *buf, size_t size);
/* XFER_OK, or XFER_ERR_INVALID with a sentence (m untouched); every QP
 * address checked (vb__port_check, qpn and psn within 24 bits) in a QPREQ
 * and an OK QPREP; a refusing QPREP's addresses are not looked at. */
xfer_status_t vb__hs_decode(const void *buf, size_t len, vb_hs_t *m,
                            char *why, size_t why_size);

#endif /* XFER_PLUGINS_VERBS_WIRE_H */
