/* Runs one delivered job and turns every ending into messages to publish. */
#include "process.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "actions.h"
#include "gate.h"
#include "crypto.h"
#include "log.h"
#include "metrics.h"

#define PASSWORD_MAX 512

int process_ctx_init(struct process_ctx *ctx, const struct config *cfg)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->cfg = cfg;
    ctx->comet = comet_client_new(cfg->comet_connect_timeout_ms, cfg->comet_timeout_ms);
    if (!ctx->comet)
        return -1;
    /* Redis may be down at start; store is (re)connected per job. */
    return 0;
}

void process_ctx_clear(struct process_ctx *ctx)
{
    comet_client_free(ctx->comet);
    store_free(ctx->store);
    memset(ctx, 0, sizeof(*ctx));
}

void outcome_clear(struct outcome *out)
{
    for (size_t i = 0; i < out->nmsgs; i++)
        bus_msg_clear(&out->msgs[i]);
    out->nmsgs = 0;
}

/* Exponential backoff over the tiers with jitter: attempt k waits about
 * tier[k-1]; half the time one tier less, so a burst that failed together
 * does not come back together. */
static int pick_tier(const int *tiers, int n, int attempt)
{
    int idx = attempt - 1;
    if (idx >= n)
        idx = n - 1;
    if (idx > 0 && randombytes_uniform(2) == 0)
        idx--;
    return tiers[idx];
}

/* ---- result and copies ---------------------------------------------------- */

static void result_start(struct result *r, const struct job *job, const struct bus_delivery *d,
                         int attempt, const struct config *cfg, long long started)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->job_id, sizeof(r->job_id), "%.36s", job->job_id[0] ? job->job_id : d->message_id);
    r->service_id = job->service_id;
    r->action = job->action;
    r->seq = job->seq;
    r->attempt = attempt;
    r->started_at_ms = started;
    snprintf(r->worker, sizeof(r->worker), "%s", cfg->worker_name);
}

static int add_result_msg(struct outcome *out, struct result *r)
{
    r->finished_at_ms = now_ms();
    char *body = result_encode(r);
    if (!body)
        return -1;
    struct bus_msg *m = &out->msgs[out->nmsgs++];
    char rk[128];
    snprintf(rk, sizeof(rk), "%s.%s", job_action_name(r->action), result_status_name(r->status));
    bus_msg_init(m, BUS_EX_RESULTS, rk);
    bus_msg_take_body(m, body, strlen(body));
    snprintf(m->message_id, sizeof(m->message_id), "%s", r->job_id);
    snprintf(m->type, sizeof(m->type), "result");
    return 0;
}

/* Headers that describe one failure; replaced on every copy. */
static const char *const failure_headers[] = {
    BUS_H_ATTEMPT, BUS_H_LAST_FAIL, BUS_H_ERR_CLASS, BUS_H_ERR_CODE, BUS_H_ERR_MSG, BUS_H_WORKER,
    NULL
};

/* A copy of the job (same body and signature) for a retry tier or the DLQ. */
static int add_job_copy(struct outcome *out, const struct bus_delivery *d, const char *exchange,
                        const char *rk, int attempts, const struct err *e, const struct config *cfg)
{
    struct bus_msg *m = &out->msgs[out->nmsgs];
    bus_msg_init(m, exchange, rk);
    if (bus_msg_set_body(m, d->body, d->len))
        return -1;
    out->nmsgs++;
    snprintf(m->message_id, sizeof(m->message_id), "%s", d->message_id);
    snprintf(m->type, sizeof(m->type), "%s", d->type);
    char now[32];
    format_time_ms(now_ms(), now);
    if (bus_msg_copy_headers(m, d, failure_headers) ||
        bus_msg_add_int(m, BUS_H_ATTEMPT, attempts) ||
        (!bus_delivery_str(d, BUS_H_FIRST_FAIL) && bus_msg_add_str(m, BUS_H_FIRST_FAIL, now)) ||
        bus_msg_add_str(m, BUS_H_LAST_FAIL, now) ||
        bus_msg_add_str(m, BUS_H_ERR_CLASS, err_class_name(err_class_of(e->code))) ||
        bus_msg_add_str(m, BUS_H_ERR_CODE, err_code_name(e->code)) ||
        bus_msg_add_str(m, BUS_H_ERR_MSG, e->msg) ||
        bus_msg_add_str(m, BUS_H_WORKER, cfg->worker_name))
        return -1;
    return 0;
}

/* ---- the job --------------------------------------------------------------- */

/* Verifies size and signature, then decodes. */
static int verify_and_decode(const struct config *cfg, const struct bus_delivery *d,
                             struct job *job, struct err *e)
{
    if (d->len > (size_t)cfg->worker_max_body)
        return err_set(e, ERR_TOO_LARGE, "job body is %zu bytes, over the %d byte limit", d->len,
                       cfg->worker_max_body);
    const char *kid = bus_delivery_str(d, BUS_H_KID);
    const char *sig = bus_delivery_str(d, BUS_H_SIG);
    if (!kid || !sig)
        return err_set(e, ERR_BAD_SIGNATURE, "job has no %s/%s header", BUS_H_KID, BUS_H_SIG);
    const struct key *key = keyring_find(&cfg->keys, kid);
    if (!key)
        return err_set(e, ERR_UNKNOWN_KEY, "job signed with unknown key id '%s'", kid);
    if (!sign_body_verify(key, d->body, d->len, sig))
        return err_set(e, ERR_BAD_SIGNATURE, "job signature does not match (key id '%s')", kid);
    if (job_decode(d->body, d->len, job, e))
        return -1;
    if (d->message_id[0] && strcmp(d->message_id, job->job_id) != 0)
        return err_set(e, ERR_BAD_FIELD, "message_id %s differs from the body's job_id", d->message_id);
    return 0;
}

static int open_secret(const struct config *cfg, const struct job *job, char *pw, size_t cap,
                       struct err *e)
{
    pw[0] = '\0';
    if (!job->has_secret)
        return 0;
    const struct key *key = keyring_find(&cfg->keys, job->secret_kid);
    if (!key)
        return err_set(e, ERR_UNKNOWN_KEY, "password sealed with unknown key id '%s'", job->secret_kid);
    return unseal_password(key, job->secret_nonce, job->secret_box, pw, cap, e);
}

static int ensure_store(struct process_ctx *ctx, struct err *e)
{
    if (!ctx->store) {
        ctx->store = store_connect(ctx->cfg, e);
        return ctx->store ? 0 : -1;
    }
    return store_ensure(ctx->store, e);
}

static void log_outcome(const struct job *job, const struct result *r, const struct err *e,
                        long long duration)
{
    struct log_fields f = LOG_FIELDS_INIT;
    f.job_id = r->job_id[0] ? r->job_id : NULL;
    f.service_id = job->service_id;
    f.action = job->action < ACTION__COUNT ? job_action_name(job->action) : NULL;
    f.attempt = r->attempt;
    f.duration_ms = (long)duration;
    f.error = e->code != ERR_OK ? err_code_name(e->code) : NULL;
    enum log_level lvl = r->status == RESULT_SUCCEEDED ? LOGL_INFO
                         : r->status == RESULT_FAILED  ? LOGL_ERROR
                                                       : LOGL_WARN;
    if (e->code != ERR_OK)
        log_msgf(lvl, &f, "job %s: %s", result_status_name(r->status), e->msg);
    else
        log_msgf(lvl, &f, "job %s", result_status_name(r->status));
}

/* A copy that comes back after the shortest tier: waiting for a
 * predecessor or a busy service costs no attempt. */
static int add_wait_copy(struct outcome *out, const struct bus_delivery *d, int delay_ms)
{
    static const char *const skip[] = { BUS_H_WAITS, NULL };
    struct bus_msg *m = &out->msgs[out->nmsgs];
    char queue[64];
    bus_retry_queue_name(delay_ms, queue);
    bus_msg_init(m, "", queue);
    if (bus_msg_set_body(m, d->body, d->len))
        return -1;
    out->nmsgs++;
    snprintf(m->message_id, sizeof(m->message_id), "%s", d->message_id);
    snprintf(m->type, sizeof(m->type), "%s", d->type);
    if (bus_msg_copy_headers(m, d, skip) ||
        bus_msg_add_int(m, BUS_H_WAITS, bus_delivery_int(d, BUS_H_WAITS, 0) + 1))
        return -1;
    return 0;
}

/* Sends the job round the shortest tier without counting an attempt: for a
 * predecessor not done yet, a busy service, or Redis unreachable (no job
 * runs without its idempotency and ordering state). */
static void outcome_wait(struct outcome *out, const struct bus_delivery *d, const struct job *job,
                         const int *tiers, int ntiers, const char *why)
{
    struct log_fields f = LOG_FIELDS_INIT;
    f.job_id = job->job_id[0] ? job->job_id : NULL;
    f.service_id = job->service_id;
    f.action = job->action < ACTION__COUNT ? job_action_name(job->action) : NULL;
    log_msgf(out->store_down ? LOGL_WARN : LOGL_DEBUG, &f, "job waits: %s", why);
    outcome_clear(out);
    out->action = job->action;
    out->status = RESULT_RETRYING;
    if (ntiers <= 0 || add_wait_copy(out, d, tiers[0]) != 0) {
        outcome_clear(out);
        out->disposition = OUTCOME_REQUEUE;
    }
}

/* The stored result event of a job that already succeeded, sent again. */
static int add_stored_result(struct outcome *out, const struct job *job, const char *json)
{
    struct bus_msg *m = &out->msgs[out->nmsgs];
    char rk[128];
    snprintf(rk, sizeof(rk), "%s.succeeded", job_action_name(job->action));
    bus_msg_init(m, BUS_EX_RESULTS, rk);
    if (bus_msg_set_body(m, json, strlen(json)))
        return -1;
    out->nmsgs++;
    snprintf(m->message_id, sizeof(m->message_id), "%s", job->job_id);
    snprintf(m->type, sizeof(m->type), "result");
    return 0;
}

/* Remembers a terminal status for ordering and duplicates. When Redis fails
 * here the outcome is not published: the job waits and runs again once
 * Redis is back (the actions converge), so successors are never left
 * waiting for a state that was never written. */
static int record(struct process_ctx *ctx, const struct job *job, struct result *r, struct gate *g,
                  struct err *e)
{
    if (!ctx->store || !job->job_id[0] || r->status == RESULT_RETRYING)
        return 0;
    char *json = r->status == RESULT_SUCCEEDED ? result_encode(r) : NULL;
    int rc = gate_record(ctx->store, ctx->cfg, job, r->status, json, g, e);
    free(json);
    return rc;
}

void process_delivery(struct process_ctx *ctx, const struct bus_delivery *d, struct outcome *out)
{
    const struct config *cfg = ctx->cfg;
    long long started = now_ms();
    int attempt = (int)bus_delivery_int(d, BUS_H_ATTEMPT, 0) + 1;
    struct job job;
    struct err e;
    struct result r;
    struct gate g;
    char password[PASSWORD_MAX];
    int tiers[CONFIG_MAX_RETRY_TIERS];
    int ntiers = config_retry_tiers(cfg, tiers);

    /* Not memset: an outcome is ~18 KiB of mostly unused message slots,
     * recycled across jobs; bus_msg_init sets up the ones used. */
    out->tag = d->tag;
    out->generation = 0;
    out->disposition = OUTCOME_ACK;
    out->nmsgs = 0;
    out->action = ACTION__COUNT; /* every ending sets it */
    out->status = RESULT_SUCCEEDED;
    out->error = ERR_OK;
    out->duration_ms = 0;
    out->store_down = false;
    memset(&g, 0, sizeof(g));
    job_init(&job);
    job.action = ACTION__COUNT;
    err_clear(&e);
    password[0] = '\0';

    int rc = verify_and_decode(cfg, d, &job, &e);
    bool trusted = rc == 0; /* signature verified and body decoded */
    if (job.action == ACTION__COUNT && job_action_parse(d->type, &job.action) != 0)
        job.action = ACTION__COUNT; /* unknown: the result says "unknown" */
    const struct config_server *server = NULL;
    if (rc == 0) {
        server = config_find_server(cfg, job.server_url);
        if (!server)
            rc = err_set(&e, ERR_UNKNOWN_SERVER, "server %s is not in this worker's config",
                         job.server_url);
    }
    if (rc == 0)
        rc = ensure_store(ctx, &e);
    /* A create's recorded steps come with the gate's round trip. */
    struct action_steps steps;
    action_steps_init(&steps);
    if (rc == 0)
        rc = gate_enter(ctx->store, cfg, &job, bus_delivery_int(d, BUS_H_FORCE, 0) != 0,
                        bus_delivery_int(d, BUS_H_WAITS, 0),
                        job.action == ACTION_CREATE ? &steps.fields : NULL, &g, &e);
    if (rc != 0 && e.code == ERR_STORE_UNAVAILABLE) {
        out->store_down = true;
        metrics_redis_error();
        outcome_wait(out, d, &job, tiers, ntiers, e.msg);
        return;
    }
    if (rc == 0 && g.verdict == GATE_WAIT) {
        outcome_wait(out, d, &job, tiers, ntiers, g.reason);
        return;
    }
    if (rc == 0 && g.verdict == GATE_DUPLICATE) {
        struct log_fields f = LOG_FIELDS_INIT;
        f.job_id = job.job_id;
        f.service_id = job.service_id;
        log_msgf(LOGL_INFO, &f, "job already succeeded: sending its result again");
        out->action = job.action;
        out->status = RESULT_SUCCEEDED;
        metrics_job_done(job.action, RESULT_SUCCEEDED, (now_ms() - started) / 1000.0);
        if (add_stored_result(out, &job, g.stored_result) != 0) {
            outcome_clear(out);
            out->disposition = OUTCOME_REQUEUE;
        }
        return;
    }
    if (rc == 0 && g.verdict == GATE_BLOCKED)
        rc = err_set(&e, ERR_PREDECESSOR_FAILED, "%s", g.reason);
    if (rc == 0 && g.verdict == GATE_RUN)
        rc = open_secret(cfg, &job, password, sizeof(password), &e);

    result_start(&r, &job, d, attempt, cfg, started);
    if (rc == 0 && g.verdict == GATE_RUN) {
        struct action_ctx actx = { .cfg = cfg, .server = server, .comet = ctx->comet,
                                   .store = ctx->store, .steps = g.steps_read ? &steps : NULL };
        rc = action_run(&actx, &job, job.has_secret ? password : NULL, &r, &e);
    }
    sodium_memzero(password, sizeof(password));
    if (rc == 0)
        err_clear(&e); /* steps may leave a handled error behind */
    if (rc != 0 && e.code == ERR_STORE_UNAVAILABLE) {
        gate_leave(ctx->store, &job, &g);
        out->store_down = true;
        metrics_redis_error();
        outcome_wait(out, d, &job, tiers, ntiers, e.msg);
        return;
    }

    out->action = job.action;
    out->error = e.code;
    enum err_class cls = rc == 0 ? ERRC_NONE : err_class_of(e.code);
    int built = 0;

    if (rc == 0 && g.verdict == GATE_SUPERSEDED) {
        r.status = RESULT_SKIPPED;
        snprintf(r.reason, sizeof(r.reason), "superseded");
        log_info("job %s skipped: %s", job.job_id, g.reason);
        built = add_result_msg(out, &r);
    } else if (rc == 0) {
        r.status = RESULT_SUCCEEDED;
        built = add_result_msg(out, &r);
    } else if (cls == ERRC_TRANSIENT && attempt < cfg->retry_max_attempts && ntiers > 0) {
        int delay = pick_tier(tiers, ntiers, attempt);
        char queue[64], next[32];
        bus_retry_queue_name(delay, queue);
        format_time_ms(now_ms() + delay, next);
        r.status = RESULT_RETRYING;
        r.error = e;
        snprintf(r.next_attempt_at, sizeof(r.next_attempt_at), "%s", next);
        /* Default exchange: the routing key is the tier queue's name. */
        built = add_job_copy(out, d, "", queue, attempt, &e, cfg);
        if (built == 0)
            built = add_result_msg(out, &r);
    } else {
        if (cls == ERRC_TRANSIENT) {
            char why[sizeof(e.msg)];
            snprintf(why, sizeof(why), "%s", e.msg);
            err_set(&e, e.code, "%.200s (gave up after %d attempts)", why, attempt);
        }
        r.status = RESULT_FAILED;
        r.error = e;
        built = add_job_copy(out, d, BUS_EX_DEAD, d->type[0] ? d->type : "unknown", attempt, &e, cfg);
        if (built == 0)
            built = add_result_msg(out, &r);
    }
    struct err rec_err;
    if (trusted && record(ctx, &job, &r, &g, &rec_err) != 0) {
        gate_leave(ctx->store, &job, &g);
        out->store_down = true;
        metrics_redis_error();
        outcome_wait(out, d, &job, tiers, ntiers, rec_err.msg);
        return;
    }
    if (ctx->store)
        gate_leave(ctx->store, &job, &g);
    if (built != 0) {
        /* Could not build what must be published (out of memory): leave the
         * job to the broker, which redelivers it. */
        outcome_clear(out);
        out->disposition = OUTCOME_REQUEUE;
    }
    out->status = r.status;
    out->duration_ms = now_ms() - started;
    metrics_job_done(job.action, r.status, out->duration_ms / 1000.0);
    if (r.status == RESULT_RETRYING)
        metrics_retry();
    else if (r.status == RESULT_FAILED)
        metrics_dead_lettered(err_code_name(e.code));
    log_outcome(&job, &r, &e, out->duration_ms);
}
