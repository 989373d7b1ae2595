/* Unit tests for comet.c: the classification of one finished transfer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "comet.h"

/* Classifies a completed transfer with body text; returns the rc. */
static int classify(enum comet_endpoint ep, long http, const char *body, json_object **out,
                    int *body_status, struct err *e)
{
    return comet_classify(ep, CURLE_OK, NULL, http, body, body ? strlen(body) : 0, out,
                          body_status, e);
}

static void expect_error(enum comet_endpoint ep, long http, const char *body, enum err_code code)
{
    json_object *out = (json_object *)1;
    struct err e;

    err_clear(&e);
    assert_int_equal(classify(ep, http, body, &out, NULL, &e), -1);
    assert_null(out);
    assert_int_equal(e.code, code);
}

static void test_comet_classify_curl_errors(void **state)
{
    json_object *out;
    struct err e;

    (void)state;
    assert_int_equal(comet_classify(COMET_ADD_USER, CURLE_COULDNT_CONNECT, "refused", 0, NULL, 0,
                                    &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_UNAVAILABLE);
    assert_non_null(strstr(e.msg, "add-user"));
    assert_non_null(strstr(e.msg, "refused"));
    assert_int_equal(comet_classify(COMET_ADD_USER, CURLE_OPERATION_TIMEDOUT, NULL, 0, NULL, 0,
                                    &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_TIMEOUT);
    assert_int_equal(comet_classify(COMET_ADD_USER, CURLE_RECV_ERROR, "", 0, NULL, 0,
                                    &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_UNAVAILABLE);
    assert_int_equal(comet_classify(COMET_ADD_USER, CURLE_GOT_NOTHING, "", 0, NULL, 0,
                                    &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_UNAVAILABLE);
    assert_int_equal(comet_classify(COMET_ADD_USER, CURLE_WRITE_ERROR, "too big", 0, NULL, 0,
                                    &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_BAD_RESPONSE);
}

static void test_comet_classify_http_status_first(void **state)
{
    (void)state;
    /* A valid success body does not rescue a bad HTTP status. */
    expect_error(COMET_ADD_USER, 500, "{\"Status\":200,\"Message\":\"OK\"}", ERR_COMET_HTTP_5XX);
    expect_error(COMET_ADD_USER, 502, "<html>Bad gateway</html>", ERR_COMET_HTTP_5XX);
    expect_error(COMET_ADD_USER, 429, "", ERR_COMET_RATE_LIMITED);
    expect_error(COMET_ADD_USER, 403, "{\"Status\":403,\"Message\":\"Unauthorised\"}", ERR_COMET_AUTH);
    expect_error(COMET_ADD_USER, 401, "", ERR_COMET_AUTH);
    expect_error(COMET_ADD_USER, 404, "not found", ERR_COMET_HTTP_4XX);
}

static void test_comet_classify_http_message_included(void **state)
{
    json_object *out;
    struct err e;

    (void)state;
    assert_int_equal(classify(COMET_DELETE_USER, 503, "{\"Status\":503,\"Message\":\"restarting\"}",
                              &out, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "delete-user"));
    assert_non_null(strstr(e.msg, "503"));
    assert_non_null(strstr(e.msg, "restarting"));
}

static void test_comet_classify_body_errors(void **state)
{
    json_object *out;
    int status = 0;
    struct err e;

    (void)state;
    assert_int_equal(classify(COMET_GET_USER_PROFILE, 200,
                              "{\"Status\":400,\"Message\":\"User not found\"}", &out, &status, &e), -1);
    assert_int_equal(e.code, ERR_COMET_REJECTED);
    assert_int_equal(status, 400);
    assert_non_null(strstr(e.msg, "User not found"));
    assert_int_equal(classify(COMET_ADD_USER, 200, "{\"Status\":403,\"Message\":\"Unauthorised\"}",
                              &out, &status, &e), -1);
    assert_int_equal(e.code, ERR_COMET_AUTH);
    assert_int_equal(status, 403);
    assert_int_equal(classify(COMET_GET_USER_PROFILE, 200, "{\"Status\":500,\"Message\":\"x\"}",
                              &out, &status, &e), -1);
    assert_int_equal(e.code, ERR_COMET_REJECTED);
    assert_int_equal(status, 500);
}

static void test_comet_classify_bad_bodies(void **state)
{
    (void)state;
    expect_error(COMET_ADD_USER, 200, "", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_ADD_USER, 200, "<html>", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_ADD_USER, 200, "{\"Status\":200", ERR_COMET_BAD_RESPONSE); /* truncated */
    expect_error(COMET_ADD_USER, 200, "{\"Status\":200} x", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_ADD_USER, 200, "{}", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_ADD_USER, 200, "[]", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_ADD_USER, 200, "{\"Status\":\"200\"}", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_GET_USER_PROFILE, 200, "{}", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_GET_USER_PROFILE, 200, "[]", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_GET_USER_PROFILE, 200, "{\"Emails\":[]}", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_GET_PROFILE_AND_HASH, 200, "{\"Status\":200,\"Profile\":{}}",
                 ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_META_VERSION, 200, "{}", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_LIST_USERS, 200, "{}", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_POLICIES_LIST, 200, "[]", ERR_COMET_BAD_RESPONSE);
    expect_error(COMET_POLICIES_LIST, 200, "\"x\"", ERR_COMET_BAD_RESPONSE);
}

static void test_comet_classify_body_with_nul(void **state)
{
    static const char body[] = "{\"Status\":200}\0garbage";
    json_object *out;
    struct err e;

    (void)state;
    /* The explicit length covers the NUL: bytes after it are not ignored. */
    assert_int_equal(comet_classify(COMET_ADD_USER, CURLE_OK, NULL, 200, body, sizeof(body) - 1,
                                    &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_BAD_RESPONSE);
}

static void test_comet_classify_success_shapes(void **state)
{
    json_object *out;
    int status = -1;
    struct err e;

    (void)state;
    assert_int_equal(classify(COMET_ADD_USER, 200, "{\"Status\":200,\"Message\":\"OK\"}\n",
                              &out, &status, &e), 0);
    assert_int_equal(status, 0);
    json_object_put(out);
    assert_int_equal(classify(COMET_LIST_USERS, 200, "[]", &out, NULL, &e), 0);
    json_object_put(out);
    assert_int_equal(classify(COMET_POLICIES_LIST, 200, "{}", &out, NULL, &e), 0);
    json_object_put(out);
    assert_int_equal(classify(COMET_GET_USER_PROFILE, 200, "{\"Username\":\"a\",\"New\":1}",
                              &out, NULL, &e), 0);
    assert_true(json_object_object_get_ex(out, "New", NULL));
    json_object_put(out);
    assert_int_equal(classify(COMET_GET_PROFILE_AND_HASH, 200,
                              "{\"Status\":200,\"ProfileHash\":\"h\",\"Profile\":{\"Username\":\"a\"}}",
                              &out, NULL, &e), 0);
    json_object_put(out);
    assert_int_equal(classify(COMET_META_VERSION, 201, "{\"Version\":\"25.9.8\"}", &out, NULL, &e), 0);
    json_object_put(out);
}

static void test_comet_endpoint_paths(void **state)
{
    (void)state;
    assert_string_equal(comet_endpoint_path(COMET_GET_PROFILE_AND_HASH), "get-user-profile-and-hash");
    assert_string_equal(comet_endpoint_path(COMET_STORAGE_PROVIDERS),
                        "request-storage-vault-providers");
    assert_string_equal(comet_endpoint_path(COMET__COUNT), "unknown");
}

/* A server nobody answers for is down only after COMET_DOWN_CALLS refused
 * calls in a row AND COMET_DOWN_MS since the first: enough time with too
 * few calls is not down, enough calls in too little time is not down.
 * Ports 1 and 2 on loopback refuse at once. */
static void test_comet_server_down_needs_calls_and_time(void **state)
{
    (void)state;
    struct config_server slow, fast;
    struct err e;
    json_object *out = NULL;

    memset(&slow, 0, sizeof(slow));
    snprintf(slow.url, sizeof(slow.url), "http://127.0.0.1:1");
    snprintf(slow.username, sizeof(slow.username), "admin");
    snprintf(slow.password, sizeof(slow.password), "pw");
    fast = slow;
    snprintf(fast.url, sizeof(fast.url), "http://127.0.0.1:2");
    struct comet_client *c = comet_client_new(1000, 2000);
    assert_non_null(c);
    assert_false(comet_server_down(slow.url));

    assert_int_equal(comet_call(c, &slow, COMET_META_VERSION, NULL, 0, &out, NULL, &e), -1);
    assert_int_equal(e.code, ERR_COMET_UNAVAILABLE);
    struct timespec ts = { COMET_DOWN_MS / 1000, (COMET_DOWN_MS % 1000) * 1000000L + 50000000L };
    nanosleep(&ts, NULL);
    assert_false(comet_server_down(slow.url)); /* time enough, one call */
    for (int i = 1; i < COMET_DOWN_CALLS - 1; i++)
        assert_int_equal(comet_call(c, &slow, COMET_META_VERSION, NULL, 0, &out, NULL, &e), -1);
    assert_false(comet_server_down(slow.url)); /* one call short */
    assert_int_equal(comet_call(c, &slow, COMET_META_VERSION, NULL, 0, &out, NULL, &e), -1);
    assert_true(comet_server_down(slow.url));

    for (int i = 0; i < COMET_DOWN_CALLS; i++)
        assert_int_equal(comet_call(c, &fast, COMET_META_VERSION, NULL, 0, &out, NULL, &e), -1);
    assert_false(comet_server_down(fast.url)); /* calls enough, too soon */
    comet_client_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comet_classify_curl_errors),
        cmocka_unit_test(test_comet_classify_http_status_first),
        cmocka_unit_test(test_comet_classify_http_message_included),
        cmocka_unit_test(test_comet_classify_body_errors),
        cmocka_unit_test(test_comet_classify_bad_bodies),
        cmocka_unit_test(test_comet_classify_body_with_nul),
        cmocka_unit_test(test_comet_classify_success_shapes),
        cmocka_unit_test(test_comet_endpoint_paths),
        cmocka_unit_test(test_comet_server_down_needs_calls_and_time),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
