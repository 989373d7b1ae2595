<?php
/* The minimal WHMCS the module runs in, shared by the test bootstrap and the
 * e2e callback router: the real Capsule (Laravel's database layer, as WHMCS
 * ships it) over the test MariaDB from MYSQL_*, and the two WHMCS functions
 * the module calls, logModuleCall and localAPI, recording into its tables. */

use Illuminate\Database\Capsule\Manager;

/** Connects Capsule (as global) to the test database named by MYSQL_*. */
function whmcs_test_capsule(): void
{
    $capsule = new Manager();
    $capsule->addConnection([
        'driver' => 'mysql',
        'host' => getenv('MYSQL_HOST'),
        'port' => getenv('MYSQL_PORT'),
        'database' => getenv('MYSQL_DATABASE'),
        'username' => getenv('MYSQL_USER'),
        'password' => getenv('MYSQL_PASSWORD'),
        'charset' => 'utf8mb4',
        'collation' => 'utf8mb4_unicode_ci',
    ]);
    $capsule->setAsGlobal();
}

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
