/* Unit tests for config loading: defaults, file, environment, errors, servers, keys, printing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "crypto.h"

extern char **environ;

/* Files a test may create in its temp dir, removed by teardown. */
#define T_MAX_FILES 8

struct tctx {
    char dir[64];
    char files[T_MAX_FILES][128];
    int nfiles;
    struct config cfg;
    struct err err;
};

/* Every COMET_* variable is removed so the host environment cannot leak in. */
static void unset_comet_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e != NULL; e++) {
            if (strncmp(*e, "COMET_", 6) == 0) {
                const char *eq = strchr(*e, '=');
                size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
                if (n < sizeof(name)) {
                    memcpy(name, *e, n);
                    name[n] = '\0';
                }
                break;
            }
        }
        if (name[0] == '\0')
            return;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    struct tctx *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    snprintf(t->dir, sizeof(t->dir), "/tmp/test_config.XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    unset_comet_env();
    if (crypto_init() != 0) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tctx *t = *state;
    for (int i = 0; i < t->nfiles; i++)
        unlink(t->files[i]);
    rmdir(t->dir);
    config_clear(&t->cfg);
    unset_comet_env();
    free(t);
    return 0;
}

/* Writes content to dir/name with the given mode; returns the path (owned by t). */
static const char *write_file(struct tctx *t, const char *name, const char *content, mode_t mode)
{
    assert_true(t->nfiles < T_MAX_FILES);
    char tmp[sizeof(t->files[0])];
    snprintf(tmp, sizeof(tmp), "%s/%s", t->dir, name);
    char *path = t->files[t->nfiles++];
    memcpy(path, tmp, sizeof(tmp));
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(content, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

/* A valid base64 master key (32 bytes). */
static char *make_key_b64(unsigned char fill)
{
    unsigned char raw[KEY_BYTES];
    memset(raw, fill, sizeof(raw));
    char *b64 = b64_encode(raw, sizeof(raw));
    assert_non_null(b64);
    return b64;
}

static void test_config_defaults(void **state)
{
    struct tctx *t = *state;
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), 0);
    assert_int_equal(t->cfg.log_level, LOGL_INFO);
    assert_int_equal(t->cfg.log_format, LOG_FORMAT_JSON);
    assert_string_equal(t->cfg.amqp_url, "amqp://guest:guest@127.0.0.1:5672/");
    assert_int_equal(t->cfg.amqp_prefetch, 256);
    assert_int_equal(t->cfg.amqp_heartbeat, 30);
    assert_int_equal(t->cfg.amqp_confirm_timeout_ms, 5000);
    assert_string_equal(t->cfg.redis_host, "127.0.0.1");
    assert_int_equal(t->cfg.redis_port, 6379);
    assert_string_equal(t->cfg.redis_password, "");
    assert_int_equal(t->cfg.redis_db, 0);
    assert_string_equal(t->cfg.redis_prefix, "comet:");
    assert_int_equal(t->cfg.worker_concurrency, 32);
    assert_int_equal(t->cfg.worker_max_body, 65536);
    assert_int_equal(t->cfg.worker_grace_seconds, 30);
    assert_non_null(strchr(t->cfg.worker_name, '/'));
    assert_int_equal(t->cfg.retry_max_attempts, 8);
    assert_int_equal(t->cfg.job_retention_seconds, 604800);
    assert_int_equal(t->cfg.comet_connect_timeout_ms, 10000);
    assert_int_equal(t->cfg.comet_timeout_ms, 60000);
    assert_string_equal(t->cfg.callback_url, "");
    assert_int_equal(t->cfg.callback_secret_len, 0);
    assert_int_equal(t->cfg.dispatcher_concurrency, 16);
    assert_int_equal(t->cfg.dispatcher_timeout_ms, 10000);
    assert_int_equal(t->cfg.metrics_port, 0);
    assert_int_equal(t->cfg.keys.count, 0);
    assert_int_equal(t->cfg.server_count, 0);
}

static void test_config_file_values(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "c.conf",
                                  "log = { level = \"debug\"; format = \"text\"; };\n"
                                  "amqp = { url = \"amqps://u:p@mq.example.com:5671/prod\";\n"
                                  "         prefetch = 64; heartbeat = 0; };\n"
                                  "redis = { host = \"redis.local\"; port = 6380; db = 3;\n"
                                  "          password = \"redispw-inline\"; prefix = \"x:\"; };\n"
                                  "worker = { concurrency = 4; name = \"w1\"; };\n"
                                  "retry = { max_attempts = 3; };\n"
                                  "dispatcher = { callback_url = \"https://billing.example.com/cb.php\";\n"
                                  "               secret = \"0123456789abcdef0123\"; };\n"
                                  "metrics = { port = 9100; };\n",
                                  0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.log_level, LOGL_DEBUG);
    assert_int_equal(t->cfg.log_format, LOG_FORMAT_TEXT);
    assert_string_equal(t->cfg.amqp_url, "amqps://u:p@mq.example.com:5671/prod");
    assert_int_equal(t->cfg.amqp_prefetch, 64);
    assert_int_equal(t->cfg.amqp_heartbeat, 0);
    assert_string_equal(t->cfg.redis_host, "redis.local");
    assert_int_equal(t->cfg.redis_port, 6380);
    assert_int_equal(t->cfg.redis_db, 3);
    assert_string_equal(t->cfg.redis_password, "redispw-inline");
    assert_string_equal(t->cfg.redis_prefix, "x:");
    assert_int_equal(t->cfg.worker_concurrency, 4);
    assert_string_equal(t->cfg.worker_name, "w1");
    assert_int_equal(t->cfg.retry_max_attempts, 3);
    assert_string_equal(t->cfg.callback_url, "https://billing.example.com/cb.php");
    assert_int_equal(t->cfg.callback_secret_len, 20);
    assert_memory_equal(t->cfg.callback_secret, "0123456789abcdef0123", 20);
    assert_int_equal(t->cfg.metrics_port, 9100);
    /* Untouched keys keep their defaults. */
    assert_int_equal(t->cfg.comet_timeout_ms, 60000);
}

static void test_config_env_beats_file(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "c.conf",
                                  "amqp = { prefetch = 64; };\nredis = { host = \"file-host\"; };\n",
                                  0600);
    setenv("COMET_AMQP_PREFETCH", "128", 1);
    setenv("COMET_REDIS_HOST", "env-host", 1);
    setenv("COMET_LOG_LEVEL", "warn", 1);
    setenv("COMET_WORKER_JOB_RETENTION_SECONDS", "3600", 1);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.amqp_prefetch, 128);
    assert_string_equal(t->cfg.redis_host, "env-host");
    assert_int_equal(t->cfg.log_level, LOGL_WARN);
    assert_int_equal(t->cfg.job_retention_seconds, 3600);
}

static void test_config_bad_int_in_file_names_line_and_key(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "c.conf", "amqp = {\n  url = \"amqp://localhost/\";\n"
                                               "  prefetch = 0;\n};\n", 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    char want[256];
    snprintf(want, sizeof(want), "config: %s:3: key 'amqp.prefetch': must be between 1 and 65535",
             path);
    assert_string_equal(t->err.msg, want);
}

static void test_config_wrong_type_in_file_rejected(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "c.conf", "redis = { port = \"6379\"; };\n", 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, ":1: key 'redis.port': must be an integer"));
}

static void test_config_bad_env_value_names_env_var(void **state)
{
    struct tctx *t = *state;
    setenv("COMET_AMQP_PREFETCH", "12abc", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "COMET_AMQP_PREFETCH"));
    assert_non_null(strstr(t->err.msg, "not an integer"));

    setenv("COMET_AMQP_PREFETCH", "99999999999999999999", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "COMET_AMQP_PREFETCH"));

    setenv("COMET_AMQP_PREFETCH", "70000", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "env COMET_AMQP_PREFETCH: key 'amqp.prefetch': must be between"));
    unsetenv("COMET_AMQP_PREFETCH");

    setenv("COMET_LOG_FORMAT", "xml", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "COMET_LOG_FORMAT"));
}

static void test_config_unknown_key_rejected(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "a.conf", "amqp = {\n  prefecth = 3;\n};\n", 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, ":2: unknown key 'amqp.prefecth'"));

    path = write_file(t, "b.conf", "\namqpp = { prefetch = 3; };\n", 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, ":2: unknown key 'amqpp'"));

    path = write_file(t, "c.conf", "servers = ( { url = \"http://a\"; usrname = \"x\"; } );\n", 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "unknown key 'usrname' in servers"));
}

static void test_config_parse_error_names_line(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "c.conf", "amqp = {\n  prefetch = 3;\n  heartbeat = ;\n};\n",
                                  0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    char want[200];
    snprintf(want, sizeof(want), "config: %s:3: ", path);
    assert_memory_equal(t->err.msg, want, strlen(want));
}

static void test_config_missing_file_is_clear(void **state)
{
    struct tctx *t = *state;
    assert_int_equal(config_load(&t->cfg, "/nonexistent/comet.conf", &t->err), -1);
    assert_string_equal(t->err.msg,
                        "config: /nonexistent/comet.conf: cannot open: No such file or directory");
}

static void test_config_bad_urls_rejected(void **state)
{
    struct tctx *t = *state;
    setenv("COMET_AMQP_URL", "http://broker/", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "must start with amqp:// or amqps://"));
    unsetenv("COMET_AMQP_URL");

    setenv("COMET_DISPATCHER_CALLBACK_URL", "ftp://billing/", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "http or https"));
    unsetenv("COMET_DISPATCHER_CALLBACK_URL");

    const char *pw = write_file(t, "pw", "secret-pw\n", 0600);
    char conf[512];
    snprintf(conf, sizeof(conf),
             "servers = ( { url = \"backup.example.com\"; username = \"a\"; password_file = \"%s\"; } );\n",
             pw);
    const char *path = write_file(t, "c.conf", conf, 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "servers[0] url"));
}

/* retry.tiers_ms is checked at load, not when the worker first needs it:
 * descending, zero, junk or more than CONFIG_MAX_RETRY_TIERS tiers are
 * refused with the key named; a good value parses in order. */
static void test_config_retry_tiers_checked(void **state)
{
    struct tctx *t = *state;
    static const char *const bad[] = {
        "5000,1000", "0,1000", "1000,,5000", "1000;5000", "abc", "90000000",
        "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("COMET_RETRY_TIERS_MS", bad[i], 1);
        if (config_load(&t->cfg, NULL, &t->err) != -1)
            fail_msg("retry.tiers_ms '%s' accepted", bad[i]);
        assert_non_null(strstr(t->err.msg, "retry.tiers_ms"));
    }
    setenv("COMET_RETRY_TIERS_MS", "200,400,800", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), 0);
    unsetenv("COMET_RETRY_TIERS_MS");
    int tiers[CONFIG_MAX_RETRY_TIERS];
    assert_int_equal(config_retry_tiers(&t->cfg, tiers), 3);
    assert_int_equal(tiers[0], 200);
    assert_int_equal(tiers[2], 800);
    t->cfg.retry_tiers_ms[0] = '\0'; /* empty: the default six */
    assert_int_equal(config_retry_tiers(&t->cfg, tiers), 6);
    assert_int_equal(tiers[5], 1800000);
}

static void test_config_servers_and_find_normalised(void **state)
{
    struct tctx *t = *state;
    const char *pw = write_file(t, "pw", "s3cret-admin\n", 0600);
    char conf[1024];
    snprintf(conf, sizeof(conf),
             "servers = (\n"
             "  { url = \"http://host:8060\"; username = \"admin\"; password_file = \"%s\"; },\n"
             "  { url = \"https://Backup.Example.com\"; username = \"root\"; password = \"pw2\";\n"
             "    insecure = true; }\n"
             ");\n",
             pw);
    const char *path = write_file(t, "c.conf", conf, 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.server_count, 2);
    assert_string_equal(t->cfg.servers[0].password, "s3cret-admin");
    assert_true(t->cfg.servers[1].insecure);

    const struct config_server *sv = config_find_server(&t->cfg, "http://HOST:8060/");
    assert_ptr_equal(sv, &t->cfg.servers[0]);
    assert_ptr_equal(config_find_server(&t->cfg, "HTTP://host:8060"), &t->cfg.servers[0]);
    assert_null(config_find_server(&t->cfg, "http://host:8061"));
    assert_null(config_find_server(&t->cfg, "https://host:8060"));
    assert_null(config_find_server(&t->cfg, "http://other:8060"));
    /* Default port filled in. */
    assert_ptr_equal(config_find_server(&t->cfg, "https://backup.example.com:443/"),
                     &t->cfg.servers[1]);
    assert_null(config_find_server(&t->cfg, "not a url"));
    assert_null(config_find_server(&t->cfg, NULL));
}

static void test_config_duplicate_server_rejected(void **state)
{
    struct tctx *t = *state;
    const char *path = write_file(t, "c.conf",
                                  "servers = ( { url = \"http://h:80\"; username = \"a\"; password = \"p\"; },\n"
                                  "            { url = \"http://H/\"; username = \"b\"; password = \"q\"; } );\n",
                                  0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "listed twice"));
}

static void test_config_env_server_defines_and_merges(void **state)
{
    struct tctx *t = *state;
    setenv("COMET_SERVER_URL", "https://pod.example.com:8060", 1);
    setenv("COMET_SERVER_USERNAME", "podadmin", 1);
    setenv("COMET_SERVER_PASSWORD", "podpass", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), 0);
    assert_int_equal(t->cfg.server_count, 1);
    assert_string_equal(t->cfg.servers[0].username, "podadmin");
    assert_string_equal(t->cfg.servers[0].password, "podpass");
    config_clear(&t->cfg);

    /* Same URL in the file: env fields override, the rest is kept. */
    const char *path = write_file(t, "c.conf",
                                  "servers = ( { url = \"https://POD.example.com:8060/\"; username = \"fileadmin\";\n"
                                  "              password = \"filepass\"; insecure = true; } );\n",
                                  0600);
    unsetenv("COMET_SERVER_USERNAME");
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.server_count, 1);
    assert_string_equal(t->cfg.servers[0].username, "fileadmin");
    assert_string_equal(t->cfg.servers[0].password, "podpass");
    assert_true(t->cfg.servers[0].insecure);
    config_clear(&t->cfg);

    /* A server without a password is refused at start. */
    unsetenv("COMET_SERVER_PASSWORD");
    setenv("COMET_SERVER_USERNAME", "x", 1);
    setenv("COMET_SERVER_URL", "https://other.example.com", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "no password"));

    unsetenv("COMET_SERVER_URL");
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "COMET_SERVER_USERNAME is set but COMET_SERVER_URL is not"));
}

static void test_config_password_file_too_open_refused(void **state)
{
    struct tctx *t = *state;
    const char *pw = write_file(t, "pw", "hunter2-redis\n", 0644);
    setenv("COMET_REDIS_PASSWORD_FILE", pw, 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "env COMET_REDIS_PASSWORD_FILE: key 'redis.password_file'"));
    assert_null(strstr(t->err.msg, "hunter2"));

    assert_int_equal(chmod(pw, 0600), 0);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), 0);
    assert_string_equal(t->cfg.redis_password, "hunter2-redis");
}

static void test_config_keys_file_value_and_env(void **state)
{
    struct tctx *t = *state;
    char *b1 = make_key_b64(1), *b2 = make_key_b64(2), *b3 = make_key_b64(3);
    const char *kf = write_file(t, "k2026.key", b1, 0600);
    char conf[512];
    snprintf(conf, sizeof(conf),
             "keys = ( { id = \"k2026\"; file = \"%s\"; },\n"
             "         { id = \"k2025\"; value = \"%s\"; } );\n",
             kf, b2);
    const char *path = write_file(t, "c.conf", conf, 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.keys.count, 2);
    assert_string_equal(keyring_active(&t->cfg.keys)->id, "k2026");
    assert_non_null(keyring_find(&t->cfg.keys, "k2025"));
    assert_string_equal(t->cfg.key_ids, "k2026,k2025");
    config_clear(&t->cfg);

    /* COMET_KEYS replaces the list; COMET_KEY_<ID> supplies a secret inline. */
    char envkeys[256];
    snprintf(envkeys, sizeof(envkeys), "k-2027, k2026=%s", kf);
    setenv("COMET_KEYS", envkeys, 1);
    setenv("COMET_KEY_K_2027", b3, 1);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.keys.count, 2);
    assert_string_equal(keyring_active(&t->cfg.keys)->id, "k-2027");
    assert_null(keyring_find(&t->cfg.keys, "k2025"));
    config_clear(&t->cfg);

    /* An id with no source is an error naming the variable to set. */
    unsetenv("COMET_KEY_K_2027");
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "COMET_KEY_K_2027"));

    /* A key file readable by others is refused. */
    unsetenv("COMET_KEYS");
    assert_int_equal(chmod(kf, 0644), 0);
    assert_int_equal(config_load(&t->cfg, path, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "k2026"));
    free(b1);
    free(b2);
    free(b3);
}

static void test_config_print_masks_secrets(void **state)
{
    struct tctx *t = *state;
    const char *pw = write_file(t, "pw", "AdminPassw0rd!\n", 0600);
    char *b1 = make_key_b64(7);
    char conf[1024];
    snprintf(conf, sizeof(conf),
             "amqp = { url = \"amqp://mquser:MqPassw0rd@mq:5672/%%2f\"; };\n"
             "redis = { password = \"RedisPassw0rd\"; };\n"
             "dispatcher = { secret = \"CallbackSecret0123456789\"; };\n"
             "keys = ( { id = \"k1\"; value = \"%s\"; } );\n"
             "servers = ( { url = \"https://b.example.com:8060\"; username = \"admin\";\n"
             "              password_file = \"%s\"; } );\n",
             b1, pw);
    const char *path = write_file(t, "c.conf", conf, 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);

    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    config_print(&t->cfg, out);
    assert_int_equal(fclose(out), 0);

    assert_null(strstr(buf, "MqPassw0rd"));
    assert_null(strstr(buf, "RedisPassw0rd"));
    assert_null(strstr(buf, "CallbackSecret"));
    assert_null(strstr(buf, "AdminPassw0rd"));
    assert_null(strstr(buf, b1));
    assert_non_null(strstr(buf, "amqp.url = \"amqp://mquser:****@mq:5672/%2f\"  # COMET_AMQP_URL\n"));
    assert_non_null(strstr(buf, "redis.password = ********  # COMET_REDIS_PASSWORD\n"));
    assert_non_null(strstr(buf, "dispatcher.secret = ********"));
    assert_non_null(strstr(buf, "amqp.prefetch = 256  # COMET_AMQP_PREFETCH\n"));
    assert_non_null(strstr(buf, "k1"));
    assert_non_null(strstr(buf, "username = \"admin\"; password = ********"));
    free(buf);
    free(b1);

    /* config_describe lists every key with its variable. */
    buf = NULL;
    out = open_memstream(&buf, &len);
    assert_non_null(out);
    config_describe(out);
    assert_int_equal(fclose(out), 0);
    assert_non_null(strstr(buf, "COMET_WORKER_CONCURRENCY"));
    assert_non_null(strstr(buf, "COMET_DISPATCHER_SECRET_FILE"));
    free(buf);
}

static void test_config_short_callback_secret_refused(void **state)
{
    struct tctx *t = *state;
    setenv("COMET_DISPATCHER_SECRET", "short", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), -1);
    assert_non_null(strstr(t->err.msg, "env COMET_DISPATCHER_SECRET"));
    assert_null(strstr(t->err.msg, "short\""));
}

static void test_config_clear_wipes(void **state)
{
    struct tctx *t = *state;
    setenv("COMET_REDIS_PASSWORD", "wipe-me", 1);
    assert_int_equal(config_load(&t->cfg, NULL, &t->err), 0);
    assert_string_equal(t->cfg.redis_password, "wipe-me");
    config_clear(&t->cfg);
    assert_string_equal(t->cfg.redis_password, "");
    assert_int_equal(t->cfg.keys.count, 0);
    config_clear(NULL);
}

/* Replaces every occurrence of from with to in a malloc'd copy of s. */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t cap = strlen(s) * 2 + 1024;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t n = 0;
    while (*s) {
        if (strncmp(s, from, strlen(from)) == 0) {
            assert_true(n + strlen(to) < cap);
            memcpy(out + n, to, strlen(to));
            n += strlen(to);
            s += strlen(from);
        } else {
            assert_true(n + 1 < cap);
            out[n++] = *s++;
        }
    }
    out[n] = '\0';
    return out;
}

/* The annotated example (run from the repository root) must stay loadable. */
static void test_config_example_file_loads(void **state)
{
    struct tctx *t = *state;
    FILE *fp = fopen("conf/comet-worker.conf", "r");
    if (fp == NULL)
        skip();
    char *text = NULL;
    size_t cap = 0;
    assert_true(getdelim(&text, &cap, '\0', fp) > 0);
    fclose(fp);
    char *b64 = make_key_b64(9);
    const char *kf = write_file(t, "k.key", b64, 0600);
    const char *pw = write_file(t, "pw", "admin-pw\n", 0600);
    char *a = replace_all(text, "/etc/comet/keys/k2026.key", kf);
    char *b = replace_all(a, "/run/secrets/comet-admin-password", pw);
    const char *path = write_file(t, "example.conf", b, 0600);
    assert_int_equal(config_load(&t->cfg, path, &t->err), 0);
    assert_int_equal(t->cfg.keys.count, 1);
    assert_int_equal(t->cfg.server_count, 1);
    assert_int_equal(t->cfg.amqp_prefetch, 256);
    free(text);
    free(a);
    free(b);
    free(b64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_file_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_env_beats_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_bad_int_in_file_names_line_and_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_wrong_type_in_file_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_bad_env_value_names_env_var, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_unknown_key_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_parse_error_names_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_missing_file_is_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_bad_urls_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_retry_tiers_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_servers_and_find_normalised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_duplicate_server_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_env_server_defines_and_merges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_password_file_too_open_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_keys_file_value_and_env, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_print_masks_secrets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_short_callback_secret_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_clear_wipes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_example_file_loads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
