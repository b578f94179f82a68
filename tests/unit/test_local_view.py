"""The live view of `beatless local`, read as the text it draws, and its plot as a PNG:
every part of the system is on it — queues, workers (busy, protected), job runs with
their last result and next due time, operations with their progress, credits — and the
lines the run's parts print stay in its tail instead of scrolling it away."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from beatless.local.plot import Point, Timeline, plot_png
from beatless.local.view import (
    TAIL_LINES,
    CreditsLine,
    JobLine,
    LiveView,
    OperationLine,
    QueueLine,
    Snapshot,
    WorkerLine,
    text,
)

AT = datetime(2026, 12, 7, 9, 45, tzinfo=UTC)


def snapshot(**changes: object) -> Snapshot:
    base = Snapshot(
        elapsed=42.4,
        desired=3,
        queues=(QueueLine("graph", 12, 2), QueueLine("ingest", 0, 1), QueueLine("default", 5, 0)),
        workers=(
            WorkerLine("local1@host", "busy", True, 1),
            WorkerLine("local2@host", "idle", False, 0),
            WorkerLine("local3@host", "starting", None),
        ),
        decision="30 s scale_out: 17 pending >= 10: +2 (1 -> 3)",
        clock=AT,
        jobs=(
            JobLine(
                "credit_reservation_cleanup", 3, 0, "ok 41 ms", AT, datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
            ),
            JobLine("storage_billing", 0, 0, None, None, datetime(2026, 12, 8, 2, 0, tzinfo=UTC)),
            JobLine("job_watchdog", 1, 1, "FAILED RuntimeError: boom 3 ms", AT, None),
        ),
        operations=(
            OperationLine("stage_files", "sec", "running", 40.0, "validate", 1_000_630, None),
            OperationLine("create_graph", "sec", "succeeded", 100.0, "done", 0, 2_500_000),
            OperationLine("backup_graph", "sec", "queued", None, None, 0, None),
        ),
        credits=CreditsLine(balance_micro=1_979_949_600, held_micro=1_000_630, charged_micro=20_050_400),
        tail=("  [demo] stage_files: a worker took it; 1.00063 credits held",),
    )
    return Snapshot(**{**base.__dict__, **changes})


def row(drawn: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in drawn.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{drawn}")


def test_the_view_shows_queues_workers_jobs_operations_and_credits() -> None:
    drawn = text(snapshot())
    assert "beatless local - 42 s; last scaling: 30 s scale_out: 17 pending >= 10: +2 (1 -> 3)" in drawn
    # Backlog per worker counts the workers that run (not the one still starting).
    assert row(drawn, "graph") == ["graph", "12", "2", "6.0"]
    assert row(drawn, "default") == ["default", "5", "0", "2.5"]
    assert "workers: 3 running, 1 busy, 1 protected, desired 3" in drawn
    assert row(drawn, "local1@host") == ["local1@host", "busy", "yes", "1"]
    assert row(drawn, "local2@host") == ["local2@host", "idle", "no", "0"]
    assert row(drawn, "local3@host")[1:3] == ["starting", "-"]
    assert "scheduled jobs (simulated clock 2026-12-07 09:45 UTC)" in drawn
    assert row(drawn, "credit_reservation_cleanup") == [
        "credit_reservation_cleanup", "3", "0", "ok 41 ms", "12-07 09:45", "12-07 10:00"
    ]  # fmt: skip
    assert row(drawn, "storage_billing")[3:] == ["-", "-", "12-08 02:00"]
    assert row(drawn, "job_watchdog")[1:4] == ["1", "1", "FAILED RuntimeError: boom 3 ms"]
    assert row(drawn, "stage_files") == ["stage_files", "sec", "running", "40%", "validate", "1.00", "-"]
    assert row(drawn, "create_graph")[2:] == ["succeeded", "100%", "done", "0.00", "2.50"]
    assert row(drawn, "backup_graph")[2:5] == ["queued", "-", "-"]
    assert "credits: balance 1,979.95, held 1.00, charged 20.05" in drawn
    assert "[demo] stage_files: a worker took it" in drawn


def test_parts_without_data_are_left_out_and_a_blind_monitor_is_said() -> None:
    drawn = text(snapshot(jobs=(), operations=(), credits=None, tail=(), redis_readable=False, queues=()))
    assert "scheduled jobs" not in drawn and "operations" not in drawn and "credits" not in drawn
    assert "redis unreadable: no depth published" in drawn


def test_printed_lines_go_to_the_tail_and_the_log_and_the_last_frame_is_left(tmp_path: Path) -> None:
    out = io.StringIO()
    log = tmp_path / "run.log"
    with LiveView(Console(file=out, width=160), log) as view:
        for n in range(TAIL_LINES + 3):
            view.write(f"line {n}\n")
        view.show(snapshot(tail=()))
    drawn = out.getvalue()  # not a terminal: the last frame, once
    assert drawn.count("beatless local - 42 s") == 1
    assert "line 2" not in drawn and f"line {TAIL_LINES + 2}" in drawn  # the newest lines only
    assert log.read_text().splitlines() == [f"line {n}" for n in range(TAIL_LINES + 3)]  # all of them


def test_the_plot_is_a_png_of_depth_and_workers(tmp_path: Path) -> None:
    timeline = Timeline()
    for second in range(0, 60, 2):
        pending = max(0, 30 - second)
        timeline.add(Point(second, {"graph": pending, "ingest": pending // 2}, {"graph": 1, "ingest": 0},
                           running=min(3, second // 6), desired=min(3, second // 6)))  # fmt: skip
    timeline.add(Point(60, {}, {}, running=3, desired=3))  # Redis unreadable: a gap
    path = plot_png(timeline, tmp_path / "plots" / "run.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 600) and len(data) > 20_000  # drawn, not blank
    assert timeline.queues() == ["graph", "ingest"]


def test_an_empty_timeline_is_refused() -> None:
    with pytest.raises(ValueError, match="no readings"):
        plot_png(Timeline(), Path("unused.png"))
