/* Signing, sealing, ids. HMAC-SHA256 from OpenSSL's libcrypto; sealing with
 * libsodium crypto_secretbox (PHP's sodium extension speaks it too); base64
 * from libsodium; UUIDs from libuuid.
 *
 * Keys: each key id names one 32-byte master key (a file holding its
 * standard base64, mode 0600 or stricter, or an environment value). Two
 * sub-keys are derived so one secret is never used by two algorithms:
 *   sign key = HMAC-SHA256(master, "comet-sign-v1")
 *   seal key = HMAC-SHA256(master, "comet-seal-v1")
 * The PHP side derives them the same way with hash_hmac(..., true). */
#ifndef COMET_CRYPTO_H
#define COMET_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include "errors.h"

#define KEY_BYTES 32
#define KEY_ID_MAX 64
#define KEYRING_MAX 8
#define UUID_STR_LEN 37 /* 36 characters and the NUL */

struct key {
    char id[KEY_ID_MAX];
    unsigned char sign[KEY_BYTES]; /* derived signing sub-key */
    unsigned char seal[KEY_BYTES]; /* derived sealing sub-key */
};

/* Several keys for rotation; keys[0] is the active one, used to sign and
 * seal new messages. All are accepted for verification and unsealing. */
struct keyring {
    struct key keys[KEYRING_MAX];
    size_t count;
};

/* Calls sodium_init(); 0 on success. Call once at start-up. */
int crypto_init(void);

/* Adds a key from base64 text (whitespace trimmed). Returns 0, or -1 with err. */
int keyring_add_b64(struct keyring *kr, const char *id, const char *b64, struct err *err);
/* Adds a key from a file; refuses a file readable by group or others. */
int keyring_add_file(struct keyring *kr, const char *id, const char *path, struct err *err);
/* NULL when the id is unknown. */
const struct key *keyring_find(const struct keyring *kr, const char *id);
const struct key *keyring_active(const struct keyring *kr);
/* Zeroes every key. */
void keyring_clear(struct keyring *kr);

/* Reads a whole secret file (trimmed) into a malloc'd string the caller
 * frees; refuses group/other-readable files. NULL with err on failure. */
char *secret_file_read(const char *path, struct err *err);

/* Job signature: base64(HMAC-SHA256(key->sign, body)). Returns a malloc'd
 * string (caller frees) or NULL on allocation failure. */
char *sign_body_b64(const struct key *key, const void *body, size_t len);
/* Constant-time check of a job signature. */
bool sign_body_verify(const struct key *key, const void *body, size_t len, const char *sig_b64);

/* Callback signature: hex(HMAC-SHA256(secret, "<ts>." + body)) into out[65]. */
void sign_callback_hex(const unsigned char *secret, size_t secret_len, long long ts,
                       const void *body, size_t len, char out[65]);
bool sign_callback_verify(const unsigned char *secret, size_t secret_len, long long ts,
                          const void *body, size_t len, const char *hex);

/* Seals a password: malloc'd base64 nonce and box (caller frees both).
 * Returns 0, or -1 with err. */
int seal_password(const struct key *key, const char *password, char **nonce_b64,
                  char **box_b64, struct err *err);
/* Opens a sealed password into out (NUL-terminated). Returns 0, or -1 with
 * err ERR_BAD_SEAL; out is zeroed on failure. */
int unseal_password(const struct key *key, const char *nonce_b64, const char *box_b64,
                    char *out, size_t outlen, struct err *err);

/* A random (version 4) UUID, lower case. */
void uuid4(char out[UUID_STR_LEN]);

/* Standard base64 with padding; malloc'd, caller frees; NULL on failure. */
char *b64_encode(const unsigned char *bin, size_t len);
/* Decodes into out; returns the decoded length, or -1 when not base64 or too long. */
long b64_decode(const char *b64, unsigned char *out, size_t outlen);

#endif
