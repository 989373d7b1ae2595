/* Redis store over a synchronous hiredis context: policy cache, locks and
 * per-job state, every key under the configured prefix. */
#include "store.h"
#include "clock.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redis on the same network answers in well under a millisecond; these
 * only bound how long a dead or partitioned Redis can stall a worker. */
#define STORE_CONNECT_TIMEOUT_MS 2000
#define STORE_COMMAND_TIMEOUT_MS 5000
/* Prefix + kind + server URL + id fit comfortably. */
#define STORE_KEY_MAX 1024
/* 16 random bytes: a lock token nobody else can guess or collide with. */
#define STORE_TOKEN_BYTES 16

/* Deletes the key only if it still holds our token, atomically. */
static const char lock_release_script[] =
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('del', KEYS[1]) else return 0 end";

struct store {
    const struct config *cfg; /* lent; outlives the store */
    redisContext *ctx;        /* NULL or broken: reconnect before the next command */
    bool broken;              /* a command failed at the connection level */
    unsigned epoch;           /* store_epoch when ctx was connected */
};

static const char *const job_state_names[] = {
    [JOB_STATE_NONE]      = "none",
    [JOB_STATE_RUNNING]   = "running",
    [JOB_STATE_SUCCEEDED] = "succeeded",
    [JOB_STATE_FAILED]    = "failed",
    [JOB_STATE_DEAD]      = "dead",
};

const char *job_state_name(enum job_state st)
{
    if ((unsigned)st >= sizeof(job_state_names) / sizeof(job_state_names[0]))
        return "unknown";
    return job_state_names[st];
}

/* Bumped whenever any connection of this process fails at the connection
 * level. After a Redis restart every thread's idle connection is dead, and
 * each would only find out by failing its next command (one more job
 * waiting, and the consumer pausing again for each thread); a connection
 * older than the last failure is replaced before it is used instead. */
static _Atomic unsigned store_epoch;

static void mark_broken(struct store *s)
{
    s->broken = true;
    atomic_fetch_add_explicit(&store_epoch, 1, memory_order_relaxed);
}

/* ---- connection -------------------------------------------------------- */

static void store_drop(struct store *s)
{
    if (s->ctx != NULL)
        redisFree(s->ctx);
    s->ctx = NULL;
    s->broken = false;
}

/* Runs a command on the raw context during set-up (AUTH, SELECT); the
 * reply must be a status. 0 or -1 with err. */
static int setup_command(redisContext *ctx, struct err *err, const char *what,
                         const char *fmt, ...)
{
    redisReply *r;
    va_list ap;
    int rc = 0;

    va_start(ap, fmt);
    r = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    if (r == NULL)
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis %s: %s", what, ctx->errstr);
    if (r->type == REDIS_REPLY_ERROR)
        rc = err_set(err, ERR_STORE_UNAVAILABLE, "redis %s refused: %.*s", what,
                     (int)(r->len > 120 ? 120 : r->len), r->str);
    freeReplyObject(r);
    return rc;
}

static int store_open(struct store *s, struct err *err)
{
    const struct config *cfg = s->cfg;
    struct timeval conn_tv = { STORE_CONNECT_TIMEOUT_MS / 1000, (STORE_CONNECT_TIMEOUT_MS % 1000) * 1000 };
    struct timeval cmd_tv = { STORE_COMMAND_TIMEOUT_MS / 1000, (STORE_COMMAND_TIMEOUT_MS % 1000) * 1000 };
    redisContext *ctx;

    store_drop(s);
    /* Read first: a failure elsewhere while this connects makes it reconnect
     * once more, never keep a connection older than a failure. */
    s->epoch = atomic_load_explicit(&store_epoch, memory_order_relaxed);
    ctx = redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, conn_tv);
    if (ctx == NULL)
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis %s:%d: out of memory",
                       cfg->redis_host, cfg->redis_port);
    if (ctx->err != 0) {
        err_set(err, ERR_STORE_UNAVAILABLE, "redis %s:%d: %s", cfg->redis_host,
                cfg->redis_port, ctx->errstr);
        redisFree(ctx);
        return -1;
    }
    if (redisSetTimeout(ctx, cmd_tv) != REDIS_OK) {
        err_set(err, ERR_STORE_UNAVAILABLE, "redis: cannot set timeout: %s", ctx->errstr);
        redisFree(ctx);
        return -1;
    }
    if ((cfg->redis_password[0] != '\0' &&
         setup_command(ctx, err, "AUTH", "AUTH %s", cfg->redis_password) != 0) ||
        (cfg->redis_db != 0 && setup_command(ctx, err, "SELECT", "SELECT %d", cfg->redis_db) != 0)) {
        redisFree(ctx);
        return -1;
    }
    s->ctx = ctx;
    return 0;
}

struct store *store_connect(const struct config *cfg, struct err *err)
{
    struct store *s;

    /* Lock tokens come from randombytes; idempotent, safe to call again. */
    if (sodium_init() < 0) {
        err_set(err, ERR_INTERNAL, "libsodium init failed");
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    if (store_open(s, err) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void store_free(struct store *s)
{
    if (s == NULL)
        return;
    store_drop(s);
    free(s);
}

int store_ensure(struct store *s, struct err *err)
{
    if (s->ctx != NULL && !s->broken && s->ctx->err == 0 &&
        s->epoch == atomic_load_explicit(&store_epoch, memory_order_relaxed))
        return 0;
    return store_open(s, err);
}

/* Runs one command (reconnecting first when needed). Returns the reply
 * (caller frees) or NULL with err; a connection-level failure marks the
 * context for reconnect. An error reply is a failure too. */
static redisReply *store_command(struct store *s, struct err *err, const char *fmt, ...)
{
    redisReply *r;
    va_list ap;

    if (store_ensure(s, err) != 0)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(s->ctx, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        mark_broken(s);
        err_set(err, ERR_STORE_UNAVAILABLE, "redis: %s", s->ctx->errstr);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* LOADING, READONLY after a failover, OOM: all pass with time. */
        err_set(err, ERR_STORE_UNAVAILABLE, "redis error: %.*s",
                (int)(r->len > 120 ? 120 : r->len), r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* ---- pipelines ------------------------------------------------------------ */

/* Queues one command of a pipeline (sent by pipeline_collect). A failure
 * leaves a partial command in the output buffer: the context is dropped. */
static int pipeline_append(struct store *s, struct err *err, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = redisvAppendCommand(s->ctx, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        mark_broken(s);
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis: cannot queue a command: %s",
                       s->ctx->errstr[0] ? s->ctx->errstr : "out of memory");
    }
    return 0;
}

/* Sends the n queued commands in one write and reads their n replies: one
 * round trip instead of n. 0 with every reply in r[] (caller frees), or -1
 * with err and nothing to free. Every reply is read even after an error
 * reply, so the connection stays in step; a connection failure drops it. */
static int pipeline_collect(struct store *s, size_t n, redisReply **r, struct err *err)
{
    int rc = 0;
    size_t got = 0;

    for (; got < n; got++) {
        void *reply = NULL;

        if (redisGetReply(s->ctx, &reply) != REDIS_OK || reply == NULL) {
            mark_broken(s);
            rc = err_set(err, ERR_STORE_UNAVAILABLE, "redis: %s", s->ctx->errstr);
            break;
        }
        r[got] = reply;
        if (r[got]->type == REDIS_REPLY_ERROR && rc == 0)
            rc = err_set(err, ERR_STORE_UNAVAILABLE, "redis error: %.*s",
                         (int)(r[got]->len > 120 ? 120 : r[got]->len), r[got]->str);
    }
    if (rc != 0) {
        for (size_t i = 0; i < got; i++)
            freeReplyObject(r[i]);
        memset(r, 0, n * sizeof(*r));
    }
    return rc;
}

static void pipeline_free(size_t n, redisReply **r)
{
    for (size_t i = 0; i < n; i++)
        freeReplyObject(r[i]);
}

/* Copies a string reply into out ("" for nil); -1 when it does not fit. */
static int reply_copy(const redisReply *r, char *out, size_t outlen, const char *what,
                      struct err *err)
{
    out[0] = '\0';
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return 0;
    if (r->len >= outlen)
        return err_set(err, ERR_INTERNAL, "job field %s longer than its buffer", what);
    memcpy(out, r->str, r->len);
    out[r->len] = '\0';
    return 0;
}

int store_ping(struct store *s, struct err *err)
{
    redisReply *r = store_command(s, err, "PING");

    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

/* prefix + kind + ":" + a [+ ":" + b] into key. */
static int make_key(const struct store *s, char key[STORE_KEY_MAX], const char *kind,
                    const char *a, const char *b, struct err *err)
{
    int n = b != NULL
            ? snprintf(key, STORE_KEY_MAX, "%s%s:%s:%s", s->cfg->redis_prefix, kind, a, b)
            : snprintf(key, STORE_KEY_MAX, "%s%s:%s", s->cfg->redis_prefix, kind, a);

    if (n < 0 || n >= STORE_KEY_MAX)
        return err_set(err, ERR_BAD_FIELD, "redis key for %s too long", kind);
    return 0;
}

/* svc:<server>:<service_id> (the high-water mark) or, with lock, the
 * service lock svc:<server>:<service_id>:lock. */
static int svc_key(const struct store *s, char key[STORE_KEY_MAX], const char *server,
                   long long service_id, bool lock, struct err *err)
{
    char sid[48];

    snprintf(sid, sizeof(sid), lock ? "%lld:lock" : "%lld", service_id);
    return make_key(s, key, "svc", server, sid, err);
}

/* ---- policy cache ------------------------------------------------------ */

/* Every create asks whether its policy group exists, and policies almost
 * never change: a key Redis confirmed is remembered in this process for a
 * minute, which saves a round trip per create. Keyed by the full Redis key
 * (prefix included), so it is only ever a copy of what Redis holds; Redis
 * stays the shared record across workers and pods. Direct-mapped: a
 * collision just costs one EXISTS. */
#define POLICY_MEMO_SLOTS 64
#define POLICY_MEMO_MS 60000

struct policy_memo {
    char key[STORE_KEY_MAX];
    long long until_ms; /* CLOCK_MONOTONIC; 0 = empty */
};
static struct policy_memo policy_memo[POLICY_MEMO_SLOTS];
static pthread_mutex_t policy_memo_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t memo_slot(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % POLICY_MEMO_SLOTS;
}

static bool memo_has(const char *key)
{
    struct policy_memo *m = &policy_memo[memo_slot(key)];
    long long now = mono_ms();
    bool hit;

    if (now == 0 || pthread_mutex_lock(&policy_memo_mu) != 0)
        return false;
    hit = m->until_ms > now && strcmp(m->key, key) == 0;
    pthread_mutex_unlock(&policy_memo_mu);
    return hit;
}

static void memo_put(const char *key)
{
    struct policy_memo *m = &policy_memo[memo_slot(key)];
    long long now = mono_ms();

    if (now == 0 || pthread_mutex_lock(&policy_memo_mu) != 0)
        return;
    snprintf(m->key, sizeof(m->key), "%s", key);
    m->until_ms = now + POLICY_MEMO_MS;
    pthread_mutex_unlock(&policy_memo_mu);
}

int store_policy_known(struct store *s, const char *server, const char *policy_id,
                       bool *known, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r;

    *known = false;
    if (make_key(s, key, "policy", server, policy_id, err) != 0)
        return -1;
    if (memo_has(key)) {
        *known = true;
        return 0;
    }
    r = store_command(s, err, "EXISTS %s", key);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER) {
        int type = r->type;

        freeReplyObject(r);
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis EXISTS: unexpected reply type %d", type);
    }
    *known = r->integer > 0;
    freeReplyObject(r);
    if (*known)
        memo_put(key);
    return 0;
}

int store_policy_remember(struct store *s, const char *server, const char *policy_id,
                          struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r;

    if (make_key(s, key, "policy", server, policy_id, err) != 0)
        return -1;
    r = store_command(s, err, "SET %s 1", key);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    memo_put(key);
    return 0;
}

/* ---- locks ------------------------------------------------------------- */

int store_lock_acquire(struct store *s, const char *name, int ttl_ms, char token[33],
                       bool *acquired, struct err *err)
{
    unsigned char raw[STORE_TOKEN_BYTES];
    char key[STORE_KEY_MAX];
    redisReply *r;

    *acquired = false;
    if (make_key(s, key, "lock", name, NULL, err) != 0)
        return -1;
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(token, 2 * STORE_TOKEN_BYTES + 1, raw, sizeof(raw));
    r = store_command(s, err, "SET %s %s NX PX %d", key, token, ttl_ms);
    if (r == NULL)
        return -1;
    /* OK when set; a nil reply when someone else holds it. */
    *acquired = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    return 0;
}

int store_lock_release(struct store *s, const char *name, const char *token, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r;

    if (make_key(s, key, "lock", name, NULL, err) != 0)
        return -1;
    r = store_command(s, err, "EVAL %s 1 %s %s", lock_release_script, key, token);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

/* ---- per-job state ----------------------------------------------------- */

int store_job_get(struct store *s, const char *job_id, const char *field, char *out,
                  size_t outlen, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r;

    if (outlen == 0)
        return err_set(err, ERR_INTERNAL, "store_job_get: empty buffer");
    out[0] = '\0';
    if (make_key(s, key, "job", job_id, NULL, err) != 0)
        return -1;
    r = store_command(s, err, "HGET %s %s", key, field);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_STRING) {
        if (r->len >= outlen) {
            freeReplyObject(r);
            return err_set(err, ERR_INTERNAL, "job field %s longer than its buffer", field);
        }
        memcpy(out, r->str, r->len);
        out[r->len] = '\0';
    }
    freeReplyObject(r);
    return 0;
}

int store_job_set(struct store *s, const char *job_id, const char *field, const char *value,
                  int retention_seconds, struct err *err)
{
    return store_job_set_fields(s, job_id, 1, &field, &value, retention_seconds, err);
}

/* Queues HMGET key f1 f2 ... */
static int append_hmget(struct store *s, const char *key, const struct store_fields *f, struct err *err)
{
    const char *argv[2 + STORE_FIELDS_MAX];

    if (f->n == 0 || f->n > STORE_FIELDS_MAX)
        return err_set(err, ERR_INTERNAL, "store: HMGET of %zu fields", f->n);
    argv[0] = "HMGET";
    argv[1] = key;
    for (size_t i = 0; i < f->n; i++) {
        if (f->lens[i] == 0)
            return err_set(err, ERR_INTERNAL, "store: HMGET into an empty buffer");
        f->outs[i][0] = '\0';
        argv[2 + i] = f->names[i];
    }
    if (redisAppendCommandArgv(s->ctx, (int)(2 + f->n), argv, NULL) != REDIS_OK) {
        mark_broken(s);
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis: %s", s->ctx->errstr);
    }
    return 0;
}

/* Copies an HMGET reply into the fields' buffers. */
static int copy_fields(const redisReply *r, const struct store_fields *f, struct err *err)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != f->n)
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis HMGET: unexpected reply type %d", r->type);
    for (size_t i = 0; i < f->n; i++) {
        if (reply_copy(r->element[i], f->outs[i], f->lens[i], f->names[i], err) != 0)
            return -1;
    }
    return 0;
}

int store_job_get_fields(struct store *s, const char *job_id, size_t n, const char *const *fields,
                         char *const *outs, const size_t *outlens, struct err *err)
{
    struct store_fields f = { n, fields, outs, outlens };
    char key[STORE_KEY_MAX];
    redisReply *r[1] = { NULL };
    int rc;

    if (make_key(s, key, "job", job_id, NULL, err) != 0 || store_ensure(s, err) != 0 ||
        append_hmget(s, key, &f, err) != 0 || pipeline_collect(s, 1, r, err) != 0)
        return -1;
    rc = copy_fields(r[0], &f, err);
    pipeline_free(1, r);
    return rc;
}

/* Queues HSET key f1 v1 ... (one command, so the fields land together). */
static int append_hset(struct store *s, const char *key, size_t n, const char *const *fields,
                       const char *const *values, struct err *err)
{
    const char *argv[2 + 2 * STORE_FIELDS_MAX];

    argv[0] = "HSET";
    argv[1] = key;
    for (size_t i = 0; i < n; i++) {
        argv[2 + 2 * i] = fields[i];
        argv[3 + 2 * i] = values[i];
    }
    if (redisAppendCommandArgv(s->ctx, (int)(2 + 2 * n), argv, NULL) != REDIS_OK) {
        mark_broken(s);
        return err_set(err, ERR_STORE_UNAVAILABLE, "redis: cannot queue HSET");
    }
    return 0;
}

int store_job_set_fields(struct store *s, const char *job_id, size_t n, const char *const *fields,
                         const char *const *values, int retention_seconds, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r[2] = { NULL, NULL };
    size_t ncmd = retention_seconds > 0 ? 2 : 1;

    if (n == 0 || n > STORE_FIELDS_MAX)
        return err_set(err, ERR_INTERNAL, "store_job_set_fields: %zu fields", n);
    if (make_key(s, key, "job", job_id, NULL, err) != 0 || store_ensure(s, err) != 0)
        return -1;
    /* HSET and the expiry refresh (the state lives retention after the last
     * step) go out together: one round trip. */
    if (append_hset(s, key, n, fields, values, err) != 0 ||
        (retention_seconds > 0 &&
         pipeline_append(s, err, "EXPIRE %s %d", key, retention_seconds) != 0))
        return -1;
    if (pipeline_collect(s, ncmd, r, err) != 0)
        return -1;
    pipeline_free(ncmd, r);
    return 0;
}

/* ---- per-service order ----------------------------------------------------- */

/* Raises svc:<server>:<id> to seq unless it already holds a higher one, so
 * a late replay can never move a service's high-water mark backwards. */
static const char raise_script[] =
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '-1') "
    "if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end "
    "redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1";

int store_service_seq_get(struct store *s, const char *server, long long service_id,
                          long long *seq, struct err *err)
{
    char key[STORE_KEY_MAX];
    *seq = -1;
    if (svc_key(s, key, server, service_id, false, err) != 0)
        return -1;
    redisReply *r = store_command(s, err, "GET %s", key);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_STRING) {
        char *end = NULL;
        long long v = strtoll(r->str, &end, 10);
        if (end && *end == '\0')
            *seq = v;
    }
    freeReplyObject(r);
    return 0;
}

int store_service_seq_raise(struct store *s, const char *server, long long service_id,
                            long long seq, int retention_seconds, struct err *err)
{
    char key[STORE_KEY_MAX];
    if (svc_key(s, key, server, service_id, false, err) != 0)
        return -1;
    redisReply *r = store_command(s, err, "EVAL %s 1 %s %lld %d", raise_script, key, seq,
                                  retention_seconds > 0 ? retention_seconds : 604800);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

/* Service lock, valued with the holder's job id: a job redelivered after its
 * worker died takes its own lock back at once instead of waiting for the
 * TTL, while any other job of the service keeps waiting. */
/* A lock whose holder already reached a terminal state is stale (its
 * release was lost, e.g. Redis restarted from a snapshot taken before the
 * DEL): taken over rather than waited out for its whole TTL. ARGV[3] is the
 * prefix of job keys. */
static const char svc_lock_script[] =
    "local v = redis.call('GET', KEYS[1]) "
    "local take = (not v) or v == ARGV[1] "
    "if not take then "
    "  local st = redis.call('HGET', ARGV[3] .. v, 'state') "
    "  take = st == 'succeeded' or st == 'failed' or st == 'skipped' "
    "end "
    "if take then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
    "return 0";
static const char svc_unlock_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/* The service lock's commands, queued (see svc_lock_script, svc_unlock_script). */
static int append_lock(struct store *s, const char *lock_key, const char *job_id, int ttl_ms,
                       struct err *err)
{
    char jobs[STORE_KEY_MAX];

    if (make_key(s, jobs, "job", "", NULL, err) != 0)
        return -1;
    return pipeline_append(s, err, "EVAL %s 1 %s %s %d %s", svc_lock_script, lock_key, job_id,
                           ttl_ms, jobs);
}

static int append_unlock(struct store *s, const char *lock_key, const char *job_id, struct err *err)
{
    return pipeline_append(s, err, "EVAL %s 1 %s %s", svc_unlock_script, lock_key, job_id);
}

int store_service_lock(struct store *s, const char *server, long long service_id,
                       const char *job_id, int ttl_ms, bool *acquired, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r[1] = { NULL };

    *acquired = false;
    if (svc_key(s, key, server, service_id, true, err) != 0 || store_ensure(s, err) != 0 ||
        append_lock(s, key, job_id, ttl_ms, err) != 0 || pipeline_collect(s, 1, r, err) != 0)
        return -1;
    *acquired = r[0]->type == REDIS_REPLY_INTEGER && r[0]->integer == 1;
    pipeline_free(1, r);
    return 0;
}

int store_service_unlock(struct store *s, const char *server, long long service_id,
                         const char *job_id, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r[1] = { NULL };

    if (svc_key(s, key, server, service_id, true, err) != 0 || store_ensure(s, err) != 0 ||
        append_unlock(s, key, job_id, err) != 0 || pipeline_collect(s, 1, r, err) != 0)
        return -1;
    pipeline_free(1, r);
    return 0;
}

/* ---- the gate's round trips ----------------------------------------------- */

int store_gate_read(struct store *s, const char *job_id, const char *server, long long service_id,
                    bool want_seq, const char *after, int lock_ttl_ms, struct store_gate_view *v,
                    struct err *err)
{
    /* One key buffer, reused: each command is formatted into the output
     * buffer as it is queued (this runs on 128 small thread stacks). */
    char key[STORE_KEY_MAX];
    redisReply *r[5] = { NULL, NULL, NULL, NULL, NULL };
    size_t n = 1, seq_at = 0, after_at = 0, lock_at = 0, steps_at = 0;
    int rc = 0;

    if (v->result == NULL || v->result_len == 0)
        return err_set(err, ERR_INTERNAL, "store_gate_read: no result buffer");
    v->state[0] = v->result[0] = v->after_state[0] = '\0';
    v->after_broken = false;
    v->high_seq = -1;
    v->locked = false;
    v->steps_read = false;
    if (make_key(s, key, "job", job_id, NULL, err) != 0 ||
        store_ensure(s, err) != 0)
        return -1;
    /* Everything the verdict may need, in one round trip; the result is
     * absent (nil, cheap) unless the job already succeeded. */
    if (pipeline_append(s, err, "HMGET %s state result", key) != 0)
        return -1;
    if (want_seq) {
        seq_at = n++;
        if (svc_key(s, key, server, service_id, false, err) != 0 ||
            pipeline_append(s, err, "GET %s", key) != 0)
            goto unsent;
    }
    if (after != NULL && after[0]) {
        after_at = n++;
        if (make_key(s, key, "job", after, NULL, err) != 0 ||
            pipeline_append(s, err, "HMGET %s state broken", key) != 0)
            goto unsent;
    }
    if (lock_ttl_ms > 0) {
        /* The service lock as store_service_lock takes it, last. */
        lock_at = n++;
        if (svc_key(s, key, server, service_id, true, err) != 0 ||
            append_lock(s, key, job_id, lock_ttl_ms, err) != 0)
            goto unsent;
        /* Behind the lock: when it was taken, nobody else writes these. */
        if (v->steps != NULL) {
            steps_at = n++;
            if (make_key(s, key, "job", job_id, NULL, err) != 0 || append_hmget(s, key, v->steps, err) != 0)
                goto unsent;
        }
    }
    if (pipeline_collect(s, n, r, err) != 0)
        return -1;
    if (lock_at)
        v->locked = r[lock_at]->type == REDIS_REPLY_INTEGER && r[lock_at]->integer == 1;
    if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements != 2)
        rc = err_set(err, ERR_STORE_UNAVAILABLE, "redis HMGET: unexpected reply type %d", r[0]->type);
    if (rc == 0)
        rc = reply_copy(r[0]->element[0], v->state, sizeof(v->state), "state", err);
    if (rc == 0)
        rc = reply_copy(r[0]->element[1], v->result, v->result_len, "result", err);
    if (rc == 0 && seq_at && r[seq_at]->type == REDIS_REPLY_STRING) {
        char *end = NULL;
        long long high = strtoll(r[seq_at]->str, &end, 10);

        if (end != NULL && *end == '\0')
            v->high_seq = high;
    }
    if (rc == 0 && after_at) {
        redisReply *a = r[after_at];
        if (a->type != REDIS_REPLY_ARRAY || a->elements != 2)
            rc = err_set(err, ERR_STORE_UNAVAILABLE, "redis HMGET: unexpected reply type %d", a->type);
        if (rc == 0)
            rc = reply_copy(a->element[0], v->after_state, sizeof(v->after_state), "state", err);
        if (rc == 0)
            v->after_broken = a->element[1]->type == REDIS_REPLY_STRING &&
                              strcmp(a->element[1]->str, "1") == 0;
    }
    if (rc == 0 && steps_at && v->locked) {
        rc = copy_fields(r[steps_at], v->steps, err);
        v->steps_read = rc == 0;
    }
    pipeline_free(n, r);
    if (rc != 0 && v->locked) {
        struct err ignored;
        /* Failing anyway: do not keep the service locked until the TTL. */
        if (store_service_unlock(s, server, service_id, job_id, &ignored) == 0)
            v->locked = false;
    }
    return rc;
unsent:
    /* Commands already queued were never sent: start over on a new connection. */
    mark_broken(s);
    return -1;
}

int store_job_finish(struct store *s, const char *job_id, const char *state, const char *result_json,
                     int retention_seconds, const char *server, long long service_id,
                     long long seq, bool broken, bool unlock, struct err *err)
{
    char jkey[STORE_KEY_MAX], skey[STORE_KEY_MAX], lkey[STORE_KEY_MAX];
    const char *fields[3], *values[3];
    redisReply *r[4] = { NULL, NULL, NULL, NULL };
    size_t nf = 0, n = 1;

    if (make_key(s, jkey, "job", job_id, NULL, err) != 0 ||
        (seq > 0 && svc_key(s, skey, server, service_id, false, err) != 0) ||
        (unlock && svc_key(s, lkey, server, service_id, true, err) != 0) ||
        store_ensure(s, err) != 0)
        return -1;
    /* One HSET: a reader that sees the terminal state also finds the result. */
    if (result_json != NULL) {
        fields[nf] = "result";
        values[nf++] = result_json;
    }
    fields[nf] = "state";
    values[nf++] = state;
    fields[nf] = "broken";
    values[nf++] = broken ? "1" : "0";
    if (append_hset(s, jkey, nf, fields, values, err) != 0)
        return -1;
    if (retention_seconds > 0) {
        n++;
        if (pipeline_append(s, err, "EXPIRE %s %d", jkey, retention_seconds) != 0)
            return -1;
    }
    if (seq > 0) {
        n++;
        if (pipeline_append(s, err, "EVAL %s 1 %s %lld %d", raise_script, skey, seq,
                            retention_seconds > 0 ? retention_seconds : 604800) != 0)
            return -1;
    }
    /* The service lock goes last: whoever takes it next sees this record. */
    if (unlock) {
        n++;
        if (append_unlock(s, lkey, job_id, err) != 0)
            return -1;
    }
    if (pipeline_collect(s, n, r, err) != 0)
        return -1;
    pipeline_free(n, r);
    return 0;
}
