/* error.c - status strings and the thread-local "what exactly went wrong"
 * sentence behind xfer_last_error(). */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <errno.h>
#include <string.h>

#include "core/internal.h"

#define XFER__ERRMSG_MAX 512

static _Thread_local char last_error[XFER__ERRMSG_MAX];
static _Thread_local bool last_error_set;

XFER_API const char *xfer_strerror(xfer_status_t status)
{
    switch (status) {
    case XFER_OK: return "success";
    case XFER_IN_PROG: return "operation in progress";
    case XFER_ERR_INVALID: return "invalid argument";
    case XFER_ERR_NOT_FOUND: return "not found";
    case XFER_ERR_NOMEM: return "out of memory";
    case XFER_ERR_NOT_SUPPORTED: return "operation not supported by the backend";
    case XFER_ERR_BACKEND: return "backend error";
    case XFER_ERR_REMOTE_DISCONNECT: return "remote agent disconnected";
    case XFER_ERR_TIMEOUT: return "timed out";
    case XFER_ERR_CANCELED: return "canceled";
    case XFER_ERR_ACCESS: return "remote access refused";
    case XFER_ERR_BUSY: return "resource busy";
    case XFER_ERR_EXISTS: return "already exists";
    case XFER_ERR_LOAD: return "plugin could not be loaded";
    case XFER_ERR_CONFIG: return "invalid backend configuration";
    case XFER_ERR_AUTH: return "peer failed authentication";
    }
    return "unknown status code";
}

/* The code's name without its XFER_ prefix ("OK", "ERR_TIMEOUT"), for
 * machine-read documents (telemetry, events). */
const char *xfer__status_name(xfer_status_t status)
{
    switch (status) {
    case XFER_OK: return "OK";
    case XFER_IN_PROG: return "IN_PROG";
    case XFER_ERR_INVALID: return "ERR_INVALID";
    case XFER_ERR_NOT_FOUND: return "ERR_NOT_FOUND";
    case XFER_ERR_NOMEM: return "ERR_NOMEM";
    case XFER_ERR_NOT_SUPPORTED: return "ERR_NOT_SUPPORTED";
    case XFER_ERR_BACKEND: return "ERR_BACKEND";
    case XFER_ERR_REMOTE_DISCONNECT: return "ERR_REMOTE_DISCONNECT";
    case XFER_ERR_TIMEOUT: return "ERR_TIMEOUT";
    case XFER_ERR_CANCELED: return "ERR_CANCELED";
    case XFER_ERR_ACCESS: return "ERR_ACCESS";
    case XFER_ERR_BUSY: return "ERR_BUSY";
    case XFER_ERR_EXISTS: return "ERR_EXISTS";
    case XFER_ERR_LOAD: return "ERR_LOAD";
    case XFER_ERR_CONFIG: return "ERR_CONFIG";
    case XFER_ERR_AUTH: return "ERR_AUTH";
    }
    return "UNKNOWN";
}

XFER_API const char *xfer_last_error(void)
{
    return last_error_set ? last_error : "";
}

XFER_API const char *xfer_version(void)
{
    return PACKAGE_VERSION;
}

XFER_API void xfer_free(void *ptr)
{
    free(ptr);
}

xfer_status_t xfer__verr(xfer_status_t status, const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    last_error_set = true;
    return status;
}

xfer_status_t xfer__err(xfer_status_t status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xfer__verr(status, fmt, ap);
    va_end(ap);
    return status;
}

xfer_status_t xfer__err_prefix(xfer_status_t status, const char *fmt, ...)
{
    char old[XFER__ERRMSG_MAX], prefix[XFER__ERRMSG_MAX / 2];
    va_list ap;

    snprintf(old, sizeof(old), "%s",
             last_error_set && last_error[0] ? last_error
                                             : xfer_strerror(status));
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    /* A sentence too long for the buffer is cut at its end (the prefix,
     * which says where the error was met, always survives); the result is
     * tested only to say that the cut is intended. */
    if (snprintf(last_error, sizeof(last_error), "%s: %s", prefix, old) >=
        (int)sizeof(last_error))
        last_error[sizeof(last_error) - 1] = '\0';
    last_error_set = true;
    return status;
}

void xfer__err_clear(void)
{
    last_error[0] = '\0';
    last_error_set = false;
}

bool xfer__err_isset(void)
{
    return last_error_set;
}

xfer_status_t xfer__random(void *buf, size_t n)
{
    unsigned char *p = buf;

    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);

        if (got < 0) {
            if (errno == EINTR)
                continue;
            return xfer__err(XFER_ERR_BACKEND, "getrandom failed: %s",
                             strerror(errno));
        }
        p += got;
        n -= (size_t)got;
    }
    return XFER_OK;
}
