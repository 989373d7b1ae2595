<?php
/* Where and how to reach RabbitMQ: broker_url and the timeout/TLS settings,
 * parsed once and shared by both publish transports. */

namespace WHMCS\Module\Server\CometBackup;

final class BrokerConfig
{
    /** Shown by RabbitMQ (management UI, rabbitmqctl list_connections) for our connections. */
    const CONNECTION_NAME = 'whmcs-cometbackup';

    /** @var string */
    public $host;
    /** @var int */
    public $port;
    /** @var string */
    public $user;
    /** @var string the broker password: never put it in an error or a log line */
    public $password;
    /** @var string */
    public $vhost;
    /** @var bool amqps:// */
    public $secure;
    /** @var bool verify the broker certificate and host name (amqps://) */
    public $sslVerify;
    /** @var string|null CA bundle for amqps:// (null: the system's) */
    public $sslCafile;
    /** @var float seconds to open the TCP (and TLS) connection */
    public $connectTimeout;
    /** @var float seconds any one socket read, write or RPC may take */
    public $ioTimeout;
    /** @var float seconds to wait for the broker's confirm of a publish */
    public $confirmTimeout;

    /** Throws \RuntimeException on a broker_url that is not amqp:// or amqps://. */
    public static function fromSettings(Settings $s): BrokerConfig
    {
        $url = (string)$s->value('broker_url');
        $u = parse_url($url);
        if ($u === false || !isset($u['scheme'], $u['host']) || !in_array($u['scheme'], ['amqp', 'amqps'], true)) {
            throw new \RuntimeException('settings: broker_url must be amqp://user:pass@host:port/vhost or amqps://');
        }
        $c = new BrokerConfig();
        $c->secure = $u['scheme'] === 'amqps';
        $c->host = $u['host'];
        $c->port = isset($u['port']) ? (int)$u['port'] : ($c->secure ? 5671 : 5672);
        $c->user = isset($u['user']) ? rawurldecode($u['user']) : 'guest';
        $c->password = isset($u['pass']) ? rawurldecode($u['pass']) : 'guest';
        // "/" and "" both mean the default vhost; "/%2f" too.
        $path = isset($u['path']) ? substr($u['path'], 1) : '';
        $c->vhost = $path === '' ? '/' : rawurldecode($path);
        $c->connectTimeout = (float)$s->value('connect_timeout');
        $c->confirmTimeout = (float)$s->value('publish_timeout');
        // A read may legitimately wait as long as the confirm does.
        $c->ioTimeout = max($c->connectTimeout, $c->confirmTimeout);
        $c->sslVerify = (bool)$s->value('ssl_verify');
        $cafile = $s->value('ssl_cafile');
        $c->sslCafile = ($cafile === null || $cafile === '') ? null : (string)$cafile;
        return $c;
    }

    /** Everything that makes two connections interchangeable (password included: it stays in memory). */
    public function identity(): string
    {
        return hash('sha256', serialize([$this->host, $this->port, $this->user, $this->password, $this->vhost,
            $this->secure, $this->sslVerify, $this->sslCafile]));
    }

    /** An error text with the password masked, whatever a library put in it. */
    public function scrub(string $message): string
    {
        return $this->password === '' ? $message : str_replace($this->password, '***', $message);
    }
}
