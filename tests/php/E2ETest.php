<?php
/* End to end: module function -> RabbitMQ (comet.jobs) -> comet-worker ->
 * fake Comet -> result event -> comet-dispatcher -> callback.php (php -S,
 * tests/e2e/callback-router.php) -> rows in MariaDB. Every action, a create
 * Comet rejects, and WHMCS down while results arrive. Prints "e2e: ..."
 * figures to STDERR (and $TEST_LOG_DIR/e2e.txt under make test). */

namespace CometBackup\Tests;

use PhpAmqpLib\Connection\AMQPStreamConnection;
use WHMCS\Database\Capsule;
use WHMCS\Module\Server\CometBackup\JobStore;

final class E2ETest extends TestCase
{
    const SERVICES = 12;              /* services per phase of the all-actions test */
    const DOWN_SERVICES = 8;          /* creates run while WHMCS is down */
    const WAIT_S = 60.0;

    /** @var array name => [proc, pipes] */
    private static $procs = [];
    /** @var string */
    private static $dir = '';
    /** @var string */
    private static $root = '';
    /** @var string */
    private static $bin = '';
    /** @var int */
    private static $fakePort = 0;
    /** @var int */
    private static $phpPort = 0;
    /** @var string */
    private static $callbackLog = '';
    /** @var string */
    private static $cfg = '';
    /** @var string|null why the suite cannot run here */
    private static $skip = null;
    /** @var string */
    private static $run = '';
    /** @var int first service id of the next test: the worker's Redis keeps per-service
     * order (last applied seq), so a truncated tblhosting must not hand out old ids. */
    private static $nextServiceId = 1000;

    /* Figures for the closing note. */
    /** @var int */
    private static $published = 0;
    /** @var float[] seconds a module call took (hand-off) */
    private static $handoff = [];
    /** @var float[] seconds from module call to recorded result (normal operation) */
    private static $latency = [];
    /** @var string[] every job id the module published */
    private static $jobIds = [];
    /** @var array job_id => call start (microtime) */
    private static $callStart = [];

    public static function setUpBeforeClass(): void
    {
        self::$root = dirname(__DIR__, 2);
        $env = getenv('COMET_TEST_BIN_DIR');
        self::$bin = ($env !== false && $env !== '') ? $env : self::$root . '/bin';
        if (getenv('COMET_REDIS_PORT') === false) {
            self::$skip = 'no Redis in the environment (run under make test / scripts/test.sh)';
            return;
        }
        foreach (['fake-comet', 'comet-worker', 'comet-dispatcher'] as $b) {
            if (!is_executable(self::$bin . "/$b")) {
                self::$skip = self::$bin . "/$b is missing: run make first";
                return;
            }
        }
        self::$run = substr(bin2hex(random_bytes(4)), 0, 6);
        // Under make test the processes' logs stay with the other test logs.
        $logs = getenv('TEST_LOG_DIR');
        self::$dir = ($logs !== false && is_dir($logs) ? $logs : sys_get_temp_dir()) . '/comet-e2e-' . getmypid();
        @mkdir(self::$dir, 0700, true);
        $vec = $GLOBALS['COMET_TEST_VECTORS'];
        self::secretFile('job.key', $vec['key']['master_b64']);
        self::secretFile('admin.pw', 'admin-secret');
        self::secretFile('callback.secret', $vec['callback']['secret']);
        self::$callbackLog = self::$dir . '/callbacks.jsonl';
        touch(self::$callbackLog);
        // A fatal error skips tearDownAfterClass: never leave the processes behind.
        register_shutdown_function(function () {
            foreach (array_keys(self::$procs) as $name) {
                self::stop($name);
            }
        });
        self::$fakePort = self::freePort();
        self::$phpPort = self::freePort();

        self::$cfg = self::$dir . '/comet.conf';
        file_put_contents(self::$cfg, sprintf(
            "log = { level = \"info\"; format = \"text\"; };\n"
            . "worker = { concurrency = 8; grace_seconds = 10; };\n"
            . "retry = { max_attempts = 4; tiers_ms = \"200,400,800\"; };\n"
            . "redis = { prefix = \"e2e%s:\"; };\n"
            . "comet = { connect_timeout_ms = 2000; timeout_ms = 5000; };\n"
            . "keys = ( { id = \"%s\"; file = \"%s\"; } );\n"
            . "servers = ( { url = \"http://127.0.0.1:%d\"; username = \"admin\"; password_file = \"%s\"; } );\n"
            . "dispatcher = { callback_url = \"http://127.0.0.1:%d/callback\"; secret_file = \"%s\";\n"
            . "               concurrency = 8; timeout_ms = 5000; };\n",
            self::$run, $vec['key']['kid'], self::$dir . '/job.key', self::$fakePort, self::$dir . '/admin.pw',
            self::$phpPort, self::$dir . '/callback.secret'
        ));

        // Jobs and results the C suites left on this broker would be counted here.
        self::purge(['comet.jobs', 'comet.results.whmcs']);

        self::start('fake', [self::$bin . '/fake-comet', '--port', (string)self::$fakePort, '--threads', '8']);
        self::waitHttp('http://127.0.0.1:' . self::$fakePort . '/__fake/health');
        self::start('worker', [self::$bin . '/comet-worker', '-c', self::$cfg]);
        self::start('dispatcher', [self::$bin . '/comet-dispatcher', '-c', self::$cfg]);
        self::startWhmcs();
        self::waitLog('worker', 'connected to the broker');
        self::waitLog('dispatcher', 'connected to the broker');
    }

    public static function tearDownAfterClass(): void
    {
        foreach (array_keys(self::$procs) as $name) {
            self::stop($name);
        }
        if (self::$skip === null && self::$published > 0) {
            self::report();
        }
        parent::tearDownAfterClass();
    }

    protected function setUp(): void
    {
        if (self::$skip !== null) {
            $this->markTestSkipped(self::$skip);
        }
        parent::setUp();
        Capsule::statement('ALTER TABLE tblhosting AUTO_INCREMENT = ' . self::$nextServiceId);
        self::$nextServiceId += 1000;
        // The real exchange the workers consume (the other PHP tests use a private one).
        self::testSettings(['exchange' => 'comet.jobs']);
        self::fake('/__fake/config', ['error_rate' => 0, 'latency_ms' => 0]);
    }

    /* ---- processes ------------------------------------------------------------- */

    private static function secretFile(string $name, string $value): void
    {
        file_put_contents(self::$dir . "/$name", $value . "\n");
        chmod(self::$dir . "/$name", 0600);
    }

    private static function freePort(): int
    {
        $s = stream_socket_server('tcp://127.0.0.1:0', $errno, $errstr);
        if ($s === false) {
            throw new \RuntimeException("no free port: $errstr");
        }
        $name = stream_socket_get_name($s, false);
        fclose($s);
        return (int)substr($name, strrpos($name, ':') + 1);
    }

    private static function start(string $name, array $cmd, array $env = []): void
    {
        $log = self::$dir . "/$name.log";
        $spec = [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'a'], 2 => ['file', $log, 'a']];
        $p = proc_open($cmd, $spec, $pipes, self::$root, $env ? $env + getenv() : null);
        if (!is_resource($p)) {
            throw new \RuntimeException("cannot start $name");
        }
        self::$procs[$name] = $p;
    }

    /** SIGTERM, wait (the worker's grace is 10 s), then SIGKILL. Returns the exit code (-1: killed). */
    private static function stop(string $name): int
    {
        if (!isset(self::$procs[$name])) {
            return -1;
        }
        $p = self::$procs[$name];
        unset(self::$procs[$name]);
        proc_terminate($p, 15);
        $end = microtime(true) + 20;
        $code = -1;
        while (microtime(true) < $end) {
            $st = proc_get_status($p);
            if (!$st['running']) {
                $code = $st['exitcode']; // only reported by the first call that sees the exit
                break;
            }
            usleep(20000);
        }
        if ($code === -1) {
            proc_terminate($p, 9);
        }
        proc_close($p);
        return $code;
    }

    private static function startWhmcs(): void
    {
        self::start('whmcs', [PHP_BINARY, '-S', '127.0.0.1:' . self::$phpPort, '-t', self::$root . '/tests/e2e',
            self::$root . '/tests/e2e/callback-router.php'],
            ['COMETBACKUP_SETTINGS' => getenv('COMETBACKUP_SETTINGS'), 'E2E_CALLBACK_LOG' => self::$callbackLog]);
        self::waitHttp('http://127.0.0.1:' . self::$phpPort . '/health');
    }

    private static function waitHttp(string $url): void
    {
        $end = microtime(true) + 15;
        while (microtime(true) < $end) {
            $ctx = stream_context_create(['http' => ['timeout' => 1]]);
            if (@file_get_contents($url, false, $ctx) !== false) {
                return;
            }
            usleep(50000);
        }
        throw new \RuntimeException("$url did not answer");
    }

    private static function waitLog(string $name, string $needle): void
    {
        $end = microtime(true) + 30;
        while (microtime(true) < $end) {
            if (strpos((string)@file_get_contents(self::$dir . "/$name.log"), $needle) !== false) {
                return;
            }
            usleep(50000);
        }
        throw new \RuntimeException("$name did not log '$needle': " . @file_get_contents(self::$dir . "/$name.log"));
    }

    private static function purge(array $queues): void
    {
        $u = parse_url(getenv('COMET_AMQP_URL'));
        foreach ($queues as $q) {
            // A fresh broker has no such queue yet (404 closes the channel): nothing to purge.
            $c = new AMQPStreamConnection($u['host'], $u['port'], $u['user'] ?? 'guest', $u['pass'] ?? 'guest');
            try {
                $c->channel()->queue_purge($q);
            } catch (\Throwable $e) {
            }
            try {
                $c->close();
            } catch (\Throwable $e) {
            }
        }
    }

    /** GET (or POST JSON) the fake's control API. */
    private static function fake(string $route, ?array $post = null): array
    {
        $opts = ['http' => ['timeout' => 10, 'ignore_errors' => true]];
        if ($post !== null) {
            $opts['http']['method'] = 'POST';
            $opts['http']['header'] = "Content-Type: application/json\r\n";
            $opts['http']['content'] = json_encode($post);
        }
        $s = file_get_contents('http://127.0.0.1:' . self::$fakePort . $route, false, stream_context_create($opts));
        $d = json_decode((string)$s, true);
        if (!is_array($d)) {
            throw new \RuntimeException("fake $route: " . $s);
        }
        return $d;
    }

    private static function fakeUser(string $name): ?array
    {
        $state = self::fake('/__fake/state');
        return $state['users'][$name] ?? null;
    }

    /* ---- module calls and results ------------------------------------------------- */

    const FUNCS = [
        'create' => 'cometbackup_CreateAccount',
        'suspend' => 'cometbackup_SuspendAccount',
        'unsuspend' => 'cometbackup_UnsuspendAccount',
        'change_package' => 'cometbackup_ChangePackage',
        'change_password' => 'cometbackup_ChangePassword',
        'terminate' => 'cometbackup_TerminateAccount',
    ];

    /** A service whose Comet username will be its client's e-mail (the module's rule). */
    private function service(int $i): array
    {
        $email = 'e2e-' . self::$run . '-' . $i . '@example.com';
        return $this->makeService([
            'serverhostname' => '127.0.0.1',
            'serverport' => (string)self::$fakePort,
            'serversecure' => false,
            'username' => $email,
            'clientsdetails' => ['email' => $email, 'firstname' => 'E2e'],
            'password' => 'Initial-Pass-' . $i,
            'configoption1' => '[Create New Policy Group] (WHMCS_e2e_' . self::$run . ')',
            'configoption2' => '1003-default',
            'configoption3' => 'no',
        ]);
    }

    /** Calls the module function as WHMCS would; returns the job id it published. */
    private function call(string $action, array $params): string
    {
        $fn = self::FUNCS[$action];
        $t0 = microtime(true);
        $res = $fn($params);
        $t1 = microtime(true);
        $this->assertSame('success', $res, "$action for service {$params['serviceid']}");
        $job = JobStore::latest((int)$params['serviceid'], $action);
        $this->assertNotNull($job);
        self::$published++;
        self::$handoff[] = $t1 - $t0;
        self::$jobIds[] = $job->job_id;
        self::$callStart[$job->job_id] = $t0;
        if ($action === 'create') {
            // WHMCS marks the service Active once CreateAccount returned success.
            Capsule::table('tblhosting')->where('id', $params['serviceid'])->update(['domainstatus' => 'Active']);
        }
        return $job->job_id;
    }

    /** The router's log: job_id => list of entries. */
    private static function callbacks(): array
    {
        $out = [];
        foreach (file(self::$callbackLog, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) as $line) {
            $e = json_decode($line, true);
            if (is_array($e)) {
                $out[$e['job_id']][] = $e;
            }
        }
        return $out;
    }

    /** Waits until every job has a terminal row; returns job_id => row. */
    private function waitTerminal(array $jobIds, float $timeout = self::WAIT_S): array
    {
        $end = microtime(true) + $timeout;
        do {
            $rows = Capsule::table(JobStore::TABLE)->whereIn('job_id', $jobIds)->get()->keyBy('job_id')->all();
            $done = 0;
            foreach ($rows as $r) {
                $done += in_array($r->state, JobStore::TERMINAL, true) ? 1 : 0;
            }
            if ($done === count($jobIds)) {
                return $rows;
            }
            usleep(5000);
        } while (microtime(true) < $end);
        $states = array_map(function ($r) {
            return $r->state . ($r->error_code ? " ({$r->error_code})" : '');
        }, $rows);
        $this->fail("only $done of " . count($jobIds) . ' jobs reached a terminal state: ' . json_encode($states)
            . "\nworker: " . self::tail('worker') . "\ndispatcher: " . self::tail('dispatcher'));
    }

    private static function tail(string $name): string
    {
        $lines = file(self::$dir . "/$name.log", FILE_IGNORE_NEW_LINES) ?: [];
        return implode("\n", array_slice($lines, -15));
    }

    /** Each job recorded exactly once (router log and module log); returns call -> recorded seconds. */
    private function assertRecordedOnce(array $jobIds): array
    {
        $cb = self::callbacks();
        $lat = [];
        foreach ($jobIds as $id) {
            $recorded = array_values(array_filter($cb[$id] ?? [], function ($e) {
                return $e['http'] === 200 && $e['outcome'] === 'recorded' && $e['status'] !== 'retrying';
            }));
            $this->assertCount(1, $recorded, "job $id recorded once");
            $lat[$id] = $recorded[0]['t'] - self::$callStart[$id];
            $logs = Capsule::table('tblmodulelog')->where('action', 'like', 'result:%')
                ->where('request', 'like', '%' . $id . '%')->count();
            $this->assertSame(1, $logs, "job $id has one result entry in the module log");
        }
        return $lat;
    }

    /* ---- tests ------------------------------------------------------------------------ */

    public function testEveryActionEndToEnd(): void
    {
        $params = [];
        for ($i = 0; $i < self::SERVICES; $i++) {
            $params[$i] = $this->service($i);
        }
        $phases = ['create', 'suspend', 'unsuspend', 'change_package', 'change_password', 'terminate'];
        foreach ($phases as $action) {
            $ids = [];
            foreach ($params as $i => $p) {
                if ($action === 'change_package') {
                    $params[$i]['configoptions']['number_of_devices'] = '9';
                    $p = $params[$i];
                }
                if ($action === 'change_password') {
                    $params[$i]['password'] = 'Changed-Pass-' . $i . '-' . self::$run;
                    $p = $params[$i];
                }
                $ids[$i] = $this->call($action, $p);
            }
            $rows = $this->waitTerminal(array_values($ids));
            foreach ($ids as $i => $id) {
                $this->assertSame('succeeded', $rows[$id]->state,
                    "$action of service $i: {$rows[$id]->error_code} {$rows[$id]->error_message}");
            }
            self::$latency = array_merge(self::$latency, array_values($this->assertRecordedOnce(array_values($ids))));
            foreach ($params as $i => $p) {
                $this->checkEffect($action, $params[$i]);
            }
        }
    }

    /** What one action must have done to Comet and WHMCS. */
    private function checkEffect(string $action, array &$p): void
    {
        $svc = Capsule::table('tblhosting')->where('id', $p['serviceid'])->first();
        $name = $svc->username;
        $user = self::fakeUser($name);
        switch ($action) {
            case 'create':
                $this->assertSame($p['username'], $name, 'the callback recorded the Comet username');
                $this->assertNotNull($user);
                $this->assertSame($p['password'], $user['password']);
                $this->assertSame(5, $user['profile']['MaximumDevices']);
                $this->assertCount(1, $user['profile']['Destinations']);
                $p['username'] = $name; // later actions act on the recorded account
                break;
            case 'suspend':
                $this->assertTrue($user['profile']['IsSuspended']);
                break;
            case 'unsuspend':
                $this->assertFalse($user['profile']['IsSuspended']);
                break;
            case 'change_package':
                $this->assertSame(9, $user['profile']['MaximumDevices']);
                break;
            case 'change_password':
                $this->assertSame($p['password'], $user['password']);
                break;
            case 'terminate':
                $this->assertNull($user, "account $name deleted");
                break;
        }
        $this->assertSame('Active', $svc->domainstatus);
    }

    public function testRejectedCreateFailsOnceAndReturnsServiceToPending(): void
    {
        self::fake('/__fake/config', ['error_rate' => 1, 'error_kind' => 'status500', 'error_endpoints' => ['add-user']]);
        $p = $this->service(100);
        $id = $this->call('create', $p);
        $row = $this->waitTerminal([$id])[$id];
        self::fake('/__fake/config', ['error_rate' => 0, 'error_endpoints' => []]);
        $this->assertSame('failed', $row->state);
        $this->assertSame('permanent', $row->error_class);
        $this->assertSame('Pending', Capsule::table('tblhosting')->where('id', $p['serviceid'])->value('domainstatus'));
        self::$latency = array_merge(self::$latency, array_values($this->assertRecordedOnce([$id])));
        usleep(500000); // a second notification would come from a repeat delivery
        $this->assertSame(1, Capsule::table('test_localapi')->where('command', 'OpenTicket')->count(),
            'exactly one admin notification');
        $this->assertNull(self::fakeUser($p['username']));
    }

    public function testResultsWhileWhmcsIsDownAreRecordedOnceAfterwards(): void
    {
        self::stop('whmcs');
        $ids = [];
        $names = [];
        for ($i = 0; $i < self::DOWN_SERVICES; $i++) {
            $p = $this->service(200 + $i);
            $ids[] = $this->call('create', $p);
            $names[] = $p['username'];
        }
        // The worker finishes every job meanwhile: Comet has the accounts...
        $end = microtime(true) + self::WAIT_S;
        for (;;) {
            $made = count(array_intersect($names, array_keys(self::fake('/__fake/state')['users'])));
            if ($made === count($names) || microtime(true) > $end) {
                break;
            }
            usleep(20000);
        }
        $this->assertSame(count($names), $made);
        // ...but no callback got through: the rows are still queued.
        usleep(1500000); // the dispatcher retries against a closed port a few times
        $states = Capsule::table(JobStore::TABLE)->whereIn('job_id', $ids)->pluck('state')->all();
        $this->assertSame(array_fill(0, count($ids), 'queued'), $states);
        $this->assertSame([], array_intersect($ids, array_keys(self::callbacks())));

        $t0 = microtime(true);
        self::startWhmcs();
        $rows = $this->waitTerminal($ids);
        $recovery = microtime(true) - $t0;
        foreach ($ids as $id) {
            $this->assertSame('succeeded', $rows[$id]->state);
        }
        usleep(500000);
        $this->assertRecordedOnce($ids);
        fwrite(STDERR, sprintf("e2e: whmcs down: %d results held while the callback was down, all recorded once "
            . "%.1f s after it came back\n", count($ids), $recovery));
        self::note(sprintf("whmcs down: %d results held, all recorded once %.1f s after restart",
            count($ids), $recovery));
    }

    public function testStopsCleanlyAndLogsNoSecret(): void
    {
        $this->assertSame(0, self::stop('dispatcher'), 'comet-dispatcher exits 0 on SIGTERM');
        $this->assertSame(0, self::stop('worker'), 'comet-worker exits 0 on SIGTERM');
        $vec = $GLOBALS['COMET_TEST_VECTORS'];
        $secrets = [$vec['callback']['secret'], $vec['key']['master_b64'], 'admin-secret', 'Initial-Pass-', 'Changed-Pass-'];
        foreach (['worker', 'dispatcher', 'fake', 'whmcs'] as $name) {
            $log = (string)file_get_contents(self::$dir . "/$name.log");
            foreach ($secrets as $secret) {
                $this->assertStringNotContainsString($secret, $log, "$name.log");
            }
        }
        $this->assertStringContainsString('stopped', (string)file_get_contents(self::$dir . '/dispatcher.log'));
    }

    /* ---- figures ------------------------------------------------------------------------ */

    private static function pct(array $xs, float $p): float
    {
        sort($xs);
        $n = count($xs);
        if ($n === 0) {
            return 0.0;
        }
        $k = (int)ceil($p * $n) - 1;
        return $xs[max(0, min($n - 1, $k))];
    }

    private static function note(string $line): void
    {
        $dir = getenv('TEST_LOG_DIR');
        if ($dir !== false && $dir !== '' && is_dir($dir)) {
            file_put_contents("$dir/e2e.txt", "e2e: $line\n", FILE_APPEND);
        }
    }

    private static function report(): void
    {
        $cb = self::callbacks();
        $recorded = 0;
        $dups = 0;
        $posts = 0;
        foreach (self::$jobIds as $id) {
            $posts += count($cb[$id] ?? []);
            $n = count(array_filter($cb[$id] ?? [], function ($e) {
                return $e['http'] === 200 && $e['outcome'] === 'recorded' && $e['status'] !== 'retrying';
            }));
            $recorded += min($n, 1);
            $dups += max(0, $n - 1);
        }
        $lines = [
            sprintf('jobs published from PHP: %d; results recorded: %d; duplicates: %d; callback POSTs: %d',
                self::$published, $recorded, $dups, $posts),
            sprintf('module call hand-off (publish with confirm): median %.1f ms, p99 %.1f ms (n=%d)',
                1000 * self::pct(self::$handoff, 0.5), 1000 * self::pct(self::$handoff, 0.99), count(self::$handoff)),
            sprintf('module call -> recorded result: median %.1f ms, p99 %.1f ms (n=%d, WHMCS up)',
                1000 * self::pct(self::$latency, 0.5), 1000 * self::pct(self::$latency, 0.99), count(self::$latency)),
        ];
        foreach ($lines as $l) {
            fwrite(STDERR, "e2e: $l\n");
            self::note($l);
        }
    }
}
