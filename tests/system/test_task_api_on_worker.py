"""The task API with a real worker: an operation launched through the API, followed over
server-sent events to its end, another revoked mid-run and retried to success (one
operation id, one charge); a task revoked while queued never runs; `/stats` shows the
worker. Real Celery worker process, PostgreSQL, Redis, graph node; AWS in moto's server."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from beatless import credits
from beatless.graphs.registry import Registries
from beatless.local.servers import GraphNodeServer
from tests.support.jobs import balance, graph
from tests.support.task_api import running_api
from tests.system.test_operations_on_worker import (  # noqa: F401 (dsn, graph_plane: fixtures)
    SCHEMA,
    dsn,
    graph_plane,
    ingestion_setup,
    operations_env,
    pool_children,
)
from tests.system.worker_procs import running_worker, wait_for

pytestmark = pytest.mark.slow
CREDIT = credits.MICRO_PER_CREDIT


def follow(http: httpx.Client, task_id: str, until_stage: str | None = None) -> list[dict[str, Any]]:
    """Progress events over SSE until the stream ends (or `until_stage` arrives)."""
    events: list[dict[str, Any]] = []
    with http.stream(
        "GET", f"/tasks/{task_id}/events", headers={"Accept": "text/event-stream"}, timeout=120
    ) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"] == "text/event-stream"
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                if kind == "end":
                    events.append({"end": json.loads(line[len("data: ") :])})
                    break
                events.append(json.loads(line[len("data: ") :]))
                if until_stage is not None and events[-1]["stage"] == until_stage:
                    break
    return events


@pytest.fixture
def api(redis_url: str, dsn: str, aws: str) -> Iterator[httpx.Client]:
    env = operations_env(redis_url, dsn)
    with running_api(env) as (_server, http):
        yield http


def test_launched_followed_over_sse_revoked_mid_run_and_retried_through_the_api(
    redis_url: str,
    dsn: str,
    graph_plane: tuple[Registries, GraphNodeServer],
    tmp_path: Path,
    api: httpx.Client,
) -> None:
    env = operations_env(redis_url, dsn, WORKER_QUEUES="ingest,graph", WORKER_CONCURRENCY="1",
                         WORKER_PRESENCE_SECONDS="0.5")  # fmt: skip
    params = ingestion_setup(dsn, graph_plane, env)  # the graph `fin` and an upload batch
    with psycopg.connect(dsn, autocommit=True) as conn:
        account = graph(conn, "g2", balance_micro=50 * CREDIT)
        fin_account = conn.execute("SELECT id FROM credit_accounts WHERE graph_id = 'fin'").fetchone()[0]
        fin_before = balance(conn, fin_account)
    with running_worker("api-ops", env, tmp_path) as worker:
        # Launched and followed to its end over server-sent events.
        body = {"task_type": "create_graph", "params": {"graph_id": "g2", "schema": SCHEMA}}
        launched = api.post("/tasks/launch", json=body)
        assert launched.status_code == 202, launched.text
        task = launched.json()
        events = follow(api, task["task_id"])
        assert [e.get("stage") for e in events[:-1]] == ["started", "place", "create", "activate", "done"]
        assert events[-1] == {"end": {"task_id": task["task_id"], "state": "SUCCESS"}}
        status = api.get(task["status_url"]).json()
        assert status["state"] == "SUCCESS" and status["result"]["graph_id"] == "g2"
        assert status["credits"] == {"estimated": 10.0, "charged": 10.0}
        assert status["progress"] == {"percent": 100.0, "stage": "done", "message": ""}
        assert status["started_at"] and status["finished_at"]
        # Resumed after the third event with Last-Event-ID: exactly the rest.
        rest = api.get(f"/tasks/{task['task_id']}/events", params={"after": events[2]["id"]}).json()
        assert [e["stage"] for e in rest["events"]] == ["activate", "done"] and rest["finished"]

        # Revoked while it runs: it stops at its next stage boundary.
        staging = api.post("/tasks/launch", json={"task_type": "stage_files", "params": params}).json()
        seen = follow(api, staging["task_id"], until_stage="fetch")
        assert seen[-1]["stage"] == "fetch"
        (child,) = pool_children(worker.pid)
        os.kill(child, signal.SIGSTOP)  # hold it inside "fetch" while the revoke arrives
        try:
            revoked = api.delete(f"/tasks/{staging['task_id']}")
        finally:
            os.kill(child, signal.SIGCONT)
        assert revoked.status_code == 202 and revoked.json()["revoke_requested"] is True
        ended = follow(api, staging["task_id"])
        assert ended[-1] == {"end": {"task_id": staging["task_id"], "state": "REVOKED"}}
        assert api.get(staging["status_url"]).json()["error"].startswith("operation")

        # Retried: a new task of the same operation, run to success and charged once.
        retried = api.post(f"/tasks/{staging['task_id']}/retry")
        assert retried.status_code == 202, retried.text
        retry = retried.json()
        assert retry["operation_id"] == staging["operation_id"] and retry["task_id"] != staging["task_id"]
        assert follow(api, retry["task_id"])[-1] == {"end": {"task_id": retry["task_id"], "state": "SUCCESS"}}
        done = api.get(retry["status_url"]).json()
        assert (
            done["state"] == "SUCCESS"
            and done["result"]["valid"] is True
            and done["retry_of"] == staging["task_id"]
        )
        stats = api.get("/stats").json()
        assert [w["name"] for w in stats["workers"]] == [worker.nodename]
        assert stats["workers"][0]["queues"] == ["ingest", "graph"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        holds = conn.execute(
            "SELECT operation_id, status FROM credit_reservations WHERE operation_id LIKE 'stage_files:%' "
            "ORDER BY created_at"
        ).fetchall()
        assert [h[1] for h in holds] == ["released", "committed"]  # the revoked attempt's, the retry's
        assert balance(conn, fin_account) == fin_before - int(done["credits"]["charged"] * CREDIT)
        assert balance(conn, account) == 40 * CREDIT
        assert credits.mismatches(conn) == []


def test_a_task_revoked_while_queued_never_runs(
    redis_url: str,
    dsn: str,
    graph_plane: tuple[Registries, GraphNodeServer],
    tmp_path: Path,
    api: httpx.Client,
) -> None:
    registries, _node = graph_plane
    with psycopg.connect(dsn, autocommit=True) as conn:
        graph(conn, "g3", balance_micro=50 * CREDIT)
    body = {"task_type": "create_graph", "params": {"graph_id": "g3", "schema": SCHEMA}}
    task = api.post("/tasks/launch", json=body).json()
    assert api.delete(f"/tasks/{task['task_id']}").json()["state"] == "REVOKED"
    env = operations_env(redis_url, dsn, WORKER_QUEUES="graph")
    import redis

    client = redis.Redis.from_url(redis_url)
    with running_worker("api-revoked", env, tmp_path):

        def stored() -> Any:
            raw = client.get(f"celery-task-meta-{task['task_id']}")
            meta = json.loads(raw) if raw else {}
            return meta if meta.get("status") in {"SUCCESS", "FAILURE", "REVOKED"} else None

        meta = wait_for("the worker to end the revoked task", stored, timeout=60)
    assert meta["status"] == "REVOKED"
    assert api.get(task["status_url"]).json()["state"] == "REVOKED"
    assert registries.graph("g3") is None
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM operations").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM credit_reservations").fetchone()[0] == 0
