/* log.c - one place where the library and its plugins write log lines:
 * level filter, control characters escaped, rate limits per call site and overall. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <time.h>

#include "core/internal.h"

/* Every line passes here, and a line may carry what a peer sent (an
 * agent name, a frame's fields, a listener client's text).  So that no
 * peer can flood the disk or forge lines:
 *  - the formatted line is escaped as a whole (control bytes as \xNN),
 *    so no peer byte can start a line of its own;
 *  - each call site (format string and who) may write XFER_LOG_RATE
 *    lines a second (default 10, bursts of as many), the rest are
 *    counted and reported as "N similar lines suppressed" when that site
 *    writes again;
 *  - all sites together may write LOG_BYTES_PER_S bytes a second (the
 *    same burst), so many sites cannot add up to a flood either.
 * XFER_LOG_RATE=0 turns both limits off (debugging). */
#define LOG_RATE_DEFAULT 10u
#define LOG_BYTES_PER_S (64u << 10)
/* Call sites remembered; the library has a few hundred.  A site that
 * finds the table full shares the last slot. */
#define LOG_SITES 512u

typedef struct log_site {
    const char *fmt;    /* NULL: free slot */
    uint64_t who;       /* hash of who */
    uint64_t tokens;    /* in thousandths of a line */
    uint64_t last_ms;
    unsigned long suppressed;
} log_site_t;

static pthread_once_t level_once = PTHREAD_ONCE_INIT;
static xfer_log_level_t level_max = XFER_LOG_WARN;
static unsigned log_rate = LOG_RATE_DEFAULT;

static pthread_mutex_t sites_lock = PTHREAD_MUTEX_INITIALIZER;
static log_site_t sites[LOG_SITES];
static uint64_t bytes_tokens = LOG_BYTES_PER_S; /* in bytes */
static uint64_t bytes_last_ms;

static void level_init(void)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const char *env = getenv("XFER_LOG_LEVEL");
    const char *rate = getenv("XFER_LOG_RATE");

    if (rate != NULL && rate[0] != '\0') {
        char *end;
        unsigned long v = strtoul(rate, &end, 10);

        if (*end == '\0' && v <= 1000000)
            log_rate = (unsigned)v;
    }
    if (env == NULL)
        return;
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(env, names[i]) == 0) {
            level_max = (xfer_log_level_t)i;
            return;
        }
    }
}

size_t xfer__log_escape(char *dst, size_t size, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (size == 0)
        return 0;
    for (size_t i = 0; i < len && src[i] != '\0'; i++) {
        unsigned char ch = (unsigned char)src[i];

        if (ch >= 0x20 && ch != 0x7f && ch != '\\') {
            if (o + 1 >= size)
                break;
            dst[o++] = (char)ch;
        } else if (ch == '\\') {
            if (o + 2 >= size)
                break;
            dst[o++] = '\\';
            dst[o++] = '\\';
        } else {
            if (o + 4 >= size)
                break;
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[ch >> 4];
            dst[o++] = hex[ch & 15];
        }
    }
    dst[o] = '\0';
    return o;
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static log_site_t *site_find(const char *fmt, uint64_t who)
{
    uint64_t h = ((uint64_t)(uintptr_t)fmt ^ who) * 0x9e3779b97f4a7c15ull;
    unsigned i = (unsigned)(h >> 40) % LOG_SITES;

    for (unsigned n = 0; n < LOG_SITES - 1; n++, i = (i + 1) % LOG_SITES) {
        log_site_t *s = &sites[i];

        if (s->fmt == fmt && s->who == who)
            return s;
        if (s->fmt == NULL && i != LOG_SITES - 1) {
            s->fmt = fmt;
            s->who = who;
            s->tokens = (uint64_t)log_rate * 1000u;
            return s;
        }
    }
    return &sites[LOG_SITES - 1];
}

/* Whether a line of `bytes` from this site may be written now; sites_lock
 * held.  *suppressed: lines of the site held back since it last wrote. */
static bool admit(const char *fmt, const char *who, size_t bytes,
                  unsigned long *suppressed)
{
    uint64_t now = now_ms(), cap = (uint64_t)log_rate * 1000u;
    log_site_t *s = site_find(fmt, hash_str(who));
    uint64_t dt = now - s->last_ms;

    /* Refill: log_rate lines a second, i.e. log_rate thousandths a ms. */
    s->tokens = dt >= cap ? cap : s->tokens + dt * log_rate;
    if (s->tokens > cap)
        s->tokens = cap;
    s->last_ms = now;
    dt = now - bytes_last_ms;
    bytes_tokens += dt >= 1000 ? LOG_BYTES_PER_S
                               : dt * (LOG_BYTES_PER_S / 1000u);
    if (bytes_tokens > LOG_BYTES_PER_S)
        bytes_tokens = LOG_BYTES_PER_S;
    bytes_last_ms = now;
    if (s->tokens < 1000 || bytes_tokens < bytes) {
        s->suppressed++;
        return false;
    }
    s->tokens -= 1000;
    bytes_tokens -= bytes;
    *suppressed = s->suppressed;
    s->suppressed = 0;
    return true;
}

void xfer__vlog(xfer_log_level_t level, const char *who, const char *fmt,
                va_list ap)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[1024], esc[1024], wesc[128];
    unsigned long suppressed = 0;
    size_t n;

    pthread_once(&level_once, level_init);
    if (level > level_max)
        return;
    who = who ? who : "core";
    vsnprintf(line, sizeof(line), fmt, ap);
    n = xfer__log_escape(esc, sizeof(esc), line, sizeof(line));
    xfer__log_escape(wesc, sizeof(wesc), who, strlen(who));
    if (log_rate > 0) {
        bool ok;

        pthread_mutex_lock(&sites_lock);
        ok = admit(fmt, who, n + strlen(wesc) + 16, &suppressed);
        pthread_mutex_unlock(&sites_lock);
        if (!ok)
            return;
    }
    /* One fprintf per line so lines from threads don't interleave. */
    if (suppressed > 0)
        fprintf(stderr, "xfer %s [%s]: %lu similar lines suppressed\n"
                "xfer %s [%s]: %s\n", tags[level], wesc, suppressed,
                tags[level], wesc, esc);
    else
        fprintf(stderr, "xfer %s [%s]: %s\n", tags[level], wesc, esc);
}

void xfer__log(xfer_log_level_t level, const char *who, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xfer__vlog(level, who, fmt, ap);
    va_end(ap);
}
