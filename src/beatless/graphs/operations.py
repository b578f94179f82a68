"""The cores of the graph operations (the worker's `graph` queue), run by
`beatless.operations.runtime.run_operation`.

Each is idempotent per graph, so an attempt that takes over from a dead one
completes its work instead of doubling it:

- `create_graph`: place (a slot claimed in the registries; a graph placed
  before keeps its placement) -> create the database on its node (one that
  exists already with the same tables is the earlier attempt's) -> `active`.
  Cancelled or failed after the placement, it deletes what it made and marks
  the registry row `deleted`: no half-created graph holds a slot.
- `delete_graph`: the database off its node (gone already is fine) -> the row
  `deleted`, the slot given back.
- `backup_graph`: the node's consistent backup into the backups bucket under
  `backups/<graph id>/<operation id>.lbbk` (a retried attempt writes the same key);
  the node records the key and its SHA-256 in the graph registry.
- `restore_graph`: a backup (the graph's last one by default, checked against the
  SHA-256 the registry recorded) verified and swapped in by the graph's node.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from beatless.errors import InvalidInputError
from beatless.graphs.client import NodeRequestError
from beatless.graphs.placement import mark_active, place_graph, release_graph
from beatless.graphs.registry import PLACED_STATUSES, GraphStatus
from beatless.operations.records import LeaseLostError
from beatless.operations.runtime import Operation


def create_graph(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    return _make_graph(op, params["graph_id"], params["schema"])


def _make_graph(
    op: Operation,
    graph_id: str,
    schema: dict[str, Any],
    fill: Callable[[Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """place -> create -> (fill: load its data through its node) -> activate; undone on
    failure or cancellation (see the module docstring)."""
    resources = op.resources
    registries = resources.registries()
    op.stage("place", 10, "claiming a slot on a graph node")
    before = registries.graph(graph_id)
    # Ours to undo: placed now, or left `creating` by an earlier attempt. A graph that was
    # active already belongs to whoever made it: never undone here.
    ours = before is None or before.status is not GraphStatus.ACTIVE
    placement = place_graph(registries, graph_id, at=datetime.now(UTC), autoscaling=resources.autoscaling())
    filled: dict[str, Any] = {}
    try:
        op.stage("create", 40, f"creating the database on {placement.instance_id}")
        node = resources.node(placement.endpoint)
        try:
            node.create(graph_id, schema)
        except NodeRequestError as error:
            if error.status != 409:
                raise
            _same_tables(node.request("GET", f"/databases/{graph_id}"), schema, graph_id)
        if fill is not None:
            filled = fill(node)
        op.stage("activate", 90, "marking the graph active")
        _activate(registries, graph_id)
    except LeaseLostError:
        raise  # another attempt owns the graph now: leave its work alone
    except BaseException:
        _undo_create(resources, registries, graph_id, placement.endpoint, ours)
        raise
    return {
        "graph_id": graph_id,
        "instance_id": placement.instance_id,
        "placed_now": placement.created,
        **filled,
    }


def create_subgraph(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    """A new graph of some of a parent's tables (optionally filtered), moved by the engine:
    the parent's node `COPY ... TO` Parquet in the staging bucket, the new graph's node
    `COPY ... FROM` it. Re-running an attempt exports and loads again under the same load
    id (the node skips files it loaded already)."""
    parent_id = params["parent_graph_id"]
    _parent, parent_node = placed_node(op.resources, parent_id, field="params.parent_graph_id")
    return _copy_to_new_graph(
        op, params["graph_id"], parent_id, parent_node, params["tables"], params["filters"]
    )


def create_entity_graph(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    """A graph of one entity (a company) from a shared repository's graph: every node table
    of the repository that has the entity property, filtered to the entity's value, and the
    relationships among them (kept when both their ends are the entity's)."""
    repository, prop, entity = params["repository"], params["entity_property"], params["entity_id"]
    _repo, repo_node = placed_node(op.resources, repository, field="params.repository")
    schema = repo_node.request("GET", f"/databases/{repository}")["schema"]
    tables = [t["name"] for t in schema["nodes"] if prop in t["properties"]]
    if not tables:
        raise InvalidInputError(
            "params.entity_property", f"no node table of {repository!r} has a property {prop!r}"
        )
    tables += [r["name"] for r in schema["relationships"] if {r["from"], r["to"]} <= set(tables)]
    filters = {name: {prop: entity} for name in tables if any(t["name"] == name for t in schema["nodes"])}
    result = _copy_to_new_graph(op, params["graph_id"], repository, repo_node, tables, filters)
    return {**result, "entity_id": entity, "tables": tables}


def _copy_to_new_graph(
    op: Operation,
    graph_id: str,
    source_id: str,
    source_node: Any,
    tables: list[str],
    filters: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    resources = op.resources
    op.stage("export", 5, f"exporting {', '.join(tables)} from {source_id}")
    bucket = resources.staging_bucket()
    try:
        exported = source_node.export(source_id, bucket, f"subgraphs/{op.operation_id}/", tables, filters)
    except NodeRequestError as error:
        if error.status == 400 and isinstance(error.error, dict):  # the node names the field
            detail = error.error.get("error", {})
            field = f"params.{detail.get('field', 'tables')}"
            raise InvalidInputError(field, str(detail.get("message"))) from None
        raise

    def load(node: Any) -> dict[str, Any]:
        op.stage("load", 60, f"loading {len(exported['files'])} file(s)")
        files = [(f["table"], f["key"]) for f in exported["files"]]
        loaded = node.load(graph_id, op.operation_id.replace(":", "-"), bucket, files)
        return {
            "source_graph_id": source_id,
            "rows": loaded["rows"],
            "source_gib": graph_size_gib(resources, {"graph_id": source_id}),
        }

    return _make_graph(op, graph_id, exported["schema"], load)


def _same_tables(described: dict[str, Any], schema: dict[str, Any], graph_id: str) -> None:
    wanted = {t["name"] for t in schema["nodes"]} | {t["name"] for t in schema.get("relationships", [])}
    present = set(described.get("tables", {}))
    if present != wanted:
        raise InvalidInputError(
            "params.graph_id",
            f"graph {graph_id!r} exists on its node with other tables ({sorted(present)}, "
            f"not {sorted(wanted)})",
        )


def _activate(registries: Any, graph_id: str) -> None:
    try:
        mark_active(registries, graph_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        graph = registries.graph(graph_id)
        if graph is None or graph.status is not GraphStatus.ACTIVE:  # active already: an earlier attempt
            raise


def _undo_create(resources: Any, registries: Any, graph_id: str, endpoint: str, ours: bool) -> None:
    """Leave no half-created graph: its database off the node, its row `deleted`."""
    if not ours:
        return
    if endpoint:
        try:
            resources.node(endpoint).delete(graph_id)
        except NodeRequestError as error:
            if error.status != 404:
                raise
    graph = registries.graph(graph_id)
    if graph is not None and graph.status in PLACED_STATUSES:
        release_graph(registries, graph_id, at=datetime.now(UTC), autoscaling=resources.autoscaling())


def delete_graph(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id = params["graph_id"]
    registries = resources.registries()
    op.stage("delete", 20, "removing the database from its node")
    graph = registries.graph(graph_id)
    if graph is None or graph.status not in PLACED_STATUSES:
        return {
            "graph_id": graph_id,
            "deleted": False,
            "status": None if graph is None else str(graph.status),
        }
    instance = registries.instance(graph.instance_id)
    if instance is not None:
        try:
            resources.node(instance.endpoint).delete(graph_id)
        except NodeRequestError as error:
            if error.status != 404:
                raise
    op.stage("release", 70, "giving the slot back")
    release_graph(registries, graph_id, at=datetime.now(UTC), autoscaling=resources.autoscaling())
    return {"graph_id": graph_id, "deleted": True, "status": str(GraphStatus.DELETED)}


GIB = 2**30


def graph_size_gib(resources: Any, params: dict[str, Any]) -> float:
    """The graph's size in GiB as its registry row says (what a backup or restore moves)."""
    graph = resources.registries().graph(params["graph_id"])
    return 0.0 if graph is None else graph.size_bytes / GIB


def placed_node(resources: Any, graph_id: str, field: str = "params.graph_id") -> tuple[Any, Any]:
    registries = resources.registries()
    graph = registries.graph(graph_id)
    if graph is None or graph.status is not GraphStatus.ACTIVE:
        status = None if graph is None else graph.status
        raise InvalidInputError(field, f"graph {graph_id!r} is not active (registry: {status})")
    instance = registries.instance(graph.instance_id)
    if instance is None:
        raise InvalidInputError(field, f"graph {graph_id!r} is on {graph.instance_id}, which is gone")
    return graph, resources.node(instance.endpoint)


def backup_graph(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id = params["graph_id"]
    _graph, node = placed_node(resources, graph_id)
    key = f"backups/{graph_id}/{op.operation_id}.lbbk"
    op.stage("backup", 10, f"checkpoint, pack and upload to {key}")
    answer = node.backup(graph_id, resources.backup_bucket(), key)
    op.stage("recorded", 95, "the backup is the graph's last")
    return {
        "graph_id": graph_id,
        "bucket": answer["bucket"],
        "key": key,
        "sha256": answer["sha256"],
        "stored_bytes": answer["stored_bytes"],
        "data_bytes": answer["data_bytes"],
        "units": answer["data_bytes"] / GIB,
    }


def restore_graph(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id = params["graph_id"]
    graph, node = placed_node(resources, graph_id)
    key = params.get("backup_key") or graph.last_backup_key
    if not key:
        raise InvalidInputError("params.backup_key", f"graph {graph_id!r} has no backup to restore")
    # The registry's checksum when it is the last backup; otherwise the object's own metadata.
    sha256 = graph.last_backup_sha256 if key == graph.last_backup_key else None
    op.stage("restore", 10, f"verify and restore {key}")
    answer = node.restore(graph_id, resources.backup_bucket(), key, sha256)
    op.stage("restored", 95, "the database is replaced")
    return {
        "graph_id": graph_id,
        "key": key,
        "sha256": answer["sha256"],
        "size_bytes": answer["size_bytes"],
        "units": answer["size_bytes"] / GIB,
    }
