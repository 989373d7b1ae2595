/* Account rules of the original WHMCS module: username choice, quotas, the
 * applyRestrictions profile edit and the module's policy group. */
#include "account.h"
#include "jsonobj.h"

#include <ctype.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* The module's collision suffix is rand(1000, 9999): always four digits. */
#define COLLISION_MIN 1000UL
#define COLLISION_SPAN 9000UL
/* Padding digits come from a six-digit number (100000..999999) so there
 * are always enough of them and the first is never 0. */
#define PAD_MIN 100000UL
#define PAD_SPAN 900000UL


unsigned long account_rand_default(void *ctx)
{
    (void)ctx;
    return (unsigned long)randombytes_random();
}

/* Copies s without leading and trailing white space into out. Returns
 * the copied length, or -1 when it does not fit. */
static long copy_trimmed(const char *s, char *out, size_t outlen)
{
    size_t len;

    while (*s != '\0' && isspace((unsigned char)*s))
        s++;
    len = strlen(s);
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len >= outlen)
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return (long)len;
}

int account_base_username(const struct job *job, account_rand_fn rnd, void *rnd_ctx,
                          char *out, size_t outlen, struct err *err)
{
    long len = 0;
    int n;

    if (outlen == 0)
        return err_set(err, ERR_INTERNAL, "username buffer empty");
    out[0] = '\0';
    if (job->custom_username) {
        len = copy_trimmed(job->username, out, outlen);
        if (len < 0)
            return err_set(err, ERR_BAD_FIELD, "custom username too long");
    }
    if (len == 0 && job->email[0] != '\0') {
        len = copy_trimmed(job->email, out, outlen);
        if (len < 0)
            return err_set(err, ERR_BAD_FIELD, "client email too long for a username");
    }
    if (len == 0 && job->firstname[0] != '\0') {
        n = snprintf(out, outlen, "%s%lld", job->firstname, job->service_id);
        if (n < 0 || (size_t)n >= outlen)
            return err_set(err, ERR_BAD_FIELD, "first name too long for a username");
        for (char *p = out; *p != '\0'; p++)
            *p = (char)tolower((unsigned char)*p);
        len = n;
    }
    if (len == 0) {
        n = snprintf(out, outlen, "user");
        if (n < 0 || (size_t)n >= outlen)
            return err_set(err, ERR_BAD_FIELD, "username buffer too small");
        len = n;
    }
    if (len < ACCOUNT_USERNAME_MIN) {
        char digits[16];
        size_t need = (size_t)(ACCOUNT_USERNAME_MIN - len);

        if ((size_t)len + need >= outlen)
            return err_set(err, ERR_BAD_FIELD, "username buffer too small");
        snprintf(digits, sizeof(digits), "%lu", PAD_MIN + rnd(rnd_ctx) % PAD_SPAN);
        memcpy(out + len, digits, need);
        out[(size_t)len + need] = '\0';
    }
    return 0;
}

int account_collision_username(const char *base, account_rand_fn rnd, void *rnd_ctx,
                               char *out, size_t outlen, struct err *err)
{
    int n = snprintf(out, outlen, "%s_%lu", base, COLLISION_MIN + rnd(rnd_ctx) % COLLISION_SPAN);

    if (n < 0 || (size_t)n >= outlen)
        return err_set(err, ERR_BAD_FIELD, "username too long for a collision suffix");
    return 0;
}

/* *out = value * unit, or -1 on overflow (value > 0, unit > 0). */
static int mul_bytes(long long value, long long unit, long long *out)
{
    if (value > LLONG_MAX / unit)
        return -1;
    *out = value * unit;
    return 0;
}

int account_quota_bytes(long long gb, long long tb, long long *bytes, bool *set,
                        struct err *err)
{
    *bytes = 0;
    *set = false;
    /* PHP empty(): 0 and absent (QUOTA_UNSET) both mean "not set". */
    if (gb > 0) {
        if (mul_bytes(gb, ACCOUNT_GB, bytes) != 0)
            return err_set(err, ERR_BAD_FIELD, "quota of %lld GB overflows", gb);
        *set = true;
    } else if (tb > 0) {
        if (mul_bytes(tb, ACCOUNT_TB, bytes) != 0)
            return err_set(err, ERR_BAD_FIELD, "quota of %lld TB overflows", tb);
        *set = true;
    }
    return 0;
}

/* Storage vault quota on every destination of the profile. */
static int apply_vault_quota(json_object *profile, long long bytes)
{
    json_object *dests;

    if (!json_object_object_get_ex(profile, "Destinations", &dests) ||
        !json_object_is_type(dests, json_type_object))
        return 0;
    json_object_object_foreach(dests, id, dest) {
        (void)id;
        if (!json_object_is_type(dest, json_type_object))
            continue;
        if (jsonobj_put(dest, "StorageLimitEnabled", json_object_new_boolean(1)) != 0 ||
            jsonobj_put(dest, "StorageLimitBytes", json_object_new_int64(bytes)) != 0)
            return -1;
    }
    return 0;
}

int account_apply_restrictions(json_object *profile, const struct job_quotas *q,
                               const char *policy_id, struct err *err)
{
    long long vault_bytes, items_bytes;
    bool vault_set, items_set;
    long long devices = q->number_of_devices > 0 ? q->number_of_devices : 0;

    if (!json_object_is_type(profile, json_type_object))
        return err_set(err, ERR_INTERNAL, "profile is not an object");
    if (account_quota_bytes(q->storage_vault_quota_gb, q->storage_vault_quota_tb,
                            &vault_bytes, &vault_set, err) != 0 ||
        account_quota_bytes(q->protected_item_quota_gb, q->protected_item_quota_tb,
                            &items_bytes, &items_set, err) != 0)
        return -1;

    /* Neither vault quota set: destinations stay as they are. */
    if (vault_set && apply_vault_quota(profile, vault_bytes) != 0)
        return err_set(err, ERR_INTERNAL, "out of memory editing destinations");
    if (jsonobj_put(profile, "AllProtectedItemsQuotaEnabled", json_object_new_boolean(items_set)) != 0 ||
        jsonobj_put(profile, "AllProtectedItemsQuotaBytes", json_object_new_int64(items_bytes)) != 0 ||
        jsonobj_put(profile, "MaximumDevices", json_object_new_int64(devices)) != 0 ||
        jsonobj_put(profile, "PolicyID", json_object_new_string(policy_id ? policy_id : "")) != 0)
        return err_set(err, ERR_INTERNAL, "out of memory editing profile");
    return 0;
}

/* The module's policy, field for field (comet-api.md section 4, Create
 * step 4); Description is set to the policy ID. No other field is sent.
 * 3 = "enforced on" (admin resets passwords); 1003 = Comet Server Storage
 * Role, the only vault kind users may have. */
static const char policy_template[] =
    "{\"Description\":\"\","
    "\"Policy\":{\"PreventChangeAccountPassword\":true,"
    "\"ModeAdminResetPassword\":3,"
    "\"PreventDeleteStorageVault\":true,"
    "\"PreventAddCustomStorageVault\":true,"
    "\"PreventRequestStorageVault\":true,"
    "\"StorageVaultProviders\":{\"AllowedProvidersWhenRestricted\":[1003],"
    "\"ShouldRestrictProviderList\":true},"
    "\"ProtectedItemEngineTypes\":{\"AllowedEngineTypeWhenRestricted\":[],"
    "\"ShouldRestrictEngineTypeList\":false}}}";

json_object *account_policy_new(const char *policy_id)
{
    json_object *policy = json_tokener_parse(policy_template);

    if (policy == NULL)
        return NULL;
    if (jsonobj_put(policy, "Description", json_object_new_string(policy_id)) != 0) {
        json_object_put(policy);
        return NULL;
    }
    return policy;
}
