/* test-uds.c - what only the uds backend does: refusing a peer on another
 * host, a dead target reported as a disconnect, notifications in posting
 * order on a fresh connection, the EPERM fallback to the socket, the
 * state it reports (xfer-info's probe, xfer_backend_state), and two
 * threads posting to two targets while one dies and comes back. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/xt.h"

#define WAIT_MS 20000
#define NOBODY 65534

/* ---- small pipe protocol between forked processes ------------------------ */

static int put_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);

        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int get_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);

        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_msg(int fd, const void *buf, size_t len)
{
    uint64_t n = len;

    return put_all(fd, &n, sizeof n) || put_all(fd, buf, len) ? -1 : 0;
}

static char *recv_msg(int fd, size_t *len)
{
    uint64_t n;
    char *b;

    if (get_all(fd, &n, sizeof n) || n > (64u << 20) || !(b = malloc(n + 1)))
        return NULL;
    if (get_all(fd, b, n)) {
        free(b);
        return NULL;
    }
    b[n] = '\0';
    *len = n;
    return b;
}

/* The target's metadata from a pipe, and its first region's address. */
static char *recv_blob(int fd, size_t *len, uint64_t *addr)
{
    char *blob = recv_msg(fd, len);
    json_t *root;

    XT_REQUIRE(blob, "no metadata from the target");
    root = xt_blob_parse(blob, *len);
    XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0), "addr"),
                           addr),
               "region address");
    return blob;
}

/* ---- another host ------------------------------------------------------------ */

/* Change one base64 character of the uds connection info: character 24
 * holds the top bits of byte 18 (inside the boot id), character 72 those
 * of byte 54 (inside the host name). */
static void refuse_edited(size_t pos, const char *what)
{
    xfer_agent_t *tgt = xt_agent(xt_name("tgt"), "uds", 1);
    xfer_agent_t *ini = xt_agent(xt_name("ini"), "uds", 1);
    size_t len;
    char *blob = xt_md_get(tgt, XFER_MD_ALL, NULL, 0, &len);
    json_t *root = xt_blob_parse(blob, len);
    json_t *be = json_array_get(json_object_get(root, "backends"), 0);
    const char *conn = json_string_value(json_object_get(be, "conn"));
    char *edited, *forged;

    XT_REQUIRE(conn && strlen(conn) > pos, "no uds connection info");
    edited = strdup(conn);
    XT_REQUIRE(edited, "out of memory");
    edited[pos] = edited[pos] == 'A' ? 'B' : 'A';
    json_object_set_new(be, "conn", json_string(edited));
    free(edited);
    forged = xt_blob_dump(root, &len);
    XT_STATUS(xfer_md_load(ini, forged, len, NULL, 0), XFER_ERR_INVALID);
    XT_ERR_HAS("another host", "use tcp");
    XT_STATUS(xfer_md_check(ini, xfer_agent_name(tgt)), XFER_ERR_NOT_FOUND);
    (void)what;
    /* The true blob loads. */
    XT_STATUS(xfer_md_load(ini, blob, strlen(blob), NULL, 0), XFER_OK);
}

static void test_other_boot_id(void) { refuse_edited(24, "boot id"); }
static void test_other_hostname(void) { refuse_edited(72, "host name"); }

/* ---- a dead target ------------------------------------------------------------ */

static void test_dead_target(void)
{
    int md[2], pid, st;
    size_t len;
    char *blob;
    xfer_agent_t *ini;
    unsigned char *buf = xt_alloc(65536);
    xfer_req_t *req = NULL;
    xfer_desc_t l = { (uintptr_t)buf, 4096, 0 }, r;
    xfer_dlist_t ll = xt_dlist(&l, 1), rl;
    xfer_status_t s;
    char name[64];

    snprintf(name, sizeof name, "%s", xt_name("dead"));
    XT_REQUIRE(pipe(md) == 0, "pipe");
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        xfer_agent_opts_t o;
        xfer_agent_t *a = NULL;
        xfer_mem_t *m = NULL;
        xfer_desc_t d;
        xfer_dlist_t dl;
        void *mem;

        close(md[0]);
        alarm(60);
        xfer_agent_opts_init(&o);
        o.name = name;
        if (xfer_agent_create(&o, &a) || xfer_backend_add(a, "uds:mode=cma",
                                                          NULL) ||
            posix_memalign(&mem, 4096, 65536))
            _exit(3);
        d = (xfer_desc_t){ (uintptr_t)mem, 65536, 0 };
        dl = xt_dlist(&d, 1);
        if (xfer_mem_register(a, &dl, NULL, &m) ||
            xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) ||
            send_msg(md[1], blob, len))
            _exit(4);
        pause();
        _exit(0);
    }
    close(md[1]);
    blob = recv_msg(md[0], &len);
    close(md[0]);
    XT_REQUIRE(blob, "no metadata from the target");
    {
        json_t *root = xt_blob_parse(blob, len);
        uint64_t addr = 0;

        XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0),
                                               "addr"), &addr),
                   "region address");
        r = (xfer_desc_t){ (uintptr_t)addr, 4096, 0 };
    }
    rl = xt_dlist(&r, 1);
    /* No progress thread: nothing reads the closed socket; the post's
     * own check (the target's liveness word, then ESRCH) must fail it.
     * The shm path's cases are test-uds-gone's. */
    ini = xt_agent(xt_name("ini"), "uds:mode=cma", 0);
    xt_register(ini, buf, 65536);
    XT_STATUS_FATAL(xfer_md_load(ini, blob, len, NULL, 0), XFER_OK);
    free(blob);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, name, NULL,
                                    &req), XFER_OK);
    xt_req_defer(req);
    /* The first posts are checked by the target (the first request on a
     * connection earns the stamp on its second); the third moves by
     * process_vm_writev. */
    for (int i = 0; i < 3; i++)
        XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    s = xfer_req_post(req, NULL, 0);
    if (s == XFER_IN_PROG)
        s = xt_wait_req(req, WAIT_MS);
    if (XT_STATUS(s, XFER_ERR_REMOTE_DISCONNECT))
        XT_ERR_HAS(name);
}

/* ---- deregistration against copies under way ---------------------------------- */

#define RACE_LEN ((size_t)32 << 20)
#define RACE_MARK 0x5a

/* The target of dereg_race: registers RACE_LEN bytes, sends its metadata,
 * deregisters when told, then overwrites the region and reports whether
 * any byte changed after that (a copy landing after deregistration). */
static int race_target(const char *name, const char *spec, int shm, int md,
                       int go)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *m = NULL;
    xfer_desc_t d;
    xfer_dlist_t dl;
    unsigned char *buf = NULL;
    uint64_t bad = 0;
    size_t len, i;
    char *blob, c;

    /* Failure is an answer: under valgrind everything is slower. */
    alarm(getenv("XT_WRAP") && *getenv("XT_WRAP") ? 600 : 60);
    xfer_agent_opts_init(&o);
    o.name = name;
    if (xfer_agent_create(&o, &a) || xfer_backend_add(a, spec, NULL))
        return 3;
    if (shm ? xfer_mem_alloc(a, RACE_LEN, 0, (void **)&buf) != XFER_OK
            : posix_memalign((void **)&buf, 4096, RACE_LEN) != 0)
        return 3;
    memset(buf, 0, RACE_LEN);
    d = (xfer_desc_t){ (uintptr_t)buf, RACE_LEN, 0 };
    dl = xt_dlist(&d, 1);
    if (xfer_mem_register(a, &dl, NULL, &m) ||
        xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) ||
        send_msg(md, blob, len))
        return 4;
    xfer_free(blob);
    if (get_all(go, &c, 1))
        return 5;
    if (xfer_mem_deregister(a, m) != XFER_OK)
        return 6;
    /* From here the memory is the program's again: mark it, give any
     * stray copy time to land, and look. */
    memset(buf, RACE_MARK, RACE_LEN);
    usleep(200000);
    for (i = 0; i < RACE_LEN; i++)
        if (buf[i] != RACE_MARK) {
            bad = i + 1;
            break;
        }
    if (put_all(md, &bad, sizeof bad))
        return 7;
    if (get_all(go, &c, 1)) /* the parent has stopped posting */
        return 8;
    xfer_agent_destroy(a); /* frees xfer_mem_alloc memory */
    if (!shm)
        free(buf);
    return 0;
}

struct poster {
    xfer_req_t *req;
    int go;          /* tells the target to deregister */
    int stop;        /* set by the test */
    long ok;         /* posts completed */
    int signalled;   /* 1: told the target; -1: could not */
    xfer_status_t last;
};

/* WRITE the whole region again and again until stopped or refused; after
 * a few posts on the direct path (the first two go through the socket) tell
 * the target to deregister, from this thread, so that the next copies are
 * under way when it does, however the threads are scheduled. */
static void *poster_main(void *arg)
{
    struct poster *p = arg;
    char c = 'g';

    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        xfer_status_t s = xfer_req_post(p->req, NULL, 0);

        while (s == XFER_IN_PROG)
            s = xfer_req_status(p->req);
        p->last = s;
        if (s != XFER_OK)
            break;
        if (__atomic_add_fetch(&p->ok, 1, __ATOMIC_RELEASE) == 6)
            __atomic_store_n(&p->signalled, put_all(p->go, &c, 1) ? -1 : 1,
                             __ATOMIC_RELEASE);
    }
    return NULL;
}

/* A target deregisters its memory while an initiator keeps WRITEs of it
 * under way on the direct path: once xfer_mem_deregister returns, no byte
 * may land there (the design: targets expose only registered memory). */
static void dereg_race(const char *spec, int shm)
{
    int md[2], go[2], pid, st;
    size_t len;
    char *blob, name[64], c = 'g';
    xfer_agent_t *ini;
    unsigned char *buf;
    xfer_desc_t l, r;
    xfer_dlist_t ll, rl;
    struct poster p = { NULL, -1, 0, 0, 0, XFER_OK };
    pthread_t tid;
    uint64_t addr = 0, bad = 1;

    snprintf(name, sizeof name, "%s", xt_name("race"));
    XT_REQUIRE(pipe(md) == 0 && pipe(go) == 0, "pipe");
    fflush(NULL);
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        close(md[0]);
        close(go[1]);
        xt_child_exit(race_target(name, spec, shm, md[1], go[0]));
    }
    xt_child_add(pid);
    close(md[1]);
    close(go[0]);
    blob = recv_blob(md[0], &len, &addr);
    ini = xt_agent(xt_name("ini"), spec, 1);
    buf = xt_alloc(RACE_LEN);
    memset(buf, 0x11, RACE_LEN);
    xt_register(ini, buf, RACE_LEN);
    XT_STATUS_FATAL(xfer_md_load(ini, blob, len, NULL, 0), XFER_OK);
    free(blob);
    l = (xfer_desc_t){ (uintptr_t)buf, RACE_LEN, 0 };
    r = (xfer_desc_t){ (uintptr_t)addr, RACE_LEN, 0 };
    ll = xt_dlist(&l, 1);
    rl = xt_dlist(&r, 1);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, name, NULL,
                                    &p.req), XFER_OK);
    xt_req_defer(p.req);
    p.go = go[1];
    XT_REQUIRE(pthread_create(&tid, NULL, poster_main, &p) == 0, "thread");
    /* The target answers once it deregistered and looked (the poster
     * told it to); its alarm bounds the wait. */
    XT_CHECK(get_all(md[0], &bad, sizeof bad) == 0, "no answer from the "
             "target (%ld WRITEs, last %s)", p.ok, xt_status_name(p.last));
    __atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
    pthread_join(tid, NULL);
    XT_CHECK(p.signalled == 1, "the target was not told to deregister "
             "(%ld WRITEs, last %s)", p.ok, xt_status_name(p.last));
    XT_CHECK(bad == 0, "%s: byte %llu of the region changed after "
             "xfer_mem_deregister returned (%ld WRITEs before)", spec,
             (unsigned long long)(bad - 1), p.ok);
    /* Posts after the deregistration are refused by the target. */
    XT_CHECK(p.last == XFER_OK || p.last == XFER_ERR_ACCESS,
             "a WRITE ended with %s", xt_status_name(p.last));
    XT_CHECK(put_all(go[1], &c, 1) == 0, "cannot release the target");
    close(go[1]);
    close(md[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    xt_child_forget(pid);
    XT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "target status 0x%x", st);
}

static void test_dereg_waits_shm(void)
{
    dereg_race("uds:mode=shm", 1);
}

static void test_dereg_waits_cma(void)
{
    dereg_race("uds:mode=cma", 0);
}

/* ---- two threads, two targets, one killed and restarted -------------------------- */

#define MT_LEN ((size_t)64 << 10)
#define MT_REQS 6
#define MT_ROUNDS 3
#define MT_DESC_MAX 100

/* The requests each poster reposts, as descriptor lists at the same
 * offsets locally and remotely: one 8-byte, one page, scattered pieces,
 * two adjacent (one copy), 64 (the most an unlocked post takes) and 100
 * (locked). */
static size_t mt_descs(unsigned k, size_t *off, size_t *len)
{
    static const size_t n[MT_REQS] = { 1, 1, 3, 2, 64, 100 };

    for (size_t i = 0; i < n[k]; i++) {
        switch (k) {
        case 0: off[i] = 0; len[i] = 8; break;
        case 1: off[i] = 4096; len[i] = 4096; break;
        case 2: off[i] = 9000 + 200 * i; len[i] = 100 + i; break;
        case 3: off[i] = 16384 + 512 * i; len[i] = 512; break;
        case 4: off[i] = 20480 + 128 * i; len[i] = 64; break;
        default: off[i] = 32768 + 64 * i; len[i] = 16 + i % 7; break;
        }
    }
    return n[k];
}

/* A target of mt_run: registers MT_LEN bytes, sends its metadata, then
 * answers the seed it is sent with whether its memory holds exactly
 * that seed's pattern (first bad byte + 1, 0: all of it). */
static int mt_target(const char *name, const char *spec, int shm, int md,
                     int cmd)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *m = NULL;
    xfer_desc_t d;
    xfer_dlist_t dl;
    unsigned char *buf = NULL;
    uint64_t seed, bad;
    size_t len;
    char *blob;

    alarm(getenv("XT_WRAP") && *getenv("XT_WRAP") ? 600 : 60);
    xfer_agent_opts_init(&o);
    o.name = name;
    if (xfer_agent_create(&o, &a) || xfer_backend_add(a, spec, NULL))
        return 3;
    if (shm ? xfer_mem_alloc(a, MT_LEN, 0, (void **)&buf) != XFER_OK
            : posix_memalign((void **)&buf, 4096, MT_LEN) != 0)
        return 3;
    memset(buf, 0, MT_LEN);
    d = (xfer_desc_t){ (uintptr_t)buf, MT_LEN, 0 };
    dl = xt_dlist(&d, 1);
    if (xfer_mem_register(a, &dl, NULL, &m) ||
        xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) ||
        send_msg(md, blob, len))
        return 4;
    xfer_free(blob);
    if (get_all(cmd, &seed, sizeof seed) == 0) {
        long at;

        /* The memory is ours again once deregistered (and the plugin's
         * lock orders its writes before this read, for TSan too). */
        if (xfer_mem_deregister(a, m) != XFER_OK)
            return 6;
        at = xt_check(buf, MT_LEN, seed);
        bad = at < 0 ? 0 : (uint64_t)at + 1;
        if (put_all(md, &bad, sizeof bad))
            return 5;
    }
    xfer_agent_destroy(a);
    if (!shm)
        free(buf);
    return 0;
}

/* Forks targets on request, so that the test, which runs threads, never
 * forks one itself: 'a' or 'b' starts target A or B on its pipes and
 * answers its pid. */
struct mt_spawn {
    int req, pid;            /* our ends */
    int md[2][2], cmd[2][2]; /* per target */
    char name[2][64];
};

static void mt_spawner(struct mt_spawn *s, const char *spec, int shm,
                       int req, int rep)
{
    char c;

    signal(SIGCHLD, SIG_IGN); /* killed targets reap themselves */
    while (get_all(req, &c, 1) == 0) {
        int t = c == 'b', pid;

        fflush(NULL);
        pid = fork();
        if (pid == 0) {
            close(req);
            close(rep);
            _exit(mt_target(s->name[t], spec, shm, s->md[t][1],
                            s->cmd[t][0]));
        }
        if (put_all(rep, &pid, sizeof pid))
            break;
    }
    _exit(0);
}

struct mt_poster {
    xfer_agent_t *ini;
    const char *name;
    unsigned char *src, *dst;   /* this poster's own, registered */
    uint64_t seed;
    pthread_mutex_t mu;         /* guards addr and gen */
    uint64_t addr;              /* the target's region, this incarnation */
    unsigned gen;
    int stop;
    long ok;                    /* WRITE + READ back verified */
    long fails;                 /* posts that failed REMOTE_DISCONNECT */
    char err[512];              /* the first thing that went wrong */
};

static void mt_release(xfer_req_t **r)
{
    for (unsigned k = 0; k < 2 * MT_REQS; k++)
        if (r[k]) {
            xfer_req_release(r[k]);
            r[k] = NULL;
        }
}

/* WRITE then READ back pair k: anything but OK is REMOTE_DISCONNECT
 * (counted, then wait for the next incarnation) or an error (recorded). */
static int mt_post(struct mt_poster *p, xfer_req_t *req, const char *what)
{
    xfer_status_t s = xfer_req_post(req, XFER_NOTIF_NONE, 0);

    if (s == XFER_IN_PROG)
        s = xfer_req_wait(req, WAIT_MS);
    if (s == XFER_OK)
        return 0;
    if (s == XFER_ERR_REMOTE_DISCONNECT) {
        __atomic_add_fetch(&p->fails, 1, __ATOMIC_RELEASE);
        return 1;
    }
    snprintf(p->err, sizeof p->err, "%s to '%s' ended %s: %s", what,
             p->name, xt_status_name(s), xfer_last_error());
    return -1;
}

static void *mt_poster_main(void *arg)
{
    struct mt_poster *p = arg;
    xfer_req_t *r[2 * MT_REQS] = { NULL };
    size_t off[MT_DESC_MAX], len[MT_DESC_MAX];
    xfer_desc_t l[MT_DESC_MAX], rd[MT_DESC_MAX];
    unsigned gen = 0, broken = 1;
    uint64_t rnd = p->seed;

    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        uint64_t addr, s;
        unsigned k, g;
        size_t n;
        int rc;

        pthread_mutex_lock(&p->mu);
        g = p->gen;
        addr = p->addr;
        pthread_mutex_unlock(&p->mu);
        if (g != gen) {
            /* A new incarnation: requests on the old one are dead. */
            mt_release(r);
            for (k = 0; k < MT_REQS; k++) {
                xfer_dlist_t ll, rl;

                n = mt_descs(k, off, len);
                for (size_t i = 0; i < n; i++) {
                    l[i] = (xfer_desc_t){ 0, len[i], 0 };
                    rd[i] = (xfer_desc_t){ addr + off[i], len[i], 0 };
                }
                ll = xt_dlist(l, n);
                rl = xt_dlist(rd, n);
                for (size_t i = 0; i < n; i++)
                    l[i].addr = (uintptr_t)(p->src + off[i]);
                if (xfer_req_create(p->ini, XFER_OP_WRITE, &ll, &rl, p->name,
                                    NULL, &r[k]) != XFER_OK)
                    goto create_failed;
                for (size_t i = 0; i < n; i++)
                    l[i].addr = (uintptr_t)(p->dst + off[i]);
                if (xfer_req_create(p->ini, XFER_OP_READ, &ll, &rl, p->name,
                                    NULL, &r[MT_REQS + k]) != XFER_OK)
                    goto create_failed;
            }
            gen = g;
            broken = 0;
        }
        if (broken) {
            usleep(1000);
            continue;
        }
        k = (unsigned)(xt_rand(&rnd) % MT_REQS);
        s = xt_rand(&rnd);
        n = mt_descs(k, off, len);
        for (size_t i = 0; i < n; i++) {
            xt_fill_at(p->src + off[i], len[i], s, off[i]);
            memset(p->dst + off[i], 0xa5, len[i]);
        }
        rc = mt_post(p, r[k], "WRITE");
        if (!rc)
            rc = mt_post(p, r[MT_REQS + k], "READ");
        if (rc < 0)
            break;
        if (rc > 0) {
            broken = 1;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            long at = xt_check_at(p->dst + off[i], len[i], s, off[i]);

            if (at >= 0) {
                snprintf(p->err, sizeof p->err, "'%s': request %u "
                         "descriptor %zu byte %ld read back wrong (pattern "
                         "seed 0x%016llx)", p->name, k, i, at,
                         (unsigned long long)s);
                goto out;
            }
        }
        __atomic_add_fetch(&p->ok, 1, __ATOMIC_RELEASE);
    }
    goto out;
create_failed:
    snprintf(p->err, sizeof p->err, "request to '%s': %s", p->name,
             xfer_last_error());
out:
    mt_release(r);
    return NULL;
}

static long mt_load(long *v)
{
    return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

/* Wait until *v exceeds floor; 0 after timeout_ms. */
static int mt_wait_above(long *v, long floor, unsigned timeout_ms)
{
    uint64_t end = xt_now_ms() + timeout_ms;

    while (mt_load(v) <= floor) {
        if (xt_now_ms() >= end)
            return 0;
        usleep(1000);
    }
    return 1;
}

/* Start target t through the spawner, load its metadata; its region. */
static uint64_t mt_start(struct mt_spawn *s, xfer_agent_t *ini, int t,
                         int *pid)
{
    char c = t ? 'b' : 'a';
    size_t len;
    uint64_t addr = 0;
    char *blob;

    XT_REQUIRE(put_all(s->req, &c, 1) == 0 &&
                   get_all(s->pid, pid, sizeof *pid) == 0,
               "the spawner is gone");
    blob = recv_blob(s->md[t][0], &len, &addr);
    XT_STATUS_FATAL(xfer_md_load(ini, blob, len, NULL, 0), XFER_OK);
    free(blob);
    return addr;
}

/* Two threads of one initiator post WRITEs, each to its own target
 * process, and read every byte back, while this thread kills target B
 * and starts it again: B's posts fail REMOTE_DISCONNECT until its new
 * incarnation is loaded, A's go on untouched, and at the end each
 * target holds exactly what was last written. */
static void mt_run(const char *spec, int shm)
{
    struct mt_spawn s;
    struct mt_poster p[2];
    int req[2], rep[2], pid[2], spawner, st;
    pthread_t tid[2];
    xfer_agent_t *ini;
    uint64_t seed = xt_seed();

    printf("mt_run %s: seed 0x%016llx\n", spec, (unsigned long long)seed);
    memset(&s, 0, sizeof s);
    for (int t = 0; t < 2; t++) {
        snprintf(s.name[t], sizeof s.name[t], "%s", xt_name(t ? "mtb" : "mta"));
        XT_REQUIRE(pipe(s.md[t]) == 0 && pipe(s.cmd[t]) == 0, "pipe");
    }
    XT_REQUIRE(pipe(req) == 0 && pipe(rep) == 0, "pipe");
    fflush(NULL);
    spawner = fork();
    XT_REQUIRE(spawner >= 0, "fork");
    if (spawner == 0) {
        close(req[1]);
        close(rep[0]);
        for (int t = 0; t < 2; t++) {
            close(s.md[t][0]);
            close(s.cmd[t][1]);
        }
        mt_spawner(&s, spec, shm, req[0], rep[1]);
    }
    xt_child_add(spawner);
    close(req[0]);
    close(rep[1]);
    for (int t = 0; t < 2; t++) {
        close(s.md[t][1]);
        close(s.cmd[t][0]);
    }
    s.req = req[1];
    s.pid = rep[0];

    ini = xt_agent(xt_name("mtini"), spec, 1);
    for (int t = 0; t < 2; t++) {
        memset(&p[t], 0, sizeof p[t]);
        p[t].ini = ini;
        p[t].name = s.name[t];
        p[t].src = xt_alloc(MT_LEN);
        p[t].dst = xt_alloc(MT_LEN);
        xt_register(ini, p[t].src, MT_LEN);
        xt_register(ini, p[t].dst, MT_LEN);
        p[t].seed = seed ^ (uint64_t)t << 56;
        pthread_mutex_init(&p[t].mu, NULL);
        p[t].addr = mt_start(&s, ini, t, &pid[t]);
        p[t].gen = 1;
    }
    for (int t = 0; t < 2; t++)
        XT_REQUIRE(pthread_create(&tid[t], NULL, mt_poster_main, &p[t]) == 0,
                   "thread");

    for (int round = 0; round < MT_ROUNDS; round++) {
        long a0, b0;

        XT_CHECK(mt_wait_above(&p[1].ok, mt_load(&p[1].ok) + 200, WAIT_MS),
                 "round %d: B's posts do not complete", round);
        a0 = mt_load(&p[0].ok);
        b0 = mt_load(&p[1].fails);
        kill(pid[1], SIGKILL);
        XT_CHECK(mt_wait_above(&p[1].fails, b0, WAIT_MS),
                 "round %d: no post to the killed target failed", round);
        usleep(100000);
        pthread_mutex_lock(&p[1].mu);
        p[1].addr = mt_start(&s, ini, 1, &pid[1]);
        p[1].gen++;
        pthread_mutex_unlock(&p[1].mu);
        XT_CHECK(mt_wait_above(&p[0].ok, a0, WAIT_MS),
                 "round %d: A stopped while B was down", round);
        if (p[0].err[0] || p[1].err[0])
            break;
    }
    XT_CHECK(mt_wait_above(&p[1].ok, mt_load(&p[1].ok) + 200, WAIT_MS),
             "B's posts do not complete after its last restart");
    for (int t = 0; t < 2; t++)
        __atomic_store_n(&p[t].stop, 1, __ATOMIC_RELEASE);
    for (int t = 0; t < 2; t++)
        pthread_join(tid[t], NULL);
    XT_CHECK(!p[0].err[0], "A: %s", p[0].err);
    XT_CHECK(!p[1].err[0], "B: %s", p[1].err);
    XT_CHECK(p[0].fails == 0, "%ld posts to A failed", p[0].fails);
    printf("mt_run %s: A %ld, B %ld verified pairs; B %ld posts refused\n",
           spec, p[0].ok, p[1].ok, p[1].fails);

    /* Each target holds exactly one last WRITE of its whole region. */
    for (int t = 0; t < 2; t++) {
        xfer_desc_t l = { (uintptr_t)p[t].src, MT_LEN, 0 };
        xfer_desc_t r = { p[t].addr, MT_LEN, 0 };
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
        xfer_req_t *w;
        uint64_t ws = seed + 1 + (uint64_t)t, bad = 1;

        xt_fill(p[t].src, MT_LEN, ws);
        XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl,
                                        s.name[t], NULL, &w), XFER_OK);
        xt_req_defer(w);
        for (int i = 0; i < 3; i++) /* framed first, then direct */
            XT_STATUS(xt_post_wait(w, XFER_NOTIF_NONE, 0, WAIT_MS), XFER_OK);
        XT_CHECK(put_all(s.cmd[t][1], &ws, sizeof ws) == 0 &&
                     get_all(s.md[t][0], &bad, sizeof bad) == 0,
                 "target %c does not answer", 'A' + t);
        XT_CHECK(bad == 0, "target %c: byte %llu of its memory is not what "
                 "was written last", 'A' + t, (unsigned long long)(bad - 1));
    }
    for (int t = 0; t < 2; t++) {
        close(s.cmd[t][1]); /* the targets end */
        close(s.md[t][0]);
        pthread_mutex_destroy(&p[t].mu);
    }
    close(s.req);
    close(s.pid);
    while (waitpid(spawner, &st, 0) < 0 && errno == EINTR)
        ;
    xt_child_forget(spawner);
    XT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "spawner status 0x%x", st);
}

static void test_mt_kill_shm(void)
{
    mt_run("uds:mode=shm", 1);
}

static void test_mt_kill_cma(void)
{
    mt_run("uds:mode=cma", 0);
}

/* ---- notifications keep their posting order ------------------------------------ */

#define ORDER_WRITES 48
#define ORDER_MAX (ORDER_WRITES * 4)

struct order_got {
    char text[ORDER_MAX * 96];
    size_t used, count;
};

static void order_collect(void *arg, const char *from, const void *msg,
                          size_t len)
{
    struct order_got *g = arg;
    int n = snprintf(g->text + g->used, sizeof g->text - g->used,
                     "%s %.*s\n", from, (int)len, (const char *)msg);

    if (n > 0 && (size_t)n < sizeof g->text - g->used)
        g->used += (size_t)n;
    g->count++;
}

/* The target of notif_order: serves WRITEs into its region and sends
 * back, one line each, "<sender> <message>" of the first `want`
 * notifications, in the order they were delivered. */
static int order_target(const char *name, const char *spec, size_t want,
                        int md)
{
    static struct order_got got;
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;
    xfer_mem_t *m = NULL;
    xfer_desc_t d;
    xfer_dlist_t dl;
    void *buf = NULL;
    size_t len;
    char *blob;
    int spins = 0;

    alarm(getenv("XT_WRAP") && *getenv("XT_WRAP") ? 600 : 60);
    xfer_agent_opts_init(&o);
    o.name = name;
    o.progress_thread = 1;
    if (xfer_agent_create(&o, &a) || xfer_backend_add(a, spec, NULL) ||
        posix_memalign(&buf, 4096, 65536))
        return 3;
    d = (xfer_desc_t){ (uintptr_t)buf, 65536, 0 };
    dl = xt_dlist(&d, 1);
    if (xfer_mem_register(a, &dl, NULL, &m) ||
        xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) ||
        send_msg(md, blob, len))
        return 4;
    xfer_free(blob);
    while (got.count < want && spins++ < 20000) {
        if (xfer_notif_drain(a, order_collect, &got, NULL) != XFER_OK)
            return 5;
        usleep(1000);
    }
    if (send_msg(md, got.text, got.used))
        return 6;
    xfer_agent_destroy(a);
    free(buf);
    return 0;
}

/* A fresh peer, right after its metadata is loaded: WRITEs carrying
 * notifications, with lone notifications between them, posted before
 * the connection is even set up.  The target must get every one, once,
 * in the order posted (promise 3), from the name the initiator bound:
 * lone ones must not overtake the notification of a WRITE still waiting
 * for the handshake. */
static void notif_order(const char *spec)
{
    int md[2], pid, st;
    size_t len, total = 0;
    char *blob, *got, name[64], ininame[64], expect[ORDER_MAX * 96];
    size_t used = 0;
    xfer_agent_t *ini;
    unsigned char *src;
    xfer_req_t *reqs[ORDER_WRITES];
    uint64_t seed = xt_seed(), rs = seed, addr = 0;
    unsigned lone[ORDER_WRITES];

    printf("\n    notif_order %s: seed 0x%016llx\n", spec,
           (unsigned long long)seed);
    for (size_t i = 0; i < ORDER_WRITES; i++) {
        lone[i] = (unsigned)(xt_rand(&rs) % 4);
        total += 1 + lone[i];
    }
    snprintf(name, sizeof name, "%s", xt_name("ordtgt"));
    snprintf(ininame, sizeof ininame, "%s", xt_name("ordini"));
    XT_REQUIRE(pipe(md) == 0, "pipe");
    fflush(NULL);
    pid = fork();
    XT_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        close(md[0]);
        xt_child_exit(order_target(name, spec, total, md[1]));
    }
    xt_child_add(pid);
    close(md[1]);
    blob = recv_blob(md[0], &len, &addr);
    /* No progress thread: the handshake cannot finish while we post. */
    ini = xt_agent(ininame, spec, 0);
    src = xt_alloc(65536);
    xt_register(ini, src, 65536);
    XT_STATUS_FATAL(xfer_md_load(ini, blob, len, NULL, 0), XFER_OK);
    free(blob);
    for (size_t i = 0; i < ORDER_WRITES; i++) {
        xfer_desc_t l = { (uintptr_t)src + i * 1024, 1024, 0 };
        xfer_desc_t r = { (uintptr_t)addr + i * 1024, 1024, 0 };
        xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
        char msg[64];
        int n;
        xfer_status_t s;

        XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, name,
                                        NULL, &reqs[i]), XFER_OK);
        xt_req_defer(reqs[i]);
        n = snprintf(msg, sizeof msg, "write-%zu", i);
        used += (size_t)snprintf(expect + used, sizeof expect - used,
                                 "%s %s\n", ininame, msg);
        s = xfer_req_post(reqs[i], msg, (size_t)n);
        XT_CHECK(s == XFER_OK || s == XFER_IN_PROG, "post %zu: %s: %s", i,
                 xt_status_name(s), xfer_last_error());
        for (unsigned k = 0; k < lone[i]; k++) {
            n = snprintf(msg, sizeof msg, "lone-%zu-%u", i, k);
            used += (size_t)snprintf(expect + used, sizeof expect - used,
                                     "%s %s\n", ininame, msg);
            XT_STATUS(xfer_notif_send(ini, name, msg, (size_t)n, NULL),
                      XFER_OK);
        }
    }
    for (size_t i = 0; i < ORDER_WRITES; i++)
        XT_STATUS(xt_wait_req(reqs[i], WAIT_MS), XFER_OK);
    got = recv_msg(md[0], &len);
    close(md[0]);
    XT_REQUIRE(got, "no answer from the target");
    if (strcmp(got, expect) != 0) {
        size_t k = 0, line = 0;

        while (got[k] && got[k] == expect[k])
            line += got[k++] == '\n';
        XT_FAIL("seed 0x%016llx: notification %zu of %zu differs: got "
                "\"%.40s\", want \"%.40s\"", (unsigned long long)seed, line,
                total, got + k, expect + k);
    }
    free(got);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    xt_child_forget(pid);
    XT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "target status 0x%x", st);
}

static void test_notif_order_auto(void) { notif_order("uds"); }
static void test_notif_order_cma(void) { notif_order("uds:mode=cma"); }
static void test_notif_order_socket(void) { notif_order("uds:mode=socket"); }

/* ---- the kernel refuses cross-process access ------------------------------------ */

/* Whether user nobody can load the uds plugin of this build: a tree
 * under a directory only root may enter (mktemp -d makes one) cannot be
 * reached by the processes these tests run as nobody. */
static bool nobody_reaches_plugins(void)
{
    const char *path = getenv("XFER_PLUGIN_PATH");
    int pid, st;

    if (path == NULL)
        return true;
    pid = fork();
    if (pid < 0)
        return true; /* let the test fail on its own */
    if (pid == 0) {
        char dirs[4096], *save = NULL;

        snprintf(dirs, sizeof dirs, "%s", path);
        if (setgid(NOBODY) || setuid(NOBODY))
            _exit(1);
        for (char *d = strtok_r(dirs, ":", &save); d != NULL;
             d = strtok_r(NULL, ":", &save))
            if (strstr(d, "/plugins/uds") && access(d, R_OK | X_OK) != 0)
                _exit(1);
        _exit(0);
    }
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
           WEXITSTATUS(st) == 0;
}

/* Both sides run as nobody; the target is not dumpable, so the kernel
 * refuses process_vm_* (EPERM) although the user is the same and the
 * registration stamp is shared.  Returns the initiator's exit status:
 * 0 pass, 77 the kernel did not refuse, else the failed step. */
static int eperm_run(const char *spec, const char *logpath,
                     xfer_status_t want_third)
{
    int md[2], done[2], tpid, ipid, st;
    char name[64];
    uint64_t seed = xt_seed(), seed2 = xt_seed();

    snprintf(name, sizeof name, "%s", xt_name("eperm"));
    XT_REQUIRE(pipe(md) == 0 && pipe(done) == 0, "pipe");
    tpid = fork();
    XT_REQUIRE(tpid >= 0, "fork");
    if (tpid == 0) {
        xfer_agent_opts_t o;
        xfer_agent_t *a = NULL;
        xfer_mem_t *m = NULL;
        xfer_desc_t d;
        xfer_dlist_t dl;
        unsigned char *mem;
        char *blob, c = 0;
        size_t len;

        close(md[0]);
        close(done[1]);
        alarm(60);
        if (setgid(NOBODY) || setuid(NOBODY))
            _exit(5);
        prctl(PR_SET_DUMPABLE, 0);
        xfer_agent_opts_init(&o);
        o.name = name;
        if (xfer_agent_create(&o, &a) || xfer_backend_add(a, "uds", NULL) ||
            posix_memalign((void **)&mem, 4096, 1 << 20))
            _exit(3);
        xt_fill(mem, 1 << 20, seed);
        d = (xfer_desc_t){ (uintptr_t)mem, 1 << 20, 0 };
        dl = xt_dlist(&d, 1);
        if (xfer_mem_register(a, &dl, NULL, &m) ||
            xfer_md_get(a, XFER_MD_ALL, NULL, 0, &blob, &len) ||
            send_msg(md[1], blob, len))
            _exit(4);
        /* Wait for the initiator, then report what arrived. */
        if (read(done[0], &c, 1) != 1)
            _exit(6);
        xfer_agent_destroy(a);
        /* The first half was written twice, the second only READ. */
        _exit(xt_check(mem, 512 << 10, seed2) >= 0 ? 7
              : xt_check_at(mem + (512 << 10), 512 << 10, seed, 512 << 10) >=
                      0 ? 8 : 0);
    }
    ipid = fork();
    XT_REQUIRE(ipid >= 0, "fork");
    if (ipid == 0) {
        xfer_agent_opts_t o;
        xfer_agent_t *a = NULL;
        xfer_mem_t *m = NULL;
        xfer_req_t *w = NULL, *rd = NULL;
        xfer_desc_t d, l, r;
        xfer_dlist_t dl, ll, rl;
        unsigned char *mem, probe;
        char *blob;
        size_t len;
        uint64_t addr = 0;
        json_t *root;
        struct iovec li, ri;
        xfer_status_t s;
        FILE *log;

        close(md[1]);
        close(done[0]);
        alarm(60);
        if (!(log = freopen(logpath, "w", stderr)))
            _exit(9);
        blob = recv_msg(md[0], &len);
        if (!blob || setgid(NOBODY) || setuid(NOBODY))
            _exit(5);
        root = json_loadb(blob, len, 0, NULL);
        if (!root || !xt_json_u64(json_object_get(
                                      json_array_get(json_object_get(
                                                         root, "regions"),
                                                     0),
                                      "addr"),
                                  &addr))
            _exit(10);
        json_decref(root);
        /* Make sure the kernel really refuses. */
        li = (struct iovec){ &probe, 1 };
        ri = (struct iovec){ (void *)(uintptr_t)addr, 1 };
        if (process_vm_readv(tpid, &li, 1, &ri, 1, 0) == 1)
            _exit(77);
        if (errno != EPERM)
            _exit(11);
        xfer_agent_opts_init(&o);
        o.name = "eperm-ini";
        if (xfer_agent_create(&o, &a) || xfer_backend_add(a, spec, NULL) ||
            posix_memalign((void **)&mem, 4096, 1 << 20))
            _exit(3);
        d = (xfer_desc_t){ (uintptr_t)mem, 1 << 20, 0 };
        dl = xt_dlist(&d, 1);
        if (xfer_mem_register(a, &dl, NULL, &m) ||
            xfer_md_load(a, blob, len, NULL, 0))
            _exit(4);
        free(blob);
        xt_fill(mem, 512 << 10, seed2);
        l = (xfer_desc_t){ (uintptr_t)mem, 512 << 10, 0 };
        r = (xfer_desc_t){ (uintptr_t)addr, 512 << 10, 0 };
        ll = xt_dlist(&l, 1);
        rl = xt_dlist(&r, 1);
        if (xfer_req_create(a, XFER_OP_WRITE, &ll, &rl, name, NULL, &w))
            _exit(12);
        /* The first two posts are checked by the target through the
         * socket (the stamp arrives with the first answer); the third
         * tries process_vm_writev and meets EPERM. */
        if (xt_post_wait(w, NULL, 0, WAIT_MS) != XFER_OK ||
            xt_post_wait(w, NULL, 0, WAIT_MS) != XFER_OK)
            _exit(13);
        s = xt_post_wait(w, NULL, 0, WAIT_MS);
        if (s != want_third) {
            fprintf(log, "third post: %s: %s\n", xt_status_name(s),
                    xfer_last_error());
            fflush(log);
            _exit(14);
        }
        if (s != XFER_OK) {
            fprintf(log, "third post refused: %s\n", xfer_last_error());
            fflush(log);
            _exit(0);
        }
        if (xt_post_wait(w, NULL, 0, WAIT_MS) != XFER_OK)
            _exit(15);
        l.addr += 512 << 10;
        r.addr += 512 << 10;
        if (xfer_req_create(a, XFER_OP_READ, &ll, &rl, name, NULL, &rd) ||
            xt_post_wait(rd, NULL, 0, WAIT_MS) != XFER_OK ||
            xt_post_wait(rd, NULL, 0, WAIT_MS) != XFER_OK)
            _exit(16);
        if (xt_check_at(mem + (512 << 10), 512 << 10, seed, 512 << 10) >= 0)
            _exit(17);
        {
            xfer_backend_t *b = NULL;
            char state[XFER_STATE_MAX];

            if (xfer_backend_find(a, "uds", &b) ||
                xfer_backend_state(b, state, sizeof state))
                _exit(18);
            fprintf(log, "state: %s\n", state);
        }
        fflush(log);
        _exit(0);
    }
    close(md[0]);
    close(md[1]);
    close(done[0]);
    waitpid(ipid, &st, 0);
    (void)!write(done[1], "x", 1);
    close(done[1]);
    {
        int tst;

        waitpid(tpid, &tst, 0);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
            want_third == XFER_OK)
            XT_CHECK(WIFEXITED(tst) && WEXITSTATUS(tst) == 0,
                     "target saw wrong bytes (status 0x%x)", tst);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    static char buf[65536];
    size_t n;

    if (!f)
        return NULL;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void test_eperm_fallback(void)
{
    char path[] = "/tmp/xfer-uds-eperm-XXXXXX";
    int fd = mkstemp(path), rc;
    const char *log, *hit;

    if (getuid() != 0)
        xt_skip("needs root to run two processes as another user");
    XT_REQUIRE(fd >= 0, "mkstemp");
    close(fd);
    chmod(path, 0666);
    rc = eperm_run("uds", path, XFER_OK);
    log = slurp(path);
    if (rc == 77) {
        unlink(path);
        xt_skip("the kernel allows process_vm_readv between the test "
                "processes; the EPERM fallback cannot be exercised here");
    }
    XT_CHECK(rc == 0, "initiator failed at step %d; its log:\n%s", rc,
             log ? log : "");
    hit = log ? strstr(log, "refused cross-process access") : NULL;
    XT_CHECK(hit != NULL, "no log line about the fallback:\n%s",
             log ? log : "");
    XT_CHECK(!hit || !strstr(hit + 1, "refused cross-process access"),
             "the fallback was logged more than once:\n%s", log);
    XT_CHECK(log && strstr(log, "state: mode=auto; peers: 0 via shm, 0 via "
                                "cma, 1 via socket (1 by EPERM fallback)\n"),
             "xfer_backend_state does not show the fallback:\n%s",
             log ? log : "");
    unlink(path);
}

static void test_eperm_forced_cma(void)
{
    char path[] = "/tmp/xfer-uds-eperm-XXXXXX";
    int fd = mkstemp(path), rc;
    const char *log;

    if (getuid() != 0)
        xt_skip("needs root to run two processes as another user");
    XT_REQUIRE(fd >= 0, "mkstemp");
    close(fd);
    chmod(path, 0666);
    rc = eperm_run("uds:mode=cma", path, XFER_ERR_ACCESS);
    log = slurp(path);
    unlink(path);
    if (rc == 77)
        xt_skip("the kernel allows process_vm_readv here");
    XT_CHECK(rc == 0, "initiator failed at step %d; its log:\n%s", rc,
             log ? log : "");
    XT_CHECK(log && strstr(log, "refused access (mode=cma)"),
             "no sentence about EPERM:\n%s", log ? log : "");
}

/* ---- what the backend reports ---------------------------------------------------- */

/* What a process that is not our descendant meets when it copies from
 * us, asked the way a peer would: 1 allowed, 0 refused. */
static int cma_allowed(void)
{
    static const unsigned char mark[8] = "xfer-cm";
    pid_t parent = getpid(), pid;
    int st;

    pid = fork();
    XT_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        unsigned char got[8] = { 0 };
        struct iovec l = { got, sizeof got };
        struct iovec r = { (void *)(uintptr_t)mark, sizeof mark };

        _exit(process_vm_readv(parent, &l, 1, &r, 1, 0) == 8 &&
                      memcmp(got, mark, 8) == 0 ? 0 : 1);
    }
    XT_REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* The uds line of xfer_plugin_list, copied; fatal without one. */
static void uds_probe_state(char *buf, size_t len)
{
    xfer_plugin_info_t *infos = NULL;
    size_t n = 0;
    int found = 0;

    XT_STATUS_FATAL(xfer_plugin_list(&infos, &n), XFER_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(infos[i].name, "uds") == 0 && infos[i].state) {
            snprintf(buf, len, "%s", infos[i].state);
            found = 1;
        }
    xfer_plugin_list_free(infos, n);
    XT_REQUIRE(found, "uds is not listed with a state");
}

/* xfer-info's verdict on CMA is what the kernel does to a peer. */
static void test_probe_matches(void)
{
    char state[XFER_STATE_MAX];
    int ok = cma_allowed();

    uds_probe_state(state, sizeof state);
    XT_CHECK(strstr(state, ok ? "cross-process copy (CMA): available ("
                              : "cross-process copy (CMA): refused (") ==
                 state,
             "the kernel %s CMA here, uds says \"%s\"",
             ok ? "allows" : "refuses", state);
    /* Repeated listing leaves no child behind. */
    uds_probe_state(state, sizeof state);
    XT_CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD,
             "the probe left a child process");
}

/* A process nobody may copy from (not dumpable, and as root also no
 * longer root): the probe sees the refusal a peer would meet. */
static void test_probe_refused(void)
{
    int pid, st;

    pid = fork();
    XT_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        char state[XFER_STATE_MAX];
        xfer_plugin_info_t *infos = NULL;
        size_t n = 0;

        alarm(60);
        if (getuid() == 0 && (setgid(NOBODY) || setuid(NOBODY)))
            _exit(5);
        if (prctl(PR_SET_DUMPABLE, 0) != 0)
            _exit(6);
        if (cma_allowed())
            _exit(77);
        state[0] = '\0';
        if (xfer_plugin_list(&infos, &n) != XFER_OK)
            _exit(7);
        for (size_t i = 0; i < n; i++)
            if (strcmp(infos[i].name, "uds") == 0 && infos[i].state)
                snprintf(state, sizeof state, "%s", infos[i].state);
        xfer_plugin_list_free(infos, n);
        if (!strstr(state, "cross-process copy (CMA): refused (EPERM; ") ||
            !strstr(state, "fall back to the socket")) {
            fprintf(stderr, "uds state: \"%s\"\n", state);
            _exit(8);
        }
        _exit(0);
    }
    XT_REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        xt_skip("the kernel lets a child copy from a non-dumpable parent "
                "of another user");
    XT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
             "the probe in a non-dumpable process failed (status 0x%x)", st);
}

/* Post a WRITE from ini to tgt until ini's uds state reads want (the
 * first post always goes through the socket; memfds arrive on it). */
static void state_after_writes(const char *ini_spec, int shared,
                               const char *want)
{
    const char *tname = xt_name("sttgt");
    xfer_agent_t *tgt = xt_agent(tname, "uds", 1);
    xfer_agent_t *ini = xt_agent(xt_name("stini"), ini_spec, 1);
    unsigned char *src = xt_alloc(8192), *dst = NULL;
    xfer_desc_t l, r;
    xfer_dlist_t ll, rl;
    xfer_req_t *req = NULL;
    xfer_backend_t *b = NULL;
    char state[XFER_STATE_MAX] = "";
    uint64_t seed = xt_seed();

    if (shared)
        XT_STATUS_FATAL(xfer_mem_alloc(tgt, 8192, 0, (void **)&dst), XFER_OK);
    else
        dst = xt_alloc(8192);
    l = (xfer_desc_t){ (uintptr_t)src, 8192, 0 };
    r = (xfer_desc_t){ (uintptr_t)dst, 8192, 0 };
    ll = xt_dlist(&l, 1);
    rl = xt_dlist(&r, 1);
    xt_register(tgt, dst, 8192);
    xt_register(ini, src, 8192);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    XT_STATUS_FATAL(xfer_backend_find(ini, "uds", &b), XFER_OK);
    XT_STATUS(xfer_backend_state(b, state, sizeof state), XFER_OK);
    XT_CHECK(strstr(state, "peers: 0 via shm, 0 via cma, 0 via socket"),
             "before any transfer: \"%s\"", state);
    xt_fill(src, 8192, seed);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tname, NULL,
                                    &req), XFER_OK);
    xt_req_defer(req);
    for (int i = 0; i < 10 && strcmp(state, want) != 0; i++) {
        XT_STATUS_FATAL(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
        XT_STATUS(xfer_backend_state(b, state, sizeof state), XFER_OK);
    }
    XT_CHECK(strcmp(state, want) == 0, "%s: state \"%s\", want \"%s\"",
             ini_spec, state, want);
    XT_CHECK(xt_check(dst, 8192, seed) < 0, "data did not arrive");
    XT_STATUS(xt_req_release(req), XFER_OK);
    /* The target opened no connection: it has no peers of its own. */
    XT_STATUS_FATAL(xfer_backend_find(tgt, "uds", &b), XFER_OK);
    XT_STATUS(xfer_backend_state(b, state, sizeof state), XFER_OK);
    CU_ASSERT_STRING_EQUAL(state, "mode=auto; peers: 0 via shm, 0 via cma, "
                                  "0 via socket");
    xt_agent_destroy(ini);
    xt_agent_destroy(tgt);
}

/* One process: the kernel always lets it copy from itself. */
static void test_state_cma(void)
{
    state_after_writes("uds", 0, "mode=auto; peers: 0 via shm, 1 via cma, "
                                 "0 via socket");
}

static void test_state_shm(void)
{
    state_after_writes("uds", 1, "mode=auto; peers: 1 via shm, 0 via cma, "
                                 "0 via socket");
}

static void test_state_socket(void)
{
    state_after_writes("uds:mode=socket", 1, "mode=socket; peers: 0 via "
                                             "shm, 0 via cma, 1 via socket");
}

/* ---- a filesystem socket path ---------------------------------------------------- */

static void test_fs_path(void)
{
    char path[108], spec[160];
    struct stat sb;
    xfer_agent_t *tgt, *ini, *dup = NULL;
    xfer_agent_opts_t o;
    unsigned char *src = xt_alloc(8192), *dst = xt_alloc(8192);
    xfer_desc_t l = { (uintptr_t)src, 8192, 0 }, r = { (uintptr_t)dst, 8192, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_req_t *req = NULL;
    uint64_t seed = xt_seed();
    const char *tname;

    snprintf(path, sizeof path, "/tmp/xfer-uds-test-%ld.sock", (long)getpid());
    snprintf(spec, sizeof spec, "uds:path=%s", path);
    unlink(path);
    tname = xt_name("fstgt");
    tgt = xt_agent(tname, spec, 1);
    XT_REQUIRE(stat(path, &sb) == 0, "no socket file at %s", path);
    XT_CHECK(S_ISSOCK(sb.st_mode) && (sb.st_mode & 0777) == 0600,
             "socket mode is 0%o, want a socket with 0600", sb.st_mode);
    /* The same path twice is refused with a sentence. */
    xfer_agent_opts_init(&o);
    o.name = xt_name("fsdup");
    XT_STATUS_FATAL(xfer_agent_create(&o, &dup), XFER_OK);
    XT_STATUS(xfer_backend_add(dup, spec, NULL), XFER_ERR_BACKEND);
    XT_ERR_HAS(path, "Address already in use");
    xfer_agent_destroy(dup);
    /* Data moves through it. */
    ini = xt_agent(xt_name("fsini"), "uds", 1);
    xt_register(tgt, dst, 8192);
    xt_register(ini, src, 8192);
    xt_md_exchange(tgt, XFER_MD_ALL, ini);
    xt_fill(src, 8192, seed);
    XT_STATUS_FATAL(xfer_req_create(ini, XFER_OP_WRITE, &ll, &rl, tname, NULL,
                                    &req), XFER_OK);
    xt_req_defer(req);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_STATUS(xt_post_wait(req, NULL, 0, WAIT_MS), XFER_OK);
    XT_CHECK(xt_check(dst, 8192, seed) < 0, "data did not arrive");
    XT_STATUS(xt_req_release(req), XFER_OK);
    xt_agent_destroy(ini);
    xt_agent_destroy(tgt);
    XT_CHECK(stat(path, &sb) != 0 && errno == ENOENT,
             "the socket file outlived its backend");
}

/* ---- shareable memory ---------------------------------------------------------- */

static void test_mem_alloc(void)
{
    xfer_agent_t *a = xt_agent(xt_name("alloc"), NULL, 0);
    void *p = NULL;

    XT_STATUS(xfer_mem_alloc(a, 0, 0, &p), XFER_ERR_INVALID);
    XT_STATUS(xfer_mem_alloc(a, 4096, 0x80, &p), XFER_ERR_INVALID);
    XT_STATUS_FATAL(xfer_mem_alloc(a, 10000, 0, &p), XFER_OK);
    memset(p, 0xab, 10000);
    XT_STATUS(xfer_mem_free(a, (char *)p + 1), XFER_ERR_NOT_FOUND);
    XT_STATUS(xfer_mem_free(a, p), XFER_OK);
    /* Huge pages: either they are reserved, or the sentence says so. */
    p = NULL;
    if (xfer_mem_alloc(a, 1 << 20, XFER_ALLOC_HUGE, &p) == XFER_OK)
        XT_STATUS(xfer_mem_free(a, p), XFER_OK);
    else
        XT_ERR_HAS("huge pages");
    /* Left allocated: freed with the agent. */
    XT_STATUS(xfer_mem_alloc(a, 4096, 0, &p), XFER_OK);
}

static const xt_test_t host_tests[] = {
    XT_TEST(test_other_boot_id),
    XT_TEST(test_other_hostname),
    XT_TEST(test_mem_alloc),
    XT_TEST(test_fs_path),
    XT_TEST(test_probe_matches),
    XT_TEST(test_state_cma),
    XT_TEST(test_state_shm),
    XT_TEST(test_state_socket),
    XT_END,
};
static const xt_test_t process_tests[] = {
    XT_TEST(test_dead_target),
    XT_TEST(test_dereg_waits_shm),
    XT_TEST(test_dereg_waits_cma),
    XT_TEST(test_mt_kill_shm),
    XT_TEST(test_mt_kill_cma),
    XT_TEST(test_notif_order_auto),
    XT_TEST(test_notif_order_cma),
    XT_TEST(test_notif_order_socket),
    XT_END,
};
/* These run processes as user nobody. */
static const xt_test_t nobody_tests[] = {
    XT_TEST(test_eperm_fallback),
    XT_TEST(test_eperm_forced_cma),
    XT_TEST(test_probe_refused),
    XT_END,
};

int main(int argc, char **argv)
{
    static const xt_suite_t suites[] = {
        { "uds-host", host_tests },
        { "uds-process", process_tests },
        { "uds-nobody", nobody_tests },
    };
    size_t n = sizeof suites / sizeof suites[0];

    (void)argc;
    /* Not run, and so not counted, where nobody cannot load the plugin. */
    if (getuid() == 0 && !nobody_reaches_plugins()) {
        printf("SKIP: suite uds-nobody (test_eperm_fallback, "
               "test_eperm_forced_cma, test_probe_refused): user nobody "
               "cannot enter the build tree (a parent directory is closed "
               "to others); build where others may read to run them\n");
        n--;
    }
    return xt_run(argv[0], suites, n);
}
