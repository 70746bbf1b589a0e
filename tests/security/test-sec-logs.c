/* test-sec-logs.c - issue 10, break 4: refused frames cannot flood the target's
 * log (one line per frame, rate-limited per call site and overall), and a peer's
 * name cannot forge log lines (control bytes refused at HELLO, escaped in lines). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/security/hostile.h"

#define FRAMES 10000
#define PER_CONN 100
/* The overall cap of core/log.c, bytes a second. */
#define LOG_BYTES_PER_S (64u << 10)

typedef struct fx {
    hx_target_t t;
    hx_good_t g;
    unsigned port;
    char log[128];
} fx_t;

static void log_remove(void *arg)
{
    if (getenv("XT_KEEP_LOGS") == NULL)
        unlink(arg);
}

static fx_t *fx_make(void)
{
    fx_t *f = calloc(1, sizeof *f);
    char spec[64], o[192];

    XT_REQUIRE(f != NULL, "out of memory");
    xt_defer_late(free, f);
    f->port = xt_free_port();
    snprintf(f->log, sizeof f->log, "/tmp/%s.log", xt_name("xsec-logs"));
    xt_defer_late(log_remove, f->log);
    snprintf(spec, sizeof spec, "tcp:port=%u", f->port);
    snprintf(o, sizeof o, "log=%s", f->log);
    hx_target_start(&f->t, spec, o);
    hx_good_make(&f->g, xt_name("good"), "tcp", &f->t);
    return f;
}

/* The target's log so far, NUL-terminated (freed after the test). */
static char *log_text(fx_t *f, size_t *len)
{
    FILE *fp = fopen(f->log, "r");
    char *text;
    long n;

    XT_REQUIRE(fp != NULL, "cannot open %s: %s", f->log, strerror(errno));
    fseek(fp, 0, SEEK_END);
    n = ftell(fp);
    rewind(fp);
    text = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
    XT_REQUIRE(text != NULL, "out of memory");
    if (n > 0 && fread(text, 1, (size_t)n, fp) != (size_t)n)
        text[0] = '\0';
    fclose(fp);
    xt_defer_late(free, text);
    *len = (size_t)(n > 0 ? n : 0);
    return text;
}

/* Lines of text that contain needle ("\n": every line). */
static size_t count(const char *text, const char *needle)
{
    size_t n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; n++) {
        const char *eol = strchr(p, '\n');

        if (eol == NULL)
            break;
        p = eol + 1;
    }
    return n;
}

/* One refused WRITE (a wrong key) on a handshaken connection: one ACK
 * with ACCESS back. */
static void refused_write(fx_t *f, int fd, uint64_t key, uint64_t tag)
{
    xfer_wire_hdr_t h;

    hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, tag, key, f->t.addr,
             16, NULL, 16);
    XT_CHECK(hx_recv_hdr(fd, &h, HX_WAIT_MS) == 0 &&
                 h.type == XFER_WIRE_ACK &&
                 (int64_t)h.arg0 == XFER_ERR_ACCESS,
             "no refusal for a WRITE with a wrong key");
}

/* 10,000 refused frames over 100 connections, each ended by a protocol
 * violation: the log grows by no more than the overall cap allows for
 * the time it took, and says how much it held back. */
static void test_refused_flood(void)
{
    fx_t *f = fx_make();
    uint64_t t0 = xt_now_ms(), ms;
    size_t len, lines;
    char *text;

    for (unsigned c = 0; c < FRAMES / PER_CONN; c++) {
        int fd = hx_handshake(hx_connect_tcp(f->port, NULL), "noisy",
                              f->t.epoch);

        XT_REQUIRE(fd >= 0, "handshake %u failed", c);
        for (unsigned k = 0; k < PER_CONN; k++)
            hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, k,
                     f->t.key ^ 0x5555, f->t.addr, 16, NULL, 16);
        /* and a frame no target takes: the connection closes */
        hx_frame(fd, XFER_WIRE_ACK, 0, 0, 0, 0, 0, 0, NULL, 0);
        XT_CHECK(hx_closed(fd, HX_WAIT_MS), "connection %u not closed", c);
        close(fd);
    }
    ms = xt_now_ms() - t0;
    /* After a quiet second a site writes again, saying what it held. */
    xt_sleep_ms(1200);
    {
        int fd = hx_handshake(hx_connect_tcp(f->port, NULL), "noisy",
                              f->t.epoch);

        XT_REQUIRE(fd >= 0, "last handshake failed");
        refused_write(f, fd, f->t.key ^ 0x5555, 1);
        close(fd);
    }
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 1 << 20),
             "the good peer failed beside the noise");
    xt_sleep_ms(200);
    text = log_text(f, &len);
    lines = count(text, "\n");
    printf("%u refused frames in %llu ms: %zu log lines, %zu bytes\n",
           FRAMES, (unsigned long long)ms, lines, len);
    XT_CHECK(len <= (size_t)LOG_BYTES_PER_S * (ms / 1000 + 3),
             "%u refused frames in %llu ms wrote %zu bytes of log (cap "
             "%u bytes a second)",
             FRAMES, (unsigned long long)ms, len, LOG_BYTES_PER_S);
    XT_CHECK(lines < FRAMES / 10, "%zu log lines for %u refused frames",
             lines, FRAMES);
    XT_CHECK(strstr(text, "similar lines suppressed") != NULL,
             "the log does not say lines were held back:\n%.2000s", text);
    hx_target_canary(&f->t);
}

/* One refused frame is one warning line, not two. */
static void test_one_line_per_refusal(void)
{
    fx_t *f = fx_make();
    uint64_t bad = f->t.key ^ 0x0f0f0f0f;
    char needle[64], *text;
    size_t len;
    int fd;

    fd = hx_handshake(hx_connect_tcp(f->port, NULL), "once", f->t.epoch);
    XT_REQUIRE(fd >= 0, "handshake failed");
    refused_write(f, fd, bad, 1);
    close(fd);
    xt_sleep_ms(300);
    text = log_text(f, &len);
    snprintf(needle, sizeof needle, "%016" PRIx64, bad);
    XT_CHECK(count(text, needle) == 1, "a refused WRITE wrote %zu lines "
             "naming its key:\n%s", count(text, needle), text);
}

/* A HELLO name with a newline (or any control byte) is refused at the
 * handshake, and no line of the log starts with what it tried to forge;
 * a printable name still connects. */
static void test_forged_name(void)
{
    static const char *const names[] = {
        "evil\nxfer WARN [core]: forged",
        "evil\rxfer WARN [core]: forged",
        "evil\x1b[2Kxfer WARN [core]: forged",
        "evil\x7fxfer WARN [core]: forged",
    };
    fx_t *f = fx_make();
    char *text;
    size_t len;

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int fd = hx_connect_tcp(f->port, NULL);
        xfer_wire_hdr_t h;

        XT_REQUIRE(fd >= 0, "connect: %s", strerror(errno));
        hx_hello(fd, names[i], strlen(names[i]), f->t.epoch);
        /* try to make the target print the name: a refused frame */
        hx_frame(fd, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 1, f->t.key ^ 1,
                 f->t.addr, 16, NULL, 16);
        XT_CHECK(hx_recv_hdr(fd, &h, HX_WAIT_MS) < 0 ||
                     h.type != XFER_WIRE_HELLO_ACK || h.arg1 != 0,
                 "a HELLO name with byte 0x%02x was accepted",
                 (unsigned char)names[i][4]);
        XT_CHECK(hx_closed(fd, HX_WAIT_MS), "the connection stayed open");
        close(fd);
    }
    {
        int fd = hx_handshake(hx_connect_tcp(f->port, NULL),
                              "plain name, with 'quotes' and \\ too",
                              f->t.epoch);

        XT_CHECK(fd >= 0, "a printable HELLO name was refused");
        if (fd >= 0)
            close(fd);
    }
    XT_CHECK(hx_good_roundtrip(&f->g, 0, 4096), "good peer");
    xt_sleep_ms(300);
    text = log_text(f, &len);
    XT_CHECK(strstr(text, "\nxfer WARN [core]: forged") == NULL &&
                 strncmp(text, "xfer WARN [core]: forged", 24) != 0,
             "a peer forged a log line:\n%s", text);
    XT_CHECK(strchr(text, '\r') == NULL && strchr(text, '\x1b') == NULL &&
                 strchr(text, '\x7f') == NULL,
             "control bytes from a peer reached the log:\n%s", text);
    XT_CHECK(strstr(text, "evil\\x0axfer") != NULL,
             "the refusal does not show the name escaped:\n%s", text);
}

int main(int argc, char **argv)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_refused_flood),
        XT_TEST(test_one_line_per_refusal),
        XT_TEST(test_forged_name),
        XT_END,
    };
    static const xt_suite_t suites[] = {{"sec-logs", tests}};

    hx_main(argc, argv);
    /* The rate limits under test are the defaults. */
    unsetenv("XFER_LOG_RATE");
    unsetenv("XFER_LOG_LEVEL");
    return xt_run(argv[0], suites, 1);
}
