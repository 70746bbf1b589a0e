/* hostile.c - the security tests' raw stream client (frames built by hand from
 * docs/wire-tcp.md), their target agent in a child process, and the good peer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/security/hostile.h"

#define GUARD 4096u
#define CANARY 0xc5u

/* ---- raw client ------------------------------------------------------ */

static int connect_tcp(unsigned port, const char *src, int async)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC |
                                 (async ? SOCK_NONBLOCK : 0), 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    if (src != NULL) {
        if (inet_pton(AF_INET, src, &a.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            close(fd);
            return -1;
        }
    }
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 &&
        !(async && errno == EINPROGRESS)) {
        int e = errno;

        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int hx_connect_tcp(unsigned port, const char *src)
{
    return connect_tcp(port, src, 0);
}

int hx_connect_tcp_async(unsigned port, const char *src)
{
    return connect_tcp(port, src, 1);
}

int hx_connect_uds(const char *path)
{
    struct sockaddr_un a;
    socklen_t sl;
    size_t n = strlen(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (n >= sizeof a.sun_path) {
        close(fd);
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(a.sun_path, path, n);
    if (path[0] == '@') {
        a.sun_path[0] = '\0';
        sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    if (connect(fd, (struct sockaddr *)&a, sl) < 0) {
        int e = errno;

        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void hx_hdr(void *out, uint8_t type, uint8_t flags, uint32_t seg,
            uint64_t tag, uint64_t arg0, uint64_t arg1, uint64_t len)
{
    xfer_wire_hdr_t h = {type, flags, 0, seg, tag, arg0, arg1, len};

    xfer_wire_encode((xfer_wire_hdr_t *)out, &h);
}

int hx_send(int fd, const void *buf, size_t len, unsigned timeout_ms)
{
    const uint8_t *b = buf;

    while (len) {
        struct pollfd p = {fd, POLLOUT, 0};
        ssize_t k;
        int r = poll(&p, 1, timeout_ms ? (int)timeout_ms : -1);

        if (r < 0 && errno == EINTR)
            continue;
        if (r != 1)
            return -1;
        k = send(fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k <= 0)
            return -1;
        b += k;
        len -= (size_t)k;
    }
    return 0;
}

int hx_frame(int fd, uint8_t type, uint8_t flags, uint32_t seg, uint64_t tag,
             uint64_t arg0, uint64_t arg1, uint64_t len, const void *pay,
             size_t pay_len)
{
    uint8_t *b = malloc(XFER_WIRE_HDR_SIZE + pay_len);
    int r;

    if (b == NULL)
        return -1;
    hx_hdr(b, type, flags, seg, tag, arg0, arg1, len);
    if (pay != NULL)
        memcpy(b + XFER_WIRE_HDR_SIZE, pay, pay_len);
    else
        for (size_t k = 0; k < pay_len; k++)
            b[XFER_WIRE_HDR_SIZE + k] = (uint8_t)(0x5a + k);
    r = hx_send(fd, b, XFER_WIRE_HDR_SIZE + pay_len, HX_WAIT_MS);
    free(b);
    return r;
}

int hx_hello(int fd, const char *name, size_t name_len, uint64_t epoch)
{
    return hx_frame(fd, XFER_WIRE_HELLO, 0, XFER_WIRE_VERSION,
                    XFER_WIRE_MAGIC, 7, epoch, name_len, name, name_len);
}

static int recv_all(int fd, void *buf, size_t n, unsigned timeout_ms)
{
    uint8_t *b = buf;
    size_t got = 0;

    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t k;
        int r = poll(&p, 1, (int)timeout_ms);

        if (r < 0 && errno == EINTR)
            continue;
        if (r != 1)
            return -1;
        k = recv(fd, b + got, n - got, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

int hx_recv_hdr(int fd, xfer_wire_hdr_t *h, unsigned timeout_ms)
{
    uint8_t b[XFER_WIRE_HDR_SIZE];

    do {
        if (recv_all(fd, b, sizeof b, timeout_ms) < 0)
            return -1;
        xfer_wire_decode(h, b);
    } while (h->type == XFER_WIRE_SHM_FD && h->len == 0);
    return 0;
}

int hx_recv_skip(int fd, uint64_t n, unsigned timeout_ms)
{
    uint8_t b[65536];

    while (n) {
        size_t k = n < sizeof b ? (size_t)n : sizeof b;

        if (recv_all(fd, b, k, timeout_ms) < 0)
            return -1;
        n -= k;
    }
    return 0;
}

int hx_handshake(int fd, const char *name, uint64_t epoch)
{
    xfer_wire_hdr_t h;

    if (fd < 0 || hx_hello(fd, name, strlen(name), epoch) < 0)
        return -1;
    if (hx_recv_hdr(fd, &h, HX_WAIT_MS) < 0)
        return -1;
    return h.type == XFER_WIRE_HELLO_ACK && h.arg1 == 0 ? fd : -1;
}

int hx_closed(int fd, unsigned timeout_ms)
{
    uint8_t b[4096];
    uint64_t end = xt_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        uint64_t now = xt_now_ms();
        ssize_t k;

        if (now >= end || poll(&p, 1, (int)(end - now)) != 1)
            return 0;
        k = recv(fd, b, sizeof b, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return 1;
    }
}

/* ---- the target child ------------------------------------------------ */

static char self_exe[4096];

long hx_rss_kb(int pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

long hx_cpu_ms(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    long hz = sysconf(_SC_CLK_TCK);
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields 14 and 15 (utime, stime) follow the command in parentheses. */
    if ((p = strrchr(buf, ')')) == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) != 2)
        return -1;
    return (long)((ut + st) * 1000u / (unsigned long)(hz > 0 ? hz : 100));
}

typedef struct seqs {
    char name[XFER_NAME_MAX + 1];
    unsigned long next;
} seqs_t;

typedef struct drain {
    seqs_t s[16];
    size_t ns, now, seq, bad;
} drain_t;

/* "seq <k>" from a sender must be that sender's k-th such message. */
static void on_notif(void *arg, const char *from, const void *msg, size_t len)
{
    drain_t *d = arg;
    char text[64];
    unsigned long k;
    size_t i;

    d->now++;
    if (len < 4 || memcmp(msg, "seq ", 4) != 0)
        return;
    if (len >= sizeof text)
        len = sizeof text - 1;
    memcpy(text, msg, len);
    text[len] = '\0';
    if (sscanf(text + 4, "%lu", &k) != 1)
        return;
    for (i = 0; i < d->ns && strcmp(d->s[i].name, from) != 0; i++)
        ;
    if (i == d->ns) {
        if (d->ns == sizeof d->s / sizeof d->s[0])
            return;
        snprintf(d->s[d->ns++].name, sizeof d->s[0].name, "%s", from);
    }
    d->seq++;
    if (k != d->s[i].next)
        d->bad++;
    d->s[i].next = k + 1;
}

/* One line (xt_proc_line polls the pipe: two lines written at once
 * would leave the second in stdio's buffer, unseen). */
static void hex_out(const char *blob, size_t len, uintptr_t a0, uintptr_t a1)
{
    fputs("md ", stdout);
    for (size_t i = 0; i < len; i++)
        printf("%02x", (unsigned char)blob[i]);
    printf(" %" PRIxPTR " %" PRIxPTR "\n", a0, a1);
}

static int target_main(int argc, char **argv)
{
    const char *name = argv[2], *spec = argv[3], *log = NULL;
    size_t reg = 1u << 20, reg2 = 0, mlen;
    unsigned long long nqbytes = 0, nqcount = 0, nofile = 0;
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *mem = NULL, *mem2 = NULL;
    xfer_desc_t d;
    xfer_dlist_t l;
    drain_t dr;
    uint8_t *buf, *buf2 = NULL;
    char line[256], *blob = NULL;
    size_t blen = 0;

    for (int i = 4; i < argc; i++) {
        unsigned long long v;

        if (sscanf(argv[i], "nqbytes=%llu", &v) == 1)
            nqbytes = v;
        else if (sscanf(argv[i], "nqcount=%llu", &v) == 1)
            nqcount = v;
        else if (sscanf(argv[i], "nofile=%llu", &v) == 1)
            nofile = v;
        else if (sscanf(argv[i], "reg=%llu", &v) == 1)
            reg = (size_t)v;
        else if (sscanf(argv[i], "reg2=%llu", &v) == 1)
            reg2 = (size_t)v;
        else if (strncmp(argv[i], "log=", 4) == 0)
            log = argv[i] + 4;
    }
    if (log != NULL) {
        struct rlimit fs = {64u << 20, 64u << 20};
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        /* A log flood (the bug these tests look for) stops at 64 MiB
         * instead of filling the disk. */
        if (fd < 0 || dup2(fd, 2) < 0)
            return 2;
        close(fd);
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &fs);
    }
    if (nofile) {
        struct rlimit nf = {nofile, nofile};

        if (setrlimit(RLIMIT_NOFILE, &nf) < 0)
            return 3;
    }
    mlen = reg + 2 * GUARD;
    buf = mmap(NULL, mlen, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return 4;
    memset(buf, CANARY, mlen);
    xfer_agent_opts_init(&o);
    o.name = name;
    o.notif_queue_bytes = (size_t)nqbytes;
    o.notif_queue_count = (unsigned)nqcount;
    d = (xfer_desc_t){(uintptr_t)buf + GUARD, reg, 0};
    l = (xfer_dlist_t){XFER_MEM_DRAM, 1, &d};
    if (reg2) {
        buf2 = mmap(NULL, reg2, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf2 == MAP_FAILED)
            return 4;
        memset(buf2, 0x2a, reg2);
    }
    if (xfer_agent_create(&o, &a) != XFER_OK ||
        xfer_backend_add(a, spec, NULL) != XFER_OK ||
        xfer_mem_register(a, &l, NULL, &mem) != XFER_OK) {
        printf("FAIL %s\n", xfer_last_error());
        fflush(stdout);
        return 1;
    }
    d = (xfer_desc_t){(uintptr_t)buf2, reg2, 0};
    if ((reg2 && xfer_mem_register(a, &l, NULL, &mem2) != XFER_OK) ||
        xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &blen) != XFER_OK) {
        printf("FAIL %s\n", xfer_last_error());
        fflush(stdout);
        return 1;
    }
    hex_out(blob, blen, (uintptr_t)buf + GUARD, (uintptr_t)buf2);
    xfer_free(blob);
    fflush(stdout);
    memset(&dr, 0, sizeof dr);
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "canary") == 0) {
            size_t bad = SIZE_MAX;

            for (size_t i = 0; i < GUARD && bad == SIZE_MAX; i++)
                if (buf[i] != CANARY)
                    bad = i;
            for (size_t i = 0; i < GUARD && bad == SIZE_MAX; i++)
                if (buf[GUARD + reg + i] != CANARY)
                    bad = GUARD + reg + i;
            if (bad == SIZE_MAX)
                printf("canary ok\n");
            else
                printf("canary bad %zu\n", bad);
        } else if (strcmp(line, "drain") == 0) {
            dr.now = 0;
            xfer_notif_drain(a, on_notif, &dr, NULL);
            printf("drained %zu seq %zu bad %zu\n", dr.now, dr.seq, dr.bad);
        } else if (strcmp(line, "dereg") == 0) {
            uint64_t t0 = xt_now_ms();
            xfer_status_t s = mem ? xfer_mem_deregister(a, mem) : XFER_OK;

            mem = NULL;
            printf("dereg %llu %s\n", (unsigned long long)(xt_now_ms() - t0),
                   s == XFER_OK ? "ok" : xfer_last_error());
        } else {
            break;
        }
        fflush(stdout);
    }
    if (mem != NULL)
        xfer_mem_deregister(a, mem);
    if (mem2 != NULL)
        xfer_mem_deregister(a, mem2);
    xfer_agent_destroy(a);
    munmap(buf, mlen);
    if (buf2 != NULL)
        munmap(buf2, reg2);
    return 0;
}

int hx_main(int argc, char **argv)
{
    ssize_t n;

    if (argc >= 4 && strcmp(argv[1], "--hx-target") == 0)
        exit(target_main(argc, argv));
    n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[n] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    /* Targets' memory is measured: under AddressSanitizer freed blocks
     * must not pile up in its quarantine (without it: ignored). */
    {
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];

        snprintf(opts, sizeof opts, "%s%squarantine_size_mb=1",
                 asan ? asan : "", asan && asan[0] ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
    return 0;
}

static void target_stop(void *arg)
{
    hx_target_t *t = arg;

    xt_proc_end(&t->proc, HX_WAIT_MS);
}

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                                 : -1;
}

void hx_target_start(hx_target_t *t, const char *spec, const char *opts)
{
    char *argv[24], *words, *w, *save = NULL, *line;
    size_t argc = 0, cap = 1u << 20, n;
    json_t *root;

    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", xt_name("target"));
    if ((w = strstr(spec, "port=")) != NULL)
        t->port = (unsigned)strtoul(w + 5, NULL, 10);
    words = strdup(opts ? opts : "");
    line = malloc(cap);
    XT_REQUIRE(words != NULL && line != NULL, "out of memory");
    xt_defer_late(free, words);
    xt_defer_late(free, line);
    argv[argc++] = self_exe;
    argv[argc++] = "--hx-target";
    argv[argc++] = t->name;
    argv[argc++] = (char *)spec;
    for (w = strtok_r(words, " ", &save); w && argc < 23;
         w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    argv[argc] = NULL;
    xt_proc_start(&t->proc, t->name, argv);
    xt_defer(target_stop, t);
    xt_proc_line(&t->proc, line, cap, HX_WAIT_MS);
    XT_REQUIRE(strncmp(line, "md ", 3) == 0, "target %s: '%s'", t->name,
               line);
    n = strcspn(line + 3, " ") / 2;
    t->md = malloc(n + 1);
    XT_REQUIRE(t->md != NULL, "out of memory");
    xt_defer_late(free, t->md);
    for (size_t i = 0; i < n; i++)
        t->md[i] = (char)(unhex(line[3 + 2 * i]) << 4 |
                          unhex(line[4 + 2 * i]));
    t->md[n] = '\0';
    t->md_len = n;
    root = xt_blob_parse(t->md, n);
    XT_REQUIRE(xt_json_u64(json_object_get(root, "epoch"), &t->epoch),
               "target %s: metadata without an epoch", t->name);
    XT_REQUIRE(sscanf(line + 3 + 2 * n, " %" SCNx64 " %" SCNx64, &t->addr,
                      &t->addr2) == 2,
               "target %s: no region addresses after its metadata", t->name);
    /* The blob lists regions in an order of its own: find them. */
    for (size_t i = 0; i < json_array_size(json_object_get(root, "regions"));
         i++) {
        json_t *r = xt_blob_region(root, i);
        uint64_t addr, key, len;

        XT_REQUIRE(xt_json_u64(json_object_get(r, "addr"), &addr) &&
                       xt_json_u64(json_object_get(r, "key"), &key) &&
                       xt_json_u64(json_object_get(r, "len"), &len),
                   "target %s: a region without addr, key or len", t->name);
        if (addr == t->addr)
            t->key = key, t->len = len;
        else if (addr == t->addr2)
            t->key2 = key, t->len2 = len;
    }
    XT_REQUIRE(t->len && (!t->addr2 || t->len2),
               "target %s: its regions are not in its metadata", t->name);
}

const char *hx_target_ask(hx_target_t *t, const char *cmd)
{
    static char line[512];

    fprintf(t->proc.in, "%s\n", cmd);
    fflush(t->proc.in);
    return xt_proc_line(&t->proc, line, sizeof line, 3 * HX_WAIT_MS);
}

void hx_target_canary(hx_target_t *t)
{
    const char *a = hx_target_ask(t, "canary");

    XT_CHECK(strcmp(a, "canary ok") == 0,
             "bytes around the target's registered region changed: %s", a);
}

/* ---- the well-behaved peer -------------------------------------------- */

void hx_good_make(hx_good_t *g, const char *name, const char *spec,
                  hx_target_t *t)
{
    char nm[XFER_NAME_MAX + 1];

    memset(g, 0, sizeof *g);
    g->t = t;
    g->raddr = t->addr;
    g->agent = xt_agent(name, spec, 1);
    g->src = xt_alloc(t->len);
    g->dst = xt_alloc(t->len);
    xt_register(g->agent, g->src, t->len);
    xt_register(g->agent, g->dst, t->len);
    XT_STATUS_FATAL(xfer_md_load(g->agent, t->md, t->md_len, nm, sizeof nm),
                    XFER_OK);
}

static bool good_post(hx_good_t *g, xfer_op_t op, uint8_t *local, size_t off,
                      size_t len)
{
    xfer_desc_t ld = {(uintptr_t)local + off, len, 0};
    xfer_desc_t rd = {(uintptr_t)g->raddr + off, len, 0};
    xfer_dlist_t l = {XFER_MEM_DRAM, 1, &ld}, r = {XFER_MEM_DRAM, 1, &rd};
    xfer_req_t *req = NULL;
    bool ok;

    if (!XT_STATUS(xfer_req_create(g->agent, op, &l, &r, g->t->name, NULL,
                                   &req),
                   XFER_OK))
        return false;
    xt_req_defer(req);
    ok = XT_STATUS(xt_post_wait(req, NULL, 0, HX_WAIT_MS), XFER_OK);
    xt_req_release(req);
    return ok;
}

bool hx_good_roundtrip(hx_good_t *g, size_t off, size_t len)
{
    uint64_t seed = xt_seed();

    xt_fill(g->src + off, len, seed);
    memset(g->dst + off, 0, len);
    if (!good_post(g, XFER_OP_WRITE, g->src, off, len) ||
        !good_post(g, XFER_OP_READ, g->dst, off, len))
        return false;
    XT_CHECK(xt_check(g->dst + off, len, seed) < 0,
             "the good peer's bytes came back different at offset %ld",
             xt_check(g->dst + off, len, seed));
    return xt_check(g->dst + off, len, seed) < 0;
}
