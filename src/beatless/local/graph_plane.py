"""The graph plane of `beatless local`: graph nodes on loopback, a graph placed, loaded and
queried, and one `kuzu_instance_monitor` cycle — all against the moto server the rest of
the local run uses.

What runs is the deployed code: `beatless graph-node` processes (LadybugDB) that
register and heartbeat into the instance registry (moto's DynamoDB) under EC2 instance
ids that moto's EC2 knows; `beatless.graphs.placement.place_graph` for the slot; the
node's own bulk load from (moto's) S3; and the monitor's Lambda handler with the
environment infra gives it (`full_maintenance`: health check against EC2 and each
node's /health, capacity metrics into moto's CloudWatch, registry cleanup).
"""

from __future__ import annotations

import contextlib
import csv
import io
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from beatless.errors import BeatlessError

INSTANCE_TABLE = "beatless-local-graph-instances"
GRAPH_TABLE = "beatless-local-graph-registry"
BUCKET = "beatless-local-graph-data"  # staging: the monitor's demo load, operations' exports
UPLOADS_BUCKET = "beatless-local-uploads"
BACKUP_BUCKET = "beatless-local-backups"
DEMO_GRAPH = "demo-graph"
NODE_CAPACITY = 5
SCHEMA = {
    "nodes": [
        {"name": "Company", "primary_key": "id", "properties": {"id": "STRING", "name": "STRING"}},
    ],
    "relationships": [
        {"name": "Owns", "from": "Company", "to": "Company", "properties": {"share": "DOUBLE"}}
    ],
}
COMPANIES = 200
QUERY = (
    "MATCH (a:Company)-[o:Owns]->(b:Company) RETURN count(o) AS holdings, round(sum(o.share), 2) AS shares"
)


@dataclass
class GraphPlaneReport:
    nodes: int = 0
    registered: int = 0
    placed_on: str | None = None
    loaded_rows: dict[str, int] = field(default_factory=dict)
    query_rows: list[list[Any]] = field(default_factory=list)
    monitor: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        expected = [[COMPANIES, round(COMPANIES * 0.1, 2)]]
        return (
            self.registered == self.nodes > 0
            and self.query_rows == expected
            and self.monitor.get("healthy") == self.nodes
            and self.monitor.get("errors") == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "graph_nodes": self.nodes,
            "graph_nodes_registered": self.registered,
            "demo_graph_on": self.placed_on,
            "demo_graph_rows_loaded": self.loaded_rows,
            "demo_graph_query": self.query_rows,
            "graph_monitor": self.monitor,
            "graph_plane_ok": self.ok,
        }


class GraphPlaneError(BeatlessError):
    pass


@dataclass(frozen=True)
class GraphPlane:
    """What the rest of the local run needs of the started graph plane."""

    report: GraphPlaneReport
    registries: Any  # beatless.graphs.registry.Registries
    api_key: str = field(repr=False)  # this run's only; never printed

    def worker_environment(self) -> dict[str, str]:
        """What a worker's operations need to reach the plane (as infra gives the Fargate task)."""
        return {
            "INSTANCE_REGISTRY_TABLE": INSTANCE_TABLE,
            "GRAPH_REGISTRY_TABLE": GRAPH_TABLE,
            "GRAPH_API_KEY": self.api_key,
            "UPLOADS_BUCKET": UPLOADS_BUCKET,
            "STAGING_BUCKET": BUCKET,
            "BACKUP_BUCKET": BACKUP_BUCKET,
        }

    def query(self, graph_id: str, cypher: str) -> list[list[Any]]:
        """A read on the node that holds `graph_id`."""
        from beatless.graphs.client import NodeClient

        graph = self.registries.graph(graph_id)
        instance = None if graph is None else self.registries.instance(graph.instance_id)
        if instance is None:
            raise GraphPlaneError(f"graph {graph_id!r} is on no registered node")
        rows: list[list[Any]] = NodeClient(instance.endpoint, self.api_key).query(graph_id, cypher)["rows"]
        return rows


def _csv(rows: list[list[Any]], header: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def start_graph_plane(
    stack: contextlib.ExitStack,
    aws_env: dict[str, str],
    base_env: dict[str, str],
    workdir: Path,
    out: TextIO,
    *,
    nodes: int,
    started: Callable[[str, int], None] | None = None,
) -> GraphPlane:
    """Start `nodes` graph nodes (stopped when `stack` closes), place, load and query a
    graph, run one monitor cycle; print each step to `out`."""
    import boto3

    from beatless.graphs.client import NodeClient
    from beatless.graphs.placement import mark_active, place_graph
    from beatless.graphs.registry import InstanceStatus, Registries, create_tables
    from beatless.local.moto_server import MOTO_IMAGE_ID
    from beatless.local.servers import GraphNodeServer

    report = GraphPlaneReport(nodes=nodes)
    session = boto3.Session(
        region_name=aws_env["AWS_DEFAULT_REGION"],
        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
    )
    endpoint = aws_env["AWS_ENDPOINT_URL"]
    ec2, s3 = session.client("ec2", endpoint_url=endpoint), session.client("s3", endpoint_url=endpoint)
    create_tables(session.client("dynamodb", endpoint_url=endpoint), INSTANCE_TABLE, GRAPH_TABLE)
    registries = Registries(session.resource("dynamodb", endpoint_url=endpoint), INSTANCE_TABLE, GRAPH_TABLE)
    for bucket in (BUCKET, UPLOADS_BUCKET, BACKUP_BUCKET):
        s3.create_bucket(Bucket=bucket)
    instances = ec2.run_instances(ImageId=MOTO_IMAGE_ID, MinCount=nodes, MaxCount=nodes)["Instances"]
    api_key = secrets.token_urlsafe(32)  # this run's only; never printed
    registry_env = {"INSTANCE_REGISTRY_TABLE": INSTANCE_TABLE, "GRAPH_REGISTRY_TABLE": GRAPH_TABLE}

    print(f"starting {nodes} graph node(s) (LadybugDB) on loopback ...", file=out, flush=True)
    for n, ec2_instance in enumerate(instances):
        env = {
            **base_env,
            **aws_env,
            **registry_env,
            "INSTANCE_ID": ec2_instance["InstanceId"],
            "GRAPH_NODE_CAPACITY": str(NODE_CAPACITY),
            "GRAPH_BUFFER_POOL_MB": "64",
            "GRAPH_MAX_OPEN_DATABASES": "4",
            "GRAPH_HEARTBEAT_SECONDS": "5",
        }
        node = GraphNodeServer(env, workdir / f"graph-node-{n}", api_key, log=workdir / f"graph-node-{n}.log")
        stack.enter_context(node)
        if started is not None and node.proc is not None:
            started(f"graph-node-{n}", node.proc.pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        healthy = [i for i in registries.all_instances() if i.status is InstanceStatus.HEALTHY]
        report.registered = len(healthy)
        if report.registered == nodes:
            break
        time.sleep(0.2)
    for row in sorted(registries.all_instances(), key=lambda i: i.instance_id):
        print(
            f"  {row.instance_id} {row.endpoint} {row.status} capacity {row.capacity}", file=out, flush=True
        )
    if report.registered != nodes:
        raise GraphPlaneError(f"{report.registered} of {nodes} graph nodes registered within 30 s")

    placement = place_graph(registries, DEMO_GRAPH, at=datetime.now(UTC))
    report.placed_on = placement.instance_id
    client = NodeClient(placement.endpoint, api_key)
    client.create(DEMO_GRAPH, SCHEMA)
    mark_active(registries, DEMO_GRAPH)
    companies = [[f"c{i}", f"Company {i}"] for i in range(COMPANIES)]
    owns = [[f"c{i}", f"c{(i * 7 + 1) % COMPANIES}", 0.1] for i in range(COMPANIES)]
    s3.put_object(Bucket=BUCKET, Key=f"{DEMO_GRAPH}/company.csv", Body=_csv(companies, ["id", "name"]))
    s3.put_object(Bucket=BUCKET, Key=f"{DEMO_GRAPH}/owns.csv", Body=_csv(owns, ["from", "to", "share"]))
    loaded = client.load(
        DEMO_GRAPH,
        "demo-load-1",
        BUCKET,
        [("Company", f"{DEMO_GRAPH}/company.csv"), ("Owns", f"{DEMO_GRAPH}/owns.csv")],
    )
    report.loaded_rows = {str(table): int(rows) for table, rows in loaded["rows"].items()}
    report.query_rows = client.query(DEMO_GRAPH, QUERY)["rows"]
    print(
        f"placed {DEMO_GRAPH} on {placement.instance_id}; loaded {report.loaded_rows} from s3://{BUCKET}; "
        f"{QUERY!r} -> {report.query_rows}",
        file=out,
        flush=True,
    )

    report.monitor = run_monitor_cycle({**aws_env, **registry_env, "GRAPH_API_KEY": api_key})
    print(f"kuzu_instance_monitor full_maintenance: {report.monitor}", file=out, flush=True)
    return GraphPlane(report, registries, api_key)


def run_monitor_cycle(env: dict[str, str]) -> dict[str, Any]:
    """One `full_maintenance` run of the monitor's Lambda handler with `env` as its
    environment; the summary's figures."""
    from beatless.aws import reset_clients
    from beatless.jobs import job
    from beatless.jobs.resources import reset_resources
    from beatless.local.context import LocalContext
    from beatless.local.handlers import entry_point_handler
    from beatless.local.servers import environ

    name = "kuzu_instance_monitor"
    entry = job(name)
    logs = io.StringIO()  # its JSON log lines and EMF line, as Lambda would print them
    settings: dict[str, str | None] = {
        **dict(entry.environment),
        "METRICS_NAMESPACE": "Beatless/Graph",
        "GRAPH_API_KEY_SECRET_ARN": None,  # the key comes from `env`, whatever this shell has set
        **env,
    }
    with environ(settings), \
            contextlib.redirect_stdout(logs):  # fmt: skip
        handler = entry_point_handler(name)
        reset_clients()
        reset_resources()
        try:
            summary = handler({"action": "full_maintenance"}, LocalContext.for_job(entry))
        except BaseException:
            sys.stderr.write(logs.getvalue()[-8000:])  # what the handler logged says why
            raise
        finally:
            reset_resources()
            reset_clients()
    figures = {k: summary[k] for k in ("checked", "healthy", "marked_unhealthy", "graphs_removed", "errors")}
    figures.update({k: summary["metrics"][k] for k in ("AvailableSlots", "UsedSlots", "TotalCapacity")})
    return figures
