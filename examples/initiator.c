/* initiator.c - the active side of the example pair: loads the target's
 * metadata, WRITEs a message into its buffer, then READs it back to check. */
#include "common.h" /* first: it sets the POSIX feature level */

#include <unistd.h>

/* One transfer of the whole message between our buffer and the target's:
 * create the request, post it, wait until the data is where it was sent. */
static int transfer(xfer_agent_t *agent, xfer_op_t op, const char *peer,
                    const xfer_dlist_t *local, const xfer_dlist_t *remote,
                    const char *notif)
{
    xfer_req_opts_t ropts;
    xfer_req_t *req = NULL;
    xfer_status_t st;
    const char *what = op == XFER_OP_WRITE ? "WRITE" : "READ";

    /* The notification rides on the transfer: the target gets it only
     * once the data has landed (WRITE) or been read (READ). */
    xfer_req_opts_init(&ropts);
    ropts.notif = notif;
    ropts.notif_len = strlen(notif);
    if (example_check(xfer_req_create(agent, op, local, remote, peer, &ropts,
                                      &req), what))
        return -1;
    st = xfer_req_post(req, NULL, 0);
    if (st == XFER_IN_PROG)
        st = example_wait(req);
    if (example_check(st, what)) {
        xfer_req_release(req);
        return -1;
    }
    printf("initiator: %s complete\n", what);
    return example_check(xfer_req_release(req), "release request");
}

int main(int argc, char **argv)
{
    static char buf[EXAMPLE_BUF_SIZE];
    xfer_desc_t ldesc = { (uintptr_t)buf, sizeof(EXAMPLE_MESSAGE), 0 };
    xfer_desc_t rdesc = { 0, sizeof(EXAMPLE_MESSAGE), 0 };
    xfer_dlist_t local = { XFER_MEM_DRAM, 1, &ldesc };
    xfer_dlist_t remote = { XFER_MEM_DRAM, 1, &rdesc };
    xfer_desc_t whole = { (uintptr_t)buf, sizeof(buf), 0 };
    xfer_dlist_t reg = { XFER_MEM_DRAM, 1, &whole };
    xfer_agent_opts_t opts;
    xfer_agent_t *agent = NULL;
    xfer_mem_t *mem = NULL;
    char peer[XFER_NAME_MAX + 1];
    char *blob = NULL;
    size_t blob_len, rlen;
    uintptr_t raddr;
    int waited_ms = 0, rc = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s METADATA-FILE\n", argv[0]);
        return 2;
    }

    /* The target may still be starting: give it time to write the file. */
    while (access(argv[1], R_OK) != 0 && waited_ms < EXAMPLE_TIMEOUT_S * 1000) {
        example_sleep_ms(50);
        waited_ms += 50;
    }
    if (example_md_read(argv[1], &raddr, &rlen, &blob, &blob_len))
        return 1;
    if (rlen < sizeof(EXAMPLE_MESSAGE)) {
        fprintf(stderr, "target buffer too small (%zu bytes)\n", rlen);
        goto out;
    }
    rdesc.addr = raddr;

    xfer_agent_opts_init(&opts);
    opts.name = "initiator";
    if (example_check(xfer_agent_create(&opts, &agent), "create agent") ||
        example_check(xfer_backend_add(agent, "tcp", NULL), "add tcp") ||
        example_check(xfer_mem_register(agent, &reg, NULL, &mem),
                      "register buffer") ||
        example_check(xfer_md_load(agent, blob, blob_len, peer, sizeof(peer)),
                      "load target metadata"))
        goto out;
    printf("initiator: loaded metadata of \"%s\"\n", peer);

    memcpy(buf, EXAMPLE_MESSAGE, sizeof(EXAMPLE_MESSAGE));
    if (transfer(agent, XFER_OP_WRITE, peer, &local, &remote, "written"))
        goto out;

    /* Wipe our copy so that the comparison proves the READ moved data. */
    memset(buf, 0, sizeof(buf));
    if (transfer(agent, XFER_OP_READ, peer, &local, &remote, "done"))
        goto out;
    if (memcmp(buf, EXAMPLE_MESSAGE, sizeof(EXAMPLE_MESSAGE)) != 0) {
        fprintf(stderr, "initiator: read back \"%.*s\", expected \"%s\"\n",
                (int)sizeof(EXAMPLE_MESSAGE), buf, EXAMPLE_MESSAGE);
        goto out;
    }
    printf("initiator: read back \"%s\": OK\n", buf);
    rc = 0;
out:
    free(blob);
    if (mem != NULL)
        xfer_mem_deregister(agent, mem);
    xfer_agent_destroy(agent);
    return rc;
}
