/* fuzz-stream.c - helpers of the stream harnesses (fuzz-stream.h): frame
 * headers, and what a peer learns of an agent from its metadata. */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "tests/fuzz/fuzz-stream.h"

void fzw_decode(fzw_hdr_t *h, const uint8_t *p)
{
    h->type = p[0];
    h->flags = p[1];
    h->rsvd = (uint16_t)(p[2] | p[3] << 8);
    h->seg = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
             (uint32_t)p[7] << 24;
    h->tag = fz_le64(p + 8);
    h->arg0 = fz_le64(p + 16);
    h->arg1 = fz_le64(p + 24);
    h->len = fz_le64(p + 32);
}

void fzw_encode(uint8_t *p, const fzw_hdr_t *h)
{
    p[0] = h->type;
    p[1] = h->flags;
    p[2] = (uint8_t)h->rsvd;
    p[3] = (uint8_t)(h->rsvd >> 8);
    for (int i = 0; i < 4; i++)
        p[4 + i] = (uint8_t)(h->seg >> (8 * i));
    fz_put_le64(p + 8, h->tag);
    fz_put_le64(p + 16, h->arg0);
    fz_put_le64(p + 24, h->arg1);
    fz_put_le64(p + 32, h->len);
}

static json_t *md_json(xfer_agent_t *agent, unsigned what, xfer_mem_t *mem)
{
    char *blob = NULL;
    size_t len = 0;
    json_t *root;

    fz_ok(xfer_md_get(agent, what, mem ? &mem : NULL, mem ? 1 : 0, &blob,
                      &len), "xfer_md_get");
    root = json_loadb(blob, len, 0, NULL);
    xfer_free(blob);
    if (root == NULL)
        fz_die("xfer_md_get gave text that is not JSON");
    return root;
}

uint64_t fzw_region_key(xfer_agent_t *agent, xfer_mem_t *mem)
{
    json_t *root = md_json(agent, XFER_MD_MEM, mem);
    json_t *r = json_array_get(json_object_get(root, "regions"), 0);
    const char *key = json_string_value(json_object_get(r, "key"));
    uint64_t v;

    if (key == NULL)
        fz_die("metadata of a registration has no key");
    v = strtoull(key, NULL, 16);
    json_decref(root);
    return v;
}

uint16_t fzw_tcp_port(xfer_agent_t *agent)
{
    json_t *root = md_json(agent, XFER_MD_CONN, NULL);
    json_t *b = json_array_get(json_object_get(root, "backends"), 0);
    const char *conn = json_string_value(json_object_get(b, "conn"));
    uint8_t info[64];

    /* docs/wire-tcp.md, "tcp connection info": port at offset 6. */
    if (conn == NULL || xfer__b64_decode(conn, info, sizeof(info)) != 24)
        fz_die("metadata has no tcp connection info");
    json_decref(root);
    return (uint16_t)(info[6] << 8 | info[7]);
}
