/* Effectively-once, ordering and mutual exclusion for jobs, kept in Redis. */
#include "gate.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

/* A job waits for its predecessor at most this long in total (waits are
 * taken on the shortest retry tier); then it runs and says so. A
 * predecessor that vanished (expired state, broker-side dead-lettering)
 * must not block a service forever. */
#define MAX_WAIT_MS (3600LL * 1000)
#define MIN_LOCK_TTL_MS 30000

static bool terminal(const char *state)
{
    return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0 ||
           strcmp(state, "skipped") == 0;
}

static int first_tier_ms(const struct config *cfg)
{
    int v = 1000;
    if (cfg->retry_tiers_ms[0] && sscanf(cfg->retry_tiers_ms, "%d", &v) != 1)
        v = 1000;
    return v > 0 ? v : 1000;
}

/* The service lock lasts longer than any single run: every Comet call of
 * a job is bounded by comet.timeout_ms, a dozen calls at most. */
static int lock_ttl_ms(const struct config *cfg)
{
    int ttl = cfg->comet_timeout_ms * 12;
    return ttl < MIN_LOCK_TTL_MS ? MIN_LOCK_TTL_MS : ttl;
}

/* Releases a lock taken with the reads for a job that is not going to run. */
static void unlock_unused(struct store *s, const struct job *job, const struct store_gate_view *v)
{
    struct err e;
    if (v->locked && store_service_unlock(s, job->server_url, job->service_id, job->job_id, &e) != 0)
        log_warn("could not release the lock of service %lld (it expires by itself): %s",
                 job->service_id, e.msg);
}

int gate_enter(struct store *s, const struct config *cfg, const struct job *job, bool forced,
               long long waits, const struct store_fields *steps, struct gate *g, struct err *err)
{
    struct store_gate_view v;
    bool want_seq = !forced && job->seq > 0;
    memset(g, 0, sizeof(*g));
    /* One round trip for the reads the verdict needs and, for a job with
     * no predecessor (nearly always), the service lock as well: the lock
     * is only kept when the verdict is to run, and the verdicts are
     * decided in the same order as if it were taken last. A job with a
     * predecessor takes it separately, after its predecessor is done, so
     * the two never hold the lock against each other. */
    bool lock_now = job->after[0] == '\0';
    v.result = g->stored_result;
    v.result_len = sizeof(g->stored_result);
    v.steps = lock_now ? steps : NULL;
    if (store_gate_read(s, job->job_id, job->server_url, job->service_id, want_seq, job->after,
                        lock_now ? lock_ttl_ms(cfg) : 0, &v, err) != 0)
        return -1;
    if (strcmp(v.state, "succeeded") == 0 && g->stored_result[0]) {
        unlock_unused(s, job, &v);
        g->verdict = GATE_DUPLICATE;
        return 0;
    }
    g->stored_result[0] = '\0'; /* only a duplicate's result is kept */
    if (want_seq && v.high_seq > job->seq) {
        unlock_unused(s, job, &v);
        g->verdict = GATE_SUPERSEDED;
        snprintf(g->reason, sizeof(g->reason), "superseded: seq %lld of service %lld already succeeded",
                 v.high_seq, job->service_id);
        return 0;
    }
    if (job->after[0]) {
        const char *pstate = v.after_state;
        if (strcmp(pstate, "failed") == 0 && v.after_broken) {
            unlock_unused(s, job, &v);
            g->verdict = GATE_BLOCKED;
            snprintf(g->reason, sizeof(g->reason),
                     "job %s before it in this service's chain failed: replay that job first, "
                     "then this one", job->after);
            return 0;
        }
        if (!terminal(pstate)) {
            if (waits * first_tier_ms(cfg) < MAX_WAIT_MS) {
                g->verdict = GATE_WAIT;
                snprintf(g->reason, sizeof(g->reason), "waiting for job %s (%s)", job->after,
                         pstate[0] ? pstate : "not seen yet");
                return 0;
            }
            struct log_fields f = LOG_FIELDS_INIT;
            f.job_id = job->job_id;
            f.service_id = job->service_id;
            log_msgf(LOGL_WARN, &f, "predecessor %s still not finished after %lld waits; running anyway",
                     job->after, waits);
        }
    }
    bool got = v.locked;
    if (!lock_now &&
        store_service_lock(s, job->server_url, job->service_id, job->job_id, lock_ttl_ms(cfg), &got,
                           err) != 0)
        return -1;
    if (!got) {
        g->verdict = GATE_WAIT;
        snprintf(g->reason, sizeof(g->reason), "another job of service %lld is running", job->service_id);
        return 0;
    }
    g->locked = true;
    g->steps_read = v.steps_read;
    g->verdict = GATE_RUN;
    return 0;
}

int gate_record(struct store *s, const struct config *cfg, const struct job *job,
                enum result_status status, const char *result_json, struct gate *g,
                struct err *err)
{
    int keep = cfg->job_retention_seconds;
    int rc;
    /* State, result, expiry, high-water mark and the lock's release in one
     * round trip; the result and state land in one HSET, so a reader that
     * sees "succeeded" finds the result. */
    if (status == RESULT_SUCCEEDED)
        rc = store_job_finish(s, job->job_id, "succeeded", result_json ? result_json : "", keep,
                              job->server_url, job->service_id, job->seq > 0 ? job->seq : 0,
                              false, g->locked, err);
    else if (status == RESULT_FAILED || status == RESULT_SKIPPED)
        rc = store_job_finish(s, job->job_id, result_status_name(status), NULL, keep,
                              job->server_url, job->service_id, 0,
                              status == RESULT_FAILED, g->locked, err);
    else
        return 0; /* retrying: not terminal, successors keep waiting */
    if (rc == 0)
        g->locked = false;
    return rc;
}

void gate_leave(struct store *s, const struct job *job, struct gate *g)
{
    if (!g->locked)
        return;
    struct err e;
    if (store_service_unlock(s, job->server_url, job->service_id, job->job_id, &e) != 0)
        log_warn("could not release the lock of service %lld (it expires by itself): %s",
                 job->service_id, e.msg);
    g->locked = false;
}
