/* The consumer loop: deliveries to the pool, outcomes to the broker, acks after confirms. */
#include "runner.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "clock.h"
#include "comet.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "process.h"
#include "store.h"

#define WAIT_SLICE_MS 200        /* bound on how late a stop or reconnect is noticed */
#define BACKOFF_MIN_MS 200
#define BACKOFF_MAX_MS 10000
#define STORE_CHECK_MS 1000      /* while paused for Redis, probe it this often */
#define COMET_PROBE_MIN_MS 1000  /* while paused for Comet, probe it this often ... */
#define COMET_PROBE_MAX_MS 10000 /* ... backing off to this */
/* Broker events settled per round before its writes go out (bounded so
 * finished jobs are published promptly under a flood of deliveries). */
#define ROUND_EVENTS_MAX 64

/* A delivery whose outcome messages await their confirms. */
struct pending {
    uint64_t tag;
    int remaining;          /* confirms still due */
    bool refused;           /* the broker nacked one of them */
    bool used;
};

/* One published message awaiting its confirm. */
struct inflight_pub {
    uint64_t seq;
    size_t pending;         /* index into pendings */
};

struct runner {
    const struct config *cfg;
    struct runner_status *st;
    struct bus *bus;
    unsigned generation;    /* bumped on every (re)connect; older outcomes are stale */
    struct pool *pool;
    struct pending *pendings;
    size_t npendings, cap_pendings;
    struct inflight_pub *pubs;
    size_t npubs, cap_pubs;
    int tiers[CONFIG_MAX_RETRY_TIERS];
    int ntiers;
    int backoff_ms;
    long long next_connect_ms;
    bool stopping;
    unsigned paused;        /* why the consumer is cancelled: 1 << enum metrics_pause, or 0 */
    long long next_store_check_ms;
    struct store *probe;    /* the consumer's own Redis connection, for the pause probe */
    long long next_comet_probe_ms;
    int comet_probe_ms;     /* current probe interval (backs off) */
    struct comet_client *comet_probe; /* the consumer's own client, for that probe */
};

/* ---- confirm bookkeeping -------------------------------------------------- */

static long pending_new(struct runner *r, uint64_t tag, int remaining)
{
    for (size_t i = 0; i < r->npendings; i++)
        if (!r->pendings[i].used) {
            r->pendings[i] = (struct pending){ tag, remaining, false, true };
            return (long)i;
        }
    if (r->npendings == r->cap_pendings) {
        size_t cap = r->cap_pendings ? r->cap_pendings * 2 : 64;
        struct pending *np = realloc(r->pendings, cap * sizeof(*np));
        if (!np)
            return -1;
        r->pendings = np;
        r->cap_pendings = cap;
    }
    r->pendings[r->npendings] = (struct pending){ tag, remaining, false, true };
    return (long)r->npendings++;
}

static int pub_add(struct runner *r, uint64_t seq, size_t pending)
{
    if (r->npubs == r->cap_pubs) {
        size_t cap = r->cap_pubs ? r->cap_pubs * 2 : 128;
        struct inflight_pub *np = realloc(r->pubs, cap * sizeof(*np));
        if (!np)
            return -1;
        r->pubs = np;
        r->cap_pubs = cap;
    }
    r->pubs[r->npubs++] = (struct inflight_pub){ seq, pending };
    return 0;
}

/* A delivery's messages are all confirmed (or one was refused): settle it. */
static int pending_finish(struct runner *r, struct pending *p, struct err *e)
{
    p->used = false;
    if (p->refused) {
        /* Its outcome is not durable: let the broker hand the job out again. */
        log_warn("broker refused an outcome message; job requeued");
        return bus_nack(r->bus, p->tag, true, e);
    }
    return bus_ack(r->bus, p->tag, e);
}

static int on_confirm(struct runner *r, uint64_t seq, bool multiple, bool refused, struct err *e)
{
    size_t w = 0;
    int rc = 0;
    for (size_t i = 0; i < r->npubs; i++) {
        struct inflight_pub pub = r->pubs[i];
        bool hit = multiple ? pub.seq <= seq : pub.seq == seq;
        if (!hit) {
            r->pubs[w++] = pub;
            continue;
        }
        struct pending *p = &r->pendings[pub.pending];
        p->refused |= refused;
        if (--p->remaining == 0 && rc == 0)
            rc = pending_finish(r, p, e);
    }
    r->npubs = w;
    return rc;
}

/* ---- outcomes --------------------------------------------------------------- */

static int publish_outcome(struct runner *r, struct outcome *o, struct err *e)
{
    if (o->disposition == OUTCOME_REQUEUE || o->nmsgs == 0)
        return bus_nack(r->bus, o->tag, true, e);
    long idx = pending_new(r, o->tag, (int)o->nmsgs);
    if (idx < 0)
        return err_set(e, ERR_INTERNAL, "out of memory tracking confirms");
    for (size_t i = 0; i < o->nmsgs; i++) {
        uint64_t seq;
        if (bus_publish(r->bus, &o->msgs[i], &seq, e))
            return -1;
        if (pub_add(r, seq, (size_t)idx))
            return err_set(e, ERR_INTERNAL, "out of memory tracking confirms");
    }
    return 0;
}

/* Publishes every finished outcome of the current connection. */
static int drain_outcomes(struct runner *r, struct err *e)
{
    struct outcome *o;
    int rc = 0;
    while ((o = pool_take_done(r->pool)) != NULL) {
        if (rc == 0 && r->bus && o->generation == r->generation)
            rc = publish_outcome(r, o, e);
        /* else: from a connection that died; the broker redelivers that job. */
        pool_outcome_free(o);
    }
    return rc;
}

/* ---- connection --------------------------------------------------------------- */

static void disconnect(struct runner *r, const char *why)
{
    if (!r->bus)
        return;
    log_warn("broker connection lost: %s", why);
    metrics_amqp_reconnect();
    bus_free(r->bus);
    r->bus = NULL;
    r->st->connected = false;
    r->st->consuming = false;
    r->npubs = 0;
    for (size_t i = 0; i < r->npendings; i++)
        r->pendings[i].used = false;
    r->generation++;
    r->next_connect_ms = mono_ms() + r->backoff_ms;
}

static int start_consuming(struct runner *r, struct err *e)
{
    if (bus_consume(r->bus, BUS_Q_JOBS, e))
        return -1;
    r->st->consuming = true;
    return 0;
}

static void try_connect(struct runner *r)
{
    if (mono_ms() < r->next_connect_ms)
        return;
    struct err e;
    err_clear(&e);
    struct bus *b = bus_connect(r->cfg->amqp_url, r->cfg->amqp_heartbeat, &e);
    if (b) {
        r->bus = b;
        if (bus_declare_topology(b, r->tiers, r->ntiers, &e) == 0 &&
            bus_qos(b, r->cfg->amqp_prefetch, &e) == 0 &&
            (r->paused || start_consuming(r, &e) == 0)) {
            r->generation++;
            r->st->connected = true;
            r->backoff_ms = BACKOFF_MIN_MS;
            log_info("connected to the broker; consuming %s (prefetch %d, %d threads)",
                     BUS_Q_JOBS, r->cfg->amqp_prefetch, r->cfg->worker_concurrency);
            return;
        }
        bus_free(b);
        r->bus = NULL;
    }
    log_warn("broker: %s; retrying in %d ms", e.msg, r->backoff_ms);
    r->next_connect_ms = mono_ms() + r->backoff_ms;
    /* Capped exponential backoff with jitter so a fleet does not reconnect in step. */
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
    r->backoff_ms += rand() % (r->backoff_ms / 4 + 1);
}

/* Adds (on) or removes a reason not to take jobs. The consumer is
 * cancelled when the first reason appears and started again when the last
 * one goes; a broker failure doing so disconnects (the reconnect honours
 * the reasons left). 0, or -1 when it disconnected. */
static int set_paused(struct runner *r, enum metrics_pause reason, bool on)
{
    unsigned bit = 1u << reason;
    unsigned after = on ? r->paused | bit : r->paused & ~bit;
    struct err e;
    int rc = 0;

    if (after == r->paused)
        return 0;
    err_clear(&e);
    if (r->paused == 0)
        rc = bus_cancel(r->bus, &e);
    else if (after == 0)
        rc = start_consuming(r, &e);
    if (rc != 0) {
        disconnect(r, e.msg);
        return -1;
    }
    r->paused = after;
    if (after != 0)
        r->st->consuming = false;
    metrics_set_paused(reason, on);
    return 0;
}

static bool paused_for(const struct runner *r, enum metrics_pause reason)
{
    return (r->paused & (1u << reason)) != 0;
}

/* While Redis is down no job may run (no idempotency or ordering state):
 * stop taking jobs, probe Redis, resume when it answers. */
static void check_store(struct runner *r)
{
    if (!r->bus || r->stopping)
        return;
    struct err e;
    err_clear(&e);
    if (!paused_for(r, METRICS_PAUSE_REDIS)) {
        if (!pool_store_down(r->pool) || set_paused(r, METRICS_PAUSE_REDIS, true) != 0)
            return;
        r->st->store_ok = false;
        r->next_store_check_ms = mono_ms() + STORE_CHECK_MS;
        log_error("Redis unreachable: not taking jobs until it is back");
        return;
    }
    if (mono_ms() < r->next_store_check_ms)
        return;
    r->next_store_check_ms = mono_ms() + STORE_CHECK_MS;
    if (!r->probe)
        r->probe = store_connect(r->cfg, &e);
    if (r->probe && store_ensure(r->probe, &e) == 0 && store_ping(r->probe, &e) == 0 &&
        set_paused(r, METRICS_PAUSE_REDIS, false) == 0) {
        pool_store_reset(r->pool);
        r->st->store_ok = true;
        log_info("Redis is back: taking jobs again");
    }
}

/* While no Comet server can even be connected to, every job would fail and
 * spend an attempt (a long outage would dead-letter the whole queue), and
 * the retry copies would load the broker: stop taking jobs, so they wait
 * in comet.jobs, probe the servers with meta/version, and take jobs again
 * when one answers. Jobs already running end as usual. */
static void check_comet(struct runner *r)
{
    if (!r->bus || r->stopping)
        return;
    if (!paused_for(r, METRICS_PAUSE_COMET)) {
        for (int i = 0; i < r->cfg->server_count; i++)
            if (!comet_server_down(r->cfg->servers[i].url))
                return;
        if (set_paused(r, METRICS_PAUSE_COMET, true) != 0)
            return;
        r->st->comet_ok = false;
        r->comet_probe_ms = COMET_PROBE_MIN_MS;
        r->next_comet_probe_ms = mono_ms() + r->comet_probe_ms;
        log_error("no Comet server can be reached: not taking jobs until one answers "
                  "(they wait in %s)", BUS_Q_JOBS);
        return;
    }
    if (mono_ms() < r->next_comet_probe_ms)
        return;
    if (!r->comet_probe)
        r->comet_probe = comet_client_new(COMET_PROBE_MIN_MS, 2 * COMET_PROBE_MIN_MS);
    bool answered = false;
    for (int i = 0; r->comet_probe && i < r->cfg->server_count && !answered; i++) {
        json_object *out = NULL;
        struct err pe;
        comet_call(r->comet_probe, &r->cfg->servers[i], COMET_META_VERSION, NULL, 0, &out, NULL, &pe);
        json_object_put(out);
        /* Any answer, even an error, clears the server's count. */
        answered = !comet_server_down(r->cfg->servers[i].url);
    }
    if (!answered) {
        r->comet_probe_ms = r->comet_probe_ms * 2 > COMET_PROBE_MAX_MS ? COMET_PROBE_MAX_MS
                            : r->comet_probe_ms * 2;
        r->next_comet_probe_ms = mono_ms() + r->comet_probe_ms;
        return;
    }
    if (set_paused(r, METRICS_PAUSE_COMET, false) == 0) {
        r->st->comet_ok = true;
        log_info("a Comet server answers again: taking jobs");
    }
}

/* ---- stop ----------------------------------------------------------------------- */

static void begin_stop(struct runner *r)
{
    r->stopping = true;
    struct err e;
    err_clear(&e);
    if (r->bus && !r->paused && bus_cancel(r->bus, &e) != 0)
        disconnect(r, e.msg);
    r->st->consuming = false;
    /* Jobs not yet started go back to the queue at once. */
    uint64_t tags[256];
    unsigned gens[256];
    size_t n;
    while ((n = pool_take_pending(r->pool, tags, gens, 256)) > 0)
        for (size_t i = 0; i < n; i++)
            if (r->bus && gens[i] == r->generation && bus_nack(r->bus, tags[i], true, &e) != 0)
                disconnect(r, e.msg);
    log_info("stopping: waiting up to %d s for %zu in-flight jobs", r->cfg->worker_grace_seconds,
             pool_busy(r->pool));
}

static bool settled(struct runner *r)
{
    return pool_busy(r->pool) == 0 && r->npubs == 0;
}

/* ---- loop ------------------------------------------------------------------------- */

static void handle_event(struct runner *r, struct bus_event *ev)
{
    struct err e;
    err_clear(&e);
    int rc = 0;
    switch (ev->kind) {
    case BUS_EV_DELIVERY:
        if (r->stopping) {
            rc = bus_nack(r->bus, ev->delivery.tag, true, &e);
        } else if (pool_submit(r->pool, &ev->delivery, r->generation) != 0) {
            rc = bus_nack(r->bus, ev->delivery.tag, true, &e);
        }
        bus_delivery_clear(&ev->delivery);
        break;
    case BUS_EV_ACK:
        rc = on_confirm(r, ev->seq, ev->multiple, false, &e);
        break;
    case BUS_EV_NACK:
        rc = on_confirm(r, ev->seq, ev->multiple, true, &e);
        break;
    case BUS_EV_RETURN:
        log_warn("a result or copy was unroutable (is the topology intact?)");
        break;
    default:
        break;
    }
    if (rc != 0)
        disconnect(r, e.msg);
}

int runner_run(const struct config *cfg, volatile sig_atomic_t *stop, struct runner_status *st)
{
    struct runner r;
    memset(&r, 0, sizeof(r));
    r.cfg = cfg;
    r.st = st;
    r.backoff_ms = BACKOFF_MIN_MS;
    r.ntiers = config_retry_tiers(cfg, r.tiers);
    if (r.ntiers <= 0) {
        log_error("retry.tiers_ms must be ascending positive milliseconds, e.g. 1000,5000,30000");
        return 1;
    }
    struct err e;
    err_clear(&e);
    r.pool = pool_new(cfg, cfg->worker_concurrency, &e);
    if (!r.pool) {
        log_error("%s", e.msg);
        return 1;
    }
    st->store_ok = true;
    st->comet_ok = true;
    long long deadline = 0;
    for (;;) {
        if (*stop && !r.stopping) {
            begin_stop(&r);
            deadline = mono_ms() + (long long)cfg->worker_grace_seconds * 1000;
        }
        if (r.stopping && settled(&r))
            break;
        if (r.stopping && mono_ms() >= deadline) {
            log_warn("grace period over with %zu jobs in flight; the broker will redeliver them",
                     pool_busy(r.pool));
            break;
        }
        if (!r.bus) {
            if (r.stopping && pool_busy(r.pool) == 0)
                break;
            try_connect(&r);
        }
        err_clear(&e);
        /* One round: publish what finished and settle what the broker
         * already sent (confirms -> acks, deliveries -> pool) without
         * blocking, all written out together at the end of the round. */
        if (r.bus)
            bus_cork(r.bus, true);
        if (r.bus && drain_outcomes(&r, &e) != 0)
            disconnect(&r, e.msg);
        for (int i = 0; r.bus && i < ROUND_EVENTS_MAX; i++) {
            struct bus_event ev;
            if (bus_wait(r.bus, 0, -1, &ev, &e) != 0) {
                disconnect(&r, e.msg);
                break;
            }
            if (ev.kind == BUS_EV_TIMEOUT)
                break;
            handle_event(&r, &ev);
        }
        if (r.bus)
            bus_cork(r.bus, false);
        if (!r.bus) {
            /* Keep draining (and dropping) stale outcomes while disconnected. */
            drain_outcomes(&r, &e);
            struct timespec ts = { 0, 50 * 1000000L };
            nanosleep(&ts, NULL);
            continue;
        }
        check_store(&r);
        check_comet(&r);
        if (!r.bus)
            continue;
        struct bus_event ev;
        if (bus_wait(r.bus, WAIT_SLICE_MS, pool_wake_fd(r.pool), &ev, &e) != 0) {
            disconnect(&r, e.msg);
            continue;
        }
        handle_event(&r, &ev);
    }
    pool_free(r.pool);
    bus_free(r.bus);
    store_free(r.probe);
    comet_client_free(r.comet_probe);
    free(r.pendings);
    free(r.pubs);
    st->connected = false;
    st->consuming = false;
    log_info("stopped");
    return 0;
}
