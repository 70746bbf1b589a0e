/* xfer-bench.c - bandwidth and latency of READ/WRITE over any backend: a
 * target and an initiator (forked, or on two hosts) sweep block/batch sizes. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long, getaddrinfo, MSG_NOSIGNAL */
#endif

#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xfer/xfer.h>

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

#define TARGET_NAME "xfer-bench-target"
#define INITIATOR_NAME "xfer-bench-initiator"

/* Blocks at least this large run num_iter / large_iter_factor times, so
 * a sweep up to 64M moves a bounded number of bytes. */
#define LARGE_BLOCK (1u << 20)

/* How long the initiator waits for the target to answer on the control
 * channel: failure must be an answer, not a hang. */
#define CTL_TIMEOUT_MS 60000

/* ------------------------------------------------------------------ */
/* Options: one table drives getopt_long, --help and the parsers, so a */
/* new option is one row plus one case.                                 */
/* ------------------------------------------------------------------ */

enum role { ROLE_LOCAL, ROLE_TARGET, ROLE_INITIATOR };

struct bench_opts {
    const char *backend;
    xfer_op_t op;
    size_t start_block, max_block;
    size_t start_batch, max_batch;
    long num_iter, warmup_iter, large_iter_factor;
    int check;
    int prepared;
    int progress_thread;
    int alloc_xfer;   /* buffers from xfer_mem_alloc (shareable memfds) */
    enum role role;
    const char *peer;
};

enum opt_id {
    OPT_HELP = 'h',
    OPT_BACKEND = 256,
    OPT_OP,
    OPT_START_BLOCK,
    OPT_MAX_BLOCK,
    OPT_START_BATCH,
    OPT_MAX_BATCH,
    OPT_NUM_ITER,
    OPT_WARMUP_ITER,
    OPT_LARGE_FACTOR,
    OPT_CHECK,
    OPT_PREPARED,
    OPT_PROGRESS_THREAD,
    OPT_ROLE,
    OPT_PEER,
    OPT_ALLOC,
    OPT_VERSION,
};

struct opt_def {
    const char *name;
    int id;
    const char *arg;  /* NULL: a flag */
    const char *dflt; /* shown by --help */
    const char *help;
};

static const struct opt_def opt_defs[] = {
    { "backend", OPT_BACKEND, "SPEC", "tcp",
      "backend spec, e.g. tcp or tcp:nodelay=1" },
    { "op", OPT_OP, "READ|WRITE", "WRITE", "operation the initiator posts" },
    { "start-block-size", OPT_START_BLOCK, "SIZE", "4K",
      "first block size (K, M, G: powers of 2)" },
    { "max-block-size", OPT_MAX_BLOCK, "SIZE", "64M",
      "last block size; sizes double from the first" },
    { "start-batch-size", OPT_START_BATCH, "N", "1",
      "first number of descriptors per request" },
    { "max-batch-size", OPT_MAX_BATCH, "N", "1",
      "last descriptors per request; doubling" },
    { "num-iter", OPT_NUM_ITER, "N", "1000",
      "measured posts per block and batch size" },
    { "warmup-iter", OPT_WARMUP_ITER, "N", "10",
      "posts before measuring, not reported" },
    { "large-block-iter-factor", OPT_LARGE_FACTOR, "N", "16",
      "blocks >= 1M run num-iter / N posts" },
    { "check-consistency", OPT_CHECK, NULL, "off",
      "verify every byte moved, every post" },
    { "prepared", OPT_PREPARED, NULL, "off",
      "create requests from prepared lists" },
    { "progress-thread", OPT_PROGRESS_THREAD, NULL, "off",
      "initiator uses a progress thread, not polling" },
    { "role", OPT_ROLE, "target|initiator", "both, forked",
      "run one side; the other is reached by TCP" },
    { "peer", OPT_PEER, "HOST:PORT", "-",
      "with --role: where the target listens" },
    { "alloc", OPT_ALLOC, "malloc|xfer", "malloc",
      "buffers from posix_memalign, or xfer_mem_alloc (memfd: uds maps "
      "them and copies with no system call)" },
    { "help", OPT_HELP, NULL, NULL, "print this help and exit" },
    { "version", OPT_VERSION, NULL, NULL, "print the version and exit" },
};

static void usage(FILE *out)
{
    size_t i;

    fprintf(out,
            "Usage: xfer-bench [OPTION]...\n"
            "Measure xfer READ/WRITE bandwidth and latency.  By default a\n"
            "target is forked locally and the two exchange metadata over a\n"
            "socket pair; every post of a request is timed to completion.\n\n");
    for (i = 0; i < COUNT_OF(opt_defs); i++) {
        const struct opt_def *d = &opt_defs[i];
        char left[64];

        snprintf(left, sizeof(left), "--%s%s%s", d->name, d->arg ? " " : "",
                 d->arg ? d->arg : "");
        fprintf(out, "  %-30s %s", left, d->help);
        if (d->dflt != NULL)
            fprintf(out, "%s(default: %s)",
                    33 + strlen(d->help) + strlen(d->dflt) + 12 > 79
                        ? "\n                                 " : " ",
                    d->dflt);
        fprintf(out, "\n");
    }
    fprintf(out,
            "\nIterations: blocks of 1M and more run num-iter divided by\n"
            "the large-block factor.  GB/s is 10^9 bytes moved divided by\n"
            "the time from the first measured post to the last completion;\n"
            "latency is that time divided by the posts.  Exit status: 0 on\n"
            "success, 1 on a failed run, 2 on a bad option.\n");
}

static int bad_option(const char *name, const char *arg, const char *why)
{
    fprintf(stderr, "xfer-bench: option --%s: %s '%s'; try --help.\n", name,
            why, arg);
    return -1;
}

/* Sizes in bytes, with K/M/G meaning powers of 2 as in the backend specs. */
static int parse_size(const char *name, const char *arg, size_t *out)
{
    unsigned long long v;
    unsigned shift = 0;
    char *end;

    errno = 0;
    if (arg[0] == '-' || arg[0] == '\0')
        return bad_option(name, arg, "expects a size, not");
    v = strtoull(arg, &end, 10);
    if (errno != 0 || end == arg)
        return bad_option(name, arg, "expects a size, not");
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end != '\0' || v == 0 || v > (SIZE_MAX >> shift))
        return bad_option(name, arg, "expects a positive size, not");
    *out = (size_t)v << shift;
    return 0;
}

static int parse_count(const char *name, const char *arg, long min, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min) {
        char why[64];

        snprintf(why, sizeof(why), "expects an integer >= %ld, not", min);
        return bad_option(name, arg, why);
    }
    *out = v;
    return 0;
}

static int parse_opt(struct bench_opts *o, int id, const char *name,
                     const char *arg)
{
    long v;

    switch (id) {
    case OPT_BACKEND: o->backend = arg; return 0;
    case OPT_OP:
        if (strcasecmp(arg, "READ") == 0)
            o->op = XFER_OP_READ;
        else if (strcasecmp(arg, "WRITE") == 0)
            o->op = XFER_OP_WRITE;
        else
            return bad_option(name, arg, "expects READ or WRITE, not");
        return 0;
    case OPT_START_BLOCK: return parse_size(name, arg, &o->start_block);
    case OPT_MAX_BLOCK: return parse_size(name, arg, &o->max_block);
    case OPT_START_BATCH:
        if (parse_count(name, arg, 1, &v))
            return -1;
        o->start_batch = (size_t)v;
        return 0;
    case OPT_MAX_BATCH:
        if (parse_count(name, arg, 1, &v))
            return -1;
        o->max_batch = (size_t)v;
        return 0;
    case OPT_NUM_ITER: return parse_count(name, arg, 1, &o->num_iter);
    case OPT_WARMUP_ITER: return parse_count(name, arg, 0, &o->warmup_iter);
    case OPT_LARGE_FACTOR:
        return parse_count(name, arg, 1, &o->large_iter_factor);
    case OPT_CHECK: o->check = 1; return 0;
    case OPT_PREPARED: o->prepared = 1; return 0;
    case OPT_PROGRESS_THREAD: o->progress_thread = 1; return 0;
    case OPT_ROLE:
        if (strcmp(arg, "target") == 0)
            o->role = ROLE_TARGET;
        else if (strcmp(arg, "initiator") == 0)
            o->role = ROLE_INITIATOR;
        else
            return bad_option(name, arg, "expects target or initiator, not");
        return 0;
    case OPT_PEER: o->peer = arg; return 0;
    case OPT_ALLOC:
        if (strcmp(arg, "xfer") == 0)
            o->alloc_xfer = 1;
        else if (strcmp(arg, "malloc") == 0)
            o->alloc_xfer = 0;
        else
            return bad_option(name, arg, "expects malloc or xfer, not");
        return 0;
    default: return -1;
    }
}

/* 0: run; 1: printed help or version, exit 0; -1: bad usage, exit 2. */
static int parse_options(int argc, char **argv, struct bench_opts *o)
{
    struct option longopts[COUNT_OF(opt_defs) + 1];
    size_t i;
    int c, idx;

    for (i = 0; i < COUNT_OF(opt_defs); i++) {
        longopts[i].name = opt_defs[i].name;
        longopts[i].has_arg = opt_defs[i].arg ? required_argument : no_argument;
        longopts[i].flag = NULL;
        longopts[i].val = opt_defs[i].id;
    }
    memset(&longopts[i], 0, sizeof(longopts[i]));

    opterr = 0; /* one sentence of our own instead */
    while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
        if (c == OPT_HELP) {
            usage(stdout);
            return 1;
        }
        if (c == OPT_VERSION) {
            printf("xfer-bench (libxfer %s)\n", xfer_version());
            return 1;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "xfer-bench: unknown option or missing argument "
                    "in '%s'; try --help.\n", argv[optind - 1]);
            return -1;
        }
        if (parse_opt(o, c, longopts[idx].name, optarg))
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "xfer-bench: unexpected argument '%s'; try --help.\n",
                argv[optind]);
        return -1;
    }
    if (o->start_block > o->max_block) {
        fprintf(stderr, "xfer-bench: option --start-block-size must not "
                "exceed --max-block-size.\n");
        return -1;
    }
    if (o->start_batch > o->max_batch) {
        fprintf(stderr, "xfer-bench: option --start-batch-size must not "
                "exceed --max-batch-size.\n");
        return -1;
    }
    if (o->max_block > SIZE_MAX / o->max_batch) {
        fprintf(stderr, "xfer-bench: option --max-batch-size times "
                "--max-block-size overflows the buffer size.\n");
        return -1;
    }
    if ((o->role == ROLE_LOCAL) != (o->peer == NULL)) {
        fprintf(stderr, "xfer-bench: option --%s needs --%s.\n",
                o->peer ? "peer" : "role", o->peer ? "role" : "peer");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Errors: the first failure is kept as one sentence and reported once. */
/* ------------------------------------------------------------------ */

static char err_msg[1024];

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    va_list ap;

    if (err_msg[0] != '\0')
        return -1; /* what followed the first failure is only its echo */
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_xfer(xfer_status_t st, const char *what)
{
    return fail("%s: %s (%s)", what, xfer_strerror(st), xfer_last_error());
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Control channel: length-framed messages on a socket (a socket pair  */
/* when forked, TCP with --role).  Integers are big-endian so the two  */
/* sides may be different machines.                                    */
/* ------------------------------------------------------------------ */

enum msg_type {
    MSG_PARAMS = 1, /* I->T: u64 buffer length, u64 flags */
    MSG_MD,         /* T->I: u64 buffer address, u64 length, metadata blob */
    MSG_FILL,       /* I->T: u64 seed, u64 length: fill for a READ check */
    MSG_ACK,        /* T->I: "" or why a check failed */
    MSG_DONE,       /* I->T: finished, exit */
    MSG_ERROR,      /* either way: text, then the sender gives up */
};

#define FLAG_WRITE_CHECK 1u /* verify at the target on notification */
#define MSG_MAX ((size_t)XFER_MD_MAX + 64)
#define CTL_HEAD_MAX 16

static void put_u64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static int io_full(int fd, void *buf, size_t len, int writing, int timeout_ms)
{
    char *p = buf;

    while (len > 0) {
        struct pollfd pfd = { fd, writing ? POLLOUT : POLLIN, 0 };
        ssize_t n;
        int r = poll(&pfd, 1, timeout_ms);

        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0)
            return fail("control channel: peer silent for %d ms",
                        timeout_ms);
        if (r < 0)
            return fail("control channel: %s", strerror(errno));
        n = writing ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return fail("control channel: %s", strerror(errno));
        if (n == 0)
            return fail("control channel: peer closed it");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* head (hlen bytes) and body travel as one message. */
static int ctl_send(int fd, enum msg_type type, const void *head, size_t hlen,
                    const void *body, size_t blen)
{
    unsigned char hdr[8 + CTL_HEAD_MAX];
    uint64_t len = hlen + blen;

    /* Frame header and small head leave in one send: with a body it is
     * two, and TCP_NODELAY keeps Nagle from holding the second back. */
    if (hlen > CTL_HEAD_MAX)
        return fail("control message head of %zu bytes", hlen);
    put_u64(hdr, ((uint64_t)type << 32) | len);
    if (hlen)
        memcpy(hdr + 8, head, hlen);
    if (io_full(fd, hdr, 8 + hlen, 1, CTL_TIMEOUT_MS) ||
        (blen && io_full(fd, (void *)body, blen, 1, CTL_TIMEOUT_MS)))
        return -1;
    return 0;
}

static int ctl_send_text(int fd, enum msg_type type, const char *text)
{
    return ctl_send(fd, type, NULL, 0, text, strlen(text));
}

/* Receive one message; *body is malloc'd with a NUL after it. */
static int ctl_recv(int fd, int timeout_ms, enum msg_type *type,
                    unsigned char **body, size_t *len)
{
    unsigned char hdr[8];
    uint64_t v;

    *body = NULL;
    if (io_full(fd, hdr, sizeof(hdr), 0, timeout_ms))
        return -1;
    v = get_u64(hdr);
    *type = (enum msg_type)(v >> 32);
    *len = (size_t)(v & 0xffffffffu);
    if (*len > MSG_MAX)
        return fail("control channel: %zu-byte message is too long", *len);
    *body = malloc(*len + 1);
    if (*body == NULL)
        return fail("control channel: out of memory");
    if (io_full(fd, *body, *len, 0, CTL_TIMEOUT_MS)) {
        free(*body);
        *body = NULL;
        return -1;
    }
    (*body)[*len] = '\0';
    return 0;
}

/* Wait for a given message type; MSG_ERROR from the peer ends the run. */
static int ctl_expect(int fd, enum msg_type want, unsigned char **body,
                      size_t *len)
{
    enum msg_type type;

    if (ctl_recv(fd, CTL_TIMEOUT_MS, &type, body, len))
        return -1;
    if (type == want)
        return 0;
    if (type == MSG_ERROR)
        fail("target failed: %s", (char *)*body);
    else
        fail("control channel: message %d where %d was expected", (int)type,
             (int)want);
    free(*body);
    *body = NULL;
    return -1;
}

/* ------------------------------------------------------------------ */
/* Data pattern for --check-consistency: a function of the seed and    */
/* the byte offset, defined byte by byte so both ends agree on any     */
/* host.  A new seed per post catches stale data.                      */
/* ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static void pattern_fill(unsigned char *p, size_t len, uint64_t seed)
{
    size_t i, k;

    /* Whole words at a time: the pattern's bytes are the word's
     * little-endian bytes, so a verify pass runs at memory speed. */
    for (i = 0; i + 8 <= len; i += 8) {
        uint64_t w = htole64(mix64(seed + i / 8));

        memcpy(p + i, &w, 8);
    }
    if (i < len) {
        uint64_t w = mix64(seed + i / 8);

        for (k = 0; i + k < len; k++)
            p[i + k] = (unsigned char)(w >> (8 * k));
    }
}

/* Offset of the first wrong byte, or len when all are right. */
static size_t pattern_check(const unsigned char *p, size_t len, uint64_t seed)
{
    size_t i, k;

    for (i = 0; i < len; i += 8) {
        uint64_t w = mix64(seed + i / 8), le = htole64(w);

        if (i + 8 <= len && memcmp(p + i, &le, 8) == 0)
            continue;
        for (k = 0; k < 8 && i + k < len; k++)
            if (p[i + k] != (unsigned char)(w >> (8 * k)))
                return i + k;
    }
    return len;
}

static uint64_t pattern_seed(size_t block, size_t batch, long iter)
{
    return mix64(((uint64_t)block << 24) ^ ((uint64_t)batch << 8)) +
           (uint64_t)iter * 0x10000000u;
}

/* Registered buffers are page aligned and touched once, so page faults
 * are not measured. */
static unsigned char *buffer_alloc(xfer_agent_t *agent, int use_xfer,
                                   size_t len)
{
    void *p = NULL;

    if (use_xfer) {
        if (xfer_mem_alloc(agent, len, 0, &p) != XFER_OK)
            return NULL;
    } else if (posix_memalign(&p, 4096, len) != 0) {
        return NULL;
    }
    memset(p, 0, len);
    return p;
}

static void buffer_free(xfer_agent_t *agent, int use_xfer, void *p)
{
    if (use_xfer)
        xfer_mem_free(agent, p);
    else
        free(p);
}

/* ------------------------------------------------------------------ */
/* Target: exposes one buffer, fills or verifies it when asked, exits  */
/* when the initiator says it is done.                                 */
/* ------------------------------------------------------------------ */

struct target {
    int fd;
    unsigned char *buf;
    size_t len;
    int failed; /* set by the notification callback */
};

/* A WRITE check: the notification is delivered only after the data of
 * its WRITE is visible, so the buffer must already hold the pattern. */
static void target_on_notif(void *arg, const char *from, const void *msg,
                            size_t len)
{
    struct target *t = arg;
    char text[128], reply[160] = "";
    unsigned long long seed, n;
    size_t bad;

    if (len >= sizeof(text))
        len = sizeof(text) - 1;
    memcpy(text, msg, len);
    text[len] = '\0';
    if (sscanf(text, "xfer-bench check %llu %llu", &seed, &n) != 2)
        return; /* not ours */
    if (n > t->len)
        snprintf(reply, sizeof(reply), "check of %llu bytes exceeds the "
                 "%zu-byte buffer", n, t->len);
    else if ((bad = pattern_check(t->buf, (size_t)n, seed)) != n)
        snprintf(reply, sizeof(reply), "WRITE data wrong at byte %zu of %llu "
                 "when its notification arrived", bad, n);
    if (ctl_send_text(t->fd, MSG_ACK, reply))
        t->failed = 1;
}

static int target_serve(struct target *t, xfer_agent_t *agent, int check)
{
    struct pollfd pfd[2] = { { t->fd, POLLIN, 0 }, { -1, POLLIN, 0 } };
    xfer_status_t st;

    /* While checking, sleep on the control socket and on the agent's
     * notification fd together (the progress thread fills the queue). */
    if (check && (st = xfer_notif_fd(agent, &pfd[1].fd)) != XFER_OK)
        return fail_xfer(st, "notification fd");
    for (;;) {
        unsigned char *body;
        enum msg_type type;
        size_t len;
        int r;

        r = poll(pfd, check ? 2 : 1, -1);
        if (r < 0 && errno != EINTR)
            return fail("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if (check && (pfd[1].revents & POLLIN)) {
            st = xfer_notif_drain(agent, target_on_notif, t, NULL);
            if (st < 0)
                return fail_xfer(st, "drain notifications");
            if (t->failed)
                return -1;
        }
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (ctl_recv(t->fd, CTL_TIMEOUT_MS, &type, &body, &len))
            return -1;
        switch (type) {
        case MSG_FILL:
            if (len != 16 || get_u64(body + 8) > t->len) {
                free(body);
                return fail("bad FILL message");
            }
            pattern_fill(t->buf, (size_t)get_u64(body + 8), get_u64(body));
            free(body);
            if (ctl_send_text(t->fd, MSG_ACK, ""))
                return -1;
            break;
        case MSG_DONE:
            free(body);
            return 0;
        case MSG_ERROR:
            /* The initiator reported its failure; ours is a clean exit. */
            free(body);
            return 0;
        default:
            free(body);
            return fail("unexpected message %d from the initiator", (int)type);
        }
    }
}

static int run_target(int fd, const struct bench_opts *o)
{
    struct target t = { fd, NULL, 0, 0 };
    xfer_agent_opts_t aopts;
    xfer_agent_t *agent = NULL;
    xfer_mem_t *mem = NULL;
    unsigned char *body = NULL, head[16];
    char *blob = NULL;
    size_t len, blob_len;
    uint64_t flags;
    xfer_status_t st;
    int rc = -1;

    if (ctl_expect(fd, MSG_PARAMS, &body, &len))
        goto out;
    if (len != 16 || get_u64(body) == 0 || get_u64(body) > SIZE_MAX) {
        fail("bad PARAMS message");
        goto out;
    }
    t.len = (size_t)get_u64(body);
    flags = get_u64(body + 8);

    /* The target only serves; its progress thread sleeps on the event
     * fd between incoming operations. */
    xfer_agent_opts_init(&aopts);
    aopts.name = TARGET_NAME;
    aopts.progress_thread = 1;
    if ((st = xfer_agent_create(&aopts, &agent)) != XFER_OK) {
        fail_xfer(st, "create target agent");
        goto out;
    }
    if ((st = xfer_backend_add(agent, o->backend, NULL)) != XFER_OK) {
        fail_xfer(st, o->backend);
        goto out;
    }
    t.buf = buffer_alloc(agent, o->alloc_xfer, t.len);
    if (t.buf == NULL) {
        fail("cannot allocate a %zu-byte buffer%s", t.len,
             o->alloc_xfer ? " with xfer_mem_alloc" : "");
        goto out;
    }
    xfer_desc_t desc = { (uintptr_t)t.buf, t.len, 0 };
    xfer_dlist_t list = { XFER_MEM_DRAM, 1, &desc };
    if ((st = xfer_mem_register(agent, &list, NULL, &mem)) != XFER_OK) {
        fail_xfer(st, "register target buffer");
        goto out;
    }
    if ((st = xfer_md_get(agent, XFER_MD_ALL, NULL, 0, &blob, &blob_len)) !=
        XFER_OK) {
        fail_xfer(st, "target metadata");
        goto out;
    }
    put_u64(head, (uint64_t)(uintptr_t)t.buf);
    put_u64(head + 8, t.len);
    if (ctl_send(fd, MSG_MD, head, sizeof(head), blob, blob_len))
        goto out;
    rc = target_serve(&t, agent, (flags & FLAG_WRITE_CHECK) != 0);
out:
    if (rc != 0 && err_msg[0] != '\0' && ctl_send_text(fd, MSG_ERROR, err_msg))
        fprintf(stderr, "xfer-bench (target): %s\n", err_msg);
    free(body);
    xfer_free(blob);
    if (mem != NULL)
        xfer_mem_deregister(agent, mem);
    if (t.buf != NULL)
        buffer_free(agent, o->alloc_xfer, t.buf);
    xfer_agent_destroy(agent);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Results: one row per block and batch size.  Columns are a table so  */
/* new ones (percentiles, message rate) are one row each.              */
/* ------------------------------------------------------------------ */

struct result {
    size_t block, batch;
    long iters;
    uint64_t ns; /* first measured post to last completion */
    uint64_t med_ns; /* median of the posts, each timed to completion */
};

static double result_bytes(const struct result *r)
{
    return (double)r->block * (double)r->batch * (double)r->iters;
}

static void col_block(char *s, size_t n, const struct result *r)
{
    static const char units[] = "BKMGT";
    size_t v = r->block;
    int u = 0;

    while (v >= 1024 && v % 1024 == 0 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(s, n, "%zu", v);
    else
        snprintf(s, n, "%zu%c", v, units[u]);
}

static void col_batch(char *s, size_t n, const struct result *r)
{
    snprintf(s, n, "%zu", r->batch);
}

static void col_iters(char *s, size_t n, const struct result *r)
{
    snprintf(s, n, "%ld", r->iters);
}

static void col_gbps(char *s, size_t n, const struct result *r)
{
    snprintf(s, n, "%.3f", result_bytes(r) / (double)r->ns);
}

static void col_lat(char *s, size_t n, const struct result *r)
{
    snprintf(s, n, "%.2f", (double)r->ns / 1e3 / (double)r->iters);
}

static void col_med(char *s, size_t n, const struct result *r)
{
    snprintf(s, n, "%.2f", (double)r->med_ns / 1e3);
}

static const struct column {
    const char *header;
    int width;
    void (*format)(char *s, size_t n, const struct result *r);
} columns[] = {
    { "block_size", 11, col_block },
    { "batch_size", 11, col_batch },
    { "iters", 8, col_iters },
    { "GB/s", 10, col_gbps },
    { "avg_lat_us", 12, col_lat },
    { "med_lat_us", 12, col_med },
};

static void print_header_row(void)
{
    size_t i;

    for (i = 0; i < COUNT_OF(columns); i++)
        printf("%-*s", columns[i].width, columns[i].header);
    printf("\n");
}

static void print_row(const struct result *r)
{
    char cell[64];
    size_t i;

    for (i = 0; i < COUNT_OF(columns); i++) {
        columns[i].format(cell, sizeof(cell), r);
        printf("%-*s", columns[i].width, cell);
    }
    printf("\n");
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Initiator                                                           */
/* ------------------------------------------------------------------ */

struct initiator {
    const struct bench_opts *o;
    int fd;
    xfer_agent_t *agent;
    char peer[XFER_NAME_MAX + 1];
    unsigned char *buf;   /* local buffer, max_block * max_batch */
    uint64_t raddr;       /* target buffer */
    xfer_desc_t *ldescs;  /* max_batch each */
    xfer_desc_t *rdescs;
    size_t *idx;          /* 0, 1, ... for prepared requests */
};

static long iters_for(const struct bench_opts *o, size_t block)
{
    long n = o->num_iter;

    if (block >= LARGE_BLOCK)
        n /= o->large_iter_factor;
    return n > 0 ? n : 1;
}

/* Poll to completion: XFER_OK means the data is at the destination, the
 * only moment bandwidth may be measured.  Without a progress thread the
 * status calls are what drives the transfer. */
static xfer_status_t wait_req(xfer_req_t *req, xfer_status_t st)
{
    while (st == XFER_IN_PROG)
        st = xfer_req_status(req);
    return st;
}

/* One post, with the consistency work before and after it. */
static int post_once(struct initiator *in, xfer_req_t *req, size_t block,
                     size_t batch, long iter)
{
    size_t len = block * batch, bad;
    uint64_t seed = pattern_seed(block, batch, iter);
    unsigned char head[16], *body;
    char notif[64];
    size_t notif_len = 0, blen;
    xfer_status_t st;

    if (in->o->check && in->o->op == XFER_OP_WRITE) {
        pattern_fill(in->buf, len, seed);
        notif_len = (size_t)snprintf(notif, sizeof(notif),
                                     "xfer-bench check %" PRIu64 " %zu", seed,
                                     len);
    } else if (in->o->check) {
        put_u64(head, seed);
        put_u64(head + 8, len);
        if (ctl_send(in->fd, MSG_FILL, head, sizeof(head), NULL, 0) ||
            ctl_expect(in->fd, MSG_ACK, &body, &blen))
            return -1;
        free(body);
        memset(in->buf, 0, len); /* so a READ that moved nothing fails */
    }

    st = xfer_req_post(req, notif_len ? notif : NULL, notif_len);
    st = wait_req(req, st);
    if (st != XFER_OK)
        return fail_xfer(st, in->o->op == XFER_OP_WRITE ? "WRITE" : "READ");

    if (in->o->check && in->o->op == XFER_OP_WRITE) {
        if (ctl_expect(in->fd, MSG_ACK, &body, &blen))
            return -1;
        if (blen != 0) {
            fail("block %zu batch %zu %s %ld: %s", block, batch,
                 iter < 0 ? "warmup post" : "post",
                 iter < 0 ? iter + in->o->warmup_iter : iter, (char *)body);
            free(body);
            return -1;
        }
        free(body);
    } else if (in->o->check &&
               (bad = pattern_check(in->buf, len, seed)) != len) {
        return fail("block %zu batch %zu %s %ld: READ data wrong at byte "
                    "%zu of %zu", block, batch,
                    iter < 0 ? "warmup post" : "post",
                    iter < 0 ? iter + in->o->warmup_iter : iter, bad, len);
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* One row of the table: a request created once and reposted. */
static int run_point(struct initiator *in, size_t block, size_t batch,
                     xfer_prep_t *lprep, xfer_prep_t *rprep)
{
    const struct bench_opts *o = in->o;
    struct result r = { block, batch, iters_for(o, block), 0, 0 };
    uint64_t *lat = calloc((size_t)r.iters, sizeof(*lat)), tp = 0;
    xfer_dlist_t local = { XFER_MEM_DRAM, batch, in->ldescs };
    xfer_dlist_t remote = { XFER_MEM_DRAM, batch, in->rdescs };
    xfer_req_opts_t ropts;
    xfer_req_t *req = NULL;
    xfer_status_t st;
    uint64_t t0 = 0;
    long i;
    int rc = -1;

    if (lat == NULL)
        return fail("cannot allocate %ld latency samples", r.iters);
    xfer_req_opts_init(&ropts);
    if (o->prepared)
        st = xfer_req_create_prepped(in->agent, o->op, lprep, in->idx, rprep,
                                     in->idx, batch, &ropts, &req);
    else
        st = xfer_req_create(in->agent, o->op, &local, &remote, in->peer,
                             &ropts, &req);
    if (st != XFER_OK) {
        free(lat);
        return fail_xfer(st, "create request");
    }

    for (i = -o->warmup_iter; i < r.iters; i++) {
        if (i == 0)
            t0 = tp = now_ns();
        if (post_once(in, req, block, batch, i))
            goto out;
        if (i >= 0) {
            uint64_t t = now_ns();

            lat[i] = t - tp;
            tp = t;
        }
    }
    r.ns = now_ns() - t0;
    if (r.ns == 0)
        r.ns = 1;
    qsort(lat, (size_t)r.iters, sizeof(*lat), cmp_u64);
    r.med_ns = lat[r.iters / 2];
    print_row(&r);
    rc = 0;
out:
    free(lat);
    if ((st = xfer_req_release(req)) != XFER_OK && rc == 0)
        rc = fail_xfer(st, "release request");
    return rc;
}

/* Descriptors of one block size: entry i is the i-th block of each
 * buffer, so prepared lists are built once per block size. */
static int run_block(struct initiator *in, size_t block)
{
    const struct bench_opts *o = in->o;
    xfer_prep_t *lprep = NULL, *rprep = NULL;
    xfer_status_t st;
    size_t i, batch;
    int rc = 0;

    for (i = 0; i < o->max_batch; i++) {
        in->ldescs[i] = (xfer_desc_t){ (uintptr_t)in->buf + i * block, block,
                                       0 };
        in->rdescs[i] = (xfer_desc_t){ (uintptr_t)(in->raddr + i * block),
                                       block, 0 };
    }
    if (o->prepared) {
        xfer_dlist_t local = { XFER_MEM_DRAM, o->max_batch, in->ldescs };
        xfer_dlist_t remote = { XFER_MEM_DRAM, o->max_batch, in->rdescs };

        if ((st = xfer_prep_create(in->agent, NULL, &local, &lprep)) !=
            XFER_OK)
            return fail_xfer(st, "prepare local list");
        if ((st = xfer_prep_create(in->agent, in->peer, &remote, &rprep)) !=
            XFER_OK) {
            xfer_prep_release(lprep);
            return fail_xfer(st, "prepare remote list");
        }
    }
    for (batch = o->start_batch; rc == 0 && batch <= o->max_batch;
         batch *= 2) {
        rc = run_point(in, block, batch, lprep, rprep);
        if (batch > o->max_batch / 2)
            break;
    }
    if (lprep != NULL && (st = xfer_prep_release(lprep)) != XFER_OK &&
        rc == 0)
        rc = fail_xfer(st, "release local prepared list");
    if (rprep != NULL && (st = xfer_prep_release(rprep)) != XFER_OK &&
        rc == 0)
        rc = fail_xfer(st, "release remote prepared list");
    return rc;
}

static void print_banner(const struct bench_opts *o)
{
    printf("# xfer-bench, libxfer %s: backend %s, op %s, requests from %s, "
           "initiator progress by %s\n", xfer_version(), o->backend,
           o->op == XFER_OP_WRITE ? "WRITE" : "READ",
           o->prepared ? "prepared lists" : "descriptor lists",
           o->progress_thread ? "thread" : "polling");
    printf("# %ld posts per point (%ld for blocks >= 1M), %ld warmup; "
           "GB/s = 10^9 B/s%s\n", o->num_iter,
           iters_for(o, LARGE_BLOCK), o->warmup_iter,
           o->check ? "; --check-consistency: timings include verification"
                    : "");
}

static int run_initiator(int fd, const struct bench_opts *o)
{
    struct initiator in = { .o = o, .fd = fd };
    size_t buf_len = o->max_block * o->max_batch, i, blen;
    xfer_agent_opts_t aopts;
    xfer_mem_t *mem = NULL;
    unsigned char head[16], *body = NULL;
    xfer_status_t st;
    size_t block;
    int rc = -1;

    in.ldescs = calloc(o->max_batch, sizeof(*in.ldescs));
    in.rdescs = calloc(o->max_batch, sizeof(*in.rdescs));
    in.idx = calloc(o->max_batch, sizeof(*in.idx));
    if (in.ldescs == NULL || in.rdescs == NULL || in.idx == NULL) {
        fail("cannot allocate %zu descriptors", o->max_batch);
        goto out;
    }
    for (i = 0; i < o->max_batch; i++)
        in.idx[i] = i;

    put_u64(head, buf_len);
    put_u64(head + 8, o->check && o->op == XFER_OP_WRITE ? FLAG_WRITE_CHECK
                                                         : 0);
    if (ctl_send(fd, MSG_PARAMS, head, sizeof(head), NULL, 0) ||
        ctl_expect(fd, MSG_MD, &body, &blen))
        goto out;
    if (blen < 16 || get_u64(body + 8) < buf_len) {
        fail("target sent a bad buffer description");
        goto out;
    }
    in.raddr = get_u64(body);

    xfer_agent_opts_init(&aopts);
    aopts.name = INITIATOR_NAME;
    aopts.progress_thread = o->progress_thread;
    if ((st = xfer_agent_create(&aopts, &in.agent)) != XFER_OK) {
        fail_xfer(st, "create initiator agent");
        goto out;
    }
    if ((st = xfer_backend_add(in.agent, o->backend, NULL)) != XFER_OK) {
        fail_xfer(st, o->backend);
        goto out;
    }
    in.buf = buffer_alloc(in.agent, o->alloc_xfer, buf_len);
    if (in.buf == NULL) {
        fail("cannot allocate a %zu-byte buffer%s", buf_len,
             o->alloc_xfer ? " with xfer_mem_alloc" : "");
        goto out;
    }
    xfer_desc_t desc = { (uintptr_t)in.buf, buf_len, 0 };
    xfer_dlist_t list = { XFER_MEM_DRAM, 1, &desc };
    if ((st = xfer_mem_register(in.agent, &list, NULL, &mem)) != XFER_OK) {
        fail_xfer(st, "register initiator buffer");
        goto out;
    }
    if ((st = xfer_md_load(in.agent, body + 16, blen - 16, in.peer,
                           sizeof(in.peer))) != XFER_OK) {
        fail_xfer(st, "load target metadata");
        goto out;
    }

    print_banner(o);
    print_header_row();
    for (block = o->start_block; block <= o->max_block; block *= 2) {
        if (run_block(&in, block))
            goto out;
        if (block > o->max_block / 2)
            break;
    }
    rc = 0;
out:
    if (rc == 0)
        rc = ctl_send(fd, MSG_DONE, NULL, 0, NULL, 0);
    else
        ctl_send_text(fd, MSG_ERROR, err_msg); /* lets the target exit */
    free(body);
    if (mem != NULL)
        xfer_mem_deregister(in.agent, mem);
    if (in.buf != NULL)
        buffer_free(in.agent, o->alloc_xfer, in.buf);
    xfer_agent_destroy(in.agent);
    free(in.ldescs);
    free(in.rdescs);
    free(in.idx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Running the two sides                                               */
/* ------------------------------------------------------------------ */

/* Fork before any agent exists: a child of a threaded process may only
 * call async-signal-safe functions. */
static int run_local(const struct bench_opts *o)
{
    int sv[2], status, rc;
    pid_t pid;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        fprintf(stderr, "xfer-bench: socketpair: %s\n", strerror(errno));
        return 1;
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "xfer-bench: fork: %s\n", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return 1;
    }
    if (pid == 0) {
        close(sv[0]);
        rc = run_target(sv[1], o);
        close(sv[1]);
        fflush(stdout);
        _exit(rc == 0 ? 0 : 1);
    }
    close(sv[1]);
    rc = run_initiator(sv[0], o);
    if (rc != 0)
        fprintf(stderr, "xfer-bench: %s\n", err_msg);
    close(sv[0]); /* EOF also tells the target to stop */

    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            fprintf(stderr, "xfer-bench: waitpid: %s\n", strerror(errno));
            return 1;
        }
    if (WIFEXITED(status)) {
        printf("# target exited with status %d\n", WEXITSTATUS(status));
        if (WEXITSTATUS(status) != 0)
            rc = -1;
    } else {
        printf("# target killed by signal %d\n",
               WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        rc = -1;
    }
    return rc == 0 ? 0 : 1;
}

/* --role: the control channel is one TCP connection; the target listens
 * at --peer, the initiator connects there (retrying while it starts). */
static int tcp_channel(const struct bench_opts *o)
{
    struct addrinfo hints, *res = NULL, *ai;
    char host[256], *colon;
    int fd = -1, lfd = -1, err, one = 1, tries;
    int target = o->role == ROLE_TARGET;

    colon = strrchr(o->peer, ':');
    if (colon == NULL || colon[1] == '\0' ||
        (size_t)(colon - o->peer) >= sizeof(host)) {
        fprintf(stderr, "xfer-bench: option --peer expects HOST:PORT, not "
                "'%s'.\n", o->peer);
        return -2;
    }
    memcpy(host, o->peer, (size_t)(colon - o->peer));
    host[colon - o->peer] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = target ? AI_PASSIVE : 0;
    err = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (err != 0) {
        fprintf(stderr, "xfer-bench: %s: %s\n", o->peer, gai_strerror(err));
        return -1;
    }
    for (tries = 0; fd < 0 && tries < (target ? 1 : 100); tries++) {
        for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
            int s = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);

            if (s < 0)
                continue;
            if (target) {
                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                if (bind(s, ai->ai_addr, ai->ai_addrlen) == 0 &&
                    listen(s, 1) == 0) {
                    lfd = s;
                    break;
                }
            } else if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0) {
                fd = s;
                break;
            }
            close(s);
        }
        if (target && lfd >= 0) {
            fprintf(stderr, "xfer-bench: target listening on %s\n", o->peer);
            while ((fd = accept(lfd, NULL, NULL)) < 0 && errno == EINTR)
                ;
            close(lfd);
            break;
        }
        if (fd < 0 && !target)
            usleep(100000); /* the target may not listen yet */
    }
    freeaddrinfo(res);
    if (fd >= 0) /* --check-consistency does a round trip per post */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd < 0)
        fprintf(stderr, "xfer-bench: cannot %s %s: %s\n",
                target ? "listen on" : "connect to", o->peer, strerror(errno));
    return fd;
}

static int run_role(const struct bench_opts *o)
{
    int fd = tcp_channel(o), rc;

    if (fd == -2)
        return 2;
    if (fd < 0)
        return 1;
    if (o->role == ROLE_TARGET)
        rc = run_target(fd, o);
    else
        rc = run_initiator(fd, o);
    if (rc != 0 && err_msg[0] != '\0')
        fprintf(stderr, "xfer-bench: %s\n", err_msg);
    close(fd);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct bench_opts o = {
        .backend = "tcp",
        .op = XFER_OP_WRITE,
        .start_block = 4u << 10,
        .max_block = 64u << 20,
        .start_batch = 1,
        .max_batch = 1,
        .num_iter = 1000,
        .warmup_iter = 10,
        .large_iter_factor = 16,
        .role = ROLE_LOCAL,
    };
    int r = parse_options(argc, argv, &o);

    if (r != 0)
        return r > 0 ? 0 : 2;
    /* A peer that vanishes must be an error from send(), not a signal. */
    signal(SIGPIPE, SIG_IGN);
    return o.role == ROLE_LOCAL ? run_local(&o) : run_role(&o);
}
