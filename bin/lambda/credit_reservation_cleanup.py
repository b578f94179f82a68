"""credit_reservation_cleanup: expired credit holds become available credits again.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("credit_reservation_cleanup")` (every 15 minutes).
Side effects (PostgreSQL): every hold in status `held` with
`expires_at <= scheduled_time` moves to `expired`, in chunks of one transaction
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

from beatless.cleanup import release_expired_holds
from beatless.jobrun import run_scheduled_job

JOB = "credit_reservation_cleanup"
logger = Logger(service=JOB)


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    return run_scheduled_job(JOB, event, context, release_expired_holds, env=os.environ, logger=logger)
