/* The six provisioning actions against the Comet admin API, each made safe
 * to run again after a lost answer: steps are recorded in the store and
 * Comet's state is re-read before anything that could be repeated. */
#include "actions.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "log.h"

/* Collision candidates tried for one account (the module loops forever). */
#define USERNAME_ATTEMPTS 10
/* Re-reads and re-applies of a profile edit racing other writers. */
#define PROFILE_WRITE_ATTEMPTS 5
/* Longer than any sane policies/get + policies/set pair; the lock only
 * keeps a burst of first orders from writing the policy N times. */
#define POLICY_LOCK_TTL_MS 30000
/* Waiting for another worker creating the same policy: 50 x 200 ms. */
#define POLICY_LOCK_POLL_MS 200
#define POLICY_LOCK_POLLS 50
/* The module refuses shorter passwords. */
#define PASSWORD_MIN_LEN 8
/* Room for a DestinationID (a GUID) or a provider key. */
#define VAULT_ID_MAX ACTION_VAULT_ID_MAX

/* Step fields of the job's state hash in the store. */
#define STEP_USERNAME "username"   /* the name chosen, written before add-user */
#define STEP_VAULT "vault"         /* "started" before request-storage-vault */
#define STEP_VAULT_ID "vault_id"   /* the DestinationID once known */
#define STEP_STARTED "started"

static const char *const step_names[] = { STEP_USERNAME, STEP_VAULT_ID, STEP_VAULT };

void action_steps_init(struct action_steps *st)
{
    st->username[0] = st->vault_id[0] = st->vault[0] = '\0';
    st->outs[0] = st->username;
    st->outs[1] = st->vault_id;
    st->outs[2] = st->vault;
    st->lens[0] = sizeof(st->username);
    st->lens[1] = sizeof(st->vault_id);
    st->lens[2] = sizeof(st->vault);
    st->fields = (struct store_fields){ 3, step_names, st->outs, st->lens };
}

static const int json_flags = JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE;

static int call(struct action_ctx *ctx, enum comet_endpoint ep, const struct comet_param *params,
                size_t nparams, json_object **out, int *body_status, struct err *err)
{
    return comet_call(ctx->comet, ctx->server, ep, params, nparams, out, body_status, err);
}

static struct log_fields job_fields(const struct job *job)
{
    struct log_fields f = LOG_FIELDS_INIT;

    f.job_id = job->job_id;
    f.service_id = job->service_id;
    f.action = job_action_name(job->action);
    return f;
}

/* Whether a lost answer may hide a committed write: the request may have
 * reached Comet (timeout, reset, 5xx) or Comet refused it (which a retry
 * of something already done also gets). */
static bool maybe_done(const struct err *err)
{
    return err_class_of(err->code) == ERRC_TRANSIENT || err->code == ERR_COMET_REJECTED;
}

/* A write failed and the read meant to tell whether it happened failed too:
 * the outcome is unknown, so the read's error (usually transient) is the
 * one reported, and the job is retried rather than dead-lettered. */
static int read_back_failed(struct err *err, const struct err *read_err)
{
    *err = *read_err;
    return -1;
}

/* ---- users ------------------------------------------------------------- */

/* Whether a read of user that failed with body_status means "no such
 * user": 400 does; 403 does on 20.9-2021 servers but is also a refused
 * login, so list-users decides. */
static bool user_absent(struct action_ctx *ctx, const char *user, int body_status)
{
    json_object *list = NULL;
    struct err list_err;
    bool listed = false;

    if (body_status == 400)
        return true;
    if (body_status != 403 || call(ctx, COMET_LIST_USERS, NULL, 0, &list, NULL, &list_err) != 0)
        return false;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        const char *name = json_object_get_string(json_object_array_get_idx(list, i));
        if (name != NULL && strcmp(name, user) == 0)
            listed = true;
    }
    json_object_put(list);
    return !listed;
}

/* get-user-profile: *exists, and the profile when asked (caller puts). */
static int user_lookup(struct action_ctx *ctx, const char *user, bool *exists,
                       json_object **profile, struct err *err)
{
    struct comet_param p[] = { { "TargetUser", user } };
    json_object *out = NULL;
    int status = 0;

    *exists = false;
    if (profile != NULL)
        *profile = NULL;
    if (call(ctx, COMET_GET_USER_PROFILE, p, 1, &out, &status, err) != 0)
        return status != 0 && user_absent(ctx, user, status) ? 0 : -1;
    *exists = true;
    if (profile != NULL)
        *profile = out;
    else
        json_object_put(out);
    return 0;
}

/* get-user-profile-and-hash: *reply (caller puts) lends *profile and *hash. */
static int profile_read(struct action_ctx *ctx, const char *user, json_object **reply,
                        json_object **profile, const char **hash, struct err *err)
{
    struct comet_param p[] = { { "TargetUser", user } };
    json_object *h;
    int status = 0;

    if (call(ctx, COMET_GET_PROFILE_AND_HASH, p, 1, reply, &status, err) != 0) {
        if (status != 0 && user_absent(ctx, user, status))
            return err_set(err, ERR_USER_NOT_FOUND, "user %s not found", user);
        return -1;
    }
    if (!json_object_object_get_ex(*reply, "Profile", profile) ||
        !json_object_is_type(*profile, json_type_object) ||
        !json_object_object_get_ex(*reply, "ProfileHash", &h) ||
        !json_object_is_type(h, json_type_string) || json_object_get_string_len(h) == 0) {
        json_object_put(*reply);
        *reply = NULL;
        return err_set(err, ERR_COMET_BAD_RESPONSE,
                       "get-user-profile-and-hash: no Profile object or ProfileHash");
    }
    *hash = json_object_get_string(h);
    return 0;
}

/* A profile edit: 1 when it changed the profile, 0 when it already was as
 * wanted (nothing to write), -1 with err. */
typedef int (*profile_edit_fn)(json_object *profile, const void *arg, struct err *err);

/* Read, edit, compare-and-swap write. After a failed write the profile is
 * read again: a new hash means someone (maybe our own lost write) changed
 * it, so the edit is re-applied; the same hash means the write was really
 * refused. */
static int profile_update(struct action_ctx *ctx, const char *user, profile_edit_fn edit,
                          const void *arg, struct err *err)
{
    for (int attempt = 0; attempt < PROFILE_WRITE_ATTEMPTS; attempt++) {
        json_object *reply = NULL, *again = NULL, *profile, *out = NULL;
        const char *hash, *hash2;
        struct err read_err;
        bool same;
        int rc;

        if (profile_read(ctx, user, &reply, &profile, &hash, err) != 0)
            return -1;
        rc = edit(profile, arg, err);
        if (rc <= 0) {
            json_object_put(reply);
            return rc;
        }
        struct comet_param p[] = {
            { "TargetUser", user },
            { "ProfileData", json_object_to_json_string_ext(profile, json_flags) },
            { "RequireHash", hash },
        };
        if (p[1].value == NULL) {
            json_object_put(reply);
            return err_set(err, ERR_INTERNAL, "out of memory serialising a profile");
        }
        if (call(ctx, COMET_SET_PROFILE_HASH, p, 3, &out, NULL, err) == 0) {
            json_object_put(out);
            json_object_put(reply);
            return 0;
        }
        if (!maybe_done(err)) {
            json_object_put(reply);
            return -1;
        }
        if (profile_read(ctx, user, &again, &profile, &hash2, &read_err) != 0) {
            /* Whether the write happened is unknown: report the read's
             * failure (usually transient), not the write's refusal, so the
             * job is retried instead of dead-lettered. */
            json_object_put(reply);
            return read_back_failed(err, &read_err);
        }
        same = strcmp(hash, hash2) == 0;
        json_object_put(again);
        json_object_put(reply);
        if (same)
            return -1; /* nothing changed under us: the refusal was real */
        log_info("profile of %s changed during our write; re-applying (attempt %d)", user,
                 attempt + 2);
    }
    return err_set(err, ERR_HASH_CONFLICT, "profile of %s kept changing: %d attempts", user,
                   PROFILE_WRITE_ATTEMPTS);
}

/* Sets obj[key] = val (taken). 0, or -1 with err. */
static int put_field(json_object *obj, const char *key, json_object *val, struct err *err)
{
    if (val == NULL || json_object_object_add(obj, key, val) != 0) {
        json_object_put(val);
        return err_set(err, ERR_INTERNAL, "out of memory editing a profile");
    }
    return 0;
}

static int edit_suspended(json_object *profile, const void *arg, struct err *err)
{
    bool want = *(const bool *)arg;
    json_object *v;

    if (json_object_object_get_ex(profile, "IsSuspended", &v) &&
        json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v) == want)
        return 0;
    if (put_field(profile, "IsSuspended", json_object_new_boolean(want), err) != 0)
        return -1;
    return 1;
}

struct restrictions {
    const struct job_quotas *quotas;
    const char *policy_id;
};

static int edit_restrictions(json_object *profile, const void *arg, struct err *err)
{
    const struct restrictions *r = arg;
    const char *text = json_object_to_json_string_ext(profile, json_flags);
    char *before;
    int rc;

    /* The serialisation buffer is reused by the next call: copy it. */
    before = text != NULL ? strdup(text) : NULL;
    if (before == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory copying a profile");
    rc = account_apply_restrictions(profile, r->quotas, r->policy_id, err);
    if (rc == 0) {
        text = json_object_to_json_string_ext(profile, json_flags);
        rc = text == NULL ? err_set(err, ERR_INTERNAL, "out of memory serialising a profile")
                          : strcmp(before, text) != 0;
    }
    free(before);
    return rc;
}

static int apply_restrictions(struct action_ctx *ctx, const struct job *job, const char *user,
                              struct err *err)
{
    struct restrictions r = { &job->quotas, job->policy_group };

    return profile_update(ctx, user, edit_restrictions, &r, err);
}

/* ---- create: the steps ------------------------------------------------- */

/* Chooses the account name. A name an earlier attempt of this job chose
 * (recorded before add-user) is reused; if that account exists it is the
 * one this job created (*exists true). Otherwise the module's rule, with
 * a collision suffix while the name is taken. The name is recorded
 * together with the vault's "started" mark when the job asks for a vault
 * (*vault_marked set): one write instead of two, and a retry that finds
 * the mark only looks before asking again. */
static int create_choose_username(struct action_ctx *ctx, const struct job *job,
                                  const char *recorded, char *user, size_t len, bool *exists,
                                  bool *vault_marked, struct err *err)
{
    char base[ACCOUNT_USERNAME_MAX];

    snprintf(user, len, "%s", recorded);
    if (user[0] != '\0')
        return user_lookup(ctx, user, exists, NULL, err);

    if (account_base_username(job, account_rand_default, NULL, base, sizeof(base), err) != 0)
        return -1;
    snprintf(user, len, "%s", base);
    for (int i = 0; i < USERNAME_ATTEMPTS; i++) {
        if (user_lookup(ctx, user, exists, NULL, err) != 0)
            return -1;
        if (!*exists) {
            const char *fields[] = { STEP_USERNAME, STEP_VAULT };
            const char *values[] = { user, STEP_STARTED };
            size_t n = job->storage_provider[0] != '\0' && !*vault_marked ? 2 : 1;
            if (store_job_set_fields(ctx->store, job->job_id, n, fields, values,
                                     ctx->cfg->job_retention_seconds, err) != 0)
                return -1;
            if (n == 2)
                *vault_marked = true;
            return 0;
        }
        if (account_collision_username(base, account_rand_default, NULL, user, len, err) != 0)
            return -1;
    }
    return err_set(err, ERR_COMET_REJECTED, "no free username from %s after %d attempts", base,
                   USERNAME_ATTEMPTS);
}

/* policies/get; policies/set with the module's policy when it has no hash.
 * Writing under our own ID is idempotent: a repeat replaces, never adds. */
static int policy_ensure_on_server(struct action_ctx *ctx, const char *id, struct err *err)
{
    struct comet_param get_p[] = { { "PolicyID", id } };
    json_object *out = NULL, *hash, *policy;
    bool present = false;
    int rc;

    if (call(ctx, COMET_POLICIES_GET, get_p, 1, &out, NULL, err) == 0) {
        present = json_object_object_get_ex(out, "PolicyHash", &hash) &&
                  json_object_get_string_len(hash) > 0;
        json_object_put(out);
        out = NULL;
    } else if (err->code != ERR_COMET_REJECTED) {
        return -1; /* an unknown ID answers with an error body; anything else is a failure */
    }
    if (present)
        return 0;
    policy = account_policy_new(id);
    if (policy == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory building a policy");
    struct comet_param set_p[] = {
        { "PolicyID", id },
        { "Policy", json_object_to_json_string_ext(policy, json_flags) },
    };
    rc = set_p[1].value == NULL ? err_set(err, ERR_INTERNAL, "out of memory serialising a policy")
                                : call(ctx, COMET_POLICIES_SET, set_p, 2, &out, NULL, err);
    json_object_put(out);
    json_object_put(policy);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Makes sure the product's policy group exists on the server, once per
 * server across all workers (store cache + lock). */
static int create_policy(struct action_ctx *ctx, const struct job *job, struct err *err)
{
    const char *id = job->policy_group;
    const char *server = ctx->server->url;
    char lock[CONFIG_STR + 256], token[33];
    bool known = false, acquired = false;
    struct err rel_err;
    int rc;

    if (id[0] == '\0')
        return 0;
    if (store_policy_known(ctx->store, server, id, &known, err) != 0)
        return -1;
    if (known)
        return 0;
    snprintf(lock, sizeof(lock), "policy:%s:%s", server, id);
    for (int polls = 0; !acquired; polls++) {
        if (store_lock_acquire(ctx->store, lock, POLICY_LOCK_TTL_MS, token, &acquired, err) != 0)
            return -1;
        if (acquired)
            break;
        if (polls >= POLICY_LOCK_POLLS) {
            /* The holder is stuck; going ahead can only repeat an idempotent write. */
            log_warn("policy %s: lock still held after %d ms, proceeding", id,
                     POLICY_LOCK_POLLS * POLICY_LOCK_POLL_MS);
            break;
        }
        sleep_ms(POLICY_LOCK_POLL_MS);
        if (store_policy_known(ctx->store, server, id, &known, err) != 0)
            return -1;
        if (known)
            return 0;
    }
    rc = policy_ensure_on_server(ctx, id, err);
    if (rc == 0)
        rc = store_policy_remember(ctx->store, server, id, err);
    /* The lock expires by itself: a failed release only delays others. */
    if (acquired && store_lock_release(ctx->store, lock, token, &rel_err) != 0)
        log_warn("policy %s: lock release failed: %s", id, rel_err.msg);
    return rc;
}

/* add-user, unless this job's account already exists. When the answer is
 * lost (or the add is refused because a copy of this job got there
 * first), the account being there now means it was added for this job. */
static int create_user(struct action_ctx *ctx, const struct job *job, const char *user,
                       const char *password, bool exists, struct err *err)
{
    struct comet_param p[] = {
        { "TargetUser", user },
        { "TargetPassword", password },
        { "StoreRecoveryCode", "1" },
        { "RequirePasswordChange", "1" },
    };
    struct log_fields f = job_fields(job);
    json_object *out = NULL;
    struct err look_err;
    bool now = false;

    if (exists) {
        log_msgf(LOGL_INFO, &f, "account %s already created by an earlier attempt", user);
        return 0;
    }
    if (call(ctx, COMET_ADD_USER, p, job->require_password_change ? 4 : 3, &out, NULL, err) == 0) {
        json_object_put(out);
        return 0;
    }
    if (!maybe_done(err))
        return -1;
    if (user_lookup(ctx, user, &now, NULL, &look_err) != 0)
        return read_back_failed(err, &look_err);
    if (!now)
        return -1;
    log_msgf(LOGL_WARN, &f, "add-user of %s failed (%s) but the account exists: adopted", user,
             err_code_name(err->code));
    err_clear(err);
    return 0;
}

/* The provider's template description: what Comet writes into the new
 * destination's Description. Falls back to the key when not listed. */
static int provider_description(struct action_ctx *ctx, const char *provider, char *out,
                                size_t len, struct err *err)
{
    json_object *map = NULL, *desc;

    if (call(ctx, COMET_STORAGE_PROVIDERS, NULL, 0, &map, NULL, err) != 0)
        return -1;
    if (json_object_object_get_ex(map, provider, &desc) && json_object_is_type(desc, json_type_string))
        snprintf(out, len, "%s", json_object_get_string(desc));
    else
        snprintf(out, len, "%s", provider);
    json_object_put(map);
    return 0;
}

/* Finds this job's vault in the account: the recorded DestinationID when
 * present, else a destination made from the job's provider template. */
static int vault_find(struct action_ctx *ctx, const struct job *job, const char *user,
                      const char *recorded, char vault_id[VAULT_ID_MAX], struct err *err)
{
    json_object *profile = NULL, *dests, *desc;
    char want[512];
    bool exists;

    vault_id[0] = '\0';
    if (user_lookup(ctx, user, &exists, &profile, err) != 0)
        return -1;
    if (!exists)
        return err_set(err, ERR_USER_NOT_FOUND, "user %s not found", user);
    if (!json_object_object_get_ex(profile, "Destinations", &dests) ||
        !json_object_is_type(dests, json_type_object) || json_object_object_length(dests) == 0) {
        json_object_put(profile);
        return 0;
    }
    if (recorded[0] != '\0' && json_object_object_get_ex(dests, recorded, NULL)) {
        snprintf(vault_id, VAULT_ID_MAX, "%s", recorded);
        json_object_put(profile);
        return 0;
    }
    if (provider_description(ctx, job->storage_provider, want, sizeof(want), err) != 0) {
        json_object_put(profile);
        return -1;
    }
    json_object_object_foreach(dests, id, dest) {
        if (json_object_object_get_ex(dest, "Description", &desc) &&
            json_object_is_type(desc, json_type_string) &&
            strcmp(json_object_get_string(desc), want) == 0) {
            snprintf(vault_id, VAULT_ID_MAX, "%s", id);
            break;
        }
    }
    json_object_put(profile);
    return 0;
}

/* request-storage-vault, once per job: each call adds a vault, so an
 * earlier attempt's vault (recorded, or found after a lost answer) is
 * adopted instead of asking again. step is what earlier attempts recorded;
 * marked: the "started" mark is already written (by an earlier attempt or
 * with the username). A vault the server named in its answer is not
 * recorded separately: the job's result holds it, and a retry after a
 * crash in between finds it by looking (step is "started"). */
static int create_vault(struct action_ctx *ctx, const struct job *job, const char *user,
                        const char *recorded, const char *step, bool marked,
                        char vault_id[VAULT_ID_MAX], struct err *err)
{
    char self[CONFIG_STR + 2];
    int retention = ctx->cfg->job_retention_seconds;
    size_t url_len = strlen(ctx->server->url);
    json_object *out = NULL, *dest_id;
    struct err find_err;

    vault_id[0] = '\0';
    if (job->storage_provider[0] == '\0')
        return 0;
    if (strcmp(step, STEP_STARTED) == 0) {
        if (vault_find(ctx, job, user, recorded, vault_id, err) != 0)
            return -1;
        if (vault_id[0] != '\0')
            return strcmp(vault_id, recorded) == 0 ? 0
                   : store_job_set(ctx->store, job->job_id, STEP_VAULT_ID, vault_id, retention, err);
    }
    if (!marked && store_job_set(ctx->store, job->job_id, STEP_VAULT, STEP_STARTED, retention, err) != 0)
        return -1;
    /* SelfAddress is the server's own URL with a trailing slash, as the module sends. */
    snprintf(self, sizeof(self), "%s%s", ctx->server->url,
             url_len > 0 && ctx->server->url[url_len - 1] == '/' ? "" : "/");
    struct comet_param p[] = {
        { "TargetUser", user },
        { "StorageProvider", job->storage_provider },
        { "SelfAddress", self },
    };
    if (call(ctx, COMET_REQUEST_STORAGE_VAULT, p, 3, &out, NULL, err) == 0) {
        if (json_object_object_get_ex(out, "DestinationID", &dest_id) &&
            json_object_is_type(dest_id, json_type_string))
            snprintf(vault_id, VAULT_ID_MAX, "%s", json_object_get_string(dest_id));
        json_object_put(out);
        if (vault_id[0] != '\0')
            return 0;
        /* Servers before 19.8.0 do not name the new destination: look. */
        if (vault_find(ctx, job, user, "", vault_id, err) != 0)
            return -1;
    } else if (!maybe_done(err)) {
        return -1;
    } else if (vault_find(ctx, job, user, "", vault_id, &find_err) != 0) {
        return read_back_failed(err, &find_err);
    } else if (vault_id[0] == '\0') {
        return -1;
    }
    if (vault_id[0] == '\0')
        return 0; /* requested, but it cannot be identified: quotas still apply to it */
    /* Found by looking: recorded, so a retry need not look again. */
    return store_job_set(ctx->store, job->job_id, STEP_VAULT_ID, vault_id, retention, err);
}

/* ---- the actions ------------------------------------------------------- */

static int action_create(struct action_ctx *ctx, const struct job *job, const char *password,
                         struct result *res, struct err *err)
{
    char user[ACCOUNT_USERNAME_MAX], vault_id[VAULT_ID_MAX] = "";
    char rec_user[ACCOUNT_USERNAME_MAX], rec_vault_id[VAULT_ID_MAX], rec_vault[16];
    bool exists = false, vault_marked;

    if (password == NULL || password[0] == '\0')
        return err_set(err, ERR_BAD_FIELD, "create needs the account password");
    /* The steps an earlier attempt recorded (read by the gate under the
     * service lock, or here in one round trip). Only this job writes them,
     * under its service lock, so they cannot change between the read and
     * where each step uses them. */
    struct action_steps own;
    const struct action_steps *rec = ctx->steps;
    if (rec == NULL) {
        action_steps_init(&own);
        if (store_job_get_fields(ctx->store, job->job_id, own.fields.n, own.fields.names,
                                 own.fields.outs, own.fields.lens, err) != 0)
            return -1;
        rec = &own;
    }
    snprintf(rec_user, sizeof(rec_user), "%s", rec->username);
    snprintf(rec_vault_id, sizeof(rec_vault_id), "%s", rec->vault_id);
    snprintf(rec_vault, sizeof(rec_vault), "%s", rec->vault);
    vault_marked = rec_vault[0] != '\0';
    if (create_choose_username(ctx, job, rec_user, user, sizeof(user), &exists, &vault_marked,
                               err) != 0 ||
        create_policy(ctx, job, err) != 0 ||
        create_user(ctx, job, user, password, exists, err) != 0 ||
        create_vault(ctx, job, user, rec_vault_id, rec_vault, vault_marked, vault_id, err) != 0 ||
        apply_restrictions(ctx, job, user, err) != 0)
        return -1;
    snprintf(res->username, sizeof(res->username), "%s", user);
    snprintf(res->storage_vault_id, sizeof(res->storage_vault_id), "%s", vault_id);
    snprintf(res->policy_id, sizeof(res->policy_id), "%s", job->policy_group);
    return 0;
}

static int set_suspended(struct action_ctx *ctx, const struct job *job, bool suspended,
                         struct result *res, struct err *err)
{
    if (profile_update(ctx, job->username, edit_suspended, &suspended, err) != 0)
        return -1;
    snprintf(res->username, sizeof(res->username), "%s", job->username);
    return 0;
}

static int action_suspend(struct action_ctx *ctx, const struct job *job, const char *password,
                          struct result *res, struct err *err)
{
    (void)password;
    return set_suspended(ctx, job, true, res, err);
}

static int action_unsuspend(struct action_ctx *ctx, const struct job *job, const char *password,
                            struct result *res, struct err *err)
{
    (void)password;
    return set_suspended(ctx, job, false, res, err);
}

static int action_terminate(struct action_ctx *ctx, const struct job *job, const char *password,
                            struct result *res, struct err *err)
{
    struct comet_param p[] = { { "TargetUser", job->username } };
    json_object *out = NULL;
    struct err look_err;
    bool exists = true;

    (void)password;
    snprintf(res->username, sizeof(res->username), "%s", job->username);
    if (call(ctx, COMET_DELETE_USER, p, 1, &out, NULL, err) == 0) {
        json_object_put(out);
        return 0;
    }
    /* Already gone (our lost answer, or removed by hand): the goal holds. */
    if (!maybe_done(err))
        return -1;
    if (user_lookup(ctx, job->username, &exists, NULL, &look_err) != 0)
        return read_back_failed(err, &look_err);
    if (exists)
        return -1;
    err_clear(err);
    return 0;
}

static int action_change_package(struct action_ctx *ctx, const struct job *job,
                                 const char *password, struct result *res, struct err *err)
{
    (void)password;
    if (apply_restrictions(ctx, job, job->username, err) != 0)
        return -1;
    snprintf(res->username, sizeof(res->username), "%s", job->username);
    snprintf(res->policy_id, sizeof(res->policy_id), "%s", job->policy_group);
    return 0;
}

static int action_change_password(struct action_ctx *ctx, const struct job *job,
                                  const char *password, struct result *res, struct err *err)
{
    json_object *out = NULL;
    int status = 0;

    if (password == NULL)
        return err_set(err, ERR_BAD_FIELD, "change_password needs the new password");
    if (strlen(password) < PASSWORD_MIN_LEN)
        return err_set(err, ERR_PASSWORD_TOO_SHORT, "password under %d characters",
                       PASSWORD_MIN_LEN);
    struct comet_param p[] = { { "TargetUser", job->username }, { "NewPassword", password } };
    if (call(ctx, COMET_RESET_PASSWORD, p, 2, &out, &status, err) != 0) {
        if (status != 0 && user_absent(ctx, job->username, status))
            return err_set(err, ERR_USER_NOT_FOUND, "user %s not found", job->username);
        return -1;
    }
    json_object_put(out);
    snprintf(res->username, sizeof(res->username), "%s", job->username);
    return 0;
}

typedef int (*action_fn)(struct action_ctx *ctx, const struct job *job, const char *password,
                         struct result *res, struct err *err);

static const action_fn action_table[] = {
    [ACTION_CREATE]          = action_create,
    [ACTION_SUSPEND]         = action_suspend,
    [ACTION_UNSUSPEND]       = action_unsuspend,
    [ACTION_TERMINATE]       = action_terminate,
    [ACTION_CHANGE_PACKAGE]  = action_change_package,
    [ACTION_CHANGE_PASSWORD] = action_change_password,
};

_Static_assert(sizeof(action_table) / sizeof(action_table[0]) == ACTION__COUNT,
               "action_table needs one row per enum job_action");

int action_run(struct action_ctx *ctx, const struct job *job, const char *password,
               struct result *res, struct err *err)
{
    struct err local;

    if (err == NULL)
        err = &local;
    err_clear(err);
    if ((unsigned)job->action >= ACTION__COUNT)
        return err_set(err, ERR_BAD_ACTION, "unknown action %d", (int)job->action);
    if (job->action != ACTION_CREATE && job->username[0] == '\0')
        return err_set(err, ERR_BAD_FIELD, "%s needs account.username",
                       job_action_name(job->action));
    return action_table[job->action](ctx, job, password, res, err);
}
