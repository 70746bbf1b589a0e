/* nats-target.c - the passive side of the NATS example pair: publishes
 * itself through NATS, then writes a greeting into whoever asks for one. */
#include "common.h"

/* Filled by the notification callback: who asked, and where to write. */
struct ask {
    char from[XFER_NAME_MAX + 1];
    uintptr_t addr;
    size_t len;
};

static void on_notif(void *arg, const char *from, const void *msg, size_t len)
{
    struct ask *ask = arg;
    char text[128];

    snprintf(text, sizeof(text), "%.*s", (int)len, (const char *)msg);
    if (sscanf(text, "greet %" SCNxPTR " %zu", &ask->addr, &ask->len) == 2)
        snprintf(ask->from, sizeof(ask->from), "%s", from);
}

int main(int argc, char **argv)
{
    static char buf[EXAMPLE_BUF_SIZE] = "hello from the NATS target";
    xfer_desc_t local = { (uintptr_t)buf, sizeof(buf), 0 }, remote;
    xfer_dlist_t llist = { XFER_MEM_DRAM, 1, &local };
    xfer_dlist_t rlist = { XFER_MEM_DRAM, 1, &remote };
    xfer_agent_opts_t opts;
    xfer_agent_t *agent = NULL;
    xfer_mem_t *mem = NULL;
    xfer_req_t *req = NULL;
    struct ask ask = { "", 0, 0 };
    long waited_ms = 0;
    int rc = 1;

    /* The server comes from the command line or XFER_NATS_URL. */
    xfer_agent_opts_init(&opts);
    opts.name = "nats-target";
    opts.nats_url = argc > 1 ? argv[1] : NULL;
    if (example_check(xfer_agent_create(&opts, &agent), "create agent") ||
        example_check(xfer_backend_add(agent, "tcp", NULL), "add tcp") ||
        example_check(xfer_mem_register(agent, &llist, NULL, &mem),
                      "register buffer"))
        goto out;
    /* Nothing more to do to be found: the agent keeps its metadata in the
     * bucket xfer_agents (key nats-target) and answers fetches on the
     * subject xfer.md.nats-target; no port is opened for metadata. */
    printf("target: published in NATS, waiting\n");
    fflush(stdout);

    while (ask.from[0] == '\0') {
        if (example_check(xfer_notif_drain(agent, on_notif, &ask, NULL),
                          "drain notifications"))
            goto out;
        if (waited_ms >= EXAMPLE_TIMEOUT_S * 1000L) {
            fprintf(stderr, "target: nobody asked within %d s\n",
                    EXAMPLE_TIMEOUT_S);
            goto out;
        }
        example_sleep_ms(10);
        waited_ms += 10;
    }
    printf("target: %s asked for a greeting\n", ask.from);

    /* The asker is found the same way, by name. */
    remote = (xfer_desc_t){ ask.addr, sizeof(buf) < ask.len ? sizeof(buf)
                                                            : ask.len, 0 };
    local.len = remote.len;
    if (example_check(xfer_md_fetch_nats(agent, ask.from,
                                         EXAMPLE_TIMEOUT_S * 1000),
                      "fetch the asker over NATS") ||
        example_check(xfer_req_create(agent, XFER_OP_WRITE, &llist, &rlist,
                                      ask.from, NULL, &req), "create WRITE") ||
        example_check(xfer_req_post(req, "written", 7), "post WRITE") ||
        example_check(example_wait(req), "WRITE"))
        goto out;
    printf("target: greeting written\n");
    rc = 0;
out:
    xfer_req_release(req);
    if (mem != NULL)
        xfer_mem_deregister(agent, mem);
    xfer_agent_destroy(agent);
    return rc;
}
