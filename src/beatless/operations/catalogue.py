"""The task catalogue: every heavy operation the worker runs, as data.

Read by the worker (one Celery task per entry), by the task API and the CLI
(what may be launched, its JSON Schema), by the docs and the tests. An entry
names its core by dotted path, so reading the catalogue imports no core (nor
DuckDB, the graph engine or Celery).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from beatless.credits.money import MICRO_PER_CREDIT
from beatless.errors import InvalidInputError

GRAPH_QUEUE = "graph"
INGEST_QUEUE = "ingest"
TASK_PREFIX = "beatless."
HOLD_GRACE_SECONDS = 300


@dataclass(frozen=True)
class CostRule:
    """`base` credits plus `per_unit` credits for each `unit` (rounded up to a
    micro-credit). The estimate is held before the work; the actual cost, from what
    the work did, is committed — never more than the estimate."""

    base_micro: int
    per_unit_micro: int = 0
    unit: str = ""

    def estimate_micro(self, units: float) -> int:
        return self.base_micro + math.ceil(max(0.0, units) * self.per_unit_micro)

    actual_micro = estimate_micro

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"base_credits": self.base_micro / MICRO_PER_CREDIT}
        if self.per_unit_micro:
            described |= {"credits_per_unit": self.per_unit_micro / MICRO_PER_CREDIT, "unit": self.unit}
        return described


def _no_units(resources: Any, params: Mapping[str, Any]) -> float:
    return 0.0


def _units_in_result(params: Mapping[str, Any], result: Mapping[str, Any]) -> float:
    return float(result.get("units", 0.0))


def graph_account(conn: Any, params: Mapping[str, Any]) -> int:
    """The paying account: the credit account of the graph the operation makes or works on."""
    row = conn.execute("SELECT id FROM credit_accounts WHERE graph_id = %s", (params["graph_id"],)).fetchone()
    if row is None:
        raise InvalidInputError(
            "params.graph_id", f"graph {params['graph_id']!r} has no credit account: create the graph first"
        )
    return int(row[0])


@dataclass(frozen=True)
class OperationSpec:
    name: str  # the task type callers launch; the Celery task is TASK_PREFIX + name
    queue: str
    params: type[BaseModel]
    core_path: str  # "module:function", called as function(operation, params) -> result dict
    time_limit: int  # seconds; the soft limit is 90 % of it
    cost: CostRule
    description: str
    estimate_units: Callable[[Any, Mapping[str, Any]], float] = _no_units
    result_units: Callable[[Mapping[str, Any], Mapping[str, Any]], float] = _units_in_result
    paying_account: Callable[[Any, Mapping[str, Any]], int] = graph_account
    hold_grace_seconds: int = HOLD_GRACE_SECONDS

    @property
    def celery_name(self) -> str:
        return TASK_PREFIX + self.name

    @property
    def soft_time_limit(self) -> int:
        return int(self.time_limit * 0.9)

    @property
    def hold_seconds(self) -> int:
        """How long an attempt's credit hold lasts: past its hard time limit, so a live attempt
        never loses it; a dead attempt's lasts until the cleanup expires it or a new attempt
        takes the operation over and releases it."""
        return self.time_limit + self.hold_grace_seconds

    def core(self) -> Callable[..., dict[str, Any]]:
        module, _, function = self.core_path.partition(":")
        found: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), function)
        return found

    def units(self, resources: Any, params: Mapping[str, Any]) -> float:
        return self.estimate_units(resources, params)

    def charged_units(self, params: Mapping[str, Any], result: Mapping[str, Any]) -> float:
        return self.result_units(params, result)

    def describe(self) -> dict[str, Any]:
        """The catalogue entry as the task API shows it."""
        return {
            "task_type": self.name,
            "description": self.description,
            "queue": self.queue,
            "time_limit_seconds": self.time_limit,
            "cost": self.cost.describe(),
            "params_schema": self.params.model_json_schema(),
        }


def graph_size(resources: Any, params: Mapping[str, Any]) -> float:
    """GiB of the graph as the registry says (the estimate of a backup or restore)."""
    from beatless.graphs.operations import graph_size_gib

    return graph_size_gib(resources, dict(params))


def parent_size(resources: Any, params: Mapping[str, Any]) -> float:
    from beatless.graphs.operations import graph_size_gib

    return graph_size_gib(resources, {"graph_id": params["parent_graph_id"]})


def repository_size(resources: Any, params: Mapping[str, Any]) -> float:
    from beatless.graphs.operations import graph_size_gib

    return graph_size_gib(resources, {"graph_id": params["repository"]})


def source_size_in_result(params: Mapping[str, Any], result: Mapping[str, Any]) -> float:
    return float(result.get("source_gib", 0.0))


def upload_size(resources: Any, params: Mapping[str, Any]) -> float:
    from beatless.ingestion.operations import upload_bytes

    return upload_bytes(resources, dict(params))


def staged_rows(resources: Any, params: Mapping[str, Any]) -> float:
    """Millions of rows of the staged batch (its manifest; none staged: 0, refused by the core)."""
    import json

    from beatless.ingestion.operations import batch_prefix

    key = f"{batch_prefix(params['graph_id'], params['batch_id'])}manifest.json"
    try:
        body = resources.s3().get_object(Bucket=resources.staging_bucket(), Key=key)["Body"].read()
    except Exception:  # not staged: the core says so, naming the field
        return 0.0
    return sum(int(n) for n in json.loads(body)["rows"].values()) / 1_000_000


def _catalogue() -> tuple[OperationSpec, ...]:
    from beatless.analytics import params as analytics
    from beatless.graphs import params as graph
    from beatless.ingestion import params as ingestion

    credit = MICRO_PER_CREDIT
    return (
        OperationSpec(
            name="create_graph",
            queue=GRAPH_QUEUE,
            params=graph.CreateGraphParams,
            core_path="beatless.graphs.operations:create_graph",
            time_limit=600,
            cost=CostRule(base_micro=10 * credit),
            description="Place a new graph database on a graph node and create its schema.",
        ),
        OperationSpec(
            name="delete_graph",
            queue=GRAPH_QUEUE,
            params=graph.DeleteGraphParams,
            core_path="beatless.graphs.operations:delete_graph",
            time_limit=600,
            cost=CostRule(base_micro=0),
            description="Delete a graph's database and give its slot back (free).",
        ),
        OperationSpec(
            name="create_subgraph",
            queue=GRAPH_QUEUE,
            params=graph.CreateSubgraphParams,
            core_path="beatless.graphs.operations:create_subgraph",
            time_limit=3600,
            cost=CostRule(base_micro=5 * credit, per_unit_micro=2 * credit, unit="GiB of the parent graph"),
            description="A new graph of some of a parent's tables, optionally filtered, copied by the "
            "engine (COPY TO Parquet, then COPY FROM).",
            estimate_units=parent_size,
            result_units=source_size_in_result,
        ),
        OperationSpec(
            name="create_entity_graph",
            queue=GRAPH_QUEUE,
            params=graph.CreateEntityGraphParams,
            core_path="beatless.graphs.operations:create_entity_graph",
            time_limit=3600,
            cost=CostRule(
                base_micro=5 * credit, per_unit_micro=2 * credit, unit="GiB of the repository graph"
            ),
            description="A graph of one entity (a company) from a shared repository: its rows of every "
            "table that names it, copied by the engine.",
            estimate_units=repository_size,
            result_units=source_size_in_result,
        ),
        OperationSpec(
            name="stage_files",
            queue=INGEST_QUEUE,
            params=ingestion.StageFilesParams,
            core_path="beatless.ingestion.operations:stage_files",
            time_limit=3600,
            cost=CostRule(base_micro=1 * credit, per_unit_micro=5 * credit, unit="GiB of uploaded files"),
            description="Fetch a batch of uploaded CSV/Parquet files, validate them against the graph's "
            "schema in DuckDB (every problem reported), and stage the clean batch.",
            estimate_units=upload_size,
        ),
        OperationSpec(
            name="materialize",
            queue=INGEST_QUEUE,
            params=ingestion.MaterializeParams,
            core_path="beatless.ingestion.operations:materialize",
            time_limit=3600,
            cost=CostRule(base_micro=1 * credit, per_unit_micro=1 * credit, unit="million rows"),
            description="Load a staged, valid batch into the graph through its node, all or nothing.",
            estimate_units=staged_rows,
        ),
        OperationSpec(
            name="detect_communities",
            queue=GRAPH_QUEUE,
            params=analytics.DetectCommunitiesParams,
            core_path="beatless.analytics.communities:detect_communities",
            time_limit=3600,
            cost=CostRule(base_micro=2 * credit, per_unit_micro=5 * credit, unit="GiB of the graph"),
            description="Louvain communities of a node table over its relationships to itself: each node's "
            "community stored in the graph, the summary in the graph registry.",
            estimate_units=graph_size,
        ),
        OperationSpec(
            name="resolve_entities",
            queue=GRAPH_QUEUE,
            params=analytics.ResolveEntitiesParams,
            core_path="beatless.analytics.entities:resolve_entities",
            time_limit=3600,
            cost=CostRule(base_micro=2 * credit, per_unit_micro=5 * credit, unit="GiB of the graph"),
            description="Merge duplicate entities of a node table (names matched by rule and score) into "
            "canonical nodes with aliases, relationships repointed, every merge audited.",
            estimate_units=graph_size,
        ),
        OperationSpec(
            name="backup_graph",
            queue=GRAPH_QUEUE,
            params=graph.BackupGraphParams,
            core_path="beatless.graphs.operations:backup_graph",
            time_limit=3600,
            cost=CostRule(base_micro=1 * credit, per_unit_micro=2 * credit, unit="GiB of the graph's data"),
            description="Back the graph up to S3 (consistent, compressed, SHA-256 recorded).",
            estimate_units=graph_size,
        ),
        OperationSpec(
            name="restore_graph",
            queue=GRAPH_QUEUE,
            params=graph.RestoreGraphParams,
            core_path="beatless.graphs.operations:restore_graph",
            time_limit=3600,
            cost=CostRule(base_micro=1 * credit, per_unit_micro=2 * credit, unit="GiB of the graph's data"),
            description="Replace the graph's database with a verified backup (its last by default).",
            estimate_units=graph_size,
        ),
    )


OPERATIONS: tuple[OperationSpec, ...] = _catalogue()
BY_NAME: dict[str, OperationSpec] = {spec.name: spec for spec in OPERATIONS}


def operation(name: str) -> OperationSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise InvalidInputError("task_type", f"unknown task {name!r}; one of {', '.join(BY_NAME)}") from None


TABLE_BEGIN = "<!-- operations-table:begin (rendered from beatless.operations.catalogue; do not edit) -->"
TABLE_END = "<!-- operations-table:end -->"


def render_markdown() -> str:
    """The README's table of operations."""
    rows = [
        "| task type | queue | time limit | cost | parameters | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for spec in OPERATIONS:
        cost = spec.cost.describe()
        price = f"{cost['base_credits']:g} cr"
        if "unit" in cost:
            price += f" + {cost['credits_per_unit']:g} cr per {cost['unit']}"
        schema = spec.params.model_json_schema()
        required = set(schema.get("required", []))
        params = ", ".join(
            f"`{name}`" + ("" if name in required else "?") for name in schema.get("properties", {})
        )
        cells = [f"`{spec.name}`", f"`{spec.queue}`", f"{spec.time_limit} s", price, params, spec.description]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([TABLE_BEGIN, *rows, TABLE_END])


def extract_from(text: str) -> str | None:
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return None
    return TABLE_BEGIN + text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0] + TABLE_END
