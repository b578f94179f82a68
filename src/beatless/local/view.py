"""The live terminal view of `beatless local` (rich), drawn from one `Snapshot`.

`render(snapshot)` is pure: the runner fills a `Snapshot` each reading (queues from the
monitor's reading, workers from their presence lines, job runs from the scheduler loop,
operations and credits from PostgreSQL and the progress streams) and `LiveView` redraws
it in place. Lines the run's parts print (the demo, the jobs, the task API) are kept in
the view's tail instead of scrolling it away, and written whole to a log file.
`text(snapshot)` is the same drawing as plain text: what the tests read.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

TAIL_LINES = 8
OPERATIONS_SHOWN = 8


@dataclass(frozen=True)
class QueueLine:
    name: str
    pending: int
    reserved: int


@dataclass(frozen=True)
class WorkerLine:
    name: str
    state: str  # starting | idle | busy
    protected: bool | None  # None: no scale-in protection here (not on ECS)
    tasks: int = 0


@dataclass(frozen=True)
class JobLine:
    name: str
    runs: int
    failures: int
    last: str | None  # "ok 12 ms" | "FAILED ..." | None: not run yet
    last_at: datetime | None  # simulated time of the last run
    next_due: datetime | None  # simulated time of the next run (None: none in the window)


@dataclass(frozen=True)
class OperationLine:
    task: str
    graph_id: str
    status: str  # queued | running | succeeded | failed | cancelled
    percent: float | None
    stage: str | None
    held_micro: int
    charged_micro: int | None


@dataclass(frozen=True)
class CreditsLine:
    balance_micro: int
    held_micro: int
    charged_micro: int


@dataclass(frozen=True)
class Snapshot:
    elapsed: float
    desired: int
    queues: tuple[QueueLine, ...]
    workers: tuple[WorkerLine, ...]
    decision: str | None = None  # the last scaling decision that was not "hold"
    redis_readable: bool = True
    clock: datetime | None = None  # the scheduler loop's simulated time
    jobs: tuple[JobLine, ...] = ()
    operations: tuple[OperationLine, ...] = ()
    credits: CreditsLine | None = None
    tail: tuple[str, ...] = ()


def _credits(micro: int | None) -> str:
    return "-" if micro is None else f"{micro / 1_000_000:,.2f}"


def _queues(snapshot: Snapshot) -> Table:
    table = Table(title="queues")
    for column in ("queue", "pending", "reserved", "backlog/worker"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    running = max(len([w for w in snapshot.workers if w.state != "starting"]), 1)
    for queue in snapshot.queues:
        table.add_row(queue.name, str(queue.pending), str(queue.reserved), f"{queue.pending / running:.1f}")
    if not snapshot.redis_readable:
        table.add_row("(redis unreadable: no depth published)", "-", "-", "-")
    return table


def _workers(snapshot: Snapshot) -> Table:
    busy = sum(1 for w in snapshot.workers if w.state == "busy")
    protected = sum(1 for w in snapshot.workers if w.protected)
    table = Table(
        title=f"workers: {len(snapshot.workers)} running, {busy} busy, {protected} protected, "
        f"desired {snapshot.desired}",
    )
    for column in ("worker", "state", "protected", "tasks"):
        table.add_column(column)
    for worker in snapshot.workers:
        shield = "-" if worker.protected is None else ("yes" if worker.protected else "no")
        table.add_row(worker.name, worker.state, shield, str(worker.tasks))
    return table


def _jobs(snapshot: Snapshot) -> Table:
    clock = f" (simulated clock {snapshot.clock:%Y-%m-%d %H:%M} UTC)" if snapshot.clock else ""
    table = Table(title=f"scheduled jobs{clock}")
    for column in ("job", "runs", "failed", "last result", "last run", "next due"):
        table.add_column(column, justify="right" if column in ("runs", "failed") else "left")
    for job in snapshot.jobs:
        table.add_row(
            job.name,
            str(job.runs),
            str(job.failures),
            job.last or "-",
            f"{job.last_at:%m-%d %H:%M}" if job.last_at else "-",
            f"{job.next_due:%m-%d %H:%M}" if job.next_due else "-",
        )
    return table


def _operations(snapshot: Snapshot) -> Table:
    table = Table(title="operations")
    for column in ("operation", "graph", "status", "progress", "stage", "held", "charged"):
        table.add_column(column, justify="right" if column in ("progress", "held", "charged") else "left")
    for op in snapshot.operations:
        progress = "-" if op.percent is None else f"{op.percent:.0f}%"
        held, charged = _credits(op.held_micro), _credits(op.charged_micro)
        table.add_row(op.task, op.graph_id, op.status, progress, op.stage or "-", held, charged)
    return table


def _titled(table: Table) -> Group:
    """The table under its title on a line of its own (a title inside the table wraps at its width)."""
    title, table.title = str(table.title), None
    return Group(Text(title, style="bold"), table)


def render(snapshot: Snapshot) -> Group:
    decision = f"; last scaling: {snapshot.decision}" if snapshot.decision else ""
    parts: list[Any] = [
        Text(f"beatless local - {snapshot.elapsed:.0f} s{decision}", style="bold"),
        _titled(_queues(snapshot)),
        _titled(_workers(snapshot)),
    ]
    if snapshot.jobs:
        parts.append(_titled(_jobs(snapshot)))
    if snapshot.operations:
        parts.append(_titled(_operations(snapshot)))
    if snapshot.credits is not None:
        c = snapshot.credits
        parts.append(
            Text(
                f"credits: balance {_credits(c.balance_micro)}, held {_credits(c.held_micro)}, "
                f"charged {_credits(c.charged_micro)}"
            )
        )
    if snapshot.tail:
        parts.append(Text("\n".join(snapshot.tail), style="dim"))
    return Group(*parts)


def text(snapshot: Snapshot, width: int = 120) -> str:
    """The view as plain text (no colours, no cursor moves)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(render(snapshot))
    return console.export_text()


@dataclass
class LiveView:
    """Redraws the latest snapshot in place on `console`'s terminal; `out` is the stream the
    run's parts print to (kept in the tail, and whole in `log_path`)."""

    console: Console
    log_path: Path
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _live: Live | None = None
    _log: IO[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last: Snapshot | None = None

    def __enter__(self) -> LiveView:
        self._log = self.log_path.open("a", encoding="utf-8")
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
        if self._log is not None:
            self._log.close()

    def write(self, text: str) -> int:
        """The `out` stream: whole lines (the runner's `LineWriter` gives whole lines)."""
        with self._lock:
            if self._log is not None:
                self._log.write(text)
                self._log.flush()
            self.tail.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        pass

    def show(self, snapshot: Snapshot) -> None:
        with self._lock:
            snapshot = Snapshot(**{**snapshot.__dict__, "tail": tuple(self.tail)})
            self._last = snapshot
        if self._live is not None:
            self._live.update(render(snapshot), refresh=True)
