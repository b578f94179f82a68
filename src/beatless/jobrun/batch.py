"""Chunked batches under a deadline.

The pattern every batch job follows:

- each chunk is one transaction (`run_chunks` opens it): claim up to `limit`
  rows with `FOR UPDATE SKIP LOCKED` (rows another run holds are skipped, not
  waited for), apply the effect with its status guard / UNIQUE key, commit;
- chunks walk the access path with KEYSET pagination: the chunk returns the
  key of its last row and the next starts strictly after it
  (`WHERE (expires_at, id) > (%s, %s) ORDER BY expires_at, id`). Re-reading
  from the start of the index each time would step over every entry the
  previous chunks just made dead — naive batching gets slower with every chunk;
- before starting a chunk, the deadline must allow twice the slowest chunk so
  far (or `first_chunk_ms`); otherwise the run stops cleanly and the rest is
  left for the next run (the job reports how much);
- a chunk that raises rolls back alone; the chunks committed before it stay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from beatless.jobrun.runner import JobContext


@dataclass(frozen=True)
class Chunk:
    """What one chunk did: rows it claimed, the key to continue after, effect counts."""

    rows: int
    cursor: Any
    counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchReport:
    chunks: int
    rows: int
    cursor: Any  # the last key processed (None if no chunk ran)
    finished: bool  # True: the access path was exhausted; False: stopped for the deadline


def run_chunks(
    ctx: JobContext,
    chunk: Callable[[Any, Any, int], Chunk],
    *,
    limit: int,
    first_chunk_ms: float = 5_000,
    cursor: Any = None,
) -> BatchReport:
    """Call `chunk(conn, cursor, limit)` in one transaction per chunk until a chunk
    returns fewer than `limit` rows or the deadline is near. Counts of committed
    chunks go to `ctx.add`."""
    slowest_ms = 0.0
    chunks = rows = 0
    while True:
        needed = 2 * slowest_ms if chunks else first_chunk_ms
        if not ctx.deadline.allows(needed):
            return BatchReport(chunks, rows, cursor, finished=False)
        started = ctx.clock()
        with ctx.conn.transaction():
            result = chunk(ctx.conn, cursor, limit)
        slowest_ms = max(slowest_ms, (ctx.clock() - started) * 1000)
        chunks += 1
        rows += result.rows
        for name, n in result.counts.items():
            ctx.add(name, n)
        if result.rows:
            cursor = result.cursor
        if result.rows < limit:
            return BatchReport(chunks, rows, cursor, finished=True)
