"""Scheduled jobs: the registry, their schedules and the one runtime under every Lambda.

- `beatless.jobs` (this package): the registry — `JOBS`, `job(name)`, `Job`,
  `Need`, `build_jobs` — pure data, standard library only (the CDK app reads it);
- `beatless.jobs.schedules`: time units, `Schedule`, the Scheduler expression
  parser, missed-run windows;
- `beatless.jobs.periods`: business periods from a run's time;
- `beatless.jobs.runtime`: `run_job`, the runtime every Lambda entry point calls;
- `beatless.jobs.resources`: what a run may open, one provider per `Need`;
- `beatless.jobs.batch`: chunked, deadline-aware batches (`run_chunks`, `sweep`);
- `beatless.jobs.table`: the README's job table.
"""

from __future__ import annotations

from beatless.jobs.periods import PeriodKind
from beatless.jobs.registry import (
    API_FUNCTIONS,
    DEPLOY_FUNCTIONS,
    FUNCTION_LIMITS,
    GRAPH_ALLOCATION_DELAY_MINUTES,
    JOBS,
    MONTHLY_ALLOCATION,
    Job,
    JobClock,
    Need,
    RetryPolicy,
    build_jobs,
    job,
)
from beatless.jobs.schedules import DAY, HOUR, MINUTE, MonthlyTime, Schedule

__all__ = [
    "API_FUNCTIONS",
    "DAY",
    "DEPLOY_FUNCTIONS",
    "FUNCTION_LIMITS",
    "GRAPH_ALLOCATION_DELAY_MINUTES",
    "HOUR",
    "JOBS",
    "MINUTE",
    "MONTHLY_ALLOCATION",
    "Job",
    "JobClock",
    "MonthlyTime",
    "Need",
    "PeriodKind",
    "RetryPolicy",
    "Schedule",
    "build_jobs",
    "job",
]
