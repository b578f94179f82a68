"""README command 1: the local system starts graph nodes that register themselves,
places, loads and queries a graph on one and runs a graph monitor cycle; it scales real
workers out from zero on a burst, drains it with every task applied exactly once, and
scales back in."""

from __future__ import annotations

import io

from beatless.local.runner import LocalOptions, run


def test_local_run_scales_out_drains_and_scales_in() -> None:
    out = io.StringIO()
    report = run(
        LocalOptions(tasks=24, steps=1, step_seconds=0.3, sample_interval_seconds=1.0, max_workers=3,
                     timeout_seconds=240),
        out=out,
    )  # fmt: skip
    text = out.getvalue()
    assert report.ok, text
    assert report.applied == 24 and report.total == 24  # nothing lost, nothing applied twice
    assert report.failed_readings == 0
    assert 1 <= report.peak_workers <= 3
    assert report.first_worker_after_seconds is not None
    assert report.scaled_in_after_seconds is not None  # back to zero workers once idle
    assert report.drained_after_seconds is not None
    assert report.scaled_in_after_seconds >= report.drained_after_seconds
    # every reading reached (moto's) CloudWatch as the Lambda would publish it
    assert report.datapoints_in_cloudwatch == report.readings
    assert "scale_out" in text and "scale_in" in text
    graphs = report.graph_plane
    assert graphs is not None and graphs.registered == 2, text  # both nodes registered themselves
    assert graphs.loaded_rows == {"Company": 200, "Owns": 200}
    assert graphs.query_rows == [[200, 20.0]]  # queried through the node that holds it
    # One monitor cycle saw both nodes healthy; one slot of ten is taken by the demo graph.
    assert graphs.monitor["healthy"] == 2 and graphs.monitor["errors"] == 0
    assert (graphs.monitor["UsedSlots"], graphs.monitor["AvailableSlots"]) == (1.0, 9.0)
    assert "kuzu_instance_monitor full_maintenance" in text
