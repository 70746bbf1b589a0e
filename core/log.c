/* log.c - one place where the library and its plugins write log lines.
 * XFER_LOG_LEVEL (error, warn, info, debug) picks how much; stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>

#include "core/internal.h"

static pthread_once_t level_once = PTHREAD_ONCE_INIT;
static xfer_log_level_t level_max = XFER_LOG_WARN;

static void level_init(void)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const char *env = getenv("XFER_LOG_LEVEL");

    if (env == NULL)
        return;
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(env, names[i]) == 0) {
            level_max = (xfer_log_level_t)i;
            return;
        }
    }
}

void xfer__vlog(xfer_log_level_t level, const char *who, const char *fmt,
                va_list ap)
{
    static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[1024];

    pthread_once(&level_once, level_init);
    if (level > level_max)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    /* One fprintf per line so lines from threads don't interleave. */
    fprintf(stderr, "xfer %s [%s]: %s\n", tags[level], who ? who : "core",
            line);
}

void xfer__log(xfer_log_level_t level, const char *who, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xfer__vlog(level, who, fmt, ap);
    va_end(ap);
}
