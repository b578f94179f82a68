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

from functools import partial

from beatless.auth.cleanup import AuthCleanupSettings, clean_up_auth
from beatless.jobs.entry import JobHandler

handler = JobHandler(
    "auth_cleanup", lambda env: partial(clean_up_auth, settings=AuthCleanupSettings.from_env(env))
)
