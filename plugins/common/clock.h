/* clock.h - the monotonic millisecond clock the hardware plugins' deadlines,
 * sweeps and control channel read (ucx, ofi, verbs, hwctl). */
#ifndef XFER_PLUGINS_CLOCK_H
#define XFER_PLUGINS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC, not _COARSE (the stream engine's choice for its idle
 * timers): deadlines of a few ms and "once a millisecond" looks need the
 * real tick. */
static inline uint64_t xfer__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Whether the n-th (from 1) of a repeated event is logged: the first 64,
 * then the 128th, 256th, 512th ...  Anyone who reaches an endpoint can
 * make such events; the count itself goes in the backend's state. */
static inline int xfer__log_nth(unsigned long n)
{
    return n <= 64 || (n & (n - 1)) == 0;
}

#endif /* XFER_PLUGINS_CLOCK_H */
