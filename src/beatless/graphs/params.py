"""Parameters of the graph operations (`beatless.operations.catalogue`), validated twice:
when a task is launched and when it starts. Errors name the field."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from beatless.graphs.schema import GraphSchema

GraphId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the graph's id")]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class CreateGraphParams(Params):
    graph_id: GraphId
    graph_schema: dict[str, Any] = Field(
        alias="schema", description="node and relationship tables (`beatless.graphs.schema`)"
    )

    @field_validator("graph_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return GraphSchema.parse(value, field="schema").as_dict()  # raises naming the nested field


class DeleteGraphParams(Params):
    graph_id: GraphId


class BackupGraphParams(Params):
    graph_id: GraphId


class RestoreGraphParams(Params):
    graph_id: GraphId
    backup_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="the backup's S3 key in the backups bucket; default: the graph's last backup",
    )


def _scalar(value: Any) -> Any:
    if value is None or not isinstance(value, str | int | float | bool):
        raise ValueError(f"must be a string, number or boolean, got {value!r}")
    return value


# One error at the value itself (a plain union would name the member type that failed last).
FilterValue = Annotated[str | int | float | bool, BeforeValidator(_scalar)]


class CreateSubgraphParams(Params):
    graph_id: GraphId
    parent_graph_id: GraphId
    tables: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        min_length=1, description="tables of the parent to copy; a relationship needs both its ends"
    )
    filters: dict[str, dict[str, FilterValue]] = Field(
        default_factory=dict,
        description="node table -> {property: value}: keep rows whose properties equal these; "
        "a relationship is kept when both its ends are",
    )


class CreateEntityGraphParams(Params):
    graph_id: GraphId
    entity_id: str = Field(min_length=1, max_length=200, description="the entity's value (a company's CIK)")
    repository: GraphId = Field(default="sec", description="the shared repository's graph")
    entity_property: str = Field(
        default="cik",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$",
        description="the property that names the entity in the repository's node tables",
    )
