/* Job and result-event codecs (wire format v1). Decoding is strict: every
 * field typed and bounded, unknown version/action rejected, so a bad
 * message is classified ERRC_INVALID and never executed. Structs use fixed
 * buffers: a decoded job owns no heap memory. */
#ifndef COMET_JOB_H
#define COMET_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include "crypto.h"
#include "clock.h"
#include "errors.h"

#define JOB_VERSION 1
#define QUOTA_UNSET (-1LL) /* configurable option absent (PHP empty()) */

enum job_action {
    ACTION_CREATE = 0,
    ACTION_SUSPEND,
    ACTION_UNSUSPEND,
    ACTION_TERMINATE,
    ACTION_CHANGE_PACKAGE,
    ACTION_CHANGE_PASSWORD,
    ACTION__COUNT
};

struct job_quotas {
    long long number_of_devices;        /* QUOTA_UNSET or >= 0 */
    long long protected_item_quota_gb;
    long long protected_item_quota_tb;
    long long storage_vault_quota_gb;
    long long storage_vault_quota_tb;
};

struct job {
    int v;
    char job_id[UUID_STR_LEN];
    enum job_action action;
    long long service_id;               /* > 0 */
    long long seq;                      /* >= 0, increases per service */
    char after[UUID_STR_LEN];           /* "" = no predecessor */
    char issued_at[32];                 /* RFC 3339 UTC */
    char server_url[512];
    char username[256];                 /* account.username (service username or custom field) */
    bool custom_username;               /* account.custom_username */
    char email[256];                    /* client.email, may be "" */
    char firstname[128];                /* client.firstname, may be "" */
    char policy_group[128];             /* product.policy_group, "" = none */
    char storage_provider[128];         /* product.storage_provider, "" = none */
    bool require_password_change;       /* product.require_password_change */
    struct job_quotas quotas;
    bool has_secret;                    /* create/change_password carry one */
    char secret_kid[KEY_ID_MAX];
    char secret_nonce[64];              /* base64 */
    char secret_box[1024];              /* base64 */
};

const char *job_action_name(enum job_action a);
/* Returns 0 and sets *out, or -1 when unknown. */
int job_action_parse(const char *s, enum job_action *out);

/* Initialises a job: zero, v=1, quotas QUOTA_UNSET. */
void job_init(struct job *job);
/* Decodes and validates body (not NUL-terminated necessarily). Returns 0,
 * or -1 with err (ERR_BAD_JSON/VERSION/ACTION/FIELD). On failure job_id,
 * action and service_id are filled when they could be read, so the failed
 * result event can still name the job. */
int job_decode(const char *body, size_t len, struct job *job, struct err *err);
/* Encodes to a malloc'd JSON string (caller frees); NULL on allocation failure. */
char *job_encode(const struct job *job);

enum result_status {
    RESULT_SUCCEEDED = 0,
    RESULT_FAILED,
    RESULT_RETRYING,
    RESULT_SKIPPED,
    RESULT__COUNT
};

struct result {
    char job_id[UUID_STR_LEN];
    long long service_id;
    enum job_action action;
    long long seq;
    enum result_status status;
    int attempt;                        /* 1-based */
    struct err error;                   /* code ERR_OK = no "error" member */
    char username[256];                 /* account.* members, "" = absent */
    char storage_vault_id[128];
    char policy_id[128];
    char next_attempt_at[32];           /* retrying only, RFC 3339 */
    char reason[64];                    /* skipped only, e.g. "superseded" */
    long long started_at_ms;            /* unix ms */
    long long finished_at_ms;
    char worker[128];
};

const char *result_status_name(enum result_status s);
int result_status_parse(const char *s, enum result_status *out);
/* malloc'd JSON (caller frees), NULL on allocation failure. */
char *result_encode(const struct result *r);
/* Strict decode, for the dispatcher, tools and tests. */
int result_decode(const char *body, size_t len, struct result *r, struct err *err);

/* Formats unix milliseconds as RFC 3339 UTC ("2026-12-04T10:00:00.123Z"). */
void format_time_ms(long long unix_ms, char out[32]);

#endif
