"""Two passes over a keyset, so concurrent runs share the work and nothing is left out.

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
(`beatless.jobrun.run_chunks`); pass 2 is not started when pass 1 was cut short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beatless.jobrun import BatchReport, Chunk, JobContext, run_chunks

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
    """Run `chunk` over the keyset: once skipping locked rows, then once waiting for them."""
    first = run_chunks(
        ctx, lambda conn, cursor, n: chunk(conn, cursor, n, True), limit=limit, first_chunk_ms=first_chunk_ms
    )
    if not first.finished:
        return SweepReport(first, None)
    second = run_chunks(
        ctx, lambda conn, cursor, n: chunk(conn, cursor, n, False), limit=limit, first_chunk_ms=first_chunk_ms
    )
    return SweepReport(first, second)
