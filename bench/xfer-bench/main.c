/* main.c - xfer-bench: bandwidth and latency of READ/WRITE over any
 * backend.  Checks the backends, gathers the ranks (forked here, one
 * TCP peer, or etcd) and runs them; see xb.h for the parts. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "xb.h"

/* Every --backend must load with its config, and READ needs a plugin
 * that can READ: each is one sentence naming the option, before any
 * process is forked or waited for. */
static int check_backends(struct xb_opts *o)
{
    static char versions[XB_MAX_BACKENDS][64];
    xfer_plugin_info_t *infos = NULL;
    xfer_agent_opts_t aopts;
    xfer_agent_t *agent = NULL;
    size_t n = 0, b, i;
    xfer_status_t st;
    int rc = 0;

    xfer_agent_opts_init(&aopts);
    aopts.name = "xfer-bench-check";
    aopts.progress_thread = 0;
    if (xfer_plugin_list(&infos, &n) != XFER_OK)
        n = 0;
    for (b = 0; rc == 0 && b < o->nbackends; b++) {
        const char *spec = o->backends[b];
        size_t nl = strcspn(spec, ":");

        for (i = 0; rc == 0 && i < n; i++) {
            if (infos[i].error != NULL || strlen(infos[i].name) != nl ||
                strncmp(infos[i].name, spec, nl) != 0)
                continue;
            /* Kept for the report: no plugin is reopened during a run. */
            snprintf(versions[b], sizeof(versions[b]), "%s",
                     infos[i].version);
            o->versions[b] = versions[b];
            if (o->op == XFER_OP_READ && !(infos[i].caps & XFER_CAP_READ)) {
                fprintf(stderr, "xfer-bench: option --op READ: backend '%s' "
                        "cannot READ.\n", spec);
                rc = -1;
            }
        }
        if (rc != 0)
            break;
        /* A fresh agent per spec: one instance per plugin. */
        if ((st = xfer_agent_create(&aopts, &agent)) != XFER_OK) {
            fprintf(stderr, "xfer-bench: %s (%s)\n", xfer_strerror(st),
                    xfer_last_error());
            rc = -1;
            break;
        }
        if ((st = xfer_backend_add(agent, spec, NULL)) != XFER_OK) {
            fprintf(stderr, "xfer-bench: option --backend '%s': %s\n", spec,
                    xfer_last_error()[0] ? xfer_last_error()
                                         : xfer_strerror(st));
            rc = -1;
        }
        xfer_agent_destroy(agent);
        agent = NULL;
    }
    if (infos != NULL)
        xfer_plugin_list_free(infos, n);
    return rc;
}

static int finish(int rc, struct xb_coord *c)
{
    if (rc != 0)
        fprintf(stderr, "xfer-bench: rank %d: %s\n", c->rank, xb_error());
    xb_coord_close(c);
    return rc == 0 ? 0 : 1;
}

/* Fork every rank but 0 before any agent of ours exists: a child of a
 * threaded process may only call async-signal-safe functions. */
static int run_local(const struct xb_opts *o)
{
    int fds[XB_MAX_RANKS], r, status, rc, size = (int)o->ranks;
    pid_t pids[XB_MAX_RANKS];
    struct xb_coord c = { 0, 0, NULL, NULL };

    fflush(stdout);
    fflush(stderr);
    for (r = 1; r < size; r++) {
        int sv[2] = { -1, -1 };

        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
            (pids[r] = fork()) < 0) {
            fprintf(stderr, "xfer-bench: cannot start rank %d: %s\n", r,
                    strerror(errno));
            if (sv[0] >= 0) {
                close(sv[0]);
                close(sv[1]);
            }
            while (--r >= 1) {
                close(fds[r - 1]);
                kill(pids[r], SIGTERM);
                waitpid(pids[r], NULL, 0);
            }
            return 1;
        }
        if (pids[r] == 0) {
            int q;

            close(sv[0]);
            for (q = 1; q < r; q++)
                close(fds[q - 1]);
            rc = xb_coord_spoke(&c, sv[1], r, size);
            if (rc == 0)
                rc = xb_run(o, &c);
            rc = finish(rc, &c);
            fflush(stdout);
            _exit(rc);
        }
        close(sv[1]);
        fds[r - 1] = sv[0];
    }
    rc = xb_coord_hub(&c, fds, size - 1);
    if (rc == 0)
        rc = xb_run(o, &c);
    rc = finish(rc, &c); /* closing tells every rank to stop */
    for (r = 1; r < size; r++) {
        while (waitpid(pids[r], &status, 0) < 0)
            if (errno != EINTR) {
                status = 1;
                break;
            }
        if (WIFSIGNALED(status)) {
            fprintf(stderr, "xfer-bench: rank %d killed by signal %d\n", r,
                    WTERMSIG(status));
            rc = 1;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            rc = 1;
        }
    }
    return rc;
}

static int run_joined(const struct xb_opts *o)
{
    struct xb_coord c = { 0, 0, NULL, NULL };
    int rc;

    if (o->etcd != NULL)
        rc = xb_coord_etcd(&c, o->etcd, o->group, (int)o->ranks);
    else
        rc = xb_coord_tcp(&c, o->peer, o->role == XB_ROLE_TARGET);
    if (rc == -2)
        return 2;
    if (rc != 0) {
        fprintf(stderr, "xfer-bench: %s\n", xb_error());
        return 1;
    }
    return finish(xb_run(o, &c), &c);
}

int main(int argc, char **argv)
{
    struct xb_opts o;
    int r = xb_opts_parse(argc, argv, &o);

    if (r != 0)
        return r > 0 ? 0 : 2;
    /* A peer that vanishes must be an error from send(), not a signal. */
    signal(SIGPIPE, SIG_IGN);
    if (check_backends(&o))
        return 2;
    if (o.etcd != NULL || o.role != XB_ROLE_LOCAL)
        return run_joined(&o);
    return run_local(&o);
}
