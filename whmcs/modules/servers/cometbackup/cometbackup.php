<?php
/* WHMCS provisioning module for Comet Backup: every account action becomes a
 * signed job on RabbitMQ and returns at once; workers do the Comet calls and
 * report back through callback.php. */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

require_once __DIR__ . '/lib/autoload.php';

use WHMCS\Database\Capsule;
use WHMCS\Module\Server\CometBackup\CometApi;
use WHMCS\Module\Server\CometBackup\Jobs;
use WHMCS\Module\Server\CometBackup\JobStore;
use WHMCS\Module\Server\CometBackup\Views;

function cometbackup_MetaData()
{
    return [
        'DisplayName' => 'Comet Backup',
        'APIVersion' => '1.1',
        'RequiresServer' => true,
        'DefaultNonSSLPort' => '8060',
        'DefaultSSLPort' => '443',
    ];
}

/**
 * Server credentials for the product settings page: the params WHMCS gave,
 * else the first enabled Comet Backup server.
 */
function cometbackup_ServerParams(array $params)
{
    if (!empty($params['serverhostname']) || !empty($params['serverip'])) {
        return $params;
    }
    $server = Capsule::table('tblservers')->where('type', 'cometbackup')->where('disabled', 0)
        ->orderBy('id')->first();
    if ($server === null) {
        return null;
    }
    $password = '';
    if (function_exists('localAPI')) {
        $res = localAPI('DecryptPassword', ['password2' => $server->password]);
        $password = is_array($res) && isset($res['password']) ? (string)$res['password'] : '';
    }
    return [
        'serverhostname' => $server->hostname,
        'serverip' => $server->ipaddress,
        'serverport' => $server->port ?? '',
        'serversecure' => !empty($server->secure),
        'serverusername' => $server->username,
        'serverpassword' => $password,
    ];
}

function cometbackup_ConfigOptions($params = [])
{
    $policies = [];
    $vaults = ['None' => 'None'];
    $note = '';
    try {
        $sp = cometbackup_ServerParams(is_array($params) ? $params : []);
        if ($sp === null) {
            $note = ' (add a Comet Backup server to load the list)';
        } else {
            $api = CometApi::fromParams($sp);
            $p = $api->map('policies/list');
            if (is_array($p)) {
                foreach ($p as $id => $desc) {
                    $policies[$id] = $desc . ' (' . $id . ')';
                }
            } else {
                $note = ' (could not load policies: ' . $p . ')';
            }
            $v = $api->map('request-storage-vault-providers');
            if (is_array($v)) {
                foreach ($v as $id => $desc) {
                    $vaults[$id] = $desc;
                }
            }
        }
    } catch (\Throwable $e) {
        $note = ' (could not load: ' . $e->getMessage() . ')';
    }
    $new = Jobs::NEW_POLICY_PREFIX . uniqid('WHMCS_', true) . ')';
    $policies = [$new => $new] + $policies;

    return [
        'Policy Group' => [
            'Type' => 'dropdown',
            'Options' => $policies,
            'Description' => 'Policy applied to new accounts' . $note,
        ],
        'Storage Vault' => [
            'Type' => 'dropdown',
            'Options' => $vaults,
            'Description' => 'Storage template requested for new accounts',
        ],
        'Require password change' => [
            'Type' => 'dropdown',
            'Options' => ['no' => 'no', 'yes' => 'yes'],
            'Default' => 'no',
            'Description' => 'Ask the customer to change the password at first login',
        ],
    ];
}

function cometbackup_TestConnection(array $params)
{
    try {
        $err = CometApi::fromParams($params)->testConnection();
    } catch (\Throwable $e) {
        $err = $e->getMessage();
    }
    return $err === null ? ['success' => true, 'error' => ''] : ['success' => false, 'error' => $err];
}

function cometbackup_CreateAccount(array $params)
{
    return Jobs::submit('create', $params);
}

function cometbackup_SuspendAccount(array $params)
{
    return Jobs::submit('suspend', $params);
}

function cometbackup_UnsuspendAccount(array $params)
{
    return Jobs::submit('unsuspend', $params);
}

function cometbackup_TerminateAccount(array $params)
{
    return Jobs::submit('terminate', $params);
}

function cometbackup_ChangePackage(array $params)
{
    return Jobs::submit('change_package', $params);
}

function cometbackup_ChangePassword(array $params)
{
    // With a custom "Password" field, the new service password replaces it
    // (as the original module did), so the job carries the new password.
    if (Jobs::customField($params, 'Password') !== '') {
        $params['customfields']['Password'] = (string)($params['password'] ?? '');
        cometbackup_SetCustomField($params, 'Password', (string)($params['password'] ?? ''));
    }
    return Jobs::submit('change_password', $params);
}

/** Stores a custom field value of the service (product field by name). */
function cometbackup_SetCustomField(array $params, string $name, string $value)
{
    try {
        $fieldId = Capsule::table('tblcustomfields')->where('type', 'product')
            ->where('relid', (int)($params['pid'] ?? 0))->where('fieldname', $name)->value('id');
        if ($fieldId === null || strlen($value) < Jobs::MIN_PASSWORD) {
            return;
        }
        Capsule::table('tblcustomfieldsvalues')->updateOrInsert(
            ['fieldid' => $fieldId, 'relid' => (int)$params['serviceid']],
            ['value' => $value]
        );
    } catch (\Throwable $e) {
        // The job still carries the password; only the stored copy is stale.
    }
}

function cometbackup_AdminServicesTabFields(array $params)
{
    try {
        return Views::adminTab((int)$params['serviceid']);
    } catch (\Throwable $e) {
        return ['Comet provisioning' => htmlspecialchars('Job table unavailable: ' . $e->getMessage())];
    }
}

function cometbackup_AdminCustomButtonArray()
{
    return [
        'Retry last failed job' => 'RetryFailed',
        'Resync account' => 'Resync',
    ];
}

/** Publishes a fresh job for the action of the newest failed job. */
function cometbackup_RetryFailed(array $params)
{
    try {
        $failed = JobStore::latestFailed((int)$params['serviceid']);
    } catch (\Throwable $e) {
        return 'Job table unavailable: ' . $e->getMessage();
    }
    if ($failed === null) {
        return 'This service has no failed job to retry.';
    }
    $latest = JobStore::latest((int)$params['serviceid']);
    if ($latest !== null && $latest->job_id !== $failed->job_id && $latest->state !== JobStore::FAILED) {
        // A newer job exists; retrying the old one could undo it.
        return 'A newer job (' . $latest->action . ', ' . $latest->state . ') exists; retry is not needed.';
    }
    return Jobs::submit($failed->action, $params);
}

/** Re-applies the product's settings and quotas to the account. */
function cometbackup_Resync(array $params)
{
    return Jobs::submit('change_package', $params);
}

function cometbackup_ClientArea(array $params)
{
    try {
        $vars = Views::clientArea($params);
    } catch (\Throwable $e) {
        $vars = ['comet_username' => Jobs::username($params)[0], 'comet_server_url' => Jobs::serverUrl($params)];
    }
    return [
        'templatefile' => 'templates/clientarea',
        'vars' => $vars,
    ];
}
