/* Fault injection: a worker killed with SIGKILL mid-burst, and Comet failing
 * 30% of calls (5xx, resets, hangs, lost answers after commit). After each:
 * every job has one terminal outcome and Comet's state is the expected one,
 * service by service. CHAOS=1 (make chaos) runs bigger bursts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"
#include "store.h"

#define GIB (1024LL * 1024 * 1024)

static struct harness H;
static int skip_all;
static int burst_services; /* services per burst; each gets a chain of jobs */
/* After a replay a job legitimately has a "failed" and then a "succeeded"
 * outcome (one per delivery of it); only the last one counts then. */
static bool replay_phase;

static int group_setup(void **state)
{
    (void)state;
    h_max_attempts = 12; /* a 30% fault rate must not exhaust the budget */
    burst_services = getenv("CHAOS") ? 1000 : 250;
    int rc = h_setup(&H, 16);
    if (rc == 1) {
        skip_all = 1;
        return 0;
    }
    putenv("COMET_METRICS_PORT=0"); /* several workers on one host */
    for (int i = 0; i < 3; i++)
        if (rc != 0 || h_start_worker(&H, NULL) != 0)
            rc = -1;
    if (rc != 0) {
        h_teardown(&H);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!skip_all)
        h_teardown(&H);
    return 0;
}

#define SKIP_IF_NO_SERVICES() do { if (skip_all) skip(); } while (0)

struct chain {
    char ids[3][UUID_STR_LEN];
    int njobs;
    bool suspended;     /* expected final flag */
    long long vault_gb; /* expected vault quota */
};

/* Publishes, per service, create -> change_package -> (suspend on odd
 * services): two or three jobs linked by seq/after. Returns the job count. */
static int publish_burst(int base, struct chain *c, int n)
{
    int jobs = 0;
    for (int s = 0; s < n; s++) {
        int sid = base + s;
        c[s].njobs = (s % 2) ? 3 : 2;
        c[s].suspended = (s % 2) != 0;
        c[s].vault_gb = 20;
        for (int j = 0; j < c[s].njobs; j++)
            uuid4(c[s].ids[j]);
        for (int j = 0; j < c[s].njobs; j++) {
            static const char *const act[] = { "create", "change_package", "suspend" };
            char spec[1024], after[64];
            snprintf(after, sizeof(after), j ? "\"%s\"" : "null", j ? c[s].ids[j - 1] : "");
            snprintf(spec, sizeof(spec),
                     "{\"action\":\"%s\",\"job_id\":\"%s\",\"service_id\":%d,\"seq\":%d,\"after\":%s,"
                     "\"account\":{\"username\":\"fault-%d\",\"custom_username\":true},"
                     "\"product\":{\"policy_group\":\"WHMCS_fault_policy_%d\",\"storage_provider\":\"1003-default\","
                     "\"require_password_change\":false},"
                     "\"quotas\":{\"storage_vault_quota_gb\":%d,\"number_of_devices\":2}%s}",
                     act[j], c[s].ids[j], sid, j + 1, after, sid, base, j == 0 ? 10 : 20,
                     j == 0 ? ",\"password\":\"fault-password\"" : "");
            assert_int_equal(h_publish(&H, spec, NULL), 0);
            jobs++;
        }
    }
    return jobs;
}

/* Waits for every job; checks one terminal outcome each and the final state. */
static void check_burst(int base, struct chain *c, int n, long long fault_end_ms, const char *what)
{
    long long last = 0;
    int jobs = 0, lost = 0, conflicting = 0, wrong = 0, duplicated = 0, dead = 0;
    bool *failed_svc = calloc((size_t)n, sizeof(bool));
    assert_non_null(failed_svc);
    for (int s = 0; s < n; s++) {
        for (int j = 0; j < c[s].njobs; j++) {
            jobs++;
            const struct result *r = h_wait(&H, c[s].ids[j], 120000);
            if (!r) {
                lost++;
                continue;
            }
            if (r->finished_at_ms > last)
                last = r->finished_at_ms;
            /* Terminal results of one job (a redelivery may repeat it) must agree. */
            for (size_t i = 0; i < H.nresults; i++)
                if (!replay_phase && strcmp(H.results[i].job_id, r->job_id) == 0 &&
                    H.results[i].status != RESULT_RETRYING && H.results[i].status != r->status)
                    conflicting++;
            if (r->status != RESULT_SUCCEEDED) {
                /* Dead-lettered: its service's state is not the target one;
                 * counted and printed, and the DLQ holds the job. */
                dead++;
                failed_svc[s] = true;
                fprintf(stderr, "faults: job %s (service %d) %s: %s\n", r->job_id, base + s,
                        result_status_name(r->status), r->error.msg);
            }
        }
    }
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_non_null(st);
    for (int s = 0; s < n; s++) {
        char name[64];
        snprintf(name, sizeof(name), "fault-%d", base + s);
        json_object *p = h_user(st, name);
        if (failed_svc[s])
            continue;
        if (!p) {
            wrong++;
            continue;
        }
        json_object *dests = h_get(p, "Destinations");
        if (json_object_object_length(dests) != 1) {
            duplicated++;
            fprintf(stderr, "faults: %s has %d vaults\n", name, json_object_object_length(dests));
        }
        json_object_object_foreach(dests, k, d) {
            (void)k;
            if (json_object_get_int64(h_get(d, "StorageLimitBytes")) != c[s].vault_gb * GIB)
                wrong++;
        }
        if (json_object_get_boolean(h_get(p, "IsSuspended")) != c[s].suspended)
            wrong++;
    }
    json_object *policies = h_get(st, "policies");
    char pid[64];
    snprintf(pid, sizeof(pid), "WHMCS_fault_policy_%d", base);
    assert_non_null(h_get(policies, pid));
    json_object_put(st);
    /* The figures for the closing note, in the test log. */
    fprintf(stderr, "faults: %s: jobs=%d lost=%d duplicated_effects=%d wrong_final_states=%d "
                    "dead_lettered=%d conflicting_outcomes=%d last_job_after_fault_end_ms=%lld\n",
            what, jobs, lost, duplicated, wrong, dead, conflicting,
            fault_end_ms > 0 ? last - fault_end_ms : 0);
    free(failed_svc);
    assert_int_equal(lost, 0);
    assert_int_equal(duplicated, 0);
    assert_int_equal(wrong, 0);
    assert_int_equal(conflicting, 0);
    if (replay_phase)
        assert_int_equal(dead, 0); /* every replayed job completed */
}

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_faults_kill9_worker_mid_burst(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    int n = burst_services;
    struct chain *c = calloc((size_t)n, sizeof(*c));
    assert_non_null(c);
    /* Slow Comet a little so the burst is still running when the kill lands. */
    json_object_put(h_fake(&H, "/__fake/config", "{\"latency_ms\":5}"));
    publish_burst(30000, c, n);
    /* Poison of every bad-input kind, mixed into the burst. */
    enum { NPOISON = 5 };
    static const char *const bodies[NPOISON] = {
        "{not json", "{\"v\":9}", "[1,2,3]", "{\"v\":1,\"action\":\"create\"}", "{\"v\":1}",
    };
    char poison_ids[NPOISON][UUID_STR_LEN];
    const struct key *k = keyring_active(&H.cfg.keys);
    for (int i = 0; i < NPOISON; i++) {
        uuid4(poison_ids[i]);
        char *sig = sign_body_b64(k, bodies[i], strlen(bodies[i]));
        /* The last one is signed with a wrong signature. */
        assert_int_equal(h_publish_raw(&H, bodies[i], k->id, i == NPOISON - 1 ? "AAAA" : sig,
                                       "create", poison_ids[i]), 0);
        free(sig);
    }
    long long until = mono_ms() + 60000;
    while (H.nresults < (size_t)n / 2 && mono_ms() < until)
        h_pump(&H, 50);
    kill(H.worker_pids[0], SIGKILL);
    int st;
    waitpid(H.worker_pids[0], &st, 0);
    H.worker_pids[0] = 0;
    long long fault_end = wall_ms();
    assert_int_equal(h_start_worker(&H, NULL), 0);
    check_burst(30000, c, n, fault_end, "kill -9 one of 3 workers, 5 poison messages mixed in");
    for (int i = 0; i < NPOISON; i++) {
        const struct result *r = h_wait(&H, poison_ids[i], 20000);
        assert_non_null(r);
        assert_int_equal(r->status, RESULT_FAILED);
        assert_int_equal(err_class_of(r->error.code), ERRC_INVALID);
        assert_int_equal(h_count(&H, poison_ids[i], RESULT_RETRYING), 0);
    }
    json_object_put(h_fake(&H, "/__fake/config", "{\"latency_ms\":0}"));
    free(c);
}

/* Replays, by job id with comet-dlq, every job of the burst whose last
 * outcome was "failed", waits for them, and checks the burst again.
 * Returns how many were replayed. */
static int replay_failed(int base, struct chain *c, int n, long long fault_end)
{
    enum { CHUNK = 100 }; /* job ids per comet-dlq run: keeps the command line short */
    char cmd[8192];
    int w = 0, in_chunk = 0, replayed = 0;
    for (int s = 0; s < n; s++)
        for (int j = 0; j < c[s].njobs; j++) {
            const struct result *r = h_find(&H, c[s].ids[j], true);
            if (!r || r->status != RESULT_FAILED)
                continue;
            if (in_chunk == 0)
                w = snprintf(cmd, sizeof(cmd), "'%s/comet-dlq' -c '%s' replay", H.bin, H.cfg_path);
            w += snprintf(cmd + w, sizeof(cmd) - (size_t)w, " %s", c[s].ids[j]);
            replayed++;
            if (++in_chunk == CHUNK) {
                snprintf(cmd + w, sizeof(cmd) - (size_t)w, " >>'%s/dlq.log' 2>&1", H.dir);
                assert_int_equal(system(cmd), 0);
                in_chunk = 0;
            }
        }
    if (in_chunk > 0) {
        snprintf(cmd + w, sizeof(cmd) - (size_t)w, " >>'%s/dlq.log' 2>&1", H.dir);
        assert_int_equal(system(cmd), 0);
    }
    if (replayed == 0)
        return 0;
    /* One deadline for the whole replay. */
    long long until = mono_ms() + 180000;
    for (int s = 0; s < n; s++)
        for (int j = 0; j < c[s].njobs; j++)
            while (h_find(&H, c[s].ids[j], true)->status != RESULT_SUCCEEDED && mono_ms() < until)
                h_pump(&H, 100);
    replay_phase = true;
    check_burst(base, c, n, fault_end, "after replaying the dead-lettered jobs");
    replay_phase = false;
    return replayed;
}

static void test_faults_comet_failing_30_percent(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    int n = burst_services;
    struct chain *c = calloc((size_t)n, sizeof(*c));
    assert_non_null(c);
    /* The transient kinds in turn (a body Status 500 is a rejection by
     * design, dead-lettered at once, so it is not part of this window). */
    static const char *const kinds[] = { "http500", "reset", "fail_after_commit", "hang" };
    json_object_put(h_fake(&H, "/__fake/config",
                           "{\"error_rate\":0.3,\"error_kind\":\"http500\",\"hang_ms\":1500}"));
    publish_burst(40000, c, n);
    for (int k = 0; k < 8; k++) {
        char cfg[128];
        snprintf(cfg, sizeof(cfg), "{\"error_rate\":0.3,\"error_kind\":\"%s\"}", kinds[k % 4]);
        json_object_put(h_fake(&H, "/__fake/config", cfg));
        long long until = mono_ms() + 500;
        while (mono_ms() < until)
            h_pump(&H, 100);
    }
    json_object_put(h_fake(&H, "/__fake/config", "{\"error_rate\":0}"));
    long long fault_end = wall_ms();
    check_burst(40000, c, n, fault_end, "Comet failing 30% (5xx, resets, hangs, fail-after-commit)");

    int replayed = replay_failed(40000, c, n, fault_end);
    fprintf(stderr, "faults: replayed %d dead-lettered jobs after Comet healed\n", replayed);
    free(c);
}

/* ---- faults that take the harness's own connections down too ------------ */

/* Runs scripts/services.sh with a command on the test's services dir. */
static int services(const char *cmd)
{
    const char *root = getenv("COMET_TEST_ROOT");
    const char *dir = getenv("COMET_RABBITMQ_DIR");
    if (!root || !dir)
        return -1;
    char line[1024];
    snprintf(line, sizeof(line), "'%s/scripts/services.sh' %s '%s' >>'%s/services.log' 2>&1", root, cmd,
             dir, H.dir);
    return system(line);
}

/* Reconnects the harness's publisher (results are read from Redis here:
 * the private result queue does not survive a broker restart). */
static void reconnect_pub(void)
{
    struct err e;
    bus_free(H.pub);
    H.pub = NULL;
    for (int i = 0; i < 100 && !H.pub; i++) {
        H.pub = bus_connect(H.cfg.amqp_url, 0, &e);
        if (!H.pub)
            usleep(200000);
    }
    assert_non_null(H.pub);
}

/* Waits until every job of the burst has a terminal state in Redis. */
static void wait_states(struct chain *c, int n, long long timeout_ms, long long *last_ms)
{
    struct err e;
    struct store *s = NULL;
    long long end = mono_ms() + timeout_ms;
    int pending = 1;
    while (pending && mono_ms() < end) {
        if (!s)
            s = store_connect(&H.cfg, &e);
        pending = 0;
        for (int i = 0; s && i < n; i++)
            for (int j = 0; j < c[i].njobs; j++) {
                char st[32] = "";
                if (store_job_get(s, c[i].ids[j], "state", st, sizeof(st), &e) != 0 ||
                    strcmp(st, "succeeded") != 0)
                    pending++;
            }
        if (!s)
            pending = 1;
        if (pending)
            usleep(200000);
    }
    *last_ms = wall_ms();
    store_free(s);
    if (pending)
        fail_msg("%d jobs without a terminal state after %lld ms", pending, timeout_ms);
}

static void check_states(int base, struct chain *c, int n, const char *what, long long fault_end,
                         long long last)
{
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_non_null(st);
    int wrong = 0, duplicated = 0, jobs = 0;
    for (int s = 0; s < n; s++) {
        char name[64];
        jobs += c[s].njobs;
        snprintf(name, sizeof(name), "fault-%d", base + s);
        json_object *p = h_user(st, name);
        if (!p) {
            wrong++;
            continue;
        }
        json_object *dests = h_get(p, "Destinations");
        if (json_object_object_length(dests) != 1)
            duplicated++;
        if (json_object_get_boolean(h_get(p, "IsSuspended")) != c[s].suspended)
            wrong++;
    }
    json_object_put(st);
    fprintf(stderr, "faults: %s: jobs=%d lost=0 duplicated_effects=%d wrong_final_states=%d "
                    "last_job_after_fault_end_ms=%lld\n", what, jobs, duplicated, wrong, last - fault_end);
    assert_int_equal(duplicated, 0);
    assert_int_equal(wrong, 0);
}

/* One infrastructure fault in the middle of a burst: publish, let it run,
 * inject (latency_ms keeps the burst going through it), wait until every
 * job of the burst is terminal in Redis, check Comet service by service. */
static void burst_through(int base, int latency_ms, int (*inject)(void), const char *what)
{
    if (!getenv("COMET_TEST_ROOT"))
        skip();
    int n = burst_services;
    struct chain *c = calloc((size_t)n, sizeof(*c));
    assert_non_null(c);
    char cfg[96];
    snprintf(cfg, sizeof(cfg), "{\"latency_ms\":%d,\"error_rate\":0}", latency_ms);
    json_object_put(h_fake(&H, "/__fake/config", cfg));
    publish_burst(base, c, n);
    usleep(300000);
    assert_int_equal(inject(), 0);
    long long fault_end = wall_ms();
    long long last;
    wait_states(c, n, 180000, &last);
    check_states(base, c, n, what, fault_end, last);
    json_object_put(h_fake(&H, "/__fake/config", "{\"latency_ms\":0}"));
    free(c);
}

static int restart_rabbitmq(void)
{
    if (services("restart-rabbitmq") != 0)
        return -1;
    reconnect_pub();
    /* The harness's result consumer died with the broker: rebuild it. */
    struct err e;
    char q[128];
    bus_free(H.res);
    H.res = bus_connect(H.cfg.amqp_url, 0, &e);
    if (!H.res || bus_bind_temp_queue(H.res, BUS_EX_RESULTS, "#", q, &e) != 0 ||
        bus_consume(H.res, q, &e) != 0)
        return -1;
    return 0;
}

static int stop_redis_4s(void)
{
    if (services("stop-redis") != 0)
        return -1;
    sleep(4);
    return services("start-redis");
}

static void test_faults_rabbitmq_restart_mid_burst(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    /* 80 ms per Comet call: a graceful broker stop itself takes seconds. */
    burst_through(50000, 80, restart_rabbitmq, "RabbitMQ restarted mid-burst");
}

/* Lines of a worker's log that contain text. */
static int log_count(int worker, const char *text)
{
    char path[700], line[4096];
    snprintf(path, sizeof(path), "%s/worker-%d.log", H.dir, worker);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, text) != NULL;
    fclose(f);
    return n;
}

static void test_faults_redis_stopped_mid_burst(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    burst_through(60000, 20, stop_redis_4s, "Redis stopped for 4 s mid-burst");
    /* One outage, one pause per worker: after Redis is back no thread
     * fails on its dead pre-restart connection and pauses the consumer
     * again (each such pause cost another second). */
    for (int i = 0; i < H.nworkers; i++) {
        int pauses = log_count(i, "Redis unreachable: not taking jobs");
        if (pauses > 1)
            fail_msg("worker %d paused %d times for one Redis outage", i, pauses);
    }
}

/* Comet refusing every add-user with HTTP 500 until the budget runs out:
 * the creates and their successors are dead-lettered; once Comet heals,
 * replaying them with comet-dlq completes every chain. */
static void test_faults_dead_lettered_jobs_complete_on_replay(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    enum { N = 10 };
    struct chain c[N];
    memset(c, 0, sizeof(c));
    json_object_put(h_fake(&H, "/__fake/config",
                           "{\"latency_ms\":0,\"error_rate\":1.0,\"error_kind\":\"http500\","
                           "\"error_endpoints\":[\"add-user\"]}"));
    publish_burst(70000, c, N);
    for (int s = 0; s < N; s++)
        for (int j = 0; j < c[s].njobs; j++)
            assert_non_null(h_wait(&H, c[s].ids[j], 60000));
    int failed = 0;
    for (int s = 0; s < N; s++)
        failed += h_find(&H, c[s].ids[0], true)->status == RESULT_FAILED;
    assert_int_equal(failed, N); /* every create used up its budget */
    json_object_put(h_fake(&H, "/__fake/config", "{\"error_rate\":0,\"error_endpoints\":[]}"));
    long long healed = wall_ms();
    int replayed = replay_failed(70000, c, N, healed);
    assert_true(replayed >= N);
    fprintf(stderr, "faults: replayed %d dead-lettered jobs after Comet healed\n", replayed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_faults_kill9_worker_mid_burst),
        cmocka_unit_test(test_faults_comet_failing_30_percent),
        cmocka_unit_test(test_faults_rabbitmq_restart_mid_burst),
        cmocka_unit_test(test_faults_redis_stopped_mid_burst),
        cmocka_unit_test(test_faults_dead_lettered_jobs_complete_on_replay),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
