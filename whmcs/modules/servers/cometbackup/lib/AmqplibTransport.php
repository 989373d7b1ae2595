<?php
/* The php-amqplib transport: a new connection for every publish, closed
 * before returning. Used when the php-amqp extension is not loaded. */

namespace WHMCS\Module\Server\CometBackup;

use PhpAmqpLib\Connection\AMQPConnectionConfig;
use PhpAmqpLib\Connection\AMQPConnectionFactory;
use PhpAmqpLib\Exception\AMQPTimeoutException;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPTable;

final class AmqplibTransport implements PublishTransport
{
    public function name(): string
    {
        return 'amqplib';
    }

    public function publish(BrokerConfig $broker, string $exchange, string $routingKey, string $body,
                            array $properties, array $headers): string
    {
        $conn = null;
        try {
            $conn = AMQPConnectionFactory::create(self::connectionConfig($broker));
            $ch = $conn->channel();
            // Same arguments as the worker's declaration, so this is a no-op
            // once it exists and publishing works before any worker ran.
            $ch->exchange_declare($exchange, 'direct', false, true, false);
            $ch->confirm_select();

            $seen = ['acked' => false, 'nacked' => false, 'returned' => false];
            $ch->set_ack_handler(function () use (&$seen) {
                $seen['acked'] = true;
            });
            $ch->set_nack_handler(function () use (&$seen) {
                $seen['nacked'] = true;
            });
            // An unroutable mandatory message comes back as basic.return
            // (then is acked): no queue holds it, so it failed.
            $ch->set_return_listener(function () use (&$seen) {
                $seen['returned'] = true;
            });

            $msg = new AMQPMessage($body, $properties + ['application_headers' => new AMQPTable($headers)]);
            $ch->basic_publish($msg, $exchange, $routingKey, true);
            try {
                $ch->wait_for_pending_acks_returns($broker->confirmTimeout);
            } catch (AMQPTimeoutException $e) {
                return self::TIMEOUT;
            }
            if ($seen['returned']) {
                return self::RETURNED;
            }
            if ($seen['nacked']) {
                return self::NACKED;
            }
            return $seen['acked'] ? self::ACKED : self::UNCONFIRMED;
        } finally {
            if ($conn !== null) {
                try {
                    $conn->close();
                } catch (\Throwable $e) {
                    // The connection is gone either way.
                }
            }
        }
    }

    private static function connectionConfig(BrokerConfig $b): AMQPConnectionConfig
    {
        $cfg = new AMQPConnectionConfig();
        $cfg->setHost($b->host);
        $cfg->setPort($b->port);
        $cfg->setUser($b->user);
        $cfg->setPassword($b->password);
        $cfg->setVhost($b->vhost);
        $cfg->setConnectionTimeout($b->connectTimeout);
        $cfg->setReadTimeout($b->ioTimeout);
        $cfg->setWriteTimeout($b->ioTimeout);
        $cfg->setConnectionName(BrokerConfig::CONNECTION_NAME);
        if ($b->secure) {
            $cfg->setIsSecure(true);
            // php-amqplib 3.5's factory hands the network protocol ("tcp" by
            // default) to its SSL connection as the stream scheme: without
            // this, amqps:// would connect without TLS.
            $cfg->setNetworkProtocol('ssl');
            $cfg->setSslVerify($b->sslVerify);
            $cfg->setSslVerifyName($b->sslVerify);
            if ($b->sslCafile !== null) {
                $cfg->setSslCaCert($b->sslCafile);
            }
        }
        return $cfg;
    }
}
