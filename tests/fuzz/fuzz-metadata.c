/* fuzz-metadata.c - libFuzzer harness for the metadata parser: blobs loaded
 * with xfer_md_load into an agent with tcp and uds backends, which unpack them. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xfer/xfer.h>

#include "tests/fuzz/fuzz-common.h"

/* An input is up to MAX_BLOBS blobs separated by SEP, loaded in order
 * (a later one may merge into or replace an earlier one).  SEP cannot
 * occur inside a valid JSON text: a raw newline ends no string and '#'
 * is no JSON token. */
#define SEP "\n#\n"
#define MAX_BLOBS 4
/* Stands for the base64 of this agent's own uds connection info, which
 * holds the host's boot id and name (uds refuses any other host): the
 * way past uds's first check to the rest of its parser. */
#define UDS_TOKEN "@UDS_CONN@"

static xfer_agent_t *agent;
static char *uds_conn;             /* NULL: no uds backend */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xfer_agent_opts_t o;

    fz_setup();
    xfer_agent_opts_init(&o);
    o.name = "fz-md";
    o.progress_thread = 0;
    fz_ok(xfer_agent_create(&o, &agent), "agent");
    /* connection info and public parts of "tcp" go to its peer_add and
     * rmem_unpack; nothing connects before a post. */
    fz_ok(xfer_backend_add(agent, "tcp", NULL), "tcp backend");
    if (xfer_backend_add(agent, "uds", NULL) == XFER_OK) {
        char *blob = NULL;
        json_t *root, *b;
        size_t i;

        fz_ok(xfer_md_get(agent, XFER_MD_CONN, NULL, 0, &blob, NULL),
              "xfer_md_get");
        root = json_loads(blob, 0, NULL);
        json_array_foreach(json_object_get(root, "backends"), i, b)
            if (strcmp(json_string_value(json_object_get(b, "plugin")),
                       "uds") == 0)
                uds_conn =
                    strdup(json_string_value(json_object_get(b, "conn")));
        json_decref(root);
        xfer_free(blob);
    } else {
        fprintf(stderr, "fuzz-metadata: no uds backend (%s); %s stays "
                "as it is\n", xfer_last_error(), UDS_TOKEN);
    }
    return 0;
}

/* The blob, with UDS_TOKEN replaced; malloc'd, of exactly *len bytes. */
static uint8_t *blob_copy(const uint8_t *p, size_t *len)
{
    size_t tl = strlen(UDS_TOKEN), vl = uds_conn ? strlen(uds_conn) : 0;
    size_t n = 0, cap = *len + 1;
    uint8_t *out;

    for (size_t i = 0; uds_conn && i + tl <= *len; i++)
        if (memcmp(p + i, UDS_TOKEN, tl) == 0)
            cap += vl;
    out = malloc(cap);
    if (out == NULL)
        fz_die("out of memory");
    for (size_t i = 0; i < *len;) {
        if (uds_conn && i + tl <= *len && memcmp(p + i, UDS_TOKEN, tl) == 0) {
            memcpy(out + n, uds_conn, vl);
            n += vl;
            i += tl;
        } else {
            out[n++] = p[i++];
        }
    }
    *len = n;
    return out;
}

/* What a loaded agent says about itself must hold together. */
static void check_loaded(const char *name)
{
    xfer_region_info_t r[64];
    size_t count = 0, n;
    xfer_status_t st;

    st = xfer_md_regions(agent, name, r, 64, &count);
    if (st != XFER_OK)
        fz_die("agent '%s' loaded, then xfer_md_regions: %s (%s)", name,
               xfer_strerror(st), xfer_last_error());
    n = count < 64 ? count : 64;
    for (size_t i = 0; i < n; i++) {
        if (r[i].len == 0 || r[i].addr + r[i].len < r[i].addr)
            fz_die("agent '%s': region %zu [0x%zx, +%zu) was accepted", name,
                   i, (size_t)r[i].addr, r[i].len);
        if (r[i].access == 0 || (r[i].access & ~(unsigned)XFER_ACCESS_RW))
            fz_die("agent '%s': region %zu has access bits 0x%x", name, i,
                   r[i].access);
        if (i > 0 && r[i].addr < r[i - 1].addr)
            fz_die("agent '%s': regions not in address order at %zu", name,
                   i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char names[MAX_BLOBS][XFER_NAME_MAX + 1];
    size_t nnames = 0, off = 0;

    for (unsigned b = 0; b < MAX_BLOBS && off <= size; b++) {
        const uint8_t *end = NULL;
        size_t len;
        char name[XFER_NAME_MAX + 1];
        xfer_status_t st;

        if (b + 1 < MAX_BLOBS)
            end = memmem(data + off, size - off, SEP, strlen(SEP));
        len = end ? (size_t)(end - (data + off)) : size - off;
        /* A copy of the exact size, so a read past the blob is caught. */
        {
            size_t blen = len;
            uint8_t *blob = blob_copy(data + off, &blen);

            st = xfer_md_load(agent, blob, blen, name, sizeof(name));
            free(blob);
        }
        fz_sentence(st, "xfer_md_load");
        if (fz_verbose())
            fprintf(stderr, "blob %u (%zu bytes): %s%s%s\n", b, len,
                    st == XFER_OK ? "loaded " : xfer_last_error(),
                    st == XFER_OK ? "agent " : "",
                    st == XFER_OK ? name : "");
        if (st == XFER_OK) {
            bool seen = false;

            if (name[0] == '\0')
                fz_die("xfer_md_load succeeded without naming the agent");
            for (size_t i = 0; i < nnames; i++)
                seen |= strcmp(names[i], name) == 0;
            if (!seen)
                memcpy(names[nnames++], name, sizeof(name));
            check_loaded(name);
        }
        if (end == NULL)
            break;
        off += len + strlen(SEP);
    }
    /* Forget what loaded, so that every input starts from the same agent. */
    for (size_t i = 0; i < nnames; i++) {
        xfer_status_t st = xfer_md_invalidate(agent, names[i]);

        if (st != XFER_OK)
            fz_die("invalidating '%s', which loaded: %s (%s)", names[i],
                   xfer_strerror(st), xfer_last_error());
        if (xfer_md_check(agent, names[i]) == XFER_OK)
            fz_die("'%s' is still loaded after its invalidation", names[i]);
    }
    return 0;
}
