/* comet-dispatcher against the real RabbitMQ and a scripted callback server
 * (libmicrohttpd, in this process) that verifies every signature: signed
 * delivery, a 503 outage delivering everything exactly once afterwards, a
 * 401 dead-lettered with its reason, and a graceful stop mid-POST. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "clock.h"
#include "crypto.h"
#include "job.h"

#define SECRET "it-dispatcher-secret-0123456789"
#define MAX_AGE_S 300               /* what callback.php accepts */
#define MAX_RECORDS 4096
#define MAX_BODY 65536
#define WAIT_MS 20000

/* One request the callback server answered. */
struct record {
    char job_id[UUID_STR_LEN];
    int status;                     /* what it answered */
};

/* The scripted callback server. */
struct cbserver {
    struct MHD_Daemon *d;
    int port;
    pthread_mutex_t mu;
    int status;                     /* default answer */
    char refuse_job[UUID_STR_LEN];  /* this job gets 401 */
    char slow_job[UUID_STR_LEN];    /* this job's answer waits slow_ms */
    int slow_ms;
    bool slow_started;              /* the slow job's request has arrived */
    struct record records[MAX_RECORDS];
    size_t nrecords;
    int bad_signatures;
    int undecodable;
};

static struct cbserver S;
static char tmpdir[512];
static char cfg_path[700];
static char bin_dir[512];
static char amqp_url[512];
static pid_t disp_pid = -1;
static struct bus *pub;
static int skip_all;

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ---- callback server ---------------------------------------------------------- */

struct upload {
    char *buf;
    size_t len;
    bool too_big;
};

static enum MHD_Result answer(struct MHD_Connection *c, unsigned int status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* Verifies as callback.php does: fresh timestamp, v1= HMAC, constant time. */
static bool signature_ok(struct MHD_Connection *c, const char *body, size_t len)
{
    const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Comet-Timestamp");
    const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Comet-Signature");
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (!ts || !sig || !ctype || strcmp(ctype, "application/json") != 0 ||
        strncmp(sig, "v1=", 3) != 0)
        return false;
    char *end = NULL;
    long long t = strtoll(ts, &end, 10);
    if (end == ts || *end != '\0' || llabs((long long)time(NULL) - t) > MAX_AGE_S)
        return false;
    return sign_callback_verify((const unsigned char *)SECRET, strlen(SECRET), t, body, len, sig + 3);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    if (strcmp(method, "POST") != 0)
        return answer(c, 405, "{\"error\":\"POST only\"}");
    struct upload *u = *con_cls;
    if (!u) {
        u = calloc(1, sizeof(*u));
        if (!u)
            return MHD_NO;
        *con_cls = u;
        return MHD_YES;
    }
    if (*data_size > 0) {
        if (u->len + *data_size > MAX_BODY) {
            u->too_big = true;
        } else {
            char *nb = realloc(u->buf, u->len + *data_size + 1);
            if (!nb)
                return MHD_NO;
            u->buf = nb;
            memcpy(u->buf + u->len, data, *data_size);
            u->len += *data_size;
            u->buf[u->len] = '\0';
        }
        *data_size = 0;
        return MHD_YES;
    }
    if (u->too_big || !u->buf)
        return answer(c, 400, "{\"error\":\"no body\"}");
    if (!signature_ok(c, u->buf, u->len)) {
        pthread_mutex_lock(&S.mu);
        S.bad_signatures++;
        pthread_mutex_unlock(&S.mu);
        return answer(c, 401, "{\"error\":\"bad signature\"}");
    }
    struct result r;
    struct err e;
    if (result_decode(u->buf, u->len, &r, &e) != 0) {
        pthread_mutex_lock(&S.mu);
        S.undecodable++;
        pthread_mutex_unlock(&S.mu);
        return answer(c, 400, "{\"error\":\"bad event\"}");
    }
    pthread_mutex_lock(&S.mu);
    int status = S.status;
    int delay = 0;
    if (strcmp(r.job_id, S.refuse_job) == 0)
        status = 401;
    if (strcmp(r.job_id, S.slow_job) == 0) {
        delay = S.slow_ms;
        S.slow_started = true;
    }
    pthread_mutex_unlock(&S.mu);
    if (delay > 0)
        sleep_ms(delay); /* thread per connection: only this request waits */
    pthread_mutex_lock(&S.mu);
    if (S.nrecords < MAX_RECORDS) {
        struct record *rec = &S.records[S.nrecords++];
        snprintf(rec->job_id, sizeof(rec->job_id), "%s", r.job_id);
        rec->status = status;
    }
    pthread_mutex_unlock(&S.mu);
    if (status == 401)
        return answer(c, 401, "{\"error\":\"scripted refusal\"}");
    return answer(c, (unsigned)status, status == 200 ? "{\"ok\":true}" : "{\"error\":\"scripted\"}");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct upload *u = *con_cls;
    if (u) {
        free(u->buf);
        free(u);
        *con_cls = NULL;
    }
}

/* port 0: the kernel picks one (read back into S.port). */
static int cbserver_listen(uint16_t port)
{
    S.d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                               MHD_USE_ERROR_LOG,
                           port, NULL, NULL, on_request, NULL, MHD_OPTION_NOTIFY_COMPLETED,
                           on_completed, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                           MHD_OPTION_END);
    if (!S.d)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(S.d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info)
        return -1;
    S.port = info->port;
    return 0;
}

static int cbserver_start(void)
{
    pthread_mutex_init(&S.mu, NULL);
    S.status = 200;
    return cbserver_listen(0);
}

static void script(int status, const char *refuse, const char *slow, int slow_ms)
{
    pthread_mutex_lock(&S.mu);
    S.status = status;
    snprintf(S.refuse_job, sizeof(S.refuse_job), "%s", refuse ? refuse : "");
    snprintf(S.slow_job, sizeof(S.slow_job), "%s", slow ? slow : "");
    S.slow_ms = slow_ms;
    pthread_mutex_unlock(&S.mu);
}

/* Answers recorded for job_id with the given status (-1 = any). */
static int answered(const char *job_id, int status)
{
    int n = 0;
    pthread_mutex_lock(&S.mu);
    for (size_t i = 0; i < S.nrecords; i++)
        if (strcmp(S.records[i].job_id, job_id) == 0 && (status < 0 || S.records[i].status == status))
            n++;
    pthread_mutex_unlock(&S.mu);
    return n;
}

/* ---- broker helpers ----------------------------------------------------------------- */

/* Empties a queue with rabbitmq-c directly (bus.h has no purge): results of
 * the worker tests that ran earlier on this broker must not count here. */
static int purge_queue(const char *queue)
{
    struct amqp_connection_info ci;
    char *url = strdup(amqp_url);
    if (!url || amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
        free(url);
        return -1;
    }
    int rc = -1;
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;
    /* "amqp://host/" parses to vhost "": RabbitMQ's default vhost is "/". */
    const char *vhost = (ci.vhost && ci.vhost[0]) ? ci.vhost : "/";
    if (sock && amqp_socket_open(sock, ci.host, ci.port) == AMQP_STATUS_OK &&
        amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user, ci.password)
                .reply_type == AMQP_RESPONSE_NORMAL &&
        amqp_channel_open(conn, 1) != NULL &&
        amqp_queue_purge(conn, 1, amqp_cstring_bytes(queue)) != NULL)
        rc = 0;
    if (conn) {
        amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(conn);
    }
    free(url);
    return rc;
}

/* Publishes one result event as a worker does. job_id: used when set,
 * else a fresh one is written into it. */
static int publish_event(enum job_action action, enum result_status status, long long service_id,
                         char job_id[UUID_STR_LEN])
{
    struct result r;
    memset(&r, 0, sizeof(r));
    if (job_id[0])
        snprintf(r.job_id, sizeof(r.job_id), "%s", job_id);
    else
        uuid4(r.job_id);
    r.service_id = service_id;
    r.action = action;
    r.seq = 1;
    r.status = status;
    r.attempt = 1;
    r.started_at_ms = now_ms();
    r.finished_at_ms = r.started_at_ms + 5;
    snprintf(r.worker, sizeof(r.worker), "it/%d", (int)getpid());
    char *body = result_encode(&r);
    if (!body)
        return -1;
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", job_action_name(action), result_status_name(status));
    struct bus_msg m;
    bus_msg_init(&m, BUS_EX_RESULTS, key);
    snprintf(m.message_id, sizeof(m.message_id), "%s", r.job_id);
    bus_msg_take_body(&m, body, strlen(body));
    struct err e;
    int rc = bus_publish_wait(pub, &m, 5000, &e);
    bus_msg_clear(&m);
    if (rc != 0) {
        fprintf(stderr, "publish: %s\n", e.msg);
        return -1;
    }
    snprintf(job_id, UUID_STR_LEN, "%s", r.job_id);
    return 0;
}

/* ---- the dispatcher process ---------------------------------------------------------- */

static int start_dispatcher(void)
{
    char path[700], logpath[700];
    snprintf(path, sizeof(path), "%s/comet-dispatcher", bin_dir);
    snprintf(logpath, sizeof(logpath), "%s/dispatcher.log", tmpdir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(path, path, "-c", cfg_path, (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return -1;
    disp_pid = pid;
    return 0;
}

/* SIGTERM and wait; returns the exit status, or -1 when it had to be killed. */
static int stop_dispatcher(int timeout_ms)
{
    if (disp_pid <= 0)
        return -1;
    kill(disp_pid, SIGTERM);
    int st = 0;
    long long end = mono_ms() + timeout_ms;
    while (mono_ms() < end) {
        if (waitpid(disp_pid, &st, WNOHANG) == disp_pid) {
            disp_pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(20);
    }
    kill(disp_pid, SIGKILL);
    waitpid(disp_pid, &st, 0);
    disp_pid = -1;
    return -1;
}

/* True when the dispatcher's log (never the secret) holds needle. */
static bool log_contains(const char *needle)
{
    char logpath[700];
    snprintf(logpath, sizeof(logpath), "%s/dispatcher.log", tmpdir);
    FILE *f = fopen(logpath, "r");
    if (!f)
        return false;
    char line[4096];
    bool hit = false;
    while (!hit && fgets(line, sizeof(line), f))
        hit = strstr(line, needle) != NULL;
    fclose(f);
    return hit;
}

static int group_setup(void **state)
{
    (void)state;
    const char *amqp = getenv("COMET_AMQP_URL");
    const char *bin = getenv("COMET_TEST_BIN_DIR");
    if (!amqp) {
        skip_all = 1;
        return 0;
    }
    snprintf(amqp_url, sizeof(amqp_url), "%s", amqp);
    if (bin)
        snprintf(bin_dir, sizeof(bin_dir), "%s", bin);
    else
        snprintf(bin_dir, sizeof(bin_dir), "bin");
    const char *tmp = getenv("COMET_TEST_TMP");
    if (tmp) {
        snprintf(tmpdir, sizeof(tmpdir), "%s", tmp);
        mkdir(tmpdir, 0700);
    } else {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/comet-disp-it.XXXXXX");
        if (!mkdtemp(tmpdir))
            return -1;
    }
    if (crypto_init() != 0 || cbserver_start() != 0)
        return -1;
    char secret_path[700];
    snprintf(secret_path, sizeof(secret_path), "%s/callback.secret", tmpdir);
    int fd = open(secret_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, SECRET "\n", strlen(SECRET) + 1) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    snprintf(cfg_path, sizeof(cfg_path), "%s/dispatcher.conf", tmpdir);
    FILE *f = fopen(cfg_path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "log = { level = \"info\"; format = \"text\"; };\n"
            "worker = { grace_seconds = 5; };\n"
            "dispatcher = { callback_url = \"http://127.0.0.1:%d/callback.php\";\n"
            "               secret_file = \"%s\"; concurrency = 8; timeout_ms = 3000; };\n",
            S.port, secret_path);
    fclose(f);
    struct err e;
    pub = bus_connect(amqp_url, 0, &e);
    int tiers[] = { 1000, 5000, 30000, 120000, 600000, 1800000 };
    if (!pub || bus_declare_topology(pub, tiers, 6, &e) != 0) {
        fprintf(stderr, "setup: %s\n", pub ? e.msg : "cannot connect");
        return -1;
    }
    if (purge_queue(BUS_Q_RESULTS) != 0 || purge_queue(BUS_Q_RESULTS_DEAD) != 0) {
        fprintf(stderr, "setup: purge failed\n");
        return -1;
    }
    return start_dispatcher();
}

static int group_teardown(void **state)
{
    (void)state;
    if (skip_all)
        return 0;
    if (disp_pid > 0)
        stop_dispatcher(10000);
    bus_free(pub);
    if (S.d)
        MHD_stop_daemon(S.d);
    return 0;
}

#define SKIP_IF_NO_SERVICES() do { if (skip_all) skip(); } while (0)

/* Waits until every job of ids got a 200, at most timeout_ms. */
static bool wait_delivered(char ids[][UUID_STR_LEN], int n, int timeout_ms)
{
    long long end = mono_ms() + timeout_ms;
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += answered(ids[i], 200) > 0;
        if (done == n)
            return true;
        if (mono_ms() >= end)
            return false;
        sleep_ms(20);
    }
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_dispatcher_delivers_signed_events(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    script(200, NULL, NULL, 0);
    enum { N = 40 };
    char ids[N][UUID_STR_LEN];
    memset(ids, 0, sizeof(ids));
    for (int i = 0; i < N; i++)
        assert_int_equal(publish_event((enum job_action)(i % ACTION__COUNT),
                                       i % 5 == 0 ? RESULT_FAILED : RESULT_SUCCEEDED, 1000 + i,
                                       ids[i]), 0);
    assert_true(wait_delivered(ids, N, WAIT_MS));
    sleep_ms(300); /* a duplicate would show up by now */
    for (int i = 0; i < N; i++)
        assert_int_equal(answered(ids[i], -1), 1);
    assert_int_equal(S.bad_signatures, 0);
    assert_int_equal(S.undecodable, 0);
    struct err e;
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS, &e), 0);
    assert_false(log_contains(SECRET));
}

static void test_dispatcher_outage_then_recovery_delivers_each_once(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    script(503, NULL, NULL, 0);
    enum { N = 30 };
    char ids[N][UUID_STR_LEN];
    memset(ids, 0, sizeof(ids));
    for (int i = 0; i < N; i++)
        assert_int_equal(publish_event(ACTION_SUSPEND, RESULT_SUCCEEDED, 2000 + i, ids[i]), 0);
    /* Only prefetch (8) events are out at a time; the rest wait in the queue. */
    long long end = mono_ms() + WAIT_MS;
    int tried = 0;
    while (mono_ms() < end) {
        tried = 0;
        for (int i = 0; i < N; i++)
            tried += answered(ids[i], 503) >= 2;
        if (tried >= 8)
            break;
        sleep_ms(50);
    }
    assert_true(tried >= 8); /* each retried, none given up */
    for (int i = 0; i < N; i++)
        assert_int_equal(answered(ids[i], 200), 0);
    struct err e;
    long depth = bus_queue_depth(pub, BUS_Q_RESULTS, &e);
    assert_true(depth >= N - 8); /* nothing acked while WHMCS is "down" */

    script(200, NULL, NULL, 0);
    /* Backoff is capped at 30 s; with 0.5 s doubling the retries here are still short. */
    assert_true(wait_delivered(ids, N, 45000));
    sleep_ms(500);
    for (int i = 0; i < N; i++)
        assert_int_equal(answered(ids[i], 200), 1);
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS, &e), 0);
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS_DEAD, &e), 0);
    assert_int_equal(S.bad_signatures, 0);
}

static void test_dispatcher_refused_event_is_dead_lettered(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    char ids[2][UUID_STR_LEN];
    uuid4(ids[0]);  /* refused */
    ids[1][0] = '\0'; /* accepted */
    script(200, ids[0], NULL, 0);
    assert_int_equal(publish_event(ACTION_CREATE, RESULT_FAILED, 3001, ids[0]), 0);
    assert_int_equal(publish_event(ACTION_CREATE, RESULT_SUCCEEDED, 3002, ids[1]), 0);
    assert_true(wait_delivered(&ids[1], 1, WAIT_MS));
    long long end = mono_ms() + WAIT_MS;
    struct err e;
    while (mono_ms() < end && bus_queue_depth(pub, BUS_Q_RESULTS_DEAD, &e) < 1)
        sleep_ms(50);
    sleep_ms(1500); /* a retry of the 401 would show up by now */
    assert_int_equal(answered(ids[0], 401), 1);
    assert_int_equal(answered(ids[0], -1), 1);

    struct bus_delivery d;
    assert_int_equal(bus_get(pub, BUS_Q_RESULTS_DEAD, &d, &e), 1);
    struct result r;
    assert_int_equal(result_decode(d.body, d.len, &r, &e), 0);
    assert_string_equal(r.job_id, ids[0]);
    assert_string_equal(d.message_id, ids[0]);
    const char *code = bus_delivery_str(&d, BUS_H_ERR_CODE);
    const char *msg = bus_delivery_str(&d, BUS_H_ERR_MSG);
    assert_non_null(code);
    assert_non_null(msg);
    assert_string_equal(code, "callback_http_401");
    assert_non_null(strstr(msg, "HTTP 401"));
    assert_non_null(strstr(msg, "scripted refusal"));
    assert_int_equal(bus_ack(pub, d.tag, &e), 0);
    bus_delivery_clear(&d);
    assert_int_equal(bus_get(pub, BUS_Q_RESULTS_DEAD, &d, &e), 0); /* only that one */
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS, &e), 0);
    assert_true(log_contains("callback_http_401"));
}

static void test_dispatcher_refused_connection_and_timeout_are_retried(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    /* WHMCS not listening at all: connection refused. */
    script(200, NULL, NULL, 0);
    MHD_stop_daemon(S.d);
    S.d = NULL;
    char ids[2][UUID_STR_LEN];
    memset(ids, 0, sizeof(ids));
    assert_int_equal(publish_event(ACTION_UNSUSPEND, RESULT_SUCCEEDED, 5001, ids[0]), 0);
    sleep_ms(1500);
    assert_true(log_contains("Couldn't connect")); /* curl's words for ECONNREFUSED */
    assert_int_equal(cbserver_listen((uint16_t)S.port), 0);
    assert_true(wait_delivered(&ids[0], 1, WAIT_MS));
    sleep_ms(300);
    assert_int_equal(answered(ids[0], -1), 1);

    /* Slower than dispatcher.timeout_ms (3 s) once, then fast. */
    uuid4(ids[1]);
    script(200, NULL, ids[1], 3500);
    assert_int_equal(publish_event(ACTION_CHANGE_PACKAGE, RESULT_SUCCEEDED, 5002, ids[1]), 0);
    long long end = mono_ms() + WAIT_MS;
    bool started = false;
    while (!started && mono_ms() < end) {
        pthread_mutex_lock(&S.mu);
        started = S.slow_started;
        pthread_mutex_unlock(&S.mu);
        sleep_ms(10);
    }
    assert_true(started);
    script(200, NULL, NULL, 0);
    pthread_mutex_lock(&S.mu);
    S.slow_started = false;
    pthread_mutex_unlock(&S.mu);
    /* The abandoned request is recorded by the server too (at-least-once);
     * what matters is a 200 the dispatcher saw and acked. */
    end = mono_ms() + WAIT_MS;
    struct err e;
    while (mono_ms() < end && (answered(ids[1], 200) < 2 || bus_queue_depth(pub, BUS_Q_RESULTS, &e) != 0))
        sleep_ms(50);
    assert_true(answered(ids[1], 200) >= 2);
    assert_true(log_contains("imed out") || log_contains("imeout"));
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS, &e), 0);
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS_DEAD, &e), 0);
}

static void test_dispatcher_sigterm_finishes_inflight_post(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    char id[UUID_STR_LEN];
    uuid4(id);
    script(200, NULL, id, 1500);
    assert_int_equal(publish_event(ACTION_TERMINATE, RESULT_SUCCEEDED, 4001, id), 0);
    long long end = mono_ms() + WAIT_MS;
    bool started = false;
    while (!started && mono_ms() < end) {
        pthread_mutex_lock(&S.mu);
        started = S.slow_started;
        pthread_mutex_unlock(&S.mu);
        sleep_ms(10);
    }
    assert_true(started);
    /* The POST is parked in the server for 1.5 s: stop the dispatcher now. */
    long long t0 = mono_ms();
    assert_int_equal(stop_dispatcher(15000), 0);
    assert_true(mono_ms() - t0 < 5000); /* well inside the 5 s grace */
    assert_int_equal(answered(id, 200), 1);
    struct err e;
    assert_int_equal(bus_queue_depth(pub, BUS_Q_RESULTS, &e), 0);
    assert_true(log_contains("stopped"));
    assert_false(log_contains(SECRET));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatcher_delivers_signed_events),
        cmocka_unit_test(test_dispatcher_outage_then_recovery_delivers_each_once),
        cmocka_unit_test(test_dispatcher_refused_event_is_dead_lettered),
        cmocka_unit_test(test_dispatcher_refused_connection_and_timeout_are_retried),
        cmocka_unit_test(test_dispatcher_sigterm_finishes_inflight_post),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
