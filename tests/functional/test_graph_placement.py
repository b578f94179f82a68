"""Placement against DynamoDB and Auto Scaling in moto's server (a separate process, as
DynamoDB is): never above capacity under concurrent creates, never on an unhealthy or
draining node, one slot per graph however often it is placed, and scale-in protection
that follows an instance's first and last database."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from beatless.graphs.placement import GraphNotPlacedError, NoCapacityError, place_graph, release_graph
from beatless.graphs.registry import GraphStatus, InstanceStatus, Registries, create_tables
from beatless.local.moto_server import MOTO_IMAGE_ID

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ASG = "beatless-graph-nodes"


@pytest.fixture
def plane(aws: str) -> Iterator[tuple[Registries, Any, list[str]]]:
    """Three healthy nodes of capacity 10 in an Auto Scaling group, registered."""
    ec2 = boto3.client("ec2")
    autoscaling = boto3.client("autoscaling")
    ec2.create_launch_template(
        LaunchTemplateName="node", LaunchTemplateData={"ImageId": MOTO_IMAGE_ID, "InstanceType": "t3.micro"}
    )
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=ASG,
        LaunchTemplate={"LaunchTemplateName": "node"},
        MinSize=3,
        MaxSize=3,
        DesiredCapacity=3,
        VPCZoneIdentifier=subnet,
    )
    ids = [
        i["InstanceId"]
        for i in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
    ]
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    registries = Registries(boto3.resource("dynamodb"), "instances", "graphs")
    for n, instance_id in enumerate(ids):
        registries.register(
            instance_id, endpoint=f"http://10.0.0.{n}:8700", capacity=10, at=NOW, asg_name=ASG
        )
    yield registries, autoscaling, ids


def protected(autoscaling: Any) -> dict[str, bool]:
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[ASG])["AutoScalingGroups"][0]
    return {i["InstanceId"]: bool(i["ProtectedFromScaleIn"]) for i in group["Instances"]}


def in_parallel(n: int, call: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as error:  # the outcome under test
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_thirty_two_concurrent_placements_never_exceed_any_capacity(plane: Any) -> None:
    registries, autoscaling, ids = plane
    results = in_parallel(32, lambda i: place_graph(registries, f"g{i:02}", at=NOW, autoscaling=autoscaling))

    placed = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(placed) == 30 and all(p.created for p in placed)
    assert len(refused) == 2 and all(isinstance(r, NoCapacityError) for r in refused)
    assert "no healthy graph node has a free slot" in str(refused[0])
    counts = {i.instance_id: i.database_count for i in registries.all_instances()}
    assert counts == dict.fromkeys(ids, 10)
    rows = Counter(g.instance_id for g in registries.all_graphs() if g.status is GraphStatus.CREATING)
    assert rows == Counter(dict.fromkeys(ids, 10))  # every slot has its graph row, and only those
    assert protected(autoscaling) == dict.fromkeys(ids, True)


def test_protection_follows_the_first_and_the_last_database(plane: Any) -> None:
    registries, autoscaling, ids = plane
    first = place_graph(registries, "a", at=NOW, autoscaling=autoscaling)
    assert protected(autoscaling)[first.instance_id] is True
    assert sum(protected(autoscaling).values()) == 1
    # The next two go to the emptier nodes; a fourth shares a node with one of them.
    others = [place_graph(registries, g, at=NOW, autoscaling=autoscaling) for g in ("b", "c", "d")]
    assert protected(autoscaling) == dict.fromkeys(ids, True)
    shared = next(p for p in others if p.instance_id == first.instance_id)
    release_graph(registries, "a", at=NOW, autoscaling=autoscaling)
    assert protected(autoscaling)[first.instance_id] is True  # it still holds `shared`
    release_graph(registries, shared.graph_id, at=NOW, autoscaling=autoscaling)
    assert protected(autoscaling)[first.instance_id] is False  # its last database left
    assert registries.instance(first.instance_id).database_count == 0  # type: ignore[union-attr]
    deleted = registries.graph("a")
    assert deleted is not None and deleted.status is GraphStatus.DELETED and deleted.deleted_at


def test_never_on_an_unhealthy_or_draining_node(plane: Any) -> None:
    registries, _, ids = plane
    for instance_id, status in zip(ids[:2], (InstanceStatus.UNHEALTHY, InstanceStatus.DRAINING), strict=True):
        registries.instances.update_item(
            Key={"instance_id": instance_id},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": str(status)},
        )
    placements = [place_graph(registries, f"h{i}", at=NOW) for i in range(10)]
    assert {p.instance_id for p in placements} == {ids[2]}
    with pytest.raises(NoCapacityError):
        place_graph(registries, "h10", at=NOW)


def test_placing_one_graph_again_or_concurrently_takes_one_slot(plane: Any) -> None:
    registries, autoscaling, _ = plane
    results = in_parallel(8, lambda i: place_graph(registries, "same", at=NOW, autoscaling=autoscaling))
    assert {r.instance_id for r in results} == {results[0].instance_id}
    assert sum(r.created for r in results) == 1
    again = place_graph(registries, "same", at=NOW)
    assert again.created is False and again.instance_id == results[0].instance_id
    assert sum(i.database_count for i in registries.all_instances()) == 1


def test_a_deleted_graph_can_be_placed_again_and_a_release_without_placement_fails(plane: Any) -> None:
    registries, _, _ = plane
    place_graph(registries, "again", at=NOW)
    release_graph(registries, "again", at=NOW)
    with pytest.raises(GraphNotPlacedError):
        release_graph(registries, "again", at=NOW)
    second = place_graph(registries, "again", at=NOW)
    assert second.created is True
    assert sum(i.database_count for i in registries.all_instances()) == 1
