/* test-tcp-wire.c - forged stream frames over a raw socket against a real tcp
 * agent: WRITEV tables that do not add up close only that connection. */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "plugins/common/wire.h"
#include "tests/common/xt.h"

#define REG_SIZE (1u << 20)
#define GUARD 4096u /* unregistered bytes after the region, must stay */
#define WAIT_MS 10000

/* A target agent with a progress thread, one registered region with a
 * guard behind it, and a well-behaved initiator that knows it. */
typedef struct fixture {
    xfer_agent_t *t, *i;
    uint8_t *buf;     /* REG_SIZE registered + GUARD not */
    uint8_t *src;     /* the initiator's registered source */
    uint64_t key;
    unsigned port;
} fixture_t;

static void fixture_make(fixture_t *f)
{
    char spec[64];
    size_t len;
    char *blob;
    json_t *root;

    memset(f, 0, sizeof *f);
    f->port = xt_free_port();
    snprintf(spec, sizeof spec, "tcp:port=%u", f->port);
    f->t = xt_agent(xt_name("wt"), spec, 1);
    f->i = xt_agent(xt_name("wi"), "tcp", 1);
    f->buf = xt_alloc(REG_SIZE + GUARD);
    f->src = xt_alloc(REG_SIZE);
    memset(f->buf, 0xee, REG_SIZE + GUARD);
    xt_register(f->t, f->buf, REG_SIZE);
    xt_register(f->i, f->src, REG_SIZE);
    blob = xt_md_get(f->t, XFER_MD_ALL, NULL, 0, &len);
    root = xt_blob_parse(blob, len);
    CU_ASSERT_FATAL(xt_json_u64(
        json_object_get(xt_blob_region(root, 0), "key"), &f->key));
    xt_md_exchange(f->t, XFER_MD_ALL, f->i);
}

/* The well-behaved peer: 64 scattered 4 KiB descriptors (one WRITEV
 * frame) land and are acknowledged while forged connections come and go. */
static void good_write(fixture_t *f, uint64_t seed)
{
    enum { N = 64, BS = 4096 };
    xfer_desc_t ld[N], rd[N];
    xfer_dlist_t l = {XFER_MEM_DRAM, N, ld}, r = {XFER_MEM_DRAM, N, rd};
    xfer_req_t *req = NULL;

    xt_fill(f->src, N * BS, seed);
    for (size_t k = 0; k < N; k++) {
        ld[k] = (xfer_desc_t){(uintptr_t)f->src + k * BS, BS, 0};
        /* every other block, backwards: nothing adjacent */
        rd[k] = (xfer_desc_t){(uintptr_t)f->buf + (N - 1 - k) * 2 * BS,
                              BS, 0};
    }
    XT_STATUS_FATAL(xfer_req_create(f->i, XFER_OP_WRITE, &l, &r,
                                    xfer_agent_name(f->t), NULL, &req),
                    XFER_OK);
    xt_req_defer(req);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    for (size_t k = 0; k < N; k++)
        CU_ASSERT_EQUAL(memcmp(f->buf + (N - 1 - k) * 2 * BS,
                               f->src + k * BS, BS), 0);
    xt_req_release(req);
}

static void hdr_put(uint8_t *out, uint8_t type, uint8_t flags, uint32_t seg,
                    uint64_t tag, uint64_t arg0, uint64_t arg1, uint64_t len)
{
    xfer_wire_hdr_t h = {type, flags, 0, seg, tag, arg0, arg1, len};

    xfer_wire_encode((xfer_wire_hdr_t *)(void *)out, &h);
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n) {
        ssize_t k = send(fd, b, n, MSG_NOSIGNAL);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* the target may close before it read everything */
        b += k;
        n -= (size_t)k;
    }
}

/* Read one 40-byte header; -1 when the connection closed or WAIT_MS. */
static int recv_hdr(int fd, xfer_wire_hdr_t *h)
{
    uint8_t b[XFER_WIRE_HDR_SIZE];
    size_t got = 0;

    while (got < sizeof b) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;

        if (poll(&p, 1, WAIT_MS) != 1)
            return -1;
        k = recv(fd, b + got, sizeof b - got, 0);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    xfer_wire_decode(h, b);
    return 0;
}

/* A raw connection past the handshake. */
static int forger(fixture_t *f)
{
    struct sockaddr_in a;
    uint8_t hello[XFER_WIRE_HDR_SIZE + 6];
    xfer_wire_hdr_t h;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint64_t ep = xfer_agent_epoch(f->t);

    CU_ASSERT_FATAL(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)f->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    hdr_put(hello, XFER_WIRE_HELLO, 0, XFER_WIRE_VERSION, XFER_WIRE_MAGIC, 7,
            ep, 6);
    memcpy(hello + XFER_WIRE_HDR_SIZE, "forger", 6);
    send_all(fd, hello, sizeof hello);
    CU_ASSERT_FATAL(recv_hdr(fd, &h) == 0);
    CU_ASSERT_FATAL(h.type == XFER_WIRE_HELLO_ACK && h.arg1 == 0);
    return fd;
}

/* The target closed the connection (EOF or reset) within WAIT_MS. */
static int closed(int fd)
{
    uint8_t b[256];

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;

        if (poll(&p, 1, WAIT_MS) != 1)
            return 0;
        k = recv(fd, b, sizeof b, 0);
        if (k <= 0)
            return 1;
    }
}

typedef struct ent {
    uint64_t key, addr, len;
} ent_t;

/* One WRITEV frame: header fields as given (n, sum, len), then the
 * table, then payload bytes (pattern 0x5a..., `pay` of them). */
static void send_writev(int fd, uint32_t seg, uint8_t flags, uint64_t n,
                        uint64_t sum, uint64_t len, const ent_t *e,
                        size_t ne, size_t pay)
{
    size_t sz = XFER_WIRE_HDR_SIZE + ne * XFER_WIRE_ENTRY_SIZE + pay;
    uint8_t *b = calloc(1, sz);
    uint8_t *p = b + XFER_WIRE_HDR_SIZE;

    CU_ASSERT_FATAL(b != NULL);
    hdr_put(b, XFER_WIRE_WRITEV, flags, seg, 42, n, sum, len);
    for (size_t k = 0; k < ne; k++) {
        uint64_t v[3] = {htole64(e[k].key), htole64(e[k].addr),
                         htole64(e[k].len)};

        memcpy(p, v, sizeof v);
        p += sizeof v;
    }
    for (size_t k = 0; k < pay; k++)
        p[k] = (uint8_t)(0x5a + k);
    send_all(fd, b, sz);
    free(b);
}

static uint64_t at(fixture_t *f, size_t off)
{
    return (uint64_t)(uintptr_t)f->buf + off;
}

/* A well-formed forged WRITEV lands and is acknowledged: the format on
 * the page is the format on the wire. */
static void test_writev_accepted(void)
{
    fixture_t f;
    ent_t e[3];
    xfer_wire_hdr_t h;
    int fd;

    fixture_make(&f);
    e[0] = (ent_t){f.key, at(&f, 0), 100};
    e[1] = (ent_t){f.key, at(&f, 100), 50}; /* adjacent to the first */
    e[2] = (ent_t){f.key, at(&f, 8192), 10};
    fd = forger(&f);
    send_writev(fd, 0, XFER_WIRE_F_LAST, 3, 160, 3 * 24 + 160, e, 3, 160);
    CU_ASSERT_FATAL(recv_hdr(fd, &h) == 0);
    CU_ASSERT_EQUAL(h.type, XFER_WIRE_ACK);
    CU_ASSERT_EQUAL(h.tag, 42);
    CU_ASSERT_EQUAL(h.arg0, 0);
    CU_ASSERT_EQUAL(h.arg1, 3);
    for (size_t k = 0; k < 150; k++)
        CU_ASSERT_EQUAL_FATAL(f.buf[k], (uint8_t)(0x5a + k));
    CU_ASSERT_EQUAL(f.buf[150], 0xee);
    for (size_t k = 0; k < 10; k++)
        CU_ASSERT_EQUAL_FATAL(f.buf[8192 + k], (uint8_t)(0x5a + 150 + k));
    CU_ASSERT_EQUAL(f.buf[8202], 0xee);
    close(fd);
    good_write(&f, xt_seed());
}

/* Refusals are answers, not disconnects: an entry outside the region
 * (index 2), one with a wrong key (index 1 of a second request), and a
 * wrapping one.  The ACK names the first refused descriptor, the good
 * entries land, the refused bytes land nowhere (the guard is intact). */
static void test_writev_refused_entries(void)
{
    fixture_t f;
    ent_t e[4];
    xfer_wire_hdr_t h;
    int fd;

    fixture_make(&f);
    fd = forger(&f);
    e[0] = (ent_t){f.key, at(&f, 0), 16};
    e[1] = (ent_t){f.key, at(&f, 64), 16};
    e[2] = (ent_t){f.key, at(&f, REG_SIZE - 8), 16}; /* 8 bytes over */
    e[3] = (ent_t){f.key, at(&f, 128), 16};
    send_writev(fd, 0, XFER_WIRE_F_LAST, 4, 64, 4 * 24 + 64, e, 4, 64);
    CU_ASSERT_FATAL(recv_hdr(fd, &h) == 0);
    CU_ASSERT_EQUAL(h.type, XFER_WIRE_ACK);
    CU_ASSERT_EQUAL((int64_t)h.arg0, (int64_t)XFER_ERR_ACCESS);
    CU_ASSERT_EQUAL(h.seg, 2);
    CU_ASSERT_EQUAL(f.buf[0], 0x5a);
    CU_ASSERT_EQUAL(f.buf[64], (uint8_t)(0x5a + 16));
    CU_ASSERT_EQUAL(f.buf[128], (uint8_t)(0x5a + 48));
    CU_ASSERT_EQUAL(f.buf[REG_SIZE - 8], 0xee);
    for (size_t k = 0; k < GUARD; k++)
        CU_ASSERT_EQUAL_FATAL(f.buf[REG_SIZE + k], 0xee);

    /* A second request on the same connection: wrong key at 1, and an
     * entry whose end wraps around the address space at 2. */
    e[0] = (ent_t){f.key, at(&f, 256), 8};
    e[1] = (ent_t){f.key ^ 1, at(&f, 264), 8};
    e[2] = (ent_t){f.key, UINT64_MAX - 3, 8};
    send_writev(fd, 0, XFER_WIRE_F_LAST, 3, 24, 3 * 24 + 24, e, 3, 24);
    CU_ASSERT_FATAL(recv_hdr(fd, &h) == 0);
    CU_ASSERT_EQUAL(h.type, XFER_WIRE_ACK);
    CU_ASSERT_EQUAL((int64_t)h.arg0, (int64_t)XFER_ERR_ACCESS);
    CU_ASSERT_EQUAL(h.seg, 1);
    CU_ASSERT_EQUAL(f.buf[264], 0xee);
    close(fd);
    good_write(&f, xt_seed());
}

/* Tables that do not add up are protocol violations: that connection
 * closes, and the well-behaved peer is served before and after each. */
static void test_writev_hostile(void)
{
    fixture_t f;
    ent_t e[2];
    int fd;

    fixture_make(&f);
    good_write(&f, xt_seed());
    e[0] = (ent_t){f.key, at(&f, 0), 16};
    e[1] = (ent_t){f.key, at(&f, 16), 16};

    /* entries say 32 bytes, the header 40 (and len agrees with it) */
    fd = forger(&f);
    send_writev(fd, 0, XFER_WIRE_F_LAST, 2, 40, 2 * 24 + 40, e, 2, 40);
    CU_ASSERT(closed(fd));
    close(fd);
    good_write(&f, xt_seed());

    /* len is not 24 n + payload */
    fd = forger(&f);
    send_writev(fd, 0, XFER_WIRE_F_LAST, 2, 32, 2 * 24 + 31, e, 2, 32);
    CU_ASSERT(closed(fd));
    close(fd);

    /* no entries; more entries than a frame may carry */
    fd = forger(&f);
    send_writev(fd, 0, XFER_WIRE_F_LAST, 0, 0, 0, NULL, 0, 0);
    CU_ASSERT(closed(fd));
    close(fd);
    fd = forger(&f);
    send_writev(fd, 0, XFER_WIRE_F_LAST, XFER_WIRE_BATCH_MAX + 1, 0,
                (XFER_WIRE_BATCH_MAX + 1) * 24, NULL, 0, 0);
    CU_ASSERT(closed(fd));
    close(fd);
    good_write(&f, xt_seed());

    /* an entry length past any region, with a sum that overflows to the
     * header's value */
    fd = forger(&f);
    e[1].len = UINT64_MAX - 15;
    send_writev(fd, 0, XFER_WIRE_F_LAST, 2, 0, 2 * 24, e, 2, 0);
    CU_ASSERT(closed(fd));
    close(fd);
    e[1].len = 16;

    /* out of sequence: the first frame of a request must start at 0, the
     * next one where the previous ended */
    fd = forger(&f);
    send_writev(fd, 5, 0, 2, 32, 2 * 24 + 32, e, 2, 32);
    CU_ASSERT(closed(fd));
    close(fd);
    fd = forger(&f);
    send_writev(fd, 0, 0, 2, 32, 2 * 24 + 32, e, 2, 32);
    send_writev(fd, 3, XFER_WIRE_F_LAST, 2, 32, 2 * 24 + 32, e, 2, 32);
    CU_ASSERT(closed(fd));
    close(fd);

    /* a READ_REQ inside a WRITE request */
    fd = forger(&f);
    send_writev(fd, 0, 0, 2, 32, 2 * 24 + 32, e, 2, 32);
    {
        uint8_t b[XFER_WIRE_HDR_SIZE];

        hdr_put(b, XFER_WIRE_READ_REQ, 0, 2, 42, f.key, at(&f, 0), 8);
        send_all(fd, b, sizeof b);
    }
    CU_ASSERT(closed(fd));
    close(fd);
    good_write(&f, xt_seed());
    for (size_t k = 0; k < GUARD; k++)
        CU_ASSERT_EQUAL_FATAL(f.buf[REG_SIZE + k], 0xee);
}

/* A request of many descriptors in several WRITEV frames (and a plain
 * WRITE for a last run of one), with a descriptor refused in the middle
 * of the second frame: the error names that descriptor. */
static void test_writev_request_refusal(void)
{
    enum { N = 257, BS = 512 }; /* 128 + 128 + a plain WRITE */
    fixture_t f;
    xfer_desc_t *ld = calloc(N, sizeof *ld), *rd = calloc(N, sizeof *rd);
    xfer_dlist_t l = {XFER_MEM_DRAM, N, ld}, r = {XFER_MEM_DRAM, N, rd};
    xfer_req_t *req = NULL;
    uint8_t *small;
    xfer_mem_t *m;
    uint64_t seed = xt_seed();

    CU_ASSERT_FATAL(ld && rd);
    xt_defer_late(free, ld);
    xt_defer_late(free, rd);
    fixture_make(&f);
    /* a second region, deregistered after the initiator learned it */
    small = xt_alloc(BS);
    m = xt_register(f.t, small, BS);
    xt_md_exchange(f.t, XFER_MD_ALL, f.i);
    xt_fill(f.src, N * BS, seed);
    for (size_t k = 0; k < N; k++) {
        ld[k] = (xfer_desc_t){(uintptr_t)f.src + k * BS, BS, 0};
        rd[k] = (xfer_desc_t){(uintptr_t)f.buf + k * BS, BS, 0};
    }
    rd[200] = (xfer_desc_t){(uintptr_t)small, BS, 0};
    XT_STATUS_FATAL(xfer_req_create(f.i, XFER_OP_WRITE, &l, &r,
                                    xfer_agent_name(f.t), NULL, &req),
                    XFER_OK);
    xt_req_defer(req);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    CU_ASSERT_EQUAL(memcmp(f.buf, f.src, 200 * BS), 0);
    CU_ASSERT_EQUAL(memcmp(small, f.src + 200 * BS, BS), 0);
    XT_STATUS(xfer_mem_deregister(f.t, m), XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_ERR_ACCESS);
    CU_ASSERT(strstr(xfer_last_error(), "descriptor 200 ") != NULL);
    /* every other descriptor still landed */
    CU_ASSERT_EQUAL(memcmp(f.buf + 201 * BS, f.src + 201 * BS,
                           (N - 201) * BS), 0);
    xt_req_release(req);
    good_write(&f, xt_seed());
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_writev_accepted),
        XT_TEST(test_writev_refused_entries),
        XT_TEST(test_writev_hostile),
        XT_TEST(test_writev_request_refusal),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"tcp-wire", tests}};

    (void)argc;
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    return xt_run(argv[0], suites, 1);
}
