/* inproc.c - agents of one process wired to each other for the
 * concurrency benchmarks (see inproc.h). */
#include "bench/inproc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t ip_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void ip_check(xfer_status_t st, const char *what)
{
    if (st == XFER_OK)
        return;
    fprintf(stderr, "%s: %s: %s\n", what, xfer_strerror(st),
            xfer_last_error());
    exit(1);
}

xfer_agent_t *ip_agent(const char *name, const char *const *specs,
                       size_t nspecs, int progress_thread)
{
    xfer_agent_opts_t o;
    xfer_agent_t *a = NULL;

    xfer_agent_opts_init(&o);
    o.name = name;
    o.progress_thread = progress_thread;
    ip_check(xfer_agent_create(&o, &a), "xfer_agent_create");
    for (size_t i = 0; i < nspecs; i++)
        ip_check(xfer_backend_add(a, specs[i], NULL), specs[i]);
    return a;
}

static void load_md(xfer_agent_t *from, xfer_agent_t *to)
{
    size_t len = 0;
    char *blob = NULL, name[XFER_NAME_MAX + 1];

    ip_check(xfer_md_get(from, XFER_MD_ALL, NULL, 0, &blob, &len),
             "xfer_md_get");
    ip_check(xfer_md_load(to, blob, len, name, sizeof(name)), "xfer_md_load");
    xfer_free(blob);
}

static xfer_mem_t *reg(xfer_agent_t *a, void **buf, size_t len)
{
    xfer_desc_t d;
    xfer_dlist_t l = {XFER_MEM_DRAM, 1, &d};
    xfer_mem_t *m = NULL;

    ip_check(xfer_mem_alloc(a, len, 0, buf), "xfer_mem_alloc");
    d = (xfer_desc_t){(uintptr_t)*buf, len, 0};
    ip_check(xfer_mem_register(a, &l, NULL, &m), "xfer_mem_register");
    return m;
}

void ip_peer_open(ip_peer_t *p, xfer_agent_t *ini, const char *spec,
                  const char *name, size_t len)
{
    xfer_desc_t ld, rd;
    xfer_dlist_t ll = {XFER_MEM_DRAM, 1, &ld}, rl = {XFER_MEM_DRAM, 1, &rd};
    size_t zero = 0;

    memset(p, 0, sizeof(*p));
    p->tgt = ip_agent(name, &spec, 1, 1);
    p->lmem = reg(ini, &p->lbuf, len);
    p->rmem = reg(p->tgt, &p->rbuf, len);
    load_md(p->tgt, ini);
    ld = (xfer_desc_t){(uintptr_t)p->lbuf, len, 0};
    rd = (xfer_desc_t){(uintptr_t)p->rbuf, len, 0};
    ip_check(xfer_prep_create(ini, &ll, NULL, &p->lprep), "xfer_prep_create");
    ip_check(xfer_prep_create(ini, &rl, name, &p->rprep), "xfer_prep_create");
    ip_check(xfer_req_create_prepped(ini, XFER_OP_WRITE, p->lprep, &zero,
                                     p->rprep, &zero, 1, NULL, &p->req),
             "xfer_req_create_prepped");
}

void ip_peer_close(ip_peer_t *p, xfer_agent_t *ini)
{
    ip_check(xfer_req_release(p->req), "xfer_req_release");
    ip_check(xfer_prep_release(p->lprep), "xfer_prep_release");
    ip_check(xfer_prep_release(p->rprep), "xfer_prep_release");
    ip_check(xfer_mem_deregister(ini, p->lmem), "xfer_mem_deregister");
    ip_check(xfer_mem_free(ini, p->lbuf), "xfer_mem_free");
    xfer_agent_destroy(p->tgt);
}

uint64_t ip_write(ip_peer_t *p)
{
    uint64_t t0 = ip_now_ns();
    xfer_status_t st = xfer_req_post(p->req, XFER_NOTIF_NONE, 0);

    while (st == XFER_IN_PROG)
        st = xfer_req_status(p->req);
    ip_check(st, "8 B WRITE");
    return ip_now_ns() - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

double ip_quantile(double *v, size_t n, double q)
{
    size_t i;

    qsort(v, n, sizeof(*v), cmp_double);
    i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}
