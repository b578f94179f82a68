"""credit_reservation_cleanup: expired credit holds become available credits again.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("credit_reservation_cleanup")` (every 15 minutes).
Side effects (PostgreSQL): every hold in status `held` with
`expires_at <= scheduled_time` (clamped to the database clock: a console
event from the future expires nothing early) moves to `expired`, in chunks of one transaction
each; the database gives its amount back to the account's available balance in
the same transaction. Publishes Released, ReleasedMicro, Remaining and
JobSucceeded (EMF, namespace Beatless/Jobs, dimension Job).
Idempotency: row lock + status guard per hold (FOR UPDATE SKIP LOCKED, WHERE
status = 'held'): a replayed or concurrent run finds nothing left to expire.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Returns the summary: counts, remaining (left for the next run), the period.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from beatless.credits.holds_cleanup import release_expired_holds
from beatless.jobs import job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import run_job

JOB = job("credit_reservation_cleanup")
logger = Logger(service=JOB.name)


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    return run_job(
        JOB, event, context, release_expired_holds, resources=environment_resources(os.environ), logger=logger
    )
