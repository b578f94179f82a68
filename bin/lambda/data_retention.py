"""data_retention: staging files and graph backups past their retention leave S3.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("data_retention")` (daily at 03:20 UTC). Acts as of the run's
scheduled time (clamped to the clock).
Reads: the staging bucket STAGING_BUCKET and `backups/` of the backups bucket BACKUP_BUCKET
(paginated), and the graph registry GRAPH_REGISTRY_TABLE (each graph's last backup).
Side effects: deletes staging objects older than STAGING_RETENTION_DAYS (default 7) and
backups older than BACKUP_RETENTION_DAYS (default 30) — never the last backup of a graph
that is creating, active or orphaned. Publishes StagingExpired, StagingDeleted,
BackupsExpired, BackupsDeleted, BackupsKept, DeletedBytes and JobSucceeded (EMF,
Beatless/Jobs). Raises after the rest when S3 refused to delete a key (named).
Idempotency: a replay finds the expired objects gone and deletes nothing more.
Event: the Scheduler fields and {"dry_run": true} (counts what would go, deletes nothing).
Rules in `beatless.graphs.retention`.
"""

from __future__ import annotations

from beatless.graphs.registry import Registries
from beatless.graphs.retention import RetentionError, apply_retention
from beatless.jobs.entry import JobHandler, Work
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env, env_int, env_required


def work_for(env: Env) -> Work:
    staging, backups = env_required(env, "STAGING_BUCKET"), env_required(env, "BACKUP_BUCKET")
    graph_table = env_required(env, "GRAPH_REGISTRY_TABLE")
    # 0 days: everything written before the run (a purge); the last backups are kept still.
    staging_days = env_int(env, "STAGING_RETENTION_DAYS", 7, minimum=0, maximum=3650)
    backup_days = env_int(env, "BACKUP_RETENTION_DAYS", 30, minimum=0, maximum=3650)

    def work(ctx: JobContext) -> JobOutcome:
        registries = Registries(ctx.dynamodb(), instance_table="", graph_table=graph_table)
        result = apply_retention(
            ctx.s3(),
            registries,
            staging_bucket=staging,
            backup_bucket=backups,
            staging_days=staging_days,
            backup_days=backup_days,
            as_of=ctx.as_of,
            dry_run=ctx.dry_run,
        )
        stage, kept = result.counts["staging"], result.counts["backups"]
        ctx.add("staging_expired", stage.expired)
        ctx.add("staging_deleted", stage.deleted)
        ctx.add("backups_expired", kept.expired)
        ctx.add("backups_deleted", kept.deleted)
        ctx.add("backups_kept", kept.kept_last_backup)
        ctx.add("deleted_bytes", stage.deleted_bytes + kept.deleted_bytes)
        if result.failed:
            raise RetentionError(f"S3 refused to delete {len(result.failed)} key(s): {result.failed[:10]}")
        return JobOutcome(remaining=None)

    return work


handler = JobHandler("data_retention", work_for)
