"""The runtime shared by every PostgreSQL-backed scheduled job.

- `run_scheduled_job` (runner): event -> settings -> connection -> `work(ctx)`
  -> metrics -> summary; see `beatless.jobrun.runner` for the contract.
- `run_chunks` (batch): one transaction per chunk, keyset pagination,
  `FOR UPDATE SKIP LOCKED`, stop before the deadline.
- `Deadline`: the Lambda's remaining time minus a safety margin.
- periods: `slot`, `hour_of`, `previous_hour`, `day_of`, `previous_day`,
  `month_of`, `previous_month` — business periods from the scheduled time.
"""

from __future__ import annotations

from beatless.jobrun.batch import BatchReport, Chunk, run_chunks
from beatless.jobrun.deadline import Deadline
from beatless.jobrun.periods import (
    Period,
    day_of,
    first_day,
    hour_of,
    month_of,
    previous_day,
    previous_hour,
    previous_month,
    slot,
)
from beatless.jobrun.runner import (
    JobContext,
    JobOutcome,
    JobSettings,
    metric_name,
    publish_metrics,
    reset_settings,
    run_scheduled_job,
    settings_for,
)

__all__ = [
    "BatchReport",
    "Chunk",
    "Deadline",
    "JobContext",
    "JobOutcome",
    "JobSettings",
    "Period",
    "day_of",
    "first_day",
    "hour_of",
    "metric_name",
    "month_of",
    "previous_day",
    "previous_hour",
    "previous_month",
    "publish_metrics",
    "reset_settings",
    "run_chunks",
    "run_scheduled_job",
    "settings_for",
    "slot",
]
