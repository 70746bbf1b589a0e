/* soak-target.c - the soak test's target: checks every notification and
 * the bytes it names, samples RSS and fds, kills and restarts a peer. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/soak.h"

/* Errors printed in full; later ones are only counted. */
#define MAX_SHOWN 20

typedef struct slot {
    pid_t pid;
    int pipe_w;             /* the initiator's stdin: closed to release it */
    unsigned gen;           /* generation whose notifications are taken */
    unsigned spawned;       /* newest generation started in the slot */
    uint64_t next;          /* next sequence expected from gen */
    uint64_t quota;         /* transfers generation `spawned` must do */
    uint64_t checked;       /* transfers checked, every generation */
} slot_t;

typedef struct sample {
    uint64_t transfers;
    double t;
    long rss_kib;
    long heap_kib;
    long fds;
} sample_t;

typedef struct target {
    soak_cfg_t *cfg;
    const char *self;       /* this program, to start initiators */
    char listen[96];
    xfer_agent_t *agent;
    uint8_t *region;
    slot_t *slots;
    soak_status_t *status;  /* the status page, a slot per line */
    int status_fd;
    uint64_t t0, last_progress;
    uint64_t checked, writes, reads, bytes;
    uint64_t errors, lost, dups, late;
    size_t nsamples;        /* samples printed: the series is the output */
    uint64_t next_sample;
    sample_t first, last, base;
    uint64_t base_fds[SOAK_FD_BITS / 64]; /* fds open at the baseline */
    int have_first;
    /* kills and restarts, one at a time */
    unsigned kills;
    int pending;            /* the last one killed has no successor yet */
    unsigned victim;
    uint64_t victim_done;   /* transfers the killed one saw complete */
    uint64_t victim_checked;/* ... and the target checked, at the switch */
    uint64_t others_at_kill, others_across;
} target_t;

static void fail(target_t *t, const char *fmt, ...)
{
    va_list ap;

    if (++t->errors > MAX_SHOWN)
        return;
    fputs("soak: ERROR: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int xcheck(xfer_status_t st, const char *what)
{
    if (st >= 0)
        return 0;
    printf("soak: ERROR: %s: %s (%s)\n", what, xfer_strerror(st),
           xfer_last_error());
    return -1;
}

static double secs(const target_t *t)
{
    return (double)(soak_now_ns() - t->t0) / 1e9;
}

/* ---- sampling ---------------------------------------------------------- */

static sample_t sample_now(target_t *t)
{
    sample_t s = { t->checked, secs(t), soak_rss_kib(), soak_heap_kib(),
                   soak_fd_count() };

    return s;
}

static void sample(target_t *t, const char *label)
{
    sample_t s = sample_now(t);

    t->nsamples++;
    /* A listener connection an initiator has just closed can still be
     * open here for a moment: the fd baseline is the fewest seen between
     * warm-up and the kill, every initiator connected throughout. */
    if (t->have_first && !t->kills && s.fds < t->first.fds)
        t->first.fds = s.fds;
    printf("soak: sample %-8s transfers=%-8" PRIu64 " t=%7.1fs rss=%ld KiB "
           "heap=%ld KiB fds=%ld\n", label, s.transfers, s.t, s.rss_kib,
           s.heap_kib, s.fds);
    fflush(stdout);
}

/* ---- the checker ------------------------------------------------------- */

static void ack(target_t *t, unsigned slot, const slot_t *s)
{
    soak_ack_t *a = (soak_ack_t *)(t->region + t->cfg->ack_off +
                                   (size_t)slot * SOAK_LINE);
    uint64_t word = (uint64_t)s->gen << 32 | (s->next & 0xffffffffu);

    /* Either order works: a reader between the two stores sees a check
     * that does not match and reads again. */
    __atomic_store_n(&a->word, word, __ATOMIC_RELEASE);
    __atomic_store_n(&a->check, ~word, __ATOMIC_RELEASE);
}

/* Returns 0 to check the transfer, -1 to drop the message. */
static int take_gen(target_t *t, slot_t *s, const soak_msg_t *m)
{
    unsigned sl = m->slot;

    if (m->gen == s->gen)
        return 0;
    if (m->gen < s->gen) {
        t->late++;
        fail(t, "slot %u: notification %" PRIu64 " of generation %u "
              "(killed) after generation %u began", sl, m->seq, m->gen,
              s->gen);
        return -1;
    }
    if (m->gen != s->spawned || m->seq != 0) {
        fail(t, "slot %u: notification %" PRIu64 " of generation %u, "
              "expected generation %u (or %u from sequence 0)", sl, m->seq,
              m->gen, s->gen, s->spawned);
        return -1;
    }
    /* The newcomer's first: the killed generation's stream ends here.
     * It posted one transfer at a time: every one it saw complete was
     * notified, and at most the one in flight besides. */
    t->victim_checked = s->next;
    t->others_across = t->checked - s->checked - t->others_at_kill;
    t->pending = 0;
    if (t->victim_checked < t->victim_done ||
        t->victim_checked > t->victim_done + 1)
        fail(t, "slot %u: the killed initiator saw %" PRIu64 " transfers "
             "complete and %" PRIu64 " were notified", sl, t->victim_done,
             t->victim_checked);
    s->gen = m->gen;
    s->next = 0;
    printf("soak: slot %u generation %u (new epoch) took over at t=%.1fs: "
           "the others did %" PRIu64 " transfers between the kill and "
           "its first\n", sl, s->gen, secs(t), t->others_across);
    return 0;
}

static void verify(target_t *t, const soak_msg_t *m)
{
    const soak_cfg_t *c = t->cfg;
    soak_plan_t pl;
    const uint8_t *at;
    size_t bad;
    uint64_t pseed;

    soak_plan(c, m->slot, m->gen, m->seq, &pl);
    if ((uint32_t)pl.op != m->op || pl.off != m->off || pl.len != m->len ||
        pl.tseed != m->tseed) {
        fail(t, "slot %u: notification %" PRIu64 " says op %u, %" PRIu64
              " bytes at %" PRIu64 "; its plan is op %u, %zu bytes at %zu",
              m->slot, m->seq, m->op, m->len, m->off, (unsigned)pl.op,
              pl.len, pl.off);
        return;
    }
    if (pl.op == XFER_OP_WRITE) {
        at = t->region + soak_sub_off(c, m->slot, m->seq) + pl.off;
        pseed = pl.tseed;
        bad = soak_pat_check(at, pseed, 0, pl.len);
        t->writes++;
    } else {
        /* Nothing lands for a READ; the area it read must be intact. */
        at = t->region + c->pat_off + pl.off;
        bad = soak_pat_check(at, soak_pat_seed(c), pl.off, pl.len);
        t->reads++;
    }
    if (bad < pl.len)
        fail(t, "slot %u.%u: %s %" PRIu64 " of %zu bytes: byte %zu is "
              "wrong in the target's memory", m->slot, m->gen,
              pl.op == XFER_OP_WRITE ? "WRITE" : "READ", m->seq, pl.len,
              bad);
    t->bytes += pl.len;
}

/* Notifications arrive after their transfer's data (DESIGN.md, 2), so
 * the bytes a WRITE's notification names are in our memory now, and the
 * initiator cannot overwrite them before our ack says we checked them. */
static void on_notif(void *arg, const char *from, const void *msg, size_t len)
{
    target_t *t = arg;
    soak_msg_t m;
    slot_t *s;
    char want[32];

    if (len != sizeof m) {
        fail(t, "notification of %zu bytes from %s, expected %zu", len,
              from, sizeof m);
        return;
    }
    memcpy(&m, msg, sizeof m);
    if (m.magic != SOAK_MSG_MAGIC || m.slot >= t->cfg->initiators) {
        fail(t, "notification from %s is not a soak message (slot %u)",
              from, m.slot);
        return;
    }
    s = &t->slots[m.slot];
    snprintf(want, sizeof want, SOAK_NAME_FMT, m.slot);
    if (strcmp(from, want) != 0) {
        fail(t, "notification for slot %u comes from \"%s\", not \"%s\"",
              m.slot, from, want);
        return;
    }
    if (take_gen(t, s, &m))
        return;
    if (m.seq < s->next) {
        t->dups++;
        fail(t, "slot %u.%u: notification %" PRIu64 " again (expected %"
              PRIu64 ")", m.slot, m.gen, m.seq, s->next);
        return;
    }
    if (m.seq > s->next) {
        t->lost += m.seq - s->next;
        fail(t, "slot %u.%u: notifications %" PRIu64 "..%" PRIu64
              " lost or out of order (got %" PRIu64 ")", m.slot, m.gen,
              s->next, m.seq - 1, m.seq);
    }
    verify(t, &m);
    s->next = m.seq + 1;
    s->checked++;
    t->checked++;
    t->last_progress = soak_now_ns();
    ack(t, m.slot, s);
}

/* ---- initiator processes ----------------------------------------------- */

static int spawn(target_t *t, unsigned slot, unsigned gen, uint64_t quota)
{
    const soak_cfg_t *c = t->cfg;
    char a_n[16], a_t[24], a_sz[48], a_seed[24], a_w[16], a_r[16],
        a_st[16], a_child[64];
    char *argv[] = { (char *)t->self, "--backend", (char *)c->spec,
                     "--initiators", a_n, "--transfers", a_t, "--sizes",
                     a_sz, "--seed", a_seed, "--window", a_w, "--read-pct",
                     a_r, "--stall-s", a_st, "--peer", t->listen, "--child",
                     a_child, NULL };
    slot_t *s = &t->slots[slot];
    soak_status_t *st = (soak_status_t *)((char *)t->status +
                                          (size_t)slot * SOAK_LINE);
    int fds[2];
    pid_t pid;

    snprintf(a_n, sizeof a_n, "%u", c->initiators);
    snprintf(a_t, sizeof a_t, "%" PRIu64, c->transfers);
    snprintf(a_sz, sizeof a_sz, "%zu:%zu", c->min_size, c->max_size);
    snprintf(a_seed, sizeof a_seed, "%" PRIu64, c->seed);
    snprintf(a_w, sizeof a_w, "%u", c->window);
    snprintf(a_r, sizeof a_r, "%u", c->read_pct);
    snprintf(a_st, sizeof a_st, "%u", c->stall_s);
    snprintf(a_child, sizeof a_child, "%u:%u:%" PRIu64, slot, gen, quota);
    memset(st, 0, sizeof *st);
    if (pipe2(fds, O_CLOEXEC) != 0) {
        printf("soak: ERROR: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        printf("soak: ERROR: fork: %s\n", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec: the agent's
         * threads did not come along, their locks may be held. */
        if (dup2(fds[0], 0) < 0)
            _exit(127);
        if (t->status_fd == SOAK_STATUS_FD) {
            if (fcntl(SOAK_STATUS_FD, F_SETFD, 0) != 0)
                _exit(127);
        } else if (dup2(t->status_fd, SOAK_STATUS_FD) < 0) {
            _exit(127);
        }
        execv(t->self, argv);
        _exit(127);
    }
    close(fds[0]);
    s->pid = pid;
    s->pipe_w = fds[1];
    s->spawned = gen;
    s->quota = quota;
    return 0;
}

static uint64_t share(const soak_cfg_t *c, unsigned slot)
{
    return c->transfers / c->initiators +
           (slot < c->transfers % c->initiators ? 1 : 0);
}

/* Kill one initiator with SIGKILL in the middle of its stream, reap it,
 * and start a new one in its slot under the same name (a newer epoch),
 * with what remains of the slot's share. */
static int kill_restart(target_t *t)
{
    const soak_cfg_t *c = t->cfg;
    unsigned i, v = 0;
    slot_t *s = NULL;
    soak_status_t *st;
    int ws;

    for (i = 0; i < c->initiators; i++) {
        v = (unsigned)((c->seed + t->kills + i) % c->initiators);
        s = &t->slots[v];
        if (s->quota >= s->next + 2)
            break;
        s = NULL;
    }
    t->kills++;
    if (s == NULL) {
        printf("soak: no initiator has two transfers left: no restart\n");
        return 0;
    }
    t->pending = 1;
    t->victim = v;
    t->others_at_kill = t->checked - s->checked;
    if (kill(s->pid, SIGKILL) != 0 || waitpid(s->pid, &ws, 0) != s->pid) {
        printf("soak: ERROR: cannot kill initiator %u: %s\n", v,
               strerror(errno));
        return -1;
    }
    close(s->pipe_w);
    s->pid = 0;
    st = (soak_status_t *)((char *)t->status + (size_t)v * SOAK_LINE);
    t->victim_done = __atomic_load_n(&st->done, __ATOMIC_ACQUIRE);
    printf("soak: slot %u generation %u killed (SIGKILL) at t=%.1fs after "
           "%" PRIu64 " transfers checked, %" PRIu64 " seen complete by it\n",
           v, s->gen, secs(t), s->next, t->victim_done);
    fflush(stdout);
    /* What it saw complete may not all be drained yet: count it done.
     * The one it had in flight may still arrive, so the slot can end one
     * transfer over its share. */
    return spawn(t, v, s->gen + 1,
                 s->quota - (t->victim_done > s->next ? t->victim_done
                                                      : s->next));
}

/* An initiator that exits before we release it has failed. */
static int reap(target_t *t)
{
    int ws;
    pid_t pid;
    unsigned i;

    while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
        for (i = 0; i < t->cfg->initiators; i++)
            if (t->slots[i].pid == pid)
                break;
        if (i < t->cfg->initiators) {
            t->slots[i].pid = 0;
            fail(t, "initiator %u.%u exited early (%s %d)", i,
                  t->slots[i].spawned,
                  WIFEXITED(ws) ? "status" : "signal",
                  WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws));
            return -1;
        }
    }
    return 0;
}

static void stop_all(target_t *t, int sig)
{
    unsigned i;
    int ws;

    for (i = 0; i < t->cfg->initiators; i++) {
        slot_t *s = &t->slots[i];

        if (s->pipe_w >= 0)
            close(s->pipe_w);
        s->pipe_w = -1;
        if (s->pid > 0 && sig)
            kill(s->pid, sig);
    }
    for (i = 0; i < t->cfg->initiators; i++) {
        slot_t *s = &t->slots[i];
        uint64_t t0 = soak_now_ns();
        pid_t r;

        while (s->pid > 0) {
            r = waitpid(s->pid, &ws, WNOHANG);
            if (r == s->pid) {
                if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
                    fail(t, "initiator %u.%u ended with %s %d", i,
                          s->spawned, WIFEXITED(ws) ? "status" : "signal",
                          WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws));
                s->pid = 0;
            } else if (r < 0) {
                s->pid = 0;
            } else if (soak_now_ns() - t0 >
                       (uint64_t)t->cfg->stall_s * 1000000000u) {
                fail(t, "initiator %u.%u did not exit within %u s", i,
                      s->spawned, t->cfg->stall_s);
                kill(s->pid, SIGKILL);
                t0 = soak_now_ns();
            } else {
                soak_sleep_ms(20);
            }
        }
    }
}

/* ---- the run ----------------------------------------------------------- */

static int all_done(const target_t *t)
{
    unsigned i;

    for (i = 0; i < t->cfg->initiators; i++) {
        const slot_t *s = &t->slots[i];

        if (s->gen != s->spawned || s->next < s->quota)
            return 0;
    }
    return 1;
}

static int all_connected(const target_t *t)
{
    unsigned i;

    for (i = 0; i < t->cfg->initiators; i++)
        if (t->slots[i].checked == 0)
            return 0;
    return 1;
}

static void report_stall(target_t *t)
{
    unsigned i;

    fail(t, "no notification for %u s", t->cfg->stall_s);
    for (i = 0; i < t->cfg->initiators; i++) {
        const slot_t *s = &t->slots[i];
        const soak_status_t *st = (const soak_status_t *)(
            (const char *)t->status + (size_t)i * SOAK_LINE);

        printf("soak:   slot %u.%u: checked %" PRIu64 " of %" PRIu64
               ", it saw %" PRIu64 " complete\n", i, s->gen, s->next,
               s->quota, st->done);
    }
}

static int run_loop(target_t *t)
{
    const soak_cfg_t *c = t->cfg;
    uint64_t warm = c->transfers / 10;
    int nfd;

    if (xcheck(xfer_notif_fd(t->agent, &nfd), "notification fd"))
        return -1;
    t->last_progress = soak_now_ns();
    while (!all_done(t)) {
        struct pollfd pfd = { nfd, POLLIN, 0 };
        char label[16];

        if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
            return -1;
        if (xcheck(xfer_notif_drain(t->agent, on_notif, t, NULL), "drain"))
            return -1;
        while (t->checked >= t->next_sample) {
            snprintf(label, sizeof label, "%zu", t->nsamples);
            sample(t, label);
            t->next_sample += c->sample_every;
        }
        /* The flatness baseline: every slot connected, warmed up. */
        if (!t->have_first && t->checked >= warm && all_connected(t)) {
            t->first = sample_now(t);
            t->have_first = 1;
            sample(t, "first");
        }
        /* After the baseline, so that it has every slot connected. */
        if (t->kills < c->restarts && !t->pending && t->have_first &&
            t->checked >= c->transfers * (t->kills + 1) /
                              (c->restarts + 1) &&
            kill_restart(t))
            return -1;
        if (reap(t))
            return -1;
        if (soak_now_ns() - t->last_progress >
            (uint64_t)c->stall_s * 1000000000u) {
            report_stall(t);
            return -1;
        }
    }
    return 0;
}

/* The last sample, once any connection being closed is gone (as for
 * the baseline): a count above it that does not come down within the
 * stall bound is held for good. */
static sample_t settle(target_t *t)
{
    uint64_t t0 = soak_now_ns();
    sample_t s;

    for (;;) {
        s = sample_now(t);
        if (!t->have_first || s.fds <= t->first.fds ||
            soak_now_ns() - t0 > (uint64_t)t->cfg->stall_s * 1000000000u)
            return s;
        soak_sleep_ms(50);
    }
}

/* After the run: the killed generation's stream, the flatness, the
 * pattern area no one may write. */
static void final_checks(target_t *t)
{
    const soak_cfg_t *c = t->cfg;
    long grow, allowed;
    size_t bad;

    if (t->pending)
        fail(t, "slot %u: no notification from the restarted initiator",
             t->victim);
    if (!t->have_first) {
        fail(t, "no baseline sample: not every initiator was seen");
        return;
    }
    grow = t->last.rss_kib - t->first.rss_kib;
    allowed = (long)c->rss_margin_mib * 1024;
    if (t->first.rss_kib / 100 * (long)c->rss_margin_pct > allowed)
        allowed = t->first.rss_kib / 100 * (long)c->rss_margin_pct;
    if (grow > allowed)
        fail(t, "RSS grew by %ld KiB (%ld -> %ld), more than %ld KiB "
              "(%u MiB or %u%%)", grow, t->first.rss_kib, t->last.rss_kib,
              allowed, c->rss_margin_mib, c->rss_margin_pct);
    if (t->last.fds != t->first.fds)
        fail(t, "open fds went from %ld to %ld with every initiator "
              "connected", t->first.fds, t->last.fds);
    bad = soak_pat_check(t->region + c->pat_off, soak_pat_seed(c), 0,
                         c->pat_size);
    if (bad < c->pat_size)
        fail(t, "the read-only pattern area changed at byte %zu", bad);
}

/* Once every initiator is gone, its connections must be closed too: no
 * socket, pipe or file the first did not find stays open.  The target
 * notices a peer leave asynchronously: wait for it, within the bound. */
static long fds_after(target_t *t)
{
    uint64_t t0 = soak_now_ns();

    while (soak_fd_new(t->base_fds, SOAK_FD_BITS, 0) > 0 &&
           soak_now_ns() - t0 < (uint64_t)t->cfg->stall_s * 1000000000u) {
        xfer_progress(t->agent);
        soak_sleep_ms(50);
    }
    return soak_fd_count();
}

int soak_target(soak_cfg_t *c, const char *self)
{
    target_t t;
    xfer_agent_opts_t opts;
    xfer_mem_t *mem = NULL;
    uint64_t acks = 0;
    long fds_end;
    unsigned i;
    int rc = 1;

    memset(&t, 0, sizeof t);
    t.cfg = c;
    t.self = self;
    t.status_fd = -1;
    t.slots = calloc(c->initiators, sizeof *t.slots);
    if (t.slots == NULL) {
        printf("soak: ERROR: out of memory\n");
        goto out;
    }
    for (i = 0; i < c->initiators; i++)
        t.slots[i].pipe_w = -1;
    t.status_fd = memfd_create("soak-status", MFD_CLOEXEC);
    if (t.status_fd < 0 ||
        ftruncate(t.status_fd, (off_t)c->initiators * SOAK_LINE) != 0 ||
        (t.status = mmap(NULL, (size_t)c->initiators * SOAK_LINE,
                         PROT_READ | PROT_WRITE, MAP_SHARED, t.status_fd,
                         0)) == MAP_FAILED) {
        printf("soak: ERROR: status page: %s\n", strerror(errno));
        t.status = NULL;
        goto out;
    }

    /* Sixteen initiators fetch our metadata at once, from one address. */
    xfer_agent_opts_init(&opts);
    opts.name = SOAK_TARGET_NAME;
    opts.listen_addr = "127.0.0.1:0";
    opts.listen_max_per_addr = c->initiators + 4;
    if (opts.listen_max_clients < c->initiators + 4)
        opts.listen_max_clients = c->initiators + 4;
    if (xcheck(xfer_agent_create(&opts, &t.agent), "create agent") ||
        xcheck(xfer_agent_listen_addr(t.agent, t.listen, sizeof t.listen),
               "listen address"))
        goto out;
    {
        xfer_status_t st = xfer_backend_add(t.agent, c->spec, NULL);

        if (st == XFER_ERR_NOT_FOUND || st == XFER_ERR_LOAD) {
            printf("SKIP: backend %s: %s\n", c->spec, xfer_last_error());
            rc = 77;
            goto out;
        }
        if (xcheck(st, c->spec))
            goto out;
    }
    /* Shareable memory, so that uds maps it; every page touched now, so
     * that RSS measures the library and not our first writes. */
    if (xcheck(xfer_mem_alloc(t.agent, c->region_size, 0,
                              (void **)&t.region), "allocate the region"))
        goto out;
    memset(t.region, 0, c->region_size);
    soak_pat_fill(t.region + c->pat_off, soak_pat_seed(c), 0, c->pat_size);
    {
        xfer_desc_t d = { (uintptr_t)t.region, c->region_size, 0 };
        xfer_dlist_t dl = { XFER_MEM_DRAM, 1, &d };

        if (xcheck(xfer_mem_register(t.agent, &dl, NULL, &mem), "register"))
            goto out;
    }

    printf("soak: backend=%s initiators=%u transfers=%" PRIu64 " sizes=%zu:"
           "%zu seed=%" PRIu64 " window=%u read-pct=%u restarts=%u "
           "region=%zu KiB listener=%s\n", c->spec, c->initiators,
           c->transfers, c->min_size, c->max_size, c->seed, c->window,
           c->read_pct, c->restarts, c->region_size >> 10,
           t.listen);
    t.t0 = soak_now_ns();
    t.base = sample_now(&t);
    soak_fd_mark(t.base_fds, SOAK_FD_BITS);
    printf("soak: before any initiator: rss=%ld KiB fds=%ld\n",
           t.base.rss_kib, t.base.fds);
    t.next_sample = 0;
    for (i = 0; i < c->initiators; i++)
        if (spawn(&t, i, 0, share(c, i)))
            goto out_stop;
    if (run_loop(&t))
        goto out_stop;
    t.last = settle(&t);
    sample(&t, "last");
    for (i = 0; i < c->initiators; i++)
        acks += ((const soak_status_t *)((const char *)t.status +
                                         (size_t)i * SOAK_LINE))->ack_reads;
    final_checks(&t);
    stop_all(&t, 0);
    fds_end = fds_after(&t);
    printf("soak: every initiator gone: fds=%ld (before the first: %ld)\n",
           fds_end, t.base.fds);
    if (fds_end != t.base.fds && soak_fd_new(t.base_fds, SOAK_FD_BITS, 1) > 0)
        fail(&t, "%ld fds open after every initiator left, %ld before "
             "the first came (listed above)", fds_end, t.base.fds);
    printf("soak: %s: %s transfers=%" PRIu64 " (writes=%" PRIu64 " reads=%"
           PRIu64 ") bytes=%" PRIu64 " notifications=%" PRIu64 " lost=%"
           PRIu64 " dup=%" PRIu64 " late=%" PRIu64 " ack-reads=%" PRIu64
           " duration=%.1fs rss=%ld->%ld KiB fds=%ld->%ld", c->spec,
           t.errors ? "FAIL" : "PASS", t.checked, t.writes, t.reads,
           t.bytes, t.checked, t.lost, t.dups, t.late, acks, t.last.t,
           t.first.rss_kib, t.last.rss_kib, t.first.fds, t.last.fds);
    if (t.kills > 0 && !t.pending)
        printf(" restarts=%u last=slot%u(%" PRIu64 "+%" PRIu64
               ",others-across=%" PRIu64 ")", t.kills, t.victim,
               t.victim_checked, t.slots[t.victim].next, t.others_across);
    else
        printf(" restarts=%u", t.kills);
    printf(" errors=%" PRIu64 "\n", t.errors);
    rc = t.errors ? 1 : 0;
    goto out;
out_stop:
    stop_all(&t, SIGKILL);
    printf("soak: %s: FAIL after %" PRIu64 " transfers, errors=%" PRIu64
           "\n", c->spec, t.checked, t.errors);
out:
    if (mem != NULL)
        xfer_mem_deregister(t.agent, mem);
    if (t.region != NULL)
        xfer_mem_free(t.agent, t.region);
    xfer_agent_destroy(t.agent);
    if (t.status != NULL)
        munmap(t.status, (size_t)c->initiators * SOAK_LINE);
    if (t.status_fd >= 0)
        close(t.status_fd);
    free(t.slots);
    fflush(stdout);
    return rc;
}
