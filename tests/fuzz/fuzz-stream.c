/* fuzz-stream.c - helpers of the stream harnesses (fuzz-stream.h): frame
 * headers, and what a peer learns of an agent from its metadata. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

/* The connection info of the agent's backend `plugin`; its length. */
static size_t conn_info(xfer_agent_t *agent, const char *plugin,
                        uint8_t *info, size_t cap)
{
    json_t *root = md_json(agent, XFER_MD_CONN, NULL), *b;
    long n = -1;
    size_t i;

    json_array_foreach(json_object_get(root, "backends"), i, b) {
        const char *name = json_string_value(json_object_get(b, "plugin"));
        const char *conn = json_string_value(json_object_get(b, "conn"));

        if (name != NULL && conn != NULL && strcmp(name, plugin) == 0)
            n = xfer__b64_decode(conn, info, cap);
    }
    json_decref(root);
    if (n <= 0)
        fz_die("metadata has no %s connection info", plugin);
    return (size_t)n;
}

uint16_t fzw_tcp_port(xfer_agent_t *agent)
{
    uint8_t info[64];

    /* docs/wire-tcp.md, "tcp connection info": port at offset 6. */
    if (conn_info(agent, "tcp", info, sizeof(info)) != 24)
        fz_die("tcp connection info is not 24 bytes");
    return (uint16_t)(info[6] << 8 | info[7]);
}

int fzw_uds_connect(xfer_agent_t *agent, int rcvbuf)
{
    uint8_t info[256];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen, at;
    socklen_t sl;
    int fd;

    /* docs/wire-tcp.md, "uds connection info": 224 bytes; byte 5 says
     * abstract, a little-endian u16 at 6 the path's length, the path at
     * 116. */
    if (conn_info(agent, "uds", info, sizeof(info)) != 224)
        fz_die("uds connection info is not 224 bytes");
    plen = (size_t)(info[6] | info[7] << 8);
    at = info[5] ? 1 : 0;
    if (plen == 0 || at + plen >= sizeof(sa.sun_path))
        fz_die("uds connection info names no socket");
    memcpy(sa.sun_path + at, info + 116, plen);
    sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + at + plen +
                     (at ? 0 : 1));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 ||
        (rcvbuf > 0 &&
         setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf))) ||
        connect(fd, (struct sockaddr *)&sa, sl) != 0 ||
        fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
        fz_die("connect to the uds backend: %s", strerror(errno));
    return fd;
}
