/* Unit tests for the metrics registry: exposition format, histogram
 * buckets, label escaping, counts under threads, and the HTTP listener on
 * loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

static int setup(void **state)
{
    (void)state;
    metrics_reset();
    metrics_set_role(METRICS_ROLE_ALL);
    return 0;
}

static char *render(void)
{
    char *out = NULL;
    size_t len = metrics_render(&out);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

/* The whole line that starts with prefix, or fails. */
static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return;
    }
    fail_msg("line not found: %s", line);
}

static bool has_prefix(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, n) == 0)
            return true;
    return false;
}

/* Every sample belongs to the family of the last # TYPE line (histograms:
 * _bucket/_sum/_count), every family has HELP immediately before TYPE, and
 * every sample ends in a number. */
static void assert_well_formed(const char *text)
{
    char family[128] = "";
    char type[32] = "";
    char help_for[128] = "";
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        assert_non_null(eol); /* every line ends in \n */
        char line[1024];
        size_t n = (size_t)(eol - p);
        assert_true(n < sizeof(line));
        memcpy(line, p, n);
        line[n] = '\0';
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s", help_for), 1);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s %31s", family, type), 2);
            assert_string_equal(family, help_for);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
        } else {
            size_t fl = strlen(family);
            assert_true(fl > 0);
            assert_memory_equal(line, family, fl);
            const char *rest = line + fl;
            if (strcmp(type, "histogram") == 0) {
                assert_true(strncmp(rest, "_bucket{", 8) == 0 || strncmp(rest, "_sum", 4) == 0 ||
                            strncmp(rest, "_count", 6) == 0);
            } else {
                assert_true(*rest == ' ' || *rest == '{');
            }
            const char *sp = strrchr(line, ' ');
            assert_non_null(sp);
            char *end = NULL;
            strtod(sp + 1, &end);
            assert_true(end != sp + 1 && *end == '\0');
        }
        p = eol + 1;
    }
}

static void test_metrics_render_counters_and_headers(void **state)
{
    (void)state;
    metrics_job_done(ACTION_CREATE, RESULT_SUCCEEDED, 0.2);
    metrics_job_done(ACTION_CREATE, RESULT_SUCCEEDED, 0.3);
    metrics_job_done(ACTION_SUSPEND, RESULT_FAILED, 0.01);
    metrics_job_done(ACTION__COUNT, RESULT_FAILED, 0.001);
    metrics_comet_error(ERRC_TRANSIENT);
    metrics_comet_error(ERRC_NONE); /* ignored */
    metrics_retry();
    metrics_dead_lettered("comet_auth");
    metrics_dead_lettered("no_such_code");
    metrics_dead_lettered(NULL);
    metrics_inflight_add(3);
    metrics_inflight_add(-1);
    metrics_amqp_reconnect();
    metrics_redis_error();
    metrics_redis_error();
    metrics_dispatch_done(METRICS_DELIVERY_RETRIED, 0.05);

    char *text = render();
    assert_well_formed(text);
    assert_line(text, "# HELP jobs_total Jobs finished by this worker, by action and outcome.");
    assert_line(text, "# TYPE jobs_total counter");
    assert_line(text, "jobs_total{action=\"create\",outcome=\"succeeded\"} 2");
    assert_line(text, "jobs_total{action=\"create\",outcome=\"failed\"} 0");
    assert_line(text, "jobs_total{action=\"suspend\",outcome=\"failed\"} 1");
    assert_line(text, "jobs_total{action=\"unknown\",outcome=\"failed\"} 1");
    assert_line(text, "comet_errors_total{class=\"transient\"} 1");
    assert_line(text, "comet_errors_total{class=\"permanent\"} 0");
    assert_false(has_prefix(text, "comet_errors_total{class=\"none\"}"));
    assert_line(text, "retries_total 1");
    assert_line(text, "dead_lettered_total{reason=\"comet_auth\"} 1");
    assert_line(text, "dead_lettered_total{reason=\"other\"} 2");
    assert_line(text, "dead_lettered_total{reason=\"bad_signature\"} 0");
    assert_line(text, "# TYPE jobs_in_flight gauge");
    assert_line(text, "jobs_in_flight 2");
    assert_line(text, "amqp_reconnects_total 1");
    assert_line(text, "redis_errors_total 2");
    assert_line(text, "dispatcher_deliveries_total{outcome=\"retried\"} 1");
    assert_line(text, "dispatcher_deliveries_total{outcome=\"delivered\"} 0");
    assert_line(text, "dispatcher_delivery_duration_seconds_count 1");
    assert_line(text, "# TYPE process_cpu_seconds_total counter");
    assert_true(has_prefix(text, "process_resident_memory_bytes "));
    assert_int_equal(metrics_jobs_total(ACTION_CREATE, RESULT_SUCCEEDED), 2);
    free(text);
}

static void test_metrics_histogram_buckets_cumulative(void **state)
{
    (void)state;
    metrics_job_done(ACTION_TERMINATE, RESULT_SUCCEEDED, 0.003);
    metrics_job_done(ACTION_TERMINATE, RESULT_SUCCEEDED, 0.005); /* le is inclusive */
    metrics_job_done(ACTION_TERMINATE, RESULT_SUCCEEDED, 0.02);
    metrics_job_done(ACTION_TERMINATE, RESULT_FAILED, 100.0);   /* above every bound */
    metrics_job_done(ACTION_TERMINATE, RESULT_FAILED, -1.0);    /* clock step: counted as 0 */
    metrics_comet_request(COMET_ADD_USER, 0.0004);
    metrics_comet_request(COMET_ADD_USER, 0.2);

    char *text = render();
    assert_well_formed(text);
    assert_line(text, "# TYPE job_duration_seconds histogram");
    assert_line(text, "job_duration_seconds_bucket{action=\"terminate\",le=\"0.005\"} 3");
    assert_line(text, "job_duration_seconds_bucket{action=\"terminate\",le=\"0.01\"} 3");
    assert_line(text, "job_duration_seconds_bucket{action=\"terminate\",le=\"0.025\"} 4");
    assert_line(text, "job_duration_seconds_bucket{action=\"terminate\",le=\"60\"} 4");
    assert_line(text, "job_duration_seconds_bucket{action=\"terminate\",le=\"+Inf\"} 5");
    assert_line(text, "job_duration_seconds_count{action=\"terminate\"} 5");
    assert_line(text, "job_duration_seconds_sum{action=\"terminate\"} 100.028");
    /* Series appear once observed. */
    assert_false(has_prefix(text, "job_duration_seconds_bucket{action=\"create\""));
    assert_line(text, "comet_request_duration_seconds_bucket{endpoint=\"add-user\",le=\"0.0005\"} 1");
    assert_line(text, "comet_request_duration_seconds_bucket{endpoint=\"add-user\",le=\"0.1\"} 1");
    assert_line(text, "comet_request_duration_seconds_bucket{endpoint=\"add-user\",le=\"0.25\"} 2");
    assert_line(text, "comet_request_duration_seconds_count{endpoint=\"add-user\"} 2");
    assert_line(text, "comet_request_duration_seconds_sum{endpoint=\"add-user\"} 0.2004");
    free(text);

    /* Cumulative: every bucket line is >= the one before it. */
    text = render();
    unsigned long long prev = 0;
    const char *key = "job_duration_seconds_bucket{action=\"terminate\"";
    for (const char *p = strstr(text, key); p; p = strstr(p + 1, key)) {
        unsigned long long v = strtoull(strchr(p, '}') + 2, NULL, 10);
        assert_true(v >= prev);
        prev = v;
    }
    assert_int_equal(prev, 5);
    free(text);
}

static void test_metrics_label_escape(void **state)
{
    (void)state;
    char buf[64];
    size_t n = metrics_label_escape("a\"b\\c\nd", buf, sizeof(buf));
    assert_string_equal(buf, "a\\\"b\\\\c\\nd");
    assert_int_equal(n, strlen(buf));
    /* Truncation never overruns and reports the needed length. */
    char small[4];
    n = metrics_label_escape("\"\"\"", small, sizeof(small));
    assert_int_equal(n, 6);
    assert_int_equal(strlen(small), 3);
    assert_string_equal(metrics_label_escape(NULL, buf, sizeof(buf)) == 0 ? buf : "x", "");
}

static void test_metrics_role_selects_families(void **state)
{
    (void)state;
    metrics_set_role(METRICS_ROLE_WORKER);
    char *text = render();
    assert_true(has_prefix(text, "jobs_total{"));
    assert_false(has_prefix(text, "dispatcher_deliveries_total"));
    assert_true(has_prefix(text, "amqp_reconnects_total "));
    free(text);
    metrics_set_role(METRICS_ROLE_DISPATCHER);
    text = render();
    assert_false(has_prefix(text, "jobs_total{"));
    assert_true(has_prefix(text, "dispatcher_deliveries_total"));
    assert_well_formed(text);
    free(text);
}

#define THREADS 8
#define PER_THREAD 20000

static void *hammer(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_inflight_add(1);
        enum job_action a = (enum job_action)((id + i) % ACTION__COUNT);
        metrics_job_done(a, RESULT_SUCCEEDED, 0.001 * (i % 7));
        metrics_comet_request(COMET_ADD_USER, 0.001);
        metrics_retry();
        metrics_inflight_add(-1);
    }
    return NULL;
}

static void test_metrics_counters_add_up_under_threads(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)i), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);

    unsigned long long total = 0;
    for (int a = 0; a < ACTION__COUNT; a++)
        total += metrics_jobs_total((enum job_action)a, RESULT_SUCCEEDED);
    assert_int_equal(total, (unsigned long long)THREADS * PER_THREAD);

    char *text = render();
    char line[128];
    snprintf(line, sizeof(line), "retries_total %d", THREADS * PER_THREAD);
    assert_line(text, line);
    snprintf(line, sizeof(line), "comet_request_duration_seconds_count{endpoint=\"add-user\"} %d",
             THREADS * PER_THREAD);
    assert_line(text, line);
    assert_line(text, "jobs_in_flight 0");
    /* The histogram counts of all actions add up to the jobs too. */
    unsigned long long hsum = 0;
    const char *key = "job_duration_seconds_count{";
    for (const char *p = strstr(text, key); p; p = strstr(p + 1, key))
        hsum += strtoull(strchr(p, '}') + 2, NULL, 10);
    assert_int_equal(hsum, (unsigned long long)THREADS * PER_THREAD);
    free(text);
}

/* ---- listener ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

struct body {
    char buf[65536];
    size_t len;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    size_t room = sizeof(b->buf) - 1 - b->len;
    size_t take = n < room ? n : room;
    memcpy(b->buf + b->len, ptr, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return n;
}

static long get(int port, const char *path, struct body *b)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    b->len = 0;
    b->buf[0] = '\0';
    CURL *c = curl_easy_init();
    assert_non_null(c);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_URL, url), CURLE_OK);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body), CURLE_OK);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_WRITEDATA, b), CURLE_OK);
    assert_int_equal(curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L), CURLE_OK);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    assert_int_equal(curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status), CURLE_OK);
    curl_easy_cleanup(c);
    return status;
}

static bool ready_flag;

static bool probe(void *ctx, char *why, size_t n)
{
    assert_ptr_equal(ctx, &ready_flag);
    if (!ready_flag)
        snprintf(why, n, "broker not connected");
    return ready_flag;
}

static void test_metrics_listener_serves_endpoints(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    assert_int_equal(metrics_listen(0, probe, &ready_flag, &e), 0); /* 0 = off */

    int port = free_port();
    assert_int_equal(metrics_listen_on("127.0.0.1", port, probe, &ready_flag, &e), 0);
    assert_int_equal(metrics_listen_on("127.0.0.1", port, probe, &ready_flag, &e), -1);
    assert_non_null(strstr(e.msg, "already"));

    static struct body b; /* 64 KiB: not on the test's stack */
    assert_int_equal(get(port, "/healthz", &b), 200);
    assert_string_equal(b.buf, "ok\n");

    ready_flag = false;
    assert_int_equal(get(port, "/readyz", &b), 503);
    assert_non_null(strstr(b.buf, "broker not connected"));
    ready_flag = true;
    assert_int_equal(get(port, "/readyz", &b), 200);

    metrics_job_done(ACTION_CHANGE_PASSWORD, RESULT_SUCCEEDED, 0.1);
    assert_int_equal(get(port, "/metrics", &b), 200);
    assert_well_formed(b.buf);
    assert_line(b.buf, "jobs_total{action=\"change_password\",outcome=\"succeeded\"} 1");

    assert_int_equal(get(port, "/nope", &b), 404);
    metrics_stop();
    metrics_stop(); /* idempotent */

    assert_int_equal(metrics_listen_on("not-an-ip", port, NULL, NULL, &e), -1);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_metrics_render_counters_and_headers, setup),
        cmocka_unit_test_setup(test_metrics_histogram_buckets_cumulative, setup),
        cmocka_unit_test_setup(test_metrics_label_escape, setup),
        cmocka_unit_test_setup(test_metrics_role_selects_families, setup),
        cmocka_unit_test_setup(test_metrics_counters_add_up_under_threads, setup),
        cmocka_unit_test_setup(test_metrics_listener_serves_endpoints, setup),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
