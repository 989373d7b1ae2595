<?php
/* Records result events the dispatcher POSTs: verify, then apply once. */

namespace WHMCS\Module\Server\CometBackup;

use WHMCS\Database\Capsule;

final class CallbackHandler
{
    const STATUSES = ['succeeded', 'failed', 'retrying', 'skipped'];
    /** The dispatcher's bodies are small; refuse anything absurd before parsing. */
    const MAX_BODY = 65536;

    /**
     * Handles one request. $headers: name => value (any case). Returns
     * [http status, array answer]. Nothing changes unless the signature
     * and timestamp are good; 2xx only after the transaction committed.
     */
    public static function handle(array $headers, string $body, ?int $now = null): array
    {
        $now = $now ?? time();
        $h = array_change_key_case($headers, CASE_LOWER);
        try {
            $settings = Settings::get();
            $secret = $settings->callbackSecret();
        } catch (\Throwable $e) {
            return [500, ['error' => 'callback not configured']];
        }

        $ts = trim((string)($h['x-comet-timestamp'] ?? ''));
        $sigHeader = trim((string)($h['x-comet-signature'] ?? ''));
        if (!preg_match('/^\d{1,12}$/', $ts)) {
            return [401, ['error' => 'missing or bad timestamp']];
        }
        $maxAge = (int)$settings->value('callback_max_age');
        if (abs($now - (int)$ts) > $maxAge) {
            return [401, ['error' => 'stale timestamp']];
        }
        $expected = 'v1=' . Crypto::callbackSignature($secret, $ts, $body);
        $ok = false;
        // Several signatures may be sent (key rotation): any valid one will do.
        foreach (explode(',', $sigHeader) as $candidate) {
            if (hash_equals($expected, strtolower(trim($candidate)))) {
                $ok = true;
            }
        }
        if (!$ok) {
            return [401, ['error' => 'bad signature']];
        }

        if (strlen($body) > self::MAX_BODY) {
            return [400, ['error' => 'body too large']];
        }
        $ev = json_decode($body, true);
        $why = self::invalid($ev);
        if ($why !== null) {
            return [400, ['error' => $why]];
        }

        try {
            JobStore::ensureSchema();
            $outcome = Capsule::connection()->transaction(function () use ($ev, $settings) {
                return self::record($ev, $settings);
            });
        } catch (\Throwable $e) {
            return [503, ['error' => 'could not record the result']];
        }
        return [200, ['ok' => true, 'outcome' => $outcome]];
    }

    /** Why the event is malformed, or null. */
    private static function invalid($ev): ?string
    {
        if (!is_array($ev)) {
            return 'body is not a JSON object';
        }
        if (($ev['v'] ?? null) !== 1) {
            return 'unsupported version';
        }
        if (!is_string($ev['job_id'] ?? null)
            || !preg_match('/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i', $ev['job_id'])) {
            return 'job_id missing or not a UUID';
        }
        if (!is_int($ev['service_id'] ?? null) || $ev['service_id'] < 0) {
            return 'service_id missing';
        }
        if (!is_string($ev['action'] ?? null) || !in_array($ev['action'], Jobs::ACTIONS, true)) {
            return 'unknown action';
        }
        if (!is_string($ev['status'] ?? null) || !in_array($ev['status'], self::STATUSES, true)) {
            return 'unknown status';
        }
        if (isset($ev['attempt']) && !is_int($ev['attempt'])) {
            return 'attempt is not an integer';
        }
        if (isset($ev['error']) && !is_array($ev['error'])) {
            return 'error is not an object';
        }
        if (isset($ev['account']) && !is_array($ev['account'])) {
            return 'account is not an object';
        }
        return null;
    }

    /** Inside the transaction: apply the event once. Returns what happened. */
    private static function record(array $ev, Settings $settings): string
    {
        $t = JobStore::TABLE;
        $row = Capsule::table($t)->where('job_id', $ev['job_id'])->lockForUpdate()->first();
        $status = $ev['status'];
        if ($row === null) {
            // A job published by a tool (comet-enqueue, a DLQ replay) or whose
            // confirm was lost: record it so it is visible and idempotent.
            Capsule::table($t)->insert([
                'job_id' => $ev['job_id'],
                'service_id' => $ev['service_id'],
                'seq' => self::freeSeq((int)$ev['service_id'], (int)($ev['seq'] ?? 0)),
                'after_job_id' => null,
                'action' => $ev['action'],
                'state' => JobStore::QUEUED,
                'attempts' => 0,
                'created_at' => JobStore::now(),
                'updated_at' => JobStore::now(),
            ]);
            $row = Capsule::table($t)->where('job_id', $ev['job_id'])->lockForUpdate()->first();
        }
        // An operator replayed a dead-lettered job (comet-dlq replay) and it
        // succeeded this time: that outcome supersedes the failure.
        $replayed = $row->state === 'failed' && in_array($status, ['succeeded', 'skipped'], true);
        if (!$replayed && in_array($row->state, JobStore::TERMINAL, true)
            && $row->error_code !== JobStore::PUBLISH_FAILED) {
            // Terminal already: a repeat (or a late retrying event) changes nothing.
            return $row->state === $status ? 'duplicate' : 'ignored';
        }

        $err = isset($ev['error']) && is_array($ev['error']) ? $ev['error'] : [];
        $attempt = isset($ev['attempt']) ? (int)$ev['attempt'] : 0;
        Capsule::table($t)->where('job_id', $ev['job_id'])->update([
            'state' => $status,
            'attempts' => max((int)$row->attempts, $attempt),
            'error_class' => isset($err['class']) ? mb_substr((string)$err['class'], 0, 16) : null,
            'error_code' => isset($err['code']) ? mb_substr((string)$err['code'], 0, 64) : null,
            'error_message' => isset($err['message']) ? mb_substr((string)$err['message'], 0, 2000) : null,
            'result' => json_encode(self::summary($ev), JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE),
            'updated_at' => JobStore::now(),
        ]);

        $serviceId = (int)$ev['service_id'];
        $action = $ev['action'];
        if ($status === 'succeeded') {
            if ($action === 'create' && isset($ev['account']['username']) && is_string($ev['account']['username'])
                && $ev['account']['username'] !== '') {
                Capsule::table('tblhosting')->where('id', $serviceId)
                    ->update(['username' => $ev['account']['username']]);
            }
            if ($replayed && $action === 'create' && $settings->value('pending_on_failed_create')) {
                // The failure had set the service back to Pending: the account exists now.
                Capsule::table('tblhosting')->where('id', $serviceId)->where('domainstatus', 'Pending')
                    ->update(['domainstatus' => 'Active']);
            }
            self::log($action, $ev, 'succeeded');
        } elseif ($status === 'failed') {
            self::log($action, $ev, 'failed: ' . ($err['code'] ?? '') . ' ' . ($err['message'] ?? ''));
            if ($action === 'create' && $settings->value('pending_on_failed_create')) {
                Capsule::table('tblhosting')->where('id', $serviceId)->update(['domainstatus' => 'Pending']);
            }
            self::notify($ev, $settings);
        } elseif ($status === 'skipped') {
            self::log($action, $ev, 'skipped: ' . ($ev['reason'] ?? ''));
        }
        return 'recorded';
    }

    /** What the job table keeps of an event (the event holds no secret). */
    private static function summary(array $ev): array
    {
        $keep = ['status', 'attempt', 'error', 'account', 'next_attempt_at', 'reason',
            'started_at', 'finished_at', 'duration_ms', 'worker'];
        return array_intersect_key($ev, array_flip($keep));
    }

    /** An unused seq for a job the module did not publish itself. */
    private static function freeSeq(int $serviceId, int $wanted): int
    {
        $taken = Capsule::table(JobStore::TABLE)->where('service_id', $serviceId)->where('seq', $wanted)->exists();
        if (!$taken && $wanted > 0) {
            return $wanted;
        }
        return (int)Capsule::table(JobStore::TABLE)->where('service_id', $serviceId)->max('seq') + 1;
    }

    private static function log(string $action, array $ev, string $what): void
    {
        if (function_exists('logModuleCall')) {
            logModuleCall('cometbackup', 'result:' . $action, $ev, $what, $what, []);
        }
    }

    /** One admin notification per failed job: reached once, on the transition. */
    private static function notify(array $ev, Settings $settings): void
    {
        $mode = (string)$settings->value('notify');
        if ($mode === 'none' || !function_exists('localAPI')) {
            return;
        }
        $err = $ev['error'] ?? [];
        $subject = sprintf('Comet Backup: %s failed for service #%d', $ev['action'], $ev['service_id']);
        $text = sprintf(
            "The %s job %s for service #%d failed after %d attempt(s).\n\nError: %s (%s)\n%s\n\n"
            . "Open the service in the admin area: the Comet Backup tab lists its jobs and offers \"Retry last failed job\".",
            $ev['action'], $ev['job_id'], $ev['service_id'], (int)($ev['attempt'] ?? 0),
            (string)($err['code'] ?? 'unknown'), (string)($err['class'] ?? ''), (string)($err['message'] ?? '')
        );
        $admin = (string)$settings->value('notify_admin_user');
        if ($mode === 'ticket') {
            $clientId = Capsule::table('tblhosting')->where('id', $ev['service_id'])->value('userid');
            $res = localAPI('OpenTicket', [
                'deptid' => (int)$settings->value('notify_department_id'),
                'subject' => $subject,
                'message' => $text,
                'clientid' => (int)$clientId,
                'priority' => 'High',
                'admin' => true,
            ], $admin);
        } else {
            $res = localAPI('SendAdminEmail', [
                'customsubject' => $subject,
                'custommessage' => nl2br(htmlspecialchars($text)),
                'type' => 'system',
            ], $admin);
        }
        if (!is_array($res) || ($res['result'] ?? '') !== 'success') {
            self::log($ev['action'], $ev, 'admin notification failed: ' . json_encode($res));
        }
    }
}
