/* fuzz-stream-target.c - libFuzzer harness for the stream engine's target side:
 * an input is what one peer sends to a real agent's tcp (or, FZ_UDS, uds) backend. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xfer/xfer.h>

#include "tests/fuzz/fuzz-stream.h"

/* Input: one flags byte, then the peer's bytes, in which 8-byte tokens
 * (fz_tokens_apply: 7 characters and a free byte k) stand for values
 * known only at run time: for each region XX of RW, RO, WO, DR,
 * "@KEY_XX" its key, "@ADR_XX" its start + 16 k, "@END_XX" its end -
 * 16 k; "@EPOCH@" the agent's epoch.
 *   bit 0: the harness sends a good HELLO first (name "fz-peer"); with
 *          FZ_AUTH it goes through the whole authenticated handshake
 *          (HELLO, HELLO_ACK, AUTH, AUTH_ACK), computing the MACs itself,
 *          and without the bit the input is what a peer without the
 *          secret can send;
 *   bit 1: after every byte went out, region DR is deregistered (with
 *          the input's READ answers maybe still queued) and registered
 *          again, before the end of the stream;
 *   bit 2: the harness's socket has a small receive buffer, so that the
 *          target's answers queue up on its side. */
#define F_HELLO 0x01u
#define F_DEREG 0x02u
#define F_SLOW 0x04u

#define REGION 4096u

enum { R_RW, R_RO, R_WO, R_DR, NREGIONS };
static const struct {
    const char *name;            /* as in the tokens */
    unsigned access;
} regions[NREGIONS] = {
    [R_RW] = {"RW", XFER_ACCESS_RW},
    [R_RO] = {"RO", XFER_ACCESS_READ},
    [R_WO] = {"WO", XFER_ACCESS_WRITE},
    [R_DR] = {"DR", XFER_ACCESS_RW},
};

/* Built three times: for tcp; with FZ_UDS for uds, whose target also
 * sends SHM_FD frames (with descriptors, which a plain recv drops) to a
 * peer of its own uid; with FZ_AUTH for tcp with a shared secret. */
#ifdef FZ_UDS
#define BACKEND "uds"
#else
/* A small send buffer: with a slow reader (F_SLOW) the answers queue in
 * the engine, where deregistration must deal with them. */
#define BACKEND "tcp:sndbuf=4096"
#endif

static xfer_agent_t *agent;
#ifndef FZ_UDS
static uint16_t port;
#endif
#ifdef FZ_AUTH
static const uint8_t *auth_key;
static size_t auth_klen;
#endif
static fz_guarded_t mem[NREGIONS];
static xfer_mem_t *reg[NREGIONS];
static uint64_t key[NREGIONS];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void region_register(unsigned i)
{
    xfer_desc_t d = {.addr = (uintptr_t)mem[i].base, .len = REGION};
    xfer_dlist_t l = {.type = XFER_MEM_DRAM, .count = 1, .descs = &d};
    xfer_mem_opts_t o;

    xfer_mem_opts_init(&o);
    o.access = regions[i].access;
    fz_ok(xfer_mem_register(agent, &l, &o, &reg[i]), "register");
    key[i] = fzw_region_key(agent, reg[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xfer_agent_opts_t o;

    fz_setup();
    xfer_agent_opts_init(&o);
    o.name = "fz-target";
    /* Single-threaded: the harness drives progress, so an input is
     * processed the same way every time. */
    o.progress_thread = 0;
#ifdef FZ_AUTH
    o.auth_key_file = fz_auth_key(&auth_key, &auth_klen);
#endif
    fz_ok(xfer_agent_create(&o, &agent), "agent");
    fz_ok(xfer_backend_add(agent, BACKEND, NULL), BACKEND " backend");
    for (unsigned i = 0; i < NREGIONS; i++) {
        fz_guarded_init(&mem[i], REGION);
        region_register(i);
    }
#ifndef FZ_UDS
    port = fzw_tcp_port(agent);
#endif
    return 0;
}

static void count_notif(void *arg, const char *from, const void *msg,
                        size_t len)
{
    if (from == NULL || from[0] == '\0')
        fz_die("a notification was delivered without its sender's name");
    if (len > XFER_NOTIF_MAX)
        fz_die("a notification of %zu bytes was delivered", len);
    ++*(size_t *)arg;
}

/* The answers a target sends (docs/wire-tcp.md): HELLO_ACK, ACK and
 * READ_RESP only (and SHM_FD from uds), reserved bits clear, no payload
 * but a READ's data. */
static void check_answers(const fz_buf_t *rx)
{
    size_t off = 0;

    fz_guard_leak_check(rx->p, rx->len, "target");
    while (rx->len - off >= FZW_HDR) {
        fzw_hdr_t h;

        fzw_decode(&h, rx->p + off);
        if (h.rsvd != 0)
            fz_die("target answered with reserved bits set");
        switch (h.type) {
#ifdef FZ_UDS
        case FZW_SHM_FD:
#endif
#ifdef FZ_AUTH
        case FZW_AUTH_ACK:
            break;
        case FZW_HELLO_ACK:
            /* An OK challenge carries the target's nonce and MAC. */
            if (h.len != 0 && !(h.len == 64 && (h.flags & FZW_F_AUTH) &&
                                h.arg1 == 0))
                fz_die("target sent a HELLO_ACK with %llu payload bytes",
                       (unsigned long long)h.len);
            break;
#else
        case FZW_HELLO_ACK:
#endif
        case FZW_ACK:
            if (h.len != 0)
                fz_die("target sent a type %u frame with %llu payload bytes",
                       h.type, (unsigned long long)h.len);
            break;
        case FZW_READ_RESP:
            if (h.arg0 != 0 && h.len != 0)
                fz_die("target sent a failed READ_RESP with %llu bytes",
                       (unsigned long long)h.len);
            if (h.len > REGION)
                fz_die("target sent a READ_RESP of %llu bytes, more than "
                       "any region holds", (unsigned long long)h.len);
            break;
        default:
            fz_die("target sent a frame of type %u", h.type);
        }
        if (h.len > rx->len - off - FZW_HDR)
            break; /* cut by the close of a refused connection */
        off += FZW_HDR + (size_t)h.len;
    }
}

#ifdef FZ_AUTH
/* Step until the target sent at least n bytes in all. */
static void wait_rx(fz_io_t *io, size_t n, const char *what)
{
    uint64_t deadline = fz_now_ms() + FZ_HANG_MS;

    while (io->rx.len < n) {
        if (io->eof || fz_now_ms() > deadline)
            fz_die("target: no %s to a good handshake (%zu bytes came)",
                   what, io->rx.len);
        fz_io_step(io, agent, 10);
    }
}
#endif

/* A good handshake as "fz-peer", epoch 1: HELLO, and with a secret the
 * challenge-response of docs/wire-tcp.md, MACs computed here. */
static void handshake(fz_io_t *io, fz_buf_t *tx)
{
    static const char name[] = "fz-peer";
    uint64_t epoch = xfer_agent_epoch(agent);
    uint8_t h[FZW_HDR];
    fzw_hdr_t hello = {.type = FZW_HELLO, .seg = FZW_VERSION,
                       .tag = FZW_MAGIC, .arg0 = 1, .arg1 = epoch,
                       .len = sizeof(name) - 1};

#ifdef FZ_AUTH
    uint8_t nonce_i[32], mac[32];
    const uint8_t *nonce_t;
    fzw_hdr_t ack, auth = {.type = FZW_AUTH, .len = 32};

    memset(nonce_i, 0x4e, sizeof(nonce_i));
    hello.flags = FZW_F_AUTH;
    hello.len += sizeof(nonce_i);
    fzw_encode(h, &hello);
    fz_buf_put(tx, h, sizeof(h));
    fz_buf_put(tx, name, sizeof(name) - 1);
    fz_buf_put(tx, nonce_i, sizeof(nonce_i));
    io->tx = tx->p;
    io->tx_len = tx->len;
    wait_rx(io, FZW_HDR + 64, "HELLO_ACK");
    fzw_decode(&ack, io->rx.p);
    if (ack.type != FZW_HELLO_ACK || !(ack.flags & FZW_F_AUTH) ||
        ack.arg1 != 0 || ack.len != 64)
        fz_die("target: a good authenticated HELLO got no challenge");
    nonce_t = io->rx.p + FZW_HDR;
    fz_auth_mac(auth_key, auth_klen, "xfer-stream-ack", nonce_i, nonce_t,
                "fz-target", epoch, name, 1, mac);
    if (memcmp(mac, nonce_t + 32, sizeof(mac)) != 0)
        fz_die("target: its MAC does not prove the shared secret");
    fz_auth_mac(auth_key, auth_klen, "xfer-stream-auth", nonce_t, nonce_i,
                name, 1, "fz-target", epoch, mac);
    fzw_encode(h, &auth);
    fz_buf_put(tx, h, sizeof(h));
    fz_buf_put(tx, mac, sizeof(mac));
    io->tx = tx->p;
    io->tx_len = tx->len;
    wait_rx(io, 2 * FZW_HDR + 64, "AUTH_ACK");
    fzw_decode(&ack, io->rx.p + FZW_HDR + 64);
    if (ack.type != FZW_AUTH_ACK || ack.arg1 != 0)
        fz_die("target: a good AUTH was not acknowledged");
#else
    (void)io;
    fzw_encode(h, &hello);
    fz_buf_put(tx, h, sizeof(h));
    fz_buf_put(tx, name, sizeof(name) - 1);
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_token_t tokens[3 * NREGIONS + 1];
    size_t ntok = 0, nnotif = 0;
    fz_buf_t tx = {0}, body = {0};
    fz_io_t io = {.fd = -1};
    uint8_t flags;

    if (size < 1)
        return 0;
    flags = data[0];
    for (unsigned i = 0; i < NREGIONS; i++) {
        uint64_t base = (uintptr_t)mem[i].base;

        memset(mem[i].base, 0x5a, REGION);
        snprintf(tokens[ntok].text, 8, "@KEY_%s", regions[i].name);
        tokens[ntok].value = key[i];
        tokens[ntok++].step = 0;
        snprintf(tokens[ntok].text, 8, "@ADR_%s", regions[i].name);
        tokens[ntok].value = base;
        tokens[ntok++].step = 16;
        snprintf(tokens[ntok].text, 8, "@END_%s", regions[i].name);
        tokens[ntok].value = base + REGION;
        tokens[ntok++].step = -16;
    }
    memcpy(tokens[ntok].text, "@EPOCH@", 8);
    tokens[ntok].value = xfer_agent_epoch(agent);
    tokens[ntok++].step = 0;

    body.p = malloc(size);
    if (body.p == NULL)
        fz_die("out of memory");
    memcpy(body.p, data + 1, size - 1);
    body.len = size - 1;
    fz_tokens_apply(body.p, body.len, tokens, ntok);

#ifdef FZ_UDS
    io.fd = fzw_uds_connect(agent, flags & F_SLOW ? 4096 : 0);
#else
    io.fd = fz_connect(port, flags & F_SLOW ? 4096 : 0);
#endif
    if (flags & F_HELLO)
        handshake(&io, &tx);
    /* The peer's bytes follow the handshake (which, with a secret, had to
     * be answered before they could go). */
    fz_buf_put(&tx, body.p, body.len);
    io.tx = tx.p;
    io.tx_len = tx.len;
    if (flags & F_DEREG) {
        uint64_t deadline = fz_now_ms() + FZ_HANG_MS;

        while (io.tx_off < io.tx_len && !io.eof) {
            fz_io_step(&io, agent, 10);
            if (fz_now_ms() > deadline)
                fz_die("target: took nothing for %u ms", FZ_HANG_MS);
        }
        fz_io_step(&io, agent, 0);
        fz_ok(xfer_mem_deregister(agent, reg[R_DR]), "deregister");
        region_register(R_DR);
    }
    fz_io_finish(&io, agent, "target");
    /* One more pass: the target forgets the closed connection. */
    fz_io_step(NULL, agent, 0);
    check_answers(&io.rx);
    fz_io_close(&io);
    fz_buf_free(&tx);
    free(body.p);

    fz_ok(xfer_notif_drain(agent, count_notif, &nnotif, NULL), "drain");
    for (unsigned i = 0; i < NREGIONS; i++)
        fz_guarded_check(&mem[i], regions[i].name);
    return 0;
}
