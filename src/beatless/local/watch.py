"""What the live view of `beatless local` shows, read from the running system.

Each reader takes its connection and makes one round trip (or one pipeline): the
runner calls them once per reading, beside the monitor's own depth read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from beatless.local.view import CreditsLine, OperationLine, WorkerLine
from beatless.operations.progress import stream_key

# The latest operations, newest first, and launches (task API) no worker has started yet.
_OPERATIONS = """
SELECT task, id, coalesce(params->>'graph_id', '-'), status, stage,
       CASE WHEN status = 'running' THEN estimated_micro ELSE 0 END, charged_micro, created_at
FROM operations
UNION ALL
SELECT t.task_type, t.operation_id, coalesce(t.params->>'graph_id', '-'), 'queued', NULL, 0, NULL,
       t.created_at
FROM tasks t
WHERE t.state IS NULL AND t.revoked_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.id = t.operation_id)
ORDER BY 8 DESC
LIMIT %s
"""


def operations(conn: Any, broker: Any, limit: int) -> tuple[OperationLine, ...]:
    """The latest `limit` operations with the percent of their last progress event."""
    rows = conn.execute(_OPERATIONS, (limit,)).fetchall()
    pipe = broker.pipeline(transaction=False)
    for row in rows:
        pipe.xrevrange(stream_key(row[1]), count=1)
    latest = pipe.execute() if rows else []
    lines = []
    for (task, _, graph_id, status, stage, held, charged, _), events in zip(rows, latest, strict=True):
        percent = None
        if events:
            fields = {_text(k): _text(v) for k, v in events[0][1].items()}
            percent = float(fields.get("percent", "0"))
            stage = fields.get("stage") or stage
        lines.append(OperationLine(task, graph_id, status, percent, stage, int(held), charged))
    return tuple(lines)


def credits(conn: Any) -> CreditsLine:
    """Balances and holds over every account, and what operations were charged."""
    balance, held = conn.execute(
        "SELECT (SELECT coalesce(sum(balance_micro), 0) FROM credit_accounts),"
        " (SELECT coalesce(sum(amount_micro), 0) FROM credit_reservations_held)"
    ).fetchone()
    (charged,) = conn.execute("SELECT coalesce(sum(charged_micro), 0) FROM operations").fetchone()
    return CreditsLine(int(balance), int(held), int(charged))


def workers(running: Sequence[str], presence: Iterable[Any]) -> tuple[WorkerLine, ...]:
    """The workers the scaler runs (node names, oldest first) as their presence lines say;
    one that has not written its line yet is starting."""
    said = {line.name: line for line in presence}
    lines = []
    for name in running:
        line = said.get(name)
        if line is None:
            lines.append(WorkerLine(name, "starting", None))
        else:
            lines.append(WorkerLine(name, line.state, line.protected, line.tasks))
    return tuple(lines)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
