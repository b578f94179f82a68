"""storage_billing: one storage overage charge per graph and UTC day.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("storage_billing")` (daily at 02:00 UTC). The run scheduled
on day D bills day D-1 (`previous_day` of the scheduled time, never the clock).
Side effects (PostgreSQL): for every graph with snapshots that day, the average
over the hours present above its tier's included storage (tier in force at the
day's end), floored to a micro-credit: a `storage_charges` row and, when above
0, its ledger entry (may take the balance below 0), in one transaction.
Publishes Charged, ChargedMicro, ZeroCharges, AccountsOpened, Remaining and
JobSucceeded (EMF, Beatless/Jobs, Job=storage_billing).
Idempotency: primary key (graph_id, day) of storage_charges + UNIQUE ledger key
`storage:<graph>:<day>`, written together; graphs claimed with SKIP LOCKED.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Rules in `beatless.storage.billing`.
"""

from __future__ import annotations

from beatless.jobs.entry import JobHandler
from beatless.storage.billing import bill_storage

handler = JobHandler("storage_billing", lambda env: bill_storage)
