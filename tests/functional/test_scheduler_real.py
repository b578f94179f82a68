"""The scheduler loop invoking the real handlers (`beatless invoke`'s path) against a
real PostgreSQL: an accelerated simulated hour fires each database job at its registry
times, and each run answers for the time it was fired for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from beatless.jobs import job
from beatless.local.invoke import invoke
from beatless.local.scheduler import SchedulerLoop, SimulatedClock


def test_an_accelerated_hour_fires_the_real_handlers_at_their_times(dsn: str) -> None:
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    jobs = [job("credit_reservation_cleanup"), job("pending_transaction_processor")]

    loop = SchedulerLoop(
        jobs, lambda name, event: invoke(name, event).outcome, SimulatedClock(start, speed=3600 * 20)
    )
    runs = loop.run(start + timedelta(hours=1))
    assert loop.counts() == {"credit_reservation_cleanup": 4, "pending_transaction_processor": 4}
    assert all(run.ok for run in runs), [run.result for run in runs if not run.ok]
    for run in runs:
        assert run.result["job"] == run.fire.job
        assert run.result["scheduled_time"] == run.fire.event()["scheduled_time"]
        assert run.result["clamped"] is False  # a past time: the run is for exactly it
    minutes = sorted({run.fire.at.minute for run in runs if run.fire.job == "pending_transaction_processor"})
    assert minutes == [7, 22, 37, 52]
