<?php
/* One way of getting a message to RabbitMQ with the mandatory flag and a
 * publisher confirm. JobPublisher builds the message and turns the outcome
 * into the module's error text; a transport only moves it. */

namespace WHMCS\Module\Server\CometBackup;

interface PublishTransport
{
    /** The broker confirmed the message and a queue holds it. */
    const ACKED = 'acked';
    /** The broker refused the message (basic.nack). */
    const NACKED = 'nacked';
    /** No queue is bound for the routing key: basic.return (then an ack). */
    const RETURNED = 'returned';
    /** No confirm arrived within the confirm timeout. */
    const TIMEOUT = 'timeout';
    /** The wait ended without an ack, a nack or a return. */
    const UNCONFIRMED = 'unconfirmed';

    /** Short name for logs, tests and the benchmark. */
    public function name(): string;

    /**
     * Declares the exchange (direct, durable: the workers' own arguments),
     * publishes the body with the mandatory flag and waits for the confirm.
     *
     * @param array $properties delivery_mode, content_type, message_id, type, timestamp
     *                          (the names are the same in both libraries)
     * @param array $headers    string => string application headers
     * @return string one of the constants above
     * @throws \Throwable when the broker cannot be reached or closes the connection or channel
     */
    public function publish(BrokerConfig $broker, string $exchange, string $routingKey, string $body,
                            array $properties, array $headers): string;
}
