/* soak-initiator.c - one initiator process of the soak test: WRITEs and
 * READs its planned transfers, each with a notification, one at a time. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench/soak.h"

typedef struct peer {
    const soak_cfg_t *cfg;
    xfer_agent_t *agent;
    unsigned slot, gen;
    uint8_t *buf;           /* registered: [ack][write src][read dst] */
    size_t buf_size;
    uintptr_t base;         /* the target's region */
    uint64_t acked;         /* transfers of our generation it checked */
    volatile soak_status_t *status;
} peer_t;

static void fail(const peer_t *p, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "soak-%u.%u: ", p->slot, p->gen);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int check(const peer_t *p, xfer_status_t st, const char *what)
{
    if (st >= 0)
        return 0;
    fail(p, "%s: %s (%s)", what, xfer_strerror(st), xfer_last_error());
    return -1;
}

/* One transfer of len bytes between buf + loff and the target's region
 * + roff, waited for; notif NULL: none.  A transfer that does not end
 * within the stall bound fails (the target reports its side). */
static int transfer(peer_t *p, xfer_op_t op, size_t loff, size_t roff,
                    size_t len, const soak_msg_t *notif)
{
    xfer_desc_t l = { (uintptr_t)p->buf + loff, len, 0 };
    xfer_desc_t r = { p->base + roff, len, 0 };
    xfer_dlist_t ll = { XFER_MEM_DRAM, 1, &l }, rl = { XFER_MEM_DRAM, 1, &r };
    const char *what = op == XFER_OP_WRITE ? "WRITE" : "READ";
    xfer_req_t *req = NULL;
    xfer_status_t st;
    uint64_t t0 = soak_now_ns();

    if (check(p, xfer_req_create(p->agent, op, &ll, &rl, SOAK_TARGET_NAME,
                                 NULL, &req), what))
        return -1;
    st = xfer_req_post(req, notif ? (const void *)notif : NULL,
                       notif ? sizeof *notif : 0);
    while (st == XFER_IN_PROG) {
        st = xfer_req_wait(req, 1000);
        if (st == XFER_IN_PROG &&
            soak_now_ns() - t0 > (uint64_t)p->cfg->stall_s * 1000000000u) {
            fail(p, "%s of %zu bytes not complete after %u s", what, len,
                 p->cfg->stall_s);
            break;
        }
    }
    if (st != XFER_OK) {
        if (st != XFER_IN_PROG)
            check(p, st, what);
        xfer_req_release(req);
        return -1;
    }
    return check(p, xfer_req_release(req), "release");
}

/* Flow control: sub-slot seq % window was last written by seq - window;
 * reuse it only once the target has checked that one, which it says in
 * our ack line (READ from its region, so it also soaks READs). */
static int wait_ack(peer_t *p, uint64_t seq)
{
    soak_ack_t ack;
    uint64_t t0 = soak_now_ns();

    while (seq >= p->acked + p->cfg->window) {
        if (transfer(p, XFER_OP_READ, 0, p->cfg->ack_off +
                     (size_t)p->slot * SOAK_LINE, sizeof ack, NULL))
            return -1;
        p->status->ack_reads++;
        memcpy(&ack, p->buf, sizeof ack);
        if (ack.check == ~ack.word && ack.word >> 32 == p->gen &&
            (ack.word & 0xffffffffu) > p->acked) {
            p->acked = ack.word & 0xffffffffu;
            continue;
        }
        if (soak_now_ns() - t0 > (uint64_t)p->cfg->stall_s * 1000000000u) {
            fail(p, "the target checked %" PRIu64 " transfers and no more "
                 "in %u s (waiting to post %" PRIu64 ")", p->acked,
                 p->cfg->stall_s, seq);
            return -1;
        }
        soak_sleep_ms(1);
    }
    return 0;
}

static int one(peer_t *p, uint64_t seq)
{
    const soak_cfg_t *c = p->cfg;
    size_t src = 64, dst = 64 + c->sub_size;
    soak_plan_t pl;
    soak_msg_t msg;
    size_t bad;

    soak_plan(c, p->slot, p->gen, seq, &pl);
    memset(&msg, 0, sizeof msg);
    msg.magic = SOAK_MSG_MAGIC;
    msg.slot = p->slot;
    msg.gen = p->gen;
    msg.op = (uint32_t)pl.op;
    msg.seq = seq;
    msg.off = pl.off;
    msg.len = pl.len;
    msg.tseed = pl.tseed;
    if (pl.op == XFER_OP_WRITE) {
        if (wait_ack(p, seq))
            return -1;
        soak_pat_fill(p->buf + src, pl.tseed, 0, pl.len);
        return transfer(p, XFER_OP_WRITE, src,
                        soak_sub_off(c, p->slot, seq) + pl.off, pl.len, &msg);
    }
    /* A READ that moved nothing must not pass: poison the destination. */
    memset(p->buf + dst, 0xa5, pl.len);
    if (transfer(p, XFER_OP_READ, dst, c->pat_off + pl.off, pl.len, &msg))
        return -1;
    bad = soak_pat_check(p->buf + dst, soak_pat_seed(c), pl.off, pl.len);
    if (bad < pl.len) {
        fail(p, "READ %" PRIu64 " of %zu bytes at pattern offset %zu: byte "
             "%zu is wrong", seq, pl.len, pl.off, bad);
        return -1;
    }
    return 0;
}

/* Load the target's metadata from its listener.  Sixteen initiators
 * starting at once may find it busy: try again for a while. */
static int fetch(peer_t *p, const char *addr)
{
    xfer_region_info_t ri;
    size_t count = 0;
    xfer_status_t st;
    unsigned tries;

    for (tries = 0;; tries++) {
        st = xfer_md_fetch(p->agent, addr, SOAK_TARGET_NAME, 10000, NULL, 0);
        if (st == XFER_OK || tries >= 20)
            break;
        soak_sleep_ms(100 + 50 * tries);
    }
    if (check(p, st, "fetch the target's metadata") ||
        check(p, xfer_md_regions(p->agent, SOAK_TARGET_NAME, &ri, 1, &count),
              "list the target's regions"))
        return -1;
    if (count != 1 || ri.len < p->cfg->region_size) {
        fail(p, "the target shows %zu regions (first %zu bytes), expected "
             "one of %zu bytes", count, count ? ri.len : 0,
             p->cfg->region_size);
        return -1;
    }
    p->base = ri.addr;
    return 0;
}

int soak_initiator(const soak_cfg_t *c, const char *listen_addr,
                   unsigned slot, unsigned gen, uint64_t quota)
{
    peer_t p = { .cfg = c, .slot = slot, .gen = gen };
    char name[32], byte;
    xfer_agent_opts_t opts;
    xfer_mem_t *mem = NULL;
    void *page;
    int rc = SOAK_EXIT_FAIL;
    uint64_t seq;

    page = mmap(NULL, (size_t)c->initiators * SOAK_LINE,
                PROT_READ | PROT_WRITE, MAP_SHARED, SOAK_STATUS_FD, 0);
    if (page == MAP_FAILED) {
        fail(&p, "cannot map the status page: %s", strerror(errno));
        return rc;
    }
    p.status = (soak_status_t *)((char *)page + (size_t)slot * SOAK_LINE);
    p.status->gen = gen;
    p.buf_size = 64 + 2 * c->sub_size;
    p.buf = aligned_alloc(4096, (p.buf_size + 4095) / 4096 * 4096);
    if (p.buf == NULL) {
        fail(&p, "out of memory for %zu bytes", p.buf_size);
        return rc;
    }
    memset(p.buf, 0, p.buf_size);
    snprintf(name, sizeof name, SOAK_NAME_FMT, slot);
    xfer_agent_opts_init(&opts);
    opts.name = name;
    {
        xfer_desc_t d = { (uintptr_t)p.buf, p.buf_size, 0 };
        xfer_dlist_t dl = { XFER_MEM_DRAM, 1, &d };

        if (check(&p, xfer_agent_create(&opts, &p.agent), "create agent") ||
            check(&p, xfer_backend_add(p.agent, c->spec, NULL), c->spec) ||
            check(&p, xfer_mem_register(p.agent, &dl, NULL, &mem),
                  "register") ||
            fetch(&p, listen_addr))
            goto out;
    }
    for (seq = 0; seq < quota; seq++) {
        if (one(&p, seq))
            goto out;
        __atomic_store_n(&p.status->done, seq + 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&p.status->finished, 1, __ATOMIC_RELEASE);
    /* Stay connected until the target has taken its last sample: the
     * target closes our stdin when it is done with us. */
    for (;;) {
        ssize_t n = read(0, &byte, 1);

        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    rc = 0;
out:
    if (mem != NULL && xfer_mem_deregister(p.agent, mem) != XFER_OK)
        rc = SOAK_EXIT_FAIL;
    xfer_agent_destroy(p.agent);
    free(p.buf);
    return rc;
}
