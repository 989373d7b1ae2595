/* The fake Comet Server's in-memory state: users, policies, counters and the
 * live fault settings, all behind one mutex. */
#ifndef FAKE_STATE_H
#define FAKE_STATE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

#include "fault.h"

/* Behaviour switches fixed at start (command line). */
struct fake_options {
    char *admin_user;          /* owned; expected Username */
    char *admin_password;      /* owned; expected Password */
    bool auth_http_403;        /* auth failure as HTTP 403 instead of 200 */
    bool missing_user_403;     /* missing user on reads as 403 Unauthorised */
    bool old_set_reply;        /* pre-25.6.8 write replies (no hash/profile) */
    int conflict_status;       /* body Status for a stale RequireHash */
    json_object *providers;    /* owned; {providerID: description} */
};

/* Room for the 32 hex digits of a profile or policy hash plus NUL. */
#define STATE_HASH_LEN 33
/* Room for a textual GUID plus NUL. */
#define STATE_GUID_LEN 37

/* Takes ownership of the strings and providers in opts (opts is cleared).
 * Returns 0, or -1 on out of memory. */
int state_init(struct fake_options *opts);
/* Frees everything state_init and later calls allocated. */
void state_free(void);

void state_lock(void);
void state_unlock(void);

/* Everything below needs the lock held. */
const struct fake_options *state_options(void);
const char *state_start_hash(void);
long long state_start_time(void);

/* A user's record {"profile", "profile_hash", "password",
 * "has_recovery_code"}, lent; NULL when absent. */
json_object *state_user_find(const char *name);
/* The whole users map {name: record}, lent. */
json_object *state_users(void);
/* Fields of a record, lent; the strings die at the record's next write. */
json_object *state_user_profile(json_object *rec);
const char *state_user_hash(json_object *rec);
const char *state_user_password(json_object *rec);
bool state_user_has_recovery(json_object *rec);

/* Creates a user with a fresh UserProfileConfig. Returns 0, or -1 on out
 * of memory (nothing added). The caller checks uniqueness first. */
int state_user_add(const char *name, const char *password, bool store_recovery,
                   bool require_change, const char *organization);
void state_user_delete(const char *name);
/* Replaces the profile (takes profile, even on failure) and the hash. */
int state_user_set_profile(json_object *rec, json_object *profile);
/* Gives the record a new hash after an in-place edit of its profile. */
int state_user_touch(json_object *rec);
/* New password (and a new recovery code when one is held), new hash. */
int state_user_set_password(json_object *rec, const char *password);

/* A policy's record {"policy", "hash"}, lent; NULL when absent. */
json_object *state_policy_find(const char *id);
json_object *state_policies(void);
/* Creates or replaces policy id (takes policy, even on failure). */
int state_policy_set(const char *id, json_object *policy);

/* Counters: calls per endpoint row and injected faults. */
void state_count_call(int idx);
void state_count_fault(void);

struct fault_config *state_faults(void);

/* The /__fake/state document (new object, caller puts); NULL on OOM. */
json_object *state_snapshot(void);
/* Empties users, policies and counters and switches faults off. Returns
 * 0, or -1 on out of memory with nothing changed. */
int state_reset(void);

/* Random helpers; thread-safe, no lock needed. */
void state_random_hex(char *out, size_t nbytes); /* 2*nbytes digits + NUL */
void state_random_guid(char out[STATE_GUID_LEN]);
double state_random_unit(void);                  /* uniform in [0, 1) */

#endif
