"""The task API over HTTP on loopback (the local server running the Lambda's handler), with
real PostgreSQL and Redis and no worker: what a launch records and enqueues, idempotent
launches, the errors (each naming its field, each changing nothing), revoking a queued
task and retrying it, the catalogue and the stats."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis

from beatless import credits
from beatless.local.servers import RedisServer
from beatless.operations.catalogue import OPERATIONS
from beatless.queues.transport import TransportOptions
from beatless.workers import presence
from tests.support.jobs import graph
from tests.support.task_api import TOKEN, running_api

CREDIT = credits.MICRO_PER_CREDIT
SCHEMA = {"nodes": [{"name": "Company", "primary_key": "id", "properties": {"id": "STRING"}}]}


def environment(redis_url: str, dsn: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "QUEUES"))},
        "BROKER_URL": redis_url,
        "DATABASE_URL": dsn,
        "INSTANCE_REGISTRY_TABLE": "instances",
        "GRAPH_REGISTRY_TABLE": "graphs",
        "UPLOADS_BUCKET": "uploads",
        "STAGING_BUCKET": "staging",
    }


@pytest.fixture
def client(redis_url: str, dsn: str) -> Iterator[httpx.Client]:
    with running_api(environment(redis_url, dsn)) as (_server, http):
        yield http


def queued(redis_url: str, queue: str = "graph") -> list[dict[str, Any]]:
    """The messages waiting on `queue` (every priority list), oldest first."""
    client = redis.Redis.from_url(redis_url)
    messages = []
    for key in TransportOptions().queue_list_keys(queue):
        messages += [json.loads(m) for m in reversed(client.lrange(key, 0, -1))]
    return messages


def launch(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/tasks/launch", json={"task_type": "create_graph", **body})


def counts(conn: psycopg.Connection) -> tuple[int, int]:
    tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()
    holds = conn.execute("SELECT count(*) FROM credit_reservations").fetchone()
    assert tasks is not None and holds is not None
    return tasks[0], holds[0]


def test_the_catalogue_lists_every_operation_with_its_parameter_schema(client: httpx.Client) -> None:
    answer = client.get("/tasks")
    assert answer.status_code == 200
    tasks = {t["task_type"]: t for t in answer.json()["tasks"]}
    assert set(tasks) == {spec.name for spec in OPERATIONS}
    for spec in OPERATIONS:
        assert tasks[spec.name]["params_schema"] == spec.params.model_json_schema()
        assert tasks[spec.name]["queue"] == spec.queue
        assert tasks[spec.name]["time_limit_seconds"] == spec.time_limit


def test_a_launch_records_one_task_and_one_message_and_a_relaunch_returns_it(
    client: httpx.Client, conn: psycopg.Connection, redis_url: str
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    params = {"graph_id": "g1", "schema": SCHEMA}
    first = launch(client, params=params, operation_id="op-1", priority=8)
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["operation_id"] == "op-1" and body["created"] is True
    assert body["status_url"] == f"/tasks/{body['task_id']}"
    again = launch(client, params=params, operation_id="op-1", priority=8)
    assert again.status_code == 202
    assert again.json()["task_id"] == body["task_id"] and again.json()["created"] is False
    (message,) = queued(redis_url)  # one message for the two launches
    assert message["headers"]["id"] == body["task_id"]
    assert message["headers"]["task"] == "beatless.create_graph"
    assert message["properties"]["priority"] == 2  # product 8 -> Celery 2
    status = client.get(body["status_url"]).json()
    assert status["state"] == "PENDING" and status["operation_id"] == "op-1"
    assert status["priority"] == 8 and status["queue"] == "graph" and status["progress"] is None
    # No operation id: derived from the task and its parameters, so the same request is the same task.
    derived = [
        launch(client, params={"graph_id": "g1", "schema": SCHEMA, "tier": "standard"}) for _ in range(2)
    ]
    assert derived[0].status_code == 422  # (tier is no parameter of create_graph)
    plain = [launch(client, params={"schema": SCHEMA, "graph_id": "g1"}) for _ in range(2)]
    assert plain[0].status_code == plain[1].status_code == 202
    assert plain[0].json()["task_id"] == plain[1].json()["task_id"]
    assert plain[0].json()["operation_id"].startswith("create_graph:")
    assert len(queued(redis_url)) == 2


GOOD = {"graph_id": "g1", "schema": SCHEMA}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "make_coffee", "params": {}}, "task_type"),
        ({"task_type": "create_graph", "params": {**GOOD, "schema": {"nodes": []}}}, "params.schema.nodes"),
        ({"task_type": "create_graph", "params": {**GOOD, "graph_id": "no spaces"}}, "params.graph_id"),
        ({"task_type": "create_graph", "params": GOOD, "priority": 11}, "priority"),
        ({"task_type": "create_graph", "params": GOOD, "operation_id": "a b"}, "operation_id"),
        ({"task_type": "create_graph", "params": GOOD, "colour": "red"}, "colour"),
        ({"params": {"graph_id": "g1"}}, "task_type"),
        ({"task_type": "create_graph", "params": [1, 2]}, "params"),
        ({"task_type": "create_graph", "params": {**GOOD, "graph_id": "nobody"}}, "params.graph_id"),
    ],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_field_and_changes_nothing(
    client: httpx.Client, conn: psycopg.Connection, redis_url: str, body: dict[str, Any], field: str
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    answer = client.post("/tasks/launch", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field, answer.json()
    assert counts(conn) == (0, 0)
    assert queued(redis_url) == []


def test_a_body_that_is_not_json_is_a_422(client: httpx.Client, conn: psycopg.Connection) -> None:
    answer = client.post("/tasks/launch", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "body"
    assert counts(conn) == (0, 0)


def test_an_account_without_the_credits_is_refused_402_before_anything_is_enqueued(
    client: httpx.Client, conn: psycopg.Connection, redis_url: str
) -> None:
    graph(conn, "poor", balance_micro=9 * CREDIT)  # create_graph costs 10
    answer = launch(client, params={"graph_id": "poor", "schema": SCHEMA})
    assert answer.status_code == 402, answer.text
    assert answer.json()["error"]["field"] == "params.graph_id"
    assert "10" in answer.json()["error"]["message"] and "9" in answer.json()["error"]["message"]
    assert counts(conn) == (0, 0) and queued(redis_url) == []


def test_an_operation_id_reused_for_other_parameters_is_a_409(
    client: httpx.Client, conn: psycopg.Connection, redis_url: str
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    assert launch(client, params={"graph_id": "g1", "schema": SCHEMA}, operation_id="op").status_code == 202
    other = {
        "graph_id": "g1",
        "schema": {"nodes": [{"name": "X", "primary_key": "k", "properties": {"k": "INT64"}}]},
    }
    answer = launch(client, params=other, operation_id="op")
    assert answer.status_code == 409 and answer.json()["error"]["field"] == "operation_id"
    assert counts(conn) == (1, 0) and len(queued(redis_url)) == 1


def test_a_queued_task_revoked_shows_revoked_and_its_retry_is_a_new_task_of_the_same_operation(
    client: httpx.Client, conn: psycopg.Connection, redis_url: str
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    task = launch(client, params={"graph_id": "g1", "schema": SCHEMA}, operation_id="op-r").json()
    assert client.post(f"/tasks/{task['task_id']}/retry").status_code == 409  # PENDING is not retried
    revoked = client.delete(f"/tasks/{task['task_id']}")
    assert revoked.status_code == 202 and revoked.json()["state"] == "REVOKED"
    assert client.delete(f"/tasks/{task['task_id']}").status_code == 202  # again: the same
    status = client.get(task["status_url"]).json()
    assert status["state"] == "REVOKED" and status["revoke_requested"] is True
    retried = client.post(f"/tasks/{task['task_id']}/retry")
    assert retried.status_code == 202, retried.text
    retry = retried.json()
    assert retry["task_id"] != task["task_id"] and retry["operation_id"] == "op-r" and retry["created"]
    again = client.post(f"/tasks/{task['task_id']}/retry").json()
    assert again["task_id"] == retry["task_id"] and again["created"] is False
    new = client.get(retry["status_url"]).json()
    assert new["state"] == "PENDING" and new["retry_of"] == task["task_id"]
    # A relaunch of the operation id now answers with its newest task.
    assert (
        launch(client, params={"graph_id": "g1", "schema": SCHEMA}, operation_id="op-r").json()["task_id"]
        == retry["task_id"]
    )
    assert [m["headers"]["id"] for m in queued(redis_url)] == [task["task_id"], retry["task_id"]]


def test_unknown_tasks_are_404_and_wrong_methods_405_with_allow(client: httpx.Client) -> None:
    for method, path in [("GET", "/tasks/nope"), ("DELETE", "/tasks/nope"), ("POST", "/tasks/nope/retry"),
                         ("GET", "/tasks/nope/events")]:  # fmt: skip
        answer = client.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["field"] == "task_id"
    wrong = client.put("/tasks/launch", json={})
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    read = client.get("/tasks/launch")  # not a task called "launch"
    assert read.status_code == 405 and read.headers["Allow"] == "POST"
    assert client.get("/nowhere").status_code == 404


def test_events_page_with_after_and_refuse_a_malformed_position(
    client: httpx.Client, conn: psycopg.Connection
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    task = launch(client, params={"graph_id": "g1", "schema": SCHEMA}).json()
    page = client.get(f"/tasks/{task['task_id']}/events").json()
    assert page["events"] == [] and page["finished"] is False and page["state"] == "PENDING"
    bad = client.get(f"/tasks/{task['task_id']}/events", params={"after": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "after"


def test_a_request_without_the_token_is_401(redis_url: str, dsn: str) -> None:
    with running_api(environment(redis_url, dsn)) as (server, _http):
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            answer = httpx.get(f"{server.url}/tasks", headers=headers)
            assert answer.status_code == 401 and answer.json()["error"]["field"] == "Authorization"


def test_stats_show_each_queue_the_live_workers_and_recent_failures(
    client: httpx.Client, conn: psycopg.Connection, redis_url: str
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    launch(client, params={"graph_id": "g1", "schema": SCHEMA})
    r = redis.Redis.from_url(redis_url)
    presence.publish(r, "w1@host", tasks=1, protected=True, queues=["graph"])
    presence.publish(r, "w0@host", tasks=0, protected=False, queues=["graph", "ingest"])
    presence.publish(r, "gone@host", tasks=0, protected=None, queues=["graph"], now=0)  # long silent
    account = conn.execute("SELECT id FROM credit_accounts").fetchone()[0]
    conn.execute(
        "INSERT INTO operations (id, task, params, account_id, estimated_micro, status, error, finished_at) "
        "VALUES ('op-f', 'stage_files', '{}', %s, 0, 'failed', 'boom', now())",
        (account,),
    )
    stats = client.get("/stats").json()
    assert stats["queues"]["graph"] == {"pending": 1, "reserved": 0}
    assert stats["queues"]["ingest"] == {"pending": 0, "reserved": 0}
    assert [(w["name"], w["state"], w["protected"]) for w in stats["workers"]] == [
        ("w0@host", "idle", False),
        ("w1@host", "busy", True),
    ]
    assert r.hkeys(presence.KEY) and b"gone@host" not in r.hkeys(presence.KEY)  # the stale line removed
    assert [(f["operation_id"], f["error"]) for f in stats["recent_failures"]] == [("op-f", "boom")]


def test_redis_down_at_launch_is_a_503_and_the_relaunch_sends_the_message(
    own_redis: RedisServer, dsn: str, conn: psycopg.Connection
) -> None:
    graph(conn, "g1", balance_micro=50 * CREDIT)
    with running_api(environment(own_redis.url, dsn)) as (_server, http):
        own_redis.stop()
        try:
            down = launch(http, params={"graph_id": "g1", "schema": SCHEMA}, operation_id="op-d")
        finally:
            own_redis.start()
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"] == "1"
        up = launch(http, params={"graph_id": "g1", "schema": SCHEMA}, operation_id="op-d")
        assert up.status_code == 202, up.text
        assert [m["headers"]["id"] for m in queued(own_redis.url)] == [up.json()["task_id"]]


def start_attempt(conn: psycopg.Connection, task: dict[str, Any], lease_seconds: float = 60) -> Any:
    """What a worker does first with the task's message (`records.start`, the real call)."""
    from datetime import timedelta

    from beatless.operations import records
    from beatless.operations.catalogue import operation

    row = conn.execute("SELECT params FROM tasks WHERE id = %s", (task["task_id"],)).fetchone()
    account = conn.execute(
        "SELECT id FROM credit_accounts WHERE graph_id = %s", (row[0]["graph_id"],)
    ).fetchone()
    return records.start(
        conn, operation_id=task["operation_id"], task="create_graph", params=row[0], account_id=account[0],
        estimated_micro=10 * CREDIT, task_id=task["task_id"], lease=timedelta(seconds=lease_seconds),
        hold_for=timedelta(seconds=operation("create_graph").hold_seconds),
    )  # fmt: skip


def test_a_revoked_task_whose_worker_died_ends_revoked_and_can_be_retried(
    client: httpx.Client, conn: psycopg.Connection
) -> None:
    from beatless.operations import launches, records

    graph(conn, "g1", balance_micro=50 * CREDIT)
    task = launch(client, params=GOOD, operation_id="op-dead").json()
    start_attempt(conn, task, lease_seconds=0.2)  # a worker took it... and died (its lease lapses)
    assert client.get(task["status_url"]).json()["state"] == "PROGRESS"
    revoked = client.delete(f"/tasks/{task['task_id']}").json()
    import time

    time.sleep(0.3)
    assert client.get(task["status_url"]).json()["state"] == "REVOKED"  # not PROGRESS for good
    # Its message comes back (acks_late): the worker ends the dead attempt instead of running it.
    with pytest.raises(launches.TaskRevokedError):
        start_attempt(conn, task)
    record = records.get(conn, "op-dead")
    assert record is not None and record.status == "cancelled" and revoked["revoke_requested"]
    holds = conn.execute("SELECT status FROM credit_reservations WHERE operation_id = 'op-dead'").fetchall()
    assert holds == [("released",)]
    assert client.post(f"/tasks/{task['task_id']}/retry").status_code == 202


def test_retrying_again_returns_the_retry_even_when_its_hold_took_the_credits(
    client: httpx.Client, conn: psycopg.Connection
) -> None:
    graph(conn, "g1", balance_micro=15 * CREDIT)  # create_graph holds 10
    task = launch(client, params=GOOD, operation_id="op-rr").json()
    client.delete(f"/tasks/{task['task_id']}")
    first = client.post(f"/tasks/{task['task_id']}/retry").json()
    start_attempt(conn, first)  # the retry runs and holds 10 of the 15
    again = client.post(f"/tasks/{task['task_id']}/retry")
    assert again.status_code == 202 and again.json()["task_id"] == first["task_id"]


def test_an_operation_id_another_producer_started_with_other_parameters_is_a_409(
    client: httpx.Client, conn: psycopg.Connection
) -> None:
    from datetime import timedelta

    from beatless.operations import records

    account = graph(conn, "g1", balance_micro=50 * CREDIT)
    records.start(
        conn, operation_id="op-other", task="delete_graph", params={"graph_id": "g1"}, account_id=account,
        estimated_micro=0, task_id=None, lease=timedelta(seconds=60), hold_for=timedelta(seconds=60),
    )  # fmt: skip
    answer = launch(client, params=GOOD, operation_id="op-other")
    assert answer.status_code == 409 and answer.json()["error"]["field"] == "operation_id"
    assert counts(conn)[0] == 0


def test_a_tasks_events_are_its_own(client: httpx.Client, conn: psycopg.Connection, redis_url: str) -> None:
    from beatless.operations.progress import ProgressStream

    graph(conn, "g1", balance_micro=50 * CREDIT)
    task = launch(client, params=GOOD, operation_id="op-ev").json()
    client.delete(f"/tasks/{task['task_id']}")
    retry = client.post(f"/tasks/{task['task_id']}/retry").json()
    stream = ProgressStream(redis.Redis.from_url(redis_url), "op-ev")
    stream.publish(state="running", stage="one", percent=10, message="", attempt=1, task_id=task["task_id"])
    stream.publish(state="running", stage="two", percent=20, message="", attempt=2, task_id=retry["task_id"])
    first = client.get(f"/tasks/{task['task_id']}/events").json()
    second = client.get(f"/tasks/{retry['task_id']}/events").json()
    assert [e["stage"] for e in first["events"]] == ["one"]
    assert [e["stage"] for e in second["events"]] == ["two"]
    assert first["next_after"] == second["next_after"]  # both read past the whole stream


def test_stats_with_redis_down_is_a_503(own_redis: RedisServer, dsn: str) -> None:
    with running_api(environment(own_redis.url, dsn)) as (_server, http):
        own_redis.stop()
        try:
            answer = http.get("/stats")
        finally:
            own_redis.start()
        assert answer.status_code == 503 and "127.0.0.1" not in answer.text  # no internal address
