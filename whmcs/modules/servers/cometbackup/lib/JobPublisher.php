<?php
/* Publishes one signed job to RabbitMQ and waits for the broker's confirm. */

namespace WHMCS\Module\Server\CometBackup;

use PhpAmqpLib\Connection\AMQPConnectionConfig;
use PhpAmqpLib\Connection\AMQPConnectionFactory;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPTable;

final class JobPublisher
{
    /** @var Settings */
    private $settings;

    public function __construct(Settings $settings)
    {
        $this->settings = $settings;
    }

    /**
     * Publishes the body with mandatory=true and publisher confirms. Returns
     * null once the broker confirmed it, else a short error text (never a
     * secret: the broker password is not part of any message).
     */
    public function publish(string $action, string $jobId, string $body, string $kid, string $sig): ?string
    {
        $conn = null;
        try {
            $conn = AMQPConnectionFactory::create($this->connectionConfig());
            $ch = $conn->channel();
            $exchange = (string)$this->settings->value('exchange');
            // Same arguments as the worker's declaration, so this is a no-op
            // once it exists and publishing works before any worker ran.
            $ch->exchange_declare($exchange, 'direct', false, true, false);
            $ch->confirm_select();

            $outcome = ['acked' => false, 'nacked' => false, 'returned' => null];
            $ch->set_ack_handler(function () use (&$outcome) {
                $outcome['acked'] = true;
            });
            $ch->set_nack_handler(function () use (&$outcome) {
                $outcome['nacked'] = true;
            });
            // An unroutable mandatory message comes back as basic.return
            // (then is acked): no queue holds it, so it failed.
            $ch->set_return_listener(function ($code, $text) use (&$outcome) {
                $outcome['returned'] = "$code $text";
            });

            $msg = new AMQPMessage($body, [
                'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
                'content_type' => 'application/json',
                'message_id' => $jobId,
                'type' => $action,
                'timestamp' => time(),
                'application_headers' => new AMQPTable([
                    'x-comet-kid' => $kid,
                    'x-comet-sig' => $sig,
                ]),
            ]);
            $ch->basic_publish($msg, $exchange, $action, true);
            $ch->wait_for_pending_acks_returns((float)$this->settings->value('publish_timeout'));

            if ($outcome['returned'] !== null) {
                return "broker could not route the job (no queue bound for '$action': is the worker topology declared?)";
            }
            if ($outcome['nacked']) {
                return 'broker refused the job (nack)';
            }
            if (!$outcome['acked']) {
                return 'broker did not confirm the job';
            }
            return null;
        } catch (\PhpAmqpLib\Exception\AMQPTimeoutException $e) {
            return 'broker did not confirm the job in time';
        } catch (\Throwable $e) {
            return 'message broker unavailable: ' . self::cleanMessage($e->getMessage());
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

    private function connectionConfig(): AMQPConnectionConfig
    {
        $url = (string)$this->settings->value('broker_url');
        $u = parse_url($url);
        if ($u === false || !isset($u['scheme'], $u['host']) || !in_array($u['scheme'], ['amqp', 'amqps'], true)) {
            throw new \RuntimeException('settings: broker_url must be amqp://user:pass@host:port/vhost or amqps://');
        }
        $secure = $u['scheme'] === 'amqps';
        $cfg = new AMQPConnectionConfig();
        $cfg->setHost($u['host']);
        $cfg->setPort(isset($u['port']) ? (int)$u['port'] : ($secure ? 5671 : 5672));
        $cfg->setUser(isset($u['user']) ? rawurldecode($u['user']) : 'guest');
        $cfg->setPassword(isset($u['pass']) ? rawurldecode($u['pass']) : 'guest');
        // "/" and "" both mean the default vhost; "/%2f" too.
        $path = isset($u['path']) ? substr($u['path'], 1) : '';
        $cfg->setVhost($path === '' ? '/' : rawurldecode($path));
        $timeout = (float)$this->settings->value('connect_timeout');
        $cfg->setConnectionTimeout($timeout);
        $rw = max($timeout, (float)$this->settings->value('publish_timeout'));
        $cfg->setReadTimeout($rw);
        $cfg->setWriteTimeout($rw);
        $cfg->setConnectionName('whmcs-cometbackup');
        if ($secure) {
            $cfg->setIsSecure(true);
            $cfg->setSslVerify((bool)$this->settings->value('ssl_verify'));
            $cfg->setSslVerifyName((bool)$this->settings->value('ssl_verify'));
            if ($this->settings->value('ssl_cafile')) {
                $cfg->setSslCaCert((string)$this->settings->value('ssl_cafile'));
            }
        }
        return $cfg;
    }

    /** Library messages can embed the URL; keep only the first line, no credentials. */
    private static function cleanMessage(string $m): string
    {
        $m = strtok($m, "\n");
        $m = preg_replace('#(amqps?://)[^@/\s]*@#', '$1***@', (string)$m);
        return mb_substr((string)$m, 0, 300);
    }
}
