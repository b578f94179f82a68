"""storage_usage_collector: one storage usage snapshot per graph and hour.

Trigger: EventBridge Scheduler, on the schedule of the registry entry
`beatless.jobs.job("storage_usage_collector")` (hourly at :05). The run records
the hour it is scheduled in (`hour_of` the scheduled time, never the clock).
Reads: the customer data bucket STORAGE_BUCKET under STORAGE_PREFIX (default
`graphs/`; `graphs/<graph>/tables/...` = tables, the rest = files), and the
graph databases' sizes: from the graph registry GRAPH_REGISTRY_TABLE (as deployed:
the size each graph node records) or, in local runs, the directory GRAPH_DATA_DIR.
Side effects (PostgreSQL): one `storage_usage_snapshots` row per graph alive in
that hour. Publishes Snapshots, SnapshotBytes, Remaining and JobSucceeded (EMF,
Beatless/Jobs, Job=storage_usage_collector).
Idempotency: primary key (graph_id, hour), INSERT ... ON CONFLICT DO NOTHING; a
replay measures nothing already recorded.
Event: the Scheduler fields and {"dry_run": true} (measures, writes nothing).
Rules in `beatless.storage.collector` and `beatless.storage.sources`.
"""

from __future__ import annotations

from beatless.graphs.registry import Registries
from beatless.jobs.entry import JobHandler, Work
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env
from beatless.storage.collector import CollectorSettings, collect_storage_usage
from beatless.storage.sources import (
    DirectoryGraphSizes,
    RegistryGraphSizes,
    S3PrefixUsage,
    UsageSource,
    graph_size_usage,
)


def work_for(env: Env) -> Work:
    settings = CollectorSettings.from_env(env)

    def work(ctx: JobContext) -> JobOutcome:
        sources: list[UsageSource] = [S3PrefixUsage(ctx.s3(), settings.bucket, settings.prefix)]
        if settings.graph_table is not None:
            # Only the graph registry is read (Need.GRAPH_REGISTRY_READ: BatchGetItem on it).
            registries = Registries(ctx.dynamodb(), instance_table="", graph_table=settings.graph_table)
            sources.append(graph_size_usage(RegistryGraphSizes(registries)))
        elif settings.graph_data_dir is not None:
            sources.append(graph_size_usage(DirectoryGraphSizes(settings.graph_data_dir)))
        return collect_storage_usage(ctx, sources=sources)

    return work


handler = JobHandler("storage_usage_collector", work_for)
