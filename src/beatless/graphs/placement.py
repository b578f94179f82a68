"""Placing a graph's database on a graph node, and taking it off again.

`place_graph` picks a healthy instance with a free slot, most free slots first,
and claims the slot and the graph's registry row in ONE DynamoDB transaction:

- the instance's `database_count` is incremented on the condition
  `status = healthy AND database_count < capacity` — never above capacity,
  whatever runs concurrently, never on an `unhealthy` or `draining` node;
- the graph row is written `creating` on the condition that no placed row
  exists (`attribute_not_exists(graph_id)` or a row `deleted`/`orphaned`).

If the slot's condition fails the next candidate is tried; if the graph's fails,
another create of the same graph won and its placement is returned (placing is
idempotent per graph id). When every candidate is full, `NoCapacityError`.

`release_graph` marks the row `deleted` and gives the slot back, again in one
transaction. An instance has Auto Scaling scale-in protection
(`SetInstanceProtection`) while it holds a database: set after its first is
placed, removed after its last one leaves, so the group never terminates a node
that holds data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from beatless.db.arguments import check_id
from beatless.errors import BeatlessError
from beatless.graphs.registry import PLACED_STATUSES, Graph, GraphStatus, Instance, InstanceStatus, Registries
from beatless.timestamps import iso_z


class NoCapacityError(BeatlessError):
    """No healthy graph node has a free slot: the group must scale out (AvailableSlots alarm)."""


class GraphNotPlacedError(BeatlessError):
    """The graph has no placed database to release."""


@dataclass(frozen=True)
class Placement:
    graph_id: str
    instance_id: str
    endpoint: str
    created: bool  # False: the graph was placed before (by this call's twin or an earlier one)


def place_graph(registries: Registries, graph_id: str, *, at: datetime, autoscaling: Any = None) -> Placement:
    """Claim a slot for `graph_id` (see the module docstring). Raises `NoCapacityError`."""
    check_id("graph_id", graph_id)
    existing = registries.graph(graph_id)
    if existing is not None and existing.status in PLACED_STATUSES:
        return _placed(registries, existing, created=False)
    candidates = sorted(
        (i for i in registries.all_instances() if i.status is InstanceStatus.HEALTHY and i.free_slots > 0),
        key=lambda i: (-i.free_slots, i.instance_id),
    )
    for instance in candidates:
        try:
            _claim(registries, graph_id, instance, at)
        except ClientError as error:
            reasons = _cancellation_reasons(error)
            if reasons is None:
                raise
            if reasons[1] == "ConditionalCheckFailed":  # the graph is placed already: theirs wins
                winner = registries.graph(graph_id)
                assert winner is not None
                return _placed(registries, winner, created=False)
            continue  # the slot went to someone else, or the node changed: next candidate
        _follow_protection(registries, autoscaling, instance)
        return Placement(graph_id, instance.instance_id, instance.endpoint, created=True)
    total = sum(i.free_slots for i in candidates)
    raise NoCapacityError(
        f"no healthy graph node has a free slot for {graph_id!r} ({len(candidates)} candidate(s) with "
        f"{total} free slot(s) at the start were all taken): scale the graph node group out"
    )


def release_graph(registries: Registries, graph_id: str, *, at: datetime, autoscaling: Any = None) -> Graph:
    """Mark the graph `deleted` and give its slot back. Raises `GraphNotPlacedError`."""
    graph = registries.graph(graph_id)
    if graph is None or graph.status not in PLACED_STATUSES:
        raise GraphNotPlacedError(f"graph {graph_id!r} has no placed database (registry: {graph})")
    registries.client.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": registries.graph_table,
                    "Key": {"graph_id": graph_id},
                    "UpdateExpression": "SET #s = :deleted, deleted_at = :t",
                    "ConditionExpression": "#s IN (:creating, :active) AND instance_id = :i",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {
                        ":deleted": str(GraphStatus.DELETED),
                        ":creating": str(GraphStatus.CREATING),
                        ":active": str(GraphStatus.ACTIVE),
                        ":t": iso_z(at),
                        ":i": graph.instance_id,
                    },
                }
            },
            {
                "Update": {
                    "TableName": registries.instance_table,
                    "Key": {"instance_id": graph.instance_id},
                    "UpdateExpression": "SET database_count = database_count - :one",
                    "ConditionExpression": "database_count > :zero",
                    "ExpressionAttributeValues": {":one": 1, ":zero": 0},
                }
            },
        ]
    )
    instance = registries.instance(graph.instance_id)
    if instance is not None:
        _follow_protection(registries, autoscaling, instance)
    released = registries.graph(graph_id)
    assert released is not None
    return released


def mark_active(registries: Registries, graph_id: str) -> None:
    """The graph's database exists on its node: `creating` -> `active`."""
    registries.graphs.update_item(
        Key={"graph_id": graph_id},
        UpdateExpression="SET #s = :active",
        ConditionExpression="#s = :creating",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":active": str(GraphStatus.ACTIVE),
            ":creating": str(GraphStatus.CREATING),
        },
    )


def _claim(registries: Registries, graph_id: str, instance: Instance, at: datetime) -> None:
    # The resource's client: attribute values are plain Python values (boto3 serializes them).
    registries.client.transact_write_items(
        TransactItems=[
            {
                "Update": {
                    "TableName": registries.instance_table,
                    "Key": {"instance_id": instance.instance_id},
                    "UpdateExpression": "SET database_count = database_count + :one",
                    "ConditionExpression": "#s = :healthy AND database_count < #cap",
                    "ExpressionAttributeNames": {"#s": "status", "#cap": "capacity"},
                    "ExpressionAttributeValues": {
                        ":one": 1,
                        ":healthy": str(InstanceStatus.HEALTHY),
                    },
                }
            },
            {
                "Put": {
                    "TableName": registries.graph_table,
                    "Item": {
                        "graph_id": graph_id,
                        "instance_id": instance.instance_id,
                        "status": str(GraphStatus.CREATING),
                        "size_bytes": 0,
                        "created_at": iso_z(at),
                    },
                    "ConditionExpression": "attribute_not_exists(graph_id) OR #s IN (:deleted, :orphaned)",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {
                        ":deleted": str(GraphStatus.DELETED),
                        ":orphaned": str(GraphStatus.ORPHANED),
                    },
                }
            },
        ]
    )


def _cancellation_reasons(error: ClientError) -> list[str] | None:
    """The per-item codes of a cancelled transaction (None: another error)."""
    if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return None
    reasons = error.response.get("CancellationReasons")
    if reasons:
        return [str(r.get("Code", "None")) for r in reasons]
    # Some endpoints only say it in the message: "[ConditionalCheckFailed, None]".
    message = str(error.response.get("Error", {}).get("Message", ""))
    inside = message[message.find("[") + 1 : message.rfind("]")]
    codes = [part.strip() for part in inside.split(",")]
    return codes if len(codes) == 2 else ["Unknown", "Unknown"]


def _count(registries: Registries, instance_id: str) -> int:
    instance = registries.instance(instance_id)
    return 0 if instance is None else instance.database_count


def _follow_protection(registries: Registries, autoscaling: Any, instance: Instance) -> None:
    """Protected exactly while the instance holds a database. Set after every change from
    the count read then (idempotent calls); an unprotect is checked once more against the
    count, so a placement racing the release of the last database leaves it protected."""
    if autoscaling is None or not instance.asg_name:
        return
    holds = _count(registries, instance.instance_id) > 0
    _protect(autoscaling, instance, holds)
    if not holds and _count(registries, instance.instance_id) > 0:
        _protect(autoscaling, instance, True)


def _placed(registries: Registries, graph: Graph, *, created: bool) -> Placement:
    instance = registries.instance(graph.instance_id)
    endpoint = instance.endpoint if instance is not None else ""
    return Placement(graph.graph_id, graph.instance_id, endpoint, created=created)


def _protect(autoscaling: Any, instance: Instance, protected: bool) -> None:
    if autoscaling is None or not instance.asg_name:
        return
    autoscaling.set_instance_protection(
        InstanceIds=[instance.instance_id],
        AutoScalingGroupName=instance.asg_name,
        ProtectedFromScaleIn=protected,
    )
