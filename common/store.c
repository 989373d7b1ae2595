/* Redis store over a synchronous hiredis context: policy cache, locks and
 * per-job state, every key under the configured prefix. */
#include "store.h"

#include <hiredis/hiredis.h>
#include <sodium.h>
#include <stdarg.h>
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
    if (s->ctx != NULL && !s->broken && s->ctx->err == 0)
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
        s->broken = true;
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

/* ---- policy cache ------------------------------------------------------ */

int store_policy_known(struct store *s, const char *server, const char *policy_id,
                       bool *known, struct err *err)
{
    char key[STORE_KEY_MAX];
    redisReply *r;

    *known = false;
    if (make_key(s, key, "policy", server, policy_id, err) != 0)
        return -1;
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
    char key[STORE_KEY_MAX];
    redisReply *r;

    if (make_key(s, key, "job", job_id, NULL, err) != 0)
        return -1;
    r = store_command(s, err, "HSET %s %s %s", key, field, value);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    if (retention_seconds <= 0)
        return 0;
    /* Refreshed on every write: the state lives retention after the last step. */
    r = store_command(s, err, "EXPIRE %s %d", key, retention_seconds);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
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
    char key[STORE_KEY_MAX], sid[32];
    snprintf(sid, sizeof(sid), "%lld", service_id);
    *seq = -1;
    if (make_key(s, key, "svc", server, sid, err) != 0)
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
    char key[STORE_KEY_MAX], sid[32];
    snprintf(sid, sizeof(sid), "%lld", service_id);
    if (make_key(s, key, "svc", server, sid, err) != 0)
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
static const char svc_lock_script[] =
    "local v = redis.call('GET', KEYS[1]) "
    "if (not v) or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
    "return 0";
static const char svc_unlock_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

int store_service_lock(struct store *s, const char *server, long long service_id,
                       const char *job_id, int ttl_ms, bool *acquired, struct err *err)
{
    char key[STORE_KEY_MAX], sid[48];
    snprintf(sid, sizeof(sid), "%lld:lock", service_id);
    *acquired = false;
    if (make_key(s, key, "svc", server, sid, err) != 0)
        return -1;
    redisReply *r = store_command(s, err, "EVAL %s 1 %s %s %d", svc_lock_script, key, job_id, ttl_ms);
    if (r == NULL)
        return -1;
    *acquired = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return 0;
}

int store_service_unlock(struct store *s, const char *server, long long service_id,
                         const char *job_id, struct err *err)
{
    char key[STORE_KEY_MAX], sid[48];
    snprintf(sid, sizeof(sid), "%lld:lock", service_id);
    if (make_key(s, key, "svc", server, sid, err) != 0)
        return -1;
    redisReply *r = store_command(s, err, "EVAL %s 1 %s %s", svc_unlock_script, key, job_id);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}
