/* Unit tests for logging: JSON validity, fields, text form, threshold, no interleaving. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "log.h"

/* stderr is redirected into a temp file for each test. */
struct capture {
    char path[64];
    int saved_fd;
};

static int setup(void **state)
{
    struct capture *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    snprintf(c->path, sizeof(c->path), "/tmp/test_log.XXXXXX");
    int fd = mkstemp(c->path);
    if (fd < 0) {
        free(c);
        return -1;
    }
    fflush(stderr);
    c->saved_fd = dup(STDERR_FILENO);
    if (c->saved_fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
        close(fd);
        unlink(c->path);
        free(c);
        return -1;
    }
    close(fd);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct capture *c = *state;
    fflush(stderr);
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    unlink(c->path);
    free(c);
    log_init("comet", LOGL_INFO, LOG_FORMAT_TEXT);
    return 0;
}

/* The captured text so far; caller frees. */
static char *captured(struct capture *c)
{
    fflush(stderr);
    FILE *fp = fopen(c->path, "r");
    assert_non_null(fp);
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getdelim(&buf, &cap, '\0', fp);
    fclose(fp);
    if (n < 0) {
        free(buf);
        return strdup("");
    }
    return buf;
}

static void test_log_json_line_with_fields(void **state)
{
    struct capture *c = *state;
    log_init("comet-worker", LOGL_INFO, LOG_FORMAT_JSON);
    struct log_fields f = LOG_FIELDS_INIT;
    f.job_id = "0b0f6c1e";
    f.service_id = 1234;
    f.action = "create";
    f.attempt = 2;
    f.duration_ms = 840;
    f.error = "comet_timeout";
    log_msgf(LOGL_WARN, &f, "quote \" backslash \\ newline \n tab \t bell \a bad utf8 \xff\xfe end");
    char *out = captured(c);
    assert_int_equal(out[strlen(out) - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1); /* exactly one line */
    json_object *o = json_tokener_parse(out);
    assert_non_null(o);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "level", &v));
    assert_string_equal(json_object_get_string(v), "warn");
    assert_true(json_object_object_get_ex(o, "program", &v));
    assert_string_equal(json_object_get_string(v), "comet-worker");
    assert_true(json_object_object_get_ex(o, "msg", &v));
    assert_non_null(strstr(json_object_get_string(v), "quote \" backslash \\ newline \n tab"));
    assert_true(json_object_object_get_ex(o, "service_id", &v));
    assert_int_equal(json_object_get_int64(v), 1234);
    assert_true(json_object_object_get_ex(o, "attempt", &v));
    assert_int_equal(json_object_get_int(v), 2);
    assert_true(json_object_object_get_ex(o, "duration_ms", &v));
    assert_int_equal(json_object_get_int(v), 840);
    assert_true(json_object_object_get_ex(o, "error", &v));
    assert_string_equal(json_object_get_string(v), "comet_timeout");
    assert_true(json_object_object_get_ex(o, "ts", &v));
    const char *ts = json_object_get_string(v);
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[23], 'Z');
    json_object_put(o);
    free(out);
}

static void test_log_json_omits_absent_fields(void **state)
{
    struct capture *c = *state;
    log_init("p", LOGL_DEBUG, LOG_FORMAT_JSON);
    log_info("plain %d", 7);
    char *out = captured(c);
    json_object *o = json_tokener_parse(out);
    assert_non_null(o);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "msg", &v));
    assert_string_equal(json_object_get_string(v), "plain 7");
    assert_false(json_object_object_get_ex(o, "job_id", &v));
    assert_false(json_object_object_get_ex(o, "service_id", &v));
    assert_false(json_object_object_get_ex(o, "duration_ms", &v));
    json_object_put(o);
    free(out);
}

static void test_log_text_form_and_threshold(void **state)
{
    struct capture *c = *state;
    log_init("comet-worker", LOGL_WARN, LOG_FORMAT_TEXT);
    assert_false(log_enabled(LOGL_INFO));
    assert_true(log_enabled(LOGL_ERROR));
    log_info("hidden");
    struct log_fields f = LOG_FIELDS_INIT;
    f.job_id = "j1";
    f.service_id = 9;
    log_msgf(LOGL_ERROR, &f, "two\nlines");
    char *out = captured(c);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "Z ERROR comet-worker: two\\nlines job_id=j1 service_id=9\n"));
    free(out);
}

static void test_log_long_message_kept(void **state)
{
    struct capture *c = *state;
    log_init("p", LOGL_INFO, LOG_FORMAT_JSON);
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_info("%s", big);
    char *out = captured(c);
    json_object *o = json_tokener_parse(out);
    assert_non_null(o);
    json_object *v;
    assert_true(json_object_object_get_ex(o, "msg", &v));
    assert_int_equal(strlen(json_object_get_string(v)), sizeof(big) - 1);
    json_object_put(o);
    free(out);
}

#define T_THREADS 4
#define T_LINES 200

static void *log_thread(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < T_LINES; i++)
        log_info("thread %ld line %d %s", id, i, "padding padding padding padding padding");
    return NULL;
}

static void test_log_threads_never_interleave(void **state)
{
    struct capture *c = *state;
    log_init("p", LOGL_INFO, LOG_FORMAT_JSON);
    pthread_t th[T_THREADS];
    for (long i = 0; i < T_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, log_thread, (void *)i), 0);
    for (int i = 0; i < T_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    char *out = captured(c);
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_object *o = json_tokener_parse(line);
        assert_non_null(o);
        json_object_put(o);
        lines++;
    }
    assert_int_equal(lines, T_THREADS * T_LINES);
    free(out);
}

static void test_log_parse(void **state)
{
    (void)state;
    enum log_level l;
    enum log_format f;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOGL_DEBUG);
    assert_int_equal(log_level_parse("error", &l), 0);
    assert_int_equal(l, LOGL_ERROR);
    assert_int_equal(log_level_parse("verbose", &l), -1);
    assert_int_equal(log_level_parse(NULL, &l), -1);
    assert_int_equal(log_format_parse("text", &f), 0);
    assert_int_equal(f, LOG_FORMAT_TEXT);
    assert_int_equal(log_format_parse("xml", &f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_log_json_line_with_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_json_omits_absent_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_text_form_and_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_long_message_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_threads_never_interleave, setup, teardown),
        cmocka_unit_test(test_log_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
