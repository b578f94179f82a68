"""README command 1: the local system starts graph nodes that register themselves,
places, loads and queries a graph on one and runs a graph monitor cycle; it scales real
workers out from zero on a burst, drains it with every task applied exactly once, and
scales back in. Meanwhile the demo workload runs its heavy operations on those workers:
a financial dataset ingested with every row, one company's graph holding exactly its
rows, the planted ownership communities recovered, a backup recorded, every operation's
progress and credits shown, the charges equal to what left the accounts."""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatless.errors import InvalidInputError
from beatless.ingestion import sample
from beatless.local.demo import MIN_NMI
from beatless.local.runner import LocalOptions, database_home, run


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The run's state directory, and its database wherever it lives (as root: under /tmp)."""
    yield tmp_path
    shutil.rmtree(database_home(tmp_path), ignore_errors=True)


def test_local_run_scales_out_drains_and_scales_in(state_dir: Path) -> None:
    tmp_path = state_dir
    out = io.StringIO()
    report = run(
        LocalOptions(tasks=24, steps=1, step_seconds=0.3, sample_interval_seconds=1.0, max_workers=3,
                     timeout_seconds=240, schedule_speed=720, schedule_window_minutes=60, view="live",
                     state_dir=tmp_path),
        out=out,
    )  # fmt: skip
    frame = out.getvalue()  # the live view's last frame (not a terminal), then the summary
    text = (tmp_path / "run.log").read_text()  # what the run's parts printed under the view
    assert report.ok, (frame, text)
    assert report.applied == 24 and report.total == 24  # nothing lost, nothing applied twice
    assert report.failed_readings == 0
    assert 1 <= report.peak_workers <= 3
    assert report.first_worker_after_seconds is not None
    assert report.scaled_in_after_seconds is not None  # back to zero workers once idle
    assert report.drained_after_seconds is not None
    assert report.scaled_in_after_seconds >= report.drained_after_seconds
    # every reading reached (moto's) CloudWatch as the Lambda would publish it
    assert report.datapoints_in_cloudwatch == report.readings
    decisions = " ".join(report.decisions)
    assert "(0 -> " in decisions and " -> 0" in decisions, decisions  # out from zero, in to zero
    graphs = report.graph_plane
    assert graphs is not None and graphs.registered == 2, text  # both nodes registered themselves
    assert graphs.loaded_rows == {"Company": 200, "Owns": 200}
    assert graphs.query_rows == [[200, 20.0]]  # queried through the node that holds it
    # One monitor cycle saw both nodes healthy; one slot of ten is taken by the demo graph.
    assert graphs.monitor["healthy"] == 2 and graphs.monitor["errors"] == 0
    assert (graphs.monitor["UsedSlots"], graphs.monitor["AvailableSlots"]) == (1.0, 9.0)
    assert "kuzu_instance_monitor full_maintenance" in text
    demo = report.demo
    assert demo is not None and demo.ok, (demo, text)
    tasks = ["create_graph", "stage_files", "materialize", "create_entity_graph", "detect_communities",
             "backup_graph"]  # fmt: skip
    assert [s.task for s in demo.steps] == tasks
    assert demo.rows_in_graph == demo.rows_in_files == sample.financial_dataset().rows()
    assert sum(demo.rows_in_files.values()) > 3000  # a few thousand rows
    assert demo.entity_rows == {"Company": 1, "Filing": 3, "Fact": 12, "Filed": 3, "Reports": 12, "Owns": 0}
    assert demo.nmi >= MIN_NMI and demo.communities >= 2
    assert demo.backup_recorded
    # Each operation held its estimate, then was charged at most that; the accounts lost exactly the charges.
    assert all(0 < (s.charged_micro or 0) <= s.reserved_micro for s in demo.steps)
    assert demo.balance_before_micro - demo.balance_after_micro == demo.charged_micro > 0
    assert demo.ledger_mismatches == 0
    for task in tasks:  # its progress was shown as it ran, and its credits
        assert f"[demo] {task}: 100.0% done" in text
        assert f"[demo] {task}: succeeded" in text and "credits held" in text
    lines = text.splitlines()
    assert not [line for line in lines if "[demo]" in line and not line.startswith("  [demo] ")]  # never cut
    # The registry's last hour replayed through the real handlers, every run ok.
    scheduled = report.scheduled
    assert scheduled is not None and scheduled.ok, (scheduled, text)
    assert scheduled.runs["ingestion_queue_processor"] == 12  # rate(5 minutes) over the hour
    assert scheduled.runs["kuzu_instance_monitor:metrics"] == 12
    assert scheduled.runs["credit_reservation_cleanup"] == 4  # cron(0/15 * * * ? *)
    assert scheduled.runs["pending_transaction_processor"] == 4
    assert scheduled.runs["job_watchdog"] == 1  # cron(50 * * * ? *)
    assert "worker_monitor" not in scheduled.runs  # the runner is the monitor
    assert "task API on http://127.0.0.1:" in text and "BEATLESS_API_TOKEN=" in text
    # The live view's last frame: scaled back in, every job and operation with its outcome, credits.
    assert "workers: 0 running, 0 busy, 0 protected, desired 0" in frame, frame
    assert re.search(r"│ credit_reservation_cleanup\s+│\s+4 │\s+0 │ ok \d+ ms", frame), frame
    for task in tasks:
        assert re.search(rf"│ {task}\s+│ \S+\s+│ succeeded │\s+100% │", frame), frame
    charged = f"{demo.charged_micro / 1_000_000:,.2f}"
    assert re.search(rf"credits: balance [\d,.]+, held 0.00, charged {re.escape(charged)}", frame), frame
    assert (tmp_path / "beatless-local.png").read_bytes()[:4] == b"\x89PNG" and report.plot_path
    assert json.loads((tmp_path / "pids.json").read_text()) == []  # every process it started, stopped


def test_the_demo_and_the_scheduled_jobs_need_a_graph_node_unless_they_are_skipped() -> None:
    for options in ({"graph_nodes": 0}, {"graph_nodes": 0, "demo": False}):
        with pytest.raises(InvalidInputError) as refused:
            LocalOptions(**options)  # type: ignore[arg-type]
        assert refused.value.field == "--graph-nodes"
    assert LocalOptions(graph_nodes=0, demo=False, schedule_speed=0).schedule_speed == 0
