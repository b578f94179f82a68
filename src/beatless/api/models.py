"""What the task API takes and answers: the OpenAPI document is generated from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

State = Literal["PENDING", "PROGRESS", "SUCCESS", "FAILURE", "REVOKED"]
FINISHED_STATES: frozenset[str] = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Model):
    field: str | None = Field(description="the request field at fault (e.g. `params.graph_id`), if one is")
    message: str


class ErrorResponse(Model):
    error: ErrorDetail


class Cost(Model):
    base_credits: float
    credits_per_unit: float | None = None
    unit: str | None = None


class CatalogueEntry(Model):
    task_type: str
    description: str
    queue: str
    time_limit_seconds: int
    cost: Cost
    params_schema: dict[str, Any] = Field(description="JSON Schema of the task's `params`")


class Catalogue(Model):
    tasks: list[CatalogueEntry]


class LaunchOptions(Model):
    operation_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        description="idempotency key; default: derived from the task type and parameters",
    )
    priority: int = Field(default=5, ge=1, le=10, description="1 (lowest) to 10 (most urgent)")


def _launch_model(spec: Any) -> type[LaunchOptions]:
    """The launch body of one task type: its name and its own parameter model."""
    task_type: Any = Literal[spec.name]  # a literal made at run time, one per catalogue entry
    return create_model(
        f"Launch_{spec.name}",
        __base__=LaunchOptions,
        task_type=(task_type, Field(description=spec.description)),
        params=(spec.params, ...),
    )


def _launch_request() -> Any:
    from beatless.operations.catalogue import OPERATIONS

    variants = tuple(_launch_model(spec) for spec in OPERATIONS)
    return Annotated[Union[variants], Field(discriminator="task_type")]  # noqa: UP007 (a runtime tuple)


# One body per task type (`oneOf`, told apart by `task_type`): the OpenAPI document
# carries every task's parameter schema, and validation names the task's own fields.
LaunchRequest = _launch_request()


class Launched(Model):
    task_id: str
    operation_id: str
    status_url: str
    created: bool = Field(description="false: this operation id was launched before; its task is returned")


class Progress(Model):
    percent: float
    stage: str
    message: str


class Credits(Model):
    estimated: float = Field(description="held while the operation runs")
    charged: float | None = Field(description="what the operation cost (once it succeeded)")


class TaskStatus(Model):
    task_id: str
    operation_id: str
    task_type: str
    queue: str
    priority: int
    state: State
    progress: Progress | None
    result: dict[str, Any] | None
    error: str | None
    credits: Credits | None
    retry_of: str | None
    revoke_requested: bool
    launched_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Event(Model):
    id: str = Field(description="the event's position: pass it as `after` (or `Last-Event-ID`) to resume")
    state: str
    stage: str
    percent: float
    message: str
    attempt: int
    task_id: str
    at: str


class EventPage(Model):
    task_id: str
    state: State
    events: list[Event]
    next_after: str = Field(description="`after` for the next page")
    finished: bool = Field(
        description="the task ended and every event up to its end is in this page or before"
    )


class Revoked(Model):
    task_id: str
    state: State
    revoke_requested: bool


class QueueStats(Model):
    pending: int
    reserved: int


class WorkerStats(Model):
    name: str
    state: Literal["idle", "busy"]
    protected: bool | None
    tasks: int
    queues: list[str]
    seen_seconds_ago: float


class Failure(Model):
    operation_id: str
    task_type: str
    error: str | None
    finished_at: datetime | None


class Stats(Model):
    queues: dict[str, QueueStats]
    workers: list[WorkerStats]
    recent_failures: list[Failure]
