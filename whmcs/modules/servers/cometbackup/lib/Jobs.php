<?php
/* Builds v1 jobs from WHMCS module parameters and submits them: the one
 * path every module action takes (build, seal, sign, record, publish). */

namespace WHMCS\Module\Server\CometBackup;

final class Jobs
{
    const VERSION = 1;

    const ACTIONS = ['create', 'suspend', 'unsuspend', 'terminate', 'change_package', 'change_password'];
    /** Only these carry the sealed password. */
    const SECRET_ACTIONS = ['create', 'change_password'];

    const NEW_POLICY_PREFIX = '[Create New Policy Group] (';

    const QUOTA_OPTIONS = [
        'number_of_devices',
        'protected_item_quota_gb',
        'protected_item_quota_tb',
        'storage_vault_quota_gb',
        'storage_vault_quota_tb',
    ];

    /** Module rule (as the original module): Comet passwords have 8+ characters. */
    const MIN_PASSWORD = 8;

    /** A custom field's value by name, "" when absent. */
    public static function customField(array $params, string $name): string
    {
        $fields = isset($params['customfields']) && is_array($params['customfields']) ? $params['customfields'] : [];
        return isset($fields[$name]) ? trim((string)$fields[$name]) : '';
    }

    /** [username, custom]: the custom field "Username" wins when non-empty. */
    public static function username(array $params): array
    {
        $custom = self::customField($params, 'Username');
        if ($custom !== '') {
            return [$custom, true];
        }
        return [trim((string)($params['username'] ?? '')), false];
    }

    /** The custom field "Password" when non-empty, else the service password. */
    public static function password(array $params): string
    {
        $custom = self::customField($params, 'Password');
        return $custom !== '' ? $custom : (string)($params['password'] ?? '');
    }

    /**
     * scheme://host:port of the service's server. The hostname field may
     * also hold "host:port" or a full URL (older server set-ups did).
     */
    public static function serverUrl(array $params): string
    {
        $secure = !empty($params['serversecure']) && $params['serversecure'] !== 'off';
        $host = trim((string)($params['serverhostname'] ?? ''));
        if ($host === '') {
            $host = trim((string)($params['serverip'] ?? ''));
        }
        $port = (int)($params['serverport'] ?? 0);
        if (preg_match('#^(https?)://#i', $host, $m)) {
            $secure = strtolower($m[1]) === 'https';
            $host = substr($host, strlen($m[0]));
        }
        $host = rtrim($host, '/');
        if (preg_match('#^(.*):(\d+)$#', $host, $m) && strpos($m[1], ':') === false) {
            $host = $m[1];
            if ($port <= 0) {
                $port = (int)$m[2];
            }
        }
        if ($port <= 0) {
            $port = $secure ? 443 : 8060;
        }
        return ($secure ? 'https' : 'http') . '://' . $host . ':' . $port;
    }

    /** configoption1 without the "[Create New Policy Group] (...)" display. */
    public static function policyGroup(array $params): string
    {
        $v = trim((string)($params['configoption1'] ?? ''));
        if (strpos($v, self::NEW_POLICY_PREFIX) === 0 && substr($v, -1) === ')') {
            $v = substr($v, strlen(self::NEW_POLICY_PREFIX), -1);
        }
        return trim($v);
    }

    public static function storageProvider(array $params): string
    {
        $v = trim((string)($params['configoption2'] ?? ''));
        return strcasecmp($v, 'None') === 0 ? '' : $v;
    }

    public static function quotas(array $params): array
    {
        $opts = isset($params['configoptions']) && is_array($params['configoptions']) ? $params['configoptions'] : [];
        $q = [];
        foreach (self::QUOTA_OPTIONS as $name) {
            $q[$name] = empty($opts[$name]) ? null : intval($opts[$name]);
        }
        return $q;
    }

    /** The job as an ordered array, without its secret. */
    public static function build(string $action, array $params, string $jobId, int $seq, ?string $after): array
    {
        list($username, $custom) = self::username($params);
        $client = isset($params['clientsdetails']) && is_array($params['clientsdetails']) ? $params['clientsdetails'] : [];
        return [
            'v' => self::VERSION,
            'job_id' => $jobId,
            'action' => $action,
            'service_id' => (int)$params['serviceid'],
            'seq' => $seq,
            'after' => $after,
            'issued_at' => gmdate('Y-m-d\TH:i:s\Z'),
            'server' => ['url' => self::serverUrl($params)],
            'account' => ['username' => $username, 'custom_username' => $custom],
            'client' => [
                'email' => (string)($client['email'] ?? ''),
                'firstname' => (string)($client['firstname'] ?? ''),
            ],
            'product' => [
                'policy_group' => self::policyGroup($params),
                'storage_provider' => self::storageProvider($params),
                'require_password_change' => ($params['configoption3'] ?? '') === 'yes',
            ],
            'quotas' => self::quotas($params),
        ];
    }

    /**
     * Builds, seals, signs, records and publishes one job. Returns "success"
     * as soon as the broker confirmed it, else an error string for WHMCS
     * (which then keeps the action in its Module Queue).
     */
    public static function submit(string $action, array $params): string
    {
        if (!in_array($action, self::ACTIONS, true)) {
            return "unknown action '$action'";
        }
        $serviceId = (int)($params['serviceid'] ?? 0);
        if ($serviceId <= 0) {
            return 'missing service id';
        }
        $password = null;
        if (in_array($action, self::SECRET_ACTIONS, true)) {
            $password = self::password($params);
            if ($action === 'change_password' && strlen($password) < self::MIN_PASSWORD) {
                return 'The password must be at least ' . self::MIN_PASSWORD . ' characters long.';
            }
            if ($password === '') {
                return 'The service has no password to give the Comet account.';
            }
        }
        if ($action !== 'create' && self::username($params)[0] === '') {
            return 'The service has no username: was the account ever created?';
        }

        try {
            $settings = Settings::get();
            $master = $settings->masterKey();
            $kid = (string)$settings->value('key_id');
        } catch (\Throwable $e) {
            return 'Comet Backup module is not configured: ' . $e->getMessage();
        }

        $jobId = Crypto::uuid4();
        try {
            $order = JobStore::reserve($jobId, $serviceId, $action);
        } catch (\Throwable $e) {
            return 'could not record the job: ' . $e->getMessage();
        }

        $job = self::build($action, $params, $jobId, $order['seq'], $order['after']);
        if ($password !== null) {
            $sealed = Crypto::seal(Crypto::sealKey($master), $password);
            $job['secret'] = ['kid' => $kid, 'nonce' => $sealed['nonce'], 'box' => $sealed['box']];
        }
        $body = json_encode($job, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        if ($body === false) {
            JobStore::markPublishFailed($jobId, 'json_encode: ' . json_last_error_msg());
            return 'could not encode the job: ' . json_last_error_msg();
        }
        $sig = Crypto::signBody(Crypto::signKey($master), $body);

        $error = (new JobPublisher($settings))->publish($action, $jobId, $body, $kid, $sig);
        $logged = $job;
        unset($logged['secret']); // sealed, but nothing secret-shaped goes to the log
        if ($error !== null) {
            JobStore::markPublishFailed($jobId, $error);
            self::log($action, $logged, $error);
            return $error;
        }
        self::log($action, $logged, "queued job $jobId (seq {$order['seq']})");
        return 'success';
    }

    private static function log(string $action, array $job, string $outcome): void
    {
        if (function_exists('logModuleCall')) {
            logModuleCall('cometbackup', 'publish:' . $action, $job, $outcome, $outcome, []);
        }
    }
}
