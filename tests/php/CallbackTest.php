<?php
/* callback.php: signature and age checks, idempotent recording, effects. */

namespace CometBackup\Tests;

use WHMCS\Database\Capsule;
use WHMCS\Module\Server\CometBackup\Crypto;
use WHMCS\Module\Server\CometBackup\JobStore;

final class CallbackTest extends TestCase
{
    /** @var array */
    private $p;
    /** @var string */
    private $jobId;

    protected function setUp(): void
    {
        parent::setUp();
        $this->p = $this->makeService();
        $this->jobId = Crypto::uuid4();
        JobStore::reserve($this->jobId, $this->p['serviceid'], 'create');
    }

    private function event(array $over = []): string
    {
        return json_encode($over + [
            'v' => 1, 'job_id' => $this->jobId, 'service_id' => $this->p['serviceid'], 'action' => 'create',
            'seq' => 1, 'status' => 'succeeded', 'attempt' => 1,
            'account' => ['username' => 'alice_4821', 'storage_vault_id' => 'vault-1', 'policy_id' => 'WHMCS_x'],
            'started_at' => '2026-12-04T10:00:00.000Z', 'finished_at' => '2026-12-04T10:00:00.840Z',
            'duration_ms' => 840, 'worker' => 'host/42',
        ]);
    }

    private function failedEvent(): string
    {
        $e = json_decode($this->event(['status' => 'failed', 'attempt' => 8,
            'error' => ['class' => 'permanent', 'code' => 'comet_rejected', 'message' => 'Error 400: policy refused']]), true);
        unset($e['account']);
        return json_encode($e);
    }

    private function post(string $body, ?int $ts = null, ?string $sig = null, ?int $now = null): array
    {
        $secret = self::vectors()['callback']['secret'];
        $ts = $ts ?? time();
        $sig = $sig ?? 'v1=' . hash_hmac('sha256', $ts . '.' . $body, $secret);
        return cometbackup_callback_handle(['X-Comet-Timestamp' => (string)$ts, 'X-Comet-Signature' => $sig], $body, $now);
    }

    private function row()
    {
        return Capsule::table(JobStore::TABLE)->where('job_id', $this->jobId)->first();
    }

    private function service()
    {
        return Capsule::table('tblhosting')->where('id', $this->p['serviceid'])->first();
    }

    private function notifications(): int
    {
        return Capsule::table('test_localapi')->where('command', 'OpenTicket')->count();
    }

    public function testVectorSignatureIsAccepted(): void
    {
        $c = self::vectors()['callback'];
        // The vector's event names job 0b0f...; record it as a foreign job.
        list($status) = cometbackup_callback_handle(
            ['x-comet-timestamp' => (string)$c['timestamp'], 'x-comet-signature' => 'v1=' . $c['sig_hex']],
            $c['body'], $c['timestamp'] + 10);
        $this->assertSame(200, $status);
        $this->assertSame('succeeded', JobStore::find('0b0f6c1e-3c1a-4b7e-9a51-2f1d7c9e8a42')->state);
    }

    public function testBadSignatureIs401AndChangesNothing(): void
    {
        $before = $this->row();
        list($status) = $this->post($this->event(), null, 'v1=' . str_repeat('0', 64));
        $this->assertSame(401, $status);
        list($status) = $this->post($this->event(), null, '');
        $this->assertSame(401, $status);
        // Signed for another body.
        $ts = time();
        $sig = 'v1=' . hash_hmac('sha256', $ts . '.' . $this->failedEvent(), self::vectors()['callback']['secret']);
        list($status) = $this->post($this->event(), $ts, $sig);
        $this->assertSame(401, $status);
        $this->assertEquals($before, $this->row());
        $this->assertSame('alice', $this->service()->username);
        $this->assertSame(0, Capsule::table('tblmodulelog')->count());
    }

    public function testStaleOrMissingTimestampIs401(): void
    {
        list($status) = $this->post($this->event(), time() - 301);
        $this->assertSame(401, $status);
        list($status) = $this->post($this->event(), time() + 3600);
        $this->assertSame(401, $status);
        list($status) = cometbackup_callback_handle(['X-Comet-Signature' => 'v1=00'], $this->event());
        $this->assertSame(401, $status);
        $this->assertSame('queued', $this->row()->state);
        list($status) = $this->post($this->event(), time() - 290);
        $this->assertSame(200, $status, 'within five minutes');
    }

    public function testMalformedJsonIs400(): void
    {
        list($status) = $this->post('{"v":1,');
        $this->assertSame(400, $status);
        list($status) = $this->post($this->event(['status' => 'exploded']));
        $this->assertSame(400, $status);
        list($status) = $this->post($this->event(['v' => 2]));
        $this->assertSame(400, $status);
        $this->assertSame('queued', $this->row()->state);
    }

    public function testSucceededCreateSetsUsername(): void
    {
        list($status, $answer) = $this->post($this->event());
        $this->assertSame(200, $status);
        $this->assertSame('recorded', $answer['outcome']);
        $row = $this->row();
        $this->assertSame('succeeded', $row->state);
        $this->assertSame(1, (int)$row->attempts);
        $this->assertSame('vault-1', json_decode($row->result, true)['account']['storage_vault_id']);
        $this->assertSame('alice_4821', $this->service()->username);
        $this->assertSame(1, Capsule::table('tblmodulelog')->where('action', 'result:create')->count());
    }

    public function testRepeatIs200AndRecordedOnce(): void
    {
        $body = $this->event();
        $this->assertSame(200, $this->post($body)[0]);
        $updated = $this->row()->updated_at;
        list($status, $answer) = $this->post($body);
        $this->assertSame(200, $status);
        $this->assertSame('duplicate', $answer['outcome']);
        $this->assertSame($updated, $this->row()->updated_at);
        $this->assertSame(1, Capsule::table('tblmodulelog')->where('action', 'result:create')->count());
        // A late retrying event after the terminal one changes nothing.
        list($status, $answer) = $this->post($this->event(['status' => 'retrying', 'attempt' => 1]));
        $this->assertSame(200, $status);
        $this->assertSame('ignored', $answer['outcome']);
        $this->assertSame('succeeded', $this->row()->state);
    }

    public function testFailedCreateSetsPendingAndNotifiesOnceWhenPostedTwice(): void
    {
        Capsule::table('tblhosting')->where('id', $this->p['serviceid'])->update(['domainstatus' => 'Active']);
        $body = $this->failedEvent();
        $this->assertSame(200, $this->post($body)[0]);
        $this->assertSame(200, $this->post($body)[0]);
        $this->assertSame('Pending', $this->service()->domainstatus);
        $this->assertSame(1, $this->notifications());
        $call = Capsule::table('test_localapi')->where('command', 'OpenTicket')->first();
        $params = json_decode($call->params, true);
        $this->assertSame('automation', $call->adminuser);
        $this->assertSame(2, $params['deptid']);
        $this->assertSame($this->p['userid'], $params['clientid']);
        $this->assertStringContainsString('comet_rejected', $params['message']);
        $this->assertStringContainsString($this->jobId, $params['message']);
        $row = $this->row();
        $this->assertSame('failed', $row->state);
        $this->assertSame(8, (int)$row->attempts);
        $this->assertSame('comet_rejected', $row->error_code);
        $this->assertSame('permanent', $row->error_class);
    }

    public function testReplayedCreateThatSucceedsSupersedesItsFailure(): void
    {
        Capsule::table('tblhosting')->where('id', $this->p['serviceid'])->update(['domainstatus' => 'Active']);
        $this->assertSame(200, $this->post($this->failedEvent())[0]);
        $this->assertSame('Pending', $this->service()->domainstatus);
        // comet-dlq replay, then the job succeeds.
        $this->assertSame(200, $this->post($this->event(['attempt' => 1]))[0]);
        $this->assertSame('succeeded', $this->row()->state);
        $this->assertSame('alice_4821', $this->service()->username);
        $this->assertSame('Active', $this->service()->domainstatus);
        // A late copy of the old failure changes nothing, and notifies no one again.
        $this->assertSame(200, $this->post($this->failedEvent())[0]);
        $this->assertSame('succeeded', $this->row()->state);
        $this->assertSame(1, $this->notifications());
    }

    public function testFailedCreateKeepsStatusWhenConfiguredAndEmailMode(): void
    {
        self::testSettings(['pending_on_failed_create' => false, 'notify' => 'email']);
        Capsule::table('tblhosting')->where('id', $this->p['serviceid'])->update(['domainstatus' => 'Active']);
        $this->assertSame(200, $this->post($this->failedEvent())[0]);
        $this->assertSame('Active', $this->service()->domainstatus);
        $this->assertSame(1, Capsule::table('test_localapi')->where('command', 'SendAdminEmail')->count());
        $this->assertSame(0, $this->notifications());
    }

    public function testRetryingThenSucceeded(): void
    {
        $this->assertSame(200, $this->post($this->event(['status' => 'retrying', 'attempt' => 2,
            'next_attempt_at' => '2026-12-04T10:00:30.000Z',
            'error' => ['class' => 'transient', 'code' => 'comet_unavailable', 'message' => 'connection refused']]))[0]);
        $row = $this->row();
        $this->assertSame('retrying', $row->state);
        $this->assertSame(2, (int)$row->attempts);
        $this->assertStringContainsString('retrying', cometbackup_AdminServicesTabFields($this->p)['Comet provisioning']);
        $this->assertTrue(cometbackup_ClientArea($this->p)['vars']['comet_setting_up']);
        $this->assertSame('alice', $this->service()->username, 'no effect before success');

        $this->assertSame(200, $this->post($this->event(['attempt' => 3]))[0]);
        $row = $this->row();
        $this->assertSame('succeeded', $row->state);
        $this->assertSame(3, (int)$row->attempts);
        $this->assertNull($row->error_code);
        $this->assertSame('alice_4821', $this->service()->username);
        $this->assertSame(0, $this->notifications());
    }

    public function testDatabaseFailureIs5xxAndRollsBack(): void
    {
        Capsule::schema()->rename('tblhosting', 'tblhosting_away');
        try {
            list($status) = $this->post($this->event());
        } finally {
            Capsule::schema()->rename('tblhosting_away', 'tblhosting');
        }
        $this->assertGreaterThanOrEqual(500, $status);
        $this->assertSame('queued', $this->row()->state, 'the job row update was rolled back');
        // The dispatcher retries: now it records.
        $this->assertSame(200, $this->post($this->event())[0]);
        $this->assertSame('succeeded', $this->row()->state);
    }

    public function testSkippedIsTerminalWithoutSideEffects(): void
    {
        $this->assertSame(200, $this->post($this->event(['status' => 'skipped', 'reason' => 'superseded']))[0]);
        $this->assertSame('skipped', $this->row()->state);
        $this->assertSame('alice', $this->service()->username);
        $this->assertSame(0, $this->notifications());
    }
}
