/* test-auth.c - the shared secret alone: key files refused for every reason
 * with a sentence, HMAC-SHA-256 against RFC 4231, and signed metadata that
 * loads only intact and only from a holder of the key (ptest backend). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "tests/common/xt.h"

/* ---- key files ---------------------------------------------------------------- */

static char dir[64];

static void dir_remove(void *arg)
{
    char cmd[128];

    (void)arg;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    dir[0] = '\0';
}

/* A file of dir holding n bytes of data, with mode; returns its path
 * (valid until the next call with the same slot). */
static const char *key_file(int slot, const void *data, size_t n,
                            mode_t mode)
{
    static char paths[8][128];
    char *path = paths[slot];
    int fd;

    if (dir[0] == '\0') {
        snprintf(dir, sizeof(dir), "/tmp/xfer-auth-XXXXXX");
        XT_REQUIRE(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
        xt_defer_late(dir_remove, NULL);
    }
    snprintf(path, sizeof(paths[0]), "%s/key%d", dir, slot);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    XT_REQUIRE(fd >= 0, "create %s: %s", path, strerror(errno));
    XT_REQUIRE(write(fd, data, n) == (ssize_t)n, "write %s", path);
    close(fd);
    XT_REQUIRE(chmod(path, mode) == 0, "chmod %s", path);
    return path;
}

/* Load path; it must be refused with every fragment in the sentence. */
#define REFUSED(path, ...)                                                  \
    do {                                                                    \
        xfer__auth_t *k_ = NULL;                                            \
        xfer__err_clear();                                                  \
        XT_STATUS(xfer__auth_load((path), &k_), XFER_ERR_INVALID);          \
        XT_CHECK(k_ == NULL, "a refused key was kept");                     \
        XT_ERR_HAS("auth key file", (path), __VA_ARGS__);                   \
    } while (0)

static void test_key_refusals(void)
{
    static char big[XFER__AUTH_KEY_MAX + 2];
    const char *good = "0123456789abcdef0123456789abcdef";
    xfer__auth_t *k = NULL;
    const char *p;

    memset(big, 'k', sizeof(big));
    p = key_file(0, good, 32, 0600);
    /* The file is gone. */
    unlink(p);
    REFUSED(p, "cannot be opened", "No such file", "head -c 32 /dev/urandom");
    /* Not a regular file. */
    key_file(0, good, 32, 0600);
    REFUSED(dir, "is not a regular file");
    REFUSED("/dev/null", "is not a regular file");
    /* Open to others, in each way ssh refuses. */
    p = key_file(1, good, 32, 0644);
    REFUSED(p, "open to group or others", "mode 0644", "chmod 600");
    p = key_file(1, good, 32, 0620);
    REFUSED(p, "open to group or others", "mode 0620");
    p = key_file(1, good, 32, 0602);
    REFUSED(p, "open to group or others", "mode 0602");
    p = key_file(1, good, 32, 0640);
    REFUSED(p, "mode 0640");
    /* Sizes: empty, a newline alone, too short (with or without its
     * newline), too long. */
    p = key_file(2, "", 0, 0600);
    REFUSED(p, "is empty", "head -c 32 /dev/urandom");
    p = key_file(2, "\n", 1, 0600);
    REFUSED(p, "is empty");
    p = key_file(2, good, 15, 0600);
    REFUSED(p, "holds 15 bytes, fewer than 16");
    p = key_file(2, "0123456789abcde\n", 16, 0600);
    REFUSED(p, "holds 15 bytes, fewer than 16");
    p = key_file(2, big, XFER__AUTH_KEY_MAX + 1, 0600);
    REFUSED(p, "longer than 4096 bytes");
    big[XFER__AUTH_KEY_MAX + 1] = '\n';
    p = key_file(2, big, XFER__AUTH_KEY_MAX + 2, 0600);
    REFUSED(p, "longer than 4096 bytes");
    /* The bounds themselves load, a trailing newline trimmed; an owner's
     * read-only file too. */
    p = key_file(3, good, 16, 0400);
    XT_STATUS(xfer__auth_load(p, &k), XFER_OK);
    xfer__auth_free(k);
    big[XFER__AUTH_KEY_MAX] = '\n';
    p = key_file(3, big, XFER__AUTH_KEY_MAX + 1, 0600);
    XT_STATUS(xfer__auth_load(p, &k), XFER_OK);
    xfer__auth_free(k);
    /* Another user's file: only root can make one to test with. */
    if (geteuid() == 0) {
        p = key_file(4, good, 32, 0600);
        XT_REQUIRE(chown(p, 12345, 0) == 0, "chown: %s", strerror(errno));
        REFUSED(p, "belongs to uid 12345");
    } else {
        printf("  (not root: a file of another user is not tried)\n");
    }
    /* No path, no variable: no secret; an empty path is a mistake. */
    unsetenv("XFER_AUTH_KEY_FILE");
    k = (xfer__auth_t *)1;
    XT_STATUS(xfer__auth_load(NULL, &k), XFER_OK);
    XT_CHECK(k == NULL, "a secret from nowhere");
    XT_STATUS(xfer__auth_load("", &k), XFER_ERR_INVALID);
    XT_ERR_HAS("auth_key_file is an empty path");
}

static void unset_key_env(void *arg)
{
    (void)arg;
    unsetenv("XFER_AUTH_KEY_FILE");
}

/* The agent refuses to exist with a bad key, whether the option or the
 * environment names it, and says which agent and which file. */
static void test_agent_refuses_key(void)
{
    const char *bad = key_file(0, "0123456789abcdef", 16, 0664);
    const char *good = key_file(1, "0123456789abcdef", 16, 0600);
    xfer_agent_opts_t opts;
    xfer_agent_t *a = NULL;

    xt_defer(unset_key_env, NULL);
    xfer_agent_opts_init(&opts);
    opts.name = xt_name("keyed");
    opts.auth_key_file = bad;
    XT_STATUS(xfer_agent_create(&opts, &a), XFER_ERR_INVALID);
    XT_ERR_HAS(opts.name, "auth key file", bad, "mode 0664");
    XT_CHECK(a == NULL, "an agent without its secret");
    opts.auth_key_file = NULL;
    setenv("XFER_AUTH_KEY_FILE", bad, 1);
    XT_STATUS(xfer_agent_create(&opts, &a), XFER_ERR_INVALID);
    XT_ERR_HAS("auth key file", bad);
    /* The option wins over the variable. */
    opts.auth_key_file = good;
    XT_STATUS_FATAL(xfer_agent_create(&opts, &a), XFER_OK);
    XT_CHECK(a->auth != NULL, "no secret loaded");
    xfer_agent_destroy(a);
}

/* ---- HMAC-SHA-256 --------------------------------------------------------------- */

static void hex_to(const char *hex, uint8_t *out)
{
    for (size_t i = 0; hex[2 * i]; i++) {
        unsigned v;

        XT_REQUIRE(sscanf(hex + 2 * i, "%2x", &v) == 1, "bad hex");
        out[i] = (uint8_t)v;
    }
}

/* RFC 4231, section 4: the cases whose keys a key file can hold (16
 * bytes or more; 5 is a truncated MAC). */
static void test_hmac_rfc4231(void)
{
    static const char t6[] =
        "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char t7[] =
        "This is a test using a larger than block-size key and a larger than "
        "block-size data. The key needs to be hashed before being used by "
        "the HMAC algorithm.";
    uint8_t k1[20], k3[20], k4[25], k6[131], d3[50], d4[50];
    struct {
        const uint8_t *key;
        size_t klen;
        const void *data;
        size_t dlen;
        const char *mac;
    } tc[] = {
        {k1, 20, "Hi There", 8, "b0344c61d8db38535ca8afceaf0bf12b"
                                "881dc200c9833da726e9376c2e32cff7"},
        {k3, 20, d3, 50, "773ea91e36800e46854db8ebd09181a7"
                         "2959098b3ef8c122d9635514ced565fe"},
        {k4, 25, d4, 50, "82558a389a443c0ea4cc819899f2083a"
                         "85f0faa3e578f8077a2e3ff46729665b"},
        {k6, 131, t6, sizeof(t6) - 1, "60e431591ee0b67f0d8a26aacbf5b77f"
                                      "8e0bc6213728c5140546040f0ee37f54"},
        {k6, 131, t7, sizeof(t7) - 1, "9b09ffa71b942fcb27635fbcd5b0e944"
                                      "bfdc63644f0713938a7f51535c3a35e2"},
    };

    memset(k1, 0x0b, sizeof(k1));
    memset(k3, 0xaa, sizeof(k3));
    memset(d3, 0xdd, sizeof(d3));
    for (unsigned i = 0; i < sizeof(k4); i++)
        k4[i] = (uint8_t)(i + 1);
    memset(d4, 0xcd, sizeof(d4));
    memset(k6, 0xaa, sizeof(k6));
    for (size_t i = 0; i < sizeof(tc) / sizeof(tc[0]); i++) {
        xfer__auth_t *k = NULL;
        uint8_t want[XFER_AUTH_MAC_LEN], got[XFER_AUTH_MAC_LEN];
        const char *path = key_file(0, tc[i].key, tc[i].klen, 0600);
        xfer__auth_part_t one = {tc[i].data, tc[i].dlen};

        hex_to(tc[i].mac, want);
        XT_STATUS_FATAL(xfer__auth_load(path, &k), XFER_OK);
        XT_STATUS(xfer__auth_mac(k, &one, 1, got), XFER_OK);
        XT_CHECK(memcmp(got, want, sizeof(want)) == 0, "case %zu: wrong MAC",
                 i);
        /* The same message in pieces, cut anywhere, is the same MAC. */
        for (size_t cut = 0; cut <= tc[i].dlen; cut += 7) {
            xfer__auth_part_t two[3] = {
                {tc[i].data, cut},
                {"", 0},
                {(const char *)tc[i].data + cut, tc[i].dlen - cut},
            };

            XT_STATUS(xfer__auth_check(k, two, 3, want), XFER_OK);
        }
        /* One bit off, in the MAC or in the message: refused. */
        want[i % sizeof(want)] ^= 0x20;
        XT_STATUS(xfer__auth_check(k, &one, 1, want), XFER_ERR_AUTH);
        want[i % sizeof(want)] ^= 0x20;
        one.len--;
        XT_STATUS(xfer__auth_check(k, &one, 1, want), XFER_ERR_AUTH);
        xfer__auth_free(k);
    }
    /* Without a secret there is nothing to check against. */
    {
        uint8_t mac[XFER_AUTH_MAC_LEN] = {0};
        xfer__auth_part_t one = {"x", 1};

        XT_STATUS(xfer__auth_check(NULL, &one, 1, mac), XFER_ERR_AUTH);
        XT_STATUS(xfer__auth_mac(NULL, &one, 1, mac), XFER_ERR_NOT_SUPPORTED);
    }
}

/* ---- signed metadata --------------------------------------------------------------- */

static xfer_agent_t *keyed_agent(const char *name, const char *keyfile)
{
    xfer_agent_t *a;

    if (keyfile != NULL)
        setenv("XFER_AUTH_KEY_FILE", keyfile, 1);
    else
        unsetenv("XFER_AUTH_KEY_FILE");
    a = xt_agent(name, "ptest", 1);
    unsetenv("XFER_AUTH_KEY_FILE");
    return a;
}

static const char *key_a(void)
{
    return key_file(5, "key A: 0123456789abcdef0123456789", 33, 0600);
}

static const char *key_b(void)
{
    return key_file(6, "key B: 0123456789abcdef0123456789", 33, 0600);
}

static void test_md_signed(void)
{
    const char *tname = xt_name("signer");
    xfer_agent_t *t = keyed_agent(tname, key_a());
    xfer_agent_t *same = keyed_agent(xt_name("same"), key_a());
    xfer_agent_t *other = keyed_agent(xt_name("other"), key_b());
    xfer_agent_t *plain = keyed_agent(xt_name("plain"), NULL);
    xfer_agent_t *ptgt = keyed_agent(xt_name("ptgt"), NULL);
    char *buf = xt_alloc(4096);
    size_t len, plen;
    char *blob, *pblob, *mac;

    xt_register(t, buf, 4096);
    blob = xt_md_get(t, XFER_MD_ALL, NULL, 0, &len);
    /* The signature takes the place of the closing brace. */
    mac = strstr(blob, ",\"mac\":\"");
    XT_REQUIRE(mac != NULL && mac + 8 + 64 + 2 == blob + len &&
                   strcmp(blob + len - 2, "\"}") == 0,
               "no signature at the end of '%s'", blob);
    /* A holder of the key loads it; so does an agent without a key,
     * which cannot check it (and ignores it). */
    XT_STATUS(xfer_md_load(same, blob, len, NULL, 0), XFER_OK);
    XT_STATUS(xfer_md_load(plain, blob, len, NULL, 0), XFER_OK);
    /* Another key, no signature at all: refused, by the application's
     * xfer_md_load too, and nothing loaded. */
    XT_STATUS(xfer_md_load(other, blob, len, NULL, 0), XFER_ERR_AUTH);
    XT_ERR_HAS("metadata for", tname, "is not signed by this agent's "
               "secret");
    XT_CHECK(xfer_md_check(other, tname) == XFER_ERR_NOT_FOUND,
             "a refused blob was loaded");
    pblob = xt_md_get(ptgt, XFER_MD_ALL, NULL, 0, &plen);
    XT_CHECK(strstr(pblob, "\"mac\"") == NULL, "a keyless agent signed");
    XT_STATUS(xfer_md_load(same, pblob, plen, NULL, 0), XFER_ERR_AUTH);
    XT_ERR_HAS("is not signed by this agent's secret");
    /* The MAC in capitals, cut short, or moved: not a signature. */
    {
        char *c = strdup(blob);

        for (char *p = c + len - 66; p < c + len - 2; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
        XT_STATUS(xfer_md_load(other, c, len, NULL, 0), XFER_ERR_AUTH);
        free(c);
    }
    XT_STATUS(xfer_md_load(same, blob, len - 1, NULL, 0), XFER_ERR_INVALID);
    /* The trailing NUL xfer_md_get's length leaves out is tolerated. */
    XT_STATUS(xfer_md_load(same, blob, len + 1, NULL, 0), XFER_OK);
}

/* Every byte of a signed blob matters: flip one anywhere and it never
 * loads (refused as unsigned or as malformed). */
static void test_md_tampered(void)
{
    const char *tname = xt_name("tamper");
    xfer_agent_t *t = keyed_agent(tname, key_a());
    xfer_agent_t *r = keyed_agent(xt_name("rcv"), key_a());
    char *buf = xt_alloc(4096);
    uint64_t seed = xt_seed(), rs = seed;
    size_t len, auth = 0;
    char *blob;

    printf("  seed %" PRIu64 "\n", seed);
    xt_register(t, buf, 4096);
    blob = xt_md_get(t, XFER_MD_ALL, NULL, 0, &len);
    for (size_t i = 0; i < len; i++) {
        char *c = strdup(blob);
        size_t at = i;
        xfer_status_t st;

        /* Every position once, then its bit picked at random. */
        c[at] = (char)(c[at] ^ (1u << (xt_rand(&rs) % 7)));
        if (c[at] == '\0')
            c[at] = (char)(c[at] ^ 1);
        st = xfer_md_load(r, c, len, NULL, 0);
        XT_CHECK(st == XFER_ERR_AUTH || st == XFER_ERR_INVALID,
                 "byte %zu flipped: %s (%s)", at, xt_status_name(st),
                 xfer_last_error());
        auth += st == XFER_ERR_AUTH;
        free(c);
    }
    XT_CHECK(xfer_md_check(r, tname) == XFER_ERR_NOT_FOUND,
             "a tampered blob was loaded");
    XT_CHECK(auth > 0, "no flip was refused for its signature");
    XT_STATUS(xfer_md_load(r, blob, len, NULL, 0), XFER_OK);
}

/* What a listener client may do, at the level of the loader: without a
 * secret, add names but never take a loaded one over; with one, only
 * what names the client that authenticated. */
static void test_md_sent(void)
{
    const char *pname = xt_name("peer");
    xfer_agent_t *rcv = keyed_agent(xt_name("rcv"), NULL);
    xfer_agent_t *old = keyed_agent(pname, NULL);
    xfer_agent_t *newer = keyed_agent(pname, NULL);
    xfer_agent_t *krcv = keyed_agent(xt_name("krcv"), key_a());
    xfer_agent_t *kpeer = keyed_agent(xt_name("kpeer"), key_a());
    char *buf = xt_alloc(4096), name[XFER_NAME_MAX + 1];
    size_t len, nlen, mlen, klen;
    char *blob, *nblob, *mblob, *kblob;

    xt_register(old, buf, 4096);
    blob = xt_md_get(old, XFER_MD_ALL, NULL, 0, &len);
    mblob = xt_md_get(old, XFER_MD_MEM, NULL, 0, &mlen);
    nblob = xt_md_get(newer, XFER_MD_ALL, NULL, 0, &nlen);
    /* A new name: accepted. */
    XT_STATUS(xfer__md_apply_sent(rcv, blob, len, NULL, name, sizeof(name)),
              XFER_OK);
    /* A newer epoch of it: refused, and the loaded one stays. */
    XT_STATUS(xfer__md_apply_sent(rcv, nblob, nlen, NULL, NULL, 0),
              XFER_ERR_AUTH);
    XT_ERR_HAS("replacing loaded agent", pname, "through the listener needs "
               "authentication; the application can load it itself");
    /* Its connection info again, at the same epoch: refused too. */
    XT_STATUS(xfer__md_apply_sent(rcv, blob, len, NULL, NULL, 0),
              XFER_ERR_AUTH);
    XT_ERR_HAS("changing loaded agent", pname, "needs authentication");
    /* Registrations alone, at its epoch: refused as well (they could add
     * regions or replace their public parts); the loaded ones stay. */
    XT_STATUS(xfer__md_apply_sent(rcv, mblob, mlen, NULL, NULL, 0),
              XFER_ERR_AUTH);
    XT_ERR_HAS("changing loaded agent", pname);
    {
        xfer_region_info_t ri;
        size_t n = 0;

        XT_STATUS(xfer_md_regions(rcv, pname, &ri, 1, &n), XFER_OK);
        XT_CHECK(n == 1 && ri.addr == (uintptr_t)buf, "regions %zu", n);
    }
    /* The application itself may replace it. */
    XT_STATUS(xfer_md_load(rcv, nblob, nlen, NULL, 0), XFER_OK);
    /* With a secret: the blob must name the client that authenticated. */
    kblob = xt_md_get(kpeer, XFER_MD_ALL, NULL, 0, &klen);
    XT_STATUS(xfer__md_apply_sent(krcv, kblob, klen, "someone-else", NULL, 0),
              XFER_ERR_AUTH);
    XT_ERR_HAS("came from a client that authenticated as agent "
               "'someone-else'");
    XT_STATUS(xfer__md_apply_sent(krcv, kblob, klen, xfer_agent_name(kpeer),
                                  NULL, 0), XFER_OK);
}

int main(void)
{
    static const xt_test_t tests[] = {
        XT_TEST(test_key_refusals),
        XT_TEST(test_agent_refuses_key),
        XT_TEST(test_hmac_rfc4231),
        XT_TEST(test_md_signed),
        XT_TEST(test_md_tampered),
        XT_TEST(test_md_sent),
        XT_END,
    };
    const xt_suite_t suites[] = {{"auth", tests}};

    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    return xt_run("test-auth", suites, 1);
}
