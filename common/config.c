/* Configuration: one table of scalar keys, a libconfig file, then environment overrides. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libconfig.h>
#include <sodium.h>

/* Prefix of every environment override (12-factor, for pods). */
#define CONFIG_ENV_PREFIX "COMET_"
/* Enough for "COMET_" plus the longest key or key id. */
#define CONFIG_ENV_NAME_MAX 128
/* "path:line" or "env COMET_X": where a value came from, for error messages. */
#define CONFIG_WHERE_MAX 160
/* An HMAC key shorter than this is guessable; refuse it at start. */
#define CALLBACK_SECRET_MIN 16

/* Default for worker.name when unset: "<hostname>/<pid>". */
#define HOSTNAME_MAX 64

/* ---------------------------------------------------------------------- */
/* The key table                                                          */
/* ---------------------------------------------------------------------- */

enum cfg_type {
    CT_STRING,      /* plain text into a char array */
    CT_INT,         /* int, range checked */
    CT_BOOL,
    CT_LOG_LEVEL,   /* "debug|info|warn|error" -> enum log_level */
    CT_LOG_FORMAT,  /* "json|text" -> enum log_format */
    CT_SECRET,      /* text, never printed */
    CT_SECRET_FILE, /* a path whose content (mode 0600) becomes the target secret */
};

/* Extra check for a string value; fills why and returns -1 when bad. */
typedef int (*cfg_check_fn)(const char *s, char *why, size_t whylen);

struct cfg_key {
    const char *name;     /* "group.member" as written in the file */
    enum cfg_type type;
    size_t off;           /* field in struct config (the secret, for CT_SECRET_FILE) */
    size_t size;          /* its size in bytes */
    bool bytes;           /* secret is raw bytes with a length at len_off */
    size_t len_off;
    const char *def_str;  /* default of string and enum keys */
    long long def_int;    /* default of int and bool keys */
    long long min, max;   /* range of int keys, inclusive */
    cfg_check_fn check;
    const char *desc;     /* one line, for config_describe */
};

static int check_amqp_url(const char *s, char *why, size_t whylen);
static int check_http_url_or_empty(const char *s, char *why, size_t whylen);
static int check_not_empty(const char *s, char *why, size_t whylen);
static int check_retry_tiers(const char *s, char *why, size_t whylen);

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

#define KSTR(n, f, d, chk, desc) \
    { n, CT_STRING, FIELD(f), false, 0, d, 0, 0, 0, chk, desc }
#define KINT(n, f, d, lo, hi, desc) \
    { n, CT_INT, FIELD(f), false, 0, NULL, d, lo, hi, NULL, desc }
#define KSECRET(n, f, desc) \
    { n, CT_SECRET, FIELD(f), false, 0, "", 0, 0, 0, NULL, desc }
#define KSECRET_FILE(n, f, desc) \
    { n, CT_SECRET_FILE, FIELD(f), false, 0, NULL, 0, 0, 0, NULL, desc }

/* Order matters twice: it is the print order, and a *_file key comes after
 * its inline twin so that, within one source, the file wins. */
static const struct cfg_key cfg_keys[] = {
    { "log.level", CT_LOG_LEVEL, FIELD(log_level), false, 0, "info", 0, 0, 0, NULL,
      "minimum level logged: debug, info, warn, error" },
    { "log.format", CT_LOG_FORMAT, FIELD(log_format), false, 0, "json", 0, 0, 0, NULL,
      "json (one object per line, for shippers) or text (terminals)" },

    KSTR("amqp.url", amqp_url, "amqp://guest:guest@127.0.0.1:5672/", check_amqp_url,
         "RabbitMQ URL amqp[s]://user:pass@host:port/vhost (password masked when printed)"),
    KINT("amqp.prefetch", amqp_prefetch, 256, 1, 65535,
         "unacknowledged deliveries per process: bounds in-flight work"),
    KINT("amqp.heartbeat", amqp_heartbeat, 30, 0, 3600,
         "AMQP heartbeat in seconds; 0 turns it off"),
    KINT("amqp.confirm_timeout_ms", amqp_confirm_timeout_ms, 5000, 100, 600000,
         "how long a publish waits for the broker's confirm"),

    KSTR("redis.host", redis_host, "127.0.0.1", check_not_empty, "Redis host name or address"),
    KINT("redis.port", redis_port, 6379, 1, 65535, "Redis TCP port"),
    KSECRET("redis.password", redis_password, "Redis AUTH password (prefer redis.password_file)"),
    KSECRET_FILE("redis.password_file", redis_password,
                 "file holding the Redis AUTH password (mode 0600 or stricter)"),
    KINT("redis.db", redis_db, 0, 0, 65535, "Redis database number (SELECT)"),
    KSTR("redis.prefix", redis_prefix, "comet:", NULL, "namespace prepended to every Redis key"),

    KINT("worker.concurrency", worker_concurrency, 32, 1, 1024,
         "jobs run at once per worker process"),
    KINT("worker.max_body", worker_max_body, 65536, 1024, 16777216,
         "largest job body in bytes; larger jobs are dead-lettered as too_large"),
    KINT("worker.grace_seconds", worker_grace_seconds, 30, 0, 3600,
         "on SIGTERM, time given to in-flight jobs before exiting"),
    KSTR("worker.name", worker_name, "", NULL,
         "name in results and logs; empty = <hostname>/<pid>"),
    KINT("worker.job_retention_seconds", job_retention_seconds, 604800, 60, 31536000,
         "how long per-job state is kept in Redis"),
    KINT("retry.max_attempts", retry_max_attempts, 8, 1, 100,
         "attempts for a transiently failing job before it is dead-lettered"),
    KSTR("retry.tiers_ms", retry_tiers_ms, CONFIG_DEFAULT_RETRY_TIERS, check_retry_tiers,
         "retry delay queues in ms, ascending (comet.retry.<ms>ms each); backoff walks them"),

    KINT("comet.connect_timeout_ms", comet_connect_timeout_ms, 10000, 100, 600000,
         "TCP+TLS connect timeout towards a Comet Server"),
    KINT("comet.timeout_ms", comet_timeout_ms, 60000, 100, 3600000,
         "whole-request timeout towards a Comet Server"),

    KSTR("dispatcher.callback_url", callback_url, "", check_http_url_or_empty,
         "WHMCS callback endpoint (http or https) the dispatcher POSTs results to"),
    { "dispatcher.secret", CT_SECRET, FIELD(callback_secret), true,
      offsetof(struct config, callback_secret_len), "", 0, 0, 0, NULL,
      "callback HMAC key, the string's bytes (prefer dispatcher.secret_file)" },
    { "dispatcher.secret_file", CT_SECRET_FILE, FIELD(callback_secret), true,
      offsetof(struct config, callback_secret_len), NULL, 0, 0, 0, NULL,
      "file holding the callback HMAC key (mode 0600 or stricter)" },
    KINT("dispatcher.concurrency", dispatcher_concurrency, 16, 1, 1024,
         "callbacks in flight at once"),
    KINT("dispatcher.timeout_ms", dispatcher_timeout_ms, 10000, 100, 600000,
         "whole-request timeout of one callback"),

    KINT("metrics.port", metrics_port, 0, 0, 65535,
         "port of the /metrics /healthz /readyz listener; 0 = off"),
};

#define CFG_KEY_COUNT (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

/* Top-level lists, handled outside the scalar table. */
#define CFG_KEYS_LIST "keys"
#define CFG_SERVERS_LIST "servers"

/* ---------------------------------------------------------------------- */
/* Small helpers                                                          */
/* ---------------------------------------------------------------------- */

/* "amqp.url" -> "COMET_AMQP_URL"; any non-alphanumeric becomes '_'. */
static void env_name(const char *suffix, char out[CONFIG_ENV_NAME_MAX])
{
    size_t n = strlen(CONFIG_ENV_PREFIX);
    memcpy(out, CONFIG_ENV_PREFIX, n);
    for (const char *p = suffix; *p && n + 1 < CONFIG_ENV_NAME_MAX; p++) {
        unsigned char c = (unsigned char)*p;
        out[n++] = isalnum(c) ? (char)toupper(c) : '_';
    }
    out[n] = '\0';
}

static const struct cfg_key *cfg_key_find(const char *name)
{
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        if (strcmp(cfg_keys[i].name, name) == 0)
            return &cfg_keys[i];
    }
    return NULL;
}

/* True when some key of the table lives in this group ("amqp"). */
static bool cfg_group_known(const char *group)
{
    size_t n = strlen(group);
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        if (strncmp(cfg_keys[i].name, group, n) == 0 && cfg_keys[i].name[n] == '.')
            return true;
    }
    return false;
}

/* All load errors read "config: <where>: <reason>". */
static int cfg_fail(struct err *err, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cfg_fail(struct err *err, const char *where, const char *fmt, ...)
{
    char reason[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (n < 0)
        reason[0] = '\0';
    return err_set(err, ERR_BAD_FIELD, "config: %s: %s", where, reason);
}

static int copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

/* strtol with every check atoi skips: empty, trailing junk, overflow. */
static int parse_ll(const char *s, long long *out)
{
    if (s == NULL || *s == '\0')
        return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "true", "1", "yes", "on" };
    static const char *const no[] = { "false", "0", "no", "off" };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* Copies a secret into a buffer, then wipes and frees the source. */
static void secret_free(char *s)
{
    if (s == NULL)
        return;
    sodium_memzero(s, strlen(s));
    free(s);
}

/* ---------------------------------------------------------------------- */
/* URLs (parsed by libcurl's URL API, never by hand)                      */
/* ---------------------------------------------------------------------- */

/* Parses an http(s) URL with a host; no credentials, query or fragment
 * (they would leak into logs or never match). 0 or -1 with why. */
static int url_check_http(const char *s, char *why, size_t whylen)
{
    CURLU *u = curl_url();
    if (u == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    int rc = -1;
    char *scheme = NULL, *host = NULL, *part = NULL;
    if (curl_url_set(u, CURLUPART_URL, s, 0) != CURLUE_OK) {
        snprintf(why, whylen, "not a valid URL (expected http[s]://host[:port])");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        snprintf(why, whylen, "scheme must be http or https");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        snprintf(why, whylen, "URL has no host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK) {
        snprintf(why, whylen, "URL must not carry credentials");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &part, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK) {
        snprintf(why, whylen, "URL must not have a query or fragment");
        goto out;
    }
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(part);
    curl_url_cleanup(u);
    return rc;
}

static int check_http_url_or_empty(const char *s, char *why, size_t whylen)
{
    if (s[0] == '\0')
        return 0;
    return url_check_http(s, why, whylen);
}

/* "1000,5000,...": ascending positive ms, at most a day each, at most
 * CONFIG_MAX_RETRY_TIERS of them; "" is the default. */
static int parse_tiers(const char *spec, int tiers[CONFIG_MAX_RETRY_TIERS])
{
    const char *p = spec[0] ? spec : CONFIG_DEFAULT_RETRY_TIERS;
    int n = 0;

    while (*p) {
        char *end = NULL;
        long v = strtol(p, &end, 10);
        if (n == CONFIG_MAX_RETRY_TIERS || end == p || v <= 0 || v > 24L * 3600 * 1000 ||
            (n > 0 && v <= tiers[n - 1]))
            return -1; /* ascending, so the backoff grows */
        tiers[n++] = (int)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return n > 0 ? n : -1;
}

int config_retry_tiers(const struct config *cfg, int tiers[CONFIG_MAX_RETRY_TIERS])
{
    return parse_tiers(cfg->retry_tiers_ms, tiers);
}

static int check_retry_tiers(const char *s, char *why, size_t whylen)
{
    int tiers[CONFIG_MAX_RETRY_TIERS];

    if (parse_tiers(s, tiers) > 0)
        return 0;
    snprintf(why, whylen, "must be ascending milliseconds (1 to 86400000) separated by commas, "
             "at most %d, e.g. 1000,5000,30000", CONFIG_MAX_RETRY_TIERS);
    return -1;
}

static int check_not_empty(const char *s, char *why, size_t whylen)
{
    if (s[0] != '\0')
        return 0;
    snprintf(why, whylen, "must not be empty");
    return -1;
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

/* Canonical "scheme://host:port/path" (lower-case scheme and host, default
 * port filled in, trailing slashes dropped) into out. 0 or -1. */
static int url_normalise(const char *url, char *out, size_t outlen)
{
    CURLU *u = curl_url();
    if (u == NULL)
        return -1;
    int rc = -1;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;
    lower(scheme);
    lower(host);
    size_t plen = path ? strlen(path) : 0;
    while (plen > 0 && path[plen - 1] == '/')
        plen--;
    int n = snprintf(out, outlen, "%s://%s:%s%.*s", scheme, host, port, (int)plen,
                     path ? path : "");
    if (n >= 0 && (size_t)n < outlen)
        rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_url_cleanup(u);
    return rc;
}

static int check_amqp_url(const char *s, char *why, size_t whylen)
{
    if (strncmp(s, "amqp://", 7) != 0 && strncmp(s, "amqps://", 8) != 0) {
        snprintf(why, whylen, "must start with amqp:// or amqps://");
        return -1;
    }
    CURLU *u = curl_url();
    if (u == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    int rc = 0;
    /* The value itself is never echoed: it carries the broker password. */
    if (curl_url_set(u, CURLUPART_URL, s, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        snprintf(why, whylen, "not a valid URL (expected amqp[s]://user:pass@host:port/vhost)");
        rc = -1;
    }
    curl_url_cleanup(u);
    return rc;
}

/* amqp://user:****@host:port/vhost for printing. */
static void amqp_url_masked(const char *url, char *out, size_t outlen)
{
    snprintf(out, outlen, "(unparseable, hidden)");
    CURLU *u = curl_url();
    if (u == NULL)
        return;
    char *pw = NULL, *full = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_PASSWORD, &pw, 0) == CURLUE_OK) {
        sodium_memzero(pw, strlen(pw));
        if (curl_url_set(u, CURLUPART_PASSWORD, "****", 0) != CURLUE_OK)
            goto out;
    }
    if (curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK)
        snprintf(out, outlen, "%s", full);
out:
    curl_free(pw);
    curl_free(full);
    curl_url_cleanup(u);
}

/* ---------------------------------------------------------------------- */
/* Applying one scalar value                                              */
/* ---------------------------------------------------------------------- */

static void *field_ptr(struct config *cfg, const struct cfg_key *k)
{
    return (char *)cfg + k->off;
}

static int apply_int(struct config *cfg, const struct cfg_key *k, long long v, const char *where,
                     struct err *err)
{
    if (v < k->min || v > k->max)
        return cfg_fail(err, where, "key '%s': must be between %lld and %lld", k->name, k->min,
                        k->max);
    *(int *)field_ptr(cfg, k) = (int)v;
    return 0;
}

/* Stores a secret given as text (inline value or a file's content). */
static int store_secret(struct config *cfg, const struct cfg_key *k, const char *s,
                        const char *where, struct err *err)
{
    size_t n = strlen(s);
    if (k->bytes) {
        if (n > k->size)
            return cfg_fail(err, where, "key '%s': longer than %zu bytes", k->name, k->size);
        if (n > 0 && n < CALLBACK_SECRET_MIN)
            return cfg_fail(err, where, "key '%s': shorter than %d bytes", k->name,
                            CALLBACK_SECRET_MIN);
        unsigned char *dst = field_ptr(cfg, k);
        sodium_memzero(dst, k->size);
        memcpy(dst, s, n);
        *(size_t *)((char *)cfg + k->len_off) = n;
        return 0;
    }
    char *dst = field_ptr(cfg, k);
    sodium_memzero(dst, k->size);
    if (copy_str(dst, k->size, s) != 0)
        return cfg_fail(err, where, "key '%s': longer than %zu characters", k->name, k->size - 1);
    return 0;
}

/* Applies a textual value (every env value, and file strings) to key k. */
static int apply_text(struct config *cfg, const struct cfg_key *k, const char *s,
                      const char *where, struct err *err)
{
    char why[160];
    switch (k->type) {
    case CT_INT: {
        long long v;
        if (parse_ll(s, &v) != 0)
            return cfg_fail(err, where, "key '%s': not an integer", k->name);
        return apply_int(cfg, k, v, where, err);
    }
    case CT_BOOL: {
        bool b;
        if (parse_bool(s, &b) != 0)
            return cfg_fail(err, where, "key '%s': must be true or false", k->name);
        *(bool *)field_ptr(cfg, k) = b;
        return 0;
    }
    case CT_LOG_LEVEL:
        if (log_level_parse(s, (enum log_level *)field_ptr(cfg, k)) != 0)
            return cfg_fail(err, where, "key '%s': '%.32s' is not debug, info, warn or error",
                            k->name, s);
        return 0;
    case CT_LOG_FORMAT:
        if (log_format_parse(s, (enum log_format *)field_ptr(cfg, k)) != 0)
            return cfg_fail(err, where, "key '%s': '%.32s' is not json or text", k->name, s);
        return 0;
    case CT_STRING:
        if (k->check != NULL && k->check(s, why, sizeof(why)) != 0)
            return cfg_fail(err, where, "key '%s': %s", k->name, why);
        if (copy_str(field_ptr(cfg, k), k->size, s) != 0)
            return cfg_fail(err, where, "key '%s': longer than %zu characters", k->name,
                            k->size - 1);
        return 0;
    case CT_SECRET:
        return store_secret(cfg, k, s, where, err);
    case CT_SECRET_FILE: {
        struct err ferr = { 0 };
        char *secret = secret_file_read(s, &ferr);
        if (secret == NULL)
            return cfg_fail(err, where, "key '%s': %s", k->name, ferr.msg);
        int rc = store_secret(cfg, k, secret, where, err);
        secret_free(secret);
        return rc;
    }
    }
    return cfg_fail(err, where, "key '%s': unsupported type", k->name);
}

static void cfg_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        struct err ignored;
        switch (k->type) {
        case CT_INT:
            *(int *)field_ptr(cfg, k) = (int)k->def_int;
            break;
        case CT_BOOL:
            *(bool *)field_ptr(cfg, k) = k->def_int != 0;
            break;
        case CT_SECRET_FILE:
            break;
        default:
            /* The defaults are constants of this file; they always apply. */
            (void)apply_text(cfg, k, k->def_str, "default", &ignored);
            break;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Loading                                                                */
/* ---------------------------------------------------------------------- */

/* One entry of the key list before its secret is read. */
struct key_spec {
    char id[KEY_ID_MAX];
    char file[CONFIG_STR];           /* "" = none */
    const char *value;               /* base64, borrowed from libconfig; NULL = none */
    char where[CONFIG_WHERE_MAX];
};

struct load_ctx {
    struct config *cfg;
    const char *path;
    struct err *err;
    struct key_spec specs[KEYRING_MAX];
    size_t nspecs;
    char server_where[CONFIG_MAX_SERVERS][CONFIG_WHERE_MAX]; /* where each entry was defined */
};

static void where_setting(const struct load_ctx *ctx, const config_setting_t *s,
                          char out[CONFIG_WHERE_MAX])
{
    snprintf(out, CONFIG_WHERE_MAX, "%s:%d", ctx->path, config_setting_source_line(s));
}

/* Reads a scalar of a file into key k, checking its libconfig type. */
static int load_scalar(struct load_ctx *ctx, const struct cfg_key *k, const config_setting_t *s)
{
    char where[CONFIG_WHERE_MAX];
    where_setting(ctx, s, where);
    int t = config_setting_type(s);
    switch (k->type) {
    case CT_INT:
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            return cfg_fail(ctx->err, where, "key '%s': must be an integer", k->name);
        return apply_int(ctx->cfg, k, config_setting_get_int64(s), where, ctx->err);
    case CT_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            return cfg_fail(ctx->err, where, "key '%s': must be true or false", k->name);
        *(bool *)field_ptr(ctx->cfg, k) = config_setting_get_bool(s) != 0;
        return 0;
    default:
        if (t != CONFIG_TYPE_STRING)
            return cfg_fail(ctx->err, where, "key '%s': must be a string", k->name);
        return apply_text(ctx->cfg, k, config_setting_get_string(s), where, ctx->err);
    }
}

static int load_group(struct load_ctx *ctx, const config_setting_t *group)
{
    const char *gname = config_setting_name(group);
    char where[CONFIG_WHERE_MAX];
    where_setting(ctx, group, where);
    if (config_setting_type(group) != CONFIG_TYPE_GROUP)
        return cfg_fail(ctx->err, where, "'%s' must be a group: %s = { ... };", gname, gname);
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        char full[CONFIG_ENV_NAME_MAX];
        snprintf(full, sizeof(full), "%s.%s", gname, config_setting_name(s));
        const struct cfg_key *k = cfg_key_find(full);
        if (k == NULL) {
            where_setting(ctx, s, where);
            return cfg_fail(ctx->err, where, "unknown key '%s'", full);
        }
        if (load_scalar(ctx, k, s) != 0)
            return -1;
    }
    return 0;
}

/* A string member of a list entry; NULL when absent, error when mistyped. */
static int member_string(struct load_ctx *ctx, const config_setting_t *entry, const char *name,
                         const char *what, const char **out)
{
    *out = NULL;
    const config_setting_t *s = config_setting_get_member(entry, name);
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_STRING) {
        char where[CONFIG_WHERE_MAX];
        where_setting(ctx, s, where);
        return cfg_fail(ctx->err, where, "%s '%s' must be a string", what, name);
    }
    *out = config_setting_get_string(s);
    return 0;
}

/* Every member of a list entry must be one of the allowed names. */
static int members_known(struct load_ctx *ctx, const config_setting_t *entry, const char *what,
                         const char *const *allowed, size_t nallowed)
{
    int n = config_setting_length(entry);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(entry, (unsigned)i);
        const char *name = config_setting_name(s);
        bool ok = false;
        for (size_t j = 0; j < nallowed && !ok; j++)
            ok = strcmp(name, allowed[j]) == 0;
        if (!ok) {
            char where[CONFIG_WHERE_MAX];
            where_setting(ctx, s, where);
            return cfg_fail(ctx->err, where, "unknown key '%s' in %s", name, what);
        }
    }
    return 0;
}

static int key_id_valid(const char *id)
{
    if (id[0] == '\0' || strlen(id) >= KEY_ID_MAX)
        return -1;
    for (const char *p = id; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            return -1;
    }
    return 0;
}

static int spec_add(struct load_ctx *ctx, const char *id, const char *file, const char *value,
                    const char *where)
{
    if (key_id_valid(id) != 0)
        return cfg_fail(ctx->err, where,
                        "key id '%.64s' must be 1-%d characters of A-Z a-z 0-9 - _ .", id,
                        KEY_ID_MAX - 1);
    for (size_t i = 0; i < ctx->nspecs; i++) {
        if (strcmp(ctx->specs[i].id, id) == 0)
            return cfg_fail(ctx->err, where, "key id '%s' listed twice", id);
    }
    if (ctx->nspecs >= KEYRING_MAX)
        return cfg_fail(ctx->err, where, "more than %d keys", KEYRING_MAX);
    struct key_spec *sp = &ctx->specs[ctx->nspecs];
    memset(sp, 0, sizeof(*sp));
    snprintf(sp->id, sizeof(sp->id), "%s", id);
    if (file != NULL && copy_str(sp->file, sizeof(sp->file), file) != 0)
        return cfg_fail(ctx->err, where, "key '%s': file path too long", id);
    sp->value = value;
    snprintf(sp->where, sizeof(sp->where), "%s", where);
    ctx->nspecs++;
    return 0;
}

static int load_keys(struct load_ctx *ctx, const config_setting_t *list)
{
    static const char *const allowed[] = { "id", "file", "value" };
    char where[CONFIG_WHERE_MAX];
    where_setting(ctx, list, where);
    if (config_setting_type(list) != CONFIG_TYPE_LIST)
        return cfg_fail(ctx->err, where, "'keys' must be a list: keys = ( { id = ...; file = ...; } );");
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        where_setting(ctx, e, where);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP)
            return cfg_fail(ctx->err, where, "keys[%d] must be a group { id = ...; ... }", i);
        if (members_known(ctx, e, "keys", allowed, 3) != 0)
            return -1;
        const char *id, *file, *value;
        if (member_string(ctx, e, "id", "keys", &id) != 0 ||
            member_string(ctx, e, "file", "keys", &file) != 0 ||
            member_string(ctx, e, "value", "keys", &value) != 0)
            return -1;
        if (id == NULL)
            return cfg_fail(ctx->err, where, "keys[%d] has no id", i);
        if (file != NULL && value != NULL)
            return cfg_fail(ctx->err, where, "key '%s': give file or value, not both", id);
        if (spec_add(ctx, id, file, value, where) != 0)
            return -1;
    }
    return 0;
}

/* Checks a server entry once all its sources were applied. */
static int server_validate(struct load_ctx *ctx, const struct config_server *sv, const char *where)
{
    char why[160];
    if (url_check_http(sv->url, why, sizeof(why)) != 0)
        return cfg_fail(ctx->err, where, "server url: %s", why);
    if (sv->username[0] == '\0')
        return cfg_fail(ctx->err, where, "server '%s': no username", sv->url);
    if (sv->password[0] == '\0')
        return cfg_fail(ctx->err, where, "server '%s': no password (set password_file)", sv->url);
    if (sv->ca_file[0] != '\0' && access(sv->ca_file, R_OK) != 0)
        return cfg_fail(ctx->err, where, "server '%s': ca_file %s: %s", sv->url, sv->ca_file,
                        strerror(errno));
    return 0;
}

/* Index of the server with the same normalised URL, or -1. */
static int server_index(const struct config *cfg, const char *url)
{
    const struct config_server *sv = config_find_server(cfg, url);
    return sv == NULL ? -1 : (int)(sv - cfg->servers);
}

/* Reads a password file into a server entry. */
static int server_password_file(struct load_ctx *ctx, struct config_server *sv, const char *path,
                                const char *where)
{
    struct err ferr = { 0 };
    char *pw = secret_file_read(path, &ferr);
    if (pw == NULL)
        return cfg_fail(ctx->err, where, "server '%s': password_file: %s", sv->url, ferr.msg);
    int rc = 0;
    sodium_memzero(sv->password, sizeof(sv->password));
    if (copy_str(sv->password, sizeof(sv->password), pw) != 0)
        rc = cfg_fail(ctx->err, where, "server '%s': password longer than %zu characters",
                      sv->url, sizeof(sv->password) - 1);
    secret_free(pw);
    return rc;
}

static int load_servers(struct load_ctx *ctx, const config_setting_t *list)
{
    static const char *const allowed[] = { "url", "username", "password", "password_file",
                                           "ca_file", "insecure" };
    struct config *cfg = ctx->cfg;
    char where[CONFIG_WHERE_MAX];
    where_setting(ctx, list, where);
    if (config_setting_type(list) != CONFIG_TYPE_LIST)
        return cfg_fail(ctx->err, where, "'servers' must be a list: servers = ( { url = ...; } );");
    int n = config_setting_length(list);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        where_setting(ctx, e, where);
        if (config_setting_type(e) != CONFIG_TYPE_GROUP)
            return cfg_fail(ctx->err, where, "servers[%d] must be a group { url = ...; ... }", i);
        if (members_known(ctx, e, "servers", allowed, sizeof(allowed) / sizeof(allowed[0])) != 0)
            return -1;
        if (cfg->server_count >= CONFIG_MAX_SERVERS)
            return cfg_fail(ctx->err, where, "more than %d servers", CONFIG_MAX_SERVERS);
        const char *url, *user, *pw, *pwfile, *ca;
        if (member_string(ctx, e, "url", "servers", &url) != 0 ||
            member_string(ctx, e, "username", "servers", &user) != 0 ||
            member_string(ctx, e, "password", "servers", &pw) != 0 ||
            member_string(ctx, e, "password_file", "servers", &pwfile) != 0 ||
            member_string(ctx, e, "ca_file", "servers", &ca) != 0)
            return -1;
        if (url == NULL)
            return cfg_fail(ctx->err, where, "servers[%d] has no url", i);
        if (pw != NULL && pwfile != NULL)
            return cfg_fail(ctx->err, where, "servers[%d]: give password or password_file, not both", i);
        char why[160];
        if (url_check_http(url, why, sizeof(why)) != 0)
            return cfg_fail(ctx->err, where, "servers[%d] url: %s", i, why);
        if (server_index(cfg, url) >= 0)
            return cfg_fail(ctx->err, where, "servers[%d]: url listed twice", i);

        struct config_server *sv = &cfg->servers[cfg->server_count];
        memset(sv, 0, sizeof(*sv));
        if (copy_str(sv->url, sizeof(sv->url), url) != 0 ||
            (user != NULL && copy_str(sv->username, sizeof(sv->username), user) != 0) ||
            (pw != NULL && copy_str(sv->password, sizeof(sv->password), pw) != 0) ||
            (ca != NULL && copy_str(sv->ca_file, sizeof(sv->ca_file), ca) != 0))
            return cfg_fail(ctx->err, where, "servers[%d]: a value is too long", i);
        const config_setting_t *ins = config_setting_get_member(e, "insecure");
        if (ins != NULL) {
            if (config_setting_type(ins) != CONFIG_TYPE_BOOL) {
                where_setting(ctx, ins, where);
                return cfg_fail(ctx->err, where, "servers 'insecure' must be true or false");
            }
            sv->insecure = config_setting_get_bool(ins) != 0;
        }
        snprintf(ctx->server_where[cfg->server_count], CONFIG_WHERE_MAX, "%s", where);
        /* Counted before reading the password so config_clear wipes it on failure. */
        cfg->server_count++;
        if (pwfile != NULL && server_password_file(ctx, sv, pwfile, where) != 0)
            return -1;
    }
    return 0;
}

static int load_file(struct load_ctx *ctx, config_t *lc)
{
    FILE *fp = fopen(ctx->path, "r");
    if (fp == NULL)
        return err_set(ctx->err, ERR_BAD_FIELD, "config: %s: cannot open: %s", ctx->path,
                       strerror(errno));
    int ok = config_read(lc, fp);
    fclose(fp);
    if (ok != CONFIG_TRUE)
        return err_set(ctx->err, ERR_BAD_FIELD, "config: %s:%d: %s", ctx->path,
                       config_error_line(lc), config_error_text(lc));

    const config_setting_t *root = config_root_setting(lc);
    int n = config_setting_length(root);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        const char *name = config_setting_name(s);
        int rc;
        if (strcmp(name, CFG_KEYS_LIST) == 0) {
            rc = load_keys(ctx, s);
        } else if (strcmp(name, CFG_SERVERS_LIST) == 0) {
            rc = load_servers(ctx, s);
        } else if (cfg_group_known(name)) {
            rc = load_group(ctx, s);
        } else {
            char where[CONFIG_WHERE_MAX];
            where_setting(ctx, s, where);
            rc = cfg_fail(ctx->err, where, "unknown key '%s'", name);
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int load_env_scalars(struct load_ctx *ctx)
{
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        char name[CONFIG_ENV_NAME_MAX], where[CONFIG_WHERE_MAX];
        env_name(k->name, name);
        const char *v = getenv(name);
        if (v == NULL)
            continue;
        snprintf(where, sizeof(where), "env %s", name);
        if (apply_text(ctx->cfg, k, v, where, ctx->err) != 0)
            return -1;
    }
    return 0;
}

/* COMET_KEYS="k2026=/path,k2025" replaces the file's list; an id without
 * "=file" takes its secret from COMET_KEY_<ID>. */
static int load_env_keys(struct load_ctx *ctx)
{
    const char *v = getenv(CONFIG_ENV_PREFIX "KEYS");
    if (v == NULL)
        return 0;
    const char *where = "env " CONFIG_ENV_PREFIX "KEYS";
    ctx->nspecs = 0;
    char *copy = strdup(v);
    if (copy == NULL)
        return err_set(ctx->err, ERR_INTERNAL, "config: out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*tok == '\0')
            continue;
        char *eq = strchr(tok, '=');
        if (eq != NULL)
            *eq = '\0';
        rc = spec_add(ctx, tok, eq != NULL ? eq + 1 : NULL, NULL, where);
    }
    free(copy);
    return rc;
}

/* Reads every key spec into the key ring, COMET_KEY_<ID> first. */
static int keys_resolve(struct load_ctx *ctx)
{
    struct config *cfg = ctx->cfg;
    size_t used = 0;
    for (size_t i = 0; i < ctx->nspecs; i++) {
        const struct key_spec *sp = &ctx->specs[i];
        char suffix[KEY_ID_MAX + 8], name[CONFIG_ENV_NAME_MAX];
        snprintf(suffix, sizeof(suffix), "KEY_%s", sp->id);
        env_name(suffix, name);
        const char *envval = getenv(name);
        struct err kerr = { 0 };
        int rc;
        if (envval != NULL)
            rc = keyring_add_b64(&cfg->keys, sp->id, envval, &kerr);
        else if (sp->value != NULL)
            rc = keyring_add_b64(&cfg->keys, sp->id, sp->value, &kerr);
        else if (sp->file[0] != '\0')
            rc = keyring_add_file(&cfg->keys, sp->id, sp->file, &kerr);
        else
            return cfg_fail(ctx->err, sp->where, "key '%s': no file or value (or set %s)", sp->id,
                            name);
        if (rc != 0)
            return cfg_fail(ctx->err, envval != NULL ? name : sp->where, "key '%s': %s", sp->id,
                            kerr.msg);
        int n = snprintf(cfg->key_ids + used, sizeof(cfg->key_ids) - used, "%s%s",
                         i > 0 ? "," : "", sp->id);
        if (n > 0 && used + (size_t)n < sizeof(cfg->key_ids))
            used += (size_t)n;
    }
    return 0;
}

/* COMET_SERVER_URL (+ _USERNAME, _PASSWORD or _PASSWORD_FILE, _CA_FILE,
 * _INSECURE) defines one server, or overrides the fields it names on the
 * file's entry with the same URL. */
static int load_env_server(struct load_ctx *ctx)
{
    static const char *const others[] = { "USERNAME", "PASSWORD", "PASSWORD_FILE", "CA_FILE",
                                          "INSECURE" };
    struct config *cfg = ctx->cfg;
    const char *url = getenv(CONFIG_ENV_PREFIX "SERVER_URL");
    if (url == NULL) {
        for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
            char name[CONFIG_ENV_NAME_MAX];
            snprintf(name, sizeof(name), CONFIG_ENV_PREFIX "SERVER_%s", others[i]);
            if (getenv(name) != NULL)
                return cfg_fail(ctx->err, "env", "%s is set but COMET_SERVER_URL is not", name);
        }
        return 0;
    }
    const char *where = "env " CONFIG_ENV_PREFIX "SERVER_URL";
    char why[160];
    if (url_check_http(url, why, sizeof(why)) != 0)
        return cfg_fail(ctx->err, where, "%s", why);

    int idx = server_index(cfg, url);
    if (idx < 0) {
        if (cfg->server_count >= CONFIG_MAX_SERVERS)
            return cfg_fail(ctx->err, where, "more than %d servers", CONFIG_MAX_SERVERS);
        idx = cfg->server_count++;
        memset(&cfg->servers[idx], 0, sizeof(cfg->servers[idx]));
    }
    snprintf(ctx->server_where[idx], CONFIG_WHERE_MAX, "%s", where);
    struct config_server *sv = &cfg->servers[idx];
    if (copy_str(sv->url, sizeof(sv->url), url) != 0)
        return cfg_fail(ctx->err, where, "URL too long");

    const char *v = getenv(CONFIG_ENV_PREFIX "SERVER_USERNAME");
    if (v != NULL && copy_str(sv->username, sizeof(sv->username), v) != 0)
        return cfg_fail(ctx->err, "env COMET_SERVER_USERNAME", "too long");
    const char *pw = getenv(CONFIG_ENV_PREFIX "SERVER_PASSWORD");
    const char *pwfile = getenv(CONFIG_ENV_PREFIX "SERVER_PASSWORD_FILE");
    if (pw != NULL && pwfile != NULL)
        return cfg_fail(ctx->err, "env", "set COMET_SERVER_PASSWORD or COMET_SERVER_PASSWORD_FILE, not both");
    if (pw != NULL) {
        sodium_memzero(sv->password, sizeof(sv->password));
        if (copy_str(sv->password, sizeof(sv->password), pw) != 0)
            return cfg_fail(ctx->err, "env COMET_SERVER_PASSWORD", "too long");
    }
    if (pwfile != NULL &&
        server_password_file(ctx, sv, pwfile, "env COMET_SERVER_PASSWORD_FILE") != 0)
        return -1;
    v = getenv(CONFIG_ENV_PREFIX "SERVER_CA_FILE");
    if (v != NULL && copy_str(sv->ca_file, sizeof(sv->ca_file), v) != 0)
        return cfg_fail(ctx->err, "env COMET_SERVER_CA_FILE", "too long");
    v = getenv(CONFIG_ENV_PREFIX "SERVER_INSECURE");
    if (v != NULL && parse_bool(v, &sv->insecure) != 0)
        return cfg_fail(ctx->err, "env COMET_SERVER_INSECURE", "must be true or false");
    return 0;
}

static int servers_validate(struct load_ctx *ctx)
{
    for (int i = 0; i < ctx->cfg->server_count; i++) {
        if (server_validate(ctx, &ctx->cfg->servers[i], ctx->server_where[i]) != 0)
            return -1;
    }
    return 0;
}

static void worker_name_default(struct config *cfg)
{
    if (cfg->worker_name[0] != '\0')
        return;
    char host[HOSTNAME_MAX];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    snprintf(cfg->worker_name, sizeof(cfg->worker_name), "%s/%ld", host, (long)getpid());
}

int config_load(struct config *cfg, const char *path, struct err *err)
{
    struct load_ctx ctx = { .cfg = cfg, .path = path, .err = err };
    config_t lc;
    config_init(&lc);
    cfg_defaults(cfg);

    int rc = -1;
    if (path != NULL && load_file(&ctx, &lc) != 0)
        goto out;
    if (load_env_scalars(&ctx) != 0 || load_env_keys(&ctx) != 0 || load_env_server(&ctx) != 0)
        goto out;
    if (servers_validate(&ctx) != 0 || keys_resolve(&ctx) != 0)
        goto out;
    worker_name_default(cfg);
    rc = 0;
out:
    /* Key values borrowed from lc are read by keys_resolve, so lc lives to here. */
    config_destroy(&lc);
    if (rc != 0)
        config_clear(cfg);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Lookup, printing, clearing                                             */
/* ---------------------------------------------------------------------- */

const struct config_server *config_find_server(const struct config *cfg, const char *url)
{
    char want[CONFIG_STR + 64], have[CONFIG_STR + 64];
    if (cfg == NULL || url == NULL || url_normalise(url, want, sizeof(want)) != 0)
        return NULL;
    for (int i = 0; i < cfg->server_count; i++) {
        if (url_normalise(cfg->servers[i].url, have, sizeof(have)) == 0 && strcmp(want, have) == 0)
            return &cfg->servers[i];
    }
    return NULL;
}

#define MASK "********"

static void print_key(const struct config *cfg, const struct cfg_key *k, FILE *out)
{
    char env[CONFIG_ENV_NAME_MAX];
    env_name(k->name, env);
    const void *p = (const char *)cfg + k->off;
    switch (k->type) {
    case CT_INT:
        fprintf(out, "%s = %d", k->name, *(const int *)p);
        break;
    case CT_BOOL:
        fprintf(out, "%s = %s", k->name, *(const bool *)p ? "true" : "false");
        break;
    case CT_LOG_LEVEL: {
        static const char *const names[] = { "debug", "info", "warn", "error" };
        unsigned v = (unsigned)*(const enum log_level *)p;
        fprintf(out, "%s = \"%s\"", k->name, v <= LOGL_ERROR ? names[v] : "?");
        break;
    }
    case CT_LOG_FORMAT:
        fprintf(out, "%s = \"%s\"", k->name,
                *(const enum log_format *)p == LOG_FORMAT_JSON ? "json" : "text");
        break;
    case CT_STRING:
        if (k->check == check_amqp_url) {
            char masked[CONFIG_STR + 16];
            amqp_url_masked(p, masked, sizeof(masked));
            fprintf(out, "%s = \"%s\"", k->name, masked);
        } else {
            fprintf(out, "%s = \"%s\"", k->name, (const char *)p);
        }
        break;
    case CT_SECRET: {
        bool set = k->bytes ? *(const size_t *)((const char *)cfg + k->len_off) > 0
                            : ((const char *)p)[0] != '\0';
        fprintf(out, "%s = %s", k->name, set ? MASK : "(unset)");
        break;
    }
    case CT_SECRET_FILE:
        /* The path is not kept; the secret it filled prints under its twin. */
        return;
    }
    fprintf(out, "  # %s\n", env);
}

void config_print(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < CFG_KEY_COUNT; i++)
        print_key(cfg, &cfg_keys[i], out);
    fprintf(out, "keys = \"%s\"  # active: %s; COMET_KEYS, COMET_KEY_<ID>\n", cfg->key_ids,
            cfg->keys.count > 0 ? cfg->keys.keys[0].id : "(none)");
    for (int i = 0; i < cfg->server_count; i++) {
        const struct config_server *sv = &cfg->servers[i];
        fprintf(out,
                "servers[%d] = { url = \"%s\"; username = \"%s\"; password = %s; "
                "ca_file = \"%s\"; insecure = %s; }  # COMET_SERVER_*\n",
                i, sv->url, sv->username, sv->password[0] ? MASK : "(unset)", sv->ca_file,
                sv->insecure ? "true" : "false");
    }
    if (cfg->server_count == 0)
        fprintf(out, "servers = ()  # COMET_SERVER_*\n");
}

void config_describe(FILE *out)
{
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        char env[CONFIG_ENV_NAME_MAX];
        env_name(k->name, env);
        fprintf(out, "%-30s %-38s ", k->name, env);
        switch (k->type) {
        case CT_INT:
            fprintf(out, "default %lld (%lld..%lld)", k->def_int, k->min, k->max);
            break;
        case CT_BOOL:
            fprintf(out, "default %s", k->def_int ? "true" : "false");
            break;
        case CT_SECRET:
        case CT_SECRET_FILE:
            fprintf(out, "secret");
            break;
        default:
            fprintf(out, "default \"%s\"", k->def_str);
            break;
        }
        fprintf(out, ": %s\n", k->desc);
    }
    fprintf(out, "%-30s %-38s list of { id; file | value }, first is active\n", "keys",
            "COMET_KEYS=id=file,id2 COMET_KEY_<ID>");
    fprintf(out, "%-30s %-38s list of { url; username; password_file; ca_file; insecure }\n",
            "servers", "COMET_SERVER_URL, COMET_SERVER_*");
}

void config_clear(struct config *cfg)
{
    if (cfg == NULL)
        return;
    keyring_clear(&cfg->keys);
    /* The whole struct: passwords, the AMQP URL's password, the callback key. */
    sodium_memzero(cfg, sizeof(*cfg));
}
