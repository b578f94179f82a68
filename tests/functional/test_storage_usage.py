"""storage_usage_collector on a real PostgreSQL and S3 (moto), through its handler:
one snapshot per graph and hour with the bytes of each category, the hour a tick
records, graphs appearing and disappearing, dry runs, replays, 16 concurrent
runs, a run out of time, a source that fails, console and malformed events."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import storage_usage_collector
from beatless.aws import client, dynamodb
from beatless.errors import InvalidInputError
from beatless.graphs.registry import create_tables
from beatless.storage import S3PrefixUsage, collect_storage_usage
from tests.support.database import snapshot
from tests.support.jobs import (
    context,
    emf_documents,
    graph,
    run_concurrently,
    run_on_runtime,
    tick,
)
from tests.support.lambda_context import FakeLambdaContext

JOB = "storage_usage_collector"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
BUCKET = "beatless-customer-data"
T = datetime.fromisoformat("2026-03-10T09:05:00+00:00")  # the :05 tick of hour 09
HOUR = T.replace(minute=0)


@pytest.fixture
def s3(aws_inprocess: None, monkeypatch: pytest.MonkeyPatch, dsn: str) -> Iterator[Any]:
    monkeypatch.setenv("STORAGE_BUCKET", BUCKET)
    monkeypatch.delenv("GRAPH_DATA_DIR", raising=False)
    monkeypatch.delenv("GRAPH_REGISTRY_TABLE", raising=False)
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    yield s3


def put(s3: Any, key: str, size: int) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * size)


def run(event: Any, ctx: FakeLambdaContext | None = None) -> dict[str, Any]:
    return storage_usage_collector.handler(event, ctx or context())


def run_core(s3: Any, chunk_size: int, ctx: Any = None, event: Any = None) -> dict[str, Any]:
    work = functools.partial(
        collect_storage_usage, sources=[S3PrefixUsage(s3, BUCKET)], chunk_size=chunk_size
    )
    return run_on_runtime(JOB, event or tick(T), ctx or context(), work)


def snapshots(conn: psycopg.Connection) -> dict[tuple[str, datetime], tuple[int, int, int, int, int]]:
    rows = conn.execute(
        "SELECT graph_id, hour, s3_files_bytes, s3_tables_bytes, graph_bytes, subgraph_bytes, total_bytes "
        "FROM storage_usage_snapshots"
    ).fetchall()
    return {(r[0], r[1]): tuple(int(v) for v in r[2:]) for r in rows}  # type: ignore[misc]


def test_one_snapshot_per_graph_with_the_bytes_of_each_category(
    conn: psycopg.Connection,
    s3: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("g1", "g10", "empty", "gone", "gone-in-hour"):
        graph(conn, name)
    graph(conn, "born-in-hour", since=HOUR + timedelta(minutes=40))
    graph(conn, "born-later", since=HOUR + timedelta(hours=1))
    conn.execute("UPDATE graphs SET deleted_at = %s WHERE id = 'gone'", (HOUR,))
    conn.execute(
        "UPDATE graphs SET deleted_at = %s WHERE id = 'gone-in-hour'", (HOUR + timedelta(minutes=1),)
    )
    put(s3, "graphs/g1/files/report.pdf", 1000)
    put(s3, "graphs/g1/files/nested/deeper/data.csv", 234)
    put(s3, "graphs/g1/tables/facts/part-0.parquet", 5000)
    put(s3, "graphs/g1/tables/facts/part-1.parquet", 17)
    put(s3, "graphs/g1/backups/2026-03-09.lbug.zip", 300)  # any other category counts as files
    put(s3, "graphs/g1/readme.txt", 5)  # so does an object right under the graph's prefix
    put(s3, "graphs/g1/tables", 7)  # an object named like the category, not inside it: files
    put(s3, "graphs/g10/tables/t.parquet", 4096)  # "g10" is not inside "g1"
    put(s3, "graphs/born-in-hour/files/a", 10)
    put(s3, "graphs/gone/files/a", 99)  # deleted before the hour: not measured
    put(s3, "other/g1/files/a", 12345)  # outside the layout
    # The local runner's graph databases: g1 has a database and two subgraphs.
    (tmp_path / "g1" / "subgraphs" / "s1").mkdir(parents=True)
    (tmp_path / "g1" / "db.lbug").write_bytes(b"d" * 4000)
    (tmp_path / "g1" / "wal").write_bytes(b"w" * 96)
    (tmp_path / "g1" / "subgraphs" / "s1" / "db.lbug").write_bytes(b"s" * 700)
    (tmp_path / "g1" / "subgraphs" / "s2.lbug").write_bytes(b"s" * 300)
    (tmp_path / "g10.lbug").write_bytes(b"x")  # not "g10": a graph's database is <root>/<graph_id>
    monkeypatch.setenv("GRAPH_DATA_DIR", str(tmp_path))
    capsys.readouterr()

    summary = run(tick(T))

    assert summary["hour"] == "2026-03-10T09:00Z"
    assert summary["sources"] == [f"s3://{BUCKET}/graphs/", f"directory:{tmp_path}"]
    assert summary["counts"] == {"snapshots": 5, "snapshot_bytes": 1546 + 5017 + 4096 + 4096 + 1000 + 10}
    assert summary["remaining"] == 0 and summary["complete"] is True
    assert snapshots(conn) == {
        ("g1", HOUR): (1546, 5017, 4096, 1000, 11659),
        ("g10", HOUR): (0, 4096, 0, 0, 4096),
        ("empty", HOUR): (0, 0, 0, 0, 0),  # nothing stored: measured, 0 bytes
        ("gone-in-hour", HOUR): (0, 0, 0, 0, 0),  # existed during the hour
        ("born-in-hour", HOUR): (10, 0, 0, 0, 10),
    }
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["Snapshots"] == [5]
    assert (document["Remaining"], document["JobSucceeded"]) == ([0], [1])


def test_graph_bytes_come_from_the_graph_registry_as_deployed(
    conn: psycopg.Connection, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_tables(client("dynamodb"), "instances", "graph-registry")
    monkeypatch.setenv("INSTANCE_REGISTRY_TABLE", "instances")
    monkeypatch.setenv("GRAPH_REGISTRY_TABLE", "graph-registry")
    table = dynamodb().Table("graph-registry")
    statuses = ["active", "creating", "deleted", "orphaned"]
    expected = {}
    for n in range(230):  # more than one BatchGetItem (100 keys)
        graph_id = f"g{n:03d}"
        graph(conn, graph_id)
        if n % 5 == 4:
            expected[graph_id] = 0  # the registry does not know it
            continue
        status = statuses[n % 5 % 4]
        table.put_item(
            Item={"graph_id": graph_id, "instance_id": "i-1", "status": status, "size_bytes": n * 1000}
        )
        expected[graph_id] = n * 1000 if status in ("active", "creating") else 0  # no database any more
    put(s3, "graphs/g001/files/a", 7)

    summary = run(tick(T))

    assert summary["sources"] == [f"s3://{BUCKET}/graphs/", "graph_registry:graph-registry"]
    recorded = {graph_id: row[2] for (graph_id, _), row in snapshots(conn).items()}
    assert recorded == expected
    assert snapshots(conn)[("g001", HOUR)] == (7, 0, 1000, 0, 1007)


def test_the_registry_and_a_directory_cannot_both_measure_graphs(
    conn: psycopg.Connection, s3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    graph(conn, "g1")
    monkeypatch.setenv("GRAPH_REGISTRY_TABLE", "graph-registry")
    monkeypatch.setenv("GRAPH_DATA_DIR", str(tmp_path))
    with pytest.raises(InvalidInputError) as info:
        run(tick(T))
    assert info.value.field == "GRAPH_DATA_DIR"
    assert snapshots(conn) == {}


@pytest.mark.parametrize(
    ("scheduled", "hour"),
    [
        ("2026-03-10T09:05:00Z", "2026-03-10T09:00:00+00:00"),
        ("2026-03-10T00:05:00Z", "2026-03-10T00:00:00+00:00"),  # the first hour of a day
        ("2026-02-28T23:05:00Z", "2026-02-28T23:00:00+00:00"),  # the last hour of a month
        ("2026-03-10T09:59:59.999Z", "2026-03-10T09:00:00+00:00"),  # a very late delivery
    ],
)
def test_a_tick_records_the_hour_it_runs_in(
    conn: psycopg.Connection, s3: Any, scheduled: str, hour: str
) -> None:
    graph(conn, "g")
    put(s3, "graphs/g/files/a", 3)
    run({"scheduled_time": scheduled})
    assert snapshots(conn) == {("g", datetime.fromisoformat(hour)): (3, 0, 0, 0, 3)}


def test_first_run_ever_snapshots_its_own_hour_only(conn: psycopg.Connection, s3: Any) -> None:
    assert run(tick(T))["counts"] == {"snapshots": 0, "snapshot_bytes": 0}  # no graphs at all
    graph(conn, "g")
    summary = run(tick(T))
    assert summary["counts"]["snapshots"] == 1
    assert list(snapshots(conn)) == [("g", HOUR)]  # no back-filled hours: the past cannot be measured


def test_replays_of_one_tick_have_one_effect_and_the_next_hour_its_own(
    conn: psycopg.Connection, s3: Any
) -> None:
    graph(conn, "g")
    put(s3, "graphs/g/files/a", 100)
    first = run(tick(T, execution_id="a", attempt_number="1"))
    put(s3, "graphs/g/files/b", 50)  # grows before the replays arrive
    after_first = snapshot(conn)
    replays = [run(tick(T, execution_id=e, attempt_number=n)) for e, n in (("b", "2"), ("c", "3"))]
    assert first["counts"]["snapshots"] == 1
    assert [r["counts"]["snapshots"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first  # the first measurement stays
    assert run(tick(T + timedelta(hours=1)))["counts"]["snapshots"] == 1
    assert snapshots(conn) == {
        ("g", HOUR): (100, 0, 0, 0, 100),
        ("g", HOUR + timedelta(hours=1)): (150, 0, 0, 0, 150),
    }


def test_a_dry_run_measures_and_writes_nothing(
    conn: psycopg.Connection, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "a")
    graph(conn, "b")
    put(s3, "graphs/a/tables/t", 70)
    put(s3, "graphs/b/files/f", 30)
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(T, dry_run=True))
    assert summary["dry_run"] is True and summary["counts"] == {}
    assert (summary["would_snapshot"], summary["would_snapshot_bytes"]) == (2, 100)
    assert summary["remaining"] == 2
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []


def test_sixteen_simultaneous_runs_write_one_snapshot_per_graph(conn: psycopg.Connection, s3: Any) -> None:
    conn.execute("INSERT INTO users (id) VALUES ('owner')")
    conn.execute(
        "INSERT INTO graphs (id, owner_id, created_at) "
        "SELECT 'g' || lpad(i::text, 4, '0'), 'owner', '2026-01-01Z' FROM generate_series(1, 96) i"
    )
    for i in range(1, 97, 7):
        put(s3, f"graphs/g{i:04}/files/f", i)

    def one(i: int) -> dict[str, Any]:
        return run(tick(T)) if i % 2 else run_core(s3, chunk_size=8)

    summaries = run_concurrently(16, one)
    assert sum(s["counts"]["snapshots"] for s in summaries) == 96
    assert sum(s["counts"]["snapshot_bytes"] for s in summaries) == sum(range(1, 97, 7))
    rows = conn.execute("SELECT count(*), count(DISTINCT graph_id) FROM storage_usage_snapshots").fetchone()
    assert tuple(rows) == (96, 96)


def test_a_run_out_of_time_stops_between_chunks_and_the_next_run_finishes(
    conn: psycopg.Connection, s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(50):
        graph(conn, f"g{i:02}")
    capsys.readouterr()
    # 21 s left, 2 s less per look, 10 s margin: six chunks of 5, then it stops.
    first = run_core(s3, chunk_size=5, ctx=FakeLambdaContext(remaining_ms=21_000, shrink_ms=2_000))
    assert first["counts"]["snapshots"] == 30
    assert first["remaining"] == 20 and first["complete"] is False
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Remaining"] == [20]
    second = run_core(s3, chunk_size=5)
    assert second["counts"]["snapshots"] == 20 and second["remaining"] == 0
    assert len(snapshots(conn)) == 50


def test_a_source_that_fails_fails_the_run_and_writes_no_partial_snapshot(
    conn: psycopg.Connection, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph(conn, "g")
    monkeypatch.setenv("STORAGE_BUCKET", "no-such-bucket")
    with pytest.raises(Exception, match="NoSuchBucket"):
        run(tick(T))
    monkeypatch.setenv("STORAGE_BUCKET", BUCKET)
    monkeypatch.setenv("GRAPH_DATA_DIR", "/nonexistent/graphs")
    with pytest.raises(FileNotFoundError):
        run(tick(T))
    assert snapshots(conn) == {}


def test_the_environment_is_checked_naming_the_variable(
    conn: psycopg.Connection, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (
        ("STORAGE_BUCKET", ""),
        ("STORAGE_PREFIX", "graphs"),
        ("GRAPH_DATA_DIR", "relative/dir"),
    ):
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            with pytest.raises(InvalidInputError) as info:
                run(tick(T))
            assert info.value.field == name
    assert snapshots(conn) == {}
