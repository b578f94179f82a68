"""The graph registries in DynamoDB: the contract between graph nodes, the worker, the
`kuzu_instance_monitor` job and operators.

**Instance registry** (`INSTANCE_REGISTRY_TABLE`), partition key `instance_id` (S), one
item per graph node:

| attribute | type | meaning |
|---|---|---|
| `instance_id` | S | the EC2 instance id (locally: any id) |
| `endpoint` | S | `http://host:port` of the node's API |
| `status` | S | `healthy` (takes new graphs), `unhealthy` (failed a check; may come back), `draining` |
| `capacity` | N | databases the node may host |
| `database_count` | N | databases placed on it (placement: conditional on `database_count < capacity`) |
| `disk_used_bytes`, `disk_total_bytes` | N | its data volume, from its heartbeat |
| `last_heartbeat` | S | ISO 8601 UTC with `Z` |
| `unhealthy_since` | S | when status is `unhealthy`: the first failure (kept across later failures) |
| `asg_name` | S | its Auto Scaling group (scale-in protection follows its databases) |
| `version` | S | the node's software version |
| `registered_at` | S | ISO 8601 UTC, first registration |

**Graph registry** (`GRAPH_REGISTRY_TABLE`), partition key `graph_id` (S), GSI
`instance_id-index` (partition key `instance_id`):

| attribute | type | meaning |
|---|---|---|
| `graph_id` | S | the graph (ids as `beatless.db.arguments.check_id`) |
| `instance_id` | S | the node that owns its database file |
| `status` | S | `creating`, `active`, `deleted`, `orphaned` (its node is gone) |
| `size_bytes` | N | its database's size, from the owning node |
| `created_at`, `deleted_at` | S | ISO 8601 UTC |
| `last_backup_key`, `last_backup_sha256` | S | the newest backup in S3 and the SHA-256 of the stored object |
| `communities` | S | JSON: the last `detect_communities` summary (communities, modularity, sizes) |

A `draining` node takes no new graphs. Every scan and query here is paginated.
Numbers come back from DynamoDB as `Decimal`; the records hold ints.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beatless.errors import BeatlessError
from beatless.timestamps import iso_z

GRAPH_INSTANCE_INDEX = "instance_id-index"
BATCH_GET_LIMIT = 100  # DynamoDB's BatchGetItem maximum
BATCH_GET_ATTEMPTS = 8


class RegistryUnavailableError(BeatlessError):
    """DynamoDB kept part of a read unanswered (throttling); the caller's run fails."""


class InstanceStatus(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


class GraphStatus(enum.StrEnum):
    CREATING = "creating"
    ACTIVE = "active"
    DELETED = "deleted"
    ORPHANED = "orphaned"


# Graphs that occupy a slot on their node.
PLACED_STATUSES = (GraphStatus.CREATING, GraphStatus.ACTIVE)


@dataclass(frozen=True)
class Instance:
    instance_id: str
    endpoint: str
    status: InstanceStatus
    capacity: int
    database_count: int
    disk_used_bytes: int = 0
    disk_total_bytes: int = 0
    last_heartbeat: str | None = None
    unhealthy_since: str | None = None
    asg_name: str | None = None
    version: str | None = None

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - self.database_count)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Instance:
        return cls(
            instance_id=str(item["instance_id"]),
            endpoint=str(item.get("endpoint", "")),
            status=InstanceStatus(str(item.get("status", InstanceStatus.UNHEALTHY))),
            capacity=int(item.get("capacity", 0)),
            database_count=int(item.get("database_count", 0)),
            disk_used_bytes=int(item.get("disk_used_bytes", 0)),
            disk_total_bytes=int(item.get("disk_total_bytes", 0)),
            last_heartbeat=_optional(item, "last_heartbeat"),
            unhealthy_since=_optional(item, "unhealthy_since"),
            asg_name=_optional(item, "asg_name"),
            version=_optional(item, "version"),
        )


@dataclass(frozen=True)
class Graph:
    graph_id: str
    instance_id: str
    status: GraphStatus
    size_bytes: int = 0
    created_at: str | None = None
    deleted_at: str | None = None
    last_backup_key: str | None = None
    last_backup_sha256: str | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Graph:
        return cls(
            graph_id=str(item["graph_id"]),
            instance_id=str(item.get("instance_id", "")),
            status=GraphStatus(str(item["status"])),
            size_bytes=int(item.get("size_bytes", 0)),
            created_at=_optional(item, "created_at"),
            deleted_at=_optional(item, "deleted_at"),
            last_backup_key=_optional(item, "last_backup_key"),
            last_backup_sha256=_optional(item, "last_backup_sha256"),
        )


def _optional(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return None if value is None else str(value)


@dataclass(frozen=True)
class Registries:
    """The two tables, reached through one DynamoDB resource (`boto3.resource("dynamodb")`)."""

    dynamodb: Any
    instance_table: str
    graph_table: str

    @property
    def instances(self) -> Any:
        return self.dynamodb.Table(self.instance_table)

    @property
    def graphs(self) -> Any:
        return self.dynamodb.Table(self.graph_table)

    @property
    def client(self) -> Any:
        return self.dynamodb.meta.client

    # -- reads (paginated) ------------------------------------------------------------

    def all_instances(self) -> Iterator[Instance]:
        for item in _scan(self.instances):
            yield Instance.from_item(item)

    def instance(self, instance_id: str) -> Instance | None:
        item = self.instances.get_item(Key={"instance_id": instance_id}, ConsistentRead=True).get("Item")
        return None if item is None else Instance.from_item(item)

    def all_graphs(self) -> Iterator[Graph]:
        for item in _scan(self.graphs):
            yield Graph.from_item(item)

    def graph(self, graph_id: str) -> Graph | None:
        item = self.graphs.get_item(Key={"graph_id": graph_id}, ConsistentRead=True).get("Item")
        return None if item is None else Graph.from_item(item)

    def placed_sizes(self, graph_ids: Sequence[str]) -> dict[str, int]:
        """`size_bytes` of each of `graph_ids` whose database exists (`creating`/`active`):
        BatchGetItem, 100 keys a call, unprocessed keys asked again. A graph the registry
        does not know, or one deleted or orphaned, is absent (it stores nothing on a node)."""
        sizes: dict[str, int] = {}
        unique = list(dict.fromkeys(graph_ids))
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            request: dict[str, Any] = {
                self.graph_table: {
                    "Keys": [{GRAPH_KEY: g} for g in unique[start : start + BATCH_GET_LIMIT]],
                    "ConsistentRead": True,
                    "ProjectionExpression": "graph_id, #s, size_bytes",
                    "ExpressionAttributeNames": {"#s": "status"},
                }
            }
            for attempt in range(BATCH_GET_ATTEMPTS):
                page = self.dynamodb.batch_get_item(RequestItems=request)
                for item in page.get("Responses", {}).get(self.graph_table, []):
                    if item.get("status") in PLACED_STATUSES:
                        sizes[str(item[GRAPH_KEY])] = int(item.get("size_bytes", 0))
                request = page.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off, ask for the rest
            else:
                raise RegistryUnavailableError(
                    f"{self.graph_table}: keys still unprocessed after {BATCH_GET_ATTEMPTS} attempts"
                )
        return sizes

    def graphs_on(self, instance_id: str) -> Iterator[Graph]:
        """Every graph the instance holds or held (the GSI `instance_id-index`)."""
        kwargs: dict[str, Any] = {
            "IndexName": GRAPH_INSTANCE_INDEX,
            "KeyConditionExpression": "instance_id = :i",
            "ExpressionAttributeValues": {":i": instance_id},
        }
        while True:
            page = self.graphs.query(**kwargs)
            for item in page.get("Items", []):
                yield Graph.from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- a node's own rows -------------------------------------------------------------

    def register(
        self,
        instance_id: str,
        *,
        endpoint: str,
        capacity: int,
        at: datetime,
        asg_name: str | None = None,
        version: str | None = None,
    ) -> None:
        """A node announces itself: healthy, its endpoint and capacity; its count is kept."""
        # Every name through a placeholder: `status` and `capacity` are DynamoDB reserved words.
        fields: dict[str, Any] = {
            "endpoint": endpoint,
            "status": str(InstanceStatus.HEALTHY),
            "capacity": capacity,
            "last_heartbeat": iso_z(at),
        }
        if asg_name:
            fields["asg_name"] = asg_name
        if version:
            fields["version"] = version
        names = {f"#{n}": n for n in (*fields, "database_count", "registered_at", "unhealthy_since")}
        values: dict[str, Any] = {f":{n}": v for n, v in fields.items()} | {":zero": 0}
        update = (
            "SET "
            + ", ".join(f"#{n} = :{n}" for n in fields)
            + ", #database_count = if_not_exists(#database_count, :zero)"
            + ", #registered_at = if_not_exists(#registered_at, :last_heartbeat)"
            + " REMOVE #unhealthy_since"
        )
        self.instances.update_item(
            Key={"instance_id": instance_id},
            UpdateExpression=update,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def heartbeat(
        self, instance_id: str, *, at: datetime, disk_used_bytes: int, disk_total_bytes: int
    ) -> None:
        """A node's periodic figures (its status is the monitor's to judge)."""
        self.instances.update_item(
            Key={"instance_id": instance_id},
            UpdateExpression="SET last_heartbeat = :t, disk_used_bytes = :u, disk_total_bytes = :d",
            ConditionExpression="attribute_exists(instance_id)",
            ExpressionAttributeValues={":t": iso_z(at), ":u": disk_used_bytes, ":d": disk_total_bytes},
        )

    def record_size(self, graph_id: str, size_bytes: int, *, instance_id: str) -> None:
        """The graph's size, as the node that owns it measured it (only that node may record
        it: the storage collector bills it). Raises ConditionalCheckFailed otherwise."""
        self.graphs.update_item(
            Key={"graph_id": graph_id},
            UpdateExpression="SET size_bytes = :s",
            ConditionExpression="attribute_exists(graph_id) AND instance_id = :me",
            ExpressionAttributeValues={":s": size_bytes, ":me": instance_id},
        )

    def record_backup(self, graph_id: str, key: str, sha256: str) -> None:
        self.graphs.update_item(
            Key={"graph_id": graph_id},
            UpdateExpression="SET last_backup_key = :k, last_backup_sha256 = :h",
            ConditionExpression="attribute_exists(graph_id)",
            ExpressionAttributeValues={":k": key, ":h": sha256},
        )

    def record_communities(self, graph_id: str, summary: Mapping[str, Any]) -> None:
        self.graphs.update_item(
            Key={"graph_id": graph_id},
            UpdateExpression="SET communities = :s",
            ConditionExpression="attribute_exists(graph_id)",
            ExpressionAttributeValues={":s": json.dumps(summary, sort_keys=True)},
        )


def _scan(table: Any) -> Iterator[Mapping[str, Any]]:
    kwargs: dict[str, Any] = {"ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# The key schema of both tables, as infra declares them (tests/infra checks the stack against
# these) and as local runs and tests create them in moto.
INSTANCE_KEY = "instance_id"
GRAPH_KEY = "graph_id"


def create_tables(dynamodb_client: Any, instance_table: str, graph_table: str) -> None:
    """Create both registries on demand (local runs and tests; AWS gets them from the graph stack)."""
    dynamodb_client.create_table(
        TableName=instance_table,
        KeySchema=[{"AttributeName": INSTANCE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": INSTANCE_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb_client.create_table(
        TableName=graph_table,
        KeySchema=[{"AttributeName": GRAPH_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": GRAPH_KEY, "AttributeType": "S"},
            {"AttributeName": INSTANCE_KEY, "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": GRAPH_INSTANCE_INDEX,
                "KeySchema": [{"AttributeName": INSTANCE_KEY, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
