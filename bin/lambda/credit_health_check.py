"""credit_health_check: weekly reconciliation of the credit tables; raises on inconsistency.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("credit_health_check")` (weekly, Monday). Its environment
(from the same registry entry) carries the cron expressions of the two monthly
allocation jobs: SHARED_ALLOCATION_SCHEDULE, GRAPH_ALLOCATION_SCHEDULE
(optional ALLOCATION_GRACE_MINUTES, default 120).
Side effects: none on the data — every statement runs in a READ ONLY
transaction. It checks each account's balance against its ledger and its held
amount against its holds, counts negative balances, finds the subjects that
should have the latest due month's allocation and have not, and allocation rows
that disagree with their ledger entry. Publishes AccountsChecked,
BalanceMismatches, HeldMismatches, NegativeBalances, AllocationMismatches,
MissedSharedAllocations, MissedGraphAllocations, Remaining and JobSucceeded
(EMF, namespace Beatless/Jobs, dimension Job) — and then RAISES
CreditInconsistencyError when any mismatch or missed allocation was found, so the
Errors alarm fires. It never corrects money itself.
Idempotency: read-only; a duplicate run publishes the same figures again.
Event: the Scheduler fields (no dry run: it changes nothing anyway).
"""

from __future__ import annotations

from functools import partial

from beatless.credits.health import HealthSettings, check_credit_health
from beatless.jobs.entry import JobHandler

handler = JobHandler(
    "credit_health_check", lambda env: partial(check_credit_health, settings=HealthSettings.from_env(env))
)
