"""The weekly credit health check: read-only reconciliation that fails loudly.

What it checks (every statement in a READ ONLY transaction: it cannot change
money, and it never "fixes" anything — a wrong balance is for a person to
explain and correct with an adjustment entry):

1. missed allocations: for each monthly allocation job, the latest fire time of
   its schedule at least `grace` before the check (`beatless.jobs.schedules`
   reads the cron the registry gave it) names the month that must be allocated by now;
   every subject due at that fire time (the allocation jobs' own rule,
   `beatless.credits.due.due_figures`) without its allocation row is
   missed. Until a kind has ever been allocated (a new deployment before its
   first allocation day) nothing is expected of it; the allocation job's own
   missed-run alarm covers a first run that never happens;
2. allocation records: each `monthly_allocations` row of those months has
   its ledger entry on the same account, of kind 'allocation' and with the
   granted amount;
3. balances, in keyset chunks of accounts, with the one reconciliation of
   `beatless.credits.audit`: the stored `balance_micro` = the sum of the
   account's ledger entries, and the rows its held amount is computed from
   (`credit_reservations_held`) = its holds in status 'held' (same holds,
   amounts and expiries); each chunk is one statement, so the figures come
   from one snapshot. Negative balances are counted (storage is
   billed even past zero, so they are a figure, not an inconsistency).

All figures are counts published as metrics by the runtime (`ctx.add`). Any
mismatch or missed allocation raises `CreditInconsistencyError` AFTER the figures
are counted, so the runtime publishes them and the Lambda's Errors alarm fires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from beatless.credits.audit import reconcile
from beatless.credits.due import GRAPHS, SHARED, Subjects, due_figures
from beatless.errors import BeatlessError, InvalidInputError
from beatless.jobs.batch import Chunk, run_chunks
from beatless.jobs.periods import first_day, month_of
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.jobs.schedules import Cron, parse_schedule
from beatless.settings import Env, env_int, env_required
from beatless.timestamps import iso_z

DEFAULT_CHUNK = 2_000
DEFAULT_GRACE_MINUTES = 120  # an allocation run, its retries and a slow chunk fit well in this
EXAMPLES = 10  # account / subject ids named in the summary and the error, per finding

ENVIRONMENT = ("SHARED_ALLOCATION_SCHEDULE", "GRAPH_ALLOCATION_SCHEDULE", "ALLOCATION_GRACE_MINUTES")


class CreditInconsistencyError(BeatlessError):
    """The stored credit figures disagree with the ledger, the holds or the schedule."""


@dataclass(frozen=True)
class HealthSettings:
    """The allocation schedules the check expects (set from the registry by the CDK app)."""

    shared_schedule: Cron
    graph_schedule: Cron
    grace: timedelta = timedelta(minutes=DEFAULT_GRACE_MINUTES)

    @classmethod
    def from_env(cls, env: Env) -> HealthSettings:
        schedules = {}
        for name in ("SHARED_ALLOCATION_SCHEDULE", "GRAPH_ALLOCATION_SCHEDULE"):
            parsed = parse_schedule(env_required(env, name), field=name)
            if not isinstance(parsed, Cron):
                raise InvalidInputError(name, "must be a cron(...) expression (the monthly allocation time)")
            schedules[name] = parsed
        grace = env_int(
            env, "ALLOCATION_GRACE_MINUTES", DEFAULT_GRACE_MINUTES, minimum=0, maximum=7 * 24 * 60
        )
        return cls(
            schedules["SHARED_ALLOCATION_SCHEDULE"],
            schedules["GRAPH_ALLOCATION_SCHEDULE"],
            timedelta(minutes=grace),
        )


@dataclass
class Findings:
    examples: dict[str, list[Any]] = field(default_factory=dict)

    def note(self, finding: str, subject: Any) -> None:
        found = self.examples.setdefault(finding, [])
        if len(found) < EXAMPLES:
            found.append(subject)


def _read_only(conn: Any) -> None:
    conn.execute("SET TRANSACTION READ ONLY")


# --------------------------------------------------------------- allocations


def _ever_allocated_sql(subjects: Subjects) -> str:
    return (
        "SELECT EXISTS (SELECT 1 FROM monthly_allocations m JOIN credit_accounts a ON a.id = m.account_id "
        f"WHERE a.{subjects.account_column} IS NOT NULL AND m.month <= %(month)s)"
    )


def _missed_examples_sql(subjects: Subjects) -> str:
    return (
        f"SELECT s.id FROM {subjects.source} LEFT JOIN credit_accounts a "
        f"ON a.{subjects.account_column} = s.id WHERE {subjects.active} AND (a.id IS NULL OR NOT EXISTS "
        "(SELECT 1 FROM monthly_allocations m WHERE m.account_id = a.id AND m.month = %(month)s)) "
        f"ORDER BY s.id LIMIT {EXAMPLES}"
    )


_ALLOCATION_MISMATCHES = """
    SELECT m.account_id, m.month FROM monthly_allocations m
    LEFT JOIN credit_ledger l ON l.id = m.ledger_id
    WHERE m.month = ANY(%(months)s)
      AND (l.id IS NULL OR l.account_id <> m.account_id OR l.kind <> 'allocation'
           OR l.amount_micro <> m.granted_micro)
    ORDER BY m.account_id, m.month
"""


def check_allocations(
    conn: Any, settings: HealthSettings, at: datetime, findings: Findings
) -> tuple[dict[str, int], dict[str, Any]]:
    """Missed allocations and allocation rows that disagree with their ledger entry."""
    counts: dict[str, int] = {}
    expected: dict[str, Any] = {}
    months = set()
    for name, subjects, schedule in (
        ("shared", SHARED, settings.shared_schedule),
        ("graph", GRAPHS, settings.graph_schedule),
    ):
        fire = schedule.latest_at_or_before(at - settings.grace)
        missed = 0
        if fire is not None:
            month = first_day(month_of(fire))
            months.add(month)
            started = conn.execute(_ever_allocated_sql(subjects), {"month": month}).fetchone()[0]
            if started:
                missed = due_figures(conn, subjects, fire, month).subjects
                if missed:
                    for (subject,) in conn.execute(
                        _missed_examples_sql(subjects), {"at": fire, "month": month}
                    ).fetchall():
                        findings.note(f"missed_{name}_allocations", subject)
            expected[name] = {
                "allocation_time": iso_z(fire),
                "month": month.isoformat()[:7],
                "started": bool(started),
            }
        counts[f"missed_{name}_allocations"] = missed
    rows = conn.execute(_ALLOCATION_MISMATCHES, {"months": sorted(months)}).fetchall() if months else []
    for account_id, month in rows:
        findings.note("allocation_mismatches", f"{account_id}:{month.isoformat()[:7]}")
    counts["allocation_mismatches"] = len(rows)
    return counts, expected


# ------------------------------------------------------------------ balances


def reconcile_chunk(conn: Any, cursor: Any, limit: int, findings: Findings) -> Chunk:
    """One keyset chunk of accounts, reconciled by `beatless.credits.audit` in one statement."""
    _read_only(conn)
    figures = reconcile(conn, after=cursor or 0, limit=limit)
    counts = {
        "accounts_checked": len(figures),
        "balance_mismatches": 0,
        "held_mismatches": 0,
        "negative_balances": 0,
    }
    for account in figures:
        if not account.balance_matches:
            counts["balance_mismatches"] += 1
            findings.note(
                "balance_mismatches",
                {
                    "account": account.account_id,
                    "balance": account.balance_micro,
                    "ledger": account.ledger_micro,
                },
            )
        if not account.held_matches:
            counts["held_mismatches"] += 1
            findings.note(
                "held_mismatches",
                {"account": account.account_id, "held": account.held_micro, "holds": account.holds_micro},
            )
        if account.balance_micro < 0:
            counts["negative_balances"] += 1
            findings.note("negative_balances", account.account_id)
    return Chunk(len(figures), figures[-1].account_id if figures else cursor, counts)


INCONSISTENCIES = (
    "balance_mismatches",
    "held_mismatches",
    "allocation_mismatches",
    "missed_shared_allocations",
    "missed_graph_allocations",
)


def check_credit_health(
    ctx: JobContext, settings: HealthSettings, *, chunk_size: int = DEFAULT_CHUNK
) -> JobOutcome:
    """The work of one health check run (see the module docstring). Raises
    `CreditInconsistencyError` when anything in `INCONSISTENCIES` is non-zero."""
    findings = Findings()
    for name in ("accounts_checked", "balance_mismatches", "held_mismatches", "negative_balances"):
        ctx.add(name, 0)
    with ctx.conn.transaction():
        _read_only(ctx.conn)
        counts, expected = check_allocations(ctx.conn, settings, ctx.as_of, findings)
    for name, n in counts.items():
        ctx.add(name, n)

    report = run_chunks(
        ctx, lambda conn, cursor, limit: reconcile_chunk(conn, cursor, limit, findings), limit=chunk_size
    )
    remaining = 0
    if not report.finished:
        row = ctx.conn.execute(
            "SELECT count(*) FROM credit_accounts WHERE id > %s", (report.cursor or 0,)
        ).fetchone()
        remaining = int(row[0])

    problems = {name: ctx.counts.get(name, 0) for name in INCONSISTENCIES if ctx.counts.get(name, 0)}
    if problems:
        raise CreditInconsistencyError(
            "credit health check failed: "
            + ", ".join(f"{name}={n}" for name, n in problems.items())
            + f"; examples: {_describe(findings.examples)}"
        )
    return JobOutcome(
        remaining=remaining,
        details={"expected_allocations": expected, "examples": findings.examples, "chunks": report.chunks},
    )


def _describe(examples: Mapping[str, list[Any]]) -> str:
    return "; ".join(f"{name}: {values}" for name, values in examples.items() if name in INCONSISTENCIES)
