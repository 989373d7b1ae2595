/* The dispatcher's consumer loop: deliveries to signed POSTs, outcomes to acks, retries or dead letters. */
#include "dispatcher.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "clock.h"
#include "dispatcher_http.h"
#include "job.h"
#include "log.h"
#include "metrics.h"

#define WAIT_SLICE_MS 200        /* bound on how late a stop, retry or heartbeat is noticed */
#define BACKOFF_MIN_MS 200       /* broker reconnect backoff, as the worker's runner */
#define BACKOFF_MAX_MS 10000
#define DEAD_CODE_PREFIX "callback_http_"

/* Where an event stands. Every state but FREE holds an unacked delivery. */
enum dev_state {
    DEV_FREE = 0,
    DEV_WAITING,            /* POST due at due_ms (first try or a retry) */
    DEV_POSTING,            /* POST in flight */
    DEV_DEAD_DUE,           /* refused: its dead-letter copy is due at due_ms */
    DEV_CONFIRMING,         /* dead-letter copy published, awaiting its confirm (seq) */
};

/* One result event between its delivery and its ack. */
struct devent {
    enum dev_state state;
    struct bus_delivery d;  /* owns the body; the POST reads it in place */
    int attempts;           /* POSTs made */
    int backoff_ms;         /* next retry delay */
    long long due_ms;
    uint64_t seq;           /* confirm of the dead-letter copy */
    char dead_code[64];     /* x-comet-error-code of the copy */
    char dead_msg[256];     /* x-comet-error-message of the copy */
    /* For log lines only (decoded best effort). */
    char job_id[UUID_STR_LEN];
    long long service_id;
    char action[32];
};

struct dispatcher {
    const struct config *cfg;
    struct bus *bus;
    struct dhttp *http;
    struct devent *events;  /* prefetch bounds the unacked deliveries: one slot each */
    size_t nevents;
    int tiers[CONFIG_MAX_RETRY_TIERS];
    int ntiers;
    int backoff_ms;         /* broker reconnect */
    long long next_connect_ms;
    bool stopping;
    bool broken;            /* the bus failed; disconnect after this step */
    char broken_why[256];
    unsigned long delivered, retried, dead; /* totals, for the closing log line */
};

static struct log_fields event_fields(const struct devent *ev)
{
    struct log_fields f = LOG_FIELDS_INIT;
    f.job_id = ev->job_id[0] ? ev->job_id : NULL;
    f.service_id = ev->service_id;
    f.action = ev->action[0] ? ev->action : NULL;
    f.attempt = ev->attempts;
    return f;
}

/* ---- events ------------------------------------------------------------------ */

static void event_release(struct devent *ev)
{
    bus_delivery_clear(&ev->d);
    memset(ev, 0, sizeof(*ev));
}

/* Takes the delivery (ownership moves into the slot); NULL when full. */
static struct devent *event_take(struct dispatcher *dp, struct bus_delivery *d)
{
    for (size_t i = 0; i < dp->nevents; i++) {
        struct devent *ev = &dp->events[i];
        if (ev->state != DEV_FREE)
            continue;
        memset(ev, 0, sizeof(*ev));
        ev->d = *d;
        memset(d, 0, sizeof(*d)); /* the slot owns the body now */
        ev->state = DEV_WAITING;
        ev->backoff_ms = DISPATCHER_BACKOFF_FIRST_MS;
        ev->due_ms = mono_ms();
        struct result r;
        struct err e;
        if (result_decode(ev->d.body, ev->d.len, &r, &e) == 0) {
            snprintf(ev->job_id, sizeof(ev->job_id), "%s", r.job_id);
            ev->service_id = r.service_id;
            snprintf(ev->action, sizeof(ev->action), "%s",
                     r.action < ACTION__COUNT ? job_action_name(r.action) : "unknown");
        } else {
            /* Still POSTed: WHMCS decides; a 400 dead-letters it with the reason. */
            snprintf(ev->job_id, sizeof(ev->job_id), "%.36s", ev->d.message_id);
        }
        return ev;
    }
    return NULL;
}

static size_t events_busy(const struct dispatcher *dp)
{
    size_t n = 0;
    for (size_t i = 0; i < dp->nevents; i++)
        n += dp->events[i].state != DEV_FREE;
    return n;
}

/* The retry delay after ms: doubled, capped, less up to a fifth of jitter so
 * a backlog does not hit a recovering WHMCS in lock step. */
static int next_backoff(int ms)
{
    int next = ms * 2 > DISPATCHER_BACKOFF_MAX_MS ? DISPATCHER_BACKOFF_MAX_MS : ms * 2;
    return next - rand() % (next / 5 + 1);
}

/* Records a broker failure; the loop disconnects once the current step is
 * over (never from inside curl's completion processing). */
static void bus_failed(struct dispatcher *dp, const char *why)
{
    if (dp->broken)
        return;
    dp->broken = true;
    snprintf(dp->broken_why, sizeof(dp->broken_why), "%s", why);
}

/* ---- connection -------------------------------------------------------------- */

static void disconnect(struct dispatcher *dp, const char *why)
{
    if (!dp->bus)
        return;
    log_warn("broker connection lost: %s", why);
    bus_free(dp->bus);
    dp->bus = NULL;
    dp->broken = false;
    /* Unacked deliveries go back to the queue with the connection: forget
     * them and their POSTs (a repeat is recorded once by WHMCS). */
    dhttp_abort_all(dp->http);
    for (size_t i = 0; i < dp->nevents; i++)
        if (dp->events[i].state != DEV_FREE)
            event_release(&dp->events[i]);
    dp->next_connect_ms = mono_ms() + dp->backoff_ms;
}

static void try_connect(struct dispatcher *dp)
{
    if (mono_ms() < dp->next_connect_ms)
        return;
    struct err e;
    err_clear(&e);
    struct bus *b = bus_connect(dp->cfg->amqp_url, dp->cfg->amqp_heartbeat, &e);
    if (b) {
        if (bus_declare_topology(b, dp->tiers, dp->ntiers, &e) == 0 &&
            bus_qos(b, dp->cfg->dispatcher_concurrency, &e) == 0 &&
            bus_consume(b, BUS_Q_RESULTS, &e) == 0) {
            dp->bus = b;
            dp->backoff_ms = BACKOFF_MIN_MS;
            log_info("connected to the broker; consuming %s (prefetch %d)", BUS_Q_RESULTS,
                     dp->cfg->dispatcher_concurrency);
            return;
        }
        bus_free(b);
    }
    log_warn("broker: %s; retrying in %d ms", e.msg, dp->backoff_ms);
    dp->next_connect_ms = mono_ms() + dp->backoff_ms;
    dp->backoff_ms = dp->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : dp->backoff_ms * 2;
    dp->backoff_ms += rand() % (dp->backoff_ms / 4 + 1);
}

/* ---- settling ------------------------------------------------------------------- */

static int settle_ack(struct dispatcher *dp, struct devent *ev, struct err *e)
{
    int rc = bus_ack(dp->bus, ev->d.tag, e);
    event_release(ev);
    return rc;
}

static int settle_requeue(struct dispatcher *dp, struct devent *ev, struct err *e)
{
    int rc = bus_nack(dp->bus, ev->d.tag, true, e);
    event_release(ev);
    return rc;
}

/* Publishes the dead-letter copy; the ack waits for its confirm. Publishing
 * is asynchronous because this bus is consuming (bus_publish_wait would
 * swallow deliveries that arrive meanwhile). */
static int publish_dead(struct dispatcher *dp, struct devent *ev, struct err *e)
{
    struct bus_msg m;
    /* The default exchange routes by queue name. */
    bus_msg_init(&m, "", BUS_Q_RESULTS_DEAD);
    snprintf(m.message_id, sizeof(m.message_id), "%s", ev->d.message_id);
    snprintf(m.type, sizeof(m.type), "%s", ev->d.type);
    static const char *const skip[] = { BUS_H_ERR_CODE, BUS_H_ERR_MSG, NULL };
    if (bus_msg_set_body(&m, ev->d.body, ev->d.len) != 0 ||
        bus_msg_copy_headers(&m, &ev->d, skip) != 0 ||
        bus_msg_add_str(&m, BUS_H_ERR_CODE, ev->dead_code) != 0 ||
        bus_msg_add_str(&m, BUS_H_ERR_MSG, ev->dead_msg) != 0) {
        /* Out of memory or too many headers: requeue rather than lose it. */
        struct log_fields f = event_fields(ev);
        log_msgf(LOGL_ERROR, &f, "cannot build the dead-letter copy; requeued");
        bus_msg_clear(&m);
        return settle_requeue(dp, ev, e);
    }
    int rc = bus_publish(dp->bus, &m, &ev->seq, e);
    bus_msg_clear(&m);
    if (rc == 0)
        ev->state = DEV_CONFIRMING;
    return rc;
}

static void on_confirm(struct dispatcher *dp, uint64_t seq, bool multiple, bool refused)
{
    struct err e;
    err_clear(&e);
    for (size_t i = 0; i < dp->nevents; i++) {
        struct devent *ev = &dp->events[i];
        if (ev->state != DEV_CONFIRMING || !(multiple ? ev->seq <= seq : ev->seq == seq))
            continue;
        struct log_fields f = event_fields(ev);
        f.error = ev->dead_code;
        if (refused) {
            log_msgf(LOGL_WARN, &f, "broker refused the dead-letter copy; trying again");
            ev->state = DEV_DEAD_DUE;
            ev->due_ms = mono_ms() + ev->backoff_ms;
            ev->backoff_ms = next_backoff(ev->backoff_ms);
            continue;
        }
        log_msgf(LOGL_ERROR, &f, "callback refused the event; dead-lettered to %s: %s",
                 BUS_Q_RESULTS_DEAD, ev->dead_msg);
        dp->dead++;
        if (settle_ack(dp, ev, &e) != 0)
            bus_failed(dp, e.msg);
    }
}

/* A POST finished: ack, retry later, or dead-letter. */
static void on_posted(const struct dhttp_done *done, void *arg)
{
    struct dispatcher *dp = arg;
    struct devent *ev = done->ctx;
    struct err e;
    err_clear(&e);
    int rc = 0;
    struct log_fields f = event_fields(ev);
    f.duration_ms = done->duration_ms;
    static const enum metrics_delivery_outcome as_metric[] = {
        [DHTTP_DELIVERED] = METRICS_DELIVERY_DELIVERED,
        [DHTTP_RETRY] = METRICS_DELIVERY_RETRIED,
        [DHTTP_REFUSED] = METRICS_DELIVERY_DEAD_LETTERED,
    };
    metrics_dispatch_done(as_metric[done->outcome], done->duration_ms / 1000.0);
    switch (done->outcome) {
    case DHTTP_DELIVERED:
        if (ev->attempts > 1 || log_enabled(LOGL_DEBUG))
            log_msgf(ev->attempts > 1 ? LOGL_INFO : LOGL_DEBUG, &f, "delivered (HTTP %ld)",
                     done->status);
        dp->delivered++;
        rc = settle_ack(dp, ev, &e);
        break;
    case DHTTP_RETRY:
        dp->retried++;
        if (dp->stopping) {
            /* No time left to back off: the queue keeps it for the next start. */
            log_msgf(LOGL_WARN, &f, "callback failed while stopping (HTTP %ld: %s); requeued",
                     done->status, done->detail);
            rc = settle_requeue(dp, ev, &e);
            break;
        }
        ev->state = DEV_WAITING;
        ev->due_ms = mono_ms() + ev->backoff_ms;
        if (done->status)
            log_msgf(LOGL_WARN, &f, "callback failed (HTTP %ld: %s); retry in %d ms",
                     done->status, done->detail, ev->backoff_ms);
        else
            log_msgf(LOGL_WARN, &f, "callback failed (no answer: %s); retry in %d ms",
                     done->detail, ev->backoff_ms);
        ev->backoff_ms = next_backoff(ev->backoff_ms);
        break;
    case DHTTP_REFUSED:
        snprintf(ev->dead_code, sizeof(ev->dead_code), DEAD_CODE_PREFIX "%ld", done->status);
        snprintf(ev->dead_msg, sizeof(ev->dead_msg), "callback answered HTTP %ld: %.200s",
                 done->status, done->detail[0] ? done->detail : "(empty body)");
        ev->backoff_ms = DISPATCHER_BACKOFF_FIRST_MS;
        rc = publish_dead(dp, ev, &e);
        break;
    }
    if (rc != 0)
        bus_failed(dp, e.msg);
}

/* Starts every POST and dead-letter copy that is due; returns ms until the next one (or the slice). */
static long start_due(struct dispatcher *dp)
{
    long long now = mono_ms();
    long wait = WAIT_SLICE_MS;
    struct err e;
    err_clear(&e);
    for (size_t i = 0; i < dp->nevents && !dp->broken; i++) {
        struct devent *ev = &dp->events[i];
        if (ev->state != DEV_WAITING && ev->state != DEV_DEAD_DUE)
            continue;
        if (ev->due_ms > now) {
            if (ev->due_ms - now < wait)
                wait = (long)(ev->due_ms - now);
            continue;
        }
        if (ev->state == DEV_DEAD_DUE) {
            if (publish_dead(dp, ev, &e) != 0)
                bus_failed(dp, e.msg);
            continue;
        }
        if (dhttp_post(dp->http, ev->d.body, ev->d.len, ev, &e) != 0) {
            struct log_fields f = event_fields(ev);
            log_msgf(LOGL_ERROR, &f, "%s; trying again later", e.msg);
            ev->due_ms = now + ev->backoff_ms;
            continue;
        }
        ev->attempts++;
        ev->state = DEV_POSTING;
    }
    return wait;
}

/* ---- stop ------------------------------------------------------------------------- */

static void begin_stop(struct dispatcher *dp)
{
    dp->stopping = true;
    struct err e;
    err_clear(&e);
    if (dp->bus && bus_cancel(dp->bus, &e) != 0)
        bus_failed(dp, e.msg);
    /* Events waiting for a retry go back at once; POSTs in flight may finish. */
    for (size_t i = 0; i < dp->nevents && dp->bus && !dp->broken; i++) {
        struct devent *ev = &dp->events[i];
        if ((ev->state == DEV_WAITING || ev->state == DEV_DEAD_DUE) &&
            settle_requeue(dp, ev, &e) != 0)
            bus_failed(dp, e.msg);
    }
    if (dp->broken)
        disconnect(dp, dp->broken_why);
    log_info("stopping: waiting up to %d s for %zu callbacks in flight",
             dp->cfg->worker_grace_seconds, events_busy(dp));
}

/* ---- loop ------------------------------------------------------------------------- */

static void handle_event(struct dispatcher *dp, struct bus_event *bev)
{
    struct err e;
    err_clear(&e);
    int rc = 0;
    switch (bev->kind) {
    case BUS_EV_DELIVERY:
        if (dp->stopping || !event_take(dp, &bev->delivery)) {
            /* More deliveries than prefetch allows would be a broker bug; never drop one. */
            rc = bus_nack(dp->bus, bev->delivery.tag, true, &e);
        }
        bus_delivery_clear(&bev->delivery);
        break;
    case BUS_EV_ACK:
        on_confirm(dp, bev->seq, bev->multiple, false);
        break;
    case BUS_EV_NACK:
        on_confirm(dp, bev->seq, bev->multiple, true);
        break;
    default:
        break;
    }
    if (rc != 0)
        bus_failed(dp, e.msg);
}

/* One wait on the broker and curl's sockets, then whatever became ready. */
static void step(struct dispatcher *dp, long wait_ms)
{
    struct err e;
    err_clear(&e);
    long curl_ms = dhttp_timeout_ms(dp->http);
    if (curl_ms >= 0 && curl_ms < wait_ms)
        wait_ms = curl_ms;
    struct bus_event bev;
    if (!dp->broken && bus_wait(dp->bus, (int)wait_ms, dhttp_fd(dp->http), &bev, &e) != 0)
        bus_failed(dp, e.msg);
    else if (!dp->broken) {
        bool woke = bev.kind == BUS_EV_WAKE;
        handle_event(dp, &bev);
        /* curl's sockets were ready: the broker may have data too; do not starve it. */
        if (woke && !dp->broken) {
            if (bus_wait(dp->bus, 0, -1, &bev, &e) != 0)
                bus_failed(dp, e.msg);
            else
                handle_event(dp, &bev);
        }
    }
    if (dhttp_run(dp->http, on_posted, dp, &e) != 0)
        bus_failed(dp, e.msg); /* curl itself broke: start over with fresh deliveries */
    if (dp->broken)
        disconnect(dp, dp->broken_why);
}

int dispatcher_run(const struct config *cfg, volatile sig_atomic_t *stop)
{
    struct dispatcher dp;
    memset(&dp, 0, sizeof(dp));
    dp.cfg = cfg;
    dp.backoff_ms = BACKOFF_MIN_MS;
    /* The dispatcher declares the whole topology too, so it can start first. */
    dp.ntiers = config_retry_tiers(cfg, dp.tiers);
    if (dp.ntiers <= 0) {
        log_error("retry.tiers_ms must be ascending positive milliseconds, e.g. 1000,5000,30000");
        return 1;
    }
    struct err e;
    err_clear(&e);
    dp.nevents = (size_t)cfg->dispatcher_concurrency;
    dp.events = calloc(dp.nevents, sizeof(*dp.events));
    dp.http = dhttp_new(cfg->callback_url, cfg->callback_secret, cfg->callback_secret_len,
                        cfg->dispatcher_timeout_ms, cfg->dispatcher_concurrency, &e);
    if (!dp.events || !dp.http) {
        log_error("%s", dp.http ? "dispatcher: out of memory" : e.msg);
        free(dp.events);
        dhttp_free(dp.http);
        return 1;
    }
    long long deadline = 0;
    for (;;) {
        if (*stop && !dp.stopping) {
            begin_stop(&dp);
            deadline = mono_ms() + (long long)cfg->worker_grace_seconds * 1000;
        }
        if (dp.stopping && (events_busy(&dp) == 0 || !dp.bus))
            break;
        if (dp.stopping && mono_ms() >= deadline) {
            log_warn("grace period over with %zu callbacks in flight; the queue keeps them",
                     events_busy(&dp));
            break;
        }
        if (!dp.bus) {
            try_connect(&dp);
            if (!dp.bus) {
                struct timespec ts = { 0, 50 * 1000000L };
                nanosleep(&ts, NULL);
                continue;
            }
        }
        step(&dp, start_due(&dp));
    }
    log_info("stopped: %lu delivered, %lu retries, %lu dead-lettered", dp.delivered, dp.retried,
             dp.dead);
    dhttp_free(dp.http);
    for (size_t i = 0; i < dp.nevents; i++)
        event_release(&dp.events[i]);
    free(dp.events);
    bus_free(dp.bus);
    return 0;
}
