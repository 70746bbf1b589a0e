/* test-bench-report.c - xfer-bench's report (bench/xfer-bench/report.c):
 * the table's columns, the --json schema, --csv read back, --plot. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench/xfer-bench/xb.h"
#include "tests/common/runner.h"

#define NCOLS 12
#define NPARAMS 22

static const char *const col_names[NCOLS] = {
    "block_size", "batch_size", "gbps", "avg_lat_us", "avg_prep_us",
    "p99_prep_us", "avg_post_us", "p99_post_us", "avg_xfer_us",
    "p99_xfer_us", "med_xfer_us", "cpu_pct",
};

/* A spec with a comma and a quote: CSV must quote it, JSON escape it. */
static const char spec_a[] = "tcp:nodelay=1,port=0,note=\"x\"";
static const char spec_b[] = "uds";
static const char version_a[] = "1.2.3", version_b[] = "0.9";

#define ROWS_A 4
#define ROWS_B 2

/* ---- scratch directory and files ---------------------------------------- */

static void rm_tree(void *arg)
{
    char *dir = arg, path[4096];
    struct dirent *e;
    DIR *d = opendir(dir);

    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
    free(dir);
}

/* An empty directory removed after the test. */
static const char *scratch(void)
{
    const char *t = getenv("TMPDIR");
    char *dir = malloc(4096);

    XT_REQUIRE(dir != NULL, "out of memory");
    snprintf(dir, 4096, "%s/xt-report-XXXXXX", t && *t ? t : "/tmp");
    XT_REQUIRE(mkdtemp(dir) != NULL, "mkdtemp %s: %s", dir, strerror(errno));
    xt_defer_late(rm_tree, dir);
    return dir;
}

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);

    XT_REQUIRE(p != NULL, "out of memory");
    snprintf(p, n, "%s/%s", dir, name);
    xt_defer_late(free, p);
    return p;
}

/* The whole file, NUL-terminated, freed after the test; NULL if absent. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n + 1);
    XT_REQUIRE(buf != NULL, "out of memory");
    XT_REQUIRE(fread(buf, 1, (size_t)n, f) == (size_t)n, "short read of %s",
               path);
    buf[n] = '\0';
    fclose(f);
    xt_defer_late(free, buf);
    if (len != NULL)
        *len = (size_t)n;
    return buf;
}

/* No temporary file of an atomic write is left beside the results. */
static void check_no_tmp(const char *dir)
{
    struct dirent *e;
    DIR *d = opendir(dir);

    XT_REQUIRE(d != NULL, "opendir %s", dir);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);

        XT_CHECK(n < 4 || strcmp(e->d_name + n - 4, ".tmp") != 0,
                 "temporary file %s left in %s", e->d_name, dir);
    }
    closedir(d);
}

/* ---- stdout and stderr of the report ------------------------------------ */

/* The texts of one captured report; the redirection itself is static,
 * since a failed test undoes it after its frame is gone. */
struct capture {
    char *path[2];
    char *text[2]; /* stdout, stderr */
};

static struct {
    int active, saved[2];
} redirect;

static void capture_stop(void *arg)
{
    (void)arg;
    if (!redirect.active)
        return;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        dup2(redirect.saved[i], i + 1);
        close(redirect.saved[i]);
    }
    redirect.active = 0;
}

/* From now to capture_end, fds 1 and 2 go to files in dir. */
static void capture_begin(struct capture *c, const char *dir)
{
    static const char *const names[2] = {"stdout.txt", "stderr.txt"};

    memset(c, 0, sizeof(*c));
    XT_REQUIRE(!redirect.active, "capture_begin twice");
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        c->path[i] = path_in(dir, names[i]);
        redirect.saved[i] = open(c->path[i], O_WRONLY | O_CREAT | O_TRUNC,
                                 0600);
        XT_REQUIRE(redirect.saved[i] >= 0, "open %s: %s", c->path[i],
                   strerror(errno));
    }
    xt_defer(capture_stop, NULL);
    for (int i = 0; i < 2; i++) {
        int fd = redirect.saved[i];

        redirect.saved[i] = dup(i + 1);
        dup2(fd, i + 1);
        close(fd);
    }
    redirect.active = 1;
}

static void capture_end(struct capture *c)
{
    capture_stop(NULL);
    for (int i = 0; i < 2; i++) {
        c->text[i] = slurp(c->path[i], NULL);
        XT_REQUIRE(c->text[i] != NULL, "cannot read %s", c->path[i]);
        unlink(c->path[i]);
    }
}

/* ---- a run to report ---------------------------------------------------- */

static struct xb_opts opts_for(const char *dir)
{
    struct xb_opts o;

    xb_opts_defaults(&o);
    o.backends[0] = spec_a;
    o.backends[1] = spec_b;
    o.nbackends = 2;
    o.op = XFER_OP_READ;
    o.start_block = 4096;
    o.max_block = 4096 << 1;
    o.start_batch = 1;
    o.max_batch = 2;
    o.num_iter = 500;
    o.warmup_iter = 7;
    o.large_iter_factor = 4;
    o.threads = 2;
    o.total_buffer = 123456789;
    o.check = 1;
    o.prepared = 1;
    o.recreate = 0;
    o.progress_thread = 1;
    o.alloc_xfer = 1;
    o.hugepages = 1;
    o.scheme = XB_MANY_TO_ONE;
    o.progress = 0;
    if (dir != NULL) {
        o.json_path = path_in(dir, "out.json");
        o.csv_path = path_in(dir, "out.csv");
    }
    return o;
}

/* Row k of a backend: distinct values in every field; the last row of
 * the first backend has what could not be measured (NaN, infinity). */
static struct xb_result result_for(int be, int k)
{
    struct xb_result r;
    double base = 100.0 * be + k;

    memset(&r, 0, sizeof(r));
    r.block = (size_t)4096 << (k / 2);
    r.batch = (size_t)1 + (size_t)(k % 2);
    r.iters = 250;
    r.threads = 2;
    r.bytes = (uint64_t)r.block * r.batch * 500;
    r.seconds = 0.5;
    r.gbps = 1.25 + base / 8;
    r.avg_lat_us = 10.5 + base;
    r.prep.avg_us = 0.1 + base;
    r.prep.p99_us = 0.3 + base;
    r.post.avg_us = 1.0 / 3.0 + base;
    r.post.p99_us = 2.75 + base;
    r.xfer.avg_us = 9.125 + base;
    r.xfer.p99_us = 20.5 + base;
    r.xfer.p50_us = 7.25 + base;
    r.cpu_pct = 99.5 - base / 4;
    if (be == 0 && k == ROWS_A - 1) {
        r.prep.avg_us = NAN;
        r.prep.p99_us = INFINITY;
    }
    return r;
}

static double field_of(const struct xb_result *r, int col)
{
    const double v[NCOLS] = {
        (double)r->block, (double)r->batch, r->gbps, r->avg_lat_us,
        r->prep.avg_us, r->prep.p99_us, r->post.avg_us, r->post.p99_us,
        r->xfer.avg_us, r->xfer.p99_us, r->xfer.p50_us, r->cpu_pct,
    };
    return v[col];
}

/* Equal to 15 significant digits, what the files keep. */
static int same(double a, double b)
{
    return a == b || fabs(a - b) <= 1e-13 * fabs(b);
}

/* Both backends, rows as a run gives them; returns finish's result. */
static int feed(const struct xb_opts *o, struct xb_report **out)
{
    struct xb_report *r = xb_report_new(o, 3);
    int rc = 0;

    XT_REQUIRE(r != NULL, "xb_report_new failed");
    *out = r;
    rc |= xb_report_backend(r, spec_a, version_a);
    for (int k = 0; k < ROWS_A; k++) {
        struct xb_result res = result_for(0, k);

        xb_report_progress(r, k, ROWS_A + ROWS_B);
        rc |= xb_report_row(r, &res);
    }
    rc |= xb_report_backend(r, spec_b, version_b);
    for (int k = 0; k < ROWS_B; k++) {
        struct xb_result res = result_for(1, k);

        xb_report_progress(r, ROWS_A + k, ROWS_A + ROWS_B);
        rc |= xb_report_row(r, &res);
    }
    xb_report_progress(r, ROWS_A + ROWS_B, ROWS_A + ROWS_B);
    XT_CHECK(rc == 0, "xb_report_backend or xb_report_row failed");
    return xb_report_finish(r);
}

/* Run a whole report with stdout and stderr captured. */
static int run_report(const struct xb_opts *o, const char *dir,
                      struct capture *c)
{
    struct xb_report *r = NULL;
    int rc;

    capture_begin(c, dir);
    rc = feed(o, &r);
    xb_report_free(r);
    capture_end(c);
    return rc;
}

/* ---- the table ---------------------------------------------------------- */

static void test_table(void)
{
    const char *dir = scratch();
    struct xb_opts o = opts_for(NULL);
    struct capture c;
    char *save = NULL, *line;
    int headers = 0, rows = 0, banner = 0;

    XT_CHECK(run_report(&o, dir, &c) == 0, "finish failed with no files");
    XT_CHECK(c.text[1][0] == '\0', "stderr without --progress: \"%s\"",
             c.text[1]);
    XT_CHECK(strstr(c.text[0], spec_a) && strstr(c.text[0], version_a) &&
                 strstr(c.text[0], spec_b) && strstr(c.text[0], version_b),
             "the banners do not name both backends and their versions");
    XT_CHECK(strstr(c.text[0], "op READ") && strstr(c.text[0], "many-to-one")
                 && strstr(c.text[0], "3 ranks") &&
                 strstr(c.text[0], "2 initiator threads") &&
                 strstr(c.text[0], "prepared lists") &&
                 strstr(c.text[0], "progress by thread") &&
                 strstr(c.text[0], "on 2 MiB huge pages") &&
                 strstr(c.text[0], "250 posts per thread") &&
                 strstr(c.text[0], "GB/s = 10^9 B/s") &&
                 strstr(c.text[0], "timings include verification"),
             "the banner lacks a parameter:\n%s", c.text[0]);
    for (line = strtok_r(c.text[0], "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *fields[NCOLS + 1], *fs = NULL, *f;
        int n = 0;

        if (line[0] == '#') {
            XT_CHECK(line[1] == ' ', "comment without a space: %s", line);
            banner++;
            continue;
        }
        XT_CHECK(banner > 0, "a table line before any banner: %s", line);
        for (f = strtok_r(line, " ", &fs); f != NULL && n <= NCOLS;
             f = strtok_r(NULL, " ", &fs))
            fields[n++] = f;
        XT_REQUIRE(n == NCOLS, "%d columns in a table line, want %d", n,
                   NCOLS);
        if (strcmp(fields[0], col_names[0]) == 0) {
            for (int i = 0; i < NCOLS; i++)
                XT_CHECK(strcmp(fields[i], col_names[i]) == 0,
                         "header column %d is %s, want %s", i, fields[i],
                         col_names[i]);
            headers++;
            continue;
        }
        {
            int be = rows < ROWS_A ? 0 : 1, k = be ? rows - ROWS_A : rows;
            struct xb_result res = result_for(be, k);

            for (int i = 0; i < NCOLS; i++) {
                double want = field_of(&res, i);

                if (!isfinite(want))
                    XT_CHECK(strcmp(fields[i], "-") == 0, "row %d column "
                             "%s is %s, want -", rows, col_names[i],
                             fields[i]);
                else
                    XT_CHECK(fabs(strtod(fields[i], NULL) - want) <= 0.051,
                             "row %d column %s is %s, want %g", rows,
                             col_names[i], fields[i], want);
            }
        }
        rows++;
    }
    XT_CHECK(headers == 2, "%d header lines, want one per backend", headers);
    XT_CHECK(rows == ROWS_A + ROWS_B, "%d rows, want %d", rows,
             ROWS_A + ROWS_B);
}

/* Aligned: every line of a table has its columns end at the same place. */
static void test_table_aligned(void)
{
    const char *dir = scratch();
    struct xb_opts o = opts_for(NULL);
    struct capture c;
    char *save = NULL, *line;
    size_t width = 0;

    XT_CHECK(run_report(&o, dir, &c) == 0, "finish failed");
    for (line = strtok_r(c.text[0], "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#')
            continue;
        if (width == 0)
            width = strlen(line);
        XT_CHECK(strlen(line) == width, "line of %zu characters, the header "
                 "has %zu: %s", strlen(line), width, line);
    }
}

static void test_progress(void)
{
    const char *dir = scratch();
    struct xb_opts o = opts_for(NULL);
    struct capture c;
    const char *prev;
    size_t n;

    o.progress = 1;
    XT_CHECK(run_report(&o, dir, &c) == 0, "finish failed");
    XT_CHECK(strchr(c.text[0], '\r') == NULL && !strstr(c.text[0], "points"),
             "the progress bar went to stdout");
    XT_CHECK(strstr(c.text[1], "\r[") != NULL &&
                 strstr(c.text[1], "] 2/6 points") != NULL &&
                 strstr(c.text[1], "] 6/6 points") != NULL,
             "no progress bar on stderr: \"%s\"", c.text[1]);
    XT_CHECK(strchr(c.text[1], '\n') == NULL, "the bar is not one line");
    /* Cleared: it ends "\r", blanks over the bar, "\r". */
    n = strlen(c.text[1]);
    XT_REQUIRE(n > 2 && c.text[1][n - 1] == '\r', "the bar is not cleared");
    c.text[1][n - 1] = '\0';
    prev = strrchr(c.text[1], '\r');
    XT_CHECK(prev != NULL && prev[1] == ' ' &&
                 strspn(prev + 1, " ") == strlen(prev + 1),
             "the bar is not blanked at the end");
}

/* ---- --json ------------------------------------------------------------- */

static json_t *key(json_t *obj, const char *k, json_type type)
{
    json_t *v = json_object_get(obj, k);

    XT_CHECK(v != NULL, "key \"%s\" missing", k);
    XT_CHECK(v == NULL || json_typeof(v) == type, "key \"%s\" has JSON type "
             "%d, want %d", k, v ? (int)json_typeof(v) : -1, (int)type);
    return v != NULL && json_typeof(v) == type ? v : NULL;
}

static void check_str(json_t *obj, const char *k, const char *want)
{
    json_t *v = key(obj, k, JSON_STRING);

    XT_CHECK(v == NULL || strcmp(json_string_value(v), want) == 0,
             "\"%s\" is \"%s\", want \"%s\"", k, v ? json_string_value(v) : "",
             want);
}

static void check_int(json_t *obj, const char *k, long long want)
{
    json_t *v = key(obj, k, JSON_INTEGER);

    XT_CHECK(v == NULL || json_integer_value(v) == want,
             "\"%s\" is %lld, want %lld",
             k, v ? (long long)json_integer_value(v) : 0LL, want);
}

static void check_bool(json_t *obj, const char *k, int want)
{
    json_t *v = json_object_get(obj, k);

    XT_CHECK(v != NULL && json_is_boolean(v), "\"%s\" is not a boolean", k);
    XT_CHECK(v == NULL || !json_is_boolean(v) || json_is_true(v) == !!want,
             "\"%s\" is %s, want %s", k, json_is_true(v) ? "true" : "false",
             want ? "true" : "false");
}

static void json_free(void *arg)
{
    json_decref(arg);
}

static void check_json_results(json_t *results, int be, int nrows)
{
    XT_REQUIRE(json_array_size(results) == (size_t)nrows,
               "backend %d has %zu results, want %d", be,
               json_array_size(results), nrows);
    for (int k = 0; k < nrows; k++) {
        json_t *row = json_array_get(results, (size_t)k);
        struct xb_result res = result_for(be, k);

        XT_REQUIRE(json_is_object(row), "result %d is not an object", k);
        XT_CHECK(json_object_size(row) == NCOLS, "result %d has %zu keys, "
                 "want %d", k, json_object_size(row), NCOLS);
        check_int(row, "block_size", (long long)res.block);
        check_int(row, "batch_size", (long long)res.batch);
        for (int i = 2; i < NCOLS; i++) {
            double want = field_of(&res, i);
            json_t *v;

            if (!isfinite(want)) {
                key(row, col_names[i], JSON_NULL);
                continue;
            }
            v = key(row, col_names[i], JSON_REAL);
            XT_CHECK(v == NULL || same(json_real_value(v), want),
                     "backend %d result %d \"%s\" is %.17g, want %.17g", be,
                     k, col_names[i], v ? json_real_value(v) : 0.0, want);
        }
    }
}

static void test_json_schema(void)
{
    static const char *const top[] = {"tool", "version", "host", "date",
                                      "parameters", "backends"};
    const char *dir = scratch();
    struct xb_opts o = opts_for(dir);
    struct capture c;
    json_error_t jerr;
    json_t *doc, *params, *bes, *v;
    char host[256] = "";
    struct tm tm;
    const char *end;

    XT_REQUIRE(run_report(&o, dir, &c) == 0, "finish failed: %s", c.text[1]);
    check_no_tmp(dir);
    doc = json_load_file(o.json_path, JSON_REJECT_DUPLICATES, &jerr);
    XT_REQUIRE(doc != NULL, "%s does not parse: %s (line %d)", o.json_path,
               jerr.text, jerr.line);
    xt_defer_late(json_free, doc);
    XT_REQUIRE(json_is_object(doc), "the document is not an object");

    XT_CHECK(json_object_size(doc) == 6, "%zu top-level keys, want 6",
             json_object_size(doc));
    for (size_t i = 0; i < 6; i++)
        XT_CHECK(json_object_get(doc, top[i]) != NULL, "no \"%s\"", top[i]);
    check_str(doc, "tool", "xfer-bench");
    check_str(doc, "version", xfer_version());
    gethostname(host, sizeof(host) - 1);
    check_str(doc, "host", host);
    v = key(doc, "date", JSON_STRING);
    if (v != NULL) {
        memset(&tm, 0, sizeof(tm));
        end = strptime(json_string_value(v), "%Y-%m-%dT%H:%M:%SZ", &tm);
        XT_CHECK(end != NULL && *end == '\0' &&
                     strlen(json_string_value(v)) == 20,
                 "date \"%s\" is not ISO 8601 UTC", json_string_value(v));
    }

    params = key(doc, "parameters", JSON_OBJECT);
    XT_REQUIRE(params != NULL, "no parameters object");
    XT_CHECK(json_object_size(params) == NPARAMS, "%zu parameters, want %d",
             json_object_size(params), NPARAMS);
    check_str(params, "op", "READ");
    check_str(params, "scheme", xb_scheme_name(XB_MANY_TO_ONE));
    check_int(params, "ranks", 3);
    check_int(params, "threads", 2);
    check_int(params, "start_block_size", 4096);
    check_int(params, "max_block_size", 8192);
    check_int(params, "start_batch_size", 1);
    check_int(params, "max_batch_size", 2);
    check_int(params, "num_iter", 500);
    check_int(params, "warmup_iter", 7);
    check_int(params, "large_block_iter_factor", 4);
    check_int(params, "total_buffer_size", 123456789);
    check_bool(params, "check_consistency", 1);
    check_bool(params, "prepared", 1);
    check_bool(params, "recreate", 0);
    check_bool(params, "reregister", 0);
    check_int(params, "pipeline_depth", 1);
    check_bool(params, "progress_thread", 1);
    check_str(params, "alloc", "xfer_mem_alloc");
    check_bool(params, "hugepages", 1);
    check_str(params, "initiator_seg_type", "DRAM");
    check_str(params, "target_seg_type", "DRAM");

    bes = key(doc, "backends", JSON_ARRAY);
    XT_REQUIRE(bes != NULL && json_array_size(bes) == 2,
               "want 2 backends");
    for (int be = 0; be < 2; be++) {
        json_t *b = json_array_get(bes, (size_t)be), *results;

        XT_REQUIRE(json_is_object(b), "backend %d is not an object", be);
        XT_CHECK(json_object_size(b) == 3, "backend %d has %zu keys, want 3",
                 be, json_object_size(b));
        check_str(b, "spec", be ? spec_b : spec_a);
        check_str(b, "plugin_version", be ? version_b : version_a);
        results = key(b, "results", JSON_ARRAY);
        if (results != NULL)
            check_json_results(results, be, be ? ROWS_B : ROWS_A);
    }
}

static void test_json_bad_path(void)
{
    const char *dir = scratch();
    struct xb_opts o = opts_for(dir);
    struct capture c;
    char *nl;

    o.json_path = path_in(dir, "no/such/dir/out.json");
    XT_CHECK(run_report(&o, dir, &c) == -1, "finish did not fail");
    XT_CHECK(strstr(c.text[1], "--json") != NULL &&
                 strstr(c.text[1], o.json_path) != NULL,
             "the error does not name --json and %s: \"%s\"", o.json_path,
             c.text[1]);
    nl = strchr(c.text[1], '\n');
    XT_CHECK(nl != NULL && nl[1] == '\0' && nl[-1] == '.',
             "not one sentence on one line: \"%s\"", c.text[1]);
    /* The other files do not suffer for it. */
    XT_CHECK(slurp(o.csv_path, NULL) != NULL, "--csv was not written");
    check_no_tmp(dir);
}

/* ---- --csv: an RFC 4180 reader ------------------------------------------ */

#define CSV_ROWS 16
#define CSV_COLS 64

struct csv {
    size_t nrows, ncols[CSV_ROWS];
    char *f[CSV_ROWS][CSV_COLS];
};

static void csv_free(void *arg)
{
    struct csv *c = arg;

    for (size_t i = 0; i < CSV_ROWS; i++)
        for (size_t j = 0; j < CSV_COLS; j++)
            free(c->f[i][j]);
    free(c);
}

/* Fields quoted or not, quotes doubled inside quotes, rows ending in
 * LF or CRLF; NULL on anything RFC 4180 does not allow. */
static struct csv *csv_parse(const char *s)
{
    struct csv *c = calloc(1, sizeof(*c));
    size_t cap = strlen(s) + 1;

    XT_REQUIRE(c != NULL, "out of memory");
    xt_defer_late(csv_free, c);
    while (*s != '\0') {
        size_t row = c->nrows++;

        if (row == CSV_ROWS)
            return NULL;
        for (;;) {
            char *out = malloc(cap);
            size_t n = 0, col = c->ncols[row]++;

            XT_REQUIRE(out != NULL, "out of memory");
            if (col == CSV_COLS) {
                free(out);
                return NULL;
            }
            c->f[row][col] = out;
            if (*s == '"') {
                for (s++;; s++) {
                    if (*s == '\0')
                        return NULL;
                    if (*s == '"' && s[1] != '"')
                        break;
                    if (*s == '"')
                        s++;
                    out[n++] = *s;
                }
                s++;
            } else {
                while (*s != '\0' && *s != ',' && *s != '\r' && *s != '\n') {
                    if (*s == '"')
                        return NULL;
                    out[n++] = *s++;
                }
            }
            out[n] = '\0';
            if (*s == ',') {
                s++;
                continue;
            }
            if (*s == '\r' && s[1] == '\n')
                s++;
            if (*s == '\n')
                s++;
            else if (*s != '\0')
                return NULL;
            break;
        }
    }
    return c;
}

static int csv_col(const struct csv *c, const char *name)
{
    for (size_t i = 0; i < c->ncols[0]; i++)
        if (strcmp(c->f[0][i], name) == 0)
            return (int)i;
    return -1;
}

static void test_csv(void)
{
    static const char *const params[NPARAMS] = {
        "op", "scheme", "ranks", "threads", "start_block_size",
        "max_block_size", "start_batch_size", "max_batch_size", "num_iter",
        "warmup_iter", "large_block_iter_factor", "total_buffer_size",
        "check_consistency", "prepared", "recreate", "reregister",
        "pipeline_depth", "progress_thread", "alloc", "hugepages",
        "initiator_seg_type", "target_seg_type",
    };
    const char *const param_values[NPARAMS] = {
        "READ", xb_scheme_name(XB_MANY_TO_ONE), "3", "2", "4096", "8192",
        "1", "2", "500", "7", "4", "123456789", "true", "true", "false",
        "false", "1", "true", "xfer_mem_alloc", "true", "DRAM", "DRAM",
    };
    const char *dir = scratch();
    struct xb_opts o = opts_for(dir);
    struct capture c;
    struct csv *csv;
    char *text, host[256] = "";
    size_t ncols = 2 + NCOLS + NPARAMS + 3;
    int col;

    XT_REQUIRE(run_report(&o, dir, &c) == 0, "finish failed: %s", c.text[1]);
    text = slurp(o.csv_path, NULL);
    XT_REQUIRE(text != NULL, "%s was not written", o.csv_path);
    XT_CHECK(strstr(text, "\"tcp:nodelay=1,port=0,note=\"\"x\"\"\"") != NULL,
             "the spec with a comma and a quote is not quoted per RFC 4180");
    csv = csv_parse(text);
    XT_REQUIRE(csv != NULL, "%s is not RFC 4180 CSV:\n%s", o.csv_path, text);
    XT_REQUIRE(csv->nrows == 1 + ROWS_A + ROWS_B, "%zu CSV rows, want %d",
               csv->nrows, 1 + ROWS_A + ROWS_B);
    for (size_t i = 0; i < csv->nrows; i++)
        XT_REQUIRE(csv->ncols[i] == ncols, "CSV row %zu has %zu fields, want "
                   "%zu", i, csv->ncols[i], ncols);

    /* The header: backend, the table's columns, the run, where and when. */
    XT_CHECK(strcmp(csv->f[0][0], "backend") == 0 &&
                 strcmp(csv->f[0][1], "plugin_version") == 0,
             "the CSV does not start with backend,plugin_version");
    for (int i = 0; i < NCOLS; i++)
        XT_CHECK(strcmp(csv->f[0][2 + i], col_names[i]) == 0,
                 "CSV column %d is %s, want %s", 2 + i, csv->f[0][2 + i],
                 col_names[i]);
    for (int i = 0; i < NPARAMS; i++)
        XT_CHECK(csv_col(csv, params[i]) >= 2 + NCOLS, "no CSV column %s "
                 "after the results", params[i]);
    XT_CHECK(csv_col(csv, "host") >= 0 && csv_col(csv, "date") >= 0 &&
                 csv_col(csv, "version") >= 0,
             "no host, date or version column");

    gethostname(host, sizeof(host) - 1);
    for (size_t row = 1; row < csv->nrows; row++) {
        int be = row <= ROWS_A ? 0 : 1;
        int k = be ? (int)row - 1 - ROWS_A : (int)row - 1;
        struct xb_result res = result_for(be, k);
        char *const *f = csv->f[row];

        XT_CHECK(strcmp(f[0], be ? spec_b : spec_a) == 0,
                 "row %zu backend is %s", row, f[0]);
        XT_CHECK(strcmp(f[1], be ? version_b : version_a) == 0,
                 "row %zu plugin_version is %s", row, f[1]);
        for (int i = 0; i < NCOLS; i++) {
            double want = field_of(&res, i);
            const char *got = f[2 + i];

            if (!isfinite(want))
                XT_CHECK(got[0] == '\0', "row %zu %s is \"%s\", want empty",
                         row, col_names[i], got);
            else
                XT_CHECK(got[0] != '\0' && same(strtod(got, NULL), want),
                         "row %zu %s is \"%s\", want %.17g", row,
                         col_names[i], got, want);
        }
        for (int i = 0; i < NPARAMS; i++) {
            col = csv_col(csv, params[i]);
            XT_CHECK(col < 0 || strcmp(f[col], param_values[i]) == 0,
                     "row %zu %s is \"%s\", want \"%s\"", row, params[i],
                     col < 0 ? "" : f[col], param_values[i]);
        }
        col = csv_col(csv, "host");
        XT_CHECK(col < 0 || strcmp(f[col], host) == 0, "host is %s",
                 col < 0 ? "" : f[col]);
        col = csv_col(csv, "version");
        XT_CHECK(col < 0 || strcmp(f[col], xfer_version()) == 0,
                 "version is %s", col < 0 ? "" : f[col]);
        col = csv_col(csv, "date");
        XT_CHECK(col < 0 || strlen(f[col]) == 20, "date is %s",
                 col < 0 ? "" : f[col]);
    }
}

/* ---- --plot ------------------------------------------------------------- */

static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n',
                                         0x1a, '\n'};

/* Needs gnuplot: main leaves it out, and the program SKIPs, without. */
static void test_plot_png(void)
{
    const char *dir = scratch();
    struct xb_opts o = opts_for(dir);
    struct capture c;
    size_t len = 0;
    char *png;

    o.plot_path = path_in(dir, "it's a plot.png");
    XT_REQUIRE(run_report(&o, dir, &c) == 0, "finish failed: %s", c.text[1]);
    XT_CHECK(c.text[1][0] == '\0', "stderr of a good --plot: \"%s\"",
             c.text[1]);
    png = slurp(o.plot_path, &len);
    XT_REQUIRE(png != NULL, "%s was not written", o.plot_path);
    XT_CHECK(len > 1000 && memcmp(png, png_sig, 8) == 0,
             "%s (%zu bytes) is not a PNG", o.plot_path, len);
    check_no_tmp(dir);
}

static void restore_path(void *arg)
{
    setenv("PATH", arg, 1);
    free(arg);
}

/* Without gnuplot on PATH: the sentence, -1, and --json and --csv. */
static void test_plot_no_gnuplot(void)
{
    static const char want[] = "xfer-bench: --plot needs gnuplot, which is "
        "not installed (apt install gnuplot-nox); the table, --json and "
        "--csv are written.\n";
    const char *dir = scratch(), *path = getenv("PATH");
    struct xb_opts o = opts_for(dir);
    struct capture c;
    char *old = strdup(path ? path : "/usr/bin:/bin");
    int rc;

    XT_REQUIRE(old != NULL, "out of memory");
    xt_defer(restore_path, old);
    setenv("PATH", dir, 1); /* empty: no gnuplot there */
    o.plot_path = path_in(dir, "plot.png");
    rc = run_report(&o, dir, &c);
    XT_CHECK(rc == -1, "finish returned %d, want -1", rc);
    XT_CHECK(strcmp(c.text[1], want) == 0, "stderr is \"%s\", want \"%s\"",
             c.text[1], want);
    XT_CHECK(slurp(o.json_path, NULL) != NULL, "--json was not written");
    XT_CHECK(slurp(o.csv_path, NULL) != NULL, "--csv was not written");
    XT_CHECK(slurp(o.plot_path, NULL) == NULL, "a plot appeared");
}

/* A plot that cannot be written: one sentence naming --plot and the file. */
static void test_plot_bad_path(void)
{
    const char *dir = scratch();
    struct xb_opts o = opts_for(dir);
    struct capture c;

    o.plot_path = path_in(dir, "no/such/dir/plot.png");
    XT_CHECK(run_report(&o, dir, &c) == -1, "finish did not fail");
    XT_CHECK(strstr(c.text[1], "--plot") != NULL &&
                 strstr(c.text[1], o.plot_path) != NULL &&
                 strchr(c.text[1], '\n') == c.text[1] + strlen(c.text[1]) - 1,
             "not one line naming --plot and %s: \"%s\"", o.plot_path,
             c.text[1]);
}

static const xt_test_t table_tests[] = {
    XT_TEST(test_table),
    XT_TEST(test_table_aligned),
    XT_TEST(test_progress),
    XT_END,
};

static const xt_test_t file_tests[] = {
    XT_TEST(test_json_schema),
    XT_TEST(test_json_bad_path),
    XT_TEST(test_csv),
    XT_TEST(test_plot_no_gnuplot),
    XT_END,
};

static const xt_test_t gnuplot_tests[] = {
    XT_TEST(test_plot_png),
    XT_TEST(test_plot_bad_path),
    XT_END,
};

static int gnuplot_on_path(void)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : ""), *save = NULL, *dir, file[4096];
    int found = 0;

    for (dir = strtok_r(copy, ":", &save); dir != NULL && !found;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(file, sizeof(file), "%s/gnuplot", dir);
        found = access(file, X_OK) == 0;
    }
    free(copy);
    return found;
}

int main(void)
{
    const xt_suite_t suites[] = {
        { "table", table_tests },
        { "files", file_tests },
        { "gnuplot", gnuplot_tests },
    };
    const char *why = NULL;
    int rc;

    /* The tests that need gnuplot are not run, nor counted as passed,
     * without it: the program then ends as a SKIP once the rest pass. */
    if (!gnuplot_on_path())
        why = "gnuplot is not on PATH (apt install gnuplot-nox)";
    rc = xt_run("test-bench-report", suites, why == NULL ? 3 : 2);
    if (rc == 0 && why != NULL) {
        printf("SKIP: %s: the --plot PNG tests did not run\n", why);
        return 77;
    }
    return rc;
}
