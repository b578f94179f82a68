"""`beatless invoke`: any Lambda's handler run here as the console's Test button does — the
event from a file (default events/<name>/minimal.json) or JSON text, a context with the
function's deadline, the logs between START and END/REPORT lines, then the result; exit
status 1 when the handler raised, 2 for a bad command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from beatless.jobs import API_FUNCTIONS, DEPLOY_FUNCTIONS, JOBS

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "DATABASE_", "QUEUES"))}
    return subprocess.run(
        [sys.executable, "-m", "beatless.cli", "invoke", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**clean, **(env or {})},
    )  # fmt: skip


def result(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The JSON printed after the REPORT line."""
    lines = done.stdout.splitlines()
    (report,) = [i for i, line in enumerate(lines) if line.startswith("REPORT RequestId: ")]
    parsed: dict[str, object] = json.loads("\n".join(lines[report + 1 :]))
    return parsed


def test_the_task_api_answers_its_console_events(redis_url: str, dsn: str) -> None:
    catalogue = invoke("task_api")  # events/task_api/minimal.json: GET /tasks
    assert catalogue.returncode == 0, catalogue.stderr
    assert catalogue.stdout.startswith("START RequestId: ") and "END RequestId: " in catalogue.stdout
    assert "Memory Size: 512 MB" in catalogue.stdout
    answer = result(catalogue)
    assert answer["statusCode"] == 200 and "create_graph" in str(answer["body"])
    env = {"BROKER_URL": redis_url, "DATABASE_URL": dsn, "INSTANCE_REGISTRY_TABLE": "i",
           "GRAPH_REGISTRY_TABLE": "g", "UPLOADS_BUCKET": "u", "STAGING_BUCKET": "s"}  # fmt: skip
    bad = invoke("task_api", "--event", "events/task_api/bad_launch.json", env=env)
    assert bad.returncode == 0, bad.stderr  # the handler answered (a 422), it did not raise
    body = json.loads(str(result(bad)["body"]))
    assert result(bad)["statusCode"] == 422 and body["error"]["field"] == "params.graph_id"
    stats = invoke("task_api", "--event", "events/task_api/stats.json", env=env)
    assert result(stats)["statusCode"] == 200
    assert set(json.loads(str(result(stats)["body"]))["queues"]) == {"graph", "ingest", "default"}


def test_a_handler_that_raises_exits_1_with_the_console_error(dsn: str) -> None:
    # The task API without its broker: a deployment fault, raised (a 500 and an Errors alarm in AWS).
    settings = {"DATABASE_URL": dsn, "INSTANCE_REGISTRY_TABLE": "i", "GRAPH_REGISTRY_TABLE": "g",
                "UPLOADS_BUCKET": "u", "STAGING_BUCKET": "s"}  # fmt: skip
    done = invoke("task_api", "--event", "events/task_api/stats.json", env=settings)
    assert done.returncode == 1
    error = result(done)
    assert error["errorType"] == "ConfigurationError" and "BROKER_URL" in str(error["errorMessage"])
    assert error["stackTrace"]


def test_a_job_runs_with_its_logs_shown(dsn: str) -> None:
    done = invoke("credit_health_check", "--event-json", "{}", env={"DATABASE_URL": dsn})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    logs = lines[1 : next(i for i, line in enumerate(lines) if line.startswith("END RequestId"))]
    assert any('"service"' in line or '"_aws"' in line for line in logs)  # its JSON logs and EMF
    assert result(done)["job"] == "credit_health_check"


def test_bad_command_lines_exit_2_naming_what_is_wrong() -> None:
    unknown = invoke("no_such_lambda")
    assert unknown.returncode == 2 and "no Lambda 'no_such_lambda'" in unknown.stderr
    both = invoke("task_api", "--event", "x.json", "--event-json", "{}")
    assert both.returncode == 2 and "--event" in both.stderr
    missing = invoke("task_api", "--event", "events/task_api/nope.json")
    assert missing.returncode == 2 and "no file" in missing.stderr
    not_json = invoke("task_api", "--event-json", "{oops")
    assert not_json.returncode == 2 and "--event-json" in not_json.stderr


def test_every_lambda_has_console_events_and_every_mutating_job_a_dry_run() -> None:
    for name in [job.name for job in JOBS] + list(API_FUNCTIONS):
        assert (REPO / "events" / name / "minimal.json").is_file(), name
    for job in JOBS:
        if job.mutating:
            assert (REPO / "events" / job.name / "dry_run.json").is_file(), job.name
    assert set(DEPLOY_FUNCTIONS) == {"db_migrate"}  # run by CloudFormation on deploy; see the README


def test_every_invocation_in_one_process_shows_its_own_logs(dsn: str) -> None:
    """The scheduler loop invokes the same handlers again and again in one process."""
    from beatless.local.invoke import invoke as invoke_here

    runs = [invoke_here("credit_health_check", {}) for _ in range(3)]
    assert all(run.ok for run in runs), [run.error for run in runs]
    for run in runs:
        assert '"_aws"' in run.logs  # each run's own EMF line
        assert run.logs.count('"_aws"') == runs[0].logs.count('"_aws"')  # not the others'
