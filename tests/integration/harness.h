/* Integration harness: starts the fake Comet and comet-worker processes
 * against the real RabbitMQ and Redis that scripts/test.sh started, publishes
 * jobs as the WHMCS module does, and reads results and the fake's state.
 * Header-only (static functions) so each integration test is one binary. */
#ifndef COMET_TEST_HARNESS_H
#define COMET_TEST_HARNESS_H

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "config.h"
#include "crypto.h"
#include "job.h"
#include "jobmsg.h"

#define H_MAX_RESULTS 16384

/* Retry budget written into the worker config; fault tests raise it. */
static int h_max_attempts = 4;

struct harness {
    char dir[512];
    char bin[512];
    char fake_url[128];
    int fake_port;
    int metrics_port;           /* the first worker's /metrics listener */
    pid_t fake_pid;
    pid_t worker_pids[8];
    int nworkers;
    char cfg_path[600];
    char key_b64[64];
    struct config cfg;
    struct bus *pub;
    struct bus *res;            /* consumes a private queue bound to comet.results */
    struct result *results;     /* every result seen, in arrival order */
    size_t nresults;
};

static __attribute__((unused)) int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static __attribute__((unused)) pid_t h_spawn(char *const argv[], const char *logpath)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* A test killed mid-run must not leave its workers consuming the
         * shared queues (they would fail the next test's jobs). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static __attribute__((unused)) void h_stop(pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    int st;
    for (int i = 0; i < 300; i++) { /* 30 s: the worker's grace period is shorter */
        if (waitpid(pid, &st, WNOHANG) == pid)
            return;
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

/* ---- HTTP to the fake ---------------------------------------------------- */

struct h_buf {
    char *p;
    size_t n;
};

static __attribute__((unused)) size_t h_write(char *d, size_t sz, size_t nm, void *u)
{
    struct h_buf *b = u;
    char *np = realloc(b->p, b->n + sz * nm + 1);
    if (!np)
        return 0;
    b->p = np;
    memcpy(b->p + b->n, d, sz * nm);
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

/* GET a URL into a malloc'd string (caller frees); *status gets the HTTP code. */
static __attribute__((unused)) char *h_http_get(const char *url, long *status)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    struct h_buf b = { NULL, 0 };
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, h_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return b.p;
}

/* GET or POST (body != NULL) a fake route; returns parsed JSON or NULL. */
static __attribute__((unused)) json_object *h_fake(struct harness *h, const char *route, const char *body)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    char url[256];
    snprintf(url, sizeof(url), "%s%s", h->fake_url, route);
    struct h_buf b = { NULL, 0 };
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, h_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    json_object *o = (rc == CURLE_OK && b.p) ? json_tokener_parse(b.p) : NULL;
    free(b.p);
    return o;
}

/* The fake's stored profile of a user, or NULL (caller puts the state). */
static __attribute__((unused)) json_object *h_user(json_object *state, const char *name)
{
    json_object *users, *u, *p;
    if (!json_object_object_get_ex(state, "users", &users) ||
        !json_object_object_get_ex(users, name, &u) || !json_object_object_get_ex(u, "profile", &p))
        return NULL;
    return p;
}

static __attribute__((unused)) json_object *h_get(json_object *o, const char *k)
{
    json_object *v = NULL;
    if (o)
        json_object_object_get_ex(o, k, &v);
    return v;
}

static __attribute__((unused)) long long h_calls(json_object *state, const char *endpoint)
{
    return json_object_get_int64(h_get(h_get(state, "calls"), endpoint));
}

/* ---- processes ------------------------------------------------------------ */

static __attribute__((unused)) int h_start_worker(struct harness *h, const char *extra_env)
{
    char path[700], logpath[700];
    snprintf(path, sizeof(path), "%s/comet-worker", h->bin);
    snprintf(logpath, sizeof(logpath), "%s/worker-%d.log", h->dir, h->nworkers);
    if (extra_env)
        putenv((char *)extra_env);
    char *argv[] = { path, "-c", h->cfg_path, NULL };
    pid_t pid = h_spawn(argv, logpath);
    if (pid <= 0)
        return -1;
    h->worker_pids[h->nworkers++] = pid;
    return 0;
}

/* Starts the fake Comet on h->fake_port (a fresh, empty one) and waits
 * until it answers. */
static __attribute__((unused)) int h_start_fake(struct harness *h)
{
    char fakelog[700], fakebin[700], portstr[16];
    snprintf(fakebin, sizeof(fakebin), "%s/fake-comet", h->bin);
    snprintf(fakelog, sizeof(fakelog), "%s/fake-comet.log", h->dir);
    snprintf(portstr, sizeof(portstr), "%d", h->fake_port);
    char *fargv[] = { fakebin, "--port", portstr, "--threads", "8", NULL };
    h->fake_pid = h_spawn(fargv, fakelog);
    json_object *ok = NULL;
    for (int i = 0; i < 100 && !ok; i++) {
        usleep(50000);
        ok = h_fake(h, "/__fake/state", NULL);
    }
    if (!ok)
        return -1;
    json_object_put(ok);
    return 0;
}

static __attribute__((unused)) int h_setup(struct harness *h, int concurrency)
{
    memset(h, 0, sizeof(*h));
    const char *amqp = getenv("COMET_AMQP_URL");
    const char *bin = getenv("COMET_TEST_BIN_DIR");
    if (!amqp || !bin || !getenv("COMET_REDIS_PORT"))
        return 1; /* not under scripts/test.sh: skip */
    snprintf(h->bin, sizeof(h->bin), "%s", bin);
    const char *tmp = getenv("COMET_TEST_TMP");
    if (tmp) {
        snprintf(h->dir, sizeof(h->dir), "%s", tmp);
        mkdir(h->dir, 0700);
    } else {
        snprintf(h->dir, sizeof(h->dir), "/tmp/comet-it.XXXXXX");
        if (!mkdtemp(h->dir))
            return -1;
    }
    if (crypto_init() != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    /* A fresh key per run: leftovers of earlier runs fail verification. */
    unsigned char raw[KEY_BYTES];
    randombytes_buf(raw, sizeof(raw));
    char *b64 = b64_encode(raw, sizeof(raw));
    snprintf(h->key_b64, sizeof(h->key_b64), "%s", b64);
    free(b64);
    char keypath[700], pwpath[700];
    snprintf(keypath, sizeof(keypath), "%s/k1.key", h->dir);
    snprintf(pwpath, sizeof(pwpath), "%s/comet-admin.pw", h->dir);
    FILE *f = fopen(keypath, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", h->key_b64);
    fclose(f);
    chmod(keypath, 0600);
    f = fopen(pwpath, "w");
    if (!f)
        return -1;
    fprintf(f, "admin-secret\n");
    fclose(f);
    chmod(pwpath, 0600);

    h->fake_port = h_free_port();
    snprintf(h->fake_url, sizeof(h->fake_url), "http://127.0.0.1:%d", h->fake_port);
    if (h_start_fake(h) != 0)
        return -1;

    snprintf(h->cfg_path, sizeof(h->cfg_path), "%s/worker.conf", h->dir);
    f = fopen(h->cfg_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "log = { level = \"info\"; format = \"text\"; };\n"
            "worker = { concurrency = %d; grace_seconds = 10; };\n"
            "retry = { max_attempts = %d; tiers_ms = \"200,400,800\"; };\n"
            "redis = { prefix = \"it%d:\"; };\n"
            "comet = { connect_timeout_ms = 2000; timeout_ms = 5000; };\n"
            "metrics = { port = %d; };\n"
            "keys = ( { id = \"k1\"; file = \"%s\"; } );\n"
            "servers = ( { url = \"%s\"; username = \"admin\"; password_file = \"%s\"; } );\n",
            concurrency, h_max_attempts, (int)getpid(), h->metrics_port = h_free_port(), keypath, h->fake_url, pwpath);
    fclose(f);
    struct err e;
    if (config_load(&h->cfg, h->cfg_path, &e) != 0) {
        fprintf(stderr, "harness: %s\n", e.msg);
        return -1;
    }
    h->results = calloc(H_MAX_RESULTS, sizeof(*h->results));
    h->pub = bus_connect(h->cfg.amqp_url, 0, &e);
    h->res = bus_connect(h->cfg.amqp_url, 0, &e);
    char q[128];
    int tiers[] = { 200, 400, 800 };
    if (!h->results || !h->pub || !h->res || bus_declare_topology(h->pub, tiers, 3, &e) != 0 ||
        bus_bind_temp_queue(h->res, BUS_EX_RESULTS, "#", q, &e) != 0 ||
        bus_consume(h->res, q, &e) != 0) {
        fprintf(stderr, "harness: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static __attribute__((unused)) void h_teardown(struct harness *h)
{
    for (int i = 0; i < h->nworkers; i++)
        h_stop(h->worker_pids[i], SIGTERM);
    h_stop(h->fake_pid, SIGTERM);
    bus_free(h->pub);
    bus_free(h->res);
    free(h->results);
    config_clear(&h->cfg);
    curl_global_cleanup();
}

/* ---- jobs and results --------------------------------------------------------- */

/* Publishes a job spec (JSON text, may hold "password"); copies the job id. */
static __attribute__((unused)) int h_publish(struct harness *h, const char *spec_json, char job_id[UUID_STR_LEN])
{
    json_object *spec = json_tokener_parse(spec_json);
    if (!spec)
        return -1;
    json_object *srv = json_object_new_object();
    json_object_object_add(srv, "url", json_object_new_string(h->fake_url));
    if (!json_object_object_get_ex(spec, "server", NULL))
        json_object_object_add(spec, "server", srv);
    else
        json_object_put(srv);
    struct job job;
    struct bus_msg m;
    struct err e;
    int rc = jobmsg_build(spec, keyring_active(&h->cfg.keys), &job, &m, &e);
    json_object_put(spec);
    if (rc == 0)
        rc = bus_publish_wait(h->pub, &m, 5000, &e);
    bus_msg_clear(&m);
    if (rc != 0) {
        fprintf(stderr, "publish: %s\n", e.msg);
        return -1;
    }
    if (job_id)
        snprintf(job_id, UUID_STR_LEN, "%s", job.job_id);
    return 0;
}

/* Publishes raw bytes with the given signature headers (NULL = omit). */
static __attribute__((unused)) int h_publish_raw(struct harness *h, const char *body, const char *kid, const char *sig,
                         const char *type, const char *message_id)
{
    struct bus_msg m;
    struct err e;
    /* Routed as a create whatever it claims to be: the queue must cope. */
    bus_msg_init(&m, BUS_EX_JOBS, "create");
    m.mandatory = true;
    snprintf(m.type, sizeof(m.type), "%s", type ? type : "");
    snprintf(m.message_id, sizeof(m.message_id), "%s", message_id ? message_id : "");
    if (bus_msg_set_body(&m, body, strlen(body)) != 0)
        return -1;
    if (kid)
        bus_msg_add_str(&m, BUS_H_KID, kid);
    if (sig)
        bus_msg_add_str(&m, BUS_H_SIG, sig);
    int rc = bus_publish_wait(h->pub, &m, 5000, &e);
    bus_msg_clear(&m);
    return rc;
}

static __attribute__((unused)) const struct result *h_find(struct harness *h, const char *job_id, bool terminal)
{
    for (size_t i = h->nresults; i-- > 0;)
        if (strcmp(h->results[i].job_id, job_id) == 0 &&
            (!terminal || h->results[i].status != RESULT_RETRYING))
            return &h->results[i];
    return NULL;
}

static __attribute__((unused)) void h_pump(struct harness *h, int ms)
{
    struct bus_event ev;
    struct err e;
    if (bus_wait(h->res, ms, -1, &ev, &e) != 0)
        return;
    if (ev.kind != BUS_EV_DELIVERY)
        return;
    if (h->nresults < H_MAX_RESULTS &&
        result_decode(ev.delivery.body, ev.delivery.len, &h->results[h->nresults], &e) == 0)
        h->nresults++;
    bus_ack(h->res, ev.delivery.tag, &e);
    bus_delivery_clear(&ev.delivery);
}

/* Waits for the terminal result of job_id; NULL on timeout. */
static __attribute__((unused)) const struct result *h_wait(struct harness *h, const char *job_id, int timeout_ms)
{
    long long end = mono_ms() + timeout_ms;
    const struct result *r;
    while (!(r = h_find(h, job_id, true)) && mono_ms() < end)
        h_pump(h, 100);
    return r;
}

static __attribute__((unused)) size_t h_count(struct harness *h, const char *job_id, enum result_status st)
{
    size_t n = 0;
    for (size_t i = 0; i < h->nresults; i++)
        if (strcmp(h->results[i].job_id, job_id) == 0 && h->results[i].status == st)
            n++;
    return n;
}

#endif
