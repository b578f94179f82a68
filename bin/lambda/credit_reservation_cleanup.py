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

from beatless.credits.holds_cleanup import release_expired_holds
from beatless.jobs.entry import JobHandler

handler = JobHandler("credit_reservation_cleanup", lambda env: release_expired_holds)
