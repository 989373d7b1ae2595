/* Unit tests for the error table: names, classes, parsing, err_set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "errors.h"

static void test_errors_every_code_has_unique_name(void **state)
{
    (void)state;
    for (int i = 0; i < ERR__COUNT; i++) {
        const char *a = err_code_name((enum err_code)i);
        assert_non_null(a);
        assert_true(strlen(a) > 0);
        for (int j = i + 1; j < ERR__COUNT; j++)
            assert_string_not_equal(a, err_code_name((enum err_code)j));
        /* Wire names round-trip. */
        assert_int_equal(err_code_parse(a), i);
    }
    assert_int_equal(err_code_parse("no_such_code"), ERR__COUNT);
    assert_int_equal(err_code_parse(NULL), ERR__COUNT);
}

static void test_errors_wire_names(void **state)
{
    (void)state;
    assert_string_equal(err_code_name(ERR_BAD_JSON), "bad_json");
    assert_string_equal(err_code_name(ERR_COMET_UNAVAILABLE), "comet_unavailable");
    assert_string_equal(err_code_name(ERR_COMET_HTTP_5XX), "comet_http_5xx");
    assert_string_equal(err_code_name(ERR_UNKNOWN_SERVER), "unknown_server");
    assert_string_equal(err_code_name(ERR_INTERNAL), "internal");
    assert_string_equal(err_code_name((enum err_code)999), "internal");
}

static void test_errors_classes(void **state)
{
    (void)state;
    static const enum err_code transient[] = {
        ERR_COMET_UNAVAILABLE, ERR_COMET_TIMEOUT, ERR_COMET_HTTP_5XX, ERR_COMET_RATE_LIMITED,
        ERR_COMET_BAD_RESPONSE, ERR_STORE_UNAVAILABLE, ERR_HASH_CONFLICT,
    };
    static const enum err_code permanent[] = {
        ERR_COMET_AUTH, ERR_COMET_REJECTED, ERR_COMET_HTTP_4XX, ERR_PASSWORD_TOO_SHORT,
        ERR_USER_NOT_FOUND, ERR_INTERNAL,
    };
    static const enum err_code invalid[] = {
        ERR_BAD_JSON, ERR_BAD_VERSION, ERR_BAD_ACTION, ERR_BAD_FIELD, ERR_TOO_LARGE,
        ERR_BAD_SIGNATURE, ERR_UNKNOWN_KEY, ERR_BAD_SEAL,
    };
    for (size_t i = 0; i < sizeof(transient) / sizeof(transient[0]); i++)
        assert_int_equal(err_class_of(transient[i]), ERRC_TRANSIENT);
    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++)
        assert_int_equal(err_class_of(permanent[i]), ERRC_PERMANENT);
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        assert_int_equal(err_class_of(invalid[i]), ERRC_INVALID);
    assert_int_equal(err_class_of(ERR_UNKNOWN_SERVER), ERRC_CONFIG);
    assert_int_equal(err_class_of(ERR_OK), ERRC_NONE);
    /* Out of range must never loop: permanent. */
    assert_int_equal(err_class_of(ERR__COUNT), ERRC_PERMANENT);

    assert_string_equal(err_class_name(ERRC_TRANSIENT), "transient");
    assert_string_equal(err_class_name(ERRC_PERMANENT), "permanent");
    assert_string_equal(err_class_name(ERRC_CONFIG), "config");
    assert_string_equal(err_class_name(ERRC_INVALID), "invalid");
}

static void test_errors_set_formats_and_truncates(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    assert_int_equal(e.code, ERR_OK);
    assert_string_equal(e.msg, "");

    assert_int_equal(err_set(&e, ERR_COMET_TIMEOUT, "after %d ms", 60000), -1);
    assert_int_equal(e.code, ERR_COMET_TIMEOUT);
    assert_string_equal(e.msg, "after 60000 ms");

    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(err_set(&e, ERR_BAD_FIELD, "%s", big), -1);
    assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);

    assert_int_equal(err_set(NULL, ERR_INTERNAL, "ignored %s", "x"), -1);
    err_clear(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_every_code_has_unique_name),
        cmocka_unit_test(test_errors_wire_names),
        cmocka_unit_test(test_errors_classes),
        cmocka_unit_test(test_errors_set_formats_and_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
