/* report.c - what xfer-bench tells: the table on stdout as rows arrive,
 * the progress bar on stderr, and at the end --json, --csv and --plot. */
#include "xb.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define BAR_WIDTH 30
/* Reals in --json and --csv: more digits than any timer resolves, fewer
 * than the 17 that print 0.1 as 0.10000000000000001. */
#define REAL_DIGITS 15

/* ------------------------------------------------------------------ */
/* Columns: the table header, the --json keys and the --csv fields.    */
/* nixlbench's columns in its order, then the initiators' CPU time.    */
/* ------------------------------------------------------------------ */

enum col_type { COL_SIZE, COL_REAL };

#define AT(field) offsetof(struct xb_result, field)

static const struct column {
    const char *name;
    enum col_type type;
    size_t off;    /* into struct xb_result */
    int width;     /* in the table */
    int decimals;  /* in the table */
} columns[] = {
    { "block_size", COL_SIZE, AT(block), 10, 0 },
    { "batch_size", COL_SIZE, AT(batch), 10, 0 },
    { "gbps", COL_REAL, AT(gbps), 9, 4 },
    { "avg_lat_us", COL_REAL, AT(avg_lat_us), 11, 2 },
    { "avg_prep_us", COL_REAL, AT(prep.avg_us), 11, 2 },
    { "p99_prep_us", COL_REAL, AT(prep.p99_us), 11, 2 },
    { "avg_post_us", COL_REAL, AT(post.avg_us), 11, 2 },
    { "p99_post_us", COL_REAL, AT(post.p99_us), 11, 2 },
    { "avg_xfer_us", COL_REAL, AT(xfer.avg_us), 11, 2 },
    { "p99_xfer_us", COL_REAL, AT(xfer.p99_us), 11, 2 },
    { "med_xfer_us", COL_REAL, AT(xfer.p50_us), 11, 2 },
    { "cpu_pct", COL_REAL, AT(cpu_pct), 7, 1 },
};
#undef AT
#define NCOLUMNS (sizeof(columns) / sizeof(columns[0]))

static size_t col_size(const struct column *c, const struct xb_result *res)
{
    return *(const size_t *)(const void *)((const char *)res + c->off);
}

static double col_real(const struct column *c, const struct xb_result *res)
{
    return *(const double *)(const void *)((const char *)res + c->off);
}

/* One cell as text: for the table (fixed decimals, "-" for a value that
 * could not be measured: NaN, infinite) or for --csv (REAL_DIGITS
 * significant digits, empty when unmeasured; --json writes null). */
static void cell_text(char *s, size_t n, const struct column *c,
                      const struct xb_result *res, int table)
{
    double v;

    if (c->type == COL_SIZE) {
        snprintf(s, n, "%zu", col_size(c, res));
        return;
    }
    v = col_real(c, res);
    if (!isfinite(v))
        snprintf(s, n, "%s", table ? "-" : "");
    else if (table)
        snprintf(s, n, "%.*f", c->decimals, v);
    else
        snprintf(s, n, "%.*g", REAL_DIGITS, v);
}

/* ------------------------------------------------------------------ */
/* Parameters of the run: --json "parameters" and the tail of every    */
/* --csv row, from one list.                                           */
/* ------------------------------------------------------------------ */

enum param_type { PARAM_STR, PARAM_INT, PARAM_BOOL };

struct param {
    const char *name;
    enum param_type type;
    const char *s;
    long long i;
};

#define NPARAMS 22

static const char *op_name(xfer_op_t op)
{
    return op == XFER_OP_READ ? "READ" : op == XFER_OP_WRITE ? "WRITE" : "?";
}

static const char *seg_name(enum xb_seg s)
{
    return s == XB_SEG_VRAM ? "VRAM" : "DRAM";
}

static const char *or_unknown(const char *s)
{
    return s != NULL ? s : "unknown";
}

/* ------------------------------------------------------------------ */
/* The report                                                          */
/* ------------------------------------------------------------------ */

struct backend {
    char *spec, *version;
    struct xb_result *rows;
    size_t nrows, cap;
};

struct xb_report {
    const struct xb_opts *o; /* the caller's, alive until xb_report_free */
    int ranks;
    char host[256];
    char date[32];           /* when the run began, ISO 8601 UTC */
    struct backend *be;
    size_t nbe, cap_be;
    int bar;                 /* progress bar on stderr */
    int bar_len;             /* its characters now on screen */
    long bar_done, bar_total;
};

static void params_of(const struct xb_report *r, struct param *out)
{
    const struct xb_opts *o = r->o;
    const struct param p[] = {
        { "op", PARAM_STR, op_name(o->op), 0 },
        { "scheme", PARAM_STR, or_unknown(xb_scheme_name(o->scheme)), 0 },
        { "ranks", PARAM_INT, NULL, r->ranks },
        { "threads", PARAM_INT, NULL, o->threads },
        { "start_block_size", PARAM_INT, NULL, (long long)o->start_block },
        { "max_block_size", PARAM_INT, NULL, (long long)o->max_block },
        { "start_batch_size", PARAM_INT, NULL, (long long)o->start_batch },
        { "max_batch_size", PARAM_INT, NULL, (long long)o->max_batch },
        { "num_iter", PARAM_INT, NULL, o->num_iter },
        { "warmup_iter", PARAM_INT, NULL, o->warmup_iter },
        { "large_block_iter_factor", PARAM_INT, NULL, o->large_iter_factor },
        { "total_buffer_size", PARAM_INT, NULL, (long long)xb_opts_buffer(o) },
        { "check_consistency", PARAM_BOOL, NULL, o->check != 0 },
        { "prepared", PARAM_BOOL, NULL, o->prepared != 0 },
        { "recreate", PARAM_BOOL, NULL, o->recreate != 0 },
        { "reregister", PARAM_BOOL, NULL, o->reregister != 0 },
        { "pipeline_depth", PARAM_INT, NULL, o->pipeline_depth },
        { "progress_thread", PARAM_BOOL, NULL, o->progress_thread != 0 },
        { "alloc", PARAM_STR, o->alloc_xfer ? "xfer_mem_alloc" : "malloc", 0 },
        { "hugepages", PARAM_BOOL, NULL, o->hugepages != 0 },
        { "initiator_seg_type", PARAM_STR, seg_name(o->iseg), 0 },
        { "target_seg_type", PARAM_STR, seg_name(o->tseg), 0 },
    };
    _Static_assert(sizeof(p) / sizeof(p[0]) == NPARAMS, "NPARAMS");

    memcpy(out, p, sizeof(p));
}

static void oom(const char *what)
{
    fprintf(stderr, "xfer-bench: out of memory for %s.\n", what);
}

/* ---- progress bar ---------------------------------------------------- */

static void bar_clear(struct xb_report *r)
{
    if (r->bar_len > 0) {
        fprintf(stderr, "\r%*s\r", r->bar_len, "");
        fflush(stderr);
        r->bar_len = 0;
    }
}

static void bar_draw(struct xb_report *r)
{
    char fill[BAR_WIDTH + 1], line[128];
    long done = r->bar_done, total = r->bar_total;
    int n, full;

    if (!r->bar || total <= 0)
        return;
    if (done < 0)
        done = 0;
    if (done > total)
        done = total;
    full = (int)((double)done * BAR_WIDTH / (double)total);
    memset(fill, '#', (size_t)full);
    memset(fill + full, '.', (size_t)(BAR_WIDTH - full));
    fill[BAR_WIDTH] = '\0';
    n = snprintf(line, sizeof(line), "[%s] %ld/%ld points", fill, done,
                 total);
    if (n < 0)
        return;
    if (n >= (int)sizeof(line))
        n = (int)sizeof(line) - 1;
    /* Padded over what a longer line left on the screen. */
    fprintf(stderr, "\r%s%*s", line, r->bar_len > n ? r->bar_len - n : 0,
            "");
    fflush(stderr);
    if (n > r->bar_len)
        r->bar_len = n;
}

void xb_report_progress(struct xb_report *r, long done, long total)
{
    if (r == NULL || !r->bar)
        return;
    r->bar_done = done;
    r->bar_total = total;
    bar_draw(r);
}

/* ---- the table ------------------------------------------------------- */

/* Rows come seconds apart and are piped: each goes out whole, at once,
 * with the bar off the screen while it is written. */
static void table_line(struct xb_report *r, const char *line)
{
    bar_clear(r);
    fputs(line, stdout);
    fflush(stdout);
    bar_draw(r);
}

static void table_header(char *line, size_t size)
{
    size_t len = 0;

    for (size_t i = 0; i < NCOLUMNS && len < size; i++)
        len += (size_t)snprintf(line + len, size - len, "%s%*s",
                                i ? " " : "", columns[i].width,
                                columns[i].name);
    if (len < size)
        snprintf(line + len, size - len, "\n");
}

static void table_row(char *line, size_t size, const struct xb_result *res)
{
    size_t len = 0;
    char cell[64];

    for (size_t i = 0; i < NCOLUMNS && len < size; i++) {
        cell_text(cell, sizeof(cell), &columns[i], res, 1);
        len += (size_t)snprintf(line + len, size - len, "%s%*s",
                                i ? " " : "", columns[i].width, cell);
    }
    if (len < size)
        snprintf(line + len, size - len, "\n");
}

static void print_banner(struct xb_report *r, const struct backend *b)
{
    const struct xb_opts *o = r->o;
    long small = xb_iters_for(o, 1), large = xb_iters_for(o, XB_LARGE_BLOCK);
    char iters[64] = "", depth[96] = "";

    if (o->max_block >= XB_LARGE_BLOCK && large != small)
        snprintf(iters, sizeof(iters), " (%ld for blocks >= 1M)", large);
    if (o->pipeline_depth > 1)
        snprintf(depth, sizeof(depth), ", %ld in flight per thread (batch "
                 "split among them)", o->pipeline_depth);
    bar_clear(r);
    /* Two blank lines between backends: gnuplot's `index N` is backend N. */
    if (r->nbe > 1)
        printf("\n\n");
    printf("# xfer-bench, libxfer %s: backend %s, plugin version %s\n",
           xfer_version(), b->spec, b->version);
    printf("# op %s, scheme %s, %d rank%s, %ld initiator thread%s; "
           "requests from %s%s%s%s, progress by %s\n", op_name(o->op),
           or_unknown(xb_scheme_name(o->scheme)), r->ranks,
           r->ranks == 1 ? "" : "s", o->threads, o->threads == 1 ? "" : "s",
           o->prepared ? "prepared lists" : "descriptor lists",
           o->recreate ? ", recreated every post" : "",
           o->reregister ? ", memory registered every post" : "", depth,
           o->progress_thread ? "thread" : "polling");
    printf("# %ld posts per thread and point%s, %ld warmup%s; initiator %s, "
           "target %s, %s buffers%s; GB/s = 10^9 B/s%s\n", small, iters,
           o->warmup_iter, large != small ? " (divided alike)" : "",
           seg_name(o->iseg), seg_name(o->tseg),
           o->alloc_xfer ? "xfer_mem_alloc" : "malloc",
           o->hugepages ? " on 2 MiB huge pages" : "",
           o->check ? "; --check-consistency: timings include verification"
                    : "");
}

/* ---- building the report --------------------------------------------- */

struct xb_report *xb_report_new(const struct xb_opts *o, int ranks)
{
    struct xb_report *r = calloc(1, sizeof(*r));
    struct tm tm;
    time_t now = time(NULL);

    if (r == NULL) {
        oom("the report");
        return NULL;
    }
    r->o = o;
    r->ranks = ranks;
    if (gethostname(r->host, sizeof(r->host)) != 0)
        snprintf(r->host, sizeof(r->host), "unknown");
    r->host[sizeof(r->host) - 1] = '\0';
    if (gmtime_r(&now, &tm) == NULL ||
        strftime(r->date, sizeof(r->date), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(r->date, sizeof(r->date), "unknown");
    r->bar = o->progress == 1 || (o->progress < 0 && isatty(STDERR_FILENO));
    return r;
}

int xb_report_backend(struct xb_report *r, const char *spec,
                      const char *plugin_version)
{
    char line[512];
    struct backend *b;

    if (xb_grow(&r->be, r->nbe, &r->cap_be, sizeof(*r->be), 4)) {
        oom("the report");
        return -1;
    }
    b = &r->be[r->nbe];
    memset(b, 0, sizeof(*b));
    b->spec = strdup(or_unknown(spec));
    b->version = strdup(or_unknown(plugin_version));
    if (b->spec == NULL || b->version == NULL) {
        free(b->spec);
        free(b->version);
        oom("the report");
        return -1;
    }
    r->nbe++;
    print_banner(r, b);
    table_header(line, sizeof(line));
    table_line(r, line);
    return 0;
}

int xb_report_row(struct xb_report *r, const struct xb_result *res)
{
    struct backend *b;
    char line[512];

    if (r->nbe == 0) {
        fprintf(stderr, "xfer-bench: a result came before its backend.\n");
        return -1;
    }
    b = &r->be[r->nbe - 1];
    if (xb_grow(&b->rows, b->nrows, &b->cap, sizeof(*b->rows), 32)) {
        oom("the results");
        return -1;
    }
    b->rows[b->nrows++] = *res;
    table_row(line, sizeof(line), res);
    table_line(r, line);
    return 0;
}

/* ---- files ------------------------------------------------------------- */

/* A file appears whole or not at all: written beside its name and
 * renamed over it, so a reader (or a crash) never sees half of it. */
static int write_atomic(const char *opt, const char *path,
                        int (*emit)(const struct xb_report *, FILE *),
                        const struct xb_report *r)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    int fd, err = 0;
    FILE *f;

    if (tmp == NULL) {
        oom(opt);
        return -1;
    }
    snprintf(tmp, n, "%s.%ld.tmp", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        err = errno;
    } else if ((f = fdopen(fd, "w")) == NULL) {
        err = errno;
        close(fd);
        unlink(tmp);
    } else {
        errno = 0;
        if (emit(r, f) != 0 || ferror(f))
            err = errno ? errno : EIO;
        if (fclose(f) != 0 && err == 0)
            err = errno;
        if (err == 0 && rename(tmp, path) != 0)
            err = errno;
        if (err != 0)
            unlink(tmp);
    }
    free(tmp);
    if (err != 0) {
        fprintf(stderr, "xfer-bench: cannot write the %s file %s: %s.\n", opt,
                path, err == ENOMEM ? "out of memory" : strerror(err));
        return -1;
    }
    return 0;
}

/* ---- --json ------------------------------------------------------------ */

/* Takes v; -1 when v is NULL (out of memory) or cannot be added. */
static int jset(json_t *obj, const char *key, json_t *v)
{
    return v == NULL || json_object_set_new(obj, key, v) != 0 ? -1 : 0;
}

static json_t *json_row(const struct xb_result *res)
{
    json_t *row = json_object();
    int bad = row == NULL;

    for (size_t i = 0; i < NCOLUMNS && !bad; i++) {
        const struct column *c = &columns[i];
        double v;
        json_t *j;

        if (c->type == COL_SIZE) {
            j = json_integer((json_int_t)col_size(c, res));
        } else {
            v = col_real(c, res);
            j = isfinite(v) ? json_real(v) : json_null();
        }
        bad = jset(row, c->name, j);
    }
    if (bad) {
        json_decref(row);
        return NULL;
    }
    return row;
}

static json_t *json_doc(const struct xb_report *r)
{
    json_t *doc = json_object(), *params = json_object(), *bes = json_array();
    struct param p[NPARAMS];
    int bad;

    bad = doc == NULL || params == NULL || bes == NULL;
    params_of(r, p);
    for (size_t i = 0; i < NPARAMS && !bad; i++)
        bad = jset(params, p[i].name,
                   p[i].type == PARAM_STR ? json_string(p[i].s)
                   : p[i].type == PARAM_INT ? json_integer(p[i].i)
                                            : json_boolean(p[i].i));
    for (size_t b = 0; b < r->nbe && !bad; b++) {
        const struct backend *be = &r->be[b];
        json_t *o = json_object(), *rows = json_array();

        bad = o == NULL || rows == NULL ||
              jset(o, "spec", json_string(be->spec)) ||
              jset(o, "plugin_version", json_string(be->version));
        for (size_t i = 0; i < be->nrows && !bad; i++)
            bad = json_array_append_new(rows, json_row(&be->rows[i])) != 0;
        if (bad) {
            json_decref(o);
            json_decref(rows);
            break;
        }
        if (jset(o, "results", rows) != 0) {
            json_decref(o);
            bad = 1;
            break;
        }
        bad = json_array_append_new(bes, o) != 0;
    }
    if (!bad)
        bad = jset(doc, "tool", json_string("xfer-bench")) ||
              jset(doc, "version", json_string(xfer_version())) ||
              jset(doc, "host", json_string(r->host)) ||
              jset(doc, "date", json_string(r->date)) ||
              jset(doc, "parameters", json_incref(params)) ||
              jset(doc, "backends", json_incref(bes));
    json_decref(params);
    json_decref(bes);
    if (bad) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static int emit_json(const struct xb_report *r, FILE *f)
{
    json_t *doc = json_doc(r);
    int rc;

    if (doc == NULL) {
        errno = ENOMEM;
        return -1;
    }
    rc = json_dumpf(doc, f, JSON_INDENT(2) | JSON_REAL_PRECISION(REAL_DIGITS));
    json_decref(doc);
    if (rc == 0 && fputc('\n', f) == EOF)
        rc = -1;
    return rc;
}

/* ---- --csv ------------------------------------------------------------- */

/* RFC 4180: a field with a comma, quote or line break goes in quotes,
 * its quotes doubled (backend specs hold commas). */
static void csv_field(FILE *f, const char *s, int first)
{
    if (!first)
        fputc(',', f);
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Every row stands alone: backend, results, then the whole run. */
static int emit_csv(const struct xb_report *r, FILE *f)
{
    struct param p[NPARAMS];
    char cell[64];

    params_of(r, p);
    csv_field(f, "backend", 1);
    csv_field(f, "plugin_version", 0);
    for (size_t i = 0; i < NCOLUMNS; i++)
        csv_field(f, columns[i].name, 0);
    for (size_t i = 0; i < NPARAMS; i++)
        csv_field(f, p[i].name, 0);
    csv_field(f, "host", 0);
    csv_field(f, "date", 0);
    csv_field(f, "version", 0);
    fputc('\n', f);
    for (size_t b = 0; b < r->nbe; b++) {
        const struct backend *be = &r->be[b];

        for (size_t k = 0; k < be->nrows; k++) {
            csv_field(f, be->spec, 1);
            csv_field(f, be->version, 0);
            for (size_t i = 0; i < NCOLUMNS; i++) {
                cell_text(cell, sizeof(cell), &columns[i], &be->rows[k], 0);
                csv_field(f, cell, 0);
            }
            for (size_t i = 0; i < NPARAMS; i++) {
                if (p[i].type == PARAM_STR)
                    csv_field(f, p[i].s, 0);
                else if (p[i].type == PARAM_BOOL)
                    csv_field(f, p[i].i ? "true" : "false", 0);
                else {
                    snprintf(cell, sizeof(cell), "%lld", p[i].i);
                    csv_field(f, cell, 0);
                }
            }
            csv_field(f, r->host, 0);
            csv_field(f, r->date, 0);
            csv_field(f, xfer_version(), 0);
            fputc('\n', f);
        }
    }
    return 0;
}

/* ---- --plot ------------------------------------------------------------ */

/* The first executable `prog` on PATH, malloc'd; NULL when none. */
static char *find_on_path(const char *prog)
{
    const char *path = getenv("PATH"), *p, *end;

    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path;; p = end + 1) {
        size_t dlen, n;
        struct stat st;
        char *file;

        end = strchr(p, ':');
        if (end == NULL)
            end = p + strlen(p);
        dlen = (size_t)(end - p);
        n = dlen + strlen(prog) + 3;
        file = malloc(n);
        if (file == NULL)
            return NULL;
        /* An empty entry is the current directory. */
        snprintf(file, n, "%.*s/%s", dlen ? (int)dlen : 1, dlen ? p : ".",
                 prog);
        if (stat(file, &st) == 0 && S_ISREG(st.st_mode) &&
            access(file, X_OK) == 0)
            return file;
        free(file);
        if (*end == '\0')
            return NULL;
    }
}

/* A gnuplot single-quoted string: '' is a quote, no other escape. */
static void gp_string(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s == '\n' || *s == '\r' ? ' ' : *s, f);
    }
    fputc('\'', f);
}

static int plot_batches(const struct xb_report *r)
{
    size_t first = 0;
    int have = 0;

    for (size_t b = 0; b < r->nbe; b++)
        for (size_t i = 0; i < r->be[b].nrows; i++) {
            if (have && r->be[b].rows[i].batch != first)
                return 2;
            first = r->be[b].rows[i].batch;
            have = 1;
        }
    return have;
}

/* One line per backend; with more than one batch size in the sweep,
 * one line per backend and batch size.  Data go inline as datablocks
 * $s<N>: block size, GB/s, average latency. */
static int plot_script(const struct xb_report *r, FILE *f, const char *out)
{
    const struct xb_opts *o = r->o;
    int many = plot_batches(r) > 1, nseries = 0;
    const char *what[2] = { "2", "3" };

    fprintf(f, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
               "  set terminal pngcairo noenhanced size 1400,520\n"
               "} else {\n"
               "  set terminal png noenhanced size 1400,520\n"
               "}\n"
               "set output ");
    gp_string(f, out);
    fputc('\n', f);
    for (size_t b = 0; b < r->nbe; b++) {
        const struct backend *be = &r->be[b];

        for (size_t i = 0; i < be->nrows; i++) {
            size_t batch = be->rows[i].batch;
            int seen = 0;

            for (size_t k = 0; k < i && !seen; k++)
                seen = be->rows[k].batch == batch;
            if (seen)
                continue;
            fprintf(f, "$s%d << EOD\n", nseries++);
            for (size_t k = i; k < be->nrows; k++) {
                const struct xb_result *x = &be->rows[k];

                if (x->batch != batch)
                    continue;
                fprintf(f, "%zu %.*g %.*g\n", x->block, REAL_DIGITS,
                        isfinite(x->gbps) ? x->gbps : NAN, REAL_DIGITS,
                        isfinite(x->avg_lat_us) ? x->avg_lat_us : NAN);
            }
            fprintf(f, "EOD\n");
        }
    }
    fprintf(f, "set multiplot layout 1,2 title ");
    {
        char title[512];

        snprintf(title, sizeof(title), "xfer-bench %s: op %s, scheme %s, "
                 "%d rank%s, %ld thread%s, %s, %s", xfer_version(),
                 op_name(o->op), or_unknown(xb_scheme_name(o->scheme)),
                 r->ranks, r->ranks == 1 ? "" : "s", o->threads,
                 o->threads == 1 ? "" : "s", r->host, r->date);
        gp_string(f, title);
    }
    fprintf(f, "\nset logscale x 2\nset format x '%%.0b%%BB'\n"
               "set xlabel 'block size'\nset grid\n"
               "set datafile missing 'NaN'\n");
    for (int panel = 0; panel < 2; panel++) {
        int s = 0;

        if (panel == 0)
            fprintf(f, "set title 'bandwidth'\nset key bottom right\n"
                       "set ylabel 'GB/s (10^9 B/s)'\nset yrange [0:*]\n");
        else
            fprintf(f, "set title 'average latency'\nset key top left\n"
                       "set ylabel 'latency (us)'\nset logscale y 10\n"
                       "set yrange [*:*]\n");
        fprintf(f, "plot");
        for (size_t b = 0; b < r->nbe; b++) {
            const struct backend *be = &r->be[b];

            for (size_t i = 0; i < be->nrows; i++) {
                char title[600];
                int seen = 0;

                for (size_t k = 0; k < i && !seen; k++)
                    seen = be->rows[k].batch == be->rows[i].batch;
                if (seen)
                    continue;
                if (many)
                    snprintf(title, sizeof(title), "%s, batch %zu", be->spec,
                             be->rows[i].batch);
                else
                    snprintf(title, sizeof(title), "%s", be->spec);
                fprintf(f, "%s $s%d using 1:%s with linespoints title ",
                        s ? "," : "", s, what[panel]);
                gp_string(f, title);
                s++;
            }
        }
        fputc('\n', f);
    }
    fprintf(f, "unset multiplot\nset output\n");
    return ferror(f) ? -1 : 0;
}

/* What gnuplot said went wrong, for the one sentence of a failure: its
 * first line that is neither the echoed command nor the caret under it,
 * without the "line N:" in front. */
static void gnuplot_says(FILE *f, char *s, size_t n)
{
    rewind(f);
    while (fgets(s, (int)n, f) != NULL) {
        char *p = s + strspn(s, " \t");
        int skip = 0;

        p[strcspn(p, "\r\n")] = '\0';
        if (strncmp(p, "gnuplot>", 8) == 0 || strspn(p, " \t^") == strlen(p))
            continue;
        if (sscanf(p, "line %*d:%n", &skip) >= 0 && skip > 0)
            p += skip + strspn(p + skip, " \t");
        memmove(s, p, strlen(p) + 1);
        return;
    }
    s[0] = '\0';
}

/* 0 when the PNG is in place; otherwise -1 with why in `why`. */
static int plot_run(const struct xb_report *r, const char *gnuplot,
                    char *why, size_t nwhy)
{
    const char *path = r->o->plot_path;
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n), arg0[] = "gnuplot", *argv[] = { arg0, NULL };
    FILE *script = tmpfile(), *err = tmpfile();
    posix_spawn_file_actions_t fa;
    int rc = -1, status, e;
    pid_t pid;

    if (tmp == NULL || script == NULL || err == NULL) {
        snprintf(why, nwhy, "%s", strerror(errno ? errno : ENOMEM));
        goto out;
    }
    snprintf(tmp, n, "%s.%ld.tmp", path, (long)getpid());
    if (plot_script(r, script, tmp) != 0 || fflush(script) != 0 ||
        lseek(fileno(script), 0, SEEK_SET) != 0) {
        snprintf(why, nwhy, "cannot write its script: %s", strerror(errno));
        goto out;
    }
    /* gnuplot's chatter (font warnings) stays off the table and the
     * terminal; its first line explains a failure. */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fileno(script), STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, fileno(err), STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, fileno(err), STDERR_FILENO);
    e = posix_spawn(&pid, gnuplot, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
        snprintf(why, nwhy, "cannot start %s: %s", gnuplot, strerror(e));
        goto out;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            snprintf(why, nwhy, "waitpid: %s", strerror(errno));
            goto out;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char line[200];

        gnuplot_says(err, line, sizeof(line));
        if (WIFEXITED(status))
            snprintf(why, nwhy, "gnuplot exited with status %d%s%s",
                     WEXITSTATUS(status), line[0] ? ": " : "", line);
        else
            snprintf(why, nwhy, "gnuplot was killed by signal %d",
                     WTERMSIG(status));
    } else if (rename(tmp, path) != 0) {
        snprintf(why, nwhy, "%s", strerror(errno));
    } else {
        rc = 0;
    }
out:
    if (rc != 0 && tmp != NULL)
        unlink(tmp);
    if (script != NULL)
        fclose(script);
    if (err != NULL)
        fclose(err);
    free(tmp);
    return rc;
}

/* --plot fails after --json and --csv are written; say what is. */
static const char *written(int json, int csv)
{
    if (json && csv)
        return "the table, --json and --csv are written";
    if (json)
        return "the table and --json are written";
    if (csv)
        return "the table and --csv are written";
    return "the table is written";
}

static int write_plot(const struct xb_report *r, int json_ok, int csv_ok)
{
    const char *path = r->o->plot_path;
    const char *done = written(json_ok, csv_ok);
    char why[512], *gnuplot;
    int have = 0;

    for (size_t b = 0; b < r->nbe; b++)
        have |= r->be[b].nrows > 0;
    if (!have) {
        fprintf(stderr, "xfer-bench: --plot %s: there are no results to "
                "plot; %s.\n", path, done);
        return -1;
    }
    gnuplot = find_on_path("gnuplot");
    if (gnuplot == NULL) {
        fprintf(stderr, "xfer-bench: --plot needs gnuplot, which is not "
                "installed (apt install gnuplot-nox); %s.\n", done);
        return -1;
    }
    if (plot_run(r, gnuplot, why, sizeof(why)) != 0) {
        fprintf(stderr, "xfer-bench: cannot write the --plot file %s (%s); "
                "%s.\n", path, why, done);
        free(gnuplot);
        return -1;
    }
    free(gnuplot);
    return 0;
}

/* ------------------------------------------------------------------ */

int xb_report_finish(struct xb_report *r)
{
    const struct xb_opts *o = r->o;
    int json_ok = 0, csv_ok = 0, rc = 0;

    bar_clear(r);
    r->bar = 0;
    if (o->json_path != NULL) {
        json_ok = write_atomic("--json", o->json_path, emit_json, r) == 0;
        rc |= !json_ok;
    }
    if (o->csv_path != NULL) {
        csv_ok = write_atomic("--csv", o->csv_path, emit_csv, r) == 0;
        rc |= !csv_ok;
    }
    if (o->plot_path != NULL && write_plot(r, json_ok, csv_ok) != 0)
        rc = 1;
    return rc ? -1 : 0;
}

void xb_report_free(struct xb_report *r)
{
    if (r == NULL)
        return;
    bar_clear(r);
    for (size_t b = 0; b < r->nbe; b++) {
        free(r->be[b].spec);
        free(r->be[b].version);
        free(r->be[b].rows);
    }
    free(r->be);
    free(r);
}
