"""Parameters of the ingestion operations (`beatless.operations.catalogue`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from beatless.graphs.params import GraphId, Params

BatchId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the upload batch")]


class UploadedFile(Params):
    table: str = Field(min_length=1, max_length=63, description="the graph's table the file fills")
    key: str = Field(min_length=1, max_length=1024, description="the object's key in the uploads bucket")
    format: Literal["csv", "parquet"] | None = Field(
        default=None, description="default: from the key's suffix"
    )


class StageFilesParams(Params):
    graph_id: GraphId
    batch_id: BatchId
    files: list[UploadedFile] = Field(min_length=1, max_length=1000)
    limit_per_rule: int = Field(default=20, ge=1, le=1000, description="problems listed per rule")


class MaterializeParams(Params):
    graph_id: GraphId
    batch_id: BatchId
