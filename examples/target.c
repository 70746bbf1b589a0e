/* target.c - the passive side of the example pair: exposes one buffer,
 * publishes its metadata in a file and prints what the initiator wrote. */
#include "common.h"

/* Set by the notification callback; the main loop only reads them. */
struct target_state {
    int done;
};

/* Notifications arrive only after the data of the transfer that carried
 * them is in our buffer, so "written" means the message can be read. */
static void on_notif(void *arg, const char *from, const void *msg, size_t len)
{
    struct target_state *state = arg;

    printf("target: notification \"%.*s\" from %s\n", (int)len,
           (const char *)msg, from);
    if (len == 4 && memcmp(msg, "done", 4) == 0)
        state->done = 1;
}

int main(int argc, char **argv)
{
    static char buf[EXAMPLE_BUF_SIZE];
    xfer_desc_t desc = { (uintptr_t)buf, sizeof(buf), 0 };
    xfer_dlist_t list = { XFER_MEM_DRAM, 1, &desc };
    xfer_agent_opts_t opts;
    xfer_agent_t *agent = NULL;
    xfer_mem_t *mem = NULL;
    struct target_state state = { 0 };
    char *blob = NULL;
    size_t blob_len;
    long waited_ms = 0;
    int rc = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s METADATA-FILE\n", argv[0]);
        return 2;
    }

    /* The progress thread (on by default) serves the initiator's READs
     * and WRITEs while main() merely waits for the last notification. */
    xfer_agent_opts_init(&opts);
    opts.name = "target";
    if (example_check(xfer_agent_create(&opts, &agent), "create agent") ||
        example_check(xfer_backend_add(agent, "tcp", NULL), "add tcp"))
        goto out;

    /* Only registered memory can be reached by a peer. */
    if (example_check(xfer_mem_register(agent, &list, NULL, &mem),
                      "register buffer"))
        goto out;

    if (example_check(xfer_md_get(agent, XFER_MD_ALL, NULL, 0, &blob,
                                  &blob_len), "get metadata") ||
        example_md_write(argv[1], desc.addr, desc.len, blob, blob_len))
        goto out;
    printf("target: metadata in %s, waiting\n", argv[1]);
    fflush(stdout);

    while (!state.done) {
        if (example_check(xfer_notif_drain(agent, on_notif, &state, NULL),
                          "drain notifications"))
            goto out;
        if (state.done)
            break;
        if (waited_ms >= EXAMPLE_TIMEOUT_S * 1000L) {
            fprintf(stderr, "target: no \"done\" within %d s\n",
                    EXAMPLE_TIMEOUT_S);
            goto out;
        }
        example_sleep_ms(10);
        waited_ms += 10;
    }

    buf[sizeof(buf) - 1] = '\0'; /* whatever arrived, print a string */
    printf("target: buffer holds \"%s\"\n", buf);
    rc = 0;
out:
    xfer_free(blob);
    if (mem != NULL)
        xfer_mem_deregister(agent, mem);
    xfer_agent_destroy(agent);
    return rc;
}
