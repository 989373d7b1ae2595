/* Error codes shared by every binary: one enum, one table (errors.c) that
 * gives each code its class and wire name. Functions return these codes and
 * fill a struct err; only the place that decides what to do logs. */
#ifndef COMET_ERRORS_H
#define COMET_ERRORS_H

#include <stdarg.h>

/* What the worker does with a failure: retry it, or dead-letter it at once. */
enum err_class {
    ERRC_NONE = 0,
    ERRC_TRANSIENT, /* retried with backoff up to the budget */
    ERRC_PERMANENT, /* Comet rejected it: dead-letter at once */
    ERRC_CONFIG,    /* our configuration cannot serve it (unknown server) */
    ERRC_INVALID,   /* the message itself is bad: never executed */
};

enum err_code {
    ERR_OK = 0,
    /* invalid: the job message */
    ERR_BAD_JSON,          /* body is not a JSON object */
    ERR_BAD_VERSION,       /* "v" is not 1 */
    ERR_BAD_ACTION,        /* unknown action */
    ERR_BAD_FIELD,         /* missing, wrongly typed or over-long field */
    ERR_TOO_LARGE,         /* body over the configured size limit */
    ERR_BAD_SIGNATURE,     /* missing or wrong x-comet-sig */
    ERR_UNKNOWN_KEY,       /* x-comet-kid / secret.kid not in our key ring */
    ERR_BAD_SEAL,          /* sealed password does not open */
    /* config */
    ERR_UNKNOWN_SERVER,    /* server.url not in the worker's config */
    /* transient: Comet or our own infrastructure */
    ERR_COMET_UNAVAILABLE, /* connection refused or reset, DNS */
    ERR_COMET_TIMEOUT,     /* no (complete) answer in time */
    ERR_COMET_HTTP_5XX,    /* HTTP 5xx from Comet or a proxy */
    ERR_COMET_RATE_LIMITED,/* HTTP 429 */
    ERR_COMET_BAD_RESPONSE,/* non-JSON, truncated, or an empty object where fields were due */
    ERR_STORE_UNAVAILABLE, /* Redis unreachable or failing */
    ERR_BROKER_UNAVAILABLE,/* RabbitMQ unreachable, closed the channel, or did not confirm */
    ERR_HASH_CONFLICT,     /* profile changed under us more times than we re-apply */
    /* permanent */
    ERR_COMET_AUTH,        /* admin credentials refused (body or HTTP 401/403) */
    ERR_COMET_REJECTED,    /* HTTP 200 with body Status >= 400 */
    ERR_COMET_HTTP_4XX,    /* other HTTP 4xx */
    ERR_PASSWORD_TOO_SHORT,/* change_password under 8 characters */
    ERR_USER_NOT_FOUND,    /* suspend/unsuspend/... of an account that is not there */
    ERR_PREDECESSOR_FAILED,/* an earlier job of the service failed: replay it first */
    ERR_INTERNAL,          /* out of memory, a bug: permanent so it never loops */
    ERR__COUNT
};

/* A code plus a human message. The message never contains a secret. */
struct err {
    enum err_code code;
    char msg[256];
};

enum err_class err_class_of(enum err_code code);
const char *err_code_name(enum err_code code);   /* wire code, e.g. "comet_unavailable" */
const char *err_class_name(enum err_class cls);  /* "transient", ... */
/* Parses a wire code; returns ERR__COUNT when unknown. */
enum err_code err_code_parse(const char *name);

/* Sets code and formatted message; always returns -1 so callers can
 * `return err_set(e, ERR_X, "...")`. e may be NULL. */
int err_set(struct err *e, enum err_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void err_clear(struct err *e);

#endif
