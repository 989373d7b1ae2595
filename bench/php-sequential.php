<?php
/* The sequential baseline in PHP: replays a bench batch one job at a time
 * against a Comet server with the original WHMCS module's call sequence
 * (comet-api.md §4), each call on a new curl handle (curl_init, curl_exec,
 * curl_close: a new TCP connection per call, as the module does in a WHMCS
 * request). Same calls, order, parameters, profile edits, ignored replies
 * and failure counting as `comet-bench sequential` (tools/comet-bench.c,
 * seq_call / seq_profile_edit / seq_job), same JSON keys, plus
 * "implementation": "php" and "new_connections" (CURLINFO_NUM_CONNECTS
 * summed over all calls: equal to comet_calls when no connection was
 * reused).
 *
 *   php bench/php-sequential.php --batch FILE --server URL --username U
 *       --password-file F [--out FILE] [--connect-timeout-ms N] [--timeout-ms N]
 *
 * The batch is bench.py's JSON lines (action, account.username, password,
 * product.policy_group, product.storage_provider, quotas.*). Without --out
 * the JSON goes to stdout. Exit 0 when the result was written (failed jobs
 * included, as comet-bench), 1 when it could not be, 2 on bad arguments or
 * an unreadable batch or password file. Never prints the password. */

declare(strict_types=1);

const USAGE = "usage: php bench/php-sequential.php --batch FILE --server URL --username U\n"
    . "           --password-file F [--out FILE] [--connect-timeout-ms N] [--timeout-ms N]\n";

/* The policy the original module writes for a new policy group (comet-api.md §4),
 * byte for byte the MODULE_POLICY of comet-bench.c. */
const MODULE_POLICY = '{"PreventChangeAccountPassword":true,"ModeAdminResetPassword":3,'
    . '"PreventDeleteStorageVault":true,"PreventAddCustomStorageVault":true,'
    . '"PreventRequestStorageVault":true,'
    . '"StorageVaultProviders":{"AllowedProvidersWhenRestricted":[1003],'
    . '"ShouldRestrictProviderList":true},'
    . '"ProtectedItemEngineTypes":{"AllowedEngineTypeWhenRestricted":[],'
    . '"ShouldRestrictEngineTypeList":false}}';

/* What each endpoint answers on success, checked after the error forms, as
 * comet.c's endpoint_table: ['status'] = {Status 200..299}; ['object', f...] =
 * a non-empty object holding the fields f. */
const SHAPES = [
    'get-user-profile' => ['object', 'Username'],
    'policies/get' => ['object'],
    'policies/set' => ['status'],
    'add-user' => ['status'],
    'request-storage-vault' => ['status'],
    'get-user-profile-and-hash' => ['object', 'Profile', 'ProfileHash'],
    'set-user-profile-hash' => ['status'],
    'reset-user-password' => ['status'],
    'delete-user' => ['status'],
];

function fail_usage(string $msg): void
{
    fwrite(STDERR, "php-sequential: $msg\n" . USAGE);
    exit(2);
}

/** --name value / --name=value; every option known, the required ones present. */
function parse_args(array $argv): array
{
    $known = ['batch', 'out', 'server', 'username', 'password-file', 'connect-timeout-ms', 'timeout-ms'];
    $o = ['connect-timeout-ms' => '10000', 'timeout-ms' => '60000'];
    for ($i = 1; $i < count($argv); $i++) {
        $a = $argv[$i];
        if ($a === '-h' || $a === '--help') {
            fwrite(STDOUT, USAGE);
            exit(0);
        }
        if (strncmp($a, '--', 2) !== 0) {
            fail_usage("unexpected argument '$a'");
        }
        $eq = strpos($a, '=');
        $name = substr($a, 2, $eq === false ? null : $eq - 2);
        if (!in_array($name, $known, true)) {
            fail_usage("unknown option --$name");
        }
        if ($eq !== false) {
            $o[$name] = substr($a, $eq + 1);
        } elseif ($i + 1 < count($argv)) {
            $o[$name] = $argv[++$i];
        } else {
            fail_usage("--$name needs a value");
        }
    }
    foreach (['batch', 'server', 'username', 'password-file'] as $req) {
        if (!isset($o[$req]) || $o[$req] === '') {
            fail_usage("--$req is required");
        }
    }
    $u = parse_url($o['server']);
    if ($u === false || !in_array(strtolower($u['scheme'] ?? ''), ['http', 'https'], true) || ($u['host'] ?? '') === '') {
        fail_usage('--server must be an http:// or https:// URL');
    }
    foreach (['connect-timeout-ms' => 600000, 'timeout-ms' => 3600000] as $k => $max) {
        $v = filter_var($o[$k], FILTER_VALIDATE_INT, ['options' => ['min_range' => 100, 'max_range' => $max]]);
        if ($v === false) {
            fail_usage("--$k must be an integer from 100 to $max");
        }
        $o[$k] = $v;
    }
    return $o;
}

/** The admin password: the file's content, trimmed (as the C config reads password_file). */
function read_password(string $path): string
{
    if (!is_file($path) || !is_readable($path)) {
        fwrite(STDERR, "php-sequential: password file $path: not a readable regular file\n");
        exit(2);
    }
    $pw = file_get_contents($path);
    if ($pw === false || trim($pw) === '') {
        fwrite(STDERR, "php-sequential: password file $path: unreadable or empty\n");
        exit(2);
    }
    return trim($pw);
}

final class Seq
{
    public $calls = 0;
    public $failedCalls = 0;
    public $newConnections = 0;
    private $base;
    private $user;
    private $password;
    private $connectMs;
    private $timeoutMs;

    public function __construct(string $base, string $user, string $password, int $connectMs, int $timeoutMs)
    {
        $this->base = rtrim($base, '/');
        $this->user = $user;
        $this->password = $password;
        $this->connectMs = $connectMs;
        $this->timeoutMs = $timeoutMs;
    }

    /**
     * One Comet call on a brand-new curl handle (a new TCP connection).
     * Returns the decoded answer (JSON objects as stdClass, so an empty map
     * stays {} when sent back) on success, null on failure: curl error,
     * HTTP not 2xx, not JSON, an error body (integer Status >= 400) or not
     * the endpoint's success shape, as comet_call() classifies.
     */
    public function call(string $endpoint, array $params)
    {
        $fields = ['Username' => $this->user, 'AuthType' => 'Password', 'Password' => $this->password] + $params;
        $pairs = [];
        foreach ($fields as $k => $v) {
            $pairs[] = rawurlencode($k) . '=' . rawurlencode((string)$v);
        }
        $this->calls++;
        $ch = curl_init($this->base . '/api/v1/admin/' . $endpoint);
        curl_setopt_array($ch, [
            CURLOPT_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_REDIR_PROTOCOLS => CURLPROTO_HTTP | CURLPROTO_HTTPS,
            CURLOPT_NOSIGNAL => true,
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => implode('&', $pairs),
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => true,
            CURLOPT_MAXREDIRS => 5,
            CURLOPT_CONNECTTIMEOUT_MS => $this->connectMs,
            CURLOPT_TIMEOUT_MS => $this->timeoutMs,
            CURLOPT_ENCODING => '',
            // "Expect:" off as in comet.c: no 100-continue wait on large profiles.
            CURLOPT_HTTPHEADER => ['Expect:', 'Accept: application/json'],
        ]);
        $raw = curl_exec($ch);
        $http = (int)curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        $this->newConnections += (int)curl_getinfo($ch, CURLINFO_NUM_CONNECTS);
        curl_close($ch);
        unset($ch); // PHP 8: the handle (and its connection) goes with the last reference
        $json = null;
        $ok = is_string($raw) && $raw !== '' && $http >= 200 && $http <= 299;
        if ($ok) {
            $json = json_decode($raw, false, 64);
            $ok = json_last_error() === JSON_ERROR_NONE;
        }
        if ($ok && $json instanceof stdClass && isset($json->Status) && is_int($json->Status) && $json->Status >= 400) {
            $ok = false; // Comet's application errors: HTTP 200 with an error body
        }
        if ($ok) {
            $shape = SHAPES[$endpoint];
            if ($shape[0] === 'status') {
                $ok = $json instanceof stdClass && isset($json->Status) && is_int($json->Status)
                    && $json->Status >= 200 && $json->Status <= 299;
            } else {
                $ok = $json instanceof stdClass && count(get_object_vars($json)) > 0;
                for ($i = 1; $ok && $i < count($shape); $i++) {
                    $ok = property_exists($json, $shape[$i]);
                }
            }
        }
        if (!$ok) {
            $this->failedCalls++;
            return null;
        }
        return $json;
    }

    /* The module's applyRestrictions or suspend edit: read profile and hash,
     * edit, write back whole with RequireHash; no retry on conflict. */
    private function profileEdit(string $user, array $spec, bool $suspend): bool
    {
        $reply = $this->call('get-user-profile-and-hash', ['TargetUser' => $user]);
        if ($reply === null) {
            return false;
        }
        $profile = $reply->Profile;
        $hash = $reply->ProfileHash;
        if ($profile instanceof stdClass) {
            if ($suspend) {
                $profile->IsSuspended = true;
            } else {
                $gb = jint($spec, 'quotas', 'storage_vault_quota_gb');
                if ($gb > 0 && isset($profile->Destinations) && $profile->Destinations instanceof stdClass) {
                    foreach (get_object_vars($profile->Destinations) as $d) {
                        if ($d instanceof stdClass) {
                            $d->StorageLimitEnabled = true;
                            $d->StorageLimitBytes = $gb << 30;
                        }
                    }
                }
                $pgb = jint($spec, 'quotas', 'protected_item_quota_gb');
                $profile->AllProtectedItemsQuotaEnabled = $pgb > 0;
                $profile->AllProtectedItemsQuotaBytes = $pgb << 30;
                $profile->MaximumDevices = jint($spec, 'quotas', 'number_of_devices');
                $profile->PolicyID = jstr($spec, 'product', 'policy_group');
            }
        }
        $data = json_encode($profile, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
        if ($data === false) {
            return false;
        }
        return $this->call('set-user-profile-hash', [
            'TargetUser' => $user,
            'ProfileData' => $data,
            'RequireHash' => is_string($hash) ? $hash : json_encode($hash),
        ]) !== null;
    }

    /* One job with the original module's call sequence (comet-api.md §4). */
    public function job($spec): bool
    {
        $spec = is_array($spec) ? $spec : [];
        $action = jstr($spec, 'action');
        $user = jstr($spec, 'account', 'username');
        $pw = jstr($spec, 'password');
        switch ($action) {
            case 'create':
                // A reply with a Username means taken; the bench's names are unique.
                if ($this->call('get-user-profile', ['TargetUser' => $user]) !== null) {
                    return false;
                }
                $policy = jstr($spec, 'product', 'policy_group');
                if ($policy !== '') {
                    $pol = $this->call('policies/get', ['PolicyID' => $policy]);
                    $has = $pol !== null && isset($pol->PolicyHash) && is_string($pol->PolicyHash) && $pol->PolicyHash !== '';
                    if (!$has) {
                        $body = '{"Description":' . json_encode($policy, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE)
                            . ',"Policy":' . MODULE_POLICY . '}';
                        $this->call('policies/set', ['PolicyID' => $policy, 'Policy' => $body]); // reply ignored, as the module does
                    }
                }
                if ($this->call('add-user', ['TargetUser' => $user, 'TargetPassword' => $pw, 'StoreRecoveryCode' => '1']) === null) {
                    return false;
                }
                $provider = jstr($spec, 'product', 'storage_provider');
                if ($provider !== '') {
                    $this->call('request-storage-vault', ['TargetUser' => $user, 'StorageProvider' => $provider]); // reply ignored
                }
                return $this->profileEdit($user, $spec, false);
            case 'suspend':
                return $this->profileEdit($user, $spec, true);
            case 'change_package':
                return $this->profileEdit($user, $spec, false);
            case 'change_password':
                return strlen($pw) >= 8 && $this->call('reset-user-password', ['TargetUser' => $user, 'NewPassword' => $pw]) !== null;
            case 'terminate':
                return $this->call('delete-user', ['TargetUser' => $user]) !== null;
        }
        return false;
    }
}

/** A string member ($k1 or $k1.$k2) of the job, or "" (comet-bench.c jstr). */
function jstr(array $o, string $k1, ?string $k2 = null): string
{
    $v = $o[$k1] ?? null;
    if ($k2 !== null) {
        $v = is_array($v) ? ($v[$k2] ?? null) : null;
    }
    return is_string($v) ? $v : '';
}

/** An integer member $k1.$k2 of the job, or 0 (comet-bench.c jint). */
function jint(array $o, string $k1, string $k2): int
{
    $v = is_array($o[$k1] ?? null) ? ($o[$k1][$k2] ?? null) : null;
    return is_int($v) ? $v : 0;
}

/** Nearest-rank percentile of a sorted list (comet-bench.c pct). */
function pct(array $v, float $p): float
{
    $n = count($v);
    if ($n === 0) {
        return 0.0;
    }
    $i = (int)ceil($p * $n);
    return $v[$i > 0 ? ($i <= $n ? $i - 1 : $n - 1) : 0];
}

if (!extension_loaded('curl')) {
    fwrite(STDERR, "php-sequential: the PHP curl extension is not loaded\n");
    exit(2);
}
$o = parse_args($argv);
$in = is_dir($o['batch']) ? false : @fopen($o['batch'], 'r');
if ($in === false) {
    fwrite(STDERR, "php-sequential: cannot open batch {$o['batch']}\n");
    exit(2);
}
$seq = new Seq($o['server'], $o['username'], read_password($o['password-file']),
    $o['connect-timeout-ms'], $o['timeout-ms']);

$lat = [];
$ok = 0;
$start = hrtime(true);
while (($line = fgets($in)) !== false) {
    $spec = json_decode($line, true);
    if (json_last_error() !== JSON_ERROR_NONE) {
        continue; // as comet-bench: a line that is not JSON is skipped
    }
    $t0 = hrtime(true);
    if ($seq->job($spec)) {
        $ok++;
    }
    $lat[] = (hrtime(true) - $t0) / 1e9;
}
$secs = (hrtime(true) - $start) / 1e9;
$readError = !feof($in);
fclose($in);
if ($readError) {
    fwrite(STDERR, "php-sequential: error reading batch {$o['batch']}\n");
    exit(2);
}

sort($lat, SORT_NUMERIC);
$n = count($lat);
$res = [
    'implementation' => 'php',
    'jobs' => $n,
    'succeeded' => $ok,
    'seconds' => $secs,
    'jobs_per_second' => $secs > 0 ? $n / $secs : 0,
    'comet_calls' => $seq->calls,
    'failed_calls' => $seq->failedCalls,
    'new_connections' => $seq->newConnections,
    'samples' => $n,
    'p50_ms' => pct($lat, 0.50) * 1e3,
    'p95_ms' => pct($lat, 0.95) * 1e3,
    'p99_ms' => pct($lat, 0.99) * 1e3,
    'max_ms' => $n ? $lat[$n - 1] * 1e3 : 0,
    'mean_ms' => $n ? array_sum($lat) / $n * 1e3 : 0,
];
$text = json_encode($res, JSON_PRETTY_PRINT | JSON_PRESERVE_ZERO_FRACTION) . "\n";
if (isset($o['out'])) {
    if (@file_put_contents($o['out'], $text) !== strlen($text)) {
        fwrite(STDERR, "php-sequential: cannot write {$o['out']}\n");
        exit(1);
    }
} else {
    fwrite(STDOUT, $text);
}
exit(0);
