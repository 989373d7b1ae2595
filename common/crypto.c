/* Signing (HMAC-SHA256), password sealing (secretbox), key files, base64 and UUIDs. */
#include "crypto.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <uuid/uuid.h>

/* Domain-separation labels: changing one invalidates every key on both sides. */
#define KDF_SIGN_LABEL "comet-sign-v1"
#define KDF_SEAL_LABEL "comet-seal-v1"

/* A key or secret file is a line of base64 or a short token; anything bigger
 * is the wrong file, and reading it whole would be pointless. */
#define SECRET_FILE_MAX 4096

/* Base64 of a 32-byte HMAC is 44 characters; decoding into a larger buffer
 * lets an over-long signature be told apart from a short one. */
#define SIG_DECODE_MAX 64

#define B64_VARIANT sodium_base64_VARIANT_ORIGINAL

/* ---- base64 ------------------------------------------------------------- */

char *b64_encode(const unsigned char *bin, size_t len)
{
    size_t out_len = sodium_base64_encoded_len(len, B64_VARIANT);
    char *out = malloc(out_len);
    if (out == NULL)
        return NULL;
    sodium_bin2base64(out, out_len, bin, len, B64_VARIANT);
    return out;
}

long b64_decode(const char *b64, unsigned char *out, size_t outlen)
{
    size_t bin_len = 0;
    if (b64 == NULL)
        return -1;
    /* No ignore set and no end pointer: libsodium then rejects whitespace,
     * missing padding, trailing bytes and non-zero padding bits, so one
     * signature has exactly one accepted spelling. */
    if (sodium_base642bin(out, outlen, b64, strlen(b64), NULL, &bin_len, NULL,
                          B64_VARIANT) != 0)
        return -1;
    if (bin_len > (size_t)LONG_MAX)
        return -1;
    return (long)bin_len;
}

/* ---- HMAC --------------------------------------------------------------- */

/* One-shot HMAC-SHA256. Returns 0, or -1 when libcrypto fails (it only does
 * on allocation failure). */
static int hmac_sha256(const unsigned char *key, size_t key_len, const void *data,
                       size_t len, unsigned char out[KEY_BYTES])
{
    /* HMAC() treats a NULL key specially; an empty key must still be a key. */
    static const unsigned char empty = 0;
    unsigned int out_len = 0;
    if (key_len > INT_MAX)
        return -1;
    if (HMAC(EVP_sha256(), key_len ? key : &empty, (int)key_len,
             len ? data : &empty, len, out, &out_len) == NULL)
        return -1;
    return out_len == KEY_BYTES ? 0 : -1;
}

static void hex_encode(const unsigned char *bin, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

/* ---- key ring ----------------------------------------------------------- */

int crypto_init(void)
{
    /* 1 means already initialised, which is fine. */
    return sodium_init() < 0 ? -1 : 0;
}

/* Trims leading and trailing whitespace in place; wipes the bytes it drops
 * from the end so no copy of secret material lingers past the terminator. */
static void trim_in_place(char *s)
{
    size_t len = strlen(s);
    size_t start = 0;
    while (start < len && isspace((unsigned char)s[start]))
        start++;
    size_t end = len;
    while (end > start && isspace((unsigned char)s[end - 1]))
        end--;
    size_t n = end - start;
    if (start > 0)
        memmove(s, s + start, n);
    sodium_memzero(s + n, len - n);
}

int keyring_add_b64(struct keyring *kr, const char *id, const char *b64, struct err *err)
{
    if (kr == NULL || id == NULL || b64 == NULL)
        return err_set(err, ERR_INTERNAL, "keyring_add_b64: NULL argument");
    size_t id_len = strlen(id);
    if (id_len == 0 || id_len >= KEY_ID_MAX)
        return err_set(err, ERR_BAD_FIELD, "key id must be 1..%d characters", KEY_ID_MAX - 1);
    if (keyring_find(kr, id) != NULL)
        return err_set(err, ERR_BAD_FIELD, "key '%s' is already in the key ring", id);
    if (kr->count >= KEYRING_MAX)
        return err_set(err, ERR_BAD_FIELD, "key ring full (%d keys)", KEYRING_MAX);

    size_t b64_len = strlen(b64);
    char *text = malloc(b64_len + 1);
    if (text == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory");
    memcpy(text, b64, b64_len + 1);
    trim_in_place(text);

    /* One spare byte so a 33-byte key is seen as too long, not truncated. */
    unsigned char master[KEY_BYTES + 1];
    long n = b64_decode(text, master, sizeof(master));
    sodium_memzero(text, b64_len + 1);
    free(text);
    if (n != KEY_BYTES) {
        sodium_memzero(master, sizeof(master));
        return err_set(err, ERR_BAD_FIELD,
                       "key '%s': must be standard base64 of exactly %d bytes", id, KEY_BYTES);
    }

    struct key *k = &kr->keys[kr->count];
    memset(k, 0, sizeof(*k));
    memcpy(k->id, id, id_len + 1);
    int rc = hmac_sha256(master, KEY_BYTES, KDF_SIGN_LABEL, strlen(KDF_SIGN_LABEL), k->sign);
    if (rc == 0)
        rc = hmac_sha256(master, KEY_BYTES, KDF_SEAL_LABEL, strlen(KDF_SEAL_LABEL), k->seal);
    sodium_memzero(master, sizeof(master));
    if (rc != 0) {
        sodium_memzero(k, sizeof(*k));
        return err_set(err, ERR_INTERNAL, "key '%s': key derivation failed", id);
    }
    kr->count++;
    return 0;
}

char *secret_file_read(const char *path, struct err *err)
{
    if (path == NULL) {
        err_set(err, ERR_INTERNAL, "secret_file_read: NULL path");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err_set(err, ERR_BAD_FIELD, "key file %s: %s", path, strerror(errno));
        return NULL;
    }
    /* fstat on the open descriptor: the mode checked is the file read. */
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err_set(err, ERR_BAD_FIELD, "key file %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, ERR_BAD_FIELD, "key file %s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((st.st_mode & 077) != 0) {
        err_set(err, ERR_BAD_FIELD, "key file %s: mode %04o is too open; chmod 600", path,
                (unsigned)(st.st_mode & 07777));
        close(fd);
        return NULL;
    }

    char *buf = malloc(SECRET_FILE_MAX + 1);
    if (buf == NULL) {
        err_set(err, ERR_INTERNAL, "out of memory");
        close(fd);
        return NULL;
    }
    size_t len = 0;
    for (;;) {
        /* Reading one byte past the limit tells "exactly full" from "too big". */
        ssize_t r = read(fd, buf + len, SECRET_FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err_set(err, ERR_BAD_FIELD, "key file %s: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > SECRET_FILE_MAX) {
            err_set(err, ERR_BAD_FIELD, "key file %s: larger than %d bytes", path,
                    SECRET_FILE_MAX);
            goto fail;
        }
    }
    close(fd);
    buf[len] = '\0';
    if (memchr(buf, '\0', len) != NULL) {
        err_set(err, ERR_BAD_FIELD, "key file %s: contains a NUL byte", path);
        sodium_memzero(buf, SECRET_FILE_MAX + 1);
        free(buf);
        return NULL;
    }
    trim_in_place(buf);
    return buf;

fail:
    close(fd);
    sodium_memzero(buf, SECRET_FILE_MAX + 1);
    free(buf);
    return NULL;
}

int keyring_add_file(struct keyring *kr, const char *id, const char *path, struct err *err)
{
    char *text = secret_file_read(path, err);
    if (text == NULL)
        return -1;
    struct err inner = { ERR_OK, "" };
    int rc = keyring_add_b64(kr, id, text, &inner);
    sodium_memzero(text, strlen(text));
    free(text);
    if (rc != 0)
        return err_set(err, inner.code, "key file %s: %s", path, inner.msg);
    return 0;
}

const struct key *keyring_find(const struct keyring *kr, const char *id)
{
    if (kr == NULL || id == NULL)
        return NULL;
    for (size_t i = 0; i < kr->count && i < KEYRING_MAX; i++) {
        if (strcmp(kr->keys[i].id, id) == 0)
            return &kr->keys[i];
    }
    return NULL;
}

const struct key *keyring_active(const struct keyring *kr)
{
    if (kr == NULL || kr->count == 0)
        return NULL;
    return &kr->keys[0];
}

void keyring_clear(struct keyring *kr)
{
    if (kr == NULL)
        return;
    sodium_memzero(kr, sizeof(*kr));
}

/* ---- signatures --------------------------------------------------------- */

char *sign_body_b64(const struct key *key, const void *body, size_t len)
{
    unsigned char mac[KEY_BYTES];
    if (key == NULL || hmac_sha256(key->sign, KEY_BYTES, body, len, mac) != 0)
        return NULL;
    return b64_encode(mac, sizeof(mac));
}

bool sign_body_verify(const struct key *key, const void *body, size_t len, const char *sig_b64)
{
    if (key == NULL || sig_b64 == NULL)
        return false;
    unsigned char given[SIG_DECODE_MAX];
    long n = b64_decode(sig_b64, given, sizeof(given));
    if (n != KEY_BYTES)
        return false;
    unsigned char mac[KEY_BYTES];
    if (hmac_sha256(key->sign, KEY_BYTES, body, len, mac) != 0)
        return false;
    return CRYPTO_memcmp(mac, given, KEY_BYTES) == 0;
}

/* Computes the raw callback MAC over "<ts>." + body. Returns 0 or -1. */
static int callback_mac(const unsigned char *secret, size_t secret_len, long long ts,
                        const void *body, size_t len, unsigned char mac[KEY_BYTES])
{
    char prefix[32];
    int plen = snprintf(prefix, sizeof(prefix), "%lld.", ts);
    if (plen < 0 || (size_t)plen >= sizeof(prefix) || len > SIZE_MAX - (size_t)plen)
        return -1;
    /* The message is one contiguous buffer so the one-shot HMAC() serves. */
    unsigned char *msg = malloc((size_t)plen + len + 1);
    if (msg == NULL)
        return -1;
    memcpy(msg, prefix, (size_t)plen);
    if (len > 0)
        memcpy(msg + plen, body, len);
    int rc = hmac_sha256(secret, secret_len, msg, (size_t)plen + len, mac);
    free(msg);
    return rc;
}

void sign_callback_hex(const unsigned char *secret, size_t secret_len, long long ts,
                       const void *body, size_t len, char out[65])
{
    unsigned char mac[KEY_BYTES];
    if (callback_mac(secret, secret_len, ts, body, len, mac) != 0) {
        out[0] = '\0'; /* an empty signature never verifies */
        return;
    }
    hex_encode(mac, sizeof(mac), out);
}

bool sign_callback_verify(const unsigned char *secret, size_t secret_len, long long ts,
                          const void *body, size_t len, const char *hex)
{
    if (hex == NULL || strlen(hex) != 2 * KEY_BYTES)
        return false;
    /* Hex case is not part of the signature: fold it before comparing. */
    char given[2 * KEY_BYTES];
    for (size_t i = 0; i < sizeof(given); i++)
        given[i] = (char)tolower((unsigned char)hex[i]);
    unsigned char mac[KEY_BYTES];
    if (callback_mac(secret, secret_len, ts, body, len, mac) != 0)
        return false;
    char want[2 * KEY_BYTES + 1];
    hex_encode(mac, sizeof(mac), want);
    return CRYPTO_memcmp(want, given, sizeof(given)) == 0;
}

/* ---- sealing ------------------------------------------------------------ */

int seal_password(const struct key *key, const char *password, char **nonce_b64,
                  char **box_b64, struct err *err)
{
    if (nonce_b64 != NULL)
        *nonce_b64 = NULL;
    if (box_b64 != NULL)
        *box_b64 = NULL;
    if (key == NULL || password == NULL || nonce_b64 == NULL || box_b64 == NULL)
        return err_set(err, ERR_INTERNAL, "seal_password: NULL argument");

    size_t plen = strlen(password);
    if (plen > SIZE_MAX - crypto_secretbox_MACBYTES)
        return err_set(err, ERR_INTERNAL, "password too long to seal");
    unsigned char nonce[crypto_secretbox_NONCEBYTES];
    randombytes_buf(nonce, sizeof(nonce));
    size_t box_len = plen + crypto_secretbox_MACBYTES;
    unsigned char *box = malloc(box_len);
    if (box == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory");
    if (crypto_secretbox_easy(box, (const unsigned char *)password, plen, nonce, key->seal) != 0) {
        free(box);
        return err_set(err, ERR_INTERNAL, "crypto_secretbox_easy failed");
    }
    char *n64 = b64_encode(nonce, sizeof(nonce));
    char *b64 = b64_encode(box, box_len);
    free(box);
    if (n64 == NULL || b64 == NULL) {
        free(n64);
        free(b64);
        return err_set(err, ERR_INTERNAL, "out of memory");
    }
    *nonce_b64 = n64; /* ownership passes to the caller */
    *box_b64 = b64;
    return 0;
}

int unseal_password(const struct key *key, const char *nonce_b64, const char *box_b64,
                    char *out, size_t outlen, struct err *err)
{
    if (out != NULL && outlen > 0)
        sodium_memzero(out, outlen);
    if (key == NULL || nonce_b64 == NULL || box_b64 == NULL || out == NULL || outlen == 0)
        return err_set(err, ERR_BAD_SEAL, "sealed password: missing input");

    unsigned char nonce[crypto_secretbox_NONCEBYTES + 1];
    if (b64_decode(nonce_b64, nonce, sizeof(nonce)) != crypto_secretbox_NONCEBYTES)
        return err_set(err, ERR_BAD_SEAL, "sealed password: nonce is not %d bytes of base64",
                       crypto_secretbox_NONCEBYTES);

    /* Every 4 base64 characters carry at most 3 bytes. */
    size_t max_box = strlen(box_b64) / 4 * 3 + 3;
    unsigned char *box = malloc(max_box);
    if (box == NULL)
        return err_set(err, ERR_INTERNAL, "out of memory");
    long n = b64_decode(box_b64, box, max_box);
    if (n < (long)crypto_secretbox_MACBYTES) {
        free(box);
        return err_set(err, ERR_BAD_SEAL, "sealed password: box is not base64 or too short");
    }
    size_t plain_len = (size_t)n - crypto_secretbox_MACBYTES;
    if (plain_len + 1 > outlen) {
        free(box);
        return err_set(err, ERR_BAD_SEAL, "sealed password: longer than %zu bytes", outlen - 1);
    }
    int rc = crypto_secretbox_open_easy((unsigned char *)out, box, (unsigned long long)n, nonce,
                                        key->seal);
    free(box);
    if (rc != 0) {
        sodium_memzero(out, outlen);
        return err_set(err, ERR_BAD_SEAL, "sealed password does not open with key '%s'", key->id);
    }
    out[plain_len] = '\0';
    /* A NUL inside would silently cut the password short. */
    if (memchr(out, '\0', plain_len) != NULL) {
        sodium_memzero(out, outlen);
        return err_set(err, ERR_BAD_SEAL, "sealed password contains a NUL byte");
    }
    return 0;
}

/* ---- ids ---------------------------------------------------------------- */

void uuid4(char out[UUID_STR_LEN])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}
