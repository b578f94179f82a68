"""storage_usage_collector's core: one snapshot per graph and hour.

The hour: the run at HH:05 records hour HH (the hour it runs in: `hour_of`
the scheduled time); storage_billing at 02:00 on day D bills the snapshots of
hours 00:00-23:00 of D-1, all taken by then. The snapshot holds what the
sources measure NOW (no source can measure the past), `collected_at` says when.

Which graphs: every graph that existed at some point of the hour
(`created_at < hour end`, not deleted before the hour began) and has no
snapshot for the hour yet. A graph with nothing stored gets a snapshot of 0
bytes (it was measured; storage_billing records a zero charge for it). The
first run ever snapshots its own hour only: past hours cannot be measured.

Exactly once per graph-hour: the primary key (graph_id, hour) and INSERT ... ON
CONFLICT DO NOTHING, in the transaction that writes the snapshot. Chunks of
graphs in id order (keyset): select the chunk's graphs still without a
snapshot, measure them OUTSIDE any transaction (S3 listings can take seconds,
and an open transaction would pin locks and risk the idle-in-transaction
timeout), then insert the chunk's snapshots in one transaction. A replay finds
every graph done and measures nothing; concurrent runs may measure a graph
twice, but only one snapshot is written. Before each chunk the deadline must
allow twice the slowest chunk so far (the `run_chunks` rule); a run short of
time stops between chunks and reports the graphs it left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beatless.errors import InvalidInputError
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env, env_str
from beatless.storage.sources import UsageSource, measure

CHUNK_SIZE = 200
FIRST_CHUNK_MS = 5_000

_DUE_SQL = """
SELECT g.id FROM graphs g
WHERE g.id > %(after)s
  AND g.created_at < %(end)s AND (g.deleted_at IS NULL OR g.deleted_at > %(start)s)
  AND NOT EXISTS (SELECT 1 FROM storage_usage_snapshots s WHERE s.graph_id = g.id AND s.hour = %(start)s)
ORDER BY g.id
LIMIT %(limit)s
"""

_LEFT_SQL = """
SELECT count(*) FROM graphs g
WHERE g.id > %(after)s
  AND g.created_at < %(end)s AND (g.deleted_at IS NULL OR g.deleted_at > %(start)s)
  AND NOT EXISTS (SELECT 1 FROM storage_usage_snapshots s WHERE s.graph_id = g.id AND s.hour = %(start)s)
"""

_INSERT_SQL = """
INSERT INTO storage_usage_snapshots
    (graph_id, hour, s3_files_bytes, s3_tables_bytes, graph_bytes, subgraph_bytes)
SELECT graph_id, %(start)s, files, tables, graph, subgraph
FROM unnest(%(ids)s::text[], %(files)s::bigint[], %(tables)s::bigint[],
            %(graph)s::bigint[], %(subgraph)s::bigint[]) AS u(graph_id, files, tables, graph, subgraph)
ORDER BY graph_id
ON CONFLICT (graph_id, hour) DO NOTHING
RETURNING total_bytes
"""


@dataclass(frozen=True)
class CollectorSettings:
    bucket: str
    prefix: str
    graph_data_dir: Path | None
    graph_table: str | None = None

    @classmethod
    def from_env(cls, env: Env) -> CollectorSettings:
        """`STORAGE_BUCKET` (required: the customer data bucket), `STORAGE_PREFIX`
        (default `graphs/`), and where graph databases are measured — at most one of
        `GRAPH_REGISTRY_TABLE` (the graph registry's `size_bytes`, as deployed) and
        `GRAPH_DATA_DIR` (a directory of graph
        databases, measured by `DirectoryGraphSizes`)."""
        bucket = env_str(env, "STORAGE_BUCKET", required=True)
        assert bucket is not None
        prefix = env_str(env, "STORAGE_PREFIX", "graphs/") or "graphs/"
        if not prefix.endswith("/") or prefix.startswith("/"):
            raise InvalidInputError(
                "STORAGE_PREFIX", f"must end with '/' and not start with one, got {prefix!r}"
            )
        data_dir = env_str(env, "GRAPH_DATA_DIR")
        if data_dir is not None and not Path(data_dir).is_absolute():
            raise InvalidInputError("GRAPH_DATA_DIR", f"must be an absolute path, got {data_dir!r}")
        graph_table = env_str(env, "GRAPH_REGISTRY_TABLE")
        if graph_table is not None and data_dir is not None:
            raise InvalidInputError(
                "GRAPH_DATA_DIR", "set at most one of it and GRAPH_REGISTRY_TABLE (graphs would count twice)"
            )
        return cls(bucket, prefix, Path(data_dir) if data_dir else None, graph_table)


def collect_storage_usage(
    ctx: JobContext, sources: Sequence[UsageSource], *, chunk_size: int = CHUNK_SIZE
) -> JobOutcome:
    """Write the snapshot of `ctx.period` (an hour) for every graph due one.

    Counts `snapshots` (written by this run) and `snapshot_bytes` (their total).
    `remaining`: graphs a run short of time left. Dry run: measures and reports
    `would_snapshot` (also as `remaining`) and `would_snapshot_bytes`, writes nothing.
    """
    hour = ctx.period
    params: dict[str, Any] = {"start": hour.start, "end": hour.end, "limit": chunk_size}
    details: dict[str, Any] = {"hour": hour.label, "sources": [s.name for s in sources]}
    would = would_bytes = 0
    if not ctx.dry_run:
        ctx.add("snapshots", 0)
        ctx.add("snapshot_bytes", 0)
    after, chunks, slowest_ms = "", 0, 0.0
    while True:
        if not ctx.deadline.allows(2 * slowest_ms if chunks else FIRST_CHUNK_MS):
            left = ctx.conn.execute(_LEFT_SQL, {**params, "after": after}).fetchone()[0]
            details["chunks"] = chunks
            return JobOutcome(remaining=left + would, details={**details, **_dry(ctx, would, would_bytes)})
        started = ctx.clock()
        ids = [row[0] for row in ctx.conn.execute(_DUE_SQL, {**params, "after": after}).fetchall()]
        if ids:
            usage = measure(sources, ids)
            if ctx.dry_run:
                would += len(ids)
                would_bytes += sum(u.total_bytes for u in usage.values())
            else:
                columns = list(zip(*(usage[i].as_row() for i in ids), strict=True))
                with ctx.conn.transaction():
                    written = ctx.conn.execute(
                        _INSERT_SQL,
                        {
                            "start": hour.start,
                            "ids": ids,
                            "files": list(columns[0]),
                            "tables": list(columns[1]),
                            "graph": list(columns[2]),
                            "subgraph": list(columns[3]),
                        },
                    ).fetchall()
                ctx.add("snapshots", len(written))
                ctx.add("snapshot_bytes", sum(int(row[0]) for row in written))
            after = ids[-1]
        chunks += 1
        slowest_ms = max(slowest_ms, (ctx.clock() - started) * 1000)
        if len(ids) < chunk_size:
            details["chunks"] = chunks
            # A dry run's "remaining" is what a real run would write now (as every job's).
            return JobOutcome(remaining=would, details={**details, **_dry(ctx, would, would_bytes)})


def _dry(ctx: JobContext, would: int, would_bytes: int) -> dict[str, int]:
    return {"would_snapshot": would, "would_snapshot_bytes": would_bytes} if ctx.dry_run else {}
