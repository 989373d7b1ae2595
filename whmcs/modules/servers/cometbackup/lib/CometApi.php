<?php
/* The few synchronous Comet admin API calls the admin screens need
 * (TestConnection, product settings, client area). Jobs never use it. */

namespace WHMCS\Module\Server\CometBackup;

final class CometApi
{
    /** @var string */
    private $base;
    /** @var string */
    private $user;
    /** @var string */
    private $password;
    /** @var int */
    private $connectTimeout;
    /** @var int */
    private $timeout;

    public function __construct(string $baseUrl, string $user, string $password, int $connectTimeout = 10, int $timeout = 30)
    {
        $this->base = rtrim($baseUrl, '/');
        $this->user = $user;
        $this->password = $password;
        $this->connectTimeout = $connectTimeout;
        $this->timeout = $timeout;
    }

    public static function fromParams(array $params): CometApi
    {
        $ct = 10;
        $t = 30;
        try {
            $s = Settings::get();
            $ct = (int)$s->value('comet_connect_timeout');
            $t = (int)$s->value('comet_timeout');
        } catch (\Throwable $e) {
            // Admin screens still work before the settings file exists.
        }
        return new CometApi(Jobs::serverUrl($params), (string)($params['serverusername'] ?? ''),
            (string)($params['serverpassword'] ?? ''), $ct, $t);
    }

    /**
     * POSTs to /api/v1/admin/<endpoint>. Returns ['curl_error' => ?string,
     * 'http' => int, 'raw' => string, 'json' => mixed|null (null = not JSON)].
     */
    public function call(string $endpoint, array $fields = []): array
    {
        $fields += ['Username' => $this->user, 'AuthType' => 'Password', 'Password' => $this->password];
        $ch = curl_init($this->base . '/api/v1/admin/' . $endpoint);
        curl_setopt_array($ch, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => http_build_query($fields),
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_FOLLOWLOCATION => true,
            CURLOPT_MAXREDIRS => 5,
            CURLOPT_CONNECTTIMEOUT => $this->connectTimeout,
            CURLOPT_TIMEOUT => $this->timeout,
            CURLOPT_ENCODING => '',
            CURLOPT_HTTPHEADER => ['Accept: application/json'],
        ]);
        $raw = curl_exec($ch);
        $err = $raw === false ? curl_error($ch) : null;
        $http = (int)curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
        curl_close($ch);
        $json = null;
        if ($raw !== false) {
            $json = json_decode($raw, true);
            if (json_last_error() !== JSON_ERROR_NONE) {
                $json = null;
            }
        }
        return ['curl_error' => $err, 'http' => $http, 'raw' => $raw === false ? '' : $raw, 'json' => $json];
    }

    /** An error body: object with integer Status >= 400. */
    public static function isErrorBody($json): bool
    {
        return is_array($json) && isset($json['Status']) && is_int($json['Status']) && $json['Status'] >= 400;
    }

    /**
     * meta/version with the original module's reading of the answer.
     * Returns null on success, else the message for the admin.
     */
    public function testConnection(): ?string
    {
        $r = $this->call('meta/version');
        if ($r['curl_error'] !== null) {
            return 'Connection failure: ' . $r['curl_error'];
        }
        $j = $r['json'];
        if ($j === null && trim($r['raw']) !== 'null') {
            return 'Invalid response';
        }
        if (is_array($j) && isset($j['Version'])) {
            return null;
        }
        if (is_array($j) && isset($j['Status']) && (int)$j['Status'] === 403 && isset($j['Message'])) {
            return 'Authentication failure: ' . $j['Message'];
        }
        if ($j === [] || $j === null) {
            return 'Empty response from the server (nothing listening?)';
        }
        if (is_array($j) && count($j) === 1) {
            $v = reset($j);
            return is_scalar($v) ? (string)$v : json_encode($v);
        }
        return 'Unexpected response: ' . json_encode($j);
    }

    /** {id: description} from a map endpoint, or an error string. */
    public function map(string $endpoint)
    {
        $r = $this->call($endpoint);
        if ($r['curl_error'] !== null) {
            return 'Connection failure: ' . $r['curl_error'];
        }
        if ($r['http'] < 200 || $r['http'] > 299) {
            return 'HTTP ' . $r['http'];
        }
        if (!is_array($r['json'])) {
            return 'Invalid response';
        }
        if (self::isErrorBody($r['json'])) {
            return 'Error ' . $r['json']['Status'] . ': ' . ($r['json']['Message'] ?? '');
        }
        $out = [];
        foreach ($r['json'] as $k => $v) {
            $out[(string)$k] = is_array($v) ? (string)($v['Description'] ?? $k) : (string)$v;
        }
        return $out;
    }

    /** The user's profile, or null when it cannot be read. */
    public function userProfile(string $username): ?array
    {
        $r = $this->call('get-user-profile', ['TargetUser' => $username]);
        if ($r['curl_error'] !== null || !is_array($r['json']) || self::isErrorBody($r['json'])
            || !isset($r['json']['Username'])) {
            return null;
        }
        return $r['json'];
    }
}
