/* Configuration: one libconfig file (-c path) plus an environment override
 * for every scalar key (COMET_ + key upper-cased, dots to underscores:
 * amqp.url -> COMET_AMQP_URL). Loaded from one table of keys (config.c);
 * `--check-config` prints the effective values with secrets masked. */
#ifndef COMET_CONFIG_H
#define COMET_CONFIG_H

#include <stdbool.h>
#include <stdio.h>
#include "crypto.h"
#include "errors.h"
#include "log.h"

#define CONFIG_MAX_SERVERS 16
#define CONFIG_STR 512

/* One Comet Server the worker may act on, looked up by the job's server.url.
 * Admin credentials live here, never in a message. */
struct config_server {
    char url[CONFIG_STR];       /* scheme://host[:port], compared after normalising */
    char username[128];
    char password[256];         /* from password_file or the environment; secret */
    char ca_file[CONFIG_STR];   /* extra CA bundle for a private CA; "" = system */
    bool insecure;              /* skip TLS verification (off by default; for labs only) */
};

struct config {
    /* log */
    enum log_level log_level;
    enum log_format log_format;

    /* amqp */
    char amqp_url[CONFIG_STR];  /* amqp[s]://user:pass@host:port/vhost; password masked */
    int amqp_prefetch;          /* unacked deliveries per worker process */
    int amqp_heartbeat;         /* seconds; 0 = off */
    int amqp_confirm_timeout_ms;/* publish waits this long for a confirm */

    /* redis */
    char redis_host[256];
    int redis_port;
    char redis_password[256];   /* AUTH; from redis.password_file or env; secret */
    int redis_db;
    char redis_prefix[64];      /* namespace for every key */

    /* worker */
    int worker_concurrency;     /* jobs run at once per process */
    int worker_max_body;        /* bytes; larger jobs are invalid */
    int worker_grace_seconds;   /* SIGTERM: time for in-flight jobs */
    char worker_name[128];      /* in results and logs; default host/pid */
    int retry_max_attempts;     /* transient failures before the DLQ */
    char retry_tiers_ms[128];   /* "1000,5000,30000,120000,600000,1800000": delay queues */
    int job_retention_seconds;  /* per-job state kept in Redis */

    /* comet client */
    int comet_connect_timeout_ms;
    int comet_timeout_ms;

    /* keys: keys[0] active */
    struct keyring keys;
    char key_ids[CONFIG_STR];   /* "k2026,k2025" as loaded, for printing */

    struct config_server servers[CONFIG_MAX_SERVERS];
    int server_count;

    /* dispatcher */
    char callback_url[CONFIG_STR];
    unsigned char callback_secret[256]; /* secret */
    size_t callback_secret_len;
    int dispatcher_concurrency;
    int dispatcher_timeout_ms;

    /* metrics and health listener; 0 = off */
    int metrics_port;
};

/* Fills defaults, reads path (NULL = defaults and environment only), then
 * applies environment overrides, then validates. Returns 0, or -1 with a
 * message naming the file, line, key and reason in err->msg. */
int config_load(struct config *cfg, const char *path, struct err *err);
/* Prints every key with its effective value, secrets masked. */
void config_print(const struct config *cfg, FILE *out);
/* The server entry whose URL matches (scheme, host, port; trailing '/'
 * ignored), or NULL. */
const struct config_server *config_find_server(const struct config *cfg, const char *url);
/* Prints every scalar key with its environment variable, default, range
 * and purpose (for --help and the README). */
void config_describe(FILE *out);
/* Wipes secrets. */
void config_clear(struct config *cfg);

/* retry.tiers_ms: ascending delays in ms, at most this many. */
#define CONFIG_MAX_RETRY_TIERS 16
#define CONFIG_DEFAULT_RETRY_TIERS "1000,5000,30000,120000,600000,1800000"
/* The retry tiers of cfg (empty = the default) into tiers; their number,
 * or -1 when the value is malformed (config_load refuses those). */
int config_retry_tiers(const struct config *cfg, int tiers[CONFIG_MAX_RETRY_TIERS]);

#endif
