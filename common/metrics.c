/* Prometheus registry (fixed label sets, relaxed atomics), text rendering
 * and the /metrics /healthz /readyz listener. */
#include "metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- storage ---- */

/* Upper bounds in seconds. A job spans several Comet calls plus Redis and
 * confirms (ms to a minute when Comet is slow); one Comet call is ~0.1 ms
 * on loopback up to the client timeout; a callback to WHMCS is similar. */
static const double job_bounds[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                     1, 2.5, 5, 10, 30, 60 };
static const double call_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
#define HIST_MAX_BOUNDS 16
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Buckets hold per-interval counts (one increment per observation; the
 * last slot is above every bound) and are made cumulative when rendered.
 * The sum is kept in nanoseconds as an integer so it can be added
 * atomically without a CAS loop on a double. */
struct hist {
    _Atomic uint64_t buckets[HIST_MAX_BOUNDS + 1];
    _Atomic uint64_t sum_ns;
};

#define ACTION_SLOTS (ACTION__COUNT + 1)   /* + "unknown" */
#define REASON_SLOTS (ERR__COUNT + 1)      /* + "other" */
#define CLASS_SLOTS (ERRC_INVALID + 1)

static struct {
    _Atomic int role;
    _Atomic uint64_t jobs[ACTION_SLOTS][RESULT__COUNT];
    struct hist job_duration[ACTION_SLOTS];
    struct hist comet_request[COMET__COUNT];
    _Atomic uint64_t comet_errors[CLASS_SLOTS];
    _Atomic uint64_t retries;
    _Atomic uint64_t dead_lettered[REASON_SLOTS];
    _Atomic int64_t inflight;
    _Atomic int paused[METRICS_PAUSE__COUNT];
    _Atomic uint64_t amqp_reconnects;
    _Atomic uint64_t redis_errors;
    _Atomic uint64_t deliveries[METRICS_DELIVERY__COUNT];
    struct hist delivery_duration;
    _Atomic int64_t dispatch_inflight;
} reg;

static const char *const delivery_names[METRICS_DELIVERY__COUNT] = {
    [METRICS_DELIVERY_DELIVERED] = "delivered",
    [METRICS_DELIVERY_RETRIED] = "retried",
    [METRICS_DELIVERY_DEAD_LETTERED] = "dead_lettered",
};

static void counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t counter_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void hist_observe(struct hist *h, const double *bounds, size_t nb, double seconds)
{
    /* A clock step backwards must not wrap the integer sum. */
    if (!(seconds >= 0))
        seconds = 0;
    size_t i = 0;
    while (i < nb && seconds > bounds[i])
        i++;
    counter_add(&h->buckets[i], 1);
    counter_add(&h->sum_ns, (uint64_t)(seconds * 1e9 + 0.5));
}

static void hist_reset(struct hist *h)
{
    for (size_t i = 0; i < NELEM(h->buckets); i++)
        atomic_store_explicit(&h->buckets[i], 0, memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns, 0, memory_order_relaxed);
}

/* ---- recording ---- */

void metrics_set_role(enum metrics_role role)
{
    atomic_store_explicit(&reg.role, (int)role, memory_order_relaxed);
}

static size_t action_slot(enum job_action a)
{
    return (unsigned)a < ACTION__COUNT ? (size_t)a : ACTION__COUNT;
}

void metrics_job_done(enum job_action action, enum result_status status, double seconds)
{
    size_t a = action_slot(action);
    if ((unsigned)status >= RESULT__COUNT)
        return; /* a bug upstream; never index out of the table */
    counter_add(&reg.jobs[a][status], 1);
    hist_observe(&reg.job_duration[a], job_bounds, NELEM(job_bounds), seconds);
}

void metrics_comet_request(enum comet_endpoint ep, double seconds)
{
    if ((unsigned)ep >= COMET__COUNT)
        return;
    hist_observe(&reg.comet_request[ep], call_bounds, NELEM(call_bounds), seconds);
}

void metrics_comet_error(enum err_class cls)
{
    if (cls == ERRC_NONE || (unsigned)cls >= CLASS_SLOTS)
        return;
    counter_add(&reg.comet_errors[cls], 1);
}

void metrics_retry(void)
{
    counter_add(&reg.retries, 1);
}

void metrics_dead_lettered(const char *reason_code)
{
    /* err_code_parse returns ERR__COUNT for NULL or an unknown name: the
     * "other" slot. */
    enum err_code c = err_code_parse(reason_code);
    counter_add(&reg.dead_lettered[(unsigned)c < ERR__COUNT ? (size_t)c : ERR__COUNT], 1);
}

void metrics_inflight_add(int delta)
{
    atomic_fetch_add_explicit(&reg.inflight, delta, memory_order_relaxed);
}

void metrics_set_paused(enum metrics_pause reason, bool paused)
{
    if ((unsigned)reason < METRICS_PAUSE__COUNT)
        atomic_store_explicit(&reg.paused[reason], paused ? 1 : 0, memory_order_relaxed);
}

void metrics_amqp_reconnect(void)
{
    counter_add(&reg.amqp_reconnects, 1);
}

void metrics_redis_error(void)
{
    counter_add(&reg.redis_errors, 1);
}

void metrics_dispatch_done(enum metrics_delivery_outcome outcome, double seconds)
{
    if ((unsigned)outcome >= METRICS_DELIVERY__COUNT)
        return;
    counter_add(&reg.deliveries[outcome], 1);
    hist_observe(&reg.delivery_duration, call_bounds, NELEM(call_bounds), seconds);
}

void metrics_dispatch_inflight_add(int delta)
{
    atomic_fetch_add_explicit(&reg.dispatch_inflight, delta, memory_order_relaxed);
}

void metrics_reset(void)
{
    for (size_t a = 0; a < ACTION_SLOTS; a++) {
        for (size_t s = 0; s < RESULT__COUNT; s++)
            atomic_store_explicit(&reg.jobs[a][s], 0, memory_order_relaxed);
        hist_reset(&reg.job_duration[a]);
    }
    for (size_t i = 0; i < COMET__COUNT; i++)
        hist_reset(&reg.comet_request[i]);
    for (size_t i = 0; i < CLASS_SLOTS; i++)
        atomic_store_explicit(&reg.comet_errors[i], 0, memory_order_relaxed);
    for (size_t i = 0; i < REASON_SLOTS; i++)
        atomic_store_explicit(&reg.dead_lettered[i], 0, memory_order_relaxed);
    for (size_t i = 0; i < METRICS_DELIVERY__COUNT; i++)
        atomic_store_explicit(&reg.deliveries[i], 0, memory_order_relaxed);
    hist_reset(&reg.delivery_duration);
    atomic_store_explicit(&reg.retries, 0, memory_order_relaxed);
    atomic_store_explicit(&reg.amqp_reconnects, 0, memory_order_relaxed);
    atomic_store_explicit(&reg.redis_errors, 0, memory_order_relaxed);
    atomic_store_explicit(&reg.inflight, 0, memory_order_relaxed);
    for (size_t i = 0; i < METRICS_PAUSE__COUNT; i++)
        atomic_store_explicit(&reg.paused[i], 0, memory_order_relaxed);
    atomic_store_explicit(&reg.dispatch_inflight, 0, memory_order_relaxed);
}

unsigned long long metrics_jobs_total(enum job_action action, enum result_status status)
{
    if ((unsigned)status >= RESULT__COUNT)
        return 0;
    return counter_get(&reg.jobs[action_slot(action)][status]);
}

/* ---- rendering ---- */

size_t metrics_label_escape(const char *in, char *out, size_t n)
{
    size_t len = 0;
    for (const char *p = in ? in : ""; *p; p++) {
        const char *rep = NULL;
        char one[2] = { *p, '\0' };
        switch (*p) {
        case '\\': rep = "\\\\"; break;
        case '"': rep = "\\\""; break;
        case '\n': rep = "\\n"; break;
        default: rep = one; break;
        }
        for (const char *r = rep; *r; r++, len++)
            if (len + 1 < n)
                out[len] = *r;
    }
    if (n > 0)
        out[len < n ? len : n - 1] = '\0';
    return len;
}

/* Writes one label value escaped; label values here are short names, so a
 * fixed buffer is enough and a longer one is truncated, never overrun. */
static void put_label(FILE *f, const char *v)
{
    char buf[256];
    metrics_label_escape(v, buf, sizeof(buf));
    fputs(buf, f);
}

static void put_header(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Prometheus floats: integers without a fraction, others with enough
 * digits to round-trip the bucket bounds ("0.0005"). */
static void put_float(FILE *f, double v)
{
    fprintf(f, "%.9g", v);
}

/* One histogram series; label is `name="value"` or NULL. Cumulative
 * buckets and _count are computed from one read of the slots, so +Inf
 * always equals _count in a scrape. */
static void put_hist(FILE *f, const char *name, const char *label, const char *value,
                     struct hist *h, const double *bounds, size_t nb)
{
    uint64_t snap[HIST_MAX_BOUNDS + 1];
    for (size_t i = 0; i <= nb; i++)
        snap[i] = counter_get(&h->buckets[i]);
    uint64_t cum = 0;
    for (size_t i = 0; i <= nb; i++) {
        cum += snap[i];
        fprintf(f, "%s_bucket{", name);
        if (label) {
            fprintf(f, "%s=\"", label);
            put_label(f, value);
            fputs("\",", f);
        }
        fputs("le=\"", f);
        if (i < nb)
            put_float(f, bounds[i]);
        else
            fputs("+Inf", f);
        fprintf(f, "\"} %llu\n", (unsigned long long)cum);
    }
    const char *suffix[] = { "_sum", "_count" };
    for (size_t k = 0; k < 2; k++) {
        fprintf(f, "%s%s", name, suffix[k]);
        if (label) {
            fprintf(f, "{%s=\"", label);
            put_label(f, value);
            fputs("\"}", f);
        }
        if (k == 0) {
            fputc(' ', f);
            put_float(f, (double)counter_get(&h->sum_ns) / 1e9);
            fputc('\n', f);
        } else {
            fprintf(f, " %llu\n", (unsigned long long)cum);
        }
    }
}

static uint64_t hist_count(struct hist *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i < NELEM(h->buckets); i++)
        n += counter_get(&h->buckets[i]);
    return n;
}

static void put_counter1(FILE *f, const char *name, const char *label, const char *value,
                         uint64_t v)
{
    fprintf(f, "%s{%s=\"", name, label);
    put_label(f, value);
    fprintf(f, "\"} %llu\n", (unsigned long long)v);
}

static const char *action_label(size_t a)
{
    return a < ACTION__COUNT ? job_action_name((enum job_action)a) : "unknown";
}

static void render_worker(FILE *f)
{
    put_header(f, "jobs_total", "counter", "Jobs finished by this worker, by action and outcome.");
    for (size_t a = 0; a < ACTION_SLOTS; a++)
        for (size_t s = 0; s < RESULT__COUNT; s++) {
            fputs("jobs_total{action=\"", f);
            put_label(f, action_label(a));
            fputs("\",outcome=\"", f);
            put_label(f, result_status_name((enum result_status)s));
            fprintf(f, "\"} %llu\n", (unsigned long long)counter_get(&reg.jobs[a][s]));
        }

    /* Histogram series appear once observed: 16 lines per idle endpoint
     * would drown the scrape. */
    put_header(f, "job_duration_seconds", "histogram",
               "Time from taking a job to its outcome, by action.");
    for (size_t a = 0; a < ACTION_SLOTS; a++)
        if (hist_count(&reg.job_duration[a]) > 0)
            put_hist(f, "job_duration_seconds", "action", action_label(a), &reg.job_duration[a],
                     job_bounds, NELEM(job_bounds));

    put_header(f, "comet_request_duration_seconds", "histogram",
               "Comet admin API call time, by endpoint, failures included.");
    for (size_t e = 0; e < COMET__COUNT; e++)
        if (hist_count(&reg.comet_request[e]) > 0)
            put_hist(f, "comet_request_duration_seconds", "endpoint",
                     comet_endpoint_path((enum comet_endpoint)e), &reg.comet_request[e],
                     call_bounds, NELEM(call_bounds));

    put_header(f, "comet_errors_total", "counter", "Failed Comet calls, by error class.");
    for (size_t c = ERRC_NONE + 1; c < CLASS_SLOTS; c++)
        put_counter1(f, "comet_errors_total", "class", err_class_name((enum err_class)c),
                     counter_get(&reg.comet_errors[c]));

    put_header(f, "retries_total", "counter", "Jobs sent to a retry tier after a transient failure.");
    fprintf(f, "retries_total %llu\n", (unsigned long long)counter_get(&reg.retries));

    put_header(f, "dead_lettered_total", "counter", "Jobs dead-lettered, by error code.");
    for (size_t r = 0; r < REASON_SLOTS; r++) {
        uint64_t v = counter_get(&reg.dead_lettered[r]);
        /* "ok" is not a reason a job dies for; show it only if a caller
         * used it, so a bug stays visible. */
        if (r == ERR_OK && v == 0)
            continue;
        put_counter1(f, "dead_lettered_total", "reason",
                     r < ERR__COUNT ? err_code_name((enum err_code)r) : "other", v);
    }

    put_header(f, "jobs_in_flight", "gauge", "Jobs being processed now.");
    fprintf(f, "jobs_in_flight %lld\n",
            (long long)atomic_load_explicit(&reg.inflight, memory_order_relaxed));
    static const char *const pause_names[METRICS_PAUSE__COUNT] = {
        [METRICS_PAUSE_REDIS] = "redis", [METRICS_PAUSE_COMET] = "comet",
    };
    put_header(f, "worker_paused", "gauge", "1 while the worker takes no jobs, by reason.");
    for (size_t i = 0; i < METRICS_PAUSE__COUNT; i++)
        fprintf(f, "worker_paused{reason=\"%s\"} %d\n", pause_names[i],
                atomic_load_explicit(&reg.paused[i], memory_order_relaxed));
}

static void render_dispatcher(FILE *f)
{
    put_header(f, "dispatcher_deliveries_total", "counter",
               "Result events handled by the dispatcher, by outcome.");
    for (size_t o = 0; o < METRICS_DELIVERY__COUNT; o++)
        put_counter1(f, "dispatcher_deliveries_total", "outcome", delivery_names[o],
                     counter_get(&reg.deliveries[o]));
    put_header(f, "dispatcher_delivery_duration_seconds", "histogram",
               "Time of one callback POST to WHMCS.");
    put_hist(f, "dispatcher_delivery_duration_seconds", NULL, NULL, &reg.delivery_duration,
             call_bounds, NELEM(call_bounds));
    put_header(f, "dispatcher_in_flight", "gauge", "Callbacks being delivered now.");
    fprintf(f, "dispatcher_in_flight %lld\n",
            (long long)atomic_load_explicit(&reg.dispatch_inflight, memory_order_relaxed));
}

/* CPU and resident memory of this process from /proc/self/stat (fields 14,
 * 15 and 24); silently absent when /proc is not there. */
static void render_process(FILE *f)
{
    FILE *st = fopen("/proc/self/stat", "r");
    if (!st)
        return;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, st);
    fclose(st);
    buf[n] = '\0';
    /* The command name may hold spaces or ')': fields count from the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return;
    unsigned long long utime = 0, stime = 0;
    long long rss = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
                      "%*d %*u %*u %lld", &utime, &stime, &rss) != 3)
        return;
    long tick = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tick <= 0 || page <= 0)
        return;
    put_header(f, "process_cpu_seconds_total", "counter", "User and system CPU time of this process.");
    fputs("process_cpu_seconds_total ", f);
    put_float(f, (double)(utime + stime) / (double)tick);
    fputc('\n', f);
    put_header(f, "process_resident_memory_bytes", "gauge", "Resident memory of this process.");
    fprintf(f, "process_resident_memory_bytes %lld\n", rss * (long long)page);
}

size_t metrics_render(char **out)
{
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return 0;
    int role = atomic_load_explicit(&reg.role, memory_order_relaxed);
    if (role != METRICS_ROLE_DISPATCHER)
        render_worker(f);
    if (role != METRICS_ROLE_WORKER)
        render_dispatcher(f);
    put_header(f, "amqp_reconnects_total", "counter", "Broker connections re-established.");
    fprintf(f, "amqp_reconnects_total %llu\n", (unsigned long long)counter_get(&reg.amqp_reconnects));
    put_header(f, "redis_errors_total", "counter", "Failed Redis commands or connections.");
    fprintf(f, "redis_errors_total %llu\n", (unsigned long long)counter_get(&reg.redis_errors));
    render_process(f);
    /* open_memstream reports allocation failure as a stream error. */
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return 0;
    }
    *out = buf;
    return len;
}

/* ---- HTTP listener ---- */

static struct {
    pthread_mutex_t lock;           /* guards daemon against racing listen/stop */
    struct MHD_Daemon *daemon;
    metrics_ready_fn ready;
    void *ctx;
} srv = { .lock = PTHREAD_MUTEX_INITIALIZER };

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status,
                             const char *content_type, char *body, size_t len, bool owned)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned int status,
                                  const char *text)
{
    return reply(conn, status, "text/plain; charset=utf-8", (char *)text, strlen(text), false);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    /* First call: headers only. Answer on the second, as MHD expects. */
    if (*con_cls == NULL) {
        *con_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0; /* ignore any body */
        return MHD_YES;
    }
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!get)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0) {
        char *body = NULL;
        size_t len = metrics_render(&body);
        if (!body)
            return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len, true);
    }
    if (strcmp(url, "/healthz") == 0)
        return reply_text(conn, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0) {
        char why[200] = "not ready";
        if (!srv.ready || srv.ready(srv.ctx, why, sizeof(why)))
            return reply_text(conn, MHD_HTTP_OK, "ready\n");
        char body[sizeof(why) + 16];
        snprintf(body, sizeof(body), "not ready: %s\n", why);
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", body,
                     strlen(body), false);
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

int metrics_listen_on(const char *addr, int port, metrics_ready_fn ready, void *ctx,
                      struct err *err)
{
    if (port == 0)
        return 0;
    if (port < 0 || port > 65535)
        return err_set(err, ERR_INTERNAL, "metrics port %d out of range", port);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    const char *host = addr && *addr ? addr : "0.0.0.0";
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return err_set(err, ERR_INTERNAL, "metrics bind address '%s' is not IPv4", host);

    pthread_mutex_lock(&srv.lock);
    if (srv.daemon) {
        pthread_mutex_unlock(&srv.lock);
        return err_set(err, ERR_INTERNAL, "metrics listener already running");
    }
    srv.ready = ready;
    srv.ctx = ctx;
    /* One internal thread: scrapes are rare and rendering takes
     * microseconds, so a pool would only cost memory. */
    srv.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                                  (uint16_t)port, NULL, NULL, on_request, NULL,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64,
                                  MHD_OPTION_END);
    bool ok = srv.daemon != NULL;
    pthread_mutex_unlock(&srv.lock);
    if (!ok)
        return err_set(err, ERR_INTERNAL, "metrics listener cannot bind %s:%d", host, port);
    return 0;
}

int metrics_listen(int port, metrics_ready_fn ready, void *ctx, struct err *err)
{
    return metrics_listen_on(NULL, port, ready, ctx, err);
}

void metrics_stop(void)
{
    pthread_mutex_lock(&srv.lock);
    if (srv.daemon) {
        MHD_stop_daemon(srv.daemon);
        srv.daemon = NULL;
    }
    srv.ready = NULL;
    srv.ctx = NULL;
    pthread_mutex_unlock(&srv.lock);
}
