"""`beatless tasks ...` against the local task API (real PostgreSQL and Redis, no worker):
each command prints what the API answered; an API error exits 1 naming the field;
`follow` ends with the task's final state."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from beatless import credits
from beatless.cli import main
from tests.functional.test_task_api import SCHEMA, environment
from tests.support.jobs import graph
from tests.support.task_api import TOKEN, running_api


@pytest.fixture
def api_env(redis_url: str, dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with running_api(environment(redis_url, dsn)) as (server, _http):
        monkeypatch.setenv("BEATLESS_API_URL", server.url)
        monkeypatch.setenv("BEATLESS_API_TOKEN", TOKEN)
        yield


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_lists_launches_shows_revokes_retries_and_follows(
    api_env: None, conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "g1", balance_micro=50 * credits.MICRO_PER_CREDIT)
    code, out, _ = run(capsys, "tasks", "list")
    assert code == 0 and "create_graph" in out and "stage_files" in out
    params = json.dumps({"graph_id": "g1", "schema": SCHEMA})
    code, out, _ = run(capsys, "tasks", "launch", "create_graph", params, "--operation-id", "op-cli")
    assert code == 0
    task_id = json.loads(out)["task_id"]
    code, out, _ = run(capsys, "tasks", "status", task_id)
    assert code == 0 and json.loads(out)["state"] == "PENDING"
    code, out, _ = run(capsys, "tasks", "revoke", task_id)
    assert code == 0 and json.loads(out)["state"] == "REVOKED"
    code, out, _ = run(capsys, "tasks", "follow", task_id)
    assert code == 1 and f"{task_id}: REVOKED" in out  # it ended, not in SUCCESS
    code, out, _ = run(capsys, "tasks", "retry", task_id)
    assert code == 0 and json.loads(out)["operation_id"] == "op-cli" and json.loads(out)["task_id"] != task_id
    code, out, _ = run(capsys, "tasks", "stats")
    assert code == 0 and json.loads(out)["queues"]["graph"]["pending"] == 2


def test_an_api_error_exits_1_naming_the_field(
    api_env: None, conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "g1", balance_micro=50 * credits.MICRO_PER_CREDIT)
    code, _, err = run(capsys, "tasks", "launch", "create_graph", json.dumps({"graph_id": "g1"}))
    assert code == 1 and "HTTP 422 (params.schema)" in err
    code, _, err = run(capsys, "tasks", "status", "no-such-task")
    assert code == 1 and "HTTP 404 (task_id)" in err
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_without_a_token_the_cli_says_which_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BEATLESS_API_TOKEN", raising=False)
    code, _, err = run(capsys, "tasks", "list")
    assert code == 2 and "BEATLESS_API_TOKEN" in err
