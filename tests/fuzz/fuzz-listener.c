/* fuzz-listener.c - libFuzzer harness for the side-channel listener: an input
 * is what one client sends, over a real TCP connection into the real loop.
 * Built again with FZ_AUTH: the agent holds a secret, and byte 0 of an
 * input says whether the harness authenticates before the rest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xfer/xfer.h>

#include "tests/fuzz/fuzz-common.h"

/* docs/wire-listener.md */
#define LS_MAGIC 0x58464d44u
#define LS_HDR 12u
#define LS_OK 0x81u
#define LS_MD 0x82u
#define LS_ERR 0x83u
#define LS_CHALLENGE 0x84u
#define LS_HELLO 4u
#define LS_AUTH 5u
#define LS_ERR_TEXT_MAX 512u

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_setup();
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Every reply is a well-formed frame of a reply type (the doc's table). */
static void check_replies(const fz_buf_t *rx, size_t sent)
{
    size_t off = 0;

    /* Served, refused or cut short: every request gets its answer (the
     * client only shut down its sending side). */
    if (sent > 0 && rx->len == 0)
        fz_die("listener: %zu bytes sent, no reply came back", sent);

    while (off < rx->len) {
        const uint8_t *h = rx->p + off;
        uint32_t len, type;

        if (rx->len - off < LS_HDR)
            fz_die("listener: a reply ends inside its header (%zu bytes)",
                   rx->len - off);
        type = (uint32_t)h[6] << 8 | h[7];
        len = be32(h + 8);
        if (be32(h) != LS_MAGIC || h[4] != 0 || h[5] != 1)
            fz_die("listener: reply at byte %zu has a bad magic or version",
                   off);
        if (type != LS_OK && type != LS_MD && type != LS_ERR &&
            type != LS_CHALLENGE)
            fz_die("listener: reply of type 0x%x", type);
        if (rx->len - off - LS_HDR < len)
            fz_die("listener: reply of %u bytes cut short", len);
        if (type == LS_OK && len != 0)
            fz_die("listener: OK reply with %u payload bytes", len);
        if (type == LS_ERR) {
            int32_t code;

            if (len < 5 || len > 4 + LS_ERR_TEXT_MAX)
                fz_die("listener: ERR reply of %u bytes (a status and a "
                       "sentence of at most %u)", len, LS_ERR_TEXT_MAX);
            code = (int32_t)be32(h + LS_HDR);
            if (code >= 0 || code < XFER_ERR_AUTH - 16)
                fz_die("listener: ERR reply with status %d", (int)code);
        }
        off += LS_HDR + len;
    }
}

#ifdef FZ_AUTH
static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void frame(fz_buf_t *tx, unsigned type, const void *p, size_t len)
{
    uint8_t h[LS_HDR] = {0x58, 0x46, 0x4d, 0x44, 0, 1, (uint8_t)(type >> 8),
                         (uint8_t)type, (uint8_t)(len >> 24),
                         (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                         (uint8_t)len};

    fz_buf_put(tx, h, sizeof(h));
    fz_buf_put(tx, p, len);
}

/* Until the listener sent n bytes in all. */
static void wait_rx(fz_io_t *io, size_t n, const char *what)
{
    uint64_t deadline = fz_now_ms() + FZ_HANG_MS;

    while (io->rx.len < n) {
        if (io->eof || fz_now_ms() > deadline)
            fz_die("listener: no %s to a good handshake (%zu bytes came)",
                   what, io->rx.len);
        fz_io_step(io, NULL, 10);
    }
}

/* docs/wire-listener.md, "Authentication", as client "fz-client" epoch 7,
 * MACs computed here. */
static void handshake(fz_io_t *io, fz_buf_t *tx, uint64_t epoch_s)
{
    static const char name[] = "fz-client";
    const uint8_t *key, *ch;
    uint8_t hello[32 + 8 + sizeof(name) - 1], mac[32];
    size_t klen, n;

    fz_auth_key(&key, &klen);
    memset(hello, 0x4c, 32);
    put_be64(hello + 32, 7);
    memcpy(hello + 40, name, sizeof(name) - 1);
    frame(tx, LS_HELLO, hello, sizeof(hello));
    io->tx = tx->p;
    io->tx_len = tx->len;
    wait_rx(io, LS_HDR, "CHALLENGE");
    n = be32(io->rx.p + 8);
    wait_rx(io, LS_HDR + n, "CHALLENGE");
    ch = io->rx.p + LS_HDR;
    if ((io->rx.p[6] << 8 | io->rx.p[7]) != LS_CHALLENGE ||
        n != 64 + 8 + strlen("fz-listener") || be64(ch + 64) != epoch_s ||
        memcmp(ch + 72, "fz-listener", n - 72) != 0)
        fz_die("listener: a good HELLO got no challenge naming the agent");
    fz_auth_mac(key, klen, "xfer-listen-challenge", hello, ch, "fz-listener",
                epoch_s, name, 7, mac);
    if (memcmp(mac, ch + 32, sizeof(mac)) != 0)
        fz_die("listener: its MAC does not prove the shared secret");
    fz_auth_mac(key, klen, "xfer-listen-auth", ch, hello, name, 7,
                "fz-listener", epoch_s, mac);
    frame(tx, LS_AUTH, mac, sizeof(mac));
    io->tx = tx->p;
    io->tx_len = tx->len;
    wait_rx(io, 2 * LS_HDR + n, "OK to AUTH");
    if ((io->rx.p[LS_HDR + n + 6] << 8 | io->rx.p[LS_HDR + n + 7]) != LS_OK)
        fz_die("listener: a good AUTH was refused");
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xfer_agent_opts_t o;
    xfer_agent_t *agent;
    char addr[80];
    const char *colon;
    fz_io_t io = {.fd = -1};
    fz_buf_t tx = {0};
    const uint8_t *body = data;
    size_t len = size;

#ifdef FZ_AUTH
    /* Byte 0, bit 0: the harness authenticates first; without it the
     * input is what a client without the secret can send. */
    if (size < 1)
        return 0;
    body = data + 1;
    len = size - 1;
#endif
    /* A fresh agent per input: what one input's SENDs load must not
     * change how the next one is served. */
    xfer_agent_opts_init(&o);
    o.name = "fz-listener";
    o.progress_thread = 0;
    o.listen_addr = "127.0.0.1:0";
#ifdef FZ_AUTH
    {
        const uint8_t *key;
        size_t klen;

        o.auth_key_file = fz_auth_key(&key, &klen);
    }
#endif
    fz_ok(xfer_agent_create(&o, &agent), "agent with a listener");
    fz_ok(xfer_agent_listen_addr(agent, addr, sizeof(addr)), "listen addr");
    colon = strrchr(addr, ':');
    io.fd = fz_connect((uint16_t)atoi(colon + 1), 0);
#ifdef FZ_AUTH
    if (data[0] & 1)
        handshake(&io, &tx, xfer_agent_epoch(agent));
#endif
    fz_buf_put(&tx, body, len);
    io.tx = tx.p;
    io.tx_len = tx.len;
    /* The listener runs in its own thread; the end of the stream tells it
     * the input is over, and its close says it served all of it. */
    fz_io_finish(&io, NULL, "listener");
    check_replies(&io.rx, tx.len);
    fz_io_close(&io);
    fz_buf_free(&tx);
    xfer_agent_destroy(agent);
    return 0;
}
