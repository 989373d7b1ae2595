/* End to end: job published as WHMCS does -> RabbitMQ -> comet-worker -> fake Comet,
 * with the fake's final state checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#define GIB (1024LL * 1024 * 1024)
#define TIB (GIB * 1024)
#define WAIT_MS 20000

static struct harness H;
static int skip_all;

static int group_setup(void **state)
{
    (void)state;
    /* Six attempts (200, 400, 800, 800, 800 ms apart): the Comet-outage test
     * must see the consumer pause well before a running job's budget ends. */
    h_max_attempts = 6;
    int rc = h_setup(&H, 16);
    if (rc == 1) {
        skip_all = 1;
        return 0;
    }
    if (rc != 0 || h_start_worker(&H, NULL) != 0) {
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

/* Runs one job to its terminal result; fails the test on timeout. */
static const struct result *run(const char *spec)
{
    char id[UUID_STR_LEN];
    assert_int_equal(h_publish(&H, spec, id), 0);
    const struct result *r = h_wait(&H, id, WAIT_MS);
    assert_non_null(r);
    return r;
}

static void assert_succeeded(const struct result *r)
{
    if (r->status != RESULT_SUCCEEDED)
        fail_msg("job %s: %s %s: %s", r->job_id, result_status_name(r->status),
                 err_code_name(r->error.code), r->error.msg);
}

static json_object *only_destination(json_object *profile)
{
    json_object *dests = h_get(profile, "Destinations");
    assert_non_null(dests);
    assert_int_equal(json_object_object_length(dests), 1);
    json_object_object_foreach(dests, k, v) {
        (void)k;
        return v;
    }
    return NULL;
}

static void test_worker_create_configures_account(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    const struct result *r = run(
        "{\"action\":\"create\",\"service_id\":101,"
        "\"account\":{\"username\":\"\",\"custom_username\":false},"
        "\"client\":{\"email\":\"alice@example.com\",\"firstname\":\"Alice\"},"
        "\"product\":{\"policy_group\":\"WHMCS_it_policy_a\",\"storage_provider\":\"1003-default\","
        "\"require_password_change\":true},"
        "\"quotas\":{\"number_of_devices\":5,\"protected_item_quota_gb\":100,\"protected_item_quota_tb\":null,"
        "\"storage_vault_quota_gb\":600,\"storage_vault_quota_tb\":null},"
        "\"password\":\"s3cret-Passw0rd\"}");
    assert_succeeded(r);
    assert_string_equal(r->username, "alice@example.com");
    assert_string_equal(r->policy_id, "WHMCS_it_policy_a");
    assert_true(strlen(r->storage_vault_id) > 0);

    json_object *st = h_fake(&H, "/__fake/state", NULL);
    json_object *p = h_user(st, "alice@example.com");
    assert_non_null(p);
    json_object *d = only_destination(p);
    assert_true(json_object_get_boolean(h_get(d, "StorageLimitEnabled")));
    assert_int_equal(json_object_get_int64(h_get(d, "StorageLimitBytes")), 600 * GIB);
    assert_true(json_object_get_boolean(h_get(p, "AllProtectedItemsQuotaEnabled")));
    assert_int_equal(json_object_get_int64(h_get(p, "AllProtectedItemsQuotaBytes")), 100 * GIB);
    assert_int_equal(json_object_get_int64(h_get(p, "MaximumDevices")), 5);
    assert_string_equal(json_object_get_string(h_get(p, "PolicyID")), "WHMCS_it_policy_a");
    assert_true(json_object_get_boolean(h_get(p, "RequirePasswordChange")));
    json_object *u = h_get(h_get(st, "users"), "alice@example.com");
    assert_string_equal(json_object_get_string(h_get(u, "password")), "s3cret-Passw0rd");
    assert_true(json_object_get_boolean(h_get(u, "has_recovery_code")));
    assert_non_null(h_get(h_get(st, "policies"), "WHMCS_it_policy_a"));
    json_object_put(st);
}

static void test_worker_suspend_then_unsuspend(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":102,"
                         "\"account\":{\"username\":\"bobby-102\",\"custom_username\":true},"
                         "\"client\":{\"email\":\"bob@example.com\"},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                         "\"password\":\"bob-password-1\"}"));
    const char *common = "\"service_id\":102,\"account\":{\"username\":\"bobby-102\",\"custom_username\":true}}";
    char spec[512];
    snprintf(spec, sizeof(spec), "{\"action\":\"suspend\",%s", common);
    assert_succeeded(run(spec));
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_true(json_object_get_boolean(h_get(h_user(st, "bobby-102"), "IsSuspended")));
    json_object_put(st);

    /* Suspending again converges: success, still suspended. */
    assert_succeeded(run(spec));
    snprintf(spec, sizeof(spec), "{\"action\":\"unsuspend\",%s", common);
    assert_succeeded(run(spec));
    st = h_fake(&H, "/__fake/state", NULL);
    assert_false(json_object_get_boolean(h_get(h_user(st, "bobby-102"), "IsSuspended")));
    json_object_put(st);
}

static void test_worker_change_package_applies_tb_and_clears_absent(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":103,"
                         "\"account\":{\"username\":\"carol-103\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"1003-eu\",\"require_password_change\":false},"
                         "\"quotas\":{\"number_of_devices\":3,\"protected_item_quota_gb\":50,"
                         "\"storage_vault_quota_gb\":100},\"password\":\"carol-password\"}"));
    assert_succeeded(run("{\"action\":\"change_package\",\"service_id\":103,"
                         "\"account\":{\"username\":\"carol-103\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"WHMCS_it_policy_a\",\"storage_provider\":\"1003-eu\",\"require_password_change\":false},"
                         "\"quotas\":{\"number_of_devices\":null,\"protected_item_quota_gb\":null,"
                         "\"storage_vault_quota_gb\":null,\"storage_vault_quota_tb\":2}}"));
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    json_object *p = h_user(st, "carol-103");
    assert_non_null(p);
    json_object *d = only_destination(p); /* change_package never adds a vault */
    assert_int_equal(json_object_get_int64(h_get(d, "StorageLimitBytes")), 2 * TIB);
    assert_false(json_object_get_boolean(h_get(p, "AllProtectedItemsQuotaEnabled")));
    assert_int_equal(json_object_get_int64(h_get(p, "AllProtectedItemsQuotaBytes")), 0);
    assert_int_equal(json_object_get_int64(h_get(p, "MaximumDevices")), 0);
    assert_string_equal(json_object_get_string(h_get(p, "PolicyID")), "WHMCS_it_policy_a");
    json_object_put(st);
}

static void test_worker_change_password_and_short_password(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":104,"
                         "\"account\":{\"username\":\"dave-104\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                         "\"password\":\"first-password\"}"));
    assert_succeeded(run("{\"action\":\"change_password\",\"service_id\":104,"
                         "\"account\":{\"username\":\"dave-104\",\"custom_username\":true},"
                         "\"password\":\"second-password\"}"));
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_string_equal(json_object_get_string(h_get(h_get(h_get(st, "users"), "dave-104"), "password")),
                        "second-password");
    json_object_put(st);
    const struct result *r = run("{\"action\":\"change_password\",\"service_id\":104,"
                                 "\"account\":{\"username\":\"dave-104\",\"custom_username\":true},"
                                 "\"password\":\"short\"}");
    assert_int_equal(r->status, RESULT_FAILED);
    assert_int_equal(r->error.code, ERR_PASSWORD_TOO_SHORT);
    assert_int_equal(err_class_of(r->error.code), ERRC_PERMANENT);
}

static void test_worker_terminate_removes_user_and_is_idempotent(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":105,"
                         "\"account\":{\"username\":\"erin-105\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                         "\"password\":\"erin-password\"}"));
    const char *spec = "{\"action\":\"terminate\",\"service_id\":105,"
                       "\"account\":{\"username\":\"erin-105\",\"custom_username\":true}}";
    assert_succeeded(run(spec));
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_null(h_user(st, "erin-105"));
    json_object_put(st);
    assert_succeeded(run(spec)); /* already gone: still a success */
}

static void test_worker_username_collision_gets_suffix(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    const char *fmt = "{\"action\":\"create\",\"service_id\":%d,"
                      "\"account\":{\"username\":\"\",\"custom_username\":false},"
                      "\"client\":{\"email\":\"frank@example.com\"},"
                      "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                      "\"password\":\"frank-password\"}";
    char spec[512];
    snprintf(spec, sizeof(spec), fmt, 106);
    const struct result *a = run(spec);
    assert_succeeded(a);
    assert_string_equal(a->username, "frank@example.com");
    snprintf(spec, sizeof(spec), fmt, 107);
    const struct result *b = run(spec);
    assert_succeeded(b);
    assert_true(strncmp(b->username, "frank@example.com_", 18) == 0);
    assert_int_equal(strlen(b->username), strlen("frank@example.com_") + 4);
}

/* A burst of first orders for a new product creates its policy once. */
static void test_worker_policy_created_once_under_burst(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    enum { N = 50 };
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    long long sets_before = h_calls(st, "policies/set");
    long long users_before = json_object_get_int64(h_get(st, "user_count"));
    json_object_put(st);
    char ids[N][UUID_STR_LEN];
    for (int i = 0; i < N; i++) {
        char spec[768];
        snprintf(spec, sizeof(spec),
                 "{\"action\":\"create\",\"service_id\":%d,"
                 "\"account\":{\"username\":\"burst-user-%d\",\"custom_username\":true},"
                 "\"product\":{\"policy_group\":\"WHMCS_it_burst_policy\",\"storage_provider\":\"1003-default\","
                 "\"require_password_change\":false},"
                 "\"quotas\":{\"storage_vault_quota_gb\":10},\"password\":\"burst-password\"}",
                 2000 + i, i);
        assert_int_equal(h_publish(&H, spec, ids[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        const struct result *r = h_wait(&H, ids[i], WAIT_MS);
        assert_non_null(r);
        assert_succeeded(r);
        assert_string_equal(r->policy_id, "WHMCS_it_burst_policy");
    }
    st = h_fake(&H, "/__fake/state", NULL);
    assert_int_equal(h_calls(st, "policies/set") - sets_before, 1);
    assert_int_equal(json_object_get_int64(h_get(st, "user_count")) - users_before, N);
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof(name), "burst-user-%d", i);
        json_object *p = h_user(st, name);
        assert_non_null(p);
        json_object *d = only_destination(p);
        assert_int_equal(json_object_get_int64(h_get(d, "StorageLimitBytes")), 10 * GIB);
    }
    json_object_put(st);
}

/* Every kind of bad input fails once, is not retried, and does not block the queue. */
static void test_worker_bad_inputs_fail_cleanly(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    struct err e;
    long dlq_before = bus_queue_depth(H.pub, BUS_Q_DEAD, &e);
    const struct key *k = keyring_active(&H.cfg.keys);
    struct {
        const char *body;
        const char *type;
        bool sign;
        const char *kid;
        enum err_code want;
    } cases[] = {
        { "{not json", "create", true, NULL, ERR_BAD_JSON },
        { "{\"v\":2,\"job_id\":\"7d3c5d1e-4b5a-4c1e-9f0a-000000000002\",\"action\":\"create\"}", "create", true, NULL, ERR_BAD_VERSION },
        { "{\"v\":1,\"job_id\":\"7d3c5d1e-4b5a-4c1e-9f0a-000000000003\",\"action\":\"explode\",\"service_id\":1}", "explode", true, NULL, ERR_BAD_ACTION },
        { "{\"v\":1,\"job_id\":\"7d3c5d1e-4b5a-4c1e-9f0a-000000000004\",\"action\":\"suspend\",\"service_id\":\"x\"}", "suspend", true, NULL, ERR_BAD_FIELD },
        { "{\"v\":1,\"job_id\":\"7d3c5d1e-4b5a-4c1e-9f0a-000000000005\",\"action\":\"suspend\",\"service_id\":5}", "suspend", false, NULL, ERR_BAD_SIGNATURE },
        { "{\"v\":1,\"job_id\":\"7d3c5d1e-4b5a-4c1e-9f0a-000000000006\",\"action\":\"suspend\",\"service_id\":5}", "suspend", true, "nokey", ERR_UNKNOWN_KEY },
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    const char *ids[] = { "7d3c5d1e-4b5a-4c1e-9f0a-000000000001", "7d3c5d1e-4b5a-4c1e-9f0a-000000000002",
                          "7d3c5d1e-4b5a-4c1e-9f0a-000000000003", "7d3c5d1e-4b5a-4c1e-9f0a-000000000004",
                          "7d3c5d1e-4b5a-4c1e-9f0a-000000000005", "7d3c5d1e-4b5a-4c1e-9f0a-000000000006" };
    for (size_t i = 0; i < n; i++) {
        char *sig = sign_body_b64(k, cases[i].body, strlen(cases[i].body));
        const char *use_sig = cases[i].sign ? sig : "AAAA";
        assert_int_equal(h_publish_raw(&H, cases[i].body, cases[i].kid ? cases[i].kid : k->id, use_sig,
                                       cases[i].type, ids[i]), 0);
        free(sig);
    }
    /* Unknown server: a well-formed, signed job naming a server we do not serve. */
    char unknown_id[UUID_STR_LEN];
    assert_int_equal(h_publish(&H, "{\"action\":\"suspend\",\"service_id\":9,"
                                   "\"server\":{\"url\":\"https://not-ours.example.com:8060\"},"
                                   "\"account\":{\"username\":\"x\",\"custom_username\":false}}",
                               unknown_id), 0);
    /* Oversized: over worker.max_body (64 KiB by default). */
    size_t big = 70000;
    char *body = malloc(big + 64);
    assert_non_null(body);
    memset(body, ' ', big + 64);
    memcpy(body, "{\"v\":1}", 7);
    body[big] = '\0';
    char *sig = sign_body_b64(k, body, strlen(body));
    assert_int_equal(h_publish_raw(&H, body, k->id, sig, "create", "7d3c5d1e-4b5a-4c1e-9f0a-000000000007"), 0);
    free(sig);
    free(body);

    for (size_t i = 0; i < n; i++) {
        const struct result *r = h_wait(&H, ids[i], WAIT_MS);
        assert_non_null(r);
        assert_int_equal(r->status, RESULT_FAILED);
        if (r->error.code != cases[i].want)
            fail_msg("case %zu: got %s, want %s", i, err_code_name(r->error.code),
                     err_code_name(cases[i].want));
        assert_int_equal(h_count(&H, ids[i], RESULT_RETRYING), 0);
    }
    const struct result *r = h_wait(&H, unknown_id, WAIT_MS);
    assert_non_null(r);
    assert_int_equal(r->error.code, ERR_UNKNOWN_SERVER);
    r = h_wait(&H, "7d3c5d1e-4b5a-4c1e-9f0a-000000000007", WAIT_MS);
    assert_non_null(r);
    assert_int_equal(r->error.code, ERR_TOO_LARGE);
    /* The queue still flows. */
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":108,"
                         "\"account\":{\"username\":\"after-poison\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                         "\"password\":\"after-poison-pw\"}"));
    long dlq_after = bus_queue_depth(H.pub, BUS_Q_DEAD, &e);
    assert_int_equal(dlq_after - dlq_before, (long)n + 2);
}

/* Comet failing for a while: the job is retried with backoff and then succeeds. */
static void test_worker_transient_failure_is_retried(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":109,"
                         "\"account\":{\"username\":\"gina-109\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                         "\"password\":\"gina-password\"}"));
    json_object *c = h_fake(&H, "/__fake/config", "{\"error_rate\":1.0,\"error_kind\":\"http500\"}");
    assert_non_null(c);
    json_object_put(c);
    char id[UUID_STR_LEN];
    assert_int_equal(h_publish(&H, "{\"action\":\"suspend\",\"service_id\":109,"
                                   "\"account\":{\"username\":\"gina-109\",\"custom_username\":true}}", id), 0);
    long long end = mono_ms() + WAIT_MS;
    while (h_count(&H, id, RESULT_RETRYING) == 0 && mono_ms() < end)
        h_pump(&H, 100);
    assert_true(h_count(&H, id, RESULT_RETRYING) >= 1);
    c = h_fake(&H, "/__fake/config", "{\"error_rate\":0}");
    json_object_put(c);
    const struct result *r = h_wait(&H, id, WAIT_MS);
    assert_non_null(r);
    assert_succeeded(r);
    assert_true(r->attempt >= 2);
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_true(json_object_get_boolean(h_get(h_user(st, "gina-109"), "IsSuspended")));
    json_object_put(st);
}

/* A chain of jobs for one service, published at once: they run in order. */
static void test_worker_chain_runs_in_order(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    static const char *const actions[] = { "create", "suspend", "change_package", "unsuspend", "terminate" };
    enum { N = 5 };
    char ids[N][UUID_STR_LEN];
    for (int i = 0; i < N; i++)
        uuid4(ids[i]);
    for (int i = 0; i < N; i++) {
        char spec[1024], after[64];
        snprintf(after, sizeof(after), i ? "\"%s\"" : "null", i ? ids[i - 1] : "");
        snprintf(spec, sizeof(spec),
                 "{\"action\":\"%s\",\"job_id\":\"%s\",\"service_id\":110,\"seq\":%d,\"after\":%s,"
                 "\"account\":{\"username\":\"chain-110\",\"custom_username\":true},"
                 "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"1003-default\",\"require_password_change\":false},"
                 "\"quotas\":{\"storage_vault_quota_gb\":%d}%s}",
                 actions[i], ids[i], i + 1, after, 10 * (i + 1),
                 i == 0 ? ",\"password\":\"chain-password\"" : "");
        assert_int_equal(h_publish(&H, spec, NULL), 0);
    }
    const struct result *prev = NULL;
    for (int i = 0; i < N; i++) {
        const struct result *r = h_wait(&H, ids[i], WAIT_MS);
        assert_non_null(r);
        assert_succeeded(r);
        if (prev)
            assert_true(r->started_at_ms >= prev->finished_at_ms);
        prev = r;
    }
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_null(h_user(st, "chain-110"));
    json_object_put(st);
}

/* The same job delivered twice: one account, one vault, the same result. */
static void test_worker_duplicate_job_has_one_effect(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    char id[UUID_STR_LEN], spec[768];
    uuid4(id);
    snprintf(spec, sizeof(spec),
             "{\"action\":\"create\",\"job_id\":\"%s\",\"service_id\":111,\"seq\":1,"
             "\"account\":{\"username\":\"dup-111\",\"custom_username\":true},"
             "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"1003-default\",\"require_password_change\":false},"
             "\"password\":\"dup-password\"}", id);
    assert_int_equal(h_publish(&H, spec, NULL), 0);
    const struct result *a = h_wait(&H, id, WAIT_MS);
    assert_non_null(a);
    assert_succeeded(a);
    char vault[128];
    snprintf(vault, sizeof(vault), "%s", a->storage_vault_id);
    assert_int_equal(h_publish(&H, spec, NULL), 0);
    long long end = mono_ms() + WAIT_MS;
    while (h_count(&H, id, RESULT_SUCCEEDED) < 2 && mono_ms() < end)
        h_pump(&H, 100);
    assert_int_equal(h_count(&H, id, RESULT_SUCCEEDED), 2);
    assert_string_equal(h_find(&H, id, true)->storage_vault_id, vault);
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    only_destination(h_user(st, "dup-111"));
    json_object_put(st);
}

/* A replay of an old job after a later one of its service succeeded is skipped. */
static void test_worker_superseded_replay_is_skipped(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    assert_succeeded(run("{\"action\":\"create\",\"service_id\":112,\"seq\":1,"
                         "\"account\":{\"username\":\"stale-112\",\"custom_username\":true},"
                         "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                         "\"password\":\"stale-password\"}"));
    assert_succeeded(run("{\"action\":\"suspend\",\"service_id\":112,\"seq\":3,"
                         "\"account\":{\"username\":\"stale-112\",\"custom_username\":true}}"));
    const struct result *r = run("{\"action\":\"unsuspend\",\"service_id\":112,\"seq\":2,"
                                 "\"account\":{\"username\":\"stale-112\",\"custom_username\":true}}");
    assert_int_equal(r->status, RESULT_SKIPPED);
    assert_string_equal(r->reason, "superseded");
    json_object *st = h_fake(&H, "/__fake/state", NULL);
    assert_true(json_object_get_boolean(h_get(h_user(st, "stale-112"), "IsSuspended")));
    json_object_put(st);
}

/* Sum of every sample of a counter family whose labels contain `match`. */
static long long metric_sum(const char *text, const char *family, const char *match)
{
    long long sum = 0;
    size_t flen = strlen(family);
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len > flen && strncmp(line, family, flen) == 0 && line[flen] == '{') {
            char buf[512];
            snprintf(buf, sizeof(buf), "%.*s", (int)(len < 511 ? len : 511), line);
            const char *sp = strrchr(buf, ' ');
            if (sp && (!match || strstr(buf, match)))
                sum += atoll(sp + 1);
        }
        line = nl ? nl + 1 : NULL;
    }
    return sum;
}

/* The worker's counters add up to the results it published; it is ready. */
static void test_worker_metrics_add_up(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    /* Collect every result still in flight: quiet for a second means done. */
    size_t seen = (size_t)-1;
    while (seen != H.nresults) {
        seen = H.nresults;
        for (int i = 0; i < 10; i++)
            h_pump(&H, 100);
    }
    char url[128];
    long status;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", H.metrics_port);
    char *text = h_http_get(url, &status);
    assert_non_null(text);
    assert_int_equal(status, 200);
    static const struct { const char *label; enum result_status st; } outcomes[] = {
        { "outcome=\"succeeded\"", RESULT_SUCCEEDED }, { "outcome=\"failed\"", RESULT_FAILED },
        { "outcome=\"retrying\"", RESULT_RETRYING }, { "outcome=\"skipped\"", RESULT_SKIPPED },
    };
    for (size_t k = 0; k < 4; k++) {
        long long n = 0;
        for (size_t i = 0; i < H.nresults; i++)
            n += H.results[i].status == outcomes[k].st;
        long long m = metric_sum(text, "jobs_total", outcomes[k].label);
        if (m != n)
            fail_msg("jobs_total{%s} = %lld, results seen = %lld", outcomes[k].label, m, n);
    }
    assert_true(metric_sum(text, "comet_request_duration_seconds_count", NULL) > 0);
    free(text);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", H.metrics_port);
    free(h_http_get(url, &status));
    assert_int_equal(status, 200);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", H.metrics_port);
    free(h_http_get(url, &status));
    assert_int_equal(status, 200);
}

/* No password, admin secret or key ever reaches a log line. */
static void test_worker_logs_hold_no_secret(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    static const char *const secrets[] = {
        "s3cret-Passw0rd", "bob-password-1", "carol-password", "first-password", "second-password",
        "erin-password", "frank-password", "burst-password", "after-poison-pw", "gina-password",
        "chain-password", "dup-password", "stale-password", "admin-secret",
    };
    char path[700];
    snprintf(path, sizeof(path), "%s/worker-0.log", H.dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[8192];
    long lines = 0;
    while (fgets(line, sizeof(line), f)) {
        lines++;
        for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
            if (strstr(line, secrets[i]))
                fail_msg("log line %ld holds a secret: %.120s", lines, line);
        if (strstr(line, H.key_b64))
            fail_msg("log line %ld holds the signing key", lines);
    }
    fclose(f);
    assert_true(lines > 50); /* the log really was written */
}

/* No Comet server can be connected to: the worker stops taking jobs after
 * a short while (readiness says why), so queued jobs wait in comet.jobs
 * without spending attempts instead of burning their retry budget into
 * the DLQ; when Comet is back, a probe sees it and every job completes. */
static void test_worker_comet_unreachable_pauses_consumer(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    enum { FIRST = 24, LATER = 10 };
    char ids[FIRST + LATER][UUID_STR_LEN], spec[512], url[128];
    long status = 0;
    struct err e;

    h_stop(H.fake_pid, SIGTERM);
    for (int i = 0; i < FIRST + LATER; i++) {
        if (i == FIRST) {
            /* Paused: the readiness probe says so. */
            snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", H.metrics_port);
            long long end = mono_ms() + WAIT_MS;
            char *body = NULL;
            for (;;) {
                free(body);
                body = h_http_get(url, &status);
                if (status == 503 || mono_ms() > end)
                    break;
                h_pump(&H, 100);
            }
            assert_int_equal(status, 503);
            assert_non_null(body);
            assert_non_null(strstr(body, "no Comet server reachable"));
            free(body);
            snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", H.metrics_port);
            body = h_http_get(url, &status);
            assert_non_null(body);
            assert_non_null(strstr(body, "worker_paused{reason=\"comet\"} 1"));
            free(body);
        }
        snprintf(spec, sizeof(spec),
                 "{\"action\":\"create\",\"service_id\":%d,"
                 "\"account\":{\"username\":\"down-%d\",\"custom_username\":true},"
                 "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\",\"require_password_change\":false},"
                 "\"password\":\"down-password\"}", 700 + i, i);
        assert_int_equal(h_publish(&H, spec, ids[i]), 0);
    }
    /* The later jobs stay queued, untouched. */
    for (int i = 0; i < 10; i++)
        h_pump(&H, 100);
    long depth = bus_queue_depth(H.pub, BUS_Q_JOBS, &e);
    assert_true(depth >= LATER);
    for (int i = FIRST; i < FIRST + LATER; i++)
        assert_null(h_find(&H, ids[i], false));

    assert_int_equal(h_start_fake(&H), 0);
    for (int i = 0; i < FIRST + LATER; i++) {
        const struct result *r = h_wait(&H, ids[i], 30000);
        assert_non_null(r);
        assert_succeeded(r);
        if (i >= FIRST)
            assert_int_equal(r->attempt, 1);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", H.metrics_port);
    free(h_http_get(url, &status));
    assert_int_equal(status, 200);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", H.metrics_port);
    char *text = h_http_get(url, &status);
    assert_non_null(text);
    assert_non_null(strstr(text, "worker_paused{reason=\"comet\"} 0"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_create_configures_account),
        cmocka_unit_test(test_worker_suspend_then_unsuspend),
        cmocka_unit_test(test_worker_change_package_applies_tb_and_clears_absent),
        cmocka_unit_test(test_worker_change_password_and_short_password),
        cmocka_unit_test(test_worker_terminate_removes_user_and_is_idempotent),
        cmocka_unit_test(test_worker_username_collision_gets_suffix),
        cmocka_unit_test(test_worker_policy_created_once_under_burst),
        cmocka_unit_test(test_worker_bad_inputs_fail_cleanly),
        cmocka_unit_test(test_worker_transient_failure_is_retried),
        cmocka_unit_test(test_worker_chain_runs_in_order),
        cmocka_unit_test(test_worker_duplicate_job_has_one_effect),
        cmocka_unit_test(test_worker_superseded_replay_is_skipped),
        cmocka_unit_test(test_worker_metrics_add_up),
        cmocka_unit_test(test_worker_logs_hold_no_secret),
        /* Last: it stops and restarts the fake (an empty one). */
        cmocka_unit_test(test_worker_comet_unreachable_pauses_consumer),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
