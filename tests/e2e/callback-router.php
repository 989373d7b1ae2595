<?php
/* `php -S` router for the end-to-end test (tests/php/E2ETest.php): serves
 * the module's callback handler over HTTP on the test WHMCS database, as
 * callback.php does inside WHMCS. The database, logModuleCall and localAPI
 * are set up as tests/php/bootstrap.php does (without touching the schema).
 * Environment: MYSQL_*, COMETBACKUP_SETTINGS, and E2E_CALLBACK_LOG (a file
 * that gets one JSON line per request: job id, status, answer, time). */

define('WHMCS', 1);

require_once '/usr/share/php/Illuminate/Database/autoload.php';

use Illuminate\Database\Capsule\Manager;

class_alias(Manager::class, 'WHMCS\Database\Capsule');

if ($_SERVER['REQUEST_METHOD'] === 'GET' && $_SERVER['REQUEST_URI'] === '/health') {
    header('Content-Type: application/json');
    echo '{"status":"ok"}';
    return true;
}

require_once __DIR__ . '/../php/whmcs-functions.php';
whmcs_test_capsule();


require_once __DIR__ . '/../../whmcs/modules/servers/cometbackup/callback.php';

if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    http_response_code(405);
    return true;
}
$body = (string)file_get_contents('php://input');
list($status, $answer) = cometbackup_callback_handle(getallheaders(), $body);
http_response_code($status);
header('Content-Type: application/json');
echo json_encode($answer);

$log = getenv('E2E_CALLBACK_LOG');
if ($log !== false && $log !== '') {
    $ev = json_decode($body, true);
    file_put_contents($log, json_encode([
        'job_id' => is_array($ev) ? ($ev['job_id'] ?? '') : '',
        'status' => is_array($ev) ? ($ev['status'] ?? '') : '',
        'http' => $status,
        'outcome' => $answer['outcome'] ?? ($answer['error'] ?? ''),
        't' => microtime(true),
    ]) . "\n", FILE_APPEND | LOCK_EX);
}
return true;
