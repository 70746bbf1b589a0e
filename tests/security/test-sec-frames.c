/* test-sec-frames.c - forged stream frames, one test per class, over tcp and uds:
 * each is refused or closes only its connection (docs/wire-tcp.md), never a byte lands
 * outside the registration, and a well-behaved peer keeps transferring. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/security/hostile.h"

/* A deadline short enough for a test, long enough for a slow machine
 * to handshake well within it. */
#define HANDSHAKE_MS 2000

typedef struct fx {
    int uds;
    unsigned port;
    char path[108];
    hx_target_t t;
    hx_good_t g;
} fx_t;

static int use_uds;

/* Heap, not stack: the cleanups that stop the target run after the test
 * function returned. */
static fx_t *fx_make(void)
{
    char spec[256];
    fx_t *f = calloc(1, sizeof *f);

    XT_REQUIRE(f != NULL, "out of memory");
    xt_defer_late(free, f);
    f->uds = use_uds;
    if (f->uds) {
        snprintf(f->path, sizeof f->path, "/tmp/%s.sock", xt_name("xsec"));
        snprintf(spec, sizeof spec,
                 "uds:path=%s,mode=socket,handshake_timeout_ms=%u", f->path,
                 HANDSHAKE_MS);
    } else {
        f->port = xt_free_port();
        snprintf(spec, sizeof spec, "tcp:port=%u,handshake_timeout_ms=%u",
                 f->port, HANDSHAKE_MS);
    }
    hx_target_start(&f->t, spec, NULL);
    hx_good_make(&f->g, xt_name("good"), f->uds ? "uds:mode=socket" : "tcp",
                 &f->t);
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 64 << 10),
             "the good peer failed before any attack");
    return f;
}

static int fx_connect(fx_t *f)
{
    int fd = f->uds ? hx_connect_uds(f->path) : hx_connect_tcp(f->port, NULL);

    XT_REQUIRE(fd >= 0, "cannot connect to the target: %s", strerror(errno));
    return fd;
}

/* A raw connection past the handshake. */
static int fx_raw(fx_t *f)
{
    int fd = hx_handshake(fx_connect(f), "forger", f->t.epoch);

    XT_REQUIRE(fd >= 0, "the raw client's handshake failed");
    return fd;
}

/* After every attack: the good peer still moves bytes exactly, and the
 * canaries around the region are untouched. */
static void fx_after(fx_t *f, const char *what)
{
    XT_CHECK(hx_good_roundtrip(&f->g, 4096, 256 << 10),
             "the good peer failed after: %s", what);
    hx_target_canary(&f->t);
}

static void expect_closed(int fd, const char *what)
{
    XT_CHECK(hx_closed(fd, HX_WAIT_MS), "the target kept the connection "
             "open after %s", what);
    close(fd);
}

/* An answer header of the given type for the request tag, with the
 * status the target puts in arg0. */
static void expect_answer(int fd, uint8_t type, uint64_t tag,
                          xfer_status_t st, const char *what)
{
    xfer_wire_hdr_t h;

    if (hx_recv_hdr(fd, &h, HX_WAIT_MS) < 0) {
        XT_FAIL("no answer to %s", what);
        return;
    }
    XT_CHECK(h.type == type && h.tag == tag && (int64_t)h.arg0 == st &&
                 (type != XFER_WIRE_READ_RESP || st == XFER_OK ||
                  h.len == 0),
             "%s: answer type %u tag %" PRIu64 " status %" PRId64
             " len %" PRIu64 ", wanted type %u status %d",
             what, h.type, h.tag, (int64_t)h.arg0, h.len, type, st);
}

/* ---- the classes ------------------------------------------------------ */

/* Wrong key: refused with ACCESS, the payload discarded, the connection
 * kept (a refusal is an answer), for WRITE, WRITEV and READ. */
static void wrong_key(void)
{
    fx_t *f;
    int fd;
    uint8_t tab[2 * XFER_WIRE_ENTRY_SIZE];
    uint64_t e[6];

    f = fx_make();
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 1, f->t.key ^ 1,
             f->t.addr, 4096, NULL, 4096);
    expect_answer(fd, XFER_WIRE_ACK, 1, XFER_ERR_ACCESS, "WRITE, wrong key");
    hx_frame(fd, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, 2,
             f->t.key + 0x100, f->t.addr, 4096, NULL, 0);
    expect_answer(fd, XFER_WIRE_READ_RESP, 2, XFER_ERR_ACCESS,
                  "READ, wrong key");
    e[0] = f->t.key, e[1] = f->t.addr, e[2] = 8;
    e[3] = ~f->t.key, e[4] = f->t.addr + 8, e[5] = 8;
    memcpy(tab, e, sizeof tab);
    {
        uint8_t b[sizeof tab + 16];

        memcpy(b, tab, sizeof tab);
        memset(b + sizeof tab, 0x77, 16);
        hx_frame(fd, XFER_WIRE_WRITEV, XFER_WIRE_F_LAST, 0, 3, 2, 16,
                 sizeof b, b, sizeof b);
    }
    expect_answer(fd, XFER_WIRE_ACK, 3, XFER_ERR_ACCESS, "WRITEV, wrong key");
    /* still served after refusals */
    hx_frame(fd, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, 4, f->t.key,
             f->t.addr, 16, NULL, 0);
    expect_answer(fd, XFER_WIRE_READ_RESP, 4, XFER_OK, "READ, good key");
    close(fd);
    fx_after(f, "wrong keys");
}

/* Out of bounds: before the region, past its end by one byte, and a
 * READ of the page behind it; refused, the guard pages untouched. */
static void out_of_bounds(void)
{
    fx_t *f;
    int fd;

    f = fx_make();
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 1, f->t.key,
             f->t.addr - 16, 32, NULL, 32);
    expect_answer(fd, XFER_WIRE_ACK, 1, XFER_ERR_ACCESS, "WRITE before");
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 2, f->t.key,
             f->t.addr + f->t.len - 100, 101, NULL, 101);
    expect_answer(fd, XFER_WIRE_ACK, 2, XFER_ERR_ACCESS, "WRITE one past");
    hx_frame(fd, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, 3, f->t.key,
             f->t.addr + f->t.len, 4096, NULL, 0);
    expect_answer(fd, XFER_WIRE_READ_RESP, 3, XFER_ERR_ACCESS,
                  "READ of the guard page");
    close(fd);
    fx_after(f, "out-of-bounds frames");
}

/* An address plus length past 2^64 must not wrap into the region; a
 * length past 2^47 is a broken peer and closes the connection. */
static void overflow(void)
{
    fx_t *f;
    int fd;

    f = fx_make();
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 1, f->t.key,
             UINT64_MAX - 15, 64, NULL, 64);
    expect_answer(fd, XFER_WIRE_ACK, 1, XFER_ERR_ACCESS, "WRITE wrapping");
    hx_frame(fd, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, 2, f->t.key,
             f->t.addr + 64, UINT64_MAX - f->t.addr, NULL, 0);
    expect_closed(fd, "a READ of 2^64 - addr bytes");
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 3, f->t.key, f->t.addr,
             (UINT64_C(1) << 47) + 1, NULL, 64);
    expect_closed(fd, "a WRITE longer than 2^47");
    fx_after(f, "overflowing frames");
}

/* Truncated frames: half a header, or a header and part of its payload,
 * then the peer goes; only what arrived lands, inside the region. */
static void truncated(void)
{
    fx_t *f;
    int fd;
    uint8_t h[XFER_WIRE_HDR_SIZE];

    f = fx_make();
    fd = fx_raw(f);
    hx_hdr(h, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 1, f->t.key, f->t.addr,
           4096);
    hx_send(fd, h, 20, HX_WAIT_MS);
    close(fd);
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 2, f->t.key,
             f->t.addr + f->t.len - 65536, 65536, NULL, 100);
    close(fd);
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 2, f->t.key,
             f->t.addr + f->t.len - 4096, 65536, NULL, 100);
    close(fd);
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0, 60000, NULL, 10);
    close(fd);
    xt_sleep_ms(200);
    fx_after(f, "truncated frames");
}

/* Lengths that lie: a WRITEV whose entries do not add up, whose len is
 * not 24 n + payload, an empty HELLO name, a NOTIF over 64 KiB. */
static void lying_lengths(void)
{
    fx_t *f;
    int fd;
    uint64_t e[6];

    f = fx_make();
    e[0] = f->t.key, e[1] = f->t.addr, e[2] = 16;
    e[3] = f->t.key, e[4] = f->t.addr + 16, e[5] = 16;
    fd = fx_raw(f);
    /* entries say 32, the header 40 (len agrees with the header) */
    {
        uint8_t b[48 + 40];

        memcpy(b, e, 48);
        memset(b + 48, 0x66, 40);
        hx_frame(fd, XFER_WIRE_WRITEV, XFER_WIRE_F_LAST, 0, 1, 2, 40,
                 sizeof b, b, sizeof b);
    }
    expect_closed(fd, "a WRITEV table that does not add up");
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_WRITEV, XFER_WIRE_F_LAST, 0, 1, 2, 32,
             2 * 24 + 33, e, 48);
    expect_closed(fd, "a WRITEV len that is not 24 n + payload");
    fd = fx_raw(f);
    hx_frame(fd, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0, XFER_NOTIF_MAX + 1, NULL,
             0);
    expect_closed(fd, "a NOTIF over 64 KiB");
    fd = fx_connect(f);
    hx_hello(fd, "", 0, f->t.epoch);
    expect_closed(fd, "an empty HELLO name");
    fd = fx_connect(f);
    hx_frame(fd, XFER_WIRE_HELLO, 0, XFER_WIRE_VERSION, XFER_WIRE_MAGIC, 7,
             f->t.epoch, 300, NULL, 300);
    expect_closed(fd, "a HELLO name of 300 bytes");
    fx_after(f, "lying lengths");
}

/* Slowloris: a HELLO one byte a second is closed at handshake_timeout_ms
 * counted from accept, though bytes keep arriving; the good peer is
 * served meanwhile. */
static void slowloris(void)
{
    fx_t *f;
    uint8_t hello[XFER_WIRE_HDR_SIZE + 6];
    uint64_t t0;
    size_t i;
    int fd, closed = 0;

    f = fx_make();
    hx_hdr(hello, XFER_WIRE_HELLO, 0, XFER_WIRE_VERSION, XFER_WIRE_MAGIC, 7,
           f->t.epoch, 6);
    memcpy(hello + XFER_WIRE_HDR_SIZE, "sloth!", 6);
    fd = fx_connect(f);
    t0 = xt_now_ms();
    for (i = 0; i < sizeof hello; i++) {
        if (hx_send(fd, hello + i, 1, HX_WAIT_MS) < 0 ||
            hx_closed(fd, 250)) {
            closed = 1;
            break;
        }
        if (i == 2)
            XT_CHECK(hx_good_roundtrip(&f->g, 0, 4096),
                     "the good peer failed beside a slow handshake");
        if (xt_now_ms() - t0 > HANDSHAKE_MS + 8000)
            break;
    }
    XT_CHECK(closed, "a handshake trickling a byte every 250 ms was still "
             "open after %llu ms (handshake_timeout_ms=%u)",
             (unsigned long long)(xt_now_ms() - t0), HANDSHAKE_MS);
    XT_CHECK(i < sizeof hello, "the whole HELLO went through");
    XT_CHECK(xt_now_ms() - t0 >= HANDSHAKE_MS - 100,
             "closed after %llu ms, before the deadline",
             (unsigned long long)(xt_now_ms() - t0));
    close(fd);
    /* Silent: connected and never a byte. */
    fd = fx_connect(f);
    XT_CHECK(hx_closed(fd, HANDSHAKE_MS + 5000),
             "a silent connection outlived handshake_timeout_ms");
    close(fd);
    fx_after(f, "slow handshakes");
}

/* Frames before HELLO, and frames only a target sends (HELLO_ACK, ACK,
 * READ_RESP, SHM_FD) sent to the target: the connection closes. */
static void wrong_direction(void)
{
    static const uint8_t types[] = {XFER_WIRE_HELLO_ACK, XFER_WIRE_ACK,
                                    XFER_WIRE_READ_RESP, XFER_WIRE_SHM_FD,
                                    XFER_WIRE_MSG, 0, 11, 255};
    fx_t *f;
    int fd;

    f = fx_make();
    fd = fx_connect(f);
    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 1, f->t.key, f->t.addr,
             16, NULL, 16);
    expect_closed(fd, "a WRITE before HELLO");
    fd = fx_connect(f);
    hx_frame(fd, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0, 4, "boo!", 4);
    expect_closed(fd, "a NOTIF before HELLO");
    for (size_t i = 0; i < sizeof types; i++) {
        char what[64];

        fd = fx_raw(f);
        hx_frame(fd, types[i], 0, 0, 0, 0, 0, 0, NULL, 0);
        snprintf(what, sizeof what, "a frame of type %u", types[i]);
        expect_closed(fd, what);
    }
    /* A second HELLO on a handshaken connection. */
    fd = fx_raw(f);
    hx_hello(fd, "again", 5, f->t.epoch);
    expect_closed(fd, "a second HELLO");
    /* A reserved bit set. */
    fd = fx_raw(f);
    {
        uint8_t h[XFER_WIRE_HDR_SIZE];

        hx_hdr(h, XFER_WIRE_READ_REQ, XFER_WIRE_F_LAST, 0, 1, f->t.key,
               f->t.addr, 8);
        h[2] = 1;
        hx_send(fd, h, sizeof h, HX_WAIT_MS);
    }
    expect_closed(fd, "a reserved header bit");
    fx_after(f, "frames in the wrong direction");
}

/* Random frames, random junk: whatever the target makes of them, nothing
 * lands outside the region and the good peer is served. */
static void random_frames(void)
{
    fx_t *f;
    uint64_t seed = xt_seed(), st = seed;

    printf("random_frames seed %" PRIu64 "\n", seed);
    f = fx_make();
    for (int round = 0; round < 40; round++) {
        uint8_t b[512];
        size_t n = 40 + xt_rand(&st) % (sizeof b - 40);
        int fd = fx_raw(f);

        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)xt_rand(&st);
        /* half the time a plausible header around the region */
        if (xt_rand(&st) & 1)
            hx_hdr(b, (uint8_t)(3 + xt_rand(&st) % 8),
                   (uint8_t)(xt_rand(&st) & 1), 0, 1,
                   xt_rand(&st) & 1 ? f->t.key : xt_rand(&st),
                   f->t.addr + f->t.len - xt_rand(&st) % 8192,
                   xt_rand(&st) % 16384);
        hx_send(fd, b, n, HX_WAIT_MS);
        close(fd);
    }
    fx_after(f, "random frames");
}

#define BOTH(fn)                                                             \
    static void fn##_tcp(void) { use_uds = 0; fn(); }                        \
    static void fn##_uds(void) { use_uds = 1; fn(); }
BOTH(wrong_key)
BOTH(out_of_bounds)
BOTH(overflow)
BOTH(truncated)
BOTH(lying_lengths)
BOTH(slowloris)
BOTH(wrong_direction)
BOTH(random_frames)

int main(int argc, char **argv)
{
    static const xt_test_t tcp[] = {
        XT_TEST(wrong_key_tcp),     XT_TEST(out_of_bounds_tcp),
        XT_TEST(overflow_tcp),      XT_TEST(truncated_tcp),
        XT_TEST(lying_lengths_tcp), XT_TEST(slowloris_tcp),
        XT_TEST(wrong_direction_tcp), XT_TEST(random_frames_tcp),
        XT_END,
    };
    static const xt_test_t uds[] = {
        XT_TEST(wrong_key_uds),     XT_TEST(out_of_bounds_uds),
        XT_TEST(overflow_uds),      XT_TEST(truncated_uds),
        XT_TEST(lying_lengths_uds), XT_TEST(slowloris_uds),
        XT_TEST(wrong_direction_uds), XT_TEST(random_frames_uds),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"frames-tcp", tcp},
                                        {"frames-uds", uds}};

    hx_main(argc, argv);
#ifdef XT_HAVE_UDS
    return xt_run(argv[0], suites, 2);
#else
    printf("SKIP: uds suite: the uds plugin is not built\n");
    return xt_run(argv[0], suites, 1);
#endif
}
