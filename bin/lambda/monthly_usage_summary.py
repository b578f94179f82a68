"""monthly_usage_summary: one usage summary per graph for the month before.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("monthly_usage_summary")` (monthly, on the 2nd).
Side effects (PostgreSQL): for the month BEFORE the month of the scheduled
time, every graph that existed during it gets one `monthly_usage_summaries`
row: credits allocated (that month's allocation), consumed (ledger), storage
charged (that month's daily charges), mean stored bytes of its hourly
snapshots, GiB-days and the tier at the month's end; graphs with no usage get
zeros. Chunks of one transaction each. Publishes Summaries, Remaining and
JobSucceeded (EMF, namespace Beatless/Jobs, dimension Job).
Idempotency: PRIMARY KEY (graph_id, month), INSERT ... ON CONFLICT DO NOTHING:
the first summary stays; a replayed or concurrent run writes nothing more.
Event: the Scheduler fields and {"dry_run": true} (reports, changes nothing).
Returns the summary: counts, remaining (left for the next run), the month.
"""

from __future__ import annotations

from beatless.jobs.entry import JobHandler
from beatless.storage.summary import summarize_month

handler = JobHandler("monthly_usage_summary", lambda env: summarize_month)
