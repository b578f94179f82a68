"""What the graph benches share: deterministic Parquet data, moto + a graph node on free ports.

Not a benchmark itself (imported by `bench/graph_bulk_load.py` and `bench/graph_backup.py`).

The graph is the tests' schema (`tests/functional/test_graph_node.py`): `Company`
(`id` STRING primary key `c<i>`, `name` STRING `Company <i>`, `revenue` DOUBLE `1.5 i`)
and `Owns` (Company -> Company, `share` DOUBLE). Relationship `k` of a file (k from its
`start`) goes from company `first_node + (k - start) // fanout` to company
`first_node + (k * 2654435761 + 12345) mod nodes` (a multiplicative hash: scattered,
deterministic), with share `(k mod 100) / 100`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

KEY = "bench-graph-key-0123456789abcdef"
BUCKET = "beatless-graph-bench"
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
BATCH_ROWS = 1_000_000  # rows generated (and written as one Parquet row group) at a time
HASH = 2_654_435_761


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message} ({load_average()})", flush=True)


def _ids(start: int, n: int) -> Any:
    import pyarrow as pa

    return pa.array(range(start, start + n), pa.int64())


def _labels(prefix: str, numbers: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(prefix, pc.cast(numbers, pa.string()), "")


def _mod(values: Any, n: int) -> Any:
    import pyarrow.compute as pc

    return pc.subtract(values, pc.multiply(pc.divide(values, n), n))  # integer divide


def write_nodes(path: Path, start: int, n: int) -> int:
    """Companies start .. start+n-1 as Parquet; returns the file's size."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("name", pa.string()), ("revenue", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(start, start + n, BATCH_ROWS):
            ids = _ids(first, min(BATCH_ROWS, start + n - first))
            revenue = pc.multiply(pc.cast(ids, pa.float64()), 1.5)
            batch = pa.table([_labels("c", ids), _labels("Company ", ids), revenue], schema=schema)
            writer.write_table(batch, row_group_size=BATCH_ROWS)
    return path.stat().st_size


def write_rels(path: Path, *, first_node: int, nodes: int, start: int, n: int, fanout: int) -> int:
    """Relationships start .. start+n-1 among companies first_node .. first_node+nodes-1."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pa.schema([("from", pa.string()), ("to", pa.string()), ("share", pa.float64())])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(start, start + n, BATCH_ROWS):
            k = _ids(first, min(BATCH_ROWS, start + n - first))
            source = pc.add(pc.divide(pc.subtract(k, start), fanout), first_node)
            target = pc.add(_mod(pc.add(pc.multiply(k, HASH), 12345), nodes), first_node)
            share = pc.divide(pc.cast(_mod(k, 100), pa.float64()), 100.0)
            batch = pa.table([_labels("c", source), _labels("c", target), share], schema=schema)
            writer.write_table(batch, row_group_size=BATCH_ROWS)
    return path.stat().st_size


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a node process: this one's, minus graph/AWS settings (the node's
    defaults apply: buffer pool, threads, size cap), plus `extra`."""
    drop = ("GRAPH_", "INSTANCE_", "AWS_")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | (extra or {})


def node_settings(data_dir: Path, env: dict[str, str]) -> Any:
    """The settings the node process reads from `env` (for the in-process limit: same pool/threads)."""
    from beatless.graphs.node.settings import NodeSettings

    return NodeSettings.from_env({**env, "GRAPH_DATA_DIR": str(data_dir), "GRAPH_API_KEY": KEY})


@dataclass
class Stack:
    moto: Any
    node: Any
    s3: Any
    env: dict[str, str]

    def api(self, timeout: float = 3600.0) -> Any:
        import httpx

        return httpx.Client(base_url=self.node.url, headers={"X-Api-Key": KEY}, timeout=timeout)


@contextlib.contextmanager
def stack(base: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """moto's server (S3, DynamoDB) and one `beatless graph-node` process, both on free ports."""
    import boto3

    from beatless.local.servers import GraphNodeServer, MotoServer, aws_environment

    moto = MotoServer().start()
    node = None
    try:
        aws = aws_environment(moto.url)
        env = node_env({**aws, **(extra_env or {})})
        node = GraphNodeServer(env, base / "data", KEY, log=base / "graph-node.log").start()
        s3 = boto3.client(
            "s3",
            endpoint_url=moto.url,
            region_name=aws["AWS_DEFAULT_REGION"],
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket=BUCKET)
        yield Stack(moto, node, s3, env)
    finally:
        if node is not None:
            node.stop()
        moto.close()


def query(client: Any, graph_id: str, text: str) -> list[list[Any]]:
    response = client.post(f"/databases/{graph_id}/query", json={"query": text})
    response.raise_for_status()
    rows: list[list[Any]] = response.json()["rows"]
    return rows


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


@contextlib.contextmanager
def operations(service: Stack, work: Path, graph_id: str, credits_to_grant: int = 100_000) -> Iterator[Any]:
    """The heavy operations' resources beside `service` (a throwaway PostgreSQL with the schema
    and a graph `graph_id` holding credits, a throwaway Redis, the registries in moto with the
    bench's node registered): yields `OperationResources` for `run_operation`."""
    from datetime import UTC, datetime

    import boto3
    import psycopg

    from beatless import credits
    from beatless.db.migrate import migrate
    from beatless.graphs.registry import Registries, create_tables
    from beatless.local.servers import PostgresServer, RedisServer, environ
    from beatless.operations.resources import OperationResources

    with PostgresServer() as postgres, RedisServer() as redis_server, environ(service.env):
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            migrate(conn)
            credits.create_user(conn, "bench")
            credits.create_graph(conn, graph_id, "bench", "standard", datetime(2020, 1, 1, tzinfo=UTC))
            account = credits.open_graph_account(conn, graph_id).id
            credits.post(conn, account, "adjustment", credits_to_grant * credits.MICRO_PER_CREDIT, "seed")
        create_tables(boto3.client("dynamodb"), "instances", "graphs")
        registries = Registries(boto3.resource("dynamodb"), "instances", "graphs")
        registries.register("bench-node", endpoint=service.node.url, capacity=10, at=datetime.now(UTC))
        env = {
            **service.env,
            "DATABASE_URL": postgres.dsn,
            "BROKER_URL": redis_server.url,
            "INSTANCE_REGISTRY_TABLE": "instances",
            "GRAPH_REGISTRY_TABLE": "graphs",
            "GRAPH_API_KEY": KEY,
            "UPLOADS_BUCKET": BUCKET,
            "STAGING_BUCKET": BUCKET,
            "BACKUP_BUCKET": BUCKET,
            "WORK_DIR": str(work),
        }
        resources = OperationResources(env)
        try:
            yield resources
        finally:
            resources.close()
