/* Unit tests for common/crypto.c: HMAC, key ring, key files, signatures, sealing, ids, vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "crypto.h"

/* 32 bytes 0x00..0x1f, the master key of tests/vectors/crypto.json. */
#define MASTER_B64 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OTHER_B64 "//79/Pv6+fj39vX08/Lx8O/u7ezr6uno5+bl5OPi4eA="

struct fixture {
    char dir[64];        /* private temp dir for key files */
    struct keyring kr;   /* k1 = MASTER_B64 */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || crypto_init() != 0)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_crypto.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    struct err e;
    if (keyring_add_b64(&f->kr, "k1", MASTER_B64, &e) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    keyring_clear(&f->kr);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(close(fd), 0);
    /* chmod after creation: the umask must not decide the mode under test. */
    assert_int_equal(chmod(path, mode), 0);
}

static void to_hex(const unsigned char *bin, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        snprintf(out + 2 * i, 3, "%02x", bin[i]);
}

/* RFC 4231 test case 2 through the same libcrypto call crypto.c uses, and
 * through the callback signer with its "<ts>." prefix taken into account. */
static void test_crypto_hmac_rfc4231_case2(void **state)
{
    (void)state;
    const char *data = "what do ya want for nothing?";
    unsigned char mac[32];
    unsigned int len = 0;
    assert_non_null(HMAC(EVP_sha256(), "Jefe", 4, (const unsigned char *)data, strlen(data), mac,
                         &len));
    assert_int_equal(len, 32);
    char hex[65];
    to_hex(mac, 32, hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    /* "Jefe" keyed callback over "1.x" must equal a plain HMAC of "1.x". */
    char cb[65];
    sign_callback_hex((const unsigned char *)"Jefe", 4, 1, "x", 1, cb);
    assert_non_null(HMAC(EVP_sha256(), "Jefe", 4, (const unsigned char *)"1.x", 3, mac, &len));
    to_hex(mac, 32, hex);
    assert_string_equal(cb, hex);
}

static void test_crypto_key_derivation_known(void **state)
{
    struct fixture *f = *state;
    const struct key *k = keyring_active(&f->kr);
    assert_non_null(k);
    assert_string_equal(k->id, "k1");
    char hex[65];
    to_hex(k->sign, 32, hex);
    assert_string_equal(hex, "a7eec68ff4d490493bf11cd1690b2736d1d3d203295378dd4e552bab19a3b12d");
    to_hex(k->seal, 32, hex);
    assert_string_equal(hex, "edd7e650ff96f688d367c0df7adc125189d859ad47131cf4a5c105c475b4b941");
}

static void test_crypto_keyring_rejects_bad_keys(void **state)
{
    (void)state;
    struct keyring kr = { .count = 0 };
    struct err e;
    /* 31 bytes, 33 bytes, not base64, unpadded, empty. */
    assert_int_equal(keyring_add_b64(&kr, "a", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_int_equal(keyring_add_b64(&kr, "a", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", &e), -1);
    assert_int_equal(keyring_add_b64(&kr, "a", "not base64 at all!", &e), -1);
    assert_int_equal(keyring_add_b64(&kr, "a", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", &e), -1);
    assert_int_equal(keyring_add_b64(&kr, "a", "", &e), -1);
    assert_int_equal(kr.count, 0);
    /* The message must not echo the key material. */
    assert_null(strstr(e.msg, "AAEC"));

    /* Whitespace around the key is trimmed; duplicate ids refused. */
    assert_int_equal(keyring_add_b64(&kr, "a", "  " MASTER_B64 "\n", &e), 0);
    assert_int_equal(keyring_add_b64(&kr, "a", OTHER_B64, &e), -1);
    assert_int_equal(keyring_add_b64(&kr, "b", OTHER_B64, &e), 0);
    assert_int_equal(kr.count, 2);
    assert_ptr_equal(keyring_active(&kr), &kr.keys[0]);
    assert_ptr_equal(keyring_find(&kr, "b"), &kr.keys[1]);
    assert_null(keyring_find(&kr, "c"));
    keyring_clear(&kr);
    assert_int_equal(kr.count, 0);
    assert_null(keyring_active(&kr));
}

static void test_crypto_key_file_mode_checked(void **state)
{
    struct fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/master.key", f->dir);
    struct keyring kr = { .count = 0 };
    struct err e;

    write_file(path, MASTER_B64 "\n", 0644);
    assert_int_equal(keyring_add_file(&kr, "k", path, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    char want[256];
    snprintf(want, sizeof(want), "key file %s: mode 0644 is too open; chmod 600", path);
    assert_string_equal(e.msg, want);
    assert_null(strstr(e.msg, "AAEC"));

    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(keyring_add_file(&kr, "k", path, &e), -1);

    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(keyring_add_file(&kr, "k", path, &e), 0);
    assert_int_equal(kr.count, 1);
    assert_memory_equal(kr.keys[0].sign, f->kr.keys[0].sign, KEY_BYTES);

    /* 0400 is stricter than 0600 and fine too. */
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(keyring_add_file(&kr, "k2", path, &e), 0);
    keyring_clear(&kr);
}

static void test_crypto_key_file_wrong_length_refused(void **state)
{
    struct fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/short.key", f->dir);
    write_file(path, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n", 0600);
    struct keyring kr = { .count = 0 };
    struct err e;
    assert_int_equal(keyring_add_file(&kr, "k", path, &e), -1);
    assert_int_equal(e.code, ERR_BAD_FIELD);
    assert_non_null(strstr(e.msg, path));
    assert_null(strstr(e.msg, "AAEC"));
    assert_int_equal(kr.count, 0);

    snprintf(path, sizeof(path), "%s/missing.key", f->dir);
    assert_int_equal(keyring_add_file(&kr, "k", path, &e), -1);
    assert_non_null(strstr(e.msg, path));
}

static void test_crypto_secret_file_read_trims(void **state)
{
    struct fixture *f = *state;
    char path[128];
    snprintf(path, sizeof(path), "%s/secret", f->dir);
    write_file(path, " \t hunter2-secret \r\n\n", 0600);
    struct err e;
    char *s = secret_file_read(path, &e);
    assert_non_null(s);
    assert_string_equal(s, "hunter2-secret");
    free(s);

    assert_int_equal(chmod(path, 0604), 0);
    assert_null(secret_file_read(path, &e));
    assert_null(strstr(e.msg, "hunter2"));
    assert_non_null(strstr(e.msg, "mode 0604"));
}

static void test_crypto_sign_verify_roundtrip(void **state)
{
    struct fixture *f = *state;
    const struct key *k = keyring_active(&f->kr);
    char body[] = "{\"v\":1,\"job_id\":\"x\"}";
    size_t len = strlen(body);
    char *sig = sign_body_b64(k, body, len);
    assert_non_null(sig);
    assert_int_equal(strlen(sig), 44);
    assert_true(sign_body_verify(k, body, len, sig));

    /* One flipped body byte, or one changed signature character, fails. */
    body[3] ^= 0x01;
    assert_false(sign_body_verify(k, body, len, sig));
    body[3] ^= 0x01;
    char bad[64];
    snprintf(bad, sizeof(bad), "%s", sig);
    bad[0] = bad[0] == 'A' ? 'B' : 'A';
    assert_false(sign_body_verify(k, body, len, bad));

    /* Another key does not verify it. */
    struct keyring other = { .count = 0 };
    struct err e;
    assert_int_equal(keyring_add_b64(&other, "o", OTHER_B64, &e), 0);
    assert_false(sign_body_verify(keyring_active(&other), body, len, sig));
    keyring_clear(&other);
    free(sig);
}

static void test_crypto_verify_rejects_malformed_signatures(void **state)
{
    struct fixture *f = *state;
    const struct key *k = keyring_active(&f->kr);
    const char *body = "hello";
    assert_false(sign_body_verify(k, body, 5, NULL));
    assert_false(sign_body_verify(k, body, 5, ""));
    assert_false(sign_body_verify(k, body, 5, "AAAA"));
    assert_false(sign_body_verify(k, body, 5, "!!!not*base64!!!"));
    assert_false(sign_body_verify(NULL, body, 5, "AAAA"));
    /* Far longer than any decode buffer. */
    char longsig[1024];
    memset(longsig, 'A', sizeof(longsig) - 1);
    longsig[sizeof(longsig) - 1] = '\0';
    assert_false(sign_body_verify(k, body, 5, longsig));
    /* The right signature with whitespace or without padding is not accepted. */
    char *sig = sign_body_b64(k, body, 5);
    assert_non_null(sig);
    char variant[64];
    snprintf(variant, sizeof(variant), " %s", sig);
    assert_false(sign_body_verify(k, body, 5, variant));
    snprintf(variant, sizeof(variant), "%.43s", sig);
    assert_false(sign_body_verify(k, body, 5, variant));
    free(sig);
}

static void test_crypto_callback_signature_known(void **state)
{
    (void)state;
    const char *secret = "whsec-test-7f3a9c";
    const char *body = "{\"v\":1}";
    char hex[65];
    sign_callback_hex((const unsigned char *)secret, strlen(secret), 1796378400LL, body,
                      strlen(body), hex);
    /* python3: hmac.new(b"whsec-test-7f3a9c", b'1796378400.{"v":1}', sha256).hexdigest() */
    assert_string_equal(hex, "7a34f3d1c0134d81f0d39a310dd7ea72cdf256a68f3f08be58ac13b44b7a57e4");
    assert_true(sign_callback_verify((const unsigned char *)secret, strlen(secret), 1796378400LL,
                                     body, strlen(body), hex));
    assert_false(sign_callback_verify((const unsigned char *)secret, strlen(secret),
                                      1796378401LL, body, strlen(body), hex));
    assert_false(sign_callback_verify((const unsigned char *)secret, strlen(secret), 1796378400LL,
                                      body, strlen(body), "abc"));
    assert_false(sign_callback_verify((const unsigned char *)secret, strlen(secret), 1796378400LL,
                                      body, strlen(body), NULL));
}

static void test_crypto_seal_unseal_roundtrip(void **state)
{
    struct fixture *f = *state;
    const struct key *k = keyring_active(&f->kr);
    char *nonce = NULL, *box = NULL;
    struct err e;
    assert_int_equal(seal_password(k, "correct horse", &nonce, &box, &e), 0);
    assert_int_equal(strlen(nonce), 32); /* 24 bytes */
    assert_null(strstr(box, "correct"));
    char out[128];
    assert_int_equal(unseal_password(k, nonce, box, out, sizeof(out), &e), 0);
    assert_string_equal(out, "correct horse");

    /* Two seals of one password differ (fresh nonce). */
    char *nonce2 = NULL, *box2 = NULL;
    assert_int_equal(seal_password(k, "correct horse", &nonce2, &box2, &e), 0);
    assert_string_not_equal(nonce, nonce2);
    assert_string_not_equal(box, box2);

    /* Too small an output buffer is refused, not truncated. */
    assert_int_equal(unseal_password(k, nonce, box, out, 13, &e), -1);
    assert_int_equal(e.code, ERR_BAD_SEAL);
    free(nonce);
    free(box);
    free(nonce2);
    free(box2);
}

static void test_crypto_unseal_tampered_fails(void **state)
{
    struct fixture *f = *state;
    const struct key *k = keyring_active(&f->kr);
    char *nonce = NULL, *box = NULL;
    struct err e;
    assert_int_equal(seal_password(k, "s3cret-pass", &nonce, &box, &e), 0);

    unsigned char raw[64];
    long n = b64_decode(box, raw, sizeof(raw));
    assert_true(n > 16);
    raw[n - 1] ^= 0x01;
    char *tampered = b64_encode(raw, (size_t)n);
    assert_non_null(tampered);
    char out[64];
    memset(out, 'x', sizeof(out));
    assert_int_equal(unseal_password(k, nonce, tampered, out, sizeof(out), &e), -1);
    assert_int_equal(e.code, ERR_BAD_SEAL);
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(out[i], 0);
    assert_null(strstr(e.msg, "s3cret"));

    /* Wrong key. */
    struct keyring other = { .count = 0 };
    assert_int_equal(keyring_add_b64(&other, "o", OTHER_B64, &e), 0);
    assert_int_equal(unseal_password(keyring_active(&other), nonce, box, out, sizeof(out), &e),
                     -1);
    assert_int_equal(e.code, ERR_BAD_SEAL);
    keyring_clear(&other);

    /* Malformed inputs. */
    assert_int_equal(unseal_password(k, "AAAA", box, out, sizeof(out), &e), -1);
    assert_int_equal(e.code, ERR_BAD_SEAL);
    assert_int_equal(unseal_password(k, nonce, "AAAA", out, sizeof(out), &e), -1);
    assert_int_equal(unseal_password(k, nonce, "%%%", out, sizeof(out), &e), -1);
    assert_int_equal(unseal_password(k, nonce, "", out, sizeof(out), &e), -1);
    assert_int_equal(e.code, ERR_BAD_SEAL);
    free(tampered);
    free(nonce);
    free(box);
}

static void test_crypto_uuid4_format_and_unique(void **state)
{
    (void)state;
    enum { N = 256 };
    static char ids[N][UUID_STR_LEN];
    for (int i = 0; i < N; i++) {
        uuid4(ids[i]);
        const char *u = ids[i];
        assert_int_equal(strlen(u), 36);
        for (int j = 0; j < 36; j++) {
            if (j == 8 || j == 13 || j == 18 || j == 23)
                assert_int_equal(u[j], '-');
            else
                assert_non_null(strchr("0123456789abcdef", u[j]));
        }
        assert_int_equal(u[14], '4');                 /* version 4 */
        assert_non_null(strchr("89ab", u[19]));       /* RFC 4122 variant */
        for (int j = 0; j < i; j++)
            assert_string_not_equal(ids[j], u);
    }
}

static void test_crypto_b64_roundtrip(void **state)
{
    (void)state;
    const unsigned char bin[] = { 0, 1, 2, 0xfb, 0xff };
    char *s = b64_encode(bin, sizeof(bin));
    assert_non_null(s);
    assert_string_equal(s, "AAEC+/8=");
    unsigned char out[8];
    assert_int_equal(b64_decode(s, out, sizeof(out)), 5);
    assert_memory_equal(out, bin, 5);
    assert_int_equal(b64_decode(s, out, 4), -1);   /* too long for out */
    assert_int_equal(b64_decode("AAEC-_8=", out, sizeof(out)), -1); /* url-safe alphabet */
    assert_int_equal(b64_decode(NULL, out, sizeof(out)), -1);
    free(s);
}

/* tests/vectors/crypto.json sits two levels above the test binary's dir
 * (build/tests/test_crypto); the cwd is tried first. */
static char *vectors_read(void)
{
    char exe[PATH_MAX];
    char path[PATH_MAX + 64];
    const char *candidates[2] = { "tests/vectors/crypto.json", NULL };
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash != NULL) {
            *slash = '\0';
            snprintf(path, sizeof(path), "%s/../../tests/vectors/crypto.json", exe);
            candidates[1] = path;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (candidates[i] == NULL)
            continue;
        FILE *fp = fopen(candidates[i], "rb");
        if (fp == NULL)
            continue;
        static char buf[16384];
        size_t len = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[len] = '\0';
        return strdup(buf);
    }
    return NULL;
}

static const char *vget(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, key, &v));
    return json_object_get_string(v);
}

static struct json_object *vobj(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, key, &v));
    return v;
}

/* The committed vectors the PHP side checks against must match this code. */
static void test_crypto_vectors_match(void **state)
{
    (void)state;
    char *text = vectors_read();
    assert_non_null(text);
    struct json_object *root = json_tokener_parse(text);
    free(text);
    assert_non_null(root);

    struct json_object *key = vobj(root, "key");
    struct keyring kr = { .count = 0 };
    struct err e;
    assert_int_equal(keyring_add_b64(&kr, vget(key, "kid"), vget(key, "master_b64"), &e), 0);
    const struct key *k = keyring_active(&kr);
    char hex[65];
    to_hex(k->sign, 32, hex);
    assert_string_equal(hex, vget(key, "sign_key_hex"));
    to_hex(k->seal, 32, hex);
    assert_string_equal(hex, vget(key, "seal_key_hex"));

    struct json_object *sign = vobj(root, "sign");
    const char *body = vget(sign, "body");
    char *sig = sign_body_b64(k, body, strlen(body));
    assert_string_equal(sig, vget(sign, "sig_b64"));
    assert_true(sign_body_verify(k, body, strlen(body), vget(sign, "sig_b64")));
    free(sig);

    struct json_object *cases = vobj(vobj(root, "seal"), "cases");
    assert_true(json_object_array_length(cases) >= 1);
    for (size_t i = 0; i < json_object_array_length(cases); i++) {
        struct json_object *c = json_object_array_get_idx(cases, i);
        const char *pw = vget(c, "password");
        char out[256];
        assert_int_equal(unseal_password(k, vget(c, "nonce_b64"), vget(c, "box_b64"), out,
                                         sizeof(out), &e), 0);
        assert_string_equal(out, pw);
        /* Sealing with the vector's nonce reproduces the box exactly. */
        unsigned char nonce[crypto_secretbox_NONCEBYTES];
        assert_int_equal(b64_decode(vget(c, "nonce_b64"), nonce, sizeof(nonce)), sizeof(nonce));
        unsigned char box[256];
        assert_true(strlen(pw) + crypto_secretbox_MACBYTES <= sizeof(box));
        assert_int_equal(crypto_secretbox_easy(box, (const unsigned char *)pw, strlen(pw), nonce,
                                               k->seal), 0);
        char *b64 = b64_encode(box, strlen(pw) + crypto_secretbox_MACBYTES);
        assert_string_equal(b64, vget(c, "box_b64"));
        free(b64);
    }

    struct json_object *cb = vobj(root, "callback");
    const char *secret = vget(cb, "secret");
    const char *cbody = vget(cb, "body");
    long long ts = (long long)json_object_get_int64(vobj(cb, "timestamp"));
    sign_callback_hex((const unsigned char *)secret, strlen(secret), ts, cbody, strlen(cbody), hex);
    assert_string_equal(hex, vget(cb, "sig_hex"));

    keyring_clear(&kr);
    json_object_put(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crypto_hmac_rfc4231_case2),
        cmocka_unit_test_setup_teardown(test_crypto_key_derivation_known, setup, teardown),
        cmocka_unit_test(test_crypto_keyring_rejects_bad_keys),
        cmocka_unit_test_setup_teardown(test_crypto_key_file_mode_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crypto_key_file_wrong_length_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_crypto_secret_file_read_trims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crypto_sign_verify_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crypto_verify_rejects_malformed_signatures, setup,
                                        teardown),
        cmocka_unit_test(test_crypto_callback_signature_known),
        cmocka_unit_test_setup_teardown(test_crypto_seal_unseal_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crypto_unseal_tampered_fails, setup, teardown),
        cmocka_unit_test(test_crypto_uuid4_format_and_unique),
        cmocka_unit_test(test_crypto_b64_roundtrip),
        cmocka_unit_test(test_crypto_vectors_match),
    };
    if (crypto_init() != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
