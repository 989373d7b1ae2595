/* Admin API endpoints of the fake Comet Server: one table of endpoint ->
 * required parameters -> handler, run against the shared state. */
#include "handlers.h"
#include "jsonobj.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "state.h"

/* What meta/version reports; the version the API notes were written for. */
#define FAKE_VERSION "25.9.8"
#define FAKE_VERSION_CODENAME "Voyager"
/* DestinationType of a Comet Server Storage Role vault. */
#define FAKE_DESTINATION_COMET_STORAGE 1003
/* Required parameters per endpoint, beyond the auth fields. */
#define HANDLER_MAX_REQUIRED 3

/* A handler runs with the state lock held and returns a new reply object
 * (caller puts), or NULL on out of memory. */
typedef json_object *(*handler_fn)(const struct form *form);

struct handler_row {
    const char *name;                             /* path after /api/v1/admin/ */
    const char *required[HANDLER_MAX_REQUIRED];   /* checked before the handler */
    handler_fn fn;
};

/* ---- reply helpers ---- */

/* {"Status": status, "Message": msg}: the generic Comet reply. */
static json_object *reply_status(int status, const char *msg)
{
    json_object *r = json_object_new_object();
    if (r == NULL)
        return NULL;
    if (jsonobj_put(r, "Status", json_object_new_int(status)) != 0 ||
        jsonobj_put(r, "Message", json_object_new_string(msg)) != 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

static json_object *reply_ok(void) { return reply_status(200, "OK"); }

/* The missing-user reply of reads: 400 since 2022, 403 in older servers. */
static json_object *reply_missing_user(void)
{
    if (state_options()->missing_user_403)
        return reply_status(403, "Unauthorised");
    return reply_status(400, "User not found");
}

/* GetProfileAndHashResponseMessage for a user record; the profile is
 * shared with the state, so the reply must be serialised under the lock. */
static json_object *reply_profile_and_hash(json_object *rec)
{
    json_object *r = reply_ok();
    if (r == NULL)
        return NULL;
    if (jsonobj_put(r, "ProfileHash", json_object_new_string(state_user_hash(rec))) != 0 ||
        jsonobj_put(r, "Profile", json_object_get(state_user_profile(rec))) != 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

/* A form flag: "1" (any non-zero integer) is on. */
static bool form_flag(const struct form *form, const char *key)
{
    const char *v = form_find(form, key);
    if (v == NULL || v[0] == '\0')
        return false;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n != 0;
}

/* Parses a JSON parameter that must be an object; NULL when it is not. */
static json_object *form_json_object(const struct form *form, const char *key)
{
    const char *v = form_find(form, key);
    if (v == NULL)
        return NULL;
    json_object *obj = json_tokener_parse(v);
    if (obj != NULL && !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* ---- meta and policies ---- */

static json_object *handle_meta_version(const struct form *form)
{
    (void)form;
    json_object *r = json_object_new_object();
    if (r == NULL)
        return NULL;
    if (jsonobj_put(r, "Version", json_object_new_string(FAKE_VERSION)) != 0 ||
        jsonobj_put(r, "VersionCodename", json_object_new_string(FAKE_VERSION_CODENAME)) != 0 ||
        jsonobj_put(r, "AuthenticationRole", json_object_new_boolean(1)) != 0 ||
        jsonobj_put(r, "StorageRole", json_object_new_boolean(1)) != 0 ||
        jsonobj_put(r, "ServerStartTime", json_object_new_int64(state_start_time())) != 0 ||
        jsonobj_put(r, "CurrentTime", json_object_new_int64((int64_t)time(NULL))) != 0 ||
        jsonobj_put(r, "ServerStartHash", json_object_new_string(state_start_hash())) != 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

static json_object *handle_policies_list(const struct form *form)
{
    const char *org = form_find(form, "TargetOrganization");
    json_object *r = json_object_new_object();
    if (r == NULL)
        return NULL;
    json_object_object_foreach(state_policies(), id, rec) {
        json_object *policy = NULL, *v;
        json_object_object_get_ex(rec, "policy", &policy);
        if (org != NULL && org[0] != '\0') {
            const char *porg = "";
            if (json_object_object_get_ex(policy, "OrganizationID", &v) &&
                json_object_is_type(v, json_type_string))
                porg = json_object_get_string(v);
            if (strcmp(porg, org) != 0)
                continue;
        }
        const char *desc = "";
        if (json_object_object_get_ex(policy, "Description", &v) &&
            json_object_is_type(v, json_type_string))
            desc = json_object_get_string(v);
        if (jsonobj_put(r, id, json_object_new_string(desc)) != 0) {
            json_object_put(r);
            return NULL;
        }
    }
    return r;
}

static json_object *handle_policies_get(const struct form *form)
{
    json_object *rec = state_policy_find(form_find(form, "PolicyID"));
    if (rec == NULL)
        return reply_status(400, "Policy not found");
    json_object *policy = NULL, *hash = NULL;
    json_object_object_get_ex(rec, "policy", &policy);
    json_object_object_get_ex(rec, "hash", &hash);
    json_object *r = reply_ok();
    if (r == NULL)
        return NULL;
    if (jsonobj_put(r, "Policy", json_object_get(policy)) != 0 ||
        jsonobj_put(r, "PolicyHash", json_object_get(hash)) != 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

static json_object *handle_policies_set(const struct form *form)
{
    const char *id = form_find(form, "PolicyID");
    const char *check = form_find(form, "CheckPolicyHash");
    if (id[0] == '\0')
        return reply_status(400, "Invalid PolicyID");
    json_object *policy = form_json_object(form, "Policy");
    if (policy == NULL)
        return reply_status(400, "Invalid Policy: expected a JSON object");
    if (check != NULL && check[0] != '\0') {
        json_object *rec = state_policy_find(id), *hash;
        if (rec == NULL || !json_object_object_get_ex(rec, "hash", &hash) ||
            strcmp(json_object_get_string(hash), check) != 0) {
            json_object_put(policy);
            return reply_status(state_options()->conflict_status, "hash mismatch");
        }
    }
    if (state_policy_set(id, policy) != 0)
        return NULL;
    return reply_ok();
}

static json_object *handle_policies_new(const struct form *form)
{
    char id[STATE_GUID_LEN];
    json_object *policy = form_json_object(form, "Policy");
    if (policy == NULL)
        return reply_status(400, "Invalid Policy: expected a JSON object");
    state_random_guid(id);
    if (state_policy_set(id, policy) != 0)
        return NULL;
    json_object *rec = state_policy_find(id), *hash = NULL;
    json_object_object_get_ex(rec, "hash", &hash);
    json_object *r = reply_ok();
    if (r == NULL)
        return NULL;
    /* Like the real server: the reply names the hash, not the new ID. */
    if (jsonobj_put(r, "PolicyHash", json_object_get(hash)) != 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

static json_object *handle_storage_providers(const struct form *form)
{
    (void)form;
    return json_object_get(state_options()->providers);
}

/* ---- users ---- */

static json_object *handle_add_user(const struct form *form)
{
    const char *name = form_find(form, "TargetUser");
    const char *password = form_find(form, "TargetPassword");
    const char *org = form_find(form, "TargetOrganization");
    if (name[0] == '\0')
        return reply_status(400, "Invalid username");
    if (password[0] == '\0')
        return reply_status(400, "Invalid password");
    if (state_user_find(name) != NULL)
        return reply_status(400, "User already exists");
    if (state_user_add(name, password, form_flag(form, "StoreRecoveryCode"),
                       form_flag(form, "RequirePasswordChange"), org ? org : "") != 0)
        return NULL;
    return reply_ok();
}

static json_object *handle_get_user_profile(const struct form *form)
{
    json_object *rec = state_user_find(form_find(form, "TargetUser"));
    if (rec == NULL)
        return reply_missing_user();
    return json_object_get(state_user_profile(rec));
}

static json_object *handle_get_profile_and_hash(const struct form *form)
{
    json_object *rec = state_user_find(form_find(form, "TargetUser"));
    if (rec == NULL)
        return reply_missing_user();
    return reply_profile_and_hash(rec);
}

/* The UserProfileConfig members the server decodes as maps. */
static const char *const profile_map_keys[] = { "Destinations", "Sources", "BackupRules", "Devices" };

/* NULL when profile may be stored for user, else the reason. */
static const char *profile_check(json_object *profile, const char *user)
{
    json_object *v;
    if (!json_object_object_get_ex(profile, "Username", &v) ||
        !json_object_is_type(v, json_type_string) ||
        strcmp(json_object_get_string(v), user) != 0)
        return "Invalid ProfileData: Username does not match TargetUser";
    for (size_t i = 0; i < sizeof(profile_map_keys) / sizeof(profile_map_keys[0]); i++) {
        if (json_object_object_get_ex(profile, profile_map_keys[i], &v) &&
            !json_object_is_type(v, json_type_object))
            return "Invalid ProfileData: a map field is not a JSON object";
    }
    return NULL;
}

/* The write reply: 25.6.8 shape, or {Status, Message} for older servers. */
static json_object *reply_write(json_object *rec)
{
    if (state_options()->old_set_reply)
        return reply_ok();
    return reply_profile_and_hash(rec);
}

static json_object *handle_set_profile_hash(const struct form *form)
{
    const char *user = form_find(form, "TargetUser");
    json_object *rec = state_user_find(user);
    if (rec == NULL)
        return reply_status(400, "User not found");
    json_object *profile = form_json_object(form, "ProfileData");
    if (profile == NULL)
        return reply_status(400, "Invalid ProfileData: expected a JSON object");
    const char *why = profile_check(profile, user);
    if (why != NULL) {
        json_object_put(profile);
        return reply_status(400, why);
    }
    if (strcmp(form_find(form, "RequireHash"), state_user_hash(rec)) != 0) {
        json_object_put(profile);
        return reply_status(state_options()->conflict_status, "hash mismatch");
    }
    /* Stored whole, as sent: a client that drops fields loses them. */
    if (state_user_set_profile(rec, profile) != 0)
        return NULL;
    return reply_write(rec);
}

static json_object *handle_reset_password(const struct form *form)
{
    json_object *rec = state_user_find(form_find(form, "TargetUser"));
    const char *new_password = form_find(form, "NewPassword");
    const char *old_password = form_find(form, "OldPassword");
    if (rec == NULL)
        return reply_status(400, "User not found");
    if (new_password[0] == '\0')
        return reply_status(400, "Invalid password");
    /* Without a recovery code the server cannot re-key the account's
     * encryption material, so it needs the old password. */
    if (!state_user_has_recovery(rec) &&
        (old_password == NULL || strcmp(old_password, state_user_password(rec)) != 0))
        return reply_status(400, "Incorrect old password and no recovery code held");
    if (state_user_set_password(rec, new_password) != 0)
        return NULL;
    return reply_ok();
}

static json_object *handle_delete_user(const struct form *form)
{
    const char *name = form_find(form, "TargetUser");
    if (state_user_find(name) == NULL)
        return reply_status(400, "User not found");
    state_user_delete(name);
    return reply_ok();
}

/* A new DestinationConfig for a storage template, as the server makes it. */
static json_object *destination_new(const char *description)
{
    json_object *d = json_object_new_object();
    if (d == NULL)
        return NULL;
    if (jsonobj_put(d, "Description", json_object_new_string(description)) != 0 ||
        jsonobj_put(d, "DestinationType", json_object_new_int(FAKE_DESTINATION_COMET_STORAGE)) != 0 ||
        jsonobj_put(d, "StorageLimitEnabled", json_object_new_boolean(0)) != 0 ||
        jsonobj_put(d, "StorageLimitBytes", json_object_new_int64(0)) != 0 ||
        jsonobj_put(d, "StorageLimitID", json_object_new_string("")) != 0 ||
        jsonobj_put(d, "AssociatedDevices", json_object_new_array()) != 0 ||
        jsonobj_put(d, "CreateTime", json_object_new_int64((int64_t)time(NULL))) != 0) {
        json_object_put(d);
        return NULL;
    }
    return d;
}

static json_object *handle_request_vault(const struct form *form)
{
    json_object *rec = state_user_find(form_find(form, "TargetUser"));
    json_object *desc, *dests;
    char id[STATE_GUID_LEN];
    if (rec == NULL)
        return reply_status(400, "User not found");
    if (!json_object_object_get_ex(state_options()->providers, form_find(form, "StorageProvider"),
                                   &desc))
        return reply_status(400, "Unknown storage provider");
    json_object *profile = state_user_profile(rec);
    if (!json_object_object_get_ex(profile, "Destinations", &dests) ||
        !json_object_is_type(dests, json_type_object)) {
        /* A profile stored without the map: the server starts a new one. */
        dests = json_object_new_object();
        if (jsonobj_put(profile, "Destinations", dests) != 0)
            return NULL;
    }
    state_random_guid(id);
    if (jsonobj_put(dests, id, destination_new(json_object_get_string(desc))) != 0 ||
        state_user_touch(rec) != 0)
        return NULL;
    json_object *r = state_options()->old_set_reply ? reply_ok() : reply_profile_and_hash(rec);
    if (r == NULL)
        return NULL;
    if (jsonobj_put(r, "DestinationID", json_object_new_string(id)) != 0) {
        json_object_put(r);
        return NULL;
    }
    return r;
}

static json_object *handle_list_users(const struct form *form)
{
    (void)form;
    json_object *r = json_object_new_array();
    if (r == NULL)
        return NULL;
    json_object_object_foreach(state_users(), name, rec) {
        (void)rec;
        json_object *s = json_object_new_string(name);
        if (s == NULL || json_object_array_add(r, s) != 0) {
            json_object_put(s);
            json_object_put(r);
            return NULL;
        }
    }
    return r;
}

static json_object *handle_list_users_full(const struct form *form)
{
    (void)form;
    json_object *r = json_object_new_object();
    if (r == NULL)
        return NULL;
    json_object_object_foreach(state_users(), name, rec) {
        if (jsonobj_put(r, name, json_object_get(state_user_profile(rec))) != 0) {
            json_object_put(r);
            return NULL;
        }
    }
    return r;
}

/* ---- the table ---- */

static const struct handler_row handler_table[] = {
    { "meta/version", { NULL }, handle_meta_version },
    { "policies/list", { NULL }, handle_policies_list },
    { "policies/get", { "PolicyID" }, handle_policies_get },
    { "policies/set", { "PolicyID", "Policy" }, handle_policies_set },
    { "policies/new", { "Policy" }, handle_policies_new },
    { "request-storage-vault-providers", { NULL }, handle_storage_providers },
    { "add-user", { "TargetUser", "TargetPassword" }, handle_add_user },
    { "get-user-profile", { "TargetUser" }, handle_get_user_profile },
    { "get-user-profile-and-hash", { "TargetUser" }, handle_get_profile_and_hash },
    { "set-user-profile-hash", { "TargetUser", "ProfileData", "RequireHash" },
      handle_set_profile_hash },
    { "reset-user-password", { "TargetUser", "NewPassword" }, handle_reset_password },
    { "delete-user", { "TargetUser" }, handle_delete_user },
    { "request-storage-vault", { "TargetUser", "StorageProvider" }, handle_request_vault },
    { "list-users", { NULL }, handle_list_users },
    { "list-users-full", { NULL }, handle_list_users_full },
};
#define HANDLER_COUNT (sizeof(handler_table) / sizeof(handler_table[0]))
_Static_assert(HANDLER_COUNT <= HANDLERS_MAX, "fault masks hold HANDLERS_MAX endpoints");

int handlers_find(const char *endpoint)
{
    for (size_t i = 0; i < HANDLER_COUNT; i++)
        if (strcmp(handler_table[i].name, endpoint) == 0)
            return (int)i;
    return -1;
}

const char *handlers_name(int idx)
{
    if (idx < 0 || (size_t)idx >= HANDLER_COUNT)
        return NULL;
    return handler_table[idx].name;
}

size_t handlers_count(void) { return HANDLER_COUNT; }

/* Equal strings in time that depends on the lengths only (no early exit
 * on the first differing byte). */
static bool handlers_secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t n = la > lb ? la : lb;
    unsigned int diff = (unsigned int)(la != lb);
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        unsigned char cb = i < lb ? (unsigned char)b[i] : 0;
        diff |= (unsigned int)(ca ^ cb);
    }
    return diff == 0;
}

static bool handlers_auth_ok(const struct form *form)
{
    const struct fake_options *o = state_options();
    const char *user = form_find(form, "Username");
    const char *type = form_find(form, "AuthType");
    const char *password = form_find(form, "Password");
    if (user == NULL || type == NULL || password == NULL)
        return false;
    bool user_ok = strcmp(user, o->admin_user) == 0;
    bool pass_ok = handlers_secret_equal(password, o->admin_password);
    return user_ok && pass_ok && strcmp(type, "Password") == 0;
}

int handlers_call(int idx, const struct form *form, struct api_reply *out)
{
    const struct handler_row *row = &handler_table[idx];
    json_object *reply = NULL;
    char missing[96];
    int rc = -1;

    out->http_status = 200;
    out->body = NULL;
    state_lock();
    if (!handlers_auth_ok(form)) {
        reply = reply_status(403, "Unauthorised");
        if (state_options()->auth_http_403)
            out->http_status = 403;
    } else {
        for (size_t i = 0; i < HANDLER_MAX_REQUIRED && row->required[i] != NULL; i++) {
            if (form_find(form, row->required[i]) == NULL) {
                snprintf(missing, sizeof(missing), "Missing required parameter '%s'",
                         row->required[i]);
                reply = reply_status(400, missing);
                goto serialise;
            }
        }
        reply = row->fn(form);
    }
serialise:
    if (reply != NULL) {
        /* Serialise under the lock: the reply may share state objects. */
        const char *text = json_object_to_json_string_ext(
            reply, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (text != NULL) {
            out->body = strdup(text);
            rc = out->body ? 0 : -1;
        }
        json_object_put(reply);
    }
    state_unlock();
    return rc;
}
