/* conf-proc.c - the conformance suite's target process: a forked agent
 * that registers one buffer, sends its metadata and serves commands
 * (fill, check, notifs, dereg, free, ping, exit) over a socketpair, so
 * that tests can kill, stop and cut off a real peer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* setns */
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/backend/conformance.h"

/* Length-prefixed messages over a socketpair, bounded in time. */
static int msg_send(int fd, const void *buf, uint32_t len)
{
    struct iovec iov[2] = { { &len, sizeof(len) }, { (void *)buf, len } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    size_t want = sizeof(len) + len;
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);

    /* SOCK_SEQPACKET: one message, all or nothing. */
    return n == (ssize_t)want ? 0 : -1;
}

/* Receive one message (malloc'd, NUL-terminated) within timeout_ms. */
static char *msg_recv(int fd, unsigned timeout_ms, uint32_t *lenp)
{
    struct pollfd pf = { fd, POLLIN, 0 };
    uint32_t len;
    char *buf;
    ssize_t n;
    int cap = 1 << 20;

    if (poll(&pf, 1, (int)timeout_ms) <= 0)
        return NULL;
    buf = malloc((size_t)cap);
    if (buf == NULL)
        return NULL;
    n = recv(fd, buf, (size_t)cap, 0);
    if (n < (ssize_t)sizeof(len)) {
        free(buf);
        return NULL;
    }
    memcpy(&len, buf, sizeof(len));
    if ((size_t)n != sizeof(len) + len) {
        free(buf);
        return NULL;
    }
    memmove(buf, buf + sizeof(len), len);
    buf[len] = '\0';
    if (lenp)
        *lenp = len;
    return buf;
}

static void child_reply(int fd, const char *fmt, ...)
{
    char text[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    msg_send(fd, text, (uint32_t)strlen(text));
}

static void child_collect(void *arg, const char *from, const void *msg,
                          size_t len)
{
    /* "from:msg;" appended to a text buffer. */
    char *out = arg;
    size_t used = strlen(out);

    snprintf(out + used, 65536 - used, "%s:%.*s;", from, (int)len,
             (const char *)msg);
}

/* What a target process owns, released on every way out. */
typedef struct target {
    int fd;
    xfer_agent_t *agent;
    unsigned char *buf;
    char *notifs;
    xfer_mem_t *mem;              /* NULL once deregistered */
    bool xalloc;                  /* buf from xfer_mem_alloc */
} target_t;

static void target_exit(target_t *t, int status) __attribute__((noreturn));
static void target_exit(target_t *t, int status)
{
    /* Deregisters buf first, and unmaps it when xfer_mem_alloc'd. */
    xfer_agent_destroy(t->agent);
    if (!t->xalloc)
        free(t->buf);
    free(t->notifs);
    close(t->fd);
    xt_child_exit(status);
}

/* The target process: serve commands until told to stop or the parent
 * goes away.  Never returns. */
/* XT_CHILD_NETNS=/run/netns/NAME: the target process lives in that
 * network namespace, so that the process tests cross a real link
 * (tests/backend/conformance-netns.sh makes one).  ns is that, or what
 * xc_child_start_in was given ("": stay in ours). */
static void child_netns(int fd, const char *ns)
{
    int nfd;

    if (ns == NULL || ns[0] == '\0')
        return;
    nfd = open(ns, O_RDONLY | O_CLOEXEC);
    if (nfd < 0 || setns(nfd, CLONE_NEWNET) != 0) {
        child_reply(fd, "err setup: network namespace %s: %s", ns,
                    strerror(errno));
        xt_child_exit(1);
    }
    close(nfd);
}

/* The commands that take the memory away while peers use it: "dereg"
 * deregisters the buffer (its bytes stay readable), "free" gives an
 * xfer_mem_alloc'd one back with xfer_mem_free; each answers once the
 * call returned: "ok", or "err <status>: <sentence>". */
static void child_release(target_t *t, const char *cmd)
{
    xfer_status_t s;

    if (strcmp(cmd, "dereg") == 0) {
        s = xfer_mem_deregister(t->agent, t->mem);
        if (s == XFER_OK)
            t->mem = NULL;
    } else {
        s = xfer_mem_free(t->agent, t->buf);
        if (s == XFER_OK)
            t->buf = NULL;
    }
    if (s == XFER_OK)
        child_reply(t->fd, "ok");
    else
        child_reply(t->fd, "err %s: %s", xt_status_name(s),
                    xfer_last_error());
}

static void child_main(int fd, const char *name, size_t size, bool xalloc,
                       const char *ns)
{
    target_t t = { fd, NULL, NULL, calloc(1, 65536), NULL, xalloc };
    xfer_agent_opts_t o;
    xfer_desc_t d;
    xfer_dlist_t l;
    char *blob = NULL;
    size_t len = 0;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(120);
    child_netns(fd, ns);
    xfer_agent_opts_init(&o);
    o.name = name;
    if (t.notifs == NULL ||
        (!xalloc && posix_memalign((void **)&t.buf, 4096, size) != 0) ||
        xfer_agent_create(&o, &t.agent) != XFER_OK ||
        xfer_backend_add(t.agent, xc_spec, NULL) != XFER_OK ||
        (xalloc && xfer_mem_alloc(t.agent, size, 0, (void **)&t.buf) !=
                   XFER_OK)) {
        child_reply(fd, "err setup: %s", xfer_last_error());
        target_exit(&t, 1);
    }
    memset(t.buf, 0, size);
    d = (xfer_desc_t){ (uintptr_t)t.buf, size, 0 };
    l = xt_dlist(&d, 1);
    if (xfer_mem_register(t.agent, &l, NULL, &t.mem) != XFER_OK ||
        xfer_md_get(t.agent, XFER_MD_ALL, NULL, 0, &blob, &len) != XFER_OK) {
        child_reply(fd, "err register: %s", xfer_last_error());
        target_exit(&t, 1);
    }
    msg_send(fd, blob, (uint32_t)len);
    xfer_free(blob);
    for (;;) {
        char *cmd = msg_recv(fd, 110000, NULL);
        unsigned long long off, n, seed, want, ms;

        if (cmd == NULL)
            target_exit(&t, 0);    /* parent gone or done */
        /* The parent saw a transfer end and tells us so over this
         * socketpair, an order ThreadSanitizer cannot see.  A progress
         * pass takes the backend's lock that the progress thread held
         * while it moved the bytes, which it can see (a real target
         * learns of data through the agent: a notification). */
        xfer_progress(t.agent);
        if (sscanf(cmd, "fill %llu %llu %llu", &off, &n, &seed) == 3) {
            xt_fill_at(t.buf + off, n, seed, 0);
            /* And the other way: the bytes are filled before the
             * progress thread next takes the lock and sends them. */
            xfer_progress(t.agent);
            child_reply(fd, "ok");
        } else if (sscanf(cmd, "check %llu %llu %llu", &off, &n, &seed) == 3) {
            long bad = xt_check_at(t.buf + off, n, seed, 0);

            child_reply(fd, bad < 0 ? "ok" : "bad %ld", bad);
        } else if (sscanf(cmd, "notifs %llu %llu", &want, &ms) == 2) {
            uint64_t end = xt_now_ms() + ms;
            size_t count = 0, c;

            while (count < want && xt_now_ms() < end) {
                xfer_notif_drain(t.agent, child_collect, t.notifs, &c);
                count += c;
                if (count < want)
                    xt_sleep_ms(1);
            }
            msg_send(fd, t.notifs, (uint32_t)strlen(t.notifs));
            t.notifs[0] = '\0';
        } else if (strcmp(cmd, "dereg") == 0 || strcmp(cmd, "free") == 0) {
            child_release(&t, cmd);
        } else if (strcmp(cmd, "ping") == 0) {
            child_reply(fd, "ok");
        } else if (strcmp(cmd, "exit") == 0) {
            free(cmd);
            target_exit(&t, 0);
        }
        free(cmd);
    }
}

static void fd_close(void *arg)
{
    close((int)(intptr_t)arg);
}

static void child_start(xc_child_t *c, size_t size, bool xalloc,
                        const char *netns);

/* Fork a target process of `size` bytes; returns once its blob is here.
 * Call before creating agents in this process. */
void xc_child_start(xc_child_t *c, size_t size)
{
    child_start(c, size, false, getenv("XT_CHILD_NETNS"));
}

void xc_child_start_mem(xc_child_t *c, size_t size, bool xalloc)
{
    child_start(c, size, xalloc, getenv("XT_CHILD_NETNS"));
}

void xc_child_start_in(xc_child_t *c, size_t size, const char *netns)
{
    child_start(c, size, false, netns);
}

/* The three above: the buffer's kind, the network namespace. */
static void child_start(xc_child_t *c, size_t size, bool xalloc,
                        const char *netns)
{
    int sv[2];

    snprintf(c->name, sizeof(c->name), "%s", xt_name("proc"));
    XT_REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0,
               "socketpair: %s", strerror(errno));
    fflush(NULL);
    c->pid = fork();
    XT_REQUIRE(c->pid >= 0, "fork: %s", strerror(errno));
    if (c->pid == 0) {
        close(sv[0]);
        child_main(sv[1], c->name, size, xalloc, netns);
    }
    close(sv[1]);
    c->fd = sv[0];
    xt_child_add(c->pid);
    xt_defer(fd_close, (void *)(intptr_t)c->fd);
    c->blob = msg_recv(c->fd, WAIT_MS, &c->len);
    XT_REQUIRE(c->blob != NULL, "target process sent no metadata");
    xt_defer_late(free, c->blob);
    XT_REQUIRE(strncmp(c->blob, "err", 3) != 0, "target process: %s", c->blob);
}

/* Send a command and return the reply (freed after the test). */
char *xc_child_cmd(xc_child_t *c, const char *fmt, ...)
{
    char text[256];
    char *reply;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    XT_REQUIRE(msg_send(c->fd, text, (uint32_t)strlen(text)) == 0,
               "target process is gone");
    reply = msg_recv(c->fd, WAIT_MS, NULL);
    XT_REQUIRE(reply != NULL, "no reply to \"%s\"", text);
    xt_defer_late(free, reply);
    return reply;
}

void xc_child_stop(xc_child_t *c)
{
    int status = 0;

    msg_send(c->fd, "exit", 4);
    waitpid(c->pid, &status, 0);
    xt_child_forget(c->pid);
    XT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
             "target process ended with status 0x%x", status);
}

void xc_child_load(xfer_agent_t *ini, xc_child_t *c)
{
    XT_STATUS_FATAL(xfer_md_load(ini, c->blob, c->len, NULL, 0), XFER_OK);
}

/* The remote address of the child's buffer, from its blob. */
uintptr_t xc_child_base(xc_child_t *c)
{
    json_t *root = xt_blob_parse(c->blob, c->len);
    uint64_t addr = 0;

    XT_REQUIRE(xt_json_u64(json_object_get(xt_blob_region(root, 0), "addr"),
                           &addr), "child blob has no region address");
    return (uintptr_t)addr;
}

xfer_status_t xc_child_req_opts(xfer_agent_t *ini, xc_child_t *c,
                                xfer_op_t op, void *local, size_t roff,
                                size_t len, const xfer_req_opts_t *opts,
                                xfer_req_t **req)
{
    xfer_desc_t l = { (uintptr_t)local, len, 0 };
    xfer_desc_t r = { xc_child_base(c) + roff, len, 0 };
    xfer_dlist_t ll = xt_dlist(&l, 1), rl = xt_dlist(&r, 1);
    xfer_status_t s;

    *req = NULL;
    s = xfer_req_create(ini, op, &ll, &rl, c->name, opts, req);
    if (s == XFER_OK)
        xt_req_defer(*req);
    return s;
}

xfer_req_t *xc_child_req(xfer_agent_t *ini, xc_child_t *c, xfer_op_t op,
                         void *local, size_t roff, size_t len)
{
    xfer_req_t *req;

    XT_STATUS_FATAL(xc_child_req_opts(ini, c, op, local, roff, len, NULL, &req),
                    XFER_OK);
    return req;
}
