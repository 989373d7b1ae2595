<?php
// Comet Backup module settings. Install as /etc/cometbackup/whmcs.php (or
// point COMETBACKUP_SETTINGS at it), readable by the web server user and
// outside the web root. Secrets live in their own files, mode 0600.
return [
    // RabbitMQ: amqp://user:password@host:port/vhost, or amqps:// for TLS.
    'broker_url' => 'amqp://whmcs:CHANGE-ME@rabbitmq.internal:5672/',
    // 'ssl_verify' => true, 'ssl_cafile' => '/etc/cometbackup/rabbitmq-ca.pem',

    // Job signing/sealing key: the same id and 32-byte key (base64 in the
    // file) as in the workers' `keys` list.
    'key_id' => 'k2026',
    'key_file' => '/etc/cometbackup/keys/k2026.key',

    // The dispatcher's callback HMAC secret (dispatcher.secret_file).
    'callback_secret_file' => '/etc/cometbackup/callback-secret',

    // Seconds a module action waits for the broker's publish confirm.
    'publish_timeout' => 5,

    // After a create failed for good, put the service back to Pending.
    'pending_on_failed_create' => true,

    // Admin notification of a terminal failure: 'ticket', 'email' or 'none'.
    'notify' => 'email',
    'notify_department_id' => 1,       // support department for 'ticket'
    'notify_admin_user' => '',         // admin username localAPI acts as (blank = default)

    // Callback timestamps further than this from now are refused (seconds).
    'callback_max_age' => 300,
];
