<?php
/* Shared fixtures: a fresh WHMCS state per test, services and a consumer of
 * comet.jobs on the real broker. */

namespace CometBackup\Tests;

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Message\AMQPMessage;
use WHMCS\Database\Capsule;
use WHMCS\Module\Server\CometBackup\Crypto;
use WHMCS\Module\Server\CometBackup\JobPublisher;
use WHMCS\Module\Server\CometBackup\JobStore;
use WHMCS\Module\Server\CometBackup\Settings;

abstract class TestCase extends \PHPUnit\Framework\TestCase
{
    const TABLES = ['tblhosting', 'tblclients', 'tblproducts', 'tblcustomfields', 'tblcustomfieldsvalues',
        'tblmodulelog', 'tbladmins', 'tblservers', 'test_localapi'];

    /** @var AMQPStreamConnection|null */
    protected static $amqp = null;
    /** @var \PhpAmqpLib\Channel\AMQPChannel|null */
    protected static $ch = null;
    /** @var string */
    protected static $queue = '';

    protected function setUp(): void
    {
        // Each test is one WHMCS request: end the previous one as php-fpm
        // would (the publisher's persistent connection stays open).
        JobPublisher::endRequest();
        Settings::override(null);
        foreach (self::TABLES as $t) {
            Capsule::table($t)->truncate();
        }
        if (Capsule::schema()->hasTable(JobStore::TABLE)) {
            Capsule::table(JobStore::TABLE)->truncate();
        }
        if (self::$ch !== null) {
            self::$ch->queue_purge(self::$queue);
        }
    }

    public static function tearDownAfterClass(): void
    {
        if (self::$amqp !== null) {
            self::$amqp->close();
            self::$amqp = null;
            self::$ch = null;
        }
    }

    protected static function vectors(): array
    {
        return $GLOBALS['COMET_TEST_VECTORS'];
    }

    protected static function testSettings(array $changes = []): void
    {
        Settings::override($changes + $GLOBALS['COMET_TEST_SETTINGS']);
    }

    protected static function master(): string
    {
        return base64_decode(self::vectors()['key']['master_b64']);
    }

    /** Binds an exclusive test queue to comet.jobs for every action. */
    protected static function bindTestQueue(): void
    {
        if (self::$ch !== null) {
            return;
        }
        $u = parse_url(getenv('COMET_AMQP_URL'));
        self::$amqp = new AMQPStreamConnection($u['host'], $u['port'], $u['user'] ?? 'guest', $u['pass'] ?? 'guest');
        self::$ch = self::$amqp->channel();
        $ex = $GLOBALS['COMET_TEST_SETTINGS']['exchange'];
        self::$ch->exchange_declare($ex, 'direct', false, true, false);
        list(self::$queue) = self::$ch->queue_declare('', false, false, true, true);
        foreach (\WHMCS\Module\Server\CometBackup\Jobs::ACTIONS as $a) {
            self::$ch->queue_bind(self::$queue, $ex, $a);
        }
    }

    protected static function unbindTestQueue(): void
    {
        if (self::$ch !== null) {
            self::$ch->queue_delete(self::$queue);
            self::$amqp->close();
            self::$amqp = null;
            self::$ch = null;
        }
    }

    /** The next message of the test queue (confirmed publishes are there already). */
    protected function fetch(): ?AMQPMessage
    {
        for ($i = 0; $i < 20; $i++) {
            $m = self::$ch->basic_get(self::$queue, true);
            if ($m !== null) {
                return $m;
            }
            usleep(50000);
        }
        return null;
    }

    protected function queueDepth(): int
    {
        list(, $count) = self::$ch->queue_declare(self::$queue, true);
        return (int)$count;
    }

    /** Checks headers and signature; returns the decoded job. */
    protected function decodeVerified(AMQPMessage $m, string $action): array
    {
        $props = $m->get_properties();
        $this->assertSame(2, $props['delivery_mode']);
        $this->assertSame('application/json', $props['content_type']);
        $this->assertSame($action, $props['type']);
        $this->assertSame($action, $m->getRoutingKey());
        $headers = $props['application_headers']->getNativeData();
        $this->assertSame(self::vectors()['key']['kid'], $headers['x-comet-kid']);
        $this->assertTrue(Crypto::verifyBody(Crypto::signKey(self::master()), $m->getBody(), $headers['x-comet-sig']),
            'x-comet-sig verifies with the vector key');
        $job = json_decode($m->getBody(), true);
        $this->assertIsArray($job);
        $this->assertSame($props['message_id'], $job['job_id']);
        return $job;
    }

    /** Client, product and service rows; returns WHMCS-like module params. */
    protected function makeService(array $over = []): array
    {
        $clientId = Capsule::table('tblclients')->insertGetId(
            ['firstname' => 'Alice', 'lastname' => 'Liddell', 'email' => 'alice@example.com']);
        $pid = Capsule::table('tblproducts')->insertGetId(['name' => 'Backup 100']);
        $sid = Capsule::table('tblhosting')->insertGetId([
            'userid' => $clientId, 'packageid' => $pid, 'domainstatus' => 'Pending',
            'username' => 'alice', 'password' => 'enc',
        ]);
        return array_replace_recursive([
            'serviceid' => $sid,
            'userid' => $clientId,
            'pid' => $pid,
            'serverhostname' => 'backup.example.com',
            'serverip' => '',
            'serverport' => '8060',
            'serversecure' => false,
            'serverusername' => 'admin',
            'serverpassword' => 'admin-pass',
            'username' => 'alice',
            'password' => 'S3cret-Pass!',
            'domain' => '',
            'configoption1' => '[Create New Policy Group] (WHMCS_67dd2a51c0f3e8.41234567)',
            'configoption2' => '1003-abc',
            'configoption3' => 'yes',
            'configoptions' => [
                'number_of_devices' => '5',
                'protected_item_quota_gb' => '100',
                'protected_item_quota_tb' => '',
                'storage_vault_quota_gb' => '0',
                'storage_vault_quota_tb' => '2',
            ],
            'customfields' => [],
            'clientsdetails' => ['email' => 'alice@example.com', 'firstname' => 'Alice'],
        ], $over);
    }

    protected function jobRows(int $serviceId): array
    {
        return Capsule::table(JobStore::TABLE)->where('service_id', $serviceId)->orderBy('seq')->get()->all();
    }
}
