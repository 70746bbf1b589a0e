/* util.c - what every part of xfer-bench shares: the first failure of
 * the process as one sentence, the clock, and the bound on silence. */
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "xb.h"

/* ------------------------------------------------------------------ */
/* The first failure of the process, kept as one sentence: what        */
/* follows a failure is usually only its echo.                         */
/* ------------------------------------------------------------------ */

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char err_msg[1024];

int xb_fail(const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&err_lock);
    if (err_msg[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&err_lock);
    return -1;
}

int xb_fail_xfer(xfer_status_t st, const char *what)
{
    const char *detail = xfer_last_error();

    if (detail[0] == '\0')
        return xb_fail("%s: %s", what, xfer_strerror(st));
    return xb_fail("%s: %s (%s)", what, xfer_strerror(st), detail);
}

const char *xb_error(void)
{
    return err_msg[0] != '\0' ? err_msg : "unknown failure";
}

uint64_t xb_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Read once: initiator threads ask at the same time. */
static pthread_once_t timeout_once = PTHREAD_ONCE_INIT;
static int timeout_ms;

static void timeout_read(void)
{
    const char *env = getenv("XB_TIMEOUT_MS");

    timeout_ms = env != NULL && atoi(env) > 0 ? atoi(env) : XB_TIMEOUT_MS;
}

int xb_timeout_ms(void)
{
    pthread_once(&timeout_once, timeout_read);
    return timeout_ms;
}

/* arr points at a typed pointer (struct mail **, ...): it is read and
 * written through memcpy, not through a void ** lvalue. */
int xb_grow(void *arr, size_t n, size_t *cap, size_t elem, size_t first)
{
    void *old, *q;
    size_t want = *cap ? *cap * 2 : first;

    if (n < *cap)
        return 0;
    memcpy(&old, arr, sizeof(old));
    if (want > SIZE_MAX / elem || (q = realloc(old, want * elem)) == NULL)
        return -1;
    memcpy(arr, &q, sizeof(q));
    *cap = want;
    return 0;
}
