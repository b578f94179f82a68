"""The task API as an HTTP application: Powertools' resolver for API Gateway HTTP API
(payload v2) events, validating requests and answers against `beatless.api.models`
and generating the OpenAPI document (`GET /openapi.json`) from the same code.

The Lambda (`bin/lambda/task_api.py`) and the local server (`beatless.local.api_server`) both
call `TaskHttpApp.handle` with a v2 event: one code path. Every error answers
`{"error": {"field", "message"}}`: 422 for bad input (the field named), 402 when the
paying account lacks the credits, 404 for an unknown task, 405 (with `Allow`) for a
method a path does not have, 409 for a request that contradicts the task's state or an
earlier launch, 503 when Redis or PostgreSQL did not answer (nothing was changed).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Annotated, Any

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query

from beatless.api import models
from beatless.api.service import (
    EVENT_ID_PATTERN,
    BrokerUnavailableError,
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    TaskApi,
    catalogue,
)
from beatless.credits.errors import IdempotencyConflictError, InsufficientCreditsError
from beatless.errors import ConfigurationError, InvalidInputError
from beatless.operations.catalogue import OPERATIONS

log = logging.getLogger("beatless.api")
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
TaskId = Annotated[str, Path(min_length=1, description="the task id `launch` answered")]
TASK_TYPES = frozenset(spec.name for spec in OPERATIONS)


def _error(
    status: int, field: str | None, message: str, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"field": field, "message": message}},
        headers=headers,
    )


# What a client does next with a launched task (OpenAPI links: documentation, and the
# paths a stateful test client follows).
TASK_LINKS = {
    name: {"operationId": operation, "parameters": {"task_id": "$response.body#/task_id"}}
    for name, operation in (
        ("status", "getTask"),
        ("events", "getTaskEvents"),
        ("revoke", "revokeTask"),
        ("retry", "retryTask"),
    )
}


def _responses(
    success: int, model: type, *errors: int, links: dict[str, Any] | None = None
) -> dict[int, Any]:
    answers: dict[int, Any] = {
        success: {
            "description": HTTPStatus(success).phrase,
            "content": {"application/json": {"model": model}},
        }
    }
    if links:
        answers[success]["links"] = links
    for code in (*errors, 415, 422, 503):
        answers[code] = {
            "description": HTTPStatus(code).phrase,
            "content": {"application/json": {"model": models.ErrorResponse}},
        }
    return answers


def _refused_body(event: dict[str, Any]) -> Response[Any] | None:
    """A body that is not JSON text: 415 for another media type, 422 for bytes that are not UTF-8."""
    if not event.get("body"):
        return None
    headers = {name.lower(): value for name, value in (event.get("headers") or {}).items()}
    media = str(headers.get("content-type", "application/json")).split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return _error(415, "Content-Type", f"must be application/json, got {media or 'nothing'!r}")
    if event.get("isBase64Encoded"):
        try:
            base64.b64decode(event["body"]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return _error(422, "body", "must be JSON in UTF-8")
    return None


def _first_problem(errors: Sequence[Any]) -> tuple[str, str]:
    """The field (dotted, as the body names it) and the message of the first validation error."""
    first = errors[0]
    if str(first.get("type", "")).startswith("union_tag"):
        return "task_type", f"must be one of {', '.join(sorted(TASK_TYPES))}"
    if first.get("type") == "json_invalid":
        return "body", "is not valid JSON"
    parts = [p for p in first.get("loc", ()) if p not in ("body", "query", "path") and p not in TASK_TYPES]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidInputError):  # a parameter model's own check names the nested field
        return ".".join(str(p) for p in (*parts[:1], cause.field)), cause.problem  # field: within params
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return field or "body", str(first.get("msg") or first.get("type"))


class TaskHttpApp:
    """The resolver with its routes over one `TaskApi` (built on first use)."""

    def __init__(self, api: Callable[[], TaskApi]) -> None:
        self._make_api = api
        self._openapi: str | None = None
        self.resolver = resolver = APIGatewayHttpResolver(enable_validation=True)
        self._register_errors()

        @resolver.get(
            "/tasks",
            summary="The task catalogue",
            operation_id="listTaskTypes",
            responses=_responses(200, models.Catalogue),
        )
        def list_task_types() -> models.Catalogue:
            return catalogue()

        @resolver.post(
            "/tasks/launch",
            summary="Launch an operation",
            operation_id="launchTask",
            status_code=202,
            responses=_responses(202, models.Launched, 402, 409, links=TASK_LINKS),
        )
        def launch(request: Annotated[models.LaunchRequest, Body()]) -> models.Launched:
            return self._api().launch(request)

        @resolver.get(
            "/tasks/<task_id>",
            summary="A task's state",
            operation_id="getTask",
            responses=_responses(200, models.TaskStatus, 404),
        )
        def status(task_id: TaskId) -> Any:
            if task_id == "launch":  # GET /tasks/launch: the launch route, with the wrong method
                return _error(405, None, "GET is not allowed on /tasks/launch", {"Allow": "POST"})
            return self._api().status(task_id)

        @resolver.get(
            "/tasks/<task_id>/events",
            summary="A task's progress events, after a position",
            operation_id="getTaskEvents",
            responses=_responses(200, models.EventPage, 404),
        )
        def events(
            task_id: TaskId,
            after: Annotated[
                str | None, Query(pattern=EVENT_ID_PATTERN, description="the id of the last event seen")
            ] = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 100,
        ) -> models.EventPage:
            return self._api().events(task_id, after, limit)

        @resolver.delete(
            "/tasks/<task_id>",
            summary="Revoke a task (it stops at its next stage boundary)",
            operation_id="revokeTask",
            status_code=202,
            responses=_responses(202, models.Revoked, 404, 409),
        )
        def revoke(task_id: TaskId) -> models.Revoked:
            return self._api().revoke(task_id)

        @resolver.post(
            "/tasks/<task_id>/retry",
            summary="Relaunch a failed or revoked task (a new task id, the same operation id)",
            operation_id="retryTask",
            status_code=202,
            responses=_responses(202, models.Launched, 402, 404, 409, links=TASK_LINKS),
        )
        def retry(task_id: TaskId) -> models.Launched:
            return self._api().retry(task_id)

        @resolver.get(
            "/stats",
            summary="Queues, workers, recent failures",
            operation_id="getStats",
            responses=_responses(200, models.Stats),
        )
        def stats() -> models.Stats:
            return self._api().stats()

        @resolver.get("/openapi.json", include_in_schema=False)
        def openapi() -> Response[str]:
            return Response(200, content_types.APPLICATION_JSON, self.openapi_json())

    def _api(self) -> TaskApi:
        """The routes' core. A bad environment is the deployment's fault, not the caller's: it
        raises (a 500, and the function's Errors alarm), never a 4xx naming a variable."""
        try:
            return self._make_api()
        except InvalidInputError as error:
            raise ConfigurationError(f"the task API's environment: {error}") from error

    def openapi_json(self) -> str:
        if self._openapi is None:
            self._openapi = self.resolver.get_openapi_json_schema(
                title=TITLE, version=VERSION, description=DESCRIPTION
            )
        return self._openapi

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Answer one HTTP API (payload v2) event."""
        refused = _refused_body(event)  # what Powertools would fail on with a 500
        if refused is not None:
            return {
                "statusCode": refused.status_code,
                "headers": {"Content-Type": content_types.APPLICATION_JSON},
                "body": json.dumps(refused.body),
                "isBase64Encoded": False,
            }
        return self.resolver.resolve(event, context)

    def _register_errors(self) -> None:
        resolver = self.resolver

        @resolver.exception_handler(RequestValidationError)
        def invalid_request(error: RequestValidationError) -> Response[Any]:
            field, message = _first_problem(error.errors())
            return _error(422, field, message)

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
            log.warning("the database did not answer: %s", error)  # its host stays in the log
            return _error(503, None, "the database did not answer", {"Retry-After": "1"})

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
