"""task_api: the task API — the catalogue, launch, status, events, revoke, retry, stats.

Trigger: API Gateway HTTP API (payload format 2.0), every route behind IAM authorization
(SigV4); no schedule. Routes, answers and errors in `beatless.api.app`; the OpenAPI
document at GET /openapi.json.
Reads: PostgreSQL (tasks, operations, credit accounts), the broker's Redis (queue depths,
progress streams, Celery's stored task states, worker presence), the graph registries
and the uploads/staging buckets (cost estimates). Environment: `beatless.api.environment`.
Side effects: a launch or retry records a task row and puts one Celery message (kombu's
format, without Celery) on the operation's queue; a revoke marks the task revoked and
asks a running attempt to stop at its next stage boundary.
Idempotency: launching an operation id again returns its task (its message is sent at
most once per task id); retrying a task again returns its one retry; revoking twice is
one revocation.
"""

from __future__ import annotations

from typing import Any

from beatless.api.app import TaskHttpApp
from beatless.api.environment import from_environ

app = TaskHttpApp(from_environ)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.handle(event, context)
