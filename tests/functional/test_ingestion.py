"""Ingestion end to end, in process: uploaded files (moto's S3) staged and validated in
DuckDB (`stage_files`), then loaded by a real graph node (`materialize`), paid from the
graph's credits (real PostgreSQL).

A realistic batch (companies, filings, facts, their relationships) ends with as many rows
in the graph as in the files; a batch with problems is reported exactly and nothing of
it is loaded; a batch that collides with what the graph holds is refused; a batch
delivered twice is loaded once.
"""

from __future__ import annotations

import io

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest

from beatless import credits
from beatless.errors import InvalidInputError
from beatless.graphs.registry import Registries
from beatless.ingestion import sample
from beatless.local.servers import GraphNodeServer
from beatless.operations.catalogue import operation
from beatless.operations.resources import OperationResources
from beatless.operations.runtime import run_operation
from tests.support.jobs import balance, graph
from tests.support.operations import (  # noqa: F401 (node, registries, resources: fixtures)
    BUCKET,
    answers,
    node,
    put_csv,
    registries,
    resources,
)

pytestmark = pytest.mark.slow

CREDIT = credits.MICRO_PER_CREDIT
SCHEMA = sample.SCHEMA


def dataset(prefix: str, companies: int = 200, seed: int = 7) -> list[dict[str, str]]:
    """A few thousand rows of a financial dataset as an upload batch (CSV and Parquet)."""
    return sample.upload(boto3.client("s3"), BUCKET, prefix, sample.financial_dataset(companies, seed))


def rows_in_files(files: list[dict[str, str]]) -> dict[str, int]:
    s3 = boto3.client("s3")
    counts = {}
    for item in files:
        body = s3.get_object(Bucket=BUCKET, Key=item["key"])["Body"].read()
        if item["key"].endswith(".csv"):
            counts[item["table"]] = len(body.decode().strip().splitlines()) - 1
        else:
            counts[item["table"]] = pq.read_table(io.BytesIO(body)).num_rows
    return counts


def graph_rows(node: GraphNodeServer, graph_id: str) -> dict[str, int]:
    from tests.support.operations import client

    return {
        name: info["rows"]
        for name, info in client(node).request("GET", f"/databases/{graph_id}")["tables"].items()
    }


@pytest.fixture
def target(conn: psycopg.Connection, resources: OperationResources, registries: Registries) -> int:
    account = graph(conn, "fin", balance_micro=1000 * CREDIT)
    run_operation(operation("create_graph"), {"graph_id": "fin", "schema": SCHEMA}, resources=resources)
    return account


def test_a_realistic_batch_is_staged_validated_and_loaded_with_every_row(
    conn: psycopg.Connection, resources: OperationResources, node: GraphNodeServer, target: int
) -> None:
    files = dataset("uploads/batch-1")
    staged = run_operation(
        operation("stage_files"),
        {"graph_id": "fin", "batch_id": "batch-1", "files": files},
        resources=resources,
    )
    assert staged.result["valid"] is True and staged.result["problems"] == []
    expected = rows_in_files(files)
    assert staged.result["rows"] == expected and sum(expected.values()) > 3000
    assert graph_rows(node, "fin") == dict.fromkeys(expected, 0)  # staging loads nothing
    loaded = run_operation(
        operation("materialize"), {"graph_id": "fin", "batch_id": "batch-1"}, resources=resources
    )
    assert graph_rows(node, "fin") == expected == loaded.result["rows"]
    revenue = (
        "MATCH (c:Company)-[:Filed]->(:Filing)-[:Reports]->(x:Fact) "
        "WHERE x.concept = 'Revenue' RETURN count(*)"
    )
    assert answers(node, "fin", revenue)[0][0] > 0
    # Delivered again (a new operation over the same batch): the node's load id makes it a no-op.
    again = run_operation(
        operation("materialize"),
        {"graph_id": "fin", "batch_id": "batch-1"},
        resources=resources,
        operation_id="again",
    )
    assert graph_rows(node, "fin") == expected and again.result["rows"] == expected
    charged = staged.charged_micro + loaded.charged_micro + again.charged_micro
    assert balance(conn, target) == 1000 * CREDIT - 10 * CREDIT - charged
    assert credits.mismatches(conn) == []


def test_a_batch_with_problems_is_reported_exactly_and_nothing_is_loaded(
    resources: OperationResources, node: GraphNodeServer, target: int
) -> None:
    files = [
        {
            "table": "Company",
            "key": put_csv("up/c.csv", "cik,name,sector", ["0001,A,tech", "0002,B,bank", "0001,C,tech"]),
        },
        {
            "table": "Fact",
            "key": put_csv(
                "up/f.csv",
                "id,concept,value,cik",
                ["1,Revenue,12.5,0001", "two,Assets,3,0001", "3,Assets,lots,0002"],
            ),
        },
        {"table": "Owns", "key": put_csv("up/o.csv", "from,to,share", ["0001,0002,0.5", "0002,9999,0.1"])},
        {"table": "Filing", "key": put_csv("up/g.csv", "accession,form,cik", ["x,10-K,0001"])},
    ]
    staged = run_operation(
        operation("stage_files"), {"graph_id": "fin", "batch_id": "bad", "files": files}, resources=resources
    )
    report = staged.result
    assert report["valid"] is False and report["manifest"] is None
    assert report["counts"] == {
        "duplicate_primary_key": 2,
        "type": 2,
        "missing_endpoint": 1,
        "missing_column": 1,
    }
    assert [(p["file"], p["row"], p["column"], p["value"], p["rule"]) for p in report["problems"]] == [
        ("up/c.csv", 1, "cik", "0001", "duplicate_primary_key"),
        ("up/c.csv", 3, "cik", "0001", "duplicate_primary_key"),
        ("up/f.csv", 2, "id", "two", "type"),
        ("up/f.csv", 3, "value", "lots", "type"),
        ("up/o.csv", 2, "to", "9999", "missing_endpoint"),
        ("up/g.csv", None, "filed", None, "missing_column"),
    ]
    with pytest.raises(InvalidInputError) as refused:
        run_operation(operation("materialize"), {"graph_id": "fin", "batch_id": "bad"}, resources=resources)
    assert refused.value.field == "params.batch_id"
    assert set(graph_rows(node, "fin").values()) == {0}


def test_a_batch_colliding_with_the_graph_is_refused_and_one_pointing_at_it_is_taken(
    resources: OperationResources, node: GraphNodeServer, target: int
) -> None:
    first = [
        {"table": "Company", "key": put_csv("up/1.csv", "cik,name,sector", ["0001,A,tech", "0002,B,bank"])}
    ]
    run_operation(
        operation("stage_files"), {"graph_id": "fin", "batch_id": "one", "files": first}, resources=resources
    )
    run_operation(operation("materialize"), {"graph_id": "fin", "batch_id": "one"}, resources=resources)
    collide = [
        {
            "table": "Company",
            "key": put_csv("up/2.csv", "cik,name,sector", ["0002,B again,bank", "0003,C,tech"]),
        }
    ]
    refused = run_operation(
        operation("stage_files"),
        {"graph_id": "fin", "batch_id": "two", "files": collide},
        resources=resources,
    )
    assert [(p["row"], p["value"], p["rule"]) for p in refused.result["problems"]] == [
        (1, "0002", "existing_primary_key")
    ]
    # Relationships may point at companies the graph holds already (and at ones staged beside them).
    owns = [
        {"table": "Company", "key": put_csv("up/3.csv", "cik,name,sector", ["0003,C,tech"])},
        {"table": "Owns", "key": put_csv("up/4.csv", "from,to,share", ["0001,0003,0.5", "0003,0002,0.25"])},
    ]
    taken = run_operation(
        operation("stage_files"), {"graph_id": "fin", "batch_id": "three", "files": owns}, resources=resources
    )
    assert taken.result["valid"] is True, taken.result["problems"]
    run_operation(operation("materialize"), {"graph_id": "fin", "batch_id": "three"}, resources=resources)
    assert graph_rows(node, "fin")["Company"] == 3 and graph_rows(node, "fin")["Owns"] == 2


def test_files_naming_an_unknown_table_or_a_missing_upload_are_refused_naming_the_field(
    resources: OperationResources, target: int
) -> None:
    ok = put_csv("up/ok.csv", "cik,name,sector", ["0001,A,tech"])
    cases = [
        ([{"table": "Nope", "key": ok}], "params.files[0].table"),
        (
            [{"table": "Company", "key": ok}, {"table": "Company", "key": "up/missing.csv"}],
            "params.files[1].key",
        ),
        ([{"table": "Company", "key": ok, "format": "xlsx"}], "params.files[0].format"),
        ([], "params.files"),
    ]
    for files, field in cases:
        with pytest.raises(InvalidInputError) as refused:
            run_operation(
                operation("stage_files"),
                {"graph_id": "fin", "batch_id": "b", "files": files},
                resources=resources,
            )
        assert refused.value.field == field, files
