"""shared_credit_allocation: the monthly credits of shared-repository subscriptions.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("shared_credit_allocation")` (monthly at MONTHLY_ALLOCATION,
which the CDK app may move with `build_jobs(monthly_allocation=...)`).
Side effects (PostgreSQL): for the month of the scheduled time T, every
subscription active at T (started_at <= T < ended_at) gets one ledger entry of
its plan's monthly allocation, limited so the balance does not pass the plan's
cap (0 when it already has), and one `monthly_allocations` row; a subscription
without a credit account gets one first. Chunks of one transaction each.
Publishes Allocations, GrantedMicro, Capped, AccountsOpened, Remaining and
JobSucceeded (EMF, namespace Beatless/Jobs, dimension Job).
Idempotency: PRIMARY KEY (account_id, month) of monthly_allocations and the
ledger's UNIQUE key `allocation:subscription:<account>:<YYYY-MM>`, written in the
transaction that holds the account's row lock: a replayed, retried or
concurrent run finds the allocation and does nothing.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Returns the summary: counts, remaining (left for the next run), the month.
"""

from __future__ import annotations

from functools import partial

from beatless.credits.allocation import allocate_month
from beatless.credits.due import SHARED
from beatless.jobs.entry import JobHandler

handler = JobHandler("shared_credit_allocation", lambda env: partial(allocate_month, subjects=SHARED))
