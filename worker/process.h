/* One job, top to bottom: verify, decode, look up the server, unseal, run
 * the action, and decide what must be published before the delivery is
 * acked (result event, retry copy or dead-letter copy). Runs on a pool
 * thread; touches no AMQP connection. */
#ifndef COMET_PROCESS_H
#define COMET_PROCESS_H

#include <stdbool.h>
#include <stdint.h>
#include "bus.h"
#include "comet.h"
#include "config.h"
#include "job.h"
#include "store.h"

#define OUTCOME_MAX_MSGS 3

/* What the consumer thread does with the delivery once msgs are confirmed. */
enum outcome_disposition {
    OUTCOME_ACK = 0,    /* publish msgs, ack after all are confirmed */
    OUTCOME_REQUEUE,    /* nothing to publish: nack with requeue (shutdown) */
};

struct outcome {
    uint64_t tag;                   /* delivery tag on the channel it came from */
    unsigned generation;            /* bus connection it came from */
    enum outcome_disposition disposition;
    struct bus_msg msgs[OUTCOME_MAX_MSGS];
    size_t nmsgs;
    /* For logs and metrics. */
    enum job_action action;         /* ACTION__COUNT when unknown */
    enum result_status status;
    enum err_code error;
    long long duration_ms;
    bool store_down;                /* Redis failed: the consumer pauses */
};

/* Per-thread resources, reused across jobs. */
struct process_ctx {
    const struct config *cfg;
    struct comet_client *comet;
    struct store *store;            /* may be NULL until Redis is reachable */
};

int process_ctx_init(struct process_ctx *ctx, const struct config *cfg);
void process_ctx_clear(struct process_ctx *ctx);

/* Processes d (not consumed) and fills out (caller clears it with
 * outcome_clear). Never fails: every failure becomes an outcome. */
void process_delivery(struct process_ctx *ctx, const struct bus_delivery *d, struct outcome *out);
void outcome_clear(struct outcome *out);


#endif
