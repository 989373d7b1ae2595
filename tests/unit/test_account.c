/* Unit tests for account.c: username choice, quotas, applyRestrictions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include "account.h"

/* A fixed "random" value so padding and suffixes are predictable. */
static unsigned long fixed_rand(void *ctx)
{
    return *(unsigned long *)ctx;
}

static void job_blank(struct job *job)
{
    memset(job, 0, sizeof(*job));
    job->v = 1;
    job->service_id = 42;
    job->quotas.number_of_devices = QUOTA_UNSET;
    job->quotas.protected_item_quota_gb = QUOTA_UNSET;
    job->quotas.protected_item_quota_tb = QUOTA_UNSET;
    job->quotas.storage_vault_quota_gb = QUOTA_UNSET;
    job->quotas.storage_vault_quota_tb = QUOTA_UNSET;
}

static void base_name(const struct job *job, unsigned long r, char *out)
{
    struct err e;

    assert_int_equal(account_base_username(job, fixed_rand, &r, out, ACCOUNT_USERNAME_MAX, &e), 0);
}

static void test_account_username_custom_trimmed(void **state)
{
    struct job job;
    char name[ACCOUNT_USERNAME_MAX];

    (void)state;
    job_blank(&job);
    job.custom_username = true;
    strcpy(job.username, "  backup.alice \t");
    strcpy(job.email, "alice@example.com");
    base_name(&job, 0, name);
    assert_string_equal(name, "backup.alice");
}

static void test_account_username_custom_blank_uses_email(void **state)
{
    struct job job;
    char name[ACCOUNT_USERNAME_MAX];

    (void)state;
    job_blank(&job);
    job.custom_username = true;
    strcpy(job.username, "   ");
    strcpy(job.email, "alice@example.com");
    base_name(&job, 0, name);
    assert_string_equal(name, "alice@example.com");
}

static void test_account_username_service_name_ignored(void **state)
{
    struct job job;
    char name[ACCOUNT_USERNAME_MAX];

    (void)state;
    job_blank(&job);
    strcpy(job.username, "svcuser");   /* not custom: the module uses the email */
    strcpy(job.email, "bob@example.com");
    base_name(&job, 0, name);
    assert_string_equal(name, "bob@example.com");
}

static void test_account_username_firstname_lowercase(void **state)
{
    struct job job;
    char name[ACCOUNT_USERNAME_MAX];

    (void)state;
    job_blank(&job);
    strcpy(job.firstname, "Alice");
    job.service_id = 1234;
    base_name(&job, 0, name);
    assert_string_equal(name, "alice1234");
}

static void test_account_username_short_padded(void **state)
{
    struct job job;
    char name[ACCOUNT_USERNAME_MAX];

    (void)state;
    job_blank(&job);
    strcpy(job.firstname, "Al");
    job.service_id = 7;                 /* "al7": three digits to add */
    base_name(&job, 234567, name);      /* 100000 + 234567 % 900000 = 334567 */
    assert_string_equal(name, "al7334");
}

static void test_account_username_default_user_padded(void **state)
{
    struct job job;
    char name[ACCOUNT_USERNAME_MAX];

    (void)state;
    job_blank(&job);
    base_name(&job, 0, name);           /* digits of 100000 */
    assert_string_equal(name, "user10");
    assert_int_equal(strlen(name), ACCOUNT_USERNAME_MIN);
}

static void test_account_username_too_long_rejected(void **state)
{
    struct job job;
    char name[8];
    unsigned long r = 0;
    struct err e;

    (void)state;
    job_blank(&job);
    strcpy(job.email, "someone@example.com");
    assert_int_equal(account_base_username(&job, fixed_rand, &r, name, sizeof(name), &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
}

static void test_account_collision_suffix(void **state)
{
    char name[ACCOUNT_USERNAME_MAX];
    unsigned long r = 9000 + 234;       /* 1000 + 234 */
    struct err e;

    (void)state;
    assert_int_equal(account_collision_username("alice", fixed_rand, &r, name, sizeof(name), &e), 0);
    assert_string_equal(name, "alice_1234");
    r = 8999;
    assert_int_equal(account_collision_username("alice", fixed_rand, &r, name, sizeof(name), &e), 0);
    assert_string_equal(name, "alice_9999");
}

static void test_account_quota_bytes(void **state)
{
    long long bytes;
    bool set;
    struct err e;

    (void)state;
    assert_int_equal(account_quota_bytes(100, 3, &bytes, &set, &e), 0);
    assert_true(set);
    assert_true(bytes == 100LL * 1073741824LL);
    assert_int_equal(account_quota_bytes(0, 2, &bytes, &set, &e), 0);
    assert_true(set);
    assert_true(bytes == 2LL * 1099511627776LL);
    assert_int_equal(account_quota_bytes(QUOTA_UNSET, 0, &bytes, &set, &e), 0);
    assert_false(set);
    assert_true(bytes == 0);
}

static void test_account_quota_overflow(void **state)
{
    long long bytes;
    bool set;
    struct err e;

    (void)state;
    assert_int_equal(account_quota_bytes(0, 8388608LL, &bytes, &set, &e), -1); /* 2^23 TB = 2^63 */
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_int_equal(account_quota_bytes(8589934592LL, 0, &bytes, &set, &e), -1); /* 2^33 GB */
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_int_equal(account_quota_bytes(8388607LL, 0, &bytes, &set, &e), 0);
}

static const char profile_text[] =
    "{\"Username\":\"alice\",\"Unknown\":{\"x\":[1,2]},\"Sources\":{},"
    "\"Destinations\":{\"d1\":{\"Description\":\"A\",\"StorageLimitEnabled\":false,"
    "\"StorageLimitBytes\":0,\"Extra\":1},\"d2\":{\"Description\":\"B\"}},"
    "\"AllProtectedItemsQuotaEnabled\":true,\"AllProtectedItemsQuotaBytes\":5,"
    "\"MaximumDevices\":9,\"PolicyID\":\"old\",\"IsSuspended\":false}";

static json_object *get_path(json_object *o, const char *a, const char *b, const char *c)
{
    json_object *v = o;

    assert_true(json_object_object_get_ex(v, a, &v));
    if (b != NULL)
        assert_true(json_object_object_get_ex(v, b, &v));
    if (c != NULL)
        assert_true(json_object_object_get_ex(v, c, &v));
    return v;
}

static void test_account_apply_restrictions_fields(void **state)
{
    json_object *p = json_tokener_parse(profile_text);
    struct job_quotas q = { 5, 100, QUOTA_UNSET, QUOTA_UNSET, 2 };
    struct err e;

    (void)state;
    assert_non_null(p);
    assert_int_equal(account_apply_restrictions(p, &q, "WHMCS_1", &e), 0);
    assert_true(json_object_get_boolean(get_path(p, "Destinations", "d1", "StorageLimitEnabled")));
    assert_true(json_object_get_int64(get_path(p, "Destinations", "d1", "StorageLimitBytes")) ==
                2LL * ACCOUNT_TB);
    assert_true(json_object_get_boolean(get_path(p, "Destinations", "d2", "StorageLimitEnabled")));
    assert_true(json_object_get_int64(get_path(p, "Destinations", "d2", "StorageLimitBytes")) ==
                2LL * ACCOUNT_TB);
    assert_int_equal(json_object_get_int(get_path(p, "Destinations", "d1", "Extra")), 1);
    assert_string_equal(json_object_get_string(get_path(p, "Destinations", "d2", "Description")), "B");
    assert_true(json_object_get_boolean(get_path(p, "AllProtectedItemsQuotaEnabled", NULL, NULL)));
    assert_true(json_object_get_int64(get_path(p, "AllProtectedItemsQuotaBytes", NULL, NULL)) ==
                100LL * ACCOUNT_GB);
    assert_int_equal(json_object_get_int(get_path(p, "MaximumDevices", NULL, NULL)), 5);
    assert_string_equal(json_object_get_string(get_path(p, "PolicyID", NULL, NULL)), "WHMCS_1");
    /* Unknown and untouched fields survive, maps stay maps. */
    assert_int_equal(json_object_array_length(get_path(p, "Unknown", "x", NULL)), 2);
    assert_true(json_object_is_type(get_path(p, "Sources", NULL, NULL), json_type_object));
    assert_false(json_object_get_boolean(get_path(p, "IsSuspended", NULL, NULL)));
    assert_string_equal(json_object_get_string(get_path(p, "Username", NULL, NULL)), "alice");
    json_object_put(p);
}

static void test_account_apply_restrictions_unset(void **state)
{
    json_object *p = json_tokener_parse(profile_text);
    struct job_quotas q = { QUOTA_UNSET, QUOTA_UNSET, 0, QUOTA_UNSET, QUOTA_UNSET };
    struct err e;

    (void)state;
    assert_non_null(p);
    assert_int_equal(account_apply_restrictions(p, &q, "", &e), 0);
    /* No vault quota: destinations untouched. */
    assert_false(json_object_get_boolean(get_path(p, "Destinations", "d1", "StorageLimitEnabled")));
    assert_false(json_object_object_get_ex(get_path(p, "Destinations", "d2", NULL),
                                           "StorageLimitEnabled", NULL));
    /* No protected items quota: disabled with 0 bytes. */
    assert_false(json_object_get_boolean(get_path(p, "AllProtectedItemsQuotaEnabled", NULL, NULL)));
    assert_true(json_object_get_int64(get_path(p, "AllProtectedItemsQuotaBytes", NULL, NULL)) == 0);
    assert_int_equal(json_object_get_int(get_path(p, "MaximumDevices", NULL, NULL)), 0);
    assert_string_equal(json_object_get_string(get_path(p, "PolicyID", NULL, NULL)), "");
    json_object_put(p);
}

static void test_account_apply_restrictions_empty_destinations(void **state)
{
    json_object *p = json_tokener_parse("{\"Username\":\"a\",\"Destinations\":{}}");
    struct job_quotas q = { 1, QUOTA_UNSET, 1, 10, QUOTA_UNSET };
    struct err e;

    (void)state;
    assert_non_null(p);
    assert_int_equal(account_apply_restrictions(p, &q, NULL, &e), 0);
    assert_int_equal(json_object_object_length(get_path(p, "Destinations", NULL, NULL)), 0);
    assert_true(json_object_is_type(get_path(p, "Destinations", NULL, NULL), json_type_object));
    assert_true(json_object_get_int64(get_path(p, "AllProtectedItemsQuotaBytes", NULL, NULL)) ==
                ACCOUNT_TB);
    json_object_put(p);
}

static void test_account_apply_restrictions_overflow(void **state)
{
    json_object *p = json_tokener_parse(profile_text);
    struct job_quotas q = { 1, LLONG_MAX, QUOTA_UNSET, QUOTA_UNSET, QUOTA_UNSET };
    struct err e;

    (void)state;
    assert_non_null(p);
    assert_int_equal(account_apply_restrictions(p, &q, "x", &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    json_object_put(p);
}

static void test_account_policy_json(void **state)
{
    json_object *p = account_policy_new("WHMCS_67dd2a51c0f3e8.41234567");
    json_object *arr;

    (void)state;
    assert_non_null(p);
    assert_int_equal(json_object_object_length(p), 2);
    assert_string_equal(json_object_get_string(get_path(p, "Description", NULL, NULL)),
                        "WHMCS_67dd2a51c0f3e8.41234567");
    assert_int_equal(json_object_object_length(get_path(p, "Policy", NULL, NULL)), 7);
    assert_true(json_object_get_boolean(get_path(p, "Policy", "PreventChangeAccountPassword", NULL)));
    assert_int_equal(json_object_get_int(get_path(p, "Policy", "ModeAdminResetPassword", NULL)), 3);
    assert_true(json_object_get_boolean(get_path(p, "Policy", "PreventRequestStorageVault", NULL)));
    arr = get_path(p, "Policy", "StorageVaultProviders", "AllowedProvidersWhenRestricted");
    assert_int_equal(json_object_array_length(arr), 1);
    assert_int_equal(json_object_get_int(json_object_array_get_idx(arr, 0)), 1003);
    assert_false(json_object_get_boolean(
        get_path(p, "Policy", "ProtectedItemEngineTypes", "ShouldRestrictEngineTypeList")));
    json_object_put(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_account_username_custom_trimmed),
        cmocka_unit_test(test_account_username_custom_blank_uses_email),
        cmocka_unit_test(test_account_username_service_name_ignored),
        cmocka_unit_test(test_account_username_firstname_lowercase),
        cmocka_unit_test(test_account_username_short_padded),
        cmocka_unit_test(test_account_username_default_user_padded),
        cmocka_unit_test(test_account_username_too_long_rejected),
        cmocka_unit_test(test_account_collision_suffix),
        cmocka_unit_test(test_account_quota_bytes),
        cmocka_unit_test(test_account_quota_overflow),
        cmocka_unit_test(test_account_apply_restrictions_fields),
        cmocka_unit_test(test_account_apply_restrictions_unset),
        cmocka_unit_test(test_account_apply_restrictions_empty_destinations),
        cmocka_unit_test(test_account_apply_restrictions_overflow),
        cmocka_unit_test(test_account_policy_json),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
