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

`sweep` runs `run_chunks` twice over the same keyset, for monthly jobs that
must not skip a row another transaction holds for a moment (see `sweep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beatless.jobs.runtime import JobContext

# Where a keyset walk over (timestamp, id) starts: before every row.
KEYSET_START: tuple[datetime, int] = (datetime(1, 1, 1, tzinfo=UTC), 0)


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


# chunk(conn, cursor, limit, skip_locked) -> Chunk
SweepChunk = Callable[[Any, Any, int, bool], Chunk]


@dataclass(frozen=True)
class SweepReport:
    first: BatchReport
    second: BatchReport | None  # None: pass 1 stopped for the deadline

    @property
    def finished(self) -> bool:
        return self.second is not None and self.second.finished

    @property
    def chunks(self) -> int:
        return self.first.chunks + (self.second.chunks if self.second else 0)


def sweep(ctx: JobContext, chunk: SweepChunk, *, limit: int, first_chunk_ms: float = 5_000) -> SweepReport:
    """Run `chunk` over the keyset: once skipping locked rows, then once waiting for them.

    Two passes over a keyset, so concurrent runs share the work and nothing is left out.

    Pass 1 claims its chunks with `FOR UPDATE SKIP LOCKED`: concurrent runs of the
    same job (a replayed tick, a console re-run, Lambda's retry) divide the rows
    instead of queueing behind one another. But SKIP LOCKED also skips a row that
    an unrelated transaction holds for a moment (a user's `consume` locks the
    credit account), and a monthly job must not leave that account without its
    allocation until next month. So when pass 1 reaches the end of the keyset,
    pass 2 walks it again from the start with plain `FOR UPDATE` (waiting): it
    finds only the rows still due — those that were locked — waits for their
    holders, and re-checks that they are still due in a new statement before
    acting (the chunk functions do that), so a row another run completed in the
    meantime is not done twice. Both passes stop at the deadline
    (`run_chunks`); pass 2 is not started when pass 1 was cut short.
    """
    first = run_chunks(
        ctx, lambda conn, cursor, n: chunk(conn, cursor, n, True), limit=limit, first_chunk_ms=first_chunk_ms
    )
    if not first.finished:
        return SweepReport(first, None)
    second = run_chunks(
        ctx, lambda conn, cursor, n: chunk(conn, cursor, n, False), limit=limit, first_chunk_ms=first_chunk_ms
    )
    return SweepReport(first, second)
