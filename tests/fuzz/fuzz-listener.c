/* fuzz-listener.c - libFuzzer harness for the side-channel listener: an input
 * is what one client sends, over a real TCP connection into the real loop. */
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xfer_agent_opts_t o;
    xfer_agent_t *agent;
    char addr[80];
    const char *colon;
    fz_io_t io = {.fd = -1};

    /* A fresh agent per input: what one input's SENDs load must not
     * change how the next one is served. */
    xfer_agent_opts_init(&o);
    o.name = "fz-listener";
    o.progress_thread = 0;
    o.listen_addr = "127.0.0.1:0";
    fz_ok(xfer_agent_create(&o, &agent), "agent with a listener");
    fz_ok(xfer_agent_listen_addr(agent, addr, sizeof(addr)), "listen addr");
    colon = strrchr(addr, ':');
    io.fd = fz_connect((uint16_t)atoi(colon + 1), 0);
    io.tx = data;
    io.tx_len = size;
    /* The listener runs in its own thread; the end of the stream tells it
     * the input is over, and its close says it served all of it. */
    fz_io_finish(&io, NULL, "listener");
    check_replies(&io.rx, size);
    fz_io_close(&io);
    xfer_agent_destroy(agent);
    return 0;
}
