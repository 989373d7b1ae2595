<?php
/* The php-amqp extension transport (pecl amqp >= 1.11, Debian's php-amqp):
 * one persistent broker connection per PHP process, reused by every request
 * that process serves. */

namespace WHMCS\Module\Server\CometBackup;

/**
 * Why persistent: opening an AMQP connection (TCP, protocol handshake,
 * login, tuning) costs more than the publish itself, and a WHMCS request
 * cannot keep anything between requests. AMQPConnection::pconnect() keeps
 * the connection in the PHP process (a php-fpm or Apache worker) after the
 * request ends; the next request of the same worker with the same host,
 * port, vhost, user, password and TLS files gets it back without a
 * handshake. Each php-fpm worker that has published thus holds one idle
 * connection to RabbitMQ, opened on its first publish and closed when the
 * worker exits (pm.max_requests, a reload) or the broker drops it.
 *
 * What is per request: php-amqp 1.11 cannot carry a channel over to the next
 * request (it closes every channel when the request ends), so each publish
 * opens a channel, selects confirms, declares the exchange, publishes with
 * the mandatory flag, waits for the confirm and closes the channel: a few
 * round trips on an open connection, no handshake.
 *
 * A persistent connection can have died since the last request (broker
 * restart, an operator closing it, a network cut). php-amqp only notices on
 * the next read, which is the channel opening, before anything is
 * published: that failure is retried once on a new connection (see
 * publish()).
 */
final class ExtAmqpTransport implements PublishTransport
{
    /** @var \AMQPConnection|null this request's handle on the process's persistent connection */
    private static $conn = null;
    /** @var string BrokerConfig::identity() of self::$conn */
    private static $connId = '';
    /** @var bool a message was handed to the broker and its confirm not read yet */
    private static $inFlight = false;
    /** @var bool the request-shutdown guard is registered */
    private static $hooked = false;

    /** The extension is loaded and has the API this class uses (checked against 1.11.0). */
    public static function available(): bool
    {
        return extension_loaded('amqp') && class_exists('AMQPConnection', false)
            && version_compare((string)phpversion('amqp'), '1.11.0', '>=')
            && method_exists('AMQPChannel', 'waitForConfirm');
    }

    public function name(): string
    {
        return 'ext';
    }

    /**
     * Retry rule: a connection that turns out broken is replaced and the
     * publish tried once more only when the failure came before
     * basic.publish was written, i.e. when the broker certainly does not
     * have the message. That is how a reused connection that died since the
     * last request shows up (php-amqp 1.11 cannot tell whether pconnect()
     * reused a connection, so a new one breaking that early gets the same
     * single retry).
     *
     * Once the publish has been written, the outcome is unknown (the broker
     * may hold the job and its confirm was lost): that is reported as a
     * failure, not retried. WHMCS keeps the action in its Module Queue and
     * the job row says publish_failed. A retry would not hurt the account (a
     * second copy of the same job_id is answered from the worker's stored
     * result), but it would turn an unknown outcome into a reported success
     * during a broker fault; reporting keeps the fault visible.
     */
    public function publish(BrokerConfig $broker, string $exchange, string $routingKey, string $body,
                            array $properties, array $headers): string
    {
        $attributes = $properties + ['headers' => $headers];
        for ($attempt = 1; ; $attempt++) {
            // Throws when the broker cannot be reached at all: nothing to retry.
            $conn = self::connection($broker);
            $handedOver = false;
            try {
                return self::publishOnce($conn, $broker, $exchange, $routingKey, $body, $attributes, $handedOver);
            } catch (\AMQPException $e) {
                // php-amqp force-closes the connection itself on any
                // connection-level error; a channel-level error (say, an
                // exchange declared with other arguments) leaves it open.
                $broken = !$conn->isConnected();
                if ($handedOver) {
                    // A confirm may still come: do not let it meet a later request.
                    self::discardConnection();
                }
                if ($broken && !$handedOver && $attempt === 1) {
                    continue;
                }
                throw $e;
            }
        }
    }

    /**
     * One channel, one publish, one confirm. $handedOver is set just before
     * basic.publish is written: from then on a failure leaves the message's
     * fate unknown.
     */
    private static function publishOnce(\AMQPConnection $conn, BrokerConfig $broker, string $exchange,
                                        string $routingKey, string $body, array $attributes, bool &$handedOver): string
    {
        $ch = new \AMQPChannel($conn);
        $ch->confirmSelect();
        $seen = ['acked' => false, 'nacked' => false, 'returned' => false];
        // php-amqp keeps waiting in waitForConfirm() until a callback returns
        // false, so each returns false: we decide in the loop below.
        $ch->setConfirmCallback(
            function () use (&$seen) {
                $seen['acked'] = true;
                return false;
            },
            function () use (&$seen) {
                $seen['nacked'] = true;
                return false;
            }
        );
        // An unroutable mandatory message comes back as basic.return (then is
        // acked): no queue holds it, so it failed.
        $ch->setReturnCallback(function () use (&$seen) {
            $seen['returned'] = true;
            return false;
        });

        $ex = new \AMQPExchange($ch);
        $ex->setName($exchange);
        // Same arguments as the worker's declaration, so this is a no-op once
        // it exists and publishing works before any worker ran.
        $ex->setType(AMQP_EX_TYPE_DIRECT);
        $ex->setFlags(AMQP_DURABLE);
        $ex->declareExchange();

        $handedOver = true;
        self::$inFlight = true;
        $ex->publish($body, $routingKey, AMQP_MANDATORY, $attributes);

        // waitForConfirm's timeout applies to each wait for a frame, and a
        // return comes before its ack: wait against one deadline.
        $deadline = microtime(true) + $broker->confirmTimeout;
        while (!$seen['acked'] && !$seen['nacked']) {
            $left = $deadline - microtime(true);
            if ($left <= 0) {
                self::discardConnection();
                return self::TIMEOUT;
            }
            try {
                // 0 would mean "wait forever".
                $ch->waitForConfirm(max($left, 0.001));
            } catch (\AMQPQueueException $e) {
                // php-amqp 1.11 reports the timeout as this class with this text.
                if (stripos($e->getMessage(), 'timeout') === false) {
                    throw $e;
                }
                self::discardConnection();
                return self::TIMEOUT;
            }
        }
        self::$inFlight = false;
        try {
            $ch->close();
        } catch (\AMQPException $e) {
            // The outcome is known; a connection that broke just now is
            // already closed by php-amqp and reopened by the next request.
        }
        if ($seen['returned']) {
            return self::RETURNED;
        }
        return $seen['nacked'] ? self::NACKED : self::ACKED;
    }

    /** This request's connection object, connected (a reused or a new persistent connection). */
    private static function connection(BrokerConfig $broker): \AMQPConnection
    {
        if (!self::$hooked) {
            self::$hooked = true;
            register_shutdown_function([self::class, 'onShutdown']);
        }
        $id = $broker->identity();
        if (self::$conn === null || self::$connId !== $id) {
            // Dropping the old object leaves its persistent connection in the
            // process for a later request with those settings.
            self::$conn = null;
            self::$conn = new \AMQPConnection(self::credentials($broker));
            self::$connId = $id;
        }
        if (!self::$conn->isConnected()) {
            // Reattaches the process's connection for these credentials, or
            // opens one (connect_timeout bounds it).
            try {
                self::$conn->pconnect();
            } catch (\AMQPConnectionException $e) {
                // php-amqp says "could not connect to host" for a refused
                // connection and for a refused certificate alike.
                if ($broker->secure && stripos($e->getMessage(), 'could not connect') !== false) {
                    throw new \RuntimeException(rtrim($e->getMessage(), '.')
                        . " (or TLS failed: the broker's certificate must name {$broker->host} as a DNS name"
                        . ' and chain to ssl_cafile or the system CAs)', 0, $e);
                }
                throw $e;
            }
        }
        return self::$conn;
    }

    private static function credentials(BrokerConfig $b): array
    {
        $c = [
            'host' => $b->host,
            'port' => $b->port,
            'vhost' => $b->vhost,
            'login' => $b->user,
            'password' => $b->password,
            'connect_timeout' => $b->connectTimeout,
            'read_timeout' => $b->ioTimeout,
            'write_timeout' => $b->ioTimeout,
            'rpc_timeout' => $b->ioTimeout,
            // No heartbeats: an idle worker sends none anyway (php-amqp has no
            // background thread), and the broker would close its connection
            // after two missed intervals, costing a reconnect per idle spell.
            'heartbeat' => 0,
            // php-amqp finds a persistent connection by host, port, vhost,
            // login, password, TLS files and name, not by 'verify': the name
            // keeps a connection opened without verification from being
            // reused once verification is turned on.
            'connection_name' => BrokerConfig::CONNECTION_NAME
                . ($b->secure && !$b->sslVerify ? ' (TLS unverified)' : ''),
        ];
        // php-amqp speaks TLS exactly when it has a CA file ('cacert');
        // 'verify' checks the certificate chain and the host name.
        if ($b->secure) {
            $c['cacert'] = self::caFile($b);
            $c['verify'] = $b->sslVerify;
        } elseif ((string)ini_get('amqp.cacert') !== '') {
            throw new \RuntimeException('php.ini sets amqp.cacert, which makes php-amqp use TLS, '
                . 'but broker_url is amqp://: use amqps:// or clear amqp.cacert');
        }
        return $c;
    }

    /** ssl_cafile, else the CA bundle PHP's own TLS uses (as php-amqplib does). */
    private static function caFile(BrokerConfig $b): string
    {
        $candidates = [$b->sslCafile, (string)ini_get('openssl.cafile')];
        if (function_exists('openssl_get_cert_locations')) {
            $candidates[] = openssl_get_cert_locations()['default_cert_file'] ?? '';
        }
        $candidates[] = '/etc/ssl/certs/ca-certificates.crt';
        foreach ($candidates as $f) {
            if ($f !== null && $f !== '' && is_readable($f)) {
                return $f;
            }
        }
        throw new \RuntimeException($b->sslCafile !== null
            ? "settings: ssl_cafile {$b->sslCafile} cannot be read"
            : 'amqps:// needs a CA bundle: set ssl_cafile (no system bundle found)');
    }

    /**
     * Closes the persistent connection for good, so that the next publish
     * opens a new one. Used when a confirm is still owed on it: php-amqp
     * would queue that late frame in the connection, and a later request
     * could take it for its own confirm.
     */
    private static function discardConnection(): void
    {
        self::$inFlight = false;
        if (self::$conn !== null && self::$conn->isConnected()) {
            try {
                self::$conn->pdisconnect();
            } catch (\Throwable $e) {
                // Closing is best effort: the connection is unusable either way.
            }
        }
    }

    /**
     * Request shutdown (also after a fatal error such as max_execution_time
     * in the middle of a confirm wait): a connection owing a confirm is not
     * handed to the next request.
     */
    public static function onShutdown(): void
    {
        if (self::$inFlight) {
            self::discardConnection();
        }
    }

    /**
     * What the end of a request does to this class, for a long-lived process
     * that stands in for a php-fpm worker (the benchmark, the tests): the
     * request's objects go, the persistent connection stays.
     */
    public static function endRequest(): void
    {
        self::onShutdown();
        self::$conn = null;
        self::$connId = '';
    }
}
