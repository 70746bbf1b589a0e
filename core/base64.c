/* base64.c - RFC 4648 base64 (standard alphabet, padded) for the binary
 * fields of metadata; decoding refuses anything not canonical. */
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t xfer__b64_encoded_size(size_t n)
{
    return (n + 2) / 3 * 4 + 1;
}

void xfer__b64_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;
    size_t i = 0;

    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];

        *out++ = alphabet[v >> 18 & 63];
        *out++ = alphabet[v >> 12 & 63];
        *out++ = alphabet[v >> 6 & 63];
        *out++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;

        *out++ = alphabet[v >> 18 & 63];
        *out++ = alphabet[v >> 12 & 63];
        *out++ = '=';
        *out++ = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;

        *out++ = alphabet[v >> 18 & 63];
        *out++ = alphabet[v >> 12 & 63];
        *out++ = alphabet[v >> 6 & 63];
        *out++ = '=';
    }
    *out = '\0';
}

static int sextet(char c)
{
    const char *p;

    if (c == '\0')
        return -1;
    p = strchr(alphabet, c);
    return p ? (int)(p - alphabet) : -1;
}

long xfer__b64_decode(const char *in, void *out, size_t cap)
{
    size_t n = strlen(in), olen = 0;
    unsigned char *o = out;

    if (n % 4 != 0)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        int a = sextet(in[i]), b = sextet(in[i + 1]);
        int c = in[i + 2] == '=' ? -2 : sextet(in[i + 2]);
        int d = in[i + 3] == '=' ? -2 : sextet(in[i + 3]);
        int last = i + 4 == n;
        size_t take;
        unsigned v;

        if (a < 0 || b < 0 || c == -1 || d == -1)
            return -1;
        if ((c == -2 || d == -2) && !last)
            return -1;
        if (c == -2 && d != -2)
            return -1;
        take = c == -2 ? 1 : d == -2 ? 2 : 3;
        v = (unsigned)a << 18 | (unsigned)b << 12 |
            (unsigned)(c < 0 ? 0 : c) << 6 | (unsigned)(d < 0 ? 0 : d);
        /* Canonical form: bits below the last byte must be zero. */
        if ((take == 1 && (v & 0xffff)) || (take == 2 && (v & 0xff)))
            return -1;
        if (olen + take > cap)
            return -1;
        o[olen++] = (unsigned char)(v >> 16);
        if (take > 1)
            o[olen++] = (unsigned char)(v >> 8);
        if (take > 2)
            o[olen++] = (unsigned char)v;
    }
    return (long)olen;
}

json_t *xfer__b64_json(const void *in, size_t n)
{
    char *text = malloc(xfer__b64_encoded_size(n));
    json_t *j;

    if (text == NULL)
        return NULL;
    xfer__b64_encode(in, n, text);
    j = json_string(text);
    free(text);
    return j;
}
