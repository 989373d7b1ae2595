<?php
/* TestConnection, product settings and client-area details against a stub
 * Comet server (tests/php/fixtures/comet-stub.php under php -S). */

namespace CometBackup\Tests;

use WHMCS\Database\Capsule;
use WHMCS\Module\Server\CometBackup\JobStore;

final class CometApiTest extends TestCase
{
    /** @var resource|null */
    private static $proc = null;
    /** @var int */
    private static $port = 0;

    public static function setUpBeforeClass(): void
    {
        $sock = stream_socket_server('tcp://127.0.0.1:0');
        self::$port = (int)substr(strrchr(stream_socket_get_name($sock, false), ':'), 1);
        fclose($sock);
        $cmd = ['php', '-S', '127.0.0.1:' . self::$port, __DIR__ . '/fixtures/comet-stub.php'];
        self::$proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'],
            2 => ['file', '/dev/null', 'w']], $pipes);
        for ($i = 0; $i < 100; $i++) {
            $c = @fsockopen('127.0.0.1', self::$port, $errno, $errstr, 0.1);
            if ($c) {
                fclose($c);
                return;
            }
            usleep(50000);
        }
        self::fail('stub Comet server did not start');
    }

    public static function tearDownAfterClass(): void
    {
        if (self::$proc !== null) {
            proc_terminate(self::$proc);
            proc_close(self::$proc);
            self::$proc = null;
        }
        parent::tearDownAfterClass();
    }

    private function server(array $over = []): array
    {
        return $over + [
            'serverhostname' => '127.0.0.1', 'serverport' => (string)self::$port, 'serversecure' => false,
            'serverusername' => 'admin', 'serverpassword' => 'admin-pass',
        ];
    }

    public function testConnectionSucceeds(): void
    {
        $this->assertSame(['success' => true, 'error' => ''], cometbackup_TestConnection($this->server()));
    }

    public function testConnectionAuthFailureShowsMessage(): void
    {
        $r = cometbackup_TestConnection($this->server(['serverpassword' => 'wrong']));
        $this->assertFalse($r['success']);
        $this->assertSame('Authentication failure: Unauthorised', $r['error']);
    }

    public function testConnectionRefusedIsAConnectionFailure(): void
    {
        $sock = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int)substr(strrchr(stream_socket_get_name($sock, false), ':'), 1);
        fclose($sock);
        $r = cometbackup_TestConnection($this->server(['serverport' => (string)$port]));
        $this->assertFalse($r['success']);
        $this->assertStringStartsWith('Connection failure: ', $r['error']);
    }

    public function testEmptyAnswersMeanNothingListening(): void
    {
        foreach (['empty', 'emptylist'] as $u) {
            $r = cometbackup_TestConnection($this->server(['serverusername' => $u]));
            $this->assertFalse($r['success']);
            $this->assertStringContainsString('nothing listening?', $r['error']);
        }
    }

    public function testNonJsonIsInvalidResponse(): void
    {
        $r = cometbackup_TestConnection($this->server(['serverusername' => 'html']));
        $this->assertSame(['success' => false, 'error' => 'Invalid response'], $r);
    }

    public function testLoneKeyValueIsShown(): void
    {
        $r = cometbackup_TestConnection($this->server(['serverusername' => 'odd']));
        $this->assertSame('hello from a proxy', $r['error']);
    }

    public function testConfigOptionsLoadPoliciesAndVaults(): void
    {
        $o = cometbackup_ConfigOptions($this->server());
        $this->assertSame(['Policy Group', 'Storage Vault', 'Require password change'], array_keys($o));
        $policies = $o['Policy Group']['Options'];
        $first = array_key_first($policies);
        $this->assertMatchesRegularExpression('/^\[Create New Policy Group\] \(WHMCS_[0-9a-f]+\.\d+\)$/', $first);
        $this->assertSame('Default policy (pol-1)', $policies['pol-1']);
        $this->assertSame(['None' => 'None', '1003-abc' => 'Comet Storage (EU)'], $o['Storage Vault']['Options']);
        $this->assertSame(['no' => 'no', 'yes' => 'yes'], $o['Require password change']['Options']);
    }

    public function testConfigOptionsFallBackToTheFirstCometServer(): void
    {
        Capsule::table('tblservers')->insert(['name' => 'comet', 'type' => 'cometbackup', 'hostname' => '127.0.0.1',
            'port' => (string)self::$port, 'username' => 'admin', 'password' => 'admin-pass']);
        $o = cometbackup_ConfigOptions([]);
        $this->assertArrayHasKey('pol-1', $o['Policy Group']['Options']);
    }

    public function testConfigOptionsWithoutServerStillOfferNewPolicy(): void
    {
        $o = cometbackup_ConfigOptions([]);
        $this->assertCount(1, $o['Policy Group']['Options']);
        $this->assertStringContainsString('add a Comet Backup server', $o['Policy Group']['Description']);
    }

    public function testClientAreaShowsLiveDetailsOnceCreated(): void
    {
        self::bindTestQueue();
        $p = $this->makeService($this->server());
        $this->assertSame('success', cometbackup_CreateAccount($p));
        Capsule::table(JobStore::TABLE)->update(['state' => 'succeeded']);
        $vars = cometbackup_ClientArea($p)['vars'];
        $this->assertFalse($vars['comet_setting_up']);
        $this->assertSame(['devices' => 1, 'vaults' => 2, 'suspended' => false], $vars['comet_profile']);
    }
}
