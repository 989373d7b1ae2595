/* In-memory state of the fake Comet Server: users, policies, counters and
 * fault settings behind one global mutex. */
#include "state.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "handlers.h"
#include "jsonobj.h"

/* Marks PasswordHash as not a real hash; 0 would mean plaintext. */
#define STATE_PASSWORD_FORMAT 1
/* Random bytes in a recovery code (hex-encoded in the profile). */
#define STATE_RECOVERY_BYTES 12

/* The one global state; every field below the lock is guarded by it. */
static struct {
    pthread_mutex_t lock;
    struct fake_options opts;          /* fixed after state_init */
    long long start_time;              /* unix s, for meta/version */
    char start_hash[STATE_HASH_LEN];   /* changes on every restart */
    json_object *users;                /* {name: user record} */
    json_object *policies;             /* {id: {"policy", "hash"}} */
    unsigned long calls[HANDLERS_MAX]; /* per handler row, faulted ones too */
    unsigned long faults;              /* injected faults since reset */
    struct fault_config faults_cfg;    /* live fault settings */
} state = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- random helpers ---- */

static void state_random_bytes(unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n <= 0) {
            /* getrandom only fails on EINTR for small reads; a fake needs
             * no cryptographic quality, so fall back rather than abort. */
            for (; got < len; got++)
                buf[got] = (unsigned char)rand();
            return;
        }
        got += (size_t)n;
    }
}

void state_random_hex(char *out, size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char buf[64];
    if (nbytes > sizeof(buf))
        nbytes = sizeof(buf);
    state_random_bytes(buf, nbytes);
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = digits[buf[i] >> 4];
        out[2 * i + 1] = digits[buf[i] & 0x0f];
    }
    out[2 * nbytes] = '\0';
}

void state_random_guid(char out[STATE_GUID_LEN])
{
    unsigned char b[16];
    state_random_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, STATE_GUID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
             b[12], b[13], b[14], b[15]);
}

double state_random_unit(void)
{
    uint64_t r;
    state_random_bytes((unsigned char *)&r, sizeof(r));
    return (double)(r >> 11) * (1.0 / 9007199254740992.0); /* 53 bits / 2^53 */
}

/* ---- small json helpers ---- */

static int state_put_new_hash(json_object *rec, const char *key)
{
    char hash[STATE_HASH_LEN];
    state_random_hex(hash, (STATE_HASH_LEN - 1) / 2);
    return jsonobj_put(rec, key, json_object_new_string(hash));
}

static const char *state_get_string(json_object *obj, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
        return "";
    return json_object_get_string(v);
}

/* ---- lifecycle ---- */

static void state_options_clear(struct fake_options *o)
{
    free(o->admin_user);
    free(o->admin_password);
    json_object_put(o->providers);
    memset(o, 0, sizeof(*o));
}

int state_init(struct fake_options *opts)
{
    state.opts = *opts;
    memset(opts, 0, sizeof(*opts)); /* the state owns them now */
    state.start_time = (long long)time(NULL);
    state_random_hex(state.start_hash, (STATE_HASH_LEN - 1) / 2);
    state.users = json_object_new_object();
    state.policies = json_object_new_object();
    fault_config_init(&state.faults_cfg);
    if (state.users == NULL || state.policies == NULL) {
        state_free();
        return -1;
    }
    return 0;
}

void state_free(void)
{
    json_object_put(state.users);
    json_object_put(state.policies);
    state.users = NULL;
    state.policies = NULL;
    state_options_clear(&state.opts);
}

void state_lock(void)
{
    /* Only fails on a misused mutex (EDEADLK/EINVAL): a bug, stop loudly. */
    if (pthread_mutex_lock(&state.lock) != 0)
        abort();
}

void state_unlock(void)
{
    if (pthread_mutex_unlock(&state.lock) != 0)
        abort();
}

const struct fake_options *state_options(void) { return &state.opts; }
const char *state_start_hash(void) { return state.start_hash; }
long long state_start_time(void) { return state.start_time; }
struct fault_config *state_faults(void) { return &state.faults_cfg; }

/* ---- users ---- */

json_object *state_users(void) { return state.users; }

json_object *state_user_find(const char *name)
{
    json_object *rec;
    if (!json_object_object_get_ex(state.users, name, &rec))
        return NULL;
    return rec;
}

json_object *state_user_profile(json_object *rec)
{
    json_object *p = NULL;
    json_object_object_get_ex(rec, "profile", &p);
    return p;
}

const char *state_user_hash(json_object *rec) { return state_get_string(rec, "profile_hash"); }
const char *state_user_password(json_object *rec) { return state_get_string(rec, "password"); }

bool state_user_has_recovery(json_object *rec)
{
    json_object *v;
    return json_object_object_get_ex(rec, "has_recovery_code", &v) && json_object_get_boolean(v);
}

/* The record's recovery flag follows the profile, as the server keeps the
 * code in PasswordRecovery: a client that drops the field loses the code. */
static int state_user_sync_recovery(json_object *rec)
{
    json_object *profile = state_user_profile(rec);
    bool held = profile != NULL && state_get_string(profile, "PasswordRecovery")[0] != '\0';
    return jsonobj_put(rec, "has_recovery_code", json_object_new_boolean(held));
}

static int state_put_password_hash(json_object *profile)
{
    char hex[STATE_HASH_LEN];
    char buf[STATE_HASH_LEN + 8];
    state_random_hex(hex, (STATE_HASH_LEN - 1) / 2);
    snprintf(buf, sizeof(buf), "fake$%s", hex);
    return jsonobj_put(profile, "PasswordHash", json_object_new_string(buf));
}

static int state_put_recovery(json_object *profile, bool store)
{
    char code[2 * STATE_RECOVERY_BYTES + 1] = "";
    if (store)
        state_random_hex(code, STATE_RECOVERY_BYTES);
    return jsonobj_put(profile, "PasswordRecovery", json_object_new_string(code));
}

/* A new UserProfileConfig with the fields a real server fills in. */
static json_object *state_profile_new(const char *name, bool store_recovery,
                                      bool require_change, const char *organization)
{
    char guid[STATE_GUID_LEN];
    json_object *p = json_object_new_object();
    if (p == NULL)
        return NULL;
    state_random_guid(guid);
    if (jsonobj_put(p, "Username", json_object_new_string(name)) != 0 ||
        jsonobj_put(p, "AccountName", json_object_new_string("")) != 0 ||
        jsonobj_put(p, "OrganizationID", json_object_new_string(organization)) != 0 ||
        jsonobj_put(p, "Emails", json_object_new_array()) != 0 ||
        jsonobj_put(p, "Destinations", json_object_new_object()) != 0 ||
        jsonobj_put(p, "Sources", json_object_new_object()) != 0 ||
        jsonobj_put(p, "BackupRules", json_object_new_object()) != 0 ||
        jsonobj_put(p, "Devices", json_object_new_object()) != 0 ||
        jsonobj_put(p, "IsSuspended", json_object_new_boolean(0)) != 0 ||
        jsonobj_put(p, "LastSuspended", json_object_new_int64(0)) != 0 ||
        jsonobj_put(p, "AllProtectedItemsQuotaEnabled", json_object_new_boolean(0)) != 0 ||
        jsonobj_put(p, "AllProtectedItemsQuotaBytes", json_object_new_int64(0)) != 0 ||
        jsonobj_put(p, "MaximumDevices", json_object_new_int64(0)) != 0 ||
        jsonobj_put(p, "PolicyID", json_object_new_string("")) != 0 ||
        jsonobj_put(p, "Policy", json_object_new_object()) != 0 ||
        jsonobj_put(p, "PasswordFormat", json_object_new_int(STATE_PASSWORD_FORMAT)) != 0 ||
        state_put_password_hash(p) != 0 ||
        state_put_recovery(p, store_recovery) != 0 ||
        jsonobj_put(p, "RequirePasswordChange", json_object_new_boolean(require_change)) != 0 ||
        jsonobj_put(p, "CreateTime", json_object_new_int64((int64_t)time(NULL))) != 0 ||
        jsonobj_put(p, "CreationGUID", json_object_new_string(guid)) != 0 ||
        jsonobj_put(p, "SupportsDeviceAssociations", json_object_new_boolean(1)) != 0) {
        json_object_put(p);
        return NULL;
    }
    return p;
}

int state_user_add(const char *name, const char *password, bool store_recovery,
                   bool require_change, const char *organization)
{
    json_object *rec = json_object_new_object();
    if (rec == NULL)
        return -1;
    if (jsonobj_put(rec, "profile",
                  state_profile_new(name, store_recovery, require_change, organization)) != 0 ||
        state_put_new_hash(rec, "profile_hash") != 0 ||
        jsonobj_put(rec, "password", json_object_new_string(password)) != 0 ||
        state_user_sync_recovery(rec) != 0 ||
        jsonobj_put(state.users, name, rec) != 0) {
        json_object_put(rec);
        return -1;
    }
    return 0;
}

void state_user_delete(const char *name)
{
    json_object_object_del(state.users, name);
}

int state_user_set_profile(json_object *rec, json_object *profile)
{
    if (jsonobj_put(rec, "profile", profile) != 0)
        return -1;
    if (state_user_sync_recovery(rec) != 0)
        return -1;
    return state_put_new_hash(rec, "profile_hash");
}

int state_user_touch(json_object *rec)
{
    if (state_user_sync_recovery(rec) != 0)
        return -1;
    return state_put_new_hash(rec, "profile_hash");
}

int state_user_set_password(json_object *rec, const char *password)
{
    json_object *profile = state_user_profile(rec);
    if (profile == NULL || jsonobj_put(rec, "password", json_object_new_string(password)) != 0)
        return -1;
    if (state_put_password_hash(profile) != 0)
        return -1;
    if (state_user_has_recovery(rec) && state_put_recovery(profile, true) != 0)
        return -1;
    return state_user_touch(rec);
}

/* ---- policies ---- */

json_object *state_policies(void) { return state.policies; }

json_object *state_policy_find(const char *id)
{
    json_object *rec;
    if (!json_object_object_get_ex(state.policies, id, &rec))
        return NULL;
    return rec;
}

int state_policy_set(const char *id, json_object *policy)
{
    json_object *rec = json_object_new_object();
    if (rec == NULL) {
        json_object_put(policy);
        return -1;
    }
    if (jsonobj_put(rec, "policy", policy) != 0 || state_put_new_hash(rec, "hash") != 0 ||
        jsonobj_put(state.policies, id, rec) != 0) {
        json_object_put(rec);
        return -1;
    }
    return 0;
}

/* ---- counters and snapshot ---- */

void state_count_call(int idx)
{
    if (idx >= 0 && idx < HANDLERS_MAX)
        state.calls[idx]++;
}

void state_count_fault(void) { state.faults++; }

json_object *state_snapshot(void)
{
    json_object *snap = json_object_new_object();
    json_object *calls = json_object_new_object();
    if (snap == NULL || calls == NULL)
        goto fail;
    for (size_t i = 0; i < handlers_count(); i++) {
        if (state.calls[i] == 0)
            continue;
        if (jsonobj_put(calls, handlers_name((int)i),
                      json_object_new_int64((int64_t)state.calls[i])) != 0)
            goto fail;
    }
    /* The snapshot shares the live maps (refcounts); the caller serialises
     * it before dropping the lock. */
    if (jsonobj_put(snap, "users", json_object_get(state.users)) != 0 ||
        jsonobj_put(snap, "policies", json_object_get(state.policies)) != 0)
        goto fail;
    json_object *tmp = calls;
    calls = NULL; /* state_put owns it now, even on failure */
    if (jsonobj_put(snap, "calls", tmp) != 0 ||
        jsonobj_put(snap, "faults", json_object_new_int64((int64_t)state.faults)) != 0 ||
        jsonobj_put(snap, "user_count", json_object_new_int(json_object_object_length(state.users))) != 0 ||
        jsonobj_put(snap, "policy_count",
                  json_object_new_int(json_object_object_length(state.policies))) != 0)
        goto fail;
    return snap;
fail:
    json_object_put(calls);
    json_object_put(snap);
    return NULL;
}

int state_reset(void)
{
    json_object *users = json_object_new_object();
    json_object *policies = json_object_new_object();
    if (users == NULL || policies == NULL) {
        json_object_put(users);
        json_object_put(policies);
        return -1; /* the old state stays as it was */
    }
    json_object_put(state.users);
    json_object_put(state.policies);
    state.users = users;
    state.policies = policies;
    memset(state.calls, 0, sizeof(state.calls));
    state.faults = 0;
    fault_config_init(&state.faults_cfg);
    return 0;
}
