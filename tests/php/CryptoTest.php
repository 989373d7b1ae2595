<?php
/* The PHP side reproduces tests/vectors/crypto.json bit for bit. */

namespace CometBackup\Tests;

use WHMCS\Module\Server\CometBackup\Crypto;

final class CryptoTest extends \PHPUnit\Framework\TestCase
{
    private function v(): array
    {
        return $GLOBALS['COMET_TEST_VECTORS'];
    }

    public function testSubKeysMatchVectors(): void
    {
        $k = $this->v()['key'];
        $master = base64_decode($k['master_b64'], true);
        $this->assertSame(32, strlen($master));
        $this->assertSame($k['sign_key_hex'], bin2hex(Crypto::signKey($master)));
        $this->assertSame($k['seal_key_hex'], bin2hex(Crypto::sealKey($master)));
    }

    public function testJobSignatureMatchesVector(): void
    {
        $master = base64_decode($this->v()['key']['master_b64']);
        $s = $this->v()['sign'];
        $this->assertSame($s['sig_b64'], Crypto::signBody(Crypto::signKey($master), $s['body']));
        $this->assertTrue(Crypto::verifyBody(Crypto::signKey($master), $s['body'], $s['sig_b64']));
        $this->assertFalse(Crypto::verifyBody(Crypto::signKey($master), $s['body'] . ' ', $s['sig_b64']));
    }

    public function testSealMatchesEveryVectorCaseAndOpens(): void
    {
        $seal = Crypto::sealKey(base64_decode($this->v()['key']['master_b64']));
        foreach ($this->v()['seal']['cases'] as $c) {
            $out = Crypto::seal($seal, $c['password'], base64_decode($c['nonce_b64']));
            $this->assertSame($c['nonce_b64'], $out['nonce']);
            $this->assertSame($c['box_b64'], $out['box']);
            $this->assertSame($c['password'], Crypto::unseal($seal, $c['nonce_b64'], $c['box_b64']));
        }
    }

    public function testSealUsesFreshNonceAndRejectsTampering(): void
    {
        $seal = Crypto::sealKey(base64_decode($this->v()['key']['master_b64']));
        $a = Crypto::seal($seal, 'pw-123456');
        $b = Crypto::seal($seal, 'pw-123456');
        $this->assertNotSame($a['nonce'], $b['nonce']);
        $this->assertSame(24, strlen(base64_decode($a['nonce'])));
        $box = base64_decode($a['box']);
        $box[0] = chr(ord($box[0]) ^ 1);
        $this->assertNull(Crypto::unseal($seal, $a['nonce'], base64_encode($box)));
    }

    public function testCallbackSignatureMatchesVector(): void
    {
        $c = $this->v()['callback'];
        $this->assertSame($c['sig_hex'], Crypto::callbackSignature($c['secret'], (string)$c['timestamp'], $c['body']));
    }

    public function testUuid4Format(): void
    {
        $this->assertMatchesRegularExpression(
            '/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/', Crypto::uuid4());
    }
}
