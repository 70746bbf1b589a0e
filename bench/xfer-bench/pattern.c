/* pattern.c - data patterns for --check-consistency.
 *
 * A pattern is a function of a seed and the byte offset, defined byte by
 * byte so both ends agree on any host; a new seed per post catches data
 * that did not move. */
#include <endian.h>
#include <string.h>

#include "xb.h"

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

void xb_pattern_fill(unsigned char *p, size_t len, uint64_t seed)
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

size_t xb_pattern_check(const unsigned char *p, size_t len, uint64_t seed)
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

uint64_t xb_pattern_seed(size_t block, size_t batch, long iter, int thread)
{
    return mix64(((uint64_t)block << 24) ^ ((uint64_t)batch << 8) ^
                 (uint64_t)thread) +
           (uint64_t)iter * 0x10000000u;
}
