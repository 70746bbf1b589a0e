/* nats-events.c - a subscriber that prints every event agents publish
 * under a prefix (docs/events.md), and says when an agent's seq shows
 * events lost.  It needs only libnats and jansson, not libxfer.
 *
 *   xfer-example-nats-events [-s nats://host:port] [-p prefix] [-n count]
 *
 * The server defaults to XFER_NATS_URL, else nats://127.0.0.1:4222; the
 * prefix to "xfer"; it runs until interrupted, or until count events. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* sigaction, getopt */
#endif

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <nats/nats.h>

/* Agents whose last seq we remember (more are printed, not checked). */
#define MAX_AGENTS 256

static volatile sig_atomic_t stop;

static struct {
    char *agent, *epoch;
    json_int_t seq;
} last[MAX_AGENTS];
static int nlast;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Warn when an agent's seq jumps: the events between were dropped by
 * the agent (its queue was full) or lost on the way.  A new epoch is a
 * restarted agent and starts again from 1. */
static void check_seq(const char *agent, const char *epoch, json_int_t seq)
{
    int i;

    for (i = 0; i < nlast; i++)
        if (strcmp(last[i].agent, agent) == 0)
            break;
    if (i == nlast) {
        if (nlast == MAX_AGENTS)
            return;
        last[nlast].agent = strdup(agent);
        last[nlast].epoch = strdup(epoch);
        last[nlast].seq = 0;
        if (last[nlast].agent == NULL || last[nlast].epoch == NULL)
            return;
        nlast++;
    } else if (strcmp(last[i].epoch, epoch) != 0) {
        free(last[i].epoch);
        last[i].epoch = strdup(epoch);
        last[i].seq = 0;
    } else if (seq > last[i].seq + 1) {
        printf("# %s: %lld event(s) lost before seq %lld\n", agent,
               (long long)(seq - last[i].seq - 1), (long long)seq);
    }
    last[i].seq = seq;
}

static void print_event(natsMsg *m)
{
    const char *data = natsMsg_GetData(m);
    int len = natsMsg_GetDataLength(m);
    json_t *doc = json_loadb(data, (size_t)len, 0, NULL);
    const char *agent = json_string_value(json_object_get(doc, "agent"));
    const char *epoch = json_string_value(json_object_get(doc, "epoch"));
    json_t *seq = json_object_get(doc, "seq");

    if (agent != NULL && epoch != NULL && json_is_integer(seq))
        check_seq(agent, epoch, json_integer_value(seq));
    else
        printf("# not an xfer event:\n");
    printf("%s %.*s\n", natsMsg_GetSubject(m), len, data);
    fflush(stdout);
    json_decref(doc);
}

int main(int argc, char **argv)
{
    const char *url = getenv("XFER_NATS_URL"), *prefix = "xfer";
    long count = -1, seen = 0;
    char subject[256];
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    natsOptions *opts = NULL;
    struct sigaction sa;
    natsStatus s;
    int c;

    while ((c = getopt(argc, argv, "s:p:n:")) != -1) {
        if (c == 's')
            url = optarg;
        else if (c == 'p')
            prefix = optarg;
        else if (c == 'n')
            count = strtol(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: %s [-s nats://host:port] [-p prefix] "
                    "[-n count]\n", argv[0]);
            return 2;
        }
    }
    if (url == NULL || url[0] == '\0')
        url = "nats://127.0.0.1:4222";
    snprintf(subject, sizeof(subject), "%s.ev.>", prefix);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Reconnect for as long as we run, like the agents do. */
    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK)
        s = natsConnection_SubscribeSync(&sub, nc, subject);
    if (s == NATS_OK)
        s = natsConnection_Flush(nc);
    if (s != NATS_OK) {
        fprintf(stderr, "%s: cannot subscribe to %s at %s: %s\n", argv[0],
                subject, url, natsStatus_GetText(s));
        natsSubscription_Destroy(sub);
        natsConnection_Destroy(nc);
        natsOptions_Destroy(opts);
        return 1;
    }
    fprintf(stderr, "listening on %s at %s\n", subject, url);
    while (!stop && (count < 0 || seen < count)) {
        natsMsg *m = NULL;

        /* A short wait, so that a signal is seen soon. */
        s = natsSubscription_NextMsg(&m, sub, 200);
        if (s == NATS_TIMEOUT)
            continue;
        if (s != NATS_OK) {
            fprintf(stderr, "%s: %s\n", argv[0], natsStatus_GetText(s));
            if (s == NATS_SLOW_CONSUMER)
                continue;   /* messages were lost; carry on */
            break;
        }
        print_event(m);
        natsMsg_Destroy(m);
        seen++;
    }
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    for (int i = 0; i < nlast; i++) {
        free(last[i].agent);
        free(last[i].epoch);
    }
    nats_Close();
    return 0;
}
