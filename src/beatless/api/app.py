"""The task API as an HTTP application: Powertools' resolver for API Gateway HTTP API
(payload v2) events, validating requests and answers against `beatless.api.models`
and generating the OpenAPI document (`GET /openapi.json`) from the same code.

The Lambda (`bin/lambda/task_api.py`) and the local server (`beatless.api.local`) both
call `TaskHttpApp.handle` with a v2 event: one code path. Every error answers
`{"error": {"field", "message"}}`: 422 for bad input (the field named), 402 when the
paying account lacks the credits, 404 for an unknown task, 405 (with `Allow`) for a
method a path does not have, 409 for a request that contradicts the task's state or an
earlier launch, 503 when Redis or PostgreSQL did not answer (nothing was changed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query

from beatless.api import models
from beatless.api.service import (
    BrokerUnavailableError,
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    TaskApi,
)
from beatless.credits.errors import IdempotencyConflictError, InsufficientCreditsError
from beatless.errors import InvalidInputError

TITLE = "Beatless task API"
VERSION = "1"
DESCRIPTION = (
    "Launch, follow, revoke and retry the heavy operations the autoscaled workers run. "
    "In AWS: API Gateway HTTP API with IAM authorization (SigV4); locally: a bearer token. "
    "Progress: `GET /tasks/{task_id}/events?after=` pages through the operation's events; the local "
    "server also streams them as server-sent events (`Accept: text/event-stream`, `Last-Event-ID`)."
)
# The routes, for 405 answers: path pattern -> methods.
ROUTES: dict[str, tuple[str, ...]] = {
    r"/tasks": ("GET",),
    r"/tasks/launch": ("POST",),
    r"/tasks/[^/]+": ("GET", "DELETE"),
    r"/tasks/[^/]+/events": ("GET",),
    r"/tasks/[^/]+/retry": ("POST",),
    r"/stats": ("GET",),
    r"/openapi.json": ("GET",),
}
TaskId = Annotated[str, Path(min_length=1, max_length=200, description="the task id `launch` answered")]


def _error(
    status: int, field: str | None, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"field": field, "message": message}},
        headers=headers,
    )


def _responses(success: int, model: type, *errors: int) -> dict[int, Any]:
    answers: dict[int, Any] = {
        success: {
            "description": HTTPStatus(success).phrase,
            "content": {"application/json": {"model": model}},
        }
    }
    for code in (*errors, 422, 503):
        answers[code] = {
            "description": HTTPStatus(code).phrase,
            "content": {"application/json": {"model": models.ErrorResponse}},
        }
    return answers


class TaskHttpApp:
    """The resolver with its routes over one `TaskApi` (built on first use)."""

    def __init__(self, api: Callable[[], TaskApi]) -> None:
        self._api = api
        self._openapi: str | None = None
        self.resolver = resolver = APIGatewayHttpResolver(enable_validation=True)
        self._register_errors()

        @resolver.get("/tasks", summary="The task catalogue", responses=_responses(200, models.Catalogue))
        def catalogue() -> models.Catalogue:
            return self._api().catalogue()

        @resolver.post(
            "/tasks/launch",
            summary="Launch an operation",
            status_code=202,
            responses=_responses(202, models.Launched, 402, 409),
        )
        def launch(request: Annotated[models.LaunchRequest, Body()]) -> models.Launched:
            return self._api().launch(request)

        @resolver.get(
            "/tasks/<task_id>", summary="A task's state", responses=_responses(200, models.TaskStatus, 404)
        )
        def status(task_id: TaskId) -> models.TaskStatus:
            return self._api().status(task_id)

        @resolver.get(
            "/tasks/<task_id>/events",
            summary="A task's progress events, after a position",
            responses=_responses(200, models.EventPage, 404),
        )
        def events(
            task_id: TaskId,
            after: Annotated[str | None, Query(max_length=41, description="the last event id seen")] = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 100,
        ) -> models.EventPage:
            return self._api().events(task_id, after, limit)

        @resolver.delete(
            "/tasks/<task_id>",
            summary="Revoke a task (it stops at its next stage boundary)",
            status_code=202,
            responses=_responses(202, models.Revoked, 404, 409),
        )
        def revoke(task_id: TaskId) -> models.Revoked:
            return self._api().revoke(task_id)

        @resolver.post(
            "/tasks/<task_id>/retry",
            summary="Relaunch a failed or revoked task (a new task id, the same operation id)",
            status_code=202,
            responses=_responses(202, models.Launched, 402, 404, 409),
        )
        def retry(task_id: TaskId) -> models.Launched:
            return self._api().retry(task_id)

        @resolver.get(
            "/stats", summary="Queues, workers, recent failures", responses=_responses(200, models.Stats)
        )
        def stats() -> models.Stats:
            return self._api().stats()

        @resolver.get("/openapi.json", include_in_schema=False)
        def openapi() -> Response[str]:
            return Response(200, content_types.APPLICATION_JSON, self.openapi_json())

    def openapi_json(self) -> str:
        if self._openapi is None:
            self._openapi = self.resolver.get_openapi_json_schema(
                title=TITLE, version=VERSION, description=DESCRIPTION
            )
        return self._openapi

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Answer one HTTP API (payload v2) event."""
        return self.resolver.resolve(event, context)

    def _register_errors(self) -> None:
        resolver = self.resolver

        @resolver.exception_handler(RequestValidationError)
        def invalid_request(error: RequestValidationError) -> Response[Any]:
            first = error.errors()[0]
            location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
            return _error(422, ".".join(location) or "body", str(first.get("msg") or first.get("type")))

        @resolver.exception_handler(InvalidInputError)
        def invalid_input(error: InvalidInputError) -> Response[Any]:
            status = 422
            if isinstance(error, NotFoundError):
                status = 404
            elif isinstance(error, PaymentRequiredError | InsufficientCreditsError):
                status = 402
            elif isinstance(error, ConflictError | IdempotencyConflictError):
                status = 409
            return _error(status, error.field, error.problem)

        @resolver.exception_handler(BrokerUnavailableError)
        def unavailable(error: BrokerUnavailableError) -> Response[Any]:
            return _error(503, None, str(error), {"Retry-After": "1"})

        @resolver.exception_handler(psycopg.OperationalError)
        def database_unavailable(error: psycopg.OperationalError) -> Response[Any]:
            return _error(503, None, f"the database did not answer: {error}", {"Retry-After": "1"})

        @resolver.not_found
        def not_found(_missing: RouteNotFoundError) -> Response[Any]:
            event = resolver.current_event
            path, method = event.path, event.http_method.upper()
            for pattern, methods in ROUTES.items():
                if re.fullmatch(pattern, path):
                    if method in methods:
                        break  # a path parameter failed its constraints: not a route of ours
                    return _error(
                        405, None, f"{method} is not allowed on {path}", {"Allow": ", ".join(methods)}
                    )
            return _error(404, None, f"no route {method} {path}")
