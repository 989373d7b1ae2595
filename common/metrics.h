/* Prometheus metrics for the worker and the dispatcher: one process-wide
 * registry of counters, gauges and histograms whose label sets are fixed by
 * enums (so recording is a few relaxed atomic adds, no lock, no lookup),
 * rendered in the text exposition format, and a small libmicrohttpd
 * listener serving /metrics, /healthz and /readyz. Every recording call is
 * thread-safe and async-safe with respect to rendering. */
#ifndef COMET_METRICS_H
#define COMET_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include "comet.h"
#include "errors.h"
#include "job.h"

/* The dispatcher's verdict on one result event. */
enum metrics_delivery_outcome {
    METRICS_DELIVERY_DELIVERED = 0, /* callback answered 2xx: acked */
    METRICS_DELIVERY_RETRIED,       /* 5xx, timeout, refused: backed off */
    METRICS_DELIVERY_DEAD_LETTERED, /* other 4xx: dead-lettered */
    METRICS_DELIVERY__COUNT
};

/* Which families a process renders: a worker does not show the
 * dispatcher's at zero and vice versa. */
enum metrics_role {
    METRICS_ROLE_ALL = 0,           /* default: everything (tests, tools) */
    METRICS_ROLE_WORKER,
    METRICS_ROLE_DISPATCHER,
};

/* Readiness probe for /readyz: returns true when ready; when not, writes a
 * short reason (no secret) into why (n bytes). Called on the listener's
 * thread, so it must only read thread-safe state. */
typedef bool (*metrics_ready_fn)(void *ctx, char *why, size_t n);

/* ---- recording (any thread, never fails, never blocks) ---- */

/* Selects the rendered families; call once at start-up. */
void metrics_set_role(enum metrics_role role);

/* A job finished on this worker with status (RESULT_*): jobs_total and
 * job_duration_seconds. action ACTION__COUNT (undecodable job) is
 * labelled "unknown". */
void metrics_job_done(enum job_action action, enum result_status status, double seconds);
/* One comet_call() took seconds (whatever its result). */
void metrics_comet_request(enum comet_endpoint ep, double seconds);
/* One comet_call() failed with this class (ERRC_NONE is ignored). */
void metrics_comet_error(enum err_class cls);
/* A transient failure was sent to a retry tier. */
void metrics_retry(void);
/* A message was dead-lettered; reason_code is an err_code wire name
 * ("comet_auth", ...); anything else (or NULL) is counted as "other" so
 * the label set stays bounded. */
void metrics_dead_lettered(const char *reason_code);
/* Jobs currently being processed (+1 taken, -1 finished). */
void metrics_inflight_add(int delta);
/* Why the worker is not taking jobs: worker_paused{reason} is 1 while so. */
enum metrics_pause { METRICS_PAUSE_REDIS = 0, METRICS_PAUSE_COMET, METRICS_PAUSE__COUNT };
void metrics_set_paused(enum metrics_pause reason, bool paused);
void metrics_amqp_reconnect(void);
void metrics_redis_error(void);

/* Dispatcher counterparts. */
void metrics_dispatch_done(enum metrics_delivery_outcome outcome, double seconds);
void metrics_dispatch_inflight_add(int delta);

/* Zeroes every value (tests). Not atomic with respect to concurrent
 * recorders. */
void metrics_reset(void);

/* ---- reading ---- */

/* Renders the text exposition format (version 0.0.4) into a malloc'd,
 * NUL-terminated buffer the caller frees. Returns its length; on
 * allocation failure returns 0 and *out is NULL. */
size_t metrics_render(char **out);

/* Value of jobs_total{action,outcome} (tests and tools). */
unsigned long long metrics_jobs_total(enum job_action action, enum result_status status);

/* Escapes a label value (backslash, double quote, newline) into out (n
 * bytes, always NUL-terminated when n > 0). Returns the length the full
 * escaped value needs, excluding the NUL (as snprintf). */
size_t metrics_label_escape(const char *in, char *out, size_t n);

/* ---- HTTP listener ---- */

/* Starts the listener on 0.0.0.0:port with an internal thread. port 0 =
 * metrics off: returns 0 and starts nothing. ready may be NULL (then
 * /readyz is always 200). Returns 0, or -1 with err when the port cannot
 * be bound or a listener already runs. */
int metrics_listen(int port, metrics_ready_fn ready, void *ctx, struct err *err);
/* Same on a given IPv4 address (NULL or "" = 0.0.0.0). */
int metrics_listen_on(const char *addr, int port, metrics_ready_fn ready, void *ctx,
                      struct err *err);
/* Stops the listener (waits for its thread); no-op when none runs. */
void metrics_stop(void);

#endif
