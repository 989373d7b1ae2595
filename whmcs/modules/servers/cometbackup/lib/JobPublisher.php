<?php
/* Publishes one signed job to RabbitMQ and waits for the broker's confirm. */

namespace WHMCS\Module\Server\CometBackup;

// The transports live beside this file; lib/autoload.php loads only this one.
require_once __DIR__ . '/BrokerConfig.php';
require_once __DIR__ . '/PublishTransport.php';
require_once __DIR__ . '/ExtAmqpTransport.php';
require_once __DIR__ . '/AmqplibTransport.php';

/**
 * Two transports behind one publish():
 *  - "ext": the php-amqp extension with a persistent connection per PHP
 *    worker process (ExtAmqpTransport), about 1 ms a job;
 *  - "amqplib": php-amqplib with a new connection per publish
 *    (AmqplibTransport), several ms a job.
 * Setting amqp_transport: "auto" (default) takes ext when the extension is
 * loaded, else amqplib; "ext" or "amqplib" forces one.
 */
final class JobPublisher
{
    const TRANSPORT_SETTING = 'amqp_transport';

    /** @var Settings */
    private $settings;
    /** @var PublishTransport|null */
    private $transport;

    public function __construct(Settings $settings, ?PublishTransport $transport = null)
    {
        $this->settings = $settings;
        $this->transport = $transport;
    }

    /**
     * Publishes the body with mandatory=true and publisher confirms. Returns
     * null once the broker confirmed it, else a short error text (never a
     * secret: the broker password is masked out of any library message).
     */
    public function publish(string $action, string $jobId, string $body, string $kid, string $sig): ?string
    {
        $broker = null;
        try {
            $broker = BrokerConfig::fromSettings($this->settings);
            $outcome = $this->transport()->publish(
                $broker,
                (string)$this->settings->value('exchange'),
                $action,
                $body,
                [
                    'delivery_mode' => 2, // persistent
                    'content_type' => 'application/json',
                    'message_id' => $jobId,
                    'type' => $action,
                    'timestamp' => time(),
                ],
                ['x-comet-kid' => $kid, 'x-comet-sig' => $sig]
            );
        } catch (\Throwable $e) {
            $m = $broker !== null ? $broker->scrub($e->getMessage()) : $e->getMessage();
            return 'message broker unavailable: ' . self::cleanMessage($m);
        }
        switch ($outcome) {
            case PublishTransport::ACKED:
                return null;
            case PublishTransport::RETURNED:
                return "broker could not route the job (no queue bound for '$action': is the worker topology declared?)";
            case PublishTransport::NACKED:
                return 'broker refused the job (nack)';
            case PublishTransport::TIMEOUT:
                return 'broker did not confirm the job in time';
            default:
                return 'broker did not confirm the job';
        }
    }

    /** The transport publish() uses with these settings. Throws \RuntimeException on a bad setting. */
    public function transport(): PublishTransport
    {
        if ($this->transport === null) {
            $this->transport = self::transportFor($this->settings);
        }
        return $this->transport;
    }

    private static function transportFor(Settings $settings): PublishTransport
    {
        $want = $settings->value(self::TRANSPORT_SETTING);
        $want = ($want === null || $want === '') ? 'auto' : (string)$want;
        switch ($want) {
            case 'auto':
                return ExtAmqpTransport::available() ? new ExtAmqpTransport() : new AmqplibTransport();
            case 'ext':
                if (!ExtAmqpTransport::available()) {
                    throw new \RuntimeException('settings: amqp_transport is "ext" but the php-amqp extension '
                        . '(1.11 or later) is not loaded');
                }
                return new ExtAmqpTransport();
            case 'amqplib':
                return new AmqplibTransport();
            default:
                throw new \RuntimeException('settings: amqp_transport must be "auto", "ext" or "amqplib"');
        }
    }

    /**
     * For a long-lived process standing in for php-fpm (benchmark, tests):
     * does to the publisher what the end of a WHMCS request does. The
     * extension's persistent connection stays open for the next "request".
     */
    public static function endRequest(): void
    {
        ExtAmqpTransport::endRequest();
    }

    /** Library messages can embed the URL; keep only the first line, no credentials. */
    private static function cleanMessage(string $m): string
    {
        $m = strtok($m, "\n");
        $m = preg_replace('#(amqps?://)[^@/\s]*@#', '$1***@', (string)$m);
        return mb_substr((string)$m, 0, 300);
    }
}
