"""job_watchdog: missed-run verdicts for jobs whose window no CloudWatch alarm spans.

Trigger: EventBridge Scheduler, on the schedule of `beatless.jobs.job("job_watchdog")`
(hourly). Input: WATCHED_JOBS, set by the CDK app: every job whose missed-run
window (1.5 x its period) is longer than a direct alarm can wait for (weekly
and monthly jobs), with its expression, time zone and Scheduler schedule name.
Side effects: reads each schedule (scheduler:GetSchedule: state, last change)
and the jobs' JobSucceeded sums (one cloudwatch:GetMetricData), then publishes
in ONE PutMetricData to Beatless/Jobs JobOverdue = 1/0 per watched job; the job
runtime prints its own JobSucceeded = 1 (EMF). The rule is in `beatless.watchdog`. It raises on
any AWS error before publishing, and the JobOverdue alarms treat missing data
as breaching, so a watchdog that fails or stops alarms too.
Idempotency: it reads and publishes verdicts only; a duplicate run adds datapoints.
Event: the Scheduler fields, plus {"dry_run": true} to judge without publishing.
"""

from __future__ import annotations

from functools import partial

from beatless.jobs.entry import JobHandler
from beatless.watchdog import parse_watched_jobs, watch_jobs

handler = JobHandler(
    "job_watchdog", lambda env: partial(watch_jobs, jobs=parse_watched_jobs(env.get("WATCHED_JOBS")))
)
