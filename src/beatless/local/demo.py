"""The demo workload of `beatless local`: heavy operations on the real, autoscaled workers.

A customer's first hour in miniature, on the graph `sec` (a shared repository of
companies, filings, facts and ownership) and one company's graph:

1. `create_graph` sec — placed on a graph node, schema created;
2. a generated financial dataset (`beatless.ingestion.sample`, a few thousand rows) is
   uploaded to the uploads bucket, then `stage_files` validates it in DuckDB and
   `materialize` loads it through the node's bulk load;
3. `create_entity_graph` — one company's graph, copied by the engine from sec;
4. `detect_communities` — Louvain over who owns whom (the dataset plants the groups);
5. `backup_graph` sec.

Each operation is sent as the task API sends it — a Celery message (kombu's format,
`beatless.queues.producer`) onto its queue, the task id derived from the operation id —
and runs on whichever worker the scaler has started. Its progress is followed on its
Redis stream; its credits (held before the work, charged after) are read from
PostgreSQL. The report checks the effects: rows in the graph equal rows in the files,
the company graph holds exactly that company's rows, the planted communities are
recovered (NMI), the backup is the graph's last in the registry, the charges add up
and the ledger audit is clean.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from beatless.errors import BeatlessError

DEMO_USER = "demo-user"
REPOSITORY = "sec"
BATCH = "demo-1"
STARTING_CREDITS = 1000
ENTITY_INDEX = 7  # the company whose graph is made
MIN_NMI = 0.9
_TASK_IDS = uuid.UUID("0d7c3b52-44a1-4f0e-9d0b-1f3c6e2a9b70")
FINISHED = ("succeeded", "failed", "cancelled")


class DemoError(BeatlessError):
    pass


@dataclass
class StepResult:
    task: str
    operation_id: str
    status: str = "not sent"
    reserved_micro: int = 0
    charged_micro: int | None = None
    seconds: float = 0.0
    events: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class DemoReport:
    steps: list[StepResult] = field(default_factory=list)
    rows_in_files: dict[str, int] = field(default_factory=dict)
    rows_in_graph: dict[str, int] = field(default_factory=dict)
    entity_rows_expected: dict[str, int] = field(default_factory=dict)
    entity_rows: dict[str, int] = field(default_factory=dict)
    communities: int = 0
    nmi: float = 0.0
    backup_recorded: bool = False
    balance_before_micro: int = 0
    balance_after_micro: int = 0
    ledger_mismatches: int = -1
    error: str | None = None

    @property
    def charged_micro(self) -> int:
        return sum(s.charged_micro or 0 for s in self.steps)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and bool(self.steps)
            and all(s.status == "succeeded" for s in self.steps)
            and self.rows_in_graph == self.rows_in_files != {}
            and self.entity_rows == self.entity_rows_expected != {}
            and self.nmi >= MIN_NMI
            and self.backup_recorded
            and self.balance_before_micro - self.balance_after_micro == self.charged_micro
            and self.ledger_mismatches == 0
        )

    def as_dict(self) -> dict[str, Any]:
        from beatless.credits.money import MICRO_PER_CREDIT

        return {
            "demo_operations": {
                s.task: {"status": s.status, "seconds": round(s.seconds, 1), "events": s.events}
                for s in self.steps
            },
            "demo_rows_in_files": self.rows_in_files,
            "demo_rows_in_graph": self.rows_in_graph,
            "demo_entity_graph_rows": self.entity_rows,
            "demo_communities": self.communities,
            "demo_communities_nmi": round(self.nmi, 3),
            "demo_backup_recorded": self.backup_recorded,
            "demo_credits_charged": self.charged_micro / MICRO_PER_CREDIT,
            "demo_credits_left": self.balance_after_micro / MICRO_PER_CREDIT,
            "demo_ledger_mismatches": self.ledger_mismatches,
            "demo_error": self.error,
            "demo_ok": self.ok,
        }


def entity_graph_id(cik: str) -> str:
    return f"company-{cik}"


def seed(conn: Any, graph_ids: list[str], credits_each: int = STARTING_CREDITS) -> dict[str, int]:
    """The demo user, its graphs (standard tier) and their credit accounts with
    `credits_each` credits; graph id -> account id. Idempotent (a resumed database)."""
    from beatless import credits

    credits.create_user(conn, DEMO_USER)
    accounts = {}
    for graph_id in graph_ids:
        credits.create_graph(conn, graph_id, DEMO_USER, "standard", datetime.now(UTC))
        account = credits.open_graph_account(conn, graph_id)
        credits.post(
            conn, account.id, "adjustment", credits_each * credits.MICRO_PER_CREDIT, f"demo-seed:{graph_id}"
        )
        accounts[graph_id] = account.id
    return accounts


@dataclass
class Demo:
    """Runs the workload (`run`) against a broker, a database and the graph plane.

    `query(graph_id, cypher)` answers a read on the graph's node (rows), `s3` writes the
    uploads, `registries` is the graph plane's."""

    broker: Any  # redis.Redis
    database: Any  # a psycopg connection (autocommit)
    s3: Any
    uploads_bucket: str
    registries: Any
    query: Callable[[str, str], list[list[Any]]]
    out: TextIO
    companies: int = 200
    timeout_seconds: float = 300.0
    poll_seconds: float = 0.2
    report: DemoReport = field(default_factory=DemoReport)

    def run(self) -> DemoReport:
        try:
            self._run()
        except Exception as error:  # the report says what failed; the run's exit status follows it
            self.report.error = f"{type(error).__name__}: {error}"
            self._say(f"demo stopped: {self.report.error}")
        return self.report

    def _run(self) -> None:
        from beatless import credits
        from beatless.ingestion import sample

        data = sample.financial_dataset(self.companies)
        cik = data.companies[ENTITY_INDEX][0]
        entity = entity_graph_id(cik)
        accounts = seed(self.database, [REPOSITORY, entity])
        self.report.balance_before_micro = self._balances(accounts)

        self._operation("create_graph", {"graph_id": REPOSITORY, "schema": sample.SCHEMA})
        files = sample.upload(self.s3, self.uploads_bucket, f"uploads/{REPOSITORY}/{BATCH}", data)
        self.report.rows_in_files = data.rows()
        self._say(
            f"uploaded {sum(data.rows().values())} rows in {len(files)} files to s3://{self.uploads_bucket}"
        )
        self._operation("stage_files", {"graph_id": REPOSITORY, "batch_id": BATCH, "files": files})
        self._operation("materialize", {"graph_id": REPOSITORY, "batch_id": BATCH})
        self.report.rows_in_graph = self._rows(REPOSITORY, list(data.rows()))

        self._operation(
            "create_entity_graph", {"graph_id": entity, "repository": REPOSITORY, "entity_id": cik}
        )
        self.report.entity_rows_expected = _entity_rows(data, cik)
        self.report.entity_rows = self._rows(entity, list(self.report.entity_rows_expected))

        found = self._operation(
            "detect_communities",
            {"graph_id": REPOSITORY, "node_table": "Company", "relationship_tables": ["Owns"]},
        )
        self.report.communities = int(found.get("communities", 0))
        self.report.nmi = self._nmi(data.group_of)

        backup = self._operation("backup_graph", {"graph_id": REPOSITORY})
        recorded = self.registries.graph(REPOSITORY)
        self.report.backup_recorded = (
            recorded is not None
            and recorded.last_backup_key == backup.get("key")
            and recorded.last_backup_sha256 == backup.get("sha256")
        )
        self.report.balance_after_micro = self._balances(accounts)
        self.report.ledger_mismatches = len(credits.mismatches(self.database))
        report = self.report
        self._say(
            f"credits: {_credits(report.balance_before_micro)} before, {_credits(report.charged_micro)} "
            f"charged, {_credits(report.balance_after_micro)} left; "
            f"ledger audit: {report.ledger_mismatches} mismatches"
        )

    def _operation(self, task: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send one operation, follow it to its end; its result (raises unless it succeeded)."""
        from beatless.operations import records
        from beatless.operations.catalogue import operation
        from beatless.operations.ids import derive_operation_id
        from beatless.operations.progress import ProgressStream
        from beatless.operations.runtime import parse_params
        from beatless.queues.producer import send_once
        from beatless.queues.transport import TransportOptions

        spec = operation(task)
        operation_id = derive_operation_id(task, parse_params(spec, params))  # validated before it is sent
        step = StepResult(task=task, operation_id=operation_id)
        self.report.steps.append(step)
        task_id = str(uuid.uuid5(_TASK_IDS, operation_id))
        kwargs = {"params": params, "operation_id": operation_id}
        send_once(self.broker, TransportOptions(), spec.celery_name, task_id, spec.queue, kwargs=kwargs)
        self._say(f"{task}: sent to queue {spec.queue!r} (operation {operation_id})")
        stream = ProgressStream(self.broker, operation_id)
        started, after, waiting = time.monotonic(), "0-0", True
        while True:
            record = records.get(self.database, operation_id)
            if record is not None and waiting:
                waiting = False
                step.reserved_micro = record.estimated_micro
                self._say(f"{task}: a worker took it; {_credits(record.estimated_micro)} credits held")
            for event in stream.read(after=after):
                after, step.events = event.id, step.events + 1
                line = f"{task}: {event.percent:5.1f}% {event.stage}"
                self._say(line + (f" - {event.message}" if event.message else ""))
            if record is not None and record.status in FINISHED:
                break
            if time.monotonic() - started > self.timeout_seconds:
                raise DemoError(
                    f"{task} did not finish within {self.timeout_seconds:g} s (operation {operation_id})"
                )
            time.sleep(self.poll_seconds)
        step.seconds = time.monotonic() - started
        step.status, step.charged_micro, step.error = record.status, record.charged_micro, record.error
        step.result = record.result or {}
        if record.status != "succeeded":
            raise DemoError(f"{task} ended {record.status}: {record.error}")
        self._say(
            f"{task}: succeeded in {step.seconds:.1f} s; held {_credits(step.reserved_micro)}, "
            f"charged {_credits(record.charged_micro or 0)} credits"
        )
        return step.result

    def _rows(self, graph_id: str, tables: list[str]) -> dict[str, int]:
        counts = {}
        for table in tables:
            is_node = table in {"Company", "Filing", "Fact"}
            pattern = f"(n:{table})" if is_node else f"()-[n:{table}]->()"
            counts[table] = int(self.query(graph_id, f"MATCH {pattern} RETURN count(n)")[0][0])
        return counts

    def _nmi(self, group_of: dict[str, int]) -> float:
        from beatless.analytics.scores import normalized_mutual_information

        rows = self.query(REPOSITORY, "MATCH (c:Company) RETURN c.cik, c.community ORDER BY c.cik")
        found = {str(cik): community for cik, community in rows}
        ciks = sorted(group_of)
        return normalized_mutual_information([group_of[c] for c in ciks], [found.get(c) for c in ciks])

    def _balances(self, accounts: dict[str, int]) -> int:
        from beatless import credits

        return sum(credits.get_account(self.database, a).balance_micro for a in accounts.values())

    def _say(self, text: str) -> None:
        print(f"  [demo] {text}", file=self.out, flush=True)


def _entity_rows(data: Any, cik: str) -> dict[str, int]:
    """What the company's graph must hold: its own rows of every table naming it, and the
    relationships among them (an ownership only when both ends are the company)."""
    filings = {f[0] for f in data.filings if f[3] == cik}
    return {
        "Company": sum(1 for c in data.companies if c[0] == cik),
        "Filing": len(filings),
        "Fact": sum(1 for f in data.facts if f[3] == cik),
        "Filed": sum(1 for a, b in data.filed if a == cik and b in filings),
        "Reports": sum(1 for a, _ in data.reports if a in filings),
        "Owns": sum(1 for a, b, _ in data.owns if a == b == cik),
    }


def _credits(micro: int) -> str:
    from beatless.credits.money import MICRO_PER_CREDIT

    return f"{micro / MICRO_PER_CREDIT:g}"
