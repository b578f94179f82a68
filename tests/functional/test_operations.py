"""The operations runtime (`beatless.operations`) with the graph operations, in process:
real PostgreSQL (operations, credits), real Redis (progress streams), a real graph node
process (LadybugDB) registered in moto's DynamoDB.

An operation holds its estimate before any work and is charged once, whatever delivers
it again; an account without credits is refused with nothing done; bad parameters are
refused naming the field; a cancellation stops it at the next stage boundary with the
graph consistent; an attempt that died is taken over; a Redis that cannot take progress
never fails the work.
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from typing import Any

import boto3
import psycopg
import pytest
import redis

from beatless import credits
from beatless.credits.errors import IdempotencyConflictError, InsufficientCreditsError
from beatless.errors import InvalidInputError
from beatless.graphs.registry import GraphStatus, Registries
from beatless.local.servers import GraphNodeServer, free_port
from beatless.operations import records
from beatless.operations.catalogue import operation
from beatless.operations.ids import derive_operation_id
from beatless.operations.progress import ProgressStream
from beatless.operations.resources import OperationResources
from beatless.operations.runtime import OperationCancelledError, run_operation
from tests.support.jobs import balance, graph
from tests.support.operations import (  # noqa: F401 (node, registries, resources: fixtures)
    BUCKET,
    KEY,
    answers,
    environment,
    node,
    node_databases,
    put_csv,
    registries,
    resources,
)

pytestmark = pytest.mark.slow

CREDIT = credits.MICRO_PER_CREDIT
SCHEMA = {
    "nodes": [{"name": "Company", "primary_key": "id", "properties": {"id": "STRING", "name": "STRING"}}],
    "relationships": [
        {"name": "Owns", "from": "Company", "to": "Company", "properties": {"share": "DOUBLE"}}
    ],
}


def create(graph_id: str = "g1", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"graph_id": graph_id, "schema": schema or SCHEMA}


def held_and_committed(conn: psycopg.Connection, account: int) -> list[tuple[str, str, int, int | None]]:
    return conn.execute(
        "SELECT operation_id, status, amount_micro, consumed_micro FROM credit_reservations "
        "WHERE account_id = %s ORDER BY id",
        (account,),
    ).fetchall()


def test_create_graph_holds_then_charges_once_and_reports_its_stages_in_order(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, node: GraphNodeServer
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)
    seen: list[str] = []
    outcome = run_operation(
        operation("create_graph"), create(), resources=resources, task_id="t-1",
        report=lambda meta: seen.append(meta["stage"]),
    )  # fmt: skip
    assert outcome.status == "succeeded" and not outcome.replayed and outcome.attempt == 1
    assert outcome.charged_micro == 10 * CREDIT
    assert registries.graph("g1").status is GraphStatus.ACTIVE
    assert node_databases(node) == ["g1"]
    assert balance(conn, account) == 90 * CREDIT
    op_id = derive_operation_id("create_graph", {"graph_id": "g1", "schema": {**SCHEMA}})
    assert outcome.operation_id == op_id
    assert held_and_committed(conn, account) == [(op_id, "committed", 10 * CREDIT, 10 * CREDIT)]
    assert seen == ["started", "place", "create", "activate", "done"]
    events = ProgressStream(resources.progress_client(), op_id).read()
    assert [e.stage for e in events] == seen
    assert [e.state for e in events][-1] == "succeeded" and events[-1].percent == 100
    ids = [tuple(map(int, e.id.split("-"))) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    record = records.get(conn, op_id)
    assert record is not None and record.status == "succeeded" and record.result == outcome.result

    again = run_operation(operation("create_graph"), create(), resources=resources, task_id="t-2")
    assert again.replayed and again.result == outcome.result and again.charged_micro == 10 * CREDIT
    assert balance(conn, account) == 90 * CREDIT  # delivered twice, charged once
    assert len(held_and_committed(conn, account)) == 1


def test_an_account_without_the_credits_is_refused_before_any_work(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, node: GraphNodeServer
) -> None:
    account = graph(conn, "g1", balance_micro=5 * CREDIT)  # create_graph holds 10
    with pytest.raises(InsufficientCreditsError) as refused:
        run_operation(operation("create_graph"), create(), resources=resources)
    assert refused.value.field == "amount_micro"
    assert registries.graph("g1") is None and node_databases(node) == []
    assert conn.execute("SELECT count(*) FROM operations").fetchone()[0] == 0
    assert held_and_committed(conn, account) == [] and balance(conn, account) == 5 * CREDIT


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"graph_id": "g 1", "schema": SCHEMA}, "params.graph_id"),
        ({"graph_id": "g1"}, "params.schema"),
        ({"graph_id": "g1", "schema": SCHEMA, "extra": 1}, "params.extra"),
        (
            {
                "graph_id": "g1",
                "schema": {"nodes": [{"name": "C", "primary_key": "x", "properties": {"id": "STRING"}}]},
            },
            "params.schema.nodes[0].primary_key",
        ),
        ({"graph_id": "nobody", "schema": SCHEMA}, "params.graph_id"),  # no credit account
        ([1, 2], "params"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field_and_nothing_is_recorded(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, params: Any, field: str
) -> None:
    graph(conn, "g1", balance_micro=100 * CREDIT)
    with pytest.raises(InvalidInputError) as refused:
        run_operation(operation("create_graph"), params, resources=resources)
    assert refused.value.field == field
    assert conn.execute("SELECT count(*) FROM operations").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM credit_reservations").fetchone()[0] == 0
    assert registries.graph("g1") is None


def test_an_operation_id_reused_with_other_parameters_is_refused(
    conn: psycopg.Connection, resources: OperationResources
) -> None:
    graph(conn, "g1", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), create(), resources=resources, operation_id="op-1")
    other = {**SCHEMA, "relationships": []}
    with pytest.raises(IdempotencyConflictError) as refused:
        run_operation(
            operation("create_graph"), create(schema=other), resources=resources, operation_id="op-1"
        )
    assert refused.value.field == "operation_id"


def test_a_cancellation_stops_create_at_the_next_stage_and_leaves_no_graph(
    conn: psycopg.Connection,
    dsn: str,
    resources: OperationResources,
    registries: Registries,
    node: GraphNodeServer,
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)

    def cancel_after(stage: str) -> Any:
        def report(meta: Any) -> None:
            if meta["stage"] == stage:
                with psycopg.connect(dsn, autocommit=True) as other:
                    assert records.request_cancel(other, "op-c") is not None

        return report

    with pytest.raises(OperationCancelledError):
        run_operation(
            operation("create_graph"), create(), resources=resources, operation_id="op-c",
            report=cancel_after("create"),
        )  # fmt: skip
    # Stopped before "activate": the database made in "create" is gone, the row says deleted.
    assert registries.graph("g1").status is GraphStatus.DELETED
    assert registries.instance("node-1").database_count == 0
    assert node_databases(node) == []
    record = records.get(conn, "op-c")
    assert record is not None and record.status == "cancelled" and record.stage == "activate"
    assert held_and_committed(conn, account) == [("op-c", "released", 10 * CREDIT, None)]
    assert balance(conn, account) == 100 * CREDIT
    events = ProgressStream(resources.progress_client(), "op-c").read()
    assert events[-1].state == "cancelled"

    # Relaunched (the API's retry): a new attempt with a hold of its own completes it.
    outcome = run_operation(operation("create_graph"), create(), resources=resources, operation_id="op-c")
    assert outcome.attempt == 2 and registries.graph("g1").status is GraphStatus.ACTIVE
    assert held_and_committed(conn, account)[-1] == ("op-c#2", "committed", 10 * CREDIT, 10 * CREDIT)
    assert balance(conn, account) == 90 * CREDIT


def test_an_attempt_that_died_is_taken_over_and_the_operation_charged_once(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)
    spec = operation("create_graph")
    params = create()
    # An attempt that started (its hold taken) and died: its lease lapses, nobody renews it.
    started = records.start(
        conn, operation_id="op-d", task=spec.name, params=params, account_id=account,
        estimated_micro=10 * CREDIT, task_id="dead", lease=timedelta(seconds=1), hold_for=timedelta(hours=1),
    )  # fmt: skip
    assert started.outcome == "run"
    conn.execute("UPDATE operations SET lease_expires_at = now() - interval '1 s' WHERE id = 'op-d'")
    outcome = run_operation(spec, params, resources=resources, operation_id="op-d")
    assert outcome.attempt == 2 and registries.graph("g1").status is GraphStatus.ACTIVE
    # The dead attempt's hold was released when its operation was taken over; one charge.
    assert held_and_committed(conn, account) == [
        ("op-d", "released", 10 * CREDIT, None),
        ("op-d#2", "committed", 10 * CREDIT, 10 * CREDIT),
    ]
    assert balance(conn, account) == 90 * CREDIT


def test_a_second_delivery_waits_for_a_live_attempt_and_returns_its_result(
    conn: psycopg.Connection, resources: OperationResources, dsn: str, redis_url: str
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)
    spec = operation("create_graph")
    first_in_stage = threading.Event()
    release_first = threading.Event()

    def hold_in_place(meta: Any) -> None:
        if meta["stage"] == "place":
            first_in_stage.set()
            assert release_first.wait(30)

    results: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: results.setdefault(
            "first",
            run_operation(spec, create(), resources=resources, operation_id="op-w", report=hold_in_place),
        )
    )
    first.start()
    assert first_in_stage.wait(30)
    twin_resources = OperationResources(environment(dsn, redis_url))
    second = threading.Thread(
        target=lambda: results.setdefault(
            "second", run_operation(spec, create(), resources=twin_resources, operation_id="op-w")
        )
    )
    second.start()
    second.join(2.5)
    assert second.is_alive()  # waiting on the live attempt, not running a second one
    release_first.set()
    first.join(60)
    second.join(60)
    twin_resources.close()
    assert results["first"].attempt == 1 and not results["first"].replayed
    assert results["second"].replayed and results["second"].result == results["first"].result
    assert len(held_and_committed(conn, account)) == 1 and balance(conn, account) == 90 * CREDIT


def test_a_redis_that_cannot_take_progress_never_fails_the_work(
    conn: psycopg.Connection, dsn: str, registries: Registries, node: GraphNodeServer
) -> None:
    graph(conn, "g1", balance_micro=100 * CREDIT)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    unreachable = OperationResources(environment(dsn, nowhere))
    try:
        outcome = run_operation(operation("create_graph"), create(), resources=unreachable)
    finally:
        unreachable.close()
    assert outcome.status == "succeeded" and registries.graph("g1").status is GraphStatus.ACTIVE
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(nowhere).ping()


def test_delete_graph_frees_the_slot_is_free_and_idempotent(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, node: GraphNodeServer
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), create(), resources=resources)
    assert registries.instance("node-1").database_count == 1
    deleted = run_operation(operation("delete_graph"), {"graph_id": "g1"}, resources=resources)
    assert deleted.result["deleted"] is True and deleted.charged_micro == 0
    assert registries.graph("g1").status is GraphStatus.DELETED
    assert registries.instance("node-1").database_count == 0 and node_databases(node) == []
    again = run_operation(
        operation("delete_graph"), {"graph_id": "g1"}, resources=resources, operation_id="d-2"
    )
    assert again.result["deleted"] is False
    assert balance(conn, account) == 90 * CREDIT  # only the create was charged


def load_companies(node: GraphNodeServer, load_id: str, start: int, n: int) -> None:
    from beatless.graphs.client import NodeClient

    rows = "".join(f"c{i},Company {i}\n" for i in range(start, start + n))
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"in/{load_id}.csv", Body=f"id,name\n{rows}".encode())
    NodeClient(node.url, KEY).load("g1", load_id, BUCKET, [("Company", f"in/{load_id}.csv")])


def count_companies(node: GraphNodeServer) -> int:
    from beatless.graphs.client import NodeClient

    rows = NodeClient(node.url, KEY).query("g1", "MATCH (c:Company) RETURN count(*)")["rows"]
    return int(rows[0][0])


def test_backup_then_restore_brings_the_graph_back_and_each_is_charged_by_size(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, node: GraphNodeServer
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), create(), resources=resources)
    load_companies(node, "first", 0, 100)
    backed = run_operation(operation("backup_graph"), {"graph_id": "g1"}, resources=resources)
    key = backed.result["key"]
    assert key == f"backups/g1/{backed.operation_id}.lbbk"
    stored = boto3.client("s3").head_object(Bucket=BUCKET, Key=key)
    assert stored["Metadata"]["sha256"] == backed.result["sha256"]
    assert registries.graph("g1").last_backup_key == key
    assert registries.graph("g1").last_backup_sha256 == backed.result["sha256"]
    load_companies(node, "later", 100, 50)
    assert count_companies(node) == 150
    restored = run_operation(operation("restore_graph"), {"graph_id": "g1"}, resources=resources)
    assert restored.result["key"] == key and restored.result["sha256"] == backed.result["sha256"]
    assert count_companies(node) == 100
    # Each charged its base credit plus 2 credits per GiB of what it moved (never above its hold).
    for outcome in (backed, restored):
        gib = outcome.result["units"]
        assert outcome.charged_micro <= CREDIT + math.ceil(gib * 2 * CREDIT)
        assert outcome.charged_micro >= CREDIT
    assert (
        balance(conn, account) == 100 * CREDIT - 10 * CREDIT - backed.charged_micro - restored.charged_micro
    )
    assert credits.mismatches(conn) == []


def test_a_restore_of_a_graph_without_a_backup_is_refused_naming_the_field(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries
) -> None:
    account = graph(conn, "g1", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), create(), resources=resources)
    with pytest.raises(InvalidInputError) as refused:
        run_operation(operation("restore_graph"), {"graph_id": "g1"}, resources=resources)
    assert refused.value.field == "params.backup_key"
    assert held_and_committed(conn, account)[-1][1] == "released"  # the hold went back
    assert balance(conn, account) == 90 * CREDIT


SECTORS = {
    "nodes": [
        {
            "name": "Company",
            "primary_key": "id",
            "properties": {"id": "STRING", "name": "STRING", "sector": "STRING"},
        },
        {"name": "Person", "primary_key": "id", "properties": {"id": "STRING"}},
    ],
    "relationships": [
        {"name": "Owns", "from": "Company", "to": "Company", "properties": {"share": "DOUBLE"}},
        {"name": "Directs", "from": "Person", "to": "Company"},
    ],
}


def parent_with_sectors(
    conn: psycopg.Connection, resources: OperationResources, node: GraphNodeServer
) -> None:
    from beatless.graphs.client import NodeClient

    graph(conn, "parent", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), {"graph_id": "parent", "schema": SECTORS}, resources=resources)
    sectors = ["tech", "bank", "energy"]
    companies = [f"c{i},Company {i},{sectors[i % 3]}" for i in range(60)]
    owns = [f"c{i},c{(i * 7 + 3) % 60},{i / 100}" for i in range(60)]
    people = [f"p{i}" for i in range(10)]
    directs = [f"p{i % 10},c{i}" for i in range(0, 60, 2)]
    files = [
        ("Company", put_csv("in/companies.csv", "id,name,sector", companies)),
        ("Person", put_csv("in/people.csv", "id", people)),
        ("Owns", put_csv("in/owns.csv", "from,to,share", owns)),
        ("Directs", put_csv("in/directs.csv", "from,to", directs)),
    ]
    NodeClient(node.url, KEY).load("parent", "seed", BUCKET, files)


def test_a_subgraph_answers_as_the_parent_does_with_the_filter(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, node: GraphNodeServer
) -> None:
    parent_with_sectors(conn, resources, node)
    account = graph(conn, "tech", balance_micro=100 * CREDIT)
    params = {
        "graph_id": "tech",
        "parent_graph_id": "parent",
        "tables": ["Company", "Owns"],
        "filters": {"Company": {"sector": "tech"}},
    }
    outcome = run_operation(operation("create_subgraph"), params, resources=resources)
    assert registries.graph("tech").status is GraphStatus.ACTIVE
    on_subgraph = "MATCH (a:Company)-[o:Owns]->(b:Company) RETURN a.id, b.id, o.share ORDER BY a.id, b.id"
    on_parent = (
        "MATCH (a:Company)-[o:Owns]->(b:Company) WHERE a.sector = $s AND b.sector = $s "
        "RETURN a.id, b.id, o.share ORDER BY a.id, b.id"
    )
    expected = answers(node, "parent", on_parent, s="tech")
    assert expected and answers(node, "tech", on_subgraph) == expected
    count = "MATCH (c:Company) RETURN count(*), collect(DISTINCT c.sector)"
    assert answers(node, "tech", count) == [[20, ["tech"]]]
    assert outcome.result["rows"] == {"Company": 20, "Owns": len(expected)}
    from beatless.graphs.client import NodeClient

    described = NodeClient(node.url, KEY).request("GET", "/databases/tech")
    assert sorted(described["tables"]) == ["Company", "Owns"]  # only what was asked for
    assert (
        balance(conn, account) == 100 * CREDIT - outcome.charged_micro and outcome.charged_micro >= 5 * CREDIT
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tables": ["Owns"]}, "params.tables[0]"),  # a relationship without its ends
        ({"tables": ["Company", "Nope"]}, "params.tables[1]"),
        ({"filters": {"Company": {"colour": "red"}}}, "params.filters.Company.colour"),
        ({"filters": {"Person": {"id": "p1"}}}, "params.filters.Person"),  # not among the tables
        ({"parent_graph_id": "missing"}, "params.parent_graph_id"),
        ({"filters": {"Company": {"sector": ["tech"]}}}, "params.filters.Company.sector"),
    ],
)
def test_a_subgraph_asked_for_badly_is_refused_naming_the_field_and_leaves_nothing(
    conn: psycopg.Connection,
    resources: OperationResources,
    registries: Registries,
    node: GraphNodeServer,
    change: dict[str, Any],
    field: str,
) -> None:
    parent_with_sectors(conn, resources, node)
    account = graph(conn, "sub", balance_micro=100 * CREDIT)
    params = {"graph_id": "sub", "parent_graph_id": "parent", "tables": ["Company"], "filters": {}} | change
    with pytest.raises(InvalidInputError) as refused:
        run_operation(operation("create_subgraph"), params, resources=resources)
    assert refused.value.field == field
    assert registries.graph("sub") is None and "sub" not in node_databases(node)
    assert balance(conn, account) == 100 * CREDIT


REPOSITORY = {
    "nodes": [
        {"name": "Company", "primary_key": "cik", "properties": {"cik": "STRING", "name": "STRING"}},
        {
            "name": "Filing",
            "primary_key": "id",
            "properties": {"id": "STRING", "cik": "STRING", "form": "STRING"},
        },
        {
            "name": "Fact",
            "primary_key": "id",
            "properties": {"id": "STRING", "cik": "STRING", "concept": "STRING", "value": "DOUBLE"},
        },
        {"name": "Concept", "primary_key": "name", "properties": {"name": "STRING"}},
    ],
    "relationships": [
        {"name": "Filed", "from": "Company", "to": "Filing"},
        {"name": "Reports", "from": "Filing", "to": "Fact"},
        {"name": "Measures", "from": "Fact", "to": "Concept"},
    ],
}


def shared_repository(conn: psycopg.Connection, resources: OperationResources, node: GraphNodeServer) -> None:
    from beatless.graphs.client import NodeClient

    graph(conn, "sec", balance_micro=100 * CREDIT)
    run_operation(operation("create_graph"), {"graph_id": "sec", "schema": REPOSITORY}, resources=resources)
    ciks = [f"{i:010d}" for i in range(1, 6)]
    filings = [(f"f{c}-{k}", c, ["10-K", "10-Q"][k % 2]) for c in ciks for k in range(4)]
    facts = [
        (f"{f}-{j}", c, ["Revenue", "Assets"][j % 2], float(j * 100)) for f, c, _ in filings for j in range(3)
    ]
    files = [
        ("Company", put_csv("sec/companies.csv", "cik,name", [f"{c},Company {c}" for c in ciks])),
        ("Filing", put_csv("sec/filings.csv", "id,cik,form", [",".join(f) for f in filings])),
        (
            "Fact",
            put_csv("sec/facts.csv", "id,cik,concept,value", [f"{a},{b},{c},{d}" for a, b, c, d in facts]),
        ),
        ("Concept", put_csv("sec/concepts.csv", "name", ["Revenue", "Assets"])),
        ("Filed", put_csv("sec/filed.csv", "from,to", [f"{c},{f}" for f, c, _ in filings])),
        (
            "Reports",
            put_csv("sec/reports.csv", "from,to", [f"{f.rsplit('-', 1)[0]},{f}" for f, _, _, _ in facts]),
        ),
        ("Measures", put_csv("sec/measures.csv", "from,to", [f"{f},{c}" for f, _, c, _ in facts])),
    ]
    NodeClient(node.url, KEY).load("sec", "seed", BUCKET, files)


def test_an_entity_graph_answers_as_the_repository_does_for_that_entity(
    conn: psycopg.Connection, resources: OperationResources, registries: Registries, node: GraphNodeServer
) -> None:
    shared_repository(conn, resources, node)
    graph(conn, "acme", balance_micro=100 * CREDIT)
    params = {"graph_id": "acme", "entity_id": "0000000003"}
    outcome = run_operation(operation("create_entity_graph"), params, resources=resources)
    assert outcome.result["tables"] == ["Company", "Filing", "Fact", "Filed", "Reports"]  # no Concept
    on_entity = (
        "MATCH (c:Company)-[:Filed]->(f:Filing)-[:Reports]->(x:Fact) "
        "RETURN c.name, f.form, x.concept, sum(x.value), count(*) ORDER BY f.form, x.concept"
    )
    on_repository = (
        "MATCH (c:Company)-[:Filed]->(f:Filing)-[:Reports]->(x:Fact) WHERE c.cik = $cik "
        "RETURN c.name, f.form, x.concept, sum(x.value), count(*) ORDER BY f.form, x.concept"
    )
    expected = answers(node, "sec", on_repository, cik="0000000003")
    assert expected and answers(node, "acme", on_entity) == expected
    assert answers(node, "acme", "MATCH (x:Fact) RETURN count(*), collect(DISTINCT x.cik)") == [
        [12, ["0000000003"]]
    ]
    assert outcome.result["rows"] == {"Company": 1, "Filing": 4, "Fact": 12, "Filed": 4, "Reports": 12}
    with pytest.raises(InvalidInputError) as refused:
        run_operation(
            operation("create_entity_graph"),
            {"graph_id": "acme", "entity_id": "1", "entity_property": "ticker"},
            resources=resources,
        )
    assert refused.value.field == "params.entity_property"
