"""auth_cleanup: ended API keys are deactivated, then deleted; old sessions deleted.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("auth_cleanup")` (hourly, on the hour).
Side effects (PostgreSQL), as of the scheduled time (clamped to the database
clock): API keys whose expiry or revocation has passed get `deactivated_at`;
deactivated keys that ended AUTH_API_KEY_RETENTION_DAYS ago (default 90) and
sessions that ended AUTH_SESSION_RETENTION_DAYS ago (default 7) are deleted.
Chunks of one transaction each. Publishes DeactivatedKeys, DeletedKeys,
DeletedSessions, Remaining and JobSucceeded (EMF, Beatless/Jobs, Job=auth_cleanup).
Idempotency: row lock + status guard (FOR UPDATE SKIP LOCKED, `deactivated_at IS
NULL`; a deleted row is gone): a replayed or concurrent run finds nothing left.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Rules in `beatless.auth.cleanup`; the run itself in `beatless.jobs.runtime`.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger

from beatless.auth.cleanup import AuthCleanupSettings, clean_up_auth
from beatless.jobs import job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import run_job

JOB = job("auth_cleanup")
logger = Logger(service=JOB.name)


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    settings = AuthCleanupSettings.from_env(os.environ)
    return run_job(
        JOB,
        event,
        context,
        partial(clean_up_auth, settings=settings),
        resources=environment_resources(os.environ),
        logger=logger,
    )
