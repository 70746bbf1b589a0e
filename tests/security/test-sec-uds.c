/* test-sec-uds.c - hostile peers of the uds backend, each a separate process
 * speaking the wire by hand (docs/wire-tcp.md): issue 10, breaks 6, 7 and 8.
 *
 * Against a target (break 6): a same-user peer without a key gets no
 * descriptor; with the key of part of an xfer_mem_alloc block it gets no
 * memfd; with the key of a whole block it gets that block's memfd and
 * nothing past it; nobody can write the registration stamp, shrink or
 * grow a memfd, or touch another peer's in-flight page.  Against an
 * initiator (break 7): a target whose SHM_FD lies about its size, is not
 * sealed, is no memfd, floods descriptors, comes before HELLO_ACK, or
 * runs as another user is refused with a sentence, and the initiator
 * lives on.  The socket (break 8): private by default, other users
 * refused at accept.  Beside every attack a well-behaved uds pair moves
 * patterns byte for byte, and canaries around the target's registered
 * memory are checked after it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plugins/common/wire.h"
#include "tests/common/xt.h"

#define WAIT_MS 10000
#define NOBODY 65534
#define BLOCK (1u << 20)      /* block A: registered in part */
#define A_OFF (64u << 10)     /* A's registration: [A_OFF, A_OFF + A_LEN) */
#define A_LEN (256u << 10)
#define B_LEN (256u << 10)    /* block B: registered whole */
#define GOOD_LEN (128u << 10) /* the well-behaved pair's regions */
#define GUARD 4096u

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

static char self_exe[4096];

/* ========================================================================
 * Child processes: a raw uds client (the attacker) and a raw uds target
 * (the hostile target).  Both read commands on stdin, answer one line.
 * ======================================================================== */

static int become_nobody(void)
{
    return setgroups(0, NULL) == 0 && setgid(NOBODY) == 0 &&
                   setuid(NOBODY) == 0
               ? 0
               : -1;
}

/* ---- the attacker: a raw client -------------------------------------------- */

typedef struct rfd {
    uint64_t id, size;
    int fd;
} rfd_t;

static int peer = -1;
static int fdq[512], nfdq;   /* arrived, not yet claimed by an SHM_FD */
static rfd_t got[64];
static int ngot;

/* Exactly len bytes (fds that ride along are queued); -1 on EOF/error
 * or WAIT_MS of silence. */
static int rd(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * 64)];
        } cm;
        struct iovec v = { p, len };
        struct msghdr m;
        struct pollfd pf = { peer, POLLIN, 0 };
        ssize_t n;

        if (poll(&pf, 1, WAIT_MS) != 1)
            return -1;
        memset(&m, 0, sizeof m);
        m.msg_iov = &v;
        m.msg_iovlen = 1;
        m.msg_control = cm.b;
        m.msg_controllen = sizeof cm.b;
        n = recvmsg(peer, &m, MSG_CMSG_CLOEXEC);
        if (n <= 0)
            return -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h;
             h = CMSG_NXTHDR(&m, h)) {
            size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (size_t i = 0; i < k; i++) {
                int fd;

                memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
                if (nfdq < (int)(sizeof fdq / sizeof fdq[0]))
                    fdq[nfdq++] = fd;
                else
                    close(fd);
            }
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int wr(const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        ssize_t n = send(peer, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void hdr(uint8_t *out, uint8_t type, uint8_t flags, uint32_t seg,
                uint64_t tag, uint64_t arg0, uint64_t arg1, uint64_t len)
{
    xfer_wire_hdr_t h = { type, flags, 0, seg, tag, arg0, arg1, len };

    xfer_wire_encode((xfer_wire_hdr_t *)(void *)out, &h);
}

/* Read frames until one of type `until` with tag `tag` (any tag when
 * HELLO_ACK); SHM_FD frames take their descriptor.  Its header in *out;
 * -1 on EOF. */
static int frames_until(uint8_t until, uint64_t tag, xfer_wire_hdr_t *out)
{
    for (;;) {
        uint8_t b[XFER_WIRE_HDR_SIZE];
        xfer_wire_hdr_t h;

        if (rd(b, sizeof b) < 0)
            return -1;
        xfer_wire_decode(&h, b);
        if (h.type == XFER_WIRE_SHM_FD) {
            if (nfdq && ngot < (int)(sizeof got / sizeof got[0])) {
                got[ngot].id = h.tag;
                got[ngot].size = h.arg0;
                got[ngot].fd = fdq[0];
                memmove(fdq, fdq + 1, (size_t)--nfdq * sizeof(int));
                ngot++;
            }
            continue;
        }
        if (h.type == XFER_WIRE_READ_RESP && h.len) {
            uint8_t *sink = malloc(h.len);

            if (!sink || rd(sink, h.len) < 0) {
                free(sink);
                return -1;
            }
            free(sink);
        }
        if (h.type == until && (until == XFER_WIRE_HELLO_ACK || h.tag == tag)) {
            *out = h;
            return 0;
        }
    }
}

/* "connect PATH EPOCH": PATH "@name" is abstract.  Answers "HELLO_ACK
 * <status>", "EOF" (closed without an answer) or "ERR <errno>". */
static void att_connect(const char *path, uint64_t epoch)
{
    struct sockaddr_un sa;
    socklen_t sl;
    uint8_t b[XFER_WIRE_HDR_SIZE + 8];
    xfer_wire_hdr_t h;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        xt_say("ERR %d", ENAMETOOLONG);
        return;
    }
    /* "@name": the NUL of the abstract namespace takes the '@''s place. */
    memcpy(sa.sun_path, path, strlen(path));
    if (path[0] == '@') {
        sa.sun_path[0] = '\0';
        sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    } else {
        sl = sizeof sa;
    }
    peer = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (peer < 0 || connect(peer, (struct sockaddr *)&sa, sl) < 0) {
        xt_say("ERR %d", errno);
        return;
    }
    hdr(b, XFER_WIRE_HELLO, 0, XFER_WIRE_VERSION, XFER_WIRE_MAGIC, 1, epoch,
        8);
    /* A name of its own per attacker process: a second connection under
     * one name and epoch supersedes the first (plugins/common/conn.c). */
    {
        char nm[16];

        snprintf(nm, sizeof nm, "atk%05u", (unsigned)(getpid() % 100000));
        memcpy(b + XFER_WIRE_HDR_SIZE, nm, 8);
    }
    if (wr(b, sizeof b) < 0 || frames_until(XFER_WIRE_HELLO_ACK, 0, &h) < 0) {
        xt_say("EOF");
        return;
    }
    xt_say("HELLO_ACK %" PRId64, (int64_t)h.arg1);
}

/* "write KEY ADDR LEN": one WRITE frame of a 0x5a pattern.  "ACK
 * <status> fds=<descriptors got so far>". */
static void att_write(uint64_t key, uint64_t addr, uint64_t len)
{
    uint8_t *b = malloc(XFER_WIRE_HDR_SIZE + len);
    xfer_wire_hdr_t h;

    if (!b) {
        xt_say("ERR nomem");
        return;
    }
    hdr(b, XFER_WIRE_WRITE, XFER_WIRE_F_LAST, 0, 7, key, addr, len);
    memset(b + XFER_WIRE_HDR_SIZE, 0x5a, len);
    if (wr(b, XFER_WIRE_HDR_SIZE + len) < 0 ||
        frames_until(XFER_WIRE_ACK, 7, &h) < 0)
        xt_say("EOF fds=%d", ngot + nfdq);
    else
        xt_say("ACK %" PRId64 " fds=%d", (int64_t)h.arg0, ngot + nfdq);
    free(b);
}

/* "read KEY ADDR LEN": one READ_REQ.  "RESP <status> fds=<n>". */
static void att_read(uint64_t key, uint64_t addr, uint64_t len)
{
    uint8_t b[XFER_WIRE_HDR_SIZE];
    xfer_wire_hdr_t h;

    hdr(b, XFER_WIRE_READ_REQ, 0, 0, 9, key, addr, len);
    if (wr(b, sizeof b) < 0 || frames_until(XFER_WIRE_READ_RESP, 9, &h) < 0)
        xt_say("EOF fds=%d", ngot + nfdq);
    else
        xt_say("RESP %" PRId64 " fds=%d", (int64_t)h.arg0, ngot + nfdq);
}

static rfd_t *find_fd(uint64_t id)
{
    for (int i = 0; i < ngot; i++)
        if (got[i].id == id)
            return &got[i];
    return NULL;
}

/* "fds": "FDS <n> unclaimed=<m>", then for each descriptor "; id=ID
 * size=CLAIMED st_size=N ino=N seals=N", on one line (the test reads
 * lines through stdio, one answer a line). */
static void att_fds(void)
{
    char out[4096];
    int n = snprintf(out, sizeof out, "FDS %d unclaimed=%d", ngot, nfdq);

    for (int i = 0; i < ngot && n > 0 && (size_t)n < sizeof out; i++) {
        struct stat sb;
        int seals = fcntl(got[i].fd, F_GET_SEALS);

        if (fstat(got[i].fd, &sb) < 0)
            memset(&sb, 0, sizeof sb);
        n += snprintf(out + n, sizeof out - (size_t)n, "; id=%" PRIx64
                      " size=%" PRIu64 " st_size=%lld ino=%llu seals=%d",
                      got[i].id, got[i].size, (long long)sb.st_size,
                      (unsigned long long)sb.st_ino, seals);
    }
    xt_say("%s", out);
}

static int err_of(int rc)
{
    return rc < 0 ? errno : 0;
}

/* Read the byte just past the file's end in a child: what a peer gets
 * beyond what was shared. */
static const char *past_end(int fd, off_t size)
{
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *p = mmap(NULL, (size_t)size + (size_t)page, PROT_READ,
                      MAP_SHARED, fd, 0);
    pid_t pid;
    int st;

    if (p == MAP_FAILED)
        return "mmap-refused";
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        volatile uint8_t v = p[size];

        (void)v;
        _exit(0);
    }
    waitpid(pid, &st, 0);
    munmap(p, (size_t)size + (size_t)page);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS ? "SIGBUS"
           : WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "readable"
                                                   : "other";
}

/* "probe ID": every way to write, resize or read past a descriptor;
 * each errno (0: it worked). */
static void att_probe(uint64_t id)
{
    rfd_t *r = find_fd(id);
    struct stat sb;
    char proc[64];
    void *p;
    int e_rw, e_wr, e_reopen, e_prot, e_shrink, e_grow, fd2;
    uint64_t v = 0;

    if (!r || fstat(r->fd, &sb) < 0) {
        xt_say("ERR no descriptor %" PRIx64, id);
        return;
    }
    /* Writes put back what is there: a peer with a key may write a
     * registration it shares, and the test's canaries stay. */
    if (pread(r->fd, &v, sizeof v, 0) != (ssize_t)sizeof v)
        v = 0;
    p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
             r->fd, 0);
    e_rw = p == MAP_FAILED ? errno : 0;
    if (p != MAP_FAILED)
        munmap(p, (size_t)sb.st_size);
    e_wr = err_of((int)pwrite(r->fd, &v, sizeof v, 0));
    /* A same-user process may open the file again, read-write. */
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", r->fd);
    fd2 = open(proc, O_RDWR | O_CLOEXEC);
    if (fd2 < 0) {
        e_reopen = errno;
    } else {
        e_reopen = err_of((int)pwrite(fd2, &v, sizeof v, 0));
        p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE,
                 MAP_SHARED, fd2, 0);
        if (p != MAP_FAILED)
            munmap(p, (size_t)sb.st_size);
        else if (!e_reopen)
            e_reopen = errno;
        close(fd2);
    }
    p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, r->fd, 0);
    if (p == MAP_FAILED) {
        e_prot = errno;
    } else {
        e_prot = err_of(mprotect(p, (size_t)sb.st_size,
                                 PROT_READ | PROT_WRITE));
        munmap(p, (size_t)sb.st_size);
    }
    e_shrink = err_of(ftruncate(r->fd, 0));
    e_grow = err_of(ftruncate(r->fd, sb.st_size * 2));
    xt_say("PROBE mmap_rw=%d write=%d reopen_write=%d mprotect=%d shrink=%d "
        "grow=%d past_end=%s",
        e_rw, e_wr, e_reopen, e_prot, e_shrink, e_grow,
        past_end(r->fd, sb.st_size));
}

/* "scan CANARY": how many aligned 8-byte words equal to CANARY can be
 * read through every descriptor we hold. */
static void att_scan(uint64_t canary)
{
    long hits = 0;

    for (int i = 0; i < ngot; i++) {
        struct stat sb;
        const uint64_t *p;

        if (fstat(got[i].fd, &sb) < 0 || sb.st_size <= 0)
            continue;
        p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, got[i].fd,
                 0);
        if (p == MAP_FAILED)
            continue;
        for (size_t k = 0; k < (size_t)sb.st_size / 8; k++)
            hits += p[k] == canary;
        munmap((void *)(uintptr_t)p, (size_t)sb.st_size);
    }
    xt_say("SCAN %ld", hits);
}

/* "poke ID VALUE": write VALUE into the first word of that page. */
static void att_poke(uint64_t id, uint64_t value)
{
    rfd_t *r = find_fd(id);
    uint64_t *p;

    if (!r) {
        xt_say("ERR no descriptor %" PRIx64, id);
        return;
    }
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (p == MAP_FAILED) {
        xt_say("POKE %d", errno);
        return;
    }
    *p = value;
    munmap(p, 4096);
    xt_say("POKE 0");
}

/* "peek ID": the first word of that page. */
static void att_peek(uint64_t id)
{
    rfd_t *r = find_fd(id);
    const uint64_t *p;

    if (!r) {
        xt_say("ERR no descriptor %" PRIx64, id);
        return;
    }
    p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, r->fd, 0);
    if (p == MAP_FAILED) {
        xt_say("PEEK err %d", errno);
        return;
    }
    xt_say("PEEK %" PRIu64, *p);
    munmap((void *)(uintptr_t)p, 4096);
}

static int attacker_main(int as_nobody)
{
    char line[512], a[256];
    uint64_t x, y, z;

    signal(SIGPIPE, SIG_IGN);
    if (as_nobody && become_nobody() < 0) {
        xt_say("ERR setuid: %s", strerror(errno));
        return 1;
    }
    xt_say("READY %d", (int)getuid());
    while (fgets(line, sizeof line, stdin)) {
        if (sscanf(line, "connect %255s %" SCNu64, a, &x) == 2)
            att_connect(a, x);
        else if (sscanf(line, "write %" SCNx64 " %" SCNx64 " %" SCNu64, &x,
                        &y, &z) == 3)
            att_write(x, y, z);
        else if (sscanf(line, "read %" SCNx64 " %" SCNx64 " %" SCNu64, &x, &y,
                        &z) == 3)
            att_read(x, y, z);
        else if (strncmp(line, "fds", 3) == 0)
            att_fds();
        else if (sscanf(line, "probe %" SCNx64, &x) == 1)
            att_probe(x);
        else if (sscanf(line, "scan %" SCNx64, &x) == 1)
            att_scan(x);
        else if (sscanf(line, "poke %" SCNx64 " %" SCNu64, &x, &y) == 2)
            att_poke(x, y);
        else if (sscanf(line, "peek %" SCNx64, &x) == 1)
            att_peek(x);
        else
            break;
    }
    return 0;
}

/* ---- the hostile target: a raw listener ------------------------------------------ */

/* A memfd of size bytes; sealed against shrinking and growing when
 * seal, then cut to `truncate` bytes if that is not 0 (before sealing). */
static int make_memfd(size_t size, size_t truncate, int seal)
{
    int fd = memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    if (fd < 0 || ftruncate(fd, (off_t)(truncate ? truncate : size)) < 0)
        return -1;
    if (seal &&
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        return -1;
    return fd;
}

/* Send buf with n descriptors attached to its first byte. */
static int send_fds(int s, const void *buf, size_t len, const int *fds,
                    int n)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * 128)];
    } cm;
    struct iovec v = { (void *)(uintptr_t)buf, len };
    struct msghdr m;
    struct cmsghdr *h;

    memset(&m, 0, sizeof m);
    memset(&cm, 0, sizeof cm);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    if (n) {
        m.msg_control = cm.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
        h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
        memcpy(CMSG_DATA(h), fds, sizeof(int) * (size_t)n);
    }
    return sendmsg(s, &m, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

static int shm_fd(int s, uint64_t id, uint64_t size, int fd)
{
    uint8_t b[XFER_WIRE_HDR_SIZE];

    hdr(b, XFER_WIRE_SHM_FD, 0, 0, id, size, 0, 0);
    return send_fds(s, b, sizeof b, &fd, fd >= 0 ? 1 : 0);
}

/* What a hostile target sends ahead of its answer to the first WRITE
 * (or, for "early", before HELLO_ACK).  The in-flight page and stamp are
 * well formed; the memfd is what the scenario is about. */
static void hostile_share(int s, const char *how, uint64_t id, uint64_t size)
{
    int good = make_memfd(4096, 0, 1), fd = -1, p[2] = { -1, -1 };
    /* A stamp of this version carries the liveness word (docs/wire-tcp.md):
     * its magic, and a thread id of ours while we live. */
    uint32_t life[2] = { htole32(0x56494c58u), (uint32_t)getpid() };

    if (pwrite(good, life, sizeof life, 8) != (ssize_t)sizeof life) {
        close(good);
        return;
    }
    shm_fd(s, UINT64_MAX, 4096, good);
    shm_fd(s, 0, 4096, good);
    if (!strcmp(how, "short") || !strcmp(how, "nobody"))
        fd = make_memfd((size_t)size, 4096, 1); /* claims size, has 4096 */
    else if (!strcmp(how, "unsealed"))
        fd = make_memfd((size_t)size, 0, 0);
    else if (!strcmp(how, "notmemfd") && pipe2(p, O_CLOEXEC) == 0)
        fd = p[0];
    if (!strcmp(how, "flood")) {
        int many[100];
        uint8_t b[XFER_WIRE_HDR_SIZE];

        for (int i = 0; i < 100; i++)
            many[i] = good;
        hdr(b, XFER_WIRE_SHM_FD, 0, 0, id, size, 0, 0);
        send_fds(s, b, sizeof b, many, 100);
    } else if (!strcmp(how, "stray")) {
        /* Descriptors on the bytes of a frame that is no SHM_FD. */
        uint8_t b[XFER_WIRE_HDR_SIZE];

        hdr(b, XFER_WIRE_NOTIF, 0, 0, 0, 0, 0, 0);
        for (size_t i = 0; i < sizeof b; i++)
            send_fds(s, b + i, 1, &good, 1);
    } else if (fd >= 0) {
        shm_fd(s, id, size, fd);
    }
    close(good);
    if (fd >= 0)
        close(fd);
    if (p[1] >= 0)
        close(p[1]);
}

/* One connection: HELLO, HELLO_ACK, then WRITE frames acknowledged OK
 * after the scenario's descriptors. */
static void hostile_serve(int s, const char *how, uint64_t id, uint64_t size)
{
    uint8_t b[XFER_WIRE_HDR_SIZE], sink[65536];
    xfer_wire_hdr_t h;
    int shared = 0;

    peer = s;
    if (rd(b, sizeof b) < 0)
        return;
    xfer_wire_decode(&h, b);
    if (h.type != XFER_WIRE_HELLO || h.len > sizeof sink ||
        rd(sink, h.len) < 0)
        return;
    if (!strcmp(how, "early")) {
        int fd = make_memfd((size_t)size, 0, 1);

        shm_fd(s, id, size, fd);
        close(fd);
    }
    hdr(b, XFER_WIRE_HELLO_ACK, 0, XFER_WIRE_VERSION, XFER_WIRE_MAGIC, h.arg1,
        0, 0);
    if (wr(b, sizeof b) < 0)
        return;
    for (;;) {
        if (rd(b, sizeof b) < 0)
            return;
        xfer_wire_decode(&h, b);
        if (h.type != XFER_WIRE_WRITE)
            return;
        for (uint64_t left = h.len; left;) {
            size_t n = left < sizeof sink ? (size_t)left : sizeof sink;

            if (rd(sink, n) < 0)
                return;
            left -= n;
        }
        if (!(h.flags & XFER_WIRE_F_LAST))
            continue;
        if (!shared++)
            hostile_share(s, how, id, size);
        hdr(b, XFER_WIRE_ACK, 0, 0, h.tag, 0, 1, 0);
        if (wr(b, sizeof b) < 0)
            return;
    }
}

/* --hostile-target PATH HOW ID SIZE [nobody]: serves connections until
 * stdin closes. */
static int hostile_main(const char *path, const char *how, uint64_t id,
                        uint64_t size, int as_nobody)
{
    struct sockaddr_un sa;
    int l;

    signal(SIGPIPE, SIG_IGN);
    if (as_nobody && become_nobody() < 0) {
        xt_say("ERR setuid: %s", strerror(errno));
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(l, 16) < 0) {
        xt_say("ERR bind %s: %s", path, strerror(errno));
        return 1;
    }
    xt_say("READY %d", (int)getuid());
    for (;;) {
        struct pollfd pf[2] = { { 0, POLLIN, 0 }, { l, POLLIN, 0 } };
        int s;

        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        if (pf[0].revents)
            break; /* a line or EOF on stdin: the test is done */
        if (!(pf[1].revents & POLLIN) || (s = accept(l, NULL, NULL)) < 0)
            continue;
        hostile_serve(s, how, id, size);
        close(s);
    }
    unlink(path);
    return 0;
}

/* ========================================================================
 * The test process: a well-behaved target and initiator, and handles on
 * the hostile children.
 * ======================================================================== */

typedef struct child {
    xt_proc_t proc;
    char line[1024];
} child_t;

static void child_stop(void *arg)
{
    child_t *c = arg;

    xt_proc_end(&c->proc, WAIT_MS);
    free(c);
}

static child_t *child_start(char *const argv[])
{
    child_t *c = calloc(1, sizeof *c);

    XT_REQUIRE(c != NULL, "out of memory");
    xt_proc_start(&c->proc, argv[1], argv);
    xt_defer(child_stop, c);
    xt_proc_line(&c->proc, c->line, sizeof c->line, WAIT_MS);
    XT_REQUIRE(strncmp(c->line, "READY", 5) == 0, "child %s: '%s'",
               c->proc.name, c->line);
    return c;
}

static const char *ask(child_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static const char *ask(child_t *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(c->proc.in, fmt, ap);
    va_end(ap);
    fputc('\n', c->proc.in);
    fflush(c->proc.in);
    return xt_proc_line(&c->proc, c->line, sizeof c->line, 2 * WAIT_MS);
}

static child_t *attacker(int as_nobody)
{
    char *argv[] = { self_exe, "--attacker", as_nobody ? "nobody" : "us",
                     NULL };

    return child_start(argv);
}

/* ---- the uds connection info in a blob -------------------------------------------- */

static int b64val(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

/* Decode base64 text into out (at most max bytes); how many. */
static size_t b64_decode(const char *s, uint8_t *out, size_t max)
{
    uint32_t acc = 0;
    size_t n = 0;
    int bits = 0;

    for (; *s && *s != '=' && n < max; s++) {
        int v = b64val(*s);

        XT_REQUIRE(v >= 0, "not base64: %s", s);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

/* The socket an agent's uds backend listens on ("@name" when abstract),
 * decoded from its metadata (docs/wire-tcp.md, "uds connection info"). */
static void uds_where(xfer_agent_t *a, char *out, size_t size, int *abstract)
{
    size_t len = 0, n;
    const char *blob = xt_md_get(a, XFER_MD_ALL, NULL, 0, &len);
    json_t *root = xt_blob_parse(blob, len);
    json_t *be = json_array_get(json_object_get(root, "backends"), 0);
    const char *s = json_string_value(json_object_get(be, "conn"));
    uint8_t info[256];
    uint16_t plen;

    XT_REQUIRE(s != NULL, "no uds connection info");
    n = b64_decode(s, info, sizeof info);
    XT_REQUIRE(n == 224, "uds connection info of %zu bytes", n);
    memcpy(&plen, info + 6, 2);
    plen = le16toh(plen);
    *abstract = info[5];
    snprintf(out, size, "%s%.*s", info[5] ? "@" : "", (int)plen,
             (const char *)info + 116);
}

/* The memfd id in the uds public part of a blob's first region
 * (docs/wire-tcp.md, "uds region public part"); 0: not shared. */
static uint64_t uds_memfd_id(const char *blob, size_t len)
{
    json_t *r = xt_blob_region(xt_blob_parse(blob, len), 0);
    const char *s = json_string_value(
        json_object_get(json_object_get(r, "pub"), "uds"));
    uint8_t pk[64];
    uint64_t id;

    XT_REQUIRE(s != NULL && b64_decode(s, pk, sizeof pk) == 24,
               "no uds public part in the region");
    memcpy(&id, pk + 8, 8);
    return pk[5] ? le64toh(id) : 0;
}

/* ---- the well-behaved pair ---------------------------------------------------------- */

typedef struct fixture {
    xfer_agent_t *t, *i;
    char tname[64];
    uint64_t epoch;
    char where[128];
    /* The pair's regions: one whole xfer_mem_alloc block (shm), one in
     * the middle of malloc'd memory with guards around it (cma). */
    uint8_t *shm, *cma_all, *cma;
    uint8_t *src, *dst;
    uint64_t guard_seed;
    /* Blocks the attacks aim at. */
    uint8_t *a, *b;
    xfer_mem_t *amem, *bmem;
    uint64_t akey, bkey, canary;
} fixture_t;

static uint64_t region_key(xfer_agent_t *t, uintptr_t addr)
{
    size_t len = 0;
    const char *blob = xt_md_get(t, XFER_MD_ALL, NULL, 0, &len);
    json_t *root = xt_blob_parse(blob, len);
    json_t *regs = json_object_get(root, "regions");

    for (size_t k = 0; k < json_array_size(regs); k++) {
        json_t *r = json_array_get(regs, k);
        uint64_t at = 0, key = 0;

        if (xt_json_u64(json_object_get(r, "addr"), &at) && at == addr &&
            xt_json_u64(json_object_get(r, "key"), &key))
            return key;
    }
    XT_FAIL_FATAL("no region at 0x%" PRIxPTR " in the metadata", addr);
}

/* A block whose unregistered parts (and the registered ones, until
 * written) hold the canary word: found anywhere, it was read. */
static void fill_canary(uint8_t *p, size_t len, uint64_t canary)
{
    for (size_t k = 0; k + 8 <= len; k += 8)
        memcpy(p + k, &canary, 8);
}

static long canary_broken(const uint8_t *p, size_t len, uint64_t canary)
{
    for (size_t k = 0; k + 8 <= len; k += 8)
        if (memcmp(p + k, &canary, 8) != 0)
            return (long)k;
    return -1;
}

static void fixture_make(fixture_t *f, const char *tspec)
{
    memset(f, 0, sizeof *f);
    snprintf(f->tname, sizeof f->tname, "%s", xt_name("sectgt"));
    f->t = xt_agent(f->tname, tspec, 1);
    f->i = xt_agent(xt_name("secini"), "uds", 1);
    f->epoch = xfer_agent_epoch(f->t);
    {
        int abstract;

        uds_where(f->t, f->where, sizeof f->where, &abstract);
    }
    XT_STATUS_FATAL(xfer_mem_alloc(f->t, GOOD_LEN, 0, (void **)&f->shm),
                    XFER_OK);
    f->cma_all = xt_alloc(GOOD_LEN + 2 * GUARD);
    f->cma = f->cma_all + GUARD;
    f->guard_seed = xt_seed();
    xt_fill(f->cma_all, GUARD, f->guard_seed);
    xt_fill_at(f->cma + GOOD_LEN, GUARD, f->guard_seed, GUARD);
    xt_register(f->t, f->shm, GOOD_LEN);
    xt_register(f->t, f->cma, GOOD_LEN);
    f->src = xt_alloc(GOOD_LEN);
    f->dst = xt_alloc(GOOD_LEN);
    xt_register(f->i, f->src, GOOD_LEN);
    xt_register(f->i, f->dst, GOOD_LEN);

    /* Block A registered in part, block B whole, both full of canaries. */
    f->canary = xt_seed() | 1;
    XT_STATUS_FATAL(xfer_mem_alloc(f->t, BLOCK, 0, (void **)&f->a), XFER_OK);
    XT_STATUS_FATAL(xfer_mem_alloc(f->t, B_LEN, 0, (void **)&f->b), XFER_OK);
    fill_canary(f->a, BLOCK, f->canary);
    fill_canary(f->b, B_LEN, f->canary);
    f->amem = xt_register(f->t, f->a + A_OFF, A_LEN);
    f->bmem = xt_register(f->t, f->b, B_LEN);
    f->akey = region_key(f->t, (uintptr_t)(f->a + A_OFF));
    f->bkey = region_key(f->t, (uintptr_t)f->b);
    xt_md_exchange(f->t, XFER_MD_ALL, f->i);
}

/* One request posted three times (the first two are checked by the
 * target through the socket, the third moves directly). */
static void post3(fixture_t *f, xfer_op_t op, uint8_t *local, uint8_t *remote,
                  size_t len)
{
    xfer_desc_t l = { (uintptr_t)local, len, 0 }, r = { (uintptr_t)remote,
                                                        len, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;

    XT_STATUS_FATAL(xfer_req_create(f->i, op, &ll, &rl, f->tname, NULL, &req),
                    XFER_OK);
    for (int k = 0; k < 3; k++)
        XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS(xt_req_release(req), XFER_OK);
}

/* The well-behaved peer: WRITE then READ back both regions, byte for
 * byte; the guards around the cma region and the canaries outside A's
 * registration are untouched. */
static void good_pair(fixture_t *f)
{
    uint8_t *regions[2] = { f->shm, f->cma };

    for (int k = 0; k < 2; k++) {
        uint64_t seed = xt_seed();
        long at;

        xt_fill(f->src, GOOD_LEN, seed);
        post3(f, XFER_OP_WRITE, f->src, regions[k], GOOD_LEN);
        at = xt_check(regions[k], GOOD_LEN, seed);
        XT_CHECK(at < 0, "well-behaved WRITE: byte %ld of the %s region "
                 "differs (seed 0x%016" PRIx64 ")", at, k ? "cma" : "shm",
                 seed);
        memset(f->dst, 0, GOOD_LEN);
        post3(f, XFER_OP_READ, f->dst, regions[k], GOOD_LEN);
        at = xt_check(f->dst, GOOD_LEN, seed);
        XT_CHECK(at < 0, "well-behaved READ: byte %ld of the %s region "
                 "differs (seed 0x%016" PRIx64 ")", at, k ? "cma" : "shm",
                 seed);
    }
    XT_CHECK(xt_check(f->cma_all, GUARD, f->guard_seed) < 0 &&
                 xt_check_at(f->cma + GOOD_LEN, GUARD, f->guard_seed,
                             GUARD) < 0,
             "the guard pages around the target's region changed");
    if (f->a) {
        long at = canary_broken(f->a, A_OFF, f->canary);

        if (at < 0)
            at = canary_broken(f->a + A_OFF + A_LEN, BLOCK - A_OFF - A_LEN,
                               f->canary);
        XT_CHECK(at < 0, "block A outside its registration changed (at "
                 "%ld)", at);
    }
}

/* ---- helpers on answers ------------------------------------------------------------- */

static long field(const char *line, const char *name)
{
    const char *p = strstr(line, name);

    return p ? strtol(p + strlen(name), NULL, 10) : -999;
}

/* The attacker's "fds" listing: one entry per descriptor it holds
 * ("id=... size=... st_size=... ino=... seals=..."), up to max into
 * out; returns how many it holds. */
static int fds_get(child_t *c, char out[][256], int max)
{
    char *save = NULL, *tok;
    int n = -1, k = 0;

    ask(c, "fds");
    XT_REQUIRE(sscanf(c->line, "FDS %d", &n) == 1, "fds: %s", c->line);
    strtok_r(c->line, ";", &save);
    while ((tok = strtok_r(NULL, ";", &save)) != NULL && k < max)
        snprintf(out[k++], sizeof out[0], "%s", tok + (*tok == ' '));
    return n;
}

/* ========================================================================
 * Break 8: the socket
 * ======================================================================== */

static char *tmpdir_make(void)
{
    static char dir[64];

    snprintf(dir, sizeof dir, "/tmp/xfer-sec-XXXXXX");
    XT_REQUIRE(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    return dir;
}

static void rm_rf(void *arg)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", (const char *)arg);
    (void)!system(cmd);
    free(arg);
}

static void env_restore(void *arg)
{
    if (arg) {
        setenv("XDG_RUNTIME_DIR", arg, 1);
        free(arg);
    } else {
        unsetenv("XDG_RUNTIME_DIR");
    }
}

static void xdg_set(const char *dir)
{
    const char *old = getenv("XDG_RUNTIME_DIR");

    xt_defer(env_restore, old ? strdup(old) : NULL);
    setenv("XDG_RUNTIME_DIR", dir, 1);
}

/* Whether /proc/net/unix lists an abstract socket whose name contains s. */
static int abstract_listed(const char *s)
{
    FILE *f = fopen("/proc/net/unix", "r");
    char line[512];
    int hit = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strchr(line, '@') && strstr(line, s))
            hit = 1;
    fclose(f);
    return hit;
}

/* The default socket: a file in a directory of ours, mode 0700, that no
 * other user can reach (nothing abstract in /proc/net/unix), removed
 * with the backend; a directory another user could enter is refused. */
static void test_default_socket_private(void)
{
    char *dir = tmpdir_make(), sub[128], path[128], pidtag[32], xd[128];
    struct stat sb;
    fixture_t f;
    xfer_agent_t *bad;
    xfer_agent_opts_t o;
    int abstract = 1;

    xt_defer(rm_rf, strdup(dir));
    XT_REQUIRE(chmod(dir, 0700) == 0, "chmod");
    xdg_set(dir);
    fixture_make(&f, "uds");
    uds_where(f.t, path, sizeof path, &abstract);
    snprintf(sub, sizeof sub, "%s/xfer/", dir);
    snprintf(xd, sizeof xd, "%s/xfer", dir);
    XT_CHECK(!abstract, "the default socket is abstract: %s", path);
    XT_CHECK(strncmp(path, sub, strlen(sub)) == 0, "default socket %s is "
             "not in $XDG_RUNTIME_DIR/xfer", path);
    XT_REQUIRE(stat(sub, &sb) == 0, "no directory %s", sub);
    XT_CHECK(S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700 &&
                 sb.st_uid == geteuid(),
             "%s has mode 0%o, owner %u", sub, sb.st_mode & 0777, sb.st_uid);
    XT_REQUIRE(stat(path, &sb) == 0, "no socket file %s", path);
    XT_CHECK(S_ISSOCK(sb.st_mode) && (sb.st_mode & 0777) == 0600,
             "socket mode 0%o", sb.st_mode & 0777);
    snprintf(pidtag, sizeof pidtag, "xfer-uds-%ld-", (long)getpid());
    XT_CHECK(!abstract_listed(pidtag), "an abstract xfer socket of this "
             "process is listed in /proc/net/unix");
    good_pair(&f);
    xt_agent_destroy(f.i);
    xt_agent_destroy(f.t);
    XT_CHECK(stat(path, &sb) != 0 && errno == ENOENT,
             "the socket outlived its backend");

    /* A directory others may enter, or a link, is refused. */
    xfer_agent_opts_init(&o);
    o.name = xt_name("secbad");
    XT_STATUS_FATAL(xfer_agent_create(&o, &bad), XFER_OK);
    XT_REQUIRE(chmod(xd, 0777) == 0, "chmod");
    if (XT_STATUS(xfer_backend_add(bad, "uds", NULL), XFER_ERR_BACKEND))
        XT_ERR_HAS(xd, "mode 0777", "only it may enter (mode 0700)",
                   "path=");
    XT_REQUIRE(rmdir(xd) == 0 && symlink("/tmp", xd) == 0, "symlink");
    if (XT_STATUS(xfer_backend_add(bad, "uds", NULL), XFER_ERR_BACKEND))
        XT_ERR_HAS(xd, "not a directory");
    /* An XDG_RUNTIME_DIR that is not private: /tmp/xfer-<uid> instead. */
    XT_REQUIRE(unlink(xd) == 0 && chmod(dir, 0755) == 0, "chmod");
    xfer_agent_destroy(bad);
    fixture_make(&f, "uds");
    uds_where(f.t, path, sizeof path, &abstract);
    snprintf(sub, sizeof sub, "/tmp/xfer-%u/", (unsigned)geteuid());
    XT_CHECK(!abstract && strncmp(path, sub, strlen(sub)) == 0,
             "with a shared XDG_RUNTIME_DIR the socket is %s, want it in %s",
             path, sub);
    good_pair(&f);
}

/* Another user: cannot reach the default socket (its directory is
 * 0700), is refused at accept on an abstract one (no HELLO_ACK, one
 * line in the log) unless allow_uids names it. */
static void test_other_user_refused(void)
{
    fixture_t f;
    child_t *c;
    xfer_agent_t *ab, *ok;
    char where[128], *log;
    int abstract;

    fixture_make(&f, "uds");
    c = attacker(1);
    XT_CHECK(strcmp(c->line, "READY 65534") == 0, "attacker: %s", c->line);
    ask(c, "connect %s %" PRIu64, f.where, f.epoch);
    XT_CHECK(strcmp(c->line, "ERR 13") == 0, "uid 65534 connecting to %s: "
             "%s, want ERR 13 (EACCES)", f.where, c->line);
    good_pair(&f);

    xt_stderr_begin();
    ab = xt_agent(xt_name("secab"), "uds:path=@", 1);
    uds_where(ab, where, sizeof where, &abstract);
    XT_CHECK(abstract && where[0] == '@', "path=@ gave %s", where);
    ask(c, "connect %s %" PRIu64, where, xfer_agent_epoch(ab));
    log = xt_stderr_end();
    XT_CHECK(strcmp(c->line, "EOF") == 0, "uid 65534 on an abstract "
             "socket: %s, want EOF (refused before HELLO_ACK)", c->line);
    XT_CHECK(strstr(log, "refused a connection from pid") &&
                 strstr(log, "uid 65534: not this user"),
             "no log line about the refusal:\n%s", log);
    xt_proc_end(&c->proc, WAIT_MS);
    good_pair(&f);

    c = attacker(1);
    ok = xt_agent(xt_name("secok"), "uds:path=@,allow_uids=65534", 1);
    uds_where(ok, where, sizeof where, &abstract);
    ask(c, "connect %s %" PRIu64, where, xfer_agent_epoch(ok));
    XT_CHECK(strcmp(c->line, "HELLO_ACK 0") == 0, "uid 65534 in allow_uids: "
             "%s", c->line);
    good_pair(&f);
}

/* ========================================================================
 * Break 6: what a target exposes
 * ======================================================================== */

/* A same-user peer that presents no valid key gets no descriptor at all
 * (before: the stamp, its in-flight page and every memfd with a
 * registration in it, canaries included). */
static void test_nokey_gets_nothing(void)
{
    fixture_t f;
    child_t *c;

    fixture_make(&f, "uds");
    good_pair(&f);
    c = attacker(0);
    ask(c, "connect %s %" PRIu64, f.where, f.epoch);
    XT_REQUIRE(strcmp(c->line, "HELLO_ACK 0") == 0, "handshake: %s", c->line);
    ask(c, "write %" PRIx64 " %" PRIxPTR " 64", f.bkey ^ 0x100,
        (uintptr_t)f.b);
    XT_CHECK(field(c->line, "ACK ") == XFER_ERR_ACCESS,
             "WRITE with a wrong key: %s", c->line);
    ask(c, "read %" PRIx64 " %" PRIxPTR " 64", f.akey ^ 0x100,
        (uintptr_t)(f.a + A_OFF));
    XT_CHECK(field(c->line, "RESP ") == XFER_ERR_ACCESS,
             "READ with a wrong key: %s", c->line);
    XT_CHECK(field(c->line, "fds=") == 0, "a peer without a key got "
             "descriptors: %s", c->line);
    ask(c, "scan %" PRIx64, f.canary);
    XT_CHECK(strcmp(c->line, "SCAN 0") == 0, "canary words readable through "
             "what a keyless peer got: %s", c->line);
    XT_CHECK(canary_broken(f.b, B_LEN, f.canary) < 0,
             "block B changed by a refused WRITE");
    good_pair(&f);
}

/* With the key of part of block A: the peer's WRITE lands, it gets its
 * in-flight page and the stamp, and no memfd: nothing of A outside the
 * registration, nor of any other block, can be read through what it
 * holds. */
static void test_partial_key_gets_no_memfd(void)
{
    fixture_t f;
    child_t *c;

    fixture_make(&f, "uds");
    c = attacker(0);
    ask(c, "connect %s %" PRIu64, f.where, f.epoch);
    XT_REQUIRE(strcmp(c->line, "HELLO_ACK 0") == 0, "handshake: %s", c->line);
    ask(c, "write %" PRIx64 " %" PRIxPTR " 4096", f.akey,
        (uintptr_t)(f.a + A_OFF));
    XT_CHECK(field(c->line, "ACK ") == 0, "WRITE with A's key: %s", c->line);
    {
        char l[4][256];
        int n = fds_get(c, l, 4);

        XT_CHECK(n == 2, "the holder of a partial key got %d descriptors, "
                 "want 2 (its in-flight page and the stamp)", n);
        XT_CHECK(n < 1 || strncmp(l[0], "id=ffffffffffffffff size=4096",
                                  29) == 0,
                 "first descriptor: %s, want the in-flight page", l[0]);
        XT_CHECK(n < 2 || strncmp(l[1], "id=0 size=4096", 14) == 0,
                 "second descriptor: %s, want the stamp", l[1]);
    }
    ask(c, "scan %" PRIx64, f.canary);
    XT_CHECK(strcmp(c->line, "SCAN 0") == 0, "canary words readable through "
             "what the holder of a partial key got: %s", c->line);
    for (size_t k = 0; k < 4096; k++)
        if (f.a[A_OFF + k] != 0x5a) {
            XT_FAIL("the key holder's WRITE did not land (byte %zu)", k);
            break;
        }
    fill_canary(f.a + A_OFF, 4096, f.canary);
    good_pair(&f);
}

/* With the key of block B, registered whole for READ and WRITE: the peer
 * gets B's memfd, exactly B: no byte past it (a read there is a SIGBUS),
 * and it can neither shrink nor grow it (the target would fault on its
 * own memory). */
static void test_whole_key_gets_only_its_block(void)
{
    fixture_t f;
    child_t *c;
    char want[64];

    fixture_make(&f, "uds");
    c = attacker(0);
    ask(c, "connect %s %" PRIu64, f.where, f.epoch);
    XT_REQUIRE(strcmp(c->line, "HELLO_ACK 0") == 0, "handshake: %s", c->line);
    ask(c, "read %" PRIx64 " %" PRIxPTR " 64", f.bkey, (uintptr_t)f.b);
    XT_CHECK(field(c->line, "RESP ") == 0 && field(c->line, "fds=") == 3,
             "READ with B's key: %s, want 3 descriptors", c->line);
    snprintf(want, sizeof want, "size=%u st_size=%u ", B_LEN, B_LEN);
    {
        char l[4][256], id[32] = "";
        const char *p;
        int n = fds_get(c, l, 4);

        XT_CHECK(n == 3, "with B's key: %d descriptors, want 3", n);
        XT_REQUIRE(n >= 3 && strstr(l[2], want) != NULL &&
                       sscanf(l[2], "id=%31s", id) == 1,
                   "B's memfd: '%s', want %s", n >= 3 ? l[2] : "", want);
        ask(c, "scan %" PRIx64, f.canary);
        XT_CHECK(field(c->line, "SCAN ") == B_LEN / 8, "canary words "
                 "through what the key holder got: %s, want B's %u and "
                 "none of A's", c->line, B_LEN / 8);
        p = ask(c, "probe %s", id);
        XT_CHECK(field(p, "mmap_rw=") == 0, "B is registered for WRITE, its "
                 "memfd maps read-write: %s", p);
        XT_CHECK(field(p, "shrink=") == EPERM && field(p, "grow=") == EPERM,
                 "B's memfd could be resized: %s", p);
        XT_CHECK(strstr(p, "past_end=SIGBUS") != NULL, "past B's end the "
                 "peer reads something: %s", p);
    }
    /* The target still reads and writes its own block. */
    XT_CHECK(canary_broken(f.b, B_LEN, f.canary) < 0, "block B changed");
    good_pair(&f);
}

/* The stamp: read-only for peers by every path (a writable mapping,
 * write(), the file opened again through /proc, mprotect, truncation);
 * each peer's in-flight page is its own.  The stamp still works: a
 * deregistration stops the well-behaved peer's direct copies. */
static void test_stamp_read_only(void)
{
    fixture_t f;
    child_t *c, *c2;
    const char *l;
    char ino1[32] = "", ino2[32] = "";

    fixture_make(&f, "uds");
    c = attacker(0);
    c2 = attacker(0);
    ask(c, "connect %s %" PRIu64, f.where, f.epoch);
    ask(c2, "connect %s %" PRIu64, f.where, f.epoch);
    ask(c, "write %" PRIx64 " %" PRIxPTR " 64", f.akey,
        (uintptr_t)(f.a + A_OFF));
    XT_CHECK(field(c->line, "fds=") == 2, "with a key: %s", c->line);
    ask(c2, "write %" PRIx64 " %" PRIxPTR " 64", f.akey,
        (uintptr_t)(f.a + A_OFF));
    l = ask(c, "probe 0");
    XT_CHECK(strncmp(l, "PROBE ", 6) == 0 && field(l, "mmap_rw=") != 0 &&
                 field(l, "write=") != 0 && field(l, "reopen_write=") != 0 &&
                 field(l, "mprotect=") != 0 && field(l, "shrink=") != 0 &&
                 field(l, "grow=") != 0,
             "a peer can write or resize the stamp: %s", l);
    ask(c, "peek 0");
    XT_CHECK(strcmp(c->line, "PEEK 0") == 0, "stamp: %s", c->line);
    /* In-flight pages: distinct files; one peer's count is not the
     * other's. */
    {
        char e[4][256];

        if (fds_get(c, e, 4) >= 1)
            sscanf(e[0], "id=ffffffffffffffff size=4096 st_size=4096 "
                   "ino=%31s", ino1);
        if (fds_get(c2, e, 4) >= 1)
            sscanf(e[0], "id=ffffffffffffffff size=4096 st_size=4096 "
                   "ino=%31s", ino2);
    }
    XT_CHECK(ino1[0] && ino2[0] && strcmp(ino1, ino2) != 0,
             "in-flight pages of two peers: inodes '%s' and '%s'", ino1,
             ino2);
    ask(c, "poke ffffffffffffffff 77");
    ask(c2, "peek ffffffffffffffff");
    XT_CHECK(strcmp(c2->line, "PEEK 0") == 0, "one peer's in-flight page "
             "shows another's count: %s", c2->line);
    ask(c, "poke ffffffffffffffff 0");
    good_pair(&f);

    /* Deregistering B moves the stamp: the well-behaved peer's direct
     * post to it is refused, nothing lands. */
    {
        xfer_desc_t ld = { (uintptr_t)f.src, 4096, 0 },
                    rd = { (uintptr_t)f.b, 4096, 0 };
        xfer_dlist_t ll = xt_dlist(&ld, 1), rl = xt_dlist(&rd, 1);
        xfer_req_t *req = NULL;

        xt_fill(f.src, 4096, xt_seed());
        XT_STATUS_FATAL(xfer_req_create(f.i, XFER_OP_WRITE, &ll, &rl, f.tname,
                                        NULL, &req), XFER_OK);
        xt_req_defer(req);
        for (int k = 0; k < 3; k++)
            XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
        fill_canary(f.b, B_LEN, f.canary);
        XT_STATUS(xfer_mem_deregister(f.t, f.bmem), XFER_OK);
        XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_ERR_ACCESS);
        XT_CHECK(canary_broken(f.b, B_LEN, f.canary) < 0,
                 "a WRITE landed in B after its deregistration");
        ask(c, "peek 0");
        XT_CHECK(strcmp(c->line, "PEEK 1") == 0, "stamp after one "
                 "deregistration: %s", c->line);
    }
    good_pair(&f);
}

/* ========================================================================
 * Break 7: a hostile target against our initiator
 * ======================================================================== */

/* Descriptors this process holds now. */
static int fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n - 1; /* opendir's own */
}

typedef struct hostile {
    child_t *c;
    char name[64];
    uint8_t *buf; /* the template's region: where the victim writes */
} hostile_t;

/* A hostile target at a fresh path speaking scenario `how`: the metadata
 * of a real uds agent (name, socket path, a whole xfer_mem_alloc region,
 * so the initiator expects a memfd) loaded into f's initiator, after
 * that agent is gone and the hostile child listens at its path. */
static void hostile_start(fixture_t *f, hostile_t *h, const char *how,
                          int as_nobody)
{
    char *dir = tmpdir_make(), path[128], spec[160], id[32], size[32];
    char *argv[] = { self_exe, "--hostile-target", path, (char *)how, id,
                     size, as_nobody ? "nobody" : "us", NULL };
    xfer_agent_t *tmpl;
    char *blob;
    size_t len;

    xt_defer(rm_rf, strdup(dir));
    XT_REQUIRE(chmod(dir, 0777) == 0, "chmod");
    snprintf(path, sizeof path, "%s/hostile.sock", dir);
    snprintf(spec, sizeof spec, "uds:path=%s", path);
    snprintf(h->name, sizeof h->name, "%s", xt_name("hostile"));
    tmpl = xt_agent(h->name, spec, 0);
    XT_STATUS_FATAL(xfer_mem_alloc(tmpl, BLOCK, 0, (void **)&h->buf),
                    XFER_OK);
    xt_register(tmpl, h->buf, BLOCK);
    blob = xt_md_get(tmpl, XFER_MD_ALL, NULL, 0, &len);
    XT_STATUS_FATAL(xfer_md_load(f->i, blob, len, NULL, 0), XFER_OK);
    xt_agent_destroy(tmpl);
    /* The id the initiator looks for: a memfd it accepted would serve
     * its next direct copies. */
    snprintf(id, sizeof id, "%" PRIx64, uds_memfd_id(blob, len));
    XT_REQUIRE(strcmp(id, "0") != 0, "the template region is not shared");
    snprintf(size, sizeof size, "%u", BLOCK);
    h->c = child_start(argv);
}

/* WRITEs from f's initiator to the hostile target: every post fails
 * with `st` and a sentence holding `why` (a new connection each time,
 * refused again), and the initiator lives on; descriptors it held before
 * are all it holds after. */
static void victim_posts(fixture_t *f, hostile_t *h, xfer_status_t st,
                         const char *why)
{
    uint8_t *src = f->src;
    xfer_desc_t l = { (uintptr_t)src, 65536, 0 },
                r = { (uintptr_t)h->buf, 65536, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    int before;

    good_pair(f); /* its connections are open before we count */
    before = fd_count();

    XT_STATUS_FATAL(xfer_req_create(f->i, XFER_OP_WRITE, &ll, &rl, h->name,
                                    NULL, &req), XFER_OK);
    xt_req_defer(req);
    for (int k = 0; k < 4; k++) {
        if (XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), st) &&
            st != XFER_OK)
            XT_ERR_HAS(why);
        good_pair(f);
    }
    XT_CHECK(fd_count() <= before, "the initiator holds %d descriptors, "
             "%d before the hostile target", fd_count(), before);
}

/* A memfd that claims 1 MiB and has 4096 bytes (sealed): mapped as
 * claimed, the next direct WRITE was a SIGBUS. */
static void test_target_short_memfd(void)
{
    fixture_t f;
    hostile_t h;

    fixture_make(&f, "uds");
    hostile_start(&f, &h, "short", 0);
    victim_posts(&f, &h, XFER_ERR_REMOTE_DISCONNECT,
                 "of 4096 bytes and claims 1048576: refused");
}

static void test_target_unsealed_memfd(void)
{
    fixture_t f;
    hostile_t h;

    fixture_make(&f, "uds");
    hostile_start(&f, &h, "unsealed", 0);
    victim_posts(&f, &h, XFER_ERR_REMOTE_DISCONNECT,
                 "not sealed against shrinking (F_SEAL_SHRINK): refused");
}

static void test_target_not_memfd(void)
{
    fixture_t f;
    hostile_t h;

    fixture_make(&f, "uds");
    hostile_start(&f, &h, "notmemfd", 0);
    victim_posts(&f, &h, XFER_ERR_REMOTE_DISCONNECT,
                 "that is not a memfd");
}

/* 100 descriptors on one SHM_FD (more than a recvmsg takes), then 40
 * riding on the bytes of a frame that is no SHM_FD: both close the
 * connection, none is kept. */
static void test_target_fd_flood(void)
{
    fixture_t f;
    hostile_t h, h2;

    fixture_make(&f, "uds");
    hostile_start(&f, &h, "flood", 0);
    victim_posts(&f, &h, XFER_ERR_REMOTE_DISCONNECT,
                 "more file descriptors than SHM_FD frames");
    hostile_start(&f, &h2, "stray", 0);
    victim_posts(&f, &h2, XFER_ERR_REMOTE_DISCONNECT,
                 "more file descriptors than SHM_FD frames");
}

static void test_target_fd_before_handshake(void)
{
    fixture_t f;
    hostile_t h;

    fixture_make(&f, "uds");
    hostile_start(&f, &h, "early", 0);
    victim_posts(&f, &h, XFER_ERR_REMOTE_DISCONNECT,
                 "bad SHM_FD (before HELLO_ACK)");
}

/* A target of another user: refused at the handshake, before it could
 * hand us anything (its short memfd would otherwise be mapped). */
static void test_target_other_user(void)
{
    fixture_t f;
    hostile_t h;

    fixture_make(&f, "uds");
    hostile_start(&f, &h, "nobody", 1);
    XT_CHECK(strcmp(h.c->line, "READY 65534") == 0, "hostile target: %s",
             h.c->line);
    victim_posts(&f, &h, XFER_ERR_AUTH,
                 "runs as uid 65534, not this user (uid 0) nor one in "
                 "allow_uids: refused");
}

/* ======================================================================== */

static const xt_test_t same_user_tests[] = {
    XT_TEST(test_default_socket_private),
    XT_TEST(test_nokey_gets_nothing),
    XT_TEST(test_partial_key_gets_no_memfd),
    XT_TEST(test_whole_key_gets_only_its_block),
    XT_TEST(test_stamp_read_only),
    XT_TEST(test_target_short_memfd),
    XT_TEST(test_target_unsealed_memfd),
    XT_TEST(test_target_not_memfd),
    XT_TEST(test_target_fd_flood),
    XT_TEST(test_target_fd_before_handshake),
    XT_END,
};
/* These run a hostile process as user nobody. */
static const xt_test_t other_user_tests[] = {
    XT_TEST(test_other_user_refused),
    XT_TEST(test_target_other_user),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        { "sec-uds", same_user_tests },
        { "sec-uds-other-user", other_user_tests },
    };
    size_t n = sizeof suites / sizeof suites[0];
    ssize_t len;

    if (argc == 3 && strcmp(argv[1], "--attacker") == 0)
        return attacker_main(strcmp(argv[2], "nobody") == 0);
    if (argc == 7 && strcmp(argv[1], "--hostile-target") == 0)
        return hostile_main(argv[2], argv[3], strtoull(argv[4], NULL, 16),
                            strtoull(argv[5], NULL, 10),
                            strcmp(argv[6], "nobody") == 0);
    len = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (len <= 0)
        xt_skip("cannot find this program's file: %s", strerror(errno));
    self_exe[len] = '\0';
    if (getenv("XFER_PLUGIN_PATH") == NULL)
        xt_skip("XFER_PLUGIN_PATH is not set (run through make check)");
    signal(SIGPIPE, SIG_IGN);
    if (getuid() != 0) {
        printf("SKIP: suite sec-uds-other-user (test_other_user_refused, "
               "test_target_other_user): needs root to run a hostile "
               "process as user nobody\n");
        n--;
    }
    return xt_run(argv[0], suites, n);
}
