/* fuzz-stream-initiator.c - libFuzzer harness for the stream engine's initiator
 * side: a real agent posts to a fake target (the harness) whose answers are the input. */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <xfer/xfer.h>

#include "core/base64.h"
#include "tests/fuzz/fuzz-stream.h"

/* Input: byte 0 picks what the agent posts, byte 1 the number of
 * descriptors, then one byte per descriptor for its length; the rest is
 * what the fake target answers, in which the 8-byte tokens "@TAG@@@" + k
 * stand for the first request's id (read from the agent's frames) + k
 * and "@EPOCH@" + any byte for the fake target's epoch.
 *   byte 0 bits 0-1: 0 WRITE, 1 READ, 2 a lone notification, 3 WRITE
 *                    with a notification;
 *          bit 2:    the harness answers a good HELLO_ACK first;
 *          bit 3:    a second request like the first is posted behind
 *                    it (both in flight: answers must match the oldest).
 *   byte 1: descriptors = byte % 8 + 1.
 *   length byte c: bit 7 set, 16 KiB + 1 + (c & 0x3f) * 64 bytes (over
 *          inline_max: received straight into place); else
 *          (c & 0x3f) * 16 + 1; bit 6 leaves an 8-byte gap before the
 *          next descriptor, locally and remotely.
 * The local descriptors end at the end of the local buffer. */
#define OP_MASK 0x03u
#define F_ACK 0x04u
#define F_TWO 0x08u
#define MAX_SEGS 8u
#define LOCAL (256u << 10)

#define FAKE_NAME "fz-fake"
#define FAKE_EPOCH UINT64_C(0x1234)
#define FAKE_KEY UINT64_C(0x1111222233334444)
#define FAKE_ADDR UINT64_C(0x10000000)
#define FAKE_LEN (1u << 20)

static xfer_agent_t *agent;
static int lfd = -1;
static fz_guarded_t local;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fake target's metadata: its tcp connection info names the
 * harness's listening socket. */
static void load_fake(uint16_t port)
{
    uint8_t info[24] = {'X', 'T', 'C', 'P', 1, 4};
    json_t *md, *region;
    char *text, key[24], addr[24];

    info[6] = (uint8_t)(port >> 8);
    info[7] = (uint8_t)port;
    info[8] = 127;
    info[11] = 1;
    snprintf(key, sizeof(key), "0x%llx", (unsigned long long)FAKE_KEY);
    snprintf(addr, sizeof(addr), "0x%llx", (unsigned long long)FAKE_ADDR);
    /* tcp packs nothing of a region: its public part is empty. */
    region = json_pack("{s:s, s:I, s:s, s:i, s:s, s:s, s:{s:s}}", "addr",
                       addr, "len", (json_int_t)FAKE_LEN, "type", "DRAM",
                       "dev", 0, "key", key, "access", "rw", "pub", "tcp",
                       "");
    md = json_pack("{s:s, s:i, s:s, s:s, s:[{s:s, s:o}], s:[o]}", "format",
                   "xfer-md", "version", 1, "agent", FAKE_NAME, "epoch",
                   "0x1234", "backends", "plugin", "tcp", "conn",
                   xfer__b64_json(info, sizeof(info)), "regions", region);
    text = md ? json_dumps(md, JSON_COMPACT) : NULL;
    if (text == NULL)
        fz_die("cannot build the fake target's metadata");
    fz_ok(xfer_md_load(agent, text, strlen(text), NULL, 0), "load fake");
    free(text);
    json_decref(md);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xfer_agent_opts_t o;
    xfer_desc_t d;
    xfer_dlist_t l = {.type = XFER_MEM_DRAM, .count = 1, .descs = &d};
    xfer_mem_t *m;
    uint16_t port;

    fz_setup();
    xfer_agent_opts_init(&o);
    o.name = "fz-initiator";
    o.progress_thread = 0;
    fz_ok(xfer_agent_create(&o, &agent), "agent");
    fz_ok(xfer_backend_add(agent, "tcp", NULL), "tcp backend");
    fz_guarded_init(&local, LOCAL);
    d.addr = (uintptr_t)local.base;
    d.len = LOCAL;
    d.dev = 0;
    fz_ok(xfer_mem_register(agent, &l, NULL, &m), "register");
    lfd = fz_listen(&port);
    load_fake(port);
    return 0;
}

/* The first request frame the agent sent (its id), once HELLO came. */
static bool agent_frames(const fz_buf_t *rx, bool want_req, uint64_t *tag)
{
    size_t off = 0;
    bool hello = false;

    while (rx->len - off >= FZW_HDR) {
        fzw_hdr_t h;

        fzw_decode(&h, rx->p + off);
        if (off == 0 && (h.type != FZW_HELLO || h.tag != FZW_MAGIC ||
                         h.arg1 != FAKE_EPOCH))
            fz_die("the initiator's first frame is no HELLO for epoch 0x%llx",
                   (unsigned long long)FAKE_EPOCH);
        hello = true;
        if (h.type == FZW_WRITE || h.type == FZW_WRITEV ||
            h.type == FZW_READ_REQ) {
            *tag = h.tag;
            return true;
        }
        if (h.type == FZW_NOTIF && !want_req)
            return true;
        off += FZW_HDR + (h.type == FZW_READ_REQ ? 0 : (size_t)h.len);
    }
    return hello && !want_req;
}

/* Only a READ writes local memory, and only into its descriptors: the
 * bytes between and before them (and for a WRITE all of them) keep the
 * pattern they had before the post. */
static void local_check(const xfer_desc_t *ld, unsigned nseg, bool read)
{
    const uint8_t *lo = (const uint8_t *)ld[0].addr;
    const uint8_t *p = lo > local.base + 4096 ? lo - 4096 : local.base;
    const uint8_t *end = local.base + LOCAL;

    for (unsigned i = 0; p < end; p++) {
        while (read && i < nseg && p >= (const uint8_t *)ld[i].addr +
                                           ld[i].len)
            i++;
        if (read && i < nseg && p >= (const uint8_t *)ld[i].addr)
            continue;
        if (*p != 0x33)
            fz_die("the initiator's %s changed local byte %td (descriptor "
                   "0 starts at %td)", read ? "READ" : "WRITE",
                   p - local.base, lo - local.base);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned op, nseg;
    xfer_desc_t ld[MAX_SEGS], rd[MAX_SEGS];
    xfer_dlist_t ll = {.type = XFER_MEM_DRAM, .descs = ld};
    xfer_dlist_t rl = {.type = XFER_MEM_DRAM, .descs = rd};
    xfer_req_t *req[2] = {NULL, NULL};
    fz_io_t io = {.fd = -1};
    fz_buf_t tx = {0};
    fz_token_t tokens[2];
    uint64_t tag = 0, deadline;
    uint64_t loff = 0, roff = 0;
    size_t hdr;
    xfer_status_t st;

    if (size < 2 || size < 2u + data[1] % MAX_SEGS + 1)
        return 0;
    op = data[0] & OP_MASK;
    nseg = data[1] % MAX_SEGS + 1;
    hdr = 2 + nseg;
    for (unsigned i = 0; i < nseg; i++) {
        uint8_t c = data[2 + i];
        size_t len = c & 0x80 ? (16u << 10) + 1 + (c & 0x3fu) * 64
                              : (c & 0x3fu) * 16u + 1;

        if (i > 0 && (data[1 + i] & 0x40)) {
            loff += 8;
            roff += 8;
        }
        ld[i] = (xfer_desc_t){.addr = loff, .len = len};
        rd[i] = (xfer_desc_t){.addr = FAKE_ADDR + roff, .len = len};
        loff += len;
        roff += len;
    }
    /* The last descriptor ends where the guard page starts: an answer
     * longer than it asked for lands there. */
    for (unsigned i = 0; i < nseg; i++)
        ld[i].addr += (uintptr_t)local.base + LOCAL - loff;
    ll.count = rl.count = nseg;
    memset(local.base, 0x33, LOCAL);

    if (op == 2) {
        st = xfer_notif_send(agent, FAKE_NAME, "fz", 2, NULL);
        fz_sentence(st, "xfer_notif_send");
        if (st != XFER_OK)
            fz_die("xfer_notif_send to the fake target: %s (%s)",
                   xfer_strerror(st), xfer_last_error());
    } else {
        for (unsigned k = 0; k < ((data[0] & F_TWO) ? 2u : 1u); k++) {
            fz_ok(xfer_req_create(agent, op == 1 ? XFER_OP_READ
                                                 : XFER_OP_WRITE,
                                  &ll, &rl, FAKE_NAME, NULL, &req[k]),
                  "request");
            st = xfer_req_post(req[k], op == 3 ? "fz" : NULL,
                               op == 3 ? 2 : 0);
            if (st != XFER_IN_PROG)
                fz_die("post to the fake target: %s (%s)", xfer_strerror(st),
                       xfer_last_error());
        }
    }

    /* Take the agent's connection and read until its request shows. */
    deadline = fz_now_ms() + FZ_HANG_MS;
    for (;;) {
        if (io.fd < 0)
            io.fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (io.fd < 0 && errno != EAGAIN && errno != EINTR)
            fz_die("accept: %s", strerror(errno));
        fz_io_step(&io, agent, io.fd < 0 ? 1 : 10);
        if (io.fd >= 0 && agent_frames(&io.rx, op != 2, &tag))
            break;
        if (io.eof || fz_now_ms() > deadline)
            fz_die("the initiator sent no %s (%zu bytes came)",
                   op == 2 ? "HELLO" : "request frame", io.rx.len);
    }

    if (data[0] & F_ACK) {
        uint8_t h[FZW_HDR];
        fzw_hdr_t ack = {.type = FZW_HELLO_ACK, .seg = FZW_VERSION,
                         .tag = FZW_MAGIC, .arg0 = FAKE_EPOCH};

        fzw_encode(h, &ack);
        fz_buf_put(&tx, h, sizeof(h));
    }
    if (size > hdr) {
        size_t at = tx.len;

        fz_buf_put(&tx, data + hdr, size - hdr);
        memcpy(tokens[0].text, "@TAG@@@", 8);
        tokens[0].value = tag;
        tokens[0].step = 1;
        memcpy(tokens[1].text, "@EPOCH@", 8);
        tokens[1].value = FAKE_EPOCH;
        tokens[1].step = 0;
        fz_tokens_apply(tx.p + at, size - hdr, tokens, 2);
    }
    io.tx = tx.p;
    io.tx_len = tx.len;
    /* The answers, then the end of the stream: the agent must end its
     * request one way or the other, and close. */
    fz_io_finish(&io, agent, "initiator");

    for (unsigned k = 0; k < 2 && req[k] != NULL; k++) {
        deadline = fz_now_ms() + FZ_HANG_MS;
        while ((st = xfer_req_status(req[k])) == XFER_IN_PROG)
            if (fz_now_ms() > deadline)
                fz_die("request %u is still in progress %u ms after its "
                       "target closed the connection", k, FZ_HANG_MS);
        fz_sentence(st, "request");
        if (xfer_req_release(req[k]) != XFER_OK)
            fz_die("releasing an ended request: %s", xfer_last_error());
    }
    fz_io_close(&io);
    fz_buf_free(&tx);
    fz_guarded_check(&local, "initiator's local buffer");
    local_check(ld, nseg, op == 1);
    return 0;
}
