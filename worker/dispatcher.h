/* The result dispatcher's loop: consumes comet.results.whmcs (manual acks,
 * prefetch = dispatcher.concurrency), POSTs each event to the WHMCS
 * callback signed, and settles it: 2xx -> ack; 5xx/429/timeout/refused ->
 * retried with capped exponential backoff while it stays unacked in its
 * durable queue; other 4xx -> a confirmed copy in comet.results.dead with
 * the reason, then ack. Reconnects to the broker with backoff. */
#ifndef COMET_DISPATCHER_H
#define COMET_DISPATCHER_H

#include <signal.h>
#include "config.h"

/* Retry backoff of one event: first delay, doubling up to the cap. */
#define DISPATCHER_BACKOFF_FIRST_MS 500
#define DISPATCHER_BACKOFF_MAX_MS 30000

/* Runs until *stop is set, then stops consuming, lets in-flight POSTs
 * finish within worker.grace_seconds and returns 0 (unfinished events
 * stay in the queue). Returns 1 when it cannot start. */
int dispatcher_run(const struct config *cfg, volatile sig_atomic_t *stop);

#endif
