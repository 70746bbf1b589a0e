/* tcp-pingpong.c - the raw baseline xfer-bench is compared against: plain
 * TCP over loopback, ping-pong RTT or one-way stream bandwidth, libc only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STREAM_CHUNK (1u << 20)

struct options {
    long iters;       /* ping-pong round trips measured */
    long warmup;      /* round trips before measuring (not reported) */
    size_t size;      /* ping-pong message size */
    int stream;       /* 1: one-way bandwidth instead of ping-pong */
    double seconds;   /* stream duration */
    int poll;         /* 1: the client spins on non-blocking reads */
    int poll_server;  /* 1: the server spins too */
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Full-length blocking I/O: 0 on success, -1 on error or early EOF. */
static int read_full(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = read(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The client side of --poll: spin on non-blocking reads, as an xfer
 * initiator without a progress thread spins on xfer_req_status, so the
 * two are compared like for like. */
static int read_full_poll(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

        if (n < 0 && (errno == EINTR || errno == EAGAIN ||
                      errno == EWOULDBLOCK))
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void set_nodelay(int fd)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Echo every message back until the client closes. */
static int serve_pingpong(int fd, size_t size, int poll)
{
    char *buf = malloc(size);
    int rc = 0;

    if (buf == NULL)
        return 1;
    while ((poll ? read_full_poll(fd, buf, size)
                 : read_full(fd, buf, size)) == 0)
        if (write_full(fd, buf, size) != 0) {
            rc = 1;
            break;
        }
    free(buf);
    return rc;
}

/* Count bytes from the first one to EOF and send back {bytes, ns}: the
 * receiver's clock is the honest one, the sender only fills its socket. */
static int serve_stream(int fd, int poll)
{
    char *buf = malloc(STREAM_CHUNK);
    uint64_t total = 0, t0 = 0, result[2];
    ssize_t n;

    if (buf == NULL)
        return 1;
    /* --poll: the receiver spins on non-blocking reads, as an xfer
     * progress thread does while data keeps arriving. */
    while ((n = recv(fd, buf, STREAM_CHUNK, poll ? MSG_DONTWAIT : 0)) != 0) {
        if (n < 0) {
            if (errno == EINTR || (poll && (errno == EAGAIN ||
                                            errno == EWOULDBLOCK)))
                continue;
            free(buf);
            return 1;
        }
        if (total == 0)
            t0 = now_ns();
        total += (uint64_t)n;
    }
    result[0] = total;
    result[1] = now_ns() - t0;
    free(buf);
    return write_full(fd, result, sizeof(result)) != 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

static int run_pingpong(int fd, const struct options *o)
{
    uint64_t *rtt = malloc((size_t)o->iters * sizeof(*rtt));
    char *buf = calloc(1, o->size);
    double sum = 0;
    long i;
    int rc = 1;

    if (rtt == NULL || buf == NULL) {
        fprintf(stderr, "tcp-pingpong: out of memory\n");
        goto out;
    }
    for (i = -o->warmup; i < o->iters; i++) {
        uint64_t t0 = now_ns();

        if (write_full(fd, buf, o->size) != 0 ||
            (o->poll ? read_full_poll(fd, buf, o->size)
                     : read_full(fd, buf, o->size)) != 0) {
            perror("tcp-pingpong: ping-pong");
            goto out;
        }
        if (i >= 0)
            rtt[i] = now_ns() - t0;
    }
    for (i = 0; i < o->iters; i++)
        sum += (double)rtt[i];
    qsort(rtt, (size_t)o->iters, sizeof(*rtt), cmp_u64);
    printf("# tcp-pingpong loopback, TCP_NODELAY, %zu B messages, %ld "
           "iterations, client %s, server %s\n", o->size, o->iters,
           o->poll ? "busy-polling" : "blocking",
           o->poll_server ? "busy-polling" : "blocking");
    printf("%-10s %-14s %-14s %-14s\n", "size", "median_rtt_us", "avg_rtt_us",
           "min_rtt_us");
    printf("%-10zu %-14.2f %-14.2f %-14.2f\n", o->size,
           (double)rtt[o->iters / 2] / 1e3, sum / (double)o->iters / 1e3,
           (double)rtt[0] / 1e3);
    rc = 0;
out:
    free(rtt);
    free(buf);
    return rc;
}

static int run_stream(int fd, const struct options *o)
{
    char *buf = calloc(1, STREAM_CHUNK);
    uint64_t end, result[2];
    int rc = 1;

    if (buf == NULL) {
        fprintf(stderr, "tcp-pingpong: out of memory\n");
        return 1;
    }
    end = now_ns() + (uint64_t)(o->seconds * 1e9);
    while (now_ns() < end)
        if (write_full(fd, buf, STREAM_CHUNK) != 0) {
            perror("tcp-pingpong: stream");
            goto out;
        }
    shutdown(fd, SHUT_WR); /* EOF tells the server to report */
    if (read_full(fd, result, sizeof(result)) != 0 || result[1] == 0) {
        fprintf(stderr, "tcp-pingpong: no result from the server\n");
        goto out;
    }
    printf("# tcp-pingpong --stream loopback, %u B writes, %.1f s, receiver "
           "%s\n", STREAM_CHUNK, o->seconds,
           o->poll ? "busy-polling" : "blocking");
    printf("%-14s %-10s\n", "bytes", "GB/s");
    printf("%-14llu %-10.3f\n", (unsigned long long)result[0],
           (double)result[0] / (double)result[1]); /* bytes/ns == GB/s */
    rc = 0;
out:
    free(buf);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: tcp-pingpong [-n ITERS] [-s SIZE] [--stream [-t SECONDS]]\n"
            "Raw TCP baseline over loopback (a forked server and client).\n"
            "\n"
            "  -n, --iters N       round trips measured (default 100000)\n"
            "  -w, --warmup N      untimed round trips first (default 1000)\n"
            "  -s, --size BYTES    ping-pong message size (default 8)\n"
            "      --stream        push %u B writes one way and report GB/s\n"
            "  -t, --seconds S     stream duration (default 3)\n"
            "      --poll          ping-pong: the client spins on non-blocking\n"
            "                      reads (the server blocks); stream: the\n"
            "                      receiver spins\n"
            "      --poll-server   ping-pong: the server spins too\n"
            "  -h, --help          this help\n"
            "GB/s means 10^9 bytes per second, measured by the receiver.\n",
            STREAM_CHUNK);
}

static int parse_long(const char *opt, const char *arg, long min, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < min) {
        fprintf(stderr, "tcp-pingpong: option %s needs an integer >= %ld, "
                "not '%s'.\n", opt, min, arg);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {
        { "iters", required_argument, NULL, 'n' },
        { "warmup", required_argument, NULL, 'w' },
        { "size", required_argument, NULL, 's' },
        { "stream", no_argument, NULL, 'S' },
        { "seconds", required_argument, NULL, 't' },
        { "poll", no_argument, NULL, 'P' },
        { "poll-server", no_argument, NULL, 'Q' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    long v;
    char *end;
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:w:s:t:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (parse_long("-n", optarg, 1, &o->iters))
                return -1;
            break;
        case 'w':
            if (parse_long("-w", optarg, 0, &o->warmup))
                return -1;
            break;
        case 's':
            if (parse_long("-s", optarg, 1, &v))
                return -1;
            o->size = (size_t)v;
            break;
        case 'S': o->stream = 1; break;
        case 'P': o->poll = 1; break;
        case 'Q': o->poll_server = 1; break;
        case 't':
            o->seconds = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || !(o->seconds > 0)) {
                fprintf(stderr, "tcp-pingpong: option -t needs a positive "
                        "number of seconds, not '%s'.\n", optarg);
                return -1;
            }
            break;
        case 'h': usage(stdout); exit(0);
        default:
            fprintf(stderr, "tcp-pingpong: unknown option or missing "
                    "argument '%s'; try --help.\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "tcp-pingpong: unexpected argument '%s'.\n",
                argv[optind]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = { 100000, 1000, 8, 0, 3.0, 0, 0 };
    struct sockaddr_in addr;
    socklen_t alen = sizeof(addr);
    int lfd, fd, status, rc;
    pid_t pid;

    if (parse_options(argc, argv, &o))
        return 2;

    /* Listen before forking so the client can connect at once. */
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
        perror("tcp-pingpong: listen");
        if (lfd >= 0)
            close(lfd);
        return 1;
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        perror("tcp-pingpong: fork");
        close(lfd);
        return 1;
    }
    if (pid == 0) {
        fd = accept(lfd, NULL, NULL);
        close(lfd);
        if (fd < 0)
            _exit(1);
        set_nodelay(fd);
        rc = o.stream ? serve_stream(fd, o.poll)
                      : serve_pingpong(fd, o.size, o.poll_server);
        close(fd);
        _exit(rc);
    }

    close(lfd);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        perror("tcp-pingpong: connect");
        kill(pid, SIGTERM); /* it would wait in accept() forever */
        rc = 1;
    } else {
        set_nodelay(fd);
        rc = o.stream ? run_stream(fd, &o) : run_pingpong(fd, &o);
    }
    if (fd >= 0)
        close(fd); /* EOF ends the server */
    if (waitpid(pid, &status, 0) != pid ||
        !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "tcp-pingpong: server ended abnormally\n");
        rc = 1;
    }
    return rc;
}
