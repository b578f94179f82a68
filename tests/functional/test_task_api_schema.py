"""schemathesis against the local task API, from the OpenAPI document it serves: no
server error, no answer that contradicts the document (status, content type, headers,
body), 405 with Allow for every undocumented method, and every 4xx names the field
at fault (422, 402, 409, 415) or the missing thing (404 task, 401 token).

The heuristic "schema-valid request rejected" is left out: a launch is also checked
against things JSON Schema cannot say (the graph exists and pays; a schema's primary key
is one of its properties), and those are 4xx naming the field — as this test checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from beatless import credits
from beatless.local.servers import PostgresServer
from tests.functional.test_task_api import environment
from tests.support.database import migrated_database
from tests.support.jobs import graph
from tests.support.task_api import TOKEN, running_api

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api_url(redis_server: object, postgres_server: PostgresServer) -> Iterator[str]:
    with migrated_database(postgres_server) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            graph(conn, "g1", balance_micro=1_000_000 * credits.MICRO_PER_CREDIT)
        with running_api(environment(redis_server.url, dsn)) as (server, _http):  # type: ignore[attr-defined]
            yield server.url


def operations(api_url: str) -> list[Any]:
    loaded = schemathesis.openapi.from_url(f"{api_url}/openapi.json", headers=AUTH)
    return [result.ok() for result in loaded.get_all_operations()]


def check(case: schemathesis.Case) -> None:
    response = case.call(headers=AUTH)
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if 400 <= response.status_code < 500 and response.status_code != 405:
        error = response.json()["error"]
        assert error["message"], response.text
        assert error["field"], (case.method, case.path, response.status_code, response.text)


@pytest.mark.parametrize("index", range(7))
def test_the_api_answers_as_its_document_says(api_url: str, index: int) -> None:
    found = operations(api_url)
    assert len(found) == 7  # every route of the document is tested
    operation = found[index]

    @given(case=operation.as_strategy())
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: schemathesis.Case) -> None:
        check(case)

    run()


def test_schemathesis_run_finds_nothing(api_url: str) -> None:
    """The CLI's whole run — coverage (undocumented methods, malformed bodies and content
    types), fuzzing and stateful sequences following the document's links — finds nothing."""
    import subprocess
    import sys
    from pathlib import Path

    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [str(st), "run", f"{api_url}/openapi.json", "-H", f"Authorization: {AUTH['Authorization']}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--max-examples", "15",
         "--seed", "20261207", "--no-color"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
