/* Unit tests for common/job.c: strict job decoding, canonical encoding, result events, time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "job.h"

#define JOB_ID "0b0f6c1e-3c1a-4b7e-9a51-2f1d7c9e8a42"
#define AFTER_ID "7d444840-9dc0-11d1-b245-5ffdce74fad2"

static const char VALID_CREATE[] =
    "{\"v\":1,\"job_id\":\"" JOB_ID "\",\"action\":\"create\",\"service_id\":1234,\"seq\":7,"
    "\"after\":\"" AFTER_ID "\",\"issued_at\":\"2026-12-04T10:00:00Z\","
    "\"server\":{\"url\":\"https://backup.example.com:8060\"},"
    "\"account\":{\"username\":\"alice@example.com\",\"custom_username\":false},"
    "\"client\":{\"email\":\"alice@example.com\",\"firstname\":\"Alice\"},"
    "\"product\":{\"policy_group\":\"WHMCS_6750\",\"storage_provider\":\"1003-abc\","
    "\"require_password_change\":true},"
    "\"quotas\":{\"number_of_devices\":5,\"protected_item_quota_gb\":100,"
    "\"protected_item_quota_tb\":null,\"storage_vault_quota_gb\":600,"
    "\"storage_vault_quota_tb\":null},"
    "\"secret\":{\"kid\":\"k2026\",\"nonce\":\"QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX\","
    "\"box\":\"8e4lts0B8Fanh1B07Wuh3s98LFQOT5CtahDuLXtF7SFuyVfZskXyroeTxEs=\"}}";

/* Takes VALID_CREATE, sets the member at the dotted path to val (JSON null
 * when to_null; removed when val is NULL otherwise), and decodes the
 * result. val is taken. */
static int decode_edit(const char *path, struct json_object *val, bool to_null,
                       struct job *job, struct err *err)
{
    struct json_object *root = json_tokener_parse(VALID_CREATE);
    assert_non_null(root);
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    struct json_object *parent = root;
    char *dot = strchr(buf, '.');
    const char *leaf = buf;
    if (dot != NULL) {
        *dot = '\0';
        assert_true(json_object_object_get_ex(root, buf, &parent));
        leaf = dot + 1;
    }
    if (val == NULL && !to_null)
        json_object_object_del(parent, leaf);
    else
        assert_int_equal(json_object_object_add(parent, leaf, val), 0);
    const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
    int rc = job_decode(s, strlen(s), job, err);
    json_object_put(root);
    return rc;
}

static int decode_modified(const char *path, struct json_object *val, struct job *job,
                           struct err *err)
{
    return decode_edit(path, val, false, job, err);
}

static int decode_nulled(const char *path, struct job *job, struct err *err)
{
    return decode_edit(path, NULL, true, job, err);
}

static int decode_str(const char *s, struct job *job, struct err *err)
{
    return job_decode(s, strlen(s), job, err);
}

static void test_job_decode_valid_create(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(decode_str(VALID_CREATE, &j, &e), 0);
    assert_int_equal(e.code, ERR_OK);
    assert_int_equal(j.v, 1);
    assert_string_equal(j.job_id, JOB_ID);
    assert_int_equal(j.action, ACTION_CREATE);
    assert_int_equal(j.service_id, 1234);
    assert_int_equal(j.seq, 7);
    assert_string_equal(j.after, AFTER_ID);
    assert_string_equal(j.issued_at, "2026-12-04T10:00:00Z");
    assert_string_equal(j.server_url, "https://backup.example.com:8060");
    assert_string_equal(j.username, "alice@example.com");
    assert_false(j.custom_username);
    assert_string_equal(j.email, "alice@example.com");
    assert_string_equal(j.firstname, "Alice");
    assert_string_equal(j.policy_group, "WHMCS_6750");
    assert_string_equal(j.storage_provider, "1003-abc");
    assert_true(j.require_password_change);
    assert_int_equal(j.quotas.number_of_devices, 5);
    assert_int_equal(j.quotas.protected_item_quota_gb, 100);
    assert_int_equal(j.quotas.protected_item_quota_tb, QUOTA_UNSET);
    assert_int_equal(j.quotas.storage_vault_quota_gb, 600);
    assert_int_equal(j.quotas.storage_vault_quota_tb, QUOTA_UNSET);
    assert_true(j.has_secret);
    assert_string_equal(j.secret_kid, "k2026");
    assert_string_equal(j.secret_nonce, "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX");
}

static void test_job_encode_decode_roundtrip(void **state)
{
    (void)state;
    struct job a, b;
    struct err e;
    assert_int_equal(decode_str(VALID_CREATE, &a, &e), 0);
    char *s = job_encode(&a);
    assert_non_null(s);
    assert_int_equal(job_decode(s, strlen(s), &b, &e), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    free(s);

    /* A minimal suspend: no after, no quotas, no secret. */
    job_init(&a);
    snprintf(a.job_id, sizeof(a.job_id), "%s", JOB_ID);
    a.action = ACTION_SUSPEND;
    a.service_id = 9;
    snprintf(a.issued_at, sizeof(a.issued_at), "2026-12-04T10:00:00Z");
    snprintf(a.server_url, sizeof(a.server_url), "https://c.example/");
    snprintf(a.username, sizeof(a.username), "bob \"the\" user");
    a.custom_username = true;
    s = job_encode(&a);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"after\":null"));
    assert_non_null(strstr(s, "\"number_of_devices\":null"));
    assert_null(strstr(s, "secret"));
    assert_non_null(strstr(s, "https://c.example/")); /* slashes not escaped */
    assert_int_equal(job_decode(s, strlen(s), &b, &e), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    free(s);
}

static void test_job_decode_body_not_nul_terminated(void **state)
{
    (void)state;
    size_t len = strlen(VALID_CREATE);
    char *copy = malloc(len + 8);
    assert_non_null(copy);
    memcpy(copy, VALID_CREATE, len);
    memcpy(copy + len, "GARBAGE", 7); /* beyond len: must not be read as part of it */
    struct job j;
    struct err e;
    assert_int_equal(job_decode(copy, len, &j, &e), 0);
    /* Trailing whitespace is fine. */
    memcpy(copy + len, " \n", 2);
    assert_int_equal(job_decode(copy, len + 2, &j, &e), 0);
    free(copy);
}

static void expect_code(const char *body, enum err_code code)
{
    struct job j;
    struct err e;
    assert_int_equal(job_decode(body, strlen(body), &j, &e), -1);
    if (e.code != code)
        fail_msg("body %.60s: code %s, want %s (%s)", body, err_code_name(e.code),
                 err_code_name(code), e.msg);
}

static void test_job_decode_rejects_bad_json(void **state)
{
    (void)state;
    expect_code("not json", ERR_BAD_JSON);
    expect_code("", ERR_BAD_JSON);
    expect_code("{\"v\":1", ERR_BAD_JSON);
    expect_code("[1,2,3]", ERR_BAD_JSON);
    expect_code("\"a string\"", ERR_BAD_JSON);
    expect_code("{\"v\":1} x", ERR_BAD_JSON);
    expect_code("{\"v\":1}{\"v\":1}", ERR_BAD_JSON);
    expect_code("{'v':1}", ERR_BAD_JSON);          /* json-c extension, not JSON */
    expect_code("{\"v\":1 /* c */}", ERR_BAD_JSON);

    char buf[sizeof(VALID_CREATE) + 8];
    snprintf(buf, sizeof(buf), "%s}", VALID_CREATE);
    expect_code(buf, ERR_BAD_JSON);
    struct job j;
    struct err e;
    assert_int_equal(job_decode(NULL, 0, &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_JSON);
}

static void test_job_decode_rejects_unknown_version(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(decode_modified("v", json_object_new_int(2), &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_VERSION);
    /* The ids are still there for the failed result event. */
    assert_string_equal(j.job_id, JOB_ID);
    assert_int_equal(j.action, ACTION_CREATE);
    assert_int_equal(j.service_id, 1234);
    assert_false(j.has_secret);

    assert_int_equal(decode_modified("v", NULL, &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_VERSION);
    assert_int_equal(decode_modified("v", json_object_new_string("1"), &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_VERSION);
    assert_int_equal(decode_modified("v", json_object_new_double(1.0), &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_VERSION);
}

static void test_job_decode_rejects_unknown_action(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(decode_modified("action", json_object_new_string("delete"), &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_ACTION);
    assert_int_equal(j.action, ACTION__COUNT);
    assert_string_equal(j.job_id, JOB_ID);
    assert_int_equal(decode_modified("action", NULL, &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_ACTION);
    assert_int_equal(decode_modified("action", json_object_new_int(1), &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_ACTION);
}

/* Each case: path, replacement (NULL = remove), expected field in the message. */
static void expect_bad_field(const char *path, struct json_object *val, const char *field)
{
    struct job j;
    struct err e;
    assert_int_equal(decode_modified(path, val, &j, &e), -1);
    if (e.code != ERR_BAD_FIELD)
        fail_msg("%s: code %s (%s)", path, err_code_name(e.code), e.msg);
    char want[96];
    snprintf(want, sizeof(want), "field '%s'", field);
    if (strstr(e.msg, want) == NULL)
        fail_msg("%s: message '%s' does not name %s", path, e.msg, want);
}

static void test_job_decode_rejects_bad_fields(void **state)
{
    (void)state;
    expect_bad_field("job_id", NULL, "job_id");
    expect_bad_field("job_id", json_object_new_string("not-a-uuid"), "job_id");
    expect_bad_field("job_id", json_object_new_string("0b0f6c1e3c1a4b7e9a512f1d7c9e8a42aaaa"),
                     "job_id");
    expect_bad_field("job_id", json_object_new_string("0b0f6c1e-3c1a-4b7e-9a51-2f1d7c9e8a4g"),
                     "job_id");
    expect_bad_field("service_id", json_object_new_string("12"), "service_id");
    expect_bad_field("service_id", json_object_new_int(0), "service_id");
    expect_bad_field("service_id", json_object_new_int(-5), "service_id");
    expect_bad_field("service_id", NULL, "service_id");
    expect_bad_field("seq", json_object_new_int(-1), "seq");
    expect_bad_field("after", json_object_new_string("x"), "after");
    expect_bad_field("issued_at", json_object_new_int(5), "issued_at");
    expect_bad_field("server", json_object_new_string("https://x"), "server");
    expect_bad_field("server.url", json_object_new_string(""), "server.url");
    expect_bad_field("account", NULL, "account");
    expect_bad_field("account.custom_username", json_object_new_int(0),
                     "account.custom_username");
    expect_bad_field("client.email", json_object_new_int(3), "client.email");
    expect_bad_field("product", NULL, "product");
    expect_bad_field("product.require_password_change", json_object_new_string("true"),
                     "product.require_password_change");
    expect_bad_field("quotas.number_of_devices", json_object_new_int(-1),
                     "quotas.number_of_devices");
    expect_bad_field("quotas.storage_vault_quota_gb", json_object_new_string("600"),
                     "quotas.storage_vault_quota_gb");
    expect_bad_field("quotas.protected_item_quota_tb", json_object_new_double(1.5),
                     "quotas.protected_item_quota_tb");
    expect_bad_field("secret", NULL, "secret");
    expect_bad_field("secret.box", NULL, "secret.box");
    expect_bad_field("secret.kid", json_object_new_string(""), "secret.kid");

    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    expect_bad_field("account.username", json_object_new_string(longname), "account.username");
    /* Exactly the buffer minus the NUL fits. */
    longname[255] = '\0';
    struct job j;
    struct err e;
    assert_int_equal(decode_modified("account.username", json_object_new_string(longname), &j,
                                     &e), 0);
    assert_string_equal(j.username, longname);
}

static void test_job_decode_secret_rules(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    /* A suspend must not carry a secret... */
    assert_int_equal(decode_modified("action", json_object_new_string("suspend"), &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_non_null(strstr(e.msg, "field 'secret'"));
    assert_int_equal(j.action, ACTION_SUSPEND);
    /* The sealed box never appears in a message. */
    assert_null(strstr(e.msg, "8e4lts"));

    /* ...but change_password must. */
    assert_int_equal(decode_modified("action", json_object_new_string("change_password"), &j,
                                     &e), 0);
    assert_true(j.has_secret);

    /* Secret explicitly null on terminate is fine; product may be absent there. */
    const char *term = "{\"v\":1,\"job_id\":\"" JOB_ID "\",\"action\":\"terminate\","
                       "\"service_id\":5,\"seq\":0,\"after\":null,\"issued_at\":\"t\","
                       "\"server\":{\"url\":\"u\"},\"account\":{\"username\":\"x\","
                       "\"custom_username\":true},\"secret\":null}";
    assert_int_equal(decode_str(term, &j, &e), 0);
    assert_false(j.has_secret);
    assert_int_equal(j.quotas.number_of_devices, QUOTA_UNSET);
    assert_string_equal(j.after, "");

    /* Only create may have an empty username. */
    assert_int_equal(decode_modified("account.username", json_object_new_string(""), &j, &e), 0);
    const char *term_empty = "{\"v\":1,\"job_id\":\"" JOB_ID "\",\"action\":\"terminate\","
                             "\"service_id\":5,\"seq\":0,\"after\":null,\"issued_at\":\"t\","
                             "\"server\":{\"url\":\"u\"},\"account\":{\"username\":\"\","
                             "\"custom_username\":true}}";
    assert_int_equal(decode_str(term_empty, &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_non_null(strstr(e.msg, "account.username"));
}

static void test_job_decode_quota_absent_or_null_is_unset(void **state)
{
    (void)state;
    struct job j;
    struct err e;
    assert_int_equal(decode_modified("quotas.number_of_devices", NULL, &j, &e), 0);
    assert_int_equal(j.quotas.number_of_devices, QUOTA_UNSET);
    assert_int_equal(decode_modified("quotas", NULL, &j, &e), 0);
    assert_int_equal(j.quotas.storage_vault_quota_gb, QUOTA_UNSET);
    assert_int_equal(decode_modified("quotas.number_of_devices", json_object_new_int(0), &j, &e),
                     0);
    assert_int_equal(j.quotas.number_of_devices, 0);
    assert_int_equal(decode_nulled("quotas.storage_vault_quota_gb", &j, &e), 0);
    assert_int_equal(j.quotas.storage_vault_quota_gb, QUOTA_UNSET);
    assert_int_equal(decode_nulled("quotas", &j, &e), 0);
    assert_int_equal(j.quotas.number_of_devices, QUOTA_UNSET);
    assert_int_equal(decode_nulled("after", &j, &e), 0);
    assert_string_equal(j.after, "");
    /* Required members are not satisfied by null. */
    assert_int_equal(decode_nulled("job_id", &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_int_equal(decode_nulled("secret", &j, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
}

static void test_job_action_names(void **state)
{
    (void)state;
    for (int i = 0; i < ACTION__COUNT; i++) {
        enum job_action a;
        assert_int_equal(job_action_parse(job_action_name((enum job_action)i), &a), 0);
        assert_int_equal(a, i);
    }
    enum job_action a;
    assert_int_equal(job_action_parse("unknown", &a), -1);
    assert_string_equal(job_action_name(ACTION__COUNT), "unknown");
    assert_string_equal(job_action_name(ACTION_CHANGE_PACKAGE), "change_package");
}

static void fill_result(struct result *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->job_id, sizeof(r->job_id), "%s", JOB_ID);
    r->service_id = 1234;
    r->action = ACTION_CREATE;
    r->seq = 7;
    r->status = RESULT_RETRYING;
    r->attempt = 2;
    err_set(&r->error, ERR_COMET_UNAVAILABLE, "connect to %s: refused", "backup.example.com");
    snprintf(r->username, sizeof(r->username), "alice@example.com");
    snprintf(r->storage_vault_id, sizeof(r->storage_vault_id), "a1b2c3");
    snprintf(r->policy_id, sizeof(r->policy_id), "p-77");
    snprintf(r->next_attempt_at, sizeof(r->next_attempt_at), "2026-12-04T10:00:30.000Z");
    r->started_at_ms = 1796378400123LL;
    r->finished_at_ms = 1796378400963LL;
    snprintf(r->worker, sizeof(r->worker), "host/42");
}

static void test_job_result_roundtrip_with_error_and_account(void **state)
{
    (void)state;
    struct result a, b;
    fill_result(&a);
    char *s = result_encode(&a);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"error\":{\"class\":\"transient\",\"code\":\"comet_unavailable\""));
    assert_non_null(strstr(s, "\"started_at\":\"2026-12-04T10:00:00.123Z\""));
    assert_non_null(strstr(s, "\"duration_ms\":840"));
    assert_non_null(strstr(s, "\"status\":\"retrying\""));
    struct err e;
    assert_int_equal(result_decode(s, strlen(s), &b, &e), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    free(s);
}

static void test_job_result_without_error_has_no_error_member(void **state)
{
    (void)state;
    struct result a, b;
    fill_result(&a);
    memset(&a.error, 0, sizeof(a.error)); /* err_clear leaves old bytes after the NUL */
    a.status = RESULT_SKIPPED;
    memset(a.username, 0, sizeof(a.username));
    memset(a.storage_vault_id, 0, sizeof(a.storage_vault_id));
    memset(a.policy_id, 0, sizeof(a.policy_id));
    memset(a.next_attempt_at, 0, sizeof(a.next_attempt_at));
    snprintf(a.reason, sizeof(a.reason), "superseded");
    char *s = result_encode(&a);
    assert_non_null(s);
    assert_null(strstr(s, "\"error\""));
    assert_null(strstr(s, "\"account\""));
    assert_null(strstr(s, "next_attempt_at"));
    assert_non_null(strstr(s, "\"reason\":\"superseded\""));
    struct err e;
    assert_int_equal(result_decode(s, strlen(s), &b, &e), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    free(s);

    /* Only the non-empty account members are written. */
    fill_result(&a);
    a.storage_vault_id[0] = '\0';
    s = result_encode(&a);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"account\":{\"username\":\"alice@example.com\",\"policy_id\""));
    free(s);
}

static void test_job_result_decode_rejects_bad(void **state)
{
    (void)state;
    struct result r;
    struct err e;
    const char *base = "{\"v\":1,\"job_id\":\"" JOB_ID "\",\"service_id\":1,\"action\":\"create\","
                       "\"seq\":0,\"status\":\"%s\",\"attempt\":1,%s\"started_at\":\"%s\","
                       "\"finished_at\":\"2026-12-04T10:00:00Z\",\"duration_ms\":0,\"worker\":\"w\"}";
    char buf[512];
    snprintf(buf, sizeof(buf), base, "failed", "", "2026-12-04T10:00:00.5Z");
    assert_int_equal(result_decode(buf, strlen(buf), &r, &e), 0);
    assert_int_equal(r.started_at_ms, 1796378400500LL);
    assert_int_equal(r.status, RESULT_FAILED);

    snprintf(buf, sizeof(buf), base, "done", "", "2026-12-04T10:00:00Z");
    assert_int_equal(result_decode(buf, strlen(buf), &r, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    snprintf(buf, sizeof(buf), base, "failed", "\"error\":{\"class\":\"x\",\"code\":\"nope\","
             "\"message\":\"m\"},", "2026-12-04T10:00:00Z");
    assert_int_equal(result_decode(buf, strlen(buf), &r, &e), -1);
    assert_non_null(strstr(e.msg, "error.code"));
    snprintf(buf, sizeof(buf), base, "failed", "", "yesterday");
    assert_int_equal(result_decode(buf, strlen(buf), &r, &e), -1);
    assert_non_null(strstr(e.msg, "started_at"));
    assert_int_equal(result_decode("{\"v\":2}", 7, &r, &e), -1);
    assert_int_equal(e.code, ERR_BAD_VERSION);
}

static void test_job_format_time_ms(void **state)
{
    (void)state;
    char out[32];
    format_time_ms(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    format_time_ms(1796378400123LL, out);
    assert_string_equal(out, "2026-12-04T10:00:00.123Z");
    format_time_ms(-1, out);
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    long long t = now_ms();
    assert_true(t > 1700000000000LL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_decode_valid_create),
        cmocka_unit_test(test_job_encode_decode_roundtrip),
        cmocka_unit_test(test_job_decode_body_not_nul_terminated),
        cmocka_unit_test(test_job_decode_rejects_bad_json),
        cmocka_unit_test(test_job_decode_rejects_unknown_version),
        cmocka_unit_test(test_job_decode_rejects_unknown_action),
        cmocka_unit_test(test_job_decode_rejects_bad_fields),
        cmocka_unit_test(test_job_decode_secret_rules),
        cmocka_unit_test(test_job_decode_quota_absent_or_null_is_unset),
        cmocka_unit_test(test_job_action_names),
        cmocka_unit_test(test_job_result_roundtrip_with_error_and_account),
        cmocka_unit_test(test_job_result_without_error_has_no_error_member),
        cmocka_unit_test(test_job_result_decode_rejects_bad),
        cmocka_unit_test(test_job_format_time_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
