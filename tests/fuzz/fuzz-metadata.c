/* fuzz-metadata.c - libFuzzer harness for the metadata parser: blobs loaded
 * with xfer_md_load into an agent with a tcp backend, which unpacks them. */
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

static xfer_agent_t *agent;

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
    return 0;
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
            uint8_t *blob = malloc(len ? len : 1);

            if (blob == NULL)
                fz_die("out of memory");
            memcpy(blob, data + off, len);
            st = xfer_md_load(agent, blob, len, name, sizeof(name));
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
