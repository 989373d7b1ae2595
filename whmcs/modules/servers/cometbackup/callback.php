<?php
/* Callback endpoint: the result dispatcher POSTs signed result events here.
 * URL: https://<whmcs>/modules/servers/cometbackup/callback.php */

use WHMCS\Module\Server\CometBackup\CallbackHandler;

if (!defined('WHMCS')) {
    // Production: boot WHMCS (database, logModuleCall, localAPI).
    require_once __DIR__ . '/../../../init.php';
}
require_once __DIR__ . '/lib/autoload.php';

/** Request handler, callable directly (tests): returns [status, answer]. */
function cometbackup_callback_handle(array $headers, string $body, ?int $now = null): array
{
    return CallbackHandler::handle($headers, $body, $now);
}

if (PHP_SAPI !== 'cli' && basename($_SERVER['SCRIPT_FILENAME'] ?? '') === 'callback.php') {
    if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
        http_response_code(405);
        header('Allow: POST');
        exit;
    }
    $headers = [];
    foreach ($_SERVER as $k => $v) {
        if (strpos($k, 'HTTP_') === 0) {
            $headers[str_replace('_', '-', substr($k, 5))] = $v;
        }
    }
    $body = (string)file_get_contents('php://input', false, null, 0, CallbackHandler::MAX_BODY + 1);
    list($status, $answer) = cometbackup_callback_handle($headers, $body);
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($answer);
}
