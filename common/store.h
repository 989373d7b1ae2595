/* Redis store (hiredis): policy-group cache, distributed locks, per-job
 * state and per-service ordering. Every key starts with the configured
 * prefix. One store per thread (a hiredis context is not thread-safe).
 * Any Redis failure returns -1 with ERR_STORE_UNAVAILABLE. */
#ifndef COMET_STORE_H
#define COMET_STORE_H

#include <stdbool.h>
#include "config.h"
#include "errors.h"

struct store;

/* Connects (and AUTHs/SELECTs per cfg). NULL with err on failure. */
struct store *store_connect(const struct config *cfg, struct err *err);
void store_free(struct store *s);
/* Reconnects when the connection broke; 0 when usable. */
int store_ensure(struct store *s, struct err *err);
int store_ping(struct store *s, struct err *err);

/* Policy cache: key policy:<server>:<policy_id> = "1" once the policy
 * exists on that server. A key seen in Redis is also remembered in the
 * process for a minute (a create asks every time). */
int store_policy_known(struct store *s, const char *server, const char *policy_id,
                       bool *known, struct err *err);
int store_policy_remember(struct store *s, const char *server, const char *policy_id,
                          struct err *err);

/* Lock: SET key token NX PX ttl; release by compare-and-delete (Lua), so a
 * holder whose lock expired never frees someone else's. token gets a
 * random value on acquire. */
int store_lock_acquire(struct store *s, const char *name, int ttl_ms, char token[33],
                       bool *acquired, struct err *err);
int store_lock_release(struct store *s, const char *name, const char *token, struct err *err);

/* Per-job state and completed steps (hash job:<id>), for effectively-once
 * execution of redelivered jobs. */
enum job_state { JOB_STATE_NONE = 0, JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED,
                 JOB_STATE_FAILED, JOB_STATE_DEAD };
const char *job_state_name(enum job_state st);

/* Generic per-job fields (HGET/HSET on job:<id>); value "" when absent. */
int store_job_get(struct store *s, const char *job_id, const char *field, char *out,
                  size_t outlen, struct err *err);
int store_job_set(struct store *s, const char *job_id, const char *field, const char *value,
                  int retention_seconds, struct err *err);

/* Most fields one pipelined call reads or writes. */
#define STORE_FIELDS_MAX 8

/* Several fields of job:<id> in one round trip (HMGET); each outs[i] is ""
 * when absent. */
int store_job_get_fields(struct store *s, const char *job_id, size_t n, const char *const *fields,
                         char *const *outs, const size_t *outlens, struct err *err);
/* Several fields in one HSET (they land together) plus the expiry refresh,
 * in one round trip. store_job_set is the one-field case. */
int store_job_set_fields(struct store *s, const char *job_id, size_t n, const char *const *fields,
                         const char *const *values, int retention_seconds, struct err *err);

/* Fields of job:<id> to read and where to copy them (each out "" when
 * absent), as store_job_get_fields takes them. */
struct store_fields {
    size_t n;
    const char *const *names;
    char *const *outs;
    const size_t *lens;
};

/* What the gate reads before a job runs, fetched in one round trip. */
struct store_gate_view {
    char state[32];          /* the job's state field, "" when none */
    char *result;            /* caller's buffer: the stored result event, "" when none */
    size_t result_len;       /* its size */
    long long high_seq;      /* the service's high-water mark, -1 when none or not asked */
    char after_state[32];    /* the predecessor's state, "" when none or not asked */
    bool after_broken;       /* the predecessor failed and broke its chain (see store_job_finish) */
    bool locked;             /* the service lock was taken (lock_ttl_ms > 0) */
    const struct store_fields *steps; /* in: job fields to read once the lock is taken, or NULL */
    bool steps_read;         /* out: they were read, after the lock was taken */
};
/* Reads job:<job_id> state and result, svc:<server>:<service_id> when
 * want_seq, and job:<after> state when after is non-empty; when
 * lock_ttl_ms > 0 also takes the service lock as store_service_lock does
 * (the caller releases it if the job does not run), and then the job's
 * v->steps fields: read after the lock in the same round trip, they hold
 * everything an earlier holder wrote before it released the lock. */
int store_gate_read(struct store *s, const char *job_id, const char *server, long long service_id,
                    bool want_seq, const char *after, int lock_ttl_ms, struct store_gate_view *v,
                    struct err *err);
/* broken: this job failed in a way its successors must not run past (a
 * create that failed, or a job stopped by such a failure); recorded as
 * field "broken" and cleared by a later success of the same job.
 * A job's terminal record in one round trip: HSET result (when non-NULL)
 * and state together, the expiry refresh, and when seq > 0 the service's
 * high-water mark raised as store_service_seq_raise does; with unlock,
 * also the service lock released as store_service_unlock does, after the
 * record (one round trip for the end of a job). */
int store_job_finish(struct store *s, const char *job_id, const char *state, const char *result_json,
                     int retention_seconds, const char *server, long long service_id,
                     long long seq, bool broken, bool unlock, struct err *err);

/* Per-service high-water mark: the highest seq that succeeded for a
 * service (svc:<server>:<service_id>); -1 when none is recorded. Used to
 * skip replays superseded by a later job. */
int store_service_seq_get(struct store *s, const char *server, long long service_id,
                          long long *seq, struct err *err);
int store_service_seq_raise(struct store *s, const char *server, long long service_id,
                            long long seq, int retention_seconds, struct err *err);
/* Mutual exclusion per service (two jobs of one service never run at
 * once). The lock holds the job id; the same job may take it again. */
int store_service_lock(struct store *s, const char *server, long long service_id,
                       const char *job_id, int ttl_ms, bool *acquired, struct err *err);
int store_service_unlock(struct store *s, const char *server, long long service_id,
                         const char *job_id, struct err *err);

#endif
