/* Integration tests for the six actions against a running fake Comet
 * (COMET_TEST_FAKE_URL) and Redis (COMET_TEST_REDIS_PORT). Under
 * scripts/test.sh (COMET_TEST_BIN_DIR and COMET_REDIS_PORT set) the test
 * starts its own fake-comet; with neither, every test is skipped. Each
 * test resets the fake and checks its state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "account.h"
#include "actions.h"
#include "gate.h"

#define ADMIN_USER "admin"
#define ADMIN_PASSWORD "admin-secret"
#define POLICY_ID "WHMCS_itest.12345678"
#define PROVIDER "1003-default"
#define PASSWORD "correct horse battery"

struct fixture {
    struct config cfg;
    struct action_ctx ctx;
    char fake_url[256];
};

/* ---- talking to the fake's control API --------------------------------- */

struct body {
    char *data;
    size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;
    char *p = realloc(b->data, b->len + n + 1);

    if (p == NULL)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* GET (post_body NULL) or POST path on the fake; returns the parsed body. */
static json_object *fake_request(const struct fixture *fx, const char *path, const char *post_body)
{
    char url[512];
    struct body b = { NULL, 0 };
    json_object *obj;
    CURL *curl = curl_easy_init();

    assert_non_null(curl);
    snprintf(url, sizeof(url), "%s%s", fx->fake_url, path);
    assert_int_equal(curl_easy_setopt(curl, CURLOPT_URL, url), CURLE_OK);
    assert_int_equal(curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data), CURLE_OK);
    assert_int_equal(curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b), CURLE_OK);
    if (post_body != NULL)
        assert_int_equal(curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post_body), CURLE_OK);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_easy_cleanup(curl);
    obj = b.data != NULL ? json_tokener_parse(b.data) : NULL;
    free(b.data);
    return obj;
}

static void fake_post(const struct fixture *fx, const char *path, const char *body)
{
    json_object_put(fake_request(fx, path, body));
}

static json_object *fake_state(const struct fixture *fx)
{
    json_object *st = fake_request(fx, "/__fake/state", NULL);

    assert_non_null(st);
    return st;
}

/* Walks keys in obj; NULL when one is missing (lent from obj). */
static json_object *at(json_object *obj, const char *k1, const char *k2, const char *k3)
{
    const char *keys[] = { k1, k2, k3 };

    for (size_t i = 0; i < 3 && keys[i] != NULL; i++) {
        if (!json_object_object_get_ex(obj, keys[i], &obj))
            return NULL;
    }
    return obj;
}

static int calls(json_object *st, const char *endpoint)
{
    json_object *n = at(st, "calls", endpoint, NULL);

    return n != NULL ? json_object_get_int(n) : 0;
}

/* The user's profile in a state snapshot (lent), failing when absent. */
static json_object *profile_of(json_object *st, const char *user)
{
    json_object *p = at(st, "users", user, "profile");

    assert_non_null(p);
    return p;
}

/* ---- fixtures ---------------------------------------------------------- */

extern char **environ;

/* The fake this test started itself (suite mode), else 0. */
static pid_t own_fake_pid;
static char own_fake_url[96];

/* A port the kernel just considered free. */
static int free_port(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Suite mode: starts bin/fake-comet on a free port and waits for it. */
static int group_setup(void **state)
{
    const char *bin = getenv("COMET_TEST_BIN_DIR");
    char path[512], portstr[16], url[96];
    int port;

    (void)state;
    if (getenv("COMET_TEST_FAKE_URL") != NULL || bin == NULL || getenv("COMET_REDIS_PORT") == NULL)
        return 0;
    port = free_port();
    if (port < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/fake-comet", bin);
    snprintf(portstr, sizeof(portstr), "%d", port);
    char *argv[] = { path, "--port", portstr, NULL };
    if (posix_spawn(&own_fake_pid, path, NULL, NULL, argv, environ) != 0)
        return -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    for (int i = 0; i < 100; i++) {
        CURL *curl = curl_easy_init();
        CURLcode rc = CURLE_FAILED_INIT;
        char probe_url[128];

        snprintf(probe_url, sizeof(probe_url), "%s/__fake/state", url);
        if (curl != NULL && curl_easy_setopt(curl, CURLOPT_URL, probe_url) == CURLE_OK &&
            curl_easy_setopt(curl, CURLOPT_NOBODY, 1L) == CURLE_OK)
            rc = curl_easy_perform(curl);
        curl_easy_cleanup(curl);
        if (rc == CURLE_OK) {
            snprintf(own_fake_url, sizeof(own_fake_url), "%s", url);
            return 0;
        }
        usleep(50000);
    }
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    if (own_fake_pid > 0) {
        kill(own_fake_pid, SIGTERM);
        waitpid(own_fake_pid, NULL, 0);
        own_fake_pid = 0;
    }
    return 0;
}

static int setup(void **state)
{
    const char *url = getenv("COMET_TEST_FAKE_URL");
    const char *port = getenv("COMET_TEST_REDIS_PORT");
    struct fixture *fx;
    struct err e;

    *state = NULL;
    if (url == NULL && own_fake_url[0] != '\0') {
        url = own_fake_url;
        port = getenv("COMET_REDIS_PORT");
    }
    if (url == NULL || url[0] == '\0' || port == NULL || port[0] == '\0')
        return 0; /* each test skips */
    fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    snprintf(fx->fake_url, sizeof(fx->fake_url), "%s", url);
    snprintf(fx->cfg.redis_host, sizeof(fx->cfg.redis_host), "127.0.0.1");
    fx->cfg.redis_port = atoi(port);
    /* A fresh namespace per test: the fake is reset, so must the cache be. */
    snprintf(fx->cfg.redis_prefix, sizeof(fx->cfg.redis_prefix), "itest:%ld:%lld:",
             (long)getpid(), now_ms());
    fx->cfg.job_retention_seconds = 600;
    fx->cfg.comet_connect_timeout_ms = 2000;
    fx->cfg.comet_timeout_ms = 5000;
    snprintf(fx->cfg.servers[0].url, sizeof(fx->cfg.servers[0].url), "%s", url);
    snprintf(fx->cfg.servers[0].username, sizeof(fx->cfg.servers[0].username), ADMIN_USER);
    snprintf(fx->cfg.servers[0].password, sizeof(fx->cfg.servers[0].password), ADMIN_PASSWORD);
    fx->cfg.server_count = 1;
    fx->ctx.cfg = &fx->cfg;
    fx->ctx.server = &fx->cfg.servers[0];
    fx->ctx.comet = comet_client_new(2000, 5000);
    fx->ctx.store = store_connect(&fx->cfg, &e);
    if (fx->ctx.comet == NULL || fx->ctx.store == NULL) {
        fprintf(stderr, "setup: %s\n", fx->ctx.store == NULL ? e.msg : "comet client");
        comet_client_free(fx->ctx.comet);
        store_free(fx->ctx.store);
        free(fx);
        return -1;
    }
    fake_post(fx, "/__fake/reset", "");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    if (fx == NULL)
        return 0;
    comet_client_free(fx->ctx.comet);
    store_free(fx->ctx.store);
    free(fx);
    return 0;
}

static struct fixture *fixture_or_skip(void **state)
{
    if (*state == NULL)
        skip();
    return *state;
}

/* ---- jobs -------------------------------------------------------------- */

static void job_make(const struct fixture *fx, struct job *job, enum job_action action,
                     const char *username)
{
    job_init(job);
    uuid4(job->job_id);
    job->action = action;
    job->service_id = 4242;
    snprintf(job->server_url, sizeof(job->server_url), "%s", fx->fake_url);
    snprintf(job->username, sizeof(job->username), "%s", username);
    snprintf(job->email, sizeof(job->email), "alice@example.com");
    snprintf(job->firstname, sizeof(job->firstname), "Alice");
}

static void create_job(const struct fixture *fx, struct job *job)
{
    job_make(fx, job, ACTION_CREATE, "svc-alice");
    snprintf(job->policy_group, sizeof(job->policy_group), POLICY_ID);
    snprintf(job->storage_provider, sizeof(job->storage_provider), PROVIDER);
    job->require_password_change = true;
    job->quotas.number_of_devices = 5;
    job->quotas.protected_item_quota_gb = 100;
    job->quotas.storage_vault_quota_tb = 2;
}

static int run(struct fixture *fx, const struct job *job, const char *password,
               struct result *res, struct err *e)
{
    memset(res, 0, sizeof(*res));
    return action_run(&fx->ctx, job, password, res, e);
}

static void run_ok(struct fixture *fx, const struct job *job, const char *password,
                   struct result *res)
{
    struct err e;

    if (run(fx, job, password, res, &e) != 0)
        fail_msg("%s failed: %s (%s)", job_action_name(job->action), e.msg, err_code_name(e.code));
}

/* Creates alice@example.com with the standard job; returns its name. */
static void create_alice(struct fixture *fx, struct result *res)
{
    struct job job;

    create_job(fx, &job);
    run_ok(fx, &job, PASSWORD, res);
}

/* Asserts the account has exactly one destination, with the vault quota;
 * returns its id (lent from st). */
static const char *one_vault(json_object *profile, long long bytes)
{
    json_object *dests = at(profile, "Destinations", NULL, NULL);
    const char *only = NULL;

    assert_non_null(dests);
    assert_int_equal(json_object_object_length(dests), 1);
    json_object_object_foreach(dests, id, dest) {
        only = id;
        assert_true(json_object_get_boolean(at(dest, "StorageLimitEnabled", NULL, NULL)));
        assert_true(json_object_get_int64(at(dest, "StorageLimitBytes", NULL, NULL)) == bytes);
        assert_string_equal(json_object_get_string(at(dest, "Description", NULL, NULL)),
                            "Comet Storage");
    }
    return only;
}

/* ---- tests ------------------------------------------------------------- */

static void test_actions_create_full(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    json_object *st, *p;

    create_alice(fx, &res);
    assert_string_equal(res.username, "alice@example.com");
    assert_string_equal(res.policy_id, POLICY_ID);

    st = fake_state(fx);
    p = profile_of(st, "alice@example.com");
    assert_int_equal(json_object_get_int(at(p, "MaximumDevices", NULL, NULL)), 5);
    assert_true(json_object_get_boolean(at(p, "AllProtectedItemsQuotaEnabled", NULL, NULL)));
    assert_true(json_object_get_int64(at(p, "AllProtectedItemsQuotaBytes", NULL, NULL)) ==
                100LL * ACCOUNT_GB);
    assert_string_equal(json_object_get_string(at(p, "PolicyID", NULL, NULL)), POLICY_ID);
    assert_true(json_object_get_boolean(at(p, "RequirePasswordChange", NULL, NULL)));
    assert_string_equal(one_vault(p, 2LL * ACCOUNT_TB), res.storage_vault_id);
    assert_true(json_object_get_boolean(at(st, "users", "alice@example.com", "has_recovery_code")));
    assert_string_equal(json_object_get_string(at(st, "users", "alice@example.com", "password")),
                        PASSWORD);
    assert_non_null(at(st, "policies", POLICY_ID, "hash"));
    assert_string_equal(json_object_get_string(at(at(st, "policies", POLICY_ID, "policy"),
                                                  "Description", NULL, NULL)), POLICY_ID);
    assert_int_equal(json_object_get_int(at(at(st, "policies", POLICY_ID, "policy"), "Policy",
                                            "ModeAdminResetPassword", NULL)), 3);
    assert_int_equal(calls(st, "policies/set"), 1);
    assert_int_equal(calls(st, "add-user"), 1);
    assert_int_equal(calls(st, "request-storage-vault"), 1);
    json_object_put(st);
}

static void test_actions_create_redelivered_converges(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res1, res2;
    struct job job;
    json_object *st;

    create_job(fx, &job);
    run_ok(fx, &job, PASSWORD, &res1);
    run_ok(fx, &job, PASSWORD, &res2); /* the same job delivered again */
    assert_string_equal(res1.username, res2.username);
    assert_string_equal(res1.storage_vault_id, res2.storage_vault_id);

    st = fake_state(fx);
    assert_int_equal(json_object_object_length(at(st, "users", NULL, NULL)), 1);
    one_vault(profile_of(st, "alice@example.com"), 2LL * ACCOUNT_TB);
    assert_int_equal(calls(st, "add-user"), 1);
    assert_int_equal(calls(st, "request-storage-vault"), 1);
    assert_int_equal(calls(st, "policies/set"), 1);
    json_object_put(st);
}

static void test_actions_create_second_policy_user_cached(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res1, res2;
    struct job job;
    json_object *st;

    create_alice(fx, &res1);
    create_job(fx, &job);
    snprintf(job.email, sizeof(job.email), "bob@example.com");
    run_ok(fx, &job, PASSWORD, &res2);
    assert_string_equal(res2.username, "bob@example.com");
    st = fake_state(fx);
    assert_int_equal(json_object_object_length(at(st, "policies", NULL, NULL)), 1);
    assert_int_equal(calls(st, "policies/set"), 1);
    assert_int_equal(calls(st, "policies/get"), 1); /* the second create used the cache */
    json_object_put(st);
}

static void test_actions_create_collision_suffix(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res1, res2;
    json_object *st;

    create_alice(fx, &res1);
    create_alice(fx, &res2); /* another order, same client email */
    assert_string_equal(res1.username, "alice@example.com");
    assert_int_equal(strlen(res2.username), strlen("alice@example.com_1234"));
    assert_memory_equal(res2.username, "alice@example.com_", strlen("alice@example.com_"));
    st = fake_state(fx);
    assert_int_equal(json_object_object_length(at(st, "users", NULL, NULL)), 2);
    one_vault(profile_of(st, res2.username), 2LL * ACCOUNT_TB);
    json_object_put(st);
}

static void test_actions_create_vault_fail_after_commit(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    json_object *st;

    create_job(fx, &job);
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"fail_after_commit\","
                                     "\"error_endpoints\":[\"request-storage-vault\"]}");
    /* The lost answer is settled at once by finding the vault in the profile. */
    run_ok(fx, &job, PASSWORD, &res);
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    st = fake_state(fx);
    assert_string_equal(one_vault(profile_of(st, "alice@example.com"), 2LL * ACCOUNT_TB),
                        res.storage_vault_id);
    assert_int_equal(calls(st, "request-storage-vault"), 1);
    json_object_put(st);
}

/* request-storage-vault rides the kept-alive connection; when the server
 * applies it and drops that connection unanswered, libcurl would resend it
 * on a new one (two vaults). The client must refuse that resend and report
 * the lost answer instead; a call that is safe to repeat still goes on. */
static void test_actions_once_call_not_resent(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct comet_param add[] = { { "TargetUser", "once@example.com" },
                                 { "TargetPassword", PASSWORD } };
    struct comet_param vault[] = { { "TargetUser", "once@example.com" },
                                   { "StorageProvider", PROVIDER } };
    json_object *out = NULL, *st;
    struct err e;

    /* Warms the connection: the next call finds it alive and reuses it. */
    assert_int_equal(comet_call(fx->ctx.comet, fx->ctx.server, COMET_ADD_USER, add, 2, &out, NULL, &e), 0);
    json_object_put(out);
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"fail_after_commit\","
                                     "\"error_endpoints\":[\"request-storage-vault\"]}");
    assert_int_equal(comet_call(fx->ctx.comet, fx->ctx.server, COMET_REQUEST_STORAGE_VAULT, vault, 2,
                                &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "not resent"));
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    st = fake_state(fx);
    assert_int_equal(calls(st, "request-storage-vault"), 1);
    assert_int_equal(json_object_object_length(at(profile_of(st, "once@example.com"), "Destinations",
                                                  NULL, NULL)), 1);
    json_object_put(st);
    /* The same handle works on after the dropped connection. */
    assert_int_equal(comet_call(fx->ctx.comet, fx->ctx.server, COMET_REQUEST_STORAGE_VAULT, vault, 2,
                                &out, NULL, &e), 0);
    json_object_put(out);
}

/* The gate hands a create the steps an earlier attempt recorded, read in
 * its round trip behind the service lock; a job that does not get the
 * lock gets no steps (they could still change). */
static void test_actions_gate_reads_steps_under_lock(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    const char *fields[] = { "username", "vault" };
    const char *values[] = { "bob@example.com", "started" };
    struct action_steps st, st2;
    struct job job, other;
    struct gate g, g2;
    struct err e;

    create_job(fx, &job);
    assert_int_equal(store_job_set_fields(fx->ctx.store, job.job_id, 2, fields, values, 600, &e), 0);
    action_steps_init(&st);
    assert_int_equal(gate_enter(fx->ctx.store, &fx->cfg, &job, false, 0, &st.fields, &g, &e), 0);
    assert_int_equal(g.verdict, GATE_RUN);
    assert_true(g.locked);
    assert_true(g.steps_read);
    assert_string_equal(st.username, "bob@example.com");
    assert_string_equal(st.vault, "started");
    assert_string_equal(st.vault_id, "");

    create_job(fx, &other); /* another job of the same service */
    action_steps_init(&st2);
    assert_int_equal(gate_enter(fx->ctx.store, &fx->cfg, &other, false, 0, &st2.fields, &g2, &e), 0);
    assert_int_equal(g2.verdict, GATE_WAIT);
    assert_false(g2.steps_read);
    gate_leave(fx->ctx.store, &job, &g);
    assert_false(g.locked);
}

static void test_actions_create_vault_retry_after_commit(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    struct err e;
    json_object *st;

    create_job(fx, &job);
    /* The vault is added but its answer lost, and the read-back fails too:
     * the attempt fails transiently and the retry must not add a second. */
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"fail_after_commit\","
                                     "\"error_endpoints\":[\"request-storage-vault\","
                                     "\"request-storage-vault-providers\"]}");
    assert_int_equal(run(fx, &job, PASSWORD, &res, &e), -1);
    assert_int_equal(err_class_of(e.code), ERRC_TRANSIENT);
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    st = fake_state(fx);
    assert_int_equal(calls(st, "request-storage-vault"), 1);
    json_object_put(st);

    run_ok(fx, &job, PASSWORD, &res); /* the retry */
    st = fake_state(fx);
    assert_string_equal(one_vault(profile_of(st, "alice@example.com"), 2LL * ACCOUNT_TB),
                        res.storage_vault_id);
    assert_int_equal(calls(st, "request-storage-vault"), 1);
    assert_int_equal(calls(st, "add-user"), 1);
    json_object_put(st);
}

static void test_actions_create_add_user_fail_after_commit(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    json_object *st;

    create_job(fx, &job);
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"fail_after_commit\","
                                     "\"error_endpoints\":[\"add-user\"]}");
    /* The lost answer is settled at once by reading the account back. */
    run_ok(fx, &job, PASSWORD, &res);
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    run_ok(fx, &job, PASSWORD, &res);
    assert_string_equal(res.username, "alice@example.com");
    st = fake_state(fx);
    assert_int_equal(json_object_object_length(at(st, "users", NULL, NULL)), 1);
    one_vault(profile_of(st, "alice@example.com"), 2LL * ACCOUNT_TB);
    json_object_put(st);
}

static void test_actions_create_transient_5xx(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    struct err e;

    create_job(fx, &job);
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"http500\"}");
    assert_int_equal(run(fx, &job, PASSWORD, &res, &e), -1);
    assert_int_equal(e.code, ERR_COMET_HTTP_5XX);
    assert_null(strstr(e.msg, ADMIN_PASSWORD));
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    run_ok(fx, &job, PASSWORD, &res);
}

static bool suspended(struct fixture *fx, const char *user, int *writes)
{
    json_object *st = fake_state(fx);
    bool v = json_object_get_boolean(at(profile_of(st, user), "IsSuspended", NULL, NULL));

    *writes = calls(st, "set-user-profile-hash");
    json_object_put(st);
    return v;
}

static void test_actions_suspend_unsuspend(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    int w1, w2;

    create_alice(fx, &res);
    job_make(fx, &job, ACTION_SUSPEND, "alice@example.com");
    run_ok(fx, &job, NULL, &res);
    assert_true(suspended(fx, "alice@example.com", &w1));
    run_ok(fx, &job, NULL, &res); /* already suspended: no write */
    assert_true(suspended(fx, "alice@example.com", &w2));
    assert_int_equal(w1, w2);
    job_make(fx, &job, ACTION_UNSUSPEND, "alice@example.com");
    run_ok(fx, &job, NULL, &res);
    assert_false(suspended(fx, "alice@example.com", &w2));
    assert_int_equal(w2, w1 + 1);
    assert_string_equal(res.username, "alice@example.com");
}

static void test_actions_suspend_lost_answer(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    int writes;

    create_alice(fx, &res);
    job_make(fx, &job, ACTION_SUSPEND, "alice@example.com");
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"fail_after_commit\","
                                     "\"error_endpoints\":[\"set-user-profile-hash\"]}");
    /* The write lands, its answer is lost: the re-read shows a new hash,
     * the re-applied edit finds nothing to change. */
    run_ok(fx, &job, NULL, &res);
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    assert_true(suspended(fx, "alice@example.com", &writes));
}

#define RACE_THREADS 4

struct race_arg {
    struct fixture *fx;
    int index;
    int rc;
};

/* One worker thread: its own Comet client and store, one create. */
static void *race_create(void *p)
{
    struct race_arg *a = p;
    struct action_ctx ctx = a->fx->ctx;
    struct result res;
    struct job job;
    struct err e;

    ctx.comet = comet_client_new(2000, 5000);
    ctx.store = store_connect(&a->fx->cfg, &e);
    a->rc = -1;
    if (ctx.comet != NULL && ctx.store != NULL) {
        create_job(a->fx, &job);
        snprintf(job.email, sizeof(job.email), "racer%d@example.com", a->index);
        a->rc = action_run(&ctx, &job, PASSWORD, &res, &e);
    }
    comet_client_free(ctx.comet);
    store_free(ctx.store);
    return NULL;
}

static void test_actions_create_concurrent_policy_once(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct race_arg args[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    json_object *st;

    /* Slow calls widen the window in which the creators overlap. */
    fake_post(fx, "/__fake/config", "{\"latency_ms\":20}");
    for (int i = 0; i < RACE_THREADS; i++) {
        args[i] = (struct race_arg){ fx, i, -1 };
        assert_int_equal(pthread_create(&th[i], NULL, race_create, &args[i]), 0);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].rc, 0);
    }
    fake_post(fx, "/__fake/config", "{\"latency_ms\":0}");
    st = fake_state(fx);
    assert_int_equal(json_object_object_length(at(st, "users", NULL, NULL)), RACE_THREADS);
    assert_int_equal(calls(st, "policies/set"), 1);
    assert_int_equal(calls(st, "request-storage-vault"), RACE_THREADS);
    json_object_put(st);
}

static void test_actions_missing_user(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    struct err e;

    job_make(fx, &job, ACTION_SUSPEND, "nobody");
    assert_int_equal(run(fx, &job, NULL, &res, &e), -1);
    assert_int_equal(e.code, ERR_USER_NOT_FOUND);
    job_make(fx, &job, ACTION_CHANGE_PACKAGE, "nobody");
    assert_int_equal(run(fx, &job, NULL, &res, &e), -1);
    assert_int_equal(e.code, ERR_USER_NOT_FOUND);
    job_make(fx, &job, ACTION_CHANGE_PASSWORD, "nobody");
    assert_int_equal(run(fx, &job, "long enough", &res, &e), -1);
    assert_int_equal(e.code, ERR_USER_NOT_FOUND);
}

static void test_actions_change_package(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    json_object *st, *p;

    create_alice(fx, &res);
    job_make(fx, &job, ACTION_CHANGE_PACKAGE, "alice@example.com");
    job.quotas.number_of_devices = 10;
    job.quotas.storage_vault_quota_gb = 500;
    run_ok(fx, &job, NULL, &res);
    st = fake_state(fx);
    p = profile_of(st, "alice@example.com");
    one_vault(p, 500LL * ACCOUNT_GB);
    assert_int_equal(json_object_get_int(at(p, "MaximumDevices", NULL, NULL)), 10);
    assert_false(json_object_get_boolean(at(p, "AllProtectedItemsQuotaEnabled", NULL, NULL)));
    assert_int_equal(json_object_get_int(at(p, "AllProtectedItemsQuotaBytes", NULL, NULL)), 0);
    assert_string_equal(json_object_get_string(at(p, "PolicyID", NULL, NULL)), "");
    /* Fields we never touch survive the whole-profile write. */
    assert_true(json_object_get_boolean(at(p, "RequirePasswordChange", NULL, NULL)));
    json_object_put(st);
}

static void test_actions_change_password(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    struct err e;
    json_object *st;

    create_alice(fx, &res);
    job_make(fx, &job, ACTION_CHANGE_PASSWORD, "alice@example.com");
    assert_int_equal(run(fx, &job, "short", &res, &e), -1);
    assert_int_equal(e.code, ERR_PASSWORD_TOO_SHORT);
    st = fake_state(fx);
    assert_int_equal(calls(st, "reset-user-password"), 0);
    json_object_put(st);
    run_ok(fx, &job, "a much longer secret", &res);
    st = fake_state(fx);
    assert_string_equal(json_object_get_string(at(st, "users", "alice@example.com", "password")),
                        "a much longer secret");
    json_object_put(st);
}

static void test_actions_terminate(void **state)
{
    struct fixture *fx = fixture_or_skip(state);
    struct result res;
    struct job job;
    json_object *st;

    create_alice(fx, &res);
    job_make(fx, &job, ACTION_TERMINATE, "alice@example.com");
    fake_post(fx, "/__fake/config", "{\"error_rate\":1,\"error_kind\":\"fail_after_commit\","
                                     "\"error_endpoints\":[\"delete-user\"]}");
    run_ok(fx, &job, NULL, &res); /* lost answer: the read-back shows it gone */
    fake_post(fx, "/__fake/config", "{\"error_rate\":0}");
    st = fake_state(fx);
    assert_null(at(st, "users", "alice@example.com", NULL));
    json_object_put(st);
    run_ok(fx, &job, NULL, &res); /* a retry of a finished terminate */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_actions_create_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_redelivered_converges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_second_policy_user_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_collision_suffix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_vault_fail_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_vault_retry_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_once_call_not_resent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_gate_reads_steps_under_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_add_user_fail_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_transient_5xx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_suspend_unsuspend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_suspend_lost_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_create_concurrent_policy_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_missing_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_change_package, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_change_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_actions_terminate, setup, teardown),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
