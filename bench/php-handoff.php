<?php
/* The WHMCS module's hand-off, timed: seal the password, build and sign the
 * v1 job, and publish it with the module's own JobPublisher (confirm and
 * mandatory flag), as one module call does in a WHMCS request (the
 * job-table insert, one MariaDB write, is not included). Prints a JSON
 * summary.
 *
 * This is ONE long-lived PHP process standing in for ONE php-fpm worker
 * serving N WHMCS requests one after another: each call builds a new
 * JobPublisher, and JobPublisher::endRequest() after it does what the end of
 * a request does (the request's objects go; the php-amqp extension's
 * persistent connection stays in the process for the next request). So the
 * first call pays the connection set-up, as a worker's first request does,
 * and the others reuse the connection.
 *
 * Transports, each run with N calls:
 *   ext      php-amqp extension, persistent connection (the module's choice
 *            when the extension is loaded)        -> JSON "ext_persistent"
 *   amqplib  php-amqplib, a new connection per call (the fallback)
 *                                                  -> JSON "amqplib_per_request"
 * The top-level n/failed/p50_ms/p95_ms/p99_ms/max_ms repeat the figures of
 * the transport the module picks by itself ("transport" names it).
 *
 *   php bench/php-handoff.php AMQP_URL KEY_FILE KID SERVER_URL N OUT.json
 *       [--transports ext,amqplib] [--queue NAME]
 *
 * --transports: which to run, in order (default: ext,amqplib when the
 *   extension is loaded, else amqplib).
 * --queue NAME: for a broker without workers: declare a quorum queue NAME
 *   (as the workers' comet.jobs queue) bound to comet.jobs for "create",
 *   and delete it at the end. */

define('WHMCS', 1);
require __DIR__ . '/../whmcs/modules/servers/cometbackup/lib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Wire\AMQPTable;
use WHMCS\Module\Server\CometBackup\Crypto;
use WHMCS\Module\Server\CometBackup\ExtAmqpTransport;
use WHMCS\Module\Server\CometBackup\JobPublisher;
use WHMCS\Module\Server\CometBackup\Settings;

const USAGE = "usage: php php-handoff.php AMQP_URL KEY_FILE KID SERVER_URL N OUT.json"
    . " [--transports ext,amqplib] [--queue NAME]\n";
const KEYS = ['ext' => 'ext_persistent', 'amqplib' => 'amqplib_per_request'];

$pos = [];
$transports = ExtAmqpTransport::available() ? ['ext', 'amqplib'] : ['amqplib'];
$queue = null;
for ($i = 1; $i < $argc; $i++) {
    if ($argv[$i] === '--transports' && $i + 1 < $argc) {
        $transports = array_values(array_filter(explode(',', $argv[++$i])));
    } elseif ($argv[$i] === '--queue' && $i + 1 < $argc) {
        $queue = $argv[++$i];
    } else {
        $pos[] = $argv[$i];
    }
}
if (count($pos) !== 6 || (int)$pos[4] < 1 || !$transports || array_diff($transports, array_keys(KEYS))) {
    fwrite(STDERR, USAGE);
    exit(2);
}
[$url, $keyFile, $kid, $server, $n, $out] = $pos;
$n = (int)$n;
if (in_array('ext', $transports, true) && !ExtAmqpTransport::available()) {
    fwrite(STDERR, "php-handoff: the php-amqp extension (1.11+) is not loaded\n");
    exit(2);
}
$base = ['broker_url' => $url, 'key_id' => $kid, 'key_file' => $keyFile] + Settings::DEFAULTS;
Settings::override($base);
$master = Settings::get()->masterKey();

/** One module call's hand-off: build, seal, sign, publish. Returns the publisher's error or null. */
function handoff(string $master, string $kid, string $server, int $i): ?string
{
    $jobId = Crypto::uuid4();
    $sealed = Crypto::seal(Crypto::sealKey($master), 'Bench-Passw0rd-' . $i);
    $job = [
        'v' => 1, 'job_id' => $jobId, 'action' => 'create', 'service_id' => 900000 + $i, 'seq' => 1,
        'after' => null, 'issued_at' => gmdate('Y-m-d\TH:i:s\Z'), 'server' => ['url' => $server],
        'account' => ['username' => "phpbench$i@example.com", 'custom_username' => false],
        'client' => ['email' => "phpbench$i@example.com", 'firstname' => 'Bench'],
        'product' => ['policy_group' => '', 'storage_provider' => '', 'require_password_change' => false],
        'quotas' => ['number_of_devices' => null, 'protected_item_quota_gb' => null, 'protected_item_quota_tb' => null,
                     'storage_vault_quota_gb' => null, 'storage_vault_quota_tb' => null],
        'secret' => ['kid' => $kid] + $sealed,
    ];
    $body = json_encode($job, JSON_UNESCAPED_SLASHES);
    $sig = Crypto::signBody(Crypto::signKey($master), $body);
    // A new publisher per call, as Jobs::submit makes one per module call.
    return (new JobPublisher(Settings::get()))->publish('create', $jobId, $body, $kid, $sig);
}

function run(string $transport, int $n, array $base, string $master, string $kid, string $server): array
{
    Settings::override(['amqp_transport' => $transport] + $base);
    $times = [];
    $failed = 0;
    $shown = [];
    for ($i = 0; $i < $n; $i++) {
        $t0 = hrtime(true);
        $err = handoff($master, $kid, $server, $i);
        // The WHMCS request ends here (php-fpm frees its objects).
        JobPublisher::endRequest();
        $times[] = (hrtime(true) - $t0) / 1e6;
        if ($err !== null) {
            $failed++;
            if (($shown[$err] = ($shown[$err] ?? 0) + 1) <= 3) {
                fwrite(STDERR, "php-handoff ($transport): $err\n");
            }
        }
    }
    $first = $times[0];
    sort($times);
    $pct = function (float $p) use ($times) {
        return $times[max(0, (int)ceil($p * count($times)) - 1)];
    };
    return [
        'n' => count($times), 'failed' => $failed,
        'p50_ms' => $pct(0.5), 'p95_ms' => $pct(0.95), 'p99_ms' => $pct(0.99), 'max_ms' => end($times),
        'mean_ms' => array_sum($times) / count($times), 'first_ms' => $first,
    ];
}

/** --queue: a quorum queue bound like the workers' comet.jobs queue, so jobs are routable without workers. */
function withQueue(string $url, ?string $queue, callable $fn)
{
    if ($queue === null) {
        return $fn();
    }
    $u = parse_url($url);
    $vhost = isset($u['path']) && strlen($u['path']) > 1 ? rawurldecode(substr($u['path'], 1)) : '/';
    $c = new AMQPStreamConnection($u['host'], $u['port'] ?? 5672, rawurldecode($u['user'] ?? 'guest'),
        rawurldecode($u['pass'] ?? 'guest'), $vhost);
    $ch = $c->channel();
    $ex = Settings::DEFAULTS['exchange'];
    $ch->exchange_declare($ex, 'direct', false, true, false);
    $ch->queue_declare($queue, false, true, false, false, false, new AMQPTable(['x-queue-type' => 'quorum']));
    $ch->queue_bind($queue, $ex, 'create');
    try {
        return $fn();
    } finally {
        $ch->queue_delete($queue);
        $c->close();
    }
}

$result = withQueue($url, $queue, function () use ($transports, $n, $base, $master, $kid, $server) {
    $r = [];
    foreach ($transports as $t) {
        $r[KEYS[$t]] = run($t, $n, $base, $master, $kid, $server);
    }
    return $r;
});

// Top level: the transport the module picks by itself, if it was measured.
$auto = ExtAmqpTransport::available() ? 'ext' : 'amqplib';
$top = $result[KEYS[$auto]] ?? reset($result);
$summary = [
    'transport' => isset($result[KEYS[$auto]]) ? $auto : $transports[0],
    'n' => $top['n'], 'failed' => $top['failed'], 'p50_ms' => $top['p50_ms'], 'p95_ms' => $top['p95_ms'],
    'p99_ms' => $top['p99_ms'], 'max_ms' => $top['max_ms'],
] + $result;
file_put_contents($out, json_encode($summary, JSON_PRETTY_PRINT) . "\n");
