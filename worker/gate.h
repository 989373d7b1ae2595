/* The gate a job passes before it runs: effectively-once (a job that
 * already succeeded is answered from its stored result), staleness (a
 * replay superseded by a later job of the service is skipped), per-service
 * order (a job waits until its `after` job reached a terminal state) and
 * mutual exclusion (two jobs of one service never run at once). State lives
 * in Redis, so it holds across workers, pods and restarts. */
#ifndef COMET_GATE_H
#define COMET_GATE_H

#include <stdbool.h>
#include "config.h"
#include "job.h"
#include "store.h"

enum gate_verdict {
    GATE_RUN = 0,       /* run it; the service lock is held */
    GATE_WAIT,          /* predecessor not done, or service busy: come back later */
    GATE_DUPLICATE,     /* already succeeded: re-send the stored result */
    GATE_SUPERSEDED,    /* a later job of the service already succeeded */
    GATE_BLOCKED,       /* its predecessor failed: it fails too, to be replayed after it */
};

struct gate {
    enum gate_verdict verdict;
    bool locked;                /* service lock held (GATE_RUN) */
    bool steps_read;            /* GATE_RUN: the steps asked for were read under the lock */
    char reason[160];           /* why it waits or was skipped */
    char stored_result[4096];   /* GATE_DUPLICATE: the result event sent before */
};

/* Decides. waits = how often this job already waited (bounded: after about
 * an hour of waiting for a predecessor it runs anyway, with a warning).
 * forced skips the staleness check (operator replay with --force).
 * steps (or NULL): job fields the action needs, read in the same round
 * trip once the service lock is held (g->steps_read says whether they were;
 * when not, the action reads them itself).
 * Returns -1 with err only when Redis fails. */
int gate_enter(struct store *s, const struct config *cfg, const struct job *job, bool forced,
               long long waits, const struct store_fields *steps, struct gate *g, struct err *err);
/* Records the terminal status (succeeded with its result event, failed or
 * skipped) so successors may run and duplicates are recognised. A failed
 * job breaks its service's chain: its successors fail at once as
 * predecessor_failed (released, not left waiting) instead of running out of
 * order, which would also make the failed job's replay "superseded". The
 * operator replays the chain in order (comet-dlq replay) and the service
 * converges on its last job's state. The service lock is released in the
 * same round trip (g->locked false after). */
int gate_record(struct store *s, const struct config *cfg, const struct job *job,
                enum result_status status, const char *result_json, struct gate *g,
                struct err *err);
/* Releases the service lock if still held (gate_record releases it with
 * a terminal record). */
void gate_leave(struct store *s, const struct job *job, struct gate *g);

#endif
