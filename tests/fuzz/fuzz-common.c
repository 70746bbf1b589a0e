/* fuzz-common.c - helpers of the libFuzzer harnesses (fuzz-common.h).  Built
 * without coverage instrumentation: its comparisons must not teach the fuzzer. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sanitizer/common_interface_defs.h>

#include "tests/fuzz/fuzz-common.h"

#define PAGE 4096u

void fz_setup(void)
{
    extern char **environ;
    char exe[PATH_MAX], dir[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash;

    if (n <= 0)
        fz_die("fuzz: cannot read /proc/self/exe: %s", strerror(errno));
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (slash != NULL)
        *slash = '\0';
    snprintf(dir, sizeof(dir), "%s/plugins", exe);
    /* Ours, whatever the caller's environment says: a plugin built
     * without instrumentation would be fuzzed blind. */
    setenv("XFER_PLUGIN_PATH", dir, 1);
    setenv("XFER_PLUGIN_DLCLOSE", "0", 1);
    setenv("XFER_LOG_LEVEL", "debug", 0);
    unsetenv("XFER_ETCD_ENDPOINTS");
    /* A harness that wants a secret makes its own (fz_auth_key). */
    unsetenv("XFER_AUTH_KEY_FILE");
    for (;;) {
        char name[256] = "";

        for (char **e = environ; *e != NULL; e++) {
            const char *eq = strchr(*e, '=');

            if (strncmp(*e, "XFER_TCP_", 9) == 0 && eq != NULL &&
                (size_t)(eq - *e) < sizeof(name)) {
                memcpy(name, *e, (size_t)(eq - *e));
                name[eq - *e] = '\0';
                break;
            }
        }
        if (name[0] == '\0')
            break;
        unsetenv(name);
    }
    signal(SIGPIPE, SIG_IGN);
}

void fz_die(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    int n = snprintf(msg, sizeof(msg), "FUZZ FINDING: ");

    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    /* To stderr, and through the sanitizers' report channel, which
     * libFuzzer keeps when -close_fd_mask=2 closes stderr. */
    fprintf(stderr, "%s\n", msg);
    __sanitizer_report_error_summary(msg);
    abort();
}

bool fz_verbose(void)
{
    static int v = -1;

    if (v < 0) {
        const char *e = getenv("FUZZ_VERBOSE");

        v = e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
    }
    return v;
}

void fz_ok(xfer_status_t st, const char *what)
{
    if (st != XFER_OK)
        fz_die("set-up failed: %s: %s (%s)", what, xfer_strerror(st),
               xfer_last_error());
}

void fz_sentence(xfer_status_t st, const char *what)
{
    if (st < 0 && xfer_last_error()[0] == '\0')
        fz_die("%s failed with %s but left no sentence in xfer_last_error()",
               what, xfer_strerror(st));
}

uint64_t fz_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- guarded memory ----------------------------------------------------- */

/* One random word per process, repeated over every guard page. */
static uint64_t guard_word;

static uint64_t guard_get(void)
{
    while (guard_word == 0)
        if (getrandom(&guard_word, sizeof(guard_word), 0) !=
            (ssize_t)sizeof(guard_word))
            fz_die("getrandom: %s", strerror(errno));
    return guard_word;
}

static void guard_fill(uint8_t *p)
{
    uint64_t w = guard_get();

    for (size_t i = 0; i < PAGE; i += 8)
        memcpy(p + i, &w, 8);
}

void fz_guarded_init(fz_guarded_t *g, size_t len)
{
    size_t span = (len + PAGE - 1) / PAGE * PAGE;
    uint8_t *m = mmap(NULL, span + 2 * PAGE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (m == MAP_FAILED)
        fz_die("mmap: %s", strerror(errno));
    guard_fill(m);
    /* The usable range ends where the second guard starts: an overrun
     * of one byte lands in it. */
    g->base = m + PAGE + (span - len);
    g->len = len;
    memset(m + PAGE, 0, span);
    guard_fill(m + PAGE + span);
}

void fz_guarded_free(fz_guarded_t *g)
{
    size_t span = (g->len + PAGE - 1) / PAGE * PAGE;

    munmap(g->base - (span - g->len) - PAGE, span + 2 * PAGE);
    g->base = NULL;
}

static void guard_page_check(const uint8_t *p, const char *what,
                             const char *which)
{
    uint64_t w = guard_get();

    for (size_t i = 0; i < PAGE; i += 8) {
        uint64_t v;

        memcpy(&v, p + i, 8);
        if (v != w)
            fz_die("%s: the guard page %s the range was written, at byte %zu "
                   "of it", what, which, i);
    }
}

void fz_guarded_check(const fz_guarded_t *g, const char *what)
{
    size_t span = (g->len + PAGE - 1) / PAGE * PAGE;
    const uint8_t *lo = g->base - (span - g->len) - PAGE;
    const uint8_t *slack = lo + PAGE;

    guard_page_check(lo, what, "before");
    guard_page_check(lo + PAGE + span, what, "after");
    /* Bytes between the first guard and the range are not registered
     * either; they stay zero. */
    for (size_t i = 0; i < span - g->len; i++)
        if (slack[i] != 0)
            fz_die("%s: a byte before the range changed (%zu bytes before "
                   "it)", what, span - g->len - i);
}

void fz_guard_leak_check(const void *buf, size_t len, const char *what)
{
    const uint8_t *p = buf;
    uint64_t w = guard_get();

    for (size_t i = 0; i + 8 <= len; i++) {
        uint64_t v;

        memcpy(&v, p + i, 8);
        if (v == w)
            fz_die("%s: guard bytes were sent to the peer (offset %zu of what "
                   "it received): a read outside the registered range", what,
                   i);
    }
}

/* ---- tokens --------------------------------------------------------------- */

void fz_tokens_apply(uint8_t *buf, size_t len, const fz_token_t *t, size_t n)
{
    for (size_t i = 0; i + 8 <= len; i++) {
        for (size_t k = 0; k < n; k++) {
            if (memcmp(buf + i, t[k].text, 7) == 0) {
                fz_put_le64(buf + i, t[k].value +
                                         (uint64_t)buf[i + 7] *
                                             (uint64_t)t[k].step);
                i += 7;
                break;
            }
        }
    }
}

uint64_t fz_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void fz_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

/* ---- authentication ------------------------------------------------------- */

static char key_dir[64], key_path[80];
static uint8_t key_text[64];

static void key_remove(void)
{
    unlink(key_path);
    rmdir(key_dir);
}

const char *fz_auth_key(const uint8_t **key, size_t *len)
{
    if (key_path[0] == '\0') {
        static const char hex[] = "0123456789abcdef";
        uint8_t raw[32];
        int fd;

        snprintf(key_dir, sizeof(key_dir), "/tmp/xfer-fuzz-XXXXXX");
        if (mkdtemp(key_dir) == NULL ||
            getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
            fz_die("making a key: %s", strerror(errno));
        /* Hex text without a newline: nothing for the loader to trim. */
        for (size_t i = 0; i < sizeof(raw); i++) {
            key_text[2 * i] = (uint8_t)hex[raw[i] >> 4];
            key_text[2 * i + 1] = (uint8_t)hex[raw[i] & 15];
        }
        snprintf(key_path, sizeof(key_path), "%s/key", key_dir);
        fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 ||
            write(fd, key_text, sizeof(key_text)) != (ssize_t)sizeof(key_text))
            fz_die("writing %s: %s", key_path, strerror(errno));
        close(fd);
        atexit(key_remove);
    }
    *key = key_text;
    *len = sizeof(key_text);
    return key_path;
}

static size_t put_name(uint8_t *p, const char *name, uint64_t epoch)
{
    size_t n = strlen(name);

    p[0] = (uint8_t)n;
    memcpy(p + 1, name, n);
    fz_put_le64(p + 1 + n, epoch);
    return 1 + n + 8;
}

void fz_auth_mac(const uint8_t *key, size_t klen, const char *label,
                 const uint8_t na[32], const uint8_t nb[32], const char *n1,
                 uint64_t e1, const char *n2, uint64_t e2, uint8_t mac[32])
{
    uint8_t t[64 + 64 + 2 * (1 + 255 + 8)];
    size_t n = strlen(label) + 1, out = 0;

    if (n > 64 || strlen(n1) > 255 || strlen(n2) > 255)
        fz_die("fz_auth_mac: label or name too long");
    memcpy(t, label, n);
    memcpy(t + n, na, 32);
    memcpy(t + n + 32, nb, 32);
    n += 64;
    n += put_name(t + n, n1, e1);
    n += put_name(t + n, n2, e2);
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, klen, t, n, mac,
                  32, &out) == NULL || out != 32)
        fz_die("HMAC-SHA-256 failed");
}

/* ---- byte buffers and sockets ---------------------------------------------- */

/* What a harness keeps of one connection's replies; more is counted but
 * dropped (the checks read the start, and memory stays bounded). */
#define RX_KEEP (4u << 20)

void fz_buf_put(fz_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        uint8_t *q;

        while (cap < b->len + n)
            cap *= 2;
        q = realloc(b->p, cap);
        if (q == NULL)
            fz_die("out of memory");
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void fz_buf_free(fz_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

int fz_listen(uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
        fz_die("listen on loopback: %s", strerror(errno));
    *port = ntohs(sa.sin_port);
    return fd;
}

int fz_connect(uint16_t port, int rcvbuf)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        fz_die("socket: %s", strerror(errno));
    if (rcvbuf > 0 &&
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0)
        fz_die("SO_RCVBUF: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = errno;
        socklen_t el = sizeof(err);

        /* The kernel completes a loopback handshake without the other
         * side's help; wait for it, so that a shutdown never meets a
         * connection still being set up (which it would abort). */
        if (err == EINPROGRESS &&
            (poll(&p, 1, (int)FZ_HANG_MS) != 1 ||
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0))
            err = ETIMEDOUT;
        if (err != 0)
            fz_die("connect to 127.0.0.1:%u: %s", port, strerror(err));
    }
    return fd;
}

/* Send what the socket takes; shut down once all of it went (when the
 * caller said it is final).  Returns whether anything happened. */
static bool io_send(fz_io_t *io)
{
    bool moved = false;

    while (io->tx_off < io->tx_len) {
        ssize_t k = send(io->fd, io->tx + io->tx_off, io->tx_len - io->tx_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (k > 0) {
            io->tx_off += (size_t)k;
            moved = true;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            break;
        /* The other side closed or reset: it takes nothing more. */
        io->tx_off = io->tx_len;
        io->shut = true;
    }
    if (io->tx_set && io->tx_off == io->tx_len && !io->shut) {
        /* Fails only on a connection already reset: then recv says so. */
        (void)shutdown(io->fd, SHUT_WR);
        io->shut = true;
        moved = true;
    }
    return moved;
}

static void io_recv(fz_io_t *io)
{
    for (;;) {
        uint8_t buf[65536];
        ssize_t k = recv(io->fd, buf, sizeof(buf), MSG_DONTWAIT);

        if (k > 0) {
            if (io->rx.len < RX_KEEP)
                fz_buf_put(&io->rx, buf, (size_t)k);
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == EAGAIN)
            break;
        io->eof = true; /* 0: closed; ECONNRESET and the like */
        break;
    }
}

void fz_io_step(fz_io_t *io, xfer_agent_t *agent, int wait_ms)
{
    struct pollfd p[2];
    int n = 0, efd = -1;
    bool live = io != NULL && io->fd >= 0 && !io->eof;

    if (agent != NULL) {
        xfer_progress(agent);
        if (xfer_agent_event_fd(agent, &efd) == XFER_OK) {
            p[n].fd = efd;
            p[n].events = POLLIN;
            n++;
        }
    }
    /* Whatever goes out now is taken by the other side's next pass:
     * no reason to sleep before it. */
    if (live && io_send(io))
        wait_ms = 0;
    if (live) {
        p[n].fd = io->fd;
        p[n].events = POLLIN;
        if (io->tx_off < io->tx_len)
            p[n].events |= POLLOUT;
        n++;
    }
    if (n > 0 && poll(p, (nfds_t)n, wait_ms) < 0 && errno != EINTR)
        fz_die("poll: %s", strerror(errno));
    if (!live)
        return;
    io_send(io);
    io_recv(io);
}

void fz_io_finish(fz_io_t *io, xfer_agent_t *agent, const char *what)
{
    uint64_t deadline = fz_now_ms() + FZ_HANG_MS;

    io->tx_set = true;
    while (!io->eof) {
        fz_io_step(io, agent, 10);
        if (fz_now_ms() > deadline) {
            struct sockaddr_in a = {0}, b = {0};
            socklen_t al = sizeof(a), bl = sizeof(b);
            int err = 0;
            socklen_t el = sizeof(err);

            getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            getsockname(io->fd, (struct sockaddr *)&a, &al);
            getpeername(io->fd, (struct sockaddr *)&b, &bl);
            fz_die("%s: the other side neither finished nor closed within "
                   "%u ms (%zu of %zu bytes sent, %zu received; socket "
                   "error %d, local port %u, peer port %u, shut %d)", what,
                   FZ_HANG_MS, io->tx_off, io->tx_len, io->rx.len, err,
                   ntohs(a.sin_port), ntohs(b.sin_port), io->shut);
        }
    }
}

void fz_io_close(fz_io_t *io)
{
    if (io->fd >= 0)
        close(io->fd);
    io->fd = -1;
    fz_buf_free(&io->rx);
}
