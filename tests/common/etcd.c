/* etcd.c - the test etcd of etcd.h: one member on two free loopback ports,
 * a fresh data dir per start, health and API calls through libcurl; over
 * TLS with certificates the openssl command makes in its dir. */
#include "tests/common/etcd.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/xt.h"

/* The files of a TLS etcd in its dir: xt_etcd_file_t's, then its own. */
enum { SERVER_CERT = XT_ETCD_OTHER_CA + 1, SERVER_KEY, NFILES };
static const char *const file_names[NFILES] = {
    "ca.pem", "client.pem", "client.key", "other-ca.pem", "server.pem",
    "server.key",
};

struct xt_etcd {
    char bin[4096];
    char dir[256];              /* data<gen>/ and etcd<gen>.log */
    char url[64];               /* http(s)://127.0.0.1:PORT */
    unsigned peer_port, gen;
    int pid;
    bool tls;
    char files[NFILES][300];    /* tls: paths of file_names */
};

typedef struct sink {
    char *buf;
    size_t size, len;
} sink_t;

static size_t sink(char *p, size_t sz, size_t n, void *ud)
{
    sink_t *s = ud;
    size_t add = sz * n, room = s->size - 1 - s->len;

    memcpy(s->buf + s->len, p, add < room ? add : room);
    s->len += add < room ? add : room;
    s->buf[s->len] = '\0';
    return add;
}

/* GET path, or POST body as JSON when body is set. */
static bool call(const xt_etcd_t *e, const char *path, const char *body,
                 char *out, size_t size, long timeout_ms)
{
    char url[128];
    sink_t s = {out, size, 0};
    struct curl_slist *hdrs = NULL;
    CURL *h = curl_easy_init();
    CURLcode rc;

    out[0] = '\0';
    if (h == NULL)
        return false;
    snprintf(url, sizeof(url), "%s%s", e->url, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, (void *)&s);
    if (e->tls) {
        curl_easy_setopt(h, CURLOPT_CAINFO, e->files[XT_ETCD_CA]);
        curl_easy_setopt(h, CURLOPT_SSLCERT, e->files[XT_ETCD_CERT]);
        curl_easy_setopt(h, CURLOPT_SSLKEY, e->files[XT_ETCD_KEY]);
    }
    if (body != NULL) {
        hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    }
    rc = curl_easy_perform(h);
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return rc == CURLE_OK;
}

bool xt_etcd_post(xt_etcd_t *etcd, const char *path, const char *body,
                  char *out, size_t size)
{
    return call(etcd, path, body, out, size, 2000);
}

static bool healthy(const xt_etcd_t *e)
{
    char body[256];

    return call(e, "/health", NULL, body, sizeof(body), 500) &&
           strstr(body, "\"health\":\"true\"") != NULL;
}

/* Launch generation ++gen and wait up to 10 s for it to be healthy. */
static bool launch(xt_etcd_t *e)
{
    char data[300], log[300], purl[64], cluster[96];
    const char *argv[24] = {
        "etcd", "--name", "xt", "--data-dir", data, "--listen-client-urls",
        e->url, "--advertise-client-urls", e->url, "--listen-peer-urls",
        purl, "--initial-advertise-peer-urls", purl, "--initial-cluster",
        cluster,
    };
    size_t argc = 15;
    uint64_t end;

    snprintf(data, sizeof(data), "%s/data%u", e->dir, ++e->gen);
    snprintf(log, sizeof(log), "%s/etcd%u.log", e->dir, e->gen);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%u", e->peer_port);
    snprintf(cluster, sizeof(cluster), "xt=%s", purl);
    if (e->tls) {
        /* Clients only: the one member's peer URL stays plain. */
        argv[argc++] = "--cert-file";
        argv[argc++] = e->files[SERVER_CERT];
        argv[argc++] = "--key-file";
        argv[argc++] = e->files[SERVER_KEY];
        argv[argc++] = "--trusted-ca-file";
        argv[argc++] = e->files[XT_ETCD_CA];
        argv[argc++] = "--client-cert-auth";
    }
    argv[argc] = NULL;
    fflush(NULL);
    e->pid = fork();
    if (e->pid < 0) {
        e->pid = 0;
        return false;
    }
    if (e->pid == 0) {
        /* The test may have threads: only async-signal-safe calls here. */
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(e->bin, (char *const *)argv);
        _exit(127);
    }
    end = xt_now_ms() + 10000;
    while (xt_now_ms() < end) {
        if (healthy(e))
            return true;
        if (waitpid(e->pid, NULL, WNOHANG) == e->pid) {
            e->pid = 0;
            return false;
        }
        xt_sleep_ms(50);
    }
    return false;
}

void xt_etcd_halt(xt_etcd_t *etcd)
{
    uint64_t end = xt_now_ms() + 5000;

    if (etcd == NULL || etcd->pid <= 0)
        return;
    kill(etcd->pid, SIGTERM);
    while (waitpid(etcd->pid, NULL, WNOHANG) == 0) {
        if (xt_now_ms() > end) {
            kill(etcd->pid, SIGKILL);
            waitpid(etcd->pid, NULL, 0);
            break;
        }
        xt_sleep_ms(20);
    }
    etcd->pid = 0;
}

bool xt_etcd_restart(xt_etcd_t *etcd)
{
    xt_etcd_halt(etcd);
    return launch(etcd);
}

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "could not remove %s: %s\n", path, strerror(errno));
    return 0;
}

void xt_etcd_stop(xt_etcd_t *etcd)
{
    if (etcd == NULL)
        return;
    xt_etcd_halt(etcd);
    nftw(etcd->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(etcd);
    curl_global_cleanup();
}

/* What a helper said before it gave up, for the reader of the test log. */
static void show_file(const char *path, const char *what)
{
    char buf[4096];
    FILE *f;
    size_t n;

    fprintf(stderr, "%s; its log (%s):\n", what, path);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, n, stderr);
    fclose(f);
}

static void show_log(const xt_etcd_t *e)
{
    char path[300];

    snprintf(path, sizeof(path), "%s/etcd%u.log", e->dir, e->gen);
    show_file(path, "etcd did not become healthy");
}

/* The openssl command to use, or NULL when there is none. */
static const char *openssl_bin(void)
{
    const char *bin = getenv("XT_OPENSSL");

    if (bin != NULL)
        return access(bin, X_OK) == 0 ? bin : NULL;
    return system("command -v openssl >/dev/null 2>&1") == 0 ? "openssl"
                                                              : NULL;
}

/* A CA and a second one, a server certificate for 127.0.0.1 and a client
 * certificate signed by the first, all EC P-256 and valid for a day, made
 * in e->dir (0700, removed with it); false with openssl's words on
 * stderr. */
static bool make_certs(xt_etcd_t *e, const char *openssl)
{
    char cmd[4096];
    int n, rc;

    for (int i = 0; i < NFILES; i++)
        snprintf(e->files[i], sizeof(e->files[i]), "%s/%s", e->dir,
                 file_names[i]);
    /* The server certificate is also etcd's client one: its gateway
     * dials its own gRPC port with it, hence clientAuth. */
    n = snprintf(cmd, sizeof(cmd),
        "set -e; cd '%s'; exec >certs.log 2>&1; o='%s'; k='-newkey ec -pkeyopt "
        "ec_paramgen_curve:prime256v1 -nodes'\n"
        "$o req -x509 $k -days 1 -subj /CN=xt-ca -keyout ca.key "
        "-out ca.pem\n"
        "$o req -x509 $k -days 1 -subj /CN=xt-other-ca -keyout other-ca.key "
        "-out other-ca.pem\n"
        "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,"
        "clientAuth\\n' >server.ext\n"
        "printf 'extendedKeyUsage=clientAuth\\n' >client.ext\n"
        "for c in server client; do\n"
        "  $o req -new $k -subj /CN=xt-$c -keyout $c.key -out $c.csr\n"
        "  $o x509 -req -days 1 -in $c.csr -CA ca.pem -CAkey ca.key "
        "-CAcreateserial -extfile $c.ext -out $c.pem\n"
        "done\n", e->dir, openssl);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return false;
    fflush(NULL);
    /* openssl chats on stderr even when it works: that goes to a file,
     * shown only when it failed. */
    rc = system(cmd);
    if (rc != 0) {
        snprintf(cmd, sizeof(cmd), "%s/certs.log", e->dir);
        show_file(cmd, "openssl could not make the test certificates");
    }
    return rc == 0;
}

static xt_etcd_t *start(bool tls)
{
    const char *bin = getenv("XT_ETCD"), *tmp = getenv("TMPDIR");
    const char *openssl = NULL;
    xt_etcd_t *e = calloc(1, sizeof(*e));

    if (e == NULL)
        xt_skip("out of memory");
    snprintf(e->bin, sizeof(e->bin), "%s", bin ? bin : "/usr/bin/etcd");
    if (access(e->bin, X_OK) != 0)
        xt_skip("no etcd at %s (apt-get install etcd-server, or set XT_ETCD)",
                e->bin);
    if (tls && (openssl = openssl_bin()) == NULL)
        xt_skip("no openssl command to make the test CA (apt-get install "
                "openssl, or set XT_OPENSSL)");
    snprintf(e->dir, sizeof(e->dir), "%s/xt-etcd.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(e->dir) == NULL)
        xt_skip("mkdtemp %s: %s", e->dir, strerror(errno));
    e->tls = tls;
    if (tls && !make_certs(e, openssl)) {
        xt_etcd_stop(e);
        return NULL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(e->url, sizeof(e->url), "%s://127.0.0.1:%u",
             tls ? "https" : "http", xt_free_port());
    e->peer_port = xt_free_port();
    if (!launch(e)) {
        show_log(e);
        xt_etcd_stop(e);
        return NULL;
    }
    return e;
}

xt_etcd_t *xt_etcd_start(void)
{
    return start(false);
}

xt_etcd_t *xt_etcd_start_tls(void)
{
    return start(true);
}

const char *xt_etcd_file(const xt_etcd_t *etcd, xt_etcd_file_t which)
{
    return etcd->tls ? etcd->files[which] : NULL;
}

const char *xt_etcd_url(const xt_etcd_t *etcd)
{
    return etcd->url;
}

const char *xt_etcd_dir(const xt_etcd_t *etcd)
{
    return etcd->dir;
}
