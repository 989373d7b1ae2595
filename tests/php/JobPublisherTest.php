<?php
/* JobPublisher on both transports (php-amqp with a persistent connection,
 * php-amqplib with a connection per publish) against the real broker. Each
 * test is one "request": TestCase::setUp ends the previous one the way the
 * end of a php-fpm request does (JobPublisher::endRequest). */

namespace CometBackup\Tests;

use PhpAmqpLib\Wire\AMQPTable;
use WHMCS\Module\Server\CometBackup\Crypto;
use WHMCS\Module\Server\CometBackup\ExtAmqpTransport;
use WHMCS\Module\Server\CometBackup\JobPublisher;
use WHMCS\Module\Server\CometBackup\Settings;

final class JobPublisherTest extends TestCase
{
    public static function setUpBeforeClass(): void
    {
        self::bindTestQueue();
    }

    public function transports(): array
    {
        return ['php-amqp extension' => ['ext'], 'php-amqplib' => ['amqplib']];
    }

    /** A publisher forced onto one transport; the test is skipped if that transport is missing here. */
    private function publisher(string $transport, array $settings = []): JobPublisher
    {
        if ($transport === 'ext' && !ExtAmqpTransport::available()) {
            $this->markTestSkipped('the php-amqp extension is not loaded (apt-get install php-amqp)');
        }
        self::testSettings(['amqp_transport' => $transport] + $settings);
        $p = new JobPublisher(Settings::get());
        $this->assertSame($transport, $p->transport()->name());
        return $p;
    }

    /** Publishes a signed job for $action; returns [error, job id]. */
    private function publishJob(JobPublisher $p, string $action = 'create'): array
    {
        $jobId = Crypto::uuid4();
        $body = json_encode(['v' => 1, 'job_id' => $jobId, 'action' => $action], JSON_UNESCAPED_SLASHES);
        $sig = Crypto::signBody(Crypto::signKey(self::master()), $body);
        return [$p->publish($action, $jobId, $body, self::vectors()['key']['kid'], $sig), $jobId];
    }

    public function testAutoPrefersTheExtensionAndRejectsUnknownTransports(): void
    {
        self::testSettings();
        $auto = (new JobPublisher(Settings::get()))->transport()->name();
        $this->assertSame(ExtAmqpTransport::available() ? 'ext' : 'amqplib', $auto);

        self::testSettings(['amqp_transport' => 'carrier-pigeon']);
        $r = (new JobPublisher(Settings::get()))->publish('create', Crypto::uuid4(), '{}', 'k', 's');
        $this->assertStringContainsString('amqp_transport must be', (string)$r);
    }

    /** @dataProvider transports */
    public function testConfirmedJobCarriesTheModulesPropertiesAndHeaders(string $transport): void
    {
        $p = $this->publisher($transport);
        $before = time();
        [$err, $jobId] = $this->publishJob($p, 'suspend');
        $this->assertNull($err);

        $m = $this->fetch();
        $this->assertNotNull($m, 'a confirmed job is in the bound queue');
        $job = $this->decodeVerified($m, 'suspend');
        $this->assertSame($jobId, $job['job_id']);
        $props = $m->get_properties();
        $this->assertSame($jobId, $props['message_id']);
        $this->assertGreaterThanOrEqual($before, $props['timestamp']);
        $this->assertLessThanOrEqual(time(), $props['timestamp']);
        $this->assertInstanceOf(AMQPTable::class, $props['application_headers']);
        $this->assertSame(['x-comet-kid', 'x-comet-sig'], array_keys($props['application_headers']->getNativeData()));
        $this->assertSame(0, $this->queueDepth(), 'exactly one message');
    }

    /** @dataProvider transports */
    public function testUnroutableJobIsReported(string $transport): void
    {
        // The test queue is bound to the usual exchange only.
        $p = $this->publisher($transport, ['exchange' => 'comet.jobs.phptest.unbound']);
        [$err] = $this->publishJob($p, 'terminate');
        $this->assertSame("broker could not route the job (no queue bound for 'terminate': "
            . 'is the worker topology declared?)', $err);

        // The same connection goes on working (for ext: the persistent one).
        self::testSettings(['amqp_transport' => $transport]);
        [$err] = $this->publishJob(new JobPublisher(Settings::get()));
        $this->assertNull($err);
        $this->assertNotNull($this->fetch());
    }

    /** @dataProvider transports */
    public function testNackIsReported(string $transport): void
    {
        // A queue that refuses every message: the broker nacks the publish.
        $ex = 'comet.jobs.phptest.nack';
        self::$ch->exchange_declare($ex, 'direct', false, true, false);
        [$q] = self::$ch->queue_declare('', false, false, true, true, false,
            new AMQPTable(['x-max-length' => 0, 'x-overflow' => 'reject-publish']));
        self::$ch->queue_bind($q, $ex, 'create');
        try {
            $p = $this->publisher($transport, ['exchange' => $ex]);
            [$err] = $this->publishJob($p);
            $this->assertSame('broker refused the job (nack)', $err);
        } finally {
            self::$ch->queue_delete($q);
        }
    }

    /** @dataProvider transports */
    public function testExchangeWithOtherArgumentsIsAnErrorAndTheNextPublishWorks(string $transport): void
    {
        $ex = 'comet.jobs.phptest.fanout';
        self::$ch->exchange_declare($ex, 'fanout', false, false, true);
        try {
            $p = $this->publisher($transport, ['exchange' => $ex]);
            [$err] = $this->publishJob($p);
            $this->assertStringStartsWith('message broker unavailable: ', (string)$err);
            $this->assertStringContainsString('PRECONDITION_FAILED', (string)$err);
        } finally {
            self::$ch->exchange_delete($ex);
        }
        self::testSettings(['amqp_transport' => $transport]);
        [$err] = $this->publishJob(new JobPublisher(Settings::get()));
        $this->assertNull($err);
        $this->assertNotNull($this->fetch());
    }

    /** @dataProvider transports */
    public function testBrokerDownFailsFastWithoutThePassword(string $transport): void
    {
        $sock = stream_socket_server('tcp://127.0.0.1:0');
        $port = (int)substr(strrchr(stream_socket_get_name($sock, false), ':'), 1);
        fclose($sock); // a port nothing listens on
        $p = $this->publisher($transport, [
            'broker_url' => "amqp://guest:Hunter2-secret@127.0.0.1:$port/", 'connect_timeout' => 1.0]);
        $t0 = microtime(true);
        [$err] = $this->publishJob($p);
        $this->assertLessThan(1.5, microtime(true) - $t0, 'fails fast');
        $this->assertStringStartsWith('message broker unavailable: ', (string)$err);
        $this->assertStringNotContainsString('Hunter2-secret', (string)$err);
    }

    /** @dataProvider transports */
    public function testWrongPasswordIsReportedWithoutIt(string $transport): void
    {
        $u = parse_url(getenv('COMET_AMQP_URL'));
        $p = $this->publisher($transport, [
            'broker_url' => "amqp://guest:Wr0ng-Secret-pw@{$u['host']}:{$u['port']}/"]);
        [$err] = $this->publishJob($p);
        $this->assertStringStartsWith('message broker unavailable: ', (string)$err);
        $this->assertStringNotContainsString('Wr0ng-Secret-pw', (string)$err);
    }

    /**
     * The broker closes the connection between two requests (an operator,
     * a restart, a policy): the next request notices when it opens its
     * channel, before publishing, reconnects once and its job goes through.
     * @dataProvider transports
     */
    public function testConnectionClosedByTheBrokerBetweenRequests(string $transport): void
    {
        $p = $this->publisher($transport);
        [$err] = $this->publishJob($p);
        $this->assertNull($err);
        $this->assertNotNull($this->fetch());
        $first = self::moduleConnections();
        if ($transport === 'ext') {
            // The extension keeps one persistent connection across requests.
            $this->assertCount(1, $first, 'one persistent connection');
            JobPublisher::endRequest();
            [$err] = $this->publishJob($this->publisher($transport));
            $this->assertNull($err);
            $this->assertNotNull($this->fetch());
            $this->assertSame($first, self::moduleConnections(), 'the next request reuses it');
        }
        // (php-amqplib closed its own after the publish: closing the
        // process's persistent ones must not disturb it either.)

        foreach ($first as $pid) {
            self::rabbitmqctl(['close_connection', $pid, 'closed by JobPublisherTest']);
        }
        JobPublisher::endRequest();
        [$err] = $this->publishJob($this->publisher($transport));
        $this->assertNull($err, 'the job went through on a new connection');
        $this->assertNotNull($this->fetch());
        $this->assertSame(0, $this->queueDepth(), 'published once');
        if ($transport === 'ext') {
            $now = self::moduleConnections();
            $this->assertCount(1, $now);
            $this->assertNotSame($first, $now, 'a new persistent connection');
        }
    }

    /**
     * The same with real request boundaries: `php -S` serves requests one
     * after another in one process, as a php-fpm worker does, and runs
     * PHP's whole request shutdown after each.
     */
    public function testRealRequestsOfOneWorkerShareOnePersistentConnection(): void
    {
        if (!ExtAmqpTransport::available()) {
            $this->markTestSkipped('the php-amqp extension is not loaded (apt-get install php-amqp)');
        }
        $mine = self::moduleConnections(); // this test process's own, from the tests before
        $sock = stream_socket_server('tcp://127.0.0.1:0');
        $addr = stream_socket_get_name($sock, false);
        fclose($sock);
        $log = tempnam(sys_get_temp_dir(), 'publish-router');
        $spec = [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']];
        $server = proc_open([PHP_BINARY, '-S', $addr, __DIR__ . '/fixtures/publish-router.php'], $spec, $pipes);
        $this->assertIsResource($server);
        try {
            $request = function () use ($addr, $log): array {
                // The first request also waits for php -S to listen.
                $end = microtime(true) + 10;
                while (($r = @file_get_contents("http://$addr/", false,
                        stream_context_create(['http' => ['timeout' => 10]]))) === false
                    && microtime(true) < $end) {
                    usleep(50000);
                }
                $this->assertNotFalse($r, 'php -S answered: ' . file_get_contents($log));
                $a = json_decode($r, true);
                $this->assertIsArray($a, $r);
                $this->assertSame('ext', $a['transport']);
                $this->assertNull($a['error']);
                $this->assertNotNull($this->fetch(), 'the job reached the queue');
                return $a;
            };
            for ($i = 0; $i < 3; $i++) {
                $request();
            }
            $theirs = array_values(array_diff(self::moduleConnections(), $mine));
            $this->assertCount(1, $theirs, 'three requests, one persistent connection');

            // Closed by the broker between two requests: the next one reconnects.
            self::rabbitmqctl(['close_connection', $theirs[0], 'closed by JobPublisherTest']);
            $request();
            $now = array_values(array_diff(self::moduleConnections(), $mine));
            $this->assertCount(1, $now);
            $this->assertNotSame($theirs, $now, 'a new persistent connection');
            $this->assertSame(0, $this->queueDepth(), 'each job published once');
        } finally {
            proc_terminate($server);
            proc_close($server);
            @unlink($log);
        }
    }

    /** Broker-side ids of the module's persistent (php-amqp) connections. */
    private static function moduleConnections(): array
    {
        $out = self::rabbitmqctl(['list_connections', 'pid', 'client_properties', '-q', '--no-table-headers']);
        $pids = [];
        foreach (explode("\n", $out) as $line) {
            if (strpos($line, '"whmcs-cometbackup"') !== false && strpos($line, '"persistent"') !== false) {
                $pids[] = strtok($line, "\t");
            }
        }
        sort($pids);
        return $pids;
    }

    private static function rabbitmqctl(array $args): string
    {
        $dir = getenv('COMET_RABBITMQ_DIR');
        if ($dir === false || $dir === '') {
            self::markTestSkipped('COMET_RABBITMQ_DIR is not set: run scripts/php-test.sh');
        }
        $cmd = escapeshellarg(dirname(__DIR__, 2) . '/scripts/services.sh') . ' ctl ' . escapeshellarg($dir);
        foreach ($args as $a) {
            $cmd .= ' ' . escapeshellarg($a);
        }
        exec($cmd . ' 2>&1', $lines, $rc);
        if ($rc !== 0) {
            self::fail("rabbitmqctl " . implode(' ', $args) . " failed ($rc): " . implode("\n", $lines));
        }
        return implode("\n", $lines);
    }
}
