/* The consumer thread: owns the AMQP connection, hands deliveries to the
 * pool, publishes each outcome's messages with pipelined confirms and acks
 * a delivery only once all of them are confirmed. Reconnects on failure. */
#ifndef COMET_RUNNER_H
#define COMET_RUNNER_H

#include <signal.h>
#include <stdbool.h>
#include "config.h"

/* Readiness for /readyz and logs. */
struct runner_status {
    volatile bool connected;    /* broker connection up */
    volatile bool consuming;    /* consumer active (not paused for Redis or Comet, not stopping) */
    volatile bool store_ok;     /* Redis reachable at the last check */
    volatile bool comet_ok;     /* some Comet server answers (see comet_server_down) */
};

/* Runs until *stop is set (SIGTERM/SIGINT), then stops consuming, lets
 * in-flight jobs finish within worker.grace_seconds and returns 0; returns
 * 1 when it could not even start (bad retry tiers, no threads). */
int runner_run(const struct config *cfg, volatile sig_atomic_t *stop, struct runner_status *st);

#endif
