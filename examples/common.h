/* common.h - what the example target and initiator share: the metadata
 * file they exchange, the message, and error reporting that names the cause. */
#ifndef XFER_EXAMPLE_COMMON_H
#define XFER_EXAMPLE_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* nanosleep, rename */
#endif

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xfer/xfer.h>

/* Size of the buffer each side registers. */
#define EXAMPLE_BUF_SIZE 4096

/* What the initiator writes into the target, NUL included. */
#define EXAMPLE_MESSAGE "hello from the initiator"

/* How long either side waits for the other before giving up. */
#define EXAMPLE_TIMEOUT_S 30

/* Print both the generic and the specific sentence: the second one says
 * which key, descriptor or plugin file was wrong. */
static inline int example_check(xfer_status_t st, const char *what)
{
    if (st >= 0)
        return 0;
    fprintf(stderr, "%s: %s (%s)\n", what, xfer_strerror(st),
            xfer_last_error());
    return -1;
}

static inline void example_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Wait for a posted request.  The agent's progress thread moves the
 * data; we only look at the status, so a short sleep is enough. */
static inline xfer_status_t example_wait(xfer_req_t *req)
{
    xfer_status_t st;

    while ((st = xfer_req_status(req)) == XFER_IN_PROG)
        example_sleep_ms(1);
    return st;
}

/* The metadata blob says how to reach the target and carries the keys
 * of its registrations, but a peer cannot list those registrations
 * through the API, so the target's buffer address and length travel in
 * a first text line:  "xfer-example <addr> <len>\n" then the blob.
 * The file is written under a temporary name and renamed, so a reader
 * polling for it never sees half of it. */
static inline int example_md_write(const char *path, uintptr_t addr,
                                   size_t len, const char *blob,
                                   size_t blob_len)
{
    char tmp[4096];
    FILE *f;
    int bad;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    f = fopen(tmp, "w");
    if (f == NULL) {
        perror(tmp);
        return -1;
    }
    bad = fprintf(f, "xfer-example %" PRIxPTR " %zu\n", addr, len) < 0;
    bad |= fwrite(blob, 1, blob_len, f) != blob_len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        perror(path);
        remove(tmp);
        return -1;
    }
    return 0;
}

/* Read what example_md_write() wrote; *blob is malloc'd, caller frees. */
static inline int example_md_read(const char *path, uintptr_t *addr,
                                  size_t *len, char **blob, size_t *blob_len)
{
    FILE *f = fopen(path, "r");
    long end, start;
    char *buf = NULL;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    if (fscanf(f, "xfer-example %" SCNxPTR " %zu", addr, len) != 2 ||
        fgetc(f) != '\n') {
        fprintf(stderr, "%s: not an xfer-example metadata file\n", path);
        goto fail;
    }
    start = ftell(f);
    if (start < 0 || fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < start ||
        fseek(f, start, SEEK_SET) != 0)
        goto fail_io;
    *blob_len = (size_t)(end - start);
    buf = malloc(*blob_len + 1);
    if (buf == NULL || fread(buf, 1, *blob_len, f) != *blob_len)
        goto fail_io;
    buf[*blob_len] = '\0';
    fclose(f);
    *blob = buf;
    return 0;
fail_io:
    perror(path);
fail:
    free(buf);
    fclose(f);
    return -1;
}

#endif /* XFER_EXAMPLE_COMMON_H */
