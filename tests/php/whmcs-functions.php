<?php
/* The two WHMCS functions the module calls, for the test bootstrap and the
 * e2e callback router: logModuleCall and localAPI record into tables of the
 * test database (Capsule must be set up as global first). */

use Illuminate\Database\Capsule\Manager;

/** WHMCS's logModuleCall: one row per call, replace vars masked. */
function logModuleCall($module, $action, $request, $response, $processed = '', $replace = [])
{
    $enc = function ($v) use ($replace) {
        $s = is_string($v) ? $v : json_encode($v, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        foreach ((array)$replace as $r) {
            if ($r !== '') {
                $s = str_replace((string)$r, '***', $s);
            }
        }
        return $s;
    };
    Manager::table('tblmodulelog')->insert([
        'date' => gmdate('Y-m-d H:i:s'),
        'module' => $module,
        'action' => $action,
        'request' => $enc($request),
        'response' => $enc($response),
        'arrdata' => $enc($processed),
    ]);
}

/** WHMCS's localAPI: recorded; DecryptPassword returns the stored value. */
function localAPI($command, $params = [], $adminUser = '')
{
    Manager::table('test_localapi')->insert([
        'command' => $command,
        'params' => json_encode($params),
        'adminuser' => (string)$adminUser,
    ]);
    if ($command === 'DecryptPassword') {
        return ['result' => 'success', 'password' => $params['password2'] ?? ''];
    }
    return ['result' => 'success'];
}
