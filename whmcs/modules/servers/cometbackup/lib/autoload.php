<?php
/* Loads the module's classes and php-amqplib (composer vendor dir first,
 * else Debian's php-amqplib package). */

$vendor = __DIR__ . '/../vendor/autoload.php';
if (is_readable($vendor)) {
    require_once $vendor;
} elseif (!class_exists('PhpAmqpLib\Connection\AMQPConnectionFactory')
    && is_readable('/usr/share/php/PhpAmqpLib/autoload.php')) {
    require_once '/usr/share/php/PhpAmqpLib/autoload.php';
}

foreach (['Settings', 'Crypto', 'JobStore', 'JobPublisher', 'Jobs', 'CometApi', 'CallbackHandler', 'Views'] as $cls) {
    require_once __DIR__ . '/' . $cls . '.php';
}
