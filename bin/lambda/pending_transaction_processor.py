"""pending_transaction_processor: stale pending credit transactions are settled once.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("pending_transaction_processor")` (every 15 minutes, at :07,
:22, :37, :52 — off the reservation cleanup's quarter hours).
Side effects (PostgreSQL): every transaction still `pending` when
PENDING_TRANSACTION_MAX_AGE_MINUTES old (default 60) as of the scheduled time
is finalized (one ledger entry `transaction:<id>`, balance moves) or reverted
(no balance change), as `transaction_kinds.when_stale` says; chunks of one
transaction each. Publishes Finalized, FinalizedMicro, Reverted, Remaining and
JobSucceeded (EMF, Beatless/Jobs, Job=pending_transaction_processor).
Idempotency: row lock + status guard (FOR UPDATE SKIP LOCKED, `status =
'pending'`) and the UNIQUE ledger key, in one transaction: a replayed or
concurrent run settles nothing twice.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Rules in `beatless.credits.pending`; the run itself in `beatless.jobs.runtime`.
"""

from __future__ import annotations

from functools import partial

from beatless.credits.pending import PendingSettings, settle_stale_transactions
from beatless.jobs.entry import JobHandler

handler = JobHandler(
    "pending_transaction_processor",
    lambda env: partial(settle_stale_transactions, settings=PendingSettings.from_env(env)),
)
