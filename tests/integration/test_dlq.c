/* comet-dlq against the real RabbitMQ: seeded dead messages listed, shown,
 * replayed, purged and exported by the tool run as a subprocess. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <json-c/json.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus.h"
#include "crypto.h"
#include "job.h"
#include "jobmsg.h"

#define MIN_MS (60 * 1000LL)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)
#define CATCH_WAIT_MS 5000
#define MANY 150                /* enough for the progress display (PROGRESS_MIN 100) */
#define PLAINTEXT "Plain-Dlq-Passw0rd-never-shown"

struct tctx {
    char tool[600];
    char dir[512];
    struct bus *bus;
    struct keyring kr;
    long long next_service;     /* unique per run: leftovers never match */
};

static struct tctx T;
static int skip_all;

/* ---- seeding --------------------------------------------------------------- */

/* Publishes a dead job as a worker dead-letters it: signed body with a sealed
 * secret where the action has one, failure headers, exchange comet.dead. */
static void seed(const char *action, long long service, const char *code, long long age_ms,
                 int attempts, char id[UUID_STR_LEN])
{
    char spec[1024];
    bool secret = strcmp(action, "create") == 0 || strcmp(action, "change_password") == 0;
    snprintf(spec, sizeof(spec),
             "{\"action\":\"%s\",\"service_id\":%lld,\"server\":{\"url\":\"http://127.0.0.1:9\"},"
             "\"account\":{\"username\":\"dlq-%lld\",\"custom_username\":true},"
             "\"client\":{\"email\":\"dlq@example.com\"},"
             "\"product\":{\"policy_group\":\"\",\"storage_provider\":\"\","
             "\"require_password_change\":false}%s}",
             action, service, service, secret ? ",\"password\":\"" PLAINTEXT "\"" : "");
    json_object *o = json_tokener_parse(spec);
    assert_non_null(o);
    struct job job;
    struct bus_msg m;
    struct err e;
    int rc = jobmsg_build(o, keyring_active(&T.kr), &job, &m, &e);
    json_object_put(o);
    if (rc != 0)
        fail_msg("jobmsg_build: %s", e.msg);
    snprintf(m.exchange, sizeof(m.exchange), "%s", BUS_EX_DEAD);
    char first[32], last[32], msg[128];
    format_time_ms(now_ms() - age_ms - MIN_MS, first);
    format_time_ms(now_ms() - age_ms, last);
    snprintf(msg, sizeof(msg), "seeded failure %s of service %lld", code, service);
    assert_int_equal(bus_msg_add_int(&m, BUS_H_ATTEMPT, attempts), 0);
    assert_int_equal(bus_msg_add_str(&m, BUS_H_FIRST_FAIL, first), 0);
    assert_int_equal(bus_msg_add_str(&m, BUS_H_LAST_FAIL, last), 0);
    assert_int_equal(bus_msg_add_str(&m, BUS_H_ERR_CLASS,
                                     err_class_name(err_class_of(err_code_parse(code)))), 0);
    assert_int_equal(bus_msg_add_str(&m, BUS_H_ERR_CODE, code), 0);
    assert_int_equal(bus_msg_add_str(&m, BUS_H_ERR_MSG, msg), 0);
    assert_int_equal(bus_msg_add_str(&m, BUS_H_WORKER, "test-dlq/1"), 0);
    rc = bus_publish_wait(T.bus, &m, 5000, &e);
    bus_msg_clear(&m);
    if (rc != 0)
        fail_msg("publish to %s: %s", BUS_EX_DEAD, e.msg);
    snprintf(id, UUID_STR_LEN, "%s", job.job_id);
}

static long long new_service(void)
{
    return T.next_service++;
}

/* ---- running the tool ------------------------------------------------------- */

struct run {
    int status;                 /* exit code; -1 = killed */
    char *out;
    char *err;
};

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s) {
        size_t got = fread(s, 1, (size_t)n, f);
        s[got] = '\0';
    }
    fclose(f);
    return s;
}

/* Runs comet-dlq with args (NULL-ended), stdin from /dev/null. Its stderr is
 * copied to ours so a sanitizer report shows in the test log. */
static struct run tool(const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = T.tool;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char outp[700], errp[700];
    snprintf(outp, sizeof(outp), "%s/dlq.out", T.dir);
    snprintf(errp, sizeof(errp), "%s/dlq.err", T.dir);
    pid_t pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int out = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0)
            _exit(126);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    struct run r = { .status = -1 };
    int st = 0;
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(outp);
    r.err = slurp(errp);
    assert_non_null(r.out);
    assert_non_null(r.err);
    if (r.err[0])
        fprintf(stderr, "[comet-dlq %s] %s", argv[1], r.err);
    return r;
}

static void run_clear(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* The table line of job id, or NULL. */
static const char *row_of(const char *out, const char *id)
{
    const char *p = strstr(out, id);
    return (p && (p == out || p[-1] == '\n')) ? p : NULL;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- looking at the queues independently of the tool ------------------------------ */

/* How many of ids are in the DLQ now; every message is requeued. Reads
 * until empty: a quorum queue's message count lags the returns. */
static int dlq_count(const char *const *ids, int nids)
{
    struct err e;
    long depth = bus_queue_depth(T.bus, BUS_Q_DEAD, &e);
    assert_true(depth >= 0);
    long cap = depth * 2 + 1000;
    uint64_t *tags = calloc((size_t)cap, sizeof(*tags));
    assert_non_null(tags);
    long n = 0;
    int found = 0;
    while (n < cap) {
        struct bus_delivery d;
        int got = bus_get(T.bus, BUS_Q_DEAD, &d, &e);
        assert_true(got >= 0);
        if (got == 0)
            break;
        tags[n++] = d.tag;
        for (int i = 0; i < nids; i++)
            found += strcmp(d.message_id, ids[i]) == 0;
        bus_delivery_clear(&d);
    }
    for (long i = 0; i < n; i++)
        assert_int_equal(bus_nack(T.bus, tags[i], true, &e), 0);
    free(tags);
    /* Returns are applied in the background: wait until the next scan (the
     * tool's) can see them all. */
    long long end = now_ms() + CATCH_WAIT_MS * 3;
    long ready;
    while ((ready = bus_queue_depth(T.bus, BUS_Q_DEAD, &e)) >= 0 && ready < n && now_ms() < end)
        usleep(20000);
    assert_true(ready >= 0);
    return found;
}

/* Waits for message id on queue q; returns 1 with d filled (caller clears). */
static int catch_msg(const char *q, const char *id, struct bus_delivery *out, int wait_ms)
{
    struct err e;
    long long end = now_ms() + wait_ms;
    while (now_ms() < end) {
        struct bus_delivery d;
        int got = bus_get(T.bus, q, &d, &e);
        assert_true(got >= 0);
        if (got == 0) {
            usleep(20000);
            continue;
        }
        assert_int_equal(bus_ack(T.bus, d.tag, &e), 0);
        if (strcmp(d.message_id, id) == 0) {
            *out = d;
            return 1;
        }
        bus_delivery_clear(&d);
    }
    return 0;
}

/* ---- setup --------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    const char *url = getenv("COMET_AMQP_URL");
    const char *bin = getenv("COMET_TEST_BIN_DIR");
    if (!url || !bin) {
        skip_all = 1;
        return 0;
    }
    memset(&T, 0, sizeof(T));
    snprintf(T.tool, sizeof(T.tool), "%s/comet-dlq", bin);
    const char *tmp = getenv("COMET_TEST_TMP");
    if (tmp) {
        snprintf(T.dir, sizeof(T.dir), "%s", tmp);
        mkdir(T.dir, 0700);
    } else {
        snprintf(T.dir, sizeof(T.dir), "/tmp/comet-dlq-it.XXXXXX");
        if (!mkdtemp(T.dir))
            return -1;
    }
    if (crypto_init() != 0)
        return -1;
    unsigned char raw[KEY_BYTES];
    randombytes_buf(raw, sizeof(raw));
    char *b64 = b64_encode(raw, sizeof(raw));
    struct err e;
    /* A key no worker knows: a replayed copy a worker meets later is
     * dead-lettered again, never executed. */
    int rc = b64 ? keyring_add_b64(&T.kr, "dlq-test", b64, &e) : -1;
    free(b64);
    if (rc != 0)
        return -1;
    T.next_service = 900000000LL + (long long)randombytes_uniform(90000000) * 10;
    T.bus = bus_connect(url, 0, &e);
    if (!T.bus || bus_declare_topology(T.bus, NULL, 0, &e) != 0) {
        fprintf(stderr, "test_dlq: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (!skip_all) {
        bus_free(T.bus);
        keyring_clear(&T.kr);
    }
    return 0;
}

#define SKIP_IF_NO_SERVICES() do { if (skip_all) skip(); } while (0)

/* ---- tests --------------------------------------------------------------------- */

static void test_dlq_list_shows_columns_and_filters(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char svcs[32], a[UUID_STR_LEN], b[UUID_STR_LEN];
    snprintf(svcs, sizeof(svcs), "%lld", svc);
    seed("create", svc, "comet_auth", 3 * HOUR_MS, 1, a);
    seed("suspend", svc, "comet_unavailable", 5 * MIN_MS, 8, b);

    struct run r = tool("list", "--service", svcs, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "JOB_ID"));
    assert_int_equal(count_lines(r.out), 3);
    const char *ra = row_of(r.out, a), *rb = row_of(r.out, b);
    assert_non_null(ra);
    assert_non_null(rb);
    char id[64], action[32], code[64], age[16];
    long long service, attempts;
    assert_int_equal(sscanf(ra, "%63s %lld %31s %lld %63s", id, &service, action, &attempts, code), 5);
    assert_int_equal(service, svc);
    assert_string_equal(action, "create");
    assert_int_equal(attempts, 1);
    assert_string_equal(code, "comet_auth");
    const char *eol = strchr(ra, '\n');
    const char *sp = eol;
    while (sp > ra && sp[-1] != ' ')
        sp--;
    snprintf(age, sizeof(age), "%.*s", (int)(eol - sp), sp);
    assert_string_equal(age, "3h");
    char *line = strndup(ra, (size_t)(eol - ra));
    assert_non_null(strstr(line, "seeded failure comet_auth"));
    free(line);
    assert_int_equal(sscanf(rb, "%63s %lld %31s %lld %63s", id, &service, action, &attempts, code), 5);
    assert_string_equal(action, "suspend");
    assert_int_equal(attempts, 8);
    assert_string_equal(code, "comet_unavailable");
    eol = strchr(rb, '\n');
    assert_memory_equal(eol - 3, " 5m", 3);
    run_clear(&r);

    r = tool("list", "--service", svcs, "--action", "suspend", NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(count_lines(r.out), 2);
    assert_non_null(row_of(r.out, b));
    run_clear(&r);

    r = tool("list", "--service", svcs, "--code", "comet_auth", NULL);
    assert_int_equal(count_lines(r.out), 2);
    assert_non_null(row_of(r.out, a));
    run_clear(&r);

    r = tool("list", "--older-than", "1h", "--service", svcs, NULL);
    assert_int_equal(count_lines(r.out), 2);
    assert_non_null(row_of(r.out, a));
    run_clear(&r);

    r = tool("--newer-than", "30m", "list", "--service", svcs, NULL);
    assert_int_equal(count_lines(r.out), 2);
    assert_non_null(row_of(r.out, b));
    run_clear(&r);

    /* Job ids filter too. */
    r = tool("list", a, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(count_lines(r.out), 2);
    assert_non_null(row_of(r.out, a));
    run_clear(&r);

    /* No match: the header only, and success. */
    char none[32];
    snprintf(none, sizeof(none), "%lld", new_service());
    r = tool("list", "--service", none, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(count_lines(r.out), 1);
    assert_non_null(strstr(r.out, "JOB_ID"));
    run_clear(&r);

    /* Listing twice lost nothing. */
    const char *ids[] = { a, b };
    assert_int_equal(dlq_count(ids, 2), 2);
}

static void test_dlq_list_json_parses(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char svcs[32], a[UUID_STR_LEN], b[UUID_STR_LEN];
    snprintf(svcs, sizeof(svcs), "%lld", svc);
    seed("terminate", svc, "user_not_found", 2 * DAY_MS, 1, a);
    seed("change_password", svc, "bad_seal", 90 * 1000, 1, b);
    struct run r = tool("list", "--json", "--service", svcs, NULL);
    assert_int_equal(r.status, 0);
    json_object *arr = json_tokener_parse(r.out);
    assert_non_null(arr);
    assert_true(json_object_is_type(arr, json_type_array));
    assert_int_equal(json_object_array_length(arr), 2);
    int seen = 0;
    for (size_t i = 0; i < 2; i++) {
        json_object *o = json_object_array_get_idx(arr, i), *v;
        assert_true(json_object_object_get_ex(o, "job_id", &v));
        const char *id = json_object_get_string(v);
        assert_true(json_object_object_get_ex(o, "service_id", &v));
        assert_int_equal(json_object_get_int64(v), svc);
        assert_true(json_object_object_get_ex(o, "age_seconds", &v));
        long long age = json_object_get_int64(v);
        assert_true(json_object_object_get_ex(o, "error_code", &v));
        if (strcmp(id, a) == 0) {
            seen |= 1;
            assert_string_equal(json_object_get_string(v), "user_not_found");
            assert_true(age >= 2 * 86400 && age < 2 * 86400 + 60);
            assert_true(json_object_object_get_ex(o, "error_class", &v));
            assert_string_equal(json_object_get_string(v), "permanent");
        } else if (strcmp(id, b) == 0) {
            seen |= 2;
            assert_string_equal(json_object_get_string(v), "bad_seal");
            assert_true(json_object_object_get_ex(o, "action", &v));
            assert_string_equal(json_object_get_string(v), "change_password");
        }
    }
    assert_int_equal(seen, 3);
    json_object_put(arr);
    run_clear(&r);

    char none[32];
    snprintf(none, sizeof(none), "%lld", new_service());
    r = tool("list", "--json", "--service", none, NULL);
    assert_int_equal(r.status, 0);
    arr = json_tokener_parse(r.out);
    assert_non_null(arr);
    assert_int_equal(json_object_array_length(arr), 0);
    json_object_put(arr);
    run_clear(&r);
}

static void test_dlq_show_keeps_secret_sealed(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    char a[UUID_STR_LEN];
    seed("create", new_service(), "comet_auth", MIN_MS, 1, a);
    struct run r = tool("show", a, NULL);
    assert_int_equal(r.status, 0);
    assert_null(strstr(r.out, PLAINTEXT));
    assert_null(strstr(r.err, PLAINTEXT));
    json_object *o = json_tokener_parse(r.out);
    assert_non_null(o);
    json_object *body, *secret, *v, *headers;
    assert_true(json_object_object_get_ex(o, "body", &body));
    assert_true(json_object_object_get_ex(body, "job_id", &v));
    assert_string_equal(json_object_get_string(v), a);
    assert_true(json_object_object_get_ex(body, "secret", &secret));
    assert_true(json_object_object_get_ex(secret, "box", &v));
    assert_true(strlen(json_object_get_string(v)) > 20);
    assert_true(json_object_object_get_ex(o, "headers", &headers));
    assert_true(json_object_object_get_ex(headers, BUS_H_ERR_CODE, &v));
    assert_string_equal(json_object_get_string(v), "comet_auth");
    assert_true(json_object_object_get_ex(headers, BUS_H_SIG, &v));
    json_object_put(o);
    run_clear(&r);

    r = tool("show", "00000000-0000-4000-8000-000000000000", NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "not in the DLQ"));
    run_clear(&r);
    const char *ids[] = { a };
    assert_int_equal(dlq_count(ids, 1), 1);
}

static void test_dlq_replay_dry_run_changes_nothing(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    char a[UUID_STR_LEN], q[128];
    struct err e;
    seed("unsuspend", new_service(), "comet_http_5xx", MIN_MS, 8, a);
    assert_int_equal(bus_bind_temp_queue(T.bus, BUS_EX_JOBS, "unsuspend", q, &e), 0);
    struct run r = tool("replay", "--dry-run", a, NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(row_of(r.out, a));
    assert_non_null(strstr(r.err, "would replay 1 message"));
    run_clear(&r);
    struct bus_delivery d;
    assert_int_equal(catch_msg(q, a, &d, 500), 0);
    const char *ids[] = { a };
    assert_int_equal(dlq_count(ids, 1), 1);
}

static void test_dlq_replay_one_moves_it_to_jobs(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char a[UUID_STR_LEN], b[UUID_STR_LEN], q[128];
    struct err e;
    seed("suspend", svc, "comet_unavailable", MIN_MS, 8, a);
    seed("suspend", svc, "comet_unavailable", MIN_MS, 8, b);
    assert_int_equal(bus_bind_temp_queue(T.bus, BUS_EX_JOBS, "suspend", q, &e), 0);

    /* The DLQ copy, to compare with what arrives. */
    struct run r = tool("export", a, NULL);
    assert_int_equal(r.status, 0);
    json_object *orig = json_tokener_parse(r.out);
    assert_non_null(orig);
    run_clear(&r);

    r = tool("replay", a, NULL);
    assert_int_equal(r.status, 0);
    assert_memory_equal(r.out, a, strlen(a));
    assert_string_equal(r.out + strlen(a), "\n");
    assert_non_null(strstr(r.err, "replayed 1 of 1"));
    run_clear(&r);

    struct bus_delivery d;
    assert_int_equal(catch_msg(q, a, &d, CATCH_WAIT_MS), 1);
    json_object *v, *h;
    assert_true(json_object_object_get_ex(orig, "body", &v));
    assert_int_equal(d.len, (size_t)json_object_get_string_len(v));
    assert_memory_equal(d.body, json_object_get_string(v), d.len);
    assert_string_equal(d.routing_key, "suspend");
    assert_string_equal(d.type, "suspend");
    assert_true(json_object_object_get_ex(orig, "headers", &h));
    assert_true(json_object_object_get_ex(h, BUS_H_SIG, &v));
    assert_non_null(bus_delivery_str(&d, BUS_H_SIG));
    assert_string_equal(bus_delivery_str(&d, BUS_H_SIG), json_object_get_string(v));
    assert_string_equal(bus_delivery_str(&d, BUS_H_KID), "dlq-test");
    assert_int_equal(bus_delivery_int(&d, BUS_H_ATTEMPT, 0), 0);
    assert_non_null(bus_delivery_str(&d, "x-comet-replayed-at"));
    assert_null(bus_delivery_str(&d, BUS_H_ERR_CODE));
    assert_null(bus_delivery_str(&d, BUS_H_FIRST_FAIL));
    assert_int_equal(bus_delivery_int(&d, BUS_H_FORCE, -1), -1);
    bus_delivery_clear(&d);
    json_object_put(orig);

    /* Exactly that one moved: b stays, a is gone, nothing else arrived. */
    const char *ida[] = { a }, *idb[] = { b };
    assert_int_equal(dlq_count(ida, 1), 0);
    assert_int_equal(dlq_count(idb, 1), 1);
    assert_int_equal(catch_msg(q, b, &d, 300), 0);

    /* Replaying what is not there fails for scripts. */
    r = tool("replay", a, NULL);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "not in the DLQ"));
    run_clear(&r);
}

static void test_dlq_replay_filtered_with_force(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char svcs[32], a[UUID_STR_LEN], b[UUID_STR_LEN], c[UUID_STR_LEN], q[128];
    struct err e;
    snprintf(svcs, sizeof(svcs), "%lld", svc);
    seed("change_package", svc, "comet_rejected", 2 * HOUR_MS, 1, a);
    seed("change_package", svc, "comet_rejected", 3 * HOUR_MS, 1, b);
    seed("change_package", svc, "comet_rejected", 5 * MIN_MS, 1, c);
    assert_int_equal(bus_bind_temp_queue(T.bus, BUS_EX_JOBS, "change_package", q, &e), 0);
    struct run r = tool("replay", "--force", "--service", svcs, "--older-than", "1h", NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(count_lines(r.out), 2);
    run_clear(&r);
    struct bus_delivery d;
    assert_int_equal(catch_msg(q, a, &d, CATCH_WAIT_MS), 1);
    assert_int_equal(bus_delivery_int(&d, BUS_H_FORCE, 0), 1);
    bus_delivery_clear(&d);
    const char *gone[] = { a, b }, *kept[] = { c };
    assert_int_equal(dlq_count(gone, 2), 0);
    assert_int_equal(dlq_count(kept, 1), 1);
}

static void test_dlq_purge_removes_only_filtered(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char svcs[32], a[UUID_STR_LEN], b[UUID_STR_LEN];
    snprintf(svcs, sizeof(svcs), "%lld", svc);
    seed("terminate", svc, "user_not_found", DAY_MS, 1, a);
    seed("suspend", svc, "user_not_found", DAY_MS, 1, b);

    /* No terminal, no --yes: refused before touching anything. */
    struct run r = tool("purge", "--service", svcs, NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "--yes"));
    run_clear(&r);
    r = tool("purge", "--yes", NULL);
    assert_int_equal(r.status, 2); /* everything only with --all */
    run_clear(&r);
    const char *both[] = { a, b };
    assert_int_equal(dlq_count(both, 2), 2);

    r = tool("purge", "--yes", "--service", svcs, "--action", "terminate", NULL);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.err, "purged 1 message"));
    run_clear(&r);
    const char *ida[] = { a }, *idb[] = { b };
    assert_int_equal(dlq_count(ida, 1), 0);
    assert_int_equal(dlq_count(idb, 1), 1);
}

static void test_dlq_purge_many_shows_progress(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char svcs[32];
    snprintf(svcs, sizeof(svcs), "%lld", svc);
    static char ids[MANY][UUID_STR_LEN]; /* static: a failed assert leaks nothing */
    static const char *idp[MANY];
    for (int i = 0; i < MANY; i++) {
        seed("suspend", svc, "comet_unavailable", MIN_MS, 8, ids[i]);
        idp[i] = ids[i];
    }
    struct run r = tool("purge", "--yes", "--service", svcs, NULL);
    assert_int_equal(r.status, 0);
    /* Not a terminal: plain lines, the last one complete. */
    assert_non_null(strstr(r.err, "scanned"));
    assert_null(strchr(r.err, '\r'));
    char want[64];
    snprintf(want, sizeof(want), "purged %d messages", MANY);
    assert_non_null(strstr(r.err, want));
    run_clear(&r);
    /* More acks than a quorum queue channel keeps in flight (32): all of
     * them must have been applied before the tool closed its channel. */
    assert_int_equal(dlq_count(idp, MANY), 0);
}

static void test_dlq_export_emits_json_lines(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    long long svc = new_service();
    char svcs[32], a[UUID_STR_LEN], b[UUID_STR_LEN];
    snprintf(svcs, sizeof(svcs), "%lld", svc);
    seed("create", svc, "comet_auth", MIN_MS, 1, a);
    seed("terminate", svc, "comet_auth", MIN_MS, 1, b);
    struct run r = tool("export", "--service", svcs, NULL);
    assert_int_equal(r.status, 0);
    assert_int_equal(count_lines(r.out), 2);
    assert_null(strstr(r.out, PLAINTEXT));
    int seen = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_object *o = json_tokener_parse(line), *h, *body, *v;
        assert_non_null(o);
        assert_true(json_object_object_get_ex(o, "headers", &h));
        assert_true(json_object_object_get_ex(h, BUS_H_ERR_CODE, &v));
        assert_string_equal(json_object_get_string(v), "comet_auth");
        assert_true(json_object_object_get_ex(o, "body", &body));
        json_object *job = json_tokener_parse(json_object_get_string(body));
        assert_non_null(job);
        assert_true(json_object_object_get_ex(job, "job_id", &v));
        seen |= strcmp(json_object_get_string(v), a) == 0 ? 1
                : strcmp(json_object_get_string(v), b) == 0 ? 2 : 4;
        json_object_put(job);
        json_object_put(o);
    }
    assert_int_equal(seen, 3);
    run_clear(&r);
    const char *ids[] = { a, b };
    assert_int_equal(dlq_count(ids, 2), 2);
}

static void test_dlq_usage_and_broker_errors(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    struct run r = tool(NULL);
    assert_int_equal(r.status, 2);
    run_clear(&r);
    r = tool("frobnicate", NULL);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "unknown command"));
    run_clear(&r);
    r = tool("list", "--older-than", "5y", NULL);
    assert_int_equal(r.status, 2);
    run_clear(&r);
    r = tool("replay", NULL);
    assert_int_equal(r.status, 2);
    run_clear(&r);
    r = tool("show", NULL);
    assert_int_equal(r.status, 2);
    run_clear(&r);

    char *saved = strdup(getenv("COMET_AMQP_URL"));
    assert_non_null(saved);
    setenv("COMET_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/", 1);
    r = tool("list", NULL);
    setenv("COMET_AMQP_URL", saved, 1);
    free(saved);
    assert_int_equal(r.status, 3);
    assert_non_null(strstr(r.err, "unreachable"));
    assert_null(strchr(strchr(r.err, '\n') + 1, '\n')); /* one line */
    run_clear(&r);
}

/* RabbitMQ 4 gives every quorum queue a delivery limit of 20 and drops a
 * message past it when it has nowhere to dead-letter: the DLQ (requeued by
 * every list/show) and the result queues (requeued by restarts) declare
 * theirs explicitly, far out of reach; the work queue keeps its own 20. */
static void test_dlq_queues_never_drop_by_delivery_count(void **state)
{
    (void)state;
    SKIP_IF_NO_SERVICES();
    const char *root = getenv("COMET_TEST_ROOT");
    const char *dir = getenv("COMET_RABBITMQ_DIR");
    if (!root || !dir)
        skip();
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/services.sh' ctl '%s' list_queues -q name arguments 2>/dev/null",
             root, dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static const struct { const char *queue; const char *limit; } want[] = {
        { BUS_Q_DEAD, "{\"x-delivery-limit\",1000000000}" },
        { BUS_Q_RESULTS, "{\"x-delivery-limit\",1000000000}" },
        { BUS_Q_RESULTS_DEAD, "{\"x-delivery-limit\",1000000000}" },
        { BUS_Q_JOBS, "{\"x-delivery-limit\",20}" },
    };
    bool seen[4] = { false, false, false, false };
    char line[4096];
    while (fgets(line, sizeof(line), p)) {
        for (size_t i = 0; i < 4; i++) {
            size_t n = strlen(want[i].queue);
            if (strncmp(line, want[i].queue, n) == 0 && (line[n] == '\t' || line[n] == ' ')) {
                if (!strstr(line, want[i].limit))
                    fail_msg("%s declared without %s: %s", want[i].queue, want[i].limit, line);
                seen[i] = true;
            }
        }
    }
    assert_int_equal(pclose(p), 0);
    for (size_t i = 0; i < 4; i++)
        if (!seen[i])
            fail_msg("queue %s not listed by rabbitmqctl", want[i].queue);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dlq_list_shows_columns_and_filters),
        cmocka_unit_test(test_dlq_list_json_parses),
        cmocka_unit_test(test_dlq_show_keeps_secret_sealed),
        cmocka_unit_test(test_dlq_replay_dry_run_changes_nothing),
        cmocka_unit_test(test_dlq_replay_one_moves_it_to_jobs),
        cmocka_unit_test(test_dlq_replay_filtered_with_force),
        cmocka_unit_test(test_dlq_purge_removes_only_filtered),
        cmocka_unit_test(test_dlq_purge_many_shows_progress),
        cmocka_unit_test(test_dlq_export_emits_json_lines),
        cmocka_unit_test(test_dlq_usage_and_broker_errors),
        cmocka_unit_test(test_dlq_queues_never_drop_by_delivery_count),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
