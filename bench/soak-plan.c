/* soak-plan.c - the soak test's shared arithmetic: the target region's
 * layout, each transfer's plan from the seed, and addressable patterns. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bench/soak.h"

uint64_t soak_mix64(uint64_t x)
{
    /* splitmix64's finaliser: every input bit reaches every output bit. */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t round_up(size_t v, size_t to)
{
    return (v + to - 1) / to * to;
}

int soak_layout(soak_cfg_t *c)
{
    size_t slots;

    if (c->initiators == 0 || c->window == 0 || c->min_size == 0 ||
        c->min_size > c->max_size) {
        fprintf(stderr, "soak: need initiators >= 1, window >= 1 and "
                "1 <= min size <= max size\n");
        return -1;
    }
    if (c->max_size > (64u << 20)) {
        fprintf(stderr, "soak: max size %zu is over 64 MiB\n", c->max_size);
        return -1;
    }
    slots = (size_t)c->initiators * c->window;
    c->sub_size = round_up(c->max_size, 64);
    c->pat_size = round_up(c->max_size > (1u << 20) ? c->max_size
                                                    : (1u << 20), 4096);
    c->ack_off = 0;
    c->pat_off = round_up((size_t)c->initiators * SOAK_LINE, 4096);
    c->wr_off = c->pat_off + c->pat_size;
    if (slots > (SIZE_MAX - c->wr_off) / c->sub_size ||
        slots * c->sub_size > ((size_t)16 << 30)) {
        fprintf(stderr, "soak: %u initiators x window %u x %zu bytes is "
                "over 16 GiB\n", c->initiators, c->window, c->sub_size);
        return -1;
    }
    c->region_size = round_up(c->wr_off + slots * c->sub_size, 4096);
    return 0;
}

/* A length spread evenly over the powers of two between min and max, so
 * that small transfers (the notifications' worst case) and large ones
 * both come often. */
static size_t pick_len(const soak_cfg_t *c, uint64_t r)
{
    unsigned lo = 0, hi = 0, e;
    size_t a, b;

    while (((size_t)2 << lo) <= c->min_size)
        lo++;
    while (((size_t)2 << hi) <= c->max_size)
        hi++;
    e = lo + (unsigned)(r % (hi - lo + 1));
    a = (size_t)1 << e;
    b = ((size_t)2 << e) - 1;
    if (a < c->min_size)
        a = c->min_size;
    if (b > c->max_size)
        b = c->max_size;
    return a + (size_t)((r >> 8) % (b - a + 1));
}

void soak_plan(const soak_cfg_t *c, unsigned slot, unsigned gen,
               uint64_t seq, soak_plan_t *p)
{
    uint64_t base = soak_mix64(c->seed ^ soak_mix64(((uint64_t)slot << 40) ^
                                                    ((uint64_t)gen << 32)) ^
                               soak_mix64(seq));
    size_t area;

    p->op = soak_mix64(base + 1) % 100 < c->read_pct ? XFER_OP_READ
                                                      : XFER_OP_WRITE;
    p->len = pick_len(c, soak_mix64(base + 2));
    area = p->op == XFER_OP_WRITE ? c->sub_size : c->pat_size;
    p->off = (size_t)(soak_mix64(base + 3) % (area - p->len + 1));
    p->tseed = soak_mix64(base + 4);
}

uint64_t soak_pat_seed(const soak_cfg_t *c)
{
    return soak_mix64(c->seed ^ 0x5041545445524eull);
}

size_t soak_sub_off(const soak_cfg_t *c, unsigned slot, uint64_t seq)
{
    return c->wr_off +
           ((size_t)slot * c->window + (size_t)(seq % c->window)) *
               c->sub_size;
}

void soak_pat_fill(uint8_t *dst, uint64_t seed, size_t start, size_t len)
{
    size_t i = 0;

    while (i < len) {
        size_t pos = start + i, k = pos % 8, n = 8 - k;
        uint64_t w = soak_mix64(seed + pos / 8);
        uint8_t bytes[8];

        memcpy(bytes, &w, 8);
        if (n > len - i)
            n = len - i;
        memcpy(dst + i, bytes + k, n);
        i += n;
    }
}

size_t soak_pat_check(const uint8_t *src, uint64_t seed, size_t start,
                      size_t len)
{
    uint8_t want[4096];
    size_t i = 0;

    while (i < len) {
        size_t n = len - i < sizeof want ? len - i : sizeof want;

        soak_pat_fill(want, seed, start + i, n);
        if (memcmp(src + i, want, n) != 0) {
            size_t j = 0;

            while (src[i + j] == want[j])
                j++;
            return i + j;
        }
        i += n;
    }
    return len;
}

uint64_t soak_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void soak_sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}
