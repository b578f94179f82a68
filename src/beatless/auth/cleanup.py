"""auth_cleanup's core: ended API keys are deactivated, then deleted; old sessions deleted.

A key or session ENDS at `least(expires_at, revoked_at)` (the earlier of its
expiry and its revocation; NULL when neither is set). At a run's cut-off
`as_of` (see below), in this order, each pass in chunks of one transaction:

1. keys that ended at or before `as_of` and are still active get
   `deactivated_at` (once: status guard `deactivated_at IS NULL`);
2. deactivated keys that ended at or before `as_of - api_key_retention` are
   deleted (default 90 days: the key list keeps a revoked or expired key that
   long, for the user and for audits);
3. sessions that ended at or before `as_of - session_retention` are deleted
   (default 7 days). Sessions have no deactivated state: an expired or revoked
   session is refused by its own fields; the cleanup only removes the row.

Boundaries: "at or before" — a key with `expires_at = as_of` is deactivated by
that run (it is refused from that instant on: valid means `expires_at > now`);
one microsecond later waits for the next hourly run. A key revoked and later
past its expiry ended at its revocation, so it is deactivated once and its
retention counts from the revocation.

`as_of` is the run's scheduled time, clamped to the database clock by the job
runtime: an event carrying a future scheduled time (a console mistake) can
never end a key or a session before its time. The retention windows are measured from the end, not
from the deactivation, so they do not depend on when the job happened to run.

Each chunk claims rows with FOR UPDATE SKIP LOCKED in (end, id) order after the
previous chunk's last key (indexes of migration 0003), so concurrent runs split
the work and every key is deactivated once and deleted once; a run killed
mid-chunk loses that chunk only; a run short of time stops between chunks and
reports what it left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beatless.jobs.batch import KEYSET_START, Chunk, run_chunks
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env, env_int
from beatless.timestamps import iso_z

CHUNK_SIZE = 5_000
DEFAULT_API_KEY_RETENTION_DAYS = 90
DEFAULT_SESSION_RETENTION_DAYS = 7


@dataclass(frozen=True)
class AuthCleanupSettings:
    api_key_retention: timedelta
    session_retention: timedelta

    @classmethod
    def from_env(cls, env: Env) -> AuthCleanupSettings:
        """`AUTH_API_KEY_RETENTION_DAYS` (default 90) and `AUTH_SESSION_RETENTION_DAYS`
        (default 7): days between a key's or session's end and the deletion of its row
        (0 = delete in the run that deactivates)."""
        keys = env_int(
            env, "AUTH_API_KEY_RETENTION_DAYS", DEFAULT_API_KEY_RETENTION_DAYS, minimum=0, maximum=3650
        )
        sessions = env_int(
            env, "AUTH_SESSION_RETENTION_DAYS", DEFAULT_SESSION_RETENTION_DAYS, minimum=0, maximum=3650
        )
        return cls(timedelta(days=keys), timedelta(days=sessions))


@dataclass(frozen=True)
class _Pass:
    """One keyset walk: `select` claims the rows, `act` is the effect on them."""

    name: str  # the count it adds to
    would: str  # its key in a dry run's summary
    table: str
    where: str  # which rows (besides the cut-off on their end)
    act: str  # SQL of the effect over the CTE `picked`, RETURNING one row per row changed
    # Which rows it will meet once the passes before it are done (dry runs, and a
    # pass a run short of time did not start): deactivation comes before deletion.
    ahead: str = ""


_END = "least(expires_at, revoked_at)"

_DEACTIVATE = _Pass(
    name="deactivated_keys",
    would="would_deactivate_keys",
    table="api_keys",
    where="deactivated_at IS NULL",
    act="UPDATE api_keys k SET deactivated_at = now() FROM picked "
    "WHERE k.id = picked.id AND k.deactivated_at IS NULL RETURNING k.id",
)
_DELETE_KEYS = _Pass(
    name="deleted_keys",
    would="would_delete_keys",
    table="api_keys",
    where="deactivated_at IS NOT NULL",
    ahead="true",
    act="DELETE FROM api_keys k USING picked WHERE k.id = picked.id RETURNING k.id",
)
_DELETE_SESSIONS = _Pass(
    name="deleted_sessions",
    would="would_delete_sessions",
    table="user_sessions",
    where="true",
    act="DELETE FROM user_sessions s USING picked WHERE s.id = picked.id RETURNING s.id",
)


def _chunk_sql(p: _Pass) -> str:
    return f"""
WITH picked AS (
    SELECT id, {_END} AS ended
    FROM {p.table}
    WHERE {p.where} AND {_END} <= %(cutoff)s
      AND ({_END}, id) > (%(after_at)s, %(after_id)s)
    ORDER BY {_END}, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), acted AS (
    {p.act}
), last AS (
    SELECT ended, id FROM picked ORDER BY ended DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM acted), last.ended, last.id
FROM (SELECT 1) AS one LEFT JOIN last ON true
"""


def _left_sql(p: _Pass, *, ahead: bool = False) -> str:
    where = (p.ahead or p.where) if ahead else p.where
    return (
        f"SELECT count(*) FROM {p.table} WHERE {where} AND {_END} <= %(cutoff)s "
        f"AND ({_END}, id) > (%(after_at)s, %(after_id)s)"
    )


def clean_up_auth(
    ctx: JobContext, settings: AuthCleanupSettings, *, chunk_size: int = CHUNK_SIZE
) -> JobOutcome:
    """Deactivate ended keys, delete keys and sessions past their retention.

    Counts `deactivated_keys`, `deleted_keys`, `deleted_sessions`. `remaining`:
    rows of the three passes a run short of time left for the next one. Dry run:
    `would_deactivate_keys`, `would_delete_keys`, `would_delete_sessions` (their sum
    as `remaining`), nothing changed.
    """
    cutoff = ctx.as_of
    passes = (
        (_DEACTIVATE, cutoff),
        (_DELETE_KEYS, cutoff - settings.api_key_retention),
        (_DELETE_SESSIONS, cutoff - settings.session_retention),
    )
    details: dict[str, Any] = {
        "api_keys_ended_before": iso_z(cutoff - settings.api_key_retention),
        "sessions_ended_before": iso_z(cutoff - settings.session_retention),
    }
    if ctx.dry_run:
        for p, pass_cutoff in passes:
            sql = _left_sql(p, ahead=True)
            details[p.would] = ctx.conn.execute(sql, _params(pass_cutoff, KEYSET_START)).fetchone()[0]
        # Like every dry run: "remaining" is what a real run would do now.
        return JobOutcome(remaining=sum(details[p.would] for p, _ in passes), details=details)

    remaining = 0
    out_of_time = False
    for p, pass_cutoff in passes:
        ctx.add(p.name, 0)
        if out_of_time:  # a later pass never starts after an earlier one stopped
            sql = _left_sql(p, ahead=True)
            remaining += ctx.conn.execute(sql, _params(pass_cutoff, KEYSET_START)).fetchone()[0]
            continue
        report = run_chunks(ctx, _chunk(p, pass_cutoff), limit=chunk_size)
        details[f"{p.name}_chunks"] = report.chunks
        if not report.finished:
            out_of_time = True
            after = report.cursor or KEYSET_START
            remaining += ctx.conn.execute(_left_sql(p), _params(pass_cutoff, after)).fetchone()[0]
    return JobOutcome(remaining=remaining, details=details)


def _chunk(p: _Pass, cutoff: datetime) -> Callable[[Any, Any, int], Chunk]:
    sql = _chunk_sql(p)

    def chunk(conn: Any, cursor: Any, limit: int) -> Chunk:
        params = {**_params(cutoff, cursor or KEYSET_START), "limit": limit}
        picked, acted, last_at, last_id = conn.execute(sql, params).fetchone()
        return Chunk(rows=picked, cursor=(last_at, last_id), counts={p.name: acted})

    return chunk


def _params(cutoff: datetime, after: tuple[datetime, int]) -> dict[str, Any]:
    return {"cutoff": cutoff, "after_at": after[0], "after_id": after[1]}
