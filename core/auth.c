/* auth.c - the agent's shared secret: a private key file checked as ssh
 * checks its keys, held in locked memory, used through HMAC-SHA-256. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "core/auth.h"
#include "core/internal.h"

/* How to make a key, said wherever a key file is refused. */
#define KEY_HOWTO "make one with: head -c 32 /dev/urandom > FILE; " \
                  "chmod 600 FILE"

struct xfer__auth {
    EVP_MAC *hmac;     /* fetched once; contexts are made per MAC */
    uint8_t *key;      /* in pages of its own: locked, not in core dumps */
    size_t len;
    size_t map_len;
};

static xfer_status_t refuse(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static xfer_status_t refuse(const char *path, const char *fmt, ...)
{
    char why[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return xfer__err(XFER_ERR_INVALID, "auth key file '%s' %s", path, why);
}

/* Bytes read of a key file: a longest key, its newline, and one more to
 * tell that the file is longer. */
#define READ_MAX (XFER__AUTH_KEY_MAX + 2)

/* The file's bytes, at most READ_MAX of them, into buf;
 * the checks on the open file (not the path: nothing can be swapped in
 * between) come first. */
static xfer_status_t key_read(const char *path, uint8_t *buf, size_t *len)
{
    struct stat sb;
    size_t got = 0;
    xfer_status_t st = XFER_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

    if (fd < 0)
        return refuse(path, "cannot be opened: %s (%s)", strerror(errno),
                      KEY_HOWTO);
    if (fstat(fd, &sb) != 0) {
        st = refuse(path, "cannot be examined: %s", strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        st = refuse(path, "is not a regular file");
    } else if (sb.st_uid != geteuid() && sb.st_uid != 0) {
        st = refuse(path, "belongs to uid %u, neither this process's user "
                    "(uid %u) nor root", (unsigned)sb.st_uid,
                    (unsigned)geteuid());
    } else if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
        st = refuse(path, "is open to group or others (mode %04o): a shared "
                    "secret must be private, chmod 600 it",
                    (unsigned)(sb.st_mode & 07777));
    }
    while (st == XFER_OK && got < READ_MAX) {
        ssize_t n = read(fd, buf + got, READ_MAX - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            st = refuse(path, "cannot be read: %s", strerror(errno));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return st;
}

xfer_status_t xfer__auth_load(const char *path, xfer__auth_t **out)
{
    long page = sysconf(_SC_PAGESIZE);
    xfer__auth_t *k;
    size_t len = 0;
    xfer_status_t st;
    void *map;

    *out = NULL;
    if (path == NULL) {
        path = getenv("XFER_AUTH_KEY_FILE");
        if (path == NULL || path[0] == '\0')
            return XFER_OK;
    } else if (path[0] == '\0') {
        return xfer__err(XFER_ERR_INVALID, "auth_key_file is an empty path "
                         "(NULL means no authentication)");
    }
    if (page <= 0)
        page = 4096;
    k = calloc(1, sizeof(*k));
    if (k == NULL)
        return xfer__err(XFER_ERR_NOMEM, "out of memory");
    k->map_len = (READ_MAX + (size_t)page - 1) & ~((size_t)page - 1);
    map = mmap(NULL, k->map_len, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        free(k);
        return xfer__err(XFER_ERR_NOMEM, "no memory for the auth key: %s",
                         strerror(errno));
    }
    k->key = map;
    /* Best effort: kept out of swap and core dumps where the limits let
     * us (RLIMIT_MEMLOCK is often small, and a page is all we ask). */
    (void)mlock(k->key, k->map_len);
    (void)madvise(k->key, k->map_len, MADV_DONTDUMP);
    st = key_read(path, k->key, &len);
    /* A key typed or echoed into the file ends with a newline that is
     * not part of it; binary keys lose one trailing '\n' alike on every
     * side, so all agents still agree. */
    if (st == XFER_OK && len > 0 && k->key[len - 1] == '\n')
        len--;
    if (st == XFER_OK && len > XFER__AUTH_KEY_MAX)
        st = refuse(path, "is longer than %d bytes", XFER__AUTH_KEY_MAX);
    else if (st == XFER_OK && len == 0)
        st = refuse(path, "is empty (%s)", KEY_HOWTO);
    else if (st == XFER_OK && len < XFER__AUTH_KEY_MIN)
        st = refuse(path, "holds %zu bytes, fewer than %d (%s)", len,
                    XFER__AUTH_KEY_MIN, KEY_HOWTO);
    k->len = len;
    if (st == XFER_OK) {
        k->hmac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
        if (k->hmac == NULL)
            st = xfer__err(XFER_ERR_BACKEND, "OpenSSL provides no HMAC");
    }
    if (st != XFER_OK) {
        xfer__auth_free(k);
        return st;
    }
    *out = k;
    return XFER_OK;
}

void xfer__auth_free(xfer__auth_t *k)
{
    if (k == NULL)
        return;
    OPENSSL_cleanse(k->key, k->map_len);
    munlock(k->key, k->map_len);
    munmap(k->key, k->map_len);
    EVP_MAC_free(k->hmac);
    free(k);
}

xfer_status_t xfer__auth_mac(const xfer__auth_t *k,
                             const xfer__auth_part_t *parts, size_t nparts,
                             uint8_t mac[XFER_AUTH_MAC_LEN])
{
    char digest[] = "SHA256";
    OSSL_PARAM params[2];
    EVP_MAC_CTX *ctx;
    size_t outl = 0;
    int ok;

    if (k == NULL)
        return xfer__err(XFER_ERR_NOT_SUPPORTED, "this agent has no auth "
                         "key");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    /* A context per MAC: the key is copied into it and wiped with it,
     * and concurrent callers share nothing but the fetched algorithm. */
    ctx = EVP_MAC_CTX_new(k->hmac);
    ok = ctx != NULL && EVP_MAC_init(ctx, k->key, k->len, params);
    for (size_t i = 0; ok && i < nparts; i++)
        ok = parts[i].len == 0 ||
             EVP_MAC_update(ctx, parts[i].p, parts[i].len);
    ok = ok && EVP_MAC_final(ctx, mac, &outl, XFER_AUTH_MAC_LEN) &&
         outl == XFER_AUTH_MAC_LEN;
    EVP_MAC_CTX_free(ctx);
    if (!ok)
        return xfer__err(XFER_ERR_BACKEND, "HMAC-SHA-256 failed in OpenSSL");
    return XFER_OK;
}

xfer_status_t xfer__auth_check(const xfer__auth_t *k,
                               const xfer__auth_part_t *parts, size_t nparts,
                               const uint8_t mac[XFER_AUTH_MAC_LEN])
{
    uint8_t want[XFER_AUTH_MAC_LEN];
    xfer_status_t st;

    if (k == NULL)
        return XFER_ERR_AUTH;
    st = xfer__auth_mac(k, parts, nparts, want);
    if (st == XFER_OK && CRYPTO_memcmp(want, mac, XFER_AUTH_MAC_LEN) != 0)
        st = XFER_ERR_AUTH;
    OPENSSL_cleanse(want, sizeof(want));
    return st == XFER_OK ? XFER_OK : XFER_ERR_AUTH;
}

static uint8_t *put_name_epoch(uint8_t *p, const char *name, uint64_t epoch)
{
    size_t n = strlen(name);

    if (n > XFER_NAME_MAX)
        n = XFER_NAME_MAX;
    *p++ = (uint8_t)n;
    memcpy(p, name, n);
    p += n;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(epoch >> (8 * i));
    return p;
}

size_t xfer__auth_transcript(uint8_t *out, const char *label,
                             const uint8_t *nonce_a, const uint8_t *nonce_b,
                             const char *name1, uint64_t epoch1,
                             const char *name2, uint64_t epoch2)
{
    size_t ll = strlen(label) + 1;
    uint8_t *p = out;

    if (ll > 32)
        ll = 32;
    memcpy(p, label, ll);
    p += ll;
    memcpy(p, nonce_a, XFER__AUTH_NONCE_LEN);
    p += XFER__AUTH_NONCE_LEN;
    memcpy(p, nonce_b, XFER__AUTH_NONCE_LEN);
    p += XFER__AUTH_NONCE_LEN;
    p = put_name_epoch(p, name1, epoch1);
    p = put_name_epoch(p, name2, epoch2);
    return (size_t)(p - out);
}
