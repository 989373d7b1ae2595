<?php
/* What the admin and the customer see: the services tab, client area data. */

namespace WHMCS\Module\Server\CometBackup;

final class Views
{
    const STATE_LABELS = [
        JobStore::QUEUED => 'queued',
        JobStore::RETRYING => 'retrying',
        JobStore::SUCCEEDED => 'succeeded',
        JobStore::FAILED => 'failed',
        JobStore::SKIPPED => 'skipped',
    ];

    private static function e($s): string
    {
        return htmlspecialchars((string)$s, ENT_QUOTES, 'UTF-8');
    }

    /** One line on where the account stands, from the newest create job. */
    public static function provisioningState(int $serviceId): string
    {
        $create = JobStore::latest($serviceId, 'create');
        if ($create === null) {
            return 'No Comet account has been requested by this module yet.';
        }
        $s = $create->state;
        switch ($s) {
            case JobStore::QUEUED:
                return 'Create queued at ' . $create->created_at . ' UTC; waiting for a worker.';
            case JobStore::RETRYING:
                $r = json_decode((string)$create->result, true) ?: [];
                $next = isset($r['next_attempt_at']) ? ', next attempt at ' . $r['next_attempt_at'] : '';
                return 'Create retrying (attempt ' . (int)$create->attempts . $next . '): '
                    . ($create->error_message ?? $create->error_code ?? '');
            case JobStore::SUCCEEDED:
                return 'Account created (' . $create->updated_at . ' UTC).';
            case JobStore::FAILED:
                return 'Create FAILED: ' . ($create->error_code ?? '') . ' ' . ($create->error_message ?? '')
                    . '. Fix the cause, then use "Retry last failed job".';
            default:
                return 'Create ' . $s . '.';
        }
    }

    public static function adminTab(int $serviceId): array
    {
        $rows = JobStore::recent($serviceId, 10);
        $html = '<table class="datatable" width="100%"><tr><th>Seq</th><th>Action</th><th>State</th>'
            . '<th>Attempts</th><th>Error</th><th>Updated (UTC)</th><th>Job ID</th></tr>';
        foreach ($rows as $r) {
            $html .= '<tr><td>' . (int)$r->seq . '</td><td>' . self::e($r->action) . '</td><td>'
                . self::e(self::STATE_LABELS[$r->state] ?? $r->state) . '</td><td>' . (int)$r->attempts
                . '</td><td>' . self::e(trim(($r->error_code ?? '') . ' ' . ($r->error_message ?? '')))
                . '</td><td>' . self::e($r->updated_at) . '</td><td><code>' . self::e($r->job_id)
                . '</code></td></tr>';
        }
        if (!$rows) {
            $html .= '<tr><td colspan="7">No jobs yet.</td></tr>';
        }
        $html .= '</table>';
        return [
            'Comet provisioning' => self::e(self::provisioningState($serviceId)),
            'Comet jobs' => $html,
        ];
    }

    /** Template variables for the client area. */
    public static function clientArea(array $params): array
    {
        $serviceId = (int)$params['serviceid'];
        $create = JobStore::latest($serviceId, 'create');
        $state = $create === null ? 'unknown' : $create->state;
        $settingUp = $create !== null && in_array($state, [JobStore::QUEUED, JobStore::RETRYING], true);
        list($username) = Jobs::username($params);
        $vars = [
            'comet_username' => $username,
            'comet_server_url' => Jobs::serverUrl($params),
            'comet_setting_up' => $settingUp,
            'comet_setup_failed' => $state === JobStore::FAILED,
            'comet_devices_max' => Jobs::quotas($params)['number_of_devices'],
            'comet_quotas' => Jobs::quotas($params),
            'comet_profile' => null,
        ];
        // Live details only once the account exists; a slow server must not
        // break the page, so failures just leave them out.
        if (!$settingUp && $state === JobStore::SUCCEEDED && $username !== '') {
            $profile = CometApi::fromParams($params)->userProfile($username);
            if ($profile !== null) {
                $vars['comet_profile'] = [
                    'devices' => isset($profile['Devices']) && is_array($profile['Devices']) ? count($profile['Devices']) : 0,
                    'vaults' => isset($profile['Destinations']) && is_array($profile['Destinations']) ? count($profile['Destinations']) : 0,
                    'suspended' => !empty($profile['IsSuspended']),
                ];
            }
        }
        return $vars;
    }
}
