/* comet-bench: the measuring tools behind `make bench` (hand-off timing, the synchronous baseline, the broker-ceiling echo consumer, queue consumers and purges). */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <curl/curl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "comet.h"
#include "config.h"
#include "daemon.h"
#include "crypto.h"
#include "job.h"
#include "jobmsg.h"
#include "log.h"
#include "process.h"

#define LINE_MAX_BYTES (1 << 20)
/* Deliveries whose result is published but not yet confirmed: at least
 * the largest prefetch the bench uses, so the FIFO never fills. */
#define ECHO_WINDOW 4096
/* The policy the original module writes for a new policy group (comet-api.md §4). */
#define MODULE_POLICY                                                                       \
    "{\"PreventChangeAccountPassword\":true,\"ModeAdminResetPassword\":3,"                  \
    "\"PreventDeleteStorageVault\":true,\"PreventAddCustomStorageVault\":true,"             \
    "\"PreventRequestStorageVault\":true,"                                                  \
    "\"StorageVaultProviders\":{\"AllowedProvidersWhenRestricted\":[1003],"                 \
    "\"ShouldRestrictProviderList\":true},"                                                 \
    "\"ProtectedItemEngineTypes\":{\"AllowedEngineTypeWhenRestricted\":[],"                 \
    "\"ShouldRestrictEngineTypeList\":false}}"

static volatile sig_atomic_t stop_requested;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p * (double)n);
    return v[i > 0 ? (i <= n ? i - 1 : n - 1) : 0];
}

/* Adds count, p50/p95/p99/max (ms) of samples (seconds; sorted in place). */
static void add_percentiles(json_object *js, double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    json_object_object_add(js, "samples", json_object_new_int64((long long)n));
    json_object_object_add(js, "p50_ms", json_object_new_double(pct(v, n, 0.50) * 1e3));
    json_object_object_add(js, "p95_ms", json_object_new_double(pct(v, n, 0.95) * 1e3));
    json_object_object_add(js, "p99_ms", json_object_new_double(pct(v, n, 0.99) * 1e3));
    json_object_object_add(js, "max_ms", json_object_new_double(n ? v[n - 1] * 1e3 : 0));
    json_object_object_add(js, "mean_ms", json_object_new_double(n ? sum / (double)n * 1e3 : 0));
}

static int write_json(const char *path, json_object *js)
{
    const char *s = json_object_to_json_string_ext(js, JSON_C_TO_STRING_PRETTY);
    FILE *f = path ? fopen(path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "comet-bench: cannot write %s\n", path);
        return -1;
    }
    fprintf(f, "%s\n", s);
    if (f != stdout && fclose(f) != 0)
        return -1;
    return 0;
}

/* ---- raw AMQP: what the bus does not expose (consumer count, purge) ---------- */

static amqp_connection_state_t raw_open(const char *url, struct err *e)
{
    char *buf = strdup(url);
    struct amqp_connection_info ci;
    amqp_connection_state_t conn = NULL;
    if (!buf || amqp_parse_url(buf, &ci) != AMQP_STATUS_OK) {
        err_set(e, ERR_INTERNAL, "cannot parse the broker URL");
        goto fail;
    }
    conn = amqp_new_connection();
    amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;
    if (!sock || amqp_socket_open(sock, ci.host, ci.port) != AMQP_STATUS_OK) {
        err_set(e, ERR_BROKER_UNAVAILABLE, "cannot connect to the broker");
        goto fail;
    }
    const char *vhost = ci.vhost && ci.vhost[0] ? ci.vhost : "/";
    amqp_rpc_reply_t r = amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user,
                                    ci.password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL || !amqp_channel_open(conn, 1) ||
        amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
        err_set(e, ERR_BROKER_UNAVAILABLE, "broker login failed");
        goto fail;
    }
    free(buf);
    return conn;
fail:
    free(buf);
    if (conn)
        amqp_destroy_connection(conn);
    return NULL;
}

static void raw_close(amqp_connection_state_t conn)
{
    if (!conn)
        return;
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
}

/* Consumers on comet.jobs, or -1 (the queue must exist: a passive declare
 * of a missing queue closes the channel). */
static long raw_consumers(amqp_connection_state_t conn)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, 1, amqp_cstring_bytes(BUS_Q_JOBS), 1, 0,
                                                     0, 0, amqp_empty_table);
    return ok ? (long)ok->consumer_count : -1;
}

/* ---- options --------------------------------------------------------------------- */

struct opts {
    const char *mode;
    const char *config;
    const char *url;        /* fake Comet URL (handoff specs) */
    const char *batch;
    const char *out;
    int n;
    int prefetch;
    int want;
    int timeout_ms;
};

static void usage(FILE *out)
{
    fprintf(out,
        "usage: comet-bench MODE -c CONFIG [options]\n"
        "  handoff --url URL --n N [--out FILE]   publish N create jobs one at a time, each waiting\n"
        "                                         for its confirm; hand-off p50/p95/p99\n"
        "  sequential --batch FILE [--out FILE]   run the batch one job at a time with the original\n"
        "                                         module's Comet calls, a new connection per call\n"
        "  echo --prefetch N                      consume comet.jobs and publish a succeeded result\n"
        "                                         without Comet work (broker ceiling); until SIGTERM\n"
        "  consumers --want N [--timeout-ms T]    wait until comet.jobs has N consumers\n"
        "  purge                                  declare the topology, empty every queue of it\n");
}

static int parse_int(const char *s, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!end || *end || end == s || v < 0 || v > 100000000)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum { O_URL = 256, O_BATCH, O_OUT, O_N, O_PREFETCH, O_WANT, O_TIMEOUT };
    static const struct option lo[] = {
        { "config", required_argument, NULL, 'c' }, { "help", no_argument, NULL, 'h' },
        { "url", required_argument, NULL, O_URL }, { "batch", required_argument, NULL, O_BATCH },
        { "out", required_argument, NULL, O_OUT }, { "n", required_argument, NULL, O_N },
        { "prefetch", required_argument, NULL, O_PREFETCH }, { "want", required_argument, NULL, O_WANT },
        { "timeout-ms", required_argument, NULL, O_TIMEOUT }, { NULL, 0, NULL, 0 },
    };
    if (argc < 2 || argv[1][0] == '-') {
        usage(argc >= 2 && strcmp(argv[1], "-h") == 0 ? stdout : stderr);
        return -1;
    }
    o->mode = argv[1];
    o->timeout_ms = 60000;
    optind = 2;
    int ch, bad = 0;
    while (!bad && (ch = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config = optarg; break;
        case 'h': usage(stdout); exit(0);
        case O_URL: o->url = optarg; break;
        case O_BATCH: o->batch = optarg; break;
        case O_OUT: o->out = optarg; break;
        case O_N: bad = parse_int(optarg, &o->n); break;
        case O_PREFETCH: bad = parse_int(optarg, &o->prefetch); break;
        case O_WANT: bad = parse_int(optarg, &o->want); break;
        case O_TIMEOUT: bad = parse_int(optarg, &o->timeout_ms); break;
        default: bad = 1;
        }
    }
    if (bad)
        usage(stderr);
    return bad ? -1 : 0;
}

/* ---- handoff ------------------------------------------------------------------------ */

/* One create job as the module builds it at checkout. */
static json_object *handoff_spec(const char *url, long long sid)
{
    char buf[1024];
    long long tag = (long long)time(NULL) * 1000 + sid; /* unique across runs */
    snprintf(buf, sizeof(buf),
             "{\"action\":\"create\",\"service_id\":%lld,"
             "\"account\":{\"username\":\"handoff-%lld\",\"custom_username\":true},"
             "\"client\":{\"email\":\"handoff-%lld@example.com\",\"firstname\":\"Hand\"},"
             "\"product\":{\"policy_group\":\"WHMCS_bench_handoff\",\"storage_provider\":\"1003-default\","
             "\"require_password_change\":false},"
             "\"quotas\":{\"number_of_devices\":5,\"protected_item_quota_gb\":100,"
             "\"storage_vault_quota_gb\":500},"
             "\"server\":{\"url\":\"%s\"},\"password\":\"handoff-pass-%lld\"}",
             sid, tag, tag, url, tag);
    return json_tokener_parse(buf);
}

static int run_handoff(const struct opts *o, const struct config *cfg)
{
    struct err e;
    int tiers[CONFIG_MAX_RETRY_TIERS];
    int ntiers = config_retry_tiers(cfg, tiers);
    if (!o->url || o->n <= 0 || ntiers < 0) {
        fprintf(stderr, "comet-bench: handoff needs --url, --n and valid retry tiers\n");
        return 2;
    }
    struct bus *b = bus_connect(cfg->amqp_url, 0, &e);
    if (!b || bus_declare_topology(b, tiers, ntiers, &e) != 0) {
        fprintf(stderr, "comet-bench: %s\n", e.msg);
        bus_free(b);
        return 3;
    }
    double *lat = calloc((size_t)o->n, sizeof(*lat));
    double *pub = calloc((size_t)o->n, sizeof(*pub)); /* the publish + confirm part alone */
    int rc = lat && pub ? 0 : 1;
    const struct key *key = keyring_active(&cfg->keys);
    for (int i = 0; rc == 0 && i < o->n; i++) {
        struct job job;
        struct bus_msg m;
        /* Timed from the order's fields to the broker's confirm: building,
         * sealing and signing are part of what checkout waits for. */
        double t0 = mono_s();
        json_object *spec = handoff_spec(o->url, 900000000LL + i);
        int brc = spec ? jobmsg_build(spec, key, &job, &m, &e) : -1;
        json_object_put(spec);
        double t1 = mono_s();
        if (brc == 0) {
            brc = bus_publish_wait(b, &m, cfg->amqp_confirm_timeout_ms, &e);
            bus_msg_clear(&m);
        }
        lat[i] = mono_s() - t0;
        pub[i] = mono_s() - t1;
        if (brc != 0) {
            fprintf(stderr, "comet-bench: publish %d: %s\n", i, e.msg);
            rc = 3;
        }
    }
    if (rc == 0) {
        json_object *js = json_object_new_object();
        add_percentiles(js, lat, (size_t)o->n);
        json_object *pj = json_object_new_object();
        add_percentiles(pj, pub, (size_t)o->n);
        json_object_object_add(js, "publish_confirm_only", pj);
        rc = write_json(o->out, js) == 0 ? 0 : 1;
        json_object_put(js);
    }
    free(lat);
    free(pub);
    bus_free(b);
    return rc;
}

/* ---- sequential baseline ------------------------------------------------------------- */

struct seq_ctx {
    const struct config *cfg;
    const struct config_server *server;
    long calls;
    long failed_calls;
};

/* One Comet call on a brand-new client: a new TCP connection per call, as
 * the PHP module's curl_init()/curl_close() per request does. */
static int seq_call(struct seq_ctx *s, enum comet_endpoint ep, const struct comet_param *p,
                    size_t np, json_object **out)
{
    struct err e;
    json_object *tmp = NULL;
    struct comet_client *c = comet_client_new(s->cfg->comet_connect_timeout_ms, s->cfg->comet_timeout_ms);
    if (!c)
        return -1;
    s->calls++;
    int rc = comet_call(c, s->server, ep, p, np, out ? out : &tmp, NULL, &e);
    comet_client_free(c);
    json_object_put(tmp);
    if (rc != 0)
        s->failed_calls++;
    return rc;
}

static const char *jstr(json_object *o, const char *k1, const char *k2)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, k1, &v))
        return "";
    if (k2 && !json_object_object_get_ex(v, k2, &v))
        return "";
    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

static long long jint(json_object *o, const char *k1, const char *k2)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, k1, &v) || !json_object_object_get_ex(v, k2, &v) ||
        !json_object_is_type(v, json_type_int))
        return 0;
    return json_object_get_int64(v);
}

/* The module's applyRestrictions or suspend edit: read profile and hash,
 * edit, write back whole with RequireHash; no retry on conflict. */
static int seq_profile_edit(struct seq_ctx *s, const char *user, json_object *spec, int suspend)
{
    struct comet_param rp[] = { { "TargetUser", user } };
    json_object *reply = NULL, *profile, *hash;
    if (seq_call(s, COMET_GET_PROFILE_AND_HASH, rp, 1, &reply) != 0)
        return -1;
    if (!json_object_object_get_ex(reply, "Profile", &profile) ||
        !json_object_object_get_ex(reply, "ProfileHash", &hash)) {
        json_object_put(reply);
        return -1;
    }
    if (suspend) {
        json_object_object_add(profile, "IsSuspended", json_object_new_boolean(1));
    } else {
        long long gb = jint(spec, "quotas", "storage_vault_quota_gb");
        json_object *dests;
        if (gb > 0 && json_object_object_get_ex(profile, "Destinations", &dests)) {
            json_object_object_foreach(dests, k, d) {
                (void)k;
                json_object_object_add(d, "StorageLimitEnabled", json_object_new_boolean(1));
                json_object_object_add(d, "StorageLimitBytes", json_object_new_int64(gb << 30));
            }
        }
        long long pgb = jint(spec, "quotas", "protected_item_quota_gb");
        json_object_object_add(profile, "AllProtectedItemsQuotaEnabled", json_object_new_boolean(pgb > 0));
        json_object_object_add(profile, "AllProtectedItemsQuotaBytes", json_object_new_int64(pgb << 30));
        json_object_object_add(profile, "MaximumDevices",
                               json_object_new_int64(jint(spec, "quotas", "number_of_devices")));
        json_object_object_add(profile, "PolicyID",
                               json_object_new_string(jstr(spec, "product", "policy_group")));
    }
    struct comet_param wp[] = {
        { "TargetUser", user },
        { "ProfileData", json_object_to_json_string_ext(profile, JSON_C_TO_STRING_PLAIN) },
        { "RequireHash", json_object_get_string(hash) },
    };
    int rc = wp[1].value ? seq_call(s, COMET_SET_PROFILE_HASH, wp, 3, NULL) : -1;
    json_object_put(reply);
    return rc;
}

/* One job with the original module's call sequence (comet-api.md §4). */
static int seq_job(struct seq_ctx *s, json_object *spec)
{
    const char *action = jstr(spec, "action", NULL);
    const char *user = jstr(spec, "account", "username");
    const char *pw = jstr(spec, "password", NULL);
    if (strcmp(action, "create") == 0) {
        struct comet_param up[] = { { "TargetUser", user } };
        json_object *prof = NULL;
        /* A reply with a Username means taken; the bench's names are unique. */
        if (seq_call(s, COMET_GET_USER_PROFILE, up, 1, &prof) == 0 &&
            json_object_object_get_ex(prof, "Username", NULL)) {
            json_object_put(prof);
            return -1;
        }
        json_object_put(prof);
        const char *policy = jstr(spec, "product", "policy_group");
        if (*policy) {
            struct comet_param gp[] = { { "PolicyID", policy } };
            json_object *pol = NULL, *hash = NULL;
            int got = seq_call(s, COMET_POLICIES_GET, gp, 1, &pol);
            bool has = got == 0 && json_object_object_get_ex(pol, "PolicyHash", &hash) &&
                       json_object_get_string_len(hash) > 0;
            json_object_put(pol);
            if (!has) {
                char body[1024];
                snprintf(body, sizeof(body), "{\"Description\":\"%s\",\"Policy\":%s}", policy,
                         MODULE_POLICY);
                struct comet_param sp[] = { { "PolicyID", policy }, { "Policy", body } };
                seq_call(s, COMET_POLICIES_SET, sp, 2, NULL); /* reply ignored, as the module does */
            }
        }
        struct comet_param ap[] = { { "TargetUser", user }, { "TargetPassword", pw },
                                    { "StoreRecoveryCode", "1" } };
        if (seq_call(s, COMET_ADD_USER, ap, 3, NULL) != 0)
            return -1;
        const char *provider = jstr(spec, "product", "storage_provider");
        if (*provider) {
            struct comet_param vp[] = { { "TargetUser", user }, { "StorageProvider", provider } };
            seq_call(s, COMET_REQUEST_STORAGE_VAULT, vp, 2, NULL); /* reply ignored */
        }
        return seq_profile_edit(s, user, spec, 0);
    }
    if (strcmp(action, "suspend") == 0)
        return seq_profile_edit(s, user, spec, 1);
    if (strcmp(action, "change_package") == 0)
        return seq_profile_edit(s, user, spec, 0);
    if (strcmp(action, "change_password") == 0) {
        struct comet_param p[] = { { "TargetUser", user }, { "NewPassword", pw } };
        return strlen(pw) < 8 ? -1 : seq_call(s, COMET_RESET_PASSWORD, p, 2, NULL);
    }
    if (strcmp(action, "terminate") == 0) {
        struct comet_param p[] = { { "TargetUser", user } };
        return seq_call(s, COMET_DELETE_USER, p, 1, NULL);
    }
    return -1;
}

static int run_sequential(const struct opts *o, const struct config *cfg)
{
    if (!o->batch || cfg->server_count < 1) {
        fprintf(stderr, "comet-bench: sequential needs --batch and a server in the config\n");
        return 2;
    }
    FILE *in = fopen(o->batch, "r");
    if (!in) {
        fprintf(stderr, "comet-bench: cannot open %s\n", o->batch);
        return 2;
    }
    struct seq_ctx s = { .cfg = cfg, .server = &cfg->servers[0] };
    size_t cap = 1024, n = 0, ok = 0;
    double *lat = malloc(cap * sizeof(*lat));
    char *line = NULL;
    size_t lcap = 0;
    int rc = lat ? 0 : 1;
    double start = mono_s();
    while (rc == 0 && getline(&line, &lcap, in) > 0) {
        json_object *spec = json_tokener_parse(line);
        if (!spec)
            continue;
        if (n == cap) {
            double *nl = realloc(lat, cap * 2 * sizeof(*lat));
            if (!nl) {
                json_object_put(spec);
                rc = 1;
                break;
            }
            lat = nl;
            cap *= 2;
        }
        double t0 = mono_s();
        if (seq_job(&s, spec) == 0)
            ok++;
        lat[n++] = mono_s() - t0;
        json_object_put(spec);
    }
    double secs = mono_s() - start;
    free(line);
    fclose(in);
    if (rc == 0) {
        json_object *js = json_object_new_object();
        json_object_object_add(js, "jobs", json_object_new_int64((long long)n));
        json_object_object_add(js, "succeeded", json_object_new_int64((long long)ok));
        json_object_object_add(js, "seconds", json_object_new_double(secs));
        json_object_object_add(js, "jobs_per_second", json_object_new_double(secs > 0 ? (double)n / secs : 0));
        json_object_object_add(js, "comet_calls", json_object_new_int64(s.calls));
        json_object_object_add(js, "failed_calls", json_object_new_int64(s.failed_calls));
        add_percentiles(js, lat, n);
        rc = write_json(o->out, js) == 0 ? 0 : 1;
        json_object_put(js);
    }
    free(lat);
    return rc;
}

/* ---- echo consumer (broker ceiling) ---------------------------------------------------- */

struct pending {
    uint64_t seq;       /* confirm sequence of the result */
    uint64_t tag;       /* delivery to ack once it is confirmed */
};

/* A succeeded result for d, as the worker would publish it, without
 * running anything. */
static int echo_result(const struct bus_delivery *d, const struct config *cfg, struct bus_msg *m)
{
    struct job job;
    struct result r;
    struct err e;
    job_init(&job);
    memset(&r, 0, sizeof(r));
    if (job_decode(d->body, d->len, &job, &e) != 0)
        job.action = ACTION_CREATE;
    snprintf(r.job_id, sizeof(r.job_id), "%.36s", job.job_id[0] ? job.job_id : d->message_id);
    r.service_id = job.service_id > 0 ? job.service_id : 1;
    r.action = job.action;
    r.seq = job.seq;
    r.status = RESULT_SUCCEEDED;
    r.attempt = 1;
    r.started_at_ms = r.finished_at_ms = now_ms();
    snprintf(r.worker, sizeof(r.worker), "%s", cfg->worker_name);
    char *body = result_encode(&r);
    if (!body)
        return -1;
    char rk[128];
    snprintf(rk, sizeof(rk), "%s.%s", job_action_name(r.action), result_status_name(r.status));
    bus_msg_init(m, BUS_EX_RESULTS, rk);
    bus_msg_take_body(m, body, strlen(body));
    snprintf(m->message_id, sizeof(m->message_id), "%s", r.job_id);
    snprintf(m->type, sizeof(m->type), "result");
    return 0;
}

static int run_echo(const struct opts *o, const struct config *cfg)
{
    struct err e;
    int prefetch = o->prefetch > 0 ? o->prefetch : 128;
    if (prefetch > ECHO_WINDOW)
        prefetch = ECHO_WINDOW;
    struct bus *b = bus_connect(cfg->amqp_url, 0, &e);
    if (!b || bus_qos(b, prefetch, &e) != 0 || bus_consume(b, BUS_Q_JOBS, &e) != 0) {
        fprintf(stderr, "comet-bench: %s\n", e.msg);
        bus_free(b);
        return 3;
    }
    static struct pending fifo[ECHO_WINDOW];
    size_t head = 0, count = 0;
    long long handled = 0;
    int rc = 0;
    while (!stop_requested && rc == 0) {
        struct bus_event ev;
        if (bus_wait(b, 200, -1, &ev, &e) != 0) {
            fprintf(stderr, "comet-bench: %s\n", e.msg);
            rc = 3;
            break;
        }
        if (ev.kind == BUS_EV_DELIVERY) {
            struct bus_msg m;
            uint64_t seq = 0;
            int prc = echo_result(&ev.delivery, cfg, &m);
            if (prc == 0) {
                prc = bus_publish(b, &m, &seq, &e);
                bus_msg_clear(&m);
            }
            if (prc != 0 || count == ECHO_WINDOW) {
                fprintf(stderr, "comet-bench: echo publish failed: %s\n", e.msg);
                rc = 3;
            } else {
                fifo[(head + count) % ECHO_WINDOW] = (struct pending){ seq, ev.delivery.tag };
                count++;
            }
            bus_delivery_clear(&ev.delivery);
        } else if (ev.kind == BUS_EV_ACK || ev.kind == BUS_EV_NACK) {
            /* Confirms arrive in publish order: pop every entry the
             * confirm covers and ack (or requeue) its delivery. */
            while (count > 0 && fifo[head].seq <= ev.seq && rc == 0) {
                if (!ev.multiple && fifo[head].seq != ev.seq)
                    break;
                int arc = ev.kind == BUS_EV_ACK ? bus_ack(b, fifo[head].tag, &e)
                                                : bus_nack(b, fifo[head].tag, true, &e);
                if (arc != 0)
                    rc = 3;
                handled++;
                head = (head + 1) % ECHO_WINDOW;
                count--;
            }
        }
    }
    fprintf(stderr, "comet-bench: echo handled %lld jobs\n", handled);
    bus_free(b);
    return rc;
}

/* ---- consumers, purge -------------------------------------------------------------------- */

static int run_consumers(const struct opts *o, const struct config *cfg)
{
    struct err e;
    amqp_connection_state_t conn = raw_open(cfg->amqp_url, &e);
    if (!conn) {
        fprintf(stderr, "comet-bench: %s\n", e.msg);
        return 3;
    }
    double end = mono_s() + o->timeout_ms / 1000.0;
    long have = -1;
    while (mono_s() < end) {
        have = raw_consumers(conn);
        if (have < 0 || have == o->want)
            break;
        usleep(50000);
    }
    raw_close(conn);
    if (have != o->want) {
        fprintf(stderr, "comet-bench: %ld consumers on %s, wanted %d\n", have, BUS_Q_JOBS, o->want);
        return 1;
    }
    return 0;
}

static int run_purge(const struct config *cfg)
{
    struct err e;
    int tiers[CONFIG_MAX_RETRY_TIERS];
    int ntiers = config_retry_tiers(cfg, tiers);
    struct bus *b = ntiers >= 0 ? bus_connect(cfg->amqp_url, 0, &e) : NULL;
    if (!b || bus_declare_topology(b, tiers, ntiers, &e) != 0) {
        fprintf(stderr, "comet-bench: %s\n", ntiers < 0 ? "bad retry tiers" : e.msg);
        bus_free(b);
        return 3;
    }
    bus_free(b);
    amqp_connection_state_t conn = raw_open(cfg->amqp_url, &e);
    if (!conn) {
        fprintf(stderr, "comet-bench: %s\n", e.msg);
        return 3;
    }
    const char *fixed[] = { BUS_Q_JOBS, BUS_Q_RESULTS, BUS_Q_DEAD, BUS_Q_RESULTS_DEAD };
    int rc = 0;
    for (int i = 0; i < 4 + ntiers && rc == 0; i++) {
        char name[64];
        if (i < 4)
            snprintf(name, sizeof(name), "%s", fixed[i]);
        else
            bus_retry_queue_name(tiers[i - 4], name);
        if (!amqp_queue_purge(conn, 1, amqp_cstring_bytes(name))) {
            fprintf(stderr, "comet-bench: purge %s failed\n", name);
            rc = 3;
        }
    }
    raw_close(conn);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    memset(&o, 0, sizeof(o));
    if (parse_opts(argc, argv, &o) != 0)
        return 2;
    log_init("comet-bench", LOGL_WARN, LOG_FORMAT_TEXT);
    if (crypto_init() != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "comet-bench: libsodium or libcurl failed to initialise\n");
        return 1;
    }
    static struct config cfg; /* large: not on the stack */
    struct err e;
    err_clear(&e);
    if (config_load(&cfg, o.config, &e) != 0) {
        fprintf(stderr, "comet-bench: %s\n", e.msg);
        curl_global_cleanup();
        return 2;
    }
    if (daemon_catch_stop(&stop_requested) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "comet-bench: cannot install signal handlers\n");
        config_clear(&cfg);
        curl_global_cleanup();
        return 2;
    }

    int rc;
    if (strcmp(o.mode, "handoff") == 0)
        rc = run_handoff(&o, &cfg);
    else if (strcmp(o.mode, "sequential") == 0)
        rc = run_sequential(&o, &cfg);
    else if (strcmp(o.mode, "echo") == 0)
        rc = run_echo(&o, &cfg);
    else if (strcmp(o.mode, "consumers") == 0)
        rc = run_consumers(&o, &cfg);
    else if (strcmp(o.mode, "purge") == 0)
        rc = run_purge(&cfg);
    else {
        usage(stderr);
        rc = 2;
    }
    config_clear(&cfg);
    curl_global_cleanup();
    return rc;
}
