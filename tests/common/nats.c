/* nats.c - the test nats-server of nats.h: one server with JetStream on a
 * free loopback port, its store in a temporary dir kept across restarts,
 * "up" when it greets a client with an INFO line saying jetstream. */
#include "tests/common/nats.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/runner.h"
#include "tests/common/xt.h"

struct xt_nats {
    char bin[4096];
    char dir[256];              /* js/ and nats<gen>.log */
    char url[64];               /* nats://127.0.0.1:PORT */
    unsigned port, gen;
    int pid;
};

/* Whether the server greets a client with JetStream on (within 500 ms). */
static bool greets(const xt_nats_t *n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)n->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[2048];
    size_t len = 0;
    uint64_t end = xt_now_ms() + 500;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = false;

    if (fd < 0)
        return false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        while (len < sizeof(buf) - 1 && xt_now_ms() < end) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            ssize_t got;

            if (poll(&p, 1, 100) <= 0)
                continue;
            got = read(fd, buf + len, sizeof(buf) - 1 - len);
            if (got <= 0)
                break;
            len += (size_t)got;
            buf[len] = '\0';
            if (strchr(buf, '\n') != NULL) {
                ok = strncmp(buf, "INFO ", 5) == 0 &&
                     strstr(buf, "\"jetstream\":true") != NULL;
                break;
            }
        }
    }
    close(fd);
    return ok;
}

/* Launch generation ++gen and wait up to 10 s for it to greet. */
static bool launch(xt_nats_t *n)
{
    char port[16], store[300], log[300];
    const char *argv[] = {"nats-server", "-a", "127.0.0.1", "-p", port,
                          "-js", "-sd", store, "-l", log, NULL};
    uint64_t end;

    snprintf(port, sizeof(port), "%u", n->port);
    snprintf(store, sizeof(store), "%s/js", n->dir);
    snprintf(log, sizeof(log), "%s/nats%u.log", n->dir, ++n->gen);
    fflush(NULL);
    n->pid = fork();
    if (n->pid < 0) {
        n->pid = 0;
        return false;
    }
    if (n->pid == 0) {
        /* The test may have threads: only async-signal-safe calls here. */
        int fd = open("/dev/null", O_RDWR);

        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(n->bin, (char *const *)argv);
        _exit(127);
    }
    end = xt_now_ms() + 10000;
    while (xt_now_ms() < end) {
        if (greets(n))
            return true;
        if (waitpid(n->pid, NULL, WNOHANG) == n->pid) {
            n->pid = 0;
            return false;
        }
        xt_sleep_ms(50);
    }
    return false;
}

static void show_log(const xt_nats_t *n)
{
    char path[300], buf[4096];
    FILE *f;
    size_t got;

    snprintf(path, sizeof(path), "%s/nats%u.log", n->dir, n->gen);
    fprintf(stderr, "nats-server did not come up; its log (%s):\n", path);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
        fwrite(buf, 1, got, stderr);
    fclose(f);
}

xt_nats_t *xt_nats_start(void)
{
    const char *bin = getenv("XT_NATS_SERVER"), *tmp = getenv("TMPDIR");
    xt_nats_t *n = calloc(1, sizeof(*n));

    if (n == NULL)
        xt_skip("out of memory");
    /* Debian installs it in /usr/sbin; elsewhere it is in /usr/bin. */
    if (bin == NULL)
        bin = access("/usr/bin/nats-server", X_OK) == 0
                  ? "/usr/bin/nats-server" : "/usr/sbin/nats-server";
    snprintf(n->bin, sizeof(n->bin), "%s", bin);
    if (access(n->bin, X_OK) != 0)
        xt_skip("no nats-server at %s (apt-get install nats-server, or set "
                "XT_NATS_SERVER)", n->bin);
    snprintf(n->dir, sizeof(n->dir), "%s/xt-nats.XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(n->dir) == NULL)
        xt_skip("mkdtemp %s: %s", n->dir, strerror(errno));
    n->port = xt_free_port();
    snprintf(n->url, sizeof(n->url), "nats://127.0.0.1:%u", n->port);
    if (n->port == 0 || !launch(n)) {
        show_log(n);
        xt_nats_stop(n);
        return NULL;
    }
    return n;
}

const char *xt_nats_url(const xt_nats_t *nats)
{
    return nats->url;
}

const char *xt_nats_dir(const xt_nats_t *nats)
{
    return nats->dir;
}

int xt_nats_pid(const xt_nats_t *nats)
{
    return nats->pid;
}

void xt_nats_kill(xt_nats_t *nats)
{
    if (nats == NULL || nats->pid <= 0)
        return;
    kill(nats->pid, SIGKILL);
    waitpid(nats->pid, NULL, 0);
    nats->pid = 0;
}

void xt_nats_halt(xt_nats_t *nats)
{
    uint64_t end = xt_now_ms() + 5000;

    if (nats == NULL || nats->pid <= 0)
        return;
    kill(nats->pid, SIGTERM);
    while (waitpid(nats->pid, NULL, WNOHANG) == 0) {
        if (xt_now_ms() > end) {
            kill(nats->pid, SIGKILL);
            waitpid(nats->pid, NULL, 0);
            break;
        }
        xt_sleep_ms(20);
    }
    nats->pid = 0;
}

bool xt_nats_restart(xt_nats_t *nats)
{
    xt_nats_halt(nats);
    if (launch(nats))
        return true;
    show_log(nats);
    return false;
}

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    if (remove(path) != 0)
        fprintf(stderr, "could not remove %s: %s\n", path, strerror(errno));
    return 0;
}

void xt_nats_stop(xt_nats_t *nats)
{
    if (nats == NULL)
        return;
    xt_nats_halt(nats);
    nftw(nats->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(nats);
}
