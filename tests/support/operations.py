"""The graph plane and the operations' resources for in-process operation tests (not shipped):
moto's S3 and DynamoDB with the registries, one real graph node process, and
`OperationResources` over a migrated PostgreSQL database and a clean Redis.

The fixtures are imported by the test modules that use them (their parameters name them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from beatless.graphs.client import NodeClient
from beatless.graphs.registry import Registries, create_tables
from beatless.local.servers import GraphNodeServer
from beatless.operations.resources import OperationResources

KEY = "operations-test-key-0123456789"
BUCKET = "beatless-test-data"  # uploads, staging and backups in one bucket of moto's


@pytest.fixture
def registries(aws: str) -> Registries:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    return Registries(boto3.resource("dynamodb"), "instances", "graphs")


@pytest.fixture
def node(registries: Registries, tmp_path: Path) -> Iterator[GraphNodeServer]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "INSTANCE_"))}
    env |= {
        "GRAPH_BUFFER_POOL_MB": "64",
        "GRAPH_HEARTBEAT_SECONDS": "5",
        "INSTANCE_ID": "node-1",
        "INSTANCE_REGISTRY_TABLE": "instances",
        "GRAPH_REGISTRY_TABLE": "graphs",
        "GRAPH_NODE_CAPACITY": "5",
    }
    with GraphNodeServer(env, tmp_path / "data", KEY) as server:
        yield server


def environment(dsn: str, redis_url: str) -> dict[str, str]:
    """The worker's environment for operations, on this machine."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "BROKER_URL": redis_url,
        "INSTANCE_REGISTRY_TABLE": "instances",
        "GRAPH_REGISTRY_TABLE": "graphs",
        "GRAPH_API_KEY": KEY,
        "BACKUP_BUCKET": BUCKET,
        "STAGING_BUCKET": BUCKET,
        "UPLOADS_BUCKET": BUCKET,
    }


@pytest.fixture
def resources(dsn: str, redis_url: str, node: GraphNodeServer) -> Iterator[OperationResources]:
    made = OperationResources(environment(dsn, redis_url))
    yield made
    made.close()


def client(node: GraphNodeServer) -> NodeClient:
    return NodeClient(node.url, KEY)


def put_csv(key: str, header: str, rows: list[str]) -> str:
    body = (header + "\n" + "\n".join(rows) + "\n").encode()
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return key


def answers(node: GraphNodeServer, graph_id: str, query: str, **parameters: Any) -> list[list[Any]]:
    rows: list[list[Any]] = client(node).query(graph_id, query, parameters)["rows"]
    return rows


def node_databases(node: GraphNodeServer) -> list[str]:
    return [d["graph_id"] for d in client(node).request("GET", "/databases")["databases"]]
