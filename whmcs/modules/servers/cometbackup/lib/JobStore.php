<?php
/* The module's job table: one row per published job, updated by callbacks. */

namespace WHMCS\Module\Server\CometBackup;

use WHMCS\Database\Capsule;

final class JobStore
{
    const TABLE = 'mod_cometbackup_jobs';

    const QUEUED = 'queued';
    const RETRYING = 'retrying';
    const SUCCEEDED = 'succeeded';
    const FAILED = 'failed';
    const SKIPPED = 'skipped';

    const TERMINAL = [self::SUCCEEDED, self::FAILED, self::SKIPPED];

    /** error_code of a job the broker never accepted: no worker will see it. */
    const PUBLISH_FAILED = 'publish_failed';

    /** Two requests for one service may race for a seq; the unique index decides. */
    const SEQ_ATTEMPTS = 5;

    /** @var bool */
    private static $schemaReady = false;

    /** Creates the table on first use (idempotent, safe under a race). */
    public static function ensureSchema(): void
    {
        if (self::$schemaReady) {
            return;
        }
        $schema = Capsule::schema();
        if (!$schema->hasTable(self::TABLE)) {
            try {
                $schema->create(self::TABLE, function ($t) {
                    $t->string('job_id', 36)->primary();
                    $t->unsignedInteger('service_id');
                    $t->unsignedInteger('seq');
                    $t->string('after_job_id', 36)->nullable();
                    $t->string('action', 32);
                    $t->string('state', 16);
                    $t->unsignedInteger('attempts')->default(0);
                    $t->string('error_class', 16)->nullable();
                    $t->string('error_code', 64)->nullable();
                    $t->text('error_message')->nullable();
                    $t->text('result')->nullable();
                    $t->dateTime('created_at');
                    $t->dateTime('updated_at');
                    $t->unique(['service_id', 'seq']);
                    $t->index(['service_id', 'state']);
                });
            } catch (\Exception $e) {
                // Another request created it in between: fine if it exists now.
                if (!$schema->hasTable(self::TABLE)) {
                    throw $e;
                }
            }
        }
        self::$schemaReady = true;
    }

    /** Tests drop the table between runs. */
    public static function forgetSchema(): void
    {
        self::$schemaReady = false;
    }

    public static function now(): string
    {
        return gmdate('Y-m-d H:i:s');
    }

    /**
     * Inserts a queued row with the next seq of the service and the id of
     * its previous published job. Returns ['seq' => int, 'after' => ?string].
     */
    public static function reserve(string $jobId, int $serviceId, string $action): array
    {
        self::ensureSchema();
        $last = null;
        for ($i = 0; $i < self::SEQ_ATTEMPTS; $i++) {
            $maxSeq = Capsule::table(self::TABLE)->where('service_id', $serviceId)->max('seq');
            $seq = $maxSeq === null ? 1 : (int)$maxSeq + 1;
            // Rows the broker never took are not predecessors: no worker saw them.
            $prev = Capsule::table(self::TABLE)
                ->where('service_id', $serviceId)
                ->where(function ($q) {
                    $q->whereNull('error_code')->orWhere('error_code', '!=', self::PUBLISH_FAILED);
                })
                ->orderBy('seq', 'desc')->value('job_id');
            try {
                Capsule::table(self::TABLE)->insert([
                    'job_id' => $jobId,
                    'service_id' => $serviceId,
                    'seq' => $seq,
                    'after_job_id' => $prev,
                    'action' => $action,
                    'state' => self::QUEUED,
                    'attempts' => 0,
                    'created_at' => self::now(),
                    'updated_at' => self::now(),
                ]);
                return ['seq' => $seq, 'after' => $prev];
            } catch (\Illuminate\Database\QueryException $e) {
                $last = $e; // duplicate (service_id, seq): a concurrent request won it
            }
        }
        throw new \RuntimeException('could not reserve a job sequence number: ' . $last->getMessage());
    }

    /** The broker refused the job: keep the row (its seq stays used) but not as queued. */
    public static function markPublishFailed(string $jobId, string $message): void
    {
        Capsule::table(self::TABLE)->where('job_id', $jobId)->update([
            'state' => self::FAILED,
            'error_class' => 'transient',
            'error_code' => self::PUBLISH_FAILED,
            'error_message' => mb_substr($message, 0, 1000),
            'updated_at' => self::now(),
        ]);
    }

    /** @return object|null */
    public static function find(string $jobId)
    {
        self::ensureSchema();
        return Capsule::table(self::TABLE)->where('job_id', $jobId)->first();
    }

    /** Most recent jobs of a service, newest first. */
    public static function recent(int $serviceId, int $limit = 10): array
    {
        self::ensureSchema();
        return Capsule::table(self::TABLE)->where('service_id', $serviceId)
            ->orderBy('seq', 'desc')->limit($limit)->get()->all();
    }

    /** @return object|null the newest job of the service, optionally of one action */
    public static function latest(int $serviceId, ?string $action = null)
    {
        self::ensureSchema();
        $q = Capsule::table(self::TABLE)->where('service_id', $serviceId);
        if ($action !== null) {
            $q->where('action', $action);
        }
        return $q->orderBy('seq', 'desc')->first();
    }

    /** @return object|null the newest failed job of the service */
    public static function latestFailed(int $serviceId)
    {
        self::ensureSchema();
        return Capsule::table(self::TABLE)->where('service_id', $serviceId)
            ->where('state', self::FAILED)->orderBy('seq', 'desc')->first();
    }
}
