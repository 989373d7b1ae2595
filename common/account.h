/* Account rules of the original WHMCS module as pure functions (no I/O):
 * username choice, quota arithmetic, the profile edit of applyRestrictions
 * and the policy group the module creates. Unit-tested in isolation. */
#ifndef COMET_ACCOUNT_H
#define COMET_ACCOUNT_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include "errors.h"
#include "job.h"

/* The module pads short usernames to this many characters. */
#define ACCOUNT_USERNAME_MIN 6
/* Room for a username plus NUL (job.h username field size). */
#define ACCOUNT_USERNAME_MAX 256

#define ACCOUNT_GB (1024LL * 1024LL * 1024LL)
#define ACCOUNT_TB (1024LL * ACCOUNT_GB)

/* Randomness source, injected so tests are deterministic: returns any
 * unsigned value; callers reduce it to the range they need. */
typedef unsigned long (*account_rand_fn)(void *ctx);

/* The default source (libsodium randombytes_random); ctx unused. */
unsigned long account_rand_default(void *ctx);

/* Base username of a new account (comet-api.md section 4, Create step 1):
 * trimmed job->username when job->custom_username and non-empty, else
 * job->email, else lowercase(firstname + service_id), else "user"; under
 * ACCOUNT_USERNAME_MIN characters, leading digits of a random number are
 * appended up to that length. Returns 0, or -1 with ERR_BAD_FIELD when the
 * name does not fit outlen. */
int account_base_username(const struct job *job, account_rand_fn rnd, void *rnd_ctx,
                          char *out, size_t outlen, struct err *err);

/* The next candidate after a collision: base + "_" + 4 random digits
 * (1000..9999). Returns 0, or -1 with ERR_BAD_FIELD when it does not fit. */
int account_collision_username(const char *base, account_rand_fn rnd, void *rnd_ctx,
                               char *out, size_t outlen, struct err *err);

/* Quota in bytes from a gb/tb pair as the module reads it: gb when > 0
 * (gb * 1024^3), else tb when > 0 (tb * 1024^4), else unset (*set false,
 * *bytes 0). Returns 0, or -1 with ERR_BAD_FIELD when the product
 * overflows a signed 64-bit integer. */
int account_quota_bytes(long long gb, long long tb, long long *bytes, bool *set,
                        struct err *err);

/* Edits profile (a UserProfileConfig) in place like the module's
 * applyRestrictions: storage vault quota on every destination when set and
 * Destinations is non-empty; protected items quota enabled with bytes, or
 * disabled with 0; MaximumDevices = number_of_devices or 0; PolicyID =
 * policy_id or "". Every other field, known or not, is kept. Returns 0,
 * or -1 with err (ERR_BAD_FIELD: overflow; ERR_INTERNAL: out of memory or
 * profile not an object); the profile may then be partly edited. */
int account_apply_restrictions(json_object *profile, const struct job_quotas *q,
                               const char *policy_id, struct err *err);

/* The GroupPolicy the module creates for policy_id (section 4, Create
 * step 4), as a new object the caller puts; NULL on out of memory. */
json_object *account_policy_new(const char *policy_id);

#endif
