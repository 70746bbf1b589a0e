/* soak.c - the soak test: one target agent and N initiator processes that
 * it starts, kills and restarts; every byte and notification is checked.
 *
 * The target registers one region: an ack line per slot (flow control),
 * a read-only pattern area, and window write sub-slots per slot.  Each
 * initiator ("soak-<slot>") runs its planned transfers (soak_plan: op,
 * length, offset, pattern, all from the seed) one at a time, each with a
 * notification naming (slot, generation, sequence).  The target, on each
 * notification, checks its sender, that the sequence is the next one of
 * that slot (none lost, none twice, in order) and every byte of the
 * transfer in its memory; initiators check every byte they READ.  It
 * samples its own RSS and open fds, kills one initiator with SIGKILL
 * midway and starts a new one in its slot, and at the end checks that
 * RSS and fds stayed flat.  Exit status 0 only if everything held. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/soak.h"

/* ---- options ----------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
"usage: soak [options]\n"
"  -b, --backend SPEC     backend spec (default tcp)\n"
"  -n, --initiators N     initiator processes (default 16)\n"
"  -t, --transfers N      transfers in all, each with a notification\n"
"                         (default 100000)\n"
"  -s, --sizes MIN:MAX    transfer lengths, spread over powers of two\n"
"                         (default 1:65536)\n"
"      --seed S           seed of every choice (default: from the clock;\n"
"                         printed, so that a run can be repeated)\n"
"      --sample-every N   transfers between RSS/fd samples (default\n"
"                         transfers/20)\n"
"      --window K         WRITEs an initiator may have unchecked (16)\n"
"      --read-pct P       READs among the transfers, percent (10)\n"
"      --restarts N       kill an initiator and start a new one in its\n"
"                         slot N times, at even points of the run (1)\n"
"      --no-restart       the same as --restarts 0\n"
"      --stall-s S        fail when nothing moves for S seconds (120)\n"
"      --rss-margin-mib M RSS growth allowed, MiB (8) ...\n"
"      --rss-margin-pct P ... or percent of the baseline, the larger (10)\n"
"Exit status: 0 all checked, 1 a check failed, 2 usage, 77 backend\n"
"not available.\n");
}

static int parse_u64(const char *opt, const char *s, uint64_t min,
                     uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || end == s || *end != '\0' || s[0] == '-' || v < min ||
        v > max) {
        fprintf(stderr, "soak: %s wants a number from %" PRIu64 " to %"
                PRIu64 ", not \"%s\"\n", opt, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_unsigned(const char *opt, const char *s, unsigned min,
                          unsigned max, unsigned *out)
{
    uint64_t v;

    if (parse_u64(opt, s, min, max, &v))
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_sizes(const char *s, soak_cfg_t *c)
{
    char buf[64], *colon;
    uint64_t a, b;

    snprintf(buf, sizeof buf, "%s", s);
    colon = strchr(buf, ':');
    if (colon == NULL) {
        fprintf(stderr, "soak: --sizes wants MIN:MAX, not \"%s\"\n", s);
        return -1;
    }
    *colon = '\0';
    if (parse_u64("--sizes MIN", buf, 1, 64u << 20, &a) ||
        parse_u64("--sizes MAX", colon + 1, a, 64u << 20, &b))
        return -1;
    c->min_size = (size_t)a;
    c->max_size = (size_t)b;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_SEED = 256, O_SAMPLE, O_WINDOW, O_READ, O_NORESTART, O_STALL,
           O_RSSMIB, O_RSSPCT, O_CHILD, O_PEER, O_RESTARTS };
    static const struct option longopts[] = {
        { "backend", required_argument, NULL, 'b' },
        { "initiators", required_argument, NULL, 'n' },
        { "transfers", required_argument, NULL, 't' },
        { "sizes", required_argument, NULL, 's' },
        { "seed", required_argument, NULL, O_SEED },
        { "sample-every", required_argument, NULL, O_SAMPLE },
        { "window", required_argument, NULL, O_WINDOW },
        { "read-pct", required_argument, NULL, O_READ },
        { "no-restart", no_argument, NULL, O_NORESTART },
        { "restarts", required_argument, NULL, O_RESTARTS },
        { "stall-s", required_argument, NULL, O_STALL },
        { "rss-margin-mib", required_argument, NULL, O_RSSMIB },
        { "rss-margin-pct", required_argument, NULL, O_RSSPCT },
        { "child", required_argument, NULL, O_CHILD },
        { "peer", required_argument, NULL, O_PEER },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    soak_cfg_t c = { .spec = "tcp", .initiators = 16, .transfers = 100000,
                     .min_size = 1, .max_size = 65536, .window = 16,
                     .read_pct = 10, .restarts = 1, .stall_s = 120,
                     .rss_margin_mib = 8, .rss_margin_pct = 10 };
    const char *child = NULL, *peer = NULL;
    char self[4096];
    ssize_t n;
    int opt;

    c.seed = soak_mix64(soak_now_ns() ^ ((uint64_t)getpid() << 32));
    while ((opt = getopt_long(argc, argv, "b:n:t:s:h", longopts, NULL)) !=
           -1) {
        int bad = 0;

        switch (opt) {
        case 'b': c.spec = optarg; break;
        case 'n':
            bad = parse_unsigned("--initiators", optarg, 1, 1024,
                                 &c.initiators);
            break;
        case 't':
            /* The ack line holds a slot's count in 32 bits. */
            bad = parse_u64("--transfers", optarg, 1, UINT32_MAX,
                            &c.transfers);
            break;
        case 's': bad = parse_sizes(optarg, &c); break;
        case O_SEED:
            bad = parse_u64("--seed", optarg, 0, UINT64_MAX, &c.seed);
            break;
        case O_SAMPLE:
            bad = parse_u64("--sample-every", optarg, 1, UINT64_MAX,
                            &c.sample_every);
            break;
        case O_WINDOW:
            bad = parse_unsigned("--window", optarg, 1, 4096, &c.window);
            break;
        case O_READ:
            bad = parse_unsigned("--read-pct", optarg, 0, 100, &c.read_pct);
            break;
        case O_NORESTART: c.restarts = 0; break;
        case O_RESTARTS:
            bad = parse_unsigned("--restarts", optarg, 0, 1000, &c.restarts);
            break;
        case O_STALL:
            bad = parse_unsigned("--stall-s", optarg, 1, 86400, &c.stall_s);
            break;
        case O_RSSMIB:
            bad = parse_unsigned("--rss-margin-mib", optarg, 0, 1u << 20,
                                 &c.rss_margin_mib);
            break;
        case O_RSSPCT:
            bad = parse_unsigned("--rss-margin-pct", optarg, 0, 1000,
                                 &c.rss_margin_pct);
            break;
        case O_CHILD: child = optarg; break;
        case O_PEER: peer = optarg; break;
        case 'h': usage(stdout); return 0;
        default: bad = 1; break;
        }
        if (bad) {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "soak: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (soak_layout(&c))
        return 2;
    if (c.transfers < c.initiators) {
        fprintf(stderr, "soak: %" PRIu64 " transfers cannot keep %u "
                "initiators busy: give at least one each\n", c.transfers,
                c.initiators);
        return 2;
    }
    if (c.sample_every == 0)
        c.sample_every = c.transfers / 20 ? c.transfers / 20 : 1;

    if (child != NULL) {
        unsigned slot, gen;
        uint64_t quota;

        if (peer == NULL ||
            sscanf(child, "%u:%u:%" SCNu64, &slot, &gen, &quota) != 3 ||
            slot >= c.initiators) {
            fprintf(stderr, "soak: --child wants SLOT:GEN:QUOTA with a "
                    "slot below --initiators, and --peer ADDR\n");
            return 2;
        }
        return soak_initiator(&c, peer, slot, gen, quota);
    }
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "soak: cannot find this program: %s\n",
                strerror(errno));
        return 1;
    }
    self[n] = '\0';
    return soak_target(&c, self);
}
