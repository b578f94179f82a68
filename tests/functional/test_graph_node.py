"""The graph node: the real engine (LadybugDB) in a real `beatless graph-node` process on
loopback; S3 and DynamoDB in moto's server.

create -> load (Parquet and CSV from S3) -> query -> backup -> delete -> restore gives the
same answers and a checksum that matches; a load that could pass the size cap is refused
up front and what is there survives a restart; kill -9 during a load, then the same load
again completes with the right counts; bad input to every endpoint gets a 4xx naming the
field and changes nothing; no key, no access; the node registers and reports sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from beatless.graphs.registry import GraphStatus, Registries, create_tables
from beatless.local.servers import GraphNodeServer

pytestmark = pytest.mark.slow

KEY = "k" * 32
BUCKET = "beatless-graph-data"
SCHEMA = {
    "nodes": [
        {
            "name": "Company",
            "primary_key": "id",
            "properties": {"id": "STRING", "name": "STRING", "revenue": "DOUBLE"},
        }
    ],
    "relationships": [
        {"name": "Owns", "from": "Company", "to": "Company", "properties": {"share": "DOUBLE"}}
    ],
}
COUNT_QUERY = (
    "MATCH (c:Company) OPTIONAL MATCH (c)-[o:Owns]->() RETURN count(DISTINCT c), count(o), sum(c.revenue)"
)


def companies(n: int, start: int = 0) -> pa.Table:
    ids = range(start, start + n)
    return pa.table(
        {
            "id": [f"c{i}" for i in ids],
            "name": [f"Company {i}" for i in ids],
            "revenue": [i * 1.5 for i in ids],
        }
    )


def owns(n: int) -> pa.Table:
    return pa.table(
        {
            "from": [f"c{i}" for i in range(n)],
            "to": [f"c{(i * 7 + 1) % n}" for i in range(n)],
            "share": [0.25] * n,
        }
    )


def put_parquet(s3: Any, key: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


def put_csv(s3: Any, key: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


@pytest.fixture
def s3(aws: str) -> Any:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def registries(aws: str) -> Registries:
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    return Registries(boto3.resource("dynamodb"), "instances", "graphs")


def node_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "INSTANCE_"))}
    env.update(
        {"GRAPH_BUFFER_POOL_MB": "64", "GRAPH_HEARTBEAT_SECONDS": "1", "INSTANCE_ID": "node-1", **extra}
    )
    return env


@pytest.fixture
def node(s3: Any, registries: Registries, tmp_path: Path) -> Iterator[GraphNodeServer]:
    env = node_env(
        INSTANCE_REGISTRY_TABLE="instances", GRAPH_REGISTRY_TABLE="graphs", GRAPH_NODE_CAPACITY="7"
    )
    with GraphNodeServer(env, tmp_path / "data", KEY) as server:
        yield server


def api(node: GraphNodeServer, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(base_url=node.url, headers={"X-Api-Key": key} if key else {}, timeout=120)


def load_body(load_id: str, *files: tuple[str, str]) -> dict[str, Any]:
    return {"load_id": load_id, "bucket": BUCKET, "files": [{"table": t, "key": k} for t, k in files]}


def created(client: httpx.Client, graph_id: str = "g1") -> None:
    response = client.post("/databases", json={"graph_id": graph_id, "schema": SCHEMA})
    assert response.status_code == 201, response.text


def test_create_load_query_backup_delete_restore(
    node: GraphNodeServer, s3: Any, registries: Registries
) -> None:
    put_parquet(s3, "uploads/g1/companies.parquet", companies(2000))
    put_csv(s3, "uploads/g1/owns.csv", owns(2000))
    with api(node) as client:
        created(client)
        loaded = client.post(
            "/databases/g1/load",
            json=load_body(
                "load-1", ("Company", "uploads/g1/companies.parquet"), ("Owns", "uploads/g1/owns.csv")
            ),
        )
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["rows"] == {"Company": 2000, "Owns": 2000}
        before = client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()
        assert before["rows"] == [[2000, 2000, sum(i * 1.5 for i in range(2000))]]
        sample = "MATCH (a:Company)-[o:Owns]->(b) WHERE a.id = $id RETURN a.name, o.share, b.id"
        one = client.post("/databases/g1/query", json={"query": sample, "parameters": {"id": "c3"}}).json()
        assert one["rows"] == [["Company 3", 0.25, "c22"]]
        limited = client.post(
            "/databases/g1/query", json={"query": "MATCH (c:Company) RETURN c.id", "limit": 5}
        )
        assert len(limited.json()["rows"]) == 5 and limited.json()["truncated"] is True

        backed = client.post("/databases/g1/backup", json={"bucket": BUCKET, "key": "backups/g1/1.lbbk"})
        assert backed.status_code == 200, backed.text
        stored = s3.get_object(Bucket=BUCKET, Key="backups/g1/1.lbbk")
        body = stored["Body"].read()
        assert hashlib.sha256(body).hexdigest() == backed.json()["sha256"] == stored["Metadata"]["sha256"]
        assert backed.json()["stored_bytes"] == len(body) < backed.json()["logical_bytes"]

        assert client.delete("/databases/g1").status_code == 200
        assert client.post("/databases/g1/query", json={"query": COUNT_QUERY}).status_code == 404
        restored = client.post("/databases/g1/restore", json={"bucket": BUCKET, "key": "backups/g1/1.lbbk"})
        assert restored.status_code == 200, restored.text
        assert (
            client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()["rows"] == before["rows"]
        )
        assert (
            client.post("/databases/g1/query", json={"query": sample, "parameters": {"id": "c3"}}).json()
            == one
        )


def test_a_restore_whose_checksum_does_not_match_is_refused_and_changes_nothing(
    node: GraphNodeServer, s3: Any
) -> None:
    with api(node) as client:
        created(client)
        backed = client.post("/databases/g1/backup", json={"bucket": BUCKET, "key": "b/1"}).json()
        wrong = client.post(
            "/databases/g1/restore", json={"bucket": BUCKET, "key": "b/1", "sha256": "0" * 64}
        )
        assert wrong.status_code == 422 and "expected" in wrong.json()["error"]["message"]
        # The object's bytes altered after the fact: its metadata no longer matches what is stored.
        s3.put_object(Bucket=BUCKET, Key="b/2", Body=b"corrupt", Metadata={"sha256": backed["sha256"]})
        corrupt = client.post("/databases/g2/restore", json={"bucket": BUCKET, "key": "b/2"})
        assert corrupt.status_code == 422
        listed = client.get("/databases").json()["databases"]
        assert [d["graph_id"] for d in listed] == ["g1"]  # no g2 was made
        # A whole, valid archive with bytes after it, or one flipped in its middle: restored
        # from the stream onto g1, refused once the digest is known; g1 is as it was.
        put_parquet(s3, "later/c.parquet", companies(5))  # after the backup: a restore would lose it
        loaded = client.post("/databases/g1/load", json=load_body("later", ("Company", "later/c.parquet")))
        assert loaded.status_code == 200, loaded.text
        before = client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()["rows"]
        stored = s3.get_object(Bucket=BUCKET, Key="b/1")["Body"].read()
        flipped = bytearray(stored)
        flipped[len(flipped) // 2] ^= 0xFF
        for key, body in (("b/3", stored + b"trailing"), ("b/4", bytes(flipped))):
            s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={"sha256": backed["sha256"]})
            refused = client.post("/databases/g1/restore", json={"bucket": BUCKET, "key": key})
            assert refused.status_code == 422, (key, refused.text)
            assert client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()["rows"] == before
        assert before[0][0] == 5
        assert not list(node.data_dir.rglob("*.restoring"))  # nothing half-written left behind


def test_an_atomic_load_whose_later_file_fails_leaves_the_graph_as_it_was(
    node: GraphNodeServer, s3: Any
) -> None:
    put_parquet(s3, "first.parquet", companies(10))
    put_parquet(s3, "more.parquet", companies(5, start=10))
    put_csv(s3, "dangling.csv", pa.table({"from": ["c1"], "to": ["nobody"], "share": [0.5]}))
    with api(node) as client:
        created(client)
        assert (
            client.post(
                "/databases/g1/load", json=load_body("seed", ("Company", "first.parquet"))
            ).status_code
            == 200
        )
        before = client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()["rows"]
        body = load_body("both", ("Company", "more.parquet"), ("Owns", "dangling.csv")) | {"atomic": True}
        refused = client.post("/databases/g1/load", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "files[1]", refused.text
        # The first file of the load was copied, then taken back with the rest: 10 companies, as before.
        assert client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()["rows"] == before
        assert not list((node.data_dir / "g1" / "loads").glob("both.*"))  # no snapshot or journal left
        # Without `atomic` the same load keeps what it copied before the failing file.
        partial = client.post(
            "/databases/g1/load",
            json=load_body("partial", ("Company", "more.parquet"), ("Owns", "dangling.csv")),
        )
        assert partial.status_code == 400
        assert client.post("/databases/g1/query", json={"query": COUNT_QUERY}).json()["rows"][0][0] == 15


def test_a_load_that_could_pass_the_size_cap_is_refused_up_front(
    s3: Any, registries: Registries, tmp_path: Path
) -> None:
    put_parquet(s3, "small.parquet", companies(100))
    put_parquet(s3, "big.parquet", companies(1_000_000, start=1000))
    env = node_env(GRAPH_MAX_DB_SIZE_MB="128")  # 64 MiB of margin + room for the small file only
    server = GraphNodeServer(env, tmp_path / "data", KEY).start()
    try:
        with api(server) as client:
            created(client)
            assert (
                client.post(
                    "/databases/g1/load", json=load_body("a", ("Company", "small.parquet"))
                ).status_code
                == 200
            )
            refused = client.post("/databases/g1/load", json=load_body("b", ("Company", "big.parquet")))
            assert refused.status_code == 413 and "size cap" in refused.json()["error"]["message"]
        server.stop()
        server.start()  # what was there survives a reopen
        with api(server) as client:
            rows = client.post(
                "/databases/g1/query", json={"query": "MATCH (c:Company) RETURN count(*)"}
            ).json()
            assert rows["rows"] == [[100]]
    finally:
        server.stop()


def test_kill_9_during_a_load_then_the_same_load_completes_once(
    s3: Any, registries: Registries, tmp_path: Path
) -> None:
    put_parquet(s3, "a.parquet", companies(300_000))
    put_parquet(s3, "b.parquet", companies(300_000, start=300_000))
    put_csv(s3, "rels.csv", owns(600_000))
    server = GraphNodeServer(node_env(), tmp_path / "data", KEY).start()
    body = load_body("the-load", ("Company", "a.parquet"), ("Company", "b.parquet"), ("Owns", "rels.csv"))
    try:
        with api(server) as client:
            created(client)
        outcome: list[Any] = []

        def load() -> None:
            try:
                with api(server) as client:
                    outcome.append(client.post("/databases/g1/load", json=body))
            except httpx.HTTPError as error:  # the node died under it
                outcome.append(error)

        thread = threading.Thread(target=load)
        thread.start()
        # Killed once the first COPY has started: it or a later one is running.
        journal = tmp_path / "data" / "g1" / "loads" / "the-load.json"
        deadline = time.monotonic() + 60
        while not journal.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(os.environ.get("BEATLESS_KILL_DELAY", "0.2")))
        server.kill()
        thread.join(60)
        assert outcome and not isinstance(outcome[0], httpx.Response), "the load finished before the kill"
        copied_before_the_kill = len(json.loads(journal.read_text())["done"])
        assert copied_before_the_kill < 3

        server.start()
        with api(server) as client:
            again = client.post("/databases/g1/load", json=body)
            assert again.status_code == 200, again.text
            assert again.json()["rows"] == {"Company": 600_000, "Owns": 600_000}
            assert again.json()["copied"] <= 3 - copied_before_the_kill  # nothing copied twice
            twice = client.post("/databases/g1/load", json=body).json()  # and once more: nothing twice
            assert twice["copied"] == 0 and twice["rows"] == {"Company": 600_000, "Owns": 600_000}
    finally:
        server.stop()


def test_bad_input_gets_a_4xx_naming_the_field_and_changes_nothing(node: GraphNodeServer, s3: Any) -> None:
    put_parquet(s3, "ok.parquet", companies(10))
    put_parquet(s3, "wrong.parquet", pa.table({"id": ["x"], "title": ["y"], "revenue": [1.0]}))
    with api(node) as client:
        created(client)
        assert (
            client.post("/databases/g1/load", json=load_body("seed", ("Company", "ok.parquet"))).status_code
            == 200
        )
        state = client.get("/databases/g1").json()
        export_to = {"bucket": BUCKET, "prefix": "exports/"}
        cases: list[tuple[str, str, Any, int, str]] = [
            ("POST", "/databases", {"graph_id": "g2", "schema": {"nodes": []}}, 400, "schema.nodes"),
            ("POST", "/databases", {"graph_id": "g2", "schema": {**SCHEMA, "extra": 1}}, 400, "schema.extra"),
            ("POST", "/databases", {"graph_id": "../etc", "schema": SCHEMA}, 400, "graph_id"),
            (
                "POST",
                "/databases",
                {
                    "graph_id": "g2",
                    "schema": {"nodes": [{"name": "A", "primary_key": "x", "properties": {"x": "JSON"}}]},
                },
                400,
                "schema.nodes[0].properties.x",
            ),
            ("POST", "/databases", {"graph_id": "g1", "schema": SCHEMA}, 409, ""),
            ("POST", "/databases/g1/query", {"query": "CREATE (:Company {id: 'w'})"}, 400, "query"),
            (
                "POST",
                "/databases/g1/query",
                {"query": "MATCH (c) RETURN c; CREATE (:Company {id: 'w'})"},
                400,
                "query",
            ),
            ("POST", "/databases/g1/query", {"query": "COPY Company FROM '/etc/passwd'"}, 400, "query"),
            ("POST", "/databases/g1/query", {"query": "MATCH (c) RETURN c", "limit": 0}, 400, "limit"),
            (
                "POST",
                "/databases/g1/query",
                {"query": "MATCH (c) RETURN c", "parameters": []},
                400,
                "parameters",
            ),
            ("POST", "/databases/g1/query", {"query": "MATCH (c:Nope) RETURN c"}, 400, "query"),
            (
                "POST",
                "/databases/g1/load",
                load_body("x", ("Company", "wrong.parquet")),
                400,
                "files[0].columns",
            ),
            ("POST", "/databases/g1/load", load_body("x", ("Nope", "ok.parquet")), 400, "files[0].table"),
            (
                "POST",
                "/databases/g1/load",
                load_body("x", ("Company", "missing.parquet")),
                400,
                "files[0].key",
            ),
            ("POST", "/databases/g1/load", {"load_id": "x", "bucket": BUCKET, "files": []}, 400, "files"),
            ("POST", "/databases/g1/backup", {"bucket": BUCKET}, 400, "key"),
            ("POST", "/databases/g1/restore", {"bucket": BUCKET, "key": "no/such"}, 400, "key"),
            ("POST", "/databases/nope/query", {"query": "MATCH (c) RETURN c"}, 404, ""),
            ("POST", "/databases/g1/export", {**export_to, "tables": []}, 400, "tables"),
            ("POST", "/databases/g1/export", {**export_to, "tables": ["Owns"]}, 400, "tables[0]"),
            ("POST", "/databases/g1/export", {**export_to, "tables": ["Company", "x"]}, 400, "tables[1]"),
            (
                "POST",
                "/databases/g1/export",
                {**export_to, "tables": ["Company"], "filters": {"Company": {"nope": 1}}},
                400,
                "filters.Company.nope",
            ),
            (
                "POST",
                "/databases/g1/export",
                {**export_to, "tables": ["Company"], "filters": {"Company": {"id": None}}},
                400,
                "filters.Company.id",
            ),
            ("POST", "/databases/g1/export", {"bucket": BUCKET, "tables": ["Company"]}, 400, "prefix"),
            ("POST", "/databases/nope/export", {**export_to, "tables": ["Company"]}, 404, ""),
            (
                "POST",
                "/databases/g1/properties",
                {
                    "table": "Company",
                    "property": "rank",
                    "type": "JSON",
                    "bucket": BUCKET,
                    "key": "ok.parquet",
                },
                400,
                "type",
            ),
            (
                "POST",
                "/databases/g1/properties",
                {"table": "Owns", "property": "rank", "type": "INT64", "bucket": BUCKET, "key": "ok.parquet"},
                400,
                "table",
            ),
            (
                "POST",
                "/databases/g1/properties",
                {
                    "table": "Company",
                    "property": "rank",
                    "type": "INT64",
                    "bucket": BUCKET,
                    "key": "ok.parquet",
                },
                400,
                "key",  # its columns are not key, value
            ),
            ("POST", "/databases/g1/merge", {"table": "Company", "merges": [{"keep": "c1"}]}, 400, "merges"),
            ("POST", "/databases/g1/merge", {"table": "Nope", "merges": []}, 400, "table"),
        ]
        for method, path, body, status, field in cases:
            response = client.request(method, path, json=body)
            assert response.status_code == status, (path, body, response.text)
            if field:
                assert response.json()["error"]["field"] == field, (path, body, response.text)
        broken = client.post(
            "/databases/g1/query", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 400 and broken.json()["error"]["field"] == "body"
        assert client.get("/databases/g1").json() == state  # nothing changed
        assert [d["graph_id"] for d in client.get("/databases").json()["databases"]] == ["g1"]
        assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="exports/")  # nothing exported


def test_every_route_wants_the_api_key(node: GraphNodeServer) -> None:
    for key in (None, "wrong-key-of-some-length"):
        with api(node, key) as client:
            for method, path in (
                ("GET", "/health"),
                ("GET", "/databases"),
                ("POST", "/databases"),
                ("POST", "/databases/g1/query"),
                ("POST", "/databases/g1/export"),
                ("POST", "/databases/g1/properties"),
                ("POST", "/databases/g1/merge"),
                ("DELETE", "/databases/g1"),
            ):
                assert client.request(method, path).status_code == 401, (key, path)


def test_the_node_registers_reports_health_and_sizes_and_stops_cleanly(
    node: GraphNodeServer, registries: Registries
) -> None:
    instance = registries.instance("node-1")
    assert instance is not None and instance.endpoint == node.url and instance.capacity == 7
    assert instance.status.value == "healthy" and instance.last_heartbeat
    registries.graphs.put_item(
        Item={"graph_id": "g1", "instance_id": "node-1", "status": str(GraphStatus.ACTIVE)}
    )
    registries.graphs.put_item(  # the registry says another node owns g2: this one may not size it
        Item={"graph_id": "g2", "instance_id": "node-2", "status": str(GraphStatus.ACTIVE), "size_bytes": 7}
    )
    with api(node) as client:
        created(client)
        created(client, "g2")  # a database here whose registry row names another node
        health = client.get("/health").json()
        assert {k: health[k] for k in ("status", "capacity", "database_count")} == {
            "status": "healthy",
            "capacity": 7,
            "database_count": 2,
        }
        assert 0 < health["disk_used_bytes"] <= health["disk_total_bytes"] and health["version"]
    deadline = time.monotonic() + 10
    while (registries.graph("g1").size_bytes or 0) == 0 and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.2)
    assert registries.graph("g1").size_bytes > 0  # type: ignore[union-attr]
    assert registries.graph("g2").size_bytes == 7  # type: ignore[union-attr]
    # SIGTERM: uvicorn finishes, the lifespan closes every database, then it re-raises the signal.
    assert node.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in node.log.read_text()


def test_the_node_reads_its_key_from_secrets_manager(aws: str, tmp_path: Path) -> None:
    secret = boto3.client("secretsmanager").create_secret(Name="graph-api-key", SecretString="s" * 40)
    with GraphNodeServer(node_env(), tmp_path / "data", "s" * 40, api_key_secret_arn=secret["ARN"]) as server:
        assert "GRAPH_API_KEY" not in server.env  # only the secret's ARN reaches the process
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/health", headers={"X-Api-Key": "s" * 40}).status_code == 200
            assert client.get("/health", headers={"X-Api-Key": KEY}).status_code == 401


def test_the_node_client_speaks_the_api_and_says_what_was_refused(node: GraphNodeServer) -> None:
    from beatless.errors import InvalidInputError
    from beatless.graphs.client import NodeClient, NodeRequestError, NodeUnreachableError

    client = NodeClient(node.url, KEY)
    assert client.health()["status"] == "healthy"
    client.create("g1", SCHEMA)
    assert client.query("g1", COUNT_QUERY)["rows"] == [[0, 0, None]]
    with pytest.raises(NodeRequestError) as refused:
        client.query("g1", "CREATE (:Company {id: 'x'})")  # a write through the query endpoint
    assert refused.value.status == 400 and refused.value.error["error"]["field"] == "query"
    with pytest.raises(NodeRequestError) as odd:
        client.query("g1/query", COUNT_QUERY)  # stays one path segment: no such graph, not another route
    assert odd.value.status in (400, 404)
    with pytest.raises(NodeRequestError) as unauthorized:
        NodeClient(node.url, "wrong-key-0123456789").health()
    assert unauthorized.value.status == 401
    with pytest.raises(InvalidInputError) as scheme:
        NodeClient("file:///etc/passwd", KEY)
    assert scheme.value.field == "endpoint"
    with pytest.raises(NodeUnreachableError):
        NodeClient("http://127.0.0.1:9", KEY, timeout=2).health()
    assert "wrong-key" not in repr(NodeClient(node.url, "wrong-key-0123456789"))
