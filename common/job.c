/* Job and result-event codecs for wire format v1: strict decoding, canonical encoding. */
#include "job.h"
#include "jsonobj.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

/* Wire name of an action or status outside the enum: a result event for a
 * message whose action could not be read still has to say something. */
#define NAME_UNKNOWN "unknown"

#define MS_PER_SEC 1000LL

static const char *const action_names[ACTION__COUNT] = {
    [ACTION_CREATE] = "create",
    [ACTION_SUSPEND] = "suspend",
    [ACTION_UNSUSPEND] = "unsuspend",
    [ACTION_TERMINATE] = "terminate",
    [ACTION_CHANGE_PACKAGE] = "change_package",
    [ACTION_CHANGE_PASSWORD] = "change_password",
};

static const char *const status_names[RESULT__COUNT] = {
    [RESULT_SUCCEEDED] = "succeeded",
    [RESULT_FAILED] = "failed",
    [RESULT_RETRYING] = "retrying",
    [RESULT_SKIPPED] = "skipped",
};

const char *job_action_name(enum job_action a)
{
    if ((unsigned)a >= ACTION__COUNT)
        return NAME_UNKNOWN;
    return action_names[a];
}

int job_action_parse(const char *s, enum job_action *out)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < ACTION__COUNT; i++) {
        if (strcmp(action_names[i], s) == 0) {
            if (out != NULL)
                *out = (enum job_action)i;
            return 0;
        }
    }
    return -1;
}

const char *result_status_name(enum result_status s)
{
    if ((unsigned)s >= RESULT__COUNT)
        return NAME_UNKNOWN;
    return status_names[s];
}

int result_status_parse(const char *s, enum result_status *out)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < RESULT__COUNT; i++) {
        if (strcmp(status_names[i], s) == 0) {
            if (out != NULL)
                *out = (enum result_status)i;
            return 0;
        }
    }
    return -1;
}

void job_init(struct job *job)
{
    memset(job, 0, sizeof(*job));
    job->v = JOB_VERSION;
    job->quotas.number_of_devices = QUOTA_UNSET;
    job->quotas.protected_item_quota_gb = QUOTA_UNSET;
    job->quotas.protected_item_quota_tb = QUOTA_UNSET;
    job->quotas.storage_vault_quota_gb = QUOTA_UNSET;
    job->quotas.storage_vault_quota_tb = QUOTA_UNSET;
}

/* ---- time --------------------------------------------------------------- */

void format_time_ms(long long unix_ms, char out[32])
{
    /* Floor division so times before 1970 still get a 0..999 fraction. */
    long long sec = unix_ms / MS_PER_SEC;
    long long ms = unix_ms % MS_PER_SEC;
    if (ms < 0) {
        ms += MS_PER_SEC;
        sec -= 1;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    char date[24];
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0 ||
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        out[0] = '\0';
        return;
    }
    snprintf(out, 32, "%s.%03dZ", date, (int)ms);
}

/* Reads exactly n decimal digits. Returns 0 or -1. */
static int parse_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Parses the RFC 3339 UTC form format_time_ms writes ("...T10:00:00.123Z"),
 * also without or with a longer fraction. Returns 0 or -1. */
static int parse_time_ms(const char *s, long long *out)
{
    const char *p = s;
    int year, mon, day, hour, min, sec, ms = 0;
    if (parse_digits(&p, 4, &year) || *p++ != '-' || parse_digits(&p, 2, &mon) ||
        *p++ != '-' || parse_digits(&p, 2, &day) || (*p != 'T' && *p != 't'))
        return -1;
    p++;
    if (parse_digits(&p, 2, &hour) || *p++ != ':' || parse_digits(&p, 2, &min) ||
        *p++ != ':' || parse_digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    if ((*p != 'Z' && *p != 'z') || p[1] != '\0')
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
        return -1;
    struct tm tm = {
        .tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day,
        .tm_hour = hour, .tm_min = min, .tm_sec = sec,
    };
    time_t t = timegm(&tm);
    *out = (long long)t * MS_PER_SEC + ms;
    return 0;
}

/* ---- decoding helpers --------------------------------------------------- */

/* json-c accepts single-quoted strings even in strict mode; standard JSON
 * has none, so any quote character outside a double-quoted string is an
 * error. Returns true when the text has one. */
static bool has_single_quote(const char *body, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '\'') {
            return true;
        }
    }
    return false;
}

/* Parses exactly len bytes as one JSON object (trailing whitespace allowed,
 * anything else after it is not). Returns a new object the caller puts, or
 * NULL with err ERR_BAD_JSON. */
static struct json_object *parse_object(const char *body, size_t len, struct err *err)
{
    if (body == NULL || len == 0) {
        err_set(err, ERR_BAD_JSON, "body is empty");
        return NULL;
    }
    if (len > INT32_MAX) {
        err_set(err, ERR_BAD_JSON, "body too large to parse");
        return NULL;
    }
    if (has_single_quote(body, len)) {
        err_set(err, ERR_BAD_JSON, "body is not valid JSON: single-quoted string");
        return NULL;
    }
    struct json_tokener *tok = json_tokener_new();
    if (tok == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    /* Strict: no comments, single quotes or other json-c extensions, since
     * the PHP side and the broker tooling only speak standard JSON. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *obj = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (obj == NULL || jerr != json_tokener_success) {
        json_object_put(obj);
        /* json_tokener_continue means the text stopped mid-value. */
        err_set(err, ERR_BAD_JSON, "body is not valid JSON: %s",
                jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr));
        return NULL;
    }
    while (end < len && (body[end] == ' ' || body[end] == '\t' || body[end] == '\n' ||
                         body[end] == '\r'))
        end++;
    if (end != len) {
        json_object_put(obj);
        err_set(err, ERR_BAD_JSON, "trailing data after the JSON value at byte %zu", end);
        return NULL;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        err_set(err, ERR_BAD_JSON, "body is not a JSON object");
        return NULL;
    }
    return obj;
}

/* The member, or NULL when absent or JSON null. Lends (no put). */
static struct json_object *member(struct json_object *obj, const char *name)
{
    struct json_object *v = NULL;
    if (obj == NULL || !json_object_object_get_ex(obj, name, &v))
        return NULL;
    return v;
}

/* Integer member. Returns 0 with *out, or -1 when absent, null or not an
 * integer (a double like 1.0 or a numeric string is not). */
static int get_int(struct json_object *obj, const char *name, long long *out)
{
    struct json_object *v = member(obj, name);
    if (v == NULL || !json_object_is_type(v, json_type_int))
        return -1;
    *out = (long long)json_object_get_int64(v);
    return 0;
}

/* Copies a string member into buf. Returns 0; -1 when absent, null, not a
 * string, holding a NUL byte or too long for buf. */
static int get_str(struct json_object *obj, const char *name, char *buf, size_t size)
{
    struct json_object *v = member(obj, name);
    if (v == NULL || !json_object_is_type(v, json_type_string))
        return -1;
    const char *s = json_object_get_string(v);
    size_t len = (size_t)json_object_get_string_len(v);
    if (s == NULL || strlen(s) != len || len >= size)
        return -1;
    memcpy(buf, s, len + 1);
    return 0;
}

static int get_bool(struct json_object *obj, const char *name, bool *out)
{
    struct json_object *v = member(obj, name);
    if (v == NULL || !json_object_is_type(v, json_type_boolean))
        return -1;
    *out = json_object_get_boolean(v) != 0;
    return 0;
}

/* A sub-object, NULL when absent or null; *bad set when present but not an object. */
static struct json_object *get_obj(struct json_object *obj, const char *name, bool *bad)
{
    struct json_object *v = member(obj, name);
    *bad = v != NULL && !json_object_is_type(v, json_type_object);
    return *bad ? NULL : v;
}

static bool uuid_valid(const char *s)
{
    if (strlen(s) != UUID_STR_LEN - 1)
        return false;
    for (int i = 0; i < UUID_STR_LEN - 1; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static int bad_field(struct err *err, const char *field, const char *what)
{
    return err_set(err, ERR_BAD_FIELD, "field '%s': %s", field, what);
}

/* A string member that must be present and fit. */
static int need_str(struct json_object *obj, const char *path, const char *name, char *buf,
                    size_t size, bool nonempty, struct err *err)
{
    if (get_str(obj, name, buf, size) != 0) {
        char what[64];
        snprintf(what, sizeof(what), "expected a string of at most %zu bytes", size - 1);
        return bad_field(err, path, what);
    }
    if (nonempty && buf[0] == '\0')
        return bad_field(err, path, "must not be empty");
    return 0;
}

/* A string member that may be absent or null ("" then). */
static int opt_str(struct json_object *obj, const char *path, const char *name, char *buf,
                   size_t size, struct err *err)
{
    if (member(obj, name) == NULL) {
        buf[0] = '\0';
        return 0;
    }
    return need_str(obj, path, name, buf, size, false, err);
}

/* ---- job ---------------------------------------------------------------- */

/* Reads job_id, action and service_id on a best-effort basis so a failed
 * decode can still name the job in its result event. */
static void job_peek_ids(struct json_object *root, struct job *job)
{
    char id[UUID_STR_LEN];
    if (get_str(root, "job_id", id, sizeof(id)) == 0 && uuid_valid(id))
        memcpy(job->job_id, id, sizeof(id));
    struct json_object *a = member(root, "action");
    enum job_action act;
    if (a != NULL && json_object_is_type(a, json_type_string) &&
        job_action_parse(json_object_get_string(a), &act) == 0)
        job->action = act;
    long long sid;
    if (get_int(root, "service_id", &sid) == 0 && sid > 0)
        job->service_id = sid;
}

static int decode_quota(struct json_object *quotas, const char *name, long long *out,
                        struct err *err)
{
    struct json_object *v = member(quotas, name);
    if (v == NULL) {
        *out = QUOTA_UNSET;
        return 0;
    }
    long long q;
    if (get_int(quotas, name, &q) != 0 || q < 0) {
        char path[64];
        snprintf(path, sizeof(path), "quotas.%s", name);
        return bad_field(err, path, "expected null or a non-negative integer");
    }
    *out = q;
    return 0;
}

static int job_decode_fields(struct json_object *root, struct job *job, struct err *err)
{
    long long v;
    if (get_int(root, "v", &v) != 0 || v != JOB_VERSION)
        return err_set(err, ERR_BAD_VERSION, "field 'v': expected %d", JOB_VERSION);
    job->v = JOB_VERSION;

    char action[32];
    if (get_str(root, "action", action, sizeof(action)) != 0 ||
        job_action_parse(action, &job->action) != 0)
        return err_set(err, ERR_BAD_ACTION, "field 'action': expected one of create, suspend, "
                       "unsuspend, terminate, change_package, change_password");
    enum job_action act = job->action;

    if (get_str(root, "job_id", job->job_id, sizeof(job->job_id)) != 0 ||
        !uuid_valid(job->job_id)) {
        job->job_id[0] = '\0';
        return bad_field(err, "job_id", "expected a UUID string");
    }
    if (get_int(root, "service_id", &job->service_id) != 0 || job->service_id <= 0) {
        job->service_id = 0;
        return bad_field(err, "service_id", "expected a positive integer");
    }
    if (get_int(root, "seq", &job->seq) != 0 || job->seq < 0)
        return bad_field(err, "seq", "expected a non-negative integer");
    if (member(root, "after") == NULL) {
        job->after[0] = '\0';
    } else if (get_str(root, "after", job->after, sizeof(job->after)) != 0 ||
               !uuid_valid(job->after)) {
        return bad_field(err, "after", "expected null or a UUID string");
    }
    if (need_str(root, "issued_at", "issued_at", job->issued_at, sizeof(job->issued_at), true,
                 err) != 0)
        return -1;

    bool bad;
    struct json_object *server = get_obj(root, "server", &bad);
    if (server == NULL)
        return bad_field(err, "server", "expected an object");
    if (need_str(server, "server.url", "url", job->server_url, sizeof(job->server_url), true,
                 err) != 0)
        return -1;

    struct json_object *account = get_obj(root, "account", &bad);
    if (account == NULL)
        return bad_field(err, "account", "expected an object");
    if (need_str(account, "account.username", "username", job->username, sizeof(job->username),
                 false, err) != 0)
        return -1;
    /* Only create may leave the name to the worker (it derives one). */
    if (job->username[0] == '\0' && act != ACTION_CREATE)
        return bad_field(err, "account.username", "must not be empty");
    if (get_bool(account, "custom_username", &job->custom_username) != 0)
        return bad_field(err, "account.custom_username", "expected a boolean");

    struct json_object *client = get_obj(root, "client", &bad);
    if (bad)
        return bad_field(err, "client", "expected an object");
    if (opt_str(client, "client.email", "email", job->email, sizeof(job->email), err) != 0 ||
        opt_str(client, "client.firstname", "firstname", job->firstname,
                sizeof(job->firstname), err) != 0)
        return -1;

    struct json_object *product = get_obj(root, "product", &bad);
    if (bad || (product == NULL && (act == ACTION_CREATE || act == ACTION_CHANGE_PACKAGE)))
        return bad_field(err, "product", "expected an object");
    if (product != NULL) {
        if (need_str(product, "product.policy_group", "policy_group", job->policy_group,
                     sizeof(job->policy_group), false, err) != 0 ||
            need_str(product, "product.storage_provider", "storage_provider",
                     job->storage_provider, sizeof(job->storage_provider), false, err) != 0)
            return -1;
        if (get_bool(product, "require_password_change", &job->require_password_change) != 0)
            return bad_field(err, "product.require_password_change", "expected a boolean");
    }

    struct json_object *quotas = get_obj(root, "quotas", &bad);
    if (bad)
        return bad_field(err, "quotas", "expected an object or null");
    struct job_quotas *q = &job->quotas;
    if (decode_quota(quotas, "number_of_devices", &q->number_of_devices, err) != 0 ||
        decode_quota(quotas, "protected_item_quota_gb", &q->protected_item_quota_gb, err) != 0 ||
        decode_quota(quotas, "protected_item_quota_tb", &q->protected_item_quota_tb, err) != 0 ||
        decode_quota(quotas, "storage_vault_quota_gb", &q->storage_vault_quota_gb, err) != 0 ||
        decode_quota(quotas, "storage_vault_quota_tb", &q->storage_vault_quota_tb, err) != 0)
        return -1;

    /* Only the names of secret members ever reach a message, never values. */
    struct json_object *secret = get_obj(root, "secret", &bad);
    bool wants_secret = act == ACTION_CREATE || act == ACTION_CHANGE_PASSWORD;
    if (bad)
        return bad_field(err, "secret", "expected an object");
    if (!wants_secret) {
        if (secret != NULL)
            return bad_field(err, "secret", "must be absent or null for this action");
        return 0;
    }
    if (secret == NULL)
        return bad_field(err, "secret", "required for this action");
    if (need_str(secret, "secret.kid", "kid", job->secret_kid, sizeof(job->secret_kid), true,
                 err) != 0 ||
        need_str(secret, "secret.nonce", "nonce", job->secret_nonce, sizeof(job->secret_nonce),
                 true, err) != 0 ||
        need_str(secret, "secret.box", "box", job->secret_box, sizeof(job->secret_box), true,
                 err) != 0)
        return -1;
    job->has_secret = true;
    return 0;
}

int job_decode(const char *body, size_t len, struct job *job, struct err *err)
{
    job_init(job);
    /* Until read, the action is unknown rather than "create". */
    job->action = ACTION__COUNT;
    struct json_object *root = parse_object(body, len, err);
    if (root == NULL)
        return -1;
    job_peek_ids(root, job);
    int rc = job_decode_fields(root, job, err);
    if (rc != 0) {
        /* Keep only the identifying fields: nothing half-decoded survives. */
        job_init(job);
        job->action = ACTION__COUNT;
        job_peek_ids(root, job);
    }
    json_object_put(root);
    if (rc == 0)
        err_clear(err);
    return rc;
}

/* ---- encoding helpers --------------------------------------------------- */

static int add_null(struct json_object *obj, const char *key)
{
    return json_object_object_add(obj, key, NULL);
}

static int add_str(struct json_object *obj, const char *key, const char *s)
{
    return jsonobj_put(obj, key, json_object_new_string(s));
}

static int add_int(struct json_object *obj, const char *key, long long v)
{
    return jsonobj_put(obj, key, json_object_new_int64((int64_t)v));
}

static int add_bool(struct json_object *obj, const char *key, bool v)
{
    return jsonobj_put(obj, key, json_object_new_boolean(v));
}

/* Serialises obj compactly into a malloc'd string and puts obj (in every
 * case). NULL on allocation failure. */
static char *json_take_string(struct json_object *obj)
{
    if (obj == NULL)
        return NULL;
    const char *s = json_object_to_json_string_ext(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *out = s != NULL ? strdup(s) : NULL;
    json_object_put(obj);
    return out;
}

static int add_quota(struct json_object *obj, const char *key, long long v)
{
    return v < 0 ? add_null(obj, key) : add_int(obj, key, v);
}

/* ---- job encoding ------------------------------------------------------- */

static int job_encode_into(const struct job *job, struct json_object *root)
{
    if (add_int(root, "v", job->v) || add_str(root, "job_id", job->job_id) ||
        add_str(root, "action", job_action_name(job->action)) ||
        add_int(root, "service_id", job->service_id) || add_int(root, "seq", job->seq) ||
        (job->after[0] ? add_str(root, "after", job->after) : add_null(root, "after")) ||
        add_str(root, "issued_at", job->issued_at))
        return -1;

    /* Each sub-object is attached first, so root owns it from then on. */
    struct json_object *o = json_object_new_object();
    if (jsonobj_put(root, "server", o) || add_str(o, "url", job->server_url))
        return -1;
    o = json_object_new_object();
    if (jsonobj_put(root, "account", o) || add_str(o, "username", job->username) ||
        add_bool(o, "custom_username", job->custom_username))
        return -1;
    o = json_object_new_object();
    if (jsonobj_put(root, "client", o) || add_str(o, "email", job->email) ||
        add_str(o, "firstname", job->firstname))
        return -1;
    o = json_object_new_object();
    if (jsonobj_put(root, "product", o) || add_str(o, "policy_group", job->policy_group) ||
        add_str(o, "storage_provider", job->storage_provider) ||
        add_bool(o, "require_password_change", job->require_password_change))
        return -1;
    const struct job_quotas *q = &job->quotas;
    o = json_object_new_object();
    if (jsonobj_put(root, "quotas", o) || add_quota(o, "number_of_devices", q->number_of_devices) ||
        add_quota(o, "protected_item_quota_gb", q->protected_item_quota_gb) ||
        add_quota(o, "protected_item_quota_tb", q->protected_item_quota_tb) ||
        add_quota(o, "storage_vault_quota_gb", q->storage_vault_quota_gb) ||
        add_quota(o, "storage_vault_quota_tb", q->storage_vault_quota_tb))
        return -1;
    if (!job->has_secret)
        return 0;
    o = json_object_new_object();
    if (jsonobj_put(root, "secret", o) || add_str(o, "kid", job->secret_kid) ||
        add_str(o, "nonce", job->secret_nonce) || add_str(o, "box", job->secret_box))
        return -1;
    return 0;
}

char *job_encode(const struct job *job)
{
    if (job == NULL)
        return NULL;
    struct json_object *root = json_object_new_object();
    if (root == NULL)
        return NULL;
    if (job_encode_into(job, root) != 0) {
        json_object_put(root);
        return NULL;
    }
    return json_take_string(root);
}

/* ---- result events ------------------------------------------------------ */

static int result_encode_into(const struct result *r, struct json_object *root)
{
    if (add_int(root, "v", JOB_VERSION) || add_str(root, "job_id", r->job_id) ||
        add_int(root, "service_id", r->service_id) ||
        add_str(root, "action", job_action_name(r->action)) || add_int(root, "seq", r->seq) ||
        add_str(root, "status", result_status_name(r->status)) ||
        add_int(root, "attempt", r->attempt))
        return -1;

    struct json_object *o;
    if (r->error.code != ERR_OK) {
        o = json_object_new_object();
        if (jsonobj_put(root, "error", o) ||
            add_str(o, "class", err_class_name(err_class_of(r->error.code))) ||
            add_str(o, "code", err_code_name(r->error.code)) ||
            add_str(o, "message", r->error.msg))
            return -1;
    }
    if (r->username[0] || r->storage_vault_id[0] || r->policy_id[0]) {
        o = json_object_new_object();
        if (jsonobj_put(root, "account", o) ||
            (r->username[0] && add_str(o, "username", r->username)) ||
            (r->storage_vault_id[0] && add_str(o, "storage_vault_id", r->storage_vault_id)) ||
            (r->policy_id[0] && add_str(o, "policy_id", r->policy_id)))
            return -1;
    }
    if ((r->next_attempt_at[0] && add_str(root, "next_attempt_at", r->next_attempt_at)) ||
        (r->reason[0] && add_str(root, "reason", r->reason)))
        return -1;

    char started[32], finished[32];
    format_time_ms(r->started_at_ms, started);
    format_time_ms(r->finished_at_ms, finished);
    long long duration = r->finished_at_ms - r->started_at_ms;
    if (add_str(root, "started_at", started) || add_str(root, "finished_at", finished) ||
        add_int(root, "duration_ms", duration > 0 ? duration : 0) ||
        add_str(root, "worker", r->worker))
        return -1;
    return 0;
}

char *result_encode(const struct result *r)
{
    if (r == NULL)
        return NULL;
    struct json_object *root = json_object_new_object();
    if (root == NULL)
        return NULL;
    if (result_encode_into(r, root) != 0) {
        json_object_put(root);
        return NULL;
    }
    return json_take_string(root);
}

static int need_time(struct json_object *root, const char *name, long long *out,
                     struct err *err)
{
    char buf[40];
    if (get_str(root, name, buf, sizeof(buf)) != 0 || parse_time_ms(buf, out) != 0)
        return bad_field(err, name, "expected an RFC 3339 UTC time");
    return 0;
}

static int result_decode_fields(struct json_object *root, struct result *r, struct err *err)
{
    long long v;
    if (get_int(root, "v", &v) != 0 || v != JOB_VERSION)
        return err_set(err, ERR_BAD_VERSION, "field 'v': expected %d", JOB_VERSION);
    /* A result may describe a job that failed to decode: its id can be
     * empty and its service id 0, so only the types are checked here. */
    if (need_str(root, "job_id", "job_id", r->job_id, sizeof(r->job_id), false, err) != 0)
        return -1;
    if (get_int(root, "service_id", &r->service_id) != 0 || r->service_id < 0)
        return bad_field(err, "service_id", "expected a non-negative integer");
    char name[32];
    if (get_str(root, "action", name, sizeof(name)) != 0)
        return err_set(err, ERR_BAD_ACTION, "field 'action': expected an action name");
    if (strcmp(name, NAME_UNKNOWN) == 0)
        r->action = ACTION__COUNT;
    else if (job_action_parse(name, &r->action) != 0)
        return err_set(err, ERR_BAD_ACTION, "field 'action': unknown action");
    if (get_int(root, "seq", &r->seq) != 0 || r->seq < 0)
        return bad_field(err, "seq", "expected a non-negative integer");
    if (get_str(root, "status", name, sizeof(name)) != 0 ||
        result_status_parse(name, &r->status) != 0)
        return bad_field(err, "status", "expected succeeded, failed, retrying or skipped");
    long long attempt;
    if (get_int(root, "attempt", &attempt) != 0 || attempt < 0 || attempt > INT32_MAX)
        return bad_field(err, "attempt", "expected a non-negative integer");
    r->attempt = (int)attempt;

    bool bad;
    struct json_object *o = get_obj(root, "error", &bad);
    if (bad)
        return bad_field(err, "error", "expected an object");
    if (o != NULL) {
        char cls[32];
        if (need_str(o, "error.class", "class", cls, sizeof(cls), true, err) != 0 ||
            need_str(o, "error.code", "code", name, sizeof(name), true, err) != 0)
            return -1;
        enum err_code code = err_code_parse(name);
        if (code == ERR__COUNT || code == ERR_OK)
            return bad_field(err, "error.code", "unknown error code");
        if (need_str(o, "error.message", "message", r->error.msg, sizeof(r->error.msg), false,
                     err) != 0)
            return -1;
        r->error.code = code;
    }
    o = get_obj(root, "account", &bad);
    if (bad)
        return bad_field(err, "account", "expected an object");
    if (opt_str(o, "account.username", "username", r->username, sizeof(r->username), err) ||
        opt_str(o, "account.storage_vault_id", "storage_vault_id", r->storage_vault_id,
                sizeof(r->storage_vault_id), err) ||
        opt_str(o, "account.policy_id", "policy_id", r->policy_id, sizeof(r->policy_id), err) ||
        opt_str(root, "next_attempt_at", "next_attempt_at", r->next_attempt_at,
                sizeof(r->next_attempt_at), err) ||
        opt_str(root, "reason", "reason", r->reason, sizeof(r->reason), err))
        return -1;
    if (need_time(root, "started_at", &r->started_at_ms, err) ||
        need_time(root, "finished_at", &r->finished_at_ms, err))
        return -1;
    long long duration;
    if (get_int(root, "duration_ms", &duration) != 0 || duration < 0)
        return bad_field(err, "duration_ms", "expected a non-negative integer");
    if (need_str(root, "worker", "worker", r->worker, sizeof(r->worker), false, err) != 0)
        return -1;
    return 0;
}

int result_decode(const char *body, size_t len, struct result *r, struct err *err)
{
    memset(r, 0, sizeof(*r));
    struct json_object *root = parse_object(body, len, err);
    if (root == NULL)
        return -1;
    int rc = result_decode_fields(root, r, err);
    json_object_put(root);
    if (rc == 0)
        err_clear(err);
    return rc;
}
