"""The kuzu_instance_monitor core against EC2, DynamoDB and CloudWatch in moto, and real
graph node processes: healthy, failing with 500, hanging, refusing; stopped, terminated
and unknown instances; a recovery; a draining node; graphs deleted 6 and 8 days ago and
orphans. One transient failure deletes nothing; a failing step raises after the rest ran."""

from __future__ import annotations

import importlib
import json
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from beatless.errors import InvalidInputError
from beatless.graphs.monitor import (
    Action,
    Clients,
    MaintenanceFailedError,
    MonitorSettings,
    http_health,
    maintain,
)
from beatless.graphs.registry import GraphStatus, InstanceStatus, Registries, create_tables
from beatless.jobs.resources import reset_resources
from beatless.local.moto_server import MOTO_IMAGE_ID
from beatless.local.servers import GraphNodeServer, free_port
from beatless.timestamps import iso_z
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.slow

KEY = "monitor-test-key-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)
SETTINGS = MonitorSettings(instance_table="instances", graph_table="graphs")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, GraphNodeServer]]:
    """Three node processes: one healthy, one whose disk is gone (500), one that hangs."""
    root = tmp_path_factory.mktemp("nodes")
    env = {"PATH": "/usr/bin:/bin", "GRAPH_BUFFER_POOL_MB": "32"}
    started = {name: GraphNodeServer(env, root / name, KEY).start() for name in ("healthy", "broken", "hung")}
    shutil.rmtree(root / "broken")  # its /health now fails: 500
    started["hung"].proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    yield started
    started["hung"].proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    for server in started.values():
        server.stop()


@pytest.fixture
def world(aws_inprocess: None, nodes: dict[str, GraphNodeServer]) -> Iterator[dict[str, Any]]:
    ec2 = boto3.client("ec2")
    ids = [
        i["InstanceId"] for i in ec2.run_instances(ImageId=MOTO_IMAGE_ID, MinCount=9, MaxCount=9)["Instances"]
    ]
    names = [
        "healthy",
        "broken",
        "hung",
        "refusing",
        "stopped",
        "terminated",
        "draining",
        "recovering",
        "late",
    ]
    by_name = dict(zip(names, ids, strict=True))
    ec2.stop_instances(InstanceIds=[by_name["stopped"]])
    ec2.terminate_instances(InstanceIds=[by_name["terminated"]])
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    registries = Registries(boto3.resource("dynamodb"), "instances", "graphs")
    closed = f"http://127.0.0.1:{free_port()}"
    endpoints = {
        "healthy": nodes["healthy"].url,
        "broken": nodes["broken"].url,
        "hung": nodes["hung"].url,
        "refusing": closed,
        "stopped": closed,
        "terminated": closed,
        "draining": nodes["healthy"].url,
        "recovering": nodes["healthy"].url,
        "late": nodes["hung"].url,
        "ghost": closed,  # registered, but EC2 never heard of it
    }
    by_name["ghost"] = "i-0123456789abcdef0"
    for name, instance_id in by_name.items():
        registries.register(instance_id, endpoint=endpoints[name], capacity=10, at=NOW)
    counts = {"healthy": 3, "draining": 8, "recovering": 1, "terminated": 2}
    for name, count in counts.items():
        registries.instances.update_item(
            Key={"instance_id": by_name[name]},
            UpdateExpression="SET database_count = :c",
            ExpressionAttributeValues={":c": count},
        )
    set_status(registries, by_name["draining"], InstanceStatus.DRAINING)
    set_status(registries, by_name["recovering"], InstanceStatus.UNHEALTHY, since=NOW - timedelta(hours=2))
    set_status(registries, by_name["late"], InstanceStatus.UNHEALTHY, since=NOW - timedelta(hours=1))
    graphs = {
        "on-terminated-1": (by_name["terminated"], GraphStatus.ACTIVE, None),
        "on-terminated-2": (by_name["terminated"], GraphStatus.CREATING, None),
        "deleted-6-days": (by_name["healthy"], GraphStatus.DELETED, NOW - timedelta(days=6)),
        "deleted-8-days": (by_name["healthy"], GraphStatus.DELETED, NOW - timedelta(days=8)),
        "orphan": ("i-00000000000000000", GraphStatus.ORPHANED, None),
        "live": (by_name["healthy"], GraphStatus.ACTIVE, None),
    }
    for graph_id, (instance_id, status, deleted) in graphs.items():
        item = {"graph_id": graph_id, "instance_id": instance_id, "status": str(status), "size_bytes": 0}
        if deleted is not None:
            item["deleted_at"] = iso_z(deleted)
        registries.graphs.put_item(Item=item)
    clients = Clients(registries, ec2, boto3.client("cloudwatch"), http_health(KEY))
    yield {"clients": clients, "ids": by_name, "registries": registries}


def set_status(
    registries: Registries, instance_id: str, status: InstanceStatus, since: datetime | None = None
) -> None:
    values: dict[str, Any] = {":s": str(status)}
    update = "SET #s = :s"
    if since is not None:
        update += ", unhealthy_since = :t"
        values[":t"] = iso_z(since)
    registries.instances.update_item(
        Key={"instance_id": instance_id},
        UpdateExpression=update,
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=values,
    )


def metric(name: str, instance_id: str | None = None) -> list[float]:
    cloudwatch = boto3.client("cloudwatch")
    dims = [{"Name": "InstanceId", "Value": instance_id}] if instance_id else []
    stats = cloudwatch.get_metric_statistics(
        Namespace="Beatless/Graph",
        MetricName=name,
        Dimensions=dims,
        StartTime=NOW - timedelta(hours=1),
        EndTime=NOW + timedelta(hours=1),
        Period=60,
        Statistics=["Maximum"],
    )
    return [p["Maximum"] for p in stats["Datapoints"]]


def statuses(registries: Registries) -> dict[str, str]:
    return {i.instance_id: i.status.value for i in registries.all_instances()}


def test_full_maintenance(world: dict[str, Any]) -> None:
    ids, registries = world["ids"], world["registries"]
    started = time.monotonic()
    report = maintain(world["clients"], SETTINGS, Action.FULL_MAINTENANCE, now=NOW, dry_run=False)
    took = time.monotonic() - started
    assert took < 10  # one node hangs: its check gives up after 3 s, the others run beside it

    after = statuses(registries)
    assert ids["terminated"] not in after and ids["ghost"] not in after  # only these leave
    assert after[ids["healthy"]] == "healthy"
    for name in ("broken", "hung", "refusing", "stopped"):
        assert after[ids[name]] == "unhealthy", name  # a failure makes it unhealthy, nothing more
    assert after[ids["draining"]] == "draining"  # healthy /health: still draining
    assert (
        after[ids["recovering"]] == "healthy"
        and registries.instance(ids["recovering"]).unhealthy_since is None
    )  # type: ignore[union-attr]
    late = registries.instance(ids["late"])
    assert late is not None and late.unhealthy_since == iso_z(
        NOW - timedelta(hours=1)
    )  # the first failure kept
    assert sorted(report.past_grace) == sorted([ids["late"]])  # unhealthy for an hour, grace 15 min
    assert metric("InstancesPastGrace") == [1.0]

    graphs = {g.graph_id: g.status.value for g in registries.all_graphs()}
    # The terminated instance's graphs were orphaned, and cleanup (the third step) removed them.
    assert graphs == {"deleted-6-days": "deleted", "live": "active"}
    assert sorted(report.orphaned_graphs) == ["on-terminated-1", "on-terminated-2"]
    assert sorted(report.graphs_removed) == ["deleted-8-days", "on-terminated-1", "on-terminated-2", "orphan"]

    # Metrics count healthy instances only: healthy (3 of 10) and recovering (1 of 10).
    assert (
        metric("AvailableSlots") == [16.0]
        and metric("UsedSlots") == [4.0]
        and metric("TotalCapacity") == [20.0]
    )
    assert metric("HealthyInstances") == [2.0] and metric("UnhealthyInstances") == [5.0]
    assert metric("InstanceDatabaseCount", ids["draining"]) == [8.0]
    assert metric("InstanceUtilization", ids["healthy"]) == [30.0]
    assert metric("MonitorErrors") == [0.0] and metric("GraphsRemoved") == [4.0]


def test_a_dry_run_changes_nothing_but_still_publishes(world: dict[str, Any]) -> None:
    registries = world["registries"]
    before = (statuses(registries), sorted((g.graph_id, g.status.value) for g in registries.all_graphs()))
    report = maintain(world["clients"], SETTINGS, Action.FULL_MAINTENANCE, now=NOW, dry_run=True)
    after = (statuses(registries), sorted((g.graph_id, g.status.value) for g in registries.all_graphs()))
    assert after == before
    assert len(report.removed) == 2 and len(report.marked_unhealthy) == 4 and len(report.graphs_removed) == 2
    # As the registry stands: seven instances still healthy in it (7 + 10 + 10 + 10 + 10 + 8 + 10 free).
    assert metric("AvailableSlots") == [65.0]


def test_a_state_change_checks_that_instance_only(world: dict[str, Any]) -> None:
    ids, registries = world["ids"], world["registries"]
    before = statuses(registries)
    report = maintain(
        world["clients"], SETTINGS, Action.HEALTH_CHECK, now=NOW, dry_run=False, instance_id=ids["stopped"]
    )
    assert report.checked == 1 and report.marked_unhealthy == [ids["stopped"]]
    assert metric("InstancesPastGrace") == []  # one instance's check says nothing of the fleet's
    after = statuses(registries)
    assert {k: v for k, v in after.items() if k != ids["stopped"]} == {
        k: v for k, v in before.items() if k != ids["stopped"]
    }


def test_a_failing_step_raises_after_the_others_ran(world: dict[str, Any]) -> None:
    registries = world["registries"]
    boto3.client("dynamodb").delete_table(TableName="graphs")  # orphaning and cleanup cannot work
    with pytest.raises(MaintenanceFailedError) as failed:
        maintain(world["clients"], SETTINGS, Action.FULL_MAINTENANCE, now=NOW, dry_run=False)
    ids = world["ids"]
    after = statuses(registries)
    assert ids["terminated"] in after  # its graphs could not be orphaned: the row stays for the next run
    assert after[ids["stopped"]] == "unhealthy"  # the other instances were still judged
    assert metric("AvailableSlots") and metric("MonitorErrors")[0] >= 2  # metrics went out before the raise
    assert len(failed.value.failures) >= 2


def rows(registries: Registries) -> tuple[list[Any], list[Any]]:
    return (
        sorted(registries.instances.scan(ConsistentRead=True)["Items"], key=str),
        sorted(registries.graphs.scan(ConsistentRead=True)["Items"], key=str),
    )


STATE_CHANGE = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2026-11-23T09:12:00Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {"state": "stopped"},
}


@pytest.fixture
def lambda_handler(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {
        "INSTANCE_REGISTRY_TABLE": "instances",
        "GRAPH_REGISTRY_TABLE": "graphs",
        "GRAPH_API_KEY": KEY,
        "METRICS_NAMESPACE": "Beatless/Graph",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GRAPH_API_KEY_SECRET_ARN", raising=False)
    reset_resources()
    yield importlib.import_module("kuzu_instance_monitor").handler
    reset_resources()


def test_the_lambda_reads_the_node_key_from_secrets_manager(
    world: dict[str, Any], lambda_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, registries = world["ids"], world["registries"]
    secret = boto3.client("secretsmanager").create_secret(Name="graph-api-key", SecretString=KEY)
    monkeypatch.delenv("GRAPH_API_KEY")
    monkeypatch.setenv("GRAPH_API_KEY_SECRET_ARN", secret["ARN"])
    reset_resources()
    summary = lambda_handler({"action": "health_check", "instance_id": ids["healthy"]}, FakeLambdaContext())
    assert summary["healthy"] == 1  # the node accepted the key from the secret (a wrong key: 401)
    assert registries.instance(ids["healthy"]).status is InstanceStatus.HEALTHY  # type: ignore[union-attr]
    secret_wrong = boto3.client("secretsmanager").create_secret(Name="wrong-key", SecretString="x" * 30)
    monkeypatch.setenv("GRAPH_API_KEY_SECRET_ARN", secret_wrong["ARN"])
    reset_resources()
    summary = lambda_handler({"action": "health_check", "instance_id": ids["healthy"]}, FakeLambdaContext())
    assert summary["marked_unhealthy"] == [ids["healthy"]]


def test_the_lambda_runs_a_state_change_as_a_check_of_that_instance(
    world: dict[str, Any], lambda_handler: Any
) -> None:
    ids, registries = world["ids"], world["registries"]
    before = statuses(registries)
    event = {**STATE_CHANGE, "detail": {"instance-id": ids["stopped"], "state": "stopped"}}
    summary = lambda_handler(event, FakeLambdaContext())
    assert summary["action"] == "health_check" and summary["checked"] == 1
    assert summary["scheduled_time"] == "2026-11-23T09:12:00Z"
    after = statuses(registries)
    assert after[ids["stopped"]] == "unhealthy"
    assert {k: v for k, v in after.items() if k != ids["stopped"]} == {
        k: v for k, v in before.items() if k != ids["stopped"]
    }
    json.dumps(summary)


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({}, "action"),
    ({"dry_run": True}, "action"),
    ({"action": "reboot"}, "action"),
    ({"action": 5}, "action"),
    ({"action": ["health_check"]}, "action"),
    ({"action": "health_check", "instance_id": 7}, "instance_id"),
    ({"action": "health_check", "instance_id": ""}, "instance_id"),
    ({"action": "cleanup_graphs", "dry_run": "no"}, "dry_run"),
    ({"action": "cleanup_graphs", "retention_days": 1}, "retention_days"),
    ({**STATE_CHANGE, "source": "aws.autoscaling"}, "source"),
    ({**STATE_CHANGE, "detail": "i-0123"}, "detail"),
    ({**STATE_CHANGE, "detail": {"state": "stopped"}}, "detail.instance-id"),
    ({**STATE_CHANGE, "detail": {"instance-id": "i-0123456789abcdef0"}}, "detail.state"),
    (
        {
            **STATE_CHANGE,
            "detail": {"instance-id": "i-0123456789abcdef0", "state": "stopped"},
            "time": "now",
        },
        "time",
    ),
]


def test_malformed_events_are_rejected_naming_the_field_and_change_nothing(
    world: dict[str, Any], lambda_handler: Any
) -> None:
    before = rows(world["registries"])
    for event, field in MALFORMED:
        with pytest.raises(InvalidInputError) as info:
            lambda_handler(event, FakeLambdaContext())
        assert info.value.field == field, event
    assert rows(world["registries"]) == before
    assert metric("AvailableSlots") == []  # rejected before anything ran


def test_health_check_asks_ec2_once_per_batch_of_200_instances(aws_inprocess: None) -> None:
    ec2 = boto3.client("ec2")
    ids = [
        ec2.run_instances(ImageId=MOTO_IMAGE_ID, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        for _ in range(201)  # one reservation each, as an Auto Scaling group launches them
    ]
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    registries = Registries(boto3.resource("dynamodb"), "instances", "graphs")
    closed = f"http://127.0.0.1:{free_port()}"
    with registries.instances.batch_writer() as batch:
        for instance_id in ids:
            batch.put_item(
                Item={"instance_id": instance_id, "endpoint": closed, "status": "healthy", "capacity": 10,
                      "database_count": 0, "last_heartbeat": iso_z(NOW)}
            )  # fmt: skip
    calls: list[str] = []
    ec2.meta.events.register("before-call.ec2.DescribeInstances", lambda **kw: calls.append("describe"))
    clients = Clients(registries, ec2, boto3.client("cloudwatch"), http_health(KEY, timeout=1.0))

    report = maintain(clients, SETTINGS, Action.HEALTH_CHECK, now=NOW, dry_run=True)

    assert report.checked == 201 and len(report.marked_unhealthy) == 201  # every one refused
    assert len(calls) == 2  # batches of 200 and 1 ids, one page each (moto pages 100 reservations)
