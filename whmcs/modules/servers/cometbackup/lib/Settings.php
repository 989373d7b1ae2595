<?php
/* Module settings: read once from a PHP file outside the web root. */

namespace WHMCS\Module\Server\CometBackup;

/**
 * The settings file returns an array (see whmcs/README.md). Its path is
 * /etc/cometbackup/whmcs.php unless the environment variable
 * COMETBACKUP_SETTINGS names another. Secrets (the job key, the callback
 * secret) live in their own files, mode 0600 or stricter, so the settings
 * file itself holds no secret except possibly the broker password.
 */
final class Settings
{
    const DEFAULT_PATH = '/etc/cometbackup/whmcs.php';

    /** Defaults for every key; a file overrides what it names. */
    const DEFAULTS = [
        'broker_url' => 'amqp://guest:guest@127.0.0.1:5672/',
        'exchange' => 'comet.jobs',
        'key_id' => '',
        'key_file' => '',
        'callback_secret_file' => '',
        // Seconds to wait for the broker's confirm: a WHMCS request must not hang.
        'publish_timeout' => 5.0,
        'connect_timeout' => 3.0,
        // TLS (amqps://): verify the broker certificate unless told otherwise.
        'ssl_verify' => true,
        'ssl_cafile' => null,
        // A create that failed for good puts the service back to Pending so
        // the order can be accepted again once the cause is fixed.
        'pending_on_failed_create' => true,
        // How an admin hears of a terminal failure: ticket | email | none.
        'notify' => 'email',
        'notify_department_id' => 1,
        'notify_admin_user' => '',
        // Callbacks older (or newer) than this many seconds are refused.
        'callback_max_age' => 300,
        // Timeouts for the few synchronous Comet calls (admin screens).
        'comet_connect_timeout' => 10,
        'comet_timeout' => 30,
    ];

    /** @var Settings|null */
    private static $instance = null;

    /** @var array */
    private $values;
    /** @var string|null raw master key, read lazily */
    private $master = null;
    /** @var string|null */
    private $callbackSecret = null;

    private function __construct(array $values)
    {
        $this->values = $values + self::DEFAULTS;
    }

    public static function path(): string
    {
        $env = getenv('COMETBACKUP_SETTINGS');
        return ($env !== false && $env !== '') ? $env : self::DEFAULT_PATH;
    }

    /** Loads (once) and returns the settings; throws \RuntimeException. */
    public static function get(): Settings
    {
        if (self::$instance === null) {
            $path = self::path();
            if (!is_readable($path)) {
                throw new \RuntimeException("settings file $path is missing or unreadable");
            }
            $values = include $path;
            if (!is_array($values)) {
                throw new \RuntimeException("settings file $path does not return an array");
            }
            self::$instance = new Settings($values);
        }
        return self::$instance;
    }

    /** Tests: replace the settings (null forgets them, the file is read again). */
    public static function override(?array $values): void
    {
        self::$instance = $values === null ? null : new Settings($values);
    }

    /** @return mixed */
    public function value(string $key)
    {
        return array_key_exists($key, $this->values) ? $this->values[$key] : null;
    }

    /** The 32-byte master key of key_id (raw bytes). Throws \RuntimeException. */
    public function masterKey(): string
    {
        if ($this->master === null) {
            if ((string)$this->value('key_id') === '') {
                throw new \RuntimeException('settings: key_id is not set');
            }
            $b64 = trim(self::readSecretFile((string)$this->value('key_file'), 'key_file'));
            $raw = base64_decode($b64, true);
            if ($raw === false || strlen($raw) !== Crypto::KEY_BYTES) {
                throw new \RuntimeException('settings: key_file must hold the base64 of 32 bytes');
            }
            $this->master = $raw;
        }
        return $this->master;
    }

    /** The callback HMAC key: the file's bytes, trimmed (as the dispatcher reads it). */
    public function callbackSecret(): string
    {
        if ($this->callbackSecret === null) {
            $s = trim(self::readSecretFile((string)$this->value('callback_secret_file'), 'callback_secret_file'));
            if ($s === '') {
                throw new \RuntimeException('settings: callback secret is empty');
            }
            $this->callbackSecret = $s;
        }
        return $this->callbackSecret;
    }

    /** Reads a secret file, refusing one that group or others may read. */
    private static function readSecretFile(string $path, string $what): string
    {
        if ($path === '') {
            throw new \RuntimeException("settings: $what is not set");
        }
        $st = @stat($path);
        if ($st === false) {
            throw new \RuntimeException("settings: $what $path cannot be read");
        }
        if (($st['mode'] & 0077) !== 0) {
            throw new \RuntimeException("settings: $what $path must be mode 0600 or stricter");
        }
        $data = @file_get_contents($path);
        if ($data === false) {
            throw new \RuntimeException("settings: $what $path cannot be read");
        }
        return $data;
    }
}
