"""Task protection core (`beatless.workers.protection`) against a real HTTP stand-in
for the ECS agent, with an injected clock: transitions, renewals,
debounce, failures and retries, decided exactly.

The same behaviour with a real worker process is in
``test_protection_worker.py``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from beatless import metrics
from beatless.local.servers import free_port
from beatless.workers.protection import (
    AgentClient,
    EmfWriter,
    ProtectionController,
    ProtectionPolicy,
    task_id_from_metadata,
)
from tests.system.worker_agent import TASK_ID, FakeAgent

POLICY = ProtectionPolicy(
    expires_minutes=10,
    renew_seconds=60,
    release_delay_seconds=5,
    retry_seconds=30,
    metrics_interval_seconds=60,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def agent() -> Iterator[FakeAgent]:
    with FakeAgent() as server:
        yield server


@pytest.fixture
def fresh_agent(agent: FakeAgent) -> FakeAgent:
    agent.mode = "ok"
    agent.hang_seconds = 1.5
    agent.calls.clear()
    agent.protected_until = None
    return agent


def make_controller(
    agent: FakeAgent, clock: Clock, policy: ProtectionPolicy = POLICY
) -> tuple[ProtectionController, io.StringIO]:
    out = io.StringIO()
    client = AgentClient(agent.agent_uri, connect_timeout=1, read_timeout=0.5, retry_delay=0.01)
    return ProtectionController(client, policy, EmfWriter("Test/Ns", out), TASK_ID, clock=clock), out


def emf_records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def bodies(agent: FakeAgent) -> list[dict[str, Any]]:
    return [call.body for call in agent.snapshot()]


def test_protect_on_busy_renew_while_busy_release_after_idle_delay(fresh_agent: FakeAgent) -> None:
    clock = Clock()
    controller, out = make_controller(fresh_agent, clock)

    controller.observe(False)
    assert bodies(fresh_agent) == []  # idle at start: no call

    controller.observe(True)
    assert bodies(fresh_agent) == [{"ProtectionEnabled": True, "ExpiresInMinutes": 10}]
    assert controller.protected and fresh_agent.protected

    for _ in range(5):  # polls inside the renewal interval make no calls
        clock.advance(10)
        controller.observe(True)
    assert len(bodies(fresh_agent)) == 1

    clock.advance(10)  # 60 s after protecting: renew, well before the 10 min expiry
    controller.observe(True)
    assert bodies(fresh_agent)[-1] == {"ProtectionEnabled": True, "ExpiresInMinutes": 10}
    assert len(bodies(fresh_agent)) == 2

    controller.observe(False)
    clock.advance(4.9)
    controller.observe(False)
    assert len(bodies(fresh_agent)) == 2  # inside the release delay
    clock.advance(0.1)
    controller.observe(False)
    assert bodies(fresh_agent)[-1] == {"ProtectionEnabled": False}
    assert not controller.protected and not fresh_agent.protected

    clock.advance(30)
    controller.observe(False)
    assert len(bodies(fresh_agent)) == 3  # idle stays quiet

    values = [r[metrics.TASK_PROTECTED] for r in emf_records(out)]
    assert values[0] == 0 and values[1:4] == [1, 1, 0]


def test_back_to_back_tasks_keep_one_protection(fresh_agent: FakeAgent) -> None:
    clock = Clock()
    controller, _ = make_controller(fresh_agent, clock)
    for busy in [True, False, True, False, True]:
        controller.observe(busy)
        clock.advance(1)  # gaps shorter than the 5 s release delay
    assert bodies(fresh_agent) == [{"ProtectionEnabled": True, "ExpiresInMinutes": 10}]


@pytest.mark.parametrize(
    ("mode", "reason", "attempts"),
    [
        ("blocked", "DEPLOYMENT_BLOCKED", 1),
        ("denied", "AccessDeniedException", 1),
        ("error500", "ServerException", 2),
        ("garbage", "HTTP502", 2),
    ],
)
def test_failed_protect_is_counted_and_retried_later(
    fresh_agent: FakeAgent, mode: Any, reason: str, attempts: int
) -> None:
    clock = Clock()
    controller, out = make_controller(fresh_agent, clock)
    fresh_agent.mode = mode

    controller.observe(True)
    assert len(fresh_agent.snapshot()) == attempts  # retried only when a second try may help
    assert not controller.protected
    assert controller.failures == {reason: 1}
    failure = [r for r in emf_records(out) if metrics.PROTECTION_FAILURES in r]
    assert failure[0][metrics.REASON_DIMENSION] == reason
    assert failure[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[metrics.REASON_DIMENSION]]

    clock.advance(29)
    controller.observe(True)
    assert len(fresh_agent.snapshot()) == attempts  # no hammering before the retry delay

    fresh_agent.mode = "ok"
    clock.advance(1)
    controller.observe(True)
    assert controller.protected and fresh_agent.protected


def test_timeout_leaves_state_unknown_and_idle_releases_it(fresh_agent: FakeAgent) -> None:
    clock = Clock()
    controller, _ = make_controller(fresh_agent, clock)
    fresh_agent.mode = "hang"  # answers after 1.5 s; the client gives up after 0.5 s

    controller.observe(True)
    assert controller.failures == {"Timeout": 1}
    assert controller.state == "unknown"

    fresh_agent.mode = "ok"
    clock.advance(31)
    controller.observe(False)
    clock.advance(5)
    controller.observe(False)
    # The hung request may have protected the task, so the idle worker clears it.
    assert bodies(fresh_agent)[-1] == {"ProtectionEnabled": False}
    assert controller.state == "unprotected"


def test_failed_renewals_let_the_protection_lapse_at_expiry(fresh_agent: FakeAgent) -> None:
    clock = Clock()
    policy = ProtectionPolicy(expires_minutes=1, renew_seconds=30, release_delay_seconds=5, retry_seconds=10)
    controller, out = make_controller(fresh_agent, clock, policy)
    controller.observe(True)
    fresh_agent.mode = "blocked"
    for _ in range(6):
        clock.advance(10)
        controller.observe(True)
    assert controller.state == "unprotected"  # 60 s passed without a successful renewal
    assert emf_records(out)[-1][metrics.TASK_PROTECTED] == 0


def test_shutdown_releases_a_held_protection(fresh_agent: FakeAgent) -> None:
    clock = Clock()
    controller, out = make_controller(fresh_agent, clock)
    controller.observe(True)
    controller.shutdown()
    assert bodies(fresh_agent)[-1] == {"ProtectionEnabled": False}
    assert not fresh_agent.protected
    assert emf_records(out)[-1][metrics.TASK_PROTECTED] == 0


def test_metric_is_repeated_while_nothing_changes(fresh_agent: FakeAgent) -> None:
    clock = Clock()
    controller, out = make_controller(fresh_agent, clock)
    for _ in range(7):
        controller.observe(False)
        clock.advance(20)
    # 140 s of idleness: one datapoint at start, then one per 60 s.
    assert [r[metrics.TASK_PROTECTED] for r in emf_records(out)] == [0, 0, 0]
    assert fresh_agent.snapshot() == []


def test_refused_connection_is_a_failure_not_an_exception() -> None:
    client = AgentClient(
        f"http://127.0.0.1:{free_port()}/api/x", connect_timeout=1, read_timeout=1, retry_delay=0
    )
    result = client.protect(5)
    assert not result.ok
    assert result.reason == "ConnectionRefused"
    assert result.attempts == 2


def test_emf_line_is_valid_embedded_metric_format() -> None:
    out = io.StringIO()
    EmfWriter("Beatless/Workers", out, clock=lambda: 1_700_000_000.5).task_protected("abc", True)
    record = json.loads(out.getvalue())
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert record["_aws"]["Timestamp"] == 1_700_000_000_500
    assert directive["Namespace"] == "Beatless/Workers"
    assert directive["Dimensions"] == [[metrics.TASK_ID_DIMENSION]]
    assert directive["Metrics"][0]["Name"] == metrics.TASK_PROTECTED
    assert directive["Metrics"][0]["StorageResolution"] == metrics.STORAGE_RESOLUTION_SECONDS
    assert record[metrics.TASK_ID_DIMENSION] == "abc" and record[metrics.TASK_PROTECTED] == 1


def test_task_id_comes_from_the_metadata_endpoint(agent: FakeAgent) -> None:
    assert task_id_from_metadata(agent.metadata_uri, "fallback-host") == TASK_ID
    assert (
        task_id_from_metadata(f"http://127.0.0.1:{free_port()}/v4/x", "fallback-host", 0.5) == "fallback-host"
    )
    assert task_id_from_metadata(None, "fallback-host") == "fallback-host"
