"""storage_billing: one storage overage charge per graph and UTC day.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("storage_billing")` (daily at 02:00 UTC). The run scheduled
on day D bills day D-1 (`previous_day` of the scheduled time, never the clock).
Side effects (PostgreSQL): for every graph with snapshots that day, the average
over the hours present above its tier's included storage (tier in force at the
day's end), floored to a micro-credit: a `storage_charges` row and, when above
0, its ledger entry (may take the balance below 0), in one transaction.
Publishes Charged, ChargedMicro, ZeroCharges, AccountsOpened, Remaining and
JobSucceeded (EMF, Beatless/Jobs, Job=storage_billing).
Idempotency: primary key (graph_id, day) of storage_charges + UNIQUE ledger key
`storage:<graph>:<day>`, written together; graphs claimed with SKIP LOCKED.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Rules in `beatless.storage.billing`.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from beatless.jobs import job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import run_job
from beatless.storage.billing import bill_storage

JOB = job("storage_billing")
logger = Logger(service=JOB.name)


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    return run_job(
        JOB, event, context, bill_storage, resources=environment_resources(os.environ), logger=logger
    )
