/* fake-comet: command line, HTTP daemon, routing and fault injection of the
 * fake Comet Server used by integration tests, the demo and benchmarks. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "delay.h"
#include "fault.h"
#include "form.h"
#include "handlers.h"
#include "state.h"

#define ADMIN_PREFIX "/api/v1/admin/"
#define CONTROL_PREFIX "/__fake/"
/* Largest request body; ProfileData of a big account stays far below. */
#define MAX_BODY_BYTES (32u * 1024u * 1024u)
/* Default worker threads (--threads). */
#define DEFAULT_THREADS 4
/* Upper bound for --threads: beyond it MHD's per-thread limits get silly. */
#define MAX_THREADS 256
/* Connections across all threads; benchmarks run 128+ keep-alive clients. */
#define CONNECTION_LIMIT 1024
/* Idle keep-alive connections close after this many seconds. */
#define CONNECTION_TIMEOUT_S 60
/* Pending connections the kernel queues while threads are busy. */
#define LISTEN_BACKLOG 1024
/* Comet's default plain-HTTP port. */
#define DEFAULT_PORT 8060

static const char html_500[] =
    "<html><head><title>500 Internal Server Error</title></head>"
    "<body><h1>Internal Server Error</h1></body></html>";
static const char status_500[] = "{\"Status\":500,\"Message\":\"Internal error\"}";
static const char not_json[] = "<html>oops</html>";
static const char not_found[] = "404 page not found\n";

/* Set at shutdown; connections resumed after it are dropped. */
static atomic_bool stopping;
static bool verbose;

/* Where an admin call stands across the access handler's calls. */
enum req_phase {
    PHASE_NEW = 0,   /* body complete, nothing decided yet */
    PHASE_READY,     /* counted, fault drawn, latency served */
    PHASE_HANGING,   /* suspended for a hang fault; drop it on resume */
};

/* Per-connection request context: the body accumulated across calls and
 * the decisions taken before a suspension. */
struct request {
    enum req_phase phase;
    bool faulted;          /* this call gets an injected fault */
    enum fault_kind kind;  /* which one (never FAULT_MIXED) */
    long hang_ms;          /* hang length from the config snapshot */
    char *body;       /* owned, NUL-terminated once complete */
    size_t len;       /* bytes in body */
    size_t cap;       /* bytes allocated */
    bool too_large;   /* body exceeded MAX_BODY_BYTES: answer 413 */
    bool oom;         /* allocation failed while accumulating */
};

/* ---- responses ---- */

/* Queues a response; takes body (malloc'ed) when must_free, else copies
 * nothing and body must outlive the response (static text). */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status,
                               const char *content_type, char *body, size_t len,
                               bool must_free)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        if (must_free)
            free(body);
        return MHD_NO;
    }
    if (content_type != NULL &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
    }
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result respond_static(struct MHD_Connection *conn, unsigned int status,
                                      const char *content_type, const char *text)
{
    return respond(conn, status, content_type, (char *)text, strlen(text), false);
}

/* Serialises obj (and puts it) into a JSON response. */
static enum MHD_Result respond_json(struct MHD_Connection *conn, unsigned int status,
                                    json_object *obj)
{
    if (obj == NULL)
        return respond_static(conn, 500, "text/plain", "out of memory\n");
    const char *text = json_object_to_json_string_ext(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *copy = text ? strdup(text) : NULL;
    json_object_put(obj);
    if (copy == NULL)
        return respond_static(conn, 500, "text/plain", "out of memory\n");
    return respond(conn, status, "application/json", copy, strlen(copy), true);
}

static enum MHD_Result respond_error(struct MHD_Connection *conn, unsigned int status,
                                     const char *msg)
{
    json_object *obj = json_object_new_object();
    json_object *s = json_object_new_string(msg);
    if (obj == NULL || s == NULL || json_object_object_add(obj, "error", s) != 0) {
        json_object_put(s);
        json_object_put(obj);
        return respond_static(conn, 500, "text/plain", "out of memory\n");
    }
    return respond_json(conn, status, obj);
}

/* ---- control API (/__fake/...) ---- */

static json_object *control_ok(void)
{
    json_object *obj = json_object_new_object();
    json_object *s = json_object_new_string("ok");
    if (obj == NULL || s == NULL || json_object_object_add(obj, "status", s) != 0) {
        json_object_put(s);
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static enum MHD_Result control_state(struct MHD_Connection *conn)
{
    char *copy = NULL;
    state_lock();
    json_object *snap = state_snapshot();
    if (snap != NULL) {
        /* The snapshot shares the live maps: serialise before unlocking. */
        const char *text = json_object_to_json_string_ext(
            snap, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        copy = text ? strdup(text) : NULL;
        json_object_put(snap);
    }
    state_unlock();
    if (copy == NULL)
        return respond_static(conn, 500, "text/plain", "out of memory\n");
    return respond(conn, 200, "application/json", copy, strlen(copy), true);
}

static enum MHD_Result control_config(struct MHD_Connection *conn, bool is_post,
                                      const struct request *req)
{
    char err[160] = "";
    json_object *update = NULL;
    if (is_post) {
        update = json_tokener_parse(req->body ? req->body : "");
        if (update == NULL)
            return respond_error(conn, 400, "body is not JSON");
    }
    state_lock();
    int rc = update ? fault_config_update(state_faults(), update, err, sizeof(err)) : 0;
    json_object *effective = rc == 0 ? fault_config_to_json(state_faults()) : NULL;
    state_unlock();
    json_object_put(update);
    if (rc != 0)
        return respond_error(conn, 400, err);
    return respond_json(conn, 200, effective);
}

static enum MHD_Result control_route(struct MHD_Connection *conn, const char *path,
                                     const char *method, const struct request *req)
{
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;

    if (strcmp(path, "health") == 0)
        return respond_json(conn, 200, control_ok());
    if (strcmp(path, "state") == 0 && is_get)
        return control_state(conn);
    if (strcmp(path, "config") == 0 && (is_get || is_post))
        return control_config(conn, is_post, req);
    if (strcmp(path, "reset") == 0 && is_post) {
        state_lock();
        int rc = state_reset();
        state_unlock();
        if (rc != 0)
            return respond_static(conn, 500, "text/plain", "out of memory\n");
        return respond_json(conn, 200, control_ok());
    }
    if (strcmp(path, "state") == 0 || strcmp(path, "config") == 0 || strcmp(path, "reset") == 0)
        return respond_error(conn, 405, "method not allowed");
    return respond_static(conn, 404, "text/plain", not_found);
}

/* ---- admin API ---- */

/* Runs the call and queues its reply (commit = false: only run it, for
 * fail_after_commit, and drop the connection). */
static enum MHD_Result admin_run(struct MHD_Connection *conn, int idx, const struct form *form,
                                 bool answer)
{
    struct api_reply reply;
    if (handlers_call(idx, form, &reply) != 0)
        return answer ? respond_static(conn, 500, "text/plain", "out of memory\n") : MHD_NO;
    if (verbose)
        fprintf(stderr, "fake-comet: %s -> %.120s\n", handlers_name(idx), reply.body);
    if (!answer) {
        free(reply.body);
        return MHD_NO;
    }
    return respond(conn, reply.http_status, "application/json", reply.body, strlen(reply.body),
                   true);
}

/* Suspends conn for ms; the access handler runs again afterwards. */
static enum MHD_Result admin_pause(struct MHD_Connection *conn, long ms)
{
    /* Only fails when stopping or out of memory: drop the connection. */
    return delay_add(conn, ms) == 0 ? MHD_YES : MHD_NO;
}

static enum MHD_Result admin_route(struct MHD_Connection *conn, const char *endpoint,
                                   const char *method, struct request *req)
{
    int idx = handlers_find(endpoint);
    if (idx < 0)
        return respond_static(conn, 404, "text/plain", not_found);
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return respond_static(conn, 405, "text/plain", "405 method not allowed\n");
    if (req->phase == PHASE_HANGING || atomic_load(&stopping))
        return MHD_NO; /* the hang is over, or we are shutting down */

    if (req->phase == PHASE_NEW) {
        struct fault_config cfg;
        state_lock();
        state_count_call(idx);
        cfg = *state_faults(); /* a snapshot: /__fake/config may change it meanwhile */
        req->faulted = fault_fires(&cfg, idx);
        if (req->faulted)
            state_count_fault();
        state_unlock();
        req->kind = req->faulted ? fault_resolve(cfg.kind) : FAULT_HTTP500;
        req->hang_ms = cfg.hang_ms;
        req->phase = PHASE_READY;
        long delay_ms = fault_delay_ms(&cfg);
        if (delay_ms > 0)
            return admin_pause(conn, delay_ms);
    }

    if (req->faulted) {
        if (verbose)
            fprintf(stderr, "fake-comet: %s -> fault %s\n", endpoint, fault_kind_name(req->kind));
        switch (req->kind) {
        case FAULT_HTTP500:
            return respond_static(conn, 500, "text/html", html_500);
        case FAULT_STATUS500:
            return respond_static(conn, 200, "application/json", status_500);
        case FAULT_RESET:
            return MHD_NO; /* MHD closes the connection without a reply */
        case FAULT_HANG:
            req->phase = PHASE_HANGING;
            return admin_pause(conn, req->hang_ms);
        case FAULT_EMPTY:
            return respond_static(conn, 200, "application/json", "");
        case FAULT_NOTJSON:
            return respond_static(conn, 200, "text/html", not_json);
        case FAULT_FAIL_AFTER_COMMIT:
        case FAULT_MIXED: /* resolved above; listed for -Wswitch */
            break;
        }
    }

    if (req->too_large)
        return respond_static(conn, 413, "text/plain", "413 request body too large\n");
    struct form form = { 0 };
    if (form_parse(&form, req->body ? req->body : "", req->len) != 0) {
        form_clear(&form);
        return respond_static(conn, 400, "application/json",
                              "{\"Status\":400,\"Message\":\"Malformed form body\"}");
    }
    enum MHD_Result rc = admin_run(conn, idx, &form, !req->faulted);
    form_clear(&form);
    return rc;
}

/* ---- MHD callbacks ---- */

static int request_append(struct request *req, const char *data, size_t len)
{
    if (req->too_large || len > MAX_BODY_BYTES - req->len) {
        req->too_large = true;
        return 0;
    }
    if (req->len + len + 1 > req->cap) {
        size_t cap = req->cap ? req->cap : 4096;
        while (cap < req->len + len + 1)
            cap *= 2;
        char *b = realloc(req->body, cap);
        if (b == NULL)
            return -1;
        req->body = b;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, len);
    req->len += len;
    req->body[req->len] = '\0';
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    (void)version;
    struct request *req = *con_cls;
    if (req == NULL) {
        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return MHD_NO;
        *con_cls = req; /* freed in on_completed */
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (request_append(req, upload_data, *upload_data_size) != 0)
            req->oom = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->oom)
        return respond_static(conn, 500, "text/plain", "out of memory\n");
    if (strncmp(url, CONTROL_PREFIX, strlen(CONTROL_PREFIX)) == 0)
        return control_route(conn, url + strlen(CONTROL_PREFIX), method, req);
    if (strncmp(url, ADMIN_PREFIX, strlen(ADMIN_PREFIX)) == 0)
        return admin_route(conn, url + strlen(ADMIN_PREFIX), method, req);
    return respond_static(conn, 404, "text/plain", not_found);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct request *req = *con_cls;
    if (req == NULL)
        return;
    free(req->body);
    free(req);
    *con_cls = NULL;
}

/* ---- command line ---- */

struct cli {
    unsigned int port;
    const char *bind;
    unsigned int threads;
    const char *pidfile;
    struct fake_options opts;   /* handed to state_init */
    struct fault_config faults; /* initial fault settings */
};

static void usage(FILE *f)
{
    fprintf(f,
        "usage: fake-comet [--port P] [--bind ADDR] [--threads N] [--pidfile PATH]\n"
        "                  [--admin-user U] [--admin-password P] [--auth-http-403]\n"
        "                  [--missing-user-403] [--old-set-reply] [--conflict-status N]\n"
        "                  [--providers id=desc,...] [--latency-ms N] [--jitter-ms N]\n"
        "                  [--error-rate F] [--error-kind K] [--error-endpoints a,b]\n"
        "                  [--hang-ms N] [--verbose]\n"
        "error kinds: http500 status500 reset hang fail_after_commit empty notjson mixed\n");
}

static int parse_long(const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "fake-comet: %s: '%s' is not an integer in %ld..%ld\n", opt, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* "id=desc,id=desc" -> {id: desc}. */
static json_object *parse_providers(const char *s)
{
    json_object *obj = json_object_new_object();
    char *copy = strdup(s);
    char *save = NULL;
    if (obj == NULL || copy == NULL)
        goto fail;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (eq == NULL || eq == tok) {
            fprintf(stderr, "fake-comet: --providers: '%s' is not id=description\n", tok);
            goto fail;
        }
        *eq = '\0';
        json_object *desc = json_object_new_string(eq + 1);
        if (desc == NULL || json_object_object_add(obj, tok, desc) != 0) {
            json_object_put(desc);
            goto fail;
        }
    }
    if (json_object_object_length(obj) == 0) {
        fprintf(stderr, "fake-comet: --providers: no provider given\n");
        goto fail;
    }
    free(copy);
    return obj;
fail:
    free(copy);
    json_object_put(obj);
    return NULL;
}

enum cli_opt {
    OPT_PORT = 256, OPT_BIND, OPT_THREADS, OPT_PIDFILE, OPT_ADMIN_USER, OPT_ADMIN_PASSWORD,
    OPT_AUTH_403, OPT_MISSING_403, OPT_OLD_SET, OPT_CONFLICT, OPT_PROVIDERS, OPT_LATENCY,
    OPT_JITTER, OPT_RATE, OPT_KIND, OPT_ENDPOINTS, OPT_HANG, OPT_VERBOSE, OPT_HELP,
};

static const struct option cli_options[] = {
    { "port", required_argument, NULL, OPT_PORT },
    { "bind", required_argument, NULL, OPT_BIND },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "pidfile", required_argument, NULL, OPT_PIDFILE },
    { "admin-user", required_argument, NULL, OPT_ADMIN_USER },
    { "admin-password", required_argument, NULL, OPT_ADMIN_PASSWORD },
    { "auth-http-403", no_argument, NULL, OPT_AUTH_403 },
    { "missing-user-403", no_argument, NULL, OPT_MISSING_403 },
    { "old-set-reply", no_argument, NULL, OPT_OLD_SET },
    { "conflict-status", required_argument, NULL, OPT_CONFLICT },
    { "providers", required_argument, NULL, OPT_PROVIDERS },
    { "latency-ms", required_argument, NULL, OPT_LATENCY },
    { "jitter-ms", required_argument, NULL, OPT_JITTER },
    { "error-rate", required_argument, NULL, OPT_RATE },
    { "error-kind", required_argument, NULL, OPT_KIND },
    { "error-endpoints", required_argument, NULL, OPT_ENDPOINTS },
    { "hang-ms", required_argument, NULL, OPT_HANG },
    { "verbose", no_argument, NULL, OPT_VERBOSE },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
};

/* Replaces an owned option string. */
static int set_string(char **dst, const char *src)
{
    char *copy = strdup(src);
    if (copy == NULL)
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

/* Fills cli from argv. Returns 0, 1 for --help, or -1 on a bad flag (the
 * message is printed). On -1 the caller frees cli->opts. */
static int cli_parse(int argc, char **argv, struct cli *cli)
{
    long v;
    char err[160];
    int c;
    while ((c = getopt_long(argc, argv, "", cli_options, NULL)) != -1) {
        switch (c) {
        case OPT_PORT:
            if (parse_long("--port", optarg, 0, 65535, &v) != 0)
                return -1;
            cli->port = (unsigned int)v;
            break;
        case OPT_BIND: cli->bind = optarg; break;
        case OPT_THREADS:
            if (parse_long("--threads", optarg, 1, MAX_THREADS, &v) != 0)
                return -1;
            cli->threads = (unsigned int)v;
            break;
        case OPT_PIDFILE: cli->pidfile = optarg; break;
        case OPT_ADMIN_USER:
            if (set_string(&cli->opts.admin_user, optarg) != 0)
                return -1;
            break;
        case OPT_ADMIN_PASSWORD:
            if (set_string(&cli->opts.admin_password, optarg) != 0)
                return -1;
            break;
        case OPT_AUTH_403: cli->opts.auth_http_403 = true; break;
        case OPT_MISSING_403: cli->opts.missing_user_403 = true; break;
        case OPT_OLD_SET: cli->opts.old_set_reply = true; break;
        case OPT_CONFLICT:
            if (parse_long("--conflict-status", optarg, 400, 599, &v) != 0)
                return -1;
            cli->opts.conflict_status = (int)v;
            break;
        case OPT_PROVIDERS: {
            json_object *p = parse_providers(optarg);
            if (p == NULL)
                return -1;
            json_object_put(cli->opts.providers);
            cli->opts.providers = p;
            break;
        }
        case OPT_LATENCY:
            if (parse_long("--latency-ms", optarg, 0, FAULT_MAX_DELAY_MS, &v) != 0)
                return -1;
            cli->faults.latency_ms = v;
            break;
        case OPT_JITTER:
            if (parse_long("--jitter-ms", optarg, 0, FAULT_MAX_DELAY_MS, &v) != 0)
                return -1;
            cli->faults.jitter_ms = v;
            break;
        case OPT_HANG:
            if (parse_long("--hang-ms", optarg, 0, FAULT_MAX_DELAY_MS, &v) != 0)
                return -1;
            cli->faults.hang_ms = v;
            break;
        case OPT_RATE: {
            char *end;
            errno = 0;
            double r = strtod(optarg, &end);
            if (errno != 0 || end == optarg || *end != '\0' || !(r >= 0.0 && r <= 1.0)) {
                fprintf(stderr, "fake-comet: --error-rate: '%s' is not a number in 0..1\n", optarg);
                return -1;
            }
            cli->faults.error_rate = r;
            break;
        }
        case OPT_KIND:
            if (fault_kind_parse(optarg, &cli->faults.kind) != 0) {
                fprintf(stderr, "fake-comet: --error-kind: unknown kind '%s'\n", optarg);
                usage(stderr);
                return -1;
            }
            break;
        case OPT_ENDPOINTS:
            if (fault_endpoints_parse(optarg, &cli->faults.endpoint_mask, err, sizeof(err)) != 0) {
                fprintf(stderr, "fake-comet: --error-endpoints: %s\n", err);
                return -1;
            }
            break;
        case OPT_VERBOSE: verbose = true; break;
        case OPT_HELP: usage(stdout); return 1;
        default: /* getopt_long already named the bad flag */
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fake-comet: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Fills the defaults that need allocation. Returns -1 on out of memory. */
static int cli_defaults(struct cli *cli)
{
    if (cli->opts.admin_user == NULL && set_string(&cli->opts.admin_user, "admin") != 0)
        return -1;
    if (cli->opts.admin_password == NULL &&
        set_string(&cli->opts.admin_password, "admin-secret") != 0)
        return -1;
    if (cli->opts.providers == NULL) {
        cli->opts.providers = parse_providers("1003-default=Comet Storage,1003-eu=Comet Storage EU");
        if (cli->opts.providers == NULL)
            return -1;
    }
    return 0;
}

static void options_clear(struct fake_options *o)
{
    free(o->admin_user);
    free(o->admin_password);
    json_object_put(o->providers);
    memset(o, 0, sizeof(*o));
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "fake-comet: cannot write pidfile %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fprintf(f, "%ld\n", (long)getpid()) > 0;
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "fake-comet: cannot write pidfile %s\n", path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli cli = { .port = DEFAULT_PORT, .bind = "127.0.0.1", .threads = DEFAULT_THREADS };
    cli.opts.conflict_status = 400;
    fault_config_init(&cli.faults);

    int rc = cli_parse(argc, argv, &cli);
    if (rc != 0) {
        options_clear(&cli.opts);
        return rc > 0 ? 0 : 2;
    }
    if (cli_defaults(&cli) != 0) {
        fprintf(stderr, "fake-comet: out of memory\n");
        options_clear(&cli.opts);
        return 1;
    }
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)cli.port) };
    if (inet_pton(AF_INET, cli.bind, &addr.sin_addr) != 1) {
        fprintf(stderr, "fake-comet: --bind: '%s' is not an IPv4 address\n", cli.bind);
        options_clear(&cli.opts);
        return 2;
    }
    if (state_init(&cli.opts) != 0) {
        fprintf(stderr, "fake-comet: out of memory\n");
        options_clear(&cli.opts);
        return 1;
    }
    *state_faults() = cli.faults; /* no threads yet: no lock needed */

    /* Block the stop signals before MHD starts its threads, so they inherit
     * the mask and sigwait below is the only place that takes them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &stop_signals, NULL) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "fake-comet: cannot set up signals\n");
        state_free();
        return 1;
    }

    if (delay_start() != 0) {
        fprintf(stderr, "fake-comet: cannot start the timer thread\n");
        state_free();
        return 1;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY |
                         MHD_ALLOW_SUSPEND_RESUME;
    if (verbose)
        flags |= MHD_USE_ERROR_LOG;
    struct MHD_Daemon *daemon = MHD_start_daemon(
        flags, (uint16_t)cli.port, NULL, NULL, on_request, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, cli.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT_S,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)LISTEN_BACKLOG,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int)1,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_END);
    if (daemon == NULL) {
        fprintf(stderr, "fake-comet: cannot listen on %s:%u (port in use?)\n", cli.bind, cli.port);
        delay_stop();
        state_free();
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned int port = info ? info->port : cli.port;
    rc = 0;
    if (cli.pidfile != NULL && write_pidfile(cli.pidfile) != 0)
        rc = 1;
    if (rc == 0) {
        fprintf(stderr, "fake-comet listening on %s:%u\n", cli.bind, port);
        int sig = 0;
        if (sigwait(&stop_signals, &sig) != 0)
            rc = 1;
        else if (verbose)
            fprintf(stderr, "fake-comet: signal %d, stopping\n", sig);
    }
    atomic_store(&stopping, true);
    delay_stop(); /* resumes suspended connections: MHD aborts on them at stop */
    MHD_stop_daemon(daemon);
    if (cli.pidfile != NULL)
        (void)unlink(cli.pidfile); /* best effort: a stale pidfile is harmless */
    state_free();
    return rc;
}
