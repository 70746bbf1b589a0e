/* nats.h - a real nats-server with JetStream for the tests that need one:
 * started on a free loopback port with its store and log in a temporary
 * dir, killed or stopped as an outage would, and brought back on the same
 * port with the same store. */
#ifndef XT_NATS_H
#define XT_NATS_H

#include <stdbool.h>

typedef struct xt_nats xt_nats_t;

/* Start nats-server -js ($XT_NATS_SERVER, else /usr/bin/ or /usr/sbin/nats-server) and
 * wait until it greets a client with JetStream on.  Only before xt_run:
 * skips the program (exit 77) when there is no nats-server binary or
 * temporary dir; NULL, with its log copied to stderr, when it did not
 * come up within 10 s. */
xt_nats_t *xt_nats_start(void);
/* Its URL, "nats://127.0.0.1:PORT"; the same across restarts. */
const char *xt_nats_url(const xt_nats_t *nats);
/* The temporary dir of its store and logs, for failure messages. */
const char *xt_nats_dir(const xt_nats_t *nats);
/* Its process id while it runs, else 0. */
int xt_nats_pid(const xt_nats_t *nats);
/* SIGKILL it (an outage, nothing flushed); idempotent. */
void xt_nats_kill(xt_nats_t *nats);
/* Stop it (SIGTERM, SIGKILL after 5 s); idempotent. */
void xt_nats_halt(xt_nats_t *nats);
/* Halt it if running, then start it again on the same port with the same
 * JetStream store; false when it did not come up within 10 s. */
bool xt_nats_restart(xt_nats_t *nats);
/* Halt it, remove its dir and free it; NULL is fine. */
void xt_nats_stop(xt_nats_t *nats);

#endif /* XT_NATS_H */
