"""Several readings per invocation, on a fixed grid, within the Lambda's time.

The monitor core runs against a real Redis and CloudWatch in moto; only time
is injected (a clock whose sleep advances it), so a 10 s interval costs
nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from depth_lambda import PutMetricDataCalls, totals

from beatless import metrics
from beatless.local.servers import RedisServer, free_port
from beatless.monitor import Clock, MetricsPublishError, Monitor, MonitorFailedError, Reading
from beatless.queues import Broker
from beatless.queues.transport import TransportOptions


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.epoch = datetime.now(UTC).replace(microsecond=0)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    @property
    def clock(self) -> Clock:
        return Clock(
            monotonic=lambda: self.t, sleep=self.sleep, now=lambda: self.epoch + timedelta(seconds=self.t)
        )

    def at(self, seconds: float) -> datetime:
        return self.epoch + timedelta(seconds=seconds)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def cloudwatch(aws_inprocess: None) -> Iterator[Any]:
    yield boto3.client("cloudwatch")


def monitor(url: str, cloudwatch: Any, fake_time: FakeTime, queues: tuple[str, ...] = ("graph",)) -> Monitor:
    return Monitor(Broker(url, queues, TransportOptions()), cloudwatch, clock=fake_time.clock)


def published_at(calls: PutMetricDataCalls) -> list[datetime]:
    return [call["MetricData"][0]["Timestamp"] for call in calls.calls]


def test_readings_on_a_fixed_grid_one_put_metric_data_each(
    redis_url: str, cloudwatch: Any, fake_time: FakeTime
) -> None:
    calls = PutMetricDataCalls().attach(cloudwatch)

    summary = monitor(redis_url, cloudwatch, fake_time).run(3, 10)

    assert summary.readings == 3
    assert len(calls.calls) == 3
    assert published_at(calls) == [fake_time.at(0), fake_time.at(10), fake_time.at(20)]
    assert fake_time.sleeps == [10, 10]
    assert totals(cloudwatch, metrics.MONITOR_HEARTBEAT) == (3, 3.0)


def test_stops_early_when_the_lambda_is_about_to_time_out(
    redis_url: str, cloudwatch: Any, fake_time: FakeTime
) -> None:
    calls = PutMetricDataCalls().attach(cloudwatch)
    deadline = 25.0  # seconds of Lambda time at the start

    summary = monitor(redis_url, cloudwatch, fake_time).run(
        6, 10, remaining_ms=lambda: int((deadline - fake_time.t) * 1000), reserve_seconds=8
    )

    # at t=10, 15 s are left: not enough to wait 10 s and keep 8 s spare
    assert summary.readings == 2
    assert published_at(calls) == [fake_time.at(0), fake_time.at(10)]


def test_a_reading_that_overruns_its_slot_skips_the_slot(
    redis_url: str, cloudwatch: Any, fake_time: FakeTime
) -> None:
    calls = PutMetricDataCalls().attach(cloudwatch)

    def slow_first_publish(**_: Any) -> None:
        if len(calls.calls) == 1:
            fake_time.t += 15  # CloudWatch took 15 s to answer

    cloudwatch.meta.events.register("before-call.cloudwatch.PutMetricData", slow_first_publish)

    summary = monitor(redis_url, cloudwatch, fake_time).run(4, 10)

    # slot 1 (t=10) passed during the slow call; the grid is kept, not crowded
    assert published_at(calls) == [fake_time.at(0), fake_time.at(20), fake_time.at(30)]
    assert summary.readings == 3


def test_redis_lost_mid_run_stops_depth_counts_errors_and_fails_the_run(
    own_redis: RedisServer, cloudwatch: Any, fake_time: FakeTime
) -> None:
    def after(reading: Reading) -> None:
        if reading.ok:
            own_redis.kill()

    with pytest.raises(MonitorFailedError, match="2 of 3 readings failed") as info:
        monitor(own_redis.url, cloudwatch, fake_time).run(3, 10, on_reading=after)

    assert info.value.summary.readings == 3
    assert totals(cloudwatch, metrics.PENDING_TASKS, "graph") == (1, 0.0)  # the one real reading
    assert totals(cloudwatch, metrics.MONITOR_HEARTBEAT) == (1, 1.0)
    assert totals(cloudwatch, metrics.MONITOR_ERRORS) == (3, 2.0)


def test_more_than_a_thousand_metrics_are_split_into_calls_of_at_most_1000(
    redis_url: str, cloudwatch: Any, fake_time: FakeTime
) -> None:
    calls = PutMetricDataCalls().attach(cloudwatch)
    queues = tuple(f"q{i}" for i in range(501))  # 2 per queue + heartbeat + errors = 1004

    monitor(redis_url, cloudwatch, fake_time, queues).run(1, 10)

    assert [len(call["MetricData"]) for call in calls.calls] == [1000, 4]


def test_an_unreachable_cloudwatch_raises_at_once(
    redis_url: str, aws_inprocess: None, fake_time: FakeTime
) -> None:
    unreachable = boto3.client(
        "cloudwatch",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}),
    )

    with pytest.raises(MetricsPublishError):
        monitor(redis_url, unreachable, fake_time).run(3, 10)
    assert fake_time.sleeps == []  # no further reading was attempted
