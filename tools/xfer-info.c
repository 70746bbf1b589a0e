/* xfer-info.c - lists the transport plugins libxfer finds: what each can do
 * and says about this host, its parameters, and why others failed to load. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* getopt_long */
#endif

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <xfer/xfer.h>

static const struct {
    unsigned bit;
    const char *name;
} cap_names[] = {
    { XFER_CAP_READ, "READ" },     { XFER_CAP_WRITE, "WRITE" },
    { XFER_CAP_NOTIF, "NOTIF" },   { XFER_CAP_REMOTE, "REMOTE" },
    { XFER_CAP_LOCAL, "LOCAL" },   { XFER_CAP_SW_CHECK, "SW_CHECK" },
    { XFER_CAP_HW_KEYS, "HW_KEYS" },
};

static const struct {
    xfer_mem_type_t type;
    const char *name;
} mem_names[] = {
    { XFER_MEM_DRAM, "DRAM" },
    { XFER_MEM_VRAM, "VRAM" },
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: xfer-info [OPTION]... [PLUGIN]\n"
            "List the transport plugins found on the search path\n"
            "(XFER_PLUGIN_PATH, then the install directory), with their\n"
            "capabilities, memory types and parameters, and what each says\n"
            "about this host (state); then the plugins that failed to load\n"
            "and why.  With PLUGIN, show only that one.\n"
            "\n"
            "  --json      print one JSON document instead of text\n"
            "  --counters  describe the telemetry counters every agent keeps\n"
            "              (xfer_stats_get, xfer-bench --stats) and exit\n"
            "  --help      print this help and exit\n"
            "  --version   print the library version and exit\n"
            "\n"
            "Exit status: 0 if a plugin loaded (PLUGIN, when given), 1 if\n"
            "none did, 2 on bad usage.\n");
}

static int wanted(const xfer_plugin_info_t *p, const char *only)
{
    return only == NULL || (p->name != NULL && strcmp(p->name, only) == 0);
}

static const char *str_or(const char *s, const char *dflt)
{
    return s != NULL ? s : dflt;
}

/* An empty default is a real value (e.g. "derive it"), so show it. */
static const char *defval_text(const char *s)
{
    return s == NULL ? "-" : s[0] == '\0' ? "\"\"" : s;
}

/* A range as text; unbounded when min > max, as the ABI defines it. */
static void range_text(const xfer_param_info_t *p, char *buf, size_t size)
{
    if (p->min > p->max)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "[%" PRId64 ", %" PRId64 "]", p->min, p->max);
}

/* ---- text output ------------------------------------------------- */

static void text_bits(const xfer_plugin_info_t *p)
{
    size_t i;

    printf("  capabilities:");
    for (i = 0; i < COUNT_OF(cap_names); i++)
        if (p->caps & cap_names[i].bit)
            printf(" %s", cap_names[i].name);
    printf("\n  memory types:");
    for (i = 0; i < COUNT_OF(mem_names); i++)
        if (p->mem_types & XFER_MEMBIT(mem_names[i].type))
            printf(" %s", mem_names[i].name);
    printf("\n");
}

/* Columns are sized to the widest cell so the table stays readable for
 * any plugin; the doc column comes last because it is the longest. */
static void text_params(const xfer_plugin_info_t *p)
{
    int wname = 4, wtype = 4, wdef = 7, wrange = 5;
    char range[64];
    size_t i;

    if (p->nparams == 0) {
        printf("  parameters: none\n");
        return;
    }
    for (i = 0; i < p->nparams; i++) {
        const xfer_param_info_t *q = &p->params[i];
        int n;

        range_text(q, range, sizeof(range));
        if ((n = (int)strlen(str_or(q->name, ""))) > wname)
            wname = n;
        if ((n = (int)strlen(str_or(q->type, ""))) > wtype)
            wtype = n;
        if ((n = (int)strlen(defval_text(q->defval))) > wdef)
            wdef = n;
        if ((n = (int)strlen(range)) > wrange)
            wrange = n;
    }
    printf("  parameters:\n");
    printf("    %-*s  %-*s  %-*s  %-*s  %s\n", wname, "NAME", wtype, "TYPE",
           wdef, "DEFAULT", wrange, "RANGE", "DESCRIPTION");
    for (i = 0; i < p->nparams; i++) {
        const xfer_param_info_t *q = &p->params[i];

        range_text(q, range, sizeof(range));
        printf("    %-*s  %-*s  %-*s  %-*s  %s\n", wname, str_or(q->name, ""),
               wtype, str_or(q->type, ""), wdef, defval_text(q->defval),
               wrange, range, str_or(q->doc, ""));
    }
}

static void text_output(const xfer_plugin_info_t *infos, size_t count,
                        const char *only)
{
    size_t i, nfailed = 0;

    printf("libxfer %s\n\n", xfer_version());
    for (i = 0; i < count; i++) {
        const xfer_plugin_info_t *p = &infos[i];

        if (!wanted(p, only))
            continue;
        if (p->error != NULL) {
            nfailed++;
            continue;
        }
        printf("%s %s (ABI %u.%u)\n", str_or(p->name, "?"),
               str_or(p->version, "?"), p->abi_major, p->abi_minor);
        printf("  path: %s\n", str_or(p->path, "?"));
        /* What the plugin found out about this host (ABI minor 2). */
        if (p->state != NULL)
            printf("  state: %s\n", p->state);
        text_bits(p);
        text_params(p);
        printf("\n");
    }
    if (nfailed == 0)
        return;
    printf("failed to load:\n");
    for (i = 0; i < count; i++) {
        const xfer_plugin_info_t *p = &infos[i];

        if (wanted(p, only) && p->error != NULL)
            printf("  %s (%s): %s\n", str_or(p->name, "?"),
                   str_or(p->path, "?"), p->error);
    }
}

/* ---- JSON output ------------------------------------------------- */

/* RFC 8259 string escaping; bytes >= 0x80 pass through, so UTF-8 in a
 * doc line or path stays UTF-8. */
static void json_str(const char *s)
{
    const unsigned char *c;

    if (s == NULL) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (c = (const unsigned char *)s; *c != '\0'; c++) {
        switch (*c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\b': fputs("\\b", stdout); break;
        case '\f': fputs("\\f", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (*c < 0x20)
                printf("\\u%04x", *c);
            else
                putchar(*c);
        }
    }
    putchar('"');
}

static void json_plugin(const xfer_plugin_info_t *p)
{
    const char *sep = "";
    size_t i;

    fputs("    {\"name\": ", stdout);
    json_str(p->name);
    fputs(", \"path\": ", stdout);
    json_str(p->path);
    if (p->error != NULL) {
        fputs(", \"loaded\": false, \"error\": ", stdout);
        json_str(p->error);
        fputs("}", stdout);
        return;
    }
    fputs(", \"loaded\": true, \"version\": ", stdout);
    json_str(p->version);
    fputs(", \"state\": ", stdout);
    json_str(p->state);
    printf(", \"abi\": [%u, %u], \"capabilities\": [", p->abi_major,
           p->abi_minor);
    for (i = 0; i < COUNT_OF(cap_names); i++)
        if (p->caps & cap_names[i].bit) {
            printf("%s\"%s\"", sep, cap_names[i].name);
            sep = ", ";
        }
    fputs("], \"memory_types\": [", stdout);
    sep = "";
    for (i = 0; i < COUNT_OF(mem_names); i++)
        if (p->mem_types & XFER_MEMBIT(mem_names[i].type)) {
            printf("%s\"%s\"", sep, mem_names[i].name);
            sep = ", ";
        }
    fputs("],\n     \"parameters\": [", stdout);
    for (i = 0; i < p->nparams; i++) {
        const xfer_param_info_t *q = &p->params[i];

        fputs(i ? ",\n       {\"name\": " : "\n       {\"name\": ", stdout);
        json_str(q->name);
        fputs(", \"type\": ", stdout);
        json_str(q->type);
        fputs(", \"default\": ", stdout);
        json_str(q->defval);
        fputs(", \"doc\": ", stdout);
        json_str(q->doc);
        if (q->min > q->max)
            fputs(", \"min\": null, \"max\": null}", stdout);
        else
            printf(", \"min\": %" PRId64 ", \"max\": %" PRId64 "}", q->min,
                   q->max);
    }
    fputs("]}", stdout);
}

static void json_output(const xfer_plugin_info_t *infos, size_t count,
                        const char *only)
{
    size_t i;
    int first = 1;

    fputs("{\"library_version\": ", stdout);
    json_str(xfer_version());
    fputs(",\n  \"plugins\": [", stdout);
    for (i = 0; i < count; i++) {
        if (!wanted(&infos[i], only))
            continue;
        fputs(first ? "\n" : ",\n", stdout);
        json_plugin(&infos[i]);
        first = 0;
    }
    fputs("]}\n", stdout);
}

/* --counters: the library's own table of telemetry fields. */
static int counters_output(int json)
{
    size_t n = 0;
    const xfer_stats_field_t *f = xfer_stats_fields(&n);

    if (json) {
        fputs("{\"counters\": [", stdout);
        for (size_t i = 0; i < n; i++) {
            printf("%s{\"name\": ", i ? ", " : "");
            json_str(f[i].name);
            printf(", \"values\": %zu, \"help\": ", f[i].count);
            json_str(f[i].help);
            fputs("}", stdout);
        }
        fputs("]}\n", stdout);
        return 0;
    }
    printf("Telemetry counters (per backend, and per remote agent and "
           "backend;\nxfer_stats_get, xfer_stats_json, xfer-bench --stats, "
           "docs/api.md \"Telemetry\"):\n");
    for (size_t i = 0; i < n; i++) {
        char name[64];

        snprintf(name, sizeof(name), f[i].count > 1 ? "%s[%zu]" : "%s",
                 f[i].name, f[i].count);
        printf("  %-20s %s\n", name, f[i].help);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },
        { "counters", no_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    xfer_plugin_info_t *infos = NULL;
    size_t count = 0, i;
    const char *only = NULL;
    int json = 0, counters = 0, c, found = 0, loaded = 0;
    xfer_status_t st;

    opterr = 0; /* our own one-sentence message below */
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'c': counters = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("xfer-info (libxfer %s)\n", xfer_version()); return 0;
        default:
            if (optopt != 0)
                fprintf(stderr, "xfer-info: unknown option '-%c'; try "
                        "--help.\n", optopt);
            else
                fprintf(stderr, "xfer-info: unknown option '%s'; try "
                        "--help.\n", argv[optind - 1]);
            return 2;
        }
    }
    if (counters)
        return counters_output(json);
    if (argc - optind > 1) {
        fprintf(stderr, "xfer-info: at most one plugin name; try --help.\n");
        return 2;
    }
    if (optind < argc)
        only = argv[optind];

    st = xfer_plugin_list(&infos, &count);
    if (st != XFER_OK) {
        fprintf(stderr, "xfer-info: %s (%s)\n", xfer_strerror(st),
                xfer_last_error());
        return 1;
    }
    for (i = 0; i < count; i++)
        if (wanted(&infos[i], only)) {
            found++;
            loaded += infos[i].error == NULL;
        }

    if (json)
        json_output(infos, count, only);
    else if (found == 0 && only == NULL)
        printf("no plugins found (search path: XFER_PLUGIN_PATH, then the "
               "install directory)\n");
    else if (found > 0)
        text_output(infos, count, only);
    if (only != NULL && found == 0)
        fprintf(stderr, "xfer-info: no plugin named '%s'\n", only);
    xfer_plugin_list_free(infos, count);
    return loaded > 0 ? 0 : 1;
}
