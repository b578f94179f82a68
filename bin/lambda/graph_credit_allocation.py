"""graph_credit_allocation: the monthly credits of every graph, by tier, up to a cap.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("graph_credit_allocation")` (monthly,
GRAPH_ALLOCATION_DELAY_MINUTES after shared_credit_allocation; both move
together with `build_jobs(monthly_allocation=...)`).
Side effects (PostgreSQL): for the month of the scheduled time T, every graph
not deleted at T that has a tier in force at T gets one ledger entry of THAT
tier's monthly allocation (a tier change later in the month counts from the
next month), limited so the balance does not pass the tier's cap (0 when it
already has: the entry and the allocation row are still written, so a replay
cannot top the balance up), and one `monthly_allocations` row; a graph without
a credit account gets one first. Chunks of one transaction each.
Publishes Allocations, GrantedMicro, Capped, AccountsOpened, Remaining and
JobSucceeded (EMF, namespace Beatless/Jobs, dimension Job).
Idempotency: PRIMARY KEY (account_id, month) of monthly_allocations and the
ledger's UNIQUE key `allocation:graph:<account>:<YYYY-MM>`, written in the
transaction that holds the account's row lock: a replayed, retried or
concurrent run finds the allocation and does nothing.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Returns the summary: counts, remaining (left for the next run), the month.
"""

from __future__ import annotations

from functools import partial

from beatless.credits.allocation import allocate_month
from beatless.credits.due import GRAPHS
from beatless.jobs.entry import JobHandler

handler = JobHandler("graph_credit_allocation", lambda env: partial(allocate_month, subjects=GRAPHS))
