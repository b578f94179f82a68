"""ingestion_queue_processor: each complete upload batch, not staged yet, to the worker once.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("ingestion_queue_processor")` (every 5 minutes).
Reads: the uploads bucket UPLOADS_BUCKET (batch manifests `batches/<graph>/<batch>.json`,
paginated) and the staging bucket STAGING_BUCKET (a batch with `ingest/<graph>/<batch>/report.json`
is staged).
Side effects: one `beatless.stage_files` Celery message per pending batch on the `ingest`
queue of the broker (BROKER_URL, password from BROKER_PASSWORD_SECRET_ARN,
BROKER_TRANSPORT_OPTIONS), written in kombu's format without importing Celery; when it
sent one, wakes an idle worker monitor (MONITOR_FUNCTION_NAME, `beatless.queues.wake`). Publishes
Batches, Staged, Enqueued, AlreadyEnqueued, Malformed and JobSucceeded (EMF, Beatless/Jobs).
Idempotency: task id derived from the batch, sent behind a Redis SET NX marker (a day):
replayed or concurrent runs send each batch once.
Event: the Scheduler fields and {"dry_run": true} (lists what would be sent, sends nothing).
Rules in `beatless.ingestion.queue`.
"""

from __future__ import annotations

from beatless.ingestion.queue import process
from beatless.jobs.entry import JobHandler, Work
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env, env_required


def work_for(env: Env) -> Work:
    uploads, staging = env_required(env, "UPLOADS_BUCKET"), env_required(env, "STAGING_BUCKET")

    def work(ctx: JobContext) -> JobOutcome:
        broker = ctx.broker
        waker, woken = ctx.monitor_waker(), []

        def wake() -> None:  # right after a send: a run that fails later has woken it already
            if waker is not None:
                woken.append(waker(broker.client(), broker.options.global_keyprefix))

        counts, sent = process(
            ctx.s3(),
            broker.client(),
            broker.options,
            uploads_bucket=uploads,
            staging_bucket=staging,
            dry_run=ctx.dry_run,
            on_sent=wake,
        )
        for name, n in counts.as_dict().items():
            ctx.add(name, n)
        return JobOutcome(remaining=None, details={"sent": sent[:100], "monitor_woken": any(woken)})

    return work


handler = JobHandler("ingestion_queue_processor", work_for)
