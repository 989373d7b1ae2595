<?php
/* Signing and sealing, bit for bit as common/crypto.c does them. */

namespace WHMCS\Module\Server\CometBackup;

final class Crypto
{
    const KEY_BYTES = 32;
    const NONCE_BYTES = 24; // SODIUM_CRYPTO_SECRETBOX_NONCEBYTES

    /** Sign sub-key: HMAC-SHA256(master, "comet-sign-v1"), raw bytes. */
    public static function signKey(string $master): string
    {
        return hash_hmac('sha256', 'comet-sign-v1', $master, true);
    }

    /** Seal sub-key: HMAC-SHA256(master, "comet-seal-v1"), raw bytes. */
    public static function sealKey(string $master): string
    {
        return hash_hmac('sha256', 'comet-seal-v1', $master, true);
    }

    /** x-comet-sig: base64(HMAC-SHA256(sign key, exact body bytes)). */
    public static function signBody(string $signKey, string $body): string
    {
        return base64_encode(hash_hmac('sha256', $body, $signKey, true));
    }

    public static function verifyBody(string $signKey, string $body, string $sigB64): bool
    {
        return hash_equals(self::signBody($signKey, $body), $sigB64);
    }

    /**
     * Seals a password with crypto_secretbox. A fresh random nonce unless
     * one is given (test vectors). Returns ['nonce' => b64, 'box' => b64].
     */
    public static function seal(string $sealKey, string $password, ?string $nonce = null): array
    {
        if ($nonce === null) {
            $nonce = random_bytes(self::NONCE_BYTES);
        }
        $box = sodium_crypto_secretbox($password, $nonce, $sealKey);
        return ['nonce' => base64_encode($nonce), 'box' => base64_encode($box)];
    }

    /** The password, or null when the box does not open. */
    public static function unseal(string $sealKey, string $nonceB64, string $boxB64): ?string
    {
        $nonce = base64_decode($nonceB64, true);
        $box = base64_decode($boxB64, true);
        if ($nonce === false || $box === false || strlen($nonce) !== self::NONCE_BYTES) {
            return null;
        }
        $plain = sodium_crypto_secretbox_open($box, $nonce, $sealKey);
        return $plain === false ? null : $plain;
    }

    /** Callback signature: lower-case hex HMAC-SHA256(secret, "<ts>." . body). */
    public static function callbackSignature(string $secret, string $timestamp, string $body): string
    {
        return hash_hmac('sha256', $timestamp . '.' . $body, $secret);
    }

    /** Random UUID version 4. */
    public static function uuid4(): string
    {
        $b = random_bytes(16);
        $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);
        $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);
        $h = bin2hex($b);
        return substr($h, 0, 8) . '-' . substr($h, 8, 4) . '-' . substr($h, 12, 4) . '-'
            . substr($h, 16, 4) . '-' . substr($h, 20, 12);
    }
}
