/* uds.c - the Unix-socket backend for processes on one host: control over the
 * shared stream engine; the direct data path (CMA, mapped memfds) is direct.c. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <xfer/backend.h>

#include "plugins/common/stream.h"
#include "plugins/uds/uds.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "0.1.0"
#endif

#define P(n, t, d, doc, f, lo, hi) \
    { n, t, d, doc, offsetof(uds_config_t, f), lo, hi }
static const xfer_param_t uds_params[] = {
    P("path", XFER_PARAM_STRING, "",
      "socket path to listen on (created with mode 0600, removed at exit); "
      "empty: a unique socket in $XDG_RUNTIME_DIR/xfer or /tmp/xfer-<uid>, "
      "a directory of ours with mode 0700; @name or @: an abstract socket, "
      "which any local user may reach (only allowed users are served)",
      path, 1, 0),
    P("allow_uids", XFER_PARAM_STRING, "",
      "users besides our own (numeric uids, separated by ':' or spaces, at "
      "most 32) that may connect, be connected to and share memory; "
      "peers of any other user are refused (SO_PEERCRED)",
      allow_uids, 1, 0),
    P("mode", XFER_PARAM_STRING, "auto",
      "data path: auto (shm where the target's registration covers a "
      "whole xfer_mem_alloc allocation, else cma, else socket), cma, shm "
      "or socket",
      mode, 1, 0),
    P("shm_maps_max", XFER_PARAM_UINT, "1024",
      "memfds shared on one connection, each way (an initiator maps each "
      "until the connection closes); beyond, data moves by cma or the "
      "socket",
      shm_maps_max, 1, 1 << 20),
    P("timeout_ms", XFER_PARAM_UINT, "10000",
      "a connect or posted transfer that makes no progress this long fails "
      "with XFER_ERR_TIMEOUT",
      timeout_ms, 1, 3600000),
    P("inline_max", XFER_PARAM_SIZE, "16K",
      "socket path: payloads up to this size are copied through the "
      "receive buffer",
      inline_max, 0, 16 << 20),
    P("rx_buf", XFER_PARAM_SIZE, "256K",
      "per-connection receive buffer; must exceed inline_max by 40 bytes",
      rx_buf, 4096, 256 << 20),
    P("backlog", XFER_PARAM_UINT, "128", "listen(2) backlog", backlog, 1,
      65535),
    XFER__STREAM_LIMIT_PARAMS(uds_config_t, lim),
};
#undef P

const char *const xfer__uds_mode_names[] = { "auto", "cma", "shm", "socket" };
#define mode_names xfer__uds_mode_names

/* ------------------------------------------------------------------ */
/* Host identity: two agents may share memory only on one kernel       */
/* ------------------------------------------------------------------ */

static void host_ids(char *boot, char *host)
{
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

    memset(boot, 0, UDS_BOOT_LEN);
    memset(host, 0, UDS_HOST_LEN);
    if (f) {
        char line[64] = "";

        if (fgets(line, sizeof line, f))
            memcpy(boot, line, strnlen(line, UDS_BOOT_LEN));
        fclose(f);
    }
    if (gethostname(host, UDS_HOST_LEN) != 0)
        host[0] = '\0';
    host[UDS_HOST_LEN - 1] = '\0';
}

static socklen_t info_addr(const uint8_t *info, struct sockaddr_un *sa)
{
    uint16_t plen;

    memcpy(&plen, info + 6, 2);
    plen = le16toh(plen);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (info[5]) {
        memcpy(sa->sun_path + 1, info + 116, plen);
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + plen);
    }
    memcpy(sa->sun_path, info + 116, plen);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
}

/* ------------------------------------------------------------------ */
/* Transport hooks: sockets                                             */
/* ------------------------------------------------------------------ */

static xfer_status_t uds_info_check(void *tctx, const void *info, size_t len)
{
    uds_t *u = tctx;
    const uint8_t *b = info;
    char boot[UDS_BOOT_LEN], host[UDS_HOST_LEN];
    char pboot[UDS_BOOT_LEN + 1], phost[UDS_HOST_LEN + 1];
    uint32_t magic, pid;
    uint16_t plen;

    if (len != UDS_INFO_SIZE)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info is %zu bytes, a uds address is %u",
                    len, UDS_INFO_SIZE);
    memcpy(&magic, b, 4);
    memcpy(&plen, b + 6, 2);
    memcpy(&pid, b + 8, 4);
    plen = le16toh(plen);
    if (le32toh(magic) != UDS_INFO_MAGIC || b[4] != UDS_INFO_VERSION)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info is not a version %u uds address "
                    "(bad magic or version %u)",
                    UDS_INFO_VERSION, b[4]);
    if (b[5] > 1 || !plen || plen > UDS_PATH_MAX - 1 || !pid)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info has a bad socket path or pid");
    memcpy(pboot, b + 16, UDS_BOOT_LEN);
    pboot[UDS_BOOT_LEN] = '\0';
    memcpy(phost, b + 52, UDS_HOST_LEN);
    phost[UDS_HOST_LEN] = '\0';
    memcpy(boot, u->info + 16, UDS_BOOT_LEN);
    memcpy(host, u->info + 52, UDS_HOST_LEN);
    if (memcmp(boot, b + 16, UDS_BOOT_LEN) || memcmp(host, b + 52,
                                                        UDS_HOST_LEN))
        return UERR(u, XFER_ERR_INVALID,
                    "uds: the agent runs on another host (host name '%s', "
                    "boot id '%s'; this is '%.64s', '%.36s'): uds reaches "
                    "processes on this host only, use tcp",
                    phost, pboot, host, boot);
    return XFER_OK;
}

static void uds_info_str(void *tctx, const void *info, size_t len, char *buf,
                         size_t size)
{
    const uint8_t *b = info;
    uint16_t plen;
    uint32_t pid;

    (void)tctx;
    (void)len;
    memcpy(&plen, b + 6, 2);
    memcpy(&pid, b + 8, 4);
    snprintf(buf, size, "%s%.*s pid %u", b[5] ? "@" : "",
             (int)le16toh(plen), (const char *)b + 116,
             (unsigned)le32toh(pid));
}

/* A larger send buffer lets the socket path move big payloads in fewer
 * rounds (the kernel caps it at net.core.wmem_max). */
static void uds_bufs(int fd)
{
    int v = 4 << 20;

    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

int xfer__uds_uid_ok(const uds_t *u, uid_t uid)
{
    if (uid == u->uid)
        return 1;
    for (unsigned i = 0; i < u->nallow; i++)
        if (u->allow[i] == uid)
            return 1;
    return 0;
}

/* Whatever the socket (an abstract one has no permissions at all), only
 * our own user and allow_uids are served: the kernel says who connected. */
static int uds_accepted(void *tctx, int fd)
{
    uds_t *u = tctx;
    struct ucred cr = { 0, (uid_t)-1, (gid_t)-1 };
    socklen_t sl = sizeof cr;

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &sl) < 0 ||
        !xfer__uds_uid_ok(u, cr.uid)) {
        /* Said once at WARN: a local user must not fill our log. */
        ULOG(u, u->refused++ ? XFER_LOG_DEBUG : XFER_LOG_WARN,
             "uds: refused a connection from pid %d, uid %u: not this "
             "user (uid %u) nor one in allow_uids (later refusals are "
             "logged at debug level)",
             (int)cr.pid, (unsigned)cr.uid, (unsigned)u->uid);
        return -1;
    }
    uds_bufs(fd);
    return 0;
}

static int uds_connect(void *tctx, const void *info, size_t len,
                       int *in_progress)
{
    struct sockaddr_un sa;
    socklen_t sl = info_addr(info, &sa);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    (void)tctx;
    (void)len;
    if (fd < 0)
        return -errno;
    uds_bufs(fd);
    if (connect(fd, (struct sockaddr *)&sa, sl) == 0) {
        *in_progress = 0;
        return fd;
    }
    if (errno == EINPROGRESS || errno == EAGAIN) {
        *in_progress = 1;
        return fd;
    }
    {
        int e = errno;

        close(fd);
        return -e;
    }
}

/* The sockets are this file's; the direct path (direct.c) follows
 * connections through the engine's events. */
static const xfer__stream_transport_t uds_transport = {
    .info_check = uds_info_check,
    .connect = uds_connect,
    .accepted = uds_accepted,
    .info_str = uds_info_str,
    .conn_up = xfer__uds_conn_up,
    .conn_down = xfer__uds_conn_down,
    .fd_received = xfer__uds_fd_received,
    .held_ready = xfer__uds_held_ready,
    .mem_checked = xfer__uds_mem_checked,
};

/* ------------------------------------------------------------------ */
/* Backend ops                                                         */
/* ------------------------------------------------------------------ */

/* The directory of default sockets: $XDG_RUNTIME_DIR/xfer when that
 * directory is ours and private, else /tmp/xfer-<uid>.  Created 0700;
 * one that exists must be a directory (not a link) of ours that no one
 * else may enter, or anyone could replace our socket or reach it. */
static xfer_status_t sock_dir(uds_t *u, char *dir, size_t size)
{
    const char *x = secure_getenv("XDG_RUNTIME_DIR");
    struct stat sb;

    if (x && x[0] == '/' && lstat(x, &sb) == 0 && S_ISDIR(sb.st_mode) &&
        sb.st_uid == u->uid && !(sb.st_mode & 077) &&
        (size_t)snprintf(dir, size, "%s/xfer", x) < size)
        ;
    else
        snprintf(dir, size, "/tmp/xfer-%u", (unsigned)u->uid);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return UERR(u, XFER_ERR_BACKEND, "uds: cannot create the socket "
                    "directory %s: %s (set path= to listen elsewhere)", dir,
                    strerror(errno));
    if (lstat(dir, &sb) < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: socket directory %s: %s",
                    dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode) || sb.st_uid != u->uid || (sb.st_mode & 077))
        return UERR(u, XFER_ERR_BACKEND, "uds: socket directory %s is %s "
                    "owned by uid %u with mode 0%o, not a directory of uid "
                    "%u that only it may enter (mode 0700): another user "
                    "could reach or replace our socket; remove it, or set "
                    "path= to listen elsewhere",
                    dir, S_ISDIR(sb.st_mode) ? "a directory" : "not a "
                    "directory,", (unsigned)sb.st_uid,
                    (unsigned)(sb.st_mode & 07777), (unsigned)u->uid);
    return XFER_OK;
}

/* Sockets of agents killed before they could remove theirs: a name of
 * ours whose process is gone and where no one listens.  Bounded work. */
static void sock_sweep(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    unsigned seen = 0;

    while (d && (e = readdir(d)) && seen++ < 256) {
        struct sockaddr_un sa;
        char hex[17], extra;
        long pid;
        int fd;

        if (sscanf(e->d_name, "%ld-%16[0-9a-f].sock%c", &pid, hex,
                   &extra) != 2 || strlen(hex) != 16 || pid <= 0 ||
            kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir,
                             e->d_name) >= sizeof sa.sun_path)
            continue;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            break;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
            errno == ECONNREFUSED)
            unlink(sa.sun_path);
        close(fd);
    }
    if (d)
        closedir(d);
}

static uint64_t rand64(void)
{
    uint64_t rnd = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        if (read(fd, &rnd, sizeof rnd) != (ssize_t)sizeof rnd)
            rnd = 0;
        close(fd);
    }
    return rnd;
}

/* path: a filesystem socket there; "": a unique one in sock_dir();
 * "@name" or "@" (a unique name): an abstract socket. */
static xfer_status_t uds_listen(uds_t *u, struct sockaddr_un *sa,
                                socklen_t *sl, size_t *plen)
{
    const char *path = u->cfg.path ? u->cfg.path : "";
    char fs[UDS_PATH_MAX + 64];
    int abstract = path[0] == '@';
    xfer_status_t st;

    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (abstract && path[1]) {
        snprintf(fs, sizeof fs, "%s", path + 1);
    } else if (abstract) {
        snprintf(fs, sizeof fs, "xfer-uds-%ld-%016llx", (long)getpid(),
                 (unsigned long long)rand64());
    } else if (path[0]) {
        snprintf(fs, sizeof fs, "%s", path);
    } else {
        char dir[UDS_PATH_MAX + 16];

        if ((st = sock_dir(u, dir, sizeof dir)) != XFER_OK)
            return st;
        sock_sweep(dir);
        snprintf(fs, sizeof fs, "%s/%ld-%016llx.sock", dir, (long)getpid(),
                 (unsigned long long)rand64());
    }
    *plen = strlen(fs);
    if (*plen > UDS_PATH_MAX - 2)
        return UERR(u, XFER_ERR_CONFIG,
                    "uds: socket path '%s%s' is longer than %u bytes%s",
                    abstract ? "@" : "", fs, UDS_PATH_MAX - 2,
                    path[0] ? "" : " (XDG_RUNTIME_DIR is too long: set "
                                   "path=)");
    if (abstract) {
        memcpy(sa->sun_path + 1, fs, *plen);
        *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + *plen);
    } else {
        memcpy(sa->sun_path, fs, *plen);
        *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + *plen + 1);
        snprintf(u->fs_path, sizeof u->fs_path, "%s", fs);
    }
    u->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->lfd < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: socket: %s", strerror(errno));
    if (bind(u->lfd, (struct sockaddr *)sa, *sl) < 0) {
        int e = errno;

        u->fs_path[0] = '\0';
        return UERR(u, XFER_ERR_BACKEND, "uds: cannot bind %s%s: %s%s",
                    abstract ? "@" : "", fs, strerror(e),
                    e == EADDRINUSE ? " (remove a stale socket file or pick "
                                      "another path)" : "");
    }
    if (u->fs_path[0] && chmod(u->fs_path, 0600) < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: chmod 0600 %s: %s", u->fs_path,
                    strerror(errno));
    if (listen(u->lfd, (int)u->cfg.backlog) < 0)
        return UERR(u, XFER_ERR_BACKEND, "uds: listen: %s", strerror(errno));
    return XFER_OK;
}

/* allow_uids: numbers separated by ':', ',' or blanks. */
static xfer_status_t parse_allow(uds_t *u)
{
    const char *p = u->cfg.allow_uids ? u->cfg.allow_uids : "";

    for (;;) {
        char *end;
        unsigned long v;

        p += strspn(p, ":, \t");
        if (!*p)
            return XFER_OK;
        errno = 0;
        v = strtoul(p, &end, 10);
        if (end == p || errno || v >= (uid_t)-1 ||
            (*end && !strchr(":, \t", *end)))
            return UERR(u, XFER_ERR_CONFIG, "uds: allow_uids '%s' is not a "
                        "list of numeric uids (at '%.16s')",
                        u->cfg.allow_uids, p);
        if (u->nallow == UDS_ALLOW_MAX)
            return UERR(u, XFER_ERR_CONFIG, "uds: allow_uids lists more "
                        "than %u uids", UDS_ALLOW_MAX);
        u->allow[u->nallow++] = (uid_t)v;
        p = end;
    }
}

/* The registration stamp: a page we write and peers may only read.
 * F_SEAL_FUTURE_WRITE (Linux 5.1) keeps our own mapping writable and
 * refuses every later write, writable mapping or mprotect through any
 * descriptor of the file (one a peer reopens through /proc included). */
static xfer_status_t stamp_create(uds_t *u)
{
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
    u->gen_fd = memfd_create("xfer-uds-stamp", MFD_CLOEXEC |
                             MFD_ALLOW_SEALING);
    if (u->gen_fd < 0 || ftruncate(u->gen_fd, GEN_SIZE) < 0 ||
        (u->gen = mmap(NULL, GEN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                       u->gen_fd, 0)) == MAP_FAILED) {
        u->gen = NULL;
        return UERR(u, XFER_ERR_BACKEND, "uds: registration stamp memfd: %s",
                    strerror(errno));
    }
    if (fcntl(u->gen_fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK |
                                          F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        /* Without it a peer could rewind the stamp for all: share none,
         * and peers move data through the socket. */
        ULOG(u, XFER_LOG_WARN, "uds: this kernel cannot seal the "
             "registration stamp read-only (F_SEAL_FUTURE_WRITE: %s; "
             "Linux 5.1 has it): peers move data through the socket",
             strerror(errno));
        close(u->gen_fd);
        u->gen_fd = -1;
        return XFER_OK;
    }
    /* Without a liveness word a peer could not tell our death from the
     * copy into our memory (life.c): none shared, as above. */
    {
        char why[192] = "";

        if (xfer__uds_life_start(u, why, sizeof why) != XFER_OK) {
            ULOG(u, XFER_LOG_WARN, "uds: no liveness word for peers (%s): "
                 "peers move data through the socket", why);
            close(u->gen_fd);
            u->gen_fd = -1;
        }
    }
    return XFER_OK;
}

static xfer_status_t uds_init(const xfer_host_t *host, const void *config,
                              xfer_be_t **be)
{
    struct sockaddr_un sa;
    socklen_t sl;
    size_t plen = 0;
    xfer__stream_cfg_t scfg;
    xfer_status_t st;
    uint32_t v32;
    uint16_t v16;
    uds_t *u;

    if (!(u = calloc(1, sizeof *u)))
        return host->error(host->ctx, XFER_ERR_NOMEM, "uds: out of memory");
    pthread_mutex_init(&u->lock, NULL);
    u->host = host;
    u->cfg = *(const uds_config_t *)config;
    u->lfd = -1;
    u->gen_fd = -1;
    u->uid = geteuid();
    u->mode = -1;
    for (int i = 0; i < 4; i++)
        if (u->cfg.mode && !strcmp(u->cfg.mode, mode_names[i]))
            u->mode = i;
    if (u->mode < 0) {
        st = UERR(u, XFER_ERR_CONFIG,
                  "uds: mode '%s' is not one of auto, cma, shm, socket",
                  u->cfg.mode ? u->cfg.mode : "");
        goto fail;
    }
    if ((st = parse_allow(u)) != XFER_OK ||
        (st = uds_listen(u, &sa, &sl, &plen)) != XFER_OK ||
        (st = stamp_create(u)) != XFER_OK)
        goto fail;

    memset(u->info, 0, sizeof u->info);
    v32 = htole32(UDS_INFO_MAGIC);
    memcpy(u->info, &v32, 4);
    u->info[4] = UDS_INFO_VERSION;
    u->info[5] = u->fs_path[0] ? 0 : 1;
    v16 = htole16((uint16_t)plen);
    memcpy(u->info + 6, &v16, 2);
    v32 = htole32((uint32_t)getpid());
    memcpy(u->info + 8, &v32, 4);
    v32 = htole32((uint32_t)u->uid);
    memcpy(u->info + 12, &v32, 4);
    host_ids((char *)u->info + 16, (char *)u->info + 52);
    memcpy(u->info + 116, u->fs_path[0] ? sa.sun_path : sa.sun_path + 1,
           plen);

    memset(&scfg, 0, sizeof scfg);
    scfg.name = "uds";
    scfg.timeout_ms = u->cfg.timeout_ms;
    scfg.inline_max = u->cfg.inline_max;
    scfg.rx_buf = u->cfg.rx_buf;
    scfg.lim = u->cfg.lim;
    scfg.conn_priv = sizeof(uds_conn_t);
    scfg.req_priv = sizeof(uds_req_t);
    scfg.mem_priv = sizeof(uds_mem_t);
    scfg.peer_priv = sizeof(uds_gate_t);
    st = xfer__stream_create(host, &uds_transport, u, &scfg, u->lfd, be);
    if (st != XFER_OK)
        goto fail;
    u->be = *be;
    {
        char where[160];

        uds_info_str(u, u->info, sizeof u->info, where, sizeof where);
        host->log(host->ctx, XFER_LOG_DEBUG, "listening on %s, mode %s",
                  where, mode_names[u->mode]);
    }
    return XFER_OK;
fail:
    xfer__uds_life_stop(u);
    if (u->lfd >= 0)
        close(u->lfd);
    if (u->gen)
        munmap(u->gen, GEN_SIZE);
    if (u->gen_fd >= 0)
        close(u->gen_fd);
    if (u->fs_path[0])
        unlink(u->fs_path);
    pthread_mutex_destroy(&u->lock);
    free(u);
    return st;
}

static void uds_fini(xfer_be_t *be)
{
    uds_t *u;

    if (!be)
        return;
    u = xfer__stream_tctx(be);
    /* Peers stop copying into us before they can see the sockets close. */
    xfer__uds_life_stop(u);
    xfer__stream_destroy(be);
    xfer__uds_shares_free(u); /* closed ones still counting */
    close(u->lfd);
    munmap(u->gen, GEN_SIZE);
    if (u->gen_fd >= 0)
        close(u->gen_fd);
    free(u->where);
    if (u->fs_path[0])
        unlink(u->fs_path);
    pthread_mutex_destroy(&u->lock);
    free(u);
}

static xfer_status_t uds_conn_info(xfer_be_t *be, void *buf, size_t *len)
{
    uds_t *u = xfer__stream_tctx(be);

    if (*len < UDS_INFO_SIZE) {
        *len = UDS_INFO_SIZE;
        return UERR(u, XFER_ERR_INVALID,
                    "uds: connection info needs %u bytes", UDS_INFO_SIZE);
    }
    memcpy(buf, u->info, UDS_INFO_SIZE);
    *len = UDS_INFO_SIZE;
    return XFER_OK;
}

/* Whether a registration may be handed to peers as its memfd.  A memfd
 * maps all of its file, for reading and writing, whatever the fd's mode
 * (a same-user peer can reopen it through /proc): so only a registration
 * that covers a whole xfer_mem_alloc allocation, for READ and WRITE,
 * exposes nothing more than registered; and only a memfd sealed against
 * shrinking, or a peer could make our own accesses fault.  Any other
 * registration moves by CMA or the socket. */
static int shareable(uds_t *u, const xfer_be_region_t *r,
                     xfer_shm_info_t *si)
{
    const xfer_host_t *h = u->host;
    int seals;

    if (u->mode == MODE_CMA || u->mode == MODE_SOCKET || u->gen_fd < 0 ||
        h->size < offsetof(xfer_host_t, shm_lookup) + sizeof(h->shm_lookup) ||
        !h->shm_lookup ||
        h->shm_lookup(h->ctx, r->addr, r->len, si) != XFER_OK)
        return 0;
    if (si->offset != 0 || r->len < si->size ||
        (r->access & XFER_ACCESS_RW) != XFER_ACCESS_RW)
        return 0;
    seals = fcntl(si->fd, F_GET_SEALS);
    return seals >= 0 && (seals & F_SEAL_SHRINK);
}

static xfer_status_t mem_register(xfer_be_t *be, const xfer_be_region_t *r,
                                  void **mem)
{
    uds_t *u = xfer__stream_tctx(be);
    xfer_shm_info_t si;
    xfer_status_t st = xfer__stream_mem_register(be, r, mem);

    if (st != XFER_OK || !shareable(u, r, &si))
        return st;
    st = xfer__uds_mem_share(u, *mem, &si);
    if (st != XFER_OK) {
        xfer__stream_mem_deregister(be, *mem);
        *mem = NULL;
    }
    return st;
}

/* Peers that validated requests against this region must check again,
 * and the copies they started before the stamp moved must end first. */
static void mem_deregister(xfer_be_t *be, void *mem)
{
    uds_t *u = xfer__stream_tctx(be);

    __atomic_fetch_add(u->gen, 1, __ATOMIC_SEQ_CST);
    xfer__uds_quiesce(u);
    if (mem)
        xfer__uds_mem_unshare(u, mem);
    xfer__stream_mem_deregister(be, mem);
}

static xfer_status_t mem_pack(xfer_be_t *be, void *mem, void *buf,
                              size_t *len)
{
    uint8_t *b = buf;
    const uds_mem_t *um = xfer__stream_mem_priv(mem);
    uint64_t id = um->shared ? um->id : 0, off = um->shared ? um->off : 0;
    uint32_t magic = htole32(UDS_PACK_MAGIC);

    (void)be;
    if (*len < UDS_PACK_SIZE) {
        *len = UDS_PACK_SIZE;
        return XFER_ERR_INVALID;
    }
    memset(b, 0, UDS_PACK_SIZE);
    memcpy(b, &magic, 4);
    b[4] = 1;
    b[5] = (uint8_t)um->shared;
    id = htole64(id);
    off = htole64(off);
    memcpy(b + 8, &id, 8);
    memcpy(b + 16, &off, 8);
    *len = UDS_PACK_SIZE;
    return XFER_OK;
}

static xfer_status_t rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                 const xfer_be_rregion_t *r, const void *buf,
                                 size_t len, void **rmem)
{
    uds_t *u = xfer__stream_tctx(be);
    const uint8_t *b = buf;
    uint32_t magic = 0;

    if (len != UDS_PACK_SIZE || !b)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: remote region key 0x%016llx has a %zu-byte public "
                    "part, not %u",
                    (unsigned long long)r->key, len, UDS_PACK_SIZE);
    memcpy(&magic, b, 4);
    if (le32toh(magic) != UDS_PACK_MAGIC || b[4] != 1 || b[5] > 1)
        return UERR(u, XFER_ERR_INVALID,
                    "uds: remote region key 0x%016llx: public part is not a "
                    "version 1 uds region",
                    (unsigned long long)r->key);
    return xfer__stream_rmem_unpack(be, peer, r, buf, len, rmem);
}

/* ------------------------------------------------------------------ */
/* What xfer-info and xfer_backend_state() show                         */
/* ------------------------------------------------------------------ */

/* /proc/sys/kernel/yama/ptrace_scope, or -1 without Yama. */
static int yama_scope(void)
{
    FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
    int v = -1;

    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static const uint64_t cma_magic = 0x616d632d72656678ull;

/* Ask the kernel whether another process may copy from us: a forked
 * child reads its parent, a process that is not its descendant, which is
 * what a peer agent is to us and the direction Yama's scope 1 refuses.
 * The caller may run threads, so the child makes only async-signal-safe
 * calls.  0: allowed; > 0: the errno of the refusal; -1: the probe
 * itself failed (*why: its errno). */
static int cma_try(int *why)
{
    pid_t parent = getpid(), pid;
    int fds[2], res = 0, ws;
    ssize_t n;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        *why = errno;
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        *why = errno;
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        uint64_t got = 0;
        struct iovec l = { &got, sizeof got };
        struct iovec r = { (void *)(uintptr_t)&cma_magic, sizeof cma_magic };
        int e = process_vm_readv(parent, &l, 1, &r, 1, 0) ==
                        (ssize_t)sizeof got
                    ? (got == cma_magic ? 0 : EFAULT)
                    : errno;

        if (write(fds[1], &e, sizeof e) != (ssize_t)sizeof e)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    while ((n = read(fds[0], &res, sizeof res)) < 0 && errno == EINTR)
        ;
    close(fds[0]);
    /* ECHILD when the program reaps every child itself: nothing left. */
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof res) {
        *why = EIO;
        return -1;
    }
    return res;
}

/* The path mode=auto takes to a peer on this host, as the kernel
 * answers now: for xfer-info, before any instance exists. */
static xfer_status_t uds_probe(char *buf, size_t len)
{
    char yama[48];
    int scope = yama_scope(), why = 0, e = cma_try(&why);

    if (scope < 0)
        snprintf(yama, sizeof yama, "no yama");
    else
        snprintf(yama, sizeof yama, "yama ptrace_scope=%d", scope);
    if (e == 0)
        snprintf(buf, len, "cross-process copy (CMA): available (%s)", yama);
    else if (e < 0)
        snprintf(buf, len, "cross-process copy (CMA): unknown (%s; the "
                 "probe failed: %s)", yama, strerror(why));
    else
        snprintf(buf, len, "cross-process copy (CMA): refused (%s; %s): "
                 "transfers to peers fall back to the socket, except into "
                 "memory from xfer_mem_alloc (shm)",
                 e == EPERM ? "EPERM" : e == ENOSYS ? "ENOSYS" : strerror(e),
                 yama);
    return XFER_OK;
}

/* Connections this instance opened, by the path their data took last. */
static xfer_status_t uds_state(xfer_be_t *be, char *buf, size_t len)
{
    uds_t *u = xfer__stream_tctx(be);
    unsigned np[NPATHS], eperm;
    int n;

    for (int i = 0; i < NPATHS; i++)
        np[i] = __atomic_load_n(&u->npath[i], __ATOMIC_RELAXED);
    eperm = np[PATH_EPERM];
    n = snprintf(buf, len, "mode=%s; peers: %u via shm, %u via cma, "
                 "%u via socket", mode_names[u->mode], np[PATH_SHM],
                 np[PATH_CMA], np[PATH_SOCKET] + eperm);

    if (eperm && n >= 0 && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, " (%u by EPERM fallback)", eperm);
    return XFER_OK;
}

/* ------------------------------------------------------------------ */
/* Every op under the instance's lock (uds.h, "Threads")               */
/* ------------------------------------------------------------------ */

#define U(be) ((uds_t *)xfer__stream_tctx(be))
/* The op's call, as one statement or expression, under the lock. */
#define LOCKED_VOID(be, call)                                              \
    do {                                                                   \
        pthread_mutex_lock(&U(be)->lock);                                  \
        call;                                                              \
        pthread_mutex_unlock(&U(be)->lock);                                \
    } while (0)
#define LOCKED(be, type, call)                                             \
    do {                                                                   \
        type r_;                                                           \
        pthread_mutex_lock(&U(be)->lock);                                  \
        r_ = call;                                                         \
        pthread_mutex_unlock(&U(be)->lock);                                \
        return r_;                                                         \
    } while (0)

static xfer_status_t uds_peer_add(xfer_be_t *be, const char *name,
                                  uint64_t epoch, const void *info, size_t len,
                                  xfer_be_peer_t **peer)
{
    LOCKED(be, xfer_status_t,
           xfer__stream_peer_add(be, name, epoch, info, len, peer));
}

static void uds_peer_remove(xfer_be_t *be, xfer_be_peer_t *peer)
{
    LOCKED_VOID(be, xfer__stream_peer_remove(be, peer));
}

static xfer_status_t uds_peer_connect(xfer_be_t *be, xfer_be_peer_t *peer)
{
    LOCKED(be, xfer_status_t, xfer__stream_peer_connect(be, peer));
}

/* A deregistration's bounded wait for peers' copies holds the lock, as
 * the core's did: our own fast posts go on meanwhile. */
static xfer_status_t uds_mem_register(xfer_be_t *be,
                                      const xfer_be_region_t *r, void **mem)
{
    LOCKED(be, xfer_status_t, mem_register(be, r, mem));
}

static void uds_mem_deregister(xfer_be_t *be, void *mem)
{
    LOCKED_VOID(be, mem_deregister(be, mem));
}

static xfer_status_t uds_mem_pack(xfer_be_t *be, void *mem, void *buf,
                                  size_t *len)
{
    LOCKED(be, xfer_status_t, mem_pack(be, mem, buf, len));
}

static xfer_status_t uds_rmem_unpack(xfer_be_t *be, xfer_be_peer_t *peer,
                                     const xfer_be_rregion_t *r,
                                     const void *buf, size_t len, void **rmem)
{
    LOCKED(be, xfer_status_t, rmem_unpack(be, peer, r, buf, len, rmem));
}

static void uds_rmem_release(xfer_be_t *be, void *rmem)
{
    LOCKED_VOID(be, xfer__stream_rmem_release(be, rmem));
}

static xfer_status_t uds_req_create(xfer_be_t *be, xfer_op_t op,
                                    xfer_be_peer_t *peer,
                                    const xfer_be_seg_t *segs, size_t nseg,
                                    xfer_be_req_t **req)
{
    LOCKED(be, xfer_status_t,
           xfer__stream_req_create(be, op, peer, segs, nseg, req));
}

static xfer_status_t uds_req_check(xfer_be_t *be, xfer_be_req_t *req)
{
    LOCKED(be, xfer_status_t, xfer__stream_req_check(be, req));
}

static xfer_status_t uds_req_cancel(xfer_be_t *be, xfer_be_req_t *req)
{
    LOCKED(be, xfer_status_t, xfer__stream_req_cancel(be, req));
}

static void uds_req_release(xfer_be_t *be, xfer_be_req_t *req)
{
    LOCKED_VOID(be, xfer__stream_req_release(be, req));
}

static xfer_status_t uds_notif_send(xfer_be_t *be, xfer_be_peer_t *peer,
                                    const void *msg, size_t len)
{
    LOCKED(be, xfer_status_t, xfer__stream_notif_send(be, peer, msg, len));
}

static int uds_progress(xfer_be_t *be)
{
    LOCKED(be, int, xfer__stream_progress(be));
}

static xfer_status_t uds_state_locked(xfer_be_t *be, char *buf, size_t len)
{
    LOCKED(be, xfer_status_t, uds_state(be, buf, len));
}

/* Every op is uds's own, each under the lock: not XFER__STREAM_OPS, so
 * that an op the engine adds later is not called unlocked by accident.
 * conn_info and event_fd read what init set and never changes. */
extern const xfer_backend_ops_t XFER_BACKEND_SYMBOL(uds);
const xfer_backend_ops_t XFER_BACKEND_SYMBOL(uds) = {
    .hdr = {
        .abi_major = XFER_BACKEND_ABI_MAJOR,
        .abi_minor = XFER_BACKEND_ABI_MINOR,
        .struct_size = sizeof(xfer_backend_ops_t),
        .name = "uds",
        .version = PACKAGE_VERSION,
        .caps = XFER_CAP_READ | XFER_CAP_WRITE | XFER_CAP_NOTIF |
                XFER_CAP_LOCAL | XFER_CAP_SW_CHECK,
        .mem_types = XFER_MEMBIT(XFER_MEM_DRAM),
    },
    .params = uds_params,
    .nparams = sizeof uds_params / sizeof uds_params[0],
    .config_size = sizeof(uds_config_t),
    .init = uds_init,
    .fini = uds_fini,
    .conn_info = uds_conn_info,
    .peer_add = uds_peer_add,
    .peer_remove = uds_peer_remove,
    .mem_register = uds_mem_register,
    .mem_deregister = uds_mem_deregister,
    .mem_pack = uds_mem_pack,
    .rmem_unpack = uds_rmem_unpack,
    .rmem_release = uds_rmem_release,
    .req_create = uds_req_create,
    .req_post = xfer__uds_req_post, /* locks itself, fast path aside */
    .req_check = uds_req_check,
    .req_cancel = uds_req_cancel,
    .req_release = uds_req_release,
    .notif_send = uds_notif_send,
    .progress = uds_progress,
    .event_fd = xfer__stream_event_fd,
    .probe = uds_probe,
    .state = uds_state_locked,
    .flags = XFER_BE_THREAD_SAFE,
    .peer_connect = uds_peer_connect,
};
