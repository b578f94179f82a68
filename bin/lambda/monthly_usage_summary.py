"""monthly_usage_summary: one usage summary per graph for the month before.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("monthly_usage_summary")` (monthly, on the 2nd).
Side effects (PostgreSQL): for the month BEFORE the month of the scheduled
time, every graph that existed during it gets one `monthly_usage_summaries`
row: credits allocated (that month's allocation), consumed (ledger), storage
charged (that month's daily charges), mean stored bytes of its hourly
snapshots, GiB-days and the tier at the month's end; graphs with no usage get
zeros. Chunks of one transaction each. Publishes Summaries, Remaining and
JobSucceeded (EMF, namespace Beatless/Jobs, dimension Job).
Idempotency: PRIMARY KEY (graph_id, month), INSERT ... ON CONFLICT DO NOTHING:
the first summary stays; a replayed or concurrent run writes nothing more.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Returns the summary: counts, remaining (left for the next run), the month.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from beatless.jobs import job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import run_job
from beatless.storage.summary import summarize_month

JOB = job("monthly_usage_summary")
logger = Logger(service=JOB.name)


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    return run_job(
        JOB, event, context, summarize_month, resources=environment_resources(os.environ), logger=logger
    )
