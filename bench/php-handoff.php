<?php
/* The WHMCS module's hand-off, timed: seal the password, build and sign the
 * v1 job, and publish it with the module's own JobPublisher (a new broker
 * connection per call, confirm and mandatory flag), as one module call does
 * in a WHMCS request (the job-table insert, one MariaDB write, is not
 * included). Prints a JSON summary.
 *   php bench/php-handoff.php AMQP_URL KEY_FILE KID SERVER_URL N OUT.json */

define('WHMCS', 1);
require __DIR__ . '/../whmcs/modules/servers/cometbackup/lib/autoload.php';

use WHMCS\Module\Server\CometBackup\Crypto;
use WHMCS\Module\Server\CometBackup\JobPublisher;
use WHMCS\Module\Server\CometBackup\Settings;

[$self, $url, $keyFile, $kid, $server, $n, $out] = $argv + array_fill(0, 7, null);
if ($out === null) {
    fwrite(STDERR, "usage: php php-handoff.php AMQP_URL KEY_FILE KID SERVER_URL N OUT.json\n");
    exit(2);
}
Settings::override(['broker_url' => $url, 'key_id' => $kid, 'key_file' => $keyFile] + Settings::DEFAULTS);
$settings = Settings::get();
$master = $settings->masterKey();
$publisher = new JobPublisher($settings);
$times = [];
$failed = 0;
for ($i = 0; $i < (int)$n; $i++) {
    $t0 = hrtime(true);
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
    $err = $publisher->publish('create', $jobId, $body, $kid, $sig);
    $times[] = (hrtime(true) - $t0) / 1e6;
    if ($err !== null) {
        $failed++;
        fwrite(STDERR, "php-handoff: $err\n");
    }
}
sort($times);
$pct = function (float $p) use ($times) {
    return $times[max(0, (int)ceil($p * count($times)) - 1)];
};
file_put_contents($out, json_encode([
    'n' => count($times), 'failed' => $failed,
    'p50_ms' => $pct(0.5), 'p95_ms' => $pct(0.95), 'p99_ms' => $pct(0.99), 'max_ms' => end($times),
], JSON_PRETTY_PRINT) . "\n");
