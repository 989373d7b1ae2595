/* Error codes: the one table that gives every code its class and wire name. */
#include "errors.h"

#include <stdio.h>
#include <string.h>

struct err_row {
    enum err_class cls;
    const char *name; /* wire code, stable: WHMCS and the DLQ tooling match on it */
};

static const struct err_row err_table[] = {
    [ERR_OK]                 = { ERRC_NONE,      "ok" },
    [ERR_BAD_JSON]           = { ERRC_INVALID,   "bad_json" },
    [ERR_BAD_VERSION]        = { ERRC_INVALID,   "bad_version" },
    [ERR_BAD_ACTION]         = { ERRC_INVALID,   "bad_action" },
    [ERR_BAD_FIELD]          = { ERRC_INVALID,   "bad_field" },
    [ERR_TOO_LARGE]          = { ERRC_INVALID,   "too_large" },
    [ERR_BAD_SIGNATURE]      = { ERRC_INVALID,   "bad_signature" },
    [ERR_UNKNOWN_KEY]        = { ERRC_INVALID,   "unknown_key" },
    [ERR_BAD_SEAL]           = { ERRC_INVALID,   "bad_seal" },
    [ERR_UNKNOWN_SERVER]     = { ERRC_CONFIG,    "unknown_server" },
    [ERR_COMET_UNAVAILABLE]  = { ERRC_TRANSIENT, "comet_unavailable" },
    [ERR_COMET_TIMEOUT]      = { ERRC_TRANSIENT, "comet_timeout" },
    [ERR_COMET_HTTP_5XX]     = { ERRC_TRANSIENT, "comet_http_5xx" },
    [ERR_COMET_RATE_LIMITED] = { ERRC_TRANSIENT, "comet_rate_limited" },
    [ERR_COMET_BAD_RESPONSE] = { ERRC_TRANSIENT, "comet_bad_response" },
    [ERR_STORE_UNAVAILABLE]  = { ERRC_TRANSIENT, "store_unavailable" },
    [ERR_BROKER_UNAVAILABLE]  = { ERRC_TRANSIENT, "broker_unavailable" },
    [ERR_HASH_CONFLICT]      = { ERRC_TRANSIENT, "hash_conflict" },
    [ERR_COMET_AUTH]         = { ERRC_PERMANENT, "comet_auth" },
    [ERR_COMET_REJECTED]     = { ERRC_PERMANENT, "comet_rejected" },
    [ERR_COMET_HTTP_4XX]     = { ERRC_PERMANENT, "comet_http_4xx" },
    [ERR_PASSWORD_TOO_SHORT] = { ERRC_PERMANENT, "password_too_short" },
    [ERR_USER_NOT_FOUND]     = { ERRC_PERMANENT, "user_not_found" },
    [ERR_PREDECESSOR_FAILED] = { ERRC_PERMANENT, "predecessor_failed" },
    [ERR_INTERNAL]           = { ERRC_PERMANENT, "internal" },
};

/* A code added to the enum without a row here would read a zeroed row. */
_Static_assert(sizeof(err_table) / sizeof(err_table[0]) == ERR__COUNT,
               "err_table needs one row per enum err_code");

static const char *const err_class_names[] = {
    [ERRC_NONE]      = "none",
    [ERRC_TRANSIENT] = "transient",
    [ERRC_PERMANENT] = "permanent",
    [ERRC_CONFIG]    = "config",
    [ERRC_INVALID]   = "invalid",
};

enum err_class err_class_of(enum err_code code)
{
    /* An out-of-range code is a bug; permanent keeps it from looping. */
    if ((unsigned)code >= ERR__COUNT)
        return ERRC_PERMANENT;
    return err_table[code].cls;
}

const char *err_code_name(enum err_code code)
{
    if ((unsigned)code >= ERR__COUNT)
        return "internal";
    return err_table[code].name;
}

const char *err_class_name(enum err_class cls)
{
    if ((unsigned)cls >= sizeof(err_class_names) / sizeof(err_class_names[0]))
        return "unknown";
    return err_class_names[cls];
}

enum err_code err_code_parse(const char *name)
{
    if (name == NULL)
        return ERR__COUNT;
    for (int i = 0; i < ERR__COUNT; i++) {
        if (strcmp(err_table[i].name, name) == 0)
            return (enum err_code)i;
    }
    return ERR__COUNT;
}

int err_set(struct err *e, enum err_code code, const char *fmt, ...)
{
    if (e == NULL)
        return -1;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    /* vsnprintf truncates at the buffer and always NUL-terminates. */
    int n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        e->msg[0] = '\0';
    return -1;
}

void err_clear(struct err *e)
{
    if (e == NULL)
        return;
    e->code = ERR_OK;
    e->msg[0] = '\0';
}
