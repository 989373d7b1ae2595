<?php
/* Module functions against the real RabbitMQ and MariaDB. */

namespace CometBackup\Tests;

use WHMCS\Database\Capsule;
use WHMCS\Module\Server\CometBackup\Crypto;
use WHMCS\Module\Server\CometBackup\JobStore;

final class ModuleTest extends TestCase
{
    public static function setUpBeforeClass(): void
    {
        self::bindTestQueue();
    }

    public function testMetaData(): void
    {
        $m = cometbackup_MetaData();
        $this->assertSame('Comet Backup', $m['DisplayName']);
        $this->assertSame('1.1', $m['APIVersion']);
        $this->assertTrue($m['RequiresServer']);
        $this->assertSame('8060', $m['DefaultNonSSLPort']);
        $this->assertSame('443', $m['DefaultSSLPort']);
    }

    public function testCreatePublishesOneSignedSealedJobAndRecordsIt(): void
    {
        $p = $this->makeService();
        $this->assertSame('success', cometbackup_CreateAccount($p));

        $m = $this->fetch();
        $this->assertNotNull($m, 'the job reached the bound queue');
        $job = $this->decodeVerified($m, 'create');
        $this->assertSame(0, $this->queueDepth(), 'exactly one message');

        $this->assertSame(1, $job['v']);
        $this->assertSame('create', $job['action']);
        $this->assertSame($p['serviceid'], $job['service_id']);
        $this->assertSame(1, $job['seq']);
        $this->assertNull($job['after']);
        $this->assertMatchesRegularExpression('/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/', $job['issued_at']);
        $this->assertSame(['url' => 'http://backup.example.com:8060'], $job['server']);
        $this->assertSame(['username' => 'alice', 'custom_username' => false], $job['account']);
        $this->assertSame(['email' => 'alice@example.com', 'firstname' => 'Alice'], $job['client']);
        $this->assertSame([
            'policy_group' => 'WHMCS_67dd2a51c0f3e8.41234567',
            'storage_provider' => '1003-abc',
            'require_password_change' => true,
        ], $job['product']);
        $this->assertSame([
            'number_of_devices' => 5,
            'protected_item_quota_gb' => 100,
            'protected_item_quota_tb' => null,
            'storage_vault_quota_gb' => null,
            'storage_vault_quota_tb' => 2,
        ], $job['quotas']);
        $this->assertSame(['kid', 'nonce', 'box'], array_keys($job['secret']));
        $this->assertSame('k2026', $job['secret']['kid']);
        $this->assertSame('S3cret-Pass!', Crypto::unseal(Crypto::sealKey(self::master()),
            $job['secret']['nonce'], $job['secret']['box']));
        $this->assertStringNotContainsString('S3cret-Pass!', $m->getBody());

        $rows = $this->jobRows($p['serviceid']);
        $this->assertCount(1, $rows);
        $this->assertSame($job['job_id'], $rows[0]->job_id);
        $this->assertSame('queued', $rows[0]->state);
        $this->assertSame('create', $rows[0]->action);
        $this->assertSame(1, (int)$rows[0]->seq);
        $this->assertNull($rows[0]->after_job_id);
    }

    public function testEveryActionUsesItsRoutingKeyAndChainsSeqAndAfter(): void
    {
        $p = $this->makeService();
        $calls = [
            ['cometbackup_CreateAccount', 'create', true],
            ['cometbackup_SuspendAccount', 'suspend', false],
            ['cometbackup_UnsuspendAccount', 'unsuspend', false],
            ['cometbackup_ChangePackage', 'change_package', false],
            ['cometbackup_ChangePassword', 'change_password', true],
            ['cometbackup_TerminateAccount', 'terminate', false],
        ];
        $prev = null;
        foreach ($calls as $i => list($fn, $action, $secret)) {
            $this->assertSame('success', $fn($p), $fn);
            $m = $this->fetch();
            $this->assertNotNull($m, $fn);
            $job = $this->decodeVerified($m, $action);
            $this->assertSame($i + 1, $job['seq'], "$action seq");
            $this->assertSame($prev, $job['after'], "$action after");
            $this->assertSame($secret, isset($job['secret']), "$action secret");
            $prev = $job['job_id'];
        }
        $rows = $this->jobRows($p['serviceid']);
        $this->assertSame(['create', 'suspend', 'unsuspend', 'change_package', 'change_password', 'terminate'],
            array_map(function ($r) { return $r->action; }, $rows));
    }

    public function testSequencesAreIndependentPerService(): void
    {
        $a = $this->makeService();
        $b = $this->makeService();
        $this->assertSame('success', cometbackup_CreateAccount($a));
        $this->assertSame('success', cometbackup_CreateAccount($b));
        $this->assertSame(1, $this->decodeVerified($this->fetch(), 'create')['seq']);
        $jb = $this->decodeVerified($this->fetch(), 'create');
        $this->assertSame(1, $jb['seq']);
        $this->assertNull($jb['after']);
    }

    public function testCustomFieldsAndOptionEdgeCases(): void
    {
        $p = $this->makeService([
            'customfields' => ['Username' => '  bob.custom ', 'Password' => 'Custom-Pass-99'],
            'configoption1' => 'POLICY-1',
            'configoption2' => 'None',
            'configoption3' => 'no',
            'configoptions' => ['number_of_devices' => '0', 'protected_item_quota_gb' => '',
                'protected_item_quota_tb' => '3', 'storage_vault_quota_gb' => '50', 'storage_vault_quota_tb' => null],
            'serverhostname' => 'https://secure.example.com',
            'serverport' => '',
            'serversecure' => true,
        ]);
        $this->assertSame('success', cometbackup_CreateAccount($p));
        $job = $this->decodeVerified($this->fetch(), 'create');
        $this->assertSame(['username' => 'bob.custom', 'custom_username' => true], $job['account']);
        $this->assertSame('Custom-Pass-99', Crypto::unseal(Crypto::sealKey(self::master()),
            $job['secret']['nonce'], $job['secret']['box']));
        $this->assertSame(['policy_group' => 'POLICY-1', 'storage_provider' => '', 'require_password_change' => false],
            $job['product']);
        $this->assertSame(['number_of_devices' => null, 'protected_item_quota_gb' => null,
            'protected_item_quota_tb' => 3, 'storage_vault_quota_gb' => 50, 'storage_vault_quota_tb' => null],
            $job['quotas']);
        $this->assertSame('https://secure.example.com:443', $job['server']['url']);
    }

    public function testServerUrlFromHostnameWithPort(): void
    {
        $p = $this->makeService(['serverhostname' => 'backup.example.com:9443', 'serverport' => '', 'serversecure' => true]);
        $this->assertSame('success', cometbackup_SuspendAccount($p));
        $this->assertSame('https://backup.example.com:9443', $this->decodeVerified($this->fetch(), 'suspend')['server']['url']);
    }

    public function testShortPasswordIsRefusedWithoutPublishing(): void
    {
        $p = $this->makeService(['password' => 'short']);
        $r = cometbackup_ChangePassword($p);
        $this->assertNotSame('success', $r);
        $this->assertStringContainsString('8 characters', $r);
        $this->assertNull($this->fetch());
        $this->assertCount(0, $this->jobRows($p['serviceid']));
    }

    public function testBrokerUnreachableReturnsErrorAndLeavesNoQueuedRow(): void
    {
        $sock = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int)substr(strrchr(stream_socket_get_name($sock, false), ':'), 1);
        fclose($sock); // a port nothing listens on
        self::testSettings(['broker_url' => "amqp://guest:secretpw@127.0.0.1:$port/", 'connect_timeout' => 1.0]);
        $p = $this->makeService();
        $t0 = microtime(true);
        $r = cometbackup_CreateAccount($p);
        $this->assertLessThan(5.0, microtime(true) - $t0, 'fails fast');
        $this->assertNotSame('success', $r);
        $this->assertStringContainsString('broker', $r);
        $this->assertStringNotContainsString('secretpw', $r);
        $this->assertSame(0, Capsule::table(JobStore::TABLE)->where('state', 'queued')->count());
        $rows = $this->jobRows($p['serviceid']);
        $this->assertCount(1, $rows);
        $this->assertSame('publish_failed', $rows[0]->error_code);

        // Once the broker is back, the next job does not wait for the lost one.
        self::testSettings();
        $this->assertSame('success', cometbackup_CreateAccount($p));
        $job = $this->decodeVerified($this->fetch(), 'create');
        $this->assertSame(2, $job['seq']);
        $this->assertNull($job['after']);
    }

    public function testUnroutableJobIsAFailure(): void
    {
        self::unbindTestQueue();
        try {
            $p = $this->makeService();
            $r = cometbackup_SuspendAccount($p);
            $this->assertNotSame('success', $r);
            $this->assertStringContainsString('could not route', $r);
            $this->assertSame(0, Capsule::table(JobStore::TABLE)->where('state', 'queued')->count());
        } finally {
            self::bindTestQueue();
        }
    }

    public function testMissingKeyFileIsAConfigurationError(): void
    {
        self::testSettings(['key_file' => '/nonexistent/key']);
        $p = $this->makeService();
        $r = cometbackup_CreateAccount($p);
        $this->assertStringContainsString('not configured', $r);
        $this->assertCount(0, $this->jobRows($p['serviceid']));
    }

    public function testGroupReadableKeyFileIsRefused(): void
    {
        $f = tempnam(sys_get_temp_dir(), 'key');
        file_put_contents($f, self::vectors()['key']['master_b64']);
        chmod($f, 0640);
        self::testSettings(['key_file' => $f]);
        $r = cometbackup_CreateAccount($this->makeService());
        unlink($f);
        $this->assertStringContainsString('0600', $r);
    }

    public function testNoPasswordInModuleLog(): void
    {
        $p = $this->makeService(['password' => 'Very-Secret-123']);
        $this->assertSame('success', cometbackup_CreateAccount($p));
        $this->assertSame('success', cometbackup_ChangePassword($p));
        $log = Capsule::table('tblmodulelog')->get()->all();
        $this->assertNotEmpty($log);
        foreach ($log as $row) {
            $this->assertStringNotContainsString('Very-Secret-123', $row->request . $row->response . $row->arrdata);
            $this->assertStringNotContainsString('"box"', $row->request);
        }
    }

    public function testChangePasswordCopiesIntoCustomPasswordField(): void
    {
        $p = $this->makeService(['customfields' => ['Password' => 'Old-Password-1'], 'password' => 'New-Password-2']);
        $fid = Capsule::table('tblcustomfields')->insertGetId(
            ['type' => 'product', 'relid' => $p['pid'], 'fieldname' => 'Password']);
        $this->assertSame('success', cometbackup_ChangePassword($p));
        $job = $this->decodeVerified($this->fetch(), 'change_password');
        $this->assertSame('New-Password-2', Crypto::unseal(Crypto::sealKey(self::master()),
            $job['secret']['nonce'], $job['secret']['box']));
        $this->assertSame('New-Password-2', Capsule::table('tblcustomfieldsvalues')
            ->where('fieldid', $fid)->where('relid', $p['serviceid'])->value('value'));
    }

    public function testAdminTabShowsStateAndJobs(): void
    {
        $p = $this->makeService();
        $this->assertSame('success', cometbackup_CreateAccount($p));
        $tab = cometbackup_AdminServicesTabFields($p);
        $this->assertStringContainsString('Create queued', $tab['Comet provisioning']);
        $this->assertStringContainsString('create', $tab['Comet jobs']);
        $this->assertStringContainsString($this->jobRows($p['serviceid'])[0]->job_id, $tab['Comet jobs']);
    }

    public function testCustomButtons(): void
    {
        $this->assertSame(['Retry last failed job' => 'RetryFailed', 'Resync account' => 'Resync'],
            cometbackup_AdminCustomButtonArray());
        $p = $this->makeService();
        $this->assertStringContainsString('no failed job', cometbackup_RetryFailed($p));

        $this->assertSame('success', cometbackup_CreateAccount($p));
        $first = $this->decodeVerified($this->fetch(), 'create');
        Capsule::table(JobStore::TABLE)->where('job_id', $first['job_id'])
            ->update(['state' => 'failed', 'error_code' => 'comet_unavailable']);
        $this->assertSame('success', cometbackup_RetryFailed($p));
        $retry = $this->decodeVerified($this->fetch(), 'create');
        $this->assertNotSame($first['job_id'], $retry['job_id']);
        $this->assertSame($first['job_id'], $retry['after']);
        $this->assertSame(2, $retry['seq']);

        $this->assertSame('success', cometbackup_Resync($p));
        $this->assertSame('change_package', $this->decodeVerified($this->fetch(), 'change_package')['action']);
        // The newest job is not the failed one any more: nothing to retry.
        $this->assertStringContainsString('newer job', cometbackup_RetryFailed($p));
    }

    public function testClientAreaShowsSettingUpWhileCreateQueued(): void
    {
        $p = $this->makeService();
        $this->assertSame('success', cometbackup_CreateAccount($p));
        $ca = cometbackup_ClientArea($p);
        $this->assertSame('templates/clientarea', $ca['templatefile']);
        $this->assertTrue($ca['vars']['comet_setting_up']);
        $this->assertSame('alice', $ca['vars']['comet_username']);
        $this->assertSame('http://backup.example.com:8060', $ca['vars']['comet_server_url']);
        $this->assertFileExists(__DIR__ . '/../../whmcs/modules/servers/cometbackup/templates/clientarea.tpl');

        Capsule::table(JobStore::TABLE)->update(['state' => 'failed']);
        $ca = cometbackup_ClientArea($p);
        $this->assertFalse($ca['vars']['comet_setting_up']);
        $this->assertTrue($ca['vars']['comet_setup_failed']);
    }
}
