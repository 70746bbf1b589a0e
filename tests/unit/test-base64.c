/* test-base64.c - the strict RFC 4648 codec used for the binary fields
 * of metadata blobs: vectors, round trips, and what decoding refuses. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "tests/common/runner.h"

static char *encode(const void *in, size_t n)
{
    size_t sz = xfer__b64_encoded_size(n);
    char *out = malloc(sz + 16);

    XT_REQUIRE(out != NULL, "out of memory");
    memset(out, '#', sz + 16);
    xfer__b64_encode(in, n, out);
    /* Exactly the announced size, NUL included, nothing past it. */
    XT_CHECK(strlen(out) + 1 == sz, "encoded %zu bytes to %zu chars, size "
             "said %zu", n, strlen(out), sz);
    XT_CHECK(out[sz] == '#', "encoder wrote past xfer__b64_encoded_size");
    xt_defer_late(free, out);
    return out;
}

/* RFC 4648 section 10. */
static void test_rfc_vectors(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob",
                                        "fooba", "foobar"};
    static const char *const coded[] = {"", "Zg==", "Zm8=", "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

    for (size_t i = 0; i < 7; i++) {
        char *e = encode(plain[i], strlen(plain[i]));
        unsigned char out[16];
        long n;

        XT_CHECK(strcmp(e, coded[i]) == 0, "encode(\"%s\") = \"%s\", want "
                 "\"%s\"", plain[i], e, coded[i]);
        n = xfer__b64_decode(coded[i], out, sizeof(out));
        XT_CHECK(n == (long)strlen(plain[i]) &&
                     memcmp(out, plain[i], strlen(plain[i])) == 0,
                 "decode(\"%s\") returned %ld", coded[i], n);
    }
}

static void test_round_trip(void)
{
    unsigned char in[600] = {0}, out[600];
    uint64_t x = 0x1234567;

    for (size_t n = 0; n <= sizeof(in); n += (n < 70 ? 1 : 37)) {
        char *e;
        long got;

        for (size_t i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            in[i] = (unsigned char)(x >> 56);
        }
        e = encode(in, n);
        memset(out, 0xee, sizeof(out));
        got = xfer__b64_decode(e, out, n);
        XT_CHECK(got == (long)n && memcmp(in, out, n) == 0,
                 "round trip of %zu bytes returned %ld", n, got);
    }
    /* Every byte value survives. */
    for (unsigned i = 0; i < 256; i++)
        in[i] = (unsigned char)i;
    {
        char *e = encode(in, 256);

        CU_ASSERT_EQUAL(xfer__b64_decode(e, out, 256), 256);
        CU_ASSERT_EQUAL(memcmp(in, out, 256), 0);
    }
}

static void test_capacity(void)
{
    unsigned char out[8];

    /* "foobar" needs 6 bytes: exactly enough works, one less fails. */
    CU_ASSERT_EQUAL(xfer__b64_decode("Zm9vYmFy", out, 6), 6);
    CU_ASSERT_EQUAL(xfer__b64_decode("Zm9vYmFy", out, 5), -1);
    CU_ASSERT_EQUAL(xfer__b64_decode("Zg==", out, 1), 1);
    CU_ASSERT_EQUAL(xfer__b64_decode("Zg==", out, 0), -1);
    CU_ASSERT_EQUAL(xfer__b64_decode("", out, 0), 0);
}

static void test_rejects(void)
{
    static const char *const bad[] = {
        "Zg",         /* padding missing */
        "Zm9",        /* length not a multiple of 4 */
        "Z",
        "Zg=",
        "Zg===",      /* too much padding */
        "Z===",
        "====",
        "=Zg=",       /* padding first */
        "Zg==Zm9v",   /* padding in the middle */
        "Zm=v",       /* padding then data */
        "Zm9*",       /* character outside the alphabet */
        "Zm9v\n",     /* whitespace */
        "Zm 9v",
        " Zm9v",
        "Zm9-",       /* URL-safe alphabet is not ours */
        "Zm9_",
        "Zh==",       /* non-zero bits after the last byte */
        "Zm9=",
        "Zm\xc3\xa9v",/* non-ASCII */
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char out[64];
        long n = xfer__b64_decode(bad[i], out, sizeof(out));

        XT_CHECK(n == -1, "decode(\"%s\") accepted (%ld bytes)", bad[i], n);
    }
}

static const xt_test_t tests[] = {
    XT_TEST(test_rfc_vectors),
    XT_TEST(test_round_trip),
    XT_TEST(test_capacity),
    XT_TEST(test_rejects),
    XT_END
};

int main(void)
{
    const xt_suite_t suites[] = { { "base64", tests } };

    return xt_run("test-base64", suites, 1);
}
