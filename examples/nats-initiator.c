/* nats-initiator.c - the active side of the NATS example pair: finds the
 * target by name through NATS and asks it for a greeting. */
#include "common.h"

static void on_notif(void *arg, const char *from, const void *msg, size_t len)
{
    int *written = arg;

    printf("initiator: notification \"%.*s\" from %s\n", (int)len,
           (const char *)msg, from);
    if (len == 7 && memcmp(msg, "written", 7) == 0)
        *written = 1;
}

int main(int argc, char **argv)
{
    static char buf[EXAMPLE_BUF_SIZE];
    xfer_desc_t desc = { (uintptr_t)buf, sizeof(buf), 0 };
    xfer_dlist_t list = { XFER_MEM_DRAM, 1, &desc };
    xfer_agent_opts_t opts;
    xfer_agent_t *agent = NULL;
    xfer_mem_t *mem = NULL;
    char ask[128];
    int written = 0, rc = 1;
    long waited_ms = 0;

    xfer_agent_opts_init(&opts);
    opts.name = "nats-initiator";
    opts.nats_url = argc > 1 ? argv[1] : NULL;
    if (example_check(xfer_agent_create(&opts, &agent), "create agent") ||
        example_check(xfer_backend_add(agent, "tcp", NULL), "add tcp") ||
        example_check(xfer_mem_register(agent, &list, NULL, &mem),
                      "register buffer"))
        goto out;

    /* Blocks until the target answers (or the time is up). */
    if (example_check(xfer_md_fetch_nats(agent, "nats-target",
                                         EXAMPLE_TIMEOUT_S * 1000),
                      "fetch nats-target over NATS"))
        goto out;
    printf("initiator: found nats-target through NATS\n");

    /* Our buffer's place travels in a notification; the target finds
     * our metadata (and the key of that buffer) over NATS by our name. */
    snprintf(ask, sizeof(ask), "greet %" PRIxPTR " %zu", desc.addr, desc.len);
    if (example_check(xfer_notif_send(agent, "nats-target", ask, strlen(ask),
                                      NULL), "send notification"))
        goto out;
    while (!written) {
        if (example_check(xfer_notif_drain(agent, on_notif, &written, NULL),
                          "drain notifications"))
            goto out;
        if (written)
            break;
        if (waited_ms >= EXAMPLE_TIMEOUT_S * 1000L) {
            fprintf(stderr, "initiator: no greeting within %d s\n",
                    EXAMPLE_TIMEOUT_S);
            goto out;
        }
        example_sleep_ms(10);
        waited_ms += 10;
    }
    buf[sizeof(buf) - 1] = '\0';
    printf("initiator: buffer holds \"%s\"\n", buf);
    rc = 0;
out:
    if (mem != NULL)
        xfer_mem_deregister(agent, mem);
    xfer_agent_destroy(agent);
    return rc;
}
